/* Context creation, device choice, import of a host device, errors. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "pipelines.h"

static void test_status_strings(void **state)
{
    (void)state;
    const vkmoe_status all[] = {
        VKMOE_OK,
        VKMOE_ERROR_INVALID_ARGUMENT,
        VKMOE_ERROR_UNSUPPORTED,
        VKMOE_ERROR_NO_DEVICE,
        VKMOE_ERROR_OUT_OF_HOST_MEMORY,
        VKMOE_ERROR_OUT_OF_DEVICE_MEMORY,
        VKMOE_ERROR_DEVICE_LOST,
        VKMOE_ERROR_VULKAN,
        VKMOE_ERROR_STATE,
        VKMOE_ERROR_FILE_FORMAT,
        VKMOE_ERROR_IO,
        VKMOE_ERROR_CANCELLED,
        VKMOE_ERROR_PEER,
    };
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(all); i++) {
        assert_true(strlen(vkmoe_status_string(all[i])) > 0);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(vkmoe_status_string(all[i]), vkmoe_status_string(all[j]));
    }
    assert_string_equal(vkmoe_status_string((vkmoe_status)-99), "unknown status");
}

static void test_create_arguments(void **state)
{
    (void)state;
    assert_int_equal(vkmoe_device_count(NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_context_create(NULL, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_context *ctx = (vkmoe_context *)&ctx;
    vkmoe_context_params bad_level = {.log_level = (vkmoe_log_level)9};
    assert_int_equal(vkmoe_context_create(&bad_level, &ctx), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_null(ctx);
    vkmoe_context_destroy(NULL);
    vkmoe_context_destroy(&ctx);
    assert_int_equal(vkmoe_context_device_info(NULL, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_context_validation_errors(NULL), 0);
}

static void test_default_context_and_info(void **state)
{
    (void)state;
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(NULL, &ctx), VKMOE_OK);
    vkmoe_device_info info;
    assert_int_equal(vkmoe_context_device_info(ctx, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_context_device_info(ctx, &info), VKMOE_OK);
    assert_true(strlen(info.name) > 0);
    assert_true(strlen(info.driver) > 0);
    assert_true(info.api_version >= VK_API_VERSION_1_2);
    assert_true(info.subgroup_size >= 1);
    assert_true(info.max_storage_buffer_range > 0);
    assert_true(info.max_allocation_size > 0);
    assert_true(info.device_memory > 0);
    assert_true(info.shared_memory >= 16384);
    /* every format the weight types need is one Vulkan requires */
    assert_int_equal(info.weight_types, (1u << (VKMOE_WEIGHT_MXFP4 + 1)) - 1);
    vkmoe_context_destroy(&ctx);
    assert_null(ctx);
}

static void test_device_by_index_and_name(void **state)
{
    (void)state;
    vkmoe_context *ctx = NULL;
    vkmoe_context_params by_index = {.device = "0"};
    assert_int_equal(vkmoe_context_create(&by_index, &ctx), VKMOE_OK);
    vkmoe_device_info info;
    vkmoe_context_device_info(ctx, &info);
    vkmoe_context_destroy(&ctx);

    char part[5] = {0};
    memcpy(part, info.name, 4);
    vkmoe_context_params by_name = {.device = part};
    assert_int_equal(vkmoe_context_create(&by_name, &ctx), VKMOE_OK);
    vkmoe_device_info again;
    vkmoe_context_device_info(ctx, &again);
    assert_string_equal(again.name, info.name);
    vkmoe_context_destroy(&ctx);

    vkmoe_context_params missing = {.device = "no such device, surely"};
    assert_int_equal(vkmoe_context_create(&missing, &ctx), VKMOE_ERROR_NO_DEVICE);
    assert_null(ctx);
    assert_non_null(strstr(vkmoe_last_error(), "no such device"));
    vkmoe_context_params past_end = {.device = "99"};
    assert_int_equal(vkmoe_context_create(&past_end, &ctx), VKMOE_ERROR_NO_DEVICE);
}

static void test_validation_from_environment(void **state)
{
    (void)state;
    if (!test_validation()) {
        print_message("VKMOE_TEST_VALIDATION=0: no validation layer to turn on\n");
        return;
    }
    setenv("VKMOE_VALIDATION", "1", 1);
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(NULL, &ctx), VKMOE_OK);
    unsetenv("VKMOE_VALIDATION");
    assert_true(ctx->messenger != VK_NULL_HANDLE);
    vkmoe_context_destroy(&ctx);
}

static int hazards;
static void count_hazards(void *user, vkmoe_log_level level, const char *message)
{
    (void)user;
    hazards += level == VKMOE_LOG_ERROR && strstr(message, "SYNC-HAZARD-WRITE-AFTER-WRITE");
}

/* The suites run with the validation layer's synchronization checks
 * (VK_LAYER_ENABLES, tests/meson.build): two updates of one buffer with no
 * barrier between them must be reported, or the setting no longer reaches
 * the layer and every suite would pass without them. */
static void test_synchronization_validation_is_on(void **state)
{
    (void)state;
    const char *enables = getenv("VK_LAYER_ENABLES");
    if (!test_validation() || !enables || !strstr(enables, "SYNCHRONIZATION_VALIDATION")) {
        print_message("VK_LAYER_ENABLES asks for no synchronization validation\n");
        return;
    }
    vkmoe_context_params params = {
        .validation = true, .log = count_hazards, .log_level = VKMOE_LOG_ERROR};
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_OK);
    vkmoe_buffer buffer;
    assert_int_equal(vkmoe_buffer_create(ctx, 256, VKMOE_MEMORY_DEVICE, &buffer), VKMOE_OK);
    VkCommandPool pool;
    VkCommandBuffer cmd = test_commands_begin(ctx, &pool);
    hazards = 0;
    const uint32_t words[2] = {1, 2};
    ctx->vk.vkCmdUpdateBuffer(cmd, buffer.buffer, 0, 4, &words[0]);
    ctx->vk.vkCmdUpdateBuffer(cmd, buffer.buffer, 0, 4, &words[1]);
    assert_int_equal(hazards, 1);
    assert_int_equal(vkmoe_context_validation_errors(ctx), 1);
    assert_int_equal(ctx->vk.vkEndCommandBuffer(cmd), VK_SUCCESS);
    ctx->vk.vkDestroyCommandPool(ctx->device, pool, NULL);
    vkmoe_buffer_destroy(ctx, &buffer);
    vkmoe_context_destroy(&ctx);
}

static int locks, unlocks;
static void count_lock(void *user) { locks += user == &locks; }
static void count_unlock(void *user) { unlocks += user == &locks; }

/* A second context on the first one's device, as a host application would
 * import its own: it must work and must leave the device alive. The host's
 * device has push descriptors where lavapipe offers them (vkmoe enabled
 * them), and the import says so; test_hostile's imports do not. */
static void test_import_host_device(void **state)
{
    vkmoe_context *host = *state;
    vkmoe_device_info host_info;
    assert_int_equal(vkmoe_context_device_info(host, &host_info), VKMOE_OK);
    vkmoe_vulkan_import import = {
        .push_descriptor = host_info.push_descriptors,
        .external_memory_host = host_info.host_memory_import,
        .instance = host->instance,
        .physical_device = host->physical_device,
        .device = host->device,
        .queue = host->queue,
        .queue_family = host->queue_family,
        .api_version = VK_API_VERSION_1_2,
        .lock_queue = count_lock,
        .unlock_queue = count_unlock,
        .queue_lock_user = &locks,
    };
    vkmoe_context_params params = {.import = &import};
    vkmoe_context *guest = NULL;
    assert_int_equal(vkmoe_context_create(&params, &guest), VKMOE_OK);
    vkmoe_device_info guest_info;
    assert_int_equal(vkmoe_context_device_info(guest, &guest_info), VKMOE_OK);
    assert_int_equal(guest_info.push_descriptors, import.push_descriptor);
    assert_int_equal(guest_info.host_memory_import, import.external_memory_host);
    test_seed(20);
    test_layer t;
    vkmoe_layer_params p = {.dim = 20, .ffn_dim = 12, .experts = 3, .top_k = 2, .max_tokens = 5};
    test_layer_create(guest, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(5, p.dim);
    test_check_forward(&t, 5, x);
    test_layer_destroy(&t);
    vkmoe_context_destroy(&guest);
    assert_true(locks > 0);
    assert_int_equal(locks, unlocks);

    /* the host's device still works */
    test_layer_create(host, &p, &t);
    test_layer_upload(&t);
    test_check_forward(&t, 5, x);
    test_layer_destroy(&t);
    free(x);
}

static void test_import_arguments(void **state)
{
    vkmoe_context *host = *state;
    vkmoe_context *ctx = NULL;
    vkmoe_vulkan_import import = {.instance = host->instance};
    vkmoe_context_params params = {.import = &import};
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_ERROR_INVALID_ARGUMENT);
    import = (vkmoe_vulkan_import){.instance = host->instance,
                                   .physical_device = host->physical_device,
                                   .device = host->device,
                                   .queue = host->queue,
                                   .lock_queue = count_lock};
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_ERROR_INVALID_ARGUMENT);
    import.lock_queue = NULL;
    import.api_version = VK_API_VERSION_1_1;
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_ERROR_UNSUPPORTED);
    assert_null(ctx);
}

/* After a device loss every call fails with DEVICE_LOST and everything can
 * still be destroyed. The loss is simulated: lavapipe cannot lose a device. */
static void test_device_lost_is_sticky(void **state)
{
    (void)state;
    vkmoe_context *ctx = test_context();
    assert_non_null(ctx);
    test_seed(21);
    test_layer t;
    vkmoe_layer_params p = {.dim = 8, .ffn_dim = 8, .experts = 2, .top_k = 1, .max_tokens = 2};
    test_layer_create(ctx, &p, &t);
    test_layer_upload(&t);
    assert_int_equal(vkmoe_check_vk(ctx, VK_ERROR_DEVICE_LOST, "test"), VKMOE_ERROR_DEVICE_LOST);
    float x[16] = {0}, y[16];
    assert_int_equal(vkmoe_layer_forward(t.layer, 2, x, y), VKMOE_ERROR_DEVICE_LOST);
    uint32_t counts[2];
    assert_int_equal(vkmoe_layer_expert_counts(t.layer, counts, 2), VKMOE_ERROR_DEVICE_LOST);
    assert_int_equal(vkmoe_layer_set_router(t.layer, t.router, sizeof(float) * 16),
                     VKMOE_ERROR_DEVICE_LOST);
    vkmoe_layer *other = NULL;
    assert_int_equal(vkmoe_layer_create(ctx, &p, &other), VKMOE_ERROR_DEVICE_LOST);
    assert_null(other);
    test_layer_destroy(&t);
    test_context_destroy(&ctx);
}

/* Failures inside the Vulkan calls map to the right status. */
static void test_vulkan_results_map_to_statuses(void **state)
{
    vkmoe_context *ctx = *state;
    assert_int_equal(vkmoe_check_vk(ctx, VK_SUCCESS, "x"), VKMOE_OK);
    assert_int_equal(vkmoe_check_vk(ctx, VK_ERROR_OUT_OF_DEVICE_MEMORY, "vkAllocateMemory"),
                     VKMOE_ERROR_OUT_OF_DEVICE_MEMORY);
    assert_non_null(strstr(vkmoe_last_error(), "vkAllocateMemory"));
    assert_int_equal(vkmoe_check_vk(ctx, VK_ERROR_OUT_OF_HOST_MEMORY, "x"),
                     VKMOE_ERROR_OUT_OF_HOST_MEMORY);
    assert_int_equal(vkmoe_check_vk(ctx, VK_ERROR_INITIALIZATION_FAILED, "x"), VKMOE_ERROR_VULKAN);
}

/* A compile-only context (vkmoe-shader-stats on RADV's null devices) makes
 * no layer, but compiles the pipelines a layer of the params would run:
 * the same ones, since a layer takes its pipelines from the context. */
static void test_compile_only(void **state)
{
    vkmoe_layer_params p = test_shape(64, 96, 4, 2, 33);
    p.gemm_path = VKMOE_GEMM_TILED;
    vkmoe_context *ctx = test_context_with((vkmoe_context_options){.compile_only = true});
    assert_non_null(ctx);
    vkmoe_layer *layer = (vkmoe_layer *)&layer;
    assert_int_equal(vkmoe_layer_create(ctx, &p, &layer), VKMOE_ERROR_UNSUPPORTED);
    assert_null(layer);
    assert_non_null(strstr(vkmoe_last_error(), "only compiles"));
    vkmoe_compiled_layer compiled;
    assert_int_equal(vkmoe_layer_compile(ctx, &p, &compiled), VKMOE_OK);
    assert_int_equal(compiled.gemm.prefill.path, VKMOE_GEMM_TILED);
    assert_int_equal(compiled.gemm.decode.path, VKMOE_GEMM_TILED);
    for (uint32_t s = 0; s < VKMOE_SHADER_STAGES; s++)
        if (s != VKMOE_SHADER_GEMM_UP && s != VKMOE_SHADER_GEMM_DOWN)
            assert_non_null(compiled.pipelines[s]);
    assert_non_null(compiled.gemm.prefill.up);
    assert_non_null(compiled.gemm.prefill.down);
    assert_non_null(compiled.gemm.prefill.logits);
    assert_int_equal(compiled.gemm.prefill.logits_path, VKMOE_GEMM_TILED);
    /* Statistics are only kept where asked for. */
    uint64_t vgprs;
    assert_int_equal(vkmoe_pipeline_statistic(ctx, compiled.gemm.prefill.logits, "VGPRs", &vgprs),
                     VKMOE_ERROR_UNSUPPORTED);
    p.dim = 0;
    assert_int_equal(vkmoe_layer_compile(ctx, &p, &compiled), VKMOE_ERROR_INVALID_ARGUMENT);
    test_context_destroy(&ctx);

    /* A layer on an ordinary context runs exactly those pipelines. */
    p.dim = 64;
    test_layer t;
    test_layer_create(*state, &p, &t);
    assert_int_equal(vkmoe_layer_compile(*state, &p, &compiled), VKMOE_OK);
    assert_memory_equal(compiled.pipelines, t.layer->pipelines, sizeof(compiled.pipelines));
    assert_int_equal(compiled.gemm.tile_m, t.layer->gemm.tile_m);
    const vkmoe_gemm_kernel *kernels[] = {&compiled.gemm.decode, &compiled.gemm.prefill};
    const vkmoe_gemm_kernel *ran[] = {&t.layer->gemm.decode, &t.layer->gemm.prefill};
    for (size_t i = 0; i < 2; i++) { /* fields, not bytes: the struct has padding */
        assert_int_equal(kernels[i]->path, ran[i]->path);
        assert_int_equal(kernels[i]->logits_path, ran[i]->logits_path);
        assert_true(kernels[i]->up == ran[i]->up && kernels[i]->down == ran[i]->down &&
                    kernels[i]->logits == ran[i]->logits);
    }
    test_layer_destroy(&t);
}

/* Statistics need VK_KHR_pipeline_executable_properties: a device without it
 * refuses the option, naming the extension; one with it reports them. */
static void test_pipeline_statistics(void **state)
{
    (void)state;
    vkmoe_context *ctx = test_context_with((vkmoe_context_options){.pipeline_statistics = true});
    if (!ctx) {
        assert_non_null(strstr(vkmoe_last_error(), "VK_KHR_pipeline_executable_properties"));
        return;
    }
    vkmoe_layer_params p = test_shape(64, 96, 4, 2, 33);
    vkmoe_compiled_layer compiled;
    assert_int_equal(vkmoe_layer_compile(ctx, &p, &compiled), VKMOE_OK);
    uint64_t value = 0;
    vkmoe_status status =
        vkmoe_pipeline_statistic(ctx, compiled.gemm.decode.logits, "VGPRs", &value);
    assert_true(status == VKMOE_OK || status == VKMOE_ERROR_UNSUPPORTED);
    assert_int_equal(
        vkmoe_pipeline_statistic(ctx, compiled.gemm.decode.logits, "no such statistic", &value),
        VKMOE_ERROR_UNSUPPORTED);
    char *isa = (char *)"not touched";
    assert_int_equal(vkmoe_pipeline_isa(ctx, compiled.gemm.decode.logits, &isa),
                     VKMOE_ERROR_UNSUPPORTED); /* its code was not kept */
    assert_null(isa);
    test_context_destroy(&ctx);
}

/* With pipeline_isa the driver's last text representation of a pipeline
 * comes back whole, or UNSUPPORTED where it keeps none. Debian 12's
 * lavapipe offers no VK_KHR_pipeline_executable_properties: this runs on
 * GPUs (./dev gpu-check), and RADV's null devices' code is what
 * `./dev shader-stats --isa` prints. */
static void test_pipeline_code(void **state)
{
    (void)state;
    vkmoe_context *ctx = test_context_with(
        (vkmoe_context_options){.pipeline_statistics = true, .pipeline_isa = true});
    if (!ctx)
        return; /* test_pipeline_statistics says why */
    vkmoe_layer_params p = test_shape(64, 96, 4, 2, 33);
    vkmoe_compiled_layer compiled;
    assert_int_equal(vkmoe_layer_compile(ctx, &p, &compiled), VKMOE_OK);
    char *isa = NULL;
    vkmoe_status status = vkmoe_pipeline_isa(ctx, compiled.gemm.prefill.up, &isa);
    if (status == VKMOE_OK) {
        assert_non_null(isa);
        assert_true(strlen(isa) > 100);
        printf("the driver's code of gemm_up: %zu characters\n", strlen(isa));
    } else {
        assert_int_equal(status, VKMOE_ERROR_UNSUPPORTED);
        assert_null(isa);
    }
    free(isa);
    test_context_destroy(&ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_strings),
        cmocka_unit_test(test_create_arguments),
        cmocka_unit_test(test_default_context_and_info),
        cmocka_unit_test(test_device_by_index_and_name),
        cmocka_unit_test(test_validation_from_environment),
        cmocka_unit_test(test_synchronization_validation_is_on),
        cmocka_unit_test(test_import_host_device),
        cmocka_unit_test(test_import_arguments),
        cmocka_unit_test(test_device_lost_is_sticky),
        cmocka_unit_test(test_vulkan_results_map_to_statuses),
        cmocka_unit_test(test_compile_only),
        cmocka_unit_test(test_pipeline_statistics),
        cmocka_unit_test(test_pipeline_code),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
