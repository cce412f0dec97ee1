/* Writes the fuzzers' seed corpus: small valid safetensors and GGUF files
 * of MoE layers, built with the tests' writers.
 *   fuzz-seeds SAFETENSORS_DIR GGUF_DIR */
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
    st_add(&w, "model.layers.0.mlp.experts.0.up_proj.weight", "BF16", (uint64_t[]){4, 8}, 2,
           expert, sizeof(expert));
    st_add(&w, "model.layers.0.mlp.experts.0.down_proj.weight", "F16", (uint64_t[]){8, 4}, 2,
           expert, sizeof(expert));
    st_finish(&w, &b);
    int rc = write_to(dir, "layer.safetensors", &b);
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

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz-seeds SAFETENSORS_DIR GGUF_DIR\n");
        return 2;
    }
    return safetensors_seeds(argv[1]) | gguf_seeds(argv[2]);
}
