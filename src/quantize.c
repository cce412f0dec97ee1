/* Weight encodings on the host: sizes, quantization from f32 and decoding
 * back (vkmoe_weight_block, vkmoe_weight_bytes, vkmoe_quantize,
 * vkmoe_dequantize). Every type is a sequence of blocks; f32, f16 and bf16
 * are blocks of one value. The GGUF quantizers reproduce ggml's reference
 * quantizers operation for operation, in f32, so their blocks equal a GGUF
 * file's. Byte copies throughout: model files need not align their tensors. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "checked_size.h"
#include "convert.h"
#include "error.h"
#include "util.h"
#include "weight_types.h"

#define QK 32    /* weights in a Q8_0, Q4_0 or Q4_1 block */
#define QK_K 256 /* weights in a Q4_K or Q6_K super-block */

static float load_f16(const uint8_t *at)
{
    uint16_t h;
    memcpy(&h, at, 2);
    return vkmoe_f16_to_f32(h);
}

static void store_f16(uint8_t *at, float value)
{
    uint16_t h = vkmoe_f32_to_f16(value);
    memcpy(at, &h, 2);
}

/* ggml rounds with nearest_int: to nearest, ties to even, like lrintf in
 * the default rounding mode. */
static int nearest(float value) { return (int)lrintf(value); }

static int clamp_int(int value, int low, int high)
{
    return value < low ? low : value > high ? high : value;
}

static void quantize_f32(const float *x, uint8_t *out) { memcpy(out, x, 4); }
static void dequantize_f32(const uint8_t *in, float *x) { memcpy(x, in, 4); }
static void quantize_f16(const float *x, uint8_t *out) { store_f16(out, *x); }
static void dequantize_f16(const uint8_t *in, float *x) { *x = load_f16(in); }

static void quantize_bf16(const float *x, uint8_t *out)
{
    uint16_t h = vkmoe_f32_to_bf16(*x);
    memcpy(out, &h, 2);
}

static void dequantize_bf16(const uint8_t *in, float *x)
{
    uint16_t h;
    memcpy(&h, in, 2);
    *x = vkmoe_bf16_to_f32(h);
}

/* Q8_0: the scale that maps the largest magnitude to 127. */
static void quantize_q8_0(const float *x, uint8_t *out)
{
    float amax = 0.0f;
    for (int i = 0; i < QK; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    for (int i = 0; i < QK; i++)
        out[2 + i] = (uint8_t)(int8_t)roundf(x[i] * id);
}

static void dequantize_q8_0(const uint8_t *in, float *x)
{
    float d = load_f16(in);
    for (int i = 0; i < QK; i++)
        x[i] = d * (float)(int8_t)in[2 + i];
}

/* Q4_0: the scale maps the value of largest magnitude (the first such) to −8. */
static void quantize_q4_0(const float *x, uint8_t *out)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < QK; i++)
        if (amax < fabsf(x[i])) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    for (int i = 0; i < QK / 2; i++) {
        int lo = (int8_t)(x[i] * id + 8.5f), hi = (int8_t)(x[i + 16] * id + 8.5f);
        out[2 + i] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
}

static void dequantize_q4_0(const uint8_t *in, float *x)
{
    float d = load_f16(in);
    for (int i = 0; i < QK / 2; i++) {
        x[i] = d * (float)((in[2 + i] & 0xf) - 8);
        x[i + 16] = d * (float)((in[2 + i] >> 4) - 8);
    }
}

/* Q4_1: the block's minimum and range on 16 levels (ggml's
 * quantize_row_q4_1_ref: the reciprocal taken once, truncation after +0.5). */
static void quantize_q4_1(const float *x, uint8_t *out)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int i = 0; i < QK; i++) {
        min = x[i] < min ? x[i] : min;
        max = x[i] > max ? x[i] : max;
    }
    float d = (max - min) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(out, d);
    store_f16(out + 2, min);
    for (int i = 0; i < QK / 2; i++) {
        int lo = (int8_t)((x[i] - min) * id + 0.5f), hi = (int8_t)((x[i + 16] - min) * id + 0.5f);
        out[4 + i] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
    }
}

static void dequantize_q4_1(const uint8_t *in, float *x)
{
    float d = load_f16(in), m = load_f16(in + 2);
    for (int i = 0; i < QK / 2; i++) {
        x[i] = d * (float)(in[4 + i] & 0xf) + m;
        x[i + 16] = d * (float)(in[4 + i] >> 4) + m;
    }
}

/* ---- Q4_K ---- */

enum { Q4K_SUB = 32, Q4K_SUBS = QK_K / Q4K_SUB, Q4K_LEVELS = 15 };

/* Squared error of x ≈ scale·q + min, each term weighted. */
static float fit_error(const float *x, const float *w, const uint8_t *q, float scale, float min)
{
    float error = 0.0f;
    for (int i = 0; i < Q4K_SUB; i++) {
        float diff = scale * q[i] + min - x[i];
        error += w[i] * (diff * diff);
    }
    return error;
}

/* x ≈ scale·q + min (min ≤ 0) for one sub-block, q in 0..15: the grid
 * through the sub-block's range, then 21 grids of 14 to 16 steps over it,
 * each with its weighted least-squares scale and min, keeping the best
 * (ggml's make_qkx2_quants with -1, 0.1, 20). Returns the scale; *neg_min
 * is −min. */
static float fit_scale_min(const float *x, const float *w, uint8_t *q, float *neg_min)
{
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < Q4K_SUB; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(q, 0, Q4K_SUB);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = Q4K_LEVELS / (max - min), scale = 1 / iscale;
    for (int i = 0; i < Q4K_SUB; i++)
        q[i] = (uint8_t)clamp_int(nearest(iscale * (x[i] - min)), 0, Q4K_LEVELS);
    float best = fit_error(x, w, q, scale, min);
    uint8_t trial[Q4K_SUB];
    for (int step = 0; step <= 20; step++) {
        iscale = (-1.0f + 0.1f * (float)step + Q4K_LEVELS) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < Q4K_SUB; i++) {
            int l = clamp_int(nearest(iscale * (x[i] - min)), 0, Q4K_LEVELS);
            trial[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float det = sum_w * sum_l2 - sum_l * sum_l;
        if (!(det > 0))
            continue;
        float trial_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
        float trial_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        if (trial_min > 0) {
            trial_min = 0;
            trial_scale = sum_xl / sum_l2;
        }
        float error = fit_error(x, w, trial, trial_scale, trial_min);
        if (error < best) {
            memcpy(q, trial, Q4K_SUB);
            best = error;
            scale = trial_scale;
            min = trial_min;
        }
    }
    *neg_min = -min;
    return scale;
}

/* Sub-block j's 6-bit scale and min from the 12 packed bytes: j < 4 in the
 * low 6 bits of bytes j and j + 4; j ≥ 4 in the nibbles of byte j + 4 and
 * the top 2 bits of bytes j − 4 and j. */
static void q4k_scale_min(const uint8_t *packed, int j, int *scale, int *min)
{
    if (j < 4) {
        *scale = packed[j] & 63;
        *min = packed[j + 4] & 63;
    } else {
        *scale = (packed[j + 4] & 0xf) | (packed[j - 4] >> 6) << 4;
        *min = (packed[j + 4] >> 4) | (packed[j] >> 6) << 4;
    }
}

static void q4k_pack_scale_min(uint8_t *packed, int j, uint8_t scale, uint8_t min)
{
    if (j < 4) {
        packed[j] = scale;
        packed[j + 4] = min;
    } else {
        packed[j + 4] = (uint8_t)((scale & 0xf) | (min & 0xf) << 4);
        packed[j - 4] |= (uint8_t)((scale >> 4) << 6);
        packed[j] |= (uint8_t)((min >> 4) << 6);
    }
}

static void quantize_q4_k(const float *x, uint8_t *out)
{
    uint8_t q[QK_K], *packed = out + 4;
    float weights[Q4K_SUB], scales[Q4K_SUBS], mins[Q4K_SUBS], max_scale = 0, max_min = 0;
    for (int j = 0; j < Q4K_SUBS; j++) {
        const float *sub = x + Q4K_SUB * j;
        float sum_x2 = 0;
        for (int i = 0; i < Q4K_SUB; i++)
            sum_x2 += sub[i] * sub[i];
        float av_x = sqrtf(sum_x2 / Q4K_SUB);
        for (int i = 0; i < Q4K_SUB; i++)
            weights[i] = av_x + fabsf(sub[i]); /* larger values matter more */
        scales[j] = fit_scale_min(sub, weights, q + Q4K_SUB * j, &mins[j]);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < Q4K_SUBS; j++) {
        uint8_t scale = (uint8_t)nearest(inv_scale * scales[j]);
        uint8_t min = (uint8_t)nearest(inv_min * mins[j]);
        q4k_pack_scale_min(packed, j, scale < 63 ? scale : 63, min < 63 ? min : 63);
    }
    store_f16(out, max_scale / 63.0f);
    store_f16(out + 2, max_min / 63.0f);
    /* q again, on the grid the stored (rounded) scales and mins give */
    float d = load_f16(out), dmin = load_f16(out + 2);
    for (int j = 0; j < Q4K_SUBS; j++) {
        int scale, min;
        q4k_scale_min(packed, j, &scale, &min);
        float step = d * (float)scale, offset = dmin * (float)min;
        for (int i = 0; step != 0 && i < Q4K_SUB; i++)
            q[Q4K_SUB * j + i] =
                (uint8_t)clamp_int(nearest((x[Q4K_SUB * j + i] + offset) / step), 0, 15);
    }
    uint8_t *nibbles = out + 16;
    for (int j = 0; j < QK_K; j += 2 * Q4K_SUB)
        for (int i = 0; i < Q4K_SUB; i++)
            nibbles[j / 2 + i] = (uint8_t)(q[j + i] | q[j + Q4K_SUB + i] << 4);
}

static void dequantize_q4_k(const uint8_t *in, float *x)
{
    float d = load_f16(in), dmin = load_f16(in + 2);
    for (int j = 0; j < Q4K_SUBS; j++) {
        int scale, min;
        q4k_scale_min(in + 4, j, &scale, &min);
        float step = d * (float)scale, offset = dmin * (float)min;
        const uint8_t *nibbles = in + 16 + Q4K_SUB * (j / 2);
        for (int i = 0; i < Q4K_SUB; i++)
            x[Q4K_SUB * j + i] =
                step * (float)(j % 2 ? nibbles[i] >> 4 : nibbles[i] & 0xf) - offset;
    }
}

/* ---- Q6_K ---- */

enum { Q6K_SUB = 16, Q6K_SUBS = QK_K / Q6K_SUB, Q6K_HALF = 32 };

/* Σ x²·x·l and Σ x²·l² of x on the grid 1 / iscale, l in −32..31. */
static void symmetric_sums(const float *x, float iscale, float *sum_lx, float *sum_l2)
{
    *sum_lx = *sum_l2 = 0;
    for (int i = 0; i < Q6K_SUB; i++) {
        int l = clamp_int(nearest(iscale * x[i]), -Q6K_HALF, Q6K_HALF - 1);
        float w = x[i] * x[i];
        *sum_lx += w * x[i] * l;
        *sum_l2 += w * l * l;
    }
}

static void symmetric_codes(const float *x, float iscale, int8_t *q)
{
    for (int i = 0; i < Q6K_SUB; i++)
        q[i] = (int8_t)(Q6K_HALF + clamp_int(nearest(iscale * x[i]), -Q6K_HALF, Q6K_HALF - 1));
}

/* x ≈ scale·(q − 32) for one sub-block of 16: the grid that puts the value
 * of largest magnitude on −32, then 18 grids around it, keeping the best
 * least-squares fit weighted by x² (ggml's make_qx_quants, rmse_type 1).
 * Returns the scale, signed. */
static float fit_symmetric(const float *x, int8_t *q)
{
    float amax = 0, max = 0;
    for (int i = 0; i < Q6K_SUB; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-15f) {
        memset(q, 0, Q6K_SUB);
        return 0.0f;
    }
    float iscale = (float)-Q6K_HALF / max, sum_lx, sum_l2;
    symmetric_codes(x, iscale, q);
    symmetric_sums(x, iscale, &sum_lx, &sum_l2);
    float scale = sum_l2 != 0 ? sum_lx / sum_l2 : 0.0f, best = scale * sum_lx;
    for (int step = -9; step <= 9; step++) {
        if (step == 0)
            continue;
        iscale = -(Q6K_HALF + 0.1f * (float)step) / max;
        symmetric_sums(x, iscale, &sum_lx, &sum_l2);
        if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
            symmetric_codes(x, iscale, q);
            scale = sum_lx / sum_l2;
            best = scale * sum_lx;
        }
    }
    return scale;
}

static void quantize_q6_k(const float *x, uint8_t *out)
{
    int8_t q[QK_K], *sub_scales = (int8_t *)(out + 192);
    float scales[Q6K_SUBS], max_scale = 0, max_abs = 0;
    for (int j = 0; j < Q6K_SUBS; j++) {
        scales[j] = fit_symmetric(x + Q6K_SUB * j, q + Q6K_SUB * j);
        if (fabsf(scales[j]) > max_abs) {
            max_abs = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    memset(out, 0, 210);
    if (max_abs < 1e-15f)
        return;
    float iscale = -128.0f / max_scale;
    store_f16(out + 208, 1 / iscale);
    for (int j = 0; j < Q6K_SUBS; j++) {
        int scale = nearest(iscale * scales[j]);
        sub_scales[j] = (int8_t)(scale < 127 ? scale : 127);
    }
    /* q again, on the grid the stored (rounded) scales give */
    float d = load_f16(out + 208);
    for (int j = 0; j < Q6K_SUBS; j++) {
        float step = d * (float)sub_scales[j];
        for (int i = 0; step != 0 && i < Q6K_SUB; i++)
            q[Q6K_SUB * j + i] = (int8_t)(Q6K_HALF + clamp_int(nearest(x[Q6K_SUB * j + i] / step),
                                                               -Q6K_HALF, Q6K_HALF - 1));
    }
    /* Each half of 128: ql bytes l and l + 32 hold weights l, l + 32 (low
     * nibbles) and l + 64, l + 96 (high); qh byte l their top two bits. */
    for (int half = 0; half < 2; half++) {
        const int8_t *h = q + 128 * half;
        uint8_t *ql = out + 64 * half, *qh = out + 128 + 32 * half;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((h[l] & 0xf) | (h[l + 64] & 0xf) << 4);
            ql[l + 32] = (uint8_t)((h[l + 32] & 0xf) | (h[l + 96] & 0xf) << 4);
            qh[l] = (uint8_t)(h[l] >> 4 | (h[l + 32] >> 4) << 2 | (h[l + 64] >> 4) << 4 |
                              (h[l + 96] >> 4) << 6);
        }
    }
}

static void dequantize_q6_k(const uint8_t *in, float *x)
{
    float d = load_f16(in + 208);
    for (int i = 0; i < QK_K; i++) {
        int half = i / 128, quarter = i % 128 / 32, l = i % 32;
        uint8_t low = in[64 * half + 32 * (quarter & 1) + l] >> 4 * (quarter >> 1) & 0xf;
        uint8_t high = in[128 + 32 * half + l] >> 2 * quarter & 3;
        float step = d * (float)(int8_t)in[192 + i / Q6K_SUB];
        x[i] = step * (float)((low | high << 4) - Q6K_HALF);
    }
}

typedef struct codec {
    const char *name;
    uint32_t weights, bytes; /* per block */
    void (*quantize)(const float *x, uint8_t *out);
    void (*dequantize)(const uint8_t *in, float *x);
} codec;

static const codec codecs[] = {
    [VKMOE_WEIGHT_F32] = {"f32", 1, 4, quantize_f32, dequantize_f32},
    [VKMOE_WEIGHT_F16] = {"f16", 1, 2, quantize_f16, dequantize_f16},
    [VKMOE_WEIGHT_BF16] = {"bf16", 1, 2, quantize_bf16, dequantize_bf16},
    [VKMOE_WEIGHT_Q8_0] = {"q8_0", QK, 34, quantize_q8_0, dequantize_q8_0},
    [VKMOE_WEIGHT_Q4_0] = {"q4_0", QK, 18, quantize_q4_0, dequantize_q4_0},
    [VKMOE_WEIGHT_Q4_K] = {"q4_k", QK_K, 144, quantize_q4_k, dequantize_q4_k},
    [VKMOE_WEIGHT_Q6_K] = {"q6_k", QK_K, 210, quantize_q6_k, dequantize_q6_k},
    [VKMOE_WEIGHT_Q4_1] = {"q4_1", QK, 20, quantize_q4_1, dequantize_q4_1},
};

/* The codec of a type, or NULL. */
static const codec *codec_of(vkmoe_weight_type type)
{
    return (unsigned)type < VKMOE_ARRAY_SIZE(codecs) ? &codecs[type] : NULL;
}

const char *vkmoe_weight_type_name(vkmoe_weight_type type)
{
    const codec *c = codec_of(type);
    return c ? c->name : NULL;
}

uint32_t vkmoe_weight_block(vkmoe_weight_type type)
{
    const codec *c = codec_of(type);
    return c ? c->weights : 0;
}

size_t vkmoe_weight_bytes(vkmoe_weight_type type, uint64_t weights)
{
    const codec *c = codec_of(type);
    size_t bytes;
    if (!c || weights % c->weights || !vkmoe_mul_size(weights / c->weights, c->bytes, &bytes))
        return 0;
    return bytes;
}

vkmoe_status vkmoe_quantize(vkmoe_weight_type type, const float *src, size_t n, void *dst,
                            size_t dst_size)
{
    size_t bytes = vkmoe_weight_bytes(type, n);
    VKMOE_REQUIRE(NULL, src && dst, "vkmoe_quantize: src and dst must not be NULL");
    VKMOE_REQUIRE(NULL, bytes > 0 || (n == 0 && codec_of(type)),
                  "vkmoe_quantize: unknown type %d, or %zu values are not whole blocks or "
                  "too many to address",
                  (int)type, n);
    VKMOE_REQUIRE(NULL, dst_size >= bytes, "vkmoe_quantize: dst holds %zu bytes, needs %zu",
                  dst_size, bytes);
    const codec *c = codec_of(type);
    uint8_t *blocks = dst;
    for (size_t b = 0; b < n / c->weights; b++)
        c->quantize(src + b * c->weights, blocks + b * c->bytes);
    return VKMOE_OK;
}

vkmoe_status vkmoe_dequantize(vkmoe_weight_type type, const void *src, size_t n, float *dst)
{
    VKMOE_REQUIRE(NULL, src && dst, "vkmoe_dequantize: src and dst must not be NULL");
    VKMOE_REQUIRE(NULL, vkmoe_weight_bytes(type, n) > 0 || (n == 0 && codec_of(type)),
                  "vkmoe_dequantize: unknown type %d, or %zu values are not whole blocks or "
                  "too many to address",
                  (int)type, n);
    const codec *c = codec_of(type);
    const uint8_t *blocks = src;
    for (size_t b = 0; b < n / c->weights; b++)
        c->dequantize(blocks + b * c->bytes, dst + b * c->weights);
    return VKMOE_OK;
}

bool vkmoe_weight_type_of_file(const char *name, uint32_t block, uint32_t block_bytes,
                               vkmoe_weight_type *out)
{
    for (size_t t = 0; t < VKMOE_ARRAY_SIZE(codecs); t++)
        if (strcasecmp(name, codecs[t].name) == 0 && block == codecs[t].weights &&
            block_bytes == codecs[t].bytes) {
            *out = (vkmoe_weight_type)t;
            return true;
        }
    return false;
}

const char *vkmoe_weight_type_list(char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t t = 0; t < VKMOE_ARRAY_SIZE(codecs) && used < size; t++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", t ? ", " : "", codecs[t].name);
    return out;
}
