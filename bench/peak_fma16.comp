#version 450
// The fp16 twin of peak_fma.comp: eight independent f16vec4 FMA chains per
// invocation, `iterations` steps each (a multiple of 4), one store.
//   push: out f32 [invocations] (address), iterations
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require

layout(local_size_x = 64) in;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer FloatArray { float v[]; };
layout(push_constant) uniform Push {
    uvec2 out_values;
    uint iterations;
} pc;

void main()
{
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64;
    f16vec4 a = f16vec4(float(id % 64) * 1e-3), b = a + 1e-3hf, c = a + 2e-3hf, d = a + 3e-3hf;
    f16vec4 e = a + 4e-3hf, f = a + 5e-3hf, g = a + 6e-3hf, h = a + 7e-3hf;
    const f16vec4 m = f16vec4(0.999hf), s = f16vec4(1e-4hf);
    for (uint i = 0; i < pc.iterations; i += 4) {
        for (uint u = 0; u < 4; u++) {
            a = fma(a, m, s); b = fma(b, m, s); c = fma(c, m, s); d = fma(d, m, s);
            e = fma(e, m, s); f = fma(f, m, s); g = fma(g, m, s); h = fma(h, m, s);
        }
    }
    f16vec4 sum = a + b + c + d + e + f + g + h;
    FloatArray(pc.out_values).v[id] = float(sum.x + sum.y + sum.z + sum.w);
}
