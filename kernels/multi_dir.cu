// Projection of each row off the span of up to K = 8 directions (the K-direction variant of the
// row projection): one block per row (grid-stride over rows), one launch, in place.
#include "dtype.cuh"
#include "reduce.cuh"

using namespace dgs;

// The launch's arguments, passed by value; `MultiDirArgs` in src/surgery/cuda/multi_dir.rs has
// the same fields in the same order. Direction slots at or beyond `k` are null and never read.
struct MultiDirArgs {
    void* x;                                  // [rows, dim], projected in place
    const void* directions[kMaxDirections];   // each [rows, dim]
    float* workspace;                         // [gridDim.x, k + 1, dim]
    unsigned char* kept;                      // [rows] or null
    long long rows;
    int dim;
    int k;
    int transform;
    float dep_tol;
};
static_assert(sizeof(MultiDirArgs) == kMultiDirArgsBytes, "MultiDirArgs must match the Rust struct");
static_assert(alignof(MultiDirArgs) == kArgsAlign, "MultiDirArgs must match the Rust struct");

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
__device__ void multi_dir_impl(const MultiDirArgs& args) {
    __shared__ float smem[32];
    T* __restrict__ x = static_cast<T*>(args.x);
    float* __restrict__ workspace = args.workspace;
    unsigned char* __restrict__ kept_out = args.kept;
    const long long rows = args.rows;
    const int dim = args.dim, k = args.k, transform = args.transform;
    const float dep_tol = args.dep_tol;
    float* basis = workspace + (long long)blockIdx.x * (k + 1) * dim;
    float* row = basis + (long long)k * dim;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        int kept = 0;
        for (int d = 0; d < k; ++d) {
            float* u = basis + (long long)kept * dim;
            const T* src = static_cast<const T*>(args.directions[d]) + r * dim;
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

#define STAMP_MULTI(T, S)                                                          \
    extern "C" __global__ void project_rows_multi_##S(MultiDirArgs args) {         \
        multi_dir_impl<T>(args);                                                   \
    }
DGS_STAMP_DTYPES(STAMP_MULTI)
