/* Allocation with a failure countdown for the tests (alloc.h). */
#include <stdatomic.h>
#include <stdlib.h>

#include "alloc.h"

static atomic_uint countdown; /* 0: off; 1: the next allocation fails */
static atomic_uint made;

static int injected_failure(void)
{
    atomic_fetch_add_explicit(&made, 1, memory_order_relaxed);
    unsigned left = atomic_load_explicit(&countdown, memory_order_relaxed);
    while (left > 0 && !atomic_compare_exchange_weak_explicit(
                           &countdown, &left, left - 1, memory_order_relaxed, memory_order_relaxed))
        ;
    return left == 1;
}

void *vkmoe_malloc(size_t size) { return injected_failure() ? NULL : malloc(size); }

void *vkmoe_calloc(size_t count, size_t size)
{
    return injected_failure() ? NULL : calloc(count, size);
}

void *vkmoe_realloc(void *memory, size_t size)
{
    return injected_failure() ? NULL : realloc(memory, size);
}

unsigned vkmoe_alloc_fail_at(unsigned n)
{
    atomic_store(&countdown, n);
    return atomic_exchange(&made, 0);
}
