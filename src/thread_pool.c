/* The pool: one mutex, a generation count that wakes the threads for a
 * run, whether the run still takes threads, and a count of those in it
 * that the caller waits on. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "alloc.h"
#include "thread_pool.h"

struct vkmoe_thread_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    unsigned generation; /* runs so far */
    unsigned active;     /* threads 0 .. active − 1 may take part in the run */
    bool open;           /* the run takes threads that wake: its caller is in it */
    atomic_uint working; /* pool threads in the run's task (changed under the lock) */
    bool stop;
    vkmoe_pool_task task;
    void *arg;
    unsigned started; /* pool threads, numbered 1 .. started */
    pthread_t *ids;
    struct worker {
        vkmoe_thread_pool *pool;
        unsigned index;
    } * workers;
};

static void *worker_main(void *arg)
{
    const struct worker *w = arg;
    vkmoe_thread_pool *p = w->pool;
    pthread_mutex_lock(&p->lock);
    unsigned seen = 0; /* made before any run */
    for (;;) {
        while (p->generation == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop)
            break;
        seen = p->generation;
        if (w->index >= p->active || !p->open)
            continue; /* not asked, or woken too late: the run's arg may be gone */
        p->working++;
        vkmoe_pool_task task = p->task;
        void *task_arg = p->arg;
        pthread_mutex_unlock(&p->lock);
        task(task_arg, w->index);
        pthread_mutex_lock(&p->lock);
        if (--p->working == 0 && !p->open)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

bool vkmoe_thread_pool_create(unsigned threads, vkmoe_thread_pool **out)
{
    *out = NULL;
    if (threads < 2)
        return true;
    vkmoe_thread_pool *p = vkmoe_calloc(1, sizeof(*p));
    if (!p)
        return false;
    p->ids = vkmoe_calloc(threads, sizeof(*p->ids));
    p->workers = vkmoe_calloc(threads, sizeof(*p->workers));
    if (!p->ids || !p->workers || pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p->ids);
        free(p->workers);
        free(p);
        return false;
    }
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    for (unsigned t = 1; t < threads; t++) {
        p->workers[t] = (struct worker){p, t};
        if (pthread_create(&p->ids[t], NULL, worker_main, &p->workers[t]) != 0)
            break;
        p->started = t;
    }
    if (p->started == 0)
        vkmoe_thread_pool_destroy(&p);
    *out = p;
    return true;
}

void vkmoe_thread_pool_destroy(vkmoe_thread_pool **pool)
{
    vkmoe_thread_pool *p = pool ? *pool : NULL;
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned t = 1; t <= p->started; t++)
        pthread_join(p->ids[t], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    free(p->ids);
    free(p->workers);
    free(p);
    *pool = NULL;
}

/* How long the caller, its own part done, watches for the pool's threads
 * to finish theirs before it sleeps: their last units end within tens of
 * microseconds, and a wake from the condition variable took 5-30 more in
 * traces of f16 decode on this VM (a forward is 500). */
#define WATCH_NS 200000

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000ll + t.tv_nsec;
}

static void watch_working(vkmoe_thread_pool *p)
{
    long long until = now_ns() + WATCH_NS;
    for (unsigned i = 1; atomic_load(&p->working) > 0; i++)
        if (i % 64 == 0 && now_ns() > until)
            return;
}

unsigned vkmoe_thread_pool_size(const vkmoe_thread_pool *pool)
{
    return pool ? pool->started + 1 : 1;
}

void vkmoe_thread_pool_run(vkmoe_thread_pool *p, unsigned n, vkmoe_pool_task task, void *arg)
{
    if (!p || n < 2) {
        task(arg, 0);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->task = task;
    p->arg = arg;
    p->active = n;
    p->open = true;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    task(arg, 0);
    watch_working(p);
    pthread_mutex_lock(&p->lock);
    p->open = false;
    while (p->working > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
