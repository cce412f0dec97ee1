/* Stages 5 and 6: every used row of h and z against the reference, fed
 * with the GPU's own inputs (its row map for gemm_up, its h for gemm_down). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* Each row's max_rel against the reference within `tolerance`. */
static void check_gemms_within(void **state, vkmoe_layer_params p, uint32_t tokens,
                               double tolerance)
{
    test_staged run;
    test_staged_run(*state, &p, tokens, &run);
    const test_intermediates m = run.m;
    const float *x = run.x;
    const test_layer t = run.layer;
    double *h = malloc(p.ffn_dim * sizeof(double)), *gpu_h = malloc(p.ffn_dim * sizeof(double));
    double *z = malloc(p.dim * sizeof(double));
    for (uint32_t slot = 0; slot < m.slots; slot++) {
        uint32_t row = m.slot_row[slot], expert = m.ids[slot];
        if (row == VKMOE_INVALID)
            continue; /* dropped by a capacity */
        const float *h_row = m.hidden + (size_t)row * m.ld_ffn;
        vkmoe_ref_expert_up(&t.ref, expert, x + (size_t)(slot / p.top_k) * p.dim, h);
        vkmoe_ref_error up = vkmoe_ref_compare(h_row, h, p.ffn_dim);
        if (!(up.max_rel <= tolerance))
            fail_msg("gemm_up, %s weights, row %u: max_rel %g",
                     vkmoe_weight_type_name(p.weight_type), row, up.max_rel);
        for (uint32_t f = p.ffn_dim; f < m.ld_ffn; f++)
            assert_true(h_row[f] == 0.0f); /* the padding gemm_down reads */
        for (uint32_t f = 0; f < p.ffn_dim; f++)
            gpu_h[f] = h_row[f];
        vkmoe_ref_expert_down(&t.ref, expert, gpu_h, z);
        vkmoe_ref_error down = vkmoe_ref_compare(m.expert_out + (size_t)row * p.dim, z, p.dim);
        if (!(down.max_rel <= tolerance))
            fail_msg("gemm_down, %s weights, row %u: max_rel %g",
                     vkmoe_weight_type_name(p.weight_type), row, down.max_rel);
    }
    free(h);
    free(gpu_h);
    free(z);
    test_staged_free(&run);
}

static void check_gemms(void **state, vkmoe_layer_params p, uint32_t tokens)
{
    check_gemms_within(state, p, tokens, F32_TOLERANCE);
}

static vkmoe_layer_params shape(uint32_t dim, uint32_t ffn, uint32_t experts, uint32_t top_k,
                                uint32_t tokens, vkmoe_weight_type type)
{
    vkmoe_layer_params p = test_shape(dim, ffn, experts, top_k, tokens);
    p.weight_type = type;
    return p;
}

/* Widths that are multiples of no lane, column or row-pass count. */
static void test_awkward_widths(void **state)
{
    test_seed(60);
    check_gemms(state, shape(131, 77, 5, 2, 41, VKMOE_WEIGHT_F32), 41);
    check_gemms(state, shape(3, 5, 2, 1, 9, VKMOE_WEIGHT_F32), 9);
}

/* ReLU (one projection, four columns a lane) and GPT-OSS's clamped SwiGLU,
 * both with biases. */
static void test_activations_and_biases(void **state)
{
    test_seed(63);
    vkmoe_layer_params p = shape(57, 83, 5, 2, 45, VKMOE_WEIGHT_F32);
    p.activation = VKMOE_ACTIVATION_RELU;
    p.expert_bias = true;
    check_gemms(state, p, 45);
    p.activation = VKMOE_ACTIVATION_SWIGLU_CLAMPED;
    p.swiglu_limit = 1.5f; /* small enough that the random inputs reach it */
    check_gemms(state, p, 45);
}

/* Segments of one row, of exactly a tile, and of several tiles. */
static void test_segment_sizes(void **state)
{
    test_seed(62);
    check_gemms(state, shape(64, 48, 3, 1, 1, VKMOE_WEIGHT_F32), 1);
    check_gemms(state, shape(64, 48, 2, 2, 32, VKMOE_WEIGHT_F32), 32);
    check_gemms(state, shape(40, 56, 2, 1, 150, VKMOE_WEIGHT_F16), 150);
}

/* The pass sizes at their boundaries: one expert takes every token, so its
 * segment has exactly `tokens` rows, covered by passes of 16 (8 or more
 * rows left), 4 (2 or more) and 1, padded past the rows that hold slots
 * (the decode rows are the 1- and 4-row passes; 24 ends a 16-row pass at a
 * tile's end, 33 and 41 cross a 32-row tile). */
static void test_pass_boundaries(void **state)
{
    test_seed(64);
    const uint32_t rows[] = {1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 18, 23, 24, 30, 33, 41};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(rows); i++) {
        check_gemms(state, shape(72, 40, 1, 1, rows[i], VKMOE_WEIGHT_F16), rows[i]);
        if (rows[i] % 8 == 1 || rows[i] == 2 || rows[i] == 24)
            check_gemms(state, shape(256, 256, 1, 1, rows[i], VKMOE_WEIGHT_Q4_K), rows[i]);
    }
}

/* Other GPUs' column layouts run here: workgroups of 32 lanes (NVIDIA,
 * Intel) and 64 (AMD), 256 or 512 columns each, as several of lavapipe's
 * 8-lane subgroups; the whole layer too (router, shared expert, combine). */
/* A context whose expert GEMMs have `lanes` invocations (test options). */
static vkmoe_context *with_lanes(uint32_t lanes)
{
    vkmoe_context *ctx = test_context_with((vkmoe_context_options){.gemm_lanes = lanes});
    assert_non_null(ctx);
    return ctx;
}

/* The 32- and 64-lane contexts, made once for the tests that use them:
 * each new context compiles its pipelines again (minutes under ASan). */
static vkmoe_context *lanes32, *lanes64;

static void *shared_lanes(uint32_t lanes)
{
    vkmoe_context **ctx = lanes == 32 ? &lanes32 : &lanes64;
    if (!*ctx)
        *ctx = with_lanes(lanes);
    return *ctx;
}

/* As test_group_teardown: a validation error fails the run. */
static int teardown(void **state)
{
    vkmoe_context *shared[2] = {lanes32, lanes64};
    for (int i = 0; i < 2; i++) {
        uint32_t errors = vkmoe_context_validation_errors(shared[i]);
        vkmoe_context_destroy(&shared[i]);
        if (errors) {
            fprintf(stderr, "%u validation errors: failing\n", errors);
            exit(1);
        }
    }
    return test_group_teardown(state);
}

static void test_wide_workgroups(void **state)
{
    (void)state;
    test_seed(65);
    /* each width once per path (every new width compiles its pipelines) */
    void *wide = shared_lanes(32);
    check_gemms(&wide, shape(131, 77, 5, 2, 41, VKMOE_WEIGHT_F32), 41);
    vkmoe_layer_params p = shape(200, 300, 6, 2, 33, VKMOE_WEIGHT_F16);
    p.shared_ffn_dim = 72;
    p.activation = VKMOE_ACTIVATION_RELU;
    test_check_layer(wide, p, 33);
    void *amd = shared_lanes(64);
    check_gemms(&amd, shape(256, 768, 3, 2, 20, VKMOE_WEIGHT_Q6_K), 20);
}

/* VKMOE_GEMM_TILED: 32x64 tiles through shared memory, at widths that are
 * multiples of neither, segments of 1 row and across tiles, every
 * activation and weight encoding kind, and 4 x 32 invocations; refused
 * where 4 subgroups exceed the device's workgroup limits. */
static vkmoe_layer_params on_path(vkmoe_layer_params p, vkmoe_gemm_path path)
{
    p.gemm_path = path;
    return p;
}

/* ReLU and clamped SwiGLU experts with biases on a path. */
static void check_activations_on(void **state, vkmoe_gemm_path path)
{
    vkmoe_layer_params p = on_path(shape(57, 83, 5, 2, 45, VKMOE_WEIGHT_F32), path);
    p.activation = VKMOE_ACTIVATION_RELU;
    p.expert_bias = true;
    check_gemms(state, p, 45);
    p.activation = VKMOE_ACTIVATION_SWIGLU_CLAMPED;
    p.swiglu_limit = 1.5f;
    check_gemms(state, p, 45);
}

/* Every weight type on a path, a new one included without a line here:
 * rows of 3 and 7 blocks of 32 (Q8_0's, Q4_0's and Q5_0's every other
 * block off a 32-bit word, MXFP4's 17-byte blocks at every byte of one),
 * or of 3 and 2 super-blocks of 256 (Q6_K's and Q3_K's off a word). */
static void check_weight_types_within(void **state, vkmoe_gemm_path path, uint32_t tokens,
                                      double tolerance)
{
#if defined(__SANITIZE_ADDRESS__)
    /* Sanitized, the host code is the same on every path: the register
     * path's loop covers it (the plain suite runs every path's). */
    if (path != VKMOE_GEMM_REGISTER)
        return;
#endif
    for (int t = 0; vkmoe_weight_type_name((vkmoe_weight_type)t); t++) {
        if (!test_weight_type_in_run((vkmoe_weight_type)t))
            continue;
        uint32_t block = vkmoe_weight_block((vkmoe_weight_type)t);
        uint32_t dim = block == 256 ? 768 : 96, ffn = block == 256 ? 512 : 224;
        check_gemms_within(state,
                           on_path(shape(dim, ffn, 3, 2, tokens, (vkmoe_weight_type)t), path),
                           tokens, tolerance);
    }
}

static void check_weight_types_on(void **state, vkmoe_gemm_path path, uint32_t tokens)
{
    check_weight_types_within(state, path, tokens, F32_TOLERANCE);
}

/* Every weight type on the register path (the CPU device's). */
static void test_compact_weights(void **state)
{
    test_seed(61);
    check_gemms(state, shape(203, 99, 6, 3, 70, VKMOE_WEIGHT_F16), 70);
    check_gemms(state, shape(91, 130, 4, 2, 37, VKMOE_WEIGHT_BF16), 37);
    check_weight_types_on(state, VKMOE_GEMM_REGISTER, 45);
}

static void test_tiled_path(void **state)
{
    const vkmoe_gemm_path tiled = VKMOE_GEMM_TILED;
    test_seed(66);
    check_gemms(state, on_path(shape(131, 77, 5, 2, 41, VKMOE_WEIGHT_F32), tiled), 41);
    check_gemms(state, on_path(shape(3, 5, 2, 1, 1, VKMOE_WEIGHT_F16), tiled), 1);
    check_weight_types_on(state, tiled, 9);
    check_activations_on(state, tiled);
    vkmoe_context *wide = shared_lanes(32);
    vkmoe_layer_params p = on_path(shape(200, 300, 6, 2, 70, VKMOE_WEIGHT_F16), tiled);
    p.shared_ffn_dim = 72;
    test_check_layer(wide, p, 70);
    void *amd = shared_lanes(64); /* AMD's subgroups: tiles of 64 rows, none a multiple of them */
    vkmoe_layer *layer;
    assert_int_equal(vkmoe_layer_create(amd, &p, &layer), VKMOE_OK);
    assert_int_equal(layer->gemm.tile_m, 64);
    vkmoe_layer_destroy(&layer);
    check_gemms(&amd, on_path(shape(131, 77, 5, 2, 141, VKMOE_WEIGHT_F32), tiled), 141);
    test_check_layer(amd, p, 70);
    /* 64-lane tiles (24 KiB) where shared memory holds only Vulkan's least,
     * 16 KiB: 32 rows instead */
    vkmoe_context *small =
        test_context_with((vkmoe_context_options){.gemm_lanes = 64, .max_shared_memory = 16384});
    assert_non_null(small);
    assert_int_equal(vkmoe_layer_create(small, &p, &layer), VKMOE_OK);
    assert_int_equal(layer->gemm.tile_m, 32);
    vkmoe_layer_destroy(&layer);
    test_context_destroy(&small);
    vkmoe_context *huge = with_lanes(1024); /* 4 subgroups of it exceed every device's workgroup */
    test_expect_create_fails(huge, &p, VKMOE_ERROR_UNSUPPORTED, "4 subgroups");
    test_context_destroy(&huge);
}

/* VKMOE_GEMM_GEMV: a subgroup a column, lanes across the depth, a subgroup
 * sum per row. Widths that are multiples of no lane count or of its 8
 * columns a workgroup; passes of 1 to 16 rows and across them (17, 31)
 * and across tiles (33); every weight type and activation, with biases;
 * a whole layer with a shared expert; the 32- and 64-lane workgroups. */
static void test_gemv_path(void **state)
{
    const vkmoe_gemm_path gemv = VKMOE_GEMM_GEMV;
    test_seed(68);
    check_gemms(state, on_path(shape(131, 77, 5, 2, 41, VKMOE_WEIGHT_F32), gemv), 41);
    check_gemms(state, on_path(shape(3, 5, 2, 1, 1, VKMOE_WEIGHT_F16), gemv), 1);
    const uint32_t rows[] = {1, 2, 7, 15, 16, 17, 31, 33};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(rows); i++)
        check_gemms(state, on_path(shape(72, 40, 1, 1, rows[i], VKMOE_WEIGHT_F16), gemv), rows[i]);
    check_gemms(state, on_path(shape(91, 130, 4, 2, 37, VKMOE_WEIGHT_BF16), gemv), 37);
    check_weight_types_on(state, gemv, 9);
    check_activations_on(state, gemv);
    vkmoe_layer_params p = on_path(shape(200, 300, 6, 2, 70, VKMOE_WEIGHT_F16), gemv);
    p.shared_ffn_dim = 72;
    test_check_layer(*state, p, 70);
    test_check_layer(shared_lanes(32), p, 5);
    void *amd = shared_lanes(64);
    check_gemms(&amd, on_path(shape(131, 77, 5, 2, 41, VKMOE_WEIGHT_F32), gemv), 41);
    vkmoe_context *huge = with_lanes(1024);
    test_expect_create_fails(huge, &p, VKMOE_ERROR_UNSUPPORTED, "4 subgroups");
    test_context_destroy(&huge);
}

/* The GEMV path's depth steps in flight and columns a workgroup
 * (vkmoe_context_options.gemv_steps and gemv_columns, VKMOE_GEMV_STEPS and
 * VKMOE_GEMV_COLUMNS), and its rows a pass (a forward of one token's kernel
 * against the 16-row one): the same products in the same order at 2 and 4
 * steps as at the default 1, and at 1, 8 and 16 columns as at the default
 * 4 (a subgroup taking 4 columns in turn at 16, 3 of 4 idle at 1), so the
 * same output bits (a whole layer: router logits, both GEMMs, a shared
 * expert, one token's combine in gemm_down's column blocks), where every
 * depth ends mid-group of steps at 2 and 4 (lavapipe's 8-lane subgroups:
 * f16 1000 and 328, 64 weights a step; Q4_K 1280 and 768, its 32-weight
 * units 256 a step) and no width is a multiple of 16 columns; against the
 * reference too. The environment's values, out of range the default, and
 * the options' first. */
static void test_gemv_steps(void **state)
{
    (void)state;
    vkmoe_context *lanes = shared_lanes(32);
    enum { TYPES = 2, T = 20 };
    static const vkmoe_weight_type types[TYPES] = {VKMOE_WEIGHT_F16, VKMOE_WEIGHT_Q4_K};
    static const uint32_t dims[TYPES] = {1000, 1280}, ffns[TYPES] = {328, 768};
    test_layer t[TYPES];
    vkmoe_layer_params p[TYPES];
    float *x[TYPES], *y[TYPES], *y1[TYPES];
    for (size_t i = 0; i < TYPES; i++) {
        p[i] = on_path(shape(dims[i], ffns[i], 6, 2, T, types[i]), VKMOE_GEMM_GEMV);
        p[i].shared_ffn_dim = ffns[i];
        test_layer_seeded(lanes, &p[i], 69, &t[i]);
        x[i] = test_input(T, p[i].dim);
        y[i] = malloc((size_t)T * p[i].dim * sizeof(float));
        y1[i] = malloc(p[i].dim * sizeof(float));
        assert_int_equal(vkmoe_layer_forward(t[i].layer, T, x[i], y[i]), VKMOE_OK);
        assert_int_equal(vkmoe_layer_forward(t[i].layer, 1, x[i], y1[i]), VKMOE_OK);
        test_check_forward(&t[i], T, x[i]);
        /* One token runs the kernel of one row a pass (f16: its own
         * pipelines; Q4_K's pass is one row in both): the bits of the
         * 16-row kernel, run by making the forward count as two tokens. */
        const vkmoe_gemm_config *g = &t[i].layer->gemm;
        assert_ptr_equal(vkmoe_gemm_kernel_for(t[i].layer, 1), &g->one_token);
        assert_int_equal(g->one_token.gemv_rows, 1);
        assert_int_equal(g->decode.gemv_rows, VKMOE_GEMV_PASS);
        bool wide = types[i] == VKMOE_WEIGHT_Q4_K;
        assert_true((g->one_token.up == g->decode.up) == wide);
        assert_true((g->one_token.down == g->decode.down) == wide);
        assert_true(g->one_token.logits != g->decode.logits); /* f32 router rows */
        float *by_decode = malloc(p[i].dim * sizeof(float));
        t[i].layer->io.kernel_tokens = 2;
        assert_ptr_equal(vkmoe_gemm_kernel_for(t[i].layer, 1), &g->decode);
        assert_int_equal(vkmoe_layer_forward(t[i].layer, 1, x[i], by_decode), VKMOE_OK);
        t[i].layer->io.kernel_tokens = 0;
        assert_memory_equal(by_decode, y1[i], p[i].dim * sizeof(float));
        free(by_decode);
    }
    static const uint32_t shapes[][2] = {{1, 1}, {VKMOE_GEMV_MAX_STEPS, 8}, {2, 16}};
    for (size_t s = 0; s < VKMOE_ARRAY_SIZE(shapes); s++) {
        uint32_t steps = shapes[s][0], columns = shapes[s][1];
        vkmoe_context *ctx = test_context_with((vkmoe_context_options){
            .gemm_lanes = 32, .gemv_steps = steps, .gemv_columns = columns});
        assert_non_null(ctx);
        assert_int_equal(ctx->gemv_steps, steps);
        assert_int_equal(ctx->gemv_columns, columns);
        for (size_t i = 0; i < TYPES; i++) {
            vkmoe_layer *twin = test_twin_of(ctx, &t[i], &p[i]);
            float *out = malloc((size_t)T * p[i].dim * sizeof(float));
            for (uint32_t tokens = 1; tokens <= T; tokens += T - 1) {
                memset(out, 0xff, (size_t)T * p[i].dim * sizeof(float));
                assert_int_equal(vkmoe_layer_forward(twin, tokens, x[i], out), VKMOE_OK);
                assert_memory_equal(out, tokens == 1 ? y1[i] : y[i],
                                    tokens * p[i].dim * sizeof(float));
            }
            free(out);
            vkmoe_layer_destroy(&twin);
        }
        test_context_destroy(&ctx);
    }
    for (size_t i = 0; i < TYPES; i++) {
        free(x[i]);
        free(y[i]);
        free(y1[i]);
        test_layer_destroy(&t[i]);
    }
    /* The environment's value where the options give none; out of the
     * range, the default; the options' before the environment's. */
    const uint32_t steps = VKMOE_GEMV_STEPS, columns = VKMOE_GEMV_COLUMNS;
    const struct {
        const char *variable, *value;
        uint32_t steps, columns;
    } env[] = {
        {"VKMOE_GEMV_STEPS", "3", 3, columns},        {"VKMOE_GEMV_STEPS", "0", steps, columns},
        {"VKMOE_GEMV_STEPS", "5", steps, columns},    {"VKMOE_GEMV_STEPS", "many", steps, columns},
        {"VKMOE_GEMV_COLUMNS", "6", steps, 6},        {"VKMOE_GEMV_COLUMNS", "0", steps, columns},
        {"VKMOE_GEMV_COLUMNS", "17", steps, columns}, {"VKMOE_GEMV_COLUMNS", "x", steps, columns},
    };
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(env); i++) {
        setenv(env[i].variable, env[i].value, 1);
        vkmoe_context *ctx = test_context_with((vkmoe_context_options){0});
        assert_non_null(ctx);
        assert_int_equal(ctx->gemv_steps, env[i].steps);
        assert_int_equal(ctx->gemv_columns, env[i].columns);
        test_context_destroy(&ctx);
        unsetenv(env[i].variable);
    }
    setenv("VKMOE_GEMV_STEPS", "3", 1);
    vkmoe_context *ctx =
        test_context_with((vkmoe_context_options){.gemv_steps = 1, .gemv_columns = 2});
    assert_non_null(ctx);
    assert_int_equal(ctx->gemv_steps, 1);
    assert_int_equal(ctx->gemv_columns, 2);
    test_context_destroy(&ctx);
    unsetenv("VKMOE_GEMV_STEPS");
    unsetenv("VKMOE_GEMV_COLUMNS");
}

/* VKMOE_GEMM_AUTO: the register path on a CPU device; as on a GPU (a test
 * option here), GEMV for forwards of up to 16 tokens and tiled beyond, on
 * one layer whose forwards cross that boundary both ways (the scan plans
 * each forward's grids for its kernel). */
static void test_auto_paths(void **state)
{
    vkmoe_gemm_path decode, prefill;
    const char *why = NULL;
    /* The suite's device: lavapipe's choice in CI, a GPU's on the device
     * tool's machine (./dev gpu-check). */
    bool cpu = vkmoe_context_cpu_shaped(*state);
    assert_int_equal(vkmoe_context_auto_gemm_paths(*state, &decode, &prefill, &why), VKMOE_OK);
    assert_int_equal(decode, cpu ? VKMOE_GEMM_REGISTER : VKMOE_GEMM_GEMV);
    assert_int_equal(prefill, cpu ? VKMOE_GEMM_REGISTER : VKMOE_GEMM_TILED);
    assert_non_null(strstr(why, cpu ? "CPU" : "not yet by measurement"));
    assert_int_equal(vkmoe_context_auto_gemm_paths(*state, NULL, &prefill, NULL),
                     VKMOE_ERROR_INVALID_ARGUMENT);

    vkmoe_context *gpu = test_context_with((vkmoe_context_options){.auto_as_gpu = true});
    assert_non_null(gpu);
    assert_int_equal(vkmoe_context_auto_gemm_paths(gpu, &decode, &prefill, &why), VKMOE_OK);
    assert_int_equal(decode, VKMOE_GEMM_GEMV);
    assert_int_equal(prefill, VKMOE_GEMM_TILED);
    assert_non_null(strstr(why, "not yet by measurement"));
    test_seed(69);
    vkmoe_layer_params p = shape(131, 77, 5, 2, 40, VKMOE_WEIGHT_F16);
    p.shared_ffn_dim = 24;
    test_layer t;
    test_layer_create(gpu, &p, &t);
    test_layer_upload(&t);
    assert_int_equal(t.layer->gemm.decode.path, VKMOE_GEMM_GEMV);
    assert_int_equal(t.layer->gemm.prefill.path, VKMOE_GEMM_TILED);
    assert_ptr_equal(vkmoe_gemm_kernel_for(t.layer, 1), &t.layer->gemm.one_token);
    assert_int_equal(t.layer->gemm.one_token.path, VKMOE_GEMM_GEMV);
    assert_ptr_equal(vkmoe_gemm_kernel_for(t.layer, 2), &t.layer->gemm.decode);
    assert_ptr_equal(vkmoe_gemm_kernel_for(t.layer, 16), &t.layer->gemm.decode);
    assert_ptr_equal(vkmoe_gemm_kernel_for(t.layer, 17), &t.layer->gemm.prefill);
    const uint32_t tokens[] = {1, 16, 17, 40, 16, 3};
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(tokens); i++) {
        float *x = test_input(tokens[i], p.dim);
        test_check_forward(&t, tokens[i], x);
        free(x);
    }
    test_layer_destroy(&t);
    test_context_destroy(&gpu);
}

/* VKMOE_GEMM_COOPMAT's products within 5e-3 (its f16 activations and
 * decoded weights bound the error: 2^-11 relative each), every weight type
 * (decoded, then rounded to f16 in the tile). */
static void check_matrix_core_path(void **state)
{
    vkmoe_layer_params p = on_path(shape(131, 77, 5, 2, 41, VKMOE_WEIGHT_F16), VKMOE_GEMM_COOPMAT);
    check_gemms_within(state, p, 41, 5e-3);
    p = on_path(shape(200, 300, 6, 2, 70, VKMOE_WEIGHT_F16), VKMOE_GEMM_COOPMAT);
    p.activation = VKMOE_ACTIVATION_RELU;
    p.expert_bias = true;
    check_gemms_within(state, p, 70, 5e-3);
    p = on_path(shape(3, 5, 2, 1, 1, VKMOE_WEIGHT_F16), VKMOE_GEMM_COOPMAT);
    p.activation = VKMOE_ACTIVATION_SWIGLU_CLAMPED;
    p.swiglu_limit = 1.5f;
    check_gemms_within(state, p, 1, 5e-3);
    check_weight_types_within(state, VKMOE_GEMM_COOPMAT, 9, 5e-3);
}

/* On a device with NV cooperative matrices, the path itself. Elsewhere a
 * clear refusal, then the path with its multiplies emulated: the f16 tiles,
 * the matrices' offsets and strides in them and the epilogue all run. */
static void test_matrix_core_path(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_device_info info;
    assert_int_equal(vkmoe_context_device_info(ctx, &info), VKMOE_OK);
    test_seed(67);
    if (info.cooperative_matrix) {
        check_matrix_core_path(state);
        return;
    }
    vkmoe_layer_params p = on_path(shape(131, 77, 5, 2, 41, VKMOE_WEIGHT_F16), VKMOE_GEMM_COOPMAT);
    test_expect_create_fails(ctx, &p, VKMOE_ERROR_UNSUPPORTED, "VK_NV_cooperative_matrix");
    /* The emulation's f16 tiles, and its accumulators of 256 / 8 elements a
     * lane: lavapipe has fp16 arithmetic, and 8-lane subgroups with AVX. */
    assert_true(info.shader_float16 && info.subgroup_size >= 8);
    void *emulated = test_context_with((vkmoe_context_options){.emulated_matrix_cores = true});
    assert_non_null(emulated);
    check_matrix_core_path(&emulated);
    test_context_destroy((vkmoe_context **)&emulated);
    /* Its tiles take 26 KiB of shared memory: a device with Vulkan's least,
     * 16 KiB, is refused. */
    vkmoe_context *small = test_context_with(
        (vkmoe_context_options){.emulated_matrix_cores = true, .max_shared_memory = 16384});
    assert_non_null(small);
    test_expect_create_fails(small, &p, VKMOE_ERROR_UNSUPPORTED, "shared memory");
    test_context_destroy(&small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_awkward_widths),
        cmocka_unit_test(test_compact_weights),
        cmocka_unit_test(test_activations_and_biases),
        cmocka_unit_test(test_segment_sizes),
        cmocka_unit_test(test_pass_boundaries),
        cmocka_unit_test(test_wide_workgroups),
        cmocka_unit_test(test_tiled_path),
        cmocka_unit_test(test_gemv_path),
        cmocka_unit_test(test_gemv_steps),
        cmocka_unit_test(test_auto_paths),
        cmocka_unit_test(test_matrix_core_path),
    };
    return test_device_suite(tests, test_group_setup, teardown);
}
