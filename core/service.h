/*  service.h: what every model-serving worker process shares: its options
    (flags and environment, as docs/pipeline.md lists them) and its request
    loop on the MDP broker.

    The tokenizer, split-prefix and cloud-target services each provide a
    state (their model and sessions) and one handler that turns a request
    body into a reply body; service_actor_run does the rest: registers the
    worker, waits on the actor pipe and the worker socket, peeks the
    request's `t`, calls the handler, and sends exactly one FINAL for every
    request (a malformed body gets 400 without reaching the handler), so a
    service never goes silent and never exits on bad input.

    Actor protocol, as crypt-proxy's: the actor signals 0 once it has tried
    to start; the creator then sends "ERROR" and receives "" (started) or the
    reason it could not start, and "$TERM" stops it. service_actor_new wraps
    both steps.
*/
#ifndef SPLITMESH_SERVICE_H
#define SPLITMESH_SERVICE_H

#include <stdbool.h>
#include <stdint.h>
#include <czmq.h>
#include "codec.h"
#include "metrics.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Options of a service process. Strings are borrowed (argv or getenv).
typedef struct {
    const char *broker;         //  --broker EP           [SPLITMESH_BROKER]
    const char *telemetry;      //  --telemetry EP        [SPLITMESH_TELEMETRY]
    const char *model;          //  --model PATH          [SPLITMESH_MODEL]
    int threads;                //  --threads N           [SPLITMESH_THREADS] (default 2)
    qfmt_t format;              //  --format F            [SPLITMESH_FORMAT]
    const char *instance;       //  --instance NAME       [SPLITMESH_INSTANCE]
    int heartbeat_ms;           //  --heartbeat-ms N      (0: MDP default)
    bool verbose;               //  -v
    int split;                  //  --split L             [SPLITMESH_SPLIT]
    int ctx;                    //  --ctx N               (0: min(model's, 2048))
    int max_sessions;           //  --max-sessions N      (default 16)
    wire_dtype_t act_dtype;     //  --act-dtype D         (split-prefix; default int8)
    bool stage_only;            //  --stage-only          (cloud-target: load [L, N) only)
} service_config_t;

//  Which options a service accepts beyond the common ones.
#define SERVICE_OPT_SPLIT     1     //  --split, --ctx, --max-sessions
#define SERVICE_OPT_ACT_DTYPE 2     //  --act-dtype
#define SERVICE_OPT_STAGE     4     //  --stage-only

//  The default model path when neither --model nor SPLITMESH_MODEL is set.
#define SERVICE_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

//  Fills config from the environment, then argv. prog names the program in
//  messages and usage; default_format is the service's own default.
//  Returns 0 to run, 1 when --help was printed (exit 0), 2 on a usage error
//  (message printed; exit 2).
int service_config_parse (service_config_t *config, int argc, char **argv,
                          const char *prog, int extra, qfmt_t default_format);

//  Handles one request. body is the request's single frame (not owned),
//  peek what wire_peek found in it. Returns the reply frame (caller takes
//  ownership); NULL means out of memory and is answered with 500.
typedef zframe_t *(service_handler_fn) (void *state, zframe_t *body, const wire_peek_t *peek);

//  Runs the request loop of an actor whose setup is done: registers
//  `service` with config->broker, answers "ERROR" on the pipe with setup_err
//  ("" when setup succeeded), and, if setup succeeded, serves requests with
//  handler until $TERM. Call it from the actor after its setup, in place of
//  zsock_signal (it signals). Returns when the actor should exit.
//  metrics (core/metrics; may be NULL or disabled) gets
//  splitmesh_requests_total{status} for every reply and
//  splitmesh_errors_total{status} for every error reply.
void service_actor_run (zsock_t *pipe, const service_config_t *config, const char *service,
                        const char *setup_err, service_handler_fn *handler, void *state,
                        metrics_t *metrics);

//  The checks every request passes before a handler sees it: one frame,
//  at most WIRE_MAX_FRAME_BYTES, a readable `t`, schema version 1 or
//  none. Fills peek and returns NULL, or returns the error reply (caller
//  owns it). For loops that serve requests themselves (cloud-target's
//  batcher); service_actor_run uses it.
zframe_t *service_check (zmsg_t *request, const char *service, wire_peek_t *peek);

//  Counts a reply in metrics as service_actor_run does:
//  splitmesh_requests_total{status}, and splitmesh_errors_total{status}
//  when the schema flags the status as an error (wire_status_is_error:
//  409 stale is not). Nothing when metrics is NULL or disabled.
void service_count_reply (metrics_t *metrics, zframe_t *reply);

//  Starts actor with args and checks that it started. Returns the actor, or
//  NULL after logging the actor's reason. Caller owns the actor and must
//  destroy it.
zactor_t *service_actor_new (zactor_fn *actor, void *args, const char *name);

//  Runs actor until SIGINT/SIGTERM: the body of every service's main.
//  Returns the process exit status (1 when the actor failed to start).
int service_main_run (zactor_fn *actor, void *args, const char *name);

//  An error reply frame with a formatted message. Caller owns the frame.
zframe_t *service_error (int status, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

//  --- sessions (split-prefix, cloud-target) ----------------------------
//  Positions per session (--ctx, default min(context_length, 2048)) for a
//  model of n_layers layers, checking --split and --ctx against it.
//  Returns 0 and sets *ctx, or -1 with the reason in err.
int service_stage_ctx (const service_config_t *config, int n_layers, int context_length,
                       int *ctx, char *err, size_t err_size);

typedef struct _session_store_t session_store_t;

//  Answers a `session_close` body: drops the session from sessions (an
//  unknown one is not an error) and returns the `ack` frame, or the 400 of
//  a malformed body. Caller owns the frame.
zframe_t *service_session_close (session_store_t *sessions, zframe_t *body);

//  Stores a new session's item under id (session_store_insert), logging
//  the least recently used session it evicted, if any, as `service`.
//  Returns 0, or -1 when out of memory (the item is destroyed).
int service_session_insert (session_store_t *sessions, const char *service, const char *id,
                            void *item);

//  Encodes msg or, if the encoder refuses it, a 500 naming the reason.
//  Caller owns the frame.
zframe_t *service_encode (const wire_desc_t *desc, const void *msg);

#ifdef __cplusplus
}
#endif

#endif
