/* The parts of a parsed model file both readers share (tensor_file.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "checked_size.h"
#include "parse_error.h"
#include "tensor_file.h"

void vkmoe_tensor_file_free(vkmoe_tensor_file *file)
{
    for (uint32_t i = 0; file->tensors && i < file->tensor_count; i++)
        free(file->tensors[i].name);
    for (uint32_t i = 0; file->meta && i < file->meta_count; i++) {
        free(file->meta[i].key);
        free(file->meta[i].string);
    }
    free(file->tensors);
    free(file->meta);
    memset(file, 0, sizeof(*file));
}

const vkmoe_tensor *vkmoe_tensor_file_find(const vkmoe_tensor_file *file, const char *name)
{
    for (uint32_t i = 0; i < file->tensor_count; i++)
        if (strcmp(file->tensors[i].name, name) == 0)
            return &file->tensors[i];
    return NULL;
}

const vkmoe_meta *vkmoe_tensor_file_meta(const vkmoe_tensor_file *file, const char *key)
{
    for (uint32_t i = 0; i < file->meta_count; i++)
        if (strcmp(file->meta[i].key, key) == 0)
            return &file->meta[i];
    return NULL;
}

uint64_t vkmoe_tensor_elements(const vkmoe_tensor *tensor)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < tensor->dims; d++)
        if (!vkmoe_mul_u64(n, tensor->shape[d], &n))
            return UINT64_MAX; /* the readers refuse such shapes */
    return n;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const vkmoe_tensor *const *)a)->name, (*(const vkmoe_tensor *const *)b)->name);
}

static int by_offset(const void *a, const void *b)
{
    const vkmoe_tensor *x = *(const vkmoe_tensor *const *)a, *y = *(const vkmoe_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

bool vkmoe_tensor_file_check_layout(const vkmoe_tensor_file *file, char *error, size_t error_size)
{
    uint32_t n = file->tensor_count;
    const vkmoe_tensor **order = vkmoe_malloc((n ? n : 1) * sizeof(*order));
    if (!order) {
        return vkmoe_parse_no_memory(error, error_size);
    }
    for (uint32_t i = 0; i < n; i++)
        order[i] = &file->tensors[i];
    bool ok = true;
    qsort(order, n, sizeof(*order), by_name);
    for (uint32_t i = 1; ok && i < n; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
            snprintf(error, error_size, "tensor \"%s\" is declared twice", order[i]->name);
            ok = false;
        }
    qsort(order, n, sizeof(*order), by_offset);
    /* Empty tensors take no bytes and may stand anywhere. */
    const vkmoe_tensor *last = NULL;
    for (uint32_t i = 0; ok && i < n; i++) {
        if (order[i]->size == 0)
            continue;
        if (last && last->offset + last->size > order[i]->offset) {
            snprintf(error, error_size, "tensors \"%s\" and \"%s\" overlap in the file", last->name,
                     order[i]->name);
            ok = false;
        }
        last = order[i];
    }
    free(order);
    return ok;
}
