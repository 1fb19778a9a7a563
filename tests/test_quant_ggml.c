/*  test_quant_ggml.c: every ggml type the loader reads into every runtime
    format, checked against ggml's own dequantizer (ggml_types.c), and the
    real SmolLM2 tensors when the model file is present.

    Lossless pairs (q4_1/q4_0 -> w4, q8_0 -> w8, anything -> f32) must give
    back ggml's floats bit for bit; the others must stay within half a
    quantization step of them (see s_group_bound).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "quant.h"
#include "ggml_types.h"
#include "gguf.h"

//  Asserts without reporting passes (ctest runs with --full-stats).
#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail (__VA_ARGS__); } while (0)

static uint64_t s_rng = 0x853c49e6748fea9bull;

static float
s_uniform (float lo, float hi)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return lo + (hi - lo) * (float) ((s_rng >> 40) / 16777216.0);
}

//  Half a step of the target format for one group of 32, plus the fp16
//  rounding of its scale (and min); see test_quant.c.
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

static int
s_lossless (qfmt_t fmt, int type)
{
    return fmt == QFMT_F32
        || (fmt == QFMT_W4 && (type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q4_0))
        || (fmt == QFMT_W8 && type == GGML_TYPE_Q8_0);
}

//  Compares W's rows with the ggml floats ref (rows x cols).
static void
s_check_rows (const qmatrix_t *W, const float *ref, int rows, int cols, int lossless,
              const char *what)
{
    float *row = malloc ((size_t) cols * sizeof (float));
    for (int r = 0; r < rows; r++) {
        qmatrix_get_row (W, r, row);
        const float *e = ref + (size_t) r * cols;
        for (int g = 0; g < cols / 32; g++) {
            float bound = lossless ? 0.0f : s_group_bound (e + g * 32, qmatrix_format (W));
            for (int j = 0; j < 32; j++) {
                int c = g * 32 + j;
                CHECK (fabsf (row[c] - e[c]) <= bound, "%s row %d col %d: %.8g vs ggml %.8g (bound %g)",
                       what, r, c, row[c], e[c], bound);
            }
        }
    }
    free (row);
}

Test (quant_ggml, every_type_into_every_format)
{
    static const int types[] = { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
                                 GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K };
    int rows = 5, cols = 512;       //  a multiple of the k-quants' 256
    float *src = malloc ((size_t) rows * cols * sizeof (float));
    float *ref = malloc ((size_t) rows * cols * sizeof (float));
    for (int i = 0; i < rows * cols; i++)
        src[i] = s_uniform (-1, 1) * (1 + (i / 64) % 3) + ((i / 32) % 4 == 2 ? 0.8f : 0.0f);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        int type = types[ti];
        size_t row_bytes = ggml_row_size (type, cols);
        cr_assert_gt (row_bytes, 0);
        uint8_t *raw = malloc (row_bytes * rows);
        for (int r = 0; r < rows; r++) {
            cr_assert_eq (ggml_quantize (type, src + (size_t) r * cols, raw + r * row_bytes, cols), 0);
            cr_assert_eq (ggml_dequantize (type, raw + r * row_bytes, ref + (size_t) r * cols, cols), 0);
        }
        for (qfmt_t fmt = QFMT_F32; fmt < QFMT_COUNT; fmt++) {
            char err[256] = "", what[64];
            qmatrix_t *W = qmatrix_new_from_ggml (fmt, type, raw, rows, cols, err, sizeof err);
            cr_assert_not_null (W, "%s -> %s: %s", ggml_type_traits (type)->name, qfmt_name (fmt), err);
            snprintf (what, sizeof what, "%s -> %s", ggml_type_traits (type)->name, qfmt_name (fmt));
            s_check_rows (W, ref, rows, cols, s_lossless (fmt, type), what);
            qmatrix_destroy (&W);
        }
        free (raw);
    }
    free (src);
    free (ref);
}

Test (quant_ggml, k_quant_needs_whole_blocks)
{
    uint8_t raw[1024] = { 0 };
    char err[256] = "";
    cr_assert_null (qmatrix_new_from_ggml (QFMT_W4, GGML_TYPE_Q4_K, raw, 1, 96, err, sizeof err));
    cr_assert (strstr (err, "not supported for 96 columns"), "message: %s", err);
}

//  ---------------------------------------------------------------------
//  The real model, when present

static gguf_t *
s_open_model (void)
{
    const char *path = getenv ("SPLITMESH_MODEL");
    char buf[1024];
    if (!path || !*path) {
        snprintf (buf, sizeof buf, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", SPLITMESH_SOURCE_DIR);
        path = buf;
    }
    if (access (path, R_OK) != 0)
        return NULL;
    char err[256] = "";
    gguf_t *g = gguf_open (path, err, sizeof err);
    cr_assert_not_null (g, "cannot open %s: %s", path, err);
    return g;
}

Test (quant_ggml, smollm2_tensors_convert_exactly)
{
    gguf_t *g = s_open_model ();
    if (!g)
        cr_skip_test ("model file absent (set SPLITMESH_MODEL or fetch it into models/)");
    //  A Q4_1 projection into w4 (lossless) and into w8 (requantized), and
    //  the Q8_0 token embedding (the tied head) into w8 (lossless).
    const char *names[] = { "blk.0.ffn_gate.weight", "blk.29.attn_k.weight", "token_embd.weight" };
    for (int n = 0; n < 3; n++) {
        const gguf_tensor_t *t = gguf_find_tensor (g, names[n]);
        cr_assert_not_null (t, "no tensor %s", names[n]);
        int cols = (int) t->ne[0], rows = (int) t->ne[1];
        int check_rows = rows > 300 ? 300 : rows;
        float *ref = malloc ((size_t) check_rows * cols * sizeof (float));
        cr_assert_eq (ggml_dequantize (t->type, t->data, ref, (int64_t) check_rows * cols), 0);
        for (qfmt_t fmt = QFMT_W8; fmt < QFMT_COUNT; fmt++) {
            char err[256] = "", what[96];
            qmatrix_t *W = qmatrix_new_from_ggml (fmt, t->type, t->data, rows, cols, err, sizeof err);
            cr_assert_not_null (W, "%s -> %s: %s", names[n], qfmt_name (fmt), err);
            snprintf (what, sizeof what, "%s -> %s", names[n], qfmt_name (fmt));
            s_check_rows (W, ref, check_rows, cols, s_lossless (fmt, t->type), what);
            qmatrix_destroy (&W);
        }
        free (ref);
    }
    gguf_destroy (&g);
}

Test (quant_ggml, smollm2_matmul_matches_f32)
{
    gguf_t *g = s_open_model ();
    if (!g)
        cr_skip_test ("model file absent (set SPLITMESH_MODEL or fetch it into models/)");
    const gguf_tensor_t *t = gguf_find_tensor (g, "blk.3.ffn_down.weight");
    cr_assert_not_null (t);
    int cols = (int) t->ne[0], rows = (int) t->ne[1];
    qmatrix_t *W = qmatrix_new_from_ggml (QFMT_W4, t->type, t->data, rows, cols, NULL, 0);
    qmatrix_t *F = qmatrix_new_from_ggml (QFMT_F32, t->type, t->data, rows, cols, NULL, 0);
    cr_assert (W && F);
    int nt = 5;
    float *x = malloc ((size_t) nt * cols * sizeof (float));
    float *y = malloc ((size_t) nt * rows * sizeof (float)), *yf = malloc ((size_t) nt * rows * sizeof (float));
    for (int i = 0; i < nt * cols; i++)
        x[i] = s_uniform (-1, 1) * (i % 97 == 0 ? 20.0f : 1.0f);   //  a few outliers, as activations have
    threadpool_t *pool = threadpool_new (2);
    qmatrix_matmul (W, x, nt, y, pool);
    qmatrix_matmul (F, x, nt, yf, pool);
    //  The only difference is int8 activation rounding: per group, at most
    //  half a step (amax / 127 / 2) times sum |w|.
    float *w = malloc ((size_t) cols * sizeof (float));
    for (int r = 0; r < rows; r++) {
        qmatrix_get_row (F, r, w);
        for (int tk = 0; tk < nt; tk++) {
            const float *xt = x + (size_t) tk * cols;
            double bound = 1e-4;
            for (int gi = 0; gi < cols / 32; gi++) {
                float amax = 0, wsum = 0;
                for (int j = 0; j < 32; j++) {
                    amax = fmaxf (amax, fabsf (xt[gi * 32 + j]));
                    wsum += fabsf (w[gi * 32 + j]);
                }
                bound += 0.5 * amax / 127.0 * wsum * 1.0001;
            }
            double diff = fabs ((double) y[(size_t) tk * rows + r] - yf[(size_t) tk * rows + r]);
            CHECK (diff <= bound, "row %d token %d: w4 %g vs f32 %g (bound %g)", r, tk,
                   y[(size_t) tk * rows + r], yf[(size_t) tk * rows + r], bound);
        }
    }
    threadpool_destroy (&pool);
    free (w);
    free (x);
    free (y);
    free (yf);
    qmatrix_destroy (&W);
    qmatrix_destroy (&F);
    gguf_destroy (&g);
}
