/* Expert parallelism: a layer sharded over ranks, each routing its own
 * tokens, each expert computed by a rank that holds it. Every step is the
 * single layer's arithmetic on the same rows — the same router per token,
 * the same GEMM kernels (those of a forward of all ranks' tokens:
 * vkmoe_layer_io.kernel_tokens), combine on the token's own rank in the
 * order of its choices — so each rank's y is bit for bit the single
 * layer's rows for its tokens. Here the steps, and the ranks of one
 * process exchanging rows through host memory. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "expert_parallel.h"
#include "memory.h"
#include "params.h"
#include "weights.h"

bool vkmoe_ep_holds(const vkmoe_ep_placement *pl, uint32_t e, uint32_t r)
{
    if (!pl->map)
        return (uint64_t)e * pl->ranks / pl->experts == r;
    return pl->map[(size_t)e * pl->ranks + r] != 0;
}

vkmoe_status vkmoe_expert_parallel_held(const uint8_t *placement, uint32_t experts, uint32_t ranks,
                                        uint32_t rank, uint8_t *held)
{
    VKMOE_REQUIRE(NULL, held && experts && ranks && rank < ranks,
                  "vkmoe_expert_parallel_held: held must not be NULL, experts and ranks at least "
                  "1, rank (%u) below ranks (%u)",
                  rank, ranks);
    vkmoe_ep_placement pl = {ranks, experts, placement};
    for (uint32_t e = 0; e < experts; e++)
        held[e] = vkmoe_ep_holds(&pl, e, rank);
    return VKMOE_OK;
}

uint32_t vkmoe_ep_owner(const vkmoe_ep_placement *pl, uint32_t e, uint32_t home)
{
    if (vkmoe_ep_holds(pl, e, home))
        return home;
    for (uint32_t r = 0; r < pl->ranks; r++)
        if (vkmoe_ep_holds(pl, e, r))
            return r;
    return VKMOE_INVALID;
}

vkmoe_ep_shape vkmoe_ep_shape_of(const vkmoe_layer *shard)
{
    const vkmoe_layer_params *p = &shard->params;
    return (vkmoe_ep_shape){p->dim, p->ffn_dim, p->experts, p->top_k, (uint32_t)p->io_type};
}

vkmoe_status vkmoe_ep_check_shard(const vkmoe_layer *s, const vkmoe_ep_placement *pl, uint32_t rank,
                                  uint32_t tokens, const void *x, const void *y, const char *fn)
{
    VKMOE_REQUIRE(NULL, s, "%s: rank %u's shard is NULL", fn, rank);
    for (uint32_t e = 0; e < s->params.experts && e < pl->experts; e++)
        VKMOE_REQUIRE(s->ctx, !vkmoe_ep_holds(pl, e, rank) || vkmoe_weights_holds(&s->weights, e),
                      "%s: the placement gives rank %u expert %u, which its shard does not hold "
                      "(params.held_experts)",
                      fn, rank, e);
    VKMOE_REQUIRE(s->ctx, s->params.capacity_factor == 0,
                  "%s: rank %u's shard has a capacity: which slots a capacity drops depends on "
                  "every rank's tokens at once",
                  fn, rank);
    VKMOE_REQUIRE(s->ctx, !s->weights.cache,
                  "%s: rank %u's shard keeps experts in host memory (expert_budget_bytes, "
                  "cpu_experts)",
                  fn, rank);
    VKMOE_REQUIRE(s->ctx, tokens <= s->params.max_tokens,
                  "%s: rank %u has %u tokens, over its max_tokens (%u)", fn, rank, tokens,
                  s->params.max_tokens);
    VKMOE_REQUIRE(s->ctx, tokens == 0 || (x && y), "%s: rank %u's x or y is NULL", fn, rank);
    return vkmoe_weights_check_complete(s, fn);
}

vkmoe_status vkmoe_ep_check_placement(vkmoe_context *ctx, const vkmoe_ep_placement *pl,
                                      const char *fn)
{
    for (uint32_t e = 0; e < pl->experts; e++)
        VKMOE_REQUIRE(ctx, vkmoe_ep_owner(pl, e, 0) != VKMOE_INVALID, "%s: no rank holds expert %u",
                      fn, e);
    return VKMOE_OK;
}

void vkmoe_ep_outbox_free(vkmoe_ep_outbox *box)
{
    void *arrays[] = {box->count, box->x, box->choice, box->slot, box->slot_row};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(arrays); i++)
        free(arrays[i]);
    *box = (vkmoe_ep_outbox){0};
}

/* The shard's routing of its tokens, read back: each slot's expert, weight
 * and row in expert_out. */
static vkmoe_status route(vkmoe_layer *s, uint32_t tokens, const void *x, uint32_t *ids,
                          float *weight, uint32_t *slot_row)
{
    const vkmoe_scratch_layout *l = &s->plan.layout;
    size_t bytes = 4ull * tokens * s->params.top_k;
    VKMOE_TRY(vkmoe_layer_run_stages(s, tokens, x, VKMOE_STAGE_ROUTER, VKMOE_STAGE_GEMM_UP));
    const vkmoe_buffer *scratch = &s->work->scratch;
    VKMOE_TRY(vkmoe_buffer_read(s->ctx, scratch, l->ids, ids, bytes));
    VKMOE_TRY(vkmoe_buffer_read(s->ctx, scratch, l->slot_row, slot_row, bytes));
    return vkmoe_buffer_read(s->ctx, scratch, l->topk_weight, weight, bytes);
}

/* The routed slots grouped by the rank computing them, in slot order. */
static vkmoe_status pack(vkmoe_layer *s, const vkmoe_ep_placement *pl, uint32_t me, const void *x,
                         const uint32_t *ids, const float *weight, vkmoe_ep_outbox *out)
{
    size_t row_bytes = (size_t)s->params.dim * vkmoe_params_io_bytes(&s->params);
    uint32_t *at = vkmoe_calloc(pl->ranks, sizeof(uint32_t));
    if (!at)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t i = 0; i < out->n; i++)
        out->count[vkmoe_ep_owner(pl, ids[i], me)]++;
    for (uint32_t r = 1; r < pl->ranks; r++)
        at[r] = at[r - 1] + out->count[r - 1];
    for (uint32_t slot = 0; slot < out->n; slot++) {
        uint32_t i = at[vkmoe_ep_owner(pl, ids[slot], me)]++;
        memcpy(out->x + i * row_bytes,
               (const uint8_t *)x + (size_t)(slot / s->params.top_k) * row_bytes, row_bytes);
        out->choice[i] = (vkmoe_ep_choice){ids[slot], weight[slot]};
        out->slot[i] = slot;
    }
    free(at);
    return VKMOE_OK;
}

vkmoe_status vkmoe_ep_dispatch(vkmoe_layer *s, const vkmoe_ep_placement *pl, uint32_t me,
                               uint32_t tokens, const void *x, vkmoe_ep_outbox *out)
{
    size_t row_bytes = (size_t)s->params.dim * vkmoe_params_io_bytes(&s->params);
    out->n = tokens * s->params.top_k;
    size_t n = out->n ? out->n : 1;
    out->count = vkmoe_calloc(pl->ranks, sizeof(uint32_t));
    out->x = vkmoe_malloc(n * row_bytes);
    out->choice = vkmoe_malloc(n * sizeof(vkmoe_ep_choice));
    out->slot = vkmoe_malloc(n * sizeof(uint32_t));
    out->slot_row = vkmoe_malloc(n * sizeof(uint32_t));
    uint32_t *ids = vkmoe_malloc(n * sizeof(uint32_t));
    float *weight = vkmoe_malloc(n * sizeof(float));
    vkmoe_status status = VKMOE_OK;
    if (!out->count || !out->x || !out->choice || !out->slot || !out->slot_row || !ids || !weight)
        status = vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (status == VKMOE_OK && tokens)
        status = route(s, tokens, x, ids, weight, out->slot_row);
    if (status == VKMOE_OK)
        status = pack(s, pl, me, x, ids, weight, out);
    free(ids);
    free(weight);
    return status;
}

/* Rows first .. first + n − 1 through the shard's experts: each row a
 * token of one choice (the others routed nowhere), bucketed and multiplied
 * by the kernels of a forward of `total` tokens. */
static vkmoe_status compute_chunk(vkmoe_layer *s, uint32_t total, uint32_t n, const uint8_t *x,
                                  const vkmoe_ep_choice *choice, float *y)
{
    const vkmoe_layer_params *p = &s->params;
    const vkmoe_scratch_layout *l = &s->plan.layout;
    uint32_t k = p->top_k, slots = n * k;
    uint32_t *ids = vkmoe_malloc(slots * sizeof(uint32_t)),
             *rows = vkmoe_malloc(slots * sizeof(uint32_t));
    float *weight = vkmoe_calloc(slots, sizeof(float));
    /* Each expert's rows start at a tile: expert_out has up to max_rows. */
    float *out = vkmoe_malloc(4ull * s->plan.max_rows * p->dim);
    vkmoe_status status =
        ids && rows && weight && out
            ? VKMOE_OK
            : vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    if (status == VKMOE_OK) {
        memset(ids, 0xff, slots * sizeof(uint32_t));
        for (uint32_t i = 0; i < n; i++) {
            ids[i * k] = choice[i].expert;
            weight[i * k] = choice[i].weight;
        }
        status = vkmoe_buffer_write_rows(s->ctx, &s->work->scratch, l->ids, ids, 1, 4ull * slots,
                                         4ull * slots);
    }
    if (status == VKMOE_OK)
        status = vkmoe_buffer_write_rows(s->ctx, &s->work->scratch, l->topk_weight, weight, 1,
                                         4ull * slots, 4ull * slots);
    s->io.kernel_tokens = total;
    s->io.routes_given = true;
    if (status == VKMOE_OK)
        status = vkmoe_layer_run_stages(s, n, x, VKMOE_STAGE_ROUTER, VKMOE_STAGE_SHARED);
    s->io.kernel_tokens = 0;
    s->io.routes_given = false;
    if (status == VKMOE_OK)
        status = vkmoe_buffer_read(s->ctx, &s->work->scratch, l->slot_row, rows, 4ull * slots);
    uint32_t used = 0; /* rows up to the last one holding a slot */
    for (uint32_t i = 0; i < n && status == VKMOE_OK; i++)
        used = rows[i * k] + 1 > used ? rows[i * k] + 1 : used;
    if (status == VKMOE_OK)
        status = vkmoe_buffer_read(s->ctx, &s->work->expert_out, 0, out, 4ull * used * p->dim);
    for (uint32_t i = 0; i < n && status == VKMOE_OK; i++)
        memcpy(y + (size_t)i * p->dim, out + (size_t)rows[i * k] * p->dim, 4ull * p->dim);
    free(ids);
    free(rows);
    free(weight);
    free(out);
    return status;
}

vkmoe_status vkmoe_ep_compute(vkmoe_layer *s, uint32_t total, uint32_t n, const uint8_t *x,
                              const vkmoe_ep_choice *choice, float *out)
{
    size_t row_bytes = (size_t)s->params.dim * vkmoe_params_io_bytes(&s->params);
    for (uint32_t first = 0; first < n; first += s->params.max_tokens) {
        uint32_t m = n - first < s->params.max_tokens ? n - first : s->params.max_tokens;
        VKMOE_TRY(compute_chunk(s, total, m, x + first * row_bytes, choice + first,
                                out + (size_t)first * s->params.dim));
    }
    return VKMOE_OK;
}

vkmoe_status vkmoe_ep_combine(vkmoe_layer *s, uint32_t total, uint32_t tokens, const void *x,
                              const vkmoe_ep_outbox *box, const float *back, void *y)
{
    const vkmoe_layer_params *p = &s->params;
    uint32_t used = 0;
    for (uint32_t i = 0; i < box->n; i++)
        used = box->slot_row[i] + 1 > used ? box->slot_row[i] + 1 : used;
    /* Rows between the experts' tiles stay unread by combine. */
    float *rows = vkmoe_calloc((size_t)used * p->dim, sizeof(float));
    if (!rows)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t i = 0; i < box->n; i++)
        memcpy(rows + (size_t)box->slot_row[box->slot[i]] * p->dim, back + (size_t)i * p->dim,
               4ull * p->dim);
    /* One submission: the routing again, in the same rows as the first
     * time (the kernels of `total` tokens), the GEMMs skipped. */
    size_t x_bytes = (size_t)tokens * p->dim * vkmoe_params_io_bytes(p);
    vkmoe_status status = vkmoe_buffer_write_rows(s->ctx, &s->work->x, 0, x, 1, x_bytes, x_bytes);
    if (status == VKMOE_OK)
        status = vkmoe_buffer_write_rows(s->ctx, &s->work->expert_out, 0, rows, 1,
                                         4ull * used * p->dim, 4ull * used * p->dim);
    s->io.kernel_tokens = total;
    s->io.expert_out_given = true;
    if (status == VKMOE_OK)
        status = vkmoe_layer_run_rest(s, tokens, VKMOE_STAGE_ROUTER, y);
    s->io.kernel_tokens = 0;
    s->io.expert_out_given = false;
    free(rows);
    return status;
}

/* In one process: what rank o receives is every rank's group for o, in
 * rank order — what MPI_Alltoallv would hand it. */
typedef struct ep_inbox {
    uint32_t n;
    uint8_t *x;
    vkmoe_ep_choice *choice;
    float *out; /* f32 [n][dim] */
} ep_inbox;

/* Where rank r's group for rank o starts in r's outbox. */
static uint32_t group_start(const vkmoe_ep_outbox *box, uint32_t o)
{
    uint32_t at = 0;
    for (uint32_t q = 0; q < o; q++)
        at += box->count[q];
    return at;
}

static vkmoe_status gather(vkmoe_layer *s, const vkmoe_ep_outbox *boxes, uint32_t ranks, uint32_t o,
                           ep_inbox *in)
{
    size_t row_bytes = (size_t)s->params.dim * vkmoe_params_io_bytes(&s->params);
    for (uint32_t r = 0; r < ranks; r++)
        in->n += boxes[r].count[o];
    size_t n = in->n ? in->n : 1;
    in->x = vkmoe_malloc(n * row_bytes);
    in->choice = vkmoe_malloc(n * sizeof(vkmoe_ep_choice));
    in->out = vkmoe_malloc(n * s->params.dim * sizeof(float));
    if (!in->x || !in->choice || !in->out)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t r = 0, at = 0; r < ranks; at += boxes[r].count[o], r++) {
        uint32_t from = group_start(&boxes[r], o);
        memcpy(in->x + at * row_bytes, boxes[r].x + from * row_bytes,
               boxes[r].count[o] * row_bytes);
        memcpy(in->choice + at, boxes[r].choice + from,
               boxes[r].count[o] * sizeof(vkmoe_ep_choice));
    }
    return VKMOE_OK;
}

/* Rank r's outputs, back from every rank's inbox in its outbox's order. */
static vkmoe_status scatter_back(vkmoe_layer *s, const vkmoe_ep_outbox *boxes, const ep_inbox *ins,
                                 uint32_t ranks, uint32_t r, float **back)
{
    uint32_t dim = s->params.dim;
    *back = vkmoe_malloc((boxes[r].n ? boxes[r].n : 1) * (size_t)dim * sizeof(float));
    if (!*back)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t o = 0, to = 0; o < ranks; to += boxes[r].count[o], o++) {
        uint32_t from = 0; /* ranks before r in o's inbox */
        for (uint32_t q = 0; q < r; q++)
            from += boxes[q].count[o];
        memcpy(*back + (size_t)to * dim, ins[o].out + (size_t)from * dim,
               4ull * boxes[r].count[o] * dim);
    }
    return VKMOE_OK;
}

typedef struct ep_job {
    vkmoe_layer *const *shards;
    vkmoe_ep_placement placement;
    uint32_t total;
    const uint32_t *tokens;
    const void *const *x;
    vkmoe_ep_outbox *boxes; /* [ranks] */
    ep_inbox *ins;          /* [ranks] */
} ep_job;

static vkmoe_status run(ep_job *j, void *const *y)
{
    uint32_t ranks = j->placement.ranks;
    for (uint32_t r = 0; r < ranks; r++)
        VKMOE_TRY(
            vkmoe_ep_dispatch(j->shards[r], &j->placement, r, j->tokens[r], j->x[r], &j->boxes[r]));
    for (uint32_t o = 0; o < ranks; o++) {
        VKMOE_TRY(gather(j->shards[o], j->boxes, ranks, o, &j->ins[o]));
        VKMOE_TRY(vkmoe_ep_compute(j->shards[o], j->total, j->ins[o].n, j->ins[o].x,
                                   j->ins[o].choice, j->ins[o].out));
    }
    for (uint32_t r = 0; r < ranks; r++) {
        if (!j->tokens[r])
            continue;
        float *back = NULL;
        vkmoe_status status = scatter_back(j->shards[r], j->boxes, j->ins, ranks, r, &back);
        if (status == VKMOE_OK)
            status = vkmoe_ep_combine(j->shards[r], j->total, j->tokens[r], j->x[r], &j->boxes[r],
                                      back, y[r]);
        free(back);
        VKMOE_TRY(status);
    }
    return VKMOE_OK;
}

static vkmoe_status check_job(const ep_job *j, void *const *y, const char *fn)
{
    vkmoe_ep_shape shape = vkmoe_ep_shape_of(j->shards[0]);
    for (uint32_t r = 0; r < j->placement.ranks; r++) {
        const vkmoe_layer *s = j->shards[r];
        VKMOE_REQUIRE(NULL, s, "%s: rank %u's shard is NULL", fn, r);
        vkmoe_ep_shape mine = vkmoe_ep_shape_of(s);
        VKMOE_REQUIRE(s->ctx, !memcmp(&mine, &shape, sizeof(shape)),
                      "%s: shard %u's dim, ffn_dim, experts, top_k or io_type differ from shard "
                      "0's",
                      fn, r);
        VKMOE_TRY(vkmoe_ep_check_shard(s, &j->placement, r, j->tokens[r], j->x[r], y[r], fn));
    }
    return vkmoe_ep_check_placement(j->shards[0]->ctx, &j->placement, fn);
}

vkmoe_status vkmoe_expert_parallel_forward(vkmoe_layer *const *shards, uint32_t ranks,
                                           const uint8_t *placement, const uint32_t *tokens,
                                           const void *const *x, void *const *y)
{
    const char *fn = "vkmoe_expert_parallel_forward";
    VKMOE_REQUIRE(NULL, shards && ranks >= 1 && tokens && x && y,
                  "%s: shards, tokens, x and y must not be NULL, and ranks at least 1", fn);
    VKMOE_REQUIRE(NULL, shards[0], "%s: rank 0's shard is NULL", fn);
    ep_job j = {.shards = shards,
                .placement = {ranks, shards[0]->params.experts, placement},
                .tokens = tokens,
                .x = x};
    VKMOE_TRY(check_job(&j, y, fn));
    for (uint32_t r = 0; r < ranks; r++)
        j.total += tokens[r];
    VKMOE_REQUIRE(shards[0]->ctx, j.total > 0, "%s: no rank has a token", fn);
    j.boxes = vkmoe_calloc(ranks, sizeof(*j.boxes));
    j.ins = vkmoe_calloc(ranks, sizeof(*j.ins));
    vkmoe_status status =
        j.boxes && j.ins
            ? run(&j, y)
            : vkmoe_fail(shards[0]->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t r = 0; r < ranks; r++) {
        if (j.boxes)
            vkmoe_ep_outbox_free(&j.boxes[r]);
        if (j.ins) {
            free(j.ins[r].x);
            free(j.ins[r].choice);
            free(j.ins[r].out);
        }
    }
    free(j.boxes);
    free(j.ins);
    return status;
}
