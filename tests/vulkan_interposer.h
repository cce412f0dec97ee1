/* A Vulkan loader entry for imported contexts (vkmoe_vulkan_import's
 * get_instance_proc_addr) that hands out the real functions, except the
 * device functions that can fail: those are wrapped to count their calls,
 * to see whether the queue is locked when it is used, and to fail on
 * demand (fault injection). One process-wide state: single-threaded tests
 * only. */
#ifndef VKMOE_TEST_VULKAN_INTERPOSER_H
#define VKMOE_TEST_VULKAN_INTERPOSER_H

#include <stdbool.h>

#include "context.h"

typedef struct interposer_state {
    /* The fail_at-th failable call (counting from 1) returns fail_with
     * without reaching the driver; 0: none fails. */
    unsigned fail_at;
    VkResult fail_with;
    /* Only calls of functions that can return fail_with count (device loss
     * comes only from the queue and wait functions). */
    unsigned failable_calls;
    const char *failed_function; /* the one that failed, or NULL */
    unsigned device_wait_idle_calls;
    /* Queue calls made while queue_locked was false (the test's lock
     * callbacks set it). */
    unsigned unlocked_queue_calls;
    bool queue_locked;
    /* vkGetPhysicalDeviceFeatures2 reports no bufferDeviceAddress, as a
     * device without the feature would. */
    bool hide_buffer_device_address;
    /* vkGetDeviceProcAddr hands out no vkGetMemoryHostPointerPropertiesEXT,
     * as for a device created without VK_EXT_external_memory_host. */
    bool hide_host_pointer_properties;
    /* Buffers destroyed and memory freed while a submission with a fence
     * had not been seen to complete (a successful wait for its fence, or
     * for the device or queue to go idle): a GPU may still be reading or
     * writing them (on the H200 a device was lost so: stop 46). */
    unsigned busy_frees;
} interposer_state;

extern interposer_state interposer;

/* Reset the counters and failure plan. */
void interposer_reset(void);
/* The entry to import with, wrapping the real loader's. */
PFN_vkGetInstanceProcAddr interposer_entry(void);

/* attempt(user) with its at-th failable call failing with fail_with, for
 * at = 1, 2, … until an attempt meets no failure, which must succeed; each
 * failed attempt must return `expect`, after which recover(user) runs with
 * nothing failing (and checks what it must). Neither may free device memory
 * or destroy a buffer while a submission is still running (busy_frees).
 * How many calls failed in turn. */
unsigned interposer_fail_in_turn(VkResult fail_with, vkmoe_status expect,
                                 vkmoe_status (*attempt)(void *user), void (*recover)(void *user),
                                 void *user);

/* A context whose Vulkan calls go through the interposer (counters
 * reset): an import of host's device, whose expert caches copy inline, or
 * with `copy_path` a device of its own, validated, whose caches' copies
 * take the copy queue's path (on its compute queue) and whose memory is
 * a discrete GPU's (staging copies: options.discrete_memory). NULL on
 * failure. */
vkmoe_context *interposer_context(vkmoe_context *host, bool copy_path);

#endif
