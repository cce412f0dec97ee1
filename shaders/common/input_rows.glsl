// x, the forward's input rows, as the input_rows stage reads them (and the
// GEMV path's router logits, which read x itself: gemm_up.comp's A_FROM_X):
// [tokens][dim] of a vkmoe_weight_type (f32, f16, bf16) at set 0, binding
// 0, widened exactly.
layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(set = 0, binding = 0, std430) readonly buffer X16 { uint x16[]; }; // two values a word

float load_x(uint io_type, uint i)
{
    if (io_type == WEIGHT_F32)
        return x[i];
    uint h = x16[i / 2] >> (i % 2) * 16 & 0xffffu;
    return io_type == WEIGHT_F16 ? unpackHalf2x16(h).x : uintBitsToFloat(h << 16);
}

// Elements d .. d + 3 of token's row, zeros past dim: a texel of x_rows.
vec4 x_quad(uint io_type, uint dim, uint token, uint d)
{
    vec4 v = vec4(0.0);
    for (uint i = 0; i < 4; i++)
        if (d + i < dim)
            v[i] = load_x(io_type, token * dim + d + i);
    return v;
}
