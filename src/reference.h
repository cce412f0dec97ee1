/* CPU reference of every stage of a forward, accumulating in double. Used by
 * the tests and by the bench's verification; not part of the library. */
#ifndef VKMOE_REFERENCE_H
#define VKMOE_REFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vkmoe.h"

/* A layer's weights as f32 (f16 weights converted exactly), layouts as in
 * vkmoe.h. p holds the params with defaults resolved (vkmoe_layer_params_of).
 * Pointers the params do not call for may be NULL. */
typedef struct vkmoe_ref_layer {
    vkmoe_layer_params p;
    const float *router;                        /* [E][D] */
    const float *router_bias, *selection_bias;  /* [E] */
    const float *gate, *up, *down;              /* [E][F][D], [E][F][D], [E][D][F] */
    const float *gate_bias, *up_bias, *down_bias; /* [E][F], [E][F], [E][D] */
    const float *shared_gate_weights;           /* ws [D] */
    const float *shared_gate, *shared_up, *shared_down; /* [Fs][D], [Fs][D], [D][Fs] */
} vkmoe_ref_layer;

/* Router: ids [tokens][top_k] and weights [tokens][top_k], before any
 * capacity. Same rules as the library: softmax selection on logits, NaN
 * lowest, ties to the lowest index. */
void vkmoe_ref_route(const vkmoe_ref_layer *layer, uint32_t tokens, const float *x, uint32_t *ids,
                     double *weights);
/* One token's router figures: probs [E] (the statistics' router
 * probabilities), logsumexp of the logits, and the shared gate sigmoid(x·ws)
 * (1 without one). Any output may be NULL. */
void vkmoe_ref_router_figures(const vkmoe_ref_layer *layer, const float *x, double *probs,
                              double *lse, double *shared_scale);

/* kept[s] for each of tokens·top_k slots: whether slot s survives its
 * expert's capacity (priority order: choice 0 of every token first). */
void vkmoe_ref_keep(const vkmoe_ref_layer *layer, uint32_t tokens, const uint32_t *ids,
                    bool *kept);

/* The bucketing plan count, scan and scatter must produce for ids of
 * tokens·top_k slots: experts in order, each expert's slots in priority
 * order, at most `capacity` of them kept. Arrays are sized by the caller:
 * count (routed, before capacity) and base [experts], slot_row [slots]
 * (UINT32_MAX when dropped), row_slot [max_rows], tile_expert [max_tiles].
 * Returns the number of rows used (a multiple of tile_rows). */
uint32_t vkmoe_ref_bucket(const uint32_t *ids, uint32_t tokens, uint32_t top_k, uint32_t experts,
                          uint32_t capacity, uint32_t tile_rows, uint32_t max_rows,
                          uint32_t *count, uint32_t *base, uint32_t *row_slot, uint32_t *slot_row,
                          uint32_t *tile_expert);

/* One expert's hidden row h [ffn] = act(x·W1ᵀ + b1, x·W3ᵀ + b3). */
void vkmoe_ref_expert_up(const vkmoe_ref_layer *layer, uint32_t expert, const float *x, double *h);
/* z [dim] = h·W2ᵀ + b2 for one expert. */
void vkmoe_ref_expert_down(const vkmoe_ref_layer *layer, uint32_t expert, const double *h,
                           double *z);
/* The shared expert's output [dim] for one token, before its gate. */
void vkmoe_ref_shared(const vkmoe_ref_layer *layer, const float *x, double *out);
/* The whole layer: y [tokens][dim]. */
void vkmoe_ref_forward(const vkmoe_ref_layer *layer, uint32_t tokens, const float *x, double *y);

/* What vkmoe_layer_load_stats reports for a forward of these tokens. */
void vkmoe_ref_load_stats(const vkmoe_ref_layer *layer, uint32_t tokens, const float *x,
                          vkmoe_load_stats *stats, uint32_t *routed, uint32_t *dropped,
                          double *mean_probability);

/* IEEE half conversions, round to nearest even. */
uint16_t vkmoe_ref_f32_to_f16(float value);
float vkmoe_ref_f16_to_f32(uint16_t value);
/* bfloat16 conversions: the upper half of an f32, rounded to nearest even;
 * NaN stays NaN. */
uint16_t vkmoe_ref_f32_to_bf16(float value);
float vkmoe_ref_bf16_to_f32(uint16_t value);
/* n values, in place, as weights of this type hold them (f32: unchanged;
 * Q8_0: n whole blocks). */
void vkmoe_ref_round_weights(vkmoe_weight_type type, float *values, size_t n);
/* Encode n f32 values as `type` (vkmoe_quantize) into dst, which holds
 * vkmoe_weight_bytes(type, n) bytes; returns that size. */
size_t vkmoe_ref_encode_weights(vkmoe_weight_type type, const float *src, size_t n, void *dst);

/* Largest |a - b| over n values, and the same divided by max(1, max |b|);
 * NaN where either side is NaN at a position the other is not. */
typedef struct vkmoe_ref_error {
    double max_abs, max_rel;
} vkmoe_ref_error;
vkmoe_ref_error vkmoe_ref_compare(const float *a, const double *b, size_t n);

#endif
