/* What this host's CPU can do at best, measured by the bench itself, so
 * that experts computed on the host (vkmoe_layer_params.cpu_experts) can be
 * stated as a share of it. */
#ifndef VKMOE_BENCH_HOST_PEAK_H
#define VKMOE_BENCH_HOST_PEAK_H

typedef struct host_peak_figures {
    unsigned threads;  /* one per online CPU, as the library's CPU experts use */
    double fma_gflops; /* f32 FMAs from registers on every thread (AVX2/FMA where present) */
    double read_gbps;  /* every thread summing its share of a 256 MiB buffer */
} host_peak_figures;

/* Measure; figures stay 0 where memory or threads cannot be had. */
void host_peak_measure(host_peak_figures *out);
/* Seconds on the host's monotonic clock. */
double host_seconds(void);

#endif
