/* Buffers with device addresses, texel views, host<->device copies
 * (memory.c). */
#ifndef VKMOE_MEMORY_H
#define VKMOE_MEMORY_H

#include "context.h"

typedef enum vkmoe_memory_use {
    VKMOE_MEMORY_DEVICE, /* device-local; mapped only on unified-memory devices */
    VKMOE_MEMORY_HOST,   /* host-visible and coherent, for staging */
    /* host-visible and coherent, and cached where the device offers it:
     * memory the host reads (read-backs, the CPU experts' routes), which
     * write-combined memory would make slow */
    VKMOE_MEMORY_HOST_CACHED,
    /* memory the host streams through and the device only copies from (an
     * expert cache's host arrays, which CPU experts read): with
     * host_huge_pages, pages of the process's own in huge pages
     * (vkmoe_map_pages), imported, where the device imports host memory;
     * else as HOST_CACHED. A bench (Zen 4
     * VM, 302 MB, eight random 2.4 MB runs at a time, two threads): 23-25
     * GB/s on average in huge pages, 20-21 in 4 KiB ones. */
    VKMOE_MEMORY_HOST_STREAMED,
} vkmoe_memory_use;

typedef struct vkmoe_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    VkDeviceAddress address;
    void *mapped; /* NULL unless host-visible */
    /* Bytes of the process's own pages at `mapped` (HOST_STREAMED), which
     * the buffer releases; 0: the driver's or the caller's memory. */
    size_t own_bytes;
} vkmoe_buffer;

/* info's sharing: concurrent between the compute and copy queues' families
 * where they differ (families: room for both), else exclusive. */
void vkmoe_buffer_sharing(const vkmoe_context *ctx, VkBufferCreateInfo *info, uint32_t families[2]);
vkmoe_status vkmoe_buffer_create(vkmoe_context *ctx, VkDeviceSize size, vkmoe_memory_use use,
                                 vkmoe_buffer *out);
void vkmoe_buffer_destroy(vkmoe_context *ctx, vkmoe_buffer *buffer);
/* A buffer over the caller's host memory [data, data + size) through
 * VK_EXT_external_memory_host, for the device to copy from: no copy made.
 * data and size must be multiples of ctx->host_import_alignment, and the
 * memory must stay mapped, readable and unchanged until the buffer is
 * destroyed. UNSUPPORTED where the device offers no import, or refuses
 * this memory (a driver may take anonymous memory only). out->mapped is
 * data. */
vkmoe_status vkmoe_buffer_import_host(vkmoe_context *ctx, const void *data, VkDeviceSize size,
                                      vkmoe_buffer *out);
/* A texel view of the first `range` bytes of buf; UNSUPPORTED when they
 * hold more texels than the device's maxTexelBufferElements. */
vkmoe_status vkmoe_buffer_view_create(vkmoe_context *ctx, const vkmoe_buffer *buf, VkFormat format,
                                      VkDeviceSize range, VkBufferView *out);
/* Copy `rows` rows of row_bytes each from host memory into buf at offset,
 * with consecutive destination rows dst_stride bytes apart and the gap
 * zero-filled. Waits for completion. */
vkmoe_status vkmoe_buffer_write_rows(vkmoe_context *ctx, const vkmoe_buffer *buf,
                                     VkDeviceSize offset, const void *src, uint64_t rows,
                                     uint64_t row_bytes, uint64_t dst_stride);
/* Copy size bytes at offset of buf to host memory; waits for completion. */
vkmoe_status vkmoe_buffer_read(vkmoe_context *ctx, const vkmoe_buffer *buf, VkDeviceSize offset,
                               void *dst, VkDeviceSize size);

#endif /* VKMOE_MEMORY_H */
