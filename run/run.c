/* vkmoe-run: run one MoE layer of a model file on hidden states from a
 * .npy file and write the layer's output as .npy.
 *   vkmoe-run --model PATH --layer N --input x.npy --output y.npy
 *             [--device N|NAME] [--gemm PATH] [--stats]
 * Exit status: 0 done (or --help), 1 a vkmoe or file error (message on
 * stderr), 2 bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"
#include "vkmoe.h"

typedef struct options {
    const char *model, *input, *output, *device;
    vkmoe_gemm_path gemm_path;
    uint32_t layer;
    bool has_layer, stats;
} options;

/* The usage line: on stdout for --help (done: exit 0), on stderr after a
 * mistake (exit 2). parse_args returns -1 for "exit 0 now". */
static int usage(bool asked)
{
    fprintf(asked ? stdout : stderr,
            "usage: vkmoe-run --model PATH --layer N --input x.npy --output y.npy "
            "[--device N|NAME] [--gemm auto|register|tiled|coopmat|gemv] [--stats]\n");
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

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(true);
        if (!strcmp(a, "--stats")) {
            o->stats = true;
            continue;
        }
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
        else
            return usage(false);
        i++;
    }
    return o->model && o->input && o->output && o->has_layer ? 0 : usage(false);
}

static void print_stats(const vkmoe_layer *layer, uint32_t experts)
{
    uint32_t *routed = malloc(experts * sizeof(*routed)), *dropped = malloc(experts * 4);
    double *mean = malloc(experts * sizeof(*mean));
    vkmoe_load_stats s;
    if (routed && dropped && mean &&
        vkmoe_layer_load_stats(layer, &s, routed, dropped, mean, experts) == VKMOE_OK) {
        printf("{\"tokens\": %u, \"dropped\": %llu, \"balance_loss\": %.9g, \"z_loss\": %.9g,\n"
               " \"experts\": [",
               s.tokens, (unsigned long long)s.dropped, s.balance_loss, s.z_loss);
        for (uint32_t e = 0; e < experts; e++)
            printf("%s{\"routed\": %u, \"dropped\": %u, \"mean_probability\": %.9g}",
                   e ? ",\n  " : "", routed[e], dropped[e], mean[e]);
        printf("]}\n");
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

/* Load, check the input's width, run; reports its own failures. */
static bool run(const options *o, vkmoe_context *ctx, const float *x, uint32_t tokens, uint32_t dim,
                float **y)
{
    vkmoe_model_params mp = {
        .max_tokens = tokens, .statistics = o->stats, .gemm_path = o->gemm_path};
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
         vkmoe_ok(*y ? vkmoe_layer_forward(layer, tokens, x, *y) : VKMOE_ERROR_OUT_OF_HOST_MEMORY);
    if (ok && o->stats)
        print_stats(layer, p.experts);
    vkmoe_layer_destroy(&layer);
    return ok;
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
    vkmoe_context_params cp = {.device = o.device};
    vkmoe_context *ctx = NULL;
    rc = vkmoe_ok(vkmoe_context_create(&cp, &ctx)) && run(&o, ctx, x, tokens, dim, &y) ? 0 : 1;
    if (rc == 0 && !npy_write(o.output, y, tokens, dim)) {
        fprintf(stderr, "vkmoe-run: cannot write %s\n", o.output);
        rc = 1;
    }
    vkmoe_context_destroy(&ctx);
    free(x);
    free(y);
    return rc;
}
