#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layer.h" /* first: it brings volk.h, which must come before vulkan.h */

#include "constants.h"
#include "fixture.h"
#include "host_peak.h"
#include "stages.h"
#include "workload.h"

#define MAX_SAMPLES 16u

struct workload {
    vkmoe_layer_params params; /* resolved */
    vkmoe_layer *layer;
    float *x, *y;      /* f32, the values the layer computes on */
    void *x_io, *y_io; /* x and y in params.io_type where it is 16 bits, else NULL */
    float *router, *router_bias, *selection_bias, *shared_gate_weights;
    vkmoe_ref_layer routing;       /* the router's weights, for the reference */
    uint32_t samples[MAX_SAMPLES]; /* token indices checked against the reference */
    uint32_t sample_count;
    uint32_t *sample_ids;   /* [sample][k] */
    double *sample_weights; /* [sample][k] */
    double *contribution;   /* [sample][k][dim]: weight · expert output of each choice */
    double *base;           /* [sample][dim]: the gated shared expert's output */
    uint32_t *all_ids;      /* [max_tokens][k], with a capacity: who competes for it */
    /* Offload runs (workload_create): the resident twin, and each forward's
     * own inputs and both layers' outputs, in io_type's bytes. */
    vkmoe_layer *resident;
    vkmoe_layer *cpu_twin; /* every expert on the host, unless the layer is so itself */
    double skew;
    uint32_t *trace; /* [trace_tokens][k]: recorded expert ids, or NULL */
    size_t trace_tokens, trace_next;
    uint64_t rng;
    uint32_t *rank; /* [E]: the expert of each Zipf rank, drifting */
    double *zipf;   /* [E]: cumulative Zipf weights of the ranks */
    float *x_next;  /* [max_tokens][dim] */
    void *io_next, *y_cached, *y_resident;
    /* Device copies of x and y for forwards recorded back to back
     * (run_back_to_back), made by its first run. */
    vkmoe_buffer stream_x, stream_y;
};

/* The layer and its twins, each NULL where there is none. */
typedef struct layer_list {
    vkmoe_layer *v[3];
} layer_list;

static layer_list layers_of(const workload *w)
{
    return (layer_list){{w->layer, w->resident, w->cpu_twin}};
}

/* The layer's seed: the bench's layer is the same from run to run. */
#define SEED 12345u

/* One expert's (or the shared expert's) weights, allocated whole whatever
 * the params call for: made, uploaded and dropped one expert at a time. */
static bool alloc_expert(fixture_expert *ew, size_t matrix, size_t ffn, size_t dim)
{
    ew->gate = malloc(matrix * sizeof(float));
    ew->up = malloc(matrix * sizeof(float));
    ew->down = malloc(matrix * sizeof(float));
    ew->gate_bias = malloc(ffn * sizeof(float));
    ew->up_bias = malloc(ffn * sizeof(float));
    ew->down_bias = malloc(dim * sizeof(float));
    return ew->gate && ew->up && ew->down && ew->gate_bias && ew->up_bias && ew->down_bias;
}

static void free_expert(fixture_expert *ew)
{
    float *all[] = {ew->gate, ew->up, ew->down, ew->gate_bias, ew->up_bias, ew->down_bias};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]);
}

/* A reference layer of this one expert's weights. */
static vkmoe_ref_layer one_expert(const workload *w, const fixture_expert *ew)
{
    bool biases = fixture_expert_has_biases(&w->params, 0);
    vkmoe_ref_layer one = {.p = w->params,
                           .gate = ew->gate,
                           .up = ew->up,
                           .down = ew->down,
                           .gate_bias = biases ? ew->gate_bias : NULL,
                           .up_bias = biases ? ew->up_bias : NULL,
                           .down_bias = biases ? ew->down_bias : NULL};
    one.p.experts = 1;
    one.p.top_k = 1;
    return one;
}

/* Record expert e's weighted output for the samples' choices of it. */
static void reference_expert(workload *w, uint32_t e, const fixture_expert *ew)
{
    const vkmoe_layer_params *p = &w->params;
    vkmoe_ref_layer one = one_expert(w, ew);
    double *h = malloc(p->ffn_dim * sizeof(*h)), *z = malloc(p->dim * sizeof(*z));
    for (uint32_t i = 0; h && z && i < w->sample_count; i++)
        for (uint32_t j = 0; j < p->top_k; j++) {
            size_t s = (size_t)i * p->top_k + j;
            if (w->sample_ids[s] != e)
                continue;
            vkmoe_ref_expert_up(&one, 0, w->x + (size_t)w->samples[i] * p->dim, h);
            vkmoe_ref_expert_down(&one, 0, h, z);
            for (uint32_t d = 0; d < p->dim; d++)
                w->contribution[s * p->dim + d] = w->sample_weights[s] * z[d];
        }
    free(h);
    free(z);
}

/* Expert e, encoded once, to every layer of the run. */
static vkmoe_status upload_to_layers(workload *w, uint32_t e, const fixture_expert *ew,
                                     const fixture_encoded *encoded)
{
    vkmoe_status status = VKMOE_OK;
    for (int i = 0; i < 3 && status == VKMOE_OK; i++)
        if (layers_of(w).v[i])
            status = fixture_upload_encoded(layers_of(w).v[i], &w->params, e, ew, encoded);
    return status;
}

/* One routed expert made, encoded and (when checking) put through the
 * reference on a thread of its own; uploaded after, in expert order. */
typedef struct expert_job {
    workload *w;
    uint32_t expert;
    fixture_expert weights;
    fixture_encoded encoded;
    bool encoded_ok, on_thread;
    pthread_t thread;
} expert_job;

static void *make_expert(void *arg)
{
    expert_job *job = arg;
    fixture_make_expert(&job->w->params, SEED, job->expert, &job->weights);
    job->encoded_ok =
        fixture_encode_expert(&job->w->params, job->expert, &job->weights, &job->encoded);
    if (job->w->contribution) /* each expert writes only its own choices' rows */
        reference_expert(job->w, job->expert, &job->weights);
    return NULL;
}

/* Experts at once: one a core, as many as an eighth of the host's memory
 * (1 GiB where it cannot be read) holds of their weights in f32 and
 * encoded, at least one. The k-quants' encoders take ~0.4 µs a weight:
 * Qwen3-30B-A3B's layer in Q4_K took 3.7 minutes on one core, which the GPU
 * check's runs could not afford. */
static uint32_t jobs_at_once(const vkmoe_layer_params *p)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    uint64_t budget =
        pages > 0 && page_size > 0 ? (uint64_t)pages * (uint64_t)page_size / 8 : (uint64_t)1 << 30;
    uint64_t job_bytes = 2ull * 3 * sizeof(float) * p->ffn_dim * p->dim;
    uint64_t by_memory = budget / (job_bytes ? job_bytes : 1);
    uint64_t n = cores < 1 ? 1 : (uint64_t)cores;
    n = n < by_memory ? n : by_memory;
    n = n < p->experts ? n : p->experts;
    return n < 1 ? 1 : (uint32_t)n;
}

/* Runs jobs[0 .. count) on threads, the first on this one (any a thread
 * cannot be had for too). */
static void run_jobs(expert_job *jobs, uint32_t count)
{
    for (uint32_t j = 1; j < count; j++)
        jobs[j].on_thread = pthread_create(&jobs[j].thread, NULL, make_expert, &jobs[j]) == 0;
    make_expert(&jobs[0]);
    for (uint32_t j = 1; j < count; j++) {
        if (jobs[j].on_thread)
            pthread_join(jobs[j].thread, NULL);
        else
            make_expert(&jobs[j]);
    }
}

static vkmoe_status upload_experts(workload *w)
{
    const vkmoe_layer_params *p = &w->params;
    size_t n = (size_t)p->ffn_dim * p->dim;
    uint32_t at_once = jobs_at_once(p);
    expert_job *jobs = calloc(at_once, sizeof(*jobs));
    vkmoe_status status = jobs ? VKMOE_OK : VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t j = 0; j < at_once && status == VKMOE_OK; j++)
        if (!alloc_expert(&jobs[j].weights, n, p->ffn_dim, p->dim))
            status = VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t e = 0; e < p->experts && status == VKMOE_OK;) {
        uint32_t count = 0;
        for (; e < p->experts && count < at_once; e++)
            if (!p->held_experts || p->held_experts[e]) { /* else another rank's expert */
                jobs[count].w = w;
                jobs[count].expert = e;
                count++;
            }
        if (count)
            run_jobs(jobs, count);
        for (uint32_t j = 0; j < count; j++) {
            if (status == VKMOE_OK && !jobs[j].encoded_ok)
                status = VKMOE_ERROR_OUT_OF_HOST_MEMORY;
            if (status == VKMOE_OK)
                status = upload_to_layers(w, jobs[j].expert, &jobs[j].weights, &jobs[j].encoded);
            fixture_encoded_free(&jobs[j].encoded);
        }
    }
    for (uint32_t j = 0; jobs && j < at_once; j++)
        free_expert(&jobs[j].weights);
    free(jobs);
    return status;
}

static vkmoe_status upload_shared_expert(workload *w)
{
    const vkmoe_layer_params *p = &w->params;
    if (!p->shared_ffn_dim)
        return VKMOE_OK;
    size_t n = (size_t)p->shared_ffn_dim * p->dim;
    fixture_expert ew;
    vkmoe_status status =
        alloc_expert(&ew, n, p->shared_ffn_dim, p->dim) ? VKMOE_OK : VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    if (status == VKMOE_OK) {
        fixture_make_expert(p, SEED, FIXTURE_SHARED_EXPERT, &ew);
        fixture_encoded encoded;
        status = fixture_encode_expert(p, FIXTURE_SHARED_EXPERT, &ew, &encoded)
                     ? upload_to_layers(w, FIXTURE_SHARED_EXPERT, &ew, &encoded)
                     : VKMOE_ERROR_OUT_OF_HOST_MEMORY;
        fixture_encoded_free(&encoded);
    }
    vkmoe_ref_layer ref = w->routing;
    ref.shared_gate = ew.gate;
    ref.shared_up = ew.up;
    ref.shared_down = ew.down;
    double *z = malloc(p->dim * sizeof(*z));
    for (uint32_t i = 0; status == VKMOE_OK && z && w->base && i < w->sample_count; i++) {
        const float *x = w->x + (size_t)w->samples[i] * p->dim;
        double scale;
        vkmoe_ref_router_figures(&ref, x, NULL, NULL, &scale);
        vkmoe_ref_shared(&ref, x, z);
        for (uint32_t d = 0; d < p->dim; d++)
            w->base[(size_t)i * p->dim + d] = scale * z[d];
    }
    free(z);
    free_expert(&ew);
    return status;
}

static void choose_samples(workload *w)
{
    uint32_t max_tokens = w->params.max_tokens;
    uint32_t n = max_tokens < MAX_SAMPLES ? max_tokens : MAX_SAMPLES;
    for (uint32_t i = 0; i < n; i++)
        w->samples[i] = n == 1 ? 0 : (uint32_t)((uint64_t)i * (max_tokens - 1) / (n - 1));
    w->sample_count = n;
}

static vkmoe_status upload_router(workload *w)
{
    const vkmoe_layer_params *p = &w->params;
    size_t e = p->experts, d = p->dim;
    w->router = malloc(e * d * sizeof(float));
    w->router_bias = malloc(e * sizeof(float));
    w->selection_bias = malloc(e * sizeof(float));
    w->shared_gate_weights = malloc(d * sizeof(float));
    if (!w->router || !w->router_bias || !w->selection_bias || !w->shared_gate_weights)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    fixture_router router = {w->router, w->router_bias, w->selection_bias, w->shared_gate_weights};
    fixture_make_router(p, SEED, &router);
    w->routing =
        (vkmoe_ref_layer){.p = *p,
                          .router = w->router,
                          .router_bias = p->router_bias ? w->router_bias : NULL,
                          .selection_bias = p->selection_bias ? w->selection_bias : NULL,
                          .shared_gate_weights = p->shared_gate ? w->shared_gate_weights : NULL};
    vkmoe_status status = VKMOE_OK;
    for (int i = 0; i < 3 && status == VKMOE_OK; i++)
        if (layers_of(w).v[i])
            status = fixture_upload_router(layers_of(w).v[i], p, &router);
    return status;
}

/* The samples' routes, and with a capacity every token's choices, which
 * decide whether a sample's slot is kept. */
static vkmoe_status prepare_reference(workload *w)
{
    const vkmoe_layer_params *p = &w->params;
    choose_samples(w);
    size_t slots = (size_t)w->sample_count * p->top_k;
    w->sample_ids = malloc(slots * sizeof(*w->sample_ids));
    w->sample_weights = malloc(slots * sizeof(*w->sample_weights));
    w->contribution = calloc(slots * p->dim, sizeof(*w->contribution));
    w->base = calloc((size_t)w->sample_count * p->dim, sizeof(*w->base));
    if (!w->sample_ids || !w->sample_weights || !w->contribution || !w->base)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    for (uint32_t i = 0; i < w->sample_count; i++)
        vkmoe_ref_route(&w->routing, 1, w->x + (size_t)w->samples[i] * p->dim,
                        w->sample_ids + i * p->top_k, w->sample_weights + i * p->top_k);
    if (p->capacity_factor == 0)
        return VKMOE_OK;
    size_t all = (size_t)p->max_tokens * p->top_k;
    w->all_ids = malloc(all * sizeof(*w->all_ids));
    double *weights = malloc(all * sizeof(*weights));
    if (w->all_ids && weights)
        vkmoe_ref_route(&w->routing, p->max_tokens, w->x, w->all_ids, weights);
    free(weights);
    return w->all_ids ? VKMOE_OK : VKMOE_ERROR_OUT_OF_HOST_MEMORY;
}

/* The resident twin and the per-forward buffers of an offload run. */
/* A trace: per line one token's expert ids (at least k of them, below E;
 * the first k count), separated by spaces or commas; '#' starts a comment. */
static vkmoe_status load_trace(workload *w, const char *path)
{
    const vkmoe_layer_params *p = &w->params;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "vkmoe-bench: cannot open the trace %s\n", path);
        return VKMOE_ERROR_FILE_FORMAT;
    }
    char line[4096];
    size_t capacity = 0, number = 0;
    vkmoe_status status = VKMOE_OK;
    while (status == VKMOE_OK && fgets(line, sizeof(line), f)) {
        number++;
        char *hash = strchr(line, '#'), *at = line;
        if (hash)
            *hash = '\0';
        if (strspn(line, " \t,\r\n") == strlen(line))
            continue;
        if (w->trace_tokens == capacity) {
            capacity = capacity ? 2 * capacity : 1024;
            uint32_t *grown = realloc(w->trace, capacity * p->top_k * sizeof(uint32_t));
            if (!grown) {
                status = VKMOE_ERROR_OUT_OF_HOST_MEMORY;
                break;
            }
            w->trace = grown;
        }
        for (uint32_t j = 0; j < p->top_k && status == VKMOE_OK; j++) {
            char *end;
            unsigned long id = strtoul(at += strspn(at, " \t,"), &end, 10);
            if (end == at || id >= p->experts) {
                fprintf(stderr, "vkmoe-bench: %s:%zu: needs %u expert ids below %u\n", path, number,
                        p->top_k, p->experts);
                status = VKMOE_ERROR_FILE_FORMAT;
            }
            w->trace[w->trace_tokens * p->top_k + j] = (uint32_t)id;
            at = end;
        }
        w->trace_tokens++;
    }
    fclose(f);
    if (status == VKMOE_OK && !w->trace_tokens) {
        fprintf(stderr, "vkmoe-bench: the trace %s has no token\n", path);
        status = VKMOE_ERROR_FILE_FORMAT;
    }
    return status;
}

static vkmoe_status prepare_offload(workload *w, vkmoe_context *ctx, vkmoe_layer_params p,
                                    const workload_routing *routing)
{
    double skew = routing->skew;
    if (routing->trace)
        VKMOE_TRY(load_trace(w, routing->trace));
    bool on_cpu = p.cpu_experts;
    p.expert_budget_bytes = 0;
    p.cpu_experts = false;
    vkmoe_status status = vkmoe_layer_create(ctx, &p, &w->resident);
    p.cpu_experts = true;
    if (status == VKMOE_OK && !on_cpu)
        status = vkmoe_layer_create(ctx, &p, &w->cpu_twin);
    if (status != VKMOE_OK)
        return status;
    uint32_t e = w->params.experts;
    size_t io = (size_t)w->params.max_tokens * w->params.dim;
    size_t io_bytes = vkmoe_weight_bytes(w->params.io_type, io);
    w->skew = skew;
    w->rng = SEED;
    w->rank = malloc(e * sizeof(*w->rank));
    w->zipf = malloc(e * sizeof(*w->zipf));
    w->x_next = malloc(io * sizeof(float));
    w->io_next = malloc(io_bytes);
    w->y_cached = malloc(io_bytes);
    w->y_resident = malloc(io_bytes);
    if (!w->rank || !w->zipf || !w->x_next || !w->io_next || !w->y_cached || !w->y_resident)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    double sum = 0;
    for (uint32_t r = 0; r < e; r++) {
        w->rank[r] = (uint32_t)(((uint64_t)r * 2654435761u) % e); /* not index order */
        w->zipf[r] = sum += pow(r + 1.0, -skew);
    }
    /* A multiplier coprime with E makes the ranks a permutation only then;
     * fall back to index order otherwise. */
    for (uint32_t r = 1; r < e; r++)
        if (w->rank[r] == w->rank[0])
            for (uint32_t q = 0; q < e; q++)
                w->rank[q] = q;
    return VKMOE_OK;
}

static vkmoe_status prepare(workload *w, vkmoe_context *ctx, const vkmoe_layer_params *params,
                            bool verify, const workload_routing *routing)
{
    vkmoe_layer_params p = *params;
    p.timing = true;
    vkmoe_status status = vkmoe_layer_create(ctx, &p, &w->layer);
    if (status != VKMOE_OK)
        return status;
    vkmoe_layer_params_of(w->layer, &w->params);
    if (p.expert_budget_bytes || p.cpu_experts || routing->skew > 0 || routing->trace)
        status = prepare_offload(w, ctx, p, routing);
    if (status != VKMOE_OK)
        return status;
    size_t io = (size_t)w->params.max_tokens * w->params.dim;
    w->x = malloc(io * sizeof(float));
    w->y = malloc(io * sizeof(float));
    if (!w->x || !w->y)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    /* x as the layer's io_type holds it: the reference computes on that */
    fixture_fill(w->x, io, 1.0f, SEED - 1, w->params.io_type);
    if (w->params.io_type != VKMOE_WEIGHT_F32) {
        size_t bytes = vkmoe_weight_bytes(w->params.io_type, io);
        w->x_io = malloc(bytes ? bytes : 1);
        w->y_io = malloc(bytes ? bytes : 1);
        if (!w->x_io || !w->y_io)
            return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
        vkmoe_quantize(w->params.io_type, w->x, io, w->x_io, bytes);
    }
    status = upload_router(w);
    if (status == VKMOE_OK && verify)
        status = prepare_reference(w);
    if (status == VKMOE_OK)
        status = upload_shared_expert(w);
    return status == VKMOE_OK ? upload_experts(w) : status;
}

vkmoe_status workload_create(vkmoe_context *ctx, const vkmoe_layer_params *params, bool verify,
                             const workload_routing *routing, workload **out)
{
    workload *w = calloc(1, sizeof(*w));
    *out = NULL;
    if (!w)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    vkmoe_status status = prepare(w, ctx, params, verify, routing);
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
    if (w->layer) {
        vkmoe_buffer_destroy(w->layer->ctx, &w->stream_x);
        vkmoe_buffer_destroy(w->layer->ctx, &w->stream_y);
    }
    vkmoe_layer_destroy(&w->layer);
    vkmoe_layer_destroy(&w->resident);
    vkmoe_layer_destroy(&w->cpu_twin);
    void *all[] = {w->trace,
                   w->rank,
                   w->zipf,
                   w->x_next,
                   w->io_next,
                   w->y_cached,
                   w->y_resident,
                   w->x,
                   w->y,
                   w->x_io,
                   w->y_io,
                   w->router,
                   w->router_bias,
                   w->selection_bias,
                   w->shared_gate_weights,
                   w->sample_ids,
                   w->sample_weights,
                   w->contribution,
                   w->base,
                   w->all_ids};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]);
    free(w);
    *pw = NULL;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double workload_median(double *v, uint32_t n)
{
    qsort(v, n, sizeof(*v), compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Stage `into`'s time covers stage `from`'s work: its name says so, and
 * with `move`, from's FLOPs and bytes become into's (without, the caller
 * has counted them). */
static void join_stage(stage_figures *st, vkmoe_stage into, vkmoe_stage from, bool move)
{
    size_t n = strlen(st[into].name);
    snprintf(st[into].name + n, sizeof(st[into].name) - n, "+%s", vkmoe_stage_name(from));
    if (!move)
        return;
    st[into].flops += st[from].flops;
    st[into].bytes += st[from].bytes;
    st[from].flops = st[from].bytes = 0;
}

/* Useful work per stage (see shared/BENCH.md): FLOPs of the math the stage
 * exists for, and the bytes of weights and activations it must touch once. */
static void count_work(const workload *w, uint32_t tokens, uint32_t active, run_result *r)
{
    const vkmoe_layer_params *p = &w->params;
    double t = tokens, d = p->dim, f = p->ffn_dim, e = p->experts, k = p->top_k;
    double fs = p->shared_ffn_dim;
    double wbytes = vkmoe_weight_bytes(p->weight_type, 256) / 256.0;
    double inputs = p->activation == VKMOE_ACTIVATION_RELU ? 1 : 2; /* projections of x */
    double slots = t * k, io = vkmoe_weight_bytes(p->io_type, 1);   /* bytes of x and y */
    stage_figures *st = r->stages;
    st[VKMOE_STAGE_ROUTER].flops = 2 * t * d * e;
    st[VKMOE_STAGE_ROUTER].bytes = e * d * 4 + t * d * (io + 4) + slots * 8;
    st[VKMOE_STAGE_HISTOGRAM].bytes = slots * 4;
    st[VKMOE_STAGE_SCAN].bytes = 2 * e * ceil(slots / VKMOE_BLOCK_SLOTS) * 4;
    st[VKMOE_STAGE_SCATTER].bytes = slots * 4 * 3;
    st[VKMOE_STAGE_GEMM_UP].flops = 2 * slots * inputs * d * f;
    st[VKMOE_STAGE_GEMM_UP].bytes = active * inputs * d * f * wbytes + slots * (d + f) * 4;
    st[VKMOE_STAGE_GEMM_DOWN].flops = 2 * slots * d * f;
    st[VKMOE_STAGE_GEMM_DOWN].bytes = active * d * f * wbytes + slots * (d + f) * 4;
    st[VKMOE_STAGE_SHARED].flops = 2 * t * (inputs + 1) * d * fs;
    st[VKMOE_STAGE_SHARED].bytes = fs ? (inputs + 1) * d * fs * wbytes + t * (2 * d + fs) * 4 : 0;
    st[VKMOE_STAGE_COMBINE].bytes = slots * (d * 4 + 8) + t * d * (fs ? 4 + io : io);
    r->layer.flops = st[VKMOE_STAGE_ROUTER].flops + st[VKMOE_STAGE_GEMM_UP].flops +
                     st[VKMOE_STAGE_GEMM_DOWN].flops + st[VKMOE_STAGE_SHARED].flops;
    r->layer.bytes =
        e * d * 4 + (active * (inputs + 1) * f + (inputs + 1) * fs) * d * wbytes + 2 * t * d * io;
    for (uint32_t s = 0; s < VKMOE_STAGE_MAX; s++)
        snprintf(st[s].name, sizeof(st[s].name), "%s", vkmoe_stage_name((vkmoe_stage)s));
    if (vkmoe_shared_beside(w->layer, tokens)) {
        /* its projections of x in gemm_up's time, its down projection in gemm_down's */
        st[VKMOE_STAGE_GEMM_UP].flops += 2 * t * inputs * d * fs;
        st[VKMOE_STAGE_GEMM_UP].bytes += inputs * d * fs * wbytes + t * (d + fs) * 4;
        st[VKMOE_STAGE_GEMM_DOWN].flops += 2 * t * d * fs;
        st[VKMOE_STAGE_GEMM_DOWN].bytes += d * fs * wbytes + t * (fs + d) * 4;
        join_stage(st, VKMOE_STAGE_GEMM_UP, VKMOE_STAGE_SHARED, false);
        join_stage(st, VKMOE_STAGE_GEMM_DOWN, VKMOE_STAGE_SHARED, false);
        st[VKMOE_STAGE_SHARED].flops = st[VKMOE_STAGE_SHARED].bytes = 0;
    }
    if (vkmoe_combine_in_down(w->layer, tokens))
        join_stage(st, VKMOE_STAGE_GEMM_DOWN, VKMOE_STAGE_COMBINE, true);
    /* The bucketing: the router's at one token, else the scan's alone where
     * the slots fit one block. */
    vkmoe_stage bucketing =
        vkmoe_router_buckets(w->layer, tokens) ? VKMOE_STAGE_ROUTER : VKMOE_STAGE_SCAN;
    if (vkmoe_bucketing_in_one_dispatch(w->layer, tokens)) {
        join_stage(st, bucketing, VKMOE_STAGE_HISTOGRAM, true);
        if (bucketing != VKMOE_STAGE_SCAN)
            join_stage(st, bucketing, VKMOE_STAGE_SCAN, true);
        join_stage(st, bucketing, VKMOE_STAGE_SCATTER, true);
    }
}

/* The expected output of sample i in a forward of `tokens` tokens. */
static void expected_row(const workload *w, uint32_t i, const bool *kept, double *out)
{
    const vkmoe_layer_params *p = &w->params;
    memcpy(out, w->base + (size_t)i * p->dim, p->dim * sizeof(*out));
    for (uint32_t j = 0; j < p->top_k; j++) {
        size_t s = (size_t)i * p->top_k + j;
        if (kept && !kept[(size_t)w->samples[i] * p->top_k + j])
            continue;
        for (uint32_t d = 0; d < p->dim; d++)
            out[d] += w->contribution[s * p->dim + d];
    }
}

static void verify(const workload *w, uint32_t tokens, run_result *r)
{
    r->verified = false;
    r->verified_tokens = 0;
    r->error = (vkmoe_ref_error){0, 0};
    if (!w->contribution)
        return;
    const vkmoe_layer_params *p = &w->params;
    bool *kept = w->all_ids ? malloc((size_t)tokens * p->top_k * sizeof(*kept)) : NULL;
    double *expected = malloc(p->dim * sizeof(*expected));
    if (kept)
        vkmoe_ref_keep(&w->routing, tokens, w->all_ids, kept);
    for (uint32_t i = 0; expected && i < w->sample_count && w->samples[i] < tokens; i++) {
        expected_row(w, i, kept, expected);
        vkmoe_ref_error e =
            vkmoe_ref_compare(w->y + (size_t)w->samples[i] * p->dim, expected, p->dim);
        if (!(e.max_abs <= r->error.max_abs))
            r->error.max_abs = e.max_abs;
        if (!(e.max_rel <= r->error.max_rel))
            r->error.max_rel = e.max_rel;
        r->verified_tokens++;
    }
    free(kept);
    free(expected);
    r->verified = r->verified_tokens > 0 && r->error.max_rel <= fixture_tolerance(p);
}

/* xorshift64*: the offload runs' inputs, the same from run to run. */
static double next_uniform(workload *w)
{
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return (double)((w->rng * 2685821657736338717ull) >> 11) * 0x1.0p-53;
}

/* A rank drawn from the Zipf law, not among the first `taken` of chosen. */
static uint32_t draw_rank(workload *w, const uint32_t *chosen, uint32_t taken)
{
    uint32_t e = w->params.experts;
    for (;;) {
        double u = next_uniform(w) * w->zipf[e - 1];
        uint32_t r = 0;
        while (r + 1 < e && w->zipf[r] <= u)
            r++;
        bool fresh = true;
        for (uint32_t j = 0; j < taken; j++)
            fresh &= chosen[j] != r;
        if (fresh)
            return r;
    }
}

/* Token t's k experts: the trace's next token (from its start again after
 * its end), or k drawn by the Zipf law over the drifting ranking. */
static void choose_experts(workload *w, uint32_t *experts)
{
    const vkmoe_layer_params *p = &w->params;
    uint32_t chosen[VKMOE_MAX_TOP_K];
    if (w->trace) {
        memcpy(experts, w->trace + w->trace_next * p->top_k, p->top_k * sizeof(uint32_t));
        w->trace_next = (w->trace_next + 1) % w->trace_tokens;
        return;
    }
    for (uint32_t j = 0; j < p->top_k; j++) {
        chosen[j] = draw_rank(w, chosen, j);
        experts[j] = w->rank[chosen[j]];
    }
}

/* Token inputs that steer the router: small noise plus, for each of the
 * token's k experts, 8 logits' worth along that expert's router row.
 * Without a trace, before each forward one random pair of neighbouring
 * ranks trades places: the hot set drifts slowly. */
static void steer(workload *w, uint32_t tokens)
{
    const vkmoe_layer_params *p = &w->params;
    if (p->experts > 1 && !w->trace) {
        uint32_t r = (uint32_t)(next_uniform(w) * (p->experts - 1));
        uint32_t e = w->rank[r];
        w->rank[r] = w->rank[r + 1];
        w->rank[r + 1] = e;
    }
    uint32_t experts[VKMOE_MAX_TOP_K];
    for (uint32_t t = 0; t < tokens; t++) {
        float *x = w->x_next + (size_t)t * p->dim;
        for (uint32_t d = 0; d < p->dim; d++)
            x[d] = (float)(0.2 * next_uniform(w) - 0.1);
        choose_experts(w, experts);
        for (uint32_t j = 0; j < p->top_k; j++) {
            const float *row = w->router + (size_t)experts[j] * p->dim;
            double norm2 = 0;
            for (uint32_t d = 0; d < p->dim; d++)
                norm2 += (double)row[d] * row[d];
            for (uint32_t d = 0; d < p->dim && norm2 > 0; d++)
                x[d] += (float)(8.0 * row[d] / norm2);
        }
    }
}

/* One forward of `layer` on x (io_type's bytes) into y, and its times. */
static vkmoe_status timed_forward(vkmoe_layer *layer, uint32_t tokens, const void *x, void *y,
                                  vkmoe_timings *t)
{
    vkmoe_status status = vkmoe_layer_forward(layer, tokens, x, y);
    return status == VKMOE_OK ? vkmoe_layer_timings(layer, t) : status;
}

static void keep_sample(double *samples, uint32_t iters, uint32_t it, const vkmoe_timings *t)
{
    samples[it] = t->total_ms;
    for (uint32_t s = 0; s < VKMOE_STAGE_MAX; s++)
        samples[(s + 1) * (size_t)iters + it] = t->stage_ms[s];
}

/* The runs of a layer that holds every expert on the device: the same input each time. */
static vkmoe_status run_resident(workload *w, uint32_t tokens, uint32_t warmup, uint32_t iters,
                                 double *samples)
{
    vkmoe_status status = VKMOE_OK;
    for (uint32_t i = 0; i < warmup + iters && status == VKMOE_OK; i++) {
        vkmoe_timings t;
        status = w->x_io ? timed_forward(w->layer, tokens, w->x_io, w->y_io, &t)
                         : timed_forward(w->layer, tokens, w->x, w->y, &t);
        if (status == VKMOE_OK && i >= warmup)
            keep_sample(samples, iters, i - warmup, &t);
    }
    return status;
}

/* Each run `n` forwards of the same input recorded into one submission
 * (vkmoe_layer_record_forward), as a model's layers follow each other on
 * the GPU with no host round trip between them: a discrete GPU keeps its
 * clocks up then, where it lowers them between single forwards (the H200
 * ran decode at 345 MHz of 1980 that way). The samples are the last
 * forward's timestamps; stream_ms, a whole submission's host time over n.
 * y is read back after the last run, for the check. */
static vkmoe_status run_back_to_back(workload *w, uint32_t tokens, uint32_t warmup, uint32_t iters,
                                     uint32_t n, double *samples, double *stream_ms)
{
    vkmoe_layer *layer = w->layer;
    vkmoe_context *ctx = layer->ctx;
    if (!ctx->push_descriptors)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "--back-to-back: this device has no push descriptors, so a layer's "
                          "recordings may not share a command buffer");
    size_t row = w->params.dim * vkmoe_weight_bytes(w->params.io_type, 1);
    size_t bytes = (size_t)w->params.max_tokens * row;
    if (!w->stream_x.buffer) {
        VKMOE_TRY(vkmoe_buffer_create(ctx, bytes, VKMOE_MEMORY_DEVICE, &w->stream_x));
        VKMOE_TRY(vkmoe_buffer_create(ctx, bytes, VKMOE_MEMORY_DEVICE, &w->stream_y));
    }
    const void *x = w->x_io ? w->x_io : (const void *)w->x;
    VKMOE_TRY(vkmoe_buffer_write_rows(ctx, &w->stream_x, 0, x, 1, tokens * row, tokens * row));
    double *wall = malloc(iters * sizeof(double));
    if (!wall)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    vkmoe_status status = VKMOE_OK;
    for (uint32_t i = 0; i < warmup + iters && status == VKMOE_OK; i++) {
        VkCommandBuffer cmd;
        status = vkmoe_context_begin(ctx, &cmd);
        for (uint32_t f = 0; f < n && status == VKMOE_OK; f++)
            status = vkmoe_layer_record_forward(layer, cmd, tokens, w->stream_x.buffer, 0,
                                                w->stream_y.buffer, 0);
        double t0 = host_seconds();
        if (status == VKMOE_OK)
            status = vkmoe_context_submit_wait(ctx);
        vkmoe_timings t;
        if (status == VKMOE_OK)
            status = vkmoe_layer_timings(layer, &t);
        if (status == VKMOE_OK && i >= warmup) {
            keep_sample(samples, iters, i - warmup, &t);
            wall[i - warmup] = 1e3 * (host_seconds() - t0) / n;
        }
    }
    if (status == VKMOE_OK) {
        *stream_ms = workload_median(wall, iters);
        status =
            vkmoe_buffer_read(ctx, &w->stream_y, 0, w->y_io ? w->y_io : (void *)w->y, tokens * row);
    }
    free(wall);
    return status;
}

/* The cache's figures so far, or zeros for a layer without one (a budget
 * of every expert). */
static vkmoe_cache_stats cache_stats(const vkmoe_layer *layer)
{
    vkmoe_cache_stats s = {0};
    vkmoe_layer_cache_stats(layer, &s);
    return s;
}

/* Offload runs: each forward new inputs, through the layer and its
 * resident twin, whose outputs must match bit for bit. */
static vkmoe_status run_offload(workload *w, uint32_t tokens, uint32_t warmup, uint32_t iters,
                                double *samples, run_result *r)
{
    const vkmoe_layer_params *p = &w->params;
    size_t n = (size_t)tokens * p->dim, bytes = vkmoe_weight_bytes(p->io_type, n);
    double *resident_ms = malloc(iters * sizeof(double)), *cpu_ms = malloc(iters * sizeof(double));
    double *host_ms = malloc(iters * sizeof(double)); /* the layer's host experts, a forward */
    uint32_t counts[VKMOE_MAX_EXPERTS];
    uint64_t active = 0;
    vkmoe_cache_stats before = cache_stats(w->layer);
    vkmoe_status status =
        resident_ms && cpu_ms && host_ms ? VKMOE_OK : VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    r->offload = (offload_figures){.present = true,
                                   .bit_identical = true,
                                   .bit_checked = !p->cpu_experts && !p->cpu_cold_experts};
    for (uint32_t i = 0; i < warmup + iters && status == VKMOE_OK; i++) {
        if (i == warmup)
            before = cache_stats(w->layer);
        if (w->skew > 0 || w->trace)
            steer(w, tokens);
        else
            fixture_fill(w->x_next, n, 1.0f, SEED + 1000 + i, p->io_type);
        vkmoe_quantize(p->io_type, w->x_next, n, w->io_next, bytes);
        vkmoe_timings t, tr, tc;
        double host_before = cache_stats(w->layer).cpu_ms;
        status = timed_forward(w->layer, tokens, w->io_next, w->y_cached, &t);
        double host_forward_ms = cache_stats(w->layer).cpu_ms - host_before;
        if (status == VKMOE_OK)
            status = timed_forward(w->resident, tokens, w->io_next, w->y_resident, &tr);
        /* The host's sums are not the device's: a layer with host experts
         * is checked against the reference instead (workload_run). */
        if (status == VKMOE_OK && i >= warmup && r->offload.bit_checked)
            r->offload.bit_identical &= memcmp(w->y_cached, w->y_resident, bytes) == 0;
        tc = t;
        if (status == VKMOE_OK && w->cpu_twin)
            status = timed_forward(w->cpu_twin, tokens, w->io_next, w->y_resident, &tc);
        if (status == VKMOE_OK)
            status = vkmoe_layer_expert_counts(w->resident, counts, VKMOE_MAX_EXPERTS);
        if (status != VKMOE_OK || i < warmup)
            continue;
        keep_sample(samples, iters, i - warmup, &t);
        resident_ms[i - warmup] = tr.total_ms;
        cpu_ms[i - warmup] = tc.total_ms;
        host_ms[i - warmup] = host_forward_ms;
        for (uint32_t e = 0; e < p->experts; e++)
            active += counts[e] > 0;
    }
    vkmoe_cache_stats after = cache_stats(w->layer);
    uint64_t hits = after.hits - before.hits, misses = after.misses - before.misses;
    r->offload.budget_bytes = p->expert_budget_bytes;
    r->offload.slots = after.slots ? after.slots : p->experts;
    uint64_t needed = hits + misses + after.cpu_experts - before.cpu_experts;
    r->offload.hit_rate = needed ? (double)hits / needed : 1.0;
    r->offload.bytes_to_device = (double)(after.bytes_to_device - before.bytes_to_device) / iters;
    r->offload.rounds = after.slots ? (double)(after.rounds - before.rounds) / iters : 1.0;
    if (status == VKMOE_OK) {
        r->offload.resident_ms = workload_median(resident_ms, iters);
        r->offload.cpu_only_ms = workload_median(cpu_ms, iters);
    }
    if (status == VKMOE_OK)
        r->offload.cpu_expert_ms = workload_median(host_ms, iters);
    r->offload.cpu_slots = (double)(after.cpu_slots - before.cpu_slots) / iters;
    r->active_experts = (uint32_t)((active + iters / 2) / iters);
    free(resident_ms);
    free(cpu_ms);
    free(host_ms);
    return status;
}

vkmoe_status workload_run(workload *w, uint32_t tokens, uint32_t warmup, uint32_t iters,
                          uint32_t back_to_back, run_result *r)
{
    memset(r, 0, sizeof(*r));
    r->tokens = tokens;
    r->back_to_back = back_to_back > 1 ? back_to_back : 1;
    r->kernel = vkmoe_gemm_kernel_for(w->layer, tokens)->path;
    double *samples = malloc((size_t)iters * (VKMOE_STAGE_MAX + 1) * sizeof(double));
    if (!samples)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    vkmoe_status status =
        w->resident ? run_offload(w, tokens, warmup, iters, samples, r)
        : back_to_back > 1
            ? run_back_to_back(w, tokens, warmup, iters, back_to_back, samples, &r->stream_ms)
            : run_resident(w, tokens, warmup, iters, samples);
    /* Offload runs check against the reference once more, on its input. */
    if (status == VKMOE_OK && w->resident)
        status = w->x_io ? vkmoe_layer_forward(w->layer, tokens, w->x_io, w->y_io)
                         : vkmoe_layer_forward(w->layer, tokens, w->x, w->y);
    if (status == VKMOE_OK && w->y_io) /* the reference checks f32 values */
        status = vkmoe_dequantize(w->params.io_type, w->y_io, (size_t)tokens * w->params.dim, w->y);
    uint32_t counts[VKMOE_MAX_EXPERTS];
    if (status == VKMOE_OK)
        status = vkmoe_layer_expert_counts(w->layer, counts, VKMOE_MAX_EXPERTS);
    if (status == VKMOE_OK) {
        r->layer.ms = workload_median(samples, iters);
        for (uint32_t s = 0; s < VKMOE_STAGE_MAX; s++)
            r->stages[s].ms = workload_median(samples + (s + 1) * (size_t)iters, iters);
        uint32_t active = 0;
        for (uint32_t e = 0; e < w->params.experts; e++) {
            active += counts[e] > 0;
            if (counts[e] > r->largest_expert)
                r->largest_expert = counts[e];
        }
        if (!w->resident)
            r->active_experts = active;
        count_work(w, tokens, r->active_experts, r);
        r->dispatches = (uint32_t)w->layer->io.recorded.dispatches;
        r->barriers = (uint32_t)w->layer->io.recorded.barriers;
        verify(w, tokens, r);
    }
    free(samples);
    return status;
}

const vkmoe_layer_params *workload_params(const workload *w) { return &w->params; }

vkmoe_layer *workload_layer(const workload *w) { return w->layer; }

const void *workload_input(const workload *w) { return w->x_io ? w->x_io : w->x; }
