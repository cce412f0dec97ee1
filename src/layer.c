/* Layer: validation of params, weights and scratch memory, and the forward
 * that records its stages into one command buffer. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "expert_cache.h"
#include "layer.h"
#include "stages.h"

#define TIMESTAMPS (VKMOE_STAGE_MAX + 1)

typedef void (*stage_recorder)(vkmoe_layer *, VkCommandBuffer, uint32_t);

static bool always(const vkmoe_layer *layer, uint32_t tokens)
{
    (void)layer, (void)tokens;
    return true;
}

static bool unless_one_dispatch(const vkmoe_layer *layer, uint32_t tokens)
{
    return !vkmoe_bucketing_in_one_dispatch(layer, tokens);
}

static bool unless_router_buckets(const vkmoe_layer *layer, uint32_t tokens)
{
    return !vkmoe_router_buckets(layer, tokens);
}

/* With an expert cache, gemm_up's stage runs both GEMMs round by round,
 * with the copies into the slots (expert_cache.h). */
bool vkmoe_experts_resident(const vkmoe_layer *layer)
{
    return !layer->weights.cache && !layer->io.expert_out_given;
}

static bool all_experts_resident(const vkmoe_layer *layer, uint32_t tokens)
{
    (void)tokens;
    return vkmoe_experts_resident(layer);
}

static bool unless_expert_out_given(const vkmoe_layer *layer, uint32_t tokens)
{
    (void)tokens;
    return !layer->io.expert_out_given;
}

static void record_routed_experts(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    if (layer->weights.cache)
        vkmoe_expert_cache_record(layer, cmd, tokens);
    else
        vkmoe_gemm_up_record(layer, cmd, tokens);
    if (vkmoe_shared_beside(layer, tokens))
        vkmoe_shared_up_record(layer, cmd, tokens);
}

static void record_routed_down(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    vkmoe_gemm_down_record(layer, cmd, tokens);
    if (vkmoe_shared_beside(layer, tokens))
        vkmoe_shared_down_record(layer, cmd, tokens);
}

/* The stages of a forward, one row each by its vkmoe_stage value: its name
 * (vkmoe_stage_name, the bench's JSON), whether a forward of so many tokens
 * runs it (a stage that does not records nothing, not even the barrier
 * before it, and times 0 ms) and what records it. */
static const struct {
    const char *name;
    bool (*runs)(const vkmoe_layer *, uint32_t tokens);
    stage_recorder record;
} stages[] = {
    [VKMOE_STAGE_ROUTER] = {"router", always, vkmoe_router_record},
    [VKMOE_STAGE_HISTOGRAM] = {"count", unless_one_dispatch, vkmoe_count_record},
    [VKMOE_STAGE_SCAN] = {"scan", unless_router_buckets, vkmoe_scan_record},
    [VKMOE_STAGE_SCATTER] = {"scatter", unless_one_dispatch, vkmoe_scatter_record},
    [VKMOE_STAGE_GEMM_UP] = {"gemm_up", unless_expert_out_given, record_routed_experts},
    [VKMOE_STAGE_GEMM_DOWN] = {"gemm_down", all_experts_resident, record_routed_down},
    [VKMOE_STAGE_SHARED] = {"shared", vkmoe_shared_runs, vkmoe_shared_record},
    [VKMOE_STAGE_COMBINE] = {"combine", vkmoe_combine_runs, vkmoe_combine_record},
};
_Static_assert(VKMOE_ARRAY_SIZE(stages) == VKMOE_STAGE_MAX, "one row per vkmoe_stage");

const char *vkmoe_stage_name(vkmoe_stage stage)
{
    return (unsigned)stage < VKMOE_STAGE_MAX ? stages[stage].name : "";
}

/* Only experts that receive a slot pad their segment to a whole tile. */
uint32_t vkmoe_plan_rows(const vkmoe_layer *layer, uint32_t tokens)
{
    uint32_t tile = layer->gemm.tile_m, slots = tokens * layer->params.top_k;
    uint32_t busy = layer->params.experts < slots ? layer->params.experts : slots;
    return (uint32_t)vkmoe_round_up(slots + (uint64_t)busy * (tile - 1), tile);
}

static void compute_sizes(vkmoe_layer *layer)
{
    const vkmoe_layer_params *p = &layer->params;
    layer->plan.ld_dim = (uint32_t)vkmoe_round_up(p->dim, VKMOE_ROW_ALIGN);
    layer->plan.ld_ffn = (uint32_t)vkmoe_round_up(p->ffn_dim, VKMOE_ROW_ALIGN);
    layer->plan.max_slots = p->max_tokens * p->top_k;
    layer->plan.max_blocks = (uint32_t)vkmoe_div_up(layer->plan.max_slots, VKMOE_BLOCK_SLOTS);
    layer->plan.max_scan_tiles =
        (uint32_t)vkmoe_div_up((uint64_t)layer->plan.max_blocks * p->experts, VKMOE_SCAN_TILE);
    uint32_t tile = layer->gemm.tile_m;
    layer->plan.max_rows = vkmoe_plan_rows(layer, p->max_tokens);
    layer->plan.max_tiles = layer->plan.max_rows / tile;
    layer->plan.ld_shared = (uint32_t)vkmoe_round_up(p->shared_ffn_dim, VKMOE_ROW_ALIGN);
    layer->plan.token_rows = (uint32_t)vkmoe_round_up(p->max_tokens, tile);
    /* A row tile of the shared expert's hidden rows past the routed
     * experts' lets it run beside them in forwards of up to a tile of
     * tokens (decode) whatever max_tokens is (shared_expert.c). */
    uint64_t routed =
        (uint64_t)layer->plan.max_rows * layer->plan.ld_ffn + tile * layer->plan.ld_shared;
    uint64_t shared = (uint64_t)layer->plan.token_rows * layer->plan.ld_shared;
    layer->plan.hidden_floats = routed > shared ? routed : shared;
    layer->plan.ld_logits =
        (uint32_t)vkmoe_round_up(p->experts + (p->shared_gate ? 1 : 0), VKMOE_ROW_ALIGN);

    vkmoe_scratch_layout *l = &layer->plan.layout;
    VkDeviceSize at = 0;
#define PLACE(field, bytes) (l->field = at, at = vkmoe_round_up(at + (bytes), 16))
    PLACE(ids, 4ull * layer->plan.max_slots);
    PLACE(topk_weight, 4ull * layer->plan.max_slots);
    PLACE(block_counts, 4ull * p->experts * layer->plan.max_blocks);
    PLACE(tile_sums, 4ull * layer->plan.max_scan_tiles);
    PLACE(expert_count, 4ull * p->experts);
    PLACE(expert_base, 4ull * p->experts);
    PLACE(tile_expert, 4ull * layer->plan.max_tiles);
    PLACE(row_slot, 4ull * layer->plan.max_rows);
    PLACE(slot_row, 4ull * layer->plan.max_slots);
    PLACE(dispatch, 4ull * 6);
    PLACE(shared_scale, 4ull * p->max_tokens);
    PLACE(probs, p->statistics ? 4ull * p->max_tokens * p->experts : 0);
    PLACE(lse, p->statistics ? 4ull * p->max_tokens : 0);
    PLACE(logits, 4ull * layer->plan.token_rows * layer->plan.ld_logits);
#undef PLACE
    l->size = at;
}

vkmoe_status vkmoe_layer_allocate_set(vkmoe_layer *layer, VkDescriptorSetLayout set_layout,
                                      VkDescriptorSet *out)
{
    vkmoe_context *ctx = layer->ctx;
    VkDescriptorSetAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = layer->io.descriptor_pool,
        .descriptorSetCount = 1,
        .pSetLayouts = &set_layout,
    };
    return vkmoe_check_vk(ctx, ctx->vk.vkAllocateDescriptorSets(ctx->device, &alloc, out),
                          "vkAllocateDescriptorSets");
}

/* Texel views of expert_out and shared_out for combine (a gather where
 * llvmpipe loads through addresses lane by lane: combine 17.7 -> 10.0 ms
 * at DeepSeek-V3 x0.125, T=512), where rows are whole texels and the
 * views fit; shared_out (token_rows rows) is never larger than expert_out. */
static vkmoe_status create_combine_views(vkmoe_layer *layer, const vkmoe_workspace_sizes *sizes)
{
    vkmoe_context *ctx = layer->ctx;
    const vkmoe_layer_params *p = &layer->params;
    if (p->dim % 4 != 0 || sizes->expert_out / 16 > ctx->properties.limits.maxTexelBufferElements)
        return VKMOE_OK;
    VKMOE_TRY(vkmoe_buffer_view_create(ctx, &layer->work->expert_out, VK_FORMAT_R32G32B32A32_SFLOAT,
                                       sizes->expert_out, &layer->act.expert_out_view));
    if (!p->shared_ffn_dim)
        return VKMOE_OK;
    return vkmoe_buffer_view_create(ctx, &layer->work->shared_out, VK_FORMAT_R32G32B32A32_SFLOAT,
                                    sizes->shared_out, &layer->act.shared_out_view);
}

static vkmoe_status create_descriptors(vkmoe_layer *layer)
{
    vkmoe_context *ctx = layer->ctx;
    uint32_t gemm_sets = 1 + layer->weights.experts[VKMOE_EXPERT_UP].chunk_count +
                         layer->weights.experts[VKMOE_EXPERT_DOWN].chunk_count +
                         (layer->params.shared_ffn_dim ? 2 : 0) + 1 /* combine */;
    VkDescriptorPoolSize sizes[2] = {
        {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = 2},
        {.type = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, .descriptorCount = 3 * gemm_sets},
    };
    VkDescriptorPoolCreateInfo pool = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = 1 + gemm_sets,
        .poolSizeCount = 2,
        .pPoolSizes = sizes,
    };
    VKMOE_TRY(vkmoe_check_vk(
        ctx, ctx->vk.vkCreateDescriptorPool(ctx->device, &pool, NULL, &layer->io.descriptor_pool),
        "vkCreateDescriptorPool"));
    if (!ctx->push_descriptors)
        VKMOE_TRY(vkmoe_layer_allocate_set(layer, ctx->set_layout, &layer->io.descriptor_set));
    VKMOE_TRY(vkmoe_gemm_set_create(layer, layer->act.x_rows_view, layer->weights.router_view,
                                    layer->weights.router_view, &layer->weights.router_source.set));
    /* Without texel views combine reads through addresses, but its set
     * must still hold float views (the GEMMs' set layout): x_rows stands in. */
    VkBufferView z =
        layer->act.expert_out_view ? layer->act.expert_out_view : layer->act.x_rows_view;
    VkBufferView shared = layer->act.shared_out_view ? layer->act.shared_out_view : z;
    VKMOE_TRY(vkmoe_gemm_set_create(layer, z, shared, shared, &layer->act.combine_set));
    VKMOE_TRY(vkmoe_gemm_sources_create(layer, layer->weights.experts));
    return layer->params.shared_ffn_dim ? vkmoe_gemm_sources_create(layer, layer->weights.shared)
                                        : VKMOE_OK;
}

static vkmoe_status create_pipelines(vkmoe_layer *layer)
{
    /* Each stage's specialization constants; none where not listed. */
    static vkmoe_spec (*const spec_of[VKMOE_SHADER_STAGES])(const vkmoe_layer *) = {
        [VKMOE_SHADER_ROUTER] = vkmoe_router_spec,
        [VKMOE_SHADER_COUNT] = vkmoe_experts_spec,
        [VKMOE_SHADER_SCAN] = vkmoe_experts_spec,
        [VKMOE_SHADER_COMBINE] = vkmoe_combine_spec,
    };
    for (uint32_t s = 0; s < VKMOE_SHADER_STAGES; s++) {
        /* the GEMM stages' pipelines are their kernels' */
        if (s == VKMOE_SHADER_GEMM_UP || s == VKMOE_SHADER_GEMM_DOWN)
            continue;
        vkmoe_spec spec = spec_of[s] ? spec_of[s](layer) : (vkmoe_spec){0};
        VKMOE_TRY(vkmoe_pipeline_get(layer->ctx, s, &spec, &layer->pipelines[s]));
    }
    VKMOE_TRY(vkmoe_gemm_kernel_create(layer, &layer->gemm.one_token));
    VKMOE_TRY(vkmoe_gemm_kernel_create(layer, &layer->gemm.decode));
    return vkmoe_gemm_kernel_create(layer, &layer->gemm.prefill);
}

static vkmoe_status create_query_pool(vkmoe_layer *layer)
{
    if (!layer->params.timing)
        return VKMOE_OK;
    vkmoe_context *ctx = layer->ctx;
    VkQueryPoolCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
        .queryType = VK_QUERY_TYPE_TIMESTAMP,
        .queryCount = TIMESTAMPS,
    };
    return vkmoe_check_vk(ctx,
                          ctx->vk.vkCreateQueryPool(ctx->device, &info, NULL, &layer->io.queries),
                          "vkCreateQueryPool");
}

static vkmoe_workspace_sizes workspace_sizes(const vkmoe_layer *layer)
{
    const vkmoe_layer_params *p = &layer->params;
    const vkmoe_layer_plan *plan = &layer->plan;
    return (vkmoe_workspace_sizes){
        .scratch = plan->layout.size,
        .x_rows = (VkDeviceSize)plan->token_rows * plan->ld_dim * 4,
        .hidden = 4 * plan->hidden_floats,
        .expert_out = (VkDeviceSize)plan->max_rows * p->dim * 4,
        .shared_out = p->shared_ffn_dim ? (VkDeviceSize)plan->token_rows * p->dim * 4 : 0,
        .io = (VkDeviceSize)p->max_tokens * p->dim * sizeof(float),
    };
}

/* The layer's sizes and scratch layout, and whether one forward's
 * intermediate rows can be addressed (32-bit element indices). */
static vkmoe_status plan_layer(vkmoe_layer *layer)
{
    compute_sizes(layer);
    if (workspace_sizes(layer).hidden / 4 >= (1ull << 32))
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_layer_create: max_tokens·top_k·ffn_dim is too large for one "
                          "forward; lower max_tokens");
    return VKMOE_OK;
}

void vkmoe_workspace_sizes_max(vkmoe_workspace_sizes *into, const vkmoe_workspace_sizes *sizes)
{
    VkDeviceSize *a = &into->scratch;
    const VkDeviceSize *b = &sizes->scratch;
    for (size_t i = 0; i < sizeof(*sizes) / sizeof(VkDeviceSize); i++)
        a[i] = a[i] > b[i] ? a[i] : b[i];
}

/* The workspace's buffers, in vkmoe_workspace_sizes' order (x and y both
 * of io's size): one list for creating, destroying and counting them. */
static const size_t workspace_members[] = {
    offsetof(vkmoe_workspace, scratch),    offsetof(vkmoe_workspace, x_rows),
    offsetof(vkmoe_workspace, hidden),     offsetof(vkmoe_workspace, expert_out),
    offsetof(vkmoe_workspace, shared_out), offsetof(vkmoe_workspace, x),
    offsetof(vkmoe_workspace, y),
};

static vkmoe_buffer *workspace_buffer(const vkmoe_workspace *ws, size_t i)
{
    return (vkmoe_buffer *)((const char *)ws + workspace_members[i]);
}

vkmoe_status vkmoe_workspace_create(vkmoe_context *ctx, const vkmoe_workspace_sizes *sizes,
                                    vkmoe_workspace *out)
{
    memset(out, 0, sizeof(*out));
    const VkDeviceSize size[] = {sizes->scratch,    sizes->x_rows, sizes->hidden, sizes->expert_out,
                                 sizes->shared_out, sizes->io,     sizes->io};
    _Static_assert(VKMOE_ARRAY_SIZE(size) == VKMOE_ARRAY_SIZE(workspace_members),
                   "a size per workspace buffer");
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(workspace_members); i++) {
        vkmoe_status status = size[i] ? vkmoe_buffer_create(ctx, size[i], VKMOE_MEMORY_DEVICE,
                                                            workspace_buffer(out, i))
                                      : VKMOE_OK;
        if (status != VKMOE_OK) {
            vkmoe_workspace_destroy(ctx, out);
            return status;
        }
    }
    return VKMOE_OK;
}

void vkmoe_workspace_destroy(vkmoe_context *ctx, vkmoe_workspace *ws)
{
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(workspace_members); i++)
        vkmoe_buffer_destroy(ctx, workspace_buffer(ws, i));
    ws->holder = NULL;
}

uint64_t vkmoe_workspace_bytes(const vkmoe_workspace *ws)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(workspace_members); i++)
        bytes += workspace_buffer(ws, i)->size;
    return bytes;
}

/* Weights, the workspace (its own unless `shared`), views, descriptors,
 * pipelines. */
static vkmoe_status allocate_layer(vkmoe_layer *layer, vkmoe_workspace *shared,
                                   vkmoe_slot_pool **slots)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_workspace_sizes sizes = workspace_sizes(layer);
    if (shared)
        layer->work = shared;
    else
        VKMOE_TRY(vkmoe_workspace_create(ctx, &sizes, &layer->own));
    VKMOE_TRY(vkmoe_weights_create(layer, slots));
    VKMOE_TRY(vkmoe_gemm_token_plan_create(layer));
    vkmoe_workspace *w = layer->work;
    VKMOE_TRY(vkmoe_buffer_view_create(ctx, &w->hidden, VK_FORMAT_R32G32B32A32_SFLOAT, sizes.hidden,
                                       &layer->act.hidden_view));
    VKMOE_TRY(vkmoe_buffer_view_create(ctx, &w->x_rows, VK_FORMAT_R32G32B32A32_SFLOAT, sizes.x_rows,
                                       &layer->act.x_rows_view));
    VKMOE_TRY(create_combine_views(layer, &sizes));
    VKMOE_TRY(create_descriptors(layer));
    VKMOE_TRY(create_pipelines(layer));
    return create_query_pool(layer);
}

/* A layer with nothing but its params, GEMM paths and plan: what its
 * pipelines and workspace are chosen from. *out is the caller's to free,
 * whatever the status. */
static vkmoe_status sketch_layer(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                 vkmoe_layer **out)
{
    vkmoe_layer *layer = *out = vkmoe_calloc(1, sizeof(*layer));
    if (!layer)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    layer->ctx = ctx;
    VKMOE_TRY(vkmoe_params_resolve(ctx, params, &layer->params));
    layer->gemm = vkmoe_gemm_choose(ctx, &layer->params);
    return plan_layer(layer);
}

vkmoe_status vkmoe_workspace_sizes_of(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                      vkmoe_workspace_sizes *out)
{
    vkmoe_layer *layer;
    vkmoe_status status = sketch_layer(ctx, params, &layer);
    if (status == VKMOE_OK)
        *out = workspace_sizes(layer);
    free(layer);
    return status;
}

vkmoe_status vkmoe_layer_compile(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                 vkmoe_compiled_layer *out)
{
    vkmoe_layer *layer;
    vkmoe_status status = sketch_layer(ctx, params, &layer);
    if (status == VKMOE_OK)
        status = create_pipelines(layer);
    if (status == VKMOE_OK) {
        *out = (vkmoe_compiled_layer){.params = layer->params, .gemm = layer->gemm};
        memcpy(out->pipelines, layer->pipelines, sizeof(out->pipelines));
    }
    free(layer);
    return status;
}

vkmoe_status vkmoe_layer_create(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                vkmoe_layer **out)
{
    return vkmoe_layer_create_in(ctx, params, NULL, NULL, out);
}

vkmoe_status vkmoe_layer_create_in(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                   vkmoe_workspace *shared, vkmoe_slot_pool **slots,
                                   vkmoe_layer **out)
{
    VKMOE_REQUIRE(ctx, out, "vkmoe_layer_create: out is NULL");
    *out = NULL;
    VKMOE_REQUIRE(ctx, ctx && params, "vkmoe_layer_create: ctx and params must not be NULL");
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    if (ctx->options.compile_only)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_layer_create: the context only compiles pipelines");
    vkmoe_layer_params p;
    VKMOE_TRY(vkmoe_params_resolve(ctx, params, &p));
    vkmoe_layer *layer = vkmoe_calloc(1, sizeof(*layer));
    if (!layer)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    layer->ctx = ctx;
    layer->work = &layer->own;
    layer->model_index = VKMOE_INVALID;
    vkmoe_context_add_layer(ctx);
    layer->params = p;
    layer->gemm = vkmoe_gemm_choose(ctx, &p);
    vkmoe_status status = plan_layer(layer);
    if (status == VKMOE_OK)
        status = allocate_layer(layer, shared, slots);
    if (status != VKMOE_OK) {
        vkmoe_layer_destroy(&layer);
        return status;
    }
    vkmoe_log(ctx, VKMOE_LOG_INFO, "layer: D=%u F=%u E=%u k=%u, %llu bytes of experts", p.dim,
              p.ffn_dim, p.experts, p.top_k,
              3ull * p.experts * layer->weights.experts[VKMOE_EXPERT_DOWN].matrix_bytes);
    *out = layer;
    return VKMOE_OK;
}

void vkmoe_layer_destroy(vkmoe_layer **player)
{
    if (!player || !*player)
        return;
    vkmoe_layer *layer = *player;
    vkmoe_context *ctx = layer->ctx;
    if (layer->model) {
        vkmoe_log(ctx, VKMOE_LOG_ERROR,
                  "vkmoe_layer_destroy: layer %u belongs to a model; vkmoe_model_destroy "
                  "destroys it",
                  layer->model_index);
        return;
    }
    vkmoe_context_wait_pending(ctx);
    if (layer->io.queries)
        ctx->vk.vkDestroyQueryPool(ctx->device, layer->io.queries, NULL);
    if (layer->io.descriptor_pool)
        ctx->vk.vkDestroyDescriptorPool(ctx->device, layer->io.descriptor_pool, NULL);
    VkBufferView views[] = {layer->act.hidden_view, layer->act.x_rows_view,
                            layer->act.expert_out_view, layer->act.shared_out_view};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(views); i++)
        if (views[i])
            ctx->vk.vkDestroyBufferView(ctx->device, views[i], NULL);
    vkmoe_buffer_destroy(ctx, &layer->plan.token_plan);
    vkmoe_workspace_destroy(ctx, &layer->own); /* a model's is the model's to destroy */
    vkmoe_weights_destroy(layer);
    free(layer);
    *player = NULL;
    vkmoe_context_remove_layer(ctx);
}

static vkmoe_status check_ready(const vkmoe_layer *layer, const char *fn, uint32_t tokens)
{
    const vkmoe_context *ctx = layer->ctx;
    VKMOE_REQUIRE(ctx, tokens >= 1 && tokens <= layer->params.max_tokens,
                  "%s: tokens is %u, must be 1..max_tokens (%u)", fn, tokens,
                  layer->params.max_tokens);
    if (layer->weights.held)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "%s: the layer holds only some experts (params.held_experts): it runs "
                          "as a shard of vkmoe_expert_parallel_forward or "
                          "vkmoe_expert_parallel_forward_mpi",
                          fn);
    VKMOE_TRY(vkmoe_weights_check_complete(layer, fn));
    return vkmoe_context_check_alive(ctx);
}

/* Bind x and y as set 0: pushed into cmd where the device has push
 * descriptors (the layer is left as it was), else written into the
 * layer's set, which is then bound. */
static void bind_io(vkmoe_layer *layer, VkCommandBuffer cmd, VkBuffer x, VkDeviceSize x_offset,
                    VkBuffer y, VkDeviceSize y_offset, VkDeviceSize range)
{
    VkDescriptorBufferInfo buffers[2] = {
        {.buffer = x, .offset = x_offset, .range = range},
        {.buffer = y, .offset = y_offset, .range = range},
    };
    VkWriteDescriptorSet writes[2];
    for (uint32_t i = 0; i < 2; i++)
        writes[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = layer->io.descriptor_set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &buffers[i],
        };
    vkmoe_context *ctx = layer->ctx;
    if (ctx->push_descriptors) {
        ctx->vk.vkCmdPushDescriptorSetKHR(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->pipeline_layout,
                                          0, 2, writes);
        return;
    }
    if (!layer->io.set_in_use)
        ctx->vk.vkUpdateDescriptorSets(ctx->device, 2, writes, 0, NULL);
    ctx->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->pipeline_layout, 0, 1,
                                    &layer->io.descriptor_set, 0, NULL);
}

/* Record stages first .. end − 1; a forward split in two (an expert
 * cache) resets the timestamps in its first part. */
static void record_stages(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens,
                          vkmoe_stage first, vkmoe_stage end)
{
    vkmoe_context *ctx = layer->ctx;
    if (layer->io.queries && first == 0) {
        ctx->vk.vkCmdResetQueryPool(cmd, layer->io.queries, 0, TIMESTAMPS);
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, layer->io.queries, 0);
    }
    for (uint32_t s = first; s < end; s++) {
        if (stages[s].runs(layer, tokens)) {
            if (s > 0)
                vkmoe_barrier_compute(ctx, cmd);
            stages[s].record(layer, cmd, tokens);
        }
        if (layer->io.queries)
            ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT,
                                        layer->io.queries, s + 1);
    }
}

/* Record stages first .. end − 1 of a forward into cmd, between barriers
 * that make x visible and y visible to what follows. */
static void record_forward(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens, VkBuffer x,
                           VkDeviceSize x_offset, VkBuffer y, VkDeviceSize y_offset,
                           vkmoe_stage first, vkmoe_stage end)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_recorded before = vkmoe_recorded_so_far();
    layer->io.last_tokens = tokens;
    layer->work->holder = layer;
    bind_io(layer, cmd, x, x_offset, y, y_offset,
            (VkDeviceSize)tokens * layer->params.dim * vkmoe_params_io_bytes(&layer->params));
    vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_ACCESS_MEMORY_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                  VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    record_stages(layer, cmd, tokens, first, end);
    vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                  VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT);
    vkmoe_recorded after = vkmoe_recorded_so_far();
    vkmoe_recorded part = {after.dispatches - before.dispatches, after.barriers - before.barriers};
    if (first > 0)
        part = (vkmoe_recorded){layer->io.recorded.dispatches + part.dispatches,
                                layer->io.recorded.barriers + part.barriers};
    layer->io.recorded = part;
}

vkmoe_status vkmoe_layer_record_forward(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens,
                                        VkBuffer x, VkDeviceSize x_offset, VkBuffer y,
                                        VkDeviceSize y_offset)
{
    const char *fn = "vkmoe_layer_record_forward";
    VKMOE_REQUIRE(NULL, layer, "%s: layer is NULL", fn);
    vkmoe_context *ctx = layer->ctx;
    VKMOE_REQUIRE(ctx, cmd && x && y, "%s: cmd, x and y must not be VK_NULL_HANDLE", fn);
    VkDeviceSize align = ctx->properties.limits.minStorageBufferOffsetAlignment;
    VKMOE_REQUIRE(ctx, x_offset % align == 0 && y_offset % align == 0,
                  "%s: offsets must be multiples of minStorageBufferOffsetAlignment (%llu)", fn,
                  (unsigned long long)align);
    if (layer->weights.cache)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "%s: the layer keeps experts in host memory (expert_budget_bytes, "
                          "cpu_experts), so "
                          "its forward waits for its routing: use vkmoe_layer_forward",
                          fn);
    VKMOE_TRY(check_ready(layer, fn, tokens));
    record_forward(layer, cmd, tokens, x, x_offset, y, y_offset, 0, VKMOE_STAGE_MAX);
    return VKMOE_OK;
}

/* An expert cache's first part: the routing up to scatter of the input in
 * the workspace, its counts read back. */
static vkmoe_status forward_routing(vkmoe_layer *layer, uint32_t tokens)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_workspace *w = layer->work;
    VkCommandBuffer cmd;
    VKMOE_TRY(vkmoe_context_begin(ctx, &cmd));
    record_forward(layer, cmd, tokens, w->x.buffer, 0, w->y.buffer, 0, 0, VKMOE_STAGE_GEMM_UP);
    vkmoe_expert_cache_record_counts(layer, cmd, tokens);
    return vkmoe_context_submit_wait(ctx);
}

/* Record stages from `first` on, submit after the copy queue reaches
 * `copies`, wait, and read y. */
static vkmoe_status forward_rest(vkmoe_layer *layer, uint32_t tokens, vkmoe_stage first,
                                 uint64_t copies, void *y, size_t bytes)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_workspace *w = layer->work;
    VkCommandBuffer cmd;
    VKMOE_TRY(vkmoe_context_begin(ctx, &cmd));
    record_forward(layer, cmd, tokens, w->x.buffer, 0, w->y.buffer, 0, first, VKMOE_STAGE_MAX);
    /* Results read through mapped memory (y, statistics) must reach the host. */
    vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    VKMOE_TRY(vkmoe_context_submit_wait_after(ctx, copies));
    return vkmoe_buffer_read(ctx, &w->y, 0, y, bytes);
}

/* The expert GEMMs of the rounds that need none of this forward's copies
 * on the copy queue nor its host experts (after `copies`, a prefetch's),
 * submitted without waiting: they compute while those run. */
static vkmoe_status forward_early(vkmoe_layer *layer, uint32_t tokens, uint64_t copies)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_workspace *w = layer->work;
    VkCommandBuffer cmd;
    VKMOE_TRY(vkmoe_context_begin_early(ctx, &cmd));
    vkmoe_recorded before = vkmoe_recorded_so_far();
    bind_io(layer, cmd, w->x.buffer, 0, w->y.buffer, 0,
            (VkDeviceSize)tokens * layer->params.dim * vkmoe_params_io_bytes(&layer->params));
    vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_ACCESS_MEMORY_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                  VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    vkmoe_expert_cache_record_until(layer, cmd, tokens, layer->weights.cache->early_rounds);
    vkmoe_recorded after = vkmoe_recorded_so_far();
    layer->io.recorded.dispatches += after.dispatches - before.dispatches;
    layer->io.recorded.barriers += after.barriers - before.barriers;
    VKMOE_TRY(vkmoe_context_submit_early(ctx, copies));
    layer->io.set_in_use = true;
    return VKMOE_OK;
}

/* After the routing: plan, start the copies, run what needs none of them
 * early, the host experts meanwhile, then the rest. */
static vkmoe_status forward_experts(vkmoe_layer *layer, uint32_t tokens, const void *x, void *y,
                                    size_t bytes)
{
    vkmoe_expert_cache *c = layer->weights.cache;
    vkmoe_expert_cache_plan(layer);
    uint64_t prefetched = c->copies_ready;
    VKMOE_TRY(vkmoe_expert_cache_submit_copies(layer));
    if (vkmoe_expert_cache_splits(c))
        VKMOE_TRY(forward_early(layer, tokens, prefetched));
    VKMOE_TRY(vkmoe_expert_cache_run_cpu(layer, tokens, x));
    return forward_rest(layer, tokens, VKMOE_STAGE_GEMM_UP, c->copies_ready, y, bytes);
}

vkmoe_status vkmoe_layer_forward(vkmoe_layer *layer, uint32_t tokens, const void *x, void *y)
{
    const char *fn = "vkmoe_layer_forward";
    VKMOE_REQUIRE(NULL, layer, "%s: layer is NULL", fn);
    vkmoe_context *ctx = layer->ctx;
    VKMOE_REQUIRE(ctx, x && y, "%s: x and y must not be NULL", fn);
    VKMOE_TRY(check_ready(layer, fn, tokens));
    size_t bytes = (size_t)tokens * layer->params.dim * vkmoe_params_io_bytes(&layer->params);
    VKMOE_REQUIRE(ctx,
                  (const char *)x + bytes <= (const char *)y ||
                      (const char *)y + bytes <= (const char *)x,
                  "%s: x and y overlap", fn);
    VKMOE_TRY(vkmoe_buffer_write_rows(ctx, &layer->work->x, 0, x, 1, bytes, bytes));
    if (!layer->weights.cache)
        return forward_rest(layer, tokens, 0, 0, y, bytes);
    vkmoe_status status = forward_routing(layer, tokens);
    if (status == VKMOE_OK)
        status = forward_experts(layer, tokens, x, y, bytes);
    /* The early submission is done, or waited for before the set's next use. */
    layer->io.set_in_use = false;
    vkmoe_expert_cache_finish(layer, status == VKMOE_OK);
    return status;
}

vkmoe_status vkmoe_layer_run_stages(vkmoe_layer *layer, uint32_t tokens, const void *x,
                                    vkmoe_stage first, vkmoe_stage end)
{
    vkmoe_context *ctx = layer->ctx;
    vkmoe_workspace *w = layer->work;
    size_t bytes = (size_t)tokens * layer->params.dim * vkmoe_params_io_bytes(&layer->params);
    VKMOE_TRY(vkmoe_buffer_write_rows(ctx, &w->x, 0, x, 1, bytes, bytes));
    VkCommandBuffer cmd;
    VKMOE_TRY(vkmoe_context_begin(ctx, &cmd));
    record_forward(layer, cmd, tokens, w->x.buffer, 0, w->y.buffer, 0, first, end);
    vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    return vkmoe_context_submit_wait(ctx);
}

vkmoe_status vkmoe_layer_run_rest(vkmoe_layer *layer, uint32_t tokens, vkmoe_stage first, void *y)
{
    size_t bytes = (size_t)tokens * layer->params.dim * vkmoe_params_io_bytes(&layer->params);
    return forward_rest(layer, tokens, first, 0, y, bytes);
}

vkmoe_status vkmoe_layer_prefetch(vkmoe_layer *layer, uint32_t tokens, const void *x)
{
    const char *fn = "vkmoe_layer_prefetch";
    VKMOE_REQUIRE(NULL, layer, "%s: layer is NULL", fn);
    VKMOE_REQUIRE(layer->ctx, x, "%s: x must not be NULL", fn);
    VKMOE_TRY(check_ready(layer, fn, tokens));
    vkmoe_expert_cache *c = layer->weights.cache;
    if (!c || !c->async)
        return VKMOE_OK;
    size_t bytes = (size_t)tokens * layer->params.dim * vkmoe_params_io_bytes(&layer->params);
    VKMOE_TRY(vkmoe_buffer_write_rows(layer->ctx, &layer->work->x, 0, x, 1, bytes, bytes));
    vkmoe_status status = forward_routing(layer, tokens);
    /* The scratch holds the prediction's routing, not a forward's results. */
    layer->io.last_tokens = 0;
    return status == VKMOE_OK ? vkmoe_expert_cache_prefetch(layer) : status;
}

vkmoe_status vkmoe_layer_cache_stats(const vkmoe_layer *layer, vkmoe_cache_stats *stats)
{
    VKMOE_REQUIRE(NULL, layer && stats,
                  "vkmoe_layer_cache_stats: layer and stats must not be NULL");
    if (!layer->weights.cache)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_STATE,
                          "vkmoe_layer_cache_stats: the layer keeps every expert on the device "
                          "(no expert_budget_bytes), so it has no cache");
    *stats = layer->weights.cache->stats;
    return VKMOE_OK;
}

vkmoe_status vkmoe_layer_expert_counts(const vkmoe_layer *layer, uint32_t *counts, uint32_t n)
{
    VKMOE_REQUIRE(NULL, layer, "vkmoe_layer_expert_counts: layer is NULL");
    VKMOE_REQUIRE(layer->ctx, counts && n >= layer->params.experts,
                  "vkmoe_layer_expert_counts: counts must hold %u values (n = %u)",
                  layer->params.experts, n);
    VKMOE_TRY(vkmoe_context_check_alive(layer->ctx));
    VKMOE_TRY(vkmoe_layer_check_results(layer, "vkmoe_layer_expert_counts"));
    return vkmoe_buffer_read(layer->ctx, &layer->work->scratch, layer->plan.layout.expert_count,
                             counts, (VkDeviceSize)layer->params.experts * sizeof(uint32_t));
}

vkmoe_status vkmoe_layer_check_results(const vkmoe_layer *layer, const char *fn)
{
    const vkmoe_layer *holder = layer->work->holder;
    if (!layer->io.last_tokens)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_STATE,
                          "%s: no forward has run yet, or vkmoe_layer_prefetch has since", fn);
    if (holder != layer)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_STATE,
                          "%s: layer %u shares its model's scratch memory, and layer %u's "
                          "forward has run since its own: read a layer's results before the "
                          "next layer's forward",
                          fn, layer->model_index, holder->model_index);
    return VKMOE_OK;
}

/* A lent array's chunks may span the same pages (a checkpoint's gate,
 * up and down matrices interleaved): its experts' bytes are counted. */
static uint64_t array_bytes(const vkmoe_expert_array *a)
{
    if (a->lent)
        return a->count * a->matrix_bytes;
    uint64_t bytes = 0;
    for (uint32_t c = 0; c < a->chunk_count; c++)
        bytes += a->chunks[c].size;
    return bytes;
}

void vkmoe_layer_memory_of(const vkmoe_layer *layer, vkmoe_memory_report *r)
{
    const vkmoe_layer_weights *w = &layer->weights;
    memset(r, 0, sizeof(*r));
    for (int m = 0; m < 3; m++) {
        r->experts += array_bytes(&w->experts[m]);
        r->shared_experts += array_bytes(&w->shared[m]);
        r->host_experts += array_bytes(&w->host[m]);
        if (w->host[m].lent)
            r->host_experts_mapped += array_bytes(&w->host[m]);
    }
    r->experts += w->expert_biases.size + w->held_map.size;
    r->routers = w->router.size + w->router_vectors.size;
    r->scratch = layer->plan.token_plan.size + vkmoe_workspace_bytes(layer->work);
    r->total = r->experts + r->shared_experts + r->routers + r->scratch;
}

uint64_t vkmoe_layer_borrowed_bytes(const vkmoe_layer *layer)
{
    const vkmoe_expert_cache *c = layer->weights.cache;
    if (!c || c->pool->first == layer)
        return 0;
    uint64_t bytes = 0;
    for (int m = 0; m < 3; m++)
        bytes += array_bytes(&layer->weights.experts[m]);
    return bytes;
}

vkmoe_status vkmoe_layer_memory(const vkmoe_layer *layer, vkmoe_memory_report *report)
{
    VKMOE_REQUIRE(NULL, layer && report, "vkmoe_layer_memory: layer and report must not be NULL");
    vkmoe_layer_memory_of(layer, report);
    return VKMOE_OK;
}

vkmoe_status vkmoe_layer_params_of(const vkmoe_layer *layer, vkmoe_layer_params *params)
{
    VKMOE_REQUIRE(NULL, layer && params,
                  "vkmoe_layer_params_of: layer and params must not be NULL");
    *params = layer->params;
    return VKMOE_OK;
}

vkmoe_status vkmoe_layer_timings(const vkmoe_layer *layer, vkmoe_timings *timings)
{
    VKMOE_REQUIRE(NULL, layer && timings,
                  "vkmoe_layer_timings: layer and timings must not be NULL");
    vkmoe_context *ctx = layer->ctx;
    if (!layer->io.queries)
        return vkmoe_fail(ctx, VKMOE_ERROR_STATE,
                          "vkmoe_layer_timings: the layer was created without params.timing");
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    if (!layer->io.last_tokens)
        return vkmoe_fail(ctx, VKMOE_ERROR_STATE, "vkmoe_layer_timings: no forward has run yet");
    uint64_t ticks[TIMESTAMPS];
    VkResult result = ctx->vk.vkGetQueryPoolResults(
        ctx->device, layer->io.queries, 0, TIMESTAMPS, sizeof(ticks), ticks, sizeof(uint64_t),
        VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    VKMOE_TRY(vkmoe_check_vk(ctx, result, "vkGetQueryPoolResults"));
    double ms_per_tick = ctx->timestamp_period_ns * 1e-6;
    for (uint32_t s = 0; s < VKMOE_STAGE_MAX; s++)
        timings->stage_ms[s] = (double)(ticks[s + 1] - ticks[s]) * ms_per_tick;
    timings->total_ms = (double)(ticks[VKMOE_STAGE_MAX] - ticks[0]) * ms_per_tick;
    return VKMOE_OK;
}

vkmoe_status vkmoe_layer_debug_read(vkmoe_layer *layer, vkmoe_debug_buffer which, void *dst,
                                    size_t size)
{
    VKMOE_TRY(vkmoe_layer_check_results(layer, "vkmoe_layer_debug_read"));
    const vkmoe_scratch_layout *l = &layer->plan.layout;
    const vkmoe_buffer *buf = &layer->work->scratch;
    VkDeviceSize offset = 0;
    switch (which) {
    case VKMOE_DEBUG_IDS:
        offset = l->ids;
        break;
    case VKMOE_DEBUG_TOPK_WEIGHT:
        offset = l->topk_weight;
        break;
    case VKMOE_DEBUG_BLOCK_COUNTS:
        offset = l->block_counts;
        break;
    case VKMOE_DEBUG_EXPERT_BASE:
        offset = l->expert_base;
        break;
    case VKMOE_DEBUG_TILE_EXPERT:
        offset = l->tile_expert;
        break;
    case VKMOE_DEBUG_ROW_SLOT:
        offset = l->row_slot;
        break;
    case VKMOE_DEBUG_SLOT_ROW:
        offset = l->slot_row;
        break;
    case VKMOE_DEBUG_DISPATCH:
        offset = l->dispatch;
        break;
    case VKMOE_DEBUG_HIDDEN:
        buf = &layer->work->hidden;
        break;
    case VKMOE_DEBUG_EXPERT_OUT:
        buf = &layer->work->expert_out;
        break;
    case VKMOE_DEBUG_SHARED_OUT:
        buf = &layer->work->shared_out;
        break;
    case VKMOE_DEBUG_SHARED_SCALE:
        offset = l->shared_scale;
        break;
    }
    VKMOE_REQUIRE(layer->ctx, offset + size <= buf->size, "debug read past the buffer");
    return vkmoe_buffer_read(layer->ctx, buf, offset, dst, size);
}
