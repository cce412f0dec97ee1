/* Stage VKMOE_STAGE_COMBINE: weighted sum of each token's expert outputs plus the
 * shared expert's (shaders/combine.comp). */
#include "stages.h"

typedef struct combine_push {
    VkDeviceAddress topk_weight, slot_row, expert_out, shared_out, shared_scale;
    uint32_t tokens, dim, top_k, z_texels, io_type, unit_weights;
} combine_push;
_Static_assert(sizeof(combine_push) == 64, "combine_push must mirror combine.comp");

/* Elements of a row an invocation makes, and slots it loads before summing
 * them (combine.comp): CPU devices' shape, measured there, or the GPUs'. */
vkmoe_spec vkmoe_combine_spec(const vkmoe_layer *layer)
{
    bool cpu = vkmoe_context_cpu_shaped(layer->ctx);
    return (vkmoe_spec){.count = 2, .values = {cpu ? 16 : 4, cpu ? 1 : 8}};
}

void vkmoe_combine_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceAddress base = layer->work->scratch.address;
    combine_push push = {
        .topk_weight = base + layer->plan.layout.topk_weight,
        .slot_row = base + layer->plan.layout.slot_row,
        .expert_out = layer->work->expert_out.address,
        .shared_out = p->shared_ffn_dim ? layer->work->shared_out.address : 0,
        .shared_scale = p->shared_gate ? base + layer->plan.layout.shared_scale : 0,
        .tokens = tokens,
        .dim = p->dim,
        .top_k = p->top_k,
        .z_texels = layer->act.expert_out_view != VK_NULL_HANDLE,
        .io_type = (uint32_t)p->io_type,
        .unit_weights = p->scale_expert_input,
    };
    layer->ctx->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE,
                                           layer->ctx->pipeline_layout, 1, 1,
                                           &layer->act.combine_set, 0, NULL);
    /* An invocation makes `span` consecutive elements of a row. */
    uint32_t span = vkmoe_combine_spec(layer).values[0];
    uint64_t spans = (uint64_t)tokens * vkmoe_div_up(p->dim, span);
    vkmoe_dispatch_1d(layer->ctx, cmd, layer->pipelines[VKMOE_SHADER_COMBINE], &push, sizeof(push),
                      vkmoe_div_up(spans, 256));
}
