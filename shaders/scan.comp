#version 450
// Scan: the device-wide exclusive prefix sum of the block counts, laid out
// expert-major ([experts][blocks]), so each (expert, block) pair learns where
// its rows start. Reduce-then-scan in four phases, one dispatch each:
//   0 reduce: workgroup w sums values [w·1024, w·1024 + 1024) into tile_sums[w]
//   1 tiles:  one workgroup scans tile_sums in place, 1024 at a time
//   2 apply:  workgroup w scans its 1024 values in place, offset by tile_sums[w]
//   3 experts: one workgroup turns the scanned counts into per-expert counts
//      (expert_count: all routed slots), kept counts (at most capacity),
//      tile-padded segment bases of the kept rows, the tile→expert map, the padding rows of
//      row_slot and the indirect grids of the two GEMMs
//   4 single: when all values fit one tile, phases 2 and 3 in one
//      workgroup, one dispatch instead of four; each expert's first offset
//      passes from the scan to the plan through shared memory
//   5 bucket: when all slots fit one block (decode), the whole bucketing in
//      one workgroup, an invocation per slot: count's histogram (in shared
//      memory), its scan, phase 3's plan and scatter's rows, one dispatch
//      instead of three and two fewer barriers; the same results, the
//      scanned counts included
//   push: values u32 [n]; tile_sums u32; expert_count u32 [experts];
//         expert_base u32 [experts]; tile_expert u32 [max_tiles];
//         row_slot u32 [rows]; dispatch u32 [2][3]; ids u32 [slots] and
//         slot_row u32 [slots] (phase 5);
//         n, phase, blocks, experts, slots, tile_m, max_tiles, up_groups_x,
//         down_groups_x, capacity, tokens and top_k (phase 5)
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "constants.h"
#include "common/dispatch.glsl"
#include "common/priority.glsl"
#include "common/block_slots.glsl"

layout(local_size_x = VKMOE_SCAN_WORKGROUP) in;
layout(push_constant) uniform Push {
    uvec2 values, tile_sums, expert_count, expert_base, tile_expert, row_slot, dispatch, ids,
        slot_row;
    uint n, phase, blocks, experts, slots, tile_m, max_tiles, up_groups_x, down_groups_x,
        capacity, tokens, top_k;
} pc;

// The layer's E: sizes the per-expert arrays (occupancy on GPUs follows them).
layout(constant_id = 0) const uint EXPERTS = VKMOE_MAX_EXPERTS;
const uint TILE = VKMOE_SCAN_TILE;
const uint PER_LANE = VKMOE_SCAN_TILE / VKMOE_SCAN_WORKGROUP;
// The experts a lane plans (consecutive ones).
const uint EXPERTS_PER_LANE = (EXPERTS + VKMOE_SCAN_WORKGROUP - 1) / VKMOE_SCAN_WORKGROUP;
// The GEMM grids fold row tiles into y and z, at most this many along y.
const uint GRID_Y = 32768;

shared uint partial[VKMOE_SCAN_WORKGROUP];
shared uint wg_total;
shared uint segment_count[EXPERTS];
shared uint segment_base[EXPERTS];
// Phases 4 and 5: the scanned offset of each expert's first block (phase 5
// counts into it first).
shared uint expert_start[EXPERTS];

// Exclusive prefix of v over the workgroup's invocations; the workgroup's
// total lands in wg_total. Fixed order: integers, but deterministic anyway.
uint workgroup_scan(uint v)
{
    uint lane = gl_LocalInvocationID.x;
    partial[lane] = v;
    barrier();
    for (uint offset = 1; offset < VKMOE_SCAN_WORKGROUP; offset <<= 1) {
        uint add = lane >= offset ? partial[lane - offset] : 0;
        barrier();
        partial[lane] += add;
        barrier();
    }
    uint inclusive = partial[lane];
    if (lane == VKMOE_SCAN_WORKGROUP - 1)
        wg_total = inclusive;
    barrier();
    return inclusive - v;
}

// Scan TILE values of array starting at base in place, each offset by carry;
// returns the tile's total.
uint scan_tile(UintArray array, uint base, uint count, uint carry)
{
    bool keep_starts = pc.phase == 4;
    uint first = base + gl_LocalInvocationID.x * PER_LANE;
    uint v[PER_LANE];
    uint sum = 0;
    for (uint i = 0; i < PER_LANE; i++) {
        v[i] = first + i < count ? array.v[first + i] : 0;
        sum += v[i];
    }
    uint prefix = carry + workgroup_scan(sum);
    for (uint i = 0; i < PER_LANE; i++) {
        if (first + i < count)
            array.v[first + i] = prefix;
        if (keep_starts && first + i < count && (first + i) % pc.blocks == 0)
            expert_start[(first + i) / pc.blocks] = prefix;
        prefix += v[i];
    }
    uint total = wg_total;
    barrier();
    return total;
}

void reduce_tile(uint tile)
{
    UintArray values = UintArray(pc.values);
    uint first = tile * TILE + gl_LocalInvocationID.x * PER_LANE;
    uint sum = 0;
    for (uint i = 0; i < PER_LANE; i++)
        sum += first + i < pc.n ? values.v[first + i] : 0;
    workgroup_scan(sum);
    if (gl_LocalInvocationID.x == 0)
        UintArray(pc.tile_sums).v[tile] = wg_total;
}

void scan_tile_sums()
{
    uint tiles = (pc.n + TILE - 1) / TILE;
    uint carry = 0;
    for (uint base = 0; base < tiles; base += TILE)
        carry += scan_tile(UintArray(pc.tile_sums), base, tiles, carry);
}

// The expert owning row tile t: the last expert whose segment starts at or
// before it (empty experts share the next one's base, so never win).
uint tile_owner(uint row)
{
    uint lo = 0, hi = pc.experts;
    while (hi - lo > 1) {
        uint mid = (lo + hi) / 2;
        if (segment_base[mid] <= row)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

// The scanned offset of expert e's first block.
uint first_offset(uint e)
{
    return pc.phase >= 4 ? expert_start[e] : UintArray(pc.values).v[e * pc.blocks];
}

// The tile-padded rows of expert e's kept slots (its count and routed
// slots stored on the way).
uint padded_rows(uint e)
{
    if (e >= pc.experts)
        return 0;
    uint end = e + 1 < pc.experts ? first_offset(e + 1) : pc.slots;
    uint routed = end - first_offset(e);
    UintArray(pc.expert_count).v[e] = routed;
    uint count = min(routed, pc.capacity);
    segment_count[e] = count;
    return (count + pc.tile_m - 1) / pc.tile_m * pc.tile_m;
}

void plan_experts()
{
    uint lane = gl_LocalInvocationID.x;
    uint rows = 0;
    for (uint i = 0; i < EXPERTS_PER_LANE; i++)
        rows += padded_rows(lane * EXPERTS_PER_LANE + i);
    uint base = workgroup_scan(rows);
    uint used_tiles = wg_total / pc.tile_m;
    for (uint i = 0; i < EXPERTS_PER_LANE; i++) {
        uint e = lane * EXPERTS_PER_LANE + i;
        if (e >= pc.experts)
            break;
        segment_base[e] = base;
        UintArray(pc.expert_base).v[e] = base;
        base += (segment_count[e] + pc.tile_m - 1) / pc.tile_m * pc.tile_m;
    }
    barrier();
    for (uint t = lane; t < pc.max_tiles; t += VKMOE_SCAN_WORKGROUP) {
        uint owner = t < used_tiles ? tile_owner(t * pc.tile_m) : INVALID;
        UintArray(pc.tile_expert).v[t] = owner;
        if (owner == INVALID)
            continue;
        uint end = segment_base[owner] + segment_count[owner];
        for (uint r = max(end, t * pc.tile_m); r < (t + 1) * pc.tile_m; r++)
            UintArray(pc.row_slot).v[r] = INVALID;
    }
    if (lane == 0) {
        UintArray grid = UintArray(pc.dispatch);
        uint y = min(used_tiles, GRID_Y);
        uint z = (used_tiles + GRID_Y - 1) / GRID_Y;
        grid.v[0] = pc.up_groups_x;
        grid.v[1] = y;
        grid.v[2] = z;
        grid.v[3] = pc.down_groups_x;
        grid.v[4] = y;
        grid.v[5] = z;
    }
}

// Phase 5: the block's histogram, its exclusive scan (one block: a value
// per expert, stored as the scanned counts too), the plan, then every slot
// its row.
void bucket_one_block()
{
    uint lane = gl_LocalInvocationID.x;
    for (uint e = lane; e < pc.experts; e += VKMOE_SCAN_WORKGROUP)
        expert_start[e] = 0;
    barrier();
    uint expert = load_block_expert(pc.ids, 0, pc.slots, pc.tokens, pc.top_k);
    if (expert != INVALID)
        atomicAdd(expert_start[expert], 1);
    barrier();
    uint first = lane * EXPERTS_PER_LANE;
    uint sum = 0;
    for (uint i = 0; i < EXPERTS_PER_LANE && first + i < pc.experts; i++)
        sum += expert_start[first + i];
    uint prefix = workgroup_scan(sum);
    for (uint i = 0; i < EXPERTS_PER_LANE && first + i < pc.experts; i++) {
        uint count = expert_start[first + i];
        expert_start[first + i] = prefix;
        UintArray(pc.values).v[first + i] = prefix;
        prefix += count;
    }
    barrier();
    plan_experts();
    barrier();
    if (expert == INVALID)
        return;
    place_slot(pc.row_slot, pc.slot_row, priority_slot(lane, pc.tokens, pc.top_k),
               segment_base[expert], block_rank(expert), pc.capacity);
}

void main()
{
    uint group = flat_group_id();
    if ((pc.phase == 0 || pc.phase == 2) && group * TILE >= pc.n)
        return;
    if (pc.phase == 0)
        reduce_tile(group);
    else if (pc.phase == 1)
        scan_tile_sums();
    else if (pc.phase == 2)
        scan_tile(UintArray(pc.values), group * TILE, pc.n,
                  UintArray(pc.tile_sums).v[group]);
    else if (pc.phase == 3)
        plan_experts();
    else if (pc.phase == 4) {
        scan_tile(UintArray(pc.values), 0, pc.n, 0); // ends at a barrier
        plan_experts();
    } else
        bucket_one_block();
}
