/*  sm_mdp.h: MDP helpers for tests: an echo worker, bodies, readiness.

    The echo worker is what integration tests put behind the broker: it
    answers every request with a MessagePack map that names the worker, so
    a test can see which worker served what (load spread, session affinity,
    failover). It can delay its answer, stream PARTIALs first, and serve
    several requests at once (capacity). It runs as an actor in-process, and
    as the real process `splitmesh-test-echo-worker` (tests/tools).

    Echo reply:   {"v":1,"status":200,"worker":NAME,"seq":N,"echo":bin}
    Echo partial: {"v":1,"status":206,"worker":NAME,"part":I}
    A request body that is a map may hold "delay_ms" (overrides the worker's
    delay) and "partials" (overrides its PARTIAL count).
*/
#ifndef SM_MDP_H_INCLUDED
#define SM_MDP_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *endpoint;       //  broker endpoint
    const char *service;        //  service to register
    const char *name;           //  written into every reply
    int delay_ms;               //  answer after this long
    int partials;               //  PARTIALs before the FINAL
    int capacity;               //  requests served at once (READY frame if > 1)
    int heartbeat_ms;           //  0: default
    int liveness;               //  0: default
    int reconnect_ms;           //  0: default
    int reconnect_max_ms;       //  0: default
    bool verbose;
} sm_echo_config_t;

//  The echo worker actor; args is an sm_echo_config_t * (copied before the
//  actor signals). Signals 0 when its worker exists, -1 if it could not be
//  created. "$TERM" stops it.
void
    sm_echo_worker_actor (zsock_t *pipe, void *args);

//  Builds a one-frame body {"v":1[,"session":S][,"delay_ms":D][,"partials":P]};
//  session NULL and negative numbers leave those keys out. Caller owns it.
zmsg_t *
    sm_body_new (const char *session, int delay_ms, int partials);

//  Reads a string / integer value of `key` from a reply body's first frame
//  (a MessagePack map). Caller frees the string. NULL / -1 if absent,
//  wrong type, or the frame is not a valid map.
char *
    sm_body_str (zmsg_t *body, const char *key);
int
    sm_body_int (zmsg_t *body, const char *key, int64_t *value);

//  Asks the broker (mmi.workers) until `service` has at least `workers`
//  workers or timeout_ms passed. Returns true if it got there.
bool
    sm_mdp_wait_workers (const char *endpoint, const char *service,
                         int workers, int timeout_ms);

//  Sends one request and waits up to timeout_ms for the FINAL, with no
//  retry. Returns the body (caller owns it) or NULL.
zmsg_t *
    sm_mdp_call (const char *endpoint, const char *service, zmsg_t **body_p,
                 int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif
