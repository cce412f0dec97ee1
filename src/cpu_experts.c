/* Routed experts on the host: work split into units, runs of output
 * columns of one expert, taken by the threads from a shared counter. Each
 * output element is summed whole by one unit in a fixed order, so the
 * result does not depend on which thread took which unit: the same input
 * gives the same bits every time (on one CPU; AVX2 and the portable kernel
 * sum in different orders). With six rows or more for an expert, its
 * weight rows are decoded to f32 once, eight at a time, and reused for every row
 * routed to it; with fewer (decode), the types with a kernel of their own
 * (stored_kernel_of) are read as stored, codes turned into floats in
 * registers, each weight read once. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cpu_experts.h"
#include "thread_pool.h"
#include "weight_types.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86_KERNELS 1
#endif

/* Output columns (GEMM 1) or rows (GEMM 2) of one block: eight weight rows
 * decoded once serve every row of the expert. */
#define BLOCK_ROWS 8u
/* A unit, what a thread takes from the shared counter, is a run of blocks
 * of one expert: at most this many weight rows, so that a thread streams
 * long runs of rows (the hardware prefetchers start over at every jump)
 * and takes a unit rarely (the counter's line moves between cores each
 * time). Measured in a test program (f16 decode, 8 experts of 3 MB from
 * 400 MB, 2 threads): runs of 8 rows 15.5 GB/s, of 128 rows 25 GB/s. */
#define MAX_UNIT_ROWS 128u
/* Units each thread should find, at least, so that threads finish near
 * together when experts' row counts differ. */
#define UNITS_PER_THREAD 8u
/* Rows of x (or hidden) a kernel call multiplies at once: 2 weight rows
 * by 6 rows take 12 of AVX2's 16 registers for sums, 8 loads feed 12 FMAs. */
#define ROWS_AT_ONCE 6u
/* Weight rows a stored-row kernel (decode) reads at once, each a run of
 * memory of its own: the more runs in flight, the more of the memory's
 * latency is hidden. A test program (f16, 8 random experts at a time, one
 * thread): two runs 24-27 GB/s, four 30-35; plain loads peak at four. */
#define STORED_ROWS 4u
#define MAX_THREADS 64u
#define SMALL_WORK (1u << 20)
/* How far ahead the stored-row kernels prefetch each weight row they
 * stream. f16 decode (bench, D 1024, F 384, 2 threads, three runs each):
 * none 23-25 GB/s, 768 bytes 22-26, 1536 27-29, 2048 28-30, 3072 29-30. */
#define PREFETCH_BYTES 2048

/* ---- kernels: out[r][i] = Σ_d w_r[d] · a_i[d], r < 2, i < ROWS_AT_ONCE, len a
 * multiple of 8 ---- */

typedef void (*dot_kernel)(const float *w0, const float *w1, const float *const a[ROWS_AT_ONCE],
                           uint32_t rows, uint32_t len, float out[2][ROWS_AT_ONCE]);

static void dot_portable(const float *w0, const float *w1, const float *const a[ROWS_AT_ONCE],
                         uint32_t rows, uint32_t len, float out[2][ROWS_AT_ONCE])
{
    const float *w[2] = {w0, w1};
    for (int r = 0; r < 2; r++)
        for (unsigned i = 0; i < rows; i++) {
            float lanes[8] = {0};
            for (uint32_t d = 0; d < len; d += 8)
                for (int l = 0; l < 8; l++)
                    lanes[l] += w[r][d + l] * a[i][d + l];
            float sum = 0;
            for (int l = 0; l < 8; l++)
                sum += lanes[l];
            out[r][i] = sum;
        }
}

#ifdef HAVE_X86_KERNELS
__attribute__((target("avx2,fma"))) static float sum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* Two weight rows against one row (fewer than six left: decode). */
__attribute__((target("avx2,fma"))) static void
dot1_avx2(const float *w0, const float *w1, const float *a, uint32_t len, float *out0, float *out1)
{
    __m256 p0 = _mm256_setzero_ps(), p1 = p0, q0 = p0, q1 = p0;
    uint32_t d = 0;
    for (; d + 16 <= len; d += 16) {
        __m256 x0 = _mm256_loadu_ps(a + d), x1 = _mm256_loadu_ps(a + d + 8);
        p0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + d), x0, p0);
        q0 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + d), x0, q0);
        p1 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + d + 8), x1, p1);
        q1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + d + 8), x1, q1);
    }
    if (d < len) {
        __m256 x0 = _mm256_loadu_ps(a + d);
        p0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + d), x0, p0);
        q0 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + d), x0, q0);
    }
    *out0 = sum8(_mm256_add_ps(p0, p1));
    *out1 = sum8(_mm256_add_ps(q0, q1));
}

/* Two weight rows against six rows, written out so that the twelve sums
 * stay in registers (GCC keeps arrays of them on the stack); fewer rows
 * go one at a time. */
__attribute__((target("avx2,fma"))) static void dot_avx2(const float *w0, const float *w1,
                                                         const float *const a[ROWS_AT_ONCE],
                                                         uint32_t rows, uint32_t len,
                                                         float out[2][ROWS_AT_ONCE])
{
    if (rows < ROWS_AT_ONCE) {
        for (uint32_t i = 0; i < rows; i++)
            dot1_avx2(w0, w1, a[i], len, &out[0][i], &out[1][i]);
        return;
    }
    _Static_assert(ROWS_AT_ONCE == 6, "dot_avx2 is written out for six rows");
    const float *r0 = a[0], *r1 = a[1], *r2 = a[2], *r3 = a[3], *r4 = a[4], *r5 = a[5];
    __m256 p0 = _mm256_setzero_ps(), p1 = p0, p2 = p0, p3 = p0, p4 = p0, p5 = p0;
    __m256 q0 = p0, q1 = p0, q2 = p0, q3 = p0, q4 = p0, q5 = p0;
    for (uint32_t d = 0; d < len; d += 8) {
        __m256 v0 = _mm256_loadu_ps(w0 + d), v1 = _mm256_loadu_ps(w1 + d), x;
#define ROW(i)                                                                                     \
    x = _mm256_loadu_ps(r##i + d);                                                                 \
    p##i = _mm256_fmadd_ps(v0, x, p##i);                                                           \
    q##i = _mm256_fmadd_ps(v1, x, q##i);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    __m256 p[ROWS_AT_ONCE] = {p0, p1, p2, p3, p4, p5}, q[ROWS_AT_ONCE] = {q0, q1, q2, q3, q4, q5};
    for (unsigned i = 0; i < ROWS_AT_ONCE; i++) {
        out[0][i] = sum8(p[i]);
        out[1][i] = sum8(q[i]);
    }
}

/* A stored kernel (the table of stored_kernel_of) whose body is one call
 * of a kernel for a family of types, with this type's parameters. */
#define STORED_KERNEL(name, call)                                                                  \
    __attribute__((target("avx2,fma,f16c"))) static void name(                                     \
        const uint8_t *const w[STORED_ROWS], const float *const a[ROWS_AT_ONCE], uint32_t rows,    \
        uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])                                        \
    {                                                                                              \
        call;                                                                                      \
    }

/* A stored kernel's sums, one for each of its weight rows: zeroed, and
 * summed into out[r][i]. */
__attribute__((target("avx"), always_inline)) static inline void zero_sums(__m256 acc[STORED_ROWS])
{
    for (uint32_t r = 0; r < STORED_ROWS; r++)
        acc[r] = _mm256_setzero_ps();
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
store_sums(const __m256 acc[STORED_ROWS], float out[STORED_ROWS][ROWS_AT_ONCE], uint32_t i)
{
    for (uint32_t r = 0; r < STORED_ROWS; r++)
        out[r][i] = sum8(acc[r]);
}

/* Weight rows of floats, read as stored. */
typedef enum float_rows { ROWS_F16, ROWS_BF16, ROWS_F32 } float_rows;

/* Values d .. d + 7 of a row as f32: f16 by F16C, bf16 as an f32's top half. */
__attribute__((target("avx2,f16c"), always_inline)) static inline __m256
eight_floats(const uint8_t *row, uint32_t d, float_rows kind)
{
    if (kind == ROWS_F32)
        return _mm256_loadu_ps((const float *)row + d);
    __m128i h = _mm_loadu_si128((const __m128i *)(row + 2 * d));
    return kind == ROWS_BF16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                             : _mm256_cvtph_ps(h);
}

/* f16, bf16 or f32 weight rows straight from memory against fewer than
 * six rows (decode), one row at a time: each weight is read once, never
 * decoded to a buffer. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
dot_float_rows(const uint8_t *const w[STORED_ROWS], const float *const a[ROWS_AT_ONCE],
               uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE], float_rows kind)
{
    const uint32_t value_bytes = kind == ROWS_F32 ? 4 : 2;
    for (uint32_t i = 0; i < rows; i++) {
        /* Two sums a weight row: eight chains of FMAs in flight, so that
         * the arithmetic keeps up with the loads (four chains measured 10%
         * slower from memory). */
        __m256 p[STORED_ROWS][2];
        for (uint32_t r = 0; r < STORED_ROWS; r++)
            p[r][0] = p[r][1] = _mm256_setzero_ps();
        const float *x = a[i];
        uint32_t d = 0;
        for (; d + 32 <= len; d += 32) {
            /* Rows that follow in memory are next: ask for them ahead, as
             * the hardware's prefetchers stop at every page (a row of 2048
             * f16 is one) and decode is bound by the memory's latency. */
#if PREFETCH_BYTES
            for (uint32_t r = 0; r < STORED_ROWS; r++)
                for (uint32_t line = 0; line < 32 * value_bytes; line += 64)
                    _mm_prefetch((const char *)(w[r] + value_bytes * d + PREFETCH_BYTES + line),
                                 _MM_HINT_T0);
#endif
            for (uint32_t k = 0; k < 4; k++) {
                __m256 xv = _mm256_loadu_ps(x + d + 8 * k);
                for (uint32_t r = 0; r < STORED_ROWS; r++)
                    p[r][k & 1] =
                        _mm256_fmadd_ps(eight_floats(w[r], d + 8 * k, kind), xv, p[r][k & 1]);
            }
        }
        for (uint32_t k = 0; d < len; d += 8, k++) {
            __m256 xv = _mm256_loadu_ps(x + d);
            for (uint32_t r = 0; r < STORED_ROWS; r++)
                p[r][k & 1] = _mm256_fmadd_ps(eight_floats(w[r], d, kind), xv, p[r][k & 1]);
        }
        for (uint32_t r = 0; r < STORED_ROWS; r++)
            out[r][i] = sum8(_mm256_add_ps(p[r][0], p[r][1]));
    }
}

STORED_KERNEL(dot_f16_avx2, dot_float_rows(w, a, rows, len, out, ROWS_F16))
STORED_KERNEL(dot_bf16_avx2, dot_float_rows(w, a, rows, len, out, ROWS_BF16))
STORED_KERNEL(dot_f32_avx2, dot_float_rows(w, a, rows, len, out, ROWS_F32))

/* Q8_0 blocks straight from memory (34 bytes: f16 d, 32 int8 codes): Σ q·x
 * a block, times d. The four rows' scaling FMAs are four chains. */
__attribute__((target("avx2,fma,f16c"))) static void
dot_q8_0_avx2(const uint8_t *const w[STORED_ROWS], const float *const a[ROWS_AT_ONCE],
              uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])
{
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS];
        zero_sums(acc);
        for (uint32_t b = 0; b < len / 32; b++) {
            const float *x = a[i] + 32 * b;
            __m256 s[STORED_ROWS];
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
#if PREFETCH_BYTES
                _mm_prefetch((const char *)(w[r] + 34 * b + PREFETCH_BYTES), _MM_HINT_T0);
#endif
                s[r] = _mm256_setzero_ps();
            }
            for (int c = 0; c < 32; c += 8) {
                __m256 xv = _mm256_loadu_ps(x + c);
                for (uint32_t r = 0; r < STORED_ROWS; r++) {
                    const __m128i *codes = (const __m128i *)(w[r] + 34 * b + 2 + c);
                    s[r] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(codes))), xv, s[r]);
                }
            }
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                uint16_t d;
                memcpy(&d, w[r] + 34 * b, 2);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(d)), s[r], acc[r]);
            }
        }
        store_sums(acc, out, i);
    }
}

/* Q4_0, Q5_0, Q4_1 and Q5_1 blocks of 32 (quantize.c): f16 d, f16 m for
 * the affine _1 types, four bytes of fifth bits for the 5-bit ones (code
 * i's at bit i), then 16 bytes of nibbles (byte l holds codes l and
 * l + 16); w = d·(q − 2^(bits−1)), or d·q + m. */
typedef struct block32 {
    uint32_t bytes, high, nibbles; /* a block's size, where its parts begin */
    int bits;
    bool affine;
} block32;

/* A block32 type's blocks straight from memory, a block of each of the
 * four rows in turn: Σ (q − centre)·x a block, times d (plus m·Σx). */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
dot_block32(const uint8_t *const w[STORED_ROWS], const float *const a[ROWS_AT_ONCE], uint32_t rows,
            uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE], block32 f)
{
    const __m256i nibble = _mm256_set1_epi32(0xf), one = _mm256_set1_epi32(1),
                  centre = _mm256_set1_epi32(1 << (f.bits - 1)),
                  lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS];
        zero_sums(acc);
        for (uint32_t b = 0; b < len / 32; b++) {
            __m256 xv[4], sx = _mm256_setzero_ps();
            for (int k = 0; k < 4; k++) {
                xv[k] = _mm256_loadu_ps(a[i] + 32 * b + 8 * k);
                sx = _mm256_add_ps(sx, xv[k]);
            }
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *block = w[r] + f.bytes * b;
#if PREFETCH_BYTES
                _mm_prefetch((const char *)(block + PREFETCH_BYTES), _MM_HINT_T0);
#endif
                __m256i n0 =
                    _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(block + f.nibbles)));
                __m256i n1 =
                    _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(block + f.nibbles + 8)));
                __m256i q[4] = {_mm256_and_si256(n0, nibble), _mm256_and_si256(n1, nibble),
                                _mm256_srli_epi32(n0, 4), _mm256_srli_epi32(n1, 4)};
                uint32_t high = 0;
                if (f.bits == 5)
                    memcpy(&high, block + f.high, 4);
                __m256 s = _mm256_setzero_ps();
                for (int k = 0; k < 4; k++) {
                    if (f.bits == 5) {
                        __m256i shift = _mm256_add_epi32(lane, _mm256_set1_epi32(8 * k));
                        __m256i bit = _mm256_and_si256(
                            _mm256_srlv_epi32(_mm256_set1_epi32((int)high), shift), one);
                        q[k] = _mm256_or_si256(q[k], _mm256_slli_epi32(bit, 4));
                    }
                    if (!f.affine)
                        q[k] = _mm256_sub_epi32(q[k], centre);
                    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q[k]), xv[k], s);
                }
                uint16_t dm[2];
                memcpy(dm, block, 4);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(dm[0])), s, acc[r]);
                if (f.affine)
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(dm[1])), sx, acc[r]);
            }
        }
        store_sums(acc, out, i);
    }
}

#define BLOCK32(...) dot_block32(w, a, rows, len, out, (block32){__VA_ARGS__})
STORED_KERNEL(dot_q4_0_avx2, BLOCK32(.bytes = 18, .nibbles = 2, .bits = 4))
STORED_KERNEL(dot_q5_0_avx2, BLOCK32(.bytes = 22, .high = 2, .nibbles = 6, .bits = 5))
STORED_KERNEL(dot_q4_1_avx2, BLOCK32(.bytes = 20, .nibbles = 4, .bits = 4, .affine = true))
STORED_KERNEL(dot_q5_1_avx2,
              BLOCK32(.bytes = 24, .high = 4, .nibbles = 8, .bits = 5, .affine = true))
#undef BLOCK32

/* Blocks of 32 whose codes index 16 levels (quantize.c), byte l of the
 * codes holding codes l and l + 16: MXFP4's 17 bytes, an E8M0 exponent e
 * then E2M1 codes, the levels doubled and the scale 2^(e − 128) (as
 * vkmoe's MXFP4 decoder); IQ4_NL's 18, an f16 scale then indices into its
 * non-linear levels. */
typedef struct level_table {
    uint32_t bytes, codes; /* a block's size, where its codes begin */
    bool e8m0;             /* the scale an E8M0 exponent, not an f16 */
    const int8_t *levels;  /* [16] */
} level_table;

static const level_table mxfp4_table = {17, 1, true, vkmoe_mxfp4_levels};
static const level_table iq4_nl_table = {18, 2, false, vkmoe_iq4_levels};

/* A block's 32 levels, mapped by one byte shuffle, and the scale they take. */
__attribute__((target("avx2,f16c"), always_inline)) static inline float
block_levels(const uint8_t *block, const level_table *t, __m256 levels[4])
{
    const __m128i table = _mm_loadu_si128((const __m128i *)t->levels);
    const __m128i nibble = _mm_set1_epi8(0xf);
    __m128i codes = _mm_loadu_si128((const __m128i *)(block + t->codes));
    __m128i low = _mm_shuffle_epi8(table, _mm_and_si128(codes, nibble));
    __m128i high = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(codes, 4), nibble));
    levels[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(low));
    levels[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(low, 8)));
    levels[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(high));
    levels[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(high, 8)));
    if (t->e8m0)
        return vkmoe_e8m0_half(block[0]);
    uint16_t d;
    memcpy(&d, block, 2);
    return _cvtsh_ss(d);
}

/* Level-table blocks straight from memory: Σ level·x a block, times its
 * scale. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
dot_levels(const uint8_t *const w[STORED_ROWS], const float *const a[ROWS_AT_ONCE], uint32_t rows,
           uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE], const level_table *t)
{
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS][2];
        for (uint32_t r = 0; r < STORED_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (uint32_t b = 0; b < len / 32; b++) {
            const float *x = a[i] + 32 * b;
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *block = w[r] + t->bytes * b;
#if PREFETCH_BYTES
                _mm_prefetch((const char *)(block + PREFETCH_BYTES), _MM_HINT_T0);
#endif
                __m256 levels[4];
                float scale = block_levels(block, t, levels);
                __m256 s = _mm256_mul_ps(levels[0], _mm256_loadu_ps(x));
                for (int k = 1; k < 4; k++)
                    s = _mm256_fmadd_ps(levels[k], _mm256_loadu_ps(x + 8 * k), s);
                acc[r][b & 1] = _mm256_fmadd_ps(_mm256_set1_ps(scale), s, acc[r][b & 1]);
            }
        }
        for (uint32_t r = 0; r < STORED_ROWS; r++)
            out[r][i] = sum8(_mm256_add_ps(acc[r][0], acc[r][1]));
    }
}

STORED_KERNEL(dot_mxfp4_avx2, dot_levels(w, a, rows, len, out, &mxfp4_table))
STORED_KERNEL(dot_iq4_nl_avx2, dot_levels(w, a, rows, len, out, &iq4_nl_table))
#undef STORED_KERNEL

/* One Q6_K super-block (210 bytes: 128 of low nibbles, 64 of high bit
 * pairs, 16 int8 scales, f16 d; quantize.c's layout) against x: Σ over
 * sub-blocks of 16 of scale·Σ (q − 32)·x, 8 lanes of it, without d. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256
q6_k_block(const uint8_t *block, const float *x)
{
    const __m256i low = _mm256_set1_epi32(0xf), top = _mm256_set1_epi32(0x30),
                  half = _mm256_set1_epi32(32);
    const int8_t *scale = (const int8_t *)(block + 192);
    __m256 acc = _mm256_setzero_ps();
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = block + 64 * h, *qh = block + 128 + 32 * h;
        const float *xh = x + 128 * h;
        for (int l0 = 0; l0 < 32; l0 += 16) {
            __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                           _mm256_setzero_ps()};
            for (int l = l0; l < l0 + 16; l += 8) {
                __m256i p = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + l)));
                __m256i r = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + 32 + l)));
                __m256i t = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qh + l)));
                __m256i q[4] = {
                    _mm256_or_si256(_mm256_and_si256(p, low),
                                    _mm256_and_si256(_mm256_slli_epi32(t, 4), top)),
                    _mm256_or_si256(_mm256_and_si256(r, low),
                                    _mm256_and_si256(_mm256_slli_epi32(t, 2), top)),
                    _mm256_or_si256(_mm256_srli_epi32(p, 4), _mm256_and_si256(t, top)),
                    _mm256_or_si256(_mm256_srli_epi32(r, 4),
                                    _mm256_and_si256(_mm256_srli_epi32(t, 2), top)),
                };
                for (int k = 0; k < 4; k++)
                    s[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q[k], half)),
                                           _mm256_loadu_ps(xh + 32 * k + l), s[k]);
            }
            /* quarter k, weights l0 .. l0 + 15: sub-block 8h + 2k + l0 / 16 */
            const int8_t *sc = scale + 8 * h + l0 / 16;
            __m256 t = _mm256_mul_ps(_mm256_set1_ps((float)sc[0]), s[0]);
            t = _mm256_fmadd_ps(_mm256_set1_ps((float)sc[2]), s[1], t);
            t = _mm256_fmadd_ps(_mm256_set1_ps((float)sc[4]), s[2], t);
            t = _mm256_fmadd_ps(_mm256_set1_ps((float)sc[6]), s[3], t);
            acc = _mm256_add_ps(acc, t);
        }
    }
    return acc;
}

/* Q6_K super-blocks straight from memory, a super-block of each weight row
 * in turn (two rows' codes at once would not fit the registers). */
__attribute__((target("avx2,fma,f16c"))) static void
dot_q6_k_avx2(const uint8_t *const w[STORED_ROWS], const float *const a[ROWS_AT_ONCE],
              uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])
{
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS];
        zero_sums(acc);
        for (uint32_t s = 0; s < len / 256; s++)
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *block = w[r] + 210 * s;
#if PREFETCH_BYTES
                for (int line = 0; line < 210 + 64; line += 64)
                    _mm_prefetch((const char *)(block + PREFETCH_BYTES + line), _MM_HINT_T0);
#endif
                uint16_t d;
                memcpy(&d, block + 208, 2);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(d)),
                                         q6_k_block(block, a[i] + 256 * s), acc[r]);
            }
        store_sums(acc, out, i);
    }
}

/* d·scale and dmin·min of a Q4_K or Q5_K super-block's eight sub-blocks. */
__attribute__((target("avx2,f16c"))) static void q4_k_steps(const uint8_t *block, float step[8],
                                                            float offset[8])
{
    uint8_t scales[8], mins[8];
    vkmoe_q4_k_scales_mins(block + 4, scales, mins);
    uint16_t h[2];
    memcpy(h, block, 4);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)(h[0] | (uint32_t)h[1] << 16)));
    __m256 d = _mm256_broadcastss_ps(dm), m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    __m256 s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)scales)));
    __m256 n = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)mins)));
    _mm256_storeu_ps(step, _mm256_mul_ps(d, s));
    _mm256_storeu_ps(offset, _mm256_mul_ps(m, n));
}

/* Codes of sub-blocks 2g (low) and 2g + 1 (high) of a Q4_K or Q5_K
 * super-block, eight weights from l: nibbles the bytes at l of the group's
 * 32; with fifth (Q5_K), the bytes at l of its 32 of fifth bits, weight
 * 64g + l's at bit 2g, 64g + 32 + l's at 2g + 1 (quantize.c). */
__attribute__((target("avx2"), always_inline)) static inline void
k_quant_codes(const uint8_t *nibbles, const uint8_t *fifth, int g, __m256i *low, __m256i *high)
{
    const __m256i nibble = _mm256_set1_epi32(0xf), bit4 = _mm256_set1_epi32(0x10);
    __m256i n = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)nibbles));
    *low = _mm256_and_si256(n, nibble);
    *high = _mm256_srli_epi32(n, 4);
    if (fifth) {
        __m256i f = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)fifth));
        f = _mm256_slli_epi32(_mm256_srli_epi32(f, 2 * g), 4);
        *low = _mm256_or_si256(*low, _mm256_and_si256(f, bit4));
        *high = _mm256_or_si256(*high, _mm256_and_si256(_mm256_srli_epi32(f, 1), bit4));
    }
}

/* Q4_K super-blocks straight from memory (144 bytes: f16 d and dmin, 12
 * bytes of 6-bit scales and mins, 128 of nibbles; byte 32g + l holds
 * weight 64g + l low and 64g + 32 + l high), or Q5_K's (176 bytes: the
 * same with 32 bytes of fifth bits before the nibbles), two weight rows,
 * against fewer than six rows: per sub-block of 32, Σ q·x and Σ x, then
 * d·scale·Σqx − dmin·min·Σx. The codes become floats in registers; no row
 * is decoded to memory. Each pair of sub-blocks sums apart and is added to
 * the row's total last, so that the pairs' chains of FMAs overlap. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
k_quant_pair(const uint8_t *w0, const uint8_t *w1, const float *const a[ROWS_AT_ONCE],
             uint32_t rows, uint32_t len, float out[2][ROWS_AT_ONCE], bool fifth)
{
    const uint32_t bytes = fifth ? 176 : 144, codes = fifth ? 48 : 16;
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
        for (uint32_t s = 0; s < len / 256; s++) {
            const uint8_t *b0 = w0 + bytes * s, *b1 = w1 + bytes * s;
#if PREFETCH_BYTES
            /* ask for every line of a super-block ahead */
            for (uint32_t line = 0; line < bytes + 64; line += 64) {
                _mm_prefetch((const char *)(b0 + PREFETCH_BYTES + line), _MM_HINT_T0);
                _mm_prefetch((const char *)(b1 + PREFETCH_BYTES + line), _MM_HINT_T0);
            }
#endif
            float step[2][8], offset[2][8];
            q4_k_steps(b0, step[0], offset[0]);
            q4_k_steps(b1, step[1], offset[1]);
            for (int g = 0; g < 4; g++) {
                const float *xa = a[i] + 256 * s + 64 * g, *xb = xa + 32;
                const uint8_t *q0 = b0 + codes + 32 * g, *q1 = b1 + codes + 32 * g;
                __m256 sa0 = _mm256_setzero_ps(), sb0 = sa0, sa1 = sa0, sb1 = sa0, sxa = sa0,
                       sxb = sa0;
                for (int c = 0; c < 32; c += 8) {
                    __m256 xva = _mm256_loadu_ps(xa + c), xvb = _mm256_loadu_ps(xb + c);
                    __m256i lo0, hi0, lo1, hi1;
                    k_quant_codes(q0 + c, fifth ? b0 + 16 + c : NULL, g, &lo0, &hi0);
                    k_quant_codes(q1 + c, fifth ? b1 + 16 + c : NULL, g, &lo1, &hi1);
                    sa0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo0), xva, sa0);
                    sb0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi0), xvb, sb0);
                    sa1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo1), xva, sa1);
                    sb1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi1), xvb, sb1);
                    sxa = _mm256_add_ps(sxa, xva);
                    sxb = _mm256_add_ps(sxb, xvb);
                }
                __m256 t0 = _mm256_mul_ps(sa0, _mm256_broadcast_ss(&step[0][2 * g]));
                __m256 t1 = _mm256_mul_ps(sa1, _mm256_broadcast_ss(&step[1][2 * g]));
                t0 = _mm256_fmadd_ps(sb0, _mm256_broadcast_ss(&step[0][2 * g + 1]), t0);
                t1 = _mm256_fmadd_ps(sb1, _mm256_broadcast_ss(&step[1][2 * g + 1]), t1);
                t0 = _mm256_fnmadd_ps(sxa, _mm256_broadcast_ss(&offset[0][2 * g]), t0);
                t1 = _mm256_fnmadd_ps(sxa, _mm256_broadcast_ss(&offset[1][2 * g]), t1);
                t0 = _mm256_fnmadd_ps(sxb, _mm256_broadcast_ss(&offset[0][2 * g + 1]), t0);
                t1 = _mm256_fnmadd_ps(sxb, _mm256_broadcast_ss(&offset[1][2 * g + 1]), t1);
                acc0 = _mm256_add_ps(acc0, t0);
                acc1 = _mm256_add_ps(acc1, t1);
            }
        }
        out[0][i] = sum8(acc0);
        out[1][i] = sum8(acc1);
    }
}

__attribute__((target("avx2,fma,f16c"))) static void
dot_q4_k_avx2(const uint8_t *const w[STORED_ROWS], const float *const a[ROWS_AT_ONCE],
              uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])
{
    for (uint32_t r = 0; r < STORED_ROWS; r += 2)
        k_quant_pair(w[r], w[r + 1], a, rows, len, out + r, false);
}

__attribute__((target("avx2,fma,f16c"))) static void
dot_q5_k_avx2(const uint8_t *const w[STORED_ROWS], const float *const a[ROWS_AT_ONCE],
              uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])
{
    for (uint32_t r = 0; r < STORED_ROWS; r += 2)
        k_quant_pair(w[r], w[r + 1], a, rows, len, out + r, true);
}

/* Rows decoded to f32 for prefill, n values (a whole number of blocks). */
typedef void (*row_decoder)(const uint8_t *src, uint32_t n, float *dst);

__attribute__((target("avx2,f16c"))) static void f16_row_avx2(const uint8_t *src, uint32_t n,
                                                              float *dst)
{
    for (uint32_t i = 0; i < n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
}

/* Each level times its block's scale: the codec's product, the same bits. */
__attribute__((target("avx2,f16c"))) static void mxfp4_row_avx2(const uint8_t *src, uint32_t n,
                                                                float *dst)
{
    for (uint32_t b = 0; b < n / 32; b++) {
        __m256 levels[4];
        __m256 scale = _mm256_set1_ps(block_levels(src + 17 * b, &mxfp4_table, levels));
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(dst + 32 * b + 8 * k, _mm256_mul_ps(levels[k], scale));
    }
}

/* AVX2, FMA and F16C (CPUID 1, ECX bit 29: clang 14's
 * __builtin_cpu_supports does not know "f16c"), asked once: CPUID is slow. */
static bool x86_kernels(void)
{
    static atomic_int have = -1;
    int known = atomic_load_explicit(&have, memory_order_relaxed);
    if (known < 0) {
        unsigned a, b, c, d;
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        atomic_store_explicit(&have, known, memory_order_relaxed);
    }
    return known;
}
#endif

static dot_kernel choose_kernel(void)
{
#ifdef HAVE_X86_KERNELS
    if (x86_kernels())
        return dot_avx2;
#endif
    return dot_portable;
}

/* Row `row` of expert e's matrix in a host array, as stored. */
static const uint8_t *stored_row(const vkmoe_expert_array *a, uint32_t e, uint32_t row)
{
    return (const uint8_t *)a->chunks[vkmoe_expert_array_chunk(a, e)].mapped +
           vkmoe_expert_array_offset(a, e) + (size_t)row * vkmoe_weight_bytes(a->type, a->ld);
}

/* STORED_ROWS weight rows as stored, in `type`, against up to
 * ROWS_AT_ONCE rows of a: out[r][i] = Σ_d w_r[d] · a_i[d], len a whole
 * number of blocks. */
typedef void (*stored_kernel)(const uint8_t *const w[STORED_ROWS],
                              const float *const a[ROWS_AT_ONCE], uint32_t rows, uint32_t len,
                              float out[STORED_ROWS][ROWS_AT_ONCE]);

/* The kernel that reads a group of n rows' weights as stored, or NULL:
 * with fewer rows than a kernel call takes (decode), decoding a weight row
 * to f32 first would cost more than the few products made from it. A type
 * without one has its rows decoded (decode_row). */
static stored_kernel stored_kernel_of(vkmoe_weight_type type, uint32_t n)
{
#ifdef HAVE_X86_KERNELS
    static const stored_kernel avx2[] = {
        [VKMOE_WEIGHT_F32] = dot_f32_avx2,       [VKMOE_WEIGHT_F16] = dot_f16_avx2,
        [VKMOE_WEIGHT_BF16] = dot_bf16_avx2,     [VKMOE_WEIGHT_Q8_0] = dot_q8_0_avx2,
        [VKMOE_WEIGHT_Q4_K] = dot_q4_k_avx2,     [VKMOE_WEIGHT_Q5_K] = dot_q5_k_avx2,
        [VKMOE_WEIGHT_Q4_0] = dot_q4_0_avx2,     [VKMOE_WEIGHT_Q5_0] = dot_q5_0_avx2,
        [VKMOE_WEIGHT_Q4_1] = dot_q4_1_avx2,     [VKMOE_WEIGHT_Q5_1] = dot_q5_1_avx2,
        [VKMOE_WEIGHT_Q6_K] = dot_q6_k_avx2,     [VKMOE_WEIGHT_MXFP4] = dot_mxfp4_avx2,
        [VKMOE_WEIGHT_IQ4_NL] = dot_iq4_nl_avx2,
    };
    if (n < ROWS_AT_ONCE && (unsigned)type < VKMOE_ARRAY_SIZE(avx2) && x86_kernels())
        return avx2[type];
#endif
    (void)type, (void)n;
    return NULL;
}

/* Row `row` of expert e's matrix in a host array, decoded to n = ld floats. */
static void decode_row(const vkmoe_expert_array *a, uint32_t e, uint32_t row, float *dst)
{
    const uint8_t *src = stored_row(a, e, row);
#ifdef HAVE_X86_KERNELS
    /* where the codecs' vectorised loops are slowest */
    static const row_decoder avx2[] = {
        [VKMOE_WEIGHT_F16] = f16_row_avx2,
        [VKMOE_WEIGHT_MXFP4] = mxfp4_row_avx2,
    };
    if ((unsigned)a->type < VKMOE_ARRAY_SIZE(avx2) && avx2[a->type] && x86_kernels()) {
        avx2[a->type](src, a->ld, dst);
        return;
    }
#endif
    if (a->type == VKMOE_WEIGHT_F32)
        memcpy(dst, src, a->ld * sizeof(float));
    else
        vkmoe_dequantize(a->type, src, a->ld, dst);
}

/* ---- scratch ---- */

vkmoe_status vkmoe_cpu_scratch_create(vkmoe_layer *layer, vkmoe_cpu_scratch *s)
{
    const vkmoe_layer_params *p = &layer->params;
    const vkmoe_layer_plan *plan = &layer->plan;
    memset(s, 0, sizeof(*s));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->threads = cores < 1 ? 1 : cores > (long)MAX_THREADS ? MAX_THREADS : (uint32_t)cores;
    s->x = vkmoe_malloc((size_t)p->max_tokens * plan->ld_dim * sizeof(float));
    s->hidden = vkmoe_malloc((size_t)plan->max_slots * plan->ld_ffn * sizeof(float));
    s->order = vkmoe_malloc(plan->max_slots * sizeof(uint32_t));
    s->groups = vkmoe_malloc((p->experts + 1) * sizeof(uint32_t));
    if (p->expert_bias)
        s->biases = vkmoe_calloc((size_t)p->experts * (2 * p->ffn_dim + p->dim), sizeof(float));
    /* Made once: at 2 × 8 rows of 1024 floats a thread, a forward's own
     * allocation would reach malloc's mmap threshold and fault its pages
     * in again every time. */
    uint32_t ld = plan->ld_dim > plan->ld_ffn ? plan->ld_dim : plan->ld_ffn;
    s->decoded_per_thread = (size_t)2 * BLOCK_ROWS * ld;
    s->decoded = vkmoe_malloc(s->threads * s->decoded_per_thread * sizeof(float));
    if (!s->x || !s->hidden || !s->order || !s->groups || !s->decoded ||
        (p->expert_bias && !s->biases))
        return vkmoe_fail(layer->ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    return VKMOE_OK;
}

void vkmoe_cpu_scratch_destroy(vkmoe_cpu_scratch *s)
{
    free(s->x);
    free(s->hidden);
    free(s->order);
    free(s->groups);
    free(s->biases);
    free(s->decoded);
    memset(s, 0, sizeof(*s));
}

vkmoe_status vkmoe_cpu_inputs(const vkmoe_layer *layer, vkmoe_cpu_scratch *s, const void *x,
                              uint32_t tokens)
{
    const vkmoe_layer_params *p = &layer->params;
    uint32_t ld = layer->plan.ld_dim;
    size_t row_bytes = vkmoe_weight_bytes(p->io_type, p->dim);
    for (uint32_t t = 0; t < tokens; t++) {
        float *row = s->x + (size_t)t * ld;
        const uint8_t *in = (const uint8_t *)x + t * row_bytes;
        if (p->io_type == VKMOE_WEIGHT_F32)
            memcpy(row, in, row_bytes);
        else
            VKMOE_TRY(vkmoe_dequantize(p->io_type, in, p->dim, row));
        memset(row + p->dim, 0, (ld - p->dim) * sizeof(float));
    }
    return VKMOE_OK;
}

/* ---- one forward's work ---- */

typedef struct cpu_work {
    const vkmoe_layer *layer;
    const vkmoe_cpu_scratch *s;
    const vkmoe_cpu_batch *batch;
    dot_kernel dot;
    uint32_t experts;       /* CPU experts with rows, listed in s->order's groups */
    uint32_t *expert;       /* [experts]: which */
    uint32_t units[2];      /* of GEMM 1 and GEMM 2 */
    uint32_t span[2];       /* weight rows a unit of each: a whole number of blocks */
    uint32_t per_expert[2]; /* units of each an expert has */
    atomic_uint next[2];    /* the next unit of each to take */
    /* GEMM 1's units completed: GEMM 2 starts when all are, so a thread
     * waits only for units in flight, never for a thread still waking. */
    atomic_uint up_done;
} cpu_work;

static float bias_of(const cpu_work *w, vkmoe_expert_matrix m, uint32_t e, uint32_t i)
{
    const vkmoe_layer_params *p = &w->layer->params;
    if (!w->s->biases)
        return 0;
    size_t ffn = p->ffn_dim, experts = p->experts;
    size_t at = m == VKMOE_EXPERT_DOWN ? 2 * experts * ffn + (size_t)e * p->dim
                                       : (m == VKMOE_EXPERT_UP ? experts * ffn : 0) + e * ffn;
    return w->s->biases[at + i];
}

static float activate(const vkmoe_layer_params *p, float g, float u)
{
    if (p->activation == VKMOE_ACTIVATION_RELU)
        return u > 0 ? u : 0;
    if (p->activation == VKMOE_ACTIVATION_SWIGLU_CLAMPED) {
        float limit = p->swiglu_limit;
        g = g < limit ? g : limit;
        u = u < -limit ? -limit : u > limit ? limit : u;
        return (u + 1) * g / (1 + expf(-p->swiglu_alpha * g));
    }
    return g / (1 + expf(-g)) * u;
}

/* How many of a group of n rows one kernel call takes from row i0 on. */
static uint32_t rows_at(uint32_t n, uint32_t i0)
{
    return n - i0 < ROWS_AT_ONCE ? n - i0 : ROWS_AT_ONCE;
}

/* Rows i0 .. i0 + ROWS_AT_ONCE − 1 of the group (the last repeated past its end). */
static void group_rows(const cpu_work *w, const uint32_t *slots, uint32_t n, uint32_t i0,
                       const float *base, uint32_t ld, bool by_token,
                       const float *rows[ROWS_AT_ONCE])
{
    uint32_t k = w->layer->params.top_k;
    for (uint32_t i = 0; i < ROWS_AT_ONCE; i++) {
        uint32_t at = i0 + i < n ? i0 + i : n - 1;
        rows[i] = base + (size_t)(by_token ? slots[at] / k : at) * ld;
    }
}

/* Column f of GEMM 1 for the group's slot: act(s·g + b1, s·u + b3), g and
 * u the gate and up products. */
static float up_output(const cpu_work *w, uint32_t e, uint32_t slot, uint32_t f, float g, float u)
{
    const vkmoe_layer_params *p = &w->layer->params;
    float scale = p->scale_expert_input ? w->batch->topk_weight[slot] : 1.0f;
    return activate(p, scale * g + bias_of(w, VKMOE_EXPERT_GATE, e, f),
                    scale * u + bias_of(w, VKMOE_EXPERT_UP, e, f));
}

/* GEMM 1 for columns f0 .. f0 + cols − 1 of expert e (cols ≤ BLOCK_ROWS),
 * its weight rows decoded to f32: h = act(s·(x·W1ᵀ) + b1, s·(x·W3ᵀ) + b3). */
static void up_block(cpu_work *w, uint32_t e, const uint32_t *slots, uint32_t n, float *hidden,
                     uint32_t f0, uint32_t cols, float *decoded)
{
    const vkmoe_layer *layer = w->layer;
    const vkmoe_expert_array *gate = &layer->weights.host[VKMOE_EXPERT_GATE],
                             *up = &layer->weights.host[VKMOE_EXPERT_UP];
    bool gated = gate->chunks != NULL;
    uint32_t ld = up->ld, ld_ffn = layer->plan.ld_ffn;
    for (uint32_t c = 0; c < cols; c++) {
        decode_row(up, e, f0 + c, decoded + (size_t)(2 * c + 1) * ld);
        if (gated)
            decode_row(gate, e, f0 + c, decoded + (size_t)(2 * c) * ld);
    }
    for (uint32_t i0 = 0; i0 < n; i0 += ROWS_AT_ONCE) {
        const float *x[ROWS_AT_ONCE];
        group_rows(w, slots, n, i0, w->s->x, layer->plan.ld_dim, true, x);
        for (uint32_t c = 0; c < cols; c++) {
            float acc[2][ROWS_AT_ONCE];
            const float *u = decoded + (size_t)(2 * c + 1) * ld;
            w->dot(gated ? decoded + (size_t)(2 * c) * ld : u, u, x, rows_at(n, i0), ld, acc);
            for (uint32_t i = 0; i < ROWS_AT_ONCE && i0 + i < n; i++)
                hidden[(size_t)(i0 + i) * ld_ffn + f0 + c] =
                    up_output(w, e, slots[i0 + i], f0 + c, acc[0][i], acc[1][i]);
        }
    }
}

/* GEMM 2 for output columns d0 .. d0 + rows − 1 of expert e (rows ≤
 * BLOCK_ROWS), its weight rows decoded to f32: z = h·W2ᵀ + b2, into the
 * slots' rows. */
static void down_block(cpu_work *w, uint32_t e, const uint32_t *slots, uint32_t n,
                       const float *hidden, uint32_t d0, uint32_t rows, float *decoded)
{
    const vkmoe_layer *layer = w->layer;
    const vkmoe_expert_array *down = &layer->weights.host[VKMOE_EXPERT_DOWN];
    uint32_t ld = down->ld, dim = layer->params.dim;
    for (uint32_t r = 0; r < rows; r++)
        decode_row(down, e, d0 + r, decoded + (size_t)r * ld);
    for (uint32_t i0 = 0; i0 < n; i0 += ROWS_AT_ONCE) {
        const float *h[ROWS_AT_ONCE];
        group_rows(w, slots, n, i0, hidden, layer->plan.ld_ffn, false, h);
        for (uint32_t r = 0; r < rows; r += 2) {
            float acc[2][ROWS_AT_ONCE];
            uint32_t r1 = r + 1 < rows ? r + 1 : r;
            w->dot(decoded + (size_t)r * ld, decoded + (size_t)r1 * ld, h, rows_at(n, i0), ld, acc);
            for (uint32_t j = 0; j < 2 && r + j < rows; j++)
                for (uint32_t i = 0; i < ROWS_AT_ONCE && i0 + i < n; i++)
                    w->batch->out[(size_t)slots[i0 + i] * dim + d0 + r + j] =
                        acc[j][i] + bias_of(w, VKMOE_EXPERT_DOWN, e, d0 + r + j);
        }
    }
}

/* Rows r0 .. r0 + count − 1 (count ≤ MAX_UNIT_ROWS) of expert e's matrix
 * m, read as stored, against the n < ROWS_AT_ONCE rows of a:
 * out[r − r0][i] = Σ_d W[r][d]·a_i[d]. A kernel call takes rows a quarter
 * of the run apart, so that it streams STORED_ROWS runs of memory at once
 * (neighbouring rows are one run). A row's sum does not depend on the rows
 * beside it in a call. */
static void stored_rows(stored_kernel kernel, const vkmoe_expert_array *m, uint32_t e, uint32_t r0,
                        uint32_t count, const float *const a[ROWS_AT_ONCE], uint32_t n,
                        float out[][ROWS_AT_ONCE])
{
    uint32_t apart = (count + STORED_ROWS - 1) / STORED_ROWS;
    for (uint32_t r = 0; r < apart; r++) {
        const uint8_t *rows[STORED_ROWS];
        float acc[STORED_ROWS][ROWS_AT_ONCE];
        for (uint32_t j = 0; j < STORED_ROWS; j++) /* past the end: row r again */
            rows[j] = stored_row(m, e, r0 + (r + j * apart < count ? r + j * apart : r));
        kernel(rows, a, n, m->ld, acc);
        for (uint32_t j = 0; j < STORED_ROWS && r + j * apart < count; j++)
            memcpy(out[r + j * apart], acc[j], n * sizeof(float));
    }
}

/* GEMM 1 for columns f0 .. f0 + cols − 1 of expert e (cols ≤
 * MAX_UNIT_ROWS), its weight rows read as stored (decode: n <
 * ROWS_AT_ONCE). */
static void up_stored(cpu_work *w, stored_kernel kernel, uint32_t e, const uint32_t *slots,
                      uint32_t n, float *hidden, uint32_t f0, uint32_t cols)
{
    const vkmoe_layer *layer = w->layer;
    const vkmoe_expert_array *gate = &layer->weights.host[VKMOE_EXPERT_GATE],
                             *up = &layer->weights.host[VKMOE_EXPERT_UP];
    float g[MAX_UNIT_ROWS][ROWS_AT_ONCE], u[MAX_UNIT_ROWS][ROWS_AT_ONCE];
    const float *x[ROWS_AT_ONCE];
    group_rows(w, slots, n, 0, w->s->x, layer->plan.ld_dim, true, x);
    stored_rows(kernel, up, e, f0, cols, x, n, u);
    bool gated = gate->chunks != NULL;
    if (gated)
        stored_rows(kernel, gate, e, f0, cols, x, n, g);
    for (uint32_t c = 0; c < cols; c++)
        for (uint32_t i = 0; i < n; i++)
            hidden[(size_t)i * layer->plan.ld_ffn + f0 + c] =
                up_output(w, e, slots[i], f0 + c, gated ? g[c][i] : u[c][i], u[c][i]);
}

/* GEMM 2 for output columns d0 .. d0 + rows − 1 of expert e (rows ≤
 * MAX_UNIT_ROWS), its weight rows read as stored (decode). */
static void down_stored(cpu_work *w, stored_kernel kernel, uint32_t e, const uint32_t *slots,
                        uint32_t n, const float *hidden, uint32_t d0, uint32_t rows)
{
    const vkmoe_layer *layer = w->layer;
    float z[MAX_UNIT_ROWS][ROWS_AT_ONCE];
    const float *h[ROWS_AT_ONCE];
    group_rows(w, slots, n, 0, hidden, layer->plan.ld_ffn, false, h);
    stored_rows(kernel, &layer->weights.host[VKMOE_EXPERT_DOWN], e, d0, rows, h, n, z);
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t i = 0; i < n; i++)
            w->batch->out[(size_t)slots[i] * layer->params.dim + d0 + r] =
                z[r][i] + bias_of(w, VKMOE_EXPERT_DOWN, e, d0 + r);
}

/* One of GEMM 1's (or GEMM 2's) units: rows start .. end − 1 of expert e's
 * weights against the n rows routed to it, from order[first] on. */
static void run_unit(cpu_work *w, float *decoded, bool down, uint32_t e, uint32_t start,
                     uint32_t end)
{
    const vkmoe_cpu_scratch *s = w->s;
    const vkmoe_expert_array *m =
        &w->layer->weights.host[down ? VKMOE_EXPERT_DOWN : VKMOE_EXPERT_UP];
    uint32_t first = s->groups[e], n = s->groups[e + 1] - first;
    const uint32_t *slots = s->order + first;
    float *hidden = s->hidden + (size_t)first * w->layer->plan.ld_ffn;
    stored_kernel kernel = stored_kernel_of(m->type, n);
    if (kernel && down)
        down_stored(w, kernel, e, slots, n, hidden, start, end - start);
    else if (kernel)
        up_stored(w, kernel, e, slots, n, hidden, start, end - start);
    for (uint32_t b = start; b < end && !kernel; b += BLOCK_ROWS) {
        uint32_t rows = end - b < BLOCK_ROWS ? end - b : BLOCK_ROWS;
        if (down)
            down_block(w, e, slots, n, hidden, b, rows, decoded);
        else
            up_block(w, e, slots, n, hidden, b, rows, decoded);
    }
}

static void run_gemm(cpu_work *w, unsigned thread, bool down)
{
    const vkmoe_cpu_scratch *s = w->s;
    float *decoded = s->decoded + thread * s->decoded_per_thread;
    uint32_t width = down ? w->layer->params.dim : w->layer->params.ffn_dim;
    uint32_t span = w->span[down], per_expert = w->per_expert[down];
    for (uint32_t u; (u = atomic_fetch_add(&w->next[down], 1)) < w->units[down];) {
        uint32_t start = u % per_expert * span;
        run_unit(w, decoded, down, w->expert[u / per_expert], start,
                 start + span < width ? start + span : width);
        if (!down)
            atomic_fetch_add(&w->up_done, 1); /* after its hidden columns are written */
    }
}

/* GEMM 1's units, a wait until all are done (hidden complete), GEMM 2's. */
static void run_units(cpu_work *w, unsigned thread)
{
    run_gemm(w, thread, false);
    while (atomic_load(&w->up_done) < w->units[0])
        sched_yield();
    run_gemm(w, thread, true);
}

static void run_units_task(void *arg, unsigned thread) { run_units(arg, thread); }

/* The units on `threads` threads of the context's pool (made now if it is
 * not yet), this one among them. */
static vkmoe_status run_parallel(cpu_work *w, unsigned threads)
{
    vkmoe_context *ctx = w->layer->ctx;
    if (!ctx->cpu_pool_made) {
        if (!vkmoe_thread_pool_create(w->s->threads, &ctx->cpu_pool))
            return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        ctx->cpu_pool_made = true;
    }
    unsigned size = vkmoe_thread_pool_size(ctx->cpu_pool);
    threads = threads < size ? threads : size;
    vkmoe_thread_pool_run(ctx->cpu_pool, threads, run_units_task, w);
    return VKMOE_OK;
}

/* Weight rows a unit of a GEMM `width` rows wide takes: enough units for
 * every thread to find UNITS_PER_THREAD, in whole blocks, MAX_UNIT_ROWS
 * at most. Which thread computes a row never changes its sum. */
static uint32_t unit_span(uint32_t experts, uint32_t width, unsigned threads)
{
    uint64_t span = ((uint64_t)experts * width) / ((uint64_t)threads * UNITS_PER_THREAD);
    span = span / BLOCK_ROWS * BLOCK_ROWS;
    return span < BLOCK_ROWS ? BLOCK_ROWS : span > MAX_UNIT_ROWS ? MAX_UNIT_ROWS : (uint32_t)span;
}

/* s->order and s->groups: the kept slots of CPU experts, grouped by expert
 * in slot order (expert e's at order[groups[e] .. groups[e+1]]); the
 * experts with any in w->expert. Returns how many slots. */
static uint32_t group_slots(const vkmoe_layer *layer, vkmoe_cpu_scratch *s,
                            const vkmoe_cpu_batch *b, cpu_work *w)
{
    uint32_t experts = layer->params.experts, slots = b->tokens * layer->params.top_k;
    uint32_t *g = s->groups;
    memset(g, 0, (experts + 1) * sizeof(uint32_t));
    for (uint32_t i = 0; i < slots; i++)
        if (b->slot_row[i] != VKMOE_INVALID && b->on_cpu[b->ids[i]])
            g[b->ids[i] + 1]++;
    w->experts = 0;
    for (uint32_t e = 0; e < experts; e++) {
        if (g[e + 1])
            w->expert[w->experts++] = e;
        g[e + 1] += g[e];
    }
    /* g[e] serves as e's cursor, ending at e + 1's start; then shift back. */
    for (uint32_t i = 0; i < slots; i++)
        if (b->slot_row[i] != VKMOE_INVALID && b->on_cpu[b->ids[i]])
            s->order[g[b->ids[i]]++] = i;
    for (uint32_t e = experts; e > 0; e--)
        g[e] = g[e - 1];
    g[0] = 0;
    return g[experts];
}

vkmoe_status vkmoe_cpu_experts_run(const vkmoe_layer *layer, vkmoe_cpu_scratch *s,
                                   const vkmoe_cpu_batch *batch, uint32_t *computed)
{
    const vkmoe_layer_params *p = &layer->params;
    uint32_t expert_list[VKMOE_MAX_EXPERTS];
    cpu_work w = {
        .layer = layer, .s = s, .batch = batch, .dot = choose_kernel(), .expert = expert_list};
    *computed = group_slots(layer, s, batch, &w);
    if (!*computed)
        return VKMOE_OK;
    /* GEMM 2 reads whole rows of hidden: their padding columns are zeros. */
    uint32_t ld_ffn = layer->plan.ld_ffn;
    for (uint32_t i = 0; i < *computed; i++)
        memset(s->hidden + (size_t)i * ld_ffn + p->ffn_dim, 0,
               (ld_ffn - p->ffn_dim) * sizeof(float));
    /* A thread costs tens of microseconds to start: small forwards (decode)
     * take one for every SMALL_WORK multiply-adds. */
    uint64_t work = (uint64_t)*computed * p->dim * p->ffn_dim * 3;
    uint64_t wanted = 1 + work / SMALL_WORK;
    unsigned threads = wanted < s->threads ? (unsigned)wanted : s->threads;
    for (int down = 0; down < 2; down++) {
        uint32_t width = down ? p->dim : p->ffn_dim;
        w.span[down] = unit_span(w.experts, width, threads);
        w.per_expert[down] = (width + w.span[down] - 1) / w.span[down];
        w.units[down] = w.experts * w.per_expert[down];
    }
    return run_parallel(&w, threads);
}
