// Linear combination over tensor lists, one pass, in place allowed:
//   out = [w_out · t_out(out)] + Σ_k w_k · t_k(v_k)
// The weights are read from device memory (weights[0..k) for the operands, weights[k] for `out`
// when out_transform >= 0), so a solver kernel can produce them without a host round trip.
#include "dtype.cuh"
#include "tensor_list.cuh"

using namespace dgs;

// `out` supplies the tensors written and the work map; `in` the k operands' tensors, which have
// the same lengths (checked on the host; with k = 0 `in` is never read).
template <typename T>
__device__ void combine_impl(ListTable out, ListTable in, int k, unsigned transforms,
                             int out_transform, const float* __restrict__ weights) {
    constexpr int N = Vec<T>::N;
    const bool has_out = out_transform >= 0;
    float w[kMaxOperands];
    int tr[kMaxOperands];
#pragma unroll
    for (int j = 0; j < kMaxOperands; ++j) {
        w[j] = j < k ? weights[j] : 0.f;
        tr[j] = transform_of(transforms, j);
    }
    const float w_out = has_out ? weights[k] : 0.f;
    for (int item = blockIdx.x; item < out.n_items; item += gridDim.x) {
        const int t = out.item_tensor[item];
        const long long start = out.item_start[item];
        const long long rest = out.lens[t] - start;
        const int len = (int)(rest < kListItem ? rest : kListItem);
        T* o = tensor_ptr<T>(out, 0, t) + start;
        const T* v[kMaxOperands];
        bool vec = aligned16(o);
#pragma unroll
        for (int j = 0; j < kMaxOperands; ++j) {
            v[j] = j < k ? tensor_ptr<const T>(in, j, t) + start : nullptr;
            if (j < k) vec = vec && aligned16(v[j]);
        }
        const int vec_len = vec ? len / N * N : 0;
        for (int i = threadIdx.x * N; i < vec_len; i += blockDim.x * N) {
            float acc[N], e[N];
            if (has_out) {
                load_vec(o + i, e);
#pragma unroll
                for (int q = 0; q < N; ++q) acc[q] = w_out * apply_transform(out_transform, e[q]);
            } else {
#pragma unroll
                for (int q = 0; q < N; ++q) acc[q] = 0.f;
            }
#pragma unroll
            for (int j = 0; j < kMaxOperands; ++j) {
                if (j >= k) break;
                load_vec(v[j] + i, e);
#pragma unroll
                for (int q = 0; q < N; ++q) acc[q] += w[j] * apply_transform(tr[j], e[q]);
            }
            store_vec(o + i, acc);
        }
        for (int i = vec_len + threadIdx.x; i < len; i += blockDim.x) {
            float acc = has_out ? w_out * apply_transform(out_transform, to_float(o[i])) : 0.f;
#pragma unroll
            for (int j = 0; j < kMaxOperands; ++j) {
                if (j >= k) break;
                acc += w[j] * apply_transform(tr[j], to_float(v[j][i]));
            }
            o[i] = from_float<T>(acc);
        }
    }
}

#define STAMP_COMBINE(T, S)                                                                      \
    extern "C" __global__ void combine_##S(ListTable out, ListTable in, int k, unsigned transforms, \
                                           int out_transform, const float* weights) {           \
        combine_impl<T>(out, in, k, transforms, out_transform, weights);                         \
    }
DGS_STAMP_DTYPES(STAMP_COMBINE)
