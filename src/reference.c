/* CPU reference: see reference.h. Written from the formulas, not from the
 * shaders, except where the contract fixes an order (ties, NaN ranking). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

static bool ranks_above(double a, uint32_t ia, double b, uint32_t ib)
{
    if (isnan(a) != isnan(b))
        return isnan(b);
    if (!isnan(a) && a != b)
        return a > b;
    return ia < ib;
}

static void route_token(const vkmoe_ref_layer *l, const float *x, uint32_t *ids, double *weights)
{
    double logits[512];
    bool taken[512] = {false};
    double max_logit = -INFINITY;
    for (uint32_t e = 0; e < l->experts; e++) {
        double acc = 0;
        for (uint32_t d = 0; d < l->dim; d++)
            acc += (double)x[d] * l->router[(size_t)e * l->dim + d];
        logits[e] = acc;
        if (logits[e] > max_logit)
            max_logit = logits[e];
    }
    double sum = 0;
    for (uint32_t e = 0; e < l->experts; e++)
        sum += exp(logits[e] - max_logit);
    double chosen_sum = 0;
    for (uint32_t j = 0; j < l->top_k; j++) {
        uint32_t best = UINT32_MAX;
        for (uint32_t e = 0; e < l->experts; e++)
            if (!taken[e] && (best == UINT32_MAX || ranks_above(logits[e], e, logits[best], best)))
                best = e;
        taken[best] = true;
        ids[j] = best;
        weights[j] = exp(logits[best] - max_logit) / sum;
        chosen_sum += weights[j];
    }
    for (uint32_t j = 0; l->normalize && j < l->top_k; j++)
        weights[j] /= chosen_sum;
}

void vkmoe_ref_route(const vkmoe_ref_layer *layer, uint32_t tokens, const float *x, uint32_t *ids,
                     double *weights)
{
    for (uint32_t t = 0; t < tokens; t++)
        route_token(layer, x + (size_t)t * layer->dim, ids + (size_t)t * layer->top_k,
                    weights + (size_t)t * layer->top_k);
}

uint32_t vkmoe_ref_bucket(const uint32_t *ids, uint32_t slots, uint32_t experts,
                          uint32_t tile_rows, uint32_t max_rows, uint32_t *count, uint32_t *base,
                          uint32_t *row_slot, uint32_t *slot_row, uint32_t *tile_expert)
{
    memset(count, 0, experts * sizeof(*count));
    for (uint32_t s = 0; s < slots; s++)
        count[ids[s]]++;
    uint32_t rows = 0;
    for (uint32_t e = 0; e < experts; e++) {
        base[e] = rows;
        rows += (count[e] + tile_rows - 1) / tile_rows * tile_rows;
    }
    for (uint32_t r = 0; r < max_rows; r++)
        row_slot[r] = UINT32_MAX;
    for (uint32_t t = 0; t < max_rows / tile_rows; t++)
        tile_expert[t] = UINT32_MAX;
    uint32_t *next = calloc(experts, sizeof(*next));
    for (uint32_t s = 0; s < slots; s++) {
        uint32_t e = ids[s];
        uint32_t row = base[e] + next[e]++;
        row_slot[row] = s;
        slot_row[s] = row;
    }
    free(next);
    for (uint32_t e = 0; e < experts; e++)
        for (uint32_t r = base[e]; r < base[e] + count[e]; r += tile_rows)
            tile_expert[r / tile_rows] = e;
    return rows;
}

static double silu(double v) { return v / (1.0 + exp(-v)); }

void vkmoe_ref_expert_up(const vkmoe_ref_layer *l, uint32_t expert, const float *x, double *h)
{
    size_t matrix = (size_t)l->ffn * l->dim;
    const float *w1 = l->gate + expert * matrix, *w3 = l->up + expert * matrix;
    for (uint32_t f = 0; f < l->ffn; f++) {
        double g = 0, u = 0;
        for (uint32_t d = 0; d < l->dim; d++) {
            g += (double)x[d] * w1[(size_t)f * l->dim + d];
            u += (double)x[d] * w3[(size_t)f * l->dim + d];
        }
        h[f] = silu(g) * u;
    }
}

void vkmoe_ref_expert_down(const vkmoe_ref_layer *l, uint32_t expert, const double *h, double *z)
{
    const float *w2 = l->down + expert * (size_t)l->dim * l->ffn;
    for (uint32_t d = 0; d < l->dim; d++) {
        double acc = 0;
        for (uint32_t f = 0; f < l->ffn; f++)
            acc += h[f] * w2[(size_t)d * l->ffn + f];
        z[d] = acc;
    }
}

void vkmoe_ref_forward(const vkmoe_ref_layer *l, uint32_t tokens, const float *x, double *y)
{
    uint32_t ids[16];
    double weights[16];
    double *h = malloc(l->ffn * sizeof(*h));
    double *z = malloc(l->dim * sizeof(*z));
    for (uint32_t t = 0; t < tokens; t++) {
        const float *xt = x + (size_t)t * l->dim;
        double *yt = y + (size_t)t * l->dim;
        route_token(l, xt, ids, weights);
        memset(yt, 0, l->dim * sizeof(*yt));
        for (uint32_t j = 0; j < l->top_k; j++) {
            vkmoe_ref_expert_up(l, ids[j], xt, h);
            vkmoe_ref_expert_down(l, ids[j], h, z);
            for (uint32_t d = 0; d < l->dim; d++)
                yt[d] += weights[j] * z[d];
        }
    }
    free(h);
    free(z);
}

uint16_t vkmoe_ref_f32_to_f16(float value)
{
    uint32_t f;
    memcpy(&f, &value, 4);
    uint32_t sign = (f >> 16) & 0x8000u;
    uint32_t exponent = (f >> 23) & 0xffu;
    uint32_t mantissa = f & 0x7fffffu;
    if (exponent == 0xff)
        return (uint16_t)(sign | 0x7c00u | (mantissa ? 0x200u : 0));
    int e = (int)exponent - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        mantissa |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mantissa >> shift;
        uint32_t rest = mantissa & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mantissa >> 13);
    uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1)))
        half++; /* may carry into the exponent, up to infinity: still correct */
    return (uint16_t)(sign | half);
}

float vkmoe_ref_f16_to_f32(uint16_t value)
{
    uint32_t sign = (uint32_t)(value & 0x8000u) << 16;
    uint32_t exponent = (value >> 10) & 0x1fu;
    uint32_t mantissa = value & 0x3ffu;
    uint32_t f;
    if (exponent == 0x1f) {
        f = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent == 0) {
        float v = ldexpf((float)mantissa, -24);
        memcpy(&f, &v, 4);
        f |= sign;
    } else {
        f = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
    }
    float out;
    memcpy(&out, &f, 4);
    return out;
}

vkmoe_ref_error vkmoe_ref_compare(const float *a, const double *b, size_t n)
{
    vkmoe_ref_error err = {0, 0};
    double scale = 1;
    for (size_t i = 0; i < n; i++)
        if (fabs(b[i]) > scale)
            scale = fabs(b[i]);
    for (size_t i = 0; i < n; i++) {
        if (a[i] == b[i])
            continue;
        if (isnan(a[i]) || isnan(b[i])) {
            if (isnan(a[i]) != isnan(b[i]))
                err.max_abs = NAN;
            continue;
        }
        double diff = fabs((double)a[i] - b[i]);
        if (diff > err.max_abs || isnan(diff))
            err.max_abs = diff;
    }
    err.max_rel = err.max_abs / scale;
    return err;
}
