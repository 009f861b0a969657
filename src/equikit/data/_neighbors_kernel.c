/* Candidate scan of equikit.data.neighbors: for each centre, the runs of bin keys around its
 * bin are found by binary search in the sorted keys of the images, and the images closer
 * than the cutoff are counted (pass 1) or written (pass 2). The same operations as the
 * pure-PyTorch path (_candidates + _pairs), in float64; OpenMP over centres. */
#include <stdint.h>

static int64_t lower_bound(const int64_t *a, int64_t n, int64_t v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t m = (lo + hi) >> 1;
        if (a[m] < v) lo = m + 1; else hi = m;
    }
    return lo;
}

static int64_t upper_bound(const int64_t *a, int64_t n, int64_t v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t m = (lo + hi) >> 1;
        if (a[m] <= v) lo = m + 1; else hi = m;
    }
    return lo;
}

/* centre c: bins cbin[3c..3c+2], structure cb[c]; images sorted by key with coordinates
 * gxyz (G, 3); nb = global bin extents; k = stencil half-width in bins. */
static int64_t scan(int64_t c, const double *cxyz, const int64_t *cbin, const int64_t *cb,
                    const int64_t *keys, const double *gxyz, int64_t G, const int64_t *nb,
                    int64_t k, double cut2, int64_t *out) {
    int64_t count = 0;
    const double x = cxyz[3 * c], y = cxyz[3 * c + 1], z = cxyz[3 * c + 2];
    const int64_t bx = cbin[3 * c], by0 = cbin[3 * c + 1], bz0 = cbin[3 * c + 2];
    const int64_t xlo = bx - k < 0 ? 0 : bx - k;
    const int64_t xhi = bx + k > nb[0] - 1 ? nb[0] - 1 : bx + k;
    /* dy outer, dz inner: the run order of the PyTorch path, so both give the same edges
     * in the same order */
    for (int64_t dy = -k; dy <= k; dy++) {
        const int64_t by = by0 + dy;
        if (by < 0 || by >= nb[1]) continue;
        for (int64_t dz = -k; dz <= k; dz++) {
            const int64_t bz = bz0 + dz;
            if (bz < 0 || bz >= nb[2]) continue;
            const int64_t base = ((cb[c] * nb[2] + bz) * nb[1] + by) * nb[0];
            const int64_t lo = lower_bound(keys, G, base + xlo);
            const int64_t hi = upper_bound(keys, G, base + xhi);
            for (int64_t g = lo; g < hi; g++) {
                const double ex = gxyz[3 * g] - x, ey = gxyz[3 * g + 1] - y, ez = gxyz[3 * g + 2] - z;
                if (ex * ex + ey * ey + ez * ez < cut2) {
                    if (out) out[count] = g;
                    count++;
                }
            }
        }
    }
    return count;
}

void eq_nl_count(int64_t C, const double *cxyz, const int64_t *cbin, const int64_t *cb,
                 const int64_t *keys, const double *gxyz, int64_t G, const int64_t *nb, int64_t k,
                 double cut2, int64_t *counts, int threads) {
    #pragma omp parallel for schedule(dynamic, 256) num_threads(threads)
    for (int64_t c = 0; c < C; c++)
        counts[c] = scan(c, cxyz, cbin, cb, keys, gxyz, G, nb, k, cut2, 0);
}

void eq_nl_fill(int64_t C, const double *cxyz, const int64_t *cbin, const int64_t *cb,
                const int64_t *keys, const double *gxyz, int64_t G, const int64_t *nb, int64_t k,
                double cut2, const int64_t *offsets, int64_t *out, int threads) {
    #pragma omp parallel for schedule(dynamic, 256) num_threads(threads)
    for (int64_t c = 0; c < C; c++)
        scan(c, cxyz, cbin, cb, keys, gxyz, G, nb, k, cut2, out + offsets[c]);
}
