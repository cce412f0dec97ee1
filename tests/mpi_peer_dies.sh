#!/bin/sh
# A rank that fails to start, or a peer that dies mid-job, ends the job
# within a bounded time with a message, never a hang. Arguments: mpirun and
# its options, then test_expert_parallel_mpi, which with --peer-dies has
# rank 1 exit before the forward the other ranks enter, and with
# --fails-to-start has rank 1 exit before MPI_Init.
for mode in --peer-dies --fails-to-start; do
    out=$(timeout 120 "$@" "$mode" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    if [ "$rc" -eq 124 ]; then
        echo "mpi_peer_dies $mode: the job hung (killed after 120 s)" >&2
        exit 1
    fi
    if [ "$rc" -eq 0 ]; then
        echo "mpi_peer_dies $mode: the job succeeded though rank 1 failed" >&2
        exit 1
    fi
    if printf '%s' "$out" | grep -q "the forward returned with a dead peer"; then
        echo "mpi_peer_dies $mode: a rank went on past the forward" >&2
        exit 1
    fi
    echo "mpi_peer_dies $mode: the job ended with status $rc"
done
