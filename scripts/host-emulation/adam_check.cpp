// Runs kernels/adam.cu on the CPU under the host emulation (cuda_host.h) and checks it bit for bit
// against a reference computed here from the update as src/surgery/cpu/adam.rs writes it (f32,
// each operation rounded once, in the same order):
//   g ← g · grad_scale (when grad_scale ≠ 1);  m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;
//   p ← p − (m / (√v / √(1 − β₂ᵗ) + ε)) · step
// The table is built as src/surgery/cuda/tensor_list.rs's upload_table builds it: operand rows
// p, g, m, v of [4][n] addresses, one work item per LIST_ITEM elements of each tensor; the launch
// as src/surgery/cuda/adam.rs queues it (256 threads, one block per item, at most 65535 blocks)
// plus one launch with a single block, so the grid-stride loop over items runs several times.
// Tensors: lengths 1, 5, LIST_ITEM − 1, LIST_ITEM, LIST_ITEM + 1, 2·LIST_ITEM + 3 and a
// zero-length tensor (no item); gradients in f32, f16 and bf16; three steps, the second with
// grad_scale 0.5. Every buffer sits between guards of 0xff bytes that must stay intact, and the
// gradients must stay unchanged.
//
// Usage: adam_check [--quick]   (--quick: fewer and shorter tensors, for the sanitizer builds)
// Exit status 0 when everything matches, 1 otherwise.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda_host.h"  // after the standard headers: it redefines alignas
#include "dgs_contract.cuh"
#include "list_table.h"

namespace {

// `AdamArgs` as src/surgery/cuda/adam.rs lays it out (the list table's layout is list_table.h's).
struct alignas(8) HostAdam {
    float beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bias2_sqrt, eps, grad_scale;
};
static_assert(sizeof(HostAdam) == dgs::kAdamArgsBytes, "ADAM_ARGS_BYTES");

}  // namespace

extern "C" {
void adam_f32(ListTableArg, HostAdam);
void adam_f16(ListTableArg, HostAdam);
void adam_bf16(ListTableArg, HostAdam);
}

namespace {

// dgs_host_launch takes kernels of one argument: the two travel together to a forwarding entry.
struct Launch {
    ListTableArg table;
    HostAdam args;
};
template <void (*K)(ListTableArg, HostAdam)>
void forward_launch(Launch l) {
    K(l.table, l.args);
}

constexpr int kThreads = 256;
constexpr size_t kGuard = 256;

enum Dt { F32, F16, BF16 };
const char* const kName[3] = {"f32", "f16", "bf16"};
void (*kernel_of(Dt d))(Launch) {
    return d == F32 ? forward_launch<adam_f32> : d == F16 ? forward_launch<adam_f16> : forward_launch<adam_bf16>;
}

uint32_t bits_of(Dt d, float v) {
    return d == F32 ? dgs_float_to_bits(v) : d == F16 ? dgs_float_to_f16_bits(v) : dgs_float_to_bf16_bits(v);
}
float value_of(Dt d, uint32_t b) {
    return d == F32 ? dgs_bits_to_float(b) : d == F16 ? dgs_f16_bits_to_float((uint16_t)b) : dgs_bf16_bits_to_float((uint16_t)b);
}

// `n` elements of `size` bytes between two guards of 0xff.
struct Guarded {
    Guarded(size_t n, size_t size) : bytes(n * size), raw(bytes + 2 * kGuard + 64, 0xff) {}
    unsigned char* data() { return raw.data() + kGuard; }
    bool intact() const {
        for (size_t i = 0; i < kGuard; ++i)
            if (raw[i] != 0xff || raw[kGuard + bytes + i] != 0xff) return false;
        return true;
    }
    size_t bytes;
    std::vector<unsigned char> raw;
};

HostAdam step_args(int t, float grad_scale) {
    const double b1 = 0.9, b2 = 0.999, lr = 1e-3;
    return HostAdam{(float)b1,
                    (float)b2,
                    (float)(1.0 - b1),
                    (float)(1.0 - b2),
                    (float)(lr / (1.0 - std::pow(b1, t))),
                    (float)std::sqrt(1.0 - std::pow(b2, t)),
                    1e-8f,
                    grad_scale};
}

// The CPU twin's update of one element (src/surgery/cpu/adam.rs).
void reference(const HostAdam& s, float& p, float g, float& m, float& v) {
    if (s.grad_scale != 1.0f) g = g * s.grad_scale;
    m = m * s.beta1 + g * s.one_minus_beta1;
    v = v * s.beta2 + g * g * s.one_minus_beta2;
    p -= m / (std::sqrt(v) / s.bias2_sqrt + s.eps) * s.step_size;
}

int failures = 0;

bool run(Dt d, const std::vector<long long>& lens, unsigned grid_cap, std::mt19937_64& rng) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const size_t n = lens.size(), gsize = d == F32 ? 4 : 2;
    std::vector<Guarded> p, g, m, v;
    std::vector<std::vector<float>> rp(n), rm(n), rv(n);
    for (size_t t = 0; t < n; ++t) {
        const size_t len = (size_t)lens[t];
        p.emplace_back(len, 4), g.emplace_back(len, gsize), m.emplace_back(len, 4), v.emplace_back(len, 4);
        for (size_t i = 0; i < len; ++i) {
            rp[t].push_back(normal(rng));
            rm[t].push_back(0.f);
            rv[t].push_back(0.f);
        }
        if (len > 0) std::memcpy(p[t].data(), rp[t].data(), len * 4);  // an empty vector's data() may be null
        std::memset(m[t].data(), 0, len * 4);
        std::memset(v[t].data(), 0, len * 4);
    }
    // The table: operand-major addresses, lengths, one item per kListItem elements.
    std::vector<unsigned long long> ptrs;
    for (auto* list : {&p, &g, &m, &v})
        for (auto& b : *list) ptrs.push_back((unsigned long long)(uintptr_t)b.data());
    std::vector<int> item_tensor;
    std::vector<long long> item_start;
    for (size_t t = 0; t < n; ++t)
        for (long long s = 0; s < lens[t]; s += dgs::kListItem) {
            item_tensor.push_back((int)t);
            item_start.push_back(s);
        }
    const ListTableArg table{ptrs.data(), lens.data(), item_tensor.data(), item_start.data(), (int)n,
                          (int)item_tensor.size()};
    const unsigned blocks = (unsigned)std::min<size_t>(item_tensor.size(), grid_cap);
    bool ok = true;
    for (int t = 1; t <= 3; ++t) {
        const HostAdam s = step_args(t, t == 2 ? 0.5f : 1.0f);
        std::vector<std::vector<unsigned char>> g_before(n);
        for (size_t k = 0; k < n; ++k) {
            for (long long i = 0; i < lens[k]; ++i) {
                const uint32_t b = bits_of(d, normal(rng));
                std::memcpy(g[k].data() + i * gsize, &b, gsize);
                reference(s, rp[k][i], value_of(d, b), rm[k][i], rv[k][i]);
            }
            g_before[k] = g[k].raw;
        }
        if (blocks > 0) dgs_host_launch(kernel_of(d), dim3{blocks, 1, 1}, kThreads, Launch{table, s});
        for (size_t k = 0; k < n; ++k) {
            if (g[k].raw != g_before[k]) ok = false, std::printf("  %s tensor %zu: the gradient changed\n", kName[d], k);
            for (auto* b : {&p[k], &m[k], &v[k]})
                if (!b->intact()) ok = false, std::printf("  %s tensor %zu: a write outside a buffer\n", kName[d], k);
            const float* got[3] = {(const float*)p[k].data(), (const float*)m[k].data(), (const float*)v[k].data()};
            const std::vector<float>* want[3] = {&rp[k], &rm[k], &rv[k]};
            const char* what[3] = {"parameter", "first moment", "second moment"};
            for (int w = 0; w < 3; ++w) {
                size_t bad = 0;
                for (long long i = 0; i < lens[k]; ++i)
                    if (dgs_float_to_bits(got[w][i]) != dgs_float_to_bits((*want[w])[i]) && bad++ < 2)
                        std::printf("  %s step %d tensor %zu %s[%lld]: got %.9g, want %.9g\n", kName[d], t, k, what[w],
                                    i, got[w][i], (*want[w])[i]);
                if (bad) ok = false;
            }
        }
    }
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    const long long item = dgs::kListItem;
    const std::vector<long long> lens = quick ? std::vector<long long>{1, 5, 0, item + 1}
                                              : std::vector<long long>{1, 5, item - 1, item, 0, item + 1, 2 * item + 3};
    std::mt19937_64 rng(7);
    std::printf("bit for bit against the CPU update, 3 steps (the second scaled by 0.5)\n");
    for (int d = 0; d < 3; ++d)
        for (unsigned cap : {65535u, 1u}) {
            const bool ok = run((Dt)d, lens, cap, rng);
            std::printf("%-4s %zu tensors, grid %s  %s\n", kName[d], lens.size(), cap == 1 ? "1 block" : "one block per item",
                        ok ? "ok" : "FAIL");
            failures += !ok;
        }
    std::printf(failures ? "FAIL: %d case(s)\n" : "all cases ok\n", failures);
    return failures ? 1 : 0;
}
