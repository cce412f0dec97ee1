/* Stage VKMOE_STAGE_SHARED: the shared expert, an always-on FFN, run through the same
 * GEMM shaders as the routed experts with a plan in which row r is token r
 * and every tile belongs to one expert. Its output waits in shared_out for
 * the combine stage, which scales it by the shared gate and adds it. */
#include "stages.h"

bool vkmoe_shared_runs(const vkmoe_layer *layer, uint32_t tokens)
{
    (void)tokens;
    return layer->params.shared_ffn_dim != 0;
}

void vkmoe_shared_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    uint32_t tiles = (uint32_t)vkmoe_div_up(tokens, layer->gemm.tile_m);
    vkmoe_gemm_rows rows = {
        .sources = layer->weights.shared[VKMOE_EXPERT_UP].sources,
        .source_count = 1,
        .hidden = layer->work->hidden.address,
        .out = layer->work->shared_out.address,
        .ffn = layer->params.shared_ffn_dim,
        .ld_ffn = layer->plan.ld_shared,
        .top_k = 1,
        .max_tiles = tiles,
        .rows = tokens,
    };
    vkmoe_token_plan(layer, &rows.tile_expert, &rows.row_slot);
    const vkmoe_gemm_kernel *k = vkmoe_gemm_kernel_for(layer, tokens);
    vkmoe_gemm_up_pass(layer, cmd, k, &rows, -1, tiles);
    vkmoe_barrier_compute(layer->ctx, cmd);
    rows.sources = layer->weights.shared[VKMOE_EXPERT_DOWN].sources;
    vkmoe_gemm_down_pass(layer, cmd, k, &rows, -1, tiles);
}
