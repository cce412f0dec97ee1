/* Stage 7: y against Σ_j w_j·z_j computed from the GPU's own weights, rows
 * and expert outputs, in the CPU devices' shape and the GPUs'. */
#include <stdlib.h>

#include "helpers.h"
#include "stages.h"

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

/* y of a forward of `tokens` tokens of x (f32, converted to io_type) as
 * f32, and the dispatches and barriers it recorded. */
static float *forward_of(test_layer *t, uint32_t tokens, const float *x, vkmoe_recorded *recorded)
{
    const vkmoe_layer_params *p = &t->params;
    size_t n = (size_t)tokens * p->dim, io = vkmoe_params_io_bytes(p);
    void *x_io = malloc(n * io), *y_io = malloc(n * io);
    float *y = malloc(n * sizeof(float));
    assert_int_equal(vkmoe_quantize(p->io_type, x, n, x_io, n * io), VKMOE_OK);
    assert_int_equal(vkmoe_layer_forward(t->layer, tokens, x_io, y_io), VKMOE_OK);
    assert_int_equal(vkmoe_dequantize(p->io_type, y_io, n, y), VKMOE_OK);
    *recorded = t->layer->io.recorded;
    free(x_io);
    free(y_io);
    return y;
}

/* One token's combine in gemm_down's GEMV dispatches, by the last
 * workgroup to finish each column block: its rows equal those of a
 * two-token forward (combine's own stage) on the same tokens, each token
 * alone and one after the other (the counts set back to 0 between them),
 * with a shared expert, its gate, Llama 4's unweighted sum, f16 and bf16
 * output, a row of 46 (a last block of 6 columns); the forward has no
 * combine dispatch. */
static void test_combine_in_gemm_down(void **state)
{
    static const struct {
        uint32_t shared_ffn;
        bool gate, llama4;
        vkmoe_weight_type io;
    } cases[] = {
        {0, false, false, VKMOE_WEIGHT_F32},  {24, true, false, VKMOE_WEIGHT_F32},
        {24, false, true, VKMOE_WEIGHT_F32},  {24, true, false, VKMOE_WEIGHT_F16},
        {0, false, false, VKMOE_WEIGHT_BF16},
    };
    for (size_t c = 0; c < VKMOE_ARRAY_SIZE(cases); c++) {
        test_seed(71);
        vkmoe_layer_params p = test_shape(46, 30, 6, 3, 5);
        if (cases[c].llama4) {
            assert_int_equal(vkmoe_layer_params_family(&p, "llama4"), VKMOE_OK);
            p.top_k = 2;
        }
        p.shared_ffn_dim = cases[c].shared_ffn;
        p.shared_gate = cases[c].gate;
        p.io_type = cases[c].io;
        p.gemm_path = VKMOE_GEMM_GEMV;
        test_layer t;
        test_layer_create(*state, &p, &t);
        test_layer_upload(&t);
        assert_true(vkmoe_combine_in_down(t.layer, 1));
        assert_false(vkmoe_combine_in_down(t.layer, 2));
        float *x = test_input(2, p.dim);
        vkmoe_recorded one, two;
        float *both = forward_of(&t, 2, x, &two);
        for (uint32_t tok = 0; tok < 2; tok++) {
            float *y = forward_of(&t, 1, x + (size_t)tok * p.dim, &one);
            assert_memory_equal(y, both + (size_t)tok * p.dim, p.dim * sizeof(float));
            free(y);
        }
        /* the logits (which write x_rows), router, gemm_up, gemm_down */
        uint32_t shared = p.shared_ffn_dim ? 2 : 0;
        assert_int_equal(one.dispatches, 4 + shared);
        assert_int_equal(one.barriers, 5);
        if (p.io_type == VKMOE_WEIGHT_F32)
            test_check_forward(&t, 1, x);
        free(both);
        free(x);
        test_layer_destroy(&t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_combine_shapes),
        cmocka_unit_test(test_combine_gpu_shape),
        cmocka_unit_test(test_combine_in_gemm_down),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
