// Adam over every trainable tensor in one launch (a tensor-list table, operands p, g, m, v):
//   m ← β₁·m + (1 − β₁)·g,  v ← β₂·v + (1 − β₂)·g²,  p ← p − (m / (√v / √(1 − β₂ᵗ) + ε)) · step
// with g first multiplied by `grad_scale` when that is not 1 (loss scaling). The parameters and
// moments are f32; the gradient is the stamped type. Every operation is an explicitly rounded
// f32 one (no contraction into fused multiply-adds), in the order the CPU twin
// (`surgery::cpu::adam::update`) evaluates it, so both give the same bits.
#include "dtype.cuh"
#include "tensor_list.cuh"

using namespace dgs;

// `AdamArgs` in src/surgery/cuda/adam.rs: the same fields in the same order.
struct alignas(8) AdamArgs {
    float beta1;
    float beta2;
    float one_minus_beta1;
    float one_minus_beta2;
    float step_size;   // lr / (1 − β₁ᵗ)
    float bias2_sqrt;  // √(1 − β₂ᵗ)
    float eps;
    float grad_scale;
};
static_assert(sizeof(AdamArgs) == kAdamArgsBytes, "AdamArgs must match the Rust struct");
static_assert(alignof(AdamArgs) == kArgsAlign, "AdamArgs must match the Rust struct");

// Operand rows of the table.
constexpr int kParam = 0, kGrad = 1, kFirst = 2, kSecond = 3;

// One block per work item (kListItem elements of one tensor), a grid-stride loop over items.
template <typename T>
__device__ void adam_impl(const ListTable& t, const AdamArgs& a) {
    for (int item = blockIdx.x; item < t.n_items; item += gridDim.x) {
        const int tensor = t.item_tensor[item];
        const long long start = t.item_start[item];
        const long long rest = t.lens[tensor] - start;
        const int len = (int)(rest < kListItem ? rest : kListItem);
        float* __restrict__ p = tensor_ptr<float>(t, kParam, tensor) + start;
        const T* __restrict__ g = tensor_ptr<const T>(t, kGrad, tensor) + start;
        float* __restrict__ m = tensor_ptr<float>(t, kFirst, tensor) + start;
        float* __restrict__ v = tensor_ptr<float>(t, kSecond, tensor) + start;
        for (int i = threadIdx.x; i < len; i += blockDim.x) {
            float gi = to_float(g[i]);
            if (a.grad_scale != 1.f) gi = __fmul_rn(gi, a.grad_scale);
            const float mi = __fadd_rn(__fmul_rn(m[i], a.beta1), __fmul_rn(gi, a.one_minus_beta1));
            const float vi =
                __fadd_rn(__fmul_rn(v[i], a.beta2), __fmul_rn(__fmul_rn(gi, gi), a.one_minus_beta2));
            const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bias2_sqrt), a.eps);
            p[i] = __fsub_rn(p[i], __fmul_rn(__fdiv_rn(mi, denom), a.step_size));
            m[i] = mi;
            v[i] = vi;
        }
    }
}

#define STAMP_ADAM(T, S) \
    extern "C" __global__ void adam_##S(ListTable table, AdamArgs args) { adam_impl<T>(table, args); }
DGS_STAMP_DTYPES(STAMP_ADAM)
