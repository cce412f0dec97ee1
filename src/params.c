/* Layer params: validation, defaults and the model families. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "checked_size.h"
#include "gemm.h"
#include "params.h"

#define FN "vkmoe_layer_create"

bool vkmoe_params_gated(const vkmoe_layer_params *p)
{
    return p->activation != VKMOE_ACTIVATION_RELU;
}

static vkmoe_status check_shape(const vkmoe_context *ctx, const vkmoe_layer_params *p)
{
    VKMOE_REQUIRE(ctx, p->dim >= 1 && p->ffn_dim >= 1,
                  FN ": dim (%u) and ffn_dim (%u) must be at least 1", p->dim, p->ffn_dim);
    VKMOE_REQUIRE(ctx, p->experts >= 1 && p->experts <= VKMOE_MAX_EXPERTS,
                  FN ": experts is %u, must be 1..%u", p->experts, VKMOE_MAX_EXPERTS);
    VKMOE_REQUIRE(ctx, p->top_k >= 1 && p->top_k <= p->experts && p->top_k <= VKMOE_MAX_TOP_K,
                  FN ": top_k is %u, must be 1..min(experts = %u, %u)", p->top_k, p->experts,
                  VKMOE_MAX_TOP_K);
    VKMOE_REQUIRE(ctx, (uint64_t)p->max_tokens * p->top_k <= VKMOE_MAX_SLOTS,
                  FN ": max_tokens·top_k = %llu exceeds %u slots",
                  (unsigned long long)p->max_tokens * p->top_k, VKMOE_MAX_SLOTS);
    uint32_t block = vkmoe_weight_block(p->weight_type);
    uint32_t down_block = vkmoe_weight_block(p->down_weight_type);
    VKMOE_REQUIRE(ctx, block > 0, FN ": unknown weight_type %d", (int)p->weight_type);
    VKMOE_REQUIRE(ctx, down_block > 0, FN ": unknown down_weight_type %d",
                  (int)p->down_weight_type);
    /* A block never straddles two rows: the gate and up rows are dim long,
     * the down rows ffn_dim (shared_ffn_dim) long. */
    VKMOE_REQUIRE(ctx, p->dim % block == 0,
                  FN ": %s weights need dim (%u), the gate and up projections' rows, to be "
                     "multiples of %u, the block size",
                  vkmoe_weight_type_name(p->weight_type), p->dim, block);
    VKMOE_REQUIRE(ctx, p->ffn_dim % down_block == 0 && p->shared_ffn_dim % down_block == 0,
                  FN ": %s weights need ffn_dim (%u) and shared_ffn_dim (%u), the down "
                     "projections' rows, to be multiples of %u, the block size",
                  vkmoe_weight_type_name(p->down_weight_type), p->ffn_dim, p->shared_ffn_dim,
                  down_block);
    return VKMOE_OK;
}

static vkmoe_status check_io(const vkmoe_context *ctx, const vkmoe_layer_params *p)
{
    VKMOE_REQUIRE(ctx,
                  p->io_type == VKMOE_WEIGHT_F32 || p->io_type == VKMOE_WEIGHT_F16 ||
                      p->io_type == VKMOE_WEIGHT_BF16,
                  FN ": io_type %d is not f32, f16 or bf16", (int)p->io_type);
    VKMOE_REQUIRE(ctx, p->io_type == VKMOE_WEIGHT_F32 || p->dim % 2 == 0,
                  FN ": %s activations need an even dim (%u)", vkmoe_weight_type_name(p->io_type),
                  p->dim);
    return VKMOE_OK;
}

uint32_t vkmoe_params_io_bytes(const vkmoe_layer_params *p)
{
    return p->io_type == VKMOE_WEIGHT_F32 ? 4 : 2;
}

static vkmoe_status check_routing(const vkmoe_context *ctx, const vkmoe_layer_params *p)
{
    VKMOE_REQUIRE(ctx, vkmoe_router_type_name(p->router) != NULL, FN ": unknown router %d",
                  (int)p->router);
    VKMOE_REQUIRE(ctx, isfinite(p->routed_scaling_factor) && p->routed_scaling_factor > 0,
                  FN ": routed_scaling_factor is %g, must be finite and positive",
                  (double)p->routed_scaling_factor);
    uint32_t groups = p->expert_groups;
    VKMOE_REQUIRE(ctx, groups <= VKMOE_MAX_GROUPS && p->experts % groups == 0,
                  FN ": expert_groups is %u, must divide experts (%u) and be at most %u", groups,
                  p->experts, VKMOE_MAX_GROUPS);
    VKMOE_REQUIRE(ctx, p->topk_groups >= 1 && p->topk_groups <= groups,
                  FN ": topk_groups is %u, must be 1..expert_groups (%u)", p->topk_groups, groups);
    uint32_t reachable = p->topk_groups * (p->experts / groups);
    VKMOE_REQUIRE(ctx, p->top_k <= reachable,
                  FN ": top_k (%u) exceeds the %u experts of the topk_groups kept groups", p->top_k,
                  reachable);
    VKMOE_REQUIRE(ctx,
                  groups == 1 || p->router != VKMOE_ROUTER_SIGMOID_TOPK || p->experts / groups >= 2,
                  FN ": sigmoid routing scores a group by its two best experts, so groups need "
                     "at least 2 experts (experts %u, expert_groups %u)",
                  p->experts, groups);
    VKMOE_REQUIRE(ctx,
                  !p->selection_bias || p->router == VKMOE_ROUTER_SIGMOID_TOPK ||
                      p->router == VKMOE_ROUTER_SOFTMAX_TOPK,
                  FN ": selection_bias needs router VKMOE_ROUTER_SIGMOID_TOPK or "
                     "VKMOE_ROUTER_SOFTMAX_TOPK");
    VKMOE_REQUIRE(ctx, isfinite(p->capacity_factor) && p->capacity_factor >= 0,
                  FN ": capacity_factor is %g, must be finite and >= 0 (0: dropless)",
                  (double)p->capacity_factor);
    return VKMOE_OK;
}

static vkmoe_status check_experts(const vkmoe_context *ctx, const vkmoe_layer_params *p)
{
    VKMOE_REQUIRE(ctx, vkmoe_activation_name(p->activation) != NULL, FN ": unknown activation %d",
                  (int)p->activation);
    VKMOE_REQUIRE(ctx,
                  isfinite(p->swiglu_limit) && p->swiglu_limit > 0 && isfinite(p->swiglu_alpha),
                  FN ": swiglu_limit (%g) must be finite and positive, swiglu_alpha (%g) finite",
                  (double)p->swiglu_limit, (double)p->swiglu_alpha);
    VKMOE_REQUIRE(ctx, !p->shared_gate || p->shared_ffn_dim > 0,
                  FN ": shared_gate needs a shared expert (shared_ffn_dim > 0)");
    VKMOE_REQUIRE(ctx, (unsigned)p->cache_policy <= VKMOE_CACHE_LRU, FN ": unknown cache_policy %d",
                  (int)p->cache_policy);
    VKMOE_REQUIRE(ctx,
                  isfinite(p->host_to_device_gbps) && p->host_to_device_gbps > 0 &&
                      isfinite(p->cpu_expert_gflops) && p->cpu_expert_gflops > 0 &&
                      isfinite(p->host_read_gbps) && p->host_read_gbps > 0,
                  FN ": host_to_device_gbps, cpu_expert_gflops and host_read_gbps must be "
                     "finite and positive");
    VKMOE_REQUIRE(ctx, !p->held_experts || (!p->expert_budget_bytes && !p->cpu_experts),
                  FN ": held_experts (an expert-parallel shard) keeps its experts on the device: "
                     "not with expert_budget_bytes or cpu_experts");
    uint64_t one = vkmoe_expert_bytes(p);
    VKMOE_REQUIRE(ctx, p->expert_budget_bytes == 0 || p->expert_budget_bytes >= one,
                  FN ": expert_budget_bytes (%llu) must hold at least one expert (%llu bytes)",
                  (unsigned long long)p->expert_budget_bytes, (unsigned long long)one);
    return VKMOE_OK;
}

/* Bytes of rows x cols weights of type, or UINT64_MAX when too many. */
static uint64_t matrix_bytes(vkmoe_weight_type type, uint32_t rows, uint32_t cols)
{
    uint64_t weights = (uint64_t)rows * cols;
    size_t bytes = vkmoe_weight_bytes(type, weights);
    return bytes || !weights ? bytes : UINT64_MAX; /* 0: too many to count */
}

/* Bytes of the routed and shared experts' matrices as stored on the
 * device, or UINT64_MAX when that does not fit in 64 bits. */
static uint64_t expert_bytes(const vkmoe_layer_params *p)
{
    uint64_t in = matrix_bytes(p->weight_type, p->ffn_dim, p->dim);
    uint64_t down = matrix_bytes(p->down_weight_type, p->dim, p->ffn_dim);
    uint64_t shared_in = matrix_bytes(p->weight_type, p->shared_ffn_dim, p->dim);
    uint64_t shared_down = matrix_bytes(p->down_weight_type, p->dim, p->shared_ffn_dim);
    uint64_t per_expert, routed, shared, total;
    uint32_t held = p->experts; /* a shard's experts only */
    for (uint32_t e = 0; p->held_experts && e < p->experts; e++)
        held -= !p->held_experts[e];
    if (!vkmoe_mul_u64(in, vkmoe_params_gated(p) ? 2 : 1, &per_expert) ||
        !vkmoe_add_u64(per_expert, down, &per_expert) ||
        !vkmoe_mul_u64(per_expert, held, &routed) || !vkmoe_mul_u64(shared_in, 2, &shared) ||
        !vkmoe_add_u64(shared, shared_down, &shared))
        return UINT64_MAX;
    /* With a budget, the rest of the routed experts live in host memory. */
    if (p->expert_budget_bytes && p->expert_budget_bytes < routed)
        routed = p->expert_budget_bytes;
    if (!vkmoe_add_u64(routed, shared, &total))
        return UINT64_MAX;
    return total;
}

static vkmoe_status check_device(const vkmoe_context *ctx, const vkmoe_layer_params *p)
{
    /* Refused here rather than by the allocator: drivers that overcommit
     * (lavapipe on host memory) hand out allocations until the OOM killer
     * comes. Other layers and the scratch are not counted: this catches
     * the impossible, not the tight. */
    uint64_t weights = expert_bytes(p);
    if (weights > ctx->info.device_memory && !ctx->options.compile_only)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_DEVICE_MEMORY,
                          FN ": the experts' weights take %llu bytes, more than the device's "
                             "largest memory heap (%llu bytes)",
                          (unsigned long long)weights, (unsigned long long)ctx->info.device_memory);
    uint64_t io_bytes = (uint64_t)p->max_tokens * p->dim * sizeof(float);
    if (io_bytes > ctx->info.max_storage_buffer_range)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          FN ": max_tokens·dim·4 = %llu bytes exceeds the device's "
                             "maxStorageBufferRange (%llu) that binds x and y",
                          (unsigned long long)io_bytes,
                          (unsigned long long)ctx->info.max_storage_buffer_range);
    vkmoe_weight_type types[2] = {p->weight_type, p->down_weight_type};
    for (int i = 0; i < 2; i++)
        if (!(ctx->info.weight_types >> types[i] & 1))
            return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                              FN ": the device cannot read %s weights: its driver lacks uniform "
                                 "texel buffers of their format (vkmoe_device_info.weight_types)",
                              vkmoe_weight_type_name(types[i]));
    VKMOE_TRY(vkmoe_gemm_check(ctx, p, FN));
    if (p->timing && !ctx->info.timestamps)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          FN ": timing needs timestamp queries, which the device's queue lacks");
    return VKMOE_OK;
}

vkmoe_status vkmoe_params_resolve(const vkmoe_context *ctx, const vkmoe_layer_params *params,
                                  vkmoe_layer_params *out)
{
    vkmoe_layer_params p = *params;
    if (p.max_tokens == 0)
        p.max_tokens = 1;
    if (p.routed_scaling_factor == 0)
        p.routed_scaling_factor = 1;
    if (p.expert_groups == 0)
        p.expert_groups = 1;
    if (p.topk_groups == 0)
        p.topk_groups = p.expert_groups;
    if (p.swiglu_limit == 0)
        p.swiglu_limit = 7.0f;
    if (p.swiglu_alpha == 0)
        p.swiglu_alpha = 1.702f;
    if (p.down_weight_type == VKMOE_WEIGHT_F32)
        p.down_weight_type = p.weight_type;
    /* The cold-expert cost model's rates (vkmoe.h): GB/s, GFLOP/s, GB/s. */
    float *rates[] = {&p.host_to_device_gbps, &p.cpu_expert_gflops, &p.host_read_gbps};
    static const float rate_defaults[] = {16, 50, 20};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(rates); i++)
        if (*rates[i] == 0)
            *rates[i] = rate_defaults[i];
    VKMOE_TRY(check_shape(ctx, &p));
    VKMOE_TRY(check_io(ctx, &p));
    VKMOE_TRY(check_routing(ctx, &p));
    VKMOE_TRY(check_experts(ctx, &p));
    VKMOE_TRY(check_device(ctx, &p));
    *out = p;
    return VKMOE_OK;
}

uint32_t vkmoe_params_capacity(const vkmoe_layer_params *p, uint32_t tokens)
{
    if (p->capacity_factor == 0)
        return UINT32_MAX;
    double capacity = ceil((double)p->capacity_factor * tokens * p->top_k / p->experts);
    return capacity >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)capacity;
}

/* What each family sets: routing and the expert function. Zero top_k,
 * expert_groups and topk_groups leave the caller's; the shape is always the
 * caller's. */
typedef struct model_family {
    const char *name;
    vkmoe_router_type router;
    bool normalize_topk;
    vkmoe_activation activation;
    uint32_t top_k, expert_groups, topk_groups;
    float routed_scaling_factor, capacity_factor;
    bool router_bias, selection_bias, expert_bias, shared_gate, scale_expert_input;
} model_family;
_Static_assert(offsetof(model_family, name) == 0, "vkmoe_find_named reads the name first");

static const model_family families[] = {
    {.name = "mixtral",
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU},
    {.name = "qwen3-moe",
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU},
    {.name = "qwen2-moe",
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = false,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .shared_gate = true},
    {.name = "olmoe",
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = false,
     .activation = VKMOE_ACTIVATION_SWIGLU},
    {.name = "switch",
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = false,
     .activation = VKMOE_ACTIVATION_RELU,
     .top_k = 1,
     .capacity_factor = 1},
    {.name = "gshard",
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 2,
     .capacity_factor = 1},
    {.name = "deepseek-v2",
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = false,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 6,
     .expert_groups = 8,
     .topk_groups = 3,
     .routed_scaling_factor = 16},
    {.name = "deepseek-v3",
     .router = VKMOE_ROUTER_SIGMOID_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 8,
     .expert_groups = 8,
     .topk_groups = 4,
     .routed_scaling_factor = 2.5f,
     .selection_bias = true},
    {.name = "kimi-k2", /* DeepSeek-V3's router over one group */
     .router = VKMOE_ROUTER_SIGMOID_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 8,
     .expert_groups = 1,
     .topk_groups = 1,
     .routed_scaling_factor = 2.827f,
     .selection_bias = true},
    {.name = "glm4-moe", /* GLM-4.5 and 4.6 (4.5-Air scales by 1) */
     .router = VKMOE_ROUTER_SIGMOID_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 8,
     .expert_groups = 1,
     .topk_groups = 1,
     .routed_scaling_factor = 2.5f,
     .selection_bias = true},
    {.name = "minimax-m2",
     .router = VKMOE_ROUTER_SIGMOID_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 8,
     .selection_bias = true},
    {.name = "qwen3-next",
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 10,
     .shared_gate = true},
    {.name = "granite-moe", /* top-k logits, softmax over them, as GraniteMoeTopKGating */
     .router = VKMOE_ROUTER_TOPK_SOFTMAX,
     .normalize_topk = false,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 8},
    {.name = "ernie-4.5-moe", /* choice by p + e_score_correction_bias, weights p */
     .router = VKMOE_ROUTER_SOFTMAX_TOPK,
     .normalize_topk = true,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 6,
     .selection_bias = true},
    {.name = "llama4", /* Llama4Router: sigmoid of the top-k logits, on the input */
     .router = VKMOE_ROUTER_TOPK_SIGMOID,
     .normalize_topk = false,
     .activation = VKMOE_ACTIVATION_SWIGLU,
     .top_k = 1,
     .scale_expert_input = true},
    {.name = "gpt-oss",
     .router = VKMOE_ROUTER_TOPK_SOFTMAX,
     .normalize_topk = false,
     .activation = VKMOE_ACTIVATION_SWIGLU_CLAMPED,
     .top_k = 4,
     .router_bias = true,
     .expert_bias = true},
};

static void apply_family(vkmoe_layer_params *p, const model_family *f)
{
    p->router = f->router;
    p->normalize_topk = f->normalize_topk;
    p->activation = f->activation;
    if (f->top_k)
        p->top_k = f->top_k;
    p->expert_groups = f->expert_groups;
    p->topk_groups = f->topk_groups;
    p->routed_scaling_factor = f->routed_scaling_factor;
    p->capacity_factor = f->capacity_factor;
    p->router_bias = f->router_bias;
    p->selection_bias = f->selection_bias;
    p->expert_bias = f->expert_bias;
    p->shared_gate = f->shared_gate;
    p->scale_expert_input = f->scale_expert_input;
    p->swiglu_limit = 0;
    p->swiglu_alpha = 0;
}

vkmoe_status vkmoe_layer_params_family(vkmoe_layer_params *p, const char *family)
{
    VKMOE_REQUIRE(NULL, p && family,
                  "vkmoe_layer_params_family: params and family must not be NULL");
    char known[256];
    const model_family *f = VKMOE_FIND_NAMED(families, family, known, sizeof(known));
    if (f) {
        apply_family(p, f);
        return VKMOE_OK;
    }
    return vkmoe_fail(NULL, VKMOE_ERROR_INVALID_ARGUMENT,
                      "vkmoe_layer_params_family: unknown family \"%s\" (%s)", family, known);
}

static const char *const router_names[] = {
    [VKMOE_ROUTER_SOFTMAX_TOPK] = "softmax_topk",
    [VKMOE_ROUTER_SIGMOID_TOPK] = "sigmoid_topk",
    [VKMOE_ROUTER_TOPK_SOFTMAX] = "topk_softmax",
    [VKMOE_ROUTER_TOPK_SIGMOID] = "topk_sigmoid",
};

static const char *const activation_names[] = {
    [VKMOE_ACTIVATION_SWIGLU] = "swiglu",
    [VKMOE_ACTIVATION_RELU] = "relu",
    [VKMOE_ACTIVATION_SWIGLU_CLAMPED] = "swiglu_clamped",
};

const char *vkmoe_activation_name(vkmoe_activation activation)
{
    return (unsigned)activation < VKMOE_ARRAY_SIZE(activation_names) && activation_names[activation]
               ? activation_names[activation]
               : NULL;
}

const char *vkmoe_router_type_name(vkmoe_router_type router)
{
    return (unsigned)router < VKMOE_ARRAY_SIZE(router_names) && router_names[router]
               ? router_names[router]
               : NULL;
}
