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
#include "common/input_rows.glsl"

layout(local_size_x = 64) in;
layout(push_constant) uniform Push {
    uvec2 x_rows;
    uint tokens, dim, ld_dim, io_type;
} pc;

void main()
{
    uint quad = flat_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint quads_per_row = pc.ld_dim / 4;
    uint token = quad / quads_per_row, d = quad % quads_per_row * 4;
    if (token >= pc.tokens)
        return;
    Vec4Array(pc.x_rows).v[quad] = x_quad(pc.io_type, pc.dim, token, d);
}
