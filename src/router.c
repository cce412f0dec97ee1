/* Stage 1, router: logits, softmax, top-k (shaders/router.comp). */
#include <stddef.h>

#include "internal.h"

#define ROUTER_WORKGROUP 64u

typedef struct router_push {
    VkDeviceAddress router, ids, topk_weight;
    uint32_t tokens, dim, ld_dim, experts, top_k, normalize;
} router_push;
_Static_assert(sizeof(router_push) == 48, "router_push must mirror router.comp");

vkmoe_spec vkmoe_router_spec(const vkmoe_layer *layer)
{
    (void)layer;
    return (vkmoe_spec){.count = 1, .values = {ROUTER_WORKGROUP}};
}

void vkmoe_router_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceAddress scratch = layer->scratch.address;
    router_push push = {
        .router = layer->router.address,
        .ids = scratch + layer->layout.ids,
        .topk_weight = scratch + layer->layout.topk_weight,
        .tokens = tokens,
        .dim = p->dim,
        .ld_dim = layer->ld_dim,
        .experts = p->experts,
        .top_k = p->top_k,
        .normalize = p->normalize_topk,
    };
    vkmoe_dispatch_1d(layer->ctx, cmd, layer->pipelines[VKMOE_SHADER_ROUTER], &push, sizeof(push),
                      tokens);
}
