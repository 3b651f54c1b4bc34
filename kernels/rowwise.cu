// Row-wise DGS projection and its K-direction variant: one block per row (grid-stride over rows),
// one launch, in place.
#include "dtype.cuh"
#include "reduce.cuh"

using namespace dgs;

// x' and relu(h) for the N elements of one 16-byte vector at `i`.
template <typename T>
__device__ __forceinline__ void load_pair(const T* xr, const T* hr, const T* ar, int i, float c,
                                          float (&xx)[Vec<T>::N], float (&hh)[Vec<T>::N]) {
    constexpr int N = Vec<T>::N;
    float av[N];
    load_vec(xr + i, xx);
    load_vec(hr + i, hh);
    if (ar) load_vec(ar + i, av);
#pragma unroll
    for (int j = 0; j < N; ++j) {
        hh[j] = relu(hh[j]);
        if (ar) xx[j] += c * negative_part(av[j]);
    }
}

// The same for one element.
template <typename T>
__device__ __forceinline__ void load_one(const T* xr, const T* hr, const T* ar, int i, float c, float& xx, float& hh) {
    hh = relu(to_float(hr[i]));
    xx = ar ? to_float(xr[i]) + c * negative_part(to_float(ar[i])) : to_float(xr[i]);
}

// x' = x + c * min(a, 0);  out = x' - (x'·ĥ) ĥ,  ĥ = relu(h) / (‖relu(h)‖ + eps).
// A row with relu(h) = 0 comes back as x' exactly (unchanged without a help term), whatever eps.
// Optional per-row statistics: coef = x'·ĥ, norm = ‖relu(h)‖ (null pointers skip them).
template <typename T>
__device__ void dgs_rows_impl(T* __restrict__ x, const T* __restrict__ h, const T* __restrict__ a,
                              float c, int has_help, float eps, long long rows, int dim,
                              float* __restrict__ coef_out, float* __restrict__ norm_out) {
    constexpr int N = Vec<T>::N;
    __shared__ float smem[2 * 32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        T* xr = x + r * dim;
        const T* hr = h + r * dim;
        const T* ar = has_help ? a + r * dim : nullptr;
        const bool vec = dim % N == 0 && aligned16(xr) && aligned16(hr) && (!has_help || aligned16(ar));
        float acc[2] = {0.f, 0.f};  // x'·relu(h), relu(h)²
        if (vec) {
            for (int i = threadIdx.x * N; i < dim; i += blockDim.x * N) {
                float xx[N], hh[N];
                load_pair(xr, hr, ar, i, c, xx, hh);
#pragma unroll
                for (int j = 0; j < N; ++j) {
                    acc[0] += xx[j] * hh[j];
                    acc[1] += hh[j] * hh[j];
                }
            }
        } else {
            for (int i = threadIdx.x; i < dim; i += blockDim.x) {
                float xx, hh;
                load_one(xr, hr, ar, i, c, xx, hh);
                acc[0] += xx * hh;
                acc[1] += hh * hh;
            }
        }
        block_sum<2>(acc, smem);
        const float norm = sqrtf(acc[1]);
        float coef = 0.f, scale = 0.f;
        if (norm != 0.f) {  // NaN takes this branch and poisons the row, as on the CPU
            const float denom = norm + eps;
            coef = acc[0] / denom;
            scale = coef / denom;
        }
        if (threadIdx.x == 0) {
            if (coef_out) coef_out[r] = coef;
            if (norm_out) norm_out[r] = norm;
        }
        if (norm == 0.f && !has_help) continue;  // nothing to write
        if (vec) {
            for (int i = threadIdx.x * N; i < dim; i += blockDim.x * N) {
                float xx[N], hh[N];
                load_pair(xr, hr, ar, i, c, xx, hh);
#pragma unroll
                for (int j = 0; j < N; ++j) xx[j] -= scale * hh[j];
                store_vec(xr + i, xx);
            }
        } else {
            for (int i = threadIdx.x; i < dim; i += blockDim.x) {
                float xx, hh;
                load_one(xr, hr, ar, i, c, xx, hh);
                xr[i] = from_float<T>(xx - scale * hh);
            }
        }
    }
}

#define STAMP_ROWS(T, S)                                                                          \
    extern "C" __global__ void dgs_rows_##S(T* x, const T* h, const T* a, float c, int has_help,  \
                                            float eps, long long rows, int dim, float* coef,      \
                                            float* norm) {                                        \
        dgs_rows_impl<T>(x, h, a, c, has_help, eps, rows, dim, coef, norm);                       \
    }
DGS_STAMP_DTYPES(STAMP_ROWS)

// v -= (v·q_j) q_j for each of the `kept` orthonormal rows q_j of `basis`, in order (modified
// Gram–Schmidt). Each thread touches only its own indices of v, so the block sums are the only sync.
__device__ void remove_span(float* v, const float* basis, int kept, int dim, float* smem) {
    for (int j = 0; j < kept; ++j) {
        const float* q = basis + (long long)j * dim;
        float s = 0.f;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) s += v[i] * q[i];
        s = block_sum1(s, smem);
        for (int i = threadIdx.x; i < dim; i += blockDim.x) v[i] -= s * q[i];
    }
}

// Project each row off the span of K <= 8 directions (after `transform`), exactly: modified
// Gram–Schmidt with one re-orthogonalisation in float, in a workspace of (K + 1) rows of `dim`
// floats per block. A direction whose remainder is at most dep_tol of its norm is skipped (the CPU
// rule); a non-finite one is kept, so it poisons the row instead of vanishing.
template <typename T>
__device__ void multi_impl(T* __restrict__ x, const T* d0, const T* d1, const T* d2, const T* d3,
                           const T* d4, const T* d5, const T* d6, const T* d7, int k, int transform,
                           float dep_tol, long long rows, int dim, float* __restrict__ workspace,
                           unsigned char* __restrict__ kept_out) {
    __shared__ float smem[32];
    static_assert(kMaxDirections == 8, "multi_impl takes the directions as d0..d7");
    const T* dirs[kMaxDirections] = {d0, d1, d2, d3, d4, d5, d6, d7};
    float* basis = workspace + (long long)blockIdx.x * (k + 1) * dim;
    float* row = basis + (long long)k * dim;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        int kept = 0;
        for (int d = 0; d < k; ++d) {
            float* u = basis + (long long)kept * dim;
            const T* src = dirs[d] + r * dim;
            float sq = 0.f;
            for (int i = threadIdx.x; i < dim; i += blockDim.x) {
                const float v = apply_transform(transform, to_float(src[i]));
                u[i] = v;
                sq += v * v;
            }
            const float n0 = sqrtf(block_sum1(sq, smem));
            for (int pass = 0; pass < 2; ++pass) remove_span(u, basis, kept, dim, smem);
            sq = 0.f;
            for (int i = threadIdx.x; i < dim; i += blockDim.x) sq += u[i] * u[i];
            const float n = sqrtf(block_sum1(sq, smem));
            if (isfinite(n0) && isfinite(n) && n <= dep_tol * n0) continue;
            const float inv = 1.f / n;
            for (int i = threadIdx.x; i < dim; i += blockDim.x) u[i] *= inv;
            ++kept;
        }
        if (threadIdx.x == 0 && kept_out) kept_out[r] = (unsigned char)kept;
        if (kept == 0) continue;
        T* xr = x + r * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) row[i] = to_float(xr[i]);
        remove_span(row, basis, kept, dim, smem);
        for (int i = threadIdx.x; i < dim; i += blockDim.x) xr[i] = from_float<T>(row[i]);
    }
}

#define STAMP_MULTI(T, S)                                                                          \
    extern "C" __global__ void project_rows_multi_##S(                                             \
        T* x, const T* d0, const T* d1, const T* d2, const T* d3, const T* d4, const T* d5,        \
        const T* d6, const T* d7, int k, int transform, float dep_tol, long long rows, int dim,    \
        float* workspace, unsigned char* kept) {                                                   \
        multi_impl<T>(x, d0, d1, d2, d3, d4, d5, d6, d7, k, transform, dep_tol, rows, dim,         \
                      workspace, kept);                                                            \
    }
DGS_STAMP_DTYPES(STAMP_MULTI)
