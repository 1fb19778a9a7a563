/*  sm_gateway.h: a small mesh for the gateway and client tests.

    The OpenAI gateway and the client examples need a real mesh that
    answers fast: a 4-layer tiny model (`splitmesh tiny-model`), with the
    real model's vocabulary when that file is present (so the text is real
    words and a mismatch shows), else the built-in tokenizer. Also a raw
    HTTP POST, since sm_http only GETs.
*/
#ifndef SM_GATEWAY_H_INCLUDED
#define SM_GATEWAY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *dir;                  //  temp dir (owned)
    char run_dir [1024];        //  the mesh's run dir
    char model [1100];          //  the tiny model
    char broker [1100];         //  ipc:// device broker
    int gateway_port;           //  the port `splitmesh up` printed, or 0
    bool telemetry;             //  set before sm_mesh_up: start splitmesh-telemetry too
    int telemetry_port;         //  its HTTP port (printed by up), or 0
} sm_mesh_t;

//  Writes the tiny model into a fresh temp dir named with prefix and fills
//  mesh (not started). Returns 0, or -1 with a message in err.
int
    sm_mesh_prepare (sm_mesh_t *mesh, const char *prefix, char *err, size_t size);

//  `splitmesh up` on the prepared model (no telemetry unless
//  mesh->telemetry is set; extra_arg, if not NULL, is one more flag such
//  as "--no-gateway"). Reads the gateway's (and telemetry's) port from
//  up's output. Returns 0, or -1 with up's output in err.
int
    sm_mesh_up (sm_mesh_t *mesh, const char *extra_arg, char *err, size_t size);

//  Tears the mesh down and removes the temp dir. Safe to repeat.
void
    sm_mesh_down (sm_mesh_t *mesh);

//  POSTs body (JSON) to path on 127.0.0.1:port as HTTP/1.0 and reads the
//  answer within timeout_ms. Returns the status (0: no answer) and, if
//  reply is not NULL, the whole raw answer in *reply (caller frees).
int
    sm_http_post (int port, const char *path, const char *body, int timeout_ms, char **reply);

//  The sum of the samples of family `name` (e.g. "splitmesh_requests_total")
//  in a Prometheus text exposition whose label set contains every one of
//  the NULL-terminated `must` strings (e.g. "service=\"edge-draft\"",
//  "status=\"200\""). Sets *found to the number of samples summed.
double
    sm_prom_sum (const char *exposition, const char *name, int *found, ...);

//  GET /metrics from 127.0.0.1:port into a fresh string (caller frees), or NULL.
char *
    sm_prom_scrape (int port);

#ifdef __cplusplus
}
#endif

#endif
