#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "helpers.h"

bool test_make_dir(const char *prefix, char *dir, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, size, "%s/%s-XXXXXX", tmp ? tmp : "/tmp", prefix);
    return mkdtemp(dir) != NULL;
}

void test_remove_dir(const char *dir, const char *const *names, size_t count)
{
    char path[1024];
    for (size_t i = 0; i < count; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void print_errors(void *user, vkmoe_log_level level, const char *message)
{
    (void)user;
    if (level <= VKMOE_LOG_WARNING)
        fprintf(stderr, "vkmoe: %s\n", message);
}

vkmoe_context *test_context(void) { return test_context_with((vkmoe_context_options){0}); }

bool test_validation(void)
{
    const char *validation = getenv("VKMOE_TEST_VALIDATION");
    return !validation || strcmp(validation, "0") != 0;
}

void test_options_from_environment(vkmoe_context_options *options)
{
    const char *no_push = getenv("VKMOE_TEST_NO_PUSH_DESCRIPTORS");
    options->no_push_descriptors |= no_push && strcmp(no_push, "1") == 0;
}

static vkmoe_context *context_with(bool host_huge_pages, vkmoe_context_options options)
{
    vkmoe_context_params params = {
        .validation = test_validation(),
        .log = print_errors,
        .log_level = VKMOE_LOG_WARNING,
        .host_huge_pages = host_huge_pages,
    };
    vkmoe_context *ctx = NULL;
    options.poison_buffers = true;
    test_options_from_environment(&options);
    vkmoe_status status = vkmoe_context_create_with(&params, &options, &ctx);
    if (status != VKMOE_OK)
        fprintf(stderr, "no context: %s (%s)\n", vkmoe_status_string(status), vkmoe_last_error());
    return ctx;
}

vkmoe_context *test_context_with(vkmoe_context_options options)
{
    return context_with(false, options);
}

vkmoe_context *test_huge_pages_context(void)
{
    return context_with(true, (vkmoe_context_options){0});
}

int test_device_gate(void)
{
    uint32_t count = 0;
    if (vkmoe_device_count(&count) == VKMOE_OK && count > 0)
        return 0;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "CI=true but no usable Vulkan device: failing, not skipping\n");
        return 1;
    }
    fprintf(stderr, "no usable Vulkan device: skipping\n");
    return 77;
}

int test_run_device_suite(const char *name, const struct CMUnitTest *tests, size_t count,
                          CMFixtureFunction setup, CMFixtureFunction teardown)
{
    int gate = test_device_gate();
    return gate ? gate : _cmocka_run_group_tests(name, tests, count, setup, teardown);
}

void test_context_destroy(vkmoe_context **ctx)
{
    uint32_t errors = vkmoe_context_validation_errors(*ctx);
    vkmoe_context_destroy(ctx);
    assert_int_equal(errors, 0);
}

int test_group_setup(void **state)
{
    *state = test_context();
    return *state ? 0 : -1;
}

int test_group_teardown(void **state)
{
    vkmoe_context *ctx = *state;
    uint32_t errors = vkmoe_context_validation_errors(ctx);
    vkmoe_context_destroy(&ctx);
    if (errors) {
        /* cmocka 1.1.5 reports a failed group teardown but still exits 0 */
        fprintf(stderr, "%u validation errors: failing\n", errors);
        exit(1);
    }
    return 0;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

bool test_weight_type_in_run(vkmoe_weight_type type)
{
#if defined(__SANITIZE_THREAD__)
    return type == VKMOE_WEIGHT_F16 || type == VKMOE_WEIGHT_Q4_K;
#elif defined(__SANITIZE_ADDRESS__)
    return type == VKMOE_WEIGHT_F16 || type == VKMOE_WEIGHT_Q4_K || type == VKMOE_WEIGHT_MXFP4;
#else
    (void)type;
    return true;
#endif
}

void test_seed(uint64_t seed) { rng_state = seed * 0x9e3779b97f4a7c15ull + 1; }

float test_uniform(float lo, float hi)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((rng_state >> 40) * (1.0 / 16777216.0));
}

void test_fill(float *v, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        v[i] = test_uniform(lo, hi);
}

vkmoe_layer_params test_shape(uint32_t dim, uint32_t ffn, uint32_t experts, uint32_t top_k,
                              uint32_t max_tokens)
{
    return (vkmoe_layer_params){
        .dim = dim, .ffn_dim = ffn, .experts = experts, .top_k = top_k, .max_tokens = max_tokens};
}

/* The fixture's seed: the next state of test_seed's stream. */
static uint64_t next_seed(void)
{
    test_uniform(0, 1);
    return rng_state;
}

void test_layer_create(vkmoe_context *ctx, const vkmoe_layer_params *params, test_layer *out)
{
    assert_int_equal(fixture_layer_create(ctx, params, next_seed(), out), VKMOE_OK);
}

void test_layer_upload(test_layer *t) { assert_int_equal(fixture_layer_upload(t), VKMOE_OK); }

void test_layer_seeded(vkmoe_context *ctx, const vkmoe_layer_params *params, uint64_t seed,
                       test_layer *out)
{
    test_seed(seed);
    test_layer_create(ctx, params, out);
    test_layer_upload(out);
}

void test_held_experts(const uint8_t *placement, uint32_t experts, uint32_t ranks, uint32_t rank,
                       uint8_t *held)
{
    assert_int_equal(vkmoe_expert_parallel_held(placement, experts, ranks, rank, held), VKMOE_OK);
}

vkmoe_layer *test_twin_of(vkmoe_context *ctx, const test_layer *t, const vkmoe_layer_params *params)
{
    vkmoe_layer *layer = NULL;
    assert_int_equal(vkmoe_layer_create(ctx, params, &layer), VKMOE_OK);
    fixture_layer twin = *t;
    twin.layer = layer;
    assert_int_equal(fixture_layer_upload(&twin), VKMOE_OK);
    return layer;
}

vkmoe_layer *test_shard_of(vkmoe_context *ctx, const test_layer *t, const uint8_t *held)
{
    vkmoe_layer_params p = t->params;
    p.held_experts = held;
    return test_twin_of(ctx, t, &p);
}

void test_layer_destroy(test_layer *t)
{
    fixture_layer_destroy(t);
    assert_null(t->layer);
}

float *test_input(uint32_t tokens, uint32_t dim)
{
    float *x = malloc((size_t)tokens * dim * sizeof(*x));
    assert_non_null(x);
    test_fill(x, (size_t)tokens * dim, -1.0f, 1.0f);
    return x;
}

void test_check_forward(test_layer *t, uint32_t tokens, const float *x)
{
    vkmoe_ref_error err;
    bool within = false;
    assert_int_equal(fixture_layer_check(t, tokens, x, &err, &within), VKMOE_OK);
    if (!within)
        fail_msg("forward T=%u D=%u F=%u E=%u k=%u: max_abs %g max_rel %g > %g", tokens,
                 t->params.dim, t->params.ffn_dim, t->params.experts, t->params.top_k, err.max_abs,
                 err.max_rel, fixture_tolerance(&t->params));
}

void test_check_layer(vkmoe_context *ctx, vkmoe_layer_params params, uint32_t tokens)
{
    test_layer t;
    test_layer_create(ctx, &params, &t);
    test_layer_upload(&t);
    float *x = test_input(tokens, params.dim);
    test_check_forward(&t, tokens, x);
    free(x);
    test_layer_destroy(&t);
}

void test_expect_create_fails(vkmoe_context *ctx, const vkmoe_layer_params *params,
                              vkmoe_status status, const char *words)
{
    vkmoe_layer *layer = (vkmoe_layer *)&layer;
    assert_int_equal(vkmoe_layer_create(ctx, params, &layer), status);
    assert_null(layer);
    if (!strstr(vkmoe_last_error(), words))
        fail_msg("\"%s\" does not mention \"%s\"", vkmoe_last_error(), words);
}

static void *read_debug(test_layer *t, vkmoe_debug_buffer which, size_t bytes)
{
    void *dst = malloc(bytes ? bytes : 1);
    assert_non_null(dst);
    assert_int_equal(vkmoe_layer_debug_read(t->layer, which, dst, bytes), VKMOE_OK);
    return dst;
}

void test_run_intermediates(test_layer *t, uint32_t tokens, const float *x, test_intermediates *m)
{
    vkmoe_layer *l = t->layer;
    memset(m, 0, sizeof(*m));
    m->tokens = tokens;
    m->slots = tokens * t->params.top_k;
    m->max_rows = l->plan.max_rows;
    m->max_tiles = l->plan.max_tiles;
    m->ld_ffn = l->plan.ld_ffn;
    m->blocks = (m->slots + VKMOE_BLOCK_SLOTS - 1) / VKMOE_BLOCK_SLOTS;
    m->y = malloc((size_t)tokens * t->params.dim * sizeof(float));
    assert_non_null(m->y);
    assert_int_equal(vkmoe_layer_forward(l, tokens, x, m->y), VKMOE_OK);
    size_t slots = m->slots, rows = m->max_rows, experts = t->params.experts;
    m->ids = read_debug(t, VKMOE_DEBUG_IDS, slots * 4);
    m->topk_weight = read_debug(t, VKMOE_DEBUG_TOPK_WEIGHT, slots * 4);
    m->block_offsets = read_debug(t, VKMOE_DEBUG_BLOCK_COUNTS, experts * m->blocks * 4);
    m->expert_base = read_debug(t, VKMOE_DEBUG_EXPERT_BASE, experts * 4);
    m->tile_expert = read_debug(t, VKMOE_DEBUG_TILE_EXPERT, (size_t)m->max_tiles * 4);
    m->row_slot = read_debug(t, VKMOE_DEBUG_ROW_SLOT, rows * 4);
    m->slot_row = read_debug(t, VKMOE_DEBUG_SLOT_ROW, slots * 4);
    m->hidden = read_debug(t, VKMOE_DEBUG_HIDDEN, rows * m->ld_ffn * 4);
    m->expert_out = read_debug(t, VKMOE_DEBUG_EXPERT_OUT, rows * t->params.dim * 4);
    assert_int_equal(vkmoe_layer_debug_read(l, VKMOE_DEBUG_DISPATCH, m->dispatch, 24), VKMOE_OK);
}

void test_intermediates_free(test_intermediates *m)
{
    void *all[] = {m->ids,      m->block_offsets, m->expert_base, m->tile_expert, m->row_slot,
                   m->slot_row, m->topk_weight,   m->hidden,      m->expert_out,  m->y};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(all); i++)
        free(all[i]);
    memset(m, 0, sizeof(*m));
}

void test_staged_run(vkmoe_context *ctx, const vkmoe_layer_params *params, uint32_t tokens,
                     test_staged *out)
{
    test_layer_create(ctx, params, &out->layer);
    test_layer_upload(&out->layer);
    out->x = test_input(tokens, params->dim);
    test_run_intermediates(&out->layer, tokens, out->x, &out->m);
}

void test_staged_free(test_staged *s)
{
    test_intermediates_free(&s->m);
    free(s->x);
    test_layer_destroy(&s->layer);
}

VkCommandBuffer test_commands_begin(vkmoe_context *ctx, VkCommandPool *pool)
{
    VkCommandPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                         .queueFamilyIndex = ctx->queue_family};
    assert_int_equal(ctx->vk.vkCreateCommandPool(ctx->device, &pool_info, NULL, pool), VK_SUCCESS);
    VkCommandBufferAllocateInfo alloc = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                         .commandPool = *pool,
                                         .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                         .commandBufferCount = 1};
    VkCommandBuffer cmd;
    assert_int_equal(ctx->vk.vkAllocateCommandBuffers(ctx->device, &alloc, &cmd), VK_SUCCESS);
    VkCommandBufferBeginInfo begin = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    assert_int_equal(ctx->vk.vkBeginCommandBuffer(cmd, &begin), VK_SUCCESS);
    return cmd;
}

void test_commands_run(vkmoe_context *ctx, VkCommandPool pool, VkCommandBuffer cmd)
{
    assert_int_equal(ctx->vk.vkEndCommandBuffer(cmd), VK_SUCCESS);
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
    assert_int_equal(ctx->vk.vkQueueSubmit(ctx->queue, 1, &submit, VK_NULL_HANDLE), VK_SUCCESS);
    assert_int_equal(ctx->vk.vkQueueWaitIdle(ctx->queue), VK_SUCCESS);
    ctx->vk.vkDestroyCommandPool(ctx->device, pool, NULL);
}

vkmoe_vulkan_import test_import_of(const vkmoe_context *host)
{
    return (vkmoe_vulkan_import){
        .instance = host->instance,
        .physical_device = host->physical_device,
        .device = host->device,
        .queue = host->queue,
        .queue_family = host->queue_family,
    };
}
