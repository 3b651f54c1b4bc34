// The transformer layer's row-wise kernels, the device twins of src/ops/block/cpu_rows.rs:
//   layer_norm_forward:   y = (x − mean) · rstd · w + b per row, mean and rstd = 1/sqrt(var + eps)
//                         optionally saved (f32 [rows, 2]); two passes over the row held in
//                         registers (mean, then centred squares), as the CPU computes them;
//   layer_norm_backward:  dx += rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)), g = dy ⊙ w, x̂ = (x − mean)
//                         · rstd, from the saved statistics, added into the residual gradient;
//   activation_forward:   out = act(h);
//   activation_backward:  g ← g ⊙ act'(h), in place;
//   bias_add:             out[i, j] += bias[j] (the bias of a product cuBLASLt's epilogue
//                         could not take).
// One block per row (grid-stride over rows) for the layer norms, 16-byte vectors, f32 arithmetic,
// fixed-order sums (kernels/reduce.cuh): the same bits every run.
#include "dtype.cuh"
#include "reduce.cuh"

using namespace dgs;

// The launch's arguments, passed by value; `RowsArgs` in src/ops/block/cuda/rows.rs has the same
// fields in the same order. Pointers a kernel does not use are null.
struct RowsArgs {
    const void* x;     // layer norm input [rows, cols] / activation pre-activation [n]
    const void* w;     // [cols]
    const void* b;     // [cols]
    const void* dy;    // [rows, cols] (layer norm backward)
    void* out;         // layer norm output / dx (added into) / activation output or gradient
    float* stats;      // [rows, 2]: mean, rstd (null: not saved)
    long long rows;    // rows (layer norms) or elements (activations)
    int cols;
    int activation;    // ActivationCode
    float eps;
    int reserved;
};
static_assert(sizeof(RowsArgs) == kRowsArgsBytes, "RowsArgs must match the Rust struct");
static_assert(alignof(RowsArgs) == kArgsAlign, "RowsArgs must match the Rust struct");

namespace {

constexpr int kThreads = 128;
// 16-byte vectors each thread holds of one row: rows up to kThreads · kMaxVecs · N elements
// (2048 in f32, 4096 in f16/bf16; CLIP's widths are 512 to 1280). Checked on the host.
constexpr int kMaxVecs = 4;
static_assert(kThreads * kMaxVecs * 4 == kLayerNormMaxCols, "the host's limit must match");

// One row in registers: thread `threadIdx.x` holds vectors threadIdx.x, threadIdx.x + kThreads, ...
template <typename T>
struct RowVecs {
    float v[kMaxVecs][Vec<T>::N];
};

template <typename T>
__device__ __forceinline__ void load_row(RowVecs<T>& r, const T* row, int vecs) {
#pragma unroll
    for (int j = 0; j < kMaxVecs; ++j) {
        const int i = threadIdx.x + j * kThreads;
        if (i < vecs) load_vec(row + i * Vec<T>::N, r.v[j]);
    }
}

// The sum over the row of f(element, column) for the held vectors.
template <typename T, typename F>
__device__ __forceinline__ float row_sum(const RowVecs<T>& r, int vecs, F f, float* smem) {
    constexpr int N = Vec<T>::N;
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxVecs; ++j) {
        const int i = threadIdx.x + j * kThreads;
        if (i < vecs) {
#pragma unroll
            for (int q = 0; q < N; ++q) s += f(r.v[j][q], i * N + q);
        }
    }
    return block_sum1(s, smem);
}

// The activations (codes `ActivationCode` in the contract) and their derivatives, as the CPU
// computes them (ops/block/activation.rs).
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

__device__ __forceinline__ float2 activate(int act, float x) {
    if (act == kActQuickGelu) {
        const float s = sigmoid(1.702f * x);
        return make_float2(x * s, s + 1.702f * x * s * (1.f - s));
    }
    if (act == kActGelu) {
        const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
        const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
        return make_float2(x * cdf, cdf + x * pdf);
    }
    if (act == kActGeluTanh) {
        const float u = 0.7978845608f * (x + 0.044715f * x * x * x);
        const float t = tanhf(u);
        const float du = 0.7978845608f * (1.f + 3.f * 0.044715f * x * x);
        return make_float2(0.5f * x * (1.f + t), 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * du);
    }
    return make_float2(x > 0.f ? x : 0.f, x > 0.f ? 1.f : 0.f);  // kActRelu
}

}  // namespace

template <typename T>
__device__ void layer_norm_forward_impl(const RowsArgs& a) {
    constexpr int N = Vec<T>::N;
    __shared__ float smem[32];
    const int cols = a.cols, vecs = cols / N;
    const T* __restrict__ w = static_cast<const T*>(a.w);
    const T* __restrict__ bias = static_cast<const T*>(a.b);
    for (long long r = blockIdx.x; r < a.rows; r += gridDim.x) {
        RowVecs<T> row;
        load_row(row, static_cast<const T*>(a.x) + r * cols, vecs);
        const float mean = row_sum(row, vecs, [](float v, int) { return v; }, smem) / cols;
        const float var = row_sum(row, vecs, [mean](float v, int) { return (v - mean) * (v - mean); }, smem) / cols;
        const float rstd = 1.f / sqrtf(var + a.eps);
        T* y = static_cast<T*>(a.out) + r * cols;
#pragma unroll
        for (int j = 0; j < kMaxVecs; ++j) {
            const int i = threadIdx.x + j * kThreads;
            if (i >= vecs) continue;
            float wv[N], bv[N], out[N];
            load_vec(w + i * N, wv);
            load_vec(bias + i * N, bv);
#pragma unroll
            for (int q = 0; q < N; ++q) out[q] = (row.v[j][q] - mean) * rstd * wv[q] + bv[q];
            store_vec(y + i * N, out);
        }
        if (a.stats && threadIdx.x == 0) {
            a.stats[2 * r] = mean;
            a.stats[2 * r + 1] = rstd;
        }
    }
}

template <typename T>
__device__ void layer_norm_backward_impl(const RowsArgs& a) {
    constexpr int N = Vec<T>::N;
    __shared__ float smem[2 * 32];
    const int cols = a.cols, vecs = cols / N;
    const T* __restrict__ w = static_cast<const T*>(a.w);
    for (long long r = blockIdx.x; r < a.rows; r += gridDim.x) {
        const float mean = a.stats[2 * r], rstd = a.stats[2 * r + 1];
        RowVecs<T> x, g;
        load_row(x, static_cast<const T*>(a.x) + r * cols, vecs);
        load_row(g, static_cast<const T*>(a.dy) + r * cols, vecs);
        float sums[2] = {0.f, 0.f};  // Σ g, Σ g ⊙ x̂
#pragma unroll
        for (int j = 0; j < kMaxVecs; ++j) {
            const int i = threadIdx.x + j * kThreads;
            if (i >= vecs) continue;
            float wv[N];
            load_vec(w + i * N, wv);
#pragma unroll
            for (int q = 0; q < N; ++q) {
                g.v[j][q] *= wv[q];
                x.v[j][q] = (x.v[j][q] - mean) * rstd;  // x̂ from here on
                sums[0] += g.v[j][q];
                sums[1] += g.v[j][q] * x.v[j][q];
            }
        }
        block_sum<2>(sums, smem);
        const float m1 = sums[0] / cols, m2 = sums[1] / cols;
        T* dx = static_cast<T*>(a.out) + r * cols;
#pragma unroll
        for (int j = 0; j < kMaxVecs; ++j) {
            const int i = threadIdx.x + j * kThreads;
            if (i >= vecs) continue;
            float acc[N];
            load_vec(dx + i * N, acc);
#pragma unroll
            for (int q = 0; q < N; ++q) acc[q] += rstd * (g.v[j][q] - m1 - x.v[j][q] * m2);
            store_vec(dx + i * N, acc);
        }
    }
}

// Elementwise over `rows` elements (a flat [n] view), grid-stride, scalar accesses.
template <typename T, bool kDerivative>
__device__ void activation_impl(const RowsArgs& a) {
    const T* __restrict__ h = static_cast<const T*>(a.x);
    T* __restrict__ out = static_cast<T*>(a.out);
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < a.rows; i += stride) {
        const float2 fd = activate(a.activation, to_float(h[i]));
        out[i] = from_float<T>(kDerivative ? to_float(out[i]) * fd.y : fd.x);
    }
}

// out[i] += bias[i mod cols] over `rows` elements (a flat [n / cols, cols] view).
template <typename T>
__device__ void bias_add_impl(const RowsArgs& a) {
    const T* __restrict__ bias = static_cast<const T*>(a.b);
    T* __restrict__ out = static_cast<T*>(a.out);
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < a.rows; i += stride)
        out[i] = from_float<T>(to_float(out[i]) + to_float(bias[i % a.cols]));
}

#define STAMP_ROWS(T, S)                                                                                  \
    extern "C" __global__ void __launch_bounds__(kThreads) layer_norm_forward_##S(RowsArgs args) {       \
        layer_norm_forward_impl<T>(args);                                                                 \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(kThreads) layer_norm_backward_##S(RowsArgs args) {      \
        layer_norm_backward_impl<T>(args);                                                                \
    }                                                                                                     \
    extern "C" __global__ void activation_forward_##S(RowsArgs args) { activation_impl<T, false>(args); } \
    extern "C" __global__ void activation_backward_##S(RowsArgs args) { activation_impl<T, true>(args); } \
    extern "C" __global__ void bias_add_##S(RowsArgs args) { bias_add_impl<T>(args); }
DGS_STAMP_DTYPES(STAMP_ROWS)
