/* Stages 2-4 (count, scan, scatter): the GPU's plan of rows and tiles must
 * equal vkmoe_ref_bucket on the GPU's own expert choices, exactly. */
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static void check_plan(test_layer *t, const test_intermediates *m)
{
    uint32_t experts = t->params.experts, tile = t->layer->gemm.tile_m;
    uint32_t *count = calloc(experts, 4), *base = calloc(experts, 4);
    uint32_t *row_slot = malloc((size_t)m->max_rows * 4), *slot_row = malloc((size_t)m->slots * 4);
    uint32_t *tile_expert = malloc((size_t)m->max_tiles * 4);
    uint32_t top_k = t->params.top_k;
    uint32_t capacity = vkmoe_params_capacity(&t->params, m->tokens);
    uint32_t rows = vkmoe_ref_bucket(m->ids, m->tokens, top_k, experts, capacity, tile, m->max_rows,
                                     count, base, row_slot, slot_row, tile_expert);
    assert_true(rows <= m->max_rows);
    assert_memory_equal(m->expert_base, base, experts * 4);
    assert_memory_equal(m->slot_row, slot_row, (size_t)m->slots * 4);
    assert_memory_equal(m->row_slot, row_slot, (size_t)rows * 4);
    assert_memory_equal(m->tile_expert, tile_expert, (size_t)m->max_tiles * 4);
    /* The scanned block counts: an exclusive prefix over [expert][block],
     * blocks holding slots in priority order q = j·tokens + t. */
    uint32_t running = 0;
    for (uint32_t e = 0; e < experts; e++)
        for (uint32_t b = 0; b < m->blocks; b++) {
            assert_int_equal(m->block_offsets[e * m->blocks + b], running);
            for (uint32_t q = b * VKMOE_BLOCK_SLOTS;
                 q < m->slots && q < (b + 1) * VKMOE_BLOCK_SLOTS; q++)
                running += m->ids[q % m->tokens * top_k + q / m->tokens] == e;
        }
    assert_int_equal(running, m->slots);
    uint32_t used_tiles = rows / tile;
    assert_int_equal(m->dispatch[1] * (m->dispatch[2] - 1) < used_tiles || used_tiles == 0, 1);
    assert_true((uint64_t)m->dispatch[1] * m->dispatch[2] >= used_tiles);
    uint32_t counts[VKMOE_MAX_EXPERTS];
    assert_int_equal(vkmoe_layer_expert_counts(t->layer, counts, VKMOE_MAX_EXPERTS), VKMOE_OK);
    assert_memory_equal(counts, count, experts * 4);
    free(count);
    free(base);
    free(row_slot);
    free(slot_row);
    free(tile_expert);
}

/* Returns the number of slots the plan dropped; the forward's dispatches
 * into *dispatches if given. The GEMMs' path is pinned to the register
 * path, so that the counts differ only by the bucketing: AUTO's GEMV path on
 * a GPU saves other dispatches at up to 16 tokens (the logits read x, and
 * one token's combine runs in gemm_down). */
static uint32_t run_plan_counted(void **state, uint32_t experts, uint32_t top_k, uint32_t tokens,
                                 uint32_t forward_tokens, float capacity_factor,
                                 uint64_t *dispatches)
{
    vkmoe_layer_params p = test_shape(8, 8, experts, top_k, tokens);
    p.capacity_factor = capacity_factor;
    p.gemm_path = VKMOE_GEMM_REGISTER;
    test_staged run;
    test_staged_run(*state, &p, forward_tokens, &run);
    check_plan(&run.layer, &run.m);
    uint32_t dropped = 0;
    for (uint32_t s = 0; s < run.m.slots; s++)
        dropped += run.m.slot_row[s] == VKMOE_INVALID;
    if (dispatches)
        *dispatches = run.layer.layer->io.recorded.dispatches;
    test_staged_free(&run);
    return dropped;
}

static uint32_t run_plan_with_capacity(void **state, uint32_t experts, uint32_t top_k,
                                       uint32_t tokens, uint32_t forward_tokens,
                                       float capacity_factor)
{
    return run_plan_counted(state, experts, top_k, tokens, forward_tokens, capacity_factor, NULL);
}

static void run_plan(void **state, uint32_t experts, uint32_t top_k, uint32_t tokens,
                     uint32_t forward_tokens)
{
    assert_int_equal(run_plan_with_capacity(state, experts, top_k, tokens, forward_tokens, 0), 0);
}

static void test_small_plans(void **state)
{
    test_seed(40);
    run_plan(state, 5, 2, 37, 37);
    run_plan(state, 1, 1, 3, 1);
    run_plan(state, 13, 13, 20, 20);
    run_plan(state, 64, 6, 500, 123);
}

/* Capacities that drop slots, over one block and over several, and one
 * large enough to keep every slot. */
static void test_capacity_plans(void **state)
{
    test_seed(43);
    assert_true(run_plan_with_capacity(state, 5, 2, 37, 37, 0.5f) > 0);
    assert_true(run_plan_with_capacity(state, 8, 1, 300, 300, 1.0f) > 0);
    assert_true(run_plan_with_capacity(state, 64, 6, 600, 600, 1.25f) > 0);
    assert_int_equal(run_plan_with_capacity(state, 7, 3, 100, 64, 7.0f), 0);
}

/* Where a forward's slots fit one block (decode), the scan stage buckets
 * them in one dispatch (count and scatter record nothing): the same plan, at
 * the boundary and past it, with k = E, one expert and a capacity. */
static void test_one_dispatch_bucketing(void **state)
{
    test_seed(44);
    uint64_t one_block, two_blocks, single, capped;
    run_plan_counted(state, 8, 2, 129, 128, 0, &one_block); /* 256 slots */
    run_plan_counted(state, 8, 2, 129, 129, 0, &two_blocks);
    assert_int_equal(two_blocks - one_block, 2);
    run_plan_counted(state, 1, 1, 3, 2, 0, &single);
    assert_int_equal(single, one_block);
    run_plan(state, 7, 7, 36, 36); /* 252 slots, k = E */
    assert_true(run_plan_counted(state, 9, 3, 85, 85, 0.5f, &capped) > 0);
    assert_int_equal(capped, one_block);
}

/* One token routed by the layer: its router buckets the slots (the scan
 * records nothing), the same plan with one dispatch fewer than the scan's
 * one-block bucketing; one expert, k = E, 2048 experts at k 32, a capacity
 * (of one token: at least 1, so nothing drops), and a forward after one of
 * many tokens, whose plan it must overwrite wholly. */
static void test_router_bucketing(void **state)
{
    test_seed(46);
    uint64_t two_tokens, one_token;
    run_plan_counted(state, 8, 2, 129, 2, 0, &two_tokens);
    run_plan_counted(state, 8, 2, 129, 1, 0, &one_token);
    assert_int_equal(two_tokens - one_token, 1);
    run_plan(state, 1, 1, 3, 1);
    run_plan(state, 7, 7, 36, 1);
    run_plan(state, 2048, 32, 8, 1);
    assert_int_equal(run_plan_with_capacity(state, 64, 6, 100, 1, 0.01f), 0);

    vkmoe_layer_params p = test_shape(8, 8, 40, 3, 300);
    test_staged run;
    test_staged_run(*state, &p, 300, &run);
    test_intermediates_free(&run.m);
    test_run_intermediates(&run.layer, 1, run.x, &run.m);
    check_plan(&run.layer, &run.m);
    test_staged_free(&run);
}

/* Several scan tiles, and a scan of the tile sums in more than one pass:
 * 512 experts x 2048+ blocks > 1024 scan tiles. */
static void test_device_wide_scan(void **state)
{
    test_seed(41);
    run_plan(state, 300, 8, 20000, 20000);
    run_plan(state, 512, 8, 65600, 65600);
}

/* 2048 experts at k 32: the one-dispatch plan (8 tokens, 256 slots) and the
 * device-wide one, with and without a capacity. */
static void test_largest_expert_counts(void **state)
{
    test_seed(45);
    run_plan(state, 2048, 32, 8, 8);
    run_plan(state, 2048, 32, 150, 150);
    assert_true(run_plan_with_capacity(state, 2048, 32, 150, 150, 0.5f) > 0);
}

/* The largest forward the layer accepts: 2^22 slots (k = 16); the GEMM grids
 * need more than 65535 row tiles. Few experts keep the router cheap on
 * lavapipe; 512 experts are covered above. */
static void test_largest_slot_count(void **state)
{
    test_seed(42);
    run_plan(state, 16, 16, (1u << 22) / 16, (1u << 22) / 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_plans),
        cmocka_unit_test(test_capacity_plans),
        cmocka_unit_test(test_one_dispatch_bucketing),
        cmocka_unit_test(test_router_bucketing),
        cmocka_unit_test(test_device_wide_scan),
        cmocka_unit_test(test_largest_expert_counts),
        cmocka_unit_test(test_largest_slot_count),
    };
    return test_device_suite(tests, test_group_setup, test_group_teardown);
}
