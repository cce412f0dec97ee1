// The GEMV path of the expert GEMM (built with GEMV), made for GPUs'
// decode: few rows per expert, bound by reading the weights. A workgroup
// covers VKMOE_GEMV_COLUMNS output columns of one row tile; each of its
// subgroups takes columns in turn, and for a column its lanes split the
// depth, lane l reading weights 8l .. 8l + 7 of every 8·lanes: consecutive
// lanes read consecutive bytes of the weight row (coalesced), and each
// weight type is decoded in registers (load_w8). The rows of a pass (up to
// VKMOE_GEMV_PASS of the tile's rows, each a token of the expert) all use
// the weights fetched once, and a subgroup reduction sums each row's
// partial products. No shared memory, no barriers: a subgroup's work is its
// own, so it runs at the device's subgroup size whatever LANES is.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#include "constants.h"

const uint GEMV_PASS = VKMOE_GEMV_PASS;
// Steps of the depth a lane has in flight: their weights are all fetched
// before any is multiplied. At decode every subgroup of a layer's GEMMs is
// resident at once (Qwen3-30B-A3B's gemm_up: 3072 subgroups, some 23 an
// NVIDIA SM), so the bytes in flight are those subgroups' loads, and a
// step of a quantized type is few of them (Q4_K: 144 bytes a subgroup a
// projection): one step at a time, a GPU's memory latency rather than its
// bandwidth would bound decode. The same products in the same order at any
// count, 1 to VKMOE_GEMV_MAX_STEPS: the context's (gemv_steps in context.h,
// set by the environment's VKMOE_GEMV_STEPS so that the bench can find a
// GPU's best), spec 4.
layout(constant_id = 4) const uint GEMV_STEPS = VKMOE_GEMV_STEPS;

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
    uint stride = gl_SubgroupSize * 8;
    for (uint k0 = gl_SubgroupInvocationID * 8; k0 < ld; k0 += GEMV_STEPS * stride) {
        vec4 lo0[GEMV_STEPS], hi0[GEMV_STEPS], lo1[GEMV_STEPS], hi1[GEMV_STEPS];
        [[unroll]] for (uint u = 0; u < GEMV_STEPS; u++) {
            uint k = k0 + u * stride;
            lo0[u] = hi0[u] = lo1[u] = hi1[u] = vec4(0.0);
            if (k >= ld)
                break;
            load_w8(weights1, base, n, k, ld, lo1[u], hi1[u]);
            if (both)
                load_w8(weights0, base, n, k, ld, lo0[u], hi0[u]);
        }
        [[unroll]] for (uint u = 0; u < GEMV_STEPS; u++) {
            uint k = k0 + u * stride;
            if (k >= ld)
                break;
            [[unroll]] for (uint m = 0; m < GEMV_PASS; m++) {
                if (m >= valid)
                    break;
                vec4 a, b;
                load_a8(texel[m], k, a, b);
                gemv_sum1[m] += dot(a, lo1[u]) + dot(b, hi1[u]);
                if (both)
                    gemv_sum0[m] += dot(a, lo0[u]) + dot(b, hi0[u]);
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
