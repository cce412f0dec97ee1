/* Element conversions between the weight encodings, round to nearest even;
 * shared by the model-file loader and the CPU reference. */
#ifndef VKMOE_CONVERT_H
#define VKMOE_CONVERT_H

#include <stddef.h>
#include <stdint.h>

uint16_t vkmoe_f32_to_f16(float value);
float vkmoe_f16_to_f32(uint16_t value);
uint16_t vkmoe_f32_to_bf16(float value);
float vkmoe_bf16_to_f32(uint16_t value);

#endif
