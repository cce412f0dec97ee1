/* NumPy .npy files of hidden states: read f32 or f16 [T][D] (or [D]),
 * write f32 [T][D]. The reader checks the header against the file size and
 * refuses anything else with a message. */
#ifndef VKMOE_RUN_NPY_H
#define VKMOE_RUN_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse .npy bytes into rows x cols f32 values (*values malloc'ed; f16
 * widened). A 1-D array is one row. */
bool npy_parse(const uint8_t *data, size_t size, float **values, uint32_t *rows, uint32_t *cols,
               char *error, size_t error_size);
bool npy_read(const char *path, float **values, uint32_t *rows, uint32_t *cols, char *error,
              size_t error_size);
bool npy_write(const char *path, const float *values, uint32_t rows, uint32_t cols);

#endif
