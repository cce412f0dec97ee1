#version 450
// GEMM 2: z[row] = h[row]·W2ᵀ + b2 for the rows of one expert per row tile.
//   push: expert_table uvec2 [3][experts]; tile_expert u32 [max_tiles];
//         row_slot u32 [rows]; hidden f32 [rows][ld_ffn]; expert_out f32 [rows][dim];
//         down_bias f32 [experts][dim] or 0; dim, ffn, ld_ffn, experts, max_tiles,
//         rows (rows past it are padding)
//   spec: see common/expert_gemm.glsl
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/expert_gemm.glsl"

layout(push_constant) uniform Push {
    uvec2 expert_table, tile_expert, row_slot, hidden, expert_out, down_bias;
    uint dim, ffn, ld_ffn, experts, max_tiles, rows;
} pc;

uint a_row_start(uint row)
{
    return row * pc.ld_ffn;
}

float load_a(uint start, uint k)
{
    return k < pc.ld_ffn ? FloatArray(pc.hidden).v[start + k] : 0.0;
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
    uvec2 down = AddressArray(pc.expert_table).v[2 * pc.experts + expert];
    // Lane l computes columns n + i·LANES, i < 4.
    uint n = gl_WorkGroupID.x * 4 * LANES + gl_SubgroupInvocationID;
    uvec2 matrix[4] = uvec2[4](down, down, down, down);
    uint column[4] = uint[4](n, n + LANES, n + 2 * LANES, n + 3 * LANES);
    vec4 bias;
    for (uint i = 0; i < 4; i++)
        bias[i] = bias_at(pc.down_bias, expert, column[i], pc.dim);
    FloatArray out_rows = FloatArray(pc.expert_out);
    for (uint r0 = row0, done = 0; r0 < row0 + TILE_M; r0 += done) {
        if (slot_at(pc.row_slot, pc.rows, r0) == INVALID)
            break;
        done = gemm_pass(pc.row_slot, pc.rows, r0, row0 + TILE_M, pc.ffn, matrix, column, pc.dim,
                         pc.ld_ffn);
        for (uint m = 0; m < done; m++) {
            vec4 v = pass_result(m) + bias;
            for (uint i = 0; i < 4; i++)
                if (column[i] < pc.dim)
                    out_rows.v[(r0 + m) * pc.dim + column[i]] = v[i];
        }
    }
}
