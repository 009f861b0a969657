// Fused sphere-grid bilinear kernel of the `sphere_grid` backend (see _grid_native.py).
//
// out = Ana_C( Syn_A(a) * Syn_B(b) ) row by row, everything of one row in cache:
//   side S = (COO gather/scatter (slot, col, scale), Legendre factors P (Q, Lp, nt),
//             trigonometric factors T (Q, nf), width w = channels or 1)
//   Syn_S(x):  buf[slot] += scale * x[col];  A[q][j][u] = sum_l P[q][l][j] buf[q][l][u];
//              F[k][j][u] = sum_q T[q][k] A[q][j][u]                      (grid values)
//   Ana_S(H):  G[q][j][u] = sum_k T[q][k] H[k][j][u];  Z[q][l][u] = sum_j P[q][l][j] G[q][j][u];
//              out[col] += scale * Z[slot]                                (exact transpose)
// The product H = F_A * F_B broadcasts a width-1 side over the channels; a width-1 output
// side sums H over the channels first. Channels are innermost, so the loops vectorise.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

#include <omp.h>

namespace {

template <typename T>
struct Side {
  const int64_t* slot;  // (q, l) flat
  const int64_t* chan;  // channel u (0 for a width-1 side)
  const int64_t* col;
  const T* scale;
  const T* P;
  const T* Tr;
  int64_t nnz, Q, Lp, w;
  std::vector<int64_t> lo, hi;  // nonzero Legendre rows l in [lo[q], hi[q]) per q
};

template <typename T>
Side<T> side(const void* const* ptrs, const int64_t* ints, int s, int64_t nt) {
  Side<T> r{(const int64_t*)ptrs[6 * s], (const int64_t*)ptrs[6 * s + 1], (const int64_t*)ptrs[6 * s + 2],
            (const T*)ptrs[6 * s + 3], (const T*)ptrs[6 * s + 4], (const T*)ptrs[6 * s + 5],
            ints[4 * s], ints[4 * s + 1], ints[4 * s + 2], ints[4 * s + 3], {}, {}};
  r.lo.assign(r.Q, 0);
  r.hi.assign(r.Q, 0);
  for (int64_t q = 0; q < r.Q; ++q) {
    int64_t lo = r.Lp, hi = 0;
    for (int64_t l = 0; l < r.Lp; ++l)
      for (int64_t j = 0; j < nt; ++j)
        if (r.P[(q * r.Lp + l) * nt + j] != T(0)) {
          lo = l < lo ? l : lo;
          hi = l + 1;
        }
    r.lo[q] = lo;
    r.hi[q] = hi > lo ? hi : lo;
  }
  return r;
}

// first COO entry of a channel >= u (the entries are sorted by channel)
template <typename T>
inline int64_t chan_begin(const Side<T>& s, int64_t u) {
  return std::lower_bound(s.chan, s.chan + s.nnz, u) - s.chan;
}

// out[i * os][0..W) = sum_k M[i * mo + k * mi] * X[k * xs][0..W), accumulated in registers
// (GCC vector types: W / lanes 256-bit accumulators, unaligned loads and stores)
template <typename T, int W>
inline void combine(T* __restrict out, int64_t os, const T* __restrict M, int64_t mo, int64_t mi,
                    const T* __restrict X, int64_t xs, int64_t n_out, int64_t k0, int64_t k1) {
  if constexpr (W * sizeof(T) < 32) {
    for (int64_t i = 0; i < n_out; ++i) {
      T acc[W] = {};
      for (int64_t k = k0; k < k1; ++k)
        for (int u = 0; u < W; ++u) acc[u] += M[i * mo + k * mi] * X[k * xs + u];
      for (int u = 0; u < W; ++u) out[i * os + u] = acc[u];
    }
  } else {
    typedef T V __attribute__((vector_size(32), aligned(sizeof(T))));
    constexpr int NV = W * sizeof(T) / 32, LANES = 32 / sizeof(T);
    for (int64_t i = 0; i < n_out; ++i) {
      V acc[NV];
      for (int v = 0; v < NV; ++v) acc[v] = V{} ;
      for (int64_t k = k0; k < k1; ++k) {
        const T m = M[i * mo + k * mi];
        const T* x = X + k * xs;
        for (int v = 0; v < NV; ++v) acc[v] += m * *(const V*)(x + v * LANES);
      }
      for (int v = 0; v < NV; ++v) *(V*)(out + i * os + v * LANES) = acc[v];
    }
  }
}

// grid values F (nf, nt, W) of channels [u0, u0 + W) of one row
// The trigonometric rows are ordered 1, cos phi, .., cos L phi, sin phi, .., sin L phi (nc = L + 1
// even rows first). With phi_{nf-k} = -phi_k, cos is even and sin odd, so the longitude sums
// run over k = 0..nf/2 only: F[k] = E[k] + O[k], F[nf - k] = E[k] - O[k] (synthesis) and
// G_cos = sum_k T S[k], G_sin = sum_k T D[k] with S/D[k] = H[k] +/- H[nf - k] (analysis).
template <typename T, int W>
void synth(const T* x, const Side<T>& s, int64_t u0, int64_t nt, int64_t nf, T* buf, T* A, T* F, T* E) {
  std::memset(buf, 0, sizeof(T) * s.Q * s.Lp * W);
  for (int64_t n = chan_begin(s, u0), e = chan_begin(s, u0 + W); n < e; ++n)  // entries sorted by channel
    buf[s.slot[n] * W + s.chan[n] - u0] += s.scale[n] * x[s.col[n]];
  for (int64_t q = 0; q < s.Q; ++q)  // A[q][j] = sum_l P[q][l][j] buf[q][l]
    combine<T, W>(A + q * nt * W, W, s.P + q * s.Lp * nt, 1, nt, buf + q * s.Lp * W, W, nt, s.lo[q], s.hi[q]);
  const int64_t half = nf / 2 + 1, nc = (s.Q + 1) / 2, blk = nt * W;
  T* O = E + half * blk;
  for (int64_t j = 0; j < nt; ++j) {  // E[k][j] = sum_{q < nc} T[q][k] A[q][j], O likewise (q >= nc)
    combine<T, W>(E + j * W, blk, s.Tr, 1, nf, A + j * W, blk, half, 0, nc);
    combine<T, W>(O + j * W, blk, s.Tr, 1, nf, A + j * W, blk, half, nc, s.Q);
  }
  for (int64_t k = 0; k < half; ++k) {
    const T* e = E + k * blk;
    const T* o = O + k * blk;
    T* f = F + k * blk;
    for (int64_t i = 0; i < blk; ++i) f[i] = e[i] + o[i];
    if (k > 0 && nf - k != k) {
      T* g = F + (nf - k) * blk;
      for (int64_t i = 0; i < blk; ++i) g[i] = e[i] - o[i];
    }
  }
}

// out[col] += scale * Z[slot] with Z the quadrature projection of H (nf, nt, W)
template <typename T, int W>
void analyse(const T* H, const Side<T>& s, int64_t u0, int64_t nt, int64_t nf, T* G, T* Z, T* out, T* E) {
  const int64_t half = nf / 2 + 1, nc = (s.Q + 1) / 2, blk = nt * W;
  T* D = E + half * blk;
  for (int64_t k = 0; k < half; ++k) {  // S[k] = H[k] + H[nf - k], D[k] = H[k] - H[nf - k]
    const T* h = H + k * blk;
    T* sk = E + k * blk;
    T* dk = D + k * blk;
    if (k > 0 && nf - k != k) {
      const T* g = H + (nf - k) * blk;
      for (int64_t i = 0; i < blk; ++i) {
        sk[i] = h[i] + g[i];
        dk[i] = h[i] - g[i];
      }
    } else {
      for (int64_t i = 0; i < blk; ++i) {
        sk[i] = h[i];
        dk[i] = T(0);
      }
    }
  }
  for (int64_t j = 0; j < nt; ++j) {  // G[q][j] = sum_k T[q][k] (S or D)[k][j]
    combine<T, W>(G + j * W, blk, s.Tr, nf, 1, E + j * W, blk, nc, 0, half);
    combine<T, W>(G + nc * blk + j * W, blk, s.Tr + nc * nf, nf, 1, D + j * W, blk, s.Q - nc, 0, half);
  }
  for (int64_t q = 0; q < s.Q; ++q) {  // Z[q][l] = sum_j P[q][l][j] G[q][j]
    std::memset(Z + q * s.Lp * W, 0, sizeof(T) * s.Lp * W);
    const int64_t lo = s.lo[q], n = s.hi[q] - lo;
    combine<T, W>(Z + (q * s.Lp + lo) * W, W, s.P + (q * s.Lp + lo) * nt, nt, 1, G + q * nt * W, W, n, 0, nt);
  }
  for (int64_t n = chan_begin(s, u0), e = chan_begin(s, u0 + W); n < e; ++n)
    out[s.col[n]] += s.scale[n] * Z[s.slot[n] * W + s.chan[n] - u0];
}

template <typename T, int W>
void run(const T* xa, const T* xb, T* out, const void* const* ptrs, const int64_t* ints, int threads) {
  const int64_t nt = ints[12], nf = ints[13], rows = ints[14], da = ints[15], db = ints[16], dout = ints[17];
  const Side<T> A = side<T>(ptrs, ints, 0, nt), B = side<T>(ptrs, ints, 1, nt), C = side<T>(ptrs, ints, 2, nt);
  const int64_t U = A.w > B.w ? A.w : B.w, grid = nf * nt;
  // width-1 sides broadcast over (or, as output, sum) the channels of the other side
  const bool one_a_side = A.w == 1 && U > 1, one_b_side = B.w == 1 && U > 1, one_c_side = C.w == 1 && U > 1;
  auto qmax = [](const Side<T>& s) { return s.Q * (s.Lp > 1 ? s.Lp : 1); };
  const int64_t nbuf = std::max(std::max(qmax(A), qmax(B)), qmax(C)) * W;
  const int64_t nq = std::max(std::max(A.Q, B.Q), C.Q) * nt * W;
  std::memset(out, 0, sizeof(T) * rows * dout);
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> buf(nbuf), R(nq), FA(grid * W), FB(grid * W), H(grid * W), one_a(grid), one_b(grid), H1(grid);
    std::vector<T> buf1(nbuf), R1(nq), Z1(nbuf), E(2 * (nf / 2 + 1) * nt * W), E1(2 * (nf / 2 + 1) * nt);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* x_a = xa + r * da;
      const T* x_b = xb + r * db;
      T* o = out + r * dout;
      if (one_a_side) synth<T, 1>(x_a, A, 0, nt, nf, buf1.data(), R1.data(), one_a.data(), E1.data());
      if (one_b_side) synth<T, 1>(x_b, B, 0, nt, nf, buf1.data(), R1.data(), one_b.data(), E1.data());
      if (one_c_side) std::fill(H1.begin(), H1.end(), T(0));
      for (int64_t u0 = 0; u0 < U; u0 += W) {
        if (!one_a_side) synth<T, W>(x_a, A, u0, nt, nf, buf.data(), R.data(), FA.data(), E.data());
        if (!one_b_side) synth<T, W>(x_b, B, u0, nt, nf, buf.data(), R.data(), FB.data(), E.data());
        for (int64_t g = 0; g < grid; ++g) {
          T* h = H.data() + g * W;
          const T* fa = FA.data() + g * W;
          const T* fb = FB.data() + g * W;
          if (one_a_side) {
            const T a = one_a[g];
#pragma omp simd
            for (int u = 0; u < W; ++u) h[u] = a * fb[u];
          } else if (one_b_side) {
            const T b = one_b[g];
#pragma omp simd
            for (int u = 0; u < W; ++u) h[u] = fa[u] * b;
          } else {
#pragma omp simd
            for (int u = 0; u < W; ++u) h[u] = fa[u] * fb[u];
          }
          if (one_c_side) {  // a width-1 output: the channels summed (channels past U are zero)
            T acc = 0;
            for (int u = 0; u < W; ++u) acc += h[u];
            H1[g] += acc;
          }
        }
        if (!one_c_side) analyse<T, W>(H.data(), C, u0, nt, nf, R.data(), buf.data(), o, E.data());
      }
      if (one_c_side) analyse<T, 1>(H1.data(), C, 0, nt, nf, R1.data(), Z1.data(), o, E1.data());
    }
  }
}

}  // namespace

extern "C" {
void eq_grid_bilinear_f32(const float* xa, const float* xb, float* out, const void* const* ptrs,
                          const int64_t* ints, int threads) {
  run<float, 16>(xa, xb, out, ptrs, ints, threads);
}
void eq_grid_bilinear_f64(const double* xa, const double* xb, double* out, const void* const* ptrs,
                          const int64_t* ints, int threads) {
  run<double, 8>(xa, xb, out, ptrs, ints, threads);
}
}
