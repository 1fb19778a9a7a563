/*  mdp_echo_worker.c: `splitmesh-test-echo-worker`, a real worker process.

    Integration tests start two or more of these behind a real broker and
    kill them (-9 included) to test balancing, failover and session
    affinity. It runs the same echo actor tests use in-process
    (tests/support/sm_mdp.c) until SIGTERM or SIGINT.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include "sm_mdp.h"

static int
s_number (const char *name, const char *text)
{
    char *end = NULL;
    long value = strtol (text, &end, 10);
    if (!end || *end || value < 0 || value > 100000000L) {
        fprintf (stderr, "splitmesh-test-echo-worker: --%s needs a number >= 0, got '%s'\n",
                 name, text);
        exit (2);
    }
    return (int) value;
}

int
main (int argc, char **argv)
{
    static struct option options [] = {
        { "endpoint", required_argument, 0, 'e' },
        { "service", required_argument, 0, 's' },
        { "name", required_argument, 0, 'n' },
        { "delay-ms", required_argument, 0, 'd' },
        { "partials", required_argument, 0, 'p' },
        { "capacity", required_argument, 0, 'c' },
        { "heartbeat-ms", required_argument, 0, 'H' },
        { "liveness", required_argument, 0, 'L' },
        { "reconnect-ms", required_argument, 0, 'r' },
        { "reconnect-max-ms", required_argument, 0, 'R' },
        { "verbose", no_argument, 0, 'v' },
        { 0, 0, 0, 0 }
    };
    sm_echo_config_t config = { .endpoint = NULL, .service = "echo", .name = "echo" };
    int opt;
    while ((opt = getopt_long (argc, argv, "e:s:n:d:p:c:v", options, NULL)) != -1) {
        switch (opt) {
            case 'e': config.endpoint = optarg; break;
            case 's': config.service = optarg; break;
            case 'n': config.name = optarg; break;
            case 'd': config.delay_ms = s_number ("delay-ms", optarg); break;
            case 'p': config.partials = s_number ("partials", optarg); break;
            case 'c': config.capacity = s_number ("capacity", optarg); break;
            case 'H': config.heartbeat_ms = s_number ("heartbeat-ms", optarg); break;
            case 'L': config.liveness = s_number ("liveness", optarg); break;
            case 'r': config.reconnect_ms = s_number ("reconnect-ms", optarg); break;
            case 'R': config.reconnect_max_ms = s_number ("reconnect-max-ms", optarg); break;
            case 'v': config.verbose = true; break;
            default:
                fprintf (stderr, "usage: splitmesh-test-echo-worker -e ENDPOINT [-s SERVICE]"
                         " [-n NAME] [--delay-ms N] [--partials N] [--capacity N]"
                         " [--heartbeat-ms N] [--liveness N] [--reconnect-ms N]"
                         " [--reconnect-max-ms N] [-v]\n");
                return 2;
        }
    }
    if (!config.endpoint) {
        fprintf (stderr, "splitmesh-test-echo-worker: --endpoint is required\n");
        return 2;
    }
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
    return 0;
}
