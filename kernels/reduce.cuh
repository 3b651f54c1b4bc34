// Deterministic reductions: a fixed butterfly within each warp, then warp 0 over the warp
// totals. Same inputs, same launch shape → same bits, run after run. No atomics.
#pragma once

namespace dgs {

template <typename F>
__device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sums N values over the block; every thread gets the totals. blockDim.x must be a multiple of
// 32 and at most 1024. `smem` holds N * 32 values of F.
template <int N, typename F>
__device__ __forceinline__ void block_sum(F (&v)[N], F* smem) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = warp_sum(v[i]);
    if (lane == 0) {
#pragma unroll
        for (int i = 0; i < N; ++i) smem[i * 32 + warp] = v[i];
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
        for (int i = 0; i < N; ++i) {
            F t = lane < warps ? smem[i * 32 + lane] : F(0);
            t = warp_sum(t);
            if (lane == 0) smem[i * 32] = t;
        }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = smem[i * 32];
    __syncthreads();  // smem may be reused right after
}

template <typename F>
__device__ __forceinline__ F block_sum1(F v, F* smem) {
    F a[1] = {v};
    block_sum<1>(a, smem);
    return a[0];
}

}  // namespace dgs
