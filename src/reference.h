/* CPU reference of every stage of a forward, accumulating in double. Used by
 * the tests and by the bench's verification; not part of the library. */
#ifndef VKMOE_REFERENCE_H
#define VKMOE_REFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A layer's weights as f32 (f16 weights converted exactly), layouts as in
 * vkmoe.h: router [E][D], gate and up [E][F][D], down [E][D][F]. */
typedef struct vkmoe_ref_layer {
    uint32_t dim, ffn, experts, top_k;
    bool normalize;
    const float *router, *gate, *up, *down;
} vkmoe_ref_layer;

/* Router: ids [tokens][top_k] and weights [tokens][top_k]. Same rules as
 * router.comp: selection on logits, NaN lowest, ties to the lowest index. */
void vkmoe_ref_route(const vkmoe_ref_layer *layer, uint32_t tokens, const float *x, uint32_t *ids,
                     double *weights);

/* The bucketing plan the count, scan and scatter stages must produce for ids
 * of `slots` slots. Arrays are sized by the caller: count and base [experts],
 * slot_row [slots], row_slot [max_rows], tile_expert [max_tiles]. Returns the
 * number of rows used (a multiple of tile_rows). */
uint32_t vkmoe_ref_bucket(const uint32_t *ids, uint32_t slots, uint32_t experts,
                          uint32_t tile_rows, uint32_t max_rows, uint32_t *count, uint32_t *base,
                          uint32_t *row_slot, uint32_t *slot_row, uint32_t *tile_expert);

/* h = silu(x·W1ᵀ) ⊙ (x·W3ᵀ) for one expert: x [dim] -> h [ffn]. */
void vkmoe_ref_expert_up(const vkmoe_ref_layer *layer, uint32_t expert, const float *x, double *h);
/* z = h·W2ᵀ for one expert: h [ffn] -> z [dim]. */
void vkmoe_ref_expert_down(const vkmoe_ref_layer *layer, uint32_t expert, const double *h,
                           double *z);
/* The whole layer: y [tokens][dim]. */
void vkmoe_ref_forward(const vkmoe_ref_layer *layer, uint32_t tokens, const float *x, double *y);

/* IEEE half conversions, round to nearest even. */
uint16_t vkmoe_ref_f32_to_f16(float value);
float vkmoe_ref_f16_to_f32(uint16_t value);

/* Largest |a - b| over n values, and the same divided by max(1, max |b|);
 * NaN where either side is NaN at a position the other is not. */
typedef struct vkmoe_ref_error {
    double max_abs, max_rel;
} vkmoe_ref_error;
vkmoe_ref_error vkmoe_ref_compare(const float *a, const double *b, size_t n);

#endif
