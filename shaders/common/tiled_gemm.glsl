// The tiled path of the expert GEMM, for GPUs: a workgroup computes a tile
// C of TILE_M rows (32; the plain build: as many as a subgroup has lanes,
// where shared memory holds them, src/layer.c) by TILE_N columns of B (64;
// with matrix cores 128: constants.h).
// Per step of TILE_K depth it stages A's rows (gathered through the row map,
// zeros for padding rows) and the weights (decoded by load_w8) in shared
// memory, where every invocation reuses them. The products go to C in shared memory, which the
// stage's epilogue reads (tile_result).
// Plain build: f32 tiles, each invocation adds 4x4 blocks of C. Where each
// invocation has one block (the GPUs' layouts: as many rows as lanes), it
// keeps it in registers over the whole depth and stores it to C once; with
// more blocks than invocations (lavapipe's 8-lane subgroups), C holds them
// between steps. A and B are both stored k-major as vec4s (four rows of A,
// four columns of B): a step of depth is two 16-byte reads of shared
// memory for 16 FMAs; and the blocks go to invocations rows first, so that
// a subgroup of 32 covers 8 row blocks by 4 column blocks and reads 8
// vec4s of A and 4 of B a step, 192 neighbouring bytes (by columns first
// it read 16 vec4s of B and 2 of A, 288 bytes). Each element of C sums its
// products in depth order.
// MATRIX_CORES: f16 tiles multiplied with GL_NV_cooperative_matrix
// (16x16x16, f32 accumulation); the workgroup must be 4 subgroups, each
// owning 32 columns of C in four 16x16 accumulators (two column blocks by
// the tile's two row blocks): per 16 of depth it loads two fragments of A
// and two of B for four multiplies (A row-major, B column-major, below).
// The activations and the decoded weights are rounded to f16 there.
// Virtual column v of B: with up_offset 0, row n0 + v of weights0; else
// v < up_offset reads row n0 + v of weights0 (gate) and v >= up_offset row
// n0 + v − up_offset of weights1 (up). Rows past the matrix read its last.

#include "constants.h"

#ifdef MATRIX_CORES
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#define TILE_T float16_t
const uint TILE_K = 32;
const uint TILE_N = VKMOE_COOPMAT_COLUMNS;
#else
#define TILE_T float
const uint TILE_K = 16;
const uint TILE_N = VKMOE_TILED_COLUMNS;
#endif

#ifdef MATRIX_CORES
shared TILE_T tile_a[TILE_M * TILE_K]; // A[m][k] at m * TILE_K + k
// B column-major (each column's TILE_K depths together), loaded as such:
// RDNA3's matrix instructions take B a column a lane, which a k-major tile
// gave as 16-bit loads (ACO: 64 a step for the four fragments of B, and 8
// 16-byte ones for A's two); a load_w8's 8 weights are one column's 8
// neighbouring depths, 16 bytes.
shared TILE_T tile_b[TILE_N * TILE_K]; // B[k][v] at v * TILE_K + k

void put_a(uint m, uint k, float a)
{
    tile_a[m * TILE_K + k] = TILE_T(a);
}

void put_b(uint k, uint v, float b)
{
    tile_b[v * TILE_K + k] = TILE_T(b);
}
#else
shared vec4 tile_a4[TILE_K * TILE_M / 4]; // A[m][k] at [k * TILE_M / 4 + m / 4][m % 4]
shared vec4 tile_b4[TILE_K * TILE_N / 4]; // B[k][v] at [k * TILE_N / 4 + v / 4][v % 4]

void put_a(uint m, uint k, float a)
{
    tile_a4[k * (TILE_M / 4) + m / 4][m % 4] = a;
}

void put_b(uint k, uint v, float b)
{
    tile_b4[k * (TILE_N / 4) + v / 4][v % 4] = b;
}
#endif
shared float tile_c[TILE_M * TILE_N]; // C[m][v] at m * TILE_N + v

float tile_result(uint m, uint v)
{
    return tile_c[m * TILE_N + v];
}

void load_tile_a(uvec2 row_slot, uint rows, uint row0, uint k0, uint ld)
{
    for (uint i = gl_LocalInvocationIndex; i < TILE_M * TILE_K / 4; i += LANES) {
        uint m = i / (TILE_K / 4), k = i % (TILE_K / 4) * 4;
        vec4 a = vec4(0.0);
        if (k0 + k < ld && slot_at(row_slot, rows, row0 + m) != INVALID)
            a = texelFetch(rows_a, int(a_row_texel(row0 + m) + (k0 + k) / 4));
        for (uint j = 0; j < 4; j++)
            put_a(m, k + j, a[j]);
    }
}

void load_tile_b(uint base, uint n0, uint up_offset, uint n, uint k0, uint ld)
{
    for (uint i = gl_LocalInvocationIndex; i < TILE_N * TILE_K / 8; i += LANES) {
        uint v = i / (TILE_K / 8), k = i % (TILE_K / 8) * 8;
        vec4 lo = vec4(0.0), hi = vec4(0.0);
        if (k0 + k < ld) {
            bool up = up_offset != 0 && v >= up_offset;
            uint row = min(n0 + v - (up ? up_offset : 0), n - 1);
            if (up)
                load_w8(weights1, base, row, k0 + k, ld, lo, hi);
            else
                load_w8(weights0, base, row, k0 + k, ld, lo, hi);
        }
        for (uint j = 0; j < 4; j++) {
            put_b(k + j, v, lo[j]);
            put_b(k + 4 + j, v, hi[j]);
        }
    }
}

#if defined(MATRIX_CORES) && !defined(EMULATED_MATRIX_CORES)
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#define MATRIX_F16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define MATRIX_F32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
#define MATRIX_ZERO MATRIX_F32(0.0)
#define MATRIX_LOAD(m, tile, at, stride) coopMatLoadNV(m, tile, at, stride, false)
#define MATRIX_LOAD_COLUMNS(m, tile, at, stride) coopMatLoadNV(m, tile, at, stride, true)
#define MATRIX_MUL_ADD(a, b, c) c = coopMatMulAddNV(a, b, c)
#define MATRIX_STORE(m, tile, at, stride) coopMatStoreNV(m, tile, at, stride, false)
#elif defined(MATRIX_CORES)
// For the tests on devices without cooperative matrices, the same calls
// emulated: a loaded matrix is its place in its tile (A's in tile_a, B's in
// tile_b): element (i, j) at at + i·row_step + j·column_step, as a
// row-major or column-major load reads it; an accumulator is spread over the subgroup, invocation l
// holding elements l, l + S, l + 2S ... of the row-major 16x16 (S, the
// subgroup size, at least 8: lavapipe's on x86-64 with AVX). The loops'
// bounds come from gl_SubgroupSize so that they stay loops: unrolled (with
// a constant bound), llvmpipe took minutes to build these shaders.
struct MatrixPlace {
    uint at, row_step, column_step;
};
struct Accumulator {
    float v[256 / 8];
};
#define MATRIX_F16 MatrixPlace
#define MATRIX_F32 Accumulator
#define MATRIX_ZERO accumulator_zero()
#define MATRIX_LOAD(m, tile, at, stride) m = MatrixPlace(at, stride, 1)
#define MATRIX_LOAD_COLUMNS(m, tile, at, stride) m = MatrixPlace(at, 1, stride)
#define MATRIX_MUL_ADD(a, b, c) c = accumulate_product(a, b, c)
#define MATRIX_STORE(m, tile, at, stride)                                                         \
    for (uint n = 0; n < 256 / gl_SubgroupSize; n++) {                                             \
        uint e = gl_SubgroupInvocationID + n * gl_SubgroupSize;                                    \
        tile[(at) + e / 16 * (stride) + e % 16] = m.v[n];                                          \
    }

Accumulator accumulator_zero()
{
    Accumulator c;
    for (uint n = 0; n < 256 / 8; n++)
        c.v[n] = 0.0;
    return c;
}

Accumulator accumulate_product(MatrixPlace a, MatrixPlace b, Accumulator c)
{
    for (uint n = 0; n < 256 / gl_SubgroupSize; n++) {
        uint e = gl_SubgroupInvocationID + n * gl_SubgroupSize, i = e / 16, j = e % 16;
        for (uint k = 0; k < 16; k++) {
            float a_ik = float(tile_a[a.at + i * a.row_step + k * a.column_step]);
            c.v[n] = fma(a_ik, float(tile_b[b.at + k * b.row_step + j * b.column_step]), c.v[n]);
        }
    }
    return c;
}
#else
const uint BLOCKS = TILE_M * TILE_N / 16;

// The block of C at rows m0.., columns v0.. that block number `block` is:
// row blocks first (neighbouring invocations share B's vec4s).
uvec2 block_at(uint block)
{
    return uvec2(block % (TILE_M / 4) * 4, block / (TILE_M / 4) * 4);
}

// c += A·B over one step of depth for the 4x4 block at `at`.
void multiply_block(uvec2 at, inout vec4 c[4])
{
    for (uint k = 0; k < TILE_K; k++) {
        vec4 a = tile_a4[k * (TILE_M / 4) + at.x / 4], b = tile_b4[k * (TILE_N / 4) + at.y / 4];
        for (uint i = 0; i < 4; i++)
            c[i] = fma(vec4(a[i]), b, c[i]);
    }
}

void store_block(uvec2 at, vec4 c[4])
{
    for (uint i = 0; i < 4; i++)
        for (uint j = 0; j < 4; j++)
            tile_c[(at.x + i) * TILE_N + at.y + j] = c[i][j];
}

// C += A·B over one step of depth, each block through C.
void multiply_tiles()
{
    for (uint block = gl_LocalInvocationIndex; block < BLOCKS; block += LANES) {
        uvec2 at = block_at(block);
        vec4 c[4];
        for (uint i = 0; i < 4; i++)
            for (uint j = 0; j < 4; j++)
                c[i][j] = tile_c[(at.x + i) * TILE_N + at.y + j];
        multiply_block(at, c);
        store_block(at, c);
    }
}
#endif

// C = A·B for the tile of rows from row0 (row map: row_slot, rows) and the
// virtual columns from n0 of the matrices at texel `base` (n rows of ld
// weights each).
void tiled_gemm(uvec2 row_slot, uint rows, uint row0, uint base, uint n0, uint up_offset, uint n, uint ld)
{
#ifdef MATRIX_CORES
    // Rows 0-15 and 16-31 by the subgroup's columns col .. col + 15 and
    // col + 16 .. col + 31 (no arrays: tools/spirv_khr.py traces the
    // matrices' types through plain variables).
    MATRIX_F32 acc00 = MATRIX_ZERO, acc01 = MATRIX_ZERO, acc10 = MATRIX_ZERO, acc11 = MATRIX_ZERO;
    uint col = gl_SubgroupID * 32;
#else
    bool in_registers = BLOCKS == LANES; // a specialization constant's test
    uvec2 at = block_at(gl_LocalInvocationIndex);
    vec4 c[4] = vec4[4](vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
    for (uint i = gl_LocalInvocationIndex; !in_registers && i < TILE_M * TILE_N; i += LANES)
        tile_c[i] = 0.0;
#endif
    for (uint k0 = 0; k0 < ld; k0 += TILE_K) {
        load_tile_a(row_slot, rows, row0, k0, ld);
        load_tile_b(base, n0, up_offset, n, k0, ld);
        barrier();
#ifdef MATRIX_CORES
        for (uint k = 0; k < TILE_K; k += 16) {
            MATRIX_F16 a0, a1, b0, b1;
            MATRIX_LOAD(a0, tile_a, k, TILE_K);
            MATRIX_LOAD(a1, tile_a, 16 * TILE_K + k, TILE_K);
            MATRIX_LOAD_COLUMNS(b0, tile_b, col * TILE_K + k, TILE_K);
            MATRIX_LOAD_COLUMNS(b1, tile_b, (col + 16) * TILE_K + k, TILE_K);
            MATRIX_MUL_ADD(a0, b0, acc00);
            MATRIX_MUL_ADD(a0, b1, acc01);
            MATRIX_MUL_ADD(a1, b0, acc10);
            MATRIX_MUL_ADD(a1, b1, acc11);
        }
#else
        if (in_registers)
            multiply_block(at, c);
        else
            multiply_tiles();
#endif
        barrier();
    }
#ifdef MATRIX_CORES
    MATRIX_STORE(acc00, tile_c, col, TILE_N);
    MATRIX_STORE(acc01, tile_c, col + 16, TILE_N);
    MATRIX_STORE(acc10, tile_c, 16 * TILE_N + col, TILE_N);
    MATRIX_STORE(acc11, tile_c, 16 * TILE_N + col + 16, TILE_N);
    barrier();
#else
    if (in_registers) {
        store_block(at, c);
        barrier();
    }
#endif
}
