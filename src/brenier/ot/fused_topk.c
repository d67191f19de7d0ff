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
 * worst case of the rounding alone is 2^-7 |x| ymax); each of the two sums rounds at most d
 * times, v times a partial sum bounded by hmax + 1.01 |x| ymax; flushed subnormals add at most
 * d 2^-126 (ymax + |x| + 2). The constants below round each term up, and every threshold is
 * moved down by more than its own rounding.
 *
 * xbf: (m, d2) pairs of bf16 (x_2q low, x_2q+1 high); ybf: (npanels, d2, P, 2) bf16.
 * Returns the number of (row, panel) rescorings, -1 when compiled without AVX512-BF16, -2 when
 * out of memory.
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

/* err of one row (see the bound above); xb: its bf16 pairs as the kernel reads them */
static float screen_error(const float *x, const uint32_t *xb, int64_t d, double ymax, double rymax, double hmax) {
    double nx = 0, nr = 0, nt = 0;
    for (int64_t q = 0; q < d; q++) {
        uint32_t bits = (q & 1) ? (xb[q >> 1] & 0xffff0000u) : (xb[q >> 1] << 16);
        float xt;
        memcpy(&xt, &bits, sizeof xt);
        double e = (double)x[q] - (double)xt;
        nx += (double)x[q] * x[q];
        nr += e * e;
        nt += (double)xt * xt;
    }
    nx = sqrt(nx) * (1 + 1e-12);
    nr = sqrt(nr) * (1 + 1e-12);
    nt = sqrt(nt) * (1 + 1e-12);
    const double v = 2.1 * (double)d * ldexp(1.0, -24), tiny = (double)d * ldexp(1.0, -126);
    return (float)((nr * ymax + nt * rymax + v * (hmax + 1.01 * nx * ymax) + tiny * (ymax + nx + 2)) * 1.001);
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
    const float *x, *ypack, *hpad;
    int64_t d, g0;
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

/* rescore the batch and offer its scores (in batch order: ascending panels for each row) */
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
        s->thr[i] = threshold(s->tv[row * k + k - 1], s->sm[i * k + k - 1], s->err[i]);
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
        s->thr[i] = threshold(s->tv[(s->g0 + i) * k + k - 1], sm[k - 1], s->err[i]);
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
#endif

int64_t brenier_topk_bf16(const float *x, const uint32_t *xbf, int64_t m, int64_t d, int64_t d2,
                          const float *ypack, const uint16_t *ybf, const float *hpad, int64_t npanels,
                          int64_t chunk, int32_t k, double ymax, double rymax, double hmax, float *tv,
                          int64_t *ti) {
#if defined(__AVX512BF16__) && L == 16
    if (chunk < 1) chunk = 1;
    int64_t gr = m < GROUP_ROWS ? m : GROUP_ROWS;
    screen s = {.x = x, .ypack = ypack, .hpad = hpad, .d = d, .k = k, .tv = tv, .ti = ti, .cap = k + CAP_EXTRA};
    s.err = malloc(sizeof(float) * (size_t)(gr * (2 + k + s.cap)));
    s.cpanel = malloc(sizeof(int32_t) * (size_t)(gr * (1 + s.cap)));
    if (!s.err || !s.cpanel) {
        free(s.err);
        free(s.cpanel);
        return -2;
    }
    s.thr = s.err + gr;
    s.sm = s.thr + gr;
    s.cmx = s.sm + gr * k;
    s.cn = s.cpanel + gr * s.cap;
    clear_lists(tv, ti, m * k);
    for (int64_t g0 = 0; g0 < m; g0 += gr) {
        int64_t g1 = g0 + gr < m ? g0 + gr : m;
        s.g0 = g0;
        for (int64_t i = 0; i < g1 - g0; i++) {
            s.err[i] = screen_error(x + (g0 + i) * d, xbf + (g0 + i) * d2, d, ymax, rymax, hmax);
            s.thr[i] = -INFINITY;
            s.cn[i] = 0;
            for (int32_t j = 0; j < k; j++) s.sm[i * k + j] = -INFINITY;
        }
        for (int64_t c0 = 0; c0 < npanels; c0 += chunk) {
            int64_t c1 = c0 + chunk < npanels ? c0 + chunk : npanels;
            for (int64_t r0 = g0; r0 < g1; r0 += RB) {
                int nr = g1 - r0 < RB ? (int)(g1 - r0) : RB;
                /* rows past the group (a short last block) repeat row r0: their scores are ignored */
                const uint32_t *xb = xbf + r0 * d2;
                int64_t xo[RB];
                for (int r = 0; r < RB; r++) xo[r] = (r < nr ? r : 0) * d2;
                const float *thr = s.thr + (r0 - g0);
                for (int64_t p = c0; p < c1; p++) {
                    const uint16_t *yp = ybf + p * d2 * 2 * P;
                    __m512 acc[RB][2];
                    __m512 h0 = _mm512_loadu_ps(hpad + p * P), h1 = _mm512_loadu_ps(hpad + p * P + L);
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
                    /* which rows have a score above their threshold (a few per cent of the row-panels) */
                    uint32_t flagged = 0;
#pragma GCC unroll 12
                    for (int r = 0; r < RB; r++) {
                        __m512 t = _mm512_set1_ps(thr[r < nr ? r : 0]);
                        uint32_t f = _mm512_cmp_ps_mask(acc[r][0], t, _CMP_GT_OQ) | _mm512_cmp_ps_mask(acc[r][1], t, _CMP_GT_OQ);
                        flagged |= (uint32_t)(f != 0) << r;
                    }
                    flagged &= (1u << nr) - 1;
                    if (!flagged) continue;
                    /* unrolled, so each row's accumulators are named by a constant and stay in
                       registers (indexed by a variable, all 24 went through the stack each panel:
                       ~10 % of the time) */
#pragma GCC unroll 12
                    for (int r = 0; r < RB; r++)
                        if (flagged & (1u << r)) candidate(&s, r0 - g0 + r, p, acc[r][0], acc[r][1]);
                }
            }
        }
        /* every panel screened: the final bounds; each row's most promising candidate first */
        for (int64_t i = 0; i < g1 - g0; i++) settle_best(&s, i);
        flush(&s);
        for (int64_t i = 0; i < g1 - g0; i++) settle(&s, i);
        flush(&s);
    }
    free(s.err);
    free(s.cpanel);
    return s.rescored;
#else
    (void)x; (void)xbf; (void)m; (void)d; (void)d2; (void)ypack; (void)ybf; (void)hpad; (void)npanels;
    (void)chunk; (void)k; (void)ymax; (void)rymax; (void)hmax; (void)tv; (void)ti;
    return -1;
#endif
}
