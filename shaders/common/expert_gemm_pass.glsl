// The body of one GEMM pass over PASS_ROWS (8 or 32) rows, included twice by
// common/expert_gemm.glsl to define gemm_pass_8 and gemm_pass_32. Written
// out row by row: llvmpipe keeps named variables in registers but turns
// indexed local arrays into per-lane scratch memory.
#define ACCUMULATE(m) acc##m = fma(vec4(subgroupBroadcast(a##m, q + j)), w, acc##m)
#define LOAD_A(m, start) float a##m = load_a(start, k)

void PASS_FUNCTION(uint r0, uint depth, uvec2 matrix[4], uint column[4], uint rows, uint ld)
{
    uint lane = gl_SubgroupInvocationID;
    acc0 = vec4(0.0);
    acc1 = vec4(0.0);
    acc2 = vec4(0.0);
    acc3 = vec4(0.0);
    acc4 = vec4(0.0);
    acc5 = vec4(0.0);
    acc6 = vec4(0.0);
    acc7 = vec4(0.0);
#if PASS_ROWS == 32
    acc8 = vec4(0.0);
    acc9 = vec4(0.0);
    acc10 = vec4(0.0);
    acc11 = vec4(0.0);
    acc12 = vec4(0.0);
    acc13 = vec4(0.0);
    acc14 = vec4(0.0);
    acc15 = vec4(0.0);
    acc16 = vec4(0.0);
    acc17 = vec4(0.0);
    acc18 = vec4(0.0);
    acc19 = vec4(0.0);
    acc20 = vec4(0.0);
    acc21 = vec4(0.0);
    acc22 = vec4(0.0);
    acc23 = vec4(0.0);
    acc24 = vec4(0.0);
    acc25 = vec4(0.0);
    acc26 = vec4(0.0);
    acc27 = vec4(0.0);
    acc28 = vec4(0.0);
    acc29 = vec4(0.0);
    acc30 = vec4(0.0);
    acc31 = vec4(0.0);
#endif
    uint start0 = a_row_start(r0 + 0);
    uint start1 = a_row_start(r0 + 1);
    uint start2 = a_row_start(r0 + 2);
    uint start3 = a_row_start(r0 + 3);
    uint start4 = a_row_start(r0 + 4);
    uint start5 = a_row_start(r0 + 5);
    uint start6 = a_row_start(r0 + 6);
    uint start7 = a_row_start(r0 + 7);
#if PASS_ROWS == 32
    uint start8 = a_row_start(r0 + 8);
    uint start9 = a_row_start(r0 + 9);
    uint start10 = a_row_start(r0 + 10);
    uint start11 = a_row_start(r0 + 11);
    uint start12 = a_row_start(r0 + 12);
    uint start13 = a_row_start(r0 + 13);
    uint start14 = a_row_start(r0 + 14);
    uint start15 = a_row_start(r0 + 15);
    uint start16 = a_row_start(r0 + 16);
    uint start17 = a_row_start(r0 + 17);
    uint start18 = a_row_start(r0 + 18);
    uint start19 = a_row_start(r0 + 19);
    uint start20 = a_row_start(r0 + 20);
    uint start21 = a_row_start(r0 + 21);
    uint start22 = a_row_start(r0 + 22);
    uint start23 = a_row_start(r0 + 23);
    uint start24 = a_row_start(r0 + 24);
    uint start25 = a_row_start(r0 + 25);
    uint start26 = a_row_start(r0 + 26);
    uint start27 = a_row_start(r0 + 27);
    uint start28 = a_row_start(r0 + 28);
    uint start29 = a_row_start(r0 + 29);
    uint start30 = a_row_start(r0 + 30);
    uint start31 = a_row_start(r0 + 31);
#endif
    for (uint k0 = 0; k0 < depth; k0 += LANES) {
        uint k = k0 + lane;
        LOAD_A(0, start0);
        LOAD_A(1, start1);
        LOAD_A(2, start2);
        LOAD_A(3, start3);
        LOAD_A(4, start4);
        LOAD_A(5, start5);
        LOAD_A(6, start6);
        LOAD_A(7, start7);
#if PASS_ROWS == 32
        LOAD_A(8, start8);
        LOAD_A(9, start9);
        LOAD_A(10, start10);
        LOAD_A(11, start11);
        LOAD_A(12, start12);
        LOAD_A(13, start13);
        LOAD_A(14, start14);
        LOAD_A(15, start15);
        LOAD_A(16, start16);
        LOAD_A(17, start17);
        LOAD_A(18, start18);
        LOAD_A(19, start19);
        LOAD_A(20, start20);
        LOAD_A(21, start21);
        LOAD_A(22, start22);
        LOAD_A(23, start23);
        LOAD_A(24, start24);
        LOAD_A(25, start25);
        LOAD_A(26, start26);
        LOAD_A(27, start27);
        LOAD_A(28, start28);
        LOAD_A(29, start29);
        LOAD_A(30, start30);
        LOAD_A(31, start31);
#endif
        for (uint q = 0; q < LANES; q += 4) {
            vec4 w0 = load_b4(matrix[0], column[0], k0 + q, rows, ld);
            vec4 w1 = load_b4(matrix[1], column[1], k0 + q, rows, ld);
            vec4 w2 = load_b4(matrix[2], column[2], k0 + q, rows, ld);
            vec4 w3 = load_b4(matrix[3], column[3], k0 + q, rows, ld);
            for (uint j = 0; j < 4; j++) {
                vec4 w = vec4(w0[j], w1[j], w2[j], w3[j]);
                ACCUMULATE(0);
                ACCUMULATE(1);
                ACCUMULATE(2);
                ACCUMULATE(3);
                ACCUMULATE(4);
                ACCUMULATE(5);
                ACCUMULATE(6);
                ACCUMULATE(7);
#if PASS_ROWS == 32
                ACCUMULATE(8);
                ACCUMULATE(9);
                ACCUMULATE(10);
                ACCUMULATE(11);
                ACCUMULATE(12);
                ACCUMULATE(13);
                ACCUMULATE(14);
                ACCUMULATE(15);
                ACCUMULATE(16);
                ACCUMULATE(17);
                ACCUMULATE(18);
                ACCUMULATE(19);
                ACCUMULATE(20);
                ACCUMULATE(21);
                ACCUMULATE(22);
                ACCUMULATE(23);
                ACCUMULATE(24);
                ACCUMULATE(25);
                ACCUMULATE(26);
                ACCUMULATE(27);
                ACCUMULATE(28);
                ACCUMULATE(29);
                ACCUMULATE(30);
                ACCUMULATE(31);
#endif
            }
        }
    }
}

#undef ACCUMULATE
#undef LOAD_A
