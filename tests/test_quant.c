/*  test_quant.c: weight format conversion, exactness and error bounds.

    Lossless paths (q4_1 -> w4, q4_0 -> w4, q8_0 -> w8, f16/bf16 -> f32) must
    give back exactly what ggml's dequantizer gives, computed here
    independently from the documented block layouts. Lossy paths must stay
    within half a quantization step (plus fp16 rounding of the scale), which
    is tight enough that a wrong scale or an off-by-one group fails.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"
#include "ggml_types.h"

//  Asserts without reporting passes: ctest runs with --full-stats, where
//  every passing cr_assert is a message to the runner, too slow in loops.
#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail (__VA_ARGS__); } while (0)

static uint64_t s_rng = 0x9e3779b97f4a7c15ull;

static uint32_t
s_rand (void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (uint32_t) (s_rng >> 32);
}

static float
s_uniform (float lo, float hi)
{
    return lo + (hi - lo) * (float) (s_rand () / 4294967296.0);
}

//  IEEE half to float, written from the definition (independent of core/).
static float
s_half (uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float v;
    if (exp == 0)
        v = ldexpf ((float) mant, -24);
    else
    if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexpf ((float) (mant + 1024), exp - 25);
    return sign ? -v : v;
}

//  A random finite half in about [lo, hi] (magnitude), by search over bits.
static uint16_t
s_rand_half (float lo, float hi, int allow_negative)
{
    for (;;) {
        uint16_t h = (uint16_t) (s_rand () & (allow_negative ? 0xffff : 0x7fff));
        float v = fabsf (s_half (h));
        if (v >= lo && v <= hi)
            return h;
    }
}

Test (quant, format_names)
{
    qfmt_t f;
    cr_assert_str_eq (qfmt_name (QFMT_F32), "f32");
    cr_assert_str_eq (qfmt_name (QFMT_W8), "w8");
    cr_assert_str_eq (qfmt_name (QFMT_W4), "w4");
    cr_assert_str_eq (qfmt_name (QFMT_COUNT), "?");
    cr_assert_eq (qfmt_parse ("w4", &f), 0);
    cr_assert_eq (f, QFMT_W4);
    cr_assert_eq (qfmt_parse ("w8", &f), 0);
    cr_assert_eq (f, QFMT_W8);
    cr_assert_eq (qfmt_parse ("f32", &f), 0);
    cr_assert_eq (f, QFMT_F32);
    f = QFMT_W8;
    cr_assert_eq (qfmt_parse ("q4_1", &f), -1);
    cr_assert_eq (qfmt_parse ("", &f), -1);
    cr_assert_eq (qfmt_parse (NULL, &f), -1);
    cr_assert_eq (f, QFMT_W8, "failed parse must not touch *out");
}

//  Builds random q4_1 data for rows x cols and checks w4 reproduces ggml's
//  dequantization bit for bit.
Test (quant, q4_1_to_w4_is_exact)
{
    int shapes[][2] = { { 1, 32 }, { 3, 64 }, { 5, 96 }, { 17, 576 } };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], cols = shapes[s][1], nb = cols / 32;
        size_t nblk = (size_t) rows * nb;
        uint8_t *raw = malloc (nblk * 20);
        for (size_t b = 0; b < nblk; b++) {
            uint16_t d = s_rand_half (1e-4f, 1.0f, 0);
            uint16_t m = s_rand_half (1e-4f, 2.0f, 1);
            memcpy (raw + b * 20, &d, 2);
            memcpy (raw + b * 20 + 2, &m, 2);
            for (int j = 0; j < 16; j++)
                raw[b * 20 + 4 + j] = (uint8_t) s_rand ();
        }
        char err[128] = "";
        qmatrix_t *W = qmatrix_new_from_ggml (QFMT_W4, GGML_TYPE_Q4_1, raw, rows, cols, err, sizeof err);
        cr_assert_not_null (W, "q4_1 -> w4 failed: %s", err);
        cr_assert_eq (qmatrix_format (W), QFMT_W4);
        cr_assert_eq (qmatrix_rows (W), rows);
        cr_assert_eq (qmatrix_cols (W), cols);
        //  Exactly q4_1's 20 bytes per 32 weights.
        cr_assert_eq (qmatrix_bytes (W), (size_t) rows * nb * 20);
        float *row = malloc (cols * sizeof (float));
        for (int r = 0; r < rows; r++) {
            qmatrix_get_row (W, r, row);
            for (int g = 0; g < nb; g++) {
                const uint8_t *blk = raw + ((size_t) r * nb + g) * 20;
                uint16_t dh, mh;
                memcpy (&dh, blk, 2);
                memcpy (&mh, blk + 2, 2);
                float d = s_half (dh), m = s_half (mh);
                for (int j = 0; j < 16; j++) {
                    float lo = d * (float) (blk[4 + j] & 0xf) + m;
                    float hi = d * (float) (blk[4 + j] >> 4) + m;
                    CHECK (row[g * 32 + j] == lo, "row %d group %d elem %d: %g != %g",
                           r, g, j, row[g * 32 + j], lo);
                    CHECK (row[g * 32 + j + 16] == hi, "row %d group %d elem %d", r, g, j + 16);
                }
            }
        }
        free (row);
        qmatrix_destroy (&W);
        cr_assert_null (W);
        free (raw);
    }
}

Test (quant, q4_0_to_w4_is_exact)
{
    int rows = 4, cols = 160, nb = cols / 32;
    uint8_t raw[4 * 5 * 18];
    for (int b = 0; b < rows * nb; b++) {
        uint16_t d = s_rand_half (1e-3f, 0.5f, 1);
        memcpy (raw + b * 18, &d, 2);
        for (int j = 0; j < 16; j++)
            raw[b * 18 + 2 + j] = (uint8_t) s_rand ();
    }
    char err[128];
    qmatrix_t *W = qmatrix_new_from_ggml (QFMT_W4, GGML_TYPE_Q4_0, raw, rows, cols, err, sizeof err);
    cr_assert_not_null (W, "%s", err);
    float row[160];
    for (int r = 0; r < rows; r++) {
        qmatrix_get_row (W, r, row);
        for (int g = 0; g < nb; g++) {
            const uint8_t *blk = raw + (r * nb + g) * 18;
            uint16_t dh;
            memcpy (&dh, blk, 2);
            float d = s_half (dh);
            for (int j = 0; j < 16; j++) {
                CHECK (row[g * 32 + j] == d * (float) ((blk[2 + j] & 0xf) - 8), "q4_0 elem %d", j);
                CHECK (row[g * 32 + j + 16] == d * (float) ((blk[2 + j] >> 4) - 8), "q4_0 elem %d", j + 16);
            }
        }
    }
    qmatrix_destroy (&W);
}

Test (quant, q8_0_to_w8_is_exact)
{
    int rows = 3, cols = 96, nb = 3;
    uint8_t raw[3 * 3 * 34];
    for (int b = 0; b < rows * nb; b++) {
        uint16_t d = s_rand_half (1e-3f, 0.5f, 0);
        memcpy (raw + b * 34, &d, 2);
        for (int j = 0; j < 32; j++)
            raw[b * 34 + 2 + j] = (uint8_t) s_rand ();      //  includes -128
    }
    char err[128];
    qmatrix_t *W = qmatrix_new_from_ggml (QFMT_W8, GGML_TYPE_Q8_0, raw, rows, cols, err, sizeof err);
    cr_assert_not_null (W, "%s", err);
    cr_assert_eq (qmatrix_bytes (W), (size_t) rows * nb * 36);       //  q8_0 plus a (zero) min
    float row[96];
    for (int r = 0; r < rows; r++) {
        qmatrix_get_row (W, r, row);
        for (int g = 0; g < nb; g++) {
            const uint8_t *blk = raw + (r * nb + g) * 34;
            uint16_t dh;
            memcpy (&dh, blk, 2);
            for (int j = 0; j < 32; j++)
                CHECK (row[g * 32 + j] == s_half (dh) * (float) (int8_t) blk[2 + j], "q8_0 elem %d", j);
        }
    }
    qmatrix_destroy (&W);
}

Test (quant, f16_bf16_f32_to_f32_are_exact)
{
    int rows = 2, cols = 64;
    uint16_t h[128], bf[128];
    float f[128];
    for (int i = 0; i < rows * cols; i++) {
        h[i] = s_rand_half (1e-5f, 1000.0f, 1);
        f[i] = s_uniform (-3, 3);
        uint32_t bits;
        memcpy (&bits, &f[i], 4);
        bf[i] = (uint16_t) (bits >> 16);
    }
    char err[128];
    float row[64];
    qmatrix_t *W = qmatrix_new_from_ggml (QFMT_F32, GGML_TYPE_F16, h, rows, cols, err, sizeof err);
    cr_assert_not_null (W, "%s", err);
    for (int r = 0; r < rows; r++) {
        qmatrix_get_row (W, r, row);
        for (int c = 0; c < cols; c++)
            CHECK (row[c] == s_half (h[r * cols + c]), "f16 elem %d", c);
    }
    qmatrix_destroy (&W);
    W = qmatrix_new_from_ggml (QFMT_F32, GGML_TYPE_BF16, bf, rows, cols, err, sizeof err);
    cr_assert_not_null (W, "%s", err);
    for (int r = 0; r < rows; r++) {
        qmatrix_get_row (W, r, row);
        for (int c = 0; c < cols; c++) {
            uint32_t bits = (uint32_t) bf[r * cols + c] << 16;
            float v;
            memcpy (&v, &bits, 4);
            CHECK (row[c] == v, "bf16 elem %d", c);
        }
    }
    qmatrix_destroy (&W);
    W = qmatrix_new_from_ggml (QFMT_F32, GGML_TYPE_F32, f, rows, cols, err, sizeof err);
    cr_assert_not_null (W, "%s", err);
    cr_assert_eq (qmatrix_bytes (W), (size_t) rows * cols * 4);
    for (int r = 0; r < rows; r++) {
        qmatrix_get_row (W, r, row);
        cr_assert_arr_eq (row, f + r * cols, cols * sizeof (float));
    }
    qmatrix_destroy (&W);
}

//  Largest error quantizing one group of 32 with a scale rounded to fp16:
//  half a step, plus what rounding the scale (2^-11 relative) and, for w4,
//  the min can add over 15 steps. A wrong scale or group is far outside.
static float
s_group_bound (const float *x, qfmt_t fmt)
{
    float lo = x[0], hi = x[0], amax = 0;
    for (int j = 0; j < 32; j++) {
        lo = fminf (lo, x[j]);
        hi = fmaxf (hi, x[j]);
        amax = fmaxf (amax, fabsf (x[j]));
    }
    if (fmt == QFMT_W4) {
        float step = (hi - lo) / 15.0f;
        return 0.5f * step * 1.001f + 16.0f * step / 2048.0f + fabsf (lo) / 2048.0f + 1e-30f;
    }
    float step = amax / 127.0f;
    return 0.5f * step * 1.001f + 128.0f * step / 2048.0f + 1e-30f;
}

static void
s_check_requant (qfmt_t fmt, const float *w, qmatrix_t *W, int rows, int cols)
{
    float *row = malloc (cols * sizeof (float));
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        qmatrix_get_row (W, r, row);
        for (int g = 0; g < cols / 32; g++) {
            const float *x = w + (size_t) r * cols + g * 32;
            float bound = s_group_bound (x, fmt);
            for (int j = 0; j < 32; j++) {
                float e = fabsf (row[g * 32 + j] - x[j]);
                CHECK (e <= bound, "%s row %d col %d: |%g - %g| > %g", qfmt_name (fmt),
                       r, g * 32 + j, row[g * 32 + j], x[j], bound);
                if (e / bound > worst)
                    worst = e / bound;
            }
        }
    }
    //  The bound is tight: some element uses most of its half step.
    cr_assert_gt (worst, 0.3, "error suspiciously small (%g of the bound)", worst);
    free (row);
}

Test (quant, from_f32_within_half_step)
{
    int rows = 13, cols = 320;
    float *w = malloc ((size_t) rows * cols * sizeof (float));
    for (int i = 0; i < rows * cols; i++)
        w[i] = s_uniform (-1, 1) * (1 + (i / 32) % 5) + ((i / 32) % 3 == 0 ? 0.7f : 0);
    for (qfmt_t fmt = QFMT_W8; fmt <= QFMT_W4; fmt++) {
        qmatrix_t *W = qmatrix_new_from_f32 (fmt, w, rows, cols);
        cr_assert_not_null (W);
        s_check_requant (fmt, w, W, rows, cols);
        qmatrix_destroy (&W);
    }
    qmatrix_t *W = qmatrix_new_from_f32 (QFMT_F32, w, rows, cols);
    float row[320];
    qmatrix_get_row (W, 7, row);
    cr_assert_arr_eq (row, w + 7 * cols, cols * sizeof (float));
    qmatrix_destroy (&W);
    free (w);
}

Test (quant, q4_1_and_q4_0_to_w8_are_exact)
{
    //  w8 keeps q4's quants (0..15) with its scale and min: the same floats
    //  as ggml's dequantization, bit for bit.
    int rows = 2, cols = 64;
    uint8_t raw[2 * 2 * 20], raw0[2 * 2 * 18];
    for (int b = 0; b < 4; b++) {
        uint16_t d = s_rand_half (1e-2f, 0.2f, 0), m = s_rand_half (1e-2f, 1.0f, 1);
        memcpy (raw + b * 20, &d, 2);
        memcpy (raw + b * 20 + 2, &m, 2);
        memcpy (raw0 + b * 18, &d, 2);
        for (int j = 0; j < 16; j++)
            raw[b * 20 + 4 + j] = raw0[b * 18 + 2 + j] = (uint8_t) s_rand ();
    }
    for (int k = 0; k < 2; k++) {
        int type = k ? GGML_TYPE_Q4_0 : GGML_TYPE_Q4_1;
        const uint8_t *src = k ? raw0 : raw;
        qmatrix_t *W8 = qmatrix_new_from_ggml (QFMT_W8, type, src, rows, cols, NULL, 0);
        cr_assert_not_null (W8);
        float want[64], got[64];
        for (int r = 0; r < rows; r++) {
            ggml_type_traits (type)->to_float (src + (size_t) r * ggml_row_size (type, cols), want, cols);
            qmatrix_get_row (W8, r, got);
            cr_assert_arr_eq (got, want, sizeof got, "%s row %d", k ? "q4_0" : "q4_1", r);
        }
        qmatrix_destroy (&W8);
    }
}

Test (quant, bad_args)
{
    float w[64] = { 0 };
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W4, w, 1, 31));
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W4, w, 0, 32));
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W4, w, -1, 32));
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W4, w, 1, 0));
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W4, NULL, 1, 32));
    cr_assert_null (qmatrix_new_from_f32 (QFMT_COUNT, w, 1, 32));
    cr_assert_null (qmatrix_new_from_f32 ((qfmt_t) -1, w, 1, 32));
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W8, w, 1 << 30, 1 << 20));
    w[5] = NAN;
    for (qfmt_t f = QFMT_F32; f < QFMT_COUNT; f++)
        cr_assert_null (qmatrix_new_from_f32 (f, w, 1, 64), "NaN accepted by %s", qfmt_name (f));
    w[5] = INFINITY;
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W8, w, 1, 64));
    w[5] = 1e30f;                       //  scale beyond fp16
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W8, w, 1, 64));
    cr_assert_null (qmatrix_new_from_f32 (QFMT_W4, w, 1, 64));
    w[5] = 0;
    qmatrix_t *W = qmatrix_new_from_f32 (QFMT_W4, w, 2, 32);    //  all zero is fine
    cr_assert_not_null (W);
    float row[32];
    qmatrix_get_row (W, 1, row);
    for (int i = 0; i < 32; i++)
        CHECK (row[i] == 0.0f, "elem %d", i);
    //  Rows outside the matrix are refused, the buffer left alone.
    row[0] = 42.0f;
    cr_assert_eq (qmatrix_get_row (W, 2, row), -1);
    cr_assert_eq (qmatrix_get_row (W, -1, row), -1);
    cr_assert_eq (row[0], 42.0f);
    cr_assert_eq (qmatrix_get_row (W, 0, row), 0);
    qmatrix_destroy (&W);
    qmatrix_destroy (&W);

    char err[128] = "";
    cr_assert_null (qmatrix_new_from_ggml (QFMT_W4, 10, w, 1, 32, err, sizeof err));
    cr_assert (strstr (err, "not supported"), "message: %s", err);
    err[0] = 0;
    cr_assert_null (qmatrix_new_from_ggml (QFMT_W4, GGML_TYPE_Q4_1, NULL, 1, 32, err, sizeof err));
    cr_assert_neq (err[0], 0);
    err[0] = 0;
    cr_assert_null (qmatrix_new_from_ggml (QFMT_W4, GGML_TYPE_Q4_1, w, 1, 48, err, sizeof err));
    cr_assert (strstr (err, "multiple of 32"), "message: %s", err);
    cr_assert_null (qmatrix_new_from_ggml (QFMT_W4, -5, w, 1, 32, NULL, 0));   //  no err buffer
    //  A q4_1 block whose scale is an fp16 NaN is refused.
    uint8_t blk[20] = { 0 };
    uint16_t nan_h = 0x7e00;
    memcpy (blk, &nan_h, 2);
    err[0] = 0;
    cr_assert_null (qmatrix_new_from_ggml (QFMT_W4, GGML_TYPE_Q4_1, blk, 1, 32, err, sizeof err));
    cr_assert (strstr (err, "not finite"), "message: %s", err);
}
