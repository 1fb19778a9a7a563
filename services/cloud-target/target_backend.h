/*  target_backend.h: the compute behind cloud-target, as a small table of
    operations, so a CUDA backend (issue 5) slots in next to the CPU one
    without touching the service's protocol code.

    A backend holds the loaded layer range of the target model and creates
    per-session KV caches. The service calls, per request: embed (privacy
    `none` only), forward over a layer range at a position (appending to
    the session's cache), head over the rows it needs, and truncate to roll
    a cache back. Row-major float buffers on the host, n x dim and
    n x vocab, are the interface: a GPU backend copies in and out.
*/
#ifndef SPLITMESH_TARGET_BACKEND_H
#define SPLITMESH_TARGET_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _target_backend_t target_backend_t;
typedef struct _target_kv_t target_kv_t;       //  one session's cache

//  One session's rows in a batched forward pass.
typedef struct {
    target_kv_t *kv;
    int pos;                    //  first position (the cache holds pos positions)
    int n;                      //  rows
    float *x;                   //  (n, dim) in; the last layer's output on return
} target_batch_item_t;

typedef struct {
    const char *name;                                           //  "cpu", "cuda"
    target_kv_t *(*kv_new) (target_backend_t *self, int max_ctx);
    void (*kv_destroy) (target_kv_t **kv_p);
    void (*kv_truncate) (target_kv_t *kv, int n_pos);
    size_t (*kv_bytes) (const target_kv_t *kv);
    int (*embed) (target_backend_t *self, const int32_t *tokens, int n, float *x);
    int (*forward) (target_backend_t *self, target_kv_t *kv, int first, int last,
                    int pos, int n, float *x);
    int (*head) (target_backend_t *self, const float *x, int n, float *logits);
    //  Optional (NULL: the service calls forward per item): forward for
    //  several sessions' caches as one pass, every item from layer `first`
    //  to the last. Returns 0, or -1 (error) with any item's cache
    //  possibly holding some of its new positions: the caller truncates
    //  and retries item by item, so one bad item fails alone.
    int (*forward_batch) (target_backend_t *self, const target_batch_item_t *items, int n,
                          int first);
    const char *(*error) (target_backend_t *self);
    void (*destroy) (target_backend_t **self_p);
} target_backend_ops_t;

//  What every backend exposes besides its operations.
struct _target_backend_t {
    const target_backend_ops_t *ops;
    void *impl;                 //  the backend's own state
    int dim;                    //  hidden size
    int vocab;                  //  logits per row
    int n_layers;               //  layers of the whole model (N)
    int context_length;         //  trained context
    int first_layer;            //  loaded layers [first_layer, n_layers)
    bool has_embeddings;        //  embed works (privacy `none`)
    size_t weight_bytes;        //  for the start-up log
};

//  The CPU backend: core/model over layers [first_layer, N) with the head,
//  plus the embeddings when first_layer is 0. Returns NULL with a message
//  in err. Caller owns the result and destroys it with ops->destroy.
target_backend_t *target_backend_cpu_new (const char *model_path, qfmt_t format, int n_threads,
                                          int first_layer, char *err, size_t err_size);

//  The CUDA backend (gpu/gpu.h): the same model uploaded to the GPU as
//  gpu_format (0 fp16, 1 w8a8: gpu_fmt_t), caches as GPU sessions (up to
//  max_sessions, max_ctx positions each; 0: the model's context). Returns
//  NULL with a message in err (also "no CUDA device"). Same ownership.
target_backend_t *target_backend_cuda_new (const char *model_path, qfmt_t format, int gpu_format,
                                           int first_layer, int max_sessions, int max_ctx,
                                           char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
