/*  chat_template.h: renders chat messages into the prompt text a model expects.

    Instruct models are trained on one conversation format, and the model
    file says which in tokenizer.chat_template (a Jinja2 template). splitmesh
    does not embed a Jinja interpreter: it recognises the format from the
    template source and renders it in C. Supported today: ChatML
    ("<|im_start|>role\ncontent<|im_end|>\n": SmolLM2-Instruct, Qwen2.5,
    MiMo-VL), with the default system prompt the template inserts when the
    conversation has none (SmolLM2: "You are a helpful AI assistant named
    SmolLM, trained by Hugging Face"), read from the template text itself.
    ChatML templates with features the renderer does not reproduce
    (thinking blocks, dates, bos_token, macros, loop namespaces) and other
    formats (Llama 2/3, Zephyr) are refused with a message naming the
    reason, never rendered approximately. The tests render every ChatML
    template in llama.cpp's collection with jinja2: each is either refused
    or reproduced byte for byte.

    The rendered text is tokenized with parse_special so the role markers
    become their control tokens, exactly as llama.cpp does; or, safer, with
    tokenizer_encode_protected over the ranges chat_template_render
    reports, so that marker text inside a message stays text.
*/
#ifndef SPLITMESH_CHAT_TEMPLATE_H
#define SPLITMESH_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _chat_template_t chat_template_t;
typedef struct _gguf_t gguf_t;

typedef enum {
    CHAT_TEMPLATE_CHATML = 1
} chat_template_kind_t;

typedef struct {
    const char *role;           //  "system", "user", "assistant", ... (NUL-terminated)
    const char *content;        //  NUL-terminated UTF-8
} chat_message_t;

#define CHAT_TEMPLATE_MAX_MESSAGES  4096

//  Recognises the format of a Jinja chat template source (len bytes; it
//  need not be NUL-terminated). source NULL means plain ChatML with no
//  default system prompt. Returns NULL with a message for a template it
//  does not support. Caller owns the result and must destroy it.
chat_template_t *chat_template_new (const char *source, size_t len, char *err, size_t err_size);

//  Same, from the GGUF's tokenizer.chat_template; a file without one gets
//  plain ChatML. Caller owns the result and must destroy it.
chat_template_t *chat_template_new_from_gguf (const gguf_t *gguf, char *err, size_t err_size);

void chat_template_destroy (chat_template_t **self_p);

chat_template_kind_t chat_template_kind (const chat_template_t *self);

//  The system prompt inserted when the first message is not a system
//  message, or NULL when the template inserts none. Owned by the template.
const char *chat_template_default_system (const chat_template_t *self);

//  Renders messages; add_generation_prompt appends the assistant header
//  the model continues from. Sets *text_p (NUL-terminated, caller frees
//  with free()) and *len_p. Returns 0, or -1 with a message (no messages
//  and no generation prompt is fine: empty text).
int chat_template_apply (const chat_template_t *self, const chat_message_t *messages,
                         size_t n_messages, bool add_generation_prompt,
                         char **text_p, size_t *len_p, char *err, size_t err_size);

//  chat_template_apply that also reports where the caller's text landed:
//  *ranges_p gets *n_ranges_p (start, length) pairs, one for each
//  message's role and one for its content (caller frees with free()).
//  Pass them to tokenizer_encode_protected so that control-token text a
//  user typed stays text. ranges_p and n_ranges_p are both NULL or both set.
int chat_template_render (const chat_template_t *self, const chat_message_t *messages,
                          size_t n_messages, bool add_generation_prompt,
                          char **text_p, size_t *len_p, size_t **ranges_p, size_t *n_ranges_p,
                          char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
