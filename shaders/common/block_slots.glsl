// One block of VKMOE_BLOCK_SLOTS slots in priority order, an invocation per
// slot (scatter, and the scan's one-dispatch bucketing): each invocation
// learns its slot's expert and its rank among the block's earlier slots of
// that expert, which is its place in the expert's rows within the block.
// Needs buffers.glsl, constants.h and priority.glsl.

shared uint block_ids[VKMOE_BLOCK_SLOTS];

// The expert of the block's slot at this invocation (INVALID past the last
// slot), shared with the whole workgroup. Ends at a barrier.
uint load_block_expert(uvec2 ids, uint block, uint slots, uint tokens, uint top_k)
{
    uint lane = gl_LocalInvocationID.x;
    uint q = block * VKMOE_BLOCK_SLOTS + lane;
    uint expert = q < slots ? UintArray(ids).v[priority_slot(q, tokens, top_k)] : INVALID;
    block_ids[lane] = expert;
    barrier();
    return expert;
}

// How many of the block's slots before this invocation's chose expert.
uint block_rank(uint expert)
{
    uint rank = 0;
    for (uint i = 0; i < gl_LocalInvocationID.x; i++)
        rank += block_ids[i] == expert ? 1 : 0;
    return rank;
}

// Gives slot the row at place in its expert's rows starting at base, or no
// row (slot_row INVALID) where place is at or past the capacity.
void place_slot(uvec2 row_slot, uvec2 slot_row, uint slot, uint base, uint place, uint capacity)
{
    if (place >= capacity) {
        UintArray(slot_row).v[slot] = INVALID;
        return;
    }
    UintArray(row_slot).v[base + place] = slot;
    UintArray(slot_row).v[slot] = base + place;
}
