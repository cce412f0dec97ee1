/* Host threads for the CPU experts (cpu_experts.c), started once per
 * context at their first use and asleep between forwards: starting threads
 * for each forward cost more than decode's whole work (thread_pool.c). */
#ifndef VKMOE_THREAD_POOL_H
#define VKMOE_THREAD_POOL_H

#include <stdbool.h>

typedef struct vkmoe_thread_pool vkmoe_thread_pool;

/* What each thread runs: `thread` is 0 for the caller, 1.. for the pool's. */
typedef void (*vkmoe_pool_task)(void *arg, unsigned thread);

/* A pool of `threads` in all, the caller's among them, into *out: NULL
 * when not even one more thread could be started (the caller then runs
 * tasks alone). False, *out NULL, when out of host memory. */
bool vkmoe_thread_pool_create(unsigned threads, vkmoe_thread_pool **out);
/* Stop and join the threads; accepts NULL and a pointer to NULL. */
void vkmoe_thread_pool_destroy(vkmoe_thread_pool **pool);
/* Threads in all, the caller's included (1 for NULL). */
unsigned vkmoe_thread_pool_size(const vkmoe_thread_pool *pool);
/* task(arg, t) for t = 0 on the caller and for those of t = 1 .. n − 1
 * whose threads wake before the caller's task returns (waking a sleeping
 * thread can take longer than a decode's whole work, in a VM more so): a
 * task shares its work by counters, never by thread index. Returns when
 * every task that started has returned. n is at most the pool's size. */
void vkmoe_thread_pool_run(vkmoe_thread_pool *pool, unsigned n, vkmoe_pool_task task, void *arg);

#endif /* VKMOE_THREAD_POOL_H */
