#version 450
// GEMM 1: h[row] = act(x[token]·W1ᵀ + b1, x[token]·W3ᵀ + b3) for the rows of
// one expert per row tile, reading x's rows through row_slot (no copy).
//   set 1: rows_a = x_rows [tokens][ld_dim]; weights0 = W1 (gate), weights1 =
//         W3 (up), or W3 in both without a gate; see common/expert_gemm.glsl
//   push: tile_expert u32 [max_tiles]; row_slot u32 [rows]; hidden f32 [rows][ld_ffn];
//         gate_bias, up_bias f32 [experts][ffn] or 0; ffn, ld_dim, ld_ffn, top_k,
//         max_tiles, rows (rows past it are padding); expert_first, expert_count
//         (the matrices this dispatch's weights hold), matrix_texels (texels
//         per expert matrix); limit, alpha (clamped SwiGLU); input_scale f32
//         [slots] or 0: each row's x·Wᵀ is scaled by its slot's value before
//         the bias and activation (Llama 4's routing weight on the input);
//         expert_slot u32 [experts] or 0: with an expert cache, the slot of
//         each expert among the matrices the weights hold; with A_FROM_X
//         (the GEMV path's router logits): x_rows f32 [tokens][ld_dim], dim,
//         io_type (below)
//   spec: see common/expert_gemm.glsl
// Built with GEMV and A_FROM_X, the router's logits read A from x itself
// (set 0, binding 0: common/input_rows.glsl; row r is token r) and the
// first column of workgroups also writes x_rows for the expert GEMMs: the
// input_rows stage's work, without its dispatch and barrier.
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
    uvec2 tile_expert, row_slot, hidden, gate_bias, up_bias;
    uint ffn, ld_dim, ld_ffn, top_k, max_tiles, rows, expert_first, expert_count, matrix_texels;
    float limit, alpha;
    uvec2 input_scale, expert_slot;
    uvec2 x_rows;
    uint dim, io_type;
} pc;

// The scale of row `row`'s projections: its slot's routing weight, or 1.
float row_scale(uint row)
{
    if (pc.input_scale == uvec2(0))
        return 1.0;
    return FloatArray(pc.input_scale).v[UintArray(pc.row_slot).v[row]];
}

#ifdef A_FROM_X
#include "common/input_rows.glsl"

// Row `row`'s token: where load_a8 finds it in x.
uint a_row_texel(uint row)
{
    return UintArray(pc.row_slot).v[row] / pc.top_k;
}

void load_a8(uint token, uint k, out vec4 a, out vec4 b)
{
    a = x_quad(pc.io_type, pc.dim, token, k);
    b = x_quad(pc.io_type, pc.dim, token, k + 4);
}

// The tile's tokens' rows of x_rows (zero-padded to ld_dim), for the
// expert GEMMs after the router: the workgroups of column block 0 write
// them.
void write_x_rows(uint row0)
{
    if (gl_WorkGroupID.x != 0)
        return;
    uint quads = pc.ld_dim / 4;
    for (uint r = row0; r < row0 + TILE_M; r++) {
        if (slot_at(pc.row_slot, pc.rows, r) == INVALID)
            break;
        uint token = a_row_texel(r);
        for (uint q = gl_LocalInvocationIndex; q < quads; q += LANES)
            Vec4Array(pc.x_rows).v[token * quads + q] = x_quad(pc.io_type, pc.dim, token, 4 * q);
    }
}
#else
uint a_row_texel(uint row)
{
    return UintArray(pc.row_slot).v[row] / pc.top_k * (pc.ld_dim / 4);
}
#endif

vec4 gated(vec4 gate, vec4 up)
{
    if (ACTIVATION == ACTIVATION_SWIGLU_CLAMPED) {
        gate = min(gate, pc.limit);
        up = clamp(up, -pc.limit, pc.limit);
        return (up + 1.0) * gate / (1.0 + exp(-pc.alpha * gate));
    }
    return gate / (1.0 + exp(-gate)) * up;
}

// Padding columns (ffn .. ld_ffn − 1) get zeros: GEMM 2 reads them.
void store(FloatArray hidden, uint row, uint column, float value)
{
    if (column < pc.ld_ffn)
        hidden.v[row * pc.ld_ffn + column] = column < pc.ffn ? value : 0.0;
}

#ifdef TILED
void main()
{
    uint base;
    uint expert = tile_expert_in(pc.tile_expert, pc.max_tiles, pc.expert_slot, pc.expert_first,
                                 pc.expert_count, pc.matrix_texels, base);
    if (expert == INVALID)
        return;
    uint row0 = row_tile_id() * TILE_M;
    // Gated: the tile's first half of columns is the gate projection's, the
    // second the up projection's, for the same hidden columns.
    bool relu = ACTIVATION == ACTIVATION_RELU, single = relu || ACTIVATION == ACTIVATION_LINEAR;
    uint columns = single ? TILE_N : TILE_N / 2, n0 = gl_WorkGroupID.x * columns;
    tiled_gemm(pc.row_slot, pc.rows, row0, base, n0, single ? 0 : columns,
               pc.ffn, pc.ld_dim);
    FloatArray hidden = FloatArray(pc.hidden);
    for (uint i = gl_LocalInvocationIndex; i < TILE_M * columns; i += LANES) {
        uint m = i / columns, v = i % columns, column = n0 + v;
        if (slot_at(pc.row_slot, pc.rows, row0 + m) == INVALID)
            continue;
        float scale = row_scale(row0 + m);
        float up = tile_result(m, single ? v : columns + v) * scale +
                   bias_at(pc.up_bias, expert, column, pc.ffn);
        float h = relu ? max(up, 0.0) : up;
        if (!single) {
            float gate =
                tile_result(m, v) * scale + bias_at(pc.gate_bias, expert, column, pc.ffn);
            h = gated(vec4(gate), vec4(up)).x;
        }
        store(hidden, row0 + m, column, h);
    }
}
#elif defined(GEMV)
void main()
{
    uint base;
    uint expert = tile_expert_in(pc.tile_expert, pc.max_tiles, pc.expert_slot, pc.expert_first,
                                 pc.expert_count, pc.matrix_texels, base);
    if (expert == INVALID)
        return;
    uint row0 = row_tile_id() * TILE_M;
#ifdef A_FROM_X
    write_x_rows(row0);
#endif
    // Gated: a column is a hidden column, from the gate's row and the up
    // projection's; ReLU and linear: the up projection's row alone.
    bool relu = ACTIVATION == ACTIVATION_RELU, single = relu || ACTIVATION == ACTIVATION_LINEAR;
    FloatArray hidden = FloatArray(pc.hidden);
    for (uint c = gl_SubgroupID; c < GEMV_COLUMNS; c += gl_NumSubgroups) {
        uint column = gl_WorkGroupID.x * GEMV_COLUMNS + c;
        if (column >= pc.ld_ffn)
            break;
        // Padding columns read the matrix's last row; store() writes them 0.
        uint n = min(column, pc.ffn - 1);
        float gate_bias = bias_at(pc.gate_bias, expert, column, pc.ffn);
        float up_bias = bias_at(pc.up_bias, expert, column, pc.ffn);
        for (uint r0 = row0, valid = 0; r0 < row0 + TILE_M; r0 += valid) {
            if (slot_at(pc.row_slot, pc.rows, r0) == INVALID)
                break;
            valid = gemv_rows(pc.row_slot, pc.rows, r0, GEMV_PASS, row0 + TILE_M);
            gemv_pass(r0, valid, base, n, pc.ld_dim, !single);
            if (subgroupElect()) {
                // unrolled: each row's sums read by a constant index, so
                // that they stay in registers
                [[unroll]] for (uint m = 0; m < GEMV_PASS; m++) {
                    if (m >= valid)
                        break;
                    float scale = row_scale(r0 + m);
                    float up = gemv_sum1[m] * scale + up_bias;
                    float h = relu ? max(up, 0.0) : up;
                    if (!single)
                        h = gated(vec4(gemv_sum0[m] * scale + gate_bias), vec4(up)).x;
                    store(hidden, r0 + m, column, h);
                }
            }
        }
    }
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
    // Gated: lane l computes columns n + i·LANES, i < 4, of both projections;
    // ReLU and linear: columns n + i·LANES, i < 8, of the up projection.
    bool relu = ACTIVATION == ACTIVATION_RELU, single = relu || ACTIVATION == ACTIVATION_LINEAR;
    uint n = gl_WorkGroupID.x * (single ? 8 : 4) * LANES + gl_LocalInvocationID.x;
    uint column[8], fetched[8];
    vec4 bias_lo, bias_hi;
    for (uint c = 0; c < 8; c++) {
        column[c] = n + (single ? c : c % 4) * LANES;
        // Columns past the matrix read its last row; their results are not kept.
        fetched[c] = min(column[c], pc.ffn - 1);
        float b = bias_at(c < 4 && !single ? pc.gate_bias : pc.up_bias, expert, column[c], pc.ffn);
        if (c < 4)
            bias_lo[c] = b;
        else
            bias_hi[c - 4] = b;
    }
    FloatArray hidden = FloatArray(pc.hidden);
    for (uint r0 = row0, done = 0; r0 < row0 + TILE_M; r0 += done) {
        // Padding rows sit at the end of a tile: a pass that starts on one is empty.
        if (slot_at(pc.row_slot, pc.rows, r0) == INVALID)
            break;
        done = gemm_pass(pc.row_slot, pc.rows, r0, row0 + TILE_M, base, fetched, pc.ld_dim);
        for (uint m = 0; m < done; m++) {
            vec4 lo, hi;
            pass_result(m, lo, hi);
            float scale = row_scale(r0 + m);
            lo = lo * scale + bias_lo;
            hi = hi * scale + bias_hi;
            if (single) {
                if (relu) {
                    lo = max(lo, 0.0);
                    hi = max(hi, 0.0);
                }
                for (uint i = 0; i < 4; i++) {
                    store(hidden, r0 + m, column[i], lo[i]);
                    store(hidden, r0 + m, column[i + 4], hi[i]);
                }
            } else {
                vec4 h = gated(lo, hi);
                for (uint i = 0; i < 4; i++)
                    store(hidden, r0 + m, column[i], h[i]);
            }
        }
    }
}
#endif
