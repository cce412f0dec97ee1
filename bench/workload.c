#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "workload.h"

#define MAX_SAMPLES 16u

struct workload {
    workload_shape shape;
    uint32_t max_tokens;
    vkmoe_layer *layer;
    float *x, *y;
    float *router;
    uint32_t samples[MAX_SAMPLES]; /* token indices checked against the reference */
    uint32_t sample_count;
    double *expected; /* [sample][dim] */
};

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void fill(float *v, size_t n, float scale, uint64_t seed, bool f16)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    for (size_t i = 0; i < n; i++) {
        float u = (float)((rng_next(&s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
        v[i] = u * scale;
        if (f16)
            v[i] = vkmoe_ref_f16_to_f32(vkmoe_ref_f32_to_f16(v[i]));
    }
}

static vkmoe_status upload(workload *w, uint32_t e, vkmoe_expert_matrix m, const float *v, size_t n)
{
    if (w->shape.weights == VKMOE_WEIGHT_F32)
        return vkmoe_layer_set_expert(w->layer, e, m, v, n * sizeof(float));
    uint16_t *h = malloc(n * sizeof(*h));
    if (!h)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    for (size_t i = 0; i < n; i++)
        h[i] = vkmoe_ref_f32_to_f16(v[i]);
    vkmoe_status status = vkmoe_layer_set_expert(w->layer, e, m, h, n * sizeof(*h));
    free(h);
    return status;
}

/* Add expert e's weighted output to the expected rows of the samples that
 * chose it. */
static void reference_expert(workload *w, uint32_t e, const float *gate, const float *up,
                             const float *down, const uint32_t *ids, const double *weights)
{
    const workload_shape *s = &w->shape;
    vkmoe_ref_layer one = {.dim = s->dim, .ffn = s->ffn, .experts = 1, .top_k = 1,
                           .gate = gate, .up = up, .down = down};
    double *h = malloc(s->ffn * sizeof(*h)), *z = malloc(s->dim * sizeof(*z));
    for (uint32_t i = 0; h && z && i < w->sample_count; i++)
        for (uint32_t j = 0; j < s->top_k; j++) {
            if (ids[i * s->top_k + j] != e)
                continue;
            vkmoe_ref_expert_up(&one, 0, w->x + (size_t)w->samples[i] * s->dim, h);
            vkmoe_ref_expert_down(&one, 0, h, z);
            for (uint32_t d = 0; d < s->dim; d++)
                w->expected[(size_t)i * s->dim + d] += weights[i * s->top_k + j] * z[d];
        }
    free(h);
    free(z);
}

static vkmoe_status upload_experts(workload *w, const uint32_t *ids, const double *weights)
{
    const workload_shape *s = &w->shape;
    size_t n = (size_t)s->ffn * s->dim;
    bool f16 = s->weights == VKMOE_WEIGHT_F16;
    float *gate = malloc(n * sizeof(float)), *up = malloc(n * sizeof(float)),
          *down = malloc(n * sizeof(float));
    vkmoe_status status = gate && up && down ? VKMOE_OK : VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t e = 0; e < s->experts && status == VKMOE_OK; e++) {
        fill(gate, n, 2.0f / sqrtf((float)s->dim), 3ull * e + 1, f16);
        fill(up, n, 2.0f / sqrtf((float)s->dim), 3ull * e + 2, f16);
        fill(down, n, 2.0f / sqrtf((float)s->ffn), 3ull * e + 3, f16);
        status = upload(w, e, VKMOE_EXPERT_GATE, gate, n);
        if (status == VKMOE_OK)
            status = upload(w, e, VKMOE_EXPERT_UP, up, n);
        if (status == VKMOE_OK)
            status = upload(w, e, VKMOE_EXPERT_DOWN, down, n);
        if (w->expected)
            reference_expert(w, e, gate, up, down, ids, weights);
    }
    free(gate);
    free(up);
    free(down);
    return status;
}

static void choose_samples(workload *w)
{
    uint32_t n = w->max_tokens < MAX_SAMPLES ? w->max_tokens : MAX_SAMPLES;
    for (uint32_t i = 0; i < n; i++)
        w->samples[i] = n == 1 ? 0 : (uint32_t)((uint64_t)i * (w->max_tokens - 1) / (n - 1));
    w->sample_count = n;
}

static vkmoe_status prepare(workload *w, vkmoe_context *ctx, bool verify)
{
    const workload_shape *s = &w->shape;
    vkmoe_layer_params p = {.dim = s->dim, .ffn_dim = s->ffn, .experts = s->experts,
                            .top_k = s->top_k, .max_tokens = w->max_tokens,
                            .weight_type = s->weights, .normalize_topk = s->normalize,
                            .timing = true};
    vkmoe_status status = vkmoe_layer_create(ctx, &p, &w->layer);
    if (status != VKMOE_OK)
        return status;
    size_t io = (size_t)w->max_tokens * s->dim;
    w->x = malloc(io * sizeof(float));
    w->y = malloc(io * sizeof(float));
    w->router = malloc((size_t)s->experts * s->dim * sizeof(float));
    if (!w->x || !w->y || !w->router)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    fill(w->x, io, 1.0f, 0, false);
    fill(w->router, (size_t)s->experts * s->dim, 4.0f / sqrtf((float)s->dim), 12345, false);
    status = vkmoe_layer_set_router(w->layer, w->router, (size_t)s->experts * s->dim * 4);
    if (status != VKMOE_OK)
        return status;
    uint32_t ids[MAX_SAMPLES * 16];
    double weights[MAX_SAMPLES * 16];
    if (verify) {
        choose_samples(w);
        w->expected = calloc((size_t)w->sample_count * s->dim, sizeof(double));
        if (!w->expected)
            return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
        vkmoe_ref_layer routing = {.dim = s->dim, .experts = s->experts, .top_k = s->top_k,
                                   .normalize = s->normalize, .router = w->router};
        for (uint32_t i = 0; i < w->sample_count; i++)
            vkmoe_ref_route(&routing, 1, w->x + (size_t)w->samples[i] * s->dim,
                            ids + i * s->top_k, weights + i * s->top_k);
    }
    return upload_experts(w, ids, weights);
}

vkmoe_status workload_create(vkmoe_context *ctx, const workload_shape *shape, uint32_t max_tokens,
                             bool verify, workload **out)
{
    workload *w = calloc(1, sizeof(*w));
    *out = NULL;
    if (!w)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    w->shape = *shape;
    w->max_tokens = max_tokens;
    vkmoe_status status = prepare(w, ctx, verify);
    if (status != VKMOE_OK) {
        workload_destroy(&w);
        return status;
    }
    *out = w;
    return VKMOE_OK;
}

void workload_destroy(workload **pw)
{
    if (!pw || !*pw)
        return;
    workload *w = *pw;
    vkmoe_layer_destroy(&w->layer);
    free(w->x);
    free(w->y);
    free(w->router);
    free(w->expected);
    free(w);
    *pw = NULL;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, uint32_t n)
{
    qsort(v, n, sizeof(*v), compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Useful work per stage (see shared/BENCH.md): FLOPs of the math the stage
 * exists for, and the bytes of weights and activations it must touch once. */
static void count_work(const workload *w, uint32_t tokens, uint32_t active, run_result *r)
{
    const workload_shape *s = &w->shape;
    double t = tokens, d = s->dim, f = s->ffn, e = s->experts, k = s->top_k;
    double wbytes = s->weights == VKMOE_WEIGHT_F16 ? 2 : 4;
    double slots = t * k;
    stage_figures *st = r->stages;
    st[VKMOE_STAGE_ROUTER].flops = 2 * t * d * e;
    st[VKMOE_STAGE_ROUTER].bytes = e * d * 4 + t * d * 4 + slots * 8;
    st[VKMOE_STAGE_COUNT].bytes = slots * 4;
    st[VKMOE_STAGE_SCAN].bytes = 2 * e * ceil(slots / 256) * 4;
    st[VKMOE_STAGE_SCATTER].bytes = slots * 4 * 3;
    st[VKMOE_STAGE_GEMM_UP].flops = 2 * slots * 2 * d * f;
    st[VKMOE_STAGE_GEMM_UP].bytes = active * 2 * d * f * wbytes + slots * (d + f) * 4;
    st[VKMOE_STAGE_GEMM_DOWN].flops = 2 * slots * d * f;
    st[VKMOE_STAGE_GEMM_DOWN].bytes = active * d * f * wbytes + slots * (d + f) * 4;
    st[VKMOE_STAGE_COMBINE].bytes = slots * (d * 4 + 8) + t * d * 4;
    r->layer.flops = st[VKMOE_STAGE_ROUTER].flops + st[VKMOE_STAGE_GEMM_UP].flops +
                     st[VKMOE_STAGE_GEMM_DOWN].flops;
    r->layer.bytes = e * d * 4 + active * 3 * d * f * wbytes + 2 * t * d * 4;
}

static void verify(const workload *w, uint32_t tokens, run_result *r)
{
    r->verified = false;
    r->verified_tokens = 0;
    r->error = (vkmoe_ref_error){0, 0};
    if (!w->expected)
        return;
    uint32_t dim = w->shape.dim;
    for (uint32_t i = 0; i < w->sample_count && w->samples[i] < tokens; i++) {
        vkmoe_ref_error e = vkmoe_ref_compare(w->y + (size_t)w->samples[i] * dim,
                                              w->expected + (size_t)i * dim, dim);
        if (!(e.max_abs <= r->error.max_abs))
            r->error.max_abs = e.max_abs;
        if (!(e.max_rel <= r->error.max_rel))
            r->error.max_rel = e.max_rel;
        r->verified_tokens++;
    }
    /* f32 accumulation over dim and ffn terms; f16 weights are exact in both. */
    r->verified = r->verified_tokens > 0 && r->error.max_rel <= 1e-4;
}

vkmoe_status workload_run(workload *w, uint32_t tokens, uint32_t warmup, uint32_t iters,
                          run_result *r)
{
    memset(r, 0, sizeof(*r));
    r->tokens = tokens;
    double *samples = malloc((size_t)iters * (VKMOE_STAGE_MAX + 1) * sizeof(double));
    if (!samples)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    vkmoe_status status = VKMOE_OK;
    for (uint32_t i = 0; i < warmup + iters && status == VKMOE_OK; i++) {
        status = vkmoe_layer_forward(w->layer, tokens, w->x, w->y);
        vkmoe_timings t;
        if (status == VKMOE_OK)
            status = vkmoe_layer_timings(w->layer, &t);
        if (status != VKMOE_OK || i < warmup)
            continue;
        uint32_t it = i - warmup;
        samples[it] = t.total_ms;
        for (uint32_t s = 0; s < VKMOE_STAGE_MAX; s++)
            samples[(s + 1) * (size_t)iters + it] = t.stage_ms[s];
    }
    uint32_t counts[512];
    if (status == VKMOE_OK)
        status = vkmoe_layer_expert_counts(w->layer, counts, 512);
    if (status == VKMOE_OK) {
        r->layer.ms = median(samples, iters);
        for (uint32_t s = 0; s < VKMOE_STAGE_MAX; s++)
            r->stages[s].ms = median(samples + (s + 1) * (size_t)iters, iters);
        for (uint32_t e = 0; e < w->shape.experts; e++)
            r->active_experts += counts[e] > 0;
        count_work(w, tokens, r->active_experts, r);
        verify(w, tokens, r);
    }
    free(samples);
    return status;
}
