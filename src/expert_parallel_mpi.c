/* Expert parallelism across processes: the steps of expert_parallel.h with
 * MPI between them. Every rank calls every collective whatever happened
 * before it, and each exchange carries the ranks' statuses, so a failure
 * on one rank ends the forward on all of them instead of leaving the
 * others waiting in a collective the failed rank never reaches. With
 * micro-batches, the exchanges are non-blocking: one micro-batch's rows
 * travel (MPI progressed while the host waits for the device) as the
 * previous one's are computed. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "expert_parallel.h"
#include "params.h"
#include "vkmoe_mpi.h"

static const char *const fn = "vkmoe_expert_parallel_forward_mpi";

/* Micro-batches a forward may have: each costs two collectives. */
#define EP_MAX_MICRO_BATCHES 64

/* Where one micro-batch's rows go and come from, in rows, [ranks] each:
 * out of the outbox (send) and into the inbox (recv). */
typedef struct ep_batch {
    int *send_count, *send_at, *recv_count, *recv_at;
    uint32_t received, first; /* its rows in the inbox: first .. first + received − 1 */
    MPI_Request out[2], back; /* rows and choices out; outputs back */
} ep_batch;

typedef struct mpi_job {
    vkmoe_layer *shard;
    MPI_Comm comm;
    int me, ranks;
    vkmoe_ep_placement placement;
    uint32_t batches; /* micro-batches */
    uint32_t tokens, total;
    const void *x;
    void *y;
    vkmoe_ep_outbox box;
    /* [ranks][batches + 2]: rows of each micro-batch to (from) each rank,
     * the sender's vote (vote_of) and its token count. */
    int *counts_out, *counts_in;
    ep_batch *batch;   /* [batches] */
    int *batch_arrays; /* the batches' four lists, [batches][4][ranks] */
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

static uint32_t counts_stride(const mpi_job *j) { return j->batches + 2; }

/* This rank's arguments and its per-rank arrays, then one MPI_Allreduce
 * (MAX) of its vote, its shape, placement hash and micro-batches and their
 * negations: where the maximum of a field is not minus the maximum of its
 * negation, two ranks differ. Nothing it sends needs memory, so a rank
 * without any still takes part. */
enum { EP_FIELDS = 7 }; /* dim, ffn_dim, experts, top_k, io_type, placement, micro-batches */
static vkmoe_status hello(mpi_job *j)
{
    if (j->shard)
        j->placement.experts = j->shard->params.experts;
    vkmoe_status mine =
        vkmoe_ep_check_shard(j->shard, &j->placement, (uint32_t)j->me, j->tokens, j->x, j->y, fn);
    if (mine == VKMOE_OK && j->batches > EP_MAX_MICRO_BATCHES)
        mine = vkmoe_fail(j->shard->ctx, VKMOE_ERROR_INVALID_ARGUMENT,
                          "%s: %u micro-batches, at most %u", fn, j->batches, EP_MAX_MICRO_BATCHES);
    size_t ranks = (size_t)j->ranks, batches = j->batches <= EP_MAX_MICRO_BATCHES ? j->batches : 1;
    j->counts_out = vkmoe_calloc(ranks * (batches + 2), sizeof(int));
    j->counts_in = vkmoe_calloc(ranks * (batches + 2), sizeof(int));
    j->batch = vkmoe_calloc(batches, sizeof(ep_batch));
    j->batch_arrays = vkmoe_calloc(batches * 4 * ranks, sizeof(int));
    if (mine == VKMOE_OK && (!j->counts_out || !j->counts_in || !j->batch || !j->batch_arrays))
        mine = out_of_memory(j);
    int64_t mine_fields[EP_FIELDS] = {0};
    if (mine == VKMOE_OK) {
        vkmoe_ep_shape shape = vkmoe_ep_shape_of(j->shard);
        int64_t f[EP_FIELDS] = {shape.dim,   shape.ffn_dim, shape.experts,
                                shape.top_k, shape.io_type, placement_hash(&j->placement),
                                j->batches};
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
#define EP_SHAPES "shards differ in dim, ffn_dim, experts, top_k or io_type"
    static const char *const differ[EP_FIELDS] = {EP_SHAPES,
                                                  EP_SHAPES,
                                                  EP_SHAPES,
                                                  EP_SHAPES,
                                                  EP_SHAPES,
                                                  "placements differ",
                                                  "micro_batches differ"};
#undef EP_SHAPES
    for (int i = 0; i < EP_FIELDS; i++)
        VKMOE_REQUIRE(j->shard->ctx, highest[1 + i] == -highest[1 + EP_FIELDS + i],
                      "%s: the ranks' %s", fn, differ[i]);
    for (uint32_t b = 0; b < j->batches; b++) {
        int *lists = j->batch_arrays + (size_t)b * 4 * ranks;
        j->batch[b] = (ep_batch){.send_count = lists,
                                 .send_at = lists + ranks,
                                 .recv_count = lists + 2 * ranks,
                                 .recv_at = lists + 3 * ranks,
                                 .out = {MPI_REQUEST_NULL, MPI_REQUEST_NULL},
                                 .back = MPI_REQUEST_NULL};
    }
    /* The same placement everywhere: every rank finds the same answer. */
    return vkmoe_ep_check_placement(j->shard->ctx, &j->placement, fn);
}

/* The micro-batch of a row of the outbox: of its token's, in contiguous
 * ranges of this rank's tokens. */
static uint32_t batch_of(const mpi_job *j, uint32_t row)
{
    uint32_t token = j->box.slot[row] / j->shard->params.top_k;
    return (uint32_t)((uint64_t)token * j->batches / j->tokens);
}

/* This rank's tokens routed and packed, then one MPI_Alltoall of each
 * destination's rows in every micro-batch with the sender's vote and
 * token count: each rank learns what it receives, the total, or who
 * failed. */
static vkmoe_status dispatch(mpi_job *j)
{
    uint32_t ranks = (uint32_t)j->ranks, stride = counts_stride(j);
    double t0 = MPI_Wtime();
    vkmoe_status mine =
        vkmoe_ep_dispatch(j->shard, &j->placement, (uint32_t)j->me, j->tokens, j->x, &j->box);
    j->stats.compute_ms += 1e3 * (MPI_Wtime() - t0);
    /* Each destination's group is in slot order, so its micro-batches are
     * contiguous in it. */
    for (uint32_t i = 0, o = 0, end = 0; mine == VKMOE_OK && i < j->box.n; i++) {
        while (i >= end)
            end += j->box.count[o++];
        j->counts_out[(o - 1) * stride + batch_of(j, i)]++;
    }
    for (uint32_t o = 0; o < ranks; o++) {
        j->counts_out[o * stride + j->batches] = vote_of(j, mine);
        j->counts_out[o * stride + j->batches + 1] = (int)j->tokens;
    }
    EP_MPI(j, MPI_Alltoall(j->counts_out, (int)stride, MPI_INT, j->counts_in, (int)stride, MPI_INT,
                           j->comm));
    int highest = 0;
    for (uint32_t r = 0; r < ranks; r++) {
        int vote = j->counts_in[r * stride + j->batches];
        highest = vote > highest ? vote : highest;
        j->total += (uint32_t)j->counts_in[r * stride + j->batches + 1];
    }
    VKMOE_TRY(agreed(j, mine, highest));
    VKMOE_REQUIRE(j->shard->ctx, j->total > 0, "%s: no rank has a token", fn);
    return VKMOE_OK;
}

/* Each micro-batch's lists: rows to each rank from its place in that
 * rank's group of the outbox, rows from each rank after the earlier
 * micro-batches' in the inbox. */
static void plan_batches(mpi_job *j)
{
    uint32_t ranks = (uint32_t)j->ranks, stride = counts_stride(j);
    for (uint32_t o = 0, group = 0; o < ranks; group += j->box.count[o], o++)
        for (uint32_t b = 0, at = group; b < j->batches; b++) {
            j->batch[b].send_at[o] = (int)at;
            j->batch[b].send_count[o] = j->counts_out[o * stride + b];
            at += (uint32_t)j->batch[b].send_count[o];
        }
    for (uint32_t b = 0; b < j->batches; b++) {
        ep_batch *m = &j->batch[b];
        m->first = j->received;
        for (uint32_t r = 0; r < ranks; r++) {
            m->recv_count[r] = j->counts_in[r * stride + b];
            m->recv_at[r] = (int)(j->received + m->received);
            m->received += (uint32_t)m->recv_count[r];
        }
        j->received += m->received;
    }
}

/* The received rows' buffers and the exchange's row types, agreed. */
static vkmoe_status prepare_exchange(mpi_job *j)
{
    const vkmoe_layer_params *p = &j->shard->params;
    size_t row_bytes = (size_t)p->dim * vkmoe_params_io_bytes(p);
    plan_batches(j);
    size_t in = j->received ? j->received : 1, out = j->box.n ? j->box.n : 1;
    j->in_x = vkmoe_malloc(in * row_bytes);
    j->in_choice = vkmoe_malloc(in * sizeof(vkmoe_ep_choice));
    /* Zeros: a rank whose compute fails still sends its rows back. */
    j->in_out = vkmoe_calloc(in * p->dim, sizeof(float));
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

/* Micro-batch b's rows and choices on their way out. */
static vkmoe_status post_out(mpi_job *j, uint32_t b)
{
    ep_batch *m = &j->batch[b];
    EP_MPI(j, MPI_Ialltoallv(j->box.x, m->send_count, m->send_at, j->row, j->in_x, m->recv_count,
                             m->recv_at, j->row, j->comm, &m->out[0]));
    EP_MPI(j, MPI_Ialltoallv(j->box.choice, m->send_count, m->send_at, j->choice, j->in_choice,
                             m->recv_count, m->recv_at, j->choice, j->comm, &m->out[1]));
    return VKMOE_OK;
}

/* Its outputs on their way back, into the places its rows left. */
static vkmoe_status post_back(mpi_job *j, uint32_t b)
{
    ep_batch *m = &j->batch[b];
    EP_MPI(j, MPI_Ialltoallv(j->in_out, m->recv_count, m->recv_at, j->out_row, j->back,
                             m->send_count, m->send_at, j->out_row, j->comm, &m->back));
    return VKMOE_OK;
}

/* While the device computes: MPI's progress on every exchange posted. */
static void progress(void *user)
{
    mpi_job *j = user;
    for (uint32_t b = 0; b < j->batches; b++) {
        int done;
        MPI_Testall(2, j->batch[b].out, &done, MPI_STATUSES_IGNORE);
        MPI_Test(&j->batch[b].back, &done, MPI_STATUS_IGNORE);
    }
}

/* Micro-batch b through this rank's experts, the next one's rows
 * travelling meanwhile. A failure is kept, not returned: the rank still
 * takes part in every exchange, then the statuses are agreed. */
static vkmoe_status compute_batch(mpi_job *j, uint32_t b, vkmoe_status *mine)
{
    const vkmoe_layer_params *p = &j->shard->params;
    size_t row_bytes = (size_t)p->dim * vkmoe_params_io_bytes(p);
    ep_batch *m = &j->batch[b];
    EP_MPI(j, MPI_Waitall(2, m->out, MPI_STATUSES_IGNORE));
    if (b + 1 < j->batches)
        VKMOE_TRY(post_out(j, b + 1));
    vkmoe_context *ctx = j->shard->ctx;
    ctx->while_waiting = j->batches > 1 ? progress : NULL;
    ctx->while_waiting_user = j;
    double t0 = MPI_Wtime();
    if (*mine == VKMOE_OK)
        *mine = vkmoe_ep_compute(j->shard, j->total, m->received, j->in_x + m->first * row_bytes,
                                 j->in_choice + m->first, j->in_out + (size_t)m->first * p->dim);
    j->stats.compute_ms += 1e3 * (MPI_Wtime() - t0);
    ctx->while_waiting = NULL;
    return post_back(j, b);
}

/* Rows out, through this rank's experts, outputs back, micro-batch by
 * micro-batch; then every rank's status. */
static vkmoe_status exchange_and_compute(mpi_job *j)
{
    vkmoe_status mine = VKMOE_OK;
    VKMOE_TRY(post_out(j, 0));
    for (uint32_t b = 0; b < j->batches; b++)
        VKMOE_TRY(compute_batch(j, b, &mine));
    for (uint32_t b = 0; b < j->batches; b++)
        EP_MPI(j, MPI_Wait(&j->batch[b].back, MPI_STATUS_IGNORE));
    return agree(j, mine);
}

static void count_traffic(mpi_job *j)
{
    const vkmoe_layer_params *p = &j->shard->params;
    uint64_t out_bytes = (uint64_t)p->dim * vkmoe_params_io_bytes(p) + sizeof(vkmoe_ep_choice),
             back_bytes = 4ull * p->dim;
    uint32_t stride = counts_stride(j), own_out = 0, own_in = 0;
    for (uint32_t b = 0; b < j->batches; b++) {
        own_out += (uint32_t)j->counts_out[(uint32_t)j->me * stride + b];
        own_in += (uint32_t)j->counts_in[(uint32_t)j->me * stride + b];
    }
    vkmoe_expert_parallel_stats *s = &j->stats;
    s->rows_sent = j->box.n - own_out;
    s->rows_received = j->received - own_in;
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
                                               const vkmoe_expert_parallel_options *options,
                                               uint32_t tokens, const void *x, void *y,
                                               vkmoe_expert_parallel_stats *stats)
{
    VKMOE_REQUIRE(shard ? shard->ctx : NULL, comm != MPI_COMM_NULL, "%s: comm is MPI_COMM_NULL",
                  fn);
    vkmoe_expert_parallel_options o = options ? *options : (vkmoe_expert_parallel_options){0};
    mpi_job j = {.shard = shard,
                 .comm = comm,
                 .batches = o.micro_batches ? o.micro_batches : 1,
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
    j.placement = (vkmoe_ep_placement){(uint32_t)j.ranks, 0, o.placement};
    vkmoe_status status = run(&j);
    if (status == VKMOE_OK && stats)
        *stats = j.stats;
    /* After an MPI error (MPI_ERRORS_RETURN) requests may remain: they are
     * MPI's, on a communicator the error has left unusable. */
    vkmoe_ep_outbox_free(&j.box);
    void *arrays[] = {j.counts_out, j.counts_in, j.batch,  j.batch_arrays,
                      j.in_x,       j.in_choice, j.in_out, j.back};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(arrays); i++)
        free(arrays[i]);
    MPI_Datatype *types[] = {&j.row, &j.choice, &j.out_row};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(types); i++)
        if (*types[i] != MPI_DATATYPE_NULL)
            MPI_Type_free(types[i]);
    return status;
}
