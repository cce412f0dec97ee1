#version 450
// The bench's bandwidth figures, 16 bytes per invocation per step,
// grid-strided, through texel buffers (the fastest paths on llvmpipe; see
// peak.c). spec 0, COPY = 1: dst = src, a streaming copy. COPY = 0: a
// streaming read, src folded into one value per invocation that is stored
// only if it matches a key no data here has, so the reads cannot be dropped.
//   set 0: binding 0 src (RGBA32UI, uniform), binding 1 dst (RGBA32UI, storage)
//   push: count (texels)

layout(local_size_x = 64) in;
layout(constant_id = 0) const uint COPY = 1;
layout(set = 0, binding = 0) uniform usamplerBuffer src;
layout(set = 0, binding = 1, rgba32ui) uniform writeonly uimageBuffer dst;
layout(push_constant) uniform Push {
    uint count;
} pc;

void main()
{
    uint stride = gl_NumWorkGroups.x * 64;
    uvec4 folded = uvec4(0);
    for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += stride) {
        uvec4 v = texelFetch(src, int(i));
        if (COPY != 0)
            imageStore(dst, int(i), v);
        folded ^= v;
    }
    if (folded == uvec4(0xdeadbeefu))
        imageStore(dst, int(gl_GlobalInvocationID.x), folded);
}
