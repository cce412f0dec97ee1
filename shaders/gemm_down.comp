#version 450
// GEMM 2: z[row] = h[row]·W2ᵀ + b2 for the rows of one expert per row tile.
//   set 1: rows_a = hidden [rows][ld_ffn]; weights0 = weights1 = W2; see
//         common/expert_gemm.glsl
//   push: tile_expert u32 [max_tiles]; row_slot u32 [rows]; expert_out f32 [rows][dim];
//         down_bias f32 [experts][dim] or 0; dim, ld_ffn, max_tiles, rows (rows past
//         it are padding); expert_first, expert_count (the matrices this
//         dispatch's weights hold), matrix_texels (texels per expert matrix);
//         hidden_texel: the texel of rows_a where row 0 starts (the shared
//         expert's rows beside the routed ones'); expert_slot u32 [experts]
//         or 0: see gemm_up.comp; then, for the GEMV path's combine at one
//         token (combine_if_last; combine 0: none): arrivals u32 [column
//         blocks], routed_out f32 [rows][dim] (the routed experts' rows),
//         topk_weight f32 [k], slot_row u32 [k], shared_out f32 [dim] or 0,
//         shared_scale f32 [1] or 0; combine: the workgroups that finish
//         each column block (bits 0-7), top_k (8-15), io_type (16-23), the
//         weights scaled the inputs (bit 24: sum unweighted)
//   binding 1 (set 0): y, written by that combine (common/output_rows.glsl)
//   spec: see common/expert_gemm.glsl
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/expert_gemm.glsl"
#ifdef TILED
#include "common/tiled_gemm.glsl"
#elif defined(GEMV)
#include "common/gemv_gemm.glsl"
#else
#include "common/register_gemm.glsl"
#endif

layout(push_constant) uniform Push {
    uvec2 tile_expert, row_slot, expert_out, down_bias;
    uint dim, ld_ffn, max_tiles, rows, expert_first, expert_count, matrix_texels;
    uint hidden_texel;
    uvec2 expert_slot;
    uvec2 arrivals, routed_out, topk_weight, slot_row, shared_out, shared_scale;
    uint combine;
} pc;

uint a_row_texel(uint row)
{
    return pc.hidden_texel + row * (pc.ld_ffn / 4);
}

void store(FloatArray out_rows, uint row, uint column, float value)
{
    if (column < pc.dim)
        out_rows.v[row * pc.dim + column] = value;
}

#ifdef TILED
void main()
{
    uint base;
    uint expert = tile_expert_in(pc.tile_expert, pc.max_tiles, pc.expert_slot, pc.expert_first,
                                 pc.expert_count, pc.matrix_texels, base);
    if (expert == INVALID)
        return;
    uint row0 = row_tile_id() * TILE_M, n0 = gl_WorkGroupID.x * TILE_N;
    tiled_gemm(pc.row_slot, pc.rows, row0, base, n0, 0, pc.dim, pc.ld_ffn);
    FloatArray out_rows = FloatArray(pc.expert_out);
    for (uint i = gl_LocalInvocationIndex; i < TILE_M * TILE_N; i += LANES) {
        uint m = i / TILE_N, column = n0 + i % TILE_N;
        if (slot_at(pc.row_slot, pc.rows, row0 + m) != INVALID)
            store(out_rows, row0 + m, column,
                  tile_result(m, i % TILE_N) + bias_at(pc.down_bias, expert, column, pc.dim));
    }
}
#elif defined(GEMV)
#include "common/output_rows.glsl"

// Written by one workgroup, read by another (combine_if_last).
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer CoherentFloats {
    float v[];
};
shared bool last_arrival;

// A forward of one token's combine (combine.comp's sum), without its
// dispatch and barrier: each workgroup that finishes column block `block`
// of an expert's row (or the shared expert's) counts itself in, and the
// last of them sums the block's columns over the token's slots in order,
// adds the shared expert's, writes y and sets the count back to 0 for the
// next forward. Deterministic: the order of the sum is the slots', not the
// workgroups'.
void combine_if_last(uint block)
{
    memoryBarrierBuffer(); // this invocation's rows, before the count
    barrier();             // every subgroup's
    if (gl_LocalInvocationIndex == 0) {
        UintArray counts = UintArray(pc.arrivals);
        last_arrival = atomicAdd(counts.v[block], 1u) + 1 == (pc.combine & 0xffu);
        if (last_arrival)
            atomicExchange(counts.v[block], 0u);
    }
    barrier();
    if (!last_arrival)
        return;
    memoryBarrierBuffer(); // the others' rows, after the count
    uint top_k = pc.combine >> 8 & 0xffu, io_type = pc.combine >> 16 & 0xffu;
    bool unit_weights = (pc.combine >> 24 & 1u) != 0, pairs = io_type != WEIGHT_F32;
    uint i = gl_LocalInvocationIndex, step = pairs ? 2 : 1;
    uint column = block * GEMV_COLUMNS + i * step;
    if (i * step >= GEMV_COLUMNS || column >= pc.dim)
        return;
    vec2 acc = vec2(0.0);
    CoherentFloats z = CoherentFloats(pc.routed_out);
    for (uint j = 0; j < top_k; j++) {
        uint row = UintArray(pc.slot_row).v[j];
        if (row == INVALID)
            continue;
        float w = unit_weights ? 1.0 : FloatArray(pc.topk_weight).v[j];
        acc.x += w * z.v[row * pc.dim + column];
        if (pairs)
            acc.y += w * z.v[row * pc.dim + column + 1];
    }
    if (pc.shared_out != uvec2(0)) {
        float g = pc.shared_scale != uvec2(0) ? FloatArray(pc.shared_scale).v[0] : 1.0;
        CoherentFloats s = CoherentFloats(pc.shared_out);
        acc.x += g * s.v[column];
        if (pairs)
            acc.y += g * s.v[column + 1];
    }
    if (pairs)
        y16[column / 2] = pack16(io_type, acc.x, acc.y);
    else
        y[column] = acc.x;
}

void main()
{
    uint base;
    uint expert = tile_expert_in(pc.tile_expert, pc.max_tiles, pc.expert_slot, pc.expert_first,
                                 pc.expert_count, pc.matrix_texels, base);
    if (expert == INVALID)
        return;
    uint row0 = row_tile_id() * TILE_M;
    CoherentFloats out_rows = CoherentFloats(pc.expert_out);
    for (uint c = gl_SubgroupID; c < GEMV_COLUMNS; c += gl_NumSubgroups) {
        uint column = gl_WorkGroupID.x * GEMV_COLUMNS + c;
        if (column >= pc.dim)
            break;
        float bias = bias_at(pc.down_bias, expert, column, pc.dim);
        for (uint r0 = row0, valid = 0; r0 < row0 + TILE_M; r0 += valid) {
            if (slot_at(pc.row_slot, pc.rows, r0) == INVALID)
                break;
            valid = gemv_rows(pc.row_slot, pc.rows, r0, GEMV_PASS, row0 + TILE_M);
            gemv_pass(r0, valid, base, column, pc.ld_ffn, false);
            if (subgroupElect()) // unrolled: the sums stay in registers (gemm_up.comp)
                [[unroll]] for (uint m = 0; m < GEMV_PASS; m++) {
                    if (m >= valid)
                        break;
                    out_rows.v[(r0 + m) * pc.dim + column] = gemv_sum1[m] + bias;
                }
        }
    }
    if (pc.combine != 0)
        combine_if_last(gl_WorkGroupID.x);
}
#else
void main()
{
    uint base;
    uint expert = tile_expert_in(pc.tile_expert, pc.max_tiles, pc.expert_slot, pc.expert_first,
                                 pc.expert_count, pc.matrix_texels, base);
    if (expert == INVALID)
        return;
    uint row0 = row_tile_id() * TILE_M;
    // Lane l computes columns n + i·LANES, i < 8.
    uint n = gl_WorkGroupID.x * 8 * LANES + gl_LocalInvocationID.x;
    uint column[8], fetched[8];
    vec4 bias_lo, bias_hi;
    for (uint c = 0; c < 8; c++) {
        column[c] = n + c * LANES;
        // Columns past the matrix read its last row; their results are not kept.
        fetched[c] = min(column[c], pc.dim - 1);
        float b = bias_at(pc.down_bias, expert, column[c], pc.dim);
        if (c < 4)
            bias_lo[c] = b;
        else
            bias_hi[c - 4] = b;
    }
    FloatArray out_rows = FloatArray(pc.expert_out);
    for (uint r0 = row0, done = 0; r0 < row0 + TILE_M; r0 += done) {
        if (slot_at(pc.row_slot, pc.rows, r0) == INVALID)
            break;
        done = gemm_pass(pc.row_slot, pc.rows, r0, row0 + TILE_M, base, fetched, pc.ld_ffn);
        for (uint m = 0; m < done; m++) {
            vec4 lo, hi;
            pass_result(m, lo, hi);
            lo += bias_lo;
            hi += bias_hi;
            for (uint i = 0; i < 4; i++) {
                store(out_rows, r0 + m, column[i], lo[i]);
                store(out_rows, r0 + m, column[i + 4], hi[i]);
            }
        }
    }
}
#endif
