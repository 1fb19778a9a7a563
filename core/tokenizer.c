/*  tokenizer.c: byte-level BPE and SentencePiece-style BPE, id-exact with llama.cpp.

    The model's ids are defined by llama.cpp's tokenizer (src/llama-vocab.cpp
    and src/unicode.cpp), so this file follows its algorithms step by step:
    the special-token partition, the pre-tokenizer split (llama.cpp's regex
    strings, run through PCRE2), the GPT-2 byte alphabet, the rank-ordered
    merge queue with its tie-breaking, the SPM score queue with <0xXX> byte
    fallback, and the piece rules of llama_token_to_piece / llama_detokenize.
    Where llama.cpp has quirks (invalid UTF-8 becomes U+FFFD per bad byte
    before BPE; a byte with no token is dropped), they are reproduced, and the
    tests compare against ids llama.cpp produced.

    PCRE2 and llama.cpp classify characters from different tables: \s
    differs (U+0085 is whitespace to llama.cpp, not to PCRE2), and PCRE2
    10.42 knows Unicode 14 where llama.cpp knows 15.1. So every \s and \S in
    a pattern is rewritten to llama.cpp's whitespace set, and \p{L} / \p{N}
    are widened by the letters and digits only llama.cpp has; the goldens
    check every code point up to U+31FFF.

    One deliberate difference: a 4-byte sequence above U+10FFFF (lead bytes
    F4 90+ to F7) makes llama.cpp throw and abort; here it is one U+FFFD.
*/
#define _GNU_SOURCE                 //  memmem
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

//  Token attributes, as llama.cpp derives them from token types.
enum {
    ATTR_UNDEFINED    = 0,
    ATTR_UNKNOWN      = 1 << 0,
    ATTR_UNUSED       = 1 << 1,
    ATTR_NORMAL       = 1 << 2,
    ATTR_CONTROL      = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE         = 1 << 5
};

#define MAX_REGEX 4

//  Open-addressing hash map from byte strings to ids. Keys point into
//  storage the tokenizer owns.
typedef struct {
    const char *key;
    uint32_t len;
    int32_t value;
} s_slot_t;

typedef struct {
    s_slot_t *slots;            //  capacity entries, key NULL when empty
    size_t capacity;            //  power of two
    size_t count;
} s_map_t;

struct _tokenizer_t {
    tokenizer_model_t model;    //  BPE or SPM
    tokenizer_pre_t pre;        //  BPE pre-tokenizer
    int32_t n_tokens;
    char **text;                //  (n_tokens) token text, NUL-terminated copies
    uint32_t *text_len;         //  (n_tokens) bytes of text[i]
    float *score;               //  (n_tokens)
    uint8_t *attr;              //  (n_tokens) ATTR_* bits
    char **piece;               //  (n_tokens) decoded text, special shown
    uint32_t *piece_len;        //  (n_tokens)
    s_map_t token_map;          //  text -> id (last duplicate wins)
    s_map_t merge_map;          //  "left right" -> rank (first duplicate wins)
    char *merge_store;          //  storage for merge keys
    int32_t *special;           //  ids partitioned out of text, longest first
    int32_t n_special;
    int32_t bos, eos, eot, unk, pad;
    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges;
    int32_t byte_token[256];    //  byte fallback token per byte, or NULL id
    pcre2_code *regex[MAX_REGEX];   //  pre-tokenizer regexes, applied in order
    int n_regex;
    uint8_t *eog;               //  (n_tokens) 1 for end-of-generation ids
};

//  --------------------------------------------------------------------------
//  Small helpers

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

typedef struct {
    int32_t *data;
    size_t size, capacity;
    bool failed;                //  an allocation failed; data is kept
} s_ids_t;

static void
s_ids_push (s_ids_t *v, int32_t id)
{
    if (v->size == v->capacity) {
        size_t capacity = v->capacity ? v->capacity * 2 : 256;
        int32_t *data = realloc (v->data, capacity * sizeof (int32_t));
        if (!data) {
            v->failed = true;
            return;
        }
        v->data = data;
        v->capacity = capacity;
    }
    v->data[v->size++] = id;
}

typedef struct {
    char *data;
    size_t size, capacity;
    bool failed;
} s_buf_t;

static void
s_buf_append (s_buf_t *b, const void *data, size_t len)
{
    if (b->size + len + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (capacity < b->size + len + 1)
            capacity *= 2;
        char *grown = realloc (b->data, capacity);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->capacity = capacity;
    }
    if (len)
        memcpy (b->data + b->size, data, len);
    b->size += len;
    b->data[b->size] = 0;
}

static uint64_t
s_hash (const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull;        //  FNV-1a
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t) key[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static int
s_map_init (s_map_t *map, size_t expected)
{
    size_t capacity = 16;
    while (capacity < expected * 2)
        capacity *= 2;
    map->slots = calloc (capacity, sizeof (s_slot_t));
    map->capacity = capacity;
    map->count = 0;
    return map->slots ? 0 : -1;
}

static int32_t
s_map_get (const s_map_t *map, const char *key, size_t len)
{
    if (!map->slots)
        return TOKENIZER_NULL;
    size_t mask = map->capacity - 1;
    size_t i = (size_t) s_hash (key, len) & mask;
    while (map->slots[i].key) {
        const s_slot_t *slot = &map->slots[i];
        if (slot->len == len && memcmp (slot->key, key, len) == 0)
            return slot->value;
        i = (i + 1) & mask;
    }
    return TOKENIZER_NULL;
}

//  Inserts or, when overwrite is set, replaces. The map never fills: it is
//  sized for the expected count up front.
static void
s_map_put (s_map_t *map, const char *key, size_t len, int32_t value, bool overwrite)
{
    size_t mask = map->capacity - 1;
    size_t i = (size_t) s_hash (key, len) & mask;
    while (map->slots[i].key) {
        s_slot_t *slot = &map->slots[i];
        if (slot->len == len && memcmp (slot->key, key, len) == 0) {
            if (overwrite)
                slot->value = value;
            return;
        }
        i = (i + 1) & mask;
    }
    assert (map->count + 1 < map->capacity);
    map->slots[i].key = key;
    map->slots[i].len = (uint32_t) len;
    map->slots[i].value = value;
    map->count++;
}

//  --------------------------------------------------------------------------
//  UTF-8, the way llama.cpp's unicode.cpp reads and writes it

static size_t
s_utf8_len (uint8_t lead)
{
    static const uint8_t lookup[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return lookup[lead >> 4];
}

//  unicode_cpt_from_utf8 + the U+FFFD fallback of unicode_cpts_from_utf8:
//  one bad byte becomes one U+FFFD. Overlong forms and surrogates decode as
//  llama.cpp decodes them. Code points above U+10FFFF (which llama.cpp
//  cannot re-encode and throws on) also become U+FFFD.
static uint32_t
s_utf8_decode (const uint8_t *s, size_t len, size_t *offset)
{
    size_t o = *offset;
    uint8_t c = s[o];
    if (!(c & 0x80)) {
        *offset = o + 1;
        return c;
    }
    if (!(c & 0x40))
        goto invalid;
    if (!(c & 0x20)) {
        if (o + 1 >= len || (s[o + 1] & 0xc0) != 0x80)
            goto invalid;
        *offset = o + 2;
        return ((uint32_t) (c & 0x1f) << 6) | (s[o + 1] & 0x3f);
    }
    if (!(c & 0x10)) {
        if (o + 2 >= len || (s[o + 1] & 0xc0) != 0x80 || (s[o + 2] & 0xc0) != 0x80)
            goto invalid;
        *offset = o + 3;
        return ((uint32_t) (c & 0x0f) << 12) | ((uint32_t) (s[o + 1] & 0x3f) << 6) | (s[o + 2] & 0x3f);
    }
    if (!(c & 0x08)) {
        if (o + 3 >= len || (s[o + 1] & 0xc0) != 0x80 || (s[o + 2] & 0xc0) != 0x80
        ||  (s[o + 3] & 0xc0) != 0x80)
            goto invalid;
        uint32_t cpt = ((uint32_t) (c & 0x07) << 18) | ((uint32_t) (s[o + 1] & 0x3f) << 12)
                     | ((uint32_t) (s[o + 2] & 0x3f) << 6) | (s[o + 3] & 0x3f);
        *offset = o + 4;
        return cpt <= 0x10ffff ? cpt : 0xfffd;
    }
invalid:
    *offset = o + 1;
    return 0xfffd;
}

static size_t
s_utf8_encode (uint32_t cpt, char *out)
{
    if (cpt <= 0x7f) {
        out[0] = (char) cpt;
        return 1;
    }
    if (cpt <= 0x7ff) {
        out[0] = (char) (0xc0 | ((cpt >> 6) & 0x1f));
        out[1] = (char) (0x80 | (cpt & 0x3f));
        return 2;
    }
    if (cpt <= 0xffff) {
        out[0] = (char) (0xe0 | ((cpt >> 12) & 0x0f));
        out[1] = (char) (0x80 | ((cpt >> 6) & 0x3f));
        out[2] = (char) (0x80 | (cpt & 0x3f));
        return 3;
    }
    out[0] = (char) (0xf0 | ((cpt >> 18) & 0x07));
    out[1] = (char) (0x80 | ((cpt >> 12) & 0x3f));
    out[2] = (char) (0x80 | ((cpt >> 6) & 0x3f));
    out[3] = (char) (0x80 | (cpt & 0x3f));
    return 4;
}

size_t
tokenizer_utf8_incomplete_tail (const char *buf, size_t len)
{
    //  Look back over at most 3 continuation bytes for a lead byte whose
    //  sequence runs past the end of the buffer.
    size_t back = 0;
    while (back < len && back < 4) {
        uint8_t c = (uint8_t) buf[len - 1 - back];
        if ((c & 0xc0) == 0x80) {
            back++;
            continue;
        }
        if (c >= 0xc0) {
            size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (c >= 0xf8)
                return 0;                   //  never a valid lead
            return back + 1 < need ? back + 1 : 0;
        }
        return 0;                           //  ASCII: nothing pending
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  The GPT-2 byte alphabet: printable bytes map to themselves, the rest to
//  U+0100 upwards, so that every byte is a visible character in the vocab.

static uint32_t s_byte_cpt[256];         //  byte -> code point
static int16_t s_cpt_byte[512];          //  code point (< 512) -> byte, or -1

static void
s_byte_tables_fill (void)
{
    int n = 0;
    for (int i = 0; i < 512; i++)
        s_cpt_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        s_byte_cpt[b] = printable ? (uint32_t) b : (uint32_t) (256 + n++);
    }
    for (int b = 0; b < 256; b++)
        s_cpt_byte[s_byte_cpt[b]] = (int16_t) b;
}

static void
s_byte_tables_init (void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;    //  tokenizers may be built in parallel
    pthread_once (&once, s_byte_tables_fill);
}

//  --------------------------------------------------------------------------
//  Pre-tokenizer regexes, copied verbatim from llama.cpp's llama-vocab.cpp

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3 "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const char *s_regexes[TOKENIZER_PRE_COUNT][MAX_REGEX + 1] = {
    [TOKENIZER_PRE_DEFAULT] = { "[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL },
    [TOKENIZER_PRE_GPT2]    = { RE_GPT2, NULL },
    [TOKENIZER_PRE_LLAMA3]  = { RE_LLAMA3, NULL },
    [TOKENIZER_PRE_SMOLLM]  = { "\\p{N}", RE_GPT2, NULL },
};

//  llama.cpp's whitespace (unicode_set_whitespace), as class members.
#define WS_MEMBERS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
                   "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

//  Letters and digits llama.cpp's tables (Unicode 15.1) have and PCRE2
//  10.42's (Unicode 14) lack: Kawi, Nag Mundari, CJK extensions H and I,
//  ... Found by comparing both over every code point; none go the other
//  way. test_tokenizer_golden's unicode_blocks test compares every code
//  point with llama.cpp and catches a PCRE2 upgrade that changes this.
#define L_EXTRA "\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}" \
                "\\x{1342F}\\x{13441}-\\x{13446}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}" \
                "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}" \
                "\\x{31350}-\\x{323AF}"
#define N_EXTRA "\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"

//  Rewrites \s and \S to llama.cpp's whitespace set and widens \p{L} and
//  \p{N} to llama.cpp's tables. Returns a malloc'd pattern, or NULL (out
//  of memory, or \S inside a class, which no supported pattern has).
static char *
s_translate_regex (const char *src)
{
    s_buf_t out = { 0 };
    bool in_class = false;
    for (size_t i = 0; src[i]; i++) {
        char c = src[i];
        if (c == '\\' && src[i + 1]) {
            char e = src[i + 1];
            if (e == 's') {
                if (in_class)
                    s_buf_append (&out, WS_MEMBERS, strlen (WS_MEMBERS));
                else
                    s_buf_append (&out, "[" WS_MEMBERS "]", strlen (WS_MEMBERS) + 2);
            }
            else
            if (e == 'S') {
                if (in_class) {
                    free (out.data);
                    return NULL;
                }
                s_buf_append (&out, "[^" WS_MEMBERS "]", strlen (WS_MEMBERS) + 3);
            }
            else
            if (e == 'p' && (strncmp (src + i, "\\p{L}", 5) == 0 || strncmp (src + i, "\\p{N}", 5) == 0)) {
                const char *extra = src[i + 3] == 'L' ? L_EXTRA : N_EXTRA;
                if (!in_class)
                    s_buf_append (&out, "[", 1);
                s_buf_append (&out, src + i, 5);
                s_buf_append (&out, extra, strlen (extra));
                if (!in_class)
                    s_buf_append (&out, "]", 1);
                i += 3;         //  with the i++ below: past "\p{X}"
            }
            else
                s_buf_append (&out, src + i, 2);
            i++;
            continue;
        }
        if (c == '[' && !in_class)
            in_class = true;
        else
        if (c == ']' && in_class)
            in_class = false;
        s_buf_append (&out, &c, 1);
    }
    if (out.failed) {
        free (out.data);
        return NULL;
    }
    return out.data;
}

//  --------------------------------------------------------------------------
//  Vocabulary defaults, as llama.cpp's llama_vocab::impl::load sets them

typedef struct {
    const char *name;
    tokenizer_pre_t pre;
    bool clean_spaces;
    bool ignore_merges;
    bool add_bos;
} s_pre_name_t;

static const s_pre_name_t s_pre_names[] = {
    { "default",   TOKENIZER_PRE_DEFAULT, true,  false, false },
    { "llama3",    TOKENIZER_PRE_LLAMA3,  true,  true,  true  },
    { "llama-v3",  TOKENIZER_PRE_LLAMA3,  true,  true,  true  },
    { "llama-bpe", TOKENIZER_PRE_LLAMA3,  true,  true,  true  },
    { "falcon3",   TOKENIZER_PRE_LLAMA3,  true,  true,  true  },
    { "gpt-2",     TOKENIZER_PRE_GPT2,    true,  false, false },
    { "phi-2",     TOKENIZER_PRE_GPT2,    true,  false, false },
    { "mpt",       TOKENIZER_PRE_GPT2,    true,  false, false },
    { "olmo",      TOKENIZER_PRE_GPT2,    true,  false, false },
    { "smollm",    TOKENIZER_PRE_SMOLLM,  false, false, false },
    { "starcoder", TOKENIZER_PRE_SMOLLM,  true,  false, false },
    { "refact",    TOKENIZER_PRE_SMOLLM,  true,  false, false },
    { "codeshell", TOKENIZER_PRE_SMOLLM,  true,  false, false },
    { NULL,        0,                     false, false, false }
};

int
tokenizer_vocab_defaults (tokenizer_vocab_t *vocab, const char *model_name,
                          const char *pre_name, char *err, size_t err_size)
{
    assert (vocab);
    memset (vocab, 0, sizeof (*vocab));
    vocab->eot_id = TOKENIZER_NULL;
    vocab->pad_id = TOKENIZER_NULL;
    if (model_name && strcmp (model_name, "llama") == 0) {
        vocab->model = TOKENIZER_MODEL_SPM;
        vocab->pre = TOKENIZER_PRE_DEFAULT;
        vocab->bos_id = 1;
        vocab->eos_id = 2;
        vocab->unk_id = 0;
        vocab->add_bos = true;
        vocab->add_space_prefix = true;
        return 0;
    }
    if (!model_name || strcmp (model_name, "gpt2") != 0) {
        s_err (err, err_size, "unsupported tokenizer model '%s' (supported: gpt2, llama)",
               model_name ? model_name : "(none)");
        return -1;
    }
    vocab->model = TOKENIZER_MODEL_BPE;
    vocab->bos_id = 11;
    vocab->eos_id = 11;
    vocab->unk_id = TOKENIZER_NULL;
    vocab->clean_spaces = true;
    if (!pre_name || !*pre_name)
        pre_name = "default";
    for (const s_pre_name_t *p = s_pre_names; p->name; p++) {
        if (strcmp (p->name, pre_name) == 0) {
            vocab->pre = p->pre;
            vocab->clean_spaces = p->clean_spaces;
            vocab->ignore_merges = p->ignore_merges;
            vocab->add_bos = p->add_bos;
            return 0;
        }
    }
    s_err (err, err_size, "unsupported pre-tokenizer '%s' (supported: default, gpt-2, "
           "llama-bpe/llama3, smollm, starcoder and their aliases)", pre_name);
    return -1;
}

//  --------------------------------------------------------------------------
//  Construction

//  Token texts llama.cpp treats as end of generation (and forces to CONTROL).
static const char *s_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>", NULL
};
//  The subset that names the EOT id when the file does not.
static const char *s_eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "<end_of_utterance>", NULL
};

static bool
s_text_in (const char *text, size_t len, const char **list)
{
    for (; *list; list++)
        if (strlen (*list) == len && memcmp (*list, text, len) == 0)
            return true;
    return false;
}

static uint8_t
s_attr_from_type (int32_t type)
{
    switch (type) {
        case TOKEN_TYPE_UNKNOWN:      return ATTR_UNKNOWN;
        case TOKEN_TYPE_UNUSED:       return ATTR_UNUSED;
        case TOKEN_TYPE_NORMAL:       return ATTR_NORMAL;
        case TOKEN_TYPE_CONTROL:      return ATTR_CONTROL;
        case TOKEN_TYPE_USER_DEFINED: return ATTR_USER_DEFINED;
        case TOKEN_TYPE_BYTE:         return ATTR_BYTE;
        default:                      return ATTR_UNDEFINED;
    }
}

static int
s_hexval (char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

//  The decoded text of one token with special tokens shown
//  (llama_token_to_piece with special = true, lstrip = 0).
static int
s_make_piece (tokenizer_t *self, int32_t id, s_buf_t *out)
{
    const char *text = self->text[id];
    size_t len = self->text_len[id];
    uint8_t attr = self->attr[id];
    out->size = 0;
    s_buf_append (out, "", 0);
    if (attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) {
        s_buf_append (out, text, len);
    }
    else
    if (attr & ATTR_NORMAL) {
        if (self->model == TOKENIZER_MODEL_SPM) {
            //  U+2581 (e2 96 81) back to a space
            for (size_t i = 0; i < len; i++) {
                if (i + 2 < len && (uint8_t) text[i] == 0xe2 && (uint8_t) text[i + 1] == 0x96
                &&  (uint8_t) text[i + 2] == 0x81) {
                    s_buf_append (out, " ", 1);
                    i += 2;
                }
                else
                    s_buf_append (out, text + i, 1);
            }
        }
        else {
            //  llama_decode_text: each code point back to its byte
            size_t o = 0;
            while (o < len) {
                uint32_t cpt = s_utf8_decode ((const uint8_t *) text, len, &o);
                if (cpt < 512 && s_cpt_byte[cpt] >= 0) {
                    char b = (char) s_cpt_byte[cpt];
                    s_buf_append (out, &b, 1);
                }
                else {
                    //  Not in the byte alphabet: llama.cpp writes a marker
                    //  naming the character's bytes and the token text.
                    char enc[4], hex[8];
                    size_t n = s_utf8_encode (cpt, enc);
                    s_buf_append (out, "[UNK_BYTE_0x", 12);
                    for (size_t k = 0; k < n; k++) {
                        snprintf (hex, sizeof hex, "%02x", (uint8_t) enc[k]);
                        s_buf_append (out, hex, 2);
                    }
                    s_buf_append (out, text, len);
                    s_buf_append (out, "]", 1);
                }
            }
        }
    }
    else
    if (attr & ATTR_BYTE) {
        //  "<0xAB>" -> the byte (llama.cpp: strtol of text[3..5])
        if (len >= 5) {
            int hi = s_hexval (text[3]), lo = s_hexval (text[4]);
            char b = (char) (hi >= 0 && lo >= 0 ? hi * 16 + lo : hi >= 0 ? hi : 0);
            s_buf_append (out, &b, 1);
        }
    }
    //  UNUSED and UNDEFINED tokens decode to nothing.
    return out->failed ? -1 : 0;
}

typedef struct {
    uint32_t len;
    int32_t id;
} s_special_key_t;

//  Longest first; equal lengths by id (llama.cpp's std::sort leaves their
//  order unspecified; only overlapping equal-length tokens could tell).
static int
s_cmp_special (const void *a, const void *b)
{
    const s_special_key_t *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int
s_sort_special (tokenizer_t *self)
{
    s_special_key_t *keys = malloc ((size_t) (self->n_special ? self->n_special : 1) * sizeof (*keys));
    if (!keys)
        return -1;
    for (int32_t i = 0; i < self->n_special; i++)
        keys[i] = (s_special_key_t) { self->text_len[self->special[i]], self->special[i] };
    qsort (keys, (size_t) self->n_special, sizeof (*keys), s_cmp_special);
    for (int32_t i = 0; i < self->n_special; i++)
        self->special[i] = keys[i].id;
    free (keys);
    return 0;
}

tokenizer_t *
tokenizer_new (const tokenizer_vocab_t *vocab, char *err, size_t err_size)
{
    assert (vocab);
    s_byte_tables_init ();
    tokenizer_t *self = NULL;
    s_buf_t piece = { 0 };

    if (vocab->model != TOKENIZER_MODEL_BPE && vocab->model != TOKENIZER_MODEL_SPM) {
        s_err (err, err_size, "unknown tokenizer model %d", (int) vocab->model);
        goto fail;
    }
    if (vocab->n_tokens <= 0 || vocab->n_tokens > TOKENIZER_MAX_TOKENS || !vocab->tokens) {
        s_err (err, err_size, "vocabulary size %d out of range 1..%d",
               (int) vocab->n_tokens, TOKENIZER_MAX_TOKENS);
        goto fail;
    }
    if (vocab->model == TOKENIZER_MODEL_BPE && (vocab->pre < 0 || vocab->pre >= TOKENIZER_PRE_COUNT)) {
        s_err (err, err_size, "unknown pre-tokenizer %d", (int) vocab->pre);
        goto fail;
    }
    if (vocab->n_merges < 0 || (vocab->n_merges > 0 && !vocab->merges)) {
        s_err (err, err_size, "bad merge list");
        goto fail;
    }
    self = calloc (1, sizeof (*self));
    if (!self)
        goto oom;
    int32_t n = vocab->n_tokens;
    self->model = vocab->model;
    self->pre = vocab->pre;
    self->n_tokens = n;
    self->add_bos = vocab->add_bos;
    self->add_eos = vocab->add_eos;
    self->add_space_prefix = vocab->add_space_prefix;
    self->clean_spaces = vocab->clean_spaces;
    self->ignore_merges = vocab->ignore_merges;
    self->text = calloc ((size_t) n, sizeof (char *));
    self->text_len = calloc ((size_t) n, sizeof (uint32_t));
    self->score = calloc ((size_t) n, sizeof (float));
    self->attr = calloc ((size_t) n, 1);
    self->piece = calloc ((size_t) n, sizeof (char *));
    self->piece_len = calloc ((size_t) n, sizeof (uint32_t));
    self->eog = calloc ((size_t) n, 1);
    self->special = calloc ((size_t) n, sizeof (int32_t));
    if (!self->text || !self->text_len || !self->score || !self->attr || !self->piece
    ||  !self->piece_len || !self->eog || !self->special)
        goto oom;
    if (s_map_init (&self->token_map, (size_t) n))
        goto oom;

    //  Token texts; an empty one becomes "[EMPTY_i]" as in llama.cpp.
    for (int32_t i = 0; i < n; i++) {
        const char *t = vocab->tokens[i];
        if (!t) {
            s_err (err, err_size, "token %d has no text", (int) i);
            goto fail;
        }
        size_t len = vocab->token_lens ? vocab->token_lens[i] : strlen (t);
        char empty[32];
        if (len == 0) {
            len = (size_t) snprintf (empty, sizeof empty, "[EMPTY_%d]", (int) i);
            t = empty;
        }
        if (len > (1u << 20)) {
            s_err (err, err_size, "token %d is %zu bytes long", (int) i, len);
            goto fail;
        }
        self->text[i] = malloc (len + 1);
        if (!self->text[i])
            goto oom;
        memcpy (self->text[i], t, len);
        self->text[i][len] = 0;
        self->text_len[i] = (uint32_t) len;
        self->score[i] = vocab->scores ? vocab->scores[i] : 0.0f;
        self->attr[i] = vocab->types ? s_attr_from_type (vocab->types[i]) : ATTR_NORMAL;
        s_map_put (&self->token_map, self->text[i], len, i, true);
    }

    //  Merges: rank = index; the first of duplicates wins.
    if (vocab->model == TOKENIZER_MODEL_BPE) {
        size_t total = 0;
        for (int32_t i = 0; i < vocab->n_merges; i++) {
            if (!vocab->merges[i]) {
                s_err (err, err_size, "merge %d has no text", (int) i);
                goto fail;
            }
            total += (vocab->merge_lens ? vocab->merge_lens[i] : strlen (vocab->merges[i])) + 1;
        }
        self->merge_store = malloc (total ? total : 1);
        if (!self->merge_store || s_map_init (&self->merge_map, (size_t) vocab->n_merges))
            goto oom;
        char *p = self->merge_store;
        for (int32_t i = 0; i < vocab->n_merges; i++) {
            size_t len = vocab->merge_lens ? vocab->merge_lens[i] : strlen (vocab->merges[i]);
            memcpy (p, vocab->merges[i], len);
            p[len] = 0;
            //  Only "left right" with a space after the first byte is a
            //  usable merge (llama.cpp splits at find(' ', 1)).
            if (len >= 2 && memchr (p + 1, ' ', len - 1))
                s_map_put (&self->merge_map, p, len, i, false);
            p += len + 1;
        }
    }

    //  Special ids: out-of-range ones are disabled, as llama.cpp does.
    int32_t ids[5] = { vocab->bos_id, vocab->eos_id, vocab->eot_id, vocab->unk_id, vocab->pad_id };
    for (int k = 0; k < 5; k++)
        if (ids[k] < 0 || ids[k] >= n)
            ids[k] = TOKENIZER_NULL;
    self->bos = ids[0];
    self->eos = ids[1];
    self->eot = ids[2];
    self->unk = ids[3];
    self->pad = ids[4];
    if (self->add_bos && self->bos == TOKENIZER_NULL) {
        s_err (err, err_size, "vocabulary asks for BOS but has no BOS id");
        goto fail;
    }
    if (self->add_eos && self->eos == TOKENIZER_NULL) {
        s_err (err, err_size, "vocabulary asks for EOS but has no EOS id");
        goto fail;
    }

    //  End-of-generation texts are CONTROL tokens whatever the file says;
    //  the lowest such id names EOT when the file does not.
    for (int32_t i = 0; i < n; i++) {
        if (s_map_get (&self->token_map, self->text[i], self->text_len[i]) != i)
            continue;                       //  shadowed duplicate
        if (s_text_in (self->text[i], self->text_len[i], s_eog_texts)) {
            self->attr[i] |= ATTR_CONTROL;
            self->eog[i] = 1;
        }
        if (self->eot == TOKENIZER_NULL && s_text_in (self->text[i], self->text_len[i], s_eot_texts))
            self->eot = i;
    }
    if (self->eos != TOKENIZER_NULL)
        self->eog[self->eos] = 1;
    if (self->eot != TOKENIZER_NULL)
        self->eog[self->eot] = 1;

    //  Special tokens cut out of text before tokenizing, longest first.
    for (int32_t i = 0; i < n; i++)
        if (self->attr[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN))
            self->special[self->n_special++] = i;
    if (s_sort_special (self))
        goto oom;

    //  Byte fallback tokens.
    for (int b = 0; b < 256; b++) {
        int32_t id = TOKENIZER_NULL;
        if (self->model == TOKENIZER_MODEL_SPM) {
            char hex[8];
            snprintf (hex, sizeof hex, "<0x%02X>", b);
            id = s_map_get (&self->token_map, hex, 6);
            if (id == TOKENIZER_NULL) {
                char c = (char) b;
                id = s_map_get (&self->token_map, &c, 1);
            }
        }
        else {
            char enc[4];
            size_t len = s_utf8_encode (s_byte_cpt[b], enc);
            id = s_map_get (&self->token_map, enc, len);
        }
        self->byte_token[b] = id;
    }

    //  Decoded pieces.
    for (int32_t i = 0; i < n; i++) {
        if (s_make_piece (self, i, &piece))
            goto oom;
        self->piece[i] = malloc (piece.size + 1);
        if (!self->piece[i])
            goto oom;
        memcpy (self->piece[i], piece.data, piece.size + 1);
        self->piece_len[i] = (uint32_t) piece.size;
    }

    //  Regexes.
    if (self->model == TOKENIZER_MODEL_BPE) {
        for (int k = 0; s_regexes[self->pre][k]; k++) {
            char *pattern = s_translate_regex (s_regexes[self->pre][k]);
            if (!pattern)
                goto oom;
            int code;
            PCRE2_SIZE offset;
            self->regex[k] = pcre2_compile ((PCRE2_SPTR) pattern, PCRE2_ZERO_TERMINATED,
                                            PCRE2_UTF | PCRE2_UCP, &code, &offset, NULL);
            free (pattern);
            if (!self->regex[k]) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message (code, msg, sizeof msg);
                s_err (err, err_size, "pre-tokenizer regex %d: %s at %zu", k, (char *) msg, (size_t) offset);
                goto fail;
            }
            //  JIT is an optimisation: without it matching still works.
            pcre2_jit_compile (self->regex[k], PCRE2_JIT_COMPLETE);
            self->n_regex = k + 1;
        }
    }
    free (piece.data);
    return self;

oom:
    s_err (err, err_size, "out of memory building the tokenizer");
fail:
    free (piece.data);
    tokenizer_destroy (&self);
    return NULL;
}

void
tokenizer_destroy (tokenizer_t **self_p)
{
    assert (self_p);
    tokenizer_t *self = *self_p;
    if (!self)
        return;
    for (int32_t i = 0; i < self->n_tokens; i++) {
        if (self->text)
            free (self->text[i]);
        if (self->piece)
            free (self->piece[i]);
    }
    free (self->text);
    free (self->text_len);
    free (self->score);
    free (self->attr);
    free (self->piece);
    free (self->piece_len);
    free (self->eog);
    free (self->special);
    free (self->token_map.slots);
    free (self->merge_map.slots);
    free (self->merge_store);
    for (int k = 0; k < MAX_REGEX; k++)
        if (self->regex[k])
            pcre2_code_free (self->regex[k]);
    free (self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  Merge queue shared by BPE and SPM: a binary min-heap on (key, left).
//  BPE keys are merge ranks, SPM keys are negated scores.

typedef struct {
    int32_t prev, next;         //  neighbours in the symbol chain, -1 at ends
    uint32_t start, n;          //  byte range in the word; n = 0 once merged away
} s_symbol_t;

typedef struct {
    double key;
    int32_t left, right;
    uint32_t size;              //  bytes of left + right when queued
} s_bigram_t;

typedef struct {
    s_symbol_t *sym;
    size_t n_sym, cap_sym;
    s_bigram_t *heap;
    size_t n_heap, cap_heap;
    char *key;                  //  scratch for "left right" keys
    size_t cap_key;
    bool failed;
} s_work_t;

static bool
s_bigram_less (const s_bigram_t *a, const s_bigram_t *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static void
s_heap_push (s_work_t *w, s_bigram_t item)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 64;
        s_bigram_t *heap = realloc (w->heap, cap * sizeof (s_bigram_t));
        if (!heap) {
            w->failed = true;
            return;
        }
        w->heap = heap;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!s_bigram_less (&item, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = item;
}

static s_bigram_t
s_heap_pop (s_work_t *w)
{
    s_bigram_t top = w->heap[0];
    s_bigram_t last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    while (true) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && s_bigram_less (&w->heap[child + 1], &w->heap[child]))
            child++;
        if (!s_bigram_less (&w->heap[child], &last))
            break;
        w->heap[i] = w->heap[child];
        i = child;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

//  Splits word[0..len) into one symbol per UTF-8 lead byte (llama.cpp's
//  unicode_len_utf8, clipped at the end), chained.
static int
s_symbols_init (s_work_t *w, const char *word, size_t len)
{
    w->n_sym = 0;
    w->n_heap = 0;
    if (len + 1 > w->cap_sym) {
        size_t cap = len + 64;
        s_symbol_t *sym = realloc (w->sym, cap * sizeof (s_symbol_t));
        if (!sym)
            return -1;
        w->sym = sym;
        w->cap_sym = cap;
    }
    size_t offset = 0;
    while (offset < len) {
        size_t n = s_utf8_len ((uint8_t) word[offset]);
        if (n > len - offset)
            n = len - offset;
        s_symbol_t *s = &w->sym[w->n_sym];
        s->start = (uint32_t) offset;
        s->n = (uint32_t) n;
        s->prev = (int32_t) w->n_sym - 1;
        offset += n;
        s->next = offset == len ? -1 : (int32_t) w->n_sym + 1;
        w->n_sym++;
    }
    return 0;
}

static void
s_merge (s_work_t *w, s_bigram_t bigram)
{
    s_symbol_t *left = &w->sym[bigram.left];
    s_symbol_t *right = &w->sym[bigram.right];
    left->n += right->n;
    right->n = 0;
    left->next = right->next;
    if (right->next >= 0)
        w->sym[right->next].prev = bigram.left;
}

//  BPE: queue the pair (left, right) if "left right" is a merge.
static void
s_bpe_add (const tokenizer_t *self, s_work_t *w, const char *word, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const s_symbol_t *l = &w->sym[left], *r = &w->sym[right];
    size_t len = (size_t) l->n + 1 + r->n;
    if (len > w->cap_key) {
        char *key = realloc (w->key, len + 64);
        if (!key) {
            w->failed = true;
            return;
        }
        w->key = key;
        w->cap_key = len + 64;
    }
    memcpy (w->key, word + l->start, l->n);
    w->key[l->n] = ' ';
    memcpy (w->key + l->n + 1, word + r->start, r->n);
    int32_t rank = s_map_get (&self->merge_map, w->key, len);
    if (rank < 0)
        return;
    s_bigram_t b = { .key = rank, .left = left, .right = right, .size = l->n + r->n };
    s_heap_push (w, b);
}

//  One pre-tokenized, byte-encoded word through the merges; appends ids.
static void
s_bpe_word (const tokenizer_t *self, s_work_t *w, const char *word, size_t len, s_ids_t *out)
{
    if (self->ignore_merges) {
        int32_t id = s_map_get (&self->token_map, word, len);
        if (id != TOKENIZER_NULL) {
            s_ids_push (out, id);
            return;
        }
    }
    if (s_symbols_init (w, word, len)) {
        w->failed = true;
        return;
    }
    for (size_t i = 1; i < w->n_sym; i++)
        s_bpe_add (self, w, word, (int32_t) i - 1, (int32_t) i);
    while (w->n_heap > 0) {
        s_bigram_t b = s_heap_pop (w);
        const s_symbol_t *l = &w->sym[b.left], *r = &w->sym[b.right];
        //  Stale: one side already merged elsewhere (llama.cpp compares the
        //  texts; with adjacent, never-shrinking symbols that is this test).
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        s_merge (w, b);
        s_bpe_add (self, w, word, w->sym[b.left].prev, b.left);
        s_bpe_add (self, w, word, b.left, w->sym[b.left].next);
    }
    for (int32_t i = 0; i != -1 && w->n_sym > 0; i = w->sym[i].next) {
        const s_symbol_t *s = &w->sym[i];
        if (s->n == 0)
            continue;
        int32_t id = s_map_get (&self->token_map, word + s->start, s->n);
        if (id != TOKENIZER_NULL) {
            s_ids_push (out, id);
            continue;
        }
        //  No token: llama.cpp tries each single byte of the symbol's text
        //  and silently drops those that are not tokens either.
        for (uint32_t k = 0; k < s->n; k++) {
            int32_t bid = s_map_get (&self->token_map, word + s->start + k, 1);
            if (bid != TOKENIZER_NULL)
                s_ids_push (out, bid);
        }
    }
}

//  Splits the match text's segments by one regex: matches and the gaps
//  between them both become segments. seg holds (start, len) pairs.
typedef struct {
    size_t *data;               //  pairs: start, length (bytes)
    size_t count, capacity;     //  pairs
} s_segs_t;

static int
s_segs_push (s_segs_t *s, size_t start, size_t len)
{
    if (len == 0)
        return 0;
    if (s->count == s->capacity) {
        size_t cap = s->capacity ? s->capacity * 2 : 256;
        size_t *data = realloc (s->data, cap * 2 * sizeof (size_t));
        if (!data)
            return -1;
        s->data = data;
        s->capacity = cap;
    }
    s->data[2 * s->count] = start;
    s->data[2 * s->count + 1] = len;
    s->count++;
    return 0;
}

static int
s_regex_split (pcre2_code *re, pcre2_match_data *md, const char *text,
               const s_segs_t *in, s_segs_t *out, char *err, size_t err_size)
{
    out->count = 0;
    for (size_t k = 0; k < in->count; k++) {
        size_t seg = in->data[2 * k], seg_len = in->data[2 * k + 1];
        const PCRE2_SPTR subject = (PCRE2_SPTR) (text + seg);
        size_t pos = 0, prev_end = 0;
        uint32_t options = PCRE2_NO_UTF_CHECK;
        while (pos < seg_len) {
            int rc = pcre2_match (re, subject, seg_len, pos, options, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !(options & PCRE2_NO_JIT)) {
                options |= PCRE2_NO_JIT;    //  long runs: retry with the interpreter
                continue;
            }
            if (rc < 0) {
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message (rc, msg, sizeof msg);
                s_err (err, err_size, "pre-tokenizer match failed: %s", (char *) msg);
                return -1;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer (md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) {
                //  An empty match splits nothing; step over one character.
                pos = ms + 1;
                while (pos < seg_len && ((uint8_t) subject[pos] & 0xc0) == 0x80)
                    pos++;
                continue;
            }
            if (s_segs_push (out, seg + prev_end, ms - prev_end)
            ||  s_segs_push (out, seg + ms, me - ms))
                goto oom;
            prev_end = pos = me;
        }
        if (s_segs_push (out, seg + prev_end, seg_len - prev_end))
            goto oom;
    }
    return 0;
oom:
    s_err (err, err_size, "out of memory splitting text");
    return -1;
}

//  BPE for one text fragment: sanitize like llama.cpp, split, merge.
static int
s_bpe_fragment (const tokenizer_t *self, const char *text, size_t len, s_work_t *w,
                s_ids_t *out, char *err, size_t err_size)
{
    int rc = -1;
    char *real = NULL, *match = NULL;
    s_segs_t a = { 0 }, b = { 0 };
    s_buf_t word = { 0 };
    pcre2_match_data *md = NULL;

    //  real: the text as llama.cpp re-encodes its code points (bad bytes
    //  -> U+FFFD); match: the same with surrogates as U+FFFD, so PCRE2
    //  sees valid UTF-8 with the same byte offsets and character classes.
    size_t size = 0, o = 0;
    while (o < len) {
        char enc[4];
        size += s_utf8_encode (s_utf8_decode ((const uint8_t *) text, len, &o), enc);
    }
    real = malloc (size + 1);
    match = malloc (size + 1);
    if (!real || !match)
        goto oom;
    size_t n = 0;
    o = 0;
    while (o < len) {
        uint32_t cpt = s_utf8_decode ((const uint8_t *) text, len, &o);
        size_t k = s_utf8_encode (cpt, real + n);
        if (cpt >= 0xd800 && cpt <= 0xdfff)
            s_utf8_encode (0xfffd, match + n);
        else
            memcpy (match + n, real + n, k);
        n += k;
    }
    if (s_segs_push (&a, 0, n))
        goto oom;
    md = pcre2_match_data_create (1, NULL);
    if (!md)
        goto oom;
    for (int k = 0; k < self->n_regex; k++) {
        if (s_regex_split (self->regex[k], md, match, &a, &b, err, err_size))
            goto done;
        s_segs_t t = a;
        a = b;
        b = t;
    }
    for (size_t k = 0; k < a.count; k++) {
        //  Byte-encode the word into the GPT-2 alphabet.
        const uint8_t *p = (const uint8_t *) real + a.data[2 * k];
        size_t wl = a.data[2 * k + 1];
        word.size = 0;
        for (size_t i = 0; i < wl; i++) {
            char enc[4];
            size_t el = s_utf8_encode (s_byte_cpt[p[i]], enc);
            s_buf_append (&word, enc, el);
        }
        if (word.failed)
            goto oom;
        s_bpe_word (self, w, word.data, word.size, out);
        if (w->failed || out->failed)
            goto oom;
    }
    rc = 0;
    goto done;
oom:
    s_err (err, err_size, "out of memory tokenizing");
done:
    pcre2_match_data_free (md);
    free (real);
    free (match);
    free (a.data);
    free (b.data);
    free (word.data);
    return rc;
}

//  SPM: queue (left, right) if their concatenation is a token.
static void
s_spm_add (const tokenizer_t *self, s_work_t *w, const char *text, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const s_symbol_t *l = &w->sym[left], *r = &w->sym[right];
    int32_t id = s_map_get (&self->token_map, text + l->start, (size_t) l->n + r->n);
    if (id == TOKENIZER_NULL)
        return;
    s_bigram_t b = { .key = -(double) self->score[id], .left = left, .right = right,
                     .size = l->n + r->n };
    s_heap_push (w, b);
}

//  SPM for one fragment (already space-escaped).
static int
s_spm_fragment (const tokenizer_t *self, const char *text, size_t len, s_work_t *w,
                s_ids_t *out, char *err, size_t err_size)
{
    if (s_symbols_init (w, text, len))
        goto oom;
    for (size_t i = 1; i < w->n_sym; i++)
        s_spm_add (self, w, text, (int32_t) i - 1, (int32_t) i);
    while (w->n_heap > 0) {
        s_bigram_t b = s_heap_pop (w);
        const s_symbol_t *l = &w->sym[b.left], *r = &w->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        s_merge (w, b);
        s_spm_add (self, w, text, w->sym[b.left].prev, b.left);
        s_spm_add (self, w, text, b.left, w->sym[b.left].next);
    }
    if (w->failed)
        goto oom;
    for (int32_t i = 0; i != -1 && w->n_sym > 0; i = w->sym[i].next) {
        const s_symbol_t *s = &w->sym[i];
        int32_t id = s_map_get (&self->token_map, text + s->start, s->n);
        if (id != TOKENIZER_NULL) {
            s_ids_push (out, id);
            continue;
        }
        //  Not a token: its bytes as <0xXX> tokens. A vocabulary without
        //  them gets UNK (llama.cpp would throw here).
        for (uint32_t k = 0; k < s->n; k++) {
            int32_t bid = self->byte_token[(uint8_t) text[s->start + k]];
            if (bid == TOKENIZER_NULL)
                bid = self->unk;
            if (bid != TOKENIZER_NULL)
                s_ids_push (out, bid);
        }
    }
    if (out->failed)
        goto oom;
    return 0;
oom:
    s_err (err, err_size, "out of memory tokenizing");
    return -1;
}

//  --------------------------------------------------------------------------
//  Encode

typedef struct {
    int32_t token;              //  special id, or TOKENIZER_NULL for raw text
    size_t offset, length;      //  raw text range
} s_fragment_t;

typedef struct {
    s_fragment_t *data;
    size_t count, capacity;
} s_frags_t;

static int
s_frags_push (s_frags_t *f, int32_t token, size_t offset, size_t length)
{
    if (f->count == f->capacity) {
        size_t cap = f->capacity ? f->capacity * 2 : 16;
        s_fragment_t *data = realloc (f->data, cap * sizeof (s_fragment_t));
        if (!data)
            return -1;
        f->data = data;
        f->capacity = cap;
    }
    f->data[f->count++] = (s_fragment_t) { token, offset, length };
    return 0;
}

//  llama.cpp's tokenizer_st_partition: for each special token, longest
//  first, cut every occurrence out of the remaining raw fragments.
//  True when [at, at + len) overlaps one of the protected (start, length)
//  ranges.
static bool
s_protected (const size_t *ranges, size_t n_ranges, size_t at, size_t len)
{
    for (size_t r = 0; r < n_ranges; r++) {
        size_t start = ranges[2 * r], end = start + ranges[2 * r + 1];
        if (at < end && at + len > start)
            return true;
    }
    return false;
}

//  Special-token text overlapping a protected range stays text.
static int
s_partition (const tokenizer_t *self, const char *text, size_t len, bool parse_special,
             const size_t *ranges, size_t n_ranges, s_frags_t *frags)
{
    s_frags_t next = { 0 };
    if (len > 0 && s_frags_push (frags, TOKENIZER_NULL, 0, len))
        return -1;
    for (int32_t s = 0; s < self->n_special; s++) {
        int32_t id = self->special[s];
        if (!parse_special && (self->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN)))
            continue;
        const char *stext = self->text[id];
        size_t slen = self->text_len[id];
        next.count = 0;
        bool changed = false;
        for (size_t f = 0; f < frags->count; f++) {
            s_fragment_t frag = frags->data[f];
            if (frag.token != TOKENIZER_NULL || frag.length < slen) {
                if (s_frags_push (&next, frag.token, frag.offset, frag.length))
                    goto oom;
                continue;
            }
            size_t pos = frag.offset, search = pos, end = frag.offset + frag.length;
            while (search < end) {
                const char *hit = memmem (text + search, end - search, stext, slen);
                if (!hit)
                    break;
                size_t at = (size_t) (hit - text);
                if (n_ranges && s_protected (ranges, n_ranges, at, slen)) {
                    search = at + 1;
                    continue;
                }
                if (at > pos && s_frags_push (&next, TOKENIZER_NULL, pos, at - pos))
                    goto oom;
                if (s_frags_push (&next, id, 0, 0))
                    goto oom;
                pos = search = at + slen;
                changed = true;
            }
            if (pos < end && s_frags_push (&next, TOKENIZER_NULL, pos, end - pos))
                goto oom;
        }
        if (changed) {
            s_frags_t t = *frags;
            *frags = next;
            next = t;
        }
    }
    free (next.data);
    return 0;
oom:
    free (next.data);
    return -1;
}

static int
s_encode (const tokenizer_t *self, const char *text, size_t len, bool add_special,
          bool parse_special, const size_t *ranges, size_t n_ranges,
          int32_t **ids_p, size_t *n_ids_p, char *err, size_t err_size);

int
tokenizer_encode (const tokenizer_t *self, const char *text, size_t len,
                  bool add_special, bool parse_special,
                  int32_t **ids_p, size_t *n_ids_p, char *err, size_t err_size)
{
    return s_encode (self, text, len, add_special, parse_special, NULL, 0, ids_p, n_ids_p, err, err_size);
}

int
tokenizer_encode_protected (const tokenizer_t *self, const char *text, size_t len,
                            bool add_special, const size_t *ranges, size_t n_ranges,
                            int32_t **ids_p, size_t *n_ids_p, char *err, size_t err_size)
{
    assert (self);
    assert (ids_p && n_ids_p);
    *ids_p = NULL;
    *n_ids_p = 0;
    if (n_ranges > 0 && !ranges) {
        s_err (err, err_size, "no ranges");
        return -1;
    }
    for (size_t r = 0; r < n_ranges; r++)
        if (ranges[2 * r] > len || ranges[2 * r + 1] > len - ranges[2 * r]) {
            s_err (err, err_size, "protected range %zu (%zu+%zu) lies outside the %zu byte text",
                   r, ranges[2 * r], ranges[2 * r + 1], len);
            return -1;
        }
    return s_encode (self, text, len, add_special, true, ranges, n_ranges, ids_p, n_ids_p, err, err_size);
}

static int
s_encode (const tokenizer_t *self, const char *text, size_t len, bool add_special,
          bool parse_special, const size_t *ranges, size_t n_ranges,
          int32_t **ids_p, size_t *n_ids_p, char *err, size_t err_size)
{
    assert (self);
    assert (ids_p && n_ids_p);
    *ids_p = NULL;
    *n_ids_p = 0;
    if (!text && len > 0) {
        s_err (err, err_size, "no text");
        return -1;
    }
    if (len > TOKENIZER_MAX_TEXT) {
        s_err (err, err_size, "text of %zu bytes exceeds the %u byte limit", len, TOKENIZER_MAX_TEXT);
        return -1;
    }
    int rc = -1;
    s_ids_t out = { 0 };
    s_frags_t frags = { 0 };
    s_work_t work = { 0 };
    s_buf_t escaped = { 0 };

    if (s_partition (self, text, len, parse_special, ranges, n_ranges, &frags))
        goto oom;
    if (add_special && self->add_bos)
        s_ids_push (&out, self->bos);

    bool prev_special = true;               //  SPM: prefix a space at the start
    for (size_t f = 0; f < frags.count; f++) {
        const s_fragment_t *frag = &frags.data[f];
        if (frag->token != TOKENIZER_NULL) {
            s_ids_push (&out, frag->token);
            prev_special = true;
            continue;
        }
        const char *ft = text + frag->offset;
        if (self->model == TOKENIZER_MODEL_SPM) {
            escaped.size = 0;
            if (self->add_space_prefix && prev_special)
                s_buf_append (&escaped, "\xe2\x96\x81", 3);
            for (size_t i = 0; i < frag->length; i++) {
                if (ft[i] == ' ')
                    s_buf_append (&escaped, "\xe2\x96\x81", 3);
                else
                    s_buf_append (&escaped, ft + i, 1);
            }
            if (escaped.failed)
                goto oom;
            if (s_spm_fragment (self, escaped.data, escaped.size, &work, &out, err, err_size))
                goto done;
        }
        else
        if (s_bpe_fragment (self, ft, frag->length, &work, &out, err, err_size))
            goto done;
        prev_special = false;
    }
    if (add_special && self->add_eos)
        s_ids_push (&out, self->eos);
    if (out.failed)
        goto oom;
    *ids_p = out.data;
    *n_ids_p = out.size;
    out.data = NULL;
    rc = 0;
    goto done;
oom:
    s_err (err, err_size, "out of memory tokenizing");
done:
    free (out.data);
    free (frags.data);
    free (work.sym);
    free (work.heap);
    free (work.key);
    free (escaped.data);
    return rc;
}

//  --------------------------------------------------------------------------
//  Decode

int
tokenizer_token_to_piece (const tokenizer_t *self, int32_t id, bool special,
                          const char **piece, size_t *len, char *err, size_t err_size)
{
    assert (self);
    assert (piece && len);
    if (id < 0 || id >= self->n_tokens) {
        s_err (err, err_size, "token id %d out of range 0..%d", (int) id, (int) self->n_tokens - 1);
        *piece = "";
        *len = 0;
        return -1;
    }
    if (!special && (self->attr[id] & (ATTR_UNKNOWN | ATTR_CONTROL))) {
        *piece = "";
        *len = 0;
        return 0;
    }
    *piece = self->piece[id];
    *len = self->piece_len[id];
    return 0;
}

//  llama_detokenize's clean_up_tokenization_spaces passes, in place.
static size_t
s_clean_spaces (char *text, size_t total)
{
    //  " ?", " !", " .", " ,": drop the space
    size_t t1 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < t1; i++) {
        char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
            total--;
        text[total++] = x;
    }
    //  " ' ": drop both spaces
    size_t t2 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < t2; i++) {
        char x = text[i];
        if (x == '\'' && i + 1 < t2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            total--;
            text[++i] = 0;
        }
        text[total++] = x;
    }
    //  " 's", " 'm", " 're", " 've": drop the space
    size_t t3 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < t3; i++) {
        char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < t3) {
            char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm')
                total--;
            else
            if (i + 2 < t3) {
                char x2 = text[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e'))
                    total--;
            }
        }
        text[total++] = x;
    }
    return total;
}

int
tokenizer_decode (const tokenizer_t *self, const int32_t *ids, size_t n_ids,
                  bool remove_special, bool unparse_special,
                  char **text_p, size_t *len_p, char *err, size_t err_size)
{
    assert (self);
    assert (text_p && len_p);
    *text_p = NULL;
    *len_p = 0;
    if (!ids && n_ids > 0) {
        s_err (err, err_size, "no ids");
        return -1;
    }
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= self->n_tokens) {
            s_err (err, err_size, "token id %d at position %zu out of range 0..%d",
                   (int) ids[i], i, (int) self->n_tokens - 1);
            return -1;
        }
    bool remove_space = self->add_space_prefix;
    if (remove_special && self->add_bos && n_ids > 0 && ids[0] == self->bos) {
        remove_space = false;
        ids++;
        n_ids--;
    }
    if (remove_special && self->add_eos && n_ids > 0 && ids[n_ids - 1] == self->eos)
        n_ids--;
    s_buf_t out = { 0 };
    s_buf_append (&out, "", 0);
    for (size_t i = 0; i < n_ids; i++) {
        const char *piece;
        size_t len;
        tokenizer_token_to_piece (self, ids[i], unparse_special, &piece, &len, NULL, 0);
        if (remove_space && len > 0 && piece[0] == ' ') {
            piece++;
            len--;
        }
        remove_space = false;
        s_buf_append (&out, piece, len);
    }
    if (out.failed) {
        free (out.data);
        s_err (err, err_size, "out of memory decoding");
        return -1;
    }
    if (self->clean_spaces) {
        out.size = s_clean_spaces (out.data, out.size);
        out.data[out.size] = 0;
    }
    *text_p = out.data;
    *len_p = out.size;
    return 0;
}

//  --------------------------------------------------------------------------
//  Accessors

int32_t tokenizer_n_tokens (const tokenizer_t *self) { assert (self); return self->n_tokens; }
tokenizer_model_t tokenizer_model (const tokenizer_t *self) { assert (self); return self->model; }
tokenizer_pre_t tokenizer_pre (const tokenizer_t *self) { assert (self); return self->pre; }
int32_t tokenizer_bos (const tokenizer_t *self) { assert (self); return self->bos; }
int32_t tokenizer_eos (const tokenizer_t *self) { assert (self); return self->eos; }
int32_t tokenizer_eot (const tokenizer_t *self) { assert (self); return self->eot; }
bool tokenizer_add_bos (const tokenizer_t *self) { assert (self); return self->add_bos; }

bool
tokenizer_is_eog (const tokenizer_t *self, int32_t id)
{
    assert (self);
    return id >= 0 && id < self->n_tokens && self->eog[id];
}

bool
tokenizer_is_special (const tokenizer_t *self, int32_t id)
{
    assert (self);
    return id >= 0 && id < self->n_tokens
        && (self->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED));
}

int32_t
tokenizer_find (const tokenizer_t *self, const char *text, size_t len)
{
    assert (self);
    return text ? s_map_get (&self->token_map, text, len) : TOKENIZER_NULL;
}

const char *
tokenizer_token_text (const tokenizer_t *self, int32_t id, size_t *len)
{
    assert (self);
    if (id < 0 || id >= self->n_tokens)
        return NULL;
    if (len)
        *len = self->text_len[id];
    return self->text[id];
}

//  --------------------------------------------------------------------------
//  Streaming decode

struct _tokenizer_stream_t {
    const tokenizer_t *tok;     //  not owned
    bool special;               //  render CONTROL tokens
    bool first;                 //  next piece is the first (SPM drops its space)
    s_buf_t pending;            //  bytes held back: an incomplete UTF-8 tail
    s_buf_t out;                //  what the last call handed out
};

tokenizer_stream_t *
tokenizer_stream_new (const tokenizer_t *tok, bool special)
{
    assert (tok);
    tokenizer_stream_t *self = calloc (1, sizeof (*self));
    if (!self)
        return NULL;
    self->tok = tok;
    self->special = special;
    self->first = true;
    return self;
}

void
tokenizer_stream_destroy (tokenizer_stream_t **self_p)
{
    assert (self_p);
    tokenizer_stream_t *self = *self_p;
    if (!self)
        return;
    free (self->pending.data);
    free (self->out.data);
    free (self);
    *self_p = NULL;
}

int
tokenizer_stream_push (tokenizer_stream_t *self, int32_t id,
                       const char **text, size_t *len, char *err, size_t err_size)
{
    assert (self);
    assert (text && len);
    *text = "";
    *len = 0;
    const char *piece;
    size_t plen;
    if (tokenizer_token_to_piece (self->tok, id, self->special, &piece, &plen, err, err_size))
        return -1;
    //  Same leading-space rule as tokenizer_decode without remove_special.
    if (self->first && self->tok->add_space_prefix && plen > 0 && piece[0] == ' ') {
        piece++;
        plen--;
    }
    self->first = false;
    s_buf_append (&self->pending, piece, plen);
    if (self->pending.failed) {
        s_err (err, err_size, "out of memory decoding");
        return -1;
    }
    size_t hold = tokenizer_utf8_incomplete_tail (self->pending.data, self->pending.size);
    size_t ready = self->pending.size - hold;
    self->out.size = 0;
    s_buf_append (&self->out, self->pending.data, ready);
    if (self->out.failed) {
        s_err (err, err_size, "out of memory decoding");
        return -1;
    }
    memmove (self->pending.data, self->pending.data + ready, hold);
    self->pending.size = hold;
    *text = self->out.data;
    *len = self->out.size;
    return 0;
}

void
tokenizer_stream_flush (tokenizer_stream_t *self, const char **text, size_t *len)
{
    assert (self);
    assert (text && len);
    self->out.size = 0;
    s_buf_append (&self->out, self->pending.data ? self->pending.data : "", self->pending.size);
    self->pending.size = 0;
    self->first = true;
    *text = self->out.data ? self->out.data : "";
    *len = self->out.failed ? 0 : self->out.size;
}
