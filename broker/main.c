/*  main.c: `splitmesh-broker`, the MDP/0.2 broker and telemetry proxy.

    Parses options and runs broker_actor (broker.c) until SIGINT or SIGTERM;
    tests run the same actor in-process over inproc://.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include "broker.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh-broker [options]\n"
        "  -e, --endpoint EP        MDP ROUTER endpoint; repeat or comma-separate\n"
        "                           (default tcp://*:5555)\n"
        "      --telemetry-xsub EP  telemetry proxy: publishers connect here\n"
        "      --telemetry-xpub EP  telemetry proxy: subscribers connect here\n"
        "      --heartbeat-ms N     heartbeat interval (default 2500)\n"
        "      --liveness N         missed heartbeats before a worker is dead (3..5, default 3)\n"
        "      --expiry-ms N        queued request expires after N ms (default 5000)\n"
        "      --max-queue-service N  requests queued per service (default 1000)\n"
        "      --max-queue-total N  requests queued in all (default 10000)\n"
        "      --max-sessions N     session bindings kept (default 65536)\n"
        "      --max-msg-bytes N    bigger messages drop the peer (default 512 MiB)\n"
        "  -v, --verbose            log every command\n"
        "  -h, --help\n");
}

//  Parses a positive int option or exits with a usage error.
static int
s_positive (const char *name, const char *text)
{
    char *end = NULL;
    long value = strtol (text, &end, 10);
    if (!end || *end || value <= 0 || value > 1000000000L) {
        fprintf (stderr, "splitmesh-broker: --%s needs a positive number, got '%s'\n", name, text);
        exit (2);
    }
    return (int) value;
}

int
main (int argc, char **argv)
{
    static struct option options [] = {
        { "endpoint", required_argument, 0, 'e' },
        { "telemetry-xsub", required_argument, 0, 'X' },
        { "telemetry-xpub", required_argument, 0, 'P' },
        { "heartbeat-ms", required_argument, 0, 'H' },
        { "liveness", required_argument, 0, 'L' },
        { "expiry-ms", required_argument, 0, 'E' },
        { "max-queue-service", required_argument, 0, 'q' },
        { "max-queue-total", required_argument, 0, 'Q' },
        { "max-sessions", required_argument, 0, 'S' },
        { "max-msg-bytes", required_argument, 0, 'M' },
        { "verbose", no_argument, 0, 'v' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 }
    };
    broker_config_t config = { 0 };
    char endpoints [4096] = "";
    int opt;
    while ((opt = getopt_long (argc, argv, "e:vh", options, NULL)) != -1) {
        switch (opt) {
            case 'e':
                if (strlen (endpoints) + strlen (optarg) + 2 > sizeof endpoints) {
                    fprintf (stderr, "splitmesh-broker: too many endpoints\n");
                    return 2;
                }
                if (*endpoints)
                    strcat (endpoints, ",");
                strcat (endpoints, optarg);
                break;
            case 'X': config.telemetry_xsub = optarg; break;
            case 'P': config.telemetry_xpub = optarg; break;
            case 'H': config.heartbeat_ms = s_positive ("heartbeat-ms", optarg); break;
            case 'L': config.liveness = s_positive ("liveness", optarg); break;
            case 'E': config.request_expiry_ms = s_positive ("expiry-ms", optarg); break;
            case 'q': config.max_queue_service = s_positive ("max-queue-service", optarg); break;
            case 'Q': config.max_queue_total = s_positive ("max-queue-total", optarg); break;
            case 'S': config.max_sessions = s_positive ("max-sessions", optarg); break;
            case 'M': config.max_msg_bytes = s_positive ("max-msg-bytes", optarg); break;
            case 'v': config.verbose = true; break;
            case 'h': s_usage (stdout); return 0;
            default:  s_usage (stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "splitmesh-broker: unexpected argument '%s'\n", argv [optind]);
        s_usage (stderr);
        return 2;
    }
    if ((config.telemetry_xsub == NULL) != (config.telemetry_xpub == NULL)) {
        fprintf (stderr, "splitmesh-broker: --telemetry-xsub and --telemetry-xpub go together\n");
        return 2;
    }
    config.endpoints = *endpoints? endpoints: "tcp://*:5555";

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
    return rc;
}
