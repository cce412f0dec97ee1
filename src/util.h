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

/* The row of a table called name: rows[count], `stride` bytes apart, each
 * beginning with its name (a const char *). NULL when none is, the names
 * then listed into known (known_size bytes) for the message. */
#define VKMOE_FIND_NAMED(table, name, known, known_size)                                           \
    vkmoe_find_named((table), VKMOE_ARRAY_SIZE(table), sizeof((table)[0]), (name), (known),        \
                     (known_size))
static inline const void *vkmoe_find_named(const void *rows, size_t count, size_t stride,
                                           const char *name, char *known, size_t known_size)
{
    known[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        const char *const *row = (const void *)((const char *)rows + i * stride);
        if (strcmp(*row, name) == 0)
            return row;
        vkmoe_list_append(known, known_size, *row);
    }
    return NULL;
}

#endif /* VKMOE_UTIL_H */
