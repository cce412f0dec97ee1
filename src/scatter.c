/* Stage VKMOE_STAGE_SCATTER: stable bucketing of slots into expert rows, dropping
 * those past an expert's capacity (shaders/scatter.comp). */
#include "stages.h"

typedef struct scatter_push {
    VkDeviceAddress ids, offsets, expert_base, row_slot, slot_row;
    uint32_t slots, blocks, tokens, top_k, capacity, pad_;
} scatter_push;
_Static_assert(sizeof(scatter_push) == 64, "scatter_push must mirror scatter.comp");

void vkmoe_scatter_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_scratch_layout *l = &layer->plan.layout;
    VkDeviceAddress base = layer->work->scratch.address;
    uint32_t slots = tokens * layer->params.top_k;
    uint32_t blocks = (uint32_t)vkmoe_div_up(slots, VKMOE_BLOCK_SLOTS);
    scatter_push push = {
        .ids = base + l->ids,
        .offsets = base + l->block_counts,
        .expert_base = base + l->expert_base,
        .row_slot = base + l->row_slot,
        .slot_row = base + l->slot_row,
        .slots = slots,
        .blocks = blocks,
        .tokens = tokens,
        .top_k = layer->params.top_k,
        .capacity = vkmoe_params_capacity(&layer->params, tokens),
    };
    vkmoe_dispatch_1d(layer->ctx, cmd, layer->pipelines[VKMOE_SHADER_SCATTER], &push, sizeof(push),
                      blocks);
}
