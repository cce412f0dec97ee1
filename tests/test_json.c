/* The JSON reader on what real files hold and on what hostile ones might. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

static bool parse(const char *text, vkmoe_json *root)
{
    char error[256];
    return vkmoe_json_parse(text, strlen(text), root, error, sizeof(error));
}

static void test_config_like_document(void **state)
{
    (void)state;
    vkmoe_json root;
    assert_true(parse(
        " {\"model_type\": \"deepseek_v3\", \"n_group\": 8, \"x\": [1, 2.5e1, -3],"
        " \"norm_topk_prob\": true, \"rope\": null, \"s\": \"a\\\"\\u00e9\\ud83d\\ude00\\n\"}\n",
        &root));
    assert_string_equal(vkmoe_json_get(&root, "model_type")->string, "deepseek_v3");
    uint64_t groups;
    assert_true(vkmoe_json_get_u64(&root, "n_group", 16, &groups));
    assert_int_equal(groups, 8);
    assert_false(vkmoe_json_get_u64(&root, "n_group", 7, &groups)); /* over max */
    const vkmoe_json *x = vkmoe_json_get(&root, "x");
    assert_int_equal(x->count, 3);
    assert_true(x->children[1].number == 25.0);
    assert_false(vkmoe_json_as_u64(&x->children[2], 100, &groups)); /* negative */
    assert_true(vkmoe_json_get(&root, "norm_topk_prob")->boolean);
    assert_int_equal(vkmoe_json_get(&root, "rope")->type, VKMOE_JSON_NULL);
    assert_string_equal(vkmoe_json_get(&root, "s")->string, "a\"\xc3\xa9\xf0\x9f\x98\x80\n");
    assert_null(vkmoe_json_get(&root, "absent"));
    assert_null(vkmoe_json_get(x, "model_type")); /* not an object */
    vkmoe_json_free(&root);
}

static void test_malformed_documents(void **state)
{
    (void)state;
    const char *bad[] = {
        "",          "{",           "}",           "{\"a\" 1}",    "{\"a\":}",       "[1,]",
        "[1 2]",     "{\"a\":1,}",  "tru",         "nul",          "\"unterminated", "\"\\x\"",
        "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\u0000\"",  "\"tab\there\"",  "1e999",
        "--1",       "{} {}",       "[\"\\",       "{\"a\":[1,2}", "{1:2}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vkmoe_json root;
        char error[256] = "";
        assert_false(vkmoe_json_parse(bad[i], strlen(bad[i]), &root, error, sizeof(error)));
        assert_non_null(strstr(error, "JSON at byte"));
    }
    /* A NUL byte inside the text does not end it early. */
    vkmoe_json root;
    char error[256];
    assert_false(vkmoe_json_parse("{\"a\":\"b\0\"}", 10, &root, error, sizeof(error)));
}

static void test_nesting_is_bounded(void **state)
{
    (void)state;
    char deep[2 * (VKMOE_JSON_MAX_DEPTH + 2) + 1];
    size_t n = VKMOE_JSON_MAX_DEPTH + 2;
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    vkmoe_json root;
    char error[256];
    assert_false(vkmoe_json_parse(deep, 2 * n, &root, error, sizeof(error)));
    assert_non_null(strstr(error, "nested"));
    n = VKMOE_JSON_MAX_DEPTH;
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    assert_true(vkmoe_json_parse(deep, 2 * n, &root, error, sizeof(error)));
    vkmoe_json_free(&root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_like_document),
        cmocka_unit_test(test_malformed_documents),
        cmocka_unit_test(test_nesting_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
