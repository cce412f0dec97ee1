/* vkmoe-bench --expert-parallel: the bench's layer sharded over the ranks
 * mpirun started, measured against one rank's forward of every rank's
 * tokens. Built where vkmoe is built with MPI (VKMOE_BENCH_MPI). */
#ifndef VKMOE_BENCH_MPI_RUNS_H
#define VKMOE_BENCH_MPI_RUNS_H

#include "workload.h"

/* MPI_Init, and this process's rank among `ranks`. */
void mpi_runs_init(int *argc, char ***argv, uint32_t *rank, uint32_t *ranks);
/* MPI_Finalize after a run every rank finished; MPI_Abort (rc) where this
 * rank failed alone and the others may wait for it. */
void mpi_runs_finish(int rc, bool alone);

/* The highest rc of every rank's, on every rank, once all arrive (waiting
 * as mpi_runs_wait_for_all does). */
int mpi_runs_join(int rc);

/* Every rank waits here for the others without spinning on a core (the
 * cores are the device's, on a CPU device). */
void mpi_runs_wait_for_all(void);

/* A placement file: one line an expert, in order, listing the ranks that
 * hold it ("0 2"); blank lines and lines from '#' ignored. *out is
 * [experts][ranks], freed by the caller. false, with a message on stderr,
 * on a file that cannot be read or names a rank out of range, an expert
 * without a rank, or more or fewer than `experts` lines. */
bool mpi_runs_read_placement(const char *path, uint32_t experts, uint32_t ranks, uint8_t **out);

/* tokens_per_rank tokens a rank (rows rank · tokens_per_rank on of the
 * workloads' input) through every rank's shard in micro_batches (0: 1),
 * warmup then iters times, every rank together, after rank 0's forward of
 * all of them through the whole layer (whole: rank 0's, else NULL); rank
 * 0's *out holds the figures. */
vkmoe_status mpi_runs_measure(workload *whole, workload *shard, const uint8_t *placement,
                              uint32_t micro_batches, uint32_t tokens_per_rank, uint32_t warmup,
                              uint32_t iters, expert_parallel_figures *out);

#endif
