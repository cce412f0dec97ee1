/* Host peaks: an FMA loop on independent accumulators and a streaming sum,
 * on as many threads as the library's CPU experts take, best of three. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "host_peak.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

#define MAX_THREADS 64
#define READ_BYTES ((size_t)256 << 20)
#define FMA_ITERATIONS 20000000u

typedef struct peak_thread {
    const float *data; /* the read test's share */
    size_t floats;
    double result; /* FLOPs done, or the sum (kept so the loop stays) */
    pthread_t id;
} peak_thread;

double host_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#ifdef HAVE_X86
__attribute__((target("avx2,fma"))) static double fma_avx2(void)
{
    __m256 acc[12], m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        acc[i] = _mm256_set1_ps((float)i);
    for (unsigned it = 0; it < FMA_ITERATIONS; it++)
        for (int i = 0; i < 12; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], m, a);
    float keep[8];
    __m256 s = acc[0];
    for (int i = 1; i < 12; i++)
        s = _mm256_add_ps(s, acc[i]);
    _mm256_storeu_ps(keep, s);
    return keep[0] != 12345.0f ? 2.0 * 8 * 12 * FMA_ITERATIONS : 0;
}

__attribute__((target("avx2"))) static double read_avx2(const float *v, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(v + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(v + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(v + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(v + i + 24));
    }
    float keep[8];
    _mm256_storeu_ps(keep, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    return keep[0];
}
#endif

static bool x86(void)
{
#ifdef HAVE_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

static double fma_portable(void)
{
    float acc[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (unsigned it = 0; it < FMA_ITERATIONS / 8; it++)
        for (int i = 0; i < 8; i++)
            acc[i] = acc[i] * 0.999999f + 1e-7f;
    return acc[3] != 12345.0f ? 2.0 * 8 * (FMA_ITERATIONS / 8) : 0;
}

static double read_portable(const float *v, size_t n)
{
    float s[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            s[l] += v[i + l];
    return s[0];
}

static void *fma_thread(void *arg)
{
    peak_thread *t = arg;
#ifdef HAVE_X86
    if (x86()) {
        t->result = fma_avx2();
        return NULL;
    }
#endif
    t->result = fma_portable();
    return NULL;
}

static void *read_thread(void *arg)
{
    peak_thread *t = arg;
#ifdef HAVE_X86
    if (x86()) {
        t->result = read_avx2(t->data, t->floats);
        return NULL;
    }
#endif
    t->result = read_portable(t->data, t->floats);
    return NULL;
}

/* Seconds of one run of fn on every thread at once (the first is this one). */
static double run_all(peak_thread *t, unsigned n, void *(*fn)(void *))
{
    double start = host_seconds();
    unsigned started = 1;
    for (; started < n; started++)
        if (pthread_create(&t[started].id, NULL, fn, &t[started]) != 0)
            break;
    fn(&t[0]);
    for (unsigned i = 1; i < started; i++)
        pthread_join(t[i].id, NULL);
    return started == n ? host_seconds() - start : 0;
}

void host_peak_measure(host_peak_figures *out)
{
    memset(out, 0, sizeof(*out));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = cores < 1 ? 1 : cores > MAX_THREADS ? MAX_THREADS : (unsigned)cores;
    out->threads = n;
    peak_thread t[MAX_THREADS] = {0};
    /* In huge pages, as the library's host arrays of experts are
     * (vkmoe_map_pages): the best the host reads. */
    float *data = vkmoe_map_pages(READ_BYTES);
    for (int rep = 0; rep < 3; rep++) {
        double s = run_all(t, n, fma_thread);
        if (s > 0 && t[0].result * n / s * 1e-9 > out->fma_gflops)
            out->fma_gflops = t[0].result * n / s * 1e-9;
        if (!data)
            continue;
        if (rep == 0)
            for (size_t i = 0; i < READ_BYTES / sizeof(float); i++)
                data[i] = (float)(i & 7);
        size_t share = READ_BYTES / sizeof(float) / n / 32 * 32;
        for (unsigned i = 0; i < n; i++)
            t[i] = (peak_thread){.data = data + i * share, .floats = share};
        s = run_all(t, n, read_thread);
        if (s > 0 && share * n * sizeof(float) / s * 1e-9 > out->read_gbps)
            out->read_gbps = share * n * sizeof(float) / s * 1e-9;
    }
    vkmoe_unmap_pages(data, READ_BYTES);
}
