#version 450
// Router: logits l = x·Wgᵀ, softmax probabilities, top-k, optional renormalisation.
// One workgroup per token.
//   binding 0: x f32 [tokens][dim]
//   push: router f32 [experts][ld_dim]; ids u32 [tokens][top_k];
//         topk_weight f32 [tokens][top_k]; tokens, dim, ld_dim, experts, top_k, normalize
//   spec 0: WORKGROUP, the number of invocations, a power of two
// Selection compares logits (the same order as the probabilities, without
// the ties that rounding exp() would create); NaN ranks below every number;
// equal values go to the lowest expert index.
#extension GL_GOOGLE_include_directive : require
#include "common/buffers.glsl"
#include "common/dispatch.glsl"

layout(constant_id = 0) const uint WORKGROUP = 64;
layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(push_constant) uniform Push {
    uvec2 router, ids, topk_weight;
    uint tokens, dim, ld_dim, experts, top_k, normalize;
} pc;

const uint MAX_EXPERTS = 512;
const uint X_CHUNK = 2048;
shared float x_chunk[X_CHUNK];
shared float logits[MAX_EXPERTS];
shared uint taken[MAX_EXPERTS];
shared float best_value[WORKGROUP];
shared uint best_index[WORKGROUP];

bool better(float a, uint ia, float b, uint ib)
{
    if (isnan(a) != isnan(b))
        return isnan(b);
    if (!isnan(a) && a != b)
        return a > b;
    return ia < ib;
}

void compute_logits(uint token)
{
    uint lane = gl_LocalInvocationID.x;
    for (uint e = lane; e < pc.experts; e += WORKGROUP) {
        logits[e] = 0.0;
        taken[e] = 0;
    }
    Vec4Array w = Vec4Array(pc.router);
    for (uint c0 = 0; c0 < pc.dim; c0 += X_CHUNK) {
        // Only as much of the chunk as the weight rows cover (zero-padded to ld_dim).
        uint len = min(X_CHUNK, pc.ld_dim - c0);
        barrier();
        for (uint i = lane; i < len; i += WORKGROUP)
            x_chunk[i] = c0 + i < pc.dim ? x[token * pc.dim + c0 + i] : 0.0;
        barrier();
        for (uint e = lane; e < pc.experts; e += WORKGROUP) {
            uint row = (e * pc.ld_dim + c0) / 4;
            float acc = 0.0;
            for (uint i = 0; i < len; i += 4) {
                vec4 wv = w.v[row + i / 4];
                acc += dot(wv, vec4(x_chunk[i], x_chunk[i + 1], x_chunk[i + 2], x_chunk[i + 3]));
            }
            logits[e] += acc;
        }
    }
    barrier();
}

// The strictly better of two (value, index) candidates; INVALID never wins.
bool wins(float a, uint ia, float b, uint ib)
{
    return ia != INVALID && (ib == INVALID || better(a, ia, b, ib));
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
        if (taken[e] == 0 && wins(logits[e], e, value, index)) {
            value = logits[e];
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

// Σ_e exp(l_e − max_e l_e): per-invocation strided sums, then a fixed-order
// tree, so the result is the same on every run. NaN logits are skipped by
// the maximum and make the sum NaN.
float softmax_denominator(out float max_logit)
{
    uint lane = gl_LocalInvocationID.x;
    float local_max = -1.0 / 0.0;
    for (uint e = lane; e < pc.experts; e += WORKGROUP)
        if (logits[e] > local_max)
            local_max = logits[e];
    best_value[lane] = local_max;
    barrier();
    for (uint half_size = WORKGROUP / 2; half_size > 0; half_size /= 2) {
        if (lane < half_size && best_value[lane + half_size] > best_value[lane])
            best_value[lane] = best_value[lane + half_size];
        barrier();
    }
    max_logit = best_value[0];
    barrier();
    float local_sum = 0.0;
    for (uint e = lane; e < pc.experts; e += WORKGROUP)
        local_sum += exp(logits[e] - max_logit);
    best_value[lane] = local_sum;
    barrier();
    for (uint half_size = WORKGROUP / 2; half_size > 0; half_size /= 2) {
        if (lane < half_size)
            best_value[lane] += best_value[lane + half_size];
        barrier();
    }
    return best_value[0];
}

void main()
{
    uint token = flat_group_id();
    if (token >= pc.tokens)
        return;
    compute_logits(token);
    float max_logit;
    float sum = softmax_denominator(max_logit);
    barrier();
    uint chosen[16];
    for (uint j = 0; j < pc.top_k; j++)
        chosen[j] = select_best();
    if (gl_LocalInvocationID.x != 0)
        return;
    float chosen_sum = 0.0;
    float weight[16];
    for (uint j = 0; j < pc.top_k; j++) {
        weight[j] = exp(logits[chosen[j]] - max_logit) / sum;
        chosen_sum += weight[j];
    }
    UintArray ids = UintArray(pc.ids);
    FloatArray weights = FloatArray(pc.topk_weight);
    for (uint j = 0; j < pc.top_k; j++) {
        ids.v[token * pc.top_k + j] = chosen[j];
        weights.v[token * pc.top_k + j] = pc.normalize != 0 ? weight[j] / chosen_sum : weight[j];
    }
}
