/* Stages 5 and 6, the expert GEMMs (shaders/gemm_up.comp, gemm_down.comp,
 * shaders/common/expert_gemm.glsl). The routed experts' grids come from the
 * scan stage (indirect dispatch), so the host never learns how many rows
 * were used; the shared expert's pass (shared_expert.c) has a direct grid. */
#include "internal.h"

/* The GEMM grids fold row tiles into y and z, at most this many along y
 * (as scan.comp does for the indirect grids). */
#define GRID_Y 32768u

typedef struct gemm_up_push {
    VkDeviceAddress expert_table, tile_expert, row_slot, hidden, gate_bias, up_bias;
    uint32_t dim, ffn, ld_dim, ld_ffn, experts, top_k, max_tiles, rows;
    float limit, alpha;
} gemm_up_push;
_Static_assert(sizeof(gemm_up_push) == 88, "gemm_up_push must mirror gemm_up.comp");

typedef struct gemm_down_push {
    VkDeviceAddress expert_table, tile_expert, row_slot, hidden, expert_out, down_bias;
    uint32_t dim, ffn, ld_ffn, experts, max_tiles, rows;
} gemm_down_push;
_Static_assert(sizeof(gemm_down_push) == 72, "gemm_down_push must mirror gemm_down.comp");

vkmoe_spec vkmoe_gemm_spec(const vkmoe_layer *layer)
{
    const vkmoe_gemm_config *g = &layer->gemm;
    return (vkmoe_spec){
        .count = 4,
        .values = {g->tile_m, g->lanes, (uint32_t)layer->params.weight_type,
                   (uint32_t)layer->params.activation},
    };
}

static void dispatch(vkmoe_layer *layer, VkCommandBuffer cmd, VkPipeline pipeline,
                     const void *push, uint32_t push_size, int indirect_grid, uint32_t groups_x,
                     uint32_t tiles)
{
    vkmoe_context *ctx = layer->ctx;
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    ctx->vk.vkCmdPushConstants(cmd, ctx->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                               push_size, push);
    if (indirect_grid >= 0) {
        ctx->vk.vkCmdDispatchIndirect(cmd, layer->scratch.buffer,
                                      layer->layout.dispatch +
                                          (VkDeviceSize)indirect_grid * 3 * sizeof(uint32_t));
        return;
    }
    uint32_t y = tiles < GRID_Y ? tiles : GRID_Y;
    ctx->vk.vkCmdDispatch(cmd, groups_x, y, (uint32_t)vkmoe_div_up(tiles, GRID_Y));
}

static gemm_up_push up_push(const vkmoe_layer *layer, const vkmoe_gemm_rows *rows)
{
    const vkmoe_layer_params *p = &layer->params;
    return (gemm_up_push){
        .expert_table = rows->expert_table,
        .tile_expert = rows->tile_expert,
        .row_slot = rows->row_slot,
        .hidden = rows->hidden,
        .gate_bias = rows->gate_bias,
        .up_bias = rows->up_bias,
        .dim = p->dim,
        .ffn = rows->ffn,
        .ld_dim = layer->ld_dim,
        .ld_ffn = rows->ld_ffn,
        .experts = rows->experts,
        .top_k = rows->top_k,
        .max_tiles = rows->max_tiles,
        .rows = rows->rows,
        .limit = p->swiglu_limit,
        .alpha = p->swiglu_alpha,
    };
}

void vkmoe_gemm_up_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_rows *rows,
                        int indirect_grid, uint32_t tiles)
{
    gemm_up_push push = up_push(layer, rows);
    uint32_t groups_x = (uint32_t)vkmoe_div_up(rows->ld_ffn, layer->gemm.up_columns);
    dispatch(layer, cmd, layer->pipelines[VKMOE_SHADER_GEMM_UP], &push, sizeof(push),
             indirect_grid, groups_x, tiles);
}

vkmoe_spec vkmoe_router_gemm_spec(const vkmoe_layer *layer)
{
    const vkmoe_gemm_config *g = &layer->gemm;
    return (vkmoe_spec){
        .count = 4,
        .values = {g->tile_m, g->lanes, VKMOE_WEIGHT_F32, VKMOE_ACTIVATION_LINEAR},
    };
}

void vkmoe_router_gemm_pass(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_layer_params *p = &layer->params;
    uint32_t tiles = (uint32_t)vkmoe_div_up(tokens, layer->gemm.tile_m);
    vkmoe_gemm_rows rows = {
        .expert_table = layer->router_table.address,
        .hidden = layer->scratch.address + layer->layout.logits,
        .ffn = p->experts + (p->shared_gate ? 1 : 0),
        .ld_ffn = layer->ld_logits,
        .experts = 1,
        .top_k = 1,
        .max_tiles = tiles,
        .rows = tokens,
    };
    vkmoe_token_plan(layer, &rows.tile_expert, &rows.row_slot);
    gemm_up_push push = up_push(layer, &rows);
    /* A lane computes 4 columns of the one projection, as for ReLU. */
    uint32_t groups_x = (uint32_t)vkmoe_div_up(rows.ld_ffn, 4 * layer->gemm.lanes);
    dispatch(layer, cmd, layer->router_gemm, &push, sizeof(push), -1, groups_x, tiles);
}

void vkmoe_gemm_down_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_rows *rows,
                          int indirect_grid, uint32_t tiles)
{
    gemm_down_push push = {
        .expert_table = rows->expert_table,
        .tile_expert = rows->tile_expert,
        .row_slot = rows->row_slot,
        .hidden = rows->hidden,
        .expert_out = rows->out,
        .down_bias = rows->down_bias,
        .dim = layer->params.dim,
        .ffn = rows->ffn,
        .ld_ffn = rows->ld_ffn,
        .experts = rows->experts,
        .max_tiles = rows->max_tiles,
        .rows = rows->rows,
    };
    uint32_t groups_x = (uint32_t)vkmoe_div_up(layer->params.dim, layer->gemm.down_columns);
    dispatch(layer, cmd, layer->pipelines[VKMOE_SHADER_GEMM_DOWN], &push, sizeof(push),
             indirect_grid, groups_x, tiles);
}

static vkmoe_gemm_rows routed_rows(const vkmoe_layer *layer)
{
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceAddress base = layer->scratch.address, biases = layer->expert_biases.address;
    bool has_bias = p->expert_bias;
    return (vkmoe_gemm_rows){
        .expert_table = layer->expert_table.address,
        .tile_expert = base + layer->layout.tile_expert,
        .row_slot = base + layer->layout.row_slot,
        .hidden = layer->hidden.address,
        .out = layer->expert_out.address,
        .gate_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_GATE, 0) : 0,
        .up_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_UP, 0) : 0,
        .down_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_DOWN, 0) : 0,
        .ffn = p->ffn_dim,
        .ld_ffn = layer->ld_ffn,
        .experts = p->experts,
        .top_k = p->top_k,
        .max_tiles = layer->max_tiles,
        .rows = layer->max_rows,
    };
}

void vkmoe_gemm_up_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    (void)tokens;
    vkmoe_gemm_rows rows = routed_rows(layer);
    vkmoe_gemm_up_pass(layer, cmd, &rows, 0, 0);
}

void vkmoe_gemm_down_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    (void)tokens;
    vkmoe_gemm_rows rows = routed_rows(layer);
    vkmoe_gemm_down_pass(layer, cmd, &rows, 1, 0);
}
