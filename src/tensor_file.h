/* What the model-file readers (safetensors.c, gguf.c) make of a file: a
 * list of tensors, each a checked byte range of the file, and for GGUF the
 * metadata. Both parse memory (a mapped file, or a fuzzer's bytes) and
 * check every length and offset against it before anything trusts them. */
#ifndef VKMOE_TENSOR_FILE_H
#define VKMOE_TENSOR_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VKMOE_TENSOR_MAX_DIMS 4

typedef struct vkmoe_tensor {
    char *name;
    /* The element type as the file names it ("BF16", "Q4_K"); which
     * vkmoe_weight_type it is, if any, the loader decides by this name
     * (vkmoe_weight_type_of_file). */
    char dtype_name[16];
    uint32_t block, block_bytes; /* elements per block of the type, and its bytes */
    uint32_t dims;
    uint64_t shape[VKMOE_TENSOR_MAX_DIMS]; /* row-major: shape[dims - 1] is contiguous */
    uint64_t offset, size;                 /* bytes, from the start of the file */
} vkmoe_tensor;

/* GGUF metadata values that a loader reads; arrays are checked and skipped. */
typedef enum vkmoe_meta_type {
    VKMOE_META_UINT,
    VKMOE_META_INT,
    VKMOE_META_FLOAT,
    VKMOE_META_BOOL,
    VKMOE_META_STRING,
    VKMOE_META_ARRAY,
} vkmoe_meta_type;

typedef struct vkmoe_meta {
    char *key;
    vkmoe_meta_type type;
    uint64_t u;
    int64_t i;
    double f;
    char *string;
} vkmoe_meta;

typedef struct vkmoe_tensor_file {
    vkmoe_tensor *tensors;
    uint32_t tensor_count;
    vkmoe_meta *meta; /* GGUF only */
    uint32_t meta_count;
} vkmoe_tensor_file;

/* Most tensors or metadata entries a file may declare (a DeepSeek-V3 GGUF
 * has about 1,100 tensors). */
#define VKMOE_TENSOR_FILE_MAX_ENTRIES (1u << 20)

/* Parse a safetensors file of size bytes. Returns false and a message on
 * anything malformed; *out is then empty. */
bool vkmoe_safetensors_parse(const uint8_t *data, uint64_t size, vkmoe_tensor_file *out,
                             char *error, size_t error_size);
/* Parse a GGUF (v2 or v3) file of size bytes; the same contract. */
bool vkmoe_gguf_parse(const uint8_t *data, uint64_t size, vkmoe_tensor_file *out, char *error,
                      size_t error_size);
void vkmoe_tensor_file_free(vkmoe_tensor_file *file);
/* Both readers end with this: no two tensors share a name or a byte (a
 * duplicate or overlapping tensor would load plausible wrong weights).
 * False and a message naming them otherwise. */
bool vkmoe_tensor_file_check_layout(const vkmoe_tensor_file *file, char *error, size_t error_size);

const vkmoe_tensor *vkmoe_tensor_file_find(const vkmoe_tensor_file *file, const char *name);
const vkmoe_meta *vkmoe_tensor_file_meta(const vkmoe_tensor_file *file, const char *key);
/* Element count of a tensor (its shape's product; checked not to overflow
 * when parsed). */
uint64_t vkmoe_tensor_elements(const vkmoe_tensor *tensor);

#endif
