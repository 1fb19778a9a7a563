/*  test_tokenizer.c: the tokenizer's algorithms on small hand-built vocabularies.

    These run without any model file or GGUF reader: each test builds a
    tokenizer_vocab_t in memory whose right answer can be worked out by
    hand (merge order, pre-tokenizer splits, special-token parsing, SPM
    byte fallback, streaming UTF-8, errors). The comparison with llama.cpp
    on real vocabularies is test_tokenizer_golden.c.
*/
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "tokenizer.h"

//  --- a byte-level BPE toy vocabulary -----------------------------------
//  Ids 0..255: the GPT-2 byte alphabet in byte order; then EXTRA tokens.

static char s_texts[512][32];
static const char *s_ptrs[512];
static int32_t s_types[512];
static float s_scores[512];

static void
s_gpt2_char (int byte, char *out)
{
    //  printable bytes stand for themselves, the rest map to U+0100 + n
    int n = 0, cpt = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        int c = printable ? b : 256 + n++;
        if (b == byte)
            cpt = c;
    }
    if (cpt < 0x80)
        snprintf (out, 32, "%c", cpt);
    else
        snprintf (out, 32, "%c%c", 0xc0 | (cpt >> 6), 0x80 | (cpt & 0x3f));
}

static const char *s_bpe_extra[] = {
    "he", "ll", "hell", "hello", "\xc4\xa0w", "\xc4\xa0wor", "\xc4\xa0world",       //  256..262
    "\xc4\xa0\xc4\xa0", "\xc4\xa0\xc4\xa0\xc4\xa0", "\xc4\xa0" "b",                  //  263..265
    "<|im_start|>", "<|im_end|>", "<tool>", "wor", "ld", "or",                      //  266..271
    NULL
};
static const char *s_bpe_merges[] = {
    "h e", "l l", "he ll", "hell o", "\xc4\xa0 w", "o r", "\xc4\xa0w or", "l d",
    "\xc4\xa0wor ld", "\xc4\xa0 \xc4\xa0", "\xc4\xa0\xc4\xa0 \xc4\xa0", "\xc4\xa0 b", "w or",
    NULL
};

static tokenizer_t *
s_bpe (tokenizer_pre_t pre, bool clean_spaces)
{
    int32_t n = 0;
    for (int b = 0; b < 256; b++, n++) {
        s_gpt2_char (b, s_texts[n]);
        s_types[n] = TOKEN_TYPE_NORMAL;
    }
    for (int k = 0; s_bpe_extra[k]; k++, n++) {
        snprintf (s_texts[n], 32, "%s", s_bpe_extra[k]);
        s_types[n] = TOKEN_TYPE_NORMAL;
    }
    s_types[266] = s_types[267] = TOKEN_TYPE_CONTROL;
    s_types[268] = TOKEN_TYPE_USER_DEFINED;
    for (int32_t i = 0; i < n; i++)
        s_ptrs[i] = s_texts[i];
    int32_t n_merges = 0;
    while (s_bpe_merges[n_merges])
        n_merges++;
    tokenizer_vocab_t v = {
        .model = TOKENIZER_MODEL_BPE, .pre = pre, .n_tokens = n, .tokens = s_ptrs,
        .types = s_types, .n_merges = n_merges, .merges = s_bpe_merges,
        .bos_id = 266, .eos_id = 267, .eot_id = TOKENIZER_NULL, .unk_id = TOKENIZER_NULL,
        .pad_id = TOKENIZER_NULL, .clean_spaces = clean_spaces
    };
    char err[256] = "";
    tokenizer_t *tok = tokenizer_new (&v, err, sizeof err);
    cr_assert_not_null (tok, "%s", err);
    return tok;
}

static void
s_expect_ids (const tokenizer_t *tok, const char *text, size_t len, bool add_special,
              bool parse_special, const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    char err[256];
    cr_assert_eq (tokenizer_encode (tok, text, len, add_special, parse_special, &ids, &n, err, sizeof err), 0, "%s", err);
    char got[1024] = "";
    for (size_t i = 0; i < n; i++)
        snprintf (got + strlen (got), sizeof got - strlen (got), " %d", ids[i]);
    cr_assert_eq (n, n_want, "'%.*s': got%s", (int) len, text, got);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq (ids[i], want[i], "'%.*s' id %zu: got%s", (int) len, text, i, got);
    free (ids);
}

#define EXPECT(tok, text, add, parse, ...) do { \
        const int32_t want_[] = { __VA_ARGS__ }; \
        s_expect_ids (tok, text, strlen (text), add, parse, want_, sizeof want_ / sizeof want_[0]); \
    } while (0)

static char *
s_decode (const tokenizer_t *tok, const int32_t *ids, size_t n, bool rs, bool us)
{
    char *text;
    size_t len;
    char err[256];
    cr_assert_eq (tokenizer_decode (tok, ids, n, rs, us, &text, &len, err, sizeof err), 0, "%s", err);
    cr_assert_eq (strlen (text), len);
    return text;
}

Test (tokenizer, bpe_merges_by_rank)
{
    tokenizer_t *tok = s_bpe (TOKENIZER_PRE_GPT2, false);
    //  h e l l o -> he, ll (ranks 0, 1) -> hell (2) -> hello (3)
    EXPECT (tok, "hello", false, false, 259);
    //  " world": Ġw (4), or (5), Ġwor (6), ld (7), Ġworld (8); "w or" (12)
    //  never applies because Ġ w outranks it.
    EXPECT (tok, "hello world", false, false, 259, 262);
    //  "helo": he, then l o with no merge -> he l o
    EXPECT (tok, "helo", false, false, 256, 'l', 'o');
    //  a word that is no merge result keeps its byte tokens
    EXPECT (tok, "xyz", false, false, 'x', 'y', 'z');
    tokenizer_destroy (&tok);
    cr_assert_null (tok);
    tokenizer_destroy (&tok);       //  second destroy is harmless
}

Test (tokenizer, bpe_pretokenizer_splits_whitespace_runs)
{
    tokenizer_t *tok = s_bpe (TOKENIZER_PRE_GPT2, false);
    //  "a   b": \s+(?!\S) takes two spaces, " b" is its own word, so the
    //  ĠĠĠ merge cannot apply across the split: a ĠĠ Ġb.
    EXPECT (tok, "a   b", false, false, 'a', 263, 265);
    //  trailing run at the end of text: one word of three spaces
    EXPECT (tok, "a   ", false, false, 'a', 264);
    //  numbers split from letters; "hello" stays one word
    EXPECT (tok, "hello42", false, false, 259, '4', '2');
    tokenizer_destroy (&tok);

    //  smollm splits every digit before the GPT-2 regex runs
    tok = s_bpe (TOKENIZER_PRE_SMOLLM, false);
    EXPECT (tok, "x42", false, false, 'x', '4', '2');
    tokenizer_destroy (&tok);
}

Test (tokenizer, special_tokens_parsed_only_when_asked)
{
    tokenizer_t *tok = s_bpe (TOKENIZER_PRE_GPT2, false);
    const char *text = "<|im_start|>hello";
    //  parse_special: the control token is one id
    EXPECT (tok, text, false, true, 266, 259);
    //  not parsed: the marker is tokenized as text, byte by byte
    int32_t *ids;
    size_t n;
    cr_assert_eq (tokenizer_encode (tok, text, strlen (text), false, false, &ids, &n, NULL, 0), 0);
    cr_assert_gt (n, 5);
    for (size_t i = 0; i < n; i++)
        cr_assert_neq (ids[i], 266);
    //  ... and decodes back to the same text
    char *back = s_decode (tok, ids, n, false, false);
    cr_assert_str_eq (back, text);
    free (back);
    free (ids);
    //  USER_DEFINED tokens are cut out even without parse_special
    EXPECT (tok, "hello<tool>hello", false, false, 259, 268, 259);
    //  add_special wraps BOS/EOS only when the vocabulary asks (it does not)
    EXPECT (tok, "hello", true, false, 259);
    tokenizer_destroy (&tok);
}

Test (tokenizer, protected_ranges_keep_special_text_as_text)
{
    tokenizer_t *tok = s_bpe (TOKENIZER_PRE_GPT2, false);
    //  "<|im_start|>hello<|im_start|>": protect the second marker
    const char *text = "<|im_start|>hello<|im_start|>";
    size_t ranges[] = { 17, 12 };
    int32_t *ids, *plain;
    size_t n, n_plain;
    char err[256];
    cr_assert_eq (tokenizer_encode_protected (tok, text, strlen (text), false, ranges, 1, &ids, &n, err, sizeof err), 0, "%s", err);
    cr_assert_eq (tokenizer_encode (tok, "<|im_start|>", 12, false, false, &plain, &n_plain, NULL, 0), 0);
    cr_assert_eq (n, 2 + n_plain);
    cr_assert_eq (ids[0], 266);
    cr_assert_eq (ids[1], 259);
    cr_assert (memcmp (ids + 2, plain, n_plain * sizeof (int32_t)) == 0);
    free (ids);
    free (plain);
    //  a range touching only part of the marker protects it too
    size_t partial[] = { 20, 1 };
    cr_assert_eq (tokenizer_encode_protected (tok, text, strlen (text), false, partial, 1, &ids, &n, NULL, 0), 0);
    cr_assert_eq (ids[0], 266);
    cr_assert_neq (ids[n - 1], 266);
    free (ids);
    //  no ranges: exactly tokenizer_encode with parse_special
    cr_assert_eq (tokenizer_encode_protected (tok, text, strlen (text), false, NULL, 0, &ids, &n, NULL, 0), 0);
    cr_assert_eq (n, 3);
    cr_assert (ids[0] == 266 && ids[1] == 259 && ids[2] == 266);
    free (ids);
    //  a range outside the text is an error
    size_t bad[] = { 25, 10 };
    cr_assert_eq (tokenizer_encode_protected (tok, text, strlen (text), false, bad, 1, &ids, &n, err, sizeof err), -1);
    cr_assert (strstr (err, "outside"), "%s", err);
    tokenizer_destroy (&tok);
}

Test (tokenizer, decode_rules)
{
    tokenizer_t *tok = s_bpe (TOKENIZER_PRE_GPT2, false);
    const int32_t ids[] = { 266, 259, 262, 267 };
    char *text = s_decode (tok, ids, 4, false, false);
    cr_assert_str_eq (text, "hello world");               //  control tokens hidden
    free (text);
    text = s_decode (tok, ids, 4, false, true);
    cr_assert_str_eq (text, "<|im_start|>hello world<|im_end|>");
    free (text);
    const char *piece;
    size_t len;
    cr_assert_eq (tokenizer_token_to_piece (tok, 263, false, &piece, &len, NULL, 0), 0);
    cr_assert_eq (len, 2);
    cr_assert_str_eq (piece, "  ");                        //  ĠĠ -> two spaces
    tokenizer_destroy (&tok);

    //  clean_spaces (GPT-2 vocabularies): " ," loses its space on decode
    tok = s_bpe (TOKENIZER_PRE_GPT2, true);
    int32_t *enc;
    size_t n;
    cr_assert_eq (tokenizer_encode (tok, "hello , x", 9, false, false, &enc, &n, NULL, 0), 0);
    text = s_decode (tok, enc, n, false, false);
    cr_assert_str_eq (text, "hello, x");
    free (text);
    free (enc);
    tokenizer_destroy (&tok);
}

Test (tokenizer, bad_input_is_an_error_not_a_crash)
{
    tokenizer_t *tok = s_bpe (TOKENIZER_PRE_LLAMA3, false);
    char err[256] = "";
    const char *piece;
    size_t len;
    cr_assert_eq (tokenizer_token_to_piece (tok, 272, false, &piece, &len, err, sizeof err), -1);
    cr_assert (strstr (err, "out of range"), "%s", err);
    cr_assert_eq (tokenizer_token_to_piece (tok, -5, false, &piece, &len, err, sizeof err), -1);
    const int32_t bad[] = { 259, 100000 };
    char *text;
    err[0] = 0;
    cr_assert_eq (tokenizer_decode (tok, bad, 2, false, false, &text, &len, err, sizeof err), -1);
    cr_assert (strstr (err, "100000") && strstr (err, "position 1"), "%s", err);
    cr_assert_null (text);

    //  Invalid UTF-8: each bad byte becomes U+FFFD (ef bf bd) before BPE,
    //  as llama.cpp does, so it decodes as U+FFFD.
    int32_t *ids;
    size_t n;
    cr_assert_eq (tokenizer_encode (tok, "a\xff" "b", 3, false, false, &ids, &n, NULL, 0), 0);
    text = s_decode (tok, ids, n, false, false);
    cr_assert_str_eq (text, "a\xef\xbf\xbd" "b");
    free (text);
    free (ids);

    //  Above U+10FFFF (llama.cpp aborts here): one U+FFFD per sequence.
    int32_t *fffd;
    size_t n_fffd;
    cr_assert_eq (tokenizer_encode (tok, "\xef\xbf\xbd", 3, false, false, &fffd, &n_fffd, NULL, 0), 0);
    cr_assert_eq (tokenizer_encode (tok, "\xf4\x90\x80\x80", 4, false, false, &ids, &n, NULL, 0), 0);
    cr_assert (n == n_fffd && memcmp (ids, fffd, n * sizeof (int32_t)) == 0);
    free (ids);
    cr_assert_eq (tokenizer_encode (tok, "\xf7\xbf\xbf\xbf", 4, false, false, &ids, &n, NULL, 0), 0);
    cr_assert (n == n_fffd && memcmp (ids, fffd, n * sizeof (int32_t)) == 0);
    free (ids);
    free (fffd);

    //  Random bytes never crash and give only ids of the vocabulary.
    srand (7);
    char buf[64];
    //  (plain checks in the loop: an assertion per id would flood
    //  Criterion's --full-stats channel)
    for (int round = 0; round < 2000; round++) {
        size_t blen = (size_t) (rand () % 63);
        for (size_t i = 0; i < blen; i++)
            buf[i] = (char) (rand () % 4 == 0 ? ' ' : rand () % 256);
        if (tokenizer_encode (tok, buf, blen, true, true, &ids, &n, NULL, 0) != 0)
            cr_assert_fail ("encode failed on random bytes (round %d)", round);
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= tokenizer_n_tokens (tok))
                cr_assert_fail ("round %d: id %d out of range", round, ids[i]);
        free (ids);
    }
    cr_assert_eq (tokenizer_encode (tok, NULL, 0, false, false, &ids, &n, NULL, 0), 0);
    cr_assert_eq (n, 0);
    free (ids);
    tokenizer_destroy (&tok);
}

Test (tokenizer, construction_errors)
{
    char err[256] = "";
    tokenizer_vocab_t v;
    cr_assert_eq (tokenizer_vocab_defaults (&v, "gpt2", "no-such-pre", err, sizeof err), -1);
    cr_assert (strstr (err, "no-such-pre"), "%s", err);
    cr_assert_eq (tokenizer_vocab_defaults (&v, "bert", NULL, err, sizeof err), -1);
    cr_assert (strstr (err, "bert"), "%s", err);
    cr_assert_eq (tokenizer_vocab_defaults (&v, "gpt2", "smollm", err, sizeof err), 0);
    cr_assert_eq (v.pre, TOKENIZER_PRE_SMOLLM);
    cr_assert_not (v.clean_spaces);
    cr_assert_eq (tokenizer_vocab_defaults (&v, "gpt2", "llama-bpe", err, sizeof err), 0);
    cr_assert (v.add_bos && v.ignore_merges && v.pre == TOKENIZER_PRE_LLAMA3);
    cr_assert_eq (tokenizer_vocab_defaults (&v, "llama", NULL, err, sizeof err), 0);
    cr_assert (v.model == TOKENIZER_MODEL_SPM && v.add_bos && v.add_space_prefix);

    //  no tokens
    v.n_tokens = 0;
    cr_assert_null (tokenizer_new (&v, err, sizeof err));
    cr_assert (strstr (err, "vocabulary size"), "%s", err);
    //  BOS asked for but out of range
    const char *toks[] = { "a", "b" };
    v.n_tokens = 2;
    v.tokens = toks;
    v.bos_id = 7;
    cr_assert_null (tokenizer_new (&v, err, sizeof err));
    cr_assert (strstr (err, "BOS"), "%s", err);
}

//  One tokenizer, several threads: encode shares only read-only state.
typedef struct {
    const tokenizer_t *tok;
    const char *text;
    int32_t *ids;
    size_t n;
    int rc;
} s_job_t;

static void *
s_encode_job (void *arg)
{
    s_job_t *job = arg;
    for (int round = 0; round < 200 && job->rc == 0; round++) {
        free (job->ids);
        job->rc = tokenizer_encode (job->tok, job->text, strlen (job->text), true, true,
                                    &job->ids, &job->n, NULL, 0);
    }
    return NULL;
}

Test (tokenizer, encode_from_many_threads)
{
    tokenizer_t *tok = s_bpe (TOKENIZER_PRE_LLAMA3, false);
    const char *text = "hello world <|im_start|> 12345 \xf0\x9f\x98\x80 hello   world\n\n";
    int32_t *want;
    size_t n_want;
    cr_assert_eq (tokenizer_encode (tok, text, strlen (text), true, true, &want, &n_want, NULL, 0), 0);
    s_job_t jobs[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (s_job_t) { tok, text, NULL, 0, 0 };
        cr_assert_eq (pthread_create (&threads[i], NULL, s_encode_job, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join (threads[i], NULL);
        cr_assert_eq (jobs[i].rc, 0);
        cr_assert_eq (jobs[i].n, n_want);
        cr_assert (memcmp (jobs[i].ids, want, n_want * sizeof (int32_t)) == 0, "thread %d", i);
        free (jobs[i].ids);
    }
    free (want);
    tokenizer_destroy (&tok);
}

//  --- an SPM toy vocabulary ---------------------------------------------

static tokenizer_t *
s_spm (void)
{
    int32_t n = 0;
    const char *fixed[] = { "<unk>", "<s>", "</s>" };
    int32_t fixed_types[] = { TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL };
    for (int k = 0; k < 3; k++, n++) {
        snprintf (s_texts[n], 32, "%s", fixed[k]);
        s_types[n] = fixed_types[k];
        s_scores[n] = 0;
    }
    for (int b = 0; b < 256; b++, n++) {                          //  3..258
        snprintf (s_texts[n], 32, "<0x%02X>", b);
        s_types[n] = TOKEN_TYPE_BYTE;
        s_scores[n] = 0;
    }
    //  pieces and scores: higher score merges first
    struct { const char *t; float s; } pieces[] = {
        { "\xe2\x96\x81", -1 }, { "h", -2 }, { "e", -2 }, { "l", -2 }, { "o", -2 },   //  259..263
        { "\xe2\x96\x81h", -3 }, { "el", -5 }, { "he", -4 }, { "ll", -3.5f },          //  264..267
        { "\xe2\x96\x81he", -6 }, { "\xe2\x96\x81hell", -7 }, { "\xe2\x96\x81hello", -8 }, //  268..270
        { "lo", -9 }, { "w", -2 }, { "\xe2\x96\x81w", -3 },                           //  271..273
    };
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++, n++) {
        snprintf (s_texts[n], 32, "%s", pieces[k].t);
        s_types[n] = TOKEN_TYPE_NORMAL;
        s_scores[n] = pieces[k].s;
    }
    for (int32_t i = 0; i < n; i++)
        s_ptrs[i] = s_texts[i];
    tokenizer_vocab_t v;
    char err[256] = "";
    cr_assert_eq (tokenizer_vocab_defaults (&v, "llama", NULL, err, sizeof err), 0);
    v.n_tokens = n;
    v.tokens = s_ptrs;
    v.types = s_types;
    v.scores = s_scores;
    tokenizer_t *tok = tokenizer_new (&v, err, sizeof err);
    cr_assert_not_null (tok, "%s", err);
    return tok;
}

Test (tokenizer, spm_scores_space_prefix_and_byte_fallback)
{
    tokenizer_t *tok = s_spm ();
    //  "▁hello": ▁h (-3) and ll (-3.5) first, then ▁he? no: ▁h+e needs
    //  "▁he" (-6) vs "el" gone... worked by hand: ▁h, ll, ▁he, ▁hell, ▁hello
    EXPECT (tok, "hello", false, false, 270);
    //  add_special puts BOS first; "w" gets the space prefix only at start
    EXPECT (tok, "hello w", true, false, 1, 270, 273);
    //  é is not a piece: its UTF-8 bytes become <0xC3> <0xA9>
    EXPECT (tok, "\xc3\xa9", false, false, 259, 3 + 0xc3, 3 + 0xa9);
    //  control text parsed on request; as in llama.cpp the text after a
    //  special token gets the space prefix again
    EXPECT (tok, "</s>h", false, true, 2, 264);
    const int32_t ids[] = { 1, 270, 273, 3 + 0xc3, 3 + 0xa9 };
    //  llama.cpp keeps the leading space when it removes a BOS
    char *text = s_decode (tok, ids, 5, true, false);
    cr_assert_str_eq (text, " hello w\xc3\xa9");
    free (text);
    text = s_decode (tok, ids + 1, 4, false, false);
    cr_assert_str_eq (text, "hello w\xc3\xa9");              //  leading space of ▁hello stripped
    free (text);
    tokenizer_destroy (&tok);
}

Test (tokenizer, stream_holds_back_split_utf8)
{
    tokenizer_t *tok = s_spm ();
    tokenizer_stream_t *stream = tokenizer_stream_new (tok, false);
    cr_assert_not_null (stream);
    //  "é😀" as byte tokens: c3 a9 f0 9f 98 80
    const int32_t ids[] = { 270, 3 + 0xc3, 3 + 0xa9, 3 + 0xf0, 3 + 0x9f, 3 + 0x98, 3 + 0x80 };
    const char *want[] = { "hello", "", "\xc3\xa9", "", "", "", "\xf0\x9f\x98\x80" };
    for (size_t i = 0; i < 7; i++) {
        const char *text;
        size_t len;
        cr_assert_eq (tokenizer_stream_push (stream, ids[i], &text, &len, NULL, 0), 0);
        cr_assert_eq (len, strlen (want[i]), "push %zu: %zu bytes", i, len);
        cr_assert (memcmp (text, want[i], len) == 0, "push %zu", i);
    }
    //  an incomplete tail comes out on flush
    const char *text;
    size_t len;
    cr_assert_eq (tokenizer_stream_push (stream, 3 + 0xe2, &text, &len, NULL, 0), 0);
    cr_assert_eq (len, 0);
    tokenizer_stream_flush (stream, &text, &len);
    cr_assert_eq (len, 1);
    cr_assert_eq ((uint8_t) text[0], 0xe2);
    //  a bad id is an error and leaves the stream usable
    char err[128] = "";
    cr_assert_eq (tokenizer_stream_push (stream, 99999, &text, &len, err, sizeof err), -1);
    cr_assert (strstr (err, "out of range"), "%s", err);
    //  a stray continuation byte can never complete: it passes through
    cr_assert_eq (tokenizer_stream_push (stream, 3 + 0x80, &text, &len, NULL, 0), 0);
    cr_assert_eq (len, 1);
    tokenizer_stream_destroy (&stream);
    cr_assert_null (stream);
    tokenizer_destroy (&tok);

    cr_assert_eq (tokenizer_utf8_incomplete_tail ("ab", 2), 0);
    cr_assert_eq (tokenizer_utf8_incomplete_tail ("a\xc3", 2), 1);
    cr_assert_eq (tokenizer_utf8_incomplete_tail ("\xe2\x82", 2), 2);
    cr_assert_eq (tokenizer_utf8_incomplete_tail ("\xe2\x82\xac", 3), 0);
    cr_assert_eq (tokenizer_utf8_incomplete_tail ("\xf0\x9f\x98", 3), 3);
    cr_assert_eq (tokenizer_utf8_incomplete_tail ("\x80\x80", 2), 0);
    cr_assert_eq (tokenizer_utf8_incomplete_tail ("\xff", 1), 0);
}

//  --- chat template -----------------------------------------------------

//  SmolLM2-Instruct's tokenizer.chat_template, verbatim.
static const char *s_smollm_template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

Test (chat_template, chatml_with_default_system)
{
    char err[256] = "";
    chat_template_t *t = chat_template_new (s_smollm_template, strlen (s_smollm_template), err, sizeof err);
    cr_assert_not_null (t, "%s", err);
    cr_assert_eq (chat_template_kind (t), CHAT_TEMPLATE_CHATML);
    cr_assert_str_eq (chat_template_default_system (t),
                      "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    chat_message_t msgs[] = { { "user", "Hi" }, { "assistant", "Hello" }, { "user", "2+2?" } };
    char *text;
    size_t len;
    cr_assert_eq (chat_template_apply (t, msgs, 3, true, &text, &len, err, sizeof err), 0);
    cr_assert_str_eq (text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
    cr_assert_eq (len, strlen (text));
    free (text);
    //  an explicit system message replaces the default
    chat_message_t sys[] = { { "system", "Be terse." }, { "user", "Hi" } };
    cr_assert_eq (chat_template_apply (t, sys, 2, false, &text, &len, err, sizeof err), 0);
    cr_assert_str_eq (text, "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    free (text);
    //  nothing at all: only the generation prompt (the loop never runs)
    cr_assert_eq (chat_template_apply (t, NULL, 0, true, &text, &len, err, sizeof err), 0);
    cr_assert_str_eq (text, "<|im_start|>assistant\n");
    free (text);
    //  a message without content is refused
    chat_message_t bad[] = { { "user", NULL } };
    cr_assert_eq (chat_template_apply (t, bad, 1, true, &text, &len, err, sizeof err), -1);
    cr_assert (strstr (err, "message 0"), "%s", err);
    chat_template_destroy (&t);
    cr_assert_null (t);
}

Test (chat_template, plain_chatml_and_unsupported_formats)
{
    char err[256] = "";
    const char *qwen_like = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}";
    chat_template_t *t = chat_template_new (qwen_like, strlen (qwen_like), err, sizeof err);
    cr_assert_not_null (t, "%s", err);
    cr_assert_null (chat_template_default_system (t));
    chat_message_t msgs[] = { { "user", "x" } };
    char *text;
    size_t len;
    cr_assert_eq (chat_template_apply (t, msgs, 1, true, &text, &len, err, sizeof err), 0);
    cr_assert_str_eq (text, "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
    free (text);
    chat_template_destroy (&t);

    const char *llama3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}";
    cr_assert_null (chat_template_new (llama3, strlen (llama3), err, sizeof err));
    cr_assert (strstr (err, "Llama 3") && strstr (err, "not supported"), "%s", err);
}

//  Every ChatML template from llama.cpp's collection (plus SmolLM2's own),
//  rendered by jinja2 in tests/golden/tokenizer/chat_templates.txt: the
//  renderer must refuse a template or reproduce jinja2 byte for byte.
static char *
s_slurp (const char *path, size_t *len)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return NULL;
    fseek (f, 0, SEEK_END);
    long n = ftell (f);
    fseek (f, 0, SEEK_SET);
    char *buf = malloc ((size_t) n + 1);
    cr_assert_not_null (buf);
    cr_assert_eq (fread (buf, 1, (size_t) n, f), (size_t) n);
    buf[n] = 0;
    fclose (f);
    *len = (size_t) n;
    return buf;
}

static size_t
s_unhex (const char *hex, size_t hex_len, char *out)
{
    if (hex_len == 1 && hex[0] == '-')
        return 0;
    size_t n = 0;
    for (size_t i = 0; i + 1 < hex_len; i += 2) {
        unsigned v;
        sscanf (hex + i, "%2x", &v);
        out[n++] = (char) v;
    }
    return n;
}

Test (chat_template, llama_cpp_chatml_templates_match_jinja2)
{
    const char *dir = SPLITMESH_SOURCE_DIR "/tests/golden/tokenizer/";
    size_t glen;
    char path[512];
    snprintf (path, sizeof path, "%schat_templates.txt", dir);
    char *golden = s_slurp (path, &glen);
    cr_assert_not_null (golden, "missing %s", path);
    char current[256] = "";
    chat_template_t *tmpl = NULL;
    bool refused = false;
    int accepted = 0, rendered = 0;
    bool smollm_ok = false, qwen_ok = false;
    static char roles[16][32], contents[16][1024], expected[65536];
    char *save = NULL;
    for (char *line = strtok_r (golden, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        char *tab = strchr (line, '\t');
        *tab = 0;
        if (strcmp (line, current) != 0) {
            chat_template_destroy (&tmpl);
            snprintf (current, sizeof current, "%s", line);
            snprintf (path, sizeof path, "%stemplates/%s", dir, line);
            size_t slen;
            char *src = s_slurp (path, &slen);
            cr_assert_not_null (src, "missing %s", path);
            char err[256] = "";
            tmpl = chat_template_new (src, slen, err, sizeof err);
            refused = tmpl == NULL;
            if (refused)
                cr_log_info ("%s: refused (%s)", line, err);
            else
                accepted++;
            free (src);
        }
        if (refused)
            continue;
        int agp = tab[1] - '0';
        char *conv = strchr (tab + 1, '\t') + 1;
        char *hex = strchr (conv, '\t') + 1;
        if (strcmp (hex, "ERROR") == 0)
            continue;                   //  jinja2 itself raised: no reference
        chat_message_t msgs[16];
        size_t n_msgs = 0;
        if (!(conv[0] == '-' && conv[1] == '\t')) {
            for (char *m = conv; m < hex - 1; n_msgs++) {
                char *colon = strchr (m, ':');
                char *stop = strpbrk (colon, ",\t");
                snprintf (roles[n_msgs], 32, "%.*s", (int) (colon - m), m);
                size_t cl = s_unhex (colon + 1, (size_t) (stop - colon - 1), contents[n_msgs]);
                contents[n_msgs][cl] = 0;
                msgs[n_msgs] = (chat_message_t) { roles[n_msgs], contents[n_msgs] };
                m = stop + 1;
            }
        }
        size_t elen = s_unhex (hex, strlen (hex), expected);
        char *text;
        size_t len;
        char err[256] = "";
        cr_assert_eq (chat_template_apply (tmpl, msgs, n_msgs, agp, &text, &len, err, sizeof err), 0,
                      "%s: %s", current, err);
        cr_expect (len == elen && memcmp (text, expected, len) == 0,
                   "%s accepted but renders differently from jinja2 (%zu messages, generation prompt %d):\n"
                   "%s\n--- jinja2:\n%.*s", current, n_msgs, agp, text, (int) elen, expected);
        if (len == elen && memcmp (text, expected, len) == 0) {
            if (strstr (current, "SmolLM2"))
                smollm_ok = true;
            if (strstr (current, "Qwen2.5"))
                qwen_ok = true;
        }
        rendered++;
        free (text);
    }
    chat_template_destroy (&tmpl);
    free (golden);
    cr_assert (smollm_ok, "SmolLM2's template must be supported");
    cr_assert (qwen_ok, "Qwen2.5's template must be supported");
    cr_log_info ("%d ChatML templates accepted, %d renderings identical to jinja2", accepted, rendered);
}

//  Random vocabularies (odd bytes, empty and duplicate tokens, unknown
//  types, merges naming nothing, NaN scores) and random text: building
//  either succeeds or fails with a message, and a built tokenizer never
//  crashes and only returns ids of its own vocabulary.
Test (tokenizer, random_vocabularies_never_crash)
{
    srand (11);
    static char texts[64][8];
    static const char *toks[64];
    static char merge_text[32][20];
    static const char *merges[32];
    static int32_t types[64];
    static float scores[64];
    char err[256];
    for (int round = 0; round < 300; round++) {
        int n = 1 + rand () % 64;
        for (int i = 0; i < n; i++) {
            int len = rand () % 4;
            for (int k = 0; k < len; k++)
                texts[i][k] = (char) (rand () % 3 ? 'a' + rand () % 4 : rand () % 256);
            texts[i][len] = 0;
            toks[i] = texts[i];
            types[i] = rand () % 9 - 1;                    //  includes -1, 7, 8
            scores[i] = rand () % 10 ? (float) (rand () % 100) - 50 : __builtin_nanf ("");
        }
        int n_merges = rand () % 32;
        for (int i = 0; i < n_merges; i++) {
            snprintf (merge_text[i], sizeof merge_text[i], "%s %s", texts[rand () % n], texts[rand () % n]);
            merges[i] = merge_text[i];
        }
        tokenizer_vocab_t v = {
            .model = rand () % 2 ? TOKENIZER_MODEL_BPE : TOKENIZER_MODEL_SPM,
            .pre = (tokenizer_pre_t) (rand () % TOKENIZER_PRE_COUNT),
            .n_tokens = n, .tokens = toks, .types = types, .scores = scores,
            .n_merges = n_merges, .merges = merges,
            .bos_id = rand () % 70 - 2, .eos_id = rand () % 70 - 2, .eot_id = TOKENIZER_NULL,
            .unk_id = rand () % 3 ? 0 : TOKENIZER_NULL, .pad_id = TOKENIZER_NULL,
            .add_bos = rand () % 2, .add_eos = rand () % 2, .add_space_prefix = rand () % 2,
            .clean_spaces = rand () % 2, .ignore_merges = rand () % 2
        };
        tokenizer_t *tok = tokenizer_new (&v, err, sizeof err);
        if (!tok) {
            if (err[0] == 0)
                cr_assert_fail ("round %d: refused without a message", round);
            continue;
        }
        for (int t = 0; t < 20; t++) {
            char text[48];
            size_t len = (size_t) (rand () % 48);
            for (size_t k = 0; k < len; k++)
                text[k] = (char) (rand () % 2 ? 'a' + rand () % 4 : rand () % 256);
            int32_t *ids;
            size_t n_ids;
            if (tokenizer_encode (tok, text, len, rand () % 2, rand () % 2, &ids, &n_ids, err, sizeof err) != 0)
                cr_assert_fail ("round %d: encode failed: %s", round, err);
            for (size_t k = 0; k < n_ids; k++)
                if (ids[k] < 0 || ids[k] >= n)
                    cr_assert_fail ("round %d: id %d outside a vocabulary of %d", round, ids[k], n);
            char *out;
            size_t out_len;
            if (tokenizer_decode (tok, ids, n_ids, rand () % 2, rand () % 2, &out, &out_len, err, sizeof err) != 0)
                cr_assert_fail ("round %d: decode failed: %s", round, err);
            free (out);
            free (ids);
        }
        tokenizer_destroy (&tok);
    }
}
