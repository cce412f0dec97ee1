/* Stage VKMOE_STAGE_HISTOGRAM ("count"): per-block expert histograms
 * (shaders/count.comp). */
#include "stages.h"

typedef struct count_push {
    VkDeviceAddress ids, block_counts;
    uint32_t slots, blocks, experts, tokens, top_k, pad_;
} count_push;
_Static_assert(sizeof(count_push) == 40, "count_push must mirror count.comp");

void vkmoe_count_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    uint32_t slots = tokens * layer->params.top_k;
    uint32_t blocks = (uint32_t)vkmoe_div_up(slots, VKMOE_BLOCK_SLOTS);
    count_push push = {
        .ids = layer->work->scratch.address + layer->plan.layout.ids,
        .block_counts = layer->work->scratch.address + layer->plan.layout.block_counts,
        .slots = slots,
        .blocks = blocks,
        .experts = layer->params.experts,
        .tokens = tokens,
        .top_k = layer->params.top_k,
    };
    vkmoe_dispatch_1d(layer->ctx, cmd, layer->pipelines[VKMOE_SHADER_COUNT], &push, sizeof(push),
                      blocks);
}
