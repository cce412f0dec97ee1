/* GGUF files: general.architecture and its "<arch>.*" metadata become
 * layer params; the layer's tensors are blk.N.ffn_*_exps (all experts in
 * one tensor), ffn_gate_inp, the shared expert's ffn_*_shexp and
 * exp_probs_b. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "model.h"

/* ggml's names for the gating functions (<arch>.expert_gating_func). */
enum { GATING_SOFTMAX = 1, GATING_SIGMOID = 2, GATING_SOFTMAX_WEIGHT = 3 };

static const vkmoe_meta *meta(const model_source *s, const char *arch, const char *key)
{
    char full[128];
    snprintf(full, sizeof(full), "%s.%s", arch, key);
    return vkmoe_tensor_file_meta(&s->files[0].tensors, full);
}

/* An unsigned metadata value; with required false, *out keeps its default
 * when the key is absent. */
/* An unsigned metadata value at most `most`; FILE_FORMAT naming the key
 * and what is wrong with it otherwise. */
static vkmoe_status meta_u32(const model_source *s, const char *arch, const char *key,
                             bool required, uint32_t most, uint32_t *out)
{
    const vkmoe_meta *m = meta(s, arch, key);
    if (!m && !required)
        return VKMOE_OK;
    if (!m || !(m->type == VKMOE_META_UINT || (m->type == VKMOE_META_INT && m->i >= 0)))
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s: \"%s.%s\" is missing or not an unsigned integer",
                                s->files[0].path, arch, key);
    uint64_t n = m->type == VKMOE_META_UINT ? m->u : (uint64_t)m->i;
    if (n > most)
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s: \"%s.%s\" is %llu, over the %u vkmoe takes", s->files[0].path,
                                arch, key, (unsigned long long)n, most);
    *out = (uint32_t)n;
    return VKMOE_OK;
}

/* The layer's exp_probs_b tensor as its selection bias, where its routing
 * takes one and the file has it. */
static void find_selection_bias(model_source *s, uint32_t layer, bool takes, model_layout *l)
{
    snprintf(l->selection_bias, sizeof(l->selection_bias), "blk.%u.exp_probs_b.bias", layer);
    l->params.selection_bias = takes && vkmoe_model_has(s, l->selection_bias);
    if (!l->params.selection_bias)
        l->selection_bias[0] = '\0';
}

/* Whether layer is dense: before `lead` dense layers, or off the MoE
 * layers' interleave_moe_layer_step (a step's multiples, less one). */
static vkmoe_status dense_by_step(model_source *s, const char *arch, uint32_t layer, uint32_t lead,
                                  model_layout *l)
{
    uint32_t step = 1;
    VKMOE_TRY(meta_u32(s, arch, "interleave_moe_layer_step", false, UINT32_MAX, &step));
    l->dense = layer < lead || step == 0 || (layer + 1) % step != 0;
    return VKMOE_OK;
}

/* DeepSeek-V2 and V3 (and Kimi K2) share the architecture: the gating
 * function, the selection bias tensor and the groups tell them apart; GLM-4.5
 * and MiniMax-M2 have the same keys. Absent, the gating is the family's. */
static vkmoe_status describe_deepseek(model_source *s, const char *arch, uint32_t layer,
                                      model_layout *l)
{
    vkmoe_layer_params *p = &l->params;
    uint32_t dense = 0, shared = 0;
    uint32_t gating = p->router == VKMOE_ROUTER_SIGMOID_TOPK ? GATING_SIGMOID : GATING_SOFTMAX;
    VKMOE_TRY(meta_u32(s, arch, "leading_dense_block_count", false, UINT32_MAX, &dense));
    if (layer < dense) {
        l->dense = true;
        return VKMOE_OK;
    }
    VKMOE_TRY(meta_u32(s, arch, "expert_gating_func", false, UINT32_MAX, &gating));
    p->router = gating == GATING_SIGMOID ? VKMOE_ROUTER_SIGMOID_TOPK : VKMOE_ROUTER_SOFTMAX_TOPK;
    p->expert_groups = p->topk_groups = 1;
    VKMOE_TRY(meta_u32(s, arch, "expert_group_count", false, VKMOE_MAX_GROUPS, &p->expert_groups));
    VKMOE_TRY(
        meta_u32(s, arch, "expert_group_used_count", false, VKMOE_MAX_GROUPS, &p->topk_groups));
    const vkmoe_meta *scale = meta(s, arch, "expert_weights_scale");
    p->routed_scaling_factor = scale && scale->type == VKMOE_META_FLOAT ? (float)scale->f : 1;
    const vkmoe_meta *norm = meta(s, arch, "expert_weights_norm");
    if (norm && norm->type == VKMOE_META_BOOL)
        p->normalize_topk = norm->u != 0;
    VKMOE_TRY(meta_u32(s, arch, "expert_shared_count", false, UINT32_MAX, &shared));
    p->shared_ffn_dim = shared * p->ffn_dim;
    find_selection_bias(s, layer, p->router == VKMOE_ROUTER_SIGMOID_TOPK, l);
    return VKMOE_OK;
}

/* Qwen1.5/2-MoE and Qwen3-Next: a shared expert gated by sigmoid(x·ws). */
static vkmoe_status describe_qwen2(model_source *s, const char *arch, uint32_t layer,
                                   model_layout *l)
{
    (void)layer;
    VKMOE_TRY(meta_u32(s, arch, "expert_shared_feed_forward_length", false, UINT32_MAX,
                       &l->params.shared_ffn_dim));
    l->params.shared_gate = l->params.shared_ffn_dim > 0;
    return VKMOE_OK;
}

/* ERNIE-4.5: dense before leading_dense_block_count and off
 * interleave_moe_layer_step; a shared expert of its own width; the
 * selection bias tensor. */
static vkmoe_status describe_ernie(model_source *s, const char *arch, uint32_t layer,
                                   model_layout *l)
{
    uint32_t lead = 0;
    VKMOE_TRY(meta_u32(s, arch, "leading_dense_block_count", false, UINT32_MAX, &lead));
    VKMOE_TRY(dense_by_step(s, arch, layer, lead, l));
    if (l->dense)
        return VKMOE_OK;
    VKMOE_TRY(meta_u32(s, arch, "expert_shared_feed_forward_length", false, UINT32_MAX,
                       &l->params.shared_ffn_dim));
    find_selection_bias(s, layer, true, l);
    return VKMOE_OK;
}

/* Llama 4: MoE blocks every interleave_moe_layer_step-th layer (the
 * step's multiples, less one); a shared expert of the routed width. */
static vkmoe_status describe_llama4(model_source *s, const char *arch, uint32_t layer,
                                    model_layout *l)
{
    l->params.shared_ffn_dim = l->params.ffn_dim;
    return dense_by_step(s, arch, layer, 0, l);
}

typedef struct gguf_family {
    const char *arch;
    const char *family;  /* vkmoe_layer_params_family */
    const char *ffn_key; /* an expert's width, after "<arch>."; NULL: expert_feed_forward_length */
    /* the architecture's own keys, or NULL */
    vkmoe_status (*describe)(model_source *s, const char *arch, uint32_t layer, model_layout *l);
} gguf_family;
_Static_assert(offsetof(gguf_family, arch) == 0, "vkmoe_find_named reads the name first");

static const gguf_family families[] = {
    {.arch = "llama", .family = "mixtral", .ffn_key = "feed_forward_length"},
    {.arch = "qwen2moe", .family = "qwen2-moe", .describe = describe_qwen2},
    {.arch = "qwen3moe", .family = "qwen3-moe"},
    {.arch = "qwen3next", .family = "qwen3-next", .describe = describe_qwen2},
    {.arch = "olmoe", .family = "olmoe"},
    {.arch = "deepseek2", .family = "deepseek-v2", .describe = describe_deepseek},
    {.arch = "glm4moe", .family = "glm4-moe", .describe = describe_deepseek},
    {.arch = "minimax-m2", .family = "minimax-m2", .describe = describe_deepseek},
    {.arch = "gpt-oss", .family = "gpt-oss"},
    {.arch = "granitemoe", .family = "granite-moe", .ffn_key = "feed_forward_length"},
    {.arch = "ernie4_5-moe", .family = "ernie-4.5-moe", .describe = describe_ernie},
    {.arch = "llama4", .family = "llama4", .describe = describe_llama4},
};

static vkmoe_status find_family(const model_source *s, const gguf_family **out)
{
    const vkmoe_meta *a = vkmoe_tensor_file_meta(&s->files[0].tensors, "general.architecture");
    const char *arch = a && a->type == VKMOE_META_STRING ? a->string : "";
    char known[256];
    if ((*out = VKMOE_FIND_NAMED(families, arch, known, sizeof(known))))
        return VKMOE_OK;
    return vkmoe_model_fail(s, VKMOE_ERROR_UNSUPPORTED,
                            "%s: architecture \"%s\" is not supported (%s)", s->files[0].path, arch,
                            known);
}

static void name_tensors(model_layout *l, uint32_t layer)
{
    static const char *const matrix[3] = {"gate", "up", "down"};
    vkmoe_layer_params *p = &l->params;
    l->stacked = true;
    snprintf(l->router, sizeof(l->router), "blk.%u.ffn_gate_inp.weight", layer);
    if (p->router_bias)
        snprintf(l->router_bias, sizeof(l->router_bias), "blk.%u.ffn_gate_inp.bias", layer);
    for (int m = 0; m < 3; m++) {
        snprintf(l->expert[m], sizeof(l->expert[m]), "blk.%u.ffn_%s_exps.weight", layer, matrix[m]);
        if (p->expert_bias)
            snprintf(l->expert_bias[m], sizeof(l->expert_bias[m]), "blk.%u.ffn_%s_exps.bias", layer,
                     matrix[m]);
        if (p->shared_ffn_dim)
            snprintf(l->shared[m], sizeof(l->shared[m]), "blk.%u.ffn_%s_shexp.weight", layer,
                     matrix[m]);
    }
    if (p->shared_gate)
        snprintf(l->shared_gate, sizeof(l->shared_gate), "blk.%u.ffn_gate_inp_shexp.weight", layer);
}

vkmoe_status vkmoe_model_describe_gguf(model_source *s, uint32_t layer, model_layout *l)
{
    const gguf_family *f = NULL;
    VKMOE_TRY(find_family(s, &f));
    vkmoe_layer_params *p = &l->params;
    vkmoe_layer_params_family(p, f->family);
    VKMOE_TRY(meta_u32(s, f->arch, "embedding_length", true, UINT32_MAX, &p->dim));
    VKMOE_TRY(meta_u32(s, f->arch, f->ffn_key ? f->ffn_key : "expert_feed_forward_length", true,
                       UINT32_MAX, &p->ffn_dim));
    VKMOE_TRY(meta_u32(s, f->arch, "expert_count", true, VKMOE_MAX_EXPERTS, &p->experts));
    VKMOE_TRY(meta_u32(s, f->arch, "expert_used_count", true, VKMOE_MAX_TOP_K, &p->top_k));
    VKMOE_TRY(meta_u32(s, f->arch, "block_count", false, UINT32_MAX, &l->layers));
    const vkmoe_meta *norm = meta(s, f->arch, "expert_weights_norm");
    if (norm && norm->type == VKMOE_META_BOOL)
        p->normalize_topk = norm->u != 0;
    if (f->describe)
        VKMOE_TRY(f->describe(s, f->arch, layer, l));
    if (!l->dense)
        name_tensors(l, layer);
    return VKMOE_OK;
}
