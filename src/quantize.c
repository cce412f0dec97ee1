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
#include "constants.h"
#include "convert.h"
#include "error.h"
#include "util.h"
#include "weight_types.h"

#define QK 32    /* weights in a block (Q8_0, Q4_0, …), and in a K-quant's sub-block */
#define QK_K 256 /* weights in a super-block (Q4_K, Q6_K, …) */

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

/* Rows of the types of one value a block, at once: a call per value
 * through the codec table costs more than the value. bf16 is the top
 * half of an f32. (CPU experts convert f16 rows with F16C.) */
static void dequantize_f32_values(const uint8_t *in, size_t n, float *x)
{
    memcpy(x, in, n * sizeof(float));
}

static void dequantize_f16_values(const uint8_t *in, size_t n, float *x)
{
    for (size_t i = 0; i < n; i++)
        x[i] = load_f16(in + 2 * i);
}

static void dequantize_bf16_values(const uint8_t *in, size_t n, float *x)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)(in[2 * i] | in[2 * i + 1] << 8) << 16;
        memcpy(&x[i], &bits, 4);
    }
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

/* The value of largest magnitude among n (the first of equals), 0 if all
 * are zero. */
static float largest_magnitude(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++)
        if (amax < fabsf(x[i])) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    return max;
}

/* Codes of 4 or 5 bits for a block of 32 (weights 0..15 and 16..31 share
 * a byte: low and high nibble): nibbles at out; for 5 bits the fifth bits
 * of weights 0..31 as bits 0..31 of the little-endian word at high. */
static void pack_codes_32(const uint8_t codes[QK], uint8_t *nibbles, uint8_t *high)
{
    uint32_t bits = 0;
    for (int i = 0; i < QK / 2; i++) {
        nibbles[i] = (uint8_t)((codes[i] & 0xf) | (codes[i + 16] & 0xf) << 4);
        bits |= (uint32_t)(codes[i] >> 4 & 1) << i | (uint32_t)(codes[i + 16] >> 4 & 1) << (i + 16);
    }
    for (int b = 0; high && b < 4; b++)
        high[b] = (uint8_t)(bits >> 8 * b);
}

/* A block's 32 codes: nibbles[l] holds codes l (low) and l + 16 (high);
 * high, where given, code i's fifth bit at bit i % 8 of byte i / 8. The
 * decoders below unpack whole blocks in loops without a branch, which the
 * compiler vectorises: CPU experts decode every weight row through them. */
static void codes_32(const uint8_t *nibbles, const uint8_t *high, uint8_t codes[QK])
{
    for (int l = 0; l < QK / 2; l++) {
        codes[l] = nibbles[l] & 0xf;
        codes[l + QK / 2] = nibbles[l] >> 4;
    }
    uint32_t bits = 0;
    for (int b = 0; high && b < 4; b++)
        bits |= (uint32_t)high[b] << 8 * b;
    for (int i = 0; high && i < QK; i++)
        codes[i] |= (uint8_t)((bits >> i & 1) << 4);
}

/* Q4_0 and Q5_0: the scale maps the value of largest magnitude (the first
 * such) to −2^(bits−1); q = min(2^bits − 1, trunc(x / d + 2^(bits−1) + ½))
 * (ggml's quantize_row_q4_0_ref and _q5_0_ref); d at out, the fifth bits
 * (Q5_0) at out + 2, the nibbles after them. */
static void quantize_symmetric_32(const float *x, uint8_t *out, int bits)
{
    float half = (float)(1 << (bits - 1)), d = largest_magnitude(x, QK) / -half;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int top = (1 << bits) - 1;
    uint8_t codes[QK];
    for (int i = 0; i < QK; i++) {
        int q = (int8_t)(x[i] * id + (half + 0.5f));
        codes[i] = (uint8_t)(q < top ? q : top);
    }
    store_f16(out, d);
    pack_codes_32(codes, out + (bits == 5 ? 6 : 2), bits == 5 ? out + 2 : NULL);
}

static void dequantize_symmetric_32(const uint8_t *in, float *x, int bits)
{
    float d = load_f16(in);
    const uint8_t *high = bits == 5 ? in + 2 : NULL;
    uint8_t q[QK];
    codes_32(in + (high ? 6 : 2), high, q);
    for (int i = 0; i < QK; i++)
        x[i] = d * (float)(q[i] - (1 << (bits - 1)));
}

static void quantize_q4_0(const float *x, uint8_t *out) { quantize_symmetric_32(x, out, 4); }
static void dequantize_q4_0(const uint8_t *in, float *x) { dequantize_symmetric_32(in, x, 4); }
static void quantize_q5_0(const float *x, uint8_t *out) { quantize_symmetric_32(x, out, 5); }
static void dequantize_q5_0(const uint8_t *in, float *x) { dequantize_symmetric_32(in, x, 5); }

/* Q4_1 and Q5_1: the block's minimum and range on 2^bits levels (ggml's
 * quantize_row_q4_1_ref and _q5_1_ref: the reciprocal taken once,
 * truncation after +0.5); d and m at out, the fifth bits (Q5_1) at out + 4,
 * the nibbles after them. */
static void quantize_affine_32(const float *x, uint8_t *out, int bits)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int i = 0; i < QK; i++) {
        min = x[i] < min ? x[i] : min;
        max = x[i] > max ? x[i] : max;
    }
    int top = (1 << bits) - 1;
    float d = (max - min) / (float)top, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t codes[QK];
    for (int i = 0; i < QK; i++) {
        int q = (int8_t)((x[i] - min) * id + 0.5f);
        codes[i] = (uint8_t)(q < top ? q : top);
    }
    store_f16(out, d);
    store_f16(out + 2, min);
    pack_codes_32(codes, out + (bits == 5 ? 8 : 4), bits == 5 ? out + 4 : NULL);
}

static void dequantize_affine_32(const uint8_t *in, float *x, int bits)
{
    float d = load_f16(in), m = load_f16(in + 2);
    const uint8_t *high = bits == 5 ? in + 4 : NULL;
    uint8_t q[QK];
    codes_32(in + (high ? 8 : 4), high, q);
    for (int i = 0; i < QK; i++)
        x[i] = d * (float)q[i] + m;
}

static void quantize_q4_1(const float *x, uint8_t *out) { quantize_affine_32(x, out, 4); }
static void dequantize_q4_1(const uint8_t *in, float *x) { dequantize_affine_32(in, x, 4); }
static void quantize_q5_1(const float *x, uint8_t *out) { quantize_affine_32(x, out, 5); }
static void dequantize_q5_1(const uint8_t *in, float *x) { dequantize_affine_32(in, x, 5); }

/* ---- non-linear 4-bit codes: IQ4_NL, IQ4_XS, MXFP4 ---- */

/* IQ4_NL's and IQ4_XS's 16 levels (a code is an index into them). */
const int8_t vkmoe_iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

/* The index of the level nearest v (ascending levels; a tie goes up). */
static int nearest_level(const int8_t levels[16], float v)
{
    if (v <= levels[0])
        return 0;
    if (v >= levels[15])
        return 15;
    int low = 0, high = 15;
    while (high - low > 1) {
        int mid = (low + high) / 2;
        if (v < levels[mid])
            high = mid;
        else
            low = mid;
    }
    return v - levels[high - 1] < levels[high] - v ? high - 1 : high;
}

/* The best scale for one sub-block of 32 on the IQ4 levels, each weight
 * weighted by x²: the grid that puts the value of largest magnitude on the
 * extreme level, its least-squares scale, then 2·tries + 1 grids around it
 * (tries < 0: none), keeping the best fit (ggml's quantize_row_iq4_nl_impl
 * without importance weights). Codes of the first grid into q; 0 for a
 * sub-block of zeros. */
static float fit_iq4(const float *x, uint8_t q[QK], int tries)
{
    float amax = 0, max = 0;
    for (int i = 0; i < QK; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-15f)
        return 0;
    float d = tries > 0 ? -max / vkmoe_iq4_levels[0] : max / vkmoe_iq4_levels[0], id = 1 / d;
    float sum_qx = 0, sum_q2 = 0;
    for (int i = 0; i < QK; i++) {
        q[i] = (uint8_t)nearest_level(vkmoe_iq4_levels, id * x[i]);
        float level = vkmoe_iq4_levels[q[i]], w = x[i] * x[i];
        sum_qx += w * level * x[i];
        sum_q2 += w * level * level;
    }
    d = sum_q2 > 0 ? sum_qx / sum_q2 : 0.0f;
    float best = d * sum_qx;
    for (int t = -tries; t <= tries; t++) {
        id = (float)(t + vkmoe_iq4_levels[0]) / max;
        sum_qx = sum_q2 = 0;
        for (int i = 0; i < QK; i++) {
            float level = vkmoe_iq4_levels[nearest_level(vkmoe_iq4_levels, id * x[i])],
                  w = x[i] * x[i];
            sum_qx += w * level * x[i];
            sum_q2 += w * level * level;
        }
        if (sum_q2 > 0 && sum_qx * sum_qx > best * sum_q2) {
            d = sum_qx / sum_q2;
            best = d * sum_qx;
        }
    }
    return d;
}

/* IQ4_NL: blocks of 32, an f16 scale then 16 bytes of level indices laid
 * out as Q4_0's; w = d·level. The scale is the first grid's least-squares
 * fit and the codes that grid's (ggml's quantize_row_iq4_nl_ref). ggml
 * leaves a block of zeros with whatever codes its buffer held (d = 0 makes
 * them all 0); vkmoe writes code 0. */
static void quantize_iq4_nl(const float *x, uint8_t *out)
{
    uint8_t q[QK] = {0};
    store_f16(out, fit_iq4(x, q, -1));
    pack_codes_32(q, out + 2, NULL);
}

static void dequantize_iq4_nl(const uint8_t *in, float *x)
{
    float d = load_f16(in);
    uint8_t q[QK];
    codes_32(in + 2, NULL, q);
    for (int i = 0; i < QK; i++)
        x[i] = d * (float)vkmoe_iq4_levels[q[i]];
}

/* IQ4_XS: super-blocks of 256 in 136 bytes: f16 d, a 16-bit word of the
 * scales' top 2 bits (sub-block j at bit 2j), four bytes of their low
 * nibbles (sub-block j in byte j/2, low nibble first), then eight of
 * IQ4_NL's 16-byte code groups; w = d·(ls_j − 32)·level per sub-block of
 * 32 (ggml's quantize_row_iq4_xs_ref: 7 tries a side, then the codes again
 * on the grid of the quantized scale). */
static void quantize_iq4_xs(const float *x, uint8_t *out)
{
    uint8_t q[QK_K] = {0};
    float scales[QK_K / QK], amax = 0, max_scale = 0;
    for (int j = 0; j < QK_K / QK; j++) {
        scales[j] = fit_iq4(x + QK * j, q + QK * j, 7);
        if (fabsf(scales[j]) > amax) {
            amax = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    float d = -max_scale / 32, id = d != 0.0f ? 1 / d : 0.0f;
    uint32_t high = 0;
    memset(out + 4, 0, 4);
    for (int j = 0; j < QK_K / QK; j++) {
        int l = clamp_int(nearest(id * scales[j]), -32, 31);
        float step = d * (float)l, inverse = step != 0.0f ? 1 / step : 0.0f;
        for (int i = 0; i < QK; i++)
            q[QK * j + i] = (uint8_t)nearest_level(vkmoe_iq4_levels, inverse * x[QK * j + i]);
        l += 32;
        out[4 + j / 2] |= (uint8_t)((l & 0xf) << 4 * (j % 2));
        high |= (uint32_t)(l >> 4) << 2 * j;
    }
    store_f16(out, d);
    out[2] = (uint8_t)high;
    out[3] = (uint8_t)(high >> 8);
    for (int j = 0; j < QK_K / QK; j++)
        pack_codes_32(q + QK * j, out + 8 + 16 * j, NULL);
}

static int iq4_xs_scale(const uint8_t *in, int j)
{
    return (in[4 + j / 2] >> 4 * (j % 2) & 0xf) | (in[2 + j / 4] >> 2 * (j % 4) & 3) << 4;
}

static void dequantize_iq4_xs(const uint8_t *in, float *x)
{
    float d = load_f16(in);
    for (int j = 0; j < QK_K / QK; j++) {
        float step = d * (float)(iq4_xs_scale(in, j) - 32);
        uint8_t q[QK];
        codes_32(in + 8 + 16 * j, NULL, q);
        for (int i = 0; i < QK; i++)
            x[QK * j + i] = step * (float)vkmoe_iq4_levels[q[i]];
    }
}

/* MXFP4 (OCP microscaling): blocks of 32 in 17 bytes, an E8M0 exponent e
 * then 16 bytes of E2M1 codes laid out as Q4_0's; w = 2^(e−127)·fp4(q).
 * Kept as ggml does, with the E2M1 values doubled and the scale halved. */
const int8_t vkmoe_mxfp4_levels[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* The exponent puts the block's largest magnitude in [4, 8) times the
 * scale, the top of the E2M1 range being 6; each code is the nearest
 * level (the first of equals), as ggml's quantize_row_mxfp4_ref. */
static void quantize_mxfp4(const float *x, uint8_t *out)
{
    float amax = 0.0f;
    for (int i = 0; i < QK; i++)
        amax = amax < fabsf(x[i]) ? fabsf(x[i]) : amax;
    float exponent = amax > 0.0f ? floorf(log2f(amax)) - 2 + 127 : 0.0f;
    uint8_t e = exponent >= 255.0f ? 255 : exponent <= 0.0f ? 0 : (uint8_t)exponent;
    float d = vkmoe_e8m0_half(e);
    uint8_t codes[QK];
    for (int i = 0; i < QK; i++) {
        int best = 0;
        float best_error = fabsf(vkmoe_mxfp4_levels[0] * d - x[i]);
        for (int l = 1; l < 16; l++) {
            float error = fabsf(vkmoe_mxfp4_levels[l] * d - x[i]);
            if (error < best_error) {
                best = l;
                best_error = error;
            }
        }
        codes[i] = (uint8_t)best;
    }
    out[0] = e;
    pack_codes_32(codes, out + 1, NULL);
}

static void dequantize_mxfp4(const uint8_t *in, float *x)
{
    float d = vkmoe_e8m0_half(in[0]);
    uint8_t q[QK];
    codes_32(in + 1, NULL, q);
    for (int i = 0; i < QK; i++)
        x[i] = (float)vkmoe_mxfp4_levels[q[i]] * d;
}

/* ---- K-quants with a minimum: Q2_K, Q4_K, Q5_K ---- */

/* How fit_scale_min searches: sub-blocks of n weights on codes 0..levels,
 * grids of levels + rmin + rdelta·s steps over the range for s = 0..steps,
 * errors squared or absolute (ggml's make_qkx2_quants arguments). */
typedef struct fit_grid {
    int n, levels;
    float rmin, rdelta;
    int steps;
    bool absolute;
} fit_grid;

static const fit_grid q2_k_grid = {16, 3, -0.5f, 0.1f, 15, true};
static const fit_grid q4_k_grid = {32, 15, -1.0f, 0.1f, 20, false};
static const fit_grid q5_k_grid = {32, 31, -0.5f, 0.1f, 15, false};

/* Error of x ≈ scale·q + min, each term weighted. */
static float fit_error(const fit_grid *g, const float *x, const float *w, const uint8_t *q,
                       float scale, float min)
{
    float error = 0.0f;
    for (int i = 0; i < g->n; i++) {
        float diff = scale * q[i] + min - x[i];
        error += w[i] * (g->absolute ? fabsf(diff) : diff * diff);
    }
    return error;
}

/* x ≈ scale·q + min (min ≤ 0) for one sub-block: the grid through the
 * sub-block's range, then the grids of g, each with its weighted
 * least-squares scale and min, keeping the best (ggml's make_qkx2_quants).
 * Returns the scale; *neg_min is −min. */
static float fit_scale_min(const fit_grid *g, const float *x, const float *w, uint8_t *q,
                           float *neg_min)
{
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < g->n; i++) {
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
        memset(q, 0, (size_t)g->n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = (float)g->levels / (max - min), scale = 1 / iscale;
    for (int i = 0; i < g->n; i++)
        q[i] = (uint8_t)clamp_int(nearest(iscale * (x[i] - min)), 0, g->levels);
    float best = fit_error(g, x, w, q, scale, min);
    uint8_t trial[QK];
    for (int step = 0; step <= g->steps; step++) {
        iscale = (g->rmin + g->rdelta * (float)step + (float)g->levels) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < g->n; i++) {
            int l = clamp_int(nearest(iscale * (x[i] - min)), 0, g->levels);
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
        float error = fit_error(g, x, w, trial, trial_scale, trial_min);
        if (error < best) {
            memcpy(q, trial, (size_t)g->n);
            best = error;
            scale = trial_scale;
            min = trial_min;
        }
    }
    *neg_min = -min;
    return scale;
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

/* Q4_K's and Q5_K's common part: f16 d and dmin then the 12 packed bytes
 * of 6-bit scales and mins at out, and the codes q (0..levels) on the grid
 * those rounded scales give (ggml's quantize_row_q4_K_ref and _q5_K_ref).
 * Weights favour larger values: √(mean x²) + |x|. */
static void quantize_scales_mins_6bit(const fit_grid *g, const float *x, uint8_t *out,
                                      uint8_t q[QK_K])
{
    uint8_t *packed = out + 4;
    float weights[QK], scales[QK_K / QK], mins[QK_K / QK], max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / QK; j++) {
        const float *sub = x + QK * j;
        float sum_x2 = 0;
        for (int i = 0; i < QK; i++)
            sum_x2 += sub[i] * sub[i];
        float av_x = sqrtf(sum_x2 / QK);
        for (int i = 0; i < QK; i++)
            weights[i] = av_x + fabsf(sub[i]);
        scales[j] = fit_scale_min(g, sub, weights, q + QK * j, &mins[j]);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    memset(packed, 0, 12);
    for (int j = 0; j < QK_K / QK; j++) {
        uint8_t scale = (uint8_t)nearest(inv_scale * scales[j]);
        uint8_t min = (uint8_t)nearest(inv_min * mins[j]);
        q4k_pack_scale_min(packed, j, scale < 63 ? scale : 63, min < 63 ? min : 63);
    }
    store_f16(out, max_scale / 63.0f);
    store_f16(out + 2, max_min / 63.0f);
    float d = load_f16(out), dmin = load_f16(out + 2);
    uint8_t scale[QK_K / QK], min[QK_K / QK];
    vkmoe_q4_k_scales_mins(packed, scale, min);
    for (int j = 0; j < QK_K / QK; j++) {
        float step = d * (float)scale[j], offset = dmin * (float)min[j];
        for (int i = 0; step != 0 && i < QK; i++)
            q[QK * j + i] =
                (uint8_t)clamp_int(nearest((x[QK * j + i] + offset) / step), 0, g->levels);
    }
}

/* Q4_K: 128 bytes of nibbles after the 16 of scales; byte 32g + l holds
 * weight 64g + l in its low nibble and 64g + 32 + l in its high one. */
static void quantize_q4_k(const float *x, uint8_t *out)
{
    uint8_t q[QK_K];
    quantize_scales_mins_6bit(&q4_k_grid, x, out, q);
    uint8_t *nibbles = out + 16;
    for (int j = 0; j < QK_K; j += 2 * QK)
        for (int i = 0; i < QK; i++)
            nibbles[j / 2 + i] = (uint8_t)(q[j + i] | q[j + QK + i] << 4);
}

/* Q5_K: as Q4_K with 32 bytes of fifth bits before the nibbles: weight
 * 64g + l has bit 2g of byte l, weight 64g + 32 + l bit 2g + 1. */
static void quantize_q5_k(const float *x, uint8_t *out)
{
    uint8_t q[QK_K], *high = out + 16, *nibbles = out + 48;
    quantize_scales_mins_6bit(&q5_k_grid, x, out, q);
    memset(high, 0, QK);
    for (int j = 0; j < QK_K; j += 2 * QK)
        for (int i = 0; i < QK; i++) {
            uint8_t lo = q[j + i], hi = q[j + QK + i];
            nibbles[j / 2 + i] = (uint8_t)((lo & 0xf) | (hi & 0xf) << 4);
            high[i] |= (uint8_t)((lo >> 4) << (j / QK) | (hi >> 4) << (j / QK + 1));
        }
}

/* The weights of a Q4_K or Q5_K super-block (high: Q5_K's fifth bits).
 * Sub-blocks 2g and 2g + 1 share bytes: the low and high nibbles. The
 * loops have no branch inside, so that the compiler vectorises them (CPU
 * experts decode every row through here). */
static void dequantize_scales_mins_6bit(const uint8_t *in, const uint8_t *high,
                                        const uint8_t *nibbles, float *x)
{
    float d = load_f16(in), dmin = load_f16(in + 2);
    uint8_t scale[QK_K / QK], min[QK_K / QK];
    vkmoe_q4_k_scales_mins(in + 4, scale, min);
    for (int j = 0; j < QK_K / QK; j += 2) {
        float step0 = d * (float)scale[j], offset0 = dmin * (float)min[j];
        float step1 = d * (float)scale[j + 1], offset1 = dmin * (float)min[j + 1];
        const uint8_t *group = nibbles + QK * (j / 2);
        float *x0 = x + QK * j, *x1 = x0 + QK;
        if (high) {
            for (int i = 0; i < QK; i++) {
                x0[i] = step0 * (float)((group[i] & 0xf) | (high[i] >> j & 1) << 4) - offset0;
                x1[i] = step1 * (float)((group[i] >> 4) | (high[i] >> (j + 1) & 1) << 4) - offset1;
            }
            continue;
        }
        for (int i = 0; i < QK; i++) {
            x0[i] = step0 * (float)(group[i] & 0xf) - offset0;
            x1[i] = step1 * (float)(group[i] >> 4) - offset1;
        }
    }
}

static void dequantize_q4_k(const uint8_t *in, float *x)
{
    dequantize_scales_mins_6bit(in, NULL, in + 16, x);
}

static void dequantize_q5_k(const uint8_t *in, float *x)
{
    dequantize_scales_mins_6bit(in, in + 16, in + 48, x);
}

/* Codes of 2 bits for a super-block: byte 32h + l holds weights 128h + l,
 * + 32, + 64 and + 96 at bits 0, 2, 4 and 6 (Q2_K's and Q3_K's low bits). */
static void pack_codes_2bit(const uint8_t q[QK_K], uint8_t *out)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            out[j / 4 + l] =
                (uint8_t)(q[j + l] | q[j + l + 32] << 2 | q[j + l + 64] << 4 | q[j + l + 96] << 6);
}

/* A super-block's 256 codes of 2 bits, packed as pack_codes_2bit does. */
static void codes_2bit(const uint8_t *in, uint8_t q[QK_K])
{
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                q[128 * h + 32 * s + l] = in[32 * h + l] >> 2 * s & 3;
}

/* Q2_K: super-blocks of 256 in 84 bytes: sixteen bytes each holding a
 * sub-block of 16's 4-bit scale (low nibble) and min (high), 64 bytes of
 * 2-bit codes, f16 d and dmin; w = d·sc·q − dmin·m (ggml's
 * quantize_row_q2_K_ref: weights |x|, absolute errors). */
static void quantize_q2_k(const float *x, uint8_t *out)
{
    enum { SUB = 16 };
    uint8_t q[QK_K];
    float weights[SUB], scales[QK_K / SUB], mins[QK_K / SUB], max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / SUB; j++) {
        for (int i = 0; i < SUB; i++)
            weights[i] = fabsf(x[SUB * j + i]);
        scales[j] = fit_scale_min(&q2_k_grid, x + SUB * j, weights, q + SUB * j, &mins[j]);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    memset(out, 0, 16);
    float inv_scale = max_scale > 0 ? 15.0f / max_scale : 0.0f;
    float inv_min = max_min > 0 ? 15.0f / max_min : 0.0f;
    for (int j = 0; j < QK_K / SUB; j++)
        out[j] = (uint8_t)(nearest(inv_scale * scales[j]) | nearest(inv_min * mins[j]) << 4);
    store_f16(out + 80, max_scale > 0 ? max_scale / 15.0f : 0.0f);
    store_f16(out + 82, max_min > 0 ? max_min / 15.0f : 0.0f);
    float d = load_f16(out + 80), dmin = load_f16(out + 82);
    for (int j = 0; j < QK_K / SUB; j++) {
        float step = d * (float)(out[j] & 0xf), offset = dmin * (float)(out[j] >> 4);
        for (int i = 0; step != 0 && i < SUB; i++)
            q[SUB * j + i] = (uint8_t)clamp_int(nearest((x[SUB * j + i] + offset) / step), 0, 3);
    }
    pack_codes_2bit(q, out + 16);
}

static void dequantize_q2_k(const uint8_t *in, float *x)
{
    float d = load_f16(in + 80), dmin = load_f16(in + 82);
    uint8_t q[QK_K];
    codes_2bit(in + 16, q);
    for (int j = 0; j < QK_K / 16; j++) {
        float step = d * (float)(in[j] & 0xf), offset = dmin * (float)(in[j] >> 4);
        for (int i = 16 * j; i < 16 * j + 16; i++)
            x[i] = step * (float)q[i] - offset;
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
    uint8_t q[QK_K];
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = in + 64 * half, *qh = in + 128 + 32 * half;
        uint8_t *h = q + 128 * half;
        for (int l = 0; l < 32; l++) {
            h[l] = (uint8_t)((ql[l] & 0xf) | (qh[l] & 3) << 4);
            h[l + 32] = (uint8_t)((ql[l + 32] & 0xf) | (qh[l] >> 2 & 3) << 4);
            h[l + 64] = (uint8_t)((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4);
            h[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4);
        }
    }
    for (int j = 0; j < Q6K_SUBS; j++) {
        float step = d * (float)(int8_t)in[192 + j];
        for (int i = Q6K_SUB * j; i < Q6K_SUB * (j + 1); i++)
            x[i] = step * (float)(q[i] - Q6K_HALF);
    }
}

/* ---- Q3_K ---- */

/* x ≈ scale·(q − 4) for one sub-block of 16, q in 0..7: the grid that puts
 * the value of largest magnitude on −4, then up to 5 rounds that move one
 * code at a time where the x²-weighted least-squares fit improves (ggml's
 * make_q3_quants with do_rmse). Returns the scale; all-zero codes for a
 * sub-block of zeros. */
static float fit_q3(const float *x, uint8_t q[16])
{
    enum { N = 16, HALF = 4 };
    float amax = 0, max = 0;
    for (int i = 0; i < N; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-15f) {
        memset(q, 0, N);
        return 0.0f;
    }
    float iscale = -HALF / max, sum_lx = 0, sum_l2 = 0;
    int l[N];
    for (int i = 0; i < N; i++) {
        l[i] = clamp_int(nearest(iscale * x[i]), -HALF, HALF - 1);
        float w = x[i] * x[i];
        sum_lx += w * x[i] * l[i];
        sum_l2 += w * l[i] * l[i];
    }
    for (int round = 0; round < 5; round++) {
        int changed = 0;
        for (int i = 0; i < N; i++) {
            float w = x[i] * x[i], slx = sum_lx - w * x[i] * l[i];
            if (!(slx > 0))
                continue;
            float sl2 = sum_l2 - w * l[i] * l[i];
            int new_l = clamp_int(nearest(x[i] * sl2 / slx), -HALF, HALF - 1);
            if (new_l == l[i])
                continue;
            slx += w * x[i] * new_l;
            sl2 += w * new_l * new_l;
            if (sl2 > 0 && slx * slx * sum_l2 > sum_lx * sum_lx * sl2) {
                l[i] = new_l;
                sum_lx = slx;
                sum_l2 = sl2;
                changed++;
            }
        }
        if (!changed)
            break;
    }
    for (int i = 0; i < N; i++)
        q[i] = (uint8_t)(l[i] + HALF);
    return sum_l2 > 0.0f ? sum_lx / sum_l2 : 0.0f;
}

/* Sub-block j's 6-bit scale (stored + 32) from Q3_K's 12 bytes: low
 * nibble in byte j (j < 8) or high nibble of byte j − 8; top 2 bits at bit
 * 2(j / 4) of byte 8 + j % 4. */
static int q3k_scale(const uint8_t *packed, int j)
{
    int low = j < 8 ? packed[j] & 0xf : packed[j - 8] >> 4;
    return (low | (packed[8 + j % 4] >> 2 * (j / 4) & 3) << 4) - 32;
}

/* Q3_K: super-blocks of 256 in 110 bytes: 32 bytes of the codes' third
 * bits (weight i at bit i / 32 of byte i % 32), 64 bytes of their low 2
 * bits (as Q2_K's), 12 bytes of sixteen 6-bit scales, f16 d; w =
 * d·sc·(q − 4) per sub-block of 16 (ggml's quantize_row_q3_K_ref). */
static void quantize_q3_k(const float *x, uint8_t *out)
{
    enum { SUB = 16 };
    uint8_t q[QK_K], *packed = out + 96;
    float scales[QK_K / SUB], amax = 0, max_scale = 0;
    for (int j = 0; j < QK_K / SUB; j++) {
        scales[j] = fit_q3(x + SUB * j, q + SUB * j);
        if (fabsf(scales[j]) > amax) {
            amax = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    memset(packed, 0, 12);
    if (max_scale != 0) {
        float iscale = -32.0f / max_scale;
        for (int j = 0; j < QK_K / SUB; j++) {
            int l = clamp_int((int8_t)nearest(iscale * scales[j]), -32, 31) + 32;
            packed[j % 8] |= (uint8_t)((l & 0xf) << (j < 8 ? 0 : 4));
            packed[8 + j % 4] |= (uint8_t)((l >> 4) << 2 * (j / 4));
        }
        store_f16(out + 108, 1 / iscale);
    } else
        store_f16(out + 108, 0.0f);
    float d = load_f16(out + 108);
    for (int j = 0; j < QK_K / SUB; j++) {
        float step = d * (float)q3k_scale(packed, j);
        for (int i = 0; step != 0 && i < SUB; i++)
            q[SUB * j + i] = (uint8_t)(clamp_int(nearest(x[SUB * j + i] / step), -4, 3) + 4);
    }
    memset(out, 0, 32);
    for (int i = 0; i < QK_K; i++)
        if (q[i] > 3) {
            out[i % 32] |= (uint8_t)(1 << i / 32);
            q[i] -= 4;
        }
    pack_codes_2bit(q, out + 32);
}

static void dequantize_q3_k(const uint8_t *in, float *x)
{
    float d = load_f16(in + 108);
    uint8_t q[QK_K];
    codes_2bit(in + 32, q);
    for (int m = 0; m < 8; m++) /* the third bit set: q; clear: q − 4 */
        for (int l = 0; l < 32; l++)
            q[32 * m + l] = (uint8_t)(q[32 * m + l] + 4 * (in[l] >> m & 1));
    for (int j = 0; j < QK_K / 16; j++) {
        float step = d * (float)q3k_scale(in + 96, j);
        for (int i = 16 * j; i < 16 * j + 16; i++)
            x[i] = step * (float)(q[i] - 4);
    }
}

typedef struct codec {
    const char *name;
    uint32_t weights, bytes; /* per block */
    void (*quantize)(const float *x, uint8_t *out);
    void (*dequantize)(const uint8_t *in, float *x);
    /* n values at once (types of one value a block), else NULL */
    void (*dequantize_values)(const uint8_t *in, size_t n, float *x);
    /* Rows a GEMV pass holds at most (vkmoe_weight_gemv_rows); 0: VKMOE_GEMV_PASS. */
    uint32_t gemv_rows;
} codec;

/* Q4_K and Q6_K: a GEMV lane takes 32 weights of a super-block at a time
 * (shaders/common/gemv_gemm.glsl), and AMD's compiler (Mesa 25's ACO,
 * RDNA2 and RDNA4) keeps some 30 VGPRs a row live across such a unit, so a
 * pass of 16 rows took 256 VGPRs (4 waves a SIMD), of 2 rows 128 on RDNA2
 * and 144 on RDNA4, of 1 row 80 (summing a row 8 weights at a time, each
 * chunk's A loaded just before, took 128 VGPRs at 16 rows but ran lavapipe
 * 5x slower): one row a pass; the rows past it read the weights again,
 * from the caches. */
#define WIDE_GEMV_ROWS 1

static const codec codecs[] = {
    [VKMOE_WEIGHT_F32] = {"f32", 1, 4, quantize_f32, dequantize_f32, dequantize_f32_values},
    [VKMOE_WEIGHT_F16] = {"f16", 1, 2, quantize_f16, dequantize_f16, dequantize_f16_values},
    [VKMOE_WEIGHT_BF16] = {"bf16", 1, 2, quantize_bf16, dequantize_bf16, dequantize_bf16_values},
    [VKMOE_WEIGHT_Q8_0] = {"q8_0", QK, 34, quantize_q8_0, dequantize_q8_0},
    [VKMOE_WEIGHT_Q4_0] = {"q4_0", QK, 18, quantize_q4_0, dequantize_q4_0},
    [VKMOE_WEIGHT_Q4_K] = {"q4_k", QK_K, 144, quantize_q4_k, dequantize_q4_k, NULL, WIDE_GEMV_ROWS},
    [VKMOE_WEIGHT_Q6_K] = {"q6_k", QK_K, 210, quantize_q6_k, dequantize_q6_k, NULL, WIDE_GEMV_ROWS},
    [VKMOE_WEIGHT_Q4_1] = {"q4_1", QK, 20, quantize_q4_1, dequantize_q4_1},
    [VKMOE_WEIGHT_Q5_0] = {"q5_0", QK, 22, quantize_q5_0, dequantize_q5_0},
    [VKMOE_WEIGHT_Q5_1] = {"q5_1", QK, 24, quantize_q5_1, dequantize_q5_1},
    [VKMOE_WEIGHT_Q5_K] = {"q5_k", QK_K, 176, quantize_q5_k, dequantize_q5_k},
    [VKMOE_WEIGHT_Q3_K] = {"q3_k", QK_K, 110, quantize_q3_k, dequantize_q3_k},
    [VKMOE_WEIGHT_Q2_K] = {"q2_k", QK_K, 84, quantize_q2_k, dequantize_q2_k},
    [VKMOE_WEIGHT_IQ4_NL] = {"iq4_nl", QK, 18, quantize_iq4_nl, dequantize_iq4_nl},
    [VKMOE_WEIGHT_IQ4_XS] = {"iq4_xs", QK_K, 136, quantize_iq4_xs, dequantize_iq4_xs},
    [VKMOE_WEIGHT_MXFP4] = {"mxfp4", QK, 17, quantize_mxfp4, dequantize_mxfp4},
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

uint32_t vkmoe_weight_gemv_rows(vkmoe_weight_type type)
{
    const codec *c = codec_of(type);
    return c && c->gemv_rows ? c->gemv_rows : VKMOE_GEMV_PASS;
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
    if (c->dequantize_values) {
        c->dequantize_values(blocks, n, dst);
        return VKMOE_OK;
    }
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
