/* The stages of a forward, each recording its dispatch into a command
 * buffer in order; the caller puts barriers between them. */
#ifndef VKMOE_STAGES_H
#define VKMOE_STAGES_H

#include "layer.h"

/* Before the router: copy the tokens' rows of x into x_rows (input_rows.c). */
void vkmoe_input_rows_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
/* Each stage records its dispatch; the caller puts barriers between them. */
void vkmoe_router_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_count_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_scan_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_scatter_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_gemm_up_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_gemm_down_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_shared_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
/* The shared expert's up or down GEMM alone, recorded right after the
 * routed experts' (no barrier between: neither reads what the other
 * writes) where vkmoe_shared_beside says it runs beside them. */
void vkmoe_shared_up_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_shared_down_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_combine_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);

/* Whether this forward's slots fit one block, where the scan stage does the
 * whole bucketing in one dispatch and count and scatter record nothing. */
bool vkmoe_bucketing_in_one_dispatch(const vkmoe_layer *layer, uint32_t tokens);
/* Whether the router buckets this forward's slots itself (one token, routed
 * by the layer): then the scan stage records nothing either. */
bool vkmoe_router_buckets(const vkmoe_layer *layer, uint32_t tokens);
/* The x extent of the two GEMMs' grids (their row tiles are y and z) for a
 * forward of so many tokens: the bucketing writes them for the indirect
 * dispatches. */
void vkmoe_gemm_grids_x(const vkmoe_layer *layer, uint32_t tokens, uint32_t *up, uint32_t *down);
/* Whether every routed expert's GEMMs run in the gemm_up and gemm_down
 * stages: no expert cache (which runs both in gemm_up's stage) and no
 * expert outputs handed in (an expert-parallel shard). */
bool vkmoe_experts_resident(const vkmoe_layer *layer);
/* Whether the shared expert's GEMMs run in the routed experts' stages:
 * experts resident and its hidden rows fit the hidden buffer past the
 * routed ones'; else its own stage runs them after (vkmoe_shared_runs). */
bool vkmoe_shared_beside(const vkmoe_layer *layer, uint32_t tokens);
/* Whether the shared expert's own stage runs: a shared expert not beside. */
bool vkmoe_shared_runs(const vkmoe_layer *layer, uint32_t tokens);
/* Whether gemm_down's dispatches do this forward's combine too: one token
 * (the router's plan), every expert resident, the GEMV kernel, the shared
 * expert (if any) beside the routed ones; then the combine stage records
 * nothing (vkmoe_combine_runs), one dispatch and one barrier fewer. */
bool vkmoe_combine_in_down(const vkmoe_layer *layer, uint32_t tokens);
bool vkmoe_combine_runs(const vkmoe_layer *layer, uint32_t tokens);
/* gemm_down's push fields for that combine, or zeros where it does not. */
void vkmoe_combine_in_down_fields(const vkmoe_layer *layer, uint32_t tokens,
                                  vkmoe_down_combine *out);
/* The column blocks of gemm_down's GEMV grid: dim / the context's
 * gemv_columns. */
uint32_t vkmoe_combine_blocks(const vkmoe_layer *layer);

/* The specialization constants of each stage's pipeline for this layer. */
vkmoe_spec vkmoe_router_spec(const vkmoe_layer *layer);
vkmoe_spec vkmoe_experts_spec(const vkmoe_layer *layer);
vkmoe_spec vkmoe_combine_spec(const vkmoe_layer *layer);

#endif /* VKMOE_STAGES_H */
