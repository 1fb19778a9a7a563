/*  bench_crypt.c: what the crypt-proxy pair costs, against the direct path.

    Two paths to the same echo worker, measured in the same run:
      direct:  client -> cloud broker -> worker
      proxied: client -> device broker -> device proxy ==CURVE tcp==>
               cloud proxy -> cloud broker -> worker
    Everything runs in this process as actors (the same actors the
    executables wrap), all hops over loopback TCP. For each path and body
    size (1 KB, 64 KB): round-trip latency of sequential requests (p50,
    p99) and throughput with `window` requests in flight (one mdp_client
    per outstanding request, as MDP allows one per socket).
    Prints one JSON object; bench/crypt/run.sh adds machine and commit.

    Usage: bench_crypt [seconds-per-throughput-case] [rtt-requests] [window] [repeats]
*/
#include <czmq.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include "mdp_client.h"
#include "mdp_worker.h"
#include "broker.h"
#include "crypt_proxy.h"

//  The echo worker: answers each request with its own body, at once.
static void
s_echo_actor (zsock_t *pipe, void *args)
{
    mdp_worker_options_t options = { .capacity = 256 };
    mdp_worker_t *worker = mdp_worker_new ((const char *) args, "echo", &options);
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, mdp_worker_sock (worker), NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which == pipe || !which)
            break;
        zframe_t *client = NULL;
        zmsg_t *body = mdp_worker_recv (worker, 0, &client);
        if (body)
            mdp_worker_send_final (worker, client, &body);
        zframe_destroy (&client);
    }
    zpoller_destroy (&poller);
    mdp_worker_destroy (&worker);
}

static int
s_cmp (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y? -1: x > y;
}

#define REPEATS_MAX 9

static double
s_median (const double *values, int count)
{
    double sorted [REPEATS_MAX];
    memcpy (sorted, values, count * sizeof (double));
    for (int i = 1; i < count; i++)         //  insertion sort: count <= 9
        for (int j = i; j > 0 && sorted [j] < sorted [j - 1]; j--) {
            double t = sorted [j];
            sorted [j] = sorted [j - 1];
            sorted [j - 1] = t;
        }
    return sorted [count / 2];
}

static zmsg_t *
s_body (size_t size)
{
    byte *data = (byte *) malloc (size);
    for (size_t i = 0; i < size; i++)
        data [i] = (byte) (i * 131 + 7);
    zmsg_t *body = zmsg_new ();
    zmsg_addmem (body, data, size);
    free (data);
    return body;
}

//  Sequential requests; fills p50/p99 in microseconds. Returns 0 or -1.
static int
s_rtt (const char *endpoint, size_t size, int count, double *p50, double *p99)
{
    mdp_client_t *client = mdp_client_new (endpoint);
    int64_t *samples = (int64_t *) calloc (count, sizeof (int64_t));
    int rc = 0;
    for (int i = -count / 10; i < count && rc == 0; i++) {     //  10% warm-up
        zmsg_t *body = s_body (size);
        int64_t start = zclock_usecs ();
        mdp_client_send (client, "echo", &body);
        int command = 0;
        zmsg_t *reply = mdp_client_recv (client, 5000, &command, NULL);
        if (!reply || zmsg_content_size (reply) != size)
            rc = -1;
        else
        if (i >= 0)
            samples [i] = zclock_usecs () - start;
        zmsg_destroy (&reply);
    }
    if (rc == 0) {
        qsort (samples, count, sizeof (int64_t), s_cmp);
        *p50 = (double) samples [count / 2];
        *p99 = (double) samples [(count * 99) / 100];
    }
    free (samples);
    mdp_client_destroy (&client);
    return rc;
}

//  `window` requests in flight for `seconds`; returns messages per second.
static double
s_throughput (const char *endpoint, size_t size, int window, double seconds)
{
    mdp_client_t **clients = (mdp_client_t **) calloc (window, sizeof (mdp_client_t *));
    zmq_pollitem_t *items = (zmq_pollitem_t *) calloc (window, sizeof (zmq_pollitem_t));
    for (int i = 0; i < window; i++) {
        clients [i] = mdp_client_new (endpoint);
        zmsg_t *body = s_body (size);
        mdp_client_send (clients [i], "echo", &body);
        items [i] = (zmq_pollitem_t) { zsock_resolve (mdp_client_sock (clients [i])), 0, ZMQ_POLLIN, 0 };
    }
    zmsg_t *template = s_body (size);
    int64_t start = zclock_usecs ();
    int64_t end = start + (int64_t) (seconds * 1e6);
    uint64_t done = 0;
    bool failed = false;
    while (zclock_usecs () < end && !failed) {
        int rc = zmq_poll (items, window, 5000);
        if (rc <= 0) {
            failed = true;
            break;
        }
        for (int i = 0; i < window; i++)
            if (items [i].revents & ZMQ_POLLIN) {
                int command = 0;
                zmsg_t *reply = mdp_client_recv (clients [i], 0, &command, NULL);
                if (!reply || zmsg_content_size (reply) != size) {
                    failed = true;
                    zmsg_destroy (&reply);
                    break;
                }
                zmsg_destroy (&reply);
                done++;
                zmsg_t *body = zmsg_dup (template);
                mdp_client_send (clients [i], "echo", &body);
            }
    }
    double elapsed = (zclock_usecs () - start) / 1e6;
    //  Drain what is still out so the next case starts clean.
    for (int i = 0; i < window; i++) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (clients [i], 5000, &command, NULL);
        zmsg_destroy (&reply);
        mdp_client_destroy (&clients [i]);
    }
    zmsg_destroy (&template);
    free (clients);
    free (items);
    return failed? -1: done / elapsed;
}

//  Distinct free ports from the kernel (bind to port 0; all stay bound
//  until all are chosen; close() is synchronous, unlike zmq_close).
static void
s_free_ports (int *ports, int count)
{
    int fds [8];
    for (int i = 0; i < count; i++) {
        fds [i] = socket (AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
        addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        ports [i] = -1;
        if (bind (fds [i], (struct sockaddr *) &addr, sizeof addr) == 0
        &&  getsockname (fds [i], (struct sockaddr *) &addr, &len) == 0)
            ports [i] = ntohs (addr.sin_port);
    }
    for (int i = 0; i < count; i++)
        close (fds [i]);
}

int
main (int argc, char **argv)
{
    double seconds = argc > 1? atof (argv [1]): 2.0;
    int rtt_count = argc > 2? atoi (argv [2]): 2000;
    int window = argc > 3? atoi (argv [3]): 32;
    int repeats = argc > 4? atoi (argv [4]): 3;
    if (seconds <= 0 || rtt_count < 10 || window < 1 || window > 256
    ||  repeats < 1 || repeats > REPEATS_MAX) {
        fprintf (stderr, "usage: bench_crypt [seconds>0] [rtt-requests>=10] [window 1..256]"
                 " [repeats 1..%d]\n", REPEATS_MAX);
        return 2;
    }
    zsys_set_logstream (stderr);    //  keep stdout for the JSON
    char dir [] = "/tmp/bench-crypt-XXXXXX";
    if (!mkdtemp (dir))
        return 1;
    char allow [600], server [600], server_secret [600], device [600], device_secret [600];
    snprintf (allow, sizeof allow, "%s/allow", dir);
    snprintf (server, sizeof server, "%s/server", dir);
    snprintf (server_secret, sizeof server_secret, "%s/server_secret", dir);
    snprintf (device, sizeof device, "%s/allow/device", dir);
    snprintf (device_secret, sizeof device_secret, "%s/device_secret", dir);
    zsys_dir_create (allow);
    zcert_t *cert = zcert_new ();
    zcert_save (cert, server);
    zcert_destroy (&cert);
    cert = zcert_new ();
    zcert_save_public (cert, device);
    zcert_save_secret (cert, device_secret);
    zcert_destroy (&cert);

    char cloud_ep [64], device_ep [64], link_ep [64];
    int ports [3];
    s_free_ports (ports, 3);
    snprintf (cloud_ep, sizeof cloud_ep, "tcp://127.0.0.1:%d", ports [0]);
    snprintf (device_ep, sizeof device_ep, "tcp://127.0.0.1:%d", ports [1]);
    snprintf (link_ep, sizeof link_ep, "tcp://127.0.0.1:%d", ports [2]);
    broker_config_t cloud_config = { .endpoints = cloud_ep };
    broker_config_t device_config = { .endpoints = device_ep };
    zactor_t *cloud_broker = zactor_new (broker_actor, &cloud_config);
    zactor_t *device_broker = zactor_new (broker_actor, &device_config);
    zactor_t *echo = zactor_new (s_echo_actor, cloud_ep);
    crypt_proxy_config_t cloud_proxy_config = {
        .role = CRYPT_ROLE_CLOUD, .broker = cloud_ep, .cert = server_secret,
        .bind = link_ep, .allow = allow, .max_inflight = 512
    };
    crypt_proxy_config_t device_proxy_config = {
        .role = CRYPT_ROLE_DEVICE, .broker = device_ep, .cert = device_secret,
        .services = "echo", .connect = link_ep, .server_key = server, .capacity = 256
    };
    zactor_t *cloud_proxy = crypt_proxy_new (&cloud_proxy_config);
    zactor_t *device_proxy = crypt_proxy_new (&device_proxy_config);
    int rc = 0;
    if (!cloud_proxy || !device_proxy) {
        fprintf (stderr, "bench_crypt: proxies did not start\n");
        rc = 1;
        goto cleanup;
    }
    zclock_sleep (500);             //  registrations and the CURVE handshake

    //  Repeats interleave the two paths (direct, proxied, direct, ...), so
    //  a burst of load on this shared machine hits both alike; each row
    //  reports the median repeat and the throughput range.
    const char *paths [] = { "direct", "proxied" };
    const char *endpoints [] = { cloud_ep, device_ep };
    const size_t sizes [] = { 1024, 65536 };
    double p50s [2][2][REPEATS_MAX], p99s [2][2][REPEATS_MAX], rates [2][2][REPEATS_MAX];
    for (int r = 0; r < repeats && rc == 0; r++)
        for (int s = 0; s < 2 && rc == 0; s++)
            for (int p = 0; p < 2 && rc == 0; p++) {
                int count = sizes [s] > 4096? rtt_count / 4: rtt_count;
                if (s_rtt (endpoints [p], sizes [s], count, &p50s [s][p][r], &p99s [s][p][r])) {
                    fprintf (stderr, "bench_crypt: %s %zu B round trips failed\n", paths [p], sizes [s]);
                    rc = 1;
                    break;
                }
                rates [s][p][r] = s_throughput (endpoints [p], sizes [s], window, seconds);
                if (rates [s][p][r] < 0) {
                    fprintf (stderr, "bench_crypt: %s %zu B throughput failed\n", paths [p], sizes [s]);
                    rc = 1;
                }
            }
    printf ("{\"window\": %d, \"seconds_per_case\": %.1f, \"rtt_requests\": %d, \"repeats\": %d, "
            "\"cases\": [", window, seconds, rtt_count, repeats);
    for (int s = 0; s < 2 && rc == 0; s++)
        for (int p = 0; p < 2; p++) {
            double rate = s_median (rates [s][p], repeats);
            double low = rates [s][p][0], high = rates [s][p][0];
            for (int r = 1; r < repeats; r++) {
                low = rates [s][p][r] < low? rates [s][p][r]: low;
                high = rates [s][p][r] > high? rates [s][p][r]: high;
            }
            printf ("%s\n  {\"path\": \"%s\", \"body_bytes\": %zu, \"rtt_p50_us\": %.0f, "
                    "\"rtt_p99_us\": %.0f, \"msgs_per_s\": %.0f, \"msgs_per_s_min\": %.0f, "
                    "\"msgs_per_s_max\": %.0f, \"MB_per_s\": %.2f}",
                    s + p == 0? "": ",", paths [p], sizes [s],
                    s_median (p50s [s][p], repeats), s_median (p99s [s][p], repeats),
                    rate, low, high, rate * sizes [s] / 1e6);
        }
    //  The proxies' own counters: errors or lost messages would mean the
    //  numbers above include failures.
    zstr_send (device_proxy, "STATS");
    char *device_stats = zstr_recv (device_proxy);
    zstr_send (cloud_proxy, "STATS");
    char *cloud_stats = zstr_recv (cloud_proxy);
    printf ("],\n \"device_proxy\": \"%s\",\n \"cloud_proxy\": \"%s\"}\n",
            device_stats? device_stats: "", cloud_stats? cloud_stats: "");
    zstr_free (&device_stats);
    zstr_free (&cloud_stats);
cleanup:
    zactor_destroy (&device_proxy);
    zactor_destroy (&cloud_proxy);
    zactor_destroy (&echo);
    zactor_destroy (&device_broker);
    zactor_destroy (&cloud_broker);
    char command [700];
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    if (system (command) != 0)
        fprintf (stderr, "bench_crypt: could not remove %s\n", dir);
    return rc;
}
