/* The expert GEMMs: their shape per device and path, what one dispatch
 * reads, and the passes that record them (expert_gemm.c, layer.c). */
#ifndef VKMOE_GEMM_H
#define VKMOE_GEMM_H

#include "memory.h"
#include "pipelines.h"

/* Subgroups in a workgroup of the tiled GEMM paths (shaders/common/tiled_gemm.glsl). */
#define VKMOE_TILED_SUBGROUPS 4u

/* Shape of the expert GEMMs (specialization constants, see
 * shaders/common/expert_gemm.glsl): the path (never AUTO), rows per tile,
 * invocations per workgroup of the path and of the register path (which the
 * router's logits take), and the output columns one workgroup covers in
 * each GEMM. */
typedef struct vkmoe_gemm_config {
    vkmoe_gemm_path path;
    uint32_t tile_m, workgroup, lanes, up_columns, down_columns;
} vkmoe_gemm_config;

/* What one GEMM dispatch reads through set 1 (shaders/common/expert_gemm.glsl):
 * rows of A and two weight views, and which experts' matrices those views
 * hold (matrix_texels apart). */
typedef struct vkmoe_gemm_source {
    VkDescriptorSet set;
    uint32_t expert_first, expert_count, matrix_texels;
} vkmoe_gemm_source;
/* Where a GEMM pass finds its rows and weights: the routed experts (rows
 * from the scan's plan, grids by indirect dispatch) or the shared expert
 * (row r is token r, one expert, grids known on the host). A pass records
 * one dispatch per source. */
typedef struct vkmoe_gemm_rows {
    const vkmoe_gemm_source *sources;
    uint32_t source_count;
    VkDeviceAddress tile_expert, row_slot, hidden, out;
    VkDeviceAddress gate_bias, up_bias, down_bias; /* 0: none */
    uint32_t ffn, ld_ffn, top_k, max_tiles, rows;
} vkmoe_gemm_rows;


/* The per-token pass plan: tile_expert and row_slot addresses. */
void vkmoe_token_plan(const vkmoe_layer *layer, VkDeviceAddress *tile_expert,
                      VkDeviceAddress *row_slot);
/* Record one pass of the expert GEMMs over `rows`; indirect_grid is the
 * index of the scan's indirect grid, or -1 for a direct grid of `tiles` row
 * tiles. */
void vkmoe_gemm_up_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_rows *rows,
                        int indirect_grid, uint32_t tiles);
/* The router's logits x·Wgᵀ as a GEMM over one row per token. */
void vkmoe_router_gemm_pass(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_gemm_down_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_rows *rows,
                          int indirect_grid, uint32_t tiles);


/* The GEMM pass of these matrices: gate and up (VKMOE_EXPERT_UP) or down. */
vkmoe_spec vkmoe_gemm_spec(const vkmoe_layer *layer, vkmoe_expert_matrix matrix);
vkmoe_spec vkmoe_router_gemm_spec(const vkmoe_layer *layer);
/* The shader of GEMM stage `stage` (VKMOE_SHADER_GEMM_UP or _DOWN) on the
 * layer's path. */
vkmoe_shader vkmoe_gemm_shader(const vkmoe_layer *layer, vkmoe_shader stage);

#endif /* VKMOE_GEMM_H */
