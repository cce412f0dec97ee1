/* vkmoe-run: run one MoE layer of a model file, or every one in order (a
 * smoke run of the whole model's MoE blocks), on hidden states from a .npy
 * file and write the output as .npy.
 *   vkmoe-run --model PATH (--layer N | --layers all) --input x.npy --output y.npy
 *             [--device N|NAME] [--gemm PATH] [--device-budget BYTES] [--cpu-experts N]
 *             [--huge-pages] [--shared-cache] [--decode] [--stats]
 * Exit status: 0 done (or --help), 1 a vkmoe or file error (message on
 * stderr), 2 bad usage. */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "npy.h"
#include "vkmoe.h"

typedef struct options {
    const char *model, *input, *output, *device;
    vkmoe_gemm_path gemm_path;
    uint64_t budget;     /* --device-budget: the experts' device bytes; 0: all */
    uint32_t cpu_layers; /* --cpu-experts: MoE layers whose experts run on the host */
    uint32_t layer;
    bool has_layer, all_layers, stats;
    bool huge_pages;   /* --huge-pages: vkmoe_context_params.host_huge_pages */
    bool shared_cache; /* --shared-cache: vkmoe_model_params.shared_cache */
    bool decode;       /* --decode: the input's rows one at a time */
} options;

/* The usage line: on stdout for --help (done: exit 0), on stderr after a
 * mistake (exit 2). parse_args returns -1 for "exit 0 now". */
static int usage(bool asked)
{
    fprintf(asked ? stdout : stderr,
            "usage: vkmoe-run --model PATH (--layer N | --layers all) --input x.npy --output y.npy "
            "[--device N|NAME] [--gemm auto|register|tiled|coopmat|gemv] "
            "[--device-budget BYTES[K|M|G]] [--cpu-experts N] [--huge-pages] [--shared-cache] "
            "[--decode] [--stats]\n");
    return asked ? -1 : 2;
}

static bool parse_layer(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (end == s || *end || v > 0xffffffffu || s[0] == '-')
        return false;
    *out = (uint32_t)v;
    return true;
}

/* Bytes, with an optional K, M or G (powers of 1024). */
static bool parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    const char *units = "KMG", *unit = *end ? strchr(units, *end) : NULL;
    if (end == s || s[0] == '-' || (*end && (!unit || end[1])))
        return false;
    for (const char *u = units; unit && u <= unit; u++)
        v = v > (~0ull >> 10) ? ~0ull : v << 10;
    *out = v;
    return v > 0;
}

/* The flags that take no value, and the option each sets. */
static const struct {
    const char *name;
    size_t option;
} switches[] = {
    {"--stats", offsetof(options, stats)},
    {"--huge-pages", offsetof(options, huge_pages)},
    {"--shared-cache", offsetof(options, shared_cache)},
    {"--decode", offsetof(options, decode)},
};

/* Set the option of switch `a`, if it is one. */
static bool set_switch(const char *a, options *o)
{
    for (size_t i = 0; i < sizeof(switches) / sizeof(switches[0]); i++)
        if (!strcmp(a, switches[i].name)) {
            *(bool *)((char *)o + switches[i].option) = true;
            return true;
        }
    return false;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(true);
        if (set_switch(a, o))
            continue;
        if (!v)
            return usage(false);
        if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--input"))
            o->input = v;
        else if (!strcmp(a, "--output"))
            o->output = v;
        else if (!strcmp(a, "--device"))
            o->device = v;
        else if (!strcmp(a, "--gemm") && vkmoe_gemm_path_parse(v, &o->gemm_path) == VKMOE_OK)
            ;
        else if (!strcmp(a, "--layer") && (o->has_layer = parse_layer(v, &o->layer)))
            ;
        else if (!strcmp(a, "--device-budget") && parse_bytes(v, &o->budget))
            ;
        else if (!strcmp(a, "--cpu-experts") && parse_layer(v, &o->cpu_layers))
            ;
        else if (!strcmp(a, "--layers") && !strcmp(v, "all"))
            o->all_layers = true;
        else
            return usage(false);
        i++;
    }
    return o->model && o->input && o->output && o->has_layer != o->all_layers ? 0 : usage(false);
}

/* The layer's expert cache figures as JSON (after a comma), where it has
 * one: the hit rate of a budget (--device-budget) over every forward. */
static void print_cache(const vkmoe_layer *layer)
{
    vkmoe_cache_stats s;
    if (vkmoe_layer_cache_stats(layer, &s) != VKMOE_OK)
        return;
    printf(", \"cache\": {\"slots\": %u, \"forwards\": %llu, \"hits\": %llu, \"misses\": %llu, "
           "\"prefetch_hits\": %llu, \"bytes_to_device\": %llu, \"cpu_experts\": %llu}",
           s.slots, (unsigned long long)s.forwards, (unsigned long long)s.hits,
           (unsigned long long)s.misses, (unsigned long long)s.prefetch_hits,
           (unsigned long long)s.bytes_to_device, (unsigned long long)s.cpu_experts);
}

/* The load statistics of the layer's last forward as JSON, after `before`,
 * and its cache's figures where it has one. */
static void print_stats(const vkmoe_layer *layer, uint32_t experts, const char *before)
{
    uint32_t *routed = malloc(experts * sizeof(*routed)), *dropped = malloc(experts * 4);
    double *mean = malloc(experts * sizeof(*mean));
    vkmoe_load_stats s;
    if (routed && dropped && mean &&
        vkmoe_layer_load_stats(layer, &s, routed, dropped, mean, experts) == VKMOE_OK) {
        printf("%s{\"tokens\": %u, \"dropped\": %llu, \"balance_loss\": %.9g, \"z_loss\": %.9g,\n"
               " \"experts\": [",
               before, s.tokens, (unsigned long long)s.dropped, s.balance_loss, s.z_loss);
        for (uint32_t e = 0; e < experts; e++)
            printf("%s{\"routed\": %u, \"dropped\": %u, \"mean_probability\": %.9g}",
                   e ? ",\n  " : "", routed[e], dropped[e], mean[e]);
        printf("]");
        print_cache(layer);
        printf("}");
    }
    free(routed);
    free(dropped);
    free(mean);
}

static bool vkmoe_ok(vkmoe_status status)
{
    if (status != VKMOE_OK)
        fprintf(stderr, "vkmoe-run: %s (%s)\n", vkmoe_last_error(), vkmoe_status_string(status));
    return status == VKMOE_OK;
}

/* The forwards of one layer's input: all its rows at once, or with
 * --decode one row at a time (a token at a time, as a model decodes). */
static vkmoe_status forward_rows(const options *o, vkmoe_layer *layer, uint32_t tokens,
                                 uint32_t dim, const float *x, float *y)
{
    if (!o->decode)
        return vkmoe_layer_forward(layer, tokens, x, y);
    vkmoe_status status = VKMOE_OK;
    for (uint32_t t = 0; t < tokens && status == VKMOE_OK; t++)
        status = vkmoe_layer_forward(layer, 1, x + (size_t)t * dim, y + (size_t)t * dim);
    return status;
}

/* Load, check the input's width, run; reports its own failures. */
static bool run(const options *o, vkmoe_context *ctx, const float *x, uint32_t tokens, uint32_t dim,
                float **y)
{
    vkmoe_model_params mp = {.max_tokens = o->decode ? 1 : tokens,
                             .statistics = o->stats,
                             .gemm_path = o->gemm_path,
                             .expert_budget_bytes = o->budget,
                             .cpu_expert_layers = o->cpu_layers};
    vkmoe_layer *layer;
    if (!vkmoe_ok(vkmoe_layer_from_file(ctx, o->model, o->layer, &mp, &layer)))
        return false;
    vkmoe_layer_params p;
    vkmoe_layer_params_of(layer, &p);
    bool ok = p.dim == dim;
    if (!ok)
        fprintf(stderr, "vkmoe-run: %s has width %u, the layer's is %u\n", o->input, dim, p.dim);
    else
        fprintf(stderr, "vkmoe-run: layer %u: dim %u, ffn %u, %u experts, top-%u, shared ffn %u\n",
                o->layer, p.dim, p.ffn_dim, p.experts, p.top_k, p.shared_ffn_dim);
    *y = ok ? malloc((size_t)tokens * dim * sizeof(float)) : NULL;
    ok = ok &&
         vkmoe_ok(*y ? forward_rows(o, layer, tokens, dim, x, *y) : VKMOE_ERROR_OUT_OF_HOST_MEMORY);
    if (ok && o->stats) {
        print_stats(layer, p.experts, "");
        printf("\n");
    }
    vkmoe_layer_destroy(&layer);
    return ok;
}

/* A progress bar on stderr, redrawn at each whole percent. */
static bool show_progress(void *user_data, uint64_t done, uint64_t total)
{
    int *shown = user_data;
    int percent = total ? (int)(100 * done / total) : 100;
    if (percent == *shown)
        return true;
    *shown = percent;
    char bar[41];
    memset(bar, '#', (size_t)percent * 40 / 100);
    memset(bar + percent * 40 / 100, '.', 40 - (size_t)percent * 40 / 100);
    bar[40] = '\0';
    fprintf(stderr, "\rvkmoe-run: uploading [%s] %3d%% of %.2f GB", bar, percent, total / 1e9);
    if (done == total)
        fprintf(stderr, "\n");
    return true;
}

/* Wall-clock seconds, for the chain's rate (a smoke run's, not a bench's:
 * one pass, prefetches and any statistics printing included). */
static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* `tokens` rows through every MoE layer of the model in order, each
 * layer's output the next one's input, from x into y (x is overwritten:
 * the rows go through x and y by turns); with `stats`, each layer's
 * statistics as they come, a JSON array. *ran: the layers that ran. */
static bool run_chain(const options *o, vkmoe_model *model, float *x, float *y, uint32_t tokens,
                      uint32_t dim, bool stats, uint32_t *ran)
{
    uint32_t count = vkmoe_model_layer_count(model);
    bool ok = true;
    *ran = 0;
    for (uint32_t i = 0; ok && i < count; i++) {
        vkmoe_layer *layer = vkmoe_model_layer(model, i);
        if (!layer)
            continue;
        vkmoe_layer_params p;
        vkmoe_layer_params_of(layer, &p);
        ok = p.dim == dim;
        if (!ok)
            fprintf(stderr, "vkmoe-run: %s has width %u, layer %u's is %u\n", o->input, dim, i,
                    p.dim);
        /* y of one layer is x of the next: run from whichever holds it */
        const float *in = *ran % 2 == 0 ? x : y;
        float *out = *ran % 2 == 0 ? y : x;
        /* With an expert budget, the next MoE layer's likely experts are
         * copied in while this one runs (nothing happens without a cache
         * or a copy queue). */
        vkmoe_layer *next = NULL;
        for (uint32_t j = i + 1; !next && j < count; j++)
            next = vkmoe_model_layer(model, j);
        if (ok && next && o->budget)
            ok = vkmoe_ok(vkmoe_layer_prefetch(next, tokens, in));
        ok = ok && vkmoe_ok(vkmoe_layer_forward(layer, tokens, in, out));
        if (ok && stats) {
            char before[48];
            snprintf(before, sizeof(before), "%s{\"layer\": %u, \"stats\": ", *ran ? ",\n " : "[",
                     i);
            print_stats(layer, p.experts, before);
            printf("}");
        }
        *ran += ok;
    }
    if (ok && *ran % 2 == 0) /* the last output is in x */
        memcpy(y, x, (size_t)tokens * dim * sizeof(float));
    if (ok && stats)
        printf("]\n");
    return ok;
}

/* Every MoE layer of the model in order on the input: all its rows at
 * once, or with --decode a row at a time, each through every layer before
 * the next (as a model decodes); with --stats a JSON array of the layers'
 * statistics (with --decode, of the last row's forwards, and the caches'
 * figures over all of them). */
static bool run_model(const options *o, vkmoe_context *ctx, float *x, uint32_t tokens, uint32_t dim,
                      float **y)
{
    int shown = -1;
    vkmoe_model_params mp = {.max_tokens = o->decode ? 1 : tokens,
                             .statistics = o->stats,
                             .gemm_path = o->gemm_path,
                             .expert_budget_bytes = o->budget,
                             .cpu_expert_layers = o->cpu_layers,
                             .shared_cache = o->shared_cache,
                             .progress = show_progress,
                             .progress_user_data = &shown};
    vkmoe_model *model;
    if (!vkmoe_ok(vkmoe_model_open(ctx, o->model, &mp, &model)))
        return false;
    *y = malloc((size_t)tokens * dim * sizeof(float));
    float *row = o->decode ? malloc(2 * (size_t)dim * sizeof(float)) : NULL;
    bool ok = vkmoe_ok(*y && (row || !o->decode) ? VKMOE_OK : VKMOE_ERROR_OUT_OF_HOST_MEMORY);
    uint32_t ran = 0;
    double start = seconds();
    if (ok && !o->decode)
        ok = run_chain(o, model, x, *y, tokens, dim, o->stats, &ran);
    for (uint32_t t = 0; ok && o->decode && t < tokens; t++) {
        memcpy(row, x + (size_t)t * dim, dim * sizeof(float));
        ok = run_chain(o, model, row, row + dim, 1, dim, o->stats && t + 1 == tokens, &ran);
        memcpy(*y + (size_t)t * dim, row + dim, dim * sizeof(float));
    }
    double took = seconds() - start;
    if (ok)
        fprintf(stderr, "vkmoe-run: ran %u MoE layers of %u%s in %.3f s (%.1f tokens/s)\n", ran,
                vkmoe_model_layer_count(model), o->decode ? ", a token at a time" : "", took,
                tokens / took);
    free(row);
    vkmoe_model_destroy(&model);
    return ok;
}

/* The validation layer's warnings and errors, where VKMOE_VALIDATION=1 turns
 * it on; the library's own messages are reported where calls fail. */
static void print_validation(void *user, vkmoe_log_level level, const char *message)
{
    (void)user;
    (void)level;
    if (strncmp(message, "validation: ", 12) == 0)
        fprintf(stderr, "vkmoe-run: %s\n", message);
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    float *x = NULL, *y = NULL;
    uint32_t tokens, dim;
    char error[256];
    if (!npy_read(o.input, &x, &tokens, &dim, error, sizeof(error))) {
        fprintf(stderr, "vkmoe-run: %s: %s\n", o.input, error);
        return 1;
    }
    vkmoe_context_params cp = {.device = o.device,
                               .host_huge_pages = o.huge_pages,
                               .log = print_validation,
                               .log_level = VKMOE_LOG_WARNING};
    vkmoe_context *ctx = NULL;
    rc = vkmoe_ok(vkmoe_context_create(&cp, &ctx)) &&
                 (o.all_layers ? run_model(&o, ctx, x, tokens, dim, &y)
                               : run(&o, ctx, x, tokens, dim, &y))
             ? 0
             : 1;
    if (rc == 0 && !npy_write(o.output, y, tokens, dim)) {
        fprintf(stderr, "vkmoe-run: cannot write %s\n", o.output);
        rc = 1;
    }
    uint32_t validation_errors = vkmoe_context_validation_errors(ctx);
    vkmoe_context_destroy(&ctx);
    if (validation_errors) {
        fprintf(stderr, "vkmoe-run: %u validation error(s) (VKMOE_VALIDATION=1)\n",
                validation_errors);
        rc = 1;
    }
    free(x);
    free(y);
    return rc;
}
