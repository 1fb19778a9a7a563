/*  chat_template.c: ChatML rendering, with the default system prompt taken from the template.

    The Jinja source is only inspected, never executed: its markers say which
    format it is, and a ChatML template that injects a system message when
    the conversation lacks one carries that message as a string literal,
    which is copied out (with \n escapes undone). Templates using features
    the renderer does not reproduce are refused. The tests render every
    ChatML template in llama.cpp's collection with jinja2, the way
    transformers does, and require each accepted one (SmolLM2, Qwen2.5,
    MiMo-VL) to match byte for byte.
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
    bool system_before_loop;    //  default system even with no messages
    bool plain_roles_only;      //  only system / user / assistant
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

//  Reads the default system prompt out of a ChatML template: a pure string
//  literal "<|im_start|>system" + newline (real or "\n") + text +
//  "<|im_end|>", in a template that tests whether messages[0] is a system
//  message (SmolLM2: "!= 'system'" inside the loop; Qwen2.5: "== 'system'"
//  ... else before the loop). Sets *before_loop when the literal comes
//  before the message loop (then it is emitted even for no messages).
//  Returns the text (malloc'd), or NULL when there is none; sets *oom
//  when memory ran out.
static char *
s_default_system (const char *src, size_t len, bool *before_loop, bool *oom)
{
    *before_loop = false;
    *oom = false;
    if (!s_find (src, len, "messages[0]['role']") && !s_find (src, len, "messages[0][\"role\"]")
    &&  !s_find (src, len, "messages[0].role"))
        return NULL;
    const char *marker = "<|im_start|>system";
    const char *end = src + len;
    for (const char *p = s_find (src, len, marker); p; p = s_find (p + 1, (size_t) (end - p - 1), marker)) {
        const char *q = p + strlen (marker);
        if (q < end && *q == '\n')
            q++;
        else
        if (q + 1 < end && q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        const char *stop = s_find (q, (size_t) (end - q), "<|im_end|>");
        if (!stop)
            return NULL;
        //  Only a literal: no Jinja expression or string boundary inside.
        bool literal = stop > q;
        for (const char *c = q; c < stop && literal; c++)
            if (*c == '\'' || *c == '"' || *c == '{' || *c == '}' || *c == '%')
                literal = false;
        if (!literal)
            continue;
        char *out = malloc ((size_t) (stop - q) + 1);
        if (!out) {
            *oom = true;
            return NULL;
        }
        size_t n = 0;
        for (const char *c = q; c < stop; c++) {
            if (c[0] == '\\' && c + 1 < stop) {
                char e = c[1];
                out[n++] = e == 'n' ? '\n' : e == 't' ? '\t' : e;
                c++;
            }
            else
                out[n++] = *c;
        }
        out[n] = 0;
        const char *loop = s_find (src, len, "for message in messages");
        *before_loop = !loop || p < loop;
        return out;
    }
    return NULL;
}

//  Template features this renderer does not reproduce: thinking blocks,
//  dates, reasoning or tool-call rewriting of history, loop namespaces.
static const char *s_unsupported[] = {
    "enable_thinking", "<think>", "strftime_now", "reasoning", "namespace(",
    "content is string", "message.content is", "[::-1]", "bos_token", "macro ", NULL
};

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
        for (const char **u = s_unsupported; *u; u++)
            if (s_find (source, len, *u)) {
                s_err (err, err_size, "ChatML template uses '%s', which is not supported", *u);
                chat_template_destroy (&self);
                return NULL;
            }
        bool oom;
        self->default_system = s_default_system (source, len, &self->system_before_loop, &oom);
        if (oom) {
            s_err (err, err_size, "out of memory");
            chat_template_destroy (&self);
            return NULL;
        }
        //  Role-dependent rendering (tool results wrapped for the user,
        //  ...) is not reproduced: such templates take the three plain
        //  roles only.
        self->plain_roles_only = s_find (source, len, "tool") != NULL;
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

//  Appends one turn; when ranges is set, records where the caller's role
//  and content landed (start, length pairs).
static void
s_chatml_turn (s_buf_t *b, const char *role, const char *content, size_t *ranges, size_t *n_ranges)
{
    s_append (b, "<|im_start|>");
    if (ranges) {
        ranges[2 * *n_ranges] = b->size;
        ranges[2 * *n_ranges + 1] = strlen (role);
        (*n_ranges)++;
    }
    s_append (b, role);
    s_append (b, "\n");
    if (ranges) {
        ranges[2 * *n_ranges] = b->size;
        ranges[2 * *n_ranges + 1] = strlen (content);
        (*n_ranges)++;
    }
    s_append (b, content);
    s_append (b, "<|im_end|>\n");
}

int
chat_template_apply (const chat_template_t *self, const chat_message_t *messages,
                     size_t n_messages, bool add_generation_prompt,
                     char **text_p, size_t *len_p, char *err, size_t err_size)
{
    return chat_template_render (self, messages, n_messages, add_generation_prompt,
                                 text_p, len_p, NULL, NULL, err, err_size);
}

int
chat_template_render (const chat_template_t *self, const chat_message_t *messages,
                      size_t n_messages, bool add_generation_prompt,
                      char **text_p, size_t *len_p, size_t **ranges_p, size_t *n_ranges_p,
                      char *err, size_t err_size)
{
    assert (self);
    assert (text_p && len_p);
    assert (!ranges_p == !n_ranges_p);
    *text_p = NULL;
    *len_p = 0;
    if (ranges_p) {
        *ranges_p = NULL;
        *n_ranges_p = 0;
    }
    if (n_messages > CHAT_TEMPLATE_MAX_MESSAGES) {
        s_err (err, err_size, "%zu messages exceed the limit of %d", n_messages, CHAT_TEMPLATE_MAX_MESSAGES);
        return -1;
    }
    for (size_t i = 0; i < n_messages; i++) {
        if (!messages[i].role || !messages[i].content || !*messages[i].role) {
            s_err (err, err_size, "message %zu has no role or no content", i);
            return -1;
        }
        const char *role = messages[i].role;
        if (self->plain_roles_only && strcmp (role, "system") && strcmp (role, "user")
        &&  strcmp (role, "assistant")) {
            s_err (err, err_size, "message %zu: role '%s' is not supported by this template "
                   "(system, user, assistant)", i, role);
            return -1;
        }
    }
    s_buf_t b = { 0 };
    size_t *ranges = NULL, n_ranges = 0;
    if (ranges_p) {
        ranges = malloc ((2 * n_messages + 1) * 2 * sizeof (size_t));
        if (!ranges) {
            s_err (err, err_size, "out of memory rendering the chat");
            return -1;
        }
    }
    s_append (&b, "");
    if ((n_messages > 0 || self->system_before_loop) && self->default_system
    &&  (n_messages == 0 || strcmp (messages[0].role, "system") != 0))
        s_chatml_turn (&b, "system", self->default_system, NULL, NULL);
    for (size_t i = 0; i < n_messages; i++)
        s_chatml_turn (&b, messages[i].role, messages[i].content, ranges, &n_ranges);
    if (add_generation_prompt)
        s_append (&b, "<|im_start|>assistant\n");
    if (b.failed) {
        free (b.data);
        free (ranges);
        s_err (err, err_size, "out of memory rendering the chat");
        return -1;
    }
    *text_p = b.data;
    *len_p = b.size;
    if (ranges_p) {
        *ranges_p = ranges;
        *n_ranges_p = n_ranges;
    }
    return 0;
}
