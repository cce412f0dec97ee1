/* Failures: the per-thread last error, the context's log, and VkResults as
 * statuses (error.c). */
#ifndef VKMOE_ERROR_H
#define VKMOE_ERROR_H

#include "vkmoe.h"

/* Record a failure: sets the thread's last error, logs it on ctx (may be
 * NULL) and returns status, so callers write `return vkmoe_fail(...)`. */
vkmoe_status vkmoe_fail(const vkmoe_context *ctx, vkmoe_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Map a VkResult to a status; failures are recorded with `what` as context.
 * VK_ERROR_DEVICE_LOST also marks ctx as lost for good. */
vkmoe_status vkmoe_check_vk(vkmoe_context *ctx, VkResult result, const char *what);
void vkmoe_log(const vkmoe_context *ctx, vkmoe_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define VKMOE_REQUIRE(ctx, cond, ...)                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return vkmoe_fail((ctx), VKMOE_ERROR_INVALID_ARGUMENT, __VA_ARGS__);                   \
    } while (0)

#define VKMOE_TRY(expr)                                                                            \
    do {                                                                                           \
        vkmoe_status try_status_ = (expr);                                                         \
        if (try_status_ != VKMOE_OK)                                                               \
            return try_status_;                                                                    \
    } while (0)

#endif /* VKMOE_ERROR_H */
