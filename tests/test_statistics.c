/* Load statistics against vkmoe_ref_load_stats, for softmax and sigmoid
 * routing, with and without dropping; the calls they refuse. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static bool close_to(double a, double b, double tolerance)
{
    return fabs(a - b) <= tolerance * (1 + fabs(b));
}

static void check_stats(void **state, vkmoe_layer_params p, uint32_t tokens)
{
    p.statistics = true;
    test_layer t;
    test_layer_create(*state, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(p.max_tokens, p.dim);
    test_check_forward(&t, tokens, x);
    uint32_t e = p.experts;
    uint32_t *routed = malloc(e * 4), *dropped = malloc(e * 4);
    uint32_t *ref_routed = malloc(e * 4), *ref_dropped = malloc(e * 4);
    double *mean = malloc(e * 8), *ref_mean = malloc(e * 8);
    vkmoe_load_stats stats, ref;
    assert_int_equal(vkmoe_layer_load_stats(t.layer, &stats, routed, dropped, mean, e), VKMOE_OK);
    vkmoe_ref_load_stats(&t.ref, tokens, x, &ref, ref_routed, ref_dropped, ref_mean);
    assert_int_equal(stats.tokens, tokens);
    assert_int_equal(stats.capacity, ref.capacity);
    assert_int_equal(stats.dropped, ref.dropped);
    assert_memory_equal(routed, ref_routed, e * 4);
    assert_memory_equal(dropped, ref_dropped, e * 4);
    /* probabilities from f32 exp() and sums of f32 values, in double */
    for (uint32_t i = 0; i < e; i++)
        assert_true(close_to(mean[i], ref_mean[i], 1e-5));
    assert_true(close_to(stats.balance_loss, ref.balance_loss, 1e-5));
    assert_true(close_to(stats.z_loss, ref.z_loss, 1e-5));
    /* The same forward gives the same figures, and arrays are optional. */
    vkmoe_load_stats again;
    assert_int_equal(vkmoe_layer_load_stats(t.layer, &again, NULL, NULL, NULL, 0), VKMOE_OK);
    assert_memory_equal(&again, &stats, sizeof(stats));
    free(routed);
    free(dropped);
    free(ref_routed);
    free(ref_dropped);
    free(mean);
    free(ref_mean);
    free(x);
    test_layer_destroy(&t);
}

static void test_softmax_dropless(void **state)
{
    test_seed(100);
    vkmoe_layer_params p = test_shape(37, 11, 12, 3, 200);
    p.normalize_topk = true;
    check_stats(state, p, 200);
    check_stats(state, p, 7); /* fewer tokens than the layer holds */
    check_stats(state, p, 1); /* one token: the router buckets it */
}

static void test_switch_with_drops(void **state)
{
    test_seed(101);
    vkmoe_layer_params p = {.dim = 30, .ffn_dim = 9, .experts = 16, .max_tokens = 300};
    assert_int_equal(vkmoe_layer_params_family(&p, "switch"), VKMOE_OK);
    check_stats(state, p, 300);
}

static void test_sigmoid_groups(void **state)
{
    test_seed(102);
    vkmoe_layer_params p = {.dim = 24, .ffn_dim = 8, .experts = 64, .max_tokens = 50};
    assert_int_equal(vkmoe_layer_params_family(&p, "deepseek-v3"), VKMOE_OK);
    check_stats(state, p, 50);
    check_stats(state, p, 1);
    assert_int_equal(vkmoe_layer_params_family(&p, "gpt-oss"), VKMOE_OK);
    check_stats(state, p, 50);
}

static void test_refused_calls(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params p = {.dim = 8, .ffn_dim = 8, .experts = 4, .top_k = 2, .max_tokens = 2};
    vkmoe_layer *layer;
    vkmoe_load_stats stats;
    uint32_t routed[4];
    assert_int_equal(vkmoe_layer_create(ctx, &p, &layer), VKMOE_OK);
    assert_int_equal(vkmoe_layer_load_stats(layer, &stats, NULL, NULL, NULL, 0),
                     VKMOE_ERROR_STATE); /* statistics off */
    vkmoe_layer_destroy(&layer);
    p.statistics = true;
    assert_int_equal(vkmoe_layer_create(ctx, &p, &layer), VKMOE_OK);
    assert_int_equal(vkmoe_layer_load_stats(layer, &stats, NULL, NULL, NULL, 0),
                     VKMOE_ERROR_STATE); /* no forward yet */
    assert_int_equal(vkmoe_layer_load_stats(NULL, &stats, NULL, NULL, NULL, 0),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_load_stats(layer, NULL, NULL, NULL, NULL, 0),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_load_stats(layer, &stats, routed, NULL, NULL, 3),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_layer_destroy(&layer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_dropless),
        cmocka_unit_test(test_switch_with_drops),
        cmocka_unit_test(test_sigmoid_groups),
        cmocka_unit_test(test_refused_calls),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
