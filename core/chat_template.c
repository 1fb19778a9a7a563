/*  chat_template.c: ChatML rendering, with the default system prompt taken from the template.

    The Jinja source is only inspected, never executed: its markers say which
    format it is, and a ChatML template that injects a system message when
    the conversation lacks one carries that message as a string literal,
    which is copied out (with \n escapes undone). The rendering itself is
    exactly what SmolLM2-Instruct's template produces under jinja2; the
    tests compare byte for byte with jinja2's output.
*/
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"

struct _chat_template_t {
    chat_template_kind_t kind;
    char *default_system;       //  NULL when the template adds none
};

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

static const char *
s_find (const char *hay, size_t len, const char *needle)
{
    size_t n = strlen (needle);
    if (n == 0 || n > len)
        return NULL;
    for (size_t i = 0; i + n <= len; i++)
        if (hay[i] == needle[0] && memcmp (hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

//  Finds "<|im_start|>system" + newline (real or "\n" escape) + text +
//  "<|im_end|>" in a template that tests whether messages[0] is a system
//  message, and returns the text (malloc'd), or NULL when there is none.
static char *
s_default_system (const char *src, size_t len)
{
    if (!s_find (src, len, "messages[0]['role'] != 'system'")
    &&  !s_find (src, len, "messages[0][\"role\"] != \"system\"")
    &&  !s_find (src, len, "messages[0].role != 'system'"))
        return NULL;
    const char *marker = "<|im_start|>system";
    const char *p = s_find (src, len, marker);
    if (!p)
        return NULL;
    p += strlen (marker);
    const char *end = src + len;
    if (p < end && *p == '\n')
        p++;
    else
    if (p + 1 < end && p[0] == '\\' && p[1] == 'n')
        p += 2;
    else
        return NULL;
    const char *stop = s_find (p, (size_t) (end - p), "<|im_end|>");
    if (!stop)
        return NULL;
    char *out = malloc ((size_t) (stop - p) + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    for (const char *q = p; q < stop; q++) {
        if (q[0] == '\\' && q + 1 < stop) {
            char e = q[1];
            out[n++] = e == 'n' ? '\n' : e == 't' ? '\t' : e;
            q++;
        }
        else
            out[n++] = *q;
    }
    out[n] = 0;
    return out;
}

chat_template_t *
chat_template_new (const char *source, size_t len, char *err, size_t err_size)
{
    chat_template_t *self = calloc (1, sizeof (*self));
    if (!self) {
        s_err (err, err_size, "out of memory");
        return NULL;
    }
    self->kind = CHAT_TEMPLATE_CHATML;
    if (!source)
        return self;
    if (s_find (source, len, "<|im_start|>")) {
        self->default_system = s_default_system (source, len);
        return self;
    }
    const char *name = s_find (source, len, "<|start_header_id|>") ? "Llama 3"
                     : s_find (source, len, "[INST]") ? "Llama 2 / Mistral [INST]"
                     : s_find (source, len, "<|user|>") ? "Zephyr / TinyLlama"
                     : "unrecognised";
    s_err (err, err_size, "chat template format '%s' is not supported (supported: ChatML)", name);
    chat_template_destroy (&self);
    return NULL;
}

void
chat_template_destroy (chat_template_t **self_p)
{
    assert (self_p);
    chat_template_t *self = *self_p;
    if (!self)
        return;
    free (self->default_system);
    free (self);
    *self_p = NULL;
}

chat_template_kind_t
chat_template_kind (const chat_template_t *self)
{
    assert (self);
    return self->kind;
}

const char *
chat_template_default_system (const chat_template_t *self)
{
    assert (self);
    return self->default_system;
}

typedef struct {
    char *data;
    size_t size, capacity;
    bool failed;
} s_buf_t;

static void
s_append (s_buf_t *b, const char *s)
{
    size_t len = strlen (s);
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
    memcpy (b->data + b->size, s, len + 1);
    b->size += len;
}

static void
s_chatml_turn (s_buf_t *b, const char *role, const char *content)
{
    s_append (b, "<|im_start|>");
    s_append (b, role);
    s_append (b, "\n");
    s_append (b, content);
    s_append (b, "<|im_end|>\n");
}

int
chat_template_apply (const chat_template_t *self, const chat_message_t *messages,
                     size_t n_messages, bool add_generation_prompt,
                     char **text_p, size_t *len_p, char *err, size_t err_size)
{
    assert (self);
    assert (text_p && len_p);
    *text_p = NULL;
    *len_p = 0;
    if (n_messages > CHAT_TEMPLATE_MAX_MESSAGES) {
        s_err (err, err_size, "%zu messages exceed the limit of %d", n_messages, CHAT_TEMPLATE_MAX_MESSAGES);
        return -1;
    }
    for (size_t i = 0; i < n_messages; i++) {
        if (!messages[i].role || !messages[i].content || !*messages[i].role) {
            s_err (err, err_size, "message %zu has no role or no content", i);
            return -1;
        }
    }
    s_buf_t b = { 0 };
    s_append (&b, "");
    if (n_messages > 0 && self->default_system && strcmp (messages[0].role, "system") != 0)
        s_chatml_turn (&b, "system", self->default_system);
    for (size_t i = 0; i < n_messages; i++)
        s_chatml_turn (&b, messages[i].role, messages[i].content);
    if (add_generation_prompt)
        s_append (&b, "<|im_start|>assistant\n");
    if (b.failed) {
        free (b.data);
        s_err (err, err_size, "out of memory rendering the chat");
        return -1;
    }
    *text_p = b.data;
    *len_p = b.size;
    return 0;
}
