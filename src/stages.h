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
/* Whether the layer has a shared expert for vkmoe_shared_record to run. */
bool vkmoe_shared_runs(const vkmoe_layer *layer, uint32_t tokens);

/* The specialization constants of each stage's pipeline for this layer. */
vkmoe_spec vkmoe_router_spec(const vkmoe_layer *layer);
vkmoe_spec vkmoe_experts_spec(const vkmoe_layer *layer);

#endif /* VKMOE_STAGES_H */
