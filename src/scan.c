/* Stage VKMOE_STAGE_SCAN: device-wide exclusive scan of the block counts and the
 * per-expert plan of rows and tiles (shaders/scan.comp). */
#include "stages.h"

typedef struct scan_push {
    VkDeviceAddress values, tile_sums, expert_count, expert_base, tile_expert, row_slot, dispatch;
    uint32_t n, phase, blocks, experts, slots, tile_m, max_tiles, up_groups_x, down_groups_x,
        capacity;
} scan_push;
_Static_assert(sizeof(scan_push) == 96, "scan_push must mirror scan.comp");

enum { PHASE_REDUCE, PHASE_TILES, PHASE_APPLY, PHASE_EXPERTS, PHASE_SINGLE };

void vkmoe_scan_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_scratch_layout *l = &layer->plan.layout;
    VkDeviceAddress base = layer->plan.scratch.address;
    uint32_t slots = tokens * layer->params.top_k;
    uint32_t blocks = (uint32_t)vkmoe_div_up(slots, VKMOE_BLOCK_SLOTS);
    uint32_t n = blocks * layer->params.experts;
    /* The GEMMs' grids: of the kernel this forward's token count runs. */
    const vkmoe_gemm_kernel *kernel = vkmoe_gemm_kernel_for(layer, tokens);
    scan_push push = {
        .values = base + l->block_counts,
        .tile_sums = base + l->tile_sums,
        .expert_count = base + l->expert_count,
        .expert_base = base + l->expert_base,
        .tile_expert = base + l->tile_expert,
        .row_slot = base + l->row_slot,
        .dispatch = base + l->dispatch,
        .n = n,
        .blocks = blocks,
        .experts = layer->params.experts,
        .slots = slots,
        .tile_m = layer->gemm.tile_m,
        .max_tiles = layer->plan.max_tiles,
        .up_groups_x = (uint32_t)vkmoe_div_up(layer->plan.ld_ffn, kernel->up_columns),
        .down_groups_x = (uint32_t)vkmoe_div_up(layer->params.dim, kernel->down_columns),
        .capacity = vkmoe_params_capacity(&layer->params, tokens),
    };
    VkPipeline pipeline = layer->pipelines[VKMOE_SHADER_SCAN];
    uint64_t tiles = vkmoe_div_up(n, VKMOE_SCAN_TILE);
    if (tiles <= 1) { /* decode: one workgroup scans and plans */
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
