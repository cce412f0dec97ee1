/* Status codes, the per-thread last error and logging. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "context.h"

/* Per thread, so that a failed create (which has no object to hold a
 * message) reports the same way as every other call. */
static _Thread_local char last_error[512];

const char *vkmoe_status_string(vkmoe_status status)
{
    switch (status) {
    case VKMOE_OK:
        return "success";
    case VKMOE_ERROR_INVALID_ARGUMENT:
        return "invalid argument";
    case VKMOE_ERROR_UNSUPPORTED:
        return "unsupported";
    case VKMOE_ERROR_NO_DEVICE:
        return "no suitable Vulkan device";
    case VKMOE_ERROR_OUT_OF_HOST_MEMORY:
        return "out of host memory";
    case VKMOE_ERROR_OUT_OF_DEVICE_MEMORY:
        return "out of device memory";
    case VKMOE_ERROR_DEVICE_LOST:
        return "device lost";
    case VKMOE_ERROR_VULKAN:
        return "Vulkan error";
    case VKMOE_ERROR_STATE:
        return "call out of order";
    case VKMOE_ERROR_FILE_FORMAT:
        return "malformed model file";
    case VKMOE_ERROR_IO:
        return "model file could not be read";
    case VKMOE_ERROR_CANCELLED:
        return "cancelled";
    case VKMOE_ERROR_PEER:
        return "another rank failed";
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
    /* The log callback gets a copy of its own: a vkmoe call that fails
     * inside the callback rewrites last_error, never the message the
     * callback holds. Afterwards last_error is this call's again. */
    char message[sizeof(last_error)];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    memcpy(last_error, message, sizeof(message));
    log_message(ctx, VKMOE_LOG_ERROR, message);
    memcpy(last_error, message, sizeof(message));
    return status;
}

/* The VkResults a Vulkan call may return, by name. */
#define VK_RESULTS(X)                                                                              \
    X(VK_NOT_READY)                                                                                \
    X(VK_TIMEOUT)                                                                                  \
    X(VK_EVENT_SET)                                                                                \
    X(VK_EVENT_RESET)                                                                              \
    X(VK_INCOMPLETE)                                                                               \
    X(VK_ERROR_OUT_OF_HOST_MEMORY)                                                                 \
    X(VK_ERROR_OUT_OF_DEVICE_MEMORY)                                                               \
    X(VK_ERROR_INITIALIZATION_FAILED)                                                              \
    X(VK_ERROR_DEVICE_LOST)                                                                        \
    X(VK_ERROR_MEMORY_MAP_FAILED)                                                                  \
    X(VK_ERROR_LAYER_NOT_PRESENT)                                                                  \
    X(VK_ERROR_EXTENSION_NOT_PRESENT)                                                              \
    X(VK_ERROR_FEATURE_NOT_PRESENT)                                                                \
    X(VK_ERROR_INCOMPATIBLE_DRIVER)                                                                \
    X(VK_ERROR_TOO_MANY_OBJECTS)                                                                   \
    X(VK_ERROR_FORMAT_NOT_SUPPORTED)                                                               \
    X(VK_ERROR_FRAGMENTED_POOL)                                                                    \
    X(VK_ERROR_UNKNOWN)                                                                            \
    X(VK_ERROR_OUT_OF_POOL_MEMORY)                                                                 \
    X(VK_ERROR_INVALID_EXTERNAL_HANDLE)                                                            \
    X(VK_ERROR_FRAGMENTATION)                                                                      \
    X(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)                                                     \
    X(VK_PIPELINE_COMPILE_REQUIRED)                                                                \
    X(VK_ERROR_VALIDATION_FAILED_EXT)

static const char *vk_result_name(VkResult result)
{
    switch (result) {
#define NAME(r)                                                                                    \
    case r:                                                                                        \
        return #r;
        VK_RESULTS(NAME)
#undef NAME
    default:
        return "an unknown VkResult";
    }
}

vkmoe_status vkmoe_check_vk(vkmoe_context *ctx, VkResult result, const char *what)
{
    if (result == VK_SUCCESS)
        return VKMOE_OK;
    vkmoe_status status = VKMOE_ERROR_VULKAN;
    switch (result) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        status = VKMOE_ERROR_OUT_OF_HOST_MEMORY;
        break;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        status = VKMOE_ERROR_OUT_OF_DEVICE_MEMORY;
        break;
    case VK_ERROR_DEVICE_LOST:
        status = VKMOE_ERROR_DEVICE_LOST;
        if (ctx)
            atomic_store(&ctx->lost, true);
        break;
    default:
        break;
    }
    return vkmoe_fail(ctx, status, "%s failed: %s (%d)", what, vk_result_name(result), (int)result);
}
