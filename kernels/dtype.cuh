// Storage types: loads widen to float, stores round to nearest even. All arithmetic is in float.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "dgs_contract.cuh"  // TransformCode, kTransformBits (generated from src/surgery/contract.rs)

namespace dgs {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// Elements per 16-byte vector access.
template <typename T> struct Vec {
    static constexpr int N = 16 / sizeof(T);
};

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// One 16-byte load, widened. `p` must be 16-byte aligned.
template <typename T>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[Vec<T>::N]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < Vec<T>::N; ++i) out[i] = to_float(e[i]);
}

// One 16-byte store, rounded. `p` must be 16-byte aligned.
template <typename T>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[Vec<T>::N]) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < Vec<T>::N; ++i) e[i] = from_float<T>(v[i]);
    *reinterpret_cast<uint4*>(p) = raw;
}

// Elementwise transforms applied on load (codes `TransformCode` in dgs_contract.cuh).
// NaN passes through both (as in PyTorch's relu and clamp).

__device__ __forceinline__ float relu(float v) { return v < 0.f ? 0.f : v; }
__device__ __forceinline__ float negative_part(float v) { return v > 0.f ? 0.f : v; }
__device__ __forceinline__ float apply_transform(int t, float v) {
    return t == kRelu ? relu(v) : (t == kNegativePart ? negative_part(v) : v);
}

// Transform codes packed 4 bits per operand, operand 0 in the lowest bits.
__device__ __forceinline__ int transform_of(unsigned packed, int k) {
    return (packed >> (kTransformBits * k)) & ((1u << kTransformBits) - 1);
}

}  // namespace dgs

// One extern "C" entry point per storage type: NAME_f32, NAME_f16, NAME_bf16.
#define DGS_STAMP_DTYPES(STAMP) \
    STAMP(float, f32)           \
    STAMP(__half, f16)          \
    STAMP(__nv_bfloat16, bf16)
