// Runs kernels/dropout.cu on the CPU under the host emulation (cuda_host.h) and checks its output
// bit for bit against a reference computed here: element i of x (stream index e = start + i) is
// kept when (word[e mod 4] >> 8) >= threshold, word = Philox4x32-10(counter = (low32(e / 4),
// high32(e / 4), layer << 2 | projection, step), key = (seed low, seed high)); kept → x ·
// kept_scale (an f32 product, rounded to the storage type), dropped → +0. threshold = ⌈p · 2²⁴⌉
// and kept_scale = 1 / (1 − p) in f32, as src/ops/block/cuda/dropout.rs and
// src/ops/block/philox.rs compute them.
//
// The reference's Philox4x32-10 is written here from the Random123 definition (Salmon et al.,
// 2011: philox4x32round, philox4x32bumpkey), not taken from kernels/philox.cuh, and is checked
// first against Random123's known-answer vectors. The kernel runs as dropout.rs launches it: 256
// threads, grid min(ceil((ceil(n / 4) + 1) / 256), 65536); plus one launch per type with a
// single block, so the grid-stride loop runs several times, and one with n = 0 (which dropout.rs
// never launches; the kernel must write nothing), and one with p at an element's own word (kept
// exactly at the threshold). Outputs start as 0xff bytes (NaN) between guards of 0xff that must
// stay intact; x must stay unchanged. In accumulate mode (dropout_add) the output starts as random
// values; kept elements must become out + x · kept_scale (f32, rounded once), dropped ones keep
// their bits.
//
// Also pinned: for seed 7, step 3, layer 5, projection 1, p 0.8, start 0 the first 16 keep
// decisions are 0000000000110000, by the reference and by the kernel (the same string
// src/ops/block/philox.rs pins for the Rust CPU side).
//
// Usage: dropout_check [--quick]   (--quick: a few small cases, for the sanitizer builds)
// Exit status 0 when everything matches, 1 otherwise.
#include <algorithm>
#include <array>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "cuda_host.h"  // after the standard headers: it redefines alignas

namespace {

// `DropoutArgs` as src/ops/block/cuda/dropout.rs lays it out (repr(C)), not the kernel's own
// declaration: the layouts must agree for the launch to work.
struct HostArgs {
    const void* x;
    void* out;
    long long n;
    unsigned long long start;
    uint32_t key_lo, key_hi, layer_projection, step, threshold;
    float kept_scale;
    uint32_t accumulate, reserved;
};
static_assert(sizeof(HostArgs) == 64, "DROPOUT_ARGS_BYTES");
static_assert(alignof(HostArgs) == 8, "ARGS_ALIGN");

}  // namespace

extern "C" {
void dropout_f32(HostArgs);
void dropout_f16(HostArgs);
void dropout_bf16(HostArgs);
}

namespace {

constexpr int kThreads = 256;
constexpr long long kMaxBlocks = 65536;
constexpr size_t kGuardBytes = 1024;

// ---- the reference generator ----

using Words = std::array<uint32_t, 4>;

// Philox4x32 with R rounds, as Random123 defines it: a round maps (c0, c1, c2, c3) with key
// (k0, k1) to (hi(M1·c2) ^ c1 ^ k0, lo(M1·c2), hi(M0·c0) ^ c3 ^ k1, lo(M0·c0)); the key of round
// r (from 0) is the input key plus r Weyl increments (W0, W1), mod 2³².
Words philox_ref(Words ctr, uint32_t k0, uint32_t k1, int rounds = 10) {
    const uint64_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    const uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int r = 0; r < rounds; ++r) {
        const uint32_t rk0 = k0 + (uint32_t)r * W0, rk1 = k1 + (uint32_t)r * W1;
        const uint64_t p0 = M0 * ctr[0], p1 = M1 * ctr[2];
        ctr = Words{(uint32_t)(p1 >> 32) ^ ctr[1] ^ rk0, (uint32_t)p1, (uint32_t)(p0 >> 32) ^ ctr[3] ^ rk1, (uint32_t)p0};
    }
    return ctr;
}

struct Stream {
    uint64_t seed;
    uint32_t step, layer, projection;
    float p;
    uint32_t layer_projection() const { return layer << 2 | projection; }
    // ⌈p · 2²⁴⌉ with p widened exactly to double (philox.rs's MaskStream::new).
    uint32_t threshold() const { return (uint32_t)std::ceil((double)p * 16777216.0); }
    float kept_scale() const { return 1.0f / (1.0f - p); }  // f32, as dropout.rs
    bool keep(uint64_t e) const {
        const uint64_t q = e / 4;
        const Words w = philox_ref(Words{(uint32_t)q, (uint32_t)(q >> 32), layer_projection(), step}, (uint32_t)seed,
                                   (uint32_t)(seed >> 32));
        return (w[e % 4] >> 8) >= threshold();
    }
};

bool known_answers() {
    struct Kat {
        Words ctr;
        uint32_t k0, k1;
        Words want;
    };
    // Random123's kat_vectors for philox4x32_10.
    const Kat kats[] = {
        {{0, 0, 0, 0}, 0, 0, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{~0u, ~0u, ~0u, ~0u}, ~0u, ~0u, {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
         0xa4093822u,
         0x299f31d0u,
         {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
    };
    bool ok = true;
    for (const Kat& k : kats) {
        const Words got = philox_ref(k.ctr, k.k0, k.k1);
        if (got != k.want) {
            std::printf("Philox4x32-10 known answer wrong: counter %08x %08x %08x %08x key %08x %08x gives "
                        "%08x %08x %08x %08x\n",
                        k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.k0, k.k1, got[0], got[1], got[2], got[3]);
            ok = false;
        }
    }
    return ok;
}

// ---- storage types ----

enum Dt { F32, F16, BF16 };
const char* const kDtName[3] = {"f32", "f16", "bf16"};
size_t esize(Dt d) { return d == F32 ? 4 : 2; }
void (*kernel_of(Dt d))(HostArgs) { return d == F32 ? dropout_f32 : d == F16 ? dropout_f16 : dropout_bf16; }

// The storage bits of element i (f32 bits, or the 16-bit pattern) and their value.
uint32_t bits_at(Dt d, const unsigned char* p, size_t i) {
    if (d == F32) {
        uint32_t b;
        std::memcpy(&b, p + 4 * i, 4);
        return b;
    }
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    return h;
}
float value_of(Dt d, uint32_t bits) {
    return d == F32 ? dgs_bits_to_float(bits) : d == F16 ? dgs_f16_bits_to_float((uint16_t)bits)
                                                         : dgs_bf16_bits_to_float((uint16_t)bits);
}
uint32_t bits_of(Dt d, float v) {
    return d == F32 ? dgs_float_to_bits(v) : d == F16 ? dgs_float_to_f16_bits(v) : dgs_float_to_bf16_bits(v);
}
void put_bits(Dt d, unsigned char* p, size_t i, uint32_t bits) {
    if (d == F32) {
        std::memcpy(p + 4 * i, &bits, 4);
    } else {
        const uint16_t h = (uint16_t)bits;
        std::memcpy(p + 2 * i, &h, 2);
    }
}

// `n` elements between two guards, 64-byte aligned, all bytes 0xff (NaN in every type).
struct Buffer {
    Buffer(Dt d, size_t n) : bytes(n * esize(d)) {
        const size_t total = (bytes + 2 * kGuardBytes + 63) / 64 * 64;
        base = static_cast<unsigned char*>(std::aligned_alloc(64, total));
        std::memset(base, 0xff, total);
    }
    ~Buffer() { std::free(base); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    unsigned char* data() const { return base + kGuardBytes; }
    bool guards_intact() const {
        for (size_t i = 0; i < kGuardBytes; ++i)
            if (base[i] != 0xff || base[kGuardBytes + bytes + i] != 0xff) return false;
        return true;
    }
    std::vector<unsigned char> snapshot() const { return {base, base + bytes + 2 * kGuardBytes}; }
    bool same_as(const std::vector<unsigned char>& s) const { return std::memcmp(base, s.data(), s.size()) == 0; }
    size_t bytes;
    unsigned char* base;
};

unsigned grid_for(long long n) {  // dropout.rs: the quads x spans, at most ceil(n / 4) + 1
    const long long quads = (n + 3) / 4 + 1;
    return (unsigned)std::min((quads + kThreads - 1) / kThreads, kMaxBlocks);
}

HostArgs args_for(const Stream& s, const void* x, void* out, long long n, uint64_t start) {
    HostArgs a{};
    a.x = x;
    a.out = out;
    a.n = n;
    a.start = start;
    a.key_lo = (uint32_t)s.seed;
    a.key_hi = (uint32_t)(s.seed >> 32);
    a.layer_projection = s.layer_projection();
    a.step = s.step;
    a.threshold = s.threshold();
    a.kept_scale = s.kept_scale();
    return a;
}

int failures = 0;

void problem(const std::string& name, const std::string& what) {
    std::printf("  %s: %s\n", name.c_str(), what.c_str());
    ++failures;
}

struct Result {
    size_t mismatches = 0, kept = 0;
};

// One launch over x[0 .. n) at stream index `start`; `grid` 0: dropout.rs's.
Result run_case(Dt d, const Stream& s, long long n, uint64_t start, unsigned grid, std::mt19937_64& rng,
                const std::string& name, bool accumulate = false) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const size_t len = (size_t)std::max(n, 0LL);
    Buffer x(d, len), out(d, len);
    for (size_t i = 0; i < len; ++i) put_bits(d, x.data(), i, bits_of(d, 2.f * normal(rng)));
    if (accumulate)
        for (size_t i = 0; i < len; ++i) put_bits(d, out.data(), i, bits_of(d, 3.f * normal(rng)));
    const auto x0 = x.snapshot(), out0 = out.snapshot();
    HostArgs a = args_for(s, x.data(), out.data(), n, start);
    a.accumulate = accumulate ? 1 : 0;
    dgs_host_launch(kernel_of(d), dim3{grid ? grid : std::max(grid_for(n), 1u), 1, 1}, kThreads, a);
    if (!x.same_as(x0)) problem(name, "x changed (or a write into its guards)");
    if (!out.guards_intact()) problem(name, "a write outside the output (guard changed)");
    Result r;
    const float scale = s.kept_scale();
    for (size_t i = 0; i < len; ++i) {
        const bool keep = s.keep(start + i);
        r.kept += keep;
        const float xi = value_of(d, bits_at(d, x.data(), i));
        const uint32_t before = bits_at(d, out0.data() + kGuardBytes, i);
        const uint32_t want = !accumulate ? (keep ? bits_of(d, xi * scale) : bits_of(d, 0.f))
                                          : (keep ? bits_of(d, value_of(d, before) + xi * scale) : before);
        const uint32_t got = bits_at(d, out.data(), i);
        if (got != want) {
            if (r.mismatches < 3) {
                char m[160];
                std::snprintf(m, sizeof m, "element %zu (stream %llu, %s): got bits %08x, want %08x", i,
                              (unsigned long long)(start + i), keep ? "kept" : "dropped", got, want);
                problem(name, m);
            }
            ++r.mismatches;
        }
    }
    if (r.mismatches > 3) problem(name, std::to_string(r.mismatches) + " mismatching elements in all");
    return r;
}

// The pinned stream: seed 7, step 3, layer 5, projection 1, p 0.8, start 0.
bool pinned(std::mt19937_64& rng) {
    const Stream s{7, 3, 5, 1, 0.8f};
    const char* want = "0000000000110000";
    std::string ref;
    for (uint64_t e = 0; e < 16; ++e) ref += s.keep(e) ? '1' : '0';
    Buffer x(F32, 16), out(F32, 16);
    for (size_t i = 0; i < 16; ++i) put_bits(F32, x.data(), i, dgs_float_to_bits(1.f));
    dgs_host_launch(dropout_f32, dim3{grid_for(16), 1, 1}, kThreads, args_for(s, x.data(), out.data(), 16, 0));
    std::string kern;
    for (size_t i = 0; i < 16; ++i) kern += dgs_bits_to_float(bits_at(F32, out.data(), i)) != 0.f ? '1' : '0';
    std::printf("pinned stream (seed 7, step 3, layer 5, projection 1, p 0.8, start 0), first 16 keeps:\n"
                "  want %s  reference %s  kernel %s  %s\n",
                want, ref.c_str(), kern.c_str(), ref == want && kern == want ? "ok" : "FAIL");
    return ref == want && kern == want;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    if (!known_answers()) {
        std::printf("FAIL: the reference Philox4x32-10\n");
        return 1;
    }
    std::printf("reference Philox4x32-10: Random123 known answers ok\n");
    std::mt19937_64 rng(1);
    if (!pinned(rng)) ++failures;

    const std::vector<long long> ns = quick ? std::vector<long long>{7, 1029} : std::vector<long long>{1, 3, 4, 7, 4099};
    // 2^34 + 3: e / 4 needs the counter's high word.
    const std::vector<uint64_t> starts =
        quick ? std::vector<uint64_t>{5, (1ull << 34) + 3} : std::vector<uint64_t>{0, 1, 5, 123457, (1ull << 34) + 3};
    const std::vector<float> ps = quick ? std::vector<float>{0.1f} : std::vector<float>{0.f, 0.1f, 0.8f};

    std::printf("\nbit-for-bit against the reference; each cell: kept / n (mismatches are listed above the line that fails)\n");
    std::printf("%-30s", "case");
    for (long long n : ns) std::printf(" %11s", ("n=" + std::to_string(n)).c_str());
    std::printf("\n");
    uint32_t which = 0;
    for (int di = 0; di < 3; ++di)
        for (float p : ps)
            for (uint64_t start : starts) {
                const auto t = std::chrono::steady_clock::now();
                const int before = failures;
                // A different stream each line: seeds with both words non-zero, varied step/layer/projection.
                const Stream s{0x9e3779b97f4a7c15ull * (which + 1), 1000u + 7u * which, which % 24, which % 3, p};
                ++which;
                char label[64];
                std::snprintf(label, sizeof label, "%-4s p=%-3g start=%llu", kDtName[di], (double)p,
                              (unsigned long long)start);
                std::string cells;
                for (long long n : ns) {
                    const Result r = run_case((Dt)di, s, n, start, 0, rng, std::string(label) + " n=" + std::to_string(n));
                    char c[32];
                    std::snprintf(c, sizeof c, " %11s", (std::to_string(r.kept) + "/" + std::to_string(n)).c_str());
                    cells += c;
                }
                std::printf("%-30s%s  %s  (%.1fs)\n", label, cells.c_str(), failures == before ? "ok" : "FAIL",
                            seconds_since(t));
                std::fflush(stdout);
            }

    // Grid-stride (one block of 256 threads for ceil(n / 4) + 1 quads) and n = 0, per type.
    const long long n_stride = quick ? 1029 : 4099;
    for (int di = 0; di < 3; ++di) {
        const Stream s{0x0123456789abcdefull, 77, 11, 2, 0.1f};
        char label[64];
        std::snprintf(label, sizeof label, "%-4s p=0.1 start=5 n=%lld grid 1", kDtName[di], n_stride);
        const int before = failures;
        const Result r = run_case((Dt)di, s, n_stride, 5, 1, rng, label);
        std::printf("%-34s kept %zu/%lld  %s\n", label, r.kept, n_stride, failures == before ? "ok" : "FAIL");
        std::snprintf(label, sizeof label, "%-4s n=0 (grid 1)", kDtName[di]);
        const int before0 = failures;
        run_case((Dt)di, s, 0, 5, 1, rng, label);
        std::printf("%-34s %s\n", label, failures == before0 ? "ok" : "FAIL");
    }
    // Accumulate mode (dropout_add), per type, several grids' worth and a one-block grid.
    for (int di = 0; di < 3; ++di) {
        const Stream s{0x5555aaaa5555aaaaull + di, 9, 7, (uint32_t)di, 0.8f};
        for (unsigned grid : {0u, 1u}) {
            char label[64];
            std::snprintf(label, sizeof label, "%-4s accumulate p=0.8 start=3 n=%lld grid %s", kDtName[di],
                          n_stride, grid ? "1" : "dropout.rs's");
            const int before = failures;
            const Result r = run_case((Dt)di, s, n_stride, 3, grid, rng, label, true);
            std::printf("%-50s kept %zu/%lld  %s\n", label, r.kept, n_stride, failures == before ? "ok" : "FAIL");
        }
    }
    // The threshold itself: p = t · 2^-24 (exact in f32) makes the threshold t, the top 24 bits of
    // element 5's word, which must be kept (>=, not >); element 6 (another word) is decided as usual.
    for (int di = 0; di < 3; ++di) {
        Stream s{0xfedcba9876543210ull + di, 5, 3, 0, 0.f};
        const uint64_t q = 5 / 4;
        const uint32_t t = philox_ref(Words{(uint32_t)q, 0, s.layer_projection(), s.step}, (uint32_t)s.seed,
                                      (uint32_t)(s.seed >> 32))[5 % 4] >> 8;
        s.p = (float)std::ldexp((double)t, -24);
        char label[64];
        std::snprintf(label, sizeof label, "%-4s start=5 n=2, threshold = element 5's", kDtName[di]);
        const int before = failures;
        if (s.threshold() != t || !s.keep(5)) problem(label, "the boundary stream is not at the boundary");
        const Result r = run_case((Dt)di, s, 2, 5, 0, rng, label);
        std::printf("%-42s kept %zu/2  %s\n", label, r.kept, failures == before ? "ok" : "FAIL");
    }
    std::printf(failures ? "FAIL: %d problem(s)\n" : "all cases ok\n", failures);
    return failures ? 1 : 0;
}
