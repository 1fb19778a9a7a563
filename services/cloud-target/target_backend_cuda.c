/*  target_backend_cuda.c: the CUDA backend of cloud-target, an adapter
    from target_backend_ops_t to gpu/gpu.h.

    The CPU model is loaded as for the CPU backend and uploaded to the GPU
    (gpu_model_new_from_cpu), then kept for the embedding lookup, which the
    table does on the host (embed gives host rows that forward takes back).
    Each cache is a GPU session (paged fp16 KV); forward runs the session's
    rows from the layer asked (0 for tokens, L for activations) as a batch
    of one; head runs the GPU head on the rows given. forward_batch runs
    several sessions' rows as one gpu_forward_batch_from (the service's
    batcher gathers them: continuous batching), in as few calls as the
    model's max_tokens allows.

    Built into the service library always: without CUDA, gpu.h's calls
    report no device and target_backend_cuda_new fails with that message.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gpu.h"
#include "model.h"
#include "target_backend.h"

typedef struct {
    model_t *cpu;               //  the uploaded model; embeddings for embed
    gpu_model_t *gpu;
    float *out_x;               //  (max_tokens, dim) a batch's output rows
    gpu_seq_t *seqs;            //  (max_sessions) a batch's sequences
    char error[512];            //  the last failure
} s_impl_t;

//  What a target_kv_t points to here.
typedef struct {
    s_impl_t *impl;
    int session;                //  GPU session id
} s_kv_t;

static s_impl_t *
s_impl (target_backend_t *self)
{
    return (s_impl_t *) self->impl;
}

static int
s_fail (s_impl_t *impl, const char *what, const char *msg)
{
    snprintf (impl->error, sizeof impl->error, "%s: %s", what, msg);
    return -1;
}

static target_kv_t *
s_kv_new (target_backend_t *self, int max_ctx)
{
    s_impl_t *impl = s_impl (self);
    if (max_ctx > gpu_model_options (impl->gpu)->max_ctx) {
        snprintf (impl->error, sizeof impl->error, "a cache of %d positions exceeds the GPU's %d",
                  max_ctx, gpu_model_options (impl->gpu)->max_ctx);
        return NULL;
    }
    s_kv_t *kv = calloc (1, sizeof *kv);
    if (!kv)
        return NULL;
    kv->impl = impl;
    kv->session = gpu_session_open (impl->gpu);
    if (kv->session < 0) {
        s_fail (impl, "session", gpu_model_error (impl->gpu));
        free (kv);
        return NULL;
    }
    return (target_kv_t *) kv;
}

static void
s_kv_destroy (target_kv_t **kv_p)
{
    s_kv_t *kv = (s_kv_t *) *kv_p;
    if (kv) {
        gpu_session_close (kv->impl->gpu, kv->session);
        free (kv);
        *kv_p = NULL;
    }
}

static void
s_kv_truncate (target_kv_t *kv_, int n_pos)
{
    s_kv_t *kv = (s_kv_t *) kv_;
    gpu_session_truncate (kv->impl->gpu, kv->session, n_pos);
}

//  Bytes of the pages the session holds (keys and values, fp16 or fp32).
static size_t
s_kv_bytes (const target_kv_t *kv_)
{
    const s_kv_t *kv = (const s_kv_t *) kv_;
    const gpu_model_t *g = kv->impl->gpu;
    const model_config_t *c = gpu_model_config (g);
    const gpu_options_t *o = gpu_model_options (g);
    int first, last;
    gpu_model_range (g, &first, &last, NULL, NULL);
    int pos = gpu_session_pos (g, kv->session);
    size_t pages = pos > 0 ? (size_t) (pos + o->page_size - 1) / o->page_size : 0;
    size_t elem = o->format == GPU_FMT_W8 ? 4 : 2;     //  w8 keeps an fp32 cache
    return pages * o->page_size * (size_t) (last - first) * c->kv_dim * 2 * elem;
}

static int
s_embed (target_backend_t *self, const int32_t *tokens, int n, float *x)
{
    s_impl_t *impl = s_impl (self);
    if (model_embed (impl->cpu, tokens, n, x))
        return s_fail (impl, "embed", model_error (impl->cpu));
    return 0;
}

static int
s_forward (target_backend_t *self, target_kv_t *kv_, int first, int last, int pos, int n, float *x)
{
    s_impl_t *impl = s_impl (self);
    s_kv_t *kv = (s_kv_t *) kv_;
    if (last != self->n_layers)
        return s_fail (impl, "forward", "the GPU backend runs up to the last layer only");
    gpu_seq_t seq = { kv->session, pos, n, NULL, x };
    gpu_out_t out = { .x = x };
    if (gpu_forward_batch_from (impl->gpu, first, &seq, 1, &out))
        return s_fail (impl, "forward", gpu_model_error (impl->gpu));
    return 0;
}

//  Runs items [i0, i1) as one batch and copies each item's rows back.
static int
s_forward_group (target_backend_t *self, const target_batch_item_t *items, int i0, int i1,
                 int first)
{
    s_impl_t *impl = s_impl (self);
    for (int i = i0; i < i1; i++) {
        const s_kv_t *kv = (const s_kv_t *) items[i].kv;
        impl->seqs[i - i0] = (gpu_seq_t) { kv->session, items[i].pos, items[i].n, NULL, items[i].x };
    }
    gpu_out_t out = { .x = impl->out_x };
    if (gpu_forward_batch_from (impl->gpu, first, impl->seqs, i1 - i0, &out))
        return s_fail (impl, "forward", gpu_model_error (impl->gpu));
    size_t row = 0;
    for (int i = i0; i < i1; i++) {
        memcpy (items[i].x, impl->out_x + row * self->dim, (size_t) items[i].n * self->dim * sizeof (float));
        row += (size_t) items[i].n;
    }
    return 0;
}

static int
s_forward_batch (target_backend_t *self, const target_batch_item_t *items, int n, int first)
{
    s_impl_t *impl = s_impl (self);
    const gpu_options_t *o = gpu_model_options (impl->gpu);
    int i0 = 0, tokens = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].n > o->max_tokens)
            return s_fail (impl, "forward", "an item longer than the batch");
        if (tokens + items[i].n > o->max_tokens || i - i0 == o->max_sessions) {
            if (s_forward_group (self, items, i0, i, first))
                return -1;
            i0 = i;
            tokens = 0;
        }
        tokens += items[i].n;
    }
    return n > i0 ? s_forward_group (self, items, i0, n, first) : 0;
}

static int
s_head (target_backend_t *self, const float *x, int n, float *logits)
{
    s_impl_t *impl = s_impl (self);
    int max = gpu_model_options (impl->gpu)->max_tokens;
    for (int p = 0; p < n; p += max) {
        int m = n - p < max ? n - p : max;
        gpu_out_t out = { .logits = logits + (size_t) p * self->vocab };
        if (gpu_model_head (impl->gpu, x + (size_t) p * self->dim, m, &out))
            return s_fail (impl, "head", gpu_model_error (impl->gpu));
    }
    return 0;
}

static const char *
s_error (target_backend_t *self)
{
    return s_impl (self)->error;
}

static void
s_destroy (target_backend_t **self_p)
{
    target_backend_t *self = *self_p;
    if (self) {
        s_impl_t *impl = s_impl (self);
        gpu_model_destroy (&impl->gpu);
        model_destroy (&impl->cpu);
        free (impl->out_x);
        free (impl->seqs);
        free (impl);
        free (self);
        *self_p = NULL;
    }
}

static const target_backend_ops_t s_cuda_ops = {
    .name = "cuda",
    .kv_new = s_kv_new,
    .kv_destroy = s_kv_destroy,
    .kv_truncate = s_kv_truncate,
    .kv_bytes = s_kv_bytes,
    .embed = s_embed,
    .forward = s_forward,
    .head = s_head,
    .forward_batch = s_forward_batch,
    .error = s_error,
    .destroy = s_destroy
};

target_backend_t *
target_backend_cuda_new (const char *model_path, qfmt_t format, int gpu_format, int first_layer,
                         int max_sessions, int max_ctx, char *err, size_t err_size)
{
    if (gpu_device_count () == 0) {
        snprintf (err, err_size, "no CUDA device");
        return NULL;
    }
    model_options_t mo = model_options_default ();
    mo.format = format;
    mo.first_layer = first_layer;
    mo.last_layer = -1;
    mo.load_embeddings = first_layer == 0;
    mo.load_head = true;
    model_t *cpu = model_load (model_path, &mo, err, err_size);
    if (!cpu)
        return NULL;
    const model_config_t *c = model_config (cpu);
    gpu_options_t go = gpu_options_default ();
    go.format = (gpu_fmt_t) gpu_format;
    go.max_sessions = max_sessions > 0 ? max_sessions : 1;
    go.max_ctx = max_ctx > 0 && max_ctx < c->context_length ? max_ctx : c->context_length;
    go.max_tokens = 512;            //  cloud_target's S_CHUNK
    s_impl_t *impl = calloc (1, sizeof *impl);
    target_backend_t *self = calloc (1, sizeof *self);
    if (!impl || !self) {
        snprintf (err, err_size, "out of memory");
        goto fail;
    }
    impl->cpu = cpu;
    impl->gpu = gpu_model_new_from_cpu (cpu, &go, err, err_size);
    if (!impl->gpu)
        goto fail;
    impl->out_x = malloc ((size_t) go.max_tokens * c->dim * sizeof (float));
    impl->seqs = malloc ((size_t) go.max_sessions * sizeof (gpu_seq_t));
    if (!impl->out_x || !impl->seqs) {
        snprintf (err, err_size, "out of memory");
        goto fail;
    }
    self->ops = &s_cuda_ops;
    self->impl = impl;
    self->dim = c->dim;
    self->vocab = c->vocab_size;
    self->n_layers = c->n_layers;
    self->context_length = go.max_ctx;
    self->first_layer = first_layer;
    self->has_embeddings = first_layer == 0;
    self->weight_bytes = gpu_model_stream_bytes (impl->gpu);
    return self;
fail:
    if (impl) {
        gpu_model_destroy (&impl->gpu);
        free (impl->out_x);
        free (impl->seqs);
    }
    model_destroy (&cpu);
    free (impl);
    free (self);
    return NULL;
}
