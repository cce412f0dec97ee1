/* Weights: device memory for the router, the routed and shared experts and
 * their biases, the uploads into it, and which uploads a forward still lacks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "expert_cache.h"
#include "layer.h"

static const char *const matrix_names[3] = {"gate", "up", "down"};

VkFormat vkmoe_weight_texel_format(vkmoe_weight_type type)
{
    return vkmoe_weight_texel_bytes(type) == 4 ? VK_FORMAT_R32_UINT : VK_FORMAT_R32G32B32A32_UINT;
}

VkDeviceSize vkmoe_expert_bias_offset(const vkmoe_layer *layer, vkmoe_expert_matrix matrix,
                                      uint32_t expert)
{
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceSize ffn_vector = 4ull * p->ffn_dim, experts = p->experts;
    if (matrix == VKMOE_EXPERT_DOWN)
        return 2 * experts * ffn_vector + expert * 4ull * p->dim;
    return (matrix == VKMOE_EXPERT_UP ? experts * ffn_vector : 0) + expert * ffn_vector;
}

/* The block readers fetch whole words a little past a block's end. */
#define CHUNK_SLACK 16u

/* The bytes one chunk of matrices may hold: an allocation, at most 1 GiB
 * (so that a failure says which), seen whole by one texel view. */
static VkDeviceSize chunk_limit(const vkmoe_context *ctx, vkmoe_weight_type type)
{
    VkDeviceSize limit = 1ull << 30;
    VkDeviceSize texels = (VkDeviceSize)ctx->properties.limits.maxTexelBufferElements *
                          vkmoe_weight_texel_bytes(type);
    if (ctx->info.max_allocation_size < limit)
        limit = ctx->info.max_allocation_size;
    if (texels < limit)
        limit = texels;
    return limit > CHUNK_SLACK ? limit - CHUNK_SLACK : 0;
}

/* A chunk on the device is seen through a texel view; one in host memory
 * (an expert cache's) is only copied from. */
static vkmoe_status create_chunk(vkmoe_layer *layer, vkmoe_expert_array *array, uint32_t c,
                                 uint32_t matrices, vkmoe_memory_use use)
{
    vkmoe_context *ctx = layer->ctx;
    VkDeviceSize bytes = matrices * array->matrix_bytes + CHUNK_SLACK;
    VKMOE_TRY(vkmoe_buffer_create(ctx, bytes, use, &array->chunks[c]));
    if (use != VKMOE_MEMORY_DEVICE)
        return VKMOE_OK;
    return vkmoe_buffer_view_create(ctx, &array->chunks[c], vkmoe_weight_texel_format(array->type),
                                    bytes, &array->views[c]);
}

/* Bytes of one matrix as the GEMMs read it: rows padded to VKMOE_ROW_ALIGN
 * elements (GGUF rows are whole blocks), the matrix to a 16-byte texel. */
static uint64_t padded_matrix_bytes(vkmoe_weight_type type, uint32_t rows, uint32_t cols)
{
    return vkmoe_round_up(
        (uint64_t)rows * vkmoe_weight_bytes(type, vkmoe_round_up(cols, VKMOE_ROW_ALIGN)), 16);
}

uint64_t vkmoe_expert_bytes(const vkmoe_layer_params *p)
{
    if (!p || !p->dim || !p->ffn_dim)
        return 0;
    vkmoe_weight_type down = p->down_weight_type ? p->down_weight_type : p->weight_type;
    uint64_t in = padded_matrix_bytes(p->weight_type, p->ffn_dim, p->dim);
    uint64_t out = padded_matrix_bytes(down, p->dim, p->ffn_dim);
    if (!in || !out)
        return 0;
    return in * (vkmoe_params_gated(p) ? 2 : 1) + out;
}

/* `count` matrices of rows x cols of this type, in chunks of at most
 * `limit` bytes: the array's shape and its lists, no memory yet. */
static vkmoe_status describe_expert_array(vkmoe_layer *layer, vkmoe_expert_array *array,
                                          vkmoe_weight_type type, uint32_t count, uint32_t rows,
                                          uint32_t cols, uint64_t limit)
{
    vkmoe_context *ctx = layer->ctx;
    array->type = type;
    array->count = count;
    array->rows = rows;
    array->cols = cols;
    array->ld = (uint32_t)vkmoe_round_up(cols, VKMOE_ROW_ALIGN);
    array->matrix_bytes = padded_matrix_bytes(type, rows, cols);
    /* Shaders index one matrix with 32-bit element offsets. */
    if ((uint64_t)rows * array->ld >= (1ull << 32))
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_layer_create: an expert matrix of %u x %u is too large", rows,
                          cols);
    uint64_t per_chunk = limit / array->matrix_bytes;
    array->per_chunk = per_chunk == 0 ? 1 : per_chunk > count ? count : (uint32_t)per_chunk;
    array->chunk_count = (uint32_t)vkmoe_div_up(count, array->per_chunk);
    array->chunks = vkmoe_calloc(array->chunk_count, sizeof(*array->chunks));
    array->views = vkmoe_calloc(array->chunk_count, sizeof(*array->views));
    if (!array->chunks || !array->views)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    return VKMOE_OK;
}

/* `count` matrices of rows x cols of this type in as few chunks as
 * chunk_limit allows, in memory of `use`. */
static vkmoe_status create_expert_array(vkmoe_layer *layer, vkmoe_expert_array *array,
                                        vkmoe_weight_type type, uint32_t count, uint32_t rows,
                                        uint32_t cols, vkmoe_memory_use use)
{
    VKMOE_TRY(describe_expert_array(layer, array, type, count, rows, cols,
                                    chunk_limit(layer->ctx, type)));
    for (uint32_t c = 0; c < array->chunk_count; c++) {
        uint32_t in_chunk = count - c * array->per_chunk;
        if (in_chunk > array->per_chunk)
            in_chunk = array->per_chunk;
        VKMOE_TRY(create_chunk(layer, array, c, in_chunk, use));
    }
    return VKMOE_OK;
}

void vkmoe_expert_array_destroy(vkmoe_context *ctx, vkmoe_expert_array *array)
{
    /* Either list may be missing when creation ran out of memory. */
    for (uint32_t c = 0; c < array->chunk_count && !array->borrowed; c++) {
        if (array->views && array->views[c])
            ctx->vk.vkDestroyBufferView(ctx->device, array->views[c], NULL);
        if (array->chunks)
            vkmoe_buffer_destroy(ctx, &array->chunks[c]);
    }
    if (!array->borrowed) {
        free(array->chunks);
        free(array->views);
    }
    free(array->sources);
    free(array->lent);
    memset(array, 0, sizeof(*array));
}

/* Matrix m's type, rows and columns for a layer of these params. */
static void matrix_layout(const vkmoe_layer_params *p, vkmoe_expert_matrix m, uint32_t ffn,
                          vkmoe_weight_type *type, uint32_t *rows, uint32_t *cols)
{
    bool down = m == VKMOE_EXPERT_DOWN;
    *type = down ? p->down_weight_type : p->weight_type;
    *rows = down ? p->dim : ffn;
    *cols = down ? ffn : p->dim;
}

static vkmoe_status create_matrices(vkmoe_layer *layer, vkmoe_expert_array arrays[3],
                                    uint32_t count, uint32_t ffn, vkmoe_memory_use use)
{
    const vkmoe_layer_params *p = &layer->params;
    for (uint32_t m = vkmoe_params_gated(p) ? 0 : 1; m < 3; m++) {
        vkmoe_weight_type type;
        uint32_t rows, cols;
        matrix_layout(p, m, ffn, &type, &rows, &cols);
        VKMOE_TRY(create_expert_array(layer, &arrays[m], type, count, rows, cols, use));
    }
    return VKMOE_OK;
}

/* A cached layer's host array of matrix m, made at its first use. */
static vkmoe_status host_array(vkmoe_layer *layer, vkmoe_expert_matrix m)
{
    vkmoe_expert_array *a = &layer->weights.host[m];
    if (a->lent)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_layer_set_expert: the layer's experts are its model file's pages, "
                          "read by the device where they are: they cannot be set");
    if (a->chunks)
        return VKMOE_OK;
    vkmoe_weight_type type;
    uint32_t rows, cols;
    matrix_layout(&layer->params, m, layer->params.ffn_dim, &type, &rows, &cols);
    vkmoe_status status = create_expert_array(layer, a, type, layer->params.experts, rows, cols,
                                              VKMOE_MEMORY_HOST_STREAMED);
    if (status != VKMOE_OK)
        vkmoe_expert_array_destroy(layer->ctx, a); /* made again at the next try */
    return status;
}

bool vkmoe_weights_can_lend(const vkmoe_layer *layer, vkmoe_expert_matrix m, uint64_t bytes)
{
    vkmoe_weight_type type;
    uint32_t rows, cols;
    matrix_layout(&layer->params, m, layer->params.ffn_dim, &type, &rows, &cols);
    const vkmoe_expert_array *a = &layer->weights.host[m];
    return layer->weights.cache && !a->chunks && layer->ctx->host_import_alignment &&
           !layer->ctx->host_huge_pages && cols % VKMOE_ROW_ALIGN == 0 &&
           bytes == padded_matrix_bytes(type, rows, cols) &&
           bytes == rows * vkmoe_weight_bytes(type, cols);
}

typedef struct lent_address {
    uint32_t region;
    uintptr_t at;
    uint32_t expert;
} lent_address;

static int by_address(const void *a, const void *b)
{
    const lent_address *x = a, *y = b;
    if (x->region != y->region)
        return x->region < y->region ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* Chunks of array a over the matrices in region and address order: each
 * the whole pages from its first matrix to its last in one region, within
 * `limit` bytes (other tensors' bytes between them come along unread). */
static vkmoe_status import_lent(vkmoe_context *ctx, vkmoe_expert_array *a,
                                const lent_address *order, VkDeviceSize limit)
{
    VkDeviceSize align = ctx->host_import_alignment;
    for (uint32_t i = 0; i < a->count;) {
        uintptr_t first = order[i].at / align * align;
        uintptr_t end = vkmoe_round_up(order[i].at + a->matrix_bytes, align);
        uint32_t j = i + 1;
        for (; j < a->count && order[j].region == order[i].region; j++) {
            uintptr_t next = vkmoe_round_up(order[j].at + a->matrix_bytes, align);
            if (next - first > limit)
                break;
            end = next > end ? next : end;
        }
        uint32_t c = a->chunk_count++;
        for (uint32_t k = i; k < j; k++)
            a->lent[order[k].expert] = (struct vkmoe_lent_matrix){c, order[k].at - first};
        VKMOE_TRY(vkmoe_buffer_import_host(ctx, (const void *)first, end - first, &a->chunks[c]));
        i = j;
    }
    return VKMOE_OK;
}

vkmoe_status vkmoe_weights_lend_host(vkmoe_layer *layer, vkmoe_expert_matrix m,
                                     const uint8_t *const *data, const uint32_t *region)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_expert_array *a = &layer->weights.host[m];
    vkmoe_weight_type type;
    uint32_t rows, cols, experts = layer->params.experts;
    matrix_layout(&layer->params, m, layer->params.ffn_dim, &type, &rows, &cols);
    if (!vkmoe_weights_can_lend(layer, m, rows * vkmoe_weight_bytes(type, cols)))
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_weights_lend_host: the layer cannot read these experts in place");
    VkDeviceSize limit = ctx->info.max_allocation_size - 2 * ctx->host_import_alignment;
    vkmoe_status status = describe_expert_array(layer, a, type, experts, rows, cols, limit);
    /* Up to a chunk per expert, in the file's order. */
    lent_address *order = vkmoe_malloc(experts * sizeof(*order));
    if (status == VKMOE_OK) {
        free(a->chunks);
        free(a->views);
        a->chunk_count = 0;
        a->chunks = vkmoe_calloc(experts, sizeof(*a->chunks));
        a->views = vkmoe_calloc(experts, sizeof(*a->views));
        a->lent = vkmoe_malloc(experts * sizeof(*a->lent));
        if (!order || !a->chunks || !a->views || !a->lent)
            status = vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    if (status == VKMOE_OK) {
        for (uint32_t e = 0; e < experts; e++)
            order[e] = (lent_address){region[e], (uintptr_t)data[e], e};
        qsort(order, experts, sizeof(*order), by_address);
        status = import_lent(ctx, a, order, limit);
    }
    free(order);
    if (status != VKMOE_OK) {
        vkmoe_expert_array_destroy(ctx, a);
        return status;
    }
    for (uint32_t e = 0; e < a->count; e++)
        layer->weights.uploaded[VKMOE_UPLOAD_EXPERT + 6 * e + m] = 1;
    return VKMOE_OK;
}

/* A shard's own copy of its held experts, their places in its arrays (on
 * the host and the device), and how many there are. */
static vkmoe_status create_held_map(vkmoe_layer *layer, uint32_t *count)
{
    vkmoe_layer_params *p = &layer->params;
    vkmoe_layer_weights *w = &layer->weights;
    w->held = vkmoe_malloc(p->experts);
    w->held_index = vkmoe_malloc(p->experts * sizeof(uint32_t));
    if (!w->held || !w->held_index)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    *count = 0;
    for (uint32_t e = 0; e < p->experts; e++) {
        w->held[e] = p->held_experts[e] != 0;
        w->held_index[e] = w->held[e] ? (*count)++ : VKMOE_INVALID;
    }
    p->held_experts = w->held;
    VKMOE_TRY(
        vkmoe_buffer_create(layer->ctx, 4ull * p->experts, VKMOE_MEMORY_DEVICE, &w->held_map));
    return vkmoe_buffer_write_rows(layer->ctx, &w->held_map, 0, w->held_index, 1, 4ull * p->experts,
                                   4ull * p->experts);
}

bool vkmoe_weights_slots_fit(const vkmoe_layer_params *a, const vkmoe_layer_params *b)
{
    vkmoe_weight_type down_a = a->down_weight_type ? a->down_weight_type : a->weight_type,
                      down_b = b->down_weight_type ? b->down_weight_type : b->weight_type;
    return a->weight_type == b->weight_type && down_a == down_b && a->dim == b->dim &&
           a->ffn_dim == b->ffn_dim && vkmoe_params_gated(a) == vkmoe_params_gated(b);
}

/* A cache of `slots` slots, in *shared's pool or a new one, whose slots
 * the layer's device arrays borrow (each with sources of its own). */
static vkmoe_status create_cache(vkmoe_layer *layer, uint32_t slots, vkmoe_slot_pool **shared)
{
    const vkmoe_layer_params *p = &layer->params;
    VKMOE_TRY(vkmoe_expert_cache_create(layer, slots, vkmoe_expert_bytes(p), shared));
    vkmoe_slot_pool *pool = layer->weights.cache->pool;
    if (!pool->arrays[VKMOE_EXPERT_DOWN].chunks)
        VKMOE_TRY(
            create_matrices(layer, pool->arrays, pool->slots, p->ffn_dim, VKMOE_MEMORY_DEVICE));
    else /* joined: its first member, which made the slots, lives while a model loads */
        VKMOE_REQUIRE(layer->ctx, vkmoe_weights_slots_fit(&pool->first->params, p),
                      "vkmoe_layer_create: the shared slots hold experts of another shape");
    for (uint32_t m = 0; m < 3; m++) {
        layer->weights.experts[m] = pool->arrays[m];
        layer->weights.experts[m].sources = NULL;
        layer->weights.experts[m].borrowed = true;
    }
    return VKMOE_OK;
}

/* The routed experts: all on the device, a shard's on the device, or with
 * a budget smaller than they take, all in host memory and as many as fit
 * in device slots (in *shared's pool where that is set, else in one
 * *shared then names). */
static vkmoe_status create_routed_experts(vkmoe_layer *layer, vkmoe_slot_pool **shared)
{
    const vkmoe_layer_params *p = &layer->params;
    if (p->held_experts) {
        uint32_t held = 0;
        VKMOE_TRY(create_held_map(layer, &held));
        /* A shard holding nothing keeps one matrix's memory, never read. */
        return create_matrices(layer, layer->weights.experts, held ? held : 1, p->ffn_dim,
                               VKMOE_MEMORY_DEVICE);
    }
    uint64_t expert_bytes = vkmoe_expert_bytes(p);
    uint64_t slots = p->expert_budget_bytes ? p->expert_budget_bytes / expert_bytes : p->experts;
    /* Host experts compute from host memory; the GEMMs' views keep one slot. */
    if (p->cpu_experts)
        slots = 1;
    /* A shared pool's member caches however many slots the pool has. */
    bool joins = shared && p->expert_budget_bytes && !p->cpu_experts;
    if (slots >= p->experts && !p->cpu_experts && !joins)
        return create_matrices(layer, layer->weights.experts, p->experts, p->ffn_dim,
                               VKMOE_MEMORY_DEVICE);
    return create_cache(layer, (uint32_t)slots, p->cpu_experts ? NULL : shared);
}

static vkmoe_status mark_needed_uploads(vkmoe_layer *layer)
{
    const vkmoe_layer_params *p = &layer->params;
    size_t n = VKMOE_UPLOAD_EXPERT + 6 * (size_t)p->experts;
    layer->weights.uploaded = vkmoe_calloc(n, 1);
    layer->weights.upload_needed = vkmoe_calloc(n, 1);
    if (!layer->weights.uploaded || !layer->weights.upload_needed)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    uint8_t *need = layer->weights.upload_needed;
    bool gated = vkmoe_params_gated(p);
    need[VKMOE_UPLOAD_ROUTER] = 1;
    need[VKMOE_UPLOAD_ROUTER_BIAS] = p->router_bias;
    need[VKMOE_UPLOAD_SELECTION_BIAS] = p->selection_bias;
    need[VKMOE_UPLOAD_SHARED_GATE] = p->shared_gate;
    for (uint32_t m = 0; m < 3; m++)
        need[VKMOE_UPLOAD_SHARED_MATRIX + m] = p->shared_ffn_dim > 0 && (gated || m != 0);
    for (uint32_t e = 0; e < p->experts; e++)
        for (uint32_t m = 0; m < 3; m++) {
            bool held = !p->held_experts || p->held_experts[e];
            need[VKMOE_UPLOAD_EXPERT + 6 * e + m] = held && (gated || m != 0);
            need[VKMOE_UPLOAD_EXPERT + 6 * e + 3 + m] = held && p->expert_bias && (gated || m != 0);
        }
    return VKMOE_OK;
}

vkmoe_status vkmoe_weights_create(vkmoe_layer *layer, vkmoe_slot_pool **shared)
{
    vkmoe_context *ctx = layer->ctx;
    const vkmoe_layer_params *p = &layer->params;
    VKMOE_TRY(mark_needed_uploads(layer));
    uint32_t router_rows = p->experts + (p->shared_gate ? 1 : 0);
    VkDeviceSize router_bytes = (VkDeviceSize)router_rows * layer->plan.ld_dim * 4;
    VKMOE_TRY(vkmoe_buffer_create(ctx, router_bytes, VKMOE_MEMORY_DEVICE, &layer->weights.router));
    VKMOE_TRY(vkmoe_buffer_view_create(ctx, &layer->weights.router,
                                       vkmoe_weight_texel_format(VKMOE_WEIGHT_F32), router_bytes,
                                       &layer->weights.router_view));
    /* The router GEMM sees Wg as the matrix of a single expert. */
    layer->weights.router_source = (vkmoe_gemm_source){.expert_count = 1};
    VKMOE_TRY(vkmoe_buffer_create(ctx, 8ull * p->experts, VKMOE_MEMORY_DEVICE,
                                  &layer->weights.router_vectors));
    VKMOE_TRY(create_routed_experts(layer, shared));
    if (p->expert_bias)
        VKMOE_TRY(
            vkmoe_buffer_create(ctx, vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_DOWN, p->experts),
                                VKMOE_MEMORY_DEVICE, &layer->weights.expert_biases));
    if (p->shared_ffn_dim)
        VKMOE_TRY(create_matrices(layer, layer->weights.shared, 1, p->shared_ffn_dim,
                                  VKMOE_MEMORY_DEVICE));
    return VKMOE_OK;
}

void vkmoe_weights_destroy(vkmoe_layer *layer)
{
    vkmoe_context *ctx = layer->ctx;
    if (layer->weights.router_view)
        ctx->vk.vkDestroyBufferView(ctx->device, layer->weights.router_view, NULL);
    vkmoe_buffer *buffers[] = {&layer->weights.router, &layer->weights.router_vectors,
                               &layer->weights.expert_biases, &layer->weights.held_map};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(buffers); i++)
        vkmoe_buffer_destroy(ctx, buffers[i]);
    for (uint32_t m = 0; m < 3; m++) {
        vkmoe_expert_array_destroy(ctx, &layer->weights.experts[m]);
        vkmoe_expert_array_destroy(ctx, &layer->weights.shared[m]);
        vkmoe_expert_array_destroy(ctx, &layer->weights.host[m]);
    }
    vkmoe_expert_cache_destroy(ctx, &layer->weights.cache);
    free(layer->weights.uploaded);
    free(layer->weights.upload_needed);
    free(layer->weights.held);
    free(layer->weights.held_index);
}

static const char *upload_name(uint32_t i, char *buf, size_t size)
{
    static const char *const fixed[] = {"the router", "the router bias", "the selection bias",
                                        "the shared expert's gate (ws)"};
    if (i < VKMOE_UPLOAD_SHARED_MATRIX)
        return fixed[i];
    if (i < VKMOE_UPLOAD_EXPERT) {
        snprintf(buf, size, "the shared expert's %s matrix",
                 matrix_names[i - VKMOE_UPLOAD_SHARED_MATRIX]);
        return buf;
    }
    uint32_t e = (i - VKMOE_UPLOAD_EXPERT) / 6, item = (i - VKMOE_UPLOAD_EXPERT) % 6;
    snprintf(buf, size, "expert %u's %s %s", e, matrix_names[item % 3],
             item < 3 ? "matrix" : "bias");
    return buf;
}

vkmoe_status vkmoe_weights_check_complete(const vkmoe_layer *layer, const char *fn)
{
    size_t n = VKMOE_UPLOAD_EXPERT + 6 * (size_t)layer->params.experts;
    for (size_t i = 0; i < n; i++)
        if (layer->weights.upload_needed[i] && !layer->weights.uploaded[i]) {
            char name[96];
            return vkmoe_fail(layer->ctx, VKMOE_ERROR_STATE, "%s: %s is not set", fn,
                              upload_name((uint32_t)i, name, sizeof(name)));
        }
    return VKMOE_OK;
}

/* Checks shared by every upload: a layer, data, a wanted upload, the size. */
static vkmoe_status check_upload(const vkmoe_layer *layer, const char *fn, const void *data,
                                 vkmoe_upload which, const char *needs, size_t size,
                                 size_t expected)
{
    VKMOE_REQUIRE(NULL, layer, "%s: layer is NULL", fn);
    VKMOE_REQUIRE(layer->ctx, data, "%s: weights is NULL", fn);
    VKMOE_REQUIRE(layer->ctx, layer->weights.upload_needed[which],
                  "%s: the layer has no such weights (%s)", fn, needs);
    VKMOE_REQUIRE(layer->ctx, size == expected, "%s: size is %zu bytes, expected %zu", fn, size,
                  expected);
    return VKMOE_OK;
}

/* Uploads f32 vector of n elements at offset of buf and records it. */
static vkmoe_status upload_vector(vkmoe_layer *layer, const vkmoe_buffer *buf, VkDeviceSize offset,
                                  const float *v, size_t n, vkmoe_upload which)
{
    size_t bytes = n * sizeof(float);
    VKMOE_TRY(vkmoe_buffer_write_rows(layer->ctx, buf, offset, v, 1, bytes, bytes));
    layer->weights.uploaded[which] = 1;
    return VKMOE_OK;
}

vkmoe_status vkmoe_layer_set_router(vkmoe_layer *layer, const float *weights, size_t size)
{
    const char *fn = "vkmoe_layer_set_router";
    size_t row = layer ? (size_t)layer->params.dim * sizeof(float) : 0;
    VKMOE_TRY(check_upload(layer, fn, weights, VKMOE_UPLOAD_ROUTER, "", size,
                           row * (layer ? layer->params.experts : 0)));
    VKMOE_TRY(vkmoe_buffer_write_rows(layer->ctx, &layer->weights.router, 0, weights,
                                      layer->params.experts, row,
                                      (uint64_t)layer->plan.ld_dim * 4));
    layer->weights.uploaded[VKMOE_UPLOAD_ROUTER] = 1;
    return VKMOE_OK;
}

vkmoe_status vkmoe_layer_set_router_bias(vkmoe_layer *layer, const float *bias, size_t size)
{
    size_t n = layer ? layer->params.experts : 0;
    VKMOE_TRY(check_upload(layer, "vkmoe_layer_set_router_bias", bias, VKMOE_UPLOAD_ROUTER_BIAS,
                           "params.router_bias is false", size, n * 4));
    return upload_vector(layer, &layer->weights.router_vectors, 0, bias, n,
                         VKMOE_UPLOAD_ROUTER_BIAS);
}

vkmoe_status vkmoe_layer_set_selection_bias(vkmoe_layer *layer, const float *bias, size_t size)
{
    size_t n = layer ? layer->params.experts : 0;
    VKMOE_TRY(check_upload(layer, "vkmoe_layer_set_selection_bias", bias,
                           VKMOE_UPLOAD_SELECTION_BIAS, "params.selection_bias is false", size,
                           n * 4));
    return upload_vector(layer, &layer->weights.router_vectors, n * 4, bias, n,
                         VKMOE_UPLOAD_SELECTION_BIAS);
}

vkmoe_status vkmoe_layer_set_shared_gate(vkmoe_layer *layer, const float *weights, size_t size)
{
    size_t n = layer ? layer->params.dim : 0;
    VKMOE_TRY(check_upload(layer, "vkmoe_layer_set_shared_gate", weights, VKMOE_UPLOAD_SHARED_GATE,
                           "params.shared_gate is false", size, n * 4));
    /* ws is the router's extra last row, so the router computes x·ws too;
     * like every row the GEMM reads, it is padded with zeros to ld_dim. */
    uint64_t ld_bytes = (uint64_t)layer->plan.ld_dim * 4;
    VKMOE_TRY(vkmoe_buffer_write_rows(layer->ctx, &layer->weights.router,
                                      layer->params.experts * ld_bytes, weights, 1, n * 4,
                                      ld_bytes));
    layer->weights.uploaded[VKMOE_UPLOAD_SHARED_GATE] = 1;
    return VKMOE_OK;
}

static vkmoe_status upload_matrix(vkmoe_layer *layer, const char *fn,
                                  const vkmoe_expert_array *array, uint32_t index,
                                  const void *weights, size_t size, vkmoe_upload which)
{
    vkmoe_weight_type type = array->type;
    size_t row = vkmoe_weight_bytes(type, array->cols);
    VKMOE_REQUIRE(layer->ctx, size == row * array->rows,
                  "%s: size is %zu bytes, expected %u rows of %u weights, %zu bytes", fn, size,
                  array->rows, array->cols, row * array->rows);
    const vkmoe_buffer *chunk = &array->chunks[vkmoe_expert_array_chunk(array, index)];
    VkDeviceSize offset = vkmoe_expert_array_offset(array, index);
    VKMOE_TRY(vkmoe_buffer_write_rows(layer->ctx, chunk, offset, weights, array->rows, row,
                                      vkmoe_weight_bytes(type, array->ld)));
    layer->weights.uploaded[which] = 1;
    return VKMOE_OK;
}

static vkmoe_status check_matrix(const vkmoe_layer *layer, const char *fn, const void *weights,
                                 vkmoe_expert_matrix matrix)
{
    VKMOE_REQUIRE(NULL, layer, "%s: layer is NULL", fn);
    VKMOE_REQUIRE(layer->ctx, weights, "%s: weights is NULL", fn);
    VKMOE_REQUIRE(layer->ctx, (unsigned)matrix <= VKMOE_EXPERT_DOWN, "%s: unknown matrix %d", fn,
                  (int)matrix);
    VKMOE_REQUIRE(layer->ctx, matrix != VKMOE_EXPERT_GATE || vkmoe_params_gated(&layer->params),
                  "%s: ReLU experts have no gate matrix", fn);
    return VKMOE_OK;
}

static vkmoe_status check_held(const vkmoe_layer *layer, const char *fn, uint32_t expert)
{
    VKMOE_REQUIRE(layer->ctx, vkmoe_weights_holds(&layer->weights, expert),
                  "%s: expert %u is not one this shard holds (params.held_experts)", fn, expert);
    return VKMOE_OK;
}

vkmoe_status vkmoe_layer_set_expert(vkmoe_layer *layer, uint32_t expert, vkmoe_expert_matrix matrix,
                                    const void *weights, size_t size)
{
    const char *fn = "vkmoe_layer_set_expert";
    VKMOE_TRY(check_matrix(layer, fn, weights, matrix));
    VKMOE_REQUIRE(layer->ctx, expert < layer->params.experts,
                  "%s: expert %u out of range (experts = %u)", fn, expert, layer->params.experts);
    vkmoe_layer_weights *w = &layer->weights;
    VKMOE_TRY(check_held(layer, fn, expert));
    if (!w->cache)
        return upload_matrix(layer, fn, &w->experts[matrix],
                             w->held_index ? w->held_index[expert] : expert, weights, size,
                             VKMOE_UPLOAD_EXPERT + 6 * expert + matrix);
    VKMOE_TRY(host_array(layer, matrix));
    vkmoe_expert_cache_forget(w->cache, expert);
    return upload_matrix(layer, fn, &w->host[matrix], expert, weights, size,
                         VKMOE_UPLOAD_EXPERT + 6 * expert + matrix);
}

vkmoe_status vkmoe_layer_set_shared_expert(vkmoe_layer *layer, vkmoe_expert_matrix matrix,
                                           const void *weights, size_t size)
{
    const char *fn = "vkmoe_layer_set_shared_expert";
    VKMOE_TRY(check_matrix(layer, fn, weights, matrix));
    VKMOE_REQUIRE(layer->ctx, layer->params.shared_ffn_dim > 0,
                  "%s: the layer has no shared expert (params.shared_ffn_dim is 0)", fn);
    return upload_matrix(layer, fn, &layer->weights.shared[matrix], 0, weights, size,
                         VKMOE_UPLOAD_SHARED_MATRIX + matrix);
}

vkmoe_status vkmoe_layer_set_expert_bias(vkmoe_layer *layer, uint32_t expert,
                                         vkmoe_expert_matrix matrix, const float *bias, size_t size)
{
    const char *fn = "vkmoe_layer_set_expert_bias";
    VKMOE_TRY(check_matrix(layer, fn, bias, matrix));
    const vkmoe_layer_params *p = &layer->params;
    VKMOE_REQUIRE(layer->ctx, expert < p->experts, "%s: expert %u out of range (experts = %u)", fn,
                  expert, p->experts);
    VKMOE_TRY(check_held(layer, fn, expert));
    vkmoe_upload which = VKMOE_UPLOAD_EXPERT + 6 * expert + 3 + matrix;
    size_t n = matrix == VKMOE_EXPERT_DOWN ? p->dim : p->ffn_dim;
    VKMOE_TRY(check_upload(layer, fn, bias, which, "params.expert_bias is false", size, n * 4));
    VkDeviceSize offset = vkmoe_expert_bias_offset(layer, matrix, expert);
    const vkmoe_expert_cache *cache = layer->weights.cache;
    if (cache && cache->cpu.biases) /* the host experts' copy, laid out alike */
        memcpy(cache->cpu.biases + offset / sizeof(float), bias, n * sizeof(float));
    return upload_vector(layer, &layer->weights.expert_biases, offset, bias, n, which);
}
