// The expert GEMM for CPU devices (llvmpipe): one subgroup per workgroup, no
// shared memory, no barriers, no local arrays (llvmpipe turns indexed local
// arrays into per-lane scratch and every memory access into a per-lane
// gather). Lane l owns four output columns; a pass covers 8 rows:
//   acc_m = Σ_k A[row m][k] · (B₀[n₀][k], B₁[n₁][k], B₂[n₂][k], B₃[n₃][k])
// where the four (matrix, column) pairs come from the including shader's
// column_of(). Each lane loads A[row m][k0 + lane]; subgroupBroadcast hands
// every value to all lanes, so A is read once per pass.
//   spec 0: TILE_M (rows of a tile, a multiple of 8); 1: LANES (= subgroup
//   size = workgroup size, a multiple of 4); 2: WEIGHT_TYPE (0 f32, 1 f16)
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_ballot : require

layout(constant_id = 0) const uint TILE_M = 32;
layout(constant_id = 1) const uint LANES = 8;
layout(constant_id = 2) const uint WEIGHT_TYPE = 0;
layout(local_size_x_id = 1) in;

const uint PASS_ROWS = 8;

// Where row `row` of A starts (an element index), or INVALID for a padding
// row, and A's element at that start plus k (k below the valid depth).
uint a_row_start(uint row);
float load_a(uint start, uint k);

vec4 load_b4(uvec2 matrix, uint n, uint k, uint rows, uint ld)
{
    if (n >= rows || k >= ld)
        return vec4(0.0);
    uint index = (n * ld + k) / 4;
    if (WEIGHT_TYPE == 1) {
        uvec2 h = Half4Array(matrix).v[index];
        return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
    }
    return Vec4Array(matrix).v[index];
}

vec4 acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7;

#define ACCUMULATE(m, a, lane_k, w) acc##m = fma(vec4(subgroupBroadcast(a, lane_k)), w, acc##m)

// One pass: rows r0 .. r0 + 7, the lane's four (matrix, column) outputs.
void gemm_pass(uint r0, uint depth, uvec2 matrix[4], uint column[4], uint rows, uint ld)
{
    uint lane = gl_SubgroupInvocationID;
    acc0 = acc1 = acc2 = acc3 = acc4 = acc5 = acc6 = acc7 = vec4(0.0);
    uvec4 start_lo = uvec4(a_row_start(r0), a_row_start(r0 + 1), a_row_start(r0 + 2),
                           a_row_start(r0 + 3));
    uvec4 start_hi = uvec4(a_row_start(r0 + 4), a_row_start(r0 + 5), a_row_start(r0 + 6),
                           a_row_start(r0 + 7));
    for (uint k0 = 0; k0 < depth; k0 += LANES) {
        uint k = k0 + lane;
        float a0 = load_a(start_lo.x, k), a1 = load_a(start_lo.y, k);
        float a2 = load_a(start_lo.z, k), a3 = load_a(start_lo.w, k);
        float a4 = load_a(start_hi.x, k), a5 = load_a(start_hi.y, k);
        float a6 = load_a(start_hi.z, k), a7 = load_a(start_hi.w, k);
        for (uint q = 0; q < LANES; q += 4) {
            vec4 w0 = load_b4(matrix[0], column[0], k0 + q, rows, ld);
            vec4 w1 = load_b4(matrix[1], column[1], k0 + q, rows, ld);
            vec4 w2 = load_b4(matrix[2], column[2], k0 + q, rows, ld);
            vec4 w3 = load_b4(matrix[3], column[3], k0 + q, rows, ld);
            for (uint j = 0; j < 4; j++) {
                vec4 w = vec4(w0[j], w1[j], w2[j], w3[j]);
                ACCUMULATE(0, a0, q + j, w);
                ACCUMULATE(1, a1, q + j, w);
                ACCUMULATE(2, a2, q + j, w);
                ACCUMULATE(3, a3, q + j, w);
                ACCUMULATE(4, a4, q + j, w);
                ACCUMULATE(5, a5, q + j, w);
                ACCUMULATE(6, a6, q + j, w);
                ACCUMULATE(7, a7, q + j, w);
            }
        }
    }
}

vec4 pass_result(uint m)
{
    switch (m) {
    case 0: return acc0;
    case 1: return acc1;
    case 2: return acc2;
    case 3: return acc3;
    case 4: return acc4;
    case 5: return acc5;
    case 6: return acc6;
    default: return acc7;
    }
}

uint row_tile_id()
{
    return gl_WorkGroupID.z * gl_NumWorkGroups.y + gl_WorkGroupID.y;
}
