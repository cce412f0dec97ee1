/* Weights larger than one storage-buffer binding, expert arrays split
 * over several allocations, and host memory the host streams through. */
#include <stdlib.h>
#include <string.h>

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

/* A HOST_STREAMED buffer of `size` bytes: on the process's own pages at a
 * 2 MiB boundary where ctx imports host memory (`own`), else the driver's;
 * either way the device copies out what the host wrote. */
static void check_streamed_buffer(vkmoe_context *ctx, VkDeviceSize size, bool own)
{
    vkmoe_buffer streamed, plain;
    assert_int_equal(vkmoe_buffer_create(ctx, size, VKMOE_MEMORY_HOST_STREAMED, &streamed),
                     VKMOE_OK);
    assert_non_null(streamed.mapped);
    assert_int_equal(streamed.size, size);
    if (own) {
        assert_true(streamed.own_bytes >= size);
        assert_int_equal(streamed.own_bytes % ctx->host_import_alignment, 0);
        assert_int_equal((uintptr_t)streamed.mapped % (2u << 20), 0);
    } else {
        assert_int_equal(streamed.own_bytes, 0);
    }
    uint8_t *bytes = streamed.mapped, *back = malloc(size);
    for (VkDeviceSize i = 0; i < size; i++)
        bytes[i] = (uint8_t)(i * 7 + i / 4093);
    assert_int_equal(vkmoe_buffer_create(ctx, size, VKMOE_MEMORY_HOST, &plain), VKMOE_OK);
    VkCommandPool pool;
    VkCommandBuffer cmd = test_commands_begin(ctx, &pool);
    ctx->vk.vkCmdCopyBuffer(cmd, streamed.buffer, plain.buffer, 1,
                            &(VkBufferCopy){.srcOffset = 0, .dstOffset = 0, .size = size});
    test_commands_run(ctx, pool, cmd);
    assert_int_equal(vkmoe_buffer_read(ctx, &plain, 0, back, size), VKMOE_OK);
    assert_memory_equal(back, bytes, size);
    free(back);
    vkmoe_buffer_destroy(ctx, &plain);
    vkmoe_buffer_destroy(ctx, &streamed);
    assert_null(streamed.mapped);
}

/* A layer with a budget of one expert on ctx, the same bits as t's layer
 * with every expert on the device; its host arrays on own pages or not. */
static void check_cached_layer(vkmoe_context *ctx, test_layer *t, bool own)
{
    vkmoe_layer_params p = t->params;
    p.expert_budget_bytes = vkmoe_expert_bytes(&p);
    vkmoe_layer *cached = test_twin_of(ctx, t, &p);
    for (uint32_t m = 0; m < 3; m++) {
        const vkmoe_expert_array *a = &cached->weights.host[m];
        for (uint32_t c = 0; c < a->chunk_count; c++)
            assert_int_equal(a->chunks[c].own_bytes != 0, own);
    }
    for (uint32_t tokens = 1; tokens <= 5; tokens += 4) {
        float *x = test_input(tokens, p.dim);
        float *want = malloc(4ull * tokens * p.dim), *got = malloc(4ull * tokens * p.dim);
        assert_int_equal(vkmoe_layer_forward(t->layer, tokens, x, want), VKMOE_OK);
        assert_int_equal(vkmoe_layer_forward(cached, tokens, x, got), VKMOE_OK);
        assert_memory_equal(want, got, 4ull * tokens * p.dim);
        free(x);
        free(want);
        free(got);
    }
    vkmoe_layer_destroy(&cached);
}

/* With host_huge_pages, an expert cache's host arrays, which CPU experts
 * stream through, lie in huge pages of the process's own (lavapipe imports
 * host memory), on a device vkmoe created or an imported one whose import
 * says it enabled VK_EXT_external_memory_host; without it, or where the
 * device imports none (an import that does not say so), in the driver's
 * memory; the same results everywhere. */
static void test_host_huge_pages(void **state)
{
    vkmoe_context *plain = *state, *huge = NULL, *guest = NULL;
    if (!plain->host_import_alignment)
        skip(); /* CI's lavapipe has it */
    huge = test_huge_pages_context();
    assert_non_null(huge);
    vkmoe_vulkan_import import = test_import_of(huge);
    assert_int_equal(
        vkmoe_context_create(&(vkmoe_context_params){.import = &import, .host_huge_pages = true},
                             &guest),
        VKMOE_OK);
    assert_int_equal(guest->host_import_alignment, 0);
    import.external_memory_host = true;
    vkmoe_context *lent = NULL;
    assert_int_equal(
        vkmoe_context_create(&(vkmoe_context_params){.import = &import, .host_huge_pages = true},
                             &lent),
        VKMOE_OK);
    assert_int_equal(lent->host_import_alignment, huge->host_import_alignment);
    check_streamed_buffer(huge, ((VkDeviceSize)3 << 20) + 5, true);
    check_streamed_buffer(huge, 1, true);
    check_streamed_buffer(lent, ((VkDeviceSize)3 << 20) + 5, true);
    check_streamed_buffer(plain, ((VkDeviceSize)3 << 20) + 5, false);
    check_streamed_buffer(guest, ((VkDeviceSize)3 << 20) + 5, false);

    test_seed(52);
    vkmoe_layer_params p = test_shape(72, 40, 6, 2, 5);
    test_layer t;
    test_layer_create(plain, &p, &t);
    test_layer_upload(&t);
    check_cached_layer(huge, &t, true);
    check_cached_layer(plain, &t, false);
    check_cached_layer(guest, &t, false);
    check_cached_layer(lent, &t, true);
    test_layer_destroy(&t);
    vkmoe_context_destroy(&lent);
    vkmoe_context_destroy(&guest);
    test_context_destroy(&huge);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matrix_larger_than_a_binding),
        cmocka_unit_test(test_experts_over_several_allocations),
        cmocka_unit_test(test_allocation_limit_is_an_error),
        cmocka_unit_test(test_host_huge_pages),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
