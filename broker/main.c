/*  main.c: `splitmesh-broker`, the MDP/0.2 broker and telemetry proxy.

    Parses options (core/options.c: flags, SPLITMESH_BROKER_* variables)
    and runs broker_actor (broker.c) until SIGINT or SIGTERM;
    tests run the same actor in-process over inproc://.
*/
#include <stdio.h>
#include <stdlib.h>
#include "broker.h"
#include "options.h"

#define S_MAX 1000000000L

static const options_spec_t s_options [] = {
    { "endpoint", 'e', "SPLITMESH_BROKER_ENDPOINT", OPTIONS_STRING, .arg = "EP",
      .def = "tcp://*:5555", .flags = OPTIONS_REPEAT,
      .help = "MDP ROUTER endpoint to bind" },
    { "telemetry-xsub", 0, "SPLITMESH_BROKER_TELEMETRY_XSUB", OPTIONS_STRING, .arg = "EP",
      .help = "telemetry proxy: publishers connect here" },
    { "telemetry-xpub", 0, "SPLITMESH_BROKER_TELEMETRY_XPUB", OPTIONS_STRING, .arg = "EP",
      .help = "telemetry proxy: subscribers connect here" },
    { "heartbeat-ms", 0, "SPLITMESH_BROKER_HEARTBEAT_MS", OPTIONS_INT, .def = "2500",
      .min = 1, .max = S_MAX, .help = "heartbeat interval" },
    { "liveness", 0, "SPLITMESH_BROKER_LIVENESS", OPTIONS_INT, .def = "3",
      .min = 1, .max = S_MAX, .help = "missed heartbeats before a worker is dead (3..5)" },
    { "expiry-ms", 0, "SPLITMESH_BROKER_EXPIRY_MS", OPTIONS_INT, .def = "5000",
      .min = 1, .max = S_MAX, .help = "queued request expires after N ms" },
    { "max-queue-service", 0, "SPLITMESH_BROKER_MAX_QUEUE_SERVICE", OPTIONS_INT, .def = "1000",
      .min = 1, .max = S_MAX, .help = "requests queued per service" },
    { "max-queue-total", 0, "SPLITMESH_BROKER_MAX_QUEUE_TOTAL", OPTIONS_INT, .def = "10000",
      .min = 1, .max = S_MAX, .help = "requests queued in all" },
    { "max-sessions", 0, "SPLITMESH_BROKER_MAX_SESSIONS", OPTIONS_INT, .def = "65536",
      .min = 1, .max = S_MAX, .help = "session bindings kept" },
    { "max-msg-bytes", 0, "SPLITMESH_BROKER_MAX_MSG_BYTES", OPTIONS_INT, .def = "536870912",
      .min = 1, .max = S_MAX, .help = "bigger messages drop the peer (512 MiB)" },
    { "verbose", 'v', "SPLITMESH_BROKER_VERBOSE", OPTIONS_BOOL, .help = "log every command" },
};

int
main (int argc, char **argv)
{
    int status;
    options_t *opts = options_new_from_args ("splitmesh-broker", "[options]",
        "The MDP/0.2 broker (session-affine routing) and telemetry XSUB/XPUB proxy.",
        s_options, OPTIONS_COUNT (s_options),
        argc, argv, &status);
    if (!opts)
        return status;
    broker_config_t config = {
        .telemetry_xsub = options_string (opts, "telemetry-xsub"),
        .telemetry_xpub = options_string (opts, "telemetry-xpub"),
        .heartbeat_ms = options_int (opts, "heartbeat-ms"),
        .liveness = options_int (opts, "liveness"),
        .request_expiry_ms = options_int (opts, "expiry-ms"),
        .max_queue_service = options_int (opts, "max-queue-service"),
        .max_queue_total = options_int (opts, "max-queue-total"),
        .max_sessions = options_int (opts, "max-sessions"),
        .max_msg_bytes = options_int (opts, "max-msg-bytes"),
        .verbose = options_bool (opts, "verbose")
    };
    if ((config.telemetry_xsub == NULL) != (config.telemetry_xpub == NULL)) {
        fprintf (stderr, "splitmesh-broker: --telemetry-xsub and --telemetry-xpub go together\n");
        options_destroy (&opts);
        return 2;
    }
    config.endpoints = options_string (opts, "endpoint");

    zactor_t *broker = zactor_new (broker_actor, &config);
    char *bound = broker? broker_endpoint (broker): NULL;
    int rc = 0;
    if (!bound || !*bound) {
        fprintf (stderr, "splitmesh-broker: cannot bind %s\n", config.endpoints);
        rc = 1;
    }
    else {
        printf ("splitmesh-broker: ready on %s\n", config.endpoints);
        fflush (stdout);
        //  CZMQ's signal handler sets zsys_interrupted on SIGINT/SIGTERM.
        while (!zsys_interrupted) {
            zmq_pollitem_t item = { zsock_resolve (zactor_sock (broker)), 0, ZMQ_POLLIN, 0 };
            if (zmq_poll (&item, 1, 200) == -1)
                break;
        }
    }
    zstr_free (&bound);
    zactor_destroy (&broker);
    options_destroy (&opts);
    return rc;
}
