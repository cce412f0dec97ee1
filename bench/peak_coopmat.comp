#version 450
// The matrix-core peak, for the VKMOE_GEMM_COOPMAT path: each subgroup adds
// 16x16x16 f16 products (the GEMM's shape) into four independent f32
// accumulators, `iterations` steps each, then stores them (each apart:
// this glslc crashes on adding cooperative matrices). Run only where
// vkmoe_device_info.cooperative_matrix.
//   push: out f32 [subgroups][4][16][16] (address), iterations
//   spec 0: workgroup size
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require

layout(local_size_x_id = 0) in;
layout(buffer_reference, std430, buffer_reference_align = 16) buffer FloatArray { float v[]; };
layout(push_constant) uniform Push {
    uvec2 out_values;
    uint iterations;
} pc;

void main()
{
    fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a =
        fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>(float16_t(1e-3));
    fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> b = a;
    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> c0 = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> c1 = c0, c2 = c0, c3 = c0;
    for (uint i = 0; i < pc.iterations; i++) {
        c0 = coopMatMulAddNV(a, b, c0);
        c1 = coopMatMulAddNV(a, b, c1);
        c2 = coopMatMulAddNV(a, b, c2);
        c3 = coopMatMulAddNV(a, b, c3);
    }
    uint first = (gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID) * 4 * 256;
    coopMatStoreNV(c0, FloatArray(pc.out_values).v, first, 16, false);
    coopMatStoreNV(c1, FloatArray(pc.out_values).v, first + 256, 16, false);
    coopMatStoreNV(c2, FloatArray(pc.out_values).v, first + 512, 16, false);
    coopMatStoreNV(c3, FloatArray(pc.out_values).v, first + 768, 16, false);
}
