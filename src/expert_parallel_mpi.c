/* Expert parallelism across processes: the steps of expert_parallel.h with
 * MPI between them. Every rank calls every collective whatever happened
 * before it, and each exchange carries the ranks' statuses, so a failure
 * on one rank ends the forward on all of them instead of leaving the
 * others waiting in a collective the failed rank never reaches. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "expert_parallel.h"
#include "params.h"
#include "vkmoe_mpi.h"

static const char *const fn = "vkmoe_expert_parallel_forward_mpi";

typedef struct mpi_job {
    vkmoe_layer *shard;
    MPI_Comm comm;
    int me, ranks;
    vkmoe_ep_placement placement;
    uint32_t tokens, total;
    const void *x;
    void *y;
    vkmoe_ep_outbox box;
    /* [ranks] triplets: rows to (from) each rank, the status and the
     * token count of the sender. */
    int *counts_out, *counts_in;
    /* In rows, [ranks]: what goes to and comes from each rank, and where. */
    int *send_count, *send_at, *recv_count, *recv_at;
    uint32_t received;
    uint8_t *in_x;
    vkmoe_ep_choice *in_choice;
    float *in_out, *back; /* outputs of the rows received, and of those sent */
    MPI_Datatype row, choice, out_row;
    vkmoe_expert_parallel_stats stats;
} mpi_job;

static vkmoe_context *ctx_of(const mpi_job *j) { return j->shard ? j->shard->ctx : NULL; }

static vkmoe_status mpi_check(const mpi_job *j, int rc, const char *call)
{
    if (rc == MPI_SUCCESS)
        return VKMOE_OK;
    char message[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(rc, message, &length) != MPI_SUCCESS)
        strcpy(message, "unknown MPI error");
    return vkmoe_fail(ctx_of(j), VKMOE_ERROR_PEER, "%s: rank %d: %s: %s", fn, j->me, call, message);
}

/* Runs an MPI call, timed as exchange. */
#define EP_MPI(j, call)                                                                            \
    do {                                                                                           \
        double t0_ = MPI_Wtime();                                                                  \
        int rc_ = (call);                                                                          \
        (j)->stats.exchange_ms += 1e3 * (MPI_Wtime() - t0_);                                       \
        VKMOE_TRY(mpi_check((j), rc_, #call));                                                     \
    } while (0)

/* What a rank puts in a vote: the higher, the lower the failed rank. */
static int vote_of(const mpi_job *j, vkmoe_status mine)
{
    return mine != VKMOE_OK ? j->ranks - j->me : 0;
}

/* This rank's result once the highest vote is known to all: its own
 * cause, or the lowest failed rank's number. */
static vkmoe_status agreed(const mpi_job *j, vkmoe_status mine, int64_t highest_vote)
{
    if (mine != VKMOE_OK)
        return mine;
    if (highest_vote > 0)
        return vkmoe_fail(ctx_of(j), VKMOE_ERROR_PEER, "%s: rank %d failed (its own call says why)",
                          fn, (int)(j->ranks - highest_vote));
    return VKMOE_OK;
}

/* Every rank's status, agreed: each rank returns the same outcome. */
static vkmoe_status agree(mpi_job *j, vkmoe_status mine)
{
    int vote = vote_of(j, mine), highest = 0;
    EP_MPI(j, MPI_Allreduce(&vote, &highest, 1, MPI_INT, MPI_MAX, j->comm));
    return agreed(j, mine, highest);
}

static uint32_t placement_hash(const vkmoe_ep_placement *pl)
{
    uint32_t h = 2166136261u;
    for (uint32_t e = 0; e < pl->experts; e++)
        for (uint32_t r = 0; r < pl->ranks; r++)
            h = (h ^ (uint32_t)vkmoe_ep_holds(pl, e, r)) * 16777619u;
    return h;
}

static vkmoe_status out_of_memory(const mpi_job *j)
{
    return vkmoe_fail(ctx_of(j), VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
}

/* This rank's arguments and its per-rank arrays, then one MPI_Allreduce
 * (MAX) of its vote, its shape and placement hash and their negations:
 * where the maximum of a field is not minus the maximum of its negation,
 * two ranks differ. Nothing it sends needs memory, so a rank without any
 * still takes part. */
enum { EP_FIELDS = 6 }; /* dim, ffn_dim, experts, top_k, io_type, placement */
static vkmoe_status hello(mpi_job *j)
{
    if (j->shard)
        j->placement.experts = j->shard->params.experts;
    vkmoe_status mine =
        vkmoe_ep_check_shard(j->shard, &j->placement, (uint32_t)j->me, j->tokens, j->x, j->y, fn);
    size_t ranks = (size_t)j->ranks;
    j->counts_out = vkmoe_calloc(3 * ranks, sizeof(int));
    j->counts_in = vkmoe_calloc(3 * ranks, sizeof(int));
    j->send_count = vkmoe_calloc(ranks, sizeof(int));
    j->send_at = vkmoe_calloc(ranks, sizeof(int));
    j->recv_count = vkmoe_calloc(ranks, sizeof(int));
    j->recv_at = vkmoe_calloc(ranks, sizeof(int));
    if (mine == VKMOE_OK && (!j->counts_out || !j->counts_in || !j->send_count || !j->send_at ||
                             !j->recv_count || !j->recv_at))
        mine = out_of_memory(j);
    int64_t mine_fields[EP_FIELDS] = {0};
    if (mine == VKMOE_OK) {
        vkmoe_ep_shape shape = vkmoe_ep_shape_of(j->shard);
        int64_t f[EP_FIELDS] = {shape.dim,   shape.ffn_dim, shape.experts,
                                shape.top_k, shape.io_type, placement_hash(&j->placement)};
        memcpy(mine_fields, f, sizeof(f));
    }
    int64_t v[1 + 2 * EP_FIELDS], highest[1 + 2 * EP_FIELDS];
    v[0] = vote_of(j, mine);
    for (int i = 0; i < EP_FIELDS; i++) {
        v[1 + i] = mine_fields[i];
        v[1 + EP_FIELDS + i] = -mine_fields[i];
    }
    EP_MPI(j, MPI_Allreduce(v, highest, 1 + 2 * EP_FIELDS, MPI_INT64_T, MPI_MAX, j->comm));
    VKMOE_TRY(agreed(j, mine, highest[0]));
    for (int i = 0; i < EP_FIELDS - 1; i++)
        VKMOE_REQUIRE(j->shard->ctx, highest[1 + i] == -highest[1 + EP_FIELDS + i],
                      "%s: the ranks' shards differ in dim, ffn_dim, experts, top_k or io_type",
                      fn);
    VKMOE_REQUIRE(j->shard->ctx, highest[EP_FIELDS] == -highest[2 * EP_FIELDS],
                  "%s: the ranks' placements differ", fn);
    /* The same placement everywhere: every rank finds the same answer. */
    return vkmoe_ep_check_placement(j->shard->ctx, &j->placement, fn);
}

/* This rank's tokens routed and packed, then one MPI_Alltoall of triplets
 * (rows for the receiver, the sender's status, its tokens): each rank
 * learns what it receives, the total, or who failed. */
static vkmoe_status dispatch(mpi_job *j)
{
    int ranks = j->ranks;
    double t0 = MPI_Wtime();
    vkmoe_status mine =
        vkmoe_ep_dispatch(j->shard, &j->placement, (uint32_t)j->me, j->tokens, j->x, &j->box);
    j->stats.compute_ms += 1e3 * (MPI_Wtime() - t0);
    for (int o = 0; o < ranks; o++) {
        j->counts_out[3 * o] = mine == VKMOE_OK ? (int)j->box.count[o] : 0;
        j->counts_out[3 * o + 1] = vote_of(j, mine);
        j->counts_out[3 * o + 2] = (int)j->tokens;
    }
    EP_MPI(j, MPI_Alltoall(j->counts_out, 3, MPI_INT, j->counts_in, 3, MPI_INT, j->comm));
    int highest = 0;
    for (int r = 0; r < ranks; r++) {
        highest = j->counts_in[3 * r + 1] > highest ? j->counts_in[3 * r + 1] : highest;
        j->total += (uint32_t)j->counts_in[3 * r + 2];
    }
    VKMOE_TRY(agreed(j, mine, highest));
    VKMOE_REQUIRE(j->shard->ctx, j->total > 0, "%s: no rank has a token", fn);
    for (int r = 0; r < ranks; r++) {
        j->send_count[r] = j->counts_out[3 * r];
        j->recv_count[r] = j->counts_in[3 * r];
        j->send_at[r] = r ? j->send_at[r - 1] + j->send_count[r - 1] : 0;
        j->recv_at[r] = r ? j->recv_at[r - 1] + j->recv_count[r - 1] : 0;
        j->received += (uint32_t)j->recv_count[r];
    }
    return VKMOE_OK;
}

/* The received rows' buffers and the exchange's row types, agreed. */
static vkmoe_status prepare_exchange(mpi_job *j)
{
    const vkmoe_layer_params *p = &j->shard->params;
    size_t row_bytes = (size_t)p->dim * vkmoe_params_io_bytes(p);
    size_t in = j->received ? j->received : 1, out = j->box.n ? j->box.n : 1;
    j->in_x = vkmoe_malloc(in * row_bytes);
    j->in_choice = vkmoe_malloc(in * sizeof(vkmoe_ep_choice));
    j->in_out = vkmoe_malloc(in * p->dim * sizeof(float));
    j->back = vkmoe_malloc(out * p->dim * sizeof(float));
    vkmoe_status mine =
        j->in_x && j->in_choice && j->in_out && j->back ? VKMOE_OK : out_of_memory(j);
    VKMOE_TRY(agree(j, mine));
    EP_MPI(j, MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &j->row));
    EP_MPI(j, MPI_Type_commit(&j->row));
    EP_MPI(j, MPI_Type_contiguous((int)sizeof(vkmoe_ep_choice), MPI_BYTE, &j->choice));
    EP_MPI(j, MPI_Type_commit(&j->choice));
    EP_MPI(j, MPI_Type_contiguous((int)p->dim, MPI_FLOAT, &j->out_row));
    return mpi_check(j, MPI_Type_commit(&j->out_row), "MPI_Type_commit");
}

/* Rows out, through this rank's experts, outputs back. */
static vkmoe_status exchange_and_compute(mpi_job *j)
{
    EP_MPI(j, MPI_Alltoallv(j->box.x, j->send_count, j->send_at, j->row, j->in_x, j->recv_count,
                            j->recv_at, j->row, j->comm));
    EP_MPI(j, MPI_Alltoallv(j->box.choice, j->send_count, j->send_at, j->choice, j->in_choice,
                            j->recv_count, j->recv_at, j->choice, j->comm));
    double t0 = MPI_Wtime();
    vkmoe_status mine =
        vkmoe_ep_compute(j->shard, j->total, j->received, j->in_x, j->in_choice, j->in_out);
    j->stats.compute_ms += 1e3 * (MPI_Wtime() - t0);
    VKMOE_TRY(agree(j, mine));
    EP_MPI(j, MPI_Alltoallv(j->in_out, j->recv_count, j->recv_at, j->out_row, j->back,
                            j->send_count, j->send_at, j->out_row, j->comm));
    return VKMOE_OK;
}

static void count_traffic(mpi_job *j)
{
    const vkmoe_layer_params *p = &j->shard->params;
    uint64_t out_bytes = (uint64_t)p->dim * vkmoe_params_io_bytes(p) + sizeof(vkmoe_ep_choice),
             back_bytes = 4ull * p->dim;
    vkmoe_expert_parallel_stats *s = &j->stats;
    s->rows_sent = j->box.n - (uint32_t)j->send_count[j->me];
    s->rows_received = j->received - (uint32_t)j->recv_count[j->me];
    s->rows_computed = j->received;
    s->bytes_sent = s->rows_sent * out_bytes + s->rows_received * back_bytes;
    s->bytes_received = s->rows_received * out_bytes + s->rows_sent * back_bytes;
}

static vkmoe_status run(mpi_job *j)
{
    VKMOE_TRY(hello(j));
    VKMOE_TRY(dispatch(j));
    VKMOE_TRY(prepare_exchange(j));
    VKMOE_TRY(exchange_and_compute(j));
    count_traffic(j);
    if (!j->tokens)
        return VKMOE_OK;
    double t0 = MPI_Wtime();
    vkmoe_status status =
        vkmoe_ep_combine(j->shard, j->total, j->tokens, j->x, &j->box, j->back, j->y);
    j->stats.compute_ms += 1e3 * (MPI_Wtime() - t0);
    return status;
}

vkmoe_status vkmoe_expert_parallel_forward_mpi(vkmoe_layer *shard, MPI_Comm comm,
                                               const uint8_t *placement, uint32_t tokens,
                                               const void *x, void *y,
                                               vkmoe_expert_parallel_stats *stats)
{
    VKMOE_REQUIRE(shard ? shard->ctx : NULL, comm != MPI_COMM_NULL, "%s: comm is MPI_COMM_NULL",
                  fn);
    mpi_job j = {.shard = shard,
                 .comm = comm,
                 .tokens = tokens,
                 .x = x,
                 .y = y,
                 .row = MPI_DATATYPE_NULL,
                 .choice = MPI_DATATYPE_NULL,
                 .out_row = MPI_DATATYPE_NULL};
    int rc = MPI_Comm_rank(comm, &j.me);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(comm, &j.ranks);
    VKMOE_TRY(mpi_check(&j, rc, "MPI_Comm_rank"));
    j.placement = (vkmoe_ep_placement){(uint32_t)j.ranks, 0, placement};
    vkmoe_status status = run(&j);
    if (status == VKMOE_OK && stats)
        *stats = j.stats;
    vkmoe_ep_outbox_free(&j.box);
    void *arrays[] = {j.counts_out, j.counts_in, j.send_count, j.send_at, j.recv_count,
                      j.recv_at,    j.in_x,      j.in_choice,  j.in_out,  j.back};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(arrays); i++)
        free(arrays[i]);
    MPI_Datatype *types[] = {&j.row, &j.choice, &j.out_row};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(types); i++)
        if (*types[i] != MPI_DATATYPE_NULL)
            MPI_Type_free(types[i]);
    return status;
}
