/*  tokenizer.h: text <-> token ids from a model file's own vocabulary.

    splitmesh never ships its own vocabulary: the ids a model understands are
    the ones its GGUF file lists, so the tokenizer is built from that file's
    metadata (tokens, scores, token types, BPE merges, pre-tokenizer name,
    special ids) and must produce exactly the ids llama.cpp produces for it.
    Two algorithms are implemented:

      - byte-level BPE ("gpt2" model: GPT-2, Llama 3, SmolLM, StarCoder...):
        the text is split into words by the model's pre-tokenizer regexes
        (the strings from llama.cpp's llama-vocab.cpp, run through PCRE2 with
        UTF and UCP), each word's bytes are mapped to the GPT-2 byte alphabet
        and merged by merge rank;
      - SentencePiece-style BPE ("llama" model: Llama 2, TinyLlama, Mistral):
        spaces become U+2581, a space is prefixed, pieces merge by score and
        unknown characters fall back to <0xXX> byte tokens.

    Special tokens (CONTROL, USER_DEFINED, UNKNOWN types) are cut out of the
    text before either algorithm runs; CONTROL and UNKNOWN ones only when the
    caller asks (parse_special), USER_DEFINED ones always, as llama.cpp does.
    tokenizer_encode_protected parses them everywhere except inside given
    byte ranges (the messages of a rendered chat, see chat_template.h).

    The core takes a plain tokenizer_vocab_t, so it can be tested without a
    GGUF reader; tokenizer_new_from_gguf fills one from a gguf_t.

    A tokenizer_t is immutable after creation: encode and decode may run from
    several threads at once. A tokenizer_stream_t belongs to one thread.
*/
#ifndef SPLITMESH_TOKENIZER_H
#define SPLITMESH_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _tokenizer_t tokenizer_t;
typedef struct _gguf_t gguf_t;

#define TOKENIZER_NULL          (-1)        //  "no such token"
#define TOKENIZER_MAX_TOKENS    (1 << 22)   //  vocabulary size we accept
#define TOKENIZER_MAX_TEXT      (64u << 20) //  one encode call, bytes

typedef enum {
    TOKENIZER_MODEL_BPE = 1,        //  tokenizer.ggml.model "gpt2"
    TOKENIZER_MODEL_SPM = 2         //  tokenizer.ggml.model "llama"
} tokenizer_model_t;

//  Pre-tokenizers (tokenizer.ggml.pre), BPE only. Each names a list of
//  regexes copied from llama.cpp.
typedef enum {
    TOKENIZER_PRE_DEFAULT = 0,      //  missing or "default"
    TOKENIZER_PRE_GPT2,             //  "gpt-2", "mpt", "olmo", "phi-2", ...
    TOKENIZER_PRE_LLAMA3,           //  "llama-bpe", "llama3", "llama-v3", ...
    TOKENIZER_PRE_SMOLLM,           //  "smollm", "starcoder", "refact", ...
    TOKENIZER_PRE_COUNT
} tokenizer_pre_t;

//  Token types as GGUF stores them (tokenizer.ggml.token_type).
typedef enum {
    TOKEN_TYPE_UNDEFINED    = 0,
    TOKEN_TYPE_NORMAL       = 1,
    TOKEN_TYPE_UNKNOWN      = 2,
    TOKEN_TYPE_CONTROL      = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED       = 5,
    TOKEN_TYPE_BYTE         = 6
} token_type_t;

//  Everything the tokenizer needs, as plain arrays. tokenizer_new copies it
//  all: the caller keeps ownership and may free it afterwards.
typedef struct {
    tokenizer_model_t model;
    tokenizer_pre_t pre;            //  BPE only
    int32_t n_tokens;
    const char *const *tokens;      //  n_tokens strings, token_lens[i] bytes each
    const size_t *token_lens;       //  NULL: tokens are NUL-terminated
    const float *scores;            //  NULL: all 0 (SPM needs them)
    const int32_t *types;           //  NULL: all NORMAL; else token_type_t values
    int32_t n_merges;               //  BPE: "left right" strings, rank = index
    const char *const *merges;
    const size_t *merge_lens;       //  NULL: NUL-terminated
    int32_t bos_id, eos_id, eot_id, unk_id, pad_id; //  TOKENIZER_NULL if none
    bool add_bos;                   //  prepend BOS when add_special
    bool add_eos;                   //  append EOS when add_special
    bool add_space_prefix;          //  SPM: " " before the first text fragment
    bool clean_spaces;              //  decode: drop " ," " ." etc. (llama.cpp)
    bool ignore_merges;             //  BPE: a word that is a token is one token
} tokenizer_vocab_t;

//  Fills *vocab with llama.cpp's defaults for a model and pre-tokenizer name
//  (special ids, add_bos, clean_spaces, ...) and no tokens. pre_name may be
//  NULL or "". Returns 0, or -1 with a message for an unknown model or
//  pre-tokenizer.
int tokenizer_vocab_defaults (tokenizer_vocab_t *vocab, const char *model_name,
                              const char *pre_name, char *err, size_t err_size);

//  Builds a tokenizer. Returns NULL and writes the reason into err on bad
//  input (duplicate-free checks are not made: later duplicates win lookups,
//  as in llama.cpp). Caller owns the result and must destroy it.
tokenizer_t *tokenizer_new (const tokenizer_vocab_t *vocab, char *err, size_t err_size);

//  Builds a tokenizer from a GGUF file's tokenizer.* metadata. The gguf_t
//  may be closed afterwards. Caller owns the result and must destroy it.
tokenizer_t *tokenizer_new_from_gguf (const gguf_t *gguf, char *err, size_t err_size);

//  Frees; sets *self_p to NULL. Safe on NULL.
void tokenizer_destroy (tokenizer_t **self_p);

//  Text to ids. add_special adds BOS/EOS as the vocabulary says;
//  parse_special lets CONTROL tokens written in the text ("<|im_start|>")
//  become their ids. Any bytes are accepted: invalid UTF-8 is handled like
//  llama.cpp (BPE: each bad byte becomes U+FFFD). On success returns 0 and
//  sets *ids_p (caller frees with free()) and *n_ids_p. Returns -1 with a
//  message when text is longer than TOKENIZER_MAX_TEXT or memory runs out.
int tokenizer_encode (const tokenizer_t *self, const char *text, size_t len,
                      bool add_special, bool parse_special,
                      int32_t **ids_p, size_t *n_ids_p, char *err, size_t err_size);

//  tokenizer_encode with parse_special, except that special-token text
//  overlapping one of the n_ranges protected byte ranges (ranges holds
//  start, length pairs) stays plain text. For chat prompts: the template's
//  role markers become control tokens, while "<|im_end|>" typed by a user
//  inside a message cannot end the turn and forge a system message. Where
//  no protected range holds special-token text, the ids are exactly those
//  of tokenizer_encode. Returns -1 with a message for a range outside the
//  text; otherwise as tokenizer_encode.
int tokenizer_encode_protected (const tokenizer_t *self, const char *text, size_t len,
                                bool add_special, const size_t *ranges, size_t n_ranges,
                                int32_t **ids_p, size_t *n_ids_p, char *err, size_t err_size);

//  One token's text. special: show CONTROL/UNKNOWN tokens' text (otherwise
//  they decode to ""). Sets *piece (owned by the tokenizer, valid while it
//  lives) and *len. Returns 0, or -1 with a message for an id out of range.
int tokenizer_token_to_piece (const tokenizer_t *self, int32_t id, bool special,
                              const char **piece, size_t *len, char *err, size_t err_size);

//  Ids to text, like llama.cpp's llama_detokenize: remove_special drops a
//  leading BOS / trailing EOS the vocabulary adds; unparse_special renders
//  CONTROL tokens. Sets *text_p (NUL-terminated, caller frees with free())
//  and *len_p. Returns -1 with a message naming the first id out of range.
int tokenizer_decode (const tokenizer_t *self, const int32_t *ids, size_t n_ids,
                      bool remove_special, bool unparse_special,
                      char **text_p, size_t *len_p, char *err, size_t err_size);

int32_t tokenizer_n_tokens (const tokenizer_t *self);
tokenizer_model_t tokenizer_model (const tokenizer_t *self);
tokenizer_pre_t tokenizer_pre (const tokenizer_t *self);
int32_t tokenizer_bos (const tokenizer_t *self);
int32_t tokenizer_eos (const tokenizer_t *self);
int32_t tokenizer_eot (const tokenizer_t *self);
bool tokenizer_add_bos (const tokenizer_t *self);
//  True for ids that end generation (EOS, EOT, "<|im_end|>", ...).
bool tokenizer_is_eog (const tokenizer_t *self, int32_t id);
//  True for CONTROL / UNKNOWN / USER_DEFINED ids.
bool tokenizer_is_special (const tokenizer_t *self, int32_t id);
//  The id whose text is exactly text[0..len), or TOKENIZER_NULL.
int32_t tokenizer_find (const tokenizer_t *self, const char *text, size_t len);
//  Raw vocabulary text of an id (not decoded), or NULL when out of range.
const char *tokenizer_token_text (const tokenizer_t *self, int32_t id, size_t *len);

//  --- streaming decode -------------------------------------------------
//  Services stream text token by token; a token may end in the middle of a
//  UTF-8 sequence (byte tokens, or emoji split over BPE pieces). The stream
//  holds back a trailing incomplete sequence until the bytes that complete
//  it arrive, so every chunk it hands out is whole characters. Bytes that
//  can never complete (a stray continuation byte, a lead byte followed by a
//  non-continuation) pass through as they are: the concatenation of all
//  chunks plus the flush always equals tokenizer_decode of the same ids.
typedef struct _tokenizer_stream_t tokenizer_stream_t;

//  special: render CONTROL tokens (as unparse_special). The tokenizer must
//  outlive the stream. Caller owns the result and must destroy it.
tokenizer_stream_t *tokenizer_stream_new (const tokenizer_t *tok, bool special);
void tokenizer_stream_destroy (tokenizer_stream_t **self_p);

//  Adds one token. Sets *text / *len to the bytes now complete (possibly
//  none); the pointer is owned by the stream and valid until the next call.
//  Returns 0, or -1 with a message for an id out of range (nothing added).
int tokenizer_stream_push (tokenizer_stream_t *self, int32_t id,
                           const char **text, size_t *len, char *err, size_t err_size);

//  Hands out whatever is held back (an incomplete sequence at the end of
//  generation) and resets the stream for a new sequence.
void tokenizer_stream_flush (tokenizer_stream_t *self, const char **text, size_t *len);

//  Number of bytes at the end of buf[0..len) that begin a UTF-8 sequence
//  still missing continuation bytes (0..3). Exposed for tests and services.
size_t tokenizer_utf8_incomplete_tail (const char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
