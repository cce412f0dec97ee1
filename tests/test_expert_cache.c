/* The expert cache (src/expert_cache.c): layers with a device budget
 * against the same layer with every expert on the device, bit for bit; the
 * replacement policies on a routing sequence whose best hit count is
 * known; failures mid-forward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "vulkan_interposer.h"

/* A layer of t's params and weights whose device holds `slots` experts. */
static vkmoe_layer *cached_twin(vkmoe_context *ctx, const test_layer *t, uint32_t slots,
                                vkmoe_cache_policy policy)
{
    vkmoe_layer_params p = t->params;
    p.expert_budget_bytes = slots * vkmoe_expert_bytes(&p);
    p.cache_policy = policy;
    return test_twin_of(ctx, t, &p);
}

/* A resident layer of params with random weights from `seed` (*t), and
 * its twin with `slots` experts on the device, evicting by LRU. */
static vkmoe_layer *resident_and_cached(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                        uint64_t seed, uint32_t slots, test_layer *t)
{
    test_seed(seed);
    test_layer_create(ctx, params, t);
    test_layer_upload(t);
    return cached_twin(ctx, t, slots, VKMOE_CACHE_LRU);
}

/* Experts the resident layer's last forward routed any token to. */
static uint32_t needed_experts(const vkmoe_layer *layer, uint32_t experts)
{
    uint32_t counts[64], needed = 0;
    assert_int_equal(vkmoe_layer_expert_counts(layer, counts, 64), VKMOE_OK);
    for (uint32_t e = 0; e < experts; e++)
        needed += counts[e] > 0;
    return needed;
}

/* Forwards of these token counts through both layers: the same bits every
 * time; returns the experts the forwards needed in all. */
static uint64_t expect_same_forwards(vkmoe_layer *resident, vkmoe_layer *cached,
                                     const uint32_t *tokens, size_t n, uint32_t dim,
                                     uint32_t experts)
{
    uint64_t needed = 0;
    for (size_t i = 0; i < n; i++) {
        float *x = test_input(tokens[i], dim);
        float *want = malloc(4ull * tokens[i] * dim), *got = malloc(4ull * tokens[i] * dim);
        assert_int_equal(vkmoe_layer_forward(resident, tokens[i], x, want), VKMOE_OK);
        assert_int_equal(vkmoe_layer_forward(cached, tokens[i], x, got), VKMOE_OK);
        if (memcmp(want, got, 4ull * tokens[i] * dim) != 0)
            fail_msg("forward %zu of %u tokens differs from the resident layer's", i, tokens[i]);
        needed += needed_experts(resident, experts);
        free(x);
        free(want);
        free(got);
    }
    return needed;
}

/* Budgets of 1, E/2, E−1 and E experts, each path, families with every
 * kind of expert input (biases, clamped SwiGLU, the weight on the input, a
 * shared expert): bit for bit the resident layer's output, and the
 * figures add up. */
static void check_budgets(vkmoe_context *ctx, vkmoe_layer_params p)
{
    static const uint32_t tokens[] = {1, 29, 3, 1, 1, 17, 2};
    const size_t n = VKMOE_ARRAY_SIZE(tokens);
    test_layer t;
    test_layer_create(ctx, &p, &t);
    test_layer_upload(&t);
    uint32_t budgets[] = {1, p.experts / 2, p.experts - 1};
    for (size_t b = 0; b < VKMOE_ARRAY_SIZE(budgets); b++) {
        vkmoe_layer *cached = cached_twin(ctx, &t, budgets[b], VKMOE_CACHE_FREQUENCY);
        test_seed(41);
        uint64_t needed = expect_same_forwards(t.layer, cached, tokens, n, p.dim, p.experts);
        vkmoe_cache_stats s;
        assert_int_equal(vkmoe_layer_cache_stats(cached, &s), VKMOE_OK);
        assert_int_equal(s.slots, budgets[b]);
        assert_int_equal(s.expert_bytes, vkmoe_expert_bytes(&t.params));
        assert_int_equal(s.forwards, n);
        assert_int_equal(s.hits + s.misses, needed);
        assert_int_equal(s.bytes_to_device, s.misses * s.expert_bytes);
        assert_true(s.misses >= budgets[b]);
        /* One slot and forwards needing several experts: several rounds. */
        if (budgets[b] == 1)
            assert_true(s.rounds > n);
        else
            assert_true(s.rounds >= n);
        vkmoe_memory_report resident, with_cache;
        assert_int_equal(vkmoe_layer_memory(t.layer, &resident), VKMOE_OK);
        assert_int_equal(vkmoe_layer_memory(cached, &with_cache), VKMOE_OK);
        assert_true(with_cache.experts < resident.experts);
        assert_true(with_cache.host_experts >= (uint64_t)p.experts * s.expert_bytes);
        assert_int_equal(resident.host_experts, 0);
        vkmoe_layer_destroy(&cached);
    }
    /* A budget of every expert is no cache at all. */
    vkmoe_layer *all = cached_twin(ctx, &t, p.experts, VKMOE_CACHE_LRU);
    vkmoe_cache_stats s;
    assert_int_equal(vkmoe_layer_cache_stats(all, &s), VKMOE_ERROR_STATE);
    test_seed(41);
    expect_same_forwards(t.layer, all, tokens, 2, p.dim, p.experts);
    vkmoe_layer_destroy(&all);
    test_layer_destroy(&t);
}

/* Whether family f runs on path g: all of them, but under ASan (CI's
 * second run) GPT-OSS's (biases too) on one path, as the host code is the
 * same for every path and family, and each costs minutes of sanitized
 * pipeline compiles. */
static bool path_in_run(size_t f, size_t g)
{
#if defined(__SANITIZE_ADDRESS__)
    return f == 1 && g == 0;
#else
    (void)f, (void)g;
    return true;
#endif
}

static void test_budgets_bit_identical(void **state)
{
    vkmoe_context *ctx = *state;
    static const vkmoe_gemm_path paths[] = {VKMOE_GEMM_REGISTER, VKMOE_GEMM_TILED, VKMOE_GEMM_GEMV};
    static const char *const families[] = {"mixtral", "gpt-oss", "llama4", "qwen2-moe"};
    for (size_t f = 0; f < VKMOE_ARRAY_SIZE(families); f++)
        for (size_t g = 0; g < VKMOE_ARRAY_SIZE(paths); g++) {
            if (!path_in_run(f, g))
                continue;
            vkmoe_layer_params p = test_shape(40, 24, 7, 2, 29);
            assert_int_equal(vkmoe_layer_params_family(&p, families[f]), VKMOE_OK);
            p.top_k = families[f][0] == 'l' ? 1 : 2;
            p.shared_ffn_dim = families[f][0] == 'l' || families[f][0] == 'q' ? 16 : 0;
            p.weight_type = g == 0 ? VKMOE_WEIGHT_F16 : VKMOE_WEIGHT_F32;
            p.gemm_path = paths[g];
            test_seed(7 + f);
            check_budgets(ctx, p);
        }
}

/* Copies on the copy queue's submissions and timeline (here the compute
 * queue's, lavapipe having no transfer queue): the misses' copies beside
 * the hits' GEMMs in a submission of their own, the same bits. */
static void test_budgets_on_the_copy_queue(void **state)
{
    (void)state;
    vkmoe_context *ctx =
        test_context_with((vkmoe_context_options){.copies_on_compute_queue = true});
    vkmoe_device_info info;
    assert_int_equal(vkmoe_context_device_info(ctx, &info), VKMOE_OK);
    /* lavapipe: the compute queue's, not a transfer queue; a GPU with a
     * transfer queue (the H200) takes that one. */
    if (vkmoe_context_cpu_shaped(ctx))
        assert_false(info.copy_queue);
    vkmoe_layer_params p = test_shape(40, 24, 7, 2, 29);
    assert_int_equal(vkmoe_layer_params_family(&p, "gpt-oss"), VKMOE_OK);
    p.weight_type = VKMOE_WEIGHT_F16;
    test_seed(8);
    check_budgets(ctx, p);
    assert_int_equal(vkmoe_context_validation_errors(ctx), 0);
    vkmoe_context_destroy(&ctx);
}

/* A host application lending its queue for the copies (here its compute
 * queue itself, lavapipe having no other): the same bits, and prefetches;
 * a family that does not exist is refused. */
static void test_lent_copy_queue(void **state)
{
    vkmoe_context *host = *state;
    vkmoe_vulkan_import import = test_import_of(host);
    import.copy_queue = import.queue;
    import.copy_queue_family = 99;
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&(vkmoe_context_params){.import = &import}, &ctx),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    import.copy_queue_family = import.queue_family;
    assert_int_equal(vkmoe_context_create(&(vkmoe_context_params){.import = &import}, &ctx),
                     VKMOE_OK);
    vkmoe_layer_params p = test_shape(40, 24, 7, 2, 29);
    p.weight_type = VKMOE_WEIGHT_F16;
    test_seed(9);
    check_budgets(ctx, p);
    test_layer t;
    vkmoe_layer *cached = resident_and_cached(ctx, &p, 10, 3, &t);
    float *x = test_input(5, p.dim), *y = malloc(4ull * 5 * p.dim);
    assert_int_equal(vkmoe_layer_prefetch(cached, 5, x), VKMOE_OK);
    assert_int_equal(vkmoe_layer_forward(cached, 5, x, y), VKMOE_OK);
    vkmoe_cache_stats s;
    assert_int_equal(vkmoe_layer_cache_stats(cached, &s), VKMOE_OK);
    assert_true(s.prefetched > 0);
    free(x);
    free(y);
    vkmoe_layer_destroy(&cached);
    test_layer_destroy(&t);
    vkmoe_context_destroy(&ctx);
}

/* A quantized type with its own down type, on the register path. */
static void test_budgets_quantized(void **state)
{
    vkmoe_layer_params p = test_shape(256, 96, 6, 3, 29);
    p.weight_type = VKMOE_WEIGHT_Q4_K;
    p.down_weight_type = VKMOE_WEIGHT_Q8_0;
    test_seed(17);
    check_budgets(*state, p);
}

/* A layer of random experts whose router copies x's first E coordinates
 * into the logits: x = 4 at coordinate e routes the token to expert e. */
static void steered_layer(vkmoe_context *ctx, const vkmoe_layer_params *p, test_layer *t)
{
    test_layer_create(ctx, p, t);
    memset(t->router, 0, 4ull * p->experts * p->dim);
    for (uint32_t e = 0; e < p->experts; e++)
        t->router[e * p->dim + e] = 1;
    test_layer_upload(t);
}

/* Hits of the best possible eviction (Belady's: evict the expert needed
 * again the latest) on a sequence of single experts with `slots` slots. */
static uint32_t optimal_hits(const uint32_t *seq, size_t n, uint32_t slots)
{
    uint32_t held[8], count = 0, hits = 0;
    for (size_t i = 0; i < n; i++) {
        bool hit = false;
        for (uint32_t s = 0; s < count; s++)
            hit |= held[s] == seq[i];
        if (hit) {
            hits++;
            continue;
        }
        if (count < slots) {
            held[count++] = seq[i];
            continue;
        }
        size_t latest = 0;
        uint32_t evict = 0;
        for (uint32_t s = 0; s < count; s++) {
            size_t next = i + 1;
            while (next < n && seq[next] != held[s])
                next++;
            if (next >= latest) {
                latest = next;
                evict = s;
            }
        }
        held[evict] = seq[i];
    }
    return hits;
}

/* Two hot experts, and cold ones in pairs between them: LRU evicts the
 * hot ones for the cold, the frequency policy keeps them and does as well
 * as the best eviction can (routing steered by steered_layer's router). */
static void test_policy_on_a_known_sequence(void **state)
{
    vkmoe_context *ctx = *state;
    static const uint32_t seq[] = {0, 1, 0, 1, 0, 1, 2, 3, 0, 1, 4, 5, 0, 1,
                                   2, 3, 0, 1, 4, 5, 0, 1, 0, 1, 2, 3, 0, 1};
    const size_t n = VKMOE_ARRAY_SIZE(seq);
    const uint32_t slots = 3, dim = 8;
    vkmoe_layer_params p = test_shape(dim, 8, 6, 1, 1);
    test_layer t;
    steered_layer(ctx, &p, &t);
    uint64_t hits[2];
    for (int policy = 0; policy < 2; policy++) {
        vkmoe_layer *cached = cached_twin(ctx, &t, slots, (vkmoe_cache_policy)policy);
        for (size_t i = 0; i < n; i++) {
            float x[8] = {0}, want[8], got[8];
            x[seq[i]] = 4;
            assert_int_equal(vkmoe_layer_forward(t.layer, 1, x, want), VKMOE_OK);
            assert_int_equal(needed_experts(t.layer, p.experts), 1);
            uint32_t counts[6];
            assert_int_equal(vkmoe_layer_expert_counts(t.layer, counts, 6), VKMOE_OK);
            assert_int_equal(counts[seq[i]], 1);
            assert_int_equal(vkmoe_layer_forward(cached, 1, x, got), VKMOE_OK);
            assert_memory_equal(want, got, sizeof(want));
        }
        vkmoe_cache_stats s;
        assert_int_equal(vkmoe_layer_cache_stats(cached, &s), VKMOE_OK);
        assert_int_equal(s.hits + s.misses, n);
        hits[policy] = s.hits;
        vkmoe_layer_destroy(&cached);
    }
    uint32_t best = optimal_hits(seq, n, slots);
    printf("hits on %zu forwards, %u slots: frequency %llu, LRU %llu, optimal %u\n", n, slots,
           (unsigned long long)hits[VKMOE_CACHE_FREQUENCY],
           (unsigned long long)hits[VKMOE_CACHE_LRU], best);
    assert_int_equal(hits[VKMOE_CACHE_FREQUENCY], best);
    assert_true(hits[VKMOE_CACHE_LRU] < best);
    test_layer_destroy(&t);
}

/* Single-token forwards of test_policy_on_a_known_sequence's steered
 * router through `layer`: the outputs, [n][dim]. */
static float *steered_forwards(vkmoe_layer *layer, const uint32_t *seq, size_t n, uint32_t dim)
{
    float *y = malloc((size_t)n * dim * sizeof(float)), *x = calloc(dim, sizeof(float));
    for (size_t i = 0; i < n; i++) {
        x[seq[i]] = 4;
        assert_int_equal(vkmoe_layer_forward(layer, 1, x, y + i * dim), VKMOE_OK);
        x[seq[i]] = 0;
    }
    free(x);
    return y;
}

/* cpu_cold_experts: an expert seen once runs on the host, one seen twice of
 * late is copied in and stays; with copies cheap the cache behaves as
 * without it, bit for bit the resident layer's. */
static void test_cold_experts_on_the_host(void **state)
{
    vkmoe_context *ctx = *state;
    static const uint32_t seq[] = {0, 0, 0, 1, 2, 3, 0, 4, 0, 5};
    const size_t n = VKMOE_ARRAY_SIZE(seq);
    const uint32_t dim = 16;
    vkmoe_layer_params p = test_shape(dim, 24, 8, 1, 1);
    test_seed(37);
    test_layer t;
    steered_layer(ctx, &p, &t);
    float *want = steered_forwards(t.layer, seq, n, dim), *got[3];
    float copy_rates[3] = {1, 1, 1e6}; /* GB/s: slow, slow again, free */
    for (int run = 0; run < 3; run++) {
        vkmoe_layer_params q = t.params;
        q.expert_budget_bytes = 2 * vkmoe_expert_bytes(&q);
        q.cpu_cold_experts = true;
        q.host_to_device_gbps = copy_rates[run];
        vkmoe_layer *layer;
        assert_int_equal(vkmoe_layer_create(ctx, &q, &layer), VKMOE_OK);
        fixture_layer twin = t;
        twin.layer = layer;
        assert_int_equal(fixture_layer_upload(&twin), VKMOE_OK);
        got[run] = steered_forwards(layer, seq, n, dim);
        vkmoe_cache_stats s;
        assert_int_equal(vkmoe_layer_cache_stats(layer, &s), VKMOE_OK);
        assert_int_equal(s.forwards, n);
        assert_int_equal(s.hits + s.misses + s.cpu_experts, n);
        if (run < 2) {
            /* 0 on the host, then copied in (needed twice), then hits; the
             * others seen once each. */
            assert_int_equal(s.misses, 1);
            assert_int_equal(s.hits, 3);
            assert_int_equal(s.cpu_experts, 6);
            assert_int_equal(s.cpu_slots, 6);
        } else {
            assert_int_equal(s.cpu_experts, 0);
            assert_memory_equal(got[run], want, (size_t)n * dim * sizeof(float));
        }
        vkmoe_layer_destroy(&layer);
    }
    /* The host's rows: within the reference's tolerance, the same bits twice. */
    assert_memory_equal(got[0], got[1], (size_t)n * dim * sizeof(float));
    float largest = 0, worst = 0;
    for (size_t i = 0; i < (size_t)n * dim; i++) {
        largest = fmaxf(largest, fabsf(want[i]));
        worst = fmaxf(worst, fabsf(want[i] - got[0][i]));
    }
    assert_true(worst <= F32_TOLERANCE * largest);
    assert_true(memcmp(want, got[0], (size_t)n * dim * sizeof(float)) != 0);
    for (int run = 0; run < 3; run++)
        free(got[run]);
    free(want);
    test_layer_destroy(&t);
}

/* Setting an expert again after it was cached: the stale slot is not used. */
static void test_set_expert_again(void **state)
{
    vkmoe_context *ctx = *state;
    static const uint32_t tokens[] = {9, 9};
    vkmoe_layer_params p = test_shape(32, 16, 4, 2, 9);
    test_layer t;
    vkmoe_layer *cached = resident_and_cached(ctx, &p, 23, 3, &t);
    test_seed(5);
    expect_same_forwards(t.layer, cached, tokens, 1, p.dim, p.experts);
    fixture_expert e = fixture_layer_expert(&t, 1);
    for (uint32_t i = 0; i < p.dim * p.ffn_dim; i++)
        e.up[i] = -e.up[i];
    assert_int_equal(fixture_upload_matrix(t.layer, &t.params, 1, VKMOE_EXPERT_UP, e.up,
                                           (size_t)p.dim * p.ffn_dim),
                     VKMOE_OK);
    assert_int_equal(fixture_upload_matrix(cached, &t.params, 1, VKMOE_EXPERT_UP, e.up,
                                           (size_t)p.dim * p.ffn_dim),
                     VKMOE_OK);
    test_seed(5);
    expect_same_forwards(t.layer, cached, tokens, 2, p.dim, p.experts);
    vkmoe_layer_destroy(&cached);
    test_layer_destroy(&t);
}

/* What a layer with a cache refuses, and the budget's bounds. */
static void test_bad_budgets(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params p = test_shape(32, 16, 4, 2, 4);
    uint64_t one = vkmoe_expert_bytes(&p);
    assert_int_equal(one, 3ull * 16 * 32 * 4);
    p.ffn_dim = 32;
    p.weight_type = VKMOE_WEIGHT_Q8_0;
    p.activation = VKMOE_ACTIVATION_RELU; /* no gate */
    assert_int_equal(vkmoe_expert_bytes(&p), 2ull * vkmoe_weight_bytes(VKMOE_WEIGHT_Q8_0, 1024));
    assert_int_equal(vkmoe_expert_bytes(NULL), 0);
    p = test_shape(32, 16, 4, 2, 4);
    p.expert_budget_bytes = one - 1;
    test_expect_create_fails(ctx, &p, VKMOE_ERROR_INVALID_ARGUMENT, "at least one expert");
    p.expert_budget_bytes = one;
    p.cache_policy = (vkmoe_cache_policy)7;
    test_expect_create_fails(ctx, &p, VKMOE_ERROR_INVALID_ARGUMENT, "cache_policy");
    p.cache_policy = VKMOE_CACHE_LRU;
    test_layer t;
    test_layer_create(ctx, &p, &t);
    test_layer_upload(&t);
    VkCommandPool pool;
    VkCommandBuffer cmd = test_commands_begin(ctx, &pool);
    vkmoe_status status = vkmoe_layer_record_forward(t.layer, cmd, 1, t.layer->work->x.buffer, 0,
                                                     t.layer->work->y.buffer, 0);
    test_commands_run(ctx, pool, cmd);
    assert_int_equal(status, VKMOE_ERROR_UNSUPPORTED);
    assert_non_null(strstr(vkmoe_last_error(), "vkmoe_layer_forward"));
    assert_int_equal(vkmoe_layer_cache_stats(NULL, &(vkmoe_cache_stats){0}),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_cache_stats(t.layer, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    test_layer_destroy(&t);
}

/* A forward of the cached layer, after a prefetch from x when asked. */
static vkmoe_status cached_forward(vkmoe_layer *layer, bool prefetch, const float *x, float *y)
{
    vkmoe_status status = prefetch ? vkmoe_layer_prefetch(layer, 6, x) : VKMOE_OK;
    return status == VKMOE_OK ? vkmoe_layer_forward(layer, 6, x, y) : status;
}

/* A cached forward (prefetched, or not) and the resident layer's rows. */
typedef struct cached_run {
    vkmoe_layer *cached;
    bool prefetch;
    const float *x;
    float want[6 * 24], got[6 * 24];
} cached_run;

static vkmoe_status cached_attempt(void *user)
{
    cached_run *run = user;
    return cached_forward(run->cached, run->prefetch, run->x, run->got);
}

static void cached_whole(void *user)
{
    cached_run *run = user;
    memset(run->got, 0, sizeof(run->got));
    assert_int_equal(cached_attempt(run), VKMOE_OK);
    assert_memory_equal(run->want, run->got, sizeof(run->got));
}

/* Every failable Vulkan call of a forward (and of the prefetch before it)
 * failed in turn: a failure status, then the next forward, with nothing
 * failing, gives the resident layer's bits. */
static void failures_mid_forward(vkmoe_context *ctx, bool prefetch)
{
    vkmoe_layer_params p = test_shape(24, 16, 5, 2, 6);
    test_layer t;
    cached_run run = {.cached = resident_and_cached(ctx, &p, 31, 2, &t), .prefetch = prefetch};
    float *x = test_input(6, p.dim);
    run.x = x;
    assert_int_equal(vkmoe_layer_forward(t.layer, 6, x, run.want), VKMOE_OK);
    unsigned points =
        interposer_fail_in_turn(VK_ERROR_OUT_OF_DEVICE_MEMORY, VKMOE_ERROR_OUT_OF_DEVICE_MEMORY,
                                cached_attempt, cached_whole, &run);
    assert_memory_equal(run.want, run.got, sizeof(run.got));
    printf("%u failable Vulkan calls of a cached forward%s failed in turn\n", points,
           prefetch ? " and its prefetch" : "");
    assert_true(points >= (prefetch ? 8u : 3u));
    vkmoe_cache_stats s;
    assert_int_equal(vkmoe_layer_cache_stats(run.cached, &s), VKMOE_OK);
    assert_int_equal(s.forwards, points + 1);
    assert_true(prefetch ? s.prefetched > 0 : s.prefetched == 0);
    free(x);
    vkmoe_layer_destroy(&run.cached);
    test_layer_destroy(&t);
}

/* Copies inline, on the host's device; then on the copy queue's
 * submissions, prefetched too, on a device vkmoe creates with a discrete
 * GPU's memory (x, y and the counts through staging copies, whose failed
 * waits must not free a buffer a copy still uses: interposer_fail_in_turn
 * checks). */
static void test_failures_mid_forward(void **state)
{
    vkmoe_context *ctx = interposer_context(*state, false);
    assert_non_null(ctx);
    failures_mid_forward(ctx, false);
    vkmoe_context_destroy(&ctx);
    ctx = interposer_context(*state, true);
    assert_non_null(ctx);
    failures_mid_forward(ctx, true);
    assert_int_equal(vkmoe_context_validation_errors(ctx), 0);
    vkmoe_context_destroy(&ctx);
}

/* Prefetching: the next forward's own input predicts it exactly, so that
 * forward copies nothing more and every prefetched expert is a hit; a
 * wrong prediction costs copies, never bits; no cache or no copy queue:
 * nothing happens. */
static void test_prefetch(void **state)
{
    vkmoe_context *ctx =
        test_context_with((vkmoe_context_options){.copies_on_compute_queue = true});
    vkmoe_layer_params p = test_shape(40, 24, 16, 3, 9);
    test_layer t;
    vkmoe_layer *cached = resident_and_cached(ctx, &p, 53, 12, &t);
    float want[9 * 40], got[9 * 40];
    vkmoe_cache_stats before, after;
    for (uint32_t i = 0; i < 6; i++) {
        uint32_t tokens = i % 2 ? 1 : 3 + i;
        float *x = test_input(tokens, p.dim), *other = test_input(tokens, p.dim);
        assert_int_equal(vkmoe_layer_cache_stats(cached, &before), VKMOE_OK);
        /* Even forwards are predicted by their own input, odd ones wrongly. */
        assert_int_equal(vkmoe_layer_prefetch(cached, tokens, i % 2 ? other : x), VKMOE_OK);
        assert_int_equal(vkmoe_layer_expert_counts(cached, (uint32_t[16]){0}, 16),
                         VKMOE_ERROR_STATE);
        assert_int_equal(vkmoe_layer_forward(t.layer, tokens, x, want), VKMOE_OK);
        assert_int_equal(vkmoe_layer_forward(cached, tokens, x, got), VKMOE_OK);
        assert_memory_equal(want, got, 4ull * tokens * p.dim);
        assert_int_equal(vkmoe_layer_cache_stats(cached, &after), VKMOE_OK);
        uint64_t prefetched = after.prefetched - before.prefetched,
                 hits = after.prefetch_hits - before.prefetch_hits;
        if (i % 2 == 0) {
            assert_int_equal(after.misses, before.misses);
            assert_int_equal(hits, prefetched);
        }
        assert_true(hits <= prefetched);
        assert_int_equal(after.bytes_to_device - before.bytes_to_device,
                         (after.misses - before.misses + prefetched) * after.expert_bytes);
        free(x);
        free(other);
    }
    assert_true(after.prefetched > 0);
    float x[40];
    memset(x, 0, sizeof(x));
    assert_int_equal(vkmoe_layer_prefetch(NULL, 1, x), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_prefetch(cached, 1, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_prefetch(cached, 10, x), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_prefetch(t.layer, 1, x), VKMOE_OK); /* no cache */
    vkmoe_layer_destroy(&cached);
    /* Without a copy queue (lavapipe's suite context), no prefetch; a GPU's
     * transfer queue prefetches. */
    vkmoe_layer *inline_copies = cached_twin(*state, &t, 12, VKMOE_CACHE_LRU);
    assert_int_equal(vkmoe_layer_prefetch(inline_copies, 1, x), VKMOE_OK);
    assert_int_equal(vkmoe_layer_cache_stats(inline_copies, &after), VKMOE_OK);
    vkmoe_device_info suite_info;
    assert_int_equal(vkmoe_context_device_info(*state, &suite_info), VKMOE_OK);
    if (!suite_info.copy_queue)
        assert_int_equal(after.prefetched, 0);
    vkmoe_layer_destroy(&inline_copies);
    test_layer_destroy(&t);
    assert_int_equal(vkmoe_context_validation_errors(ctx), 0);
    vkmoe_context_destroy(&ctx);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_bad_budgets),
    cmocka_unit_test(test_policy_on_a_known_sequence),
    cmocka_unit_test(test_set_expert_again),
    cmocka_unit_test(test_failures_mid_forward),
    cmocka_unit_test(test_budgets_quantized),
    cmocka_unit_test(test_budgets_bit_identical),
    cmocka_unit_test(test_budgets_on_the_copy_queue),
    cmocka_unit_test(test_lent_copy_queue),
    cmocka_unit_test(test_prefetch),
    cmocka_unit_test(test_cold_experts_on_the_host),
};

int main(void) { return test_device_suite(tests, test_group_setup, test_group_teardown); }
