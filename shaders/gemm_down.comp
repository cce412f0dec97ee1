#version 450
// GEMM 2: z[row] = h[row]·W2ᵀ for the rows of one expert per row tile.
//   push: expert_table uvec2 [3][experts]; tile_expert u32 [max_tiles];
//         hidden f32 [rows][ld_ffn]; expert_out f32 [rows][dim];
//         dim, ffn, ld_ffn, experts, max_tiles
//   spec: see common/expert_gemm.glsl
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#define B_COUNT 1
#include "common/expert_gemm.glsl"

layout(push_constant) uniform Push {
    uvec2 expert_table, tile_expert, hidden, expert_out;
    uint dim, ffn, ld_ffn, experts, max_tiles;
} pc;

uint row0;

float load_a(uint m, uint k)
{
    return k < pc.ld_ffn ? FloatArray(pc.hidden).v[(row0 + m) * pc.ld_ffn + k] : 0.0;
}

void main()
{
    uint tile = row_tile_id();
    if (tile >= pc.max_tiles)
        return;
    uint expert = UintArray(pc.tile_expert).v[tile];
    if (expert == INVALID)
        return;
    row0 = tile * TILE_M;
    uvec2 matrices[1] = uvec2[1](AddressArray(pc.expert_table).v[2 * pc.experts + expert]);
    uint n0 = gl_WorkGroupID.x * TILE_N;
    gemm_tile(n0, pc.ffn, matrices, pc.dim, pc.ld_ffn);

    uint tm = gl_LocalInvocationID.x / THREADS_N;
    uint tn = gl_LocalInvocationID.x % THREADS_N;
    FloatArray out_rows = FloatArray(pc.expert_out);
    for (uint i = 0; i < THREAD_M; i++)
        for (uint j = 0; j < THREAD_N; j++) {
            uint n = n0 + tn + j * THREADS_N;
            if (n < pc.dim)
                out_rows.v[(row0 + tm + i * THREADS_M) * pc.dim + n] = acc[i * THREAD_N + j];
        }
}
