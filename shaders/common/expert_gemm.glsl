// The tiled product shared by gemm_up and gemm_down: for one row tile (all of
// one expert) and one column tile, acc[b] = A·B_bᵀ for B_COUNT weight
// matrices B_b [N][ld] of that expert. The including shader defines B_COUNT
// and load_a(row_in_tile, k), and loads tile_row_info for its rows.
//   spec 0..4: TILE_M, TILE_N, TILE_K, THREAD_M, THREAD_N; spec 5: WEIGHT_TYPE
//   (0 f32, 1 f16); spec 6: the workgroup size, (TILE_M/THREAD_M)·(TILE_N/THREAD_N)
// Each output is summed by one invocation in k order: bit-reproducible.

layout(constant_id = 0) const uint TILE_M = 32;
layout(constant_id = 1) const uint TILE_N = 64;
layout(constant_id = 2) const uint TILE_K = 16;
layout(constant_id = 3) const uint THREAD_M = 4;
layout(constant_id = 4) const uint THREAD_N = 4;
layout(constant_id = 5) const uint WEIGHT_TYPE = 0;
layout(local_size_x_id = 6) in;

const uint THREADS_M = TILE_M / THREAD_M;
const uint THREADS_N = TILE_N / THREAD_N;
const uint THREADS = THREADS_M * THREADS_N;

shared float a_tile[TILE_K * TILE_M];           // [k][m]
shared float b_tile[B_COUNT * TILE_K * TILE_N]; // [b][k][n]

float load_a(uint m, uint k);

// acc[(b·THREAD_M + i)·THREAD_N + j] is output row tm + i·THREADS_M, column
// tn + j·THREADS_N of the tile, with tm, tn this invocation's position.
// A global: glslang cannot pass arrays sized by spec constants as parameters.
float acc[B_COUNT * THREAD_M * THREAD_N];

// Four consecutive weights of row n starting at k (a multiple of 4); zero
// past the matrix (rows are zero-padded to ld, a multiple of 8).
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

void load_tiles(uint k0, uint n0, uvec2 matrices[B_COUNT], uint rows, uint ld)
{
    uint lane = gl_LocalInvocationID.x;
    for (uint i = lane; i < TILE_M * TILE_K; i += THREADS) {
        uint m = i / TILE_K, k = i % TILE_K;
        a_tile[k * TILE_M + m] = load_a(m, k0 + k);
    }
    const uint QUADS = TILE_K / 4;
    for (uint b = 0; b < B_COUNT; b++)
        for (uint i = lane; i < TILE_N * QUADS; i += THREADS) {
            uint n = i / QUADS, q = i % QUADS;
            vec4 w = load_b4(matrices[b], n0 + n, k0 + q * 4, rows, ld);
            for (uint j = 0; j < 4; j++)
                b_tile[(b * TILE_K + q * 4 + j) * TILE_N + n] = w[j];
        }
}

void gemm_tile(uint n0, uint depth, uvec2 matrices[B_COUNT], uint rows, uint ld)
{
    uint tm = gl_LocalInvocationID.x / THREADS_N;
    uint tn = gl_LocalInvocationID.x % THREADS_N;
    for (uint i = 0; i < B_COUNT * THREAD_M * THREAD_N; i++)
        acc[i] = 0.0;
    for (uint k0 = 0; k0 < depth; k0 += TILE_K) {
        load_tiles(k0, n0, matrices, rows, ld);
        barrier();
        for (uint k = 0; k < TILE_K; k++) {
            float a[THREAD_M];
            for (uint i = 0; i < THREAD_M; i++)
                a[i] = a_tile[k * TILE_M + tm + i * THREADS_M];
            for (uint b = 0; b < B_COUNT; b++)
                for (uint j = 0; j < THREAD_N; j++) {
                    float w = b_tile[(b * TILE_K + k) * TILE_N + tn + j * THREADS_N];
                    for (uint i = 0; i < THREAD_M; i++)
                        acc[(b * THREAD_M + i) * THREAD_N + j] =
                            fma(a[i], w, acc[(b * THREAD_M + i) * THREAD_N + j]);
                }
        }
        barrier();
    }
}

// The row tile this workgroup owns (the GEMM grid folds tiles into y and z).
uint row_tile_id()
{
    return gl_WorkGroupID.z * gl_NumWorkGroups.y + gl_WorkGroupID.y;
}
