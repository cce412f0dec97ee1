/* Hostile and careless callers (issue 19's rows D1–D19, one test each where
 * a library call is the culprit), and fault injection: every Vulkan call
 * that can fail made to fail once in turn, each time giving a clean
 * status, objects that can still be destroyed, and (under ASan) no leak. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "vulkan_interposer.h"

static vkmoe_vulkan_import import_of(const vkmoe_context *host)
{
    return (vkmoe_vulkan_import){
        .instance = host->instance,
        .physical_device = host->physical_device,
        .device = host->device,
        .queue = host->queue,
        .queue_family = host->queue_family,
    };
}

/* A layer whose weights are all zero, as small as can hold a shared expert
 * with its gate, statistics and timings: every kind of buffer and pass. */
static const vkmoe_layer_params small_layer = {
    .dim = 16, .ffn_dim = 8, .experts = 3, .top_k = 2, .max_tokens = 4, .shared_ffn_dim = 8,
    .shared_gate = true, .statistics = true, .timing = true};

/* D1: a device of a Vulkan 1.1 instance, api_version left 0, lacks the 1.2
 * functions vkmoe calls: refused, where it used to crash in layer_create. */
static void test_d01_vulkan_1_1_instance(void **state)
{
    (void)state;
    assert_int_equal(volkInitialize(), VK_SUCCESS);
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo instance_info = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                          .pApplicationInfo = &app};
    VkInstance instance;
    assert_int_equal(vkCreateInstance(&instance_info, NULL, &instance), VK_SUCCESS);
    volkLoadInstanceOnly(instance);
    uint32_t count = 1;
    VkPhysicalDevice physical;
    assert_true(vkEnumeratePhysicalDevices(instance, &count, &physical) >= 0 && count == 1);
    float priority = 1;
    VkDeviceQueueCreateInfo queue_info = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                          .queueCount = 1,
                                          .pQueuePriorities = &priority};
    VkDeviceCreateInfo device_info = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                      .queueCreateInfoCount = 1,
                                      .pQueueCreateInfos = &queue_info};
    VkDevice device;
    assert_int_equal(vkCreateDevice(physical, &device_info, NULL, &device), VK_SUCCESS);
    PFN_vkGetDeviceQueue get_queue =
        (PFN_vkGetDeviceQueue)vkGetDeviceProcAddr(device, "vkGetDeviceQueue");
    PFN_vkDestroyDevice destroy_device =
        (PFN_vkDestroyDevice)vkGetDeviceProcAddr(device, "vkDestroyDevice");
    VkQueue queue;
    get_queue(device, 0, 0, &queue);
    vkmoe_vulkan_import import = {.instance = instance, .physical_device = physical,
                                  .device = device, .queue = queue};
    vkmoe_context_params params = {.import = &import};
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_ERROR_UNSUPPORTED);
    assert_null(ctx);
    assert_non_null(strstr(vkmoe_last_error(), "vkGetBufferDeviceAddress"));
    destroy_device(device, NULL);
    vkDestroyInstance(instance, NULL);
}

/* D4, D6: counts and timings before any forward are out of order, not
 * stale memory or a Vulkan error. */
static void test_d04_d06_results_before_any_forward(void **state)
{
    vkmoe_layer *layer = NULL;
    assert_int_equal(vkmoe_layer_create(*state, &small_layer, &layer), VKMOE_OK);
    uint32_t counts[3];
    assert_int_equal(vkmoe_layer_expert_counts(layer, counts, 3), VKMOE_ERROR_STATE);
    assert_non_null(strstr(vkmoe_last_error(), "no forward"));
    vkmoe_timings timings;
    assert_int_equal(vkmoe_layer_timings(layer, &timings), VKMOE_ERROR_STATE);
    assert_non_null(strstr(vkmoe_last_error(), "no forward"));
    vkmoe_layer_destroy(&layer);
}

/* D6: Vulkan results are named in messages. */
static void test_d06_vulkan_results_by_name(void **state)
{
    assert_int_equal(vkmoe_check_vk(*state, VK_NOT_READY, "vkGetQueryPoolResults"),
                     VKMOE_ERROR_VULKAN);
    assert_non_null(strstr(vkmoe_last_error(), "VK_NOT_READY"));
    vkmoe_check_vk(*state, VK_ERROR_FRAGMENTED_POOL, "x");
    assert_non_null(strstr(vkmoe_last_error(), "VK_ERROR_FRAGMENTED_POOL"));
}

/* D5: weights no heap of the device can hold are refused at creation, not
 * discovered by the OOM killer while uploading (lavapipe overcommits). */
static void test_d05_layer_larger_than_the_device(void **state)
{
    vkmoe_layer_params p = {.dim = 16384, .ffn_dim = 16384, .experts = 512, .top_k = 8};
    test_expect_create_fails(*state, &p, VKMOE_ERROR_OUT_OF_DEVICE_MEMORY, "memory heap");
    p = (vkmoe_layer_params){.dim = UINT32_MAX, .ffn_dim = UINT32_MAX, .experts = 512,
                             .top_k = 8};
    test_expect_create_fails(*state, &p, VKMOE_ERROR_OUT_OF_DEVICE_MEMORY, "memory heap");
}

/* D17: x and y over maxStorageBufferRange get what the header says: a
 * device limit that is not memory, UNSUPPORTED (VKMOE_ERROR_UNSUPPORTED's
 * comment names this case; OUT_OF_DEVICE_MEMORY's no longer claims it). */
static void test_d17_io_over_the_storage_range(void **state)
{
    vkmoe_device_info info;
    assert_int_equal(vkmoe_context_device_info(*state, &info), VKMOE_OK);
    vkmoe_layer_params p = {.dim = 4096, .ffn_dim = 8, .experts = 2, .top_k = 1};
    p.max_tokens = (uint32_t)(info.max_storage_buffer_range / (4ull * p.dim) + 1);
    test_expect_create_fails(*state, &p, VKMOE_ERROR_UNSUPPORTED, "maxStorageBufferRange");
}

/* D18: a failing call inside the log callback leaves the callback's message
 * alone, and the outer call's message stands afterwards. */
static char seen_before[512], seen_after[512];
static void fail_inside(void *user, vkmoe_log_level level, const char *message)
{
    (void)user;
    if (level != VKMOE_LOG_ERROR || seen_before[0])
        return;
    snprintf(seen_before, sizeof(seen_before), "%s", message);
    vkmoe_layer_destroy(NULL);
    assert_int_equal(vkmoe_layer_params_family(NULL, "mixtral"), VKMOE_ERROR_INVALID_ARGUMENT);
    vkmoe_layer_params p;
    vkmoe_layer_params_family(&p, "no such family");
    snprintf(seen_after, sizeof(seen_after), "%s", message);
}

static void test_d18_failing_call_in_the_log_callback(void **state)
{
    (void)state;
    vkmoe_context_params params = {.log = fail_inside};
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_OK);
    vkmoe_layer *layer = NULL;
    vkmoe_layer_params p = {.dim = 0};
    assert_int_equal(vkmoe_layer_create(ctx, &p, &layer), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(seen_before, "dim"));
    assert_string_equal(seen_before, seen_after);
    assert_string_equal(vkmoe_last_error(), seen_before);
    vkmoe_context_destroy(&ctx);
}

/* D7: contexts made and used on two threads at once are independent (the
 * ThreadSanitizer build, ./dev test-tsan, checks that nothing is shared). */
static void *one_context(void *seed)
{
    vkmoe_context *ctx = NULL;
    vkmoe_layer *layer = NULL;
    vkmoe_layer_params p = {.dim = 8, .ffn_dim = 8, .experts = 2, .top_k = 1, .max_tokens = 2};
    float router[16] = {0}, matrix[64] = {0}, x[16] = {0}, y[16];
    router[0] = *(float *)seed;
    vkmoe_status status = vkmoe_context_create(NULL, &ctx);
    if (status == VKMOE_OK)
        status = vkmoe_layer_create(ctx, &p, &layer);
    if (status == VKMOE_OK)
        status = vkmoe_layer_set_router(layer, router, sizeof(router));
    for (uint32_t e = 0; e < 2 && status == VKMOE_OK; e++)
        for (int m = 0; m < 3 && status == VKMOE_OK; m++)
            status = vkmoe_layer_set_expert(layer, e, (vkmoe_expert_matrix)m, matrix,
                                            sizeof(matrix));
    if (status == VKMOE_OK)
        status = vkmoe_layer_forward(layer, 2, x, y);
    vkmoe_layer_destroy(&layer);
    vkmoe_context_destroy(&ctx);
    return status == VKMOE_OK ? NULL : seed;
}

static void test_d07_contexts_on_two_threads(void **state)
{
    (void)state;
    float seeds[2] = {1, 2};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, one_context, &seeds[i]), 0);
    for (int i = 0; i < 2; i++) {
        void *failed = &seeds[i];
        assert_int_equal(pthread_join(threads[i], &failed), 0);
        assert_null(failed);
    }
}

/* D8: a queue family the device does not have. */
static void test_d08_import_missing_queue_family(void **state)
{
    vkmoe_vulkan_import import = import_of(*state);
    import.queue_family = 7;
    vkmoe_context_params params = {.import = &import};
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_null(ctx);
    assert_non_null(strstr(vkmoe_last_error(), "queue_family 7"));
}

static void lock_queue(void *user)
{
    (void)user;
    interposer.queue_locked = true;
}

static void unlock_queue(void *user)
{
    (void)user;
    interposer.queue_locked = false;
}

static vkmoe_status upload_zeros(vkmoe_layer *layer)
{
    static const float zeros[16 * 8];
    const vkmoe_layer_params *p = &small_layer;
    vkmoe_status status = vkmoe_layer_set_router(layer, zeros, 4ull * p->experts * p->dim);
    for (uint32_t e = 0; e < p->experts && status == VKMOE_OK; e++)
        for (int m = 0; m < 3 && status == VKMOE_OK; m++)
            status = vkmoe_layer_set_expert(layer, e, (vkmoe_expert_matrix)m, zeros,
                                            4ull * p->dim * p->ffn_dim);
    for (int m = 0; m < 3 && status == VKMOE_OK; m++)
        status = vkmoe_layer_set_shared_expert(layer, (vkmoe_expert_matrix)m, zeros,
                                               4ull * p->dim * p->shared_ffn_dim);
    if (status == VKMOE_OK)
        status = vkmoe_layer_set_shared_gate(layer, zeros, 4ull * p->dim);
    return status;
}

/* Everything a layer does after its creation; the first failure. */
static vkmoe_status use_layer(vkmoe_layer *layer)
{
    float x[4 * 16] = {0}, y[4 * 16];
    uint32_t counts[3];
    vkmoe_timings timings;
    vkmoe_load_stats stats;
    vkmoe_status status = upload_zeros(layer);
    if (status == VKMOE_OK)
        status = vkmoe_layer_forward(layer, 4, x, y);
    if (status == VKMOE_OK)
        status = vkmoe_layer_expert_counts(layer, counts, 3);
    if (status == VKMOE_OK)
        status = vkmoe_layer_timings(layer, &timings);
    if (status == VKMOE_OK)
        status = vkmoe_layer_load_stats(layer, &stats, NULL, NULL, NULL, 0);
    return status;
}

/* D10: destroying an imported context waits on vkmoe's own work only, and
 * every use of the host's queue holds the host's lock. */
static void test_d10_imported_destroy_waits_on_its_own(void **state)
{
    vkmoe_vulkan_import import = import_of(*state);
    import.get_instance_proc_addr = interposer_entry();
    import.lock_queue = lock_queue;
    import.unlock_queue = unlock_queue;
    vkmoe_context_params params = {.import = &import};
    interposer_reset();
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_OK);
    vkmoe_layer *layer = NULL;
    assert_int_equal(vkmoe_layer_create(ctx, &small_layer, &layer), VKMOE_OK);
    assert_int_equal(use_layer(layer), VKMOE_OK);
    vkmoe_layer_destroy(&layer);
    vkmoe_context_destroy(&ctx);
    assert_int_equal(interposer.device_wait_idle_calls, 0);
    assert_int_equal(interposer.unlocked_queue_calls, 0);
}

static char logged[512];
static void keep_message(void *user, vkmoe_log_level level, const char *message)
{
    (void)user;
    if (level == VKMOE_LOG_ERROR)
        snprintf(logged, sizeof(logged), "%s", message);
}

/* D11: a context destroyed before its layer says so and lingers until the
 * layer goes (ASan sees neither a use after free nor a leak). */
static void test_d11_context_destroyed_before_layer(void **state)
{
    (void)state;
    vkmoe_context_params params = {.log = keep_message};
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_OK);
    vkmoe_layer *layer = NULL;
    assert_int_equal(vkmoe_layer_create(ctx, &small_layer, &layer), VKMOE_OK);
    logged[0] = '\0';
    vkmoe_context_destroy(&ctx);
    assert_null(ctx);
    assert_non_null(strstr(logged, "still alive"));
    assert_int_equal(use_layer(layer), VKMOE_OK);
    vkmoe_layer_destroy(&layer);
}

/* ---- fault injection ---- */

static bool failure_status(vkmoe_status status)
{
    return status == VKMOE_ERROR_OUT_OF_HOST_MEMORY ||
           status == VKMOE_ERROR_OUT_OF_DEVICE_MEMORY || status == VKMOE_ERROR_DEVICE_LOST;
}

/* Fail each failable Vulkan call of a context's creation, then of a
 * layer's whole life on a context made without failures, one at a time
 * with `result`, until a run reaches its end with nothing left to fail.
 * A lost device is sticky, so the context is made again after one. */
static void inject_vulkan_failures(vkmoe_context *host, VkResult result, unsigned *points)
{
    vkmoe_vulkan_import import = import_of(host);
    import.get_instance_proc_addr = interposer_entry();
    vkmoe_context_params params = {.import = &import};
    vkmoe_context *ctx = NULL;
    for (unsigned at = 1;; at++) {
        interposer_reset();
        interposer.fail_at = at;
        interposer.fail_with = result;
        vkmoe_status status = vkmoe_context_create(&params, &ctx);
        vkmoe_context_destroy(&ctx);
        if (!interposer.failed_function)
            break;
        assert_true(failure_status(status) || status == VKMOE_OK);
        ++*points;
    }
    for (unsigned at = 1;; at++) {
        interposer_reset();
        if (!ctx)
            assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_OK);
        interposer.fail_at = interposer.failable_calls + at;
        interposer.fail_with = result;
        vkmoe_layer *layer = NULL;
        vkmoe_status status = vkmoe_layer_create(ctx, &small_layer, &layer);
        if (status == VKMOE_OK)
            status = use_layer(layer);
        vkmoe_layer_destroy(&layer);
        if (!interposer.failed_function)
            break;
        if (!failure_status(status))
            fail_msg("%s failing with %d gave status %d (%s)", interposer.failed_function,
                     (int)result, (int)status, vkmoe_last_error());
        ++*points;
        if (status == VKMOE_ERROR_DEVICE_LOST)
            vkmoe_context_destroy(&ctx);
    }
    vkmoe_context_destroy(&ctx);
}

static void test_vulkan_fault_injection(void **state)
{
    unsigned out_of_memory = 0, lost = 0;
    inject_vulkan_failures(*state, VK_ERROR_OUT_OF_HOST_MEMORY, &out_of_memory);
    inject_vulkan_failures(*state, VK_ERROR_DEVICE_LOST, &lost);
    printf("fault injection: %u Vulkan calls failed with out of memory, %u with a lost device\n",
           out_of_memory, lost);
    assert_true(out_of_memory > 50 && lost >= 3);
}

int main(void)
{
    int gate = test_device_gate();
    if (gate)
        return gate;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_d01_vulkan_1_1_instance),
        cmocka_unit_test(test_d04_d06_results_before_any_forward),
        cmocka_unit_test(test_d05_layer_larger_than_the_device),
        cmocka_unit_test(test_d06_vulkan_results_by_name),
        cmocka_unit_test(test_d07_contexts_on_two_threads),
        cmocka_unit_test(test_d08_import_missing_queue_family),
        cmocka_unit_test(test_d10_imported_destroy_waits_on_its_own),
        cmocka_unit_test(test_d11_context_destroyed_before_layer),
        cmocka_unit_test(test_d17_io_over_the_storage_range),
        cmocka_unit_test(test_d18_failing_call_in_the_log_callback),
        cmocka_unit_test(test_vulkan_fault_injection),
    };
    return cmocka_run_group_tests(tests, test_group_setup, test_group_teardown);
}
