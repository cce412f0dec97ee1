#include <stdlib.h>

#include "internal.h"
#include "peak.h"

static const uint32_t fma_spv[] =
#include "peak_fma.spv.h"
    ;
static const uint32_t fma16_spv[] =
#include "peak_fma16.spv.h"
    ;
static const uint32_t copy_spv[] =
#include "peak_copy.spv.h"
    ;

#define COPY_BYTES ((VkDeviceSize)64 << 20)
#define FMA_GROUPS 256u
#define FMA_ITERATIONS 4096u
#define REPEATS 3

static vkmoe_status make_pipeline(vkmoe_context *ctx, const uint32_t *code, size_t size,
                                  VkPipeline *out)
{
    VkShaderModuleCreateInfo module_info = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                            .codeSize = size,
                                            .pCode = code};
    VkShaderModule module;
    VKMOE_TRY(vkmoe_check_vk(ctx, ctx->vk.vkCreateShaderModule(ctx->device, &module_info, NULL,
                                                               &module),
                             "vkCreateShaderModule"));
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = module,
                  .pName = "main"},
        .layout = ctx->pipeline_layout,
    };
    VkResult result =
        ctx->vk.vkCreateComputePipelines(ctx->device, VK_NULL_HANDLE, 1, &info, NULL, out);
    ctx->vk.vkDestroyShaderModule(ctx->device, module, NULL);
    return vkmoe_check_vk(ctx, result, "vkCreateComputePipelines");
}

/* Milliseconds of GPU time for one dispatch of `groups` workgroups, the
 * fastest of REPEATS; `set`, unless VK_NULL_HANDLE, is bound as set 1. */
static vkmoe_status time_dispatch(vkmoe_context *ctx, VkQueryPool queries, VkPipeline pipeline,
                                  VkDescriptorSet set, const void *push, uint32_t push_size,
                                  uint32_t groups, double *ms)
{
    *ms = 1e30;
    for (int r = 0; r < REPEATS; r++) {
        VkCommandBuffer cmd;
        VKMOE_TRY(vkmoe_context_begin(ctx, &cmd));
        if (set)
            ctx->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE,
                                            ctx->pipeline_layout, 1, 1, &set, 0, NULL);
        ctx->vk.vkCmdResetQueryPool(cmd, queries, 0, 2);
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queries, 0);
        vkmoe_dispatch_1d(ctx, cmd, pipeline, push, push_size, groups);
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 1);
        VKMOE_TRY(vkmoe_context_submit_wait(ctx));
        uint64_t ticks[2];
        VKMOE_TRY(vkmoe_check_vk(ctx,
                                 ctx->vk.vkGetQueryPoolResults(
                                     ctx->device, queries, 0, 2, sizeof(ticks), ticks, 8,
                                     VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
                                 "vkGetQueryPoolResults"));
        double t = (double)(ticks[1] - ticks[0]) * ctx->timestamp_period_ns * 1e-6;
        if (t < *ms)
            *ms = t;
    }
    return VKMOE_OK;
}

typedef struct peak_resources {
    VkQueryPool queries;
    VkPipeline fma, fma16, copy;
    vkmoe_buffer src, dst;
    VkBufferView src_view;
    VkDescriptorPool pool;
    VkDescriptorSet src_set;
} peak_resources;

/* The copy's source as set 1 of the library's pipeline layout, binding 1
 * (where the GEMMs find their weights); every binding holds it. */
static vkmoe_status create_copy_source(vkmoe_context *ctx, peak_resources *r)
{
    VKMOE_TRY(vkmoe_buffer_view_create(ctx, &r->src, VK_FORMAT_R32G32B32A32_UINT, COPY_BYTES,
                                       &r->src_view));
    VkDescriptorPoolSize size = {VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, 3};
    VkDescriptorPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                            .maxSets = 1,
                                            .poolSizeCount = 1,
                                            .pPoolSizes = &size};
    VKMOE_TRY(vkmoe_check_vk(
        ctx, ctx->vk.vkCreateDescriptorPool(ctx->device, &pool_info, NULL, &r->pool),
        "vkCreateDescriptorPool"));
    VkDescriptorSetAllocateInfo alloc = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                         .descriptorPool = r->pool,
                                         .descriptorSetCount = 1,
                                         .pSetLayouts = &ctx->gemm_set_layout};
    VKMOE_TRY(vkmoe_check_vk(
        ctx, ctx->vk.vkAllocateDescriptorSets(ctx->device, &alloc, &r->src_set),
        "vkAllocateDescriptorSets"));
    VkWriteDescriptorSet writes[3];
    for (uint32_t i = 0; i < 3; i++)
        writes[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = r->src_set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
            .pTexelBufferView = &r->src_view,
        };
    ctx->vk.vkUpdateDescriptorSets(ctx->device, 3, writes, 0, NULL);
    return VKMOE_OK;
}

/* GFLOP/s of one FMA-bound pipeline: 8 vec4 FMAs of 2 FLOPs per component
 * per step, 64 invocations per workgroup. */
static vkmoe_status time_fma(vkmoe_context *ctx, peak_resources *r, VkPipeline pipeline,
                             double *gflops)
{
    struct {
        VkDeviceAddress out;
        uint32_t iterations, pad_;
    } push = {r->dst.address, FMA_ITERATIONS, 0};
    double ms;
    VKMOE_TRY(time_dispatch(ctx, r->queries, pipeline, VK_NULL_HANDLE, &push, sizeof(push),
                            FMA_GROUPS, &ms));
    double flops = (double)FMA_GROUPS * 64 * FMA_ITERATIONS * 8 * 4 * 2;
    *gflops = flops / (ms * 1e6);
    return VKMOE_OK;
}

static vkmoe_status measure(vkmoe_context *ctx, peak_resources *r, peak_figures *out)
{
    VkQueryPoolCreateInfo query_info = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                        .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                        .queryCount = 2};
    VKMOE_TRY(vkmoe_check_vk(
        ctx, ctx->vk.vkCreateQueryPool(ctx->device, &query_info, NULL, &r->queries),
        "vkCreateQueryPool"));
    VKMOE_TRY(make_pipeline(ctx, fma_spv, sizeof(fma_spv), &r->fma));
    VKMOE_TRY(make_pipeline(ctx, copy_spv, sizeof(copy_spv), &r->copy));
    VKMOE_TRY(vkmoe_buffer_create(ctx, COPY_BYTES, VKMOE_MEMORY_DEVICE, &r->src));
    VKMOE_TRY(vkmoe_buffer_create(ctx, COPY_BYTES, VKMOE_MEMORY_DEVICE, &r->dst));

    VKMOE_TRY(time_fma(ctx, r, r->fma, &out->fp32_gflops));
    /* The fp16 shader needs the shaderFloat16 feature, which only a device
     * vkmoe created has enabled for certain. */
    out->fp16_gflops = 0;
    if (ctx->info.shader_float16 && ctx->owns_device) {
        VKMOE_TRY(make_pipeline(ctx, fma16_spv, sizeof(fma16_spv), &r->fma16));
        VKMOE_TRY(time_fma(ctx, r, r->fma16, &out->fp16_gflops));
    }
    double ms;

    VKMOE_TRY(create_copy_source(ctx, r));
    struct {
        VkDeviceAddress dst;
        uint32_t count, pad_;
    } copy_push = {r->dst.address, (uint32_t)(COPY_BYTES / 16), 0};
    VKMOE_TRY(time_dispatch(ctx, r->queries, r->copy, r->src_set, &copy_push, sizeof(copy_push),
                            (uint32_t)(COPY_BYTES / 16 / 64 / 16), &ms));
    out->copy_gbps = 2.0 * (double)COPY_BYTES / (ms * 1e6);
    return VKMOE_OK;
}

vkmoe_status peak_measure(vkmoe_context *ctx, peak_figures *out)
{
    if (!ctx->info.timestamps)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED, "the device has no timestamp queries");
    peak_resources r = {0};
    vkmoe_status status = measure(ctx, &r, out);
    ctx->vk.vkDeviceWaitIdle(ctx->device);
    if (r.queries)
        ctx->vk.vkDestroyQueryPool(ctx->device, r.queries, NULL);
    if (r.fma)
        ctx->vk.vkDestroyPipeline(ctx->device, r.fma, NULL);
    if (r.copy)
        ctx->vk.vkDestroyPipeline(ctx->device, r.copy, NULL);
    if (r.fma16)
        ctx->vk.vkDestroyPipeline(ctx->device, r.fma16, NULL);
    if (r.pool)
        ctx->vk.vkDestroyDescriptorPool(ctx->device, r.pool, NULL);
    if (r.src_view)
        ctx->vk.vkDestroyBufferView(ctx->device, r.src_view, NULL);
    vkmoe_buffer_destroy(ctx, &r.src);
    vkmoe_buffer_destroy(ctx, &r.dst);
    return status;
}
