#version 450
// Scatter: give each slot its row, experts in order, slots of one expert in
// priority order (stable: slot 0 of every token in token order, then slot 1,
// …), then fill slot_row, the inverse map. A slot whose place in its expert
// is at or past capacity is dropped: it gets no row and slot_row INVALID.
//   push: ids u32 [slots]; offsets u32 [experts][blocks] (scanned block counts);
//         expert_base u32 [experts]; row_slot u32 [rows]; slot_row u32 [slots];
//         slots, blocks, tokens, top_k, capacity
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "constants.h"
#include "common/dispatch.glsl"
#include "common/priority.glsl"
#include "common/block_slots.glsl"

layout(local_size_x = VKMOE_BLOCK_SLOTS) in;
layout(push_constant) uniform Push {
    uvec2 ids, offsets, expert_base, row_slot, slot_row;
    uint slots, blocks, tokens, top_k, capacity;
} pc;

void main()
{
    uint block = flat_group_id();
    if (block >= pc.blocks)
        return;
    uint q = block * VKMOE_BLOCK_SLOTS + gl_LocalInvocationID.x;
    uint slot = priority_slot(q, pc.tokens, pc.top_k);
    uint expert = load_block_expert(pc.ids, block, pc.slots, pc.tokens, pc.top_k);
    if (expert == INVALID)
        return;
    uint rank = block_rank(expert);
    UintArray offsets = UintArray(pc.offsets);
    uint within_expert = offsets.v[expert * pc.blocks + block] - offsets.v[expert * pc.blocks];
    place_slot(pc.row_slot, pc.slot_row, slot, UintArray(pc.expert_base).v[expert],
               within_expert + rank, pc.capacity);
}
