/* Every heap allocation of the library goes through these, so that tests
 * can make any one of them fail (fault injection, tests/test_hostile.c):
 * each must come back as VKMOE_ERROR_OUT_OF_HOST_MEMORY with everything
 * made so far still destroyable and nothing leaked. The countdown is in
 * every build (one atomic decrement per allocation), so the tests check the
 * code that ships. Memory is released with free(). */
#ifndef VKMOE_ALLOC_H
#define VKMOE_ALLOC_H

#include <stddef.h>

void *vkmoe_malloc(size_t size);
void *vkmoe_calloc(size_t count, size_t size);
void *vkmoe_realloc(void *memory, size_t size);

/* Tests: make the n-th allocation from now fail (0: none) and return how
 * many allocations were made since the previous call. */
unsigned vkmoe_alloc_fail_at(unsigned n);

#endif /* VKMOE_ALLOC_H */
