/* Declarations shared by the library's source files; not installed. */
#ifndef VKMOE_INTERNAL_H
#define VKMOE_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>

/* volk.h first: it must define VK_NO_PROTOTYPES before vulkan.h (tests use
 * its loader as a host application would). */
#include "volk.h"
#include "vkmoe.h"
#include "vulkan_functions.h"

#define VKMOE_MAX_EXPERTS 512u
#define VKMOE_MAX_TOP_K 16u
#define VKMOE_MAX_GROUPS 16u
#define VKMOE_MAX_SLOTS (1u << 22)
/* Marks a padding row in row_slot and an unused tile in tile_expert. */
#define VKMOE_INVALID 0xffffffffu
/* Slots per workgroup in count and scatter; elements per workgroup in scan. */
#define VKMOE_BLOCK_SLOTS 256u
#define VKMOE_SCAN_TILE 1024u
/* Weight rows are padded to this many elements so shaders load 16 bytes at a time. */
#define VKMOE_ROW_ALIGN 8u
/* Whether a weight type stores GGUF blocks (read as 32-bit words) rather
 * than one value after another (read 16 bytes at a time). */
static inline bool vkmoe_weight_blocked(vkmoe_weight_type type)
{
    return vkmoe_weight_block(type) > 1;
}

/* How a projection is stored: the down projections in down_weight_type,
 * gate and up in weight_type (resolved params). */
static inline vkmoe_weight_type vkmoe_matrix_type(const vkmoe_layer_params *p,
                                                  vkmoe_expert_matrix matrix)
{
    return matrix == VKMOE_EXPERT_DOWN ? p->down_weight_type : p->weight_type;
}

#define VKMOE_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline uint64_t vkmoe_round_up(uint64_t x, uint64_t m) { return (x + m - 1) / m * m; }
static inline uint64_t vkmoe_div_up(uint64_t x, uint64_t m) { return (x + m - 1) / m; }

/* ---- errors (error.c) ---- */

/* Record a failure: sets the thread's last error, logs it on ctx (may be
 * NULL) and returns status, so callers write `return vkmoe_fail(...)`. */
vkmoe_status vkmoe_fail(const vkmoe_context *ctx, vkmoe_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Map a VkResult to a status; failures are recorded with `what` as context.
 * VK_ERROR_DEVICE_LOST also marks ctx as lost for good. */
vkmoe_status vkmoe_check_vk(vkmoe_context *ctx, VkResult result, const char *what);
void vkmoe_log(const vkmoe_context *ctx, vkmoe_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define VKMOE_REQUIRE(ctx, cond, ...)                                                  \
    do {                                                                               \
        if (!(cond))                                                                   \
            return vkmoe_fail((ctx), VKMOE_ERROR_INVALID_ARGUMENT, __VA_ARGS__);       \
    } while (0)

#define VKMOE_TRY(expr)                                                                \
    do {                                                                               \
        vkmoe_status try_status_ = (expr);                                             \
        if (try_status_ != VKMOE_OK)                                                   \
            return try_status_;                                                        \
    } while (0)

/* ---- pipelines (pipelines.c) ---- */

typedef enum vkmoe_shader {
    VKMOE_SHADER_INPUT_ROWS,
    VKMOE_SHADER_ROUTER,
    VKMOE_SHADER_COUNT,
    VKMOE_SHADER_SCAN,
    VKMOE_SHADER_SCATTER,
    VKMOE_SHADER_GEMM_UP,
    VKMOE_SHADER_GEMM_DOWN,
    VKMOE_SHADER_COMBINE,
    VKMOE_SHADER_STAGES, /* the shaders above: one per stage, in a layer's pipelines */
    /* The GEMM stages' other paths (vkmoe_gemm_shader). */
    VKMOE_SHADER_GEMM_UP_TILED = VKMOE_SHADER_STAGES,
    VKMOE_SHADER_GEMM_DOWN_TILED,
    VKMOE_SHADER_GEMM_UP_COOPMAT,
    VKMOE_SHADER_GEMM_DOWN_COOPMAT,
    VKMOE_SHADER_GEMM_UP_COOPMAT_EMULATED, /* tests: emulated_matrix_cores */
    VKMOE_SHADER_GEMM_DOWN_COOPMAT_EMULATED,
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

/* ---- context (context.c) ---- */

struct vkmoe_context {
    vkmoe_vulkan_functions vk; /* this context's own: see vulkan_functions.h */
    VkInstance instance;
    VkPhysicalDevice physical_device;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    bool owns_device; /* false when imported: never destroy the host's handles */
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
     * the subgroup size, so a workgroup is one subgroup (tests vary it to
     * run other GPUs' column layouts here). */
    uint32_t gemm_lanes;
    /* Tests: new host-visible buffers are filled with 0xff bytes (NaN as
     * f32), so a shader that reads memory nobody wrote shows it in every
     * run instead of when the allocator hands back dirty pages. */
    bool poison_buffers;
    /* VK_NV_cooperative_matrix's feature is enabled and offers the
     * 16x16x16 f16 · f16 + f32 shape at subgroup scope. */
    bool cooperative_matrix;
    /* Tests: VKMOE_GEMM_COOPMAT runs on a device without cooperative
     * matrices, its multiplies emulated (shaders/common/tiled_gemm.glsl), so
     * everything of the path but the matrix instructions runs in CI. */
    bool emulated_matrix_cores;
    /* CPU and integrated devices: device-local memory is host-visible, so
     * buffers are mapped and written in place instead of staged. */
    bool unified_memory;

    VkCommandPool command_pool;
    VkCommandBuffer command_buffer; /* for uploads, downloads and host forwards */
    VkFence fence;
    bool fence_pending; /* submitted and not yet waited for (a wait failed) */

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

/* Wait for the context's last submission where a failed wait left it
 * pending: nothing it uses may be destroyed before. */
void vkmoe_context_wait_pending(vkmoe_context *ctx);
/* vkmoe_layer_create and _destroy count the context's live layers. */
void vkmoe_context_add_layer(vkmoe_context *ctx);
void vkmoe_context_remove_layer(vkmoe_context *ctx);
/* Fail with VKMOE_ERROR_DEVICE_LOST when the context has lost its device. */
vkmoe_status vkmoe_context_check_alive(const vkmoe_context *ctx);
/* Begin recording the context's own command buffer, once a submission
 * whose wait failed has completed (vkmoe_context_wait_pending). */
vkmoe_status vkmoe_context_begin(vkmoe_context *ctx, VkCommandBuffer *cmd);
/* End, submit and wait for the context's command buffer. */
vkmoe_status vkmoe_context_submit_wait(vkmoe_context *ctx);

/* ---- pipelines (pipelines.c) ---- */

vkmoe_status vkmoe_pipelines_init(vkmoe_context *ctx);
void vkmoe_pipelines_destroy(vkmoe_context *ctx);
/* The pipeline for shader with these specialization constants, created on
 * first use and owned by the context. */
vkmoe_status vkmoe_pipeline_get(vkmoe_context *ctx, vkmoe_shader shader, const vkmoe_spec *spec,
                                VkPipeline *out);
/* Bind, push and dispatch `groups` workgroups along one logical axis; the
 * grid folds into x and y so counts beyond 65535 work (shaders call
 * flat_group_id() from shaders/common/dispatch.glsl). */
void vkmoe_dispatch_1d(vkmoe_context *ctx, VkCommandBuffer cmd, VkPipeline pipeline,
                       const void *push, uint32_t push_size, uint64_t groups);
/* A compute-to-compute (and indirect) memory barrier between two stages. */
void vkmoe_barrier_compute(vkmoe_context *ctx, VkCommandBuffer cmd);

/* ---- memory (memory.c) ---- */

typedef enum vkmoe_memory_use {
    VKMOE_MEMORY_DEVICE,   /* device-local; mapped only on unified-memory devices */
    VKMOE_MEMORY_HOST,     /* host-visible and coherent, for staging */
} vkmoe_memory_use;

typedef struct vkmoe_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    VkDeviceAddress address;
    void *mapped; /* NULL unless host-visible */
} vkmoe_buffer;

vkmoe_status vkmoe_buffer_create(vkmoe_context *ctx, VkDeviceSize size, vkmoe_memory_use use,
                                 vkmoe_buffer *out);
void vkmoe_buffer_destroy(vkmoe_context *ctx, vkmoe_buffer *buffer);
/* A texel view of the first `range` bytes of buf; UNSUPPORTED when they
 * hold more texels than the device's maxTexelBufferElements. */
vkmoe_status vkmoe_buffer_view_create(vkmoe_context *ctx, const vkmoe_buffer *buf,
                                      VkFormat format, VkDeviceSize range, VkBufferView *out);
/* Copy `rows` rows of row_bytes each from host memory into buf at offset,
 * with consecutive destination rows dst_stride bytes apart and the gap
 * zero-filled. Waits for completion. */
vkmoe_status vkmoe_buffer_write_rows(vkmoe_context *ctx, const vkmoe_buffer *buf,
                                     VkDeviceSize offset, const void *src, uint64_t rows,
                                     uint64_t row_bytes, uint64_t dst_stride);
/* Copy size bytes at offset of buf to host memory; waits for completion. */
vkmoe_status vkmoe_buffer_read(vkmoe_context *ctx, const vkmoe_buffer *buf, VkDeviceSize offset,
                               void *dst, VkDeviceSize size);

/* ---- layer (layer.c) and its stages ---- */

/* Where each piece of a layer's routing scratch lives, as byte offsets into
 * layer->scratch (all 16-byte aligned):
 *   ids         u32 [max_slots]        chosen expert of slot s = t·k + j
 *   topk_weight f32 [max_slots]        its combine weight
 *   block_counts u32 [E][max_blocks]   per-block histogram, scanned in place
 *   tile_sums   u32 [max_scan_tiles]   partial sums of the device-wide scan
 *   expert_count u32 [E]               tokens per expert (statistics)
 *   expert_base u32 [E]                first row of each expert's padded segment
 *   tile_expert u32 [max_tiles]        expert of each row tile, or VKMOE_INVALID
 *   row_slot    u32 [max_rows]         slot held by each row, or VKMOE_INVALID
 *   slot_row    u32 [max_slots]        row holding each slot, or VKMOE_INVALID if dropped
 *   dispatch    u32 [2][3]             indirect grids of gemm_up and gemm_down
 *   shared_scale f32 [max_tokens]      sigmoid(x·ws) per token (shared_gate)
 *   probs       f32 [max_tokens][E]    router probabilities (statistics, else empty)
 *   lse         f32 [max_tokens]       logsumexp of the logits (statistics, else empty)
 *   logits      f32 [token_rows][ld_logits]  x·Wgᵀ (and x·ws), the router GEMM's output
 * Slots are numbered s = t·k + j (token t, choice j); count and scatter walk
 * them in priority order q = j·T + t, so an expert's rows, and the slots it
 * keeps under a capacity, come slot 0 of every token first. */
typedef struct vkmoe_scratch_layout {
    VkDeviceSize ids, topk_weight, block_counts, tile_sums, expert_count, expert_base,
        tile_expert, row_slot, slot_row, dispatch, shared_scale, probs, lse, logits, size;
} vkmoe_scratch_layout;

/* The activation spec constant of the router's GEMM: the projection alone. */
#define VKMOE_ACTIVATION_LINEAR 3u

/* Shape of the expert GEMMs (specialization constants, see
 * shaders/common/expert_gemm.glsl): the path (never AUTO), rows per tile,
 * invocations per workgroup of the path and of the register path (which the
 * router's logits take), and the output columns one workgroup covers in
 * each GEMM. */
/* Subgroups in a workgroup of the tiled GEMM paths (shaders/common/tiled_gemm.glsl). */
#define VKMOE_TILED_SUBGROUPS 4u

typedef struct vkmoe_gemm_config {
    vkmoe_gemm_path path;
    uint32_t tile_m, workgroup, lanes, up_columns, down_columns;
} vkmoe_gemm_config;

/* What one GEMM dispatch reads through set 1 (shaders/common/expert_gemm.glsl):
 * rows of A and two weight views, and which experts' matrices those views
 * hold (matrix_texels apart). */
typedef struct vkmoe_gemm_source {
    VkDescriptorSet set;
    uint32_t expert_first, expert_count, matrix_texels;
} vkmoe_gemm_source;
/* Where a GEMM pass finds its rows and weights: the routed experts (rows
 * from the scan's plan, grids by indirect dispatch) or the shared expert
 * (row r is token r, one expert, grids known on the host). A pass records
 * one dispatch per source. */
typedef struct vkmoe_gemm_rows {
    const vkmoe_gemm_source *sources;
    uint32_t source_count;
    VkDeviceAddress tile_expert, row_slot, hidden, out;
    VkDeviceAddress gate_bias, up_bias, down_bias; /* 0: none */
    uint32_t ffn, ld_ffn, top_k, max_tiles, rows;
} vkmoe_gemm_rows;

/* E matrices of one kind (gate, up or down) for all experts, packed into as
 * few allocations as the device's allocation and texel-buffer limits
 * allow, each seen through one texel view. The up and down arrays also
 * hold their GEMM pass's sources, one per chunk (the gate array shares the
 * up array's chunking: same shapes). */
typedef struct vkmoe_expert_array {
    vkmoe_buffer *chunks;
    VkBufferView *views;
    vkmoe_gemm_source *sources;
    uint32_t chunk_count;
    uint32_t per_chunk;           /* experts per chunk */
    VkDeviceSize matrix_bytes;    /* one expert, rows padded to `ld` elements */
    uint32_t rows, cols, ld;
    vkmoe_weight_type type;       /* how the matrices are stored */
} vkmoe_expert_array;

/* Which uploads a forward waits for. Per expert: three matrices, then
 * three biases (gate, up, down); the rest once per layer. */
typedef enum vkmoe_upload {
    VKMOE_UPLOAD_ROUTER,
    VKMOE_UPLOAD_ROUTER_BIAS,
    VKMOE_UPLOAD_SELECTION_BIAS,
    VKMOE_UPLOAD_SHARED_GATE,
    VKMOE_UPLOAD_SHARED_MATRIX,     /* + vkmoe_expert_matrix */
    VKMOE_UPLOAD_EXPERT = VKMOE_UPLOAD_SHARED_MATRIX + 3, /* + 6·expert + item */
} vkmoe_upload;

struct vkmoe_layer {
    vkmoe_context *ctx;
    vkmoe_layer_params params;  /* defaults resolved (vkmoe_params_resolve) */
    uint32_t ld_dim, ld_ffn;    /* padded row lengths, in elements */
    uint32_t max_slots, max_blocks, max_scan_tiles, max_rows, max_tiles;
    uint32_t ld_shared;         /* shared expert: padded width */
    uint32_t token_rows;        /* max_tokens rounded up to the GEMM tile */
    uint32_t ld_logits;         /* router logits row: E (+1 with a shared gate), padded */
    vkmoe_gemm_config gemm;

    vkmoe_buffer router;        /* f32 [E (+1: shared gate ws)][ld_dim] */
    VkBufferView router_view;
    vkmoe_gemm_source router_source;
    vkmoe_buffer router_vectors;/* f32 [2][E]: router bias, selection bias */
    vkmoe_expert_array experts[3];
    vkmoe_buffer expert_biases; /* f32 gate [E][ffn], up [E][ffn], down [E][dim] */
    vkmoe_expert_array shared[3];
    /* Passes with one row per token (router logits, shared expert): u32
     * tile_expert [token_rows / tile] = 0, then row_slot [token_rows] = r. */
    vkmoe_buffer token_plan;
    vkmoe_buffer shared_out;    /* f32 [token_rows][dim] */
    vkmoe_buffer scratch;       /* see vkmoe_scratch_layout */
    vkmoe_scratch_layout layout;
    vkmoe_buffer x_rows;        /* f32 [token_rows][ld_dim]: x padded with zeros (input_rows) */
    VkBufferView x_rows_view;
    vkmoe_buffer hidden;        /* f32 [max(max_rows·ld_ffn, token_rows·ld_shared)], gemm_up output */
    VkBufferView hidden_view;
    vkmoe_buffer expert_out;    /* f32 [max_rows][dim], gemm_down output */
    /* expert_out and shared_out as RGBA32F texels for combine, where dim is
     * a multiple of 4 and the views fit the device (else VK_NULL_HANDLE:
     * combine loads through addresses); combine_set binds them (or x_rows,
     * for the formats' sake) as set 1. */
    VkBufferView expert_out_view, shared_out_view;
    VkDescriptorSet combine_set;
    vkmoe_buffer x, y;          /* f32 [max_tokens][dim], for vkmoe_layer_forward */

    VkDescriptorPool descriptor_pool;
    VkDescriptorSet descriptor_set;
    VkPipeline pipelines[VKMOE_SHADER_STAGES]; /* GEMM stages: of the layer's path */
    VkPipeline router_gemm;     /* gemm_up with f32 weights and no activation */
    VkQueryPool queries; /* 2 timestamps per stage when params.timing */

    uint32_t last_tokens;    /* tokens of the last recorded forward */
    uint8_t *uploaded;       /* [VKMOE_UPLOAD_EXPERT + 6·E], indexed by vkmoe_upload */
    uint8_t *upload_needed;  /* the same, for this layer's params */
};

/* ---- params (params.c) ---- */

/* Check params (defaults may still be zero) and fill *out with the defaults
 * resolved; messages name `fn`. */
vkmoe_status vkmoe_params_resolve(const vkmoe_context *ctx, const vkmoe_layer_params *params,
                                  vkmoe_layer_params *out);
/* Slots each expert keeps in a forward of `tokens` tokens; UINT32_MAX when dropless. */
uint32_t vkmoe_params_capacity(const vkmoe_layer_params *params, uint32_t tokens);
/* Whether the activation has a gate projection (W1). */
bool vkmoe_params_gated(const vkmoe_layer_params *params);

/* ---- weights (weights.c) ---- */

/* Allocate the layer's weight memory and mark which uploads it needs. */
vkmoe_status vkmoe_weights_create(vkmoe_layer *layer);
void vkmoe_weights_destroy(vkmoe_layer *layer);
/* VKMOE_ERROR_STATE naming the first upload a forward still lacks. */
vkmoe_status vkmoe_weights_check_complete(const vkmoe_layer *layer, const char *fn);

/* The weights' texel format and its size in bytes: four 32-bit words for
 * f32, f16 and bf16 rows, one for GGUF blocks (2-byte aligned). */
VkFormat vkmoe_weight_texel_format(vkmoe_weight_type type);
/* Before the router: copy the tokens' rows of x into x_rows (input_rows.c). */
void vkmoe_input_rows_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
/* Each stage records its dispatch; the caller puts barriers between them. */
void vkmoe_router_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_count_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_scan_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_scatter_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_gemm_up_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_gemm_down_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_shared_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_combine_record(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
/* The per-token pass plan: tile_expert and row_slot addresses. */
void vkmoe_token_plan(const vkmoe_layer *layer, VkDeviceAddress *tile_expert,
                      VkDeviceAddress *row_slot);
/* Record one pass of the expert GEMMs over `rows`; indirect_grid is the
 * index of the scan's indirect grid, or -1 for a direct grid of `tiles` row
 * tiles. */
void vkmoe_gemm_up_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_rows *rows,
                        int indirect_grid, uint32_t tiles);
/* The router's logits x·Wgᵀ as a GEMM over one row per token. */
void vkmoe_router_gemm_pass(vkmoe_layer *layer, VkCommandBuffer cmd, uint32_t tokens);
void vkmoe_gemm_down_pass(vkmoe_layer *layer, VkCommandBuffer cmd, const vkmoe_gemm_rows *rows,
                          int indirect_grid, uint32_t tiles);

/* The specialization constants of each stage's pipeline for this layer. */
vkmoe_spec vkmoe_router_spec(const vkmoe_layer *layer);
/* The GEMM pass of these matrices: gate and up (VKMOE_EXPERT_UP) or down. */
vkmoe_spec vkmoe_gemm_spec(const vkmoe_layer *layer, vkmoe_expert_matrix matrix);
vkmoe_spec vkmoe_router_gemm_spec(const vkmoe_layer *layer);
/* The shader of GEMM stage `stage` (VKMOE_SHADER_GEMM_UP or _DOWN) on the
 * layer's path. */
vkmoe_shader vkmoe_gemm_shader(const vkmoe_layer *layer, vkmoe_shader stage);

/* Byte offsets of the three bias vectors of expert e in layer->expert_biases. */
VkDeviceSize vkmoe_expert_bias_offset(const vkmoe_layer *layer, vkmoe_expert_matrix matrix,
                                      uint32_t expert);

/* Test hook: read back the layer's scratch and intermediate buffers after a
 * forward, so tests can check every stage against its own CPU reference. */
typedef enum vkmoe_debug_buffer {
    VKMOE_DEBUG_IDS,
    VKMOE_DEBUG_TOPK_WEIGHT,
    VKMOE_DEBUG_BLOCK_COUNTS,
    VKMOE_DEBUG_EXPERT_BASE,
    VKMOE_DEBUG_TILE_EXPERT,
    VKMOE_DEBUG_ROW_SLOT,
    VKMOE_DEBUG_SLOT_ROW,
    VKMOE_DEBUG_DISPATCH,
    VKMOE_DEBUG_HIDDEN,
    VKMOE_DEBUG_EXPERT_OUT,
    VKMOE_DEBUG_SHARED_OUT,
    VKMOE_DEBUG_SHARED_SCALE,
} vkmoe_debug_buffer;
vkmoe_status vkmoe_layer_debug_read(vkmoe_layer *layer, vkmoe_debug_buffer which, void *dst,
                                    size_t size);

#endif /* VKMOE_INTERNAL_H */
