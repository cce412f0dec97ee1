/* Expert parallelism over MPI (src/expert_parallel_mpi.c), run by mpirun
 * with 2 and 3 ranks (tests/meson.build): each rank makes the same layer
 * from the same seed, runs the single layer's forward of every rank's
 * tokens, then the sharded forward of its own, and compares its rows bit
 * for bit: every GEMM path, experts not divisible by ranks, ranks without
 * tokens, a rank that receives nothing, a replicated expert, families with
 * every kind of expert input; then every refusal, agreed by all ranks, and
 * a forward that still works after them. A failed check aborts the whole
 * job (MPI_Abort), so no rank waits in a collective a failed one skipped.
 *
 * `--peer-dies`: rank 1 exits before the forward the others enter;
 * `--fails-to-start`: rank 1 exits before MPI_Init (the launcher's rank in
 * its environment); tests/mpi_peer_dies.sh checks each job ends, with a
 * message, in bounded time. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "vkmoe_mpi.h"
#include "vulkan_interposer.h"

static int me, ranks;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "rank %d: %s:%d: ", me, __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " (last error: %s)\n", vkmoe_last_error());                            \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

/* Every rank's tokens: table[r] for r < 3, then r % 5. */
static uint32_t tokens_of(const uint32_t *table, int r)
{
    return r < 3 ? table[r] : (uint32_t)(r % 5);
}

/* This rank's shard of t, holding only the experts the placement gives it
 * (NULL: contiguous blocks). */
static vkmoe_layer *held_shard(vkmoe_context *ctx, const test_layer *t, const uint8_t *placement)
{
    uint8_t *held = malloc(t->params.experts);
    EXPECT(held, "out of memory");
    test_held_experts(placement, t->params.experts, (uint32_t)ranks, (uint32_t)me, held);
    vkmoe_layer *layer = test_shard_of(ctx, t, held); /* which keeps a copy */
    free(held);
    return layer;
}

/* The sharded forward of tokens_of(table, r) tokens a rank, in `batches`
 * micro-batches, against the single layer's forward of them all, rank 0's
 * first. shard: this rank's, or NULL for t's layer itself (every
 * expert). */
static void expect_bits_in_batches(const test_layer *t, vkmoe_layer *shard,
                                   const uint8_t *placement, const uint32_t *table,
                                   uint32_t batches)
{
    uint32_t dim = t->params.dim, total = 0, at = 0;
    for (int r = 0; r < ranks; r++) {
        if (r == me)
            at = total;
        total += tokens_of(table, r);
    }
    uint32_t mine = tokens_of(table, me);
    float *x = test_input(total, dim), *want = malloc(4ull * total * dim),
          *got = malloc(4ull * (mine ? mine : 1) * dim);
    EXPECT(want && got, "out of memory");
    EXPECT(vkmoe_layer_forward(t->layer, total, x, want) == VKMOE_OK, "single layer");
    memset(got, 0, 4ull * (mine ? mine : 1) * dim);
    vkmoe_expert_parallel_stats stats;
    vkmoe_expert_parallel_options options = {placement, batches};
    EXPECT(vkmoe_expert_parallel_forward_mpi(shard ? shard : t->layer, MPI_COMM_WORLD, &options,
                                             mine, x + (size_t)at * dim, got, &stats) == VKMOE_OK,
           "sharded forward");
    EXPECT(!memcmp(want + (size_t)at * dim, got, 4ull * mine * dim),
           "my %u tokens differ from the single layer's (%u tokens in all)", mine, total);
    /* Every choice computed once, and every byte sent received. */
    unsigned long long local[3] = {stats.rows_computed, stats.bytes_sent, stats.bytes_received},
                       sum[3];
    MPI_Allreduce(local, sum, 3, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    EXPECT(sum[0] == (unsigned long long)total * t->params.top_k,
           "%llu rows computed for %u choices", sum[0], total * t->params.top_k);
    EXPECT(sum[1] == sum[2], "%llu bytes sent, %llu received", sum[1], sum[2]);
    EXPECT(stats.exchange_ms >= 0 && stats.compute_ms > 0, "times %g, %g", stats.exchange_ms,
           stats.compute_ms);
    free(x);
    free(want);
    free(got);
}

static void expect_single_layer_bits(const test_layer *t, vkmoe_layer *shard,
                                     const uint8_t *placement, const uint32_t *table)
{
    expect_bits_in_batches(t, shard, placement, table, 1);
}

/* Micro-batches: 2, 3 and as many as a rank's tokens or more (some then
 * empty), with held shards, a replicated expert and a rank without tokens:
 * the same bits. */
static void micro_batches(vkmoe_context *ctx)
{
    vkmoe_layer_params p = test_shape(40, 24, 7, 2, 41);
    p.weight_type = VKMOE_WEIGHT_F16;
    test_layer t;
    test_layer_seeded(ctx, &p, 65, &t);
    uint8_t *placement = calloc(7 * (size_t)ranks, 1);
    EXPECT(placement, "out of memory");
    for (uint32_t e = 0; e < 7; e++)
        placement[e * ranks + e % ranks] = 1;
    for (int r = 0; r < ranks; r++)
        placement[3 * ranks + r] = 1; /* expert 3 everywhere */
    vkmoe_layer *shard = held_shard(ctx, &t, placement);
    static const uint32_t counts[][3] = {{9, 0, 5}, {1, 13, 3}, {20, 20, 1}};
    static const uint32_t batches[] = {2, 3, 64};
    for (size_t c = 0; c < VKMOE_ARRAY_SIZE(counts); c++)
        for (size_t b = 0; b < VKMOE_ARRAY_SIZE(batches); b++)
            expect_bits_in_batches(&t, shard, placement, counts[c], batches[b]);
    vkmoe_layer_destroy(&shard);
    free(placement);
    test_layer_destroy(&t);
}

/* Contiguous experts (7 over 2 or 3 ranks), decode and prefill token
 * counts, every path, each rank holding only its own experts; a rank
 * computes up to 82 rows, max_tokens (41) at a time. */
static void every_path(vkmoe_context *ctx)
{
    static const vkmoe_gemm_path paths[] = {VKMOE_GEMM_REGISTER, VKMOE_GEMM_TILED, VKMOE_GEMM_GEMV};
    static const uint32_t counts[][3] = {{1, 1, 1}, {5, 3, 0}, {0, 9, 2}, {24, 17, 0}};
    for (size_t g = 0; g < VKMOE_ARRAY_SIZE(paths); g++) {
        vkmoe_layer_params p = test_shape(40, 24, 7, 2, 41);
        p.weight_type = g == 0 ? VKMOE_WEIGHT_F16 : VKMOE_WEIGHT_F32;
        p.gemm_path = paths[g];
        test_layer t;
        test_layer_seeded(ctx, &p, 60 + g, &t);
        vkmoe_layer *shard = held_shard(ctx, &t, NULL);
        for (size_t c = 0; c < VKMOE_ARRAY_SIZE(counts); c++)
            expect_single_layer_bits(&t, shard, NULL, counts[c]);
        vkmoe_layer_destroy(&shard);
        test_layer_destroy(&t);
    }
}

/* Expert 0 on every rank, odd experts on rank 0, even ones on the last:
 * with 3 ranks, rank 1 holds only expert 0, which every rank computes for
 * itself, so it receives no row (and has no token of its own); each rank
 * holds its experts only. Then every rank holding every expert, in
 * contiguous blocks. Families with biases, clamped SwiGLU, the weight on
 * the input, a shared expert. */
static void replicated_expert(vkmoe_context *ctx)
{
    static const char *const families[] = {"mixtral", "gpt-oss", "llama4", "qwen2-moe"};
    uint8_t *placement = calloc(7 * (size_t)ranks, 1);
    EXPECT(placement, "out of memory");
    for (uint32_t e = 0; e < 7; e++)
        placement[e * ranks + (e % 2 ? 0 : ranks - 1)] = 1;
    for (int r = 0; r < ranks; r++)
        placement[r] = 1;
    for (size_t f = 0; f < VKMOE_ARRAY_SIZE(families); f++) {
        vkmoe_layer_params p = test_shape(40, 24, 7, 2, 20);
        EXPECT(vkmoe_layer_params_family(&p, families[f]) == VKMOE_OK, "family");
        p.top_k = families[f][0] == 'l' ? 1 : 2;
        p.shared_ffn_dim = families[f][0] == 'l' || families[f][0] == 'q' ? 16 : 0;
        test_layer t;
        test_layer_seeded(ctx, &p, 70 + f, &t);
        vkmoe_layer *shard = held_shard(ctx, &t, placement);
        expect_single_layer_bits(&t, shard, placement, (const uint32_t[]){6, 11, 0});
        vkmoe_layer_destroy(&shard);
        expect_single_layer_bits(&t, NULL, NULL, (const uint32_t[]){4, 1, 7});
        test_layer_destroy(&t);
    }
    free(placement);
}

/* A refusal on every rank: the rank at fault gets `own`, the others
 * `others`, and the message names why. */
static void expect_refused(vkmoe_layer *shard, const uint8_t *placement, uint32_t tokens,
                           const float *x, float *y, bool at_fault, vkmoe_status own,
                           vkmoe_status others, const char *why)
{
    vkmoe_status status = vkmoe_expert_parallel_forward_mpi(
        shard, MPI_COMM_WORLD, &(vkmoe_expert_parallel_options){placement, 0}, tokens, x, y, NULL);
    EXPECT(status == (at_fault ? own : others), "status %d", status);
    EXPECT(strstr(vkmoe_last_error(), at_fault ? why : "") != NULL, "message");
}

static void refusals(vkmoe_context *ctx)
{
    vkmoe_layer_params p = test_shape(16, 8, 5, 2, 4);
    test_layer t;
    test_layer_seeded(ctx, &p, 80, &t);
    float x[5 * 16] = {0}, y[5 * 16];
    bool last = me == ranks - 1;
    /* Over the last rank's max_tokens: it says why, the others name it. */
    char culprit[64];
    snprintf(culprit, sizeof(culprit), "rank %d failed", ranks - 1);
    vkmoe_status status =
        vkmoe_expert_parallel_forward_mpi(t.layer, MPI_COMM_WORLD, NULL, last ? 5 : 2, x, y, NULL);
    EXPECT(status == (last ? VKMOE_ERROR_INVALID_ARGUMENT : VKMOE_ERROR_PEER), "status %d", status);
    EXPECT(strstr(vkmoe_last_error(), last ? "max_tokens" : culprit), "message");
    /* No layer on the last rank (it could not make one). */
    expect_refused(last ? NULL : t.layer, NULL, 2, x, y, last, VKMOE_ERROR_INVALID_ARGUMENT,
                   VKMOE_ERROR_PEER, "shard is NULL");
    /* Everything else is every rank's fault at once. */
    expect_refused(t.layer, NULL, 0, x, y, true, VKMOE_ERROR_INVALID_ARGUMENT, 0, "no rank has");
    /* Micro-batches that differ between ranks, or too many. */
    vkmoe_expert_parallel_options split = {NULL, me == 0 ? 2 : 3};
    EXPECT(vkmoe_expert_parallel_forward_mpi(t.layer, MPI_COMM_WORLD, &split, 2, x, y, NULL) ==
               VKMOE_ERROR_INVALID_ARGUMENT,
           "micro-batches differ");
    EXPECT(strstr(vkmoe_last_error(), "micro_batches differ"), "message");
    split.micro_batches = 65;
    EXPECT(vkmoe_expert_parallel_forward_mpi(t.layer, MPI_COMM_WORLD, &split, 2, x, y, NULL) ==
               VKMOE_ERROR_INVALID_ARGUMENT,
           "65 micro-batches");
    EXPECT(strstr(vkmoe_last_error(), "at most 64"), "message");
    uint8_t *placement = calloc(5 * (size_t)ranks, 1);
    EXPECT(placement, "out of memory");
    for (uint32_t e = 0; e < 5; e++)
        placement[e * ranks + e % ranks] = 1;
    if (me == 0) /* rank 0's differs: expert 4 on the last rank too */
        placement[4 * ranks + ranks - 1] = 1;
    expect_refused(t.layer, placement, 2, x, y, true, VKMOE_ERROR_INVALID_ARGUMENT, 0,
                   "placements differ");
    memset(placement, 0, 5 * (size_t)ranks);
    for (uint32_t e = 0; e < 4; e++)
        placement[e * ranks] = 1; /* expert 4 nowhere */
    expect_refused(t.layer, placement, 2, x, y, true, VKMOE_ERROR_INVALID_ARGUMENT, 0,
                   "no rank holds expert 4");
    free(placement);
    vkmoe_layer_params q = p;
    if (last)
        q.dim = 24;
    test_layer other;
    test_layer_create(ctx, &q, &other);
    test_layer_upload(&other);
    expect_refused(other.layer, NULL, 2, x, y, true, VKMOE_ERROR_INVALID_ARGUMENT, 0,
                   "shards differ");
    test_layer_destroy(&other);
    /* And the layer still gives the single layer's bits. */
    expect_single_layer_bits(&t, NULL, NULL, (const uint32_t[]){2, 1, 1});
    test_layer_destroy(&t);
}

/* Every failable Vulkan call of rank 1's part of a forward in 2
 * micro-batches failed in turn (its shard on a context whose calls can be
 * made to fail): rank 1 returns that status, every other rank
 * VKMOE_ERROR_PEER naming it, nobody hangs, and the next forward gives the
 * single layer's bits. */
static void failures_mid_forward(vkmoe_context *host)
{
    vkmoe_vulkan_import import = test_import_of(host);
    import.get_instance_proc_addr = interposer_entry();
    vkmoe_context *ctx = NULL;
    interposer_reset();
    EXPECT(vkmoe_context_create(&(vkmoe_context_params){.import = &import}, &ctx) == VKMOE_OK,
           "interposed context");
    vkmoe_layer_params p = test_shape(40, 24, 7, 2, 20);
    test_layer t;
    test_layer_seeded(ctx, &p, 85, &t);
    vkmoe_layer *shard = held_shard(ctx, &t, NULL);
    static const uint32_t table[3] = {4, 3, 5};
    uint32_t mine = tokens_of(table, me), total = 0, at = 0;
    for (int r = 0; r < ranks; r++) {
        at = r == me ? total : at;
        total += tokens_of(table, r);
    }
    float *x = test_input(total, p.dim), *want = malloc(4ull * total * p.dim),
          *got = malloc(4ull * mine * p.dim);
    EXPECT(want && got, "out of memory");
    EXPECT(vkmoe_layer_forward(t.layer, total, x, want) == VKMOE_OK, "single layer");
    vkmoe_expert_parallel_options options = {NULL, 2};
    unsigned points = 0;
    for (unsigned call = 1;; call++) {
        interposer_reset();
        if (me == 1) {
            interposer.fail_at = call;
            interposer.fail_with = VK_ERROR_OUT_OF_DEVICE_MEMORY;
        }
        vkmoe_status status = vkmoe_expert_parallel_forward_mpi(
            shard, MPI_COMM_WORLD, &options, mine, x + (size_t)at * p.dim, got, NULL);
        int failed = interposer.failed_function != NULL, any = 0;
        interposer_reset();
        MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (!any) {
            EXPECT(status == VKMOE_OK, "status %d with nothing failing", status);
            break;
        }
        /* A failure in rank 1's combine, after the last exchange, is rank
         * 1's alone: the others' rows are whole. */
        if (me != 1 && status == VKMOE_OK)
            EXPECT(!memcmp(want + (size_t)at * p.dim, got, 4ull * mine * p.dim),
                   "call %u failed in rank 1's combine, and this rank's rows differ", call);
        else
            EXPECT(status == (me == 1 ? VKMOE_ERROR_OUT_OF_DEVICE_MEMORY : VKMOE_ERROR_PEER),
                   "call %u failing on rank 1: status %d", call, status);
        EXPECT(me == 1 || status == VKMOE_OK || strstr(vkmoe_last_error(), "rank 1 failed"),
               "message");
        points++;
        memset(got, 0, 4ull * mine * p.dim);
        EXPECT(vkmoe_expert_parallel_forward_mpi(shard, MPI_COMM_WORLD, &options, mine,
                                                 x + (size_t)at * p.dim, got, NULL) == VKMOE_OK,
               "the forward after a failure");
        EXPECT(!memcmp(want + (size_t)at * p.dim, got, 4ull * mine * p.dim),
               "the forward after call %u failed differs", call);
    }
    EXPECT(points >= 4, "only %u failable calls", points);
    if (me == 0)
        printf("%u failable Vulkan calls of rank 1's part failed in turn\n", points);
    free(x);
    free(want);
    free(got);
    vkmoe_layer_destroy(&shard);
    test_layer_destroy(&t);
    vkmoe_context_destroy(&ctx);
}

/* Rank 1 dies; the others are left in the forward's first collective. */
static void peer_dies(vkmoe_context *ctx)
{
    vkmoe_layer_params p = test_shape(16, 8, 4, 2, 4);
    test_layer t;
    test_layer_seeded(ctx, &p, 90, &t);
    if (me == 1) {
        fprintf(stderr, "rank 1: dying before the forward\n");
        _exit(3);
    }
    float x[2 * 16] = {0}, y[2 * 16];
    vkmoe_expert_parallel_forward_mpi(t.layer, MPI_COMM_WORLD, NULL, 2, x, y, NULL);
    fprintf(stderr, "rank %d: the forward returned with a dead peer\n", me);
    test_layer_destroy(&t);
}

int main(int argc, char **argv)
{
    const char *launched_as = getenv("OMPI_COMM_WORLD_RANK");
    if (argc > 1 && !strcmp(argv[1], "--fails-to-start") && launched_as &&
        !strcmp(launched_as, "1")) {
        fprintf(stderr, "rank 1: failing before MPI_Init\n");
        return 3;
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    int gate = test_device_gate();
    if (gate) {
        MPI_Finalize();
        return gate;
    }
    vkmoe_context *ctx = test_context();
    EXPECT(ctx, "no context");
    if (argc > 1 && strcmp(argv[1], "--help")) {
        EXPECT(ranks >= 2, "%s needs 2 ranks or more", argv[1]);
        peer_dies(ctx); /* --fails-to-start: rank 1 never got here */
    } else {
        every_path(ctx);
        micro_batches(ctx);
        replicated_expert(ctx);
        refusals(ctx);
        failures_mid_forward(ctx);
    }
    EXPECT(vkmoe_context_validation_errors(ctx) == 0, "validation errors");
    vkmoe_context_destroy(&ctx);
    MPI_Barrier(MPI_COMM_WORLD);
    if (me == 0)
        printf("expert parallelism over MPI: %d ranks, bit for bit the single layer\n", ranks);
    MPI_Finalize();
    return 0;
}
