/* Small arithmetic and message helpers shared by every module. */
#ifndef VKMOE_UTIL_H
#define VKMOE_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define VKMOE_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline uint64_t vkmoe_round_up(uint64_t x, uint64_t m) { return (x + m - 1) / m * m; }
static inline uint64_t vkmoe_div_up(uint64_t x, uint64_t m) { return (x + m - 1) / m; }

/* Appends name to the ", "-separated list in out (size bytes), for
 * messages that say what is known. */
static inline void vkmoe_list_append(char *out, size_t size, const char *name)
{
    size_t used = strlen(out);
    if (used < size)
        snprintf(out + used, size - used, "%s%s", used ? ", " : "", name);
}

#endif /* VKMOE_UTIL_H */
