/* What the rest of the library asks of the weight types, answered from
 * quantize.c's codec table (one row per vkmoe_weight_type): adding a type
 * is its enum value in vkmoe.h, its codec row and its decoder in
 * shaders/common/expert_gemm.glsl. */
#ifndef VKMOE_WEIGHT_TYPES_H
#define VKMOE_WEIGHT_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vkmoe.h"

/* IQ4_NL's and IQ4_XS's 16 levels, and MXFP4's E2M1 values doubled (a
 * code is an index into them; defined in quantize.c). */
extern const int8_t vkmoe_iq4_levels[16];
extern const int8_t vkmoe_mxfp4_levels[16];

/* Whether a weight type stores GGUF blocks (read as 32-bit words) rather
 * than one value after another (read 16 bytes at a time). */
static inline bool vkmoe_weight_blocked(vkmoe_weight_type type)
{
    return vkmoe_weight_block(type) > 1;
}

/* Bytes of one texel of the weights' views (vkmoe_weight_texel_format): 16
 * (four values, or four 32-bit words of GGUF blocks whose size is a
 * multiple of 16 bytes, Q4_K's and Q5_K's, so that the GEMMs fetch 16
 * bytes of a block at once), or 4 (a word of blocks that start anywhere in
 * 16 bytes). The GEMMs learn it as a specialization constant
 * (TEXEL_WORDS, shaders/common/expert_gemm.glsl). */
static inline uint32_t vkmoe_weight_texel_bytes(vkmoe_weight_type type)
{
    uint32_t block = vkmoe_weight_block(type);
    return block > 1 && vkmoe_weight_bytes(type, block) % 16 ? 4 : 16;
}

/* Rows of A a GEMV pass may hold for this type
 * (shaders/common/gemv_gemm.glsl): VKMOE_GEMV_PASS, or 1 for the types
 * whose GEMV units hold 32 weights (Q4_K, Q6_K). */
uint32_t vkmoe_weight_gemv_rows(vkmoe_weight_type type);

/* The weight type a model file's element type is: its name as the file
 * spells it ("BF16", "Q4_K": any case) and its block and bytes per block
 * as the format defines them must both match the type's. False for a
 * type vkmoe does not compute with. */
bool vkmoe_weight_type_of_file(const char *name, uint32_t block, uint32_t block_bytes,
                               vkmoe_weight_type *out);

/* "f32, f16, …": every type's name into out (size bytes), for messages;
 * returns out. */
const char *vkmoe_weight_type_list(char *out, size_t size);

/* An MXFP4 block's scale from its E8M0 exponent e, halved as its levels
 * are doubled: 2^(e − 128), exactly (subnormal for e < 2). Inline: the CPU
 * experts' kernels read it for every block. */
static inline float vkmoe_e8m0_half(uint8_t e)
{
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float value;
    memcpy(&value, &bits, 4);
    return value;
}

/* The eight 6-bit scales and mins of a Q4_K or Q5_K super-block's sub-
 * blocks from its 12 packed bytes (after d and dmin): sub-block j < 4 in
 * the low 6 bits of bytes j and j + 4; j + 4 in the nibbles of byte j + 8
 * and the top 2 bits of bytes j and j + 4. Inline, without a branch, four
 * bytes at a time in a word: the codecs read it for every block (the CPU
 * experts' exact kernels do the same in a vector register, cpu_exact.c). */
static inline void vkmoe_q4_k_scales_mins(const uint8_t *packed, uint8_t scales[8], uint8_t mins[8])
{
    uint32_t word[3], low = 0x3f3f3f3fu, nibbles = 0x0f0f0f0fu, top = 0x03030303u;
    memcpy(word, packed, 12);
    uint32_t s[2] = {word[0] & low, (word[2] & nibbles) | (word[0] >> 6 & top) << 4};
    uint32_t m[2] = {word[1] & low, (word[2] >> 4 & nibbles) | (word[1] >> 6 & top) << 4};
    memcpy(scales, s, 8); /* no bit crosses a byte: any byte order */
    memcpy(mins, m, 8);
}

#endif /* VKMOE_WEIGHT_TYPES_H */
