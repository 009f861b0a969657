// Sparse Clebsch-Gordan tensor-product kernels for equikit.tp (CPU, float and double).
//
// One 4-linear form per descriptor,
//
//     Phi(x1, x2, z, w) = sum_rows sum_paths sum_e c_e * W * x1[u, i_e] * x2[v, j_e] * z[., k_e]
//
// over the nonzero CG entries e = (i, j, k, c) of each path (c already holds the path's
// normalisation). The forward product is dPhi/dz, and every gradient is dPhi/d(another
// operand): a slot picks which operand is computed from the other three
// (0: z = output, 1: x1, 2: x2, 3: w), and one call computes any set of slots (a bit mask), so
// the backward of the product gets all its gradients in one pass over the rows. Because the derivative of slot s with respect to
// operand r, contracted with the incoming gradient, is slot r with operand s replaced by that
// gradient, this one kernel family serves the forward, the backward and every higher
// derivative (the Python side wires it into autograd).
//
// Modes per path: 0 = uvw (fully connected, W[u, v, w]: the sparse bilinear part T[k][u, v]
// first, then T times the weights, or x1 times the weights first, then the sparse sum with x2,
// whichever the plan found cheaper (F_ORD); with shared weights as a GEMM over 32 rows at a time),
// 1 = uvu (channelwise, W[u, v]), 2 = uuu (elementwise, W[u]). Per row, every operand is transposed into a buffer with
// layout [component][channel] per block (blocks of mul 1 are left as they are), so the inner
// loops run over contiguous channels and vectorise; rows are split over OpenMP threads.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <omp.h>
#include <sys/mman.h>

namespace {

enum { F_MODE, F_U, F_V, F_K, F_D1, F_D2, F_D3, F_OFF1, F_OFF2, F_OFFO, F_WOFF, F_E0, F_E1, F_ORD, F_SE0, F_SE1, F_N };

// Contraction orders of a shared-weight uvw path (F_ORD, chosen per path by the plan from the
// dimensions: _native.uvw_order). Bits 0-1: the forward order (0: output first, 1: x1 first,
// 2: x2 first); for the gradient mask g = (mask >> 1) & 7 (bit 0: x1, bit 1: x2, bit 2: weights
// wanted) the four bits at 2 + 4 g: O_SWAP runs the path with x1 and x2 exchanged (the "x2
// first" frame: U <-> V, the CG entries (j, i, k) from F_SE0..F_SE1, the weights permuted to
// [v][u][w]), the other three say which gradients of that frame leave the "output first" order
// (uvw_chunk has the math).
enum { O_X1_Q = 1, O_X2_Y = 2, O_W_Q = 4, O_SWAP = 8 };

// Saved Y (bit Y_SAVE of F_ORD, x1-first forward only): the forward keeps its Y[i, v, w] = sum_u
// x1[u, i] W[u, v, w] per row when the caller passes a buffer, and the backward then reads it
// for the x2 gradient instead of redoing that GEMM. With Y at hand the cheapest gradient orders
// can differ: for the wanted sets g with the x2 bit (2, 3, 6, 7 -> index 0..3) the four bits at
// Y_CODES + 4 index replace those of grad_order (O_X2_Y without O_SWAP where reading Y is
// cheaper, else the set's ordinary code, which reads no Y).
constexpr int Y_CODES = 34, Y_SAVE = 50;

inline bool saves_y(const int64_t* p) {
    return p[F_MODE] == 0 && p[F_WOFF] >= 0 && ((p[F_ORD] >> Y_SAVE) & 1) && (p[F_ORD] & 3) == 1;
}

// the gradient order of `mask`; with `y` (the call has the forward's saved Y) the saved-Y codes
inline int grad_order(const int64_t* p, int mask, bool y = false) {
    const int g = (mask >> 1) & 7;
    if (y && (g & 2) && saves_y(p)) return int((p[F_ORD] >> (Y_CODES + 4 * ((g & 1) | ((g >> 2) << 1)))) & 15);
    return int((p[F_ORD] >> (2 + 4 * g)) & 15);
}

struct Operand {
    const int64_t* blocks;  // (nblocks, 3): offset, mul, dim
    int64_t nblocks;
    int64_t dim;
};

// dst[i][u] = src[u, i] and back for a block of D components: with D known at compile time
// the inner loop unrolls into straight loads and stores (1.4-1.6x on the whole channelwise
// forward at L = 2-3 against a runtime D, kernel-level A/B)
template <int D, typename T>
inline void transpose(const T* __restrict src, T* __restrict dst, int64_t mul) {
    for (int64_t u = 0; u < mul; ++u)
        for (int i = 0; i < D; ++i) dst[i * mul + u] = src[u * D + i];
}

template <typename T>
void to_buffer(const T* row, T* buf, const Operand& op) {
    for (int64_t b = 0; b < op.nblocks; ++b) {
        const int64_t off = op.blocks[3 * b], mul = op.blocks[3 * b + 1], d = op.blocks[3 * b + 2];
        const T* src = row + off;
        T* dst = buf + off;
        if (mul == 1 || d == 1) {
            std::memcpy(dst, src, sizeof(T) * mul * d);
            continue;
        }
        switch (d) {
            case 3: transpose<3>(src, dst, mul); break;
            case 5: transpose<5>(src, dst, mul); break;
            case 7: transpose<7>(src, dst, mul); break;
            case 9: transpose<9>(src, dst, mul); break;
            case 11: transpose<11>(src, dst, mul); break;
            case 13: transpose<13>(src, dst, mul); break;
            default:
                for (int64_t u = 0; u < mul; ++u)
                    for (int64_t i = 0; i < d; ++i) dst[i * mul + u] = src[u * d + i];
        }
    }
}

template <int D, typename T>
inline void untranspose(const T* __restrict src, T* __restrict dst, int64_t mul) {
    for (int64_t u = 0; u < mul; ++u)
        for (int i = 0; i < D; ++i) dst[u * D + i] = src[i * mul + u];
}

template <typename T>
void from_buffer(const T* buf, T* row, const Operand& op) {
    for (int64_t b = 0; b < op.nblocks; ++b) {
        const int64_t off = op.blocks[3 * b], mul = op.blocks[3 * b + 1], d = op.blocks[3 * b + 2];
        const T* src = buf + off;
        T* dst = row + off;
        if (mul == 1 || d == 1) {
            std::memcpy(dst, src, sizeof(T) * mul * d);
            continue;
        }
        switch (d) {
            case 3: untranspose<3>(src, dst, mul); break;
            case 5: untranspose<5>(src, dst, mul); break;
            case 7: untranspose<7>(src, dst, mul); break;
            case 9: untranspose<9>(src, dst, mul); break;
            case 11: untranspose<11>(src, dst, mul); break;
            case 13: untranspose<13>(src, dst, mul); break;
            default:
                for (int64_t u = 0; u < mul; ++u)
                    for (int64_t i = 0; i < d; ++i) dst[u * d + i] = src[i * mul + u];
        }
    }
}

// y[0:n] += a * x[0:n]
template <typename T>
inline void axpy(int64_t n, T a, const T* __restrict x, T* __restrict y) {
#pragma omp simd
    for (int64_t u = 0; u < n; ++u) y[u] += a * x[u];
}

// s[0:n] = w[0:n] * x[0:n]
template <typename T>
inline void mul(int64_t n, const T* __restrict w, const T* __restrict x, T* __restrict s) {
#pragma omp simd
    for (int64_t u = 0; u < n; ++u) s[u] = w[u] * x[u];
}

template <typename T>
inline T dot(int64_t n, const T* __restrict x, const T* __restrict y) {
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t u = 0; u < n; ++u) acc += x[u] * y[u];
    return acc;
}

template <typename T>
struct Row {
    T* x1;  // [d1] transposed blocks
    T* x2;
    T* z;
    T* g1;  // outputs of slots 1, 2, 0 ([component][channel] like the operands; zeroed per row)
    T* g2;
    T* gz;
    const T* w;  // weights of the row (or shared), e3nn layout
    T* gw;       // weight gradient accumulator (slot 3)
    T* s;        // scratch, max(d1, d3) * max channels
    T* wv;       // scratch, max channels
    const T* wT; // shared uvw weights transposed per path ([w][u v]), for the gradients; or null
};

constexpr int64_t CHUNK = 32;  // rows per GEMM of the shared-weight uvw paths (uvw_chunk)

// channelwise: z[u, k] += sum_v W[u, v] sum_e c x1[u, i] x2[v, j] (the slot is a template
// argument, so the per-entry branches on it compile away)
template <int slot, typename T>
void path_uvu(const int64_t* p, const int32_t* ei, const T* ec, const Row<T>& r) {
    const int64_t U = p[F_U], V = p[F_V], d1 = p[F_D1], d3 = p[F_D3], woff = p[F_WOFF];
    const T* X = r.x1 + p[F_OFF1];
    const T* Y = r.x2 + p[F_OFF2];
    const T* Z = r.z + p[F_OFFO];
    T* GX = r.g1 + p[F_OFF1];
    T* GY = r.g2 + p[F_OFF2];
    T* GZ = r.gz + p[F_OFFO];
    for (int64_t v = 0; v < V; ++v) {
        const T* wv = nullptr;
        if (woff >= 0 && slot != 3) {
            for (int64_t u = 0; u < U; ++u) r.wv[u] = r.w[woff + u * V + v];
            wv = r.wv;
        }
        if (slot == 0 || slot == 2) {  // S[i] = W[:, v] * X[i]
            const T* S = X;
            if (wv) {
                for (int64_t i = 0; i < d1; ++i) mul(U, wv, X + i * U, r.s + i * U);
                S = r.s;
            }
            for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
                const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
                if (slot == 0)
                    axpy(U, ec[e] * Y[j * V + v], S + i * U, GZ + k * U);
                else
                    GY[j * V + v] += ec[e] * dot(U, S + i * U, Z + k * U);
            }
        } else if (slot == 1) {  // S[k] = W[:, v] * Z[k]
            const T* S = Z;
            if (wv) {
                for (int64_t k = 0; k < d3; ++k) mul(U, wv, Z + k * U, r.s + k * U);
                S = r.s;
            }
            for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
                const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
                axpy(U, ec[e] * Y[j * V + v], S + k * U, GX + i * U);
            }
        } else {  // slot 3: gw[u, v] += sum_e c x2[v, j] X[i][u] Z[k][u]
            T* acc = r.s;
            std::fill(acc, acc + U, T(0));
            for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
                const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
                const T t = ec[e] * Y[j * V + v];
                const T* a = X + i * U;
                const T* b = Z + k * U;
#pragma omp simd
                for (int64_t u = 0; u < U; ++u) acc[u] += t * a[u] * b[u];
            }
            for (int64_t u = 0; u < U; ++u) r.gw[woff + u * V + v] += acc[u];
        }
    }
}

// elementwise: z[u, k] += W[u] sum_e c x1[u, i] x2[u, j]
template <int slot, typename T>
void path_uuu(const int64_t* p, const int32_t* ei, const T* ec, const Row<T>& r) {
    const int64_t U = p[F_U], woff = p[F_WOFF];
    const T* X = r.x1 + p[F_OFF1];
    const T* Y = r.x2 + p[F_OFF2];
    const T* Z = r.z + p[F_OFFO];
    const T* wv = (woff >= 0 && slot != 3) ? r.w + woff : nullptr;
    if (slot == 3) {
        T* acc = r.s;
        std::fill(acc, acc + U, T(0));
        for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
            const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
            const T c = ec[e];
            const T *a = X + i * U, *b = Y + j * U, *g = Z + k * U;
#pragma omp simd
            for (int64_t u = 0; u < U; ++u) acc[u] += c * a[u] * b[u] * g[u];
        }
        for (int64_t u = 0; u < U; ++u) r.gw[woff + u] += acc[u];
        return;
    }
    // out[o] += c * W * A[a] * B[b] with (out, A, B) = (Z, X, Y), (X, Z, Y) or (Y, X, Z)
    for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
        const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
        const T c = ec[e];
        T* o;
        const T *a, *b;
        if (slot == 0) {
            o = r.gz + p[F_OFFO] + k * U; a = X + i * U; b = Y + j * U;
        } else if (slot == 1) {
            o = r.g1 + p[F_OFF1] + i * U; a = Z + k * U; b = Y + j * U;
        } else {
            o = r.g2 + p[F_OFF2] + j * U; a = X + i * U; b = Z + k * U;
        }
        if (wv) {
#pragma omp simd
            for (int64_t u = 0; u < U; ++u) o[u] += c * wv[u] * a[u] * b[u];
        } else {
#pragma omp simd
            for (int64_t u = 0; u < U; ++u) o[u] += c * a[u] * b[u];
        }
    }
}

// Z[k0 + kk][w0 + w] += sum_q A[k0 + kk][q] M[q][w0 + w] for kk < KB, w < CW: one register tile
// (KB x CW accumulators; each weight vector loaded is used KB times)
// (ACC false: Z = instead of +=, so the caller need not zero Z first)
template <int KB, bool ACC, typename T>
inline void gemm_tile(int64_t k0, int64_t w0, int64_t n, int64_t nq, const T* __restrict A, int64_t lda,
                      int64_t sq, const T* __restrict M, T* __restrict Z) {
    constexpr int64_t CW = 16;
    T acc[KB][CW] = {};
    const T* a = A + k0 * lda;
    for (int64_t q = 0; q < nq; ++q) {
        const T* m = M + q * n + w0;
        for (int64_t kk = 0; kk < KB; ++kk) {
            const T aq = a[kk * lda + q * sq];
#pragma omp simd
            for (int64_t w = 0; w < CW; ++w) acc[kk][w] += aq * m[w];
        }
    }
    for (int64_t kk = 0; kk < KB; ++kk)
        for (int64_t w = 0; w < CW; ++w) {
            if constexpr (ACC)
                Z[(k0 + kk) * n + w0 + w] += acc[kk][w];
            else
                Z[(k0 + kk) * n + w0 + w] = acc[kk][w];
        }
}

// Z[k][0:n] += sum_q A[k][q] M[q][0:n] for k < nk: a register-blocked micro GEMM over tiles of
// 16 output channels, 6 rows of A per tile (12 float accumulators and two weight vectors fill
// the 16 AVX registers; against 4 rows per tile, kernel-level A/B: fully connected forward
// 1.1x, backward 1.35x at C = 128, 1.0-1.1x at C = 32), then tiles of 4, 2, 1 rows for the
// rest; the last n % 16 columns by axpy.
// (A[k][q] at A[k lda + q sq]: sq = 1 row-major, lda = 1 and sq = the row length for A^T)
template <typename T, bool ACC = true>
void small_gemm(int64_t nk, int64_t n, int64_t nq, const T* __restrict A, int64_t lda, const T* __restrict M,
                T* __restrict Z, int64_t sq = 1) {
    constexpr int64_t CW = 16;
    const int64_t n_full = n / CW * CW;
    for (int64_t w0 = 0; w0 < n_full; w0 += CW) {
        int64_t k0 = 0;
        for (; k0 + 6 <= nk; k0 += 6) gemm_tile<6, ACC>(k0, w0, n, nq, A, lda, sq, M, Z);
        for (; k0 + 4 <= nk; k0 += 4) gemm_tile<4, ACC>(k0, w0, n, nq, A, lda, sq, M, Z);
        for (; k0 + 2 <= nk; k0 += 2) gemm_tile<2, ACC>(k0, w0, n, nq, A, lda, sq, M, Z);
        for (; k0 < nk; ++k0) gemm_tile<1, ACC>(k0, w0, n, nq, A, lda, sq, M, Z);
    }
    if (n_full < n)
        for (int64_t k = 0; k < nk; ++k) {
            if (!ACC) std::fill(Z + k * n + n_full, Z + (k + 1) * n, T(0));
            for (int64_t q = 0; q < nq; ++q)
                axpy(n - n_full, A[k * lda + q * sq], M + q * n + n_full, Z + k * n + n_full);
        }
}

// Z = A M (small_gemm without zeroing Z first: the register tiles store, the column tail is
// zeroed per row before its axpy)
template <typename T>
inline void small_gemm_set(int64_t nk, int64_t n, int64_t nq, const T* __restrict A, int64_t lda,
                           const T* __restrict M, T* __restrict Z) {
    small_gemm<T, false>(nk, n, nq, A, lda, M, Z);
}

// ---- fully connected paths with shared weights, R rows at a time ---------------------------
// The weight product of a uvw path is a GEMM over the rows of a chunk: the forward stacks the
// rows' bilinear parts A (R d3 x U V) and multiplies once by W (U V x Wo); the input gradients
// stack the incoming gradients (R d3 x Wo) and multiply once by W^T; the weight gradient adds
// A^T (U V x R d3) times them. Each weight is then loaded once per chunk instead of once per
// row, and the register-blocked GEMM has enough rows to fill its tiles.

// A[k][u V + v] = sum_e c x1[u, i] x2[v, j] for k < d3 (rows of A zeroed first)
template <typename T>
void uvw_bilinear(const int64_t* p, const int32_t* ei, const T* ec, const Row<T>& r, T* A) {
    const int64_t U = p[F_U], V = p[F_V], d3 = p[F_D3], UV = U * V;
    const T* X = r.x1 + p[F_OFF1];
    const T* Y = r.x2 + p[F_OFF2];
    T* Tm = V == 1 ? A : r.s;  // [k][v][u]
    std::fill(Tm, Tm + d3 * UV, T(0));
    for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
        const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
        for (int64_t v = 0; v < V; ++v) axpy(U, ec[e] * Y[j * V + v], X + i * U, Tm + (k * V + v) * U);
    }
    if (V != 1)
        for (int64_t k = 0; k < d3; ++k)
            for (int64_t u = 0; u < U; ++u)
                for (int64_t v = 0; v < V; ++v) A[k * UV + u * V + v] = Tm[(k * V + v) * U + u];
}

// slots 1 and / or 2 (mask bits 2, 4) from G[k][u V + v] = sum_w W[u, v, w] gz[w, k]
template <typename T>
void uvw_input_grad(int mask, const int64_t* p, const int32_t* ei, const T* ec, const Row<T>& r, const T* G) {
    const int64_t U = p[F_U], V = p[F_V], d3 = p[F_D3], UV = U * V;
    const T* X = r.x1 + p[F_OFF1];
    const T* Y = r.x2 + p[F_OFF2];
    T* GX = r.g1 + p[F_OFF1];
    T* GY = r.g2 + p[F_OFF2];
    const T* Tm = G;
    if (V != 1) {
        T* t = r.s;
        for (int64_t k = 0; k < d3; ++k)
            for (int64_t u = 0; u < U; ++u)
                for (int64_t v = 0; v < V; ++v) t[(k * V + v) * U + u] = G[k * UV + u * V + v];
        Tm = t;
    }
    const bool want1 = mask & 2, want2 = mask & 4;
    for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
        const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
        const T c = ec[e];
        for (int64_t v = 0; v < V; ++v) {
            const T* g = Tm + (k * V + v) * U;
            if (want1 && want2) {  // both in one sweep over g
                const T a = c * Y[j * V + v];
                const T* x = X + i * U;
                T* gx = GX + i * U;
                T acc = 0;
#pragma omp simd reduction(+ : acc)
                for (int64_t u = 0; u < U; ++u) {
                    gx[u] += a * g[u];
                    acc += g[u] * x[u];
                }
                GY[j * V + v] += c * acc;
            } else if (want1) {
                axpy(U, c * Y[j * V + v], g, GX + i * U);
            } else {
                GY[j * V + v] += c * dot(U, g, X + i * U);
            }
        }
    }
}

// fully connected, weights per row (or none): z[w, k] += sum_{u v} W[u, v, w] T[k][u, v] with
// T[k][u, v] = sum_e c x1[u, i] x2[v, j] (shared weights: uvw_chunk below)
template <typename T>
void path_uvw(int slot, const int64_t* p, const int32_t* ei, const T* ec, const Row<T>& r) {
    const int64_t U = p[F_U], V = p[F_V], Wo = p[F_K], d3 = p[F_D3], woff = p[F_WOFF];
    const int64_t UV = U * V, d3p = (d3 + 3) / 4 * 4;
    const T* Z = r.z + p[F_OFFO];
    T* GZ = r.gz + p[F_OFFO];
    const T* Wm = (woff >= 0 && slot != 3) ? r.w + woff : nullptr;
    T* A = r.s + d3p * UV;  // [d3][U V] (r.s itself: uvw_bilinear's [k][v][u])
    if (slot == 0 || slot == 3) {
        uvw_bilinear(p, ei, ec, r, A);
        if (slot == 0 && Wm) {
            small_gemm(d3, Wo, UV, A, UV, Wm, GZ);
        } else if (slot == 0) {
            for (int64_t k = 0; k < d3; ++k) {
                T t = 0;
                for (int64_t q = 0; q < UV; ++q) t += A[k * UV + q];
                for (int64_t w = 0; w < Wo; ++w) GZ[k * Wo + w] += t;
            }
        } else {  // gW[u, v, :] += sum_k T[k][u, v] z[:, k]: (U V x d3) @ (d3 x Wo)
            T* AT = A + d3p * UV;
            for (int64_t k = 0; k < d3; ++k)
                for (int64_t q = 0; q < UV; ++q) AT[q * d3 + k] = A[k * UV + q];
            small_gemm(UV, Wo, d3, AT, d3, Z, r.gw + woff);
        }
        return;
    }
    // slots 1, 2: G[k][u V + v] = sum_w W[u, v, w] gz[w, k]
    T* G = A;
    for (int64_t k = 0; k < d3; ++k)
        for (int64_t q = 0; q < UV; ++q) {
            G[k * UV + q] = 0;
            if (Wm) {
                G[k * UV + q] = dot(Wo, Wm + q * Wo, Z + k * Wo);
            } else {
                for (int64_t w = 0; w < Wo; ++w) G[k * UV + q] += Z[k * Wo + w];
            }
        }
    uvw_input_grad(1 << slot, p, ei, ec, r, G);
}

// ---- the "x1 first" orders of a shared-weight uvw path -------------------------------------
// Per path with W[u, v, w], CG entries (i, j, k, c), d1 = dim x1 block, d3 = dim output block:
//   forward  z[w, k] = sum c x2[v, j] Y[i, v, w],  Y[i, v, w] = sum_u x1[u, i] W[u, v, w]
//            (GEMM d1 U V Wo + sparse nnz V Wo; the output-first order: nnz U V + d3 U V Wo)
//   with the incoming gradient h[w, k] and Q[i, v, w] = sum c x2[v, j] h[w, k] (sparse nnz V Wo):
//   grad W   gW[u, v, w] = sum_i x1[u, i] Q[i, v, w]            (GEMM d1 U V Wo; else T^T h, d3)
//   grad x1  g1[u, i]    = sum_{v w} W[u, v, w] Q[i, v, w]      (GEMM d1 U V Wo; else via G, d3)
//   grad x2  g2[v, j]    = sum c Y[i, v, w] h[w, k]             (GEMM d1 U V Wo + nnz V Wo; else via G)
// where the output-first gradients share G[k, u, v] = sum_w W[u, v, w] h[w, k] (one GEMM d3 U V Wo
// for both input gradients). Over a chunk of R rows each GEMM is one matrix product with R d1
// rows (the rows' x1 blocks stacked: Xc [R d1][U]) against the shared weights.

// Xc[n d1 + i][u] = x1 of row n, block of the path ([i][u] in the row buffers)
template <typename T>
void uvw_stack_x1(const int64_t* p, const Row<T>* rs, int64_t R, T* Xc) {
    const int64_t n1 = p[F_D1] * p[F_U];
    for (int64_t n = 0; n < R; ++n) std::memcpy(Xc + n * n1, rs[n].x1 + p[F_OFF1], sizeof(T) * n1);
}

// z[k][w] += sum_e c x2[v, j] Y[i][v][w]   (Y of one row, [d1][V][Wo])
template <typename T>
void uvw_out_from_y(const int64_t* p, const int32_t* ei, const T* ec, const Row<T>& r, const T* Y) {
    const int64_t V = p[F_V], Wo = p[F_K];
    const T* X2 = r.x2 + p[F_OFF2];
    T* GZ = r.gz + p[F_OFFO];
    for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
        const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
        for (int64_t v = 0; v < V; ++v) axpy(Wo, ec[e] * X2[j * V + v], Y + (i * V + v) * Wo, GZ + k * Wo);
    }
}

// g2[v, j] += sum_e c <Y[i][v][:], h[k][:]>
template <typename T>
void uvw_x2_grad_from_y(const int64_t* p, const int32_t* ei, const T* ec, const Row<T>& r, const T* Y) {
    const int64_t V = p[F_V], Wo = p[F_K];
    const T* H = r.z + p[F_OFFO];
    T* GY = r.g2 + p[F_OFF2];
    for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
        const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
        for (int64_t v = 0; v < V; ++v) GY[j * V + v] += ec[e] * dot(Wo, Y + (i * V + v) * Wo, H + k * Wo);
    }
}

// Q[i][v][w] = sum_e c x2[v, j] h[k][w]   (one row; Q zeroed first)
template <typename T>
void uvw_q(const int64_t* p, const int32_t* ei, const T* ec, const Row<T>& r, T* Q) {
    const int64_t V = p[F_V], Wo = p[F_K];
    const T* X2 = r.x2 + p[F_OFF2];
    const T* H = r.z + p[F_OFFO];
    std::fill(Q, Q + p[F_D1] * V * Wo, T(0));
    for (int64_t e = p[F_E0]; e < p[F_E1]; ++e) {
        const int64_t i = ei[3 * e], j = ei[3 * e + 1], k = ei[3 * e + 2];
        for (int64_t v = 0; v < V; ++v) axpy(Wo, ec[e] * X2[j * V + v], H + k * Wo, Q + (i * V + v) * Wo);
    }
}

// the chunk buffer of one path: M in uvw_chunk
inline int64_t uvw_chunk_numel(const int64_t* p, int64_t R) {
    const int64_t UV = p[F_U] * p[F_V], VW = p[F_V] * p[F_K], d1 = p[F_D1], d3 = p[F_D3];
    return R * d3 * (UV + p[F_K]) + d3 * UV + 2 * R * d1 * (VW + p[F_U]);
}

// one shared-weight uvw path over the rows rs[0:R] of a chunk, for every slot in `mask` (bit s
// = slot s): the forward x1 first (fwd_x1) or output first, the gradients in the orders `ob`
// (O_X1_Q | O_X2_Y | O_W_Q). Buffers: M, uvw_chunk_numel. Weights (each indexed from the
// path's weight offset): Wb as [u][v w] (e3nn layout), wT as [w][u v] (the output-first input
// gradients), wT1 as [v w][u] (the x1 gradient through Q; the same array as wT where V = 1); gw
// accumulates the weight gradient as [u][v w]. The "x2 first" orders are this function on the
// swapped frame (the caller swaps p, the rows and the weight layouts).
template <typename T>
void uvw_chunk(int mask, const int64_t* p, const int32_t* ei, const T* ec, Row<T>* rs, int64_t R, const T* Wb,
               const T* wT, const T* wT1, T* gw, T* M, bool fwd_x1, int ob, T* Ys = nullptr) {
    const int64_t U = p[F_U], UV = U * p[F_V], Wo = p[F_K], VW = p[F_V] * Wo, d1 = p[F_D1], d3 = p[F_D3];
    const int64_t woff = p[F_WOFF], m = R * d3, m1 = R * d1;
    if (mask & 1) {
        const T* W = Wb + woff;
        if (fwd_x1) {  // x1 first: Y = Xc W (R d1 x V Wo), then the sparse sum into z
            T* Xc = M;
            T* Y = Ys ? Ys : M + m1 * U;  // straight into the saved-Y buffer when there is one
            uvw_stack_x1(p, rs, R, Xc);
            small_gemm_set(m1, VW, U, Xc, U, W, Y);
            for (int64_t n = 0; n < R; ++n) uvw_out_from_y(p, ei, ec, rs[n], Y + n * d1 * VW);
        } else {  // output first: the bilinear parts A (R d3 x U V), then A W
            T* A = M;            // [R d3][U V]
            T* Zc = M + m * UV;  // [R d3][Wo]
            for (int64_t n = 0; n < R; ++n) uvw_bilinear(p, ei, ec, rs[n], A + n * d3 * UV);
            small_gemm_set(m, Wo, UV, A, UV, W, Zc);
            for (int64_t n = 0; n < R; ++n) {
                T* Z = rs[n].gz + p[F_OFFO];
                const T* src = Zc + n * d3 * Wo;
#pragma omp simd
                for (int64_t q = 0; q < d3 * Wo; ++q) Z[q] += src[q];
            }
        }
    }
    if (!(mask & 14)) return;
    const bool w_q = (mask & 8) && (ob & O_W_Q), x1_q = (mask & 2) && (ob & O_X1_Q);
    const bool x2_y = (mask & 4) && (ob & O_X2_Y), w_t = (mask & 8) && !w_q;
    const int via_g = (mask & 6) & ~((x1_q ? 2 : 0) | (x2_y ? 4 : 0));
    // output first: the chunk's incoming gradients Zc (R d3 x Wo) once for both GEMMs; the
    // weight gradient A^T Zc reads the rows' bilinear parts A (R d3 x U V) through strides (no
    // transposed copy); the input gradients share G = Zc W^T (in A's place once A is used)
    T* A = M;                // [R d3][U V], then G
    T* Zc = M + m * UV;      // [R d3][Wo]
    T* Q = Zc + m * Wo;      // [R d1][V Wo]
    T* Y = Q + m1 * VW;      // [R d1][V Wo]
    T* Xc = Y + m1 * VW;     // [R d1][U]
    T* G1 = Xc + m1 * U;     // [R d1][U]
    if (w_t || via_g)
        for (int64_t n = 0; n < R; ++n) std::memcpy(Zc + n * d3 * Wo, rs[n].z + p[F_OFFO], sizeof(T) * d3 * Wo);
    if (w_t) {
        for (int64_t n = 0; n < R; ++n) uvw_bilinear(p, ei, ec, rs[n], A + n * d3 * UV);
        small_gemm(UV, Wo, m, A, 1, Zc, gw + woff, UV);
    }
    if (via_g) {
        T* G = A;
        small_gemm_set(m, UV, Wo, Zc, Wo, wT + woff, G);
        for (int64_t n = 0; n < R; ++n) uvw_input_grad(via_g, p, ei, ec, rs[n], G + n * d3 * UV);
    }
    if (w_q || (x2_y && !Ys)) uvw_stack_x1(p, rs, R, Xc);
    if (w_q || x1_q) {  // Q once for the weight and the x1 gradient
        for (int64_t n = 0; n < R; ++n) uvw_q(p, ei, ec, rs[n], Q + n * d1 * VW);
        if (w_q) small_gemm(U, VW, m1, Xc, 1, Q, gw + woff, U);  // gW += Xc^T Q
        if (x1_q) {                                              // g1 = Q W^T
            small_gemm_set(m1, U, VW, Q, VW, wT1 + woff, G1);
            for (int64_t n = 0; n < R; ++n) {
                T* g1 = rs[n].g1 + p[F_OFF1];
                const T* src = G1 + n * d1 * U;
#pragma omp simd
                for (int64_t q = 0; q < d1 * U; ++q) g1[q] += src[q];
            }
        }
    }
    if (x2_y) {  // Y = Xc W as in the forward (or the forward's saved Y), then the sparse dots with h
        if (Ys) {
            Y = Ys;
        } else {
            small_gemm_set(m1, VW, U, Xc, U, Wb + woff, Y);
        }
        for (int64_t n = 0; n < R; ++n) uvw_x2_grad_from_y(p, ei, ec, rs[n], Y + n * d1 * VW);
    }
}

// the path row of the swapped frame: x1 <-> x2 (multiplicities, dimensions, offsets, entries)
inline void swap_path(const int64_t* p, int64_t* sw) {
    std::copy(p, p + F_N, sw);
    std::swap(sw[F_U], sw[F_V]);
    std::swap(sw[F_D1], sw[F_D2]);
    std::swap(sw[F_OFF1], sw[F_OFF2]);
    sw[F_E0] = p[F_SE0];
    sw[F_E1] = p[F_SE1];
}

// does this call run the path (shared-weight uvw) in the swapped frame, for the forward or the gradients
inline bool uses_swap(const int64_t* p, int mask, bool y) {
    return ((mask & 1) && (p[F_ORD] & 3) == 2) || ((mask & 14) && (grad_order(p, mask, y) & O_SWAP));
}

// does the x1 gradient of this path go through Q in the unswapped frame
inline bool main_x1_q(const int64_t* p, int mask, bool y) {
    const int gb = grad_order(p, mask, y);
    return (mask & 2) && (gb & O_X1_Q) && !(gb & O_SWAP);
}

// Fresh outputs of 32 MiB and more are their own anonymous mappings (glibc's largest mmap
// threshold), so their pages are not yet touched when the kernel writes them: every 4 KiB page
// faults once (measured 5 x slower than writing reused memory on the VMs we run on). Asking for
// transparent huge pages on the 2 MiB-aligned interior first makes that one fault per 2 MiB.
// Smaller outputs come from the reused heap and are left alone (no VMA splitting there).
inline void advise_huge_pages(void* data, size_t bytes) {
#ifdef MADV_HUGEPAGE
    constexpr size_t huge = size_t(2) << 20, min_bytes = size_t(32) << 20;
    if (data == nullptr || bytes < min_bytes) return;
    const uintptr_t p = reinterpret_cast<uintptr_t>(data);
    const uintptr_t a = (p + huge - 1) / huge * huge, e = (p + bytes) / huge * huge;
    if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);  // advice only: errors ignored
#else
    (void)data;
    (void)bytes;
#endif
}

// Every slot in `mask` (bit s = slot s) from the operands of the other slots: outs[s] receives
// slot s (outs[0]: rows x d3, outs[1]: rows x d1, outs[2]: rows x d2, outs[3]: the weight
// gradient, shared (wn) or per row (rows x wn)). Slot s never reads operand s (so it may be null
// when only slot s wants it; every other requested slot reads it). One pass over the rows serves all requested slots: the operands are
// transposed once per row and the uvw paths share their GEMM operands.
template <typename T>
void contract(int mask, int64_t rows, const int64_t* paths, int64_t npaths, const int32_t* ei, const T* ec,
              const int64_t* b1, int64_t n1, int64_t d1, const int64_t* b2, int64_t n2, int64_t d2,
              const int64_t* b3, int64_t n3, int64_t d3, int64_t wn, int w_shared, int64_t scratch,
              const T* x1, const T* x2, const T* z, const T* w, T* const* outs, int nthreads, T* ysave,
              int ymode) {
    const Operand o1{b1, n1, d1}, o2{b2, n2, d2}, o3{b3, n3, d3};
    // saved Y (ymode 1: the forward writes it, 2: the gradients read it): per saving path a region
    // [rows][d1][V Wo] of ysave, the regions in path order
    const bool chunked_w = w_shared && w != nullptr;
    const bool ywrite = ysave && ymode == 1 && (mask & 1) && chunked_w;
    const bool yread = ysave && ymode == 2 && (mask & 4) && chunked_w;
    std::vector<int64_t> yoff(npaths, -1);
    for (int64_t q = 0, o = 0; q < npaths && (ywrite || yread); ++q) {
        const int64_t* p = paths + q * F_N;
        if (!saves_y(p)) continue;
        yoff[q] = o;
        o += rows * p[F_D1] * p[F_V] * p[F_K];
    }
    const bool want_w = mask & 8, shared_grad = want_w && w_shared;
    if (mask & 1) advise_huge_pages(outs[0], sizeof(T) * size_t(rows * d3));
    if (mask & 2) advise_huge_pages(outs[1], sizeof(T) * size_t(rows * d1));
    if (mask & 4) advise_huge_pages(outs[2], sizeof(T) * size_t(rows * d2));
    if (want_w && !w_shared) advise_huge_pages(outs[3], sizeof(T) * size_t(rows * wn));
    // shared weights (or their gradient): uvw paths run R rows at a time (uvw_chunk)
    const bool chunked = w_shared && (w != nullptr || want_w);
    const int64_t R = chunked ? CHUNK : 1;
    int64_t chunk_numel = 0;
    for (int64_t q = 0; q < npaths && chunked; ++q) {
        const int64_t* p = paths + q * F_N;
        if (p[F_MODE] != 0 || p[F_WOFF] < 0) continue;
        chunk_numel = std::max(chunk_numel, uvw_chunk_numel(p, R));
        if (uses_swap(p, mask, yread)) {  // the swapped frame's buffers (Y' is d2 x U Wo per row)
            int64_t sw[F_N];
            swap_path(p, sw);
            chunk_numel = std::max(chunk_numel, uvw_chunk_numel(sw, R));
        }
    }
    if (shared_grad) std::fill(outs[3], outs[3] + wn, T(0));
    if (nthreads < 1) nthreads = 1;
    if (rows < 64) nthreads = 1;
    const int64_t nchunks = (rows + R - 1) / R;
#pragma omp parallel num_threads(nthreads)
    {
        const bool transpose_w = (mask & 6) && w_shared && w != nullptr;
        const int64_t per_row = 2 * (d1 + d2 + d3);
        std::vector<T> buf(R * per_row + scratch + (shared_grad ? wn : 0));
        std::vector<T> wT(transpose_w ? wn : 0);
        if (transpose_w)
            for (int64_t q = 0; q < npaths; ++q) {
                const int64_t* p = paths + q * F_N;
                if (p[F_MODE] != 0 || p[F_WOFF] < 0) continue;
                const int64_t UV = p[F_U] * p[F_V], Wo = p[F_K], off = p[F_WOFF];
                for (int64_t a = 0; a < UV; ++a)
                    for (int64_t b = 0; b < Wo; ++b) wT[off + b * UV + a] = w[off + a * Wo + b];
            }
        // [v w][u] per path whose x1 gradient goes through Q (where V = 1 that is wT itself)
        bool need_wT1 = false;
        for (int64_t q = 0; q < npaths && transpose_w && (mask & 2); ++q) {
            const int64_t* p = paths + q * F_N;
            need_wT1 |= p[F_MODE] == 0 && p[F_WOFF] >= 0 && p[F_V] != 1 && main_x1_q(p, mask, yread);
        }
        std::vector<T> wT1(need_wT1 ? wn : 0);
        for (int64_t q = 0; q < npaths && need_wT1; ++q) {
            const int64_t* p = paths + q * F_N;
            if (p[F_MODE] != 0 || p[F_WOFF] < 0 || !main_x1_q(p, mask, yread)) continue;
            const int64_t U = p[F_U], VW = p[F_V] * p[F_K], off = p[F_WOFF];
            for (int64_t u = 0; u < U; ++u)
                for (int64_t b = 0; b < VW; ++b) wT1[off + b * U + u] = w[off + u * VW + b];
        }
        const T* wT1p = need_wT1 ? wT1.data() : (transpose_w ? wT.data() : nullptr);
        // the swapped frame's weights ([v][u][w], [w][v u], [u w][v]) and weight gradient
        // ([v][u][w], added to local_gw in e3nn layout at the end), for the paths that use it
        bool any_swap = false;
        for (int64_t q = 0; q < npaths && chunked; ++q) {
            const int64_t* p = paths + q * F_N;
            any_swap |= p[F_MODE] == 0 && p[F_WOFF] >= 0 && uses_swap(p, mask, yread);
        }
        std::vector<T> wsw(any_swap && w != nullptr ? 3 * wn : 0);
        std::vector<T> gwsw(any_swap && shared_grad ? wn : 0);
        for (int64_t q = 0; q < npaths && !wsw.empty(); ++q) {
            const int64_t* p = paths + q * F_N;
            if (p[F_MODE] != 0 || p[F_WOFF] < 0 || !uses_swap(p, mask, yread)) continue;
            const int64_t U = p[F_U], V = p[F_V], Wo = p[F_K], off = p[F_WOFF];
            T *Wp = wsw.data() + off, *wTp = Wp + wn, *wT1p_sw = Wp + 2 * wn;
            for (int64_t u = 0; u < U; ++u)
                for (int64_t v = 0; v < V; ++v)
                    for (int64_t c = 0; c < Wo; ++c) {
                        const T x = w[off + (u * V + v) * Wo + c];
                        Wp[(v * U + u) * Wo + c] = x;
                        wTp[c * U * V + v * U + u] = x;
                        wT1p_sw[(u * Wo + c) * V + v] = x;
                    }
        }
        std::vector<Row<T>> rsw(R);
        std::unique_ptr<T[]> chunk(new T[std::max<int64_t>(chunk_numel, 1)]);  // every use writes before it reads
        T* s = buf.data() + R * per_row;
        T* local_gw = s + scratch;
        if (shared_grad) std::fill(local_gw, local_gw + wn, T(0));
        std::vector<Row<T>> rs(R);
        for (int64_t n = 0; n < R; ++n) {
            Row<T>& r = rs[n];
            r.x1 = buf.data() + n * per_row;
            r.x2 = r.x1 + d1;
            r.z = r.x2 + d2;
            r.g1 = r.z + d3;
            r.g2 = r.g1 + d1;
            r.gz = r.g2 + d2;
            r.s = s;
            r.wv = s + scratch / 2;
            r.wT = transpose_w ? wT.data() : nullptr;
        }
#pragma omp for schedule(static)
        for (int64_t c = 0; c < nchunks; ++c) {
            const int64_t n0 = c * R, nr = std::min(R, rows - n0);
            for (int64_t a = 0; a < nr; ++a) {
                Row<T>& r = rs[a];
                const int64_t n = n0 + a;
                if (x1) to_buffer(x1 + n * d1, r.x1, o1);  // absent operands are only outputs
                if (x2) to_buffer(x2 + n * d2, r.x2, o2);
                if (z) to_buffer(z + n * d3, r.z, o3);
                if (mask & 2) std::fill(r.g1, r.g1 + d1, T(0));
                if (mask & 4) std::fill(r.g2, r.g2 + d2, T(0));
                if (mask & 1) std::fill(r.gz, r.gz + d3, T(0));
                r.w = w == nullptr ? nullptr : (w_shared ? w : w + n * wn);
                if (want_w) {
                    if (w_shared) {
                        r.gw = local_gw;
                    } else {
                        r.gw = outs[3] + n * wn;
                        std::fill(r.gw, r.gw + wn, T(0));
                    }
                }
            }
            for (int64_t q = 0; q < npaths; ++q) {
                const int64_t* p = paths + q * F_N;
                if (chunked && p[F_MODE] == 0 && p[F_WOFF] >= 0) {
                    const int fo = int(p[F_ORD] & 3), gb = (mask & 14) ? grad_order(p, mask, yread) : 0;
                    T* Ys = yoff[q] >= 0 ? ysave + yoff[q] + n0 * p[F_D1] * p[F_V] * p[F_K] : nullptr;
                    int64_t psw[F_N];
                    if (uses_swap(p, mask, yread)) {  // x1 <-> x2 (and their gradients) for the swapped frame
                        swap_path(p, psw);
                        for (int64_t a = 0; a < nr; ++a) {
                            rsw[a] = rs[a];
                            std::swap(rsw[a].x1, rsw[a].x2);
                            std::swap(rsw[a].g1, rsw[a].g2);
                        }
                    }
                    const T* Wp = wsw.empty() ? nullptr : wsw.data();
                    if ((mask & 1) && fo == 2)
                        uvw_chunk<T>(1, psw, ei, ec, rsw.data(), nr, Wp, nullptr, nullptr, nullptr, chunk.get(),
                                     true, 0);
                    else if (mask & 1)
                        uvw_chunk<T>(1, p, ei, ec, rs.data(), nr, w, nullptr, nullptr, nullptr, chunk.get(),
                                     fo == 1, 0, ywrite ? Ys : nullptr);
                    if ((mask & 14) && (gb & O_SWAP)) {
                        const int msw = (mask & 8) | ((mask & 2) << 1) | ((mask & 4) >> 1);
                        uvw_chunk<T>(msw, psw, ei, ec, rsw.data(), nr, Wp, Wp ? Wp + wn : nullptr,
                                     Wp ? Wp + 2 * wn : nullptr, gwsw.data(), chunk.get(), false, gb & 7);
                    } else if (mask & 14) {
                        uvw_chunk<T>(mask & 14, p, ei, ec, rs.data(), nr, w, rs[0].wT, wT1p, local_gw, chunk.get(),
                                     false, gb & 7, yread ? Ys : nullptr);
                    }
                    continue;
                }
                for (int slot = 0; slot < 4; ++slot) {
                    if (!(mask & (1 << slot)) || (slot == 3 && p[F_WOFF] < 0)) continue;
                    for (int64_t a = 0; a < nr; ++a) {
                        switch (p[F_MODE] * 4 + slot) {
                            case 4: path_uvu<0, T>(p, ei, ec, rs[a]); break;
                            case 5: path_uvu<1, T>(p, ei, ec, rs[a]); break;
                            case 6: path_uvu<2, T>(p, ei, ec, rs[a]); break;
                            case 7: path_uvu<3, T>(p, ei, ec, rs[a]); break;
                            case 8: path_uuu<0, T>(p, ei, ec, rs[a]); break;
                            case 9: path_uuu<1, T>(p, ei, ec, rs[a]); break;
                            case 10: path_uuu<2, T>(p, ei, ec, rs[a]); break;
                            case 11: path_uuu<3, T>(p, ei, ec, rs[a]); break;
                            default: path_uvw<T>(slot, p, ei, ec, rs[a]); break;
                        }
                    }
                }
            }
            for (int64_t a = 0; a < nr; ++a) {
                const Row<T>& r = rs[a];
                const int64_t n = n0 + a;
                if (mask & 1) from_buffer(r.gz, outs[0] + n * d3, o3);
                if (mask & 2) from_buffer(r.g1, outs[1] + n * d1, o1);
                if (mask & 4) from_buffer(r.g2, outs[2] + n * d2, o2);
            }
        }
        for (int64_t q = 0; q < npaths && !gwsw.empty(); ++q) {  // swapped-frame weight gradients
            const int64_t* p = paths + q * F_N;
            if (p[F_MODE] != 0 || p[F_WOFF] < 0 || !uses_swap(p, mask, yread)) continue;
            const int64_t U = p[F_U], V = p[F_V], Wo = p[F_K], off = p[F_WOFF];
            for (int64_t u = 0; u < U; ++u)
                for (int64_t v = 0; v < V; ++v)
                    for (int64_t c = 0; c < Wo; ++c)
                        local_gw[off + (u * V + v) * Wo + c] += gwsw[off + (v * U + u) * Wo + c];
        }
        if (shared_grad) {
#pragma omp critical
            for (int64_t q = 0; q < wn; ++q) outs[3][q] += local_gw[q];
        }
    }
}

}  // namespace

#define EQ_TP_EXPORT(NAME, T)                                                                                   \
    extern "C" void NAME(int mask, int64_t rows, const int64_t* paths, int64_t npaths, const int32_t* ei,      \
                         const T* ec, const int64_t* b1, int64_t n1, int64_t d1, const int64_t* b2, int64_t n2, \
                         int64_t d2, const int64_t* b3, int64_t n3, int64_t d3, int64_t wn, int w_shared,       \
                         int64_t scratch, const T* x1, const T* x2, const T* z, const T* w, T* out0, T* out1,   \
                         T* out2, T* out3, int nthreads, T* ysave, int ymode) {                                 \
        T* const outs[4] = {out0, out1, out2, out3};                                                            \
        contract<T>(mask, rows, paths, npaths, ei, ec, b1, n1, d1, b2, n2, d2, b3, n3, d3, wn, w_shared,       \
                    scratch, x1, x2, z, w, outs, nthreads, ysave, ymode);                                       \
    }

EQ_TP_EXPORT(eq_tp_contract_f32, float)
EQ_TP_EXPORT(eq_tp_contract_f64, double)

extern "C" int eq_tp_abi_version() { return 4; }
