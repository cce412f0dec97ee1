/* Decode's dot products on the host with the activations as exact
 * integers: each block of 32 values x is 2^e·X, X integers of 22 bits
 * held as three signed bytes (X = h·2^16 + m·2^8 + l), so that a weight
 * row's integer codes meet them in byte dot products (AVX2's maddubs, or
 * VNNI's dpbusd) with no code turned into a float: exact sums, rounded
 * only where a block's sum is scaled. X rounds x to 22 bits of its
 * block's largest value, finer than the f32 tolerance the host's results
 * keep. cpu_exact.c is compiled once for each x86 level (meson.build);
 * cpu_experts.c takes the best the CPU runs. */
#ifndef VKMOE_CPU_EXACT_H
#define VKMOE_CPU_EXACT_H

#include <stdint.h>

#include "vkmoe.h"

/* Rows of x (or hidden) a kernel call multiplies at once (the prefill
 * kernel: 2 weight rows by 6 rows take 12 of AVX2's 16 registers). */
#define ROWS_AT_ONCE 6u
/* Weight rows a stored-row kernel (decode) reads at once, each a run of
 * memory of its own: the more runs in flight, the more of the memory's
 * latency is hidden. A test program (f16, 8 random experts at a time, one
 * thread): two runs 24-27 GB/s, four 30-35; plain loads peak at four. */
#define STORED_ROWS 4u
/* How far ahead the stored-row kernels prefetch each weight row they
 * stream. f16 decode (bench, D 1024, F 384, 2 threads, three runs each):
 * none 23-25 GB/s, 768 bytes 22-26, 1536 27-29, 2048 28-30, 3072 29-30. */
#define PREFETCH_BYTES 2048

/* Values in a block of the exact form, and bytes its limbs take. */
#define EXACT_BLOCK 32u
#define EXACT_BLOCK_BYTES (3u * EXACT_BLOCK)
#define EXACT_LANES (EXACT_BLOCK / 4u)

/* A row's limbs lie by pairs of blocks: blocks 2p and 2p + 1 take a run
 * of 2·EXACT_BLOCK_BYTES, their h limbs first (2p's, then 2p + 1's), then
 * their m, then their l, so that a 512-bit register takes a pair's limb in
 * one load (they were a 256-bit load and an insert, a tenth of the Q4_K
 * kernel's instructions). Limb k (0 h, 1 m, 2 l) of block b is at
 * vkmoe_exact_limb_at(b) + EXACT_LIMB_STRIDE·k in the row's limbs; a row
 * takes whole pairs (an odd last block's second half unused). */
#define EXACT_LIMB_STRIDE (2u * EXACT_BLOCK)

static inline size_t vkmoe_exact_limb_at(uint32_t b)
{
    return (size_t)(b / 2) * 2 * EXACT_BLOCK_BYTES + (b % 2) * EXACT_BLOCK;
}

/* The K-quants' kernels of sub-blocks of 32 (Q4_K, Q5_K) read a row's
 * limbs by super-blocks of EXACT_SUPER_BLOCK values instead, each taking
 * 3·EXACT_SUPER_BLOCK bytes: for chunk g (values 8g .. 8g + 7 of each of
 * its eight blocks) and limb k, a run of 64 bytes at (3g + k)·64, block j's
 * chunk at slot j / 2 + 4·(j % 2) of its eight (blocks 0, 2, 4, 6, then 1,
 * 3, 5, 7). A 512-bit register then takes one chunk of all eight blocks, a
 * 32-bit lane always four values of one block, so that a super-block's
 * byte dot products add up in integers (in the same lanes) before its
 * sub-blocks' scales apply: one conversion and one FMA a super-block where
 * there were four. */
#define EXACT_SUPER_BLOCK 256u
#define EXACT_CHUNK 8u

/* The kernels of blocks of 32 (Q4_0 … MXFP4, Q8_0, and IQ4_XS's
 * sub-blocks) read a row's limbs by quads of blocks: for blocks 4q .. 4q +
 * 3, limb k and half h (values 16h .. 16h + 15 of each block), a run of 64
 * bytes at q·EXACT_QUAD_BYTES + (2k + h)·64, block 4q + j's values at 16j.
 * The 16 bytes of nibbles of each of four weight blocks then make one
 * register of low nibbles (the blocks' first halves) and one of high
 * (their second halves), and a 32-bit lane meets eight values of one
 * block, four of each half: a quad's byte dot products add up in integers
 * before its blocks' scales apply. */
#define EXACT_QUAD 4u
#define EXACT_QUAD_BYTES (EXACT_QUAD * EXACT_BLOCK_BYTES)

typedef enum vkmoe_exact_layout {
    EXACT_BY_PAIRS, /* vkmoe_exact_limb_at */
    EXACT_BY_SUPER_BLOCKS,
    EXACT_BY_QUADS,
} vkmoe_exact_layout;

/* Where chunk g of block b's limb k lies in a row by super-blocks. */
static inline size_t vkmoe_exact_chunk_at(uint32_t b, uint32_t g, uint32_t k)
{
    uint32_t j = b % 8;
    return (size_t)(b / 8) * 8 * EXACT_BLOCK_BYTES + (3 * g + k) * 64 +
           (j / 2 + 4 * (j % 2)) * EXACT_CHUNK;
}

/* Where half h of block b's limb k lies in a row by quads. */
static inline size_t vkmoe_exact_half_at(uint32_t b, uint32_t k, uint32_t h)
{
    return (size_t)(b / EXACT_QUAD) * EXACT_QUAD_BYTES + (2 * k + h) * 64 +
           (b % EXACT_QUAD) * (EXACT_BLOCK / 2);
}

/* Bytes of limbs a row `len` values long takes, in any layout: whole
 * quads (rows by super-blocks are whole super-blocks, so whole quads and
 * pairs), the blocks past len / EXACT_BLOCK zeros (vkmoe_exact_rows). */
static inline size_t vkmoe_exact_row_limb_bytes(uint32_t len)
{
    return (size_t)(len / EXACT_BLOCK + EXACT_QUAD - 1) / EXACT_QUAD * EXACT_QUAD_BYTES;
}

/* One row of activations in the exact form, blocks of EXACT_BLOCK. */
typedef struct vkmoe_exact_row {
    const int8_t *limbs; /* h, m and l of each block's X, in the kernel's layout */
    /* [blocks][8]: Σ X over each four neighbouring values (a lane of the
     * byte dot products), taken off where codes are offset to be unsigned */
    const int32_t *lanes;
    const float *scale; /* [blocks]: 2^e; NaN for a block holding NaN or ±Inf */
    const float *sum;   /* [blocks]: Σ 2^e·X over the block */
    const float *half;  /* [2·blocks]: the same over each half of 16 */
} vkmoe_exact_row;

/* Where row r of a buffer of rows `len` values long lies (len a multiple
 * of EXACT_BLOCK): limbs at r·vkmoe_exact_row_limb_bytes(len), lanes at
 * r·len/4, scales and sums at r·len/32, halves at r·len/16. */
typedef struct vkmoe_exact_rows {
    vkmoe_exact_layout layout; /* the kernel's that reads them: vkmoe_exact_isa.layout */
    /* zeroed when made: the kernels by quads read a row's last quad
     * whole, its missing blocks' limbs against weights copied as zeros,
     * whose codes need not be zero (levels, Q8_0's offset) */
    int8_t *limbs;
    int32_t *lanes;
    float *scale, *sum, *half;
} vkmoe_exact_rows;

/* out[r][i] = Σ_d W_r[d]·x_i[d] for STORED_ROWS weight rows as stored and
 * `rows` (< ROWS_AT_ONCE) rows of activations, len a whole number of the
 * type's blocks. */
typedef void (*vkmoe_exact_kernel)(const uint8_t *const w[STORED_ROWS],
                                   const vkmoe_exact_row a[ROWS_AT_ONCE], uint32_t rows,
                                   uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE]);

/* One x86 level's build of cpu_exact.c. */
typedef struct vkmoe_exact_isa {
    const char *name;
    /* Blocks first_block .. end_block − 1 of a row x into row r of `to`. */
    void (*convert)(const float *x, uint32_t first_block, uint32_t end_block,
                    const vkmoe_exact_rows *to, uint32_t r, uint32_t len);
    vkmoe_exact_kernel kernel[VKMOE_WEIGHT_MXFP4 + 1]; /* by weight type; NULL: none */
    vkmoe_exact_layout layout[VKMOE_WEIGHT_MXFP4 + 1]; /* of the limbs each kernel reads */
} vkmoe_exact_isa;

extern const vkmoe_exact_isa vkmoe_exact_avx2, vkmoe_exact_avxvnni, vkmoe_exact_avx512vnni;

/* Row r of a buffer of rows `len` values long. */
static inline vkmoe_exact_row vkmoe_exact_row_at(const vkmoe_exact_rows *rows, uint32_t r,
                                                 uint32_t len)
{
    size_t blocks = len / EXACT_BLOCK;
    return (vkmoe_exact_row){rows->limbs + r * vkmoe_exact_row_limb_bytes(len),
                             rows->lanes + r * blocks * EXACT_LANES, rows->scale + r * blocks,
                             rows->sum + r * blocks, rows->half + 2 * r * blocks};
}

#endif /* VKMOE_CPU_EXACT_H */
