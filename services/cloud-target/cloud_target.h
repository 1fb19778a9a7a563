/*  cloud_target.h: the `target` service (splitmesh-cloud-target), the
    cloud's stage of the target model and the verifier of drafts.

    Loads layers [L, N), the final norm and the head (L = --split) through a
    compute backend (target_backend.h; CPU for now). By default it also
    loads the embeddings and layers [0, L), so one process serves privacy
    `none` requests (token ids) and the cloud-only baseline as well as split
    requests; that costs L more layers of weights (SmolLM2-135M at w8, L=15:
    143 MB instead of 86.6 MB; its head is tied to the embeddings, so the
    table is loaded either way; an untied model adds the table too) and, per
    session, KV-cache space for L more layers (only touched by token sessions).
    --stage-only loads [L, N) alone and answers token requests with 422.

    Requests (one KV cache per session, at most --max-sessions, LRU):
      prefill {session, pos, activations | tokens, temperature, top_k,
              top_p, seed}  -> prefill_reply {n_pos, next_token}: pos 0
              creates or resets the session; next_token is drawn from the
              last position's distribution (PRNG keyed by (seed, position)).
      verify {session, pos, activations | tokens (k+1 rows), draft_tokens,
              drafts, sampling}  -> verify_reply {accepted, next_token,
              n_pos}: core/speculative decides; the cache is truncated to
              pos + 1 + accepted.
      session_close -> ack.
    Errors: 404 unknown session; 422 layer mismatch, activation dim
    mismatch, position gap, positions beyond --ctx, token ids out of range,
    a session fed activations then tokens (or the reverse), bad drafts;
    400 malformed or unexpected messages. The service keeps serving.
*/
#ifndef SPLITMESH_CLOUD_TARGET_H
#define SPLITMESH_CLOUD_TARGET_H

#include <czmq.h>
#include "service.h"

#ifdef __cplusplus
extern "C" {
#endif

//  The service actor. args is a service_config_t * that must stay valid
//  while the actor runs. Uses broker, model, threads, format, split, ctx,
//  max_sessions, stage_only, heartbeat_ms, verbose.
void cloud_target_actor (zsock_t *pipe, void *args);

#ifdef __cplusplus
}
#endif

#endif
