/* Small arithmetic shared by every module. */
#ifndef VKMOE_UTIL_H
#define VKMOE_UTIL_H

#include <stdint.h>

#define VKMOE_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline uint64_t vkmoe_round_up(uint64_t x, uint64_t m) { return (x + m - 1) / m * m; }
static inline uint64_t vkmoe_div_up(uint64_t x, uint64_t m) { return (x + m - 1) / m; }

#endif /* VKMOE_UTIL_H */
