/*  tokenizer_service.h: the `tokenizer` service (splitmesh-tokenizer).

    Turns text, or a chat rendered with the model's ChatML template, into
    the model's token ids (`tokenize` -> `tokenize_reply`) and ids back into
    text (`detokenize` -> `detokenize_reply`), using the vocabulary of the
    model file itself (core/tokenizer.h), so the ids are exactly the ones
    `splitmesh run` and llama.cpp produce. Stateless: any replica serves any
    request. Only the GGUF metadata is read; no weights are loaded.

    Chat rendering follows the ChatML template SmolLM2 ships:
    "<|im_start|>ROLE\nCONTENT<|im_end|>\n" per message, a default system
    message first when the template has one and the chat does not start with
    a system message, and "<|im_start|>assistant\n" with
    add_generation_prompt. The rendered text is tokenized with special-token
    parsing on (the template's markers are special tokens), as llama.cpp
    does; `parse_special` applies to plain `text` requests.

    The file is named tokenizer_service.* so that it does not shadow
    core/tokenizer.h.
*/
#ifndef SPLITMESH_TOKENIZER_SERVICE_H
#define SPLITMESH_TOKENIZER_SERVICE_H

#include <czmq.h>
#include "service.h"

#ifdef __cplusplus
extern "C" {
#endif

//  The service actor. args is a service_config_t * (read during start-up
//  only: the caller may free it once service_actor_new returns). Uses
//  broker, model, heartbeat_ms, verbose.
void tokenizer_service_actor (zsock_t *pipe, void *args);

//  Renders a chat (count messages) with the ChatML template; default_system
//  (NULL: none) is inserted when the first message is not a system one.
//  Returns a NUL-terminated string the caller must free(), NULL when out
//  of memory; *len_p gets its length.
char *tokenizer_service_render_chat (const wire_chat_message_t *messages, size_t count,
                                     const char *default_system,
                                     bool add_generation_prompt, size_t *len_p);

#ifdef __cplusplus
}
#endif

#endif
