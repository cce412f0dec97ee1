/* Whole models (vkmoe_model_open): every MoE layer of a checkpoint or GGUF
 * file, dense layers skipped, the scratch shared; each layer equal bit for
 * bit to the same layer loaded alone, forwarded or recorded in one command
 * buffer; results read in the wrong order refused; progress and its
 * cancellation; memory by kind; files that say no layer count or no MoE
 * layer. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "expert_cache.h"
#include "helpers.h"
#include "memory.h"
#include "vulkan_interposer.h"

#define LAYERS 4
#define TOKENS 12

static char work_dir[256];

static const char *path_in(const char *name)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", work_dir, name);
    return path;
}

/* DeepSeek-V3's routing at a small shape; layer 0 dense, as
 * first_k_dense_replace 1 says. */
static const char deepseek_config[] =
    "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 40, \"num_hidden_layers\": 4, "
    "\"moe_intermediate_size\": 24, \"n_routed_experts\": 32, \"num_experts_per_tok\": 8, "
    "\"n_group\": 8, \"topk_group\": 4, \"topk_method\": \"noaux_tc\", "
    "\"scoring_func\": \"sigmoid\", \"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5, "
    "\"n_shared_experts\": 1, \"first_k_dense_replace\": 1}";

static vkmoe_layer_params deepseek_params(void)
{
    vkmoe_layer_params p = test_shape(40, 24, 32, 0, 1);
    p.weight_type = VKMOE_WEIGHT_BF16;
    assert_int_equal(vkmoe_layer_params_family(&p, "deepseek-v3"), VKMOE_OK);
    p.shared_ffn_dim = 24;
    return p;
}

/* Layers 1..3 of a model, each with its own random weights. */
typedef struct test_model_weights {
    test_layer layers[LAYERS];
    const test_layer *present[LAYERS];
} test_model_weights;

static void model_weights(vkmoe_context *ctx, vkmoe_layer_params p, test_model_weights *m)
{
    memset(m, 0, sizeof(*m));
    for (uint32_t i = 1; i < LAYERS; i++) {
        checkpoint_weights(ctx, p, &m->layers[i]);
        m->present[i] = &m->layers[i];
    }
}

static void model_weights_free(test_model_weights *m)
{
    for (uint32_t i = 1; i < LAYERS; i++)
        test_layer_destroy(&m->layers[i]);
}

typedef struct progress_log {
    uint32_t calls, stop_after;
    uint64_t last_done, total;
    bool monotonic;
} progress_log;

static bool log_progress(void *user_data, uint64_t done, uint64_t total)
{
    progress_log *log = user_data;
    if (log->calls == 0)
        log->monotonic = done == 0;
    else
        log->monotonic &= done >= log->last_done && total == log->total;
    log->calls++;
    log->last_done = done;
    log->total = total;
    return log->stop_after == 0 || log->calls < log->stop_after;
}

static vkmoe_model *open_model(vkmoe_context *ctx, const char *path, progress_log *log)
{
    vkmoe_model_params mp = {.max_tokens = TOKENS,
                             .statistics = true,
                             .progress = log ? log_progress : NULL,
                             .progress_user_data = log};
    vkmoe_model *model = NULL;
    if (vkmoe_model_open(ctx, path, &mp, &model) != VKMOE_OK)
        fail_msg("vkmoe_model_open: %s", vkmoe_last_error());
    return model;
}

/* `tokens` rows of x through layers 1..3 of the model, one
 * vkmoe_layer_forward each, with `prefetch` each after a prefetch of the
 * next layer from its input (as vkmoe-run does); ys[i] is layer i's output
 * (caller frees). */
static void chain_of(vkmoe_layer *const *layers, const float *x, uint32_t tokens, uint32_t dim,
                     bool prefetch, float **ys)
{
    const float *in = x;
    for (uint32_t i = 1; i < LAYERS; i++) {
        if (prefetch && i + 1 < LAYERS)
            assert_int_equal(vkmoe_layer_prefetch(layers[i + 1], tokens, in), VKMOE_OK);
        ys[i] = malloc((size_t)tokens * dim * sizeof(float));
        assert_int_equal(vkmoe_layer_forward(layers[i], tokens, in, ys[i]), VKMOE_OK);
        in = ys[i];
    }
}

static void forward_chain(vkmoe_layer *const *layers, const float *x, uint32_t dim, float **ys)
{
    chain_of(layers, x, TOKENS, dim, false, ys);
}

/* The same chain recorded into one command buffer of the caller's, each
 * layer's y the next one's x, submitted once: y of the last layer. */
static void record_chain(vkmoe_context *ctx, vkmoe_layer *const *layers, const float *x,
                         uint32_t dim, float *y)
{
    size_t bytes = (size_t)TOKENS * dim * sizeof(float);
    vkmoe_buffer buffers[2];
    for (int b = 0; b < 2; b++)
        assert_int_equal(vkmoe_buffer_create(ctx, bytes, VKMOE_MEMORY_DEVICE, &buffers[b]),
                         VKMOE_OK);
    assert_int_equal(vkmoe_buffer_write_rows(ctx, &buffers[0], 0, x, 1, bytes, bytes), VKMOE_OK);
    VkCommandPool pool;
    VkCommandBuffer cmd = test_commands_begin(ctx, &pool);
    int in = 0;
    for (uint32_t i = 1; i < LAYERS; i++, in ^= 1)
        assert_int_equal(vkmoe_layer_record_forward(layers[i], cmd, TOKENS, buffers[in].buffer, 0,
                                                    buffers[in ^ 1].buffer, 0),
                         VKMOE_OK);
    test_commands_run(ctx, pool, cmd);
    assert_int_equal(vkmoe_buffer_read(ctx, &buffers[in], 0, y, bytes), VKMOE_OK);
    for (int b = 0; b < 2; b++)
        vkmoe_buffer_destroy(ctx, &buffers[b]);
}

static void free_chain(float **ys)
{
    for (uint32_t i = 1; i < LAYERS; i++)
        free(ys[i]);
}

/* `tokens` rows of x through models a and b, b's layers after prefetches
 * where asked (chain_of): every layer's output the same bits. */
static void check_same_chain(vkmoe_model *a, vkmoe_model *b, const float *x, uint32_t tokens,
                             uint32_t dim, bool prefetch)
{
    vkmoe_layer *la[LAYERS], *lb[LAYERS];
    for (uint32_t i = 0; i < LAYERS; i++) {
        la[i] = vkmoe_model_layer(a, i);
        lb[i] = vkmoe_model_layer(b, i);
    }
    float *ya[LAYERS], *yb[LAYERS];
    chain_of(la, x, tokens, dim, false, ya);
    chain_of(lb, x, tokens, dim, prefetch, yb);
    for (uint32_t i = 1; i < LAYERS; i++)
        assert_memory_equal(ya[i], yb[i], (size_t)tokens * dim * sizeof(float));
    free_chain(ya);
    free_chain(yb);
}

/* Each of the model's MoE layers' cache: `slots` slots, `forwards`
 * forwards, and prefetched experts where `prefetched` (from layer 2 on),
 * else none. */
static void check_cache_stats(vkmoe_model *model, uint32_t slots, uint64_t forwards,
                              bool prefetched)
{
    for (uint32_t i = 1; i < LAYERS; i++) {
        vkmoe_cache_stats s;
        assert_int_equal(vkmoe_layer_cache_stats(vkmoe_model_layer(model, i), &s), VKMOE_OK);
        assert_int_equal(s.slots, slots);
        assert_int_equal(s.forwards, forwards);
        assert_true(prefetched && i > 1 ? s.prefetched > 0 : s.prefetched == 0);
    }
}

/* The model's layers against the same layers loaded one by one, through
 * the same chain: bit for bit, forwarded and recorded. */
static void check_against_single_layers(vkmoe_context *ctx, const char *path, vkmoe_model *model,
                                        uint32_t dim)
{
    vkmoe_layer *model_layers[LAYERS] = {NULL}, *single[LAYERS] = {NULL};
    vkmoe_model_params mp = {.max_tokens = TOKENS, .statistics = true};
    for (uint32_t i = 1; i < LAYERS; i++) {
        model_layers[i] = vkmoe_model_layer(model, i);
        assert_non_null(model_layers[i]);
        if (vkmoe_layer_from_file(ctx, path, i, &mp, &single[i]) != VKMOE_OK)
            fail_msg("vkmoe_layer_from_file: %s", vkmoe_last_error());
    }
    float *x = test_input(TOKENS, dim), *want[LAYERS] = {NULL}, *got[LAYERS] = {NULL};
    forward_chain(single, x, dim, want);
    forward_chain(model_layers, x, dim, got);
    size_t bytes = (size_t)TOKENS * dim * sizeof(float);
    for (uint32_t i = 1; i < LAYERS; i++)
        assert_memory_equal(got[i], want[i], bytes);
    float *recorded = malloc(bytes);
    record_chain(ctx, model_layers, x, dim, recorded);
    assert_memory_equal(recorded, want[LAYERS - 1], bytes);

    vkmoe_memory_report whole, alone, sum = {0};
    assert_int_equal(vkmoe_model_memory(model, &whole), VKMOE_OK);
    for (uint32_t i = 1; i < LAYERS; i++) {
        assert_int_equal(vkmoe_layer_memory(single[i], &alone), VKMOE_OK);
        sum.experts += alone.experts;
        sum.shared_experts += alone.shared_experts;
        sum.routers += alone.routers;
        sum.scratch += alone.scratch;
        vkmoe_layer_destroy(&single[i]);
    }
    assert_int_equal(whole.experts, sum.experts);
    assert_int_equal(whole.shared_experts, sum.shared_experts);
    assert_int_equal(whole.routers, sum.routers);
    assert_true(whole.scratch > sum.scratch / 3 && whole.scratch < sum.scratch / 2);
    assert_int_equal(whole.total,
                     whole.experts + whole.shared_experts + whole.routers + whole.scratch);
    assert_true(whole.experts > 0 && whole.shared_experts > 0 && whole.routers > 0);
    free(recorded);
    free(x);
    free_chain(want);
    free_chain(got);
}

/* After layer 3's forward, layer 1's results are gone from the shared
 * scratch: VKMOE_ERROR_STATE naming both; layer 3's read fine. */
static void check_wrong_order(vkmoe_model *model)
{
    uint32_t counts[32];
    vkmoe_load_stats stats;
    vkmoe_layer *first = vkmoe_model_layer(model, 1), *last = vkmoe_model_layer(model, 3);
    assert_int_equal(vkmoe_layer_expert_counts(last, counts, 32), VKMOE_OK);
    uint32_t slots = 0;
    for (int e = 0; e < 32; e++)
        slots += counts[e];
    assert_int_equal(slots, TOKENS * 8);
    assert_int_equal(vkmoe_layer_load_stats(last, &stats, NULL, NULL, NULL, 0), VKMOE_OK);
    assert_int_equal(vkmoe_layer_expert_counts(first, counts, 32), VKMOE_ERROR_STATE);
    assert_non_null(strstr(vkmoe_last_error(), "layer 1 shares"));
    assert_non_null(strstr(vkmoe_last_error(), "layer 3's forward"));
    assert_int_equal(
        vkmoe_layer_load_stats(vkmoe_model_layer(model, 2), &stats, NULL, NULL, NULL, 0),
        VKMOE_ERROR_STATE);
}

static void test_checkpoint_model(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(501);
    vkmoe_layer_params p = deepseek_params();
    test_model_weights m;
    model_weights(ctx, p, &m);
    checkpoint_write_hf_model(work_dir, m.present, LAYERS, deepseek_config,
                              &checkpoint_deepseek_names, 2);
    progress_log log = {0};
    vkmoe_model *model = open_model(ctx, work_dir, &log);
    assert_int_equal(vkmoe_model_layer_count(model), LAYERS);
    assert_null(vkmoe_model_layer(model, 0)); /* dense */
    assert_null(vkmoe_model_layer(model, LAYERS));
    /* once at 0, then after each of 3 layers' 32 experts' and shared expert's 3 matrices */
    assert_int_equal(log.calls, 1 + 3 * (32 * 3 + 3));
    assert_true(log.monotonic);
    assert_true(log.total > 0 && log.last_done == log.total);
    check_against_single_layers(ctx, work_dir, model, p.dim);
    check_wrong_order(model);

    /* the model owns its layers */
    vkmoe_layer *owned = vkmoe_model_layer(model, 2);
    vkmoe_layer_destroy(&owned);
    assert_ptr_equal(owned, vkmoe_model_layer(model, 2));
    float *x = test_input(1, p.dim), y[40];
    assert_int_equal(vkmoe_layer_forward(owned, 1, x, y), VKMOE_OK);
    free(x);
    vkmoe_model_destroy(&model);
    assert_null(model);
    vkmoe_model_destroy(&model);
    vkmoe_model_destroy(NULL);
    model_weights_free(&m);
}

/* Layers 1..3 of a DeepSeek-V3-shaped Q8_0 GGUF model with random
 * weights from `seed`, written to `name` in the work folder; its params. */
static vkmoe_layer_params write_gguf_model(vkmoe_context *ctx, uint64_t seed, const char *name)
{
    test_seed(seed);
    vkmoe_layer_params p = deepseek_params();
    p.weight_type = p.down_weight_type = VKMOE_WEIGHT_Q8_0;
    p.dim = 64;
    p.ffn_dim = p.shared_ffn_dim = 32;
    test_model_weights m;
    model_weights(ctx, p, &m);
    gguf_writer w = {0};
    checkpoint_deepseek_v3_meta(&w);
    gguf_add_u32(&w, "deepseek2.block_count", LAYERS);
    gguf_add_u32(&w, "deepseek2.leading_dense_block_count", 1);
    checkpoint_write_gguf_model(path_in(name), &w, m.present, LAYERS, "deepseek2");
    model_weights_free(&m);
    return p;
}

static void test_gguf_model(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params p = write_gguf_model(ctx, 502, "model.gguf");
    vkmoe_model *model = open_model(ctx, path_in("model.gguf"), NULL);
    assert_int_equal(vkmoe_model_layer_count(model), LAYERS);
    assert_null(vkmoe_model_layer(model, 0));
    check_against_single_layers(ctx, path_in("model.gguf"), model, p.dim);
    vkmoe_model_destroy(&model);
}

/* A model budget shared by its layers: each keeps its share of experts on
 * the device, the chain's outputs equal the resident model's bit for bit;
 * a budget under one expert a layer is refused. Where the device imports
 * host memory, the experts are the file's own pages (laid out as the
 * device reads them, wherever the file puts each), and cannot be set;
 * with host_huge_pages they are copied into the layers' own. */
static void check_model_with_budget(vkmoe_context *ctx, const char *path, vkmoe_layer_params p)
{
    uint64_t one = vkmoe_expert_bytes(&p);
    vkmoe_model_params mp = {.max_tokens = TOKENS, .expert_budget_bytes = 3 * 10 * one};
    vkmoe_model *cached = NULL, *resident = open_model(ctx, path, NULL);
    assert_int_equal(vkmoe_model_open(ctx, path, &mp, &cached), VKMOE_OK);
    vkmoe_memory_report with_cache, all;
    assert_int_equal(vkmoe_model_memory(cached, &with_cache), VKMOE_OK);
    assert_int_equal(vkmoe_model_memory(resident, &all), VKMOE_OK);
    assert_true(with_cache.experts < all.experts && with_cache.host_experts > 0);
    /* lavapipe imports the file's pages; a GPU may refuse them (the H200's
     * driver does: the experts are copied into host buffers then). */
    bool may_import = ctx->host_import_alignment > 0 && !ctx->host_huge_pages;
    bool imports = may_import && with_cache.host_experts_mapped > 0;
    if (vkmoe_context_cpu_shaped(ctx))
        assert_int_equal(imports, may_import);
    assert_int_equal(with_cache.host_experts_mapped, imports ? with_cache.host_experts : 0);
    assert_int_equal(all.host_experts_mapped, 0);
    if (imports) {
        uint8_t matrix[4096] = {0};
        size_t bytes = vkmoe_weight_bytes(p.weight_type, (size_t)p.ffn_dim * p.dim);
        assert_int_equal(
            vkmoe_layer_set_expert(vkmoe_model_layer(cached, 1), 0, VKMOE_EXPERT_UP, matrix, bytes),
            VKMOE_ERROR_UNSUPPORTED);
    }
    float *x = test_input(TOKENS, p.dim);
    for (int pass = 0; pass < 2; pass++)
        check_same_chain(resident, cached, x, TOKENS, p.dim, false);
    check_cache_stats(cached, 10, 2, false);
    /* The first MoE layer's experts on the host, the budget all the second's
     * and third's: within the reference's tolerance of the resident model. */
    vkmoe_model_destroy(&cached);
    mp.cpu_expert_layers = 1;
    assert_int_equal(vkmoe_model_open(ctx, path, &mp, &cached), VKMOE_OK);
    float *want = malloc((size_t)TOKENS * p.dim * sizeof(float)),
          *got = malloc((size_t)TOKENS * p.dim * sizeof(float));
    for (uint32_t i = 1; i < LAYERS; i++) {
        assert_int_equal(vkmoe_layer_forward(vkmoe_model_layer(resident, i), TOKENS, x, want),
                         VKMOE_OK);
        assert_int_equal(vkmoe_layer_forward(vkmoe_model_layer(cached, i), TOKENS, x, got),
                         VKMOE_OK);
        vkmoe_cache_stats s;
        assert_int_equal(vkmoe_layer_cache_stats(vkmoe_model_layer(cached, i), &s), VKMOE_OK);
        assert_true(i == 1 ? s.cpu_slots == TOKENS * p.top_k && s.rounds == 0
                           : s.cpu_slots == 0 && s.slots == 15);
        float worst = 0, largest = 0;
        for (size_t j = 0; j < (size_t)TOKENS * p.dim; j++) {
            worst = fmaxf(worst, fabsf(want[j] - got[j]));
            largest = fmaxf(largest, fabsf(want[j]));
        }
        assert_true(worst <= FIXTURE_F32_TOLERANCE * largest);
    }
    free(want);
    free(got);
    free(x);
    vkmoe_model_destroy(&cached);
    vkmoe_model_destroy(&resident);
    mp.cpu_expert_layers = 0;
    mp.expert_budget_bytes = 3 * one - 1;
    assert_int_equal(vkmoe_model_open(ctx, path, &mp, &cached), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_null(cached);
    assert_non_null(strstr(vkmoe_last_error(), "less than one expert"));
}

/* Misses of a forward of `tokens` rows of x through layer, and how many
 * experts it needed. */
static uint64_t misses_of(vkmoe_layer *layer, uint32_t tokens, const float *x, float *y,
                          uint32_t *needed)
{
    vkmoe_cache_stats before, after;
    assert_int_equal(vkmoe_layer_cache_stats(layer, &before), VKMOE_OK);
    assert_int_equal(vkmoe_layer_forward(layer, tokens, x, y), VKMOE_OK);
    assert_int_equal(vkmoe_layer_cache_stats(layer, &after), VKMOE_OK);
    uint32_t counts[64];
    vkmoe_layer_params p;
    assert_int_equal(vkmoe_layer_params_of(layer, &p), VKMOE_OK);
    assert_int_equal(vkmoe_layer_expert_counts(layer, counts, p.experts), VKMOE_OK);
    *needed = 0;
    for (uint32_t e = 0; e < p.experts; e++)
        *needed += counts[e] > 0;
    return after.misses - before.misses;
}

/* shared_cache: the MoE layers (one shape) share the budget's 30 slots:
 * the resident model's bits, with prefetches too (on the copy path where
 * ctx has one: after a pass of one token, whose 8 experts a layer each
 * leave slots to take); the model's memory counts the slots once; a layer
 * run alone keeps every expert it needs where its own share (10) would
 * not. */
static void check_shared_cache(vkmoe_context *ctx, const char *path)
{
    vkmoe_model *resident = open_model(ctx, path, NULL), *split = NULL, *shared = NULL;
    vkmoe_layer_params p;
    assert_int_equal(vkmoe_layer_params_of(vkmoe_model_layer(resident, 1), &p), VKMOE_OK);
    vkmoe_model_params mp = {.max_tokens = TOKENS,
                             .expert_budget_bytes = 3 * 10 * vkmoe_expert_bytes(&p)};
    assert_int_equal(vkmoe_model_open(ctx, path, &mp, &split), VKMOE_OK);
    mp.shared_cache = true;
    assert_int_equal(vkmoe_model_open(ctx, path, &mp, &shared), VKMOE_OK);
    vkmoe_memory_report whole_split, whole_shared, one;
    assert_int_equal(vkmoe_model_memory(split, &whole_split), VKMOE_OK);
    assert_int_equal(vkmoe_model_memory(shared, &whole_shared), VKMOE_OK);
    assert_int_equal(vkmoe_layer_memory(vkmoe_model_layer(shared, 2), &one), VKMOE_OK);
    assert_true(whole_shared.experts <= whole_split.experts);
    assert_true(whole_shared.experts < 3 * one.experts); /* not thrice */
    float *x = test_input(TOKENS, p.dim);
    for (int pass = 0; pass < 3; pass++)
        check_same_chain(resident, shared, x, pass == 0 ? TOKENS : 1, p.dim, pass == 2);
    check_cache_stats(shared, 30, 3, ctx->copies != NULL);
    /* Layer 1 alone on three tokens, four times: the split cache misses
     * each time; the shared one, kept from the others' shares while they
     * have run since its previous forward, takes their slots on its second
     * and misses none after. */
    float *y = malloc((size_t)TOKENS * p.dim * sizeof(float));
    uint32_t needed;
    for (int pass = 0; pass < 4; pass++) {
        uint64_t split_misses = misses_of(vkmoe_model_layer(split, 1), 3, x, y, &needed);
        assert_true(needed > 10 && needed <= 30);
        assert_true(split_misses >= needed - 10);
        uint64_t shared_misses = misses_of(vkmoe_model_layer(shared, 1), 3, x, y, &needed);
        if (pass > 1)
            assert_int_equal(shared_misses, 0);
    }
    free(y);
    free(x);
    vkmoe_model_destroy(&shared);
    vkmoe_model_destroy(&split);
    vkmoe_model_destroy(&resident);
}

/* A chain through a model with shared slots, each layer's forward after
 * the next layer's prefetch, against the resident model's outputs. */
typedef struct shared_run {
    vkmoe_model *model;
    const float *x;
    uint32_t dim;
    float *want[LAYERS], *got[LAYERS];
} shared_run;

static vkmoe_status shared_attempt(void *user)
{
    shared_run *run = user;
    const float *in = run->x;
    for (uint32_t i = 1; i < LAYERS; i++) {
        vkmoe_layer *next = i + 1 < LAYERS ? vkmoe_model_layer(run->model, i + 1) : NULL;
        vkmoe_status status = next ? vkmoe_layer_prefetch(next, 4, in) : VKMOE_OK;
        if (status == VKMOE_OK)
            status = vkmoe_layer_forward(vkmoe_model_layer(run->model, i), 4, in, run->got[i]);
        if (status != VKMOE_OK)
            return status;
        in = run->got[i];
    }
    return VKMOE_OK;
}

/* Each member of a model's shared pool counts as held the slots it owns
 * (kept_from's shares read the counts), whatever failed before. */
static void check_held_slots(vkmoe_model *model)
{
    for (uint32_t i = 1; i < LAYERS; i++) {
        const vkmoe_expert_cache *c = vkmoe_model_layer(model, i)->weights.cache;
        uint32_t owned = 0;
        for (uint32_t s = 0; s < c->pool->slots; s++)
            owned += c->pool->owner[s] == c;
        assert_int_equal(owned, c->held);
    }
}

static void shared_whole(void *user)
{
    shared_run *run = user;
    check_held_slots(run->model);
    for (uint32_t i = 1; i < LAYERS; i++)
        memset(run->got[i], 0, 4ull * run->dim * sizeof(float));
    assert_int_equal(shared_attempt(run), VKMOE_OK);
    check_held_slots(run->model);
    for (uint32_t i = 1; i < LAYERS; i++)
        assert_memory_equal(run->want[i], run->got[i], 4ull * run->dim * sizeof(float));
}

/* Every failable Vulkan call of a chain through shared slots (12, which
 * the layers' forwards of 4 tokens take from each other) failed in turn:
 * a failure status, then the whole chain with nothing failing gives the
 * resident model's bits. */
static unsigned shared_failures(vkmoe_context *ctx, const char *path)
{
    vkmoe_model *resident = open_model(ctx, path, NULL);
    vkmoe_layer_params p;
    assert_int_equal(vkmoe_layer_params_of(vkmoe_model_layer(resident, 1), &p), VKMOE_OK);
    vkmoe_model_params mp = {.max_tokens = TOKENS,
                             .expert_budget_bytes = 12 * vkmoe_expert_bytes(&p),
                             .shared_cache = true};
    shared_run run = {.x = test_input(4, p.dim), .dim = p.dim};
    assert_int_equal(vkmoe_model_open(ctx, path, &mp, &run.model), VKMOE_OK);
    const float *in = run.x;
    for (uint32_t i = 1; i < LAYERS; i++) {
        run.want[i] = malloc(4ull * p.dim * sizeof(float));
        run.got[i] = malloc(4ull * p.dim * sizeof(float));
        assert_int_equal(vkmoe_layer_forward(vkmoe_model_layer(resident, i), 4, in, run.want[i]),
                         VKMOE_OK);
        in = run.want[i];
    }
    unsigned points =
        interposer_fail_in_turn(VK_ERROR_OUT_OF_DEVICE_MEMORY, VKMOE_ERROR_OUT_OF_DEVICE_MEMORY,
                                shared_attempt, shared_whole, &run);
    free_chain(run.want);
    free_chain(run.got);
    free((void *)run.x);
    vkmoe_model_destroy(&run.model);
    vkmoe_model_destroy(&resident);
    return points;
}

/* Inline copies on the host's device, then the copy path with prefetches
 * on a device vkmoe creates. */
static void test_shared_cache_failures(void **state)
{
    write_gguf_model(*state, 508, "failures.gguf");
    vkmoe_context *ctx = interposer_context(*state, false);
    assert_non_null(ctx);
    unsigned inline_points = shared_failures(ctx, path_in("failures.gguf"));
    vkmoe_context_destroy(&ctx);
    ctx = interposer_context(*state, true);
    assert_non_null(ctx);
    unsigned copy_points = shared_failures(ctx, path_in("failures.gguf"));
    assert_int_equal(vkmoe_context_validation_errors(ctx), 0);
    vkmoe_context_destroy(&ctx);
    printf("failable Vulkan calls of a chain through shared slots failed in turn: %u inline, %u "
           "on the copy path\n",
           inline_points, copy_points);
    assert_true(inline_points >= 9 && copy_points > inline_points);
    remove(path_in("failures.gguf"));
}

/* shared_cache on a model whose layers' experts have two shapes (as a
 * Q4_K_M file's down projections, Q4_K in some layers and Q6_K in others):
 * layers 1 and 3 (Q8_0) share one set of slots, layer 2 (its down
 * projections f16) has its own, the budget split between the two sets in
 * proportion to their experts' bytes; the resident model's bits. */
static void test_shared_cache_groups(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(509);
    vkmoe_layer_params p = deepseek_params();
    p.weight_type = p.down_weight_type = VKMOE_WEIGHT_Q8_0;
    p.dim = 64;
    p.ffn_dim = p.shared_ffn_dim = 32;
    test_model_weights m;
    memset(&m, 0, sizeof(m));
    for (uint32_t i = 1; i < LAYERS; i++) {
        vkmoe_layer_params q = p;
        q.down_weight_type = i == 2 ? VKMOE_WEIGHT_F16 : VKMOE_WEIGHT_Q8_0;
        checkpoint_weights(ctx, q, &m.layers[i]);
        m.present[i] = &m.layers[i];
    }
    gguf_writer w = {0};
    checkpoint_deepseek_v3_meta(&w);
    gguf_add_u32(&w, "deepseek2.block_count", LAYERS);
    gguf_add_u32(&w, "deepseek2.leading_dense_block_count", 1);
    checkpoint_write_gguf_model(path_in("groups.gguf"), &w, m.present, LAYERS, "deepseek2");
    uint64_t q8 = vkmoe_expert_bytes(&m.layers[1].params),
             f16 = vkmoe_expert_bytes(&m.layers[2].params);
    assert_true(f16 > q8);
    double all = (double)p.experts * (2 * q8 + f16), budget = all / 4;
    vkmoe_model_params mp = {
        .max_tokens = TOKENS, .expert_budget_bytes = (uint64_t)budget, .shared_cache = true};
    vkmoe_model *resident = open_model(ctx, path_in("groups.gguf"), NULL), *shared = NULL;
    assert_int_equal(vkmoe_model_open(ctx, path_in("groups.gguf"), &mp, &shared), VKMOE_OK);
    uint32_t want[LAYERS] = {0, (uint32_t)(budget * (2 * q8 * p.experts / all) / q8),
                             (uint32_t)(budget * (f16 * p.experts / all) / f16), 0};
    want[3] = want[1];
    for (uint32_t i = 1; i < LAYERS; i++) {
        vkmoe_cache_stats s;
        assert_int_equal(vkmoe_layer_cache_stats(vkmoe_model_layer(shared, i), &s), VKMOE_OK);
        assert_int_equal(s.slots, want[i]);
    }
    assert_true(want[1] != want[2]);
    float *x = test_input(TOKENS, p.dim);
    for (int pass = 0; pass < 2; pass++)
        check_same_chain(resident, shared, x, TOKENS, p.dim, false);
    free(x);
    vkmoe_model_destroy(&shared);
    vkmoe_model_destroy(&resident);
    model_weights_free(&m);
    remove(path_in("groups.gguf"));
}

/* Misses of `steps` decode steps (after 20 to warm up) through a model's
 * layers 1..layers − 1, each token's rows of xs through the chain. */
static uint64_t decode_misses(vkmoe_model *model, uint32_t layers, const float *xs, uint32_t steps,
                              uint32_t dim)
{
    float *ys[2] = {malloc(dim * sizeof(float)), malloc(dim * sizeof(float))};
    uint64_t misses = 0;
    for (uint32_t s = 0; s < steps + 20; s++) {
        const float *in = xs + (size_t)s * dim;
        for (uint32_t i = 1; i < layers; i++) {
            vkmoe_layer *layer = vkmoe_model_layer(model, i);
            vkmoe_cache_stats before, after;
            assert_int_equal(vkmoe_layer_cache_stats(layer, &before), VKMOE_OK);
            assert_int_equal(vkmoe_layer_forward(layer, 1, in, ys[i % 2]), VKMOE_OK);
            assert_int_equal(vkmoe_layer_cache_stats(layer, &after), VKMOE_OK);
            misses += s >= 20 ? after.misses - before.misses : 0;
            in = ys[i % 2];
        }
    }
    free(ys[0]);
    free(ys[1]);
    return misses;
}

/* shared_cache where the layers route unlike each other: of six MoE
 * layers of 64 experts, k 8, layers 2 and 5 always take experts 0-7 (a
 * selection bias of 100), the others route as their random weights and
 * inputs make them. At a quarter and half of the experts, the shared
 * slots miss fewer than each layer's own share (the split leaves layers 2
 * and 5 slots they never use). */
static void test_shared_cache_follows_the_routing(void **state)
{
    enum { MODEL_LAYERS = 7, STEPS = 60 };
    vkmoe_context *ctx = *state;
    test_seed(507);
    vkmoe_layer_params p = test_shape(128, 64, 64, 0, 1);
    p.weight_type = p.down_weight_type = VKMOE_WEIGHT_Q8_0;
    assert_int_equal(vkmoe_layer_params_family(&p, "deepseek-v3"), VKMOE_OK);
    p.shared_ffn_dim = 64;
    test_layer layers[MODEL_LAYERS];
    const test_layer *present[MODEL_LAYERS] = {NULL};
    for (uint32_t i = 1; i < MODEL_LAYERS; i++) {
        checkpoint_weights(ctx, p, &layers[i]);
        for (uint32_t e = 0; e < 8 && (i == 2 || i == 5); e++)
            layers[i].selection_bias[e] += 100;
        present[i] = &layers[i];
    }
    gguf_writer w = {0};
    checkpoint_deepseek_v3_meta(&w);
    gguf_add_u32(&w, "deepseek2.block_count", MODEL_LAYERS);
    gguf_add_u32(&w, "deepseek2.leading_dense_block_count", 1);
    checkpoint_write_gguf_model(path_in("routing.gguf"), &w, present, MODEL_LAYERS, "deepseek2");
    float *xs = test_input(STEPS + 20, p.dim);
    uint64_t all = 6ull * p.experts * vkmoe_expert_bytes(&layers[1].params);
    for (uint32_t eighths = 2; eighths <= 4; eighths *= 2) {
        uint64_t misses[2];
        for (int shared = 0; shared < 2; shared++) {
            vkmoe_model_params mp = {
                .max_tokens = 1, .expert_budget_bytes = all * eighths / 8, .shared_cache = shared};
            vkmoe_model *model;
            assert_int_equal(vkmoe_model_open(ctx, path_in("routing.gguf"), &mp, &model), VKMOE_OK);
            misses[shared] = decode_misses(model, MODEL_LAYERS, xs, STEPS, p.dim);
            vkmoe_model_destroy(&model);
        }
        printf("%u/8 of the experts: misses of %u layer forwards, each layer's share %llu, shared "
               "%llu\n",
               eighths, 6 * STEPS, (unsigned long long)misses[0], (unsigned long long)misses[1]);
        assert_true(misses[1] < misses[0]);
    }
    free(xs);
    for (uint32_t i = 1; i < MODEL_LAYERS; i++)
        test_layer_destroy(&layers[i]);
    remove(path_in("routing.gguf"));
}

/* Input x steering a router of `dim` columns (rows [experts][dim]) to the
 * k experts of `chosen`: small noise plus, for each, 8 logits' worth along
 * its row. */
static void steer_to(const float *router, uint32_t dim, const uint32_t *chosen, uint32_t k,
                     float *x)
{
    for (uint32_t d = 0; d < dim; d++)
        x[d] = test_uniform(-0.1f, 0.1f);
    for (uint32_t j = 0; j < k; j++) {
        const float *row = router + (size_t)chosen[j] * dim;
        double norm2 = 0;
        for (uint32_t d = 0; d < dim; d++)
            norm2 += (double)row[d] * row[d];
        for (uint32_t d = 0; d < dim; d++)
            x[d] += (float)(8.0 * row[d] / norm2);
    }
}

/* test_shared_cache_keeps_shares's model: six Mixtral layers of 16
 * experts, k 4, one set of weights; each step's and layer's experts drawn
 * uniformly, and the inputs steered to them. */
enum { ALIKE_LAYERS = 6, ALIKE_EXPERTS = 16, ALIKE_K = 4, ALIKE_STEPS = 40, ALIKE_WARM = 10 };
typedef uint32_t alike_choice[ALIKE_LAYERS][ALIKE_K];

static void alike_routing(const test_layer *t, alike_choice *chosen, float *xs)
{
    uint32_t dim = t->params.dim;
    for (uint32_t s = 0; s < ALIKE_STEPS + ALIKE_WARM; s++)
        for (uint32_t i = 0; i < ALIKE_LAYERS; i++) {
            for (uint32_t j = 0; j < ALIKE_K; j++) {
                bool fresh;
                do {
                    chosen[s][i][j] = (uint32_t)test_uniform(0, ALIKE_EXPERTS) % ALIKE_EXPERTS;
                    fresh = true;
                    for (uint32_t m = 0; m < j; m++)
                        fresh &= chosen[s][i][m] != chosen[s][i][j];
                } while (!fresh);
            }
            steer_to(t->router, dim, chosen[s][i], ALIKE_K,
                     xs + ((size_t)s * ALIKE_LAYERS + i) * dim);
        }
}

/* Misses after the warm-up of that routing through the model opened with
 * mp, every forward's routing checked (chosen is only read; C11 cannot
 * pass it as a pointer to const arrays). */
static uint64_t alike_misses(vkmoe_context *ctx, const vkmoe_model_params *mp, uint32_t dim,
                             alike_choice *chosen, const float *xs)
{
    vkmoe_model *model;
    assert_int_equal(vkmoe_model_open(ctx, path_in("alike.gguf"), mp, &model), VKMOE_OK);
    float *y = malloc(dim * sizeof(float));
    uint64_t misses = 0;
    for (uint32_t s = 0; s < ALIKE_STEPS + ALIKE_WARM; s++)
        for (uint32_t i = 0; i < ALIKE_LAYERS; i++) {
            vkmoe_layer *layer = vkmoe_model_layer(model, i);
            vkmoe_cache_stats before, after;
            uint32_t counts[ALIKE_EXPERTS];
            assert_int_equal(vkmoe_layer_cache_stats(layer, &before), VKMOE_OK);
            assert_int_equal(
                vkmoe_layer_forward(layer, 1, xs + ((size_t)s * ALIKE_LAYERS + i) * dim, y),
                VKMOE_OK);
            assert_int_equal(vkmoe_layer_cache_stats(layer, &after), VKMOE_OK);
            misses += s >= ALIKE_WARM ? after.misses - before.misses : 0;
            assert_int_equal(vkmoe_layer_expert_counts(layer, counts, ALIKE_EXPERTS), VKMOE_OK);
            for (uint32_t j = 0; j < ALIKE_K; j++)
                assert_int_equal(counts[chosen[s][i][j]], 1);
        }
    free(y);
    vkmoe_model_destroy(&model);
    return misses;
}

/* Where every layer routes alike (alike_routing), each layer keeps its
 * share of the shared slots, and they miss no more than each layer's own
 * share, under both policies, at half the experts: ranking every slot of
 * the model together missed more (here 511 of the 960 needed experts under
 * the frequency policy, against 468), as on Mixtral's recorded routing
 * (README). */
static void test_shared_cache_keeps_shares(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(511);
    vkmoe_layer_params p = test_shape(128, 32, ALIKE_EXPERTS, 0, 1);
    p.weight_type = p.down_weight_type = VKMOE_WEIGHT_Q8_0;
    assert_int_equal(vkmoe_layer_params_family(&p, "mixtral"), VKMOE_OK);
    p.top_k = ALIKE_K;
    test_layer t;
    checkpoint_weights(ctx, p, &t);
    const test_layer *present[ALIKE_LAYERS];
    for (uint32_t i = 0; i < ALIKE_LAYERS; i++)
        present[i] = &t;
    gguf_writer w = {0};
    gguf_add_u32(&w, "llama.block_count", ALIKE_LAYERS);
    checkpoint_write_gguf_model(path_in("alike.gguf"), &w, present, ALIKE_LAYERS, "llama");
    alike_choice *chosen = malloc((ALIKE_STEPS + ALIKE_WARM) * sizeof(*chosen));
    float *xs = malloc((size_t)(ALIKE_STEPS + ALIKE_WARM) * ALIKE_LAYERS * p.dim * sizeof(float));
    alike_routing(&t, chosen, xs);
    uint64_t all = (uint64_t)ALIKE_LAYERS * ALIKE_EXPERTS * vkmoe_expert_bytes(&t.params);
    for (int policy = 0; policy < 2; policy++) {
        uint64_t misses[2];
        for (int shared = 0; shared < 2; shared++) {
            vkmoe_model_params mp = {.max_tokens = 1,
                                     .expert_budget_bytes = all / 2,
                                     .cache_policy = (vkmoe_cache_policy)policy,
                                     .shared_cache = shared};
            misses[shared] = alike_misses(ctx, &mp, p.dim, chosen, xs);
        }
        printf("layers routing alike, %s, half the experts: misses of %u layer forwards, each "
               "layer's share %llu, shared %llu\n",
               policy ? "LRU" : "frequency", ALIKE_LAYERS * ALIKE_STEPS,
               (unsigned long long)misses[0], (unsigned long long)misses[1]);
        assert_true(misses[1] <= misses[0]);
    }
    free(xs);
    free(chosen);
    test_layer_destroy(&t);
    remove(path_in("alike.gguf"));
}

/* GGUF's stacked tensors (each matrix kind's experts one after another),
 * and a checkpoint's tensor per expert and matrix in two files (each
 * expert lent where it lies, gate, up and down interleaved). */
static void test_models_with_budget(void **state)
{
    vkmoe_layer_params p = write_gguf_model(*state, 503, "budget.gguf");
    check_model_with_budget(*state, path_in("budget.gguf"), p);
    check_shared_cache(*state, path_in("budget.gguf"));
    vkmoe_context *copies =
        test_context_with((vkmoe_context_options){.copies_on_compute_queue = true});
    check_shared_cache(copies, path_in("budget.gguf"));
    test_context_destroy(&copies);
    vkmoe_context *huge = test_huge_pages_context();
    assert_non_null(huge);
    check_model_with_budget(huge, path_in("budget.gguf"), p);
    test_context_destroy(&huge);
    /* A host application's device that enabled VK_EXT_external_memory_host
     * lends the file's pages as vkmoe's own does. */
    vkmoe_context *own = *state, *guest = NULL;
    vkmoe_vulkan_import import = test_import_of(own);
    import.external_memory_host = own->host_import_alignment > 0;
    assert_int_equal(vkmoe_context_create(&(vkmoe_context_params){.import = &import}, &guest),
                     VKMOE_OK);
    assert_int_equal(guest->host_import_alignment, own->host_import_alignment);
    check_model_with_budget(guest, path_in("budget.gguf"), p);
    vkmoe_context_destroy(&guest);
    remove(path_in("budget.gguf"));
    test_seed(504);
    p = deepseek_params();
    test_model_weights m;
    model_weights(*state, p, &m);
    checkpoint_write_hf_model(work_dir, m.present, LAYERS, deepseek_config,
                              &checkpoint_deepseek_names, 2);
    model_weights_free(&m);
    check_model_with_budget(*state, work_dir, p);
}

/* A progress callback that says stop: VKMOE_ERROR_CANCELLED, nothing made
 * (ASan would see what is left), and the next open works. */
static void test_cancel_from_progress(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(503);
    test_model_weights m;
    model_weights(ctx, deepseek_params(), &m);
    checkpoint_write_hf_model(work_dir, m.present, LAYERS, deepseek_config,
                              &checkpoint_deepseek_names, 1);
    for (uint32_t stop = 1; stop <= 150; stop += 149) {
        progress_log log = {.stop_after = stop};
        vkmoe_model_params mp = {.progress = log_progress, .progress_user_data = &log};
        vkmoe_model *model = (vkmoe_model *)&model;
        assert_int_equal(vkmoe_model_open(ctx, work_dir, &mp, &model), VKMOE_ERROR_CANCELLED);
        assert_null(model);
        assert_int_equal(log.calls, stop);
        assert_non_null(strstr(vkmoe_last_error(), "cancelled"));
    }
    vkmoe_layer *layer = NULL;
    progress_log log = {.stop_after = 2};
    vkmoe_model_params mp = {.progress = log_progress, .progress_user_data = &log};
    assert_int_equal(vkmoe_layer_from_file(ctx, work_dir, 1, &mp, &layer), VKMOE_ERROR_CANCELLED);
    assert_null(layer);
    vkmoe_model *model = open_model(ctx, work_dir, NULL);
    vkmoe_model_destroy(&model);
    model_weights_free(&m);
}

/* Qwen's sparse layers: decoder_sparse_step 2 makes layers 1 and 3 MoE
 * blocks, mlp_only_layers takes 3 away again. */
static void test_qwen_sparse_layers(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(504);
    vkmoe_layer_params p = test_shape(40, 24, 8, 2, 1);
    p.weight_type = VKMOE_WEIGHT_F16;
    assert_int_equal(vkmoe_layer_params_family(&p, "qwen3-moe"), VKMOE_OK);
    p.top_k = 2;
    test_model_weights m;
    model_weights(ctx, p, &m);
    m.present[2] = NULL;
    m.present[3] = NULL;
    checkpoint_write_hf_model(work_dir, m.present, LAYERS,
                              "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 40, "
                              "\"num_hidden_layers\": 4, \"moe_intermediate_size\": 24, "
                              "\"num_experts\": 8, \"num_experts_per_tok\": 2, "
                              "\"norm_topk_prob\": true, \"decoder_sparse_step\": 2, "
                              "\"mlp_only_layers\": [3]}",
                              &checkpoint_qwen_names, 1);
    vkmoe_model *model = open_model(ctx, work_dir, NULL);
    for (uint32_t i = 0; i < LAYERS; i++)
        assert_true((vkmoe_model_layer(model, i) != NULL) == (i == 1));
    vkmoe_model_destroy(&model);
    vkmoe_layer *layer = (vkmoe_layer *)&layer;
    assert_int_equal(vkmoe_layer_from_file(ctx, work_dir, 3, NULL, &layer),
                     VKMOE_ERROR_UNSUPPORTED);
    assert_non_null(strstr(vkmoe_last_error(), "dense"));
    assert_int_equal(vkmoe_layer_from_file(ctx, work_dir, 4, NULL, &layer),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkmoe_last_error(), "past the last of"));
    model_weights_free(&m);
}

static void expect_open_fails(vkmoe_context *ctx, const char *path, vkmoe_status status,
                              const char *words)
{
    vkmoe_model *model = (vkmoe_model *)&model;
    assert_int_equal(vkmoe_model_open(ctx, path, NULL, &model), status);
    assert_null(model);
    if (!strstr(vkmoe_last_error(), words))
        fail_msg("expected \"%s\" in: %s", words, vkmoe_last_error());
}

/* No layer count, no MoE layer, bad arguments: a clear status each. */
static void test_models_refused(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(505);
    test_model_weights m;
    model_weights(ctx, deepseek_params(), &m);
    static const char no_count[] =
        "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 40, "
        "\"moe_intermediate_size\": 24, \"n_routed_experts\": 32, \"num_experts_per_tok\": 8, "
        "\"n_group\": 8, \"topk_group\": 4, \"topk_method\": \"noaux_tc\", "
        "\"scoring_func\": \"sigmoid\", \"n_shared_experts\": 1}";
    checkpoint_write_hf_model(work_dir, m.present, LAYERS, no_count, &checkpoint_deepseek_names, 1);
    expect_open_fails(ctx, work_dir, VKMOE_ERROR_FILE_FORMAT, "num_hidden_layers");
    static const char all_dense[] =
        "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 40, \"num_hidden_layers\": 4, "
        "\"moe_intermediate_size\": 24, \"n_routed_experts\": 32, \"num_experts_per_tok\": 8, "
        "\"n_group\": 8, \"topk_group\": 4, \"topk_method\": \"noaux_tc\", "
        "\"scoring_func\": \"sigmoid\", \"n_shared_experts\": 1, \"first_k_dense_replace\": 9}";
    checkpoint_write_hf_model(work_dir, m.present, LAYERS, all_dense, &checkpoint_deepseek_names,
                              1);
    expect_open_fails(ctx, work_dir, VKMOE_ERROR_UNSUPPORTED, "no MoE layer");
    /* a layer the config promises but the file lacks */
    m.present[2] = NULL;
    checkpoint_write_hf_model(work_dir, m.present, LAYERS, deepseek_config,
                              &checkpoint_deepseek_names, 1);
    expect_open_fails(ctx, work_dir, VKMOE_ERROR_FILE_FORMAT, "model.layers.2.");
    expect_open_fails(ctx, path_in("absent"), VKMOE_ERROR_IO, "absent");

    vkmoe_model *model = NULL;
    assert_int_equal(vkmoe_model_open(NULL, work_dir, NULL, &model), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_model_open(ctx, NULL, NULL, &model), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_model_open(ctx, work_dir, NULL, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_memory_report report;
    assert_int_equal(vkmoe_model_memory(NULL, &report), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_memory(NULL, &report), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_model_layer_count(NULL), 0);
    assert_null(vkmoe_model_layer(NULL, 0));
    model_weights_free(&m);
}

static int setup(void **state)
{
    if (!test_make_dir("vkmoe-test-model-whole", work_dir, sizeof(work_dir)))
        return -1;
    return test_group_setup(state);
}

static int teardown(void **state)
{
    test_remove_dir(work_dir, checkpoint_files, checkpoint_file_count);
    return test_group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint_model),
        cmocka_unit_test(test_gguf_model),
        cmocka_unit_test(test_cancel_from_progress),
        cmocka_unit_test(test_qwen_sparse_layers),
        cmocka_unit_test(test_models_refused),
        cmocka_unit_test(test_models_with_budget),
        cmocka_unit_test(test_shared_cache_follows_the_routing),
        cmocka_unit_test(test_shared_cache_keeps_shares),
        cmocka_unit_test(test_shared_cache_failures),
        cmocka_unit_test(test_shared_cache_groups),
    };
    return test_device_suite(tests, setup, teardown);
}
