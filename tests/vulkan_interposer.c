#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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
                                         .copies_on_compute_queue = true};
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
    for (unsigned at = 1;; at++) {
        interposer_reset();
        interposer.fail_at = at;
        interposer.fail_with = fail_with;
        vkmoe_status status = attempt(user);
        const char *failed = interposer.failed_function;
        interposer_reset();
        if (!failed) {
            assert_int_equal(status, VKMOE_OK);
            return points;
        }
        if (status != expect)
            fail_msg("%s failing gave status %d (%s)", failed, (int)status, vkmoe_last_error());
        points++;
        recover(user);
    }
}
