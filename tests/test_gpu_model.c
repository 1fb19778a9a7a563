/*  test_gpu_model.c: the CUDA backend against the CPU engine on the same
    weights.

    A tiny random-weight model (written by `splitmesh tiny-model`, f32, so
    the CPU reference is exact float math) and, when present, SmolLM2-135M
    (SPLITMESH_MODEL) are loaded on the CPU, uploaded to the GPU as fp16 and
    as W8A8, and both backends evaluate the same tokens: fp16 logits must be
    within 1e-2 relative error of the CPU's, W8A8 greedy tokens must agree.
    W8A8 is also held to a plain-C reference of the same int8 arithmetic
    (per-channel int8 weights, per-token int8 activations on two levels):
    for the whole pass (>= 99.5 % of SmolLM2's greedy tokens), layer by
    layer and at the head. w8a8_two_levels_stop_rounding_amplification
    shows without a GPU why the second level is what makes the whole pass
    comparable.
    The rest checks what only the GPU backend has: several sessions in one
    batch (each as if alone), paged KV rollback, CUDA graphs giving the same
    results as direct launches, bad requests answered with an error while
    the model keeps serving, and device memory staying flat over 10,000
    verify calls.

    Without a CUDA device every test skips with the reason.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "gpu.h"
#include "kvcache.h"
#include "model.h"
#include "model_impl.h"
#include "kernels.h"
#include "quant.h"
#include "tokenizer.h"

#define TINY_LAYERS 3
static char s_dir[256];
static char s_path[300];

static void
s_need_device (void)
{
    if (gpu_device_count () == 0)
        cr_skip_test ("no CUDA device: GPU tests skipped");
}

//  Writes a tiny f32 model (dim 128, 4 heads of 32, 2 KV heads) into a
//  fresh temp dir; returns its path.
static const char *s_write_model (const char *args);

static const char *
s_tiny (void)
{
    char args[256];
    snprintf (args, sizeof args, "--layers %d --dim 128 --heads 4 --kv-heads 2 --ff 256 --ctx 256 "
              "--type f32 --seed 11", TINY_LAYERS);
    return s_write_model (args);
}

//  Writes a random-weight model (`splitmesh tiny-model` with args) into a
//  fresh temp dir; returns its path.
static const char *
s_write_model (const char *args)
{
    const char *bin = getenv ("SPLITMESH_BIN_DIR");
    if (!bin)
        bin = SPLITMESH_BIN_DIR;
    snprintf (s_dir, sizeof s_dir, "/tmp/splitmesh_gpu_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    snprintf (s_path, sizeof s_path, "%s/tiny.gguf", s_dir);
    char cmd[1024];
    snprintf (cmd, sizeof cmd, "'%s/splitmesh' tiny-model --out '%s' %s >/dev/null", bin, s_path, args);
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
    s_path[0] = s_dir[0] = '\0';
}

static model_t *
s_cpu (const char *path, int first, int last, bool embed, bool head)
{
    model_options_t o = model_options_default ();
    o.format = QFMT_F32;
    o.first_layer = first;
    o.last_layer = last;
    o.load_embeddings = embed;
    o.load_head = head;
    o.n_threads = 4;
    char err[256] = "";
    model_t *m = model_load (path, &o, err, sizeof err);
    cr_assert_not_null (m, "model_load: %s", err);
    return m;
}

static gpu_model_t *
s_gpu (const model_t *cpu, gpu_fmt_t fmt, int sessions, int ctx)
{
    gpu_options_t o = gpu_options_default ();
    o.format = fmt;
    o.max_sessions = sessions;
    o.max_ctx = ctx;
    o.max_tokens = 256;
    o.page_size = 16;
    char err[512] = "";
    gpu_model_t *g = gpu_model_new_from_cpu (cpu, &o, err, sizeof err);
    cr_assert_not_null (g, "gpu_model_new_from_cpu: %s", err);
    return g;
}

//  CPU logits (n x vocab) for tokens at positions 0..n-1 of a fresh cache.
static float *
s_cpu_logits (model_t *cpu, const int32_t *tokens, int n)
{
    const model_config_t *c = model_config (cpu);
    float *x = malloc ((size_t) n * c->dim * sizeof (float));
    float *logits = malloc ((size_t) n * c->vocab_size * sizeof (float));
    kvcache_t *kv = kvcache_new (cpu, n);
    cr_assert (x && logits && kv);
    cr_assert_eq (model_embed (cpu, tokens, n, x), 0, "%s", model_error (cpu));
    cr_assert_eq (model_forward (cpu, kv, 0, c->n_layers, 0, n, x), 0, "%s", model_error (cpu));
    cr_assert_eq (model_head (cpu, x, n, logits), 0, "%s", model_error (cpu));
    kvcache_destroy (&kv);
    free (x);
    return logits;
}

static double
s_rel_err (const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite (a[i]))
            return INFINITY;
        num += ((double) a[i] - ref[i]) * ((double) a[i] - ref[i]);
        den += (double) ref[i] * ref[i];
    }
    return sqrt (num / (den > 0 ? den : 1));
}

static int
s_argmax (const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

//  Deterministic pseudo-random tokens.
static void
s_tokens (int32_t *t, int n, int vocab, unsigned seed)
{
    unsigned s = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        t[i] = (int32_t) ((s >> 8) % (unsigned) vocab);
    }
}

//  GPU logits for tokens in one new session, in chunks of at most chunk
//  positions (one batch each).
static float *
s_gpu_logits (gpu_model_t *g, const int32_t *tokens, int n, int chunk)
{
    int vocab = gpu_model_config (g)->vocab_size;
    float *logits = malloc ((size_t) n * vocab * sizeof (float));
    cr_assert_not_null (logits);
    int s = gpu_session_open (g);
    cr_assert_geq (s, 0, "%s", gpu_model_error (g));
    for (int p = 0; p < n; p += chunk) {
        int m = n - p < chunk ? n - p : chunk;
        gpu_seq_t q = { s, p, m, tokens + p, NULL };
        gpu_out_t out = { .logits = logits + (size_t) p * vocab };
        cr_assert_eq (gpu_forward_batch (g, &q, 1, &out), 0, "%s", gpu_model_error (g));
    }
    cr_assert_eq (gpu_session_close (g, s), 0);
    return logits;
}

//  --- a CPU reference of the W8A8 arithmetic ------------------------------
//
//  The GPU's W8A8 model differs from the CPU engine by its quantization
//  (per-row int8 weights, per-token int8 activations, fp16 KV cache and
//  embeddings), not only by rounding, so agreement with the engine's f32
//  forward measures the scheme. This reference does the same quantized
//  arithmetic on the CPU, token by token in plain C (exact int32 dot
//  products), so a comparison with it measures the kernels.

typedef struct {
    int rows, cols;
    int8_t *q;                  //  (rows, cols)
    float *s;                   //  (rows), or (rows, cols / 32) with s_ref_g32
    float *m;                   //  (rows, cols / 32) per-group mins with s_ref_g32 (w = d q + m)
} s_i8_t;

static float
s_f16 (uint16_t bits)
{
    _Float16 h;
    memcpy (&h, &bits, sizeof h);
    return (float) h;
}

//  The reference in groups of 32 (the GPU's w8 format: the CPU engine's w8
//  numerics) instead of per row / per token; fp32 KV cache and embeddings.
static bool s_ref_g32;

static s_i8_t
s_i8_new (const qmatrix_t *m)
{
    s_i8_t w = { qmatrix_rows (m), qmatrix_cols (m), NULL, NULL, NULL };
    w.q = malloc ((size_t) w.rows * w.cols);
    w.s = malloc ((size_t) w.rows * (w.cols / 32 + 1) * sizeof (float));
    w.m = calloc ((size_t) w.rows * (w.cols / 32 + 1), sizeof (float));
    float *row = malloc ((size_t) w.cols * sizeof (float));
    cr_assert (w.q && w.s && w.m && row);
    int G = w.cols / 32;
    for (int r = 0; r < w.rows; r++) {
        if (s_ref_g32 && m->fmt == QFMT_W8) {
            //  The engine's w8 as it is (quant.h: w = d q + m per group).
            const int8_t *qs = (const int8_t *) (m->qs + (size_t) r * m->qs_stride);
            for (int g = 0; g < G; g++) {
                for (int j = 0; j < 32; j++)
                    w.q[(size_t) r * w.cols + g * 32 + j] = qs[kernels_w8_offset (G, g, j)];
                w.s[(size_t) r * G + g] = s_f16 (m->d[(size_t) r * G + g]);
                w.m[(size_t) r * G + g] = s_f16 (m->m[(size_t) r * G + g]);
            }
            continue;
        }
        qmatrix_get_row (m, r, row);
        if (s_ref_g32) {
            //  quant.c's s_quant_group_w8.
            for (int g = 0; g < w.cols / 32; g++) {
                const float *x = row + g * 32;
                float amax = 0;
                for (int j = 0; j < 32; j++)
                    amax = fmaxf (amax, fabsf (x[j]));
                float d = (float) (_Float16) (amax / 127.0f);
                float id = d != 0.0f ? 1.0f / d : 0.0f;
                for (int j = 0; j < 32; j++) {
                    long v = lrintf (x[j] * id);
                    w.q[(size_t) r * w.cols + g * 32 + j] = (int8_t) (v < -127 ? -127 : v > 127 ? 127 : v);
                }
                w.s[(size_t) r * (w.cols / 32) + g] = d;
            }
            continue;
        }
        float amax = 0;
        for (int c = 0; c < w.cols; c++)
            amax = fmaxf (amax, fabsf (row[c]));
        float scale = amax > 0 ? amax / 127.0f : 1.0f;
        for (int c = 0; c < w.cols; c++) {
            float v = nearbyintf (row[c] / scale);
            w.q[(size_t) r * w.cols + c] = (int8_t) (v > 127 ? 127 : v < -127 ? -127 : v);
        }
        w.s[r] = scale;
    }
    free (row);
    return w;
}

static void
s_i8_free (s_i8_t *w)
{
    free (w->q);
    free (w->s);
    free (w->m);
}

//  Relative perturbation of the reference's quantizer inputs (0: none),
//  to measure how much the W8A8 arithmetic itself amplifies differences
//  of rounding (see the SmolLM2 test).
static double s_ref_eps;
static unsigned s_ref_seed;

static float
s_perturb (float v)
{
    if (s_ref_eps == 0)
        return v;
    s_ref_seed = s_ref_seed * 1103515245u + 12345u;
    double r = ((s_ref_seed >> 8) & 0xffff) / 32768.0 - 1.0;
    return (float) (v * (1.0 + s_ref_eps * r));
}

//  W8A8 activation levels, as gpu_model.cu reads them: 2 unless
//  SPLITMESH_W8A8_ACT_LEVELS=1.
static int
s_w8a8_levels (void)
{
    const char *lv = getenv ("SPLITMESH_W8A8_ACT_LEVELS");
    return lv && atoi (lv) == 1 ? 1 : 2;
}

//  y = W x for one token, x quantized per token like the GPU's emit.
static void
s_i8_mv (const s_i8_t *W, const float *x_in, float *y)
{
    int8_t *xq = malloc ((size_t) W->cols);
    float *x = malloc ((size_t) W->cols * sizeof (float));
    cr_assert (xq && x);
    for (int c = 0; c < W->cols; c++)
        x[c] = s_perturb (x_in[c]);
    if (s_ref_g32) {
        //  kernels.c's kernels_quantize_act_ref and s_matmul_w8, with the
        //  engine's activation levels (two by default: x ~ d (256 q + q2)).
        int G = W->cols / 32;
        bool two = qmatrix_act_levels (QFMT_W8) == 2;
        float *dx = malloc ((size_t) G * sizeof (float));
        float *sx = malloc ((size_t) G * sizeof (float));
        int8_t *xq2 = calloc ((size_t) W->cols, 1);
        cr_assert (dx && sx && xq2);
        for (int g = 0; g < G; g++) {
            float amax = 0;
            for (int j = 0; j < 32; j++)
                amax = fmaxf (amax, fabsf (x[g * 32 + j]));
            float dg = amax >= 1e-30f ? amax / 127.0f : 0.0f;
            float id = dg != 0.0f ? 1.0f / dg : 0.0f;
            int sum = 0, sum2 = 0;
            for (int j = 0; j < 32; j++) {
                //  volatile: v must be the rounded product, as in kernels.c
                //  (a contracted fma (x, id, -iv) would give another residual).
                volatile float v = x[g * 32 + j] * id;
                float fv = nearbyintf (v);
                int iv = !(fv >= -127.0f) ? -127 : fv > 127.0f ? 127 : (int) fv;
                xq[g * 32 + j] = (int8_t) iv;
                sum += iv;
                if (two) {
                    float fr = nearbyintf ((v - (float) iv) * 256.0f);
                    int ir = !(fr >= -127.0f) ? -127 : fr > 127.0f ? 127 : (int) fr;
                    xq2[g * 32 + j] = (int8_t) ir;
                    sum2 += ir;
                }
            }
            dx[g] = two ? dg / 256.0f : dg;
            sx[g] = two ? dx[g] * (float) (sum * 256 + sum2) : dg * (float) sum;
        }
        for (int r = 0; r < W->rows; r++) {
            const int8_t *wr = W->q + (size_t) r * W->cols;
            float acc = 0.0f;
            for (int g = 0; g < G; g++) {
                int32_t isum = 0, isum2 = 0;
                for (int j = 0; j < 32; j++) {
                    isum += (int32_t) wr[g * 32 + j] * xq[g * 32 + j];
                    isum2 += (int32_t) wr[g * 32 + j] * xq2[g * 32 + j];
                }
                if (two)
                    isum = isum * 256 + isum2;
                acc += W->s[(size_t) r * G + g] * dx[g] * (float) isum + W->m[(size_t) r * G + g] * sx[g];
            }
            y[r] = acc;
        }
        free (dx);
        free (sx);
        free (xq2);
        free (xq);
        free (x);
        return;
    }
    //  W8A8 (gpu_kernels.cuh k_emit_int8, gpu_mma.cuh k_deq_w8a8): d = max
    //  |x| / 127 per token, q1 = rint (x / d), with two levels (the
    //  default) q2 = rint (256 (x / d - q1)); y = s_w d (a1 + a2 / 256)
    //  from the exact int32 sums a1, a2, combined in double.
    bool two = s_w8a8_levels () == 2;
    int8_t *xq2 = calloc ((size_t) W->cols, 1);
    cr_assert_not_null (xq2);
    float amax = 0;
    for (int c = 0; c < W->cols; c++)
        amax = fmaxf (amax, fabsf (x[c]));
    float xs = amax > 0 ? amax / 127.0f : 1.0f, inv = 1.0f / xs;
    for (int c = 0; c < W->cols; c++) {
        volatile float v = x[c] * inv;      //  the rounded product (no fma contraction)
        float fv = nearbyintf (v);
        int iv = fv > 127 ? 127 : fv < -127 ? -127 : (int) fv;
        xq[c] = (int8_t) iv;
        if (two) {
            float fr = nearbyintf ((v - (float) iv) * 256.0f);
            xq2[c] = (int8_t) (fr > 127 ? 127 : fr < -127 ? -127 : fr);
        }
    }
    for (int r = 0; r < W->rows; r++) {
        const int8_t *wr = W->q + (size_t) r * W->cols;
        int32_t acc = 0, acc2 = 0;
        for (int c = 0; c < W->cols; c++) {
            acc += (int32_t) wr[c] * xq[c];
            acc2 += (int32_t) wr[c] * xq2[c];
        }
        float v = (float) ((double) acc + (double) acc2 * (1.0 / 256.0));
        y[r] = v * xs * W->s[r];
    }
    free (xq2);
    free (xq);
    free (x);
}

static float
s_h (float v)
{
    return (float) (_Float16) v;
}

static void
s_ref_rmsnorm (float *out, const float *x, const float *w, int dim, float eps)
{
    float ss = 0;
    for (int i = 0; i < dim; i++)
        ss += x[i] * x[i];
    float inv = 1.0f / sqrtf (ss / dim + eps);
    for (int i = 0; i < dim; i++)
        out[i] = x[i] * inv * w[i];
}

//  The reference's int8 weights: every layer's matrices and the head.
typedef struct {
    int L;
    s_i8_t *qkv, *wo, *gu, *down;
    s_i8_t head;
} s_w8ref_t;

static s_w8ref_t
s_w8ref_new (const model_t *cpu)
{
    const model_weights_t *w = &cpu->w;
    s_w8ref_t R = { model_config (cpu)->n_layers, NULL, NULL, NULL, NULL, { 0 } };
    R.qkv = calloc (R.L, sizeof *R.qkv);
    R.wo = calloc (R.L, sizeof *R.wo);
    R.gu = calloc (R.L, sizeof *R.gu);
    R.down = calloc (R.L, sizeof *R.down);
    cr_assert (R.qkv && R.wo && R.gu && R.down);
    for (int l = 0; l < R.L; l++) {
        R.qkv[l] = s_i8_new (w->layers[l].wqkv);
        R.wo[l] = s_i8_new (w->layers[l].wo);
        R.gu[l] = s_i8_new (w->layers[l].w_gate_up);
        R.down[l] = s_i8_new (w->layers[l].w_down);
    }
    R.head = s_i8_new (w->output);
    return R;
}

static void
s_w8ref_free (s_w8ref_t *R)
{
    for (int l = 0; l < R->L; l++) {
        s_i8_free (&R->qkv[l]); s_i8_free (&R->wo[l]); s_i8_free (&R->gu[l]); s_i8_free (&R->down[l]);
    }
    s_i8_free (&R->head);
    free (R->qkv); free (R->wo); free (R->gu); free (R->down);
}

//  Layer l of the W8A8 arithmetic on X (n x dim, positions 0..n-1 of a
//  fresh cache), in place, token by token.
static void
s_w8ref_layer (const model_t *cpu, const s_w8ref_t *R, int l, float *X, int n)
{
    const model_config_t *c = model_config (cpu);
    const model_weights_t *w = &cpu->w;
    const model_layer_t *ly = &w->layers[l];
    int dim = c->dim, hd = c->head_dim, kvd = c->kv_dim, hid = c->hidden_dim;
    int qd = c->n_heads * hd, group = c->n_heads / c->n_kv_heads;
    float *kc = malloc ((size_t) n * kvd * sizeof (float));
    float *vc = malloc ((size_t) n * kvd * sizeof (float));
    float *xb = malloc (dim * sizeof (float));
    float *buf = malloc ((size_t) (qd + 2 * kvd + 2 * hid) * sizeof (float));
    float *att = malloc (qd * sizeof (float)), *hb = malloc (hid * sizeof (float));
    float *sc = malloc (n * sizeof (float)), *tmp = malloc (dim * sizeof (float));
    cr_assert (kc && vc && xb && buf && att && hb && sc && tmp);
    for (int p = 0; p < n; p++) {
        float *x = X + (size_t) p * dim;
        s_ref_rmsnorm (xb, x, ly->attn_norm, dim, c->norm_eps);
        s_i8_mv (&R->qkv[l], xb, buf);
        for (int i = 0; i < hd / 2; i++) {
            double ang = (double) p * w->rope_inv_freq[i];
            float co = (float) cos (ang), si = (float) sin (ang);
            for (int h = 0; h < c->n_heads + c->n_kv_heads; h++) {
                float *v = buf + h * hd + 2 * i;
                float x0 = v[0], x1 = v[1];
                v[0] = x0 * co - x1 * si;
                v[1] = x0 * si + x1 * co;
            }
        }
        float *kl = kc + (size_t) p * kvd, *vl = vc + (size_t) p * kvd;
        for (int i = 0; i < kvd; i++) {
            kl[i] = s_ref_g32 ? buf[qd + i] : s_h (buf[qd + i]);
            vl[i] = s_ref_g32 ? buf[qd + kvd + i] : s_h (buf[qd + kvd + i]);
        }
        float scale = 1.0f / sqrtf ((float) hd);
        for (int h = 0; h < c->n_heads; h++) {
            const float *q = buf + h * hd;
            int ko = (h / group) * hd;
            float mx = -INFINITY, sum = 0;
            for (int j = 0; j <= p; j++) {
                const float *k = kc + (size_t) j * kvd + ko;
                float d = 0;
                for (int i = 0; i < hd; i++)
                    d += q[i] * scale * k[i];
                sc[j] = d;
                mx = fmaxf (mx, d);
            }
            for (int j = 0; j <= p; j++)
                sum += (sc[j] = expf (sc[j] - mx));
            for (int i = 0; i < hd; i++) {
                float o = 0;
                for (int j = 0; j <= p; j++)
                    o += sc[j] * vc[(size_t) j * kvd + ko + i];
                att[h * hd + i] = o / sum;
            }
        }
        s_i8_mv (&R->wo[l], att, tmp);
        for (int i = 0; i < dim; i++)
            x[i] += tmp[i];
        s_ref_rmsnorm (xb, x, ly->ffn_norm, dim, c->norm_eps);
        s_i8_mv (&R->gu[l], xb, buf);
        for (int i = 0; i < hid; i++)
            hb[i] = buf[i] / (1.0f + expf (-buf[i])) * buf[hid + i];
        s_i8_mv (&R->down[l], hb, tmp);
        for (int i = 0; i < dim; i++)
            x[i] += tmp[i];
    }
    free (kc); free (vc); free (xb); free (buf); free (att); free (hb); free (sc); free (tmp);
}

//  The head of the W8A8 arithmetic: logits (n x vocab) of X (n x dim).
static void
s_w8ref_head (const model_t *cpu, const s_w8ref_t *R, const float *X, int n, float *logits)
{
    const model_config_t *c = model_config (cpu);
    float *xb = malloc (c->dim * sizeof (float));
    cr_assert_not_null (xb);
    for (int p = 0; p < n; p++) {
        s_ref_rmsnorm (xb, X + (size_t) p * c->dim, cpu->w.output_norm, c->dim, c->norm_eps);
        s_i8_mv (&R->head, xb, logits + (size_t) p * c->vocab_size);
    }
    free (xb);
}

//  Logits (n x vocab) of the W8A8 arithmetic for tokens at positions
//  0..n-1; when xs is given, it receives the activations entering each
//  layer and, last, those entering the head: (L + 1) x n x dim.
static float *
s_w8a8_ref_logits_x (const model_t *cpu, const int32_t *tokens, int n, float *xs)
{
    const model_config_t *c = model_config (cpu);
    int dim = c->dim;
    s_w8ref_t R = s_w8ref_new (cpu);
    float *X = malloc ((size_t) n * dim * sizeof (float));
    float *logits = malloc ((size_t) n * c->vocab_size * sizeof (float));
    cr_assert (X && logits);
    for (int p = 0; p < n; p++) {
        qmatrix_get_row (cpu->w.token_embd, tokens[p], X + (size_t) p * dim);
        for (int i = 0; i < dim && !s_ref_g32; i++)
            X[(size_t) p * dim + i] = s_h (X[(size_t) p * dim + i]);
    }
    for (int l = 0; l < R.L; l++) {
        if (xs)
            memcpy (xs + (size_t) l * n * dim, X, (size_t) n * dim * sizeof (float));
        s_w8ref_layer (cpu, &R, l, X, n);
    }
    if (xs)
        memcpy (xs + (size_t) R.L * n * dim, X, (size_t) n * dim * sizeof (float));
    s_w8ref_head (cpu, &R, X, n, logits);
    s_w8ref_free (&R);
    free (X);
    return logits;
}

static float *
s_w8a8_ref_logits (const model_t *cpu, const int32_t *tokens, int n)
{
    return s_w8a8_ref_logits_x (cpu, tokens, n, NULL);
}

//  Top-1 agreement (fraction of rows) and relative error of a vs ref.
static double
s_agree (const float *a, const float *ref, int n, int V)
{
    int agree = 0;
    for (int t = 0; t < n; t++)
        agree += s_argmax (a + (size_t) t * V, V) == s_argmax (ref + (size_t) t * V, V);
    return (double) agree / n;
}

//  No device needed: the plain-C reference in groups of 32 (the GPU's w8
//  arithmetic, written from kernels.c and quant.c; on the H100 the GPU's
//  w8 pass is exactly as far from the engine as this reference: rel
//  7.196e-3 both) against the CPU engine's w8 forward on the
//  same weights, on the tiny model: every layer alone on the engine's own
//  input, and the head, agree to float rounding (1e-7) on every token but
//  one (layer 0, token 18: 4.5e-3, one int8 rounding flip), so the
//  arithmetic is the engine's; the whole pass drifts (7.2e-3 here) because
//  such flips, set off by 1e-7 differences of summation order, carry on
//  through the layers and the cache, as for W8A8
//  (w8a8_two_levels_stop_rounding_amplification). This is why GPU w8 vs CPU w8 on
//  SmolLM2 stays at 0.976 top-1 (gpu/NOTES.md).
Test (gpu_model, w8_reference_layers_match_cpu_w8, .fini = s_cleanup)
{
    const char *path = s_tiny ();
    model_options_t o = model_options_default ();
    o.format = QFMT_W8;
    char err[256] = "";
    model_t *cpu = model_load (path, &o, err, sizeof err);
    cr_assert_not_null (cpu, "%s", err);
    const model_config_t *c = model_config (cpu);
    int V = c->vocab_size, D = c->dim;
    enum { N = 40 };
    int32_t tokens[N];
    s_tokens (tokens, N, V, 3);
    float *ref = s_cpu_logits (cpu, tokens, N);
    s_ref_g32 = true;
    float *got = s_w8a8_ref_logits (cpu, tokens, N);
    double e = s_rel_err (got, ref, (size_t) N * V);
    printf ("TINY w8 C reference vs CPU engine w8, whole pass: rel logit err %.3e, top-1 %d/%d\n", e,
            (int) (s_agree (got, ref, N, V) * N + 0.5), N);
    //  Layer by layer on the engine's activations, then the head.
    float *x1 = malloc ((size_t) N * D * sizeof (float)), *x2 = malloc ((size_t) N * D * sizeof (float));
    float *l2 = malloc ((size_t) N * V * sizeof (float));
    kvcache_t *kv = kvcache_new (cpu, N);
    cr_assert (x1 && x2 && l2 && kv);
    cr_assert_eq (model_embed (cpu, tokens, N, x1), 0);
    s_w8ref_t R = s_w8ref_new (cpu);
    for (int l = 0; l < c->n_layers; l++) {
        memcpy (x2, x1, (size_t) N * D * sizeof (float));
        cr_assert_eq (model_forward (cpu, kv, l, l + 1, 0, N, x1), 0);
        s_w8ref_layer (cpu, &R, l, x2, N);
        //  Tokens off by more than float rounding: each such token is one
        //  int8 rounding flip (a value within an ulp of a .5 boundary). With
        //  the engine's two activation levels a flip of the residual level
        //  moves its element by 1/256 of a one-level step, and 1e-7
        //  differences of the inputs flip some in most tokens (measured:
        //  1-3e-5 a token, 5e-5 over the whole pass, vs 7e-3 with one
        //  level): the bound is that of a residual-level flip, 2e-4.
        double tol = qmatrix_act_levels (QFMT_W8) == 2 ? 2e-4 : 1e-5;
        int off = 0;
        for (int t = 0; t < N; t++) {
            double et = s_rel_err (x2 + (size_t) t * D, x1 + (size_t) t * D, D);
            if (et > tol) {
                off++;
                printf ("TINY w8 C reference vs CPU engine w8, layer %d alone: token %d off by %.3e\n",
                        l, t, et);
            }
        }
        printf ("TINY w8 C reference vs CPU engine w8, layer %d alone: %d of %d tokens beyond %.0e\n",
                l, off, N, tol);
        cr_expect_leq (off, 2, "layer %d: %d tokens differ beyond float rounding", l, off);
    }
    float *l1 = malloc ((size_t) N * V * sizeof (float));
    cr_assert_eq (model_head (cpu, x1, N, l1), 0);
    s_w8ref_head (cpu, &R, x1, N, l2);
    double eh = s_rel_err (l2, l1, (size_t) N * V);
    cr_expect_leq (eh, 1e-5, "head: rel err %.3e", eh);
    s_ref_g32 = false;
    s_w8ref_free (&R);
    kvcache_destroy (&kv);
    free (x1); free (x2); free (l1); free (l2);
    free (ref);
    free (got);
    model_destroy (&cpu);
}

Test (gpu_model, tiny_w8a8_matches_w8a8_reference, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    int V = model_config (cpu)->vocab_size;
    enum { N = 40 };
    int32_t tokens[N];
    s_tokens (tokens, N, V, 3);
    float *ref = s_w8a8_ref_logits (cpu, tokens, N);
    gpu_model_t *g = s_gpu (cpu, GPU_FMT_W8A8, 1, 128);
    int chunks[3] = { N, 5, 1 };
    for (int k = 0; k < 3; k++) {
        float *got = s_gpu_logits (g, tokens, N, chunks[k]);
        double e = s_rel_err (got, ref, (size_t) N * V), a = s_agree (got, ref, N, V);
        cr_log_info ("w8a8 vs W8A8 reference, chunk %d: rel err %.2e, top-1 %.3f", chunks[k], e, a);
        cr_expect_leq (e, 5e-3, "chunk %d: relative error %.3e vs the W8A8 reference", chunks[k], e);
        cr_expect_geq (a, 0.975, "chunk %d: top-1 agreement %.3f vs the W8A8 reference", chunks[k], a);
        free (got);
    }
    gpu_model_destroy (&g);
    free (ref);
    model_destroy (&cpu);
}

Test (gpu_model, tiny_fp16_and_w8a8_match_cpu, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    const model_config_t *c = model_config (cpu);
    enum { N = 40 };
    int32_t tokens[N];
    s_tokens (tokens, N, c->vocab_size, 3);
    float *ref = s_cpu_logits (cpu, tokens, N);
    size_t nl = (size_t) N * c->vocab_size;

    for (int f = 0; f < 2; f++) {
        gpu_model_t *g = s_gpu (cpu, f ? GPU_FMT_W8A8 : GPU_FMT_FP16, 2, 128);
        //  Prefill in one batch, then in chunks of 5 (verify-sized), then
        //  one position at a time (decode).
        int chunks[3] = { N, 5, 1 };
        for (int k = 0; k < 3; k++) {
            float *got = s_gpu_logits (g, tokens, N, chunks[k]);
            double err = s_rel_err (got, ref, nl);
            int agree = 0;
            for (int t = 0; t < N; t++)
                agree += s_argmax (got + (size_t) t * c->vocab_size, c->vocab_size)
                         == s_argmax (ref + (size_t) t * c->vocab_size, c->vocab_size);
            cr_log_info ("%s chunk %d: rel err %.2e, top-1 %d/%d", f ? "w8a8" : "fp16",
                         chunks[k], err, agree, N);
            if (f == 0)
                cr_expect_leq (err, 1e-2, "fp16 chunk %d: relative logit error %.3e > 1e-2", chunks[k], err);
            else
                //  int8 weights and activations on a random tiny model:
                //  a few percent is the expected quantization error.
                cr_expect_leq (err, 6e-2, "w8a8 chunk %d: relative logit error %.3e", chunks[k], err);
            cr_expect_geq (agree, f ? N * 9 / 10 : N - 1, "%s chunk %d: top-1 agreement %d/%d",
                           f ? "w8a8" : "fp16", chunks[k], agree, N);
            free (got);
        }
        gpu_model_destroy (&g);
        cr_assert_null (g);
    }
    free (ref);
    model_destroy (&cpu);
}

Test (gpu_model, layer_range_activations_match_cpu, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    //  The cloud-target's range: layers [1, N) and the head, activations in.
    model_t *full = s_cpu (path, 0, -1, true, true);
    model_t *tail = s_cpu (path, 1, -1, false, true);
    model_t *head_less = s_cpu (path, 0, 1, true, false);
    const model_config_t *c = model_config (full);
    enum { N = 12 };
    int32_t tokens[N];
    s_tokens (tokens, N, c->vocab_size, 5);
    float *ref = s_cpu_logits (full, tokens, N);

    //  The prefix's activations after layer 0, on the CPU.
    float *x = malloc ((size_t) N * c->dim * sizeof (float));
    kvcache_t *kv = kvcache_new (head_less, N);
    cr_assert_eq (model_embed (head_less, tokens, N, x), 0);
    cr_assert_eq (model_forward (head_less, kv, 0, 1, 0, N, x), 0);

    //  The GPU prefix (layer 0, no head) gives the same activations.
    gpu_model_t *gp = s_gpu (head_less, GPU_FMT_FP16, 1, 64);
    float *gx = malloc ((size_t) N * c->dim * sizeof (float));
    int sp = gpu_session_open (gp);
    gpu_seq_t qp = { sp, 0, N, tokens, NULL };
    gpu_out_t op = { .x = gx };
    cr_assert_eq (gpu_forward_batch (gp, &qp, 1, &op), 0, "%s", gpu_model_error (gp));
    double ex = s_rel_err (gx, x, (size_t) N * c->dim);
    cr_expect_leq (ex, 1e-2, "layer-0 activations: relative error %.3e", ex);
    gpu_out_t bad = { .argmax = (int32_t[N]) { 0 } };
    gpu_seq_t qb = { sp, N, 1, tokens, NULL };
    cr_expect_eq (gpu_forward_batch (gp, &qb, 1, &bad), -1, "logits from a head-less model");
    cr_expect (strstr (gpu_model_error (gp), "head"), "message: %s", gpu_model_error (gp));

    //  The GPU tail from the CPU activations gives the full model's logits.
    gpu_model_t *gt = s_gpu (tail, GPU_FMT_FP16, 1, 64);
    float *logits = malloc ((size_t) N * c->vocab_size * sizeof (float));
    int st = gpu_session_open (gt);
    gpu_seq_t qt = { st, 0, N, NULL, x };
    gpu_out_t ot = { .logits = logits };
    cr_assert_eq (gpu_forward_batch (gt, &qt, 1, &ot), 0, "%s", gpu_model_error (gt));
    double el = s_rel_err (logits, ref, (size_t) N * c->vocab_size);
    cr_expect_leq (el, 1e-2, "tail logits: relative error %.3e", el);
    gpu_seq_t qn = { st, N, 1, NULL, NULL };
    cr_expect_eq (gpu_forward_batch (gt, &qn, 1, &ot), -1, "no input activations");

    gpu_model_destroy (&gp);
    gpu_model_destroy (&gt);
    kvcache_destroy (&kv);
    free (x); free (gx); free (logits); free (ref);
    model_destroy (&full);
    model_destroy (&tail);
    model_destroy (&head_less);
}

//  Sessions batched together give what each gives alone; rollback by
//  truncation equals never having seen the rejected positions; graphs and
//  direct launches agree.
Test (gpu_model, batch_rollback_graphs, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    const model_config_t *c = model_config (cpu);
    int V = c->vocab_size;
    for (int f = 0; f < 2; f++) {
        gpu_model_t *g = s_gpu (cpu, f ? GPU_FMT_W8A8 : GPU_FMT_FP16, 4, 128);
        enum { S = 3, P = 20, K = 5 };
        int32_t prompt[S][P], draft[S][K];
        for (int s = 0; s < S; s++) {
            s_tokens (prompt[s], P, V, 100 + s);
            s_tokens (draft[s], K, V, 200 + s);
        }
        //  Alone: each session's prompt + draft logits.
        float *alone = malloc ((size_t) S * K * V * sizeof (float));
        for (int s = 0; s < S; s++) {
            int32_t all[P + K];
            memcpy (all, prompt[s], sizeof prompt[s]);
            memcpy (all + P, draft[s], sizeof draft[s]);
            float *l = s_gpu_logits (g, all, P + K, P + K);
            memcpy (alone + (size_t) s * K * V, l + (size_t) P * V, (size_t) K * V * sizeof (float));
            free (l);
        }
        //  Together: prompts of different lengths in one batch (session
        //  s gets P - s positions first), then the rest, then wrong drafts
        //  that are rolled back, then the real drafts in one batch.
        int id[S];
        gpu_seq_t q[S];
        for (int s = 0; s < S; s++) {
            id[s] = gpu_session_open (g);
            cr_assert_geq (id[s], 0);
            q[s] = (gpu_seq_t) { id[s], 0, P - s, prompt[s], NULL };
        }
        gpu_out_t none = { .argmax = malloc (256 * sizeof (int32_t)) };
        cr_assert_eq (gpu_forward_batch (g, q, S, &none), 0, "%s", gpu_model_error (g));
        for (int s = 1; s < S; s++)
            q[s - 1] = (gpu_seq_t) { id[s], P - s, s, prompt[s] + P - s, NULL };
        cr_assert_eq (gpu_forward_batch (g, q, S - 1, &none), 0, "%s", gpu_model_error (g));
        int32_t wrong[K];
        s_tokens (wrong, K, V, 999);
        for (int s = 0; s < S; s++)
            q[s] = (gpu_seq_t) { id[s], P, K, wrong, NULL };
        cr_assert_eq (gpu_forward_batch (g, q, S, &none), 0, "%s", gpu_model_error (g));
        for (int s = 0; s < S; s++) {
            cr_assert_eq (gpu_session_pos (g, id[s]), P + K);
            cr_assert_eq (gpu_session_truncate (g, id[s], P), 0);
            cr_assert_eq (gpu_session_pos (g, id[s]), P);
        }
        float *together = malloc ((size_t) S * K * V * sizeof (float));
        int32_t *am = malloc ((size_t) S * K * sizeof (int32_t));
        for (int s = 0; s < S; s++)
            q[s] = (gpu_seq_t) { id[s], P, K, draft[s], NULL };
        gpu_out_t out = { .logits = together, .argmax = am };
        cr_assert_eq (gpu_forward_batch (g, q, S, &out), 0, "%s", gpu_model_error (g));
        double err = s_rel_err (together, alone, (size_t) S * K * V);
        cr_log_info ("%s batched vs alone: rel err %.2e", f ? "w8a8" : "fp16", err);
        cr_expect_leq (err, f ? 2e-2 : 2e-3, "batched vs alone: relative error %.3e", err);
        for (int t = 0; t < S * K; t++)
            cr_expect_eq (am[t], s_argmax (together + (size_t) t * V, V), "argmax row %d", t);

        //  Graphs off: same positions again (after rollback) must give
        //  the same logits as the graph replay (same kernels and plans).
        for (int s = 0; s < S; s++)
            gpu_session_truncate (g, id[s], P);
        gpu_model_set_graphs (g, false);
        float *direct = malloc ((size_t) S * K * V * sizeof (float));
        gpu_out_t od = { .logits = direct };
        cr_assert_eq (gpu_forward_batch (g, q, S, &od), 0, "%s", gpu_model_error (g));
        double eg = s_rel_err (direct, together, (size_t) S * K * V);
        cr_expect_leq (eg, 1e-6, "graph vs direct launches: relative error %.3e", eg);

        //  Probabilities: rows sum to 1, their argmax is the greedy token.
        for (int s = 0; s < S; s++)
            gpu_session_truncate (g, id[s], P);
        float *probs = malloc ((size_t) S * K * V * sizeof (float));
        gpu_out_t opr = { .probs = probs, .temperature = 0.7f, .argmax = am };
        cr_assert_eq (gpu_forward_batch (g, q, S, &opr), 0, "%s", gpu_model_error (g));
        for (int t = 0; t < S * K; t++) {
            double sum = 0;
            for (int i = 0; i < V; i++)
                sum += probs[(size_t) t * V + i];
            cr_expect (fabs (sum - 1.0) < 1e-3, "row %d sums to %f", t, sum);
            cr_expect_eq (s_argmax (probs + (size_t) t * V, V), am[t]);
        }
        for (int s = 0; s < S; s++)
            cr_assert_eq (gpu_session_close (g, id[s]), 0);
        cr_expect_eq (gpu_model_free_pages (g), gpu_model_total_pages (g), "pages leaked");
        free (alone); free (together); free (direct); free (probs); free (am); free (none.argmax);
        gpu_model_destroy (&g);
    }
    model_destroy (&cpu);
}

//  The skinny GEMM kernels (batches of <= 8 positions) compute what
//  cuBLASLt computes: the same int32 sums in W8A8 (so the same logits),
//  fp32-accumulated fp16 products in fp16, at every batch size 1..8 and
//  over several sessions at once.
Test (gpu_model, skinny_gemm_matches_cublaslt, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    int V = model_config (cpu)->vocab_size;
    for (int f = 0; f < 2; f++) {
        gpu_model_t *g = s_gpu (cpu, f ? GPU_FMT_W8A8 : GPU_FMT_FP16, 3, 128);
        int a = gpu_session_open (g), b = gpu_session_open (g);
        int32_t prompt[30], tok[8];
        s_tokens (prompt, 30, V, 41);
        gpu_seq_t pre[2] = { { a, 0, 30, prompt, NULL }, { b, 0, 17, prompt, NULL } };
        int32_t am[64];
        gpu_out_t oa = { .argmax = am };
        cr_assert_eq (gpu_forward_batch (g, pre, 2, &oa), 0, "%s", gpu_model_error (g));
        float *on = malloc ((size_t) 8 * V * sizeof (float)), *off = malloc ((size_t) 8 * V * sizeof (float));
        for (int t = 1; t <= 8; t++) {
            s_tokens (tok, 8, V, 300 + t);
            //  One session with t positions, and two sessions sharing t.
            for (int split = 0; split < 2; split++) {
                int na = split ? (t + 1) / 2 : t, nb = t - na;
                gpu_seq_t q[2] = { { a, 30, na, tok, NULL }, { b, 17, nb, tok + na, NULL } };
                int nq = nb > 0 ? 2 : 1;
                float *dst[2] = { on, off };
                for (int k = 0; k < 2; k++) {
                    gpu_model_set_skinny (g, k == 0);
                    gpu_out_t o = { .logits = dst[k] };
                    cr_assert_eq (gpu_forward_batch (g, q, nq, &o), 0, "%s", gpu_model_error (g));
                    gpu_session_truncate (g, a, 30);
                    gpu_session_truncate (g, b, 17);
                }
                double e = s_rel_err (on, off, (size_t) t * V);
                cr_expect_leq (e, f ? 1e-6 : 3e-3, "%s t %d split %d: skinny vs cuBLASLt relative error %.3e",
                               f ? "w8a8" : "fp16", t, split, e);
            }
        }
        free (on);
        free (off);
        gpu_model_destroy (&g);
    }
    model_destroy (&cpu);
}

//  Greedy speculative decoding on the GPU (verify k+1 positions, accept
//  the drafts that match the argmax, take the argmax after them, roll the
//  rest back) generates exactly what plain greedy decoding (one position
//  a call) generates. The drafter is deliberately poor: it proposes the
//  true continuation (known from the plain run) with some tokens replaced,
//  so every acceptance length 0..k occurs.
static void
s_spec_equals_greedy (gpu_model_t *g, const int32_t *prompt, int np, int n_gen)
{
    int V = gpu_model_config (g)->vocab_size;
    enum { K = 4 };
    int32_t *plain = malloc ((size_t) (np + n_gen + K + 1) * sizeof (int32_t));
    memcpy (plain, prompt, np * sizeof (int32_t));
    int s = gpu_session_open (g);
    int32_t am[256];
    gpu_out_t out = { .argmax = am };
    //  The prompt but its last token as one batch (as below), then one
    //  position a call: every generated position goes through the same
    //  kernels in both runs, so equality is exact, not up to rounding.
    gpu_seq_t q = { s, 0, np - 1, prompt, NULL };
    cr_assert_eq (gpu_forward_batch (g, &q, 1, &out), 0, "%s", gpu_model_error (g));
    for (int i = 0; i < n_gen; i++) {
        q = (gpu_seq_t) { s, np - 1 + i, 1, plain + np - 1 + i, NULL };
        cr_assert_eq (gpu_forward_batch (g, &q, 1, &out), 0, "%s", gpu_model_error (g));
        plain[np + i] = am[0];
    }
    gpu_session_close (g, s);

    int32_t *spec = malloc ((size_t) (np + n_gen + K + 1) * sizeof (int32_t));
    memcpy (spec, prompt, np * sizeof (int32_t));
    s = gpu_session_open (g);
    q = (gpu_seq_t) { s, 0, np - 1, prompt, NULL };
    cr_assert_eq (gpu_forward_batch (g, &q, 1, &out), 0, "%s", gpu_model_error (g));
    int len = np, hist[K + 1] = { 0 };
    unsigned r = 77;
    while (len < np + n_gen) {
        //  Verify [last token, d1..dK] at positions len-1 .. len+K-1.
        int32_t in[K + 1];
        in[0] = spec[len - 1];
        for (int j = 1; j <= K; j++) {
            r = r * 1103515245u + 12345u;
            int32_t truth = len + j - 1 < np + n_gen ? plain[len + j - 1] : 0;
            in[j] = (r >> 16) % 4 == 0 ? (int32_t) ((r >> 8) % (unsigned) V) : truth;
        }
        q = (gpu_seq_t) { s, len - 1, K + 1, in, NULL };
        cr_assert_eq (gpu_forward_batch (g, &q, 1, &out), 0, "%s", gpu_model_error (g));
        int acc = 0;
        while (acc < K && in[acc + 1] == am[acc])
            acc++;
        for (int j = 0; j < acc; j++)
            spec[len + j] = in[j + 1];
        spec[len + acc] = am[acc];
        len += acc + 1;
        hist[acc]++;
        //  The cache keeps the verified input rows: len - 1 positions.
        cr_assert_eq (gpu_session_truncate (g, s, len - 1), 0);
    }
    cr_log_info ("speculative acceptance histogram: %d %d %d %d %d", hist[0], hist[1], hist[2], hist[3], hist[4]);
    for (int i = np; i < np + n_gen; i++)
        cr_expect_eq (spec[i], plain[i], "token %d: speculative %d, greedy %d", i - np, spec[i], plain[i]);
    gpu_session_close (g, s);
    free (plain);
    free (spec);
}

Test (gpu_model, speculative_greedy_equals_greedy, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    int32_t prompt[12];
    s_tokens (prompt, 12, model_config (cpu)->vocab_size, 8);
    for (int f = 0; f < 2; f++) {
        gpu_model_t *g = s_gpu (cpu, f ? GPU_FMT_W8A8 : GPU_FMT_FP16, 2, 128);
        s_spec_equals_greedy (g, prompt, 12, 60);
        gpu_model_destroy (&g);
    }
    model_destroy (&cpu);
    const char *smol = getenv ("SPLITMESH_MODEL");
    if (smol && access (smol, R_OK) == 0) {
        model_t *m = s_cpu (smol, 0, -1, true, true);
        int32_t p2[8] = { 1, 504, 3458, 282, 4274, 314, 253, 1789 };
        for (int f = 0; f < 2; f++) {
            gpu_model_t *g = s_gpu (m, f ? GPU_FMT_W8A8 : GPU_FMT_FP16, 2, 256);
            s_spec_equals_greedy (g, p2, 8, 100);
            gpu_model_destroy (&g);
        }
        model_destroy (&m);
    }
}

//  The head alone on the activations a forward pass gives equals the
//  forward pass with the head (the service's layers-then-head path).
Test (gpu_model, head_alone_equals_forward_with_head, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    const model_config_t *c = model_config (cpu);
    int V = c->vocab_size;
    for (int f = 0; f < 2; f++) {
        gpu_model_t *g = s_gpu (cpu, f ? GPU_FMT_W8A8 : GPU_FMT_FP16, 2, 64);
        int lens[2] = { 5, 12 };        //  skinny and cuBLASLt GEMMs
        for (int k = 0; k < 2; k++) {
            int n = lens[k];
            int32_t tok[12];
            s_tokens (tok, n, V, 60 + k);
            int a = gpu_session_open (g), b = gpu_session_open (g);
            float *x = malloc ((size_t) n * c->dim * sizeof (float));
            float *l1 = malloc ((size_t) n * V * sizeof (float)), *l2 = malloc ((size_t) n * V * sizeof (float));
            int32_t am1[12], am2[12];
            gpu_seq_t qa = { a, 0, n, tok, NULL }, qb = { b, 0, n, tok, NULL };
            gpu_out_t ox = { .x = x }, ol = { .logits = l1, .argmax = am1 };
            cr_assert_eq (gpu_forward_batch (g, &qa, 1, &ox), 0, "%s", gpu_model_error (g));
            cr_assert_eq (gpu_forward_batch (g, &qb, 1, &ol), 0, "%s", gpu_model_error (g));
            gpu_out_t oh = { .logits = l2, .argmax = am2 };
            cr_assert_eq (gpu_model_head (g, x, n, &oh), 0, "%s", gpu_model_error (g));
            double e = s_rel_err (l2, l1, (size_t) n * V);
            cr_expect_leq (e, 1e-6, "%s n %d: head alone vs forward: relative error %.3e", f ? "w8a8" : "fp16", n, e);
            for (int t = 0; t < n; t++)
                cr_expect_eq (am1[t], am2[t], "row %d", t);
            gpu_out_t bad = { .x = x };
            cr_expect_eq (gpu_model_head (g, x, n, &bad), -1);
            cr_expect_eq (gpu_model_head (g, x, 0, &oh), -1);
            gpu_session_close (g, a);
            gpu_session_close (g, b);
            free (x); free (l1); free (l2);
        }
        gpu_model_destroy (&g);
    }
    model_destroy (&cpu);
}

//  One model over [0, N) serving a session from layer 1 with activations
//  (the cloud-target's split) gives the full model's logits.
Test (gpu_model, forward_from_a_later_layer, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *full = s_cpu (path, 0, -1, true, true);
    model_t *prefix = s_cpu (path, 0, 1, true, false);
    const model_config_t *c = model_config (full);
    enum { N = 10 };
    int32_t tokens[N];
    s_tokens (tokens, N, c->vocab_size, 23);
    float *ref = s_cpu_logits (full, tokens, N);
    float *x = malloc ((size_t) N * c->dim * sizeof (float));
    kvcache_t *kv = kvcache_new (prefix, N);
    cr_assert_eq (model_embed (prefix, tokens, N, x), 0);
    cr_assert_eq (model_forward (prefix, kv, 0, 1, 0, N, x), 0);
    gpu_model_t *g = s_gpu (full, GPU_FMT_FP16, 2, 64);
    float *logits = malloc ((size_t) N * c->vocab_size * sizeof (float));
    int s = gpu_session_open (g);
    //  Prefill 6 positions, then 4 more (a verify-sized call), from layer 1.
    gpu_seq_t q1 = { s, 0, 6, NULL, x };
    gpu_out_t o1 = { .logits = logits };
    cr_assert_eq (gpu_forward_batch_from (g, 1, &q1, 1, &o1), 0, "%s", gpu_model_error (g));
    gpu_seq_t q2 = { s, 6, 4, NULL, x + (size_t) 6 * c->dim };
    gpu_out_t o2 = { .logits = logits + (size_t) 6 * c->vocab_size };
    cr_assert_eq (gpu_forward_batch_from (g, 1, &q2, 1, &o2), 0, "%s", gpu_model_error (g));
    double e = s_rel_err (logits, ref, (size_t) N * c->vocab_size);
    cr_expect_leq (e, 1e-2, "from layer 1: relative error %.3e", e);
    //  Tokens need the first loaded layer; layers outside the range fail.
    gpu_seq_t qt = { s, 10, 1, tokens, NULL };
    cr_expect_eq (gpu_forward_batch_from (g, 1, &qt, 1, &o1), -1);
    cr_expect (strstr (gpu_model_error (g), "embeddings"), "%s", gpu_model_error (g));
    cr_expect_eq (gpu_forward_batch_from (g, TINY_LAYERS + 1, &q2, 1, &o1), -1);
    cr_expect_eq (gpu_session_pos (g, s), 10);
    gpu_model_destroy (&g);
    kvcache_destroy (&kv);
    free (x); free (logits); free (ref);
    model_destroy (&full);
    model_destroy (&prefix);
}

Test (gpu_model, bad_requests_get_errors, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    int V = model_config (cpu)->vocab_size;
    gpu_options_t o = gpu_options_default ();
    o.max_sessions = 2;
    o.max_ctx = 64;
    o.max_tokens = 16;
    o.page_size = 16;
    o.n_pages = 5;              //  fewer than 2 sessions at 64 positions
    char err[512];
    gpu_model_t *g = gpu_model_new_from_cpu (cpu, &o, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    int32_t tok[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
    int32_t am[32];
    gpu_out_t out = { .argmax = am };
    int a = gpu_session_open (g), b = gpu_session_open (g);
    cr_assert (a >= 0 && b >= 0);
    cr_expect_eq (gpu_session_open (g), -1, "a third session in 2 slots");

    struct { gpu_seq_t q[2]; int n; const char *what; } bad[] = {
        { { { 7, 0, 1, tok, NULL } }, 1, "unknown session" },
        { { { -1, 0, 1, tok, NULL } }, 1, "unknown session" },
        { { { a, 3, 1, tok, NULL } }, 1, "not 3" },
        { { { a, 0, 0, tok, NULL } }, 1, "0 positions" },
        { { { a, 0, 1, tok, NULL }, { a, 0, 1, tok, NULL } }, 2, "twice" },
        { { { a, 0, 1, NULL, NULL } }, 1, "no tokens" },
        { { { a, 0, 16, tok, NULL }, { b, 0, 1, tok, NULL } }, 2, "more than 16" },
        { { { a, 0, 1, (int32_t[]) { V } } }, 1, "outside the vocabulary" },
        { { { a, 0, 1, (int32_t[]) { -3 } } }, 1, "outside the vocabulary" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq (gpu_forward_batch (g, bad[i].q, bad[i].n, &out), -1, "case %zu accepted", i);
        cr_expect (strstr (gpu_model_error (g), bad[i].what), "case %zu: '%s' lacks '%s'",
                   i, gpu_model_error (g), bad[i].what);
        cr_expect_eq (gpu_session_pos (g, a), 0, "case %zu moved session a", i);
    }
    gpu_out_t no_temp = { .probs = (float[1]) { 0 } };
    gpu_seq_t ok = { a, 0, 1, tok, NULL };
    cr_expect_eq (gpu_forward_batch (g, &ok, 1, &no_temp), -1, "probs without temperature");
    cr_expect_eq (gpu_forward_batch (g, NULL, 1, &out), -1);
    cr_expect_eq (gpu_forward_batch (g, &ok, 0, &out), -1);

    //  Positions beyond the context: fill a to 64 in steps, then one more.
    for (int p = 0; p < 64; p += 16) {
        gpu_seq_t q = { a, p, 16, tok, NULL };
        cr_assert_eq (gpu_forward_batch (g, &q, 1, &out), 0, "%s", gpu_model_error (g));
    }
    gpu_seq_t beyond = { a, 64, 1, tok, NULL };
    cr_expect_eq (gpu_forward_batch (g, &beyond, 1, &out), -1);
    cr_expect (strstr (gpu_model_error (g), "beyond the context"), "%s", gpu_model_error (g));
    //  Session a holds 4 of the 5 pages: b cannot take 2.
    gpu_seq_t two_pages[2] = { { b, 0, 16, tok, NULL } };
    cr_assert_eq (gpu_forward_batch (g, two_pages, 1, &out), 0, "%s", gpu_model_error (g));
    gpu_seq_t more = { b, 16, 1, tok, NULL };
    cr_expect_eq (gpu_forward_batch (g, &more, 1, &out), -1);
    cr_expect (strstr (gpu_model_error (g), "exhausted"), "%s", gpu_model_error (g));
    cr_expect_eq (gpu_session_pos (g, b), 16);
    cr_expect_eq (gpu_model_free_pages (g), 0);
    //  Unknown sessions elsewhere in the API.
    cr_expect_eq (gpu_session_truncate (g, 9, 0), -1);
    cr_expect_eq (gpu_session_close (g, 9), -1);
    cr_expect_eq (gpu_session_pos (g, 9), -1);
    //  Still serving: roll a back and go on.
    cr_assert_eq (gpu_session_truncate (g, a, 10), 0);
    gpu_seq_t again = { a, 10, 3, tok, NULL };
    cr_expect_eq (gpu_forward_batch (g, &again, 1, &out), 0, "%s", gpu_model_error (g));
    cr_expect_eq (gpu_session_pos (g, a), 13);
    cr_expect_eq (gpu_model_free_pages (g), 3);

    //  Bad options are refused at creation.
    o.max_ctx = 1 << 30;
    cr_expect_null (gpu_model_new_from_cpu (cpu, &o, err, sizeof err));
    cr_expect (strstr (err, "bad GPU options"), "%s", err);
    gpu_model_destroy (&g);
    model_destroy (&cpu);
}

//  10,000 verify calls (4 sessions, 5 positions each, rollback of a
//  random number of rejected drafts): device memory flat, pages returned.
Test (gpu_model, ten_thousand_verify_calls_memory_flat, .fini = s_cleanup, .timeout = 300)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    int V = model_config (cpu)->vocab_size;
    gpu_model_t *g = s_gpu (cpu, GPU_FMT_W8A8, 4, 256);
    enum { S = 4, K = 5 };
    int id[S];
    int32_t tok[S][K];
    int32_t am[S * K];
    for (int s = 0; s < S; s++)
        id[s] = gpu_session_open (g);
    gpu_out_t out = { .argmax = am };
    size_t before = 0;
    unsigned r = 1;
    for (int call = 0; call < 10000; call++) {
        gpu_seq_t q[S];
        for (int s = 0; s < S; s++) {
            int pos = gpu_session_pos (g, id[s]);
            if (pos + K > 256) {
                gpu_session_truncate (g, id[s], 0);
                pos = 0;
            }
            s_tokens (tok[s], K, V, (unsigned) call * 7 + s);
            q[s] = (gpu_seq_t) { id[s], pos, K, tok[s], NULL };
        }
        cr_assert_eq (gpu_forward_batch (g, q, S, &out), 0, "call %d: %s", call, gpu_model_error (g));
        for (int s = 0; s < S; s++) {
            r = r * 1103515245u + 12345u;
            int accepted = 1 + (int) ((r >> 10) % K);
            gpu_session_truncate (g, id[s], q[s].pos + accepted);
        }
        if (call == 99)
            before = gpu_memory_used ();
    }
    size_t after = gpu_memory_used ();
    cr_log_info ("device memory after 100 calls %zu, after 10000 %zu", before, after);
    cr_expect_eq (after, before, "device memory grew from %zu to %zu bytes", before, after);
    for (int s = 0; s < S; s++)
        gpu_session_close (g, id[s]);
    cr_expect_eq (gpu_model_free_pages (g), gpu_model_total_pages (g));
    gpu_model_destroy (&g);
    model_destroy (&cpu);
}

//  Why W8A8 activations have two levels: on a random model of SmolLM2's
//  shape (8 layers), a perturbation of the reference's quantizer inputs by
//  1e-7 relative (below fp32 rounding, i.e. what another summation order
//  or another expf gives) changes the one-level W8A8 logits by more than
//  1e-3 (measured 1.4e-2, an amplification of 1e5): an int8 rounding that
//  flips moves its element by a whole step, and the following layers and
//  positions carry that on, so two implementations that do not round
//  bit-identically cannot agree on SmolLM2 (85 % of greedy tokens, session
//  2). With the second level a flip moves a value by 1/256 of a step:
//  the same perturbation must move the logits at least 10x less. Each
//  layer alone, on the same input, moves by no more than the per-layer
//  bound the GPU test uses (1e-2 of the layer's update) either way.
static double
s_w8a8_perturbed_err (model_t *cpu, const int32_t *tokens, int N, double *layer_worst)
{
    const model_config_t *c = model_config (cpu);
    int L = c->n_layers, dim = c->dim, V = c->vocab_size;
    size_t nx = (size_t) N * dim;
    float *xs = malloc ((size_t) (L + 1) * nx * sizeof (float));
    cr_assert_not_null (xs);
    s_ref_eps = 0;
    float *r0 = s_w8a8_ref_logits_x (cpu, tokens, N, xs);
    s_ref_eps = 1e-7;
    s_ref_seed = 7;
    float *r1 = s_w8a8_ref_logits (cpu, tokens, N);
    s_ref_eps = 0;
    double e = s_rel_err (r1, r0, (size_t) N * V);

    s_w8ref_t R = s_w8ref_new (cpu);
    float *y = malloc (nx * sizeof (float));
    float *du = malloc (nx * sizeof (float)), *dr = malloc (nx * sizeof (float));
    cr_assert (y && du && dr);
    double worst = 0;
    for (int l = 0; l < L; l++) {
        const float *xin = xs + (size_t) l * nx, *xref = xs + (size_t) (l + 1) * nx;
        memcpy (y, xin, nx * sizeof (float));
        s_ref_eps = 1e-7;
        s_ref_seed = 7 + l;
        s_w8ref_layer (cpu, &R, l, y, N);
        s_ref_eps = 0;
        for (size_t i = 0; i < nx; i++) {
            du[i] = y[i] - xin[i];
            dr[i] = xref[i] - xin[i];
        }
        worst = fmax (worst, s_rel_err (du, dr, nx));
    }
    s_w8ref_free (&R);
    free (y); free (du); free (dr); free (xs); free (r0); free (r1);
    *layer_worst = worst;
    return e;
}

Test (gpu_model, w8a8_two_levels_stop_rounding_amplification, .fini = s_cleanup)
{
    const char *path = s_write_model ("--layers 8 --dim 576 --heads 9 --kv-heads 3 --ff 1536 --ctx 256 "
                                      "--type q8_0 --seed 11 --rope-base 100000 --tied");
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    enum { N = 32 };
    int32_t tokens[N];
    s_tokens (tokens, N, model_config (cpu)->vocab_size, 5);
    const char *saved = getenv ("SPLITMESH_W8A8_ACT_LEVELS");
    char *keep = saved ? strdup (saved) : NULL;
    double e[2], lw[2];
    for (int levels = 1; levels <= 2; levels++) {
        setenv ("SPLITMESH_W8A8_ACT_LEVELS", levels == 1 ? "1" : "2", 1);
        e[levels - 1] = s_w8a8_perturbed_err (cpu, tokens, N, &lw[levels - 1]);
        cr_log_info ("SmolLM2-shaped random model, 8 layers, %d activation level(s): reference perturbed "
                     "by 1e-7 vs itself: rel logit err %.3e; each layer alone: worst %.3e",
                     levels, e[levels - 1], lw[levels - 1]);
        cr_expect_leq (lw[levels - 1], 1e-2, "%d level(s): one layer alone moved by %.3e under a 1e-7 "
                       "perturbation", levels, lw[levels - 1]);
    }
    if (keep) {
        setenv ("SPLITMESH_W8A8_ACT_LEVELS", keep, 1);
        free (keep);
    }
    else
        unsetenv ("SPLITMESH_W8A8_ACT_LEVELS");
    cr_expect_gt (e[0], 1e-3, "one level: a 1e-7 perturbation changed the W8A8 logits by only %.3e", e[0]);
    cr_expect_lt (e[1] * 10, e[0], "two levels: the perturbation still moved the logits by %.3e "
                  "(one level: %.3e)", e[1], e[0]);
    model_destroy (&cpu);
}

//  The W8A8 kernels against the W8A8 arithmetic on SmolLM2 (got: the
//  GPU's logits for ids): the whole pass (top-1 >= 99.5 %, and within
//  1.5x the reference's own sensitivity to a 1e-7 perturbation of its
//  quantizer inputs, which is what a second implementation's rounding
//  differences amount to), each layer alone on the reference's own input
//  activations (the layer's update x_out - x_in, with the tensor-core GEMM
//  in chunks of 5 positions and with cuBLASLt in one batch), and the head
//  alone on the reference's final activations. With one activation level
//  the whole pass was chaotic (session 2: 85 % agreement, the same as the
//  reference against itself perturbed); two levels removed that
//  (w8a8_two_levels_stop_rounding_amplification).
static void
s_smollm2_w8a8_vs_reference (const char *path, const model_t *cpu, gpu_model_t *g,
                             const float *got, const int32_t *ids, int N)
{
    const model_config_t *c = model_config (cpu);
    int L = c->n_layers, dim = c->dim, V = c->vocab_size;
    size_t nx = (size_t) N * dim;
    float *xs = malloc ((size_t) (L + 1) * nx * sizeof (float));
    cr_assert_not_null (xs);
    s_ref_eps = 0;
    float *wref = s_w8a8_ref_logits_x (cpu, ids, N, xs);
    double ew = s_rel_err (got, wref, (size_t) N * V), aw = s_agree (got, wref, N, V);
    s_ref_eps = 1e-7;
    s_ref_seed = 7;
    float *pref = s_w8a8_ref_logits (cpu, ids, N);
    s_ref_eps = 0;
    double ep = s_rel_err (pref, wref, (size_t) N * V), ap = s_agree (pref, wref, N, V);
    printf ("SMOLLM2 w8a8 vs W8A8 reference, whole pass: rel logit err %.3e, top-1 agreement %.4f\n", ew, aw);
    printf ("SMOLLM2 W8A8 reference perturbed by 1e-7 vs itself: rel logit err %.3e, top-1 agreement %.4f\n",
            ep, ap);
    //  GPU vs reference within the reference's own sensitivity.
    cr_expect_leq (ew, fmax (1.5 * ep, 1e-3), "w8a8 whole pass: rel err %.3e vs the reference, "
                   "whose own 1e-7 sensitivity is %.3e", ew, ep);
    cr_expect_geq (aw, 0.995, "w8a8 whole pass: top-1 agreement %.4f with the W8A8 reference", aw);

    //  Each layer alone, on the reference's inputs.
    float *y = malloc (nx * sizeof (float));
    float *du = malloc (nx * sizeof (float)), *dr = malloc (nx * sizeof (float));
    cr_assert (y && du && dr);
    double worst[2] = { 0, 0 };
    for (int l = 0; l < L; l++) {
        const float *xin = xs + (size_t) l * nx, *xref = xs + (size_t) (l + 1) * nx;
        model_t *cl = s_cpu (path, l, l + 1, false, false);
        gpu_model_t *gl = s_gpu (cl, GPU_FMT_W8A8, 2, 512);
        for (int k = 0; k < 2; k++) {
            int chunk = k == 0 ? 5 : N;
            int s = gpu_session_open (gl);
            cr_assert_geq (s, 0, "%s", gpu_model_error (gl));
            for (int p = 0; p < N; p += chunk) {
                int m = N - p < chunk ? N - p : chunk;
                gpu_seq_t q = { s, p, m, NULL, xin + (size_t) p * dim };
                gpu_out_t out = { .x = y + (size_t) p * dim };
                cr_assert_eq (gpu_forward_batch_from (gl, l, &q, 1, &out), 0, "%s", gpu_model_error (gl));
            }
            gpu_session_close (gl, s);
            for (size_t i = 0; i < nx; i++) {
                du[i] = y[i] - xin[i];
                dr[i] = xref[i] - xin[i];
            }
            double e = s_rel_err (du, dr, nx);
            worst[k] = fmax (worst[k], e);
            if (l % 5 == 0 || e > 1e-2)
                printf ("SMOLLM2 w8a8 layer %d alone (chunks of %d): rel err of the update %.3e\n", l, chunk, e);
            cr_expect_leq (e, 1e-2, "w8a8 layer %d alone, chunks of %d: relative error %.3e of the "
                           "layer's update vs the W8A8 reference", l, chunk, e);
        }
        gpu_model_destroy (&gl);
        model_destroy (&cl);
    }
    printf ("SMOLLM2 w8a8 each layer alone vs W8A8 reference: worst rel err of the update %.3e "
            "(skinny, chunks of 5), %.3e (cuBLASLt, one batch)\n", worst[0], worst[1]);

    //  The head alone on the reference's final activations.
    s_w8ref_t R = s_w8ref_new (cpu);
    float *hl = malloc ((size_t) N * V * sizeof (float)), *hg = malloc ((size_t) N * V * sizeof (float));
    cr_assert (hl && hg);
    s_w8ref_head (cpu, &R, xs + (size_t) L * nx, N, hl);
    gpu_out_t ho = { .logits = hg };
    cr_assert_eq (gpu_model_head (g, xs + (size_t) L * nx, N, &ho), 0, "%s", gpu_model_error (g));
    double eh = s_rel_err (hg, hl, (size_t) N * V), ah = s_agree (hg, hl, N, V);
    printf ("SMOLLM2 w8a8 head alone vs W8A8 reference: rel logit err %.3e, top-1 agreement %.4f\n", eh, ah);
    cr_expect_leq (eh, 1e-3, "w8a8 head alone: relative error %.3e vs the W8A8 reference", eh);
    cr_expect_geq (ah, 0.995, "w8a8 head alone: top-1 agreement %.4f with the W8A8 reference", ah);
    s_w8ref_free (&R);
    free (hl); free (hg); free (y); free (du); free (dr); free (xs); free (wref); free (pref);
}

//  SmolLM2-135M on the same weights: fp16 logits within 1e-2, W8A8 greedy
//  tokens agreeing on >= 99.5% of positions of an English text.
//  English text for the SmolLM2 comparisons (207 tokens).
static const char *s_text =
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based inks and a wooden press adapted from "
    "those used to make wine. Within a few decades printing shops had opened in more than "
    "two hundred cities across Europe, and the price of books fell so far that ordinary "
    "merchants could own a small library. Scholars argue about how much the new technology "
    "changed the way people thought, but it is clear that it made the rapid spread of ideas "
    "possible: pamphlets, newspapers and scientific journals all followed. Today we face a "
    "similar question about computers and the internet. Information moves faster than ever, "
    "yet the skills needed to judge its quality remain the same ones that careful readers "
    "have always needed: asking who wrote a text, why, and what evidence supports it. "
    "Teachers therefore spend less time on memorising facts and more time on teaching "
    "students how to find, check and combine sources. The question of what to teach next "
    "will not be settled soon, and every generation will answer it again in its own way.";

//  A CPU model of path in format fmt (every layer, embeddings, head).
static model_t *
s_cpu_fmt (const char *path, qfmt_t fmt)
{
    model_options_t o = model_options_default ();
    o.format = fmt;
    o.n_threads = 4;
    char err[256] = "";
    model_t *m = model_load (path, &o, err, sizeof err);
    cr_assert_not_null (m, "model_load: %s", err);
    return m;
}

//  GPU logits with the CPU's embedding rows as input (as the service sends
//  them), in chunks of at most chunk positions.
static float *
s_gpu_logits_x (gpu_model_t *g, model_t *cpu, const int32_t *tokens, int n, int chunk)
{
    const model_config_t *c = model_config (cpu);
    float *logits = malloc ((size_t) n * c->vocab_size * sizeof (float));
    float *x = malloc ((size_t) n * c->dim * sizeof (float));
    cr_assert (logits && x);
    cr_assert_eq (model_embed (cpu, tokens, n, x), 0);
    int s = gpu_session_open (g);
    cr_assert_geq (s, 0, "%s", gpu_model_error (g));
    for (int p = 0; p < n; p += chunk) {
        int m = n - p < chunk ? n - p : chunk;
        gpu_seq_t q = { s, p, m, NULL, x + (size_t) p * c->dim };
        gpu_out_t out = { .logits = logits + (size_t) p * c->vocab_size };
        cr_assert_eq (gpu_forward_batch (g, &q, 1, &out), 0, "%s", gpu_model_error (g));
    }
    cr_assert_eq (gpu_session_close (g, s), 0);
    free (x);
    return logits;
}

static int
s_top1 (const float *a, const float *b, int n, int vocab)
{
    int agree = 0;
    for (int t = 0; t < n; t++)
        agree += s_argmax (a + (size_t) t * vocab, vocab) == s_argmax (b + (size_t) t * vocab, vocab);
    return agree;
}

//  GPU w8 (gpu.h: the CPU engine's group-wise int8 numerics) against the
//  CPU engine's w8 on the same quants and scales, on the tiny model:
//  prefill, verify-sized chunks and decode.
Test (gpu_model, tiny_w8_matches_cpu_w8, .fini = s_cleanup)
{
    s_need_device ();
    const char *path = s_tiny ();
    model_t *cpu = s_cpu_fmt (path, QFMT_W8);
    const model_config_t *c = model_config (cpu);
    enum { N = 40 };
    int32_t tokens[N];
    s_tokens (tokens, N, c->vocab_size, 3);
    float *ref = s_cpu_logits (cpu, tokens, N);
    gpu_model_t *g = s_gpu (cpu, GPU_FMT_W8, 2, 128);
    int chunks[3] = { N, 5, 1 };
    for (int k = 0; k < 3; k++) {
        float *got = s_gpu_logits_x (g, cpu, tokens, N, chunks[k]);
        double err = s_rel_err (got, ref, (size_t) N * c->vocab_size);
        int agree = s_top1 (got, ref, N, c->vocab_size);
        printf ("TINY w8 vs CPU w8, chunks of %d: rel logit err %.3e, top-1 %d/%d\n", chunks[k], err, agree, N);
        //  Same quantized arithmetic; only fp32 summation orders and the
        //  fp16 KV cache differ.
        cr_expect_leq (err, 1e-2, "w8 chunk %d: relative logit error %.3e", chunks[k], err);
        cr_expect_geq (agree, N - 1, "w8 chunk %d: top-1 %d/%d", chunks[k], agree, N);
        free (got);
    }
    gpu_model_destroy (&g);
    free (ref);
    model_destroy (&cpu);
}

//  Issue 5's accuracy criterion on SmolLM2: GPU w8 vs the CPU backend's w8
//  on the same weights (the CPU w8 model's quants, fp16 scales and mins are
//  uploaded bit for bit), top-1 over the text, >= 0.995 (the bar);
//  also reported against the CPU's f32 forward (the format's own
//  quantization loss).
Test (gpu_model, smollm2_w8_vs_cpu_w8, .timeout = 600)
{
    s_need_device ();
    const char *path = getenv ("SPLITMESH_MODEL");
    if (!path || access (path, R_OK) != 0)
        cr_skip_test ("SPLITMESH_MODEL (SmolLM2-135M GGUF) not set or not readable");
    model_t *cpu = s_cpu_fmt (path, QFMT_W8);
    const model_config_t *c = model_config (cpu);
    char err[256];
    tokenizer_t *tk = tokenizer_new_from_gguf (model_gguf (cpu), err, sizeof err);
    cr_assert_not_null (tk, "%s", err);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    cr_assert_eq (tokenizer_encode (tk, s_text, strlen (s_text), true, false, &ids, &n_ids, err, sizeof err), 0);
    int N = (int) n_ids;
    float *ref_w8 = s_cpu_logits (cpu, ids, N);
    model_t *cpu32 = s_cpu_fmt (path, QFMT_F32);
    float *ref_f32 = s_cpu_logits (cpu32, ids, N);
    model_destroy (&cpu32);
    int a0 = s_top1 (ref_w8, ref_f32, N, c->vocab_size);
    printf ("SMOLLM2 CPU w8 vs CPU f32: rel logit err %.3e, top-1 agreement %d/%d = %.4f\n",
            s_rel_err (ref_w8, ref_f32, (size_t) N * c->vocab_size), a0, N, (double) a0 / N);
    gpu_model_t *g = s_gpu (cpu, GPU_FMT_W8, 2, 512);
    int chunks[2] = { 64, 5 };
    for (int k = 0; k < 2; k++) {
        float *got = s_gpu_logits_x (g, cpu, ids, N, chunks[k]);
        int a = s_top1 (got, ref_w8, N, c->vocab_size), b = s_top1 (got, ref_f32, N, c->vocab_size);
        double e = s_rel_err (got, ref_w8, (size_t) N * c->vocab_size);
        double e32 = s_rel_err (got, ref_f32, (size_t) N * c->vocab_size);
        printf ("SMOLLM2 w8 (chunks of %d) vs CPU w8, same weights: rel logit err %.3e, top-1 agreement "
                "%d/%d = %.4f\n", chunks[k], e, a, N, (double) a / N);
        printf ("SMOLLM2 w8 (chunks of %d) vs CPU f32: rel logit err %.3e, top-1 agreement %d/%d = %.4f\n",
                chunks[k], e32, b, N, (double) b / N);
        //  Issue 5 asks for 0.995. With the engine's one-level activations
        //  it was 0.976 (H100, 2dd5f7d: int8 rounding flips); with its two
        //  levels (15 bits a value) 207/207 = 1.0, rel 1.1e-4 (H200,
        //  f97be53, gpu/NOTES.md).
        cr_expect_geq ((double) a / N, 0.995, "w8 chunks of %d: top-1 agreement with CPU w8 %d/%d",
                       chunks[k], a, N);
        free (got);
    }
    gpu_model_destroy (&g);
    free (ref_w8);
    free (ref_f32);
    free (ids);
    tokenizer_destroy (&tk);
    model_destroy (&cpu);
}

Test (gpu_model, smollm2_gpu_vs_cpu, .timeout = 600)
{
    s_need_device ();
    const char *path = getenv ("SPLITMESH_MODEL");
    if (!path || access (path, R_OK) != 0)
        cr_skip_test ("SPLITMESH_MODEL (SmolLM2-135M GGUF) not set or not readable");
    const char *text = s_text;
    model_t *cpu = s_cpu (path, 0, -1, true, true);
    const model_config_t *c = model_config (cpu);
    char err[256];
    tokenizer_t *tk = tokenizer_new_from_gguf (model_gguf (cpu), err, sizeof err);
    cr_assert_not_null (tk, "%s", err);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    cr_assert_eq (tokenizer_encode (tk, text, strlen (text), true, false, &ids, &n_ids, err, sizeof err), 0);
    int N = (int) n_ids;
    cr_log_info ("SmolLM2: %d tokens", N);
    float *ref = s_cpu_logits (cpu, ids, N);
    for (int f = 0; f < 2; f++) {
        gpu_model_t *g = s_gpu (cpu, f ? GPU_FMT_W8A8 : GPU_FMT_FP16, 2, 512);
        float *got = s_gpu_logits (g, ids, N, 64);
        double e = s_rel_err (got, ref, (size_t) N * c->vocab_size);
        int agree = 0;
        for (int t = 0; t < N; t++)
            agree += s_argmax (got + (size_t) t * c->vocab_size, c->vocab_size)
                     == s_argmax (ref + (size_t) t * c->vocab_size, c->vocab_size);
        double rate = (double) agree / N;
        printf ("SMOLLM2 %s: rel logit err %.3e, top-1 agreement %d/%d = %.4f\n",
                f ? "w8a8" : "fp16", e, agree, N, rate);
        if (f == 0)
            cr_expect_leq (e, 1e-2, "fp16 relative logit error %.3e", e);
        else {
            //  Against the engine's f32 forward the scheme itself (int8
            //  weights with one scale per row, re-quantized from Q4_1)
            //  loses accuracy on this small model: the bound here only
            //  catches broken kernels. The kernels are held to the W8A8
            //  arithmetic below.
            cr_expect_geq (rate, 0.8, "w8a8 top-1 agreement with f32 %.4f < 0.8", rate);
            s_smollm2_w8a8_vs_reference (path, cpu, g, got, ids, N);
        }
        free (got);
        gpu_model_destroy (&g);
    }
    free (ref);
    free (ids);
    tokenizer_destroy (&tk);
    model_destroy (&cpu);
}


