/*  main.c: `splitmesh-telemetry`, the metrics aggregator and dashboard.

    Parses options (core/options.c: flags, SPLITMESH_TELEMETRY_* variables)
    and runs telemetry_actor (telemetry.c) until SIGINT or
    SIGTERM; tests can run the same actor in-process.
*/
#include <stdio.h>
#include <stdlib.h>
#include "telemetry.h"
#include "options.h"

static const options_spec_t s_options [] = {
    { "subscribe", 's', "SPLITMESH_TELEMETRY_SUBSCRIBE", OPTIONS_STRING, .arg = "EP",
      .flags = OPTIONS_REQUIRED, .help = "the broker's telemetry XPUB endpoint" },
    { "http-port", 'p', "SPLITMESH_TELEMETRY_HTTP_PORT", OPTIONS_INT, .def = "9464",
      .min = 0, .max = 65535, .help = "HTTP port for /metrics, /health, / (0: any)" },
    { "http-address", 'a', "SPLITMESH_TELEMETRY_HTTP_ADDRESS", OPTIONS_STRING, .arg = "IP",
      .def = "127.0.0.1", .help = "IPv4 address to listen on" },
    { "down-after-ms", 0, "SPLITMESH_TELEMETRY_DOWN_AFTER_MS", OPTIONS_INT, .def = "3000",
      .min = 1, .max = 86400000, .help = "a process silent this long is down" },
    { "tick-ms", 0, "SPLITMESH_TELEMETRY_TICK_MS", OPTIONS_INT, .def = "1000",
      .min = 10, .max = 3600000, .help = "dashboard point interval" },
    { "verbose", 'v', "SPLITMESH_TELEMETRY_VERBOSE", OPTIONS_BOOL,
      .help = "log every rejected event" },
};

int
main (int argc, char **argv)
{
    int status;
    options_t *opts = options_new_from_args ("splitmesh-telemetry", "-s ENDPOINT [options]",
        "Subscribes to the telemetry bus; serves Prometheus /metrics, /health and a dashboard.",
        s_options, OPTIONS_COUNT (s_options),
        argc, argv, &status);
    if (!opts)
        return status;
    telemetry_config_t config = {
        .subscribe = options_string (opts, "subscribe"),
        .http_port = options_int (opts, "http-port"),
        .http_address = options_string (opts, "http-address"),
        .down_after_ms = options_int (opts, "down-after-ms"),
        .tick_ms = options_int (opts, "tick-ms"),
        .verbose = options_bool (opts, "verbose")
    };
    zactor_t *actor = telemetry_new (&config);
    if (!actor) {
        fprintf (stderr, "splitmesh-telemetry: cannot start (see the log above)\n");
        options_destroy (&opts);
        return 1;
    }
    printf ("splitmesh-telemetry: http://%s:%d/ subscribed to %s\n",
            config.http_address? config.http_address: "127.0.0.1",
            telemetry_port (actor), config.subscribe);
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
