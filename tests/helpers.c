#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static void print_errors(void *user, vkmoe_log_level level, const char *message)
{
    (void)user;
    if (level <= VKMOE_LOG_WARNING)
        fprintf(stderr, "vkmoe: %s\n", message);
}

vkmoe_context *test_context(void)
{
    vkmoe_context_params params = {
        .validation = true,
        .log = print_errors,
        .log_level = VKMOE_LOG_WARNING,
    };
    vkmoe_context *ctx = NULL;
    vkmoe_status status = vkmoe_context_create(&params, &ctx);
    if (status != VKMOE_OK)
        fprintf(stderr, "no context: %s (%s)\n", vkmoe_status_string(status), vkmoe_last_error());
    return ctx;
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
    if (errors)
        fprintf(stderr, "%u validation errors\n", errors);
    return errors ? -1 : 0;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

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

static float *random_matrix(size_t n, float scale, bool f16)
{
    float *m = malloc(n * sizeof(*m));
    assert_non_null(m);
    test_fill(m, n, -scale, scale);
    for (size_t i = 0; f16 && i < n; i++)
        m[i] = vkmoe_ref_f16_to_f32(vkmoe_ref_f32_to_f16(m[i]));
    return m;
}

void test_layer_create(vkmoe_context *ctx, const vkmoe_layer_params *params, test_layer *out)
{
    memset(out, 0, sizeof(*out));
    out->params = *params;
    if (!out->params.max_tokens)
        out->params.max_tokens = 1;
    const vkmoe_layer_params *p = &out->params;
    vkmoe_status status = vkmoe_layer_create(ctx, p, &out->layer);
    assert_int_equal(status, VKMOE_OK);
    bool f16 = p->weight_type == VKMOE_WEIGHT_F16;
    size_t matrix = (size_t)p->experts * p->ffn_dim * p->dim;
    /* Scales keep logits spread (distinct choices) and h, z of order one. */
    out->router = random_matrix((size_t)p->experts * p->dim, 4.0f / sqrtf((float)p->dim), false);
    out->gate = random_matrix(matrix, 2.0f / sqrtf((float)p->dim), f16);
    out->up = random_matrix(matrix, 2.0f / sqrtf((float)p->dim), f16);
    out->down = random_matrix(matrix, 2.0f / sqrtf((float)p->ffn_dim), f16);
    out->ref = (vkmoe_ref_layer){
        .dim = p->dim, .ffn = p->ffn_dim, .experts = p->experts, .top_k = p->top_k,
        .normalize = p->normalize_topk,
        .router = out->router, .gate = out->gate, .up = out->up, .down = out->down,
    };
}

static void upload_matrix(test_layer *t, uint32_t e, vkmoe_expert_matrix which, const float *m,
                          size_t n)
{
    vkmoe_status status;
    if (t->params.weight_type == VKMOE_WEIGHT_F16) {
        uint16_t *h = malloc(n * sizeof(*h));
        assert_non_null(h);
        for (size_t i = 0; i < n; i++)
            h[i] = vkmoe_ref_f32_to_f16(m[i]);
        status = vkmoe_layer_set_expert(t->layer, e, which, h, n * sizeof(*h));
        free(h);
    } else {
        status = vkmoe_layer_set_expert(t->layer, e, which, m, n * sizeof(*m));
    }
    assert_int_equal(status, VKMOE_OK);
}

void test_layer_upload(test_layer *t)
{
    const vkmoe_layer_params *p = &t->params;
    assert_int_equal(vkmoe_layer_set_router(t->layer, t->router,
                                            (size_t)p->experts * p->dim * sizeof(float)),
                     VKMOE_OK);
    size_t n = (size_t)p->ffn_dim * p->dim;
    for (uint32_t e = 0; e < p->experts; e++) {
        upload_matrix(t, e, VKMOE_EXPERT_GATE, t->gate + e * n, n);
        upload_matrix(t, e, VKMOE_EXPERT_UP, t->up + e * n, n);
        upload_matrix(t, e, VKMOE_EXPERT_DOWN, t->down + e * n, n);
    }
}

void test_layer_destroy(test_layer *t)
{
    vkmoe_layer_destroy(&t->layer);
    assert_null(t->layer);
    free(t->router);
    free(t->gate);
    free(t->up);
    free(t->down);
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
    size_t n = (size_t)tokens * t->params.dim;
    float *y = malloc(n * sizeof(*y));
    double *expected = malloc(n * sizeof(*expected));
    assert_non_null(y);
    assert_non_null(expected);
    assert_int_equal(vkmoe_layer_forward(t->layer, tokens, x, y), VKMOE_OK);
    vkmoe_ref_forward(&t->ref, tokens, x, expected);
    vkmoe_ref_error err = vkmoe_ref_compare(y, expected, n);
    if (!(err.max_rel <= F32_TOLERANCE))
        fail_msg("forward T=%u D=%u F=%u E=%u k=%u: max_abs %g max_rel %g > %g", tokens,
                 t->params.dim, t->params.ffn_dim, t->params.experts, t->params.top_k,
                 err.max_abs, err.max_rel, F32_TOLERANCE);
    free(y);
    free(expected);
}

static void *read_debug(test_layer *t, vkmoe_debug_buffer which, size_t bytes)
{
    void *dst = malloc(bytes ? bytes : 1);
    assert_non_null(dst);
    assert_int_equal(vkmoe_layer_debug_read(t->layer, which, dst, bytes), VKMOE_OK);
    return dst;
}

void test_run_intermediates(test_layer *t, uint32_t tokens, const float *x,
                            test_intermediates *m)
{
    vkmoe_layer *l = t->layer;
    memset(m, 0, sizeof(*m));
    m->tokens = tokens;
    m->slots = tokens * t->params.top_k;
    m->max_rows = l->max_rows;
    m->max_tiles = l->max_tiles;
    m->ld_ffn = l->ld_ffn;
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
    void *all[] = {m->ids, m->block_offsets, m->expert_base, m->tile_expert, m->row_slot,
                   m->slot_row, m->topk_weight, m->hidden, m->expert_out, m->y};
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
