/* vkmoe-run end to end: a checkpoint and a GGUF file written here, hidden
 * states in .npy (f32 and f16), the tool's output against the CPU
 * reference; its statistics; its exit status on bad usage and bad files.
 * argv[1] is the vkmoe-run executable. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "npy.h"

static const char *run_tool;
static char work_dir[256];

static const char *path_in(const char *name)
{
    static char path[4][512];
    static int next;
    next = (next + 1) % 4; /* a few calls may share one expression */
    snprintf(path[next], sizeof(path[next]), "%s/%s", work_dir, name);
    return path[next];
}

/* Runs vkmoe-run with args after the environment assignments env, stdout
 * to out.txt; returns its exit status. */
static int run_with(const char *env, const char *args)
{
    char command[2048];
    snprintf(command, sizeof(command), "%s '%s' %s > '%s' 2> '%s'", env, run_tool, args,
             path_in("out.txt"), path_in("err.txt"));
    int status = system(command);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run(const char *args) { return run_with("", args); }

/* Under the validation layer (with the synchronization checks the tests'
 * environment asks for), where a layer error makes vkmoe-run exit 1; as
 * run() where the tests run without the layer (test_validation). Only some
 * runs: loading the layer costs each run about two seconds here. */
static int run_validated(const char *args)
{
    return run_with(test_validation() ? "VKMOE_VALIDATION=1" : "", args);
}

/* x as .npy: f32, or f16 (values rounded to f16 in place). */
static void write_input(float *x, uint32_t tokens, uint32_t dim, bool f16)
{
    if (!f16) {
        assert_true(npy_write(path_in("x.npy"), x, tokens, dim));
        return;
    }
    byte_buffer b = {0};
    char header[128];
    int n = snprintf(header, sizeof(header),
                     "{'descr': '<f2', 'fortran_order': False, 'shape': (%u, %u), }", tokens, dim);
    while ((10 + n + 1) % 64)
        header[n++] = ' ';
    header[n++] = '\n';
    uint8_t prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)n, 0};
    buffer_append(&b, prefix, 10);
    buffer_append(&b, header, (size_t)n);
    for (size_t i = 0; i < (size_t)tokens * dim; i++) {
        uint16_t h = vkmoe_ref_f32_to_f16(x[i]);
        x[i] = vkmoe_ref_f16_to_f32(h);
        buffer_append(&b, &h, 2);
    }
    assert_true(buffer_write_file(&b, path_in("x.npy")));
    buffer_free(&b);
}

/* The tool's y.npy against the reference forward of x. */
static void check_output(const test_layer *t, const float *x, uint32_t tokens)
{
    float *y;
    uint32_t rows, cols;
    char error[256];
    if (!npy_read(path_in("y.npy"), &y, &rows, &cols, error, sizeof(error)))
        fail_msg("%s", error);
    assert_int_equal(rows, tokens);
    assert_int_equal(cols, t->params.dim);
    double *expected = malloc((size_t)tokens * cols * sizeof(double));
    vkmoe_ref_forward(&t->ref, tokens, x, expected);
    vkmoe_ref_error err = vkmoe_ref_compare(y, expected, (size_t)tokens * cols);
    assert_true(err.max_rel <= F32_TOLERANCE);
    free(y);
    free(expected);
}

static void test_checkpoint_through_the_tool(void **state)
{
    test_seed(120);
    vkmoe_layer_params p = test_shape(40, 24, 6, 2, 0);
    p.shared_ffn_dim = 32;
    p.weight_type = VKMOE_WEIGHT_BF16;
    vkmoe_layer_params_family(&p, "qwen2-moe");
    test_layer t;
    checkpoint_weights(*state, p, &t);
    checkpoint_write_hf(work_dir, &t,
                        "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 40, "
                        "\"moe_intermediate_size\": 24, \"num_experts\": 6, "
                        "\"num_experts_per_tok\": 2, "
                        "\"shared_expert_intermediate_size\": 32}",
                        &checkpoint_qwen_names, 4, 1);
    for (int f16 = 0; f16 < 2; f16++) {
        float *x = test_input(33, 40);
        write_input(x, 33, 40, f16);
        char args[1024];
        snprintf(args, sizeof(args), "--model '%s' --layer 4 --input '%s' --output '%s' --stats",
                 work_dir, path_in("x.npy"), path_in("y.npy"));
        assert_int_equal(f16 ? run(args) : run_validated(args), 0);
        check_output(&t, x, 33);
        free(x);
    }
    FILE *f = fopen(path_in("out.txt"), "rb");
    char text[8192];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_non_null(strstr(text, "\"tokens\": 33"));
    assert_non_null(strstr(text, "\"balance_loss\""));
    test_layer_destroy(&t);
}

static bool file_contains(const char *name, const char *words);

static void test_gguf_through_the_tool(void **state)
{
    test_seed(121);
    vkmoe_layer_params p = test_shape(32, 16, 64, 0, 0);
    p.shared_ffn_dim = 16;
    p.weight_type = VKMOE_WEIGHT_F16;
    vkmoe_layer_params_family(&p, "deepseek-v3");
    test_layer t;
    checkpoint_weights(*state, p, &t);
    gguf_writer w = {0};
    checkpoint_deepseek_v3_meta(&w);
    checkpoint_write_gguf(path_in("model.gguf"), &w, &t, "deepseek2", 0);
    float *x = test_input(7, 32);
    write_input(x, 7, 32, false);
    char args[1024];
    snprintf(args, sizeof(args), "--model '%s' --layer 0 --input '%s' --output '%s'",
             path_in("model.gguf"), path_in("x.npy"), path_in("y.npy"));
    assert_int_equal(run(args), 0);
    check_output(&t, x, 7);
    /* the same on the tiled GEMM path, into a fresh output */
    assert_int_equal(remove(path_in("y.npy")), 0);
    char tiled[1100];
    snprintf(tiled, sizeof(tiled), "%s --gemm tiled", args);
    assert_int_equal(run(tiled), 0);
    check_output(&t, x, 7);
    /* six of the 64 experts on the device (3 KiB each), the rest copied in;
     * the same with --huge-pages (test_memory checks where the pages lie) */
    assert_int_equal(remove(path_in("y.npy")), 0);
    snprintf(tiled, sizeof(tiled), "%s --device-budget 18K", args);
    assert_int_equal(run(tiled), 0);
    check_output(&t, x, 7);
    assert_int_equal(remove(path_in("y.npy")), 0);
    snprintf(tiled, sizeof(tiled), "%s --device-budget 18K --huge-pages", args);
    assert_int_equal(run(tiled), 0);
    check_output(&t, x, 7);
    /* a token at a time through the cached layer */
    assert_int_equal(remove(path_in("y.npy")), 0);
    snprintf(tiled, sizeof(tiled), "%s --device-budget 18K --decode --stats", args);
    assert_int_equal(run(tiled), 0);
    check_output(&t, x, 7);
    assert_true(file_contains("out.txt", "\"cache\": {\"slots\": 6, \"forwards\": 7, "));
    /* every expert on the host */
    assert_int_equal(remove(path_in("y.npy")), 0);
    snprintf(tiled, sizeof(tiled), "%s --cpu-experts 1", args);
    assert_int_equal(run(tiled), 0);
    check_output(&t, x, 7);
    snprintf(tiled, sizeof(tiled), "%s --device-budget 1K", args);
    assert_int_equal(run(tiled), 1);
    snprintf(tiled, sizeof(tiled), "%s --device-budget 0", args);
    assert_int_equal(run(tiled), 2);
    /* the wrong width for this model */
    free(x);
    x = test_input(2, 31);
    write_input(x, 2, 31, false);
    assert_int_equal(run(args), 1);
    free(x);
    test_layer_destroy(&t);
}

/* The newer families' checkpoints through the tool, first those that need
 * the most of the loader: GPT-OSS's MXFP4 checkpoint (blocks and scales,
 * interleaved gate and up) and Llama 4's multimodal one (nested config,
 * input-first experts, the routing weight on the input); under ASan only
 * those two (every family runs through the API in test_model). */
static void test_new_families_through_the_tool(void **state)
{
    struct {
        const char *family, *config;
        const hf_names *names;
        vkmoe_weight_type type;
        uint32_t dim, ffn;
    } cases[] = {
        {"gpt-oss",
         "{\"model_type\": \"gpt_oss\", \"hidden_size\": 64, \"intermediate_size\": 96, "
         "\"num_local_experts\": 8, \"num_experts_per_tok\": 4, \"swiglu_limit\": 7.0}",
         &checkpoint_gpt_oss_names, VKMOE_WEIGHT_MXFP4, 64, 96},
        {"llama4",
         "{\"model_type\": \"llama4\", \"text_config\": {\"hidden_size\": 40, "
         "\"intermediate_size\": 24, \"num_local_experts\": 8, \"num_experts_per_tok\": 1}}",
         &checkpoint_llama4_names, VKMOE_WEIGHT_BF16, 40, 24},
        {"ernie-4.5-moe",
         "{\"model_type\": \"ernie4_5_moe\", \"hidden_size\": 40, \"moe_intermediate_size\": "
         "24, \"moe_num_experts\": 8, \"moe_k\": 6, \"moe_num_shared_experts\": 0, "
         "\"moe_layer_start_index\": 0}",
         &checkpoint_ernie_names, VKMOE_WEIGHT_F16, 40, 24},
        {"granite-moe",
         "{\"model_type\": \"granitemoe\", \"hidden_size\": 40, \"intermediate_size\": 24, "
         "\"num_local_experts\": 8, \"num_experts_per_tok\": 8}",
         &checkpoint_granite_names, VKMOE_WEIGHT_BF16, 40, 24},
        {"glm4-moe",
         "{\"model_type\": \"glm4_moe\", \"hidden_size\": 40, \"moe_intermediate_size\": 24, "
         "\"n_routed_experts\": 8, \"num_experts_per_tok\": 8, \"norm_topk_prob\": true, "
         "\"routed_scaling_factor\": 2.5, \"n_shared_experts\": 0}",
         &checkpoint_deepseek_names, VKMOE_WEIGHT_F32, 40, 24},
        {"minimax-m2",
         "{\"model_type\": \"minimax_m2\", \"hidden_size\": 40, \"intermediate_size\": 24, "
         "\"num_local_experts\": 8, \"num_experts_per_tok\": 8}",
         &checkpoint_minimax_names, VKMOE_WEIGHT_BF16, 40, 24},
        {"qwen3-next",
         "{\"model_type\": \"qwen3_next\", \"hidden_size\": 40, \"moe_intermediate_size\": "
         "24, \"num_experts\": 8, \"num_experts_per_tok\": 8, \"norm_topk_prob\": true, "
         "\"shared_expert_intermediate_size\": 16}",
         &checkpoint_qwen_names, VKMOE_WEIGHT_F16, 40, 24},
        {"kimi-k2",
         "{\"model_type\": \"kimi_k2\", \"hidden_size\": 40, \"moe_intermediate_size\": 24, "
         "\"n_routed_experts\": 8, \"num_experts_per_tok\": 8, \"n_group\": 1, "
         "\"topk_group\": 1, \"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\", "
         "\"norm_topk_prob\": true, \"routed_scaling_factor\": 2.827, \"n_shared_experts\": 0}",
         &checkpoint_deepseek_names, VKMOE_WEIGHT_BF16, 40, 24},
    };
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(cases); i++) {
#if defined(__SANITIZE_ADDRESS__)
        if (i >= 2)
            break;
#endif
        test_seed(123 + i);
        vkmoe_layer_params p = test_shape(cases[i].dim, cases[i].ffn, 8, 0, 0);
        vkmoe_layer_params_family(&p, cases[i].family);
        p.weight_type = cases[i].type;
        p.top_k = p.top_k > 8 ? 8 : p.top_k; /* at most the 8 experts written */
        if (p.scale_expert_input) /* Llama 4's shared expert is as wide as a routed one */
            p.shared_ffn_dim = p.ffn_dim;
        if (p.shared_gate) /* Qwen3-Next's, as its config says */
            p.shared_ffn_dim = 16;
        test_layer t;
        checkpoint_weights(*state, p, &t);
        checkpoint_write_hf(work_dir, &t, cases[i].config, cases[i].names, 0, 1);
        float *x = test_input(11, p.dim);
        write_input(x, 11, p.dim, false);
        char args[1024];
        snprintf(args, sizeof(args), "--model '%s' --layer 0 --input '%s' --output '%s'", work_dir,
                 path_in("x.npy"), path_in("y.npy"));
        assert_int_equal(i == 0 ? run_validated(args) : run(args), 0);
        check_output(&t, x, 11);
        free(x);
        test_layer_destroy(&t);
    }
}

/* --layers all: a GGUF model of a dense layer and three MoE layers, x
 * through all three in order, equal bit for bit to the same chain through
 * the API; the progress bar and each layer's statistics. */
static void test_whole_model_through_the_tool(void **state)
{
    vkmoe_context *ctx = *state;
    test_seed(122);
    vkmoe_layer_params p = test_shape(32, 32, 16, 0, 0);
    p.shared_ffn_dim = 32;
    p.weight_type = p.down_weight_type = VKMOE_WEIGHT_Q8_0;
    vkmoe_layer_params_family(&p, "deepseek-v3");
    test_layer layers[4];
    const test_layer *present[4] = {NULL};
    for (int i = 1; i < 4; i++) {
        checkpoint_weights(ctx, p, &layers[i]);
        present[i] = &layers[i];
    }
    gguf_writer w = {0};
    checkpoint_deepseek_v3_meta(&w);
    gguf_add_u32(&w, "deepseek2.block_count", 4);
    gguf_add_u32(&w, "deepseek2.leading_dense_block_count", 1);
    checkpoint_write_gguf_model(path_in("model.gguf"), &w, present, 4, "deepseek2");
    float *x = test_input(9, 32), *want = malloc(9 * 32 * sizeof(float)), *y;
    float *x0 = malloc(9 * 32 * sizeof(float));
    memcpy(x0, x, 9 * 32 * sizeof(float));
    write_input(x, 9, 32, false);
    char args[1024];
    snprintf(args, sizeof(args), "--model '%s' --layers all --input '%s' --output '%s' --stats",
             path_in("model.gguf"), path_in("x.npy"), path_in("y.npy"));
    assert_int_equal(run_validated(args), 0);
    assert_true(file_contains("err.txt", "100% of"));
    assert_true(file_contains("err.txt", "ran 3 MoE layers of 4"));
    assert_true(file_contains("out.txt", "[{\"layer\": 1, \"stats\": {\"tokens\": 9"));
    assert_true(file_contains("out.txt", "{\"layer\": 3, \"stats\": "));

    vkmoe_model_params mp = {.max_tokens = 9};
    vkmoe_model *model;
    assert_int_equal(vkmoe_model_open(ctx, path_in("model.gguf"), &mp, &model), VKMOE_OK);
    for (uint32_t i = 1; i < 4; i++) {
        assert_int_equal(vkmoe_layer_forward(vkmoe_model_layer(model, i), 9, x, want), VKMOE_OK);
        memcpy(x, want, 9 * 32 * sizeof(float));
    }
    vkmoe_model_destroy(&model);
    uint32_t rows, cols;
    char error[256];
    if (!npy_read(path_in("y.npy"), &y, &rows, &cols, error, sizeof(error)))
        fail_msg("%s", error);
    assert_int_equal(rows, 9);
    assert_int_equal(cols, 32);
    assert_memory_equal(y, want, 9 * 32 * sizeof(float));
    /* the same bits with 7 of the 48 experts (3264 bytes each) on the
     * device, in slots the three layers share */
    free(y);
    assert_int_equal(remove(path_in("y.npy")), 0);
    char shared[1100];
    snprintf(shared, sizeof(shared), "%s --device-budget 23K --shared-cache", args);
    assert_int_equal(run_validated(shared), 0);
    if (!npy_read(path_in("y.npy"), &y, &rows, &cols, error, sizeof(error)))
        fail_msg("%s", error);
    assert_memory_equal(y, want, 9 * 32 * sizeof(float));
    /* --decode: a token at a time through the three layers, as the API
     * runs them on a model of one token; the shared slots' figures */
    write_input(x0, 9, 32, false);
    mp.max_tokens = 1;
    assert_int_equal(vkmoe_model_open(ctx, path_in("model.gguf"), &mp, &model), VKMOE_OK);
    for (uint32_t t = 0; t < 9; t++) {
        float row[32];
        memcpy(row, x0 + 32 * t, sizeof(row));
        for (uint32_t i = 1; i < 4; i++) {
            assert_int_equal(
                vkmoe_layer_forward(vkmoe_model_layer(model, i), 1, row, want + 32 * t), VKMOE_OK);
            memcpy(row, want + 32 * t, sizeof(row));
        }
    }
    vkmoe_model_destroy(&model);
    free(y);
    assert_int_equal(remove(path_in("y.npy")), 0);
    snprintf(shared, sizeof(shared), "%s --device-budget 23K --shared-cache --decode", args);
    assert_int_equal(run_validated(shared), 0);
    assert_true(file_contains("err.txt", "ran 3 MoE layers of 4, a token at a time in "));
    assert_true(file_contains("err.txt", " tokens/s)"));
    assert_true(file_contains("out.txt", "\"cache\": {\"slots\": 7, \"forwards\": 9, \"hits\": "));
    if (!npy_read(path_in("y.npy"), &y, &rows, &cols, error, sizeof(error)))
        fail_msg("%s", error);
    assert_memory_equal(y, want, 9 * 32 * sizeof(float));
    /* one layer or all, not both; "all" is the one word --layers takes */
    char both[1100];
    snprintf(both, sizeof(both), "%s --layer 1", args);
    assert_int_equal(run(both), 2);
    assert_int_equal(run("--model m --layers 3 --input a --output b"), 2);
    free(x);
    free(x0);
    free(y);
    free(want);
    for (int i = 1; i < 4; i++)
        test_layer_destroy(&layers[i]);
}

static void test_bad_usage_and_files(void **state)
{
    (void)state;
    char args[1024];
    assert_int_equal(run(""), 2);
    assert_int_equal(run("--model m --layer x --input a --output b"), 2);
    assert_int_equal(run("--model m --layer 1 --input a"), 2);
    assert_int_equal(run("--model m --layer 1 --input a --output b --bogus 1"), 2);
    assert_int_equal(run("--model m --layer 1 --input a --output b --gemm fast"), 2);
    snprintf(args, sizeof(args), "--model '%s' --layer 0 --input '%s' --output '%s'",
             path_in("absent"), path_in("absent.npy"), path_in("y.npy"));
    assert_int_equal(run(args), 1);
    byte_buffer b = {0};
    buffer_append(&b, "\x93NUMPY\x01\x00\x40\x00{'descr': '<i8'}", 27);
    assert_true(buffer_write_file(&b, path_in("x.npy")));
    buffer_free(&b);
    snprintf(args, sizeof(args), "--model '%s' --layer 0 --input '%s' --output '%s'",
             path_in("absent"), path_in("x.npy"), path_in("y.npy"));
    assert_int_equal(run(args), 1);
}

static bool file_contains(const char *name, const char *words)
{
    FILE *f = fopen(path_in(name), "rb");
    static char text[65536];
    size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    return strstr(text, words) != NULL;
}

/* D16: --help is a request, not a mistake: usage on stdout, exit 0. */
static void test_d16_help(void **state)
{
    (void)state;
    assert_int_equal(run("--help"), 0);
    assert_true(file_contains("out.txt", "usage: vkmoe-run"));
    assert_int_equal(run("-h"), 0);
    assert_int_equal(run("--bogus"), 2);
    assert_true(file_contains("err.txt", "usage: vkmoe-run"));
}

/* D2: a FIFO as --input is refused at once instead of blocking forever. */
static void test_d02_fifo_input(void **state)
{
    (void)state;
    unlink(path_in("x.npy"));
    assert_int_equal(mkfifo(path_in("x.npy"), 0600), 0);
    char args[1024];
    snprintf(args, sizeof(args), "--model '%s' --layer 0 --input '%s' --output '%s'",
             path_in("absent"), path_in("x.npy"), path_in("y.npy"));
    assert_int_equal(run(args), 1);
    assert_true(file_contains("err.txt", "not a regular file"));
    unlink(path_in("x.npy"));
}

/* Hostile .npy bytes: each refused with a message. */
static void test_npy_reader(void **state)
{
    (void)state;
    const struct {
        const char *bytes;
        size_t size;
        const char *words;
    } cases[] = {
        {"NUMPY", 5, "magic"},
        {"\x93NUMPY\x09\x00\x10\x00", 10, "version"},
        {"\x93NUMPY\x01\x00\xff\x00{}", 12, "past the end"},
        {"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'}", 26, "dtype"},
        {"\x93NUMPY\x01\x00\x36\x00{'descr': '<f4', 'fortran_order': True, 'shape': (2,)}", 64,
         "fortran"},
        {"\x93NUMPY\x01\x00\x3a\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,3,4)}", 68,
         "shape"},
        {"\x93NUMPY\x01\x00\x3b\x00{'descr': '<f4', 'fortran_order': False, 'shape': (99999,)}", 69,
         "shorter"},
        /* D14: a header cut short says so */
        {"\x93NUMPY\x01\x00\x17\x00{'descr': '<f4', 'fortr", 33, "truncated"},
        {"\x93NUMPY\x01\x00\x12\x00{'descr': '<f4', }", 28, "lacks"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        float *values = NULL;
        uint32_t rows, cols;
        char error[256] = "";
        assert_false(npy_parse((const uint8_t *)cases[i].bytes, cases[i].size, &values, &rows,
                               &cols, error, sizeof(error)));
        assert_null(values);
        if (!strstr(error, cases[i].words))
            fail_msg("case %zu: \"%s\" does not mention \"%s\"", i, error, cases[i].words);
    }
}

static int setup(void **state)
{
    if (!test_make_dir("vkmoe-test-run", work_dir, sizeof(work_dir)))
        return -1;
    return test_group_setup(state);
}

static int teardown(void **state)
{
    const char *names[] = {"config.json", "model.safetensors", "model.gguf", "x.npy",
                           "y.npy",       "out.txt",           "err.txt"};
    test_remove_dir(work_dir, names, VKMOE_ARRAY_SIZE(names));
    return test_group_teardown(state);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_run PATH-OF-vkmoe-run\n");
        return 1;
    }
    run_tool = argv[1];
    int gate = test_device_gate();
    if (gate)
        return gate;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint_through_the_tool),
        cmocka_unit_test(test_gguf_through_the_tool),
        cmocka_unit_test(test_whole_model_through_the_tool),
        cmocka_unit_test(test_new_families_through_the_tool),
        cmocka_unit_test(test_bad_usage_and_files),
        cmocka_unit_test(test_npy_reader),
        cmocka_unit_test(test_d02_fifo_input),
        cmocka_unit_test(test_d16_help),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
