/*  split_prefix.h: the `prefix` service (splitmesh-split-prefix), the
    device's stage of the target model.

    Loads the embeddings and layers [0, L) of the target (L = --split) and
    keeps one KV cache per session (at most --max-sessions, least recently
    used evicted with a log line; an evicted session answers 404). Requests:
      prefill {session, pos = 0, tokens}   -> activations_reply: pos 0
            creates the session or resets it; pos > 0 appends to an
            existing one (as extend).
      extend {session, pos, tokens}         -> activations_reply: truncates
            the cache to pos first (rollback after rejected drafts); 422 on
            a position gap (pos beyond the cache), 404 unknown session.
      session_close {session}               -> ack (unknown is not an error).
    Every request writing positions past --ctx gets 422 "prompt longer than
    the context". The reply carries the residual stream after layer L-1 for
    every new position, as --act-dtype (int8 with a per-position scale by
    default, fp16 or fp32), tagged with layer = L.
*/
#ifndef SPLITMESH_SPLIT_PREFIX_H
#define SPLITMESH_SPLIT_PREFIX_H

#include <czmq.h>
#include "service.h"

#ifdef __cplusplus
extern "C" {
#endif

//  The service actor. args is a service_config_t * that must stay valid
//  while the actor runs. Uses broker, model, threads, format, split, ctx,
//  max_sessions, act_dtype, heartbeat_ms, verbose.
void split_prefix_actor (zsock_t *pipe, void *args);

#ifdef __cplusplus
}
#endif

#endif
