// The GEMV path of the expert GEMM (built with GEMV), made for GPUs'
// decode: few rows per expert, bound by reading the weights. A workgroup
// covers GEMV_COLUMNS output columns of one row tile; each of its
// subgroups takes columns in turn, and for a column its lanes split the
// depth in units (GEMV_UNIT weights), lane l taking units l, l + lanes, …:
// consecutive lanes read consecutive bytes of the weight row (coalesced),
// and each weight type is decoded in registers (gemv_fetch, gemv_dot). The
// rows of a pass (up to GEMV_PASS of the tile's rows, each a token of the
// expert) all use the weights fetched once, and a subgroup reduction sums
// each row's partial products. No shared memory, no barriers: a subgroup's
// work is its own, so it runs at the device's subgroup size whatever LANES
// is.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#include "constants.h"

// Steps of the depth a lane has in flight: their weights are all fetched
// before any is multiplied. At decode every subgroup of a layer's GEMMs is
// resident at once (Qwen3-30B-A3B's gemm_up: 6144 subgroups, one a
// column, some 47 an NVIDIA SM), so the bytes in flight are those
// subgroups' loads, and a step of a quantized type is few of them (Q4_K at
// 8-weight units: 144 bytes a subgroup a projection, 576 at 32-weight): one
// step at a time, a GPU's memory latency rather than its bandwidth would
// bound decode. The same products in the same order at any
// count, 1 to VKMOE_GEMV_MAX_STEPS: the context's (gemv_steps in context.h,
// set by the environment's VKMOE_GEMV_STEPS so that the bench can find a
// GPU's best), spec 4.
layout(constant_id = 4) const uint GEMV_STEPS = VKMOE_GEMV_STEPS;
// Output columns of a workgroup, its subgroups taking them in turn: one
// each by default (4 columns, 4 subgroups), so that a subgroup's chain of
// dependent loads is one column's (stop 46: it was two columns' in turn,
// 8 a workgroup); the context's (gemv_columns, VKMOE_GEMV_COLUMNS in the
// environment), spec 5. The same bits at any.
layout(constant_id = 5) const uint GEMV_COLUMNS = VKMOE_GEMV_COLUMNS;

// Weights of a row a lane takes at a time: 8 (load_w8's, any type), or
// 32 for Q4_K, whose unit is 16 bytes of one super-block's nibbles (weights
// 64g + 16h + i and 64g + 32 + 16h + i, i < 16, of its 64-weight group g
// and half h): those 16 bytes and the block's 16-byte head, two 16-byte
// texels (TEXEL_WORDS; eight fetches of a word until stop 47), where
// load_w8 took six words for 8 weights, and each sub-block's scale and min applied once
// to its sums, not to every weight. The H200 (stop 46, at idle clocks) read
// Q4_K at 8-weight units at a third of f16's bytes a second in the same
// time; with these units, at its boost clock, Qwen3-30B-A3B's Q4_K layer
// decodes in 0.06 ms against f16's 0.10 (expert GEMMs 585 GB/s), and
// lavapipe's Q4_K GEMV GEMMs run 3.3-3.8x faster at 1 and 9 tokens. Q6_K (Q4_K_M files' type for many layers'
// down projections) likewise: a unit is 8 of a 128-weight half's 32
// positions in each of its four groups (8 bytes of low bits twice, 8 of
// high bits), their four sub-blocks' scales and d, and d·sc·(Σ a·q − 32·Σ a)
// per sub-block: 9-13 word fetches for 32 weights where load_w8 took 6-8
// for 8.
const bool GEMV_WIDE = WEIGHT_TYPE == WEIGHT_Q4_K || WEIGHT_TYPE == WEIGHT_Q6_K;
const uint GEMV_UNIT = GEMV_WIDE ? 32 : 8;
// Rows a pass takes (each fetch of the weights serves them all), spec 6:
// the kernel's, capped by the weight type's (vkmoe_weight_gemv_rows: one
// for the wide units above, whose rows each held some 30 VGPRs). Every
// row's sums stay in registers through the pass, so a forward of one
// token, whose experts have a row each, runs a kernel of one row (the
// H200's compiler gave the 16-row f16 gemm_up 96 registers); forwards of
// up to VKMOE_GEMV_PASS tokens one of that many. A row's products and
// their order are the same in any pass: the same bits.
layout(constant_id = 6) const uint GEMV_PASS = VKMOE_GEMV_PASS;

// Elements k .. k + 7 of the row of A that a_row_texel gave `at` for: its
// texels in rows_a, or with A_FROM_X, the stage's own (gemm_up.comp: the
// router logits reading x itself).
void load_a8(uint at, uint k, out vec4 a, out vec4 b);
#ifndef A_FROM_X
void load_a8(uint at, uint k, out vec4 a, out vec4 b)
{
    a = texelFetch(rows_a, int(at + k / 4));
    b = texelFetch(rows_a, int(at + k / 4 + 1));
}
#endif

// Unit u of row n of the matrix at texel `base` (depth ld), as fetched:
// load_w8's 8 weights as float bits, a Q4_K unit's head (d and dmin, the
// 12 bytes of scales and mins) and nibbles, or a Q6_K unit's low bits of
// groups 0 and 2, of 1 and 3, its high bits, its four scales and d.
void gemv_fetch(usamplerBuffer w, uint base, uint n, uint u, uint ld, out uvec4 x, out uvec4 y)
{
    if (WEIGHT_TYPE == WEIGHT_Q4_K) {
        uint word = base * TEXEL_WORDS + (n * (ld / 256) + u / 8) * 36, q = word + 4 + (u % 8) * 4;
        x = fetch_words4(w, word);
        y = fetch_words4(w, q);
    } else if (WEIGHT_TYPE == WEIGHT_Q6_K) { // 210-byte blocks, 2-byte aligned
        uint block = base * TEXEL_WORDS * 4 + (n * (ld / 256) + u / 8) * 210, t = u % 8;
        uint half_ = t / 4, l = t % 4 * 8;
        uvec2 scales = fetch_bytes8(w, block + 192 + 8 * half_), shift = uvec2(l / 16 * 8);
        // the half's sub-blocks l/16 + 0, 2, 4, 6: groups 0 to 3's
        uvec2 even = (scales >> shift & 0xffu) | (scales >> (shift + 16u) & 0xffu) << 8;
        x = uvec4(fetch_bytes8(w, block + 64 * half_ + l), fetch_bytes8(w, block + 64 * half_ + 32 + l));
        y = uvec4(fetch_bytes8(w, block + 128 + 32 * half_ + l), even.x | even.y << 16,
                  floatBitsToUint(fetch_half(w, block + 208)));
    } else {
        vec4 lo, hi;
        load_w8(w, base, n, u * 8, ld, lo, hi);
        x = floatBitsToUint(lo);
        y = floatBitsToUint(hi);
    }
}

// A Q4_K unit times a row of A (gemv_dot): d·(sc·Σ a·q) − dmin·(m·Σ a)
// over each of its two sub-blocks.
float gemv_dot_q4k(uvec4 x, uvec4 y, uint at, uint u)
{
    uint t = u % 8, k = u / 8 * 256 + t / 2 * 64 + t % 2 * 16;
    vec2 d_dmin = unpackHalf2x16(x.x);
    vec2 sm_low = q4k_scale_min(x.y, x.z, x.w, t / 2 * 2);
    vec2 sm_high = q4k_scale_min(x.y, x.z, x.w, t / 2 * 2 + 1);
    vec4 qa = vec4(0.0); // Σ a·q and Σ a over the low nibbles, then the high
    [[unroll]] for (uint i = 0; i < 4; i += 2) {
        vec4 a0, a1, b0, b1;
        load_a8(at, k + 4 * i, a0, a1);
        load_a8(at, k + 32 + 4 * i, b0, b1);
        qa += vec4(dot(a0, nibbles(y[i])) + dot(a1, nibbles(y[i + 1])),
                   dot(a0, vec4(1.0)) + dot(a1, vec4(1.0)),
                   dot(b0, nibbles(y[i] >> 4)) + dot(b1, nibbles(y[i + 1] >> 4)),
                   dot(b0, vec4(1.0)) + dot(b1, vec4(1.0)));
    }
    return d_dmin.x * (sm_low.x * qa.x + sm_high.x * qa.z) -
           d_dmin.y * (sm_low.y * qa.y + sm_high.y * qa.w);
}

// A Q6_K unit times a row of A (gemv_dot): d·sc·(Σ a·q − 32·Σ a) over each
// of its four sub-blocks, group g's 8 positions a sub-block.
float gemv_dot_q6k(uvec4 x, uvec4 y, uint at, uint u)
{
    uint k = u / 8 * 256 + u % 8 / 4 * 128 + u % 4 * 8;
    float sum = 0.0;
    [[unroll]] for (uint g = 0; g < 4; g++) {
        uvec2 low = (g % 2 == 0 ? x.xy : x.zw) >> (g / 2 * 4), high = y.xy >> (2 * g);
        vec4 q0 = vec4((bytes4(low.x) & 0xfu) | (bytes4(high.x) & 3u) << 4);
        vec4 q1 = vec4((bytes4(low.y) & 0xfu) | (bytes4(high.y) & 3u) << 4);
        vec4 a0, a1;
        load_a8(at, k + 32 * g, a0, a1);
        float qa = dot(a0, q0) + dot(a1, q1), a_sum = dot(a0, vec4(1.0)) + dot(a1, vec4(1.0));
        sum += float(bitfieldExtract(int(y.z), int(8 * g), 8)) * (qa - 32.0 * a_sum);
    }
    return uintBitsToFloat(y.w) * sum;
}

// Unit u, as gemv_fetch gave it, times the row of A at texel `at`: a wide
// type's own sum, or load_w8's 8 weights' products.
float gemv_dot(uvec4 x, uvec4 y, uint at, uint u)
{
    if (WEIGHT_TYPE == WEIGHT_Q4_K)
        return gemv_dot_q4k(x, y, at, u);
    if (WEIGHT_TYPE == WEIGHT_Q6_K)
        return gemv_dot_q6k(x, y, at, u);
    vec4 a, b;
    load_a8(at, u * 8, a, b);
    return dot(a, uintBitsToFloat(x)) + dot(b, uintBitsToFloat(y));
}

// Row m of a pass: its sums over projection 0 (weights0: the gate) and
// projection 1 (weights1: up, or the only projection).
float gemv_sum0[GEMV_PASS], gemv_sum1[GEMV_PASS];

// How many of rows r0 .. r0 + count − 1 hold slots (r0 does): padding rows
// sit at the end of a tile, so they are a prefix of the tile's rest.
uint gemv_rows(uvec2 row_slot, uint valid_rows, uint r0, uint count, uint tile_end)
{
    uint n = 1;
    while (n < count && r0 + n < tile_end && slot_at(row_slot, valid_rows, r0 + n) != INVALID)
        n++;
    return n;
}

// Row n of the matrices at texel `base` (depth ld) times the `valid` rows
// from r0: gemv_sum1 always, gemv_sum0 too when `both` (a gate). Subgroup
// uniform: r0, valid, n, both.
void gemv_pass(uint r0, uint valid, uint base, uint n, uint ld, bool both)
{
    uint texel[GEMV_PASS];
    [[unroll]] for (uint m = 0; m < GEMV_PASS; m++) {
        gemv_sum0[m] = 0.0;
        gemv_sum1[m] = 0.0;
        texel[m] = m < valid ? a_row_texel(r0 + m) : 0;
    }
    uint units = ld / GEMV_UNIT, stride = gl_SubgroupSize;
    for (uint u0 = gl_SubgroupInvocationID; u0 < units; u0 += GEMV_STEPS * stride) {
        uvec4 x0[GEMV_STEPS], y0[GEMV_STEPS], x1[GEMV_STEPS], y1[GEMV_STEPS];
        [[unroll]] for (uint s = 0; s < GEMV_STEPS; s++) {
            uint u = u0 + s * stride;
            x0[s] = y0[s] = x1[s] = y1[s] = uvec4(0);
            if (u >= units)
                break;
            gemv_fetch(weights1, base, n, u, ld, x1[s], y1[s]);
            if (both)
                gemv_fetch(weights0, base, n, u, ld, x0[s], y0[s]);
        }
        [[unroll]] for (uint s = 0; s < GEMV_STEPS; s++) {
            uint u = u0 + s * stride;
            if (u >= units)
                break;
            [[unroll]] for (uint m = 0; m < GEMV_PASS; m++) {
                if (m >= valid)
                    break;
                gemv_sum1[m] += gemv_dot(x1[s], y1[s], texel[m], u);
                if (both)
                    gemv_sum0[m] += gemv_dot(x0[s], y0[s], texel[m], u);
            }
        }
    }
    [[unroll]] for (uint m = 0; m < GEMV_PASS; m++) {
        if (m >= valid)
            break;
        gemv_sum1[m] = subgroupAdd(gemv_sum1[m]);
        if (both)
            gemv_sum0[m] = subgroupAdd(gemv_sum0[m]);
    }
}
