/* Sizes computed from what a caller or a file says go through these, so
 * that an absurd count becomes a refusal instead of a size that wrapped
 * around (vkmoe_quantize of 2^62 + 1 values once passed its size check
 * with 4 bytes). */
#ifndef VKMOE_CHECKED_SIZE_H
#define VKMOE_CHECKED_SIZE_H

#include <stdbool.h>
#include <stdint.h>

/* *out = a · b; false (and *out unspecified) when it does not fit. */
static inline bool vkmoe_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* *out = a + b; false when it does not fit. */
static inline bool vkmoe_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* *out = a · b where it fits in size_t (32-bit hosts included). */
static inline bool vkmoe_mul_size(uint64_t a, uint64_t b, size_t *out)
{
    uint64_t n;
    if (!vkmoe_mul_u64(a, b, &n) || n > SIZE_MAX)
        return false;
    *out = (size_t)n;
    return true;
}

#endif /* VKMOE_CHECKED_SIZE_H */
