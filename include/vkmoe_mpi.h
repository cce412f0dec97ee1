/* vkmoe over MPI: expert parallelism across processes (and machines).
 * Installed, and its function in the library, only where vkmoe was built
 * with MPI (Meson option `mpi`, on where an MPI is found); the rest of the
 * library is the same either way. Include <mpi.h>'s implementation's
 * compiler flags (mpicc, or pkg-config ompi-c) and link it as well. */
#ifndef VKMOE_MPI_H
#define VKMOE_MPI_H

#include <mpi.h>

#include "vkmoe.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What one rank's part of an expert-parallel forward did and cost. */
typedef struct vkmoe_expert_parallel_stats {
    /* Rows this rank's tokens sent to other ranks (choices of experts it
     * does not hold), and rows it received from them. */
    uint32_t rows_sent, rows_received;
    /* Rows this rank ran through its experts: those received and its own
     * tokens' choices of experts it holds. */
    uint32_t rows_computed;
    /* Bytes to and from other ranks in both exchanges: token rows (io_type)
     * with their expert and weight out, f32 output rows back. */
    uint64_t bytes_sent, bytes_received;
    /* Wall time blocked in MPI calls, in milliseconds: the exchanges not
     * hidden behind compute, and the waits for slower ranks at them (load
     * imbalance shows here). */
    double exchange_ms;
    /* Wall time in this rank's own work, in milliseconds: routing,
     * packing, its experts' GEMMs (with MPI's progress on the next
     * micro-batch meanwhile), combine. */
    double compute_ms;
} vkmoe_expert_parallel_stats;

/* How an expert-parallel forward over MPI runs; every rank the same
 * (checked). Zero-initialised: the defaults. */
typedef struct vkmoe_expert_parallel_options {
    /* [experts][ranks], nonzero where the rank holds the expert (and its
     * shard must, where it holds only some: params.held_experts). Default
     * NULL: contiguous blocks, expert e on rank ⌊e · ranks / experts⌋. */
    const uint8_t *placement;
    /* Split every rank's tokens into this many contiguous micro-batches
     * (1..64): micro-batch b + 1's rows travel while micro-batch b is
     * computed, and b's outputs travel back while b + 1 is (non-blocking
     * MPI_Ialltoallv, progressed while the host waits for the device).
     * Results are the same bits whatever the number. Default (0): 1, no
     * overlap. */
    uint32_t micro_batches;
} vkmoe_expert_parallel_options;

/* One forward of a layer sharded over the ranks of comm, called by every
 * rank of comm together (collective); rank r's shard, tokens, x and y
 * are its own. Arithmetic, placement and results are those of
 * vkmoe_expert_parallel_forward with ranks = the size of comm: y is bit for
 * bit the single layer's rows for this rank's tokens in one forward of all
 * ranks' tokens. options: NULL for the defaults. tokens may be 0 (the rank
 * only computes), but not on every rank. A shard of NULL (a rank that
 * could not make its layer) fails the forward everywhere.
 *
 * One MPI_Allreduce first agrees every rank's shape, options and status;
 * the rank routes its tokens and groups their choices by destination; one
 * MPI_Alltoall of counts (with each rank's status and token count) sizes
 * the exchanges; per micro-batch, two MPI_Ialltoallv carry token rows
 * (io_type) with their expert and weight out and one carries f32 output
 * rows back; one MPI_Allreduce then agrees that every rank computed, and
 * combine runs. Every rank therefore returns: a rank whose own arguments
 * or work fail returns its cause, every other rank VKMOE_ERROR_PEER
 * naming the first rank that failed — except a failure in a rank's own
 * combine, after the last exchange, which is that rank's alone (the
 * others' outputs are whole and they return VKMOE_OK); INVALID_ARGUMENT (on every rank)
 * where shards' dim, ffn_dim, experts, top_k or io_type differ, placements
 * or micro_batches differ, no rank has a token, or no rank holds an
 * expert. MPI errors follow comm's error handler: with
 * MPI_ERRORS_ARE_FATAL (MPI's default) MPI ends the job, as it does when a
 * peer process dies; with MPI_ERRORS_RETURN they come back as
 * VKMOE_ERROR_PEER with MPI's message, and comm is then unusable. A rank
 * that never calls (stuck elsewhere) is waited for: bound it with the MPI
 * implementation's own timeouts. stats (NULL: not wanted) is filled on
 * success. */
VKMOE_API vkmoe_status vkmoe_expert_parallel_forward_mpi(
    vkmoe_layer *shard, MPI_Comm comm, const vkmoe_expert_parallel_options *options,
    uint32_t tokens, const void *x, void *y, vkmoe_expert_parallel_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
