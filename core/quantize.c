/*  quantize.c: sensitivity measurement, budgeted assignment and GGUF writing
    for `splitmesh quantize` (see quantize.h for the method).

    The measurement swaps one fused matrix of a loaded F32 model for its
    quantized-then-dequantized copy (model_impl.h gives the slots), re-runs
    the layers from that matrix's layer on from cached layer inputs, and
    restores the original: a run costs the remaining layers plus the head,
    not a model load.
*/
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml_types.h"
#include "gguf.h"
#include "gguf_write.h"
#include "kvcache.h"
#include "model.h"
#include "model_impl.h"
#include "quantize.h"
#include "tokenizer.h"

const int quantize_candidates[QUANTIZE_N_CANDIDATES] = {
    SPLITMESH_TYPE_W4G128, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
    GGML_TYPE_Q5_1, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0, GGML_TYPE_F16
};

#define S_MAX_TEXT (64u << 20)

typedef enum { S_EMBD, S_OUTPUT, S_QKV, S_WO, S_GATE_UP, S_DOWN } s_kind_t;

typedef struct {
    char name[64];
    s_kind_t kind;
    int layer;                  //  -1 for token_embd / output
    int n_parts;
    const gguf_tensor_t *parts[3];
    int rows;                   //  rows of all parts together
    int cols;
    uint64_t bytes[QUANTIZE_N_CANDIDATES];     //  0: candidate does not apply
    double kl[QUANTIZE_N_CANDIDATES];           //  NAN: not known (not measured)
    int choice;                 //  index into quantize_candidates
} s_unit_t;

struct _quantize_plan_t {
    gguf_t *gguf;
    s_unit_t *units;
    int n_units;
    uint64_t f32_bytes;         //  every tensor at 4 bytes per element
    uint64_t other_bytes;       //  tensors outside the units, copied as is
    int calib_tokens;
    int measured;               //  measurements run (not from the cache)
    bool tied;
    bool allow_splitmesh;
};

quantize_options_t
quantize_options_default (void)
{
    return (quantize_options_t) {
        .calib_path = NULL, .calib_seqs = 8, .calib_len = 64, .n_threads = 2,
        .allow_splitmesh_types = false, .cache_path = NULL
    };
}

//  Adds a unit of n_parts tensors named blk.L.<suffix> (or as given);
//  returns 0, or -1 with a message when a tensor is missing or misshapen.
static int
s_add_unit (quantize_plan_t *self, const char *unit_name, s_kind_t kind, int layer,
            const char *const *names, int n_parts, char *err, size_t err_size)
{
    s_unit_t *u = &self->units[self->n_units];
    memset (u, 0, sizeof *u);
    snprintf (u->name, sizeof u->name, "%s", unit_name);
    u->kind = kind;
    u->layer = layer;
    u->n_parts = n_parts;
    for (int i = 0; i < n_parts; i++) {
        const gguf_tensor_t *t = gguf_find_tensor (self->gguf, names[i]);
        if (!t) {
            snprintf (err, err_size, "tensor '%s' is missing", names[i]);
            return -1;
        }
        if (t->n_dims != 2 || t->ne[0] % 32 || t->ne[0] > INT32_MAX || t->ne[1] > INT32_MAX
        ||  (i > 0 && (int) t->ne[0] != u->cols)) {
            snprintf (err, err_size, "tensor '%s' has an unsupported shape", names[i]);
            return -1;
        }
        const ggml_type_traits_t *tr = ggml_type_traits (t->type);
        if (!tr || !tr->to_float) {
            snprintf (err, err_size, "tensor '%s' has unsupported type %d", names[i], (int) t->type);
            return -1;
        }
        u->parts[i] = t;
        u->cols = (int) t->ne[0];
        u->rows += (int) t->ne[1];
    }
    for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++) {
        int type = quantize_candidates[c];
        //  Without measurement every applicable KL is 0; with it, KLs are
        //  filled in by s_measure (NAN: not measured).
        u->kl[c] = 0;
        if (ggml_type_is_splitmesh (type) && !self->allow_splitmesh)
            continue;
        if (ggml_row_size (type, (int64_t) u->cols) == 0)
            continue;               //  the row is not whole blocks of the type
        for (int i = 0; i < n_parts; i++)
            u->bytes[c] += ggml_row_size (type, (int64_t) u->cols) * u->parts[i]->ne[1];
    }
    self->n_units++;
    return 0;
}

static int
s_find_units (quantize_plan_t *self, char *err, size_t err_size)
{
    uint32_t n_layers = 0;
    char key[96];
    const char *arch = NULL;
    size_t arch_len = 0;
    if (!gguf_get_str (self->gguf, "general.architecture", &arch, &arch_len)
    ||  arch_len != 5 || memcmp (arch, "llama", 5)) {
        snprintf (err, err_size, "not a llama model file (general.architecture)");
        return -1;
    }
    snprintf (key, sizeof key, "llama.block_count");
    if (!gguf_get_u32 (self->gguf, key, &n_layers) || n_layers < 1 || n_layers > 1024) {
        snprintf (err, err_size, "llama.block_count is missing or out of range");
        return -1;
    }
    self->units = calloc ((size_t) n_layers * 4 + 2, sizeof *self->units);
    if (!self->units) {
        snprintf (err, err_size, "out of memory");
        return -1;
    }
    const char *embd[1] = { "token_embd.weight" };
    if (s_add_unit (self, "token_embd", S_EMBD, -1, embd, 1, err, err_size))
        return -1;
    self->tied = !gguf_find_tensor (self->gguf, "output.weight");
    if (!self->tied) {
        const char *out[1] = { "output.weight" };
        if (s_add_unit (self, "output", S_OUTPUT, -1, out, 1, err, err_size))
            return -1;
    }
    for (int l = 0; l < (int) n_layers; l++) {
        char n[6][96], uname[64];
        const char *suf[6] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up" };
        for (int i = 0; i < 6; i++)
            snprintf (n[i], sizeof n[i], "blk.%d.%s.weight", l, suf[i]);
        const char *qkv[3] = { n[0], n[1], n[2] }, *wo[1] = { n[3] }, *gu[2] = { n[4], n[5] };
        char down[96];
        snprintf (down, sizeof down, "blk.%d.ffn_down.weight", l);
        const char *dn[1] = { down };
        snprintf (uname, sizeof uname, "blk.%d.attn_qkv", l);
        if (s_add_unit (self, uname, S_QKV, l, qkv, 3, err, err_size))
            return -1;
        snprintf (uname, sizeof uname, "blk.%d.attn_output", l);
        if (s_add_unit (self, uname, S_WO, l, wo, 1, err, err_size))
            return -1;
        snprintf (uname, sizeof uname, "blk.%d.ffn_gate_up", l);
        if (s_add_unit (self, uname, S_GATE_UP, l, gu, 2, err, err_size))
            return -1;
        snprintf (uname, sizeof uname, "blk.%d.ffn_down", l);
        if (s_add_unit (self, uname, S_DOWN, l, dn, 1, err, err_size))
            return -1;
    }
    return 0;
}

//  The unit a tensor belongs to, or NULL.
static s_unit_t *
s_unit_of (quantize_plan_t *self, const gguf_tensor_t *t)
{
    for (int u = 0; u < self->n_units; u++)
        for (int i = 0; i < self->units[u].n_parts; i++)
            if (self->units[u].parts[i] == t)
                return &self->units[u];
    return NULL;
}

//  Dequantized rows of all parts of a unit, optionally round-tripped through
//  ggml type; NULL when out of memory. Caller frees.
static float *
s_unit_values (const s_unit_t *u, int type)
{
    float *out = malloc ((size_t) u->rows * u->cols * sizeof (float));
    void *q = NULL;
    if (!out)
        return NULL;
    size_t off = 0;
    for (int i = 0; i < u->n_parts; i++) {
        int64_t n = (int64_t) u->parts[i]->n_elements;
        float *dst = out + off;
        ggml_dequantize (u->parts[i]->type, u->parts[i]->data, dst, n);
        if (type >= 0) {
            size_t qn = ggml_row_size (type, u->cols) * u->parts[i]->ne[1];
            void *nq = realloc (q, qn);
            if (!nq) {
                free (q);
                free (out);
                return NULL;
            }
            q = nq;
            ggml_quantize (type, dst, q, n);
            ggml_dequantize (type, q, dst, n);
        }
        off += (size_t) n;
    }
    free (q);
    return out;
}

//  ---------------------------------------------------------------------
//  Sensitivity

//  The model's matrix slots a unit occupies (two for a tied embedding).
static int
s_slots (model_t *m, const s_unit_t *u, qmatrix_t ***slots)
{
    model_layer_t *L = u->layer >= 0 ? &m->w.layers[u->layer] : NULL;
    switch (u->kind) {
        case S_EMBD:
            slots[0] = &m->w.token_embd;
            if (m->w.output == m->w.token_embd) {
                slots[1] = &m->w.output;
                return 2;
            }
            return 1;
        case S_OUTPUT:  slots[0] = &m->w.output; return 1;
        case S_QKV:     slots[0] = &L->wqkv; return 1;
        case S_WO:      slots[0] = &L->wo; return 1;
        case S_GATE_UP: slots[0] = &L->w_gate_up; return 1;
        case S_DOWN:    slots[0] = &L->w_down; return 1;
    }
    return 0;
}

//  Log-softmax of n logits into out (doubles for the KL sums).
static void
s_log_softmax (const float *logits, int n, float *out)
{
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp ((double) logits[i] - mx);
    float lse = mx + (float) log (sum);
    for (int i = 0; i < n; i++)
        out[i] = logits[i] - lse;
}

typedef struct {
    model_t *model;
    kvcache_t *kv;
    int n_seqs, len, dim, vocab, n_layers;
    int32_t *tokens;            //  n_seqs x len
    float *xs;                  //  n_seqs x (n_layers + 1) x len x dim: layer inputs
    float *base_p;              //  n_seqs x len x vocab: baseline probabilities
    double *base_negent;        //  n_seqs x len: sum p log p of the baseline
    float *x;                   //  len x dim scratch
    float *logits;              //  len x vocab scratch
} s_calib_t;

//  Runs sequence s from layer `from` (0..n_layers; -1: from the embedding)
//  to the logits. With keep, stores layer inputs into xs.
static int
s_run (s_calib_t *c, int s, int from, bool keep)
{
    size_t xsz = (size_t) c->len * c->dim;
    float *xs = c->xs + (size_t) s * (c->n_layers + 1) * xsz;
    if (from < 0) {
        if (model_embed (c->model, c->tokens + (size_t) s * c->len, c->len, c->x))
            return -1;
        from = 0;
    }
    else
        memcpy (c->x, xs + (size_t) from * xsz, xsz * sizeof (float));
    kvcache_truncate (c->kv, 0);
    for (int l = from; l < c->n_layers; l++) {
        if (keep)
            memcpy (xs + (size_t) l * xsz, c->x, xsz * sizeof (float));
        if (model_forward (c->model, c->kv, l, l + 1, 0, c->len, c->x))
            return -1;
    }
    if (keep)
        memcpy (xs + (size_t) c->n_layers * xsz, c->x, xsz * sizeof (float));
    return model_head (c->model, c->x, c->len, c->logits);
}

//  KL (baseline || current) summed over the sequence's positions into *kl.
//  With z the current logits and p the baseline's probabilities,
//  KL = sum p log p - sum p z + logsumexp (z): one expf pass per position.
static void
s_kl (s_calib_t *c, int s, double *kl)
{
    for (int t = 0; t < c->len; t++) {
        const float *p = c->base_p + ((size_t) s * c->len + t) * c->vocab;
        const float *z = c->logits + (size_t) t * c->vocab;
        float mx = z[0];
        for (int i = 1; i < c->vocab; i++)
            mx = z[i] > mx ? z[i] : mx;
        //  Double sums: the KL of a small perturbation (1e-4) is far below
        //  the rounding of float sums over a 49152-entry vocabulary.
        double se = 0, pz = 0, ps = 0;
        for (int i = 0; i < c->vocab; i++) {
            se += expf (z[i] - mx);
            pz += (double) p[i] * (z[i] - mx);
            ps += p[i];
        }
        *kl += c->base_negent[(size_t) s * c->len + t] - pz + ps * log (se);
    }
}

static int
s_read_tokens (const char *path, const gguf_t *g, int need, int32_t **out, char *err, size_t err_size)
{
    int rc = -1;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    tokenizer_t *tok = NULL;
    FILE *f = fopen (path, "rb");
    if (!f) {
        snprintf (err, err_size, "cannot open calibration text '%s': %s", path, strerror (errno));
        return -1;
    }
    //  About 4 bytes per token in English text; read generously.
    size_t cap = (size_t) need * 16 + 4096;
    if (cap > S_MAX_TEXT)
        cap = S_MAX_TEXT;
    text = malloc (cap);
    if (!text) {
        snprintf (err, err_size, "out of memory");
        goto cleanup;
    }
    size_t len = fread (text, 1, cap, f);
    if (!(tok = tokenizer_new_from_gguf (g, err, err_size)))
        goto cleanup;
    if (tokenizer_encode (tok, text, len, false, false, &ids, &n_ids, err, err_size))
        goto cleanup;
    if ((int64_t) n_ids < need) {
        snprintf (err, err_size, "calibration text '%s' gives %zu tokens, %d needed",
                  path, n_ids, need);
        goto cleanup;
    }
    *out = ids;
    ids = NULL;
    rc = 0;
cleanup:
    fclose (f);
    free (text);
    free (ids);
    tokenizer_destroy (&tok);
    return rc;
}

//  The sensitivity cache: a header line naming the model (file name and
//  size) and the calibration, then one "unit type kl" line per measurement.
static void
s_cache_header (const char *model_path, const quantize_options_t *o, char *out, size_t size)
{
    FILE *f = fopen (model_path, "rb");
    long long bytes = -1;
    if (f && fseek (f, 0, SEEK_END) == 0)
        bytes = (long long) ftell (f);
    if (f)
        fclose (f);
    const char *mb = strrchr (model_path, '/'), *cb = strrchr (o->calib_path, '/');
    snprintf (out, size, "# splitmesh quantize sensitivity v1 model=%s bytes=%lld calib=%s seqs=%d len=%d",
              mb ? mb + 1 : model_path, bytes, cb ? cb + 1 : o->calib_path, o->calib_seqs, o->calib_len);
}

//  Loads matching cached KLs into known[u][c]; returns the open (append)
//  cache file, or NULL without a cache path. A cache of another model or
//  calibration is started afresh.
static FILE *
s_cache_open (quantize_plan_t *self, const char *model_path, const quantize_options_t *o,
              bool *known, char *err, size_t err_size)
{
    if (!o->cache_path)
        return NULL;
    char header[512], line[512];
    s_cache_header (model_path, o, header, sizeof header);
    bool match = false;
    FILE *f = fopen (o->cache_path, "r");
    if (f) {
        if (fgets (line, sizeof line, f)) {
            line[strcspn (line, "\n")] = 0;
            match = !strcmp (line, header);
        }
        while (match && fgets (line, sizeof line, f)) {
            char uname[64], tname[16];
            double kl;
            if (sscanf (line, "%63s %15s %lf", uname, tname, &kl) != 3 || !isfinite (kl))
                continue;
            int type = ggml_type_from_name (tname);
            for (int u = 0; u < self->n_units; u++)
                if (!strcmp (self->units[u].name, uname))
                    for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++)
                        if (quantize_candidates[c] == type && self->units[u].bytes[c]) {
                            self->units[u].kl[c] = kl < 0 ? 0 : kl;
                            known[u * QUANTIZE_N_CANDIDATES + c] = true;
                        }
        }
        fclose (f);
    }
    f = fopen (o->cache_path, match ? "a" : "w");
    if (!f) {
        snprintf (err, err_size, "cannot write the sensitivity cache '%s': %s", o->cache_path,
                  strerror (errno));
        return (FILE *) -1;
    }
    if (!match)
        fprintf (f, "%s\n", header);
    fflush (f);
    return f;
}

//  Candidate indices of a unit that apply, cheapest first.
static int
s_order (const s_unit_t *u, int *order)
{
    int n = 0;
    for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++)
        if (u->bytes[c])
            order[n++] = c;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && u->bytes[order[j]] < u->bytes[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    return n;
}

static int
s_measure (quantize_plan_t *self, const char *model_path, const quantize_options_t *o,
           char *err, size_t err_size)
{
    int rc = -1;
    s_calib_t c = { 0 };
    FILE *cache = NULL;
    float *src = NULL;
    bool *known = calloc ((size_t) self->n_units * QUANTIZE_N_CANDIDATES, sizeof *known);
    if (!known) {
        snprintf (err, err_size, "out of memory");
        return -1;
    }
    for (int u = 0; u < self->n_units; u++)
        for (int ci = 0; ci < QUANTIZE_N_CANDIDATES; ci++)
            self->units[u].kl[ci] = NAN;
    cache = s_cache_open (self, model_path, o, known, err, err_size);
    if (cache == (FILE *) -1) {
        cache = NULL;
        goto cleanup;
    }
    //  Which (unit, candidate) pairs need a model run: in each unit's
    //  cheapest-first order, up to the first candidate that reproduces the
    //  source values exactly (KL 0); dearer ones cannot lower the KL.
    //  F16 is taken as lossless (KL 0) and not measured.
    int total = 0, done = 0;
    for (int u = 0; u < self->n_units; u++) {
        s_unit_t *unit = &self->units[u];
        int order[QUANTIZE_N_CANDIDATES], n = s_order (unit, order);
        for (int k = 0; k < n; k++) {
            int ci = order[k];
            if (quantize_candidates[ci] == GGML_TYPE_F16) {
                unit->kl[ci] = 0;
                break;
            }
            if (known[u * QUANTIZE_N_CANDIDATES + ci]) {
                if (unit->kl[ci] == 0)
                    break;
                continue;
            }
            if (!src)
                src = s_unit_values (unit, -1);
            float *v = s_unit_values (unit, quantize_candidates[ci]);
            if (!src || !v) {
                free (v);
                snprintf (err, err_size, "out of memory");
                goto cleanup;
            }
            bool exact = !memcmp (src, v, (size_t) unit->rows * unit->cols * sizeof (float));
            free (v);
            if (exact) {
                unit->kl[ci] = 0;
                known[u * QUANTIZE_N_CANDIDATES + ci] = true;
                if (cache) {
                    fprintf (cache, "%s %s 0\n", unit->name, ggml_type_traits (quantize_candidates[ci])->name);
                    fflush (cache);
                }
                break;
            }
            total++;
        }
        free (src);
        src = NULL;
    }
    free (src);
    src = NULL;
    self->calib_tokens = o->calib_seqs * o->calib_len;
    if (total == 0) {
        rc = 0;
        goto cleanup;
    }

    model_options_t mo = model_options_default ();
    mo.n_threads = o->n_threads;
    c.model = model_load (model_path, &mo, err, err_size);
    if (!c.model)
        goto cleanup;
    const model_config_t *cfg = model_config (c.model);
    c.n_seqs = o->calib_seqs;
    c.len = o->calib_len;
    c.dim = cfg->dim;
    c.vocab = cfg->vocab_size;
    c.n_layers = cfg->n_layers;
    if (c.len > cfg->context_length) {
        snprintf (err, err_size, "calibration length %d exceeds the context length %d",
                  c.len, cfg->context_length);
        goto cleanup;
    }
    if (s_read_tokens (o->calib_path, model_gguf (c.model), c.n_seqs * c.len, &c.tokens,
                       err, err_size))
        goto cleanup;
    for (int i = 0; i < c.n_seqs * c.len; i++)
        if (c.tokens[i] < 0 || c.tokens[i] >= c.vocab) {
            snprintf (err, err_size, "calibration token %d out of the model's vocabulary", c.tokens[i]);
            goto cleanup;
        }
    size_t xsz = (size_t) c.len * c.dim;
    c.kv = kvcache_new (c.model, c.len);
    c.xs = malloc ((size_t) c.n_seqs * (c.n_layers + 1) * xsz * sizeof (float));
    c.base_p = malloc ((size_t) c.n_seqs * c.len * c.vocab * sizeof (float));
    c.base_negent = malloc ((size_t) c.n_seqs * c.len * sizeof (double));
    c.x = malloc (xsz * sizeof (float));
    c.logits = malloc ((size_t) c.len * c.vocab * sizeof (float));
    if (!c.kv || !c.xs || !c.base_p || !c.base_negent || !c.x || !c.logits) {
        snprintf (err, err_size, "out of memory for calibration");
        goto cleanup;
    }
    for (int s = 0; s < c.n_seqs; s++) {
        if (s_run (&c, s, -1, true))
            goto model_failed;
        for (int t = 0; t < c.len; t++) {
            float *p = c.base_p + ((size_t) s * c.len + t) * c.vocab;
            s_log_softmax (c.logits + (size_t) t * c.vocab, c.vocab, p);
            double ne = 0;
            for (int i = 0; i < c.vocab; i++) {
                double lp = p[i];
                p[i] = (float) exp (lp);
                ne += (double) p[i] * lp;
            }
            c.base_negent[(size_t) s * c.len + t] = ne;
        }
    }
    for (int u = 0; u < self->n_units; u++) {
        s_unit_t *unit = &self->units[u];
        int order[QUANTIZE_N_CANDIDATES], n = s_order (unit, order);
        qmatrix_t **slots[2] = { NULL, NULL };
        int n_slots = s_slots (c.model, unit, slots);
        qmatrix_t *orig = *slots[0];
        int from = unit->kind == S_EMBD ? -1 : unit->kind == S_OUTPUT ? c.n_layers : unit->layer;
        for (int k = 0; k < n; k++) {
            int ci = order[k];
            if (unit->kl[ci] == 0)
                break;              //  exact (or F16): dearer ones are dominated
            if (known[u * QUANTIZE_N_CANDIDATES + ci])
                continue;
            const char *tname = ggml_type_traits (quantize_candidates[ci])->name;
            float *v = s_unit_values (unit, quantize_candidates[ci]);
            qmatrix_t *qm = v ? qmatrix_new_from_f32 (QFMT_F32, v, unit->rows, unit->cols) : NULL;
            free (v);
            if (!qm) {
                snprintf (err, err_size, "cannot build the %s copy of %s", tname, unit->name);
                goto cleanup;
            }
            for (int i = 0; i < n_slots; i++)
                *slots[i] = qm;
            double kl = 0;
            int bad = 0;
            for (int s = 0; s < c.n_seqs && !bad; s++) {
                if (s_run (&c, s, from, false))
                    bad = 1;
                else
                    s_kl (&c, s, &kl);
            }
            for (int i = 0; i < n_slots; i++)
                *slots[i] = orig;
            qmatrix_destroy (&qm);
            if (bad)
                goto model_failed;
            kl /= (double) c.n_seqs * c.len;
            unit->kl[ci] = kl < 0 ? 0 : kl;     //  rounding below zero
            known[u * QUANTIZE_N_CANDIDATES + ci] = true;
            self->measured++;
            if (cache) {
                fprintf (cache, "%s %s %.9g\n", unit->name, tname, unit->kl[ci]);
                fflush (cache);
            }
            if (o->progress)
                o->progress (o->progress_arg, ++done, total, unit->name);
        }
    }
    rc = 0;
    goto cleanup;
model_failed:
    snprintf (err, err_size, "model evaluation failed: %s", model_error (c.model));
cleanup:
    if (cache)
        fclose (cache);
    free (src);
    free (known);
    free (c.tokens);
    free (c.xs);
    free (c.base_p);
    free (c.base_negent);
    free (c.x);
    free (c.logits);
    kvcache_destroy (&c.kv);
    model_destroy (&c.model);
    return rc;
}

//  ---------------------------------------------------------------------

quantize_plan_t *
quantize_plan_new (const char *model_path, const quantize_options_t *opts,
                   char *err, size_t err_size)
{
    quantize_options_t o = opts ? *opts : quantize_options_default ();
    if (o.calib_seqs < 1 || o.calib_seqs > 64 || o.calib_len < 2 || o.calib_len > 4096
    ||  o.n_threads < 1 || o.n_threads > 256) {
        snprintf (err, err_size, "calibration sequences [1, 64], length [2, 4096] and "
                  "threads [1, 256] expected");
        return NULL;
    }
    quantize_plan_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->allow_splitmesh = o.allow_splitmesh_types;
    if (!(self->gguf = gguf_open (model_path, err, err_size)))
        goto failed;
    if (s_find_units (self, err, err_size))
        goto failed;
    for (int i = 0; i < gguf_tensor_count (self->gguf); i++) {
        const gguf_tensor_t *t = gguf_tensor_at (self->gguf, i);
        self->f32_bytes += t->n_elements * 4;
        if (!s_unit_of (self, t))
            self->other_bytes += t->nbytes;
    }
    if (o.calib_path && s_measure (self, model_path, &o, err, err_size))
        goto failed;
    return self;
failed:
    quantize_plan_destroy (&self);
    return NULL;
}

void
quantize_plan_destroy (quantize_plan_t **self_p)
{
    assert (self_p);
    quantize_plan_t *self = *self_p;
    if (!self)
        return;
    free (self->units);
    gguf_destroy (&self->gguf);
    free (self);
    *self_p = NULL;
}

int
quantize_parse_budget (const quantize_plan_t *self, const char *text, uint64_t *bytes,
                       char *err, size_t err_size)
{
    if (!text || !*text) {
        snprintf (err, err_size, "empty budget: give bytes (90000000, 90MB, 86MiB) or a ratio (6x)");
        return -1;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod (text, &end);
    if (end == text || errno || !isfinite (v) || v <= 0) {
        snprintf (err, err_size, "bad budget '%s': give bytes (90000000, 90MB, 86MiB) or a ratio (6x)", text);
        return -1;
    }
    double b;
    if (!strcmp (end, "x") || !strcmp (end, "X")) {
        if (v < 1) {
            snprintf (err, err_size, "bad budget '%s': a ratio is at least 1x", text);
            return -1;
        }
        b = (double) self->f32_bytes / v;
    }
    else if (!*end || !strcmp (end, "B"))
        b = v;
    else if (!strcmp (end, "kB") || !strcmp (end, "KB"))
        b = v * 1e3;
    else if (!strcmp (end, "MB"))
        b = v * 1e6;
    else if (!strcmp (end, "GB"))
        b = v * 1e9;
    else if (!strcmp (end, "KiB"))
        b = v * 1024.0;
    else if (!strcmp (end, "MiB"))
        b = v * 1048576.0;
    else if (!strcmp (end, "GiB"))
        b = v * 1073741824.0;
    else {
        snprintf (err, err_size, "bad budget '%s': unknown suffix '%s' (x, B, kB, MB, GB, KiB, MiB, GiB)",
                  text, end);
        return -1;
    }
    if (b < 1 || b > 1e18) {
        snprintf (err, err_size, "bad budget '%s': out of range", text);
        return -1;
    }
    *bytes = (uint64_t) b;
    return 0;
}

//  A candidate the assignment may choose: it applies and its KL is known.
static bool
s_usable (const s_unit_t *u, int c)
{
    return u->bytes[c] > 0 && !isnan (u->kl[c]);
}

uint64_t
quantize_plan_bytes (const quantize_plan_t *self)
{
    uint64_t b = self->other_bytes;
    for (int u = 0; u < self->n_units; u++)
        b += self->units[u].bytes[self->units[u].choice];
    return b;
}

uint64_t
quantize_plan_min_bytes (const quantize_plan_t *self)
{
    uint64_t b = self->other_bytes;
    for (int u = 0; u < self->n_units; u++) {
        uint64_t m = UINT64_MAX;
        for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++)
            if (s_usable (&self->units[u], c) && self->units[u].bytes[c] < m)
                m = self->units[u].bytes[c];
        b += m;
    }
    return b;
}

int
quantize_plan_assign (quantize_plan_t *self, uint64_t budget, char *err, size_t err_size)
{
    //  Cheapest candidate everywhere (ties: the lower KL).
    for (int u = 0; u < self->n_units; u++) {
        s_unit_t *unit = &self->units[u];
        unit->choice = -1;
        for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++)
            if (s_usable (unit, c)
            && (unit->choice < 0 || unit->bytes[c] < unit->bytes[unit->choice]
            || (unit->bytes[c] == unit->bytes[unit->choice] && unit->kl[c] < unit->kl[unit->choice])))
                unit->choice = c;
        assert (unit->choice >= 0);     //  F16 always applies
    }
    uint64_t used = quantize_plan_bytes (self);
    if (used > budget) {
        snprintf (err, err_size, "budget of %llu bytes (%.2fx smaller than F32) is below the "
                  "smallest assignment, %llu bytes (%.2fx)", (unsigned long long) budget,
                  (double) self->f32_bytes / (double) budget, (unsigned long long) used,
                  (double) self->f32_bytes / (double) used);
        return -1;
    }
    //  Greedy: best KL decrease per added byte that fits, until none does.
    while (true) {
        int best_u = -1, best_c = -1;
        double best = 0;
        for (int u = 0; u < self->n_units; u++) {
            s_unit_t *unit = &self->units[u];
            for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++) {
                uint64_t cur = unit->bytes[unit->choice];
                if (!s_usable (unit, c) || unit->bytes[c] <= cur || unit->kl[c] >= unit->kl[unit->choice]
                ||  used - cur + unit->bytes[c] > budget)
                    continue;
                double gain = (unit->kl[unit->choice] - unit->kl[c]) / (double) (unit->bytes[c] - cur);
                if (gain > best) {
                    best = gain;
                    best_u = u;
                    best_c = c;
                }
            }
        }
        if (best_u < 0)
            break;
        s_unit_t *unit = &self->units[best_u];
        used = used - unit->bytes[unit->choice] + unit->bytes[best_c];
        unit->choice = best_c;
    }
    return 0;
}

int
quantize_plan_set_uniform (quantize_plan_t *self, int ggml_type)
{
    for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++)
        if (quantize_candidates[c] == ggml_type) {
            for (int u = 0; u < self->n_units; u++)
                if (!self->units[u].bytes[c])
                    return -1;
            for (int u = 0; u < self->n_units; u++)
                self->units[u].choice = c;
            return 0;
        }
    return -1;
}

//  llama.cpp's general.file_type for the type holding most bytes.
static uint32_t
s_file_type (const quantize_plan_t *self)
{
    uint64_t by[QUANTIZE_N_CANDIDATES] = { 0 };
    for (int u = 0; u < self->n_units; u++)
        by[self->units[u].choice] += self->units[u].bytes[self->units[u].choice];
    int best = 0;
    for (int c = 1; c < QUANTIZE_N_CANDIDATES; c++)
        if (by[c] > by[best])
            best = c;
    switch (quantize_candidates[best]) {
        case GGML_TYPE_Q4_0: return 2;      //  LLAMA_FTYPE_MOSTLY_Q4_0
        case SPLITMESH_TYPE_W4G128:         //  (llama.cpp cannot load it anyway)
        case GGML_TYPE_Q4_1: return 3;      //  LLAMA_FTYPE_MOSTLY_Q4_1
        case GGML_TYPE_Q8_0: return 7;      //  LLAMA_FTYPE_MOSTLY_Q8_0
        case GGML_TYPE_Q5_0: return 8;      //  LLAMA_FTYPE_MOSTLY_Q5_0
        case GGML_TYPE_Q5_1: return 9;      //  LLAMA_FTYPE_MOSTLY_Q5_1
        case GGML_TYPE_Q4_K: return 15;     //  LLAMA_FTYPE_MOSTLY_Q4_K_M
        case GGML_TYPE_Q6_K: return 18;     //  LLAMA_FTYPE_MOSTLY_Q6_K
        default:             return 1;      //  LLAMA_FTYPE_MOSTLY_F16
    }
}

int
quantize_plan_write (quantize_plan_t *self, const char *out_path, char *err, size_t err_size)
{
    int rc = -1;
    gguf_writer_t *w = gguf_writer_new ();
    if (!w) {
        snprintf (err, err_size, "out of memory");
        return -1;
    }
    for (int k = 0; k < gguf_key_count (self->gguf); k++)
        if (gguf_writer_copy_key (w, self->gguf, gguf_key_at (self->gguf, k)))
            goto writer_failed;
    if (gguf_writer_set_u32 (w, "general.file_type", s_file_type (self))
    ||  gguf_writer_set_str (w, "general.quantized_by", "splitmesh quantize (per-tensor KL budget)"))
        goto writer_failed;
    bool nonstandard = false;
    for (int u = 0; u < self->n_units; u++)
        nonstandard = nonstandard || ggml_type_is_splitmesh (quantize_candidates[self->units[u].choice]);
    if (nonstandard
    &&  gguf_writer_set_str (w, "splitmesh.nonstandard_types",
                             "w4g128 (type 4128): splitmesh loads this file, llama.cpp cannot"))
        goto writer_failed;
    for (int i = 0; i < gguf_tensor_count (self->gguf); i++) {
        const gguf_tensor_t *t = gguf_tensor_at (self->gguf, i);
        s_unit_t *unit = s_unit_of (self, t);
        if (!unit) {
            if (gguf_writer_add_tensor (w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes))
                goto writer_failed;
            continue;
        }
        float *v = malloc ((size_t) t->n_elements * sizeof (float));
        if (!v) {
            snprintf (err, err_size, "out of memory");
            goto cleanup;
        }
        ggml_dequantize (t->type, t->data, v, (int64_t) t->n_elements);
        int r = gguf_writer_add_tensor_f32 (w, t->name, quantize_candidates[unit->choice],
                                            t->n_dims, t->ne, v);
        free (v);
        if (r)
            goto writer_failed;
    }
    if (gguf_writer_write_file (w, out_path))
        goto writer_failed;
    rc = 0;
    goto cleanup;
writer_failed:
    snprintf (err, err_size, "writing '%s': %s", out_path, gguf_writer_error (w));
cleanup:
    gguf_writer_destroy (&w);
    return rc;
}

uint64_t quantize_plan_f32_bytes (const quantize_plan_t *self) { return self->f32_bytes; }
int quantize_plan_calib_tokens (const quantize_plan_t *self) { return self->calib_tokens; }
int quantize_plan_unit_count (const quantize_plan_t *self) { return self->n_units; }

double
quantize_plan_kl (const quantize_plan_t *self)
{
    double kl = 0;
    for (int u = 0; u < self->n_units; u++)
        kl += self->units[u].kl[self->units[u].choice];
    return kl;
}

const char *
quantize_plan_unit_name (const quantize_plan_t *self, int unit)
{
    return unit >= 0 && unit < self->n_units ? self->units[unit].name : NULL;
}

double
quantize_plan_unit_kl (const quantize_plan_t *self, int unit, int c)
{
    if (unit < 0 || unit >= self->n_units || c < 0 || c >= QUANTIZE_N_CANDIDATES
    ||  !self->units[unit].bytes[c])
        return NAN;
    return self->units[unit].kl[c];
}

uint64_t
quantize_plan_unit_bytes (const quantize_plan_t *self, int unit, int c)
{
    if (unit < 0 || unit >= self->n_units || c < 0 || c >= QUANTIZE_N_CANDIDATES)
        return 0;
    return self->units[unit].bytes[c];
}

int quantize_plan_measured (const quantize_plan_t *self) { return self->measured; }

int
quantize_plan_unit_type (const quantize_plan_t *self, int unit)
{
    if (unit < 0 || unit >= self->n_units)
        return -1;
    return quantize_candidates[self->units[unit].choice];
}
