/* Stage 1: router ids and weights against vkmoe_ref_route. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static void check_router(void **state, vkmoe_layer_params p, uint32_t tokens, bool tie_all)
{
    test_layer t;
    test_layer_create(*state, &p, &t);
    for (uint32_t e = 1; tie_all && e < p.experts; e++)
        memcpy(t.router + (size_t)e * p.dim, t.router, p.dim * sizeof(float));
    test_layer_upload(&t);
    float *x = test_input(tokens, p.dim);
    test_intermediates m;
    test_run_intermediates(&t, tokens, x, &m);
    uint32_t *ids = malloc(m.slots * sizeof(*ids));
    double *weights = malloc(m.slots * sizeof(*weights));
    vkmoe_ref_route(&t.ref, tokens, x, ids, weights);
    assert_memory_equal(m.ids, ids, m.slots * sizeof(*ids));
    /* softmax in f32 with exp(): a few ulps of the weights */
    for (uint32_t s = 0; s < m.slots; s++)
        assert_true(fabs(m.topk_weight[s] - weights[s]) <= 1e-6 + 1e-5 * fabs(weights[s]));
    free(ids);
    free(weights);
    free(x);
    test_intermediates_free(&m);
    test_layer_destroy(&t);
}

static vkmoe_layer_params shape(uint32_t dim, uint32_t experts, uint32_t top_k, uint32_t tokens,
                                bool normalize)
{
    return (vkmoe_layer_params){.dim = dim, .ffn_dim = 8, .experts = experts, .top_k = top_k,
                                .max_tokens = tokens, .normalize_topk = normalize};
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

int main(void)
{
    int gate = test_device_gate();
    if (gate)
        return gate;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small),
        cmocka_unit_test(test_many_experts_wide_dim),
        cmocka_unit_test(test_one_expert),
        cmocka_unit_test(test_k_equals_e_and_ties),
    };
    return cmocka_run_group_tests(tests, test_group_setup, test_group_teardown);
}
