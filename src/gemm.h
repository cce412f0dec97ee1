/* The expert GEMMs, all in expert_gemm.c: the paths (names, checks, shape
 * per device, shader variants), the weight arrays they read, their sources'
 * sets, the per-token plan, and the passes that record them. Adding a path
 * is its enum value in vkmoe.h, its name, check, shape and shaders in
 * expert_gemm.c, and its shader variants in shaders/meson.build. */
#ifndef VKMOE_GEMM_H
#define VKMOE_GEMM_H

#include "memory.h"
#include "pipelines.h"
#include "weight_types.h"

/* Subgroups in a workgroup of the tiled GEMM paths (shaders/common/tiled_gemm.glsl). */
#define VKMOE_TILED_SUBGROUPS 4u

/* One kernel of the expert GEMMs: its path (never AUTO), invocations per
 * workgroup, the output columns one workgroup covers in each GEMM, and its
 * two pipelines (the context's, set when the layer is made); and the
 * router's logits of the same forwards: gemm_up's shader on logits_path
 * with f32 weights and the projection alone, logits_columns columns a
 * workgroup of logits_workgroup invocations. logits_path is the kernel's
 * path but for matrix cores, whose f16 tiles would round the logits that
 * choose the experts: the register path there. */
typedef struct vkmoe_gemm_kernel {
    vkmoe_gemm_path path;
    uint32_t workgroup, up_columns, down_columns;
    uint32_t gemv_rows; /* the GEMV path's rows a pass (capped by each weight type's) */
    VkPipeline up, down;
    vkmoe_gemm_path logits_path;
    uint32_t logits_workgroup, logits_columns;
    VkPipeline logits;
} vkmoe_gemm_kernel;

/* Shape of a layer's expert GEMMs (specialization constants, see
 * shaders/common/expert_gemm.glsl): rows per tile, the lanes of the
 * register path, and three kernels:
 * forwards of at most VKMOE_GEMV_PASS tokens (each expert then has at most
 * that many rows) run `decode`, longer ones `prefill`; a forward of one
 * token runs `one_token`, decode's path with GEMV passes of one row (the
 * other paths: decode's pipelines). An explicit path makes decode and
 * prefill the same; AUTO picks per device (vkmoe_gemm_auto). */
typedef struct vkmoe_gemm_config {
    uint32_t tile_m, lanes;
    vkmoe_gemm_kernel one_token, decode, prefill;
} vkmoe_gemm_config;

/* What one GEMM dispatch reads through set 1 (shaders/common/expert_gemm.glsl):
 * rows of A and two weight views, and which experts' matrices those views
 * hold (matrix_texels apart). */
typedef struct vkmoe_gemm_source {
    VkDescriptorSet set;
    uint32_t expert_first, expert_count, matrix_texels;
} vkmoe_gemm_source;

/* gemm_down's push fields for a forward of one token's combine in its GEMV
 * dispatch (combine.c; all 0: none), as gemm_down.comp has them. */
typedef struct vkmoe_down_combine {
    VkDeviceAddress arrivals, routed_out, topk_weight, slot_row, shared_out, shared_scale;
    /* the workgroups that finish a column block (0: no combine), top_k << 8,
     * io_type << 16, unweighted (scale_expert_input) << 24 */
    uint32_t packed;
    uint32_t pad_;
} vkmoe_down_combine;

/* Where a GEMM pass finds its rows and weights: the routed experts (rows
 * from the scan's plan, grids by indirect dispatch) or the shared expert
 * (row r is token r, one expert, grids known on the host). A pass records
 * one dispatch per source. */
typedef struct vkmoe_gemm_rows {
    const vkmoe_gemm_source *sources;
    uint32_t source_count;
    VkDeviceAddress tile_expert, row_slot, hidden, out;
    uint32_t hidden_texel; /* the down pass: where `hidden` starts in the hidden view */
    VkDeviceAddress gate_bias, up_bias, down_bias; /* 0: none */
    VkDeviceAddress input_scale; /* f32 [slots] scaling each row's projections, or 0 */
    /* u32 [experts]: each expert's cache slot, the matrix the sources'
     * views hold it as (expert_cache.h), or 0: they hold experts by number */
    VkDeviceAddress expert_slot;
    uint32_t ffn, ld_ffn, top_k, max_tiles, rows;
    vkmoe_down_combine combine; /* the down pass: one token's combine, or zeros */
} vkmoe_gemm_rows;

/* E matrices of one kind (gate, up or down) for all experts, packed into as
 * few allocations as the device's allocation and texel-buffer limits
 * allow, each seen through one texel view (weights.c). The up and down
 * arrays also hold their GEMM pass's sources, one per chunk, which
 * vkmoe_gemm_sources_create lists (the gate array shares the up array's
 * chunking: same shapes). */
typedef struct vkmoe_expert_array {
    vkmoe_buffer *chunks;
    VkBufferView *views;
    vkmoe_gemm_source *sources;
    uint32_t chunk_count;
    uint32_t count;            /* matrices: experts, or 1 for the shared expert */
    uint32_t per_chunk;        /* experts per chunk */
    VkDeviceSize matrix_bytes; /* one expert, rows padded to `ld` elements */
    /* Host arrays lent a model file's pages (vkmoe_weights_lend_host):
     * where each expert's matrix is, in whatever order the file holds
     * them; NULL: at (e % per_chunk) · matrix_bytes in chunk e / per_chunk
     * (vkmoe_expert_array_chunk and _offset). */
    struct vkmoe_lent_matrix {
        uint32_t chunk;
        VkDeviceSize offset;
    } * lent;
    uint32_t rows, cols, ld;
    vkmoe_weight_type type; /* how the matrices are stored */
    /* chunks and views are a slot pool's (expert_cache.h), which destroys
     * them; sources are the array's own */
    bool borrowed;
} vkmoe_expert_array;

/* The paths AUTO takes on this device for decode and prefill, and why. */
void vkmoe_gemm_auto(const vkmoe_context *ctx, vkmoe_gemm_path *decode, vkmoe_gemm_path *prefill,
                     const char **why);
/* The kernel a forward of `tokens` tokens runs. */
const vkmoe_gemm_kernel *vkmoe_gemm_kernel_for(const vkmoe_layer *layer, uint32_t tokens);
/* The shape of a layer's GEMMs on its path, for this device. */
vkmoe_gemm_config vkmoe_gemm_choose(const vkmoe_context *ctx, const vkmoe_layer_params *params);
/* Whether the device runs params' GEMM path (UNSUPPORTED naming why);
 * messages name `fn`. */
vkmoe_status vkmoe_gemm_check(const vkmoe_context *ctx, const vkmoe_layer_params *params,
                              const char *fn);
/* A GEMM source's set from the layer's pool: rows of A and two weight
 * views (shaders/common/expert_gemm.glsl's set 1). */
vkmoe_status vkmoe_gemm_set_create(vkmoe_layer *layer, VkBufferView a, VkBufferView w0,
                                   VkBufferView w1, VkDescriptorSet *out);
/* The sources of the up and down arrays and their sets: the up pass
 * reads x_rows with the gate and up views, the down pass hidden with the
 * down view. */
vkmoe_status vkmoe_gemm_sources_create(vkmoe_layer *layer, vkmoe_expert_array arrays[3]);
/* The per-token pass plan (router logits, shared expert: row r is token
 * r), written once at creation; and its tile_expert and row_slot
 * addresses. */
vkmoe_status vkmoe_gemm_token_plan_create(vkmoe_layer *layer);
void vkmoe_token_plan(const vkmoe_layer *layer, VkDeviceAddress *tile_expert,
                      VkDeviceAddress *row_slot);
/* After that plan: u32 [vkmoe_combine_blocks], the one-token combine's
 * counts of the workgroups that have finished each column block. */
VkDeviceAddress vkmoe_combine_arrivals(const vkmoe_layer *layer);
/* Record one pass of the expert GEMMs over `rows` with kernel k;
 * indirect_grid is the index of the scan's indirect grid, or -1 for a
 * direct grid of `tiles` row tiles. */
void vkmoe_gemm_up_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_kernel *k,
                        const vkmoe_gemm_rows *rows, int indirect_grid, uint32_t tiles);
/* The router's logits x·Wgᵀ as a GEMM over one row per token, on the
 * logits pipeline of the kernel the forward's token count runs; on the
 * GEMV path it reads x itself and writes x_rows (vkmoe_logits_read_x). */
void vkmoe_router_gemm_pass(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
/* Whether this forward's logits read x and write x_rows: the router records
 * no input_rows dispatch then. */
bool vkmoe_logits_read_x(const vkmoe_layer *layer, uint32_t tokens);
void vkmoe_gemm_down_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_kernel *k,
                          const vkmoe_gemm_rows *rows, int indirect_grid, uint32_t tiles);

/* Compile kernel k's pipelines (gate and up, down, the router's logits)
 * for the layer. */
vkmoe_status vkmoe_gemm_kernel_create(vkmoe_layer *layer, vkmoe_gemm_kernel *k);

#endif /* VKMOE_GEMM_H */
