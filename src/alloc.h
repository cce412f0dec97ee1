/* Every heap allocation of the library goes through these, so that tests
 * can make any one of them fail (fault injection, tests/test_hostile.c):
 * each must come back as VKMOE_ERROR_OUT_OF_HOST_MEMORY with everything
 * made so far still destroyable and nothing leaked. The countdown is in
 * every build (one atomic decrement per allocation), so the tests check the
 * code that ships. Memory is released with free(). Below them, pages for
 * memory the host streams through. */
#ifndef VKMOE_ALLOC_H
#define VKMOE_ALLOC_H

#include <stddef.h>

void *vkmoe_malloc(size_t size);
void *vkmoe_calloc(size_t count, size_t size);
void *vkmoe_realloc(void *memory, size_t size);

/* Tests: make the n-th allocation from now fail (0: none) and return how
 * many allocations were made since the previous call. */
unsigned vkmoe_alloc_fail_at(unsigned n);

/* `bytes` of zeroed anonymous memory of the process's own, starting at a
 * 2 MiB boundary and advised into huge pages where the kernel offers them
 * (Linux's transparent huge pages, in its "always" and "madvise" modes):
 * memory the host streams through, where 4 KiB pages cost a TLB miss every
 * 4 KiB and stop the hardware prefetcher at every page. NULL when out of
 * memory. Released with vkmoe_unmap_pages. Not one of the countdown's
 * allocations: its callers have a way round (the driver's memory), so its
 * failure is no error of theirs. */
void *vkmoe_map_pages(size_t bytes);
void vkmoe_unmap_pages(void *pages, size_t bytes);

#endif /* VKMOE_ALLOC_H */
