/* Stage VKMOE_STAGE_SCAN: device-wide exclusive scan of the block counts and the
 * per-expert plan of rows and tiles (shaders/scan.comp); where all slots fit
 * one block, the whole bucketing (count and scatter folded in); nothing for
 * one token, which the router buckets (vkmoe_router_buckets). */
#include "stages.h"

typedef struct scan_push {
    VkDeviceAddress values, tile_sums, expert_count, expert_base, tile_expert, row_slot, dispatch,
        ids, slot_row;
    uint32_t n, phase, blocks, experts, slots, tile_m, max_tiles, up_groups_x, down_groups_x,
        capacity, tokens, top_k;
} scan_push;
_Static_assert(sizeof(scan_push) == 120, "scan_push must mirror scan.comp");
_Static_assert(VKMOE_SCAN_WORKGROUP == VKMOE_BLOCK_SLOTS,
               "the one-block bucketing gives each invocation one slot");

enum { PHASE_REDUCE, PHASE_TILES, PHASE_APPLY, PHASE_EXPERTS, PHASE_SINGLE, PHASE_BUCKET };

bool vkmoe_bucketing_in_one_dispatch(const vkmoe_layer *layer, uint32_t tokens)
{
    return (uint64_t)tokens * layer->params.top_k <= VKMOE_BLOCK_SLOTS;
}

void vkmoe_gemm_grids_x(const vkmoe_layer *layer, uint32_t tokens, uint32_t *up, uint32_t *down)
{
    /* of the kernel this forward's token count runs */
    const vkmoe_gemm_kernel *kernel = vkmoe_gemm_kernel_for(layer, tokens);
    *up = (uint32_t)vkmoe_div_up(layer->plan.ld_ffn, kernel->up_columns);
    *down = (uint32_t)vkmoe_div_up(layer->params.dim, kernel->down_columns);
}

void vkmoe_scan_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_scratch_layout *l = &layer->plan.layout;
    VkDeviceAddress base = layer->work->scratch.address;
    uint32_t slots = tokens * layer->params.top_k;
    uint32_t blocks = (uint32_t)vkmoe_div_up(slots, VKMOE_BLOCK_SLOTS);
    uint32_t n = blocks * layer->params.experts;
    scan_push push = {
        .values = base + l->block_counts,
        .tile_sums = base + l->tile_sums,
        .expert_count = base + l->expert_count,
        .expert_base = base + l->expert_base,
        .tile_expert = base + l->tile_expert,
        .row_slot = base + l->row_slot,
        .dispatch = base + l->dispatch,
        .ids = base + l->ids,
        .slot_row = base + l->slot_row,
        .n = n,
        .blocks = blocks,
        .experts = layer->params.experts,
        .slots = slots,
        .tile_m = layer->gemm.tile_m,
        .max_tiles = layer->plan.max_tiles,
        .capacity = vkmoe_params_capacity(&layer->params, tokens),
        .tokens = tokens,
        .top_k = layer->params.top_k,
    };
    vkmoe_gemm_grids_x(layer, tokens, &push.up_groups_x, &push.down_groups_x);
    VkPipeline pipeline = layer->pipelines[VKMOE_SHADER_SCAN];
    if (vkmoe_bucketing_in_one_dispatch(layer, tokens)) { /* decode: count and scatter too */
        push.phase = PHASE_BUCKET;
        vkmoe_dispatch_1d(layer->ctx, cmd, pipeline, &push, sizeof(push), 1);
        return;
    }
    uint64_t tiles = vkmoe_div_up(n, VKMOE_SCAN_TILE);
    if (tiles <= 1) { /* one workgroup scans and plans */
        push.phase = PHASE_SINGLE;
        vkmoe_dispatch_1d(layer->ctx, cmd, pipeline, &push, sizeof(push), 1);
        return;
    }
    const uint64_t groups[] = {
        [PHASE_REDUCE] = tiles, [PHASE_TILES] = 1, [PHASE_APPLY] = tiles, [PHASE_EXPERTS] = 1};
    for (uint32_t phase = PHASE_REDUCE; phase <= PHASE_EXPERTS; phase++) {
        if (phase != PHASE_REDUCE)
            vkmoe_barrier_compute(layer->ctx, cmd);
        push.phase = phase;
        vkmoe_dispatch_1d(layer->ctx, cmd, pipeline, &push, sizeof(push), groups[phase]);
    }
}
