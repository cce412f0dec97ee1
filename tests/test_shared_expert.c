/* Stage "shared": the shared expert's output rows against vkmoe_ref_shared,
 * its gate against sigmoid(x·ws), the whole layer with it, and where it runs
 * (beside the routed experts or after them). */
#include <math.h>
#include <stdlib.h>

#include "helpers.h"
#include "stages.h"

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

/* The shared expert's rows of a forward of `tokens` tokens (shared_out),
 * and how many dispatches and barriers it recorded. */
static float *shared_rows_of(test_layer *t, uint32_t tokens, const float *x,
                             vkmoe_recorded *recorded)
{
    size_t bytes = (size_t)tokens * t->params.dim * sizeof(float);
    float *out = malloc(bytes);
    test_check_forward(t, tokens, x);
    *recorded = t->layer->io.recorded;
    assert_int_equal(vkmoe_layer_debug_read(t->layer, VKMOE_DEBUG_SHARED_OUT, out, bytes),
                     VKMOE_OK);
    return out;
}

/* The shared expert beside the routed experts (its hidden rows past
 * theirs, no barrier between) where its rows fit, in its own stage after
 * them where they do not: on ctx's GEMM paths, the same bits either way,
 * and two barriers fewer beside, so that a forward with a shared expert has
 * no more barriers than one without. With tiles of 32 rows the hidden
 * buffer holds 320·24 + 32·80 floats (the routed rows of 70 tokens and a
 * tile of the shared expert's); 70 tokens need 320·24 + 96·80, 33 need
 * 224·24 + 64·80: after; 32, one tile, need 224·24 + 32·80: beside. With
 * the tiled path's 64-row tiles (64 lanes): 512·24 + 64·80 held, 448·24 +
 * 128·80 needed at 65, 448·24 + 64·80 at 64. */
static void check_beside_and_after(vkmoe_context *ctx, uint32_t largest_tile)
{
    const vkmoe_gemm_path paths[] = {VKMOE_GEMM_REGISTER, VKMOE_GEMM_TILED, VKMOE_GEMM_GEMV};
    bool largest_seen = false;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        test_seed(92);
        vkmoe_layer_params p = test_shape(53, 19, 5, 2, 70);
        p.shared_ffn_dim = 77;
        p.shared_gate = true;
        p.gemm_path = paths[i];
        test_layer t, plain;
        test_layer_create(ctx, &p, &t);
        test_layer_upload(&t);
        uint32_t tile = t.layer->gemm.tile_m;
        assert_true(tile == 32 || tile == largest_tile);
        largest_seen |= tile == largest_tile;
        float *x = test_input(p.max_tokens, p.dim);
        assert_false(vkmoe_shared_beside(t.layer, 70));
        assert_false(vkmoe_shared_beside(t.layer, tile + 1));
        assert_true(vkmoe_shared_beside(t.layer, tile));
        assert_true(vkmoe_shared_beside(t.layer, 5) && vkmoe_shared_beside(t.layer, 1));
        vkmoe_recorded after, beside, alone;
        float *all = shared_rows_of(&t, 70, x, &after);
        float *first = shared_rows_of(&t, tile, x, &beside);
        assert_memory_equal(first, all, (size_t)tile * p.dim * sizeof(float));
        free(first);
        first = shared_rows_of(&t, 5, x, &beside);
        assert_memory_equal(first, all, 5ull * p.dim * sizeof(float));

        p.shared_ffn_dim = 0;
        p.shared_gate = false;
        test_layer_create(ctx, &p, &plain);
        test_layer_upload(&plain);
        test_check_forward(&plain, 5, x);
        alone = plain.layer->io.recorded;
        assert_int_equal(beside.barriers, alone.barriers);
        assert_int_equal(beside.dispatches, alone.dispatches + 2);
        test_check_forward(&plain, 70, x);
        assert_int_equal(after.barriers, plain.layer->io.recorded.barriers + 2);
        free(first);
        free(all);
        free(x);
        test_layer_destroy(&plain);
        test_layer_destroy(&t);
    }
    assert_true(largest_seen);
}

static void test_beside_and_after(void **state) { check_beside_and_after(*state, 32); }

/* 64-lane GEMMs: the tiled path's tiles hold 64 rows, and so a shared
 * expert's rows of up to 64 tokens fit beside. */
static void test_beside_and_after_64_lanes(void **state)
{
    (void)state;
    vkmoe_context *ctx = test_context_with((vkmoe_context_options){.gemm_lanes = 64});
    assert_non_null(ctx);
    check_beside_and_after(ctx, 64);
    test_context_destroy(&ctx);
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
        cmocka_unit_test(test_beside_and_after),
        cmocka_unit_test(test_beside_and_after_64_lanes),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
