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

shared uint tile_token[TILE_M]; // token of each row, INVALID for padding

float load_a(uint m, uint k)
{
    uint token = tile_token[m];
    return token != INVALID && k < pc.dim ? x[token * pc.dim + k] : 0.0;
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
    for (uint m = gl_LocalInvocationID.x; m < TILE_M; m += THREADS) {
        uint slot = UintArray(pc.row_slot).v[row0 + m];
        tile_token[m] = slot != INVALID ? slot / pc.top_k : INVALID;
    }
    barrier();
    AddressArray table = AddressArray(pc.expert_table);
    uvec2 matrices[2] = uvec2[2](table.v[expert], table.v[pc.experts + expert]);
    uint n0 = gl_WorkGroupID.x * TILE_N;
    gemm_tile(n0, pc.dim, matrices, pc.ffn, pc.ld_dim);

    uint tm = gl_LocalInvocationID.x / THREADS_N;
    uint tn = gl_LocalInvocationID.x % THREADS_N;
    FloatArray hidden = FloatArray(pc.hidden);
    for (uint i = 0; i < THREAD_M; i++)
        for (uint j = 0; j < THREAD_N; j++) {
            uint n = n0 + tn + j * THREADS_N;
            if (n >= pc.ld_ffn)
                continue;
            float gate = acc[i * THREAD_N + j];
            float up = acc[(THREAD_M + i) * THREAD_N + j];
            hidden.v[(row0 + tm + i * THREADS_M) * pc.ld_ffn + n] = gate / (1.0 + exp(-gate)) * up;
        }
}
