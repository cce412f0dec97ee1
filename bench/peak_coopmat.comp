#version 450
// The matrix-core peak, for the VKMOE_GEMM_COOPMAT path: each subgroup adds
// 16x16x16 f16 products (the GEMM's shape) into four independent f32
// accumulators, `iterations` steps each, then stores them (each apart:
// this glslc crashes on adding cooperative matrices). Run only where
// vkmoe_device_info.cooperative_matrix; rewritten for VK_KHR_cooperative_matrix
// as the library's GEMMs are (tools/spirv_khr.py), where A and B are
// matrices of different types, hence two loads.
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

// A and B, loaded from shared memory as the GEMM loads its tiles: built
// from a constant instead, RDNA3's compiler (Mesa 25.0, RADV's null
// device) crashes on the KHR module.
shared float16_t tile[256];

void main()
{
    for (uint i = gl_LocalInvocationID.x; i < 256; i += gl_WorkGroupSize.x)
        tile[i] = float16_t(1e-3);
    barrier();
    fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a, b;
    coopMatLoadNV(a, tile, 0, 16, false);
    coopMatLoadNV(b, tile, 0, 16, true);
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
