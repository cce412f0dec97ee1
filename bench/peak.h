/* What this device can do at best, measured by the bench itself so that
 * every stage can be stated as a share of it (issue: fast matmuls). */
#ifndef VKMOE_BENCH_PEAK_H
#define VKMOE_BENCH_PEAK_H

#include "vkmoe.h"

typedef struct peak_figures {
    double fp32_gflops; /* an FMA-bound shader */
    double fp16_gflops; /* the same in f16 (0 where the device lacks fp16 arithmetic) */
    /* 16x16x16 f16 cooperative-matrix products into f32 (0 where the device
     * lacks vkmoe_device_info.cooperative_matrix) */
    double fp16_matrix_gflops;
    double copy_gbps; /* a streaming copy shader: bytes read + bytes written */
    double read_gbps; /* a streaming read shader: bytes read */
    /* vkCmdCopyBuffer from host memory into device memory, as an expert
     * cache copies experts in: bytes copied */
    double upload_gbps;
    /* microseconds from one dispatch of a workgroup with next to no work to
     * the next, across the compute barrier a layer records between its
     * stages: the least a stage costs, of a chain of them */
    double dispatch_us;
} peak_figures;

vkmoe_status peak_measure(vkmoe_context *ctx, peak_figures *out);

/* The matrix-core peak's pipeline, on the cooperative-matrix extension the
 * context enabled (KHR where offered, as the GEMMs): the bench times it,
 * vkmoe-shader-stats compiles it. Needs vkmoe_device_info.cooperative_matrix;
 * the caller destroys it. */
vkmoe_status peak_matrix_pipeline(vkmoe_context *ctx, VkPipeline *out);

#endif
