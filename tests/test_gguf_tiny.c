/*  test_gguf_tiny.c: `splitmesh tiny-model` writes loadable llama GGUF files.

    Runs the real binary (bounded by timeout(1)) and checks the result with
    the reader: every llama.* key, the tokenizer, tensor names, shapes and
    types as llama.cpp names them, weight statistics, determinism by seed,
    --vocab-from, and usage errors. Where llama-cpp-python is installed, the
    file must also load and evaluate in llama.cpp itself.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "gguf.h"

static char s_dir [64];

static void
s_setup (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/test_tiny_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
}

static void
s_teardown (void)
{
    char cmd [128];
    snprintf (cmd, sizeof cmd, "rm -rf %s", s_dir);
    if (system (cmd)) { }
}

TestSuite (gguf_tiny, .init = s_setup, .fini = s_teardown);

//  Runs `splitmesh tiny-model ARGS` (60 s bound); returns its exit status.
//  Output goes to s_dir/log.
static int
s_tiny (const char *args)
{
    char cmd [1024];
    snprintf (cmd, sizeof cmd, "timeout 60 %s/splitmesh tiny-model %s >%s/log 2>&1",
              SPLITMESH_BIN_DIR, args, s_dir);
    int status = system (cmd);
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

static char *
s_log (void)
{
    static char buf [4096];
    char path [128];
    snprintf (path, sizeof path, "%s/log", s_dir);
    FILE *f = fopen (path, "r");
    size_t n = f ? fread (buf, 1, sizeof buf - 1, f) : 0;
    buf [n] = '\0';
    if (f)
        fclose (f);
    return buf;
}

static gguf_t *
s_open (const char *name)
{
    char path [128], err [512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    gguf_t *g = gguf_open (path, err, sizeof err);
    cr_assert_not_null (g, "%s: %s", path, err);
    return g;
}

static uint32_t
s_u32 (const gguf_t *g, const char *key)
{
    uint32_t v = 0;
    cr_assert (gguf_get_u32 (g, key, &v), "missing %s", key);
    return v;
}

static void
s_check_tensor (const gguf_t *g, const char *name, int type, uint64_t ne0, uint64_t ne1)
{
    const gguf_tensor_t *t = gguf_find_tensor (g, name);
    cr_assert_not_null (t, "missing tensor %s", name);
    cr_assert_eq ((int) t->type, type, "%s: type %d, want %d", name, t->type, type);
    cr_assert_eq (t->n_dims, ne1 > 1 ? 2 : 1, "%s: n_dims %d", name, t->n_dims);
    cr_assert (t->ne [0] == ne0 && t->ne [1] == ne1, "%s: shape [%llu, %llu], want [%llu, %llu]", name,
               (unsigned long long) t->ne [0], (unsigned long long) t->ne [1],
               (unsigned long long) ne0, (unsigned long long) ne1);
}

//  Mean and standard deviation of a tensor's dequantized values.
static void
s_stats (const gguf_t *g, const char *name, double *mean, double *std)
{
    const gguf_tensor_t *t = gguf_find_tensor (g, name);
    cr_assert_not_null (t);
    float *x = malloc (sizeof (float) * t->n_elements);
    cr_assert_eq (ggml_dequantize (t->type, t->data, x, (int64_t) t->n_elements), 0);
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < t->n_elements; i++) {
        s += x [i];
        s2 += (double) x [i] * x [i];
    }
    free (x);
    *mean = s / (double) t->n_elements;
    *std = sqrt (s2 / (double) t->n_elements - *mean * *mean);
}

Test (gguf_tiny, default_model_is_complete)
{
    char args [256];
    snprintf (args, sizeof args, "--out %s/m.gguf", s_dir);
    cr_assert_eq (s_tiny (args), 0, "%s", s_log ());
    cr_assert (strstr (s_log (), "wrote"), "%s", s_log ());
    gguf_t *g = s_open ("m.gguf");
    char s [64];
    cr_assert (gguf_get_str_copy (g, "general.architecture", s, sizeof s) && !strcmp (s, "llama"));
    cr_assert_eq (s_u32 (g, "llama.context_length"), 256);
    cr_assert_eq (s_u32 (g, "llama.embedding_length"), 64);
    cr_assert_eq (s_u32 (g, "llama.block_count"), 2);
    cr_assert_eq (s_u32 (g, "llama.feed_forward_length"), 128);
    cr_assert_eq (s_u32 (g, "llama.attention.head_count"), 4);
    cr_assert_eq (s_u32 (g, "llama.attention.head_count_kv"), 2);
    cr_assert_eq (s_u32 (g, "llama.rope.dimension_count"), 16);
    cr_assert_eq (s_u32 (g, "general.file_type"), 0);
    float f;
    cr_assert (gguf_get_f32 (g, "llama.rope.freq_base", &f) && f == 10000.0f);
    cr_assert (gguf_get_f32 (g, "llama.attention.layer_norm_rms_epsilon", &f) && f == 1e-5f);

    //  Tokenizer: specials, 256 byte tokens, merges, ids.
    cr_assert (gguf_get_str_copy (g, "tokenizer.ggml.model", s, sizeof s) && !strcmp (s, "gpt2"));
    cr_assert (gguf_get_str_copy (g, "tokenizer.ggml.pre", s, sizeof s) && !strcmp (s, "smollm"));
    gguf_value_type_t et;
    uint64_t n_vocab, n_types, n_merges;
    cr_assert (gguf_get_array (g, "tokenizer.ggml.tokens", &et, &n_vocab) && et == GGUF_TYPE_STRING);
    cr_assert_eq (s_u32 (g, "llama.vocab_size"), n_vocab);
    cr_assert (gguf_get_array (g, "tokenizer.ggml.token_type", &et, &n_types) && et == GGUF_TYPE_INT32);
    cr_assert_eq (n_types, n_vocab);
    cr_assert (gguf_get_array (g, "tokenizer.ggml.merges", &et, &n_merges) && et == GGUF_TYPE_STRING);
    cr_assert_eq (n_vocab, 3 + 256 + n_merges, "one token per merge");
    const char *tok;
    size_t len;
    cr_assert (gguf_array_str (g, "tokenizer.ggml.tokens", 0, &tok, &len) && len == 13 && !memcmp (tok, "<|endoftext|>", 13));
    cr_assert (gguf_array_str (g, "tokenizer.ggml.tokens", 2, &tok, &len) && len == 10 && !memcmp (tok, "<|im_end|>", 10));
    cr_assert (gguf_array_str (g, "tokenizer.ggml.tokens", 3 + 'a', &tok, &len) && len == 1 && tok [0] == 'a');
    cr_assert (gguf_array_str (g, "tokenizer.ggml.tokens", 3 + ' ', &tok, &len) && len == 2
               && !memcmp (tok, "\xc4\xa0", 2), "space is GPT-2's U+0120");
    cr_assert (gguf_array_str (g, "tokenizer.ggml.tokens", 3 + '\n', &tok, &len) && len == 2
               && !memcmp (tok, "\xc4\x8a", 2), "newline is GPT-2's U+010A");
    cr_assert (gguf_array_str (g, "tokenizer.ggml.merges", 0, &tok, &len) && len == 4 && !memcmp (tok, "\xc4\xa0 t", 4));
    int32_t types [4];
    memcpy (types, gguf_array_data (g, "tokenizer.ggml.token_type"), sizeof types);
    cr_assert (types [0] == 3 && types [1] == 3 && types [2] == 3 && types [3] == 1);
    cr_assert_eq (s_u32 (g, "tokenizer.ggml.bos_token_id"), 1);
    cr_assert_eq (s_u32 (g, "tokenizer.ggml.eos_token_id"), 2);
    cr_assert (gguf_has_key (g, "tokenizer.chat_template"));

    //  Tensors as llama.cpp names and shapes them.
    cr_assert_eq (gguf_tensor_count (g), 1 + 2 * 9 + 2);
    s_check_tensor (g, "token_embd.weight", GGML_TYPE_F32, 64, n_vocab);
    for (int l = 0; l < 2; l++) {
        char name [64];
        const struct { const char *suffix; int type; uint64_t ne0, ne1; } want [] = {
            { "attn_norm", GGML_TYPE_F32, 64, 1 }, { "attn_q", GGML_TYPE_F32, 64, 64 },
            { "attn_k", GGML_TYPE_F32, 64, 32 },   { "attn_v", GGML_TYPE_F32, 64, 32 },
            { "attn_output", GGML_TYPE_F32, 64, 64 }, { "ffn_norm", GGML_TYPE_F32, 64, 1 },
            { "ffn_gate", GGML_TYPE_F32, 64, 128 }, { "ffn_up", GGML_TYPE_F32, 64, 128 },
            { "ffn_down", GGML_TYPE_F32, 128, 64 },
        };
        for (size_t k = 0; k < sizeof want / sizeof want [0]; k++) {
            snprintf (name, sizeof name, "blk.%d.%s.weight", l, want [k].suffix);
            s_check_tensor (g, name, want [k].type, want [k].ne0, want [k].ne1);
        }
    }
    s_check_tensor (g, "output_norm.weight", GGML_TYPE_F32, 64, 1);
    s_check_tensor (g, "output.weight", GGML_TYPE_F32, 64, n_vocab);

    //  Weight scales: embeddings N(0, 0.1), matrices N(0, 0.5/sqrt(fan_in)), norms ~1.
    double mean, std;
    s_stats (g, "token_embd.weight", &mean, &std);
    cr_assert (fabs (mean) < 0.01 && fabs (std - 0.1) < 0.01, "token_embd mean %g std %g", mean, std);
    s_stats (g, "blk.1.attn_q.weight", &mean, &std);
    cr_assert (fabs (mean) < 0.01 && fabs (std - 0.0625) < 0.006, "attn_q mean %g std %g", mean, std);
    s_stats (g, "blk.0.ffn_down.weight", &mean, &std);
    cr_assert (fabs (std - 0.5 / sqrt (128.0)) < 0.005, "ffn_down std %g", std);
    s_stats (g, "output_norm.weight", &mean, &std);
    cr_assert (fabs (mean - 1.0) < 0.02 && std < 0.05, "output_norm mean %g std %g", mean, std);
    gguf_destroy (&g);
}

static char *
s_read_file (const char *name, size_t *size)
{
    char path [128];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    FILE *f = fopen (path, "rb");
    cr_assert_not_null (f, "%s", path);
    fseek (f, 0, SEEK_END);
    long n = ftell (f);
    fseek (f, 0, SEEK_SET);
    char *buf = malloc ((size_t) n);
    cr_assert_eq (fread (buf, 1, (size_t) n, f), (size_t) n);
    fclose (f);
    *size = (size_t) n;
    return buf;
}

Test (gguf_tiny, deterministic_by_seed)
{
    char args [256];
    snprintf (args, sizeof args, "--out %s/a.gguf --seed 7 --type q4_1", s_dir);
    cr_assert_eq (s_tiny (args), 0, "%s", s_log ());
    snprintf (args, sizeof args, "--out %s/b.gguf --seed 7 --type q4_1", s_dir);
    cr_assert_eq (s_tiny (args), 0, "%s", s_log ());
    snprintf (args, sizeof args, "--out %s/c.gguf --seed 8 --type q4_1", s_dir);
    cr_assert_eq (s_tiny (args), 0, "%s", s_log ());
    size_t na, nb, nc;
    char *a = s_read_file ("a.gguf", &na), *b = s_read_file ("b.gguf", &nb), *c = s_read_file ("c.gguf", &nc);
    cr_assert (na == nb && !memcmp (a, b, na), "same seed, different files");
    cr_assert (na == nc && memcmp (a, c, na), "different seeds, same file");
    free (a);
    free (b);
    free (c);
}

Test (gguf_tiny, every_type_and_shape_options)
{
    const struct { const char *args; int type; uint64_t dim, ff; } cases [] = {
        { "--type f16", GGML_TYPE_F16, 64, 128 },
        { "--type bf16", GGML_TYPE_BF16, 64, 128 },
        { "--type q8_0", GGML_TYPE_Q8_0, 64, 128 },
        { "--type q4_0 --layers 1", GGML_TYPE_Q4_0, 64, 128 },
        { "--type Q4_1 --dim 96 --heads 6 --kv-heads 3 --ff 160", GGML_TYPE_Q4_1, 96, 160 },
        { "--type q4_K --dim 256 --ff 512 --heads 8 --kv-heads 8", GGML_TYPE_Q4_K, 256, 512 },
        { "--type q6_K --dim 256 --ff 256 --tied", GGML_TYPE_Q6_K, 256, 256 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char args [256];
        snprintf (args, sizeof args, "--out %s/t%zu.gguf %s", s_dir, i, cases [i].args);
        cr_assert_eq (s_tiny (args), 0, "%s: %s", cases [i].args, s_log ());
        char name [32];
        snprintf (name, sizeof name, "t%zu.gguf", i);
        gguf_t *g = s_open (name);
        s_check_tensor (g, "blk.0.ffn_up.weight", cases [i].type, cases [i].dim, cases [i].ff);
        s_check_tensor (g, "blk.0.ffn_down.weight", cases [i].type, cases [i].ff, cases [i].dim);
        s_check_tensor (g, "blk.0.attn_norm.weight", GGML_TYPE_F32, cases [i].dim, 1);
        cr_assert_eq (s_u32 (g, "llama.embedding_length"), cases [i].dim);
        if (strstr (cases [i].args, "--tied"))
            cr_assert_null (gguf_find_tensor (g, "output.weight"));
        else
            cr_assert_not_null (gguf_find_tensor (g, "output.weight"));
        if (strstr (cases [i].args, "--layers 1"))
            cr_assert_null (gguf_find_tensor (g, "blk.1.attn_q.weight"));
        gguf_destroy (&g);
    }
}

Test (gguf_tiny, usage_errors)
{
    char args [256];
    cr_assert_eq (s_tiny (""), 2);
    cr_assert (strstr (s_log (), "--out FILE is required"), "%s", s_log ());
    cr_assert_eq (s_tiny ("--help"), 0);
    cr_assert (strstr (s_log (), "usage: splitmesh tiny-model"));
    snprintf (args, sizeof args, "--out %s/x.gguf --dim 60 --heads 8", s_dir);
    cr_assert_eq (s_tiny (args), 2);
    cr_assert (strstr (s_log (), "not a multiple of --heads"), "%s", s_log ());
    snprintf (args, sizeof args, "--out %s/x.gguf --heads 4 --kv-heads 3", s_dir);
    cr_assert_eq (s_tiny (args), 2);
    snprintf (args, sizeof args, "--out %s/x.gguf --type q2_k", s_dir);
    cr_assert_eq (s_tiny (args), 2);
    cr_assert (strstr (s_log (), "unknown --type 'q2_k'"), "%s", s_log ());
    snprintf (args, sizeof args, "--out %s/x.gguf --type q4_K", s_dir);
    cr_assert_eq (s_tiny (args), 2);
    cr_assert (strstr (s_log (), "multiples of 256"), "%s", s_log ());
    snprintf (args, sizeof args, "--out %s/x.gguf --layers -1", s_dir);
    cr_assert_eq (s_tiny (args), 2);
    snprintf (args, sizeof args, "--out %s/x.gguf --layers 2x", s_dir);
    cr_assert_eq (s_tiny (args), 2);
    cr_assert (strstr (s_log (), "--layers needs a whole number"), "%s", s_log ());
    snprintf (args, sizeof args, "--out %s/x.gguf --frobnicate 1", s_dir);
    cr_assert_eq (s_tiny (args), 2);
    cr_assert (strstr (s_log (), "unknown option '--frobnicate'"));
    snprintf (args, sizeof args, "--out %s/x.gguf --dim", s_dir);
    cr_assert_eq (s_tiny (args), 2);
    //  Runtime failures exit 1 with the reason.
    snprintf (args, sizeof args, "--out %s/x.gguf --vocab-from %s/nonexistent.gguf", s_dir, s_dir);
    cr_assert_eq (s_tiny (args), 1);
    cr_assert (strstr (s_log (), "cannot open"), "%s", s_log ());
    cr_assert_eq (s_tiny ("--out /nonexistent/dir/x.gguf"), 1);
    cr_assert (strstr (s_log (), "cannot create"), "%s", s_log ());
    cr_assert_neq (access ("/nonexistent/dir/x.gguf", F_OK), 0);
}

//  --vocab-from copies every tokenizer.* key verbatim.
static void
s_check_vocab_copy (const char *src_path, const char *dst)
{
    char err [512];
    gguf_t *src = gguf_open (src_path, err, sizeof err);
    cr_assert_not_null (src, "%s", err);
    gguf_t *g = s_open (dst);
    int n_tok_keys = 0;
    for (int i = 0; i < gguf_key_count (src); i++) {
        const char *key = gguf_key_at (src, i);
        if (strncmp (key, "tokenizer.", 10))
            continue;
        n_tok_keys++;
        cr_assert_eq (gguf_key_type (g, key), gguf_key_type (src, key), "%s", key);
    }
    cr_assert_gt (n_tok_keys, 3);
    gguf_value_type_t et;
    uint64_t n_src, n_dst;
    cr_assert (gguf_get_array (src, "tokenizer.ggml.tokens", &et, &n_src));
    cr_assert (gguf_get_array (g, "tokenizer.ggml.tokens", &et, &n_dst));
    cr_assert_eq (n_src, n_dst);
    cr_assert_eq (s_u32 (g, "llama.vocab_size"), n_src);
    s_check_tensor (g, "token_embd.weight", GGML_TYPE_Q8_0, 32, n_src);
    for (uint64_t i = 0; i < n_src; i += 97) {
        const char *a, *b;
        size_t la, lb;
        gguf_array_str (src, "tokenizer.ggml.tokens", i, &a, &la);
        gguf_array_str (g, "tokenizer.ggml.tokens", i, &b, &lb);
        if (la != lb || memcmp (a, b, la))
            cr_assert_fail ("token %llu differs", (unsigned long long) i);
    }
    gguf_destroy (&g);
    gguf_destroy (&src);
}

Test (gguf_tiny, vocab_from_another_model)
{
    char args [512], src [128];
    snprintf (src, sizeof src, "%s/src.gguf", s_dir);
    snprintf (args, sizeof args, "--out %s --seed 3", src);
    cr_assert_eq (s_tiny (args), 0, "%s", s_log ());
    snprintf (args, sizeof args, "--out %s/v.gguf --vocab-from %s --dim 32 --heads 2 --kv-heads 1 --type q8_0", s_dir, src);
    cr_assert_eq (s_tiny (args), 0, "%s", s_log ());
    s_check_vocab_copy (src, "v.gguf");
}

Test (gguf_tiny, vocab_from_real_model_if_present)
{
    const char *model = getenv ("SPLITMESH_MODEL");
    if (!model || !*model)
        model = "/work/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access (model, R_OK))
        cr_skip_test ("model file %s not present (set SPLITMESH_MODEL)", model);
    char args [512];
    snprintf (args, sizeof args, "--out %s/v.gguf --vocab-from %s --dim 32 --heads 2 --kv-heads 1 --type q8_0 --tied",
              s_dir, model);
    cr_assert_eq (s_tiny (args), 0, "%s", s_log ());
    s_check_vocab_copy (model, "v.gguf");
}

//  External validation: llama.cpp (through llama-cpp-python) loads the
//  file, tokenizes with its vocabulary and evaluates to finite logits.
Test (gguf_tiny, loads_in_llama_cpp_if_available)
{
    if (system ("timeout 60 python3 -c 'import llama_cpp' >/dev/null 2>&1"))
        cr_skip_test ("llama-cpp-python not installed (pip install llama-cpp-python): llama.cpp check skipped");
    char args [256], cmd [2048];
    snprintf (args, sizeof args, "--out %s/l.gguf --type q4_0", s_dir);
    cr_assert_eq (s_tiny (args), 0, "%s", s_log ());
    snprintf (cmd, sizeof cmd,
        "timeout 120 python3 -c \""
        "import math, llama_cpp\n"
        "m = llama_cpp.Llama(model_path='%s/l.gguf', n_ctx=64, logits_all=True, verbose=False, n_threads=1)\n"
        "assert m.n_vocab() > 300, m.n_vocab()\n"
        "t = m.tokenize(b' the world', add_bos=False)\n"
        "assert len(t) == 2, t\n"
        "m.eval(t)\n"
        "row = m.scores[len(t) - 1]\n"
        "assert all(math.isfinite(float(x)) for x in row)\n"
        "assert max(row) > min(row)\n"
        "print('llama.cpp ok', m.n_vocab(), t)\n"
        "\" >%s/log 2>&1", s_dir, s_dir);
    int status = system (cmd);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "llama.cpp rejected the tiny model:\n%s", s_log ());
    cr_assert (strstr (s_log (), "llama.cpp ok"), "%s", s_log ());
}
