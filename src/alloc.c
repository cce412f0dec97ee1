/* Allocation with a failure countdown for the tests, and pages of the
 * process's own in huge pages (alloc.h). */
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

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

/* Linux backs an aligned 2 MiB of a region advised so with one page. */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

/* bytes rounded up to whole pages of the system's size */
static size_t whole_pages(size_t bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t size = page > 0 ? (size_t)page : 4096;
    return bytes > SIZE_MAX - size ? 0 : (bytes + size - 1) / size * size;
}

void *vkmoe_map_pages(size_t bytes)
{
    size_t length = whole_pages(bytes);
    if (length == 0 || length > SIZE_MAX - HUGE_PAGE_BYTES)
        return NULL;
    uint8_t *region = mmap(NULL, length + HUGE_PAGE_BYTES, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        return NULL;
    /* Keep the aligned part; the pages before and after it go back. */
    uint8_t *pages =
        (uint8_t *)(((uintptr_t)region + HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(HUGE_PAGE_BYTES - 1));
    size_t head = (size_t)(pages - region);
    if (head)
        munmap(region, head);
    if (HUGE_PAGE_BYTES - head)
        munmap(pages + length, HUGE_PAGE_BYTES - head);
#ifdef MADV_HUGEPAGE
    (void)madvise(pages, length, MADV_HUGEPAGE); /* advice: small pages where refused */
#endif
    return pages;
}

void vkmoe_unmap_pages(void *pages, size_t bytes)
{
    if (pages)
        munmap(pages, whole_pages(bytes));
}

unsigned vkmoe_alloc_fail_at(unsigned n)
{
    atomic_store(&countdown, n);
    return atomic_exchange(&made, 0);
}
