/* Hugging Face checkpoints: config.json's model_type and hyper-parameters
 * become layer params, and the layer's tensors get their checkpoint names. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "model.h"

/* Where config.json keeps the hyper-parameters: Llama 4's released
 * multimodal configs nest the text model's in text_config. */
static const vkmoe_json *hyper(const model_source *s)
{
    const vkmoe_json *text = vkmoe_json_get(&s->config, "text_config");
    return text && text->type == VKMOE_JSON_OBJECT ? text : &s->config;
}

/* A whole number of config.json at most `most`; FILE_FORMAT naming the
 * key and what is wrong with it otherwise. */
static vkmoe_status config_u32(const model_source *s, const char *key, uint32_t most, uint32_t *out)
{
    const vkmoe_json *v = vkmoe_json_get(hyper(s), key);
    uint64_t n;
    if (!v)
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT, "%s/config.json: \"%s\" is missing",
                                s->directory, key);
    if (!vkmoe_json_as_u64(v, UINT64_MAX, &n))
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s/config.json: \"%s\" is not a whole number", s->directory, key);
    if (n > most)
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s/config.json: \"%s\" is %llu, over the %u vkmoe takes",
                                s->directory, key, (unsigned long long)n, most);
    *out = (uint32_t)n;
    return VKMOE_OK;
}

/* An optional value at most `most`: *out keeps its default when the key is
 * absent or null. */
static vkmoe_status config_optional_u32(const model_source *s, const char *key, uint32_t most,
                                        uint32_t *out)
{
    const vkmoe_json *v = vkmoe_json_get(hyper(s), key);
    return v && v->type != VKMOE_JSON_NULL ? config_u32(s, key, most, out) : VKMOE_OK;
}

static bool config_bool(const model_source *s, const char *key, bool fallback)
{
    const vkmoe_json *v = vkmoe_json_get(hyper(s), key);
    return v && v->type == VKMOE_JSON_BOOL ? v->boolean : fallback;
}

static const char *config_string(const model_source *s, const char *key)
{
    const vkmoe_json *v = vkmoe_json_get(hyper(s), key);
    return v && v->type == VKMOE_JSON_STRING ? v->string : "";
}

/* Whether the config's list `key` of layer numbers holds layer (and, where
 * has_list is not NULL, whether the list is there at all). */
static vkmoe_status config_lists_layer(const model_source *s, const char *key, uint32_t layer,
                                       bool *listed, bool *has_list)
{
    const vkmoe_json *list = vkmoe_json_get(hyper(s), key);
    bool present = list && list->type == VKMOE_JSON_ARRAY;
    *listed = false;
    if (has_list)
        *has_list = present;
    for (uint32_t i = 0; present && i < list->count; i++) {
        uint64_t n;
        if (!vkmoe_json_as_u64(&list->children[i], UINT32_MAX, &n))
            return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                    "%s/config.json: \"%s\" holds a value that is not a layer "
                                    "number",
                                    s->directory, key);
        *listed |= n == layer;
    }
    return VKMOE_OK;
}

/* DeepSeek and the families built on its router (Kimi K2, GLM-4.5): dense
 * layers before first_k_dense_replace and off the MoE layer frequency; the
 * router's scoring, groups and scaling. GLM's configs name neither the
 * scoring (its family's sigmoid) nor the top-k method (groups if given). */
static vkmoe_status describe_deepseek(model_source *s, uint32_t layer, model_layout *l)
{
    vkmoe_layer_params *p = &l->params;
    uint32_t first_moe = 0, frequency = 1, shared = 0;
    VKMOE_TRY(config_optional_u32(s, "first_k_dense_replace", UINT32_MAX, &first_moe));
    VKMOE_TRY(config_optional_u32(s, "moe_layer_freq", UINT32_MAX, &frequency));
    if (layer < first_moe || frequency == 0 || layer % frequency != 0) {
        l->dense = true;
        return VKMOE_OK;
    }
    const char *scoring = config_string(s, "scoring_func");
    if (*scoring)
        p->router =
            strcmp(scoring, "sigmoid") == 0 ? VKMOE_ROUTER_SIGMOID_TOPK : VKMOE_ROUTER_SOFTMAX_TOPK;
    p->selection_bias = p->router == VKMOE_ROUTER_SIGMOID_TOPK;
    p->normalize_topk = config_bool(s, "norm_topk_prob", false);
    const char *method = config_string(s, "topk_method");
    p->expert_groups = p->topk_groups = 1;
    if (!*method) {
        VKMOE_TRY(config_optional_u32(s, "n_group", VKMOE_MAX_GROUPS, &p->expert_groups));
        VKMOE_TRY(config_optional_u32(s, "topk_group", VKMOE_MAX_GROUPS, &p->topk_groups));
    } else if (strcmp(method, "group_limited_greedy") == 0 || strcmp(method, "noaux_tc") == 0) {
        VKMOE_TRY(config_u32(s, "n_group", VKMOE_MAX_GROUPS, &p->expert_groups));
        VKMOE_TRY(config_u32(s, "topk_group", VKMOE_MAX_GROUPS, &p->topk_groups));
    }
    const vkmoe_json *scale = vkmoe_json_get(hyper(s), "routed_scaling_factor");
    p->routed_scaling_factor = scale && scale->type == VKMOE_JSON_NUMBER ? (float)scale->number : 1;
    VKMOE_TRY(config_optional_u32(s, "n_shared_experts", UINT32_MAX, &shared));
    p->shared_ffn_dim = shared * p->ffn_dim;
    return VKMOE_OK;
}

/* Qwen's MoE models: layer N is sparse when N + 1 is a multiple of
 * decoder_sparse_step (default 1) and N is not in mlp_only_layers, as their
 * modeling files decide. */
static vkmoe_status describe_qwen3(model_source *s, uint32_t layer, model_layout *l)
{
    uint32_t step = 1;
    bool listed;
    VKMOE_TRY(config_optional_u32(s, "decoder_sparse_step", UINT32_MAX, &step));
    VKMOE_TRY(config_lists_layer(s, "mlp_only_layers", layer, &listed, NULL));
    l->dense = listed || step == 0 || (layer + 1) % step != 0;
    return VKMOE_OK;
}

/* Qwen1.5/2-MoE and Qwen3-Next: Qwen's sparse layers, and a shared expert
 * gated by sigmoid(x·ws). */
static vkmoe_status describe_qwen2(model_source *s, uint32_t layer, model_layout *l)
{
    VKMOE_TRY(describe_qwen3(s, layer, l));
    VKMOE_TRY(config_optional_u32(s, "shared_expert_intermediate_size", UINT32_MAX,
                                  &l->params.shared_ffn_dim));
    l->params.shared_gate = l->params.shared_ffn_dim > 0;
    return VKMOE_OK;
}

/* ERNIE-4.5: layer N is sparse when N + 1 is a multiple of
 * moe_layer_interval and N lies in [moe_layer_start_index,
 * moe_layer_end_index] (-1 or absent: the last layer), as its modeling
 * file decides; moe_num_shared_experts experts of the routed width make
 * one shared FFN. */
static vkmoe_status describe_ernie(model_source *s, uint32_t layer, model_layout *l)
{
    uint32_t start = 0, interval = 1, end = UINT32_MAX, shared = 0;
    VKMOE_TRY(config_optional_u32(s, "moe_layer_start_index", UINT32_MAX, &start));
    VKMOE_TRY(config_optional_u32(s, "moe_layer_interval", UINT32_MAX, &interval));
    const vkmoe_json *v = vkmoe_json_get(hyper(s), "moe_layer_end_index");
    if (!(v && v->type == VKMOE_JSON_NUMBER && v->number == -1))
        VKMOE_TRY(config_optional_u32(s, "moe_layer_end_index", UINT32_MAX, &end));
    l->dense = interval == 0 || (layer + 1) % interval != 0 || layer < start || layer > end;
    VKMOE_TRY(config_optional_u32(s, "moe_num_shared_experts", UINT32_MAX, &shared));
    l->params.shared_ffn_dim = shared * l->params.ffn_dim;
    return VKMOE_OK;
}

/* GPT-OSS: the clamp of its SwiGLU from the config (alpha is fixed). */
static vkmoe_status describe_gpt_oss(model_source *s, uint32_t layer, model_layout *l)
{
    (void)layer;
    const vkmoe_json *limit = vkmoe_json_get(hyper(s), "swiglu_limit");
    if (limit && limit->type == VKMOE_JSON_NUMBER)
        l->params.swiglu_limit = (float)limit->number;
    return VKMOE_OK;
}

/* Llama 4: MoE layers are moe_layers, or every interleave_moe_layer_step-th
 * (the step's multiples, less one), as its config decides; one shared
 * expert of the routed width. */
static vkmoe_status describe_llama4(model_source *s, uint32_t layer, model_layout *l)
{
    bool listed, has_list;
    VKMOE_TRY(config_lists_layer(s, "moe_layers", layer, &listed, &has_list));
    uint32_t step = 1;
    if (!has_list)
        VKMOE_TRY(config_optional_u32(s, "interleave_moe_layer_step", UINT32_MAX, &step));
    l->dense = has_list ? !listed : step == 0 || (layer + 1) % step != 0;
    l->params.shared_ffn_dim = l->params.ffn_dim;
    return VKMOE_OK;
}

typedef vkmoe_status (*hf_describer)(model_source *s, uint32_t layer, model_layout *l);

typedef struct hf_family {
    const char *model_type;
    const char *family;         /* vkmoe_layer_params_family */
    const char *block;          /* the MoE block under model.layers.N. */
    const char *matrix[3];      /* gate, up, down of expert %u */
    const char *experts_key;    /* number of routed experts */
    const char *ffn_key;        /* an expert's width */
    const char *shared;         /* the shared expert(s) under the block */
    const char *selection_bias; /* the selection bias under the block */
    hf_describer describe;      /* the family's own keys, or NULL */
    const char *top_k_key;      /* NULL: num_experts_per_tok */
    const char *router;         /* the router's module under the block; NULL: gate */
    /* The experts' matrices are stacked tensors [E][rows][cols] named
     * <matrix> under the block; gate and up of the same name are one
     * fused tensor, gate's rows first (Granite's input_linear), or with
     * `interleaved` gate's rows even and up's odd (GPT-OSS's gate_up_proj). */
    bool stacked, interleaved;
    /* The stacked tensors are [E][cols][rows], the input dimension first
     * (Llama 4's gate_up_proj [E][D][2F] and down_proj [E][F][D]). */
    bool transposed;
    const char *layers;           /* the layers' prefix; NULL: model.layers. */
    const char *shared_matrix[3]; /* the shared expert's gate, up, down; NULL: matrix */
    /* The stacked matrices are MXFP4 as <matrix>_blocks and <matrix>_scales,
     * their biases <matrix>_bias (GPT-OSS). */
    bool mxfp4;
} hf_family;
_Static_assert(offsetof(hf_family, model_type) == 0, "vkmoe_find_named reads the name first");

#define PROJ                                                                                       \
    {                                                                                              \
        "gate_proj", "up_proj", "down_proj"                                                        \
    }
#define MIXTRAL_W                                                                                  \
    {                                                                                              \
        "w1", "w3", "w2"                                                                           \
    }
#define DEEPSEEK_KEYS                                                                              \
    .block = "mlp", .matrix = PROJ, .experts_key = "n_routed_experts",                             \
    .ffn_key = "moe_intermediate_size", .shared = "shared_experts",                                \
    .selection_bias = "gate.e_score_correction_bias", .describe = describe_deepseek

#define QWEN_KEYS                                                                                  \
    .block = "mlp", .matrix = PROJ, .experts_key = "num_experts", .ffn_key = "moe_intermediate_size"
#define QWEN_SHARED .shared = "shared_expert", .describe = describe_qwen2
#define MIXTRAL_KEYS                                                                               \
    .block = "block_sparse_moe", .matrix = MIXTRAL_W, .experts_key = "num_local_experts",          \
    .ffn_key = "intermediate_size"
#define LLAMA4_KEYS                                                                                \
    .family = "llama4", .block = "feed_forward",                                                   \
    .matrix = {"experts.gate_up_proj", "experts.gate_up_proj", "experts.down_proj"},               \
    .experts_key = "num_local_experts", .ffn_key = "intermediate_size", .shared = "shared_expert", \
    .describe = describe_llama4, .router = "router", .stacked = true, .transposed = true,          \
    .shared_matrix = PROJ

static const hf_family families[] = {
    {.model_type = "mixtral", .family = "mixtral", MIXTRAL_KEYS},
    {.model_type = "qwen2_moe", .family = "qwen2-moe", QWEN_KEYS, QWEN_SHARED},
    {.model_type = "qwen3_moe", .family = "qwen3-moe", QWEN_KEYS, .describe = describe_qwen3},
    {.model_type = "qwen3_next", .family = "qwen3-next", QWEN_KEYS, QWEN_SHARED},
    {.model_type = "olmoe",
     .family = "olmoe",
     .block = "mlp",
     .matrix = PROJ,
     .experts_key = "num_experts",
     .ffn_key = "intermediate_size"},
    {.model_type = "deepseek_v2", .family = "deepseek-v2", DEEPSEEK_KEYS},
    {.model_type = "deepseek_v3", .family = "deepseek-v3", DEEPSEEK_KEYS},
    {.model_type = "kimi_k2", .family = "kimi-k2", DEEPSEEK_KEYS},
    {.model_type = "glm4_moe", .family = "glm4-moe", DEEPSEEK_KEYS},
    {.model_type = "minimax_m2",
     .family = "minimax-m2",
     MIXTRAL_KEYS,
     .selection_bias = "e_score_correction_bias"},
    {.model_type = "ernie4_5_moe",
     .family = "ernie-4.5-moe",
     .block = "mlp",
     .matrix = PROJ,
     .experts_key = "moe_num_experts",
     .ffn_key = "moe_intermediate_size",
     .shared = "shared_experts",
     .selection_bias = "moe_statics.e_score_correction_bias",
     .describe = describe_ernie,
     .top_k_key = "moe_k"},
    {.model_type = "granitemoe",
     .family = "granite-moe",
     .block = "block_sparse_moe",
     .matrix = {"input_linear.weight", "input_linear.weight", "output_linear.weight"},
     .experts_key = "num_local_experts",
     .ffn_key = "intermediate_size",
     .router = "router.layer",
     .stacked = true},
    {.model_type = "gpt_oss",
     .family = "gpt-oss",
     .block = "mlp",
     .matrix = {"experts.gate_up_proj", "experts.gate_up_proj", "experts.down_proj"},
     .experts_key = "num_local_experts",
     .ffn_key = "intermediate_size",
     .describe = describe_gpt_oss,
     .router = "router",
     .stacked = true,
     .interleaved = true,
     .mxfp4 = true},
    /* the released multimodal checkpoints, then the text model's */
    {.model_type = "llama4", LLAMA4_KEYS, .layers = "language_model.model.layers."},
    {.model_type = "llama4_text", LLAMA4_KEYS},
};

static vkmoe_status find_family(const model_source *s, const hf_family **out)
{
    const vkmoe_json *model_type = vkmoe_json_get(&s->config, "model_type"); /* never nested */
    const char *type =
        model_type && model_type->type == VKMOE_JSON_STRING ? model_type->string : "";
    char known[256];
    if ((*out = VKMOE_FIND_NAMED(families, type, known, sizeof(known))))
        return VKMOE_OK;
    return vkmoe_model_fail(s, VKMOE_ERROR_UNSUPPORTED,
                            "%s/config.json: model_type \"%s\" is not supported (%s)", s->directory,
                            type, known);
}

static void name_tensors(model_layout *l, const hf_family *f, uint32_t layer)
{
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "%s%u.%s.", f->layers ? f->layers : "model.layers.", layer,
             f->block);
    snprintf(l->router, sizeof(l->router), "%s%s.weight", prefix, f->router ? f->router : "gate");
    if (l->params.selection_bias)
        snprintf(l->selection_bias, sizeof(l->selection_bias), "%s%s", prefix, f->selection_bias);
    if (l->params.router_bias)
        snprintf(l->router_bias, sizeof(l->router_bias), "%s%s.bias", prefix,
                 f->router ? f->router : "gate");
    l->stacked = f->stacked;
    l->transposed = f->transposed;
    l->mxfp4_pairs = f->mxfp4;
    if (f->stacked && strcmp(f->matrix[0], f->matrix[1]) == 0) {
        l->tensor_rows[0] = l->tensor_rows[1] = 2 * l->params.ffn_dim;
        l->row_step[0] = l->row_step[1] = f->interleaved ? 2 : 1;
        l->row_first[1] = f->interleaved ? 1 : l->params.ffn_dim;
    }
    for (int m = 0; m < 3; m++) {
        if (l->params.expert_bias)
            snprintf(l->expert_bias[m], sizeof(l->expert_bias[m]), "%s%s_bias", prefix,
                     f->matrix[m]);
        if (f->stacked)
            snprintf(l->expert[m], sizeof(l->expert[m]), "%s%s", prefix, f->matrix[m]);
        else
            snprintf(l->expert[m], sizeof(l->expert[m]), "%sexperts.%%u.%s.weight", prefix,
                     f->matrix[m]);
        if (l->params.shared_ffn_dim)
            snprintf(l->shared[m], sizeof(l->shared[m]), "%s%s.%s.weight", prefix, f->shared,
                     f->shared_matrix[m] ? f->shared_matrix[m] : f->matrix[m]);
    }
    if (l->params.shared_gate)
        snprintf(l->shared_gate, sizeof(l->shared_gate), "%sshared_expert_gate.weight", prefix);
}

vkmoe_status vkmoe_model_describe_hf(model_source *s, uint32_t layer, model_layout *l)
{
    const hf_family *f = NULL;
    VKMOE_TRY(find_family(s, &f));
    vkmoe_layer_params *p = &l->params;
    vkmoe_layer_params_family(p, f->family);
    VKMOE_TRY(config_u32(s, "hidden_size", UINT32_MAX, &p->dim));
    VKMOE_TRY(config_u32(s, f->ffn_key, UINT32_MAX, &p->ffn_dim));
    VKMOE_TRY(config_u32(s, f->experts_key, VKMOE_MAX_EXPERTS, &p->experts));
    VKMOE_TRY(config_u32(s, f->top_k_key ? f->top_k_key : "num_experts_per_tok", VKMOE_MAX_TOP_K,
                         &p->top_k));
    VKMOE_TRY(config_optional_u32(s, "num_hidden_layers", UINT32_MAX, &l->layers));
    /* the family's choice where the config is silent (Mixtral's, MiniMax-M2's) */
    p->normalize_topk = config_bool(s, "norm_topk_prob", p->normalize_topk);
    if (f->describe)
        VKMOE_TRY(f->describe(s, layer, l));
    if (!l->dense)
        name_tensors(l, f, layer);
    return VKMOE_OK;
}
