// Fused attention for head dimension 64, forward and backward, f16 and bf16 (FlashAttention-2's
// schedule, our code; docs/kernels.md):
//   forward:   S = scale · Q Kᵀ (keys after the query masked when causal), online softmax over
//              64-key tiles, O = P V; writes O and each row's log-sum-exp. The score matrix never
//              leaves the registers.
//   delta:     D = rowsum(dO ⊙ O), the softmax backward's row term.
//   dk_dv:     per 64-key tile, over the query tiles: P recomputed from the log-sum-exp,
//              dV += Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − D), dK += scale · dSᵀ Q.
//   dq:        per 64-query tile, over the key tiles: dQ += scale · dS K.
// Every product runs on tensor cores (mma.sync m16n8k16, f32 accumulation); P and dS are rounded
// to the storage type before they feed a product, as in FlashAttention-2. Each output element is
// written by exactly one thread after a fixed-order loop: no atomics, the same bits every run.
//
// A block is four warps, each owning 16 rows of its block's 64 (queries, or keys in dk_dv). The
// fragment layouts are PTX's for m16n8k16 (g = lane / 4, c = lane % 4):
//   A (16×16, row-major):  reg0 (g, 2c..2c+1), reg1 (g+8, 2c..), reg2 (g, 2c+8..), reg3 (g+8, 2c+8..)
//   B (16×8, column):      reg0 (k 2c..2c+1, n g), reg1 (k 2c+8..2c+9, n g)
//   C (16×8, f32):         c0,c1 (g, 2c..2c+1), c2,c3 (g+8, 2c..2c+1)
// so the C fragments of two adjacent 8-column tiles are exactly the A fragment of the next
// product over those 16 columns (P, dS never go through shared memory).
#include "dtype.cuh"

using namespace dgs;

namespace {

constexpr int kD = 64;        // head dimension
constexpr int kTile = 64;     // rows per block (queries or keys) and per inner tile
constexpr int kThreads = 128;  // four warps of 16 rows
constexpr int kRowPad = 8;    // shared rows of 72 elements: 144 bytes, so the fragment loads of one
                              // warp fall in different banks
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

}  // namespace

// Element strides of one tensor [batch, heads, t, 64] (the last dimension contiguous).
struct AttentionStrides {
    long long batch;
    long long head;
    long long row;
};

// The launch's arguments, passed by value; `AttentionArgs` in src/ops/attention/cuda.rs has the
// same fields in the same order. dQ, dK, dV use the strides of Q, K, V, and dO those of O; lse
// and delta are [batch, heads, t] f32. The forward ignores the backward's pointers.
struct AttentionArgs {
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
    AttentionStrides sq, sk, sv, so;
    int batch;
    int heads;
    int t;
    int causal;
    float scale;
    int reserved;
};
static_assert(sizeof(AttentionStrides) == 24, "AttentionStrides must match the Rust struct");
static_assert(sizeof(AttentionArgs) == kAttentionArgsBytes, "AttentionArgs must match the Rust struct");
static_assert(alignof(AttentionArgs) == kArgsAlign, "AttentionArgs must match the Rust struct");

namespace {

template <typename T> struct Mma;

template <> struct Mma<__half> {
    __device__ __forceinline__ static void run(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#ifdef DGS_HOST_EMULATION
        dgs_host_mma_f16(d, a, b0, b1);  // scripts/host-emulation
#else
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
    }
    __device__ __forceinline__ static unsigned pack(float lo, float hi) {
        const __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<const unsigned*>(&h);
    }
};

template <> struct Mma<__nv_bfloat16> {
    __device__ __forceinline__ static void run(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#ifdef DGS_HOST_EMULATION
        dgs_host_mma_bf16(d, a, b0, b1);  // scripts/host-emulation
#else
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
    }
    __device__ __forceinline__ static unsigned pack(float lo, float hi) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const unsigned*>(&h);
    }
};

// Two adjacent elements (the first at an even index) as one register.
template <typename T>
__device__ __forceinline__ unsigned pair(const T* p) {
    return *reinterpret_cast<const unsigned*>(p);
}

// Two elements from different rows as one register (`lo` in the low half).
template <typename T>
__device__ __forceinline__ unsigned pair_of(T lo, T hi) {
    return (unsigned)*reinterpret_cast<const unsigned short*>(&lo) |
           ((unsigned)*reinterpret_cast<const unsigned short*>(&hi) << 16);
}

template <typename T>
using Tile = T[kTile][kD + kRowPad];

// Rows row0 .. row0 + 63 of one head into shared memory, zeros past `t`, 16 bytes at a time.
template <typename T>
__device__ __forceinline__ void load_tile(Tile<T>& dst, const T* src, long long row_stride, int row0, int t) {
    constexpr int kVecs = kD / 8;  // 16-byte vectors per row
    for (int i = threadIdx.x; i < kTile * kVecs; i += kThreads) {
        const int r = i / kVecs, c = (i % kVecs) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (row0 + r < t) v = *reinterpret_cast<const uint4*>(src + (long long)(row0 + r) * row_stride + c);
        *reinterpret_cast<uint4*>(&dst[r][c]) = v;
    }
}

// The A fragments of a warp's 16 rows (row0 ..) of a [t, 64] head in global memory, zeros past t.
template <typename T>
__device__ __forceinline__ void load_rows_a(unsigned (&a)[4][4], const T* src, long long row_stride, int row0, int t) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int r0 = row0 + g, r1 = row0 + g + 8;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        const int col = 16 * kk + 2 * c;
        a[kk][0] = r0 < t ? pair(src + (long long)r0 * row_stride + col) : 0u;
        a[kk][1] = r1 < t ? pair(src + (long long)r1 * row_stride + col) : 0u;
        a[kk][2] = r0 < t ? pair(src + (long long)r0 * row_stride + col + 8) : 0u;
        a[kk][3] = r1 < t ? pair(src + (long long)r1 * row_stride + col + 8) : 0u;
    }
}

// acc[j] (16 rows × 8 columns j) = A (16 × 64, as fragments) · Bᵀ where B's rows are the 64 rows
// of `b` in shared memory: column n of tile j is row 8j + n of `b`.
template <typename T>
__device__ __forceinline__ void product_abt(float (&acc)[8][4], const unsigned (&a)[4][4], const Tile<T>& b) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
            Mma<T>::run(acc[j], a[kk], pair(&b[8 * j + g][16 * kk + 2 * c]), pair(&b[8 * j + g][16 * kk + 8 + 2 * c]));
    }
}

// acc[n] (16 rows × 8 of the 64 columns) += P (16 × 64, f32 C fragments, rounded here) · B where B
// is the 64 × 64 tile `b` in shared memory (rows = the contraction index).
template <typename T>
__device__ __forceinline__ void product_ab(float (&acc)[8][4], const float (&p)[8][4], const Tile<T>& b) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        const unsigned a[4] = {Mma<T>::pack(p[2 * kk][0], p[2 * kk][1]), Mma<T>::pack(p[2 * kk][2], p[2 * kk][3]),
                               Mma<T>::pack(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                               Mma<T>::pack(p[2 * kk + 1][2], p[2 * kk + 1][3])};
        const int k0 = 16 * kk + 2 * c;
#pragma unroll
        for (int n = 0; n < 8; ++n) {
            const int col = 8 * n + g;
            Mma<T>::run(acc[n], a, pair_of(b[k0][col], b[k0 + 1][col]), pair_of(b[k0 + 8][col], b[k0 + 9][col]));
        }
    }
}

// Whether element e (0..3) of C-fragment tile j of a warp is outside the attention pattern:
// row index `row0 + g (+8)`, column index `col0 + 8j + 2c (+1)`, with rows and columns being
// queries and keys (`keys_are_rows` swaps them, for the transposed products of dk_dv).
__device__ __forceinline__ bool masked(int row0, int col0, int j, int e, int t, bool causal, bool keys_are_rows) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int row = row0 + g + 8 * (e >> 1), col = col0 + 8 * j + 2 * c + (e & 1);
    const int query = keys_are_rows ? col : row, key = keys_are_rows ? row : col;
    return key >= t || query >= t || (causal && key > query);
}

// Store a warp's 16 × 64 f32 accumulators, times `scale`, as rows row0 .. of a head; rows past t
// are skipped.
template <typename T>
__device__ __forceinline__ void store_rows(T* dst, long long row_stride, int row0, int t, const float (&acc)[8][4],
                                           float scale0, float scale1) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
        const int col = 8 * n + 2 * c;
        if (row0 + g < t)
            *reinterpret_cast<unsigned*>(dst + (long long)(row0 + g) * row_stride + col) =
                Mma<T>::pack(acc[n][0] * scale0, acc[n][1] * scale0);
        if (row0 + g + 8 < t)
            *reinterpret_cast<unsigned*>(dst + (long long)(row0 + g + 8) * row_stride + col) =
                Mma<T>::pack(acc[n][2] * scale1, acc[n][3] * scale1);
    }
}

// The max (or sum) of the four threads that hold one row of a C fragment.
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <typename T>
__device__ __forceinline__ const T* head_of(const void* base, const AttentionStrides& s, int b, int h) {
    return static_cast<const T*>(base) + b * s.batch + h * s.head;
}
template <typename T>
__device__ __forceinline__ T* head_of_mut(void* base, const AttentionStrides& s, int b, int h) {
    return static_cast<T*>(base) + b * s.batch + h * s.head;
}

}  // namespace

template <typename T>
__device__ void forward_impl(const AttentionArgs& a) {
    __shared__ alignas(16) Tile<T> ks, vs;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
    const int b = blockIdx.z, h = blockIdx.y, t = a.t;
    const int q0 = blockIdx.x * kTile, row0 = q0 + 16 * warp;
    const T* k = head_of<T>(a.k, a.sk, b, h);
    const T* v = head_of<T>(a.v, a.sv, b, h);
    unsigned qa[4][4];
    load_rows_a(qa, head_of<T>(a.q, a.sq, b, h), a.sq.row, row0, t);
    const float score_scale = a.scale * kLog2e;  // scores in base 2
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    float acc[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[n][e] = 0.f;
    const int key_end = a.causal ? min(t, q0 + kTile) : t;
    for (int k0 = 0; k0 < key_end; k0 += kTile) {
        __syncthreads();  // every warp is done with the previous tiles
        load_tile(ks, k, a.sk.row, k0, t);
        load_tile(vs, v, a.sv.row, k0, t);
        __syncthreads();
        float s[8][4];
        product_abt(s, qa, ks);
        float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[j][e] = masked(row0, k0, j, e, t, a.causal, false) ? -INFINITY : s[j][e] * score_scale;
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[j][e]);
            }
        float base[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const float m_new = fmaxf(m[r], quad_max(tile_max[r]));
            base[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing live yet stays at 0
            const float alpha = exp2f(m[r] - base[r]);
            l[r] *= alpha;
#pragma unroll
            for (int n = 0; n < 8; ++n) {
                acc[n][2 * r] *= alpha;
                acc[n][2 * r + 1] *= alpha;
            }
            m[r] = m_new;
        }
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[j][e] = exp2f(s[j][e] - base[e >> 1]);
                l[e >> 1] += s[j][e];
            }
        product_ab(acc, s, vs);
    }
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] = quad_sum(l[r]);
        inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
    }
    store_rows(head_of_mut<T>(a.o, a.so, b, h), a.so.row, row0, t, acc, inv[0], inv[1]);
    if ((lane & 3) == 0) {
        float* lse = a.lse + ((long long)b * a.heads + h) * t;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = row0 + g + 8 * r;
            if (row < t) lse[row] = (m[r] + log2f(l[r])) * kLn2;
        }
    }
}

// D = rowsum(dO ⊙ O) in f32, one warp per row (two elements per lane).
template <typename T>
__device__ void delta_impl(const AttentionArgs& a) {
    const int lane = threadIdx.x & 31;
    const long long rows = (long long)a.batch * a.heads * a.t;
    for (long long r = (long long)blockIdx.x * (kThreads / 32) + (threadIdx.x >> 5); r < rows;
         r += (long long)gridDim.x * (kThreads / 32)) {
        const int i = (int)(r % a.t);
        const int h = (int)((r / a.t) % a.heads), b = (int)(r / ((long long)a.t * a.heads));
        const T* o = head_of<T>(a.o, a.so, b, h) + (long long)i * a.so.row;
        const T* g = head_of<T>(a.d_o, a.so, b, h) + (long long)i * a.so.row;
        float s = to_float(o[2 * lane]) * to_float(g[2 * lane]) + to_float(o[2 * lane + 1]) * to_float(g[2 * lane + 1]);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) a.delta[r] = s;
    }
}

// dK and dV for 64 keys per block (16 per warp), over every query tile that sees them.
template <typename T>
__device__ void dk_dv_impl(const AttentionArgs& a) {
    __shared__ alignas(16) Tile<T> qs, dos;
    __shared__ float lse2[kTile], delta[kTile];
    const int warp = threadIdx.x >> 5, c = threadIdx.x & 3;
    const int b = blockIdx.z, h = blockIdx.y, t = a.t;
    const int key0 = blockIdx.x * kTile, row0 = key0 + 16 * warp;
    const long long stats = ((long long)b * a.heads + h) * t;
    unsigned ka[4][4], va[4][4];
    load_rows_a(ka, head_of<T>(a.k, a.sk, b, h), a.sk.row, row0, t);
    load_rows_a(va, head_of<T>(a.v, a.sv, b, h), a.sv.row, row0, t);
    const T* q = head_of<T>(a.q, a.sq, b, h);
    const T* d_o = head_of<T>(a.d_o, a.so, b, h);
    const float score_scale = a.scale * kLog2e;
    float dk[8][4], dv[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
    for (int q0 = a.causal ? key0 : 0; q0 < t; q0 += kTile) {
        __syncthreads();
        load_tile(qs, q, a.sq.row, q0, t);
        load_tile(dos, d_o, a.so.row, q0, t);
        for (int i = threadIdx.x; i < kTile; i += kThreads) {
            const bool live = q0 + i < t;
            lse2[i] = live ? a.lse[stats + q0 + i] * kLog2e : INFINITY;
            delta[i] = live ? a.delta[stats + q0 + i] : 0.f;
        }
        __syncthreads();
        // Pᵀ: rows are this warp's keys, columns the tile's queries.
        float p[8][4];
        product_abt(p, ka, qs);
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = 8 * j + 2 * c + (e & 1);
                p[j][e] = masked(row0, q0, j, e, t, a.causal, true) ? 0.f : exp2f(p[j][e] * score_scale - lse2[col]);
            }
        product_ab(dv, p, dos);
        // dPᵀ = V dOᵀ, then dSᵀ = Pᵀ ⊙ (dPᵀ − D) in place.
        float ds[8][4];
        product_abt(ds, va, dos);
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) ds[j][e] = p[j][e] * (ds[j][e] - delta[8 * j + 2 * c + (e & 1)]);
        product_ab(dk, ds, qs);
    }
    store_rows(head_of_mut<T>(a.dv, a.sv, b, h), a.sv.row, row0, t, dv, 1.f, 1.f);
    store_rows(head_of_mut<T>(a.dk, a.sk, b, h), a.sk.row, row0, t, dk, a.scale, a.scale);
}

// dQ for 64 queries per block (16 per warp), over every key tile they see.
template <typename T>
__device__ void dq_impl(const AttentionArgs& a) {
    __shared__ alignas(16) Tile<T> ks, vs;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
    const int b = blockIdx.z, h = blockIdx.y, t = a.t;
    const int q0 = blockIdx.x * kTile, row0 = q0 + 16 * warp;
    const long long stats = ((long long)b * a.heads + h) * t;
    unsigned qa[4][4], doa[4][4];
    load_rows_a(qa, head_of<T>(a.q, a.sq, b, h), a.sq.row, row0, t);
    load_rows_a(doa, head_of<T>(a.d_o, a.so, b, h), a.so.row, row0, t);
    float lse2[2], delta[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = row0 + g + 8 * r;
        lse2[r] = row < t ? a.lse[stats + row] * kLog2e : INFINITY;
        delta[r] = row < t ? a.delta[stats + row] : 0.f;
    }
    const T* k = head_of<T>(a.k, a.sk, b, h);
    const T* v = head_of<T>(a.v, a.sv, b, h);
    const float score_scale = a.scale * kLog2e;
    float dq[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dq[n][e] = 0.f;
    const int key_end = a.causal ? min(t, q0 + kTile) : t;
    for (int k0 = 0; k0 < key_end; k0 += kTile) {
        __syncthreads();
        load_tile(ks, k, a.sk.row, k0, t);
        load_tile(vs, v, a.sv.row, k0, t);
        __syncthreads();
        float p[8][4], ds[8][4];
        product_abt(p, qa, ks);
        product_abt(ds, doa, vs);  // dP = dO Vᵀ
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float pe = masked(row0, k0, j, e, t, a.causal, false)
                                     ? 0.f
                                     : exp2f(p[j][e] * score_scale - lse2[e >> 1]);
                ds[j][e] = pe * (ds[j][e] - delta[e >> 1]);
            }
        product_ab(dq, ds, ks);
    }
    store_rows(head_of_mut<T>(a.dq, a.sq, b, h), a.sq.row, row0, t, dq, a.scale, a.scale);
}

#define STAMP_ATTENTION(T, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(kThreads) attention_forward_##S(AttentionArgs args) { \
        forward_impl<T>(args);                                                                         \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(kThreads) attention_delta_##S(AttentionArgs args) {   \
        delta_impl<T>(args);                                                                           \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(kThreads) attention_dk_dv_##S(AttentionArgs args) {   \
        dk_dv_impl<T>(args);                                                                           \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(kThreads) attention_dq_##S(AttentionArgs args) {      \
        dq_impl<T>(args);                                                                              \
    }
STAMP_ATTENTION(__half, f16)
STAMP_ATTENTION(__nv_bfloat16, bf16)
