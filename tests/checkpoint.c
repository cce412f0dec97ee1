/* Model files of a test layer's weights: Hugging Face checkpoints (one
 * file or sharded) and GGUF files, as each family names its tensors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "tensor_file.h"

enum {
    GGUF_F32 = 0,
    GGUF_F16 = 1,
    GGUF_Q4_0 = 2,
    GGUF_Q4_1 = 3,
    GGUF_Q5_0 = 6,
    GGUF_Q5_1 = 7,
    GGUF_Q8_0 = 8,
    GGUF_Q2_K = 10,
    GGUF_Q3_K = 11,
    GGUF_Q4_K = 12,
    GGUF_Q5_K = 13,
    GGUF_Q6_K = 14,
    GGUF_IQ4_NL = 20,
    GGUF_IQ4_XS = 23,
    GGUF_BF16 = 30,
    GGUF_MXFP4 = 39
};

const char *const checkpoint_files[] = {"config.json",
                                        "model.safetensors",
                                        "model.safetensors.index.json",
                                        "model.gguf",
                                        "model-00001-of-00002.safetensors",
                                        "model-00002-of-00002.safetensors",
                                        "model-00001-of-00003.safetensors",
                                        "model-00002-of-00003.safetensors",
                                        "model-00003-of-00003.safetensors",
                                        "model2.gguf"};
const size_t checkpoint_file_count = VKMOE_ARRAY_SIZE(checkpoint_files);

static const char *path_in(const char *dir, const char *name)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path;
}

/* Weights as the file's type holds them, so that the reference computes
 * with exactly what the device gets; vectors too, as the file stores them. */
static void round_vectors(test_layer *t)
{
    /* GGUF keeps vectors in f32 beside quantized matrices. */
    vkmoe_weight_type type =
        vkmoe_weight_blocked(t->params.weight_type) ? VKMOE_WEIGHT_F32 : t->params.weight_type;
    float *vectors[] = {t->router,  t->router_bias, t->selection_bias,     t->gate_bias,
                        t->up_bias, t->down_bias,   t->shared_gate_weights};
    size_t e = t->params.experts, d = t->params.dim, f = t->params.ffn_dim;
    size_t sizes[] = {e * d, e, e, e * f, e * f, e * d, d};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(vectors); i++)
        if (vectors[i])
            vkmoe_ref_round_weights(type, vectors[i], sizes[i]);
}

/* Random weights for params, without a layer of their own. */
void checkpoint_weights(vkmoe_context *ctx, vkmoe_layer_params p, test_layer *t)
{
    test_layer_create(ctx, &p, t);
    vkmoe_layer_destroy(&t->layer);
    round_vectors(t);
}

static const char *st_dtype(vkmoe_weight_type type)
{
    return type == VKMOE_WEIGHT_F32 ? "F32" : type == VKMOE_WEIGHT_F16 ? "F16" : "BF16";
}

static uint32_t gguf_type(vkmoe_weight_type type)
{
    static const uint32_t types[] = {
        [VKMOE_WEIGHT_F32] = GGUF_F32,       [VKMOE_WEIGHT_F16] = GGUF_F16,
        [VKMOE_WEIGHT_BF16] = GGUF_BF16,     [VKMOE_WEIGHT_Q8_0] = GGUF_Q8_0,
        [VKMOE_WEIGHT_Q4_0] = GGUF_Q4_0,     [VKMOE_WEIGHT_Q4_K] = GGUF_Q4_K,
        [VKMOE_WEIGHT_Q6_K] = GGUF_Q6_K,     [VKMOE_WEIGHT_Q4_1] = GGUF_Q4_1,
        [VKMOE_WEIGHT_Q5_0] = GGUF_Q5_0,     [VKMOE_WEIGHT_Q5_1] = GGUF_Q5_1,
        [VKMOE_WEIGHT_Q5_K] = GGUF_Q5_K,     [VKMOE_WEIGHT_Q3_K] = GGUF_Q3_K,
        [VKMOE_WEIGHT_Q2_K] = GGUF_Q2_K,     [VKMOE_WEIGHT_IQ4_NL] = GGUF_IQ4_NL,
        [VKMOE_WEIGHT_IQ4_XS] = GGUF_IQ4_XS, [VKMOE_WEIGHT_MXFP4] = GGUF_MXFP4};
    return types[type];
}

/* The values of a tensor of this shape in this type (caller frees). */
static void *encode(vkmoe_weight_type type, const float *values, const uint64_t *shape,
                    uint32_t dims, size_t *bytes)
{
    size_t n = 1;
    for (uint32_t d = 0; d < dims; d++)
        n *= shape[d];
    void *data = malloc(n * 4 + 1);
    assert_non_null(data);
    *bytes = vkmoe_ref_encode_weights(type, values, n, data);
    return data;
}

/* A writer's way of adding a tensor of encoded data: st_add's or
 * gguf_add_tensor's, with the type translated. */
typedef void (*tensor_adder)(void *writer, const char *name, vkmoe_weight_type type,
                             const uint64_t *shape, uint32_t dims, const void *data, size_t bytes);

/* Add values in this type under name with the writer's adder. */
static void put_encoded(tensor_adder add, void *writer, vkmoe_weight_type type, const char *name,
                        const float *values, const uint64_t *shape, uint32_t dims)
{
    size_t bytes;
    void *data = encode(type, values, shape, dims, &bytes);
    add(writer, name, type, shape, dims, data, bytes);
    free(data);
}

static void st_adder(void *w, const char *name, vkmoe_weight_type type, const uint64_t *shape,
                     uint32_t dims, const void *data, size_t bytes)
{
    st_add(w, name, st_dtype(type), shape, dims, data, bytes);
}

/* Add values in this type under name, with a row-major shape. */
static void st_put(st_writer *w, vkmoe_weight_type type, const char *name, const float *values,
                   const uint64_t *shape, uint32_t dims)
{
    put_encoded(st_adder, w, type, name, values, shape, dims);
}

/* st_put under the name prefix + suffix. */
static void st_put_at(st_writer *w, vkmoe_weight_type type, const char *prefix, const char *suffix,
                      const float *values, const uint64_t *shape, uint32_t dims)
{
    char name[256];
    snprintf(name, sizeof(name), "%s%s", prefix, suffix);
    st_put(w, type, name, values, shape, dims);
}

/* Granite's stacked experts, gate and up fused. */
static void st_put_fused_experts(st_writer *w, const test_layer *t, const char *prefix,
                                 const hf_names *names)
{
    const vkmoe_layer_params *p = &t->params;
    size_t f = p->ffn_dim, d = p->dim, e = p->experts;
    float *fused = malloc(e * 2 * f * d * sizeof(float));
    assert_non_null(fused);
    for (size_t i = 0; i < e; i++) {
        memcpy(fused + (2 * i) * f * d, t->gate + i * f * d, f * d * sizeof(float));
        memcpy(fused + (2 * i + 1) * f * d, t->up + i * f * d, f * d * sizeof(float));
    }
    char name[256];
    snprintf(name, sizeof(name), "%s%s.weight", prefix, names->gate);
    st_put(w, p->weight_type, name, fused, (uint64_t[]){e, 2 * f, d}, 3);
    snprintf(name, sizeof(name), "%s%s.weight", prefix, names->down);
    st_put(w, p->down_weight_type, name, t->down, (uint64_t[]){e, d, f}, 3);
    free(fused);
}

static void st_put_experts(st_writer *w, const test_layer *t, const char *prefix,
                           const hf_names *names)
{
    if (names->fused) {
        st_put_fused_experts(w, t, prefix, names);
        return;
    }
    const vkmoe_layer_params *p = &t->params;
    size_t f = p->ffn_dim, d = p->dim;
    const char *kinds[3] = {names->gate, names->up, names->down};
    const float *weights[3] = {t->gate, t->up, t->down};
    for (uint32_t e = 0; e < p->experts; e++)
        for (int m = 0; m < 3; m++) {
            char name[256];
            snprintf(name, sizeof(name), "%sexperts.%u.%s.weight", prefix, e, kinds[m]);
            uint64_t shape[2] = {m == 2 ? d : f, m == 2 ? f : d};
            st_put(w, vkmoe_matrix_type(p, m), name, weights[m] + e * f * d, shape, 2);
        }
    for (int m = 0; p->shared_ffn_dim && m < 3; m++) {
        const float *shared[3] = {t->shared_gate, t->shared_up, t->shared_down};
        char name[256];
        snprintf(name, sizeof(name), "%s%s.%s.weight", prefix, names->shared, kinds[m]);
        uint64_t shape[2] = {m == 2 ? d : p->shared_ffn_dim, m == 2 ? p->shared_ffn_dim : d};
        st_put(w, vkmoe_matrix_type(p, m), name, shared[m], shape, 2);
    }
}

/* Rows of one MXFP4 matrix as GPT-OSS's checkpoints hold them: codes
 * (element 2j in byte j's low nibble) into codes, exponents into scales. */
static void hf_mxfp4_rows(const float *values, size_t rows, size_t cols, uint8_t *codes,
                          uint8_t *scales)
{
    size_t blocks = cols / 32;
    uint8_t *packed = malloc(blocks * 17);
    assert_non_null(packed);
    for (size_t r = 0; r < rows; r++) {
        vkmoe_ref_encode_weights(VKMOE_WEIGHT_MXFP4, values + r * cols, cols, packed);
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *blk = packed + b * 17;
            scales[r * blocks + b] = blk[0];
            for (int j = 0; j < 16; j++) {
                int lo = 2 * j, hi = 2 * j + 1;
                uint8_t code_lo = lo < 16 ? blk[1 + lo] & 0xf : blk[1 + lo - 16] >> 4;
                uint8_t code_hi = hi < 16 ? blk[1 + hi] & 0xf : blk[1 + hi - 16] >> 4;
                codes[(r * blocks + b) * 16 + j] = (uint8_t)(code_lo | code_hi << 4);
            }
        }
    }
    free(packed);
}

/* One GPT-OSS expert tensor, prefix + stem: rows [E][rows][cols] as
 * _blocks, _scales. */
static void st_put_mxfp4(st_writer *w, const char *prefix, const char *stem, const float *values,
                         size_t experts, size_t rows, size_t cols)
{
    char name[256];
    snprintf(name, sizeof(name), "%s%s", prefix, stem);
    size_t blocks = cols / 32;
    uint8_t *codes = malloc(experts * rows * blocks * 16),
            *scales = malloc(experts * rows * blocks);
    assert_true(codes && scales);
    hf_mxfp4_rows(values, experts * rows, cols, codes, scales);
    char full[300];
    snprintf(full, sizeof(full), "%s_blocks", name);
    st_add(w, full, "U8", (uint64_t[]){experts, rows, blocks, 16}, 4, codes,
           experts * rows * blocks * 16);
    snprintf(full, sizeof(full), "%s_scales", name);
    st_add(w, full, "U8", (uint64_t[]){experts, rows, blocks}, 3, scales, experts * rows * blocks);
    free(codes);
    free(scales);
}

/* GPT-OSS's MoE block: gate and up interleaved row by row in gate_up_proj
 * (and its bias), MXFP4 as blocks and scales. */
static void st_put_gpt_oss(st_writer *w, const test_layer *t, const char *prefix)
{
    const vkmoe_layer_params *p = &t->params;
    size_t e = p->experts, f = p->ffn_dim, d = p->dim;
    st_put_at(w, VKMOE_WEIGHT_F32, prefix, "router.weight", t->router, (uint64_t[]){e, d}, 2);
    st_put_at(w, VKMOE_WEIGHT_F32, prefix, "router.bias", t->router_bias, (uint64_t[]){e}, 1);
    float *fused = malloc(e * 2 * f * d * sizeof(float)), *bias = malloc(e * 2 * f * sizeof(float));
    assert_true(fused && bias);
    for (size_t x = 0; x < e; x++)
        for (size_t r = 0; r < f; r++) {
            memcpy(fused + ((x * 2 * f) + 2 * r) * d, t->gate + (x * f + r) * d, d * 4);
            memcpy(fused + ((x * 2 * f) + 2 * r + 1) * d, t->up + (x * f + r) * d, d * 4);
            bias[x * 2 * f + 2 * r] = t->gate_bias[x * f + r];
            bias[x * 2 * f + 2 * r + 1] = t->up_bias[x * f + r];
        }
    st_put_mxfp4(w, prefix, "experts.gate_up_proj", fused, e, 2 * f, d);
    st_put_at(w, VKMOE_WEIGHT_F32, prefix, "experts.gate_up_proj_bias", bias,
              (uint64_t[]){e, 2 * f}, 2);
    st_put_mxfp4(w, prefix, "experts.down_proj", t->down, e, d, f);
    st_put_at(w, VKMOE_WEIGHT_F32, prefix, "experts.down_proj_bias", t->down_bias,
              (uint64_t[]){e, d}, 2);
    free(fused);
    free(bias);
}

/* Llama 4's MoE block: the experts stacked with the input dimension
 * first, gate's and up's columns side by side. */
static void st_put_llama4(st_writer *w, const test_layer *t, const char *prefix)
{
    const vkmoe_layer_params *p = &t->params;
    size_t e = p->experts, f = p->ffn_dim, d = p->dim;
    char name[256];
    st_put_at(w, p->weight_type, prefix, "router.weight", t->router, (uint64_t[]){e, d}, 2);
    float *gate_up = malloc(e * d * 2 * f * sizeof(float)), *down = malloc(e * f * d * 4);
    assert_true(gate_up && down);
    for (size_t x = 0; x < e; x++)
        for (size_t r = 0; r < f; r++)
            for (size_t c = 0; c < d; c++) {
                gate_up[(x * d + c) * 2 * f + r] = t->gate[(x * f + r) * d + c];
                gate_up[(x * d + c) * 2 * f + f + r] = t->up[(x * f + r) * d + c];
                down[(x * f + r) * d + c] = t->down[(x * d + c) * f + r];
            }
    st_put_at(w, p->weight_type, prefix, "experts.gate_up_proj", gate_up, (uint64_t[]){e, d, 2 * f},
              3);
    st_put_at(w, p->down_weight_type, prefix, "experts.down_proj", down, (uint64_t[]){e, f, d}, 3);
    const char *kinds[3] = {"gate_proj", "up_proj", "down_proj"};
    const float *shared[3] = {t->shared_gate, t->shared_up, t->shared_down};
    size_t fs = p->shared_ffn_dim;
    for (int m = 0; m < 3; m++) {
        snprintf(name, sizeof(name), "%sshared_expert.%s.weight", prefix, kinds[m]);
        st_put(w, vkmoe_matrix_type(p, m), name, shared[m],
               (uint64_t[]){m == 2 ? d : fs, m == 2 ? fs : d}, 2);
    }
    free(gate_up);
    free(down);
}

/* Layer `layer`'s tensors under model.layers.N.<block>. */
static void st_put_layer(st_writer *w, const test_layer *t, const hf_names *names, uint32_t layer)
{
    const vkmoe_layer_params *p = &t->params;
    char prefix[128], name[256];
    snprintf(prefix, sizeof(prefix), "%s%u.%s.", names->layers ? names->layers : "model.layers.",
             layer, names->block);
    if (names->gpt_oss) {
        st_put_gpt_oss(w, t, prefix);
        return;
    }
    if (names->llama4) {
        st_put_llama4(w, t, prefix);
        return;
    }
    snprintf(name, sizeof(name), "%s%s.weight", prefix, names->router ? names->router : "gate");
    st_put(w, p->weight_type, name, t->router, (uint64_t[]){p->experts, p->dim}, 2);
    if (p->selection_bias) {
        snprintf(name, sizeof(name), "%s%s", prefix, names->selection_bias);
        st_put(w, p->weight_type, name, t->selection_bias, (uint64_t[]){p->experts}, 1);
    }
    if (p->shared_gate) {
        snprintf(name, sizeof(name), "%sshared_expert_gate.weight", prefix);
        st_put(w, p->weight_type, name, t->shared_gate_weights, (uint64_t[]){1, p->dim}, 2);
    }
    st_put_experts(w, t, prefix, names);
}

void checkpoint_write_hf(const char *dir, const test_layer *t, const char *config,
                         const hf_names *names, uint32_t layer, uint32_t shards)
{
    const test_layer **layers = calloc(layer + 1, sizeof(*layers));
    assert_non_null(layers);
    layers[layer] = t;
    checkpoint_write_hf_model(dir, layers, layer + 1, config, names, shards);
    free(layers);
}

void checkpoint_write_hf_model(const char *dir, const test_layer *const *layers, uint32_t count,
                               const char *config, const hf_names *names, uint32_t shards)
{
    char name[256];
    st_writer w = {0};
    for (uint32_t i = 0; i < count; i++)
        if (layers[i])
            st_put_layer(&w, layers[i], names, i);
    byte_buffer file;
    st_finish(&w, &file);
    byte_buffer text = {0};
    buffer_append(&text, config, strlen(config));
    assert_true(buffer_write_file(&text, path_in(dir, "config.json")));
    buffer_free(&text);
    if (shards <= 1) {
        unlink(path_in(dir, "model.safetensors.index.json"));
        assert_true(buffer_write_file(&file, path_in(dir, "model.safetensors")));
    } else {
        /* The same file under every shard name; the index spreads the
         * tensors round-robin, so each shard is needed and opened. */
        vkmoe_tensor_file parsed;
        char error[256];
        assert_true(vkmoe_safetensors_parse(file.data, file.size, &parsed, error, 256));
        byte_buffer index = {0};
        buffer_append(&index, "{\"metadata\": {}, \"weight_map\": {", 32);
        for (uint32_t i = 0; i < parsed.tensor_count; i++) {
            char entry[320];
            snprintf(entry, sizeof(entry), "%s\"%s\": \"model-%05u-of-%05u.safetensors\"",
                     i ? ", " : "", parsed.tensors[i].name, i % shards + 1, shards);
            buffer_append(&index, entry, strlen(entry));
        }
        buffer_append(&index, "}}", 2);
        for (uint32_t i = 0; i < shards; i++) {
            snprintf(name, sizeof(name), "model-%05u-of-%05u.safetensors", i + 1, shards);
            assert_true(buffer_write_file(&file, path_in(dir, name)));
        }
        unlink(path_in(dir, "model.safetensors"));
        assert_true(buffer_write_file(&index, path_in(dir, "model.safetensors.index.json")));
        buffer_free(&index);
        vkmoe_tensor_file_free(&parsed);
    }
    buffer_free(&file);
}

#define NAMES(block_, gate_, up_, down_, shared_, bias_)                                           \
    {                                                                                              \
        .block = block_, .gate = gate_, .up = up_, .down = down_, .shared = shared_,               \
        .selection_bias = bias_                                                                    \
    }
const hf_names checkpoint_mixtral_names = NAMES("block_sparse_moe", "w1", "w3", "w2", "", "");
const hf_names checkpoint_qwen_names =
    NAMES("mlp", "gate_proj", "up_proj", "down_proj", "shared_expert", "");
/* DeepSeek's, Kimi K2's and GLM-4.5's */
const hf_names checkpoint_deepseek_names = NAMES("mlp", "gate_proj", "up_proj", "down_proj",
                                                 "shared_experts", "gate.e_score_correction_bias");
/* MiniMax-M2: Mixtral's names, the selection bias beside the gate */
const hf_names checkpoint_minimax_names =
    NAMES("block_sparse_moe", "w1", "w3", "w2", "", "e_score_correction_bias");
/* ERNIE-4.5: Qwen's names, its bias in moe_statics */
const hf_names checkpoint_ernie_names =
    NAMES("mlp", "gate_proj", "up_proj", "down_proj", "shared_experts",
          "moe_statics.e_score_correction_bias");
const hf_names checkpoint_granite_names = {.block = "block_sparse_moe",
                                           .gate = "input_linear",
                                           .up = "input_linear",
                                           .down = "output_linear",
                                           .shared = "",
                                           .selection_bias = "",
                                           .router = "router.layer",
                                           .fused = true};

const hf_names checkpoint_gpt_oss_names = {.block = "mlp", .gpt_oss = true};
const hf_names checkpoint_llama4_names = {
    .block = "feed_forward", .llama4 = true, .layers = "language_model.model.layers."};
const hf_names checkpoint_llama4_text_names = {.block = "feed_forward", .llama4 = true};

/* GGUF's, dims innermost first. */
static void gguf_adder(void *w, const char *name, vkmoe_weight_type type, const uint64_t *ne,
                       uint32_t dims, const void *data, size_t bytes)
{
    gguf_add_tensor(w, name, gguf_type(type), ne, dims, data, bytes);
}

static void gguf_put_f32(gguf_writer *w, const char *name, const float *values, const uint64_t *ne,
                         uint32_t dims, size_t n)
{
    gguf_add_tensor(w, name, GGUF_F32, ne, dims, values, n * 4);
}

static void gguf_put_layer(gguf_writer *w, const test_layer *t, uint32_t layer)
{
    const vkmoe_layer_params *p = &t->params;
    uint64_t d = p->dim, f = p->ffn_dim, e = p->experts, fs = p->shared_ffn_dim;
    char name[128];
    const char *kinds[3] = {"gate", "up", "down"};
    const float *experts[3] = {t->gate, t->up, t->down};
    const float *biases[3] = {t->gate_bias, t->up_bias, t->down_bias};
    const float *shared[3] = {t->shared_gate, t->shared_up, t->shared_down};
    snprintf(name, sizeof(name), "blk.%u.ffn_gate_inp.weight", layer);
    gguf_put_f32(w, name, t->router, (uint64_t[]){d, e}, 2, d * e);
    if (p->router_bias) {
        snprintf(name, sizeof(name), "blk.%u.ffn_gate_inp.bias", layer);
        gguf_put_f32(w, name, t->router_bias, (uint64_t[]){e}, 1, e);
    }
    if (p->selection_bias) {
        snprintf(name, sizeof(name), "blk.%u.exp_probs_b.bias", layer);
        gguf_put_f32(w, name, t->selection_bias, (uint64_t[]){e}, 1, e);
    }
    if (p->shared_gate) {
        snprintf(name, sizeof(name), "blk.%u.ffn_gate_inp_shexp.weight", layer);
        gguf_put_f32(w, name, t->shared_gate_weights, (uint64_t[]){d}, 1, d);
    }
    for (int m = 0; m < 3; m++) {
        uint64_t inner = m == 2 ? f : d, outer = m == 2 ? d : f;
        snprintf(name, sizeof(name), "blk.%u.ffn_%s_exps.weight", layer, kinds[m]);
        put_encoded(gguf_adder, w, vkmoe_matrix_type(p, m), name, experts[m],
                    (uint64_t[]){inner, outer, e}, 3);
        if (p->expert_bias) {
            snprintf(name, sizeof(name), "blk.%u.ffn_%s_exps.bias", layer, kinds[m]);
            gguf_put_f32(w, name, biases[m], (uint64_t[]){outer, e}, 2, outer * e);
        }
        if (fs) {
            uint64_t sin = m == 2 ? fs : d, sout = m == 2 ? d : fs;
            snprintf(name, sizeof(name), "blk.%u.ffn_%s_shexp.weight", layer, kinds[m]);
            put_encoded(gguf_adder, w, vkmoe_matrix_type(p, m), name, shared[m],
                        (uint64_t[]){sin, sout}, 2);
        }
    }
}

void checkpoint_write_gguf(const char *path, gguf_writer *w, const test_layer *t, const char *arch,
                           uint32_t layer)
{
    const test_layer **layers = calloc(layer + 1, sizeof(*layers));
    assert_non_null(layers);
    layers[layer] = t;
    checkpoint_write_gguf_model(path, w, layers, layer + 1, arch);
    free(layers);
}

void checkpoint_write_gguf_model(const char *path, gguf_writer *w, const test_layer *const *layers,
                                 uint32_t count, const char *arch)
{
    const test_layer *t = NULL;
    for (uint32_t i = count; i-- > 0;)
        t = layers[i] ? layers[i] : t;
    assert_non_null(t);
    const vkmoe_layer_params *p = &t->params;
    char key[96];
    gguf_add_string(w, "general.architecture", arch);
    snprintf(key, sizeof(key), "%s.embedding_length", arch);
    gguf_add_u32(w, key, p->dim);
    snprintf(key, sizeof(key), "%s.%s", arch,
             strcmp(arch, "llama") == 0 || strcmp(arch, "granitemoe") == 0
                 ? "feed_forward_length"
                 : "expert_feed_forward_length");
    gguf_add_u32(w, key, p->ffn_dim);
    snprintf(key, sizeof(key), "%s.expert_count", arch);
    gguf_add_u32(w, key, p->experts);
    snprintf(key, sizeof(key), "%s.expert_used_count", arch);
    gguf_add_u32(w, key, p->top_k);
    for (uint32_t i = 0; i < count; i++)
        if (layers[i])
            gguf_put_layer(w, layers[i], i);
    byte_buffer file;
    gguf_finish(w, &file);
    assert_true(buffer_write_file(&file, path));
    buffer_free(&file);
}

void checkpoint_deepseek_v3_meta(gguf_writer *w)
{
    gguf_add_u32(w, "deepseek2.expert_gating_func", 2);
    gguf_add_u32(w, "deepseek2.expert_group_count", 8);
    gguf_add_u32(w, "deepseek2.expert_group_used_count", 4);
    gguf_add_u32(w, "deepseek2.expert_shared_count", 1);
    gguf_add_f32(w, "deepseek2.expert_weights_scale", 2.5f);
    gguf_add_bool(w, "deepseek2.expert_weights_norm", true);
}

void checkpoint_write_mixtral_files(const char *dir, const test_layer *t, uint32_t shards)
{
    const vkmoe_layer_params *p = &t->params;
    char config[256], path[300];
    snprintf(config, sizeof(config),
             "{\"model_type\": \"mixtral\", \"hidden_size\": %u, \"intermediate_size\": %u, "
             "\"num_local_experts\": %u, \"num_experts_per_tok\": %u}",
             p->dim, p->ffn_dim, p->experts, p->top_k);
    checkpoint_write_hf(dir, t, config, &checkpoint_mixtral_names, 0, shards);
    snprintf(path, sizeof(path), "%s/model.gguf", dir);
    gguf_writer w = {0};
    checkpoint_write_gguf(path, &w, t, "llama", 0);
    snprintf(path, sizeof(path), "%s/model2.gguf", dir);
    gguf_writer two = {0};
    gguf_add_u32(&two, "llama.block_count", 2);
    const test_layer *both[2] = {t, t};
    checkpoint_write_gguf_model(path, &two, both, 2, "llama");
}
