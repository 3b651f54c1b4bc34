// Gram matrix over tensor lists, in two deterministic stages:
//   gram_partials_K_S: one block per work item (tensor, 16384-element slice: kListItem) writes the
//                      K(K+1)/2 upper-triangle partial sums of its chunk, in float;
//   gram_finish:       one block sums the partials of every pair in double, in a fixed order,
//                      and writes the full symmetric K×K matrix in float.
#include "dtype.cuh"
#include "reduce.cuh"
#include "tensor_list.cuh"

using namespace dgs;

template <typename T, int K>
__device__ void gram_partials_impl(ListTable table, unsigned transforms, float* __restrict__ partials) {
    constexpr int P = K * (K + 1) / 2;
    constexpr int N = Vec<T>::N;
    __shared__ float smem[P * 32];
    int tr[K];
#pragma unroll
    for (int k = 0; k < K; ++k) tr[k] = transform_of(transforms, k);
    for (int item = blockIdx.x; item < table.n_items; item += gridDim.x) {
        const int t = table.item_tensor[item];
        const long long start = table.item_start[item];
        const long long rest = table.lens[t] - start;
        const int len = (int)(rest < kListItem ? rest : kListItem);
        const T* v[K];
        bool vec = true;
#pragma unroll
        for (int k = 0; k < K; ++k) {
            v[k] = tensor_ptr<const T>(table, k, t) + start;
            vec = vec && aligned16(v[k]);
        }
        float acc[P];
#pragma unroll
        for (int p = 0; p < P; ++p) acc[p] = 0.f;
        const int vec_len = vec ? len / N * N : 0;
        for (int i = threadIdx.x * N; i < vec_len; i += blockDim.x * N) {
            float e[K][N];
#pragma unroll
            for (int k = 0; k < K; ++k) load_vec(v[k] + i, e[k]);
#pragma unroll
            for (int j = 0; j < N; ++j) {
                float val[K];
#pragma unroll
                for (int k = 0; k < K; ++k) val[k] = apply_transform(tr[k], e[k][j]);
                int p = 0;
#pragma unroll
                for (int a = 0; a < K; ++a)
#pragma unroll
                    for (int b = a; b < K; ++b) acc[p++] += val[a] * val[b];
            }
        }
        for (int i = vec_len + threadIdx.x; i < len; i += blockDim.x) {
            float val[K];
#pragma unroll
            for (int k = 0; k < K; ++k) val[k] = apply_transform(tr[k], to_float(v[k][i]));
            int p = 0;
#pragma unroll
            for (int a = 0; a < K; ++a)
#pragma unroll
                for (int b = a; b < K; ++b) acc[p++] += val[a] * val[b];
        }
        block_sum<P>(acc, smem);
        if (threadIdx.x == 0) {
#pragma unroll
            for (int p = 0; p < P; ++p) partials[(long long)item * P + p] = acc[p];
        }
    }
}

#define STAMP_GRAM_K(T, S, K)                                                                    \
    extern "C" __global__ void gram_partials_##K##_##S(ListTable table, unsigned transforms,      \
                                                        float* partials) {                       \
        gram_partials_impl<T, K>(table, transforms, partials);                                   \
    }
// One entry per K up to the contract's limit.
static_assert(kMaxOperands == 8, "gram_partials is stamped for K = 1..8 below");
#define STAMP_GRAM(T, S)       \
    STAMP_GRAM_K(T, S, 1)      \
    STAMP_GRAM_K(T, S, 2)      \
    STAMP_GRAM_K(T, S, 3)      \
    STAMP_GRAM_K(T, S, 4)      \
    STAMP_GRAM_K(T, S, 5)      \
    STAMP_GRAM_K(T, S, 6)      \
    STAMP_GRAM_K(T, S, 7)      \
    STAMP_GRAM_K(T, S, 8)
DGS_STAMP_DTYPES(STAMP_GRAM)

// partials: [n_items][K(K+1)/2]; gram: K×K row-major. Launch with one block of 256 threads.
extern "C" __global__ void gram_finish(const float* __restrict__ partials, int n_items, int k,
                                       float* __restrict__ gram) {
    __shared__ double smem[32];
    const int pairs = k * (k + 1) / 2;
    int p = 0;
    for (int a = 0; a < k; ++a) {
        for (int b = a; b < k; ++b, ++p) {
            double s = 0.0;
            for (int item = threadIdx.x; item < n_items; item += blockDim.x)
                s += (double)partials[(long long)item * pairs + p];
            s = block_sum1(s, smem);
            if (threadIdx.x == 0) {
                gram[a * k + b] = (float)s;
                gram[b * k + a] = (float)s;
            }
        }
    }
}
