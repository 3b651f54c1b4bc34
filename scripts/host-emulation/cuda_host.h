// Host emulation of the CUDA features the checked kernels use, so the kernel sources themselves
// can be compiled by g++ and run on the CPU (scripts/host-emulation/run.sh). Covered:
// kernels/attention.cu, kernels/block_rows.cu, kernels/dropout.cu and the surgery kernels
// (rowwise.cu, multi_dir.cu, gram.cu, combine.cu, pcgrad.cu), with the headers they include:
// dtype.cuh, reduce.cuh, tensor_list.cuh, philox.cuh — philox.cuh's host branch of mul_hi, since
// __CUDA_ARCH__ is not defined here. Not a general CUDA emulator: one 1-D block of any size that
// is a multiple of 32 (up to 1024) runs at a time, as one std::thread per CUDA thread; a launch
// creates its threads once and runs its blocks on them one after another.
//
//   __shared__          function-local `static`: all threads of the block (and, since blocks run
//                       one after another, every block in turn) share one copy.
//   threadIdx, ...      thread_local, set by dgs_host_launch for each emulated thread.
//   __syncthreads       a barrier over the block's threads.
//   __shfl_xor_sync     each lane writes its value to a per-warp slot, warp barrier, reads its
//                       partner's slot (slots double-buffered, so one barrier per operation);
//                       float and double (a slot holds a double: a float passes through exactly).
//   mma m16n8k16        dgs_host_mma_f16 / _bf16: every lane deposits its fragments, warp barrier,
//                       each lane rebuilds A (16×16), B (16×8), C (16×8) from PTX's fragment
//                       layouts, computes its four elements of D = A·B + C in float (products of
//                       the 16-bit inputs are exact in float).
//   __half, bf16        16-bit storage types with round-to-nearest-even conversions.
//   uint2/uint4/float2  plain structs with CUDA's alignment, make_* constructors.
//   expf, erff, ...     the host's libm (<cmath>): not the device's implementations, whose
//                       results may differ in the last bits. isfinite: std::isfinite.
//   __dadd_rn, ...      __dadd_rn, __dsub_rn, __dmul_rn, __ddiv_rn: one double operation each, rounded
//                       to nearest (x86-64 SSE2 double arithmetic; g++ cannot contract them into
//                       fused multiply-adds: the build targets baseline x86-64, which has no FMA).
//   __fadd_rn, ...      __fadd_rn, __fsub_rn, __fmul_rn, __fdiv_rn, __fsqrt_rn: one float operation
//                       each, rounded to nearest (SSE float arithmetic, std::sqrt; run.sh builds
//                       with -ffp-contract=off so none is fused into a multiply-add).
//   __umul64hi          the high 64 bits of a 64×64-bit product (unsigned __int128).
//
// Checks: a barrier that waits more than DGS_HOST_BARRIER_TIMEOUT_S seconds (default 60) aborts
// (a divergent __syncthreads / shuffle / mma); at the end of each block every thread must have
// passed the same number of __syncthreads, and every lane of a warp the same number of shuffles
// and mma; a shuffle's lanes must agree on mask (all 32) and offset; an mma's lanes on its type.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef DGS_HOST_EMULATION
#error "cuda_host.h is for the host emulation build only (-DDGS_HOST_EMULATION)"
#endif

#define __device__
#define __global__
#define __host__
#define __forceinline__ inline  // as CUDA's own host-side definition: a header's helpers may be in many objects
#define __launch_bounds__(...)
#define __shared__ static

// ---- vector types and indices ----

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct uint3 {
    unsigned x = 0, y = 0, z = 0;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
struct alignas(8) float2 {
    float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
using std::isfinite;

// ---- float and double intrinsics with explicit rounding, 64-bit high product ----

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }

inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

// ---- 16-bit floating types ----

struct __half {
    unsigned short __x;
};
struct alignas(4) __half2 {
    __half x, y;
};
struct __nv_bfloat16 {
    unsigned short __x;
};
struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
static_assert(sizeof(__half) == 2 && sizeof(__half2) == 4, "");
static_assert(sizeof(__nv_bfloat16) == 2 && sizeof(__nv_bfloat162) == 4, "");

inline float dgs_bits_to_float(uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}
inline uint32_t dgs_float_to_bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
}

// IEEE binary16 → float (exact).
inline float dgs_f16_bits_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) return dgs_bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
    if (exp == 0) {                                                                 // zero / subnormal
        const float v = std::ldexp((float)mant, -24);
        return sign ? -v : v;
    }
    return dgs_bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// float → binary16, round to nearest even (overflow to inf, subnormals, NaN kept quiet).
inline uint16_t dgs_float_to_f16_bits(float f) {
    const uint32_t x = dgs_float_to_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u;   // NaN
    if (ax >= 0x477ff000u) return sign | 0x7c00u;  // ≥ 65520 (and inf): inf
    if (ax < 0x38800000u) {                        // below 2^-14: subnormal half (or zero)
        // |f| · 2^24 is exact (a power-of-two scaling of a normal float) and < 1024; nearbyint
        // rounds half to even in the default rounding mode. 1024 is the smallest normal: correct.
        return sign | (uint16_t)std::nearbyint(std::fabs(f) * 16777216.0f);
    }
    uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax >> 13) & 0x3ffu);
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carries into the exponent correctly
    return sign | (uint16_t)h;
}

inline float dgs_bf16_bits_to_float(uint16_t b) { return dgs_bits_to_float((uint32_t)b << 16); }

inline uint16_t dgs_float_to_bf16_bits(float f) {
    const uint32_t x = dgs_float_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // quiet NaN
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float __half2float(__half h) { return dgs_f16_bits_to_float(h.__x); }
inline __half __float2half_rn(float f) { return __half{dgs_float_to_f16_bits(f)}; }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half_rn(lo), __float2half_rn(hi)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return dgs_bf16_bits_to_float(h.__x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{dgs_float_to_bf16_bits(f)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}

// ---- one emulated block ----

[[noreturn]] inline void dgs_host_fail(const char* what) {
    std::fprintf(stderr, "host emulation: %s (block %u,%u,%u thread %u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z,
                 threadIdx.x);
    std::abort();
}

// A reusable barrier over `n` threads: atomics carry the happens-before (so ThreadSanitizer sees
// it), a futex only puts waiters to sleep.
class DgsHostBarrier {
public:
    void init(int n) { n_ = n; }
    void arrive_and_wait() {
        const uint32_t gen = gen_.load(std::memory_order_acquire);  // before arriving
        if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
            count_.store(0, std::memory_order_relaxed);  // ordered before the next phase by gen_
            gen_.fetch_add(1, std::memory_order_acq_rel);
            syscall(SYS_futex, reinterpret_cast<uint32_t*>(&gen_), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
            return;
        }
        static const long timeout_s = [] {
            const char* e = std::getenv("DGS_HOST_BARRIER_TIMEOUT_S");
            return e ? std::atol(e) : 60L;
        }();
        long waited = 0;
        while (gen_.load(std::memory_order_acquire) == gen) {
            const timespec one_second{1, 0};
            const long r = syscall(SYS_futex, reinterpret_cast<uint32_t*>(&gen_), FUTEX_WAIT_PRIVATE, gen, &one_second,
                                   nullptr, 0);
            if (r != 0 && errno == ETIMEDOUT && ++waited >= timeout_s)
                dgs_host_fail("barrier timed out: divergent __syncthreads, shuffle or mma");
        }
    }

private:
    static_assert(sizeof(std::atomic<uint32_t>) == 4, "futex word");
    std::atomic<uint32_t> gen_{0};
    std::atomic<int> count_{0};
    int n_ = 0;
};

// The slots of one warp-wide operation. A warp alternates between two sets: a lane can only start
// operation n + 2 (reusing operation n's set) after every lane has arrived at operation n + 1's
// barrier, that is, after every lane has finished reading operation n's. One barrier per operation.
struct DgsHostWarpSlots {
    double shfl_value[32];
    unsigned shfl_mask[32];
    int shfl_offset[32];
    unsigned a[32][4], b[32][2];
    float c[32][4];
    int kind[32];
};

struct DgsHostWarp {
    DgsHostBarrier bar;
    DgsHostWarpSlots slots[2];
    long long ops[32] = {}, shfl_calls[32] = {}, mma_calls[32] = {};
};

struct DgsHostBlock {
    explicit DgsHostBlock(int threads) : threads(threads), warps(threads / 32), syncs(threads, 0) {
        bar.init(threads);
        for (auto& w : warps) w.bar.init(32);
    }
    int threads;
    DgsHostBarrier bar;
    std::vector<DgsHostWarp> warps;
    std::vector<long long> syncs;
};

inline thread_local DgsHostBlock* dgs_host_block = nullptr;

inline DgsHostWarp& dgs_host_warp() { return dgs_host_block->warps[threadIdx.x >> 5]; }

// This lane's slot set for its next warp-wide operation.
inline DgsHostWarpSlots& dgs_host_next_slots(DgsHostWarp& w, int lane) { return w.slots[w.ops[lane]++ & 1]; }

inline void __syncthreads() {
    ++dgs_host_block->syncs[threadIdx.x];
    dgs_host_block->bar.arrive_and_wait();
}

inline double dgs_host_shfl_xor(unsigned mask, double v, int offset) {
    DgsHostWarp& w = dgs_host_warp();
    const int lane = threadIdx.x & 31;
    ++w.shfl_calls[lane];
    DgsHostWarpSlots& s = dgs_host_next_slots(w, lane);
    s.shfl_value[lane] = v;
    s.shfl_mask[lane] = mask;
    s.shfl_offset[lane] = offset;
    w.bar.arrive_and_wait();
    if (mask != 0xffffffffu || offset < 0 || offset > 31) dgs_host_fail("shuffle: mask not full or offset out of range");
    const int partner = lane ^ offset;
    if (s.shfl_mask[partner] != mask || s.shfl_offset[partner] != offset)
        dgs_host_fail("shuffle: lanes disagree on mask or offset (or a lane is in another operation)");
    return s.shfl_value[partner];
}
inline float __shfl_xor_sync(unsigned mask, float v, int offset) { return (float)dgs_host_shfl_xor(mask, v, offset); }
inline double __shfl_xor_sync(unsigned mask, double v, int offset) { return dgs_host_shfl_xor(mask, v, offset); }

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 d, a, b, d — fragment layouts of
// the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type"), g = lane >> 2,
// c = lane & 3, the low 16 bits of a register holding the lower-indexed element:
//   A (row-major 16×16): a0,a1 (row g, cols 2c, 2c+1)    a2,a3 (row g+8, cols 2c, 2c+1)
//                        a4,a5 (row g, cols 2c+8, 2c+9)  a6,a7 (row g+8, cols 2c+8, 2c+9)
//                        (register i holds a_{2i}, a_{2i+1})
//   B (16×8, k × n):     b0,b1 (k 2c, 2c+1; n g)         b2,b3 (k 2c+8, 2c+9; n g)
//   C, D (16×8 f32):     c0,c1 (row g, cols 2c, 2c+1)    c2,c3 (row g+8, cols 2c, 2c+1)
inline void dgs_host_mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1, int kind) {
    DgsHostWarp& w = dgs_host_warp();
    const int lane = threadIdx.x & 31;
    ++w.mma_calls[lane];
    DgsHostWarpSlots& s = dgs_host_next_slots(w, lane);
    for (int i = 0; i < 4; ++i) {
        s.a[lane][i] = a[i];
        s.c[lane][i] = d[i];
    }
    s.b[lane][0] = b0;
    s.b[lane][1] = b1;
    s.kind[lane] = kind;
    w.bar.arrive_and_wait();
    auto elem = [kind](unsigned reg, int half) {
        const uint16_t bits = (uint16_t)(half ? reg >> 16 : reg & 0xffffu);
        return kind == 0 ? dgs_f16_bits_to_float(bits) : dgs_bf16_bits_to_float(bits);
    };
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; ++l) {
        if (s.kind[l] != kind) dgs_host_fail("mma: lanes disagree on the type (or a lane is in another operation)");
        const int g = l >> 2, c = l & 3;
        for (int h = 0; h < 2; ++h) {
            A[g][2 * c + h] = elem(s.a[l][0], h);
            A[g + 8][2 * c + h] = elem(s.a[l][1], h);
            A[g][2 * c + 8 + h] = elem(s.a[l][2], h);
            A[g + 8][2 * c + 8 + h] = elem(s.a[l][3], h);
            B[2 * c + h][g] = elem(s.b[l][0], h);
            B[2 * c + 8 + h][g] = elem(s.b[l][1], h);
            C[g][2 * c + h] = s.c[l][h];
            C[g + 8][2 * c + h] = s.c[l][2 + h];
        }
    }
    const int g = lane >> 2, c = lane & 3;
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e >> 1), col = 2 * c + (e & 1);
        float acc = C[row][col];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];  // the product is exact in float
        d[e] = acc;
    }
}

inline void dgs_host_mma_f16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    dgs_host_mma(d, a, b0, b1, 0);
}
inline void dgs_host_mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    dgs_host_mma(d, a, b0, b1, 1);
}

// The end of one block: every thread passed the same number of __syncthreads, every lane of a
// warp the same number of shuffles and mma; then the counts restart for the next block.
inline void dgs_host_end_block(DgsHostBlock& block, unsigned bx, unsigned by, unsigned bz) {
    for (int t = 0; t < block.threads; ++t)
        if (block.syncs[t] != block.syncs[0]) {
            std::fprintf(stderr,
                         "host emulation: block (%u,%u,%u): thread %d passed %lld __syncthreads, "
                         "thread 0 %lld\n",
                         bx, by, bz, t, block.syncs[t], block.syncs[0]);
            std::abort();
        }
    for (size_t wi = 0; wi < block.warps.size(); ++wi)
        for (int l = 0; l < 32; ++l) {
            const DgsHostWarp& w = block.warps[wi];
            if (w.shfl_calls[l] != w.shfl_calls[0] || w.mma_calls[l] != w.mma_calls[0]) {
                std::fprintf(stderr, "host emulation: block (%u,%u,%u) warp %zu: lanes differ in shuffle/mma counts\n",
                             bx, by, bz, wi);
                std::abort();
            }
        }
    std::fill(block.syncs.begin(), block.syncs.end(), 0);
    for (DgsHostWarp& w : block.warps)
        for (int l = 0; l < 32; ++l) w.shfl_calls[l] = w.mma_calls[l] = 0;
    // (w.ops is not reset: it is the same for every lane of a warp here, and only its parity is used)
}

// Runs `kernel(args)` over `grid` with `threads` threads per 1-D block (a multiple of 32, at most
// 1024). Blocks run one after another (x fastest, then y, z), each on the same `threads`
// std::threads, created once per launch (thread creation dominates the run time of many small
// blocks otherwise): after a block every thread waits at a barrier that is not a __syncthreads,
// thread 0 checks the block's counts, and a second barrier starts the next block.
template <class Args>
inline void dgs_host_launch(void (*kernel)(Args), dim3 grid, int threads, const Args& args) {
    if (threads <= 0 || threads > 1024 || threads % 32 != 0) {
        std::fprintf(stderr, "host emulation: block size must be a multiple of 32 in [32, 1024], not %d\n", threads);
        std::abort();
    }
    DgsHostBlock block(threads);
    DgsHostBarrier between;
    between.init(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            threadIdx = uint3{(unsigned)t, 0, 0};
            blockDim = dim3{(unsigned)threads, 1, 1};
            gridDim = grid;
            dgs_host_block = &block;
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        blockIdx = uint3{bx, by, bz};
                        kernel(args);  // by value, as a launch passes it
                        between.arrive_and_wait();  // every thread is done with this block
                        if (t == 0) dgs_host_end_block(block, bx, by, bz);
                        between.arrive_and_wait();  // the checks are done: next block
                    }
            dgs_host_block = nullptr;
        });
    for (auto& th : pool) th.join();
}

// `__shared__ alignas(16) Tile<T> ks;` would read `static alignas(16) Tile<T> ks;`, which C++
// rejects (a standard attribute in the middle of the decl-specifiers); GNU's aligned attribute
// is accepted there and means the same. Defined last, after every standard header this file
// includes; a file that includes cuda_host.h must include its own standard headers first.
#define alignas(n) __attribute__((aligned(n)))
