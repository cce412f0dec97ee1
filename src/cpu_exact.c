/* The exact form's conversion and decode kernels (cpu_exact.h), compiled
 * once for each x86 level by meson.build with that level's -m flags: a
 * limb's byte products are AVX2's maddubs and madd, or one dpbusd where
 * the level has VNNI (two blocks at a time where it has 512-bit VNNI).
 * The sums are integers, so every level gives the same bits. Called only
 * where CPUID says the level runs. */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include <immintrin.h>

#include "cpu_exact.h"
#include "weight_types.h"

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define LEVEL avx512vnni
#define VNNI 1
#elif defined(__AVXVNNI__)
#define LEVEL avxvnni
#define VNNI 1
#else
#define VNNI 0
#define LEVEL avx2
#endif

/* Two blocks an instruction in 512-bit registers */
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#define ZMM 1
#else
#define ZMM 0
#endif
#define NAMED_(name, level) name##_##level
#define NAMED(name, level) NAMED_(name, level)
#define QUOTED_(level) #level
#define QUOTED(level) QUOTED_(level)

/* unused: some helpers serve only the 256-bit kernels, which a level with
 * 512-bit VNNI does without */
#define INLINE __attribute__((always_inline, unused)) static inline

/* ---- the exact form ---- */

INLINE float largest_of(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

INLINE int32_t sum_of(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* The low byte of v's lanes as a signed digit, −128 .. 127. */
INLINE __m256i digit_of(__m256i v)
{
    const __m256i half = _mm256_set1_epi32(128), byte = _mm256_set1_epi32(255);
    return _mm256_sub_epi32(_mm256_and_si256(_mm256_add_epi32(v, half), byte), half);
}

/* Four vectors of int32 (each within a byte) as 32 bytes in order. */
INLINE __m256i bytes_of(const __m256i v[4])
{
    __m256i packed =
        _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Block x[0 .. 31] in the exact form: e such that its largest |x| < 2^(e +
 * 22), X = x·2^−e rounded to the nearest integer, split into balanced
 * digits of base 256 (|X| < 2^22 keeps the top one within −64 .. 64). */
static void convert_block(const float *x, int8_t limbs[3][EXACT_BLOCK], int32_t *lanes,
                          float *scale, float *sum, float *half)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), finite = _mm256_set1_ps(FLT_MAX);
    __m256 v[4], top = _mm256_setzero_ps(), bad = top;
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 a = _mm256_andnot_ps(sign, v[k]);
        top = _mm256_max_ps(top, a);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, finite, _CMP_NLE_UQ));
    }
    if (_mm256_movemask_ps(bad)) { /* NaN or ±Inf: every sum it enters is NaN */
        memset(limbs, 0, 3 * EXACT_BLOCK);
        memset(lanes, 0, EXACT_LANES * sizeof(int32_t));
        *scale = *sum = half[0] = half[1] = NAN;
        return;
    }
    int e;
    frexpf(largest_of(top), &e); /* largest < 2^e */
    e = e < -104 ? -104 : e;     /* 2^(22 − e) stays a normal float */
    const __m256 up = _mm256_set1_ps(ldexpf(1, 22 - e));
    __m256i X[4], h[4], m[4], l[4], halves[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int k = 0; k < 4; k++) {
        X[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], up)); /* exact product, then rounded */
        halves[k / 2] = _mm256_add_epi32(halves[k / 2], X[k]);
        l[k] = digit_of(X[k]);
        __m256i rest = _mm256_srai_epi32(_mm256_sub_epi32(X[k], l[k]), 8);
        m[k] = digit_of(rest);
        h[k] = _mm256_srai_epi32(_mm256_sub_epi32(rest, m[k]), 8);
    }
    _mm256_storeu_si256((__m256i *)limbs[0], bytes_of(h));
    _mm256_storeu_si256((__m256i *)limbs[1], bytes_of(m));
    _mm256_storeu_si256((__m256i *)limbs[2], bytes_of(l));
    /* hadd twice leaves lanes 0, 2, 4, 6 in the low half, 1, 3, 5, 7 above */
    __m256i fours = _mm256_hadd_epi32(_mm256_hadd_epi32(X[0], X[1]), _mm256_hadd_epi32(X[2], X[3]));
    _mm256_storeu_si256((__m256i *)lanes, _mm256_permutevar8x32_epi32(
                                              fours, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    int32_t low = sum_of(halves[0]), high = sum_of(halves[1]); /* each below 2^26 */
    *scale = ldexpf(1, e - 22);
    half[0] = (float)low * *scale;
    half[1] = (float)high * *scale;
    *sum = (float)(low + high) * *scale;
}

static void convert(const float *x, uint32_t first_block, uint32_t end_block,
                    const vkmoe_exact_rows *to, uint32_t r, uint32_t len)
{
    size_t blocks = len / EXACT_BLOCK;
    int8_t *row = to->limbs + r * vkmoe_exact_row_limb_bytes(len);
    for (uint32_t b = first_block; b < end_block; b++) {
        size_t at = r * blocks + b;
        int8_t limbs[3][EXACT_BLOCK];
        convert_block(x + EXACT_BLOCK * b, limbs, to->lanes + at * EXACT_LANES, to->scale + at,
                      to->sum + at, to->half + 2 * at);
        for (uint32_t k = 0; k < 3; k++) {
            if (to->layout == EXACT_BY_PAIRS)
                memcpy(row + vkmoe_exact_limb_at(b) + EXACT_LIMB_STRIDE * k, limbs[k], EXACT_BLOCK);
            else if (to->layout == EXACT_BY_QUADS)
                for (uint32_t h = 0; h < 2; h++)
                    memcpy(row + vkmoe_exact_half_at(b, k, h), limbs[k] + EXACT_BLOCK / 2 * h,
                           EXACT_BLOCK / 2);
            else
                for (uint32_t g = 0; g < EXACT_BLOCK / EXACT_CHUNK; g++)
                    memcpy(row + vkmoe_exact_chunk_at(b, g, k), limbs[k] + EXACT_CHUNK * g,
                           EXACT_CHUNK);
        }
    }
}

/* ---- kernels ---- */

/* Eight lanes, each Σ q·X over four neighbouring codes: the limbs' byte
 * products, the higher limbs' sums shifted up. q: unsigned codes below 64
 * (maddubs's pairs of products then stay within int16); |Σ| < 2^30. */
INLINE __m256i dot_limbs(__m256i q, const int8_t *limbs)
{
    const __m256i h = _mm256_loadu_si256((const __m256i *)limbs),
                  m = _mm256_loadu_si256((const __m256i *)(limbs + EXACT_LIMB_STRIDE)),
                  l = _mm256_loadu_si256((const __m256i *)(limbs + 2 * EXACT_LIMB_STRIDE));
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, h);
    s = _mm256_dpbusd_epi32(_mm256_slli_epi32(s, 8), q, m);
    return _mm256_dpbusd_epi32(_mm256_slli_epi32(s, 8), q, l);
#elif defined(__AVXVNNI__)
    __m256i s = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), q, h);
    s = _mm256_dpbusd_avx_epi32(_mm256_slli_epi32(s, 8), q, m);
    return _mm256_dpbusd_avx_epi32(_mm256_slli_epi32(s, 8), q, l);
#else
    const __m256i one = _mm256_set1_epi16(1), byte = _mm256_set1_epi16(256);
    __m256i hm = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q, h), byte),
                                  _mm256_madd_epi16(_mm256_maddubs_epi16(q, m), one));
    return _mm256_add_epi32(_mm256_slli_epi32(hm, 8),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(q, l), one));
#endif
}

/* A 16-level table offset by 2^shift to be unsigned bytes, in both
 * halves for shuffle_epi8. */
INLINE __m256i offset_levels(const int8_t levels[16], int shift)
{
    __m128i t =
        _mm_add_epi8(_mm_loadu_si128((const __m128i *)levels), _mm_set1_epi8((char)(1 << shift)));
    return _mm256_broadcastsi128_si256(t);
}

INLINE float sum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

INLINE float f16_at(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

INLINE void prefetch(const uint8_t *block, uint32_t bytes)
{
#if PREFETCH_BYTES
    for (uint32_t line = 0; line < bytes + 64; line += 64)
        _mm_prefetch((const char *)(block + PREFETCH_BYTES + line), _MM_HINT_T0);
#else
    (void)block, (void)bytes;
#endif
}

/* Two sums a weight row, so that two chains of FMAs overlap: zeroed, and
 * added into out[r][i]. */
INLINE void zero_pairs(__m256 acc[STORED_ROWS][2])
{
    for (uint32_t r = 0; r < STORED_ROWS; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
}

INLINE void store_pairs(__m256 acc[STORED_ROWS][2], float out[STORED_ROWS][ROWS_AT_ONCE],
                        uint32_t i)
{
    for (uint32_t r = 0; r < STORED_ROWS; r++)
        out[r][i] = sum8(_mm256_add_ps(acc[r][0], acc[r][1]));
}

/* Four bytes as a 32-bit word (x86: little-endian). */
INLINE uint32_t word_at(const uint8_t *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

INLINE uint64_t qword_at(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* vkmoe_q4_k_scales_mins in a register: the scales in bytes 0-7, the mins
 * in 8-15. Bytes made in memory and loaded back as one vector would wait
 * on a store the load cannot take its bytes from. */
INLINE __m128i k_quant_scales_mins(const uint8_t *packed)
{
    __m128i w = _mm_insert_epi32(_mm_loadl_epi64((const __m128i *)packed), (int)word_at(packed + 8),
                                 2);                     /* words 0, 1, 2 */
    __m128i low = _mm_and_si128(w, _mm_set1_epi8(0x3f)); /* scales 0-3, mins 0-3 */
    __m128i nibbles = _mm_and_si128(
        _mm_srlv_epi32(_mm_shuffle_epi32(w, 0xaa), _mm_setr_epi32(0, 4, 0, 0)), _mm_set1_epi8(0xf));
    __m128i top = _mm_slli_epi16(_mm_and_si128(_mm_srli_epi32(w, 6), _mm_set1_epi8(3)), 4);
    return _mm_unpacklo_epi32(low, _mm_or_si128(nibbles, top)); /* 4-7 of each */
}

/* d·scale and dmin·min of a Q4_K or Q5_K super-block's eight sub-blocks. */
INLINE void k_quant_steps(const uint8_t *block, __m256 *step, __m256 *offset)
{
    __m128i both = k_quant_scales_mins(block + 4);
    __m256 d = _mm256_set1_ps(f16_at(block)), dmin = _mm256_set1_ps(f16_at(block + 2));
    __m256 s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(both));
    __m256 n = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(both, 8)));
    *step = _mm256_mul_ps(d, s);
    *offset = _mm256_mul_ps(dmin, n);
}

#if ZMM
/* Limb k (h, m or l) of a pair of blocks of the exact form side by side,
 * limbs the pair's (vkmoe_exact_limb_at of its even block): a 512-bit
 * kernel's two sub-blocks an instruction. */
INLINE __m512i limb_pair(const int8_t *limbs, int k)
{
    return _mm512_loadu_si512(limbs + EXACT_LIMB_STRIDE * k);
}

/* dot_limbs for two sub-blocks: lanes 0-7 the first's, 8-15 the second's. */
INLINE __m512i dot_limb_pairs(__m512i q, const __m512i limb[3])
{
    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, limb[0]);
    s = _mm512_dpbusd_epi32(_mm512_slli_epi32(s, 8), q, limb[1]);
    return _mm512_dpbusd_epi32(_mm512_slli_epi32(s, 8), q, limb[2]);
}

/* Two 256-bit vectors as the halves of a 512-bit one; one in the upper
 * half, zeros below; and the halves of one. */
INLINE __m512 joined(__m256 low, __m256 high)
{
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(low)),
                                               _mm256_castps_pd(high), 1));
}

INLINE __m512 upper_half(__m256 v) { return joined(_mm256_setzero_ps(), v); }

INLINE __m256 lower_of(__m512 v) { return _mm512_castps512_ps256(v); }

INLINE __m256 upper_of(__m512 v)
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

/* The 512-bit kernels' sums, one a weight row, each half the sum of one
 * of the 256-bit kernels' pairs (zero_pairs, store_pairs). */
INLINE void zero_halves(__m512 acc[STORED_ROWS])
{
    for (uint32_t r = 0; r < STORED_ROWS; r++)
        acc[r] = _mm512_setzero_ps();
}

INLINE void store_halves(const __m512 acc[STORED_ROWS], float out[STORED_ROWS][ROWS_AT_ONCE],
                         uint32_t i)
{
    for (uint32_t r = 0; r < STORED_ROWS; r++)
        out[r][i] = sum8(_mm256_add_ps(lower_of(acc[r]), upper_of(acc[r])));
}

/* Eight a's, then eight b's. */
INLINE __m512i halves_of(int a, int b)
{
    return _mm512_inserti64x4(_mm512_set1_epi32(a), _mm256_set1_epi32(b), 1);
}

/* k_quant_steps for the four rows' super-blocks at once, each with the
 * activations' scales (lanes 0-7 of xs_xsum) and sums (8-15): f[r] d·scale·xs
 * of the blocks of the super-block kernel's lanes (blocks 0, 0, 2, 2, …,
 * 6, 6, then 1, 1, …, 7, 7), and acc[r]'s lanes 8-15 less dmin·min·xsum,
 * the products k_quant_steps and the 256-bit kernel make, with the same
 * roundings. The scales and mins of four rows unpack in one register, each
 * row's in a 128-bit lane (per row, they were a third of the kernel's
 * instructions). */
INLINE void k_quant_four_steps(const uint8_t *const block[STORED_ROWS], __m512 xs_xsum,
                               __m512 f[STORED_ROWS], __m512 acc[STORED_ROWS])
{
    _Static_assert(STORED_ROWS == 4, "a row's scales in each 128-bit lane");
    const __m512i blocks = _mm512_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6, 1, 1, 3, 3, 5, 5, 7, 7);
    const __m512 xs_blocks = _mm512_permutexvar_ps(blocks, xs_xsum);
    __m512i w = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(block[0] + 4)));
    w = _mm512_inserti32x4(w, _mm_loadu_si128((const __m128i *)(block[1] + 4)), 1);
    w = _mm512_inserti32x4(w, _mm_loadu_si128((const __m128i *)(block[2] + 4)), 2);
    w = _mm512_inserti32x4(w, _mm_loadu_si128((const __m128i *)(block[3] + 4)), 3);
    /* k_quant_scales_mins in each lane: words 0-2 the packed bytes */
    __m512i low = _mm512_and_si512(w, _mm512_set1_epi8(0x3f));
    __m512i nibbles = _mm512_and_si512(
        _mm512_srlv_epi32(_mm512_shuffle_epi32(w, (_MM_PERM_ENUM)0xaa),
                          _mm512_setr_epi32(0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0)),
        _mm512_set1_epi8(0xf));
    __m512i top =
        _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi32(w, 6), _mm512_set1_epi8(3)), 4);
    __m512i both = _mm512_unpacklo_epi32(low, _mm512_or_si512(nibbles, top));
    /* f16 d in bytes 0-1 of the lower 128 bits, dmin in 2-3 of the upper */
    const __m256i d_dmin = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2,
                                            3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    __m128i lane[STORED_ROWS] = {_mm512_castsi512_si128(both), _mm512_extracti32x4_epi32(both, 1),
                                 _mm512_extracti32x4_epi32(both, 2),
                                 _mm512_extracti32x4_epi32(both, 3)};
    for (uint32_t r = 0; r < STORED_ROWS; r++) {
        __m512 d =
            _mm512_cvtph_ps(_mm256_shuffle_epi8(_mm256_set1_epi32((int)word_at(block[r])), d_dmin));
        __m512 p = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lane[r])));
        f[r] = _mm512_mul_ps(_mm512_permutexvar_ps(blocks, p), xs_blocks);
        acc[r] = _mm512_mask3_fnmadd_ps(p, xs_xsum, acc[r], 0xff00);
    }
}

/* The limbs of super-block s's four pairs of blocks in row x (limb_pair),
 * made once for all the rows of a kernel call. The same 64-byte runs hold
 * a row by super-blocks' four chunks (cpu_exact.h): limb[g][k] chunk g's. */
INLINE void super_block_limbs(const vkmoe_exact_row *x, uint32_t s, __m512i limb[4][3])
{
    const int8_t *limbs = x->limbs + vkmoe_exact_limb_at(8 * s);
    for (int j = 0; j < 4; j++)
        for (int k = 0; k < 3; k++)
            limb[j][k] = limb_pair(limbs + vkmoe_exact_limb_at(2 * j), k);
}
#endif

/* Q3_K's sixteen 6-bit scales, as stored (+ 32), in a register from its 12
 * packed bytes: sub-block j's low nibble in byte j % 8 (low for j < 8),
 * its top 2 bits at bit 2(j / 4) of byte 8 + j % 4 (quantize.c). */
INLINE __m128i q3_k_scales(const uint8_t *packed)
{
    __m128i bytes = _mm_loadl_epi64((const __m128i *)packed);
    __m128i low = _mm_unpacklo_epi64(_mm_and_si128(bytes, _mm_set1_epi8(0xf)),
                                     _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0xf)));
    __m128i top =
        _mm_srlv_epi32(_mm_set1_epi32((int)word_at(packed + 8)), _mm_setr_epi32(0, 2, 4, 6));
    return _mm_or_si128(low, _mm_slli_epi16(_mm_and_si128(top, _mm_set1_epi8(3)), 4));
}

/* Q4_K super-blocks (144 bytes: f16 d and dmin, 12 bytes of 6-bit scales
 * and mins, 128 of nibbles; byte 32g + l holds weight 64g + l low and 64g
 * + 32 + l high) or Q5_K's (176: the same with 32 bytes of fifth bits
 * before the nibbles, weight 64g + l's at bit 2g of byte l, 64g + 32 +
 * l's at 2g + 1): per sub-block of 32, d·scale·2^e·Σ q·X − dmin·min·Σx.
 * The activations lie by super-blocks (cpu_exact.h): a chunk's codes,
 * gathered from the four runs of 32 bytes, meet all eight blocks' limbs
 * at once, each lane's three limb sums add over the four chunks in
 * integers (|Σ| ≤ 16·31·2^22 < 2^31), and a super-block takes one
 * conversion and one FMA a sum: lanes 0-7 (acc[r][0] here) those of
 * blocks 0, 2, 4, 6 (low nibbles), 8-15 (acc[r][1]) of 1, 3, 5, 7 (high),
 * two lanes a block; the mins, in block order, into the upper ones first.
 * Where the level has 512-bit VNNI, the kernel below this one instead,
 * with the same sums in the same lanes and order. */
#if !ZMM
/* chunk[g]'s 64-bit lane k: bytes 8g .. 8g + 7 of run k of the four runs
 * of 32 bytes at p, the codes chunk g of the limbs meets. */
INLINE void chunks_of(const uint8_t *p, __m256i chunk[4])
{
    __m256i run[4];
    for (int k = 0; k < 4; k++)
        run[k] = _mm256_loadu_si256((const __m256i *)(p + 32 * k));
    __m256i even01 = _mm256_unpacklo_epi64(run[0], run[1]),
            odd01 = _mm256_unpackhi_epi64(run[0], run[1]),
            even23 = _mm256_unpacklo_epi64(run[2], run[3]),
            odd23 = _mm256_unpackhi_epi64(run[2], run[3]);
    chunk[0] = _mm256_permute2x128_si256(even01, even23, 0x20);
    chunk[1] = _mm256_permute2x128_si256(odd01, odd23, 0x20);
    chunk[2] = _mm256_permute2x128_si256(even01, even23, 0x31);
    chunk[3] = _mm256_permute2x128_si256(odd01, odd23, 0x31);
}

/* acc plus the byte products of unsigned codes q and a limb: with VNNI
 * dpbusd's sums of four in 32-bit lanes; in AVX2 maddubs's pairs in 16-bit
 * lanes (the four chunks' pairs of codes below 32 stay within int16:
 * 4·2·31·128 < 2^15), made sums of four by joined_limbs. */
INLINE __m256i dot_add(__m256i acc, __m256i q, const int8_t *limb)
{
    const __m256i v = _mm256_loadu_si256((const __m256i *)limb);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, q, v);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, q, v);
#else
    return _mm256_add_epi16(acc, _mm256_maddubs_epi16(q, v));
#endif
}

/* Σ q·X of the limbs' sums h, m, l (dot_add's); `sixteen`: the codes were
 * sixteen times their value (VNNI only), and so the sums. */
INLINE __m256i joined_sums(const __m256i sum[3], bool sixteen)
{
#if VNNI
    int h = sixteen ? 12 : 16, m = sixteen ? 4 : 8;
    __m256i l = sixteen ? _mm256_srai_epi32(sum[2], 4) : sum[2];
    return _mm256_add_epi32(
        _mm256_add_epi32(_mm256_slli_epi32(sum[0], h), _mm256_slli_epi32(sum[1], m)), l);
#else
    (void)sixteen;
    const __m256i one = _mm256_set1_epi16(1);
    __m256i hm = _mm256_add_epi32(_mm256_madd_epi16(sum[0], _mm256_set1_epi16(256)),
                                  _mm256_madd_epi16(sum[1], one));
    return _mm256_add_epi32(_mm256_slli_epi32(hm, 8), _mm256_madd_epi16(sum[2], one));
#endif
}

/* joined_sums as floats */
INLINE __m256 joined_limbs(const __m256i sum[3], bool sixteen)
{
    return _mm256_cvtepi32_ps(joined_sums(sum, sixteen));
}

/* A chunk's fifth bits (bytes 8g .. 8g + 7 of them) to bit 4 of each code:
 * bit `at` (lane by lane) of each byte. */
INLINE __m256i fifth_bits_to4(__m256i bits, __m256i at)
{
    return _mm256_and_si256(_mm256_slli_epi64(_mm256_srlv_epi64(bits, at), 4),
                            _mm256_set1_epi8(0x10));
}

INLINE void k_quant_rows(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],
                         uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE],
                         bool fifth)
{
    const uint32_t bytes = fifth ? 176 : 144, codes = fifth ? 48 : 16;
    const __m256i nibble = _mm256_set1_epi8(0xf), high_nibble = _mm256_set1_epi8((char)0xf0);
    /* Q4_K's high nibbles as they lie, where dpbusd takes them (maddubs's
     * pairs would leave int16) */
    const bool sixteen = VNNI && !fifth;
    const __m256i even_blocks = _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6),
                  odd_blocks = _mm256_setr_epi32(1, 1, 3, 3, 5, 5, 7, 7);
    const __m256i even_bits = _mm256_setr_epi64x(0, 2, 4, 6),
                  odd_bits = _mm256_setr_epi64x(1, 3, 5, 7);
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS][2];
        zero_pairs(acc);
        for (uint32_t s = 0; s < len / EXACT_SUPER_BLOCK; s++) {
            const int8_t *limbs = a[i].limbs + (size_t)s * 3 * EXACT_SUPER_BLOCK;
            __m256 xs = _mm256_loadu_ps(a[i].scale + 8 * s),
                   xsum = _mm256_loadu_ps(a[i].sum + 8 * s);
            __m256 xs_even = _mm256_permutevar8x32_ps(xs, even_blocks),
                   xs_odd = _mm256_permutevar8x32_ps(xs, odd_blocks);
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *block = w[r] + bytes * s;
                prefetch(block, bytes);
                __m256 step, offset;
                k_quant_steps(block, &step, &offset);
                acc[r][1] = _mm256_fnmadd_ps(offset, xsum, acc[r][1]);
                __m256 f_even = _mm256_mul_ps(_mm256_permutevar8x32_ps(step, even_blocks), xs_even),
                       f_odd = _mm256_mul_ps(_mm256_permutevar8x32_ps(step, odd_blocks), xs_odd);
                __m256i chunk[4], sum[2][3];
                chunks_of(block + codes, chunk);
                for (int k = 0; k < 3; k++)
                    sum[0][k] = sum[1][k] = _mm256_setzero_si256();
                for (int g = 0; g < 4; g++) {
                    __m256i lo = _mm256_and_si256(chunk[g], nibble),
                            hi = sixteen ? _mm256_and_si256(chunk[g], high_nibble)
                                         : _mm256_and_si256(_mm256_srli_epi16(chunk[g], 4), nibble);
                    if (fifth) {
                        __m256i bits = _mm256_set1_epi64x((long long)qword_at(block + 16 + 8 * g));
                        lo = _mm256_or_si256(lo, fifth_bits_to4(bits, even_bits));
                        hi = _mm256_or_si256(hi, fifth_bits_to4(bits, odd_bits));
                    }
                    const int8_t *run = limbs + 3 * 64 * g;
                    for (int k = 0; k < 3; k++) {
                        sum[0][k] = dot_add(sum[0][k], lo, run + 64 * k);
                        sum[1][k] = dot_add(sum[1][k], hi, run + 64 * k + 32);
                    }
                }
                acc[r][0] = _mm256_fmadd_ps(joined_limbs(sum[0], false), f_even, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(joined_limbs(sum[1], sixteen), f_odd, acc[r][1]);
            }
        }
        store_pairs(acc, out, i);
    }
}
#else
/* The kernel above in 512-bit registers: one chunk of all eight blocks a
 * dot product. Q4_K's high nibbles are taken as they lie (sixteen times
 * the code: an AND makes both halves' codes), and their sums' shifts take
 * the 16 off (exact: each is a multiple of 16). One thread from L2 (Zen 5,
 * full-width AVX-512), against the kernel of four conversions and FMAs a
 * super-block: Q4_K 45 → 58 Gweights/s, Q5_K 39 → 51; decode forwards
 * (two threads, E 128, k 8) Q4_K 0.196–0.198 → 0.178–0.187 ms, Q5_K
 * 0.226–0.233 → 0.202–0.207. */
INLINE void k_quant_rows(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],
                         uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE],
                         bool fifth)
{
    const uint32_t bytes = fifth ? 176 : 144, codes = fifth ? 48 : 16;
    const __m512i nibbles =
        fifth ? _mm512_set1_epi8(0xf)
              : _mm512_inserti64x4(_mm512_set1_epi8(0xf), _mm256_set1_epi8((char)0xf0), 1);
    const __m512i by_half = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4),
                  bit4 = _mm512_set1_epi8(0x10);
    /* bit j of each byte to bit 4, j the block of each 64-bit lane */
    const __m512i to_bit4 = _mm512_setr_epi64(4, 2, 0, 62, 3, 1, 63, 61);
    const __m512i h_up = fifth ? _mm512_set1_epi32(16) : halves_of(16, 12),
                  m_up = fifth ? _mm512_set1_epi32(8) : halves_of(8, 4),
                  l_down = fifth ? _mm512_setzero_si512() : halves_of(0, 4);
    __m512i chunk[4];
    for (int g = 0; g < 4; g++)
        chunk[g] = _mm512_setr_epi64(g, 4 + g, 8 + g, 12 + g, g, 4 + g, 8 + g, 12 + g);
    for (uint32_t i = 0; i < rows; i++) {
        __m512 acc[STORED_ROWS];
        zero_halves(acc);
        for (uint32_t s = 0; s < len / EXACT_SUPER_BLOCK; s++) {
            __m512 xs_xsum =
                joined(_mm256_loadu_ps(a[i].scale + 8 * s), _mm256_loadu_ps(a[i].sum + 8 * s));
            __m512i limb[4][3]; /* by chunk */
            super_block_limbs(&a[i], s, limb);
            const uint8_t *block[STORED_ROWS];
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                block[r] = w[r] + bytes * s;
                prefetch(block[r], bytes);
            }
            __m512 f[STORED_ROWS];
            k_quant_four_steps(block, xs_xsum, f, acc);
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                __m512i low = _mm512_loadu_si512(block[r] + codes),
                        high = _mm512_loadu_si512(block[r] + codes + 64);
                __m512i h = _mm512_setzero_si512(), m = h, l = h;
                for (int g = 0; g < 4; g++) {
                    __m512i c = _mm512_permutex2var_epi64(low, chunk[g], high);
                    __m512i q = fifth ? _mm512_and_si512(_mm512_srlv_epi64(c, by_half), nibbles)
                                      : _mm512_and_si512(c, nibbles);
                    if (fifth) {
                        __m512i bits =
                            _mm512_set1_epi64((long long)qword_at(block[r] + 16 + 8 * g));
                        q = _mm512_or_si512(
                            q, _mm512_and_si512(_mm512_rolv_epi64(bits, to_bit4), bit4));
                    }
                    h = _mm512_dpbusd_epi32(h, q, limb[g][0]);
                    m = _mm512_dpbusd_epi32(m, q, limb[g][1]);
                    l = _mm512_dpbusd_epi32(l, q, limb[g][2]);
                }
                __m512i sum = _mm512_add_epi32(
                    _mm512_add_epi32(_mm512_sllv_epi32(h, h_up), _mm512_sllv_epi32(m, m_up)),
                    _mm512_srav_epi32(l, l_down));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), f[r], acc[r]);
            }
        }
        store_halves(acc, out, i);
    }
}
#endif

#if !ZMM
/* Lanes 0-3 f[2b], lanes 4-7 f[2b + 1], of sixteen factors held in two
 * vectors: those of the sub-blocks of 16 that block b of 32 holds, for
 * dot_limbs's lanes. One permute (a pair of broadcasts and an insert
 * took three operations). */
INLINE __m256 halves_factor(const __m256 f[2], int b)
{
    const __m256i pick = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    return _mm256_permutevar8x32_ps(f[b / 4],
                                    _mm256_add_epi32(pick, _mm256_set1_epi32(2 * (b % 4))));
}
#else
/* halves_factor for blocks b and b + 1 in one register, of the sixteen
 * factors in one: lanes 4j .. 4j + 3 f[2b + j]. */
INLINE __m512 pair_factors(__m512 f, int b)
{
    const __m512i quarters = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    return _mm512_permutexvar_ps(_mm512_add_epi32(_mm512_set1_epi32(2 * b), quarters), f);
}
#endif

/* A super-block's eight block scales of x spread to its sixteen
 * sub-blocks of 16 (each block's to both its halves), in two vectors. */
INLINE void sub_block_scales(const float *scale, __m256 out[2])
{
    __m256 xs = _mm256_loadu_ps(scale);
    out[0] = _mm256_permutevar8x32_ps(xs, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
    out[1] = _mm256_permutevar8x32_ps(xs, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7));
}

#if ZMM
/* What the 512-bit kernels of sub-blocks of 16 (Q6_K, Q2_K, Q3_K) take
 * of super-block s of row x for all their rows: its limb pairs, the
 * sixteen sub-blocks' x scales, and the sums of each half of its blocks
 * in the upper lanes, where the rows' offset terms add. */
typedef struct sixteenths {
    __m512i limb[4][3];
    __m512 xs;      /* lane j: sub-block j's */
    __m512 half[2]; /* upper lanes: those of blocks 0-3's halves, then 4-7's */
} sixteenths;

INLINE void sixteenths_of(const vkmoe_exact_row *x, uint32_t s, sixteenths *t)
{
    __m256 xs[2];
    sub_block_scales(x->scale + 8 * s, xs);
    super_block_limbs(x, s, t->limb);
    t->xs = joined(xs[0], xs[1]);
    t->half[0] = upper_half(_mm256_loadu_ps(x->half + 16 * s));
    t->half[1] = upper_half(_mm256_loadu_ps(x->half + 16 * s + 8));
}

/* acc less each sub-block's offset (lane j of `offset`) times its half's
 * sum, in acc's upper lanes: sub-blocks 0-7 first (moved up by a lane
 * shuffle), then 8-15, as the 256-bit kernels' second sum takes them. */
INLINE __m512 less_offsets(__m512 acc, __m512 offset, const sixteenths *t)
{
    acc =
        _mm512_mask3_fnmadd_ps(_mm512_shuffle_f32x4(offset, offset, 0x40), t->half[0], acc, 0xff00);
    return _mm512_mask3_fnmadd_ps(offset, t->half[1], acc, 0xff00);
}
#endif

/* d·scale of a Q6_K super-block's sixteen sub-blocks of 16, in two halves. */
INLINE void q6_k_steps(const uint8_t *block, __m256 *low, __m256 *high)
{
    const __m128i *sc = (const __m128i *)(block + 192);
    __m256 d = _mm256_set1_ps(f16_at(block + 208));
    *low = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(sc))));
    *high = _mm256_mul_ps(
        d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(_mm_loadu_si128(sc), 8))));
}

/* Q6_K super-blocks (210 bytes: 128 of low nibbles, 64 of high bit pairs,
 * 16 int8 scales, f16 d; quantize.c): per sub-block of 16,
 * d·scale·(2^e·Σ q·X − 32·Σx). Block 4h + k of a half h's 128 weights
 * takes its codes from the low (k < 2) or high nibbles of ql[32(k & 1) ..]
 * and bit pair k of qh. Where the level has 512-bit VNNI, the kernel below
 * this one instead. */
#if !ZMM
INLINE void q6_k_rows(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],
                      uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])
{
    const __m256i low = _mm256_set1_epi8(0xf), top = _mm256_set1_epi8(0x30);
    const __m256 centre = _mm256_set1_ps(32);
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS][2];
        zero_pairs(acc);
        for (uint32_t s = 0; s < len / 256; s++) {
            const int8_t *limbs = a[i].limbs + vkmoe_exact_limb_at(8 * s);
            __m256 xs[2];
            sub_block_scales(a[i].scale + 8 * s, xs);
            __m256 half_lo = _mm256_loadu_ps(a[i].half + 16 * s),
                   half_hi = _mm256_loadu_ps(a[i].half + 16 * s + 8);
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *block = w[r] + 210 * s;
                prefetch(block, 210);
                __m256 step_lo, step_hi;
                q6_k_steps(block, &step_lo, &step_hi);
                acc[r][1] = _mm256_fnmadd_ps(_mm256_mul_ps(step_lo, centre), half_lo, acc[r][1]);
                acc[r][1] = _mm256_fnmadd_ps(_mm256_mul_ps(step_hi, centre), half_hi, acc[r][1]);
                __m256 f[2] = {_mm256_mul_ps(step_lo, xs[0]), _mm256_mul_ps(step_hi, xs[1])};
                for (int h = 0; h < 2; h++) {
                    const uint8_t *ql = block + 64 * h, *qh = block + 128 + 32 * h;
                    __m256i p = _mm256_loadu_si256((const __m256i *)ql),
                            n = _mm256_loadu_si256((const __m256i *)(ql + 32)),
                            t = _mm256_loadu_si256((const __m256i *)qh);
                    __m256i q[4] = {
                        _mm256_or_si256(_mm256_and_si256(p, low),
                                        _mm256_and_si256(_mm256_slli_epi16(t, 4), top)),
                        _mm256_or_si256(_mm256_and_si256(n, low),
                                        _mm256_and_si256(_mm256_slli_epi16(t, 2), top)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(p, 4), low),
                                        _mm256_and_si256(t, top)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(n, 4), low),
                                        _mm256_and_si256(_mm256_srli_epi16(t, 2), top)),
                    };
                    for (int k = 0; k < 4; k++) {
                        int b = 4 * h + k; /* the block of 32; its halves sub-blocks 2b, 2b + 1 */
                        __m256i sum = dot_limbs(q[k], limbs + vkmoe_exact_limb_at(b));
                        acc[r][k & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum),
                                                        halves_factor(f, b), acc[r][k & 1]);
                    }
                }
            }
        }
        store_pairs(acc, out, i);
    }
}
#else
/* The kernel above with two blocks of 32 in one 512-bit register: lanes
 * 0-7 add what its acc[r][0] does (blocks 4h and 4h + 2), 8-15 what its
 * acc[r][1] does (the centre's terms first, then 4h + 1 and 4h + 3), in
 * the same order, so the sums are the same bits. */
INLINE void q6_k_rows(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],
                      uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])
{
    const __m512i low = _mm512_set1_epi8(0xf), top = _mm512_set1_epi8(0x30);
    /* blocks 4h and 4h + 1 (4h + 2 and 4h + 3) by half: qh's shifts */
    const __m512i up_first = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2),
                  down_second = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
    const __m512 centre = _mm512_set1_ps(32);
    for (uint32_t i = 0; i < rows; i++) {
        __m512 acc[STORED_ROWS];
        zero_halves(acc);
        for (uint32_t s = 0; s < len / 256; s++) {
            sixteenths sub;
            sixteenths_of(&a[i], s, &sub);
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *block = w[r] + 210 * s;
                prefetch(block, 210);
                /* q6_k_steps in one register: lanes 0-7 its low, 8-15 its high */
                __m512 step = _mm512_mul_ps(_mm512_set1_ps(f16_at(block + 208)),
                                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                _mm_loadu_si128((const __m128i *)(block + 192)))));
                acc[r] = less_offsets(acc[r], _mm512_mul_ps(step, centre), &sub);
                /* the sixteen sub-blocks' factors */
                __m512 f = _mm512_mul_ps(step, sub.xs);
                for (int h = 0; h < 2; h++) {
                    const uint8_t *ql = block + 64 * h, *qh = block + 128 + 32 * h;
                    __m512i p = _mm512_loadu_si512(ql), /* both 32-byte runs of nibbles */
                        t = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qh));
                    __m512i q[2] = {
                        _mm512_or_si512(_mm512_and_si512(p, low),
                                        _mm512_and_si512(_mm512_sllv_epi64(t, up_first), top)),
                        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi64(p, 4), low),
                                        _mm512_and_si512(_mm512_srlv_epi64(t, down_second), top)),
                    };
                    for (int k = 0; k < 2; k++) {
                        int b = 4 * h + 2 * k; /* blocks b and b + 1 */
                        acc[r] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(dot_limb_pairs(q[k], sub.limb[b / 2])),
                            pair_factors(f, b), acc[r]);
                    }
                }
            }
        }
        store_halves(acc, out, i);
    }
}
#endif

/* Q2_K super-blocks (84 bytes: 16 of sub-blocks' 4-bit scales, low, and
 * mins, high; 64 of 2-bit codes; f16 d and dmin) or Q3_K's (110: 32 of
 * third bits, weight 32b + l's at bit b of byte l; 64 of 2-bit codes; 12
 * of 6-bit scales + 32; f16 d); byte 32h + l of the 2-bit codes holds
 * those of weight 128h + 32k + l at bit 2k (quantize.c). Per sub-block of
 * 16, d·sc·2^e·Σ q·X less dmin·m·Σx (Q2_K) or 4·d·sc·Σx (Q3_K, codes 0..7
 * centred on 4). */
typedef struct low_bits {
    uint32_t bytes, codes; /* a super-block's size; where its 2-bit codes begin */
    bool third;            /* Q3_K */
} low_bits;

/* d·sc and the offset's factor of each sub-block of 16, in two halves. */
INLINE void low_bits_steps(const uint8_t *block, low_bits f, __m256 step[2], __m256 offset[2])
{
    if (f.third) {
        __m128i sc = _mm_sub_epi8(q3_k_scales(block + 96), _mm_set1_epi8(32));
        __m256 d = _mm256_set1_ps(f16_at(block + 108)), centre = _mm256_set1_ps(4);
        step[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)));
        step[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))));
        offset[0] = _mm256_mul_ps(step[0], centre);
        offset[1] = _mm256_mul_ps(step[1], centre);
        return;
    }
    const __m128i nibble = _mm_set1_epi8(0xf);
    __m128i packed = _mm_loadu_si128((const __m128i *)block);
    __m128i sc = _mm_and_si128(packed, nibble),
            mn = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);
    __m256 d = _mm256_set1_ps(f16_at(block + 80)), dmin = _mm256_set1_ps(f16_at(block + 82));
    for (int k = 0; k < 2; k++) {
        step[k] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sc)));
        offset[k] = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mn)));
        sc = _mm_srli_si128(sc, 8);
        mn = _mm_srli_si128(mn, 8);
    }
}

#if ZMM
/* low_bits_steps in one register each: lanes 0-7 its first half, 8-15 its
 * second, the same products. */
INLINE void low_bits_steps16(const uint8_t *block, low_bits f, __m512 *step, __m512 *offset)
{
    if (f.third) {
        __m128i sc = _mm_sub_epi8(q3_k_scales(block + 96), _mm_set1_epi8(32));
        *step = _mm512_mul_ps(_mm512_set1_ps(f16_at(block + 108)),
                              _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)));
        *offset = _mm512_mul_ps(*step, _mm512_set1_ps(4));
        return;
    }
    const __m128i nibble = _mm_set1_epi8(0xf);
    __m128i packed = _mm_loadu_si128((const __m128i *)block);
    __m128i sc = _mm_and_si128(packed, nibble),
            mn = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);
    *step = _mm512_mul_ps(_mm512_set1_ps(f16_at(block + 80)),
                          _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc)));
    *offset = _mm512_mul_ps(_mm512_set1_ps(f16_at(block + 82)),
                            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mn)));
}
#endif

/* Where the level has 512-bit VNNI, the kernel below this one instead. */
#if !ZMM
INLINE void low_bits_rows(const uint8_t *const w[STORED_ROWS],
                          const vkmoe_exact_row a[ROWS_AT_ONCE], uint32_t rows, uint32_t len,
                          float out[STORED_ROWS][ROWS_AT_ONCE], low_bits f)
{
    const __m256i two = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS][2];
        zero_pairs(acc);
        for (uint32_t s = 0; s < len / 256; s++) {
            const int8_t *limbs = a[i].limbs + vkmoe_exact_limb_at(8 * s);
            __m256 xs_half[2];
            sub_block_scales(a[i].scale + 8 * s, xs_half);
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *block = w[r] + f.bytes * s;
                prefetch(block, f.bytes);
                __m256 step[2], offset[2];
                low_bits_steps(block, f, step, offset);
                __m256 factor[2];
                for (int k = 0; k < 2; k++) {
                    __m256 half = _mm256_loadu_ps(a[i].half + 16 * s + 8 * k);
                    acc[r][1] = _mm256_fnmadd_ps(offset[k], half, acc[r][1]);
                    factor[k] = _mm256_mul_ps(step[k], xs_half[k]);
                }
                __m256i third =
                    f.third ? _mm256_loadu_si256((const __m256i *)block) : _mm256_setzero_si256();
                for (int h = 0; h < 2; h++) {
                    __m256i c = _mm256_loadu_si256((const __m256i *)(block + f.codes + 32 * h));
                    /* bit 4h of each byte at bit 2, then 4h + 1, ...: 16-bit
                     * shifts by constants, no wanted bit crossing a byte */
                    __m256i bits = h ? _mm256_srli_epi16(third, 2) : _mm256_slli_epi16(third, 2);
                    for (int k = 0; k < 4; k++) {
                        int b = 4 * h + k;
                        __m256i q = _mm256_and_si256(_mm256_srli_epi16(c, 2 * k), two);
                        if (f.third) {
                            q = _mm256_or_si256(q, _mm256_and_si256(bits, four));
                            bits = _mm256_srli_epi16(bits, 1);
                        }
                        __m256i sum = dot_limbs(q, limbs + vkmoe_exact_limb_at(b));
                        acc[r][k & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum),
                                                        halves_factor(factor, b), acc[r][k & 1]);
                    }
                }
            }
        }
        store_pairs(acc, out, i);
    }
}
#else
/* The kernel above with two blocks of 32 in one 512-bit register, in the
 * same order (the same bits), as q6_k_rows. */
INLINE void low_bits_rows(const uint8_t *const w[STORED_ROWS],
                          const vkmoe_exact_row a[ROWS_AT_ONCE], uint32_t rows, uint32_t len,
                          float out[STORED_ROWS][ROWS_AT_ONCE], low_bits f)
{
    const __m512i two = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
    /* blocks 4h + 2p and 4h + 2p + 1 (by half): the shifts of their codes
     * to bits 0-1, and of their third bits to bit 2 (left for the first
     * pair, right for the others) */
    const __m512i code_shift[2] = {_mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2),
                                   _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6)};
    const __m512i third_shift[4] = {
        _mm512_setr_epi64(2, 2, 2, 2, 1, 1, 1, 1), _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1),
        _mm512_setr_epi64(2, 2, 2, 2, 3, 3, 3, 3), _mm512_setr_epi64(4, 4, 4, 4, 5, 5, 5, 5)};
    for (uint32_t i = 0; i < rows; i++) {
        __m512 acc[STORED_ROWS];
        zero_halves(acc);
        for (uint32_t s = 0; s < len / 256; s++) {
            sixteenths sub;
            sixteenths_of(&a[i], s, &sub);
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *block = w[r] + f.bytes * s;
                prefetch(block, f.bytes);
                __m512 step, offset;
                low_bits_steps16(block, f, &step, &offset);
                acc[r] = less_offsets(acc[r], offset, &sub);
                __m512 factors = _mm512_mul_ps(step, sub.xs);
                __m512i third =
                    f.third ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)block))
                            : _mm512_setzero_si512();
                for (int h = 0; h < 2; h++) {
                    __m512i c = _mm512_broadcast_i64x4(
                        _mm256_loadu_si256((const __m256i *)(block + f.codes + 32 * h)));
                    for (int p = 0; p < 2; p++) {
                        int b = 4 * h + 2 * p; /* blocks b and b + 1 */
                        __m512i q = _mm512_and_si512(_mm512_srlv_epi64(c, code_shift[p]), two);
                        if (f.third) {
                            __m512i bits = b ? _mm512_srlv_epi64(third, third_shift[b / 2])
                                             : _mm512_sllv_epi64(third, third_shift[0]);
                            q = _mm512_or_si512(q, _mm512_and_si512(bits, four));
                        }
                        acc[r] =
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_limb_pairs(q, sub.limb[b / 2])),
                                            pair_factors(factors, b), acc[r]);
                    }
                }
            }
        }
        store_halves(acc, out, i);
    }
}
#endif

/* d·(ls − 32) of an IQ4_XS super-block's eight sub-blocks of 32 (136
 * bytes: f16 d; a 16-bit word of the scales' top 2 bits, sub-block j at
 * bit 2j; four bytes of their low nibbles, sub-block j in byte j / 2, low
 * nibble first; then eight groups of 16 bytes of codes as IQ4_NL's). */
INLINE __m256 iq4_xs_steps(const uint8_t *block)
{
    uint32_t low;
    uint16_t top;
    memcpy(&top, block + 2, 2);
    memcpy(&low, block + 4, 4);
    __m128i nibbles = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)(low & 0x0f0f0f0fu)),
                                        _mm_cvtsi32_si128((int)(low >> 4 & 0x0f0f0f0fu)));
    __m256i high =
        _mm256_srlv_epi32(_mm256_set1_epi32(top), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
    __m256i ls =
        _mm256_or_si256(_mm256_cvtepu8_epi32(nibbles),
                        _mm256_slli_epi32(_mm256_and_si256(high, _mm256_set1_epi32(3)), 4));
    return _mm256_mul_ps(_mm256_set1_ps(f16_at(block)),
                         _mm256_cvtepi32_ps(_mm256_sub_epi32(ls, _mm256_set1_epi32(32))));
}

/* Q4_0, Q5_0, Q4_1 and Q5_1 blocks of 32 (quantize.c): f16 d, f16 m for
 * the affine _1 types, four bytes of fifth bits for the 5-bit ones (code
 * i's at bit i), then 16 bytes of nibbles (byte l holds codes l and
 * l + 16); w = d·(q − 2^(bits−1)), or d·q + m. IQ4_NL's (f16 d) and
 * MXFP4's (an E8M0 exponent) hold indices into 16 levels instead: w =
 * d·level, the levels offset by 2^level_shift to be unsigned bytes.
 * Q8_0's (f16 d) hold 32 signed bytes, its first half then its second.
 *
 * The kernels take four blocks at a time, the activations by quads
 * (cpu_exact.h): the four blocks' low nibbles meet their first halves,
 * the high nibbles their second halves, and each 32-bit lane of eight
 * values adds up in integers. Per quad and weight row, one conversion and
 * one FMA (lane 4j + i of sixteen: block j's; two where the halves' sums
 * are split), the affine types' m·Σx in the lanes 4j by a second FMA. */
typedef struct block32 {
    uint32_t bytes, high, nibbles; /* a block's size, where its parts begin */
    /* 4 or 5; Q8_0's 8 (34 bytes: f16 d, then 32 int8 codes), its codes
     * offset by 128 (one XOR) to be unsigned bytes, centred on 2^7 */
    int bits;
    bool affine;
    bool e8m0;            /* the scale an E8M0 exponent, not an f16 */
    const int8_t *levels; /* [16], or NULL: the codes are the values */
    /* 7 for IQ4_NL's levels (−127 .. 113); 4 for MXFP4's (−12 .. 12),
     * below 64 once offset, so that maddubs takes them whole */
    int level_shift;
    /* IQ4_NL (and Q8_0): eight levels down to −127 by X up to 2^22 could
     * pass 2^31, so each half of a block makes a sum (and a conversion)
     * of its own */
    bool split;
    /* The 512-bit kernel's gathers of 16-bit words from a quad (QUAD_WORD):
     * [0, 32) the four blocks' nibbles, [32, 64) their scales (each four
     * times) and, for the affine types, from 48 their m's; the 5-bit
     * types' [64, 96) their fifth bits (the first two words of each
     * 128-bit lane), Q8_0's its second halves (q8_0_quad). */
    const uint16_t *words;
} block32;

/* How far left a block's lane sums Σ X are shifted to be taken off its
 * Σ code·X: by the codes' centre 2^(bits−1), or by the 2^level_shift the
 * levels are offset by; none for the affine types, whose m·Σx is a
 * float sum of its own. */
INLINE int block32_centre_shift(block32 f)
{
    return f.levels ? f.level_shift : f.affine ? -1 : f.bits - 1;
}

/* The most bytes a block of 32 takes (Q8_0's). */
#define BLOCK32_MOST 34u

/* Quad q of a weight row, or of a row's last quad of n < EXACT_QUAD
 * blocks a copy with zeros for the blocks it lacks: they meet the zero
 * limbs of the activations' padding (vkmoe_exact_rows) and zero scales.
 * The copy from copy[1] on: MXFP4's 512-bit kernel loads from the byte
 * before a quad (masked off). */
#define QUAD_COPY (1 + EXACT_QUAD * BLOCK32_MOST)

INLINE const uint8_t *quad_of(const uint8_t *row, uint32_t q, uint32_t n, block32 f,
                              uint8_t copy[QUAD_COPY])
{
    const uint8_t *quad = row + (size_t)EXACT_QUAD * f.bytes * q;
    if (n == EXACT_QUAD)
        return quad;
    memset(copy, 0, QUAD_COPY);
    memcpy(copy + 1, quad, n * f.bytes);
    return copy + 1;
}

/* The lines of a quad PREFETCH_BYTES on (the 4-bit types' 72 to 80
 * bytes two lines, Q8_0's 136 three). */
INLINE void quad_prefetch(const uint8_t *quad, block32 f)
{
    prefetch(quad, (EXACT_QUAD * f.bytes + 63) / 64 * 64 - 64);
}

/* What a quad of an activation row gives beyond its limbs: its blocks'
 * lane sums (cpu_exact.h), scales and sums, those of a last quad's
 * missing blocks zeros (copied). */
typedef struct quad_sums {
    const int32_t *lanes;
    const float *scale, *sum;
} quad_sums;

typedef struct quad_padding {
    int32_t lanes[EXACT_QUAD * EXACT_LANES];
    float scale[EXACT_QUAD], sum[EXACT_QUAD];
} quad_padding;

INLINE quad_sums quad_sums_of(const vkmoe_exact_row *x, uint32_t q, uint32_t n, quad_padding *pad)
{
    uint32_t b = EXACT_QUAD * q;
    quad_sums s = {x->lanes + EXACT_LANES * b, x->scale + b, x->sum + b};
    if (n == EXACT_QUAD)
        return s;
    memset(pad, 0, sizeof(*pad));
    memcpy(pad->lanes, s.lanes, n * EXACT_LANES * sizeof(int32_t));
    memcpy(pad->scale, s.scale, n * sizeof(float));
    memcpy(pad->sum, s.sum, n * sizeof(float));
    return (quad_sums){pad->lanes, pad->scale, pad->sum};
}

#if !ZMM
/* A pair of blocks' fifth bits for the low halves' codes (bits 0-15 of
 * each block's word, the first block's in bits 0-15) and for the high. */
INLINE void fifth_words(const uint8_t *first, const uint8_t *second, block32 f, uint32_t *low,
                        uint32_t *high)
{
    uint32_t a = word_at(first + f.high), b = word_at(second + f.high);
    *low = (a & 0xffff) | b << 16;
    *high = a >> 16 | (b & 0xffff0000u);
}

/* Bit i of `bits` at bit 4 of byte i. */
INLINE __m256i fifth_bits(uint32_t bits)
{
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                            2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
                  bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i set = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(set, bit), _mm256_set1_epi8(0x10));
}

/* Σ u·X of half h of two blocks' codes u against their limbs (limb k's
 * half h at run + 128k + 64h): AVX2's maddubs takes codes below 64 whole
 * and IQ4's offset levels (to 241, `wide`) by nibbles. */
INLINE __m256i half_sum(__m256i u, const int8_t *run, int h, bool wide)
{
    __m256i sum[3];
#if !VNNI
    if (wide) {
        const __m256i nibble = _mm256_set1_epi8(0xf);
        __m256i up = _mm256_and_si256(_mm256_srli_epi16(u, 4), nibble);
        for (int k = 0; k < 3; k++)
            sum[k] = dot_add(_mm256_setzero_si256(), up, run + 128 * k + 64 * h);
        __m256i s = _mm256_slli_epi32(joined_sums(sum, false), 4);
        u = _mm256_and_si256(u, nibble);
        for (int k = 0; k < 3; k++)
            sum[k] = dot_add(_mm256_setzero_si256(), u, run + 128 * k + 64 * h);
        return _mm256_add_epi32(s, joined_sums(sum, false));
    }
#else
    (void)wide;
#endif
    for (int k = 0; k < 3; k++)
        sum[k] = dot_add(_mm256_setzero_si256(), u, run + 128 * k + 64 * h);
    return joined_sums(sum, false);
}

/* What the rows of a kernel call take of half p (blocks 2p and 2p + 1)
 * of a quad of x: its limbs (limb k's half h at run + 128k + 64h), the
 * lane sums of eight values (or of each half, split) shifted to be taken
 * off, the blocks' scales and their sums. */
typedef struct half_x {
    const int8_t *run;
    __m256i centre[2];
    __m128 xs;  /* lanes 0, 1 */
    __m256 sum; /* lanes 0 and 4, the others zero */
} half_x;

INLINE void half_x_of(const int8_t *limbs, const quad_sums *x, int p, block32 f, half_x *h)
{
    h->run = limbs + 32 * p;
    /* the two blocks' lane sums: the first halves' in lanes 0-3 of lane
     * sums of four, the second halves' in 4-7 */
    __m256i first = _mm256_loadu_si256((const __m256i *)(x->lanes + 2 * p * EXACT_LANES)),
            second = _mm256_loadu_si256((const __m256i *)(x->lanes + (2 * p + 1) * EXACT_LANES));
    __m256i low = _mm256_permute2x128_si256(first, second, 0x20),
            high = _mm256_permute2x128_si256(first, second, 0x31);
    __m128i shift = _mm_cvtsi32_si128(block32_centre_shift(f));
    h->centre[0] = f.split ? _mm256_sll_epi32(low, shift)
                           : _mm256_sll_epi32(_mm256_add_epi32(low, high), shift);
    h->centre[1] = _mm256_sll_epi32(high, shift);
    h->xs = _mm_setr_ps(x->scale[2 * p], x->scale[2 * p + 1], 0, 0);
    h->sum = _mm256_setr_ps(x->sum[2 * p], 0, 0, 0, x->sum[2 * p + 1], 0, 0, 0);
}

/* A half of a quad of a weight row's codes, lo the blocks' first halves'
 * and hi their second halves', into acc: lanes 0-3 the first block's,
 * 4-7 the second's, each times its factor; the same sums in the same
 * order as lanes 8p .. 8p + 7 of the 512-bit kernel's quad_into. */
INLINE __m256 quad_half_into(__m256i lo, __m256i hi, const half_x *x, block32 f, __m256 factor,
                             __m256 acc)
{
    if (f.split) {
        for (int h = 0; h < 2; h++) {
            __m256i s = half_sum(h ? hi : lo, x->run, h, block32_centre_shift(f) == 7);
            acc =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(s, x->centre[h])), factor, acc);
        }
        return acc;
    }
    __m256i sum[3];
    for (int k = 0; k < 3; k++)
        sum[k] = dot_add(dot_add(_mm256_setzero_si256(), lo, x->run + 128 * k), hi,
                         x->run + 128 * k + 64);
    __m256i s = joined_sums(sum, false);
    if (block32_centre_shift(f) >= 0)
        s = _mm256_sub_epi32(s, x->centre[0]);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), factor, acc);
}

/* Lanes 0-3 v's lane 0, 4-7 its lane 1. */
INLINE __m256 fours_of(__m128 v)
{
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(v),
                                    _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

/* Two blocks' f16 words at `at` as floats in lanes 0, 1. */
INLINE __m128 f16_pair(const uint8_t *first, const uint8_t *second, uint32_t at)
{
    uint16_t a, b;
    memcpy(&a, first + at, 2);
    memcpy(&b, second + at, 2);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)(a | (uint32_t)b << 16)));
}

/* Half p of a quad of weight blocks into acc (quad_half_into). */
INLINE __m256 block32_half(const uint8_t *quad, const half_x *x, int p, block32 f, __m256i table,
                           __m256 acc)
{
    const __m256i nibble = _mm256_set1_epi8(0xf), offset = _mm256_set1_epi8((char)0x80);
    const uint8_t *first = quad + f.bytes * 2 * p, *second = first + f.bytes;
    __m256i c = _mm256_loadu2_m128i((const __m128i *)(second + f.nibbles),
                                    (const __m128i *)(first + f.nibbles));
    __m256i lo = _mm256_and_si256(c, nibble),
            hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), nibble);
    if (f.bits == 8) { /* Q8_0: bytes, the halves one after the other */
        lo = _mm256_xor_si256(c, offset);
        hi = _mm256_xor_si256(_mm256_loadu2_m128i((const __m128i *)(second + f.nibbles + 16),
                                                  (const __m128i *)(first + f.nibbles + 16)),
                              offset);
    }
    if (f.bits == 5) {
        uint32_t low, high;
        fifth_words(first, second, f, &low, &high);
        lo = _mm256_or_si256(lo, fifth_bits(low));
        hi = _mm256_or_si256(hi, fifth_bits(high));
    }
    if (f.levels) {
        lo = _mm256_shuffle_epi8(table, lo);
        hi = _mm256_shuffle_epi8(table, hi);
    }
    __m128 scale = f.e8m0 ? _mm_setr_ps(vkmoe_e8m0_half(first[0]), vkmoe_e8m0_half(second[0]), 0, 0)
                          : f16_pair(first, second, 0);
    acc = quad_half_into(lo, hi, x, f, fours_of(_mm_mul_ps(scale, x->xs)), acc);
    if (f.affine)
        acc = _mm256_fmadd_ps(fours_of(f16_pair(first, second, 2)), x->sum, acc);
    return acc;
}

INLINE void block32_rows(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],
                         uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE],
                         block32 f)
{
    const __m256i table =
        f.levels ? offset_levels(f.levels, f.level_shift) : _mm256_setzero_si256();
    const uint32_t blocks = len / EXACT_BLOCK;
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS][2];
        zero_pairs(acc);
        for (uint32_t q = 0; q * EXACT_QUAD < blocks; q++) {
            uint32_t n =
                blocks - EXACT_QUAD * q < EXACT_QUAD ? blocks - EXACT_QUAD * q : EXACT_QUAD;
            quad_padding pad;
            quad_sums x = quad_sums_of(&a[i], q, n, &pad);
            const uint8_t *quad[STORED_ROWS];
            uint8_t copy[STORED_ROWS][QUAD_COPY];
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                quad[r] = quad_of(w[r], q, n, f, copy[r]);
                quad_prefetch(quad[r], f);
            }
            for (int p = 0; p < 2; p++) {
                half_x h;
                half_x_of(a[i].limbs + (size_t)q * EXACT_QUAD_BYTES, &x, p, f, &h);
                for (uint32_t r = 0; r < STORED_ROWS; r++)
                    acc[r][p] = block32_half(quad[r], &h, p, f, table, acc[r][p]);
            }
        }
        store_pairs(acc, out, i);
    }
}
#else
/* A quad's weights come from two 512-bit loads, A at its byte 0 (MXFP4:
 * its byte −1, masked off) and B ending where the quad ends, and are
 * gathered from their 16-bit words (vpermt2w: A's 0-31, B's 32-63) by the
 * tables below: QUAD_WORD is the word holding bytes p, p + 1 of a quad,
 * A at byte a and B at byte b, from A where the pair lies in it on a
 * word. */
#define QUAD_WORD(p, a, b)                                                                         \
    ((p) >= (a) && ((p) - (a)) % 2 == 0 && (p) - (a) <= 62 ? ((p) - (a)) / 2 : ((p) - (b)) / 2 + 32)
#define QUAD_TWO(p, a, b) QUAD_WORD(p, a, b), QUAD_WORD((p) + 2, a, b)
#define QUAD_RUN(p, a, b)                                                                          \
    QUAD_TWO(p, a, b), QUAD_TWO((p) + 4, a, b), QUAD_TWO((p) + 8, a, b), QUAD_TWO((p) + 12, a, b)
#define QUAD_FOUR(p, a, b)                                                                         \
    QUAD_WORD(p, a, b), QUAD_WORD(p, a, b), QUAD_WORD(p, a, b), QUAD_WORD(p, a, b)
#define QUAD_EIGHT(w) w, w, w, w, w, w, w, w
/* A quad of blocks `bytes` long: each of the four blocks' nibbles, its
 * scale and m four times each, its fifth bits (two words) */
#define QUAD_WORDS(bytes, nibbles, high)                                                           \
    {                                                                                              \
        QUAD_RUN(nibbles, 0, 4 * (bytes)-64), QUAD_RUN((bytes) + (nibbles), 0, 4 * (bytes)-64),    \
            QUAD_RUN(2 * (bytes) + (nibbles), 0, 4 * (bytes)-64),                                  \
            QUAD_RUN(3 * (bytes) + (nibbles), 0, 4 * (bytes)-64), QUAD_FOUR(0, 0, 4 * (bytes)-64), \
            QUAD_FOUR(bytes, 0, 4 * (bytes)-64), QUAD_FOUR(2 * (bytes), 0, 4 * (bytes)-64),        \
            QUAD_FOUR(3 * (bytes), 0, 4 * (bytes)-64), QUAD_FOUR(2, 0, 4 * (bytes)-64),            \
            QUAD_FOUR((bytes) + 2, 0, 4 * (bytes)-64),                                             \
            QUAD_FOUR(2 * (bytes) + 2, 0, 4 * (bytes)-64),                                         \
            QUAD_FOUR(3 * (bytes) + 2, 0, 4 * (bytes)-64), QUAD_TWO(high, 0, 4 * (bytes)-64),      \
            QUAD_FOUR(0, 0, 0), QUAD_TWO(0, 0, 0), QUAD_TWO((bytes) + (high), 0, 4 * (bytes)-64),  \
            QUAD_FOUR(0, 0, 0), QUAD_TWO(0, 0, 0),                                                 \
            QUAD_TWO(2 * (bytes) + (high), 0, 4 * (bytes)-64), QUAD_FOUR(0, 0, 0),                 \
            QUAD_TWO(0, 0, 0), QUAD_TWO(3 * (bytes) + (high), 0, 4 * (bytes)-64),                  \
            QUAD_FOUR(0, 0, 0), QUAD_TWO(0, 0, 0)                                                  \
    }
static const uint16_t q4_0_words[96] = QUAD_WORDS(18, 2, 0), q5_0_words[96] = QUAD_WORDS(22, 6, 2),
                      q4_1_words[96] = QUAD_WORDS(20, 4, 0), q5_1_words[96] = QUAD_WORDS(24, 8, 4);
/* MXFP4 (17 bytes, nibbles at 1), A from byte −1: the nibbles, then for
 * each 32-bit lane both words of the word holding its block's exponent
 * (byte 17j, A's byte 17j + 1: the high byte for j = 0, 2) */
static const uint16_t mxfp4_words[64] = {
    QUAD_RUN(1, -1, 4), QUAD_RUN(18, -1, 4), QUAD_RUN(35, -1, 4), QUAD_RUN(52, -1, 4),
    QUAD_EIGHT(0),      QUAD_EIGHT(9),       QUAD_EIGHT(17),      QUAD_EIGHT(26)};
/* Q8_0 (34 bytes, codes at 2): the blocks' first halves from loads at
 * bytes 0 and 64, their scales four times each from the same, their
 * second halves from loads at 8 and 72 (the quad's 136 bytes) */
static const uint16_t q8_0_words[96] = {
    QUAD_RUN(2, 0, 64),  QUAD_RUN(36, 0, 64),  QUAD_RUN(70, 0, 64),  QUAD_RUN(104, 0, 64),
    QUAD_FOUR(0, 0, 64), QUAD_FOUR(34, 0, 64), QUAD_FOUR(68, 0, 64), QUAD_FOUR(102, 0, 64),
    QUAD_EIGHT(0),       QUAD_EIGHT(0),        QUAD_RUN(18, 8, 72),  QUAD_RUN(52, 8, 72),
    QUAD_RUN(86, 8, 72), QUAD_RUN(120, 8, 72)};
#undef QUAD_WORDS
#undef QUAD_EIGHT
#undef QUAD_FOUR
#undef QUAD_RUN
#undef QUAD_TWO
#undef QUAD_WORD

/* vkmoe_e8m0_half of each lane's e (0 .. 255), the same bits. */
INLINE __m512 e8m0_halves(__m512i e)
{
    __m512i normal = _mm512_slli_epi32(_mm512_sub_epi32(e, _mm512_set1_epi32(1)), 23),
            small = _mm512_sllv_epi32(_mm512_set1_epi32(0x00200000), e);
    __mmask16 tiny = _mm512_cmplt_epu32_mask(e, _mm512_set1_epi32(2));
    return _mm512_castsi512_ps(_mm512_mask_mov_epi32(normal, tiny, small));
}

/* What the rows of a kernel call take of a quad of x: its limbs, the
 * lane sums of eight values (or of each half, split) shifted to be taken
 * off, the blocks' scales (lane 4j + i block j's) and their sums (lanes
 * 4j, the others zero). */
typedef struct quad_x {
    __m512i limb[3][2]; /* [k][h] */
    __m512i centre[2];
    __m512 xs, sum;
} quad_x;

INLINE void quad_x_of(const int8_t *limbs, const quad_sums *s, block32 f, quad_x *x)
{
    const __m512i first =
                      _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),
                  second = _mm512_add_epi32(first, _mm512_set1_epi32(4)),
                  fours = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (int k = 0; k < 3; k++)
        for (int h = 0; h < 2; h++)
            x->limb[k][h] = _mm512_loadu_si512(limbs + 128 * k + 64 * h);
    __m512i pair0 = _mm512_loadu_si512(s->lanes), pair1 = _mm512_loadu_si512(s->lanes + 16);
    __m512i low = _mm512_permutex2var_epi32(pair0, first, pair1),
            high = _mm512_permutex2var_epi32(pair0, second, pair1);
    __m128i shift = _mm_cvtsi32_si128(block32_centre_shift(f));
    x->centre[0] = f.split ? _mm512_sll_epi32(low, shift)
                           : _mm512_sll_epi32(_mm512_add_epi32(low, high), shift);
    x->centre[1] = _mm512_sll_epi32(high, shift);
    x->xs = _mm512_permutexvar_ps(fours, _mm512_castps128_ps512(_mm_loadu_ps(s->scale)));
    x->sum =
        _mm512_maskz_permutexvar_ps(0x1111, fours, _mm512_castps128_ps512(_mm_loadu_ps(s->sum)));
}

/* Σ q·X over one limb's halves lo and hi (hi NULL: the low half's alone). */
INLINE __m512i quad_dot(__m512i lo, const __m512i *hi, const quad_x *x, int h)
{
    __m512i s = _mm512_setzero_si512();
    for (int k = 0; k < 3; k++) {
        if (k)
            s = _mm512_slli_epi32(s, 8);
        s = _mm512_dpbusd_epi32(s, lo, x->limb[k][h]);
        if (hi)
            s = _mm512_dpbusd_epi32(s, *hi, x->limb[k][1]);
    }
    return s;
}

/* A quad of a weight row's codes, lo the blocks' first halves' and hi
 * their second halves', into acc: lane 4j + i block j's, times factor. */
INLINE __m512 quad_into(__m512i lo, __m512i hi, __m512 factor, const quad_x *x, block32 f,
                        __m512 acc)
{
    if (f.split) {
        acc = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(_mm512_sub_epi32(quad_dot(lo, NULL, x, 0), x->centre[0])), factor,
            acc);
        return _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(_mm512_sub_epi32(quad_dot(hi, NULL, x, 1), x->centre[1])), factor,
            acc);
    }
    __m512i s = quad_dot(lo, &hi, x, 0);
    if (block32_centre_shift(f) >= 0)
        s = _mm512_sub_epi32(s, x->centre[0]);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), factor, acc);
}

/* Q8_0's quad (136 bytes) in 512-bit registers: its first halves from
 * loads at bytes 0 and 64, its second halves from loads at 8 and 72
 * (q8_0_words), the codes offset by 128 (one XOR). */
INLINE __m512 q8_0_quad(const uint8_t *quad, const quad_x *x, block32 f, __m512i first_words,
                        __m512i scale_words, __m512i second_words, __m512 acc)
{
    const __m512i offset = _mm512_set1_epi8((char)0x80);
    __m512i a = _mm512_loadu_si512(quad), b = _mm512_loadu_si512(quad + 64);
    __m512i lo = _mm512_xor_si512(_mm512_permutex2var_epi16(a, first_words, b), offset),
            hi = _mm512_xor_si512(_mm512_permutex2var_epi16(_mm512_loadu_si512(quad + 8),
                                                            second_words,
                                                            _mm512_loadu_si512(quad + 72)),
                                  offset);
    __m512 d =
        _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(a, scale_words, b)));
    return quad_into(lo, hi, _mm512_mul_ps(d, x->xs), x, f, acc);
}

/* One weight row's quad into acc. */
INLINE __m512 block32_quad(const uint8_t *quad, const quad_x *x, block32 f, __m512i table,
                           __m512i code_words, __m512i scale_words, __m512i more_words, __m512 acc)
{
    if (f.bits == 8)
        return q8_0_quad(quad, x, f, code_words, scale_words, more_words, acc);
    const __m512i nibble = _mm512_set1_epi8(0xf);
    __m512i a = f.e8m0 ? _mm512_maskz_loadu_epi8(~1ull, quad - 1) : _mm512_loadu_si512(quad),
            b = _mm512_loadu_si512(quad + EXACT_QUAD * f.bytes - 64);
    __m512i c = _mm512_permutex2var_epi16(a, code_words, b);
    __m512i lo = _mm512_and_si512(c, nibble),
            hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), nibble);
    if (f.bits == 5) {
        /* each block's four bytes of fifth bits in its 128-bit lane, bytes
         * 0 and 1 spread over the low codes, 2 and 3 over the high; code i's
         * bit i % 8 of its byte. (Made in scalar registers and moved to
         * masks: 34 Gweights/s against 37-40.) */
        const __m512i low_bytes = _mm512_broadcast_i32x4(
                          _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)),
                      high_bytes = _mm512_broadcast_i32x4(
                          _mm_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)),
                      bit = _mm512_set1_epi64((long long)0x8040201008040201ull),
                      sixteen = _mm512_set1_epi8(0x10);
        __m512i bits = _mm512_permutex2var_epi16(a, more_words, b);
        lo = _mm512_mask_add_epi8(
            lo, _mm512_test_epi8_mask(_mm512_shuffle_epi8(bits, low_bytes), bit), lo, sixteen);
        hi = _mm512_mask_add_epi8(
            hi, _mm512_test_epi8_mask(_mm512_shuffle_epi8(bits, high_bytes), bit), hi, sixteen);
    }
    if (f.levels) {
        lo = _mm512_shuffle_epi8(table, lo);
        hi = _mm512_shuffle_epi8(table, hi);
    }
    __m512 factor, m = _mm512_setzero_ps();
    if (f.e8m0) {
        const __m512i at = _mm512_setr_epi32(8, 8, 8, 8, 0, 0, 0, 0, 8, 8, 8, 8, 0, 0, 0, 0);
        __m512i e =
            _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi16(scale_words, a), at),
                             _mm512_set1_epi32(255));
        factor = _mm512_mul_ps(e8m0_halves(e), x->xs);
    } else {
        __m512i s = _mm512_permutex2var_epi16(a, scale_words, b);
        factor = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(s)), x->xs);
        if (f.affine)
            m = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(s, 1));
    }
    acc = quad_into(lo, hi, factor, x, f, acc);
    return f.affine ? _mm512_fmadd_ps(m, x->sum, acc) : acc;
}

INLINE void block32_rows(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],
                         uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE],
                         block32 f)
{
    const __m512i table =
        f.levels
            ? _mm512_broadcast_i32x4(_mm256_castsi256_si128(offset_levels(f.levels, f.level_shift)))
            : _mm512_setzero_si512();
    const __m512i code_words = _mm512_loadu_si512(f.words),
                  scale_words = _mm512_loadu_si512(f.words + 32),
                  more_words = /* fifth bits, or Q8_0's second halves */
                  f.bits > 4 ? _mm512_loadu_si512(f.words + 64) : _mm512_setzero_si512();
    const uint32_t blocks = len / EXACT_BLOCK, whole = blocks / EXACT_QUAD;
    for (uint32_t i = 0; i < rows; i++) {
        __m512 acc[STORED_ROWS];
        zero_halves(acc);
        quad_x x;
        for (uint32_t q = 0; q < whole; q++) {
            quad_sums s = quad_sums_of(&a[i], q, EXACT_QUAD, NULL);
            quad_x_of(a[i].limbs + (size_t)q * EXACT_QUAD_BYTES, &s, f, &x);
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                const uint8_t *quad = w[r] + (size_t)EXACT_QUAD * f.bytes * q;
                quad_prefetch(quad, f);
                acc[r] =
                    block32_quad(quad, &x, f, table, code_words, scale_words, more_words, acc[r]);
            }
        }
        if (blocks % EXACT_QUAD) { /* the rows' last quad, short */
            quad_padding pad;
            quad_sums s = quad_sums_of(&a[i], whole, blocks % EXACT_QUAD, &pad);
            quad_x_of(a[i].limbs + (size_t)whole * EXACT_QUAD_BYTES, &s, f, &x);
            for (uint32_t r = 0; r < STORED_ROWS; r++) {
                uint8_t copy[QUAD_COPY];
                acc[r] = block32_quad(quad_of(w[r], whole, blocks % EXACT_QUAD, f, copy), &x, f,
                                      table, code_words, scale_words, more_words, acc[r]);
            }
        }
        store_halves(acc, out, i);
    }
}
#endif

/* iq4_xs_steps of super-block s of each weight row times x's block
 * scales, prefetching the rows. */
INLINE void iq4_xs_row_steps(const uint8_t *const w[STORED_ROWS], uint32_t s, const float *scale,
                             __m256 step[STORED_ROWS])
{
    __m256 xs = _mm256_loadu_ps(scale + 8 * s);
    for (uint32_t r = 0; r < STORED_ROWS; r++) {
        prefetch(w[r] + 136 * s, 136);
        step[r] = _mm256_mul_ps(iq4_xs_steps(w[r] + 136 * s), xs);
    }
}

/* IQ4_XS: per sub-block of 32 (one block of the exact form), d·(ls −
 * 32)·2^e·Σ level·X, the levels offset by 128 and their sums split by
 * halves as IQ4_NL's: a super-block's two quads of sub-blocks each take
 * their 64 bytes of codes in one run, the eight steps made once a
 * super-block and row. */
#if !ZMM
INLINE void iq4_xs_rows(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],
                        uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])
{
    const block32 f = {.levels = vkmoe_iq4_levels, .level_shift = 7, .split = true};
    const __m256i table = offset_levels(vkmoe_iq4_levels, 7), nibble = _mm256_set1_epi8(0xf);
    const __m256i pair = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    for (uint32_t i = 0; i < rows; i++) {
        __m256 acc[STORED_ROWS][2];
        zero_pairs(acc);
        for (uint32_t s = 0; s < len / EXACT_SUPER_BLOCK; s++) {
            __m256 step[STORED_ROWS];
            iq4_xs_row_steps(w, s, a[i].scale, step);
            for (uint32_t t = 0; t < 2; t++) {
                quad_sums x = quad_sums_of(&a[i], 2 * s + t, EXACT_QUAD, NULL);
                for (int p = 0; p < 2; p++) {
                    half_x h;
                    half_x_of(a[i].limbs + (size_t)(2 * s + t) * EXACT_QUAD_BYTES, &x, p, f, &h);
                    const __m256i spread = _mm256_add_epi32(pair, _mm256_set1_epi32(4 * t + 2 * p));
                    for (uint32_t r = 0; r < STORED_ROWS; r++) {
                        __m256i c = _mm256_loadu_si256(
                            (const __m256i *)(w[r] + 136 * s + 8 + 64 * t + 32 * p));
                        __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(c, nibble)),
                                hi = _mm256_shuffle_epi8(
                                    table, _mm256_and_si256(_mm256_srli_epi16(c, 4), nibble));
                        acc[r][p] = quad_half_into(
                            lo, hi, &h, f, _mm256_permutevar8x32_ps(step[r], spread), acc[r][p]);
                    }
                }
            }
        }
        store_pairs(acc, out, i);
    }
}
#else
/* The kernel above in 512-bit registers: a quad a register. */
INLINE void iq4_xs_rows(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],
                        uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])
{
    const block32 f = {.levels = vkmoe_iq4_levels, .level_shift = 7, .split = true};
    const __m512i table = _mm512_broadcast_i32x4(
                      _mm256_castsi256_si128(offset_levels(vkmoe_iq4_levels, 7))),
                  nibble = _mm512_set1_epi8(0xf),
                  fours = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (uint32_t i = 0; i < rows; i++) {
        __m512 acc[STORED_ROWS];
        zero_halves(acc);
        for (uint32_t s = 0; s < len / EXACT_SUPER_BLOCK; s++) {
            __m256 step[STORED_ROWS];
            iq4_xs_row_steps(w, s, a[i].scale, step);
            for (uint32_t t = 0; t < 2; t++) {
                quad_sums sums = quad_sums_of(&a[i], 2 * s + t, EXACT_QUAD, NULL);
                quad_x x;
                quad_x_of(a[i].limbs + (size_t)(2 * s + t) * EXACT_QUAD_BYTES, &sums, f, &x);
                const __m512i spread = _mm512_add_epi32(fours, _mm512_set1_epi32(4 * t));
                for (uint32_t r = 0; r < STORED_ROWS; r++) {
                    __m512i c = _mm512_loadu_si512(w[r] + 136 * s + 8 + 64 * t);
                    __m512i lo = _mm512_shuffle_epi8(table, _mm512_and_si512(c, nibble)),
                            hi = _mm512_shuffle_epi8(
                                table, _mm512_and_si512(_mm512_srli_epi16(c, 4), nibble));
                    __m512 factor = _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(step[r]));
                    acc[r] = quad_into(lo, hi, factor, &x, f, acc[r]);
                }
            }
        }
        store_halves(acc, out, i);
    }
}
#endif

#define KERNEL(name, call)                                                                         \
    static void name(const uint8_t *const w[STORED_ROWS], const vkmoe_exact_row a[ROWS_AT_ONCE],   \
                     uint32_t rows, uint32_t len, float out[STORED_ROWS][ROWS_AT_ONCE])            \
    {                                                                                              \
        call;                                                                                      \
    }
#define BLOCK32(...) block32_rows(w, a, rows, len, out, (block32){__VA_ARGS__})
#if ZMM
#define WORDS(table) .words = table
#else
#define WORDS(table) .words = NULL
#endif
KERNEL(q4_k, k_quant_rows(w, a, rows, len, out, false))
KERNEL(q5_k, k_quant_rows(w, a, rows, len, out, true))
KERNEL(q6_k, q6_k_rows(w, a, rows, len, out))
KERNEL(q2_k, low_bits_rows(w, a, rows, len, out, (low_bits){.bytes = 84, .codes = 16}))
KERNEL(q3_k,
       low_bits_rows(w, a, rows, len, out, (low_bits){.bytes = 110, .codes = 32, .third = true}))
KERNEL(q4_0, BLOCK32(.bytes = 18, .nibbles = 2, .bits = 4, WORDS(q4_0_words)))
KERNEL(q5_0, BLOCK32(.bytes = 22, .high = 2, .nibbles = 6, .bits = 5, WORDS(q5_0_words)))
KERNEL(q4_1, BLOCK32(.bytes = 20, .nibbles = 4, .bits = 4, .affine = true, WORDS(q4_1_words)))
KERNEL(q5_1,
       BLOCK32(.bytes = 24, .high = 4, .nibbles = 8, .bits = 5, .affine = true, WORDS(q5_1_words)))
/* maddubs would take Q8_0's and IQ4_NL's offset codes (to 255 and 241)
 * in pairs past int16: AVX2 keeps their float kernels */
#if VNNI
KERNEL(q8_0, BLOCK32(.bytes = 34, .nibbles = 2, .bits = 8, .split = true, WORDS(q8_0_words)))
KERNEL(iq4_nl, BLOCK32(.bytes = 18, .nibbles = 2, .bits = 4, .levels = vkmoe_iq4_levels,
                       .level_shift = 7, .split = true, WORDS(q4_0_words)))
#endif
KERNEL(mxfp4, BLOCK32(.bytes = 17, .nibbles = 1, .bits = 4, .e8m0 = true,
                      .levels = vkmoe_mxfp4_levels, .level_shift = 4, WORDS(mxfp4_words)))
KERNEL(iq4_xs, iq4_xs_rows(w, a, rows, len, out))
#undef WORDS
#undef BLOCK32
#undef KERNEL

const vkmoe_exact_isa NAMED(vkmoe_exact, LEVEL) = {
    .name = QUOTED(LEVEL),
    .convert = convert,
    .kernel =
        {
            [VKMOE_WEIGHT_Q4_K] = q4_k,
            [VKMOE_WEIGHT_Q5_K] = q5_k,
            [VKMOE_WEIGHT_Q6_K] = q6_k,
            [VKMOE_WEIGHT_Q2_K] = q2_k,
            [VKMOE_WEIGHT_Q3_K] = q3_k,
            [VKMOE_WEIGHT_Q4_0] = q4_0,
            [VKMOE_WEIGHT_Q5_0] = q5_0,
            [VKMOE_WEIGHT_Q4_1] = q4_1,
            [VKMOE_WEIGHT_Q5_1] = q5_1,
#if VNNI
            [VKMOE_WEIGHT_Q8_0] = q8_0,
            [VKMOE_WEIGHT_IQ4_NL] = iq4_nl,
#endif
            [VKMOE_WEIGHT_MXFP4] = mxfp4,
            [VKMOE_WEIGHT_IQ4_XS] = iq4_xs,
        },
    .layout =
        {
            [VKMOE_WEIGHT_Q4_K] = EXACT_BY_SUPER_BLOCKS,
            [VKMOE_WEIGHT_Q5_K] = EXACT_BY_SUPER_BLOCKS,
            [VKMOE_WEIGHT_Q4_0] = EXACT_BY_QUADS,
            [VKMOE_WEIGHT_Q5_0] = EXACT_BY_QUADS,
            [VKMOE_WEIGHT_Q4_1] = EXACT_BY_QUADS,
            [VKMOE_WEIGHT_Q5_1] = EXACT_BY_QUADS,
            [VKMOE_WEIGHT_IQ4_NL] = EXACT_BY_QUADS,
            [VKMOE_WEIGHT_MXFP4] = EXACT_BY_QUADS,
            [VKMOE_WEIGHT_IQ4_XS] = EXACT_BY_QUADS,
            [VKMOE_WEIGHT_Q8_0] = EXACT_BY_QUADS,
        },
};
