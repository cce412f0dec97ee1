/* Stage VKMOE_STAGE_ROUTER: x's rows padded for the GEMMs (input_rows.c), the logits
 * as a GEMM over one row per token (the expert GEMM's shader, projection
 * only), then scores, group-limited top-k, combine weights, the shared
 * expert's gate and the statistics inputs (shaders/router.comp); for one
 * token, the bucketing of its slots too (one dispatch and barrier fewer at
 * decode). */
#include <stddef.h>

#include "stages.h"

/* The scratch arrays as offsets from ids in 16-byte units (ids is the
 * first: an offset 0 is an array not written), so that the bucketing's
 * seven fit beside the router's in the 128 bytes. */
typedef struct router_push {
    VkDeviceAddress ids, router_bias, selection_bias;
    uint32_t logits, topk_weight, shared_scale, probs, lse;
    uint32_t tokens, ld_logits, experts, top_k, normalize, kind, groups, topk_groups;
    float scale;
    uint32_t block_counts, expert_count, expert_base, tile_expert, row_slot, slot_row, dispatch;
    uint32_t tile_m, max_tiles, up_groups_x, down_groups_x, pad_;
} router_push;
_Static_assert(sizeof(router_push) == 128, "router_push must mirror router.comp");

/* One subgroup per token: the shader's reductions are subgroup operations;
 * the layer's E sizes its shared arrays. */
vkmoe_spec vkmoe_router_spec(const vkmoe_layer *layer)
{
    return (vkmoe_spec){.count = 2,
                        .values = {layer->ctx->info.subgroup_size, layer->params.experts}};
}

/* Count and scan: the layer's E sizes their shared arrays. */
vkmoe_spec vkmoe_experts_spec(const vkmoe_layer *layer)
{
    return (vkmoe_spec){.count = 1, .values = {layer->params.experts}};
}

static VkDeviceAddress address_if(bool present, VkDeviceAddress address)
{
    return present ? address : 0;
}

bool vkmoe_router_buckets(const vkmoe_layer *layer, uint32_t tokens)
{
    return tokens == 1 && !layer->io.routes_given;
}

/* Where field lies in the scratch, from ids, in 16-byte units:
 * compute_sizes places ids first and every array at a multiple of 16 bytes,
 * none past 64 GiB (the largest, a statistics layer's probabilities, is
 * 4 bytes by VKMOE_MAX_SLOTS tokens by VKMOE_MAX_EXPERTS experts: 32 GiB). */
static uint32_t scratch_offset(const vkmoe_scratch_layout *l, VkDeviceSize field)
{
    return (uint32_t)((field - l->ids) / 16);
}

/* One token's slots bucketed by the router: the scan's outputs (phase 5 of
 * shaders/scan.comp) and the GEMMs' grids. Every slot is kept: a token's k
 * experts differ, and a capacity of one token is at least 1. */
static void push_bucketing(const vkmoe_layer *layer, router_push *push)
{
    const vkmoe_scratch_layout *l = &layer->plan.layout;
    push->block_counts = scratch_offset(l, l->block_counts);
    push->expert_count = scratch_offset(l, l->expert_count);
    push->expert_base = scratch_offset(l, l->expert_base);
    push->tile_expert = scratch_offset(l, l->tile_expert);
    push->row_slot = scratch_offset(l, l->row_slot);
    push->slot_row = scratch_offset(l, l->slot_row);
    push->dispatch = scratch_offset(l, l->dispatch);
    push->tile_m = layer->gemm.tile_m;
    push->max_tiles = layer->plan.max_tiles;
    vkmoe_gemm_grids_x(layer, 1, &push->up_groups_x, &push->down_groups_x);
}

void vkmoe_router_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceAddress scratch = layer->work->scratch.address;
    VkDeviceAddress vectors = layer->weights.router_vectors.address;
    if (!vkmoe_logits_read_x(layer, tokens)) {
        vkmoe_input_rows_record(layer, cmd, tokens);
        if (layer->io.routes_given)
            return; /* the rows' experts and weights are in the scratch already */
        vkmoe_barrier_compute(layer->ctx, cmd);
    }
    vkmoe_router_gemm_pass(layer, cmd, tokens);
    vkmoe_barrier_compute(layer->ctx, cmd);
    const vkmoe_scratch_layout *l = &layer->plan.layout;
    router_push push = {
        .ids = scratch + l->ids,
        .router_bias = address_if(p->router_bias, vectors),
        .selection_bias = address_if(p->selection_bias, vectors + 4ull * p->experts),
        .logits = scratch_offset(l, l->logits),
        .topk_weight = scratch_offset(l, l->topk_weight),
        .shared_scale = p->shared_gate ? scratch_offset(l, l->shared_scale) : 0,
        .probs = p->statistics ? scratch_offset(l, l->probs) : 0,
        .lse = p->statistics ? scratch_offset(l, l->lse) : 0,
        .tokens = tokens,
        .ld_logits = layer->plan.ld_logits,
        .experts = p->experts,
        .top_k = p->top_k,
        .normalize = p->normalize_topk,
        .kind = (uint32_t)p->router,
        .groups = p->expert_groups,
        .topk_groups = p->topk_groups,
        .scale = p->routed_scaling_factor,
    };
    if (vkmoe_router_buckets(layer, tokens))
        push_bucketing(layer, &push);
    vkmoe_dispatch_1d(layer->ctx, cmd, layer->pipelines[VKMOE_SHADER_ROUTER], &push, sizeof(push),
                      tokens);
}
