/*  tokenizer_service.c: the `tokenizer` MDP service (see tokenizer_service.h).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat_template.h"
#include "gguf.h"
#include "tokenizer.h"
#include "tokenizer_service.h"

typedef struct {
    tokenizer_t *tok;           //  the model's vocabulary
    chat_template_t *chat;      //  the model's chat format, or NULL if unsupported
    char chat_err [256];        //  why chat is NULL
} s_state_t;

static zframe_t *
s_tokenize (s_state_t *self, zframe_t *body)
{
    wire_tokenize_t req;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_tokenize_desc, body, &req, &werr))
        return wire_error_frame_from (&werr);
    zframe_t *reply = NULL;
    char *rendered = NULL;
    chat_message_t *messages = NULL;
    size_t *ranges = NULL, n_ranges = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0, len = 0;
    char err [256] = "";
    if (req.chat) {
        if (!self->chat) {
            reply = service_error (422, "tokenize: this model's chat template is not supported "
                                   "(%s); send `text`", self->chat_err);
            goto done;
        }
        messages = calloc (req.chat_count, sizeof *messages);
        if (!messages) {
            reply = service_error (500, "tokenize: out of memory");
            goto done;
        }
        for (size_t i = 0; i < req.chat_count; i++) {
            messages [i].role = wire_role_names [req.chat [i].role];
            messages [i].content = req.chat [i].content;
        }
        if (chat_template_render (self->chat, messages, req.chat_count, req.add_generation_prompt,
                                  &rendered, &len, &ranges, &n_ranges, err, sizeof err)) {
            reply = service_error (422, "tokenize: %s", err);
            goto done;
        }
        if (len > WIRE_MAX_STRING_BYTES) {
            reply = service_error (413, "tokenize: the rendered chat has %zu bytes, more than "
                                   "max_string_bytes %d", len, WIRE_MAX_STRING_BYTES);
            goto done;
        }
        //  The template's markers always become control tokens; marker text
        //  inside a message stays text unless the caller asks otherwise.
        int rc = req.parse_special
            ? tokenizer_encode (self->tok, rendered, len, req.add_special, true,
                                &ids, &n_ids, err, sizeof err)
            : tokenizer_encode_protected (self->tok, rendered, len, req.add_special,
                                          ranges, n_ranges, &ids, &n_ids, err, sizeof err);
        if (rc) {
            reply = service_error (413, "tokenize: %s", err);
            goto done;
        }
    }
    else
    if (tokenizer_encode (self->tok, req.text, strlen (req.text), req.add_special,
                          req.parse_special, &ids, &n_ids, err, sizeof err)) {
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
    free (ranges);
    free (messages);
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
        state.chat = chat_template_new_from_gguf (gguf, state.chat_err, sizeof state.chat_err);
        if (state.tok && !state.chat)
            zsys_warning ("tokenizer: chat requests will be refused: %s", state.chat_err);
        gguf_destroy (&gguf);
    }
    char setup [640] = "";
    if (!state.tok)
        snprintf (setup, sizeof setup, "%s: %s", config->model, err);
    //  The config's strings stay valid while the creator lives (tests keep
    //  it; main's argv outlives the actor).
    metrics_t *metrics = *setup? NULL: metrics_new ("tokenizer", copy.instance, copy.telemetry);
    service_actor_run (pipe, &copy, "tokenizer", setup, s_handler, &state, metrics);
    metrics_destroy (&metrics);
    tokenizer_destroy (&state.tok);
    chat_template_destroy (&state.chat);
}
