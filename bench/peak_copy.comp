#version 450
// Streaming copy for the bench's bandwidth figure: dst = src, 16 bytes per
// invocation per step, grid-strided. src is read through a texel view, as
// the expert GEMMs read weights (the fastest read path on llvmpipe).
//   set 1, binding 1: src (RGBA32UI texels)
//   push: dst (address of a uvec4 array), count (texels)
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require

layout(local_size_x = 64) in;
layout(set = 1, binding = 1) uniform usamplerBuffer src;
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Uvec4Array { uvec4 v[]; };
layout(push_constant) uniform Push {
    uvec2 dst;
    uint count;
} pc;

void main()
{
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * 64;
    uint first = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64;
    Uvec4Array dst = Uvec4Array(pc.dst);
    for (uint i = first; i < pc.count; i += stride)
        dst.v[i] = texelFetch(src, int(i));
}
