/* vkmoe-shader-stats: every pipeline vkmoe creates for a set of layer
 * configs (every GEMM path, weight type and activation, at 32- and 64-lane
 * column layouts), compiled by the device's own compiler, with the driver's
 * statistics: registers, spills, shared memory and waves per SIMD.
 *
 * Made for RADV's null devices (RADV_FORCE_FAMILY=navi21 and so on), which
 * compile with AMD's production compiler but run nothing: ./dev
 * shader-stats fetches Mesa 25 and runs this on each. The contexts are
 * compile-only, so it runs on any device that offers
 * VK_KHR_pipeline_executable_properties. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h" /* first: it brings volk.h, which must come before vulkan.h */

#include "params.h"
#include "peak.h"
#include "pipelines.h"

/* What a decode kernel (the GEMV path) and a prefill kernel (the tiled and
 * matrix-core paths) need at the least: decode is bandwidth-bound and
 * hides memory latency only with many waves in flight (issue 15's targets). */
#define DECODE_MIN_WAVES 8u
#define PREFILL_MIN_WAVES 4u

/* The layer every config starts from: widths that every weight type takes
 * (multiples of 256), a real prefill batch. */
#define DIM 512u
#define FFN 768u
#define EXPERTS 8u
#define TOP_K 2u
#define MAX_TOKENS 512u

typedef struct stats_options {
    const char *device;
    bool json, check, all;     /* all: every statistic the driver reports, by its names */
    bool require_matrix_cores; /* a device that must compile the matrix-core path */
    const char *isa;           /* only the pipelines whose names hold this, each's code too */
} stats_options;

/* One pipeline's figures. */
typedef struct figures {
    uint64_t vgprs, sgprs, spilled_vgprs, spilled_sgprs, lds_bytes, waves;
} figures;

typedef struct report {
    const stats_options *o;
    VkPipeline *seen; /* pipelines reported already: the context shares them */
    size_t seen_count;
    unsigned printed, misses, unchecked; /* unchecked: no figures we know the names of */
    unsigned paths;                      /* bit p: path p compiled */
} report;

static const char *const statistic_names[] = {"VGPRs",         "SGPRs",    "Spilled VGPRs",
                                              "Spilled SGPRs", "LDS size", "Subgroups per SIMD"};

static bool read_figures(vkmoe_context *ctx, VkPipeline pipeline, figures *f)
{
    uint64_t *fields[] = {&f->vgprs,         &f->sgprs,     &f->spilled_vgprs,
                          &f->spilled_sgprs, &f->lds_bytes, &f->waves};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(fields); i++)
        if (vkmoe_pipeline_statistic(ctx, pipeline, statistic_names[i], fields[i]) != VKMOE_OK)
            return false;
    return true;
}

static bool seen_before(report *r, VkPipeline pipeline)
{
    for (size_t i = 0; i < r->seen_count; i++)
        if (r->seen[i] == pipeline)
            return true;
    VkPipeline *grown = realloc(r->seen, (r->seen_count + 1) * sizeof(*grown));
    if (!grown)
        return true; /* out of memory: report it no further */
    r->seen = grown;
    r->seen[r->seen_count++] = pipeline;
    return false;
}

/* The targets a pipeline misses, as words; empty when it meets them. */
static void misses_of(const figures *f, const char *kind, char *out, size_t size)
{
    out[0] = '\0';
    if (f->spilled_vgprs || f->spilled_sgprs)
        snprintf(out, size, "spills");
    unsigned minimum = !strcmp(kind, "decode")    ? DECODE_MIN_WAVES
                       : !strcmp(kind, "prefill") ? PREFILL_MIN_WAVES
                                                  : 0;
    if (f->waves < minimum)
        snprintf(out + strlen(out), size - strlen(out), "%s%llu waves < %u", out[0] ? ", " : "",
                 (unsigned long long)f->waves, minimum);
}

/* A driver without RADV's statistics (NVIDIA's, Intel's): whatever it
 * reports, under its own names, held to no target (it is not known what
 * they mean) but counted apart. */
static void print_driver_statistics(report *r, vkmoe_context *ctx, VkPipeline pipeline,
                                    const char *name, const char *kind)
{
    vkmoe_statistic all[VKMOE_MAX_STATISTICS];
    uint32_t count = VKMOE_MAX_STATISTICS;
    if (vkmoe_pipeline_statistics(ctx, pipeline, all, &count) != VKMOE_OK) {
        fprintf(stderr, "vkmoe-shader-stats: %s: %s\n", name, vkmoe_last_error());
        r->misses++;
        return;
    }
    if (r->o->json)
        printf("%s\n    {\"name\": \"%s\", \"kind\": \"%s\", \"statistics\": {",
               r->printed ? "," : "", name, kind);
    else
        printf("%-46s %-7s", name, kind);
    for (uint32_t i = 0; i < count; i++) {
        if (r->o->json)
            printf("%s\"%s\": %.10g", i ? ", " : "", all[i].name, all[i].value);
        else
            printf(" %s=%.10g", all[i].name, all[i].value);
    }
    printf(r->o->json ? "}}" : "\n");
    r->printed++;
    r->unchecked++;
}

static void print_figures(report *r, vkmoe_context *ctx, VkPipeline pipeline, const char *name,
                          const char *kind)
{
    figures f;
    if (r->o->all || !read_figures(ctx, pipeline, &f)) {
        print_driver_statistics(r, ctx, pipeline, name, kind);
        return;
    }
    char misses[64];
    misses_of(&f, kind, misses, sizeof(misses));
    r->misses += misses[0] != '\0';
    if (r->o->json) {
        printf("%s\n    {\"name\": \"%s\", \"kind\": \"%s\", \"vgprs\": %llu, \"sgprs\": %llu, "
               "\"spilled_vgprs\": %llu, \"spilled_sgprs\": %llu, \"lds_bytes\": %llu, "
               "\"waves_per_simd\": %llu}",
               r->printed ? "," : "", name, kind, (unsigned long long)f.vgprs,
               (unsigned long long)f.sgprs, (unsigned long long)f.spilled_vgprs,
               (unsigned long long)f.spilled_sgprs, (unsigned long long)f.lds_bytes,
               (unsigned long long)f.waves);
    } else {
        printf("%-46s %-7s %5llu %5llu %6llu %6llu %7llu %5llu  %s\n", name, kind,
               (unsigned long long)f.vgprs, (unsigned long long)f.sgprs,
               (unsigned long long)f.spilled_vgprs, (unsigned long long)f.spilled_sgprs,
               (unsigned long long)f.lds_bytes, (unsigned long long)f.waves, misses);
    }
    r->printed++;
}

/* A pipeline's figures (and with --isa its code), once. */
static void print_pipeline(report *r, vkmoe_context *ctx, VkPipeline pipeline, const char *name,
                           const char *kind)
{
    if (!pipeline || (r->o->isa && !strstr(name, r->o->isa)) || seen_before(r, pipeline))
        return;
    print_figures(r, ctx, pipeline, name, kind);
    char *isa = NULL;
    if (r->o->isa && vkmoe_pipeline_isa(ctx, pipeline, &isa) != VKMOE_OK)
        fprintf(stderr, "vkmoe-shader-stats: %s: %s\n", name, vkmoe_last_error());
    if (isa)
        printf("%s\n", isa);
    free(isa);
}

/* One kernel's GEMM pipelines, named stage/path/weights/activation/lanes as
 * shared/BENCH.md spells them, then `suffix` (the one-token kernel's GEMV
 * pipelines of one row a pass: "/rows1"; its others are decode's, shown
 * once). */
static void print_kernel(report *r, vkmoe_context *ctx, const vkmoe_layer_params *p,
                         const vkmoe_gemm_kernel *k, uint32_t lanes, const char *suffix)
{
    /* BENCH.md: a matrix-core pipeline on the KHR extension says so. */
    bool khr = k->path == VKMOE_GEMM_COOPMAT && ctx->cooperative_matrix_khr;
    const char *path = khr ? "khr_coopmat" : vkmoe_gemm_path_name(k->path);
    /* GPUs decode with GEMV and prefill with the tiled and matrix-core
     * paths; the register path is the CPU devices' (AUTO runs it on a GPU
     * only without subgroup arithmetic), held to no GPU target. */
    const char *kind = k->path == VKMOE_GEMM_GEMV       ? "decode"
                       : k->path == VKMOE_GEMM_REGISTER ? "other"
                                                        : "prefill";
    vkmoe_stage stages[] = {VKMOE_STAGE_GEMM_UP, VKMOE_STAGE_GEMM_DOWN};
    VkPipeline pipelines[] = {k->up, k->down};
    for (size_t i = 0; i < 2; i++) {
        char name[128];
        vkmoe_weight_type type =
            stages[i] == VKMOE_STAGE_GEMM_UP ? p->weight_type : p->down_weight_type;
        snprintf(name, sizeof(name), "%s/%s/%s/%s/lanes%u%s", vkmoe_stage_name(stages[i]), path,
                 vkmoe_weight_type_name(type), vkmoe_activation_name(p->activation), lanes, suffix);
        print_pipeline(r, ctx, pipelines[i], name, kind);
    }
    /* The router's logits of the kernel's forwards: held to its path's
     * target, but for the register path's. */
    char name[128];
    snprintf(name, sizeof(name), "router_logits/%s/lanes%u%s", vkmoe_gemm_path_name(k->logits_path),
             lanes, suffix);
    print_pipeline(r, ctx, k->logits, name, k->logits_path == k->path ? kind : "other");
}

/* The layer's GEMM kernels and (once) the other stages' pipelines. */
static void print_layer(report *r, vkmoe_context *ctx, const vkmoe_compiled_layer *layer,
                        uint32_t lanes)
{
    print_kernel(r, ctx, &layer->params, &layer->gemm.decode, lanes, "");
    print_kernel(r, ctx, &layer->params, &layer->gemm.prefill, lanes, "");
    print_kernel(r, ctx, &layer->params, &layer->gemm.one_token, lanes, "/rows1");
    for (uint32_t s = 0; s < VKMOE_SHADER_STAGES; s++) {
        if (s == VKMOE_SHADER_GEMM_UP || s == VKMOE_SHADER_GEMM_DOWN)
            continue;
        char name[128];
        snprintf(name, sizeof(name), "%s/lanes%u", vkmoe_shader_name((vkmoe_shader)s), lanes);
        print_pipeline(r, ctx, layer->pipelines[s], name, "other");
    }
}

/* Every path, weight type and activation on one context; a config the
 * device refuses (a path it lacks) is said once on stderr. The GPUs' paths
 * first, so that a run cut short (./dev gpu-check gives NVIDIA's compiler
 * 100 s: stop 46's reached only the register path and a few GEMV
 * pipelines) has what matters. */
static void print_configs(report *r, vkmoe_context *ctx, uint32_t lanes)
{
    static const vkmoe_gemm_path paths[] = {VKMOE_GEMM_GEMV, VKMOE_GEMM_TILED, VKMOE_GEMM_COOPMAT,
                                            VKMOE_GEMM_REGISTER};
    _Static_assert(VKMOE_ARRAY_SIZE(paths) == VKMOE_GEMM_GEMV, "every path but AUTO");
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(paths); i++)
        for (int type = 0, path = (int)paths[i]; vkmoe_weight_type_name((vkmoe_weight_type)type);
             type++)
            for (int act = 0; vkmoe_activation_name((vkmoe_activation)act); act++) {
                vkmoe_layer_params p = {.dim = DIM,
                                        .ffn_dim = FFN,
                                        .experts = EXPERTS,
                                        .top_k = TOP_K,
                                        .max_tokens = MAX_TOKENS,
                                        .weight_type = (vkmoe_weight_type)type,
                                        .activation = (vkmoe_activation)act,
                                        .gemm_path = (vkmoe_gemm_path)path};
                vkmoe_compiled_layer layer;
                vkmoe_status status = vkmoe_layer_compile(ctx, &p, &layer);
                if (status == VKMOE_OK) {
                    print_layer(r, ctx, &layer, lanes);
                    r->paths |= 1u << path;
                } else if (type == 0 && act == 0)
                    fprintf(stderr, "vkmoe-shader-stats: %s path, lanes %u: %s\n",
                            vkmoe_gemm_path_name((vkmoe_gemm_path)path), lanes, vkmoe_last_error());
            }
}

/* The bench's matrix-core peak (bench/peak.c): on the KHR extension a
 * module rewritten as the GEMMs' are, which must compile as they must. */
static void print_matrix_peak(report *r, vkmoe_context *ctx)
{
    VkPipeline pipeline = VK_NULL_HANDLE;
    if (peak_matrix_pipeline(ctx, &pipeline) != VKMOE_OK) {
        fprintf(stderr, "vkmoe-shader-stats: the bench's matrix-core peak: %s\n",
                vkmoe_last_error());
        r->misses++;
        return;
    }
    print_pipeline(r, ctx, pipeline,
                   ctx->cooperative_matrix_khr ? "bench/peak_coopmat/khr" : "bench/peak_coopmat",
                   "other");
    ctx->vk.vkDestroyPipeline(ctx->device, pipeline, NULL);
}

static int usage(void)
{
    fprintf(stderr, "usage: vkmoe-shader-stats [--device N|NAME] [--json] [--check] "
                    "[--all-statistics] [--require-matrix-cores] [--isa NAME]\n"
                    "  every pipeline vkmoe creates, with the driver's statistics (the device\n"
                    "  must offer VK_KHR_pipeline_executable_properties); --check: exit 1 when a\n"
                    "  pipeline spills, or a decode kernel has fewer than 8 waves per SIMD, or a\n"
                    "  prefill kernel fewer than 4; --all-statistics: every statistic the driver\n"
                    "  reports, by its own names (what drivers other than RADV give);\n"
                    "  --require-matrix-cores: a miss too if the matrix-core path is refused;\n"
                    "  --isa NAME: only the pipelines whose names hold NAME, each followed by\n"
                    "  the driver's final code (RADV: ACO's disassembly); not with --json\n");
    return 2;
}

int main(int argc, char **argv)
{
    stats_options o = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            o.json = true;
        else if (!strcmp(argv[i], "--check"))
            o.check = true;
        else if (!strcmp(argv[i], "--all-statistics"))
            o.all = true;
        else if (!strcmp(argv[i], "--require-matrix-cores"))
            o.require_matrix_cores = true;
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            o.device = argv[++i];
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc)
            o.isa = argv[++i];
        else
            return usage();
    }
    if (o.isa && o.json)
        return usage();
    report r = {.o = &o};
    vkmoe_device_info info = {0};
    const uint32_t layouts[] = {32, 64};
    for (size_t l = 0; l < VKMOE_ARRAY_SIZE(layouts); l++) {
        vkmoe_context_params params = {.device = o.device};
        vkmoe_context_options options = {.gemm_lanes = layouts[l],
                                         .pipeline_statistics = true,
                                         .pipeline_isa = o.isa != NULL,
                                         .compile_only = true};
        vkmoe_context *ctx = NULL;
        if (vkmoe_context_create_with(&params, &options, &ctx) != VKMOE_OK) {
            fprintf(stderr, "vkmoe-shader-stats: %s\n", vkmoe_last_error());
            free(r.seen);
            return 1;
        }
        if (l == 0) {
            vkmoe_context_device_info(ctx, &info);
            if (o.json)
                printf("{\"name\": \"%s\", \"driver\": \"%s\", \"pipelines\": [", info.name,
                       info.driver);
            else
                printf("device %s (%s)\n%-46s %-7s %5s %5s %6s %6s %7s %5s\n", info.name,
                       info.driver, "pipeline", "kind", "VGPRs", "SGPRs", "spillV", "spillS",
                       "LDS B", "waves");
        }
        print_configs(&r, ctx, layouts[l]);
        if (l == 0 && ctx->cooperative_matrix)
            print_matrix_peak(&r, ctx);
        free(r.seen); /* a new context: new pipelines */
        r.seen = NULL;
        r.seen_count = 0;
        vkmoe_context_destroy(&ctx);
    }
    if (o.json)
        printf("\n]}\n");
    if (o.require_matrix_cores && !(r.paths & 1u << VKMOE_GEMM_COOPMAT)) {
        fprintf(stderr, "vkmoe-shader-stats: %s compiled no matrix-core pipeline\n", info.name);
        r.misses++;
    }
    fprintf(stderr, "vkmoe-shader-stats: %s: %u pipelines, %u miss the targets, %u unchecked\n",
            info.name, r.printed, r.misses, r.unchecked);
    return o.check && r.misses ? 1 : 0;
}
