/*  bench_bus.c: round-trip latency and throughput of the MDP bus.

    Measures client -> broker -> worker -> broker -> client through the real
    splitmesh broker actor and the mdp_client / mdp_worker APIs, next to raw
    libzmq DEALER -> ROUTER echo, over ipc:// and tcp:// on loopback, in the
    same run so the numbers compare. Every party runs in its own thread with
    its own socket; traffic crosses the real transport (not inproc).

    - latency: one request at a time, `--rounds` round trips after a warm-up;
      p50, p99 and mean in microseconds.
    - throughput: `--messages` requests with `--window` in flight at once
      (the worker announces capacity = window, so the broker keeps the
      pipeline full); messages per second.

    Writes <out>/bus.json and <out>/bus.md with the machine (CPU model,
    cores, load average), the git commit and the command line, passed in by
    bench/bus/run.sh.
*/
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "mdp_common.h"
#include "mdp_client.h"
#include "mdp_worker.h"
#include "broker.h"

//  Checks that stay in release builds (assert is compiled out there): a
//  broken path must stop the benchmark, not look fast.
#define s_require(cond) \
    do { if (!(cond)) { \
        fprintf (stderr, "bench_bus: %s:%d: %s failed\n", __FILE__, __LINE__, #cond); \
        exit (1); } } while (0)

typedef struct {
    const char *path;           //  "broker" or "raw"
    const char *transport;      //  "ipc" or "tcp"
    double p50_us, p99_us, mean_us;
    double msgs_per_s;
    double p50_runs [9];        //  p50 of every repeat, in run order
} s_result_t;

static int s_rounds = 10000;
static int s_messages = 50000;
static int s_window = 64;
static int s_payload = 64;
static int s_repeats = 3;

//  ---------------------------------------------------------------------
//  Raw DEALER/ROUTER: a ROUTER echo thread

static void
s_raw_echo_actor (zsock_t *pipe, void *args)
{
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    zsock_set_sndhwm (router, 0);
    zsock_set_rcvhwm (router, 0);
    s_require (zsock_bind (router, "%s", (const char *) args) >= 0);
    char *endpoint = zsock_last_endpoint (router);
    zsock_signal (pipe, 0);
    zstr_send (pipe, endpoint);
    zstr_free (&endpoint);
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which != router)
            break;              //  $TERM or interrupted
        zmsg_t *msg = zmsg_recv (router);
        if (msg)
            zmsg_send (&msg, router);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&router);
}

//  ---------------------------------------------------------------------
//  Broker path: an echo worker thread on the worker API

typedef struct {
    char endpoint [256];
    int capacity;
} s_worker_args_t;

static void
s_mdp_echo_actor (zsock_t *pipe, void *args)
{
    s_worker_args_t *wa = (s_worker_args_t *) args;
    mdp_worker_options_t options = { .capacity = wa->capacity };
    mdp_worker_t *worker = mdp_worker_new (wa->endpoint, "echo", &options);
    s_require (worker);
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, mdp_worker_sock (worker), NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which != mdp_worker_sock (worker))
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

//  Broker path with a bare worker: one thread, one DEALER speaking MDPW02
//  itself (no heartbeat thread, no inproc pipe). Separates the broker's
//  cost from the worker API's.

static void
s_bare_worker_actor (zsock_t *pipe, void *args)
{
    s_worker_args_t *wa = (s_worker_args_t *) args;
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    zsock_set_sndhwm (dealer, 0);
    zsock_set_rcvhwm (dealer, 0);
    s_require (zsock_connect (dealer, "%s", wa->endpoint) == 0);
    //  READY with the capacity frame {"v":1,"capacity":N}, N < 65536.
    uint8_t capacity [] = { 0x82, 0xa1, 'v', 0x01, 0xa8, 'c','a','p','a','c','i','t','y',
                            0xcd, (uint8_t) (wa->capacity >> 8), (uint8_t) wa->capacity };
    zsock_send (dealer, "sbsb", MDPW_WORKER, "\x01", (size_t) 1, "echo",
                capacity, sizeof capacity);
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, dealer, NULL);
    int64_t heartbeat_at = zclock_mono () + MDP_HEARTBEAT_DEFAULT;
    while (true) {
        void *which = zpoller_wait (poller, 500);
        if (which == pipe || zpoller_terminated (poller))
            break;
        if (zclock_mono () >= heartbeat_at) {
            zsock_send (dealer, "sb", MDPW_WORKER, "\x05", (size_t) 1);
            heartbeat_at = zclock_mono () + MDP_HEARTBEAT_DEFAULT;
        }
        if (which != dealer)
            continue;
        zmsg_t *msg = zmsg_recv (dealer);
        if (!msg)
            break;
        zframe_t *command = zmsg_next (msg);    //  after the header
        zmsg_first (msg);
        command = zmsg_next (msg);
        if (command && zframe_size (command) == 1 && zframe_data (command) [0] == MDPW_REQUEST) {
            zframe_data (command) [0] = MDPW_FINAL;   //  same frames back
            zmsg_send (&msg, dealer);
        }
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&dealer);
}

//  ---------------------------------------------------------------------
//  Measurement

static int
s_compare (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y? -1: x > y;
}

//  Sends one request on `sock` in the path's framing.
static void
s_send_request (zsock_t *sock, bool broker, const void *payload)
{
    zmsg_t *msg = zmsg_new ();
    if (broker) {
        uint8_t cmd = MDPC_REQUEST;
        zmsg_addstr (msg, MDPC_CLIENT);
        zmsg_addmem (msg, &cmd, 1);
        zmsg_addstr (msg, "echo");
    }
    zmsg_addmem (msg, payload, s_payload);
    zmsg_send (&msg, sock);
}

//  Receives one reply; checks framing so a broken path cannot look fast.
static void
s_recv_reply (zsock_t *sock, bool broker)
{
    zmsg_t *msg = zmsg_recv (sock);
    s_require (msg);
    if (broker) {
        s_require (zmsg_size (msg) == 4);
        s_require (zframe_streq (zmsg_first (msg), MDPC_CLIENT));
        s_require (zframe_data (zmsg_next (msg)) [0] == MDPC_FINAL);
    }
    s_require (zframe_size (zmsg_last (msg)) == (size_t) s_payload);
    zmsg_destroy (&msg);
}

static void
s_measure (const char *endpoint, bool broker, s_result_t *result)
{
    //  The client is a plain DEALER in both paths: mdp_client would add
    //  nothing but a poll per message; framing is the same MDPC02.
    zsock_t *client = zsock_new (ZMQ_DEALER);
    zsock_set_sndhwm (client, 0);
    zsock_set_rcvhwm (client, 0);
    s_require (zsock_connect (client, "%s", endpoint) == 0);
    char *payload = (char *) zmalloc (s_payload);
    memset (payload, 'x', s_payload);

    for (int i = 0; i < 1000; i++) {            //  warm-up
        s_send_request (client, broker, payload);
        s_recv_reply (client, broker);
    }
    int64_t *samples = (int64_t *) malloc (sizeof (int64_t) * s_rounds);
    double sum = 0;
    for (int i = 0; i < s_rounds; i++) {
        int64_t start = zclock_usecs ();
        s_send_request (client, broker, payload);
        s_recv_reply (client, broker);
        samples [i] = zclock_usecs () - start;
        sum += samples [i];
    }
    qsort (samples, s_rounds, sizeof (int64_t), s_compare);
    result->p50_us = samples [s_rounds / 2];
    result->p99_us = samples [(int) ((s_rounds - 1) * 0.99)];
    result->mean_us = sum / s_rounds;
    free (samples);

    int sent = 0, received = 0;
    int64_t start = zclock_usecs ();
    while (received < s_messages) {
        while (sent < s_messages && sent - received < s_window) {
            s_send_request (client, broker, payload);
            sent++;
        }
        s_recv_reply (client, broker);
        received++;
    }
    int64_t elapsed = zclock_usecs () - start;
    result->msgs_per_s = s_messages / (elapsed / 1e6);
    free (payload);
    zsock_destroy (&client);
}

static void
s_run_raw (const char *transport, const char *bind_ep, s_result_t *result)
{
    zactor_t *echo = zactor_new (s_raw_echo_actor, (void *) bind_ep);
    char *endpoint = zstr_recv (echo);
    result->path = "raw";
    result->transport = transport;
    s_measure (endpoint, false, result);
    zstr_free (&endpoint);
    zactor_destroy (&echo);
}

static void
s_run_broker (const char *transport, const char *bind_ep, bool bare, s_result_t *result)
{
    broker_config_t config = { .endpoints = bind_ep, .request_expiry_ms = 60000,
                               .max_queue_service = 100000, .max_queue_total = 100000 };
    zactor_t *broker = zactor_new (broker_actor, &config);
    s_worker_args_t args = { .capacity = s_window };
    char *endpoint = broker_endpoint (broker);
    s_require (endpoint && *endpoint);
    //  "tcp://127.0.0.1:port" as bound is also the connect address.
    snprintf (args.endpoint, sizeof args.endpoint, "%s", endpoint);
    zactor_t *worker = zactor_new (bare? s_bare_worker_actor: s_mdp_echo_actor, &args);
    //  Wait until the worker is registered (mmi.workers).
    mdp_client_t *probe = mdp_client_new (endpoint);
    for (int i = 0; i < 100; i++) {
        zmsg_t *body = zmsg_new ();
        zmsg_addstr (body, "echo");
        mdp_client_set_timeout (probe, 1000);
        zmsg_t *reply = mdp_client_request (probe, "mmi.workers", &body);
        char *count = reply? zmsg_popstr (reply): NULL;
        bool ready = count && atoi (count) > 0;
        zstr_free (&count);
        zmsg_destroy (&reply);
        if (ready)
            break;
        zclock_sleep (10);
    }
    mdp_client_destroy (&probe);
    result->path = bare? "broker+bare-worker": "broker";
    result->transport = transport;
    s_measure (endpoint, true, result);
    zstr_free (&endpoint);
    zactor_destroy (&worker);
    zactor_destroy (&broker);
}

//  ---------------------------------------------------------------------
//  Report

static void
s_machine (char *cpu, size_t size, double *load)
{
    snprintf (cpu, size, "unknown");
    FILE *file = fopen ("/proc/cpuinfo", "r");
    char line [512];
    while (file && fgets (line, sizeof line, file)) {
        if (strncmp (line, "model name", 10) == 0) {
            char *colon = strchr (line, ':');
            if (colon) {
                snprintf (cpu, size, "%s", colon + 2);
                cpu [strcspn (cpu, "\n")] = '\0';
            }
            break;
        }
    }
    if (file)
        fclose (file);
    *load = -1;
    file = fopen ("/proc/loadavg", "r");
    if (file) {
        if (fscanf (file, "%lf", load) != 1)
            *load = -1;
        fclose (file);
    }
}

static void
s_write (const char *out, const char *commit, const char *command,
         s_result_t *results, int count)
{
    char cpu [256];
    double load;
    s_machine (cpu, sizeof cpu, &load);
    long cores = sysconf (_SC_NPROCESSORS_ONLN);
    char date [64];
    time_t now = time (NULL);
    strftime (date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime (&now));

    char path [1024];
    snprintf (path, sizeof path, "%s/bus.json", out);
    FILE *json = fopen (path, "w");
    if (!json) {
        fprintf (stderr, "bench_bus: cannot write %s\n", path);
        exit (1);
    }
    fprintf (json, "{\n  \"benchmark\": \"bus\",\n  \"date\": \"%s\",\n", date);
    fprintf (json, "  \"commit\": \"%s\",\n  \"command\": \"%s\",\n", commit, command);
    fprintf (json, "  \"machine\": {\"cpu\": \"%s\", \"cores\": %ld, \"loadavg_1m\": %.2f},\n",
             cpu, cores, load);
    fprintf (json, "  \"params\": {\"rounds\": %d, \"messages\": %d, \"window\": %d, "
             "\"payload_bytes\": %d, \"repeats\": %d},\n", s_rounds, s_messages, s_window,
             s_payload, s_repeats);
    fprintf (json, "  \"results\": [\n");
    for (int i = 0; i < count; i++) {
        fprintf (json, "    {\"path\": \"%s\", \"transport\": \"%s\", \"p50_us\": %.1f, "
                 "\"p99_us\": %.1f, \"mean_us\": %.1f, \"msgs_per_s\": %.0f, "
                 "\"p50_us_each_repeat\": [", results [i].path, results [i].transport,
                 results [i].p50_us, results [i].p99_us, results [i].mean_us,
                 results [i].msgs_per_s);
        for (int r = 0; r < s_repeats; r++)
            fprintf (json, "%s%.1f", r? ", ": "", results [i].p50_runs [r]);
        fprintf (json, "]}%s\n", i + 1 < count? ",": "");
    }
    fprintf (json, "  ]\n}\n");
    fclose (json);

    snprintf (path, sizeof path, "%s/bus.md", out);
    FILE *md = fopen (path, "w");
    if (!md) {
        fprintf (stderr, "bench_bus: cannot write %s\n", path);
        exit (1);
    }
    fprintf (md, "# bench/bus: MDP broker vs raw DEALER/ROUTER\n\n");
    fprintf (md, "- date: %s\n- commit: %s\n- command: `%s`\n", date, commit, command);
    fprintf (md, "- machine: %s, %ld cores, 1-min load average %.2f at the end of the run\n",
             cpu, cores, load);
    fprintf (md, "- latency: %d sequential round trips of a %d-byte body after 1000 warm-up;"
             " throughput: %d messages with %d in flight; each row is the median-p50 run of"
             " %d interleaved repeats\n\n", s_rounds, s_payload, s_messages, s_window,
             s_repeats);
    fprintf (md, "| path | transport | p50 RTT (us) | p99 RTT (us) | mean (us) | msgs/s |\n");
    fprintf (md, "|------|-----------|-------------:|-------------:|----------:|-------:|\n");
    for (int i = 0; i < count; i++)
        fprintf (md, "| %s | %s | %.1f | %.1f | %.1f | %.0f |\n", results [i].path,
                 results [i].transport, results [i].p50_us, results [i].p99_us,
                 results [i].mean_us, results [i].msgs_per_s);
    fprintf (md, "\n- `raw`: one DEALER -> ROUTER echo hop (the floor).\n"
             "- `broker`: client -> splitmesh broker -> mdp_worker API -> broker -> client:"
             " two network hops each way, plus the worker API's inproc pipe to its"
             " heartbeat actor (two more thread hand-offs per request).\n"
             "- `broker+bare-worker`: the same broker with a one-thread worker speaking MDPW02"
             " on its own DEALER, to separate the broker's cost from the worker API's.\n\n"
             "All parties are threads of one process, each with its own socket, talking over"
             " the named transport. The client is a DEALER sending MDPC02 frames directly.\n");
    fclose (md);
}

int
main (int argc, char **argv)
{
    static struct option options [] = {
        { "rounds", required_argument, 0, 'r' },
        { "messages", required_argument, 0, 'm' },
        { "window", required_argument, 0, 'w' },
        { "payload", required_argument, 0, 'p' },
        { "repeats", required_argument, 0, 'R' },
        { "out", required_argument, 0, 'o' },
        { "commit", required_argument, 0, 'c' },
        { "command", required_argument, 0, 'C' },
        { 0, 0, 0, 0 }
    };
    const char *out = "bench/results", *commit = "unknown", *command = "bench_bus";
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
            case 'r': s_rounds = atoi (optarg); break;
            case 'm': s_messages = atoi (optarg); break;
            case 'w': s_window = atoi (optarg); break;
            case 'p': s_payload = atoi (optarg); break;
            case 'R': s_repeats = atoi (optarg); break;
            case 'o': out = optarg; break;
            case 'c': commit = optarg; break;
            case 'C': command = optarg; break;
            default:
                fprintf (stderr, "usage: bench_bus [--rounds N] [--messages N] [--window N]"
                         " [--payload BYTES] [--out DIR] [--commit SHA] [--command TEXT]\n");
                return 2;
        }
    }
    if (s_rounds < 100 || s_messages < 100 || s_window < 1 || s_window > MDP_CAPACITY_MAX
    ||  s_payload < 1 || s_repeats < 1 || s_repeats > 9) {
        fprintf (stderr, "bench_bus: rounds, messages >= 100; window 1..%d; payload >= 1;"
                 " repeats 1..9\n", MDP_CAPACITY_MAX);
        return 2;
    }
    char ipc_raw [256], ipc_broker [256];
    snprintf (ipc_raw, sizeof ipc_raw, "ipc:///tmp/bench-bus-%d-raw.ipc", getpid ());
    snprintf (ipc_broker, sizeof ipc_broker, "ipc:///tmp/bench-bus-%d-broker.ipc", getpid ());
    //  Every configuration runs `repeats` times, interleaved so that load
    //  from other processes hits all of them alike; each row reports the
    //  run with the median p50.
    s_result_t runs [9][6], results [6];
    memset (runs, 0, sizeof runs);
    for (int r = 0; r < s_repeats; r++) {
        s_run_raw ("ipc", ipc_raw, &runs [r][0]);
        s_run_broker ("ipc", ipc_broker, false, &runs [r][1]);
        s_run_broker ("ipc", ipc_broker, true, &runs [r][2]);
        s_run_raw ("tcp", "tcp://127.0.0.1:*", &runs [r][3]);
        s_run_broker ("tcp", "tcp://127.0.0.1:*", false, &runs [r][4]);
        s_run_broker ("tcp", "tcp://127.0.0.1:*", true, &runs [r][5]);
    }
    for (int c = 0; c < 6; c++) {
        int order [9] = { 0 };
        for (int r = 0; r < s_repeats; r++)
            order [r] = r;
        for (int i = 1; i < s_repeats; i++)         //  sort run indices by p50
            for (int j = i; j > 0 && runs [order [j]][c].p50_us < runs [order [j - 1]][c].p50_us; j--) {
                int t = order [j]; order [j] = order [j - 1]; order [j - 1] = t;
            }
        results [c] = runs [order [s_repeats / 2]][c];
        for (int r = 0; r < s_repeats; r++)
            results [c].p50_runs [r] = runs [r][c].p50_us;
    }
    unlink (ipc_raw + 6);
    unlink (ipc_broker + 6);
    for (int i = 0; i < 6; i++)
        printf ("%-18s %-3s p50 %7.1f us  p99 %7.1f us  mean %7.1f us  %9.0f msgs/s\n",
                results [i].path, results [i].transport, results [i].p50_us,
                results [i].p99_us, results [i].mean_us, results [i].msgs_per_s);
    s_write (out, commit, command, results, 6);
    return 0;
}
