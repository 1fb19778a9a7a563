/*  test_overload.c: flood the broker far beyond its queue bound; every
    request must get an answer (the reply, 429 busy with retry_after_ms, or
    504 expired) within a bound, and the broker's memory must stay bounded.

    Starts the built `splitmesh-broker` with --max-queue-service 16 and one
    slow `splitmesh-test-echo-worker` (20 ms a request), then pushes N
    requests of 32 KiB each (N x 32 KiB is far more than the bound would
    hold: 4000 requests are 128 MiB) for "echo" and for a service with no
    worker, from a few DEALER sockets without waiting. Memory: VmRSS of the
    broker from /proc/<pid>/status, sampled while the flood runs, must stay
    under 96 MiB (an unbounded queue would hold every body). The services
    behind the broker (tokenizer, split-prefix, cloud-target, edge-draft)
    are MDP workers that take one request at a time, so this queue bound is
    what bounds them too; edge-draft retries a 429 from its upstreams like
    a 5xx (services/edge-draft/edge_gen.c).
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <stdio.h>
#include <string.h>
#include "codec.h"
#include "schema_gen.h"
#include "mdp_common.h"
#include "sm_mdp.h"
#include "sm_proc.h"

#define S_CLIENTS       4
#define S_PER_CLIENT    1000
#define S_BODY_BYTES    (32 * 1024)
#define S_RSS_LIMIT_KB  (96 * 1024)
#define S_ANSWER_MS     30000

static char *s_dir;
static char s_log [512];
static char s_endpoint [64];

static void
s_init (void)
{
    s_dir = sm_tmpdir_new ("overload");
    cr_assert_not_null (s_dir);
    snprintf (s_log, sizeof s_log, "%s/children.log", s_dir);
    snprintf (s_endpoint, sizeof s_endpoint, "tcp://127.0.0.1:%d", sm_free_tcp_port ());
}

static void
s_fini (void)
{
    sm_proc_kill_all ();
    if (getenv ("SPLITMESH_KEEP_TMP"))
        fprintf (stderr, "logs kept in %s\n", s_dir);
    else
        sm_tmpdir_remove (&s_dir);
}

//  VmRSS of pid in KiB, -1 if unreadable.
static long
s_rss_kb (pid_t pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "VmRSS:", 6) == 0)
            kb = atol (line + 6);
    fclose (f);
    return kb;
}

static void
s_send (zsock_t *sock, const char *service, const uint8_t *pad)
{
    zmsg_t *msg = sm_body_new (NULL, -1, -1);
    zmsg_addmem (msg, pad, S_BODY_BYTES);
    zmsg_pushstr (msg, service);
    zmsg_pushmem (msg, (uint8_t []) { MDPC_REQUEST }, 1);
    zmsg_pushstr (msg, MDPC_CLIENT);
    zmsg_send (&msg, sock);
}

typedef struct {
    int ok, busy, expired, other;
    bool retry_after_seen;
} s_tally_t;

static void
s_count (zmsg_t *msg, s_tally_t *t)
{
    //  [MDPC02][FINAL][service][body...]
    if (zmsg_size (msg) < 4) {
        t->other++;
        return;
    }
    zframe_t *body = zmsg_first (msg);
    body = zmsg_next (msg);
    body = zmsg_next (msg);
    body = zmsg_next (msg);
    wire_peek_t peek;
    wire_err_t err;
    if (wire_peek (zframe_data (body), zframe_size (body), &peek, &err) != 0) {
        t->other++;
        return;
    }
    if (peek.status == 0 || peek.status == 200)     //  the echo worker says 200
        t->ok++;
    else
    if (peek.status == 429) {
        t->busy++;
        wire_error_t e;
        if (wire_decode (&wire_error_desc, zframe_data (body), zframe_size (body), &e, &err) == 0) {
            if (e.has_retry_after_ms && e.retry_after_ms > 0)
                t->retry_after_seen = true;
            wire_msg_free (&wire_error_desc, &e);
        }
    }
    else
    if (peek.status == 504)
        t->expired++;
    else
        t->other++;
}

TestSuite (overload, .init = s_init, .fini = s_fini, .timeout = 90);

Test (overload, broker_flood_every_request_answered_memory_bounded)
{
    pid_t broker = sm_spawn (s_log, "splitmesh-broker", "-e", s_endpoint,
                             "--max-queue-service", "16", "--max-queue-total", "64",
                             "--expiry-ms", "2000", NULL);
    cr_assert_gt (broker, 0);
    pid_t worker = sm_spawn (s_log, "splitmesh-test-echo-worker", "-e", s_endpoint,
                             "-s", "echo", "-n", "w1", "--delay-ms", "20", NULL);
    cr_assert_gt (worker, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 10000),
               "worker did not register (log %s)", s_log);
    long rss_before = s_rss_kb (broker);

    uint8_t *pad = malloc (S_BODY_BYTES);
    for (int i = 0; i < S_BODY_BYTES; i++)
        pad [i] = (uint8_t) (i * 131);
    zsock_t *socks [S_CLIENTS];
    zpoller_t *poller = zpoller_new (NULL);
    for (int c = 0; c < S_CLIENTS; c++) {
        socks [c] = zsock_new_dealer (s_endpoint);
        cr_assert_not_null (socks [c]);
        zsock_set_sndhwm (socks [c], 0);
        zsock_set_rcvhwm (socks [c], 0);
        zpoller_add (poller, socks [c]);
    }
    const int total = S_CLIENTS * S_PER_CLIENT;
    s_tally_t t = { 0 };
    int answered = 0, sent = 0;
    long rss_max = rss_before;
    int64_t start = zclock_mono ();
    //  Interleave sending and receiving so neither side's buffers decide
    //  the outcome; half the requests go to a service without workers.
    while (answered < total && zclock_mono () - start < S_ANSWER_MS) {
        for (int burst = 0; burst < 64 && sent < total; burst++, sent++)
            s_send (socks [sent % S_CLIENTS], sent % 2? "echo": "nobody", pad);
        zsock_t *which = (zsock_t *) zpoller_wait (poller, sent < total? 0: 100);
        while (which) {
            zmsg_t *msg = zmsg_recv (which);
            if (msg) {
                s_count (msg, &t);
                answered++;
                zmsg_destroy (&msg);
            }
            which = (zsock_t *) zpoller_wait (poller, 0);
        }
        long rss = s_rss_kb (broker);
        if (rss > rss_max)
            rss_max = rss;
    }
    int64_t elapsed = zclock_mono () - start;
    printf ("overload: %d sent, %d answered in %lld ms: %d ok, %d busy(429), %d expired(504), "
            "%d other; broker VmRSS %ld KiB before, %ld KiB max\n",
            sent, answered, (long long) elapsed, t.ok, t.busy, t.expired, t.other,
            rss_before, rss_max);
    for (int c = 0; c < S_CLIENTS; c++)
        zsock_destroy (&socks [c]);
    zpoller_destroy (&poller);
    free (pad);

    cr_assert_eq (answered, total, "only %d of %d requests answered within %d ms",
                  answered, total, S_ANSWER_MS);
    cr_assert_eq (t.other, 0, "%d answers were neither ok, 429 nor 504", t.other);
    cr_assert_gt (t.busy, total / 2, "the flood should be mostly refused (%d busy)", t.busy);
    cr_assert_gt (t.ok, 0, "the worker should still serve some requests");
    cr_assert (t.retry_after_seen, "429 answers carry no retry_after_ms");
    cr_assert_lt (rss_max, S_RSS_LIMIT_KB, "broker VmRSS reached %ld KiB", rss_max);
    cr_assert (sm_alive (broker), "broker died under the flood");
    //  And it still serves normally afterwards.
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    zmsg_t *reply = sm_mdp_call (s_endpoint, "echo", &body, 5000);
    cr_assert_not_null (reply, "broker does not answer after the flood");
    zmsg_destroy (&reply);
}
