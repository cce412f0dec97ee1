#version 450
// GEMM 1: h[row] = act(x[token]·W1ᵀ + b1, x[token]·W3ᵀ + b3) for the rows of
// one expert per row tile, gathering x rows through row_slot (no copy of x).
//   binding 0: x f32 [tokens][dim]
//   push: expert_table uvec2 [3][experts] (gate, up, down matrix addresses);
//         tile_expert u32 [max_tiles]; row_slot u32 [rows]; hidden f32 [rows][ld_ffn];
//         gate_bias, up_bias f32 [experts][ffn] or 0; dim, ffn, ld_dim, ld_ffn,
//         experts, top_k, max_tiles, rows (rows past it are padding); limit, alpha
//         (clamped SwiGLU)
//   spec: see common/expert_gemm.glsl
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/expert_gemm.glsl"

layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(push_constant) uniform Push {
    uvec2 expert_table, tile_expert, row_slot, hidden, gate_bias, up_bias;
    uint dim, ffn, ld_dim, ld_ffn, experts, top_k, max_tiles, rows;
    float limit, alpha;
} pc;

uint a_row_start(uint row)
{
    uint slot = slot_at(pc.row_slot, pc.rows, row);
    return slot != INVALID ? slot / pc.top_k * pc.dim : INVALID;
}

float load_a(uint start, uint k)
{
    return start != INVALID && k < pc.dim ? x[start + k] : 0.0;
}

vec2 gated(vec2 gate, vec2 up)
{
    if (ACTIVATION == ACTIVATION_SWIGLU_CLAMPED) {
        gate = min(gate, pc.limit);
        up = clamp(up, -pc.limit, pc.limit);
        return (up + 1.0) * gate / (1.0 + exp(-pc.alpha * gate));
    }
    return gate / (1.0 + exp(-gate)) * up;
}

void main()
{
    uint tile = row_tile_id();
    if (tile >= pc.max_tiles)
        return;
    uint expert = UintArray(pc.tile_expert).v[tile];
    if (expert == INVALID)
        return;
    uint row0 = tile * TILE_M;
    AddressArray table = AddressArray(pc.expert_table);
    uvec2 gate = table.v[expert], up = table.v[pc.experts + expert];
    // Gated: lane l computes columns n and n + LANES of both projections;
    // ReLU and linear: columns n + i·LANES, i < 4, of the up projection.
    bool relu = ACTIVATION == ACTIVATION_RELU, single = relu || ACTIVATION == ACTIVATION_LINEAR;
    uint n = gl_WorkGroupID.x * (single ? 4 : 2) * LANES + gl_SubgroupInvocationID;
    uvec2 matrix[4] = single ? uvec2[4](up, up, up, up) : uvec2[4](gate, gate, up, up);
    uint column[4] = single ? uint[4](n, n + LANES, n + 2 * LANES, n + 3 * LANES)
                            : uint[4](n, n + LANES, n, n + LANES);
    vec4 bias;
    for (uint i = 0; i < 4; i++)
        bias[i] = bias_at(single || i >= 2 ? pc.up_bias : pc.gate_bias, expert, column[i], pc.ffn);
    FloatArray hidden = FloatArray(pc.hidden);
    for (uint r0 = row0, done = 0; r0 < row0 + TILE_M; r0 += done) {
        // Padding rows sit at the end of a tile: a pass that starts on one is empty.
        if (slot_at(pc.row_slot, pc.rows, r0) == INVALID)
            break;
        done = gemm_pass(pc.row_slot, pc.rows, r0, row0 + TILE_M, pc.dim, matrix, column, pc.ffn,
                         pc.ld_dim);
        for (uint m = 0; m < done; m++) {
            vec4 v = pass_result(m) + bias;
            vec4 h = relu ? max(v, 0.0) : single ? v : vec4(gated(v.xy, v.zw), 0.0, 0.0);
            for (uint i = 0; i < (single ? 4 : 2); i++)
                if (column[i] < pc.ld_ffn)
                    hidden.v[(r0 + m) * pc.ld_ffn + column[i]] = h[i];
        }
    }
}
