#version 450
// Combine: y[t] = Σ_j w[t][j]·z[slot_row[t·k + j]] (j in order; dropped slots
// add nothing) + g[t]·shared_out[t], no atomics. g[t] is the shared gate
// sigmoid(x·ws) when shared_scale is set, else 1. An invocation makes four
// consecutive elements of a row, so each slot's row and weight are loaded
// once for four (CPU drivers load even lane-uniform values lane by lane).
// With z_texels set (dim a multiple of 4), z and shared_out are read as
// RGBA32F texels: a vector gather on llvmpipe, where address loads go lane
// by lane.
//   binding 1: y f32 [tokens][dim]
//   set 1: binding 0 expert_out, binding 1 shared_out, as texels (z_texels)
//   push: topk_weight f32 [slots]; slot_row u32 [slots]; expert_out f32 [rows][dim];
//         shared_out f32 [tokens][dim] or 0; shared_scale f32 [tokens] or 0;
//         tokens, dim, top_k, z_texels
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/dispatch.glsl"

layout(local_size_x = 256) in;
layout(set = 0, binding = 1, std430) writeonly buffer Y { float y[]; };
layout(set = 1, binding = 0) uniform samplerBuffer z_texels;
layout(set = 1, binding = 1) uniform samplerBuffer shared_texels;
layout(push_constant) uniform Push {
    uvec2 topk_weight, slot_row, expert_out, shared_out, shared_scale;
    uint tokens, dim, top_k, z_texels;
} pc;

// z[row·dim + d + i] for the i < n valid of four; 0 past them.
vec4 load4(FloatArray z, uint start, uint n)
{
    vec4 v = vec4(0.0);
    for (uint i = 0; i < 4; i++)
        if (i < n)
            v[i] = z.v[start + i];
    return v;
}

void main()
{
    uint quads = (pc.dim + 3) / 4;
    uint q = flat_group_id() * 256 + gl_LocalInvocationID.x;
    uint token = q / quads;
    if (token >= pc.tokens)
        return;
    uint d = (q - token * quads) * 4, n = min(4, pc.dim - d);
    FloatArray weights = FloatArray(pc.topk_weight);
    UintArray slot_row = UintArray(pc.slot_row);
    FloatArray z = FloatArray(pc.expert_out);
    vec4 acc = vec4(0.0);
    for (uint j = 0; j < pc.top_k; j++) {
        uint slot = token * pc.top_k + j;
        uint row = slot_row.v[slot];
        if (row != INVALID)
            acc += weights.v[slot] * (pc.z_texels != 0
                                          ? texelFetch(z_texels, int((row * pc.dim + d) / 4))
                                          : load4(z, row * pc.dim + d, n));
    }
    uint first = token * pc.dim + d;
    if (pc.shared_out != uvec2(0)) {
        float scale = pc.shared_scale != uvec2(0) ? FloatArray(pc.shared_scale).v[token] : 1.0;
        acc += scale * (pc.z_texels != 0 ? texelFetch(shared_texels, int(first / 4))
                                         : load4(FloatArray(pc.shared_out), first, n));
    }
    for (uint i = 0; i < n; i++)
        y[first + i] = acc[i];
}
