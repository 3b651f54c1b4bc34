// Philox4x32-10 (Salmon et al., 2011): four 32-bit words from a 128-bit counter and a 64-bit key,
// the generator of the dropout masks. The CPU twin is `ops::block::philox4x32`; both give the
// same words for the same counter and key (the known-answer vectors are tested on the CPU, the
// masks on the GPU against the CPU's).
#pragma once

namespace dgs {

// The high word of a 32×32-bit product (host and device, so the generator can be checked on a
// machine without a GPU).
__host__ __device__ __forceinline__ unsigned mul_hi(unsigned a, unsigned b) {
#ifdef __CUDA_ARCH__
    return __umulhi(a, b);
#else
    return (unsigned)(((unsigned long long)a * b) >> 32);
#endif
}

__host__ __device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
    constexpr unsigned kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
    constexpr unsigned kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k.x += kW0;
            k.y += kW1;
        }
        const unsigned hi0 = mul_hi(kM0, c.x), lo0 = kM0 * c.x;
        const unsigned hi1 = mul_hi(kM1, c.z), lo1 = kM1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

}  // namespace dgs
