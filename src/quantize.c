/* Weight encodings on the host: sizes, quantization from f32 and decoding
 * back (vkmoe_weight_bytes, vkmoe_quantize, vkmoe_dequantize). */
#include <math.h>
#include <string.h>

#include "convert.h"
#include "internal.h"

size_t vkmoe_weight_bytes(vkmoe_weight_type type, uint64_t weights)
{
    switch (type) {
    case VKMOE_WEIGHT_F32: return (size_t)weights * 4;
    case VKMOE_WEIGHT_F16:
    case VKMOE_WEIGHT_BF16: return (size_t)weights * 2;
    case VKMOE_WEIGHT_Q8_0:
    case VKMOE_WEIGHT_Q4_0:
        if (weights % VKMOE_QUANT_BLOCK)
            return 0;
        return (size_t)(weights / VKMOE_QUANT_BLOCK) *
               (type == VKMOE_WEIGHT_Q8_0 ? VKMOE_Q8_0_BYTES : VKMOE_Q4_0_BYTES);
    }
    return 0;
}

/* One Q8_0 block: the scale that maps the largest magnitude to 127. */
static void quantize_q8_0_block(const float *x, uint8_t *out)
{
    float amax = 0.0f;
    for (int i = 0; i < VKMOE_QUANT_BLOCK; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = vkmoe_f32_to_f16(d);
    memcpy(out, &h, 2);
    for (int i = 0; i < VKMOE_QUANT_BLOCK; i++)
        out[2 + i] = (uint8_t)(int8_t)roundf(x[i] * id);
}

/* One Q4_0 block: the scale maps the value of largest magnitude (the first
 * such) to −8. */
static void quantize_q4_0_block(const float *x, uint8_t *out)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < VKMOE_QUANT_BLOCK; i++)
        if (amax < fabsf(x[i])) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = vkmoe_f32_to_f16(d);
    memcpy(out, &h, 2);
    for (int i = 0; i < VKMOE_QUANT_BLOCK / 2; i++) {
        int lo = (int8_t)(x[i] * id + 8.5f), hi = (int8_t)(x[i + 16] * id + 8.5f);
        out[2 + i] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
}

static void dequantize_q4_0_block(const uint8_t *in, float *x)
{
    uint16_t h;
    memcpy(&h, in, 2);
    float d = vkmoe_f16_to_f32(h);
    for (int i = 0; i < VKMOE_QUANT_BLOCK / 2; i++) {
        x[i] = d * (float)((in[2 + i] & 0xf) - 8);
        x[i + 16] = d * (float)((in[2 + i] >> 4) - 8);
    }
}

static void dequantize_q8_0_block(const uint8_t *in, float *x)
{
    uint16_t h;
    memcpy(&h, in, 2);
    float d = vkmoe_f16_to_f32(h);
    for (int i = 0; i < VKMOE_QUANT_BLOCK; i++)
        x[i] = d * (float)(int8_t)in[2 + i];
}

vkmoe_status vkmoe_quantize(vkmoe_weight_type type, const float *src, size_t n, void *dst,
                            size_t dst_size)
{
    size_t bytes = vkmoe_weight_bytes(type, n);
    VKMOE_REQUIRE(NULL, src && dst, "vkmoe_quantize: src and dst must not be NULL");
    VKMOE_REQUIRE(NULL, bytes > 0 || n == 0,
                  "vkmoe_quantize: unknown type %d or %zu values are not whole blocks",
                  (int)type, n);
    VKMOE_REQUIRE(NULL, dst_size >= bytes, "vkmoe_quantize: dst holds %zu bytes, needs %zu",
                  dst_size, bytes);
    /* Byte copies: model files need not align their tensors. */
    uint8_t *blocks = dst;
    size_t block_bytes = vkmoe_weight_bytes(type, VKMOE_QUANT_BLOCK);
    for (size_t i = 0; !vkmoe_weight_blocked(type) && i < n; i++) {
        if (type == VKMOE_WEIGHT_F32) {
            memcpy(blocks + 4 * i, src + i, 4);
            continue;
        }
        uint16_t h = type == VKMOE_WEIGHT_F16 ? vkmoe_f32_to_f16(src[i]) : vkmoe_f32_to_bf16(src[i]);
        memcpy(blocks + 2 * i, &h, 2);
    }
    for (size_t b = 0; vkmoe_weight_blocked(type) && b < n / VKMOE_QUANT_BLOCK; b++)
        (type == VKMOE_WEIGHT_Q8_0 ? quantize_q8_0_block : quantize_q4_0_block)(
            src + b * VKMOE_QUANT_BLOCK, blocks + b * block_bytes);
    return VKMOE_OK;
}

vkmoe_status vkmoe_dequantize(vkmoe_weight_type type, const void *src, size_t n, float *dst)
{
    VKMOE_REQUIRE(NULL, src && dst, "vkmoe_dequantize: src and dst must not be NULL");
    VKMOE_REQUIRE(NULL, vkmoe_weight_bytes(type, n) > 0 || n == 0,
                  "vkmoe_dequantize: unknown type %d or %zu values are not whole blocks",
                  (int)type, n);
    const uint8_t *blocks = src;
    size_t block_bytes = vkmoe_weight_bytes(type, VKMOE_QUANT_BLOCK);
    for (size_t i = 0; !vkmoe_weight_blocked(type) && i < n; i++) {
        if (type == VKMOE_WEIGHT_F32) {
            memcpy(dst + i, blocks + 4 * i, 4);
            continue;
        }
        uint16_t h;
        memcpy(&h, blocks + 2 * i, 2);
        dst[i] = type == VKMOE_WEIGHT_F16 ? vkmoe_f16_to_f32(h) : vkmoe_bf16_to_f32(h);
    }
    for (size_t b = 0; vkmoe_weight_blocked(type) && b < n / VKMOE_QUANT_BLOCK; b++)
        (type == VKMOE_WEIGHT_Q8_0 ? dequantize_q8_0_block : dequantize_q4_0_block)(
            blocks + b * block_bytes, dst + b * VKMOE_QUANT_BLOCK);
    return VKMOE_OK;
}
