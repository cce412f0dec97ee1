/* Weights larger than one storage-buffer binding, and expert arrays split
 * over several allocations. */
#include <stdlib.h>

#include "helpers.h"

/* One expert matrix of 2048 x 16448 f32 is 134.7 MB, over lavapipe's
 * 128 MiB maxStorageBufferRange: it must still upload and run. */
static void test_matrix_larger_than_a_binding(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(50);
    vkmoe_layer_params p = test_shape(2048, 16448, 2, 1, 3);
    p.normalize_topk = true;
    assert_true((uint64_t)p.dim * p.ffn_dim * 4 > ctx->info.max_storage_buffer_range ||
                ctx->info.max_storage_buffer_range > (1ull << 30));
    test_layer t;
    test_layer_create(ctx, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(3, p.dim);
    test_check_forward(&t, 3, x);
    free(x);
    test_layer_destroy(&t);
}

/* A small allocation limit forces each expert array into several chunks;
 * the expert table must point every expert at the right one. */
static void test_experts_over_several_allocations(void **state)
{
    (void)state;
    test_seed(51);
    /* Two 128 x 128 f32 matrices per chunk; the scratch buffers still fit. */
    vkmoe_context *ctx =
        test_context_with((vkmoe_context_options){.max_allocation_size = 2 * 128 * 128 * 4 + 100});
    assert_non_null(ctx);
    vkmoe_layer_params p = test_shape(128, 128, 7, 2, 2);
    p.normalize_topk = true;
    test_layer t;
    test_layer_create(ctx, &p, &t);
    assert_int_equal(t.layer->weights.experts[VKMOE_EXPERT_GATE].chunk_count, 4);
    test_layer_upload(&t);
    for (int i = 0; i < 4; i++) { /* different inputs reach different experts */
        float *x = test_input(2, p.dim);
        test_check_forward(&t, 2, x);
        free(x);
    }
    test_layer_destroy(&t);
    test_context_destroy(&ctx);
}

/* A request beyond the allocation limit fails cleanly. */
static void test_allocation_limit_is_an_error(void **state)
{
    (void)state;
    vkmoe_context *ctx = test_context_with((vkmoe_context_options){.max_allocation_size = 1 << 16});
    assert_non_null(ctx);
    vkmoe_layer_params p = {.dim = 256, .ffn_dim = 256, .experts = 2, .top_k = 1};
    vkmoe_layer *layer = NULL;
    vkmoe_status status = vkmoe_layer_create(ctx, &p, &layer);
    assert_int_equal(status, VKMOE_ERROR_OUT_OF_DEVICE_MEMORY);
    assert_null(layer);
    test_context_destroy(&ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matrix_larger_than_a_binding),
        cmocka_unit_test(test_experts_over_several_allocations),
        cmocka_unit_test(test_allocation_limit_is_an_error),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
