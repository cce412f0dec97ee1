/* Stages VKMOE_STAGE_GEMM_UP and _GEMM_DOWN, the expert GEMMs
 * (shaders/gemm_up.comp, gemm_down.comp, shaders/common/expert_gemm.glsl),
 * on the layer's path, and everything else of the GEMMs (gemm.h): each
 * stage's shader is built once per path; the token plan and the sources'
 * sets are made here. The routed experts' grids come from the scan stage
 * (indirect dispatch), so the host never learns how many rows were used;
 * the shared expert's pass (shared_expert.c) has a direct grid. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "expert_cache.h"
#include "stages.h"

_Static_assert(VKMOE_ACTIVATION_LINEAR > VKMOE_ACTIVATION_SWIGLU_CLAMPED,
               "the router's projection-only activation is past the public ones");

/* The GEMM grids fold row tiles into y and z, at most this many along y
 * (as scan.comp does for the indirect grids). */
#define GRID_Y 32768u

/* The push fields that each source of a pass sets (dispatch()). */
typedef struct gemm_source_push {
    uint32_t expert_first, expert_count, matrix_texels;
} gemm_source_push;

typedef struct gemm_up_push {
    VkDeviceAddress tile_expert, row_slot, hidden, gate_bias, up_bias;
    uint32_t ffn, ld_dim, ld_ffn, top_k, max_tiles, rows;
    gemm_source_push source;
    float limit, alpha;
    VkDeviceAddress input_scale, expert_slot;
    VkDeviceAddress x_rows; /* the logits on the GEMV path (A_FROM_X): they write x_rows */
    uint32_t dim, io_type;
} gemm_up_push;
_Static_assert(sizeof(gemm_up_push) == 120 && offsetof(gemm_up_push, source) == 64 &&
                   offsetof(gemm_up_push, input_scale) == 88 &&
                   offsetof(gemm_up_push, x_rows) == 104 && sizeof(gemm_up_push) <= VKMOE_PUSH_SIZE,
               "gemm_up_push must mirror gemm_up.comp");

typedef struct gemm_down_push {
    VkDeviceAddress tile_expert, row_slot, expert_out, down_bias;
    uint32_t dim, ld_ffn, max_tiles, rows;
    gemm_source_push source;
    uint32_t hidden_texel;
    VkDeviceAddress expert_slot;
    vkmoe_down_combine combine;
} gemm_down_push;
_Static_assert(sizeof(gemm_down_push) == 128 && offsetof(gemm_down_push, source) == 48 &&
                   offsetof(gemm_down_push, hidden_texel) == 60 &&
                   offsetof(gemm_down_push, combine) == 72 &&
                   sizeof(gemm_down_push) <= VKMOE_PUSH_SIZE,
               "gemm_down_push must mirror gemm_down.comp");

/* The plain tiled path's rows per tile: each invocation of its 4-subgroup
 * workgroup multiplies 4x4 blocks of a rows x 64 tile, so a tile of as many
 * rows as a subgroup has lanes (at least 32) leaves none idle (64 rows for
 * AMD's 64-lane subgroups), where its staged tiles fit in shared memory
 * (f32 A: rows x 16, B: 16 x 64, C: rows x 64; 24 KiB at 64 rows). The
 * matrix-core path's two 16-row accumulators per subgroup fix it at 32. */
static uint32_t tiled_rows(const vkmoe_context *ctx, uint32_t lanes)
{
    uint32_t rows = (uint32_t)vkmoe_round_up(lanes > 32 ? lanes : 32, 16);
    uint64_t shared_bytes = 4ull * (rows * 16 + 16 * 64 + rows * 64);
    return shared_bytes <= ctx->properties.limits.maxComputeSharedMemorySize ? rows : 32;
}

/* The matrix-core path's shared memory: f16 A (32 x 32) and B (32 x 128),
 * f32 C (32 x 128) (shaders/common/tiled_gemm.glsl). */
#define COOPMAT_SHARED_BYTES (32u * 32 * 2 + 32u * VKMOE_COOPMAT_COLUMNS * (2 + 4))

/* Whether workgroups of 4 subgroups (the tiled and GEMV paths) fit. */
static bool four_subgroups_fit(const vkmoe_context *ctx)
{
    const VkPhysicalDeviceLimits *limits = &ctx->properties.limits;
    uint32_t workgroup = VKMOE_TILED_SUBGROUPS * ctx->gemm_lanes;
    return workgroup <= limits->maxComputeWorkGroupSize[0] &&
           workgroup <= limits->maxComputeWorkGroupInvocations;
}

void vkmoe_gemm_auto(const vkmoe_context *ctx, vkmoe_gemm_path *decode, vkmoe_gemm_path *prefill,
                     const char **why)
{
    const char *reason;
    if (vkmoe_context_cpu_shaped(ctx)) {
        *decode = *prefill = VKMOE_GEMM_REGISTER;
        reason = "a CPU device: the register path, shaped for it and measured there";
    } else if (!four_subgroups_fit(ctx)) {
        *decode = *prefill = VKMOE_GEMM_REGISTER;
        reason = "workgroups of 4 subgroups do not fit the device: the register path";
    } else {
        *decode = ctx->subgroup_arithmetic ? VKMOE_GEMM_GEMV : VKMOE_GEMM_REGISTER;
        *prefill = VKMOE_GEMM_TILED;
        reason = ctx->subgroup_arithmetic
                     ? "a GPU: GEMV for decode, tiled for prefill, chosen by their compile "
                       "statistics (./dev shader-stats), not yet by measurement"
                     : "a GPU without subgroup arithmetic: the register path for decode, "
                       "tiled for prefill, not yet measured";
    }
    if (why)
        *why = reason;
}

vkmoe_status vkmoe_context_auto_gemm_paths(const vkmoe_context *ctx, vkmoe_gemm_path *decode,
                                           vkmoe_gemm_path *prefill, const char **why)
{
    VKMOE_REQUIRE(ctx, ctx && decode && prefill,
                  "vkmoe_context_auto_gemm_paths: ctx, decode and prefill must not be NULL");
    vkmoe_gemm_auto(ctx, decode, prefill, why);
    return VKMOE_OK;
}

/* The shape of one kernel of a path, without its logits. */
static vkmoe_gemm_kernel shape_of(vkmoe_gemm_path path, uint32_t lanes, bool gated,
                                  uint32_t gemv_columns)
{
    vkmoe_gemm_kernel k = {.path = path, .gemv_rows = VKMOE_GEMV_PASS};
    if (path == VKMOE_GEMM_REGISTER) {
        /* A lane owns 8 columns: 4 of each of the gate and up projections
         * (making 4 hidden columns), 8 of the one ReLU projection, 8 of the
         * down projection. */
        k.workgroup = lanes;
        k.up_columns = gated ? 4 * lanes : 8 * lanes;
        k.down_columns = 8 * lanes;
    } else if (path == VKMOE_GEMM_GEMV) {
        /* A subgroup takes a column at a time (shaders/common/gemv_gemm.glsl). */
        k.workgroup = VKMOE_GEMV_SUBGROUPS * lanes;
        k.up_columns = k.down_columns = gemv_columns;
    } else {
        /* Four subgroups make a tile of 64 columns of B (128 with matrix
         * cores): gated, half of each projection
         * (shaders/common/tiled_gemm.glsl). */
        uint32_t columns = path == VKMOE_GEMM_COOPMAT ? VKMOE_COOPMAT_COLUMNS : VKMOE_TILED_COLUMNS;
        k.workgroup = VKMOE_TILED_SUBGROUPS * lanes;
        k.up_columns = gated ? columns / 2 : columns;
        k.down_columns = columns;
    }
    return k;
}

/* The shape of one kernel of a path, with the router's logits: one
 * projection, as for ReLU experts. On GPUs a decode forward's logits took
 * the register path's one workgroup of one subgroup for every 8·lanes
 * experts (Qwen3-30B-A3B: one subgroup reading all 1 MiB of the router
 * for a token); on the GEMV path one workgroup per gemv_columns experts
 * (4: a subgroup each). */
static vkmoe_gemm_kernel kernel_of(vkmoe_gemm_path path, uint32_t lanes, bool gated,
                                   uint32_t gemv_columns)
{
    vkmoe_gemm_kernel k = shape_of(path, lanes, gated, gemv_columns);
    k.logits_path = path == VKMOE_GEMM_COOPMAT ? VKMOE_GEMM_REGISTER : path;
    vkmoe_gemm_kernel logits = shape_of(k.logits_path, lanes, false, gemv_columns);
    k.logits_workgroup = logits.workgroup;
    k.logits_columns = logits.up_columns;
    return k;
}

vkmoe_gemm_config vkmoe_gemm_choose(const vkmoe_context *ctx, const vkmoe_layer_params *p)
{
    uint32_t lanes = ctx->gemm_lanes;
    bool gated = vkmoe_params_gated(p);
    vkmoe_gemm_path decode = p->gemm_path, prefill = p->gemm_path;
    if (p->gemm_path == VKMOE_GEMM_AUTO)
        vkmoe_gemm_auto(ctx, &decode, &prefill, NULL);
    /* The tile height is the plan's, shared by both kernels: the tiled
     * path's where it runs (the GEMV and register paths take any multiple
     * of 16). */
    uint32_t tile_m = prefill == VKMOE_GEMM_TILED ? tiled_rows(ctx, lanes) : 32;
    vkmoe_gemm_config c = {
        .tile_m = tile_m,
        .lanes = lanes,
        .decode = kernel_of(decode, lanes, gated, ctx->gemv_columns),
        .prefill = kernel_of(prefill, lanes, gated, ctx->gemv_columns),
    };
    c.one_token = c.decode;
    c.one_token.gemv_rows = 1;
    return c;
}

const vkmoe_gemm_kernel *vkmoe_gemm_kernel_for(const vkmoe_layer *layer, uint32_t tokens)
{
    if (layer->io.kernel_tokens)
        tokens = layer->io.kernel_tokens;
    if (tokens == 1)
        return &layer->gemm.one_token;
    return tokens <= VKMOE_GEMV_PASS ? &layer->gemm.decode : &layer->gemm.prefill;
}

vkmoe_status vkmoe_gemm_check(const vkmoe_context *ctx, const vkmoe_layer_params *p, const char *fn)
{
    VKMOE_REQUIRE(ctx, vkmoe_gemm_path_name(p->gemm_path) != NULL, "%s: unknown gemm_path %d", fn,
                  (int)p->gemm_path);
    uint32_t tiled_workgroup = VKMOE_TILED_SUBGROUPS * ctx->gemm_lanes;
    if (p->gemm_path >= VKMOE_GEMM_TILED && !four_subgroups_fit(ctx))
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "%s: the tiled and GEMV paths need workgroups of 4 subgroups (%u "
                          "invocations), over the device's limit",
                          fn, tiled_workgroup);
    if (p->gemm_path == VKMOE_GEMM_GEMV && !ctx->subgroup_arithmetic)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "%s: VKMOE_GEMM_GEMV needs subgroup arithmetic in compute shaders", fn);
    uint32_t shared_bytes = ctx->properties.limits.maxComputeSharedMemorySize;
    if (p->gemm_path == VKMOE_GEMM_COOPMAT && COOPMAT_SHARED_BYTES > shared_bytes)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "%s: VKMOE_GEMM_COOPMAT needs %u bytes of shared memory, over the "
                          "device's %u",
                          fn, COOPMAT_SHARED_BYTES, shared_bytes);
    if (p->gemm_path == VKMOE_GEMM_COOPMAT && !ctx->info.cooperative_matrix &&
        !ctx->options.emulated_matrix_cores)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "%s: VKMOE_GEMM_COOPMAT needs VK_KHR_cooperative_matrix or "
                          "VK_NV_cooperative_matrix with 16x16x16 "
                          "f16 multiplies, fp16 arithmetic and the Vulkan memory model, "
                          "enabled on a device vkmoe created "
                          "(vkmoe_device_info.cooperative_matrix)",
                          fn);
    return VKMOE_OK;
}

const char *vkmoe_gemm_path_name(vkmoe_gemm_path path)
{
    static const char *const names[] = {"auto", "register", "tiled", "coopmat", "gemv"};
    return (unsigned)path < VKMOE_ARRAY_SIZE(names) ? names[path] : NULL;
}

vkmoe_status vkmoe_gemm_path_parse(const char *name, vkmoe_gemm_path *path)
{
    VKMOE_REQUIRE(NULL, name && path, "vkmoe_gemm_path_parse: name and path must not be NULL");
    for (int i = 0; vkmoe_gemm_path_name((vkmoe_gemm_path)i); i++)
        if (!strcmp(name, vkmoe_gemm_path_name((vkmoe_gemm_path)i))) {
            *path = (vkmoe_gemm_path)i;
            return VKMOE_OK;
        }
    char known[64] = "";
    for (int i = 0; vkmoe_gemm_path_name((vkmoe_gemm_path)i); i++)
        snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s", i ? ", " : "",
                 vkmoe_gemm_path_name((vkmoe_gemm_path)i));
    return vkmoe_fail(NULL, VKMOE_ERROR_INVALID_ARGUMENT, "unknown GEMM path \"%s\" (%s)", name,
                      known);
}

vkmoe_status vkmoe_gemm_set_create(vkmoe_layer *layer, VkBufferView a, VkBufferView w0,
                                   VkBufferView w1, VkDescriptorSet *out)
{
    VKMOE_TRY(vkmoe_layer_allocate_set(layer, layer->ctx->gemm_set_layout, out));
    VkDescriptorSet set = *out;
    VkBufferView views[3] = {a, w0, w1};
    VkWriteDescriptorSet writes[3];
    for (uint32_t i = 0; i < 3; i++)
        writes[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
            .pTexelBufferView = &views[i],
        };
    layer->ctx->vk.vkUpdateDescriptorSets(layer->ctx->device, 3, writes, 0, NULL);
    return VKMOE_OK;
}

/* One source per chunk of the array: which experts its view holds. */
static vkmoe_status list_sources(vkmoe_layer *layer, vkmoe_expert_array *array)
{
    array->sources = vkmoe_calloc(array->chunk_count, sizeof(*array->sources));
    if (!array->sources)
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t c = 0; c < array->chunk_count; c++) {
        uint32_t first = c * array->per_chunk, left = array->count - first;
        array->sources[c] = (vkmoe_gemm_source){
            .expert_first = first,
            .expert_count = left < array->per_chunk ? left : array->per_chunk,
            .matrix_texels =
                (uint32_t)(array->matrix_bytes / vkmoe_weight_texel_bytes(array->type)),
        };
    }
    return VKMOE_OK;
}

vkmoe_status vkmoe_gemm_sources_create(vkmoe_layer *layer, vkmoe_expert_array arrays[3])
{
    const vkmoe_expert_array *gate = &arrays[VKMOE_EXPERT_GATE];
    vkmoe_expert_array *up = &arrays[VKMOE_EXPERT_UP], *down = &arrays[VKMOE_EXPERT_DOWN];
    VKMOE_TRY(list_sources(layer, up));
    VKMOE_TRY(list_sources(layer, down));
    for (uint32_t c = 0; c < up->chunk_count; c++)
        VKMOE_TRY(vkmoe_gemm_set_create(layer, layer->act.x_rows_view,
                                        gate->chunks ? gate->views[c] : up->views[c], up->views[c],
                                        &up->sources[c].set));
    for (uint32_t c = 0; c < down->chunk_count; c++)
        VKMOE_TRY(vkmoe_gemm_set_create(layer, layer->act.hidden_view, down->views[c],
                                        down->views[c], &down->sources[c].set));
    return VKMOE_OK;
}

/* Row r of a per-token pass (router logits, shared expert) is token r: an
 * identity row map and one expert for every tile, written once; then the
 * one-token combine's counts (combine.c), 0 between forwards. */
vkmoe_status vkmoe_gemm_token_plan_create(vkmoe_layer *layer)
{
    uint32_t rows = layer->plan.token_rows, tiles = rows / layer->gemm.tile_m;
    uint32_t blocks = vkmoe_combine_blocks(layer);
    vkmoe_context *ctx = layer->ctx;
    size_t words = (size_t)tiles + rows + blocks;
    VKMOE_TRY(vkmoe_buffer_create(ctx, 4ull * words, VKMOE_MEMORY_DEVICE, &layer->plan.token_plan));
    uint32_t *plan = vkmoe_calloc(words, sizeof(*plan));
    if (!plan)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t r = 0; r < rows; r++)
        plan[tiles + r] = r;
    size_t bytes = 4 * words;
    vkmoe_status status =
        vkmoe_buffer_write_rows(ctx, &layer->plan.token_plan, 0, plan, 1, bytes, bytes);
    free(plan);
    return status;
}

void vkmoe_token_plan(const vkmoe_layer *layer, VkDeviceAddress *tile_expert,
                      VkDeviceAddress *row_slot)
{
    *tile_expert = layer->plan.token_plan.address;
    *row_slot =
        layer->plan.token_plan.address + 4ull * (layer->plan.token_rows / layer->gemm.tile_m);
}

VkDeviceAddress vkmoe_combine_arrivals(const vkmoe_layer *layer)
{
    return layer->plan.token_plan.address +
           4ull * (layer->plan.token_rows / layer->gemm.tile_m + layer->plan.token_rows);
}

/* A GEMM pipeline's specialization constants (shaders/common/expert_gemm.glsl):
 * the GEMV path's depth steps in flight, columns a workgroup and rows a pass
 * (the kernel's, capped by the weight type's: one pipeline where the two
 * kernels' passes come to the same; 0 on other paths, which have none),
 * and the words of the weights' texels. */
static vkmoe_spec gemm_spec_of(const vkmoe_layer *layer, vkmoe_gemm_path path, uint32_t workgroup,
                               uint32_t weight_type, uint32_t activation, uint32_t gemv_rows)
{
    vkmoe_weight_type type = (vkmoe_weight_type)weight_type;
    uint32_t type_rows = vkmoe_weight_gemv_rows(type);
    bool gemv = path == VKMOE_GEMM_GEMV;
    return (vkmoe_spec){
        .count = 8,
        .values = {layer->gemm.tile_m, workgroup, weight_type, activation,
                   gemv ? layer->ctx->gemv_steps : 0, gemv ? layer->ctx->gemv_columns : 0,
                   gemv ? (gemv_rows < type_rows ? gemv_rows : type_rows) : 0,
                   vkmoe_weight_texel_bytes(type) / 4},
    };
}

static vkmoe_spec gemm_spec(const vkmoe_layer *layer, const vkmoe_gemm_kernel *k,
                            vkmoe_expert_matrix matrix)
{
    return gemm_spec_of(layer, k->path, k->workgroup,
                        (uint32_t)vkmoe_matrix_type(&layer->params, matrix),
                        (uint32_t)layer->params.activation, k->gemv_rows);
}

/* The shader of GEMM stage `stage` (VKMOE_SHADER_GEMM_UP or _DOWN) on a path. */
static vkmoe_shader gemm_shader(const vkmoe_layer *layer, vkmoe_gemm_path path, vkmoe_shader stage)
{
    bool up = stage == VKMOE_SHADER_GEMM_UP;
    switch (path) {
    case VKMOE_GEMM_TILED:
        return up ? VKMOE_SHADER_GEMM_UP_TILED : VKMOE_SHADER_GEMM_DOWN_TILED;
    case VKMOE_GEMM_GEMV:
        return up ? VKMOE_SHADER_GEMM_UP_GEMV : VKMOE_SHADER_GEMM_DOWN_GEMV;
    case VKMOE_GEMM_COOPMAT:
        if (layer->ctx->options.emulated_matrix_cores)
            return up ? VKMOE_SHADER_GEMM_UP_COOPMAT_EMULATED
                      : VKMOE_SHADER_GEMM_DOWN_COOPMAT_EMULATED;
        if (layer->ctx->cooperative_matrix_khr)
            return up ? VKMOE_SHADER_GEMM_UP_COOPMAT_KHR : VKMOE_SHADER_GEMM_DOWN_COOPMAT_KHR;
        return up ? VKMOE_SHADER_GEMM_UP_COOPMAT : VKMOE_SHADER_GEMM_DOWN_COOPMAT;
    default:
        return stage;
    }
}

/* The router logits' shader on a path: on the GEMV path they read x
 * itself and write x_rows (gemm_up.comp's A_FROM_X), the input_rows
 * stage's work without its dispatch. */
static vkmoe_shader logits_shader(const vkmoe_layer *layer, vkmoe_gemm_path path)
{
    return path == VKMOE_GEMM_GEMV ? VKMOE_SHADER_GEMM_UP_GEMV_X
                                   : gemm_shader(layer, path, VKMOE_SHADER_GEMM_UP);
}

bool vkmoe_logits_read_x(const vkmoe_layer *layer, uint32_t tokens)
{
    return !layer->io.routes_given &&
           vkmoe_gemm_kernel_for(layer, tokens)->logits_path == VKMOE_GEMM_GEMV;
}

vkmoe_status vkmoe_gemm_kernel_create(vkmoe_layer *layer, vkmoe_gemm_kernel *k)
{
    vkmoe_spec up = gemm_spec(layer, k, VKMOE_EXPERT_UP);
    vkmoe_spec down = gemm_spec(layer, k, VKMOE_EXPERT_DOWN);
    vkmoe_spec logits = gemm_spec_of(layer, k->logits_path, k->logits_workgroup, VKMOE_WEIGHT_F32,
                                     VKMOE_ACTIVATION_LINEAR, k->gemv_rows);
    VKMOE_TRY(vkmoe_pipeline_get(layer->ctx, gemm_shader(layer, k->path, VKMOE_SHADER_GEMM_UP), &up,
                                 &k->up));
    VKMOE_TRY(vkmoe_pipeline_get(layer->ctx, gemm_shader(layer, k->path, VKMOE_SHADER_GEMM_DOWN),
                                 &down, &k->down));
    return vkmoe_pipeline_get(layer->ctx, logits_shader(layer, k->logits_path), &logits,
                              &k->logits);
}

/* One dispatch per source: each covers every row tile and works on the
 * tiles whose expert its weight views hold. `push` points at the pass's
 * push block and `source` at its source fields, filled in per source. */
static void dispatch(vkmoe_layer *layer, VkCommandBuffer cmd, VkPipeline pipeline,
                     const vkmoe_gemm_rows *rows, const void *push, uint32_t push_size,
                     gemm_source_push *source, int indirect_grid, uint32_t groups_x, uint32_t tiles)
{
    vkmoe_context *ctx = layer->ctx;
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    for (uint32_t s = 0; s < rows->source_count; s++) {
        const vkmoe_gemm_source *from = &rows->sources[s];
        *source = (gemm_source_push){from->expert_first, from->expert_count, from->matrix_texels};
        ctx->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, ctx->pipeline_layout,
                                        1, 1, &from->set, 0, NULL);
        ctx->vk.vkCmdPushConstants(cmd, ctx->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                   push_size, push);
        if (indirect_grid >= 0) {
            vkmoe_count_recorded(1, 0);
            ctx->vk.vkCmdDispatchIndirect(cmd, layer->work->scratch.buffer,
                                          layer->plan.layout.dispatch +
                                              (VkDeviceSize)indirect_grid * 3 * sizeof(uint32_t));
            continue;
        }
        uint32_t y = tiles < GRID_Y ? tiles : GRID_Y;
        ctx->vk.vkCmdDispatch(cmd, groups_x, y, (uint32_t)vkmoe_div_up(tiles, GRID_Y));
        vkmoe_count_recorded(1, 0);
    }
}

static gemm_up_push up_push(const vkmoe_layer *layer, const vkmoe_gemm_rows *rows)
{
    const vkmoe_layer_params *p = &layer->params;
    return (gemm_up_push){
        .tile_expert = rows->tile_expert,
        .row_slot = rows->row_slot,
        .hidden = rows->hidden,
        .gate_bias = rows->gate_bias,
        .up_bias = rows->up_bias,
        .ffn = rows->ffn,
        .ld_dim = layer->plan.ld_dim,
        .ld_ffn = rows->ld_ffn,
        .top_k = rows->top_k,
        .max_tiles = rows->max_tiles,
        .rows = rows->rows,
        .limit = p->swiglu_limit,
        .alpha = p->swiglu_alpha,
        .input_scale = rows->input_scale,
        .expert_slot = rows->expert_slot,
    };
}

void vkmoe_gemm_up_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_kernel *k,
                        const vkmoe_gemm_rows *rows, int indirect_grid, uint32_t tiles)
{
    gemm_up_push push = up_push(layer, rows);
    uint32_t groups_x = (uint32_t)vkmoe_div_up(rows->ld_ffn, k->up_columns);
    dispatch(layer, cmd, k->up, rows, &push, sizeof(push), &push.source, indirect_grid, groups_x,
             tiles);
}

/* The router's logits are gemm_up's shader with VKMOE_ACTIVATION_LINEAR and
 * f32 weights: its output rows (.hidden) are the logits, its columns
 * (.ffn) the experts and the shared gate, one row per token. */
void vkmoe_router_gemm_pass(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    const vkmoe_layer_params *p = &layer->params;
    uint32_t tiles = (uint32_t)vkmoe_div_up(tokens, layer->gemm.tile_m);
    vkmoe_gemm_rows rows = {
        .sources = &layer->weights.router_source,
        .source_count = 1,
        .hidden = layer->work->scratch.address + layer->plan.layout.logits,
        .ffn = p->experts + (p->shared_gate ? 1 : 0),
        .ld_ffn = layer->plan.ld_logits,
        .top_k = 1,
        .max_tiles = tiles,
        .rows = tokens,
    };
    vkmoe_token_plan(layer, &rows.tile_expert, &rows.row_slot);
    gemm_up_push push = up_push(layer, &rows);
    push.x_rows = layer->work->x_rows.address;
    push.dim = p->dim;
    push.io_type = (uint32_t)p->io_type;
    const vkmoe_gemm_kernel *k = vkmoe_gemm_kernel_for(layer, tokens);
    uint32_t groups_x = (uint32_t)vkmoe_div_up(rows.ld_ffn, k->logits_columns);
    dispatch(layer, cmd, k->logits, &rows, &push, sizeof(push), &push.source, -1, groups_x, tiles);
}

void vkmoe_gemm_down_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_kernel *k,
                          const vkmoe_gemm_rows *rows, int indirect_grid, uint32_t tiles)
{
    gemm_down_push push = {
        .tile_expert = rows->tile_expert,
        .row_slot = rows->row_slot,
        .expert_out = rows->out,
        .down_bias = rows->down_bias,
        .dim = layer->params.dim,
        .ld_ffn = rows->ld_ffn,
        .max_tiles = rows->max_tiles,
        .rows = rows->rows,
        .hidden_texel = rows->hidden_texel,
        .expert_slot = rows->expert_slot,
        .combine = rows->combine,
    };
    uint32_t groups_x = (uint32_t)vkmoe_div_up(layer->params.dim, k->down_columns);
    dispatch(layer, cmd, k->down, rows, &push, sizeof(push), &push.source, indirect_grid, groups_x,
             tiles);
}

/* The routed experts' rows, read with the sources of the up or down array. */
static vkmoe_gemm_rows routed_rows(const vkmoe_layer *layer, vkmoe_expert_matrix matrices)
{
    const vkmoe_expert_array *array = &layer->weights.experts[matrices];
    const vkmoe_layer_params *p = &layer->params;
    VkDeviceAddress base = layer->work->scratch.address,
                    biases = layer->weights.expert_biases.address;
    bool has_bias = p->expert_bias;
    return (vkmoe_gemm_rows){
        .sources = array->sources,
        .source_count = array->chunk_count,
        .tile_expert = base + layer->plan.layout.tile_expert,
        .row_slot = base + layer->plan.layout.row_slot,
        .hidden = layer->work->hidden.address,
        .out = layer->work->expert_out.address,
        .gate_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_GATE, 0) : 0,
        .up_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_UP, 0) : 0,
        .down_bias = has_bias ? biases + vkmoe_expert_bias_offset(layer, VKMOE_EXPERT_DOWN, 0) : 0,
        .input_scale = p->scale_expert_input ? base + layer->plan.layout.topk_weight : 0,
        .expert_slot = layer->weights.cache ? layer->weights.cache->map.address
                                            : layer->weights.held_map.address,
        .ffn = p->ffn_dim,
        .ld_ffn = layer->plan.ld_ffn,
        .top_k = p->top_k,
        .max_tiles = layer->plan.max_tiles,
        .rows = layer->plan.max_rows,
    };
}

void vkmoe_gemm_up_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    vkmoe_gemm_rows rows = routed_rows(layer, VKMOE_EXPERT_UP);
    vkmoe_gemm_up_pass(layer, cmd, vkmoe_gemm_kernel_for(layer, tokens), &rows, 0, 0);
}

void vkmoe_gemm_down_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens)
{
    vkmoe_gemm_rows rows = routed_rows(layer, VKMOE_EXPERT_DOWN);
    vkmoe_combine_in_down_fields(layer, tokens, &rows.combine);
    vkmoe_gemm_down_pass(layer, cmd, vkmoe_gemm_kernel_for(layer, tokens), &rows, 1, 0);
}
