/* Embedded SPIR-V, the shared pipeline layout and the pipeline cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "pipelines.h"

/* glslc -mfmt=c writes each module as a braced initializer list; the
 * generated table includes them all. */
#define VKMOE_SHADER_CODE
#include "shader_table.h"

static const struct {
    const uint32_t *code;
    size_t size;
    const char *name;
} shaders[VKMOE_SHADER_MAX] = {
#define ENTRY(id, name) [VKMOE_SHADER_##id] = {name##_spv, sizeof(name##_spv), #name},
    VKMOE_STAGE_SHADERS(ENTRY) VKMOE_VARIANT_SHADERS(ENTRY)
#undef ENTRY
};

static vkmoe_status create_set_layout(vkmoe_context *ctx, VkDescriptorType type, uint32_t count,
                                      VkDescriptorSetLayoutCreateFlags flags,
                                      VkDescriptorSetLayout *out)
{
    VkDescriptorSetLayoutBinding bindings[3];
    for (uint32_t i = 0; i < count; i++)
        bindings[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = type,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = flags,
        .bindingCount = count,
        .pBindings = bindings,
    };
    return vkmoe_check_vk(ctx, ctx->vk.vkCreateDescriptorSetLayout(ctx->device, &info, NULL, out),
                          "vkCreateDescriptorSetLayout");
}

vkmoe_status vkmoe_pipelines_init(vkmoe_context *ctx)
{
    /* Set 0 binds a forward's x and y: pushed at record time where the
     * device can, so that recording changes no descriptor set. */
    VkDescriptorSetLayoutCreateFlags io_flags =
        ctx->push_descriptors ? VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR : 0;
    VKMOE_TRY(
        create_set_layout(ctx, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 2, io_flags, &ctx->set_layout));
    VKMOE_TRY(create_set_layout(ctx, VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, 3, 0,
                                &ctx->gemm_set_layout));
    VkDescriptorSetLayout sets[2] = {ctx->set_layout, ctx->gemm_set_layout};
    VkPushConstantRange push = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .offset = 0,
        .size = VKMOE_PUSH_SIZE,
    };
    VkPipelineLayoutCreateInfo layout_info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 2,
        .pSetLayouts = sets,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &push,
    };
    return vkmoe_check_vk(
        ctx, ctx->vk.vkCreatePipelineLayout(ctx->device, &layout_info, NULL, &ctx->pipeline_layout),
        "vkCreatePipelineLayout");
}

const char *vkmoe_shader_name(vkmoe_shader shader)
{
    return shader < VKMOE_SHADER_MAX ? shaders[shader].name : NULL;
}

void vkmoe_pipelines_destroy(vkmoe_context *ctx)
{
    for (uint32_t i = 0; i < ctx->pipeline_count; i++)
        ctx->vk.vkDestroyPipeline(ctx->device, ctx->pipelines[i].pipeline, NULL);
    free(ctx->pipelines);
    ctx->pipelines = NULL;
    ctx->pipeline_count = 0;
    if (ctx->pipeline_layout)
        ctx->vk.vkDestroyPipelineLayout(ctx->device, ctx->pipeline_layout, NULL);
    if (ctx->set_layout)
        ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, ctx->set_layout, NULL);
    if (ctx->gemm_set_layout)
        ctx->vk.vkDestroyDescriptorSetLayout(ctx->device, ctx->gemm_set_layout, NULL);
}

static vkmoe_status create_pipeline(vkmoe_context *ctx, vkmoe_shader shader, const vkmoe_spec *spec,
                                    VkPipeline *out)
{
    VkShaderModuleCreateInfo module_info = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = shaders[shader].size,
        .pCode = shaders[shader].code,
    };
    VkShaderModule module;
    VKMOE_TRY(vkmoe_check_vk(ctx,
                             ctx->vk.vkCreateShaderModule(ctx->device, &module_info, NULL, &module),
                             "vkCreateShaderModule"));
    VkSpecializationMapEntry entries[VKMOE_MAX_SPEC];
    for (uint32_t i = 0; i < spec->count; i++)
        entries[i] = (VkSpecializationMapEntry){
            .constantID = i, .offset = i * sizeof(uint32_t), .size = sizeof(uint32_t)};
    VkSpecializationInfo spec_info = {
        .mapEntryCount = spec->count,
        .pMapEntries = entries,
        .dataSize = spec->count * sizeof(uint32_t),
        .pData = spec->values,
    };
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage =
            {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = module,
                .pName = "main",
                .pSpecializationInfo = spec->count ? &spec_info : NULL,
            },
        .flags = vkmoe_pipeline_capture_flags(ctx),
        .layout = ctx->pipeline_layout,
    };
    VkResult result =
        ctx->vk.vkCreateComputePipelines(ctx->device, VK_NULL_HANDLE, 1, &info, NULL, out);
    ctx->vk.vkDestroyShaderModule(ctx->device, module, NULL);
    if (result != VK_SUCCESS)
        vkmoe_log(ctx, VKMOE_LOG_ERROR, "pipeline for shader %s failed", shaders[shader].name);
    return vkmoe_check_vk(ctx, result, "vkCreateComputePipelines");
}

vkmoe_status vkmoe_pipeline_get(vkmoe_context *ctx, vkmoe_shader shader, const vkmoe_spec *spec,
                                VkPipeline *out)
{
    for (uint32_t i = 0; i < ctx->pipeline_count; i++) {
        const vkmoe_pipeline_entry *e = &ctx->pipelines[i];
        if (e->shader == shader && e->spec.count == spec->count &&
            memcmp(e->spec.values, spec->values, spec->count * sizeof(uint32_t)) == 0) {
            *out = e->pipeline;
            return VKMOE_OK;
        }
    }
    vkmoe_pipeline_entry *grown =
        vkmoe_realloc(ctx->pipelines, (ctx->pipeline_count + 1) * sizeof(*grown));
    if (!grown)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    ctx->pipelines = grown;
    VKMOE_TRY(create_pipeline(ctx, shader, spec, out));
    grown[ctx->pipeline_count++] =
        (vkmoe_pipeline_entry){.shader = shader, .spec = *spec, .pipeline = *out};
    return VKMOE_OK;
}

VkPipelineCreateFlags vkmoe_pipeline_capture_flags(const vkmoe_context *ctx)
{
    if (!ctx->options.pipeline_statistics)
        return 0;
    return VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR |
           (ctx->options.pipeline_isa ? VK_PIPELINE_CREATE_CAPTURE_INTERNAL_REPRESENTATIONS_BIT_KHR
                                      : 0);
}

vkmoe_status vkmoe_pipeline_statistics(vkmoe_context *ctx, VkPipeline pipeline,
                                       vkmoe_statistic *out, uint32_t *count)
{
    const vkmoe_vulkan_functions *vk = &ctx->vk;
    if (!ctx->options.pipeline_statistics || !vk->vkGetPipelineExecutableStatisticsKHR)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED, "the context keeps no pipeline statistics");
    VkPipelineExecutableInfoKHR executable = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
        .pipeline = pipeline,
        .executableIndex = 0, /* a compute pipeline has one */
    };
    VkPipelineExecutableStatisticKHR statistics[VKMOE_MAX_STATISTICS];
    uint32_t n = *count < VKMOE_MAX_STATISTICS ? *count : VKMOE_MAX_STATISTICS;
    for (uint32_t i = 0; i < n; i++)
        statistics[i] = (VkPipelineExecutableStatisticKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
    VkResult result =
        vk->vkGetPipelineExecutableStatisticsKHR(ctx->device, &executable, &n, statistics);
    if (result < VK_SUCCESS)
        return vkmoe_check_vk(ctx, result, "vkGetPipelineExecutableStatisticsKHR");
    for (uint32_t i = 0; i < n; i++) {
        const VkPipelineExecutableStatisticKHR *s = &statistics[i];
        snprintf(out[i].name, sizeof(out[i].name), "%s", s->name);
        switch (s->format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
            out[i].value = s->value.b32;
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
            out[i].value = (double)s->value.i64;
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
            out[i].value = (double)s->value.u64;
            break;
        default:
            out[i].value = s->value.f64;
            break;
        }
    }
    *count = n;
    return VKMOE_OK;
}

vkmoe_status vkmoe_pipeline_statistic(vkmoe_context *ctx, VkPipeline pipeline, const char *name,
                                      uint64_t *value)
{
    vkmoe_statistic all[VKMOE_MAX_STATISTICS];
    uint32_t count = VKMOE_MAX_STATISTICS;
    VKMOE_TRY(vkmoe_pipeline_statistics(ctx, pipeline, all, &count));
    for (uint32_t i = 0; i < count; i++)
        if (strcmp(all[i].name, name) == 0) {
            *value = (uint64_t)all[i].value;
            return VKMOE_OK;
        }
    return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED, "the driver reports no statistic \"%s\"", name);
}

static _Thread_local vkmoe_recorded recorded;

vkmoe_recorded vkmoe_recorded_so_far(void) { return recorded; }

void vkmoe_count_recorded(uint32_t dispatches, uint32_t barriers)
{
    recorded.dispatches += dispatches;
    recorded.barriers += barriers;
}

void vkmoe_dispatch_1d(vkmoe_context *ctx, VkCommandBuffer cmd, VkPipeline pipeline,
                       const void *push, uint32_t push_size, uint64_t groups)
{
    ctx->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    ctx->vk.vkCmdPushConstants(cmd, ctx->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_size,
                               push);
    /* 65535 is the smallest maxComputeWorkGroupCount the spec allows. */
    uint32_t x = groups < 65535 ? (uint32_t)groups : 65535;
    uint32_t y = (uint32_t)vkmoe_div_up(groups, 65535);
    if (groups > 0) {
        ctx->vk.vkCmdDispatch(cmd, x, y, 1);
        vkmoe_count_recorded(1, 0);
    }
}

void vkmoe_barrier(vkmoe_context *ctx, VkCommandBuffer cmd, VkPipelineStageFlags src,
                   VkAccessFlags src_access, VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    VkMemoryBarrier barrier = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = src_access,
        .dstAccessMask = dst_access,
    };
    ctx->vk.vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &barrier, 0, NULL, 0, NULL);
    vkmoe_count_recorded(0, 1);
}

void vkmoe_barrier_compute(vkmoe_context *ctx, VkCommandBuffer cmd)
{
    vkmoe_barrier(ctx, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT,
                  VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                      VK_ACCESS_INDIRECT_COMMAND_READ_BIT);
}

vkmoe_status vkmoe_pipeline_isa(vkmoe_context *ctx, VkPipeline pipeline, char **text)
{
    PFN_vkGetPipelineExecutableInternalRepresentationsKHR get =
        ctx->vk.vkGetPipelineExecutableInternalRepresentationsKHR;
    *text = NULL;
    if (!ctx->options.pipeline_statistics || !ctx->options.pipeline_isa || !get)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED, "the context keeps no pipeline code");
    VkPipelineExecutableInfoKHR executable = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
        .pipeline = pipeline,
    };
    /* Three calls: how many representations, each one's size, the text. */
    VkPipelineExecutableInternalRepresentationKHR r[16];
    uint32_t n = VKMOE_ARRAY_SIZE(r);
    for (uint32_t i = 0; i < n; i++)
        r[i] = (VkPipelineExecutableInternalRepresentationKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INTERNAL_REPRESENTATION_KHR};
    VkResult result = get(ctx->device, &executable, &n, r);
    if (result < VK_SUCCESS)
        return vkmoe_check_vk(ctx, result, "vkGetPipelineExecutableInternalRepresentationsKHR");
    uint32_t last = n;
    for (uint32_t i = 0; i < n; i++)
        if (r[i].isText && r[i].dataSize > 1)
            last = i;
    if (last == n)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED, "the driver keeps no text of the pipeline");
    size_t size = r[last].dataSize;
    if (!(r[last].pData = vkmoe_malloc(size)))
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    uint32_t upto = last + 1; /* the earlier ones' pData stay NULL: sizes only */
    result = get(ctx->device, &executable, &upto, r);
    if (result < VK_SUCCESS) {
        free(r[last].pData);
        return vkmoe_check_vk(ctx, result, "vkGetPipelineExecutableInternalRepresentationsKHR");
    }
    ((char *)r[last].pData)[size - 1] = '\0';
    *text = r[last].pData;
    return VKMOE_OK;
}
