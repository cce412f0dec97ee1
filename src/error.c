/* Status codes, the per-thread last error and logging. */
#include <stdio.h>

#include "internal.h"

/* Per thread, so that a failed create (which has no object to hold a
 * message) reports the same way as every other call. */
static _Thread_local char last_error[512];

const char *vkmoe_status_string(vkmoe_status status)
{
    switch (status) {
    case VKMOE_OK: return "success";
    case VKMOE_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case VKMOE_ERROR_UNSUPPORTED: return "unsupported";
    case VKMOE_ERROR_NO_DEVICE: return "no suitable Vulkan device";
    case VKMOE_ERROR_OUT_OF_HOST_MEMORY: return "out of host memory";
    case VKMOE_ERROR_OUT_OF_DEVICE_MEMORY: return "out of device memory";
    case VKMOE_ERROR_DEVICE_LOST: return "device lost";
    case VKMOE_ERROR_VULKAN: return "Vulkan error";
    case VKMOE_ERROR_STATE: return "call out of order";
    case VKMOE_ERROR_FILE_FORMAT: return "malformed model file";
    case VKMOE_ERROR_IO: return "model file could not be read";
    }
    return "unknown status";
}

const char *vkmoe_last_error(void) { return last_error; }

static void log_message(const vkmoe_context *ctx, vkmoe_log_level level, const char *message)
{
    if (ctx && ctx->log && level <= ctx->log_level)
        ctx->log(ctx->log_user, level, message);
}

void vkmoe_log(const vkmoe_context *ctx, vkmoe_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log || level > ctx->log_level)
        return;
    char message[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    log_message(ctx, level, message);
}

vkmoe_status vkmoe_fail(const vkmoe_context *ctx, vkmoe_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, args);
    va_end(args);
    log_message(ctx, VKMOE_LOG_ERROR, last_error);
    return status;
}

static const char *vk_result_name(VkResult result)
{
    switch (result) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    default: return "VkResult";
    }
}

vkmoe_status vkmoe_check_vk(vkmoe_context *ctx, VkResult result, const char *what)
{
    if (result == VK_SUCCESS)
        return VKMOE_OK;
    vkmoe_status status = VKMOE_ERROR_VULKAN;
    switch (result) {
    case VK_ERROR_OUT_OF_HOST_MEMORY: status = VKMOE_ERROR_OUT_OF_HOST_MEMORY; break;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: status = VKMOE_ERROR_OUT_OF_DEVICE_MEMORY; break;
    case VK_ERROR_DEVICE_LOST:
        status = VKMOE_ERROR_DEVICE_LOST;
        if (ctx)
            atomic_store(&ctx->lost, true);
        break;
    default: break;
    }
    return vkmoe_fail(ctx, status, "%s failed: %s (%d)", what, vk_result_name(result), (int)result);
}
