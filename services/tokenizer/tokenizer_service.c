/*  tokenizer_service.c: the `tokenizer` MDP service (see tokenizer_service.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "tokenizer.h"
#include "tokenizer_service.h"

typedef struct {
    tokenizer_t *tok;           //  the model's vocabulary
    char *default_system;       //  system message the template inserts, or NULL
} s_state_t;

//  Finds the default system message in a ChatML template of the SmolLM2
//  kind: the literal after "!= 'system'" between "<|im_start|>system\n" and
//  "<|im_end|>". Returns a fresh string, or NULL when there is none.
static char *
s_default_system (const char *tmpl, size_t len)
{
    static const char cond [] = "!= 'system'";
    static const char head [] = "<|im_start|>system\n";
    static const char tail [] = "<|im_end|>";
    char *copy = strndup (tmpl, len);
    char *result = NULL;
    char *at = copy? strstr (copy, cond): NULL;
    at = at? strstr (at, head): NULL;
    if (at) {
        at += strlen (head);
        char *end = strstr (at, tail);
        if (end && end > at)
            result = strndup (at, (size_t) (end - at));
    }
    free (copy);
    return result;
}

char *
tokenizer_service_render_chat (const wire_chat_message_t *messages, size_t count,
                               const char *default_system,
                               bool add_generation_prompt, size_t *len_p)
{
    static const char *const roles [] = { "system", "user", "assistant", "tool" };
    size_t size = 64 + (default_system? strlen (default_system) + 32: 0);
    for (size_t i = 0; i < count; i++)
        size += strlen (messages [i].content) + 32;
    char *text = malloc (size);
    if (!text)
        return NULL;
    size_t n = 0;
    if (default_system && (count == 0 || messages [0].role != WIRE_ROLE_SYSTEM))
        n += (size_t) snprintf (text + n, size - n, "<|im_start|>system\n%s<|im_end|>\n", default_system);
    for (size_t i = 0; i < count; i++) {
        int role = (int) messages [i].role;
        n += (size_t) snprintf (text + n, size - n, "<|im_start|>%s\n%s<|im_end|>\n",
                                role >= 0 && role < 4? roles [role]: "user", messages [i].content);
    }
    if (add_generation_prompt)
        n += (size_t) snprintf (text + n, size - n, "<|im_start|>assistant\n");
    *len_p = n;
    return text;
}

static zframe_t *
s_tokenize (s_state_t *self, zframe_t *body)
{
    wire_tokenize_t req;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_tokenize_desc, body, &req, &werr))
        return wire_error_frame_from (&werr);
    zframe_t *reply = NULL;
    char *rendered = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0, len = 0;
    char err [256] = "";
    const char *text = req.text;
    bool parse_special = req.parse_special;
    if (req.chat) {
        rendered = tokenizer_service_render_chat (req.chat, req.chat_count, self->default_system,
                                                  req.add_generation_prompt, &len);
        if (!rendered) {
            reply = service_error (500, "tokenize: out of memory");
            goto done;
        }
        if (len > WIRE_MAX_STRING_BYTES) {
            reply = service_error (413, "tokenize: the rendered chat has %zu bytes, more than "
                                   "max_string_bytes %d", len, WIRE_MAX_STRING_BYTES);
            goto done;
        }
        text = rendered;
        parse_special = true;
    }
    else
        len = strlen (text);
    if (tokenizer_encode (self->tok, text, len, req.add_special, parse_special,
                          &ids, &n_ids, err, sizeof err)) {
        reply = service_error (413, "tokenize: %s", err);
        goto done;
    }
    if (n_ids > WIRE_MAX_TOKENS_PER_REQUEST) {
        reply = service_error (413, "tokenize: the text encodes to %zu tokens, more than "
                               "max_tokens_per_request %d", n_ids, WIRE_MAX_TOKENS_PER_REQUEST);
        goto done;
    }
    wire_tokenize_reply_t out;
    wire_msg_init (&wire_tokenize_reply_desc, &out);
    out.tokens = ids;
    out.tokens_count = n_ids;
    reply = service_encode (&wire_tokenize_reply_desc, &out);
done:
    free (ids);
    free (rendered);
    wire_msg_free (&wire_tokenize_desc, &req);
    return reply;
}

static zframe_t *
s_detokenize (s_state_t *self, zframe_t *body)
{
    wire_detokenize_t req;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_detokenize_desc, body, &req, &werr))
        return wire_error_frame_from (&werr);
    zframe_t *reply = NULL;
    char *text = NULL;
    size_t len = 0;
    char err [256] = "";
    int32_t vocab = tokenizer_n_tokens (self->tok);
    for (size_t i = 0; i < req.tokens_count; i++)
        if (req.tokens [i] < 0 || req.tokens [i] >= vocab) {
            reply = service_error (422, "detokenize: tokens[%zu] = %d is outside the vocabulary "
                                   "(%d tokens)", i, req.tokens [i], vocab);
            goto done;
        }
    if (tokenizer_decode (self->tok, req.tokens, req.tokens_count, req.skip_special,
                          !req.skip_special, &text, &len, err, sizeof err)) {
        reply = service_error (422, "detokenize: %s", err);
        goto done;
    }
    if (len > WIRE_MAX_STRING_BYTES) {
        reply = service_error (413, "detokenize: the text has %zu bytes, more than "
                               "max_string_bytes %d", len, WIRE_MAX_STRING_BYTES);
        goto done;
    }
    if (memchr (text, 0, len)) {
        //  A token that decodes to a NUL byte cannot travel as a C string.
        reply = service_error (422, "detokenize: the text contains a NUL byte");
        goto done;
    }
    wire_detokenize_reply_t out;
    wire_msg_init (&wire_detokenize_reply_desc, &out);
    out.text = text;
    reply = service_encode (&wire_detokenize_reply_desc, &out);
done:
    free (text);
    wire_msg_free (&wire_detokenize_desc, &req);
    return reply;
}

static zframe_t *
s_handler (void *state, zframe_t *body, const wire_peek_t *peek)
{
    s_state_t *self = (s_state_t *) state;
    if (streq (peek->tag, "tokenize"))
        return s_tokenize (self, body);
    if (streq (peek->tag, "detokenize"))
        return s_detokenize (self, body);
    return service_error (400, "tokenizer: expected a 'tokenize' or 'detokenize' message, got '%s'",
                          peek->tag);
}

void
tokenizer_service_actor (zsock_t *pipe, void *args)
{
    const service_config_t *config = (const service_config_t *) args;
    service_config_t copy = *config;
    s_state_t state = { 0 };
    char err [512] = "";
    gguf_t *gguf = gguf_open (config->model, err, sizeof err);
    if (gguf) {
        state.tok = tokenizer_new_from_gguf (gguf, err, sizeof err);
        const char *tmpl;
        size_t len;
        if (state.tok && gguf_get_str (gguf, "tokenizer.chat_template", &tmpl, &len))
            state.default_system = s_default_system (tmpl, len);
        gguf_destroy (&gguf);
    }
    char setup [640] = "";
    if (!state.tok)
        snprintf (setup, sizeof setup, "%s: %s", config->model, err);
    //  The config's strings stay valid while the creator lives (tests keep
    //  it; main's argv outlives the actor).
    service_metrics_t *metrics = *setup? NULL: service_metrics_new ("tokenizer", &copy);
    service_actor_run (pipe, &copy, "tokenizer", setup, s_handler, &state, metrics);
    service_metrics_destroy (&metrics);
    tokenizer_destroy (&state.tok);
    free (state.default_system);
}
