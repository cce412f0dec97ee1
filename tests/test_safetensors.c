/* The safetensors reader: a good file read right, and every kind of lie
 * refused with a message, never a crash (ASan and UBSan watch these). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model_writer.h"
#include "tensor_file.h"

static void good_file(byte_buffer *out)
{
    st_writer w = {0};
    float router[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uint16_t expert[2 * 4] = {0x3f80, 0x4000, 0, 0, 0, 0, 0, 0xbf80};
    st_add(&w, "model.layers.0.mlp.gate.weight", "F32", (uint64_t[]){3, 4}, 2, router,
           sizeof(router));
    st_add(&w, "model.layers.0.mlp.experts.0.up_proj.weight", "BF16", (uint64_t[]){2, 4}, 2, expert,
           sizeof(expert));
    st_add(&w, "empty", "I64", (uint64_t[]){0}, 1, NULL, 0);
    st_finish(&w, out);
}

static bool parse(const byte_buffer *b, vkmoe_tensor_file *f, char *error)
{
    return vkmoe_safetensors_parse(b->data, b->size, f, error, 256);
}

static void test_good_file(void **state)
{
    (void)state;
    byte_buffer b;
    good_file(&b);
    vkmoe_tensor_file f;
    char error[256];
    assert_true(parse(&b, &f, error));
    assert_int_equal(f.tensor_count, 3);
    const vkmoe_tensor *t =
        vkmoe_tensor_file_find(&f, "model.layers.0.mlp.experts.0.up_proj.weight");
    assert_non_null(t);
    assert_string_equal(t->dtype_name, "BF16");
    assert_int_equal(t->block_bytes, 2);
    assert_int_equal(t->dims, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 4);
    assert_int_equal(t->size, 16);
    uint16_t first;
    memcpy(&first, b.data + t->offset, 2);
    assert_int_equal(first, 0x3f80);
    assert_int_equal(vkmoe_tensor_elements(t), 8);
    assert_string_equal(vkmoe_tensor_file_find(&f, "empty")->dtype_name, "I64");
    assert_null(vkmoe_tensor_file_find(&f, "__metadata__"));
    vkmoe_tensor_file_free(&f);
    buffer_free(&b);
}

/* A header of our own text, with an honest length prefix and `data` bytes of data. */
static bool parse_header(const char *header, size_t data, char *error)
{
    byte_buffer b = {0};
    uint64_t len = strlen(header);
    uint8_t prefix[8];
    for (int i = 0; i < 8; i++)
        prefix[i] = (uint8_t)(len >> (8 * i));
    buffer_append(&b, prefix, 8);
    buffer_append(&b, header, len);
    for (size_t i = 0; i < data; i++)
        buffer_append(&b, "\0", 1);
    vkmoe_tensor_file f;
    bool ok = parse(&b, &f, error);
    vkmoe_tensor_file_free(&f);
    buffer_free(&b);
    return ok;
}

static void test_lying_headers(void **state)
{
    (void)state;
    const struct {
        const char *header;
        const char *words;
    } cases[] = {
        {"[1, 2]", "not a JSON object"},
        {"{\"t\": 5}", "not an object"},
        {"{\"t\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", "dtype"},
        {"{\"t\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 8]}}", "dtype"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", "shape"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}", "shape"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1], \"data_offsets\": [0, 4]}}",
         "shape"},
        {"{\"t\": {\"dtype\": \"F64\", \"shape\": [4294967295, 4294967295, 4294967295], "
         "\"data_offsets\": [0, 8]}}",
         "shape"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 800]}}",
         "past the end"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", "past the end"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", "past the end"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", "disagree"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}", "JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char error[256] = "";
        assert_false(parse_header(cases[i].header, 16, error));
        if (!strstr(error, cases[i].words))
            fail_msg("case %zu: \"%s\" does not mention \"%s\"", i, error, cases[i].words);
    }
}

static void test_bad_lengths(void **state)
{
    (void)state;
    char error[256];
    vkmoe_tensor_file f;
    const uint8_t short_file[4] = {1, 0, 0, 0};
    assert_false(vkmoe_safetensors_parse(short_file, 4, &f, error, sizeof(error)));
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    assert_false(vkmoe_safetensors_parse(huge, sizeof(huge), &f, error, sizeof(error)));
    assert_non_null(strstr(error, "header length"));
}

/* D19: a tensor named twice, or tensors sharing bytes, would load
 * plausible wrong weights: refused, naming them. */
static void test_d19_duplicate_and_overlapping_tensors(void **state)
{
    (void)state;
    char error[256] = "";
    assert_false(parse_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": "
                              "[0, 8]}, \"a\": {\"dtype\": \"F32\", \"shape\": [2], "
                              "\"data_offsets\": [8, 16]}}",
                              16, error));
    assert_non_null(strstr(error, "\"a\" is declared twice"));
    assert_false(parse_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": "
                              "[0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], "
                              "\"data_offsets\": [0, 8]}}",
                              16, error));
    assert_non_null(strstr(error, "overlap"));
    assert_false(parse_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": "
                              "[0, 12]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], "
                              "\"data_offsets\": [8, 16]}}",
                              16, error));
    assert_non_null(strstr(error, "overlap"));
    /* adjacent ranges and empty tensors anywhere are fine */
    assert_true(parse_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": "
                             "[0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], "
                             "\"data_offsets\": [8, 16]}, \"c\": {\"dtype\": \"F32\", "
                             "\"shape\": [0], \"data_offsets\": [4, 4]}}",
                             16, error));
}

/* Every truncation (the last tensor's data is cut, so all are refused) and
 * every single-byte corruption of a good file parses or fails cleanly. */
static void test_truncations_and_corruptions(void **state)
{
    (void)state;
    byte_buffer b;
    good_file(&b);
    const uint8_t masks[] = {0x5a};
    assert_true(feed_mutations(vkmoe_safetensors_parse, &b, masks, sizeof(masks)));
    buffer_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file),
        cmocka_unit_test(test_lying_headers),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_d19_duplicate_and_overlapping_tensors),
        cmocka_unit_test(test_truncations_and_corruptions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
