#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_writer.h"
#include "tensor_file.h"

void buffer_append(byte_buffer *b, const void *data, size_t size)
{
    if (b->size + size > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (capacity < b->size + size)
            capacity *= 2;
        uint8_t *grown = realloc(b->data, capacity);
        if (!grown)
            abort(); /* test code: no way on without memory */
        b->data = grown;
        b->capacity = capacity;
    }
    if (size)
        memcpy(b->data + b->size, data, size);
    b->size += size;
}

void buffer_free(byte_buffer *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

bool buffer_write_file(const byte_buffer *b, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(b->data, 1, b->size, f) == b->size;
    return fclose(f) == 0 && ok;
}

static void append_text(byte_buffer *b, const char *text) { buffer_append(b, text, strlen(text)); }

static void append_le(byte_buffer *b, uint64_t value, uint32_t bytes)
{
    uint8_t out[8];
    for (uint32_t i = 0; i < bytes; i++)
        out[i] = (uint8_t)(value >> (8 * i));
    buffer_append(b, out, bytes);
}

void st_add(st_writer *w, const char *name, const char *dtype, const uint64_t *shape, uint32_t dims,
            const void *data, size_t bytes)
{
    char entry[512];
    int n = snprintf(entry, sizeof(entry), "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                     w->count ? "," : "", name, dtype);
    for (uint32_t d = 0; d < dims; d++)
        n += snprintf(entry + n, sizeof(entry) - (size_t)n, "%s%llu", d ? "," : "",
                      (unsigned long long)shape[d]);
    snprintf(entry + n, sizeof(entry) - (size_t)n, "],\"data_offsets\":[%zu,%zu]}", w->data.size,
             w->data.size + bytes);
    append_text(&w->header, entry);
    buffer_append(&w->data, data, bytes);
    w->count++;
}

void st_finish(st_writer *w, byte_buffer *out)
{
    byte_buffer header = {0};
    append_text(&header, "{\"__metadata__\":{\"format\":\"pt\"}");
    if (w->count)
        append_text(&header, ",");
    buffer_append(&header, w->header.data, w->header.size);
    append_text(&header, "}");
    while (header.size % 8) /* the format pads the header with spaces */
        append_text(&header, " ");
    memset(out, 0, sizeof(*out));
    append_le(out, header.size, 8);
    buffer_append(out, header.data, header.size);
    buffer_append(out, w->data.data, w->data.size);
    buffer_free(&header);
    buffer_free(&w->header);
    buffer_free(&w->data);
    w->count = 0;
}

enum { GGUF_U32 = 4, GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9 };

static void append_string(byte_buffer *b, const char *s)
{
    append_le(b, strlen(s), 8);
    append_text(b, s);
}

static void meta_key(gguf_writer *w, const char *key, uint32_t type)
{
    append_string(&w->meta, key);
    append_le(&w->meta, type, 4);
    w->meta_count++;
}

void gguf_add_u32(gguf_writer *w, const char *key, uint32_t value)
{
    meta_key(w, key, GGUF_U32);
    append_le(&w->meta, value, 4);
}

void gguf_add_f32(gguf_writer *w, const char *key, float value)
{
    uint32_t bits;
    memcpy(&bits, &value, 4);
    meta_key(w, key, GGUF_F32);
    append_le(&w->meta, bits, 4);
}

void gguf_add_bool(gguf_writer *w, const char *key, bool value)
{
    meta_key(w, key, GGUF_BOOL);
    append_le(&w->meta, value, 1);
}

void gguf_add_string(gguf_writer *w, const char *key, const char *value)
{
    meta_key(w, key, GGUF_STRING);
    append_string(&w->meta, value);
}

void gguf_add_u32_array(gguf_writer *w, const char *key, const uint32_t *values, uint64_t n)
{
    meta_key(w, key, GGUF_ARRAY);
    append_le(&w->meta, GGUF_U32, 4);
    append_le(&w->meta, n, 8);
    for (uint64_t i = 0; i < n; i++)
        append_le(&w->meta, values[i], 4);
}

void gguf_add_tensor(gguf_writer *w, const char *name, uint32_t type, const uint64_t *ne,
                     uint32_t dims, const void *data, size_t bytes)
{
    static const uint8_t zeros[32] = {0};
    buffer_append(&w->data, zeros, (32 - w->data.size % 32) % 32);
    append_string(&w->infos, name);
    append_le(&w->infos, dims, 4);
    for (uint32_t d = 0; d < dims; d++)
        append_le(&w->infos, ne[d], 8);
    append_le(&w->infos, type, 4);
    append_le(&w->infos, w->data.size, 8);
    buffer_append(&w->data, data, bytes);
    w->tensor_count++;
}

void gguf_finish(gguf_writer *w, byte_buffer *out)
{
    static const uint8_t zeros[32] = {0};
    memset(out, 0, sizeof(*out));
    append_text(out, "GGUF");
    append_le(out, 3, 4);
    append_le(out, w->tensor_count, 8);
    append_le(out, w->meta_count, 8);
    buffer_append(out, w->meta.data, w->meta.size);
    buffer_append(out, w->infos.data, w->infos.size);
    buffer_append(out, zeros, (32 - out->size % 32) % 32);
    buffer_append(out, w->data.data, w->data.size);
    buffer_free(&w->meta);
    buffer_free(&w->infos);
    buffer_free(&w->data);
    w->meta_count = w->tensor_count = 0;
}

bool feed_mutations(tensor_reader read, byte_buffer *b, const uint8_t *masks, size_t mask_count)
{
    char error[256];
    bool prefixes_refused = true;
    for (size_t n = 0; n < b->size; n++) {
        vkmoe_tensor_file f;
        uint8_t *copy = malloc(n ? n : 1);
        if (!copy)
            abort();
        memcpy(copy, b->data, n);
        if (read(copy, n, &f, error, sizeof(error))) {
            prefixes_refused = false;
            vkmoe_tensor_file_free(&f);
        }
        free(copy);
    }
    for (size_t i = 0; i < b->size; i++)
        for (size_t m = 0; m < mask_count; m++) {
            uint8_t saved = b->data[i];
            b->data[i] ^= masks[m];
            vkmoe_tensor_file f;
            if (read(b->data, b->size, &f, error, sizeof(error)))
                vkmoe_tensor_file_free(&f);
            b->data[i] = saved;
        }
    return prefixes_refused;
}
