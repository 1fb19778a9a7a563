/*  edge_draft.h: the `generate` service: owns generation sessions on the
    device and runs the speculative loop of docs/pipeline.md.

    For each `generate` request it tokenizes through the `tokenizer`
    service, opens a session with `prefix` (split-prefix, on the device
    broker) and `target` (cloud-target, on the cloud broker, optionally
    across an emulated link), then loops: draft k tokens locally, get their
    layer-L activations from `prefix.extend`, have `target.verify` accept a
    prefix and pick the next token, roll every cache back to the accepted
    prefix. Accepted text streams out as PARTIALs; the FINAL carries
    gen_stats. Modes: speculative (privacy prefix or none), cloud_only
    (tokens to the cloud, one verify per token) and edge_only (the draft
    model alone).

    Concurrency: the actor runs `workers` threads, each a separate MDP
    worker of `generate` with its own broker connections, handling one
    generation at a time from start to end. The broker spreads requests
    over idle workers, so N generations run at once with no session
    multiplexing inside a thread: each step of a generation is a blocking
    round trip anyway, and a thread per generation keeps the loop a plain
    sequence that reads like the protocol. The draft model's weights are
    shared by all threads (one mutex around its forward calls); each
    generation has its own draft KV cache, sized to what it can reach.

    Start it in-process with edge_draft_new (it reports a bad argument or
    an unloadable model as an error instead of a dead actor), or run the
    actor with zactor_new. "$TERM" stops it; a generation in progress ends
    after its current round with finish_reason "error".
*/
#ifndef SPLITMESH_EDGE_DRAFT_H
#define SPLITMESH_EDGE_DRAFT_H

#include <czmq.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGE_DRAFT_WORKERS_DEFAULT  4
#define EDGE_DRAFT_KMAX_DEFAULT     16
#define EDGE_DRAFT_MIN_P_DEFAULT    0.0     //  see --draft-min-p
#define EDGE_DRAFT_TIMEOUT_DEFAULT  5000    //  ms per attempt of one call, + 20 ms per position
#define EDGE_DRAFT_CTX_DEFAULT      2048    //  as the split-prefix and cloud-target services

typedef struct {
    const char *broker;         //  device broker (required)
    const char *cloud;          //  cloud broker; NULL: broker
    const char *link;           //  link emulator spec for the cloud path, or NULL
    const char *telemetry;      //  broker XSUB endpoint for metrics, or NULL
    const char *model;          //  target model file: its vocabulary and name
    const char *draft_model;    //  draft GGUF; NULL: model
    const char *draft_format;   //  f32 | w8 | w4 (NULL: w4)
    const char *drafter;        //  "model" (default) or "ngram": no draft model loaded
    const char *instance;       //  name in logs and metrics; NULL: host:pid
    int draft_k_max;            //  cap on k per round (0: EDGE_DRAFT_KMAX_DEFAULT)
    bool fixed_k;               //  keep the request's draft_k (no adaptation)
    bool no_lookahead;          //  do not draft ahead while a verify travels
    bool no_pipeline;           //  draft ahead, but send no verify before the last one's answer
    double draft_min_p;         //  end a round after a draft with p below this (0: never)
    int threads;                //  draft model threads (0: 1)
    int workers;                //  concurrent generations (0: EDGE_DRAFT_WORKERS_DEFAULT)
    int ctx;                    //  context limit, tokens (0: min(model's, 4096))
    int timeout_ms;             //  per attempt of a service call (0: default)
    int heartbeat_ms;           //  MDP heartbeat (0: default)
    bool verbose;               //  log every generation step
} edge_draft_args_t;

//  The actor (args: edge_draft_args_t *, read only during start-up).
//  Signals 0 on the pipe when ready, -1 when it could not start.
void edge_draft_actor (zsock_t *pipe, void *args);

//  Starts the actor and waits until it serves. Returns NULL with the reason
//  in err when it cannot (bad endpoint, model not loadable, ...). Caller
//  owns the actor and ends it with zactor_destroy.
zactor_t *edge_draft_new (const edge_draft_args_t *args, char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
