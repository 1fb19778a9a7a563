/*  target_backend_cpu.c: the CPU backend of cloud-target, a thin adapter
    from target_backend_ops_t to core/model and core/kvcache.
*/
#include <stdio.h>
#include <stdlib.h>
#include "kvcache.h"
#include "model.h"
#include "target_backend.h"

static target_kv_t *
s_kv_new (target_backend_t *self, int max_ctx)
{
    return (target_kv_t *) kvcache_new ((model_t *) self->impl, max_ctx);
}

static void
s_kv_destroy (target_kv_t **kv_p)
{
    kvcache_destroy ((kvcache_t **) kv_p);
}

static void
s_kv_truncate (target_kv_t *kv, int n_pos)
{
    kvcache_truncate ((kvcache_t *) kv, n_pos);
}

static size_t
s_kv_bytes (const target_kv_t *kv)
{
    return kvcache_bytes ((const kvcache_t *) kv);
}

static int
s_embed (target_backend_t *self, const int32_t *tokens, int n, float *x)
{
    return model_embed ((model_t *) self->impl, tokens, n, x);
}

static int
s_forward (target_backend_t *self, target_kv_t *kv, int first, int last, int pos, int n, float *x)
{
    return model_forward ((model_t *) self->impl, (kvcache_t *) kv, first, last, pos, n, x);
}

static int
s_head (target_backend_t *self, const float *x, int n, float *logits)
{
    return model_head ((model_t *) self->impl, x, n, logits);
}

static const char *
s_error (target_backend_t *self)
{
    return model_error ((model_t *) self->impl);
}

static void
s_destroy (target_backend_t **self_p)
{
    target_backend_t *self = *self_p;
    if (self) {
        model_t *model = (model_t *) self->impl;
        model_destroy (&model);
        free (self);
        *self_p = NULL;
    }
}

static const target_backend_ops_t s_cpu_ops = {
    .name = "cpu",
    .kv_new = s_kv_new,
    .kv_destroy = s_kv_destroy,
    .kv_truncate = s_kv_truncate,
    .kv_bytes = s_kv_bytes,
    .embed = s_embed,
    .forward = s_forward,
    .head = s_head,
    .error = s_error,
    .destroy = s_destroy
};

target_backend_t *
target_backend_cpu_new (const char *model_path, qfmt_t format, int n_threads,
                        int first_layer, char *err, size_t err_size)
{
    model_options_t mo = model_options_default ();
    mo.format = format;
    mo.n_threads = n_threads;
    mo.first_layer = first_layer;
    mo.last_layer = -1;
    mo.load_embeddings = first_layer == 0;
    mo.load_head = true;
    model_t *model = model_load (model_path, &mo, err, err_size);
    if (!model)
        return NULL;
    target_backend_t *self = calloc (1, sizeof *self);
    if (!self) {
        model_destroy (&model);
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    const model_config_t *c = model_config (model);
    self->ops = &s_cpu_ops;
    self->impl = model;
    self->dim = c->dim;
    self->vocab = c->vocab_size;
    self->n_layers = c->n_layers;
    self->context_length = c->context_length;
    self->first_layer = first_layer;
    self->has_embeddings = first_layer == 0;
    self->weight_bytes = model_weight_bytes (model);
    return self;
}
