#version 450
// GEMM 1: h[row] = silu(x[token]·W1ᵀ) ⊙ (x[token]·W3ᵀ) for the rows of one
// expert per row tile, gathering x rows through row_slot (no copy of x).
//   binding 0: x f32 [tokens][dim]
//   push: expert_table uvec2 [3][experts] (gate, up, down matrix addresses);
//         tile_expert u32 [max_tiles]; row_slot u32 [rows]; hidden f32 [rows][ld_ffn];
//         dim, ffn, ld_dim, ld_ffn, experts, top_k, max_tiles
//   spec: see common/expert_gemm.glsl
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#define B_COUNT 2
#include "common/expert_gemm.glsl"

layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(push_constant) uniform Push {
    uvec2 expert_table, tile_expert, row_slot, hidden;
    uint dim, ffn, ld_dim, ld_ffn, experts, top_k, max_tiles;
} pc;

uint a_row_start(uint row)
{
    uint slot = UintArray(pc.row_slot).v[row];
    return slot != INVALID ? slot / pc.top_k * pc.dim : INVALID;
}

float load_a(uint start, uint k)
{
    return start != INVALID && k < pc.dim ? x[start + k] : 0.0;
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
    // Lane l computes columns n and n + LANES of both projections.
    uint n = gl_WorkGroupID.x * 2 * LANES + gl_SubgroupInvocationID;
    uvec2 matrix[4] = uvec2[4](gate, gate, up, up);
    uint column[4] = uint[4](n, n + LANES, n, n + LANES);
    FloatArray hidden = FloatArray(pc.hidden);
    for (uint r0 = row0, done = 0; r0 < row0 + TILE_M; r0 += done) {
        // Padding rows sit at the end of a tile: a pass that starts on one is empty.
        if (UintArray(pc.row_slot).v[r0] == INVALID)
            break;
        done = gemm_pass(pc.row_slot, r0, row0 + TILE_M, pc.dim, matrix, column, pc.ffn, pc.ld_dim);
        for (uint m = 0; m < done; m++) {
            vec4 v = pass_result(m);
            vec2 h = v.xy / (1.0 + exp(-v.xy)) * v.zw;
            if (n < pc.ld_ffn)
                hidden.v[(r0 + m) * pc.ld_ffn + n] = h.x;
            if (n + LANES < pc.ld_ffn)
                hidden.v[(r0 + m) * pc.ld_ffn + n + LANES] = h.y;
        }
    }
}
