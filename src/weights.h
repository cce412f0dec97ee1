/* The layer's weights on the device: expert arrays in chunks, router,
 * biases, and which uploads a forward still lacks (weights.c). */
#ifndef VKMOE_WEIGHTS_H
#define VKMOE_WEIGHTS_H

#include "gemm.h"
#include "memory.h"

/* Which uploads a forward waits for. Per expert: three matrices, then
 * three biases (gate, up, down); the rest once per layer. */
typedef enum vkmoe_upload {
    VKMOE_UPLOAD_ROUTER,
    VKMOE_UPLOAD_ROUTER_BIAS,
    VKMOE_UPLOAD_SELECTION_BIAS,
    VKMOE_UPLOAD_SHARED_GATE,
    VKMOE_UPLOAD_SHARED_MATRIX,                           /* + vkmoe_expert_matrix */
    VKMOE_UPLOAD_EXPERT = VKMOE_UPLOAD_SHARED_MATRIX + 3, /* + 6·expert + item */
} vkmoe_upload;

typedef struct vkmoe_expert_cache vkmoe_expert_cache;
typedef struct vkmoe_slot_pool vkmoe_slot_pool;

/* The layer's weights on the device, and which of them are set. */
typedef struct vkmoe_layer_weights {
    vkmoe_buffer router; /* f32 [E (+1: shared gate ws)][ld_dim] */
    VkBufferView router_view;
    vkmoe_gemm_source router_source;
    vkmoe_buffer router_vectors; /* f32 [2][E]: router bias, selection bias */
    /* Each routed expert's matrices, or with a cache, each slot's. */
    vkmoe_expert_array experts[3];
    /* With a cache: every routed expert's matrices, in host memory laid out
     * as on the device; else empty. Uploads go here, copies into slots come
     * from here (expert_cache.h). */
    vkmoe_expert_array host[3];
    vkmoe_expert_cache *cache; /* NULL: every expert on the device */
    /* An expert-parallel shard's experts (params.held_experts, which then
     * points at `held`, the layer's copy): each held expert's matrix in
     * `experts`, VKMOE_INVALID for the others, and that map on the device,
     * read by the GEMMs as their expert_slot. NULL and empty where the
     * layer holds every expert. */
    uint8_t *held;
    uint32_t *held_index;
    vkmoe_buffer held_map;      /* u32 [experts] */
    vkmoe_buffer expert_biases; /* f32 gate [E][ffn], up [E][ffn], down [E][dim] */
    vkmoe_expert_array shared[3];
    uint8_t *uploaded;      /* [VKMOE_UPLOAD_EXPERT + 6·E], indexed by vkmoe_upload */
    uint8_t *upload_needed; /* the same, for this layer's params */
} vkmoe_layer_weights;

/* Allocate the layer's weight memory and mark which uploads it needs. A
 * cache's host arrays are made at the first expert set into them. With a
 * cache, its slots are *shared's pool's where that is set, else a new
 * pool's, which *shared (where not NULL) then names. */
vkmoe_status vkmoe_weights_create(vkmoe_layer *layer, vkmoe_slot_pool **shared);
/* Whether layers of params a and b (resolved) hold experts of one shape,
 * so that one slot pool can hold either's (vkmoe_weights_create). */
bool vkmoe_weights_slots_fit(const vkmoe_layer_params *a, const vkmoe_layer_params *b);
/* Free an array's memory and lists (a borrowed one's lists alone). */
void vkmoe_expert_array_destroy(vkmoe_context *ctx, vkmoe_expert_array *array);
/* Whether host array `matrix` of a cached layer can be lent matrices of
 * `bytes` bytes each: the device imports host memory, the context does not
 * want the host copies in huge pages (a file's pages are the page cache's
 * small ones), none is set yet, and the array would hold them exactly so
 * (no row padding). */
bool vkmoe_weights_can_lend(const vkmoe_layer *layer, vkmoe_expert_matrix matrix, uint64_t bytes);
/* Lend it every expert e's matrix at data[e] (anywhere, in any order: a
 * GGUF file's stacked tensor or a checkpoint's tensor per expert) in
 * mapping region[e] (a file), imported so that the device copies straight
 * from it: a model file's pages, which must stay mapped and unchanged
 * while the layer lives. Experts of one region share an import of the
 * pages around them; the pages between two regions are never imported
 * (they may not be mapped). UNSUPPORTED where it cannot be (the caller
 * sets the experts instead: the driver may refuse the memory). Setting
 * such an expert later fails with UNSUPPORTED. */
vkmoe_status vkmoe_weights_lend_host(vkmoe_layer *layer, vkmoe_expert_matrix matrix,
                                     const uint8_t *const *data, const uint32_t *region);
/* Expert e's matrix in array a: the chunk holding it and the byte offset there. */
static inline uint32_t vkmoe_expert_array_chunk(const vkmoe_expert_array *a, uint32_t e)
{
    return a->lent ? a->lent[e].chunk : e / a->per_chunk;
}
static inline VkDeviceSize vkmoe_expert_array_offset(const vkmoe_expert_array *a, uint32_t e)
{
    return a->lent ? a->lent[e].offset : (e % a->per_chunk) * a->matrix_bytes;
}
void vkmoe_weights_destroy(vkmoe_layer *layer);
/* Whether the layer holds routed expert e (every expert, but a shard's). */
static inline bool vkmoe_weights_holds(const vkmoe_layer_weights *w, uint32_t e)
{
    return !w->held || w->held[e];
}
/* VKMOE_ERROR_STATE naming the first upload a forward still lacks. */
vkmoe_status vkmoe_weights_check_complete(const vkmoe_layer *layer, const char *fn);

/* The weights' texel format and its size in bytes: four 32-bit words for
 * f32, f16 and bf16 rows, one for GGUF blocks (2-byte aligned). */
VkFormat vkmoe_weight_texel_format(vkmoe_weight_type type);

/* Byte offsets of the three bias vectors of expert e in layer->weights.expert_biases. */
VkDeviceSize vkmoe_expert_bias_offset(const vkmoe_layer *layer, vkmoe_expert_matrix matrix,
                                      uint32_t expert);

#endif /* VKMOE_WEIGHTS_H */
