/* The layer: its sizes, scratch layout, buffers and descriptor sets, and
 * the test hook that reads them back (layer.c). */
#ifndef VKMOE_LAYER_H
#define VKMOE_LAYER_H

#include "gemm.h"
#include "params.h"
#include "weights.h"

/* Where each piece of a layer's routing scratch lives, as byte offsets into
 * layer->plan.scratch (all 16-byte aligned):
 *   ids         u32 [max_slots]        chosen expert of slot s = t·k + j
 *   topk_weight f32 [max_slots]        its combine weight
 *   block_counts u32 [E][max_blocks]   per-block histogram, scanned in place
 *   tile_sums   u32 [max_scan_tiles]   partial sums of the device-wide scan
 *   expert_count u32 [E]               tokens per expert (statistics)
 *   expert_base u32 [E]                first row of each expert's padded segment
 *   tile_expert u32 [max_tiles]        expert of each row tile, or VKMOE_INVALID
 *   row_slot    u32 [max_rows]         slot held by each row, or VKMOE_INVALID
 *   slot_row    u32 [max_slots]        row holding each slot, or VKMOE_INVALID if dropped
 *   dispatch    u32 [2][3]             indirect grids of gemm_up and gemm_down
 *   shared_scale f32 [max_tokens]      sigmoid(x·ws) per token (shared_gate)
 *   probs       f32 [max_tokens][E]    router probabilities (statistics, else empty)
 *   lse         f32 [max_tokens]       logsumexp of the logits (statistics, else empty)
 *   logits      f32 [token_rows][ld_logits]  x·Wgᵀ (and x·ws), the router GEMM's output
 * Slots are numbered s = t·k + j (token t, choice j); count and scatter walk
 * them in priority order q = j·T + t, so an expert's rows, and the slots it
 * keeps under a capacity, come slot 0 of every token first. */
typedef struct vkmoe_scratch_layout {
    VkDeviceSize ids, topk_weight, block_counts, tile_sums, expert_count, expert_base, tile_expert,
        row_slot, slot_row, dispatch, shared_scale, probs, lse, logits, size;
} vkmoe_scratch_layout;

/* Sizes of one layer's forward and where its routing lives (layer.c). */
typedef struct vkmoe_layer_plan {
    uint32_t ld_dim, ld_ffn; /* padded row lengths, in elements */
    uint32_t max_slots, max_blocks, max_scan_tiles, max_rows, max_tiles;
    uint32_t ld_shared;  /* shared expert: padded width */
    uint32_t token_rows; /* max_tokens rounded up to the GEMM tile */
    uint32_t ld_logits;  /* router logits row: E (+1 with a shared gate), padded */
    /* the workspace's hidden: max(max_rows·ld_ffn + tile·ld_shared, token_rows·ld_shared) */
    uint64_t hidden_floats;
    vkmoe_scratch_layout layout; /* of the workspace's scratch */
    /* Passes with one row per token (router logits, shared expert): u32
     * tile_expert [token_rows / tile] = 0, then row_slot [token_rows] = r. */
    vkmoe_buffer token_plan;
} vkmoe_layer_plan;

/* The memory a forward works in: the routing scratch and what the stages
 * hand one another between router and combine. A layer's own, or one
 * shared by the layers of a model (vkmoe_model_open), each buffer as large
 * as the largest layer's; `holder` says whose forward it holds. */
typedef struct vkmoe_workspace {
    vkmoe_buffer scratch;      /* see vkmoe_scratch_layout */
    vkmoe_buffer x_rows;       /* f32 [token_rows][ld_dim]: x padded with zeros (input_rows) */
    vkmoe_buffer hidden;       /* f32 [plan.hidden_floats], gemm_up output */
    vkmoe_buffer expert_out;   /* f32 [max_rows][dim], gemm_down output */
    vkmoe_buffer shared_out;   /* f32 [token_rows][dim]; only with a shared expert */
    vkmoe_buffer x, y;         /* [max_tokens][dim] of io_type, for vkmoe_layer_forward */
    const vkmoe_layer *holder; /* the layer whose forward was recorded last, or NULL */
} vkmoe_workspace;

/* Bytes of each workspace buffer a layer needs (0: none). */
typedef struct vkmoe_workspace_sizes {
    VkDeviceSize scratch, x_rows, hidden, expert_out, shared_out, io;
} vkmoe_workspace_sizes;

/* The sizes a layer of these params needs (its params resolved and
 * checked as vkmoe_layer_create does). */
vkmoe_status vkmoe_workspace_sizes_of(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                      vkmoe_workspace_sizes *out);
/* Grow *into to hold a layer of `sizes` too. */
void vkmoe_workspace_sizes_max(vkmoe_workspace_sizes *into, const vkmoe_workspace_sizes *sizes);
vkmoe_status vkmoe_workspace_create(vkmoe_context *ctx, const vkmoe_workspace_sizes *sizes,
                                    vkmoe_workspace *out);
void vkmoe_workspace_destroy(vkmoe_context *ctx, vkmoe_workspace *ws);
/* Bytes of the workspace's buffers. */
uint64_t vkmoe_workspace_bytes(const vkmoe_workspace *ws);

/* A layer of params working in `shared` (NULL: a workspace of its own),
 * its expert cache's slots (if it has one) in *slots's pool, or in a new
 * one *slots then names (slots NULL: its own); vkmoe_layer_create is this
 * with NULL for both. */
vkmoe_status vkmoe_layer_create_in(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                   vkmoe_workspace *shared, vkmoe_slot_pool **slots,
                                   vkmoe_layer **out);

/* The layer's device memory, the workspace it works in counted whole. */
void vkmoe_layer_memory_of(const vkmoe_layer *layer, vkmoe_memory_report *report);
/* Of its experts' bytes there, those of slots it shares with layers of
 * its model and that another of them made (a model counts them once). */
uint64_t vkmoe_layer_borrowed_bytes(const vkmoe_layer *layer);

/* VKMOE_ERROR_STATE unless the workspace holds this layer's last forward:
 * none has run, or (a shared workspace) another layer's forward has run
 * since. */
vkmoe_status vkmoe_layer_check_results(const vkmoe_layer *layer, const char *fn);

/* Views of the workspace that the stages bind, sized for this layer. */
typedef struct vkmoe_layer_activations {
    VkBufferView x_rows_view;
    VkBufferView hidden_view;
    /* expert_out and shared_out as RGBA32F texels for combine, where dim is
     * a multiple of 4 and the views fit the device (else VK_NULL_HANDLE:
     * combine loads through addresses); combine_set binds them (or x_rows,
     * for the formats' sake) as set 1. */
    VkBufferView expert_out_view, shared_out_view;
    VkDescriptorSet combine_set;
} vkmoe_layer_activations;

/* A forward's inputs and outputs, and what it leaves behind. */
typedef struct vkmoe_layer_io {
    VkDescriptorPool descriptor_pool;
    VkDescriptorSet descriptor_set; /* set 0: x and y of the last recording */
    VkQueryPool queries;            /* 2 timestamps per stage when params.timing */
    uint32_t last_tokens;           /* tokens of the last recorded forward; 0: none yet */
    vkmoe_recorded recorded;        /* dispatches and barriers of that recording */
    /* A forward's early submission, still pending, reads the set: the
     * forward's rest binds it as it is, for a set in use may not be written. */
    bool set_in_use;
    /* Nonzero: the GEMMs run the kernels of a forward of this many tokens
     * whatever the count, as a shard of an expert-parallel layer must to
     * give the single layer's bits (vkmoe_gemm_kernel_for). */
    uint32_t kernel_tokens;
    /* The router stage only makes the input rows: ids and topk_weight were
     * written by the host (an expert-parallel shard's rows, one choice each). */
    bool routes_given;
    /* The expert GEMMs do not run: expert_out holds the routed experts'
     * rows, written by the host (an expert-parallel rank's combine). */
    bool expert_out_given;
} vkmoe_layer_io;

/* A layer owns one of each; layer.c draws them up and tears them down. */
struct vkmoe_layer {
    vkmoe_context *ctx;
    vkmoe_layer_params params; /* defaults resolved (vkmoe_params_resolve) */
    vkmoe_gemm_config gemm;
    vkmoe_layer_plan plan;
    vkmoe_workspace *work; /* &own, or the model's */
    vkmoe_workspace own;
    uint32_t model_index;     /* its layer number in a model, or VKMOE_INVALID alone */
    const vkmoe_model *model; /* the model owning it (vkmoe_model_destroy), or NULL */
    vkmoe_layer_weights weights;
    vkmoe_layer_activations act;
    vkmoe_layer_io io;
    VkPipeline pipelines[VKMOE_SHADER_STAGES]; /* GEMM stages' and the logits': in gemm's kernels */
};

/* The pipelines a layer of these params would run, and what chose them;
 * the pipelines are the context's. */
typedef struct vkmoe_compiled_layer {
    vkmoe_layer_params params; /* resolved */
    vkmoe_gemm_config gemm;
    VkPipeline pipelines[VKMOE_SHADER_STAGES]; /* GEMM stages' and the logits': in gemm's kernels */
} vkmoe_compiled_layer;

/* Compile a layer's pipelines without making the layer: no memory, no
 * queue (vkmoe_context_options.compile_only contexts, vkmoe-shader-stats). */
vkmoe_status vkmoe_layer_compile(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                 vkmoe_compiled_layer *out);

/* Test hook: read back the layer's scratch and intermediate buffers after a
 * forward, so tests can check every stage against its own CPU reference. */
typedef enum vkmoe_debug_buffer {
    VKMOE_DEBUG_IDS,
    VKMOE_DEBUG_TOPK_WEIGHT,
    VKMOE_DEBUG_BLOCK_COUNTS,
    VKMOE_DEBUG_EXPERT_BASE,
    VKMOE_DEBUG_TILE_EXPERT,
    VKMOE_DEBUG_ROW_SLOT,
    VKMOE_DEBUG_SLOT_ROW,
    VKMOE_DEBUG_DISPATCH,
    VKMOE_DEBUG_HIDDEN,
    VKMOE_DEBUG_EXPERT_OUT,
    VKMOE_DEBUG_SHARED_OUT,
    VKMOE_DEBUG_SHARED_SCALE,
} vkmoe_debug_buffer;
vkmoe_status vkmoe_layer_debug_read(vkmoe_layer *layer, vkmoe_debug_buffer which, void *dst,
                                    size_t size);

/* A forward in parts, for a layer whose experts run elsewhere (an
 * expert-parallel shard): x ([tokens][dim], io_type) into the layer's
 * workspace, then stages first .. end − 1, waited for. */
vkmoe_status vkmoe_layer_run_stages(vkmoe_layer *layer, uint32_t tokens, const void *x,
                                    vkmoe_stage first, vkmoe_stage end);
/* Stages from `first` on after vkmoe_layer_run_stages, waited for, and y read. */
vkmoe_status vkmoe_layer_run_rest(vkmoe_layer *layer, uint32_t tokens, vkmoe_stage first, void *y);

/* A descriptor set of set_layout from the layer's pool. */
vkmoe_status vkmoe_layer_allocate_set(vkmoe_layer *layer, VkDescriptorSetLayout set_layout,
                                      VkDescriptorSet *out);
/* The rows of hidden and expert_out that a forward of so many tokens can
 * use: its slots, each busy expert's padded to a whole tile. */
uint32_t vkmoe_plan_rows(const vkmoe_layer *layer, uint32_t tokens);

#endif /* VKMOE_LAYER_H */
