/*  model_impl.h: the model's private structs, shared by model.c (loading)
    and forward.c (evaluation). Not for use outside those two files.

    As in llama2.c, config, weights and run state are separate structs and
    every buffer's comment gives its shape. Matrices are (rows, cols) =
    (out, in), the GGUF convention (ne[0] = cols).
*/
#ifndef SPLITMESH_MODEL_IMPL_H
#define SPLITMESH_MODEL_IMPL_H

#include "model.h"
#include "threadpool.h"

typedef struct {
    float *attn_norm;           //  (dim)
    qmatrix_t *wqkv;            //  (q_dim + 2 * kv_dim, dim): attn_q, attn_k, attn_v rows stacked
    qmatrix_t *wo;              //  (dim, q_dim)
    float *ffn_norm;            //  (dim)
    qmatrix_t *w_gate_up;       //  (2 * hidden_dim, dim): ffn_gate, ffn_up rows stacked
    qmatrix_t *w_down;          //  (dim, hidden_dim)
} model_layer_t;

typedef struct {
    qmatrix_t *token_embd;      //  (vocab, dim) or NULL when not loaded
    model_layer_t *layers;      //  (n_layers); only [first_layer, last_layer) filled
    float *output_norm;         //  (dim) or NULL when the head is not loaded
    qmatrix_t *output;          //  (vocab, dim); == token_embd when tied (not owned twice)
    float *rope_inv_freq;       //  (head_dim / 2) angle per position for each pair
} model_weights_t;

//  Scratch for one forward call of up to cap positions; grown on demand.
typedef struct {
    int cap;                    //  positions the buffers below hold
    float *xb;                  //  (cap, dim) normed input of a sub-block
    float *qkv;                 //  (cap, q_dim + 2 * kv_dim) stacked projections
    float *q;                   //  (cap, q_dim) roped queries
    float *att;                 //  (cap, q_dim) attention output
    float *hb;                  //  (cap, 2 * hidden_dim) gate | up
    float *hb2;                 //  (cap, hidden_dim) silu (gate) * up
    float *rope_cos;            //  (cap, head_dim / 2)
    float *rope_sin;            //  (cap, head_dim / 2)
    int score_cap;              //  positions per thread in scores
    float *scores;              //  (n_threads, score_cap) attention weights
} model_run_t;

struct _model_t {
    model_config_t config;      //  hyper-parameters of the whole model
    model_options_t opts;       //  as loaded (last_layer resolved)
    model_weights_t w;          //  materialised weights
    model_run_t run;            //  scratch
    gguf_t *gguf;               //  the file; weights in F32 path may point into it
    threadpool_t *pool;         //  opts.n_threads workers
    size_t weight_bytes;        //  materialised weight memory
    char error[256];            //  last failure, for model_error
};

//  Records a failure message on the model; returns -1.
int model_fail (model_t *self, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

#endif
