#define _GNU_SOURCE
/*  test_model.c: the forward pass on tiny random-weight models.

    Each test writes a tiny llama GGUF with `splitmesh tiny-model` (seeded)
    and checks a property the split/speculative system relies on:
      - the F32 engine equals a naive double-precision transformer written
        here from the GGUF tensors (independent of model.c/forward.c);
      - forward [0, L) then [L, N), also across two separately loaded
        stage models, equals forward [0, N);
      - n positions in one call equal n calls of one position;
      - truncate + recompute equals a fresh prefill;
      - W8 / W4 stay close to F32;
      - bad calls and bad files fail with clear messages.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "gguf.h"
#include "gguf_write.h"
#include "kvcache.h"
#include "model.h"

#define TINY_LAYERS 4

static char s_dir[256];
static char s_path[300];

//  Writes a tiny model into a fresh temp dir; returns its path.
static const char *
s_tiny (const char *type, const char *extra)
{
    const char *bin = getenv ("SPLITMESH_BIN_DIR");
    if (!bin)
        bin = SPLITMESH_BIN_DIR;
    snprintf (s_dir, sizeof s_dir, "/tmp/splitmesh_model_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    snprintf (s_path, sizeof s_path, "%s/tiny.gguf", s_dir);
    char cmd[1024];
    snprintf (cmd, sizeof cmd,
              "'%s/splitmesh' tiny-model --out '%s' --layers %d --dim 64 --heads 4 --kv-heads 2 "
              "--ff 128 --ctx 128 --type %s --seed 7 %s >/dev/null",
              bin, s_path, TINY_LAYERS, type, extra ? extra : "");
    int rc = system (cmd);
    cr_assert_eq (rc, 0, "tiny-model failed (%d): %s", rc, cmd);
    return s_path;
}

static void
s_cleanup (void)
{
    if (s_path[0])
        unlink (s_path);
    if (s_dir[0])
        rmdir (s_dir);
}

static model_t *
s_load (const char *path, qfmt_t fmt, int first, int last, bool embd, bool head, int threads)
{
    model_options_t o = model_options_default ();
    o.format = fmt;
    o.first_layer = first;
    o.last_layer = last;
    o.load_embeddings = embd;
    o.load_head = head;
    o.n_threads = threads;
    char err[256] = "";
    model_t *m = model_load (path, &o, err, sizeof err);
    cr_assert_not_null (m, "model_load: %s", err);
    return m;
}

//  Logits for tokens[0..n) through the whole model in chunks of `step`
//  positions. Caller frees.
static float *
s_logits (model_t *m, const int32_t *tokens, int n, int step)
{
    const model_config_t *c = model_config (m);
    kvcache_t *kv = kvcache_new (m, c->context_length);
    cr_assert_not_null (kv);
    float *x = malloc ((size_t) n * c->dim * sizeof (float));
    float *logits = malloc ((size_t) n * c->vocab_size * sizeof (float));
    for (int p = 0; p < n; p += step) {
        int k = n - p < step ? n - p : step;
        float *xp = x + (size_t) p * c->dim;
        cr_assert_eq (model_embed (m, tokens + p, k, xp), 0, "%s", model_error (m));
        cr_assert_eq (model_forward (m, kv, 0, c->n_layers, p, k, xp), 0, "%s", model_error (m));
        cr_assert_eq (model_head (m, xp, k, logits + (size_t) p * c->vocab_size), 0, "%s", model_error (m));
    }
    cr_assert_eq (kvcache_pos (kv), n);
    kvcache_destroy (&kv);
    free (x);
    return logits;
}

static double
s_max_abs_diff (const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs ((double) a[i] - b[i]) > d)
            d = fabs ((double) a[i] - b[i]);
    return d;
}

static double
s_cosine (const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double) a[i] * b[i];
        aa += (double) a[i] * a[i];
        bb += (double) b[i] * b[i];
    }
    return ab / sqrt (aa * bb);
}

static void
s_tokens (int32_t *t, int n, int vocab, unsigned seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int32_t) ((seed >> 8) % (unsigned) vocab);
    }
}

//  --- an independent naive reference, double precision -----------------

static double *
s_tensor_f64 (const gguf_t *g, const char *name, size_t *n_out)
{
    const gguf_tensor_t *t = gguf_find_tensor (g, name);
    cr_assert_not_null (t, "missing %s", name);
    const ggml_type_traits_t *tr = ggml_type_traits (t->type);
    cr_assert_not_null (tr);
    float *f = malloc (t->n_elements * sizeof (float));
    tr->to_float (t->data, f, (int64_t) t->n_elements);
    double *d = malloc (t->n_elements * sizeof (double));
    for (uint64_t i = 0; i < t->n_elements; i++)
        d[i] = f[i];
    free (f);
    if (n_out)
        *n_out = t->n_elements;
    return d;
}

static int
s_key (const gguf_t *g, const char *key)
{
    int64_t v;
    cr_assert (gguf_get_i64 (g, key, &v), "missing %s", key);
    return (int) v;
}

//  y (rows) = W (rows x cols) x (cols)
static void
s_mv (double *y, const double *W, const double *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += W[(size_t) r * cols + c] * x[c];
        y[r] = s;
    }
}

static void
s_norm (double *o, const double *x, const double *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double s = 1.0 / sqrt (ss / n + eps);
    for (int i = 0; i < n; i++)
        o[i] = x[i] * s * w[i];
}

//  Full-sequence causal forward from the file's tensors; logits n x vocab.
static double *
s_reference (const char *path, const int32_t *tok, int n)
{
    char err[256];
    gguf_t *g = gguf_open (path, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    int dim = s_key (g, "llama.embedding_length"), ff = s_key (g, "llama.feed_forward_length");
    int L = s_key (g, "llama.block_count"), H = s_key (g, "llama.attention.head_count");
    int KH = s_key (g, "llama.attention.head_count_kv");
    float eps = 1e-5f, base = 10000.0f;
    gguf_get_f32 (g, "llama.attention.layer_norm_rms_epsilon", &eps);
    gguf_get_f32 (g, "llama.rope.freq_base", &base);
    int hd = dim / H, kvd = KH * hd;
    size_t ne;
    double *emb = s_tensor_f64 (g, "token_embd.weight", &ne);
    int V = (int) (ne / dim);
    double *x = calloc ((size_t) n * dim, sizeof (double));
    for (int t = 0; t < n; t++)
        memcpy (x + (size_t) t * dim, emb + (size_t) tok[t] * dim, dim * sizeof (double));
    double *xb = malloc (dim * sizeof (double)), *tmp = malloc (ff * sizeof (double));
    double *q = malloc ((size_t) n * dim * sizeof (double));
    double *k = malloc ((size_t) n * kvd * sizeof (double)), *v = malloc ((size_t) n * kvd * sizeof (double));
    double *att = malloc ((size_t) n * dim * sizeof (double)), *sc = malloc (n * sizeof (double));
    double *g1 = malloc (ff * sizeof (double)), *u1 = malloc (ff * sizeof (double));
    for (int l = 0; l < L; l++) {
        char nm[64];
#define W(s) (snprintf (nm, sizeof nm, "blk.%d.%s", l, s), s_tensor_f64 (g, nm, NULL))
        double *an = W ("attn_norm.weight"), *wq = W ("attn_q.weight"), *wk = W ("attn_k.weight");
        double *wv = W ("attn_v.weight"), *wo = W ("attn_output.weight"), *fn = W ("ffn_norm.weight");
        double *wg = W ("ffn_gate.weight"), *wu = W ("ffn_up.weight"), *wd = W ("ffn_down.weight");
#undef W
        for (int t = 0; t < n; t++) {
            s_norm (xb, x + (size_t) t * dim, an, dim, eps);
            s_mv (q + (size_t) t * dim, wq, xb, dim, dim);
            s_mv (k + (size_t) t * kvd, wk, xb, kvd, dim);
            s_mv (v + (size_t) t * kvd, wv, xb, kvd, dim);
            //  RoPE, adjacent pairs (GGUF's permuted q/k layout).
            for (int which = 0; which < 2; which++) {
                double *vec = which ? k + (size_t) t * kvd : q + (size_t) t * dim;
                int nh = which ? KH : H;
                for (int h = 0; h < nh; h++)
                    for (int i = 0; i < hd / 2; i++) {
                        double a = t * pow (base, -2.0 * i / hd);
                        double *p = vec + h * hd + 2 * i;
                        double x0 = p[0], x1 = p[1];
                        p[0] = x0 * cos (a) - x1 * sin (a);
                        p[1] = x0 * sin (a) + x1 * cos (a);
                    }
            }
        }
        for (int t = 0; t < n; t++)
            for (int h = 0; h < H; h++) {
                int kh = h / (H / KH);
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int i = 0; i < hd; i++)
                        s += q[(size_t) t * dim + h * hd + i] * k[(size_t) j * kvd + kh * hd + i];
                    sc[j] = s / sqrt ((double) hd);
                    if (sc[j] > mx)
                        mx = sc[j];
                }
                for (int j = 0; j <= t; j++)
                    sum += (sc[j] = exp (sc[j] - mx));
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int j = 0; j <= t; j++)
                        o += sc[j] / sum * v[(size_t) j * kvd + kh * hd + i];
                    att[(size_t) t * dim + h * hd + i] = o;
                }
            }
        for (int t = 0; t < n; t++) {
            double *xt = x + (size_t) t * dim;
            s_mv (xb, wo, att + (size_t) t * dim, dim, dim);
            for (int i = 0; i < dim; i++)
                xt[i] += xb[i];
            s_norm (xb, xt, fn, dim, eps);
            s_mv (g1, wg, xb, ff, dim);
            s_mv (u1, wu, xb, ff, dim);
            for (int i = 0; i < ff; i++)
                tmp[i] = g1[i] / (1 + exp (-g1[i])) * u1[i];
            s_mv (xb, wd, tmp, dim, ff);
            for (int i = 0; i < dim; i++)
                xt[i] += xb[i];
        }
        free (an); free (wq); free (wk); free (wv); free (wo); free (fn); free (wg); free (wu); free (wd);
    }
    double *on = s_tensor_f64 (g, "output_norm.weight", NULL);
    double *out = gguf_find_tensor (g, "output.weight") ? s_tensor_f64 (g, "output.weight", NULL) : emb;
    double *logits = malloc ((size_t) n * V * sizeof (double));
    for (int t = 0; t < n; t++) {
        s_norm (xb, x + (size_t) t * dim, on, dim, eps);
        s_mv (logits + (size_t) t * V, out, xb, V, dim);
    }
    if (out != emb)
        free (out);
    free (on); free (emb); free (x); free (xb); free (tmp); free (q); free (k); free (v);
    free (att); free (sc); free (g1); free (u1);
    gguf_destroy (&g);
    return logits;
}

TestSuite (model, .fini = s_cleanup);

Test (model, f32_matches_naive_reference)
{
    //  Separate head from f32 weights, a tied head from q4_1 weights (the
    //  F32 path dequantizes exactly what the reference dequantizes), and
    //  another RoPE base (the reference reads it from the file too).
    const char *types[3][2] = { { "f32", NULL }, { "q4_1", "--tied" }, { "f16", "--rope-base 500000" } };
    for (int v = 0; v < 3; v++) {
        const char *path = s_tiny (types[v][0], types[v][1]);
        model_t *m = s_load (path, QFMT_F32, 0, -1, true, true, 2);
        const model_config_t *c = model_config (m);
        cr_assert_eq (c->n_layers, TINY_LAYERS);
        cr_assert_eq (c->head_dim, 16);
        cr_assert_eq (c->kv_dim, 32);
        cr_assert_eq (c->tied_head, v == 1);
        int n = 12;
        int32_t tok[12];
        s_tokens (tok, n, c->vocab_size, 1);
        float *got = s_logits (m, tok, n, 5);
        double *want = s_reference (path, tok, n);
        double worst = 0, scale = 0;
        for (size_t i = 0; i < (size_t) n * c->vocab_size; i++) {
            double d = fabs (got[i] - want[i]);
            if (d > worst)
                worst = d;
            if (fabs (want[i]) > scale)
                scale = fabs (want[i]);
        }
        cr_assert_lt (worst, 1e-4 * (1 + scale), "%s: max |diff| %g (logit scale %g)",
                      types[v][0], worst, scale);
        cr_assert_gt (scale, 0.1, "logits too small to test anything");
        free (got);
        free (want);
        model_destroy (&m);
        cr_assert_null (m);
        s_cleanup ();
    }
}

Test (model, layer_ranges_compose)
{
    const char *path = s_tiny ("f32", NULL);
    model_t *full = s_load (path, QFMT_F32, 0, -1, true, true, 1);
    const model_config_t *c = model_config (full);
    int n = 9, split = 2, dim = c->dim, V = c->vocab_size;
    int32_t tok[9];
    s_tokens (tok, n, V, 2);
    float *want = s_logits (full, tok, n, n);

    //  Same model and cache, the step split in two calls.
    kvcache_t *kv = kvcache_new (full, 64);
    float *x = malloc ((size_t) n * dim * sizeof (float));
    float *got = malloc ((size_t) n * V * sizeof (float));
    cr_assert_eq (model_embed (full, tok, n, x), 0);
    cr_assert_eq (model_forward (full, kv, 0, split, 0, n, x), 0, "%s", model_error (full));
    cr_assert_eq (kvcache_pos (kv), 0, "layers past the split hold nothing yet");
    cr_assert_eq (model_forward (full, kv, split, TINY_LAYERS, 0, n, x), 0, "%s", model_error (full));
    cr_assert_eq (kvcache_pos (kv), n);
    cr_assert_eq (model_head (full, x, n, got), 0);
    cr_assert_lt (s_max_abs_diff (got, want, (size_t) n * V), 1e-5);
    kvcache_destroy (&kv);

    //  Two stage models, as split-prefix and cloud-target load them.
    model_t *prefix = s_load (path, QFMT_F32, 0, split, true, false, 2);
    model_t *target = s_load (path, QFMT_F32, split, -1, false, true, 2);
    cr_assert_eq (model_options (target)->last_layer, TINY_LAYERS);
    kvcache_t *kp = kvcache_new (prefix, 64), *kt = kvcache_new (target, 64);
    //  Prefill 5, then 4 more positions (a verification-sized step).
    for (int p = 0, k = 5; p < n; p += k, k = n - p) {
        float *xp = x + (size_t) p * dim;
        cr_assert_eq (model_embed (prefix, tok + p, k, xp), 0);
        cr_assert_eq (model_forward (prefix, kp, 0, split, p, k, xp), 0, "%s", model_error (prefix));
        cr_assert_eq (model_forward (target, kt, split, TINY_LAYERS, p, k, xp), 0, "%s", model_error (target));
        cr_assert_eq (model_head (target, xp, k, got + (size_t) p * V), 0);
    }
    cr_assert_lt (s_max_abs_diff (got, want, (size_t) n * V), 1e-4);
    //  Each stage refuses what it did not load.
    cr_assert_eq (model_head (prefix, x, 1, got), -1);
    cr_assert (strstr (model_error (prefix), "head is not loaded"), "%s", model_error (prefix));
    cr_assert_eq (model_embed (target, tok, 1, x), -1);
    cr_assert (strstr (model_error (target), "embeddings are not loaded"), "%s", model_error (target));
    cr_assert_eq (model_forward (target, kt, 0, split, n, 1, x), -1);
    cr_assert (strstr (model_error (target), "not within the loaded range"), "%s", model_error (target));
    cr_assert_lt (model_weight_bytes (prefix), model_weight_bytes (full));
    kvcache_destroy (&kp);
    kvcache_destroy (&kt);
    model_destroy (&prefix);
    model_destroy (&target);
    free (x);
    free (got);
    free (want);
    model_destroy (&full);
}

Test (model, batch_equals_one_at_a_time)
{
    const char *path = s_tiny ("q4_1", NULL);
    for (int f = 0; f < QFMT_COUNT; f++) {
        model_t *m = s_load (path, (qfmt_t) f, 0, -1, true, true, 2);
        int n = 17, V = model_config (m)->vocab_size;
        int32_t tok[17];
        s_tokens (tok, n, V, 3);
        float *batch = s_logits (m, tok, n, n);
        float *single = s_logits (m, tok, n, 1);
        double d = s_max_abs_diff (batch, single, (size_t) n * V);
        cr_assert_lt (d, 1e-3, "%s: batch vs single max diff %g", qfmt_name ((qfmt_t) f), d);
        free (batch);
        free (single);
        model_destroy (&m);
    }
}

Test (model, truncate_then_recompute_equals_fresh)
{
    const char *path = s_tiny ("f32", NULL);
    model_t *m = s_load (path, QFMT_W8, 0, -1, true, true, 2);
    const model_config_t *c = model_config (m);
    int dim = c->dim, V = c->vocab_size;
    int32_t a[10], b[10];
    s_tokens (a, 10, V, 4);
    memcpy (b, a, sizeof a);
    s_tokens (b + 6, 4, V, 5);         //  same first 6, different last 4
    float *fresh = s_logits (m, b, 10, 10);
    kvcache_t *kv = kvcache_new (m, 32);
    float x[10 * 64], got[4 * 2048];
    cr_assert_leq (V, 2048);
    cr_assert_eq (dim, 64);
    cr_assert_eq (model_embed (m, a, 10, x), 0);
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers, 0, 10, x), 0);
    //  Rejected drafts: roll back to 6, then the other continuation.
    kvcache_truncate (kv, 6);
    cr_assert_eq (kvcache_pos (kv), 6);
    cr_assert_eq (model_embed (m, b + 6, 4, x), 0);
    //  Appending at the wrong position is refused.
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers, 10, 4, x), -1);
    cr_assert (strstr (model_error (m), "truncate"), "%s", model_error (m));
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers, 6, 4, x), 0, "%s", model_error (m));
    cr_assert_eq (model_head (m, x, 4, got), 0);
    double d = s_max_abs_diff (got, fresh + (size_t) 6 * V, (size_t) 4 * V);
    cr_assert_lt (d, 1e-3, "max diff %g", d);
    //  Truncating beyond what is held changes nothing; negative clamps to 0.
    kvcache_truncate (kv, 100);
    cr_assert_eq (kvcache_pos (kv), 10);
    kvcache_truncate (kv, -3);
    cr_assert_eq (kvcache_pos (kv), 0);
    kvcache_destroy (&kv);
    free (fresh);
    model_destroy (&m);
}

Test (model, quantized_formats_close_to_f32)
{
    const char *path = s_tiny ("f32", NULL);
    model_t *ref = s_load (path, QFMT_F32, 0, -1, true, true, 2);
    int n = 16, V = model_config (ref)->vocab_size;
    int32_t tok[16];
    s_tokens (tok, n, V, 6);
    float *want = s_logits (ref, tok, n, 4);
    double min_cos[QFMT_COUNT] = { 1.0, 0.999, 0.98 };
    for (int f = QFMT_W8; f < QFMT_COUNT; f++) {
        model_t *m = s_load (path, (qfmt_t) f, 0, -1, true, true, 2);
        float *got = s_logits (m, tok, n, 4);
        for (int t = 0; t < n; t++) {
            double cs = s_cosine (got + (size_t) t * V, want + (size_t) t * V, V);
            cr_assert_gt (cs, min_cos[f], "%s position %d cosine %g", qfmt_name ((qfmt_t) f), t, cs);
        }
        cr_assert_lt (model_weight_bytes (m), model_weight_bytes (ref));
        free (got);
        model_destroy (&m);
    }
    free (want);
    model_destroy (&ref);
}

Test (model, bad_calls_fail_cleanly)
{
    const char *path = s_tiny ("f32", NULL);
    model_t *m = s_load (path, QFMT_F32, 0, -1, true, true, 1);
    const model_config_t *c = model_config (m);
    float x[4 * 64];
    int32_t tok[4] = { 1, 2, 3, c->vocab_size };
    cr_assert_eq (model_embed (m, tok, 4, x), -1);
    cr_assert (strstr (model_error (m), "outside the vocabulary"), "%s", model_error (m));
    tok[3] = -1;
    cr_assert_eq (model_embed (m, tok, 4, x), -1);
    tok[3] = 4;
    cr_assert_eq (model_embed (m, tok, 4, x), 0);
    kvcache_t *kv = kvcache_new (m, 4);
    cr_assert_null (kvcache_new (m, 0));
    cr_assert_null (kvcache_new (m, c->context_length + 1));
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers, 0, 4, x), 0);
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers, 4, 1, x), -1);
    cr_assert (strstr (model_error (m), "beyond the context"), "%s", model_error (m));
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers + 1, 0, 1, x), -1);
    cr_assert_eq (model_forward (m, NULL, 0, 1, 0, 1, x), -1);
    cr_assert_eq (model_forward (m, kv, 0, 1, 0, 0, x), -1);
    kvcache_destroy (&kv);
    kvcache_destroy (&kv);
    //  Layer ranges outside the model are refused at load.
    model_options_t o = model_options_default ();
    o.first_layer = 3;
    o.last_layer = 2;
    char err[256] = "";
    cr_assert_null (model_load (path, &o, err, sizeof err));
    cr_assert (strstr (err, "layer range"), "%s", err);
    o.first_layer = 0;
    o.last_layer = TINY_LAYERS + 1;
    cr_assert_null (model_load (path, &o, err, sizeof err));
    o = model_options_default ();
    o.n_threads = 0;
    cr_assert_null (model_load (path, &o, err, sizeof err));
    cr_assert (strstr (err, "thread"), "%s", err);
    cr_assert_null (model_load ("/nonexistent/x.gguf", NULL, err, sizeof err));
    model_destroy (&m);
}

//  Loads the file's bytes with one substring replaced (same length).
static model_t *
s_load_patched (const char *path, const char *from, const char *to, char *err, size_t err_size)
{
    FILE *f = fopen (path, "rb");
    cr_assert_not_null (f);
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    fseek (f, 0, SEEK_SET);
    char *buf = malloc ((size_t) size);
    cr_assert_eq (fread (buf, 1, (size_t) size, f), (size_t) size);
    fclose (f);
    size_t n = strlen (from);
    cr_assert_eq (n, strlen (to));
    char *hit = memmem (buf, (size_t) size, from, n);
    cr_assert_not_null (hit, "'%s' not in file", from);
    memcpy (hit, to, n);
    gguf_t *g = gguf_open_buffer (buf, (size_t) size, err, err_size);
    cr_assert_not_null (g, "%s", err);
    //  The buffer must outlive the model; tests are short-lived processes.
    return model_load_gguf (&g, NULL, err, err_size);
}

Test (model, bad_files_fail_with_messages)
{
    const char *path = s_tiny ("f32", NULL);
    char err[256] = "";
    cr_assert_null (s_load_patched (path, "llama.context", "llamb.context", err, sizeof err));
    cr_assert (strstr (err, "context_length"), "%s", err);
    cr_assert_null (s_load_patched (path, "blk.1.attn_q.weight", "blk.1.attn_X.weight", err, sizeof err));
    cr_assert (strstr (err, "missing tensor 'blk.1.attn_q.weight'"), "%s", err);
    cr_assert_null (s_load_patched (path, "llama.feed_forward_length", "llama.feed_forward_lengtX",
                                    err, sizeof err));
    cr_assert (strstr (err, "feed_forward_length"), "%s", err);
}

Test (model, unsupported_architecture)
{
    const char *path = s_tiny ("f32", NULL);
    //  Rename every "llama" to "gpt2x"-style 5-letter name: the architecture
    //  value and the keys move together, so only the arch check fails.
    FILE *f = fopen (path, "rb");
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    fseek (f, 0, SEEK_SET);
    char *buf = malloc ((size_t) size);
    cr_assert_eq (fread (buf, 1, (size_t) size, f), (size_t) size);
    fclose (f);
    for (char *p = buf; (p = memmem (p, (size_t) (buf + size - p), "llama", 5)); p += 5)
        memcpy (p, "qwenx", 5);
    char err[256] = "";
    gguf_t *g = gguf_open_buffer (buf, (size_t) size, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_null (model_load_gguf (&g, NULL, err, sizeof err));
    cr_assert_null (g, "ownership taken on failure");
    cr_assert (strstr (err, "unsupported architecture 'qwenx'"), "%s", err);
    free (buf);
}

//  --- hand-built files: hyper-parameters and tensors the tiny-model tool
//  does not vary (RoPE scaling, bad shapes, bad head counts) ---------------

typedef struct {
    int heads, kv_heads;        //  attention.head_count(_kv)
    int k_rows;                 //  rows of attn_k (kv_dim when right)
    int vocab_key;              //  llama.vocab_size (0: not written)
    const char *scaling;        //  rope.scaling.type (NULL: not written)
    float scaling_factor;       //  rope.scaling.factor
    float rope_factor;          //  rope_freqs.weight value (0: no tensor)
} s_spec_t;

#define S_DIM 64
#define S_FF 96
#define S_VOCAB 40
#define S_LAYERS 2

static float
s_rand (uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (float) ((*x >> 11) * (1.0 / 9007199254740992.0)) - 0.5f;
}

static void
s_add (gguf_writer_t *w, const char *name, uint64_t cols, uint64_t rows, uint64_t *seed, float scale,
       float constant)
{
    uint64_t ne[2] = { cols, rows };
    size_t n = cols * rows;
    float *v = malloc (n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = constant != 0.0f ? constant : s_rand (seed) * scale;
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, name, GGML_TYPE_F32, rows > 1 ? 2 : 1, ne, v), 0,
                  "%s", gguf_writer_error (w));
    free (v);
}

//  Loads a hand-built model (always the same weights for the same seed).
//  Returns NULL with err set when the loader refuses it.
static model_t *
s_build (const s_spec_t *sp, char *err, size_t err_size)
{
    gguf_writer_t *w = gguf_writer_new ();
    gguf_writer_set_str (w, "general.architecture", "llama");
    gguf_writer_set_u32 (w, "llama.embedding_length", S_DIM);
    gguf_writer_set_u32 (w, "llama.feed_forward_length", S_FF);
    gguf_writer_set_u32 (w, "llama.block_count", S_LAYERS);
    gguf_writer_set_u32 (w, "llama.context_length", 64);
    gguf_writer_set_u32 (w, "llama.attention.head_count", (uint32_t) sp->heads);
    gguf_writer_set_u32 (w, "llama.attention.head_count_kv", (uint32_t) sp->kv_heads);
    gguf_writer_set_f32 (w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_writer_set_f32 (w, "llama.rope.freq_base", 10000.0f);
    if (sp->vocab_key)
        gguf_writer_set_u32 (w, "llama.vocab_size", (uint32_t) sp->vocab_key);
    if (sp->scaling) {
        gguf_writer_set_str (w, "llama.rope.scaling.type", sp->scaling);
        gguf_writer_set_f32 (w, "llama.rope.scaling.factor", sp->scaling_factor);
    }
    uint64_t seed = 99;
    int hd = S_DIM / sp->heads, kv_dim = sp->kv_heads * hd;
    s_add (w, "token_embd.weight", S_DIM, S_VOCAB, &seed, 1.0f, 0);
    s_add (w, "output_norm.weight", S_DIM, 1, &seed, 0, 1.0f);
    if (sp->rope_factor != 0.0f)
        s_add (w, "rope_freqs.weight", (uint64_t) hd / 2, 1, &seed, 0, sp->rope_factor);
    for (int l = 0; l < S_LAYERS; l++) {
        char n[64];
#define S_T(s, c, r, scale, k) (snprintf (n, sizeof n, "blk.%d.%s", l, s), s_add (w, n, c, r, &seed, scale, k))
        S_T ("attn_norm.weight", S_DIM, 1, 0, 1.0f);
        S_T ("ffn_norm.weight", S_DIM, 1, 0, 1.0f);
        S_T ("attn_q.weight", S_DIM, S_DIM, 0.5f, 0);
        S_T ("attn_k.weight", S_DIM, (uint64_t) (sp->k_rows ? sp->k_rows : kv_dim), 0.5f, 0);
        S_T ("attn_v.weight", S_DIM, (uint64_t) kv_dim, 0.5f, 0);
        S_T ("attn_output.weight", S_DIM, S_DIM, 0.2f, 0);
        S_T ("ffn_gate.weight", S_DIM, S_FF, 0.2f, 0);
        S_T ("ffn_up.weight", S_DIM, S_FF, 0.2f, 0);
        S_T ("ffn_down.weight", S_FF, S_DIM, 0.2f, 0);
#undef S_T
    }
    size_t size;
    void *buf = gguf_writer_write_mem (w, &size);
    cr_assert_not_null (buf, "%s", gguf_writer_error (w));
    gguf_writer_destroy (&w);
    gguf_t *g = gguf_open_buffer (buf, size, err, err_size);
    cr_assert_not_null (g, "%s", err);
    //  The buffer must outlive the model: tests are short-lived processes.
    return model_load_gguf (&g, NULL, err, err_size);
}

static const s_spec_t s_good = { 4, 2, 0, S_VOCAB, NULL, 1.0f, 0.0f };

Test (model, hyper_parameters_and_shapes_are_checked)
{
    char err[256] = "";
    model_t *m = s_build (&s_good, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    model_destroy (&m);
    s_spec_t sp = s_good;
    sp.kv_heads = 3;
    cr_assert_null (s_build (&sp, err, sizeof err));
    cr_assert (strstr (err, "not a multiple of head_count_kv 3"), "%s", err);
    sp = s_good;
    sp.k_rows = 48;
    cr_assert_null (s_build (&sp, err, sizeof err));
    cr_assert (strstr (err, "tensor 'blk.0.attn_k.weight' has shape [64, 48], expected [64, 32]"), "%s", err);
    sp = s_good;
    sp.vocab_key = S_VOCAB + 1;
    cr_assert_null (s_build (&sp, err, sizeof err));
    cr_assert (strstr (err, "vocab_size 41 != token_embd rows 40"), "%s", err);
    sp = s_good;
    sp.scaling = "yarn";
    cr_assert_null (s_build (&sp, err, sizeof err));
    cr_assert (strstr (err, "unsupported rope scaling type 'yarn'"), "%s", err);
    sp = s_good;
    sp.scaling = "llama3";
    cr_assert_null (s_build (&sp, err, sizeof err));
    cr_assert (strstr (err, "needs tensor 'rope_freqs.weight'"), "%s", err);
}

//  Last-position logits of a fixed 9-token sequence.
static void
s_last_logits (model_t *m, float *out)
{
    int32_t tok[9] = { 3, 17, 5, 39, 0, 22, 8, 8, 30 };
    kvcache_t *kv = kvcache_new (m, 16);
    float x[9 * S_DIM], l[9 * S_VOCAB];
    cr_assert_eq (model_embed (m, tok, 9, x), 0);
    cr_assert_eq (model_forward (m, kv, 0, S_LAYERS, 0, 9, x), 0, "%s", model_error (m));
    cr_assert_eq (model_head (m, x, 9, l), 0);
    memcpy (out, l, sizeof l);
    kvcache_destroy (&kv);
}

Test (model, rope_scaling_variants_agree)
{
    //  Dividing every frequency by 2 through llama3 factors must equal linear
    //  scaling by 2, and factors of 1 must equal no scaling; plain and
    //  scaled must differ (positions 1..8 rotate differently).
    char err[256] = "";
    float plain[9 * S_VOCAB], ones[9 * S_VOCAB], lin2[9 * S_VOCAB], fac2[9 * S_VOCAB];
    s_spec_t sp = s_good;
    model_t *m = s_build (&sp, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    s_last_logits (m, plain);
    model_destroy (&m);
    sp.scaling = "llama3";
    sp.rope_factor = 1.0f;
    m = s_build (&sp, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    cr_assert (model_config (m)->has_rope_factors);
    s_last_logits (m, ones);
    model_destroy (&m);
    sp.rope_factor = 2.0f;
    m = s_build (&sp, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    s_last_logits (m, fac2);
    model_destroy (&m);
    sp = s_good;
    sp.scaling = "linear";
    sp.scaling_factor = 2.0f;
    m = s_build (&sp, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    cr_assert_float_eq (model_config (m)->rope_freq_scale, 0.5f, 1e-7);
    s_last_logits (m, lin2);
    model_destroy (&m);
    size_t n = 9 * S_VOCAB;
    cr_assert_lt (s_max_abs_diff (plain, ones, n), 1e-5);
    cr_assert_lt (s_max_abs_diff (fac2, lin2, n), 1e-5);
    cr_assert_gt (s_max_abs_diff (plain, lin2, n), 1e-3, "scaling changed nothing");
}
