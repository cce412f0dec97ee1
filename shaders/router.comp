#version 450
// Router: from the logits x·Wgᵀ that the router GEMM computed (+ bg), the
// family's scores, group-limited top-k, the combine weights; optionally the
// shared expert's gate and the per-token figures of the load statistics.
// One workgroup per token.
//   push: logits f32 [tokens][ld_logits] (experts, + 1 when shared_scale is
//         set: the last is x·ws, the shared gate); router_bias f32 [experts]
//         or 0; selection_bias f32 [experts] or 0; ids u32 [tokens][top_k];
//         topk_weight f32 [tokens][top_k]; shared_scale f32 [tokens] or 0;
//         probs f32 [tokens][experts] or 0, with lse f32 [tokens] (statistics);
//         tokens, ld_logits, experts, top_k, normalize, kind (0 softmax,
//         1 sigmoid, 2 top-k of logits then softmax), groups, topk_groups,
//         scale (routed_scaling_factor)
//   spec 0: WORKGROUP, the number of invocations, a power of two >= 16
// Softmax selection compares logits (the same order as the probabilities,
// without the ties that rounding exp() would create); NaN ranks below every
// number; equal values go to the lowest expert (or group) index. Every sum
// runs in a fixed order, so the result is the same on every run.
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/dispatch.glsl"

layout(constant_id = 0) const uint WORKGROUP = 64;
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Push {
    uvec2 logits, router_bias, selection_bias, ids, topk_weight, shared_scale, probs, lse;
    uint tokens, ld_logits, experts, top_k, normalize, kind, groups, topk_groups;
    float scale;
} pc;

const uint KIND_SOFTMAX = 0;
const uint KIND_SIGMOID = 1;
const uint KIND_TOPK_SOFTMAX = 2;
const uint MAX_EXPERTS = 512;
const uint MAX_GROUPS = 16;
shared float logits[MAX_EXPERTS + 1];
shared float key[MAX_EXPERTS];
shared uint taken[MAX_EXPERTS];
shared float group_score[MAX_GROUPS];
shared uint group_kept[MAX_GROUPS];
shared float best_value[WORKGROUP];
shared uint best_index[WORKGROUP];

bool is_set(uvec2 address)
{
    return address != uvec2(0);
}

bool better(float a, uint ia, float b, uint ib)
{
    if (isnan(a) != isnan(b))
        return isnan(b);
    if (!isnan(a) && a != b)
        return a > b;
    return ia < ib;
}

// The strictly better of two (value, index) candidates; INVALID never wins.
bool wins(float a, uint ia, float b, uint ib)
{
    return ia != INVALID && (ib == INVALID || better(a, ia, b, ib));
}

float sigmoid(float v)
{
    return 1.0 / (1.0 + exp(-v));
}

// This token's logits, which the router GEMM (gemm_up.comp, linear) left in
// logits; plus the router bias.
void load_logits(uint token, uint rows)
{
    uint lane = gl_LocalInvocationID.x;
    FloatArray row = FloatArray(pc.logits);
    for (uint e = lane; e < rows; e += WORKGROUP) {
        float bias = e < pc.experts && is_set(pc.router_bias) ? FloatArray(pc.router_bias).v[e]
                                                               : 0.0;
        logits[e] = row.v[token * pc.ld_logits + e] + bias;
    }
    barrier();
}

// Fixed-order trees over one value per invocation.
float workgroup_max(float v)
{
    uint lane = gl_LocalInvocationID.x;
    best_value[lane] = v;
    barrier();
    for (uint half_size = WORKGROUP / 2; half_size > 0; half_size /= 2) {
        if (lane < half_size && best_value[lane + half_size] > best_value[lane])
            best_value[lane] = best_value[lane + half_size];
        barrier();
    }
    float result = best_value[0];
    barrier();
    return result;
}

float workgroup_sum(float v)
{
    uint lane = gl_LocalInvocationID.x;
    best_value[lane] = v;
    barrier();
    for (uint half_size = WORKGROUP / 2; half_size > 0; half_size /= 2) {
        if (lane < half_size)
            best_value[lane] += best_value[lane + half_size];
        barrier();
    }
    float result = best_value[0];
    barrier();
    return result;
}

// Σ_e exp(l_e − max_e l_e). NaN logits are skipped by the maximum and make
// the sum NaN.
float softmax_denominator(out float max_logit)
{
    uint lane = gl_LocalInvocationID.x;
    float local_max = -1.0 / 0.0;
    for (uint e = lane; e < pc.experts; e += WORKGROUP)
        if (logits[e] > local_max)
            local_max = logits[e];
    max_logit = workgroup_max(local_max);
    float local_sum = 0.0;
    for (uint e = lane; e < pc.experts; e += WORKGROUP)
        local_sum += exp(logits[e] - max_logit);
    return workgroup_sum(local_sum);
}

// What top-k ranks: logits, or for sigmoid scores s + b_sel.
void compute_keys()
{
    uint lane = gl_LocalInvocationID.x;
    for (uint e = lane; e < pc.experts; e += WORKGROUP) {
        float k = logits[e];
        if (pc.kind == KIND_SIGMOID) {
            k = sigmoid(k);
            if (is_set(pc.selection_bias))
                k += FloatArray(pc.selection_bias).v[e];
        }
        key[e] = k;
        taken[e] = 0;
    }
    barrier();
}

// A group's score: its best key, or for sigmoid scores its two best summed.
float score_group(uint group, uint size)
{
    float first = 0.0, second = 0.0;
    uint first_index = INVALID, second_index = INVALID;
    for (uint e = group * size; e < (group + 1) * size; e++) {
        if (wins(key[e], e, first, first_index)) {
            second = first;
            second_index = first_index;
            first = key[e];
            first_index = e;
        } else if (wins(key[e], e, second, second_index)) {
            second = key[e];
            second_index = e;
        }
    }
    return pc.kind == KIND_SIGMOID ? first + second : first;
}

// Excludes (marks taken) every expert outside the topk_groups best groups.
void limit_groups()
{
    if (pc.groups <= 1 || pc.topk_groups >= pc.groups)
        return;
    uint lane = gl_LocalInvocationID.x;
    uint size = pc.experts / pc.groups;
    if (lane < pc.groups) {
        group_score[lane] = score_group(lane, size);
        group_kept[lane] = 0;
    }
    barrier();
    if (lane == 0)
        for (uint round = 0; round < pc.topk_groups; round++) {
            uint best = INVALID;
            for (uint g = 0; g < pc.groups; g++)
                if (group_kept[g] == 0 &&
                    (best == INVALID || better(group_score[g], g, group_score[best], best)))
                    best = g;
            group_kept[best] = 1;
        }
    barrier();
    for (uint e = lane; e < pc.experts; e += WORKGROUP)
        taken[e] = 1 - group_kept[e / size];
    barrier();
}

// Fixed-order tree over the WORKGROUP partials in best_value/best_index.
void reduce_best()
{
    uint lane = gl_LocalInvocationID.x;
    for (uint half_size = WORKGROUP / 2; half_size > 0; half_size /= 2) {
        if (lane < half_size &&
            wins(best_value[lane + half_size], best_index[lane + half_size], best_value[lane],
                 best_index[lane])) {
            best_value[lane] = best_value[lane + half_size];
            best_index[lane] = best_index[lane + half_size];
        }
        barrier();
    }
}

// One round of top-k: the best expert not taken yet.
uint select_best()
{
    uint lane = gl_LocalInvocationID.x;
    float value = 0.0;
    uint index = INVALID;
    for (uint e = lane; e < pc.experts; e += WORKGROUP)
        if (taken[e] == 0 && wins(key[e], e, value, index)) {
            value = key[e];
            index = e;
        }
    best_value[lane] = value;
    best_index[lane] = index;
    barrier();
    reduce_best();
    uint chosen = best_index[0];
    if (lane == 0)
        taken[chosen] = 1;
    barrier();
    return chosen;
}

// The weights of the chosen experts, in selection order.
void write_weights(uint token, uint chosen[16], float max_logit, float denominator)
{
    float weight[16];
    float sum = 0.0;
    for (uint j = 0; j < pc.top_k; j++) {
        float l = logits[chosen[j]];
        if (pc.kind == KIND_SOFTMAX)
            weight[j] = exp(l - max_logit) / denominator;
        else if (pc.kind == KIND_SIGMOID)
            weight[j] = sigmoid(l);
        else
            weight[j] = exp(l - logits[chosen[0]]); // chosen[0] holds the largest
        sum += weight[j];
    }
    bool divide = pc.normalize != 0 || pc.kind == KIND_TOPK_SOFTMAX;
    float divisor = pc.kind == KIND_SIGMOID ? sum + 1e-20 : sum;
    UintArray ids = UintArray(pc.ids);
    FloatArray weights = FloatArray(pc.topk_weight);
    for (uint j = 0; j < pc.top_k; j++) {
        ids.v[token * pc.top_k + j] = chosen[j];
        float w = divide ? weight[j] / divisor : weight[j];
        weights.v[token * pc.top_k + j] = w * pc.scale;
    }
}

// Per-token inputs of the load statistics: each expert's router
// probability and logsumexp(l).
void write_statistics(uint token, float max_logit, float denominator)
{
    uint lane = gl_LocalInvocationID.x;
    float sigmoid_sum = 0.0;
    if (pc.kind == KIND_SIGMOID) {
        for (uint e = lane; e < pc.experts; e += WORKGROUP)
            sigmoid_sum += sigmoid(logits[e]);
        sigmoid_sum = workgroup_sum(sigmoid_sum);
    }
    FloatArray probs = FloatArray(pc.probs);
    for (uint e = lane; e < pc.experts; e += WORKGROUP)
        probs.v[token * pc.experts + e] = pc.kind == KIND_SIGMOID
                                              ? sigmoid(logits[e]) / sigmoid_sum
                                              : exp(logits[e] - max_logit) / denominator;
    if (lane == 0)
        FloatArray(pc.lse).v[token] = max_logit + log(denominator);
}

void main()
{
    uint token = flat_group_id();
    if (token >= pc.tokens)
        return;
    bool gated = is_set(pc.shared_scale);
    load_logits(token, pc.experts + (gated ? 1 : 0));
    float max_logit = 0.0, denominator = 1.0;
    if (pc.kind == KIND_SOFTMAX || is_set(pc.probs))
        denominator = softmax_denominator(max_logit);
    if (is_set(pc.probs))
        write_statistics(token, max_logit, denominator);
    compute_keys();
    limit_groups();
    uint chosen[16];
    for (uint j = 0; j < pc.top_k; j++)
        chosen[j] = select_best();
    if (gl_LocalInvocationID.x != 0)
        return;
    write_weights(token, chosen, max_logit, denominator);
    if (gated)
        FloatArray(pc.shared_scale).v[token] = sigmoid(logits[pc.experts]);
}
