/* Buffers with device addresses, and host<->device copies. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "memory.h"

/* Uploads and downloads go through staging buffers of at most this size. */
#define STAGING_BYTES ((VkDeviceSize)64 << 20)

static uint32_t find_memory_type(const vkmoe_context *ctx, uint32_t allowed,
                                 VkMemoryPropertyFlags wanted)
{
    for (uint32_t i = 0; i < ctx->memory.memoryTypeCount; i++)
        if ((allowed & (1u << i)) && (ctx->memory.memoryTypes[i].propertyFlags & wanted) == wanted)
            return i;
    return VKMOE_INVALID;
}

static VkMemoryPropertyFlags memory_flags(const vkmoe_context *ctx, vkmoe_memory_use use)
{
    const VkMemoryPropertyFlags host =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    if (use == VKMOE_MEMORY_HOST)
        return host;
    if (use == VKMOE_MEMORY_HOST_CACHED || use == VKMOE_MEMORY_HOST_STREAMED)
        return host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    return VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | (ctx->unified_memory ? host : 0);
}

static vkmoe_status allocate_memory(vkmoe_context *ctx, vkmoe_buffer *buf, vkmoe_memory_use use)
{
    VkMemoryRequirements req;
    ctx->vk.vkGetBufferMemoryRequirements(ctx->device, buf->buffer, &req);
    VkMemoryPropertyFlags flags = memory_flags(ctx, use);
    uint32_t type = find_memory_type(ctx, req.memoryTypeBits, flags);
    if (flags & VK_MEMORY_PROPERTY_HOST_CACHED_BIT && type == VKMOE_INVALID) {
        flags &= ~(VkMemoryPropertyFlags)VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
        type = find_memory_type(ctx, req.memoryTypeBits, flags);
    }
    if (type == VKMOE_INVALID)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "no Vulkan memory type with properties 0x%x for a buffer", flags);
    VkMemoryAllocateFlagsInfo address_flag = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
        .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT,
    };
    VkMemoryAllocateInfo info = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .pNext = &address_flag,
        .allocationSize = req.size,
        .memoryTypeIndex = type,
    };
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkAllocateMemory(ctx->device, &info, NULL, &buf->memory),
                             "vkAllocateMemory"));
    VKMOE_TRY(vkmoe_check_vk(ctx,
                             ctx->vk.vkBindBufferMemory(ctx->device, buf->buffer, buf->memory, 0),
                             "vkBindBufferMemory"));
    if (flags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
        VKMOE_TRY(vkmoe_check_vk(
            ctx, ctx->vk.vkMapMemory(ctx->device, buf->memory, 0, VK_WHOLE_SIZE, 0, &buf->mapped),
            "vkMapMemory"));
    return VKMOE_OK;
}

void vkmoe_buffer_sharing(const vkmoe_context *ctx, VkBufferCreateInfo *info, uint32_t families[2])
{
    /* Experts copied by the transfer queue and read by the compute queue:
     * shared by both families rather than handed over at every copy. */
    info->sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    if (ctx->copy_family == VKMOE_INVALID)
        return;
    families[0] = ctx->queue_family;
    families[1] = ctx->copy_family;
    info->sharingMode = VK_SHARING_MODE_CONCURRENT;
    info->queueFamilyIndexCount = 2;
    info->pQueueFamilyIndices = families;
}

/* The memory types that can import data as handle type `type`, or 0. */
static uint32_t import_types(vkmoe_context *ctx, const void *data,
                             VkExternalMemoryHandleTypeFlagBits type)
{
    VkMemoryHostPointerPropertiesEXT props = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
    return ctx->vk.vkGetMemoryHostPointerPropertiesEXT(ctx->device, type, data, &props) ==
                   VK_SUCCESS
               ? props.memoryTypeBits
               : 0;
}

/* A buffer over data, copied from by the device: VK_SUCCESS, or the
 * Vulkan call's failure (`what` names it), or VK_ERROR_INVALID_EXTERNAL_HANDLE
 * where the driver takes no such memory. Whatever failed, `out` holds what
 * was made, for vkmoe_buffer_destroy. Nothing logged: a caller may have a
 * way round. */
static VkResult import_memory(vkmoe_context *ctx, const void *data, VkDeviceSize size,
                              vkmoe_buffer *out, const char **what)
{
    /* A file's mapped pages are host memory to some drivers and foreign
     * memory to others: whichever the driver takes. */
    static const VkExternalMemoryHandleTypeFlagBits kinds[] = {
        VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
        VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_MAPPED_FOREIGN_MEMORY_BIT_EXT};
    for (size_t k = 0; k < VKMOE_ARRAY_SIZE(kinds); k++) {
        VkExternalMemoryBufferCreateInfo external = {
            .sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
            .handleTypes = kinds[k],
        };
        VkBufferCreateInfo info = {
            .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
            .pNext = &external,
            .size = size,
            .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
        };
        uint32_t families[2];
        vkmoe_buffer_sharing(ctx, &info, families);
        uint32_t types = import_types(ctx, data, kinds[k]);
        if (!types)
            continue;
        *what = "vkCreateBuffer";
        VkResult result = ctx->vk.vkCreateBuffer(ctx->device, &info, NULL, &out->buffer);
        if (result != VK_SUCCESS)
            return result;
        VkMemoryRequirements req;
        ctx->vk.vkGetBufferMemoryRequirements(ctx->device, out->buffer, &req);
        /* Coherent where offered: the host's writes need no flush. */
        uint32_t type = find_memory_type(ctx, types & req.memoryTypeBits,
                                         VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                             VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
        if (type == VKMOE_INVALID)
            type = find_memory_type(ctx, types & req.memoryTypeBits, 0);
        VkImportMemoryHostPointerInfoEXT import = {
            .sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
            .handleType = kinds[k],
            .pHostPointer = (void *)data,
        };
        VkMemoryAllocateInfo alloc = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
            .pNext = &import,
            .allocationSize = size,
            .memoryTypeIndex = type,
        };
        if (type != VKMOE_INVALID &&
            ctx->vk.vkAllocateMemory(ctx->device, &alloc, NULL, &out->memory) == VK_SUCCESS) {
            *what = "vkBindBufferMemory";
            return ctx->vk.vkBindBufferMemory(ctx->device, out->buffer, out->memory, 0);
        }
        ctx->vk.vkDestroyBuffer(ctx->device, out->buffer, NULL);
        out->buffer = VK_NULL_HANDLE;
    }
    return VK_ERROR_INVALID_EXTERNAL_HANDLE;
}

/* A HOST_STREAMED buffer on pages of the process's own, imported; false
 * (and nothing made) where the device does not import them, whatever the
 * reason: the driver's memory serves then. */
static bool create_on_own_pages(vkmoe_context *ctx, VkDeviceSize size, vkmoe_buffer *out)
{
    VkDeviceSize align = ctx->host_import_alignment;
    if (!align || size > SIZE_MAX - align)
        return false;
    size_t bytes = (size_t)vkmoe_round_up(size, align);
    void *pages = vkmoe_map_pages(bytes);
    if (!pages)
        return false;
    const char *what;
    if ((uintptr_t)pages % align || import_memory(ctx, pages, bytes, out, &what) != VK_SUCCESS) {
        vkmoe_buffer_destroy(ctx, out);
        vkmoe_unmap_pages(pages, bytes);
        return false;
    }
    out->size = size;
    out->mapped = pages;
    out->own_bytes = bytes;
    return true;
}

vkmoe_status vkmoe_buffer_create(vkmoe_context *ctx, VkDeviceSize size, vkmoe_memory_use use,
                                 vkmoe_buffer *out)
{
    memset(out, 0, sizeof(*out));
    if (size == 0)
        size = 16;
    if (size > ctx->info.max_allocation_size)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_DEVICE_MEMORY,
                          "a buffer of %llu bytes exceeds the device's allocation limit of %llu",
                          (unsigned long long)size,
                          (unsigned long long)ctx->info.max_allocation_size);
    if (use == VKMOE_MEMORY_HOST_STREAMED && ctx->host_huge_pages &&
        create_on_own_pages(ctx, size, out)) {
        if (ctx->options.poison_buffers)
            memset(out->mapped, 0xff, size);
        return VKMOE_OK;
    }
    VkBufferCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT |
                 VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT |
                 VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
                 VK_BUFFER_USAGE_STORAGE_TEXEL_BUFFER_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    uint32_t families[2];
    vkmoe_buffer_sharing(ctx, &info, families);
    vkmoe_status status = vkmoe_check_vk(
        ctx, ctx->vk.vkCreateBuffer(ctx->device, &info, NULL, &out->buffer), "vkCreateBuffer");
    if (status == VKMOE_OK)
        status = allocate_memory(ctx, out, use);
    if (status != VKMOE_OK) {
        vkmoe_buffer_destroy(ctx, out);
        return status;
    }
    out->size = size;
    VkBufferDeviceAddressInfo address = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO,
        .buffer = out->buffer,
    };
    out->address = ctx->vk.vkGetBufferDeviceAddress(ctx->device, &address);
    if (ctx->options.poison_buffers && out->mapped)
        memset(out->mapped, 0xff, size);
    return VKMOE_OK;
}

vkmoe_status vkmoe_buffer_import_host(vkmoe_context *ctx, const void *data, VkDeviceSize size,
                                      vkmoe_buffer *out)
{
    memset(out, 0, sizeof(*out));
    if (!ctx->host_import_alignment)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "the device does not offer VK_EXT_external_memory_host");
    if ((uintptr_t)data % ctx->host_import_alignment || size % ctx->host_import_alignment)
        return vkmoe_fail(ctx, VKMOE_ERROR_INVALID_ARGUMENT,
                          "host memory to import must be aligned to %llu bytes",
                          (unsigned long long)ctx->host_import_alignment);
    const char *what = "";
    VkResult result = import_memory(ctx, data, size, out, &what);
    vkmoe_status status =
        result == VK_ERROR_INVALID_EXTERNAL_HANDLE
            ? vkmoe_fail(
                  ctx, VKMOE_ERROR_UNSUPPORTED,
                  "the device does not import this host memory (VK_EXT_external_memory_host)")
            : vkmoe_check_vk(ctx, result, what);
    if (status != VKMOE_OK) {
        vkmoe_buffer_destroy(ctx, out);
        return status;
    }
    out->size = size;
    out->mapped = (void *)data;
    return VKMOE_OK;
}

void vkmoe_buffer_destroy(vkmoe_context *ctx, vkmoe_buffer *buf)
{
    if (buf->buffer)
        ctx->vk.vkDestroyBuffer(ctx->device, buf->buffer, NULL);
    if (buf->memory)
        ctx->vk.vkFreeMemory(ctx->device, buf->memory, NULL);
    if (buf->own_bytes)
        vkmoe_unmap_pages(buf->mapped, buf->own_bytes);
    memset(buf, 0, sizeof(*buf));
}

static VkDeviceSize texel_bytes(VkFormat format)
{
    switch (format) {
    case VK_FORMAT_R32_UINT:
        return 4;
    default:
        return 16; /* VK_FORMAT_R32G32B32A32_{UINT,SFLOAT} */
    }
}

vkmoe_status vkmoe_buffer_view_create(vkmoe_context *ctx, const vkmoe_buffer *buf, VkFormat format,
                                      VkDeviceSize range, VkBufferView *out)
{
    VkDeviceSize texels = range / texel_bytes(format);
    uint32_t limit = ctx->properties.limits.maxTexelBufferElements;
    if (texels > limit)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "a texel view of %llu texels exceeds the device's "
                          "maxTexelBufferElements (%u); lower max_tokens",
                          (unsigned long long)texels, limit);
    VkBufferViewCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
        .buffer = buf->buffer,
        .format = format,
        .offset = 0,
        .range = texels * texel_bytes(format),
    };
    return vkmoe_check_vk(ctx, ctx->vk.vkCreateBufferView(ctx->device, &info, NULL, out),
                          "vkCreateBufferView");
}

static void pack_rows(uint8_t *dst, const uint8_t *src, uint64_t rows, uint64_t row_bytes,
                      uint64_t dst_stride)
{
    for (uint64_t r = 0; r < rows; r++) {
        memcpy(dst + r * dst_stride, src + r * row_bytes, row_bytes);
        memset(dst + r * dst_stride + row_bytes, 0, dst_stride - row_bytes);
    }
}

static vkmoe_status copy_buffer(vkmoe_context *ctx, VkBuffer src, VkDeviceSize src_offset,
                                VkBuffer dst, VkDeviceSize dst_offset, VkDeviceSize size)
{
    VkCommandBuffer cmd;
    VKMOE_TRY(vkmoe_context_begin(ctx, &cmd));
    VkBufferCopy region = {.srcOffset = src_offset, .dstOffset = dst_offset, .size = size};
    ctx->vk.vkCmdCopyBuffer(cmd, src, dst, 1, &region);
    vkmoe_status status = vkmoe_context_submit_wait(ctx);
    /* A wait that failed left the copy running, and the caller frees its
     * staging buffer next: the H200 lost its device to a copy into freed
     * memory so (stop 45). Wait for it as a destroy does. */
    if (status != VKMOE_OK)
        vkmoe_context_wait_pending(ctx);
    return status;
}

vkmoe_status vkmoe_buffer_write_rows(vkmoe_context *ctx, const vkmoe_buffer *buf,
                                     VkDeviceSize offset, const void *src, uint64_t rows,
                                     uint64_t row_bytes, uint64_t dst_stride)
{
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    if (buf->mapped) {
        pack_rows((uint8_t *)buf->mapped + offset, src, rows, row_bytes, dst_stride);
        return VKMOE_OK;
    }
    uint64_t rows_per_copy = STAGING_BYTES / dst_stride;
    if (rows_per_copy == 0)
        rows_per_copy = 1;
    if (rows_per_copy > rows)
        rows_per_copy = rows;
    vkmoe_buffer staging;
    VKMOE_TRY(vkmoe_buffer_create(ctx, rows_per_copy * dst_stride, VKMOE_MEMORY_HOST, &staging));
    vkmoe_status status = VKMOE_OK;
    for (uint64_t r = 0; r < rows && status == VKMOE_OK; r += rows_per_copy) {
        uint64_t n = rows - r < rows_per_copy ? rows - r : rows_per_copy;
        pack_rows(staging.mapped, (const uint8_t *)src + r * row_bytes, n, row_bytes, dst_stride);
        status = copy_buffer(ctx, staging.buffer, 0, buf->buffer, offset + r * dst_stride,
                             n * dst_stride);
    }
    vkmoe_buffer_destroy(ctx, &staging);
    return status;
}

vkmoe_status vkmoe_buffer_read(vkmoe_context *ctx, const vkmoe_buffer *buf, VkDeviceSize offset,
                               void *dst, VkDeviceSize size)
{
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    if (buf->mapped) {
        memcpy(dst, (const uint8_t *)buf->mapped + offset, size);
        return VKMOE_OK;
    }
    vkmoe_buffer staging;
    VkDeviceSize chunk = size < STAGING_BYTES ? size : STAGING_BYTES;
    VKMOE_TRY(vkmoe_buffer_create(ctx, chunk, VKMOE_MEMORY_HOST, &staging));
    vkmoe_status status = VKMOE_OK;
    for (VkDeviceSize done = 0; done < size && status == VKMOE_OK; done += chunk) {
        VkDeviceSize n = size - done < chunk ? size - done : chunk;
        status = copy_buffer(ctx, buf->buffer, offset + done, staging.buffer, 0, n);
        if (status == VKMOE_OK)
            memcpy((uint8_t *)dst + done, staging.mapped, n);
    }
    vkmoe_buffer_destroy(ctx, &staging);
    return status;
}
