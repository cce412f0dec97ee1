/* Stage "shared": the shared expert's output rows against vkmoe_ref_shared,
 * its gate against sigmoid(x·ws), and the whole layer with it. */
#include <math.h>
#include <stdlib.h>

#include "helpers.h"

static void check_shared(void **state, vkmoe_layer_params p, const uint32_t *token_counts,
                         size_t runs)
{
    test_layer t;
    test_layer_create(*state, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(p.max_tokens, p.dim);
    float *out = malloc((size_t)p.max_tokens * p.dim * sizeof(float));
    float *scale = malloc(p.max_tokens * sizeof(float));
    double *expected = malloc(p.dim * sizeof(double));
    for (size_t r = 0; r < runs; r++) {
        uint32_t tokens = token_counts[r];
        test_check_forward(&t, tokens, x);
        assert_int_equal(vkmoe_layer_debug_read(t.layer, VKMOE_DEBUG_SHARED_OUT, out,
                                                (size_t)tokens * p.dim * 4),
                         VKMOE_OK);
        assert_int_equal(
            vkmoe_layer_debug_read(t.layer, VKMOE_DEBUG_SHARED_SCALE, scale, tokens * 4), VKMOE_OK);
        for (uint32_t tok = 0; tok < tokens; tok++) {
            const float *xt = x + (size_t)tok * p.dim;
            vkmoe_ref_shared(&t.ref, xt, expected);
            vkmoe_ref_error err = vkmoe_ref_compare(out + (size_t)tok * p.dim, expected, p.dim);
            assert_true(err.max_rel <= F32_TOLERANCE);
            double gate;
            vkmoe_ref_router_figures(&t.ref, xt, NULL, NULL, &gate);
            /* sigmoid of an f32 dot product: a few ulps */
            assert_true(!p.shared_gate || fabs(scale[tok] - gate) <= 1e-6);
        }
    }
    free(x);
    free(out);
    free(scale);
    free(expected);
    test_layer_destroy(&t);
}

/* Gated (Qwen) and ungated (DeepSeek) shared experts whose width is a
 * multiple of nothing; forwards that grow and shrink, so the pass's last
 * tile holds padding rows at different places. */
static void test_gated_and_ungated(void **state)
{
    test_seed(90);
    vkmoe_layer_params p = test_shape(53, 19, 5, 2, 70);
    p.shared_ffn_dim = 77;
    p.shared_gate = true;
    const uint32_t counts[] = {70, 1, 33, 5, 64};
    check_shared(state, p, counts, 5);
    p.shared_gate = false;
    check_shared(state, p, counts, 2);
}

/* A shared expert narrower than the routed ones, with ReLU experts. */
static void test_relu_and_narrow(void **state)
{
    test_seed(91);
    vkmoe_layer_params p = test_shape(40, 64, 4, 1, 9);
    p.shared_ffn_dim = 3;
    p.activation = VKMOE_ACTIVATION_RELU;
    const uint32_t counts[] = {9};
    check_shared(state, p, counts, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gated_and_ungated),
        cmocka_unit_test(test_relu_and_narrow),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
