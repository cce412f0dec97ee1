/* Limits and layout numbers that the C side and the shaders share: C
 * includes this file, and so does every shader that needs one of them
 * (glslc gets -I src), so each number is written once. Only #defines and
 * comments: the file must be valid C and GLSL. */
#ifndef VKMOE_CONSTANTS_H
#define VKMOE_CONSTANTS_H

/* Routed experts a layer may have; the router, count and scan keep one
 * shared-memory entry per expert. */
#define VKMOE_MAX_EXPERTS 2048u
/* Experts per token (the router keeps its choices in shared memory). */
#define VKMOE_MAX_TOP_K 32u
/* Expert groups of group-limited routing (the router ranks them in shared
 * memory). */
#define VKMOE_MAX_GROUPS 64u
/* Slots (tokens · top_k) of one forward. */
#define VKMOE_MAX_SLOTS (1u << 22)
/* Marks a padding row in row_slot and an unused tile in tile_expert. */
#define VKMOE_INVALID 0xffffffffu
/* Slots per workgroup (and invocations) of count and scatter. */
#define VKMOE_BLOCK_SLOTS 256u
/* Values one workgroup of the scan covers, and its invocations (each lane
 * scans TILE / WORKGROUP values). */
#define VKMOE_SCAN_TILE 1024u
#define VKMOE_SCAN_WORKGROUP 256u
/* The GEMM shaders' activation spec constant past vkmoe_activation's
 * values: the projection alone, for the router's logits. */
#define VKMOE_ACTIVATION_LINEAR 3u
/* Weight rows are padded to this many elements so shaders load 16 bytes at
 * a time. */
#define VKMOE_ROW_ALIGN 8u

/* The GEMV path (shaders/common/gemv_gemm.glsl): output columns per
 * workgroup, the default and the most VKMOE_GEMV_COLUMNS may ask for; the
 * subgroups of a workgroup (by default one column each); the rows one fetch
 * of the weights serves. */
#define VKMOE_GEMV_COLUMNS 4u
#define VKMOE_GEMV_MAX_COLUMNS 16u
#define VKMOE_GEMV_SUBGROUPS 4u
#define VKMOE_GEMV_PASS 16u
/* Steps of the depth a GEMV lane has in flight (shaders/common/gemv_gemm.glsl):
 * the default, and the most VKMOE_GEMV_STEPS may ask for. One: the H200
 * decoded fastest so (stop 46, 64 forwards back to back, Qwen3-30B-A3B
 * T=1, expert GEMMs: f16 0.069 ms at 1 step, 0.076 at 2, 0.079 at 4; Q4_K
 * 0.037, 0.039, 0.052). */
#define VKMOE_GEMV_STEPS 1u
#define VKMOE_GEMV_MAX_STEPS 4u

/* Columns of B a tiled workgroup covers (shaders/common/tiled_gemm.glsl):
 * the plain tiles' 64, each invocation 4x4 blocks of f32; the matrix
 * cores' 128, each of the 4 subgroups 32 columns by the tile's 32 rows in
 * four 16x16 accumulators, so that a staged tile feeds twice the
 * multiplies per barrier, and each fragment loaded from shared memory two
 * of them. */
#define VKMOE_TILED_COLUMNS 64u
#define VKMOE_COOPMAT_COLUMNS 128u

#ifdef __STDC_VERSION__ /* C only (GLSL has no static assertions) */
_Static_assert(VKMOE_SCAN_TILE % VKMOE_SCAN_WORKGROUP == 0, "a scan lane covers whole values");
_Static_assert(VKMOE_MAX_EXPERTS % VKMOE_SCAN_WORKGROUP == 0, "a scan lane plans whole experts");
_Static_assert(VKMOE_MAX_SLOTS / VKMOE_BLOCK_SLOTS <= 65535u * 65535u,
               "count and scatter grids fold into x and y");
#endif

#endif /* VKMOE_CONSTANTS_H */
