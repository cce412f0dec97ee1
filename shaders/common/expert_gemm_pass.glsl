// The body of one GEMM pass over PASS_ROWS (1, 4 or 16) rows, included by
// common/register_gemm.glsl once per size. Written out row by row: llvmpipe
// keeps named variables in registers but indexed local arrays in scratch.
// Rows from r0 + valid on read row r0's A (their results are dropped).
#define START(m)                                                                             \
    lo##m = vec4(0.0);                                                                       \
    hi##m = vec4(0.0);                                                                       \
    uint t##m = a_row_texel(r0 + (m < valid ? m : 0))
#define ACCUMULATE(m) accumulate(t##m + k / 4, lo##m, hi##m)

void PASS_FUNCTION(uint r0, uint valid, uint base, uint column[8], uint ld)
{
    START(0);
#if PASS_ROWS >= 4
    START(1);
    START(2);
    START(3);
#endif
#if PASS_ROWS == 16
    START(4);
    START(5);
    START(6);
    START(7);
    START(8);
    START(9);
    START(10);
    START(11);
    START(12);
    START(13);
    START(14);
    START(15);
#endif
    for (uint k = 0; k < ld; k += 8) {
        load_step(base, column, k, ld);
        ACCUMULATE(0);
#if PASS_ROWS >= 4
        ACCUMULATE(1);
        ACCUMULATE(2);
        ACCUMULATE(3);
#endif
#if PASS_ROWS == 16
        ACCUMULATE(4);
        ACCUMULATE(5);
        ACCUMULATE(6);
        ACCUMULATE(7);
        ACCUMULATE(8);
        ACCUMULATE(9);
        ACCUMULATE(10);
        ACCUMULATE(11);
        ACCUMULATE(12);
        ACCUMULATE(13);
        ACCUMULATE(14);
        ACCUMULATE(15);
#endif
    }
}

#undef START
#undef ACCUMULATE
