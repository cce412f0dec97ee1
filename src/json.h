/* A small, strict JSON reader for config.json, safetensors headers and
 * safetensors index files, which may come from anywhere: every length is
 * checked, nesting is bounded, and a failure says where it happened. */
#ifndef VKMOE_JSON_H
#define VKMOE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum vkmoe_json_type {
    VKMOE_JSON_NULL,
    VKMOE_JSON_BOOL,
    VKMOE_JSON_NUMBER,
    VKMOE_JSON_STRING,
    VKMOE_JSON_ARRAY,
    VKMOE_JSON_OBJECT,
} vkmoe_json_type;

/* One value. Arrays and objects own `count` children; an object's children
 * carry their keys. Strings are unescaped UTF-8, NUL-terminated (a string
 * holding \u0000 is refused, so C string functions see all of it). */
typedef struct vkmoe_json {
    vkmoe_json_type type;
    bool boolean;
    double number;
    char *string;
    char *key;
    uint32_t count;
    struct vkmoe_json *children;
} vkmoe_json;

/* Deepest nesting accepted; real files need 3 or 4. */
#define VKMOE_JSON_MAX_DEPTH 64

/* Parse size bytes of text (no NUL needed) into *root. On failure returns
 * false, frees what it built and writes a message naming the byte offset
 * into error (error_size bytes). */
bool vkmoe_json_parse(const char *text, size_t size, vkmoe_json *root, char *error,
                      size_t error_size);
void vkmoe_json_free(vkmoe_json *value);

/* The member of an object called key, or NULL (also when object is not an
 * object). */
const vkmoe_json *vkmoe_json_get(const vkmoe_json *object, const char *key);
/* A member's value as an unsigned integer: false unless it is a number
 * that is a whole value in [0, max]. */
bool vkmoe_json_get_u64(const vkmoe_json *object, const char *key, uint64_t max, uint64_t *out);
/* The number itself as an unsigned integer (same rule). */
bool vkmoe_json_as_u64(const vkmoe_json *value, uint64_t max, uint64_t *out);

#endif
