/* Routed experts computed on the host (cpu_experts.c): each expert's FFN
 * for the rows routed to it, from the matrices in host memory (weights.h's
 * host arrays, laid out as on the device), multithreaded, with AVX2/FMA
 * kernels where the CPU has them. A row's output goes to the slot it came
 * from; the GPU copies it into its expert_out row before combine, which
 * sums it with the other slots in the fixed order of every forward. */
#ifndef VKMOE_CPU_EXPERTS_H
#define VKMOE_CPU_EXPERTS_H

#include "cpu_exact.h"
#include "layer.h"

/* What a forward's CPU experts read and write, all on the host. */
typedef struct vkmoe_cpu_batch {
    const float *x; /* [tokens][ld_dim]: the inputs in f32, rows zero-padded */
    uint32_t tokens;
    const uint32_t *ids;      /* [tokens·k]: each slot's expert */
    const uint32_t *slot_row; /* [tokens·k]: its row, or VKMOE_INVALID when dropped */
    const float *topk_weight; /* [tokens·k]: its weight (scales the input with
                                 scale_expert_input) */
    const uint8_t *on_cpu;    /* [experts]: whether the expert runs here */
    float *out;               /* [tokens·k][dim]: each kept slot's expert output */
} vkmoe_cpu_batch;

/* Host memory a layer's CPU experts work in, sized for max_tokens. */
typedef struct vkmoe_cpu_scratch {
    float *x;         /* [max_tokens][ld_dim] */
    float *hidden;    /* [max_slots][ld_ffn] */
    uint32_t *order;  /* [max_slots]: the CPU slots grouped by expert */
    uint32_t *groups; /* [experts + 1]: where each expert's slots begin in order */
    float *biases;    /* host copy of the experts' biases, or NULL without them */
    float *decoded;   /* [threads][decoded_per_thread]: each thread's decoded weight rows */
    size_t decoded_per_thread;
    uint32_t threads; /* host threads a forward uses */
    /* The level the host kernels run at, chosen when the layer is made:
     * its exact-integer decode kernels (cpu_exact.h); NULL at the portable
     * level, where the AVX2 float kernels do not run either. */
    const vkmoe_exact_isa *exact;
    /* Decode's activations in the exact form, where the level has a
     * kernel for the up (x) or down (hidden) weights' type; else NULL. */
    vkmoe_exact_rows x_exact;      /* [max_tokens] rows of ld_dim */
    vkmoe_exact_rows hidden_exact; /* [max_slots] rows of ld_ffn */
} vkmoe_cpu_scratch;

vkmoe_status vkmoe_cpu_scratch_create(vkmoe_layer *layer, vkmoe_cpu_scratch *out);
void vkmoe_cpu_scratch_destroy(vkmoe_cpu_scratch *s);

/* Compute every kept slot whose expert is on the CPU, their outputs into
 * batch->out; *computed says how many. */
vkmoe_status vkmoe_cpu_experts_run(const vkmoe_layer *layer, vkmoe_cpu_scratch *s,
                                   const vkmoe_cpu_batch *batch, uint32_t *computed);

/* The forward's x (io_type, [tokens][dim]) as f32 rows padded to ld_dim. */
vkmoe_status vkmoe_cpu_inputs(const vkmoe_layer *layer, vkmoe_cpu_scratch *s, const void *x,
                              uint32_t tokens);

#endif /* VKMOE_CPU_EXPERTS_H */
