/*  sm_ref.c: the single-process reference of the end-to-end tests. See sm_ref.h.  */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kvcache.h"
#include "model.h"
#include "quant.h"
#include "sm_ref.h"
#include "tokenizer.h"

struct _sm_ref_t {
    model_t *model;             //  every layer, embeddings and head
    tokenizer_t *tok;           //  the model file's tokenizer
    float *x;                   //  (ctx, dim) hidden states of one forward call
    float *logits;              //  (vocab)
    int ctx;                    //  positions x can hold
};

sm_ref_t *
sm_ref_new (const char *model, const char *format, char *err, size_t err_size)
{
    sm_ref_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    model_options_t mo = model_options_default ();
    if (qfmt_parse (format, &mo.format)) {
        snprintf (err, err_size, "unknown format %s", format);
        goto fail;
    }
    mo.n_threads = 1;
    self->model = model_load (model, &mo, err, err_size);
    if (!self->model)
        goto fail;
    self->tok = tokenizer_new_from_gguf (model_gguf (self->model), err, err_size);
    if (!self->tok)
        goto fail;
    const model_config_t *c = model_config (self->model);
    self->ctx = c->context_length < 2048 ? c->context_length : 2048;
    self->x = malloc ((size_t) self->ctx * c->dim * sizeof *self->x);
    self->logits = malloc ((size_t) c->vocab_size * sizeof *self->logits);
    if (!self->x || !self->logits) {
        snprintf (err, err_size, "out of memory");
        goto fail;
    }
    return self;
fail:
    sm_ref_destroy (&self);
    return NULL;
}

void
sm_ref_destroy (sm_ref_t **self_p)
{
    if (self_p && *self_p) {
        sm_ref_t *self = *self_p;
        tokenizer_destroy (&self->tok);
        model_destroy (&self->model);
        free (self->x);
        free (self->logits);
        free (self);
        *self_p = NULL;
    }
}

int
sm_ref_tokenize (sm_ref_t *self, const char *prompt, int32_t **ids_p, size_t *n_p)
{
    char err [256];
    return tokenizer_encode (self->tok, prompt, strlen (prompt), true, false, ids_p, n_p,
                             err, sizeof err) ? -1 : 0;
}

//  Runs tokens [0, n) at pos through every layer and the head of the last.
static int
s_step (sm_ref_t *self, kvcache_t *kv, const int32_t *tokens, int n, int pos)
{
    const model_config_t *c = model_config (self->model);
    if (n > self->ctx)
        return -1;
    if (model_embed (self->model, tokens, n, self->x)
    ||  model_forward (self->model, kv, 0, c->n_layers, pos, n, self->x)
    ||  model_head (self->model, self->x + (size_t) (n - 1) * c->dim, 1, self->logits))
        return -1;
    return 0;
}

int
sm_ref_greedy (sm_ref_t *self, const char *prompt, int n, int32_t **out_p, size_t *n_out_p)
{
    int32_t *ids = NULL, *out = calloc ((size_t) n + 1, sizeof *out);
    size_t n_ids = 0, n_out = 0;
    kvcache_t *kv = NULL;
    sampler_t *sampler = NULL;
    int rc = -1;
    if (!out || sm_ref_tokenize (self, prompt, &ids, &n_ids) || n_ids == 0)
        goto done;
    if ((int) n_ids + n + 1 > self->ctx)
        goto done;
    kv = kvcache_new (self->model, (int) n_ids + n + 1);
    sampler_params_t sp = sampler_params_default ();
    sampler = sampler_new (&sp, model_config (self->model)->vocab_size);
    if (!kv || !sampler || s_step (self, kv, ids, (int) n_ids, 0))
        goto done;
    int pos = (int) n_ids;
    while ((int) n_out < n) {
        int32_t next = sampler_sample (sampler, self->logits);
        if (next < 0 || tokenizer_is_eog (self->tok, next))
            break;
        out [n_out++] = next;
        if ((int) n_out == n)
            break;
        if (s_step (self, kv, &next, 1, pos++))
            goto done;
    }
    *out_p = out;
    *n_out_p = n_out;
    out = NULL;
    rc = 0;
done:
    free (ids);
    free (out);
    kvcache_destroy (&kv);
    sampler_destroy (&sampler);
    return rc;
}

int
sm_ref_dist (sm_ref_t *self, const int32_t *context, size_t n_context,
             const sampler_params_t *params, sampler_prob_t *out, int max)
{
    int rc = -1;
    kvcache_t *kv = kvcache_new (self->model, (int) n_context + 1);
    sampler_t *sampler = sampler_new (params, model_config (self->model)->vocab_size);
    if (kv && sampler && n_context > 0 && s_step (self, kv, context, (int) n_context, 0) == 0)
        rc = sampler_distribution (sampler, self->logits, out, max);
    kvcache_destroy (&kv);
    sampler_destroy (&sampler);
    return rc;
}

int
sm_ref_vocab (sm_ref_t *self)
{
    return model_config (self->model)->vocab_size;
}

bool
sm_ref_is_eog (sm_ref_t *self, int32_t id)
{
    return tokenizer_is_eog (self->tok, id);
}
