/*  forward.c: the Llama forward pass over a layer range, n positions at once.

    model_forward is the one function to read: per layer, attention RMSNorm,
    QKV projections, RoPE, KV cache append, causal grouped-query attention,
    output projection and residual, then FFN RMSNorm, SwiGLU and residual.
    Matrix products go through qmatrix_matmul (threaded, SIMD, quantized);
    attention is split over (position, head) pairs across the same pool.

    RoPE rotates adjacent pairs (x[2i], x[2i+1]): GGUF converters permute the
    q/k rows of Hugging Face checkpoints so that this "normal" rotation
    equals HF's rotate-half on the original weights (llama.cpp does the same
    for arch llama). The tests check it against llama.cpp and transformers.
*/
#include "model_impl.h"
#include "kvcache.h"
#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

//  Makes the scratch hold n positions and attention over ctx positions.
static int
s_reserve (model_t *self, int n, int ctx)
{
    model_run_t *r = &self->run;
    const model_config_t *c = &self->config;
    if (n > r->cap) {
        int cap = n > 2 * r->cap ? n : 2 * r->cap;
        size_t q_dim = (size_t) c->n_heads * c->head_dim;
        enum { N_BUF = 8 };
        float *p[N_BUF];
        size_t sizes[N_BUF] = {
            (size_t) c->dim, q_dim + 2 * (size_t) c->kv_dim, q_dim, q_dim,
            2 * (size_t) c->hidden_dim, (size_t) c->hidden_dim,
            (size_t) c->head_dim / 2, (size_t) c->head_dim / 2
        };
        bool ok = true;
        for (int i = 0; i < N_BUF; i++)
            ok = (p[i] = malloc ((size_t) cap * sizes[i] * sizeof (float))) && ok;
        if (!ok) {
            for (int i = 0; i < N_BUF; i++)
                free (p[i]);
            return model_fail (self, "out of memory for %d positions", n);
        }
        free (r->xb); free (r->qkv); free (r->q); free (r->att);
        free (r->hb); free (r->hb2); free (r->rope_cos); free (r->rope_sin);
        r->xb = p[0]; r->qkv = p[1]; r->q = p[2]; r->att = p[3];
        r->hb = p[4]; r->hb2 = p[5]; r->rope_cos = p[6]; r->rope_sin = p[7];
        r->cap = cap;
    }
    if (ctx > r->score_cap) {
        int cap = ctx > 2 * r->score_cap ? ctx : 2 * r->score_cap;
        float *s = malloc ((size_t) cap * self->opts.n_threads * sizeof (float));
        if (!s)
            return model_fail (self, "out of memory for attention over %d positions", ctx);
        free (r->scores);
        r->scores = s;
        r->score_cap = cap;
    }
    return 0;
}

//  out[t] = x[t] / rms(x[t]) * w, for n rows of dim.
static void
s_rmsnorm (float *out, const float *x, const float *w, int n, int dim, float eps)
{
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t) t * dim;
        float *ot = out + (size_t) t * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++)
            ss += (double) xt[i] * xt[i];
        float scale = (float) (1.0 / sqrt (ss / dim + eps));
        for (int i = 0; i < dim; i++)
            ot[i] = xt[i] * scale * w[i];
    }
}

//  Rotates each head's adjacent pairs of v (n rows of n_heads * head_dim)
//  by the angles of their position.
static void
s_rope (float *v, int n, int n_heads, int head_dim, const float *cos_t, const float *sin_t)
{
    int half = head_dim / 2;
    for (int t = 0; t < n; t++) {
        const float *ct = cos_t + (size_t) t * half;
        const float *st = sin_t + (size_t) t * half;
        for (int h = 0; h < n_heads; h++) {
            float *x = v + ((size_t) t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float x0 = x[2 * i], x1 = x[2 * i + 1];
                x[2 * i] = x0 * ct[i] - x1 * st[i];
                x[2 * i + 1] = x0 * st[i] + x1 * ct[i];
            }
        }
    }
}

//  Attention's inner loops on 4-float vectors (GCC/Clang vector extensions:
//  SSE on x86-64, NEON on ARM, no ISA flags needed). Loads go through
//  memcpy so rows need no particular alignment.
typedef float s_v4_t __attribute__ ((vector_size (16)));

static inline s_v4_t
s_load4 (const float *p)
{
    s_v4_t v;
    memcpy (&v, p, sizeof v);
    return v;
}

//  sum a[i] * b[i]
static inline float
s_dot (const float *a, const float *b, int n)
{
    s_v4_t s0 = { 0 }, s1 = { 0 };
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 += s_load4 (a + i) * s_load4 (b + i);
        s1 += s_load4 (a + i + 4) * s_load4 (b + i + 4);
    }
    s0 += s1;
    float sum = (s0[0] + s0[1]) + (s0[2] + s0[3]);
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

//  out[i] += w * v[i]
static inline void
s_axpy (float *out, float w, const float *v, int n)
{
    s_v4_t wv = { w, w, w, w };
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s_v4_t o = s_load4 (out + i) + wv * s_load4 (v + i);
        memcpy (out + i, &o, sizeof o);
    }
    for (; i < n; i++)
        out[i] += w * v[i];
}

typedef struct {
    model_t *model;
    const float *keys;          //  (max_ctx, kv_dim) of this layer
    const float *values;        //  (max_ctx, kv_dim)
    int pos;                    //  position of the first new row
    int n;                      //  new rows
    atomic_int next;            //  next (row, head) task to claim
} s_attn_job_t;

//  Causal attention for (row, head) pairs, claimed one at a time from a
//  shared counter, so a thread the OS has not scheduled holds up nothing
//  (threadpool_run_shared).
static void
s_attention_worker (void *arg, int ith, int nth)
{
    s_attn_job_t *job = arg;
    model_t *m = job->model;
    const model_config_t *c = &m->config;
    model_run_t *r = &m->run;
    int hd = c->head_dim;
    int group = c->n_heads / c->n_kv_heads;
    int q_dim = c->n_heads * hd;
    float scale = 1.0f / sqrtf ((float) hd);
    float *scores = r->scores + (size_t) ith * r->score_cap;
    int tasks = job->n * c->n_heads;
    (void) nth;
    for (int task; (task = atomic_fetch_add_explicit (&job->next, 1, memory_order_relaxed)) < tasks; ) {
        int t = task / c->n_heads, h = task % c->n_heads;
        int kv_off = (h / group) * hd;
        int len = job->pos + t + 1;
        const float *q = r->q + (size_t) t * q_dim + (size_t) h * hd;
        float mx = -INFINITY;
        for (int j = 0; j < len; j++) {
            float s = s_dot (q, job->keys + (size_t) j * c->kv_dim + kv_off, hd) * scale;
            scores[j] = s;
            if (s > mx)
                mx = s;
        }
        float sum = 0.0f;
        for (int j = 0; j < len; j++) {
            scores[j] = expf (scores[j] - mx);
            sum += scores[j];
        }
        float inv = 1.0f / sum;
        float *out = r->att + (size_t) t * q_dim + (size_t) h * hd;
        memset (out, 0, (size_t) hd * sizeof *out);
        for (int j = 0; j < len; j++)
            s_axpy (out, scores[j] * inv, job->values + (size_t) j * c->kv_dim + kv_off, hd);
    }
}

int
model_embed (model_t *self, const int32_t *tokens, int n, float *x)
{
    assert (self);
    if (!self->w.token_embd)
        return model_fail (self, "embeddings are not loaded in this model");
    if (n < 0 || (n > 0 && (!tokens || !x)))
        return model_fail (self, "bad arguments to model_embed");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= self->config.vocab_size)
            return model_fail (self, "token %d at index %d is outside the vocabulary [0, %d)",
                               (int) tokens[i], i, self->config.vocab_size);
    for (int i = 0; i < n; i++)
        qmatrix_get_row (self->w.token_embd, tokens[i], x + (size_t) i * self->config.dim);
    return 0;
}

int
model_forward (model_t *self, kvcache_t *kv, int first, int last, int pos, int n, float *x)
{
    assert (self);
    const model_config_t *c = &self->config;
    const model_options_t *o = &self->opts;
    if (!kv || !x || n < 1 || pos < 0)
        return model_fail (self, "bad arguments to model_forward (n %d, pos %d)", n, pos);
    if (first < o->first_layer || last > o->last_layer || first > last)
        return model_fail (self, "layers [%d, %d) are not within the loaded range [%d, %d)",
                           first, last, o->first_layer, o->last_layer);
    if (first < kvcache_first_layer (kv) || last > kvcache_last_layer (kv))
        return model_fail (self, "layers [%d, %d) are not within the cache's range [%d, %d)",
                           first, last, kvcache_first_layer (kv), kvcache_last_layer (kv));
    if (pos + n > kvcache_max_ctx (kv))
        return model_fail (self, "positions %d..%d are beyond the context (%d)",
                           pos, pos + n - 1, kvcache_max_ctx (kv));
    for (int l = first; l < last; l++)
        if (kvcache_layer_pos (kv, l) != pos)
            return model_fail (self, "layer %d holds %d positions, not %d (truncate the cache first)",
                               l, kvcache_layer_pos (kv, l), pos);
    if (s_reserve (self, n, pos + n))
        return -1;
    model_run_t *r = &self->run;
    int dim = c->dim, kv_dim = c->kv_dim, hidden = c->hidden_dim;
    int q_dim = c->n_heads * c->head_dim, qkv_dim = q_dim + 2 * kv_dim, half = c->head_dim / 2;

    //  RoPE angles for the new positions, shared by every layer and head.
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            double angle = (double) (pos + t) * self->w.rope_inv_freq[i];
            r->rope_cos[(size_t) t * half + i] = (float) cos (angle);
            r->rope_sin[(size_t) t * half + i] = (float) sin (angle);
        }

    for (int l = first; l < last; l++) {
        const model_layer_t *L = &self->w.layers[l];
        float *keys = kvcache_keys (kv, l);
        float *values = kvcache_values (kv, l);

        //  Attention RMSNorm.
        s_rmsnorm (r->xb, x, L->attn_norm, n, dim, c->norm_eps);

        //  Q, K, V projections (one stacked matmul); keys and values go
        //  straight into the cache.
        qmatrix_matmul (L->wqkv, r->xb, n, r->qkv, self->pool);
        for (int t = 0; t < n; t++) {
            const float *row = r->qkv + (size_t) t * qkv_dim;
            memcpy (r->q + (size_t) t * q_dim, row, (size_t) q_dim * sizeof (float));
            memcpy (keys + (size_t) (pos + t) * kv_dim, row + q_dim, (size_t) kv_dim * sizeof (float));
            memcpy (values + (size_t) (pos + t) * kv_dim, row + q_dim + kv_dim, (size_t) kv_dim * sizeof (float));
        }
        kvcache_set_layer_pos (kv, l, pos + n);

        //  RoPE on the new queries and keys.
        s_rope (r->q, n, c->n_heads, c->head_dim, r->rope_cos, r->rope_sin);
        s_rope (keys + (size_t) pos * kv_dim, n, c->n_kv_heads, c->head_dim, r->rope_cos, r->rope_sin);

        //  Causal grouped-query attention over cache + new rows.
        s_attn_job_t job = { self, keys, values, pos, n, 0 };
        threadpool_run_shared (self->pool, s_attention_worker, &job);

        //  Output projection and residual.
        qmatrix_matmul (L->wo, r->att, n, r->xb, self->pool);
        for (size_t i = 0; i < (size_t) n * dim; i++)
            x[i] += r->xb[i];

        //  FFN RMSNorm.
        s_rmsnorm (r->xb, x, L->ffn_norm, n, dim, c->norm_eps);

        //  SwiGLU: silu (gate (xb)) * up (xb), gate and up in one matmul.
        qmatrix_matmul (L->w_gate_up, r->xb, n, r->hb, self->pool);
        for (int t = 0; t < n; t++) {
            const float *gate = r->hb + (size_t) t * 2 * hidden, *up = gate + hidden;
            float *out = r->hb2 + (size_t) t * hidden;
            for (int i = 0; i < hidden; i++)
                out[i] = gate[i] / (1.0f + expf (-gate[i])) * up[i];
        }

        //  Down projection and residual.
        qmatrix_matmul (L->w_down, r->hb2, n, r->xb, self->pool);
        for (size_t i = 0; i < (size_t) n * dim; i++)
            x[i] += r->xb[i];
    }
    return 0;
}

int
model_head (model_t *self, const float *x, int n, float *logits)
{
    assert (self);
    if (!self->w.output)
        return model_fail (self, "the output head is not loaded in this model");
    if (n < 1 || !x || !logits)
        return model_fail (self, "bad arguments to model_head");
    if (s_reserve (self, n, 1))
        return -1;
    //  Final RMSNorm, then the vocabulary projection.
    s_rmsnorm (self->run.xb, x, self->w.output_norm, n, self->config.dim, self->config.norm_eps);
    qmatrix_matmul (self->w.output, self->run.xb, n, logits, self->pool);
    return 0;
}
