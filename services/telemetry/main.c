/*  main.c: `splitmesh-telemetry`, the metrics aggregator and dashboard.

    Parses options and runs telemetry_actor (telemetry.c) until SIGINT or
    SIGTERM; tests can run the same actor in-process.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include "telemetry.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh-telemetry -s ENDPOINT [options]\n"
        "  -s, --subscribe EP       the broker's telemetry XPUB endpoint (required)\n"
        "  -p, --http-port N        HTTP port for /metrics, /health, / (default 9464; 0: any)\n"
        "  -a, --http-address IP    IPv4 address to listen on (default 127.0.0.1)\n"
        "      --down-after-ms N    a process silent this long is down (default 3000)\n"
        "      --tick-ms N          dashboard point interval (default 1000)\n"
        "  -v, --verbose            log every rejected event\n"
        "  -h, --help\n");
}

static int
s_number (const char *name, const char *text, long min, long max)
{
    char *end = NULL;
    long value = strtol (text, &end, 10);
    if (!end || *end || value < min || value > max) {
        fprintf (stderr, "splitmesh-telemetry: --%s needs a number in %ld..%ld, got '%s'\n",
                 name, min, max, text);
        exit (2);
    }
    return (int) value;
}

int
main (int argc, char **argv)
{
    static struct option options [] = {
        { "subscribe", required_argument, 0, 's' },
        { "http-port", required_argument, 0, 'p' },
        { "http-address", required_argument, 0, 'a' },
        { "down-after-ms", required_argument, 0, 'D' },
        { "tick-ms", required_argument, 0, 'T' },
        { "verbose", no_argument, 0, 'v' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 }
    };
    telemetry_config_t config = { .http_port = 9464 };
    int opt;
    while ((opt = getopt_long (argc, argv, "s:p:a:vh", options, NULL)) != -1) {
        switch (opt) {
            case 's': config.subscribe = optarg; break;
            case 'p': config.http_port = s_number ("http-port", optarg, 0, 65535); break;
            case 'a': config.http_address = optarg; break;
            case 'D': config.down_after_ms = s_number ("down-after-ms", optarg, 1, 86400000); break;
            case 'T': config.tick_ms = s_number ("tick-ms", optarg, 10, 3600000); break;
            case 'v': config.verbose = true; break;
            case 'h': s_usage (stdout); return 0;
            default:  s_usage (stderr); return 2;
        }
    }
    if (!config.subscribe) {
        fprintf (stderr, "splitmesh-telemetry: --subscribe is required\n");
        s_usage (stderr);
        return 2;
    }
    zactor_t *actor = telemetry_new (&config);
    if (!actor) {
        fprintf (stderr, "splitmesh-telemetry: cannot start (see the log above)\n");
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
    return 0;
}
