/* The bench's layer: deterministic random weights streamed to the device
 * one expert at a time, with the CPU reference of sampled tokens computed on
 * the way, so that layers larger than host memory can still be verified. */
#ifndef VKMOE_BENCH_WORKLOAD_H
#define VKMOE_BENCH_WORKLOAD_H

#include "reference.h"
#include "vkmoe.h"

/* Time, useful FLOPs and the bytes a stage must move at least once; its
 * name in the JSON: the vkmoe_stage's, or where the stage's time covers
 * others' work the stages it covers joined by '+' (shared/BENCH.md): a
 * stage whose work ran elsewhere counts none. */
typedef struct stage_figures {
    double ms, flops, bytes;
    char name[40];
} stage_figures;

/* A layer with an expert cache (params.expert_budget_bytes), run beside
 * the same layer with every expert resident on the same inputs. */
typedef struct offload_figures {
    bool present;
    uint64_t budget_bytes;
    uint32_t slots;
    double hit_rate;        /* of the timed forwards' needed experts: found on the device */
    double bytes_to_device; /* per forward */
    double rounds;          /* per forward */
    double resident_ms;     /* the resident layer's median */
    double cpu_only_ms;     /* the median of the layer with every expert on the host */
    double cpu_expert_ms;   /* host time on experts, per forward */
    double cpu_slots;       /* expert rows computed on the host, per forward */
    /* every timed forward's y equal to the resident layer's, where checked:
     * not for a layer with experts on the host (cpu_experts,
     * cpu_cold_experts), whose sums differ from the device's */
    bool bit_identical, bit_checked;
} offload_figures;

/* One rank's part of an expert-parallel forward, per forward (means over
 * the timed ones). */
typedef struct ep_rank_figures {
    double compute_ms, exchange_ms;
    uint32_t rows_computed;
    uint64_t bytes_sent;
    uint64_t expert_bytes; /* its shard's routed experts' device memory */
} ep_rank_figures;

/* Ranks whose own figures a run keeps (the sums cover every rank). */
#define EP_RANKS_SHOWN 64

/* vkmoe-bench --expert-parallel under mpirun (mpi_runs.c): the layer
 * sharded over the ranks, each with tokens_per_rank tokens, against one
 * rank's forward of all of them. */
typedef struct expert_parallel_figures {
    bool present;
    uint32_t ranks, tokens_per_rank, micro_batches;
    double layer_ms;        /* wall time of a forward, on its slowest rank; median */
    double single_layer_ms; /* wall time of one rank's forward of every rank's tokens; median */
    double bytes_exchanged; /* per forward: every rank's bytes to other ranks */
    double exchange_ms;     /* per forward: the most one rank spent in MPI calls */
    double compute_ms;      /* per forward: the most one rank spent on its own work */
    double imbalance;       /* the most rows one rank computed over the mean */
    /* The all-to-all's cost, measured on the same ranks: time of an
     * MPI_Alltoall of one int a pair (alpha), and bytes a second a rank
     * sends in one of 1 MiB a pair (beta). */
    double alpha_us, beta_gbps;
    bool bit_identical; /* every rank's y equal to the single forward's rows */
    ep_rank_figures rank[EP_RANKS_SHOWN];
} expert_parallel_figures;

typedef struct run_result {
    uint32_t tokens;
    stage_figures layer;
    stage_figures stages[VKMOE_STAGE_MAX];
    uint32_t active_experts; /* experts that received at least one token */
    uint32_t largest_expert; /* the most slots one expert received */
    vkmoe_gemm_path kernel;  /* the expert GEMMs' path this token count ran (AUTO resolved) */
    /* forwards recorded into each timed submission (workload_run); with
     * more than 1, the host time of a submission over them, in ms */
    uint32_t back_to_back;
    double stream_ms;
    uint32_t dispatches, barriers; /* recorded in one forward */
    bool verified;                 /* false when the check failed or was skipped */
    uint32_t verified_tokens;
    vkmoe_ref_error error;
    offload_figures offload;
    expert_parallel_figures expert_parallel;
} run_result;

typedef struct workload workload;

/* A layer of these params (max_tokens: the largest run); timing is turned
 * on. With params.expert_budget_bytes, params.cpu_experts or a routing,
 * each forward takes new inputs (steered to the routing's experts, else
 * random), and twins of the layer run them too, one with every expert
 * resident and one with every expert on the host (run_result.offload). */
typedef struct workload_routing {
    double skew;       /* > 0: experts drawn by a drifting Zipf law of this exponent */
    const char *trace; /* or a file of recorded expert ids, a token a line */
} workload_routing;
vkmoe_status workload_create(vkmoe_context *ctx, const vkmoe_layer_params *params, bool verify,
                             const workload_routing *routing, workload **out);
/* Time a forward of the first `tokens` tokens: warmup runs, then the median
 * of iters runs; checks the sampled tokens against the reference. With
 * back_to_back > 1 (a layer with every expert on the device and a device
 * with push descriptors), each run records that many forwards into one
 * submission and its figures are the last forward's. */
vkmoe_status workload_run(workload *w, uint32_t tokens, uint32_t warmup, uint32_t iters,
                          uint32_t back_to_back, run_result *out);
void workload_destroy(workload **w);
/* The median of n values (sorting them). */
double workload_median(double *v, uint32_t n);
/* The layer's params, defaults resolved. */
const vkmoe_layer_params *workload_params(const workload *w);
/* The layer itself, and its max_tokens inputs in io_type's bytes. */
vkmoe_layer *workload_layer(const workload *w);
const void *workload_input(const workload *w);

#endif
