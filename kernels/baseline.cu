// Baselines the benchmarks measure our kernels against, in the same run: an empty launch (the
// floor for the launch-bound paper-size op) and the unfused multi-kernel versions of the surgery
// (one kernel per formula step, the way eager PyTorch runs the official hook, and flatten +
// one dot per pair for PCGrad). Not used by the library's ops.
#include "dtype.cuh"
#include "reduce.cuh"

using namespace dgs;

extern "C" __global__ void empty_kernel() {}

// Unfused row-wise projection, f32 temporaries of rows × dim:
//   1. tmp = relu(h)   2. norm[r] = ‖tmp_r‖   3. tmp /= norm + eps   4. dot[r] = x_r·tmp_r
//   5. x -= dot[r] * tmp
template <typename T>
__device__ void relu_to_f32(const T* h, float* tmp, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        tmp[i] = relu(to_float(h[i]));
}

// One block per row: out[r] = Σ a_r·b_r (b = a gives the squared norm).
template <typename A>
__device__ void row_dot(const A* a, const float* b, float* out, int dim, int take_sqrt) {
    __shared__ float smem[32];
    const long long r = blockIdx.x;
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += to_float(a[r * dim + i]) * b[r * dim + i];
    s = block_sum1(s, smem);
    if (threadIdx.x == 0) out[r] = take_sqrt ? sqrtf(s) : s;
}

extern "C" __global__ void unfused_scale_rows(float* tmp, const float* norm, float eps, long long n, int dim) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        tmp[i] = tmp[i] / (norm[i / dim] + eps);
}

extern "C" __global__ void unfused_norms(const float* tmp, float* norm, int dim) { row_dot<float>(tmp, tmp, norm, dim, 1); }

template <typename T>
__device__ void sub_scaled(T* x, const float* tmp, const float* dot, long long n, int dim) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        x[i] = from_float<T>(to_float(x[i]) - dot[i / dim] * tmp[i]);
}

// Flattened vectors: one dot product per launch, partial sums per block then a second launch.
template <typename T>
__device__ void dot_partials(const T* a, const T* b, float* partials, long long n) {
    __shared__ float smem[32];
    float s = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        s += to_float(a[i]) * to_float(b[i]);
    s = block_sum1(s, smem);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

extern "C" __global__ void unfused_sum(const float* partials, int n, float* out) {
    __shared__ float smem[32];
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partials[i];
    s = block_sum1(s, smem);
    if (threadIdx.x == 0) *out = s;
}

// out += w * v over a flat buffer (one launch per operand).
template <typename T>
__device__ void axpy(T* out, const T* v, float w, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] = from_float<T>(to_float(out[i]) + w * to_float(v[i]));
}

#define STAMP_BASELINE(T, S)                                                                          \
    extern "C" __global__ void unfused_relu_##S(const T* h, float* tmp, long long n) { relu_to_f32<T>(h, tmp, n); } \
    extern "C" __global__ void unfused_row_dots_##S(const T* x, const float* tmp, float* dot, int dim) {           \
        row_dot<T>(x, tmp, dot, dim, 0);                                                              \
    }                                                                                                 \
    extern "C" __global__ void unfused_sub_scaled_##S(T* x, const float* tmp, const float* dot, long long n, int dim) { \
        sub_scaled<T>(x, tmp, dot, n, dim);                                                           \
    }                                                                                                 \
    extern "C" __global__ void unfused_dot_partials_##S(const T* a, const T* b, float* partials, long long n) {     \
        dot_partials<T>(a, b, partials, n);                                                           \
    }                                                                                                 \
    extern "C" __global__ void unfused_axpy_##S(T* out, const T* v, float w, long long n) { axpy<T>(out, v, w, n); }
DGS_STAMP_DTYPES(STAMP_BASELINE)
