/* Expert parallelism's steps on one rank, whatever carries the rows
 * between ranks: host memory in one process (expert_parallel.c), MPI
 * across processes (expert_parallel_mpi.c). A forward is, on every rank:
 * vkmoe_ep_dispatch (route the rank's tokens, group their choices by the
 * rank computing them), the exchange, vkmoe_ep_compute (the rows it
 * received through its experts), the exchange back, vkmoe_ep_combine. */
#ifndef VKMOE_EXPERT_PARALLEL_H
#define VKMOE_EXPERT_PARALLEL_H

#include "layer.h"

/* Which ranks hold which experts. */
typedef struct vkmoe_ep_placement {
    uint32_t ranks, experts;
    const uint8_t *map; /* [experts][ranks], nonzero: held; NULL: contiguous blocks */
} vkmoe_ep_placement;

/* Whether rank r holds expert e. */
bool vkmoe_ep_holds(const vkmoe_ep_placement *placement, uint32_t e, uint32_t r);

/* The rank computing rank `home`'s choices of expert e: home itself where
 * it holds e (a replicated expert stays local), else the lowest that does;
 * VKMOE_INVALID where none does. */
uint32_t vkmoe_ep_owner(const vkmoe_ep_placement *placement, uint32_t e, uint32_t home);

/* One token's choice on its way to the rank computing it. */
typedef struct vkmoe_ep_choice {
    uint32_t expert;
    float weight; /* the router's, applied by the token's own rank in combine */
} vkmoe_ep_choice;

/* What a rank sends: its tokens' choices grouped by destination rank, in
 * slot (token, then choice) order within each group — the order in which
 * each destination receives them and sends their outputs back. */
typedef struct vkmoe_ep_outbox {
    uint32_t *count;         /* [ranks]: rows for each rank */
    uint32_t n;              /* their sum: tokens · top_k */
    uint8_t *x;              /* [n][dim] of io_type: each choice's token row */
    vkmoe_ep_choice *choice; /* [n] */
    uint32_t *slot;          /* [n]: the choice's slot (token · top_k + choice) */
    uint32_t *slot_row;      /* [n], by slot: its row in expert_out (routing) */
} vkmoe_ep_outbox;

/* A shard's shape, which every rank's must equal. */
typedef struct vkmoe_ep_shape {
    uint32_t dim, ffn_dim, experts, top_k, io_type;
} vkmoe_ep_shape;

vkmoe_ep_shape vkmoe_ep_shape_of(const vkmoe_layer *shard);

/* One rank's arguments on their own: a shard that can take part (no
 * capacity, no expert cache, every weight it holds set, holding every
 * expert the placement gives its rank), tokens within its max_tokens, x
 * and y where there are tokens. */
vkmoe_status vkmoe_ep_check_shard(const vkmoe_layer *shard, const vkmoe_ep_placement *placement,
                                  uint32_t rank, uint32_t tokens, const void *x, const void *y,
                                  const char *fn);

/* Every expert held by some rank. */
vkmoe_status vkmoe_ep_check_placement(vkmoe_context *ctx, const vkmoe_ep_placement *placement,
                                      const char *fn);

/* Rank `me`'s tokens routed by its shard and packed into *out (zeroed by
 * the caller, freed by vkmoe_ep_outbox_free even after a failure). */
vkmoe_status vkmoe_ep_dispatch(vkmoe_layer *shard, const vkmoe_ep_placement *placement, uint32_t me,
                               uint32_t tokens, const void *x, vkmoe_ep_outbox *out);

/* n received rows (x: [n][dim] of io_type) through the shard's experts,
 * max_tokens at a time, by the kernels of a forward of `total` tokens:
 * out f32 [n][dim], each row unweighted. */
vkmoe_status vkmoe_ep_compute(vkmoe_layer *shard, uint32_t total, uint32_t n, const uint8_t *x,
                              const vkmoe_ep_choice *choice, float *out);

/* Rank's y from the outputs of its outbox's rows (back: f32 [box->n][dim],
 * in outbox order), in one submission: its tokens routed again (other
 * ranks' rows passed through its scratch since), the expert GEMMs skipped
 * (vkmoe_layer_io.expert_out_given), the shared expert and combine. */
vkmoe_status vkmoe_ep_combine(vkmoe_layer *shard, uint32_t total, uint32_t tokens, const void *x,
                              const vkmoe_ep_outbox *box, const float *back, void *y);

void vkmoe_ep_outbox_free(vkmoe_ep_outbox *box);

#endif
