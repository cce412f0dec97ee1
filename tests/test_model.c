/* Model files: checkpoints and GGUF files of every supported family,
 * written here from random weights, loaded with vkmoe_layer_from_file and
 * run against the CPU reference on the same weights; sharded checkpoints,
 * a file over 4 GiB (sparse), and files that lie. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "helpers.h"
#include "tensor_file.h"

static char work_dir[256];

static const char *path_in(const char *name)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", work_dir, name);
    return path;
}

/* Load a layer from path and check its forward against t's reference. */
static void check_loaded(vkmoe_context *ctx, test_layer *t, const char *path, uint32_t layer,
                         uint32_t tokens)
{
    vkmoe_model_params mp = {.max_tokens = tokens};
    vkmoe_layer *loaded;
    vkmoe_status status = vkmoe_layer_from_file(ctx, path, layer, &mp, &loaded);
    if (status != VKMOE_OK)
        fail_msg("vkmoe_layer_from_file: %s", vkmoe_last_error());
    vkmoe_layer_params got;
    assert_int_equal(vkmoe_layer_params_of(loaded, &got), VKMOE_OK);
    const vkmoe_layer_params *want = &t->params;
    assert_int_equal(got.dim, want->dim);
    assert_int_equal(got.ffn_dim, want->ffn_dim);
    assert_int_equal(got.experts, want->experts);
    assert_int_equal(got.top_k, want->top_k);
    assert_int_equal(got.router, want->router);
    assert_int_equal(got.normalize_topk, want->normalize_topk);
    assert_int_equal(got.expert_groups, want->expert_groups);
    assert_int_equal(got.topk_groups, want->topk_groups);
    assert_true(got.routed_scaling_factor == want->routed_scaling_factor);
    assert_int_equal(got.shared_ffn_dim, want->shared_ffn_dim);
    assert_int_equal(got.scale_expert_input, want->scale_expert_input);
    assert_int_equal(got.selection_bias, want->selection_bias);
    assert_int_equal(got.weight_type, want->weight_type);
    assert_int_equal(got.down_weight_type, want->down_weight_type);
    test_layer run = *t;
    run.layer = loaded;
    float *x = test_input(tokens, want->dim);
    test_check_forward(&run, tokens, x);
    free(x);
    vkmoe_layer_destroy(&loaded);
}

static vkmoe_layer_params family(const char *name, uint32_t experts, uint32_t top_k,
                                 vkmoe_weight_type type)
{
    vkmoe_layer_params p = test_shape(40, 24, experts, 0, 1);
    p.weight_type = type;
    assert_int_equal(vkmoe_layer_params_family(&p, name), VKMOE_OK);
    if (top_k)
        p.top_k = top_k;
    return p;
}

static void test_mixtral_checkpoint(void **state)
{
    test_seed(110);
    test_layer t;
    checkpoint_weights(*state, family("mixtral", 8, 2, VKMOE_WEIGHT_BF16), &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"mixtral\", \"hidden_size\": 40, "
                        "\"intermediate_size\": 24, \"num_local_experts\": 8, "
                        "\"num_experts_per_tok\": 2, \"torch_dtype\": \"bfloat16\"}",
                        &checkpoint_mixtral_names, 3, 1);
    check_loaded(*state, &t, work_dir, 3, 20);
    /* the path of the .safetensors file works too */
    check_loaded(*state, &t, path_in("model.safetensors"), 3, 5);
    test_layer_destroy(&t);
}

static void test_qwen_and_olmoe_checkpoints(void **state)
{
    test_seed(111);
    test_layer t;
    vkmoe_layer_params p = family("qwen2-moe", 6, 2, VKMOE_WEIGHT_F16);
    p.shared_ffn_dim = 36;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 40, "
                        "\"moe_intermediate_size\": 24, \"num_experts\": 6, "
                        "\"num_experts_per_tok\": 2, \"norm_topk_prob\": false, "
                        "\"shared_expert_intermediate_size\": 36}",
                        &checkpoint_qwen_names, 0, 1);
    check_loaded(*state, &t, work_dir, 0, 17);
    test_layer_destroy(&t);
    checkpoint_weights(*state, family("qwen3-moe", 16, 4, VKMOE_WEIGHT_F32), &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 40, "
                        "\"moe_intermediate_size\": 24, \"num_experts\": 16, "
                        "\"num_experts_per_tok\": 4, \"norm_topk_prob\": true}",
                        &checkpoint_qwen_names, 1, 1);
    check_loaded(*state, &t, work_dir, 1, 9);
    test_layer_destroy(&t);
    checkpoint_weights(*state, family("olmoe", 16, 4, VKMOE_WEIGHT_BF16), &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"olmoe\", \"hidden_size\": 40, "
                        "\"intermediate_size\": 24, \"num_experts\": 16, "
                        "\"num_experts_per_tok\": 4, \"norm_topk_prob\": false}",
                        &checkpoint_qwen_names, 2, 1);
    check_loaded(*state, &t, work_dir, 2, 9);
    test_layer_destroy(&t);
}

/* DeepSeek-V3 at its real E, k and groups, sharded over three files. */
static void test_deepseek_checkpoints_sharded(void **state)
{
    test_seed(112);
    test_layer t;
    vkmoe_layer_params p = family("deepseek-v3", 256, 0, VKMOE_WEIGHT_BF16);
    p.dim = 16;
    p.ffn_dim = 8;
    p.shared_ffn_dim = 8;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 16, "
                        "\"moe_intermediate_size\": 8, \"n_routed_experts\": 256, "
                        "\"num_experts_per_tok\": 8, \"n_group\": 8, \"topk_group\": 4, "
                        "\"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\", "
                        "\"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5, "
                        "\"n_shared_experts\": 1, \"first_k_dense_replace\": 3, "
                        "\"moe_layer_freq\": 1}",
                        &checkpoint_deepseek_names, 5, 3);
    check_loaded(*state, &t, work_dir, 5, 12);
    vkmoe_layer *layer = (vkmoe_layer *)&layer;
    assert_int_equal(vkmoe_layer_from_file(*state, work_dir, 2, NULL, &layer),
                     VKMOE_ERROR_UNSUPPORTED); /* a dense layer */
    assert_null(layer);
    assert_non_null(strstr(vkmoe_last_error(), "dense"));
    test_layer_destroy(&t);
    p = family("deepseek-v2", 32, 0, VKMOE_WEIGHT_F16);
    p.shared_ffn_dim = 48;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"deepseek_v2\", \"hidden_size\": 40, "
                        "\"moe_intermediate_size\": 24, \"n_routed_experts\": 32, "
                        "\"num_experts_per_tok\": 6, \"n_group\": 8, \"topk_group\": 3, "
                        "\"topk_method\": \"group_limited_greedy\", \"scoring_func\": \"softmax\", "
                        "\"norm_topk_prob\": false, \"routed_scaling_factor\": 16.0, "
                        "\"n_shared_experts\": 2, \"first_k_dense_replace\": 1}",
                        &checkpoint_deepseek_names, 1, 2);
    check_loaded(*state, &t, work_dir, 1, 12);
    test_layer_destroy(&t);
}

/* The families on DeepSeek-V3's router and Qwen's shared expert, by their
 * own model_type and config keys: Kimi K2 (384 experts, one group), GLM-4.5
 * (no scoring or top-k method named; groups when given; a dense first
 * layer), MiniMax-M2 (Mixtral's names, the selection bias beside the gate,
 * no normalisation key) and Qwen3-Next (renormalised, gated shared expert). */
static void test_newer_families_checkpoints(void **state)
{
    test_seed(114);
    test_layer t;
    vkmoe_layer_params p = family("kimi-k2", 384, 0, VKMOE_WEIGHT_BF16);
    p.dim = 16;
    p.ffn_dim = 8;
    p.shared_ffn_dim = 8;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"kimi_k2\", \"hidden_size\": 16, "
                        "\"moe_intermediate_size\": 8, \"n_routed_experts\": 384, "
                        "\"num_experts_per_tok\": 8, \"n_group\": 1, \"topk_group\": 1, "
                        "\"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\", "
                        "\"norm_topk_prob\": true, \"routed_scaling_factor\": 2.827, "
                        "\"n_shared_experts\": 1, \"first_k_dense_replace\": 1}",
                        &checkpoint_deepseek_names, 1, 1);
    check_loaded(*state, &t, work_dir, 1, 12);
    test_layer_destroy(&t);

    p = family("glm4-moe", 16, 4, VKMOE_WEIGHT_F16);
    p.expert_groups = 2;
    p.topk_groups = 1;
    p.routed_scaling_factor = 1.0f;
    p.shared_ffn_dim = 24;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"glm4_moe\", \"hidden_size\": 40, "
                        "\"moe_intermediate_size\": 24, \"n_routed_experts\": 16, "
                        "\"num_experts_per_tok\": 4, \"n_group\": 2, \"topk_group\": 1, "
                        "\"norm_topk_prob\": true, \"routed_scaling_factor\": 1.0, "
                        "\"n_shared_experts\": 1, \"first_k_dense_replace\": 1}",
                        &checkpoint_deepseek_names, 2, 1);
    check_loaded(*state, &t, work_dir, 2, 12);
    vkmoe_layer *layer = (vkmoe_layer *)&layer;
    assert_int_equal(vkmoe_layer_from_file(*state, work_dir, 0, NULL, &layer),
                     VKMOE_ERROR_UNSUPPORTED); /* GLM-4.5's dense first layers */
    assert_non_null(strstr(vkmoe_last_error(), "dense"));
    test_layer_destroy(&t);

    checkpoint_weights(*state, family("minimax-m2", 16, 4, VKMOE_WEIGHT_BF16), &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"minimax_m2\", \"hidden_size\": 40, "
                        "\"intermediate_size\": 24, \"num_local_experts\": 16, "
                        "\"num_experts_per_tok\": 4, \"scoring_func\": \"sigmoid\", "
                        "\"use_routing_bias\": true}",
                        &checkpoint_minimax_names, 0, 1);
    check_loaded(*state, &t, work_dir, 0, 12);
    test_layer_destroy(&t);

    p = family("qwen3-next", 16, 4, VKMOE_WEIGHT_F32);
    p.shared_ffn_dim = 20;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"qwen3_next\", \"hidden_size\": 40, "
                        "\"moe_intermediate_size\": 24, \"num_experts\": 16, "
                        "\"num_experts_per_tok\": 4, \"norm_topk_prob\": true, "
                        "\"shared_expert_intermediate_size\": 20}",
                        &checkpoint_qwen_names, 3, 1);
    check_loaded(*state, &t, work_dir, 3, 12);
    test_layer_destroy(&t);
}

/* ERNIE-4.5 (softmax chosen by p + bias, two shared experts, layers from
 * moe_layer_start_index to the last) and Granite-MoE (top-k logits then
 * softmax; gate and up fused in one stacked tensor), from checkpoints and
 * GGUF files. */
static void test_ernie_and_granite(void **state)
{
    test_seed(116);
    test_layer t;
    vkmoe_layer_params p = family("ernie-4.5-moe", 16, 0, VKMOE_WEIGHT_BF16);
    p.shared_ffn_dim = 48;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"ernie4_5_moe\", \"hidden_size\": 40, "
                        "\"num_hidden_layers\": 4, \"moe_intermediate_size\": 24, "
                        "\"moe_num_experts\": 16, \"moe_k\": 6, \"moe_num_shared_experts\": 2, "
                        "\"moe_layer_start_index\": 1, \"moe_layer_end_index\": -1, "
                        "\"moe_layer_interval\": 1, \"moe_norm_min\": 1e-12}",
                        &checkpoint_ernie_names, 3, 1);
    check_loaded(*state, &t, work_dir, 3, 12);
    vkmoe_layer *layer = (vkmoe_layer *)&layer;
    assert_int_equal(vkmoe_layer_from_file(*state, work_dir, 0, NULL, &layer),
                     VKMOE_ERROR_UNSUPPORTED);
    assert_non_null(strstr(vkmoe_last_error(), "dense"));
    test_layer_destroy(&t);

    checkpoint_weights(*state, family("granite-moe", 10, 0, VKMOE_WEIGHT_F16), &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"granitemoe\", \"hidden_size\": 40, "
                        "\"intermediate_size\": 24, \"num_local_experts\": 10, "
                        "\"num_experts_per_tok\": 8}",
                        &checkpoint_granite_names, 1, 1);
    check_loaded(*state, &t, work_dir, 1, 12);
    test_layer_destroy(&t);

    gguf_writer w = {0};
    p = family("ernie-4.5-moe", 16, 0, VKMOE_WEIGHT_Q8_0);
    p.dim = 64;
    p.ffn_dim = 32;
    p.shared_ffn_dim = 64;
    checkpoint_weights(*state, p, &t);
    gguf_add_u32(&w, "ernie4_5-moe.leading_dense_block_count", 1);
    gguf_add_u32(&w, "ernie4_5-moe.interleave_moe_layer_step", 1);
    gguf_add_u32(&w, "ernie4_5-moe.expert_shared_feed_forward_length", 64);
    gguf_add_bool(&w, "ernie4_5-moe.expert_weights_norm", true);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "ernie4_5-moe", 2);
    check_loaded(*state, &t, path_in("model.gguf"), 2, 9);
    test_layer_destroy(&t);

    memset(&w, 0, sizeof(w));
    p = family("granite-moe", 12, 0, VKMOE_WEIGHT_Q4_K);
    p.dim = 256;
    p.ffn_dim = 256;
    p.down_weight_type = VKMOE_WEIGHT_Q6_K;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "granitemoe", 0);
    check_loaded(*state, &t, path_in("model.gguf"), 0, 9);
    test_layer_destroy(&t);
}

/* GPT-OSS's Hugging Face checkpoints as released: MXFP4 experts as
 * blocks and scales tensors (HF's nibble order), gate and up interleaved
 * row by row in one tensor and its bias, router bias; sharded. */
static void test_gpt_oss_mxfp4_checkpoint(void **state)
{
    test_seed(117);
    test_layer t;
    vkmoe_layer_params p = family("gpt-oss", 8, 0, VKMOE_WEIGHT_MXFP4);
    p.dim = 64;
    p.ffn_dim = 96;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"gpt_oss\", \"hidden_size\": 64, "
                        "\"intermediate_size\": 96, \"num_local_experts\": 8, "
                        "\"num_experts_per_tok\": 4, \"experts_per_token\": 4, "
                        "\"swiglu_limit\": 7.0, \"num_hidden_layers\": 2, "
                        "\"quantization_config\": {\"quant_method\": \"mxfp4\"}}",
                        &checkpoint_gpt_oss_names, 1, 2);
    check_loaded(*state, &t, work_dir, 1, 12);
    test_layer_destroy(&t);
}

/* Llama 4: the released multimodal checkpoint (text_config nested, the
 * language_model. prefix), llama4_text, the experts stacked input-first
 * with gate and up side by side, MoE on every second layer (Maverick's
 * step) or on the listed ones; and GGUF. */
static void test_llama4_checkpoints(void **state)
{
    test_seed(118);
    test_layer t;
    vkmoe_layer_params p = family("llama4", 8, 0, VKMOE_WEIGHT_BF16);
    p.shared_ffn_dim = p.ffn_dim;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"llama4\", \"vision_config\": {\"hidden_size\": 9}, "
                        "\"text_config\": {\"model_type\": \"llama4_text\", \"hidden_size\": 40, "
                        "\"intermediate_size\": 24, \"intermediate_size_mlp\": 64, "
                        "\"num_local_experts\": 8, \"num_experts_per_tok\": 1, "
                        "\"num_hidden_layers\": 4, \"interleave_moe_layer_step\": 2}}",
                        &checkpoint_llama4_names, 3, 1);
    check_loaded(*state, &t, work_dir, 3, 12);
    vkmoe_layer *layer = (vkmoe_layer *)&layer;
    assert_int_equal(vkmoe_layer_from_file(*state, work_dir, 2, NULL, &layer),
                     VKMOE_ERROR_UNSUPPORTED);
    assert_non_null(strstr(vkmoe_last_error(), "dense"));
    test_layer_destroy(&t);

    p = family("llama4", 6, 0, VKMOE_WEIGHT_F32);
    p.shared_ffn_dim = p.ffn_dim;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"llama4_text\", \"hidden_size\": 40, "
                        "\"intermediate_size\": 24, \"num_local_experts\": 6, "
                        "\"num_experts_per_tok\": 1, \"num_hidden_layers\": 3, "
                        "\"moe_layers\": [0, 2]}",
                        &checkpoint_llama4_text_names, 2, 1);
    check_loaded(*state, &t, work_dir, 2, 7);
    test_layer_destroy(&t);

    gguf_writer w = {0};
    p = family("llama4", 8, 0, VKMOE_WEIGHT_Q8_0);
    p.dim = 64;
    p.ffn_dim = p.shared_ffn_dim = 32;
    checkpoint_weights(*state, p, &t);
    gguf_add_u32(&w, "llama4.interleave_moe_layer_step", 1);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "llama4", 1);
    check_loaded(*state, &t, path_in("model.gguf"), 1, 9);
    test_layer_destroy(&t);
}

/* The same families from GGUF: glm4moe and minimax-m2 with deepseek2's
 * keys, qwen3next with qwen2moe's. */
static void test_newer_families_gguf(void **state)
{
    test_seed(115);
    test_layer t;
    gguf_writer w = {0};
    vkmoe_layer_params p = family("glm4-moe", 16, 4, VKMOE_WEIGHT_Q8_0);
    p.dim = 64;
    p.ffn_dim = 32;
    p.shared_ffn_dim = 32;
    checkpoint_weights(*state, p, &t);
    gguf_add_u32(&w, "glm4moe.leading_dense_block_count", 1);
    gguf_add_u32(&w, "glm4moe.expert_gating_func", 2);
    gguf_add_u32(&w, "glm4moe.expert_shared_count", 1);
    gguf_add_f32(&w, "glm4moe.expert_weights_scale", 2.5f);
    gguf_add_bool(&w, "glm4moe.expert_weights_norm", true);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "glm4moe", 1);
    check_loaded(*state, &t, path_in("model.gguf"), 1, 15);
    test_layer_destroy(&t);

    checkpoint_weights(*state, family("minimax-m2", 16, 4, VKMOE_WEIGHT_F16), &t);
    gguf_add_u32(&w, "minimax-m2.expert_gating_func", 2);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "minimax-m2", 0);
    check_loaded(*state, &t, path_in("model.gguf"), 0, 15);
    test_layer_destroy(&t);

    p = family("qwen3-next", 16, 4, VKMOE_WEIGHT_BF16);
    p.shared_ffn_dim = 20;
    checkpoint_weights(*state, p, &t);
    gguf_add_u32(&w, "qwen3next.expert_shared_feed_forward_length", 20);
    gguf_add_bool(&w, "qwen3next.expert_weights_norm", true);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "qwen3next", 2);
    check_loaded(*state, &t, path_in("model.gguf"), 2, 15);
    test_layer_destroy(&t);
}

/* GGUF: all experts in one [E][rows][cols] tensor, dims innermost first. */
static void test_gguf_families(void **state)
{
    test_seed(113);
    test_layer t;
    gguf_writer w = {0};
    checkpoint_weights(*state, family("mixtral", 8, 2, VKMOE_WEIGHT_F16), &t);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "llama", 0);
    check_loaded(*state, &t, path_in("model.gguf"), 0, 15);
    test_layer_destroy(&t);

    vkmoe_layer_params p;
    checkpoint_weights(*state, family("qwen3-moe", 16, 4, VKMOE_WEIGHT_BF16), &t);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "qwen3moe", 5);
    check_loaded(*state, &t, path_in("model.gguf"), 5, 15);
    test_layer_destroy(&t);

    checkpoint_weights(*state, family("olmoe", 16, 4, VKMOE_WEIGHT_F32), &t);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "olmoe", 0);
    check_loaded(*state, &t, path_in("model.gguf"), 0, 15);
    test_layer_destroy(&t);

    /* GGUF's blocks straight from the file: every blocked type */
    for (int q = 0; vkmoe_weight_type_name((vkmoe_weight_type)q); q++) {
        vkmoe_weight_type type = (vkmoe_weight_type)q;
        if (!vkmoe_weight_blocked(type) || !test_weight_type_in_run(type))
            continue;
        p = family("qwen3-moe", 8, 2, type);
        p.dim = vkmoe_weight_block(type) == 256 ? 256 : 64;
        p.ffn_dim = vkmoe_weight_block(type) == 256 ? 512 : 96;
        checkpoint_weights(*state, p, &t);
        checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "qwen3moe", 1);
        check_loaded(*state, &t, path_in("model.gguf"), 1, 21);
        test_layer_destroy(&t);
    }
    /* Q4_K_M's mix: gate and up Q4_K, down Q6_K, each kept in its type */
    p = family("qwen3-moe", 8, 2, VKMOE_WEIGHT_Q4_K);
    p.down_weight_type = VKMOE_WEIGHT_Q6_K;
    p.dim = 256;
    p.ffn_dim = 512;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "qwen3moe", 1);
    check_loaded(*state, &t, path_in("model.gguf"), 1, 21);
    test_layer_destroy(&t);

    p = family("qwen2-moe", 6, 4, VKMOE_WEIGHT_BF16);
    p.shared_ffn_dim = 20;
    checkpoint_weights(*state, p, &t);
    gguf_add_u32(&w, "qwen2moe.expert_shared_feed_forward_length", 20);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "qwen2moe", 1);
    check_loaded(*state, &t, path_in("model.gguf"), 1, 15);
    test_layer_destroy(&t);

    checkpoint_weights(*state, family("gpt-oss", 8, 4, VKMOE_WEIGHT_F32), &t);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "gpt-oss", 0);
    check_loaded(*state, &t, path_in("model.gguf"), 0, 15);
    test_layer_destroy(&t);

    p = family("deepseek-v3", 64, 0, VKMOE_WEIGHT_BF16);
    p.shared_ffn_dim = 24;
    checkpoint_weights(*state, p, &t);
    gguf_add_u32(&w, "deepseek2.leading_dense_block_count", 1);
    checkpoint_deepseek_v3_meta(&w);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "deepseek2", 2);
    check_loaded(*state, &t, path_in("model.gguf"), 2, 15);
    test_layer_destroy(&t);

    /* DeepSeek-V2 shares the architecture: softmax gating, no selection bias */
    p = family("deepseek-v2", 32, 0, VKMOE_WEIGHT_F16);
    p.shared_ffn_dim = 48;
    checkpoint_weights(*state, p, &t);
    gguf_add_u32(&w, "deepseek2.expert_gating_func", 1);
    gguf_add_u32(&w, "deepseek2.expert_group_count", 8);
    gguf_add_u32(&w, "deepseek2.expert_group_used_count", 3);
    gguf_add_u32(&w, "deepseek2.expert_shared_count", 2);
    gguf_add_f32(&w, "deepseek2.expert_weights_scale", 16.0f);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "deepseek2", 0);
    check_loaded(*state, &t, path_in("model.gguf"), 0, 15);
    test_layer_destroy(&t);
}

/* The checkpoint's model.safetensors rewritten with 4.5 GiB of padding
 * before its tensors: a sparse file, so the test costs no disk, but every
 * offset past 4 GiB must survive the reader and the mapping. */
static void pad_past_4_gib(void)
{
    const uint64_t pad = 9ull << 29;
    FILE *in = fopen(path_in("model.safetensors"), "rb");
    assert_non_null(in);
    fseek(in, 0, SEEK_END);
    size_t size = (size_t)ftell(in);
    uint8_t *file = malloc(size);
    fseek(in, 0, SEEK_SET);
    assert_int_equal(fread(file, 1, size, in), size);
    fclose(in);
    vkmoe_tensor_file parsed;
    char error[256];
    assert_true(vkmoe_safetensors_parse(file, size, &parsed, error, sizeof(error)));
    uint64_t data_start = parsed.tensors[0].offset; /* the writer keeps file order */
    byte_buffer header = {0};
    char entry[512];
    snprintf(entry, sizeof(entry),
             "{\"padding\":{\"dtype\":\"U8\",\"shape\":[%llu],\"data_offsets\":[0,%llu]}",
             (unsigned long long)pad, (unsigned long long)pad);
    buffer_append(&header, entry, strlen(entry));
    for (uint32_t i = 0; i < parsed.tensor_count; i++) {
        const vkmoe_tensor *t = &parsed.tensors[i];
        uint64_t begin = pad + t->offset - data_start;
        int n = snprintf(entry, sizeof(entry), ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                         t->dtype_name);
        for (uint32_t d = 0; d < t->dims; d++)
            n += snprintf(entry + n, sizeof(entry) - (size_t)n, "%s%llu", d ? "," : "",
                          (unsigned long long)t->shape[d]);
        snprintf(entry + n, sizeof(entry) - (size_t)n, "],\"data_offsets\":[%llu,%llu]}",
                 (unsigned long long)begin, (unsigned long long)(begin + t->size));
        buffer_append(&header, entry, strlen(entry));
        if (t->offset < data_start)
            data_start = t->offset;
    }
    buffer_append(&header, "}", 1);
    FILE *out = fopen(path_in("big.safetensors"), "wb");
    assert_non_null(out);
    uint8_t length[8];
    for (int i = 0; i < 8; i++)
        length[i] = (uint8_t)((uint64_t)header.size >> (8 * i));
    fwrite(length, 1, 8, out);
    fwrite(header.data, 1, header.size, out);
    assert_int_equal(fseeko(out, (off_t)(8 + header.size + pad), SEEK_SET), 0);
    fwrite(file + data_start, 1, size - data_start, out);
    assert_int_equal(fclose(out), 0);
    char big[512];
    snprintf(big, sizeof(big), "%s", path_in("big.safetensors"));
    assert_int_equal(rename(big, path_in("model.safetensors")), 0);
    vkmoe_tensor_file_free(&parsed);
    buffer_free(&header);
    free(file);
}

static void test_file_over_4_gib(void **state)
{
    test_seed(114);
    test_layer t;
    checkpoint_weights(*state, family("mixtral", 4, 2, VKMOE_WEIGHT_F16), &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"mixtral\", \"hidden_size\": 40, "
                        "\"intermediate_size\": 24, \"num_local_experts\": 4, "
                        "\"num_experts_per_tok\": 2}",
                        &checkpoint_mixtral_names, 0, 1);
    pad_past_4_gib();
    struct stat st;
    assert_int_equal(stat(path_in("model.safetensors"), &st), 0);
    assert_true((uint64_t)st.st_size > (4ull << 30));
    check_loaded(*state, &t, work_dir, 0, 6);
    test_layer_destroy(&t);
}

static void write_text(const char *name, const char *text)
{
    byte_buffer b = {0};
    buffer_append(&b, text, strlen(text));
    assert_true(buffer_write_file(&b, path_in(name)));
    buffer_free(&b);
}

static void expect_load_error(vkmoe_context *ctx, const char *path, uint32_t layer,
                              vkmoe_status status, const char *words)
{
    vkmoe_layer *loaded = (vkmoe_layer *)&loaded;
    assert_int_equal(vkmoe_layer_from_file(ctx, path, layer, NULL, &loaded), status);
    assert_null(loaded);
    if (!strstr(vkmoe_last_error(), words))
        fail_msg("\"%s\" does not mention \"%s\"", vkmoe_last_error(), words);
}

static const char mixtral_config[] =
    "{\"model_type\": \"mixtral\", \"hidden_size\": 40, \"intermediate_size\": 24, "
    "\"num_local_experts\": 4, \"num_experts_per_tok\": 2}";

/* Checkpoints that lie or are broken: each refused with a message naming
 * what is wrong, nothing leaked (the ASan run checks). */
static void test_broken_checkpoints(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(115);
    test_layer t;
    checkpoint_weights(ctx, family("mixtral", 4, 2, VKMOE_WEIGHT_F32), &t);
    checkpoint_write_hf(work_dir, &t, mixtral_config, &checkpoint_mixtral_names, 0, 1);
    expect_load_error(ctx, path_in("absent"), 0, VKMOE_ERROR_IO, "absent");
    expect_load_error(ctx, work_dir, 1, VKMOE_ERROR_FILE_FORMAT, "model.layers.1.");
    write_text("config.json", "{\"model_type\": \"mixtral\", \"hidden_size\": 48, "
                              "\"intermediate_size\": 24, \"num_local_experts\": 4, "
                              "\"num_experts_per_tok\": 2}");
    expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_FILE_FORMAT, "the configuration says [4, 48]");
    write_text("config.json", "{\"model_type\": \"mixtral\", \"hidden_size\": -40}");
    expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_FILE_FORMAT, "hidden_size");
    write_text("config.json", "{\"model_type\": \"llama\"}");
    expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_UNSUPPORTED, "llama");
    write_text("config.json", "{\"model_type\": \"mixtral\",");
    expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_FILE_FORMAT, "JSON at byte");
    write_text("config.json", mixtral_config);
    write_text(
        "model.safetensors.index.json",
        "{\"weight_map\": {\"model.layers.0.block_sparse_moe.experts.0.w2.weight\": \"../x\"}}");
    expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_FILE_FORMAT, "bad shard");
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"model.layers.0.block_sparse_moe.experts.0.w2.weight\": "
               "\"model-00009-of-00009.safetensors\"}}");
    expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_IO, "model-00009-of-00009");
    unlink(path_in("model.safetensors.index.json"));
    write_text("model.safetensors", "\x10\0\0\0\0\0\0\0{}");
    expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_FILE_FORMAT, "header length");
    write_text("bad", "neither");
    expect_load_error(ctx, path_in("bad"), 0, VKMOE_ERROR_FILE_FORMAT, "model.safetensors");
    test_layer_destroy(&t);
}

/* D2: a FIFO in place of any file of a model is refused at once; opening
 * one for reading used to wait for a writer forever. */
static void test_d02_fifos_refused(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(116);
    test_layer t;
    checkpoint_weights(ctx, family("mixtral", 4, 2, VKMOE_WEIGHT_F32), &t);
    checkpoint_write_hf(work_dir, &t, mixtral_config, &checkpoint_mixtral_names, 0, 1);
    const char *names[] = {"config.json", "model.safetensors"};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(names); i++) {
        char saved[600];
        snprintf(saved, sizeof(saved), "%s", path_in("bad"));
        assert_int_equal(rename(path_in(names[i]), saved), 0);
        assert_int_equal(mkfifo(path_in(names[i]), 0600), 0);
        expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_IO, "not a regular file");
        assert_non_null(strstr(vkmoe_last_error(), names[i]));
        if (i == 1)
            expect_load_error(ctx, path_in(names[i]), 0, VKMOE_ERROR_IO, "not a regular file");
        unlink(path_in(names[i]));
        assert_int_equal(rename(saved, path_in(names[i])), 0);
    }
    unlink(path_in("model.gguf"));
    assert_int_equal(mkfifo(path_in("model.gguf"), 0600), 0);
    expect_load_error(ctx, path_in("model.gguf"), 0, VKMOE_ERROR_IO, "not a regular file");
    unlink(path_in("model.gguf"));
    test_layer_destroy(&t);
}

/* D12: a file that is no model says so, naming it and what was expected,
 * rather than failing to open a config.json nobody passed. */
static void test_d12_not_a_model_file(void **state)
{
    write_text("bad", "neither GGUF nor safetensors");
    expect_load_error(*state, path_in("bad"), 0, VKMOE_ERROR_FILE_FORMAT, "is not a model file");
    assert_non_null(strstr(vkmoe_last_error(), path_in("bad")));
    assert_non_null(strstr(vkmoe_last_error(), "GGUF file"));
}

/* D13: hyper-parameters vkmoe cannot take are the file's fault: FILE_FORMAT
 * naming the file and the key, with the bound where there is one. */
static void test_d13_impossible_hyper_parameters(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(117);
    test_layer t;
    checkpoint_weights(ctx, family("mixtral", 4, 2, VKMOE_WEIGHT_F32), &t);
    checkpoint_write_hf(work_dir, &t, mixtral_config, &checkpoint_mixtral_names, 0, 1);
    const struct {
        const char *config, *words;
    } cases[] = {
        {"{\"model_type\": \"mixtral\", \"hidden_size\": 1099511627776, "
         "\"intermediate_size\": 24, \"num_local_experts\": 4, \"num_experts_per_tok\": 2}",
         "\"hidden_size\" is 1099511627776, over the 4294967295"},
        {"{\"model_type\": \"mixtral\", \"hidden_size\": 40, \"intermediate_size\": 24, "
         "\"num_local_experts\": 4000, \"num_experts_per_tok\": 2}",
         "\"num_local_experts\" is 4000, over the 2048"},
        {"{\"model_type\": \"mixtral\", \"hidden_size\": 40, \"intermediate_size\": 24, "
         "\"num_local_experts\": 0, \"num_experts_per_tok\": 2}",
         "config.json: its hyper-parameters make no valid layer"},
        {"{\"model_type\": \"mixtral\", \"hidden_size\": 40, \"intermediate_size\": 24, "
         "\"num_local_experts\": 4, \"num_experts_per_tok\": 6}",
         "config.json: its hyper-parameters make no valid layer"},
        {"{\"model_type\": \"mixtral\", \"hidden_size\": 40, \"intermediate_size\": 24, "
         "\"num_local_experts\": 4}",
         "\"num_experts_per_tok\" is missing"},
        {"{\"model_type\": \"mixtral\", \"hidden_size\": \"forty\"}",
         "\"hidden_size\" is not a whole number"},
    };
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(cases); i++) {
        write_text("config.json", cases[i].config);
        expect_load_error(ctx, work_dir, 0, VKMOE_ERROR_FILE_FORMAT, cases[i].words);
    }
    write_text("config.json", mixtral_config);
    test_layer_destroy(&t);
}

/* GGUF files of an unknown architecture or with quantized experts. */
static void test_unsupported_gguf(void **state)
{
    vkmoe_context *ctx = *state;
    gguf_writer w = {0};
    byte_buffer file;
    gguf_add_string(&w, "general.architecture", "bert");
    gguf_finish(&w, &file);
    assert_true(buffer_write_file(&file, path_in("model.gguf")));
    buffer_free(&file);
    expect_load_error(ctx, path_in("model.gguf"), 0, VKMOE_ERROR_UNSUPPORTED, "bert");
    gguf_add_string(&w, "general.architecture", "qwen3moe");
    gguf_add_u32(&w, "qwen3moe.embedding_length", 256);
    gguf_add_u32(&w, "qwen3moe.expert_feed_forward_length", 256);
    gguf_add_u32(&w, "qwen3moe.expert_count", 2);
    gguf_add_u32(&w, "qwen3moe.expert_used_count", 1);
    static uint8_t q8_k[2 * 256 * 292]; /* GGUF's Q8_K: activations' type, never weights' */
    gguf_add_tensor(&w, "blk.0.ffn_down_exps.weight", 15, (uint64_t[]){256, 256, 2}, 3, q8_k,
                    sizeof(q8_k));
    gguf_finish(&w, &file);
    assert_true(buffer_write_file(&file, path_in("model.gguf")));
    buffer_free(&file);
    expect_load_error(ctx, path_in("model.gguf"), 0, VKMOE_ERROR_UNSUPPORTED, "Q8_K");
    gguf_add_string(&w, "general.architecture", "qwen3moe");
    gguf_finish(&w, &file);
    assert_true(buffer_write_file(&file, path_in("model.gguf")));
    buffer_free(&file);
    expect_load_error(ctx, path_in("model.gguf"), 0, VKMOE_ERROR_FILE_FORMAT, "embedding_length");
    vkmoe_layer *loaded;
    assert_int_equal(vkmoe_layer_from_file(NULL, work_dir, 0, NULL, &loaded),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_from_file(ctx, NULL, 0, NULL, &loaded),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_from_file(ctx, work_dir, 0, NULL, NULL),
                     VKMOE_ERROR_INVALID_ARGUMENT);
}

static int setup(void **state)
{
    if (!test_make_dir("vkmoe-test-model", work_dir, sizeof(work_dir)))
        return -1;
    return test_group_setup(state);
}

static int teardown(void **state)
{
    const char *names[] = {"big.safetensors", "bad"};
    test_remove_dir(work_dir, names, VKMOE_ARRAY_SIZE(names));
    test_remove_dir(work_dir, checkpoint_files, checkpoint_file_count);
    return test_group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixtral_checkpoint),
        cmocka_unit_test(test_qwen_and_olmoe_checkpoints),
        cmocka_unit_test(test_deepseek_checkpoints_sharded),
        cmocka_unit_test(test_gguf_families),
        cmocka_unit_test(test_newer_families_checkpoints),
        cmocka_unit_test(test_newer_families_gguf),
        cmocka_unit_test(test_ernie_and_granite),
        cmocka_unit_test(test_gpt_oss_mxfp4_checkpoint),
        cmocka_unit_test(test_llama4_checkpoints),
        cmocka_unit_test(test_file_over_4_gib),
        cmocka_unit_test(test_broken_checkpoints),
        cmocka_unit_test(test_unsupported_gguf),
        cmocka_unit_test(test_d02_fifos_refused),
        cmocka_unit_test(test_d12_not_a_model_file),
        cmocka_unit_test(test_d13_impossible_hyper_parameters),
    };
    return test_device_suite(tests, setup, teardown);
}
