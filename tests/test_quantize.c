/*  test_quantize.c: `splitmesh quantize` and core/quantize.h on a tiny
    generated model (no model download): the budget is respected, more
    budget never costs KL, the output loads in the engine (also with
    file_formats, at the format each tensor's type maps to), uniform
    baselines hold one type, and bad budgets and bad input files get clear
    errors without an output file.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ggml_types.h"
#include "gguf.h"
#include "kvcache.h"
#include "model.h"
#include "model_impl.h"
#include "quantize.h"

static char s_dir[256];
static char s_src[300], s_out[300], s_log[300];

static const char *
s_bin (void)
{
    const char *bin = getenv ("SPLITMESH_BIN_DIR");
    return bin ? bin : SPLITMESH_BIN_DIR;
}

static const char *
s_calib (void)
{
    //  Any English text works for the tiny model's byte-level vocabulary;
    //  the repository's README is always there.
    static char path[512];
    const char *src = getenv ("SPLITMESH_SOURCE_DIR");
    snprintf (path, sizeof path, "%s/README.md", src ? src : SPLITMESH_SOURCE_DIR);
    return path;
}

static void
s_setup (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/splitmesh_quantize_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    snprintf (s_src, sizeof s_src, "%s/tiny.gguf", s_dir);
    snprintf (s_out, sizeof s_out, "%s/out.gguf", s_dir);
    snprintf (s_log, sizeof s_log, "%s/log.txt", s_dir);
    char cmd[1024];
    snprintf (cmd, sizeof cmd,
              "'%s/splitmesh' tiny-model --out '%s' --layers 3 --dim 64 --heads 4 --kv-heads 2 "
              "--ff 128 --ctx 256 --type f32 --seed 5 >/dev/null", s_bin (), s_src);
    cr_assert_eq (system (cmd), 0, "tiny-model failed: %s", cmd);
}

static void
s_teardown (void)
{
    unlink (s_src);
    unlink (s_out);
    unlink (s_log);
    rmdir (s_dir);
}

//  Runs `splitmesh quantize ARGS` with output into s_log; returns the exit code.
static int
s_quantize (const char *args)
{
    char cmd[4096];
    snprintf (cmd, sizeof cmd, "'%s/splitmesh' quantize --quiet %s >'%s' 2>&1", s_bin (), args, s_log);
    int st = system (cmd);
    return WIFEXITED (st) ? WEXITSTATUS (st) : -1;
}

static char *
s_read_log (void)
{
    static char buf[4096];
    FILE *f = fopen (s_log, "r");
    size_t n = f ? fread (buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose (f);
    return buf;
}

static uint64_t
s_tensor_bytes (const char *path, int *n_types, int *types)
{
    char err[256];
    gguf_t *g = gguf_open (path, err, sizeof err);
    cr_assert_not_null (g, "open %s: %s", path, err);
    uint64_t b = 0;
    *n_types = 0;
    for (int i = 0; i < gguf_tensor_count (g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at (g, i);
        b += t->nbytes;
        if (t->n_dims != 2)
            continue;
        bool seen = false;
        for (int k = 0; k < *n_types; k++)
            seen = seen || types[k] == (int) t->type;
        if (!seen)
            types[(*n_types)++] = (int) t->type;
    }
    gguf_destroy (&g);
    return b;
}

//  Logits of a short sequence through the whole model.
static void
s_logits (model_t *m, float *logits, int n)
{
    const model_config_t *c = model_config (m);
    int32_t toks[8];
    for (int i = 0; i < n; i++)
        toks[i] = (i * 37 + 11) % c->vocab_size;
    kvcache_t *kv = kvcache_new (m, 16);
    float *x = malloc ((size_t) n * c->dim * sizeof *x);
    cr_assert (kv && x);
    cr_assert_eq (model_embed (m, toks, n, x), 0);
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers, 0, n, x), 0);
    cr_assert_eq (model_head (m, x, n, logits), 0);
    free (x);
    kvcache_destroy (&kv);
}

TestSuite (quantize, .init = s_setup, .fini = s_teardown, .timeout = 60);

Test (quantize, budget_respected_and_output_loads)
{
    char err[256];
    quantize_options_t qo = quantize_options_default ();
    quantize_plan_t *probe = quantize_plan_new (s_src, &qo, err, sizeof err);
    cr_assert_not_null (probe, "%s", err);
    uint64_t f32 = quantize_plan_f32_bytes (probe);
    quantize_plan_destroy (&probe);

    const char *budgets[] = { "4x", "5.5x", "6x" };
    for (int i = 0; i < 3; i++) {
        char args[2048];
        snprintf (args, sizeof args, "--model '%s' --budget %s --out '%s' --calib '%s' --calib-seqs 2 --calib-len 32",
                  s_src, budgets[i], s_out, s_calib ());
        cr_assert_eq (s_quantize (args), 0, "quantize %s: %s", budgets[i], s_read_log ());
        double ratio = atof (budgets[i]);
        int n_types, types[8];
        uint64_t bytes = s_tensor_bytes (s_out, &n_types, types);
        cr_assert_leq ((double) bytes, (double) f32 / ratio + 1,
                       "budget %s: %llu bytes > %.0f", budgets[i], (unsigned long long) bytes,
                       (double) f32 / ratio);
        //  The budget is used: within one unit's upgrade of it (a loose check:
        //  more than half of the way from the cheapest assignment).
        cr_assert_gt ((double) bytes, (double) f32 / ratio * 0.75, "budget %s barely used", budgets[i]);
        if (i == 1)
            cr_assert_gt (n_types, 1, "5.5x should mix formats");

        //  Loads at F32 and with the file's own formats; their logits agree.
        model_options_t mo = model_options_default ();
        model_t *a = model_load (s_out, &mo, err, sizeof err);
        cr_assert_not_null (a, "load %s: %s", budgets[i], err);
        mo.file_formats = true;
        model_t *b = model_load (s_out, &mo, err, sizeof err);
        cr_assert_not_null (b, "load file formats %s: %s", budgets[i], err);
        cr_assert_lt (model_weight_bytes (b), model_weight_bytes (a));
        int v = model_config (a)->vocab_size, n = 6;
        float *la = malloc ((size_t) n * v * sizeof *la), *lb = malloc ((size_t) n * v * sizeof *lb);
        s_logits (a, la, n);
        s_logits (b, lb, n);
        double num = 0, den = 0;
        for (int k = 0; k < n * v; k++) {
            num += (la[k] - lb[k]) * (double) (la[k] - lb[k]);
            den += la[k] * (double) la[k];
        }
        cr_assert_lt (num / den, 1e-3, "file-format logits differ: rel err^2 %g", num / den);
        free (la);
        free (lb);
        model_destroy (&a);
        model_destroy (&b);
    }
}

Test (quantize, more_budget_never_more_kl)
{
    char err[256];
    quantize_options_t qo = quantize_options_default ();
    qo.calib_path = s_calib ();
    qo.calib_seqs = 2;
    qo.calib_len = 32;
    quantize_plan_t *p = quantize_plan_new (s_src, &qo, err, sizeof err);
    cr_assert_not_null (p, "%s", err);
    cr_assert_eq (quantize_plan_calib_tokens (p), 64);
    //  Every KL of a candidate that applies is finite and non-negative (an
    //  F32 source has no exact candidate but F16, so all are measured);
    //  the ones that do not apply (W4G128 not allowed, K-quants on rows of
    //  64 or 128) are NAN with 0 bytes. Q8_0 beats Q5_1 beats Q4_0 overall.
    int c_q4_0 = -1, c_q5_1 = -1, c_q8_0 = -1;
    for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++) {
        c_q4_0 = quantize_candidates[c] == GGML_TYPE_Q4_0 ? c : c_q4_0;
        c_q5_1 = quantize_candidates[c] == GGML_TYPE_Q5_1 ? c : c_q5_1;
        c_q8_0 = quantize_candidates[c] == GGML_TYPE_Q8_0 ? c : c_q8_0;
    }
    double k4 = 0, k5 = 0, k8 = 0;
    for (int u = 0; u < quantize_plan_unit_count (p); u++) {
        for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++) {
            double kl = quantize_plan_unit_kl (p, u, c);
            int type = quantize_candidates[c];
            if (ggml_type_is_splitmesh (type) || type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q6_K) {
                cr_assert (isnan (kl), "unit %d cand %d does not apply: kl %g", u, c, kl);
                cr_assert_eq (quantize_plan_unit_bytes (p, u, c), 0);
                continue;
            }
            cr_assert (kl >= 0 && kl < 100, "unit %d cand %d kl %g", u, c, kl);
        }
        k4 += quantize_plan_unit_kl (p, u, c_q4_0);
        k5 += quantize_plan_unit_kl (p, u, c_q5_1);
        k8 += quantize_plan_unit_kl (p, u, c_q8_0);
    }
    cr_assert_gt (k4, k5);
    cr_assert_gt (k5, k8);
    cr_assert_gt (k4, 0);
    double prev = 1e30;
    uint64_t f32 = quantize_plan_f32_bytes (p);
    double ratios[] = { 7, 6, 5, 4, 3, 2, 1 };
    for (int i = 0; i < 7; i++) {
        uint64_t budget = (uint64_t) (f32 / ratios[i]);
        if (budget < quantize_plan_min_bytes (p))
            continue;
        cr_assert_eq (quantize_plan_assign (p, budget, err, sizeof err), 0, "%s", err);
        cr_assert_leq (quantize_plan_bytes (p), budget);
        cr_assert_leq (quantize_plan_kl (p), prev + 1e-12);
        prev = quantize_plan_kl (p);
    }
    //  At the F32 size everything fits at F16: KL 0.
    cr_assert_eq (quantize_plan_kl (p), 0);
    for (int u = 0; u < quantize_plan_unit_count (p); u++)
        cr_assert_eq (quantize_plan_unit_type (p, u), GGML_TYPE_F16);
    quantize_plan_destroy (&p);
}

Test (quantize, uniform_is_one_type)
{
    char args[2048];
    snprintf (args, sizeof args, "--model '%s' --uniform q8_0 --out '%s'", s_src, s_out);
    cr_assert_eq (s_quantize (args), 0, "%s", s_read_log ());
    int n_types, types[8];
    s_tensor_bytes (s_out, &n_types, types);
    cr_assert_eq (n_types, 1);
    cr_assert_eq (types[0], GGML_TYPE_Q8_0);
    char err[256];
    model_options_t mo = model_options_default ();
    mo.format = QFMT_W8;
    model_t *m = model_load (s_out, &mo, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    model_destroy (&m);
}

Test (quantize, bad_budget_is_a_clear_error)
{
    const char *bad[] = { "abc", "0.5x", "-3", "10furlongs", "0" };
    for (int i = 0; i < 5; i++) {
        char args[2048];
        snprintf (args, sizeof args, "--model '%s' --budget '%s' --out '%s' --calib '%s'",
                  s_src, bad[i], s_out, s_calib ());
        cr_assert_eq (s_quantize (args), 2, "budget '%s': %s", bad[i], s_read_log ());
        cr_assert_not_null (strstr (s_read_log (), "bad budget"), "budget '%s': %s", bad[i], s_read_log ());
        cr_assert_neq (access (s_out, F_OK), 0, "no output for a bad budget");
    }
    //  Below the cheapest assignment: says how small the file can get.
    char args[2048];
    snprintf (args, sizeof args, "--model '%s' --budget 20x --out '%s' --calib '%s'",
              s_src, s_out, s_calib ());
    cr_assert_eq (s_quantize (args), 1, "%s", s_read_log ());
    cr_assert_not_null (strstr (s_read_log (), "below the smallest assignment"), "%s", s_read_log ());
    cr_assert_neq (access (s_out, F_OK), 0);
}

Test (quantize, bad_input_is_a_clear_error)
{
    char args[2048];
    //  Missing file.
    snprintf (args, sizeof args, "--model '%s/nope.gguf' --budget 5x --out '%s' --calib '%s'",
              s_dir, s_out, s_calib ());
    cr_assert_eq (s_quantize (args), 1);
    cr_assert_not_null (strstr (s_read_log (), "nope.gguf"), "%s", s_read_log ());
    //  Not a GGUF file (the calibration text itself).
    snprintf (args, sizeof args, "--model '%s' --budget 5x --out '%s' --calib '%s'",
              s_calib (), s_out, s_calib ());
    cr_assert_eq (s_quantize (args), 1);
    cr_assert_not_null (strstr (s_read_log (), "splitmesh quantize:"), "%s", s_read_log ());
    //  Missing calibration text.
    snprintf (args, sizeof args, "--model '%s' --budget 5x --out '%s' --calib '%s/none.txt'",
              s_src, s_out, s_dir);
    cr_assert_eq (s_quantize (args), 1);
    cr_assert_not_null (strstr (s_read_log (), "cannot open calibration text"), "%s", s_read_log ());
    //  Unknown uniform type, missing arguments.
    snprintf (args, sizeof args, "--model '%s' --uniform q2_k --out '%s'", s_src, s_out);
    cr_assert_eq (s_quantize (args), 2);
    cr_assert_not_null (strstr (s_read_log (), "--uniform"), "%s", s_read_log ());
    snprintf (args, sizeof args, "--model '%s' --out '%s'", s_src, s_out);
    cr_assert_eq (s_quantize (args), 2);
    cr_assert_neq (access (s_out, F_OK), 0);
}

Test (quantize, file_format_mapping)
{
    cr_assert_eq (model_file_format (GGML_TYPE_Q4_0), QFMT_W4);
    cr_assert_eq (model_file_format (GGML_TYPE_Q4_1), QFMT_W4);
    cr_assert_eq (model_file_format (GGML_TYPE_Q8_0), QFMT_W8);
    cr_assert_eq (model_file_format (GGML_TYPE_Q4_K), QFMT_W8);
    cr_assert_eq (model_file_format (GGML_TYPE_F16), QFMT_F32);
    cr_assert_eq (model_file_format (GGML_TYPE_F32), QFMT_F32);
    cr_assert_eq (model_file_format (GGML_TYPE_Q5_0), QFMT_W8);
    cr_assert_eq (model_file_format (GGML_TYPE_Q5_1), QFMT_W8);
    cr_assert_eq (model_file_format (SPLITMESH_TYPE_W4G128), QFMT_W4);
}

//  Q5_0 / Q5_1 files (standard ggml types) load in the engine, at F32 and
//  with file_formats (-> w8), with logits close to the F32 source's.
Test (quantize, q5_uniform_loads)
{
    const char *types[] = { "q5_0", "q5_1" };
    int want[] = { GGML_TYPE_Q5_0, GGML_TYPE_Q5_1 };
    char err[256];
    model_options_t mo = model_options_default ();
    model_t *src = model_load (s_src, &mo, err, sizeof err);
    cr_assert_not_null (src, "%s", err);
    int v = model_config (src)->vocab_size, n = 6;
    float *l0 = malloc ((size_t) n * v * sizeof *l0), *l1 = malloc ((size_t) n * v * sizeof *l1);
    s_logits (src, l0, n);
    for (int i = 0; i < 2; i++) {
        char args[2048];
        snprintf (args, sizeof args, "--model '%s' --uniform %s --out '%s'", s_src, types[i], s_out);
        cr_assert_eq (s_quantize (args), 0, "%s", s_read_log ());
        int n_types, t[8];
        s_tensor_bytes (s_out, &n_types, t);
        cr_assert_eq (n_types, 1);
        cr_assert_eq (t[0], want[i]);
        mo.file_formats = true;
        model_t *m = model_load (s_out, &mo, err, sizeof err);
        cr_assert_not_null (m, "%s: %s", types[i], err);
        cr_assert_eq (qmatrix_format (m->w.layers[0].w_down), QFMT_W8);
        s_logits (m, l1, n);
        double num = 0, den = 0;
        for (int k = 0; k < n * v; k++) {
            num += (l0[k] - l1[k]) * (double) (l0[k] - l1[k]);
            den += l0[k] * (double) l0[k];
        }
        cr_assert_lt (num / den, 5e-2, "%s logits vs source: rel err^2 %g", types[i], num / den);
        //  The w8 runtime of the file against the file's own values at F32.
        mo.file_formats = false;
        model_t *f = model_load (s_out, &mo, err, sizeof err);
        cr_assert_not_null (f, "%s: %s", types[i], err);
        float *lf = malloc ((size_t) n * v * sizeof *lf);
        s_logits (f, lf, n);
        num = den = 0;
        for (int k = 0; k < n * v; k++) {
            num += (lf[k] - l1[k]) * (double) (lf[k] - l1[k]);
            den += lf[k] * (double) lf[k];
        }
        cr_assert_lt (num / den, 1e-3, "%s file formats vs F32: rel err^2 %g", types[i], num / den);
        free (lf);
        model_destroy (&f);
        model_destroy (&m);
    }
    free (l0);
    free (l1);
    model_destroy (&src);
}

//  W4 with group 128 (splitmesh's W4G128) is offered only when allowed;
//  then the cheapest file uses it for the rows of 128 (ffn_down here),
//  says so in its metadata, and the engine loads it as w4 without loss:
//  every weight of the runtime matrix equals the file's dequantized value.
Test (quantize, w4g128_only_when_allowed_and_lossless_in_engine)
{
    char err[256], args[2048];
    quantize_options_t qo = quantize_options_default ();
    quantize_plan_t *p = quantize_plan_new (s_src, &qo, err, sizeof err);
    cr_assert_not_null (p, "%s", err);
    unsigned long long min_std = quantize_plan_min_bytes (p);
    quantize_plan_destroy (&p);
    qo.allow_splitmesh_types = true;
    p = quantize_plan_new (s_src, &qo, err, sizeof err);
    cr_assert_not_null (p, "%s", err);
    unsigned long long min_all = quantize_plan_min_bytes (p);
    quantize_plan_destroy (&p);
    cr_assert_lt (min_all, min_std, "W4G128 is the cheapest format for rows of 128");
    //  Not allowed: the cheapest assignment holds no W4G128.
    snprintf (args, sizeof args, "--model '%s' --budget %llu --out '%s' --calib '%s' "
              "--calib-seqs 1 --calib-len 16", s_src, min_std, s_out, s_calib ());
    cr_assert_eq (s_quantize (args), 0, "%s", s_read_log ());
    int n_types, types[8];
    s_tensor_bytes (s_out, &n_types, types);
    for (int k = 0; k < n_types; k++)
        cr_assert_neq (types[k], SPLITMESH_TYPE_W4G128);
    //  Allowed: at the smallest budget every ffn_down is W4G128.
    snprintf (args, sizeof args, "--model '%s' --budget %llu --out '%s' --calib '%s' "
              "--calib-seqs 1 --calib-len 16 --allow-splitmesh-types", s_src, min_all, s_out, s_calib ());
    cr_assert_eq (s_quantize (args), 0, "%s", s_read_log ());
    gguf_t *g = gguf_open (s_out, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    const char *note = NULL;
    size_t note_len = 0;
    cr_assert (gguf_get_str (g, "splitmesh.nonstandard_types", &note, &note_len));
    const gguf_tensor_t *down = gguf_find_tensor (g, "blk.1.ffn_down.weight");
    cr_assert_not_null (down);
    cr_assert_eq ((int) down->type, SPLITMESH_TYPE_W4G128);
    int rows = (int) down->ne[1], cols = (int) down->ne[0];
    float *want = malloc ((size_t) rows * cols * sizeof *want), *row = malloc ((size_t) cols * sizeof *row);
    cr_assert_eq (ggml_dequantize (down->type, down->data, want, (int64_t) rows * cols), 0);
    model_options_t mo = model_options_default ();
    mo.file_formats = true;
    model_t *m = model_load (s_out, &mo, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    qmatrix_t *w = m->w.layers[1].w_down;
    cr_assert_eq (qmatrix_format (w), QFMT_W4);
    for (int r = 0; r < rows; r++) {
        cr_assert_eq (qmatrix_get_row (w, r, row), 0);
        if (memcmp (row, want + (size_t) r * cols, (size_t) cols * sizeof *row))
            cr_assert_fail ("row %d of the w4 matrix differs from the file's values", r);
    }
    model_destroy (&m);
    //  A uniform W4G128 needs every row to be whole groups of 128.
    snprintf (args, sizeof args, "--model '%s' --uniform w4g128 --out '%s' --allow-splitmesh-types",
              s_src, s_out);
    cr_assert_eq (s_quantize (args), 2, "%s", s_read_log ());
    snprintf (args, sizeof args, "--model '%s' --uniform w4g128 --out '%s'", s_src, s_out);
    cr_assert_eq (s_quantize (args), 2, "%s", s_read_log ());
    cr_assert_not_null (strstr (s_read_log (), "--allow-splitmesh-types"), "%s", s_read_log ());
    free (want);
    free (row);
    gguf_destroy (&g);
}

//  The sensitivity cache: a second run with the same model and calibration
//  measures nothing and gets the same KLs; another calibration starts afresh.
Test (quantize, sensitivity_cache_is_reused)
{
    char err[256], cache[320];
    snprintf (cache, sizeof cache, "%s/sens.cache", s_dir);
    quantize_options_t qo = quantize_options_default ();
    qo.calib_path = s_calib ();
    qo.calib_seqs = 1;
    qo.calib_len = 16;
    qo.cache_path = cache;
    quantize_plan_t *a = quantize_plan_new (s_src, &qo, err, sizeof err);
    cr_assert_not_null (a, "%s", err);
    cr_assert_gt (quantize_plan_measured (a), 0);
    quantize_plan_t *b = quantize_plan_new (s_src, &qo, err, sizeof err);
    cr_assert_not_null (b, "%s", err);
    cr_assert_eq (quantize_plan_measured (b), 0, "everything should come from the cache");
    for (int u = 0; u < quantize_plan_unit_count (a); u++)
        for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++) {
            double ka = quantize_plan_unit_kl (a, u, c), kb = quantize_plan_unit_kl (b, u, c);
            cr_assert ((isnan (ka) && isnan (kb)) || fabs (ka - kb) <= 1e-8 * (ka > 1 ? ka : 1),
                       "unit %d cand %d: %g vs %g", u, c, ka, kb);
        }
    qo.calib_len = 17;
    quantize_plan_t *c = quantize_plan_new (s_src, &qo, err, sizeof err);
    cr_assert_not_null (c, "%s", err);
    cr_assert_eq (quantize_plan_measured (c), quantize_plan_measured (a));
    quantize_plan_destroy (&a);
    quantize_plan_destroy (&b);
    quantize_plan_destroy (&c);
    unlink (cache);
}
