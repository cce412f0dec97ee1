/* vkmoe-bench --expert-parallel (mpi_runs.h). Rank 0 measures and prints;
 * the other ranks take part in the sharded forwards and otherwise sleep
 * in mpi_runs_wait_for_all, so that on a CPU device their polling does
 * not take the cores rank 0's single-rank runs are timed on. */
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpi_runs.h"
#include "vkmoe_mpi.h"

void mpi_runs_init(int *argc, char ***argv, uint32_t *rank, uint32_t *ranks)
{
    int me = 0, size = 1;
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    *rank = (uint32_t)me;
    *ranks = (uint32_t)size;
}

void mpi_runs_wait_for_all(void)
{
    MPI_Request request;
    MPI_Ibarrier(MPI_COMM_WORLD, &request);
    for (int done = 0;;) {
        MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        if (done)
            return;
        nanosleep(&(struct timespec){0, 1000000}, NULL); /* 1 ms */
    }
}

int mpi_runs_join(int rc)
{
    int highest = rc;
    mpi_runs_wait_for_all();
    MPI_Allreduce(&rc, &highest, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return highest;
}

void mpi_runs_finish(int rc, bool alone)
{
    if (alone && rc)
        MPI_Abort(MPI_COMM_WORLD, rc);
    MPI_Finalize();
}

bool mpi_runs_read_placement(const char *path, uint32_t experts, uint32_t ranks, uint8_t **out)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "vkmoe-bench: %s: %s\n", path, strerror(errno));
        return false;
    }
    uint8_t *map = calloc((size_t)experts * ranks, 1);
    char line[4096];
    uint32_t e = 0, line_no = 0;
    bool ok = map != NULL;
    while (ok && fgets(line, sizeof(line), f)) {
        line_no++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *at = line, *end;
        bool any = false;
        uint32_t expert = e;
        for (long r; ok && (r = strtol(at, &end, 10), end != at); at = end) {
            ok = e < experts && r >= 0 && r < (long)ranks;
            if (ok)
                map[(size_t)e * ranks + (size_t)r] = any = 1;
        }
        while (*at == ' ' || *at == '\t' || *at == '\n' || *at == '\r')
            at++;
        ok = ok && *at == '\0';
        e += any;
        if (!ok)
            fprintf(stderr,
                    "vkmoe-bench: %s:%u: expected the ranks (0..%u) holding expert %u, an "
                    "expert a line (%u experts)\n",
                    path, line_no, ranks - 1, expert, experts);
    }
    fclose(f);
    if (ok && e != experts) {
        fprintf(stderr, "vkmoe-bench: %s: %u experts placed, the layer has %u\n", path, e, experts);
        ok = false;
    }
    if (!ok)
        free(map);
    *out = ok ? map : NULL;
    return ok;
}

/* Rank 0's wall time of the single layer's forward of every rank's
 * tokens, and its rows, the other ranks waiting. */
static vkmoe_status run_single(workload *w, uint32_t total, void *want, uint32_t warmup,
                               uint32_t iters, double *samples, double *ms)
{
    vkmoe_status status = VKMOE_OK;
    for (uint32_t i = 0; i < warmup + iters && status == VKMOE_OK; i++) {
        double t0 = MPI_Wtime();
        status = vkmoe_layer_forward(workload_layer(w), total, workload_input(w), want);
        if (i >= warmup)
            samples[i - warmup] = 1e3 * (MPI_Wtime() - t0);
    }
    if (status == VKMOE_OK)
        *ms = workload_median(samples, iters);
    return status;
}

/* Every rank's forwards through its shard, timed on the slowest; each
 * rank's own figures summed into *mine, its rows compared with
 * `expected`. */
static vkmoe_status run_sharded(workload *w, const vkmoe_expert_parallel_options *options,
                                uint32_t tokens, const void *x, void *y, const void *expected,
                                size_t bytes, uint32_t warmup, uint32_t iters, double *samples,
                                ep_rank_figures *mine, bool *identical)
{
    vkmoe_status status = VKMOE_OK;
    for (uint32_t i = 0; i < warmup + iters && status == VKMOE_OK; i++) {
        vkmoe_expert_parallel_stats stats;
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        status = vkmoe_expert_parallel_forward_mpi(workload_layer(w), MPI_COMM_WORLD, options,
                                                   tokens, x, y, &stats);
        double took = MPI_Wtime() - t0, slowest = 0;
        MPI_Allreduce(&took, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (status != VKMOE_OK || i < warmup)
            continue;
        samples[i - warmup] = 1e3 * slowest;
        mine->compute_ms += stats.compute_ms / iters;
        mine->exchange_ms += stats.exchange_ms / iters;
        mine->rows_computed = stats.rows_computed;
        mine->bytes_sent = stats.bytes_sent;
        *identical = *identical && !memcmp(y, expected, bytes);
    }
    return status;
}

/* alpha: an MPI_Alltoall of one int a pair; beta: a rank's bytes to the
 * others a second in one of 1 MiB a pair. Medians of the slowest rank. */
static void measure_alltoall(int ranks, double *alpha_us, double *beta_gbps)
{
    enum { REPS = 9, BIG = 1 << 20 };
    char *send = calloc((size_t)ranks, BIG), *recv = calloc((size_t)ranks, BIG);
    int ok = send && recv, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    double small[REPS], large[REPS];
    for (int i = 0; all_ok && i < 2 * REPS; i++) {
        int count = i < REPS ? 4 : BIG;
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Alltoall(send, count, MPI_BYTE, recv, count, MPI_BYTE, MPI_COMM_WORLD);
        double took = MPI_Wtime() - t0, slowest = 0;
        MPI_Allreduce(&took, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        (i < REPS ? small : large)[i % REPS] = slowest;
    }
    *alpha_us = all_ok ? 1e6 * workload_median(small, REPS) : 0;
    *beta_gbps = all_ok ? (double)(ranks - 1) * BIG / (workload_median(large, REPS) * 1e9) : 0;
    free(send);
    free(recv);
}

/* Rank 0's figures from every rank's. */
enum { FIGURES = 5 }; /* what a rank tells rank 0 */
static void gather_figures(const ep_rank_figures *mine, int ranks, expert_parallel_figures *out)
{
    double own[FIGURES] = {mine->compute_ms, mine->exchange_ms, (double)mine->rows_computed,
                           (double)mine->bytes_sent, (double)mine->expert_bytes};
    double *all = calloc(FIGURES * (size_t)ranks, sizeof(double));
    int me = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (me == 0 && !all)
        MPI_Abort(MPI_COMM_WORLD, 1); /* a bench out of memory: nothing to report */
    MPI_Gather(own, FIGURES, MPI_DOUBLE, all, FIGURES, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    double rows = 0, most_rows = 0;
    for (int r = 0; me == 0 && r < ranks; r++) {
        const double *f = all + FIGURES * r;
        if (r < EP_RANKS_SHOWN)
            out->rank[r] =
                (ep_rank_figures){f[0], f[1], (uint32_t)f[2], (uint64_t)f[3], (uint64_t)f[4]};
        out->compute_ms = f[0] > out->compute_ms ? f[0] : out->compute_ms;
        out->exchange_ms = f[1] > out->exchange_ms ? f[1] : out->exchange_ms;
        rows += f[2];
        most_rows = f[2] > most_rows ? f[2] : most_rows;
        out->bytes_exchanged += f[3];
    }
    out->imbalance = rows > 0 ? most_rows * ranks / rows : 0;
    free(all);
}

vkmoe_status mpi_runs_measure(workload *whole, workload *shard, const uint8_t *placement,
                              uint32_t micro_batches, uint32_t tokens, uint32_t warmup,
                              uint32_t iters, expert_parallel_figures *out)
{
    int me = 0, ranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    const vkmoe_layer_params *p = workload_params(shard);
    size_t row = vkmoe_weight_bytes(p->io_type, p->dim);
    uint32_t total = tokens * (uint32_t)ranks;
    *out = (expert_parallel_figures){.present = true,
                                     .ranks = (uint32_t)ranks,
                                     .tokens_per_rank = tokens,
                                     .micro_batches = micro_batches ? micro_batches : 1,
                                     .bit_identical = 1};
    uint8_t *want = malloc(me == 0 ? total * row : 1), *expected = malloc(tokens * row),
            *y = malloc(tokens * row);
    double *samples = malloc(iters * sizeof(double));
    vkmoe_status status =
        want && expected && y && samples ? VKMOE_OK : VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    if (status == VKMOE_OK && me == 0)
        status = run_single(whole, total, want, warmup, iters, samples, &out->single_layer_ms);
    mpi_runs_wait_for_all();
    int failed = status != VKMOE_OK, any_failed = 0;
    MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any_failed) {
        if (status == VKMOE_OK)
            status = VKMOE_ERROR_PEER;
    } else {
        MPI_Datatype rows;
        MPI_Type_contiguous((int)(tokens * row), MPI_BYTE, &rows);
        MPI_Type_commit(&rows);
        MPI_Scatter(want, 1, rows, expected, 1, rows, 0, MPI_COMM_WORLD);
        MPI_Type_free(&rows);
        const uint8_t *x = (const uint8_t *)workload_input(shard) + (size_t)me * tokens * row;
        vkmoe_memory_report memory;
        vkmoe_layer_memory(workload_layer(shard), &memory);
        ep_rank_figures mine = {.expert_bytes = memory.experts};
        bool identical = true;
        vkmoe_expert_parallel_options options = {placement, micro_batches};
        status = run_sharded(shard, &options, tokens, x, y, expected, tokens * row, warmup, iters,
                             samples, &mine, &identical);
        if (status == VKMOE_OK) {
            out->layer_ms = workload_median(samples, iters);
            gather_figures(&mine, ranks, out);
            MPI_Reduce(&identical, &out->bit_identical, 1, MPI_C_BOOL, MPI_LAND, 0, MPI_COMM_WORLD);
            measure_alltoall(ranks, &out->alpha_us, &out->beta_gbps);
        }
    }
    free(want);
    free(expected);
    free(y);
    free(samples);
    return status;
}
