// Runs the gradient-surgery kernels on the CPU under the host emulation (cuda_host.h) and compares
// them, in f32, f16 and bf16, with float64 references computed here from the same rounded inputs
// (the formulas of src/surgery/reference.rs; PCGrad's solve as src/surgery/solve/pcgrad.rs):
//   rowwise.cu    dgs_rows_S: x' = x + c·min(a, 0), out = x' − (x'·ĥ) ĥ, ĥ = relu(h)/(‖relu(h)‖ + eps),
//                 in place; per-row coef = x'·ĥ and ‖relu(h)‖ when asked for. A row with relu(h) = 0
//                 is x' (untouched without a help term); NaN/inf rows poison as reference.rs says.
//   multi_dir.cu  project_rows_multi_S: each row off the span of its K ≤ 8 directions (after a
//                 transform), modified Gram–Schmidt twice, directions with remainder ≤ dep_tol·norm
//                 skipped; the kept counts must equal the reference's exactly; when every direction
//                 is kept, every float of the [grid][K + 1][dim] workspace must have been written
//                 (blocks run one after another here, so blocks sharing workspace cannot race as
//                 on a GPU: this shows such an overlap instead).
//   gram.cu       gram_partials_K_S per work item (tensor, LIST_ITEM-element slice), each item's
//                 K(K+1)/2 partial sums against the item's own float64 sums; gram_finish's K×K matrix
//                 against the whole lists' (and exactly symmetric).
//   combine.cu    combine_S: out = [w_out·t_out(out)] + Σ_k w_k·t_k(v_k) over tensor lists.
//   pcgrad.cu     pcgrad_solve: its weights bit for bit against the solve written here (the Rust
//                 solver's operations in the same order, SplitMix64 visiting order, checked against
//                 SplitMix64's known first outputs), on the pinned Gram matrices of tests/pcgrad.rs
//                 and on random ones; and the whole device PCGrad (Gram → solve → combine) against
//                 the literal sequential PCGrad in float64 (reference::pcgrad_sequential).
//
// The kernels run as the launch code runs them: src/surgery/cuda/rowwise.rs (grid min(rows, 2^20),
// threads row_threads::<T>(dim)), multi_dir.rs (grid min(rows, 4096), threads row_threads::<f32>,
// a workspace of grid × (K + 1) × dim floats), tensor_list.rs / gram.rs / combine.rs / pcgrad.rs
// (the same ListTable the Rust side uploads: addresses operand-major, lengths, a work map of
// LIST_ITEM-element items; one 256-thread block per item; gram_finish and the solve as one block of
// 256 and 32 threads). Plus a few launches with a smaller grid than that, so the grid-stride loops
// (which real launches reach only past 2^20 rows, 4096 rows or 2^31 items) run more than once.
// Edge cases the launch code lets through: zero-length tensors in a list, lists with no work item
// at all (only gram_finish runs: zeros), K = 0 for combine (out overwritten with zeros, or scaled
// in place) and for the solve (writes nothing); rows = 0 is never launched. Lengths are chosen so
// vector tails, items of one element and tensors spanning three items all occur, and some
// tensors start one element past a 16-byte boundary (the kernels' scalar paths).
//
// Every buffer lies between guards that must stay intact: 0xff bytes (NaN in every type) around
// what the kernel only reads or only writes, finite values around what it updates in place (a
// read-modify-write of NaN would leave NaN unchanged). Outputs start as 0xff bytes, so an element
// not written fails the comparison; inputs (and the ListTables) must stay unchanged.
//
// Tolerance (src/surgery/compare.rs, per value): |got − ref| ≤ floor + atol·scale + rtol·|ref|,
// scale the sum of the magnitudes of the terms the reference added (as reference.rs computes it),
// atol = 4e-6 (f32 arithmetic; 8× for the PCGrad pipeline, as verify.rs's pcgrad_tolerance),
// rtol = 2^-22 (f32), 4.9e-4 (f16), 3.91e-3 (bf16) of the storage type the value lands in, floor
// its subnormal spacing. NaN must meet NaN and an infinity the same infinity. The tables show the
// worst |got − ref| / bound: ≤ 1 passes.
//
// Usage: surgery_check [--quick]   (--quick: a few small cases, for the sanitizer builds)
// Exit status 0 when every case is within tolerance and every buffer check holds, 1 otherwise.
#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_host.h"       // after the standard headers: it redefines alignas
#include "dgs_contract.cuh"  // generated from src/surgery/contract.rs: LIST_ITEM, K limits, codes, sizes
#include "list_table.h"

namespace {

// The argument structs as src/surgery/cuda/{rowwise,multi_dir}.rs lay them out (repr(C), device
// addresses as u64; the list table's is in list_table.h), not the kernels' own declarations: the
// layouts must agree for the launch to work.
struct RowwiseArgs {
    void* x;
    const void* harm;
    const void* help;
    float* coef;
    float* harm_norm;
    long long rows;
    int dim;
    int has_help;
    float help_coef;
    float eps;
};
static_assert(sizeof(RowwiseArgs) == dgs::kRowwiseArgsBytes, "ROWWISE_ARGS_BYTES");
static_assert(alignof(RowwiseArgs) == dgs::kArgsAlign, "ARGS_ALIGN");

struct MultiDirArgs {
    void* x;
    const void* directions[dgs::kMaxDirections];
    float* workspace;
    unsigned char* kept;
    long long rows;
    int dim;
    int k;
    int transform;
    float dep_tol;
};
static_assert(sizeof(MultiDirArgs) == dgs::kMultiDirArgsBytes, "MULTI_DIR_ARGS_BYTES");
static_assert(alignof(MultiDirArgs) == dgs::kArgsAlign, "ARGS_ALIGN");


}  // namespace

extern "C" {
#define DGS_DECLARE(S)                                                                      \
    void dgs_rows_##S(RowwiseArgs);                                                         \
    void project_rows_multi_##S(MultiDirArgs);                                              \
    void combine_##S(ListTableArg, ListTableArg, int, unsigned, int, const float*);         \
    void gram_partials_1_##S(ListTableArg, unsigned, float*);                               \
    void gram_partials_2_##S(ListTableArg, unsigned, float*);                               \
    void gram_partials_3_##S(ListTableArg, unsigned, float*);                               \
    void gram_partials_4_##S(ListTableArg, unsigned, float*);                               \
    void gram_partials_5_##S(ListTableArg, unsigned, float*);                               \
    void gram_partials_6_##S(ListTableArg, unsigned, float*);                               \
    void gram_partials_7_##S(ListTableArg, unsigned, float*);                               \
    void gram_partials_8_##S(ListTableArg, unsigned, float*);
DGS_DECLARE(f32)
DGS_DECLARE(f16)
DGS_DECLARE(bf16)
#undef DGS_DECLARE
void gram_finish(const float*, int, int, float*);
void pcgrad_solve(const float*, int, unsigned long long, int, float*);
}

namespace {

constexpr long long kListItem = dgs::kListItem;
constexpr int kMaxK = dgs::kMaxOperands;
constexpr int kListThreads = 256;              // tensor_list.rs THREADS
constexpr long long kMaxRowBlocks = 1 << 20;   // rowwise.rs MAX_ROW_BLOCKS
constexpr long long kMaxMultiBlocks = 4096;    // multi_dir.rs MAX_BLOCKS
constexpr size_t kGuardBytes = 512;            // guard before and after every buffer
constexpr float kDefaultEps = 1e-6f;           // args::DEFAULT_EPS
constexpr float kDefaultDepTol = 1e-3f;        // args::DEFAULT_DEP_TOL
static_assert(kMaxK == 8 && dgs::kMaxDirections == 8, "gram_partials is declared for K = 1..8");

// ---- launches with several arguments: the emulation launches a kernel of one argument ----

template <class T>
struct Same {
    using type = T;
};
template <class... A>
struct Call {
    void (*f)(A...);
    std::tuple<A...> args;
};
template <class... A>
void run_call(Call<A...> c) {
    std::apply(c.f, c.args);
}
// `f<<<grid, threads>>>(args...)`, the arguments converted to the kernel's parameter types.
template <class... A>
void launch(void (*f)(A...), unsigned grid, int threads, typename Same<A>::type... args) {
    dgs_host_launch(run_call<A...>, dim3{grid, 1, 1}, threads, Call<A...>{f, std::tuple<A...>(args...)});
}

// ---- storage types ----

enum Dt { F32, F16, BF16 };
const char* const kDtName[3] = {"f32", "f16", "bf16"};
size_t esize(Dt d) { return d == F32 ? 4 : 2; }

using GramPartials = void (*)(ListTableArg, unsigned, float*);
struct Kernels {
    void (*rows)(RowwiseArgs);
    void (*multi)(MultiDirArgs);
    void (*combine)(ListTableArg, ListTableArg, int, unsigned, int, const float*);
    GramPartials gram[kMaxK];  // [K - 1]
};
Kernels kernels(Dt d) {
#define DGS_KERNELS(S)                                                                                  \
    Kernels{dgs_rows_##S, project_rows_multi_##S, combine_##S,                                          \
            {gram_partials_1_##S, gram_partials_2_##S, gram_partials_3_##S, gram_partials_4_##S,        \
             gram_partials_5_##S, gram_partials_6_##S, gram_partials_7_##S, gram_partials_8_##S}}
    return d == F32 ? DGS_KERNELS(f32) : d == F16 ? DGS_KERNELS(f16) : DGS_KERNELS(bf16);
#undef DGS_KERNELS
}

// The tolerance of src/surgery/compare.rs for values stored in `d` (see the top of the file).
struct Tolerance {
    double floor, atol, rtol;
};
Tolerance tolerance(Dt d, double atol_factor = 1.0) {
    const double atol = 4e-6 * atol_factor;
    if (d == F32) return {1e-44, atol, 2.0 * std::ldexp(1.0, -23)};
    if (d == F16) return {3e-8, atol, 4.9e-4};
    return {1e-40, atol, 3.91e-3};
}

// Worst |got − ref| / bound over the values compared; INFINITY for a NaN/inf mismatch.
struct Ratio {
    double worst = 0;
    size_t bad = 0;
    void one(double got, double ref, double scale, const Tolerance& t) {
        double r;
        if (std::isnan(got) || std::isnan(ref)) {
            r = std::isnan(got) && std::isnan(ref) ? 0 : INFINITY;
        } else if (std::isinf(got) || std::isinf(ref)) {
            r = got == ref ? 0 : INFINITY;
        } else {
            const double bound = t.floor + t.atol * scale + t.rtol * std::fabs(ref);
            r = std::fabs(got - ref) / bound;
        }
        if (!(r <= 1.0)) ++bad;
        worst = std::max(worst, r);
    }
    bool ok() const { return bad == 0; }
};

std::string ratio_text(const Ratio& r) {
    char s[32];
    std::snprintf(s, sizeof s, "%8.2e%s", r.worst, r.ok() ? " " : "!");
    return s;
}

// ---- buffers between guards ----

// Raw storage of `n` elements of `elem` bytes, starting `shift` elements past a 64-byte boundary,
// between guards. The guards are 0xff bytes, or (`pattern` given: a buffer updated in place) that
// element pattern repeated; the data starts as 0xff bytes.
struct Raw {
    Raw(size_t elem, size_t n, size_t shift = 0, const void* pattern = nullptr)
        : elem(elem), n(n), front(kGuardBytes + shift * elem), bytes(n * elem) {
        total = (front + bytes + kGuardBytes + 63) / 64 * 64;
        base = static_cast<unsigned char*>(std::aligned_alloc(64, total));
        std::memset(base, 0xff, total);
        if (pattern)
            for (size_t i = 0; i + elem <= total; i += elem) std::memcpy(base + i, pattern, elem);
        std::memset(base + front, 0xff, bytes);
        pristine.assign(base, base + total);
    }
    ~Raw() { std::free(base); }
    Raw(const Raw&) = delete;
    Raw& operator=(const Raw&) = delete;
    unsigned char* data() const { return base + front; }
    bool guards_intact() const {
        return std::memcmp(base, pristine.data(), front) == 0 &&
               std::memcmp(base + front + bytes, pristine.data() + front + bytes, total - front - bytes) == 0;
    }
    std::vector<unsigned char> snapshot() const { return {base, base + total}; }
    bool same_as(const std::vector<unsigned char>& s) const { return std::memcmp(base, s.data(), total) == 0; }
    size_t elem, n, front, bytes, total;
    unsigned char* base;
    std::vector<unsigned char> pristine;
};

// `n` values of storage type `d` (see Raw); `in_place`: finite guards, ≈ 1.236 in the type.
struct Buffer : Raw {
    Buffer(Dt d, size_t n, bool in_place = false, size_t shift = 0)
        : Raw(esize(d), n, shift, in_place ? pattern_of(d) : nullptr), d(d) {}
    static const void* pattern_of(Dt d) {
        static const uint32_t f32 = 0x3f9e3779u;
        static const uint16_t f16 = 0x3cf1u, bf16 = 0x3f9eu;
        return d == F32 ? (const void*)&f32 : d == F16 ? (const void*)&f16 : (const void*)&bf16;
    }
    double get(size_t i) const {
        const unsigned char* p = data() + i * elem;
        if (d == F32) {
            float f;
            std::memcpy(&f, p, 4);
            return f;
        }
        uint16_t h;
        std::memcpy(&h, p, 2);
        return d == F16 ? dgs_f16_bits_to_float(h) : dgs_bf16_bits_to_float(h);
    }
    uint32_t bits(size_t i) const {
        uint32_t b = 0;
        std::memcpy(&b, data() + i * elem, elem);
        return b;
    }
    // Stores v rounded to the type (through f32, as Element::from_f32); returns the stored value.
    double put(size_t i, double v) {
        unsigned char* p = data() + i * elem;
        const float f = (float)v;
        if (d == F32) {
            std::memcpy(p, &f, 4);
        } else {
            const uint16_t h = d == F16 ? dgs_float_to_f16_bits(f) : dgs_float_to_bf16_bits(f);
            std::memcpy(p, &h, 2);
        }
        return get(i);
    }
    float* f32() const { return reinterpret_cast<float*>(data()); }
    Dt d;
};

// A device table of plain values (the ListTable's arrays, the kept counts) between 0xff guards.
template <class E>
struct Table : Raw {
    explicit Table(const std::vector<E>& v) : Raw(sizeof(E), v.size()) {
        if (!v.empty()) std::memcpy(data(), v.data(), v.size() * sizeof(E));
    }
    explicit Table(size_t n) : Raw(sizeof(E), n) {}
    const E* ptr() const { return reinterpret_cast<const E*>(data()); }
    E* mut() { return reinterpret_cast<E*>(data()); }
};

int failures = 0;

void problem(const std::string& name, const std::string& what) {
    std::printf("  %s: %s\n", name.c_str(), what.c_str());
    ++failures;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// ---- transforms (dtype.cuh / transform.rs) ----

const int kTransforms[3] = {dgs::kIdentity, dgs::kRelu, dgs::kNegativePart};
const char* transform_name(int t) { return t == dgs::kRelu ? "relu" : t == dgs::kNegativePart ? "neg" : "id"; }
double apply(int t, double v) {
    if (t == dgs::kRelu) return v < 0 ? 0.0 : v;
    if (t == dgs::kNegativePart) return v > 0 ? 0.0 : v;
    return v;
}
// Transform codes packed TRANSFORM_BITS per operand, operand 0 lowest (tensor_list.rs).
unsigned pack(const std::vector<int>& t) {
    unsigned p = 0;
    for (size_t i = 0; i < t.size(); ++i) p |= (unsigned)t[i] << (dgs::kTransformBits * i);
    return p;
}

// launch.rs row_threads::<T>(dim): 16-byte vectors of T covering a row once, whole warps, 32..256.
int row_threads(size_t elem, long long dim) {
    const long long per_vec = 16 / (long long)elem;
    const long long vectors = std::max((dim + per_vec - 1) / per_vec, 1LL);
    return (int)std::clamp((vectors + 31) / 32 * 32, 32LL, 256LL);
}

// ============================== rowwise ==============================

struct RowCase {
    Dt d;
    int rows, dim;
    bool help, stats;
    float eps;
    unsigned grid;   // 0: as rowwise.rs launches (min(rows, 2^20))
    int shift;       // elements x starts past a 16-byte boundary (harm and help stay aligned)
    bool special;    // rows of zero, NaN and inf inputs (rows >= 6)
};

std::string row_name(const RowCase& c) {
    char s[96];
    std::snprintf(s, sizeof s, "%-4s %dx%d%s%s eps=%g%s%s%s", kDtName[c.d], c.rows, c.dim, c.help ? " help" : "",
                  c.stats ? " stats" : "", (double)c.eps, c.shift ? " x+1" : "", c.special ? " special" : "",
                  c.grid ? (" grid " + std::to_string(c.grid)).c_str() : "");
    return s;
}

struct RowOutcome {
    Ratio out, coef, norm;
};

RowOutcome run_rows(const RowCase& c, uint64_t seed) {
    const std::string name = "rowwise " + row_name(c);
    const size_t rows = c.rows, dim = c.dim, n = rows * dim;
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const float help_coef = c.help ? 0.3f : 0.f;

    Buffer x(c.d, n, true, c.shift), h(c.d, n), a(c.d, c.help ? n : 0);
    Buffer coef(F32, c.stats ? rows : 0), norm(F32, c.stats ? rows : 0);
    std::vector<double> X(n), H(n), A(n, 0.0);
    for (size_t i = 0; i < n; ++i) {
        X[i] = x.put(i, 1.5 * normal(rng));
        H[i] = h.put(i, normal(rng));
        if (c.help) A[i] = a.put(i, normal(rng));
    }
    if (c.special) {
        // row 1: relu(h) = 0 (with -0 and -inf): the row comes back as x'
        for (size_t j = 0; j < dim; ++j) H[dim + j] = h.put(dim + j, j == 0 ? -INFINITY : j == 1 ? -0.0 : -std::fabs(H[dim + j]));
        H[2 * dim + dim / 2] = h.put(2 * dim + dim / 2, NAN);  // row 2: NaN in h, the row NaN
        H[3 * dim + 1] = h.put(3 * dim + 1, INFINITY);         // row 3: +inf in h, the row NaN
        if (c.help) A[4 * dim + 2] = a.put(4 * dim + 2, INFINITY);  // row 4: min(+inf, 0) = 0, a normal row
        X[5 * dim + 3] = x.put(5 * dim + 3, INFINITY);         // row 5: inf in x
        H[5 * dim + 3] = h.put(5 * dim + 3, std::fabs(H[5 * dim + 3]) + 0.5);
    }
    const auto h0 = h.snapshot(), a0 = a.snapshot();

    RowwiseArgs args{};
    args.x = x.data();
    args.harm = h.data();
    args.help = c.help ? a.data() : nullptr;
    args.coef = c.stats ? coef.f32() : nullptr;
    args.harm_norm = c.stats ? norm.f32() : nullptr;
    args.rows = (long long)rows;
    args.dim = c.dim;
    args.has_help = c.help ? 1 : 0;
    args.help_coef = help_coef;
    args.eps = c.eps;
    const unsigned grid = c.grid ? c.grid : (unsigned)std::min((long long)rows, kMaxRowBlocks);
    launch(kernels(c.d).rows, grid, row_threads(esize(c.d), dim), args);

    if (!h.same_as(h0) || !a.same_as(a0)) problem(name, "harm or help changed (or a write into its guards)");
    if (!x.guards_intact() || !coef.guards_intact() || !norm.guards_intact())
        problem(name, "a write outside a buffer (guard changed)");

    // Reference (reference::dgs_rows).
    RowOutcome out;
    const Tolerance tol = tolerance(c.d), tol32 = tolerance(F32);
    const double eps = c.eps, cc = help_coef;
    for (size_t r = 0; r < rows; ++r) {
        std::vector<double> help(dim), xv(dim), hr(dim);
        double sq = 0;
        for (size_t j = 0; j < dim; ++j) {
            help[j] = cc * apply(dgs::kNegativePart, A[r * dim + j]);
            xv[j] = X[r * dim + j] + help[j];
            hr[j] = apply(dgs::kRelu, H[r * dim + j]);
            sq += hr[j] * hr[j];
        }
        const double nrm = std::sqrt(sq);
        double cf = 0, cf_scale = 0;
        std::vector<double> hhat(dim, 0.0);
        if (!(nrm == 0)) {
            for (size_t j = 0; j < dim; ++j) {
                hhat[j] = hr[j] / (nrm + eps);
                cf += xv[j] * hhat[j];
                cf_scale += std::fabs(xv[j] * hhat[j]);
            }
        }
        for (size_t j = 0; j < dim; ++j) {
            const double scale = std::fabs(X[r * dim + j]) + std::fabs(help[j]) + cf_scale * std::fabs(hhat[j]);
            out.out.one(x.get(r * dim + j), nrm == 0 ? xv[j] : xv[j] - cf * hhat[j], scale, tol);
        }
        if (c.stats) {
            out.coef.one(coef.get(r), cf, cf_scale, tol32);
            out.norm.one(norm.get(r), nrm, nrm, tol32);
        }
    }
    return out;
}

// ============================== multi_dir ==============================

struct MultiCase {
    Dt d;
    int rows, dim, k, transform;
    float dep_tol;
    unsigned grid;  // 0: as multi_dir.rs launches (min(rows, 4096))
    bool kept;      // pass a kept-count buffer
    bool special;   // row 1 dependent and zero directions, row 2 a NaN, row 3 an inf (k >= 5, rows >= 4)
};

std::string multi_name(const MultiCase& c) {
    char s[96];
    std::snprintf(s, sizeof s, "%-4s %dx%d K=%d %s tol=%g%s%s%s", kDtName[c.d], c.rows, c.dim, c.k,
                  transform_name(c.transform), (double)c.dep_tol, c.kept ? "" : " no-kept", c.special ? " special" : "",
                  c.grid ? (" grid " + std::to_string(c.grid)).c_str() : "");
    return s;
}

struct MultiOutcome {
    Ratio out;
    bool kept_ok = true;
    std::string kept_text;
};

MultiOutcome run_multi(const MultiCase& c, uint64_t seed) {
    const std::string name = "multi_dir " + multi_name(c);
    const size_t rows = c.rows, dim = c.dim, n = rows * dim, k = c.k;
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const unsigned grid = c.grid ? c.grid : (unsigned)std::min((long long)rows, kMaxMultiBlocks);

    Buffer x(c.d, n, true);
    std::vector<std::unique_ptr<Buffer>> dirs;
    std::vector<std::vector<double>> D(k, std::vector<double>(n));
    std::vector<double> X(n);
    for (size_t i = 0; i < n; ++i) X[i] = x.put(i, normal(rng));
    for (size_t j = 0; j < k; ++j) {
        dirs.push_back(std::make_unique<Buffer>(c.d, n));
        for (size_t i = 0; i < n; ++i) D[j][i] = dirs[j]->put(i, normal(rng));
    }
    if (c.special) {
        for (size_t i = dim; i < 2 * dim; ++i) {  // row 1: d2 = 2·d0, d3 = 0, d4 = d1 (exact in every type)
            D[2][i] = dirs[2]->put(i, 2 * D[0][i]);
            D[3][i] = dirs[3]->put(i, 0.0);
            D[4][i] = dirs[4]->put(i, D[1][i]);
        }
        D[1][2 * dim + 1] = dirs[1]->put(2 * dim + 1, NAN);      // row 2: a NaN: kept, the row NaN
        D[0][3 * dim + 2] = dirs[0]->put(3 * dim + 2, INFINITY); // row 3: +inf (0 after min(., 0))
    }
    std::vector<std::vector<unsigned char>> d0;
    for (auto& b : dirs) d0.push_back(b->snapshot());
    Buffer ws(F32, (size_t)grid * (k + 1) * dim);
    Table<unsigned char> kept(c.kept ? rows : 0);

    MultiDirArgs args{};
    args.x = x.data();
    for (size_t j = 0; j < k; ++j) args.directions[j] = dirs[j]->data();
    args.workspace = ws.f32();
    args.kept = c.kept ? kept.mut() : nullptr;
    args.rows = (long long)rows;
    args.dim = c.dim;
    args.k = c.k;
    args.transform = c.transform;
    args.dep_tol = c.dep_tol;
    launch(kernels(c.d).multi, grid, row_threads(4, dim), args);

    for (size_t j = 0; j < k; ++j)
        if (!dirs[j]->same_as(d0[j])) problem(name, "a direction changed (or a write into its guards)");
    if (!x.guards_intact() || !ws.guards_intact() || !kept.guards_intact())
        problem(name, "a write outside a buffer (guard changed)");

    // Reference (reference::project_rows_multi).
    MultiOutcome out;
    const Tolerance tol = tolerance(c.d);
    auto dot = [](const std::vector<double>& a, const std::vector<double>& b) {
        double s = 0;
        for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
        return s;
    };
    bool all_kept = true;
    for (size_t r = 0; r < rows; ++r) {
        std::vector<std::vector<double>> basis;
        for (size_t j = 0; j < k; ++j) {
            std::vector<double> u(dim);
            for (size_t i = 0; i < dim; ++i) u[i] = apply(c.transform, D[j][r * dim + i]);
            const double n0 = std::sqrt(dot(u, u));
            for (int pass = 0; pass < 2; ++pass)
                for (const auto& q : basis) {
                    const double s = dot(u, q);
                    for (size_t i = 0; i < dim; ++i) u[i] -= s * q[i];
                }
            const double nn = std::sqrt(dot(u, u));
            if (std::isfinite(n0) && std::isfinite(nn) && nn <= (double)c.dep_tol * n0) continue;
            for (double& v : u) v /= nn;
            basis.push_back(u);
        }
        std::vector<double> x0(X.begin() + r * dim, X.begin() + (r + 1) * dim), xv = x0;
        const double xnorm = std::sqrt(dot(x0, x0));
        for (const auto& q : basis) {
            const double s = dot(xv, q);
            for (size_t i = 0; i < dim; ++i) xv[i] -= s * q[i];
        }
        for (size_t i = 0; i < dim; ++i) {
            double spread = 0;
            for (const auto& q : basis) spread += std::fabs(q[i]);
            out.out.one(x.get(r * dim + i), xv[i], std::fabs(x0[i]) + xnorm * spread, tol);
        }
        all_kept = all_kept && basis.size() == k;
        if (c.kept) {
            const int got = kept.ptr()[r];
            out.kept_text += std::to_string(got);
            if (got != (int)basis.size()) {
                out.kept_ok = false;
                problem(name, "row " + std::to_string(r) + ": " + std::to_string(got) + " directions kept, the reference " +
                                  std::to_string(basis.size()));
            }
        }
    }
    // The workspace as MultiDirArgs lays it out, [grid][K + 1][dim]: when every row keeps all K
    // directions and every block has a row, each block fills its K basis slots and its row slot,
    // so no float of it may still hold the initial 0xff bytes. (Blocks run one after another here,
    // so blocks sharing workspace would not race as on a GPU; this shows the overlap instead.)
    if (k > 0 && all_kept && rows >= grid) {
        size_t untouched = 0;
        for (size_t i = 0; i < ws.n; ++i) untouched += ws.bits(i) == 0xffffffffu;
        if (untouched)
            problem(name, std::to_string(untouched) + " of " + std::to_string(ws.n) +
                              " workspace floats never written: the blocks' [K + 1][dim] slots overlap or are missed");
    }
    return out;
}

// ============================== tensor lists ==============================

// K operands, each a list of tensors of the given lengths, each tensor its own guarded buffer
// (so a read past a tensor meets NaN). `shift(t, k)`: elements tensor t of operand k starts past
// a 16-byte boundary.
struct Lists {
    Lists(Dt d, int k, const std::vector<size_t>& lens, bool in_place, const std::vector<std::vector<int>>& shift)
        : d(d), k(k), lens(lens) {
        for (int j = 0; j < k; ++j) {
            bufs.emplace_back();
            for (size_t t = 0; t < lens.size(); ++t)
                bufs[j].push_back(std::make_unique<Buffer>(d, lens[t], in_place, shift.empty() ? 0 : shift[j][t]));
        }
    }
    double put(int j, size_t t, size_t i, double v) { return bufs[j][t]->put(i, v); }
    double get(int j, size_t t, size_t i) const { return bufs[j][t]->get(i); }
    std::vector<unsigned long long> addresses() const {  // [k][n_tensors], operand-major
        std::vector<unsigned long long> a;
        for (int j = 0; j < k; ++j)
            for (const auto& b : bufs[j]) a.push_back((unsigned long long)(uintptr_t)b->data());
        return a;
    }
    std::vector<std::vector<std::vector<unsigned char>>> snapshot() const {
        std::vector<std::vector<std::vector<unsigned char>>> s(k);
        for (int j = 0; j < k; ++j)
            for (const auto& b : bufs[j]) s[j].push_back(b->snapshot());
        return s;
    }
    bool same_as(const std::vector<std::vector<std::vector<unsigned char>>>& s) const {
        for (int j = 0; j < k; ++j)
            for (size_t t = 0; t < lens.size(); ++t)
                if (!bufs[j][t]->same_as(s[j][t])) return false;
        return true;
    }
    bool guards_intact() const {
        for (int j = 0; j < k; ++j)
            for (const auto& b : bufs[j])
                if (!b->guards_intact()) return false;
        return true;
    }
    Dt d;
    int k;
    std::vector<size_t> lens;
    std::vector<std::vector<std::unique_ptr<Buffer>>> bufs;  // [k][n_tensors]
};

// The ListTable tensor_list.rs's upload_table builds: the addresses, the lengths and the work map
// (tensor, start) of every LIST_ITEM-element slice, in tensor order; an empty array is padded
// with one unused entry (device allocations may not be empty).
struct ListTable {
    ListTable(const std::vector<unsigned long long>& addresses, const std::vector<size_t>& lens) {
        std::vector<long long> l;
        for (size_t t = 0; t < lens.size(); ++t) {
            l.push_back((long long)lens[t]);
            for (size_t start = 0; start < lens[t]; start += kListItem) {
                item_tensor.push_back((int)t);
                item_start.push_back((long long)start);
            }
        }
        auto pad = [](auto v) {
            if (v.empty()) v.resize(1);
            return v;
        };
        ptrs = std::make_unique<Table<unsigned long long>>(pad(addresses));
        lens_d = std::make_unique<Table<long long>>(pad(l));
        it_d = std::make_unique<Table<int>>(pad(item_tensor));
        is_d = std::make_unique<Table<long long>>(pad(item_start));
        arg = ListTableArg{ptrs->ptr(), lens_d->ptr(), it_d->ptr(), is_d->ptr(), (int)lens.size(), (int)item_tensor.size()};
        snaps = {ptrs->snapshot(), lens_d->snapshot(), it_d->snapshot(), is_d->snapshot()};
    }
    bool unchanged() const {
        return ptrs->same_as(snaps[0]) && lens_d->same_as(snaps[1]) && it_d->same_as(snaps[2]) && is_d->same_as(snaps[3]);
    }
    size_t n_items() const { return item_tensor.size(); }
    std::vector<int> item_tensor;
    std::vector<long long> item_start;
    std::unique_ptr<Table<unsigned long long>> ptrs;
    std::unique_ptr<Table<long long>> lens_d;
    std::unique_ptr<Table<int>> it_d;
    std::unique_ptr<Table<long long>> is_d;
    ListTableArg arg;
    std::vector<std::vector<unsigned char>> snaps;
};

std::string lens_text(const std::vector<size_t>& lens) {
    std::string s = "[";
    for (size_t i = 0; i < lens.size(); ++i) s += (i ? "," : "") + std::to_string(lens[i]);
    return s + "]";
}

// Misaligned starts: for odd tensors the last operand starts one element past a 16-byte boundary,
// so even tensors take the vector path and odd ones the scalar path.
std::vector<std::vector<int>> shifts(int k, size_t n_tensors, bool misalign) {
    std::vector<std::vector<int>> s(k, std::vector<int>(n_tensors, 0));
    if (misalign && k > 0)
        for (size_t t = 1; t < n_tensors; t += 2) s[k - 1][t] = 1;
    return s;
}

// ============================== gram ==============================

struct GramCase {
    Dt d;
    int k;
    std::vector<size_t> lens;
    bool misalign;
    unsigned grid;  // 0: as gram.rs launches (one block per item)
};

std::string gram_name(const GramCase& c) {
    char s[128];
    std::snprintf(s, sizeof s, "%-4s K=%d %s%s%s", kDtName[c.d], c.k, lens_text(c.lens).c_str(), c.misalign ? " misaligned" : "",
                  c.grid ? (" grid " + std::to_string(c.grid)).c_str() : "");
    return s;
}

struct GramOutcome {
    Ratio partials, gram;
    size_t items = 0;
};

// The Gram pass of gram.rs on `lists` with `transforms`: partials then gram_finish. Checks the
// partials of every item and the matrix against float64; returns the matrix in `gram_out`.
GramOutcome gram_pass(const std::string& name, const Lists& lists, const std::vector<int>& transforms, unsigned grid_override,
                      std::vector<float>* gram_out = nullptr) {
    const int k = lists.k, P = k * (k + 1) / 2;
    ListTable table(lists.addresses(), lists.lens);
    const size_t n_items = table.n_items();
    const auto s0 = lists.snapshot();
    Buffer partials(F32, std::max<size_t>(n_items * P, 1)), gram(F32, (size_t)k * k);
    if (n_items > 0) {
        const unsigned grid = grid_override ? grid_override : (unsigned)n_items;
        launch(kernels(lists.d).gram[k - 1], grid, kListThreads, table.arg, pack(transforms), partials.f32());
    }
    launch(gram_finish, 1, kListThreads, (const float*)partials.f32(), (int)n_items, k, gram.f32());
    if (!lists.same_as(s0) || !table.unchanged()) problem(name, "an operand or the table changed (or a guard)");
    if (!partials.guards_intact() || !gram.guards_intact()) problem(name, "a write outside partials or gram (guard changed)");

    GramOutcome out;
    out.items = n_items;
    const Tolerance tol = tolerance(F32);
    std::vector<double> whole(k * k, 0.0), whole_scale(k * k, 0.0);
    for (size_t it = 0; it < n_items; ++it) {
        const int t = table.item_tensor[it];
        const size_t start = table.item_start[it], len = std::min<size_t>(lists.lens[t] - start, kListItem);
        std::vector<double> s(P, 0.0), m(P, 0.0);
        for (size_t i = start; i < start + len; ++i) {
            double v[kMaxK];
            for (int j = 0; j < k; ++j) v[j] = apply(transforms[j], lists.get(j, t, i));
            for (int a = 0, p = 0; a < k; ++a)
                for (int b = a; b < k; ++b, ++p) {
                    s[p] += v[a] * v[b];
                    m[p] += std::fabs(v[a] * v[b]);
                }
        }
        for (int a = 0, p = 0; a < k; ++a)
            for (int b = a; b < k; ++b, ++p) {
                out.partials.one(partials.get(it * P + p), s[p], m[p], tol);
                whole[a * k + b] += s[p];
                whole_scale[a * k + b] += m[p];
            }
    }
    for (int a = 0; a < k; ++a)
        for (int b = 0; b < k; ++b) {
            const int lo = std::min(a, b), hi = std::max(a, b);
            out.gram.one(gram.get(a * k + b), whole[lo * k + hi], whole_scale[lo * k + hi], tol);
            if (gram.bits(a * k + b) != gram.bits(b * k + a)) problem(name, "the Gram matrix is not symmetric");
        }
    if (gram_out) gram_out->assign(gram.f32(), gram.f32() + k * k);
    return out;
}

GramOutcome run_gram(const GramCase& c, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    Lists lists(c.d, c.k, c.lens, false, shifts(c.k, c.lens.size(), c.misalign));
    std::vector<int> transforms(c.k);
    for (int j = 0; j < c.k; ++j) {
        transforms[j] = kTransforms[j % 3];
        for (size_t t = 0; t < c.lens.size(); ++t)
            for (size_t i = 0; i < c.lens[t]; ++i) lists.put(j, t, i, normal(rng) + 0.25 * j);
    }
    return gram_pass("gram " + gram_name(c), lists, transforms, c.grid);
}

// ============================== combine ==============================

struct CombineCase {
    Dt d;
    int k;
    int out_transform;  // -1: out only written (combine's out_term None)
    std::vector<size_t> lens;
    bool misalign, special;
    unsigned grid;  // 0: as combine.rs launches (one block per item of out)
};

std::string combine_name(const CombineCase& c) {
    char s[128];
    std::snprintf(s, sizeof s, "%-4s K=%d out=%s %s%s%s%s", kDtName[c.d], c.k, c.out_transform < 0 ? "-" : transform_name(c.out_transform),
                  lens_text(c.lens).c_str(), c.misalign ? " misaligned" : "", c.special ? " special" : "",
                  c.grid ? (" grid " + std::to_string(c.grid)).c_str() : "");
    return s;
}

// combine.rs: `out` (one list, its table carrying the work map) ← [w_out·t_out(out)] +
// Σ_k w_k·t_k(in_k); not launched when out has no work item. Compares with reference::combine.
Ratio combine_pass(const std::string& name, Lists& out, int out_transform, const Lists& in, const std::vector<int>& transforms,
                   const std::vector<float>& weights_v, unsigned grid_override, double atol_factor = 1.0,
                   const std::vector<double>* want = nullptr, const std::vector<double>* want_scale = nullptr) {
    const int k = in.k;
    const bool has_out = out_transform >= 0;
    ListTable out_table(out.addresses(), out.lens), in_table(in.addresses(), k > 0 ? in.lens : std::vector<size_t>{});
    Buffer weights(F32, weights_v.size());
    for (size_t i = 0; i < weights_v.size(); ++i) weights.put(i, weights_v[i]);
    // The reference's inputs, read before the launch.
    std::vector<std::vector<double>> O(out.lens.size());
    for (size_t t = 0; t < out.lens.size(); ++t)
        for (size_t i = 0; i < out.lens[t]; ++i) O[t].push_back(has_out ? out.get(0, t, i) : 0.0);
    const auto in0 = in.snapshot();
    const auto w0 = weights.snapshot();
    if (out_table.n_items() > 0) {
        const unsigned grid = grid_override ? grid_override : (unsigned)out_table.n_items();
        launch(kernels(out.d).combine, grid, kListThreads, out_table.arg, in_table.arg, k, pack(transforms), out_transform,
               (const float*)weights.f32());
    }
    if (!in.same_as(in0) || !weights.same_as(w0) || !out_table.unchanged() || !in_table.unchanged())
        problem(name, "an operand, the weights or a table changed (or a guard)");
    if (!out.guards_intact()) problem(name, "a write outside an output tensor (guard changed)");

    Ratio r;
    const Tolerance tol = tolerance(out.d, atol_factor);
    size_t flat = 0;
    for (size_t t = 0; t < out.lens.size(); ++t)
        for (size_t i = 0; i < out.lens[t]; ++i, ++flat) {
            double v = has_out ? (double)weights_v[k] * apply(out_transform, O[t][i]) : 0.0;
            double m = std::fabs(v);
            for (int j = 0; j < k; ++j) {
                const double term = (double)weights_v[j] * apply(transforms[j], in.get(j, t, i));
                v += term;
                m += std::fabs(term);
            }
            if (want) {
                v = (*want)[flat];
                m = (*want_scale)[flat];
            }
            r.one(out.get(0, t, i), v, m, tol);
        }
    return r;
}

Ratio run_combine(const CombineCase& c, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uni(-2.0, 2.0);
    const bool has_out = c.out_transform >= 0;
    const size_t nt = c.lens.size();
    // out misaligned on tensors 1, 5, ...; the last operand on 3, 7, ...
    std::vector<std::vector<int>> out_shift(1, std::vector<int>(nt, 0)), in_shift(c.k, std::vector<int>(nt, 0));
    if (c.misalign)
        for (size_t t = 1; t < nt; t += 2) (t % 4 == 1 || c.k == 0 ? out_shift[0][t] : in_shift[c.k - 1][t]) = 1;
    Lists out(c.d, 1, c.lens, has_out, out_shift), in(c.d, c.k, c.lens, false, in_shift);
    std::vector<int> transforms(c.k);
    std::vector<float> w;
    for (int j = 0; j < c.k; ++j) {
        transforms[j] = kTransforms[j % 3];
        w.push_back(j == 1 ? 0.f : (float)uni(rng));  // operand 1 weighted 0: still multiplied
        for (size_t t = 0; t < nt; ++t)
            for (size_t i = 0; i < c.lens[t]; ++i) in.put(j, t, i, normal(rng));
    }
    if (has_out) {
        w.push_back(0.75f);
        for (size_t t = 0; t < nt; ++t)
            for (size_t i = 0; i < c.lens[t]; ++i) out.put(0, t, i, normal(rng));
    }
    if (c.special) {  // inf, -inf, NaN in the second tensor of 3+ elements, in operands 0 and 1 (weight 0) and out
        size_t sp = 1;
        while (c.lens.at(sp) < 3) ++sp;
        for (int j = 0; j < std::min(c.k, 2); ++j) {
            in.put(j, sp, 0, INFINITY);
            in.put(j, sp, 1, -INFINITY);
            in.put(j, sp, 2, NAN);
        }
        if (has_out) out.put(0, sp, 1, INFINITY);
    }
    return combine_pass("combine " + combine_name(c), out, c.out_transform, in, transforms, w, c.grid);
}

// ============================== PCGrad ==============================

// SplitMix64 as src/surgery/rng.rs: next, below(n) = high word of next · n.
struct SplitMix64 {
    uint64_t state;
    uint64_t next() {
        state += 0x9E3779B97F4A7C15ull;
        uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) { return (uint64_t)(((unsigned __int128)next() * n) >> 64); }
};

// solve::pcgrad_visit_order: the other tasks, Fisher–Yates with SplitMix64(seed ^ (task + 1)·C).
std::vector<int> visit_order(uint64_t seed, int tasks, int task) {
    std::vector<int> order;
    for (int j = 0; j < tasks; ++j)
        if (j != task) order.push_back(j);
    SplitMix64 rng{seed ^ ((uint64_t)(task + 1) * 0xD1B54A32D192ED03ull)};
    for (int i = (int)order.size() - 1; i >= 1; --i) std::swap(order[i], order[(size_t)rng.below((uint64_t)i + 1)]);
    return order;
}

// solve::pcgrad on a K×K f32 Gram matrix: coefficients in double, weights as f32.
std::vector<float> pcgrad_weights(const std::vector<float>& g, int k, uint64_t seed, bool mean) {
    std::vector<double> c(k * k, 0.0);
    for (int i = 0; i < k; ++i) {
        c[i * k + i] = 1.0;
        for (int j : visit_order(seed, k, i)) {
            double along = 0.0;
            for (int m = 0; m < k; ++m) along += c[i * k + m] * (double)g[m * k + j];
            const double norm_sq = g[j * k + j];
            if (along < 0.0 && norm_sq > 0.0) c[i * k + j] -= along / norm_sq;
        }
    }
    const double scale = mean ? 1.0 / k : 1.0;
    std::vector<float> w(k);
    for (int m = 0; m < k; ++m) {
        double s = 0.0;
        for (int i = 0; i < k; ++i) s += c[i * k + m];
        w[m] = (float)(s * scale);
    }
    return w;
}

// pcgrad_solve<<<1, 32>>> on `g`; the weights buffer holds max(k, 1) floats, starts as NaN, and
// must hold exactly `want` afterwards (k = 0: untouched).
bool solve_matches(const std::string& name, const std::vector<float>& g, int k, uint64_t seed, bool mean,
                   const std::vector<float>& want, std::vector<float>* got_out = nullptr) {
    Buffer gram(F32, g.size()), weights(F32, std::max(k, 1));
    for (size_t i = 0; i < g.size(); ++i) gram.put(i, g[i]);
    const auto g0 = gram.snapshot(), w0 = weights.snapshot();
    launch(pcgrad_solve, 1, 32, (const float*)gram.f32(), k, (unsigned long long)seed, mean ? 1 : 0, weights.f32());
    bool ok = gram.same_as(g0) && weights.guards_intact();
    if (!ok) problem(name, "the Gram matrix changed, or a write outside the weights");
    if (k == 0) {
        if (!weights.same_as(w0)) {
            problem(name, "K = 0 wrote weights");
            ok = false;
        }
        return ok;
    }
    for (int m = 0; m < k; ++m)
        if (weights.bits(m) != dgs_float_to_bits(want[m])) {
            char s[128];
            std::snprintf(s, sizeof s, "weight %d: got %.9g (%08x), want %.9g (%08x)", m, weights.get(m), weights.bits(m),
                          (double)want[m], dgs_float_to_bits(want[m]));
            problem(name, s);
            ok = false;
        }
    if (got_out) got_out->assign(weights.f32(), weights.f32() + k);
    return ok;
}

// SplitMix64's first outputs (seed 0, Vigna's splitmix64.c) and the solves tests/pcgrad.rs
// computes by hand; then random Gram matrices, K = 1..8.
bool pinned_solves(bool quick) {
    SplitMix64 s0{0};
    const uint64_t a = s0.next(), b = s0.next();
    bool ok = a == 0xE220A8397B1DCDAFull && b == 0x6E789E6AA1B965F4ull;
    std::printf("SplitMix64(0): %016llx %016llx  %s\n", (unsigned long long)a, (unsigned long long)b, ok ? "ok" : "FAIL");
    struct Pin {
        const char* what;
        std::vector<float> g;
        int k;
        uint64_t seed;
        bool mean;
        std::vector<float> want;
    };
    const Pin pins[] = {
        {"[[1,-1],[-1,2]] sum", {1, -1, -1, 2}, 2, 0, false, {2.0f, 1.5f}},
        {"[[1,-1],[-1,2]] mean", {1, -1, -1, 2}, 2, 0, true, {1.0f, 0.75f}},
        {"agreeing + zero task", {1, 0.5f, 0, 0.5f, 1, 0, 0, 0, 0}, 3, 3, false, {1, 1, 1}},
        {"K=0", {0}, 0, 5, true, {}},
    };
    for (const Pin& p : pins) {
        const std::vector<float> ref = pcgrad_weights(p.g, p.k, p.seed, p.mean);
        const bool r = ref == p.want && solve_matches(std::string("pcgrad_solve ") + p.what, p.g, p.k, p.seed, p.mean, p.want);
        if (ref != p.want) problem(std::string("pcgrad_solve ") + p.what, "the harness's solve misses the pinned weights");
        std::printf("pcgrad_solve %-24s %s\n", p.what, r ? "ok" : "FAIL");
        ok = ok && r;
    }
    // Random Gram matrices (of random vectors: symmetric, positive semi-definite, with conflicts).
    std::mt19937_64 rng(11);
    std::normal_distribution<double> normal(0.0, 1.0);
    int n = 0, good = 0;
    for (int k = 1; k <= kMaxK; ++k)
        for (int rep = 0; rep < (quick ? 1 : 3); ++rep) {
            const int dim = 6;
            std::vector<std::vector<double>> v(k, std::vector<double>(dim));
            for (auto& row : v)
                for (double& e : row) e = normal(rng);
            std::vector<float> g(k * k);
            for (int i = 0; i < k; ++i)
                for (int j = 0; j < k; ++j) {
                    double s = 0;
                    for (int d = 0; d < dim; ++d) s += v[i][d] * v[j][d];
                    g[i * k + j] = (float)s;
                }
            if (rep == 2) g[(k - 1) * k + (k - 1)] = 0.f;  // a zero task (its row and column left as they are)
            const uint64_t seed = rng();
            const bool mean = rep % 2 == 1;
            ++n;
            good += solve_matches("pcgrad_solve random K=" + std::to_string(k), g, k, seed, mean, pcgrad_weights(g, k, seed, mean));
        }
    std::printf("pcgrad_solve on %d random Gram matrices (K = 1..8%s): %d bit for bit  %s\n", n, quick ? "" : ", sum and mean", good,
                good == n ? "ok" : "FAIL");
    return ok && good == n;
}

struct PcCase {
    Dt d;
    int k;
    std::vector<size_t> lens;
    bool mean;
    uint64_t seed;
};

std::string pc_name(const PcCase& c) {
    char s[128];
    std::snprintf(s, sizeof s, "%-4s K=%d %s %s", kDtName[c.d], c.k, lens_text(c.lens).c_str(), c.mean ? "mean" : "sum");
    return s;
}

struct PcOutcome {
    Ratio gram, out;
    bool weights_ok = false;
};

// pcgrad.rs: Gram pass (identity transforms), pcgrad_solve, combine (out overwritten), against
// reference::pcgrad_sequential.
PcOutcome run_pcgrad(const PcCase& c, uint64_t seed) {
    const std::string name = "pcgrad " + pc_name(c);
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const int k = c.k;
    const size_t nt = c.lens.size();
    // Tasks g_i = s_i·b + noise: a shared direction b with signs that make some pairs conflict.
    const double share[kMaxK] = {1.0, -0.8, 0.6, -1.3, 0.9, -0.5, 1.1, -0.7};
    Lists tasks(c.d, k, c.lens, false, shifts(k, nt, true));
    Lists out(c.d, 1, c.lens, false, {});
    std::vector<std::vector<double>> b(nt);
    for (size_t t = 0; t < nt; ++t)
        for (size_t i = 0; i < c.lens[t]; ++i) b[t].push_back(normal(rng));
    std::vector<std::vector<double>> flat(k);
    for (int j = 0; j < k; ++j)
        for (size_t t = 0; t < nt; ++t)
            for (size_t i = 0; i < c.lens[t]; ++i) flat[j].push_back(tasks.put(j, t, i, share[j] * b[t][i] + 0.7 * normal(rng)));

    PcOutcome o;
    std::vector<float> g;
    const std::vector<int> identity(k, dgs::kIdentity);
    o.gram = gram_pass(name, tasks, identity, 0, &g).gram;
    std::vector<float> w;
    o.weights_ok = solve_matches(name, g, k, c.seed, c.mean, pcgrad_weights(g, k, c.seed, c.mean), &w);
    if (!o.weights_ok) return o;

    // reference::pcgrad_sequential on the flattened tasks, in float64.
    const size_t n = flat[0].size();
    std::vector<double> merged(n, 0.0), scale(n, 0.0);
    for (int i = 0; i < k; ++i) {
        std::vector<double> gi = flat[i];
        std::vector<std::pair<int, double>> used;
        for (int j : visit_order(c.seed, k, i)) {
            double along = 0, norm_sq = 0;
            for (size_t d = 0; d < n; ++d) {
                along += gi[d] * flat[j][d];
                norm_sq += flat[j][d] * flat[j][d];
            }
            if (along < 0.0 && norm_sq > 0.0) {
                const double cc = along / norm_sq;
                for (size_t d = 0; d < n; ++d) gi[d] -= cc * flat[j][d];
                used.push_back({j, cc});
            }
        }
        for (size_t d = 0; d < n; ++d) {
            merged[d] += gi[d];
            scale[d] += std::fabs(flat[i][d]);
            for (const auto& u : used) scale[d] += std::fabs(u.second * flat[u.first][d]);
        }
    }
    if (c.mean)
        for (size_t d = 0; d < n; ++d) {
            merged[d] /= k;
            scale[d] /= k;
        }
    o.out = combine_pass(name, out, -1, tasks, identity, w, 0, 8.0, &merged, &scale);
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    uint64_t seed = 1;
    const auto all = std::chrono::steady_clock::now();

    // ---- rowwise ----
    std::printf("rowwise (dgs_rows): max |got - ref| / bound (<= 1 passes)\n");
    std::printf("%-44s %9s %9s %9s\n", "case", "out", "coef", "norm");
    std::vector<RowCase> rc;
    for (int di = 0; di < 3; ++di) {
        const Dt d = (Dt)di;
        if (quick) {
            // (quick cases keep several warps and several reductions per block: the sanitizers'
            // view of the barriers in reduce.cuh needs both)
            rc.push_back({d, 6, 37, true, true, kDefaultEps, 0, 0, true});
            rc.push_back({d, 3, 300, true, true, kDefaultEps, 1, 0, false});  // one block, 3 rows
            continue;
        }
        rc.push_back({d, 3, 1, true, true, kDefaultEps, 0, 0, false});       // one element per row
        rc.push_back({d, 4, 7, false, true, kDefaultEps, 0, 0, false});      // scalar path, tails
        rc.push_back({d, 3, 64, true, true, kDefaultEps, 0, 0, false});      // vector path
        rc.push_back({d, 3, 64, true, false, 0.f, 0, 1, false});             // x misaligned: scalar path, eps 0
        rc.push_back({d, 2, 770, true, true, 0.5f, 0, 0, false});            // 770 % N != 0: scalar path, large eps
        rc.push_back({d, 3, 2056, false, true, kDefaultEps, 0, 0, false});   // 256 threads, several vectors each
        rc.push_back({d, 6, 37, true, true, kDefaultEps, 0, 0, true});       // zero / NaN / inf rows
        rc.push_back({d, 6, 40, false, true, 0.f, 0, 0, true});              // the same without help (and eps 0)
        rc.push_back({d, 5, 48, true, true, kDefaultEps, 2, 0, false});      // grid-stride: 2 blocks, 5 rows
    }
    for (const RowCase& c : rc) {
        const auto t = std::chrono::steady_clock::now();
        const int before = failures;
        const RowOutcome r = run_rows(c, seed++);
        const bool ok = r.out.ok() && r.coef.ok() && r.norm.ok();
        if (!ok) ++failures;
        std::printf("%-44s %s %s %s  %s  (%.1fs)\n", row_name(c).c_str(), ratio_text(r.out).c_str(),
                    c.stats ? ratio_text(r.coef).c_str() : "        - ", c.stats ? ratio_text(r.norm).c_str() : "        - ",
                    ok && failures == before ? "ok" : "FAIL", seconds_since(t));
        std::fflush(stdout);
    }

    // ---- multi_dir ----
    std::printf("\nmulti_dir (project_rows_multi): max |got - ref| / bound (<= 1 passes); kept counts per row, "
                "equal to the reference's\n");
    std::printf("%-44s %9s  %s\n", "case", "out", "kept");
    std::vector<MultiCase> mc;
    for (int di = 0; di < 3; ++di) {
        const Dt d = (Dt)di;
        if (quick) {
            mc.push_back({d, 4, 37, 5, dgs::kIdentity, kDefaultDepTol, 0, true, true});
            mc.push_back({d, 2, 130, 3, dgs::kRelu, kDefaultDepTol, 1, true, false});  // 2 warps, one block
            continue;
        }
        mc.push_back({d, 3, 1, 2, dgs::kIdentity, kDefaultDepTol, 0, true, false});       // dim 1: one kept
        mc.push_back({d, 3, 37, 3, dgs::kRelu, kDefaultDepTol, 0, true, false});
        mc.push_back({d, 2, 5, 8, dgs::kNegativePart, kDefaultDepTol, 0, true, false});   // K > dim
        mc.push_back({d, 2, 130, 8, dgs::kIdentity, kDefaultDepTol, 0, false, false});    // 64 threads
        mc.push_back({d, 2, 1100, 4, dgs::kRelu, 0.5f, 0, true, false});                  // 256 threads, loops
        mc.push_back({d, 4, 37, 6, dgs::kIdentity, kDefaultDepTol, 0, true, true});       // dependent, NaN, inf
        mc.push_back({d, 4, 37, 5, dgs::kNegativePart, kDefaultDepTol, 0, true, true});
        mc.push_back({d, 2, 9, 0, dgs::kIdentity, kDefaultDepTol, 0, true, false});       // K = 0: unchanged
        mc.push_back({d, 5, 33, 3, dgs::kIdentity, kDefaultDepTol, 2, true, false});      // grid-stride
    }
    for (const MultiCase& c : mc) {
        const auto t = std::chrono::steady_clock::now();
        const int before = failures;
        const MultiOutcome r = run_multi(c, seed++);
        const bool ok = r.out.ok() && r.kept_ok;
        if (!ok) ++failures;
        std::printf("%-44s %s  %-5s %s  (%.1fs)\n", multi_name(c).c_str(), ratio_text(r.out).c_str(),
                    c.kept ? r.kept_text.c_str() : "-", ok && failures == before ? "ok" : "FAIL", seconds_since(t));
        std::fflush(stdout);
    }

    // ---- tensor lists ----
    // 40003: three items, the last 7235 long (a vector tail); 16385: an item of one element;
    // 16384: exactly one item; 0: no item; 1, 3, 7, 777: tails and tiny tensors.
    const std::vector<size_t> big = {40003, 1, 3, 0, 16385, 7, 16384, 777};
    const std::vector<size_t> small = {300, 3, 0, 17, 1, 65};
    const std::vector<size_t> quick_lens = {16390, 3, 0, 9};

    std::printf("\ngram (gram_partials_K + gram_finish): max |got - ref| / bound (<= 1 passes), per-item partials and "
                "the K x K matrix; transforms id, relu, neg, id, ... per operand\n");
    std::printf("%-58s %5s %9s %9s\n", "case", "items", "partials", "gram");
    std::vector<GramCase> gc;
    for (int di = 0; di < 3; ++di) {
        const Dt d = (Dt)di;
        if (quick) {
            gc.push_back({d, 3, quick_lens, true, 2});  // 2 blocks for 4 items
            continue;
        }
        for (int k = 1; k <= kMaxK; ++k)  // every stamped K, each in one of the types
            if ((k - 1) % 3 == di) gc.push_back({d, k, small, k % 2 == 0, 0});
        gc.push_back({d, 3, big, true, 0});
        gc.push_back({d, d == F16 ? 8 : 5, big, false, 0});
        gc.push_back({d, 2, big, true, 3});       // grid-stride: 3 blocks for 10 items
        gc.push_back({d, 4, {0, 0}, false, 0});   // no work item: gram_finish alone, zeros
    }
    for (const GramCase& c : gc) {
        const auto t = std::chrono::steady_clock::now();
        const int before = failures;
        const GramOutcome r = run_gram(c, seed++);
        const bool ok = r.partials.ok() && r.gram.ok();
        if (!ok) ++failures;
        std::printf("%-58s %5zu %s %s  %s  (%.1fs)\n", gram_name(c).c_str(), r.items, r.items ? ratio_text(r.partials).c_str() : "        - ",
                    ratio_text(r.gram).c_str(), ok && failures == before ? "ok" : "FAIL", seconds_since(t));
        std::fflush(stdout);
    }

    std::printf("\ncombine: max |got - ref| / bound (<= 1 passes); transforms id, relu, neg, ... per operand, operand 1 "
                "weighted 0, out weighted 0.75 when read\n");
    std::printf("%-66s %9s\n", "case", "out");
    std::vector<CombineCase> cc;
    for (int di = 0; di < 3; ++di) {
        const Dt d = (Dt)di;
        if (quick) {
            cc.push_back({d, 3, dgs::kIdentity, quick_lens, true, true, 0});
            continue;
        }
        cc.push_back({d, 3, dgs::kIdentity, big, true, true, 0});         // in place
        cc.push_back({d, 8, -1, big, true, false, 0});                    // overwrite, K = 8
        cc.push_back({d, 2, dgs::kNegativePart, small, false, true, 0});  // in place through a transform
        cc.push_back({d, 0, dgs::kRelu, small, true, false, 0});          // K = 0: out ← 0.75·relu(out)
        cc.push_back({d, 0, -1, small, false, false, 0});                 // K = 0 overwrite: zeros
        cc.push_back({d, 1, -1, big, false, false, 3});                   // grid-stride: 3 blocks for 10 items
        cc.push_back({d, 2, -1, {0, 0}, false, false, 0});                // no work item: not launched
    }
    for (const CombineCase& c : cc) {
        const auto t = std::chrono::steady_clock::now();
        const int before = failures;
        const Ratio r = run_combine(c, seed++);
        if (!r.ok()) ++failures;
        std::printf("%-66s %s  %s  (%.1fs)\n", combine_name(c).c_str(), ratio_text(r).c_str(),
                    r.ok() && failures == before ? "ok" : "FAIL", seconds_since(t));
        std::fflush(stdout);
    }

    std::printf("\npcgrad_solve: weights bit for bit against the solve written here\n");
    if (!pinned_solves(quick)) ++failures;

    std::printf("\npcgrad (gram -> pcgrad_solve -> combine) vs sequential PCGrad in float64: max |got - ref| / bound "
                "(<= 1 passes; out with 8x atol, as verify.rs), weights bit for bit\n");
    std::printf("%-52s %9s %7s %9s\n", "case", "gram", "weights", "out");
    std::vector<PcCase> pc;
    for (int di = 0; di < 3; ++di) {
        const Dt d = (Dt)di;
        if (quick) {
            pc.push_back({d, 3, {300, 3, 0, 17}, false, 7});
            continue;
        }
        if (d == F32) {
            pc.push_back({d, 1, small, true, 5});   // one task: nothing to project
            pc.push_back({d, 8, small, false, 3});
        }
        pc.push_back({d, 2, small, false, 1});
        pc.push_back({d, 4, small, true, 2});
        pc.push_back({d, 3, big, di == 1, 4});
    }
    for (const PcCase& c : pc) {
        const auto t = std::chrono::steady_clock::now();
        const int before = failures;
        const PcOutcome r = run_pcgrad(c, seed++);
        const bool ok = r.gram.ok() && r.weights_ok && r.out.ok();
        if (!ok) ++failures;
        std::printf("%-52s %s %7s %s  %s  (%.1fs)\n", pc_name(c).c_str(), ratio_text(r.gram).c_str(), r.weights_ok ? "same" : "DIFFER",
                    r.weights_ok ? ratio_text(r.out).c_str() : "        - ", ok && failures == before ? "ok" : "FAIL", seconds_since(t));
        std::fflush(stdout);
    }

    std::printf("(%.1fs in all)\n", seconds_since(all));
    std::printf(failures ? "FAIL: %d problem(s)\n" : "all cases ok\n", failures);
    return failures ? 1 : 0;
}
