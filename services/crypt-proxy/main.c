/*  main.c: `splitmesh-crypt-proxy`, one end of an encrypted service bridge.

    Parses options (and their SPLITMESH_CRYPT_* environment fallbacks) and
    runs crypt_proxy_actor (crypt_proxy.c) until SIGINT or SIGTERM; tests
    and bench/crypt run the same actor in-process.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include "crypt_proxy.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh-crypt-proxy --role device|cloud [options]\n"
        "\n"
        "device role (MDP worker on the device broker, CURVE client of the cloud proxy):\n"
        "  splitmesh-crypt-proxy --role device --broker EP --services a[,b] --connect tcp://HOST:7100\n"
        "        --server-key SERVER_PUBLIC_CERT --cert DEVICE_CERT [--link delay=25,jitter=2,bw=100,loss=0]\n"
        "cloud role (CURVE server with a ZAP allowlist, MDP client of the cloud broker):\n"
        "  splitmesh-crypt-proxy --role cloud --bind tcp://*:7100 --cert SERVER_CERT\n"
        "        --allow DIR_OF_DEVICE_PUBLIC_CERTS --broker EP\n"
        "\n"
        "  --role R              device or cloud                    [SPLITMESH_CRYPT_ROLE]\n"
        "  --broker EP           MDP broker endpoint                [SPLITMESH_CRYPT_BROKER]\n"
        "  --cert FILE           own certificate with secret key    [SPLITMESH_CRYPT_CERT]\n"
        "                        (`splitmesh keygen` output: name or name_secret)\n"
        "  --services LIST       device: services to bridge         [SPLITMESH_CRYPT_SERVICES]\n"
        "  --connect EP          device: cloud proxy endpoint       [SPLITMESH_CRYPT_CONNECT]\n"
        "  --server-key FILE     device: cloud proxy's public cert  [SPLITMESH_CRYPT_SERVER_KEY]\n"
        "  --link SPEC           device: emulate the link, both directions:\n"
        "                        delay=MS,rtt=MS,jitter=MS,bw=MBPS,loss=P,seed=N [SPLITMESH_LINK]\n"
        "  --capacity N          device: requests in flight per service (default %d)\n"
        "                                                           [SPLITMESH_CRYPT_CAPACITY]\n"
        "  --bind EP             cloud: CURVE endpoint to bind      [SPLITMESH_CRYPT_BIND]\n"
        "  --allow DIR           cloud: allowed device certificates, re-read on change\n"
        "                                                           [SPLITMESH_CRYPT_ALLOW]\n"
        "  --max-inflight N      cloud: requests in flight (default %d) [SPLITMESH_CRYPT_MAX_INFLIGHT]\n"
        "  --timeout-ms N        answer 504 after N ms without reply (default %d)\n"
        "                                                           [SPLITMESH_CRYPT_TIMEOUT_MS]\n"
        "  --heartbeat-ms N      MDP heartbeat with the broker      [SPLITMESH_CRYPT_HEARTBEAT_MS]\n"
        "  --link-timeout-ms N   CURVE link dead after N ms of silence (ZMTP heartbeats,\n"
        "                        default %d)                       [SPLITMESH_CRYPT_LINK_TIMEOUT_MS]\n"
        "  -v, --verbose         log every command                  [SPLITMESH_CRYPT_VERBOSE=1]\n"
        "  -h, --help\n",
        CRYPT_CAPACITY_DEFAULT, CRYPT_INFLIGHT_DEFAULT, CRYPT_TIMEOUT_DEFAULT,
        CRYPT_LINK_TIMEOUT_DEFAULT);
}

//  Parses a number >= 0 or exits with a usage error.
static int
s_number (const char *name, const char *text)
{
    char *end = NULL;
    long value = strtol (text, &end, 10);
    if (!end || *end || value < 0 || value > 100000000L) {
        fprintf (stderr, "splitmesh-crypt-proxy: --%s needs a number >= 0, got '%s'\n", name, text);
        exit (2);
    }
    return (int) value;
}

static const char *
s_env (const char *name)
{
    const char *value = getenv (name);
    return value && *value? value: NULL;
}

int
main (int argc, char **argv)
{
    static struct option options [] = {
        { "role", required_argument, 0, 'r' },
        { "broker", required_argument, 0, 'b' },
        { "cert", required_argument, 0, 'c' },
        { "services", required_argument, 0, 's' },
        { "connect", required_argument, 0, 'C' },
        { "server-key", required_argument, 0, 'k' },
        { "link", required_argument, 0, 'l' },
        { "capacity", required_argument, 0, 'n' },
        { "bind", required_argument, 0, 'B' },
        { "allow", required_argument, 0, 'a' },
        { "max-inflight", required_argument, 0, 'm' },
        { "timeout-ms", required_argument, 0, 't' },
        { "heartbeat-ms", required_argument, 0, 'H' },
        { "link-timeout-ms", required_argument, 0, 'T' },
        { "verbose", no_argument, 0, 'v' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 }
    };
    crypt_proxy_config_t config = {
        .broker = s_env ("SPLITMESH_CRYPT_BROKER"),
        .cert = s_env ("SPLITMESH_CRYPT_CERT"),
        .services = s_env ("SPLITMESH_CRYPT_SERVICES"),
        .connect = s_env ("SPLITMESH_CRYPT_CONNECT"),
        .server_key = s_env ("SPLITMESH_CRYPT_SERVER_KEY"),
        .link = s_env ("SPLITMESH_LINK"),
        .bind = s_env ("SPLITMESH_CRYPT_BIND"),
        .allow = s_env ("SPLITMESH_CRYPT_ALLOW"),
        .verbose = s_env ("SPLITMESH_CRYPT_VERBOSE") != NULL
    };
    const char *role = s_env ("SPLITMESH_CRYPT_ROLE");
    if (s_env ("SPLITMESH_CRYPT_CAPACITY"))
        config.capacity = s_number ("capacity", s_env ("SPLITMESH_CRYPT_CAPACITY"));
    if (s_env ("SPLITMESH_CRYPT_MAX_INFLIGHT"))
        config.max_inflight = s_number ("max-inflight", s_env ("SPLITMESH_CRYPT_MAX_INFLIGHT"));
    if (s_env ("SPLITMESH_CRYPT_TIMEOUT_MS"))
        config.timeout_ms = s_number ("timeout-ms", s_env ("SPLITMESH_CRYPT_TIMEOUT_MS"));
    if (s_env ("SPLITMESH_CRYPT_LINK_TIMEOUT_MS"))
        config.link_timeout_ms = s_number ("link-timeout-ms", s_env ("SPLITMESH_CRYPT_LINK_TIMEOUT_MS"));
    if (s_env ("SPLITMESH_CRYPT_HEARTBEAT_MS"))
        config.heartbeat_ms = s_number ("heartbeat-ms", s_env ("SPLITMESH_CRYPT_HEARTBEAT_MS"));
    int opt;
    while ((opt = getopt_long (argc, argv, "vh", options, NULL)) != -1) {
        switch (opt) {
            case 'r': role = optarg; break;
            case 'b': config.broker = optarg; break;
            case 'c': config.cert = optarg; break;
            case 's': config.services = optarg; break;
            case 'C': config.connect = optarg; break;
            case 'k': config.server_key = optarg; break;
            case 'l': config.link = optarg; break;
            case 'n': config.capacity = s_number ("capacity", optarg); break;
            case 'B': config.bind = optarg; break;
            case 'a': config.allow = optarg; break;
            case 'm': config.max_inflight = s_number ("max-inflight", optarg); break;
            case 't': config.timeout_ms = s_number ("timeout-ms", optarg); break;
            case 'H': config.heartbeat_ms = s_number ("heartbeat-ms", optarg); break;
            case 'T': config.link_timeout_ms = s_number ("link-timeout-ms", optarg); break;
            case 'v': config.verbose = true; break;
            case 'h': s_usage (stdout); return 0;
            default:  s_usage (stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "splitmesh-crypt-proxy: unexpected argument '%s'\n", argv [optind]);
        return 2;
    }
    if (role && streq (role, "device"))
        config.role = CRYPT_ROLE_DEVICE;
    else
    if (role && streq (role, "cloud"))
        config.role = CRYPT_ROLE_CLOUD;
    char err [512];
    if (crypt_proxy_config_check (&config, err, sizeof err)) {
        fprintf (stderr, "splitmesh-crypt-proxy: %s\n(see --help)\n", err);
        return 2;
    }
    zactor_t *proxy = crypt_proxy_new (&config);
    if (!proxy)
        return 1;       //  crypt_proxy_new logged why
    printf ("splitmesh-crypt-proxy: ready (%s)\n", role);
    fflush (stdout);
    //  CZMQ's signal handler sets zsys_interrupted on SIGINT/SIGTERM.
    while (!zsys_interrupted) {
        zmq_pollitem_t item = { zsock_resolve (zactor_sock (proxy)), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 200) == -1)
            break;
    }
    zactor_destroy (&proxy);
    return 0;
}
