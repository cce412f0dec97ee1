/* Routed experts on the host: work split into units, runs of output
 * columns of one expert, taken by the threads from a shared counter. Each
 * output element is summed whole by one unit in a fixed order, so the
 * result does not depend on which thread took which unit: the same input
 * gives the same bits every time (on one CPU; AVX2 and the portable kernel
 * sum in different orders). With six rows or more for an expert, its
 * weight rows are decoded to f32 once, eight at a time, and reused for every row
 * routed to it; with fewer (decode), the types with a kernel of their own
 * are read as stored, each weight read once: the integer-coded types'
 * codes meet the activations as exact integers (cpu_exact.h, exact_for),
 * the others' are turned into floats in registers (stored_kernel_of). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cpu_activation.h"
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
 * 400 MB, 2 threads): runs of 8 rows 15.5 GB/s, of 128 rows 25 GB/s; and
 * decode forwards through the library back to back (128 experts, 2
 * threads, five alternations): 512 rows against 128, f16 0.35-0.39 ms
 * against 0.40-0.43, Q4_K 0.38-0.40 against 0.43-0.47. */
#define MAX_UNIT_ROWS 512u
/* Units each thread should find, at least, so that threads finish near
 * together when experts' row counts differ; no more, since a unit's four
 * runs of memory start cold (a test program, one thread, runs of Q6_K rows
 * at random places: 64 rows long 20.5 GB/s, 128 rows 22.5; Q4_K 23.5 and
 * 24.6). Decode forwards (E 128, k 8, D 1024, F 384, the K types' 512,
 * two threads, median of 300, three alternations), 4 against 8: Q4_0
 * 0.148-0.154 ms against 0.161-0.187, Q4_K 0.177-0.191 against
 * 0.184-0.220, Q6_K 0.329-0.383 against 0.370-0.409, f16 0.287-0.336
 * against 0.302-0.328. */
#define UNITS_PER_THREAD 4u
#define MAX_THREADS 64u
#define SMALL_WORK (1u << 20)

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

/* IQ4_NL's where the exact kernel's levels cost more (no VNNI: cpu_exact.c) */
STORED_KERNEL(dot_iq4_nl_avx2, dot_levels(w, a, rows, len, out, &iq4_nl_table))
#undef STORED_KERNEL

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
 * __builtin_cpu_supports does not know "f16c"). */
static bool runs_avx2(void)
{
    unsigned a, b, c, d;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

/* AVX-VNNI: CPUID 7.1, EAX bit 4 (not every compiler's
 * __builtin_cpu_supports knows it). */
static bool runs_avxvnni(void)
{
    unsigned a, b, c, d;
    return runs_avx2() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & 1u << 4);
}

static bool runs_avx512vnni(void)
{
    return runs_avx2() && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
}
#endif

/* The levels the host kernels are built for, each better than the one
 * before: the portable C, AVX2 (with FMA and F16C), and AVX2 with VNNI's
 * byte dot products in their VEX (Intel's client cores) or EVEX encoding
 * (Zen 4 and 5, Intel's servers: there in 512-bit registers). */
typedef struct cpu_level {
    const char *name;
    bool (*runs)(void);
    const vkmoe_exact_isa *exact; /* NULL: the portable kernel alone */
} cpu_level;

static const cpu_level cpu_levels[] = {
    {"portable", NULL, NULL},
#ifdef HAVE_X86_KERNELS
    {"avx2", runs_avx2, &vkmoe_exact_avx2},
    {"avxvnni", runs_avxvnni, &vkmoe_exact_avxvnni},
    {"avx512vnni", runs_avx512vnni, &vkmoe_exact_avx512vnni},
#endif
};

/* The best level this CPU runs, no better than the one VKMOE_CPU_KERNELS
 * names (to test and compare the levels on one CPU): its exact kernels,
 * or NULL for the portable kernel. Asked once a layer: CPUID is slow. */
static const vkmoe_exact_isa *host_level(void)
{
    const char *cap = getenv("VKMOE_CPU_KERNELS");
    const vkmoe_exact_isa *best = NULL;
    for (size_t i = 0; i < VKMOE_ARRAY_SIZE(cpu_levels); i++) {
        if (cpu_levels[i].runs && cpu_levels[i].runs())
            best = cpu_levels[i].exact;
        if (cap && strcmp(cap, cpu_levels[i].name) == 0)
            break;
    }
    return best;
}

static dot_kernel choose_kernel(const vkmoe_cpu_scratch *s)
{
#ifdef HAVE_X86_KERNELS
    if (s->exact)
        return dot_avx2;
#endif
    (void)s;
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
static stored_kernel stored_kernel_of(const vkmoe_cpu_scratch *s, vkmoe_weight_type type,
                                      uint32_t n)
{
#ifdef HAVE_X86_KERNELS
    static const stored_kernel avx2[] = {
        [VKMOE_WEIGHT_F32] = dot_f32_avx2,       [VKMOE_WEIGHT_F16] = dot_f16_avx2,
        [VKMOE_WEIGHT_BF16] = dot_bf16_avx2,     [VKMOE_WEIGHT_Q8_0] = dot_q8_0_avx2,
        [VKMOE_WEIGHT_IQ4_NL] = dot_iq4_nl_avx2,
    };
    if (n < ROWS_AT_ONCE && (unsigned)type < VKMOE_ARRAY_SIZE(avx2) && s->exact)
        return avx2[type];
#endif
    (void)s, (void)type, (void)n;
    return NULL;
}

/* Row `row` of expert e's matrix in a host array, decoded to n = ld floats. */
static void decode_row(const vkmoe_cpu_scratch *s, const vkmoe_expert_array *a, uint32_t e,
                       uint32_t row, float *dst)
{
    const uint8_t *src = stored_row(a, e, row);
#ifdef HAVE_X86_KERNELS
    /* where the codecs' vectorised loops are slowest */
    static const row_decoder avx2[] = {
        [VKMOE_WEIGHT_F16] = f16_row_avx2,
        [VKMOE_WEIGHT_MXFP4] = mxfp4_row_avx2,
    };
    if ((unsigned)a->type < VKMOE_ARRAY_SIZE(avx2) && avx2[a->type] && s->exact) {
        avx2[a->type](src, a->ld, dst);
        return;
    }
#endif
    (void)s;
    if (a->type == VKMOE_WEIGHT_F32)
        memcpy(dst, src, a->ld * sizeof(float));
    else
        vkmoe_dequantize(a->type, src, a->ld, dst);
}

/* The exact kernel of a type on this CPU's level, or NULL. */
static vkmoe_exact_kernel exact_kernel_of(const vkmoe_cpu_scratch *s, vkmoe_weight_type type)
{
    return s->exact && (unsigned)type < VKMOE_ARRAY_SIZE(s->exact->kernel) ? s->exact->kernel[type]
                                                                           : NULL;
}

/* ---- scratch ---- */

/* A buffer of `count` rows `len` values long in the exact form, in the
 * layout the kernel of `type` reads. */
static vkmoe_status exact_rows_create(vkmoe_context *ctx, const vkmoe_exact_isa *isa,
                                      vkmoe_weight_type type, uint32_t count, uint32_t len,
                                      vkmoe_exact_rows *rows)
{
    size_t blocks = (size_t)count * (len / EXACT_BLOCK);
    rows->layout = isa->layout[type];
    rows->limbs = vkmoe_calloc(count, vkmoe_exact_row_limb_bytes(len));
    rows->lanes = vkmoe_malloc(blocks * EXACT_LANES * sizeof(int32_t));
    rows->scale = vkmoe_malloc(blocks * sizeof(float));
    rows->sum = vkmoe_malloc(blocks * sizeof(float));
    rows->half = vkmoe_malloc(2 * blocks * sizeof(float));
    if (!rows->limbs || !rows->lanes || !rows->scale || !rows->sum || !rows->half)
        return vkmoe_fail(ctx, VKMOE_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    return VKMOE_OK;
}

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
    s->exact = host_level();
    vkmoe_weight_type down = p->down_weight_type ? p->down_weight_type : p->weight_type;
    if (exact_kernel_of(s, p->weight_type))
        VKMOE_TRY(exact_rows_create(layer->ctx, s->exact, p->weight_type, p->max_tokens,
                                    plan->ld_dim, &s->x_exact));
    if (exact_kernel_of(s, down))
        VKMOE_TRY(exact_rows_create(layer->ctx, s->exact, down, plan->max_slots, plan->ld_ffn,
                                    &s->hidden_exact));
    return VKMOE_OK;
}

static void exact_rows_destroy(vkmoe_exact_rows *rows)
{
    free(rows->limbs);
    free(rows->lanes);
    free(rows->scale);
    free(rows->sum);
    free(rows->half);
}

void vkmoe_cpu_scratch_destroy(vkmoe_cpu_scratch *s)
{
    free(s->x);
    free(s->hidden);
    free(s->order);
    free(s->groups);
    free(s->biases);
    free(s->decoded);
    exact_rows_destroy(&s->x_exact);
    exact_rows_destroy(&s->hidden_exact);
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
    /* [experts]: each expert's GEMM 1 units completed. Its GEMM 2 units
     * start when all are (its hidden complete), so a thread waits only for
     * units in flight, never for a thread still waking; and a thread done
     * with GEMM 1 goes on with the experts already complete instead of
     * waiting for the last unit of all (a Q4_K decode forward's threads
     * each waited ~10 µs of 220 there). */
    atomic_uint *up_done;
} cpu_work;

/* Expert e's biases of matrix m from column (or row) i on, or NULL
 * without biases. */
static const float *bias_row(const cpu_work *w, vkmoe_expert_matrix m, uint32_t e, uint32_t i)
{
    const vkmoe_layer_params *p = &w->layer->params;
    if (!w->s->biases)
        return NULL;
    size_t ffn = p->ffn_dim, experts = p->experts;
    size_t at = m == VKMOE_EXPERT_DOWN ? 2 * experts * ffn + (size_t)e * p->dim
                                       : (m == VKMOE_EXPERT_UP ? experts * ffn : 0) + e * ffn;
    return w->s->biases + at + i;
}

static float bias_of(const cpu_work *w, vkmoe_expert_matrix m, uint32_t e, uint32_t i)
{
    const float *b = bias_row(w, m, e, i);
    return b ? *b : 0;
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

/* Columns f0 .. f0 + cols − 1 of GEMM 1 for one slot of expert e:
 * act(s·g + b1, s·u + b3), g and u the gate and up products. */
static void up_outputs(const cpu_work *w, uint32_t e, uint32_t slot, uint32_t f0, uint32_t cols,
                       const float *g, const float *u, float *hidden)
{
    const vkmoe_layer_params *p = &w->layer->params;
    vkmoe_activation_run run = {
        .g = g,
        .u = u,
        .b1 = bias_row(w, VKMOE_EXPERT_GATE, e, f0),
        .b3 = bias_row(w, VKMOE_EXPERT_UP, e, f0),
        .s = p->scale_expert_input ? w->batch->topk_weight[slot] : 1.0f,
        .columns = cols,
    };
    vkmoe_cpu_activate(p, &run, w->s->exact != NULL, hidden);
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
        decode_row(w->s, up, e, f0 + c, decoded + (size_t)(2 * c + 1) * ld);
        if (gated)
            decode_row(w->s, gate, e, f0 + c, decoded + (size_t)(2 * c) * ld);
    }
    for (uint32_t i0 = 0; i0 < n; i0 += ROWS_AT_ONCE) {
        const float *x[ROWS_AT_ONCE];
        float g[ROWS_AT_ONCE][BLOCK_ROWS], u[ROWS_AT_ONCE][BLOCK_ROWS];
        group_rows(w, slots, n, i0, w->s->x, layer->plan.ld_dim, true, x);
        for (uint32_t c = 0; c < cols; c++) {
            float acc[2][ROWS_AT_ONCE];
            const float *up_row = decoded + (size_t)(2 * c + 1) * ld;
            w->dot(gated ? decoded + (size_t)(2 * c) * ld : up_row, up_row, x, rows_at(n, i0), ld,
                   acc);
            for (uint32_t i = 0; i < rows_at(n, i0); i++)
                g[i][c] = acc[0][i], u[i][c] = acc[1][i];
        }
        for (uint32_t i = 0; i < rows_at(n, i0); i++)
            up_outputs(w, e, slots[i0 + i], f0, cols, g[i], u[i],
                       hidden + (size_t)(i0 + i) * ld_ffn + f0);
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
        decode_row(w->s, down, e, d0 + r, decoded + (size_t)r * ld);
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

/* A stored-row kernel and the n < ROWS_AT_ONCE rows of a it takes: f32
 * rows for a stored_kernel, rows in the exact form for an exact one. */
typedef struct stored_call {
    stored_kernel kernel;
    vkmoe_exact_kernel exact; /* where the type has one: then kernel is unused */
    const float *x[ROWS_AT_ONCE];
    vkmoe_exact_row q[ROWS_AT_ONCE];
} stored_call;

/* Rows r0 .. r0 + count − 1 (count ≤ MAX_UNIT_ROWS) of expert e's matrix
 * m, read as stored, against the n < ROWS_AT_ONCE rows of a:
 * out[i][r − r0] = Σ_d W[r][d]·a_i[d] (a row of a's outputs in one run). A kernel call takes rows a
 * quarter of the run apart, so that it streams STORED_ROWS runs of memory at once (neighbouring
 * rows are one run). A row's sum does not depend on the rows beside it in a call. */
static void stored_rows(const stored_call *call, const vkmoe_expert_array *m, uint32_t e,
                        uint32_t r0, uint32_t count, uint32_t n, float out[][MAX_UNIT_ROWS])
{
    uint32_t apart = (count + STORED_ROWS - 1) / STORED_ROWS;
    /* An expert's rows follow one another: finding each call's rows by
     * stored_row cost Q4_K decode 10% (a call is ~130 ns of work). */
    const uint8_t *first = stored_row(m, e, r0);
    size_t stride = vkmoe_weight_bytes(m->type, m->ld);
    for (uint32_t r = 0; r < apart; r++) {
        const uint8_t *rows[STORED_ROWS];
        float acc[STORED_ROWS][ROWS_AT_ONCE];
        for (uint32_t j = 0; j < STORED_ROWS; j++) /* past the end: row r again */
            rows[j] = first + (r + j * apart < count ? r + j * apart : r) * stride;
        if (call->exact)
            call->exact(rows, call->q, n, m->ld, acc);
        else
            call->kernel(rows, call->x, n, m->ld, acc);
        for (uint32_t j = 0; j < STORED_ROWS && r + j * apart < count; j++)
            for (uint32_t i = 0; i < n; i++)
                out[i][r + j * apart] = acc[j][i];
    }
}

/* The exact kernel GEMM 1 (or 2) of a group of n rows takes, or NULL:
 * decode's, where the type has one and the rows' exact form is made. */
static vkmoe_exact_kernel exact_for(const cpu_work *w, bool down, uint32_t n)
{
    const vkmoe_cpu_scratch *s = w->s;
    const vkmoe_expert_array *m =
        &w->layer->weights.host[down ? VKMOE_EXPERT_DOWN : VKMOE_EXPERT_UP];
    bool made = (down ? s->hidden_exact : s->x_exact).limbs != NULL;
    return n < ROWS_AT_ONCE && made ? exact_kernel_of(s, m->type) : NULL;
}

/* The n rows a group's stored kernel takes: x's rows by token (GEMM 1) or
 * hidden's rows from order[first] on (GEMM 2), as f32 and, for an exact
 * kernel, in the exact form. */
static void stored_inputs(const cpu_work *w, const uint32_t *slots, uint32_t n, uint32_t first,
                          bool down, stored_call *call)
{
    const vkmoe_cpu_scratch *s = w->s;
    const vkmoe_layer_plan *plan = &w->layer->plan;
    uint32_t ld = down ? plan->ld_ffn : plan->ld_dim;
    const float *base = down ? s->hidden + (size_t)first * ld : s->x;
    group_rows(w, slots, n, 0, base, ld, !down, call->x);
    for (uint32_t i = 0; call->exact && i < ROWS_AT_ONCE; i++) {
        uint32_t at = i < n ? i : n - 1;
        uint32_t row = down ? first + at : slots[at] / w->layer->params.top_k;
        call->q[i] = vkmoe_exact_row_at(down ? &s->hidden_exact : &s->x_exact, row, ld);
    }
}

/* GEMM 1 for columns f0 .. f0 + cols − 1 of expert e (cols ≤
 * MAX_UNIT_ROWS), its weight rows read as stored (decode: n <
 * ROWS_AT_ONCE). */
static void up_stored(cpu_work *w, const stored_call *call, uint32_t e, const uint32_t *slots,
                      uint32_t n, float *hidden, uint32_t f0, uint32_t cols)
{
    const vkmoe_layer *layer = w->layer;
    const vkmoe_expert_array *gate = &layer->weights.host[VKMOE_EXPERT_GATE],
                             *up = &layer->weights.host[VKMOE_EXPERT_UP];
    float g[ROWS_AT_ONCE][MAX_UNIT_ROWS], u[ROWS_AT_ONCE][MAX_UNIT_ROWS];
    stored_rows(call, up, e, f0, cols, n, u);
    bool gated = gate->chunks != NULL;
    if (gated)
        stored_rows(call, gate, e, f0, cols, n, g);
    for (uint32_t i = 0; i < n; i++)
        up_outputs(w, e, slots[i], f0, cols, gated ? g[i] : u[i], u[i],
                   hidden + (size_t)i * layer->plan.ld_ffn + f0);
}

/* GEMM 2 for output columns d0 .. d0 + rows − 1 of expert e (rows ≤
 * MAX_UNIT_ROWS), its weight rows read as stored (decode). */
static void down_stored(cpu_work *w, const stored_call *call, uint32_t e, const uint32_t *slots,
                        uint32_t n, uint32_t d0, uint32_t rows)
{
    const vkmoe_layer *layer = w->layer;
    float z[ROWS_AT_ONCE][MAX_UNIT_ROWS];
    stored_rows(call, &layer->weights.host[VKMOE_EXPERT_DOWN], e, d0, rows, n, z);
    const float *b = bias_row(w, VKMOE_EXPERT_DOWN, e, d0);
    for (uint32_t i = 0; i < n; i++) {
        float *out = w->batch->out + (size_t)slots[i] * layer->params.dim + d0;
        for (uint32_t r = 0; r < rows; r++)
            out[r] = z[i][r] + (b ? b[r] : 0.0f);
    }
}

/* Hidden columns start .. end − 1 of the group's n rows (order[first] on)
 * into the exact form, for GEMM 2's exact kernel: a unit's columns are
 * whole blocks (unit_span), the last unit's run on over the zero padding
 * to ld_ffn. */
static void hidden_to_exact(const cpu_work *w, uint32_t first, uint32_t n, uint32_t start,
                            uint32_t end)
{
    const vkmoe_cpu_scratch *s = w->s;
    uint32_t ld = w->layer->plan.ld_ffn;
    uint32_t stop = end == w->layer->params.ffn_dim ? ld : end;
    for (uint32_t i = first; i < first + n; i++)
        s->exact->convert(s->hidden + (size_t)i * ld, start / EXACT_BLOCK,
                          (stop + EXACT_BLOCK - 1) / EXACT_BLOCK, &s->hidden_exact, i, ld);
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
    stored_call call = {.kernel = stored_kernel_of(s, m->type, n), .exact = exact_for(w, down, n)};
    if (call.kernel || call.exact) {
        stored_inputs(w, slots, n, first, down, &call);
        if (down)
            down_stored(w, &call, e, slots, n, start, end - start);
        else
            up_stored(w, &call, e, slots, n, hidden, start, end - start);
    }
    for (uint32_t b = start; b < end && !call.kernel && !call.exact; b += BLOCK_ROWS) {
        uint32_t rows = end - b < BLOCK_ROWS ? end - b : BLOCK_ROWS;
        if (down)
            down_block(w, e, slots, n, hidden, b, rows, decoded);
        else
            up_block(w, e, slots, n, hidden, b, rows, decoded);
    }
    if (!down && exact_for(w, true, n))
        hidden_to_exact(w, first, n, start, end);
}

static void run_gemm(cpu_work *w, unsigned thread, bool down)
{
    const vkmoe_cpu_scratch *s = w->s;
    float *decoded = s->decoded + thread * s->decoded_per_thread;
    uint32_t width = down ? w->layer->params.dim : w->layer->params.ffn_dim;
    uint32_t span = w->span[down], per_expert = w->per_expert[down];
    for (uint32_t u; (u = atomic_fetch_add(&w->next[down], 1)) < w->units[down];) {
        uint32_t start = u % per_expert * span, k = u / per_expert;
        while (down && atomic_load(&w->up_done[k]) < w->per_expert[0])
            sched_yield();
        run_unit(w, decoded, down, w->expert[k], start,
                 start + span < width ? start + span : width);
        if (!down)
            atomic_fetch_add(&w->up_done[k], 1); /* after its hidden columns are written */
    }
}

/* GEMM 1's units, then GEMM 2's, each as its expert's hidden is complete. */
static void run_units(cpu_work *w, unsigned thread)
{
    run_gemm(w, thread, false);
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
 * every thread to find UNITS_PER_THREAD, in whole exact-form blocks (GEMM
 * 1's unit makes its hidden columns' exact form), MAX_UNIT_ROWS at most.
 * Which thread computes a row never changes its sum. */
static uint32_t unit_span(uint32_t experts, uint32_t width, unsigned threads)
{
    _Static_assert(EXACT_BLOCK % BLOCK_ROWS == 0 && MAX_UNIT_ROWS % EXACT_BLOCK == 0,
                   "a unit is whole blocks of both");
    uint64_t span = ((uint64_t)experts * width) / ((uint64_t)threads * UNITS_PER_THREAD);
    span = span / EXACT_BLOCK * EXACT_BLOCK;
    return span < EXACT_BLOCK ? EXACT_BLOCK : span > MAX_UNIT_ROWS ? MAX_UNIT_ROWS : (uint32_t)span;
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
    atomic_uint up_done[VKMOE_MAX_EXPERTS];
    cpu_work w = {.layer = layer,
                  .s = s,
                  .batch = batch,
                  .dot = choose_kernel(s),
                  .expert = expert_list,
                  .up_done = up_done};
    *computed = group_slots(layer, s, batch, &w);
    if (!*computed)
        return VKMOE_OK;
    for (uint32_t k = 0; k < w.experts; k++)
        atomic_init(&up_done[k], 0);
    /* GEMM 2 reads whole rows of hidden: their padding columns are zeros. */
    uint32_t ld_ffn = layer->plan.ld_ffn;
    for (uint32_t i = 0; i < *computed; i++)
        memset(s->hidden + (size_t)i * ld_ffn + p->ffn_dim, 0,
               (ld_ffn - p->ffn_dim) * sizeof(float));
    /* decode's x in the exact form (a token's row, once for all its experts) */
    uint32_t ld_dim = layer->plan.ld_dim;
    for (uint32_t t = 0; s->x_exact.limbs && t < batch->tokens; t++)
        s->exact->convert(s->x + (size_t)t * ld_dim, 0, ld_dim / EXACT_BLOCK, &s->x_exact, t,
                          ld_dim);
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
