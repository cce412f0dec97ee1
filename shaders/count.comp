#version 450
// Count: per-block, per-expert histogram of the chosen experts. Block b holds
// the slots of priority q in [b·256, b·256 + 256), q = j·tokens + t for slot
// t·top_k + j (common/priority.glsl). Shared-memory integer atomics only:
// counts are exact, so the result does not depend on their order. A slot
// routed nowhere (INVALID: an expert-parallel shard's rows of one expert
// each) is not counted.
//   push: ids u32 [slots]; block_counts u32 [experts][blocks]; slots, blocks, experts,
//         tokens, top_k
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "constants.h"
#include "common/dispatch.glsl"
#include "common/priority.glsl"

layout(local_size_x = VKMOE_BLOCK_SLOTS) in;
// The layer's E: sizes the histogram (occupancy on GPUs follows it).
layout(constant_id = 0) const uint EXPERTS = VKMOE_MAX_EXPERTS;
layout(push_constant) uniform Push {
    uvec2 ids, block_counts;
    uint slots, blocks, experts, tokens, top_k;
} pc;

shared uint histogram[EXPERTS];

void main()
{
    uint block = flat_group_id();
    if (block >= pc.blocks)
        return;
    uint lane = gl_LocalInvocationID.x;
    for (uint e = lane; e < pc.experts; e += VKMOE_BLOCK_SLOTS)
        histogram[e] = 0;
    barrier();
    uint q = block * VKMOE_BLOCK_SLOTS + lane;
    uint expert = q < pc.slots ? UintArray(pc.ids).v[priority_slot(q, pc.tokens, pc.top_k)] : INVALID;
    if (expert != INVALID)
        atomicAdd(histogram[expert], 1);
    barrier();
    UintArray counts = UintArray(pc.block_counts);
    for (uint e = lane; e < pc.experts; e += VKMOE_BLOCK_SLOTS)
        counts.v[e * pc.blocks + block] = histogram[e];
}
