// y, the forward's output rows, as combine writes them (combine.comp, and
// gemm_down.comp's GEMV combine at one token): [tokens][dim] of a
// vkmoe_weight_type (f32, f16, bf16) at set 0, binding 1. 16-bit values
// are rounded to nearest even and written two a 32-bit word, never a word
// shared with another invocation (dim even).
layout(set = 0, binding = 1, std430) writeonly buffer Y { float y[]; };
layout(set = 0, binding = 1, std430) writeonly buffer Y4 { vec4 y4[]; };
layout(set = 0, binding = 1, std430) writeonly buffer Y16 { uint y16[]; }; // two values a word

// bf16 of v, rounded to nearest even; NaN stays a (quiet) NaN.
uint bf16_bits(float v)
{
    uint bits = floatBitsToUint(v);
    if (isnan(v))
        return (bits >> 16) | 0x40u;
    return (bits + 0x7fffu + (bits >> 16 & 1u)) >> 16;
}

// a and b as two 16-bit values of io_type (f16 or bf16) in one word.
uint pack16(uint io_type, float a, float b)
{
    if (io_type == WEIGHT_F16)
        return packHalf2x16(vec2(a, b));
    return bf16_bits(a) | bf16_bits(b) << 16;
}
