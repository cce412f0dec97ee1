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
 * fastest of REPEATS. */
static vkmoe_status time_dispatch(vkmoe_context *ctx, VkQueryPool queries, VkPipeline pipeline,
                                  const void *push, uint32_t push_size, uint32_t groups,
                                  double *ms)
{
    *ms = 1e30;
    for (int r = 0; r < REPEATS; r++) {
        VkCommandBuffer cmd;
        VKMOE_TRY(vkmoe_context_begin(ctx, &cmd));
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
} peak_resources;

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
    VKMOE_TRY(time_dispatch(ctx, r->queries, pipeline, &push, sizeof(push), FMA_GROUPS, &ms));
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

    struct {
        VkDeviceAddress src, dst;
        uint32_t count, pad_;
    } copy_push = {r->src.address, r->dst.address, (uint32_t)(COPY_BYTES / 16), 0};
    VKMOE_TRY(time_dispatch(ctx, r->queries, r->copy, &copy_push, sizeof(copy_push),
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
    vkmoe_buffer_destroy(ctx, &r.src);
    vkmoe_buffer_destroy(ctx, &r.dst);
    return status;
}
