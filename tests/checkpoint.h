/* Model files of test layers, for the loader and vkmoe-run tests. */
#ifndef VKMOE_TEST_CHECKPOINT_H
#define VKMOE_TEST_CHECKPOINT_H

#include "helpers.h"
#include "model_writer.h"

/* Hugging Face tensor names of one family: the block under
 * model.layers.N., the three matrices, the shared expert's module, the
 * selection bias under the block. */
typedef struct hf_names {
    const char *block, *gate, *up, *down, *shared, *selection_bias;
    const char *router; /* NULL: gate */
    /* Granite's experts: <gate>.weight [E][2F][D] holding gate's rows then
     * up's, <down>.weight [E][D][F] */
    bool fused;
    /* GPT-OSS's: router.weight and .bias, experts.gate_up_proj (gate and up
     * rows interleaved) and experts.down_proj as MXFP4 _blocks and _scales
     * tensors, with _bias */
    bool gpt_oss;
    /* Llama 4's: router.weight, experts.gate_up_proj [E][D][2F] and
     * experts.down_proj [E][F][D] (input dimension first), shared_expert.* */
    bool llama4;
    const char *layers; /* the layers' prefix; NULL: model.layers. */
} hf_names;

extern const hf_names checkpoint_mixtral_names, checkpoint_qwen_names, checkpoint_deepseek_names,
    checkpoint_minimax_names, checkpoint_ernie_names, checkpoint_granite_names,
    checkpoint_gpt_oss_names, checkpoint_llama4_names, checkpoint_llama4_text_names;

/* Every file the writers below may leave in a directory (for teardowns). */
extern const char *const checkpoint_files[];
extern const size_t checkpoint_file_count;

/* Random weights for params, rounded to the weight type (vectors too, as a
 * file stores them), without a layer of their own (t->layer is NULL). */
void checkpoint_weights(vkmoe_context *ctx, vkmoe_layer_params params, test_layer *t);
/* config.json and layer `layer`'s tensors in dir: model.safetensors, or
 * `shards` shards and their index when shards > 1. */
void checkpoint_write_hf(const char *dir, const test_layer *t, const char *config,
                         const hf_names *names, uint32_t layer, uint32_t shards);
/* The same for a model: layers[i] for i < count, NULL for a dense layer
 * (no tensors written); all of one family and shape. */
void checkpoint_write_hf_model(const char *dir, const test_layer *const *layers, uint32_t count,
                               const char *config, const hf_names *names, uint32_t shards);
/* DeepSeek-V3's routing metadata in a deepseek2 GGUF file: sigmoid gating,
 * 8 groups keep 4, one shared expert, weights renormalised and × 2.5. */
void checkpoint_deepseek_v3_meta(gguf_writer *w);
/* A GGUF file of architecture arch holding layer `layer`, after whatever
 * metadata the caller already added to w. */
void checkpoint_write_gguf(const char *path, gguf_writer *w, const test_layer *t, const char *arch,
                           uint32_t layer);
/* The same for a model (the metadata from its first MoE layer). */
void checkpoint_write_gguf_model(const char *path, gguf_writer *w, const test_layer *const *layers,
                                 uint32_t count, const char *arch);
/* A Mixtral layer t (its family's params) in every format the loader
 * reads, for tests of what files lead to: dir/config.json with a
 * checkpoint in `shards` files, dir/model.gguf (llama), and
 * dir/model2.gguf, a llama model of two MoE layers, both t. */
void checkpoint_write_mixtral_files(const char *dir, const test_layer *t, uint32_t shards);

#endif
