/*  telemetry.h: the telemetry service (`splitmesh-telemetry`) as an actor.

    Subscribes to the telemetry bus (the broker's XPUB endpoint), feeds
    every `metric_event` into a metrics_store (core/metrics_store.h) and
    serves it over HTTP with libmicrohttpd (its own thread; the store is
    shared under a mutex):

      GET /metrics      Prometheus text exposition 0.0.4
      GET /health       200 + JSON: per-service instances, last seen, up/down,
                        and the broker's workers per MDP service
      GET /api/series   JSON time series for the dashboard (one point a second,
                        the last 5 minutes)
      GET /             the live dashboard (static HTML + vanilla JS that polls
                        /api/series and draws on <canvas>; no build step, no CDN)
      other paths       404 with a JSON error; other methods 405

    Bad events are counted (splitmesh_telemetry_events_rejected_total) and
    logged at most once a second; the service keeps serving.

    Actor commands on the pipe:
      "$TERM"           stop
      "PORT"            -> string: the bound HTTP port ("0" if HTTP failed)
*/
#ifndef SPLITMESH_TELEMETRY_H
#define SPLITMESH_TELEMETRY_H

#include <czmq.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *subscribe;          //  broker telemetry XPUB endpoint to connect to
    const char *http_address;       //  IPv4 address to listen on; NULL: 127.0.0.1
    int http_port;                  //  0: any free port (ask with "PORT")
    int tick_ms;                    //  dashboard point interval; 0: 1000
    int down_after_ms;              //  a process silent this long is down; 0: 3000
    bool verbose;                   //  log every rejected event
} telemetry_config_t;

//  The actor. args is a telemetry_config_t * (copied before it signals).
//  Signals 0 when subscribed and serving HTTP, -1 (after logging why) when
//  the endpoint or the HTTP port cannot be used; then it waits for $TERM.
void
    telemetry_actor (zsock_t *pipe, void *args);

//  Starts the actor and waits for it. Returns NULL if it could not start.
//  Caller owns the actor and ends it with zactor_destroy.
zactor_t *
    telemetry_new (const telemetry_config_t *config);

//  The bound HTTP port of a running actor, or -1.
int
    telemetry_port (zactor_t *telemetry);

#ifdef __cplusplus
}
#endif

#endif
