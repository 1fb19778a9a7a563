/*  cmd_health.c: `splitmesh health`, the probe for container health checks.

    Docker HEALTHCHECK and Kubernetes exec probes need a yes/no answer from
    inside the container without a shell, curl or Python in the image. Two
    checks, exit 0 for healthy, 1 for not, 2 for a usage error:
    - MDP (broker and every worker service): asks the broker's MMI
      (`mmi.service`) about a service name. With --service, healthy means
      the broker answered 200: a worker of that service is registered.
      Without it, any MMI answer means the broker is alive.
    - HTTP (telemetry, gateway): GET a plain-HTTP URL on a numeric IPv4
      address or host name; healthy means a 2xx status.
*/
#include <czmq.h>
#include <netdb.h>
#include <sys/socket.h>
#include "cli.h"
#include "mdp_client.h"
#include "options.h"

static const options_spec_t s_options [] = {
    { "broker", 'b', "SPLITMESH_HEALTH_BROKER", OPTIONS_STRING, .arg = "EP",
      .help = "MDP broker to ask (mmi.service)" },
    { "service", 's', "SPLITMESH_HEALTH_SERVICE", OPTIONS_STRING, .arg = "NAME",
      .help = "healthy only if a worker of NAME is registered" },
    { "http", 0, "SPLITMESH_HEALTH_HTTP", OPTIONS_STRING, .arg = "URL",
      .help = "GET http://HOST:PORT/PATH, healthy on 2xx" },
    { "timeout-ms", 't', "SPLITMESH_HEALTH_TIMEOUT_MS", OPTIONS_INT, .def = "2000",
      .min = 10, .max = 600000, .help = "give up after N ms" },
    { "quiet", 'q', NULL, OPTIONS_BOOL, .help = "print nothing" },
};

static int
s_check_mdp (const char *broker, const char *service, int timeout_ms, bool quiet)
{
    mdp_client_t *client = mdp_client_new (broker);
    if (!client) {
        if (!quiet)
            fprintf (stderr, "health: bad broker endpoint '%s'\n", broker);
        return 1;
    }
    mdp_client_set_timeout (client, timeout_ms);
    mdp_client_set_retries (client, 0);
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, service? service: "mmi.service");
    zmsg_t *reply = mdp_client_request (client, "mmi.service", &body);
    char *code = reply? zmsg_popstr (reply): NULL;
    int rc = 1;
    if (!code) {
        if (!quiet)
            printf ("unhealthy: no answer from %s in %d ms\n", broker, timeout_ms);
    }
    else
    if (service && !streq (code, "200")) {
        if (!quiet)
            printf ("unhealthy: %s answers %s for service '%s'\n", broker, code, service);
    }
    else {
        if (!quiet)
            printf ("healthy: %s%s%s (%s)\n", broker, service? " has ": "",
                    service? service: "", code);
        rc = 0;
    }
    zstr_free (&code);
    zmsg_destroy (&reply);
    mdp_client_destroy (&client);
    return rc;
}

static int
s_check_http (const char *url, int timeout_ms, bool quiet)
{
    char host [256], port [16] = "80", path [512] = "/";
    const char *p = strncmp (url, "http://", 7) == 0? url + 7: NULL;
    size_t hl = p? strcspn (p, ":/"): 0;
    if (!p || hl == 0 || hl >= sizeof host) {
        fprintf (stderr, "health: --http needs http://HOST[:PORT][/PATH], got '%s'\n", url);
        return 2;
    }
    memcpy (host, p, hl);
    host [hl] = 0;
    p += hl;
    if (*p == ':') {
        size_t pl = strcspn (++p, "/");
        if (pl == 0 || pl >= sizeof port) {
            fprintf (stderr, "health: bad port in '%s'\n", url);
            return 2;
        }
        memcpy (port, p, pl);
        port [pl] = 0;
        p += pl;
    }
    if (*p)
        snprintf (path, sizeof path, "%s", p);

    int rc = 1;
    int fd = -1;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
    if (getaddrinfo (host, port, &hints, &ai) || !ai) {
        if (!quiet)
            printf ("unhealthy: cannot resolve %s\n", host);
        goto done;
    }
    fd = socket (ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    if (fd < 0
    ||  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)
    ||  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv)
    ||  connect (fd, ai->ai_addr, ai->ai_addrlen)) {
        if (!quiet)
            printf ("unhealthy: cannot connect to %s:%s\n", host, port);
        goto done;
    }
    char request [1024];
    int len = snprintf (request, sizeof request,
                        "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
    char status [64] = "";
    if (send (fd, request, (size_t) len, 0) != len
    ||  recv (fd, status, sizeof status - 1, 0) < 12) {
        if (!quiet)
            printf ("unhealthy: no HTTP answer from %s\n", url);
        goto done;
    }
    //  "HTTP/1.x NNN ..."
    int code = strncmp (status, "HTTP/1.", 7) == 0? atoi (status + 9): 0;
    if (code >= 200 && code < 300)
        rc = 0;
    if (!quiet)
        printf ("%s: %s answers %d\n", rc? "unhealthy": "healthy", url, code);
done:
    if (fd >= 0)
        close (fd);
    if (ai)
        freeaddrinfo (ai);
    return rc;
}

int
cmd_health (int argc, char **argv)
{
    int status;
    options_t *opts = options_new_from_args ("splitmesh health",
        "--broker EP [--service NAME] | --http URL [options]",
        "Exit 0 when healthy, 1 when not, 2 on a usage error (for HEALTHCHECK and probes).",
        s_options, OPTIONS_COUNT (s_options),
        argc, argv, &status);
    if (!opts)
        return status;
    const char *broker = options_string (opts, "broker");
    const char *http = options_string (opts, "http");
    int timeout_ms = options_int (opts, "timeout-ms");
    bool quiet = options_bool (opts, "quiet");
    if (!broker == !http) {
        fprintf (stderr, "splitmesh health: give one of --broker or --http\n");
        status = 2;
    }
    else
    if (broker) {
        zsys_init ();
        zsys_set_logstream (quiet? NULL: stderr);
        status = s_check_mdp (broker, options_string (opts, "service"), timeout_ms, quiet);
    }
    else
        status = s_check_http (http, timeout_ms, quiet);
    options_destroy (&opts);
    return status;
}
