/* Context: instance and device (own or imported), queue, command buffer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "context.h"
#include "copy_queue.h"
#include "pipelines.h"
#include "thread_pool.h"
#include "weights.h"

static const char validation_layer[] = "VK_LAYER_KHRONOS_validation";

/* The context's loader entry: the host's where it gave one, else the
 * platform loader's. */
static vkmoe_status load_vulkan(vkmoe_context *ctx, PFN_vkGetInstanceProcAddr get_proc)
{
    if (!get_proc)
        get_proc = ctx->options.get_instance_proc_addr;
    if (!get_proc)
        get_proc = vkmoe_vulkan_loader();
    if (!get_proc)
        return vkmoe_fail(ctx, VKMOE_ERROR_NO_DEVICE,
                          "the Vulkan loader (libvulkan.so.1) could not be loaded");
    vkmoe_vulkan_load_loader(&ctx->vk, get_proc);
    return VKMOE_OK;
}

/* The instance's functions (with `device`, the device's too) into ctx->vk;
 * UNSUPPORTED naming one they lack, as a device of a Vulkan 1.1 instance
 * lacks vkGetBufferDeviceAddress. */
static vkmoe_status load_functions(vkmoe_context *ctx, bool device)
{
    if (device)
        vkmoe_vulkan_load_device(&ctx->vk, ctx->device);
    else
        vkmoe_vulkan_load_instance(&ctx->vk, ctx->instance);
    const char *missing = vkmoe_vulkan_functions_missing(&ctx->vk, device);
    if (missing)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_context_create: the %s does not provide %s (vkmoe needs an "
                          "instance and device of Vulkan 1.2 or newer)",
                          device ? "device" : "instance", missing);
    return VKMOE_OK;
}

/* A GEMV path's shape (its depth steps in flight, its columns a
 * workgroup): the option, else the environment's variable (a GPU's best is
 * its own, for the bench to find), else the default; a value out of 1 ..
 * most is the default. */
static uint32_t gemv_shape(uint32_t option, const char *variable, uint32_t most, uint32_t fallback)
{
    uint32_t value = option;
    const char *env = getenv(variable);
    if (!value && env)
        value = (uint32_t)strtoul(env, NULL, 10);
    return value >= 1 && value <= most ? value : fallback;
}

static bool validation_wanted(const vkmoe_context_params *params)
{
    const char *env = getenv("VKMOE_VALIDATION");
    return params->validation || (env && strcmp(env, "1") == 0);
}

static bool validation_layer_present(const vkmoe_context *ctx)
{
    uint32_t count = 0;
    if (ctx->vk.vkEnumerateInstanceLayerProperties(&count, NULL) != VK_SUCCESS || count == 0)
        return false;
    VkLayerProperties *layers = vkmoe_calloc(count, sizeof(*layers));
    bool found = false;
    if (layers && ctx->vk.vkEnumerateInstanceLayerProperties(&count, layers) == VK_SUCCESS)
        for (uint32_t i = 0; i < count && !found; i++)
            found = strcmp(layers[i].layerName, validation_layer) == 0;
    free(layers);
    return found;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT type,
    const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    (void)type;
    vkmoe_context *ctx = user;
    vkmoe_log_level level = VKMOE_LOG_INFO;
    if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        atomic_fetch_add(&ctx->validation_errors, 1);
        level = VKMOE_LOG_ERROR;
    } else if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        level = VKMOE_LOG_WARNING;
    }
    vkmoe_log(ctx, level, "validation: %s", data->pMessage ? data->pMessage : "(no message)");
    return VK_FALSE;
}

static vkmoe_status create_instance(vkmoe_context *ctx, bool validation)
{
    if (validation && !validation_layer_present(ctx))
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "validation requested but %s is not installed "
                          "(Debian: vulkan-validationlayers)",
                          validation_layer);
    const char *extension = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    const char *layer = validation_layer;
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pEngineName = "vkmoe",
        .engineVersion =
            VK_MAKE_API_VERSION(0, VKMOE_VERSION_MAJOR, VKMOE_VERSION_MINOR, VKMOE_VERSION_PATCH),
        .apiVersion = VK_API_VERSION_1_2,
    };
    VkInstanceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
        .enabledLayerCount = validation ? 1 : 0,
        .ppEnabledLayerNames = &layer,
        .enabledExtensionCount = validation ? 1 : 0,
        .ppEnabledExtensionNames = &extension,
    };
    VkResult result = ctx->vk.vkCreateInstance(&info, NULL, &ctx->instance);
    if (result == VK_ERROR_INCOMPATIBLE_DRIVER)
        return vkmoe_fail(ctx, VKMOE_ERROR_NO_DEVICE, "no Vulkan 1.2 driver is installed");
    VKMOE_TRY(vkmoe_check_vk(ctx, result, "vkCreateInstance"));
    VKMOE_TRY(load_functions(ctx, false));
    if (!validation)
        return VKMOE_OK;
    VkDebugUtilsMessengerCreateInfoEXT messenger = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT,
        .pfnUserCallback = on_validation_message,
        .pUserData = ctx,
    };
    if (!ctx->vk.vkCreateDebugUtilsMessengerEXT)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "validation requested but the instance lacks %s",
                          VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    return vkmoe_check_vk(
        ctx,
        ctx->vk.vkCreateDebugUtilsMessengerEXT(ctx->instance, &messenger, NULL, &ctx->messenger),
        "vkCreateDebugUtilsMessengerEXT");
}

uint32_t vkmoe_context_queue_families(const vkmoe_context *ctx, VkPhysicalDevice device,
                                      VkQueueFamilyProperties families[VKMOE_QUEUE_FAMILIES])
{
    uint32_t count = 0;
    ctx->vk.vkGetPhysicalDeviceQueueFamilyProperties(device, &count, NULL);
    if (count > VKMOE_QUEUE_FAMILIES)
        count = VKMOE_QUEUE_FAMILIES;
    ctx->vk.vkGetPhysicalDeviceQueueFamilyProperties(device, &count, families);
    return count;
}

/* The first queue family with compute, or VKMOE_INVALID. */
static uint32_t compute_family(const vkmoe_context *ctx, VkPhysicalDevice device)
{
    VkQueueFamilyProperties families[VKMOE_QUEUE_FAMILIES];
    uint32_t count = vkmoe_context_queue_families(ctx, device, families);
    for (uint32_t i = 0; i < count; i++)
        if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            return i;
    return VKMOE_INVALID;
}

static bool device_usable(const vkmoe_context *ctx, VkPhysicalDevice device)
{
    VkPhysicalDeviceProperties props;
    ctx->vk.vkGetPhysicalDeviceProperties(device, &props);
    if (props.apiVersion < VK_API_VERSION_1_2 || compute_family(ctx, device) == VKMOE_INVALID)
        return false;
    VkPhysicalDeviceVulkan12Features v12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 features = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                          .pNext = &v12};
    ctx->vk.vkGetPhysicalDeviceFeatures2(device, &features);
    return v12.bufferDeviceAddress;
}

static int type_rank(VkPhysicalDeviceType type)
{
    switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return 1;
    default:
        return 0;
    }
}

static bool is_index(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* Pick a device by the rules documented at vkmoe_context_params.device. */
static vkmoe_status choose_device(vkmoe_context *ctx, const char *wanted)
{
    uint32_t count = 0;
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkEnumeratePhysicalDevices(ctx->instance, &count, NULL),
                             "vkEnumeratePhysicalDevices"));
    if (count == 0)
        return vkmoe_fail(ctx, VKMOE_ERROR_NO_DEVICE, "Vulkan reports no physical device");
    VkPhysicalDevice *devices = vkmoe_calloc(count, sizeof(*devices));
    if (!devices)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    vkmoe_status status =
        vkmoe_check_vk(ctx, ctx->vk.vkEnumeratePhysicalDevices(ctx->instance, &count, devices),
                       "vkEnumeratePhysicalDevices");
    int best_rank = -1;
    for (uint32_t i = 0; status == VKMOE_OK && i < count; i++) {
        VkPhysicalDeviceProperties props;
        ctx->vk.vkGetPhysicalDeviceProperties(devices[i], &props);
        int rank = type_rank(props.deviceType);
        if (wanted && *wanted)
            rank = is_index(wanted) ? (strtoul(wanted, NULL, 10) == i ? 1 : -1)
                                    : (strstr(props.deviceName, wanted) ? 1 : -1);
        if (rank > best_rank && device_usable(ctx, devices[i])) {
            best_rank = rank;
            ctx->physical_device = devices[i];
        }
    }
    free(devices);
    VKMOE_TRY(status);
    if (best_rank < 0)
        return vkmoe_fail(ctx, VKMOE_ERROR_NO_DEVICE,
                          wanted && *wanted
                              ? "no usable Vulkan device matches \"%s\" (need Vulkan 1.2, "
                                "compute and buffer device addresses)"
                              : "no usable Vulkan device%s (need Vulkan 1.2, compute and buffer "
                                "device addresses)",
                          wanted ? wanted : "");
    return VKMOE_OK;
}

/* Whether the device lists the extension. */
static bool has_extension(const vkmoe_context *ctx, VkPhysicalDevice device, const char *name)
{
    uint32_t count = 0;
    if (ctx->vk.vkEnumerateDeviceExtensionProperties(device, NULL, &count, NULL) != VK_SUCCESS)
        return false;
    VkExtensionProperties *extensions = vkmoe_calloc(count ? count : 1, sizeof(*extensions));
    bool listed = false;
    if (extensions && ctx->vk.vkEnumerateDeviceExtensionProperties(device, NULL, &count,
                                                                   extensions) >= VK_SUCCESS)
        for (uint32_t i = 0; i < count && !listed; i++)
            listed = strcmp(extensions[i].extensionName, name) == 0;
    free(extensions);
    return listed;
}

/* The one shape the matrix-core GEMM uses (shaders/common/tiled_gemm.glsl):
 * 16x16x16, f16 A and B, f32 C and result, subgroup scope. The KHR
 * extension's component types and scopes have the NV values. */
static bool gemm_shape(uint32_t m, uint32_t n, uint32_t k, VkComponentTypeNV a, VkComponentTypeNV b,
                       VkComponentTypeNV c, VkComponentTypeNV result, VkScopeNV scope)
{
    return m == 16 && n == 16 && k == 16 && a == VK_COMPONENT_TYPE_FLOAT16_NV &&
           b == VK_COMPONENT_TYPE_FLOAT16_NV && c == VK_COMPONENT_TYPE_FLOAT32_NV &&
           result == VK_COMPONENT_TYPE_FLOAT32_NV && scope == VK_SCOPE_SUBGROUP_NV;
}

/* Whether the device lists the extension and supports its feature: a
 * features struct chained to the query, whose flag is `enabled`. */
static bool feature_offered(const vkmoe_context *ctx, VkPhysicalDevice device,
                            const char *extension, void *feature, const VkBool32 *enabled)
{
    if (!has_extension(ctx, device, extension))
        return false;
    VkPhysicalDeviceFeatures2 features = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                          .pNext = feature};
    ctx->vk.vkGetPhysicalDeviceFeatures2(device, &features);
    return *enabled;
}

/* Whether the device offers VK_NV_cooperative_matrix with gemm_shape. */
static bool offers_cooperative_matrix(const vkmoe_context *ctx, VkPhysicalDevice device)
{
    VkPhysicalDeviceCooperativeMatrixFeaturesNV feature = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    VkCooperativeMatrixPropertiesNV m[64];
    uint32_t count = VKMOE_ARRAY_SIZE(m);
    for (uint32_t i = 0; i < count; i++)
        m[i] = (VkCooperativeMatrixPropertiesNV){
            .sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV};
    if (!ctx->vk.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV ||
        !feature_offered(ctx, device, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME, &feature,
                         &feature.cooperativeMatrix) ||
        ctx->vk.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(device, &count, m) < VK_SUCCESS)
        return false;
    for (uint32_t i = 0; i < count; i++)
        if (gemm_shape(m[i].MSize, m[i].NSize, m[i].KSize, m[i].AType, m[i].BType, m[i].CType,
                       m[i].DType, m[i].scope))
            return true;
    return false;
}

/* The same on VK_KHR_cooperative_matrix (AMD, Intel, current NVIDIA drivers). */
static bool offers_cooperative_matrix_khr(const vkmoe_context *ctx, VkPhysicalDevice device)
{
    VkPhysicalDeviceCooperativeMatrixFeaturesKHR feature = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR};
    VkCooperativeMatrixPropertiesKHR m[64];
    uint32_t count = VKMOE_ARRAY_SIZE(m);
    for (uint32_t i = 0; i < count; i++)
        m[i] = (VkCooperativeMatrixPropertiesKHR){
            .sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR};
    if (!ctx->vk.vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR ||
        !feature_offered(ctx, device, VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME, &feature,
                         &feature.cooperativeMatrix) ||
        ctx->vk.vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR(device, &count, m) < VK_SUCCESS)
        return false;
    for (uint32_t i = 0; i < count; i++)
        if (gemm_shape(m[i].MSize, m[i].NSize, m[i].KSize, m[i].AType, m[i].BType, m[i].CType,
                       m[i].ResultType, m[i].scope))
            return true;
    return false;
}

/* The alignment of host memory the device imports
 * (VK_EXT_external_memory_host): of addresses and sizes alike. */
static VkDeviceSize host_import_alignment(const vkmoe_context *ctx)
{
    VkPhysicalDeviceExternalMemoryHostPropertiesEXT host = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
    VkPhysicalDeviceProperties2 props = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                         .pNext = &host};
    ctx->vk.vkGetPhysicalDeviceProperties2(ctx->physical_device, &props);
    return host.minImportedHostPointerAlignment;
}

static vkmoe_status create_device(vkmoe_context *ctx)
{
    ctx->queue_family = compute_family(ctx, ctx->physical_device);
    VkPhysicalDeviceFeatures supported;
    ctx->vk.vkGetPhysicalDeviceFeatures(ctx->physical_device, &supported);
    VkPhysicalDeviceVulkan12Features supported12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 supported2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                            .pNext = &supported12};
    ctx->vk.vkGetPhysicalDeviceFeatures2(ctx->physical_device, &supported2);
    float priority = 1.0f;
    /* A dedicated transfer queue for the expert caches' copies, where the
     * device has one and timeline semaphores order them. */
    ctx->copy_family = supported12.timelineSemaphore
                           ? vkmoe_copy_queue_family(ctx, ctx->physical_device)
                           : VKMOE_INVALID;
    VkDeviceQueueCreateInfo queues[2] = {
        {
            .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
            .queueFamilyIndex = ctx->queue_family,
            .queueCount = 1,
            .pQueuePriorities = &priority,
        },
        {
            .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
            .queueFamilyIndex = ctx->copy_family,
            .queueCount = 1,
            .pQueuePriorities = &priority,
        },
    };
    /* The matrix-core shaders use fp16 and, as glslang writes every
     * cooperative-matrix module, the Vulkan memory model. */
    /* KHR where offered (its modules are the NV ones rewritten,
     * tools/spirv_khr.py), else NV. */
    bool f16_model = supported12.shaderFloat16 && supported12.vulkanMemoryModel;
    ctx->cooperative_matrix_khr =
        f16_model && offers_cooperative_matrix_khr(ctx, ctx->physical_device);
    ctx->cooperative_matrix = ctx->cooperative_matrix_khr ||
                              (f16_model && offers_cooperative_matrix(ctx, ctx->physical_device));
    VkPhysicalDeviceCooperativeMatrixFeaturesNV cooperative_matrix_nv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
        .cooperativeMatrix = VK_TRUE,
    };
    VkPhysicalDeviceCooperativeMatrixFeaturesKHR cooperative_matrix_khr = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR,
        .cooperativeMatrix = VK_TRUE,
    };
    void *cooperative_matrix = ctx->cooperative_matrix_khr ? (void *)&cooperative_matrix_khr
                               : ctx->cooperative_matrix   ? (void *)&cooperative_matrix_nv
                                                           : NULL;
    const char *extensions[4];
    uint32_t extension_count = 0;
    if (ctx->cooperative_matrix)
        extensions[extension_count++] = ctx->cooperative_matrix_khr
                                            ? VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME
                                            : VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME;
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR statistics = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pNext = cooperative_matrix,
        .pipelineExecutableInfo = VK_TRUE,
    };
    if (ctx->options.pipeline_statistics) {
        if (!has_extension(ctx, ctx->physical_device,
                           VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME))
            return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                              "pipeline statistics asked for, but the device does not offer "
                              "VK_KHR_pipeline_executable_properties");
        extensions[extension_count++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
    }
    ctx->push_descriptors =
        !ctx->options.no_push_descriptors &&
        has_extension(ctx, ctx->physical_device, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
    if (ctx->push_descriptors)
        extensions[extension_count++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    /* Host memory the device copies from without a copy of its own: an
     * expert cache's experts in a model file's pages. */
    bool host_import =
        has_extension(ctx, ctx->physical_device, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
    if (host_import)
        extensions[extension_count++] = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME;
    VkPhysicalDeviceVulkan12Features v12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .pNext = ctx->options.pipeline_statistics ? (void *)&statistics : cooperative_matrix,
        .bufferDeviceAddress = VK_TRUE,
        .shaderFloat16 = supported12.shaderFloat16, /* for fp16 arithmetic where offered */
        .vulkanMemoryModel = ctx->cooperative_matrix,
        .timelineSemaphore = supported12.timelineSemaphore,
    };
    VkPhysicalDeviceFeatures2 features = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
        .pNext = &v12,
        .features = {.shaderInt64 = supported.shaderInt64},
    };
    VkDeviceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &features,
        .queueCreateInfoCount = ctx->copy_family == VKMOE_INVALID ? 1 : 2,
        .pQueueCreateInfos = queues,
        .enabledExtensionCount = extension_count,
        .ppEnabledExtensionNames = extensions,
    };
    VKMOE_TRY(
        vkmoe_check_vk(ctx, ctx->vk.vkCreateDevice(ctx->physical_device, &info, NULL, &ctx->device),
                       "vkCreateDevice"));
    VKMOE_TRY(load_functions(ctx, true));
    ctx->push_descriptors = ctx->push_descriptors && ctx->vk.vkCmdPushDescriptorSetKHR;
    if (host_import && ctx->vk.vkGetMemoryHostPointerPropertiesEXT)
        ctx->host_import_alignment = host_import_alignment(ctx);
    ctx->vk.vkGetDeviceQueue(ctx->device, ctx->queue_family, 0, &ctx->queue);
    ctx->timeline_semaphores = supported12.timelineSemaphore;
    return VKMOE_OK;
}

/* The host's queue family must exist on its device and run compute. */
static vkmoe_status check_queue_family(vkmoe_context *ctx, uint32_t family)
{
    VkQueueFamilyProperties families[VKMOE_QUEUE_FAMILIES];
    uint32_t count = vkmoe_context_queue_families(ctx, ctx->physical_device, families);
    VKMOE_REQUIRE(ctx, family < count,
                  "vkmoe_context_create: import.queue_family %u does not exist (the device has "
                  "%u queue families)",
                  family, count);
    VKMOE_REQUIRE(ctx, families[family].queueFlags & VK_QUEUE_COMPUTE_BIT,
                  "vkmoe_context_create: import.queue_family %u does not support compute", family);
    return VKMOE_OK;
}

/* The host's copy queue: its family must exist and take transfers; the
 * timeline semaphores the host enabled, as the import's contract says. */
static vkmoe_status lent_copy_queue(vkmoe_context *ctx, const vkmoe_vulkan_import *import)
{
    VkQueueFamilyProperties families[VKMOE_QUEUE_FAMILIES];
    uint32_t count = vkmoe_context_queue_families(ctx, ctx->physical_device, families);
    uint32_t family = import->copy_queue_family;
    const VkQueueFlags copies =
        VK_QUEUE_TRANSFER_BIT | VK_QUEUE_COMPUTE_BIT | VK_QUEUE_GRAPHICS_BIT;
    VKMOE_REQUIRE(ctx, family < count && (families[family].queueFlags & copies),
                  "vkmoe_context_create: import.copy_queue_family %u does not exist or does not "
                  "take transfers",
                  family);
    ctx->timeline_semaphores = true;
    ctx->lent_copy_queue = import->copy_queue;
    if (family != ctx->queue_family)
        ctx->copy_family = family;
    return VKMOE_OK;
}

static vkmoe_status import_device(vkmoe_context *ctx, const vkmoe_vulkan_import *import)
{
    VKMOE_REQUIRE(ctx,
                  import->instance && import->physical_device && import->device && import->queue,
                  "vkmoe_context_create: import needs instance, physical_device, device and queue");
    VKMOE_REQUIRE(ctx, (import->lock_queue == NULL) == (import->unlock_queue == NULL),
                  "vkmoe_context_create: set both lock_queue and unlock_queue, or neither");
    if (import->api_version && import->api_version < VK_API_VERSION_1_2)
        return vkmoe_fail(
            ctx, VKMOE_ERROR_UNSUPPORTED,
            "vkmoe_context_create: the imported instance must be Vulkan 1.2 or newer");
    ctx->instance = import->instance;
    ctx->physical_device = import->physical_device;
    ctx->queue = import->queue;
    ctx->queue_family = import->queue_family;
    ctx->lock_queue = import->lock_queue;
    ctx->unlock_queue = import->unlock_queue;
    ctx->queue_lock_user = import->queue_lock_user;
    VKMOE_TRY(load_functions(ctx, false));
    VKMOE_TRY(check_queue_family(ctx, import->queue_family));
    /* Whether the host enabled bufferDeviceAddress cannot be asked of a
     * VkDevice; what the physical device supports can (vkmoe.h says so). */
    if (!device_usable(ctx, ctx->physical_device))
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_context_create: the imported device lacks Vulkan 1.2, compute or "
                          "buffer device addresses");
    /* Set only once its functions are there: destroy calls none of them
     * for a device it does not own. */
    ctx->device = import->device;
    VKMOE_TRY(load_functions(ctx, true));
    ctx->push_descriptors = import->push_descriptor;
    if (ctx->push_descriptors && !ctx->vk.vkCmdPushDescriptorSetKHR)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_context_create: import.push_descriptor is set but the device "
                          "does not provide vkCmdPushDescriptorSetKHR");
    if (import->external_memory_host) {
        /* Whether the host enabled it cannot be asked of a VkDevice either:
         * the import's word, checked against what the device offers. */
        if (!has_extension(ctx, ctx->physical_device, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME) ||
            !ctx->vk.vkGetMemoryHostPointerPropertiesEXT)
            return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                              "vkmoe_context_create: import.external_memory_host is set but the "
                              "device does not offer VK_EXT_external_memory_host");
        ctx->host_import_alignment = host_import_alignment(ctx);
    }
    return import->copy_queue ? lent_copy_queue(ctx, import) : VKMOE_OK;
}

/* The weight types whose texel format, and the activations' RGBA32F, the
 * driver reads through uniform texel buffers, as the GEMMs do. */
static uint32_t readable_weight_types(const vkmoe_context *ctx, VkPhysicalDevice device)
{
    const VkFormatFeatureFlags needed = VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT;
    VkFormatProperties activations;
    ctx->vk.vkGetPhysicalDeviceFormatProperties(device, VK_FORMAT_R32G32B32A32_SFLOAT,
                                                &activations);
    uint32_t types = 0;
    for (uint32_t t = 0; vkmoe_weight_block((vkmoe_weight_type)t); t++) {
        VkFormatProperties weights;
        ctx->vk.vkGetPhysicalDeviceFormatProperties(
            device, vkmoe_weight_texel_format((vkmoe_weight_type)t), &weights);
        if ((weights.bufferFeatures & activations.bufferFeatures & needed) == needed)
            types |= 1u << t;
    }
    return types;
}

static void fill_device_info(vkmoe_context *ctx)
{
    VkPhysicalDeviceDriverProperties driver = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceMaintenance3Properties maintenance3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, .pNext = &driver};
    VkPhysicalDeviceSubgroupProperties subgroup = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &maintenance3};
    VkPhysicalDeviceProperties2 props = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                         .pNext = &subgroup};
    ctx->vk.vkGetPhysicalDeviceProperties2(ctx->physical_device, &props);
    ctx->properties = props.properties;
    uint32_t *shared = &ctx->properties.limits.maxComputeSharedMemorySize;
    if (ctx->options.max_shared_memory && ctx->options.max_shared_memory < *shared)
        *shared = ctx->options.max_shared_memory;
    ctx->vk.vkGetPhysicalDeviceMemoryProperties(ctx->physical_device, &ctx->memory);

    VkPhysicalDeviceVulkan12Features v12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 features = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                          .pNext = &v12};
    ctx->vk.vkGetPhysicalDeviceFeatures2(ctx->physical_device, &features);

    VkQueueFamilyProperties families[VKMOE_QUEUE_FAMILIES];
    uint32_t family_count = vkmoe_context_queue_families(ctx, ctx->physical_device, families);

    vkmoe_device_info *info = &ctx->info;
    const VkPhysicalDeviceLimits *limits = &ctx->properties.limits;
    snprintf(info->name, sizeof(info->name), "%s", ctx->properties.deviceName);
    size_t used = (size_t)snprintf(info->driver, sizeof(info->driver), "%.120s", driver.driverName);
    snprintf(info->driver + used, sizeof(info->driver) - used, ": %.120s", driver.driverInfo);
    info->type = ctx->properties.deviceType;
    info->api_version = ctx->properties.apiVersion;
    info->vendor_id = ctx->properties.vendorID;
    info->subgroup_size = subgroup.subgroupSize;
    ctx->subgroup_arithmetic =
        (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
        (subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
    info->max_storage_buffer_range = limits->maxStorageBufferRange;
    info->max_allocation_size = maintenance3.maxMemoryAllocationSize;
    info->shared_memory = limits->maxComputeSharedMemorySize;
    info->shader_float16 = v12.shaderFloat16;
    info->weight_types = readable_weight_types(ctx, ctx->physical_device);
    info->cooperative_matrix = ctx->cooperative_matrix;
    info->push_descriptors = ctx->push_descriptors;
    info->host_memory_import = ctx->host_import_alignment != 0;
    ctx->gemm_lanes = ctx->options.gemm_lanes ? ctx->options.gemm_lanes : info->subgroup_size;
    ctx->gemv_steps = gemv_shape(ctx->options.gemv_steps, "VKMOE_GEMV_STEPS", VKMOE_GEMV_MAX_STEPS,
                                 VKMOE_GEMV_STEPS);
    ctx->gemv_columns = gemv_shape(ctx->options.gemv_columns, "VKMOE_GEMV_COLUMNS",
                                   VKMOE_GEMV_MAX_COLUMNS, VKMOE_GEMV_COLUMNS);
    if (ctx->options.max_allocation_size &&
        ctx->options.max_allocation_size < info->max_allocation_size)
        info->max_allocation_size = ctx->options.max_allocation_size;
    info->weight_types &= ~ctx->options.hidden_weight_types;
    info->timestamps = ctx->queue_family < family_count &&
                       families[ctx->queue_family].timestampValidBits > 0 &&
                       limits->timestampPeriod > 0;
    ctx->timestamp_period_ns = limits->timestampPeriod;
    for (uint32_t i = 0; i < ctx->memory.memoryHeapCount; i++)
        if ((ctx->memory.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            ctx->memory.memoryHeaps[i].size > info->device_memory)
            info->device_memory = ctx->memory.memoryHeaps[i].size;
    bool shares_host_memory = (info->type == VK_PHYSICAL_DEVICE_TYPE_CPU ||
                               info->type == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU) &&
                              !ctx->options.discrete_memory;
    const VkMemoryPropertyFlags unified = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                          VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                          VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    for (uint32_t i = 0; shares_host_memory && i < ctx->memory.memoryTypeCount; i++)
        if ((ctx->memory.memoryTypes[i].propertyFlags & unified) == unified)
            ctx->unified_memory = true;
}

/* The copy queue: the dedicated transfer queue of a device vkmoe created,
 * or in tests the compute queue itself. */
static vkmoe_status create_copy_queue(vkmoe_context *ctx)
{
    if (!ctx->timeline_semaphores)
        return VKMOE_OK;
    if (ctx->lent_copy_queue) {
        uint32_t family = ctx->copy_family != VKMOE_INVALID ? ctx->copy_family : ctx->queue_family;
        VKMOE_TRY(vkmoe_copy_queue_create(ctx, ctx->lent_copy_queue, family));
        ctx->info.copy_queue = ctx->lent_copy_queue != ctx->queue;
        return VKMOE_OK;
    }
    if (ctx->copy_family != VKMOE_INVALID) {
        VkQueue queue;
        ctx->vk.vkGetDeviceQueue(ctx->device, ctx->copy_family, 0, &queue);
        VKMOE_TRY(vkmoe_copy_queue_create(ctx, queue, ctx->copy_family));
        ctx->info.copy_queue = true;
        return VKMOE_OK;
    }
    if (ctx->options.copies_on_compute_queue)
        return vkmoe_copy_queue_create(ctx, ctx->queue, ctx->queue_family);
    return VKMOE_OK;
}

static vkmoe_status create_command_objects(vkmoe_context *ctx)
{
    VkCommandPoolCreateInfo pool = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = ctx->queue_family,
    };
    VKMOE_TRY(vkmoe_check_vk(
        ctx, ctx->vk.vkCreateCommandPool(ctx->device, &pool, NULL, &ctx->command_pool),
        "vkCreateCommandPool"));
    VkCommandBufferAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = ctx->command_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 2,
    };
    VkCommandBuffer buffers[2];
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkAllocateCommandBuffers(ctx->device, &alloc, buffers),
                             "vkAllocateCommandBuffers"));
    ctx->command_buffer = buffers[0];
    ctx->early_command_buffer = buffers[1];
    VkFenceCreateInfo fence = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkCreateFence(ctx->device, &fence, NULL, &ctx->fence),
                             "vkCreateFence"));
    VKMOE_TRY(vkmoe_check_vk(
        ctx, ctx->vk.vkCreateFence(ctx->device, &fence, NULL, &ctx->early_fence), "vkCreateFence"));
    return create_copy_queue(ctx);
}

static vkmoe_status context_init(vkmoe_context *ctx, const vkmoe_context_params *params)
{
    if (params->import) {
        VKMOE_TRY(load_vulkan(ctx, params->import->get_instance_proc_addr));
        VKMOE_TRY(import_device(ctx, params->import));
    } else {
        VKMOE_TRY(load_vulkan(ctx, NULL));
        ctx->owns_device = true;
        VKMOE_TRY(create_instance(ctx, validation_wanted(params)));
        VKMOE_TRY(choose_device(ctx, params->device));
        VKMOE_TRY(create_device(ctx));
    }
    fill_device_info(ctx);
    vkmoe_log(ctx, VKMOE_LOG_INFO, "device: %s (%s)%s", ctx->info.name, ctx->info.driver,
              ctx->unified_memory ? ", unified memory" : "");
    if (!ctx->options.compile_only)
        VKMOE_TRY(create_command_objects(ctx));
    return vkmoe_pipelines_init(ctx);
}

vkmoe_status vkmoe_context_create(const vkmoe_context_params *params, vkmoe_context **out)
{
    return vkmoe_context_create_with(params, NULL, out);
}

vkmoe_status vkmoe_context_create_with(const vkmoe_context_params *params,
                                       const vkmoe_context_options *options, vkmoe_context **out)
{
    VKMOE_REQUIRE(NULL, out, "vkmoe_context_create: out is NULL");
    *out = NULL;
    vkmoe_context_params defaults = {0};
    if (!params)
        params = &defaults;
    VKMOE_REQUIRE(NULL,
                  params->log_level >= VKMOE_LOG_ERROR && params->log_level <= VKMOE_LOG_DEBUG,
                  "vkmoe_context_create: log_level %d is out of range", (int)params->log_level);
    vkmoe_context *ctx = vkmoe_calloc(1, sizeof(*ctx));
    if (!ctx)
        return vkmoe_fail(NULL, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    ctx->copy_family = VKMOE_INVALID;
    ctx->log = params->log;
    ctx->log_user = params->log_user;
    ctx->log_level = params->log_level;
    ctx->host_huge_pages = params->host_huge_pages;
    if (options)
        ctx->options = *options;
    vkmoe_status status = context_init(ctx, params);
    if (status != VKMOE_OK) {
        vkmoe_context_destroy(&ctx);
        return status;
    }
    *out = ctx;
    return VKMOE_OK;
}

/* Free everything. Waits only for vkmoe's own last submission: an imported
 * device may be busy with the host's work, which is not ours to wait for. */
static void context_free(vkmoe_context *ctx)
{
    const vkmoe_vulkan_functions *vk = &ctx->vk;
    vkmoe_thread_pool_destroy(&ctx->cpu_pool);
    if (ctx->device && vkmoe_vulkan_functions_missing(vk, true)) {
        /* Refused for a missing function: nothing was made on it. */
        if (ctx->owns_device && vk->vkDestroyDevice)
            vk->vkDestroyDevice(ctx->device, NULL);
    } else if (ctx->device) {
        vkmoe_context_wait_pending(ctx);
        /* Without a fence nothing was ever submitted (and RADV's null
         * devices, which cannot make one, crash in vkDeviceWaitIdle). */
        if (ctx->owns_device && ctx->fence)
            vk->vkDeviceWaitIdle(ctx->device);
        vkmoe_pipelines_destroy(ctx);
        if (ctx->copies) /* an imported device is not waited idle */
            vkmoe_copy_queue_wait(ctx, ctx->copies->submitted);
        vkmoe_copy_queue_destroy(ctx);
        if (ctx->fence)
            vk->vkDestroyFence(ctx->device, ctx->fence, NULL);
        if (ctx->early_fence)
            vk->vkDestroyFence(ctx->device, ctx->early_fence, NULL);
        if (ctx->command_pool)
            vk->vkDestroyCommandPool(ctx->device, ctx->command_pool, NULL);
        if (ctx->owns_device)
            vk->vkDestroyDevice(ctx->device, NULL);
    }
    if (ctx->owns_device && ctx->instance) {
        if (ctx->messenger)
            vk->vkDestroyDebugUtilsMessengerEXT(ctx->instance, ctx->messenger, NULL);
        vk->vkDestroyInstance(ctx->instance, NULL);
    }
    free(ctx);
}

void vkmoe_context_destroy(vkmoe_context **pctx)
{
    if (!pctx || !*pctx)
        return;
    vkmoe_context *ctx = *pctx;
    *pctx = NULL;
    unsigned layers = ctx->live_layers;
    if (layers > 0) {
        /* Freeing now would leave the layers pointing at freed memory. */
        vkmoe_log(ctx, VKMOE_LOG_ERROR,
                  "vkmoe_context_destroy: %u layer(s) of the context are still alive; the context "
                  "goes with the last of them (destroy layers first)",
                  layers);
        ctx->destroy_pending = true;
        return;
    }
    context_free(ctx);
}

/* Before destroying what a submission uses: a failed wait (out of memory,
 * a lost device, which returns at once) leaves nothing better to do than
 * go on. */
static void wait_fence(vkmoe_context *ctx, VkFence fence, bool *pending)
{
    if (!*pending)
        return;
    if (ctx->vk.vkWaitForFences(ctx->device, 1, &fence, VK_TRUE, UINT64_MAX) == VK_SUCCESS)
        ctx->vk.vkResetFences(ctx->device, 1, &fence);
    *pending = false;
}

/* The same where the context goes on: a failed wait (a fence waited for
 * in the same forward that submitted it, or again after a failure) is the
 * caller's status, and leaves the fence pending for the next use to wait
 * again. */
static vkmoe_status finish_fence(vkmoe_context *ctx, VkFence fence, bool *pending)
{
    if (!*pending)
        return VKMOE_OK;
    VKMOE_TRY(vkmoe_check_vk(ctx,
                             ctx->vk.vkWaitForFences(ctx->device, 1, &fence, VK_TRUE, UINT64_MAX),
                             "vkWaitForFences"));
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkResetFences(ctx->device, 1, &fence), "vkResetFences"));
    *pending = false;
    return VKMOE_OK;
}

void vkmoe_context_wait_pending(vkmoe_context *ctx)
{
    wait_fence(ctx, ctx->fence, &ctx->fence_pending);
    wait_fence(ctx, ctx->early_fence, &ctx->early_pending);
}

void vkmoe_context_add_layer(vkmoe_context *ctx) { ctx->live_layers++; }

void vkmoe_context_remove_layer(vkmoe_context *ctx)
{
    if (--ctx->live_layers == 0 && ctx->destroy_pending)
        context_free(ctx);
}

vkmoe_status vkmoe_device_count(uint32_t *count)
{
    VKMOE_REQUIRE(NULL, count, "vkmoe_device_count: count is NULL");
    *count = 0;
    vkmoe_context probe = {0};
    if (load_vulkan(&probe, NULL) != VKMOE_OK || create_instance(&probe, false) != VKMOE_OK) {
        if (probe.instance && probe.vk.vkDestroyInstance)
            probe.vk.vkDestroyInstance(probe.instance, NULL);
        return VKMOE_OK;
    }
    uint32_t n = 0;
    VkPhysicalDevice devices[64];
    probe.vk.vkEnumeratePhysicalDevices(probe.instance, &n, NULL);
    if (n > VKMOE_ARRAY_SIZE(devices))
        n = VKMOE_ARRAY_SIZE(devices);
    if (probe.vk.vkEnumeratePhysicalDevices(probe.instance, &n, devices) >= 0)
        for (uint32_t i = 0; i < n; i++)
            *count += device_usable(&probe, devices[i]);
    probe.vk.vkDestroyInstance(probe.instance, NULL);
    return VKMOE_OK;
}

vkmoe_status vkmoe_context_device_info(const vkmoe_context *ctx, vkmoe_device_info *info)
{
    VKMOE_REQUIRE(ctx, ctx && info, "vkmoe_context_device_info: ctx and info must not be NULL");
    *info = ctx->info;
    return VKMOE_OK;
}

uint32_t vkmoe_context_validation_errors(const vkmoe_context *ctx)
{
    return ctx ? atomic_load(&((vkmoe_context *)ctx)->validation_errors) : 0;
}

bool vkmoe_context_cpu_shaped(const vkmoe_context *ctx)
{
    return ctx->info.type == VK_PHYSICAL_DEVICE_TYPE_CPU && !ctx->options.auto_as_gpu;
}

vkmoe_status vkmoe_context_check_alive(const vkmoe_context *ctx)
{
    if (atomic_load(&((vkmoe_context *)ctx)->lost))
        return vkmoe_fail(ctx, VKMOE_ERROR_DEVICE_LOST,
                          "the device was lost earlier; destroy and recreate the context");
    return VKMOE_OK;
}

vkmoe_status vkmoe_context_begin(vkmoe_context *ctx, VkCommandBuffer *cmd)
{
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    VKMOE_TRY(finish_fence(ctx, ctx->fence, &ctx->fence_pending));
    VKMOE_TRY(finish_fence(ctx, ctx->early_fence, &ctx->early_pending));
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkResetCommandBuffer(ctx->command_buffer, 0),
                             "vkResetCommandBuffer"));
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkBeginCommandBuffer(ctx->command_buffer, &begin),
                             "vkBeginCommandBuffer"));
    *cmd = ctx->command_buffer;
    return VKMOE_OK;
}

vkmoe_status vkmoe_context_queue_submit(vkmoe_context *ctx, VkQueue queue, VkCommandBuffer cmd,
                                        uint64_t wait, uint64_t signal, VkFence fence)
{
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkEndCommandBuffer(cmd), "vkEndCommandBuffer"));
    VkPipelineStageFlags stage =
        VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    VkTimelineSemaphoreSubmitInfo timeline = {
        .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
        .waitSemaphoreValueCount = wait ? 1 : 0,
        .pWaitSemaphoreValues = &wait,
        .signalSemaphoreValueCount = signal ? 1 : 0,
        .pSignalSemaphoreValues = &signal,
    };
    VkSubmitInfo info = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .pNext = wait || signal ? &timeline : NULL,
        .waitSemaphoreCount = wait ? 1 : 0,
        .pWaitSemaphores = wait ? &ctx->copies->timeline : NULL,
        .pWaitDstStageMask = &stage,
        .commandBufferCount = 1,
        .pCommandBuffers = &cmd,
        .signalSemaphoreCount = signal ? 1 : 0,
        .pSignalSemaphores = signal ? &ctx->copies->timeline : NULL,
    };
    /* The compute queue may be the host's, shared under its lock. */
    bool shared = queue == ctx->queue;
    if (shared && ctx->lock_queue)
        ctx->lock_queue(ctx->queue_lock_user);
    VkResult result = ctx->vk.vkQueueSubmit(queue, 1, &info, fence);
    if (shared && ctx->unlock_queue)
        ctx->unlock_queue(ctx->queue_lock_user);
    return vkmoe_check_vk(ctx, result, "vkQueueSubmit");
}

/* Submit cmd with fence after the copy queue's timeline reaches copies. */
static vkmoe_status submit(vkmoe_context *ctx, VkCommandBuffer cmd, VkFence fence, bool *pending,
                           uint64_t copies)
{
    VKMOE_TRY(vkmoe_context_queue_submit(ctx, ctx->queue, cmd, copies, 0, fence));
    /* Until the fence is waited for and reset, a failure leaves it pending
     * for vkmoe_context_wait_pending. */
    *pending = true;
    return VKMOE_OK;
}

vkmoe_status vkmoe_context_submit_wait_after(vkmoe_context *ctx, uint64_t copies)
{
    VKMOE_TRY(submit(ctx, ctx->command_buffer, ctx->fence, &ctx->fence_pending, copies));
    VkResult result;
    while ((result = ctx->vk.vkWaitForFences(ctx->device, 1, &ctx->fence, VK_TRUE,
                                             ctx->while_waiting ? 50000 : UINT64_MAX)) ==
               VK_TIMEOUT &&
           ctx->while_waiting)
        ctx->while_waiting(ctx->while_waiting_user);
    VKMOE_TRY(vkmoe_check_vk(ctx, result, "vkWaitForFences"));
    VKMOE_TRY(
        vkmoe_check_vk(ctx, ctx->vk.vkResetFences(ctx->device, 1, &ctx->fence), "vkResetFences"));
    ctx->fence_pending = false;
    /* The early submission, earlier on the queue, is done too. */
    return finish_fence(ctx, ctx->early_fence, &ctx->early_pending);
}

vkmoe_status vkmoe_context_submit_wait(vkmoe_context *ctx)
{
    return vkmoe_context_submit_wait_after(ctx, 0);
}

vkmoe_status vkmoe_context_begin_early(vkmoe_context *ctx, VkCommandBuffer *cmd)
{
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    VKMOE_TRY(finish_fence(ctx, ctx->early_fence, &ctx->early_pending));
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    VkCommandBuffer c = ctx->early_command_buffer;
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkResetCommandBuffer(c, 0), "vkResetCommandBuffer"));
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkBeginCommandBuffer(c, &begin), "vkBeginCommandBuffer"));
    *cmd = c;
    return VKMOE_OK;
}

vkmoe_status vkmoe_context_submit_early(vkmoe_context *ctx, uint64_t copies)
{
    return submit(ctx, ctx->early_command_buffer, ctx->early_fence, &ctx->early_pending, copies);
}
