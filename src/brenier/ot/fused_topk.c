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
 * instruction. Each RB x P block is first scored from bf16 copies of x and y (products exact in
 * float32, float32 sums); a row looks at a panel only if some screened score s~ could still beat
 * its k-th best, i.e. s~ > kth - err, with err a rigorous bound on |s~ - s| (s: the float32
 * kernel's score). Such a panel is rescored for that row in float32 exactly as above (same order
 * of multiply-adds: the same bits), and only those scores enter the list. So the answer is the
 * float32 kernel's answer, bit for bit; only the work differs.
 *
 * The bound, for |x| the row's norm, ymax >= every |y_n|, hmax >= every |h_n|, u = 2^-8 (bf16)
 * and v = 2^-24 (float32): rounding x and y to bf16 moves sum_q x_q y_q by at most
 * (2u + u^2) sum |x_q y_q| <= 2^-7 (1 + 2^-9) |x| ymax; each of the two sums rounds at most d
 * times, v times a partial sum bounded by hmax + 1.01 |x| ymax; flushed subnormals add at most
 * d 2^-126 (ymax + |x| + 2). The constants below round each term up.
 *
 * xbf: (m, d2) pairs of bf16 (x_2q low, x_2q+1 high); ybf: (npanels, d2, P, 2) bf16.
 * Returns the number of (row, panel) rescorings, or -1 when compiled without AVX512-BF16.
 */
int brenier_has_bf16(void) {
#if defined(__AVX512BF16__)
    return 1;
#else
    return 0;
#endif
}

/* rows of one screened block: 12 x 2 accumulators + 2 target vectors + a broadcast fit in the 32
   registers (measured ~6-10 % faster than 8 rows: each target load serves more rows) */
#define RB 12

int64_t brenier_topk_bf16(const float *x, const uint32_t *xbf, int64_t m, int64_t d, int64_t d2,
                          const float *ypack, const uint16_t *ybf, const float *hpad, int64_t npanels,
                          int64_t chunk, int32_t k, double ymax, double hmax, float *tv, int64_t *ti) {
#if defined(__AVX512BF16__) && L == 16
    int64_t rescored = 0;
    const double cx = ldexp(1.0, -7) * 1.002 + 2.1 * (double)d * ldexp(1.0, -24);
    const double ch = 2.1 * (double)d * ldexp(1.0, -24);
    const double tiny = (double)d * ldexp(1.0, -126);
    clear_lists(tv, ti, m * k);
    if (chunk < 1) chunk = 1;
    for (int64_t c0 = 0; c0 < npanels; c0 += chunk) {
        int64_t c1 = c0 + chunk < npanels ? c0 + chunk : npanels;
        for (int64_t r0 = 0; r0 < m; r0 += RB) {
            int nr = m - r0 < RB ? (int)(m - r0) : RB;
            const float *xr[RB];
            const uint32_t *xb[RB];
            float err[RB];
            for (int r = 0; r < RB; r++) {
                int64_t row = r0 + (r < nr ? r : 0);
                xr[r] = x + row * d;
                xb[r] = xbf + row * d2;
                double nx = 0;
                for (int64_t q = 0; q < d; q++) nx += (double)xr[r][q] * xr[r][q];
                nx = sqrt(nx) * (1 + 1e-12);
                err[r] = (float)((nx * ymax * cx + hmax * ch + tiny * (ymax + nx + 2)) * 1.001);
            }
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
                        __m512bh xs = (__m512bh)_mm512_set1_epi32((int)xb[r][q]);
                        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], xs, y0);
                        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], xs, y1);
                    }
                }
                for (int r = 0; r < nr; r++) {
                    float *rv = tv + (r0 + r) * k;
                    float thr = rv[k - 1] - err[r];
                    thr -= fabsf(thr) * 0x1p-20f; /* the subtraction's own rounding, and margin */
                    __m512 t = _mm512_set1_ps(thr);
                    if (!(_mm512_cmp_ps_mask(acc[r][0], t, _CMP_GT_OQ) | _mm512_cmp_ps_mask(acc[r][1], t, _CMP_GT_OQ)))
                        continue;
                    rescored++;
                    const float *yq = ypack + p * d * P;
                    vf e0 = *(const vf *)(hpad + p * P), e1 = *(const vf *)(hpad + p * P + L);
                    for (int64_t q = 0; q < d; q++) {
                        float xs = xr[r][q];
                        e0 += xs * *(const vf *)(yq + q * P);
                        e1 += xs * *(const vf *)(yq + q * P + L);
                    }
                    offer(rv, ti + (r0 + r) * k, k, &e0, &e1, p);
                }
            }
        }
    }
    return rescored;
#else
    (void)x; (void)xbf; (void)m; (void)d; (void)d2; (void)ypack; (void)ybf; (void)hpad; (void)npanels;
    (void)chunk; (void)k; (void)ymax; (void)hmax; (void)tv; (void)ti;
    return -1;
#endif
}
