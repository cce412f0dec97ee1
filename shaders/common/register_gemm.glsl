// The register path of the expert GEMM: one workgroup of LANES invocations
// (the subgroup size on the device; nothing depends on it being one
// subgroup), no shared memory, no barriers, no indexed local arrays
// (llvmpipe turns those into per-lane scratch). A and the weights are read
// through uniform texel buffers: llvmpipe (Mesa 22.3) loads from a storage
// buffer lane by lane in a branchy loop, but fetches texels with vector
// gathers, which made a 256x1536x1024 f16 GEMM 7x faster (2.98 -> 21.5
// GFLOP/s, measured). Lane l owns eight output columns, column[c]: c < 4
// read from weights0, c >= 4 from weights1. A pass covers 16, 4 or 1 rows
// (see gemm_pass), and adds A[row m][k..k+7] · B_c[column c][k..k+7] per
// step of eight k: the row's A values are lane-uniform, fetched four at a
// time, and each weight is fetched once per pass for all its rows.

// The weights of one step of eight k, as wlo_j = (B_0..3[k + j]) and
// whi_j = (B_4..7[k + j]).
vec4 wlo0, wlo1, wlo2, wlo3, wlo4, wlo5, wlo6, wlo7;
vec4 whi0, whi1, whi2, whi3, whi4, whi5, whi6, whi7;

void load_step(uint base, uint column[8], uint k, uint ld)
{
    vec4 l0, h0, l1, h1, l2, h2, l3, h3, l4, h4, l5, h5, l6, h6, l7, h7;
    load_w8(weights0, base, column[0], k, ld, l0, h0);
    load_w8(weights0, base, column[1], k, ld, l1, h1);
    load_w8(weights0, base, column[2], k, ld, l2, h2);
    load_w8(weights0, base, column[3], k, ld, l3, h3);
    load_w8(weights1, base, column[4], k, ld, l4, h4);
    load_w8(weights1, base, column[5], k, ld, l5, h5);
    load_w8(weights1, base, column[6], k, ld, l6, h6);
    load_w8(weights1, base, column[7], k, ld, l7, h7);
    wlo0 = vec4(l0.x, l1.x, l2.x, l3.x); whi0 = vec4(l4.x, l5.x, l6.x, l7.x);
    wlo1 = vec4(l0.y, l1.y, l2.y, l3.y); whi1 = vec4(l4.y, l5.y, l6.y, l7.y);
    wlo2 = vec4(l0.z, l1.z, l2.z, l3.z); whi2 = vec4(l4.z, l5.z, l6.z, l7.z);
    wlo3 = vec4(l0.w, l1.w, l2.w, l3.w); whi3 = vec4(l4.w, l5.w, l6.w, l7.w);
    wlo4 = vec4(h0.x, h1.x, h2.x, h3.x); whi4 = vec4(h4.x, h5.x, h6.x, h7.x);
    wlo5 = vec4(h0.y, h1.y, h2.y, h3.y); whi5 = vec4(h4.y, h5.y, h6.y, h7.y);
    wlo6 = vec4(h0.z, h1.z, h2.z, h3.z); whi6 = vec4(h4.z, h5.z, h6.z, h7.z);
    wlo7 = vec4(h0.w, h1.w, h2.w, h3.w); whi7 = vec4(h4.w, h5.w, h6.w, h7.w);
}

// acc += A[row][k .. k + 7] · this step's weights, for the row at texel t.
void accumulate(uint t, inout vec4 lo, inout vec4 hi)
{
    vec4 a = texelFetch(rows_a, int(t)), b = texelFetch(rows_a, int(t + 1));
    lo = fma(vec4(a.x), wlo0, lo); hi = fma(vec4(a.x), whi0, hi);
    lo = fma(vec4(a.y), wlo1, lo); hi = fma(vec4(a.y), whi1, hi);
    lo = fma(vec4(a.z), wlo2, lo); hi = fma(vec4(a.z), whi2, hi);
    lo = fma(vec4(a.w), wlo3, lo); hi = fma(vec4(a.w), whi3, hi);
    lo = fma(vec4(b.x), wlo4, lo); hi = fma(vec4(b.x), whi4, hi);
    lo = fma(vec4(b.y), wlo5, lo); hi = fma(vec4(b.y), whi5, hi);
    lo = fma(vec4(b.z), wlo6, lo); hi = fma(vec4(b.z), whi6, hi);
    lo = fma(vec4(b.w), wlo7, lo); hi = fma(vec4(b.w), whi7, hi);
}

// Row m of a pass: columns 0..3 in lo##m, 4..7 in hi##m.
vec4 lo0, lo1, lo2, lo3, lo4, lo5, lo6, lo7, lo8, lo9, lo10, lo11, lo12, lo13, lo14, lo15;
vec4 hi0, hi1, hi2, hi3, hi4, hi5, hi6, hi7, hi8, hi9, hi10, hi11, hi12, hi13, hi14, hi15;

#define PASS_ROWS 1
#define PASS_FUNCTION gemm_pass_1
#include "common/expert_gemm_pass.glsl"
#undef PASS_ROWS
#undef PASS_FUNCTION
#define PASS_ROWS 4
#define PASS_FUNCTION gemm_pass_4
#include "common/expert_gemm_pass.glsl"
#undef PASS_ROWS
#undef PASS_FUNCTION
#define PASS_ROWS 16
#define PASS_FUNCTION gemm_pass_16
#include "common/expert_gemm_pass.glsl"
#undef PASS_ROWS
#undef PASS_FUNCTION

// How many of rows r0 .. r0 + count − 1 hold slots (r0 does): padding rows
// sit at the end of a tile, so they are a prefix of the tile's rest.
uint rows_holding_slots(uvec2 row_slot, uint valid_rows, uint r0, uint count, uint tile_end)
{
    uint n = 1;
    while (n < count && r0 + n < tile_end && slot_at(row_slot, valid_rows, r0 + n) != INVALID)
        n++;
    return n;
}

// One pass from row r0 (which holds a slot) over the depth of the matrices
// at texel `base`; returns the rows holding slots it covered. A weight is
// fetched once per pass however many rows it has, and on llvmpipe fetching
// costs more than the row's FMAs, so a pass is 16 rows when 8 or more hold
// slots, 4 when 2 or more do, and the rest are padding (measured costs per
// pass over an expert, 16:4:1 rows, about 5.2:2.8:2.2).
uint gemm_pass(uvec2 row_slot, uint valid_rows, uint r0, uint tile_end, uint base,
               uint column[8], uint ld)
{
    uint n = rows_holding_slots(row_slot, valid_rows, r0, 16, tile_end);
    if (n >= 8)
        gemm_pass_16(r0, n, base, column, ld);
    else if (n >= 2)
        gemm_pass_4(r0, min(n, 4), base, column, ld);
    else
        gemm_pass_1(r0, 1, base, column, ld);
    return n >= 8 ? n : min(n, 4);
}

void pass_result(uint m, out vec4 lo, out vec4 hi)
{
    switch (m) {
    case 0: lo = lo0; hi = hi0; break;
    case 1: lo = lo1; hi = hi1; break;
    case 2: lo = lo2; hi = hi2; break;
    case 3: lo = lo3; hi = hi3; break;
    case 4: lo = lo4; hi = hi4; break;
    case 5: lo = lo5; hi = hi5; break;
    case 6: lo = lo6; hi = hi6; break;
    case 7: lo = lo7; hi = hi7; break;
    case 8: lo = lo8; hi = hi8; break;
    case 9: lo = lo9; hi = hi9; break;
    case 10: lo = lo10; hi = hi10; break;
    case 11: lo = lo11; hi = hi11; break;
    case 12: lo = lo12; hi = hi12; break;
    case 13: lo = lo13; hi = hi13; break;
    case 14: lo = lo14; hi = hi14; break;
    default: lo = lo15; hi = hi15; break;
    }
}
