/* vkmoe-bench: what one MoE layer does on this device. Flags and JSON are a
 * public interface (shared/BENCH.md): add, never rename. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_peak.h"
#ifdef VKMOE_BENCH_MPI
#include "mpi_runs.h"
#endif
#include "params.h"
#include "peak.h"
#include "reference.h"
#include "vkmoe.h"
#include "workload.h"

/* Rows one run may have (--tokens). */
#define MAX_TOKEN_COUNTS 32

typedef struct options {
    const char *preset;
    double scale;
    uint32_t dim, ffn, experts, top_k;
    uint32_t tokens[MAX_TOKEN_COUNTS];
    uint32_t token_count;
    vkmoe_weight_type weights, io;
    vkmoe_gemm_path gemm_path;
    const char *device;
    uint32_t warmup, iters;
    uint32_t back_to_back; /* --back-to-back: forwards a timed submission records (1: one) */
    bool verify, json, list_presets;
    /* --device-budget: bytes, or a share of the experts' bytes (budget_percent > 0) */
    uint64_t budget_bytes;
    double budget_percent;
    double routing_skew; /* --routing-skew; 0: the random router's routing */
    const char *trace;   /* --trace: recorded expert ids */
    bool cold_on_cpu;    /* --cpu-cold-experts */
    bool huge_pages;     /* --huge-pages */
    uint32_t cpu_layers; /* --cpu-experts: the bench's one layer is the first */
    vkmoe_cache_policy cache_policy;
    bool expert_parallel;   /* --expert-parallel, under mpirun */
    const char *placement;  /* --placement FILE */
    uint32_t micro_batches; /* --micro-batches N */
} options;

typedef struct preset {
    const char *name;
    const char *model;
    const char *family; /* vkmoe_layer_params_family */
    uint32_t dim, ffn, experts, top_k, shared_ffn;
} preset;

/* Real models' MoE blocks, with their config.json sizes. */
static const preset presets[] = {
    {"mixtral-8x7b", "Mixtral-8x7B", "mixtral", 4096, 14336, 8, 2, 0},
    {"qwen3-30b-a3b", "Qwen3-30B-A3B", "qwen3-moe", 2048, 768, 128, 8, 0},
    {"qwen1.5-moe-a2.7b", "Qwen1.5-MoE-A2.7B", "qwen2-moe", 2048, 1408, 60, 4, 5632},
    {"deepseek-v3", "DeepSeek-V3", "deepseek-v3", 7168, 2048, 256, 8, 2048},
    {"olmoe-1b-7b", "OLMoE-1B-7B", "olmoe", 2048, 1024, 64, 8, 0},
    {"switch-base-128", "Switch-base-128", "switch", 768, 3072, 128, 1, 0},
    {"gpt-oss-20b", "GPT-OSS-20B", "gpt-oss", 2880, 2880, 32, 4, 0},
    {"gpt-oss-120b", "GPT-OSS-120B", "gpt-oss", 2880, 2880, 128, 4, 0},
    {"glm-4.5-air", "GLM-4.5-Air", "glm4-moe", 4096, 1408, 128, 8, 1408},
    {"qwen3-next-80b-a3b", "Qwen3-Next-80B-A3B", "qwen3-next", 2048, 512, 512, 10, 512},
    {"minimax-m2", "MiniMax-M2", "minimax-m2", 3072, 1536, 256, 8, 0},
    {"kimi-k2", "Kimi-K2", "kimi-k2", 7168, 2048, 384, 8, 2048},
    {"granite-moe-3b", "Granite-3.0-3B-A800M", "granite-moe", 1536, 512, 40, 8, 0},
    {"ernie-4.5-21b-a3b", "ERNIE-4.5-21B-A3B", "ernie-4.5-moe", 2560, 1536, 64, 6, 3072},
    {"llama4-scout", "Llama-4-Scout-17B-16E", "llama4", 5120, 8192, 16, 1, 8192},
};

/* The hand-shaped layer without --preset: Mixtral's routing at a size
 * every device holds. */
static const preset default_layer = {NULL, NULL, "mixtral", 1024, 1536, 8, 2, 0};

/* The library's names of every weight type and GEMM path, comma-separated,
 * so that the help lists what the library has, not what it had. */
static const char *names_of(const char *(*name)(int), char *list, size_t size)
{
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; name(i) && used < size; i++)
        used += (size_t)snprintf(list + used, size - used, "%s%s", i ? ", " : "", name(i));
    return list;
}

static const char *weight_type_name(int type)
{
    return vkmoe_weight_type_name((vkmoe_weight_type)type);
}

static const char *gemm_path_name(int path) { return vkmoe_gemm_path_name((vkmoe_gemm_path)path); }

static void usage(FILE *out)
{
    char weights[160], paths[160];
    fprintf(
        out,
        "usage: vkmoe-bench [options]\n"
        "  --preset NAME         a real model's MoE layer (--list-presets)\n"
        "  --scale S             multiply dim, ffn and the shared width by S in (0, 1]\n"
        "  --dim D --ffn F --experts E --topk K   shape by hand\n"
        "  --tokens LIST         token counts, e.g. 1,8,64,512 (default 1,64,256)\n"
        "  --weights TYPE        %s (default f16)\n"
        "  --io TYPE             x and y: f32, f16, bf16 (default f32)\n"
        "  --gemm PATH           expert GEMM path: %s (default auto)\n"
        "  --device N|NAME       device index or name substring\n"
        "  --device-budget B     device memory for the experts: bytes (512M, 4G) or a\n"
        "                        share of the experts' bytes (50%%); the rest in host memory\n"
        "  --routing-skew S      routing with locality: Zipf exponent S over experts, drifting\n"
        "  --trace FILE          routing from recorded expert ids: a token a line, k ids\n"
        "  --cpu-cold-experts    with --device-budget: one-off experts computed on the host\n"
        "                        where the bench's measured rates say it is faster\n"
        "  --huge-pages          the expert cache's host copies in huge pages of the\n"
        "                        process's own (host_huge_pages)\n"
        "  --cache-policy P      frequency (default) or lru, with --device-budget\n"
        "  --cpu-experts N       the experts of the first N layers (here: N >= 1, the\n"
        "                        layer's) computed on the host\n"
        "  --expert-parallel     under mpirun -np N: the layer's experts sharded over the\n"
        "                        ranks, --tokens tokens a rank, against one rank's forward\n"
        "                        of all of them (needs a vkmoe built with MPI)\n"
        "  --placement FILE      with --expert-parallel: a line an expert, the ranks\n"
        "                        holding it (default: contiguous blocks)\n"
        "  --micro-batches N     with --expert-parallel: each rank's tokens in N parts, one's\n"
        "                        exchange beside another's compute (1..64, default 1)\n"
        "  --warmup N --iters N  repetitions (default 2, 10); figures are medians\n"
        "  --back-to-back N      each repetition N forwards recorded into one submission,\n"
        "                        as a model's layers follow each other on the GPU; the\n"
        "                        figures are the last one's (1..4096, default 1)\n"
        "  --no-verify           skip the CPU reference\n"
        "  --json                one JSON object on stdout\n",
        names_of(weight_type_name, weights, sizeof(weights)),
        names_of(gemm_path_name, paths, sizeof(paths)));
}

/* A comma-separated list of 1..MAX_TOKEN_COUNTS counts, each in 1..2^22:
 * no empty entry, no trailing comma, nothing dropped. */
static bool parse_tokens(options *o, const char *list)
{
    o->token_count = 0;
    for (const char *p = list;; p++) {
        char *end;
        if (*p < '0' || *p > '9') /* strtoul would skip spaces and take signs */
            return false;
        unsigned long v = strtoul(p, &end, 10);
        if (v == 0 || v > (1u << 22))
            return false;
        if (o->token_count == MAX_TOKEN_COUNTS) {
            fprintf(stderr, "vkmoe-bench: --tokens takes at most %d counts\n", MAX_TOKEN_COUNTS);
            return false;
        }
        o->tokens[o->token_count++] = (uint32_t)v;
        if (*end == '\0')
            return true;
        if (*end != ',')
            return false;
        p = end;
    }
}

/* A whole number in [least, 2^32) and nothing else. */
static bool parse_count(const char *s, uint32_t least, uint32_t *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return false;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v < least || v > 0xffffffffu)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool parse_u32(const char *s, uint32_t *out) { return parse_count(s, 1, out); }

/* A number in (0, 1] and nothing else. */
static bool parse_scale(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return end != s && *end == '\0' && *out > 0 && *out <= 1;
}

/* A Zipf exponent: finite, > 0, at most 8. */
static bool parse_skew(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return end != s && *end == '\0' && *out > 0 && *out <= 8;
}

/* "512M", "4G", "123456" (bytes) or "50%" (of the experts' bytes). */
static bool parse_budget(const char *s, options *o)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || v > 1e18)
        return false;
    if (!strcmp(end, "%")) {
        o->budget_percent = v;
        return v <= 100;
    }
    static const char units[] = "KMGT";
    const char *unit = *end ? strchr(units, *end) : NULL;
    if (*end && (!unit || end[1]))
        return false;
    for (const char *u = units; unit && u <= unit; u++)
        v *= 1024;
    o->budget_bytes = (uint64_t)v;
    return o->budget_bytes > 0;
}

static bool parse_policy(const char *s, vkmoe_cache_policy *out)
{
    if (!strcmp(s, "frequency") || !strcmp(s, "lru")) {
        *out = s[0] == 'l' ? VKMOE_CACHE_LRU : VKMOE_CACHE_FREQUENCY;
        return true;
    }
    return false;
}

/* A weight type by the name vkmoe_weight_type_name gives it. */
static bool parse_weights(const char *name, vkmoe_weight_type *out)
{
    for (int t = 0; weight_type_name(t); t++)
        if (!strcmp(name, weight_type_name(t))) {
            *out = (vkmoe_weight_type)t;
            return true;
        }
    return false;
}

static const preset *find_preset(const char *name)
{
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.scale = 1,
                   .weights = VKMOE_WEIGHT_F16,
                   .warmup = 2,
                   .back_to_back = 1,
                   .iters = 10,
                   .verify = true,
                   .tokens = {1, 64, 256},
                   .token_count = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true, takes_value = true;
        if (!strcmp(a, "--preset") && v)
            o->preset = v;
        else if (!strcmp(a, "--scale") && v)
            ok = parse_scale(v, &o->scale);
        else if (!strcmp(a, "--dim") && v)
            ok = parse_u32(v, &o->dim);
        else if (!strcmp(a, "--ffn") && v)
            ok = parse_u32(v, &o->ffn);
        else if (!strcmp(a, "--experts") && v)
            ok = parse_u32(v, &o->experts);
        else if (!strcmp(a, "--topk") && v)
            ok = parse_u32(v, &o->top_k);
        else if (!strcmp(a, "--tokens") && v)
            ok = parse_tokens(o, v);
        else if (!strcmp(a, "--weights") && v) {
            if (!parse_weights(v, &o->weights)) {
                char names[160];
                fprintf(stderr, "vkmoe-bench: unknown weights %s (%s)\n", v,
                        names_of(weight_type_name, names, sizeof(names)));
                return 2;
            }
        } else if (!strcmp(a, "--io") && v) {
            ok = parse_weights(v, &o->io) &&
                 (o->io == VKMOE_WEIGHT_F32 || o->io == VKMOE_WEIGHT_F16 ||
                  o->io == VKMOE_WEIGHT_BF16);
        } else if (!strcmp(a, "--gemm") && v) {
            if (vkmoe_gemm_path_parse(v, &o->gemm_path) != VKMOE_OK) {
                fprintf(stderr, "vkmoe-bench: %s\n", vkmoe_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--device") && v)
            o->device = v;
        else if (!strcmp(a, "--device-budget") && v)
            ok = parse_budget(v, o);
        else if (!strcmp(a, "--routing-skew") && v)
            ok = parse_skew(v, &o->routing_skew);
        else if (!strcmp(a, "--trace") && v)
            o->trace = v;
        else if (!strcmp(a, "--cpu-experts") && v)
            ok = parse_count(v, 0, &o->cpu_layers);
        else if (!strcmp(a, "--placement") && v)
            o->placement = v;
        else if (!strcmp(a, "--micro-batches") && v)
            ok = parse_u32(v, &o->micro_batches) && o->micro_batches <= 64;
        else if (!strcmp(a, "--cache-policy") && v)
            ok = parse_policy(v, &o->cache_policy);
        else if (!strcmp(a, "--warmup") && v)
            ok = parse_count(v, 0, &o->warmup) && o->warmup < 100000;
        else if (!strcmp(a, "--iters") && v)
            ok = parse_u32(v, &o->iters);
        else if (!strcmp(a, "--back-to-back") && v)
            ok = parse_u32(v, &o->back_to_back) && o->back_to_back <= 4096;
        else {
            takes_value = false;
            if (!strcmp(a, "--no-verify"))
                o->verify = false;
            else if (!strcmp(a, "--cpu-cold-experts"))
                o->cold_on_cpu = true;
            else if (!strcmp(a, "--huge-pages"))
                o->huge_pages = true;
            else if (!strcmp(a, "--expert-parallel"))
                o->expert_parallel = true;
            else if (!strcmp(a, "--json"))
                o->json = true;
            else if (!strcmp(a, "--list-presets"))
                o->list_presets = true;
            else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                usage(stdout);
                exit(0);
            } else
                ok = false;
        }
        if (!ok) {
            fprintf(stderr, "vkmoe-bench: bad or incomplete option %s%s%s\n", a, v ? " " : "",
                    v && takes_value ? v : "");
            usage(stderr);
            return 2;
        }
        i += takes_value;
    }
    if ((o->placement || o->micro_batches) && !o->expert_parallel) {
        fprintf(stderr, "vkmoe-bench: --placement and --micro-batches go with --expert-parallel\n");
        return 2;
    }
    if (o->back_to_back > 1 && (o->budget_bytes || o->budget_percent > 0 || o->cpu_layers ||
                                o->routing_skew > 0 || o->trace || o->expert_parallel)) {
        fprintf(stderr, "vkmoe-bench: --back-to-back records forwards of a layer that holds its "
                        "experts on the device: no --device-budget, --cpu-experts, "
                        "--routing-skew, --trace or --expert-parallel\n");
        return 2;
    }
    if (o->expert_parallel && (o->budget_bytes || o->budget_percent > 0 || o->cpu_layers ||
                               o->routing_skew > 0 || o->trace || o->cold_on_cpu)) {
        fprintf(stderr, "vkmoe-bench: --expert-parallel shards a layer that holds its experts "
                        "on the device: no --device-budget, --cpu-experts, --routing-skew or "
                        "--trace\n");
        return 2;
    }
    return 0;
}

static void list_presets(void)
{
    printf("%-18s %-18s %-12s %5s %6s %4s %3s %6s\n", "preset", "model", "family", "dim", "ffn",
           "E", "k", "shared");
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
        const preset *p = &presets[i];
        printf("%-18s %-18s %-12s %5u %6u %4u %3u %6u\n", p->name, p->model, p->family, p->dim,
               p->ffn, p->experts, p->top_k, p->shared_ffn);
    }
}

/* A width times scale, rounded up to whole blocks of the weight type (8
 * for the unquantized types: they need none, but it keeps widths tidy). */
static uint32_t scaled(uint32_t width, double scale, vkmoe_weight_type type)
{
    const uint32_t block = vkmoe_weight_block(type), align = block > 8 ? block : 8;
    return (uint32_t)(ceil(width * scale / align) * align);
}

/* The layer from the preset (or the default), the scale and the overrides. */
static int resolve_params(const options *o, uint32_t max_tokens, vkmoe_layer_params *params)
{
    const preset *p = o->preset ? find_preset(o->preset) : &default_layer;
    if (!p) {
        fprintf(stderr, "vkmoe-bench: unknown preset %s (--list-presets)\n", o->preset);
        return 2;
    }
    *params = (vkmoe_layer_params){0};
    vkmoe_layer_params_family(params, p->family);
    params->dim = o->dim ? o->dim : scaled(p->dim, o->scale, o->weights);
    params->ffn_dim = o->ffn ? o->ffn : scaled(p->ffn, o->scale, o->weights);
    params->shared_ffn_dim = scaled(p->shared_ffn, o->scale, o->weights);
    params->experts = o->experts ? o->experts : p->experts;
    params->top_k = o->top_k ? o->top_k : p->top_k;
    params->weight_type = o->weights;
    params->io_type = o->io;
    params->gemm_path = o->gemm_path;
    params->max_tokens = max_tokens;
    params->cache_policy = o->cache_policy;
    params->cpu_experts = o->cpu_layers > 0;
    params->expert_budget_bytes = o->budget_bytes;
    if (o->budget_percent > 0)
        params->expert_budget_bytes = (uint64_t)(o->budget_percent / 100 * params->experts *
                                                 (double)vkmoe_expert_bytes(params));
    return 0;
}

static const char *router_name(vkmoe_router_type router)
{
    const char *name = vkmoe_router_type_name(router);
    return name ? name : "unknown";
}

static const char *activation_name(vkmoe_activation activation)
{
    const char *name = vkmoe_activation_name(activation);
    return name ? name : "unknown";
}

static const char *device_type(VkPhysicalDeviceType type)
{
    switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return "cpu";
    default:
        return "other";
    }
}

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(out, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(out, "\\u%04x", *s);
        else
            fputc(*s, out);
    }
    fputc('"', out);
}

static double percent(double value, double peak) { return peak > 0 ? 100.0 * value / peak : 0.0; }

/* The bandwidth a stage's GB/s is a share of: the faster of the streaming
 * copy and the streaming read (the stages mostly read; where writes are
 * slow, as on llvmpipe, the copy alone would flatter them). */
static double peak_bandwidth(const peak_figures *peak)
{
    return peak->read_gbps > peak->copy_gbps ? peak->read_gbps : peak->copy_gbps;
}

/* The compute a run's GFLOP/s is a share of: the matrix-core peak for the
 * matrix-core path (as the issue counts it), else fp32 FMA. */
static double compute_peak(const peak_figures *peak, const vkmoe_layer_params *s)
{
    bool matrix = s->gemm_path == VKMOE_GEMM_COOPMAT && peak->fp16_matrix_gflops > 0;
    return matrix ? peak->fp16_matrix_gflops : peak->fp32_gflops;
}

/* BENCH.md's path: the matrix-core path, else whether any expert had the 16
 * rows of a GEMM pass (the register path's decode passes take 1 and 4). */
static const char *run_path(const run_result *run)
{
    if (run->kernel == VKMOE_GEMM_COOPMAT)
        return "coopmat";
    if (run->kernel == VKMOE_GEMM_GEMV)
        return "gemv";
    return run->kernel == VKMOE_GEMM_REGISTER && run->largest_expert < 16 ? "gemv" : "gemm";
}

/* The host experts' useful GFLOP/s and the GB/s of weights they stream
 * (each active expert's matrices once), per forward. */
static void cpu_rates(const run_result *run, const vkmoe_layer_params *s, double *gflops,
                      double *gbps)
{
    const offload_figures *f = &run->offload;
    double matrices = s->activation == VKMOE_ACTIVATION_RELU ? 2 : 3;
    double per_row = 2.0 * matrices * s->dim * s->ffn_dim;
    double bytes = run->active_experts * matrices * s->dim * s->ffn_dim *
                   (vkmoe_weight_bytes(s->weight_type, 256) / 256.0);
    *gflops = f->cpu_expert_ms > 0 ? f->cpu_slots * per_row / (f->cpu_expert_ms * 1e6) : 0;
    *gbps = f->cpu_expert_ms > 0 && s->cpu_experts ? bytes / (f->cpu_expert_ms * 1e6) : 0;
}

/* Of the time a forward's copies take at the measured host-to-device rate,
 * what the layer did not take longer than its resident twin: the copies'
 * time hidden behind compute (by the copy queue beside the hits' GEMMs),
 * per forward. 0 where the copies cost their full time or more. */
static double hidden_ms(const run_result *run, const peak_figures *peak)
{
    const offload_figures *f = &run->offload;
    if (peak->upload_gbps <= 0)
        return 0;
    double copies = f->bytes_to_device / (peak->upload_gbps * 1e6),
           exposed = run->layer.ms - f->resident_ms;
    double hidden = copies - (exposed > 0 ? exposed : 0);
    return hidden > 0 ? hidden : 0;
}

/* runs[].offload (shared/BENCH.md). */
static void print_offload_json(const run_result *run, const vkmoe_layer_params *s,
                               const peak_figures *peak)
{
    const offload_figures *f = &run->offload;
    if (!f->present)
        return;
    double gflops, gbps;
    cpu_rates(run, s, &gflops, &gbps);
    printf("      \"offload\": {\"budget_bytes\": %llu, \"slots\": %u, \"policy\": \"%s\", "
           "\"hit_rate\": %.6g, \"bytes_to_device\": %.6g, \"rounds\": %.4g, "
           "\"hidden_ms\": %.6g, \"cpu_expert_ms\": %.6g, \"cpu_slots\": %.6g, "
           "\"cpu_expert_gflops\": %.6g, \"cpu_expert_gbps\": %.6g, "
           "\"resident_layer_ms\": %.6g, \"cpu_only_layer_ms\": %.6g, "
           "\"bit_identical_to_resident\": %s},\n",
           (unsigned long long)f->budget_bytes, f->slots,
           s->cache_policy == VKMOE_CACHE_LRU ? "lru" : "frequency", f->hit_rate,
           f->bytes_to_device, f->rounds, hidden_ms(run, peak), f->cpu_expert_ms, f->cpu_slots,
           gflops, gbps, f->resident_ms, f->cpu_only_ms,
           !f->bit_checked    ? "null"
           : f->bit_identical ? "true"
                              : "false");
}

/* runs[].expert_parallel (shared/BENCH.md). */
static void print_expert_parallel_json(const expert_parallel_figures *f)
{
    printf("      \"expert_parallel\": {\"ranks\": %u, \"tokens_per_rank\": %u, "
           "\"micro_batches\": %u, "
           "\"layer_ms\": %.6g, \"single_layer_ms\": %.6g, \"speedup\": %.4g, "
           "\"bytes_exchanged\": %.6g, \"exchange_ms\": %.6g, \"compute_ms\": %.6g, "
           "\"imbalance\": %.4g, \"alltoall_alpha_us\": %.4g, \"alltoall_beta_gbps\": %.4g, "
           "\"bit_identical_to_single\": %s,\n        \"per_rank\": [",
           f->ranks, f->tokens_per_rank, f->micro_batches, f->layer_ms, f->single_layer_ms,
           f->layer_ms > 0 ? f->single_layer_ms / f->layer_ms : 0.0, f->bytes_exchanged,
           f->exchange_ms, f->compute_ms, f->imbalance, f->alpha_us, f->beta_gbps,
           f->bit_identical ? "true" : "false");
    for (uint32_t r = 0; r < f->ranks && r < EP_RANKS_SHOWN; r++)
        printf("%s{\"rank\": %u, \"compute_ms\": %.6g, \"exchange_ms\": %.6g, "
               "\"rows_computed\": %u, \"bytes_sent\": %llu, \"expert_bytes\": %llu}",
               r ? ", " : "", r, f->rank[r].compute_ms, f->rank[r].exchange_ms,
               f->rank[r].rows_computed, (unsigned long long)f->rank[r].bytes_sent,
               (unsigned long long)f->rank[r].expert_bytes);
    printf("]},\n");
}

static void print_json(const options *o, const vkmoe_device_info *info, const peak_figures *peak,
                       const host_peak_figures *host, const vkmoe_layer_params *s,
                       const run_result *runs, uint32_t count)
{
    printf("{\n  \"vkmoe_version\": \"%d.%d.%d\",\n  \"device\": {\"name\": ", VKMOE_VERSION_MAJOR,
           VKMOE_VERSION_MINOR, VKMOE_VERSION_PATCH);
    json_string(stdout, info->name);
    printf(", \"type\": \"%s\", \"driver\": ", device_type(info->type));
    json_string(stdout, info->driver);
    printf(", \"api\": \"%u.%u.%u\"},\n", VK_API_VERSION_MAJOR(info->api_version),
           VK_API_VERSION_MINOR(info->api_version), VK_API_VERSION_PATCH(info->api_version));
    printf("  \"peak\": {\"fp32_gflops\": %.6g, \"fp16_gflops\": %.6g, \"copy_gbps\": %.6g, "
           "\"read_gbps\": %.6g, \"upload_gbps\": %.6g, \"fp16_matrix_gflops\": %.6g, "
           "\"dispatch_us\": %.6g",
           peak->fp32_gflops, peak->fp16_gflops, peak->copy_gbps, peak->read_gbps,
           peak->upload_gbps, peak->fp16_matrix_gflops, peak->dispatch_us);
    if (host->threads)
        printf(", \"host_threads\": %u, \"host_fma_gflops\": %.6g, \"host_read_gbps\": %.6g",
               host->threads, host->fma_gflops, host->read_gbps);
    printf("},\n  \"runs\": [\n");
    for (uint32_t r = 0; r < count; r++) {
        const run_result *run = &runs[r];
        printf("    {\n      \"preset\": ");
        if (o->preset)
            json_string(stdout, o->preset);
        else
            printf("null");
        printf(", \"scale\": %g,\n", o->scale);
        printf("      \"shape\": {\"tokens\": %u, \"dim\": %u, \"ffn\": %u, \"experts\": %u, "
               "\"topk\": %u, \"weights\": \"%s\", \"io\": \"%s\", \"router\": \"%s\", "
               "\"shared_ffn\": %u, \"groups\": %u, \"topk_groups\": %u, "
               "\"activation\": \"%s\", \"capacity_factor\": %g},\n",
               run->tokens, s->dim, s->ffn_dim, s->experts, s->top_k,
               vkmoe_weight_type_name(s->weight_type), vkmoe_weight_type_name(s->io_type),
               router_name(s->router), s->shared_ffn_dim, s->expert_groups, s->topk_groups,
               activation_name(s->activation), (double)s->capacity_factor);
        printf("      \"path\": \"%s\", \"gemm_path\": \"%s\", \"dispatches\": %u, "
               "\"barriers\": %u, \"dispatch_floor_ms\": %.6g,\n",
               run_path(run), vkmoe_gemm_path_name(run->kernel), run->dispatches, run->barriers,
               run->dispatches * peak->dispatch_us * 1e-3);
        printf("      \"back_to_back\": %u, \"stream_ms\": %.6g,\n", run->back_to_back,
               run->stream_ms);
        double gflops = run->layer.flops / (run->layer.ms * 1e6);
        double gbps = run->layer.bytes / (run->layer.ms * 1e6);
        printf("      \"layer_ms\": %.6g, \"tokens_per_s\": %.6g, \"gflops\": %.6g, "
               "\"gbps\": %.6g, \"bytes\": %.6g, \"gflops_pct_peak\": %.4g, "
               "\"gbps_pct_peak\": %.4g,\n",
               run->layer.ms, run->tokens / (run->layer.ms * 1e-3), gflops, gbps, run->layer.bytes,
               percent(gflops, compute_peak(peak, s)), percent(gbps, peak_bandwidth(peak)));
        printf("      \"active_experts\": %u,\n      \"stages\": [", run->active_experts);
        for (uint32_t st = 0; st < VKMOE_STAGE_MAX; st++) {
            const stage_figures *f = &run->stages[st];
            double sg = f->ms > 0 ? f->flops / (f->ms * 1e6) : 0.0;
            double sb = f->ms > 0 ? f->bytes / (f->ms * 1e6) : 0.0;
            printf("%s{\"name\": \"%s\", \"ms\": %.6g, \"gflops\": %.6g, \"gbps\": %.6g, "
                   "\"gflops_pct_peak\": %.4g, \"gbps_pct_peak\": %.4g}",
                   st ? ",\n        " : "", f->name, f->ms, sg, sb,
                   percent(sg, compute_peak(peak, s)), percent(sb, peak_bandwidth(peak)));
        }
        printf("],\n");
        print_offload_json(run, s, peak);
        if (run->expert_parallel.present)
            print_expert_parallel_json(&run->expert_parallel);
        printf("      \"verified\": %s, \"verified_tokens\": %u, \"max_abs_err\": %.6g, "
               "\"max_rel_err\": %.6g\n    }%s\n",
               run->verified ? "true" : "false", run->verified_tokens,
               isnan(run->error.max_abs) ? -1.0 : run->error.max_abs,
               isnan(run->error.max_rel) ? -1.0 : run->error.max_rel, r + 1 < count ? "," : "");
    }
    printf("  ]\n}\n");
}

/* The table's lines of an expert-parallel run: the run's, a rank's each. */
static void print_expert_parallel_lines(const expert_parallel_figures *f)
{
    printf("%7s expert parallel: %u ranks x %u tokens (%u micro-batches) in %.3f ms (one rank: "
           "%.3f ms, %.2fx); "
           "%.3f MB exchanged, %.3f ms in MPI and %.3f ms computing on the busiest rank; "
           "imbalance %.2f; all-to-all alpha %.1f us, beta %.2f GB/s; outputs %s\n",
           "", f->ranks, f->tokens_per_rank, f->micro_batches, f->layer_ms, f->single_layer_ms,
           f->layer_ms > 0 ? f->single_layer_ms / f->layer_ms : 0.0, f->bytes_exchanged * 1e-6,
           f->exchange_ms, f->compute_ms, f->imbalance, f->alpha_us, f->beta_gbps,
           f->bit_identical ? "bit-identical to one rank's" : "DIFFER");
    for (uint32_t r = 0; r < f->ranks && r < EP_RANKS_SHOWN; r++)
        printf("%7s   rank %u: %u rows computed in %.3f ms, %.3f ms in MPI, %.3f MB sent; "
               "%.2f MB of experts on its device\n",
               "", r, f->rank[r].rows_computed, f->rank[r].compute_ms, f->rank[r].exchange_ms,
               f->rank[r].bytes_sent * 1e-6, f->rank[r].expert_bytes * 1e-6);
}

static void print_table(const vkmoe_device_info *info, const peak_figures *peak,
                        const host_peak_figures *host, const vkmoe_layer_params *s,
                        const run_result *runs, uint32_t count)
{
    printf("device  %s (%s, %s)\n", info->name, device_type(info->type), info->driver);
    printf("peak    %.1f GFLOP/s fp32 FMA, %.1f GFLOP/s fp16 FMA, ", peak->fp32_gflops,
           peak->fp16_gflops);
    if (peak->fp16_matrix_gflops > 0)
        printf("%.1f GFLOP/s fp16 matrix, ", peak->fp16_matrix_gflops);
    printf("%.2f GB/s copy, %.2f GB/s read, %.2f GB/s host to device, %.1f us a dispatch and "
           "barrier (measured by this bench)\n",
           peak->copy_gbps, peak->read_gbps, peak->upload_gbps, peak->dispatch_us);
    if (host->threads)
        printf("host    %u threads: %.1f GFLOP/s fp32 FMA, %.2f GB/s read (measured by this "
               "bench)\n",
               host->threads, host->fma_gflops, host->read_gbps);
    printf("layer   dim %u, ffn %u, experts %u (groups %u, keep %u), top-k %u, shared ffn %u, "
           "%s weights, %s x and y, %s, %s, capacity factor %g, %s GEMM path\n\n",
           s->dim, s->ffn_dim, s->experts, s->expert_groups, s->topk_groups, s->top_k,
           s->shared_ffn_dim, vkmoe_weight_type_name(s->weight_type),
           vkmoe_weight_type_name(s->io_type), router_name(s->router),
           activation_name(s->activation), (double)s->capacity_factor,
           vkmoe_gemm_path_name(s->gemm_path));
    printf("%7s %7s %10s %11s %9s %6s %9s %8s %6s |", "tokens", "path", "layer ms", "tokens/s",
           "GFLOP/s", "%peak", "MB moved", "GB/s", "%peak");
    for (uint32_t st = 0; st < VKMOE_STAGE_MAX; st++)
        printf(" %9s", vkmoe_stage_name(st));
    printf(" | %s\n", "check");
    for (uint32_t r = 0; r < count; r++) {
        const run_result *run = &runs[r];
        double gflops = run->layer.flops / (run->layer.ms * 1e6);
        double gbps = run->layer.bytes / (run->layer.ms * 1e6);
        printf("%7u %7s %10.3f %11.1f %9.2f %6.1f %9.2f %8.2f %6.1f |", run->tokens, run_path(run),
               run->layer.ms, run->tokens / (run->layer.ms * 1e-3), gflops,
               percent(gflops, compute_peak(peak, s)), run->layer.bytes * 1e-6, gbps,
               percent(gbps, peak_bandwidth(peak)));
        for (uint32_t st = 0; st < VKMOE_STAGE_MAX; st++)
            printf(" %9.3f", run->stages[st].ms);
        if (run->verified_tokens == 0)
            printf(" | skipped\n");
        else
            printf(" | %s (max rel err %.2g over %u tokens)\n", run->verified ? "ok" : "FAILED",
                   run->error.max_rel, run->verified_tokens);
        if (run->back_to_back > 1)
            printf("%7s back to back: the last of %u forwards in one submission; %.3f ms a "
                   "forward over the whole submission (host time)\n",
                   "", run->back_to_back, run->stream_ms);
        if (run->expert_parallel.present)
            print_expert_parallel_lines(&run->expert_parallel);
        const offload_figures *f = &run->offload;
        if (f->present) {
            double cpu_gflops, cpu_gbps;
            cpu_rates(run, s, &cpu_gflops, &cpu_gbps);
            printf("%7s offload: %u of %u experts on the device, %s, hit rate %.1f%%, %.2f MB to "
                   "the device (%.3f ms of it hidden) and %.2f rounds a forward; %.1f rows on "
                   "the host in %.3f ms "
                   "(%.2f GFLOP/s, %.2f GB/s of weights); resident layer %.3f ms (%.2fx), all "
                   "experts on the host %.3f ms; outputs %s\n",
                   "", s->cpu_experts ? 0 : f->slots, s->experts,
                   s->cache_policy == VKMOE_CACHE_LRU ? "LRU" : "frequency", 100 * f->hit_rate,
                   f->bytes_to_device * 1e-6, hidden_ms(run, peak), f->rounds, f->cpu_slots,
                   f->cpu_expert_ms, cpu_gflops, cpu_gbps, f->resident_ms,
                   f->resident_ms > 0 ? run->layer.ms / f->resident_ms : 0.0, f->cpu_only_ms,
                   !f->bit_checked    ? "checked against the reference"
                   : f->bit_identical ? "bit-identical"
                                      : "DIFFER");
        }
    }
    printf("\nstage times in ms (GPU timestamps, median of the iterations)\n");
    if (count && runs[0].expert_parallel.present)
        printf("expert parallel: each rank's tokens through the layer sharded over the ranks, "
               "wall time of the slowest rank, against one rank's forward of all of them\n");
}

/* The highest rc of every rank's, where the bench runs under mpirun. */
static int join(const options *o, int rc)
{
#ifdef VKMOE_BENCH_MPI
    if (o->expert_parallel)
        return mpi_runs_join(rc);
#endif
    (void)o;
    return rc;
}

/* One token count: rank 0 runs the single layer on every rank's tokens
 * (the others wait), then with --expert-parallel every rank the sharded
 * forward. */
static int run_one(const options *o, workload *w, workload *shard, uint32_t rank, uint32_t ranks,
                   const uint8_t *placement, uint32_t tokens, run_result *run)
{
    int rc = 0;
    if (rank == 0 &&
        workload_run(w, tokens * ranks, o->warmup, o->iters, o->back_to_back, run) != VKMOE_OK) {
        fprintf(stderr, "vkmoe-bench: %s\n", vkmoe_last_error());
        rc = 1;
    }
    if ((rc = join(o, rc)) || !o->expert_parallel)
        return rc;
#ifdef VKMOE_BENCH_MPI
    if (mpi_runs_measure(w, shard, placement, o->micro_batches, tokens, o->warmup, o->iters,
                         &run->expert_parallel) != VKMOE_OK) {
        fprintf(stderr, "vkmoe-bench: rank %u: %s\n", rank, vkmoe_last_error());
        rc = 1;
    }
#else
    (void)shard, (void)placement;
#endif
    return join(o, rc);
}

/* With --expert-parallel, this rank's shard: a layer holding only the
 * experts the placement gives it (contiguous blocks without one), its
 * weights those of the whole layer's. */
static vkmoe_status create_shard(vkmoe_context *ctx, const vkmoe_layer_params *params,
                                 const uint8_t *placement, uint32_t rank, uint32_t ranks,
                                 workload **shard)
{
    uint8_t *held = calloc(params->experts, 1);
    if (!held)
        return VKMOE_ERROR_OUT_OF_HOST_MEMORY;
    vkmoe_layer_params p = *params;
    p.held_experts = held; /* copied by the layer */
    workload_routing none = {0};
    vkmoe_status status = vkmoe_expert_parallel_held(placement, params->experts, ranks, rank, held);
    if (status == VKMOE_OK)
        status = workload_create(ctx, &p, false, &none, shard);
    free(held);
    return status;
}

/* The placement file, read where there is one. */
static int read_placement(const options *o, const vkmoe_layer_params *params, uint32_t ranks,
                          uint8_t **placement)
{
    *placement = NULL;
#ifdef VKMOE_BENCH_MPI
    if (o->placement && !mpi_runs_read_placement(o->placement, params->experts, ranks, placement))
        return 2;
#else
    (void)o, (void)params, (void)ranks;
#endif
    return 0;
}

/* The validation layer's warnings and errors, where VKMOE_VALIDATION=1 turns
 * it on; the library's own messages are the bench's to report. */
static void print_validation(void *user, vkmoe_log_level level, const char *message)
{
    (void)user;
    (void)level;
    if (strncmp(message, "validation: ", 12) == 0)
        fprintf(stderr, "vkmoe-bench: %s\n", message);
}

/* Rank `rank` of `ranks` (1 without --expert-parallel); rank 0 prints. */
static int run_bench(const options *o, uint32_t rank, uint32_t ranks)
{
    uint32_t max_tokens = 0;
    for (uint32_t i = 0; i < o->token_count; i++)
        if (o->tokens[i] > max_tokens)
            max_tokens = o->tokens[i];
    vkmoe_layer_params params;
    uint8_t *placement = NULL;
    int rc = resolve_params(o, max_tokens * ranks, &params);
    if (rc == 0)
        rc = read_placement(o, &params, ranks, &placement);
    if ((rc = join(o, rc)))
        return rc;

    /* Under VKMOE_VALIDATION=1 (the tests' bench runs) the validation
     * layer's messages go to stderr and any error fails the run. */
    vkmoe_context_params cp = {.device = o->device,
                               .host_huge_pages = o->huge_pages,
                               .log = print_validation,
                               .log_level = VKMOE_LOG_WARNING};
    vkmoe_context *ctx = NULL;
    if (vkmoe_context_create(&cp, &ctx) != VKMOE_OK) {
        fprintf(stderr, "vkmoe-bench: rank %u: %s\n", rank, vkmoe_last_error());
        rc = 1;
    }
    if ((rc = join(o, rc))) {
        vkmoe_context_destroy(&ctx);
        free(placement);
        return rc;
    }
    vkmoe_device_info info;
    vkmoe_context_device_info(ctx, &info);
    peak_figures peak = {0};
    if (rank == 0 && peak_measure(ctx, &peak) != VKMOE_OK)
        fprintf(stderr, "vkmoe-bench: no peak figures: %s\n", vkmoe_last_error());
    host_peak_figures host = {0};
    if (rank == 0 &&
        (params.cpu_experts || params.expert_budget_bytes || o->routing_skew > 0 || o->trace))
        host_peak_measure(&host);
    /* The cost model's rates, as measured here: the host's FMA peak at the
     * share of it the CPU experts reach on large batches, its reads, and
     * host memory copied into the device's. */
    params.cpu_cold_experts = o->cold_on_cpu;
    if (host.fma_gflops > 0)
        params.cpu_expert_gflops = (float)(0.8 * host.fma_gflops);
    if (host.read_gbps > 0)
        params.host_read_gbps = (float)host.read_gbps;
    if (peak.upload_gbps > 0)
        params.host_to_device_gbps = (float)peak.upload_gbps;
    workload *w = NULL, *shard = NULL;
    workload_routing routing = {o->routing_skew, o->trace};
    join(o, 0); /* the other ranks sleep while rank 0 measures its peaks */
    /* Rank 0 the whole layer, checked against the reference; with
     * --expert-parallel every rank its shard. */
    if (rank == 0 && workload_create(ctx, &params, o->verify, &routing, &w) != VKMOE_OK) {
        if (*vkmoe_last_error()) /* else the bench said why (a trace's error) */
            fprintf(stderr, "vkmoe-bench: %s\n", vkmoe_last_error());
        rc = 1;
    }
    if (rc == 0 && o->expert_parallel &&
        create_shard(ctx, &params, placement, rank, ranks, &shard) != VKMOE_OK) {
        fprintf(stderr, "vkmoe-bench: rank %u: %s\n", rank, vkmoe_last_error());
        rc = 1;
    }
    run_result runs[MAX_TOKEN_COUNTS];
    bool all_verified = true;
    rc = join(o, rc);
    for (uint32_t i = 0; i < o->token_count && rc == 0; i++) {
        rc = run_one(o, w, shard, rank, ranks, placement, o->tokens[i], &runs[i]);
        const run_result *r = &runs[i];
        all_verified &=
            rank != 0 ||
            ((!o->verify || r->verified) && (!r->offload.present || r->offload.bit_identical) &&
             (!r->expert_parallel.present || r->expert_parallel.bit_identical));
    }
    if (rc == 0 && rank == 0) {
        if (o->json)
            print_json(o, &info, &peak, &host, workload_params(w), runs, o->token_count);
        else
            print_table(&info, &peak, &host, workload_params(w), runs, o->token_count);
    }
    free(placement);
    workload_destroy(&w);
    workload_destroy(&shard);
    uint32_t validation_errors = vkmoe_context_validation_errors(ctx);
    vkmoe_context_destroy(&ctx);
    if (rc == 0 && !all_verified) {
        fprintf(stderr, "vkmoe-bench: verification against the CPU reference FAILED\n");
        rc = 3;
    }
    if (validation_errors) {
        fprintf(stderr, "vkmoe-bench: rank %u: %u validation error(s) (VKMOE_VALIDATION=1)\n", rank,
                validation_errors);
        rc = rc ? rc : 3;
    }
    return join(o, rc);
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    if (o.list_presets) {
        list_presets();
        return 0;
    }
    if (!o.expert_parallel)
        return run_bench(&o, 0, 1);
#ifdef VKMOE_BENCH_MPI
    uint32_t rank, ranks;
    mpi_runs_init(&argc, &argv, &rank, &ranks);
    rc = run_bench(&o, rank, ranks);
    mpi_runs_finish(rc, false);
    return rc;
#else
    fprintf(stderr, "vkmoe-bench: --expert-parallel needs a vkmoe built with MPI "
                    "(libopenmpi-dev)\n");
    return 2;
#endif
}
