/* Expert parallelism in one process (src/expert_parallel.c): shards on
 * two contexts, or three on one, each rank with its own tokens, against
 * the single layer's forward of all the tokens, bit for bit: experts not
 * divisible by ranks, a rank without tokens, a rank that computes nothing,
 * a replicated expert, every GEMM path, families with every kind of expert
 * input. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "checkpoint.h"
#include "helpers.h"
#include "vulkan_interposer.h"

#define MAX_RANKS 4

/* A shard of t's params and weights on ctx, holding every expert. */
static vkmoe_layer *shard_of(vkmoe_context *ctx, const test_layer *t)
{
    return test_shard_of(ctx, t, NULL);
}

/* One sharded forward of tokens[r] tokens a rank against the single
 * layer's forward of them all, rank 0's first. */
static void expect_single_layer_bits(const test_layer *t, vkmoe_layer *const *shards,
                                     uint32_t ranks, const uint8_t *placement,
                                     const uint32_t *tokens)
{
    uint32_t dim = t->params.dim, total = 0;
    for (uint32_t r = 0; r < ranks; r++)
        total += tokens[r];
    float *x = test_input(total, dim), *want = malloc(4ull * total * dim),
          *got = malloc(4ull * total * dim);
    assert_int_equal(vkmoe_layer_forward(t->layer, total, x, want), VKMOE_OK);
    const void *xs[MAX_RANKS];
    void *ys[MAX_RANKS];
    for (uint32_t r = 0, at = 0; r < ranks; at += tokens[r], r++) {
        xs[r] = x + (size_t)at * dim;
        ys[r] = got + (size_t)at * dim;
    }
    memset(got, 0, 4ull * total * dim);
    assert_int_equal(vkmoe_expert_parallel_forward(shards, ranks, placement, tokens, xs, ys),
                     VKMOE_OK);
    for (uint32_t r = 0, at = 0; r < ranks; at += tokens[r], r++)
        if (memcmp(want + (size_t)at * dim, got + (size_t)at * dim, 4ull * tokens[r] * dim))
            fail_msg("rank %u of %u: its %u tokens differ from the single layer's", r, ranks,
                     tokens[r]);
    free(x);
    free(want);
    free(got);
}

/* Two ranks on two contexts (two VkDevices), contiguous experts: decode
 * and prefill token counts, every path; a rank computes up to 82 rows,
 * max_tokens (41) at a time. */
static void test_two_contexts(void **state)
{
    vkmoe_context *other = test_context();
    static const vkmoe_gemm_path paths[] = {VKMOE_GEMM_REGISTER, VKMOE_GEMM_TILED, VKMOE_GEMM_GEMV};
    for (size_t g = 0; g < VKMOE_ARRAY_SIZE(paths); g++) {
        vkmoe_layer_params p = test_shape(40, 24, 7, 2, 41);
        p.weight_type = g == 0 ? VKMOE_WEIGHT_F16 : VKMOE_WEIGHT_F32;
        p.gemm_path = paths[g];
        test_layer t;
        test_layer_seeded(*state, &p, 60 + g, &t);
        vkmoe_layer *shards[2] = {shard_of(*state, &t), shard_of(other, &t)};
        static const uint32_t counts[][2] = {{1, 1}, {5, 3}, {0, 9}, {24, 17}};
        for (size_t c = 0; c < VKMOE_ARRAY_SIZE(counts); c++)
            expect_single_layer_bits(&t, shards, 2, NULL, counts[c]);
        vkmoe_layer_destroy(&shards[0]);
        vkmoe_layer_destroy(&shards[1]);
        test_layer_destroy(&t);
    }
    test_context_destroy(&other);
}

/* Three ranks on one context, 7 experts: contiguous (3, 2, 2), and a
 * placement where rank 1 holds only expert 0, which every rank holds too,
 * so rank 1 (no tokens of its own) computes nothing. Families with biases,
 * clamped SwiGLU, the weight on the input, a shared expert. */
static void test_three_ranks_and_a_replicated_expert(void **state)
{
    static const char *const families[] = {"mixtral", "gpt-oss", "llama4", "qwen2-moe"};
    static uint8_t replicated[7 * 3];
    memset(replicated, 0, sizeof(replicated));
    for (uint32_t e = 0; e < 7; e++)
        replicated[e * 3 + (e % 2 ? 0 : 2)] = 1; /* odd experts on rank 0, even on 2 */
    for (uint32_t r = 0; r < 3; r++)
        replicated[0 * 3 + r] = 1; /* expert 0 everywhere */
    for (size_t f = 0; f < VKMOE_ARRAY_SIZE(families); f++) {
        vkmoe_layer_params p = test_shape(40, 24, 7, 2, 20);
        assert_int_equal(vkmoe_layer_params_family(&p, families[f]), VKMOE_OK);
        p.top_k = families[f][0] == 'l' ? 1 : 2;
        p.shared_ffn_dim = families[f][0] == 'l' || families[f][0] == 'q' ? 16 : 0;
        test_layer t;
        test_layer_seeded(*state, &p, 70 + f, &t);
        vkmoe_layer *shards[3];
        for (uint32_t r = 0; r < 3; r++)
            shards[r] = shard_of(*state, &t);
        expect_single_layer_bits(&t, shards, 3, NULL, (const uint32_t[]){4, 1, 7});
        expect_single_layer_bits(&t, shards, 3, replicated, (const uint32_t[]){6, 0, 11});
        for (uint32_t r = 0; r < 3; r++)
            vkmoe_layer_destroy(&shards[r]);
        test_layer_destroy(&t);
    }
}

/* A shard of t holding only the experts the placement gives rank r
 * (NULL: contiguous blocks of `ranks`). */
static vkmoe_layer *held_shard_of(vkmoe_context *ctx, const test_layer *t, const uint8_t *placement,
                                  uint32_t ranks, uint32_t r)
{
    uint8_t held[64];
    assert_true(t->params.experts <= sizeof(held));
    test_held_experts(placement, t->params.experts, ranks, r, held);
    return test_shard_of(ctx, t, held);
}

/* Shards that hold only their own experts (params.held_experts): the same
 * bits as the single layer, contiguous and with a replicated expert, one
 * shard holding none; each shard's expert memory its share; what such a
 * layer refuses. */
static void test_shards_hold_only_their_experts(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params p = test_shape(40, 24, 7, 2, 20);
    p.expert_bias = true;
    test_layer t;
    test_layer_seeded(ctx, &p, 75, &t);
    vkmoe_layer *shards[3];
    for (uint32_t r = 0; r < 3; r++)
        shards[r] = held_shard_of(ctx, &t, NULL, 3, r);
    expect_single_layer_bits(&t, shards, 3, NULL, (const uint32_t[]){4, 1, 7});
    vkmoe_memory_report whole, part;
    assert_int_equal(vkmoe_layer_memory(t.layer, &whole), VKMOE_OK);
    assert_int_equal(vkmoe_layer_memory(shards[0], &part), VKMOE_OK); /* experts 0, 1, 2 */
    assert_true(part.experts < whole.experts / 2);
    /* Expert 0 everywhere, odd experts on rank 0, even on rank 2; rank 1
     * then holds expert 0 alone, and a fourth shard holds nothing. */
    uint8_t placement[7 * 4] = {0};
    for (uint32_t e = 0; e < 7; e++)
        placement[e * 4 + (e % 2 ? 0 : 2)] = 1;
    for (uint32_t r = 0; r < 3; r++)
        placement[r] = 1;
    vkmoe_layer *replicated[4];
    for (uint32_t r = 0; r < 4; r++)
        replicated[r] = held_shard_of(ctx, &t, placement, 4, r);
    expect_single_layer_bits(&t, replicated, 4, placement, (const uint32_t[]){6, 2, 0, 5});
    /* The placement may not give a shard an expert it lacks. */
    float x[4 * 40] = {0}, y[4 * 40];
    const void *xs[3] = {x, x, x};
    void *ys[3] = {y, y, y};
    uint32_t tokens[3] = {1, 1, 1};
    assert_int_equal(vkmoe_expert_parallel_forward(replicated, 3, NULL, tokens, xs, ys),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkmoe_last_error(), "which its shard does not hold"));
    /* A shard is not a layer of its own, and sets only its experts. */
    assert_int_equal(vkmoe_layer_forward(shards[1], 1, x, y), VKMOE_ERROR_UNSUPPORTED);
    assert_non_null(strstr(vkmoe_last_error(), "held_experts"));
    assert_int_equal(vkmoe_layer_prefetch(shards[1], 1, x), VKMOE_ERROR_UNSUPPORTED);
    assert_int_equal(vkmoe_layer_set_expert(shards[1], 0, VKMOE_EXPERT_DOWN, x, sizeof(x)),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkmoe_last_error(), "not one this shard holds"));
    assert_int_equal(vkmoe_layer_set_expert_bias(shards[1], 0, VKMOE_EXPERT_DOWN, x, 40 * 4),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_layer_params q;
    assert_int_equal(vkmoe_layer_params_of(shards[1], &q), VKMOE_OK);
    assert_non_null(q.held_experts);
    assert_true(!q.held_experts[0] && q.held_experts[3] && !q.held_experts[6]);
    /* Not with a cache: a shard keeps its experts on the device. */
    q.expert_budget_bytes = vkmoe_expert_bytes(&q);
    vkmoe_layer *cached = NULL;
    assert_int_equal(vkmoe_layer_create(ctx, &q, &cached), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_null(cached);
    for (uint32_t r = 0; r < 3; r++)
        vkmoe_layer_destroy(&shards[r]);
    for (uint32_t r = 0; r < 4; r++)
        vkmoe_layer_destroy(&replicated[r]);
    test_layer_destroy(&t);
}

/* Two shards holding their own experts made, set and run once: the first
 * failure's status. */
static vkmoe_status sharded_life(vkmoe_context *ctx, const test_layer *t)
{
    uint8_t held[2][7] = {{1, 1, 1, 1, 0, 0, 0}, {0, 0, 0, 0, 1, 1, 1}};
    vkmoe_layer *shards[2] = {NULL, NULL};
    vkmoe_status status = VKMOE_OK;
    for (uint32_t r = 0; r < 2 && status == VKMOE_OK; r++) {
        vkmoe_layer_params p = t->params;
        p.held_experts = held[r];
        status = vkmoe_layer_create(ctx, &p, &shards[r]);
        fixture_layer twin = *t;
        twin.layer = shards[r];
        if (status == VKMOE_OK)
            status = fixture_layer_upload(&twin);
    }
    float x[5 * 40] = {0}, y[5 * 40];
    const void *xs[2] = {x, x + 3 * 40};
    void *ys[2] = {y, y + 3 * 40};
    if (status == VKMOE_OK)
        status = vkmoe_expert_parallel_forward(shards, 2, NULL, (const uint32_t[]){3, 2}, xs, ys);
    vkmoe_layer_destroy(&shards[0]);
    vkmoe_layer_destroy(&shards[1]);
    return status;
}

/* Every host allocation of that life failed in turn: OUT_OF_HOST_MEMORY
 * each time, nothing leaked (ASan), and the life whole afterwards. */
static void test_allocation_failures(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params p = test_shape(40, 24, 7, 2, 8);
    test_seed(77);
    test_layer t;
    test_layer_create(ctx, &p, &t);
    unsigned points = 0;
    for (unsigned at = 1;; at++, points++) {
        vkmoe_alloc_fail_at(at);
        vkmoe_status status = sharded_life(ctx, &t);
        if (vkmoe_alloc_fail_at(0) < at)
            break;
        if (status != VKMOE_ERROR_OUT_OF_HOST_MEMORY)
            fail_msg("allocation %u failed: status %d (%s)", at, (int)status, vkmoe_last_error());
    }
    assert_true(points > 20);
    assert_int_equal(sharded_life(ctx, &t), VKMOE_OK);
    test_layer_destroy(&t);
}

/* A sharded forward of two ranks' tokens, and the single layer's rows. */
typedef struct sharded_run {
    vkmoe_layer *shards[2];
    const void *x[2];
    void *y[2];
    float want[5 * 40], got[5 * 40];
} sharded_run;

static vkmoe_status sharded_forward(void *user)
{
    sharded_run *run = user;
    return vkmoe_expert_parallel_forward(run->shards, 2, NULL, (const uint32_t[]){3, 2}, run->x,
                                         run->y);
}

static void sharded_forward_whole(void *user)
{
    sharded_run *run = user;
    memset(run->got, 0, sizeof(run->got));
    assert_int_equal(sharded_forward(run), VKMOE_OK);
    assert_memory_equal(run->want, run->got, sizeof(run->got));
}

/* Every failable Vulkan call of a sharded forward failed in turn (two
 * shards holding their own experts, on a context whose Vulkan calls can
 * be made to fail): that status, then the next forward, with nothing
 * failing, gives the single layer's bits. */
static void test_vulkan_failures_mid_forward(void **state)
{
    vkmoe_vulkan_import import = test_import_of(*state);
    import.get_instance_proc_addr = interposer_entry();
    vkmoe_context *ctx = NULL;
    interposer_reset();
    assert_int_equal(vkmoe_context_create(&(vkmoe_context_params){.import = &import}, &ctx),
                     VKMOE_OK);
    vkmoe_layer_params p = test_shape(40, 24, 7, 2, 8);
    test_layer t;
    test_layer_seeded(ctx, &p, 78, &t);
    sharded_run run = {
        .shards = {held_shard_of(ctx, &t, NULL, 2, 0), held_shard_of(ctx, &t, NULL, 2, 1)}};
    float *x = test_input(5, p.dim);
    assert_int_equal(vkmoe_layer_forward(t.layer, 5, x, run.want), VKMOE_OK);
    run.x[0] = x, run.x[1] = x + 3 * 40;
    run.y[0] = run.got, run.y[1] = run.got + 3 * 40;
    unsigned points =
        interposer_fail_in_turn(VK_ERROR_OUT_OF_DEVICE_MEMORY, VKMOE_ERROR_OUT_OF_DEVICE_MEMORY,
                                sharded_forward, sharded_forward_whole, &run);
    printf("%u failable Vulkan calls of a sharded forward failed in turn\n", points);
    assert_true(points >= 5);
    free(x);
    vkmoe_layer_destroy(&run.shards[0]);
    vkmoe_layer_destroy(&run.shards[1]);
    test_layer_destroy(&t);
    vkmoe_context_destroy(&ctx);
}

/* Shards loaded from a model file each read only their experts
 * (vkmoe_model_params.held_experts): a Hugging Face checkpoint and a GGUF
 * file, two shards, the whole layer's bits, half its expert memory. */
static void test_shards_from_model_files(void **state)
{
    vkmoe_context *ctx = *state;
    char dir[256], gguf[300];
    assert_true(test_make_dir("vkmoe-test-ep", dir, sizeof(dir)));
    vkmoe_layer_params p = {.dim = 16, .ffn_dim = 8, .experts = 4, .top_k = 2};
    assert_int_equal(vkmoe_layer_params_family(&p, "mixtral"), VKMOE_OK);
    test_seed(79);
    test_layer t;
    checkpoint_weights(ctx, p, &t);
    checkpoint_write_mixtral_files(dir, &t, 1);
    snprintf(gguf, sizeof(gguf), "%s/model.gguf", dir);
    const char *paths[] = {dir, gguf};
    static const uint8_t held[2][4] = {{1, 1, 0, 0}, {0, 0, 1, 1}};
    float *x = test_input(5, 16), want[5 * 16], got[5 * 16];
    for (size_t f = 0; f < VKMOE_ARRAY_SIZE(paths); f++) {
        vkmoe_model_params mp = {.max_tokens = 5};
        vkmoe_layer *whole = NULL, *shards[2] = {NULL, NULL};
        assert_int_equal(vkmoe_layer_from_file(ctx, paths[f], 0, &mp, &whole), VKMOE_OK);
        for (uint32_t r = 0; r < 2; r++) {
            mp.held_experts = held[r];
            assert_int_equal(vkmoe_layer_from_file(ctx, paths[f], 0, &mp, &shards[r]), VKMOE_OK);
        }
        assert_int_equal(vkmoe_layer_forward(whole, 5, x, want), VKMOE_OK);
        memset(got, 0, sizeof(got));
        assert_int_equal(vkmoe_expert_parallel_forward(shards, 2, NULL, (const uint32_t[]){3, 2},
                                                       (const void *const[]){x, x + 3 * 16},
                                                       (void *const[]){got, got + 3 * 16}),
                         VKMOE_OK);
        assert_memory_equal(want, got, sizeof(got));
        vkmoe_memory_report all, half;
        assert_int_equal(vkmoe_layer_memory(whole, &all), VKMOE_OK);
        assert_int_equal(vkmoe_layer_memory(shards[1], &half), VKMOE_OK);
        assert_true(half.experts < all.experts * 3 / 4);
        /* Not with a budget: a shard keeps its experts on the device. */
        mp.expert_budget_bytes = 1 << 20;
        vkmoe_layer *cached = NULL;
        assert_int_equal(vkmoe_layer_from_file(ctx, paths[f], 0, &mp, &cached),
                         VKMOE_ERROR_INVALID_ARGUMENT);
        assert_null(cached);
        vkmoe_layer_destroy(&whole);
        vkmoe_layer_destroy(&shards[0]);
        vkmoe_layer_destroy(&shards[1]);
    }
    /* A whole model: every MoE layer a shard, half the experts' memory. */
    char model_path[300];
    snprintf(model_path, sizeof(model_path), "%s/model2.gguf", dir);
    vkmoe_model *model = NULL, *sharded = NULL;
    vkmoe_model_params mp = {.max_tokens = 5};
    assert_int_equal(vkmoe_model_open(ctx, model_path, &mp, &model), VKMOE_OK);
    mp.held_experts = held[0];
    assert_int_equal(vkmoe_model_open(ctx, model_path, &mp, &sharded), VKMOE_OK);
    vkmoe_memory_report all, half;
    assert_int_equal(vkmoe_model_memory(model, &all), VKMOE_OK);
    assert_int_equal(vkmoe_model_memory(sharded, &half), VKMOE_OK);
    assert_true(half.experts < all.experts * 3 / 4);
    vkmoe_model_destroy(&model);
    vkmoe_model_destroy(&sharded);
    free(x);
    test_layer_destroy(&t);
    test_remove_dir(dir, checkpoint_files, checkpoint_file_count);
}

/* Each refusal with INVALID_ARGUMENT naming why. */
static void test_refusals(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params p = test_shape(16, 8, 4, 2, 4);
    test_layer t;
    test_layer_seeded(ctx, &p, 80, &t);
    vkmoe_layer *shards[2] = {shard_of(ctx, &t), shard_of(ctx, &t)};
    float x[4 * 16] = {0}, y[4 * 16];
    const void *xs[2] = {x, x};
    void *ys[2] = {y, y};
    uint32_t tokens[2] = {2, 2};
    assert_int_equal(vkmoe_expert_parallel_forward(NULL, 2, NULL, tokens, xs, ys),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_expert_parallel_forward(shards, 0, NULL, tokens, xs, ys),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_expert_parallel_forward(shards, 2, NULL, (uint32_t[]){0, 0}, xs, ys),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_expert_parallel_forward(shards, 2, NULL, (uint32_t[]){5, 1}, xs, ys),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    uint8_t held[4] = {9, 9, 9, 9};
    assert_int_equal(vkmoe_expert_parallel_held(NULL, 4, 2, 1, held), VKMOE_OK);
    assert_memory_equal(held, ((uint8_t[]){0, 0, 1, 1}), 4);
    assert_int_equal(vkmoe_expert_parallel_held(NULL, 4, 2, 2, held), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_expert_parallel_held(NULL, 4, 2, 0, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    uint8_t nobody[4 * 2] = {1, 0, 0, 1, 0, 0, 1, 1}; /* expert 2 on no rank */
    assert_int_equal(vkmoe_expert_parallel_forward(shards, 2, nobody, tokens, xs, ys),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkmoe_last_error(), "no rank holds expert 2"));
    vkmoe_layer_params q = p;
    q.capacity_factor = 1.0f;
    test_layer capped;
    test_layer_create(ctx, &q, &capped);
    test_layer_upload(&capped);
    vkmoe_layer *mixed[2] = {shards[0], capped.layer};
    assert_int_equal(vkmoe_expert_parallel_forward(mixed, 2, NULL, tokens, xs, ys),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkmoe_last_error(), "capacity"));
    test_layer_destroy(&capped);
    q = p;
    q.dim = 24;
    vkmoe_layer *wider = NULL;
    assert_int_equal(vkmoe_layer_create(ctx, &q, &wider), VKMOE_OK);
    mixed[1] = wider;
    assert_int_equal(vkmoe_expert_parallel_forward(mixed, 2, NULL, tokens, xs, ys),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_layer_destroy(&wider);
    vkmoe_layer_destroy(&shards[0]);
    vkmoe_layer_destroy(&shards[1]);
    test_layer_destroy(&t);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_refusals),
    cmocka_unit_test(test_two_contexts),
    cmocka_unit_test(test_three_ranks_and_a_replicated_expert),
    cmocka_unit_test(test_shards_hold_only_their_experts),
    cmocka_unit_test(test_shards_from_model_files),
    cmocka_unit_test(test_allocation_failures),
    cmocka_unit_test(test_vulkan_failures_mid_forward),
};

int main(void) { return test_device_suite(tests, test_group_setup, test_group_teardown); }
