/* Loading the per-context Vulkan function table (vulkan_functions.h). */
#include <pthread.h>
#include <stddef.h>

#include "volk.h"

#include "vulkan_functions.h"

static pthread_once_t loader_once = PTHREAD_ONCE_INIT;
static PFN_vkGetInstanceProcAddr loader_entry;

/* volk finds and opens the platform's loader; its process globals are
 * written here once and read nowhere else in the library. */
static void find_loader(void)
{
    if (volkInitialize() == VK_SUCCESS)
        loader_entry = vkGetInstanceProcAddr;
}

PFN_vkGetInstanceProcAddr vkmoe_vulkan_loader(void)
{
    pthread_once(&loader_once, find_loader);
    return loader_entry;
}

void vkmoe_vulkan_load_loader(vkmoe_vulkan_functions *vk,
                              PFN_vkGetInstanceProcAddr get_instance_proc_addr)
{
    vk->vkGetInstanceProcAddr = get_instance_proc_addr;
#define LOAD(name) vk->name = (PFN_##name)get_instance_proc_addr(VK_NULL_HANDLE, #name);
    VKMOE_LOADER_FUNCTIONS(LOAD)
#undef LOAD
}

void vkmoe_vulkan_load_instance(vkmoe_vulkan_functions *vk, VkInstance instance)
{
#define LOAD(name) vk->name = (PFN_##name)vk->vkGetInstanceProcAddr(instance, #name);
    VKMOE_INSTANCE_FUNCTIONS(LOAD)
    VKMOE_INSTANCE_OPTIONAL_FUNCTIONS(LOAD)
#undef LOAD
}

void vkmoe_vulkan_load_device(vkmoe_vulkan_functions *vk, VkDevice device)
{
#define LOAD(name) vk->name = (PFN_##name)vk->vkGetDeviceProcAddr(device, #name);
    VKMOE_DEVICE_FUNCTIONS(LOAD)
    VKMOE_DEVICE_OPTIONAL_FUNCTIONS(LOAD)
#undef LOAD
}

const char *vkmoe_vulkan_functions_missing(const vkmoe_vulkan_functions *vk, bool device)
{
#define CHECK(name)                                                                                \
    if (!vk->name)                                                                                 \
        return #name;
    VKMOE_INSTANCE_FUNCTIONS(CHECK)
    if (device) {
        VKMOE_DEVICE_FUNCTIONS(CHECK)
    }
#undef CHECK
    return NULL;
}
