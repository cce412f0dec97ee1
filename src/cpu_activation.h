/* The experts' activation on the host (cpu_experts.c), for a run of
 * columns at once: out[c] = act(s·g[c] + b1[c], s·u[c] + b3[c]). Its e^x
 * is written twice, in C and in AVX2, with the same operations in the same
 * order, so both give the same bits; libm's expf, one column at a time,
 * took 5% of a Q4_K decode forward. */
#ifndef VKMOE_CPU_ACTIVATION_H
#define VKMOE_CPU_ACTIVATION_H

#include <stdbool.h>
#include <stdint.h>

#include "vkmoe.h"

/* One run of columns: g the gate products (ignored by ReLU; u again for an
 * ungated expert), u the up products, b1 and b3 their biases or NULL for
 * none, s the scale of the products (the routing weight for
 * scale_expert_input, else 1). */
typedef struct vkmoe_activation_run {
    const float *g, *u, *b1, *b3;
    float s;
    uint32_t columns;
} vkmoe_activation_run;

/* out[0 .. columns − 1]; avx2 where the CPU has AVX2 and FMA. */
void vkmoe_cpu_activate(const vkmoe_layer_params *p, const vkmoe_activation_run *run, bool avx2,
                        float *out);

#endif /* VKMOE_CPU_ACTIVATION_H */
