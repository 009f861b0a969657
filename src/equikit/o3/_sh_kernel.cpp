// Real spherical harmonics in equikit's basis, normalisation folded into the recursion.
//
// Basis: Y_l^m(x, y, z) = S_l^m(z, x, y) (S: textbook real harmonics, z polar, no
// Condon-Shortley phase), so the kernel reads each input row as (X, Y, Z) = (z, x, y).
// Solid form: S_l^m = Qt_l^m * C_m (m > 0), Qt_l^0 (m = 0), Qt_l^|m| * S_|m| (m < 0), with
// C_m + i S_m = (X + i Y)^m and Qt_l^m = K_lm Q_l^m, the modified associated Legendre
// polynomial Q (in Z and R2 = X^2 + Y^2 + Z^2) times the normalisation K_lm. The recursion
// runs on Qt directly, the constants folded into its coefficients (computed in Python,
// ``_sh_native.coefficients``):
//     Qt_0^0 = diag[0],   Qt_m^m = diag[m] Qt_{m-1}^{m-1},   Qt_{m+1}^m = off[m+1] Z Qt_m^m,
//     Qt_l^m = A[l][m] Z Qt_{l-1}^m - B[l][m] R2 Qt_{l-2}^m         (m <= l - 2)
// so each output is one multiply (Qt * C_m or Qt * S_m) and there is no separate scaling
// pass. normalize=1 projects (X, Y, Z) onto the unit sphere first (R2 = 1).
//
// Layout: rows are processed in chunks of BL = 64 bytes of lanes (16 floats / 8 doubles), one
// GCC/Clang vector type per quantity, so the recursion runs SIMD across the chunk (on AVX2 each
// operation is two 256-bit instructions); float32 inputs are computed in float32. Each chunk is
// written into a small buffer (D x BL, in L1) and transposed into the contiguous output rows
// with 8x8 / 4x4 AVX block transposes. Recursion over m outside, l inside (the Legendre column
// of one m lives in registers). lmax 1..8 are compiled for a fixed lmax (unrolled); any other
// lmax runs the same code with a runtime bound.
//
// Backward: grad_x[i] = sum_k g[i, k] dY_k/dx, recomputing Y with forward-mode derivatives of
// the recursion (dQ/dZ, dQ/dR2) in the same pass: no Jacobian is stored. With normalize=1 the
// gradient at the unit vector u is projected: grad_x = (grad_u - u (u . grad_u)) / |x|.
// A zero vector with normalize=1 gives NaN for l >= 1 (the direction is undefined), as the
// other backends do.
//
// OpenMP over chunks; the thread count comes from the caller (torch.get_num_threads()).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

// A chunk of BL vectors is one GCC/Clang vector of 64 bytes (16 floats / 8 doubles; on AVX2 the
// compiler splits each operation into two 256-bit instructions). Writing the recursion on these
// types keeps it SIMD: plain loops over the lanes were partly scalarised by GCC once unrolled.
template <typename T>
constexpr int kLanes = 64 / static_cast<int>(sizeof(T));
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
inline Vec<T> splat(T a) {
  Vec<T> r;
  for (int i = 0; i < kLanes<T>; ++i) r[i] = a;
  return r;
}
template <typename T>
inline Vec<T> vload(const T* p) {
  Vec<T> r;
  __builtin_memcpy(&r, p, sizeof(r));
  return r;
}
template <typename T>
inline void vstore(T* p, Vec<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// ------------------------------------------------------------------ chunk <-> rows transposes
// dst[j * dld + i] = src[i * sld + j] for an 8 x 8 (float) / 4 x 4 (double) block. The chunk
// buffer holds one output column per BL lanes; the rows of the output (and of the output
// gradient) are contiguous. A scalar copy would cost a load and a store per element, more
// than the recursion itself.
#if defined(__AVX__)
inline void block_transpose(const float* src, int64_t sld, float* dst, int64_t dld) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + sld), r2 = _mm256_loadu_ps(src + 2 * sld),
         r3 = _mm256_loadu_ps(src + 3 * sld), r4 = _mm256_loadu_ps(src + 4 * sld),
         r5 = _mm256_loadu_ps(src + 5 * sld), r6 = _mm256_loadu_ps(src + 6 * sld),
         r7 = _mm256_loadu_ps(src + 7 * sld);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
         s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
         s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
         s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(dst + dld, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(dst + 2 * dld, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(dst + 3 * dld, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(dst + 4 * dld, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(dst + 5 * dld, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(dst + 6 * dld, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(dst + 7 * dld, _mm256_permute2f128_ps(s3, s7, 0x31));
}

inline void block_transpose(const double* src, int64_t sld, double* dst, int64_t dld) {
  __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + sld), r2 = _mm256_loadu_pd(src + 2 * sld),
          r3 = _mm256_loadu_pd(src + 3 * sld);
  __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1), t2 = _mm256_unpacklo_pd(r2, r3),
          t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(dst + dld, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(dst + 2 * dld, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(dst + 3 * dld, _mm256_permute2f128_pd(t1, t3, 0x31));
}
template <typename T>
constexpr int kBlock = 32 / sizeof(T);
#else
template <typename T>
inline void block_transpose(const T* src, int64_t sld, T* dst, int64_t dld) {
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) dst[j * dld + i] = src[i * sld + j];
}
template <typename T>
constexpr int kBlock = 4;
#endif

// rows[b * ld + k] = buf[k * BL + b] for b < nb, k < D (to_rows); the reverse otherwise
template <typename T>
inline void chunk_rows(T* buf, T* rows, int64_t ld, int D, int nb, bool to_rows) {
  constexpr int W = kBlock<T>;
  constexpr int BL = kLanes<T>;
  int k = 0;
  if (nb == BL) {
    for (; k + W <= D; k += W)
      for (int g = 0; g < BL; g += W) {
        if (to_rows)
          block_transpose(buf + k * BL + g, BL, rows + g * ld + k, ld);
        else
          block_transpose(rows + g * ld + k, ld, buf + k * BL + g, BL);
      }
  }
  for (int b = 0; b < nb; ++b)
    for (int kk = k; kk < D; ++kk) {
      if (to_rows)
        rows[b * ld + kk] = buf[kk * BL + b];
      else
        buf[kk * BL + b] = rows[b * ld + kk];
    }
}

template <typename T>
struct Coef {
  const T* diag;
  const T* off;
  const T* a;
  const T* b;
  int stride;
  explicit Coef(const T* c, int lmax)
      : diag(c), off(c + (lmax + 1)), a(c + 2 * (lmax + 1)), b(c + 2 * (lmax + 1) + (lmax + 1) * (lmax + 1)),
        stride(lmax + 1) {}
};

// The chunk's vectors as (X, Y, Z) = (z, x, y); padding lanes are the unit vector (0, 0, 1).
template <typename T, bool NORM>
inline void load_chunk(const T* x, int64_t i0, int nb, Vec<T>& X, Vec<T>& Y, Vec<T>& Z, Vec<T>& R2, Vec<T>& INV) {
  constexpr int BL = kLanes<T>;
  alignas(64) T xs[BL], ys[BL], zs[BL];
  for (int b = 0; b < BL; ++b) {
    const bool in = b < nb;
    const T* p = x + 3 * (i0 + (in ? b : 0));
    xs[b] = in ? p[2] : T(0);
    ys[b] = in ? p[0] : T(0);
    zs[b] = in ? p[1] : T(1);
  }
  X = vload(xs);
  Y = vload(ys);
  Z = vload(zs);
  const Vec<T> r2 = X * X + Y * Y + Z * Z;
  if (NORM) {
    Vec<T> r;
    for (int b = 0; b < BL; ++b) r[b] = std::sqrt(r2[b]);
    INV = splat(T(1)) / r;
    X *= INV;
    Y *= INV;
    Z *= INV;
    R2 = splat(T(1));
  } else {
    R2 = r2;
    INV = splat(T(1));
  }
}

template <typename T>
struct Scratch {  // one per thread: the chunk buffer (D x BL), 64-byte aligned
  T* p;
  explicit Scratch(int D) {
    size_t bytes = (static_cast<size_t>(D) * kLanes<T> * sizeof(T) + 63) / 64 * 64;
    p = static_cast<T*>(std::aligned_alloc(64, bytes));
    std::memset(p, 0, bytes);
  }
  ~Scratch() { std::free(p); }
};

// ---------------------------------------------------------------------------------- forward
template <typename T, int LC, bool NORM>
void forward_impl(const T* x, T* out, int64_t n, int lmax_rt, const T* coef, const int32_t* cols, int ncols,
                  int nthreads) {
  using V = Vec<T>;
  constexpr int BL = kLanes<T>;
  const int lmax = LC >= 0 ? LC : lmax_rt;
  const int D = (lmax + 1) * (lmax + 1);
  const Coef<T> cf(coef, lmax);
  const int64_t nchunks = (n + BL - 1) / BL;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, nchunks)));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    Scratch<T> scratch(D);
    T* __restrict__ buf = scratch.p;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t i0 = c * BL;
      const int nb = static_cast<int>(std::min<int64_t>(BL, n - i0));
      V X, Y, Z, R2, INV;
      load_chunk<T, NORM>(x, i0, nb, X, Y, Z, R2, INV);
      V C = splat(T(1)), S = splat(T(0)), QD = splat(cf.diag[0]);
      for (int m = 0; m <= lmax; ++m) {
        if (m > 0) {
          const V c2 = X * C - Y * S;
          S = X * S + Y * C;
          C = c2;
          QD *= cf.diag[m];
        }
        // Qt_l^m C_m and Qt_l^m S_m into the chunk buffer
        auto put = [&](int l, V q) {
          if (m == 0) {
            vstore(buf + (l * l + l) * BL, q);
          } else {
            vstore(buf + (l * l + l + m) * BL, q * C);
            vstore(buf + (l * l + l - m) * BL, q * S);
          }
        };
        put(m, QD);
        if (m + 1 > lmax) continue;
        V q2 = QD, q1 = cf.off[m + 1] * Z * QD;
        put(m + 1, q1);
        for (int l = m + 2; l <= lmax; ++l) {
          const T a = cf.a[l * cf.stride + m], bb = cf.b[l * cf.stride + m];
          const V q = NORM ? a * Z * q1 - bb * q2 : a * Z * q1 - bb * R2 * q2;
          q2 = q1;
          q1 = q;
          put(l, q);
        }
      }
      if (cols == nullptr) {
        chunk_rows(buf, out + i0 * ncols, ncols, D, nb, true);
      } else {
        for (int b = 0; b < nb; ++b) {
          T* __restrict__ o = out + (i0 + b) * ncols;
          for (int j = 0; j < ncols; ++j) o[j] = buf[cols[j] * BL + b];
        }
      }
    }
  }
}

// --------------------------------------------------------------------------------- backward
template <typename T, int LC, bool NORM>
void backward_impl(const T* x, const T* g, T* gx, int64_t n, int lmax_rt, const T* coef, const int32_t* cols,
                   int ncols, int nthreads) {
  using V = Vec<T>;
  constexpr int BL = kLanes<T>;
  const int lmax = LC >= 0 ? LC : lmax_rt;
  const int D = (lmax + 1) * (lmax + 1);
  const Coef<T> cf(coef, lmax);
  const int64_t nchunks = (n + BL - 1) / BL;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, nchunks)));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    Scratch<T> scratch(D);
    T* __restrict__ gb = scratch.p;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t i0 = c * BL;
      const int nb = static_cast<int>(std::min<int64_t>(BL, n - i0));
      V X, Y, Z, R2, INV;
      load_chunk<T, NORM>(x, i0, nb, X, Y, Z, R2, INV);
      // the output gradient of this chunk, transposed (unrequested degrees and padding lanes: 0)
      if (cols == nullptr) {
        chunk_rows(gb, const_cast<T*>(g) + i0 * ncols, ncols, D, nb, false);
      } else {
        for (int b = 0; b < nb; ++b) {
          const T* __restrict__ gr = g + (i0 + b) * ncols;
          for (int j = 0; j < ncols; ++j) gb[cols[j] * BL + b] = T(0);  // a degree may come twice
          for (int j = 0; j < ncols; ++j) gb[cols[j] * BL + b] += gr[j];
        }
      }
      for (int b = nb; b < BL; ++b)
        for (int k = 0; k < D; ++k) gb[k * BL + b] = T(0);
      const V zero = splat(T(0));
      V C = splat(T(1)), S = zero, CP = zero, SP = zero, QD = splat(cf.diag[0]);
      V SZ = zero, SR = zero, TX = zero, TY = zero;
      for (int m = 0; m <= lmax; ++m) {
        if (m > 0) {
          CP = C;
          SP = S;
          const V c2 = X * C - Y * S;
          S = X * S + Y * C;
          C = c2;
          QD *= cf.diag[m];
        }
        // A: sum_l Qt g, B: sum_l dQt/dZ g, E: sum_l dQt/dR2 g; 1: the +m (cos) rows, 2: the -m (sin) rows
        V A1 = QD * vload(gb + (m * m + 2 * m) * BL), A2 = m ? QD * vload(gb + (m * m) * BL) : zero;
        V B1 = zero, B2 = zero, E1 = zero, E2 = zero;
        if (m + 1 <= lmax) {
          const int l = m + 1;
          const T e = cf.off[l];
          V q2 = QD, dz2 = zero, dr2 = zero;
          V q1 = e * Z * QD, dz1 = e * QD, dr1 = zero;
          const V gc = vload(gb + (l * l + l + m) * BL);
          A1 += q1 * gc;
          B1 += dz1 * gc;
          if (m) {
            const V gs = vload(gb + (l * l + l - m) * BL);
            A2 += q1 * gs;
            B2 += dz1 * gs;
          }
          for (int l2 = m + 2; l2 <= lmax; ++l2) {
            const T a = cf.a[l2 * cf.stride + m], bb = cf.b[l2 * cf.stride + m];
            const V q = a * Z * q1 - bb * R2 * q2;
            const V dz = a * (q1 + Z * dz1) - bb * R2 * dz2;
            const V dr = a * Z * dr1 - bb * (q2 + R2 * dr2);
            q2 = q1;
            q1 = q;
            dz2 = dz1;
            dz1 = dz;
            dr2 = dr1;
            dr1 = dr;
            const V gc2 = vload(gb + (l2 * l2 + l2 + m) * BL);
            A1 += q * gc2;
            B1 += dz * gc2;
            E1 += dr * gc2;
            if (m) {
              const V gs2 = vload(gb + (l2 * l2 + l2 - m) * BL);
              A2 += q * gs2;
              B2 += dz * gs2;
              E2 += dr * gs2;
            }
          }
        }
        if (m == 0) {
          SZ += B1;
          SR += E1;
        } else {
          const T mm = T(m);
          SZ += C * B1 + S * B2;
          SR += C * E1 + S * E2;
          TX += mm * (A1 * CP + A2 * SP);
          TY += mm * (A2 * CP - A1 * SP);
        }
      }
      V gX = TX + T(2) * X * SR, gY = TY + T(2) * Y * SR, gZ = SZ + T(2) * Z * SR;
      if (NORM) {  // project onto the tangent plane, chain rule of x / |x|
        const V dot = X * gX + Y * gY + Z * gZ;
        gX = (gX - X * dot) * INV;
        gY = (gY - Y * dot) * INV;
        gZ = (gZ - Z * dot) * INV;
      }
      for (int b = 0; b < nb; ++b) {
        T* o = gx + 3 * (i0 + b);  // (X, Y, Z) = (z, x, y) of the input
        o[0] = gY[b];
        o[1] = gZ[b];
        o[2] = gX[b];
      }
    }
  }
}

// ---------------------------------------------------------------------------------- dispatch
template <typename T, bool NORM>
void forward_dispatch(const T* x, T* out, int64_t n, int lmax, const T* coef, const int32_t* cols, int ncols,
                      int nt) {
  switch (lmax) {
#define EQ_CASE(L) \
  case L: return forward_impl<T, L, NORM>(x, out, n, lmax, coef, cols, ncols, nt);
    EQ_CASE(1) EQ_CASE(2) EQ_CASE(3) EQ_CASE(4) EQ_CASE(5) EQ_CASE(6) EQ_CASE(7) EQ_CASE(8)
#undef EQ_CASE
    default: return forward_impl<T, -1, NORM>(x, out, n, lmax, coef, cols, ncols, nt);
  }
}

template <typename T, bool NORM>
void backward_dispatch(const T* x, const T* g, T* gx, int64_t n, int lmax, const T* coef, const int32_t* cols,
                       int ncols, int nt) {
  switch (lmax) {
#define EQ_CASE(L) \
  case L: return backward_impl<T, L, NORM>(x, g, gx, n, lmax, coef, cols, ncols, nt);
    EQ_CASE(1) EQ_CASE(2) EQ_CASE(3) EQ_CASE(4) EQ_CASE(5) EQ_CASE(6) EQ_CASE(7) EQ_CASE(8)
#undef EQ_CASE
    default: return backward_impl<T, -1, NORM>(x, g, gx, n, lmax, coef, cols, ncols, nt);
  }
}

}  // namespace

extern "C" {

// x: (n, 3) contiguous; out: (n, ncols); cols: the ncols flat indices l*l + l + m to write, or
// NULL for all (lmax + 1)^2 in order; coef: see Coef (2 (lmax + 1) + 2 (lmax + 1)^2 values).
void eq_sh_forward_f32(const float* x, float* out, int64_t n, int lmax, const float* coef, const int32_t* cols,
                       int ncols, int normalize, int nthreads) {
  if (normalize)
    forward_dispatch<float, true>(x, out, n, lmax, coef, cols, ncols, nthreads);
  else
    forward_dispatch<float, false>(x, out, n, lmax, coef, cols, ncols, nthreads);
}

void eq_sh_forward_f64(const double* x, double* out, int64_t n, int lmax, const double* coef, const int32_t* cols,
                       int ncols, int normalize, int nthreads) {
  if (normalize)
    forward_dispatch<double, true>(x, out, n, lmax, coef, cols, ncols, nthreads);
  else
    forward_dispatch<double, false>(x, out, n, lmax, coef, cols, ncols, nthreads);
}

// g: (n, ncols) output gradient (same column map as the forward); gx: (n, 3) written.
void eq_sh_backward_f32(const float* x, const float* g, float* gx, int64_t n, int lmax, const float* coef,
                        const int32_t* cols, int ncols, int normalize, int nthreads) {
  if (normalize)
    backward_dispatch<float, true>(x, g, gx, n, lmax, coef, cols, ncols, nthreads);
  else
    backward_dispatch<float, false>(x, g, gx, n, lmax, coef, cols, ncols, nthreads);
}

void eq_sh_backward_f64(const double* x, const double* g, double* gx, int64_t n, int lmax, const double* coef,
                        const int32_t* cols, int ncols, int normalize, int nthreads) {
  if (normalize)
    backward_dispatch<double, true>(x, g, gx, n, lmax, coef, cols, ncols, nthreads);
  else
    backward_dispatch<double, false>(x, g, gx, n, lmax, coef, cols, ncols, nthreads);
}

}  // extern "C"
