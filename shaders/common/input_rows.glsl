// x, the forward's input rows, as the input_rows stage reads them (and the
// GEMV path's router logits, which read x itself: gemm_up.comp's A_FROM_X):
// [tokens][dim] of a vkmoe_weight_type (f32, f16, bf16) at set 0, binding
// 0, widened exactly.
layout(set = 0, binding = 0, std430) readonly buffer X { float x[]; };
layout(set = 0, binding = 0, std430) readonly buffer X16 { uint x16[]; }; // two values a word
// Four values an element, where rows are whole quads (dim a multiple of 4).
layout(set = 0, binding = 0, std430) readonly buffer X4 { vec4 x4[]; };
layout(set = 0, binding = 0, std430) readonly buffer X16x4 { uvec2 x16x4[]; };

float load_x(uint io_type, uint i)
{
    if (io_type == WEIGHT_F32)
        return x[i];
    uint h = x16[i / 2] >> (i % 2) * 16 & 0xffffu;
    return io_type == WEIGHT_F16 ? unpackHalf2x16(h).x : uintBitsToFloat(h << 16);
}

// Elements d .. d + 3 of token's row, zeros past dim: a texel of x_rows.
// Where rows are whole quads, one load (the GEMV logits take two a step of
// 8 weights, as they would from x_rows' texels; element by element, with
// a bound each, llvmpipe took 3-4 times as long over them).
vec4 x_quad(uint io_type, uint dim, uint token, uint d)
{
    uint at = token * dim + d;
    if (dim % 4 == 0 && d < dim) {
        if (io_type == WEIGHT_F32)
            return x4[at / 4];
        uvec2 h = x16x4[at / 4];
        if (io_type == WEIGHT_F16)
            return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
        return uintBitsToFloat(uvec4(h.x << 16, h.x & 0xffff0000u, h.y << 16, h.y & 0xffff0000u));
    }
    vec4 v = vec4(0.0);
    for (uint i = 0; i < 4; i++)
        if (d + i < dim)
            v[i] = load_x(io_type, at + i);
    return v;
}
