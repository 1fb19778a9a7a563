/*  main.c: `splitmesh-crypt-proxy`, one end of an encrypted service bridge.

    Parses options (core/options.c; SPLITMESH_CRYPT_* environment fallbacks) and
    runs crypt_proxy_actor (crypt_proxy.c) until SIGINT or SIGTERM; tests
    and bench/crypt run the same actor in-process.
*/
#include <stdio.h>
#include <stdlib.h>
#include "crypt_proxy.h"
#include "options.h"

#define S_MAX 100000000L

static const options_spec_t s_options [] = {
    { "role", 0, "SPLITMESH_CRYPT_ROLE", OPTIONS_ENUM, .choices = "device|cloud",
      .arg = "R", .flags = OPTIONS_REQUIRED, .help = "device or cloud" },
    { "broker", 0, "SPLITMESH_CRYPT_BROKER", OPTIONS_STRING, .arg = "EP",
      .help = "MDP broker endpoint" },
    { "cert", 0, "SPLITMESH_CRYPT_CERT", OPTIONS_STRING, .arg = "FILE",
      .help = "own certificate with secret key\n(`splitmesh keygen` output: name or name_secret)" },
    { "services", 0, "SPLITMESH_CRYPT_SERVICES", OPTIONS_STRING, .arg = "LIST",
      .help = "device: services to bridge (a[,b])" },
    { "connect", 0, "SPLITMESH_CRYPT_CONNECT", OPTIONS_STRING, .arg = "EP",
      .help = "device: cloud proxy endpoint" },
    { "server-key", 0, "SPLITMESH_CRYPT_SERVER_KEY", OPTIONS_STRING, .arg = "FILE",
      .help = "device: cloud proxy's public cert" },
    { "link", 0, "SPLITMESH_LINK", OPTIONS_STRING, .arg = "SPEC",
      .help = "device: emulate the link, both directions:\ndelay=MS,rtt=MS,jitter=MS,bw=MBPS,loss=P,seed=N" },
    { "capacity", 0, "SPLITMESH_CRYPT_CAPACITY", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "device: requests in flight per service (0: 64)" },
    { "bind", 0, "SPLITMESH_CRYPT_BIND", OPTIONS_STRING, .arg = "EP",
      .help = "cloud: CURVE endpoint to bind" },
    { "allow", 0, "SPLITMESH_CRYPT_ALLOW", OPTIONS_STRING, .arg = "DIR",
      .help = "cloud: allowed device certificates, re-read on change" },
    { "max-inflight", 0, "SPLITMESH_CRYPT_MAX_INFLIGHT", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "cloud: requests in flight (0: 256)" },
    { "timeout-ms", 0, "SPLITMESH_CRYPT_TIMEOUT_MS", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "answer 504 after N ms without reply (0: 30000)" },
    { "heartbeat-ms", 0, "SPLITMESH_CRYPT_HEARTBEAT_MS", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "MDP heartbeat with the broker (0: the MDP default)" },
    { "link-timeout-ms", 0, "SPLITMESH_CRYPT_LINK_TIMEOUT_MS", OPTIONS_INT, .min = 0, .max = S_MAX,
      .help = "CURVE link dead after N ms of silence (ZMTP heartbeats; 0: 3000)" },
    { "telemetry", 0, "SPLITMESH_TELEMETRY", OPTIONS_STRING, .arg = "EP",
      .help = "publish metrics to this telemetry XSUB endpoint" },
    { "instance", 0, "SPLITMESH_INSTANCE", OPTIONS_STRING, .arg = "NAME",
      .help = "instance name in metrics (default host:pid)" },
    { "verbose", 'v', "SPLITMESH_CRYPT_VERBOSE", OPTIONS_BOOL, .help = "log every command" },
};

int
main (int argc, char **argv)
{
    //  One MDP client (a DEALER and its monitor) per request in flight:
    //  ZeroMQ's default of 1024 sockets a process is too few under load.
    zsys_set_max_sockets (0);
    int status;
    options_t *opts = options_new_from_args ("splitmesh-crypt-proxy", "--role device|cloud [options]",
        "device role (MDP worker on the device broker, CURVE client of the cloud proxy):\n"
        "  splitmesh-crypt-proxy --role device --broker EP --services a[,b] --connect tcp://HOST:7100\n"
        "        --server-key SERVER_PUBLIC_CERT --cert DEVICE_CERT [--link delay=25,jitter=2,bw=100,loss=0]\n"
        "cloud role (CURVE server with a ZAP allowlist, MDP client of the cloud broker):\n"
        "  splitmesh-crypt-proxy --role cloud --bind tcp://*:7100 --cert SERVER_CERT\n"
        "        --allow DIR_OF_DEVICE_PUBLIC_CERTS --broker EP",
        s_options, OPTIONS_COUNT (s_options),
        argc, argv, &status);
    if (!opts)
        return status;
    const char *role = options_string (opts, "role");
    crypt_proxy_config_t config = {
        .role = streq (role, "device")? CRYPT_ROLE_DEVICE: CRYPT_ROLE_CLOUD,
        .broker = options_string (opts, "broker"),
        .cert = options_string (opts, "cert"),
        .services = options_string (opts, "services"),
        .connect = options_string (opts, "connect"),
        .server_key = options_string (opts, "server-key"),
        .link = options_string (opts, "link"),
        .capacity = options_int (opts, "capacity"),
        .bind = options_string (opts, "bind"),
        .allow = options_string (opts, "allow"),
        .max_inflight = options_int (opts, "max-inflight"),
        .timeout_ms = options_int (opts, "timeout-ms"),
        .heartbeat_ms = options_int (opts, "heartbeat-ms"),
        .link_timeout_ms = options_int (opts, "link-timeout-ms"),
        .telemetry = options_string (opts, "telemetry"),
        .instance = options_string (opts, "instance"),
        .verbose = options_bool (opts, "verbose")
    };
    char err [512];
    if (crypt_proxy_config_check (&config, err, sizeof err)) {
        fprintf (stderr, "splitmesh-crypt-proxy: %s\n(see --help)\n", err);
        options_destroy (&opts);
        return 2;
    }
    zactor_t *proxy = crypt_proxy_new (&config);
    if (!proxy) {
        options_destroy (&opts);
        return 1;       //  crypt_proxy_new logged why
    }
    printf ("splitmesh-crypt-proxy: ready (%s)\n", role);
    fflush (stdout);
    //  CZMQ's signal handler sets zsys_interrupted on SIGINT/SIGTERM.
    while (!zsys_interrupted) {
        zmq_pollitem_t item = { zsock_resolve (zactor_sock (proxy)), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 200) == -1)
            break;
    }
    zactor_destroy (&proxy);
    options_destroy (&opts);
    return 0;
}
