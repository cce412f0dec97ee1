/* Limits and layout numbers of the library's stages. */
#ifndef VKMOE_CONSTANTS_H
#define VKMOE_CONSTANTS_H



#define VKMOE_MAX_EXPERTS 512u
#define VKMOE_MAX_TOP_K 16u
#define VKMOE_MAX_GROUPS 16u
#define VKMOE_MAX_SLOTS (1u << 22)
/* Marks a padding row in row_slot and an unused tile in tile_expert. */
#define VKMOE_INVALID 0xffffffffu
/* Slots per workgroup in count and scatter; elements per workgroup in scan. */
#define VKMOE_BLOCK_SLOTS 256u
#define VKMOE_SCAN_TILE 1024u
/* Weight rows are padded to this many elements so shaders load 16 bytes at a time. */
#define VKMOE_ROW_ALIGN 8u

#endif /* VKMOE_CONSTANTS_H */
