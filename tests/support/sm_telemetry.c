/*  sm_telemetry.c: broker + splitmesh-telemetry processes for tests.

    See sm_telemetry.h.
*/
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "sm_http.h"
#include "sm_proc.h"
#include "sm_telemetry.h"

static long long
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool
s_health_ok (void *arg)
{
    int port = *(int *) arg;
    sm_http_reply_t reply;
    bool ok = sm_http_get (port, "/health", 1000, &reply) == 0 && reply.status == 200;
    sm_http_reply_free (&reply);
    return ok;
}

int
sm_telemetry_mesh_start (sm_telemetry_mesh_t *mesh, const char *prefix,
                         int tick_ms, int down_after_ms)
{
    memset (mesh, 0, sizeof *mesh);
    mesh->dir = sm_tmpdir_new (prefix);
    if (!mesh->dir)
        return -1;
    snprintf (mesh->mdp, sizeof mesh->mdp, "ipc://%s/mdp.ipc", mesh->dir);
    snprintf (mesh->xsub, sizeof mesh->xsub, "ipc://%s/tel-in.ipc", mesh->dir);
    snprintf (mesh->xpub, sizeof mesh->xpub, "ipc://%s/tel-out.ipc", mesh->dir);
    snprintf (mesh->log, sizeof mesh->log, "%s/children.log", mesh->dir);
    mesh->broker = sm_spawn (mesh->log, "splitmesh-broker", "-e", mesh->mdp,
                             "--telemetry-xsub", mesh->xsub, "--telemetry-xpub", mesh->xpub,
                             "--heartbeat-ms", "200", NULL);
    if (mesh->broker <= 0)
        return -1;
    mesh->http_port = sm_free_tcp_port ();
    char port [16], tick [16], down [16];
    snprintf (port, sizeof port, "%d", mesh->http_port);
    snprintf (tick, sizeof tick, "%d", tick_ms > 0? tick_ms: 1000);
    snprintf (down, sizeof down, "%d", down_after_ms > 0? down_after_ms: 3000);
    mesh->telemetry = sm_spawn (mesh->log, "splitmesh-telemetry", "-s", mesh->xpub,
                                "-p", port, "--tick-ms", tick, "--down-after-ms", down, NULL);
    if (mesh->telemetry <= 0)
        return -1;
    if (!sm_poll_until (s_health_ok, &mesh->http_port, 10000, 50)) {
        fprintf (stderr, "sm_telemetry: splitmesh-telemetry did not answer /health on port %d "
                 "within 10 s (log: %s)\n", mesh->http_port, mesh->log);
        return -1;
    }
    return 0;
}

void
sm_telemetry_mesh_stop (sm_telemetry_mesh_t *mesh)
{
    if (mesh->telemetry > 0)
        sm_kill (mesh->telemetry, 15, 3000);
    if (mesh->broker > 0)
        sm_kill (mesh->broker, 15, 3000);
    mesh->telemetry = mesh->broker = 0;
    if (mesh->dir && getenv ("SPLITMESH_KEEP_TMP"))
        fprintf (stderr, "sm_telemetry: logs kept in %s\n", mesh->dir);
    else
    if (mesh->dir)
        sm_tmpdir_remove (&mesh->dir);
}

bool
sm_telemetry_wait_sample (int http_port, const char *prefix, double value,
                          int timeout_ms, double *last)
{
    long long until = s_now_ms () + timeout_ms;
    double seen = NAN;
    bool found = false;
    size_t len = strlen (prefix);
    while (!found) {
        sm_http_reply_t reply;
        if (sm_http_get (http_port, "/metrics", 2000, &reply) == 0 && reply.status == 200) {
            for (char *line = reply.body; line && *line; ) {
                char *next = strchr (line, '\n');
                if (strncmp (line, prefix, len) == 0 && line [len] == ' ') {
                    seen = strtod (line + len + 1, NULL);
                    found = seen == value;
                }
                line = next? next + 1: NULL;
            }
        }
        sm_http_reply_free (&reply);
        if (found || s_now_ms () >= until)
            break;
        usleep (100 * 1000);
    }
    if (last)
        *last = seen;
    return found;
}
