/* Weight encodings: IEEE half and bfloat16 (convert.h). */
#include <math.h>
#include <string.h>

#include "convert.h"

uint16_t vkmoe_f32_to_f16(float value)
{
    uint32_t f;
    memcpy(&f, &value, 4);
    uint32_t sign = (f >> 16) & 0x8000u;
    uint32_t exponent = (f >> 23) & 0xffu;
    uint32_t mantissa = f & 0x7fffffu;
    if (exponent == 0xff)
        return (uint16_t)(sign | 0x7c00u | (mantissa ? 0x200u : 0));
    int e = (int)exponent - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        mantissa |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mantissa >> shift;
        uint32_t rest = mantissa & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mantissa >> 13);
    uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1)))
        half++; /* may carry into the exponent, up to infinity: still correct */
    return (uint16_t)(sign | half);
}

float vkmoe_f16_to_f32(uint16_t value)
{
    uint32_t sign = (uint32_t)(value & 0x8000u) << 16;
    uint32_t exponent = (value >> 10) & 0x1fu;
    uint32_t mantissa = value & 0x3ffu;
    uint32_t f;
    if (exponent == 0x1f) {
        f = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent == 0) {
        float v = ldexpf((float)mantissa, -24);
        memcpy(&f, &v, 4);
        f |= sign;
    } else {
        f = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
    }
    float out;
    memcpy(&out, &f, 4);
    return out;
}

uint16_t vkmoe_f32_to_bf16(float value)
{
    uint32_t f;
    memcpy(&f, &value, 4);
    if ((f & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((f >> 16) | 0x40u); /* keep NaN a NaN */
    f += 0x7fffu + ((f >> 16) & 1u);
    return (uint16_t)(f >> 16);
}

float vkmoe_bf16_to_f32(uint16_t value)
{
    uint32_t f = (uint32_t)value << 16;
    float out;
    memcpy(&out, &f, 4);
    return out;
}
