/*  mdp_worker.h: the MDP/0.2 worker API every splitmesh service uses.

    A worker registers one service with the broker (READY), receives REQUESTs
    and answers each with zero or more PARTIALs and exactly one FINAL. The
    connection is kept alive the Paranoid Pirate way: heartbeats go both
    ways; when nothing arrives from the broker for `liveness` heartbeat
    intervals, or the broker sends DISCONNECT, the worker closes its socket,
    waits an exponentially growing back-off and reconnects with a fresh
    socket and a new READY. No step by the caller is needed.

    The connection lives in a background actor, so heartbeats keep flowing
    while the service computes (a long GPU forward pass does not make the
    broker think the worker died). The caller sees one stable socket,
    mdp_worker_sock, that becomes readable when a request waits: use it in a
    zpoller or zloop.

    Replies for requests received before a reconnect are dropped with a log
    line: the broker that sent them has already given those requests to
    another worker, or is gone.
*/
#ifndef MDP_WORKER_H_INCLUDED
#define MDP_WORKER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _mdp_worker_t mdp_worker_t;

//  Tuning; a zeroed struct (or NULL) means the defaults in mdp_common.h.
typedef struct {
    int heartbeat_ms;           //  heartbeat interval, both directions
    int liveness;               //  missed intervals before the broker is dead
    int reconnect_ms;           //  first back-off after a broker loss
    int reconnect_max_ms;       //  back-off ceiling (doubles up to this)
    int capacity;               //  requests outstanding at once, 1..1024;
                                //  > 1 sends the READY capacity frame
    bool verbose;               //  log every command
} mdp_worker_options_t;

//  Creates a worker for `service` and connects it to the broker at
//  `endpoint` (READY is sent at once). `options` may be NULL and is copied.
//  Returns NULL if the arguments are invalid (bad endpoint, empty or too
//  long service name, capacity out of range). Caller owns the result and
//  must destroy it.
mdp_worker_t *
    mdp_worker_new (const char *endpoint, const char *service,
                    const mdp_worker_options_t *options);

//  Sends DISCONNECT to the broker (best effort), stops the background actor
//  and frees the worker. Nullifies *self_p; a second call does nothing.
void
    mdp_worker_destroy (mdp_worker_t **self_p);

//  Waits up to timeout_ms (-1: forever) for a request. Returns the request
//  body and sets *client_p to the client address frame, which the caller
//  passes back to the send functions. Caller owns both and must destroy
//  them. Returns NULL on timeout or interrupt (*client_p untouched).
zmsg_t *
    mdp_worker_recv (mdp_worker_t *self, int timeout_ms, zframe_t **client_p);

//  Sends a PARTIAL (streamed piece of the reply) to `client`. Takes
//  ownership of *body_p and nullifies it; `client` stays the caller's.
//  Returns 0, or -1 if the message could not be queued.
int
    mdp_worker_send_partial (mdp_worker_t *self, zframe_t *client, zmsg_t **body_p);

//  Sends the FINAL reply to `client`, ending the request. Ownership as for
//  mdp_worker_send_partial.
int
    mdp_worker_send_final (mdp_worker_t *self, zframe_t *client, zmsg_t **body_p);

//  The socket that is readable when a request waits. Stable for the
//  worker's whole life, across reconnects. The worker owns it.
zsock_t *
    mdp_worker_sock (mdp_worker_t *self);

//  True when the broker has cancelled the request of `client` (CANCEL,
//  mdp_common.h: it could not deliver a PARTIAL because the client went
//  away). Cheap (a mutex and a list lookup): call it between steps of a
//  long reply, stop the work, and still send the FINAL, which frees the
//  broker's slot. False again once that FINAL is sent.
bool
    mdp_worker_cancelled (mdp_worker_t *self, zframe_t *client);

//  How many times the worker has (re)connected to the broker, the first
//  connection included. For tests and stats.
int
    mdp_worker_connects (mdp_worker_t *self);

#ifdef __cplusplus
}
#endif

#endif
