/* Stage VKMOE_STAGE_ROUTER: x's rows padded for the GEMMs (input_rows.c), the logits
 * as a GEMM over one row per token (the expert GEMM's shader, projection
 * only), then scores, group-limited top-k, combine weights, the shared
 * expert's gate and the statistics inputs (shaders/router.comp). */
#include <stddef.h>

#include "stages.h"

typedef struct router_push {
    VkDeviceAddress logits, router_bias, selection_bias, ids, topk_weight, shared_scale, probs, lse;
    uint32_t tokens, ld_logits, experts, top_k, normalize, kind, groups, topk_groups;
    float scale, pad_;
} router_push;
_Static_assert(sizeof(router_push) == 104, "router_push must mirror router.comp");

/* One subgroup per token: the shader's reductions are subgroup operations;
 * the layer's E sizes its shared arrays. */
vkmoe_spec vkmoe_router_spec(const vkmoe_layer *layer)
{
    return (vkmoe_spec){.count = 2,
                        .values = {layer->ctx->info.subgroup_size, layer->params.experts}};
}

/* Count and scan: the layer's E sizes their shared arrays. */
vkmoe_spec vkmoe_experts_spec(const vkmoe_layer *layer)
{
    return (vkmoe_spec){.count = 1, .values = {layer->params.experts}};
}

static VkDeviceAddress address_if(bool present, VkDeviceAddress address)
{
    return present ? address : 0;
}

void vkmoe_router_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceAddress scratch = layer->work->scratch.address;
    VkDeviceAddress vectors = layer->weights.router_vectors.address;
    vkmoe_input_rows_record(layer, cmd, tokens);
    if (layer->io.routes_given)
        return; /* the rows' experts and weights are in the scratch already */
    vkmoe_barrier_compute(layer->ctx, cmd);
    vkmoe_router_gemm_pass(layer, cmd, tokens);
    vkmoe_barrier_compute(layer->ctx, cmd);
    router_push push = {
        .logits = scratch + layer->plan.layout.logits,
        .router_bias = address_if(p->router_bias, vectors),
        .selection_bias = address_if(p->selection_bias, vectors + 4ull * p->experts),
        .ids = scratch + layer->plan.layout.ids,
        .topk_weight = scratch + layer->plan.layout.topk_weight,
        .shared_scale = address_if(p->shared_gate, scratch + layer->plan.layout.shared_scale),
        .probs = address_if(p->statistics, scratch + layer->plan.layout.probs),
        .lse = address_if(p->statistics, scratch + layer->plan.layout.lse),
        .tokens = tokens,
        .ld_logits = layer->plan.ld_logits,
        .experts = p->experts,
        .top_k = p->top_k,
        .normalize = p->normalize_topk,
        .kind = (uint32_t)p->router,
        .groups = p->expert_groups,
        .topk_groups = p->topk_groups,
        .scale = p->routed_scaling_factor,
    };
    vkmoe_dispatch_1d(layer->ctx, cmd, layer->pipelines[VKMOE_SHADER_ROUTER], &push, sizeof(push),
                      tokens);
}
