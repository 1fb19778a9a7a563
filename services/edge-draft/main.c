/*  main.c: `splitmesh-edge-draft`, the `generate` service of the device.

    Parses options (each with the environment variable docs/pipeline.md
    names) and runs edge_draft_actor (edge_draft.c) until SIGINT or
    SIGTERM; tests can run the same actor in-process.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include "edge_draft.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh-edge-draft --broker EP --model FILE [options]\n"
        "\n"
        "  --broker EP          device broker                         [SPLITMESH_BROKER]\n"
        "  --cloud EP           cloud broker (default: --broker)       [SPLITMESH_CLOUD]\n"
        "  --link SPEC          emulate the edge-cloud link: rtt=MS,delay=MS,jitter=MS,\n"
        "                       bw=MBPS,loss=P,seed=N                  [SPLITMESH_LINK]\n"
        "  --telemetry EP       broker XSUB for metrics                [SPLITMESH_TELEMETRY]\n"
        "  --model FILE         target model (vocabulary, name)        [SPLITMESH_MODEL]\n"
        "  --draft-model FILE   draft model (default: --model)         [SPLITMESH_DRAFT_MODEL]\n"
        "  --draft-format F     f32, w8 or w4 (default w4)             [SPLITMESH_DRAFT_FORMAT]\n"
        "  --format F           same as --draft-format                 [SPLITMESH_FORMAT]\n"
        "  --drafter D          model (default) or ngram (no draft model loaded)\n"
        "                                                              [SPLITMESH_DRAFTER]\n"
        "  --draft-k N          most drafts per round; a request's draft_k starts there\n"
        "                       and adapts within [1, N] (default %d)  [SPLITMESH_DRAFT_K]\n"
        "  --fixed-k            keep the request's draft_k every round\n"
        "  --no-lookahead       greedy: do not draft the next round while a verify travels\n"
        "  --no-pipeline        greedy: draft ahead, but send no verify before the\n"
        "                       answer to the last one                [SPLITMESH_NO_PIPELINE=1]\n"
        "  --draft-min-p P      end a round after a draft the draft model gives p < P\n"
        "                       (default %.2f; 0: always draft k)\n"
        "  --threads N          draft model threads (default 1)        [SPLITMESH_THREADS]\n"
        "  --workers N          concurrent generations (default %d)    [SPLITMESH_WORKERS]\n"
        "  --ctx N              context limit (default min(model's, %d))\n"
        "  --timeout-ms N       per attempt of a service call (default %d) [SPLITMESH_TIMEOUT_MS]\n"
        "  --instance NAME      name in logs and metrics               [SPLITMESH_INSTANCE]\n"
        "  --heartbeat-ms N     MDP heartbeat\n"
        "  -v, --verbose        log every round\n"
        "  -h, --help\n",
        EDGE_DRAFT_KMAX_DEFAULT, EDGE_DRAFT_MIN_P_DEFAULT, EDGE_DRAFT_WORKERS_DEFAULT, EDGE_DRAFT_CTX_DEFAULT,
        EDGE_DRAFT_TIMEOUT_DEFAULT);
}

static int
s_number (const char *name, const char *text)
{
    char *end = NULL;
    long value = strtol (text, &end, 10);
    if (!end || *end || value < 0 || value > 100000000L) {
        fprintf (stderr, "splitmesh-edge-draft: --%s needs a number >= 0, got '%s'\n", name, text);
        exit (2);
    }
    return (int) value;
}

static const char *
s_env (const char *name)
{
    const char *value = getenv (name);
    return value && *value ? value : NULL;
}

int
main (int argc, char **argv)
{
    //  Every generation worker holds a worker socket and two client sockets
    //  that it replaces after each call without answer; with many workers
    //  (--workers 64) under load, ZeroMQ's default of 1024 sockets per
    //  process ran out and zsock_new asserted (bench/soak found it). Raise
    //  the limit to the system's before the first socket exists.
    zsys_set_max_sockets (0);
    static struct option options [] = {
        { "broker", required_argument, 0, 'b' },
        { "cloud", required_argument, 0, 'c' },
        { "link", required_argument, 0, 'l' },
        { "telemetry", required_argument, 0, 'T' },
        { "model", required_argument, 0, 'm' },
        { "draft-model", required_argument, 0, 'd' },
        { "draft-format", required_argument, 0, 'f' },
        { "format", required_argument, 0, 'F' },
        { "drafter", required_argument, 0, 'D' },
        { "draft-k", required_argument, 0, 'k' },
        { "fixed-k", no_argument, 0, 'K' },
        { "no-lookahead", no_argument, 0, 'A' },
        { "no-pipeline", no_argument, 0, 'N' },
        { "draft-min-p", required_argument, 0, 'P' },
        { "threads", required_argument, 0, 't' },
        { "workers", required_argument, 0, 'w' },
        { "ctx", required_argument, 0, 'C' },
        { "timeout-ms", required_argument, 0, 'o' },
        { "instance", required_argument, 0, 'i' },
        { "heartbeat-ms", required_argument, 0, 'H' },
        { "verbose", no_argument, 0, 'v' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 }
    };
    edge_draft_args_t a = {
        .broker = s_env ("SPLITMESH_BROKER"),
        .cloud = s_env ("SPLITMESH_CLOUD"),
        .link = s_env ("SPLITMESH_LINK"),
        .telemetry = s_env ("SPLITMESH_TELEMETRY"),
        .model = s_env ("SPLITMESH_MODEL"),
        .draft_model = s_env ("SPLITMESH_DRAFT_MODEL"),
        .draft_format = s_env ("SPLITMESH_DRAFT_FORMAT") ? s_env ("SPLITMESH_DRAFT_FORMAT")
                                                         : s_env ("SPLITMESH_FORMAT"),
        .drafter = s_env ("SPLITMESH_DRAFTER"),
        .instance = s_env ("SPLITMESH_INSTANCE"),
        .draft_min_p = EDGE_DRAFT_MIN_P_DEFAULT
    };
    if (s_env ("SPLITMESH_NO_PIPELINE") && streq (s_env ("SPLITMESH_NO_PIPELINE"), "1"))
        a.no_pipeline = true;
    if (s_env ("SPLITMESH_DRAFT_K"))
        a.draft_k_max = s_number ("draft-k", s_env ("SPLITMESH_DRAFT_K"));
    if (s_env ("SPLITMESH_THREADS"))
        a.threads = s_number ("threads", s_env ("SPLITMESH_THREADS"));
    if (s_env ("SPLITMESH_WORKERS"))
        a.workers = s_number ("workers", s_env ("SPLITMESH_WORKERS"));
    if (s_env ("SPLITMESH_TIMEOUT_MS"))
        a.timeout_ms = s_number ("timeout-ms", s_env ("SPLITMESH_TIMEOUT_MS"));
    int opt;
    while ((opt = getopt_long (argc, argv, "vh", options, NULL)) != -1) {
        switch (opt) {
            case 'b': a.broker = optarg; break;
            case 'c': a.cloud = optarg; break;
            case 'l': a.link = optarg; break;
            case 'T': a.telemetry = optarg; break;
            case 'm': a.model = optarg; break;
            case 'd': a.draft_model = optarg; break;
            case 'f': a.draft_format = optarg; break;
            case 'F': a.draft_format = optarg; break;
            case 'D': a.drafter = optarg; break;
            case 'k': a.draft_k_max = s_number ("draft-k", optarg); break;
            case 'K': a.fixed_k = true; break;
            case 'A': a.no_lookahead = true; break;
            case 'N': a.no_pipeline = true; break;
            case 'P': {
                char *end = NULL;
                a.draft_min_p = strtod (optarg, &end);
                if (!end || *end) {
                    fprintf (stderr, "splitmesh-edge-draft: --draft-min-p needs a number in [0, 1], got '%s'\n", optarg);
                    return 2;
                }
                break;
            }
            case 't': a.threads = s_number ("threads", optarg); break;
            case 'w': a.workers = s_number ("workers", optarg); break;
            case 'C': a.ctx = s_number ("ctx", optarg); break;
            case 'o': a.timeout_ms = s_number ("timeout-ms", optarg); break;
            case 'i': a.instance = optarg; break;
            case 'H': a.heartbeat_ms = s_number ("heartbeat-ms", optarg); break;
            case 'v': a.verbose = true; break;
            case 'h': s_usage (stdout); return 0;
            default:  s_usage (stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "splitmesh-edge-draft: unexpected argument '%s'\n", argv [optind]);
        return 2;
    }
    char err [512];
    zactor_t *actor = edge_draft_new (&a, err, sizeof err);
    if (!actor) {
        fprintf (stderr, "splitmesh-edge-draft: %s\n", err);
        return 1;
    }
    printf ("splitmesh-edge-draft: ready\n");
    fflush (stdout);
    while (!zsys_interrupted) {
        zmq_pollitem_t item = { zsock_resolve (zactor_sock (actor)), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 200) == -1)
            break;
    }
    zactor_destroy (&actor);
    return 0;
}
