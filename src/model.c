/* vkmoe_layer_from_file and vkmoe_model_open: open a Hugging Face
 * checkpoint or a GGUF file, map its files, describe its layers
 * (model_hf.c, model_gguf.c), check every tensor's type and shape against
 * the description, and stream the weights to new layers matrix by matrix. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "model.h"
#include "parse_error.h"

vkmoe_status vkmoe_model_fail(const model_source *s, vkmoe_status status, const char *fmt, ...)
{
    char message[400];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    return vkmoe_fail(s->ctx, status, "%s: %s", s->fn, message);
}

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *out = vkmoe_malloc(n);
    if (out)
        memcpy(out, s, n);
    return out;
}

/* Open path for reading if it is a regular file. O_NONBLOCK: opening a
 * FIFO for reading waits for a writer, forever if none comes; no regular
 * file ever blocks. */
static vkmoe_status open_regular(const model_source *s, const char *path, int *fd, struct stat *st)
{
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (*fd < 0)
        return vkmoe_model_fail(s, VKMOE_ERROR_IO, "cannot open %s", path);
    if (fstat(*fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(*fd);
        *fd = -1;
        return vkmoe_model_fail(s, VKMOE_ERROR_IO, "%s is not a regular file", path);
    }
    return VKMOE_OK;
}

/* Read a whole small file (config.json, an index). */
static vkmoe_status read_text(const model_source *s, const char *path, char **out, size_t *size)
{
    int fd;
    struct stat st;
    VKMOE_TRY(open_regular(s, path, &fd, &st));
    vkmoe_status status = VKMOE_OK;
    if (st.st_size > (64l << 20))
        status = vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT, "%s is over 64 MiB", path);
    size_t length = (size_t)st.st_size;
    *out = status == VKMOE_OK ? vkmoe_malloc(length + 1) : NULL;
    if (status == VKMOE_OK && !*out)
        status = vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    size_t done = 0;
    while (status == VKMOE_OK && done < length) {
        ssize_t n = read(fd, *out + done, length - done);
        if (n <= 0)
            status = vkmoe_model_fail(s, VKMOE_ERROR_IO, "cannot read %s", path);
        else
            done += (size_t)n;
    }
    close(fd);
    if (status != VKMOE_OK) {
        free(*out);
        *out = NULL;
        return status;
    }
    *size = length;
    return VKMOE_OK;
}

/* A parser's failure: the file's fault, unless memory ran out. */
static vkmoe_status parse_failure(const model_source *s, const char *path, const char *error)
{
    if (vkmoe_parse_ran_out_of_memory(error))
        return vkmoe_model_fail(s, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory reading %s",
                                path);
    return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT, "%s: %s", path, error);
}

static vkmoe_status read_json(const model_source *s, const char *path, vkmoe_json *out)
{
    char *text = NULL;
    size_t size = 0;
    VKMOE_TRY(read_text(s, path, &text, &size));
    char error[200];
    bool ok = vkmoe_json_parse(text, size, out, error, sizeof(error));
    free(text);
    return ok ? VKMOE_OK : parse_failure(s, path, error);
}

static vkmoe_status map_file(const model_source *s, const char *path, model_file *out)
{
    int fd;
    struct stat st;
    VKMOE_TRY(open_regular(s, path, &fd, &st));
    vkmoe_status status = VKMOE_OK;
    if (st.st_size == 0)
        status = vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT, "%s is empty", path);
    void *data = status == VKMOE_OK ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)
                                    : MAP_FAILED;
    close(fd);
    if (status == VKMOE_OK && data == MAP_FAILED)
        status = vkmoe_model_fail(s, VKMOE_ERROR_IO, "cannot map %s", path);
    if (status != VKMOE_OK)
        return status;
    out->data = data;
    out->size = (uint64_t)st.st_size;
    out->path = copy_string(path);
    return out->path ? VKMOE_OK
                     : vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
}

/* Map path, parse it as GGUF or safetensors and add it to the source. */
static vkmoe_status open_file(model_source *s, const char *path, model_file **out)
{
    model_file *grown = vkmoe_realloc(s->files, (s->file_count + 1) * sizeof(*grown));
    if (!grown)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    s->files = grown;
    model_file *f = &s->files[s->file_count];
    memset(f, 0, sizeof(*f));
    s->file_count++; /* counted at once so that closing the source unmaps it */
    VKMOE_TRY(map_file(s, path, f));
    char error[300];
    bool ok = s->format->parse(f->data, f->size, &f->tensors, error, sizeof(error));
    if (!ok)
        return parse_failure(s, path, error);
    *out = f;
    return VKMOE_OK;
}

static void close_source(model_source *s)
{
    for (uint32_t i = 0; i < s->file_count; i++) {
        if (s->files[i].data)
            munmap((void *)s->files[i].data, (size_t)s->files[i].size);
        vkmoe_tensor_file_free(&s->files[i].tensors);
        free(s->files[i].path);
    }
    free(s->files);
    free(s->directory);
    vkmoe_json_free(&s->config);
    vkmoe_json_free(&s->index);
}

/* The shard that the index assigns name to ("" without an index). */
static vkmoe_status shard_of(const model_source *s, const char *name, const char **shard)
{
    const vkmoe_json *map = vkmoe_json_get(&s->index, "weight_map");
    const vkmoe_json *entry = vkmoe_json_get(map, name);
    *shard = entry && entry->type == VKMOE_JSON_STRING ? entry->string : "";
    if (s->index.type == VKMOE_JSON_NULL)
        return VKMOE_OK;
    if (!entry)
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s: tensor \"%s\" is not in model.safetensors.index.json",
                                s->directory, name);
    if (!**shard || strchr(*shard, '/') || strcmp(*shard, "..") == 0)
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s: the index names a bad shard for \"%s\"", s->directory, name);
    return VKMOE_OK;
}

static vkmoe_status file_for(model_source *s, const char *name, model_file **out)
{
    const char *shard;
    VKMOE_TRY(shard_of(s, name, &shard));
    if (!*shard) { /* one file: GGUF or model.safetensors, opened first */
        *out = &s->files[0];
        return VKMOE_OK;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", s->directory, shard);
    for (uint32_t i = 0; i < s->file_count; i++)
        if (strcmp(s->files[i].path, path) == 0) {
            *out = &s->files[i];
            return VKMOE_OK;
        }
    return open_file(s, path, out);
}

vkmoe_status vkmoe_model_find(model_source *s, const char *name, const model_file **file,
                              const vkmoe_tensor **tensor)
{
    model_file *f;
    VKMOE_TRY(file_for(s, name, &f));
    *tensor = vkmoe_tensor_file_find(&f->tensors, name);
    *file = f;
    if (!*tensor)
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s has no tensor \"%s\" (is the layer a MoE block?)", f->path,
                                name);
    return VKMOE_OK;
}

bool vkmoe_model_has(model_source *s, const char *name)
{
    model_file *f;
    const char *shard;
    if (shard_of(s, name, &shard) != VKMOE_OK || (*shard && file_for(s, name, &f) != VKMOE_OK))
        return false;
    return vkmoe_tensor_file_find(&(*shard ? f : &s->files[0])->tensors, name) != NULL;
}

static bool is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A checkpoint directory: config.json, then the index or the one file. */
static vkmoe_status open_checkpoint(model_source *s, const char *directory)
{
    s->directory = copy_string(directory);
    if (!s->directory)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", directory);
    VKMOE_TRY(read_json(s, path, &s->config));
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", directory);
    if (access(path, F_OK) == 0)
        return read_json(s, path, &s->index);
    snprintf(path, sizeof(path), "%s/model.safetensors", directory);
    model_file *f;
    return open_file(s, path, &f);
}

/* A single GGUF file. */
static vkmoe_status open_gguf(model_source *s, const char *path)
{
    model_file *f;
    return open_file(s, path, &f);
}

/* A checkpoint directory, or a .safetensors file in one. */
static vkmoe_status open_hf(model_source *s, const char *path)
{
    if (is_directory(path))
        return open_checkpoint(s, path);
    char directory[4096];
    snprintf(directory, sizeof(directory), "%s", path);
    char *slash = strrchr(directory, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(directory, sizeof(directory), ".");
    return open_checkpoint(s, directory);
}

static bool is_gguf(const uint8_t *head, size_t n)
{
    return head && n >= 4 && memcmp(head, "GGUF", 4) == 0;
}

/* A directory, or a safetensors file: an 8-byte little-endian header
 * length, then JSON. */
static bool is_hf(const uint8_t *head, size_t n) { return !head || (n >= 9 && head[8] == '{'); }

static const model_format formats[] = {
    {"GGUF file", "", is_gguf, open_gguf, vkmoe_gguf_parse, vkmoe_model_describe_gguf},
    {"Hugging Face checkpoint", "/config.json", is_hf, open_hf, vkmoe_safetensors_parse,
     vkmoe_model_describe_hf},
};

/* The format of path by what it is (a directory) or its first bytes. */
static vkmoe_status detect(model_source *s, const char *path)
{
    uint8_t head[16];
    ssize_t n = 0;
    bool directory = is_directory(path);
    if (!directory) {
        int fd;
        struct stat st;
        VKMOE_TRY(open_regular(s, path, &fd, &st));
        n = read(fd, head, sizeof(head));
        close(fd);
    }
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(formats); i++)
        if (formats[i].detect(directory ? NULL : head, n > 0 ? (size_t)n : 0)) {
            s->format = &formats[i];
            return VKMOE_OK;
        }
    return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                            "%s is not a model file: expected a checkpoint directory "
                            "(config.json and model.safetensors or its index), a GGUF file "
                            "(\"GGUF\" first) or a .safetensors file of such a directory (a "
                            "header length, then JSON)",
                            path);
}

static vkmoe_status open_source(model_source *s, const char *path)
{
    s->path = path;
    VKMOE_TRY(detect(s, path));
    return s->format->open(s, path);
}

/* ---- checking and uploading tensors ---- */

/* The tensor's shape, leading 1s aside, must be `expected`. */
static vkmoe_status check_shape(const model_source *s, const model_file *f, const vkmoe_tensor *t,
                                const uint64_t *expected, uint32_t dims)
{
    uint32_t skip = 0;
    while (t->dims - skip > dims && t->shape[skip] == 1)
        skip++;
    bool ok = t->dims - skip == dims;
    for (uint32_t d = 0; ok && d < dims; d++)
        ok = t->shape[skip + d] == expected[d];
    if (ok)
        return VKMOE_OK;
    char got[96] = "", want[96] = "";
    for (uint32_t d = 0; d < t->dims; d++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%llu", d ? ", " : "",
                 (unsigned long long)t->shape[d]);
    for (uint32_t d = 0; d < dims; d++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%llu", d ? ", " : "",
                 (unsigned long long)expected[d]);
    return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                            "%s: tensor \"%s\" has shape [%s], the configuration says [%s]",
                            f->path, t->name, got, want);
}

/* The weight type that holds a tensor's elements as they are; one the
 * codec table does not know is refused. */
static vkmoe_status check_dtype(const model_source *s, const model_file *f, const vkmoe_tensor *t)
{
    vkmoe_weight_type type;
    if (vkmoe_weight_type_of_file(t->dtype_name, t->block, t->block_bytes, &type))
        return VKMOE_OK;
    char types[128];
    return vkmoe_model_fail(s, VKMOE_ERROR_UNSUPPORTED,
                            "%s: tensor \"%s\" is %s; vkmoe reads %s tensors", f->path, t->name,
                            t->dtype_name, vkmoe_weight_type_list(types, sizeof(types)));
}

/* The weight type of a tensor check_dtype accepted. */
static vkmoe_weight_type weight_type_of(const vkmoe_tensor *t)
{
    vkmoe_weight_type type = VKMOE_WEIGHT_F32;
    vkmoe_weight_type_of_file(t->dtype_name, t->block, t->block_bytes, &type);
    return type;
}

/* Find a tensor and check its type and shape. */
static vkmoe_status find_checked(model_source *s, const char *name, const uint64_t *shape,
                                 uint32_t dims, const model_file **f, const vkmoe_tensor **t)
{
    VKMOE_TRY(vkmoe_model_find(s, name, f, t));
    VKMOE_TRY(check_dtype(s, *f, *t));
    return check_shape(s, *f, *t, shape, dims);
}

/* n elements of a tensor's type as another weight type, into dst, through
 * f32 (decoding, then encoding or quantizing). */
static vkmoe_status convert(const model_source *s, vkmoe_weight_type from, const uint8_t *src,
                            size_t n, vkmoe_weight_type to, void *dst)
{
    float *values = vkmoe_malloc((n ? n : 1) * sizeof(*values));
    if (!values)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    vkmoe_status status = vkmoe_dequantize(from, src, n, values);
    if (status == VKMOE_OK)
        status = vkmoe_quantize(to, values, n, dst, vkmoe_weight_bytes(to, n));
    free(values);
    return status;
}

typedef vkmoe_status (*vector_setter)(vkmoe_layer *, const float *, size_t);

/* A vector (or the router matrix) of n values, as f32, to a setter. */
static vkmoe_status upload_f32(model_source *s, vkmoe_layer *layer, const char *name,
                               const uint64_t *shape, uint32_t dims, vector_setter set)
{
    const model_file *f;
    const vkmoe_tensor *t;
    VKMOE_TRY(find_checked(s, name, shape, dims, &f, &t));
    size_t n = (size_t)vkmoe_tensor_elements(t);
    float *v = vkmoe_malloc((n ? n : 1) * sizeof(*v));
    if (!v)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    vkmoe_status status =
        convert(s, weight_type_of(t), f->data + t->offset, n, VKMOE_WEIGHT_F32, v);
    if (status == VKMOE_OK)
        status = set(layer, v, n * sizeof(*v));
    free(v);
    return status;
}

/* Count `bytes` more uploaded and tell the caller's callback. */
static vkmoe_status report_progress(model_source *s, uint64_t bytes)
{
    model_progress *p = &s->progress;
    p->done += bytes;
    if (p->fn && !p->fn(p->user_data, p->done, p->total))
        return vkmoe_model_fail(s, VKMOE_ERROR_CANCELLED,
                                "%s: cancelled by the progress callback after %llu of %llu bytes",
                                s->path, (unsigned long long)p->done, (unsigned long long)p->total);
    return VKMOE_OK;
}

/* Rows and columns of matrix m for an FFN of width ffn. */
static void matrix_shape(const vkmoe_layer_params *p, vkmoe_expert_matrix m, uint32_t ffn,
                         uint64_t shape[2])
{
    shape[0] = m == VKMOE_EXPERT_DOWN ? p->dim : ffn;
    shape[1] = m == VKMOE_EXPERT_DOWN ? ffn : p->dim;
}

/* Rows of matrix m's tensor per expert (the layout's fused rows, or the
 * matrix's own). */
static uint64_t tensor_rows(const model_layout *l, vkmoe_expert_matrix m, uint64_t rows)
{
    return l->tensor_rows[m] ? l->tensor_rows[m] : rows;
}

/* The tensor's row (per expert) holding matrix m's row r. */
static uint64_t source_row(const model_layout *l, vkmoe_expert_matrix m, uint64_t r)
{
    return l->row_first[m] + r * (l->row_step[m] ? l->row_step[m] : 1);
}

/* The matrix [rows][cols] from a transposed tensor's [cols][stride]
 * (caller frees *copy). */
static vkmoe_status gather_columns(const model_source *s, const model_layout *l,
                                   vkmoe_expert_matrix m, const uint8_t *src, uint64_t rows,
                                   uint64_t cols, uint64_t stride, size_t element,
                                   const uint8_t **out, void **copy)
{
    uint8_t *matrix = vkmoe_malloc(rows * cols * element);
    if (!matrix)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint64_t r = 0; r < rows; r++) {
        uint64_t column = source_row(l, m, r);
        for (uint64_t c = 0; c < cols; c++)
            memcpy(matrix + (r * cols + c) * element, src + (c * stride + column) * element,
                   element);
    }
    *out = matrix;
    *copy = matrix;
    return VKMOE_OK;
}

/* The matrix's rows gathered from a fused tensor's (caller frees *copy). */
static vkmoe_status gather_rows(const model_source *s, const model_layout *l, vkmoe_expert_matrix m,
                                const uint8_t *src, uint64_t rows, size_t row_bytes,
                                const uint8_t **out, void **copy)
{
    *out = src + source_row(l, m, 0) * row_bytes;
    if (source_row(l, m, 1) == source_row(l, m, 0) + 1) /* contiguous: no copy */
        return VKMOE_OK;
    uint8_t *rows_copy = vkmoe_malloc(rows * row_bytes);
    if (!rows_copy)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint64_t r = 0; r < rows; r++)
        memcpy(rows_copy + r * row_bytes, src + source_row(l, m, r) * row_bytes, row_bytes);
    *out = rows_copy;
    *copy = rows_copy;
    return VKMOE_OK;
}

/* One matrix: straight from the mapping when the file holds the layer's
 * type and the rows are contiguous, else through a copy. index selects a
 * stacked tensor's expert. expert UINT32_MAX: the shared expert. */
static vkmoe_status upload_matrix(model_source *s, vkmoe_layer *layer, const model_layout *l,
                                  const model_file *f, const vkmoe_tensor *t, uint64_t index,
                                  uint32_t expert, vkmoe_expert_matrix m, uint32_t ffn)
{
    vkmoe_weight_type type = vkmoe_matrix_type(&layer->params, m), stored = weight_type_of(t);
    uint64_t shape[2];
    matrix_shape(&layer->params, m, ffn, shape);
    size_t elements = (size_t)(shape[0] * shape[1]),
           row_bytes = vkmoe_weight_bytes(stored, shape[1]);
    uint64_t rows = expert == UINT32_MAX ? shape[0] : tensor_rows(l, m, shape[0]);
    const uint8_t *src = f->data + t->offset + index * rows * row_bytes;
    void *gathered = NULL, *copy = NULL;
    if (expert != UINT32_MAX && l->transposed)
        VKMOE_TRY(gather_columns(s, l, m, src, shape[0], shape[1], rows,
                                 vkmoe_weight_bytes(stored, 1), &src, &gathered));
    else if (expert != UINT32_MAX)
        VKMOE_TRY(gather_rows(s, l, m, src, shape[0], row_bytes, &src, &gathered));
    size_t bytes = vkmoe_weight_bytes(type, elements);
    vkmoe_status status = VKMOE_OK;
    if (stored != type) {
        copy = vkmoe_malloc(bytes);
        status = copy ? convert(s, stored, src, elements, type, copy)
                      : vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    }
    const void *data = copy ? copy : src;
    if (status == VKMOE_OK)
        status = expert == UINT32_MAX ? vkmoe_layer_set_shared_expert(layer, m, data, bytes)
                                      : vkmoe_layer_set_expert(layer, expert, m, data, bytes);
    free(copy);
    free(gathered);
    VKMOE_TRY(status);
    return report_progress(s, bytes);
}

/* Whether the layer reads expert e from the file: every expert, but an
 * expert-parallel shard's own only. */
static bool reads_expert(const vkmoe_layer_params *p, uint32_t e)
{
    return !p->held_experts || p->held_experts[e];
}

/* Bytes upload_layer uploads through upload_matrix for params. */
static uint64_t matrix_bytes(const vkmoe_layer_params *p)
{
    uint64_t bytes = 0, shape[2], experts = 0;
    for (uint32_t e = 0; e < p->experts; e++)
        experts += reads_expert(p, e);
    for (uint32_t m = vkmoe_params_gated(p) ? 0 : 1; m < 3; m++) {
        vkmoe_weight_type type = vkmoe_matrix_type(p, m);
        matrix_shape(p, m, p->ffn_dim, shape);
        bytes += experts * vkmoe_weight_bytes(type, (size_t)(shape[0] * shape[1]));
        matrix_shape(p, m, p->shared_ffn_dim, shape);
        bytes += p->shared_ffn_dim ? vkmoe_weight_bytes(type, (size_t)(shape[0] * shape[1])) : 0;
    }
    return bytes;
}

/* Lend matrix m's host array the file's own bytes of every expert (a
 * stacked tensor's slices, or a tensor per expert wherever it lies) where
 * the layer stores them exactly as the file does; UNSUPPORTED where it
 * cannot (the caller copies them). shape: [experts][rows][cols]; f and t:
 * the stacked tensor, else unused. Experts in different files never share
 * an import: the pages between two mappings may be anything. */
static vkmoe_status lend_experts(model_source *s, vkmoe_layer *layer, const model_layout *l,
                                 vkmoe_expert_matrix m, const uint64_t shape[3],
                                 const model_file *f, const vkmoe_tensor *t)
{
    const vkmoe_layer_params *p = &layer->params;
    vkmoe_weight_type type = vkmoe_matrix_type(p, m);
    uint64_t bytes = vkmoe_weight_bytes(type, (size_t)(shape[1] * shape[2]));
    if (!s->may_lend || l->transposed || l->tensor_rows[m] ||
        !vkmoe_weights_can_lend(layer, m, bytes))
        return VKMOE_ERROR_UNSUPPORTED;
    const uint8_t **data = vkmoe_malloc(p->experts * sizeof(*data));
    uint32_t *file = vkmoe_malloc(p->experts * sizeof(*file));
    vkmoe_status status = VKMOE_OK;
    if (!data || !file)
        status = vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t e = 0; e < p->experts && status == VKMOE_OK; e++) {
        if (!l->stacked) {
            char name[MODEL_NAME_BYTES + 16];
            snprintf(name, sizeof(name), l->expert[m], e);
            status = find_checked(s, name, shape + 1, 2, &f, &t);
        }
        if (status == VKMOE_OK && weight_type_of(t) != type)
            status = VKMOE_ERROR_UNSUPPORTED;
        if (status == VKMOE_OK) {
            data[e] = f->data + t->offset + (l->stacked ? e * bytes : 0);
            file[e] = (uint32_t)(f - s->files);
        }
    }
    if (status == VKMOE_OK)
        status = vkmoe_weights_lend_host(layer, m, data, file);
    free(data);
    free(file);
    if (status != VKMOE_OK)
        return status;
    s->lent = true;
    return report_progress(s, p->experts * bytes);
}

static vkmoe_status upload_experts(model_source *s, vkmoe_layer *layer, const model_layout *l,
                                   vkmoe_expert_matrix m)
{
    const vkmoe_layer_params *p = &layer->params;
    uint64_t shape[3] = {p->experts};
    matrix_shape(p, m, p->ffn_dim, shape + 1);
    shape[1] = tensor_rows(l, m, shape[1]);
    if (l->transposed) { /* [E][cols][rows] */
        uint64_t rows = shape[1];
        shape[1] = shape[2];
        shape[2] = rows;
    }
    const model_file *f = NULL; /* set by find_checked below, stacked or per expert */
    const vkmoe_tensor *t = NULL;
    if (l->stacked)
        VKMOE_TRY(find_checked(s, l->expert[m], shape, 3, &f, &t));
    if (l->stacked && l->transposed && vkmoe_weight_blocked(weight_type_of(t)))
        return vkmoe_model_fail(s, VKMOE_ERROR_UNSUPPORTED,
                                "%s: tensor \"%s\" is transposed ([experts][in][out]) and %s; "
                                "vkmoe reads such tensors in f32, f16 or bf16",
                                f->path, t->name, t->dtype_name);
    vkmoe_status lent = lend_experts(s, layer, l, m, shape, f, t);
    if (lent != VKMOE_ERROR_UNSUPPORTED) /* else the driver refused, or the layout differs: copy */
        return lent;
    for (uint32_t e = 0; e < p->experts; e++) {
        if (!reads_expert(p, e))
            continue;
        if (!l->stacked) {
            char name[MODEL_NAME_BYTES + 16];
            snprintf(name, sizeof(name), l->expert[m], e);
            VKMOE_TRY(find_checked(s, name, shape + 1, 2, &f, &t));
        }
        VKMOE_TRY(upload_matrix(s, layer, l, f, t, l->stacked ? e : 0, e, m, p->ffn_dim));
    }
    return VKMOE_OK;
}

/* A U8 tensor of the given shape (Hugging Face's MXFP4 halves). */
static vkmoe_status find_bytes(model_source *s, const char *name, const uint64_t *shape,
                               uint32_t dims, const model_file **f, const vkmoe_tensor **t)
{
    VKMOE_TRY(vkmoe_model_find(s, name, f, t));
    if (strcmp((*t)->dtype_name, "U8") != 0)
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s: tensor \"%s\" is %s; MXFP4 blocks and scales are U8",
                                (*f)->path, name, (*t)->dtype_name);
    return check_shape(s, *f, *t, shape, dims);
}

/* One row of Hugging Face's MXFP4 as vkmoe's (GGUF's) blocks: the scale
 * byte, then byte j holding element j (low nibble) and j + 16 (high). */
static void repack_mxfp4_row(const uint8_t *codes, const uint8_t *scales, uint64_t blocks,
                             uint8_t *out)
{
    for (uint64_t b = 0; b < blocks; b++, out += 17, codes += 16) {
        out[0] = scales[b];
        for (int j = 0; j < 16; j++) {
            uint8_t low = codes[j / 2] >> (j % 2 * 4) & 0xf;
            uint8_t high = codes[8 + j / 2] >> (j % 2 * 4) & 0xf;
            out[1 + j] = (uint8_t)(low | high << 4);
        }
    }
}

/* GPT-OSS's checkpoints: each expert's rows (gate's and up's interleaved
 * in one tensor) repacked from the blocks and scales tensors. */
static vkmoe_status upload_mxfp4_experts(model_source *s, vkmoe_layer *layer, const model_layout *l,
                                         vkmoe_expert_matrix m)
{
    const vkmoe_layer_params *p = &layer->params;
    uint64_t shape[2];
    matrix_shape(p, m, p->ffn_dim, shape);
    uint64_t rows = tensor_rows(l, m, shape[0]), blocks = shape[1] / 32;
    char name[MODEL_NAME_BYTES + 16];
    const model_file *fb, *fs;
    const vkmoe_tensor *tb, *ts;
    snprintf(name, sizeof(name), "%s_blocks", l->expert[m]);
    VKMOE_TRY(find_bytes(s, name, (uint64_t[]){p->experts, rows, blocks, 16}, 4, &fb, &tb));
    snprintf(name, sizeof(name), "%s_scales", l->expert[m]);
    VKMOE_TRY(find_bytes(s, name, (uint64_t[]){p->experts, rows, blocks}, 3, &fs, &ts));
    size_t bytes = vkmoe_weight_bytes(VKMOE_WEIGHT_MXFP4, (size_t)(shape[0] * shape[1]));
    uint8_t *packed = vkmoe_malloc(bytes);
    if (!packed)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    vkmoe_status status = VKMOE_OK;
    for (uint32_t e = 0; e < p->experts && status == VKMOE_OK; e++) {
        if (!reads_expert(p, e))
            continue;
        for (uint64_t r = 0; r < shape[0]; r++) {
            uint64_t row = (uint64_t)e * rows + source_row(l, m, r);
            repack_mxfp4_row(fb->data + tb->offset + row * blocks * 16,
                             fs->data + ts->offset + row * blocks, blocks,
                             packed + r * blocks * 17);
        }
        status = vkmoe_layer_set_expert(layer, e, m, packed, bytes);
        if (status == VKMOE_OK)
            status = report_progress(s, bytes);
    }
    free(packed);
    return status;
}

/* Stacked expert biases, [experts][ffn] or [experts][dim], or elements of
 * a fused [experts][2·ffn] (tensor_rows, row_first and row_step as for the
 * matrices' rows). */
static vkmoe_status upload_expert_biases(model_source *s, vkmoe_layer *layer, const model_layout *l,
                                         vkmoe_expert_matrix m)
{
    const vkmoe_layer_params *p = &layer->params;
    uint64_t n = m == VKMOE_EXPERT_DOWN ? p->dim : p->ffn_dim;
    uint64_t shape[2] = {p->experts, tensor_rows(l, m, n)};
    const model_file *f;
    const vkmoe_tensor *t;
    VKMOE_TRY(find_checked(s, l->expert_bias[m], shape, 2, &f, &t));
    float *v = vkmoe_malloc(shape[1] * sizeof(*v));
    if (!v)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    vkmoe_status status = VKMOE_OK;
    vkmoe_weight_type stored = weight_type_of(t);
    size_t row_bytes = vkmoe_weight_bytes(stored, shape[1]);
    for (uint32_t e = 0; e < p->experts && status == VKMOE_OK; e++) {
        if (!reads_expert(p, e))
            continue;
        status = convert(s, stored, f->data + t->offset + e * row_bytes, (size_t)shape[1],
                         VKMOE_WEIGHT_F32, v);
        for (uint64_t i = 0; i < n; i++) /* in place: i <= its source */
            v[i] = v[source_row(l, m, i)];
        if (status == VKMOE_OK)
            status = vkmoe_layer_set_expert_bias(layer, e, m, v, n * sizeof(*v));
    }
    free(v);
    return status;
}

static vkmoe_status upload_shared(model_source *s, vkmoe_layer *layer, const model_layout *l,
                                  vkmoe_expert_matrix m)
{
    const vkmoe_layer_params *p = &layer->params;
    uint64_t shape[2];
    matrix_shape(p, m, p->shared_ffn_dim, shape);
    const model_file *f;
    const vkmoe_tensor *t;
    VKMOE_TRY(find_checked(s, l->shared[m], shape, 2, &f, &t));
    return upload_matrix(s, layer, l, f, t, 0, UINT32_MAX, m, p->shared_ffn_dim);
}

static vkmoe_status upload_router(model_source *s, vkmoe_layer *layer, const model_layout *l)
{
    const vkmoe_layer_params *p = &layer->params;
    uint64_t router[2] = {p->experts, p->dim}, experts = p->experts, dim = p->dim;
    VKMOE_TRY(upload_f32(s, layer, l->router, router, 2, vkmoe_layer_set_router));
    if (p->router_bias)
        VKMOE_TRY(upload_f32(s, layer, l->router_bias, &experts, 1, vkmoe_layer_set_router_bias));
    if (p->selection_bias)
        VKMOE_TRY(
            upload_f32(s, layer, l->selection_bias, &experts, 1, vkmoe_layer_set_selection_bias));
    if (p->shared_gate)
        VKMOE_TRY(upload_f32(s, layer, l->shared_gate, &dim, 1, vkmoe_layer_set_shared_gate));
    return VKMOE_OK;
}

static vkmoe_status upload_layer(model_source *s, vkmoe_layer *layer, const model_layout *l)
{
    const vkmoe_layer_params *p = &layer->params;
    VKMOE_TRY(upload_router(s, layer, l));
    for (uint32_t m = vkmoe_params_gated(p) ? 0 : 1; m < 3; m++) {
        VKMOE_TRY(l->mxfp4_pairs ? upload_mxfp4_experts(s, layer, l, m)
                                 : upload_experts(s, layer, l, m));
        if (p->expert_bias)
            VKMOE_TRY(upload_expert_biases(s, layer, l, m));
        if (p->shared_ffn_dim)
            VKMOE_TRY(upload_shared(s, layer, l, m));
    }
    return VKMOE_OK;
}

/* The type of routed expert 0's matrix m. */
static vkmoe_status expert_type(model_source *s, const model_layout *l, vkmoe_expert_matrix m,
                                vkmoe_weight_type *type)
{
    if (l->mxfp4_pairs) {
        *type = VKMOE_WEIGHT_MXFP4;
        return VKMOE_OK;
    }
    char name[MODEL_NAME_BYTES + 16];
    snprintf(name, sizeof(name), l->expert[m], 0u);
    const model_file *f;
    const vkmoe_tensor *t;
    VKMOE_TRY(vkmoe_model_find(s, l->stacked ? l->expert[m] : name, &f, &t));
    VKMOE_TRY(check_dtype(s, f, t));
    *type = weight_type_of(t);
    return VKMOE_OK;
}

/* The routed experts' up and down projections decide the layer's two
 * weight types (a Q4_K_M file: Q4_K and Q6_K); matrices of other types
 * (gate, or the shared expert's) are converted to them. */
static vkmoe_status choose_weight_type(model_source *s, model_layout *l)
{
    VKMOE_TRY(expert_type(s, l, VKMOE_EXPERT_DOWN, &l->params.down_weight_type));
    return expert_type(s, l, VKMOE_EXPERT_UP, &l->params.weight_type);
}

static const char *source_name(const model_source *s)
{
    return s->directory ? s->directory : s->path;
}

/* Describe layer `index` for the caller's params; weight types from its
 * tensors. */
static vkmoe_status describe(model_source *s, uint32_t index, const vkmoe_model_params *mp,
                             model_layout *layout)
{
    memset(layout, 0, sizeof(*layout));
    VKMOE_TRY(s->format->describe(s, index, layout));
    if (layout->layers && index >= layout->layers)
        return vkmoe_model_fail(s, VKMOE_ERROR_INVALID_ARGUMENT,
                                "layer %u is past the last of %s's %u layers", index,
                                source_name(s), layout->layers);
    if (layout->dense)
        return VKMOE_OK;
    VKMOE_TRY(choose_weight_type(s, layout));
    layout->params.max_tokens = mp->max_tokens;
    layout->params.statistics = mp->statistics;
    layout->params.timing = mp->timing;
    layout->params.gemm_path = mp->gemm_path;
    layout->params.cache_policy = mp->cache_policy;
    layout->params.expert_budget_bytes = mp->expert_budget_bytes;
    layout->params.cpu_experts = mp->cpu_expert_layers > 0; /* a model: see place_experts */
    layout->params.held_experts = mp->held_experts;
    if (mp->held_experts && (mp->expert_budget_bytes || mp->cpu_expert_layers))
        return vkmoe_model_fail(s, VKMOE_ERROR_INVALID_ARGUMENT,
                                "held_experts (an expert-parallel shard) keeps its experts on the "
                                "device: not with expert_budget_bytes or cpu_expert_layers");
    uint64_t one = vkmoe_expert_bytes(&layout->params);
    if (mp->expert_budget_bytes && mp->expert_budget_bytes < one)
        return vkmoe_model_fail(s, VKMOE_ERROR_INVALID_ARGUMENT,
                                "expert_budget_bytes (%llu) must hold at least one of layer "
                                "%u's experts (%llu bytes)",
                                (unsigned long long)mp->expert_budget_bytes, index,
                                (unsigned long long)one);
    return VKMOE_OK;
}

/* Whether layer i of a model keeps experts on the device (a MoE layer
 * whose experts are not on the host). */
static bool device_experts(const model_layout *layouts, uint32_t i)
{
    return !layouts[i].dense && !layouts[i].params.cpu_experts;
}

/* With shared_cache, the first layer whose slots layer i's experts share:
 * the first device-experts layer of their shape (i itself for the first). */
static uint32_t slot_group(const model_layout *layouts, uint32_t i)
{
    for (uint32_t j = 0; j < i; j++)
        if (device_experts(layouts, j) &&
            vkmoe_weights_slots_fit(&layouts[j].params, &layouts[i].params))
            return j;
    return i;
}

/* The bytes of the experts that share layer i's budget: its own, or with
 * shared_cache, those of every layer of its slot group. */
static double budget_share_bytes(const model_layout *layouts, uint32_t layers, uint32_t i,
                                 bool shared)
{
    double bytes = 0;
    for (uint32_t j = 0; j < layers; j++)
        if (device_experts(layouts, j) &&
            (shared ? slot_group(layouts, j) == slot_group(layouts, i) : j == i))
            bytes += (double)layouts[j].params.experts * vkmoe_expert_bytes(&layouts[j].params);
    return bytes;
}

/* The experts of a model's first cpu_layers MoE layers on the host; the
 * budget shared by the others in proportion to their experts' bytes, each
 * at least one expert, or with shared_cache by their slot groups, each
 * layer of a group given the group's. */
static vkmoe_status place_experts(model_source *s, uint32_t layers, model_layout *layouts,
                                  uint32_t cpu_layers, uint64_t budget, bool shared)
{
    double all = 0;
    for (uint32_t i = 0, moe = 0; i < layers; i++) {
        vkmoe_layer_params *p = &layouts[i].params;
        if (layouts[i].dense)
            continue;
        p->cpu_experts = moe++ < cpu_layers;
        if (!p->cpu_experts)
            all += (double)p->experts * vkmoe_expert_bytes(p);
    }
    if (budget == 0 || budget >= all)
        return VKMOE_OK;
    for (uint32_t i = 0; i < layers; i++) {
        vkmoe_layer_params *p = &layouts[i].params;
        if (!device_experts(layouts, i))
            continue;
        uint64_t one = vkmoe_expert_bytes(p);
        p->expert_budget_bytes =
            (uint64_t)(budget * (budget_share_bytes(layouts, layers, i, shared) / all));
        if (p->expert_budget_bytes < one)
            return vkmoe_model_fail(s, VKMOE_ERROR_INVALID_ARGUMENT,
                                    "expert_budget_bytes (%llu) leaves layer %u less than one "
                                    "expert (%llu bytes)",
                                    (unsigned long long)budget, i, (unsigned long long)one);
    }
    return VKMOE_OK;
}

/* A layer of the layout's params, working in `shared` (NULL: its own), its
 * cache's slots in *slots's pool (vkmoe_layer_create_in). */
static vkmoe_status create_layer(model_source *s, vkmoe_context *ctx, const model_layout *layout,
                                 vkmoe_workspace *shared, vkmoe_slot_pool **slots,
                                 vkmoe_layer **out)
{
    vkmoe_status status = vkmoe_layer_create_in(ctx, &layout->params, shared, slots, out);
    if (status == VKMOE_ERROR_INVALID_ARGUMENT) /* the file's numbers, not the caller's */
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s%s: its hyper-parameters make no valid layer: %s",
                                source_name(s), s->format->config, vkmoe_last_error());
    return status;
}

/* Progress of `total` bytes begins: the callback's first call, at 0. */
static vkmoe_status progress_start(model_source *s, const vkmoe_model_params *mp, uint64_t total)
{
    s->progress = (model_progress){mp->progress, mp->progress_user_data, 0, total};
    return report_progress(s, 0);
}

static vkmoe_status load(model_source *s, vkmoe_context *ctx, const char *path, uint32_t index,
                         const vkmoe_model_params *mp, vkmoe_layer **out)
{
    VKMOE_TRY(open_source(s, path));
    model_layout layout;
    VKMOE_TRY(describe(s, index, mp, &layout));
    if (layout.dense)
        return vkmoe_model_fail(s, VKMOE_ERROR_UNSUPPORTED,
                                "layer %u of %s is a dense layer, not a MoE block", index,
                                source_name(s));
    VKMOE_TRY(progress_start(s, mp, matrix_bytes(&layout.params)));
    VKMOE_TRY(create_layer(s, ctx, &layout, NULL, NULL, out));
    vkmoe_status status = upload_layer(s, *out, &layout);
    if (status != VKMOE_OK)
        vkmoe_layer_destroy(out);
    return status;
}

vkmoe_status vkmoe_layer_from_file(vkmoe_context *ctx, const char *path, uint32_t layer_index,
                                   const vkmoe_model_params *params, vkmoe_layer **out)
{
    VKMOE_REQUIRE(ctx, out, "vkmoe_layer_from_file: out is NULL");
    *out = NULL;
    VKMOE_REQUIRE(ctx, ctx && path, "vkmoe_layer_from_file: ctx and path must not be NULL");
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    vkmoe_model_params defaults = {0};
    model_source source = {.ctx = ctx, .fn = "vkmoe_layer_from_file"};
    vkmoe_status status = load(&source, ctx, path, layer_index, params ? params : &defaults, out);
    close_source(&source);
    vkmoe_log(ctx, VKMOE_LOG_INFO, "%s (%s): layer %u %s", path,
              source.format ? source.format->name : "not a model", layer_index,
              status == VKMOE_OK ? "loaded" : "failed");
    return status;
}

/* ---- whole models ---- */

struct vkmoe_model {
    vkmoe_context *ctx;
    vkmoe_workspace work; /* shared by the layers */
    vkmoe_layer **layers; /* [layer_count]; NULL for a dense layer */
    uint32_t layer_count;
    /* The files' mappings, kept where layers read experts from them. */
    model_file *files;
    uint32_t file_count;
};

/* Every layer's description (layouts[i], for i below the model's layer
 * count), the workspace the largest needs and the bytes to upload. */
static vkmoe_status describe_model(model_source *s, vkmoe_model *model,
                                   const vkmoe_model_params *mp, model_layout **layouts,
                                   vkmoe_workspace_sizes *sizes, uint64_t *bytes)
{
    model_layout first = {0};
    VKMOE_TRY(s->format->describe(s, 0, &first));
    if (!first.layers)
        return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                "%s%s does not say how many layers the model has "
                                "(num_hidden_layers, <arch>.block_count)",
                                source_name(s), s->format->config);
    model->layer_count = first.layers;
    *layouts = vkmoe_calloc(first.layers, sizeof(**layouts));
    model->layers = vkmoe_calloc(first.layers, sizeof(*model->layers));
    if (!*layouts || !model->layers)
        return vkmoe_fail(s->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    memset(sizes, 0, sizeof(*sizes));
    *bytes = 0;
    uint32_t sparse = 0;
    for (uint32_t i = 0; i < model->layer_count; i++) {
        model_layout *l = &(*layouts)[i];
        VKMOE_TRY(describe(s, i, mp, l));
        if (l->dense)
            continue;
        vkmoe_workspace_sizes need;
        vkmoe_status status = vkmoe_workspace_sizes_of(model->ctx, &l->params, &need);
        if (status == VKMOE_ERROR_INVALID_ARGUMENT)
            return vkmoe_model_fail(s, VKMOE_ERROR_FILE_FORMAT,
                                    "%s%s: layer %u's hyper-parameters make no valid layer: %s",
                                    source_name(s), s->format->config, i, vkmoe_last_error());
        VKMOE_TRY(status);
        vkmoe_workspace_sizes_max(sizes, &need);
        *bytes += matrix_bytes(&l->params);
        sparse++;
    }
    if (!sparse)
        return vkmoe_model_fail(s, VKMOE_ERROR_UNSUPPORTED, "%s has no MoE layer among its %u",
                                source_name(s), model->layer_count);
    return place_experts(s, model->layer_count, *layouts, mp->cpu_expert_layers,
                         mp->expert_budget_bytes, mp->shared_cache);
}

static vkmoe_status open_model(model_source *s, vkmoe_model *model, const char *path,
                               const vkmoe_model_params *mp)
{
    VKMOE_TRY(open_source(s, path));
    model_layout *layouts = NULL;
    vkmoe_workspace_sizes sizes;
    uint64_t bytes = 0;
    vkmoe_status status = describe_model(s, model, mp, &layouts, &sizes, &bytes);
    if (status == VKMOE_OK)
        status = progress_start(s, mp, bytes);
    if (status == VKMOE_OK)
        status = vkmoe_workspace_create(model->ctx, &sizes, &model->work);
    /* With shared_cache, [i]: the pool of the slot group layer i begins
     * (the layers' caches own the pools) */
    vkmoe_slot_pool **pools = NULL;
    if (status == VKMOE_OK && mp->shared_cache &&
        !(pools = vkmoe_calloc(model->layer_count, sizeof(*pools))))
        status = vkmoe_fail(model->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    for (uint32_t i = 0; i < model->layer_count && status == VKMOE_OK; i++) {
        if (layouts[i].dense)
            continue;
        vkmoe_slot_pool **slots = pools ? &pools[slot_group(layouts, i)] : NULL;
        status = create_layer(s, model->ctx, &layouts[i], &model->work, slots, &model->layers[i]);
        if (status != VKMOE_OK)
            break;
        model->layers[i]->model = model;
        model->layers[i]->model_index = i;
        status = upload_layer(s, model->layers[i], &layouts[i]);
    }
    free(pools);
    free(layouts);
    return status;
}

vkmoe_status vkmoe_model_open(vkmoe_context *ctx, const char *path,
                              const vkmoe_model_params *params, vkmoe_model **out)
{
    VKMOE_REQUIRE(ctx, out, "vkmoe_model_open: out is NULL");
    *out = NULL;
    VKMOE_REQUIRE(ctx, ctx && path, "vkmoe_model_open: ctx and path must not be NULL");
    VKMOE_TRY(vkmoe_context_check_alive(ctx));
    if (ctx->options.compile_only)
        return vkmoe_fail(ctx, VKMOE_ERROR_UNSUPPORTED,
                          "vkmoe_model_open: the context only compiles pipelines");
    vkmoe_model *model = vkmoe_calloc(1, sizeof(*model));
    if (!model)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    model->ctx = ctx;
    vkmoe_context_add_layer(ctx); /* the context outlives the model's workspace */
    vkmoe_model_params defaults = {0};
    model_source source = {.ctx = ctx, .fn = "vkmoe_model_open", .may_lend = true};
    vkmoe_status status = open_model(&source, model, path, params ? params : &defaults);
    if (source.lent) { /* the layers read the mappings: the model unmaps them */
        model->files = source.files;
        model->file_count = source.file_count;
        source.files = NULL;
        source.file_count = 0;
    }
    close_source(&source);
    vkmoe_log(ctx, VKMOE_LOG_INFO, "%s (%s): %u layers %s", path,
              source.format ? source.format->name : "not a model", model->layer_count,
              status == VKMOE_OK ? "loaded" : "failed");
    if (status != VKMOE_OK)
        vkmoe_model_destroy(&model);
    *out = model;
    return status;
}

void vkmoe_model_destroy(vkmoe_model **pmodel)
{
    if (!pmodel || !*pmodel)
        return;
    vkmoe_model *model = *pmodel;
    vkmoe_context *ctx = model->ctx;
    for (uint32_t i = 0; model->layers && i < model->layer_count; i++)
        if (model->layers[i]) {
            model->layers[i]->model = NULL;
            vkmoe_layer_destroy(&model->layers[i]);
        }
    vkmoe_context_wait_pending(ctx);
    vkmoe_workspace_destroy(ctx, &model->work);
    model_source mapped = {.files = model->files, .file_count = model->file_count};
    close_source(&mapped);
    free(model->layers);
    free(model);
    *pmodel = NULL;
    vkmoe_context_remove_layer(ctx);
}

uint32_t vkmoe_model_layer_count(const vkmoe_model *model)
{
    return model ? model->layer_count : 0;
}

vkmoe_layer *vkmoe_model_layer(const vkmoe_model *model, uint32_t i)
{
    return model && i < model->layer_count ? model->layers[i] : NULL;
}

vkmoe_status vkmoe_model_memory(const vkmoe_model *model, vkmoe_memory_report *report)
{
    VKMOE_REQUIRE(NULL, model && report, "vkmoe_model_memory: model and report must not be NULL");
    memset(report, 0, sizeof(*report));
    report->scratch = vkmoe_workspace_bytes(&model->work);
    for (uint32_t i = 0; i < model->layer_count; i++) {
        if (!model->layers[i])
            continue;
        vkmoe_memory_report r;
        vkmoe_layer_memory_of(model->layers[i], &r);
        report->experts += r.experts - vkmoe_layer_borrowed_bytes(model->layers[i]);
        report->shared_experts += r.shared_experts;
        report->routers += r.routers;
        report->host_experts += r.host_experts;
        report->host_experts_mapped += r.host_experts_mapped;
        report->scratch += model->layers[i]->plan.token_plan.size; /* its own */
    }
    report->total = report->experts + report->shared_experts + report->routers + report->scratch;
    return VKMOE_OK;
}
