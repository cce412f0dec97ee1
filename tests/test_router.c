/* Stage 1: router ids and weights against vkmoe_ref_route. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "stages.h"

static float first_weight; /* the GPU's weight of slot 0 in the last run_router */

/* Runs the router of a layer whose weights `edit` may change first; the
 * GPU's ids must equal the reference's, its weights be within tolerance.
 * Returns the GPU's ids (caller frees). */
static uint32_t *run_router(void **state, vkmoe_layer_params p, uint32_t tokens,
                            void (*edit)(test_layer *))
{
    test_layer t;
    test_layer_create(*state, &p, &t);
    if (edit)
        edit(&t);
    test_layer_upload(&t);
    float *x = test_input(tokens, p.dim);
    test_intermediates m;
    test_run_intermediates(&t, tokens, x, &m);
    uint32_t *ids = malloc(m.slots * sizeof(*ids));
    double *weights = malloc(m.slots * sizeof(*weights));
    vkmoe_ref_route(&t.ref, tokens, x, ids, weights);
    assert_memory_equal(m.ids, ids, m.slots * sizeof(*ids));
    /* exp() and sigmoid in f32: a few ulps of the weights */
    for (uint32_t s = 0; s < m.slots; s++)
        if (!(isnan(m.topk_weight[s]) && isnan(weights[s])) &&
            !(fabs(m.topk_weight[s] - weights[s]) <= 1e-6 + 1e-5 * fabs(weights[s])))
            fail_msg("slot %u: weight %.9g, reference %.9g", s, m.topk_weight[s], weights[s]);
    memcpy(ids, m.ids, m.slots * sizeof(*ids));
    first_weight = m.topk_weight[0];
    free(weights);
    free(x);
    test_intermediates_free(&m);
    test_layer_destroy(&t);
    return ids;
}

/* Every router row equal to the first: every score ties. */
static void tie_all(test_layer *t)
{
    for (uint32_t e = 1; e < t->params.experts; e++)
        memcpy(t->router + (size_t)e * t->params.dim, t->router, t->params.dim * sizeof(float));
    for (uint32_t e = 0; t->selection_bias && e < t->params.experts; e++)
        t->selection_bias[e] = 0;
}

static void check_router(void **state, vkmoe_layer_params p, uint32_t tokens, bool ties)
{
    free(run_router(state, p, tokens, ties ? tie_all : NULL));
}

static vkmoe_layer_params shape(uint32_t dim, uint32_t experts, uint32_t top_k, uint32_t tokens,
                                bool normalize)
{
    vkmoe_layer_params p = test_shape(dim, 8, experts, top_k, tokens);
    p.normalize_topk = normalize;
    return p;
}

static void test_small(void **state)
{
    test_seed(30);
    check_router(state, shape(77, 7, 3, 45, true), 45, false);
    check_router(state, shape(77, 7, 3, 45, false), 45, false);
}

/* More experts than invocations, dim over the shader's x chunk. */
static void test_many_experts_wide_dim(void **state)
{
    test_seed(31);
    check_router(state, shape(2500, 300, 16, 9, true), 9, false);
}

static void test_one_expert(void **state)
{
    test_seed(32);
    check_router(state, shape(10, 1, 1, 4, true), 4, false);
}

static void test_k_equals_e_and_ties(void **state)
{
    test_seed(33);
    check_router(state, shape(30, 9, 9, 12, true), 12, false);
    check_router(state, shape(30, 9, 4, 12, false), 12, true);
}

/* NaN router rows for experts 2 and 5 (and 3 where there are 16): NaN
 * logits for every token. */
static void nan_rows(test_layer *t)
{
    uint32_t dim = t->params.dim;
    for (uint32_t d = 0; d < dim; d++) {
        t->router[2 * dim + d] = NAN;
        t->router[5 * dim + d] = NAN;
        if (t->params.experts == 16)
            t->router[3 * dim + d] = NAN;
    }
}

static vkmoe_layer_params family(const char *name, uint32_t dim, uint32_t experts, uint32_t tokens)
{
    vkmoe_layer_params p = {.dim = dim, .ffn_dim = 8, .experts = experts, .max_tokens = tokens};
    assert_int_equal(vkmoe_layer_params_family(&p, name), VKMOE_OK);
    return p;
}

/* A family's layer with its groups, groups kept and k set. */
static vkmoe_layer_params grouped(const char *name, uint32_t dim, uint32_t experts, uint32_t tokens,
                                  uint32_t groups, uint32_t topk_groups, uint32_t top_k)
{
    vkmoe_layer_params p = family(name, dim, experts, tokens);
    p.expert_groups = groups;
    p.topk_groups = topk_groups;
    p.top_k = top_k;
    return p;
}

/* NaN scores rank below every number but are still chosen when k reaches
 * them, lowest index first, and never twice (k = E); their weights are NaN
 * as the reference's. Sigmoid groups with a NaN expert score NaN and drop. */
static void test_nan_scores(void **state)
{
    test_seed(39);
    uint32_t *ids = run_router(state, shape(30, 7, 7, 12, false), 12, nan_rows);
    for (uint32_t tok = 0; tok < 12; tok++) {
        assert_int_equal(ids[tok * 7 + 5], 2);
        assert_int_equal(ids[tok * 7 + 6], 5);
    }
    free(ids);
    free(run_router(state, family("deepseek-v3", 24, 16, 12), 12, nan_rows));
}

/* DeepSeek-V3's router at its real E, k and groups: sigmoid scores, a
 * selection bias, groups scored by their two best, 4 of 8 groups kept,
 * renormalised and scaled by 2.5. */
static void test_deepseek_v3(void **state)
{
    test_seed(34);
    check_router(state, family("deepseek-v3", 61, 256, 45), 45, false);
    /* k 12: all 12 experts of the kept groups */
    check_router(state, grouped("deepseek-v3", 40, 64, 20, 16, 3, 12), 20, false);
}

static uint32_t favoured_expert;

/* A selection bias that makes one expert win every token. */
static void favour_one_expert(test_layer *t)
{
    for (uint32_t e = 0; e < t->params.experts; e++)
        t->selection_bias[e] = e == favoured_expert ? 10.0f : 0.0f;
}

/* The bias chooses the expert but does not weigh it: the weights are the
 * unbiased sigmoid scores (the reference checks them), and the favoured
 * expert is every token's first choice. */
static void test_selection_bias_chooses_but_does_not_weigh(void **state)
{
    test_seed(35);
    vkmoe_layer_params p = grouped("deepseek-v3", 33, 32, 25, 4, 2, 4);
    favoured_expert = 21;
    uint32_t *ids = run_router(state, p, 25, favour_one_expert);
    for (uint32_t t = 0; t < 25; t++)
        assert_int_equal(ids[t * 4], 21);
    free(ids);
}

/* Equal group scores: the lowest groups are kept, then the lowest experts. */
static void test_tied_groups(void **state)
{
    test_seed(36);
    vkmoe_layer_params p = grouped("deepseek-v3", 16, 32, 5, 8, 2, 6);
    uint32_t *ids = run_router(state, p, 5, tie_all);
    for (uint32_t t = 0; t < 5; t++)
        for (uint32_t j = 0; j < 6; j++)
            assert_int_equal(ids[t * 6 + j], j);
    free(ids);
    p = family("deepseek-v2", 16, 32, 5);
    free(run_router(state, p, 5, tie_all));
}

/* DeepSeek-V2: softmax, groups scored by their best, scaled by 16. */
static void test_deepseek_v2(void **state)
{
    test_seed(37);
    check_router(state, family("deepseek-v2", 50, 160, 30), 30, false);
    check_router(state, family("deepseek-v2", 50, 40, 30), 30, false);
}

/* GPT-OSS: router bias, top-k of the logits, softmax over the k; and
 * sigmoid scores with k = E. */
static void test_gpt_oss_and_sigmoid_k_equals_e(void **state)
{
    test_seed(38);
    check_router(state, family("gpt-oss", 70, 32, 40), 40, false);
    check_router(state, grouped("deepseek-v3", 20, 9, 7, 1, 1, 9), 7, false);
}

/* The largest layer the router takes: 2048 experts in 64 groups of which
 * 4 kept (the groups' ranks and the 32 choices in shared memory), k 32,
 * sigmoid with a selection bias; softmax over 2048 with k 32; ties among
 * 64 groups go to the lowest. */
static void test_largest_limits(void **state)
{
    test_seed(40);
    vkmoe_layer_params p = grouped("deepseek-v3", 24, 2048, 9, 64, 4, 32);
    check_router(state, p, 9, false);
    check_router(state, shape(24, 2048, 32, 9, true), 9, false);
    p.topk_groups = 2;
    uint32_t *ids = run_router(state, p, 3, tie_all);
    for (uint32_t t = 0; t < 3; t++)
        for (uint32_t j = 0; j < 32; j++)
            assert_int_equal(ids[t * 32 + j], j); /* groups 0 and 1: experts 0..63 */
    free(ids);
}

/* One token, whose router also buckets its slots (test_bucketing checks
 * that plan): DeepSeek-V3's groups and selection bias at its E, the largest
 * layer, NaN scores (k = E) and ties. */
static void test_one_token(void **state)
{
    test_seed(41);
    check_router(state, family("deepseek-v3", 61, 256, 1), 1, false);
    check_router(state, grouped("deepseek-v3", 24, 2048, 1, 64, 4, 32), 1, false);
    uint32_t *ids = run_router(state, shape(30, 7, 7, 1, false), 1, nan_rows);
    assert_int_equal(ids[5], 2);
    assert_int_equal(ids[6], 5);
    free(ids);
    ids = run_router(state, shape(30, 9, 4, 1, true), 1, tie_all);
    for (uint32_t j = 0; j < 4; j++)
        assert_int_equal(ids[j], j);
    free(ids);
}

/* The logits on the GPU paths' kernels, which GPUs run (the decode kernel
 * to 16 tokens, the prefill kernel past them): GEMV and tiled, with the
 * shared gate's column beside 256 experts' and at 2048 experts; matrix
 * cores' kernels take the register path's logits (test_context). */
static void test_logits_on_gpu_paths(void **state)
{
    test_seed(42);
    static const vkmoe_gemm_path paths[] = {VKMOE_GEMM_GEMV, VKMOE_GEMM_TILED};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(paths); i++) {
        vkmoe_layer_params p = family("deepseek-v3", 61, 256, 40);
        p.gemm_path = paths[i];
        p.shared_ffn_dim = 24;
        p.shared_gate = true;
        check_router(state, p, 1, false);
        check_router(state, p, 16, false);
        check_router(state, p, 40, false);
        vkmoe_layer_params wide = shape(70, 2048, 32, 3, true);
        wide.gemm_path = paths[i];
        check_router(state, wide, 3, false);
        check_router(state, wide, 1, true);
    }
}

/* On the GEMV path the logits read x itself, of any io_type, and write
 * x_rows for the expert GEMMs (no input_rows dispatch): whole forwards of
 * f32 x of 45 elements a row and f16 and bf16 x of 46 (element by
 * element), and of 48 and 44 (a quad a load), at 1 and 7 tokens, against the reference on the
 * rounded x; 6 and 8 dispatches with a shared expert (logits, router, scan at 7, gemm_up twice,
 * gemm_down twice, combine at 7). */
static void test_logits_read_x(void **state)
{
    static const struct {
        vkmoe_weight_type io;
        uint32_t dim;
    } cases[] = {{VKMOE_WEIGHT_F32, 45}, {VKMOE_WEIGHT_F16, 46}, {VKMOE_WEIGHT_BF16, 46},
                 {VKMOE_WEIGHT_F32, 48}, {VKMOE_WEIGHT_F16, 44}, {VKMOE_WEIGHT_BF16, 48}};
    for (size_t c = 0; c < VKMOE_ARRAY_SIZE(cases); c++) {
        test_seed(43);
        vkmoe_layer_params p = test_shape(cases[c].dim, 30, 9, 3, 9);
        p.io_type = cases[c].io;
        p.shared_ffn_dim = 16;
        p.shared_gate = true;
        p.gemm_path = VKMOE_GEMM_GEMV;
        test_layer t;
        test_layer_create(*state, &p, &t);
        test_layer_upload(&t);
        const uint32_t tokens[] = {1, 7}, dispatches[] = {6, 8};
        for (size_t i = 0; i < VKMOE_ARRAY_SIZE(tokens); i++) {
            size_t n = (size_t)tokens[i] * p.dim, io = vkmoe_params_io_bytes(&p);
            float *x = test_input(tokens[i], p.dim), *y = malloc(n * sizeof(float));
            void *x_io = malloc(n * io), *y_io = malloc(n * io);
            double *expected = malloc(n * sizeof(double));
            assert_true(vkmoe_logits_read_x(t.layer, tokens[i]));
            assert_int_equal(vkmoe_quantize(p.io_type, x, n, x_io, n * io), VKMOE_OK);
            assert_int_equal(vkmoe_dequantize(p.io_type, x_io, n, x), VKMOE_OK);
            assert_int_equal(vkmoe_layer_forward(t.layer, tokens[i], x_io, y_io), VKMOE_OK);
            assert_int_equal(vkmoe_dequantize(p.io_type, y_io, n, y), VKMOE_OK);
            assert_int_equal(t.layer->io.recorded.dispatches, dispatches[i]);
            vkmoe_ref_forward(&t.ref, tokens[i], x, expected);
            vkmoe_ref_error err = vkmoe_ref_compare(y, expected, n);
            assert_true(err.max_rel <= fixture_tolerance(&p));
            free(x);
            free(y);
            free(x_io);
            free(y_io);
            free(expected);
        }
        test_layer_destroy(&t);
    }
}

/* ERNIE-4.5's choice by p + b_sel with weights p renormalised; the sum
 * floored at 1e-12 where the bias picks experts of tiny p: a router bias
 * of 40 on every other expert leaves experts 0 and 1 near exp(-40), and
 * the selection bias picks them. Granite-MoE: top-k logits, softmax. */
static void bury_two_experts(test_layer *t)
{
    for (size_t i = 0; i < (size_t)t->params.experts * t->params.dim; i++)
        t->router[i] *= 1e-3f;
    for (uint32_t e = 0; e < t->params.experts; e++) {
        t->router_bias[e] = e < 2 ? 0.0f : 40.0f;
        t->selection_bias[e] = e < 2 ? 10.0f : 0.0f;
    }
}

static void test_ernie_and_granite(void **state)
{
    test_seed(41);
    check_router(state, family("ernie-4.5-moe", 45, 64, 30), 30, false);
    check_router(state, family("ernie-4.5-moe", 45, 64, 9), 9, true);
    favoured_expert = 50;
    uint32_t *ids = run_router(state, family("ernie-4.5-moe", 45, 64, 20), 20, favour_one_expert);
    for (uint32_t t = 0; t < 20; t++)
        assert_int_equal(ids[t * 6], 50);
    free(ids);
    vkmoe_layer_params p = family("ernie-4.5-moe", 24, 16, 6);
    p.top_k = 2;
    p.router_bias = true;
    ids = run_router(state, p, 6, bury_two_experts);
    for (uint32_t t = 0; t < 6; t++)
        assert_true(ids[t * 2] < 2 && ids[t * 2 + 1] < 2);
    /* each near exp(-40) / 1e-12 ~ 4e-6, not the 0.5 of an unfloored sum */
    assert_true(first_weight > 1e-7f && first_weight < 1e-4f);
    free(ids);
    check_router(state, family("granite-moe", 40, 40, 30), 30, false);
    /* Llama 4: top-1 logit, its sigmoid; k 2 renormalised */
    check_router(state, family("llama4", 40, 16, 30), 30, false);
    vkmoe_layer_params llama = family("llama4", 40, 128, 30);
    llama.top_k = 2;
    llama.normalize_topk = true;
    check_router(state, llama, 30, false);
}

static void test_switch_and_gshard(void **state)
{
    test_seed(39);
    check_router(state, family("switch", 45, 128, 50), 50, false);
    check_router(state, family("gshard", 45, 16, 50), 50, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small),
        cmocka_unit_test(test_largest_limits),
        cmocka_unit_test(test_one_token),
        cmocka_unit_test(test_logits_on_gpu_paths),
        cmocka_unit_test(test_logits_read_x),
        cmocka_unit_test(test_many_experts_wide_dim),
        cmocka_unit_test(test_one_expert),
        cmocka_unit_test(test_k_equals_e_and_ties),
        cmocka_unit_test(test_nan_scores),
        cmocka_unit_test(test_deepseek_v3),
        cmocka_unit_test(test_selection_bias_chooses_but_does_not_weigh),
        cmocka_unit_test(test_tied_groups),
        cmocka_unit_test(test_ernie_and_granite),
        cmocka_unit_test(test_deepseek_v2),
        cmocka_unit_test(test_gpt_oss_and_sigmoid_k_equals_e),
        cmocka_unit_test(test_switch_and_gshard),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
