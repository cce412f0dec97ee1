/* Stage 7: y against Σ_j w_j·z_j computed from the GPU's own weights, rows
 * and expert outputs, in the CPU devices' shape and the GPUs'. */
#include <stdlib.h>

#include "helpers.h"

static void check_combine(void **state, vkmoe_layer_params p, uint32_t tokens)
{
    test_staged run;
    test_staged_run(*state, &p, tokens, &run);
    const test_intermediates m = run.m;
    double *expected = calloc((size_t)tokens * p.dim, sizeof(double));
    for (uint32_t tok = 0; tok < tokens; tok++)
        for (uint32_t j = 0; j < p.top_k; j++) {
            uint32_t slot = tok * p.top_k + j;
            if (m.slot_row[slot] == VKMOE_INVALID)
                continue; /* dropped: adds nothing */
            const float *z = m.expert_out + (size_t)m.slot_row[slot] * p.dim;
            for (uint32_t d = 0; d < p.dim; d++)
                expected[(size_t)tok * p.dim + d] += (double)m.topk_weight[slot] * z[d];
        }
    vkmoe_ref_error err = vkmoe_ref_compare(m.y, expected, (size_t)tokens * p.dim);
    /* k products summed in f32: a few ulps */
    assert_true(err.max_rel <= 1e-6);
    free(expected);
    test_staged_free(&run);
}

/* Rows of 257, 1 and 100 elements (spans cut short; texels and not), 4, 16
 * and 2 slots a token (the GPUs' groups of 8 slots cut short, whole, twice),
 * dropped slots. */
static void check_shapes(void **state)
{
    test_seed(70);
    vkmoe_layer_params p = test_shape(257, 9, 6, 4, 33);
    p.normalize_topk = true;
    check_combine(state, p, 33);
    p = (vkmoe_layer_params){.dim = 1, .ffn_dim = 3, .experts = 16, .top_k = 16, .max_tokens = 300};
    check_combine(state, p, 300);
    /* rows of whole texels (read as texels, written as vectors), not of whole
     * 16-element spans; a capacity drops slots */
    p = (vkmoe_layer_params){.dim = 100,
                             .ffn_dim = 24,
                             .experts = 5,
                             .top_k = 2,
                             .max_tokens = 41,
                             .capacity_factor = 1.0f};
    check_combine(state, p, 41);
}

/* The CPU devices' shape: 16 elements an invocation, a slot at a time. */
static void test_combine_shapes(void **state) { check_shapes(state); }

/* The GPUs' shape: 4 elements an invocation, 8 slots loaded together. */
static void test_combine_gpu_shape(void **state)
{
    (void)state;
    vkmoe_context *gpu = test_context_with((vkmoe_context_options){.auto_as_gpu = true});
    assert_non_null(gpu);
    check_shapes((void **)&gpu);
    test_context_destroy(&gpu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_combine_shapes),
        cmocka_unit_test(test_combine_gpu_shape),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
