#include <stdio.h>
#include <stdlib.h>

#include "memory.h"
#include "peak.h"
#include "pipelines.h"

static const uint32_t fma_spv[] =
#include "peak_fma.spv.h"
    ;
static const uint32_t fma16_spv[] =
#include "peak_fma16.spv.h"
    ;
static const uint32_t copy_spv[] =
#include "peak_copy.spv.h"
    ;
static const uint32_t coopmat_spv[] =
#include "peak_coopmat.spv.h"
    ;
static const uint32_t coopmat_khr_spv[] =
#include "peak_coopmat_khr.spv.h"
    ;

#define COPY_BYTES ((VkDeviceSize)64 << 20)
#define FMA_GROUPS 256u
#define FMA_ITERATIONS 4096u
#define MATRIX_ITERATIONS 256u
#define DISPATCH_CHAIN 64u
#define REPEATS 3

/* A pipeline of one shader; `spec`, unless NULL, is its specialization. */
static vkmoe_status make_pipeline(vkmoe_context *ctx, VkPipelineLayout layout, const uint32_t *code,
                                  size_t size, const VkSpecializationInfo *spec, VkPipeline *out)
{
    VkShaderModuleCreateInfo module_info = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = size, .pCode = code};
    VkShaderModule module;
    VKMOE_TRY(vkmoe_check_vk(ctx,
                             ctx->vk.vkCreateShaderModule(ctx->device, &module_info, NULL, &module),
                             "vkCreateShaderModule"));
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        /* as the library's, for vkmoe-shader-stats */
        .flags = vkmoe_pipeline_capture_flags(ctx),
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = module,
                  .pName = "main",
                  .pSpecializationInfo = spec},
        .layout = layout,
    };
    VkResult result =
        ctx->vk.vkCreateComputePipelines(ctx->device, VK_NULL_HANDLE, 1, &info, NULL, out);
    ctx->vk.vkDestroyShaderModule(ctx->device, module, NULL);
    return vkmoe_check_vk(ctx, result, "vkCreateComputePipelines");
}

/* One pipeline to time: its layout, its descriptor set 0 (or none) and its
 * push constants. */
typedef struct timed_dispatch {
    VkPipeline pipeline;
    VkPipelineLayout layout;
    VkDescriptorSet set;
    const void *push;
    uint32_t push_size, groups;
} timed_dispatch;

/* Records the commands to time into cmd. */
typedef void (*peak_recorder)(vkmoe_context *ctx, VkCommandBuffer cmd, const void *what);

/* Milliseconds of GPU time between timestamps around what `record` records,
 * the fastest of REPEATS submissions. */
static vkmoe_status time_best(vkmoe_context *ctx, VkQueryPool queries, peak_recorder record,
                              const void *what, double *ms)
{
    *ms = 1e30;
    for (int r = 0; r < REPEATS; r++) {
        VkCommandBuffer cmd;
        VKMOE_TRY(vkmoe_context_begin(ctx, &cmd));
        ctx->vk.vkCmdResetQueryPool(cmd, queries, 0, 2);
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queries, 0);
        record(ctx, cmd, what);
        ctx->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 1);
        VKMOE_TRY(vkmoe_context_submit_wait(ctx));
        uint64_t ticks[2];
        VKMOE_TRY(vkmoe_check_vk(
            ctx,
            ctx->vk.vkGetQueryPoolResults(ctx->device, queries, 0, 2, sizeof(ticks), ticks, 8,
                                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
            "vkGetQueryPoolResults"));
        double t = (double)(ticks[1] - ticks[0]) * ctx->timestamp_period_ns * 1e-6;
        if (t < *ms)
            *ms = t;
    }
    return VKMOE_OK;
}

static void record_dispatch(vkmoe_context *ctx, VkCommandBuffer cmd, const void *what)
{
    const timed_dispatch *d = what;
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->pipeline);
    if (d->set)
        ctx->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1,
                                        &d->set, 0, NULL);
    ctx->vk.vkCmdPushConstants(cmd, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, d->push_size,
                               d->push);
    ctx->vk.vkCmdDispatch(cmd, d->groups, 1, 1);
}

/* Milliseconds of GPU time for one dispatch, the fastest of REPEATS. */
static vkmoe_status time_dispatch(vkmoe_context *ctx, VkQueryPool queries, const timed_dispatch *d,
                                  double *ms)
{
    return time_best(ctx, queries, record_dispatch, d, ms);
}

typedef struct peak_resources {
    VkQueryPool queries;
    VkPipeline fma, fma16, coopmat, copy, read;
    vkmoe_buffer src, dst, host;
    /* the copy's own descriptors: set 0 = {src, dst} */
    VkDescriptorSetLayout copy_set_layout;
    VkPipelineLayout copy_layout;
    VkDescriptorPool pool;
    VkDescriptorSet copy_set;
    VkBufferView views[2];
} peak_resources;

/* The copy reads its source through a uniform texel buffer, as the GEMMs
 * read weights, and writes through a storage texel buffer: on llvmpipe both
 * are vector gathers and scatters, where buffer-address stores go lane by
 * lane and would halve the figure. */
static vkmoe_status create_copy_layout(vkmoe_context *ctx, peak_resources *r)
{
    VkDescriptorSetLayoutBinding bindings[2] = {
        {0, VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL},
        {1, VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL},
    };
    VkDescriptorSetLayoutCreateInfo set_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = 2,
        .pBindings = bindings};
    VKMOE_TRY(vkmoe_check_vk(
        ctx, ctx->vk.vkCreateDescriptorSetLayout(ctx->device, &set_info, NULL, &r->copy_set_layout),
        "vkCreateDescriptorSetLayout"));
    VkPushConstantRange push = {VK_SHADER_STAGE_COMPUTE_BIT, 0, 4};
    VkPipelineLayoutCreateInfo layout_info = {.sType =
                                                  VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                              .setLayoutCount = 1,
                                              .pSetLayouts = &r->copy_set_layout,
                                              .pushConstantRangeCount = 1,
                                              .pPushConstantRanges = &push};
    return vkmoe_check_vk(
        ctx, ctx->vk.vkCreatePipelineLayout(ctx->device, &layout_info, NULL, &r->copy_layout),
        "vkCreatePipelineLayout");
}

static vkmoe_status create_copy_set(vkmoe_context *ctx, peak_resources *r)
{
    VKMOE_TRY(vkmoe_buffer_view_create(ctx, &r->src, VK_FORMAT_R32G32B32A32_UINT, COPY_BYTES,
                                       &r->views[0]));
    VKMOE_TRY(vkmoe_buffer_view_create(ctx, &r->dst, VK_FORMAT_R32G32B32A32_UINT, COPY_BYTES,
                                       &r->views[1]));
    VkDescriptorPoolSize sizes[2] = {{VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, 1},
                                     {VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER, 1}};
    VkDescriptorPoolCreateInfo pool_info = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                            .maxSets = 1,
                                            .poolSizeCount = 2,
                                            .pPoolSizes = sizes};
    VKMOE_TRY(
        vkmoe_check_vk(ctx, ctx->vk.vkCreateDescriptorPool(ctx->device, &pool_info, NULL, &r->pool),
                       "vkCreateDescriptorPool"));
    VkDescriptorSetAllocateInfo alloc = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                         .descriptorPool = r->pool,
                                         .descriptorSetCount = 1,
                                         .pSetLayouts = &r->copy_set_layout};
    VKMOE_TRY(vkmoe_check_vk(ctx,
                             ctx->vk.vkAllocateDescriptorSets(ctx->device, &alloc, &r->copy_set),
                             "vkAllocateDescriptorSets"));
    VkWriteDescriptorSet writes[2];
    for (uint32_t i = 0; i < 2; i++)
        writes[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = r->copy_set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = sizes[i].type,
            .pTexelBufferView = &r->views[i],
        };
    ctx->vk.vkUpdateDescriptorSets(ctx->device, 2, writes, 0, NULL);
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
    timed_dispatch d = {pipeline, ctx->pipeline_layout, VK_NULL_HANDLE,
                        &push,    sizeof(push),         FMA_GROUPS};
    double ms;
    VKMOE_TRY(time_dispatch(ctx, r->queries, &d, &ms));
    double flops = (double)FMA_GROUPS * 64 * FMA_ITERATIONS * 8 * 4 * 2;
    *gflops = flops / (ms * 1e6);
    return VKMOE_OK;
}

/* Workgroups of 4 subgroups. */
vkmoe_status peak_matrix_pipeline(vkmoe_context *ctx, VkPipeline *out)
{
    uint32_t workgroup = 4 * ctx->info.subgroup_size;
    VkSpecializationMapEntry entry = {0, 0, 4};
    VkSpecializationInfo spec = {1, &entry, 4, &workgroup};
    if (ctx->cooperative_matrix_khr)
        return make_pipeline(ctx, ctx->pipeline_layout, coopmat_khr_spv, sizeof(coopmat_khr_spv),
                             &spec, out);
    return make_pipeline(ctx, ctx->pipeline_layout, coopmat_spv, sizeof(coopmat_spv), &spec, out);
}

/* GFLOP/s of the matrix-core shader: workgroups of 4 subgroups, each
 * making 4 16x16x16 products (2·16³ FLOPs) per step. */
static vkmoe_status time_matrix(vkmoe_context *ctx, peak_resources *r, double *gflops)
{
    VKMOE_TRY(peak_matrix_pipeline(ctx, &r->coopmat));
    struct {
        VkDeviceAddress out;
        uint32_t iterations, pad_;
    } push = {r->dst.address, MATRIX_ITERATIONS, 0};
    timed_dispatch d = {r->coopmat, ctx->pipeline_layout, VK_NULL_HANDLE,
                        &push,      sizeof(push),         FMA_GROUPS};
    double ms;
    VKMOE_TRY(time_dispatch(ctx, r->queries, &d, &ms));
    double flops = (double)FMA_GROUPS * 4 * MATRIX_ITERATIONS * 4 * 2 * 16 * 16 * 16;
    *gflops = flops / (ms * 1e6);
    return VKMOE_OK;
}

static void record_upload(vkmoe_context *ctx, VkCommandBuffer cmd, const void *what)
{
    const peak_resources *r = what;
    VkBufferCopy region = {.size = COPY_BYTES};
    ctx->vk.vkCmdCopyBuffer(cmd, r->host.buffer, r->dst.buffer, 1, &region);
}

/* GB/s of host memory copied into device memory, the fastest of REPEATS. */
static vkmoe_status time_upload(vkmoe_context *ctx, peak_resources *r, double *gbps)
{
    VKMOE_TRY(vkmoe_buffer_create(ctx, COPY_BYTES, VKMOE_MEMORY_HOST_CACHED, &r->host));
    double ms;
    VKMOE_TRY(time_best(ctx, r->queries, record_upload, r, &ms));
    *gbps = (double)COPY_BYTES / (ms * 1e6);
    return VKMOE_OK;
}

/* DISPATCH_CHAIN dispatches of one workgroup of the FMA shader (4 steps),
 * each followed by the barrier between a layer's stages. */
static void record_dispatch_chain(vkmoe_context *ctx, VkCommandBuffer cmd, const void *what)
{
    const peak_resources *r = what;
    struct {
        VkDeviceAddress out;
        uint32_t iterations, pad_;
    } push = {r->dst.address, 4, 0};
    for (uint32_t d = 0; d < DISPATCH_CHAIN; d++) {
        vkmoe_dispatch_1d(ctx, cmd, r->fma, &push, sizeof(push), 1);
        vkmoe_barrier_compute(ctx, cmd);
    }
}

/* Microseconds a link of the chain above takes, of the fastest of REPEATS
 * chains: at batch 1 a layer's stages do little work each, and on a
 * discrete GPU this, not the work, can set a forward's time. */
static vkmoe_status time_dispatch_chain(vkmoe_context *ctx, peak_resources *r, double *us)
{
    double ms;
    VKMOE_TRY(time_best(ctx, r->queries, record_dispatch_chain, r, &ms));
    *us = ms * 1e3 / DISPATCH_CHAIN;
    return VKMOE_OK;
}

static vkmoe_status measure(vkmoe_context *ctx, peak_resources *r, peak_figures *out)
{
    VkQueryPoolCreateInfo query_info = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                        .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                        .queryCount = 2};
    VKMOE_TRY(vkmoe_check_vk(ctx,
                             ctx->vk.vkCreateQueryPool(ctx->device, &query_info, NULL, &r->queries),
                             "vkCreateQueryPool"));
    VKMOE_TRY(make_pipeline(ctx, ctx->pipeline_layout, fma_spv, sizeof(fma_spv), NULL, &r->fma));
    VKMOE_TRY(vkmoe_buffer_create(ctx, COPY_BYTES, VKMOE_MEMORY_DEVICE, &r->src));
    VKMOE_TRY(vkmoe_buffer_create(ctx, COPY_BYTES, VKMOE_MEMORY_DEVICE, &r->dst));

    VKMOE_TRY(time_fma(ctx, r, r->fma, &out->fp32_gflops));
    VKMOE_TRY(time_dispatch_chain(ctx, r, &out->dispatch_us));
    /* The fp16 shader needs the shaderFloat16 feature, which only a device
     * vkmoe created has enabled for certain. */
    out->fp16_gflops = 0;
    if (ctx->info.shader_float16 && ctx->owns_device) {
        VKMOE_TRY(make_pipeline(ctx, ctx->pipeline_layout, fma16_spv, sizeof(fma16_spv), NULL,
                                &r->fma16));
        VKMOE_TRY(time_fma(ctx, r, r->fma16, &out->fp16_gflops));
    }
    out->fp16_matrix_gflops = 0;
    /* Its matrix instructions have not yet run on any GPU: where this peak
     * cannot be had (the driver refusing the pipeline, say), the layer's
     * runs still can, and state their GFLOP/s against the fp32 peak. A lost
     * device ends the bench as anywhere else. */
    vkmoe_status matrix =
        ctx->info.cooperative_matrix ? time_matrix(ctx, r, &out->fp16_matrix_gflops) : VKMOE_OK;
    if (matrix == VKMOE_ERROR_DEVICE_LOST)
        return matrix;
    if (matrix != VKMOE_OK) {
        fprintf(stderr, "vkmoe-bench: no matrix-core peak (%s): %s\n", vkmoe_status_string(matrix),
                vkmoe_last_error());
        out->fp16_matrix_gflops = 0;
    }
    VKMOE_TRY(create_copy_layout(ctx, r));
    const uint32_t modes[2] = {1, 0}; /* COPY: the copy, the read */
    VkSpecializationMapEntry entry = {0, 0, 4};
    VkSpecializationInfo copy_spec = {1, &entry, 4, &modes[0]},
                         read_spec = {1, &entry, 4, &modes[1]};
    VKMOE_TRY(make_pipeline(ctx, r->copy_layout, copy_spv, sizeof(copy_spv), &copy_spec, &r->copy));
    VKMOE_TRY(make_pipeline(ctx, r->copy_layout, copy_spv, sizeof(copy_spv), &read_spec, &r->read));
    VKMOE_TRY(create_copy_set(ctx, r));
    uint32_t texels = (uint32_t)(COPY_BYTES / 16);
    timed_dispatch stream = {r->copy, r->copy_layout, r->copy_set, &texels, 4, texels / 64 / 16};
    double ms;
    VKMOE_TRY(time_dispatch(ctx, r->queries, &stream, &ms));
    out->copy_gbps = 2.0 * (double)COPY_BYTES / (ms * 1e6);
    stream.pipeline = r->read;
    VKMOE_TRY(time_dispatch(ctx, r->queries, &stream, &ms));
    out->read_gbps = (double)COPY_BYTES / (ms * 1e6);
    return time_upload(ctx, r, &out->upload_gbps);
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
    if (r.read)
        ctx->vk.vkDestroyPipeline(ctx->device, r.read, NULL);
    if (r.fma16)
        ctx->vk.vkDestroyPipeline(ctx->device, r.fma16, NULL);
    if (r.coopmat)
        ctx->vk.vkDestroyPipeline(ctx->device, r.coopmat, NULL);
    if (r.pool)
        ctx->vk.vkDestroyDescriptorPool(ctx->device, r.pool, NULL);
    for (int i = 0; i < 2; i++)
        if (r.views[i])
            ctx->vk.vkDestroyBufferView(ctx->device, r.views[i], NULL);
    if (r.copy_layout)
        ctx->vk.vkDestroyPipelineLayout(ctx->device, r.copy_layout, NULL);
    if (r.copy_set_layout)
        ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, r.copy_set_layout, NULL);
    vkmoe_buffer_destroy(ctx, &r.src);
    vkmoe_buffer_destroy(ctx, &r.dst);
    vkmoe_buffer_destroy(ctx, &r.host);
    return status;
}
