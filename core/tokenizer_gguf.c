/*  tokenizer_gguf.c: builds the tokenizer and chat template from a GGUF file's metadata.

    Kept apart from tokenizer.c so the tokenizer core builds and tests
    without the GGUF reader. The keys and their defaults follow llama.cpp's
    llama_vocab::impl::load: tokenizer.ggml.{model, pre, tokens, scores,
    token_type, merges, *_token_id, add_bos_token, add_eos_token,
    add_space_prefix}. Arrays that are present but of the wrong type or too
    short are errors, never silently ignored.
*/
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "gguf.h"
#include "tokenizer.h"

static void
s_err (char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || err_size == 0)
        return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (err, err_size, fmt, args);
    va_end (args);
}

//  Reads a string array into pointer/length arrays that point into the
//  mapping. Returns the count, or -1 with a message.
static int64_t
s_str_array (const gguf_t *gguf, const char *key, const char ***strs_p, size_t **lens_p,
             char *err, size_t err_size)
{
    gguf_value_type_t type;
    uint64_t count;
    if (!gguf_get_array (gguf, key, &type, &count) || type != GGUF_TYPE_STRING) {
        s_err (err, err_size, "%s is missing or not an array of strings", key);
        return -1;
    }
    if (count > TOKENIZER_MAX_TOKENS) {
        s_err (err, err_size, "%s has %llu entries, more than %d", key,
               (unsigned long long) count, TOKENIZER_MAX_TOKENS);
        return -1;
    }
    const char **strs = calloc (count ? count : 1, sizeof (char *));
    size_t *lens = calloc (count ? count : 1, sizeof (size_t));
    if (!strs || !lens) {
        free (strs);
        free (lens);
        s_err (err, err_size, "out of memory reading %s", key);
        return -1;
    }
    for (uint64_t i = 0; i < count; i++) {
        if (!gguf_array_str (gguf, key, i, &strs[i], &lens[i])) {
            free (strs);
            free (lens);
            s_err (err, err_size, "%s[%llu] unreadable", key, (unsigned long long) i);
            return -1;
        }
    }
    *strs_p = strs;
    *lens_p = lens;
    return (int64_t) count;
}

//  A special id: llama.cpp keeps the model default unless the key holds an
//  id inside the vocabulary.
static int32_t
s_special_id (const gguf_t *gguf, const char *key, int32_t fallback, int32_t n_tokens)
{
    if (fallback >= n_tokens)
        fallback = TOKENIZER_NULL;
    uint32_t id;
    if (gguf_get_u32 (gguf, key, &id) && id < (uint32_t) n_tokens)
        return (int32_t) id;
    return fallback;
}

tokenizer_t *
tokenizer_new_from_gguf (const gguf_t *gguf, char *err, size_t err_size)
{
    assert (gguf);
    tokenizer_t *tok = NULL;
    const char **tokens = NULL, **merges = NULL;
    size_t *token_lens = NULL, *merge_lens = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    char model[64] = "", pre[64] = "";

    if (!gguf_get_str_copy (gguf, "tokenizer.ggml.model", model, sizeof model)) {
        s_err (err, err_size, "tokenizer.ggml.model is missing");
        goto done;
    }
    gguf_get_str_copy (gguf, "tokenizer.ggml.pre", pre, sizeof pre);
    tokenizer_vocab_t vocab;
    if (tokenizer_vocab_defaults (&vocab, model, pre, err, err_size))
        goto done;

    int64_t n = s_str_array (gguf, "tokenizer.ggml.tokens", &tokens, &token_lens, err, err_size);
    if (n < 0)
        goto done;
    if (n == 0) {
        s_err (err, err_size, "tokenizer.ggml.tokens is empty");
        goto done;
    }
    vocab.n_tokens = (int32_t) n;
    vocab.tokens = tokens;
    vocab.token_lens = token_lens;

    gguf_value_type_t type;
    uint64_t count;
    const char *odd = gguf_has_key (gguf, "tokenizer.ggml.scores")
                   && gguf_key_type (gguf, "tokenizer.ggml.scores") != GGUF_TYPE_ARRAY ? "tokenizer.ggml.scores"
                    : gguf_has_key (gguf, "tokenizer.ggml.token_type")
                   && gguf_key_type (gguf, "tokenizer.ggml.token_type") != GGUF_TYPE_ARRAY ? "tokenizer.ggml.token_type"
                    : NULL;
    if (odd) {
        s_err (err, err_size, "%s is not an array", odd);
        goto done;
    }
    if (gguf_get_array (gguf, "tokenizer.ggml.scores", &type, &count)) {
        if ((type != GGUF_TYPE_FLOAT32 && type != GGUF_TYPE_INT32) || count < (uint64_t) n) {
            s_err (err, err_size, "tokenizer.ggml.scores: need %lld float32/int32 values",
                   (long long) n);
            goto done;
        }
        const uint8_t *data = gguf_array_data (gguf, "tokenizer.ggml.scores");
        scores = malloc ((size_t) n * sizeof (float));
        if (!data || !scores)
            goto oom;
        for (int64_t i = 0; i < n; i++) {
            if (type == GGUF_TYPE_FLOAT32)
                memcpy (&scores[i], data + 4 * i, 4);
            else {
                int32_t v;
                memcpy (&v, data + 4 * i, 4);
                scores[i] = (float) v;
            }
        }
        vocab.scores = scores;
    }
    if (gguf_get_array (gguf, "tokenizer.ggml.token_type", &type, &count)) {
        if (type != GGUF_TYPE_INT32 || count < (uint64_t) n) {
            s_err (err, err_size, "tokenizer.ggml.token_type: need %lld int32 values", (long long) n);
            goto done;
        }
        const uint8_t *data = gguf_array_data (gguf, "tokenizer.ggml.token_type");
        types = malloc ((size_t) n * sizeof (int32_t));
        if (!data || !types)
            goto oom;
        memcpy (types, data, (size_t) n * sizeof (int32_t));
        vocab.types = types;
    }
    if (vocab.model == TOKENIZER_MODEL_BPE) {
        int64_t m = s_str_array (gguf, "tokenizer.ggml.merges", &merges, &merge_lens, err, err_size);
        if (m < 0)
            goto done;
        vocab.n_merges = (int32_t) m;
        vocab.merges = merges;
        vocab.merge_lens = merge_lens;
    }

    vocab.bos_id = s_special_id (gguf, "tokenizer.ggml.bos_token_id", vocab.bos_id, vocab.n_tokens);
    vocab.eos_id = s_special_id (gguf, "tokenizer.ggml.eos_token_id", vocab.eos_id, vocab.n_tokens);
    vocab.eot_id = s_special_id (gguf, "tokenizer.ggml.eot_token_id", vocab.eot_id, vocab.n_tokens);
    vocab.unk_id = s_special_id (gguf, "tokenizer.ggml.unknown_token_id", vocab.unk_id, vocab.n_tokens);
    vocab.pad_id = s_special_id (gguf, "tokenizer.ggml.padding_token_id", vocab.pad_id, vocab.n_tokens);
    bool flag;
    if (gguf_get_bool (gguf, "tokenizer.ggml.add_bos_token", &flag))
        vocab.add_bos = flag;
    if (gguf_get_bool (gguf, "tokenizer.ggml.add_eos_token", &flag))
        vocab.add_eos = flag;
    if (gguf_get_bool (gguf, "tokenizer.ggml.add_space_prefix", &flag))
        vocab.add_space_prefix = flag;

    tok = tokenizer_new (&vocab, err, err_size);
    goto done;
oom:
    s_err (err, err_size, "out of memory reading the vocabulary");
done:
    free (tokens);
    free (token_lens);
    free (merges);
    free (merge_lens);
    free (scores);
    free (types);
    return tok;
}

chat_template_t *
chat_template_new_from_gguf (const gguf_t *gguf, char *err, size_t err_size)
{
    assert (gguf);
    const char *src = NULL;
    size_t len = 0;
    if (!gguf_get_str (gguf, "tokenizer.chat_template", &src, &len))
        src = NULL;
    return chat_template_new (src, len, err, err_size);
}
