/* CPU reference: see reference.h. Written from the formulas, not from the
 * shaders, except where the contract fixes an order (ties, NaN ranking). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "reference.h"

static bool ranks_above(double a, uint32_t ia, double b, uint32_t ib)
{
    if (isnan(a) != isnan(b))
        return isnan(b);
    if (!isnan(a) && a != b)
        return a > b;
    return ia < ib;
}

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

/* The best of values[first .. first + n) not excluded, or UINT32_MAX. */
static uint32_t best_of(const double *values, const bool *excluded, uint32_t first, uint32_t n)
{
    uint32_t best = UINT32_MAX;
    for (uint32_t i = first; i < first + n; i++)
        if (!excluded[i] && (best == UINT32_MAX || ranks_above(values[i], i, values[best], best)))
            best = i;
    return best;
}

static void compute_logits(const vkmoe_ref_layer *l, const float *x, const float *weights,
                           uint32_t rows, double *logits)
{
    for (uint32_t e = 0; e < rows; e++) {
        double acc = 0;
        for (uint32_t d = 0; d < l->p.dim; d++)
            acc += (double)x[d] * weights[(size_t)e * l->p.dim + d];
        logits[e] = acc + (l->p.router_bias ? l->router_bias[e] : 0.0);
    }
}

/* max_e l_e (NaN skipped) and Σ_e exp(l_e − max). */
static double softmax_sum(const double *logits, uint32_t n, double *max_logit)
{
    *max_logit = -INFINITY;
    for (uint32_t e = 0; e < n; e++)
        if (logits[e] > *max_logit)
            *max_logit = logits[e];
    double sum = 0;
    for (uint32_t e = 0; e < n; e++)
        sum += exp(logits[e] - *max_logit);
    return sum;
}

/* Group score: the best key, or with sigmoid scores the two best summed. */
static double score_group(const vkmoe_ref_layer *l, const double *key, uint32_t group)
{
    uint32_t size = l->p.experts / l->p.expert_groups;
    bool excluded[512] = {false};
    uint32_t first = best_of(key, excluded, group * size, size);
    if (l->p.router != VKMOE_ROUTER_SIGMOID_TOPK)
        return key[first];
    excluded[first] = true;
    return key[first] + key[best_of(key, excluded, group * size, size)];
}

/* Marks every expert outside the topk_groups best groups as excluded. */
static void limit_groups(const vkmoe_ref_layer *l, const double *key, bool *excluded)
{
    uint32_t groups = l->p.expert_groups, size = l->p.experts / groups;
    double scores[16];
    bool kept[16] = {false};
    for (uint32_t g = 0; g < groups; g++)
        scores[g] = score_group(l, key, g);
    for (uint32_t round = 0; round < l->p.topk_groups; round++)
        kept[best_of(scores, kept, 0, groups)] = true;
    for (uint32_t e = 0; e < l->p.experts; e++)
        excluded[e] = !kept[e / size];
}

static void route_token(const vkmoe_ref_layer *l, const float *x, uint32_t *ids, double *weights)
{
    const vkmoe_layer_params *p = &l->p;
    double logits[512], key[512];
    bool excluded[512] = {false};
    compute_logits(l, x, l->router, p->experts, logits);
    for (uint32_t e = 0; e < p->experts; e++)
        key[e] = p->router != VKMOE_ROUTER_SIGMOID_TOPK
                     ? logits[e]
                     : sigmoid(logits[e]) + (p->selection_bias ? l->selection_bias[e] : 0.0);
    if (p->expert_groups > 1)
        limit_groups(l, key, excluded);
    for (uint32_t j = 0; j < p->top_k; j++) {
        ids[j] = best_of(key, excluded, 0, p->experts);
        excluded[ids[j]] = true;
    }
    double max_logit, denominator = softmax_sum(logits, p->experts, &max_logit), sum = 0;
    for (uint32_t j = 0; j < p->top_k; j++) {
        double v = logits[ids[j]];
        weights[j] = p->router == VKMOE_ROUTER_SOFTMAX_TOPK   ? exp(v - max_logit) / denominator
                     : p->router == VKMOE_ROUTER_SIGMOID_TOPK ? sigmoid(v)
                                                              : exp(v - logits[ids[0]]);
        sum += weights[j];
    }
    bool divide = p->normalize_topk || p->router == VKMOE_ROUTER_TOPK_SOFTMAX;
    double divisor = p->router == VKMOE_ROUTER_SIGMOID_TOPK ? sum + 1e-20 : sum;
    for (uint32_t j = 0; j < p->top_k; j++)
        weights[j] = (divide ? weights[j] / divisor : weights[j]) * p->routed_scaling_factor;
}

void vkmoe_ref_route(const vkmoe_ref_layer *layer, uint32_t tokens, const float *x, uint32_t *ids,
                     double *weights)
{
    for (uint32_t t = 0; t < tokens; t++)
        route_token(layer, x + (size_t)t * layer->p.dim, ids + (size_t)t * layer->p.top_k,
                    weights + (size_t)t * layer->p.top_k);
}

void vkmoe_ref_router_figures(const vkmoe_ref_layer *l, const float *x, double *probs,
                              double *lse, double *shared_scale)
{
    uint32_t experts = l->p.experts;
    double logits[512];
    compute_logits(l, x, l->router, experts, logits);
    double max_logit, sum = softmax_sum(logits, experts, &max_logit), sigmoid_sum = 0;
    for (uint32_t e = 0; e < experts; e++)
        sigmoid_sum += sigmoid(logits[e]);
    for (uint32_t e = 0; probs && e < experts; e++)
        probs[e] = l->p.router == VKMOE_ROUTER_SIGMOID_TOPK ? sigmoid(logits[e]) / sigmoid_sum
                                                            : exp(logits[e] - max_logit) / sum;
    if (lse)
        *lse = max_logit + log(sum);
    if (shared_scale) {
        double gate = 0;
        for (uint32_t d = 0; l->p.shared_gate && d < l->p.dim; d++)
            gate += (double)x[d] * l->shared_gate_weights[d];
        *shared_scale = l->p.shared_gate ? sigmoid(gate) : 1.0;
    }
}

static uint32_t capacity_of(const vkmoe_layer_params *p, uint32_t tokens)
{
    if (p->capacity_factor == 0)
        return UINT32_MAX;
    return (uint32_t)ceil((double)p->capacity_factor * tokens * p->top_k / p->experts);
}

void vkmoe_ref_keep(const vkmoe_ref_layer *layer, uint32_t tokens, const uint32_t *ids,
                    bool *kept)
{
    uint32_t k = layer->p.top_k, capacity = capacity_of(&layer->p, tokens);
    uint32_t *used = calloc(layer->p.experts, sizeof(*used));
    for (uint32_t j = 0; j < k; j++)
        for (uint32_t t = 0; t < tokens; t++) {
            uint32_t s = t * k + j;
            kept[s] = used[ids[s]] < capacity;
            used[ids[s]] += kept[s];
        }
    free(used);
}

uint32_t vkmoe_ref_bucket(const uint32_t *ids, uint32_t tokens, uint32_t top_k, uint32_t experts,
                          uint32_t capacity, uint32_t tile_rows, uint32_t max_rows,
                          uint32_t *count, uint32_t *base, uint32_t *row_slot, uint32_t *slot_row,
                          uint32_t *tile_expert)
{
    uint32_t slots = tokens * top_k;
    memset(count, 0, experts * sizeof(*count));
    for (uint32_t s = 0; s < slots; s++)
        count[ids[s]]++;
    uint32_t rows = 0;
    for (uint32_t e = 0; e < experts; e++) {
        base[e] = rows;
        uint32_t kept = count[e] < capacity ? count[e] : capacity;
        rows += (kept + tile_rows - 1) / tile_rows * tile_rows;
    }
    for (uint32_t r = 0; r < max_rows; r++)
        row_slot[r] = UINT32_MAX;
    for (uint32_t t = 0; t < max_rows / tile_rows; t++)
        tile_expert[t] = UINT32_MAX;
    uint32_t *next = calloc(experts, sizeof(*next));
    for (uint32_t j = 0; j < top_k; j++)
        for (uint32_t t = 0; t < tokens; t++) {
            uint32_t s = t * top_k + j, e = ids[s];
            slot_row[s] = UINT32_MAX;
            if (next[e] >= capacity)
                continue;
            uint32_t row = base[e] + next[e]++;
            row_slot[row] = s;
            slot_row[s] = row;
        }
    for (uint32_t e = 0; e < experts; e++)
        for (uint32_t r = base[e]; r < base[e] + next[e]; r += tile_rows)
            tile_expert[r / tile_rows] = e;
    free(next);
    return rows;
}

/* One FFN's hidden row: w1 (NULL without a gate) and w3 are [ffn][dim],
 * b1 and b3 [ffn] or NULL. */
static void ffn_up(const vkmoe_layer_params *p, const float *w1, const float *w3,
                   const float *b1, const float *b3, uint32_t ffn, const float *x, double *h)
{
    for (uint32_t f = 0; f < ffn; f++) {
        double g = b1 ? b1[f] : 0.0, u = b3 ? b3[f] : 0.0;
        for (uint32_t d = 0; d < p->dim; d++) {
            g += w1 ? (double)x[d] * w1[(size_t)f * p->dim + d] : 0.0;
            u += (double)x[d] * w3[(size_t)f * p->dim + d];
        }
        if (p->activation == VKMOE_ACTIVATION_RELU) {
            h[f] = u > 0 ? u : 0;
        } else if (p->activation == VKMOE_ACTIVATION_SWIGLU_CLAMPED) {
            double limit = p->swiglu_limit;
            g = g < limit ? g : limit;
            u = u < -limit ? -limit : u > limit ? limit : u;
            h[f] = (u + 1) * g * sigmoid(p->swiglu_alpha * g);
        } else {
            h[f] = g * sigmoid(g) * u;
        }
    }
}

/* z [dim] = h·w2ᵀ + b2 for w2 [dim][ffn]. */
static void ffn_down(const vkmoe_layer_params *p, const float *w2, const float *b2, uint32_t ffn,
                     const double *h, double *z)
{
    for (uint32_t d = 0; d < p->dim; d++) {
        double acc = b2 ? b2[d] : 0.0;
        for (uint32_t f = 0; f < ffn; f++)
            acc += h[f] * w2[(size_t)d * ffn + f];
        z[d] = acc;
    }
}

void vkmoe_ref_expert_up(const vkmoe_ref_layer *l, uint32_t expert, const float *x, double *h)
{
    const vkmoe_layer_params *p = &l->p;
    size_t matrix = (size_t)p->ffn_dim * p->dim, vector = (size_t)expert * p->ffn_dim;
    bool gated = p->activation != VKMOE_ACTIVATION_RELU, bias = p->expert_bias;
    ffn_up(p, gated ? l->gate + expert * matrix : NULL, l->up + expert * matrix,
           bias && gated ? l->gate_bias + vector : NULL, bias ? l->up_bias + vector : NULL,
           p->ffn_dim, x, h);
}

void vkmoe_ref_expert_down(const vkmoe_ref_layer *l, uint32_t expert, const double *h, double *z)
{
    const vkmoe_layer_params *p = &l->p;
    ffn_down(p, l->down + expert * (size_t)p->dim * p->ffn_dim,
             p->expert_bias ? l->down_bias + (size_t)expert * p->dim : NULL, p->ffn_dim, h, z);
}

void vkmoe_ref_shared(const vkmoe_ref_layer *l, const float *x, double *out)
{
    const vkmoe_layer_params *p = &l->p;
    double *h = malloc(p->shared_ffn_dim * sizeof(*h));
    bool gated = p->activation != VKMOE_ACTIVATION_RELU;
    ffn_up(p, gated ? l->shared_gate : NULL, l->shared_up, NULL, NULL, p->shared_ffn_dim, x, h);
    ffn_down(p, l->shared_down, NULL, p->shared_ffn_dim, h, out);
    free(h);
}

void vkmoe_ref_forward(const vkmoe_ref_layer *l, uint32_t tokens, const float *x, double *y)
{
    const vkmoe_layer_params *p = &l->p;
    size_t slots = (size_t)tokens * p->top_k;
    uint32_t *ids = malloc(slots * sizeof(*ids));
    double *weights = malloc(slots * sizeof(*weights));
    bool *kept = malloc(slots * sizeof(*kept));
    double *h = malloc(p->ffn_dim * sizeof(*h));
    double *z = malloc(p->dim * sizeof(*z));
    vkmoe_ref_route(l, tokens, x, ids, weights);
    vkmoe_ref_keep(l, tokens, ids, kept);
    for (uint32_t t = 0; t < tokens; t++) {
        const float *xt = x + (size_t)t * p->dim;
        double *yt = y + (size_t)t * p->dim;
        memset(yt, 0, p->dim * sizeof(*yt));
        for (uint32_t j = 0; j < p->top_k; j++) {
            size_t s = (size_t)t * p->top_k + j;
            if (!kept[s])
                continue;
            vkmoe_ref_expert_up(l, ids[s], xt, h);
            vkmoe_ref_expert_down(l, ids[s], h, z);
            for (uint32_t d = 0; d < p->dim; d++)
                yt[d] += weights[s] * z[d];
        }
        if (!p->shared_ffn_dim)
            continue;
        double scale;
        vkmoe_ref_router_figures(l, xt, NULL, NULL, &scale);
        vkmoe_ref_shared(l, xt, z);
        for (uint32_t d = 0; d < p->dim; d++)
            yt[d] += scale * z[d];
    }
    free(ids);
    free(weights);
    free(kept);
    free(h);
    free(z);
}

void vkmoe_ref_load_stats(const vkmoe_ref_layer *l, uint32_t tokens, const float *x,
                          vkmoe_load_stats *stats, uint32_t *routed, uint32_t *dropped,
                          double *mean_probability)
{
    const vkmoe_layer_params *p = &l->p;
    size_t slots = (size_t)tokens * p->top_k;
    uint32_t *ids = malloc(slots * sizeof(*ids));
    double *weights = malloc(slots * sizeof(*weights)), probs[512];
    vkmoe_ref_route(l, tokens, x, ids, weights);
    memset(routed, 0, p->experts * sizeof(*routed));
    memset(mean_probability, 0, p->experts * sizeof(*mean_probability));
    for (size_t s = 0; s < slots; s++)
        routed[ids[s]]++;
    *stats = (vkmoe_load_stats){.tokens = tokens, .capacity = capacity_of(p, tokens)};
    for (uint32_t t = 0; t < tokens; t++) {
        double lse;
        vkmoe_ref_router_figures(l, x + (size_t)t * p->dim, probs, &lse, NULL);
        for (uint32_t e = 0; e < p->experts; e++)
            mean_probability[e] += probs[e] / tokens;
        stats->z_loss += lse * lse / tokens;
    }
    for (uint32_t e = 0; e < p->experts; e++) {
        dropped[e] = routed[e] > stats->capacity ? routed[e] - stats->capacity : 0;
        stats->dropped += dropped[e];
        stats->balance_loss += p->experts * ((double)routed[e] / tokens) * mean_probability[e];
    }
    free(ids);
    free(weights);
}

uint16_t vkmoe_ref_f32_to_f16(float value) { return vkmoe_f32_to_f16(value); }
float vkmoe_ref_f16_to_f32(uint16_t value) { return vkmoe_f16_to_f32(value); }
uint16_t vkmoe_ref_f32_to_bf16(float value) { return vkmoe_f32_to_bf16(value); }
float vkmoe_ref_bf16_to_f32(uint16_t value) { return vkmoe_bf16_to_f32(value); }

void vkmoe_ref_round_weights(vkmoe_weight_type type, float *values, size_t n)
{
    size_t bytes = vkmoe_weight_bytes(type, n);
    void *encoded = malloc(bytes ? bytes : 1);
    if (type == VKMOE_WEIGHT_F32 || !encoded) {
        free(encoded);
        return;
    }
    /* The k-quants' searches can pick another block for the values a block
     * decodes to, so go on to a fixed point: what encoding it again (as an
     * upload does) reproduces exactly. Two rounds are enough in practice. */
    float *before = malloc((n ? n : 1) * sizeof(*before));
    for (int round = 0; before && round < 8; round++) {
        memcpy(before, values, n * sizeof(*values));
        vkmoe_quantize(type, values, n, encoded, bytes);
        vkmoe_dequantize(type, encoded, n, values);
        if (!memcmp(before, values, n * sizeof(*values)))
            break;
    }
    free(before);
    free(encoded);
}

size_t vkmoe_ref_encode_weights(vkmoe_weight_type type, const float *src, size_t n, void *dst)
{
    size_t bytes = vkmoe_weight_bytes(type, n);
    return vkmoe_quantize(type, src, n, dst, bytes) == VKMOE_OK ? bytes : 0;
}

vkmoe_ref_error vkmoe_ref_compare(const float *a, const double *b, size_t n)
{
    vkmoe_ref_error err = {0, 0};
    double scale = 1;
    for (size_t i = 0; i < n; i++)
        if (fabs(b[i]) > scale)
            scale = fabs(b[i]);
    for (size_t i = 0; i < n; i++) {
        if (a[i] == b[i])
            continue;
        if (isnan(a[i]) || isnan(b[i])) {
            if (isnan(a[i]) != isnan(b[i]))
                err.max_abs = NAN;
            continue;
        }
        double diff = fabs((double)a[i] - b[i]);
        if (diff > err.max_abs || isnan(diff))
            err.max_abs = diff;
    }
    err.max_rel = err.max_abs / scale;
    return err;
}
