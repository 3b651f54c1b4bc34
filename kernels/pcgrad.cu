// PCGrad's coefficients on the device: the K×K Gram matrix in, the K combine weights out, in one
// thread. It mirrors the host solver operation for operation, in double with no fused
// multiply-adds (explicit _rn intrinsics), and draws the same visiting order from the same
// SplitMix64 stream, so both give identical weights.
#include <stdint.h>

#include "dgs_contract.cuh"  // kMaxOperands (generated from src/surgery/contract.rs)

using dgs::kMaxOperands;

namespace {

struct SplitMix64 {
    unsigned long long state;
    __device__ unsigned long long next() {
        state += 0x9E3779B97F4A7C15ull;
        unsigned long long z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Uniform in [0, n): the high word of a 64×64-bit product.
    __device__ unsigned long long below(unsigned long long n) { return __umul64hi(next(), n); }
};

// The order in which `task` visits the others (Fisher–Yates over the other task indices).
__device__ int visit_order(unsigned long long seed, int tasks, int task, int* order) {
    int n = 0;
    for (int j = 0; j < tasks; ++j)
        if (j != task) order[n++] = j;
    SplitMix64 rng{seed ^ ((unsigned long long)(task + 1) * 0xD1B54A32D192ED03ull)};
    for (int i = n - 1; i >= 1; --i) {
        const int j = (int)rng.below((unsigned long long)(i + 1));
        const int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    return n;
}

}  // namespace

// gram: k×k row-major float; weights: k floats. mean != 0 divides by k. Launch <<<1, 32>>>.
extern "C" __global__ void pcgrad_solve(const float* __restrict__ gram, int k,
                                        unsigned long long seed, int mean,
                                        float* __restrict__ weights) {
    if (blockIdx.x != 0 || threadIdx.x != 0 || k <= 0) return;
    double c[kMaxOperands][kMaxOperands];
    int order[kMaxOperands];
    for (int i = 0; i < k; ++i) {
        for (int m = 0; m < k; ++m) c[i][m] = i == m ? 1.0 : 0.0;
        const int n = visit_order(seed, k, i, order);
        for (int o = 0; o < n; ++o) {
            const int j = order[o];
            double along = 0.0;
            for (int m = 0; m < k; ++m) along = __dadd_rn(along, __dmul_rn(c[i][m], (double)gram[m * k + j]));
            const double norm_sq = (double)gram[j * k + j];
            if (along < 0.0 && norm_sq > 0.0) c[i][j] = __dsub_rn(c[i][j], __ddiv_rn(along, norm_sq));
        }
    }
    const double scale = mean ? __ddiv_rn(1.0, (double)k) : 1.0;
    for (int m = 0; m < k; ++m) {
        double s = 0.0;
        for (int i = 0; i < k; ++i) s = __dadd_rn(s, c[i][m]);
        weights[m] = (float)__dmul_rn(s, scale);
    }
}
