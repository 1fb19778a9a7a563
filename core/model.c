/*  model.c: loads a Llama-family GGUF file into the engine's runtime formats.

    The loader trusts nothing in the file beyond what gguf.c already checked:
    it validates the architecture, every hyper-parameter it uses, and the
    presence, shape and type of every tensor in the requested layer range,
    then converts each weight matrix with qmatrix_new_from_ggml into the
    requested format. Parts outside the range are never touched, so a
    split-prefix does not pay for the head nor a cloud stage for the
    embeddings. The forward pass itself is in forward.c.
*/
#include "model_impl.h"
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Bounds beyond which hyper-parameters are rejected as absurd.
#define S_MAX_DIM       65536
#define S_MAX_LAYERS    1024
#define S_MAX_HEADS     1024
#define S_MAX_VOCAB     (1 << 22)
#define S_MAX_CTX       (1 << 22)

int
model_fail (model_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (self->error, sizeof self->error, fmt, ap);
    va_end (ap);
    return -1;
}

model_options_t
model_options_default (void)
{
    model_options_t o = {
        .format = QFMT_F32, .first_layer = 0, .last_layer = -1,
        .load_embeddings = true, .load_head = true, .n_threads = 1
    };
    return o;
}

//  Reads "<arch>.<key>" as a positive integer no larger than max.
static int
s_get_int (const gguf_t *g, const char *arch, const char *key, bool required,
           int dflt, int max, int *out, char *err, size_t err_size)
{
    char name[128];
    snprintf (name, sizeof name, "%s.%s", arch, key);
    int64_t v;
    if (!gguf_has_key (g, name)) {
        if (required) {
            snprintf (err, err_size, "missing hyper-parameter '%s'", name);
            return -1;
        }
        *out = dflt;
        return 0;
    }
    if (!gguf_get_i64 (g, name, &v)) {
        snprintf (err, err_size, "hyper-parameter '%s' is not an integer", name);
        return -1;
    }
    if (v < 1 || v > max) {
        snprintf (err, err_size, "hyper-parameter '%s' = %lld is out of range [1, %d]",
                  name, (long long) v, max);
        return -1;
    }
    *out = (int) v;
    return 0;
}

static int
s_get_float (const gguf_t *g, const char *arch, const char *key, float dflt,
             float *out, char *err, size_t err_size)
{
    char name[128];
    snprintf (name, sizeof name, "%s.%s", arch, key);
    if (!gguf_has_key (g, name)) {
        *out = dflt;
        return 0;
    }
    float v;
    if (!gguf_get_f32 (g, name, &v) || !isfinite (v) || v <= 0.0f) {
        snprintf (err, err_size, "hyper-parameter '%s' must be a positive float", name);
        return -1;
    }
    *out = v;
    return 0;
}

//  Reads and checks the hyper-parameters into cfg.
static int
s_read_config (const gguf_t *g, model_config_t *cfg, char *err, size_t err_size)
{
    char arch[64] = "";
    if (!gguf_get_str_copy (g, "general.architecture", arch, sizeof arch)) {
        snprintf (err, err_size, "missing 'general.architecture'");
        return -1;
    }
    if (strcmp (arch, "llama")) {
        snprintf (err, err_size, "unsupported architecture '%s' (supported: llama)", arch);
        return -1;
    }
    memset (cfg, 0, sizeof *cfg);
    if (s_get_int (g, arch, "embedding_length", true, 0, S_MAX_DIM, &cfg->dim, err, err_size)
    ||  s_get_int (g, arch, "feed_forward_length", true, 0, 4 * S_MAX_DIM, &cfg->hidden_dim, err, err_size)
    ||  s_get_int (g, arch, "block_count", true, 0, S_MAX_LAYERS, &cfg->n_layers, err, err_size)
    ||  s_get_int (g, arch, "attention.head_count", true, 0, S_MAX_HEADS, &cfg->n_heads, err, err_size)
    ||  s_get_int (g, arch, "attention.head_count_kv", false, cfg->n_heads, S_MAX_HEADS,
                   &cfg->n_kv_heads, err, err_size)
    ||  s_get_int (g, arch, "context_length", true, 0, S_MAX_CTX, &cfg->context_length, err, err_size))
        return -1;
    if (cfg->dim % cfg->n_heads) {
        snprintf (err, err_size, "embedding_length %d is not a multiple of head_count %d",
                  cfg->dim, cfg->n_heads);
        return -1;
    }
    cfg->head_dim = cfg->dim / cfg->n_heads;
    if (cfg->head_dim % 2) {
        snprintf (err, err_size, "head dimension %d is odd (RoPE rotates pairs)", cfg->head_dim);
        return -1;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        snprintf (err, err_size, "head_count %d is not a multiple of head_count_kv %d (GQA)",
                  cfg->n_heads, cfg->n_kv_heads);
        return -1;
    }
    cfg->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    //  The runtime formats quantize in groups of 32 along a matrix's columns.
    if (cfg->dim % 32 || cfg->hidden_dim % 32) {
        snprintf (err, err_size, "embedding_length %d and feed_forward_length %d must be "
                  "multiples of 32", cfg->dim, cfg->hidden_dim);
        return -1;
    }
    //  Keys that, when present, must agree with what the engine assumes.
    int rope_dims, key_len, value_len;
    if (s_get_int (g, arch, "rope.dimension_count", false, cfg->head_dim, S_MAX_DIM, &rope_dims, err, err_size)
    ||  s_get_int (g, arch, "attention.key_length", false, cfg->head_dim, S_MAX_DIM, &key_len, err, err_size)
    ||  s_get_int (g, arch, "attention.value_length", false, cfg->head_dim, S_MAX_DIM, &value_len, err, err_size))
        return -1;
    if (rope_dims != cfg->head_dim) {
        snprintf (err, err_size, "partial RoPE (rope.dimension_count %d != head dimension %d) "
                  "is not supported", rope_dims, cfg->head_dim);
        return -1;
    }
    if (key_len != cfg->head_dim || value_len != cfg->head_dim) {
        snprintf (err, err_size, "attention key/value length %d/%d != head dimension %d "
                  "is not supported", key_len, value_len, cfg->head_dim);
        return -1;
    }
    if (s_get_float (g, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &cfg->norm_eps, err, err_size)
    ||  s_get_float (g, arch, "rope.freq_base", 10000.0f, &cfg->rope_freq_base, err, err_size))
        return -1;
    //  RoPE scaling: none or linear; anything else (yarn, longrope) is refused
    //  rather than silently computed wrong.
    cfg->rope_freq_scale = 1.0f;
    char key[128], scaling[32] = "none";
    snprintf (key, sizeof key, "%s.rope.scaling.type", arch);
    if (gguf_has_key (g, key) && !gguf_get_str_copy (g, key, scaling, sizeof scaling)) {
        snprintf (err, err_size, "'%s' is not a string", key);
        return -1;
    }
    float factor = 1.0f;
    if (!strcmp (scaling, "linear")) {
        if (s_get_float (g, arch, "rope.scaling.factor", 1.0f, &factor, err, err_size))
            return -1;
    }
    else
    if (!strcmp (scaling, "llama3")) {
        //  Llama 3.1 scaling is carried by per-frequency factors in
        //  rope_freqs.weight (llama.cpp's converter writes them); without
        //  them the scaling cannot be reproduced.
        if (!gguf_find_tensor (g, "rope_freqs.weight")) {
            snprintf (err, err_size, "rope scaling 'llama3' needs tensor 'rope_freqs.weight', "
                      "which the file lacks");
            return -1;
        }
    }
    else
    if (strcmp (scaling, "none")) {
        snprintf (err, err_size, "unsupported rope scaling type '%s' (supported: none, linear, "
                  "llama3 with rope_freqs.weight)", scaling);
        return -1;
    }
    if (s_get_float (g, arch, "rope.scale_linear", factor, &factor, err, err_size))
        return -1;
    cfg->rope_freq_scale = 1.0f / factor;
    //  Vocabulary: rows of token_embd, checked against vocab_size if given.
    const gguf_tensor_t *te = gguf_find_tensor (g, "token_embd.weight");
    if (!te) {
        snprintf (err, err_size, "missing tensor 'token_embd.weight'");
        return -1;
    }
    if (te->n_dims != 2 || te->ne[0] != (uint64_t) cfg->dim || te->ne[1] < 1 || te->ne[1] > S_MAX_VOCAB) {
        snprintf (err, err_size, "tensor 'token_embd.weight' has shape [%llu, %llu], expected [%d, vocab]",
                  (unsigned long long) te->ne[0], (unsigned long long) te->ne[1], cfg->dim);
        return -1;
    }
    cfg->vocab_size = (int) te->ne[1];
    int vocab;
    if (s_get_int (g, arch, "vocab_size", false, cfg->vocab_size, S_MAX_VOCAB, &vocab, err, err_size))
        return -1;
    if (vocab != cfg->vocab_size) {
        snprintf (err, err_size, "vocab_size %d != token_embd rows %d", vocab, cfg->vocab_size);
        return -1;
    }
    cfg->tied_head = gguf_find_tensor (g, "output.weight") == NULL;
    cfg->has_rope_factors = gguf_find_tensor (g, "rope_freqs.weight") != NULL;
    return 0;
}

//  Looks up a tensor and checks its shape: [cols] for vectors (rows == 0),
//  [cols, rows] for matrices.
static const gguf_tensor_t *
s_tensor (const gguf_t *g, const char *name, int rows, int cols, char *err, size_t err_size)
{
    const gguf_tensor_t *t = gguf_find_tensor (g, name);
    if (!t) {
        snprintf (err, err_size, "missing tensor '%s'", name);
        return NULL;
    }
    bool ok = rows ? (t->n_dims == 2 && t->ne[0] == (uint64_t) cols && t->ne[1] == (uint64_t) rows)
                   : (t->n_dims == 1 && t->ne[0] == (uint64_t) cols);
    if (!ok) {
        if (rows)
            snprintf (err, err_size, "tensor '%s' has shape [%llu, %llu], expected [%d, %d]", name,
                      (unsigned long long) t->ne[0], (unsigned long long) (t->n_dims > 1 ? t->ne[1] : 1),
                      cols, rows);
        else
            snprintf (err, err_size, "tensor '%s' has %d dims [%llu, ...], expected [%d]", name,
                      t->n_dims, (unsigned long long) t->ne[0], cols);
        return NULL;
    }
    return t;
}

//  A vector tensor (norm weights, rope factors), converted to f32.
static float *
s_load_vector (model_t *self, const char *name, int n, char *err, size_t err_size)
{
    const gguf_tensor_t *t = s_tensor (self->gguf, name, 0, n, err, err_size);
    if (!t)
        return NULL;
    const ggml_type_traits_t *tr = ggml_type_traits (t->type);
    if (!tr || !tr->to_float || n % tr->block_size) {
        snprintf (err, err_size, "tensor '%s' has unsupported type %d", name, (int) t->type);
        return NULL;
    }
    float *v = malloc ((size_t) n * sizeof *v);
    if (!v) {
        snprintf (err, err_size, "out of memory for '%s'", name);
        return NULL;
    }
    tr->to_float (t->data, v, n);
    for (int i = 0; i < n; i++)
        if (!isfinite (v[i])) {
            snprintf (err, err_size, "tensor '%s' holds a non-finite value at %d", name, i);
            free (v);
            return NULL;
        }
    self->weight_bytes += (size_t) n * sizeof *v;
    return v;
}

qfmt_t
model_file_format (int ggml_type)
{
    switch (ggml_type) {
        case GGML_TYPE_Q4_0:
        case GGML_TYPE_Q4_1:
        case SPLITMESH_TYPE_W4G128:
            return QFMT_W4;
        case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q5_0:
        case GGML_TYPE_Q5_1:
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q6_K:
            return QFMT_W8;
        default:
            return QFMT_F32;
    }
}

//  qmatrix_new_from_ggml, with splitmesh's W4G128 first rewritten as Q4_1
//  (the group's d and m repeated per 32), which converts to w4 losslessly.
static qmatrix_t *
s_qmatrix_from_ggml (qfmt_t fmt, int type, const void *data, int rows, int cols,
                     char *err, size_t err_size)
{
    if (type != SPLITMESH_TYPE_W4G128)
        return qmatrix_new_from_ggml (fmt, type, data, rows, cols, err, err_size);
    size_t bytes = ggml_row_size (GGML_TYPE_Q4_1, cols) * (size_t) rows;
    void *q41 = bytes ? malloc (bytes) : NULL;
    if (!q41 || ggml_w4g128_to_q4_1 (data, q41, (int64_t) rows * cols)) {
        snprintf (err, err_size, q41 ? "w4g128 needs a multiple of 128 columns" : "out of memory");
        free (q41);
        return NULL;
    }
    qmatrix_t *m = qmatrix_new_from_ggml (fmt, GGML_TYPE_Q4_1, q41, rows, cols, err, err_size);
    free (q41);
    return m;
}

static qmatrix_t *
s_load_matrix (model_t *self, const char *name, qfmt_t fmt, int rows, int cols,
               char *err, size_t err_size)
{
    const gguf_tensor_t *t = s_tensor (self->gguf, name, rows, cols, err, err_size);
    if (!t)
        return NULL;
    char qerr[160] = "";
    qmatrix_t *m = NULL;
    if (self->opts.file_formats) {
        fmt = model_file_format ((int) t->type);
        //  A Q4_K matrix whose sub-block scales and mins are fp16 values
        //  (e.g. written from Q4_1 weights by splitmesh quantize) is Q4_1
        //  in other clothes: it runs at w4 without loss instead of w8.
        if (t->type == GGML_TYPE_Q4_K) {
            void *q41 = malloc (ggml_row_size (GGML_TYPE_Q4_1, cols) * (size_t) rows);
            if (q41 && !ggml_q4_K_to_q4_1_exact (t->data, q41, (int64_t) rows * cols))
                m = qmatrix_new_from_ggml (QFMT_W4, GGML_TYPE_Q4_1, q41, rows, cols, qerr, sizeof qerr);
            free (q41);
        }
    }
    if (!m)
        m = s_qmatrix_from_ggml (fmt, t->type, t->data, rows, cols, qerr, sizeof qerr);
    if (!m) {
        snprintf (err, err_size, "tensor '%s': %s", name, qerr[0] ? qerr : "conversion failed");
        return NULL;
    }
    self->weight_bytes += qmatrix_bytes (m);
    return m;
}

//  Stacks the rows of n matrices that share their input (cols) into one.
//  Same ggml type: the raw rows are concatenated, so the conversion is as
//  lossless as for each alone. Mixed types: each is dequantized to f32 first.
static qmatrix_t *
s_load_stacked (model_t *self, const char *const *names, const int *rows, int n, int cols,
                char *err, size_t err_size)
{
    const gguf_tensor_t *t[4];
    assert (n <= 4);
    int total = 0;
    bool same = true;
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        t[i] = s_tensor (self->gguf, names[i], rows[i], cols, err, err_size);
        if (!t[i])
            return NULL;
        same = same && t[i]->type == t[0]->type;
        total += rows[i];
        bytes += t[i]->nbytes;
    }
    int type = same ? (int) t[0]->type : GGML_TYPE_F32;
    qfmt_t fmt = self->opts.format;
    if (self->opts.file_formats) {
        //  The widest part decides (f32 < w8 < w4 in the enum: smallest wins).
        fmt = QFMT_W4;
        for (int i = 0; i < n; i++) {
            qfmt_t f = model_file_format ((int) t[i]->type);
            if (f < fmt)
                fmt = f;
        }
    }
    if (!same)
        bytes = (size_t) total * cols * sizeof (float);
    uint8_t *buf = malloc (bytes);
    if (!buf) {
        snprintf (err, err_size, "out of memory stacking '%s'", names[0]);
        return NULL;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (same) {
            memcpy (buf + off, t[i]->data, t[i]->nbytes);
            off += t[i]->nbytes;
            continue;
        }
        const ggml_type_traits_t *tr = ggml_type_traits (t[i]->type);
        if (!tr || !tr->to_float) {
            snprintf (err, err_size, "tensor '%s' has unsupported type %d", names[i], (int) t[i]->type);
            free (buf);
            return NULL;
        }
        tr->to_float (t[i]->data, (float *) (buf + off), (int64_t) rows[i] * cols);
        off += (size_t) rows[i] * cols * sizeof (float);
    }
    char qerr[160] = "";
    qmatrix_t *m = s_qmatrix_from_ggml (fmt, type, buf, total, cols, qerr, sizeof qerr);
    free (buf);
    if (!m) {
        snprintf (err, err_size, "tensor '%s'%s: %s", names[0], n > 1 ? " (stacked)" : "",
                  qerr[0] ? qerr : "conversion failed");
        return NULL;
    }
    self->weight_bytes += qmatrix_bytes (m);
    return m;
}

static int
s_load_layer (model_t *self, int l, char *err, size_t err_size)
{
    const model_config_t *c = &self->config;
    model_layer_t *L = &self->w.layers[l];
    qfmt_t f = self->opts.format;
    int q_dim = c->n_heads * c->head_dim;
    char n[5][96];
    const char *suffix[5] = { "attn_q.weight", "attn_k.weight", "attn_v.weight",
                              "ffn_gate.weight", "ffn_up.weight" };
    for (int i = 0; i < 5; i++)
        snprintf (n[i], sizeof n[i], "blk.%d.%s", l, suffix[i]);
    const char *qkv[3] = { n[0], n[1], n[2] }, *gate_up[2] = { n[3], n[4] };
    int qkv_rows[3] = { q_dim, c->kv_dim, c->kv_dim }, gate_up_rows[2] = { c->hidden_dim, c->hidden_dim };
    char name[96];
#define S_NAME(suffix) (snprintf (name, sizeof name, "blk.%d.%s", l, suffix), name)
    if (!(L->attn_norm = s_load_vector (self, S_NAME ("attn_norm.weight"), c->dim, err, err_size))
    ||  !(L->wqkv = s_load_stacked (self, qkv, qkv_rows, 3, c->dim, err, err_size))
    ||  !(L->wo = s_load_matrix (self, S_NAME ("attn_output.weight"), f, c->dim, q_dim, err, err_size))
    ||  !(L->ffn_norm = s_load_vector (self, S_NAME ("ffn_norm.weight"), c->dim, err, err_size))
    ||  !(L->w_gate_up = s_load_stacked (self, gate_up, gate_up_rows, 2, c->dim, err, err_size))
    ||  !(L->w_down = s_load_matrix (self, S_NAME ("ffn_down.weight"), f, c->dim, c->hidden_dim, err, err_size)))
        return -1;
#undef S_NAME
    return 0;
}

//  RoPE angle per position for each rotated pair i: freq_scale * base^(-2i/d)
//  / factor_i (llama3 factors, when the file has rope_freqs.weight).
static int
s_load_rope (model_t *self, char *err, size_t err_size)
{
    const model_config_t *c = &self->config;
    int half = c->head_dim / 2;
    float *factors = NULL;
    if (c->has_rope_factors) {
        factors = s_load_vector (self, "rope_freqs.weight", half, err, err_size);
        if (!factors)
            return -1;
        self->weight_bytes -= (size_t) half * sizeof (float);
    }
    self->w.rope_inv_freq = malloc ((size_t) half * sizeof (float));
    if (!self->w.rope_inv_freq) {
        free (factors);
        snprintf (err, err_size, "out of memory");
        return -1;
    }
    for (int i = 0; i < half; i++) {
        double f = pow ((double) c->rope_freq_base, -2.0 * i / c->head_dim) * c->rope_freq_scale;
        if (factors)
            f /= factors[i];
        self->w.rope_inv_freq[i] = (float) f;
    }
    free (factors);
    return 0;
}

model_t *
model_load (const char *path, const model_options_t *opts, char *err, size_t err_size)
{
    gguf_t *g = gguf_open (path, err, err_size);
    if (!g)
        return NULL;
    return model_load_gguf (&g, opts, err, err_size);
}

model_t *
model_load_gguf (gguf_t **gguf_p, const model_options_t *opts, char *err, size_t err_size)
{
    assert (gguf_p);
    model_t *self = calloc (1, sizeof *self);
    if (!self) {
        gguf_destroy (gguf_p);
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->gguf = *gguf_p;
    *gguf_p = NULL;
    self->opts = opts ? *opts : model_options_default ();
    model_config_t *c = &self->config;
    model_options_t *o = &self->opts;
    if (!self->gguf || s_read_config (self->gguf, c, err, err_size))
        goto failed;
    if (o->format < 0 || o->format >= QFMT_COUNT) {
        snprintf (err, err_size, "unknown weight format %d", (int) o->format);
        goto failed;
    }
    if (o->n_threads < 1 || o->n_threads > 256) {
        snprintf (err, err_size, "thread count %d out of range [1, 256]", o->n_threads);
        goto failed;
    }
    if (o->last_layer < 0)
        o->last_layer = c->n_layers;
    if (o->first_layer < 0 || o->first_layer > o->last_layer || o->last_layer > c->n_layers) {
        snprintf (err, err_size, "layer range [%d, %d) is not within [0, %d]",
                  o->first_layer, o->last_layer, c->n_layers);
        goto failed;
    }
    self->w.layers = calloc ((size_t) c->n_layers, sizeof *self->w.layers);
    if (!self->w.layers) {
        snprintf (err, err_size, "out of memory");
        goto failed;
    }
    //  The vocabulary projection is the most sensitive matrix: it stays at
    //  8 bits at least (llama.cpp's Q4 files keep it at Q8_0 too).
    qfmt_t embd_fmt = o->format == QFMT_W4 ? QFMT_W8 : o->format;
    if (o->load_embeddings || (o->load_head && c->tied_head)) {
        self->w.token_embd = s_load_matrix (self, "token_embd.weight", embd_fmt,
                                            c->vocab_size, c->dim, err, err_size);
        if (!self->w.token_embd)
            goto failed;
    }
    if (o->load_head) {
        self->w.output_norm = s_load_vector (self, "output_norm.weight", c->dim, err, err_size);
        if (!self->w.output_norm)
            goto failed;
        if (c->tied_head)
            self->w.output = self->w.token_embd;
        else {
            self->w.output = s_load_matrix (self, "output.weight", embd_fmt, c->vocab_size, c->dim,
                                            err, err_size);
            if (!self->w.output)
                goto failed;
        }
    }
    for (int l = o->first_layer; l < o->last_layer; l++)
        if (s_load_layer (self, l, err, err_size))
            goto failed;
    if (s_load_rope (self, err, err_size))
        goto failed;
    self->pool = threadpool_new (o->n_threads);
    if (!self->pool) {
        snprintf (err, err_size, "cannot start %d threads", o->n_threads);
        goto failed;
    }
    return self;

failed:
    model_destroy (&self);
    return NULL;
}

static void
s_run_free (model_run_t *r)
{
    free (r->xb);
    free (r->qkv);
    free (r->q);
    free (r->att);
    free (r->hb);
    free (r->hb2);
    free (r->rope_cos);
    free (r->rope_sin);
    free (r->scores);
    memset (r, 0, sizeof *r);
}

void
model_destroy (model_t **self_p)
{
    assert (self_p);
    model_t *self = *self_p;
    if (!self)
        return;
    model_weights_t *w = &self->w;
    if (w->layers)
        for (int l = 0; l < self->config.n_layers; l++) {
            model_layer_t *L = &w->layers[l];
            free (L->attn_norm);
            free (L->ffn_norm);
            qmatrix_destroy (&L->wqkv);
            qmatrix_destroy (&L->wo);
            qmatrix_destroy (&L->w_gate_up);
            qmatrix_destroy (&L->w_down);
        }
    free (w->layers);
    if (w->output != w->token_embd)
        qmatrix_destroy (&w->output);
    qmatrix_destroy (&w->token_embd);
    free (w->output_norm);
    free (w->rope_inv_freq);
    s_run_free (&self->run);
    threadpool_destroy (&self->pool);
    gguf_destroy (&self->gguf);
    free (self);
    *self_p = NULL;
}

const model_config_t *
model_config (const model_t *self)
{
    assert (self);
    return &self->config;
}

const model_options_t *
model_options (const model_t *self)
{
    assert (self);
    return &self->opts;
}

const gguf_t *
model_gguf (const model_t *self)
{
    assert (self);
    return self->gguf;
}

size_t
model_weight_bytes (const model_t *self)
{
    assert (self);
    return self->weight_bytes;
}

threadpool_t *
model_pool (const model_t *self)
{
    assert (self);
    return self->pool;
}

const char *
model_error (const model_t *self)
{
    assert (self);
    return self->error;
}
