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

static inline int any_set(vi m) {
    int32_t a = 0;
    for (int l = 0; l < L; l++) a |= m[l];
    return a != 0;
}

/* x (m, d) row-major; tv (m, k), ti (m, k) outputs. */
void brenier_topk_f32(const float *x, int64_t m, int64_t d, const float *ypack, const float *hpad,
                      int64_t npanels, int64_t chunk, int32_t k, float *tv, int64_t *ti) {
    for (int64_t i = 0; i < m * k; i++) {
        tv[i] = -INFINITY;
        ti[i] = 0;
    }
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
                    if (!any_set((acc[r][0] > kth) | (acc[r][1] > kth))) continue;
                    int64_t *ri = ti + (r0 + r) * k;
                    for (int v = 0; v < 2; v++)
                        for (int l = 0; l < L; l++) {
                            float s = acc[r][v][l];
                            if (s > rv[k - 1]) insert(rv, ri, k, s, p * P + v * L + l);
                        }
                }
            }
        }
    }
}
