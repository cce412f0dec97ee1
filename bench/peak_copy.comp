#version 450
// Streaming copy for the bench's bandwidth figure: dst = src, 16 bytes per
// invocation per step, grid-strided.
//   push: src, dst (addresses of vec4 arrays), count (vec4 elements)
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require

layout(local_size_x = 64) in;
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Vec4Array { vec4 v[]; };
layout(push_constant) uniform Push {
    uvec2 src, dst;
    uint count;
} pc;

void main()
{
    uint stride = gl_NumWorkGroups.x * gl_NumWorkGroups.y * 64;
    uint first = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64;
    Vec4Array src = Vec4Array(pc.src), dst = Vec4Array(pc.dst);
    for (uint i = first; i < pc.count; i += stride)
        dst.v[i] = src.v[i];
}
