// What both expert GEMM paths share: specialization constants, the texel
// views of A and the weights, the weight decoders and the row and tile maps.
// The register path (common/register_gemm.glsl, the default) keeps a lane's
// whole output in registers; the tiled path (common/tiled_gemm.glsl, built
// with TILED) stages A and B in shared memory, optionally multiplying them
// with NV cooperative matrices (MATRIX_CORES).
//   spec 0: TILE_M (rows of a tile, a multiple of 16: 32, or more for the tiled path);
//   1: LANES (workgroup size); 2: WEIGHT_TYPE (a vkmoe_weight_type, WEIGHT_*);
//   3: ACTIVATION (a vkmoe_activation, ACTIVATION_*, or VKMOE_ACTIVATION_LINEAR:
//   the projection alone, for the router's logits); 4, 5, 6: the GEMV path's
//   GEMV_STEPS, GEMV_COLUMNS and GEMV_PASS (common/gemv_gemm.glsl); 7:
//   TEXEL_WORDS, the 32-bit words of a texel of the weights' views (below)
//   set 1: rows_a, f32 rows of A, ld/4 RGBA32F texels each, zero past the
//   depth; weights0, weights1: one allocation of expert matrices, rows of ld
//   weights, as RGBA32UI texels (f32, f16, bf16, and GGUF blocks whose size
//   is a multiple of 16 bytes: Q4_K, Q5_K) or R32UI (other GGUF blocks)

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

// Words a texel of a blocked type's weights holds (vkmoe_weight_texel_bytes
// / 4): 4 where every block starts on 16 bytes, so that 16 bytes of a
// block are one fetch (fetch_words4: the GEMV path's Q4_K unit, 8 fetches
// of a word before), else 1. `base` counts texels: its word is
// base * TEXEL_WORDS.
layout(constant_id = 7) const uint TEXEL_WORDS = 1;

uint fetch_word(usamplerBuffer w, uint word)
{
    if (TEXEL_WORDS == 1)
        return texelFetch(w, int(word)).x;
    return texelFetch(w, int(word / 4))[word % 4];
}

// Words word .. word + 3, word a multiple of 4: one fetch where a texel
// holds them (the compilers do not merge fetch_word's of one texel: they
// cannot tell that the words share it).
uvec4 fetch_words4(usamplerBuffer w, uint word)
{
    if (TEXEL_WORDS == 4)
        return texelFetch(w, int(word / 4));
    return uvec4(fetch_word(w, word), fetch_word(w, word + 1), fetch_word(w, word + 2),
                 fetch_word(w, word + 3));
}

// Words word and word + 1, word even.
uvec2 fetch_words2(usamplerBuffer w, uint word)
{
    if (TEXEL_WORDS == 4) {
        uvec4 t = texelFetch(w, int(word / 4));
        return word % 4 == 0 ? t.xy : t.zw;
    }
    return uvec2(fetch_word(w, word), fetch_word(w, word + 1));
}

// Eight bytes from byte `at` of a matrix stored as 32-bit words (blocks of
// 17 or 22 bytes start anywhere in a word).
uvec2 fetch_bytes8(usamplerBuffer w, uint at)
{
    uint word = at / 4, shift = at % 4 * 8;
    uvec2 v = uvec2(fetch_word(w, word), fetch_word(w, word + 1));
    if (shift == 0)
        return v;
    uint next = fetch_word(w, word + 2);
    return uvec2((v.x >> shift) | (v.y << (32 - shift)), (v.y >> shift) | (next << (32 - shift)));
}

uint fetch_byte(usamplerBuffer w, uint at)
{
    return fetch_word(w, at / 4) >> at % 4 * 8 & 0xffu;
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

// Bit 0 of each byte of q, as 0 or 1.
vec4 low_bits(uint q)
{
    return vec4(bytes4(q) & 1u);
}

// Bits 0..3 of q, as 0 or 1.
vec4 bits4(uint q)
{
    return vec4(uvec4(q, q >> 1, q >> 2, q >> 3) & 1u);
}

// IQ4_NL's and IQ4_XS's 16 levels of each nibble of q (bits 0..3 of each
// byte), as int8 bytes 4 to a word: selected, not indexed, since llvmpipe
// compiles an indexed constant array into minutes of codegen.
vec4 iq4_levels(uint q)
{
    uvec4 i = bytes4(q) & 0xfu;
    const uvec4 low = uvec4(0xbfad9881u), mid_low = uvec4(0xf6eaddcfu);    // −127 .. −10
    const uvec4 mid_high = uvec4(0x26190d01u), high = uvec4(0x71594535u); // 1 .. 113
    uvec4 word = mix(mix(low, mid_low, greaterThanEqual(i, uvec4(4))),
                     mix(mid_high, high, greaterThanEqual(i, uvec4(12))),
                     greaterThanEqual(i, uvec4(8)));
    return vec4(ivec4(word << (24u - (i & 3u) * 8u)) >> 24);
}

// MXFP4's E2M1 values, doubled (0, 1, 2, 3, 4, 6, 8, 12 and their
// negatives; the scale is halved), of each nibble of q: a magnitude code m
// below 2 is its own value, others (2 + their low bit)·2^(m/2 − 1).
vec4 mxfp4_levels(uint q)
{
    uvec4 c = bytes4(q) & 0xfu, m = c & 7u;
    uvec4 shift = max(m >> 1, uvec4(1)) - 1u;
    vec4 magnitude = vec4(mix((2u + (m & 1u)) << shift, m, lessThan(m, uvec4(2))));
    return mix(magnitude, -magnitude, greaterThan(c, uvec4(7)));
}

// 2^(e − 128): MXFP4's E8M0 scale, halved.
float e8m0_half(uint e)
{
    return uintBitsToFloat(e < 2 ? 0x00200000u << e : (e - 1) << 23);
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
// texel `base`, rows of ld weights, decoded in registers; the layouts are
// vkmoe.h's (vkmoe_weight_type). GGUF blocks of 32: Q8_0 is an f16 scale d
// and 32 int8 q (w = d·q); Q4_0 is d and 16 bytes whose low nibbles hold
// weights 0..15 and high nibbles 16..31 (w = d·(q − 8)); Q4_1, Q5_0, Q5_1,
// IQ4_NL and MXFP4 keep those nibbles. Super-blocks of 256: Q4_K and Q5_K,
// w = d·sc·q − dmin·m per sub-block of 32; Q6_K, w = d·sc·(q − 32) and Q3_K,
// d·sc·(q − 4) per sub-block of 16; Q2_K, d·sc·q − dmin·m per 16; IQ4_XS,
// d·(ls − 32)·level per 32.
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
        uint block = base * TEXEL_WORDS * 4 + (n * (ld / 32) + k / 32) * block_bytes;
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
        uint block = base * TEXEL_WORDS * 4 + (n * (ld / 32) + k / 32) * 20;
        vec2 d_m = unpackHalf2x16(fetch_word(w, block / 4));
        uvec2 q = fetch_bytes8(w, block + 4 + k % 16) >> (k % 32 >= 16 ? 4 : 0);
        lo = d_m.x * nibbles(q.x) + d_m.y;
        hi = d_m.x * nibbles(q.y) + d_m.y;
    } else if (WEIGHT_TYPE == WEIGHT_Q4_K) { // 144-byte blocks, so word-aligned
        uint word = base * TEXEL_WORDS + (n * (ld / 256) + k / 256) * 36, p = k % 256, j = p / 32;
        uvec4 head = fetch_words4(w, word);
        vec2 d_dmin = unpackHalf2x16(head.x);
        vec2 sm = q4k_scale_min(head.y, head.z, head.w, j);
        uint q_word = word + 4 + (p / 64) * 8 + (p % 32) / 4; // even: k is a multiple of 8
        uvec2 q = fetch_words2(w, q_word) >> (j % 2) * 4;
        float step = d_dmin.x * sm.x, offset = d_dmin.y * sm.y;
        lo = step * nibbles(q.x) - offset;
        hi = step * nibbles(q.y) - offset;
    } else if (WEIGHT_TYPE == WEIGHT_Q6_K) { // 210-byte blocks, 2-byte aligned
        uint block = base * TEXEL_WORDS * 4 + (n * (ld / 256) + k / 256) * 210, p = k % 256;
        uint half_ = p / 128, quarter = p % 128 / 32, l = p % 32;
        uvec2 low = fetch_bytes8(w, block + 64 * half_ + 32 * (quarter & 1) + l) >> (quarter / 2) * 4;
        uvec2 high = fetch_bytes8(w, block + 128 + 32 * half_ + l) >> quarter * 2;
        uint scale_at = block + 192 + 8 * half_ + 2 * quarter + l / 16;
        int scale = bitfieldExtract(int(fetch_word(w, scale_at / 4)), int(scale_at % 4) * 8, 8);
        float step = fetch_half(w, block + 208) * float(scale);
        lo = step * (vec4((bytes4(low.x) & 0xfu) | (bytes4(high.x) & 3u) << 4) - 32.0);
        hi = step * (vec4((bytes4(low.y) & 0xfu) | (bytes4(high.y) & 3u) << 4) - 32.0);
    } else if (WEIGHT_TYPE == WEIGHT_Q5_0 || WEIGHT_TYPE == WEIGHT_Q5_1) {
        // 22 bytes (d, fifth bits, nibbles) or 24 (d, m, fifth bits, nibbles)
        bool has_min = WEIGHT_TYPE == WEIGHT_Q5_1;
        uint block = base * TEXEL_WORDS * 4 + (n * (ld / 32) + k / 32) * (has_min ? 24 : 22);
        uint codes_at = block + (has_min ? 8 : 6);
        vec2 d_m = has_min ? unpackHalf2x16(fetch_word(w, block / 4)) : vec2(fetch_half(w, block), 0.0);
        uint fifth = fetch_bytes8(w, block + (has_min ? 4 : 2)).x >> k % 32;
        uvec2 q = fetch_bytes8(w, codes_at + k % 16) >> (k % 32 >= 16 ? 4 : 0);
        vec4 lo_q = nibbles(q.x) + 16.0 * bits4(fifth), hi_q = nibbles(q.y) + 16.0 * bits4(fifth >> 4);
        if (has_min) {
            lo = d_m.x * lo_q + d_m.y;
            hi = d_m.x * hi_q + d_m.y;
        } else { // d·(q − 16), as the host computes it
            lo = d_m.x * (lo_q - 16.0);
            hi = d_m.x * (hi_q - 16.0);
        }
    } else if (WEIGHT_TYPE == WEIGHT_IQ4_NL || WEIGHT_TYPE == WEIGHT_MXFP4) {
        // 18 bytes (f16 d, indices) or 17 (E8M0 exponent, E2M1 codes)
        bool fp4 = WEIGHT_TYPE == WEIGHT_MXFP4;
        uint block = base * TEXEL_WORDS * 4 + (n * (ld / 32) + k / 32) * (fp4 ? 17 : 18);
        float d = fp4 ? e8m0_half(fetch_byte(w, block)) : fetch_half(w, block);
        uvec2 q = fetch_bytes8(w, block + (fp4 ? 1 : 2) + k % 16) >> (k % 32 >= 16 ? 4 : 0);
        lo = fp4 ? mxfp4_levels(q.x) * d : d * iq4_levels(q.x);
        hi = fp4 ? mxfp4_levels(q.y) * d : d * iq4_levels(q.y);
    } else if (WEIGHT_TYPE == WEIGHT_Q5_K) { // 176-byte blocks: Q4_K's head, fifth bits, nibbles
        uint word = base * TEXEL_WORDS + (n * (ld / 256) + k / 256) * 44, p = k % 256, j = p / 32;
        uvec4 head = fetch_words4(w, word);
        vec2 d_dmin = unpackHalf2x16(head.x);
        vec2 sm = q4k_scale_min(head.y, head.z, head.w, j);
        // both even: k is a multiple of 8
        uint high_word = word + 4 + (p % 32) / 4, q_word = word + 12 + (p / 64) * 8 + (p % 32) / 4;
        uvec2 high = fetch_words2(w, high_word) >> j;
        uvec2 q = fetch_words2(w, q_word) >> (j % 2) * 4;
        float step = d_dmin.x * sm.x, offset = d_dmin.y * sm.y;
        lo = step * (nibbles(q.x) + 16.0 * low_bits(high.x)) - offset;
        hi = step * (nibbles(q.y) + 16.0 * low_bits(high.y)) - offset;
    } else if (WEIGHT_TYPE == WEIGHT_Q3_K || WEIGHT_TYPE == WEIGHT_Q2_K) {
        // 110-byte blocks (third bits, low bits, 6-bit scales, d: 2-byte
        // aligned) or 84 (4-bit scales and mins, low bits, d, dmin)
        bool q3 = WEIGHT_TYPE == WEIGHT_Q3_K;
        uint block = base * TEXEL_WORDS * 4 + (n * (ld / 256) + k / 256) * (q3 ? 110 : 84), p = k % 256;
        uint half_ = p / 128, quarter = p % 128 / 32, l = p % 32, j = p / 16;
        uvec2 q = fetch_bytes8(w, block + (q3 ? 32 : 16) + 32 * half_ + l) >> quarter * 2;
        vec4 lo_q = vec4(bytes4(q.x) & 3u), hi_q = vec4(bytes4(q.y) & 3u);
        if (q3) {
            uvec2 third = fetch_bytes8(w, block + l) >> (p / 32);
            uint low = fetch_byte(w, block + 96 + j % 8) >> (j < 8 ? 0 : 4) & 0xfu;
            uint top = fetch_byte(w, block + 104 + j % 4) >> 2 * (j / 4) & 3u;
            float step = fetch_half(w, block + 108) * float(int(low | top << 4) - 32);
            lo = step * (lo_q + 4.0 * low_bits(third.x) - 4.0);
            hi = step * (hi_q + 4.0 * low_bits(third.y) - 4.0);
        } else {
            uint scale_min = fetch_byte(w, block + j);
            vec2 d_dmin = unpackHalf2x16(fetch_word(w, block / 4 + 20));
            float step = d_dmin.x * float(scale_min & 0xfu), offset = d_dmin.y * float(scale_min >> 4);
            lo = step * lo_q - offset;
            hi = step * hi_q - offset;
        }
    } else if (WEIGHT_TYPE == WEIGHT_IQ4_XS) { // 136-byte blocks, word-aligned
        uint word = base * TEXEL_WORDS + (n * (ld / 256) + k / 256) * 34, p = k % 256, j = p / 32;
        uint head = fetch_word(w, word);
        uint ls = (fetch_word(w, word + 1) >> (j / 2) * 8 + (j % 2) * 4 & 0xfu) |
                  (head >> 16 + 2 * j & 3u) << 4;
        float step = unpackHalf2x16(head).x * float(int(ls) - 32);
        uint q_word = word + 2 + 4 * j + (p % 16) / 4;
        uvec2 q = uvec2(fetch_word(w, q_word), fetch_word(w, q_word + 1)) >> (p % 32 >= 16 ? 4 : 0);
        lo = step * iq4_levels(q.x);
        hi = step * iq4_levels(q.y);
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

// The expert of a row tile, or INVALID when the tile is unused or this
// dispatch's weight views do not hold its matrices; `base` is then the texel
// where they do. The views hold matrices first .. first + count − 1, of
// matrix_texels each: the experts of those numbers, or, where expert_slot is
// not 0 (an expert cache), the cache slots of those numbers, expert_slot[e]
// naming expert e's slot (INVALID: not on the device in this round).
uint tile_expert_in(uvec2 tile_expert, uint max_tiles, uvec2 expert_slot, uint first, uint count,
                    uint matrix_texels, out uint base)
{
    uint tile = row_tile_id();
    base = 0;
    if (tile >= max_tiles)
        return INVALID;
    uint expert = UintArray(tile_expert).v[tile];
    if (expert == INVALID)
        return INVALID;
    uint matrix = expert_slot == uvec2(0) ? expert : UintArray(expert_slot).v[expert];
    base = (matrix - first) * matrix_texels;
    return matrix - first < count ? expert : INVALID;
}
