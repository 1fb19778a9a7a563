/*  kvcache.h: one session's attention keys and values, for the layers a
    model_t has loaded.

    A split-prefix keeps one per session for layers [0, L), a cloud-target
    for [L, N). Speculative decoding appends k+1 positions per verification
    and rolls back the rejected ones with kvcache_truncate, so truncation is
    O(1): it only lowers the per-layer position counts.

    Layout (fp32): keys and values are (layer, max_ctx, kv_dim) each, so one
    head's keys for a position are contiguous and a decode step streams the
    cache forward. Each loaded layer counts its own positions, so a caller
    may run layers [a, b) and then [b, c) of one step separately.
*/
#ifndef SPLITMESH_KVCACHE_H
#define SPLITMESH_KVCACHE_H

#include <stddef.h>
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

//  A cache for model's loaded layer range, up to max_ctx positions
//  (1 <= max_ctx <= context_length). Returns NULL on bad arguments or no
//  memory. The model must outlive the cache. Caller owns the result and
//  must destroy it.
kvcache_t *kvcache_new (const model_t *model, int max_ctx);

//  Frees the cache; sets *self_p to NULL. Safe on NULL.
void kvcache_destroy (kvcache_t **self_p);

//  Positions held by every layer of the cache (the minimum over layers).
int kvcache_pos (const kvcache_t *self);
int kvcache_max_ctx (const kvcache_t *self);

//  Forgets positions n_pos and later in every layer (rollback after
//  rejected drafts). n_pos at or beyond what a layer holds changes nothing
//  there; n_pos < 0 counts as 0.
void kvcache_truncate (kvcache_t *self, int n_pos);

//  Bytes of cache memory.
size_t kvcache_bytes (const kvcache_t *self);

//  --- for the forward pass --------------------------------------------
//  Layers are absolute indices; layer must be in the cache's range.
int kvcache_first_layer (const kvcache_t *self);
int kvcache_last_layer (const kvcache_t *self);
//  Positions this layer holds.
int kvcache_layer_pos (const kvcache_t *self, int layer);
void kvcache_set_layer_pos (kvcache_t *self, int layer, int n_pos);
//  (max_ctx, kv_dim) keys / values of a layer.
float *kvcache_keys (kvcache_t *self, int layer);
float *kvcache_values (kvcache_t *self, int layer);

#ifdef __cplusplus
}
#endif

#endif
