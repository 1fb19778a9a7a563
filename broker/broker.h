/*  broker.h: the splitmesh MDP/0.2 broker (ZeroMQ RFC 18) as a CZMQ actor.

    One ROUTER socket serves both sub-protocols: clients (MDPC02, DEALER)
    send REQUESTs to a service by name; workers (MDPW02) register a service
    with READY and answer with PARTIALs and a FINAL. The broker:

    - balances a service's requests over its workers, least recently used
      first;
    - heartbeats workers and forgets one after `liveness` silent intervals;
      requests that worker held go back to the head of the queue and another
      worker answers them (workers are idempotent per RFC 18). A request that
      had already streamed PARTIALs is not replayed (the client would see
      pieces twice); its client gets a 503 FINAL instead;
    - queues requests for a service with no free worker, and answers a
      request still queued after `request_expiry_ms` with a 504 FINAL;
      a service with no worker and no queued request is forgotten;
    - routes by session: if a request body's first frame is a MessagePack
      map with a string "session" (<= 64 bytes), the request goes to the
      worker that served that session of that service while it lives, and
      is re-bound (LRU) when it dies. While the bound worker is busy, the
      request waits for it (others in the queue still go ahead), since only
      that worker holds the session's state. Bindings are bounded (oldest
      evicted);
    - answers MMI: "mmi.service" (body: service name) -> "200" if the
      service has a worker, "404" if not; "mmi.workers" (splitmesh) -> the
      number of workers as a decimal string; other "mmi.*" -> "501";
    - runs an XSUB/XPUB proxy for the telemetry bus when both endpoints are
      configured (publishers connect to XSUB, subscribers to XPUB).

    Errors are replies, never silence: a malformed client REQUEST (missing
    frames, bad service name, a body map that is truncated, oversized,
    too deeply nested, of an unknown schema version, or with a bad session)
    gets a FINAL whose body is {"v":1,"status":400,"error":"..."}; a full
    queue (--max-queue-service / --max-queue-total) gets 429 "busy" with
    retry_after_ms (BROKER_RETRY_AFTER_MS), an expired request 504. Messages with a garbage MDP
    header are dropped with a log line; a worker that breaks the protocol
    is sent DISCONNECT and forgotten. As RFC 18 requires, clients use
    DEALER sockets and send no empty delimiter; REQ-socket (MDP/0.1 style)
    messages are dropped with a log line that says so.

    Capacity extension (for batching services): READY may carry one extra
    frame, a MessagePack map {"v":1,"capacity":N} with N in 1..1024. The
    broker then keeps up to N requests outstanding on that worker; a FINAL
    frees a slot, a PARTIAL does not. Without the frame the capacity is 1,
    so pure RFC 18 workers work unchanged.

    Cancel extension: a worker whose READY map also says "cancel":true is
    sent CANCEL [client][""] (mdp_common.h) when a PARTIAL of one of its
    requests cannot be delivered because the client has gone away (the
    ROUTER is ZMQ_ROUTER_MANDATORY, so the send fails with EHOSTUNREACH).
    Later PARTIALs of that request are dropped; its FINAL frees the slot
    as usual. Counted in stats.cancelled and splitmesh_broker_cancels_total.
    A client that waits for a FINAL only (no PARTIALs) is not noticed
    before that FINAL: ZeroMQ tells a ROUTER nothing when a peer leaves.

    Actor commands on the pipe:
      "$TERM"               stop
      "ENDPOINT"            -> string: the last bound MDP endpoint (resolves
                               "tcp://127.0.0.1:*" to the real port)
      "STATS"               -> one frame holding a broker_stats_t
*/
#ifndef BROKER_H_INCLUDED
#define BROKER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//  retry_after_ms of the broker's 429 answer to a request it cannot queue.
#define BROKER_RETRY_AFTER_MS   250

typedef struct {
    const char *endpoints;          //  MDP ROUTER endpoints, comma-separated
    const char *telemetry_xsub;     //  XSUB bind endpoint, or NULL
    const char *telemetry_xpub;     //  XPUB bind endpoint, or NULL
    int heartbeat_ms;               //  0: 2500
    int liveness;                   //  0: 3 (RFC 18 says 3..5)
    int request_expiry_ms;          //  0: 5000; queued requests older expire
    int max_queue_service;          //  0: 1000 requests queued per service
    int max_queue_total;            //  0: 10000 requests queued in all
    int max_sessions;               //  0: 65536 session bindings
    int64_t max_msg_bytes;          //  0: 512 MiB; bigger messages drop the peer
    bool verbose;                   //  log every command
} broker_config_t;

//  Counters the STATS command returns.
typedef struct {
    uint64_t workers;               //  registered workers now
    uint64_t services;              //  services known now
    uint64_t queued;                //  requests waiting now
    uint64_t sessions;              //  session bindings now
    uint64_t requests;              //  REQUESTs accepted
    uint64_t replies;               //  FINALs forwarded from workers
    uint64_t errors;                //  error FINALs the broker wrote
    uint64_t dropped;               //  messages dropped (garbage, protocol)
    uint64_t cancelled;             //  requests cancelled: their client went away
    uint64_t requeued;              //  requests moved off a dead worker
    uint64_t expired;               //  requests answered with 504
    uint64_t workers_lost;          //  workers expired by heartbeat
} broker_stats_t;

//  The broker actor. `args` is a broker_config_t *, copied before the
//  actor signals, so it may live on the caller's stack. If an endpoint
//  cannot be bound the actor logs why, answers "ENDPOINT" with "" and
//  only waits for $TERM.
//      zactor_t *broker = zactor_new (broker_actor, &config);
void
    broker_actor (zsock_t *pipe, void *args);

//  Asks a running broker actor for its counters. Returns 0 or -1.
int
    broker_stats (zactor_t *broker, broker_stats_t *stats);

//  Asks a running broker actor for its bound MDP endpoint. Caller owns the
//  returned string and must free it; "" if binding failed, NULL on error.
char *
    broker_endpoint (zactor_t *broker);

#ifdef __cplusplus
}
#endif

#endif
