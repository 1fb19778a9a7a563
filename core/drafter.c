/*  drafter.c: the model drafter (draft GGUF, own KV cache, incremental
    catch-up) and the n-gram prompt-lookup drafter. See drafter.h.

    The model drafter remembers which token sits at every cached position
    (`cached`). A call finds the longest common prefix of that list and the
    caller's context, truncates the cache there (keeping at least one token
    to feed, since the logits of the last context position are needed) and
    evaluates the rest in chunks. Then it alternates head -> sample -> feed
    for each draft; the last draft is never fed, so after a round the cache
    holds the context plus d_1..d_{k-1}, and the next round's context shares
    whatever of that was accepted.
*/
#include "drafter.h"
#include "kvcache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_CHUNK 64              //  positions per forward call during catch-up

struct _drafter_t {
    drafter_kind_t kind;        //  model or ngram
    model_t *model;             //  draft model (model kind), not owned
    pthread_mutex_t *lock;      //  held around model calls, or NULL
    kvcache_t *kv;              //  the session's draft KV cache
    int32_t *cached;            //  (max_ctx) token at each cached position
    int n_cached;               //  positions of `cached` that are valid
    int max_ctx;                //  cache size, positions
    float *x;                   //  (S_CHUNK, dim) activations
    float *logits;              //  (vocab) logits of the last position
    float min_p;                //  confidence stop threshold (0: off)
};

static void
s_lock (drafter_t *self)
{
    if (self->lock)
        pthread_mutex_lock (self->lock);
}

static void
s_unlock (drafter_t *self)
{
    if (self->lock)
        pthread_mutex_unlock (self->lock);
}

drafter_t *
drafter_new_model (model_t *model, pthread_mutex_t *lock, int max_ctx, char *err, size_t err_size)
{
    if (!model) {
        snprintf (err, err_size, "no draft model");
        return NULL;
    }
    const model_config_t *c = model_config (model);
    const model_options_t *o = model_options (model);
    if (!o->load_embeddings || !o->load_head || o->first_layer != 0 || o->last_layer != c->n_layers) {
        snprintf (err, err_size, "the draft model must have embeddings, every layer and the head loaded");
        return NULL;
    }
    if (max_ctx < 1 || max_ctx > c->context_length) {
        snprintf (err, err_size, "draft context %d outside [1, %d]", max_ctx, c->context_length);
        return NULL;
    }
    drafter_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->kind = DRAFTER_MODEL;
    self->model = model;
    self->lock = lock;
    self->max_ctx = max_ctx;
    self->kv = kvcache_new (model, max_ctx);
    self->cached = malloc ((size_t) max_ctx * sizeof *self->cached);
    self->x = malloc ((size_t) S_CHUNK * c->dim * sizeof *self->x);
    self->logits = malloc ((size_t) c->vocab_size * sizeof *self->logits);
    if (!self->kv || !self->cached || !self->x || !self->logits) {
        snprintf (err, err_size, "out of memory for a %d-position draft cache", max_ctx);
        drafter_destroy (&self);
        return NULL;
    }
    return self;
}

drafter_t *
drafter_new_ngram (void)
{
    drafter_t *self = calloc (1, sizeof *self);
    if (self)
        self->kind = DRAFTER_NGRAM;
    return self;
}

void
drafter_destroy (drafter_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    drafter_t *self = *self_p;
    kvcache_destroy (&self->kv);
    free (self->cached);
    free (self->x);
    free (self->logits);
    free (self);
    *self_p = NULL;
}

void
drafter_set_min_p (drafter_t *self, float min_p)
{
    self->min_p = min_p > 0 && min_p <= 1 ? min_p : 0;
}

drafter_kind_t
drafter_kind (const drafter_t *self)
{
    return self->kind;
}

void
drafter_rollback (drafter_t *self, int n_pos)
{
    if (self->kind != DRAFTER_MODEL)
        return;
    if (n_pos < 0)
        n_pos = 0;
    if (n_pos < self->n_cached) {
        self->n_cached = n_pos;
        kvcache_truncate (self->kv, n_pos);
    }
}

int
drafter_cached (const drafter_t *self)
{
    return self->kind == DRAFTER_MODEL ? self->n_cached : 0;
}

kvcache_t *
drafter_kv (const drafter_t *self)
{
    return self->kind == DRAFTER_MODEL ? self->kv : NULL;
}

sampler_params_t
drafter_sampler_params (float temperature, int top_k, float top_p, uint64_t seed)
{
    sampler_params_t sp = sampler_params_default ();
    sp.temperature = temperature;
    sp.top_k = top_k;
    sp.top_p = top_p;
    sp.seed = seed;
    if (temperature > 0 && (top_k <= 0 || top_k > DRAFTER_MAX_CANDIDATES))
        sp.top_k = DRAFTER_MAX_CANDIDATES;
    return sp;
}

//  Feeds tokens[0..n) at positions n_cached.. and leaves the logits of the
//  last one in self->logits. Caller holds the lock.
static int
s_feed (drafter_t *self, const int32_t *tokens, int n, char *err, size_t err_size)
{
    const model_config_t *c = model_config (self->model);
    if (self->n_cached + n > self->max_ctx) {
        snprintf (err, err_size, "draft context full (%d positions)", self->max_ctx);
        return -1;
    }
    for (int p = 0; p < n; p += S_CHUNK) {
        int m = n - p < S_CHUNK ? n - p : S_CHUNK;
        int pos = self->n_cached;
        if (model_embed (self->model, tokens + p, m, self->x)
        ||  model_forward (self->model, self->kv, 0, c->n_layers, pos, m, self->x)
        ||  (p + m == n && model_head (self->model, self->x + (size_t) (m - 1) * c->dim, 1, self->logits))) {
            snprintf (err, err_size, "draft model: %s", model_error (self->model));
            //  The cache may hold part of the chunk: forget it all.
            kvcache_truncate (self->kv, pos);
            return -1;
        }
        memcpy (self->cached + pos, tokens + p, (size_t) m * sizeof *tokens);
        self->n_cached = pos + m;
    }
    return 0;
}

//  Draws one token from self->logits into out->d[i] and q[i].
static int
s_draw (drafter_t *self, sampler_t *sampler, drafter_proposal_t *out, int i)
{
    int32_t tok;
    if (sampler)
        tok = sampler_sample (sampler, self->logits);
    else {
        //  Greedy without a sampler: the argmax, lowest id on ties.
        int vocab = model_config (self->model)->vocab_size;
        tok = -1;
        float best = 0;
        for (int v = 0; v < vocab; v++)
            if (self->logits [v] == self->logits [v] && (tok < 0 || self->logits [v] > best)) {
                best = self->logits [v];
                tok = v;
            }
    }
    if (tok < 0)
        return -1;
    out->d [i] = tok;
    int n = 0;
    const sampler_prob_t *q = sampler ? sampler_dist (sampler, &n) : NULL;
    out->conf [i] = 1.0f;
    if (q && n >= 1 && n <= DRAFTER_MAX_CANDIDATES) {
        memcpy (out->q [i], q, (size_t) n * sizeof *q);
        out->q_n [i] = n;
        for (int j = 0; j < n; j++)
            if (q [j].token == tok)
                out->conf [i] = q [j].prob;
    }
    else {
        //  Greedy: the point mass on the argmax.
        out->q [i][0].token = tok;
        out->q [i][0].prob = 1.0f;
        out->q_n [i] = 1;
        if (self->min_p > 0) {
            //  Its softmax probability: 1 / sum exp (l - l_max).
            int vocab = model_config (self->model)->vocab_size;
            float top = self->logits [tok];
            double sum = 0;
            for (int v = 0; v < vocab; v++)
                if (self->logits [v] == self->logits [v])
                    sum += exp ((double) self->logits [v] - top);
            out->conf [i] = sum > 0 ? (float) (1.0 / sum) : 1.0f;
        }
    }
    return 0;
}

//  Rolls the cache back to its common prefix with ctx, keeping at most
//  `limit` positions. Returns the positions kept.
static int
s_common (drafter_t *self, const int32_t *ctx, int limit)
{
    if (limit > self->n_cached)
        limit = self->n_cached;
    int common = 0;
    while (common < limit && self->cached [common] == ctx [common])
        common++;
    drafter_rollback (self, common);
    return common;
}

int
drafter_prefill (drafter_t *self, const int32_t *ctx, int n_ctx, char *err, size_t err_size)
{
    if (self->kind != DRAFTER_MODEL)
        return 0;
    if (!ctx || n_ctx < 1 || n_ctx > self->max_ctx) {
        snprintf (err, err_size, "drafter: cannot prefill %d positions into %d", n_ctx, self->max_ctx);
        return -1;
    }
    int common = s_common (self, ctx, n_ctx);
    if (common == n_ctx)
        return 0;
    s_lock (self);
    int rc = s_feed (self, ctx + common, n_ctx - common, err, err_size);
    s_unlock (self);
    return rc;
}

static int
s_propose_model (drafter_t *self, const int32_t *ctx, int n_ctx, int k,
                 sampler_t *sampler, drafter_proposal_t *out, char *err, size_t err_size)
{
    if (n_ctx + k - 1 > self->max_ctx) {
        snprintf (err, err_size, "context of %d tokens + %d drafts exceeds the draft cache (%d)",
                  n_ctx, k, self->max_ctx);
        return -1;
    }
    //  Roll back to the common prefix, keeping one token to feed.
    int common = s_common (self, ctx, n_ctx - 1);

    int rc = -1;
    s_lock (self);
    if (s_feed (self, ctx + common, n_ctx - common, err, err_size))
        goto done;
    for (int i = 0; i < k; i++) {
        if (s_draw (self, sampler, out, i)) {
            snprintf (err, err_size, "draft model: logits hold no finite value");
            goto done;
        }
        out->k = i + 1;
        if (out->conf [i] < self->min_p)
            break;              //  unlikely to be accepted: stop here
        if (i + 1 < k && s_feed (self, &out->d [i], 1, err, err_size))
            goto done;
    }
    rc = 0;
done:
    s_unlock (self);
    return rc;
}

int
drafter_ngram_lookup (const int32_t *ctx, int n_ctx, int k, int max_n, int32_t *out)
{
    if (n_ctx < 2 || k < 1)
        return 0;
    int lo = n_ctx > DRAFTER_NGRAM_WINDOW ? n_ctx - DRAFTER_NGRAM_WINDOW : 0;
    for (int n = max_n; n >= 1; n--) {
        if (n >= n_ctx)
            continue;
        const int32_t *suffix = ctx + n_ctx - n;
        //  Most recent earlier occurrence: start j with j + n <= n_ctx - 1,
        //  so at least one token follows it.
        for (int j = n_ctx - n - 1; j >= lo; j--) {
            if (memcmp (ctx + j, suffix, (size_t) n * sizeof *ctx) != 0)
                continue;
            int m = 0;
            while (m < k && j + n + m < n_ctx) {
                out [m] = ctx [j + n + m];
                m++;
            }
            return m;
        }
    }
    return 0;
}

int
drafter_propose (drafter_t *self, const int32_t *ctx, int n_ctx, int k,
                 sampler_t *sampler, drafter_proposal_t *out, char *err, size_t err_size)
{
    out->k = 0;
    if (!ctx || n_ctx < 1 || k < 1 || k > DRAFTER_MAX_K) {
        snprintf (err, err_size, "drafter: bad arguments (n_ctx %d, k %d)", n_ctx, k);
        return -1;
    }
    if (self->kind == DRAFTER_MODEL)
        return s_propose_model (self, ctx, n_ctx, k, sampler, out, err, err_size);

    out->k = drafter_ngram_lookup (ctx, n_ctx, k, DRAFTER_NGRAM_MAX_N, out->d);
    for (int i = 0; i < out->k; i++) {
        out->q [i][0].token = out->d [i];
        out->q [i][0].prob = 1.0f;
        out->q_n [i] = 1;
        out->conf [i] = 1.0f;
    }
    return 0;
}

int
drafter_adapt_k (int k, int proposed, int accepted, int k_max)
{
    if (k_max < 1)
        k_max = 1;
    if (k_max > DRAFTER_MAX_K)
        k_max = DRAFTER_MAX_K;
    if (proposed > 0) {
        if (accepted >= proposed)
            k++;
        else
        if (2 * accepted < proposed)
            k--;
    }
    if (k < 1)
        k = 1;
    if (k > k_max)
        k = k_max;
    return k;
}
