/* Stage VKMOE_STAGE_SHARED: the shared expert, an always-on FFN, run through the same
 * GEMM shaders as the routed experts with a plan in which row r is token r
 * and every tile belongs to one expert. Its output waits in shared_out for
 * the combine stage, which scales it by the shared gate and adds it.
 *
 * Where its hidden rows fit in the hidden buffer past the routed experts'
 * (decode, and most forwards: the buffer holds max_tokens' rows), each of
 * its GEMMs is recorded beside the routed experts' of the same kind, with
 * no barrier between: it reads x_rows and hidden rows no routed GEMM
 * writes, so a GPU runs the two side by side and a forward has two
 * barriers fewer. Otherwise its own stage runs both after the routed
 * experts, in hidden from row 0. */
#include "stages.h"

/* The shared expert's hidden rows start at this texel of the hidden buffer
 * in a forward of so many tokens (0: in their own stage). */
static uint32_t hidden_texel(const vkmoe_layer *layer, uint32_t tokens)
{
    if (!vkmoe_shared_beside(layer, tokens))
        return 0;
    return (uint32_t)((uint64_t)vkmoe_plan_rows(layer, tokens) * layer->plan.ld_ffn / 4);
}

bool vkmoe_shared_beside(const vkmoe_layer *layer, uint32_t tokens)
{
    const vkmoe_layer_plan *plan = &layer->plan;
    if (!layer->params.shared_ffn_dim || !vkmoe_experts_resident(layer))
        return false;
    uint64_t routed = (uint64_t)vkmoe_plan_rows(layer, tokens) * plan->ld_ffn;
    uint64_t shared = vkmoe_round_up(tokens, layer->gemm.tile_m) * plan->ld_shared;
    return routed + shared <= plan->hidden_floats;
}

bool vkmoe_shared_runs(const vkmoe_layer *layer, uint32_t tokens)
{
    return layer->params.shared_ffn_dim != 0 && !vkmoe_shared_beside(layer, tokens);
}

/* The shared expert's rows, read with its up or down matrix. */
static vkmoe_gemm_rows shared_rows(const vkmoe_layer *layer, vkmoe_expert_matrix matrices,
                                   uint32_t tokens)
{
    uint32_t first = hidden_texel(layer, tokens);
    vkmoe_gemm_rows rows = {
        .sources = layer->weights.shared[matrices].sources,
        .source_count = 1,
        .hidden = layer->work->hidden.address + 16ull * first,
        .hidden_texel = first,
        .out = layer->work->shared_out.address,
        .ffn = layer->params.shared_ffn_dim,
        .ld_ffn = layer->plan.ld_shared,
        .top_k = 1,
        .max_tiles = (uint32_t)vkmoe_div_up(tokens, layer->gemm.tile_m),
        .rows = tokens,
    };
    vkmoe_token_plan(layer, &rows.tile_expert, &rows.row_slot);
    return rows;
}

void vkmoe_shared_up_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    vkmoe_gemm_rows rows = shared_rows(layer, VKMOE_EXPERT_UP, tokens);
    vkmoe_gemm_up_pass(layer, cmd, vkmoe_gemm_kernel_for(layer, tokens), &rows, -1, rows.max_tiles);
}

void vkmoe_shared_down_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    vkmoe_gemm_rows rows = shared_rows(layer, VKMOE_EXPERT_DOWN, tokens);
    vkmoe_combine_in_down_fields(layer, tokens, &rows.combine);
    vkmoe_gemm_down_pass(layer, cmd, vkmoe_gemm_kernel_for(layer, tokens), &rows, -1,
                         rows.max_tiles);
}

void vkmoe_shared_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    vkmoe_shared_up_record(layer, cmd, tokens);
    vkmoe_barrier_compute(layer->ctx, cmd);
    vkmoe_shared_down_record(layer, cmd, tokens);
}
