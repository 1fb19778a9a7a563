/*  test_tokenizer_gguf.c: building the tokenizer from GGUF metadata, good and bad.

    Small GGUF files are written in memory with gguf_writer, so every key the
    loader reads can be present, missing, or of the wrong type. A model file
    is untrusted input: each defect must give a message naming the key, never
    a crash or a silently wrong tokenizer.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "gguf.h"
#include "gguf_write.h"
#include "tokenizer.h"

//  A byte-level vocabulary: 3 specials, the 256 GPT-2 byte characters,
//  then "he", "hel", "hello".
static char s_text[300][8];
static const char *s_tokens[300];
static int32_t s_types[300];
static int32_t s_n;

static void
s_vocab (void)
{
    const char *specials[] = { "<|endoftext|>", "<|im_start|>", "<|im_end|>" };
    s_n = 0;
    for (int i = 0; i < 3; i++, s_n++) {
        s_tokens[s_n] = specials[i];
        s_types[s_n] = TOKEN_TYPE_CONTROL;
    }
    int n = 0;
    for (int b = 0; b < 256; b++, s_n++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        int cpt = printable ? b : 256 + n++;
        if (cpt < 0x80)
            snprintf (s_text[s_n], 8, "%c", cpt);
        else
            snprintf (s_text[s_n], 8, "%c%c", 0xc0 | (cpt >> 6), 0x80 | (cpt & 0x3f));
        s_tokens[s_n] = s_text[s_n];
        s_types[s_n] = TOKEN_TYPE_NORMAL;
    }
    const char *words[] = { "he", "ll", "hello" };
    for (int i = 0; i < 3; i++, s_n++) {
        s_tokens[s_n] = words[i];
        s_types[s_n] = TOKEN_TYPE_NORMAL;
    }
}

static const char *s_merges[] = { "h e", "l l", "he ll", "hell o" };

//  A complete, valid SmolLM-like tokenizer; tests then break one key.
static gguf_writer_t *
s_writer (void)
{
    s_vocab ();
    gguf_writer_t *w = gguf_writer_new ();
    cr_assert_not_null (w);
    cr_assert_eq (gguf_writer_set_str (w, "tokenizer.ggml.model", "gpt2"), 0);
    cr_assert_eq (gguf_writer_set_str (w, "tokenizer.ggml.pre", "smollm"), 0);
    cr_assert_eq (gguf_writer_set_str_array (w, "tokenizer.ggml.tokens", s_tokens, NULL, (uint64_t) s_n), 0);
    cr_assert_eq (gguf_writer_set_array (w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, s_types, (uint64_t) s_n), 0);
    cr_assert_eq (gguf_writer_set_str_array (w, "tokenizer.ggml.merges", s_merges, NULL, 4), 0);
    cr_assert_eq (gguf_writer_set_u32 (w, "tokenizer.ggml.bos_token_id", 1), 0);
    cr_assert_eq (gguf_writer_set_u32 (w, "tokenizer.ggml.eos_token_id", 2), 0);
    return w;
}

//  Serialises w (destroying it) and builds a tokenizer; returns NULL with
//  the loader's message in err. The buffer must outlive the gguf_t.
static void *s_buffer;

static tokenizer_t *
s_build (gguf_writer_t *w, char *err, size_t err_size, gguf_t **gguf_p)
{
    size_t size;
    free (s_buffer);
    s_buffer = gguf_writer_write_mem (w, &size);
    cr_assert_not_null (s_buffer, "%s", gguf_writer_error (w));
    gguf_writer_destroy (&w);
    char gerr[256];
    gguf_t *gguf = gguf_open_buffer (s_buffer, size, gerr, sizeof gerr);
    cr_assert_not_null (gguf, "%s", gerr);
    err[0] = 0;
    tokenizer_t *tok = tokenizer_new_from_gguf (gguf, err, err_size);
    if (gguf_p)
        *gguf_p = gguf;
    else
        gguf_destroy (&gguf);
    return tok;
}

static void
s_expect_error (gguf_writer_t *w, const char *needle)
{
    char err[256];
    tokenizer_t *tok = s_build (w, err, sizeof err, NULL);
    cr_assert_null (tok, "expected an error mentioning '%s'", needle);
    cr_assert (strstr (err, needle), "error '%s' does not mention '%s'", err, needle);
}

Test (tokenizer_gguf, valid_file_builds_a_working_tokenizer)
{
    char err[256];
    gguf_writer_t *w = s_writer ();
    cr_assert_eq (gguf_writer_set_bool (w, "tokenizer.ggml.add_bos_token", true), 0);
    cr_assert_eq (gguf_writer_set_str (w, "tokenizer.chat_template",
                  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                  "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"), 0);
    gguf_t *gguf;
    tokenizer_t *tok = s_build (w, err, sizeof err, &gguf);
    cr_assert_not_null (tok, "%s", err);
    cr_assert_eq (tokenizer_n_tokens (tok), s_n);
    cr_assert_eq (tokenizer_pre (tok), TOKENIZER_PRE_SMOLLM);
    cr_assert_eq (tokenizer_bos (tok), 1);
    cr_assert_eq (tokenizer_eos (tok), 2);
    cr_assert (tokenizer_add_bos (tok));
    cr_assert (tokenizer_is_eog (tok, 2));
    int32_t *ids;
    size_t n;
    cr_assert_eq (tokenizer_encode (tok, "<|im_start|>hello", 17, true, true, &ids, &n, err, sizeof err), 0);
    cr_assert_eq (n, 3);
    cr_assert_eq (ids[0], 1);               //  BOS
    cr_assert_eq (ids[1], 1);               //  parsed <|im_start|>
    cr_assert_eq (ids[2], s_n - 1);         //  hello
    free (ids);

    chat_template_t *t = chat_template_new_from_gguf (gguf, err, sizeof err);
    cr_assert_not_null (t, "%s", err);
    cr_assert_null (chat_template_default_system (t));
    chat_template_destroy (&t);
    tokenizer_destroy (&tok);
    gguf_destroy (&gguf);
}

Test (tokenizer_gguf, chat_template_defaults_and_refusals)
{
    char err[256];
    //  no template: plain ChatML
    gguf_t *gguf;
    tokenizer_t *tok = s_build (s_writer (), err, sizeof err, &gguf);
    cr_assert_not_null (tok, "%s", err);
    chat_template_t *t = chat_template_new_from_gguf (gguf, err, sizeof err);
    cr_assert_not_null (t, "%s", err);
    cr_assert_eq (chat_template_kind (t), CHAT_TEMPLATE_CHATML);
    chat_template_destroy (&t);
    gguf_destroy (&gguf);
    tokenizer_destroy (&tok);

    //  a Llama 3 template is refused by name
    gguf_writer_t *w = s_writer ();
    cr_assert_eq (gguf_writer_set_str (w, "tokenizer.chat_template",
                  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}"), 0);
    tok = s_build (w, err, sizeof err, &gguf);
    cr_assert_not_null (tok);
    cr_assert_null (chat_template_new_from_gguf (gguf, err, sizeof err));
    cr_assert (strstr (err, "Llama 3"), "%s", err);
    gguf_destroy (&gguf);
    tokenizer_destroy (&tok);
}

Test (tokenizer_gguf, missing_or_mistyped_keys_are_named)
{
    gguf_writer_t *w = s_writer ();
    gguf_writer_remove_key (w, "tokenizer.ggml.model");
    s_expect_error (w, "tokenizer.ggml.model");

    w = s_writer ();
    gguf_writer_remove_key (w, "tokenizer.ggml.model");
    gguf_writer_set_str (w, "tokenizer.ggml.model", "bert");
    s_expect_error (w, "bert");

    w = s_writer ();
    gguf_writer_remove_key (w, "tokenizer.ggml.pre");
    gguf_writer_set_str (w, "tokenizer.ggml.pre", "qwen-unknown");
    s_expect_error (w, "qwen-unknown");

    w = s_writer ();
    gguf_writer_remove_key (w, "tokenizer.ggml.merges");
    s_expect_error (w, "tokenizer.ggml.merges");

    w = s_writer ();
    gguf_writer_remove_key (w, "tokenizer.ggml.tokens");
    int32_t numbers[3] = { 1, 2, 3 };
    gguf_writer_set_array (w, "tokenizer.ggml.tokens", GGUF_TYPE_INT32, numbers, 3);
    s_expect_error (w, "tokenizer.ggml.tokens");

    w = s_writer ();
    gguf_writer_remove_key (w, "tokenizer.ggml.token_type");
    gguf_writer_set_array (w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, s_types, 10);
    s_expect_error (w, "token_type");

    w = s_writer ();
    float scores[4] = { 0 };
    gguf_writer_set_array (w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, 4);
    s_expect_error (w, "scores");

    w = s_writer ();
    gguf_writer_set_str (w, "tokenizer.ggml.scores", "not an array");
    s_expect_error (w, "scores");

    //  an empty vocabulary
    w = gguf_writer_new ();
    gguf_writer_set_str (w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_str_array (w, "tokenizer.ggml.tokens", s_tokens, NULL, 0);
    s_expect_error (w, "empty");
    free (s_buffer);
    s_buffer = NULL;
}

Test (tokenizer_gguf, special_ids_out_of_range_keep_defaults)
{
    //  llama.cpp ignores a special id key outside the vocabulary and keeps
    //  the model's default; with add_bos asked and no usable BOS the
    //  loader refuses.
    char err[256];
    gguf_writer_t *w = s_writer ();
    gguf_writer_remove_key (w, "tokenizer.ggml.eos_token_id");
    gguf_writer_set_u32 (w, "tokenizer.ggml.eos_token_id", 999999);
    tokenizer_t *tok = s_build (w, err, sizeof err, NULL);
    cr_assert_not_null (tok, "%s", err);
    cr_assert_eq (tokenizer_eos (tok), 11);          //  gpt2 default, in range here
    tokenizer_destroy (&tok);

    w = s_writer ();
    gguf_writer_remove_key (w, "tokenizer.ggml.bos_token_id");
    gguf_writer_set_u32 (w, "tokenizer.ggml.bos_token_id", 999999);
    gguf_writer_set_bool (w, "tokenizer.ggml.add_bos_token", true);
    tok = s_build (w, err, sizeof err, NULL);
    cr_assert_not_null (tok, "%s", err);             //  default 11 is in range
    cr_assert_eq (tokenizer_bos (tok), 11);
    tokenizer_destroy (&tok);
    free (s_buffer);
    s_buffer = NULL;
}
