/* The parts of a parsed model file both readers share (tensor_file.h). */
#include <stdlib.h>
#include <string.h>

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
        n *= tensor->shape[d];
    return n;
}
