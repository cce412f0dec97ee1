/* Hostile and careless callers (issue 19's rows D1–D19, one test each where
 * a library call is the culprit), and fault injection: every Vulkan call
 * that can fail made to fail once in turn, each time giving a clean
 * status, objects that can still be destroyed, and (under ASan) no leak. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "checkpoint.h"
#include "helpers.h"
#include "vulkan_interposer.h"

/* A layer whose weights are all zero, as small as can hold a shared expert
 * with its gate, statistics and timings: every kind of buffer and pass. */
static const vkmoe_layer_params small_layer = {.dim = 16,
                                               .ffn_dim = 8,
                                               .experts = 3,
                                               .top_k = 2,
                                               .max_tokens = 4,
                                               .shared_ffn_dim = 8,
                                               .shared_gate = true,
                                               .statistics = true,
                                               .timing = true};

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
    vkmoe_vulkan_import import = {
        .instance = instance, .physical_device = physical, .device = device, .queue = queue};
    vkmoe_context_params params = {.import = &import};
    vkmoe_context *ctx = NULL;
    vkmoe_status status = vkmoe_context_create(&params, &ctx);
    /* lavapipe hands a 1.1 instance no Vulkan 1.2 functions; NVIDIA's
     * driver does, and the import then works. */
    if (status == VKMOE_OK && !vkmoe_context_cpu_shaped(ctx)) {
        vkmoe_context_destroy(&ctx);
    } else {
        assert_int_equal(status, VKMOE_ERROR_UNSUPPORTED);
        assert_null(ctx);
        assert_non_null(strstr(vkmoe_last_error(), "vkGetBufferDeviceAddress"));
    }
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
    p = (vkmoe_layer_params){.dim = UINT32_MAX, .ffn_dim = UINT32_MAX, .experts = 512, .top_k = 8};
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

/* D8: a queue family the device does not have. */
static void test_d08_import_missing_queue_family(void **state)
{
    vkmoe_vulkan_import import = test_import_of(*state);
    import.queue_family = 7;
    vkmoe_context_params params = {.import = &import};
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_null(ctx);
    assert_non_null(strstr(vkmoe_last_error(), "queue_family 7"));
}

/* An import of host's device through the interposer (its state reset),
 * which the caller then tells what to hide. */
static vkmoe_vulkan_import interposed_import(vkmoe_context *host)
{
    vkmoe_vulkan_import import = test_import_of(host);
    import.get_instance_proc_addr = interposer_entry();
    interposer_reset();
    return import;
}

/* The import is refused as unsupported, with `why` in the message. */
static void check_import_refused(const vkmoe_vulkan_import *import, const char *why)
{
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&(vkmoe_context_params){.import = import}, &ctx),
                     VKMOE_ERROR_UNSUPPORTED);
    assert_null(ctx);
    assert_non_null(strstr(vkmoe_last_error(), why));
}

/* D9: whether the host enabled bufferDeviceAddress cannot be asked of a
 * VkDevice (the header says so); whether the physical device supports it
 * can, and a device without it is refused. */
static void test_d09_import_without_buffer_device_address(void **state)
{
    vkmoe_vulkan_import import = interposed_import(*state);
    interposer.hide_buffer_device_address = true;
    check_import_refused(&import, "buffer device addresses");
    interposer_reset();
}

/* The same for VK_EXT_external_memory_host: an import that says the host
 * enabled it, on a device that hands out none of its functions, is
 * refused; saying nothing, it imports and lends no host memory. */
static void test_d09_import_without_external_memory_host(void **state)
{
    vkmoe_vulkan_import import = interposed_import(*state);
    import.external_memory_host = true;
    interposer.hide_host_pointer_properties = true;
    check_import_refused(&import, "VK_EXT_external_memory_host");
    import.external_memory_host = false;
    vkmoe_context *ctx = NULL;
    assert_int_equal(vkmoe_context_create(&(vkmoe_context_params){.import = &import}, &ctx),
                     VKMOE_OK);
    vkmoe_device_info info;
    assert_int_equal(vkmoe_context_device_info(ctx, &info), VKMOE_OK);
    assert_false(info.host_memory_import);
    vkmoe_context_destroy(&ctx);
    interposer_reset();
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
    vkmoe_vulkan_import import = test_import_of(*state);
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
    return status == VKMOE_ERROR_OUT_OF_HOST_MEMORY || status == VKMOE_ERROR_OUT_OF_DEVICE_MEMORY ||
           status == VKMOE_ERROR_DEVICE_LOST;
}

/* Fail each failable Vulkan call of a context's creation, then of a
 * layer's whole life on a context made without failures, one at a time
 * with `result`, until a run reaches its end with nothing left to fail.
 * A lost device is sticky, so the context is made again after one. Nothing
 * may be freed while a submission still runs (the failure is the
 * interposer's, the device goes on: a real GPU would fault). */
static void inject_vulkan_failures(vkmoe_context *host, VkResult result,
                                   const vkmoe_context_options *options, unsigned *points)
{
    vkmoe_vulkan_import import = test_import_of(host);
    import.get_instance_proc_addr = interposer_entry();
    vkmoe_context_params params = {.import = &import};
    vkmoe_context *ctx = NULL;
    for (unsigned at = 1;; at++) {
        interposer_reset();
        interposer.fail_at = at;
        interposer.fail_with = result;
        vkmoe_status status = vkmoe_context_create_with(&params, options, &ctx);
        vkmoe_context_destroy(&ctx);
        if (interposer.busy_frees)
            fail_msg("%s failing with %d: %u frees while a submission ran",
                     interposer.failed_function, (int)result, interposer.busy_frees);
        if (!interposer.failed_function)
            break;
        assert_true(failure_status(status) || status == VKMOE_OK);
        ++*points;
    }
    for (unsigned at = 1;; at++) {
        interposer_reset();
        if (!ctx)
            assert_int_equal(vkmoe_context_create_with(&params, options, &ctx), VKMOE_OK);
        interposer.fail_at = interposer.failable_calls + at;
        interposer.fail_with = result;
        vkmoe_layer *layer = NULL;
        vkmoe_status status = vkmoe_layer_create(ctx, &small_layer, &layer);
        if (status == VKMOE_OK)
            status = use_layer(layer);
        vkmoe_layer_destroy(&layer);
        if (status == VKMOE_ERROR_DEVICE_LOST)
            vkmoe_context_destroy(&ctx);
        if (interposer.busy_frees)
            fail_msg("%s failing with %d: %u frees while a submission ran",
                     interposer.failed_function, (int)result, interposer.busy_frees);
        if (!interposer.failed_function)
            break;
        if (!failure_status(status))
            fail_msg("%s failing with %d gave status %d (%s)", interposer.failed_function,
                     (int)result, (int)status, vkmoe_last_error());
        ++*points;
    }
    vkmoe_context_destroy(&ctx);
}

/* Each failable loader, instance and device call of a context that makes
 * its own instance and device, failed in turn. */
static unsigned inject_own_context_failures(void)
{
    vkmoe_context_options options = {.get_instance_proc_addr = interposer_entry()};
    unsigned points = 0;
    for (unsigned at = 1;; at++) {
        interposer_reset();
        interposer.fail_at = at;
        interposer.fail_with = VK_ERROR_OUT_OF_HOST_MEMORY;
        vkmoe_context *ctx = NULL;
        vkmoe_status status = vkmoe_context_create_with(NULL, &options, &ctx);
        vkmoe_context_destroy(&ctx);
        if (!interposer.failed_function)
            break;
        /* The extension probe failing reads as "no cooperative matrices";
         * the wait in destroy has no status to give (it then destroys). */
        const char *f = interposer.failed_function;
        bool absorbed = strcmp(f, "vkEnumerateDeviceExtensionProperties") == 0 ||
                        strcmp(f, "vkDeviceWaitIdle") == 0;
        if (!failure_status(status) && !(absorbed && status == VKMOE_OK))
            fail_msg("%s failing gave status %d (%s)", interposer.failed_function, (int)status,
                     vkmoe_last_error());
        points++;
    }
    return points;
}

static void test_vulkan_fault_injection(void **state)
{
    unsigned own = inject_own_context_failures();
    unsigned out_of_memory = 0, lost = 0;
    /* The device's own memory: lavapipe's is the host's, so no staging
     * copies (a discrete GPU's make more calls to fail: test_expert_cache
     * fails each of a cached forward's on one, options.discrete_memory; a
     * context made again after each lost device costs lavapipe seconds). */
    const vkmoe_context_options options = {0};
    inject_vulkan_failures(*state, VK_ERROR_OUT_OF_HOST_MEMORY, &options, &out_of_memory);
    inject_vulkan_failures(*state, VK_ERROR_DEVICE_LOST, &options, &lost);
    printf("fault injection: %u Vulkan calls failed with out of memory (%u of them making a "
           "context's own instance and device), %u with a lost device\n",
           own + out_of_memory, own, lost);
    assert_true(own >= 4 && out_of_memory > 50 && lost >= 3);
}

/* Each allocation of a context's creation, then of a layer's life, of a
 * sharded checkpoint's and a GGUF file's loading and of a whole model's
 * opening on a context made without failures, failed in turn:
 * OUT_OF_HOST_MEMORY every time (and nothing leaked: ASan). */
typedef vkmoe_status (*life_fn)(vkmoe_context *ctx, const char *path);

static vkmoe_status layer_life(vkmoe_context *ctx, const char *path)
{
    (void)path;
    vkmoe_layer *layer = NULL;
    vkmoe_status status = vkmoe_layer_create(ctx, &small_layer, &layer);
    if (status == VKMOE_OK)
        status = use_layer(layer);
    vkmoe_layer_destroy(&layer);
    return status;
}

/* A layer with two experts of three on the device and one-off experts on
 * the host (copies made dear, so the host takes them): the cache's and the
 * CPU experts' allocations, at creation and in the forward (the host
 * threads' buffers). */
static vkmoe_status offloaded_life(vkmoe_context *ctx, const char *path)
{
    (void)path;
    vkmoe_layer_params p = small_layer;
    p.expert_budget_bytes = 2 * vkmoe_expert_bytes(&p);
    p.cpu_cold_experts = true;
    p.host_to_device_gbps = 0.001f;
    vkmoe_layer *layer = NULL;
    vkmoe_status status = vkmoe_layer_create(ctx, &p, &layer);
    vkmoe_cache_stats s = {0};
    if (status == VKMOE_OK)
        status = use_layer(layer);
    if (status == VKMOE_OK)
        status = vkmoe_layer_cache_stats(layer, &s);
    if (status == VKMOE_OK && s.cpu_slots == 0)
        fail_msg("the offloaded layer ran no expert on the host");
    vkmoe_layer_destroy(&layer);
    return status;
}

static vkmoe_status load_life(vkmoe_context *ctx, const char *path)
{
    vkmoe_layer *layer = NULL;
    vkmoe_model_params params = {.max_tokens = 4, .statistics = true};
    vkmoe_status status = vkmoe_layer_from_file(ctx, path, 0, &params, &layer);
    float x[4 * 16] = {0}, y[4 * 16];
    if (status == VKMOE_OK)
        status = vkmoe_layer_forward(layer, 4, x, y);
    if (status == VKMOE_OK)
        status = vkmoe_layer_load_stats(layer, &(vkmoe_load_stats){0}, NULL, NULL, NULL, 0);
    vkmoe_layer_destroy(&layer);
    return status;
}

/* A whole model's opening (shared scratch, progress) and a forward
 * through both its layers. */
static vkmoe_status model_life(vkmoe_context *ctx, const char *path)
{
    vkmoe_model *model = NULL;
    vkmoe_model_params params = {.max_tokens = 4};
    vkmoe_status status = vkmoe_model_open(ctx, path, &params, &model);
    float x[4 * 16] = {0}, y[4 * 16];
    for (uint32_t i = 0; i < 2 && status == VKMOE_OK; i++)
        status = vkmoe_layer_forward(vkmoe_model_layer(model, i), 4, x, y);
    vkmoe_model_destroy(&model);
    return status;
}

/* Device bytes of two experts of each of lent_model_life's layers. */
static uint64_t two_experts_a_layer;

/* The same model under a device budget, on a device that imports host
 * memory: its cached layers' experts are the file's own pages. */
static vkmoe_status lent_model_life(vkmoe_context *ctx, const char *path)
{
    vkmoe_model *model = NULL;
    vkmoe_model_params params = {.max_tokens = 4, .expert_budget_bytes = 2 * two_experts_a_layer};
    vkmoe_status status = vkmoe_model_open(ctx, path, &params, &model);
    vkmoe_memory_report report;
    if (status == VKMOE_OK && vkmoe_model_memory(model, &report) == VKMOE_OK &&
        report.host_experts_mapped == 0)
        fail_msg("the model's experts were copied, not read from the file");
    float x[4 * 16] = {0}, y[4 * 16];
    for (uint32_t i = 0; i < 2 && status == VKMOE_OK; i++)
        status = vkmoe_layer_forward(vkmoe_model_layer(model, i), 4, x, y);
    vkmoe_model_destroy(&model);
    return status;
}

static unsigned sweep_allocations(vkmoe_context *ctx, life_fn life, const char *path)
{
    unsigned points = 0;
    for (unsigned at = 1;; at++) {
        vkmoe_alloc_fail_at(at);
        vkmoe_status status = life(ctx, path);
        if (vkmoe_alloc_fail_at(0) < at)
            break;
        if (status != VKMOE_ERROR_OUT_OF_HOST_MEMORY)
            fail_msg("allocation %u of %s failed: status %d (%s)", at, path ? path : "a layer",
                     (int)status, vkmoe_last_error());
        points++;
    }
    return points;
}

static void test_allocation_fault_injection(void **state)
{
    vkmoe_context *host = *state;
    vkmoe_vulkan_import import = test_import_of(host);
    vkmoe_context_params params = {.import = &import};
    vkmoe_context *ctx = NULL;
    unsigned context_points = 0;
    for (unsigned at = 1;; at++) {
        vkmoe_alloc_fail_at(at);
        vkmoe_status status = vkmoe_context_create(&params, &ctx);
        vkmoe_context_destroy(&ctx);
        if (vkmoe_alloc_fail_at(0) < at)
            break;
        assert_int_equal(status, VKMOE_ERROR_OUT_OF_HOST_MEMORY);
        context_points++;
    }
    assert_int_equal(vkmoe_context_create(&params, &ctx), VKMOE_OK);
    unsigned layer_points = sweep_allocations(ctx, layer_life, NULL);
    unsigned offload_points = sweep_allocations(ctx, offloaded_life, NULL);

    char dir[256], gguf[300];
    assert_true(test_make_dir("vkmoe-test-hostile", dir, sizeof(dir)));
    test_seed(190);
    test_layer t;
    vkmoe_layer_params p = {.dim = 16, .ffn_dim = 8, .experts = 3, .top_k = 2};
    vkmoe_layer_params_family(&p, "mixtral");
    checkpoint_weights(host, p, &t);
    checkpoint_write_mixtral_files(dir, &t, 2);
    char model_path[300];
    snprintf(gguf, sizeof(gguf), "%s/model.gguf", dir);
    snprintf(model_path, sizeof(model_path), "%s/model2.gguf", dir);
    test_layer_destroy(&t);
    unsigned checkpoint_points = sweep_allocations(ctx, load_life, dir);
    unsigned gguf_points = sweep_allocations(ctx, load_life, gguf);
    unsigned model_points = sweep_allocations(ctx, model_life, model_path);
    /* The host's own device imports host memory (lavapipe does). */
    two_experts_a_layer = 2 * vkmoe_expert_bytes(&p);
    unsigned lent_points =
        host->host_import_alignment ? sweep_allocations(host, lent_model_life, model_path) : 1;
    test_remove_dir(dir, checkpoint_files, checkpoint_file_count);
    vkmoe_context_destroy(&ctx);
    printf("fault injection: %u allocations failed in context creation, %u in a layer's life, "
           "%u in an offloaded layer's, %u loading a checkpoint, %u loading a GGUF file, %u "
           "opening a whole model, %u one reading its experts from the file\n",
           context_points, layer_points, offload_points, checkpoint_points, gguf_points,
           model_points, lent_points);
    assert_true(context_points > 0 && layer_points > 0 && offload_points > layer_points &&
                checkpoint_points > 0 && gguf_points > 0 && model_points > gguf_points &&
                lent_points > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_d01_vulkan_1_1_instance),
        cmocka_unit_test(test_d04_d06_results_before_any_forward),
        cmocka_unit_test(test_d05_layer_larger_than_the_device),
        cmocka_unit_test(test_d06_vulkan_results_by_name),
        cmocka_unit_test(test_d08_import_missing_queue_family),
        cmocka_unit_test(test_d09_import_without_buffer_device_address),
        cmocka_unit_test(test_d09_import_without_external_memory_host),
        cmocka_unit_test(test_d10_imported_destroy_waits_on_its_own),
        cmocka_unit_test(test_d11_context_destroyed_before_layer),
        cmocka_unit_test(test_d17_io_over_the_storage_range),
        cmocka_unit_test(test_d18_failing_call_in_the_log_callback),
        cmocka_unit_test(test_vulkan_fault_injection),
        cmocka_unit_test(test_allocation_fault_injection),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
