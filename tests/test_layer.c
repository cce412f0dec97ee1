/* The whole layer against the CPU reference, and the public layer API's
 * argument checking. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static vkmoe_layer_params shape(uint32_t dim, uint32_t ffn, uint32_t experts, uint32_t top_k,
                                uint32_t max_tokens)
{
    vkmoe_layer_params p = test_shape(dim, ffn, experts, top_k, max_tokens);
    p.normalize_topk = true;
    return p;
}

/* Shapes that are multiples of no tile size. */
static void test_awkward_shapes(void **state)
{
    test_seed(1);
    test_check_layer(*state, shape(67, 45, 5, 2, 37), 37);
    test_check_layer(*state, shape(130, 97, 7, 3, 300), 300);
    test_check_layer(*state, shape(1, 1, 1, 1, 3), 3);
}

static void test_one_token(void **state)
{
    test_seed(2);
    test_check_layer(*state, shape(96, 80, 8, 2, 1), 1);
}

static void test_k_equals_e(void **state)
{
    test_seed(3);
    test_check_layer(*state, shape(40, 24, 6, 6, 20), 20);
}

/* The largest layer: 2048 experts in 64 groups, k 32, a shared expert;
 * forwards of one block of slots (8 tokens) and of several. */
static void test_largest_limits(void **state)
{
    test_seed(5);
    vkmoe_layer_params p = shape(16, 8, 2048, 32, 40);
    assert_int_equal(vkmoe_layer_params_family(&p, "deepseek-v3"), VKMOE_OK);
    p.top_k = 32;
    p.expert_groups = 64;
    p.topk_groups = 8;
    p.shared_ffn_dim = 8;
    test_check_layer(*state, p, 8);
    test_check_layer(*state, p, 40);
}

static void test_16_bit_weights(void **state)
{
    test_seed(4);
    vkmoe_layer_params p = shape(75, 61, 6, 2, 50);
    p.weight_type = VKMOE_WEIGHT_F16;
    test_check_layer(*state, p, 50);
    p.weight_type = VKMOE_WEIGHT_BF16;
    test_check_layer(*state, p, 50);
}

static uint16_t to_16_bits(vkmoe_weight_type type, float value)
{
    return type == VKMOE_WEIGHT_F16 ? vkmoe_ref_f32_to_f16(value) : vkmoe_ref_f32_to_bf16(value);
}

/* x and y in f16 and bf16 (io_type): the layer computes as the f32 one on
 * the widened x, so its y is the f32 layer's y rounded once, bit for bit.
 * Rows of whole texels (96) and not (74), a shared expert; an odd dim and
 * a type that is no activation type are refused. */
static void test_16_bit_activations(void **state)
{
    enum { T = 19, MAX_DIM = 96 };
    const vkmoe_weight_type types[2] = {VKMOE_WEIGHT_F16, VKMOE_WEIGHT_BF16};
    const uint32_t dims[2] = {74, 96};
    static float y[T * MAX_DIM];
    static uint16_t x16[T * MAX_DIM], y16[T * MAX_DIM];
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < 2; k++) {
            vkmoe_layer_params p = shape(dims[d], 40, 6, 2, T);
            p.shared_ffn_dim = 24;
            test_seed(17);
            test_layer wide;
            test_layer_create(*state, &p, &wide);
            test_layer_upload(&wide);
            float *x = test_input(T, p.dim);
            for (uint32_t i = 0; i < T * p.dim; i++) {
                x16[i] = to_16_bits(types[k], x[i]);
                x[i] = types[k] == VKMOE_WEIGHT_F16 ? vkmoe_ref_f16_to_f32(x16[i])
                                                    : vkmoe_ref_bf16_to_f32(x16[i]);
            }
            assert_int_equal(vkmoe_layer_forward(wide.layer, T, x, y), VKMOE_OK);
            p.io_type = types[k];
            test_seed(17); /* the same weights */
            test_layer narrow;
            test_layer_create(*state, &p, &narrow);
            test_layer_upload(&narrow);
            memset(y16, 0xff, sizeof(y16));
            assert_int_equal(vkmoe_layer_forward(narrow.layer, T, x16, y16), VKMOE_OK);
            for (uint32_t i = 0; i < T * p.dim; i++)
                if (y16[i] != to_16_bits(types[k], y[i]))
                    fail_msg("%s, dim %u: y[%u] is 0x%04x, the f32 layer's rounds to 0x%04x",
                             vkmoe_weight_type_name(types[k]), p.dim, i, y16[i],
                             to_16_bits(types[k], y[i]));
            free(x);
            test_layer_destroy(&wide);
            test_layer_destroy(&narrow);
        }
    vkmoe_layer_params odd = shape(75, 40, 6, 2, T);
    odd.io_type = VKMOE_WEIGHT_BF16;
    test_expect_create_fails(*state, &odd, VKMOE_ERROR_INVALID_ARGUMENT, "even dim");
    odd.dim = 74;
    odd.io_type = VKMOE_WEIGHT_Q8_0;
    test_expect_create_fails(*state, &odd, VKMOE_ERROR_INVALID_ARGUMENT, "not f32, f16 or bf16");
}

/* Q8_0 and Q4_0 layers: whole blocks along every row, other sizes free;
 * widths that are not whole blocks are refused. */
static void test_block_quantized_weights(void **state)
{
    test_seed(14);
    vkmoe_layer_params p = shape(96, 160, 5, 2, 37);
    p.weight_type = VKMOE_WEIGHT_Q8_0;
    test_check_layer(*state, p, 37);
    test_check_layer(*state, p, 3);
    p.weight_type = VKMOE_WEIGHT_Q4_0;
    test_check_layer(*state, p, 37);
    p.shared_ffn_dim = 64;
    test_check_layer(*state, p, 9);
    p.weight_type = VKMOE_WEIGHT_Q8_0;
    test_check_layer(*state, p, 9);
    p.dim = 80;
    test_expect_create_fails(*state, &p, VKMOE_ERROR_INVALID_ARGUMENT, "multiples of 32");
}

/* Q4_K and Q6_K layers: super-blocks of 256 along every row, a shared
 * expert too, and layers mixing types by projection; a width of whole Q8_0
 * blocks but not of super-blocks is refused by name. */
static void test_k_quant_weights(void **state)
{
    test_seed(15);
    vkmoe_layer_params p = shape(256, 512, 5, 2, 37);
    p.shared_ffn_dim = 256;
    const vkmoe_weight_type types[2] = {VKMOE_WEIGHT_Q4_K, VKMOE_WEIGHT_Q6_K};
    for (int t = 0; t < 2; t++) {
        p.weight_type = types[t];
        test_check_layer(*state, p, 37);
        test_check_layer(*state, p, 1);
    }
    /* each projection in its own type: Q4_K_M's gate and up Q4_K, down
     * Q6_K; and Q4_K gate and up over dim 256 with Q8_0 down over ffn 96,
     * which only the down projection's block has to divide */
    p.weight_type = VKMOE_WEIGHT_Q4_K;
    p.down_weight_type = VKMOE_WEIGHT_Q6_K;
    test_check_layer(*state, p, 37);
    vkmoe_layer_params q = shape(256, 96, 5, 2, 20);
    q.weight_type = VKMOE_WEIGHT_Q4_K;
    q.down_weight_type = VKMOE_WEIGHT_Q8_0;
    test_check_layer(*state, q, 20);
    p.ffn_dim = 288;
    test_expect_create_fails(*state, &p, VKMOE_ERROR_INVALID_ARGUMENT,
                             "q6_k weights need ffn_dim (288)");
    assert_non_null(strstr(vkmoe_last_error(), "multiples of 256"));
    q.down_weight_type = (vkmoe_weight_type)16;
    test_expect_create_fails(*state, &q, VKMOE_ERROR_INVALID_ARGUMENT,
                             "unknown down_weight_type 16");
}

/* What quantization costs: each type's layer (its weights rounded from
 * the same random f32 weights) against the f32 layer's reference, within a
 * bound per type of about twice the error measured (max_rel over 24 tokens,
 * D=512, F=768: f16 3.5e-4, bf16 3.3e-3, Q8_0 5.7e-3, Q6_K 2.0e-2, Q5_0
 * 4.9e-2, Q5_1 4.8e-2, IQ4_XS 9.4e-2, Q4_0 9.7e-2, Q4_1 9.7e-2, Q4_K
 * 9.9e-2, IQ4_NL 0.10, Q5_K 0.13, MXFP4 0.17, Q2_K 0.40, Q3_K 0.49; Q5_K
 * and Q3_K lose most where the fixture zeroes the blocks whose encoding
 * has no fixed point). The router stays f32, so the choices are the same. */
static void test_quantized_against_f32(void **state)
{
    const struct {
        vkmoe_weight_type type;
        double bound;
    } cases[] = {
        {VKMOE_WEIGHT_F16, 1e-3},   {VKMOE_WEIGHT_BF16, 8e-3},  {VKMOE_WEIGHT_Q8_0, 1.5e-2},
        {VKMOE_WEIGHT_Q6_K, 5e-2},  {VKMOE_WEIGHT_Q4_K, 0.2},   {VKMOE_WEIGHT_Q4_0, 0.2},
        {VKMOE_WEIGHT_Q4_1, 0.2},   {VKMOE_WEIGHT_Q5_0, 0.1},   {VKMOE_WEIGHT_Q5_1, 0.1},
        {VKMOE_WEIGHT_Q5_K, 0.25},  {VKMOE_WEIGHT_Q3_K, 1.0},   {VKMOE_WEIGHT_Q2_K, 0.8},
        {VKMOE_WEIGHT_IQ4_NL, 0.2}, {VKMOE_WEIGHT_IQ4_XS, 0.2}, {VKMOE_WEIGHT_MXFP4, 0.35},
    };
    vkmoe_layer_params p = shape(512, 768, 4, 2, 24);
    test_seed(16);
    test_layer exact;
    test_layer_create(*state, &p, &exact);
    float *x = test_input(24, p.dim);
    double *expected = malloc(24 * p.dim * sizeof(*expected));
    float *y = malloc(24 * p.dim * sizeof(*y));
    assert_true(expected && y);
    vkmoe_ref_forward(&exact.ref, 24, x, expected);
    for (size_t c = 0; c < VKMOE_ARRAY_SIZE(cases); c++) {
        if (!test_weight_type_in_run(cases[c].type))
            continue;
        p.weight_type = cases[c].type;
        test_seed(16); /* the same draws, rounded to this type */
        test_layer t;
        test_layer_create(*state, &p, &t);
        test_layer_upload(&t);
        assert_int_equal(vkmoe_layer_forward(t.layer, 24, x, y), VKMOE_OK);
        vkmoe_ref_error err = vkmoe_ref_compare(y, expected, 24 * p.dim);
        if (!(err.max_rel <= cases[c].bound))
            fail_msg("%s against f32: max_rel %g > %g", vkmoe_weight_type_name(cases[c].type),
                     err.max_rel, cases[c].bound);
        test_layer_destroy(&t);
    }
    free(x);
    free(y);
    free(expected);
    test_layer_destroy(&exact);
}

/* bf16 encodings worked out by hand: round to nearest even on the 16
 * bits dropped, overflow to infinity, NaN kept a NaN. */
static void test_bf16_conversion(void **state)
{
    (void)state;
    const struct {
        uint32_t f32;
        uint16_t bf16;
    } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1 */
        {0x3f808000u, 0x3f80}, /* halfway, even stays */
        {0x3f818000u, 0x3f82}, /* halfway, odd rounds up */
        {0x3f808001u, 0x3f81}, /* above halfway */
        {0xc0490fdbu, 0xc049}, /* -pi */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to infinity */
        {0xff800000u, 0xff80}, /* -infinity */
        {0x00000001u, 0x0000}, /* the smallest subnormal rounds to 0 */
    };
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(cases); i++) {
        float f;
        memcpy(&f, &cases[i].f32, 4);
        assert_int_equal(vkmoe_ref_f32_to_bf16(f), cases[i].bf16);
    }
    assert_true(isnan(vkmoe_ref_bf16_to_f32(vkmoe_ref_f32_to_bf16(NAN))));
    assert_true(vkmoe_ref_bf16_to_f32(0x4049) == 3.140625f);
}

static void test_without_renormalisation(void **state)
{
    test_seed(5);
    vkmoe_layer_params p = shape(48, 33, 9, 3, 21);
    p.normalize_topk = false;
    test_check_layer(*state, p, 21);
}

/* A forward with fewer tokens than max_tokens, then one with more, on the
 * same layer: nothing from the earlier forward may leak into the later one. */
static void test_varying_tokens(void **state)
{
    test_seed(6);
    test_layer t;
    vkmoe_layer_params p = shape(50, 40, 4, 2, 64);
    test_layer_create(*state, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(64, p.dim);
    uint32_t sizes[] = {64, 3, 1, 17, 64};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(sizes); i++)
        test_check_forward(&t, sizes[i], x);
    free(x);
    test_layer_destroy(&t);
}

/* Router rows that are identical tie on every token: the lowest index wins. */
static void test_tied_scores(void **state)
{
    test_seed(7);
    test_layer t;
    vkmoe_layer_params p = shape(32, 16, 6, 2, 10);
    test_layer_create(*state, &p, &t);
    for (uint32_t e = 1; e < p.experts; e++)
        memcpy(t.router + e * p.dim, t.router, p.dim * sizeof(float));
    test_layer_upload(&t);
    float *x = test_input(10, p.dim);
    test_check_forward(&t, 10, x);
    uint32_t counts[6];
    assert_int_equal(vkmoe_layer_expert_counts(t.layer, counts, 6), VKMOE_OK);
    uint32_t expected[6] = {10, 10, 0, 0, 0, 0};
    assert_memory_equal(counts, expected, sizeof(counts));
    free(x);
    test_layer_destroy(&t);
}

/* Every token picks expert 3 first: one expert takes all, others none. */
static void test_all_tokens_to_one_expert(void **state)
{
    test_seed(8);
    test_layer t;
    vkmoe_layer_params p = shape(24, 20, 5, 1, 100);
    test_layer_create(*state, &p, &t);
    memset(t.router, 0, (size_t)p.experts * p.dim * sizeof(float));
    t.router[3 * p.dim] = 1.0f; /* logit 3 = x[0] > 0 = every other logit */
    test_layer_upload(&t);
    float *x = test_input(100, p.dim);
    for (uint32_t i = 0; i < 100; i++)
        x[i * p.dim] = 0.5f + 0.01f * (float)i;
    test_check_forward(&t, 100, x);
    uint32_t counts[5];
    assert_int_equal(vkmoe_layer_expert_counts(t.layer, counts, 5), VKMOE_OK);
    uint32_t expected[5] = {0, 0, 0, 100, 0};
    assert_memory_equal(counts, expected, sizeof(counts));
    free(x);
    test_layer_destroy(&t);
}

static void test_expert_counts_match_reference(void **state)
{
    test_seed(9);
    test_layer t;
    vkmoe_layer_params p = shape(40, 24, 11, 3, 200);
    test_layer_create(*state, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(200, p.dim);
    float *y = malloc(200 * p.dim * sizeof(float));
    assert_int_equal(vkmoe_layer_forward(t.layer, 200, x, y), VKMOE_OK);
    uint32_t ids[200 * 3], counts[11], expected[11] = {0};
    double weights[200 * 3];
    vkmoe_ref_route(&t.ref, 200, x, ids, weights);
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(ids); i++)
        expected[ids[i]]++;
    assert_int_equal(vkmoe_layer_expert_counts(t.layer, counts, 11), VKMOE_OK);
    assert_memory_equal(counts, expected, sizeof(counts));
    free(x);
    free(y);
    test_layer_destroy(&t);
}

/* The same input gives bit-identical output every time. */
static void test_deterministic(void **state)
{
    test_seed(10);
    test_layer t;
    vkmoe_layer_params p = shape(70, 50, 8, 2, 333);
    test_layer_create(*state, &p, &t);
    test_layer_upload(&t);
    size_t n = 333 * (size_t)p.dim;
    float *x = test_input(333, p.dim);
    float *first = malloc(n * sizeof(float)), *again = malloc(n * sizeof(float));
    assert_int_equal(vkmoe_layer_forward(t.layer, 333, x, first), VKMOE_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vkmoe_layer_forward(t.layer, 333, x, again), VKMOE_OK);
        assert_memory_equal(first, again, n * sizeof(float));
    }
    free(x);
    free(first);
    free(again);
    test_layer_destroy(&t);
}

/* NaN or Inf in one token's input: its output row is not finite, the other
 * tokens' rows are exact, nothing crashes. */
static void test_nan_and_inf_inputs(void **state)
{
    test_seed(11);
    test_layer t;
    vkmoe_layer_params p = shape(33, 21, 4, 2, 6);
    test_layer_create(*state, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(6, p.dim);
    x[1 * p.dim + 5] = NAN;
    x[4 * p.dim + 0] = INFINITY;
    float y[6 * 33];
    double expected[6 * 33];
    assert_int_equal(vkmoe_layer_forward(t.layer, 6, x, y), VKMOE_OK);
    vkmoe_ref_forward(&t.ref, 6, x, expected);
    for (uint32_t tok = 0; tok < 6; tok++) {
        if (tok == 1 || tok == 4) {
            for (uint32_t d = 0; d < p.dim; d++)
                assert_false(isfinite(y[tok * p.dim + d]));
            continue;
        }
        vkmoe_ref_error err = vkmoe_ref_compare(y + tok * p.dim, expected + tok * p.dim, p.dim);
        assert_true(err.max_rel <= F32_TOLERANCE);
    }
    free(x);
    test_layer_destroy(&t);
}

static void test_create_rejects_bad_params(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer *layer = (vkmoe_layer *)&layer; /* must be reset to NULL */
    vkmoe_layer_params good = shape(16, 16, 4, 2, 8);
    assert_int_equal(vkmoe_layer_create(NULL, &good, &layer), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_null(layer);
    assert_int_equal(vkmoe_layer_create(ctx, NULL, &layer), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_create(ctx, &good, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    struct {
        vkmoe_layer_params p;
        vkmoe_status status;
    } cases[] = {
        {shape(0, 16, 4, 2, 8), VKMOE_ERROR_INVALID_ARGUMENT},
        {shape(16, 0, 4, 2, 8), VKMOE_ERROR_INVALID_ARGUMENT},
        {shape(16, 16, 0, 1, 8), VKMOE_ERROR_INVALID_ARGUMENT},
        {shape(16, 16, 2049, 2, 8), VKMOE_ERROR_INVALID_ARGUMENT},
        {shape(16, 16, 4, 0, 8), VKMOE_ERROR_INVALID_ARGUMENT},
        {shape(16, 16, 4, 5, 8), VKMOE_ERROR_INVALID_ARGUMENT},
        {shape(16, 16, 64, 33, 8), VKMOE_ERROR_INVALID_ARGUMENT},
        {shape(16, 16, 4, 2, (1u << 22)), VKMOE_ERROR_INVALID_ARGUMENT},
        {shape(1u << 20, 16, 4, 2, 1u << 10), VKMOE_ERROR_UNSUPPORTED},
    };
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(cases); i++) {
        assert_int_equal(vkmoe_layer_create(ctx, &cases[i].p, &layer), cases[i].status);
        assert_null(layer);
        assert_true(strlen(vkmoe_last_error()) > 0);
    }
    vkmoe_layer_params bad = good;
    bad.weight_type = (vkmoe_weight_type)16;
    assert_int_equal(vkmoe_layer_create(ctx, &bad, &layer), VKMOE_ERROR_INVALID_ARGUMENT);
    bad = good;
    bad.router = (vkmoe_router_type)7;
    assert_int_equal(vkmoe_layer_create(ctx, &bad, &layer), VKMOE_ERROR_INVALID_ARGUMENT);
    bad = good;
    bad.activation = (vkmoe_activation)7;
    assert_int_equal(vkmoe_layer_create(ctx, &bad, &layer), VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_layer_destroy(NULL);
    vkmoe_layer_destroy(&layer);
}

static void test_weights_and_forward_reject_bad_arguments(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params p = shape(16, 12, 4, 2, 8);
    vkmoe_layer *layer;
    assert_int_equal(vkmoe_layer_create(ctx, &p, &layer), VKMOE_OK);
    float w[16 * 12 * 4] = {0}, x[8 * 16] = {0}, y[8 * 16];
    /* weights */
    assert_int_equal(vkmoe_layer_set_router(NULL, w, 4 * 16 * 4), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_router(layer, NULL, 4 * 16 * 4), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_router(layer, w, 4 * 16 * 4 - 4),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    size_t matrix = 16 * 12 * sizeof(float);
    assert_int_equal(vkmoe_layer_set_expert(NULL, 0, VKMOE_EXPERT_GATE, w, matrix),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_expert(layer, 4, VKMOE_EXPERT_GATE, w, matrix),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_expert(layer, 0, (vkmoe_expert_matrix)3, w, matrix),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_expert(layer, 0, VKMOE_EXPERT_UP, NULL, matrix),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_expert(layer, 0, VKMOE_EXPERT_DOWN, w, matrix + 4),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    /* a forward before the weights are complete */
    assert_int_equal(vkmoe_layer_forward(layer, 1, x, y), VKMOE_ERROR_STATE);
    assert_int_equal(vkmoe_layer_set_router(layer, w, 4 * 16 * 4), VKMOE_OK);
    assert_int_equal(vkmoe_layer_forward(layer, 1, x, y), VKMOE_ERROR_STATE);
    assert_non_null(strstr(vkmoe_last_error(), "expert 0"));
    for (uint32_t e = 0; e < 4; e++)
        for (uint32_t m = 0; m < 3; m++)
            assert_int_equal(vkmoe_layer_set_expert(layer, e, m, w, matrix), VKMOE_OK);
    /* forward */
    assert_int_equal(vkmoe_layer_forward(NULL, 1, x, y), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_forward(layer, 0, x, y), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_forward(layer, 9, x, y), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_forward(layer, 1, NULL, y), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_forward(layer, 1, x, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_forward(layer, 2, x, x + 8), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_forward(layer, 8, x, y), VKMOE_OK);
    /* statistics and timings */
    uint32_t counts[4];
    assert_int_equal(vkmoe_layer_expert_counts(NULL, counts, 4), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_expert_counts(layer, NULL, 4), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_expert_counts(layer, counts, 3), VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_timings timings;
    assert_int_equal(vkmoe_layer_timings(layer, &timings), VKMOE_ERROR_STATE);
    assert_int_equal(vkmoe_layer_timings(NULL, &timings), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_timings(layer, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    /* recording */
    assert_int_equal(
        vkmoe_layer_record_forward(NULL, VK_NULL_HANDLE, 1, VK_NULL_HANDLE, 0, VK_NULL_HANDLE, 0),
        VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(
        vkmoe_layer_record_forward(layer, VK_NULL_HANDLE, 1, VK_NULL_HANDLE, 0, VK_NULL_HANDLE, 0),
        VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_layer_destroy(&layer);
    assert_null(layer);
}

static void test_timings(void **state)
{
    test_seed(12);
    vkmoe_layer_params p = shape(64, 48, 8, 2, 40);
    p.timing = true;
    test_layer t;
    test_layer_create(*state, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(40, p.dim);
    test_check_forward(&t, 40, x);
    vkmoe_timings timings;
    assert_int_equal(vkmoe_layer_timings(t.layer, &timings), VKMOE_OK);
    double sum = 0;
    for (uint32_t s = 0; s < VKMOE_STAGE_MAX; s++) {
        assert_true(timings.stage_ms[s] >= 0);
        assert_true(strlen(vkmoe_stage_name(s)) > 0);
        sum += timings.stage_ms[s];
    }
    assert_true(timings.total_ms > 0);
    assert_true(fabs(sum - timings.total_ms) < 1e-6 * (1 + timings.total_ms));
    assert_string_equal(vkmoe_stage_name(VKMOE_STAGE_MAX), "");
    free(x);
    test_layer_destroy(&t);
}

/* x (bytes) at `offset` of a buffer of the caller's, a forward of it
 * recorded into the caller's command buffer to `offset` of another, read
 * back into y. With `misuse`, first the two calls it must refuse: a
 * misaligned offset and too many tokens. */
static void record_forward_at(vkmoe_context *ctx, vkmoe_layer *layer, uint32_t tokens,
                              const void *x, void *y, size_t bytes, VkDeviceSize offset,
                              bool misuse)
{
    vkmoe_buffer xbuf, ybuf;
    assert_int_equal(vkmoe_buffer_create(ctx, offset + bytes, VKMOE_MEMORY_DEVICE, &xbuf),
                     VKMOE_OK);
    assert_int_equal(vkmoe_buffer_create(ctx, offset + bytes, VKMOE_MEMORY_DEVICE, &ybuf),
                     VKMOE_OK);
    assert_int_equal(vkmoe_buffer_write_rows(ctx, &xbuf, offset, x, 1, bytes, bytes), VKMOE_OK);
    VkCommandPool pool;
    VkCommandBuffer cmd = test_commands_begin(ctx, &pool);
    if (misuse) {
        assert_int_equal(vkmoe_layer_record_forward(layer, cmd, tokens, xbuf.buffer, offset + 4,
                                                    ybuf.buffer, offset),
                         VKMOE_ERROR_INVALID_ARGUMENT);
        assert_int_equal(vkmoe_layer_record_forward(layer, cmd, tokens + 1, xbuf.buffer, offset,
                                                    ybuf.buffer, offset),
                         VKMOE_ERROR_INVALID_ARGUMENT);
    }
    assert_int_equal(
        vkmoe_layer_record_forward(layer, cmd, tokens, xbuf.buffer, offset, ybuf.buffer, offset),
        VKMOE_OK);
    test_commands_run(ctx, pool, cmd);
    assert_int_equal(vkmoe_buffer_read(ctx, &ybuf, offset, y, bytes), VKMOE_OK);
    vkmoe_buffer_destroy(ctx, &xbuf);
    vkmoe_buffer_destroy(ctx, &ybuf);
}

/* The forward recorded into the application's own command buffer, on its
 * own buffers at non-zero offsets, equals the host-array forward bit for bit. */
static void test_record_into_caller_command_buffer(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(13);
    vkmoe_layer_params p = shape(45, 30, 5, 2, 20);
    test_layer t;
    test_layer_create(ctx, &p, &t);
    test_layer_upload(&t);
    size_t bytes = 20 * (size_t)p.dim * sizeof(float);
    float *x = test_input(20, p.dim), *expected = malloc(bytes), *y = malloc(bytes);
    assert_int_equal(vkmoe_layer_forward(t.layer, 20, x, expected), VKMOE_OK);

    VkDeviceSize offset = ctx->properties.limits.minStorageBufferOffsetAlignment * 4;
    record_forward_at(ctx, t.layer, 20, x, y, bytes, offset, true);
    assert_memory_equal(y, expected, bytes);
    free(x);
    free(y);
    free(expected);
    test_layer_destroy(&t);
}

/* 16-bit activations recorded into the caller's command buffer, on its
 * buffers at offsets: the same bits as vkmoe_layer_forward (x and y are
 * bf16 there, two values a word, the range tokens·dim·2 bytes). */
static void test_record_16_bit_activations(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(14);
    enum { T = 13 };
    vkmoe_layer_params p = shape(46, 30, 5, 2, T);
    p.io_type = VKMOE_WEIGHT_BF16;
    test_layer t;
    test_layer_create(ctx, &p, &t);
    test_layer_upload(&t);
    size_t bytes = T * (size_t)p.dim * 2;
    float *x = test_input(T, p.dim);
    uint16_t *x16 = malloc(bytes), *expected = malloc(bytes), *y16 = malloc(bytes);
    for (uint32_t i = 0; i < T * p.dim; i++)
        x16[i] = vkmoe_ref_f32_to_bf16(x[i]);
    assert_int_equal(vkmoe_layer_forward(t.layer, T, x16, expected), VKMOE_OK);
    VkDeviceSize offset = ctx->properties.limits.minStorageBufferOffsetAlignment * 2;
    record_forward_at(ctx, t.layer, T, x16, y16, bytes, offset, false);
    assert_memory_equal(y16, expected, bytes);
    free(x);
    free(x16);
    free(y16);
    free(expected);
    test_layer_destroy(&t);
}

/* Llama 4: the sigmoid of the top logit scales the expert's input, not its
 * output, and combine sums unweighted; an unscaled shared expert. On each
 * GEMM path (their three epilogues), with k 1 as released and k 2. */
static void test_llama4_input_scaling(void **state)
{
    const vkmoe_gemm_path paths[] = {VKMOE_GEMM_REGISTER, VKMOE_GEMM_TILED, VKMOE_GEMM_GEMV};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(paths); i++) {
        test_seed(15);
        vkmoe_layer_params p = test_shape(45, 30, 6, 0, 21);
        assert_int_equal(vkmoe_layer_params_family(&p, "llama4"), VKMOE_OK);
        p.shared_ffn_dim = 26;
        p.gemm_path = paths[i];
        test_check_layer(*state, p, 21);
        p.top_k = 2;
        test_check_layer(*state, p, 5);
    }
}

/* With push descriptors a recording changes nothing in the layer: two
 * forwards of other sizes and buffers, recorded before either is
 * submitted, both give what vkmoe_layer_forward gives. (Without them the
 * second recording would rewrite the first one's x and y.) */
static void test_record_twice_before_submitting(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_device_info info;
    assert_int_equal(vkmoe_context_device_info(ctx, &info), VKMOE_OK);
    if (!info.push_descriptors) {
        print_message("the device has no push descriptors: recording rewrites the layer\n");
        return;
    }
    test_seed(40);
    test_layer t;
    vkmoe_layer_params p = {.dim = 36, .ffn_dim = 20, .experts = 5, .top_k = 2, .max_tokens = 20};
    test_layer_create(ctx, &p, &t);
    test_layer_upload(&t);
    const uint32_t tokens[2] = {20, 7};
    float *x[2], *expected[2], *y = malloc(20 * sizeof(float) * p.dim);
    vkmoe_buffer xbuf[2], ybuf[2];
    VkCommandPool pools[2];
    VkCommandBuffer cmds[2];
    for (int i = 0; i < 2; i++) {
        size_t bytes = tokens[i] * sizeof(float) * p.dim;
        x[i] = test_input(tokens[i], p.dim);
        expected[i] = malloc(bytes);
        assert_int_equal(vkmoe_layer_forward(t.layer, tokens[i], x[i], expected[i]), VKMOE_OK);
        assert_int_equal(vkmoe_buffer_create(ctx, bytes, VKMOE_MEMORY_DEVICE, &xbuf[i]), VKMOE_OK);
        assert_int_equal(vkmoe_buffer_create(ctx, bytes, VKMOE_MEMORY_DEVICE, &ybuf[i]), VKMOE_OK);
        assert_int_equal(vkmoe_buffer_write_rows(ctx, &xbuf[i], 0, x[i], 1, bytes, bytes),
                         VKMOE_OK);
        cmds[i] = test_commands_begin(ctx, &pools[i]);
        assert_int_equal(vkmoe_layer_record_forward(t.layer, cmds[i], tokens[i], xbuf[i].buffer, 0,
                                                    ybuf[i].buffer, 0),
                         VKMOE_OK);
        assert_int_equal(ctx->vk.vkEndCommandBuffer(cmds[i]), VK_SUCCESS);
    }
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 2, .pCommandBuffers = cmds};
    assert_int_equal(ctx->vk.vkQueueSubmit(ctx->queue, 1, &submit, VK_NULL_HANDLE), VK_SUCCESS);
    assert_int_equal(ctx->vk.vkQueueWaitIdle(ctx->queue), VK_SUCCESS);
    for (int i = 0; i < 2; i++) {
        size_t bytes = tokens[i] * sizeof(float) * p.dim;
        assert_int_equal(vkmoe_buffer_read(ctx, &ybuf[i], 0, y, bytes), VKMOE_OK);
        assert_memory_equal(y, expected[i], bytes);
        vkmoe_buffer_destroy(ctx, &xbuf[i]);
        vkmoe_buffer_destroy(ctx, &ybuf[i]);
        free(x[i]);
        free(expected[i]);
        ctx->vk.vkDestroyCommandPool(ctx->device, pools[i], NULL);
    }
    free(y);
    test_layer_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_awkward_shapes),
        cmocka_unit_test(test_one_token),
        cmocka_unit_test(test_k_equals_e),
        cmocka_unit_test(test_largest_limits),
        cmocka_unit_test(test_16_bit_weights),
        cmocka_unit_test(test_16_bit_activations),
        cmocka_unit_test(test_bf16_conversion),
        cmocka_unit_test(test_block_quantized_weights),
        cmocka_unit_test(test_k_quant_weights),
        cmocka_unit_test(test_quantized_against_f32),
        cmocka_unit_test(test_without_renormalisation),
        cmocka_unit_test(test_varying_tokens),
        cmocka_unit_test(test_tied_scores),
        cmocka_unit_test(test_all_tokens_to_one_expert),
        cmocka_unit_test(test_expert_counts_match_reference),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_nan_and_inf_inputs),
        cmocka_unit_test(test_create_rejects_bad_params),
        cmocka_unit_test(test_weights_and_forward_reject_bad_arguments),
        cmocka_unit_test(test_timings),
        cmocka_unit_test(test_record_into_caller_command_buffer),
        cmocka_unit_test(test_record_twice_before_submitting),
        cmocka_unit_test(test_record_16_bit_activations),
        cmocka_unit_test(test_llama4_input_scaling),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
