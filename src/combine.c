/* Stage 7, combine: weighted sum of each token's expert outputs
 * (shaders/combine.comp). */
#include "internal.h"

typedef struct combine_push {
    VkDeviceAddress topk_weight, slot_row, expert_out;
    uint32_t tokens, dim, top_k, pad_;
} combine_push;
_Static_assert(sizeof(combine_push) == 40, "combine_push must mirror combine.comp");

void vkmoe_combine_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    VkDeviceAddress base = layer->scratch.address;
    combine_push push = {
        .topk_weight = base + layer->layout.topk_weight,
        .slot_row = base + layer->layout.slot_row,
        .expert_out = layer->expert_out.address,
        .tokens = tokens,
        .dim = layer->params.dim,
        .top_k = layer->params.top_k,
    };
    uint64_t elements = (uint64_t)tokens * layer->params.dim;
    vkmoe_dispatch_1d(layer->ctx, cmd, layer->pipelines[VKMOE_SHADER_COMBINE], &push,
                      sizeof(push), vkmoe_div_up(elements, 256));
}
