/* Stages 5 and 6, the expert GEMMs (shaders/gemm_up.comp, gemm_down.comp,
 * shaders/common/expert_gemm.glsl), on the layer's path: each stage's shader
 * is built once per path. The routed experts' grids come from the
 * scan stage (indirect dispatch), so the host never learns how many rows
 * were used; the shared expert's pass (shared_expert.c) has a direct grid. */
#include "stages.h"

_Static_assert(VKMOE_ACTIVATION_LINEAR > VKMOE_ACTIVATION_SWIGLU_CLAMPED,
               "the router's projection-only activation is past the public ones");

/* The GEMM grids fold row tiles into y and z, at most this many along y
 * (as scan.comp does for the indirect grids). */
#define GRID_Y 32768u

typedef struct gemm_up_push {
    VkDeviceAddress tile_expert, row_slot, hidden, gate_bias, up_bias;
    uint32_t ffn, ld_dim, ld_ffn, top_k, max_tiles, rows, expert_first, expert_count,
        matrix_texels;
    float limit, alpha;
} gemm_up_push;
_Static_assert(sizeof(gemm_up_push) == 88, "gemm_up_push must mirror gemm_up.comp");

typedef struct gemm_down_push {
    VkDeviceAddress tile_expert, row_slot, expert_out, down_bias;
    uint32_t dim, ld_ffn, max_tiles, rows, expert_first, expert_count, matrix_texels, pad_;
} gemm_down_push;
_Static_assert(sizeof(gemm_down_push) == 64, "gemm_down_push must mirror gemm_down.comp");

vkmoe_spec vkmoe_gemm_spec(const vkmoe_layer *layer, vkmoe_expert_matrix matrix)
{
    const vkmoe_gemm_config *g = &layer->gemm;
    return (vkmoe_spec){
        .count = 4,
        .values = {g->tile_m, g->workgroup, (uint32_t)vkmoe_matrix_type(&layer->params, matrix),
                   (uint32_t)layer->params.activation},
    };
}

vkmoe_shader vkmoe_gemm_shader(const vkmoe_layer *layer, vkmoe_shader stage)
{
    bool up = stage == VKMOE_SHADER_GEMM_UP;
    switch (layer->gemm.path) {
    case VKMOE_GEMM_TILED:
        return up ? VKMOE_SHADER_GEMM_UP_TILED : VKMOE_SHADER_GEMM_DOWN_TILED;
    case VKMOE_GEMM_COOPMAT:
        if (layer->ctx->options.emulated_matrix_cores)
            return up ? VKMOE_SHADER_GEMM_UP_COOPMAT_EMULATED
                      : VKMOE_SHADER_GEMM_DOWN_COOPMAT_EMULATED;
        return up ? VKMOE_SHADER_GEMM_UP_COOPMAT : VKMOE_SHADER_GEMM_DOWN_COOPMAT;
    default:
        return stage;
    }
}

/* One dispatch per source: each covers every row tile and works on the
 * tiles whose expert its weight views hold. `push` points at the pass's
 * push block and `source_fields` at its expert_first, expert_count and
 * matrix_texels, filled in per source. */
static void dispatch(vkmoe_layer *layer, VkCommandBuffer cmd, VkPipeline pipeline,
                     const vkmoe_gemm_rows *rows, void *push, uint32_t push_size,
                     uint32_t *source_fields, int indirect_grid, uint32_t groups_x,
                     uint32_t tiles)
{
    vkmoe_context *ctx = layer->ctx;
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    for (uint32_t s = 0; s < rows->source_count; s++) {
        const vkmoe_gemm_source *source = &rows->sources[s];
        source_fields[0] = source->expert_first;
        source_fields[1] = source->expert_count;
        source_fields[2] = source->matrix_texels;
        ctx->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE,
                                        ctx->pipeline_layout, 1, 1, &source->set, 0, NULL);
        ctx->vk.vkCmdPushConstants(cmd, ctx->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                   push_size, push);
        if (indirect_grid >= 0) {
            ctx->vk.vkCmdDispatchIndirect(cmd, layer->scratch.buffer,
                                          layer->layout.dispatch + (VkDeviceSize)indirect_grid *
                                                                       3 * sizeof(uint32_t));
            continue;
        }
        uint32_t y = tiles < GRID_Y ? tiles : GRID_Y;
        ctx->vk.vkCmdDispatch(cmd, groups_x, y, (uint32_t)vkmoe_div_up(tiles, GRID_Y));
    }
}

static gemm_up_push up_push(const vkmoe_layer *layer, const vkmoe_gemm_rows *rows)
{
    const vkmoe_layer_params *p = &layer->params;
    return (gemm_up_push){
        .tile_expert = rows->tile_expert,
        .row_slot = rows->row_slot,
        .hidden = rows->hidden,
        .gate_bias = rows->gate_bias,
        .up_bias = rows->up_bias,
        .ffn = rows->ffn,
        .ld_dim = layer->ld_dim,
        .ld_ffn = rows->ld_ffn,
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
    dispatch(layer, cmd, layer->pipelines[VKMOE_SHADER_GEMM_UP], rows, &push, sizeof(push),
             &push.expert_first, indirect_grid, groups_x, tiles);
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
        .sources = &layer->router_source,
        .source_count = 1,
        .hidden = layer->scratch.address + layer->layout.logits,
        .ffn = p->experts + (p->shared_gate ? 1 : 0),
        .ld_ffn = layer->ld_logits,
        .top_k = 1,
        .max_tiles = tiles,
        .rows = tokens,
    };
    vkmoe_token_plan(layer, &rows.tile_expert, &rows.row_slot);
    gemm_up_push push = up_push(layer, &rows);
    /* One projection: a lane computes 8 columns, as for ReLU. */
    uint32_t groups_x = (uint32_t)vkmoe_div_up(rows.ld_ffn, 8 * layer->gemm.lanes);
    dispatch(layer, cmd, layer->router_gemm, &rows, &push, sizeof(push), &push.expert_first, -1,
             groups_x, tiles);
}

void vkmoe_gemm_down_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_rows *rows,
                          int indirect_grid, uint32_t tiles)
{
    gemm_down_push push = {
        .tile_expert = rows->tile_expert,
        .row_slot = rows->row_slot,
        .expert_out = rows->out,
        .down_bias = rows->down_bias,
        .dim = layer->params.dim,
        .ld_ffn = rows->ld_ffn,
        .max_tiles = rows->max_tiles,
        .rows = rows->rows,
    };
    uint32_t groups_x = (uint32_t)vkmoe_div_up(layer->params.dim, layer->gemm.down_columns);
    dispatch(layer, cmd, layer->pipelines[VKMOE_SHADER_GEMM_DOWN], rows, &push, sizeof(push),
             &push.expert_first, indirect_grid, groups_x, tiles);
}

/* The routed experts' rows, read with the sources of the up or down array. */
static vkmoe_gemm_rows routed_rows(const vkmoe_layer *layer, vkmoe_expert_matrix matrices)
{
    const vkmoe_expert_array *array = &layer->experts[matrices];
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceAddress base = layer->scratch.address, biases = layer->expert_biases.address;
    bool has_bias = p->expert_bias;
    return (vkmoe_gemm_rows){
        .sources = array->sources,
        .source_count = array->chunk_count,
        .tile_expert = base + layer->layout.tile_expert,
        .row_slot = base + layer->layout.row_slot,
        .hidden = layer->hidden.address,
        .out = layer->expert_out.address,
        .gate_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_GATE, 0) : 0,
        .up_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_UP, 0) : 0,
        .down_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_DOWN, 0) : 0,
        .ffn = p->ffn_dim,
        .ld_ffn = layer->ld_ffn,
        .top_k = p->top_k,
        .max_tiles = layer->max_tiles,
        .rows = layer->max_rows,
    };
}

void vkmoe_gemm_up_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    (void)tokens;
    vkmoe_gemm_rows rows = routed_rows(layer, VKMOE_EXPERT_UP);
    vkmoe_gemm_up_pass(layer, cmd, &rows, 0, 0);
}

void vkmoe_gemm_down_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    (void)tokens;
    vkmoe_gemm_rows rows = routed_rows(layer, VKMOE_EXPERT_DOWN);
    vkmoe_gemm_down_pass(layer, cmd, &rows, 1, 0);
}
