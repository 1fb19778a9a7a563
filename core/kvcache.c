/*  kvcache.c: per-session fp32 keys and values for a model's layer range.  */
#include "kvcache.h"
#include <assert.h>
#include <stdlib.h>

struct _kvcache_t {
    int first_layer;            //  absolute index of the first cached layer
    int n_layers;               //  layers cached: [first_layer, first_layer + n_layers)
    int max_ctx;                //  positions per layer
    int kv_dim;                 //  n_kv_heads * head_dim
    int *n_pos;                 //  (n_layers) positions held per layer
    float *keys;                //  (n_layers, max_ctx, kv_dim)
    float *values;              //  (n_layers, max_ctx, kv_dim)
};

kvcache_t *
kvcache_new (const model_t *model, int max_ctx)
{
    if (!model)
        return NULL;
    const model_config_t *cfg = model_config (model);
    const model_options_t *opts = model_options (model);
    if (max_ctx < 1 || max_ctx > cfg->context_length)
        return NULL;
    kvcache_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->first_layer = opts->first_layer;
    self->n_layers = opts->last_layer - opts->first_layer;
    self->max_ctx = max_ctx;
    self->kv_dim = cfg->kv_dim;
    size_t n = (size_t) self->n_layers * (size_t) max_ctx * (size_t) cfg->kv_dim;
    self->n_pos = calloc ((size_t) (self->n_layers > 0 ? self->n_layers : 1), sizeof (int));
    //  Zeroed so pages are only touched as positions are written.
    self->keys = calloc (n ? n : 1, sizeof (float));
    self->values = calloc (n ? n : 1, sizeof (float));
    if (!self->n_pos || !self->keys || !self->values)
        kvcache_destroy (&self);
    return self;
}

void
kvcache_destroy (kvcache_t **self_p)
{
    assert (self_p);
    kvcache_t *self = *self_p;
    if (self) {
        free (self->n_pos);
        free (self->keys);
        free (self->values);
        free (self);
        *self_p = NULL;
    }
}

int
kvcache_pos (const kvcache_t *self)
{
    assert (self);
    if (self->n_layers == 0)
        return 0;
    int pos = self->n_pos[0];
    for (int l = 1; l < self->n_layers; l++)
        if (self->n_pos[l] < pos)
            pos = self->n_pos[l];
    return pos;
}

int
kvcache_max_ctx (const kvcache_t *self)
{
    assert (self);
    return self->max_ctx;
}

void
kvcache_truncate (kvcache_t *self, int n_pos)
{
    assert (self);
    if (n_pos < 0)
        n_pos = 0;
    for (int l = 0; l < self->n_layers; l++)
        if (self->n_pos[l] > n_pos)
            self->n_pos[l] = n_pos;
}

size_t
kvcache_bytes (const kvcache_t *self)
{
    assert (self);
    return 2 * (size_t) self->n_layers * (size_t) self->max_ctx * (size_t) self->kv_dim * sizeof (float);
}

int
kvcache_first_layer (const kvcache_t *self)
{
    assert (self);
    return self->first_layer;
}

int
kvcache_last_layer (const kvcache_t *self)
{
    assert (self);
    return self->first_layer + self->n_layers;
}

int
kvcache_layer_pos (const kvcache_t *self, int layer)
{
    assert (self);
    assert (layer >= self->first_layer && layer < self->first_layer + self->n_layers);
    return self->n_pos[layer - self->first_layer];
}

void
kvcache_set_layer_pos (kvcache_t *self, int layer, int n_pos)
{
    assert (self);
    assert (layer >= self->first_layer && layer < self->first_layer + self->n_layers);
    assert (n_pos >= 0 && n_pos <= self->max_ctx);
    self->n_pos[layer - self->first_layer] = n_pos;
}

float *
kvcache_keys (kvcache_t *self, int layer)
{
    assert (self);
    assert (layer >= self->first_layer && layer < self->first_layer + self->n_layers);
    return self->keys + (size_t) (layer - self->first_layer) * self->max_ctx * self->kv_dim;
}

float *
kvcache_values (kvcache_t *self, int layer)
{
    assert (self);
    assert (layer >= self->first_layer && layer < self->first_layer + self->n_layers);
    return self->values + (size_t) (layer - self->first_layer) * self->max_ctx * self->kv_dim;
}
