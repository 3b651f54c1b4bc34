// Runs kernels/block_rows.cu on the CPU under the host emulation (cuda_host.h) and compares every
// entry point, in f32, f16 and bf16, with a float64 reference computed here from the same rounded
// inputs (the formulas of src/ops/block/cpu_rows.rs and src/ops/block/activation.rs, in exact
// arithmetic and libm's double functions):
//   layer_norm_forward   y = (x − mean) · rstd · w + b, stats[2r] = mean, stats[2r+1] = rstd =
//                        1/sqrt(var + eps); again with stats null (same y bits, no crash);
//   layer_norm_backward  dx += rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)), g = dy ⊙ w, reading the
//                        kernel's own forward statistics;
//   activation_forward   out = act(h), QuickGelu, Gelu (erf), GeluTanh, Relu;
//   activation_backward  out ← out ⊙ act'(h), in place;
//   bias_add             out[i] += bias[i mod cols].
// The kernels run as src/ops/block/cuda/rows.rs launches them: layer norms 128 threads, grid
// min(rows, 65536); elementwise kernels 256 threads, grid min(ceil(n / 256), 65536); plus a few
// launches with a smaller grid than that, so the grid-stride loops (which real launches reach
// only past 65536 blocks) run more than once. Every buffer lies between guards (NaN, or a finite
// value for buffers updated in place; see Buffer), which must stay intact; inputs must stay
// unchanged; outputs the kernel only writes start as NaN, so an element not written fails the
// comparison.
//
// Tolerance per element: |got − ref| ≤ 2 ulp(storage type) · |ref| + 1e-5 · (max |ref| over the
// row), ulp = 2^-23 (f32), 2^-10 (f16), 2^-7 (bf16); the statistics (f32) with f32's ulp, mean
// against the row's max |x|, rstd against rstd. The tables show max |got − ref| / tolerance:
// ≤ 1 passes.
//
// Usage: rows_check [--quick]   (--quick: a few small cases, for the sanitizer builds)
// Exit status 0 when every case is within tolerance and every buffer check holds, 1 otherwise.
#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "cuda_host.h"  // after the standard headers: it redefines alignas
#include "dgs_contract.cuh"  // generated from src/surgery/contract.rs: the activation codes

namespace {

// `RowsArgs` as src/ops/block/cuda/rows.rs lays it out (repr(C)), not the kernel's own
// declaration: the layouts must agree for the launch to work.
struct HostArgs {
    const void* x;
    const void* w;
    const void* b;
    const void* dy;
    void* out;
    float* stats;
    long long rows;
    int cols;
    int activation;
    float eps;
    int reserved;
};
static_assert(sizeof(HostArgs) == 6 * 8 + 8 + 4 * 4, "ROWS_ARGS_BYTES");
static_assert(alignof(HostArgs) == 8, "ARGS_ALIGN");

}  // namespace

extern "C" {
#define DGS_DECLARE(S)                        \
    void layer_norm_forward_##S(HostArgs);   \
    void layer_norm_backward_##S(HostArgs);  \
    void activation_forward_##S(HostArgs);   \
    void activation_backward_##S(HostArgs);  \
    void bias_add_##S(HostArgs);
DGS_DECLARE(f32)
DGS_DECLARE(f16)
DGS_DECLARE(bf16)
#undef DGS_DECLARE
}

namespace {

constexpr int kLnThreads = 128, kElementwiseThreads = 256;
constexpr long long kMaxBlocks = 65536;
constexpr size_t kGuardBytes = 1024;  // 0xff bytes before and after every buffer
constexpr float kEps = 1e-5f;

// The activation codes of src/surgery/contract.rs (ACTIVATION_*), via the generated header.
constexpr int kActs[4] = {dgs::kActQuickGelu, dgs::kActGelu, dgs::kActGeluTanh, dgs::kActRelu};
const char* const kActNames[4] = {"qgelu", "gelu", "tanh", "relu"};

enum Dt { F32, F16, BF16 };
const char* const kDtName[3] = {"f32", "f16", "bf16"};
size_t esize(Dt d) { return d == F32 ? 4 : 2; }
// The relative spacing of the type's values (an ulp of 1).
double ulp(Dt d) { return d == F32 ? std::ldexp(1.0, -23) : d == F16 ? std::ldexp(1.0, -10) : std::ldexp(1.0, -7); }

struct Kernels {
    void (*ln_forward)(HostArgs);
    void (*ln_backward)(HostArgs);
    void (*act_forward)(HostArgs);
    void (*act_backward)(HostArgs);
    void (*bias_add)(HostArgs);
};
Kernels kernels(Dt d) {
    if (d == F32)
        return {layer_norm_forward_f32, layer_norm_backward_f32, activation_forward_f32, activation_backward_f32, bias_add_f32};
    if (d == F16)
        return {layer_norm_forward_f16, layer_norm_backward_f16, activation_forward_f16, activation_backward_f16, bias_add_f16};
    return {layer_norm_forward_bf16, layer_norm_backward_bf16, activation_forward_bf16, activation_backward_bf16,
            bias_add_bf16};
}

// `n` elements of `d` between two guards of kGuardBytes, 64-byte aligned. The guards of a buffer
// the kernel only reads or only writes are 0xff bytes (NaN in every type: an out-of-bounds read
// poisons the result, and any finite write changes them). A buffer it updates in place (dx,
// activation_backward's gradient, bias_add's output) has finite guards, ≈ 1.236 in its type:
// NaN would survive a read-modify-write of NaN unchanged (NaN + b is the same NaN), ≈ 1.236 is
// changed by adding anything of the data's size or by scaling it (unless by exactly 1). The data
// starts as 0xff bytes either way.
struct Buffer {
    Buffer(Dt d, size_t n, bool updated_in_place = false) : d(d), n(n), bytes(n * esize(d)), guard(kGuardBytes, 0xff) {
        if (updated_in_place) {
            const uint32_t bits = d == F32 ? 0x3f9e3779u : d == F16 ? 0x3cf1u : 0x3f9eu;
            for (size_t i = 0; i < kGuardBytes; i += esize(d)) std::memcpy(&guard[i], &bits, esize(d));  // little-endian
        }
        const size_t total = (bytes + 2 * kGuardBytes + 63) / 64 * 64;
        base = static_cast<unsigned char*>(std::aligned_alloc(64, total));
        std::memset(base, 0xff, total);
        std::memcpy(base, guard.data(), kGuardBytes);
        std::memcpy(base + kGuardBytes + bytes, guard.data(), kGuardBytes);
    }
    ~Buffer() { std::free(base); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    void* data() const { return base + kGuardBytes; }
    float* f32() const { return static_cast<float*>(data()); }
    bool guards_intact() const {
        return std::memcmp(base, guard.data(), kGuardBytes) == 0 &&
               std::memcmp(base + kGuardBytes + bytes, guard.data(), kGuardBytes) == 0;
    }
    double get(size_t i) const {
        const unsigned char* p = base + kGuardBytes + i * esize(d);
        if (d == F32) {
            float f;
            std::memcpy(&f, p, 4);
            return f;
        }
        uint16_t h;
        std::memcpy(&h, p, 2);
        return d == F16 ? dgs_f16_bits_to_float(h) : dgs_bf16_bits_to_float(h);
    }
    // Stores v rounded to the type; returns the stored value.
    double put(size_t i, double v) {
        unsigned char* p = base + kGuardBytes + i * esize(d);
        const float f = (float)v;
        if (d == F32) {
            std::memcpy(p, &f, 4);
        } else {
            const uint16_t h = d == F16 ? dgs_float_to_f16_bits(f) : dgs_float_to_bf16_bits(f);
            std::memcpy(p, &h, 2);
        }
        return get(i);
    }
    std::vector<unsigned char> snapshot() const { return {base, base + bytes + 2 * kGuardBytes}; }
    bool same_as(const std::vector<unsigned char>& s) const { return std::memcmp(base, s.data(), s.size()) == 0; }
    Dt d;
    size_t n, bytes;
    std::vector<unsigned char> guard;
    unsigned char* base;
};

int failures = 0;

void problem(const std::string& name, const std::string& what) {
    std::printf("  %s: %s\n", name.c_str(), what.c_str());
    ++failures;
}

// max over elements of |got − ref| / (2 ulp · |ref| + 1e-5 · scale), the scale per row of `cols`.
struct Ratio {
    double worst = 0;
    void rows(const Buffer& got, const std::vector<double>& ref, size_t cols, double rel_ulp) {
        for (size_t r0 = 0; r0 < ref.size(); r0 += cols) {
            const size_t r1 = std::min(ref.size(), r0 + cols);
            double scale = 0;
            for (size_t i = r0; i < r1; ++i) scale = std::max(scale, std::fabs(ref[i]));
            for (size_t i = r0; i < r1; ++i) one(got.get(i), ref[i], 2 * rel_ulp * std::fabs(ref[i]) + 1e-5 * scale);
        }
    }
    void one(double got, double ref, double tol) {
        const double err = std::fabs(got - ref);
        if (std::isnan(got) || std::isinf(got)) {
            worst = INFINITY;
        } else if (err > 0) {
            worst = std::max(worst, tol > 0 ? err / tol : INFINITY);
        }
    }
    bool ok() const { return worst <= 1.0; }
};

std::string ratio_text(const Ratio& r) {
    char s[32];
    std::snprintf(s, sizeof s, "%8.2e%s", r.worst, r.ok() ? " " : "!");
    return s;
}

unsigned grid_of(long long work, int per_block) {
    return (unsigned)std::max(1LL, std::min((work + per_block - 1) / per_block, kMaxBlocks));
}

// ---- layer norm ----

struct LnCase {
    Dt d;
    int rows, cols;
    unsigned grid;  // 0: as rows.rs launches (min(rows, 65536))
};

std::string ln_name(const LnCase& c) {
    char s[64];
    if (c.grid)
        std::snprintf(s, sizeof s, "%-4s %dx%d grid %u", kDtName[c.d], c.rows, c.cols, c.grid);
    else
        std::snprintf(s, sizeof s, "%-4s %dx%d", kDtName[c.d], c.rows, c.cols);
    return s;
}

struct LnOutcome {
    Ratio y, stats, dx;
};

LnOutcome run_ln(const LnCase& c, uint64_t seed) {
    const std::string name = "layer norm " + ln_name(c);
    const Kernels k = kernels(c.d);
    const size_t rows = c.rows, cols = c.cols, n = rows * cols;
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uni(0.0, 1.0);

    Buffer x(c.d, n), w(c.d, cols), b(c.d, cols), dy(c.d, n), y(c.d, n), y2(c.d, n), dx(c.d, n, true);
    Buffer stats(F32, 2 * rows);
    std::vector<double> X(n), W(cols), B(cols), DY(n), DX0(n);
    // Rows of varied offset and spread; the last row (of two or more) constant, 0.375 (exact in
    // every type, and its sums exact in f32): variance 0, rstd = 1/sqrt(eps).
    for (size_t r = 0; r < rows; ++r) {
        const bool constant = rows >= 2 && r == rows - 1;
        const double m = 4 * uni(rng) - 2, s = 0.25 + 2.75 * uni(rng);
        for (size_t j = 0; j < cols; ++j) X[r * cols + j] = x.put(r * cols + j, constant ? 0.375 : m + s * normal(rng));
    }
    for (size_t j = 0; j < cols; ++j) {
        W[j] = w.put(j, (uni(rng) < 0.5 ? -1 : 1) * (0.5 + uni(rng)));
        B[j] = b.put(j, 0.5 * normal(rng));
    }
    for (size_t i = 0; i < n; ++i) {
        DY[i] = dy.put(i, normal(rng));
        DX0[i] = dx.put(i, normal(rng));
    }
    const auto x0 = x.snapshot(), w0 = w.snapshot(), b0 = b.snapshot(), dy0 = dy.snapshot();

    HostArgs a{};
    a.x = x.data();
    a.w = w.data();
    a.b = b.data();
    a.out = y.data();
    a.stats = stats.f32();
    a.rows = (long long)rows;
    a.cols = (int)cols;
    a.eps = kEps;
    const dim3 grid{c.grid ? c.grid : grid_of((long long)rows, 1), 1, 1};
    dgs_host_launch(k.ln_forward, grid, kLnThreads, a);

    HostArgs a2 = a;  // without statistics
    a2.out = y2.data();
    a2.stats = nullptr;
    dgs_host_launch(k.ln_forward, grid, kLnThreads, a2);
    if (!y.same_as(y2.snapshot())) problem(name, "forward without statistics differs from forward with them");

    HostArgs bw{};  // as rows.rs: x, w, dy, out = dx, stats (the forward's); b null, eps 0
    bw.x = x.data();
    bw.w = w.data();
    bw.dy = dy.data();
    bw.out = dx.data();
    bw.stats = stats.f32();
    bw.rows = (long long)rows;
    bw.cols = (int)cols;
    const auto stats0 = stats.snapshot();
    dgs_host_launch(k.ln_backward, grid, kLnThreads, bw);

    if (!x.same_as(x0) || !w.same_as(w0) || !b.same_as(b0) || !dy.same_as(dy0) || !stats.same_as(stats0))
        problem(name, "an input changed (or a write into its guards)");
    if (!y.guards_intact() || !y2.guards_intact() || !dx.guards_intact() || !stats.guards_intact())
        problem(name, "a write outside a buffer (guard changed)");

    // Reference, float64.
    std::vector<double> Y(n), DX(n), mean(rows), rstd(rows);
    LnOutcome out;
    for (size_t r = 0; r < rows; ++r) {
        const double* xr = &X[r * cols];
        double s = 0, q = 0, xmax = 0;
        for (size_t j = 0; j < cols; ++j) s += xr[j];
        const double mu = s / cols;
        for (size_t j = 0; j < cols; ++j) q += (xr[j] - mu) * (xr[j] - mu);
        const double rs = 1.0 / std::sqrt(q / cols + (double)kEps);
        mean[r] = mu;
        rstd[r] = rs;
        double m1 = 0, m2 = 0;
        for (size_t j = 0; j < cols; ++j) {
            const double xh = (xr[j] - mu) * rs, g = DY[r * cols + j] * W[j];
            Y[r * cols + j] = xh * W[j] + B[j];
            m1 += g;
            m2 += g * xh;
            xmax = std::max(xmax, std::fabs(xr[j]));
        }
        m1 /= cols;
        m2 /= cols;
        for (size_t j = 0; j < cols; ++j) {
            const double xh = (xr[j] - mu) * rs, g = DY[r * cols + j] * W[j];
            DX[r * cols + j] = DX0[r * cols + j] + rs * (g - m1 - xh * m2);
        }
        const double u32 = ulp(F32);
        out.stats.one(stats.get(2 * r), mu, 2 * u32 * std::fabs(mu) + 1e-5 * xmax);
        out.stats.one(stats.get(2 * r + 1), rs, 2 * u32 * rs + 1e-5 * rs);
    }
    out.y.rows(y, Y, cols, ulp(c.d));
    out.dx.rows(dx, DX, cols, ulp(c.d));
    return out;
}

// ---- elementwise ----

// act(x) and act'(x), exactly (libm double).
void activation_ref(int code, double x, double& f, double& d) {
    if (code == dgs::kActQuickGelu) {
        const double s = 1.0 / (1.0 + std::exp(-1.702 * x));
        f = x * s;
        d = s + 1.702 * x * s * (1.0 - s);
    } else if (code == dgs::kActGelu) {
        const double cdf = 0.5 * std::erfc(-x / std::sqrt(2.0));  // erfc: no cancellation for x < 0
        const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
        f = x * cdf;
        d = cdf + x * pdf;
    } else if (code == dgs::kActGeluTanh) {
        const double k = std::sqrt(2.0 / M_PI), c = 0.044715;
        const double t = std::tanh(k * (x + c * x * x * x));
        f = 0.5 * x * (1.0 + t);
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * c * x * x);
    } else {
        f = x > 0 ? x : 0.0;
        d = x > 0 ? 1.0 : 0.0;
    }
}

struct EwCase {
    Dt d;
    long long rows, cols;  // n = rows · cols; bias_add's bias has cols elements
    unsigned grid;         // 0: as rows.rs launches (min(ceil(n / 256), 65536))
};

std::string ew_name(const EwCase& c) {
    char s[64];
    if (c.grid)
        std::snprintf(s, sizeof s, "%-4s %lldx%lld grid %u", kDtName[c.d], c.rows, c.cols, c.grid);
    else
        std::snprintf(s, sizeof s, "%-4s %lldx%lld", kDtName[c.d], c.rows, c.cols);
    return s;
}

struct EwOutcome {
    Ratio fwd[4], bwd[4], bias;
};

EwOutcome run_ew(const EwCase& c, uint64_t seed) {
    const std::string name = "elementwise " + ew_name(c);
    const Kernels k = kernels(c.d);
    const size_t n = (size_t)(c.rows * c.cols), cols = (size_t)c.cols;
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const dim3 grid{c.grid ? c.grid : grid_of((long long)n, kElementwiseThreads), 1, 1};
    EwOutcome out;

    // Pre-activations: 3 · N(0, 1), and at the start (after 1.25, the one-element case's) the edges:
    // zeros, tiny, saturating values.
    const double special[] = {1.25, 0.0, -0.0, 1e-3, -1e-3, 0.5, -0.5, 3.0, -3.0, 8.0, -8.0, 20.0, -20.0, 100.0, -100.0};
    Buffer h(c.d, n);
    std::vector<double> H(n), G(n);
    for (size_t i = 0; i < n; ++i)
        H[i] = h.put(i, i < sizeof special / sizeof special[0] ? special[i] : 3 * normal(rng));
    const auto h0 = h.snapshot();
    for (int ai = 0; ai < 4; ++ai) {
        Buffer y(c.d, n), g(c.d, n, true);
        for (size_t i = 0; i < n; ++i) G[i] = g.put(i, normal(rng));
        HostArgs a{};  // as rows.rs: x = h, out, rows = n, activation
        a.x = h.data();
        a.out = y.data();
        a.rows = (long long)n;
        a.activation = kActs[ai];
        dgs_host_launch(k.act_forward, grid, kElementwiseThreads, a);
        a.out = g.data();
        dgs_host_launch(k.act_backward, grid, kElementwiseThreads, a);
        if (!y.guards_intact() || !g.guards_intact())
            problem(name, std::string(kActNames[ai]) + ": a write outside a buffer (guard changed)");
        std::vector<double> F(n), D(n);
        for (size_t i = 0; i < n; ++i) {
            double f, d;
            activation_ref(kActs[ai], H[i], f, d);
            F[i] = f;
            D[i] = G[i] * d;
        }
        out.fwd[ai].rows(y, F, cols, ulp(c.d));
        out.bwd[ai].rows(g, D, cols, ulp(c.d));
    }
    if (!h.same_as(h0)) problem(name, "the pre-activation changed (or a write into its guards)");

    Buffer bias(c.d, cols), o(c.d, n, true);
    std::vector<double> BIAS(cols), O(n);
    for (size_t j = 0; j < cols; ++j) BIAS[j] = bias.put(j, normal(rng));
    for (size_t i = 0; i < n; ++i) O[i] = o.put(i, 2 * normal(rng)) + BIAS[i % cols];
    const auto bias0 = bias.snapshot();
    HostArgs a{};  // as rows.rs: b, out, rows = n, cols
    a.b = bias.data();
    a.out = o.data();
    a.rows = (long long)n;
    a.cols = (int)cols;
    dgs_host_launch(k.bias_add, grid, kElementwiseThreads, a);
    if (!bias.same_as(bias0)) problem(name, "bias_add: the bias changed (or a write into its guards)");
    if (!o.guards_intact()) problem(name, "bias_add: a write outside the output (guard changed)");
    out.bias.rows(o, O, cols, ulp(c.d));
    return out;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    const std::vector<int> widths = quick ? std::vector<int>{8, 768} : std::vector<int>{8, 512, 768, 1024, 1280, 2048};
    const int rows = 3;
    uint64_t seed = 1;

    std::printf("layer norm: max |got - ref| / tolerance (<= 1 passes)\n");
    std::printf("%-26s %9s %9s %9s\n", "case", "y", "stats", "dx");
    std::vector<LnCase> ln;
    for (int d = 0; d < 3; ++d) {
        for (int cols : widths) ln.push_back({(Dt)d, rows, cols, 0});
        ln.push_back({(Dt)d, 5, quick ? 8 : 768, 2});  // grid-stride: two blocks for five rows
    }
    for (const LnCase& c : ln) {
        const auto t = std::chrono::steady_clock::now();
        const int before = failures;
        const LnOutcome r = run_ln(c, seed++);
        const bool ok = r.y.ok() && r.stats.ok() && r.dx.ok();
        if (!ok) ++failures;
        std::printf("%-26s %s %s %s  %s  (%.1fs)\n", ln_name(c).c_str(), ratio_text(r.y).c_str(),
                    ratio_text(r.stats).c_str(), ratio_text(r.dx).c_str(), ok && failures == before ? "ok" : "FAIL",
                    seconds_since(t));
        std::fflush(stdout);
    }

    std::printf("\nelementwise: max |got - ref| / tolerance (<= 1 passes); f = activation_forward, "
                "b = activation_backward\n");
    std::printf("%-26s", "case");
    for (const char* a : kActNames) std::printf(" %7s f %7s b", a, a);
    std::printf(" %9s\n", "bias_add");
    std::vector<EwCase> ew;
    for (int d = 0; d < 3; ++d) {
        if (quick) {  // (each 256-thread launch is slow under ThreadSanitizer)
            ew.push_back({(Dt)d, rows, 8, 0});
            ew.push_back({(Dt)d, 1, 300, 1});  // grid-stride: one block for a block and a bit
            continue;
        }
        for (int cols : widths) ew.push_back({(Dt)d, rows, cols, 0});
        ew.push_back({(Dt)d, 1, 1, 0});    // one element
        ew.push_back({(Dt)d, 1, 777, 0});  // a partial last block
        ew.push_back({(Dt)d, 1, 777, 1});  // grid-stride: one block
    }
    for (const EwCase& c : ew) {
        const auto t = std::chrono::steady_clock::now();
        const int before = failures;
        const EwOutcome r = run_ew(c, seed++);
        bool ok = r.bias.ok();
        std::printf("%-26s", ew_name(c).c_str());
        for (int ai = 0; ai < 4; ++ai) {
            ok = ok && r.fwd[ai].ok() && r.bwd[ai].ok();
            std::printf(" %s %s", ratio_text(r.fwd[ai]).c_str(), ratio_text(r.bwd[ai]).c_str());
        }
        if (!ok) ++failures;
        std::printf(" %s  %s  (%.1fs)\n", ratio_text(r.bias).c_str(), ok && failures == before ? "ok" : "FAIL",
                    seconds_since(t));
        std::fflush(stdout);
    }
    std::printf(failures ? "FAIL: %d problem(s)\n" : "all cases ok\n", failures);
    return failures ? 1 : 0;
}
