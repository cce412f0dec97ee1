/* Every Vulkan function vkmoe calls, in one list, loaded into one table per
 * context (vkmoe_context.vk). Nothing in the library calls Vulkan through
 * process globals: two contexts made on two threads, or on two instances
 * with different loaders (an imported get_instance_proc_addr), never share
 * or overwrite a pointer. A function missing from these lists does not
 * compile; one the driver does not provide is caught by
 * vkmoe_vulkan_functions_missing before anything calls it. */
#ifndef VKMOE_VULKAN_FUNCTIONS_H
#define VKMOE_VULKAN_FUNCTIONS_H

#include <stdbool.h>

#include <vulkan/vulkan.h>

#ifndef VK_KHR_cooperative_matrix
/* VK_KHR_cooperative_matrix (Vulkan 1.3.255) as the registry defines it, for
 * the 1.3.239 headers of Debian 12, which lack it. Its component types and
 * scopes have the NV extension's values. */
#define VK_KHR_cooperative_matrix 1
#define VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME "VK_KHR_cooperative_matrix"
#define VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR                          \
    ((VkStructureType)1000506000)
#define VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR ((VkStructureType)1000506001)
typedef VkComponentTypeNV VkComponentTypeKHR;
typedef VkScopeNV VkScopeKHR;
typedef struct VkCooperativeMatrixPropertiesKHR {
    VkStructureType sType;
    void *pNext;
    uint32_t MSize, NSize, KSize;
    VkComponentTypeKHR AType, BType, CType, ResultType;
    VkBool32 saturatingAccumulation;
    VkScopeKHR scope;
} VkCooperativeMatrixPropertiesKHR;
typedef struct VkPhysicalDeviceCooperativeMatrixFeaturesKHR {
    VkStructureType sType;
    void *pNext;
    VkBool32 cooperativeMatrix, cooperativeMatrixRobustBufferAccess;
} VkPhysicalDeviceCooperativeMatrixFeaturesKHR;
typedef VkResult(VKAPI_PTR *PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)(
    VkPhysicalDevice, uint32_t *, VkCooperativeMatrixPropertiesKHR *);
#endif

/* Loaded with a NULL instance: creating an instance and looking at layers. */
#define VKMOE_LOADER_FUNCTIONS(X)                                                                  \
    X(vkCreateInstance)                                                                            \
    X(vkEnumerateInstanceLayerProperties)

/* Loaded from the instance; every one is Vulkan 1.1 core. */
#define VKMOE_INSTANCE_FUNCTIONS(X)                                                                \
    X(vkDestroyInstance)                                                                           \
    X(vkEnumeratePhysicalDevices)                                                                  \
    X(vkEnumerateDeviceExtensionProperties)                                                        \
    X(vkGetPhysicalDeviceProperties)                                                               \
    X(vkGetPhysicalDeviceProperties2)                                                              \
    X(vkGetPhysicalDeviceFeatures)                                                                 \
    X(vkGetPhysicalDeviceFeatures2)                                                                \
    X(vkGetPhysicalDeviceQueueFamilyProperties)                                                    \
    X(vkGetPhysicalDeviceMemoryProperties)                                                         \
    X(vkGetPhysicalDeviceFormatProperties)                                                         \
    X(vkCreateDevice)                                                                              \
    X(vkGetDeviceProcAddr)

/* From the instance, where its extension is there; callers check for NULL. */
#define VKMOE_INSTANCE_OPTIONAL_FUNCTIONS(X)                                                       \
    X(vkCreateDebugUtilsMessengerEXT)                                                              \
    X(vkDestroyDebugUtilsMessengerEXT)                                                             \
    X(vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)                                            \
    X(vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)

/* From the device. vkGetBufferDeviceAddress is Vulkan 1.2 core: a device of
 * a 1.1 instance does not give it, and is refused for that. */
#define VKMOE_DEVICE_FUNCTIONS(X)                                                                  \
    X(vkDestroyDevice)                                                                             \
    X(vkGetDeviceQueue)                                                                            \
    X(vkDeviceWaitIdle)                                                                            \
    X(vkQueueSubmit)                                                                               \
    X(vkCreateFence)                                                                               \
    X(vkDestroyFence)                                                                              \
    X(vkWaitForFences)                                                                             \
    X(vkResetFences)                                                                               \
    X(vkCreateCommandPool)                                                                         \
    X(vkDestroyCommandPool)                                                                        \
    X(vkAllocateCommandBuffers)                                                                    \
    X(vkResetCommandBuffer)                                                                        \
    X(vkBeginCommandBuffer)                                                                        \
    X(vkEndCommandBuffer)                                                                          \
    X(vkCreateBuffer)                                                                              \
    X(vkDestroyBuffer)                                                                             \
    X(vkGetBufferMemoryRequirements)                                                               \
    X(vkAllocateMemory)                                                                            \
    X(vkFreeMemory)                                                                                \
    X(vkBindBufferMemory)                                                                          \
    X(vkMapMemory)                                                                                 \
    X(vkGetBufferDeviceAddress)                                                                    \
    X(vkCreateBufferView)                                                                          \
    X(vkDestroyBufferView)                                                                         \
    X(vkCreateShaderModule)                                                                        \
    X(vkDestroyShaderModule)                                                                       \
    X(vkCreateComputePipelines)                                                                    \
    X(vkDestroyPipeline)                                                                           \
    X(vkCreatePipelineLayout)                                                                      \
    X(vkDestroyPipelineLayout)                                                                     \
    X(vkCreateDescriptorSetLayout)                                                                 \
    X(vkDestroyDescriptorSetLayout)                                                                \
    X(vkCreateDescriptorPool)                                                                      \
    X(vkDestroyDescriptorPool)                                                                     \
    X(vkAllocateDescriptorSets)                                                                    \
    X(vkUpdateDescriptorSets)                                                                      \
    X(vkCreateQueryPool)                                                                           \
    X(vkDestroyQueryPool)                                                                          \
    X(vkGetQueryPoolResults)                                                                       \
    X(vkCmdBindPipeline)                                                                           \
    X(vkCmdBindDescriptorSets)                                                                     \
    X(vkCmdPushConstants)                                                                          \
    X(vkCmdDispatch)                                                                               \
    X(vkCmdDispatchIndirect)                                                                       \
    X(vkCmdPipelineBarrier)                                                                        \
    X(vkCmdCopyBuffer)                                                                             \
    X(vkCmdUpdateBuffer)                                                                           \
    X(vkCmdResetQueryPool)                                                                         \
    X(vkCmdWriteTimestamp)                                                                         \
    X(vkQueueWaitIdle)                                                                             \
    X(vkCreateSemaphore)                                                                           \
    X(vkDestroySemaphore)                                                                          \
    X(vkWaitSemaphores)

/* From the device, where its extension is enabled; callers check for NULL. */
#define VKMOE_DEVICE_OPTIONAL_FUNCTIONS(X)                                                         \
    X(vkCmdPushDescriptorSetKHR)                                                                   \
    X(vkGetMemoryHostPointerPropertiesEXT)                                                         \
    X(vkGetPipelineExecutablePropertiesKHR)                                                        \
    X(vkGetPipelineExecutableStatisticsKHR)                                                        \
    X(vkGetPipelineExecutableInternalRepresentationsKHR)

typedef struct vkmoe_vulkan_functions {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
#define VKMOE_FUNCTION_FIELD(name) PFN_##name name;
    VKMOE_LOADER_FUNCTIONS(VKMOE_FUNCTION_FIELD)
    VKMOE_INSTANCE_FUNCTIONS(VKMOE_FUNCTION_FIELD)
    VKMOE_INSTANCE_OPTIONAL_FUNCTIONS(VKMOE_FUNCTION_FIELD)
    VKMOE_DEVICE_FUNCTIONS(VKMOE_FUNCTION_FIELD)
    VKMOE_DEVICE_OPTIONAL_FUNCTIONS(VKMOE_FUNCTION_FIELD)
#undef VKMOE_FUNCTION_FIELD
} vkmoe_vulkan_functions;

/* The Vulkan loader's vkGetInstanceProcAddr (libvulkan.so.1, found by volk
 * once per process); NULL when there is no loader. Thread-safe. */
PFN_vkGetInstanceProcAddr vkmoe_vulkan_loader(void);

/* Fill the loader-level functions from get_instance_proc_addr. */
void vkmoe_vulkan_load_loader(vkmoe_vulkan_functions *vk,
                              PFN_vkGetInstanceProcAddr get_instance_proc_addr);
/* Fill the instance-level functions of instance. */
void vkmoe_vulkan_load_instance(vkmoe_vulkan_functions *vk, VkInstance instance);
/* Fill the device-level functions of device (vk->vkGetDeviceProcAddr set). */
void vkmoe_vulkan_load_device(vkmoe_vulkan_functions *vk, VkDevice device);
/* The name of the first required instance (device: with `device`) function
 * the table lacks, or NULL when it has them all. */
const char *vkmoe_vulkan_functions_missing(const vkmoe_vulkan_functions *vk, bool device);

#endif /* VKMOE_VULKAN_FUNCTIONS_H */
