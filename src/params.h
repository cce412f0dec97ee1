/* Layer params: checks, defaults, and what they imply (params.c). */
#ifndef VKMOE_PARAMS_H
#define VKMOE_PARAMS_H

#include "context.h"
#include "weight_types.h"

/* Check params (defaults may still be zero) and fill *out with the defaults
 * resolved; messages name `fn`. */
vkmoe_status vkmoe_params_resolve(const vkmoe_context *ctx, const vkmoe_layer_params *params,
                                  vkmoe_layer_params *out);
/* Slots each expert keeps in a forward of `tokens` tokens; UINT32_MAX when dropless. */
uint32_t vkmoe_params_capacity(const vkmoe_layer_params *params, uint32_t tokens);
/* Whether the activation has a gate projection (W1). */
bool vkmoe_params_gated(const vkmoe_layer_params *params);
/* Bytes of one value of x and y (params.io_type): 4 or 2. */
uint32_t vkmoe_params_io_bytes(const vkmoe_layer_params *params);
/* The router's name as the bench's JSON spells it ("softmax_topk",
 * "sigmoid_topk", "topk_softmax"); NULL for an unknown router. */
const char *vkmoe_router_type_name(vkmoe_router_type router);
/* The activation's name as the bench's JSON spells it ("swiglu", "relu",
 * "swiglu_clamped"); NULL for an unknown one. */
const char *vkmoe_activation_name(vkmoe_activation activation);

/* How a projection is stored: the down projections in down_weight_type,
 * gate and up in weight_type (resolved params). */
static inline vkmoe_weight_type vkmoe_matrix_type(const vkmoe_layer_params *p,
                                                  vkmoe_expert_matrix matrix)
{
    return matrix == VKMOE_EXPERT_DOWN ? p->down_weight_type : p->weight_type;
}

#endif /* VKMOE_PARAMS_H */
