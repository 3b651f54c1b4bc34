// Runs kernels/attention.cu on the CPU under the host emulation (cuda_host.h) and compares it with
// a float64 attention computed here (the formulas of src/ops/attention/reference.rs):
//   forward O and lse; backward dQ, dK, dV with the row term D = rowsum(dO ⊙ O) from the
//   reference O. The kernels run as the launch code runs them (src/ops/attention/cuda/):
//   blockDim 128; grid (ceil(t/64), heads, batch) for forward, dk_dv and dq; the delta kernel
//   grid-stride over min(ceil(rows/4), 65536) blocks; the backward reads the kernel's own O and
//   lse. Besides the errors it checks that every output element is written, that nothing else in
//   the buffers (guards around them, gaps of strided layouts, rows past t) is, and that two
//   forward runs give the same bits.
//
// Usage: attention_check [--quick]   (--quick: a few small cases, for the sanitizer builds)
// Exit status 0 when every case is within tolerance, 1 otherwise.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <random>
#include <string>

#include "cuda_host.h"  // last: it redefines alignas

namespace {

// `AttentionArgs` as src/ops/attention/cuda/ lays it out (repr(C)), not the kernel's own
// declaration: the layouts must agree for the launch to work.
struct Strides {
    long long batch, head, row;
};
struct HostArgs {
    const void* q;
    const void* k;
    const void* v;
    void* o;
    float* lse;
    const void* d_o;
    void* dq;
    void* dk;
    void* dv;
    float* delta;
    Strides sq, sk, sv, so;
    int batch, heads, t, causal;
    float scale;
    int reserved;
};
static_assert(sizeof(HostArgs) == 10 * 8 + 4 * 24 + 6 * 4, "ATTENTION_ARGS_BYTES");
static_assert(alignof(HostArgs) == 8, "ARGS_ALIGN");

}  // namespace

extern "C" {
void attention_forward_f16(HostArgs);
void attention_delta_f16(HostArgs);
void attention_dk_dv_f16(HostArgs);
void attention_dq_f16(HostArgs);
void attention_forward_bf16(HostArgs);
void attention_delta_bf16(HostArgs);
void attention_dk_dv_bf16(HostArgs);
void attention_dq_bf16(HostArgs);
}

namespace {

constexpr int kD = 64, kTile = 64, kThreads = 128;
constexpr size_t kGuard = 256;  // elements of sentinel before and after every buffer
constexpr uint16_t kSentinel16 = 0xffffu;      // NaN in both f16 and bf16
constexpr uint32_t kSentinel32 = 0xffffffffu;  // NaN in f32

struct Kernels {
    void (*forward)(HostArgs);
    void (*delta)(HostArgs);
    void (*dk_dv)(HostArgs);
    void (*dq)(HostArgs);
};

// A buffer of `n` elements between two guards, 64-byte aligned, filled with the sentinel.
template <class E>
struct Buffer {
    explicit Buffer(size_t n, E sentinel) : n(n), sentinel(sentinel) {
        const size_t bytes = ((n + 2 * kGuard) * sizeof(E) + 63) / 64 * 64;
        base = static_cast<E*>(std::aligned_alloc(64, bytes));
        std::fill(base, base + n + 2 * kGuard, sentinel);
    }
    ~Buffer() { std::free(base); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    E* data() const { return base + kGuard; }
    bool guards_intact() const {
        for (size_t i = 0; i < kGuard; ++i)
            if (!same(base[i]) || !same(base[kGuard + n + i])) return false;
        return true;
    }
    bool same(E e) const { return std::memcmp(&e, &sentinel, sizeof(E)) == 0; }
    size_t n;
    E sentinel;
    E* base;
};

// Where element (b, h, i, d) of a [batch, heads, t, 64] operand lies in its buffer.
struct Layout {
    long long offset, batch, head, row;
    // Relative to the operand's pointer (its buffer + offset).
    long long at(int b, int h, int i, int d) const { return b * batch + h * head + i * row + d; }
    Strides strides() const { return {batch, head, row}; }
};

struct Case {
    int batch, heads, t;
    bool causal, bf16, fused;  // fused: q/k/v views of one [B, T, 3, H, 64] buffer, O rows padded
};

std::string name_of(const Case& c) {
    char s[96];
    std::snprintf(s, sizeof s, "%-4s B%d H%d T%-3d %-6s %s", c.bf16 ? "bf16" : "f16", c.batch, c.heads, c.t,
                  c.causal ? "causal" : "full", c.fused ? "fused-qkv" : "contig");
    return s;
}

float widen(bool bf16, uint16_t bits) { return bf16 ? dgs_bf16_bits_to_float(bits) : dgs_f16_bits_to_float(bits); }
uint16_t narrow(bool bf16, float v) { return bf16 ? dgs_float_to_bf16_bits(v) : dgs_float_to_f16_bits(v); }

// Per (b, h): [t, 64] row-major float64 of one operand.
using Heads = std::vector<std::vector<double>>;

struct Reference {
    Heads o, dq, dk, dv;
    std::vector<std::vector<double>> lse;
};

// reference.rs, head by head.
Reference reference(const Case& c, double scale, const Heads& q, const Heads& k, const Heads& v, const Heads& d_o) {
    const int t = c.t;
    Reference r;
    for (size_t bh = 0; bh < q.size(); ++bh) {
        std::vector<double> o(t * kD, 0.0), lse(t), dq(t * kD, 0.0), dk(t * kD, 0.0), dv(t * kD, 0.0);
        std::vector<std::vector<double>> p(t);
        for (int i = 0; i < t; ++i) {
            const int live = c.causal ? i + 1 : t;
            std::vector<double> s(live);
            for (int j = 0; j < live; ++j) {
                double dot = 0;
                for (int d = 0; d < kD; ++d) dot += q[bh][i * kD + d] * k[bh][j * kD + d];
                s[j] = scale * dot;
            }
            const double mx = *std::max_element(s.begin(), s.end());
            double sum = 0;
            for (double x : s) sum += std::exp(x - mx);
            lse[i] = mx + std::log(sum);
            p[i].assign(t, 0.0);
            for (int j = 0; j < live; ++j) p[i][j] = std::exp(s[j] - lse[i]);
            for (int j = 0; j < t; ++j)
                for (int d = 0; d < kD; ++d) o[i * kD + d] += p[i][j] * v[bh][j * kD + d];
        }
        for (int i = 0; i < t; ++i) {
            const double* g = &d_o[bh][i * kD];
            double row_term = 0;
            for (int d = 0; d < kD; ++d) row_term += g[d] * o[i * kD + d];
            const int live = c.causal ? i + 1 : t;
            for (int j = 0; j < live; ++j) {
                double dp = 0;
                for (int d = 0; d < kD; ++d) dp += g[d] * v[bh][j * kD + d];
                const double ds = p[i][j] * (dp - row_term);
                for (int d = 0; d < kD; ++d) {
                    dv[j * kD + d] += p[i][j] * g[d];
                    dq[i * kD + d] += scale * ds * k[bh][j * kD + d];
                    dk[j * kD + d] += scale * ds * q[bh][i * kD + d];
                }
            }
        }
        r.o.push_back(o);
        r.lse.push_back(lse);
        r.dq.push_back(dq);
        r.dk.push_back(dk);
        r.dv.push_back(dv);
    }
    return r;
}

// max |got − ref| / max |ref| (absolute error where the reference is all zero, as dQ and dK are
// for t = 1: a single key gets probability 1 and dS = 0).
struct Error {
    double max_err = 0, max_ref = 0;
    double value() const { return max_ref > 1e-12 ? max_err / max_ref : max_err; }
    void add(double got, double ref) {
        max_err = std::max(max_err, std::isnan(got) ? INFINITY : std::fabs(got - ref));
        max_ref = std::max(max_ref, std::fabs(ref));
    }
};

struct Outcome {
    double o, lse, dq, dk, dv;
    bool ok;
};

int failures = 0;

void problem(const std::string& name, const char* what) {
    std::printf("  %s: %s\n", name.c_str(), what);
    ++failures;
}

Outcome run_case(const Case& c, uint64_t seed) {
    const std::string name = name_of(c);
    const bool bf16 = c.bf16;
    const Kernels kern = bf16 ? Kernels{attention_forward_bf16, attention_delta_bf16, attention_dk_dv_bf16, attention_dq_bf16}
                              : Kernels{attention_forward_f16, attention_delta_f16, attention_dk_dv_f16, attention_dq_f16};
    const int B = c.batch, H = c.heads, T = c.t;
    const float scale = 0.125f;

    // Layouts: q/k/v (and dq/dk/dv, which use their strides) and o/dO.
    Layout lq, lk, lv, lo;
    size_t qkv_elems, o_elems;
    if (c.fused) {
        const long long row = 3LL * H * kD;
        lq = {0, T * row, kD, row};
        lk = {(long long)H * kD, T * row, kD, row};
        lv = {2LL * H * kD, T * row, kD, row};
        qkv_elems = (size_t)B * T * row;
        const long long orow = (long long)H * (kD + 8);  // 8 padding elements after each head's row
        lo = {0, T * orow, kD + 8, orow};
        o_elems = (size_t)B * T * orow;
    } else {
        const long long head = (long long)T * kD, batch = H * head;
        lq = lk = lv = lo = {0, batch, head, kD};
        qkv_elems = o_elems = (size_t)B * H * T * kD;
    }
    const size_t rows = (size_t)B * H * T;
    const bool separate = !c.fused;  // q, k, v in separate buffers (else one fused buffer)

    Buffer<uint16_t> qkv(separate ? 1 : qkv_elems, kSentinel16);
    Buffer<uint16_t> qb(separate ? qkv_elems : 1, kSentinel16), kb(separate ? qkv_elems : 1, kSentinel16),
        vb(separate ? qkv_elems : 1, kSentinel16);
    // Each operand's pointer is its buffer plus its layout's offset (a view, as cuda.rs passes it).
    uint16_t* qp = (separate ? qb.data() : qkv.data()) + lq.offset;
    uint16_t* kp = (separate ? kb.data() : qkv.data()) + lk.offset;
    uint16_t* vp = (separate ? vb.data() : qkv.data()) + lv.offset;
    Buffer<uint16_t> dob(o_elems, kSentinel16), ob(o_elems, kSentinel16), o2b(o_elems, kSentinel16);
    Buffer<uint16_t> dqkv(separate ? 1 : qkv_elems, kSentinel16);
    Buffer<uint16_t> dqb(separate ? qkv_elems : 1, kSentinel16), dkb(separate ? qkv_elems : 1, kSentinel16),
        dvb(separate ? qkv_elems : 1, kSentinel16);
    uint16_t* dqp = (separate ? dqb.data() : dqkv.data()) + lq.offset;
    uint16_t* dkp = (separate ? dkb.data() : dqkv.data()) + lk.offset;
    uint16_t* dvp = (separate ? dvb.data() : dqkv.data()) + lv.offset;
    const float s32 = dgs_bits_to_float(kSentinel32);
    Buffer<float> lse(rows, s32), lse2(rows, s32), delta(rows, s32);

    // Inputs: standard normal, rounded to the storage type; the reference sees the rounded values.
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    Heads q(B * H, std::vector<double>(T * kD)), k = q, v = q, d_o = q;
    auto fill = [&](Heads& dst, uint16_t* buf, const Layout& l) {
        for (int b = 0; b < B; ++b)
            for (int h = 0; h < H; ++h)
                for (int i = 0; i < T; ++i)
                    for (int d = 0; d < kD; ++d) {
                        const uint16_t bits = narrow(bf16, (float)normal(rng));
                        buf[l.at(b, h, i, d)] = bits;
                        dst[b * H + h][i * kD + d] = widen(bf16, bits);
                    }
    };
    fill(q, qp, lq);
    fill(k, kp, lk);
    fill(v, vp, lv);
    fill(d_o, dob.data(), lo);

    HostArgs a{};
    a.q = qp;
    a.k = kp;
    a.v = vp;
    a.o = ob.data();
    a.lse = lse.data();
    a.sq = lq.strides();
    a.sk = lk.strides();
    a.sv = lv.strides();
    a.so = lo.strides();
    a.batch = B;
    a.heads = H;
    a.t = T;
    a.causal = c.causal;
    a.scale = scale;
    // (the forward's unused backward pointers stay null, as in cuda.rs)
    const dim3 blocks{(unsigned)((T + kTile - 1) / kTile), (unsigned)H, (unsigned)B};
    dgs_host_launch(kern.forward, blocks, kThreads, a);

    HostArgs a2 = a;
    a2.o = o2b.data();
    a2.lse = lse2.data();
    dgs_host_launch(kern.forward, blocks, kThreads, a2);

    HostArgs bw = a;
    bw.d_o = dob.data();
    bw.dq = dqp;
    bw.dk = dkp;
    bw.dv = dvp;
    bw.delta = delta.data();
    const size_t delta_blocks = std::min<size_t>((rows + kThreads / 32 - 1) / (kThreads / 32), 1 << 16);
    dgs_host_launch(kern.delta, dim3{(unsigned)std::max<size_t>(delta_blocks, 1), 1, 1}, kThreads, bw);
    dgs_host_launch(kern.dk_dv, blocks, kThreads, bw);
    dgs_host_launch(kern.dq, blocks, kThreads, bw);

    // Determinism of the forward: same bits everywhere, sentinels included.
    if (std::memcmp(ob.base, o2b.base, (o_elems + 2 * kGuard) * 2) != 0 ||
        std::memcmp(lse.base, lse2.base, (rows + 2 * kGuard) * 4) != 0)
        problem(name, "two forward runs differ");

    // Guards, and every element written exactly where it should be.
    if (!ob.guards_intact() || !lse.guards_intact() || !delta.guards_intact() || !qkv.guards_intact() ||
        !qb.guards_intact() || !kb.guards_intact() || !vb.guards_intact() || !dob.guards_intact() ||
        !dqkv.guards_intact() || !dqb.guards_intact() || !dkb.guards_intact() || !dvb.guards_intact())
        problem(name, "a write outside a buffer (guard changed)");
    auto check_coverage = [&](const char* what, const uint16_t* buf, size_t n, std::initializer_list<Layout> ls) {
        std::vector<char> expect(n, 0);
        for (const Layout& l : ls)
            for (int b = 0; b < B; ++b)
                for (int h = 0; h < H; ++h)
                    for (int i = 0; i < T; ++i)
                        for (int d = 0; d < kD; ++d) expect[l.offset + l.at(b, h, i, d)] = 1;
        size_t missing = 0, stray = 0;
        for (size_t i = 0; i < n; ++i) {
            const bool written = buf[i] != kSentinel16;
            missing += expect[i] && !written;
            stray += !expect[i] && written;
        }
        if (missing || stray) {
            char s[160];
            std::snprintf(s, sizeof s, "%s: %zu elements not written, %zu written outside the tensor", what, missing, stray);
            problem(name, s);
        }
    };
    check_coverage("O", ob.data(), o_elems, {lo});
    if (separate) {
        check_coverage("dQ", dqb.data(), qkv_elems, {lq});
        check_coverage("dK", dkb.data(), qkv_elems, {lk});
        check_coverage("dV", dvb.data(), qkv_elems, {lv});
    } else {
        check_coverage("dQ/dK/dV", dqkv.data(), qkv_elems, {lq, lk, lv});
    }
    for (size_t i = 0; i < rows; ++i)
        if (std::isnan(lse.data()[i]) || std::isnan(delta.data()[i])) {
            problem(name, "lse or delta not written (or NaN)");
            break;
        }

    const Reference r = reference(c, scale, q, k, v, d_o);
    Error eo, el, edq, edk, edv;
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h) {
            const int bh = b * H + h;
            for (int i = 0; i < T; ++i) {
                el.add(lse.data()[(size_t)bh * T + i], r.lse[bh][i]);
                for (int d = 0; d < kD; ++d) {
                    eo.add(widen(bf16, ob.data()[lo.at(b, h, i, d)]), r.o[bh][i * kD + d]);
                    edq.add(widen(bf16, dqp[lq.at(b, h, i, d)]), r.dq[bh][i * kD + d]);
                    edk.add(widen(bf16, dkp[lk.at(b, h, i, d)]), r.dk[bh][i * kD + d]);
                    edv.add(widen(bf16, dvp[lv.at(b, h, i, d)]), r.dv[bh][i * kD + d]);
                }
            }
        }
    const double tol_o = bf16 ? 2e-2 : 4e-3, tol_lse = 1e-5, tol_g = bf16 ? 5e-2 : 1e-2;
    Outcome out{eo.value(), el.value(), edq.value(), edk.value(), edv.value(), true};
    out.ok = out.o <= tol_o && out.lse <= tol_lse && out.dq <= tol_g && out.dk <= tol_g && out.dv <= tol_g;
    return out;
}

// The storage conversions the emulation provides, against independent oracles: every f16 bit
// pattern round-trips; float → f16 agrees with the compiler's _Float16 conversion (round to
// nearest even); float → bf16 is the nearer (ties to even) of the two bf16 values around it.
bool self_test_conversions() {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = dgs_f16_bits_to_float((uint16_t)h);
        if (std::isnan(f)) continue;
        if (dgs_float_to_f16_bits(f) != h) {
            std::printf("f16 round trip fails at %04x\n", h);
            return false;
        }
    }
    std::mt19937 rng(7);
    for (int n = 0; n < 2000000; ++n) {
        uint32_t x = rng();
        if (n % 4 == 0) x = (x & 0x8000ffffu) | ((uint32_t)(98 + rng() % 60) << 23);  // near f16's range
        if (n % 4 == 1) x = (x & ~0xfffu) | 0x1000u;                                     // f16 tie
        const float f = dgs_bits_to_float(x);
        if (std::isnan(f)) continue;
#if defined(__FLT16_MAX__)
        const _Float16 hf = (_Float16)f;
        uint16_t want16;
        std::memcpy(&want16, &hf, 2);
        if (dgs_float_to_f16_bits(f) != want16) {
            std::printf("float→f16 differs from _Float16 at %08x\n", x);
            return false;
        }
#endif
        const uint16_t got = dgs_float_to_bf16_bits(f);
        const uint32_t lo = x & 0xffff0000u, hi = lo + 0x10000u;
        if (std::isinf(dgs_bits_to_float(lo))) {
            if (got != (uint16_t)(lo >> 16)) return false;
            continue;
        }
        // The value above the largest finite bf16 is 2^128 (which rounds to inf).
        const double above = std::isinf(dgs_bits_to_float(hi)) ? std::copysign(std::ldexp(1.0, 128), f) : dgs_bits_to_float(hi);
        const double dl = std::fabs((double)f - dgs_bits_to_float(lo)), dh = std::fabs(above - f);
        const uint16_t want = dl < dh ? (uint16_t)(lo >> 16) : dh < dl ? (uint16_t)(hi >> 16) : ((lo >> 16) & 1 ? (uint16_t)(hi >> 16) : (uint16_t)(lo >> 16));
        if (got != want) {
            std::printf("float→bf16 wrong at %08x: got %04x want %04x\n", x, got, want);
            return false;
        }
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    if (!self_test_conversions()) {
        std::printf("FAIL: the emulation's 16-bit conversions\n");
        return 1;
    }
    std::vector<Case> cases;
    const int shapes[4][3] = {{1, 1, 1}, {1, 2, 63}, {2, 1, 65}, {1, 1, 130}};
    for (int bf16 = 0; bf16 < 2; ++bf16)
        for (int causal = 0; causal < 2; ++causal)
            for (const auto& s : shapes) {
                if (quick && s[2] != 65) continue;
                cases.push_back({s[0], s[1], s[2], (bool)causal, (bool)bf16, false});
            }
    // Q/K/V as views of one fused projection, O with padded rows.
    if (quick) {
        cases.push_back({1, 2, 70, true, false, true});
    } else {
        cases.push_back({2, 3, 70, true, false, true});
        cases.push_back({1, 2, 129, false, true, true});
    }

    std::printf("%-36s %10s %10s %10s %10s %10s\n", "case", "O", "lse", "dQ", "dK", "dV");
    std::printf("tolerance f16 / bf16:                %10s %10s %10s %10s %10s\n", "4e-3/2e-2", "1e-5", "1e-2/5e-2",
                "1e-2/5e-2", "1e-2/5e-2");
    uint64_t seed = 1;
    for (const Case& c : cases) {
        const auto start = std::chrono::steady_clock::now();
        const int before = failures;
        const Outcome r = run_case(c, seed++);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (!r.ok) ++failures;
        std::printf("%-36s %10.3e %10.3e %10.3e %10.3e %10.3e  %s  (%.1fs)\n", name_of(c).c_str(), r.o, r.lse, r.dq, r.dk,
                    r.dv, r.ok && failures == before ? "ok" : "FAIL", secs);
        std::fflush(stdout);
    }
    std::printf(failures ? "FAIL: %d problem(s)\n" : "all cases ok\n", failures);
    return failures ? 1 : 0;
}
