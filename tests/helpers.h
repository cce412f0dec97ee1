/* Shared test fixtures: a validated context, random layers with their CPU
 * reference weights, and comparisons with stated tolerances. */
#ifndef VKMOE_TEST_HELPERS_H
#define VKMOE_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "layer.h" /* first: it brings volk.h, which must come before vulkan.h */

#include "fixture.h"
#include "reference.h"

/* Tolerance of f32 GPU results against the double reference (fixture.h). */
#define F32_TOLERANCE FIXTURE_F32_TOLERANCE

/* What main() returns before running anything: 0 to go on; with no usable
 * device 77 (Meson's skip), or 1 when CI=true, because CI must exercise a
 * real device and a skip there would hide a broken setup. */
int test_device_gate(void);
/* Whether the tests' contexts run under the validation layer: always,
 * unless VKMOE_TEST_VALIDATION=0 (the GPU check's machine, which has no
 * layer: ./dev gpu-check sets it there); CI and ./dev test never set it, so
 * a machine without the layer fails them. */
bool test_validation(void);
/* A context on the default device with the validation layer on (as
 * test_validation says) and new buffers poisoned
 * (vkmoe_context_options.poison_buffers); NULL and a message on stderr on
 * failure. */
vkmoe_context *test_context(void);
/* The same with other test options (poison_buffers is set regardless). */
vkmoe_context *test_context_with(vkmoe_context_options options);
/* test_context with host_huge_pages set. */
vkmoe_context *test_huge_pages_context(void);
/* What the run's environment adds to a test context's options:
 * VKMOE_TEST_NO_PUSH_DESCRIPTORS=1 (./dev test-gpu-av) sets
 * no_push_descriptors. The contexts above apply it. */
void test_options_from_environment(vkmoe_context_options *options);
/* Asserts the context saw no validation error, then destroys it. */
void test_context_destroy(vkmoe_context **ctx);
/* A file's suite on the device, as its main() returns it: test_device_gate
 * first, then the tests with cmocka's group setup and teardown. */
#define test_device_suite(tests, setup, teardown)                                                  \
    test_run_device_suite(#tests, tests, sizeof(tests) / sizeof((tests)[0]), setup, teardown)
int test_run_device_suite(const char *name, const struct CMUnitTest *tests, size_t count,
                          CMFixtureFunction setup, CMFixtureFunction teardown);
/* The Vulkan objects of host's context, to import into another. */
vkmoe_vulkan_import test_import_of(const vkmoe_context *host);
/* cmocka group setup/teardown that keep one context in *state. */
int test_group_setup(void **state);
int test_group_teardown(void **state);

/* A new private folder under $TMPDIR (or /tmp) named after prefix, in dir
 * (size bytes); false if it cannot be made. test_remove_dir deletes the
 * listed files in it, then the folder. */
bool test_make_dir(const char *prefix, char *dir, size_t size);
void test_remove_dir(const char *dir, const char *const *names, size_t count);

/* Deterministic pseudo-random numbers (xorshift), uniform in [lo, hi). */
void test_seed(uint64_t seed);
/* Whether the loops over every weight type run this type. Under
 * ThreadSanitizer (the threads suite) f16 and Q4_K only. Under
 * AddressSanitizer (CI's second run of the suite) they take f16, Q4_K and
 * MXFP4 (16-bit rows, super-blocks, 17-byte blocks): the host code a layer runs
 * is the same for every type, test_quantize runs every codec there, and
 * each type costs minutes of sanitized quantizing and pipeline compiles. */
bool test_weight_type_in_run(vkmoe_weight_type type);
float test_uniform(float lo, float hi);
void test_fill(float *v, size_t n, float lo, float hi);

/* A layer and the f32 weights it was given: the fixture's random layer
 * (fixture.h), its seed drawn from test_seed's stream. */
typedef fixture_layer test_layer;

/* The params most tests start from: a shape, everything else left to its
 * default (0). */
vkmoe_layer_params test_shape(uint32_t dim, uint32_t ffn, uint32_t experts, uint32_t top_k,
                              uint32_t max_tokens);

/* Create a layer with random weights (scaled so activations stay O(1)),
 * then upload them with test_layer_upload (tests may edit them between). */
void test_layer_create(vkmoe_context *ctx, const vkmoe_layer_params *params, test_layer *out);
void test_layer_upload(test_layer *t);
/* test_seed(seed), then both of those. */
void test_layer_seeded(vkmoe_context *ctx, const vkmoe_layer_params *params, uint64_t seed,
                       test_layer *out);
/* Expert parallelism: which experts the placement ([experts][ranks];
 * NULL: contiguous blocks) gives rank `rank`, into held ([experts]). */
void test_held_experts(const uint8_t *placement, uint32_t experts, uint32_t ranks, uint32_t rank,
                       uint8_t *held);
/* A layer of params (t's, changed where the test needs: a budget, held
 * experts) on ctx with t's weights set. */
vkmoe_layer *test_twin_of(vkmoe_context *ctx, const test_layer *t,
                          const vkmoe_layer_params *params);
/* The twin holding those experts (params.held_experts; NULL: every
 * expert, as a plain layer). */
vkmoe_layer *test_shard_of(vkmoe_context *ctx, const test_layer *t, const uint8_t *held);
void test_layer_destroy(test_layer *t);
/* Random inputs x [tokens][dim] in [-1, 1). */
float *test_input(uint32_t tokens, uint32_t dim);

/* A command pool of the context's queue family and a command buffer from
 * it, recording: an application's own, for vkmoe_layer_record_forward. */
VkCommandBuffer test_commands_begin(vkmoe_context *ctx, VkCommandPool *pool);
/* End cmd, submit it, wait for the queue, destroy the pool (and cmd). */
void test_commands_run(vkmoe_context *ctx, VkCommandPool pool, VkCommandBuffer cmd);

/* Run a forward and compare it with the reference within fixture_tolerance. */
void test_check_forward(test_layer *t, uint32_t tokens, const float *x);
/* A layer of these params with random weights and inputs, checked so. */
void test_check_layer(vkmoe_context *ctx, vkmoe_layer_params params, uint32_t tokens);
/* vkmoe_layer_create refuses params with this status, leaves the layer
 * NULL, and its message mentions `words`. */
void test_expect_create_fails(vkmoe_context *ctx, const vkmoe_layer_params *params,
                              vkmoe_status status, const char *words);
/* Everything a forward leaves in the layer's scratch, read back so that
 * each stage can be checked against its reference on the GPU's own input
 * to that stage. */
typedef struct test_intermediates {
    uint32_t tokens, slots, max_rows, max_tiles, ld_ffn, blocks;
    uint32_t *ids, *block_offsets, *expert_base, *tile_expert, *row_slot, *slot_row;
    uint32_t dispatch[6];
    float *topk_weight, *hidden, *expert_out, *y;
} test_intermediates;

void test_run_intermediates(test_layer *t, uint32_t tokens, const float *x,
                            test_intermediates *out);
void test_intermediates_free(test_intermediates *m);

/* A layer with random weights and inputs, one forward, its intermediates:
 * the set-up every stage test starts from. test_staged_free undoes it. */
typedef struct test_staged {
    test_layer layer;
    float *x;
    test_intermediates m;
} test_staged;
void test_staged_run(vkmoe_context *ctx, const vkmoe_layer_params *params, uint32_t tokens,
                     test_staged *out);
void test_staged_free(test_staged *s);
#endif
