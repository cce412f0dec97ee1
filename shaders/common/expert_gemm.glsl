// The expert GEMM: one workgroup of LANES invocations (the subgroup size on
// the device; nothing depends on it being one subgroup), no shared memory, no
// barriers, no indexed local arrays (llvmpipe turns those into per-lane
// scratch). A and the weights are read through uniform texel buffers:
// llvmpipe (Mesa 22.3) loads from a storage buffer lane by lane in a
// branchy loop, but fetches texels with vector gathers, which made a
// 256x1536x1024 f16 GEMM 7x faster (2.98 -> 21.5 GFLOP/s, measured).
// Lane l owns eight output columns, column[c]: c < 4 read from weights0,
// c >= 4 from weights1. A pass covers 16, 4 or 1 rows, all holding slots,
// and adds A[row m][k..k+7] · B_c[column c][k..k+7] per step of eight k: the
// row's A values are lane-uniform, fetched four at a time, and each weight
// is fetched once per pass for all its rows.
//   spec 0: TILE_M (rows of a tile, a multiple of 16); 1: LANES (workgroup
//   size); 2: WEIGHT_TYPE (vkmoe_weight_type: 0 f32, 1 f16,
//   2 bf16, 3 Q8_0, 4 Q4_0, 5 Q4_K, 6 Q6_K); 3: ACTIVATION (vkmoe_activation:
//   0 SwiGLU, 1 ReLU, 2 clamped SwiGLU; and 3, the projection alone, for the
//   router's logits)
//   set 1: rows_a, f32 rows of A, ld/4 RGBA32F texels each, zero past the
//   depth; weights0, weights1: one allocation of expert matrices, rows of ld
//   weights, as RGBA32UI texels (f32, f16, bf16) or R32UI (GGUF blocks)

layout(constant_id = 0) const uint TILE_M = 32;
layout(constant_id = 1) const uint LANES = 8;
layout(constant_id = 2) const uint WEIGHT_TYPE = 0;
layout(constant_id = 3) const uint ACTIVATION = 0;
const uint ACTIVATION_RELU = 1;
const uint ACTIVATION_SWIGLU_CLAMPED = 2;
const uint ACTIVATION_LINEAR = 3;
layout(local_size_x_id = 1) in;

layout(set = 1, binding = 0) uniform samplerBuffer rows_a;
layout(set = 1, binding = 1) uniform usamplerBuffer weights0;
layout(set = 1, binding = 2) uniform usamplerBuffer weights1;

// The first texel of row `row` of A (a row holding a slot).
uint a_row_texel(uint row);

uint fetch_word(usamplerBuffer w, uint word)
{
    return texelFetch(w, int(word)).x;
}

// Eight bytes from byte `at` (even) of a matrix stored as 32-bit words.
uvec2 fetch_bytes8(usamplerBuffer w, uint at)
{
    uint word = at / 4;
    uvec3 v = uvec3(fetch_word(w, word), fetch_word(w, word + 1), fetch_word(w, word + 2));
    return at % 4 == 0 ? v.xy : uvec2((v.x >> 16) | (v.y << 16), (v.y >> 16) | (v.z << 16));
}

float fetch_half(usamplerBuffer w, uint at)
{
    uint word = fetch_word(w, at / 4);
    return unpackHalf2x16(at % 4 == 0 ? word : word >> 16).x;
}

vec4 signed_bytes(uint q)
{
    int v = int(q);
    return vec4(bitfieldExtract(v, 0, 8), bitfieldExtract(v, 8, 8), bitfieldExtract(v, 16, 8),
                bitfieldExtract(v, 24, 8));
}

uvec4 bytes4(uint q)
{
    return uvec4(q, q >> 8, q >> 16, q >> 24) & 0xffu;
}

vec4 nibbles(uint q)
{
    return vec4(bytes4(q) & 0xfu);
}

// Q4_K's 6-bit scale and min of sub-block j (0..7) from the 12 packed
// bytes s0 (0..3), s1 (4..7), s2 (8..11): j < 4 in the low 6 bits of
// bytes j and j + 4; j >= 4 in the nibbles of byte j + 4 and the top two
// bits of bytes j - 4 and j.
vec2 q4k_scale_min(uint s0, uint s1, uint s2, uint j)
{
    uint shift = (j % 4) * 8;
    uint b0 = (s0 >> shift) & 0xffu, b1 = (s1 >> shift) & 0xffu, b2 = (s2 >> shift) & 0xffu;
    if (j < 4)
        return vec2(b0 & 63u, b1 & 63u);
    return vec2((b2 & 0xfu) | (b0 >> 6) << 4, (b2 >> 4) | (b1 >> 6) << 4);
}

// Weights k .. k + 7 (k a multiple of 8) of row n of the matrix starting at
// texel `base`, rows of ld weights. GGUF blocks of 32: Q8_0 is an f16 scale d
// and 32 int8 q (w = d·q); Q4_0 is d and 16 bytes whose low nibbles hold
// weights 0..15 and high nibbles 16..31 (w = d·(q − 8)). Super-blocks of
// 256 (layouts in vkmoe.h): Q4_K, w = d·sc·q − dmin·m per sub-block of 32;
// Q6_K, w = d·sc·(q − 32) per sub-block of 16.
void load_w8(usamplerBuffer w, uint base, uint n, uint k, uint ld, out vec4 lo, out vec4 hi)
{
    if (WEIGHT_TYPE == 0) {
        uint t = base + (n * ld + k) / 4;
        lo = uintBitsToFloat(texelFetch(w, int(t)));
        hi = uintBitsToFloat(texelFetch(w, int(t + 1)));
    } else if (WEIGHT_TYPE <= 2) {
        uvec4 h = texelFetch(w, int(base + (n * ld + k) / 8));
        if (WEIGHT_TYPE == 1) {
            lo = vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
            hi = vec4(unpackHalf2x16(h.z), unpackHalf2x16(h.w));
        } else { // bf16: each half is the top of an f32
            lo = uintBitsToFloat(uvec4(h.x << 16, h.x & 0xffff0000u, h.y << 16, h.y & 0xffff0000u));
            hi = uintBitsToFloat(uvec4(h.z << 16, h.z & 0xffff0000u, h.w << 16, h.w & 0xffff0000u));
        }
    } else if (WEIGHT_TYPE <= 4) {
        uint block_bytes = WEIGHT_TYPE == 3 ? 34 : 18;
        uint block = base * 4 + (n * (ld / 32) + k / 32) * block_bytes;
        float d = fetch_half(w, block);
        if (WEIGHT_TYPE == 3) {
            uvec2 q = fetch_bytes8(w, block + 2 + k % 32);
            lo = d * signed_bytes(q.x);
            hi = d * signed_bytes(q.y);
        } else {
            uvec2 q = fetch_bytes8(w, block + 2 + k % 16) >> (k % 32 >= 16 ? 4 : 0);
            lo = d * (nibbles(q.x) - 8.0);
            hi = d * (nibbles(q.y) - 8.0);
        }
    } else if (WEIGHT_TYPE == 5) { // Q4_K: 144-byte blocks, so word-aligned
        uint word = base + (n * (ld / 256) + k / 256) * 36, p = k % 256, j = p / 32;
        vec2 d_dmin = unpackHalf2x16(fetch_word(w, word));
        vec2 sm = q4k_scale_min(fetch_word(w, word + 1), fetch_word(w, word + 2),
                                fetch_word(w, word + 3), j);
        uint q_word = word + 4 + (p / 64) * 8 + (p % 32) / 4;
        uvec2 q = uvec2(fetch_word(w, q_word), fetch_word(w, q_word + 1)) >> (j % 2) * 4;
        float step = d_dmin.x * sm.x, offset = d_dmin.y * sm.y;
        lo = step * nibbles(q.x) - offset;
        hi = step * nibbles(q.y) - offset;
    } else { // Q6_K: 210-byte blocks, 2-byte aligned
        uint block = base * 4 + (n * (ld / 256) + k / 256) * 210, p = k % 256;
        uint half_ = p / 128, quarter = p % 128 / 32, l = p % 32;
        uvec2 low = fetch_bytes8(w, block + 64 * half_ + 32 * (quarter & 1) + l) >> (quarter / 2) * 4;
        uvec2 high = fetch_bytes8(w, block + 128 + 32 * half_ + l) >> quarter * 2;
        uint scale_at = block + 192 + 8 * half_ + 2 * quarter + l / 16;
        int scale = bitfieldExtract(int(fetch_word(w, scale_at / 4)), int(scale_at % 4) * 8, 8);
        float step = fetch_half(w, block + 208) * float(scale);
        lo = step * (vec4((bytes4(low.x) & 0xfu) | (bytes4(high.x) & 3u) << 4) - 32.0);
        hi = step * (vec4((bytes4(low.y) & 0xfu) | (bytes4(high.y) & 3u) << 4) - 32.0);
    }
}

// The weights of one step of eight k, as wlo_j = (B_0..3[k + j]) and
// whi_j = (B_4..7[k + j]).
vec4 wlo0, wlo1, wlo2, wlo3, wlo4, wlo5, wlo6, wlo7;
vec4 whi0, whi1, whi2, whi3, whi4, whi5, whi6, whi7;

void load_step(uint base, uint column[8], uint k, uint ld)
{
    vec4 l0, h0, l1, h1, l2, h2, l3, h3, l4, h4, l5, h5, l6, h6, l7, h7;
    load_w8(weights0, base, column[0], k, ld, l0, h0);
    load_w8(weights0, base, column[1], k, ld, l1, h1);
    load_w8(weights0, base, column[2], k, ld, l2, h2);
    load_w8(weights0, base, column[3], k, ld, l3, h3);
    load_w8(weights1, base, column[4], k, ld, l4, h4);
    load_w8(weights1, base, column[5], k, ld, l5, h5);
    load_w8(weights1, base, column[6], k, ld, l6, h6);
    load_w8(weights1, base, column[7], k, ld, l7, h7);
    wlo0 = vec4(l0.x, l1.x, l2.x, l3.x); whi0 = vec4(l4.x, l5.x, l6.x, l7.x);
    wlo1 = vec4(l0.y, l1.y, l2.y, l3.y); whi1 = vec4(l4.y, l5.y, l6.y, l7.y);
    wlo2 = vec4(l0.z, l1.z, l2.z, l3.z); whi2 = vec4(l4.z, l5.z, l6.z, l7.z);
    wlo3 = vec4(l0.w, l1.w, l2.w, l3.w); whi3 = vec4(l4.w, l5.w, l6.w, l7.w);
    wlo4 = vec4(h0.x, h1.x, h2.x, h3.x); whi4 = vec4(h4.x, h5.x, h6.x, h7.x);
    wlo5 = vec4(h0.y, h1.y, h2.y, h3.y); whi5 = vec4(h4.y, h5.y, h6.y, h7.y);
    wlo6 = vec4(h0.z, h1.z, h2.z, h3.z); whi6 = vec4(h4.z, h5.z, h6.z, h7.z);
    wlo7 = vec4(h0.w, h1.w, h2.w, h3.w); whi7 = vec4(h4.w, h5.w, h6.w, h7.w);
}

// acc += A[row][k .. k + 7] · this step's weights, for the row at texel t.
void accumulate(uint t, inout vec4 lo, inout vec4 hi)
{
    vec4 a = texelFetch(rows_a, int(t)), b = texelFetch(rows_a, int(t + 1));
    lo = fma(vec4(a.x), wlo0, lo); hi = fma(vec4(a.x), whi0, hi);
    lo = fma(vec4(a.y), wlo1, lo); hi = fma(vec4(a.y), whi1, hi);
    lo = fma(vec4(a.z), wlo2, lo); hi = fma(vec4(a.z), whi2, hi);
    lo = fma(vec4(a.w), wlo3, lo); hi = fma(vec4(a.w), whi3, hi);
    lo = fma(vec4(b.x), wlo4, lo); hi = fma(vec4(b.x), whi4, hi);
    lo = fma(vec4(b.y), wlo5, lo); hi = fma(vec4(b.y), whi5, hi);
    lo = fma(vec4(b.z), wlo6, lo); hi = fma(vec4(b.z), whi6, hi);
    lo = fma(vec4(b.w), wlo7, lo); hi = fma(vec4(b.w), whi7, hi);
}

// Row m of a pass: columns 0..3 in lo##m, 4..7 in hi##m.
vec4 lo0, lo1, lo2, lo3, lo4, lo5, lo6, lo7, lo8, lo9, lo10, lo11, lo12, lo13, lo14, lo15;
vec4 hi0, hi1, hi2, hi3, hi4, hi5, hi6, hi7, hi8, hi9, hi10, hi11, hi12, hi13, hi14, hi15;

#define PASS_ROWS 1
#define PASS_FUNCTION gemm_pass_1
#include "common/expert_gemm_pass.glsl"
#undef PASS_ROWS
#undef PASS_FUNCTION
#define PASS_ROWS 4
#define PASS_FUNCTION gemm_pass_4
#include "common/expert_gemm_pass.glsl"
#undef PASS_ROWS
#undef PASS_FUNCTION
#define PASS_ROWS 16
#define PASS_FUNCTION gemm_pass_16
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

// Whether rows r0 .. r0 + count − 1 of the tile ending at tile_end all hold
// slots. Padding rows sit at the end of an expert's segment, so the last
// row tells.
bool rows_hold_slots(uvec2 row_slot, uint valid_rows, uint r0, uint count, uint tile_end)
{
    return r0 + count <= tile_end && slot_at(row_slot, valid_rows, r0 + count - 1) != INVALID;
}

// One pass from row r0 (which holds a slot) over the depth of the matrices
// at texel `base`; returns the rows it covered.
uint gemm_pass(uvec2 row_slot, uint valid_rows, uint r0, uint tile_end, uint base,
               uint column[8], uint ld)
{
    if (rows_hold_slots(row_slot, valid_rows, r0, 16, tile_end)) {
        gemm_pass_16(r0, base, column, ld);
        return 16;
    }
    if (rows_hold_slots(row_slot, valid_rows, r0, 4, tile_end)) {
        gemm_pass_4(r0, base, column, ld);
        return 4;
    }
    gemm_pass_1(r0, base, column, ld);
    return 1;
}

void pass_result(uint m, out vec4 lo, out vec4 hi)
{
    switch (m) {
    case 0: lo = lo0; hi = hi0; break;
    case 1: lo = lo1; hi = hi1; break;
    case 2: lo = lo2; hi = hi2; break;
    case 3: lo = lo3; hi = hi3; break;
    case 4: lo = lo4; hi = hi4; break;
    case 5: lo = lo5; hi = hi5; break;
    case 6: lo = lo6; hi = hi6; break;
    case 7: lo = lo7; hi = hi7; break;
    case 8: lo = lo8; hi = hi8; break;
    case 9: lo = lo9; hi = hi9; break;
    case 10: lo = lo10; hi = hi10; break;
    case 11: lo = lo11; hi = hi11; break;
    case 12: lo = lo12; hi = hi12; break;
    case 13: lo = lo13; hi = hi13; break;
    case 14: lo = lo14; hi = hi14; break;
    default: lo = lo15; hi = hi15; break;
    }
}

uint row_tile_id()
{
    return gl_WorkGroupID.z * gl_NumWorkGroups.y + gl_WorkGroupID.y;
}

// The expert of a row tile, or INVALID when the tile is unused or its
// expert's matrices are in another allocation than this dispatch's
// (expert_first .. + expert_count − 1).
uint tile_expert_in(uvec2 tile_expert, uint max_tiles, uint expert_first, uint expert_count)
{
    uint tile = row_tile_id();
    if (tile >= max_tiles)
        return INVALID;
    uint expert = UintArray(tile_expert).v[tile];
    return expert - expert_first < expert_count ? expert : INVALID;
}
