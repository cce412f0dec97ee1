/* The embedded shaders, the one pipeline layout and the context's pipeline
 * cache; recording a dispatch (pipelines.c). */
#ifndef VKMOE_PIPELINES_H
#define VKMOE_PIPELINES_H

#include "context.h"
#include "shader_table.h"

typedef enum vkmoe_shader {
#define VKMOE_SHADER_ID(id, name) VKMOE_SHADER_##id,
    VKMOE_STAGE_SHADERS(VKMOE_SHADER_ID)
        VKMOE_SHADER_STAGES, /* the shaders above: one per stage, in a layer's pipelines */
    VKMOE_SHADER_LAST_STAGE_ = VKMOE_SHADER_STAGES - 1, /* variants number on from STAGES */
    VKMOE_VARIANT_SHADERS(VKMOE_SHADER_ID)
#undef VKMOE_SHADER_ID
        VKMOE_SHADER_MAX,
} vkmoe_shader;

/* Specialization constants are all uint32 and numbered from 0 in order. */
#define VKMOE_MAX_SPEC 8u
typedef struct vkmoe_spec {
    uint32_t count;
    uint32_t values[VKMOE_MAX_SPEC];
} vkmoe_spec;

typedef struct vkmoe_pipeline_entry {
    vkmoe_shader shader;
    vkmoe_spec spec;
    VkPipeline pipeline;
} vkmoe_pipeline_entry;

/* Every shader uses one layout: set 0 = {0: x (read), 1: y (write)}, set 1 =
 * the GEMMs' texel buffers (vkmoe_gemm_source), and a 128-byte push block
 * carrying sizes and buffer device addresses. */
#define VKMOE_PUSH_SIZE 128u

/* The shader's name as shaders/meson.build gives it ("gemm_up_tiled"). */
const char *vkmoe_shader_name(vkmoe_shader shader);

vkmoe_status vkmoe_pipelines_init(vkmoe_context *ctx);
void vkmoe_pipelines_destroy(vkmoe_context *ctx);
/* The pipeline for shader with these specialization constants, created on
 * first use and owned by the context. */
vkmoe_status vkmoe_pipeline_get(vkmoe_context *ctx, vkmoe_shader shader, const vkmoe_spec *spec,
                                VkPipeline *out);
/* The flags that keep a pipeline's statistics and code for the two calls
 * below, as the context's options ask. */
VkPipelineCreateFlags vkmoe_pipeline_capture_flags(const vkmoe_context *ctx);
/* The driver's statistics of a pipeline (executable 0), as many as *count
 * (at most VKMOE_MAX_STATISTICS) into out; *count becomes how many there
 * are. UNSUPPORTED without vkmoe_context_options.pipeline_statistics. */
#define VKMOE_MAX_STATISTICS 64u
typedef struct vkmoe_statistic {
    char name[VK_MAX_DESCRIPTION_SIZE];
    double value;
} vkmoe_statistic;
vkmoe_status vkmoe_pipeline_statistics(vkmoe_context *ctx, VkPipeline pipeline,
                                       vkmoe_statistic *out, uint32_t *count);
/* One of the driver's statistics of a pipeline (executable 0) by the name
 * the driver gives it (RADV: "VGPRs", "SGPRs", "Spilled VGPRs", "Spilled
 * SGPRs", "LDS size", "Subgroups per SIMD"); UNSUPPORTED without
 * vkmoe_context_options.pipeline_statistics or where the driver has none of
 * that name. */
vkmoe_status vkmoe_pipeline_statistic(vkmoe_context *ctx, VkPipeline pipeline, const char *name,
                                      uint64_t *value);
/* The driver's final code of a pipeline (executable 0): the last of its
 * text representations (RADV: ACO's disassembly), in *text (the caller
 * frees it with free()); UNSUPPORTED without vkmoe_context_options.pipeline_isa or
 * where the driver keeps no text. */
vkmoe_status vkmoe_pipeline_isa(vkmoe_context *ctx, VkPipeline pipeline, char **text);
/* Bind, push and dispatch `groups` workgroups along one logical axis; the
 * grid folds into x and y so counts beyond 65535 work (shaders call
 * flat_group_id() from shaders/common/dispatch.glsl). */
void vkmoe_dispatch_1d(vkmoe_context *ctx, VkCommandBuffer cmd, VkPipeline pipeline,
                       const void *push, uint32_t push_size, uint64_t groups);
/* Dispatch and barrier commands recorded on this thread so far: a layer
 * takes the difference over one recording (vkmoe_layer_io), which no other
 * thread's recording can touch. Every dispatch and barrier vkmoe records
 * goes through vkmoe_count_recorded. */
typedef struct vkmoe_recorded {
    uint64_t dispatches, barriers;
} vkmoe_recorded;
vkmoe_recorded vkmoe_recorded_so_far(void);
void vkmoe_count_recorded(uint32_t dispatches, uint32_t barriers);
/* One global memory barrier. */
void vkmoe_barrier(vkmoe_context *ctx, VkCommandBuffer cmd, VkPipelineStageFlags src,
                   VkAccessFlags src_access, VkPipelineStageFlags dst, VkAccessFlags dst_access);
/* A compute-to-compute (and indirect) memory barrier between two stages. */
void vkmoe_barrier_compute(vkmoe_context *ctx, VkCommandBuffer cmd);

#endif /* VKMOE_PIPELINES_H */
