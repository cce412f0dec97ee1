#version 450
// Input rows: x_rows[t] = x[t] padded with zeros to ld_dim elements, so the
// GEMMs read a token's row as whole 16-byte texels (rows_a in
// common/expert_gemm.glsl) whatever dim is. An invocation writes 4 elements.
// x may be f16 or bf16 (io_type), widened exactly.
//   binding 0: x [tokens][dim] of io_type (a vkmoe_weight_type: f32, f16, bf16)
//   push: x_rows f32 [tokens][ld_dim]; tokens, dim, ld_dim, io_type
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/dispatch.glsl"
#include "public_enums.glsl"

layout(local_size_x = 64) in;
layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(set = 0, binding = 0, std430) readonly buffer X16 { uint x16[]; }; // two values a word
layout(push_constant) uniform Push {
    uvec2 x_rows;
    uint tokens, dim, ld_dim, io_type;
} pc;

float load_x(uint i)
{
    if (pc.io_type == WEIGHT_F32)
        return x[i];
    uint h = x16[i / 2] >> (i % 2) * 16 & 0xffffu;
    return pc.io_type == WEIGHT_F16 ? unpackHalf2x16(h).x : uintBitsToFloat(h << 16);
}

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
            v[i] = load_x(token * pc.dim + d + i);
    Vec4Array(pc.x_rows).v[quad] = v;
}
