/* Routed experts on the host (src/cpu_experts.c): every weight type and
 * every kind of expert against the double reference, the same bits on
 * every run, the figures the cache reports. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static vkmoe_layer_params on_cpu(uint32_t dim, uint32_t ffn, uint32_t experts, uint32_t top_k,
                                 uint32_t max_tokens, vkmoe_weight_type type)
{
    vkmoe_layer_params p = test_shape(dim, ffn, experts, top_k, max_tokens);
    p.weight_type = type;
    p.cpu_experts = true;
    return p;
}

/* Forwards of 1, 5 and max_tokens tokens within the reference's tolerance;
 * the last one twice, bit for bit; the cache's figures. */
static void check_on_cpu(vkmoe_context *ctx, vkmoe_layer_params p)
{
    test_layer t;
    test_layer_create(ctx, &p, &t);
    test_layer_upload(&t);
    const uint32_t tokens[] = {1, 5, p.max_tokens};
    float *x = test_input(p.max_tokens, p.dim);
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(tokens); i++)
        test_check_forward(&t, tokens[i], x);
    size_t bytes = (size_t)p.max_tokens * p.dim * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes);
    assert_int_equal(vkmoe_layer_forward(t.layer, p.max_tokens, x, a), VKMOE_OK);
    assert_int_equal(vkmoe_layer_forward(t.layer, p.max_tokens, x, b), VKMOE_OK);
    assert_memory_equal(a, b, bytes);
    vkmoe_cache_stats s;
    assert_int_equal(vkmoe_layer_cache_stats(t.layer, &s), VKMOE_OK);
    assert_int_equal(s.forwards, 5);
    assert_int_equal(s.rounds, 0);
    assert_int_equal(s.misses, 0);
    assert_int_equal(s.bytes_to_device, 0);
    uint64_t slots = 0;
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(tokens); i++)
        slots += (uint64_t)tokens[i] * p.top_k;
    slots += 2ull * p.max_tokens * p.top_k;
    if (p.capacity_factor == 0)
        assert_int_equal(s.cpu_slots, slots);
    else
        assert_true(s.cpu_slots > 0 && s.cpu_slots < slots);
    assert_true(s.cpu_ms > 0);
    free(a);
    free(b);
    free(x);
    test_layer_destroy(&t);
}

/* Every weight type, on rows of 3 and 7 blocks of 32 or of 3 and 2
 * super-blocks of 256, and the 16-bit types on widths of no multiple of 8. */
static void test_every_weight_type(void **state)
{
    test_seed(71);
    for (int t = 0; vkmoe_weight_type_name((vkmoe_weight_type)t); t++) {
        if (!test_weight_type_in_run((vkmoe_weight_type)t))
            continue;
        uint32_t block = vkmoe_weight_block((vkmoe_weight_type)t);
        uint32_t dim = block == 256 ? 768 : block == 32 ? 96 : 45;
        uint32_t ffn = block == 256 ? 512 : block == 32 ? 224 : 27;
        check_on_cpu(*state, on_cpu(dim, ffn, 5, 2, 13, (vkmoe_weight_type)t));
    }
}

/* Biases and the clamped SwiGLU, the weight on the input with a shared
 * expert, ReLU experts with dropped slots, grouped routing with k 8; under
 * the sanitizers only the first: every family costs minutes of sanitized
 * pipeline compiles, and the host code is the same for all. */
static void test_every_kind_of_expert(void **state)
{
    static const char *const families[] = {"gpt-oss", "llama4", "switch", "deepseek-v3"};
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    const size_t count = 1;
#else
    const size_t count = VKMOE_ARRAY_SIZE(families);
#endif
    test_seed(72);
    for (size_t f = 0; f < count; f++) {
        vkmoe_layer_params p = on_cpu(56, 40, 16, 2, 19, VKMOE_WEIGHT_F16);
        assert_int_equal(vkmoe_layer_params_family(&p, families[f]), VKMOE_OK);
        p.cpu_experts = true;
        if (f == 1)
            p.shared_ffn_dim = 24;
        if (f == 2)
            p.capacity_factor = 0.5f;
        check_on_cpu(*state, p);
    }
}

/* The first of test_every_level's levels that has VNNI on this CPU:
 * "avxvnni" where it runs AVX-VNNI (CPUID 7.1, EAX bit 4), else
 * "avx512vnni", whose cap then gives AVX-512 VNNI or, without it, AVX2
 * (Zen 4 has AVX-512 VNNI and no AVX-VNNI: capped at "avxvnni" a layer
 * takes AVX2). */
static size_t first_vnni_level(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & 1u << 4))
        return 2;
#endif
    return 3;
}

/* Decode's kernels with exact integer activations (src/cpu_exact.c) at
 * every x86 level this CPU runs (VKMOE_CPU_KERNELS caps the level a layer
 * takes when it is made): each within the tolerance, and all the same
 * bits, as their sums are integers; and the portable C code (codecs and
 * f32 sums) within the tolerance. IQ4_NL and Q8_0 have no exact kernel
 * below the VNNI levels: their AVX2 float kernels are held to the
 * tolerance alone. */
static void test_every_level(void **state)
{
    static const vkmoe_weight_type types[] = {
        VKMOE_WEIGHT_Q4_K, VKMOE_WEIGHT_Q5_K,   VKMOE_WEIGHT_Q6_K,   VKMOE_WEIGHT_Q4_0,
        VKMOE_WEIGHT_Q5_0, VKMOE_WEIGHT_Q4_1,   VKMOE_WEIGHT_Q5_1,   VKMOE_WEIGHT_Q2_K,
        VKMOE_WEIGHT_Q3_K, VKMOE_WEIGHT_IQ4_NL, VKMOE_WEIGHT_IQ4_XS, VKMOE_WEIGHT_MXFP4,
        VKMOE_WEIGHT_Q8_0,
    };
    static const char *const levels[] = {"portable", "avx2", "avxvnni", "avx512vnni"};
    for (size_t t = 0; t < VKMOE_ARRAY_SIZE(types); t++) {
        if (!test_weight_type_in_run(types[t]))
            continue;
        test_seed(74);
        bool k = vkmoe_weight_block(types[t]) == 256;
        vkmoe_layer_params p = on_cpu(k ? 512 : 96, k ? 768 : 160, 6, 2, 3, types[t]);
        float *x = test_input(p.max_tokens, p.dim);
        size_t bytes = (size_t)p.max_tokens * p.dim * sizeof(float);
        float *first = malloc(bytes), *y = malloc(bytes);
        for (size_t l = 0; l < VKMOE_ARRAY_SIZE(levels); l++) {
            setenv("VKMOE_CPU_KERNELS", levels[l], 1);
            test_seed(75); /* the same weights at every level */
            test_layer layer;
            test_layer_create(*state, &p, &layer);
            unsetenv("VKMOE_CPU_KERNELS");
            test_layer_upload(&layer);
            test_check_forward(&layer, p.max_tokens, x);
            assert_int_equal(vkmoe_layer_forward(layer.layer, p.max_tokens, x, y), VKMOE_OK);
            bool vnni_only = types[t] == VKMOE_WEIGHT_IQ4_NL || types[t] == VKMOE_WEIGHT_Q8_0;
            size_t first_exact = vnni_only ? first_vnni_level() : 1;
            if (l == first_exact)
                memcpy(first, y, bytes);
            if (l >= first_exact)
                assert_memory_equal(first, y, bytes);
            test_layer_destroy(&layer);
        }
        free(first);
        free(y);
        free(x);
    }
}

/* A NaN in a token's input makes its outputs NaN, as in the reference,
 * and leaves the other tokens' as they were: the exact form's block holding
 * it is NaN, the others exact. Q4_K's codes are unsigned, IQ4_XS's levels
 * signed (offset, the lanes' sums taken off); Q4_1's m·Σx, MXFP4's levels
 * and Q8_0's offset codes by quads of blocks. */
static void nan_input(void **state, vkmoe_weight_type type)
{
    test_seed(76);
    vkmoe_layer_params p = on_cpu(256, 256, 4, 2, 3, type);
    test_layer t;
    test_layer_create(*state, &p, &t);
    test_layer_upload(&t);
    float *x = test_input(p.max_tokens, p.dim);
    size_t bytes = (size_t)p.max_tokens * p.dim * sizeof(float);
    float *clean = malloc(bytes), *y = malloc(bytes);
    assert_int_equal(vkmoe_layer_forward(t.layer, p.max_tokens, x, clean), VKMOE_OK);
    x[p.dim + 37] = NAN;
    test_check_forward(&t, p.max_tokens, x);
    assert_int_equal(vkmoe_layer_forward(t.layer, p.max_tokens, x, y), VKMOE_OK);
    for (uint32_t d = 0; d < p.dim; d++)
        assert_true(isnan(y[p.dim + d]));
    assert_memory_equal(y, clean, p.dim * sizeof(float));
    assert_memory_equal(y + 2 * p.dim, clean + 2 * p.dim, p.dim * sizeof(float));
    free(clean);
    free(y);
    free(x);
    test_layer_destroy(&t);
}

static void test_nan_input(void **state)
{
    nan_input(state, VKMOE_WEIGHT_Q4_K);
    nan_input(state, VKMOE_WEIGHT_IQ4_XS);
    nan_input(state, VKMOE_WEIGHT_Q4_1);
    nan_input(state, VKMOE_WEIGHT_MXFP4);
    nan_input(state, VKMOE_WEIGHT_Q8_0);
}

/* Two experts of a hundred rows each: many units a thread, all threads. */
static void test_long_prefill(void **state)
{
    test_seed(73);
    vkmoe_layer_params p = on_cpu(160, 200, 2, 1, 200, VKMOE_WEIGHT_BF16);
    check_on_cpu(*state, p);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_every_weight_type), cmocka_unit_test(test_every_kind_of_expert),
    cmocka_unit_test(test_long_prefill),      cmocka_unit_test(test_every_level),
    cmocka_unit_test(test_nan_input),
};

int main(void) { return test_device_suite(tests, test_group_setup, test_group_teardown); }
