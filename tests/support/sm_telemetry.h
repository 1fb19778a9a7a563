/*  sm_telemetry.h: a broker with its telemetry bus plus splitmesh-telemetry,
    as real processes, for integration tests.

    The telemetry, prometheus and dashboard tests all need the same start:
    `splitmesh-broker` on ipc:// endpoints (MDP, telemetry XSUB and XPUB)
    in a fresh temp dir, and `splitmesh-telemetry` subscribed to it with
    its HTTP server on a free loopback port, ready when /health answers.
    Children are registered with sm_proc, so sm_proc_kill_all in a suite's
    .fini reaps them even after a failed assertion.
*/
#ifndef SM_TELEMETRY_H_INCLUDED
#define SM_TELEMETRY_H_INCLUDED

#include <stdbool.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *dir;                  //  temp dir: sockets and logs
    char mdp [512];             //  ipc://<dir>/mdp.ipc: MDP broker endpoint
    char xsub [512];            //  ipc://<dir>/tel-in.ipc: publishers connect here
    char xpub [512];            //  ipc://<dir>/tel-out.ipc: splitmesh-telemetry subscribes here
    char log [512];             //  <dir>/children.log: every child's output
    int http_port;              //  splitmesh-telemetry's HTTP port
    pid_t broker;
    pid_t telemetry;
} sm_telemetry_mesh_t;

//  Starts the broker and splitmesh-telemetry (tick_ms: dashboard point
//  interval, down_after_ms: health threshold; 0 for the defaults) and
//  waits up to 10 s until /health answers 200. Returns 0, or -1 with a
//  message on stderr (children already started stay registered).
int
    sm_telemetry_mesh_start (sm_telemetry_mesh_t *mesh, const char *prefix,
                             int tick_ms, int down_after_ms);

//  Kills the children, removes the temp dir (kept, with a message, when
//  SPLITMESH_KEEP_TMP is set).
void
    sm_telemetry_mesh_stop (sm_telemetry_mesh_t *mesh);

//  Polls GET /metrics until a line starts with `prefix` followed by a
//  space and a value equal to `value`, up to timeout_ms. Returns true if
//  seen; the last value read (or NAN) goes to *last when last is not NULL.
bool
    sm_telemetry_wait_sample (int http_port, const char *prefix, double value,
                              int timeout_ms, double *last);

#ifdef __cplusplus
}
#endif

#endif
