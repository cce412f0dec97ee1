/* GGUF reader (versions 2 and 3, little-endian): magic "GGUF", version,
 * tensor count and metadata count (u64), the metadata key/value pairs, the
 * tensor infos (name, dims in ggml order — innermost first —, type, offset
 * into the data section), then the data section at the next multiple of
 * general.alignment (default 32). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "checked_size.h"
#include "parse_error.h"
#include "tensor_file.h"

enum { GGUF_DEFAULT_ALIGNMENT = 32, MAX_NAME_BYTES = 1024, MAX_ARRAY_DEPTH = 4 };

enum gguf_value_type {
    GGUF_U8,
    GGUF_I8,
    GGUF_U16,
    GGUF_I16,
    GGUF_U32,
    GGUF_I32,
    GGUF_F32,
    GGUF_BOOL,
    GGUF_STRING,
    GGUF_ARRAY,
    GGUF_U64,
    GGUF_I64,
    GGUF_F64,
    GGUF_TYPE_COUNT,
};

/* ggml tensor types: elements per block and bytes per block, all of them
 * whether vkmoe computes with them or not (the loader decides that by
 * name). Types not listed are refused, as their size cannot be checked. */
static const struct {
    uint32_t id;
    const char *name;
    uint32_t block, bytes;
} tensor_types[] = {
    {0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},    {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},    {9, "Q8_1", 32, 36},    {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {24, "I8", 1, 1},
    {25, "I16", 1, 2},      {20, "IQ4_NL", 32, 18}, {23, "IQ4_XS", 256, 136},
    {26, "I32", 1, 4},      {27, "I64", 1, 8},      {28, "F64", 1, 8},
    {30, "BF16", 1, 2},     {39, "MXFP4", 32, 17},
};

typedef struct reader {
    const uint8_t *data;
    uint64_t size, at;
    char *error;
    size_t error_size;
} reader;

static bool fail(reader *r, const char *fmt, const char *detail)
{
    char message[200];
    snprintf(message, sizeof(message), fmt, detail ? detail : "");
    snprintf(r->error, r->error_size, "GGUF at byte %llu: %s", (unsigned long long)r->at, message);
    return false;
}

static bool take(reader *r, uint64_t n, const uint8_t **out)
{
    if (n > r->size - r->at)
        return fail(r, "truncated%s", NULL);
    *out = r->data + r->at;
    r->at += n;
    return true;
}

static bool read_uint(reader *r, uint32_t bytes, uint64_t *out)
{
    const uint8_t *p;
    if (!take(r, bytes, &p))
        return false;
    *out = 0;
    for (uint32_t i = bytes; i-- > 0;)
        *out = *out << 8 | p[i];
    return true;
}

static bool read_u32(reader *r, uint32_t *out)
{
    uint64_t v;
    if (!read_uint(r, 4, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

/* A length-prefixed string, copied and NUL-terminated; max_bytes bounds it. */
static bool read_string(reader *r, uint64_t max_bytes, char **out)
{
    uint64_t len;
    const uint8_t *p;
    if (!read_uint(r, 8, &len))
        return false;
    if (len > max_bytes)
        return fail(r, "string longer than %s bytes",
                    max_bytes == MAX_NAME_BYTES ? "1024" : "the file's");
    if (!take(r, len, &p))
        return false;
    if (memchr(p, 0, len))
        return fail(r, "NUL inside a string%s", NULL);
    *out = vkmoe_malloc(len + 1);
    if (!*out)
        return vkmoe_parse_no_memory(r->error, r->error_size);
    memcpy(*out, p, len);
    (*out)[len] = '\0';
    return true;
}

static const uint32_t scalar_bytes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static bool skip_value(reader *r, uint32_t type, unsigned depth);

/* Arrays are checked (their elements fit in the file) and skipped. */
static bool skip_array(reader *r, unsigned depth)
{
    uint32_t type;
    uint64_t count;
    if (depth >= MAX_ARRAY_DEPTH)
        return fail(r, "arrays nested too deep%s", NULL);
    if (!read_u32(r, &type) || !read_uint(r, 8, &count))
        return false;
    if (type >= GGUF_TYPE_COUNT)
        return fail(r, "unknown value type%s", NULL);
    if (scalar_bytes[type]) {
        const uint8_t *p;
        if (count > (r->size - r->at) / scalar_bytes[type])
            return fail(r, "array past the end of the file%s", NULL);
        return take(r, count * scalar_bytes[type], &p);
    }
    /* Each string or array element takes at least 8 bytes. */
    if (count > (r->size - r->at) / 8)
        return fail(r, "array past the end of the file%s", NULL);
    for (uint64_t i = 0; i < count; i++)
        if (!skip_value(r, type, depth + 1))
            return false;
    return true;
}

static bool skip_value(reader *r, uint32_t type, unsigned depth)
{
    uint64_t len;
    const uint8_t *p;
    if (type == GGUF_ARRAY)
        return skip_array(r, depth);
    if (type == GGUF_STRING)
        return read_uint(r, 8, &len) && take(r, len, &p);
    return take(r, scalar_bytes[type], &p);
}

static bool read_scalar(reader *r, uint32_t type, vkmoe_meta *m)
{
    uint64_t v;
    if (!read_uint(r, scalar_bytes[type], &v))
        return false;
    uint32_t bits = scalar_bytes[type] * 8;
    if (type == GGUF_F32 || type == GGUF_F64) {
        m->type = VKMOE_META_FLOAT;
        if (type == GGUF_F32) {
            float f;
            uint32_t u = (uint32_t)v;
            memcpy(&f, &u, 4);
            m->f = f;
        } else {
            memcpy(&m->f, &v, 8);
        }
    } else if (type == GGUF_BOOL) {
        m->type = VKMOE_META_BOOL;
        m->u = v != 0;
    } else if (type == GGUF_I8 || type == GGUF_I16 || type == GGUF_I32 || type == GGUF_I64) {
        m->type = VKMOE_META_INT;
        m->i = bits == 64 ? (int64_t)v : (int64_t)(v ^ 1ull << (bits - 1)) - (1ll << (bits - 1));
    } else {
        m->type = VKMOE_META_UINT;
        m->u = v;
    }
    return true;
}

static bool read_meta(reader *r, vkmoe_meta *m)
{
    uint32_t type;
    if (!read_string(r, MAX_NAME_BYTES, &m->key) || !read_u32(r, &type))
        return false;
    if (type >= GGUF_TYPE_COUNT)
        return fail(r, "metadata \"%s\" has an unknown value type", m->key);
    if (type == GGUF_STRING) {
        m->type = VKMOE_META_STRING;
        return read_string(r, r->size, &m->string);
    }
    if (type == GGUF_ARRAY) {
        m->type = VKMOE_META_ARRAY;
        return skip_array(r, 0);
    }
    return read_scalar(r, type, m);
}

static bool find_type(reader *r, uint32_t id, vkmoe_tensor *t, uint32_t *block, uint32_t *bytes)
{
    for (size_t i = 0; i < sizeof(tensor_types) / sizeof(tensor_types[0]); i++)
        if (tensor_types[i].id == id) {
            snprintf(t->dtype_name, sizeof(t->dtype_name), "%s", tensor_types[i].name);
            *block = t->block = tensor_types[i].block;
            *bytes = t->block_bytes = tensor_types[i].bytes;
            return true;
        }
    return fail(r, "tensor \"%s\" has an unknown or unsupported type", t->name);
}

/* Dims arrive innermost first; shape[] is stored outermost first. */
static bool read_tensor_info(reader *r, vkmoe_tensor *t, uint64_t *byte_size)
{
    uint32_t dims, type_id, block, bytes;
    if (!read_string(r, MAX_NAME_BYTES, &t->name) || !read_u32(r, &dims))
        return false;
    if (dims == 0 || dims > VKMOE_TENSOR_MAX_DIMS)
        return fail(r, "tensor \"%s\" has more than 4 or no dimensions", t->name);
    t->dims = dims;
    uint64_t elements = 1;
    for (uint32_t d = 0; d < dims; d++) {
        uint64_t n;
        if (!read_uint(r, 8, &n))
            return false;
        /* 8 bytes an element at most: the byte size fits in 64 bits too. */
        if (n == 0 || n > UINT32_MAX || !vkmoe_mul_u64(elements, n, &elements) ||
            elements > UINT64_MAX / 8)
            return fail(r, "tensor \"%s\" has an absurd dimension", t->name);
        t->shape[dims - 1 - d] = n;
    }
    if (!read_u32(r, &type_id) || !find_type(r, type_id, t, &block, &bytes))
        return false;
    if (t->shape[dims - 1] % block != 0)
        return fail(r, "tensor \"%s\" rows are not whole blocks of its type", t->name);
    *byte_size = elements / block * bytes;
    return read_uint(r, 8, &t->offset);
}

static bool read_header_counts(reader *r, uint64_t *tensors, uint64_t *metas)
{
    const uint8_t *magic;
    uint32_t version;
    if (!take(r, 4, &magic) || memcmp(magic, "GGUF", 4) != 0)
        return fail(r, "not a GGUF file (magic)%s", NULL);
    if (!read_u32(r, &version) || !read_uint(r, 8, tensors) || !read_uint(r, 8, metas))
        return false;
    if (version != 2 && version != 3)
        return fail(r, "version is not 2 or 3%s", NULL);
    /* A tensor info takes at least 32 bytes and a metadata pair 13: a count
     * the rest of the file cannot hold is a lie, refused before allocating. */
    uint64_t rest = r->size - r->at;
    if (*tensors > VKMOE_TENSOR_FILE_MAX_ENTRIES || *metas > VKMOE_TENSOR_FILE_MAX_ENTRIES ||
        *tensors > rest / 32 || *metas > rest / 13)
        return fail(r, "absurd tensor or metadata count%s", NULL);
    return true;
}

static bool read_metadata(reader *r, uint64_t count, vkmoe_tensor_file *out)
{
    out->meta = vkmoe_calloc(count ? count : 1, sizeof(*out->meta));
    if (!out->meta)
        return vkmoe_parse_no_memory(r->error, r->error_size);
    for (; out->meta_count < count; out->meta_count++)
        if (!read_meta(r, &out->meta[out->meta_count])) {
            out->meta_count++; /* so that what it holds is freed */
            return false;
        }
    return true;
}

static bool alignment_of(reader *r, const vkmoe_tensor_file *file, uint64_t *alignment)
{
    const vkmoe_meta *m = vkmoe_tensor_file_meta(file, "general.alignment");
    *alignment = m ? m->u : GGUF_DEFAULT_ALIGNMENT;
    if (m && (m->type != VKMOE_META_UINT || *alignment == 0 || *alignment > (1u << 20) ||
              (*alignment & (*alignment - 1))))
        return fail(r, "general.alignment is not a power of two up to 1 MiB%s", NULL);
    return true;
}

/* Tensor offsets become file offsets, each range checked against the file. */
static bool place_tensors(reader *r, vkmoe_tensor_file *out, const uint64_t *byte_sizes)
{
    uint64_t alignment;
    if (!alignment_of(r, out, &alignment))
        return false;
    uint64_t data_start = (r->at + alignment - 1) / alignment * alignment;
    if (data_start > r->size)
        return fail(r, "no data section%s", NULL);
    uint64_t data_size = r->size - data_start;
    for (uint32_t i = 0; i < out->tensor_count; i++) {
        vkmoe_tensor *t = &out->tensors[i];
        if (t->offset % alignment || t->offset > data_size || byte_sizes[i] > data_size - t->offset)
            return fail(r, "tensor \"%s\" is misaligned or past the end of the file", t->name);
        t->offset += data_start;
        t->size = byte_sizes[i];
    }
    return true;
}

static bool read_tensor_infos(reader *r, uint64_t count, vkmoe_tensor_file *out)
{
    out->tensors = vkmoe_calloc(count ? count : 1, sizeof(*out->tensors));
    uint64_t *byte_sizes = vkmoe_calloc(count ? count : 1, sizeof(*byte_sizes));
    bool ok = out->tensors && byte_sizes ? true : vkmoe_parse_no_memory(r->error, r->error_size);
    for (; ok && out->tensor_count < count; out->tensor_count++)
        ok = read_tensor_info(r, &out->tensors[out->tensor_count], &byte_sizes[out->tensor_count]);
    ok = ok && place_tensors(r, out, byte_sizes);
    free(byte_sizes);
    return ok;
}

bool vkmoe_gguf_parse(const uint8_t *data, uint64_t size, vkmoe_tensor_file *out, char *error,
                      size_t error_size)
{
    memset(out, 0, sizeof(*out));
    reader r = {.data = data, .size = size, .error = error, .error_size = error_size};
    uint64_t tensors, metas;
    bool ok = read_header_counts(&r, &tensors, &metas) && read_metadata(&r, metas, out) &&
              read_tensor_infos(&r, tensors, out) &&
              vkmoe_tensor_file_check_layout(out, error, error_size);
    if (!ok)
        vkmoe_tensor_file_free(out);
    return ok;
}
