/* Every model family's whole layer against the CPU reference, at its real
 * ratios of experts, k and groups with small widths; capacity; the params
 * and uploads each family needs, and every bad combination. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static vkmoe_layer_params family(const char *name, uint32_t experts, uint32_t shared_ffn,
                                 uint32_t tokens)
{
    vkmoe_layer_params p = test_shape(67, 45, experts, 0, tokens);
    p.shared_ffn_dim = shared_ffn;
    assert_int_equal(vkmoe_layer_params_family(&p, name), VKMOE_OK);
    return p;
}

static void test_mixtral_qwen3_olmoe(void **state)
{
    test_seed(80);
    vkmoe_layer_params p = family("mixtral", 8, 0, 30);
    p.top_k = 2;
    test_check_layer(*state, p, 30);
    p = family("qwen3-moe", 128, 0, 20);
    p.top_k = 8;
    test_check_layer(*state, p, 20);
    p = family("olmoe", 64, 0, 20);
    p.top_k = 8;
    test_check_layer(*state, p, 20);
}

/* Qwen1.5-MoE: 60 experts, k 4, no renormalisation, a gated shared expert
 * four times an expert's width. */
static void test_qwen2_moe(void **state)
{
    test_seed(81);
    vkmoe_layer_params p = family("qwen2-moe", 60, 180, 40);
    p.top_k = 4;
    test_check_layer(*state, p, 40);
}

/* DeepSeek-V3: E 256, k 8, 8 groups keep 4, one shared expert. */
static void test_deepseek_v3(void **state)
{
    test_seed(82);
    test_check_layer(*state, family("deepseek-v3", 256, 45, 24), 24);
}

/* DeepSeek-V2: E 160, k 6, 8 groups keep 3, two shared experts. */
static void test_deepseek_v2(void **state)
{
    test_seed(83);
    test_check_layer(*state, family("deepseek-v2", 160, 90, 24), 24);
}

/* GPT-OSS: router bias, top-k then softmax, clamped SwiGLU with biases. */
static void test_gpt_oss(void **state)
{
    test_seed(84);
    test_check_layer(*state, family("gpt-oss", 32, 0, 33), 33);
}

/* Switch (top-1, ReLU experts) and GShard (top-2) at capacity factor 1:
 * random routing overfills some experts, whose extra slots are dropped. */
static void test_switch_and_gshard_drop(void **state)
{
    test_seed(85);
    test_check_layer(*state, family("switch", 16, 0, 100), 100);
    test_check_layer(*state, family("gshard", 16, 0, 100), 100);
    vkmoe_layer_params p = family("switch", 8, 0, 64);
    p.capacity_factor = 0.25f; /* 2 slots per expert: most tokens dropped */
    test_check_layer(*state, p, 64);
}

/* A capacity that drops nothing changes nothing: bit-identical to dropless. */
static void test_capacity_without_drops(void **state)
{
    test_seed(86);
    vkmoe_layer_params p = family("gshard", 6, 0, 50);
    p.capacity_factor = 0;
    test_layer dropless;
    test_layer_create(*state, &p, &dropless);
    test_layer_upload(&dropless);
    p.capacity_factor = 3.0f; /* 50 slots per expert = every token */
    vkmoe_layer *capped;
    assert_int_equal(vkmoe_layer_create(*state, &p, &capped), VKMOE_OK);
    test_layer swap = dropless;
    swap.layer = capped;
    test_layer_upload(&swap);
    size_t n = 50 * (size_t)p.dim;
    float *x = test_input(50, p.dim), *y1 = malloc(n * 4), *y2 = malloc(n * 4);
    assert_int_equal(vkmoe_layer_forward(dropless.layer, 50, x, y1), VKMOE_OK);
    assert_int_equal(vkmoe_layer_forward(capped, 50, x, y2), VKMOE_OK);
    assert_memory_equal(y1, y2, n * 4);
    vkmoe_layer_destroy(&capped);
    free(x);
    free(y1);
    free(y2);
    test_layer_destroy(&dropless);
}

static void expect_create_fails(vkmoe_context *ctx, const vkmoe_layer_params *p, const char *words)
{
    test_expect_create_fails(ctx, p, VKMOE_ERROR_INVALID_ARGUMENT, words);
}

static void test_bad_routing_params(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params good = family("deepseek-v3", 64, 0, 4), p;
#define BAD(field, value, words) (p = good, p.field = value, expect_create_fails(ctx, &p, words))
    BAD(top_k, 65, "top_k");
    BAD(topk_groups, 9, "topk_groups");
    BAD(expert_groups, 7, "expert_groups");
    BAD(expert_groups, 128, "expert_groups"); /* over 64 */
    BAD(capacity_factor, -1.0f, "capacity_factor");
    BAD(capacity_factor, NAN, "capacity_factor");
    BAD(routed_scaling_factor, -2.5f, "routed_scaling_factor");
    BAD(routed_scaling_factor, INFINITY, "routed_scaling_factor");
    BAD(router, (vkmoe_router_type)3, "router");
    BAD(activation, (vkmoe_activation)3, "activation");
    BAD(gemm_path, (vkmoe_gemm_path)5, "gemm_path");
    assert_string_equal(vkmoe_gemm_path_name(VKMOE_GEMM_REGISTER), "register");
    assert_string_equal(vkmoe_gemm_path_name(VKMOE_GEMM_COOPMAT), "coopmat");
    assert_string_equal(vkmoe_gemm_path_name(VKMOE_GEMM_GEMV), "gemv");
    assert_null(vkmoe_gemm_path_name((vkmoe_gemm_path)5));
    vkmoe_gemm_path path = VKMOE_GEMM_AUTO;
    assert_int_equal(vkmoe_gemm_path_parse("tiled", &path), VKMOE_OK);
    assert_int_equal(path, VKMOE_GEMM_TILED);
    assert_int_equal(vkmoe_gemm_path_parse("fast", &path), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkmoe_last_error(), "fast"));
    assert_int_equal(path, VKMOE_GEMM_TILED);
    assert_int_equal(vkmoe_gemm_path_parse(NULL, &path), VKMOE_ERROR_INVALID_ARGUMENT);
    BAD(shared_gate, true, "shared_gate");
    BAD(swiglu_limit, -1.0f, "swiglu_limit");
    p = good;
    p.router = VKMOE_ROUTER_TOPK_SOFTMAX; /* softmax over the chosen: no bias to choose by */
    expect_create_fails(ctx, &p, "selection_bias");
    p = good;
    p.topk_groups = 1; /* one group of 8 experts cannot give 9 */
    p.top_k = 9;
    expect_create_fails(ctx, &p, "kept groups");
    p = good;
    p.experts = p.expert_groups = p.topk_groups = 16; /* groups of one expert have no second best */
    expect_create_fails(ctx, &p, "two best");
#undef BAD
    vkmoe_layer_params q = {0};
    assert_int_equal(vkmoe_layer_params_family(&q, "llama"), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(vkmoe_last_error(), "llama"));
    assert_int_equal(vkmoe_layer_params_family(NULL, "mixtral"), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_params_family(&q, NULL), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_params_of(NULL, &q), VKMOE_ERROR_INVALID_ARGUMENT);
}

/* A weight type the device cannot read (a driver without uniform texel
 * buffers of R32_UINT, say) is refused by name, not run into garbage. */
static void test_unreadable_weight_type(void **state)
{
    (void)state;
    vkmoe_context *ctx =
        test_context_with((vkmoe_context_options){.hidden_weight_types = 1u << VKMOE_WEIGHT_Q4_K});
    assert_non_null(ctx);
    vkmoe_layer_params p = test_shape(256, 256, 4, 2, 0);
    p.weight_type = VKMOE_WEIGHT_Q4_K;
    test_expect_create_fails(ctx, &p, VKMOE_ERROR_UNSUPPORTED, "cannot read q4_k weights");
    vkmoe_layer *layer;
    p.weight_type = VKMOE_WEIGHT_Q6_K;
    assert_int_equal(vkmoe_layer_create(ctx, &p, &layer), VKMOE_OK);
    vkmoe_layer_destroy(&layer);
    test_context_destroy(&ctx);
}

/* Uploads a layer does not have are refused; a forward names the first
 * upload it still lacks. */
static void test_uploads_follow_params(void **state)
{
    vkmoe_context *ctx = *state;
    vkmoe_layer_params p = family("switch", 4, 0, 2);
    p.dim = 8;
    p.ffn_dim = 8;
    vkmoe_layer *layer;
    assert_int_equal(vkmoe_layer_create(ctx, &p, &layer), VKMOE_OK);
    float w[64] = {0}, x[16] = {0}, y[16];
    assert_int_equal(vkmoe_layer_set_expert(layer, 0, VKMOE_EXPERT_GATE, w, 256),
                     VKMOE_ERROR_INVALID_ARGUMENT); /* ReLU: no gate */
    assert_int_equal(vkmoe_layer_set_router_bias(layer, w, 16), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_selection_bias(layer, w, 16), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_shared_gate(layer, w, 32), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_shared_expert(layer, VKMOE_EXPERT_UP, w, 256),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_expert_bias(layer, 0, VKMOE_EXPERT_UP, w, 32),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_router(layer, w, 4 * 8 * 4), VKMOE_OK);
    for (uint32_t e = 0; e < 4; e++) {
        assert_int_equal(vkmoe_layer_set_expert(layer, e, VKMOE_EXPERT_UP, w, 256), VKMOE_OK);
        if (e < 3)
            assert_int_equal(vkmoe_layer_set_expert(layer, e, VKMOE_EXPERT_DOWN, w, 256), VKMOE_OK);
    }
    assert_int_equal(vkmoe_layer_forward(layer, 2, x, y), VKMOE_ERROR_STATE);
    assert_non_null(strstr(vkmoe_last_error(), "expert 3's down matrix"));
    assert_int_equal(vkmoe_layer_set_expert(layer, 3, VKMOE_EXPERT_DOWN, w, 256), VKMOE_OK);
    assert_int_equal(vkmoe_layer_forward(layer, 2, x, y), VKMOE_OK);
    vkmoe_layer_destroy(&layer);

    p = family("gpt-oss", 4, 0, 2);
    assert_int_equal(vkmoe_layer_create(ctx, &p, &layer), VKMOE_OK);
    assert_int_equal(vkmoe_layer_set_router_bias(layer, w, 12), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_router_bias(layer, NULL, 16), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_router_bias(NULL, w, 16), VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_expert_bias(layer, 4, VKMOE_EXPERT_UP, w, 45 * 4),
                     VKMOE_ERROR_INVALID_ARGUMENT);
    assert_int_equal(vkmoe_layer_set_expert_bias(layer, 0, VKMOE_EXPERT_DOWN, w, 45 * 4),
                     VKMOE_ERROR_INVALID_ARGUMENT); /* down bias has dim = 67 values */
    assert_int_equal(vkmoe_layer_forward(layer, 1, x, y), VKMOE_ERROR_STATE);
    assert_non_null(strstr(vkmoe_last_error(), "router"));
    vkmoe_layer_destroy(&layer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixtral_qwen3_olmoe),
        cmocka_unit_test(test_qwen2_moe),
        cmocka_unit_test(test_deepseek_v3),
        cmocka_unit_test(test_deepseek_v2),
        cmocka_unit_test(test_gpt_oss),
        cmocka_unit_test(test_switch_and_gshard_drop),
        cmocka_unit_test(test_capacity_without_drops),
        cmocka_unit_test(test_bad_routing_params),
        cmocka_unit_test(test_unreadable_weight_type),
        cmocka_unit_test(test_uploads_follow_params),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
