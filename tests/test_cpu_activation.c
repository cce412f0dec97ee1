/* The host's activations (src/cpu_activation.c): the C and AVX2 versions
 * give the same bits on every input, specials included; both within a few
 * ulp of the formula in double; columns past the vectors' eights, biases
 * and the scale. No device needed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_activation.h"

#define COLUMNS 4099 /* no multiple of 8 */

static bool host_has_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

/* Gates from -120 to 120 (e^-g from 0 through the denormals to +Inf),
 * then the specials. */
static void fill_gates(float *g)
{
    for (int c = 0; c < COLUMNS - 12; c++)
        g[c] = -120.0f + 240.0f * (float)c / (COLUMNS - 13) + 1e-3f * (float)(c % 7);
    const float specials[12] = {0.0f,    -0.0f,  INFINITY, -INFINITY, NAN,    88.72f,
                                -88.72f, 87.34f, -87.34f,  103.9f,    -89.4f, 1e-30f};
    memcpy(g + COLUMNS - 12, specials, sizeof(specials));
}

static bool same_bits(float a, float b)
{
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

static double reference(const vkmoe_layer_params *p, double g, double u)
{
    if (p->activation == VKMOE_ACTIVATION_RELU)
        return u > 0 ? u : 0;
    if (p->activation == VKMOE_ACTIVATION_SWIGLU_CLAMPED) {
        double limit = p->swiglu_limit;
        g = g < limit ? g : limit;
        u = u < -limit ? -limit : u > limit ? limit : u;
        /* α·g rounds to a float first, as it does in the library */
        return (u + 1) * g / (1 + exp(-p->swiglu_alpha * (float)g));
    }
    return g / (1 + exp(-g)) * u;
}

static void check_activation(vkmoe_activation activation, bool biased, float s)
{
    vkmoe_layer_params p = {.activation = activation, .swiglu_limit = 7.0f, .swiglu_alpha = 1.702f};
    float *g = malloc(COLUMNS * sizeof(float)), *u = malloc(COLUMNS * sizeof(float)),
          *b1 = malloc(COLUMNS * sizeof(float)), *b3 = malloc(COLUMNS * sizeof(float)),
          *plain = malloc(COLUMNS * sizeof(float)), *vector = malloc(COLUMNS * sizeof(float));
    assert_non_null(g && u && b1 && b3 && plain && vector);
    fill_gates(g);
    for (int c = 0; c < COLUMNS; c++) {
        u[c] = (float)((c * 37) % 101) / 10.0f - 5.0f;
        b1[c] = (float)(c % 13) / 8.0f - 0.75f;
        b3[c] = (float)(c % 5) / 4.0f - 0.5f;
    }
    vkmoe_activation_run run = {g, u, biased ? b1 : NULL, biased ? b3 : NULL, s, COLUMNS};
    vkmoe_cpu_activate(&p, &run, false, plain);
    if (host_has_avx2()) {
        vkmoe_cpu_activate(&p, &run, true, vector);
        for (int c = 0; c < COLUMNS; c++)
            if (!same_bits(plain[c], vector[c]))
                fail_msg("column %d (g %g): C %a, AVX2 %a", c, (double)g[c], (double)plain[c],
                         (double)vector[c]);
    }
    for (int c = 0; c < COLUMNS; c++) {
        float gb = s * g[c] + (biased ? b1[c] : 0.0f), ub = s * u[c] + (biased ? b3[c] : 0.0f);
        double want = reference(&p, gb, ub);
        if (isnan(want) || isinf(want)) {
            assert_true(same_bits((float)want, plain[c]));
            continue;
        }
        /* e^x within 2 ulp, then three roundings: relative 1e-6; below
         * 1e-35, where g·e^g needs e^-g past float's largest (g < -88.7;
         * libm's expf overflowed there too), anything as small */
        double err = fabs(plain[c] - want);
        if (fabs(want) < 1e-35 ? fabs(plain[c]) > 1e-35 : err > 1e-6 * fabs(want))
            fail_msg("column %d (g %g u %g): %a, want %a", c, (double)gb, (double)ub,
                     (double)plain[c], want);
    }
    free(g), free(u), free(b1), free(b3), free(plain), free(vector);
}

static void test_swiglu(void **state)
{
    (void)state;
    check_activation(VKMOE_ACTIVATION_SWIGLU, false, 1.0f);
    check_activation(VKMOE_ACTIVATION_SWIGLU, true, 0.375f);
}

static void test_swiglu_clamped(void **state)
{
    (void)state;
    check_activation(VKMOE_ACTIVATION_SWIGLU_CLAMPED, false, 1.0f);
    check_activation(VKMOE_ACTIVATION_SWIGLU_CLAMPED, true, 0.625f);
}

static void test_relu(void **state)
{
    (void)state;
    check_activation(VKMOE_ACTIVATION_RELU, true, 1.0f);
}

/* A run shorter than one vector, and one of no columns, leave the rest of
 * out alone. */
static void test_short_runs(void **state)
{
    (void)state;
    vkmoe_layer_params p = {.activation = VKMOE_ACTIVATION_SWIGLU};
    float g[3] = {1.0f, -2.0f, 0.5f}, u[3] = {2.0f, 1.0f, -4.0f}, out[4] = {7, 7, 7, 7};
    vkmoe_activation_run run = {g, u, NULL, NULL, 1.0f, 3};
    vkmoe_cpu_activate(&p, &run, host_has_avx2(), out);
    for (int c = 0; c < 3; c++)
        assert_float_equal(out[c], g[c] / (1 + exp(-g[c])) * u[c], 1e-6);
    assert_true(out[3] == 7);
    run.columns = 0;
    vkmoe_cpu_activate(&p, &run, host_has_avx2(), out + 3);
    assert_true(out[3] == 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_swiglu_clamped),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_short_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
