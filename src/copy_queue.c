/* A dedicated transfer queue and the timeline that orders its copies. */
#include <stdlib.h>

#include "alloc.h"
#include "copy_queue.h"
#include "pipelines.h"

uint32_t vkmoe_copy_queue_family(const vkmoe_context *ctx, VkPhysicalDevice device)
{
    VkQueueFamilyProperties families[VKMOE_QUEUE_FAMILIES];
    uint32_t count = vkmoe_context_queue_families(ctx, device, families);
    const VkQueueFlags busy = VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT;
    for (uint32_t i = 0; i < count; i++)
        if ((families[i].queueFlags & VK_QUEUE_TRANSFER_BIT) && !(families[i].queueFlags & busy))
            return i;
    return VKMOE_INVALID;
}

vkmoe_status vkmoe_copy_queue_create(vkmoe_context *ctx, VkQueue queue, uint32_t family)
{
    vkmoe_copy_queue *q = ctx->copies = vkmoe_calloc(1, sizeof(*q));
    if (!q)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    q->queue = queue;
    q->family = family;
    VkCommandPoolCreateInfo pool = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = family,
    };
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkCreateCommandPool(ctx->device, &pool, NULL, &q->pool),
                             "vkCreateCommandPool"));
    VkCommandBufferAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = q->pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = VKMOE_COPY_BUFFERS,
    };
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkAllocateCommandBuffers(ctx->device, &alloc, q->cmd),
                             "vkAllocateCommandBuffers"));
    VkSemaphoreTypeCreateInfo type = {
        .sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
        .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE,
    };
    VkSemaphoreCreateInfo info = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, .pNext = &type};
    return vkmoe_check_vk(ctx, ctx->vk.vkCreateSemaphore(ctx->device, &info, NULL, &q->timeline),
                          "vkCreateSemaphore");
}

void vkmoe_copy_queue_destroy(vkmoe_context *ctx)
{
    vkmoe_copy_queue *q = ctx->copies;
    if (!q)
        return;
    if (q->timeline)
        ctx->vk.vkDestroySemaphore(ctx->device, q->timeline, NULL);
    if (q->pool)
        ctx->vk.vkDestroyCommandPool(ctx->device, q->pool, NULL);
    free(q);
    ctx->copies = NULL;
}

vkmoe_status vkmoe_copy_queue_wait(vkmoe_context *ctx, uint64_t value)
{
    vkmoe_copy_queue *q = ctx->copies;
    if (!q || value == 0)
        return VKMOE_OK;
    VkSemaphoreWaitInfo wait = {
        .sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
        .semaphoreCount = 1,
        .pSemaphores = &q->timeline,
        .pValues = &value,
    };
    return vkmoe_check_vk(ctx, ctx->vk.vkWaitSemaphores(ctx->device, &wait, UINT64_MAX),
                          "vkWaitSemaphores");
}

vkmoe_status vkmoe_copy_queue_begin(vkmoe_context *ctx, VkCommandBuffer *cmd)
{
    vkmoe_copy_queue *q = ctx->copies;
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    /* The buffer's last copies must be done before it is recorded again. */
    VKMOE_TRY(vkmoe_copy_queue_wait(ctx, q->cmd_value[q->next]));
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    VkCommandBuffer c = q->cmd[q->next];
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkResetCommandBuffer(c, 0), "vkResetCommandBuffer"));
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkBeginCommandBuffer(c, &begin), "vkBeginCommandBuffer"));
    /* A slot a prefetch is still filling may be taken again at once. */
    vkmoe_barrier(ctx, c, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
    *cmd = c;
    return VKMOE_OK;
}

vkmoe_status vkmoe_copy_queue_submit(vkmoe_context *ctx, uint64_t *value)
{
    vkmoe_copy_queue *q = ctx->copies;
    uint64_t signal = q->submitted + 1;
    VKMOE_TRY(
        vkmoe_context_queue_submit(ctx, q->queue, q->cmd[q->next], 0, signal, VK_NULL_HANDLE));
    q->submitted = q->cmd_value[q->next] = *value = signal;
    q->next = (q->next + 1) % VKMOE_COPY_BUFFERS;
    return VKMOE_OK;
}
