// Dropout with masks from Philox4x32-10: element e of a mask stream is kept when the top 24 bits
// of word e % 4 of philox((e / 4) as two words, layer << 2 | projection, step; seed) are at least
// ⌈p · 2²⁴⌉, exactly as the CPU decides (`ops::block::MaskStream`). Kept elements are scaled by
// 1 / (1 − p) (given, computed once in f32 on the host), dropped ones become 0. With `accumulate`
// the result is added into `out` instead (the adapters' backward sums three projections' masked
// gradients into one buffer): out + x · scale rounded once where kept, out untouched where dropped.
#include "dtype.cuh"
#include "philox.cuh"

using namespace dgs;

// The launch's arguments, passed by value; `DropoutArgs` in src/ops/block/cuda/dropout.rs has
// the same fields in the same order.
struct DropoutArgs {
    const void* x;             // [n]
    void* out;                 // [n]
    long long n;
    unsigned long long start;  // the stream index of x[0]
    unsigned key_lo;           // the seed's low and high words
    unsigned key_hi;
    unsigned layer_projection;  // layer << 2 | projection
    unsigned step;
    unsigned threshold;        // keep when (word >> 8) >= threshold
    float kept_scale;
    unsigned accumulate;       // 0: out = result; 1: out += result
    unsigned reserved;
};
static_assert(sizeof(DropoutArgs) == kDropoutArgsBytes, "DropoutArgs must match the Rust struct");
static_assert(alignof(DropoutArgs) == kArgsAlign, "DropoutArgs must match the Rust struct");

// One thread per generator call (four stream elements); a grid-stride loop covers the rest.
template <typename T>
__device__ void dropout_impl(const DropoutArgs& a) {
    if (a.n <= 0) return;
    const T* __restrict__ x = static_cast<const T*>(a.x);
    T* __restrict__ out = static_cast<T*>(a.out);
    const unsigned long long end = a.start + (unsigned long long)a.n;
    const unsigned long long first = a.start / 4, last = (end - 1) / 4;
    const uint2 key = make_uint2(a.key_lo, a.key_hi);
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long q = first + blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
         q <= last; q += stride) {
        const uint4 w = philox4x32_10(
            make_uint4((unsigned)q, (unsigned)(q >> 32), a.layer_projection, a.step), key);
        const unsigned words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const unsigned long long e = 4 * q + j;
            if (e < a.start || e >= end) continue;
            const long long i = (long long)(e - a.start);
            const bool keep = (words[j] >> 8) >= a.threshold;
            if (a.accumulate) {
                if (keep) out[i] = from_float<T>(to_float(out[i]) + to_float(x[i]) * a.kept_scale);
            } else {
                out[i] = from_float<T>(keep ? to_float(x[i]) * a.kept_scale : 0.f);
            }
        }
    }
}

#define STAMP_DROPOUT(T, S) \
    extern "C" __global__ void dropout_##S(DropoutArgs args) { dropout_impl<T>(args); }
DGS_STAMP_DTYPES(STAMP_DROPOUT)
