#version 450
// FMA-bound kernel for the bench's fp32 peak: eight independent vec4 chains
// per invocation, `iterations` steps each (a multiple of 4), no memory traffic but one store.
//   push: out f32 [invocations] (address), iterations
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require

layout(local_size_x = 64) in;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer FloatArray { float v[]; };
layout(push_constant) uniform Push {
    uvec2 out_values;
    uint iterations;
} pc;

void main()
{
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64;
    vec4 a = vec4(id) * 1e-9, b = a + 1e-3, c = a + 2e-3, d = a + 3e-3;
    vec4 e = a + 4e-3, f = a + 5e-3, g = a + 6e-3, h = a + 7e-3;
    const vec4 m = vec4(0.9999), s = vec4(1e-7);
    // Four steps per trip: llvmpipe spends a few instructions per loop trip
    // on its execution mask.
    for (uint i = 0; i < pc.iterations; i += 4) {
        for (uint u = 0; u < 4; u++) {
            a = fma(a, m, s); b = fma(b, m, s); c = fma(c, m, s); d = fma(d, m, s);
            e = fma(e, m, s); f = fma(f, m, s); g = fma(g, m, s); h = fma(h, m, s);
        }
    }
    vec4 sum = a + b + c + d + e + f + g + h;
    FloatArray(pc.out_values).v[id] = sum.x + sum.y + sum.z + sum.w;
}
