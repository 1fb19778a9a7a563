/*  batcher.h: continuous batching for an MDP service: many requests in
    flight at one worker, gathered into batches with a bounded wait.

    service_actor_run serves one request at a time: MDP/0.2 gives a worker
    one request until it replies. A GPU verifies 64 sessions' drafts in
    about the time it verifies one (the step streams the weights once), so
    cloud-target registers with a capacity (the READY capacity frame: the
    broker keeps up to `capacity` requests outstanding at this worker),
    keeps each request with its client envelope, and answers out of order.

    The loop: requests are queued as they arrive. A batch is formed when
    `capacity` requests wait (no more can come until something is
    answered), when the oldest has waited `wait_us`, or (adaptive) when
    every session active lately already has a request queued, so nothing
    is worth waiting for (a lone session never waits); meanwhile the
    computation of the previous batch does not block arrivals (they queue
    in the socket), so each batch takes whatever arrived during the last
    one: continuous batching. Forming a batch walks the queue in arrival
    order and asks the service (admit) about each request: answer now
    (errors, session_close, anything not batched), join the batch, or wait
    for a later batch. A request naming a session that already has a
    request in the batch, or one that was told to wait, is left queued
    without asking, so one session's requests are handled in order. Then
    run computes the whole batch and gives one reply per job; each goes to
    its own client. Every request gets exactly one FINAL.
*/
#ifndef SPLITMESH_BATCHER_H
#define SPLITMESH_BATCHER_H

#include <czmq.h>
#include "service.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BATCHER_REPLY,              //  answered now: *reply_p is the reply
    BATCHER_JOB,                //  joins the batch: *job_p is the service's job
    BATCHER_DEFER               //  not now: stays queued for a later batch
} batcher_admit_t;

typedef struct {
    //  Decides on one request (body, not owned; peek as service_check
    //  filled it) while a batch is formed; n_jobs jobs are already in it.
    //  A BATCHER_DEFER must not have changed any state.
    batcher_admit_t (*admit) (void *state, zframe_t *body, const wire_peek_t *peek, int n_jobs,
                              zframe_t **reply_p, void **job_p);
    //  Computes jobs[0 .. n) and sets replies[i] for each (NULL is
    //  answered with 500); frees the jobs.
    void (*run) (void *state, void **jobs, int n, zframe_t **replies);
} batcher_ops_t;

typedef struct {
    int capacity;               //  requests in flight at the worker, 1..1024
    int wait_us;                //  longest wait of the oldest queued request
    bool adaptive;              //  wait only while another active session is due
    int active_us;              //  a session silent this long is no longer waited for
} batcher_options_t;

//  The capacity and wait from SPLITMESH_BATCH_CAPACITY (default: max_sessions,
//  at most 1024), SPLITMESH_BATCH_WAIT_US (default 1000),
//  SPLITMESH_BATCH_ADAPTIVE (default 1: a batch goes at once when no other
//  active session's request is due, so a lone session never waits) and
//  SPLITMESH_BATCH_ACTIVE_US (default 50000: how long a silent session is
//  still expected).
batcher_options_t batcher_options_default (const service_config_t *config);

//  As service_actor_run (registers `service`, answers "ERROR" on the pipe
//  with setup_err, serves until $TERM), serving with ops in batches.
void batcher_run (zsock_t *pipe, const service_config_t *config, const char *service,
                  const char *setup_err, const batcher_ops_t *ops, void *state,
                  metrics_t *metrics, const batcher_options_t *options);

#ifdef __cplusplus
}
#endif

#endif
