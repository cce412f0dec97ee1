/* vkmoe-bench's command line (issue 19, D15): malformed values are usage
 * errors (exit 2, the option named on stderr), never dropped or read as
 * something else; --help is usage on stdout, exit 0. None of these reach a
 * device. argv[1] is the vkmoe-bench executable. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static const char *bench;
static char err_path[256], out_path[256];

/* Runs the bench with args; its exit status. */
static int run(const char *args)
{
    char command[4096];
    snprintf(command, sizeof(command), "'%s' %s > '%s' 2> '%s'", bench, args, out_path, err_path);
    int status = system(command);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool contains(const char *path, const char *words)
{
    FILE *f = fopen(path, "rb");
    char text[8192] = "";
    size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    return strstr(text, words) != NULL;
}

static void test_d15_malformed_values(void **state)
{
    (void)state;
    char many[256] = "--tokens 1";
    for (int i = 2; i <= 33; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), ",%d", i);
    const char *cases[] = {
        many,
        "--tokens 64,",
        "--tokens ,64",
        "--tokens 1,,2",
        "--tokens 0",
        "--tokens -5",
        "--tokens 8x",
        "--tokens ' 8'",
        "--warmup abc",
        "--warmup 3x",
        "--warmup -1",
        "--iters 0",
        "--dim 12abc",
        "--scale abc",
        "--scale 0.5x",
        "--scale 2",
        "--experts",
        "--bogus",
        "--io q8_0",
        "--io",
        "--device-budget 0",
        "--device-budget 12Q",
        "--device-budget 101%",
        "--routing-skew 0",
        "--routing-skew 9",
        "--cache-policy mru",
        "--cpu-experts x",
        "--trace",
        "--back-to-back 0",
        "--back-to-back 4097",
        "--back-to-back",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = run(cases[i]);
        if (rc != 2 || !contains(err_path, "usage: vkmoe-bench"))
            fail_msg("vkmoe-bench %s: exit %d, expected 2 with usage", cases[i], rc);
    }
    assert_int_equal(run(many), 2);
    assert_true(contains(err_path, "at most 32"));
}

/* --expert-parallel's own refusals, before any device: a placement
 * without it, layers it cannot shard, a placement file that does not
 * place every expert on a rank that exists (under MPI's singleton start
 * where vkmoe has MPI, else the refusal of a build without it). */
static void test_expert_parallel_usage(void **state)
{
    (void)state;
    assert_int_equal(run("--placement x.txt"), 2);
    assert_true(contains(err_path, "--placement and --micro-batches go with --expert-parallel"));
    assert_int_equal(run("--micro-batches 2"), 2);
    assert_int_equal(run("--expert-parallel --micro-batches 65"), 2);
    assert_true(contains(err_path, "usage: vkmoe-bench"));
    assert_int_equal(run("--expert-parallel --device-budget 50%"), 2);
    assert_true(contains(err_path, "no --device-budget"));
    char path[300];
    snprintf(path, sizeof(path), "%s.placement", out_path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# two experts, one rank\n0\n0 5\n", f);
    fclose(f);
    char args[512];
    snprintf(args, sizeof(args), "--expert-parallel --experts 2 --placement '%s'", path);
    assert_int_equal(run(args), 2);
    assert_true(contains(err_path, ":3: expected the ranks (0..0) holding expert 1") ||
                contains(err_path, "needs a vkmoe built with MPI"));
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("0\n", f);
    fclose(f);
    assert_int_equal(run(args), 2);
    assert_true(contains(err_path, "1 experts placed, the layer has 2") ||
                contains(err_path, "needs a vkmoe built with MPI"));
    remove(path);
}

/* --back-to-back records forwards of a layer that holds its experts on
 * the device, before any device is opened. */
static void test_back_to_back_usage(void **state)
{
    (void)state;
    const char *cases[] = {
        "--back-to-back 2 --device-budget 50%", "--back-to-back 2 --cpu-experts 1",
        "--back-to-back 2 --routing-skew 1.2", "--back-to-back 2 --expert-parallel"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = run(cases[i]);
        if (rc != 2 || !contains(err_path, "--back-to-back records forwards of a layer"))
            fail_msg("vkmoe-bench %s: exit %d, expected 2 with --back-to-back's refusal", cases[i],
                     rc);
    }
}

static void test_help(void **state)
{
    (void)state;
    assert_int_equal(run("--help"), 0);
    assert_true(contains(out_path, "usage: vkmoe-bench"));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_bench_usage PATH-OF-vkmoe-bench\n");
        return 2;
    }
    bench = argv[1];
    const char *tmp = getenv("TMPDIR");
    snprintf(err_path, sizeof(err_path), "%s/vkmoe-bench-usage-%d.err", tmp ? tmp : "/tmp",
             (int)getpid());
    snprintf(out_path, sizeof(out_path), "%s/vkmoe-bench-usage-%d.out", tmp ? tmp : "/tmp",
             (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_d15_malformed_values),
        cmocka_unit_test(test_expert_parallel_usage),
        cmocka_unit_test(test_back_to_back_usage),
        cmocka_unit_test(test_help),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    remove(err_path);
    remove(out_path);
    return failed;
}
