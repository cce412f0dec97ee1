// What both expert GEMM paths share: specialization constants, the texel
// views of A and the weights, the weight decoders and the row and tile maps.
// The register path (common/register_gemm.glsl, the default) keeps a lane's
// whole output in registers; the tiled path (common/tiled_gemm.glsl, built
// with TILED) stages A and B in shared memory, optionally multiplying them
// with NV cooperative matrices (MATRIX_CORES).
//   spec 0: TILE_M (rows of a tile, a multiple of 16: 32, or more for the tiled path);
//   1: LANES (workgroup size); 2: WEIGHT_TYPE (a vkmoe_weight_type, WEIGHT_*);
//   3: ACTIVATION (a vkmoe_activation, ACTIVATION_*, or VKMOE_ACTIVATION_LINEAR:
//   the projection alone, for the router's logits)
//   set 1: rows_a, f32 rows of A, ld/4 RGBA32F texels each, zero past the
//   depth; weights0, weights1: one allocation of expert matrices, rows of ld
//   weights, as RGBA32UI texels (f32, f16, bf16) or R32UI (GGUF blocks)

#include "public_enums.glsl"

layout(constant_id = 0) const uint TILE_M = 32;
layout(constant_id = 1) const uint LANES = 8;
layout(constant_id = 2) const uint WEIGHT_TYPE = 0;
layout(constant_id = 3) const uint ACTIVATION = 0;
const uint ACTIVATION_LINEAR = VKMOE_ACTIVATION_LINEAR;
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
    if (WEIGHT_TYPE == WEIGHT_F32) {
        uint t = base + (n * ld + k) / 4;
        lo = uintBitsToFloat(texelFetch(w, int(t)));
        hi = uintBitsToFloat(texelFetch(w, int(t + 1)));
    } else if (WEIGHT_TYPE == WEIGHT_F16 || WEIGHT_TYPE == WEIGHT_BF16) {
        uvec4 h = texelFetch(w, int(base + (n * ld + k) / 8));
        if (WEIGHT_TYPE == WEIGHT_F16) {
            lo = vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
            hi = vec4(unpackHalf2x16(h.z), unpackHalf2x16(h.w));
        } else { // bf16: each half is the top of an f32
            lo = uintBitsToFloat(uvec4(h.x << 16, h.x & 0xffff0000u, h.y << 16, h.y & 0xffff0000u));
            hi = uintBitsToFloat(uvec4(h.z << 16, h.z & 0xffff0000u, h.w << 16, h.w & 0xffff0000u));
        }
    } else if (WEIGHT_TYPE == WEIGHT_Q8_0 || WEIGHT_TYPE == WEIGHT_Q4_0) {
        uint block_bytes = WEIGHT_TYPE == WEIGHT_Q8_0 ? 34 : 18;
        uint block = base * 4 + (n * (ld / 32) + k / 32) * block_bytes;
        float d = fetch_half(w, block);
        if (WEIGHT_TYPE == WEIGHT_Q8_0) {
            uvec2 q = fetch_bytes8(w, block + 2 + k % 32);
            lo = d * signed_bytes(q.x);
            hi = d * signed_bytes(q.y);
        } else {
            uvec2 q = fetch_bytes8(w, block + 2 + k % 16) >> (k % 32 >= 16 ? 4 : 0);
            lo = d * (nibbles(q.x) - 8.0);
            hi = d * (nibbles(q.y) - 8.0);
        }
    } else if (WEIGHT_TYPE == WEIGHT_Q4_1) { // 20-byte blocks: d, m, Q4_0's nibbles
        uint block = base * 4 + (n * (ld / 32) + k / 32) * 20;
        vec2 d_m = unpackHalf2x16(fetch_word(w, block / 4));
        uvec2 q = fetch_bytes8(w, block + 4 + k % 16) >> (k % 32 >= 16 ? 4 : 0);
        lo = d_m.x * nibbles(q.x) + d_m.y;
        hi = d_m.x * nibbles(q.y) + d_m.y;
    } else if (WEIGHT_TYPE == WEIGHT_Q4_K) { // 144-byte blocks, so word-aligned
        uint word = base + (n * (ld / 256) + k / 256) * 36, p = k % 256, j = p / 32;
        vec2 d_dmin = unpackHalf2x16(fetch_word(w, word));
        vec2 sm = q4k_scale_min(fetch_word(w, word + 1), fetch_word(w, word + 2),
                                fetch_word(w, word + 3), j);
        uint q_word = word + 4 + (p / 64) * 8 + (p % 32) / 4;
        uvec2 q = uvec2(fetch_word(w, q_word), fetch_word(w, q_word + 1)) >> (j % 2) * 4;
        float step = d_dmin.x * sm.x, offset = d_dmin.y * sm.y;
        lo = step * nibbles(q.x) - offset;
        hi = step * nibbles(q.y) - offset;
    } else if (WEIGHT_TYPE == WEIGHT_Q6_K) { // 210-byte blocks, 2-byte aligned
        uint block = base * 4 + (n * (ld / 256) + k / 256) * 210, p = k % 256;
        uint half_ = p / 128, quarter = p % 128 / 32, l = p % 32;
        uvec2 low = fetch_bytes8(w, block + 64 * half_ + 32 * (quarter & 1) + l) >> (quarter / 2) * 4;
        uvec2 high = fetch_bytes8(w, block + 128 + 32 * half_ + l) >> quarter * 2;
        uint scale_at = block + 192 + 8 * half_ + 2 * quarter + l / 16;
        int scale = bitfieldExtract(int(fetch_word(w, scale_at / 4)), int(scale_at % 4) * 8, 8);
        float step = fetch_half(w, block + 208) * float(scale);
        lo = step * (vec4((bytes4(low.x) & 0xfu) | (bytes4(high.x) & 3u) << 4) - 32.0);
        hi = step * (vec4((bytes4(low.y) & 0xfu) | (bytes4(high.y) & 3u) << 4) - 32.0);
    } else { // a type with no decoder here: NaN in every output, never another type's values
        lo = hi = vec4(uintBitsToFloat(0x7fc00000u));
    }
}

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
