#version 450
// Scatter: give each slot its row, experts in order, slots of one expert in
// token order (stable), then fill slot_row, the inverse map.
//   push: ids u32 [slots]; offsets u32 [experts][blocks] (scanned block counts);
//         expert_base u32 [experts]; row_slot u32 [rows]; slot_row u32 [slots];
//         slots, blocks
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/dispatch.glsl"

layout(local_size_x = 256) in;
layout(push_constant) uniform Push {
    uvec2 ids, offsets, expert_base, row_slot, slot_row;
    uint slots, blocks;
} pc;

shared uint block_ids[256];

void main()
{
    uint block = flat_group_id();
    if (block >= pc.blocks)
        return;
    uint lane = gl_LocalInvocationID.x;
    uint slot = block * 256 + lane;
    uint expert = slot < pc.slots ? UintArray(pc.ids).v[slot] : INVALID;
    block_ids[lane] = expert;
    barrier();
    if (expert == INVALID)
        return;
    uint rank = 0;
    for (uint i = 0; i < lane; i++)
        rank += block_ids[i] == expert ? 1 : 0;
    UintArray offsets = UintArray(pc.offsets);
    uint within_expert = offsets.v[expert * pc.blocks + block] - offsets.v[expert * pc.blocks];
    uint row = UintArray(pc.expert_base).v[expert] + within_expert + rank;
    UintArray(pc.row_slot).v[row] = slot;
    UintArray(pc.slot_row).v[slot] = row;
}
