/* safetensors reader: an 8-byte little-endian header length, a JSON header
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...} with
 * offsets relative to the data after the header, then the data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "checked_size.h"
#include "json.h"
#include "parse_error.h"
#include "tensor_file.h"

/* Headers of real checkpoints are a few hundred KiB; refuse absurd ones
 * before allocating for them. */
#define MAX_HEADER_BYTES (100u << 20)

static const struct {
    const char *name;
    uint32_t bytes;
} dtypes[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8},     {"I64", 8},
    {"U64", 8}, {"I32", 4}, {"U32", 4},  {"I16", 2},     {"U16", 2},
    {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

static bool fail(char *error, size_t error_size, const char *what, const char *name)
{
    snprintf(error, error_size, "safetensors: %s%s%s", name ? "tensor \"" : "", name ? name : "",
             name ? "\": " : "");
    size_t len = strlen(error);
    snprintf(error + len, error_size > len ? error_size - len : 0, "%s", what);
    return false;
}

static bool read_dtype(const vkmoe_json *entry, vkmoe_tensor *t, uint32_t *bytes)
{
    const vkmoe_json *dtype = vkmoe_json_get(entry, "dtype");
    if (!dtype || dtype->type != VKMOE_JSON_STRING)
        return false;
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
        if (strcmp(dtype->string, dtypes[i].name) == 0) {
            snprintf(t->dtype_name, sizeof(t->dtype_name), "%s", dtypes[i].name);
            t->block = 1;
            t->block_bytes = *bytes = dtypes[i].bytes;
            return true;
        }
    return false;
}

/* Shape of at most 4 dimensions whose element count times `bytes` fits in
 * 64 bits; returns the byte size through *size. */
static bool read_shape(const vkmoe_json *entry, vkmoe_tensor *t, uint32_t bytes, uint64_t *size)
{
    const vkmoe_json *shape = vkmoe_json_get(entry, "shape");
    if (!shape || shape->type != VKMOE_JSON_ARRAY || shape->count > VKMOE_TENSOR_MAX_DIMS)
        return false;
    t->dims = shape->count;
    uint64_t n = bytes;
    for (uint32_t d = 0; d < t->dims; d++) {
        if (!vkmoe_json_as_u64(&shape->children[d], UINT64_MAX, &t->shape[d]))
            return false;
        if (!vkmoe_mul_u64(n, t->shape[d], &n))
            return false;
    }
    *size = n;
    return true;
}

static bool read_offsets(const vkmoe_json *entry, uint64_t data_size, uint64_t *begin,
                         uint64_t *end)
{
    const vkmoe_json *offsets = vkmoe_json_get(entry, "data_offsets");
    return offsets && offsets->type == VKMOE_JSON_ARRAY && offsets->count == 2 &&
           vkmoe_json_as_u64(&offsets->children[0], data_size, begin) &&
           vkmoe_json_as_u64(&offsets->children[1], data_size, end) && *begin <= *end;
}

static bool read_tensor(const vkmoe_json *entry, uint64_t data_start, uint64_t data_size,
                        vkmoe_tensor *t, char *error, size_t error_size)
{
    const char *name = entry->key;
    uint32_t bytes;
    uint64_t size, begin, end;
    if (entry->type != VKMOE_JSON_OBJECT)
        return fail(error, error_size, "entry is not an object", name);
    if (!read_dtype(entry, t, &bytes))
        return fail(error, error_size, "missing or unknown dtype", name);
    if (!read_shape(entry, t, bytes, &size))
        return fail(error, error_size, "bad shape", name);
    if (!read_offsets(entry, data_size, &begin, &end))
        return fail(error, error_size, "data_offsets missing or past the end of the file", name);
    if (end - begin != size)
        return fail(error, error_size, "data_offsets disagree with dtype and shape", name);
    size_t len = strlen(name) + 1;
    t->name = vkmoe_malloc(len);
    if (!t->name)
        return vkmoe_parse_no_memory(error, error_size);
    memcpy(t->name, name, len);
    t->offset = data_start + begin;
    t->size = size;
    return true;
}

static bool read_tensors(const vkmoe_json *header, uint64_t data_start, uint64_t data_size,
                         vkmoe_tensor_file *out, char *error, size_t error_size)
{
    if (header->type != VKMOE_JSON_OBJECT)
        return fail(error, error_size, "the header is not a JSON object", NULL);
    if (header->count > VKMOE_TENSOR_FILE_MAX_ENTRIES)
        return fail(error, error_size, "too many tensors", NULL);
    out->tensors = vkmoe_calloc(header->count ? header->count : 1, sizeof(*out->tensors));
    if (!out->tensors)
        return vkmoe_parse_no_memory(error, error_size);
    for (uint32_t i = 0; i < header->count; i++) {
        const vkmoe_json *entry = &header->children[i];
        if (strcmp(entry->key, "__metadata__") == 0)
            continue;
        if (!read_tensor(entry, data_start, data_size, &out->tensors[out->tensor_count], error,
                         error_size))
            return false;
        out->tensor_count++;
    }
    return true;
}

bool vkmoe_safetensors_parse(const uint8_t *data, uint64_t size, vkmoe_tensor_file *out,
                             char *error, size_t error_size)
{
    memset(out, 0, sizeof(*out));
    if (size < 8)
        return fail(error, error_size, "shorter than its 8-byte header length", NULL);
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; i--)
        header_size = header_size << 8 | data[i];
    if (header_size > size - 8 || header_size > MAX_HEADER_BYTES)
        return fail(error, error_size, "header length past the end of the file or over 100 MiB",
                    NULL);
    vkmoe_json header;
    char json_error[200];
    if (!vkmoe_json_parse((const char *)data + 8, header_size, &header, json_error,
                          sizeof(json_error)))
        return vkmoe_parse_ran_out_of_memory(json_error)
                   ? vkmoe_parse_no_memory(error, error_size)
                   : fail(error, error_size, json_error, NULL);
    uint64_t data_start = 8 + header_size;
    bool ok = read_tensors(&header, data_start, size - data_start, out, error, error_size) &&
              vkmoe_tensor_file_check_layout(out, error, error_size);
    vkmoe_json_free(&header);
    if (!ok)
        vkmoe_tensor_file_free(out);
    return ok;
}
