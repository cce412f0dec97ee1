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
    assert_int_equal(vkmoe_dequantize((vkmoe_weight_type)(VKMOE_WEIGHT_MXFP4 + 1), block, 4, back),
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

/* A Q5_0 block worked out by hand: d = −1 / −16 = 0.0625 (f16 0x2c00), q =
 * min(31, trunc(x / d + 16.5)); the fifth bits of q in a little-endian
 * word (bit i: weight i), the low 4 bits as Q4_0's nibbles; w = d·(q − 16). */
static void test_q5_0_blocks(void **state)
{
    (void)state;
    float x[32] = {-1.0f, 0.5f}; /* q 0 and 24; the zeros q 16 */
    x[16] = 0.9375f;             /* q 31 */
    x[17] = 1.0f;                /* as large as x[0] but later: 32, clamped to 31 */
    uint8_t block[22], expected[22] = {0x00, 0x2c, 0xfe, 0xff, 0xff, 0xff, 0xf0, 0xf8};
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_Q5_0, 64), 44);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_Q5_0, x, 32, block, sizeof(block)), VKMOE_OK);
    assert_memory_equal(block, expected, sizeof(expected));
    float back[32];
    assert_int_equal(vkmoe_dequantize(VKMOE_WEIGHT_Q5_0, block, 32, back), VKMOE_OK);
    assert_true(back[0] == -1.0f && back[1] == 0.5f && back[16] == 0.9375f && back[17] == 0.9375f &&
                back[5] == 0.0f);
}

/* A Q5_1 block worked out by hand: m = −1, d = (2.875 + 1) / 31 = 0.125
 * (f16 0x3000; m 0xbc00), q = trunc((x − m) · 8 + 0.5); fifth bits and
 * nibbles as Q5_0's; w = d·q + m. */
static void test_q5_1_blocks(void **state)
{
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++)
        x[i] = -1.0f;
    x[1] = 0.0f;    /* q 8 */
    x[16] = 2.875f; /* the maximum: q 31, the only fifth bit */
    x[17] = 0.3f;   /* 10.4 + 0.5: q 10 */
    uint8_t block[24], expected[24] = {0x00, 0x30, 0x00, 0xbc, 0x00, 0x00, 0x01, 0x00, 0xf0, 0xa8};
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_Q5_1, x, 32, block, sizeof(block)), VKMOE_OK);
    assert_memory_equal(block, expected, sizeof(expected));
    float back[32];
    assert_int_equal(vkmoe_dequantize(VKMOE_WEIGHT_Q5_1, block, 32, back), VKMOE_OK);
    assert_true(back[0] == -1.0f && back[1] == 0.0f && back[16] == 2.875f && back[17] == 0.25f);
}

/* An IQ4_NL block worked out by hand: x = 0.5·level(i mod 16), so the
 * value of largest magnitude (−63.5, level −127) gives the grid 1 / 0.5
 * and every code exactly, and the least-squares scale is 0.5 (f16
 * 0x3800); byte j holds weight j's index low, j + 16's high. */
static void test_iq4_nl_blocks(void **state)
{
    (void)state;
    const int levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                            1,    13,   25,  38,  53,  69,  89,  113};
    float x[32], back[32];
    uint8_t block[18], expected[18] = {0x00, 0x38};
    for (int i = 0; i < 32; i++)
        x[i] = 0.5f * (float)levels[i % 16];
    for (int j = 0; j < 16; j++)
        expected[2 + j] = (uint8_t)(j * 0x11);
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_IQ4_NL, 32), 18);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_IQ4_NL, x, 32, block, sizeof(block)), VKMOE_OK);
    assert_memory_equal(block, expected, sizeof(expected));
    assert_int_equal(vkmoe_dequantize(VKMOE_WEIGHT_IQ4_NL, block, 32, back), VKMOE_OK);
    assert_memory_equal(back, x, sizeof(x));
}

/* An MXFP4 block worked out by hand: the largest magnitude 6 = 1.5·2^2
 * gives e = 2 − 2 + 127 = 127 (scale 1), so every E2M1 value is its own
 * code; 0 takes code 0, never −0's 8. A block whose largest magnitude is
 * 0.75 (2^−1) gets e = 124 and 0.75 = 6·2^−3 takes code 7. */
static void test_mxfp4_blocks(void **state)
{
    (void)state;
    const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, 0, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    float x[64] = {0}, back[64];
    uint8_t block[34], expected[34] = {0x7f};
    for (int i = 0; i < 32; i++)
        x[i] = e2m1[i % 16];
    for (int j = 0; j < 16; j++)
        expected[1 + j] = j == 8 ? 0 : (uint8_t)(j * 0x11);
    x[32] = 0.75f;
    expected[17] = 124;
    expected[18] = 0x07;
    assert_int_equal(vkmoe_weight_bytes(VKMOE_WEIGHT_MXFP4, 64), 34);
    assert_int_equal(vkmoe_quantize(VKMOE_WEIGHT_MXFP4, x, 64, block, sizeof(block)), VKMOE_OK);
    assert_memory_equal(block, expected, sizeof(expected));
    assert_int_equal(vkmoe_dequantize(VKMOE_WEIGHT_MXFP4, block, 64, back), VKMOE_OK);
    for (int i = 0; i < 64; i++)
        assert_true(back[i] == x[i]);
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

/* One Q5_K super-block: Q4_K's head (f16 d, dmin, the 12 bytes of 6-bit
 * scales and mins), then 32 bytes whose byte l holds the fifth bit of
 * weight 32j + l at bit j, then Q4_K's nibble layout of the low 4 bits; w
 * = d·sc·q − dmin·m. Codes span 0..31 in every sub-block, the largest
 * scale and min are 63, so the fits land on exactly this block; sub-block
 * 2 has scale 0. */
static void q5_k_example(uint8_t block[176], float x[256])
{
    const int sc[8] = {63, 17, 0, 40, 5, 33, 62, 1}, m[8] = {2, 63, 7, 0, 50, 21, 63, 9};
    const float d = 0.0625f, dmin = 0.03125f;
    uint8_t q[256];
    memset(block, 0, 176);
    for (int i = 0; i < 256; i++)
        q[i] = sc[i / 32] ? (uint8_t)((i % 32 * 7 + i / 32 * 3) % 32) : 0;
    put_f16(block, d);
    put_f16(block + 2, dmin);
    for (int j = 0; j < 4; j++) {
        block[4 + j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        block[8 + j] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        block[12 + j] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
    for (int i = 0; i < 256; i++) {
        int j = i / 32, l = i % 32;
        block[16 + l] |= (uint8_t)((q[i] >> 4) << j);
        block[48 + 32 * (j / 2) + l] |= (uint8_t)((q[i] & 15) << (j % 2 ? 4 : 0));
        x[i] = d * (float)sc[j] * (float)q[i] - dmin * (float)m[j];
    }
}

/* One Q3_K super-block: 32 bytes of third bits (weight i at bit i / 32 of
 * byte i % 32), 64 bytes of low 2 bits (weight 128h + 32c + l at bit 2c of
 * byte 32h + l), twelve bytes of the sixteen scales + 32 (low nibbles: j <
 * 8 low in byte j, j ≥ 8 high in byte j − 8; top 2 bits at bit 2(j / 4) of
 * byte 8 + j % 4), f16 d; w = d·sc·(q − 4). Each sub-block's first code is
 * 0 (−4, its largest magnitude) and the scale of largest magnitude is −32,
 * so the fits land on exactly this block; sub-block 5 is all zero. */
static void q3_k_example(uint8_t block[110], float x[256])
{
    const int sc[16] = {-32, 7, 31, -5, 1, 0, 12, -31, 20, -1, 3, 16, -17, 9, 30, -32};
    const float d = 0.015625f;
    uint8_t q[256];
    memset(block, 0, 110);
    for (int i = 0; i < 256; i++)
        q[i] = i % 16 && sc[i / 16] ? (uint8_t)((i % 16 * 5 + i / 16) % 8) : 0;
    for (int i = 0; i < 256; i++) {
        int h = i / 128, c = i % 128 / 32, l = i % 32;
        block[i % 32] |= (uint8_t)((q[i] >> 2) << i / 32);
        block[32 + 32 * h + l] |= (uint8_t)((q[i] & 3) << 2 * c);
        x[i] = d * (float)sc[i / 16] * (float)(q[i] - 4);
    }
    for (int j = 0; j < 16; j++) {
        int stored = sc[j] + 32;
        block[96 + j % 8] |= (uint8_t)((stored & 15) << (j < 8 ? 0 : 4));
        block[104 + j % 4] |= (uint8_t)((stored >> 4) << 2 * (j / 4));
    }
    put_f16(block + 108, d);
}

/* One Q2_K super-block: sixteen bytes of sc | m << 4, 64 bytes of 2-bit
 * codes laid out as Q3_K's low bits, f16 d and dmin; w = d·sc·q − dmin·m.
 * Codes span 0..3 in every sub-block and the largest scale and min are 15;
 * sub-block 3 has scale 0. */
static void q2_k_example(uint8_t block[84], float x[256])
{
    const int sc[16] = {15, 3, 9, 0, 1, 15, 7, 12, 4, 11, 2, 5, 14, 6, 8, 10};
    const int m[16] = {0, 15, 4, 9, 15, 2, 0, 7, 3, 1, 12, 6, 10, 13, 5, 11};
    const float d = 0.125f, dmin = 0.0625f;
    uint8_t q[256];
    memset(block, 0, 84);
    for (int i = 0; i < 256; i++) {
        int h = i / 128, c = i % 128 / 32, l = i % 32;
        q[i] = sc[i / 16] ? (uint8_t)((i % 16 * 3 + i / 16) % 4) : 0;
        block[16 + 32 * h + l] |= (uint8_t)(q[i] << 2 * c);
        x[i] = d * (float)sc[i / 16] * (float)q[i] - dmin * (float)m[i / 16];
    }
    for (int j = 0; j < 16; j++)
        block[j] = (uint8_t)(sc[j] | m[j] << 4);
    put_f16(block + 80, d);
    put_f16(block + 82, dmin);
}

/* One IQ4_XS super-block: f16 d, a 16-bit word of the scales' top 2 bits
 * (sub-block j at bit 2j), 4 bytes of their low nibbles (j at nibble j % 2
 * of byte j / 2), eight groups of 16 bytes of IQ4_NL indices; w = d·(ls −
 * 32)·level. Every sub-block's first index is 0 (level −127, its largest
 * magnitude) and the scale of largest magnitude is ls − 32 = −32, so the
 * fits land on this block; sub-block 4 (ls 32) is all zero, whose indices
 * are 8 (level 1, the nearest to 0). */
static void iq4_xs_example(uint8_t block[136], float x[256])
{
    const int levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                            1,    13,   25,  38,  53,  69,  89,  113};
    const int ls[8] = {0, 45, 17, 63, 32, 31, 2, 60};
    const float d = 0.0078125f;
    uint8_t q[256];
    memset(block, 0, 136);
    put_f16(block, d);
    for (int j = 0; j < 8; j++) {
        block[2 + j / 4] |= (uint8_t)((ls[j] >> 4) << 2 * (j % 4));
        block[4 + j / 2] |= (uint8_t)((ls[j] & 15) << 4 * (j % 2));
    }
    for (int i = 0; i < 256; i++) {
        int j = i / 32, l = i % 32;
        q[i] = ls[j] == 32 ? 8 : l ? (uint8_t)((l * 5 + j) % 16) : 0;
        block[8 + 16 * j + l % 16] |= (uint8_t)(q[i] << (l < 16 ? 0 : 4));
        x[i] = d * (float)(ls[j] - 32) * (float)levels[q[i]];
    }
}

/* Quantizing the example's values gives back its bytes, decoding its bytes
 * gives back its values; a second super-block of zeros encodes as `zeros`
 * (NULL: all zero bytes). */
static void check_zeros_and_example(vkmoe_weight_type type, size_t block_bytes,
                                    void (*example)(uint8_t *, float *), const uint8_t *zeros)
{
    uint8_t expected[2 * 210] = {0}, block[2 * 210];
    float x[512] = {0}, back[512];
    example(expected, x);
    if (zeros)
        memcpy(expected + block_bytes, zeros, block_bytes);
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

static void check_example(vkmoe_weight_type type, size_t block_bytes,
                          void (*example)(uint8_t *, float *))
{
    check_zeros_and_example(type, block_bytes, example, NULL);
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

static void test_q5_k_blocks(void **state)
{
    (void)state;
    check_example(VKMOE_WEIGHT_Q5_K, 176, q5_k_example);
}

static void test_q3_k_blocks(void **state)
{
    (void)state;
    check_example(VKMOE_WEIGHT_Q3_K, 110, q3_k_example);
}

static void test_q2_k_blocks(void **state)
{
    (void)state;
    check_example(VKMOE_WEIGHT_Q2_K, 84, q2_k_example);
}

static void test_iq4_xs_blocks(void **state)
{
    (void)state;
    /* zeros: d = −0 / 32 (f16 0x8000, as ggml), every ls 32, every index 8 */
    uint8_t zeros[136] = {0x00, 0x80, 0xaa, 0xaa};
    memset(zeros + 8, 0x88, 128);
    check_zeros_and_example(VKMOE_WEIGHT_IQ4_XS, 136, iq4_xs_example, zeros);
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
        {VKMOE_WEIGHT_F16, 1e-3},    {VKMOE_WEIGHT_BF16, 5e-3},   {VKMOE_WEIGHT_Q8_0, 1e-2},
        {VKMOE_WEIGHT_Q6_K, 2.5e-2}, {VKMOE_WEIGHT_Q4_0, 0.12},   {VKMOE_WEIGHT_Q4_K, 0.1},
        {VKMOE_WEIGHT_Q4_1, 0.1},    {VKMOE_WEIGHT_Q5_0, 0.06},   {VKMOE_WEIGHT_Q5_1, 0.06},
        {VKMOE_WEIGHT_Q5_K, 0.055},  {VKMOE_WEIGHT_Q3_K, 0.25},   {VKMOE_WEIGHT_Q2_K, 0.45},
        {VKMOE_WEIGHT_IQ4_NL, 0.12}, {VKMOE_WEIGHT_IQ4_XS, 0.12}, {VKMOE_WEIGHT_MXFP4, 0.25},
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
    const uint32_t blocks[] = {1, 1, 1, 32, 32, 256, 256, 32, 32, 32, 256, 256, 256, 32, 256, 32};
    const char *const names[] = {"f32",  "f16",    "bf16",   "q8_0", "q4_0", "q4_k",
                                 "q6_k", "q4_1",   "q5_0",   "q5_1", "q5_k", "q3_k",
                                 "q2_k", "iq4_nl", "iq4_xs", "mxfp4"};
    for (int t = 0; t < 16; t++) {
        assert_int_equal(vkmoe_weight_block((vkmoe_weight_type)t), blocks[t]);
        assert_string_equal(vkmoe_weight_type_name((vkmoe_weight_type)t), names[t]);
    }
    assert_int_equal(vkmoe_weight_block((vkmoe_weight_type)16), 0);
    assert_null(vkmoe_weight_type_name((vkmoe_weight_type)-1));
    assert_int_equal(vkmoe_weight_bytes((vkmoe_weight_type)16, 256), 0);
    float x[1];
    uint8_t b[4];
    assert_int_equal(vkmoe_quantize((vkmoe_weight_type)16, x, 0, b, 4),
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
    assert_false(vkmoe_weight_type_of_file("Q8_K", 256, 292, &type));
    assert_false(vkmoe_weight_type_of_file("I64", 1, 8, &type));
    char list[160];
    assert_string_equal(vkmoe_weight_type_list(list, sizeof(list)),
                        "f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, q4_1, q5_0, q5_1, q5_k, q3_k, "
                        "q2_k, iq4_nl, iq4_xs, mxfp4");
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
        cmocka_unit_test(test_q5_0_blocks),
        cmocka_unit_test(test_q5_1_blocks),
        cmocka_unit_test(test_iq4_nl_blocks),
        cmocka_unit_test(test_mxfp4_blocks),
        cmocka_unit_test(test_q5_k_blocks),
        cmocka_unit_test(test_q3_k_blocks),
        cmocka_unit_test(test_q2_k_blocks),
        cmocka_unit_test(test_iq4_xs_blocks),
        cmocka_unit_test(test_quantization_error),
        cmocka_unit_test(test_type_queries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
