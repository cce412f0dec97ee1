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

uint32_t vkmoe_combine_blocks(const vkmoe_layer *layer)
{
    return (uint32_t)vkmoe_div_up(layer->params.dim, layer->ctx->gemv_columns);
}

bool vkmoe_combine_in_down(const vkmoe_layer *layer, uint32_t tokens)
{
    return tokens == 1 && vkmoe_router_buckets(layer, tokens) && vkmoe_experts_resident(layer) &&
           vkmoe_gemm_kernel_for(layer, tokens)->path == VKMOE_GEMM_GEMV &&
           (!layer->params.shared_ffn_dim || vkmoe_shared_beside(layer, tokens));
}

bool vkmoe_combine_runs(const vkmoe_layer *layer, uint32_t tokens)
{
    return !vkmoe_combine_in_down(layer, tokens);
}

void vkmoe_combine_in_down_fields(const vkmoe_layer *layer, uint32_t tokens,
                                  vkmoe_down_combine *out)
{
    *out = (vkmoe_down_combine){0};
    if (!vkmoe_combine_in_down(layer, tokens))
        return;
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceAddress base = layer->work->scratch.address;
    /* One token's k slots go to k different experts, each kept (a
     * capacity is at least 1): k rows, and the shared expert's, finish
     * each column block. */
    uint32_t arrivals = p->top_k + (p->shared_ffn_dim ? 1 : 0);
    *out = (vkmoe_down_combine){
        .arrivals = vkmoe_combine_arrivals(layer),
        .routed_out = layer->work->expert_out.address,
        .topk_weight = base + layer->plan.layout.topk_weight,
        .slot_row = base + layer->plan.layout.slot_row,
        .shared_out = p->shared_ffn_dim ? layer->work->shared_out.address : 0,
        .shared_scale = p->shared_gate ? base + layer->plan.layout.shared_scale : 0,
        .packed = arrivals | p->top_k << 8 | (uint32_t)p->io_type << 16 |
                  (uint32_t)(p->scale_expert_input ? 1 : 0) << 24,
    };
}
