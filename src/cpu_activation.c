/* e^x as 2^n·p(r): n = round(x·log2 e), r = x − n·ln 2 in two parts (the
 * first's 16 bits keep n·ln2_hi exact), p the Taylor polynomial of degree
 * 7 (its remainder below 6e-9 of the result for |r| ≤ ln 2 / 2), 2^n
 * applied as two powers of two so that neither leaves the normal range
 * before the last product rounds (that product underflows or overflows as
 * e^x does). x is first held to −104 .. 89.5, where e^x is already 0 or
 * +Inf; NaN passes through. Each step is one IEEE operation (no
 * contraction: -std=c11), in the same order in C and in AVX2. */
#include <math.h>
#include <string.h>

#include "cpu_activation.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_AVX2_ACTIVATION 1
#endif

static const float log2e = 1.44269504f, ln2_hi = 0.693145751953125f, ln2_lo = 1.42860677e-6f;
static const float low_x = -104.0f, high_x = 89.5f;
static const float taylor[8] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24,
                                1.0f / 6,    0.5f,       1.0f,       1.0f};

static float power_of_two(int k)
{
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float exp_of(float x)
{
    x = high_x < x ? high_x : x; /* the AVX2 min and max: NaN stays */
    x = low_x > x ? low_x : x;
    if (isnan(x))
        return x;
    float n = nearbyintf(x * log2e);
    float r = fmaf(-n, ln2_lo, fmaf(-n, ln2_hi, x));
    float p = taylor[0];
    for (int i = 1; i < 8; i++)
        p = fmaf(p, r, taylor[i]);
    int k = (int)n, half = k >> 1; /* floor(k / 2), as srai */
    return p * power_of_two(half) * power_of_two(k - half);
}

static float activate_one(const vkmoe_layer_params *p, float g, float u)
{
    if (p->activation == VKMOE_ACTIVATION_RELU)
        return u > 0 ? u : 0;
    if (p->activation == VKMOE_ACTIVATION_SWIGLU_CLAMPED) {
        float limit = p->swiglu_limit;
        g = g < limit ? g : limit; /* NaN: the limit */
        u = u < -limit ? -limit : u > limit ? limit : u;
        return (u + 1) * g / (1 + exp_of(-p->swiglu_alpha * g));
    }
    return g / (1 + exp_of(-g)) * u;
}

static float biased(const float *b, uint32_t c, float s, float v)
{
    return s * v + (b ? b[c] : 0.0f);
}

#ifdef HAVE_AVX2_ACTIVATION
#define AVX2 __attribute__((target("avx2,fma")))

/* -v, as C's unary minus: the sign flipped, zeros and NaN included */
AVX2 static __m256 negated(__m256 v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }

AVX2 static __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_set1_ps(high_x), x); /* high < x ? high : x */
    x = _mm256_max_ps(_mm256_set1_ps(low_x), x);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(log2e)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 neg = negated(n);
    __m256 r = _mm256_fmadd_ps(neg, _mm256_set1_ps(ln2_lo),
                               _mm256_fmadd_ps(neg, _mm256_set1_ps(ln2_hi), x));
    __m256 p = _mm256_set1_ps(taylor[0]);
    for (int i = 1; i < 8; i++)
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(taylor[i]));
    __m256i k = _mm256_cvtps_epi32(n), half = _mm256_srai_epi32(k, 1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 first = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
    __m256 second = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(k, half), bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, first), second);
}

AVX2 static __m256 biased8(const float *b, uint32_t c, __m256 s, const float *v)
{
    __m256 add = b ? _mm256_loadu_ps(b + c) : _mm256_setzero_ps();
    return _mm256_add_ps(_mm256_mul_ps(s, _mm256_loadu_ps(v + c)), add);
}

/* activate_one on eight columns, operation for operation */
AVX2 static __m256 activate8(const vkmoe_layer_params *p, __m256 g, __m256 u)
{
    const __m256 one = _mm256_set1_ps(1);
    if (p->activation == VKMOE_ACTIVATION_RELU)
        return _mm256_max_ps(u, _mm256_setzero_ps()); /* u > 0 ? u : 0 */
    if (p->activation == VKMOE_ACTIVATION_SWIGLU_CLAMPED) {
        __m256 limit = _mm256_set1_ps(p->swiglu_limit);
        g = _mm256_min_ps(g, limit); /* g < limit ? g : limit */
        /* limit ≥ 0 (params.c): -limit > min(limit, u) where u < -limit */
        u = _mm256_max_ps(negated(limit), _mm256_min_ps(limit, u));
        __m256 e = exp8(_mm256_mul_ps(_mm256_set1_ps(-p->swiglu_alpha), g));
        return _mm256_div_ps(_mm256_mul_ps(_mm256_add_ps(u, one), g), _mm256_add_ps(one, e));
    }
    __m256 e = exp8(negated(g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u);
}

AVX2 static uint32_t activate_avx2(const vkmoe_layer_params *p, const vkmoe_activation_run *run,
                                   float *out)
{
    __m256 s = _mm256_set1_ps(run->s);
    uint32_t c = 0;
    for (; c + 8 <= run->columns; c += 8)
        _mm256_storeu_ps(
            out + c, activate8(p, biased8(run->b1, c, s, run->g), biased8(run->b3, c, s, run->u)));
    return c;
}
#endif

void vkmoe_cpu_activate(const vkmoe_layer_params *p, const vkmoe_activation_run *run, bool avx2,
                        float *out)
{
    uint32_t c = 0;
#ifdef HAVE_AVX2_ACTIVATION
    if (avx2)
        c = activate_avx2(p, run, out);
#else
    (void)avx2;
#endif
    for (; c < run->columns; c++)
        out[c] = activate_one(p, biased(run->b1, c, run->s, run->g[c]),
                              biased(run->b3, c, run->s, run->u[c]));
}
