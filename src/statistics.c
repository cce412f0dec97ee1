/* Load statistics of the last forward, from the per-token figures the
 * router left in the scratch memory; summed on the host in double, in
 * token order, so the same forward always gives the same figures. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "layer.h"
#include "params.h"

/* Σ_t probs[t][e] for every e, and Σ_t lse[t]², reading the per-token
 * figures back a bounded batch at a time. */
static vkmoe_status sum_token_figures(const vkmoe_layer *layer, uint32_t tokens, double *prob_sum,
                                      double *lse_square_sum)
{
    uint32_t experts = layer->params.experts;
    uint32_t batch = (uint32_t)(65536 / experts) + 1;
    float *probs = vkmoe_malloc((size_t)batch * experts * sizeof(*probs));
    float *lse = vkmoe_malloc((size_t)batch * sizeof(*lse));
    vkmoe_status status =
        probs && lse ? VKMOE_OK
                     : vkmoe_fail(layer->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    memset(prob_sum, 0, experts * sizeof(*prob_sum));
    *lse_square_sum = 0;
    for (uint32_t t0 = 0; t0 < tokens && status == VKMOE_OK; t0 += batch) {
        uint32_t n = tokens - t0 < batch ? tokens - t0 : batch;
        status = vkmoe_buffer_read(layer->ctx, &layer->work->scratch,
                                   layer->plan.layout.probs + 4ull * t0 * experts, probs,
                                   4ull * n * experts);
        if (status == VKMOE_OK)
            status = vkmoe_buffer_read(layer->ctx, &layer->work->scratch,
                                       layer->plan.layout.lse + 4ull * t0, lse, 4ull * n);
        for (uint32_t t = 0; t < n && status == VKMOE_OK; t++) {
            for (uint32_t e = 0; e < experts; e++)
                prob_sum[e] += probs[(size_t)t * experts + e];
            *lse_square_sum += (double)lse[t] * lse[t];
        }
    }
    free(probs);
    free(lse);
    return status;
}

static void summarise(const vkmoe_layer *layer, const uint32_t *routed, const double *prob_sum,
                      double lse_square_sum, vkmoe_load_stats *stats, uint32_t *dropped,
                      double *mean_probability)
{
    const vkmoe_layer_params *p = &layer->params;
    uint32_t tokens = layer->io.last_tokens;
    stats->tokens = tokens;
    stats->capacity = vkmoe_params_capacity(p, tokens);
    stats->dropped = 0;
    stats->balance_loss = 0;
    for (uint32_t e = 0; e < p->experts; e++) {
        uint32_t lost = routed[e] > stats->capacity ? routed[e] - stats->capacity : 0;
        double mean = prob_sum[e] / tokens;
        stats->dropped += lost;
        stats->balance_loss += (double)routed[e] / tokens * mean;
        if (dropped)
            dropped[e] = lost;
        if (mean_probability)
            mean_probability[e] = mean;
    }
    stats->balance_loss *= p->experts;
    stats->z_loss = lse_square_sum / tokens;
}

vkmoe_status vkmoe_layer_load_stats(const vkmoe_layer *layer, vkmoe_load_stats *stats,
                                    uint32_t *routed, uint32_t *dropped, double *mean_probability,
                                    uint32_t n)
{
    const char *fn = "vkmoe_layer_load_stats";
    VKMOE_REQUIRE(NULL, layer && stats, "%s: layer and stats must not be NULL", fn);
    const vkmoe_layer_params *p = &layer->params;
    VKMOE_REQUIRE(layer->ctx, (!routed && !dropped && !mean_probability) || n >= p->experts,
                  "%s: the arrays must hold %u values (n = %u)", fn, p->experts, n);
    if (!p->statistics)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_STATE,
                          "%s: the layer was created without params.statistics", fn);
    VKMOE_TRY(vkmoe_layer_check_results(layer, fn));
    uint32_t *counts = vkmoe_malloc(p->experts * sizeof(*counts));
    double *prob_sum = vkmoe_malloc(p->experts * sizeof(*prob_sum));
    double lse_square_sum = 0;
    vkmoe_status status =
        counts && prob_sum
            ? VKMOE_OK
            : vkmoe_fail(layer->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (status == VKMOE_OK)
        status = vkmoe_layer_expert_counts(layer, counts, p->experts);
    if (status == VKMOE_OK)
        status = sum_token_figures(layer, layer->io.last_tokens, prob_sum, &lse_square_sum);
    if (status == VKMOE_OK) {
        summarise(layer, counts, prob_sum, lse_square_sum, stats, dropped, mean_probability);
        if (routed)
            memcpy(routed, counts, p->experts * sizeof(*counts));
    }
    free(counts);
    free(prob_sum);
    return status;
}
