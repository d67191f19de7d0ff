/* Fused top-k of the scores <x_m, y_n> + h_n, float32, CPU: the score tile lives in registers.
 *
 * brenier.ot.fused compiles this file with the machine's C compiler at first use and calls it
 * through ctypes (see that module for why and how). Semantics match brenier.ot.potential:
 * each row's k best scores, best first; equal scores ordered by ascending target index, and at
 * the k-th place the lowest indices kept (columns are visited in ascending order and a score
 * enters only if it beats the current k-th best strictly).
 *
 * Layout: targets packed in panels of P = 2 * L columns (L floats per vector register):
 * ypack[p][q][c] = y[p * P + c][q] (p < npanels, q < d, c < P), hpad[n] = h_n, with -inf in
 * the padding columns past N. One micro-kernel step computes an R x P score block with
 * R * 2 vector accumulators (d fused multiply-adds each, in the order q = 0 .. d-1, so a pair's
 * score does not depend on where it sits in a block), then compares it with each row's k-th best
 * -- one vector compare per L scores; a row looks at single scores only when some beat it.
 * Targets are streamed in chunks of `chunk` panels (sized by the caller to stay in L2) and every
 * row of x meets one chunk before the next, so a chunk is read from memory once per call.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define L 16 /* 32 vector registers: 8 rows x 2 accumulators + 2 target vectors */
#define R 8
#else
#define L 8 /* AVX2 / NEON / SSE: 16 registers of 8 floats (or pairs of 4) */
#define R 6
#endif
#define P (2 * L)

typedef float vf __attribute__((vector_size(4 * L), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * L), aligned(4)));

int brenier_panel_width(void) { return P; }

/* insert score s of column j into a row's list (tv desc, ti), given s > tv[k-1] */
static inline void insert(float *tv, int64_t *ti, int k, float s, int64_t j) {
    int p = k - 1;
    while (p > 0 && tv[p - 1] < s) {
        tv[p] = tv[p - 1];
        ti[p] = ti[p - 1];
        p--;
    }
    tv[p] = s;
    ti[p] = j;
}

/* every row's list empty: scores -inf (any real score beats it), indices 0 */
static void clear_lists(float *tv, int64_t *ti, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        tv[i] = -INFINITY;
        ti[i] = 0;
    }
}

/* offer one row's scores of panel p (two vectors, columns p * P ...) to its list, in column order */
static inline void offer(float *rv, int64_t *ri, int k, const vf *a, const vf *b, int64_t p) {
    for (int l = 0; l < L; l++)
        if ((*a)[l] > rv[k - 1]) insert(rv, ri, k, (*a)[l], p * P + l);
    for (int l = 0; l < L; l++)
        if ((*b)[l] > rv[k - 1]) insert(rv, ri, k, (*b)[l], p * P + L + l);
}

static inline int any_set(const vi *m) {
    int32_t a = 0;
    for (int l = 0; l < L; l++) a |= (*m)[l];
    return a != 0;
}

/* x (m, d) row-major; tv (m, k), ti (m, k) outputs. */
void brenier_topk_f32(const float *x, int64_t m, int64_t d, const float *ypack, const float *hpad,
                      int64_t npanels, int64_t chunk, int32_t k, float *tv, int64_t *ti) {
    clear_lists(tv, ti, m * k);
    if (chunk < 1) chunk = 1;
    for (int64_t c0 = 0; c0 < npanels; c0 += chunk) {
        int64_t c1 = c0 + chunk < npanels ? c0 + chunk : npanels;
        for (int64_t r0 = 0; r0 < m; r0 += R) {
            int nr = m - r0 < R ? (int)(m - r0) : R;
            const float *xr[R];
            for (int r = 0; r < R; r++) xr[r] = x + (r0 + (r < nr ? r : 0)) * d; /* pad rows: ignored */
            for (int64_t p = c0; p < c1; p++) {
                const float *yp = ypack + p * d * P;
                vf acc[R][2];
                vf h0 = *(const vf *)(hpad + p * P), h1 = *(const vf *)(hpad + p * P + L);
                for (int r = 0; r < R; r++) {
                    acc[r][0] = h0;
                    acc[r][1] = h1;
                }
                for (int64_t q = 0; q < d; q++) {
                    vf y0 = *(const vf *)(yp + q * P), y1 = *(const vf *)(yp + q * P + L);
                    for (int r = 0; r < R; r++) {
                        float xs = xr[r][q];
                        acc[r][0] += xs * y0;
                        acc[r][1] += xs * y1;
                    }
                }
                for (int r = 0; r < nr; r++) {
                    float *rv = tv + (r0 + r) * k;
                    float kth = rv[k - 1];
                    vi above = (acc[r][0] > kth) | (acc[r][1] > kth);
                    if (any_set(&above)) offer(rv, ti + (r0 + r) * k, k, &acc[r][0], &acc[r][1], p);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * The same top-k, screened in bfloat16 (CPUs with AVX512-BF16): twice the multiply-adds per
 * instruction. Each RB x P block is first scored from bf16 copies x~, y~ of x and y (products
 * exact in float32, float32 sums). With err a rigorous bound on |s~ - s| (s~: a screened score,
 * s: the float32 kernel's score of the same pair), a row needs the exact scores of a panel only if
 * some s~ > T - err, where T is any lower bound on the row's final k-th best score. Two such bounds:
 * the k-th best exact score found so far, and -- from the screen alone -- the k-th largest
 * screened score minus err (k distinct targets score at least that). The second is what makes the
 * screen cheap: a row does not rescore each panel that improves its running best as it comes
 * (~ln(panels) of them in random order: ~2 % of the pairs at N = 10^4); it records such panels
 * as candidates and rescores them once every panel has been screened (or when its list is full),
 * its k most promising first: then its k-th best is exact, and the others must beat it less
 * err, which few do. Rescoring is the float32 kernel's arithmetic (the same order of multiply-adds:
 * the same bits), up to 4 panels interleaved (one panel's d dependent multiply-adds would wait on
 * the FMA latency); only rescored scores enter the list, each where (score desc, index asc) puts
 * it, so the order of rescoring does not matter. So the answer is the float32 kernel's answer, bit
 * for bit; only the work differs. A target left out satisfies s <= s~ + err <= T - margin < T:
 * strictly below the final k-th best, so no tie is lost to the lowest-index rule either.
 *
 * The bound, for a row x and any target (y, h), with ymax >= every |y_n|, rymax >= every
 * |y_n - y~_n|, hmax >= every |h_n| and v = 2^-24 (float32): x.y - x~.y~ = (x - x~).y + x~.(y - y~),
 * so |x.y - x~.y~| <= |x - x~| ymax + |x~| rymax (Cauchy-Schwarz; ~2^-8 |x| ymax, where the
 * worst case of the rounding alone is 2^-7 |x| ymax); the screened sum rounds at most d + 2
 * times and the float32 kernel's d times, v times a partial sum bounded by hmax + 2.02 |x| ymax;
 * flushed subnormals add at most d 2^-126 (ymax + |x| + 2). The constants below round each term
 * up, and every threshold is moved down by more than its own rounding.
 *
 * Two levels, for targets near a lower-dimensional subspace (autoencoder codes: the 60,000 MNIST
 * codes at d = 64 hold 99.9 % of their second moment in 32 principal axes). With q the targets'
 * principal axes, x.y = (q^T x).(q^T y); split q^T y = (y_A, y_B) after its first r coordinates,
 * likewise x' = x q = (x_A, x_B). A first screen scores only h + x~_A.y~_A (r/d of the work), and
 * a score lies within |x_B| |y_B| (a per-target vector, one multiply-add per 16 scores) plus its
 * own err of that, where err adds the rotation's error (x' in float32, q orthogonal to ~1e-15:
 * rot_err |x| ymax). The row-panels it cannot rule out get the full-d screen above, 4 interleaved,
 * and go on from there as in one level; both levels test against the same lower bound of the
 * final k-th best (from the full-d screened scores), each with its own err. Measured (ad hoc,
 * 20,000 samples, MNIST codes, d = 64, r = 32): argmax 1.2x the one-level screen at N = 10^4,
 * 1.5x at 6 10^4; top-4 1.0x and 1.35x.
 *
 * Returns the row-panels scored again (rescored in float32, or by the full-d screen after the
 * first of two levels), -1 when compiled without AVX512-BF16, -2 when out of memory.
 */
int brenier_has_bf16(void) {
#if defined(__AVX512BF16__)
    return 1;
#else
    return 0;
#endif
}

#if defined(__AVX512BF16__) && L == 16
/* rows of one screened block: 12 x 2 accumulators + 2 target vectors + a broadcast fit in the 32
   registers (measured ~6-10 % faster than 8 rows: each target load serves more rows) */
#define RB 12
/* rows whose screen state (candidates, bounds) lives at once: the targets are streamed once per
   such group, and the state stays small whatever m is (~100 KB for small k) */
#define GROUP_ROWS 2048
/* candidates a row holds before they are settled early (its list is then full): k + CAP_EXTRA */
#define CAP_EXTRA 4

/* offer a row's scores of panel p in any order of panels: a score enters when it beats the k-th
   best, or equals it with a lower index, so the list is the same as in column order */
static void offer_any_order(float *rv, int64_t *ri, int k, const vf *a, const vf *b, int64_t p) {
    for (int l = 0; l < P; l++) {
        float s = l < L ? (*a)[l] : (*b)[l - L];
        int64_t j = p * P + l;
        if (!(s > rv[k - 1] || (s == rv[k - 1] && j < ri[k - 1]))) continue;
        int q = k - 1;
        while (q > 0 && (rv[q - 1] < s || (rv[q - 1] == s && ri[q - 1] > j))) {
            rv[q] = rv[q - 1];
            ri[q] = ri[q - 1];
            q--;
        }
        rv[q] = s;
        ri[q] = j;
    }
}

/* t - e, moved down by more than the rounding of both subtractions (also near 0 and at -inf) */
static inline float below(float t, float e) {
    float r = t - e;
    return r - (fabsf(r) * 0x1p-20f + 0x1p-126f);
}

/* the screen's threshold of a row: max(its exact k-th best, k-th screened panel max - err) - err */
static inline float threshold(float kth, float smk, float e) {
    float lb = below(smk, e);
    return below(kth > lb ? kth : lb, e);
}

/* float32 -> bfloat16, rounded to nearest even (as torch does) */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* a (2 d2) floats -> d2 bf16 pairs (a_2q low, a_2q+1 high), as the screen reads them */
static inline void pack_bf16(const float *a, int64_t d2, uint32_t *out) {
    for (int64_t q = 0; q < d2; q++) out[q] = (uint32_t)to_bf16(a[2 * q]) | (uint32_t)to_bf16(a[2 * q + 1]) << 16;
}

/* err of one row (see the bound above): x (d) the row, xa (2 d2) its screened coordinates (x
   itself, or its first coordinates in the rotated frame) and xb their bf16 pairs as the kernel
   reads them; ymax_a, rymax_a bound the targets' screened parts and their bf16 rounding, rot the
   rotation's error relative to |x| ymax (0 without) */
static float screen_error(const float *x, int64_t d, const float *xa, const uint32_t *xb, int64_t d2, double ymax,
                          double ymax_a, double rymax_a, double rot, double hmax) {
    double nx = 0, nr = 0, nt = 0;
    for (int64_t q = 0; q < d; q++) nx += (double)x[q] * x[q];
    for (int64_t q = 0; q < 2 * d2; q++) {
        uint32_t bits = (q & 1) ? (xb[q >> 1] & 0xffff0000u) : (xb[q >> 1] << 16);
        float xt;
        memcpy(&xt, &bits, sizeof xt);
        double e = (double)xa[q] - (double)xt;
        nr += e * e;
        nt += (double)xt * xt;
    }
    nx = sqrt(nx) * (1 + 1e-12);
    nr = sqrt(nr) * (1 + 1e-12);
    nt = sqrt(nt) * (1 + 1e-12);
    const double v = 1.05 * (double)(d + 2 * d2 + 4) * ldexp(1.0, -24), tiny = (double)(d + 2 * d2) * ldexp(1.0, -126);
    return (float)((nr * ymax_a + nt * rymax_a + rot * nx * ymax + v * (hmax + 2.02 * nx * ymax) + tiny * (ymax + nx + 2)) *
                   1.001);
}

/* exact float32 scores of nb (row, panel) pairs, interleaved: one pair's d dependent multiply-adds
   would wait on the FMA latency. The same arithmetic as brenier_topk_f32 (h, then the d
   multiply-adds in order), so the same bits. nb is a constant at each call (2 or 4). */
static inline __attribute__((always_inline)) void rescore(const float *const xs[4], const float *const ys[4],
                                                         const float *const hs[4], int64_t d, vf out[4][2],
                                                         const int nb) {
    vf e[4][2];
    for (int j = 0; j < nb; j++) {
        e[j][0] = *(const vf *)hs[j];
        e[j][1] = *(const vf *)(hs[j] + L);
    }
    for (int64_t q = 0; q < d; q++)
        for (int j = 0; j < nb; j++) {
            float xq = xs[j][q];
            e[j][0] += xq * *(const vf *)(ys[j] + q * P);
            e[j][1] += xq * *(const vf *)(ys[j] + q * P + L);
        }
    for (int j = 0; j < nb; j++) {
        out[j][0] = e[j][0];
        out[j][1] = e[j][1];
    }
}

/* the screen of one group of rows (from row g0): per row (at index row - g0) its err, threshold,
   k largest screened scores and pending candidates; plus a batch of up to 4 rescorings */
typedef struct {
    const float *x, *ypack, *hpad, *ry; /* ry: per target, >= the norm of its unscreened rotated part */
    const uint16_t *ybf_full;           /* two levels: the full-d bf16 targets, (npanels, d2f, P, 2) */
    float *bx, *xa;                      /* per row: the same for x; its screened coordinates */
    float *err_lr, *thr_lr;              /* two levels: the first (rotated) screen's err and threshold */
    uint32_t *xbf, *xbf_full;            /* per row: xa in bf16 pairs; x in bf16 pairs (two levels) */
    int64_t d, d2, d2f, g0;
    int64_t l2row[4], l2panel[4];        /* two levels: row-panels waiting for the full-d screen */
    int nl2;
    int64_t rescreened;                  /* two levels: row-panels the full-d screen scored */
    int32_t k;
    float *tv;
    int64_t *ti;
    float *err, *thr, *sm, *cmx; /* sm: k largest screened scores; cmx, cpanel: candidates, cap each */
    int32_t *cpanel, *cn;
    int cap;
    int64_t brow[4], bpanel[4];
    int nb;
    int64_t rescored;
} screen;

/* a row's thresholds after its k-th best or its screened lower bound moved */
static inline void retune(screen *s, int64_t i) {
    int32_t k = s->k;
    float kth = s->tv[(s->g0 + i) * k + k - 1], smk = s->sm[i * k + k - 1];
    s->thr[i] = threshold(kth, smk, s->err[i]);
    if (s->ry) { /* the first screen: against the same lower bound of the final k-th best */
        float lb = below(smk, s->err[i]);
        s->thr_lr[i] = below(kth > lb ? kth : lb, s->err_lr[i]);
    }
}

/* rescore the batch and offer its scores (any order: offer_any_order) */
static void flush(screen *s) {
    if (!s->nb) return;
    const float *xs[4], *ys[4], *hs[4];
    for (int j = 0; j < 4; j++) {
        int jj = j < s->nb ? j : 0;
        xs[j] = s->x + s->brow[jj] * s->d;
        ys[j] = s->ypack + s->bpanel[jj] * s->d * P;
        hs[j] = s->hpad + s->bpanel[jj] * P;
    }
    vf out[4][2];
    if (s->nb <= 2)
        rescore(xs, ys, hs, s->d, out, 2); /* as fast as one: the latency, not the FMAs, bounds it */
    else
        rescore(xs, ys, hs, s->d, out, 4);
    int32_t k = s->k;
    for (int j = 0; j < s->nb; j++) {
        int64_t row = s->brow[j], i = row - s->g0;
        offer_any_order(s->tv + row * k, s->ti + row * k, k, &out[j][0], &out[j][1], s->bpanel[j]);
        retune(s, i);
    }
    s->rescored += s->nb;
    s->nb = 0;
}

/* send a row's k candidates of the highest screened maxima to the batch (those still above the
   row's threshold): once rescored, the row's k-th best is exact and the other candidates face a
   threshold one err higher (most of them then need no rescoring) */
static void settle_best(screen *s, int64_t i) {
    float *mx = s->cmx + i * s->cap;
    for (int32_t n = 0; n < s->k; n++) {
        int best = -1;
        for (int c = 0; c < s->cn[i]; c++)
            if (mx[c] > s->thr[i] && (best < 0 || mx[c] > mx[best])) best = c;
        if (best < 0) return;
        s->brow[s->nb] = s->g0 + i;
        s->bpanel[s->nb] = s->cpanel[i * s->cap + best];
        mx[best] = -INFINITY; /* done */
        if (++s->nb == 4) flush(s);
    }
}

/* send a row's other candidates still above its threshold to the batch; empty its list */
static void settle(screen *s, int64_t i) {
    for (int c = 0; c < s->cn[i]; c++) {
        if (!(s->cmx[i * s->cap + c] > s->thr[i])) continue;
        s->brow[s->nb] = s->g0 + i;
        s->bpanel[s->nb] = s->cpanel[i * s->cap + c];
        if (++s->nb == 4) flush(s);
    }
    s->cn[i] = 0;
}

/* row i (of the group) has a screened score above its threshold in panel p: keep its k largest
   screened scores (its threshold may rise) and record the candidate with the panel's maximum */
static inline __attribute__((always_inline)) void candidate(screen *s, int64_t i, int64_t p, __m512 a, __m512 b) {
    int32_t k = s->k;
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(a, b));
    float *sm = s->sm + i * k;
    __m512 t = _mm512_set1_ps(sm[k - 1]);
    uint32_t above = _mm512_cmp_ps_mask(a, t, _CMP_GT_OQ) | (uint32_t)_mm512_cmp_ps_mask(b, t, _CMP_GT_OQ) << L;
    if (above) { /* keep the k largest screened scores (distinct targets), descending */
        float v[P];
        _mm512_storeu_ps(v, a);
        _mm512_storeu_ps(v + L, b);
        for (; above; above &= above - 1) {
            float x = v[__builtin_ctz(above)];
            if (!(x > sm[k - 1])) continue;
            int j = k - 1;
            while (j > 0 && sm[j - 1] < x) {
                sm[j] = sm[j - 1];
                j--;
            }
            sm[j] = x;
        }
        retune(s, i);
    }
    if (s->cn[i] == s->cap) { /* full: settle it now */
        settle_best(s, i);
        flush(s);
        settle(s, i);
    }
    s->cpanel[i * s->cap + s->cn[i]] = (int32_t)p;
    s->cmx[i * s->cap + s->cn[i]] = mx;
    s->cn[i]++;
}
/* two levels: the queued row-panels passed the first screen (rotated, fewer coordinates, looser
   bound); score them with the full-d bf16 screen, 4 interleaved, and treat them as the one-level
   screen treats its flagged row-panels */
static void l2_flush(screen *s) {
    if (!s->nl2) return;
    const int64_t d2f = s->d2f;
    const uint32_t *xs[4];
    const uint16_t *ys[4];
    __m512 e[4][2];
    for (int j = 0; j < 4; j++) {
        int jj = j < s->nl2 ? j : 0;
        xs[j] = s->xbf_full + s->l2row[jj] * d2f;
        ys[j] = s->ybf_full + s->l2panel[jj] * d2f * 2 * P;
        e[j][0] = _mm512_loadu_ps(s->hpad + s->l2panel[jj] * P);
        e[j][1] = _mm512_loadu_ps(s->hpad + s->l2panel[jj] * P + L);
    }
    for (int64_t q = 0; q < d2f; q++)
        for (int j = 0; j < 4; j++) {
            __m512bh xq = (__m512bh)_mm512_set1_epi32((int)xs[j][q]);
            e[j][0] = _mm512_dpbf16_ps(e[j][0], xq, (__m512bh)_mm512_loadu_si512(ys[j] + q * 2 * P));
            e[j][1] = _mm512_dpbf16_ps(e[j][1], xq, (__m512bh)_mm512_loadu_si512(ys[j] + q * 2 * P + 2 * L));
        }
    int n = s->nl2;
    s->nl2 = 0; /* candidate() may flush again below */
    s->rescreened += n;
    for (int j = 0; j < n; j++) {
        int64_t i = s->l2row[j];
        __m512 t = _mm512_set1_ps(s->thr[i]);
        if (_mm512_cmp_ps_mask(e[j][0], t, _CMP_GT_OQ) | _mm512_cmp_ps_mask(e[j][1], t, _CMP_GT_OQ))
            candidate(s, i, s->l2panel[j], e[j][0], e[j][1]);
    }
}

static inline void l2_push(screen *s, int64_t i, int64_t p) {
    s->l2row[s->nl2] = i;
    s->l2panel[s->nl2] = p;
    if (++s->nl2 == 4) l2_flush(s);
}

/* the screen of rows g0..g1 (the state s set up for them); lowrank: with ry (a constant at each
   call, so the compiler makes the two loops) */
static inline __attribute__((always_inline)) void screen_group(screen *s, int64_t g0, int64_t g1, const uint16_t *ybf,
                                                               int64_t npanels, int64_t chunk, const int lowrank) {
    const int64_t d2 = s->d2;
    for (int64_t c0 = 0; c0 < npanels; c0 += chunk) {
        int64_t c1 = c0 + chunk < npanels ? c0 + chunk : npanels;
        for (int64_t r0 = g0; r0 < g1; r0 += RB) {
            int nr = g1 - r0 < RB ? (int)(g1 - r0) : RB;
            /* rows past the group (a short last block) repeat row r0: their scores are ignored */
            const uint32_t *xb = s->xbf + (r0 - g0) * d2;
            int64_t xo[RB];
            for (int r = 0; r < RB; r++) xo[r] = (r < nr ? r : 0) * d2;
            const float *thr = (lowrank ? s->thr_lr : s->thr) + (r0 - g0), *bx = s->bx + (r0 - g0);
            for (int64_t p = c0; p < c1; p++) {
                const uint16_t *yp = ybf + p * d2 * 2 * P;
                __m512 acc[RB][2];
                __m512 h0 = _mm512_loadu_ps(s->hpad + p * P), h1 = _mm512_loadu_ps(s->hpad + p * P + L);
                for (int r = 0; r < RB; r++) {
                    acc[r][0] = h0;
                    acc[r][1] = h1;
                }
                for (int64_t q = 0; q < d2; q++) {
                    __m512bh y0 = (__m512bh)_mm512_loadu_si512(yp + q * 2 * P);
                    __m512bh y1 = (__m512bh)_mm512_loadu_si512(yp + q * 2 * P + 2 * L);
                    for (int r = 0; r < RB; r++) {
                        __m512bh xs = (__m512bh)_mm512_set1_epi32((int)xb[xo[r] + q]);
                        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], xs, y0);
                        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], xs, y1);
                    }
                }
                /* which rows have a score above their threshold (a few per cent of the row-panels);
                   in the rotated frame a score's upper end: the screened part + bx |y_B| */
                uint32_t flagged = 0;
                __m512 ra = _mm512_setzero_ps(), rb = _mm512_setzero_ps();
                if (lowrank) {
                    ra = _mm512_loadu_ps(s->ry + p * P);
                    rb = _mm512_loadu_ps(s->ry + p * P + L);
                }
#pragma GCC unroll 12
                for (int r = 0; r < RB; r++) {
                    int rr = r < nr ? r : 0;
                    __m512 t = _mm512_set1_ps(thr[rr]), u0 = acc[r][0], u1 = acc[r][1];
                    if (lowrank) {
                        __m512 b = _mm512_set1_ps(bx[rr]);
                        u0 = _mm512_fmadd_ps(b, ra, u0);
                        u1 = _mm512_fmadd_ps(b, rb, u1);
                    }
                    uint32_t f = _mm512_cmp_ps_mask(u0, t, _CMP_GT_OQ) | _mm512_cmp_ps_mask(u1, t, _CMP_GT_OQ);
                    flagged |= (uint32_t)(f != 0) << r;
                }
                flagged &= (1u << nr) - 1;
                if (!flagged) continue;
                /* unrolled, so each row's accumulators are named by a constant and stay in
                   registers (indexed by a variable, all 24 went through the stack each panel:
                   ~10 % of the time) */
                if (lowrank) { /* the full-d screen decides, a few row-panels at a time */
                    for (; flagged; flagged &= flagged - 1) l2_push(s, r0 - g0 + __builtin_ctz(flagged), p);
                    continue;
                }
#pragma GCC unroll 12
                for (int r = 0; r < RB; r++)
                    if (flagged & (1u << r)) candidate(s, r0 - g0 + r, p, acc[r][0], acc[r][1]);
            }
        }
    }
}
#endif

/* x (m, d) float32 rows; ybf_full (npanels, d2f, P, 2): the targets in bf16, with rymax >= every
   |y_n - bf16(y_n)| and ymax >= every |y_n|. One level: rot NULL, the screen scores ybf_full.
   Two levels: rot a (d, d) rotation (row-major, x' = x rot) to the targets' principal axes; a first
   screen scores their first 2 d2 coordinates (ybf, (npanels, d2, P, 2)), with ry (npanels P) >=
   each target's norm beyond them, ymax_a / rymax_a >= every norm of that part / of its bf16
   rounding error and rot_err the rotation's error relative to |x| ymax; the row-panels it passes
   get the full-d screen. */
int64_t brenier_topk_bf16(const float *x, int64_t m, int64_t d, const float *rot, int64_t d2, const uint16_t *ybf,
                          const float *ry, int64_t d2f, const uint16_t *ybf_full, const float *ypack, const float *hpad,
                          int64_t npanels, int64_t chunk, int32_t k, double ymax, double rymax, double ymax_a,
                          double rymax_a, double rot_err, double hmax, float *tv, int64_t *ti) {
#if defined(__AVX512BF16__) && L == 16
    if (chunk < 1) chunk = 1;
    if (!rot) d2 = d2f;
    int64_t gr = m < GROUP_ROWS ? m : GROUP_ROWS;
    screen s = {.x = x, .ypack = ypack, .hpad = hpad, .ry = rot ? ry : NULL, .ybf_full = ybf_full, .d = d, .d2 = d2,
                .d2f = d2f, .k = k, .tv = tv, .ti = ti, .cap = k + CAP_EXTRA};
    s.err = malloc(sizeof(float) * (size_t)(gr * (6 + k + s.cap + 2 * d2) + 2 * d2f + d));
    s.cpanel = malloc(sizeof(int32_t) * (size_t)(gr * (1 + s.cap + d2 + d2f)));
    if (!s.err || !s.cpanel) {
        free(s.err);
        free(s.cpanel);
        return -2;
    }
    s.thr = s.err + gr;
    s.err_lr = s.thr + gr;
    s.thr_lr = s.err_lr + gr;
    s.bx = s.thr_lr + gr;
    s.sm = s.bx + gr;
    s.cmx = s.sm + gr * k;
    s.xa = s.cmx + gr * s.cap;
    float *xr = s.xa + gr * 2 * d2; /* one row in the rotated frame */
    float *xf = xr + d;             /* one row padded to 2 d2f */
    s.cn = s.cpanel + gr * s.cap;
    s.xbf = (uint32_t *)(s.cn + gr);
    s.xbf_full = rot ? s.xbf + gr * d2 : s.xbf;
    clear_lists(tv, ti, m * k);
    for (int64_t g0 = 0; g0 < m; g0 += gr) {
        int64_t g1 = g0 + gr < m ? g0 + gr : m;
        s.g0 = g0;
        for (int64_t i = 0; i < g1 - g0; i++) {
            const float *xi = x + (g0 + i) * d;
            for (int64_t j = 0; j < 2 * d2f; j++) xf[j] = j < d ? xi[j] : 0.0f;
            uint32_t *xbf_full = s.xbf_full + i * d2f;
            pack_bf16(xf, d2f, xbf_full);
            s.err[i] = screen_error(xi, d, xf, xbf_full, d2f, ymax, ymax, rymax, 0.0, hmax);
            s.bx[i] = 0;
            if (rot) { /* x' = x rot, a fixed order of float32 multiply-adds (its error is in rot_err) */
                float *xa = s.xa + i * 2 * d2;
                double nb = 0;
                for (int64_t j = 0; j < d; j++) xr[j] = 0;
                for (int64_t q = 0; q < d; q++)
                    for (int64_t j = 0; j < d; j++) xr[j] += xi[q] * rot[q * d + j];
                for (int64_t j = 0; j < 2 * d2; j++) xa[j] = xr[j];
                for (int64_t j = 2 * d2; j < d; j++) nb += (double)xr[j] * xr[j];
                s.bx[i] = (float)(sqrt(nb) * (1 + 1e-6)); /* rounded up: the float rounding is 2^-24 */
                pack_bf16(xa, d2, s.xbf + i * d2);
                s.err_lr[i] = screen_error(xi, d, xa, s.xbf + i * d2, d2, ymax, ymax_a, rymax_a, rot_err, hmax);
                s.thr_lr[i] = -INFINITY;
            }
            s.thr[i] = -INFINITY;
            s.cn[i] = 0;
            for (int32_t j = 0; j < k; j++) s.sm[i * k + j] = -INFINITY;
        }
        if (s.ry)
            screen_group(&s, g0, g1, ybf, npanels, chunk, 1);
        else
            screen_group(&s, g0, g1, ybf_full, npanels, chunk, 0);
        l2_flush(&s);
        /* every panel screened: the final bounds; each row's most promising candidate first */
        for (int64_t i = 0; i < g1 - g0; i++) settle_best(&s, i);
        flush(&s);
        for (int64_t i = 0; i < g1 - g0; i++) settle(&s, i);
        flush(&s);
    }
    free(s.err);
    free(s.cpanel);
    return s.rescored + s.rescreened;
#else
    (void)x; (void)m; (void)d; (void)rot; (void)d2; (void)ybf; (void)ry; (void)d2f; (void)ybf_full; (void)ypack;
    (void)hpad; (void)npanels; (void)chunk; (void)k; (void)ymax; (void)rymax; (void)ymax_a; (void)rymax_a;
    (void)rot_err; (void)hmax; (void)tv; (void)ti;
    return -1;
#endif
}
