/* Writers of small but complete model files for the tests and the fuzzers'
 * seed corpus: safetensors files with their config.json, and GGUF files.
 * Written from the formats' definitions, independent of the readers. */
#ifndef VKMOE_TEST_MODEL_WRITER_H
#define VKMOE_TEST_MODEL_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vkmoe_tensor_file;

/* A growable byte buffer. */
typedef struct byte_buffer {
    uint8_t *data;
    size_t size, capacity;
} byte_buffer;

void buffer_append(byte_buffer *b, const void *data, size_t size);
void buffer_free(byte_buffer *b);
bool buffer_write_file(const byte_buffer *b, const char *path);

/* safetensors: add tensors, then finish into out. dtype is "F32", "F16" or
 * "BF16" (data already in that encoding); shape row-major. */
typedef struct st_writer {
    byte_buffer header, data;
    uint32_t count;
} st_writer;

void st_add(st_writer *w, const char *name, const char *dtype, const uint64_t *shape, uint32_t dims,
            const void *data, size_t bytes);
void st_finish(st_writer *w, byte_buffer *out);

/* GGUF v3: metadata first, then tensors (ggml type id, dims innermost
 * first), then finish. */
typedef struct gguf_writer {
    byte_buffer meta, infos, data;
    uint64_t meta_count, tensor_count;
} gguf_writer;

void gguf_add_u32(gguf_writer *w, const char *key, uint32_t value);
void gguf_add_f32(gguf_writer *w, const char *key, float value);
void gguf_add_bool(gguf_writer *w, const char *key, bool value);
void gguf_add_string(gguf_writer *w, const char *key, const char *value);
void gguf_add_u32_array(gguf_writer *w, const char *key, const uint32_t *values, uint64_t n);
void gguf_add_tensor(gguf_writer *w, const char *name, uint32_t type, const uint64_t *ne,
                     uint32_t dims, const void *data, size_t bytes);
void gguf_finish(gguf_writer *w, byte_buffer *out);

/* A reader of tensor files (vkmoe_safetensors_parse, vkmoe_gguf_parse). */
typedef bool (*tensor_reader)(const uint8_t *data, uint64_t size, struct vkmoe_tensor_file *out,
                              char *error, size_t error_size);
/* Feeds read every proper prefix of b (each must be refused: returns false
 * if one was accepted) and b with each byte flipped by each of `masks`
 * (parsed or refused, either way without harm). */
bool feed_mutations(tensor_reader read, byte_buffer *b, const uint8_t *masks, size_t mask_count);

#endif
