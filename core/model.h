/*  model.h: a Llama-family transformer loaded from GGUF, evaluated over any
    range of its layers.

    One engine serves every stage of a split model: the device's
    split-prefix loads the embeddings and layers [0, L), the cloud-target
    loads layers [L, N), the final norm and the head, and `splitmesh run`
    loads everything. Only the parts asked for are materialised in memory.

    The forward pass works on activations x (n positions x dim), in place:
      model_embed    tokens -> x
      model_forward  x through layers [first, last), appending to a KV cache
      model_head     final RMSNorm + output projection -> logits (n x vocab)
    model_forward evaluates several positions per call (prefill, and the
    verification of k drafted tokens), each attending causally to the cache
    and to the positions before it in the same call.

    Supported: architecture "llama" (SmolLM2, TinyLlama, Llama 2/3, and
    Mistral, which GGUF converters write as "llama"); RMSNorm, RoPE with the
    file's freq_base (plus linear scaling and llama3 per-frequency factors
    from rope_freqs.weight), grouped-query attention, SwiGLU, tied or
    separate output head. Anything else is rejected with a message.

    Threading: one model_t may be used by one thread at a time (it owns
    scratch buffers and a thread pool); sessions differ only by KV cache.
*/
#ifndef SPLITMESH_MODEL_H
#define SPLITMESH_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "gguf.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Hyper-parameters, as read from the file (the whole model, not the range).
typedef struct {
    int dim;                    //  embedding length
    int hidden_dim;             //  feed-forward length
    int n_layers;               //  block count
    int n_heads;                //  query heads
    int n_kv_heads;             //  key/value heads (n_heads % n_kv_heads == 0)
    int head_dim;               //  dim / n_heads
    int kv_dim;                 //  n_kv_heads * head_dim
    int vocab_size;             //  rows of token_embd
    int context_length;         //  trained context; the KV cache limit
    float norm_eps;             //  RMSNorm epsilon
    float rope_freq_base;       //  RoPE theta
    float rope_freq_scale;      //  1 / linear scaling factor (1: none)
    bool has_rope_factors;      //  llama3 rope_freqs.weight present
    bool tied_head;             //  output.weight absent: head is token_embd
} model_config_t;

typedef struct {
    qfmt_t format;              //  runtime format of the layer matrices; the
                                //  embeddings/head use it too, but never below
                                //  W8 (W4 keeps them at W8, as Q4 files do)
    int first_layer;            //  layers [first_layer, last_layer) are loaded
    int last_layer;             //  -1: up to the last layer
    bool load_embeddings;       //  token_embd for model_embed
    bool load_head;             //  output_norm + output (or tied token_embd)
    int n_threads;              //  thread pool size (>= 1)
    bool file_formats;          //  mixed-precision files: each matrix keeps the
                                //  runtime format nearest its file type
                                //  (model_file_format); format is ignored
} model_options_t;

typedef struct _model_t model_t;
typedef struct _kvcache_t kvcache_t;   //  see kvcache.h

//  Everything, F32 weights, 1 thread.
model_options_t model_options_default (void);

//  The runtime format a matrix of ggml type gets with file_formats:
//  Q4_0, Q4_1, splitmesh W4G128 -> w4 (lossless); Q8_0, Q5_0, Q5_1, Q4_K,
//  Q6_K -> w8 (Q8_0 lossless); a Q4_K matrix whose sub-block scales and
//  mins are exact fp16 values loads as w4 without loss instead (s_load_matrix);
//  F32, F16, BF16 -> f32 (lossless). A fused matrix (q|k|v, gate|up) whose
//  parts differ takes the widest of its parts' formats.
qfmt_t model_file_format (int ggml_type);

//  Loads a model file. Validates the architecture ("unsupported architecture
//  'x'"), hyper-parameters, and the presence, type and shape of every tensor
//  it needs, and converts weights into opts->format. Returns NULL with a
//  message in err on any problem. Caller owns the result and must destroy it.
model_t *model_load (const char *path, const model_options_t *opts, char *err, size_t err_size);

//  Same, from an open GGUF file. Takes ownership of *gguf_p (nullifies the
//  caller's reference) on success and on failure.
model_t *model_load_gguf (gguf_t **gguf_p, const model_options_t *opts, char *err, size_t err_size);

//  Frees the model; sets *self_p to NULL. Safe on NULL.
void model_destroy (model_t **self_p);

const model_config_t *model_config (const model_t *self);
const model_options_t *model_options (const model_t *self);     //  last_layer resolved
//  The GGUF file the model came from (tokenizer, metadata). Owned by the model.
const gguf_t *model_gguf (const model_t *self);
//  Bytes of weights materialised (matrices + norms), for reports.
size_t model_weight_bytes (const model_t *self);
//  The model's thread pool (to share with other work between calls).
threadpool_t *model_pool (const model_t *self);

//  The message of the last failed call on this model (empty until one
//  fails; successful calls leave it as it was).
const char *model_error (const model_t *self);

//  x[i] = embedding of tokens[i], x is n x dim. Returns 0, or -1 when the
//  embeddings are not loaded or a token is out of range (see model_error).
int model_embed (model_t *self, const int32_t *tokens, int n, float *x);

//  Evaluates n positions pos..pos+n-1 through layers [first, last), in
//  place on x (n x dim). Every layer in the range must be loaded and hold
//  exactly pos positions in kv (truncate first to roll back); afterwards
//  they hold pos + n. Returns 0, or -1 (model_error) on a layer outside the
//  loaded range, a position mismatch, or pos + n beyond the cache's size.
int model_forward (model_t *self, kvcache_t *kv, int first, int last, int pos, int n, float *x);

//  logits (n x vocab) = output (rmsnorm (x) * output_norm) for x (n x dim),
//  x unchanged. Returns 0, or -1 when the head is not loaded.
int model_head (model_t *self, const float *x, int n, float *logits);

#ifdef __cplusplus
}
#endif

#endif
