/* Breadth-first growth of permutation Cayley graphs with one bit per permutation.
 *
 * A permutation p of n <= 16 items is identified with its lexicographic rank in [0, n!)
 * (Lehmer code). Three bitsets of n! bits hold the visited set V, the current layer F and
 * the next layer N. Each state of F is unranked, every generator is applied (q[i] = p[g[i]],
 * right multiplication), the image is ranked and its bit set in V and N with an atomic OR,
 * so threads never need a sort or a hash table. Unranking decodes the last 6 positions from
 * a table and reuses the others between neighbouring ranks. Written for equikit; compiled
 * on first use.
 */
#include <stdint.h>
#include <string.h>

static void factorials(int n, uint64_t *fact) {
    fact[0] = 1;
    for (int i = 1; i <= n; i++) fact[i] = fact[i - 1] * (uint64_t)i;
}

static inline uint64_t rank_perm(const uint8_t *p, int n, const uint64_t *fact) {
    uint32_t used = 0;
    uint64_t r = 0;
    for (int i = 0; i < n; i++) {
        uint32_t v = p[i];
        uint32_t smaller_used = (uint32_t)__builtin_popcount(used & ((1u << v) - 1u));
        r += (uint64_t)(v - smaller_used) * fact[n - 1 - i];
        used |= 1u << v;
    }
    return r;
}

/* Digits of r in the factorial base by a floating reciprocal (exact after a +-1 fix, as
 * r < 2^53), and the d-th still unused value read from a list of 4-bit entries from which
 * it is then cut out: no loops inside the loop over positions. This gives positions [0, m) of
 * the permutation of rank r (they depend only on r / (n-m)!) and returns the values not used
 * there as a list of 4-bit entries in increasing order. */
static inline uint64_t unrank_prefix(uint64_t r, int n, int m, const uint64_t *fact,
                                     const double *inv, uint8_t *p) {
    uint64_t list = 0xFEDCBA9876543210ull;
    for (int i = 0; i < m; i++) {
        uint64_t f = fact[n - 1 - i];
        uint64_t d = (uint64_t)((double)r * inv[n - 1 - i]);
        if (d * f > r) d--;
        else if ((d + 1) * f <= r) d++;
        r -= d * f;
        int sh = 4 * (int)d;
        p[i] = (uint8_t)((list >> sh) & 15u);
        uint64_t low = sh ? (list & ((1ull << sh) - 1ull)) : 0ull;
        uint64_t high = (sh + 4 < 64) ? ((list >> (sh + 4)) << sh) : 0ull;
        list = low | high;
    }
    return list;
}

/* The whole permutation of rank r: its prefix of length n. */
static inline void unrank_perm(uint64_t r, int n, const uint64_t *fact, const double *inv,
                               uint8_t *p) {
    (void)unrank_prefix(r, n, n, fact, inv, p);
}

static void reciprocals(int n, const uint64_t *fact, double *inv) {
    for (int i = 0; i <= n; i++) inv[i] = 1.0 / (double)fact[i];
}

uint64_t eq_rank(const int64_t *perm, int n) {
    uint64_t fact[21];
    uint8_t p[16];
    factorials(n, fact);
    for (int i = 0; i < n; i++) p[i] = (uint8_t)perm[i];
    return rank_perm(p, n, fact);
}

/* ranks of m permutations (m x n int64) -> out (m uint64) */
void eq_rank_many(const int64_t *perms, int64_t m, int n, uint64_t *out) {
    uint64_t fact[21];
    uint8_t p[16];
    factorials(n, fact);
    for (int64_t k = 0; k < m; k++) {
        for (int i = 0; i < n; i++) p[i] = (uint8_t)perms[k * n + i];
        out[k] = rank_perm(p, n, fact);
    }
}

/* permutations of m ranks -> out (m x n int64) */
void eq_unrank_many(const uint64_t *ranks, int64_t m, int n, int64_t *out) {
    uint64_t fact[21];
    double inv[21];
    uint8_t p[16];
    factorials(n, fact);
    reciprocals(n, fact, inv);
    for (int64_t k = 0; k < m; k++) {
        unrank_perm(ranks[k], n, fact, inv, p);
        for (int i = 0; i < n; i++) out[k * n + i] = p[i];
    }
}

/* positions of set bits of a bitset (at most cap) -> out; returns how many were written */
int64_t eq_list_bits(const uint64_t *bits, int64_t nwords, uint64_t *out, int64_t cap) {
    int64_t c = 0;
    for (int64_t w = 0; w < nwords && c < cap; w++) {
        uint64_t b = bits[w];
        while (b && c < cap) {
            out[c++] = (uint64_t)w * 64u + (uint64_t)__builtin_ctzll(b);
            b &= b - 1u;
        }
    }
    return c;
}

static inline int64_t flush(uint64_t *V, uint64_t *N, const uint64_t *img, int m) {
    int64_t added = 0;
    for (int k = 0; k < m; k++) {
        uint64_t s = img[k];
        uint64_t bit = 1ull << (s & 63u);
        uint64_t *slot = V + (s >> 6);
        if (__atomic_load_n(slot, __ATOMIC_RELAXED) & bit) continue;
        uint64_t old = __atomic_fetch_or(slot, bit, __ATOMIC_RELAXED);
        if (!(old & bit)) {
            __atomic_fetch_or(N + (s >> 6), bit, __ATOMIC_RELAXED);
            added++;
        }
    }
    return added;
}

#define EQ_BATCH 1024

/* One layer: expand F into N (new states only, also marked in V); returns |N|. Images are
 * ranked into a batch with their visited words prefetched, then tested together, so the
 * cache misses of the random accesses overlap instead of queueing one by one. */
int64_t eq_bfs_layer(int n, int G, const uint8_t *gens, const uint64_t *F, uint64_t *V,
                     uint64_t *N, int64_t nwords, int threads) {
    uint64_t fact[21];
    double inv[21];
    factorials(n, fact);
    reciprocals(n, fact, inv);
    /* The last K positions of the permutation of rank r hold the K values left over by the
     * first n-K, in the order of the (r mod K!)-th permutation of K items: a table of K!
     * packed index lists. Each thread visits ranks in increasing order, so the first n-K
     * positions are recomputed only when r / K! changes (unranking was half the time). */
    int K = n < 6 ? n : 6;
    uint64_t kf = fact[K];
    double inv_kf = inv[K];
    uint32_t tail[720];
    for (uint64_t lo = 0; lo < kf; lo++) {
        uint8_t t[16];
        unrank_perm(lo, K, fact, inv, t);
        uint32_t packed = 0;
        for (int j = 0; j < K; j++) packed |= (uint32_t)t[j] << (4 * j);
        tail[lo] = packed;
    }
    int64_t total = 0;
    int64_t per_block = 1024;
    int64_t nblocks = (nwords + per_block - 1) / per_block;
    /* one block (n <= 8) runs serially: waking threads costs more than the layer */
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total) num_threads(threads) \
    if (nblocks > 1)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        uint8_t p[16], q[16];
        uint64_t img[EQ_BATCH];
        uint64_t cur_hi = UINT64_MAX, rest = 0;
        int m = 0;
        int64_t w_end = (blk + 1) * per_block < nwords ? (blk + 1) * per_block : nwords;
        for (int64_t w = blk * per_block; w < w_end; w++) {
            uint64_t bits = F[w];
            while (bits) {
                uint64_t r = (uint64_t)w * 64u + (uint64_t)__builtin_ctzll(bits);
                bits &= bits - 1u;
                uint64_t hi = (uint64_t)((double)r * inv_kf);
                if (hi * kf > r) hi--;
                else if ((hi + 1) * kf <= r) hi++;
                if (hi != cur_hi) {
                    rest = unrank_prefix(r, n, n - K, fact, inv, p);
                    cur_hi = hi;
                }
                uint32_t pat = tail[r - hi * kf];
                for (int j = 0; j < K; j++)
                    p[n - K + j] = (uint8_t)((rest >> (4 * ((pat >> (4 * j)) & 15u))) & 15u);
                for (int g = 0; g < G; g++) {
                    const uint8_t *gg = gens + (int64_t)g * n;
                    for (int i = 0; i < n; i++) q[i] = p[gg[i]];
                    uint64_t s = rank_perm(q, n, fact);
                    __builtin_prefetch(V + (s >> 6), 1, 1);
                    img[m++] = s;
                    if (m == EQ_BATCH) {
                        total += flush(V, N, img, m);
                        m = 0;
                    }
                }
            }
        }
        total += flush(V, N, img, m);
    }
    return total;
}
