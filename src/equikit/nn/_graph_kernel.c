/* Fused neighbour sums of equikit.nn.GINConv (equikit.nn._graph_native).
 *
 * A graph's edges are first put in compressed-row (CSR) order twice by a stable counting sort:
 * grouped by target (rows = targets, columns = sources: the forward sum) and grouped by source
 * (rows = sources, columns = targets: the backward sum). With the rows in hand every sum below
 * is one pass over the rows: each output row is owned by one thread (OpenMP over rows), stays in
 * L1 while its incoming rows are added, and no (E, C) message tensor is ever written, except
 * the gradient of the GINE edge term, which its caller needs.
 *
 *   GIN   out_i = s x_i + sum_{j -> i} x_j                                (s = 1 + eps)
 *   GINE  out_i = s x_i + sum_{e = (j -> i)} relu(x_j + a_e)
 *         dx_j  = s g_j + sum_{e = (j -> i)} [x_j + a_e > 0] g_i,   da_e = [x_j + a_e > 0] g_i
 *
 * The GIN backward is the GIN forward on the source-grouped rows. Within a row the edges keep
 * their input order (the sort is stable), so a sum runs in the same order as index_add_ over
 * the input edge list. relu(v) is written (v < 0 ? 0 : v), so NaN propagates as in torch.relu;
 * the mask is (v > 0), as in torch's relu backward. */
#include <stdint.h>
#include <string.h>

/* 1 when the two buffers hold the same bytes (the CSR cache's check that an edge_index is the
 * one its rows were built from). */
int eq_gin_same(const void *a, const void *b, int64_t nbytes) {
    return memcmp(a, b, (size_t)nbytes) == 0;
}

/* rowptr (n + 1), col (e), eid (e) of the edges grouped by key (stable); key, other (e) are
 * node ids. Returns -1, or the position of the first edge whose key or other id is outside
 * [0, n) (then nothing is written but rowptr). */
int64_t eq_gin_csr(int64_t n, int64_t e, const int64_t *key, const int64_t *other,
                   int64_t *rowptr, int64_t *col, int64_t *eid) {
    for (int64_t i = 0; i <= n; i++) rowptr[i] = 0;
    for (int64_t k = 0; k < e; k++) {
        const int64_t a = key[k], b = other[k];
        if (a < 0 || a >= n || b < 0 || b >= n) return k;
        rowptr[a + 1]++;
    }
    for (int64_t i = 0; i < n; i++) rowptr[i + 1] += rowptr[i];
    /* rowptr[i] is the next free slot of row i while filling; shifted back afterwards */
    for (int64_t k = 0; k < e; k++) {
        const int64_t slot = rowptr[key[k]]++;
        col[slot] = other[k];
        eid[slot] = k;
    }
    for (int64_t i = n; i > 0; i--) rowptr[i] = rowptr[i - 1];
    rowptr[0] = 0;
    return -1;
}

#define GIN_SUM(NAME, T)                                                                          \
    void NAME(int64_t n, int64_t c, const int64_t *rowptr, const int64_t *col, const T *x,        \
              double scale, T *out, int threads) {                                                \
        const T s = (T)scale;                                                                     \
        _Pragma("omp parallel for schedule(dynamic, 64) num_threads(threads) if (threads > 1)")   \
        for (int64_t i = 0; i < n; i++) {                                                         \
            T *restrict o = out + i * c;                                                          \
            const T *restrict xi = x + i * c;                                                     \
            for (int64_t f = 0; f < c; f++) o[f] = s * xi[f];                                     \
            for (int64_t k = rowptr[i]; k < rowptr[i + 1]; k++) {                                 \
                const T *restrict xj = x + col[k] * c;                                            \
                for (int64_t f = 0; f < c; f++) o[f] += xj[f];                                    \
            }                                                                                     \
        }                                                                                         \
    }

GIN_SUM(eq_gin_sum_f32, float)
GIN_SUM(eq_gin_sum_f64, double)

/* GINE forward on target-grouped rows: col = sources, eid = edge ids (rows of a). */
#define GINE_FORWARD(NAME, T)                                                                     \
    void NAME(int64_t n, int64_t c, const int64_t *rowptr, const int64_t *col, const int64_t *eid, \
              const T *x, const T *a, double scale, T *out, int threads) {                        \
        const T s = (T)scale;                                                                     \
        _Pragma("omp parallel for schedule(dynamic, 64) num_threads(threads) if (threads > 1)")   \
        for (int64_t i = 0; i < n; i++) {                                                         \
            T *restrict o = out + i * c;                                                          \
            const T *restrict xi = x + i * c;                                                     \
            for (int64_t f = 0; f < c; f++) o[f] = s * xi[f];                                     \
            for (int64_t k = rowptr[i]; k < rowptr[i + 1]; k++) {                                 \
                const T *restrict xj = x + col[k] * c;                                            \
                const T *restrict ae = a + eid[k] * c;                                            \
                for (int64_t f = 0; f < c; f++) {                                                 \
                    const T v = xj[f] + ae[f];                                                    \
                    o[f] += v < 0 ? (T)0 : v;                                                     \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

GINE_FORWARD(eq_gine_forward_f32, float)
GINE_FORWARD(eq_gine_forward_f64, double)

/* GINE backward on source-grouped rows: col = targets, eid = edge ids. dx (n, c) always
 * written; da (e, c) written when not NULL (every edge is in exactly one row, so every row
 * of da is written once). */
#define GINE_BACKWARD(NAME, T)                                                                    \
    void NAME(int64_t n, int64_t c, const int64_t *rowptr, const int64_t *col, const int64_t *eid, \
              const T *x, const T *a, const T *g, double scale, T *dx, T *da, int threads) {      \
        const T s = (T)scale;                                                                     \
        _Pragma("omp parallel for schedule(dynamic, 64) num_threads(threads) if (threads > 1)")   \
        for (int64_t j = 0; j < n; j++) {                                                         \
            T *restrict o = dx + j * c;                                                           \
            const T *restrict xj = x + j * c;                                                     \
            const T *restrict gj = g + j * c;                                                     \
            for (int64_t f = 0; f < c; f++) o[f] = s * gj[f];                                     \
            for (int64_t k = rowptr[j]; k < rowptr[j + 1]; k++) {                                 \
                const T *restrict gi = g + col[k] * c;                                            \
                const T *restrict ae = a + eid[k] * c;                                            \
                if (da) {                                                                         \
                    T *restrict d = da + eid[k] * c;                                              \
                    for (int64_t f = 0; f < c; f++) {                                             \
                        const T m = xj[f] + ae[f] > 0 ? gi[f] : (T)0;                             \
                        d[f] = m;                                                                 \
                        o[f] += m;                                                                \
                    }                                                                             \
                } else {                                                                          \
                    for (int64_t f = 0; f < c; f++) o[f] += xj[f] + ae[f] > 0 ? gi[f] : (T)0;     \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

GINE_BACKWARD(eq_gine_backward_f32, float)
GINE_BACKWARD(eq_gine_backward_f64, double)
