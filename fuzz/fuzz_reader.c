/* libFuzzer target for one model-file reader, chosen at build time
 * (-DFUZZ_PARSE=vkmoe_safetensors_parse or vkmoe_gguf_parse): on arbitrary
 * bytes it must return, and free all it allocated; a tensor it accepts must
 * lie inside the input. */
#include <stdlib.h>

#include "tensor_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vkmoe_tensor_file file;
    char error[256];
    if (!FUZZ_PARSE(data, size, &file, error, sizeof(error)))
        return 0;
    for (uint32_t i = 0; i < file.tensor_count; i++)
        if (file.tensors[i].offset > size || file.tensors[i].size > size - file.tensors[i].offset)
            abort();
    vkmoe_tensor_file_free(&file);
    return 0;
}
