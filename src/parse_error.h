/* The parsers (json.c, safetensors.c, gguf.c, tensor_file.c) report a
 * failure as a message. Running out of memory is the one failure that is
 * not the input's fault, and its message is exactly VKMOE_PARSE_NO_MEMORY,
 * so that callers can return OUT_OF_HOST_MEMORY rather than FILE_FORMAT
 * (every message about the input names a byte, a key or a tensor, so none
 * equals it). */
#ifndef VKMOE_PARSE_ERROR_H
#define VKMOE_PARSE_ERROR_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define VKMOE_PARSE_NO_MEMORY "out of memory"

/* Write the out-of-memory message; false, for `return`. */
static inline bool vkmoe_parse_no_memory(char *error, size_t error_size)
{
    snprintf(error, error_size, "%s", VKMOE_PARSE_NO_MEMORY);
    return false;
}

static inline bool vkmoe_parse_ran_out_of_memory(const char *error)
{
    return strcmp(error, VKMOE_PARSE_NO_MEMORY) == 0;
}

#endif /* VKMOE_PARSE_ERROR_H */
