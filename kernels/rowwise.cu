// Row-wise DGS projection: one block per row (grid-stride over rows), one launch, in place.
#include "dtype.cuh"
#include "reduce.cuh"

using namespace dgs;

// The launch's arguments, passed by value; `RowwiseArgs` in src/surgery/cuda/rowwise.rs has the
// same fields in the same order. A null `help`, `coef` or `harm_norm` is absent.
struct RowwiseArgs {
    void* x;                // [rows, dim], projected in place
    const void* harm;       // [rows, dim]
    const void* help;       // [rows, dim] or null
    float* coef;            // [rows] or null
    float* harm_norm;       // [rows] or null
    long long rows;
    int dim;
    int has_help;
    float help_coef;
    float eps;
};
static_assert(sizeof(RowwiseArgs) == kRowwiseArgsBytes, "RowwiseArgs must match the Rust struct");
static_assert(alignof(RowwiseArgs) == kArgsAlign, "RowwiseArgs must match the Rust struct");

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
__device__ void dgs_rows_impl(const RowwiseArgs& args) {
    constexpr int N = Vec<T>::N;
    T* __restrict__ x = static_cast<T*>(args.x);
    const T* __restrict__ h = static_cast<const T*>(args.harm);
    const T* __restrict__ a = static_cast<const T*>(args.help);
    float* __restrict__ coef_out = args.coef;
    float* __restrict__ norm_out = args.harm_norm;
    const long long rows = args.rows;
    const int dim = args.dim, has_help = args.has_help;
    const float c = args.help_coef, eps = args.eps;
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

#define STAMP_ROWS(T, S) \
    extern "C" __global__ void dgs_rows_##S(RowwiseArgs args) { dgs_rows_impl<T>(args); }
DGS_STAMP_DTYPES(STAMP_ROWS)
