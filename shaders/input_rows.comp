#version 450
// Input rows: x_rows[t] = x[t] padded with zeros to ld_dim elements, so the
// GEMMs read a token's row as whole 16-byte texels (rows_a in
// common/expert_gemm.glsl) whatever dim is. An invocation writes 4 elements.
//   binding 0: x f32 [tokens][dim]
//   push: x_rows f32 [tokens][ld_dim]; tokens, dim, ld_dim
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/dispatch.glsl"

layout(local_size_x = 64) in;
layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(push_constant) uniform Push {
    uvec2 x_rows;
    uint tokens, dim, ld_dim;
} pc;

void main()
{
    uint quad = flat_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint quads_per_row = pc.ld_dim / 4;
    uint token = quad / quads_per_row, d = quad % quads_per_row * 4;
    if (token >= pc.tokens)
        return;
    vec4 v = vec4(0.0);
    for (uint i = 0; i < 4; i++)
        if (d + i < pc.dim)
            v[i] = x[token * pc.dim + d + i];
    Vec4Array(pc.x_rows).v[quad] = v;
}
