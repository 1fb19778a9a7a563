/*  mdp_echo_worker.c: `splitmesh-test-echo-worker`, a real worker process.

    Integration tests start two or more of these behind a real broker and
    kill them (-9 included) to test balancing, failover and session
    affinity. It runs the same echo actor tests use in-process
    (tests/support/sm_mdp.c) until SIGTERM or SIGINT.
*/
#include <stdio.h>
#include <stdlib.h>
#include "options.h"
#include "sm_mdp.h"

#define S_MAX 100000000L

static const options_spec_t s_options [] = {
    { "endpoint", 'e', "SPLITMESH_ECHO_ENDPOINT", OPTIONS_STRING, .arg = "EP",
      .flags = OPTIONS_REQUIRED, .help = "broker endpoint" },
    { "service", 's', "SPLITMESH_ECHO_SERVICE", OPTIONS_STRING, .arg = "NAME",
      .def = "echo", .help = "service to serve" },
    { "name", 'n', "SPLITMESH_ECHO_NAME", OPTIONS_STRING, .arg = "NAME",
      .def = "echo", .help = "worker name in replies and logs" },
    { "delay-ms", 'd', "SPLITMESH_ECHO_DELAY_MS", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "delay before each reply" },
    { "partials", 'p', "SPLITMESH_ECHO_PARTIALS", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "PARTIAL replies before the FINAL" },
    { "capacity", 'c', "SPLITMESH_ECHO_CAPACITY", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "requests in flight (capacity extension)" },
    { "heartbeat-ms", 0, "SPLITMESH_ECHO_HEARTBEAT_MS", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "heartbeat interval (0: default)" },
    { "liveness", 0, "SPLITMESH_ECHO_LIVENESS", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "missed heartbeats before the broker is dead (0: default)" },
    { "reconnect-ms", 0, "SPLITMESH_ECHO_RECONNECT_MS", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "first reconnect delay (0: default)" },
    { "reconnect-max-ms", 0, "SPLITMESH_ECHO_RECONNECT_MAX_MS", OPTIONS_INT, .min = 0,
      .max = S_MAX, .help = "reconnect back-off cap (0: default)" },
    { "verbose", 'v', "SPLITMESH_ECHO_VERBOSE", OPTIONS_BOOL, .help = "log every command" },
};

int
main (int argc, char **argv)
{
    int status;
    options_t *opts = options_new_from_args ("splitmesh-test-echo-worker", "-e ENDPOINT [options]",
        "An MDP echo worker for integration tests.", s_options, OPTIONS_COUNT (s_options),
        argc, argv, &status);
    if (!opts)
        return status;
    sm_echo_config_t config = {
        .endpoint = options_string (opts, "endpoint"),
        .service = options_string (opts, "service"),
        .name = options_string (opts, "name"),
        .delay_ms = options_int (opts, "delay-ms"),
        .partials = options_int (opts, "partials"),
        .capacity = options_int (opts, "capacity"),
        .heartbeat_ms = options_int (opts, "heartbeat-ms"),
        .liveness = options_int (opts, "liveness"),
        .reconnect_ms = options_int (opts, "reconnect-ms"),
        .reconnect_max_ms = options_int (opts, "reconnect-max-ms"),
        .verbose = options_bool (opts, "verbose")
    };
    zactor_t *actor = zactor_new (sm_echo_worker_actor, &config);
    printf ("splitmesh-test-echo-worker %s: serving '%s' at %s\n",
            config.name, config.service, config.endpoint);
    fflush (stdout);
    while (!zsys_interrupted) {
        zmq_pollitem_t item = { zsock_resolve (zactor_sock (actor)), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 200) == -1)
            break;
    }
    zactor_destroy (&actor);
    options_destroy (&opts);
    return 0;
}
