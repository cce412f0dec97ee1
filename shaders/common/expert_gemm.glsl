// The expert GEMM for CPU devices (llvmpipe): one subgroup per workgroup, no
// shared memory, no barriers, no local arrays (llvmpipe turns indexed local
// arrays into per-lane scratch and every memory access into a per-lane
// gather). Lane l owns four output columns; a pass covers 32 rows, or 8
// when fewer real rows are left (decode), and computes
//   acc_m = Σ_k A[row m][k] · (B₀[n₀][k], B₁[n₁][k], B₂[n₂][k], B₃[n₃][k])
// for the four (matrix, column) pairs the including shader passes. Each lane
// loads A[row m][k0 + lane]; subgroupBroadcast hands every value to all
// lanes, so A is read once per pass, and each weight is loaded once per pass
// and used for all its rows.
//   spec 0: TILE_M (rows of a tile, a multiple of 8); 1: LANES (= subgroup
//   size = workgroup size, a multiple of 4); 2: WEIGHT_TYPE (0 f32, 1 f16, 2 bf16, 3 Q8_0, 4 Q4_0);
//   3: ACTIVATION (vkmoe_activation: 0 SwiGLU, 1 ReLU, 2 clamped SwiGLU; and
//   3, the projection alone, for the router's logits)
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_ballot : require

layout(constant_id = 0) const uint TILE_M = 32;
layout(constant_id = 1) const uint LANES = 8;
layout(constant_id = 2) const uint WEIGHT_TYPE = 0;
layout(constant_id = 3) const uint ACTIVATION = 0;
const uint ACTIVATION_RELU = 1;
const uint ACTIVATION_SWIGLU_CLAMPED = 2;
const uint ACTIVATION_LINEAR = 3;
layout(local_size_x_id = 1) in;

// Where row `row` of A starts (an element index), or INVALID for a padding
// row, and A's element at that start plus k (zero past the valid depth).
uint a_row_start(uint row);
float load_a(uint start, uint k);

// The scale d and four quantized bytes of a GGUF block of 32 weights in
// row n (rows of ld / 32 blocks of block_bytes: f16 d, then the q bytes),
// the bytes from byte `at` of the q part. Read as 32-bit words: with 34- and
// 18-byte blocks, every other block starts two bytes off a word.
uint load_block(uvec2 matrix, uint n, uint k, uint ld, uint block_bytes, uint at, out float d)
{
    UintArray words = UintArray(matrix);
    uint block = (n * (ld / 32) + k / 32) * block_bytes;
    uint d_word = words.v[block / 4];
    d = unpackHalf2x16(block % 4 == 0 ? d_word : d_word >> 16).x;
    uint q_byte = block + 2 + at, q_word = q_byte / 4;
    return q_byte % 4 == 0 ? words.v[q_word]
                           : (words.v[q_word] >> 16) | (words.v[q_word + 1] << 16);
}

// Weights k .. k + 3 (k a multiple of 4, so within one block): Q8_0 holds
// them as int8 bytes k % 32 ..; Q4_0 as the low nibbles of bytes k % 16 ..
// for k % 32 < 16, else the high ones; weight = d·(q − 8).
vec4 load_quantized(uvec2 matrix, uint n, uint k, uint ld)
{
    float d;
    if (WEIGHT_TYPE == 3) {
        int q = int(load_block(matrix, n, k, ld, 34, k % 32, d));
        return d * vec4(bitfieldExtract(q, 0, 8), bitfieldExtract(q, 8, 8),
                        bitfieldExtract(q, 16, 8), bitfieldExtract(q, 24, 8));
    }
    uint q = load_block(matrix, n, k, ld, 18, k % 16, d) >> (k % 32 >= 16 ? 4 : 0);
    uvec4 nibbles = uvec4(q, q >> 8, q >> 16, q >> 24) & 0xfu;
    return d * (vec4(nibbles) - 8.0);
}

vec4 load_b4(uvec2 matrix, uint n, uint k, uint rows, uint ld)
{
    if (n >= rows || k >= ld)
        return vec4(0.0);
    if (WEIGHT_TYPE >= 3)
        return load_quantized(matrix, n, k, ld);
    uint index = (n * ld + k) / 4;
    if (WEIGHT_TYPE == 1) {
        uvec2 h = Half4Array(matrix).v[index];
        return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
    }
    if (WEIGHT_TYPE == 2) { // bf16: each half is the top of an f32
        uvec2 h = Half4Array(matrix).v[index];
        return uintBitsToFloat(uvec4(h.x << 16, h.x & 0xffff0000u, h.y << 16, h.y & 0xffff0000u));
    }
    return Vec4Array(matrix).v[index];
}

vec4 acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7,
    acc8, acc9, acc10, acc11, acc12, acc13, acc14, acc15,
    acc16, acc17, acc18, acc19, acc20, acc21, acc22, acc23,
    acc24, acc25, acc26, acc27, acc28, acc29, acc30, acc31;

#define PASS_ROWS 8
#define PASS_FUNCTION gemm_pass_8
#include "common/expert_gemm_pass.glsl"
#undef PASS_ROWS
#undef PASS_FUNCTION
#define PASS_ROWS 32
#define PASS_FUNCTION gemm_pass_32
#include "common/expert_gemm_pass.glsl"
#undef PASS_ROWS
#undef PASS_FUNCTION

// The slot held by row `row`, or INVALID for a padding row: the row map
// covers the first `rows` rows (the shared expert's pass has no more).
uint slot_at(uvec2 row_slot, uint rows, uint row)
{
    return row < rows ? UintArray(row_slot).v[row] : INVALID;
}

// A bias element, or 0 when there are none (address 0) or col is padding.
float bias_at(uvec2 biases, uint expert, uint col, uint n)
{
    return biases != uvec2(0) && col < n ? FloatArray(biases).v[expert * n + col] : 0.0;
}

// Rows r0 .. r0 + (returned count) − 1 of the tile ending at tile_end: 32
// when those rows all hold slots, else 8. Padding rows sit at the end of an
// expert's segment, so the 32-row test needs only the last row.
uint gemm_pass(uvec2 row_slot, uint valid_rows, uint r0, uint tile_end, uint depth,
               uvec2 matrix[4], uint column[4], uint rows, uint ld)
{
    if (r0 + 32 <= tile_end && slot_at(row_slot, valid_rows, r0 + 31) != INVALID) {
        gemm_pass_32(r0, depth, matrix, column, rows, ld);
        return 32;
    }
    gemm_pass_8(r0, depth, matrix, column, rows, ld);
    return 8;
}

vec4 pass_result(uint m)
{
    switch (m) {
    case 0: return acc0;
    case 1: return acc1;
    case 2: return acc2;
    case 3: return acc3;
    case 4: return acc4;
    case 5: return acc5;
    case 6: return acc6;
    case 7: return acc7;
    case 8: return acc8;
    case 9: return acc9;
    case 10: return acc10;
    case 11: return acc11;
    case 12: return acc12;
    case 13: return acc13;
    case 14: return acc14;
    case 15: return acc15;
    case 16: return acc16;
    case 17: return acc17;
    case 18: return acc18;
    case 19: return acc19;
    case 20: return acc20;
    case 21: return acc21;
    case 22: return acc22;
    case 23: return acc23;
    case 24: return acc24;
    case 25: return acc25;
    case 26: return acc26;
    case 27: return acc27;
    case 28: return acc28;
    case 29: return acc29;
    case 30: return acc30;
    default: return acc31;
    }
}

uint row_tile_id()
{
    return gl_WorkGroupID.z * gl_NumWorkGroups.y + gl_WorkGroupID.y;
}
