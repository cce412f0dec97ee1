/*
 * vkmoe: Mixture-of-Experts layers on any Vulkan 1.2 GPU.
 *
 * One header, opaque handles, create/destroy pairs. Every function returns a
 * vkmoe_status; on failure a readable message is available from
 * vkmoe_last_error() on the calling thread and is also sent to the context's
 * log callback. The library never aborts, exits or prints on its own.
 *
 * Thread safety: a context and the layers made from it may be used from
 * several threads only with external synchronisation; different contexts are
 * independent.
 */
#ifndef VKMOE_H
#define VKMOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vulkan/vulkan.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version lives here only; meson.build reads it for the soname. */
#define VKMOE_VERSION_MAJOR 0
#define VKMOE_VERSION_MINOR 1
#define VKMOE_VERSION_PATCH 0

#if defined(_WIN32) && defined(VKMOE_BUILDING_DLL)
#define VKMOE_API __declspec(dllexport)
#elif defined(__GNUC__) && defined(VKMOE_BUILDING)
#define VKMOE_API __attribute__((visibility("default")))
#else
#define VKMOE_API
#endif

/* Status codes: 0 is success, errors are negative and grouped by cause. */
typedef enum vkmoe_status {
    VKMOE_OK = 0,
    /* An argument is NULL, out of range or inconsistent with the others. */
    VKMOE_ERROR_INVALID_ARGUMENT = -1,
    /* The request is valid but this build or this device cannot do it: a
     * missing feature, or a size over a device limit that is not memory
     * (max_tokens·dim·4 bytes of x or y over maxStorageBufferRange). */
    VKMOE_ERROR_UNSUPPORTED = -2,
    /* No Vulkan device (or none that matches the request) was found. */
    VKMOE_ERROR_NO_DEVICE = -3,
    /* malloc failed or VK_ERROR_OUT_OF_HOST_MEMORY. */
    VKMOE_ERROR_OUT_OF_HOST_MEMORY = -4,
    /* VK_ERROR_OUT_OF_DEVICE_MEMORY, a buffer over the device's
     * maxMemoryAllocationSize, or a layer whose weights exceed the device's
     * largest memory heap. */
    VKMOE_ERROR_OUT_OF_DEVICE_MEMORY = -5,
    /* VK_ERROR_DEVICE_LOST; the context stays failed, destroy and recreate it. */
    VKMOE_ERROR_DEVICE_LOST = -6,
    /* Any other Vulkan failure; the message names the call and the VkResult. */
    VKMOE_ERROR_VULKAN = -7,
    /* A call made in the wrong order, e.g. a forward before all weights are set. */
    VKMOE_ERROR_STATE = -8,
    /* A model file is malformed, truncated or disagrees with itself; the
     * message names the file and what is wrong. */
    VKMOE_ERROR_FILE_FORMAT = -9,
    /* A model file could not be opened, read or mapped. */
    VKMOE_ERROR_IO = -10,
    /* The caller's progress callback asked to stop (vkmoe_model_params). */
    VKMOE_ERROR_CANCELLED = -11,
    /* Another rank of an expert-parallel forward failed (its own call
     * returns the cause; the message here names the rank), or the exchange
     * between ranks did (an MPI call's error, where the communicator's error
     * handler returns one). */
    VKMOE_ERROR_PEER = -12,
} vkmoe_status;

/* A static English description of a status code; never NULL. */
VKMOE_API const char *vkmoe_status_string(vkmoe_status status);

/* The message of the last failed vkmoe call on this thread ("" if none).
 * Valid until the next failing vkmoe call on the same thread. */
VKMOE_API const char *vkmoe_last_error(void);

typedef enum vkmoe_log_level {
    VKMOE_LOG_ERROR = 0, /* a call failed, or the validation layer reported an error */
    VKMOE_LOG_WARNING = 1,
    VKMOE_LOG_INFO = 2, /* device choice, memory sizes */
    VKMOE_LOG_DEBUG = 3,
} vkmoe_log_level;

/* Receives each message at or below the context's log level. Called on the
 * thread that made the call (validation messages: on the driver's thread).
 * message is valid until the callback returns and is the callback's own:
 * the callback may call vkmoe (a failing call there changes neither
 * message nor, once the callback returns, vkmoe_last_error()). */
typedef void (*vkmoe_log_fn)(void *user, vkmoe_log_level level, const char *message);

/* ------------------------------------------------------------------------ */
/* Context: one Vulkan device and queue.                                     */
/* ------------------------------------------------------------------------ */

typedef struct vkmoe_context vkmoe_context;

/* Optional queue lock for an imported queue that the host also submits to.
 * Both NULL: vkmoe assumes it may submit to the queue at any time. */
typedef void (*vkmoe_queue_lock_fn)(void *user);

/* A Vulkan device owned by the host application. vkmoe never destroys any
 * of these handles and never waits for the whole device: only for its own
 * submissions. The instance and device must be Vulkan 1.2 or newer (a
 * device function vkmoe needs that the device does not give, as a device of
 * a 1.1 instance lacks vkGetBufferDeviceAddress, is refused with
 * VKMOE_ERROR_UNSUPPORTED naming it); queue_family must exist and support
 * compute (else VKMOE_ERROR_INVALID_ARGUMENT). The device must have been
 * created with the bufferDeviceAddress feature enabled: Vulkan offers no way
 * to ask a VkDevice which features were enabled, so vkmoe checks only that
 * the physical device supports it, and a device created without it fails
 * under the validation layer rather than with a status. */
typedef struct vkmoe_vulkan_import {
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    /* The host's loader entry point; NULL: vkmoe loads libvulkan itself. */
    PFN_vkGetInstanceProcAddr get_instance_proc_addr;
    /* The API version the instance was created with; 0 means 1.2. */
    uint32_t api_version;
    vkmoe_queue_lock_fn lock_queue;   /* may be NULL */
    vkmoe_queue_lock_fn unlock_queue; /* may be NULL */
    void *queue_lock_user;
    /* The device was created with VK_KHR_push_descriptor enabled: vkmoe
     * then binds a recorded forward's x and y in the command buffer (see
     * vkmoe_layer_record_forward). Default false. */
    bool push_descriptor;
    /* A queue the host lends for the expert caches' copies (best a
     * transfer-only family's: a copy engine) and its family, which must
     * support transfers; the device must have been created with Vulkan
     * 1.2's timelineSemaphore feature enabled. vkmoe submits to it only
     * copies (never waiting for the host's work on it); where it is `queue`
     * itself, lock_queue covers it. VK_NULL_HANDLE (default): copies run on
     * `queue` before the GEMMs that read them. */
    VkQueue copy_queue;
    uint32_t copy_queue_family;
    /* The device was created with VK_EXT_external_memory_host enabled: the
     * expert caches then hand it host memory of the process's own, as on a
     * device vkmoe creates (vkmoe_device_info.host_memory_import). A device
     * that does not offer the extension is refused with
     * VKMOE_ERROR_UNSUPPORTED. Default false: the caches' host copies are
     * the driver's host memory, and a model file's experts are copied there. */
    bool external_memory_host;
} vkmoe_vulkan_import;

/* Zero-initialise, then set what you need: every zero field means default. */
typedef struct vkmoe_context_params {
    /* Which device: NULL or "" picks the best one (discrete > integrated >
     * virtual > CPU); a decimal string picks that index in enumeration
     * order; anything else picks the first device whose name contains it.
     * Ignored when importing. Default NULL. */
    const char *device;
    /* Enable the Khronos validation layer (own instance only). Also enabled
     * by the environment variable VKMOE_VALIDATION=1. Its errors go to the
     * log callback at VKMOE_LOG_ERROR. Default false. */
    bool validation;
    /* Log callback and its user pointer; NULL: no logging. Default NULL. */
    vkmoe_log_fn log;
    void *log_user;
    /* Most verbose level passed to the callback. Default VKMOE_LOG_ERROR. */
    vkmoe_log_level log_level;
    /* Run on the host's device instead of creating one. Borrowed for the
     * call only (the handles inside it must outlive the context). Default NULL. */
    const vkmoe_vulkan_import *import;
    /* An expert cache's host copies of the experts
     * (vkmoe_layer_params.expert_budget_bytes), which CPU experts stream
     * through, in memory of the process's own advised into huge pages
     * (Linux's transparent huge pages; the device imports it through
     * VK_EXT_external_memory_host) rather than the driver's host memory:
     * fewer TLB misses, and no prefetcher stopping at every 4 KiB. A model
     * file's experts are then copied there rather than lent in place (its
     * pages are the page cache's small ones). Ignored where the device
     * imports no host memory (vkmoe_device_info.host_memory_import). Measured on a 2-core Zen 4 VM
     * (README): a test program's reads of random 2.4 MB experts 10-15% faster, the bench's decode
     * no different beyond its noise; on an earlier VM the f16 decode 1.45x faster but every other 4
     * KiB-page read of the process 3-5x slower, hence opt-in. Default false. */
    bool host_huge_pages;
} vkmoe_context_params;

/* Facts about the context's device, for display and sizing decisions. */
typedef struct vkmoe_device_info {
    char name[256];
    char driver[256]; /* driver name and info, e.g. "llvmpipe: Mesa 22.3.6" */
    VkPhysicalDeviceType type;
    uint32_t api_version; /* VK_MAKE_API_VERSION encoded */
    uint32_t vendor_id;
    uint32_t subgroup_size;
    uint64_t max_storage_buffer_range; /* bytes one descriptor may cover */
    uint64_t max_allocation_size;      /* bytes one allocation may hold */
    uint64_t device_memory;            /* bytes in the largest device-local heap */
    uint32_t shared_memory;            /* bytes of workgroup shared memory */
    /* fp16 arithmetic in shaders: supported, and enabled on a device vkmoe
     * created (an imported device's features are the host's business). */
    bool shader_float16;
    bool timestamps; /* the queue supports timestamp queries */
    /* Bit t set: expert weights of vkmoe_weight_type t run on this device
     * (the driver reads their texel format, R32_UINT for the GGUF blocks or
     * R32G32B32A32_UINT for values and for blocks of a multiple of 16 bytes,
     * Q4_K's and Q5_K's, and R32G32B32A32_SFLOAT for activations, through
     * uniform texel buffers). Vulkan requires all of these formats, so a
     * conformant device has every bit; a layer of a type without its bit is
     * refused with VKMOE_ERROR_UNSUPPORTED. */
    uint32_t weight_types;
    /* VK_KHR_cooperative_matrix (preferred) or VK_NV_cooperative_matrix with
     * 16x16x16 f16 multiplies accumulating in f32 at subgroup scope, fp16
     * arithmetic and the Vulkan memory model: supported, and enabled on a
     * device vkmoe created (false for imported devices). Needed by
     * VKMOE_GEMM_COOPMAT. */
    bool cooperative_matrix;
    /* VK_KHR_push_descriptor is used: enabled on a device vkmoe created
     * where the driver offers it, or as the import says. Recording a
     * forward then changes no descriptor set of the layer
     * (vkmoe_layer_record_forward). */
    bool push_descriptors;
    /* The expert caches' copies (vkmoe_layer_params.expert_budget_bytes,
     * vkmoe_layer_prefetch) run on a queue of their own, beside the
     * compute: a device vkmoe created has a queue family with transfer but
     * neither compute nor graphics, and timeline semaphores, or the import
     * lent a copy_queue other than its queue. False elsewhere (lavapipe):
     * copies then run on the compute queue, before the GEMMs that read them. */
    bool copy_queue;
    /* VK_EXT_external_memory_host is used: enabled on a device vkmoe created
     * where the driver offers it (lavapipe, RADV, ANV, NVIDIA), or as the
     * import says (vkmoe_vulkan_import.external_memory_host). The device
     * then reads host memory of the process's own: an expert cache lends it
     * a model file's pages (vkmoe_model_open) and host_huge_pages's memory
     * instead of copying into the driver's host memory. */
    bool host_memory_import;
} vkmoe_device_info;

/* Number of Vulkan physical devices that vkmoe could use (Vulkan >= 1.2,
 * compute queue, buffer device addresses). 0 with VKMOE_OK when there are none. */
VKMOE_API vkmoe_status vkmoe_device_count(uint32_t *count);

/* Create a context. params may be NULL (all defaults). On failure *out is NULL. */
VKMOE_API vkmoe_status vkmoe_context_create(const vkmoe_context_params *params,
                                            vkmoe_context **out);

/* Destroy a context and set *ctx to NULL. Accepts NULL and a pointer to NULL.
 * Destroy the context's layers first: a context destroyed while layers of
 * it live logs an error and lingers until the last of them is destroyed,
 * which then destroys it (no layer is left pointing at freed memory). */
VKMOE_API void vkmoe_context_destroy(vkmoe_context **ctx);

/* Fill *info with the context's device facts. */
VKMOE_API vkmoe_status vkmoe_context_device_info(const vkmoe_context *ctx, vkmoe_device_info *info);

/* Number of errors the validation layer has reported on this context (0 if
 * validation is off). Tests fail when it is not zero. */
VKMOE_API uint32_t vkmoe_context_validation_errors(const vkmoe_context *ctx);

/* ------------------------------------------------------------------------ */
/* Layer: the weights and scratch of one MoE feed-forward block.             */
/* ------------------------------------------------------------------------ */

typedef struct vkmoe_layer vkmoe_layer;

/* How expert weights are stored on the device. The router is always f32. */
typedef enum vkmoe_weight_type {
    VKMOE_WEIGHT_F32 = 0,
    VKMOE_WEIGHT_F16 = 1, /* IEEE half, passed as uint16_t bit patterns */
    /* bfloat16 (the upper 16 bits of an f32, as Hugging Face checkpoints
     * store it), passed as uint16_t bit patterns */
    VKMOE_WEIGHT_BF16 = 2,
    /* GGUF's Q8_0: blocks of 32 weights along a row, each an f16 scale d
     * then 32 int8 q (34 bytes), weight = d·q. Rows (the input width of
     * each matrix: dim, ffn_dim, shared_ffn_dim) must be multiples of 32. */
    VKMOE_WEIGHT_Q8_0 = 3,
    /* GGUF's Q4_0: blocks of 32 weights, an f16 scale d then 16 bytes whose
     * low nibbles are weights 0..15 and high nibbles 16..31 (18 bytes),
     * weight = d·(q − 8). Rows must be multiples of 32, as for Q8_0. */
    VKMOE_WEIGHT_Q4_0 = 4,
    /* GGUF's Q4_K: super-blocks of 256 weights in 144 bytes: f16 d and dmin,
     * 12 bytes packing eight 6-bit scales sc_j and mins m_j, then 128 bytes
     * of 4-bit q (bytes 32i..32i+31 hold sub-block 2i in their low nibbles,
     * 2i+1 in their high ones); weight = d·sc_j·q − dmin·m_j for sub-block
     * j of 32. Rows must be multiples of 256. */
    VKMOE_WEIGHT_Q4_K = 5,
    /* GGUF's Q6_K: super-blocks of 256 weights in 210 bytes: 128 bytes of
     * the low 4 bits of q, 64 of the high 2 bits, sixteen int8 scales sc_j
     * (one per 16 weights), then f16 d; weight = d·sc_j·(q − 32). Rows
     * must be multiples of 256. */
    VKMOE_WEIGHT_Q6_K = 6,
    /* GGUF's Q4_1: blocks of 32 weights, an f16 scale d and an f16 minimum
     * m then 16 bytes of 4-bit q laid out as Q4_0's (20 bytes), weight =
     * d·q + m. Rows must be multiples of 32. */
    VKMOE_WEIGHT_Q4_1 = 7,
    /* GGUF's Q5_0: blocks of 32 weights in 22 bytes: an f16 scale d, a
     * little-endian 32-bit word whose bit i is the fifth bit of weight i's
     * q, then 16 bytes of the low 4 bits laid out as Q4_0's; weight =
     * d·(q − 16). Rows must be multiples of 32. */
    VKMOE_WEIGHT_Q5_0 = 8,
    /* GGUF's Q5_1: Q5_0's codes after an f16 scale d and an f16 minimum m
     * (24 bytes); weight = d·q + m. Rows must be multiples of 32. */
    VKMOE_WEIGHT_Q5_1 = 9,
    /* GGUF's Q5_K: super-blocks of 256 weights in 176 bytes: Q4_K's f16 d,
     * dmin and 12 bytes of scales and mins, 32 bytes of fifth bits (weight
     * 64g + l at bit 2g of byte l, 64g + 32 + l at bit 2g + 1), then Q4_K's
     * 128 bytes of low 4 bits; weight = d·sc_j·q − dmin·m_j per sub-block
     * of 32. Rows must be multiples of 256. */
    VKMOE_WEIGHT_Q5_K = 10,
    /* GGUF's Q3_K: super-blocks of 256 weights in 110 bytes: 32 bytes of
     * the codes' third bits (weight i at bit i/32 of byte i%32), 64 bytes
     * of their low 2 bits (weight 128h + 32c + l at bits 2c of byte 32h + l),
     * 12 bytes of sixteen 6-bit scales sc_j (stored + 32: low nibbles in
     * bytes 0..7, j < 8 low and j ≥ 8 high; top 2 bits at bit 2(j/4) of
     * byte 8 + j%4), then f16 d; weight = d·sc_j·(q − 4) per sub-block of
     * 16. Rows must be multiples of 256. */
    VKMOE_WEIGHT_Q3_K = 11,
    /* GGUF's Q2_K: super-blocks of 256 weights in 84 bytes: sixteen bytes
     * each a sub-block of 16's 4-bit scale sc_j (low nibble) and min m_j
     * (high), 64 bytes of 2-bit q laid out as Q3_K's low bits, then f16 d
     * and dmin; weight = d·sc_j·q − dmin·m_j. Rows must be multiples of 256. */
    VKMOE_WEIGHT_Q2_K = 12,
    /* GGUF's IQ4_NL: blocks of 32 weights in 18 bytes: an f16 scale d then
     * 16 bytes of 4-bit indices laid out as Q4_0's into the levels {−127,
     * −104, −83, −65, −49, −35, −22, −10, 1, 13, 25, 38, 53, 69, 89, 113};
     * weight = d·level. Rows must be multiples of 32. */
    VKMOE_WEIGHT_IQ4_NL = 13,
    /* GGUF's IQ4_XS: super-blocks of 256 weights in 136 bytes: f16 d, a
     * little-endian 16-bit word of the 6-bit scales' top 2 bits (sub-block
     * j of 32 at bit 2j), 4 bytes of their low 4 bits (j at nibble j%2 of
     * byte j/2), then each sub-block's 16 bytes of IQ4_NL indices; weight
     * = d·(ls_j − 32)·level. Rows must be multiples of 256. */
    VKMOE_WEIGHT_IQ4_XS = 14,
    /* MXFP4 (OCP microscaling, GGUF's MXFP4, GPT-OSS's experts): blocks of
     * 32 weights in 17 bytes: an E8M0 exponent e then 16 bytes of 4-bit
     * E2M1 codes laid out as Q4_0's (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their
     * negatives); weight = 2^(e−127)·fp4(q). Rows must be multiples of 32. */
    VKMOE_WEIGHT_MXFP4 = 15,
} vkmoe_weight_type;

/* The type's name as vkmoe-bench's --weights spells it: the enum's name in
 * lower case ("f32", "bf16", "q4_k", "iq4_xs", "mxfp4", …); NULL for an
 * unknown type. */
VKMOE_API const char *vkmoe_weight_type_name(vkmoe_weight_type type);

/* Weights per storage block of this type: 1 for f32, f16 and bf16, 32 for
 * Q8_0, Q5_0, Q5_1, Q4_0, Q4_1, IQ4_NL and MXFP4, 256 for the k-quants
 * (Q6_K, Q5_K, Q4_K, Q3_K, Q2_K) and IQ4_XS; 0 for an unknown type. Every
 * row of a matrix (dim, ffn_dim, shared_ffn_dim) must be whole blocks. */
VKMOE_API uint32_t vkmoe_weight_block(vkmoe_weight_type type);

/* Bytes that `weights` weights of this type take (a multiple of
 * vkmoe_weight_block(type)); 0 for an unknown type, a count that is not
 * whole blocks, or one whose bytes do not fit in size_t. */
VKMOE_API size_t vkmoe_weight_bytes(vkmoe_weight_type type, uint64_t weights);

/* Encode n f32 values as `type` into dst (dst_size bytes, at least
 * vkmoe_weight_bytes(type, n)): f16 and bf16 round to nearest even; the
 * GGUF types quantize each block as ggml's reference quantizer
 * (quantize_row_*_ref) does, so the blocks equal a GGUF file's:
 * Q8_0: d = max|x| / 127 as f16, q = round(x / d) half away from zero;
 * Q4_0: d = m / −8 for the x of largest magnitude m, q = min(15,
 * trunc(x / d + 8.5));
 * Q4_1: m = min x, d = (max x − m) / 15, q = min(15, trunc((x − m) / d + 0.5));
 * Q4_K: each sub-block of 32 fits a scale and a min by weighted least
 * squares over 21 candidate grids, the eight scales and mins are quantized
 * to 6 bits against the largest, and q is re-rounded on the stored grid;
 * Q6_K: each sub-block of 16 fits a symmetric scale (19 candidates,
 * weighted by x²), the scales are quantized to int8 against the largest,
 * and q is re-rounded on the stored grid. */
VKMOE_API vkmoe_status vkmoe_quantize(vkmoe_weight_type type, const float *src, size_t n, void *dst,
                                      size_t dst_size);
/* Decode n weights of `type` from src into f32 dst: what the device computes with. */
VKMOE_API vkmoe_status vkmoe_dequantize(vkmoe_weight_type type, const void *src, size_t n,
                                        float *dst);

/* How tokens choose experts. l = x·Wgᵀ (+ bg when router_bias) are the
 * router logits of a token; "top-k" keeps the k largest values, ties going
 * to the lowest expert index and NaN ranking below every number. */
typedef enum vkmoe_router_type {
    /* p = softmax(l); top-k of p, or with selection_bias of p + b_sel;
     * weights p of the chosen; normalize_topk divides them by their sum,
     * floored at 1e-12 (which only a selection bias can reach). With
     * groups, a group's score is its largest key. Mixtral, Qwen, OLMoE,
     * Switch, GShard, DeepSeek-V2; ERNIE-4.5 with the bias. */
    VKMOE_ROUTER_SOFTMAX_TOPK = 0,
    /* s = sigmoid(l); top-k of s + b_sel (selection_bias); weights s of the
     * chosen, without the bias; normalize_topk divides them by their sum plus
     * 1e-20. With groups, a group's score is the sum of its two largest
     * s + b_sel. DeepSeek-V3. */
    VKMOE_ROUTER_SIGMOID_TOPK = 1,
    /* top-k of l; weights softmax over the k chosen logits. GPT-OSS,
     * Granite-MoE. */
    VKMOE_ROUTER_TOPK_SOFTMAX = 2,
    /* top-k of l; weights sigmoid(l) of the chosen (normalize_topk divides
     * them by their sum). Llama 4, with scale_expert_input. */
    VKMOE_ROUTER_TOPK_SIGMOID = 3,
} vkmoe_router_type;

/* The expert feed-forward function. g = x·W1ᵀ (+ b1), u = x·W3ᵀ (+ b3) with
 * the expert biases when expert_bias; out = h·W2ᵀ (+ b2). */
typedef enum vkmoe_activation {
    /* h = silu(g) ⊙ u. Mixtral, Qwen, DeepSeek, OLMoE. */
    VKMOE_ACTIVATION_SWIGLU = 0,
    /* h = relu(u): no gate matrix (W1 is neither stored nor set); the one
     * input projection (T5/Switch "wi") is the UP matrix. Switch. */
    VKMOE_ACTIVATION_RELU = 1,
    /* GPT-OSS's clamped SwiGLU: g' = min(g, limit), u' = clamp(u, -limit,
     * limit), h = (u' + 1) · g' · sigmoid(alpha · g'). */
    VKMOE_ACTIVATION_SWIGLU_CLAMPED = 2,
} vkmoe_activation;

/* How the expert GEMMs run. Every path computes the same products with f32
 * accumulation; they differ in speed and, for COOPMAT, in rounding. */
typedef enum vkmoe_gemm_path {
    /* The library's choice per device and per forward
     * (vkmoe_context_auto_gemm_paths): on CPU devices VKMOE_GEMM_REGISTER,
     * the path measured there (README, "Performance"); on GPUs
     * VKMOE_GEMM_GEMV for forwards of at most 16 tokens and
     * VKMOE_GEMM_TILED for longer ones, chosen by their compilers'
     * statistics and not yet measured. */
    VKMOE_GEMM_AUTO = 0,
    /* A lane keeps 16 rows x 8 columns of output in registers and reads rows
     * and weights through texel buffers; experts with few rows take 4- and
     * 1-row (GEMV) passes that stream their weights once. Every device. */
    VKMOE_GEMM_REGISTER = 1,
    /* Workgroups of 4 subgroups compute 32x64 tiles (64x64 where subgroups
     * have 64 lanes and shared memory holds 24 KiB) from A and weight tiles
     * staged in shared memory (14 KiB at 32 rows). Every device whose
     * workgroups hold 4 subgroups (else VKMOE_ERROR_UNSUPPORTED); meant for
     * GPUs, where it is not yet measured. */
    VKMOE_GEMM_TILED = 2,
    /* TILED with the tiles multiplied by cooperative matrices (KHR where the
     * device offers them, else NV; 16x16x16, f16 inputs, f32 accumulation),
     * in tiles of 32x128. The activations, and the weights as decoded, are
     * rounded to f16 (every weight type; finite weights beyond ±65504 would
     * become ±Inf). Needs vkmoe_device_info.cooperative_matrix and 26 KiB of
     * shared memory (vkmoe_device_info.shared_memory), else
     * VKMOE_ERROR_UNSUPPORTED. Not yet run on hardware (README, "Expert GEMM
     * paths"). */
    VKMOE_GEMM_COOPMAT = 3,
    /* Made for GPUs' decode: a subgroup computes one output column at a
     * time, its lanes reading consecutive weights of the column's row
     * (coalesced) and summing with a subgroup reduction; each expert's
     * weights are read once for up to 16 of its rows. Every weight type;
     * needs subgroup arithmetic in compute shaders and workgroups of 4
     * subgroups, else VKMOE_ERROR_UNSUPPORTED. Not yet measured on a GPU. */
    VKMOE_GEMM_GEMV = 4,
} vkmoe_gemm_path;

/* The path's name as vkmoe-bench's and vkmoe-run's --gemm spell it ("auto",
 * "register", "tiled", "coopmat", "gemv"); NULL for an unknown path. */
VKMOE_API const char *vkmoe_gemm_path_name(vkmoe_gemm_path path);

/* The path of that name (as vkmoe_gemm_path_name spells it) into *path;
 * VKMOE_ERROR_INVALID_ARGUMENT naming the known ones for any other name. */
VKMOE_API vkmoe_status vkmoe_gemm_path_parse(const char *name, vkmoe_gemm_path *path);

/* The paths VKMOE_GEMM_AUTO takes on the context's device: *decode for
 * forwards of at most 16 tokens (every expert then has at most 16 rows),
 * *prefill for longer ones; *why (may be NULL) gets a sentence saying why
 * and whether the choice rests on measurement, a static string. CPU devices
 * (lavapipe): the register path for both, as measured; GPUs: GEMV and
 * tiled, chosen by their compilers' statistics, not yet by measurement
 * (README, "Expert GEMM paths"). Any argument NULL but why:
 * VKMOE_ERROR_INVALID_ARGUMENT. */
VKMOE_API vkmoe_status vkmoe_context_auto_gemm_paths(const vkmoe_context *ctx,
                                                     vkmoe_gemm_path *decode,
                                                     vkmoe_gemm_path *prefill, const char **why);

/* How a layer with an expert cache (vkmoe_layer_params.expert_budget_bytes)
 * chooses which expert to evict from the device when a forward needs
 * another. Experts the forward needs are never evicted for it; ties go to
 * the least recently needed, then the lowest expert index. */
typedef enum vkmoe_cache_policy {
    /* Frequency with recency, from the router's own counts: each expert
     * keeps a score that every forward multiplies by 0.9 and raises by 1
     * where the forward routed any token to the expert; the lowest score
     * goes. Keeps a model's hot experts through bursts of rare ones. */
    VKMOE_CACHE_FREQUENCY = 0,
    /* The least recently needed expert goes. */
    VKMOE_CACHE_LRU = 1,
} vkmoe_cache_policy;

/* Zero-initialise, then set the four required shape fields (or start from
 * vkmoe_layer_params_family()). Every other zero field means its default. */
typedef struct vkmoe_layer_params {
    uint32_t dim;     /* model width D, required, >= 1 */
    uint32_t ffn_dim; /* expert hidden width F, required, >= 1 */
    uint32_t experts; /* number of routed experts E, required, 1..2048 */
    uint32_t top_k;   /* experts per token k, required, 1..min(E, 32) */
    /* Most tokens one forward may take; sizes the scratch memory.
     * Default (0): 1. At most 1 << 22 / top_k. */
    uint32_t max_tokens;
    /* How the gate and up projections (routed and shared) are stored;
     * default VKMOE_WEIGHT_F32. */
    vkmoe_weight_type weight_type;
    /* How the down projections (routed and shared) are stored, where it
     * differs from weight_type: GGUF's Q4_K_M files keep gate and up in Q4_K
     * and many layers' down in Q6_K. Default (0, VKMOE_WEIGHT_F32): the same
     * as weight_type, so f32 down projections beside other gate and up
     * types are not offered. */
    vkmoe_weight_type down_weight_type;
    /* How x and y are stored, in vkmoe_layer_forward's host arrays and
     * vkmoe_layer_record_forward's buffers: VKMOE_WEIGHT_F32 (default),
     * VKMOE_WEIGHT_F16 or VKMOE_WEIGHT_BF16 (uint16_t bit patterns, [tokens]
     * [dim] as f32's). The layer computes in f32 either way: x is widened
     * exactly, y rounded to nearest even once at the end. 16 bits need an
     * even dim (two values share each 32-bit word the shader writes). */
    vkmoe_weight_type io_type;
    vkmoe_router_type router; /* default VKMOE_ROUTER_SOFTMAX_TOPK */
    /* Divide the chosen weights by their sum (Mixtral, Qwen3, DeepSeek-V3:
     * true; Qwen1.5/2-MoE, OLMoE, DeepSeek-V2: false). Default false. */
    bool normalize_topk;
    /* The routing weight w scales the expert's input instead of its
     * output: y = Σ_j E_j(w_j · x) (Llama 4; exact for any expert function
     * as w · (x·Wᵀ) + b is applied before the activation), where the default
     * is y = Σ_j w_j · E_j(x). Default false. */
    bool scale_expert_input;
    /* Multiply the weights, after any normalisation, by this factor
     * (DeepSeek's routed_scaling_factor). Default (0): 1. Must be finite and
     * positive. */
    float routed_scaling_factor;
    /* Group-limited routing: the E experts form expert_groups equal groups
     * of consecutive indices; each token keeps its topk_groups best groups
     * (ties: lowest group index) and picks its k experts among theirs.
     * expert_groups must divide E and be at most 64; default (0): 1, no
     * limit. topk_groups default (0): all groups. k must not exceed
     * topk_groups · E / expert_groups. DeepSeek-V3: 8 and 4. */
    uint32_t expert_groups;
    uint32_t topk_groups;
    /* The router has a bias bg [E] (vkmoe_layer_set_router_bias). GPT-OSS.
     * Default false. */
    bool router_bias;
    /* VKMOE_ROUTER_SIGMOID_TOPK and VKMOE_ROUTER_SOFTMAX_TOPK: a selection
     * bias b_sel [E] that steers the choice but not the weights
     * (DeepSeek-V3's and ERNIE-4.5's e_score_correction_bias;
     * vkmoe_layer_set_selection_bias). Default false. */
    bool selection_bias;
    /* Drop slots beyond each expert's capacity ceil(capacity_factor · T · k
     * / E), T the forward's token count. An expert keeps slots in priority
     * order: slot 0 of every token in token order, then slot 1, and so on; a
     * dropped slot adds nothing to y (the caller's residual carries the
     * token). Switch, GShard. Default (0): dropless. Must be finite, >= 0. */
    float capacity_factor;
    vkmoe_activation activation; /* default VKMOE_ACTIVATION_SWIGLU */
    /* Every routed expert has biases b1 [F], b3 [F], b2 [D]
     * (vkmoe_layer_set_expert_bias). GPT-OSS. Default false. */
    bool expert_bias;
    /* VKMOE_ACTIVATION_SWIGLU_CLAMPED: the clamp limit, default (0) 7, and
     * alpha, default (0) 1.702. */
    float swiglu_limit;
    float swiglu_alpha;
    /* Width of the shared expert, an always-on SwiGLU FFN whose output is
     * added to every token's y (DeepSeek: n_shared_experts ·
     * moe_intermediate_size, as several shared experts of width F are one
     * FFN of their concatenated rows; Qwen1.5/2-MoE:
     * shared_expert_intermediate_size). Its weights are set with
     * vkmoe_layer_set_shared_expert. Default 0: none. */
    uint32_t shared_ffn_dim;
    /* Scale the shared expert's output by sigmoid(x·ws), ws [D] set with
     * vkmoe_layer_set_shared_gate (Qwen1.5/2-MoE). Needs shared_ffn_dim.
     * Default false: added unscaled (DeepSeek). */
    bool shared_gate;
    /* Keep what vkmoe_layer_load_stats() reports; costs a little router
     * work and max_tokens · E · 4 bytes of memory. Default false. */
    bool statistics;
    /* Record GPU timestamps around every stage; read them with
     * vkmoe_layer_timings(). Needs device timestamp support. Default false. */
    bool timing;
    /* The expert GEMMs' path (the router's logits always take the register
     * path). Default VKMOE_GEMM_AUTO. */
    vkmoe_gemm_path gemm_path;
    /* Device memory, in bytes, for the routed experts' matrices. Default
     * (0), or at least what all experts take: every expert on the device.
     * Less: the layer keeps every expert's matrices in host memory that the
     * device can copy from, and budget / vkmoe_expert_bytes(params) slots on
     * the device (at least one; a budget smaller than one expert is
     * VKMOE_ERROR_INVALID_ARGUMENT), an expert cache: each forward reads
     * back which experts its tokens chose, copies those not on the device
     * into slots (evicting by cache_policy), and runs them, in several
     * rounds when they are more than the slots. The output is bit-identical
     * to the all-resident layer's. Such a layer runs through
     * vkmoe_layer_forward only (vkmoe_layer_record_forward:
     * VKMOE_ERROR_UNSUPPORTED, as a forward waits for its routing);
     * vkmoe_layer_cache_stats reports hits and bytes moved; its timings
     * (params.timing) put both GEMMs and the copies under
     * VKMOE_STAGE_GEMM_UP, and the total includes the host's read-back and
     * planning. Biases, routers and shared experts stay on the device. */
    uint64_t expert_budget_bytes;
    vkmoe_cache_policy cache_policy; /* default VKMOE_CACHE_FREQUENCY */
    /* Run every routed expert on the host (llama.cpp's --cpu-moe): their
     * matrices stay in host memory, each forward reads back which rows each
     * expert has and computes them with host threads (AVX2/FMA kernels,
     * and VNNI's where the CPU has it, chosen when the layer is made; the
     * environment variable VKMOE_CPU_KERNELS caps the level: README), every
     * weight type, then the device combines them with the shared expert
     * as usual. Within the f32 tolerance of the reference and deterministic
     * run to run on one machine; not bit-identical to the device's sums.
     * vkmoe_layer_forward only, as with expert_budget_bytes (which it
     * overrides: the device keeps one slot's memory). Default false. */
    bool cpu_experts;
    /* With an expert cache (expert_budget_bytes): a needed expert that is
     * not on the device runs on the host instead of being copied in where
     * that is estimated faster (decode: few rows for a whole expert's
     * bytes) and the expert is no hotter than the one it would evict, or
     * than 1.5 by cache_policy's frequency score (needed twice of late):
     * hot experts still fill the cache, one-off experts do not. Costs:
     * copying, expert bytes / host_to_device_gbps; on the host, the larger
     * of its FLOPs / cpu_expert_gflops and its bytes / host_read_gbps.
     * Outputs are then those of CPU experts for the rows of such experts.
     * No effect without a cache. Default false. */
    bool cpu_cold_experts;
    float host_to_device_gbps; /* default (0): 16 (PCIe 4.0 x16 in practice) */
    float cpu_expert_gflops;   /* default (0): 50 */
    float host_read_gbps;      /* default (0): 20 */
    /* An expert-parallel shard: held_experts[e] nonzero for each routed
     * expert this layer holds ([experts] bytes, copied at creation; the
     * copy is what vkmoe_layer_params_of returns). Only those experts take
     * device memory and are set (vkmoe_layer_set_expert and
     * vkmoe_layer_set_expert_bias refuse the others); router, biases'
     * memory and the shared expert are the whole layer's. Such a layer runs
     * only as a shard of vkmoe_expert_parallel_forward or
     * vkmoe_expert_parallel_forward_mpi, whose placement must give it no
     * expert it lacks (vkmoe_layer_forward, vkmoe_layer_record_forward and
     * vkmoe_layer_prefetch: VKMOE_ERROR_UNSUPPORTED). Not with
     * expert_budget_bytes or cpu_experts (INVALID_ARGUMENT). Default NULL:
     * every expert. */
    const uint8_t *held_experts;
} vkmoe_layer_params;

/* Device bytes of one routed expert's matrices (gate, up, down) in a layer
 * of these params, as expert_budget_bytes counts them: each matrix's rows
 * padded as the GEMMs read them. 0 when params is NULL or lacks dim,
 * ffn_dim or a valid weight type. */
VKMOE_API uint64_t vkmoe_expert_bytes(const vkmoe_layer_params *params);

/* Set the routing and expert-function fields of params to those of a model
 * family, leaving the shape (dim, ffn_dim, experts, max_tokens,
 * shared_ffn_dim), the weight types, statistics and timing as they are. Families:
 *   "mixtral", "qwen3-moe", "olmoe": softmax top-k, SwiGLU; normalize_topk
 *       true, true, false;
 *   "qwen2-moe" (Qwen1.5-MoE and Qwen2-MoE): softmax top-k, no
 *       renormalisation, sigmoid-gated shared expert;
 *   "switch": top-1 softmax, ReLU experts, capacity_factor 1;
 *   "gshard": top-2 softmax, renormalised, capacity_factor 1;
 *   "deepseek-v2": softmax, 8 groups of which 3 kept (group score: max),
 *       routed_scaling_factor 16, k 6, no renormalisation;
 *   "deepseek-v3": sigmoid with selection bias, 8 groups of which 4 kept
 *       (group score: sum of top 2), k 8, renormalised (+1e-20), times 2.5;
 *   "kimi-k2": DeepSeek-V3's router over one group, times 2.827;
 *   "glm4-moe" (GLM-4.5, 4.6): DeepSeek-V3's router over one group, times
 *       2.5 (GLM-4.5-Air's files say 1);
 *   "minimax-m2": sigmoid with selection bias, k 8, renormalised, unscaled;
 *   "qwen3-next": softmax top-10, renormalised, sigmoid-gated shared expert;
 *   "granite-moe": top-k of logits then softmax, k 8;
 *   "llama4" (Llama 4 Scout, Maverick): top-1 logit, its sigmoid scaling
 *       the expert's input (scale_expert_input), an unscaled shared expert;
 *   "ernie-4.5-moe": softmax, top-k of p + selection bias, weights p
 *       renormalised, k 6;
 *   "gpt-oss": router bias, top-k of logits then softmax, k 4, clamped
 *       SwiGLU (limit 7, alpha 1.702) with expert biases.
 * top_k, expert_groups and topk_groups are set only where the family fixes
 * them or where its flagship model does (DeepSeek, GPT-OSS); override them
 * after the call for other sizes. Unknown name: VKMOE_ERROR_INVALID_ARGUMENT. */
VKMOE_API vkmoe_status vkmoe_layer_params_family(vkmoe_layer_params *params, const char *family);

/* Which matrix of an expert, in Hugging Face names and layout ([out][in]). */
typedef enum vkmoe_expert_matrix {
    VKMOE_EXPERT_GATE = 0, /* W1, gate_proj: [ffn_dim][dim] */
    VKMOE_EXPERT_UP = 1,   /* W3, up_proj:   [ffn_dim][dim] */
    VKMOE_EXPERT_DOWN = 2, /* W2, down_proj: [dim][ffn_dim] */
} vkmoe_expert_matrix;

/* The stages of a forward, in execution order (see vkmoe_layer_timings). */
typedef enum vkmoe_stage {
    VKMOE_STAGE_ROUTER = 0,    /* router matmul, softmax, top-k */
    VKMOE_STAGE_HISTOGRAM = 1, /* per-block, per-expert histogram ("count") */
    VKMOE_STAGE_SCAN = 2,      /* device-wide exclusive scan, tile map */
    VKMOE_STAGE_SCATTER = 3,   /* stable bucketing of (token, slot) pairs */
    /* Where tokens · top_k ≤ 256 (decode), the scan stage does count's and
     * scatter's work too, in one dispatch: they take 0 ms. */
    VKMOE_STAGE_GEMM_UP = 4,   /* gather x, gate and up projections, SwiGLU */
    VKMOE_STAGE_GEMM_DOWN = 5, /* down projection */
    /* the shared expert, both projections (0 ms without one); where its
     * rows fit beside the routed experts' (forwards of up to a GEMM tile
     * of tokens at least: 32, or 64 on 64-lane GPUs), its GEMMs run in the
     * gemm_up and gemm_down stages beside theirs, timed there, and this
     * stage takes 0 ms */
    VKMOE_STAGE_SHARED = 6,
    /* weighted sum of each token's experts; 0 ms where gemm_down does it
     * (one token on the GEMV path: timed in VKMOE_STAGE_GEMM_DOWN) */
    VKMOE_STAGE_COMBINE = 7,
    VKMOE_STAGE_MAX = 8,
} vkmoe_stage;

/* The old name of VKMOE_STAGE_HISTOGRAM, which read as a number of stages
 * (that is VKMOE_STAGE_MAX). Deprecated: it goes in 1.0. */
#define VKMOE_STAGE_COUNT VKMOE_STAGE_HISTOGRAM

/* A static name for a stage ("router", "count", …, "shared", "combine"); "" if out of range. */
VKMOE_API const char *vkmoe_stage_name(vkmoe_stage stage);

/* GPU time of each stage of the last completed forward, in milliseconds. */
typedef struct vkmoe_timings {
    double stage_ms[VKMOE_STAGE_MAX];
    double total_ms; /* first stage start to last stage end */
} vkmoe_timings;

/* Create a layer on ctx. Allocates weights and scratch for params.max_tokens
 * tokens; weights start unset. On failure *out is NULL. */
VKMOE_API vkmoe_status vkmoe_layer_create(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                          vkmoe_layer **out);

/* Destroy a layer and set *layer to NULL. Accepts NULL and a pointer to NULL.
 * The layer must not be in use by a pending command buffer. A layer of a
 * model is the model's (vkmoe_model_destroy): logs an error, does nothing. */
VKMOE_API void vkmoe_layer_destroy(vkmoe_layer **layer);

/* The params the layer runs with, every default resolved (max_tokens 1,
 * routed_scaling_factor 1, expert_groups 1, …). */
VKMOE_API vkmoe_status vkmoe_layer_params_of(const vkmoe_layer *layer, vkmoe_layer_params *params);

/* Upload the router weights Wg, f32 [experts][dim] row-major.
 * size is the byte size of weights and must be experts·dim·4. */
VKMOE_API vkmoe_status vkmoe_layer_set_router(vkmoe_layer *layer, const float *weights,
                                              size_t size);

/* Upload one matrix of one expert, row-major [out][in] as in Hugging Face
 * checkpoints, elements in the matrix's type (weight_type for GATE and UP,
 * down_weight_type for DOWN; f32: float, f16 and bf16: uint16_t bit
 * patterns, the GGUF types: each row its blocks, as GGUF stores them;
 * vkmoe_quantize makes them). size is the byte size and must match the
 * matrix exactly. The data is copied; it need only live for the call.
 * VKMOE_ACTIVATION_RELU experts have no GATE matrix: setting one is
 * VKMOE_ERROR_INVALID_ARGUMENT. */
VKMOE_API vkmoe_status vkmoe_layer_set_expert(vkmoe_layer *layer, uint32_t expert,
                                              vkmoe_expert_matrix matrix, const void *weights,
                                              size_t size);

/* Upload the router bias bg, f32 [experts]; size must be experts·4. Needs
 * params.router_bias. */
VKMOE_API vkmoe_status vkmoe_layer_set_router_bias(vkmoe_layer *layer, const float *bias,
                                                   size_t size);

/* Upload the selection bias b_sel, f32 [experts]; size must be experts·4.
 * Needs params.selection_bias. */
VKMOE_API vkmoe_status vkmoe_layer_set_selection_bias(vkmoe_layer *layer, const float *bias,
                                                      size_t size);

/* Upload one bias of one expert, f32: GATE and UP [ffn_dim], DOWN [dim];
 * size is its byte size. Needs params.expert_bias (GATE also needs an
 * activation with a gate). */
VKMOE_API vkmoe_status vkmoe_layer_set_expert_bias(vkmoe_layer *layer, uint32_t expert,
                                                   vkmoe_expert_matrix matrix, const float *bias,
                                                   size_t size);

/* Upload one matrix of the shared expert, as vkmoe_layer_set_expert does
 * for routed ones, with shared_ffn_dim in place of ffn_dim: GATE and UP
 * [shared_ffn_dim][dim], DOWN [dim][shared_ffn_dim], in the layer's
 * weight_type. Needs params.shared_ffn_dim. */
VKMOE_API vkmoe_status vkmoe_layer_set_shared_expert(vkmoe_layer *layer, vkmoe_expert_matrix matrix,
                                                     const void *weights, size_t size);

/* Upload the shared expert's gate ws, f32 [dim]; size must be dim·4. Needs
 * params.shared_gate. */
VKMOE_API vkmoe_status vkmoe_layer_set_shared_gate(vkmoe_layer *layer, const float *weights,
                                                   size_t size);

/* Run one forward on host arrays and wait for it: x is [tokens][dim], y
 * receives [tokens][dim], both of params.io_type (f32 by default, so float
 * arrays; uint16_t ones for f16 and bf16); x and y may not overlap.
 * 1 <= tokens <= max_tokens. Every weight the params call for must have
 * been set (VKMOE_ERROR_STATE names the first one missing).
 * A token whose x holds NaN gets NaN in its y row; other tokens are unaffected. */
VKMOE_API vkmoe_status vkmoe_layer_forward(vkmoe_layer *layer, uint32_t tokens, const void *x,
                                           void *y);

/* Start copying into the expert cache of `layer` (expert_budget_bytes) the
 * experts its next forward is likely to need, predicted by routing x
 * ([tokens][dim], io_type) through the layer's own router: pass the input
 * of the layer before it, and call this before that layer's forward, as
 * pre-gating systems do (consecutive layers' inputs differ by a residual
 * update, so the prediction mostly holds). It waits for that routing,
 * then returns while the copies run on the device's copy queue beside the
 * other layer's compute; the layer's next forward waits for them where it
 * uses them. Predicted experts take the slots the cache policy would evict
 * first, as many as there are slots (with vkmoe_model_params.shared_cache,
 * none holding an expert another layer's latest forward needed); a wrong
 * prediction costs copies, never
 * results: the forward is bit-identical either way. Counted in
 * vkmoe_cache_stats.prefetched and prefetch_hits. Does nothing (VKMOE_OK)
 * for a layer without a cache, with cpu_experts, or on a device without a
 * copy queue (vkmoe_device_info.copy_queue), where copies could not run
 * beside compute. The layer's last results (vkmoe_layer_statistics,
 * vkmoe_layer_expert_counts) are gone afterwards, and with them those of
 * the layers sharing its model's scratch memory. */
VKMOE_API vkmoe_status vkmoe_layer_prefetch(vkmoe_layer *layer, uint32_t tokens, const void *x);

/* One forward of a layer sharded over `ranks` shards in this process
 * (expert parallelism): shards[r] is rank r's layer, on a context of its
 * own (a device each) or a shared one, all of the same params and weights,
 * each holding the experts placed on its rank (params.held_experts: those
 * only; NULL: every expert, computing only those placed on it). Rank r's tokens[r] rows of x[r]
 * ([tokens][dim], io_type; 0 tokens: the rank only computes) give its y[r],
 * bit for bit the rows the single layer gives those tokens in one forward
 * of all ranks' tokens: every rank routes its own tokens; each choice of
 * expert e goes to a rank holding e — the token's own where it holds e (a
 * replicated hot expert), else the lowest that does — and comes back to be
 * combined in the order of the token's choices; the GEMMs run the kernels
 * of a forward of all the tokens, whatever each rank receives (shards on
 * devices of different kinds may resolve VKMOE_GEMM_AUTO differently: set
 * the path). placement[e · ranks + r] is nonzero where rank r holds expert
 * e; NULL: contiguous blocks, expert e on rank ⌊e · ranks / experts⌋. Rows
 * travel through host memory, a rank computes max_tokens of them at a
 * time, and a rank routes its tokens twice (before and after other ranks'
 * rows pass through its scratch). INVALID_ARGUMENT: NULL arrays, ranks 0,
 * no token anywhere, more tokens than a shard's max_tokens, shards whose
 * dim, ffn_dim, experts, top_k or io_type differ, a capacity (its drops
 * depend on all ranks' tokens at once), an expert cache on a shard, an
 * expert no rank holds, a placement that gives a shard an expert it does
 * not hold. */
VKMOE_API vkmoe_status vkmoe_expert_parallel_forward(vkmoe_layer *const *shards, uint32_t ranks,
                                                     const uint8_t *placement,
                                                     const uint32_t *tokens, const void *const *x,
                                                     void *const *y);

/* Which experts a placement gives rank `rank` of `ranks`, as
 * vkmoe_expert_parallel_forward places them: held[e] = 1 where the rank
 * holds expert e, else 0 ([experts] bytes; ready for
 * vkmoe_layer_params.held_experts). placement [experts][ranks], nonzero
 * where held; NULL: contiguous blocks, expert e on rank ⌊e · ranks /
 * experts⌋. INVALID_ARGUMENT: held NULL, experts or ranks 0, rank ≥ ranks. */
VKMOE_API vkmoe_status vkmoe_expert_parallel_held(const uint8_t *placement, uint32_t experts,
                                                  uint32_t ranks, uint32_t rank, uint8_t *held);

/* Record one forward into the caller's command buffer, which must be in the
 * recording state and belong to a queue family with compute support on the
 * layer's device. Reads x ([tokens][dim] of params.io_type at x_offset) and
 * writes y (the same at y_offset); both buffers need STORAGE_BUFFER usage,
 * offsets must be multiples of minStorageBufferOffsetAlignment and each range
 * at most maxStorageBufferRange bytes. The recording begins with a barrier that
 * makes all earlier writes to x visible and ends with one that makes y visible
 * to all later commands. Nothing is submitted.
 *
 * The layer's scratch memory is shared by its forwards: do not submit two
 * recordings of the same layer so that they execute concurrently. Where
 * vkmoe_device_info.push_descriptors is true, x and y are bound in cmd
 * itself and a recording changes nothing in the layer (but which forward
 * was recorded last, for vkmoe_layer_load_stats): record as many forwards
 * as you like, into as many command buffers, before submitting them in
 * turn. Without push descriptors recording rewrites the layer's descriptor
 * set: do not record again until the previous recording has completed. */
VKMOE_API vkmoe_status vkmoe_layer_record_forward(vkmoe_layer *layer, VkCommandBuffer cmd,
                                                  uint32_t tokens, VkBuffer x,
                                                  VkDeviceSize x_offset, VkBuffer y,
                                                  VkDeviceSize y_offset);

/* Slots routed to each expert by the last completed forward, before any
 * capacity dropping: counts[e] for e < experts. n must be at least the
 * number of experts. VKMOE_ERROR_STATE before the layer's first forward.
 * After a recorded forward, call it only once the command buffer has
 * completed. */
VKMOE_API vkmoe_status vkmoe_layer_expert_counts(const vkmoe_layer *layer, uint32_t *counts,
                                                 uint32_t n);

/* Load statistics of the last completed forward (see params.statistics). */
typedef struct vkmoe_load_stats {
    uint32_t tokens;   /* tokens of the forward */
    uint32_t capacity; /* slots each expert could keep; UINT32_MAX when dropless */
    uint64_t dropped;  /* slots dropped over all experts */
    /* Switch load-balancing loss E · Σ_e f_e · P_e, where f_e is the share of
     * tokens routed to e (before dropping; Σ f_e = k) and P_e the mean router
     * probability of e: softmax(l) for the softmax routers and
     * VKMOE_ROUTER_TOPK_SOFTMAX and VKMOE_ROUTER_TOPK_SIGMOID, s / Σ s for
     * VKMOE_ROUTER_SIGMOID_TOPK.
     * 1 · k when perfectly balanced. */
    double balance_loss;
    double z_loss; /* router z-loss: mean over tokens of logsumexp(l)² */
} vkmoe_load_stats;

/* Fill *stats and, for e < experts, each array that is not NULL: routed[e]
 * slots that chose e, dropped[e] of those beyond its capacity, and
 * mean_probability[e] = P_e. n is the length of the arrays and must be at
 * least experts when any is given. Needs params.statistics; reads the
 * layer's memory, so after a recorded forward call it only once the command
 * buffer has completed. Sums run in double in a fixed order. */
VKMOE_API vkmoe_status vkmoe_layer_load_stats(const vkmoe_layer *layer, vkmoe_load_stats *stats,
                                              uint32_t *routed, uint32_t *dropped,
                                              double *mean_probability, uint32_t n);

/* What a layer's expert cache has done over its completed forwards. */
typedef struct vkmoe_cache_stats {
    /* experts the device holds at once: the layer's, or those it shares with
     * its model's other layers (vkmoe_model_params.shared_cache) */
    uint32_t slots;
    uint64_t expert_bytes;    /* bytes one expert's matrices take (vkmoe_expert_bytes) */
    uint64_t forwards;        /* forwards completed */
    uint64_t hits;            /* experts a forward needed that were on the device already */
    uint64_t misses;          /* experts a forward needed that had to be copied in */
    uint64_t bytes_to_device; /* bytes copied from host memory: misses · expert_bytes */
    /* GEMM rounds: one a forward, more where a forward needed more experts
     * than there are slots; 0 for forwards whose experts all ran on the host. */
    uint64_t rounds;
    /* Needed experts computed on the host (cpu_experts, cpu_cold_experts):
     * hits + misses + cpu_experts is every expert the forwards needed. */
    uint64_t cpu_experts;
    uint64_t cpu_slots; /* expert rows (token, choice) computed on the host */
    double cpu_ms;      /* host time spent on them, wall clock */
    /* Experts copied in by vkmoe_layer_prefetch (in bytes_to_device too),
     * and of those, how many the next forward needed (counted as hits). */
    uint64_t prefetched;
    uint64_t prefetch_hits;
} vkmoe_cache_stats;

/* Fill *stats with the layer's cache figures since its creation. A layer
 * with every expert on the device (no expert_budget_bytes, no
 * cpu_experts) has no cache: VKMOE_ERROR_STATE. */
VKMOE_API vkmoe_status vkmoe_layer_cache_stats(const vkmoe_layer *layer, vkmoe_cache_stats *stats);

/* Stage times of the last completed forward; needs params.timing, and a
 * forward first (else VKMOE_ERROR_STATE). */
VKMOE_API vkmoe_status vkmoe_layer_timings(const vkmoe_layer *layer, vkmoe_timings *timings);

/* Device memory of a layer or a model, in bytes of the buffers vkmoe
 * allocates (the driver may round each allocation up), by kind. */
typedef struct vkmoe_memory_report {
    uint64_t experts;        /* routed experts' matrices and biases */
    uint64_t shared_experts; /* shared experts' matrices */
    uint64_t routers;        /* router matrices, router and selection biases, shared gates */
    /* Routing scratch, activations, and x and y of vkmoe_layer_forward:
     * a layer's own, or the one allocation a model's layers share. */
    uint64_t scratch;
    uint64_t total; /* the sum of the above */
    /* Host memory holding experts: with an expert cache
     * (vkmoe_layer_params.expert_budget_bytes) or host experts
     * (cpu_experts), all routed experts' matrices; else 0. Not in total,
     * which counts device memory. */
    uint64_t host_experts;
    /* Of host_experts, the bytes that are a model file's own mapped pages
     * (vkmoe_model_open, where the device imports host memory through
     * VK_EXT_external_memory_host and the file holds the experts as the
     * device reads them): no copy of them is allocated. */
    uint64_t host_experts_mapped;
} vkmoe_memory_report;

/* Fill *report with the layer's device memory. A layer of a model counts
 * the model's shared scratch as its own. */
VKMOE_API vkmoe_status vkmoe_layer_memory(const vkmoe_layer *layer, vkmoe_memory_report *report);

/* ------------------------------------------------------------------------ */
/* Model files: a Hugging Face checkpoint or a GGUF file, one MoE layer of  */
/* it or all of them.                                                        */
/* ------------------------------------------------------------------------ */

/* Called while weights stream to the device: bytes of expert matrices
 * (routed and shared, in the device's weight types) uploaded so far, and in
 * all. Called first with done 0, then after every matrix, last with done ==
 * total. Return false to stop: the call then fails with
 * VKMOE_ERROR_CANCELLED and creates nothing. */
typedef bool (*vkmoe_progress_fn)(void *user_data, uint64_t done, uint64_t total);

/* Zero-initialise; every zero field means its default. */
typedef struct vkmoe_model_params {
    /* As in vkmoe_layer_params: default (0) 1. */
    uint32_t max_tokens;
    bool statistics;            /* default false */
    bool timing;                /* default false */
    vkmoe_gemm_path gemm_path;  /* default VKMOE_GEMM_AUTO */
    vkmoe_progress_fn progress; /* default NULL: none */
    void *progress_user_data;   /* passed to progress; not owned */
    /* Device memory, in bytes, for the routed experts' matrices: of the one
     * layer (vkmoe_layer_from_file), or of all MoE layers together
     * (vkmoe_model_open), which then share it in proportion to their
     * experts' bytes, each at least one expert (else
     * VKMOE_ERROR_INVALID_ARGUMENT). See vkmoe_layer_params. Default (0):
     * every expert on the device. */
    uint64_t expert_budget_bytes;
    vkmoe_cache_policy cache_policy; /* default VKMOE_CACHE_FREQUENCY */
    /* vkmoe_model_open with expert_budget_bytes: the MoE layers whose
     * experts have one shape (weight types, dim, ffn_dim, gated or not)
     * share one set of device slots, as many as their shares of the budget
     * hold, instead of each keeping its own share. Each keeps its share
     * (an equal part of the slots) while it runs: another layer takes only
     * the slots a layer holds beyond its share, those it leaves empty, or
     * all of its slots once it has not run since the taker's previous
     * forward, the policy choosing among them. So a layer that routes to
     * fewer experts than its share holds lends the rest to those that
     * route to more, and a layer run alone takes every slot from its
     * second forward on. Each layer's vkmoe_cache_stats.slots
     * and vkmoe_layer_memory count the shared slots as its own
     * (vkmoe_model_memory counts them once). vkmoe_layer_prefetch then
     * takes no slot holding an expert that another layer's latest forward
     * needed (the layer about to run may need it again). Outputs are the
     * same bits either way. Default false. */
    bool shared_cache;
    /* The routed experts of the first this many MoE layers run on the host
     * (vkmoe_layer_params.cpu_experts; llama.cpp's --n-cpu-moe); they take
     * no share of expert_budget_bytes. vkmoe_layer_from_file: any number
     * above 0 puts its layer's experts there. Default 0. */
    uint32_t cpu_expert_layers;
    /* Every MoE layer an expert-parallel shard holding these experts
     * (vkmoe_layer_params.held_experts; [experts] bytes, the model's MoE
     * layers having as many experts each, which the caller sizes it to):
     * only they are read from the file and take device memory. Not with
     * expert_budget_bytes or cpu_expert_layers. Default NULL: every
     * expert. */
    const uint8_t *held_experts;
} vkmoe_model_params;

/* Create a layer holding MoE block number `layer_index` (the model's layer
 * number, counting dense layers too) of a model file, with the family,
 * hyper-parameters and weights the file gives:
 *  - a Hugging Face checkpoint: a directory with config.json and either
 *    model.safetensors or model.safetensors.index.json and its shards (or
 *    the path of a .safetensors file in such a directory). model_type
 *    mixtral, qwen2_moe, qwen3_moe, qwen3_next, olmoe, deepseek_v2,
 *    deepseek_v3, kimi_k2, glm4_moe, minimax_m2, granitemoe, ernie4_5_moe,
 *    gpt_oss (its MXFP4 *_blocks and *_scales tensors, repacked to
 *    VKMOE_WEIGHT_MXFP4), llama4 (text_config nested, tensors under
 *    language_model.), llama4_text;
 *  - a GGUF file (v2, v3), architectures llama (Mixtral), qwen2moe,
 *    qwen3moe, qwen3next, olmoe, deepseek2 (V2, V3, Kimi K2), glm4moe,
 *    minimax-m2, gpt-oss, granitemoe, ernie4_5-moe, llama4.
 * Expert weights stay in the file's type (any vkmoe_weight_type), the
 * routed experts' up projections deciding weight_type and
 * their down projections down_weight_type (a Q4_K_M file: Q4_K and Q6_K);
 * matrices of another type (gate, or the shared expert's) are converted to
 * those. The router and biases become f32. Files are memory-mapped and
 * streamed to the device matrix by matrix; files over 4 GiB work. Only
 * regular files are opened (a FIFO is refused, never waited on).
 * Errors: VKMOE_ERROR_INVALID_ARGUMENT (layer_index past the model's last
 * layer, where the file gives the count), VKMOE_ERROR_IO (cannot open or
 * map, or not a regular file),
 * VKMOE_ERROR_FILE_FORMAT (not a model file, malformed, duplicate or
 * overlapping tensors, hyper-parameters out of vkmoe's bounds or making no
 * valid layer, or shapes that disagree with the config),
 * VKMOE_ERROR_UNSUPPORTED (another model type, a dense layer, tensors of
 * another type such as Q5_K), VKMOE_ERROR_OUT_OF_HOST_MEMORY; each with a
 * message naming the file and the key or tensor. POSIX systems (mmap). */
VKMOE_API vkmoe_status vkmoe_layer_from_file(vkmoe_context *ctx, const char *path,
                                             uint32_t layer_index, const vkmoe_model_params *params,
                                             vkmoe_layer **out);

typedef struct vkmoe_model vkmoe_model;

/* Read a model file (or checkpoint directory) once and create a layer for
 * every MoE block of it, as vkmoe_layer_from_file describes each (files,
 * families, types, errors), streaming the weights to the device matrix by
 * matrix with params->progress. The model's number of layers comes from
 * config.json's num_hidden_layers or GGUF's <arch>.block_count; dense
 * layers (DeepSeek's first_k_dense_replace and moe_layer_freq, Qwen's
 * decoder_sparse_step and mlp_only_layers, GGUF's
 * leading_dense_block_count) get no layer.
 * The layers share one scratch allocation, sized for the largest: one
 * forward in flight per model. Recording several of its layers into one
 * command buffer in order is fine (each forward waits for the previous
 * one's work); submitting forwards of two of its layers to run at once is
 * not. A layer's results (vkmoe_layer_expert_counts,
 * vkmoe_layer_load_stats) must be read before the next layer's forward:
 * afterwards they fail with VKMOE_ERROR_STATE. Timings are each layer's.
 * Errors as vkmoe_layer_from_file's, and VKMOE_ERROR_FILE_FORMAT without a
 * layer count, VKMOE_ERROR_UNSUPPORTED for a model without a MoE layer,
 * VKMOE_ERROR_CANCELLED when params->progress returns false. On failure
 * *out is NULL and nothing is left allocated. */
VKMOE_API vkmoe_status vkmoe_model_open(vkmoe_context *ctx, const char *path,
                                        const vkmoe_model_params *params, vkmoe_model **out);

/* Destroy the model and its layers, and set *model to NULL. Accepts NULL
 * and a pointer to NULL. Waits for the context's pending work. */
VKMOE_API void vkmoe_model_destroy(vkmoe_model **model);

/* The model's number of layers, dense ones included; 0 for NULL. */
VKMOE_API uint32_t vkmoe_model_layer_count(const vkmoe_model *model);

/* Layer i of the model, to forward, record or query; NULL for a dense
 * layer, i past the last layer or a NULL model. The model owns it:
 * vkmoe_layer_destroy on it logs an error and does nothing. */
VKMOE_API vkmoe_layer *vkmoe_model_layer(const vkmoe_model *model, uint32_t i);

/* Fill *report with the device memory of the model's layers, the shared
 * scratch counted once. */
VKMOE_API vkmoe_status vkmoe_model_memory(const vkmoe_model *model, vkmoe_memory_report *report);

#ifdef __cplusplus
}
#endif

#endif /* VKMOE_H */
