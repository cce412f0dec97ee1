/* Writes the fuzzers' seed corpus: small valid safetensors and GGUF files
 * of MoE layers, built with the tests' writers; config.json files of every
 * model type the loader reads; .npy files of f32 and f16 hidden states.
 *   fuzz-seeds SAFETENSORS_DIR GGUF_DIR CONFIG_DIR NPY_DIR */
#include <stdio.h>
#include <string.h>

#include "model_writer.h"

static int write_to(const char *dir, const char *name, const byte_buffer *b)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return buffer_write_file(b, path) ? 0 : 1;
}

static int safetensors_seeds(const char *dir)
{
    st_writer w = {0};
    byte_buffer b;
    float router[4 * 8] = {0.5f};
    uint16_t expert[4 * 8] = {0x3f80};
    st_add(&w, "model.layers.0.mlp.gate.weight", "F32", (uint64_t[]){4, 8}, 2, router,
           sizeof(router));
    st_add(&w, "model.layers.0.mlp.experts.0.up_proj.weight", "BF16", (uint64_t[]){4, 8}, 2, expert,
           sizeof(expert));
    st_add(&w, "model.layers.0.mlp.experts.0.down_proj.weight", "F16", (uint64_t[]){8, 4}, 2,
           expert, sizeof(expert));
    st_finish(&w, &b);
    int rc = write_to(dir, "layer.safetensors", &b);
    buffer_free(&b);
    /* GPT-OSS's MXFP4 experts: U8 blocks [E][rows][cols/32][16] and scales */
    uint8_t blocks[2 * 4 * 16] = {0x21}, scales[2 * 4] = {127};
    st_add(&w, "model.layers.0.mlp.experts.gate_up_proj_blocks", "U8", (uint64_t[]){2, 4, 1, 16}, 4,
           blocks, sizeof(blocks));
    st_add(&w, "model.layers.0.mlp.experts.gate_up_proj_scales", "U8", (uint64_t[]){2, 4, 1}, 3,
           scales, sizeof(scales));
    st_finish(&w, &b);
    rc |= write_to(dir, "mxfp4.safetensors", &b);
    buffer_free(&b);
    st_finish(&w, &b); /* no tensors */
    rc |= write_to(dir, "empty.safetensors", &b);
    buffer_free(&b);
    return rc;
}

static int gguf_seeds(const char *dir)
{
    gguf_writer w = {0};
    byte_buffer b;
    gguf_add_string(&w, "general.architecture", "deepseek2");
    gguf_add_u32(&w, "deepseek2.expert_count", 4);
    gguf_add_f32(&w, "deepseek2.expert_weights_scale", 2.5f);
    gguf_add_bool(&w, "deepseek2.expert_weights_norm", true);
    uint32_t list[4] = {1, 2, 3, 4};
    gguf_add_u32_array(&w, "tokenizer.ggml.token_type", list, 4);
    float router[4 * 8] = {0.5f};
    uint16_t experts[4 * 4 * 8] = {0x3c00};
    uint8_t q8[34 * 4] = {0};
    gguf_add_tensor(&w, "blk.0.ffn_gate_inp.weight", 0, (uint64_t[]){8, 4}, 2, router,
                    sizeof(router));
    gguf_add_tensor(&w, "blk.0.ffn_up_exps.weight", 1, (uint64_t[]){8, 4, 4}, 3, experts,
                    sizeof(experts));
    gguf_add_tensor(&w, "blk.0.ffn_down_exps.weight", 8, (uint64_t[]){32, 4}, 2, q8, sizeof(q8));
    gguf_finish(&w, &b);
    int rc = write_to(dir, "layer.gguf", &b);
    buffer_free(&b);
    return rc;
}

static int text_seed(const char *dir, const char *name, const char *text, size_t size)
{
    byte_buffer b = {0};
    buffer_append(&b, text, size);
    int rc = write_to(dir, name, &b);
    buffer_free(&b);
    return rc;
}

static int config_seeds(const char *dir)
{
    static const char *const configs[] = {
        "{\"model_type\": \"mixtral\", \"hidden_size\": 4096, \"intermediate_size\": 14336, "
        "\"num_local_experts\": 8, \"num_experts_per_tok\": 2}",
        "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 2048, \"moe_intermediate_size\": "
        "1408, \"num_experts\": 60, \"num_experts_per_tok\": 4, \"norm_topk_prob\": false, "
        "\"shared_expert_intermediate_size\": 5632}",
        "{\"model_type\": \"deepseek_v3\", \"hidden_size\": 7168, \"moe_intermediate_size\": "
        "2048, \"n_routed_experts\": 256, \"num_experts_per_tok\": 8, \"n_group\": 8, "
        "\"topk_group\": 4, \"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\", "
        "\"routed_scaling_factor\": 2.5, \"n_shared_experts\": 1, \"first_k_dense_replace\": "
        "1, \"moe_layer_freq\": 1, \"norm_topk_prob\": true}",
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 2048, \"moe_intermediate_size\": 768, "
        "\"num_experts\": 128, \"num_experts_per_tok\": 8, \"decoder_sparse_step\": 2, "
        "\"mlp_only_layers\": [0, 3], \"num_hidden_layers\": 48}",
        "{\"model_type\": \"ernie4_5_moe\", \"hidden_size\": 2560, \"moe_intermediate_size\": "
        "1536, \"moe_num_experts\": 64, \"moe_k\": 6, \"moe_num_shared_experts\": 2, "
        "\"moe_layer_start_index\": 1, \"moe_layer_end_index\": -1, \"moe_layer_interval\": 1}",
        "{\"model_type\": \"granitemoe\", \"hidden_size\": 1536, \"intermediate_size\": 512, "
        "\"num_local_experts\": 40, \"num_experts_per_tok\": 8}",
        "{\"model_type\": \"gpt_oss\", \"hidden_size\": 2880, \"intermediate_size\": 2880, "
        "\"num_local_experts\": 32, \"num_experts_per_tok\": 4, \"swiglu_limit\": 7.0}",
        "{\"model_type\": \"llama4\", \"text_config\": {\"hidden_size\": 5120, "
        "\"intermediate_size\": 8192, \"num_local_experts\": 16, \"num_experts_per_tok\": 1, "
        "\"interleave_moe_layer_step\": 2, \"moe_layers\": [1, 3]}}",
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "config%zu.json", i);
        rc |= text_seed(dir, name, configs[i], strlen(configs[i]));
    }
    return rc;
}

static int npy_seeds(const char *dir)
{
    static const char f32[] = "\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': "
                              "False, 'shape': (2, 1), }\n\0\0\x80\x3f\0\0\0\x40";
    static const char f16[] = "\x93NUMPY\x01\x00\x3a\x00{'descr': '<f2', 'fortran_order': "
                              "False, 'shape': (2,), }\n\0\x3c\0\x40";
    return text_seed(dir, "f32.npy", f32, sizeof(f32) - 1) |
           text_seed(dir, "f16.npy", f16, sizeof(f16) - 1);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: fuzz-seeds SAFETENSORS_DIR GGUF_DIR CONFIG_DIR NPY_DIR\n");
        return 2;
    }
    return safetensors_seeds(argv[1]) | gguf_seeds(argv[2]) | config_seeds(argv[3]) |
           npy_seeds(argv[4]);
}
