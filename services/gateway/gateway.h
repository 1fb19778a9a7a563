/*  gateway.h: the OpenAI-compatible HTTP gateway of a splitmesh mesh.

    Applications written for the OpenAI API (the official client packages,
    curl scripts, chat front ends) talk HTTP+JSON; the mesh talks MDP and
    MessagePack. The gateway translates: POST /v1/chat/completions and
    /v1/completions become one `generate` request each to the device
    broker (see schemas/messages.toml), streamed PARTIALs become
    Server-Sent Events ending with `data: [DONE]`, the FINAL's stats become
    `usage`. GET /v1/models lists the served model, GET /health says 200
    only while the broker has a `generate` worker (mmi.service), else 503.
    Every error is OpenAI-shaped: {"error":{"message","type","param","code"}}.

    Threads: libmicrohttpd runs a thread per connection (a stream blocks
    its own thread on the MDP socket, never another request), and each
    request opens its own MDP client, so no ZeroMQ socket is shared between
    threads. Not an actor: there is no message loop to run, only an HTTP
    server, so the API is new/drain/destroy and main waits for signals.

    Draining (SIGTERM in main.c): gateway_drain makes /health answer 503
    at once and refuses new completions with 503; streams already running
    finish; gateway_in_flight says when they have.
*/
#ifndef GATEWAY_H_INCLUDED
#define GATEWAY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *broker;         //  device broker endpoint (MDP), required
    int http_port;              //  HTTP port, 0: any free one
    const char *http_address;   //  IPv4 address to listen on, NULL: 127.0.0.1
    const char *model_name;     //  id in /v1/models, NULL: "splitmesh"
    int timeout_ms;             //  longest wait for one reply of the mesh (default 60000)
    bool verbose;               //  log every request
    const char *telemetry;      //  metrics XSUB endpoint, NULL/"": no metrics
    const char *instance;       //  metrics instance label, NULL: host:pid
} gateway_config_t;

typedef struct _gateway_t gateway_t;

//  Starts the HTTP server. The config's strings are copied. Returns NULL
//  (with a message in the log) if the port cannot be bound or the config
//  is invalid. Caller owns the result and must destroy it.
gateway_t *
    gateway_new (const gateway_config_t *config);

//  Stops the server (closing connections still open) and frees it.
//  Nullifies *self_p.
void
    gateway_destroy (gateway_t **self_p);

//  The bound HTTP port.
int
    gateway_port (gateway_t *self);

//  Starts draining: /health answers 503 and new completions are refused
//  with 503 from now on; requests already accepted carry on.
void
    gateway_drain (gateway_t *self);

//  Completion requests accepted and not yet finished.
int
    gateway_in_flight (gateway_t *self);

#ifdef __cplusplus
}
#endif

#endif
