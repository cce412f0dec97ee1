/* The GGUF reader: a good file read right (metadata of every kind, tensors
 * in ggml order), and lying files refused with a message, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model_writer.h"
#include "tensor_file.h"

enum { TYPE_F32 = 0, TYPE_F16 = 1, TYPE_Q8_0 = 8, TYPE_BF16 = 30 };

static void good_file(byte_buffer *out)
{
    gguf_writer w = {0};
    gguf_add_string(&w, "general.architecture", "qwen3moe");
    gguf_add_u32(&w, "qwen3moe.expert_count", 4);
    gguf_add_f32(&w, "qwen3moe.expert_weights_scale", 2.5f);
    gguf_add_bool(&w, "qwen3moe.expert_weights_norm", true);
    uint32_t list[3] = {7, 8, 9};
    gguf_add_u32_array(&w, "tokenizer.ggml.token_type", list, 3);
    float router[4 * 8] = {0};
    router[5] = 1.5f;
    uint16_t experts[4 * 3 * 8] = {0};
    uint8_t q8[34 * 2] = {0};
    gguf_add_tensor(&w, "blk.0.ffn_gate_inp.weight", TYPE_F32, (uint64_t[]){8, 4}, 2, router,
                    sizeof(router));
    gguf_add_tensor(&w, "blk.0.ffn_up_exps.weight", TYPE_BF16, (uint64_t[]){8, 3, 4}, 3, experts,
                    sizeof(experts));
    gguf_add_tensor(&w, "blk.0.ffn_down_exps.weight", TYPE_Q8_0, (uint64_t[]){32, 2}, 2, q8,
                    sizeof(q8));
    gguf_finish(&w, out);
}

static void test_good_file(void **state)
{
    (void)state;
    byte_buffer b;
    good_file(&b);
    vkmoe_tensor_file f;
    char error[256];
    assert_true(vkmoe_gguf_parse(b.data, b.size, &f, error, sizeof(error)));
    assert_int_equal(f.meta_count, 5);
    assert_string_equal(vkmoe_tensor_file_meta(&f, "general.architecture")->string, "qwen3moe");
    assert_int_equal(vkmoe_tensor_file_meta(&f, "qwen3moe.expert_count")->u, 4);
    assert_true(vkmoe_tensor_file_meta(&f, "qwen3moe.expert_weights_scale")->f == 2.5);
    assert_int_equal(vkmoe_tensor_file_meta(&f, "qwen3moe.expert_weights_norm")->type,
                     VKMOE_META_BOOL);
    assert_int_equal(vkmoe_tensor_file_meta(&f, "tokenizer.ggml.token_type")->type,
                     VKMOE_META_ARRAY);
    const vkmoe_tensor *router = vkmoe_tensor_file_find(&f, "blk.0.ffn_gate_inp.weight");
    assert_int_equal(router->shape[0], 4); /* [E][D]: ggml lists D first */
    assert_int_equal(router->shape[1], 8);
    float v;
    memcpy(&v, b.data + router->offset + 5 * 4, 4);
    assert_true(v == 1.5f);
    const vkmoe_tensor *up = vkmoe_tensor_file_find(&f, "blk.0.ffn_up_exps.weight");
    assert_string_equal(up->dtype_name, "BF16");
    assert_int_equal(up->block, 1);
    assert_int_equal(up->block_bytes, 2);
    assert_int_equal(up->shape[0], 4);
    assert_int_equal(up->size, 4 * 3 * 8 * 2);
    assert_int_equal(up->offset % 32, 0);
    const vkmoe_tensor *q8 = vkmoe_tensor_file_find(&f, "blk.0.ffn_down_exps.weight");
    assert_string_equal(q8->dtype_name, "Q8_0");
    assert_int_equal(q8->block, 32);
    assert_int_equal(q8->block_bytes, 34);
    assert_int_equal(q8->size, 68);
    vkmoe_tensor_file_free(&f);
    buffer_free(&b);
}

static void expect_refused(const byte_buffer *b, const char *words)
{
    vkmoe_tensor_file f;
    char error[256] = "";
    assert_false(vkmoe_gguf_parse(b->data, b->size, &f, error, sizeof(error)));
    if (!strstr(error, words))
        fail_msg("\"%s\" does not mention \"%s\"", error, words);
}

/* A file with one tensor whose info the caller chooses. */
static void one_tensor(byte_buffer *out, uint32_t type, const uint64_t *ne, uint32_t dims,
                       size_t bytes)
{
    gguf_writer w = {0};
    uint8_t *data = calloc(bytes ? bytes : 1, 1);
    gguf_add_tensor(&w, "t", type, ne, dims, data, bytes);
    gguf_finish(&w, out);
    free(data);
}

static void test_lying_files(void **state)
{
    (void)state;
    byte_buffer b;
    good_file(&b);
    memcpy(b.data, "GGUX", 4);
    expect_refused(&b, "magic");
    memcpy(b.data, "GGUF", 4);
    b.data[4] = 4; /* version */
    expect_refused(&b, "version");
    b.data[4] = 3;
    b.data[15] = 0x10; /* tensor count 2^60 */
    expect_refused(&b, "absurd");
    buffer_free(&b);

    one_tensor(&b, 99, (uint64_t[]){4}, 1, 16);
    expect_refused(&b, "unknown or unsupported type");
    buffer_free(&b);
    one_tensor(&b, TYPE_F32, (uint64_t[]){1, 1, 1, 1, 1}, 5, 4);
    expect_refused(&b, "dimensions");
    buffer_free(&b);
    one_tensor(&b, TYPE_F32, (uint64_t[]){4, 0}, 2, 0);
    expect_refused(&b, "absurd dimension");
    buffer_free(&b);
    one_tensor(&b, TYPE_Q8_0, (uint64_t[]){33}, 1, 34);
    expect_refused(&b, "whole blocks");
    buffer_free(&b);
    one_tensor(&b, TYPE_F32, (uint64_t[]){64}, 1, 16); /* says 256 bytes, holds 16 */
    expect_refused(&b, "past the end");
    buffer_free(&b);
}

/* D19: a tensor named twice is refused, naming it (the safetensors tests
 * cover overlapping ranges, which GGUF files reach the same check with). */
static void test_d19_duplicate_tensor(void **state)
{
    (void)state;
    gguf_writer w = {0};
    float data[4] = {0};
    gguf_add_tensor(&w, "t", TYPE_F32, (uint64_t[]){4}, 1, data, sizeof(data));
    gguf_add_tensor(&w, "t", TYPE_F32, (uint64_t[]){4}, 1, data, sizeof(data));
    byte_buffer b;
    gguf_finish(&w, &b);
    expect_refused(&b, "\"t\" is declared twice");
    buffer_free(&b);
}

static void test_lying_metadata(void **state)
{
    (void)state;
    gguf_writer w = {0};
    byte_buffer b;
    gguf_add_u32(&w, "general.alignment", 24);
    gguf_finish(&w, &b);
    expect_refused(&b, "alignment");
    buffer_free(&b);
    gguf_add_string(&w, "general.name", "moe");
    gguf_finish(&w, &b);
    b.data[24 + 8 + 12 + 4] = 0xff; /* the value's length: past the end */
    expect_refused(&b, "longer than");
    b.data[24 + 8 + 12] = 13; /* the value's type: unknown */
    expect_refused(&b, "unknown value type");
    buffer_free(&b);
}

/* Every truncation (all refused) and every single-bit corruption at three
 * bit positions parses or fails cleanly. */
static void test_truncations_and_corruptions(void **state)
{
    (void)state;
    byte_buffer b;
    good_file(&b);
    const uint8_t masks[] = {0x01, 0x08, 0x40};
    assert_true(feed_mutations(vkmoe_gguf_parse, &b, masks, sizeof(masks)));
    buffer_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file),
        cmocka_unit_test(test_lying_files),
        cmocka_unit_test(test_lying_metadata),
        cmocka_unit_test(test_d19_duplicate_tensor),
        cmocka_unit_test(test_truncations_and_corruptions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
