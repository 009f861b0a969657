// Gather-free edge convolution with per-edge matrices (equikit.tp._edge_matrix), float32 / float64.
//
// The 4-linear form over edges e (centre dst[e]), channels c, input components i, output components k:
//   Phi(x, t, w, m) = sum_e sum_c sum_k m[dst[e], c, k] * w[e, c, blk[k]] * sum_i t[e, i, k] * x[e, c, i]
// with x (E, C, DI), t (E, DI, DK), w (E, C, NB), m (N, C, DK); the output blocks are contiguous:
// block b holds the components bs[b] .. bs[b + 1] - 1 (blk[k] = b there). eq_edge_matrix_* computes the
// derivative of Phi with respect to operand `slot` (0: x, 1: t, 2: w, 3: m) from the other three:
// slot 3 is the convolution itself (messages summed at the centres, no (E, C, DK) tensor), slots
// 0-2 its gradients (the centres' gradient read at dst[e], no gather into an (E, C, DK) tensor).
// Every operand is contiguous; `out` is written in full (zeroed here where it accumulates).
#include <cstdint>
#include <cstring>
#include <omp.h>

namespace {

constexpr int64_t MAX_DIM = 256;  // DI, DK <= MAX_DIM (checked by the caller)

// DI_ / DK_: compile-time sizes of the common cases (0: the runtime DI / DK), so the inner loops unroll
template <typename T, int DI_, int DK_>
void contract(int slot, int64_t E, int64_t N, int64_t C, int64_t DI, int64_t DK, int64_t NB,
              const int64_t* __restrict__ dst, const int64_t* __restrict__ bs, const T* __restrict__ x,
              const T* __restrict__ t, const T* __restrict__ w, const T* __restrict__ m, T* __restrict__ out,
              int threads) {
    if (DI_) DI = DI_;
    if (DK_) DK = DK_;
    if (slot == 3) {  // out (N, C, DK): each thread owns a range of channels (no races), edges in order
        std::memset(out, 0, sizeof(T) * N * C * DK);
#pragma omp parallel num_threads(threads)
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            int64_t c0 = C * id / nt, c1 = C * (id + 1) / nt;
            T z[MAX_DIM];
            for (int64_t e = 0; e < E; ++e) {
                const T* te = t + e * DI * DK;
                for (int64_t c = c0; c < c1; ++c) {
                    const T* xe = x + (e * C + c) * DI;
                    const T* we = w + (e * C + c) * NB;
                    for (int64_t k = 0; k < DK; ++k) z[k] = 0;
                    for (int64_t i = 0; i < DI; ++i) {
                        const T xv = xe[i];
                        const T* row = te + i * DK;
                        for (int64_t k = 0; k < DK; ++k) z[k] += xv * row[k];
                    }
                    T* o = out + (dst[e] * C + c) * DK;
                    for (int64_t b = 0; b < NB; ++b)
                        for (int64_t k = bs[b]; k < bs[b + 1]; ++k) o[k] += z[k] * we[b];
                }
            }
        }
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t e = 0; e < E; ++e) {
        T g[MAX_DIM], z[MAX_DIM];
        const T* te = t ? t + e * DI * DK : nullptr;
        const T* me = m + dst[e] * C * DK;
        if (slot == 1) {  // out (E, DI, DK): sum over channels
            T* o = out + e * DI * DK;
            for (int64_t q = 0; q < DI * DK; ++q) o[q] = 0;
            for (int64_t c = 0; c < C; ++c) {
                const T* xe = x + (e * C + c) * DI;
                const T* we = w + (e * C + c) * NB;
                for (int64_t b = 0; b < NB; ++b)
                    for (int64_t k = bs[b]; k < bs[b + 1]; ++k) g[k] = me[c * DK + k] * we[b];
                for (int64_t i = 0; i < DI; ++i) {
                    const T xv = xe[i];
                    T* row = o + i * DK;
                    for (int64_t k = 0; k < DK; ++k) row[k] += xv * g[k];
                }
            }
            continue;
        }
        for (int64_t c = 0; c < C; ++c) {
            const T* mc = me + c * DK;
            if (slot == 0) {  // out (E, C, DI)
                const T* we = w + (e * C + c) * NB;
                for (int64_t b = 0; b < NB; ++b)
                    for (int64_t k = bs[b]; k < bs[b + 1]; ++k) g[k] = mc[k] * we[b];
                T* o = out + (e * C + c) * DI;
                for (int64_t i = 0; i < DI; ++i) {
                    const T* row = te + i * DK;
                    T s = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t k = 0; k < DK; ++k) s += row[k] * g[k];
                    o[i] = s;
                }
            } else {  // slot 2, out (E, C, NB)
                const T* xe = x + (e * C + c) * DI;
                for (int64_t k = 0; k < DK; ++k) z[k] = 0;
                for (int64_t i = 0; i < DI; ++i) {
                    const T xv = xe[i];
                    const T* row = te + i * DK;
                    for (int64_t k = 0; k < DK; ++k) z[k] += xv * row[k];
                }
                T* o = out + (e * C + c) * NB;
                for (int64_t k = 0; k < DK; ++k) z[k] *= mc[k];
                for (int64_t b = 0; b < NB; ++b) {
                    T s = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t k = bs[b]; k < bs[b + 1]; ++k) s += z[k];
                    o[b] = s;
                }
            }
        }
    }
}

// The gradients of slot 3 for x, t, w at once (bit 0, 1, 2 of `mask`; null outputs skipped): one pass
// over the edges reads m[dst[e]] and forms m * w once for the x and t gradients (first-order backward:
// forces in MD and inference, where no graph of the gradients is needed).
template <typename T, int DI_, int DK_>
void backward3(int mask, int64_t E, int64_t C, int64_t DI, int64_t DK, int64_t NB, const int64_t* __restrict__ dst,
               const int64_t* __restrict__ bs, const T* __restrict__ x, const T* __restrict__ t,
               const T* __restrict__ w, const T* __restrict__ m, T* __restrict__ gx, T* __restrict__ gt,
               T* __restrict__ gw, int threads) {
    if (DI_) DI = DI_;
    if (DK_) DK = DK_;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t e = 0; e < E; ++e) {
        T g[MAX_DIM], z[MAX_DIM];
        const T* te = t + e * DI * DK;
        const T* me = m + dst[e] * C * DK;
        T* ot = gt + e * DI * DK;
        if (mask & 2)
            for (int64_t q = 0; q < DI * DK; ++q) ot[q] = 0;
        for (int64_t c = 0; c < C; ++c) {
            const T* mc = me + c * DK;
            const T* xe = x + (e * C + c) * DI;
            const T* we = w + (e * C + c) * NB;
            if (mask & 3) {
                for (int64_t b = 0; b < NB; ++b)
                    for (int64_t k = bs[b]; k < bs[b + 1]; ++k) g[k] = mc[k] * we[b];
            }
            if (mask & 1) {
                T* o = gx + (e * C + c) * DI;
                for (int64_t i = 0; i < DI; ++i) {
                    const T* row = te + i * DK;
                    T s = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t k = 0; k < DK; ++k) s += row[k] * g[k];
                    o[i] = s;
                }
            }
            if (mask & 2) {
                for (int64_t i = 0; i < DI; ++i) {
                    const T xv = xe[i];
                    T* row = ot + i * DK;
                    for (int64_t k = 0; k < DK; ++k) row[k] += xv * g[k];
                }
            }
            if (mask & 4) {
                for (int64_t k = 0; k < DK; ++k) z[k] = 0;
                for (int64_t i = 0; i < DI; ++i) {
                    const T xv = xe[i];
                    const T* row = te + i * DK;
                    for (int64_t k = 0; k < DK; ++k) z[k] += xv * row[k];
                }
                T* o = gw + (e * C + c) * NB;
                for (int64_t k = 0; k < DK; ++k) z[k] *= mc[k];
                for (int64_t b = 0; b < NB; ++b) {
                    T s = 0;
#pragma omp simd reduction(+ : s)
                    for (int64_t k = bs[b]; k < bs[b + 1]; ++k) s += z[k];
                    o[b] = s;
                }
            }
        }
    }
}

template <typename T>
void dispatch_backward3(int mask, int64_t E, int64_t C, int64_t DI, int64_t DK, int64_t NB, const int64_t* dst,
                        const int64_t* bs, const T* x, const T* t, const T* w, const T* m, T* gx, T* gt, T* gw,
                        int threads) {
#define EQ_CASE(di, dk)                                                                              \
    if (DI == di && DK == dk) {                                                                      \
        backward3<T, di, dk>(mask, E, C, DI, DK, NB, dst, bs, x, t, w, m, gx, gt, gw, threads);      \
        return;                                                                                      \
    }
    EQ_CASE(1, 16) EQ_CASE(4, 16) EQ_CASE(9, 16) EQ_CASE(16, 16)
    EQ_CASE(1, 9) EQ_CASE(4, 9) EQ_CASE(9, 9) EQ_CASE(1, 25) EQ_CASE(4, 25) EQ_CASE(9, 25)
#undef EQ_CASE
    backward3<T, 0, 0>(mask, E, C, DI, DK, NB, dst, bs, x, t, w, m, gx, gt, gw, threads);
}

template <typename T>
void dispatch(int slot, int64_t E, int64_t N, int64_t C, int64_t DI, int64_t DK, int64_t NB, const int64_t* dst,
              const int64_t* bs, const T* x, const T* t, const T* w, const T* m, T* out, int threads) {
#define EQ_CASE(di, dk)                                                                              \
    if (DI == di && DK == dk) {                                                                      \
        contract<T, di, dk>(slot, E, N, C, DI, DK, NB, dst, bs, x, t, w, m, out, threads);          \
        return;                                                                                      \
    }
    EQ_CASE(1, 16) EQ_CASE(4, 16) EQ_CASE(9, 16) EQ_CASE(16, 16)
    EQ_CASE(1, 9) EQ_CASE(4, 9) EQ_CASE(9, 9) EQ_CASE(1, 25) EQ_CASE(4, 25) EQ_CASE(9, 25)
#undef EQ_CASE
    contract<T, 0, 0>(slot, E, N, C, DI, DK, NB, dst, bs, x, t, w, m, out, threads);
}

}  // namespace

extern "C" {
void eq_edge_matrix_f32(int slot, int64_t E, int64_t N, int64_t C, int64_t DI, int64_t DK, int64_t NB,
                        const int64_t* dst, const int64_t* bs, const float* x, const float* t, const float* w,
                        const float* m, float* out, int threads) {
    dispatch<float>(slot, E, N, C, DI, DK, NB, dst, bs, x, t, w, m, out, threads);
}
void eq_edge_matrix_f64(int slot, int64_t E, int64_t N, int64_t C, int64_t DI, int64_t DK, int64_t NB,
                        const int64_t* dst, const int64_t* bs, const double* x, const double* t, const double* w,
                        const double* m, double* out, int threads) {
    dispatch<double>(slot, E, N, C, DI, DK, NB, dst, bs, x, t, w, m, out, threads);
}
void eq_edge_matrix_backward_f32(int mask, int64_t E, int64_t C, int64_t DI, int64_t DK, int64_t NB,
                                 const int64_t* dst, const int64_t* bs, const float* x, const float* t,
                                 const float* w, const float* m, float* gx, float* gt, float* gw, int threads) {
    dispatch_backward3<float>(mask, E, C, DI, DK, NB, dst, bs, x, t, w, m, gx, gt, gw, threads);
}
void eq_edge_matrix_backward_f64(int mask, int64_t E, int64_t C, int64_t DI, int64_t DK, int64_t NB,
                                 const int64_t* dst, const int64_t* bs, const double* x, const double* t,
                                 const double* w, const double* m, double* gx, double* gt, double* gw, int threads) {
    dispatch_backward3<double>(mask, E, C, DI, DK, NB, dst, bs, x, t, w, m, gx, gt, gw, threads);
}
}
