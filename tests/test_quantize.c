/* Weight encodings on the host: GGUF blocks built by hand from the format's
 * definition, quantized and decoded bit-exactly; the quantization error of
 * every type on random weights; bad arguments. No device needed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reference.h"
#include "util.h"
#include "weight_types.h"

static void put_f16(uint8_t *at, float value)
{
    uint16_t h = vkmoe_ref_f32_to_f16(value);
    memcpy(at, &h, 2);
}

/* Q8_0 blocks worked out by hand from the format: d = max|x| / 127 as f16,
 * q = round(x / d) half away from zero (-63.5 -> -64). */
static void test_q8_0_blocks(void **state)
{
    (void)state;
    float x[64] = {1.0f, -0.5f, 0.25f}; /* a second block of zeros */
    uint8_t block[68], expected[68] = {0x08, 0x20, 0x7f, 0xc0, 0x20};
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_Q8_0, 64), 68);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_Q8_0, x, 64, block, sizeof(block)), VKMOE_OK);
    assert_memory_equal(block, expected, sizeof(expected));
    float back[64];
    assert_int_equal(vkmoe_dequantize(VKMOE_WEIGHT_Q8_0, block, 64, back), VKMOE_OK);
    float d = 0.0078125f * (1.0f + 8.0f / 1024.0f);
    assert_true(back[0] == 127 * d && back[1] == -64 * d && back[2] == 32 * d && back[40] == 0);
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_Q8_0, 33), 0);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_Q8_0, x, 33, block, sizeof(block)),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_Q8_0, x, 64, block, 67),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_F16, NULL, 4, block, 8),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_dequantize((vkmoe_weight_type)9, block, 4, back),
                     VKMOE_ERROR_INVALID_ARGUMENT);
}

/* A Q4_0 block worked out by hand from the format: m, the value of largest
 * magnitude (the first of equals), gives d = m / -8; q = min(15, trunc(x /
 * d + 8.5)); low nibbles hold weights 0..15, high ones 16..31. */
static void test_q4_0_blocks(void **state)
{
    (void)state;
    float x[32] = {-1.0f, 0.5f};
    x[16] = 0.25f;
    x[17] = 1.0f; /* as large as x[0] but later: clamped to q = 15 */
    uint8_t block[18], expected[18] = {0x00, 0x30, 0xa0, 0xfc};
    memset(expected + 4, 0x88, 14);
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_Q4_0, 32), 18);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_Q4_0, x, 32, block, sizeof(block)), VKMOE_OK);
    assert_memory_equal(block, expected, sizeof(expected));
    float back[32];
    assert_int_equal(vkmoe_dequantize(VKMOE_WEIGHT_Q4_0, block, 32, back), VKMOE_OK);
    assert_true(back[0] == -1.0f && back[1] == 0.5f && back[16] == 0.25f && back[17] == 0.875f &&
                back[5] == 0.0f);
}

/* A Q4_1 block worked out by hand from the format: m = min x = -1, d =
 * (max - m) / 15 = 0.2 (f16 0x3266, 0.199951...), q = min(15, trunc((x - m)
 * / d + 0.5)) with 1 / d taken once; low nibbles hold weights 0..15, high
 * ones 16..31; w = d·q + m. */
static void test_q4_1_blocks(void **state)
{
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++)
        x[i] = -1.0f;
    x[1] = 0.0f;  /* (0 + 1) · 5 + 0.5 = 5.5: q 5 */
    x[16] = 2.0f; /* the maximum: q 15 */
    x[17] = 0.3f; /* 1.3 · 5 + 0.5 = 7.0000...: q 7 */
    uint8_t block[20], expected[20] = {0x66, 0x32, 0x00, 0xbc, 0xf0, 0x75};
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_Q4_1, 64), 40);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_Q4_1, x, 32, block, sizeof(block)), VKMOE_OK);
    assert_memory_equal(block, expected, sizeof(expected));
    float back[32];
    assert_int_equal(vkmoe_dequantize(VKMOE_WEIGHT_Q4_1, block, 32, back), VKMOE_OK);
    float d = 0.199951171875f;
    assert_true(back[0] == -1.0f && back[1] == 5 * d - 1.0f && back[16] == 15 * d - 1.0f &&
                back[17] == 7 * d - 1.0f);
}

/* One Q4_K super-block from the format's definition: f16 d and dmin; 12
 * bytes whose bytes j, j + 4 (j < 4) hold sc_j, m_j in their low 6 bits and
 * the top 2 bits of sc_j+4, m_j+4 in their high 2, and byte j + 8 holds
 * sc_j+4 | m_j+4 << 4 in its nibbles; 128 bytes whose byte 32g + l holds q of
 * weight 64g + l (low nibble) and 64g + 32 + l (high); w = d·sc·q − dmin·m.
 * Every sub-block's codes reach 0 and 15 and the largest scale and min are
 * 63, so the least-squares fits land on exactly this block; sub-block 2 has
 * scale 0 (a constant −dmin·m, codes 0). */
static void q4_k_example(uint8_t block[144], float x[256])
{
    const int sc[8] = {63, 17, 0, 40, 5, 33, 62, 1}, m[8] = {2, 63, 7, 0, 50, 21, 63, 9};
    const float d = 0.0625f, dmin = 0.03125f;
    uint8_t q[256];
    for (int i = 0; i < 256; i++)
        q[i] = sc[i / 32] ? (uint8_t)((i % 32 * 7 + i / 32 * 3) % 16) : 0;
    put_f16(block, d);
    put_f16(block + 2, dmin);
    for (int j = 0; j < 4; j++) {
        block[4 + j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        block[8 + j] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        block[12 + j] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            block[16 + 32 * g + l] = (uint8_t)(q[64 * g + l] | q[64 * g + 32 + l] << 4);
    for (int i = 0; i < 256; i++) {
        float step = d * (float)sc[i / 32], offset = dmin * (float)m[i / 32];
        x[i] = step * (float)q[i] - offset;
    }
}

/* One Q6_K super-block from the format's definition: 128 bytes ql, 64 bytes
 * qh, 16 int8 scales, f16 d. In each half h of 128 weights, weight 128h +
 * 32c + l (c = 0..3) has its low 4 bits in ql byte 64h + 32(c & 1) + l
 * (low nibble for c < 2, high for c ≥ 2) and its top 2 bits at bit 2c of qh
 * byte 32h + l; w = d·sc_(i/16)·(q − 32). Every sub-block's first code is 0
 * (−32, its largest magnitude), the scale of largest magnitude is −128, so
 * the fits land on exactly this block; sub-block 2 is all zero. */
static void q6_k_example(uint8_t block[210], float x[256])
{
    const int sc[16] = {-128, 77, 0, -3, 127, 45, -90, 12, 1, -1, 100, 64, -64, 33, 9, -128};
    const float d = 0.0078125f;
    uint8_t q[256];
    for (int i = 0; i < 256; i++)
        q[i] = i % 16 && sc[i / 16] ? (uint8_t)((i % 16 * 13 + i / 16 * 7) % 64) : 0;
    memset(block, 0, 210);
    for (int i = 0; i < 256; i++) {
        int h = i / 128, c = i % 128 / 32, l = i % 32;
        block[64 * h + 32 * (c & 1) + l] |= (uint8_t)((q[i] & 15) << (c >= 2 ? 4 : 0));
        block[128 + 32 * h + l] |= (uint8_t)((q[i] >> 4) << 2 * c);
    }
    for (int j = 0; j < 16; j++)
        block[192 + j] = (uint8_t)(int8_t)sc[j];
    put_f16(block + 208, d);
    for (int i = 0; i < 256; i++)
        x[i] = d * (float)sc[i / 16] * (float)(q[i] - 32);
}

/* Quantizing the example's values gives back its bytes, decoding its bytes
 * gives back its values; a second super-block of zeros stays all zero. */
static void check_example(vkmoe_weight_type type, size_t block_bytes,
                          void (*example)(uint8_t *, float *))
{
    uint8_t expected[2 * 210] = {0}, block[2 * 210];
    float x[512] = {0}, back[512];
    example(expected, x);
    assert_int_equal(vkmoe_weight_block(type), 256);
    assert_int_equal(vkmoe_weight_bytes(type, 512), 2 * block_bytes);
    assert_int_equal(vkmoe_weight_bytes(type, 288), 0);
    memset(block, 0xa5, sizeof(block));
    assert_int_equal(vkmoe_quantize(type, x, 512, block, sizeof(block)), VKMOE_OK);
    assert_memory_equal(block, expected, 2 * block_bytes);
    assert_int_equal(vkmoe_dequantize(type, expected, 512, back), VKMOE_OK);
    for (int i = 0; i < 512; i++) /* == as −0 (0 · (0 − 32) in Q6_K) equals 0 */
        assert_true(back[i] == x[i]);
    assert_int_equal(vkmoe_quantize(type, x, 256, block, block_bytes - 1),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_dequantize(type, expected, 300, back), VKMOE_ERROR_INVALID_ARGUMENT);
}

static void test_q4_k_blocks(void **state)
{
    (void)state;
    check_example(VKMOE_WEIGHT_Q4_K, 144, q4_k_example);
}

static void test_q6_k_blocks(void **state)
{
    (void)state;
    check_example(VKMOE_WEIGHT_Q6_K, 210, q6_k_example);
}

/* RMS error of each type on uniform random weights, relative to their RMS:
 * the bounds are about twice what the formats give (a uniform quantizer of
 * step s errs by s / √12), so a packing or rounding bug cannot pass. */
static void test_quantization_error(void **state)
{
    (void)state;
    const struct {
        vkmoe_weight_type type;
        double bound;
    } cases[] = {
        {VKMOE_WEIGHT_F16, 1e-3},    {VKMOE_WEIGHT_BF16, 5e-3}, {VKMOE_WEIGHT_Q8_0, 1e-2},
        {VKMOE_WEIGHT_Q6_K, 2.5e-2}, {VKMOE_WEIGHT_Q4_0, 0.12}, {VKMOE_WEIGHT_Q4_K, 0.1},
        {VKMOE_WEIGHT_Q4_1, 0.1},
    };
    enum { N = 4096 };
    float *x = malloc(N * sizeof(*x)), *back = malloc(N * sizeof(*back));
    uint8_t *blocks = malloc(N * 4);
    assert_true(x && back && blocks);
    uint32_t state_ = 12345;
    for (int i = 0; i < N; i++) {
        state_ = state_ * 1664525u + 1013904223u;
        x[i] = (float)(state_ >> 8) / 16777216.0f * 2.0f - 1.0f;
    }
    for (size_t c = 0; c < VKMOE_ARRAY_SIZE(cases); c++) {
        assert_int_equal(vkmoe_quantize(cases[c].type, x, N, blocks, N * 4), VKMOE_OK);
        assert_int_equal(vkmoe_dequantize(cases[c].type, blocks, N, back), VKMOE_OK);
        double err = 0, norm = 0;
        for (int i = 0; i < N; i++) {
            err += ((double)back[i] - x[i]) * ((double)back[i] - x[i]);
            norm += (double)x[i] * x[i];
        }
        double rel = sqrt(err / norm);
        if (!(rel <= cases[c].bound))
            fail_msg("%s: relative RMS error %g > %g", vkmoe_weight_type_name(cases[c].type), rel,
                     cases[c].bound);
    }
    free(x);
    free(back);
    free(blocks);
}

static void test_type_queries(void **state)
{
    (void)state;
    const uint32_t blocks[] = {1, 1, 1, 32, 32, 256, 256, 32};
    const char *const names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k", "q4_1"};
    for (int t = 0; t < 8; t++) {
        assert_int_equal(vkmoe_weight_block((vkmoe_weight_type)t), blocks[t]);
        assert_string_equal(vkmoe_weight_type_name((vkmoe_weight_type)t), names[t]);
    }
    assert_int_equal(vkmoe_weight_block((vkmoe_weight_type)8), 0);
    assert_null(vkmoe_weight_type_name((vkmoe_weight_type)-1));
    assert_int_equal(vkmoe_weight_bytes((vkmoe_weight_type)8, 256), 0);
    float x[1];
    uint8_t b[4];
    assert_int_equal(vkmoe_quantize((vkmoe_weight_type)8, x, 0, b, 4),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_Q4_K, x, 0, b, 0), VKMOE_OK);
}

/* D3: a count whose bytes do not fit in size_t used to wrap around to a
 * small size that passed the dst check (then a heap overflow). */
static void test_d03_sizes_that_overflow(void **state)
{
    (void)state;
    float src[4] = {0};
    uint8_t dst[4];
    size_t huge = ((size_t)1 << 62) + 1;
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_F32, huge), 0);
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_Q8_0, UINT64_MAX / 32 * 32), 0);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_F32, src, huge, dst, sizeof(dst)),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkmoe_last_error(), "too many"));
    float out[4];
    assert_int_equal(vkmoe_dequantize(VKMOE_WEIGHT_F32, dst, huge, out),
                     VKMOE_ERROR_INVALID_ARGUMENT);
}

/* A model file's element type is a weight type by its name and block
 * layout, both of which must match the codec table. */
static void test_types_of_files(void **state)
{
    (void)state;
    vkmoe_weight_type type;
    for (int t = 0; vkmoe_weight_type_name((vkmoe_weight_type)t); t++) {
        char upper[16];
        const char *name = vkmoe_weight_type_name((vkmoe_weight_type)t);
        size_t i = 0;
        for (; name[i] && i + 1 < sizeof(upper); i++)
            upper[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
        upper[i] = '\0';
        uint32_t block = vkmoe_weight_block((vkmoe_weight_type)t);
        uint32_t bytes = (uint32_t)vkmoe_weight_bytes((vkmoe_weight_type)t, block);
        assert_true(vkmoe_weight_type_of_file(upper, block, bytes, &type));
        assert_int_equal(type, t);
        assert_false(vkmoe_weight_type_of_file(upper, block, bytes + 1, &type));
    }
    assert_false(vkmoe_weight_type_of_file("Q5_K", 256, 176, &type));
    assert_false(vkmoe_weight_type_of_file("I64", 1, 8, &type));
    char list[128];
    assert_string_equal(vkmoe_weight_type_list(list, sizeof(list)),
                        "f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, q4_1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_d03_sizes_that_overflow),
        cmocka_unit_test(test_types_of_files),
        cmocka_unit_test(test_q8_0_blocks),
        cmocka_unit_test(test_q4_0_blocks),
        cmocka_unit_test(test_q4_1_blocks),
        cmocka_unit_test(test_q4_k_blocks),
        cmocka_unit_test(test_q6_k_blocks),
        cmocka_unit_test(test_quantization_error),
        cmocka_unit_test(test_type_queries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
