/*  cmd_tiny_model.c: `splitmesh tiny-model`, a tiny random-weight llama GGUF.

    Unit and integration tests need a model file that is small (kilobytes to
    a few megabytes), deterministic, and loads like a real one: the same
    metadata keys, tensor names and shapes llama.cpp writes for the llama
    architecture, and a tokenizer. Weights are seeded random numbers scaled
    so activations stay in a sane range through the layers (matrices
    N(0, 0.5/sqrt(fan_in)), embeddings N(0, 0.1), norm weights near 1).

    The tokenizer is by default a small built-in byte-level BPE vocabulary
    (llama.cpp's "gpt2" model: special tokens, the 256 GPT-2 byte tokens and
    a few dozen English merges, pre-tokenizer "smollm"); with --vocab-from
    it copies every tokenizer.* key of a real model, so a tiny model can
    stand in as a draft or target that shares that model's vocabulary.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "rng.h"
#include "gguf.h"
#include "gguf_write.h"

typedef struct {
    const char *out;            //  output path
    unsigned layers;            //  block_count
    unsigned dim;               //  embedding_length
    unsigned heads;             //  attention.head_count
    unsigned kv_heads;          //  attention.head_count_kv
    unsigned ff;                //  feed_forward_length
    unsigned ctx;               //  context_length
    int type;                   //  ggml type of the 2-D weights
    unsigned long long seed;    //  PRNG seed
    const char *vocab_from;     //  model whose tokenizer.* keys to copy, or NULL
    bool tied;                  //  no output.weight (head shares token_embd)
    float rope_base;            //  rope.freq_base
} s_options_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh tiny-model --out FILE.gguf [options]\n"
        "\n"
        "Writes a llama-architecture GGUF with seeded random weights, for tests.\n"
        "\n"
        "  --out FILE          output file (required)\n"
        "  --layers N          transformer blocks (default 2)\n"
        "  --dim N             embedding width (default 64)\n"
        "  --heads N           attention heads (default 4)\n"
        "  --kv-heads N        key/value heads (default 2)\n"
        "  --ff N              feed-forward width (default 128)\n"
        "  --ctx N             context length (default 256)\n"
        "  --type T            2-D weight type: f32 f16 bf16 q8_0 q4_0 q4_1 q4_K q6_K (default f32)\n"
        "  --seed S            random seed (default 1)\n"
        "  --rope-base F       rope.freq_base (default 10000)\n"
        "  --tied              omit output.weight (the head reuses token_embd)\n"
        "  --vocab-from MODEL  copy MODEL's tokenizer (every tokenizer.* key)\n");
}

//  Parses an unsigned decimal within [lo, hi]; false with a message if not.
static bool
s_parse_uint (const char *opt, const char *text, unsigned long long lo, unsigned long long hi,
              unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = text && *text != '-' ? strtoull (text, &end, 10) : 0;
    if (!text || !*text || *text == '-' || errno || *end || v < lo || v > hi) {
        fprintf (stderr, "splitmesh tiny-model: %s needs a whole number in %llu..%llu, got '%s'\n",
                 opt, lo, hi, text ? text : "");
        return false;
    }
    *out = v;
    return true;
}

//  Returns 0 ok, 2 usage error (message printed), 1 for --help.
static int
s_parse_args (int argc, char **argv, s_options_t *o)
{
    *o = (s_options_t) { NULL, 2, 64, 4, 2, 128, 256, GGML_TYPE_F32, 1, NULL, false, 10000.0f };
    for (int i = 1; i < argc; i++) {
        const char *a = argv [i];
        const char *v = i + 1 < argc ? argv [i + 1] : NULL;
        unsigned long long n;
        if (!strcmp (a, "--help") || !strcmp (a, "-h")) {
            s_usage (stdout);
            return 1;
        }
        if (!strcmp (a, "--tied")) {
            o->tied = true;
            continue;
        }
        if (!v) {
            fprintf (stderr, "splitmesh tiny-model: %s needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp (a, "--out"))
            o->out = v;
        else
        if (!strcmp (a, "--vocab-from"))
            o->vocab_from = v;
        else
        if (!strcmp (a, "--type")) {
            o->type = ggml_type_from_name (v);
            if (o->type < 0) {
                fprintf (stderr, "splitmesh tiny-model: unknown --type '%s' (f32 f16 bf16 q8_0 q4_0 q4_1 q4_K q6_K)\n", v);
                return 2;
            }
        }
        else
        if (!strcmp (a, "--rope-base")) {
            char *end;
            o->rope_base = strtof (v, &end);
            if (*end || !(o->rope_base > 1.0f) || !isfinite (o->rope_base)) {
                fprintf (stderr, "splitmesh tiny-model: --rope-base needs a number > 1, got '%s'\n", v);
                return 2;
            }
        }
        else
        if (!strcmp (a, "--seed")) {
            if (!s_parse_uint (a, v, 0, ~0ull, &o->seed))
                return 2;
        }
        else {
            unsigned *field = !strcmp (a, "--layers") ? &o->layers
                            : !strcmp (a, "--dim") ? &o->dim
                            : !strcmp (a, "--heads") ? &o->heads
                            : !strcmp (a, "--kv-heads") ? &o->kv_heads
                            : !strcmp (a, "--ff") ? &o->ff
                            : !strcmp (a, "--ctx") ? &o->ctx : NULL;
            if (!field) {
                fprintf (stderr, "splitmesh tiny-model: unknown option '%s' (see --help)\n", a);
                return 2;
            }
            if (!s_parse_uint (a, v, 1, field == &o->ctx ? 1u << 20 : 1u << 14, &n))
                return 2;
            *field = (unsigned) n;
        }
    }
    if (!o->out) {
        fprintf (stderr, "splitmesh tiny-model: --out FILE is required (see --help)\n");
        return 2;
    }
    if (o->dim % o->heads) {
        fprintf (stderr, "splitmesh tiny-model: --dim %u is not a multiple of --heads %u\n", o->dim, o->heads);
        return 2;
    }
    if ((o->dim / o->heads) % 2) {
        fprintf (stderr, "splitmesh tiny-model: head size %u must be even (rope rotates pairs)\n", o->dim / o->heads);
        return 2;
    }
    if (o->kv_heads > o->heads || o->heads % o->kv_heads) {
        fprintf (stderr, "splitmesh tiny-model: --heads %u is not a multiple of --kv-heads %u\n", o->heads, o->kv_heads);
        return 2;
    }
    int bs = ggml_type_traits (o->type)->block_size;
    if (o->dim % (unsigned) bs || o->ff % (unsigned) bs) {
        fprintf (stderr, "splitmesh tiny-model: --dim %u and --ff %u must be multiples of %d for --type %s\n",
                 o->dim, o->ff, bs, ggml_type_traits (o->type)->name);
        return 2;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Random weights


//  Adds one tensor of n = ne[0] * ne[1] random values: mean + std * N(0, 1).
static int
s_add_random (gguf_writer_t *w, const char *name, int type, int n_dims, uint64_t ne0, uint64_t ne1,
              double mean, double std, uint64_t *rng)
{
    uint64_t n = ne0 * ne1;
    float *x = malloc (sizeof (float) * n);
    if (!x) {
        fprintf (stderr, "splitmesh tiny-model: out of memory for %s\n", name);
        return -1;
    }
    for (uint64_t i = 0; i < n; i++)
        x [i] = (float) (mean + std * rng_normal (rng));
    uint64_t ne [2] = { ne0, ne1 };
    int rc = gguf_writer_add_tensor_f32 (w, name, (ggml_type_t) type, n_dims, ne, x);
    if (rc)
        fprintf (stderr, "splitmesh tiny-model: %s\n", gguf_writer_error (w));
    free (x);
    return rc;
}

//  --------------------------------------------------------------------------
//  Built-in byte-level BPE vocabulary

static const char *const s_specials [] = { "<|endoftext|>", "<|im_start|>", "<|im_end|>" };
#define N_SPECIALS 3

//  Common English merges in GPT-2's byte-unicode spelling ("Ġ" = space),
//  each joining two tokens that exist by then.
static const char *const s_merges [] = {
    "Ġ t", "Ġ a", "i n", "h e", "r e", "o n", "Ġt he", "e r", "Ġ s", "a t", "Ġ w", "Ġ o",
    "e n", "Ġ c", "i t", "i s", "a n", "o r", "e s", "Ġ b", "e d", "Ġ f", "in g", "Ġ p",
    "o u", "Ġa n", "a l", "a r", "Ġt o", "Ġ m", "Ġo f", "Ġ in", "Ġ d", "Ġ h", "Ġan d", "i c",
    "a s", "l e", "Ġt h", "i on", "o m", "l l", "en t", "Ġ n", "Ġ l", "s t", "Ġ re", "v e",
    "Ġ e", "r o", "l y", "Ġb e", "Ġ g", "Ġ T", "c t", "Ġ S", "i d", "o t", "Ġ I", "u t",
    "e t", "Ġ A", "Ġ i", "Ġi s", "Ġ on", "i m", "a m", "o w", "a y", "a d", "s e", "Ġth at", "Ġ y",
    "Ġy ou", "Ġw h", "Ġw as", "Ġf or", "Ġ H", "e l", "l o", "l d", "Ġh el", "Ġhel lo",
    "Ġw or", "Ġwor ld",
    "Ċ Ċ", "Ġ Ġ", "ĠĠ ĠĠ",
};
#define N_MERGES (sizeof s_merges / sizeof s_merges [0])

//  Appends the UTF-8 encoding of code point cp (< 0x800 here) to out.
static size_t
s_utf8 (unsigned cp, char *out)
{
    if (cp < 0x80) {
        out [0] = (char) cp;
        return 1;
    }
    out [0] = (char) (0xc0 | (cp >> 6));
    out [1] = (char) (0x80 | (cp & 0x3f));
    return 2;
}

//  GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
//  others (controls, space, 0x7f-0xa0, 0xad) map to 256, 257, ... in order.
static unsigned
s_byte_to_unicode (unsigned b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
        return b;
    unsigned n = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff)))
            n++;
    return 256 + n;
}

typedef struct {
    char **tokens;              //  n token strings, owned
    int32_t *types;             //  n llama token types (1 normal, 3 control)
    int n;                      //  tokens
} s_vocab_t;

static int
s_vocab_find (const s_vocab_t *v, const char *s)
{
    for (int i = 0; i < v->n; i++)
        if (!strcmp (v->tokens [i], s))
            return i;
    return -1;
}

static void
s_vocab_free (s_vocab_t *v)
{
    for (int i = 0; i < v->n; i++)
        free (v->tokens [i]);
    free (v->tokens);
    free (v->types);
}

//  Builds the vocabulary: specials, 256 bytes, one token per merge.
static int
s_vocab_build (s_vocab_t *v)
{
    int cap = N_SPECIALS + 256 + (int) N_MERGES;
    v->tokens = calloc ((size_t) cap, sizeof (char *));
    v->types = calloc ((size_t) cap, sizeof (int32_t));
    v->n = 0;
    if (!v->tokens || !v->types)
        return -1;
    for (int i = 0; i < N_SPECIALS; i++) {
        v->tokens [v->n] = strdup (s_specials [i]);
        v->types [v->n++] = 3;
    }
    for (unsigned b = 0; b < 256; b++) {
        char buf [4] = { 0 };
        s_utf8 (s_byte_to_unicode (b), buf);
        v->tokens [v->n] = strdup (buf);
        v->types [v->n++] = 1;
    }
    for (size_t m = 0; m < N_MERGES; m++) {
        const char *space = strchr (s_merges [m], ' ');
        char left [32], joined [64];
        snprintf (left, sizeof left, "%.*s", (int) (space - s_merges [m]), s_merges [m]);
        snprintf (joined, sizeof joined, "%s%s", left, space + 1);
        //  A merge whose parts are not tokens yet is a bug in the table.
        if (s_vocab_find (v, left) < 0 || s_vocab_find (v, space + 1) < 0 || s_vocab_find (v, joined) >= 0) {
            fprintf (stderr, "splitmesh tiny-model: built-in merge '%s' is not valid\n", s_merges [m]);
            return -1;
        }
        v->tokens [v->n] = strdup (joined);
        v->types [v->n++] = 1;
    }
    return 0;
}

static const char s_chat_template [] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

//  Writes the tokenizer keys; returns the vocabulary size, or -1.
static int64_t
s_add_tokenizer (gguf_writer_t *w, const s_options_t *o)
{
    if (o->vocab_from) {
        char err [512];
        gguf_t *src = gguf_open (o->vocab_from, err, sizeof err);
        if (!src) {
            fprintf (stderr, "splitmesh tiny-model: --vocab-from: %s\n", err);
            return -1;
        }
        gguf_value_type_t et;
        uint64_t n_vocab = 0;
        if (!gguf_get_array (src, "tokenizer.ggml.tokens", &et, &n_vocab) || et != GGUF_TYPE_STRING
            || n_vocab == 0 || n_vocab > (1u << 24)) {
            fprintf (stderr, "splitmesh tiny-model: --vocab-from %s has no usable tokenizer.ggml.tokens\n",
                     o->vocab_from);
            gguf_destroy (&src);
            return -1;
        }
        for (int i = 0; i < gguf_key_count (src); i++) {
            const char *key = gguf_key_at (src, i);
            if (strncmp (key, "tokenizer.", 10))
                continue;
            if (gguf_writer_copy_key (w, src, key)) {
                fprintf (stderr, "splitmesh tiny-model: %s\n", gguf_writer_error (w));
                gguf_destroy (&src);
                return -1;
            }
        }
        gguf_destroy (&src);
        return (int64_t) n_vocab;
    }
    s_vocab_t v;
    if (s_vocab_build (&v)) {
        s_vocab_free (&v);
        return -1;
    }
    int rc = gguf_writer_set_str (w, "tokenizer.ggml.model", "gpt2")
          || gguf_writer_set_str (w, "tokenizer.ggml.pre", "smollm")
          || gguf_writer_set_str_array (w, "tokenizer.ggml.tokens", (const char *const *) v.tokens, NULL, (uint64_t) v.n)
          || gguf_writer_set_array (w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v.types, (uint64_t) v.n)
          || gguf_writer_set_str_array (w, "tokenizer.ggml.merges", s_merges, NULL, N_MERGES)
          || gguf_writer_set_u32 (w, "tokenizer.ggml.bos_token_id", 1)
          || gguf_writer_set_u32 (w, "tokenizer.ggml.eos_token_id", 2)
          || gguf_writer_set_u32 (w, "tokenizer.ggml.unknown_token_id", 0)
          || gguf_writer_set_u32 (w, "tokenizer.ggml.padding_token_id", 2)
          || gguf_writer_set_bool (w, "tokenizer.ggml.add_bos_token", false)
          || gguf_writer_set_bool (w, "tokenizer.ggml.add_space_prefix", false)
          || gguf_writer_set_str (w, "tokenizer.chat_template", s_chat_template);
    int n = v.n;
    s_vocab_free (&v);
    if (rc) {
        fprintf (stderr, "splitmesh tiny-model: %s\n", gguf_writer_error (w));
        return -1;
    }
    return n;
}

//  llama.cpp's general.file_type (llama_ftype) for a uniform weight type.
static uint32_t
s_file_type (int type)
{
    switch (type) {
        case GGML_TYPE_F32:  return 0;      //  ALL_F32
        case GGML_TYPE_F16:  return 1;      //  MOSTLY_F16
        case GGML_TYPE_Q4_0: return 2;
        case GGML_TYPE_Q4_1: return 3;
        case GGML_TYPE_Q8_0: return 7;
        case GGML_TYPE_Q4_K: return 15;     //  Q4_K_M
        case GGML_TYPE_Q6_K: return 18;
        case GGML_TYPE_BF16: return 32;
        default:             return 0;
    }
}

int
cmd_tiny_model (int argc, char **argv)
{
    s_options_t o;
    int rc = s_parse_args (argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : 2;

    rc = 1;
    uint64_t rng = o.seed ^ 0x5eed5eed5eed5eedull;
    gguf_writer_t *w = gguf_writer_new ();
    if (!w)
        return 1;
    unsigned head_dim = o.dim / o.heads;
    unsigned kv_dim = head_dim * o.kv_heads;
    if (gguf_writer_set_str (w, "general.architecture", "llama")
        || gguf_writer_set_str (w, "general.type", "model")
        || gguf_writer_set_str (w, "general.name", "splitmesh tiny random model")
        || gguf_writer_set_u32 (w, "general.file_type", s_file_type (o.type))
        || gguf_writer_set_u32 (w, "general.quantization_version", 2)
        || gguf_writer_set_u64 (w, "splitmesh.tiny_model.seed", o.seed)
        || gguf_writer_set_u32 (w, "llama.context_length", o.ctx)
        || gguf_writer_set_u32 (w, "llama.embedding_length", o.dim)
        || gguf_writer_set_u32 (w, "llama.block_count", o.layers)
        || gguf_writer_set_u32 (w, "llama.feed_forward_length", o.ff)
        || gguf_writer_set_u32 (w, "llama.attention.head_count", o.heads)
        || gguf_writer_set_u32 (w, "llama.attention.head_count_kv", o.kv_heads)
        || gguf_writer_set_f32 (w, "llama.rope.freq_base", o.rope_base)
        || gguf_writer_set_f32 (w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)
        || gguf_writer_set_u32 (w, "llama.rope.dimension_count", head_dim)) {
        fprintf (stderr, "splitmesh tiny-model: %s\n", gguf_writer_error (w));
        goto cleanup;
    }
    int64_t n_vocab = s_add_tokenizer (w, &o);
    if (n_vocab < 0)
        goto cleanup;
    if (gguf_writer_set_u32 (w, "llama.vocab_size", (uint32_t) n_vocab))
        goto cleanup;

    //  Tensors in llama.cpp's order. Norm weights are always f32.
    const double s_dim = 0.5 / sqrt ((double) o.dim), s_ff = 0.5 / sqrt ((double) o.ff);
    if (s_add_random (w, "token_embd.weight", o.type, 2, o.dim, (uint64_t) n_vocab, 0, 0.1, &rng))
        goto cleanup;
    for (unsigned l = 0; l < o.layers; l++) {
        char name [64];
#define ADD(suffix, type, n_dims, ne0, ne1, mean, std) \
        snprintf (name, sizeof name, "blk.%u." suffix ".weight", l); \
        if (s_add_random (w, name, type, n_dims, ne0, ne1, mean, std, &rng)) \
            goto cleanup;
        ADD ("attn_norm",   GGML_TYPE_F32, 1, o.dim, 1, 1.0, 0.02)
        ADD ("attn_q",      o.type, 2, o.dim, o.dim, 0, s_dim)
        ADD ("attn_k",      o.type, 2, o.dim, kv_dim, 0, s_dim)
        ADD ("attn_v",      o.type, 2, o.dim, kv_dim, 0, s_dim)
        ADD ("attn_output", o.type, 2, o.dim, o.dim, 0, s_dim)
        ADD ("ffn_norm",    GGML_TYPE_F32, 1, o.dim, 1, 1.0, 0.02)
        ADD ("ffn_gate",    o.type, 2, o.dim, o.ff, 0, s_dim)
        ADD ("ffn_up",      o.type, 2, o.dim, o.ff, 0, s_dim)
        ADD ("ffn_down",    o.type, 2, o.ff, o.dim, 0, s_ff)
#undef ADD
    }
    if (s_add_random (w, "output_norm.weight", GGML_TYPE_F32, 1, o.dim, 1, 1.0, 0.02, &rng))
        goto cleanup;
    if (!o.tied && s_add_random (w, "output.weight", o.type, 2, o.dim, (uint64_t) n_vocab, 0, s_dim, &rng))
        goto cleanup;

    if (gguf_writer_write_file (w, o.out)) {
        fprintf (stderr, "splitmesh tiny-model: %s\n", gguf_writer_error (w));
        goto cleanup;
    }
    printf ("wrote %s: llama, %u layers, dim %u, heads %u/%u, ff %u, ctx %u, vocab %lld, %s weights%s, seed %llu\n",
            o.out, o.layers, o.dim, o.heads, o.kv_heads, o.ff, o.ctx, (long long) n_vocab,
            ggml_type_traits (o.type)->name, o.tied ? " (tied head)" : "", o.seed);
    rc = 0;
cleanup:
    gguf_writer_destroy (&w);
    return rc;
}
