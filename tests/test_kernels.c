/*  test_kernels.c: every format on every SIMD path against an f32 reference.

    Each kernel family is forced with SPLITMESH_SIMD (a family the CPU lacks
    is skipped with the reason). For random matrices of several shapes (rows
    not divisible by the thread count, odd group counts), 1..17 tokens and
    1..4 threads, two checks per output:
      1. against the exact math of the quantized operands (dequantized
         weights times dequantized int8 activations, in double): only float
         summation error is allowed (relative 2e-5 of sum |w x|);
      2. against the f32 reference (dequantized weights times the original
         activations): the error must be within what int8 activation
         rounding can cause, sum over groups of (d_x / 2) * sum |w|
         (two-level activations: d_x * sum |w| with the finer d_x).
    w8 and w4 run with one and with two activation levels (qact_t), and
    w8 also from Q4_1 blocks (kept exactly, with their mins).
    A wrong scale, group or nibble order is orders of magnitude outside both.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"
#include "kernels.h"
#include "ggml_types.h"

//  Asserts without reporting passes: ctest runs with --full-stats, where
//  every passing cr_assert is a message to the runner, too slow in loops.
#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail (__VA_ARGS__); } while (0)

static uint64_t s_rng = 0x2545f4914f6cdd1dull;

static float
s_uniform (float lo, float hi)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return lo + (hi - lo) * (float) ((s_rng >> 40) / 16777216.0);
}

//  Forces a kernel family; skips the test when the CPU does not have it.
static void
s_force (const char *env, const char *expect)
{
    setenv ("SPLITMESH_SIMD", env, 1);
    const char *got = kernels_simd_refresh ();
    if (strcmp (got, expect) != 0)
        cr_skip_test ("CPU lacks %s (best available: %s)", expect, got);
}

//  Sets the activation levels of w8 and w4 matmuls (1 or 2).
static void
s_levels (int levels)
{
    setenv ("SPLITMESH_W8_ACT_LEVELS", levels == 2 ? "2" : "1", 1);
    setenv ("SPLITMESH_W4_ACT_LEVELS", levels == 2 ? "2" : "1", 1);
    qmatrix_act_levels_refresh ();
}

//  A rows x cols matrix of Q4_1 blocks from w (round to nearest, as ggml).
static void *
s_make_q4_1 (const float *w, int rows, int cols)
{
    int nb = cols / 32;
    uint8_t *raw = calloc ((size_t) rows * nb, 20);
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < nb; g++) {
            const float *x = w + (size_t) r * cols + g * 32;
            uint8_t *blk = raw + ((size_t) r * nb + g) * 20;
            float lo = x[0], hi = x[0];
            for (int j = 0; j < 32; j++) {
                lo = x[j] < lo ? x[j] : lo;
                hi = x[j] > hi ? x[j] : hi;
            }
            uint16_t d16 = ggml_fp32_to_fp16 ((hi - lo) / 15.0f), m16 = ggml_fp32_to_fp16 (lo);
            float d = ggml_fp16_to_fp32 (d16), m = ggml_fp16_to_fp32 (m16);
            memcpy (blk, &d16, 2);
            memcpy (blk + 2, &m16, 2);
            for (int j = 0; j < 16; j++) {
                long a = lrintf ((x[j] - m) / d), b = lrintf ((x[j + 16] - m) / d);
                a = a < 0 ? 0 : a > 15 ? 15 : a;
                b = b < 0 ? 0 : b > 15 ? 15 : b;
                blk[4 + j] = (uint8_t) (a | (b << 4));
            }
        }
    return raw;
}

static void
s_check_format_src (qfmt_t fmt, int levels, int from_q4_1)
{
    if (fmt != QFMT_F32)
        s_levels (levels);
    static const int shapes[][2] = {
        { 1, 32 }, { 7, 64 }, { 33, 96 }, { 50, 160 }, { 64, 576 }, { 97, 1536 }, { 130, 544 },
        { 3, 8288 }         //  259 groups: crosses the kernels' 256-group scale chunk
    };
    static const int tokens[] = { 1, 2, 3, 4, 5, 8, 17 };
    threadpool_t *pools[5] = { NULL };
    for (int n = 2; n <= 4; n++)
        pools[n] = threadpool_new (n);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], cols = shapes[s][1], nb = cols / 32, nbp = (nb + 7) & ~7;
        float *w = malloc ((size_t) rows * cols * sizeof (float));
        for (int i = 0; i < rows * cols; i++)
            w[i] = s_uniform (-1, 1) + ((i / 32) % 4 == 1 ? 0.5f : 0);     //  some groups offset
        qmatrix_t *W;
        float *wd = malloc ((size_t) rows * cols * sizeof (float));
        if (from_q4_1) {
            //  Lossless: the matrix's rows are exactly ggml's dequantization.
            void *raw = s_make_q4_1 (w, rows, cols);
            W = qmatrix_new_from_ggml (fmt, GGML_TYPE_Q4_1, raw, rows, cols, NULL, 0);
            cr_assert_not_null (W);
            float *ref = malloc ((size_t) cols * sizeof (float));
            for (int r = 0; r < rows; r++) {
                ggml_type_traits (GGML_TYPE_Q4_1)->to_float ((const char *) raw + (size_t) r * (cols / 32) * 20,
                                                             ref, cols);
                qmatrix_get_row (W, r, wd + (size_t) r * cols);
                CHECK (memcmp (ref, wd + (size_t) r * cols, (size_t) cols * sizeof (float)) == 0,
                       "%s from q4_1: row %d not kept exactly", qfmt_name (fmt), r);
            }
            free (ref);
            free (raw);
        }
        else {
            W = qmatrix_new_from_f32 (fmt, w, rows, cols);
            cr_assert_not_null (W);
            for (int r = 0; r < rows; r++)
                qmatrix_get_row (W, r, wd + (size_t) r * cols);
        }
        int max_t = 17;
        float *x = malloc ((size_t) max_t * cols * sizeof (float));
        for (int i = 0; i < max_t * cols; i++)
            x[i] = s_uniform (-2, 2) * ((i / 32) % 3 == 0 ? 0.1f : 1.0f);  //  varied group scales
        //  The int8 activations the kernels use, dequantized.
        float *xd = malloc ((size_t) max_t * cols * sizeof (float));
        float *dx = malloc ((size_t) max_t * nbp * sizeof (float));
        int8_t *q = malloc ((size_t) nbp * 32), *q2 = malloc ((size_t) nbp * 32);
        float *d = malloc (nbp * sizeof (float)), *sx = malloc (nbp * sizeof (float));
        for (int t = 0; t < max_t; t++) {
            kernels_quantize_act_ref (x + (size_t) t * cols, nb, nbp, q, levels == 2 ? q2 : NULL, d, sx);
            for (int c = 0; c < cols; c++) {
                size_t o = kernels_w8_offset (nb, c / 32, c % 32);
                xd[(size_t) t * cols + c] = levels == 2
                    ? (float) ((double) d[c / 32] * (256.0 * q[o] + q2[o]))
                    : d[c / 32] * (float) q[o];
            }
            memcpy (dx + (size_t) t * nbp, d, nbp * sizeof (float));
        }
        float *y = malloc ((size_t) max_t * rows * sizeof (float));
        for (size_t ti = 0; ti < sizeof tokens / sizeof tokens[0]; ti++) {
            int nt = tokens[ti];
            for (int nth = 1; nth <= 4; nth++) {
                for (int i = 0; i < nt * rows; i++)
                    y[i] = NAN;
                qmatrix_matmul (W, x, nt, y, pools[nth]);
                for (int t = 0; t < nt; t++)
                    for (int r = 0; r < rows; r++) {
                        const float *wr = wd + (size_t) r * cols;
                        const float *xt = x + (size_t) t * cols;
                        const float *xq = (fmt == QFMT_F32 ? x : xd) + (size_t) t * cols;
                        double exact = 0, ref = 0, mag = 0, qbound = 0;
                        for (int c = 0; c < cols; c++) {
                            exact += (double) wr[c] * xq[c];
                            ref += (double) wr[c] * xt[c];
                            mag += fabs ((double) wr[c] * xq[c]);
                            if (fmt != QFMT_F32)
                                qbound += (levels == 2 ? 1.0 : 0.5) * dx[(size_t) t * nbp + c / 32]
                                        * fabs (wr[c]);
                        }
                        double got = y[(size_t) t * rows + r];
                        double tol = 2e-5 * mag + 1e-6;
                        CHECK (fabs (got - exact) <= tol,
                                   "%s/%s %dx%d t=%d/%d thr=%d row %d: %.7g vs exact %.7g (tol %g)",
                                   kernels_simd_name (), qfmt_name (fmt), rows, cols, t, nt, nth,
                                   r, got, exact, tol);
                        CHECK (fabs (got - ref) <= qbound * 1.0001 + tol,
                                   "%s/%s %dx%d t=%d row %d: %.7g vs f32 %.7g beyond bound %g",
                                   kernels_simd_name (), qfmt_name (fmt), rows, cols, t, r, got,
                                   ref, qbound);
                    }
            }
        }
        free (w);
        free (wd);
        free (x);
        free (xd);
        free (dx);
        free (q);
        free (q2);
        free (d);
        free (sx);
        free (y);
        qmatrix_destroy (&W);
    }
    for (int n = 2; n <= 4; n++)
        threadpool_destroy (&pools[n]);
}

//  Every format, activation levels and source (f32 requantized, q4_1 kept).
static void
s_check_format (qfmt_t fmt)
{
    if (fmt == QFMT_F32) {
        s_check_format_src (fmt, 1, 0);
        return;
    }
    for (int levels = 1; levels <= 2; levels++)
        for (int q41 = 0; q41 <= 1; q41++)
            s_check_format_src (fmt, levels, q41);
    unsetenv ("SPLITMESH_W8_ACT_LEVELS");
    unsetenv ("SPLITMESH_W4_ACT_LEVELS");
    qmatrix_act_levels_refresh ();
}

Test (kernels, scalar_f32) { s_force ("scalar", "scalar"); s_check_format (QFMT_F32); }
Test (kernels, scalar_w8) { s_force ("scalar", "scalar"); s_check_format (QFMT_W8); }
Test (kernels, scalar_w4) { s_force ("scalar", "scalar"); s_check_format (QFMT_W4); }
Test (kernels, avx2_f32) { s_force ("avx2", "avx2"); s_check_format (QFMT_F32); }
Test (kernels, avx2_w8) { s_force ("avx2", "avx2"); s_check_format (QFMT_W8); }
Test (kernels, avx2_w4) { s_force ("avx2", "avx2"); s_check_format (QFMT_W4); }
Test (kernels, avx512_f32) { s_force ("avx512", "avx512vnni"); s_check_format (QFMT_F32); }
Test (kernels, avx512_w8) { s_force ("avx512", "avx512vnni"); s_check_format (QFMT_W8); }
Test (kernels, avx512_w4) { s_force ("avx512", "avx512vnni"); s_check_format (QFMT_W4); }

Test (kernels, default_act_levels)
{
    unsetenv ("SPLITMESH_W8_ACT_LEVELS");
    unsetenv ("SPLITMESH_W4_ACT_LEVELS");
    qmatrix_act_levels_refresh ();
    cr_assert_eq (qmatrix_act_levels (QFMT_W8), 2);
    cr_assert_eq (qmatrix_act_levels (QFMT_W4), 1);
    cr_assert_eq (qmatrix_act_levels (QFMT_F32), 0);
}

//  Every SIMD family quantizes activations to exactly the reference bytes
//  (so paths differ only in float summation order).
static void
s_check_quantize_same (const char *env, const char *expect)
{
    s_force (env, expect);
    const kernels_t *k = kernels_get ();
    int nb = 19, nbp = 24;
    float x[19 * 32];
    for (int i = 0; i < 19 * 32; i++)
        x[i] = s_uniform (-3, 3) * (i % 64 < 32 ? 1.0f : 1e-3f);
    for (int j = 0; j < 32; j++)
        x[2 * 32 + j] = 0.0f;                       //  an all-zero group
    for (int j = 0; j < 32; j++)
        x[3 * 32 + j] = (float) (j - 16) * 0.5f;    //  exact .5 ties
    for (int j = 0; j < 32; j++)
        x[4 * 32 + j] = (j - 16) * 1e-39f;          //  subnormal: 1/d would overflow
    x[5 * 32 + 7] = INFINITY;                       //  garbage in: same garbage out
    x[6 * 32 + 9] = -INFINITY;
    for (int j = 0; j < 32; j++)
        x[8 * 32 + j] = (float) j * (127.0f / 31.0f) + 0.25f;     //  residuals near +-1/2
    for (int levels = 1; levels <= 2; levels++) {
        int8_t q1[24 * 32], q2[24 * 32], r1[24 * 32], r2[24 * 32];
        float d1[24], d2[24], s1[24], s2[24];
        memset (q2, 0x55, sizeof q2);
        memset (r2, 0x55, sizeof r2);
        memset (r1, 0, sizeof r1);
        kernels_quantize_act_ref (x, nb, nbp, q1, levels == 2 ? r1 : NULL, d1, s1);
        k->quantize_act (x, nb, nbp, q2, levels == 2 ? r2 : NULL, d2, s2);
        for (int j = 0; j < 32; j++)
            CHECK (q1[kernels_w8_offset (nb, 4, j)] == 0, "subnormal group not quantized to zero");
        cr_assert_eq (d1[4], 0.0f);
        cr_assert_arr_eq (q1, q2, sizeof q1, "%s quants differ from the reference", k->name);
        cr_assert_arr_eq (d1, d2, sizeof d1, "%s scales differ", k->name);
        cr_assert_arr_eq (s1, s2, sizeof s1, "%s sums differ", k->name);
        if (levels == 2) {
            cr_assert_arr_eq (r1, r2, sizeof r1, "%s residual quants differ", k->name);
            //  The two levels represent x within one step of d (d1 / 256).
            for (int g = 0; g < nb; g++) {
                if (g == 5 || g == 6)
                    continue;                       //  infinities
                for (int j = 0; j < 32; j++) {
                    size_t o = kernels_w8_offset (nb, g, j);
                    double v = (double) d1[g] * (256.0 * q1[o] + r1[o]);
                    CHECK (fabs (v - x[g * 32 + j]) <= d1[g] * 1.0001 + 1e-37,
                           "group %d elem %d: %g vs %g (d %g)", g, j, v, x[g * 32 + j], d1[g]);
                }
            }
        }
    }
}

Test (kernels, scalar_quantize_two_levels) { s_check_quantize_same ("scalar", "scalar"); }

Test (kernels, avx2_quantize_matches_ref) { s_check_quantize_same ("avx2", "avx2"); }
Test (kernels, avx512_quantize_matches_ref) { s_check_quantize_same ("avx512", "avx512vnni"); }

Test (kernels, simd_cap_and_names)
{
    setenv ("SPLITMESH_SIMD", "scalar", 1);
    cr_assert_str_eq (kernels_simd_refresh (), "scalar");
    unsetenv ("SPLITMESH_SIMD");
    const char *best = kernels_simd_refresh ();
    cr_assert (strcmp (best, "scalar") == 0 || strcmp (best, "avx2") == 0
               || strcmp (best, "avx512vnni") == 0, "unknown family %s", best);
    cr_assert_str_eq (kernels_simd_name (), best);
}

Test (kernels, zero_tokens_writes_nothing)
{
    float w[64], x[64];
    for (int i = 0; i < 64; i++)
        w[i] = x[i] = (float) i;
    qmatrix_t *W = qmatrix_new_from_f32 (QFMT_W4, w, 2, 32);
    float y[2] = { 7, 7 };
    qmatrix_matmul (W, x, 0, y, NULL);
    cr_assert_eq (y[0], 7);
    cr_assert_eq (y[1], 7);
    qmatrix_destroy (&W);
}
