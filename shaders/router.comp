#version 450
// Router: from the logits x·Wgᵀ that the router GEMM computed (+ bg), the
// family's scores, group-limited top-k, the combine weights; optionally the
// shared expert's gate and the per-token figures of the load statistics;
// for a forward of one token, its slots' bucketing too (bucket_one_token).
// One workgroup of one subgroup per token: lane l owns experts l, l + LANES,
// …, and every choice is a subgroup reduction, so no step waits at a
// workgroup barrier (CPU drivers switch every invocation's stack at one).
//   push: ids u32 [tokens][top_k]; router_bias f32 [experts] or 0;
//         selection_bias f32 [experts] or 0; then arrays of the scratch as
//         offsets from ids in 16-byte units (0: none): logits f32
//         [tokens][ld_logits] (experts, + 1 when shared_scale is set: the
//         last is x·ws, the shared gate); topk_weight f32 [tokens][top_k];
//         shared_scale f32 [tokens]; probs f32 [tokens][experts], with lse
//         f32 [tokens] (statistics);
//         tokens, ld_logits, experts, top_k, normalize, kind (a vkmoe_router_type,
//         ROUTER_*), groups, topk_groups, scale (routed_scaling_factor);
//         where tile_m is not 0 (one token), the scan's outputs as its
//         one-block bucketing writes them (scan.comp, phase 5), offsets as
//         above: block_counts (scanned), expert_count, expert_base,
//         tile_expert, row_slot, slot_row, dispatch; tile_m, max_tiles,
//         up_groups_x, down_groups_x
//   spec 0: LANES, the subgroup size (= workgroup size); 1: EXPERTS, the
//   layer's E, which sizes the shared arrays (occupancy on GPUs follows them)
// Selection ranks values through an order-preserving map to uint in which
// NaN is lowest but for 0, which marks an expert taken (or in a dropped
// group); equal values go to the lowest expert (or group) index.
// Softmax selection compares logits (the same order as the probabilities,
// without the ties that rounding exp() would create), or with a selection
// bias the probabilities plus the bias (ERNIE-4.5).
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_ballot : require
#include "common/buffers.glsl"
#include "constants.h"
#include "public_enums.glsl"
#include "common/dispatch.glsl"

layout(constant_id = 0) const uint LANES = 8;
layout(constant_id = 1) const uint EXPERTS = VKMOE_MAX_EXPERTS;
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push {
    uvec2 ids, router_bias, selection_bias;
    uint logits, topk_weight, shared_scale, probs, lse;
    uint tokens, ld_logits, experts, top_k, normalize, kind, groups, topk_groups;
    float scale;
    uint block_counts, expert_count, expert_base, tile_expert, row_slot, slot_row, dispatch;
    uint tile_m, max_tiles, up_groups_x, down_groups_x;
} pc;

const uint MAX_GROUPS = VKMOE_MAX_GROUPS;
// Each lane writes only its own experts' entries; others read them after
// a subgroup barrier.
shared float logits[EXPERTS + 1];
shared uint key_rank[EXPERTS];       // rank(key), or TAKEN
shared uint group_rank[MAX_GROUPS];  // rank(group score), or TAKEN once kept
shared uint chosen[VKMOE_MAX_TOP_K]; // the experts picked, in order

bool is_set(uvec2 address)
{
    return address != uvec2(0);
}

// An array of the scratch, by its offset from ids.
UintArray scratch_uints(uint offset)
{
    return UintArray(address_at(pc.ids, offset));
}

FloatArray scratch_floats(uint offset)
{
    return FloatArray(address_at(pc.ids, offset));
}

float sigmoid(float v)
{
    return 1.0 / (1.0 + exp(-v));
}

const uint TAKEN = 0u;

// Order-preserving: a > b (as numbers) iff rank(a) > rank(b); equal
// numbers (0 and -0 too) rank equal; NaN ranks 1, below every number (whose
// ranks start at ~bits(-inf) = 0x007fffff) and above TAKEN.
uint rank(float v)
{
    if (isnan(v))
        return 1u;
    uint bits = floatBitsToUint(v == 0.0 ? 0.0 : v);
    return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

float unrank(uint r)
{
    if (r <= 1u)
        return uintBitsToFloat(0x7fc00000u);
    return uintBitsToFloat((r & 0x80000000u) != 0 ? r & 0x7fffffffu : ~r);
}

// The subgroup's best (rank, index) of one candidate per lane: the highest
// rank, then the lowest index. A lane without a candidate offers index
// INVALID, which loses to any candidate.
uint subgroup_best(uint r, uint index, out uint best_rank)
{
    best_rank = subgroupMax(index != INVALID ? r : 0u);
    return subgroupMin(r == best_rank ? index : INVALID);
}

// This token's logits plus the router bias, and the selection keys: logits,
// or for sigmoid scores s + b_sel.
void load_scores(uint token, uint rows)
{
    FloatArray row = scratch_floats(pc.logits);
    for (uint e = gl_SubgroupInvocationID; e < rows; e += LANES) {
        float l = row.v[token * pc.ld_logits + e];
        if (e >= pc.experts) {
            logits[e] = l;
            continue;
        }
        if (is_set(pc.router_bias))
            l += FloatArray(pc.router_bias).v[e];
        logits[e] = l;
        float k = l;
        if (pc.kind == ROUTER_SIGMOID_TOPK) {
            k = sigmoid(l);
            if (is_set(pc.selection_bias))
                k += FloatArray(pc.selection_bias).v[e];
        }
        key_rank[e] = rank(k);
    }
    subgroupBarrier();
}

// Softmax with a selection bias: the keys become p + b_sel, once the
// denominator is known (the weights stay p).
void key_by_probability(float max_logit, float denominator)
{
    for (uint e = gl_SubgroupInvocationID; e < pc.experts; e += LANES)
        key_rank[e] = rank(exp(logits[e] - max_logit) / denominator +
                           FloatArray(pc.selection_bias).v[e]);
    subgroupBarrier();
}

// max_e l_e (NaN skipped) and Σ_e exp(l_e − max).
float softmax_denominator(out float max_logit)
{
    float local_max = -1.0 / 0.0;
    for (uint e = gl_SubgroupInvocationID; e < pc.experts; e += LANES)
        if (logits[e] > local_max)
            local_max = logits[e];
    max_logit = subgroupMax(local_max);
    float local_sum = 0.0;
    for (uint e = gl_SubgroupInvocationID; e < pc.experts; e += LANES)
        local_sum += exp(logits[e] - max_logit);
    return subgroupAdd(local_sum);
}

// The best of this lane's untaken experts in [first, end): rank and index.
// Ranks come precomputed and "taken" is a rank, so a step is one load.
uint lane_best(uint first, uint end, uint skip, out uint best_rank)
{
    uint best = INVALID;
    best_rank = 0u;
    uint start = first + (gl_SubgroupInvocationID + LANES - first % LANES) % LANES;
    for (uint e = start; e < end; e += LANES) {
        uint r = key_rank[e];
        if (r != TAKEN && e != skip && (best == INVALID || r > best_rank)) {
            best = e;
            best_rank = r;
        }
    }
    return best;
}

// A group's score: its best key, or for sigmoid scores its two best summed.
float score_group(uint group, uint size)
{
    uint first_rank, second_rank, lane_rank;
    uint lane = lane_best(group * size, (group + 1) * size, INVALID, lane_rank);
    uint first = subgroup_best(lane_rank, lane, first_rank);
    if (pc.kind != ROUTER_SIGMOID_TOPK)
        return unrank(first_rank);
    lane = lane_best(group * size, (group + 1) * size, first, lane_rank);
    subgroup_best(lane_rank, lane, second_rank);
    return unrank(first_rank) + unrank(second_rank);
}

// Takes (excludes) every expert outside the topk_groups best groups. The
// groups' ranks live in shared memory, lane g owning groups g, g + LANES, …
// as for experts; a kept group is marked TAKEN.
void limit_groups()
{
    if (pc.groups <= 1 || pc.topk_groups >= pc.groups)
        return;
    uint size = pc.experts / pc.groups;
    for (uint g = 0; g < pc.groups; g++) {
        float score = score_group(g, size);
        if (g % LANES == gl_SubgroupInvocationID)
            group_rank[g] = rank(score);
    }
    subgroupBarrier();
    for (uint round = 0; round < pc.topk_groups; round++) {
        uint lane = INVALID, lane_rank = 0u, best_rank;
        for (uint g = gl_SubgroupInvocationID; g < pc.groups; g += LANES)
            if (group_rank[g] != TAKEN && (lane == INVALID || group_rank[g] > lane_rank)) {
                lane = g;
                lane_rank = group_rank[g];
            }
        uint best = subgroup_best(lane_rank, lane, best_rank);
        if (lane == best)
            group_rank[best] = TAKEN;
        subgroupBarrier();
    }
    for (uint e = gl_SubgroupInvocationID; e < pc.experts; e += LANES)
        if (group_rank[e / size] != TAKEN)
            key_rank[e] = TAKEN;
}

// One round of top-k: the best expert not taken yet, marked by its lane.
uint select_best()
{
    uint lane_rank, best_rank;
    uint lane = lane_best(0, pc.experts, INVALID, lane_rank);
    uint chosen = subgroup_best(lane_rank, lane, best_rank);
    if (lane == chosen)
        key_rank[chosen] = TAKEN;
    return chosen;
}

// The weight of choice j before any renormalisation.
float raw_weight(uint j, float max_logit, float denominator)
{
    float l = logits[chosen[j]];
    if (pc.kind == ROUTER_SOFTMAX_TOPK)
        return exp(l - max_logit) / denominator;
    if (pc.kind == ROUTER_SIGMOID_TOPK || pc.kind == ROUTER_TOPK_SIGMOID)
        return sigmoid(l);
    return exp(l - logits[chosen[0]]); // chosen[0] holds the largest
}

// The weights of the chosen experts, in selection order (one lane); each
// computed twice (for the sum, then to write) rather than kept in 32
// registers.
void write_weights(uint token, float max_logit, float denominator)
{
    float sum = 0.0;
    for (uint j = 0; j < pc.top_k; j++)
        sum += raw_weight(j, max_logit, denominator);
    bool divide = pc.normalize != 0 || pc.kind == ROUTER_TOPK_SOFTMAX;
    // DeepSeek-V3 adds 1e-20; ERNIE-4.5 floors a softmax sum at 1e-12, which
    // only a selection bias can bring below k/E (NaN stays NaN).
    float divisor = pc.kind == ROUTER_SIGMOID_TOPK                  ? sum + 1e-20
                    : pc.kind == ROUTER_SOFTMAX_TOPK && sum < 1e-12 ? 1e-12
                                                                   : sum;
    UintArray ids = UintArray(pc.ids);
    FloatArray weights = scratch_floats(pc.topk_weight);
    for (uint j = 0; j < pc.top_k; j++) {
        ids.v[token * pc.top_k + j] = chosen[j];
        float w = raw_weight(j, max_logit, denominator);
        weights.v[token * pc.top_k + j] = (divide ? w / divisor : w) * pc.scale;
    }
}

// Per-token inputs of the load statistics: each expert's router
// probability and logsumexp(l).
void write_statistics(uint token, float max_logit, float denominator)
{
    float sigmoid_sum = 0.0;
    if (pc.kind == ROUTER_SIGMOID_TOPK) {
        for (uint e = gl_SubgroupInvocationID; e < pc.experts; e += LANES)
            sigmoid_sum += sigmoid(logits[e]);
        sigmoid_sum = subgroupAdd(sigmoid_sum);
    }
    FloatArray probs = scratch_floats(pc.probs);
    for (uint e = gl_SubgroupInvocationID; e < pc.experts; e += LANES)
        probs.v[token * pc.experts + e] = pc.kind == ROUTER_SIGMOID_TOPK
                                              ? sigmoid(logits[e]) / sigmoid_sum
                                              : exp(logits[e] - max_logit) / denominator;
    if (subgroupElect())
        scratch_floats(pc.lse).v[token] = max_logit + log(denominator);
}

// How many of the token's choices have a lower index than expert e.
uint chosen_before(uint e)
{
    uint before = 0;
    for (uint j = 0; j < pc.top_k; j++)
        before += chosen[j] < e ? 1 : 0;
    return before;
}

// One token's bucketing, what the scan's phase 5 would make of its slots:
// its k experts differ, so each has one row (and every slot is kept: a
// capacity is at least 1), padded to a tile of its own, the tiles in expert
// order. Saves the scan's dispatch and a barrier at decode.
void bucket_one_token()
{
    subgroupBarrier(); // chosen[], written by one lane
    for (uint e = gl_SubgroupInvocationID; e < pc.experts; e += LANES) {
        uint before = chosen_before(e);
        bool taken = chosen_before(e + 1) > before;
        scratch_uints(pc.block_counts).v[e] = before;
        scratch_uints(pc.expert_count).v[e] = taken ? 1 : 0;
        scratch_uints(pc.expert_base).v[e] = before * pc.tile_m;
    }
    for (uint j = gl_SubgroupInvocationID; j < pc.top_k; j += LANES) {
        uint tile = chosen_before(chosen[j]), row = tile * pc.tile_m;
        scratch_uints(pc.tile_expert).v[tile] = chosen[j];
        scratch_uints(pc.row_slot).v[row] = j;
        for (uint r = row + 1; r < row + pc.tile_m; r++)
            scratch_uints(pc.row_slot).v[r] = INVALID;
        scratch_uints(pc.slot_row).v[j] = row;
    }
    for (uint t = pc.top_k + gl_SubgroupInvocationID; t < pc.max_tiles; t += LANES)
        scratch_uints(pc.tile_expert).v[t] = INVALID;
    if (subgroupElect()) {
        UintArray grid = scratch_uints(pc.dispatch);
        grid.v[0] = pc.up_groups_x;
        grid.v[1] = pc.top_k;
        grid.v[2] = 1;
        grid.v[3] = pc.down_groups_x;
        grid.v[4] = pc.top_k;
        grid.v[5] = 1;
    }
}

void main()
{
    uint token = flat_group_id();
    if (token >= pc.tokens)
        return;
    bool gated = pc.shared_scale != 0;
    load_scores(token, pc.experts + (gated ? 1 : 0));
    float max_logit = 0.0, denominator = 1.0;
    if (pc.kind == ROUTER_SOFTMAX_TOPK || pc.probs != 0)
        denominator = softmax_denominator(max_logit);
    if (pc.kind == ROUTER_SOFTMAX_TOPK && is_set(pc.selection_bias))
        key_by_probability(max_logit, denominator);
    if (pc.probs != 0)
        write_statistics(token, max_logit, denominator);
    limit_groups();
    for (uint j = 0; j < pc.top_k; j++) {
        uint best = select_best();
        if (subgroupElect())
            chosen[j] = best;
    }
    if (pc.tile_m != 0)
        bucket_one_token();
    if (!subgroupElect())
        return;
    write_weights(token, max_logit, denominator);
    if (gated)
        scratch_floats(pc.shared_scale).v[token] = sigmoid(logits[pc.experts]);
}
