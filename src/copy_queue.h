/* The queue an expert cache's copies run on (copy_queue.c): a dedicated
 * transfer queue where the device has a family with transfer but neither
 * compute nor graphics (the copy engines of discrete GPUs, which move host
 * memory over the bus while the compute units work). Its submissions
 * signal a timeline semaphore; the compute submissions that read what
 * they copied wait for the value. Without one, copies are recorded inline
 * with the compute that reads them (expert_cache.c). */
#ifndef VKMOE_COPY_QUEUE_H
#define VKMOE_COPY_QUEUE_H

#include "context.h"

/* Command buffers recorded in turn: a copy submitted for the next layer
 * (vkmoe_layer_prefetch) may still run while the current layer records
 * its own. */
#define VKMOE_COPY_BUFFERS 4

struct vkmoe_copy_queue {
    VkQueue queue;
    uint32_t family;
    VkCommandPool pool;
    VkCommandBuffer cmd[VKMOE_COPY_BUFFERS];
    uint64_t cmd_value[VKMOE_COPY_BUFFERS]; /* what its last submission signals */
    uint32_t next;                          /* the buffer recorded next */
    VkSemaphore timeline;
    uint64_t submitted; /* the value the last submission signals */
};

/* The family of a dedicated transfer queue on device, or VKMOE_INVALID. */
uint32_t vkmoe_copy_queue_family(const vkmoe_context *ctx, VkPhysicalDevice device);
/* Copies on queue (of family) from now on: ctx->copies. */
vkmoe_status vkmoe_copy_queue_create(vkmoe_context *ctx, VkQueue queue, uint32_t family);
/* After the device is idle. */
void vkmoe_copy_queue_destroy(vkmoe_context *ctx);
/* Begin recording a copy command buffer. */
vkmoe_status vkmoe_copy_queue_begin(vkmoe_context *ctx, VkCommandBuffer *cmd);
/* End and submit it; *value is what its completion signals. */
vkmoe_status vkmoe_copy_queue_submit(vkmoe_context *ctx, uint64_t *value);
/* Wait on the host until the copies up to value completed (0: at once). */
vkmoe_status vkmoe_copy_queue_wait(vkmoe_context *ctx, uint64_t value);

#endif /* VKMOE_COPY_QUEUE_H */
