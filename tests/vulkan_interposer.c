#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers.h"
#include "vulkan_interposer.h"

interposer_state interposer;

void interposer_reset(void) { memset(&interposer, 0, sizeof(interposer)); }

/* Every device function vkmoe calls that returns a VkResult: name, whether
 * the spec lets it report a lost device, parameters, arguments. */
#define FAILABLE(X)                                                                                \
    X(vkQueueSubmit, true, (VkQueue q, uint32_t n, const VkSubmitInfo *s, VkFence f),              \
      (q, n, s, f))                                                                                \
    X(vkQueueWaitIdle, true, (VkQueue q), (q))                                                     \
    X(vkDeviceWaitIdle, true, (VkDevice d), (d))                                                   \
    X(vkWaitForFences, true, (VkDevice d, uint32_t n, const VkFence *f, VkBool32 all, uint64_t t), \
      (d, n, f, all, t))                                                                           \
    X(vkGetQueryPoolResults, true,                                                                 \
      (VkDevice d, VkQueryPool p, uint32_t first, uint32_t n, size_t size, void *data,             \
       VkDeviceSize stride, VkQueryResultFlags flags),                                             \
      (d, p, first, n, size, data, stride, flags))                                                 \
    X(vkMapMemory, false,                                                                          \
      (VkDevice d, VkDeviceMemory m, VkDeviceSize o, VkDeviceSize s, VkMemoryMapFlags f,           \
       void **p),                                                                                  \
      (d, m, o, s, f, p))                                                                          \
    X(vkResetFences, false, (VkDevice d, uint32_t n, const VkFence *f), (d, n, f))                 \
    X(vkCreateBuffer, false,                                                                       \
      (VkDevice d, const VkBufferCreateInfo *i, const VkAllocationCallbacks *a, VkBuffer *o),      \
      (d, i, a, o))                                                                                \
    X(vkAllocateMemory, false,                                                                     \
      (VkDevice d, const VkMemoryAllocateInfo *i, const VkAllocationCallbacks *a,                  \
       VkDeviceMemory *o),                                                                         \
      (d, i, a, o))                                                                                \
    X(vkBindBufferMemory, false, (VkDevice d, VkBuffer b, VkDeviceMemory m, VkDeviceSize o),       \
      (d, b, m, o))                                                                                \
    X(vkCreateBufferView, false,                                                                   \
      (VkDevice d, const VkBufferViewCreateInfo *i, const VkAllocationCallbacks *a,                \
       VkBufferView *o),                                                                           \
      (d, i, a, o))                                                                                \
    X(vkCreateShaderModule, false,                                                                 \
      (VkDevice d, const VkShaderModuleCreateInfo *i, const VkAllocationCallbacks *a,              \
       VkShaderModule *o),                                                                         \
      (d, i, a, o))                                                                                \
    X(vkCreateComputePipelines, false,                                                             \
      (VkDevice d, VkPipelineCache c, uint32_t n, const VkComputePipelineCreateInfo *i,            \
       const VkAllocationCallbacks *a, VkPipeline *o),                                             \
      (d, c, n, i, a, o))                                                                          \
    X(vkCreatePipelineLayout, false,                                                               \
      (VkDevice d, const VkPipelineLayoutCreateInfo *i, const VkAllocationCallbacks *a,            \
       VkPipelineLayout *o),                                                                       \
      (d, i, a, o))                                                                                \
    X(vkCreateDescriptorSetLayout, false,                                                          \
      (VkDevice d, const VkDescriptorSetLayoutCreateInfo *i, const VkAllocationCallbacks *a,       \
       VkDescriptorSetLayout *o),                                                                  \
      (d, i, a, o))                                                                                \
    X(vkCreateDescriptorPool, false,                                                               \
      (VkDevice d, const VkDescriptorPoolCreateInfo *i, const VkAllocationCallbacks *a,            \
       VkDescriptorPool *o),                                                                       \
      (d, i, a, o))                                                                                \
    X(vkAllocateDescriptorSets, false,                                                             \
      (VkDevice d, const VkDescriptorSetAllocateInfo *i, VkDescriptorSet *o), (d, i, o))           \
    X(vkCreateQueryPool, false,                                                                    \
      (VkDevice d, const VkQueryPoolCreateInfo *i, const VkAllocationCallbacks *a,                 \
       VkQueryPool *o),                                                                            \
      (d, i, a, o))                                                                                \
    X(vkCreateCommandPool, false,                                                                  \
      (VkDevice d, const VkCommandPoolCreateInfo *i, const VkAllocationCallbacks *a,               \
       VkCommandPool *o),                                                                          \
      (d, i, a, o))                                                                                \
    X(vkAllocateCommandBuffers, false,                                                             \
      (VkDevice d, const VkCommandBufferAllocateInfo *i, VkCommandBuffer *o), (d, i, o))           \
    X(vkCreateFence, false,                                                                        \
      (VkDevice d, const VkFenceCreateInfo *i, const VkAllocationCallbacks *a, VkFence *o),        \
      (d, i, a, o))                                                                                \
    X(vkBeginCommandBuffer, false, (VkCommandBuffer c, const VkCommandBufferBeginInfo *i), (c, i)) \
    X(vkEndCommandBuffer, false, (VkCommandBuffer c), (c))                                         \
    X(vkResetCommandBuffer, false, (VkCommandBuffer c, VkCommandBufferResetFlags f), (c, f))

/* The same for the loader and instance functions a context that makes its
 * own device calls. */
#define INSTANCE_FAILABLE(X)                                                                       \
    X(vkCreateInstance, false,                                                                     \
      (const VkInstanceCreateInfo *i, const VkAllocationCallbacks *a, VkInstance *o), (i, a, o))   \
    X(vkEnumeratePhysicalDevices, false, (VkInstance i, uint32_t * n, VkPhysicalDevice * d),       \
      (i, n, d))                                                                                   \
    X(vkEnumerateDeviceExtensionProperties, false,                                                 \
      (VkPhysicalDevice d, const char *l, uint32_t *n, VkExtensionProperties *p), (d, l, n, p))    \
    X(vkCreateDevice, false,                                                                       \
      (VkPhysicalDevice p, const VkDeviceCreateInfo *i, const VkAllocationCallbacks *a,            \
       VkDevice *o),                                                                               \
      (p, i, a, o))

static bool is_queue_call(const char *name)
{
    return strcmp(name, "vkQueueSubmit") == 0 || strcmp(name, "vkQueueWaitIdle") == 0;
}

/* Whether this call fails, and with what. */
static bool inject(const char *name, bool may_lose_device, VkResult *result)
{
    if (is_queue_call(name) && !interposer.queue_locked)
        interposer.unlocked_queue_calls++;
    if (strcmp(name, "vkDeviceWaitIdle") == 0)
        interposer.device_wait_idle_calls++;
    if (interposer.fail_with == VK_ERROR_DEVICE_LOST && !may_lose_device)
        return false;
    if (++interposer.failable_calls != interposer.fail_at)
        return false;
    interposer.failed_function = name;
    *result = interposer.fail_with;
    return true;
}

#define WRAP(name, lose, params, args)                                                             \
    static PFN_##name real_##name;                                                                 \
    static VKAPI_ATTR VkResult VKAPI_CALL wrap_##name params                                       \
    {                                                                                              \
        VkResult result;                                                                           \
        if (inject(#name, lose, &result))                                                          \
            return result;                                                                         \
        return real_##name args;                                                                   \
    }
FAILABLE(WRAP)
INSTANCE_FAILABLE(WRAP)
#undef WRAP

/* Fences of submissions not yet seen to complete (busy_frees): kept
 * across interposer_reset, as the device's state is. */
enum { MAX_IN_FLIGHT = 32 };
static VkFence in_flight[MAX_IN_FLIGHT];
static unsigned in_flight_count;

static void fence_done(VkFence fence)
{
    for (unsigned i = 0; i < in_flight_count; i++)
        if (in_flight[i] == fence) {
            in_flight[i] = in_flight[--in_flight_count];
            return;
        }
}

static VKAPI_ATTR VkResult VKAPI_CALL track_submit(VkQueue q, uint32_t n, const VkSubmitInfo *s,
                                                   VkFence f)
{
    VkResult result = wrap_vkQueueSubmit(q, n, s, f);
    if (result == VK_SUCCESS && f) {
        fence_done(f);
        if (in_flight_count < MAX_IN_FLIGHT)
            in_flight[in_flight_count++] = f;
    }
    return result;
}

static VKAPI_ATTR VkResult VKAPI_CALL track_wait(VkDevice d, uint32_t n, const VkFence *f,
                                                 VkBool32 all, uint64_t timeout)
{
    VkResult result = wrap_vkWaitForFences(d, n, f, all, timeout);
    for (uint32_t i = 0; result == VK_SUCCESS && (all || n == 1) && i < n; i++)
        fence_done(f[i]);
    return result;
}

static VKAPI_ATTR VkResult VKAPI_CALL track_queue_idle(VkQueue q)
{
    VkResult result = wrap_vkQueueWaitIdle(q);
    if (result == VK_SUCCESS)
        in_flight_count = 0;
    return result;
}

static VKAPI_ATTR VkResult VKAPI_CALL track_device_idle(VkDevice d)
{
    VkResult result = wrap_vkDeviceWaitIdle(d);
    if (result == VK_SUCCESS)
        in_flight_count = 0;
    return result;
}

static PFN_vkFreeMemory real_free_memory;
static PFN_vkDestroyBuffer real_destroy_buffer;
static PFN_vkDestroyFence real_destroy_fence;

static VKAPI_ATTR void VKAPI_CALL track_free_memory(VkDevice d, VkDeviceMemory m,
                                                    const VkAllocationCallbacks *a)
{
    interposer.busy_frees += m && in_flight_count > 0;
    real_free_memory(d, m, a);
}

static VKAPI_ATTR void VKAPI_CALL track_destroy_buffer(VkDevice d, VkBuffer b,
                                                       const VkAllocationCallbacks *a)
{
    interposer.busy_frees += b && in_flight_count > 0;
    real_destroy_buffer(d, b, a);
}

static VKAPI_ATTR void VKAPI_CALL track_destroy_fence(VkDevice d, VkFence f,
                                                      const VkAllocationCallbacks *a)
{
    fence_done(f);
    real_destroy_fence(d, f, a);
}

/* The functions handed out in place of the device's that track the
 * submissions in flight: the failable ones' wrappers within. */
static PFN_vkVoidFunction tracking(const char *name, PFN_vkVoidFunction real)
{
    static const struct {
        const char *name;
        PFN_vkVoidFunction *real, track;
    } table[] = {
        {"vkQueueSubmit", (PFN_vkVoidFunction *)&real_vkQueueSubmit,
         (PFN_vkVoidFunction)track_submit},
        {"vkWaitForFences", (PFN_vkVoidFunction *)&real_vkWaitForFences,
         (PFN_vkVoidFunction)track_wait},
        {"vkQueueWaitIdle", (PFN_vkVoidFunction *)&real_vkQueueWaitIdle,
         (PFN_vkVoidFunction)track_queue_idle},
        {"vkDeviceWaitIdle", (PFN_vkVoidFunction *)&real_vkDeviceWaitIdle,
         (PFN_vkVoidFunction)track_device_idle},
        {"vkFreeMemory", (PFN_vkVoidFunction *)&real_free_memory,
         (PFN_vkVoidFunction)track_free_memory},
        {"vkDestroyBuffer", (PFN_vkVoidFunction *)&real_destroy_buffer,
         (PFN_vkVoidFunction)track_destroy_buffer},
        {"vkDestroyFence", (PFN_vkVoidFunction *)&real_destroy_fence,
         (PFN_vkVoidFunction)track_destroy_fence},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(name, table[i].name) == 0) {
            *table[i].real = real;
            return table[i].track;
        }
    return NULL;
}

static PFN_vkGetPhysicalDeviceFeatures2 real_get_features2;

static VKAPI_ATTR void VKAPI_CALL get_features2(VkPhysicalDevice device,
                                                VkPhysicalDeviceFeatures2 *features)
{
    real_get_features2(device, features);
    for (VkBaseOutStructure *s = features->pNext; s && interposer.hide_buffer_device_address;
         s = s->pNext)
        if (s->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES)
            ((VkPhysicalDeviceVulkan12Features *)s)->bufferDeviceAddress = VK_FALSE;
}

static PFN_vkGetInstanceProcAddr real_get_instance_proc_addr;
static PFN_vkGetDeviceProcAddr real_get_device_proc_addr;

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL get_device_proc_addr(VkDevice device,
                                                                     const char *name)
{
    PFN_vkVoidFunction real = real_get_device_proc_addr(device, name);
    if (interposer.hide_host_pointer_properties &&
        strcmp(name, "vkGetMemoryHostPointerPropertiesEXT") == 0)
        return NULL;
    PFN_vkVoidFunction track = real ? tracking(name, real) : NULL;
    if (track)
        return track;
#define HAND_OUT(fn, lose, params, args)                                                           \
    if (real && strcmp(name, #fn) == 0) {                                                          \
        real_##fn = (PFN_##fn)real;                                                                \
        return (PFN_vkVoidFunction)wrap_##fn;                                                      \
    }
    FAILABLE(HAND_OUT)
#undef HAND_OUT
    return real;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL get_instance_proc_addr(VkInstance instance,
                                                                       const char *name)
{
    PFN_vkVoidFunction real = real_get_instance_proc_addr(instance, name);
    if (real && strcmp(name, "vkGetDeviceProcAddr") == 0) {
        real_get_device_proc_addr = (PFN_vkGetDeviceProcAddr)real;
        return (PFN_vkVoidFunction)get_device_proc_addr;
    }
#define HAND_OUT(fn, lose, params, args)                                                           \
    if (real && strcmp(name, #fn) == 0) {                                                          \
        real_##fn = (PFN_##fn)real;                                                                \
        return (PFN_vkVoidFunction)wrap_##fn;                                                      \
    }
    INSTANCE_FAILABLE(HAND_OUT)
#undef HAND_OUT
    if (real && strcmp(name, "vkGetPhysicalDeviceFeatures2") == 0) {
        real_get_features2 = (PFN_vkGetPhysicalDeviceFeatures2)real;
        return (PFN_vkVoidFunction)get_features2;
    }
    return real;
}

PFN_vkGetInstanceProcAddr interposer_entry(void)
{
    real_get_instance_proc_addr = vkmoe_vulkan_loader();
    return get_instance_proc_addr;
}

vkmoe_context *interposer_context(vkmoe_context *host, bool copy_path)
{
    vkmoe_context *ctx = NULL;
    interposer_reset();
    if (copy_path) {
        vkmoe_context_options options = {.get_instance_proc_addr = interposer_entry(),
                                         .copies_on_compute_queue = true,
                                         .discrete_memory = true};
        test_options_from_environment(&options);
        vkmoe_context_create_with(&(vkmoe_context_params){.validation = test_validation()},
                                  &options, &ctx);
        return ctx;
    }
    vkmoe_vulkan_import import = test_import_of(host);
    import.get_instance_proc_addr = interposer_entry();
    vkmoe_context_create(&(vkmoe_context_params){.import = &import}, &ctx);
    return ctx;
}

unsigned interposer_fail_in_turn(VkResult fail_with, vkmoe_status expect,
                                 vkmoe_status (*attempt)(void *user), void (*recover)(void *user),
                                 void *user)
{
    unsigned points = 0;
    /* VKMOE_TEST_TRACE_FAULTS=1: a line each failure on stderr, to find the
     * one after which a GPU's device is lost. */
    const char *trace = getenv("VKMOE_TEST_TRACE_FAULTS");
    for (unsigned at = 1;; at++) {
        interposer_reset();
        interposer.fail_at = at;
        interposer.fail_with = fail_with;
        vkmoe_status status = attempt(user);
        const char *failed = interposer.failed_function;
        unsigned busy_frees = interposer.busy_frees;
        interposer_reset();
        if (trace && *trace == '1')
            fprintf(stderr, "fault %u: %s failing gave %s (%s)\n", at, failed ? failed : "nothing",
                    vkmoe_status_string(status), vkmoe_last_error());
        if (busy_frees)
            fail_msg("%s failing: %u buffers or allocations freed while a submission ran",
                     failed ? failed : "nothing", busy_frees);
        if (!failed) {
            assert_int_equal(status, VKMOE_OK);
            return points;
        }
        if (status != expect)
            fail_msg("%s failing gave status %d (%s)", failed, (int)status, vkmoe_last_error());
        points++;
        recover(user);
        if (interposer.busy_frees)
            fail_msg("after %s failed: %u buffers or allocations freed while a submission ran",
                     failed, interposer.busy_frees);
    }
}
