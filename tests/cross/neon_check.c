/*  neon_check.c: the kernel checks of test_kernels.c for another
    architecture, without Criterion (cross builds have none).

    Built and run under qemu by run-neon.sh. For every family the CPU has
    (scalar, then the best one): activation quantization must equal the
    scalar reference byte for byte, and every format's matmul must match
    the exact math of its quantized operands (only float summation error,
    2e-5 of sum |w x|) for several shapes, 1..17 tokens and 1..4 threads.
    Exits 0 when everything passed, 1 with the first failure printed.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"
#include "quant.h"

static uint64_t s_rng = 0x2545f4914f6cdd1dull;
static int s_failures;

static float
s_uniform (float lo, float hi)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return lo + (hi - lo) * (float) ((s_rng >> 40) / 16777216.0);
}

#define FAIL(...) do { fprintf (stderr, "FAIL: " __VA_ARGS__); fprintf (stderr, "\n"); \
                       s_failures++; return; } while (0)

static void
s_check_quantize (int levels)
{
    const kernels_t *k = kernels_get ();
    int nb = 19, nbp = 24;
    float x[19 * 32];
    for (int i = 0; i < 19 * 32; i++)
        x[i] = s_uniform (-3, 3) * (i % 64 < 32 ? 1.0f : 1e-3f);
    for (int j = 0; j < 32; j++) {
        x[2 * 32 + j] = 0.0f;
        x[3 * 32 + j] = (float) (j - 16) * 0.5f;
        x[4 * 32 + j] = (j - 16) * 1e-39f;
    }
    x[5 * 32 + 7] = INFINITY;
    x[6 * 32 + 9] = -INFINITY;
    x[7 * 32 + 3] = NAN;
    int8_t q1[24 * 32], q2[24 * 32], r1[24 * 32], r2[24 * 32];
    float d1[24], d2[24], s1[24], s2[24];
    memset (q2, 0x55, sizeof q2);
    memset (r2, 0x55, sizeof r2);
    memset (r1, 0, sizeof r1);
    kernels_quantize_act_ref (x, nb, nbp, q1, levels == 2 ? r1 : NULL, d1, s1);
    k->quantize_act (x, nb, nbp, q2, levels == 2 ? r2 : NULL, d2, s2);
    for (int i = 0; i < 24 * 32; i++)
        if (q1[i] != q2[i] || (levels == 2 && r1[i] != r2[i]))
            FAIL ("%s quantize (%d levels): byte %d is %d/%d, reference %d/%d", k->name, levels, i,
                  q2[i], r2[i], q1[i], r1[i]);
    for (int g = 0; g < 24; g++)
        if (memcmp (&d1[g], &d2[g], 4) || (g != 7 && memcmp (&s1[g], &s2[g], 4)))
            FAIL ("%s quantize: group %d scale %g/%g sum %g/%g", k->name, g, d2[g], d1[g], s2[g], s1[g]);
}

static void
s_check_format (qfmt_t fmt, int levels, threadpool_t **pools)
{
    setenv ("SPLITMESH_W8_ACT_LEVELS", levels == 2 ? "2" : "1", 1);
    setenv ("SPLITMESH_W4_ACT_LEVELS", levels == 2 ? "2" : "1", 1);
    qmatrix_act_levels_refresh ();
    static const int shapes[][2] = { { 1, 32 }, { 7, 64 }, { 33, 96 }, { 50, 160 }, { 64, 576 },
                                     { 97, 1536 }, { 3, 8288 } };
    static const int tokens[] = { 1, 2, 3, 4, 5, 8, 17 };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], cols = shapes[s][1], nb = cols / 32, nbp = (nb + 7) & ~7;
        float *w = malloc ((size_t) rows * cols * sizeof (float));
        for (int i = 0; i < rows * cols; i++)
            w[i] = s_uniform (-1, 1) + ((i / 32) % 4 == 1 ? 0.5f : 0);
        qmatrix_t *W = qmatrix_new_from_f32 (fmt, w, rows, cols);
        float *wd = malloc ((size_t) rows * cols * sizeof (float));
        for (int r = 0; r < rows; r++)
            qmatrix_get_row (W, r, wd + (size_t) r * cols);
        float *x = malloc ((size_t) 17 * cols * sizeof (float));
        float *xd = malloc ((size_t) 17 * cols * sizeof (float));
        int8_t *q = malloc ((size_t) nbp * 32), *q2 = malloc ((size_t) nbp * 32);
        float *d = malloc (nbp * sizeof (float)), *sx = malloc (nbp * sizeof (float));
        for (int i = 0; i < 17 * cols; i++)
            x[i] = s_uniform (-2, 2) * ((i / 32) % 3 == 0 ? 0.1f : 1.0f);
        for (int t = 0; t < 17; t++) {
            kernels_quantize_act_ref (x + (size_t) t * cols, nb, nbp, q, levels == 2 ? q2 : NULL, d, sx);
            for (int c = 0; c < cols; c++) {
                size_t o = kernels_w8_offset (nb, c / 32, c % 32);
                xd[(size_t) t * cols + c] = fmt == QFMT_F32 ? x[(size_t) t * cols + c]
                                         : levels == 2 ? (float) ((double) d[c / 32] * (256.0 * q[o] + q2[o]))
                                         : d[c / 32] * (float) q[o];
            }
        }
        float *y = malloc ((size_t) 17 * rows * sizeof (float));
        for (size_t ti = 0; ti < sizeof tokens / sizeof tokens[0]; ti++)
            for (int nth = 1; nth <= 4; nth++) {
                int nt = tokens[ti];
                qmatrix_matmul (W, x, nt, y, pools[nth]);
                for (int t = 0; t < nt; t++)
                    for (int r = 0; r < rows; r++) {
                        double exact = 0, mag = 0;
                        for (int c = 0; c < cols; c++) {
                            double p = (double) wd[(size_t) r * cols + c] * xd[(size_t) t * cols + c];
                            exact += p;
                            mag += fabs (p);
                        }
                        double got = y[(size_t) t * rows + r];
                        if (!(fabs (got - exact) <= 2e-5 * mag + 1e-6))
                            FAIL ("%s/%s %dx%d t=%d/%d thr=%d row %d: %.7g vs exact %.7g",
                                  kernels_simd_name (), qfmt_name (fmt), rows, cols, t, nt, nth,
                                  r, got, exact);
                    }
            }
        free (w); free (wd); free (x); free (xd); free (q); free (q2); free (d); free (sx); free (y);
        qmatrix_destroy (&W);
    }
}

int
main (void)
{
    threadpool_t *pools[5] = { NULL };
    for (int n = 2; n <= 4; n++)
        pools[n] = threadpool_new (n);
    const char *caps[] = { "scalar", "" };
    for (int i = 0; i < 2; i++) {
        if (*caps[i])
            setenv ("SPLITMESH_SIMD", caps[i], 1);
        else
            unsetenv ("SPLITMESH_SIMD");
        printf ("family %s\n", kernels_simd_refresh ());
        for (int levels = 1; levels <= 2; levels++) {
            s_check_quantize (levels);
            for (qfmt_t fmt = QFMT_F32; fmt < QFMT_COUNT; fmt++)
                s_check_format (fmt, levels, pools);
        }
    }
    for (int n = 2; n <= 4; n++)
        threadpool_destroy (&pools[n]);
    printf ("%s\n", s_failures ? "FAILED" : "all passed");
    return s_failures ? 1 : 0;
}
