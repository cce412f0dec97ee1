/* libFuzzer target for vkmoe-run's .npy reader: on arbitrary bytes it
 * must return and free all it allocated; what it accepts has as many
 * values as the file holds after its header. */
#include <stdlib.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

volatile float sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    float *values = NULL;
    uint32_t rows, cols;
    char error[256];
    if (!npy_parse(data, size, &values, &rows, &cols, error, sizeof(error)))
        return 0;
    if ((uint64_t)rows * cols * 2 > size)
        abort();
    for (uint64_t i = 0; i < (uint64_t)rows * cols; i++)
        sink += values[i]; /* every value is inside the allocation */
    free(values);
    return 0;
}
