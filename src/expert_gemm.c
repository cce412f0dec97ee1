/* Stages 5 and 6, the expert GEMMs (shaders/gemm_up.comp, gemm_down.comp,
 * shaders/common/expert_gemm.glsl). Their grids come from the scan stage
 * (indirect dispatch), so the host never learns how many rows were used. */
#include "internal.h"

typedef struct gemm_up_push {
    VkDeviceAddress expert_table, tile_expert, row_slot, hidden;
    uint32_t dim, ffn, ld_dim, ld_ffn, experts, top_k, max_tiles, pad_;
} gemm_up_push;
_Static_assert(sizeof(gemm_up_push) == 64, "gemm_up_push must mirror gemm_up.comp");

typedef struct gemm_down_push {
    VkDeviceAddress expert_table, tile_expert, row_slot, hidden, expert_out;
    uint32_t dim, ffn, ld_ffn, experts, max_tiles, pad_;
} gemm_down_push;
_Static_assert(sizeof(gemm_down_push) == 64, "gemm_down_push must mirror gemm_down.comp");

vkmoe_spec vkmoe_gemm_spec(const vkmoe_layer *layer)
{
    const vkmoe_gemm_config *g = &layer->gemm;
    return (vkmoe_spec){
        .count = 3,
        .values = {g->tile_m, g->lanes, (uint32_t)layer->params.weight_type},
    };
}

static void dispatch_indirect(vkmoe_layer *layer, VkCommandBuffer cmd, vkmoe_shader shader,
                              const void *push, uint32_t push_size, uint32_t grid)
{
    vkmoe_context *ctx = layer->ctx;
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layer->pipelines[shader]);
    ctx->vk.vkCmdPushConstants(cmd, ctx->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                               push_size, push);
    ctx->vk.vkCmdDispatchIndirect(cmd, layer->scratch.buffer,
                                  layer->layout.dispatch + grid * 3 * sizeof(uint32_t));
}

void vkmoe_gemm_up_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    (void)tokens;
    VkDeviceAddress base = layer->scratch.address;
    gemm_up_push push = {
        .expert_table = layer->expert_table.address,
        .tile_expert = base + layer->layout.tile_expert,
        .row_slot = base + layer->layout.row_slot,
        .hidden = layer->hidden.address,
        .dim = layer->params.dim,
        .ffn = layer->params.ffn_dim,
        .ld_dim = layer->ld_dim,
        .ld_ffn = layer->ld_ffn,
        .experts = layer->params.experts,
        .top_k = layer->params.top_k,
        .max_tiles = layer->max_tiles,
    };
    dispatch_indirect(layer, cmd, VKMOE_SHADER_GEMM_UP, &push, sizeof(push), 0);
}

void vkmoe_gemm_down_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    (void)tokens;
    gemm_down_push push = {
        .expert_table = layer->expert_table.address,
        .tile_expert = layer->scratch.address + layer->layout.tile_expert,
        .row_slot = layer->scratch.address + layer->layout.row_slot,
        .hidden = layer->hidden.address,
        .expert_out = layer->expert_out.address,
        .dim = layer->params.dim,
        .ffn = layer->params.ffn_dim,
        .ld_ffn = layer->ld_ffn,
        .experts = layer->params.experts,
        .max_tiles = layer->max_tiles,
    };
    dispatch_indirect(layer, cmd, VKMOE_SHADER_GEMM_DOWN, &push, sizeof(push), 1);
}
