/* The context: one device, its queue and command buffer, its function table
 * and pipeline cache (context.c). */
#ifndef VKMOE_CONTEXT_H
#define VKMOE_CONTEXT_H

#include <stdatomic.h>

/* volk.h first: it must define VK_NO_PROTOTYPES before vulkan.h (tests use
 * its loader as a host application would). */
#include "volk.h"

#include "constants.h"
#include "error.h"
#include "util.h"
#include "vkmoe.h"
#include "vulkan_functions.h"

typedef struct vkmoe_pipeline_entry vkmoe_pipeline_entry;
typedef struct vkmoe_copy_queue vkmoe_copy_queue;

/* What tests change of a context: given at creation
 * (vkmoe_context_create_with), never written into a live one, where cached
 * pipelines and chunked arrays would keep the old values. A zero field
 * changes nothing. */
typedef struct vkmoe_context_options {
    /* Expert-GEMM lanes other than the subgroup size: other GPUs' column
     * layouts (32 NVIDIA and Intel, 64 AMD) run here as several of the
     * device's subgroups. */
    uint32_t gemm_lanes;
    /* New host-visible buffers are filled with 0xff bytes (NaN as f32), so
     * a shader that reads memory nobody wrote shows it in every run instead
     * of when the allocator hands back dirty pages. */
    bool poison_buffers;
    /* VKMOE_GEMM_COOPMAT runs on a device without cooperative matrices, its
     * multiplies emulated (shaders/common/tiled_gemm.glsl), so everything
     * of the path but the matrix instructions runs in CI. */
    bool emulated_matrix_cores;
    /* Lower the device's maxMemoryAllocationSize to this many bytes. */
    uint64_t max_allocation_size;
    /* Lower the device's maxComputeSharedMemorySize to this many bytes (16
     * KiB is the least Vulkan allows), as a smaller GPU's would be. */
    uint32_t max_shared_memory;
    /* Bits of vkmoe_device_info.weight_types to clear, as a driver without
     * those texel formats would. */
    uint32_t hidden_weight_types;
    /* VKMOE_GEMM_AUTO chooses as on a GPU, so the tests run its per-forward
     * choice of kernels on lavapipe. */
    bool auto_as_gpu;
    /* Pipelines are compiled with their statistics kept
     * (VK_KHR_pipeline_executable_properties, which the device must offer),
     * for vkmoe_pipeline_statistic: ./dev shader-stats. */
    bool pipeline_statistics;
    /* With pipeline_statistics: the driver's internal representations kept
     * too (its final code among them), for vkmoe_pipeline_isa: ./dev
     * shader-stats --isa. */
    bool pipeline_isa;
    /* No command pool, command buffer or fence, and no layers: only
     * vkmoe_layer_compile. For RADV's null devices, which compile with AMD's
     * compiler but have no memory and cannot make a fence. */
    bool compile_only;
    /* The loader entry of a context that creates its own instance (NULL:
     * the platform loader's), so that fault injection reaches instance and
     * device creation too. */
    PFN_vkGetInstanceProcAddr get_instance_proc_addr;
    /* Where the device has no dedicated transfer queue (lavapipe), expert
     * copies still go through the copy queue's submissions and timeline,
     * on the compute queue, as they would on a GPU's copy engine. */
    bool copies_on_compute_queue;
    /* VK_KHR_push_descriptor is left off, as on a device without it: each
     * layer writes and binds its own set for x and y. For GPU-assisted
     * validation (./dev test-gpu-av), which in Debian 12's validation layer
     * (1.3.239) takes pushed descriptors for uninitialized ones. */
    bool no_push_descriptors;
    /* Device memory is never mapped, even where the device's is the host's
     * (lavapipe): x, y and every upload and read-back go through staging
     * buffers and copies, as on a discrete GPU. */
    bool discrete_memory;
    /* Depth steps a lane of the GEMV path has in flight, 1 to
     * VKMOE_GEMV_MAX_STEPS (0: the environment's VKMOE_GEMV_STEPS, else
     * the default, VKMOE_GEMV_STEPS): results are the same bits at any. */
    uint32_t gemv_steps;
    /* Output columns a GEMV workgroup covers, its 4 subgroups taking them
     * in turn, 1 to VKMOE_GEMV_MAX_COLUMNS (0: the environment's
     * VKMOE_GEMV_COLUMNS, else the default, VKMOE_GEMV_COLUMNS): the same
     * bits at any. */
    uint32_t gemv_columns;
} vkmoe_context_options;

struct vkmoe_context {
    vkmoe_vulkan_functions vk; /* this context's own: see vulkan_functions.h */
    /* The CPU experts' threads (thread_pool.h): made at their first use,
     * NULL before or where none could be started. */
    struct vkmoe_thread_pool *cpu_pool;
    bool cpu_pool_made; /* NULL above is then final: no thread could start */
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    /* A dedicated transfer family (vkmoe_copy_queue_family), or VKMOE_INVALID. */
    uint32_t copy_family;
    bool timeline_semaphores; /* the feature is enabled */
    VkQueue lent_copy_queue;  /* an import's copy_queue, or VK_NULL_HANDLE */
    /* VK_EXT_external_memory_host is enabled: its minImportedHostPointer-
     * Alignment; 0: no import (vkmoe_buffer_import_host). */
    VkDeviceSize host_import_alignment;
    bool host_huge_pages; /* vkmoe_context_params.host_huge_pages */
    bool owns_device;     /* false when imported: never destroy the host's handles */
    VkDebugUtilsMessengerEXT messenger;

    vkmoe_log_fn log;
    void *log_user;
    vkmoe_log_level log_level;
    vkmoe_queue_lock_fn lock_queue, unlock_queue;
    void *queue_lock_user;

    VkPhysicalDeviceProperties properties;
    VkPhysicalDeviceMemoryProperties memory;
    vkmoe_device_info info;
    float timestamp_period_ns;
    /* Invocations per expert-GEMM workgroup, each owning 8 output columns:
     * the subgroup size, so a workgroup is one subgroup, unless
     * options.gemm_lanes says otherwise. */
    uint32_t gemm_lanes;
    /* The GEMV path's depth steps in flight and output columns a workgroup
     * (options.gemv_steps and gemv_columns resolved). */
    uint32_t gemv_steps, gemv_columns;
    vkmoe_context_options options; /* as given at creation */
    /* VK_NV_cooperative_matrix's feature is enabled and offers the
     * 16x16x16 f16 · f16 + f32 shape at subgroup scope. */
    bool cooperative_matrix;
    /* ... through VK_KHR_cooperative_matrix (preferred where offered). */
    bool cooperative_matrix_khr;
    /* Compute shaders have subgroup arithmetic (subgroupAdd): the GEMV path. */
    bool subgroup_arithmetic;
    /* VK_KHR_push_descriptor is enabled: set 0 (x and y) is pushed into
     * the command buffer at record time, so recording changes no set. */
    bool push_descriptors;
    /* CPU and integrated devices: device-local memory is host-visible, so
     * buffers are mapped and written in place instead of staged. */
    bool unified_memory;

    VkCommandPool command_pool;
    VkCommandBuffer command_buffer; /* for uploads, downloads and host forwards */
    VkFence fence;
    bool fence_pending; /* submitted and not yet waited for (a wait failed) */
    /* Called every 50 µs while vkmoe_context_submit_wait_after waits for
     * the device: an expert-parallel forward's MPI progress on the next
     * micro-batch's exchange. NULL: the wait blocks. */
    void (*while_waiting)(void *user);
    void *while_waiting_user;
    /* A forward's first part, submitted without waiting (the GEMMs that
     * need neither pending copies nor the CPU experts' outputs), and the
     * fence the next use waits for. */
    VkCommandBuffer early_command_buffer;
    VkFence early_fence;
    bool early_pending;
    /* The copy queue (copy_queue.h), or NULL: copies inline. */
    vkmoe_copy_queue *copies;

    /* Layers not yet destroyed; a context destroyed before its layers
     * lingers (destroy_pending) until the last of them goes. */
    unsigned live_layers;
    bool destroy_pending;

    VkDescriptorSetLayout set_layout;
    VkDescriptorSetLayout gemm_set_layout;
    VkPipelineLayout pipeline_layout;
    vkmoe_pipeline_entry *pipelines; /* cache: one entry per (shader, spec) */
    uint32_t pipeline_count;

    atomic_uint validation_errors;
    atomic_bool lost;
};

/* The device's queue families (at most VKMOE_QUEUE_FAMILIES); their count. */
#define VKMOE_QUEUE_FAMILIES 32
uint32_t vkmoe_context_queue_families(const vkmoe_context *ctx, VkPhysicalDevice device,
                                      VkQueueFamilyProperties families[VKMOE_QUEUE_FAMILIES]);
/* vkmoe_context_create with test options (NULL: none). */
vkmoe_status vkmoe_context_create_with(const vkmoe_context_params *params,
                                       const vkmoe_context_options *options, vkmoe_context **out);
/* Wait for the context's last submission where a failed wait left it
 * pending: nothing it uses may be destroyed before. For destroying: a
 * wait that fails again is not retried (a lost device returns at once). */
void vkmoe_context_wait_pending(vkmoe_context *ctx);
/* vkmoe_layer_create and _destroy count the context's live layers. */
void vkmoe_context_add_layer(vkmoe_context *ctx);
void vkmoe_context_remove_layer(vkmoe_context *ctx);
/* Fail with VKMOE_ERROR_DEVICE_LOST when the context has lost its device. */
vkmoe_status vkmoe_context_check_alive(const vkmoe_context *ctx);
/* Whether kernels take the shapes measured on CPU devices (lavapipe): a
 * CPU device, unless options.auto_as_gpu has it choose as a GPU would. */
bool vkmoe_context_cpu_shaped(const vkmoe_context *ctx);
/* Begin recording the context's own command buffer, once a submission
 * still pending (the early one, or one whose wait failed) has completed;
 * a failed wait is the status. */
vkmoe_status vkmoe_context_begin(vkmoe_context *ctx, VkCommandBuffer *cmd);
/* End cmd and submit it to queue: after the copy queue's timeline reaches
 * `wait`, signalling it to `signal` (0: neither), with fence (may be
 * VK_NULL_HANDLE), under the host's lock where queue is the compute queue. */
vkmoe_status vkmoe_context_queue_submit(vkmoe_context *ctx, VkQueue queue, VkCommandBuffer cmd,
                                        uint64_t wait, uint64_t signal, VkFence fence);
/* End, submit and wait for the context's command buffer. */
vkmoe_status vkmoe_context_submit_wait(vkmoe_context *ctx);
/* The same, its compute waiting first for the copy queue's timeline to
 * reach `copies` (0: no wait). */
vkmoe_status vkmoe_context_submit_wait_after(vkmoe_context *ctx, uint64_t copies);
/* Begin recording the early command buffer, once its last submission is done. */
vkmoe_status vkmoe_context_begin_early(vkmoe_context *ctx, VkCommandBuffer *cmd);
/* End and submit it after `copies` without waiting: a later submission's
 * wait covers it (vkmoe_context_wait_pending too). */
vkmoe_status vkmoe_context_submit_early(vkmoe_context *ctx, uint64_t copies);

#endif /* VKMOE_CONTEXT_H */
