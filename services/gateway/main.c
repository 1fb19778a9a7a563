/*  main.c: `splitmesh-gateway`, the OpenAI-compatible HTTP API.

    Parses options (core/options.c: flags, SPLITMESH_* variables), starts
    the gateway (gateway.c) and waits for SIGINT or SIGTERM with the
    signals blocked in every thread and taken here by sigtimedwait: CZMQ's
    handler would set zsys_interrupted, which makes every MDP receive in
    the connection threads give up, cutting the streams that draining is
    meant to let finish. On the signal: /health fails at once, running
    requests finish (up to --drain-ms), then exit 0.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <czmq.h>
#include "gateway.h"
#include "options.h"

static const options_spec_t s_options [] = {
    { "broker", 'b', "SPLITMESH_BROKER", OPTIONS_STRING, .arg = "EP",
      .def = "tcp://127.0.0.1:5555", .help = "the device broker (MDP) with the `generate` service" },
    { "http-port", 'p', "SPLITMESH_GATEWAY_HTTP_PORT", OPTIONS_INT, .arg = "N", .def = "8080",
      .min = 0, .max = 65535, .help = "HTTP port (0: any free one)" },
    { "http-address", 'a', "SPLITMESH_GATEWAY_HTTP_ADDRESS", OPTIONS_STRING, .arg = "IP",
      .def = "127.0.0.1", .help = "IPv4 address to listen on (0.0.0.0: all)" },
    { "model-name", 'm', "SPLITMESH_GATEWAY_MODEL_NAME", OPTIONS_STRING, .arg = "NAME",
      .def = "splitmesh", .help = "model id in /v1/models; requests naming it (or none)\n"
      "get whatever edge-draft serves" },
    { "timeout-ms", 't', "SPLITMESH_GATEWAY_TIMEOUT_MS", OPTIONS_INT, .arg = "MS", .def = "60000",
      .min = 100, .max = 3600000, .help = "longest wait for one reply of the mesh" },
    { "drain-ms", 0, "SPLITMESH_GATEWAY_DRAIN_MS", OPTIONS_INT, .arg = "MS", .def = "300000",
      .min = 0, .max = 3600000, .help = "after SIGTERM, longest wait for running requests" },
    { "telemetry", 'T', "SPLITMESH_TELEMETRY", OPTIONS_STRING, .arg = "EP",
      .help = "publish metrics to this telemetry XSUB endpoint (docs/metrics.md)" },
    { "instance", 'i', "SPLITMESH_INSTANCE", OPTIONS_STRING, .arg = "NAME",
      .help = "instance label of the metrics (default host:pid)" },
    { "verbose", 'v', "SPLITMESH_GATEWAY_VERBOSE", OPTIONS_BOOL, .help = "log every request" },
};

int
main (int argc, char **argv)
{
    int status;
    options_t *opts = options_new_from_args ("splitmesh-gateway", "[options]",
        "Serves the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /health)\n"
        "over the mesh's `generate` service.",
        s_options, OPTIONS_COUNT (s_options), argc, argv, &status);
    if (!opts)
        return status;
    //  One MDP client (a DEALER and its monitor) per request in flight:
    //  ZeroMQ's default of 1024 sockets a process is too few under load.
    zsys_set_max_sockets (0);
    //  Before any thread exists, so all of them inherit the mask.
    zsys_handler_set (NULL);
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    signal (SIGPIPE, SIG_IGN);

    gateway_config_t config = {
        .broker = options_string (opts, "broker"),
        .http_port = options_int (opts, "http-port"),
        .http_address = options_string (opts, "http-address"),
        .model_name = options_string (opts, "model-name"),
        .timeout_ms = options_int (opts, "timeout-ms"),
        .verbose = options_bool (opts, "verbose"),
        .telemetry = options_string (opts, "telemetry"),
        .instance = options_string (opts, "instance")
    };
    int drain_ms = options_int (opts, "drain-ms");
    gateway_t *gateway = gateway_new (&config);
    if (!gateway) {
        fprintf (stderr, "splitmesh-gateway: cannot start (see the log above)\n");
        options_destroy (&opts);
        return 1;
    }
    printf ("splitmesh-gateway: http://%s:%d/v1 model '%s' via %s\n", config.http_address,
            gateway_port (gateway), config.model_name, config.broker);
    fflush (stdout);

    //  Drain before taking the signal: while it is pending the gateway
    //  already answers as draining (gateway.c), so there is no moment in
    //  between when /health could say ok.
    sigset_t pending;
    while (sigpending (&pending) == 0
       &&  !sigismember (&pending, SIGTERM) && !sigismember (&pending, SIGINT)) {
        struct timespec nap = { 0, 20 * 1000 * 1000 };
        nanosleep (&nap, NULL);
    }
    gateway_drain (gateway);
    struct timespec now = { 0, 0 };
    int sig = sigtimedwait (&signals, NULL, &now);
    zsys_info ("gateway: %s: draining (%d requests running)", sig > 0? strsignal (sig): "signal",
               gateway_in_flight (gateway));
    int64_t deadline = zclock_mono () + drain_ms;
    while (gateway_in_flight (gateway) > 0 && zclock_mono () < deadline) {
        //  A second signal means: stop now.
        struct timespec wait = { 0, 50 * 1000 * 1000 };
        if (sigtimedwait (&signals, NULL, &wait) > 0)
            break;
    }
    int left = gateway_in_flight (gateway);
    if (left)
        zsys_warning ("gateway: stopping with %d requests still running", left);
    gateway_destroy (&gateway);
    options_destroy (&opts);
    zsys_info ("gateway: stopped");
    return 0;
}
