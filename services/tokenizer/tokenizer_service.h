/*  tokenizer_service.h: the `tokenizer` service (splitmesh-tokenizer).

    Turns text, or a chat rendered with the model's ChatML template, into
    the model's token ids (`tokenize` -> `tokenize_reply`) and ids back into
    text (`detokenize` -> `detokenize_reply`), using the vocabulary of the
    model file itself (core/tokenizer.h), so the ids are exactly the ones
    `splitmesh run` and llama.cpp produce. Stateless: any replica serves any
    request. Only the GGUF metadata is read; no weights are loaded.

    Chats are rendered by core/chat_template from the model's own
    tokenizer.chat_template (ChatML with the template's default system
    message; unsupported templates make chat requests answer 422 while text
    requests still work). The template's role markers always become control
    tokens; marker text typed inside a message stays text
    (tokenizer_encode_protected) unless the request sets parse_special, in
    which case the whole rendering is parsed as llama.cpp does.

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

#ifdef __cplusplus
}
#endif

#endif
