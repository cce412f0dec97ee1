/* Expert parallelism in one process: a layer sharded over several layers
 * (several contexts, or one), each rank routing its own tokens, each
 * expert computed by a rank that holds it, rows moved through host
 * memory. Every step is the single layer's arithmetic on the same rows —
 * the same router per token, the same GEMM kernels (those of a forward of
 * all ranks' tokens: vkmoe_layer_io.kernel_tokens), combine on the token's
 * own rank in the order of its choices — so each rank's y is bit for bit
 * the single layer's rows for its tokens. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "layer.h"
#include "memory.h"
#include "params.h"

/* One rank's rows to compute: row i is some rank's token through expert
 * expert[i] with weight weight[i]; its output goes to that rank's slot. */
typedef struct ep_rows {
    uint32_t n;
    uint8_t *x; /* [n][dim] of io_type */
    uint32_t *expert, *home, *slot;
    float *weight;
    float *out; /* f32 [n][dim] */
} ep_rows;

/* One rank's routing: each slot's expert, weight and row in expert_out. */
typedef struct ep_routes {
    uint32_t *ids, *slot_row;
    float *weight;
} ep_routes;

typedef struct ep_job {
    vkmoe_layer *const *shards;
    uint32_t ranks, total;
    const uint8_t *placement; /* [experts][ranks], or NULL: contiguous */
    const uint32_t *tokens;
    const void *const *x;
    ep_routes *routes; /* [ranks] */
    ep_rows *rows;     /* [ranks]: what each computes */
} ep_job;

static bool holds(const ep_job *j, uint32_t e, uint32_t r)
{
    uint32_t experts = j->shards[0]->params.experts;
    if (!j->placement)
        return (uint64_t)e * j->ranks / experts == r;
    return j->placement[(size_t)e * j->ranks + r] != 0;
}

/* Where rank `home`'s choice of expert e is computed: at home where it
 * holds e, else on the lowest rank that does. */
static uint32_t owner_of(const ep_job *j, uint32_t e, uint32_t home)
{
    if (holds(j, e, home))
        return home;
    for (uint32_t r = 0; r < j->ranks; r++)
        if (holds(j, e, r))
            return r;
    return VKMOE_INVALID;
}

static vkmoe_status check_job(const ep_job *j, const char *fn)
{
    const vkmoe_layer_params *p = &j->shards[0]->params;
    for (uint32_t r = 0; r < j->ranks; r++) {
        const vkmoe_layer *s = j->shards[r];
        VKMOE_REQUIRE(NULL, s, "%s: shards[%u] is NULL", fn, r);
        const vkmoe_layer_params *q = &s->params;
        VKMOE_REQUIRE(s->ctx,
                      q->dim == p->dim && q->ffn_dim == p->ffn_dim && q->experts == p->experts &&
                          q->top_k == p->top_k && q->io_type == p->io_type,
                      "%s: shard %u's dim, ffn_dim, experts, top_k or io_type differ from shard "
                      "0's",
                      fn, r);
        VKMOE_REQUIRE(s->ctx, q->capacity_factor == 0,
                      "%s: shard %u has a capacity: which slots a capacity drops depends on every "
                      "rank's tokens at once",
                      fn, r);
        VKMOE_REQUIRE(s->ctx, !s->weights.cache,
                      "%s: shard %u keeps experts in host memory (expert_budget_bytes, "
                      "cpu_experts)",
                      fn, r);
        VKMOE_REQUIRE(s->ctx, j->tokens[r] <= q->max_tokens,
                      "%s: rank %u has %u tokens, over its max_tokens (%u)", fn, r, j->tokens[r],
                      q->max_tokens);
        VKMOE_REQUIRE(s->ctx, j->tokens[r] == 0 || (j->x[r]), "%s: x[%u] is NULL", fn, r);
        VKMOE_TRY(vkmoe_weights_check_complete(s, fn));
    }
    for (uint32_t e = 0; e < p->experts; e++)
        VKMOE_REQUIRE(j->shards[0]->ctx, owner_of(j, e, 0) != VKMOE_INVALID,
                      "%s: no rank holds expert %u", fn, e);
    return VKMOE_OK;
}

/* Rank r's routing of its tokens, read back. */
static vkmoe_status route(ep_job *j, uint32_t r)
{
    vkmoe_layer *s = j->shards[r];
    const vkmoe_scratch_layout *l = &s->plan.layout;
    uint32_t slots = j->tokens[r] * s->params.top_k;
    ep_routes *out = &j->routes[r];
    out->ids = vkmoe_malloc(slots * sizeof(uint32_t));
    out->slot_row = vkmoe_malloc(slots * sizeof(uint32_t));
    out->weight = vkmoe_malloc(slots * sizeof(float));
    if (!out->ids || !out->slot_row || !out->weight)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    VKMOE_TRY(
        vkmoe_layer_run_stages(s, j->tokens[r], j->x[r], VKMOE_STAGE_ROUTER, VKMOE_STAGE_GEMM_UP));
    const vkmoe_buffer *scratch = &s->work->scratch;
    VKMOE_TRY(vkmoe_buffer_read(s->ctx, scratch, l->ids, out->ids, 4ull * slots));
    VKMOE_TRY(vkmoe_buffer_read(s->ctx, scratch, l->slot_row, out->slot_row, 4ull * slots));
    return vkmoe_buffer_read(s->ctx, scratch, l->topk_weight, out->weight, 4ull * slots);
}

/* Every rank's slots handed to the ranks computing them, in rank, token
 * and choice order. */
static vkmoe_status distribute(ep_job *j)
{
    const vkmoe_layer_params *p = &j->shards[0]->params;
    size_t row_bytes = (size_t)p->dim * vkmoe_params_io_bytes(p);
    uint32_t *count = vkmoe_calloc(j->ranks, sizeof(uint32_t));
    if (!count)
        return vkmoe_fail(NULL, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t r = 0; r < j->ranks; r++)
        for (uint32_t s = 0; s < j->tokens[r] * p->top_k; s++)
            count[owner_of(j, j->routes[r].ids[s], r)]++;
    vkmoe_status status = VKMOE_OK;
    for (uint32_t o = 0; o < j->ranks && status == VKMOE_OK; o++) {
        ep_rows *w = &j->rows[o];
        size_t n = count[o] ? count[o] : 1;
        w->x = vkmoe_malloc(n * row_bytes);
        w->expert = vkmoe_malloc(n * sizeof(uint32_t));
        w->home = vkmoe_malloc(n * sizeof(uint32_t));
        w->slot = vkmoe_malloc(n * sizeof(uint32_t));
        w->weight = vkmoe_malloc(n * sizeof(float));
        w->out = vkmoe_malloc(n * p->dim * sizeof(float));
        if (!w->x || !w->expert || !w->home || !w->slot || !w->weight || !w->out)
            status = vkmoe_fail(NULL, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    free(count);
    for (uint32_t r = 0; r < j->ranks && status == VKMOE_OK; r++)
        for (uint32_t s = 0; s < j->tokens[r] * p->top_k; s++) {
            uint32_t e = j->routes[r].ids[s];
            ep_rows *w = &j->rows[owner_of(j, e, r)];
            memcpy(w->x + (size_t)w->n * row_bytes,
                   (const uint8_t *)j->x[r] + (size_t)(s / p->top_k) * row_bytes, row_bytes);
            w->expert[w->n] = e;
            w->home[w->n] = r;
            w->slot[w->n] = s;
            w->weight[w->n] = j->routes[r].weight[s];
            w->n++;
        }
    return status;
}

/* Rows first .. first + n − 1 of w through shard s's experts: each row a
 * token of one choice (the others routed nowhere), bucketed and multiplied
 * by the kernels of a forward of j->total tokens. */
static vkmoe_status compute_chunk(const ep_job *j, vkmoe_layer *s, ep_rows *w, uint32_t first,
                                  uint32_t n)
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
            ids[i * k] = w->expert[first + i];
            weight[i * k] = w->weight[first + i];
        }
        status = vkmoe_buffer_write_rows(s->ctx, &s->work->scratch, l->ids, ids, 1, 4ull * slots,
                                         4ull * slots);
    }
    if (status == VKMOE_OK)
        status = vkmoe_buffer_write_rows(s->ctx, &s->work->scratch, l->topk_weight, weight, 1,
                                         4ull * slots, 4ull * slots);
    size_t row_bytes = (size_t)p->dim * vkmoe_params_io_bytes(p);
    s->io.kernel_tokens = j->total;
    s->io.routes_given = true;
    if (status == VKMOE_OK)
        status = vkmoe_layer_run_stages(s, n, w->x + (size_t)first * row_bytes, VKMOE_STAGE_ROUTER,
                                        VKMOE_STAGE_SHARED);
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
        memcpy(w->out + (size_t)(first + i) * p->dim, out + (size_t)rows[i * k] * p->dim,
               4ull * p->dim);
    free(ids);
    free(rows);
    free(weight);
    free(out);
    return status;
}

/* Rank o's rows, max_tokens at a time. */
static vkmoe_status compute(const ep_job *j, uint32_t o)
{
    vkmoe_layer *s = j->shards[o];
    ep_rows *w = &j->rows[o];
    for (uint32_t first = 0; first < w->n; first += s->params.max_tokens) {
        uint32_t n = w->n - first < s->params.max_tokens ? w->n - first : s->params.max_tokens;
        VKMOE_TRY(compute_chunk(j, s, w, first, n));
    }
    return VKMOE_OK;
}

/* Rank r's tokens again to scatter (its scratch held other ranks' rows
 * since), its expert outputs in their rows, then the shared expert and
 * combine. */
static vkmoe_status combine(const ep_job *j, uint32_t r, void *y)
{
    vkmoe_layer *s = j->shards[r];
    const vkmoe_layer_params *p = &s->params;
    uint32_t slots = j->tokens[r] * p->top_k, used = 0;
    for (uint32_t i = 0; i < slots; i++)
        used = j->routes[r].slot_row[i] + 1 > used ? j->routes[r].slot_row[i] + 1 : used;
    /* Rows between the experts' tiles stay unread by combine. */
    float *rows = vkmoe_calloc((size_t)used * p->dim, sizeof(float));
    if (!rows)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t o = 0; o < j->ranks; o++) {
        const ep_rows *w = &j->rows[o];
        for (uint32_t i = 0; i < w->n; i++)
            if (w->home[i] == r)
                memcpy(rows + (size_t)j->routes[r].slot_row[w->slot[i]] * p->dim,
                       w->out + (size_t)i * p->dim, 4ull * p->dim);
    }
    s->io.kernel_tokens = j->total;
    vkmoe_status status =
        vkmoe_layer_run_stages(s, j->tokens[r], j->x[r], VKMOE_STAGE_ROUTER, VKMOE_STAGE_GEMM_UP);
    if (status == VKMOE_OK)
        status = vkmoe_buffer_write_rows(s->ctx, &s->work->expert_out, 0, rows, 1,
                                         4ull * used * p->dim, 4ull * used * p->dim);
    if (status == VKMOE_OK)
        status = vkmoe_layer_run_rest(s, j->tokens[r], VKMOE_STAGE_SHARED, y);
    s->io.kernel_tokens = 0;
    free(rows);
    return status;
}

static vkmoe_status run(ep_job *j, void *const *y)
{
    for (uint32_t r = 0; r < j->ranks; r++)
        if (j->tokens[r])
            VKMOE_TRY(route(j, r));
    VKMOE_TRY(distribute(j));
    for (uint32_t o = 0; o < j->ranks; o++)
        VKMOE_TRY(compute(j, o));
    for (uint32_t r = 0; r < j->ranks; r++)
        if (j->tokens[r])
            VKMOE_TRY(combine(j, r, y[r]));
    return VKMOE_OK;
}

vkmoe_status vkmoe_expert_parallel_forward(vkmoe_layer *const *shards, uint32_t ranks,
                                           const uint8_t *placement, const uint32_t *tokens,
                                           const void *const *x, void *const *y)
{
    const char *fn = "vkmoe_expert_parallel_forward";
    VKMOE_REQUIRE(NULL, shards && ranks >= 1 && tokens && x && y,
                  "%s: shards, tokens, x and y must not be NULL, and ranks at least 1", fn);
    ep_job j = {.shards = shards, .ranks = ranks, .placement = placement, .tokens = tokens, .x = x};
    VKMOE_TRY(check_job(&j, fn));
    for (uint32_t r = 0; r < ranks; r++) {
        VKMOE_REQUIRE(shards[r]->ctx, tokens[r] == 0 || y[r], "%s: y[%u] is NULL", fn, r);
        j.total += tokens[r];
    }
    VKMOE_REQUIRE(shards[0]->ctx, j.total > 0, "%s: no rank has a token", fn);
    j.routes = vkmoe_calloc(ranks, sizeof(*j.routes));
    j.rows = vkmoe_calloc(ranks, sizeof(*j.rows));
    vkmoe_status status =
        j.routes && j.rows
            ? run(&j, y)
            : vkmoe_fail(shards[0]->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t r = 0; r < ranks; r++) {
        if (j.routes) {
            free(j.routes[r].ids);
            free(j.routes[r].slot_row);
            free(j.routes[r].weight);
        }
        if (j.rows) {
            ep_rows *w = &j.rows[r];
            void *arrays[] = {w->x, w->expert, w->home, w->slot, w->weight, w->out};
            for (size_t i = 0; i < VKMOE_ARRAY_SIZE(arrays); i++)
                free(arrays[i]);
        }
    }
    free(j.routes);
    free(j.rows);
    return status;
}
