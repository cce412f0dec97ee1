/* Threads (issue 19, D7): different contexts are independent, as the header
 * promises, so contexts made and used on several threads at once give
 * each thread the same results as one thread alone, and each thread keeps
 * its own last error. The ThreadSanitizer build (./dev test-tsan) runs
 * this suite to check that nothing is shared without synchronisation;
 * contexts used to write volk's process-global function pointers. And the
 * CPU experts' pool (thread_pool.h): a run's work all done when it
 * returns, no task started after. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"
#include "thread_pool.h"

#define THREADS 3
#define DIM 24
#define FFN 16
#define EXPERTS 4
#define TOKENS 5

typedef struct job {
    uint32_t id;
    float y[TOKENS * DIM];
    vkmoe_status status;
    bool own_message; /* vkmoe_last_error() named this thread's failure */
} job;

/* Weights and inputs from the index alone, the same on every thread. */
static float pattern(uint32_t i, uint32_t salt)
{
    uint32_t h = (i + 1) * 2654435761u ^ salt * 40503u;
    return (float)(h % 2001) / 1000.0f - 1.0f;
}

static vkmoe_status upload(vkmoe_layer *layer)
{
    float router[EXPERTS * DIM];
    for (uint32_t i = 0; i < EXPERTS * DIM; i++)
        router[i] = pattern(i, 1);
    vkmoe_status status = vkmoe_layer_set_router(layer, router, sizeof(router));
    for (uint32_t e = 0; e < EXPERTS && status == VKMOE_OK; e++)
        for (uint32_t m = 0; m < 3 && status == VKMOE_OK; m++) {
            float local[FFN * DIM];
            for (uint32_t i = 0; i < FFN * DIM; i++)
                local[i] = 0.2f * pattern(i, 10 * e + m + 2);
            status = vkmoe_layer_set_expert(layer, e, (vkmoe_expert_matrix)m, local, sizeof(local));
        }
    return status;
}

static void *run_job(void *arg)
{
    job *j = arg;
    uint32_t devices = 0;
    vkmoe_context *ctx = NULL;
    vkmoe_layer *layer = NULL;
    vkmoe_layer_params p = test_shape(DIM, FFN, EXPERTS, 2, TOKENS);
    p.normalize_topk = true;
    float x[TOKENS * DIM];
    for (uint32_t i = 0; i < TOKENS * DIM; i++)
        x[i] = pattern(i, 99);
    j->status = vkmoe_device_count(&devices);
    if (j->status == VKMOE_OK)
        j->status = vkmoe_context_create(NULL, &ctx);
    if (j->status == VKMOE_OK)
        j->status = vkmoe_layer_create(ctx, &p, &layer);
    if (j->status == VKMOE_OK)
        j->status = upload(layer);
    for (int repeat = 0; repeat < 3 && j->status == VKMOE_OK; repeat++)
        j->status = vkmoe_layer_forward(layer, TOKENS, x, j->y);
    /* a failure of this thread's own, whose message must stay this thread's */
    char words[32];
    snprintf(words, sizeof(words), "tokens is %u,", 1000 + j->id);
    if (j->status == VKMOE_OK &&
        vkmoe_layer_forward(layer, 1000 + j->id, x, j->y) == VKMOE_ERROR_INVALID_ARGUMENT)
        j->own_message = strstr(vkmoe_last_error(), words) != NULL;
    vkmoe_layer_destroy(&layer);
    vkmoe_context_destroy(&ctx);
    return NULL;
}

static void test_d07_contexts_on_several_threads(void **state)
{
    (void)state;
    static job alone = {.id = 0}, jobs[THREADS];
    run_job(&alone);
    assert_int_equal(alone.status, VKMOE_OK);
    pthread_t threads[THREADS];
    for (uint32_t i = 0; i < THREADS; i++) {
        jobs[i].id = i + 1;
        assert_int_equal(pthread_create(&threads[i], NULL, run_job, &jobs[i]), 0);
    }
    for (uint32_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    for (uint32_t i = 0; i < THREADS; i++) {
        assert_int_equal(jobs[i].status, VKMOE_OK);
        assert_true(jobs[i].own_message);
        assert_memory_equal(jobs[i].y, alone.y, sizeof(alone.y));
    }
}

/* One run of the pool: units taken from a counter, as CPU experts do. */
typedef struct pool_run {
    uint32_t units;
    atomic_uint next, done, tasks;
    atomic_bool returned; /* set once the run has returned */
} pool_run;

static atomic_uint late_tasks; /* tasks begun or running after their run returned */

static void pool_task(void *arg, unsigned thread)
{
    (void)thread;
    pool_run *r = arg;
    atomic_fetch_add(&r->tasks, 1);
    for (uint32_t u; (u = atomic_fetch_add(&r->next, 1)) < r->units;)
        atomic_fetch_add(&r->done, 1);
    if (atomic_load(&r->returned))
        atomic_fetch_add(&late_tasks, 1);
}

/* Runs of 0..6 units on a pool of more threads than these machines have
 * cores, so that threads often wake after the caller is done: every run
 * did all its units when it returned, ran its caller's task at least, and
 * no task touched a run after it returned (the runs stay allocated until
 * the pool is joined, so a late one would be counted, not a crash); some
 * runs are followed by a pause in which a late thread would find them. */
static void test_pool_runs(void **state)
{
    (void)state;
    enum { RUNS = 3000 };
    vkmoe_thread_pool *pool = NULL;
    assert_true(vkmoe_thread_pool_create(4, &pool));
    assert_non_null(pool);
    pool_run *runs = calloc(RUNS, sizeof(*runs));
    assert_non_null(runs);
    for (uint32_t i = 0; i < RUNS; i++) {
        runs[i].units = i % 7;
        vkmoe_thread_pool_run(pool, 1 + i % 4, pool_task, &runs[i]);
        atomic_store(&runs[i].returned, true);
        if (i % 4 == 0) /* time for a thread that wakes late to try the run just closed */
            nanosleep(&(struct timespec){.tv_nsec = 50000}, NULL);
        assert_int_equal(atomic_load(&runs[i].done), runs[i].units);
        assert_true(atomic_load(&runs[i].tasks) >= 1 && atomic_load(&runs[i].tasks) <= 1 + i % 4);
    }
    vkmoe_thread_pool_destroy(&pool);
    assert_null(pool);
    assert_int_equal(atomic_load(&late_tasks), 0);
    free(runs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_runs),
        cmocka_unit_test(test_d07_contexts_on_several_threads),
    };
    return test_device_suite(tests, NULL, NULL);
}
