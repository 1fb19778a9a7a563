/*  test_broker_integration.c: real processes: client, broker, two workers.

    Starts the built `splitmesh-broker` and `splitmesh-test-echo-worker`
    binaries on an ipc:// endpoint in a fresh temp dir, with fast timers
    (heartbeat 100 ms, liveness 3), and checks what only real processes can
    show: kill -9 of a worker in the middle of a request, a broker restart
    that workers and clients survive without help, session affinity across
    1000 requests and its move when the worker dies. The test process is the
    client. Every child is killed and reaped in .fini, even after a failed
    assertion; children also die with the test process (PDEATHSIG).
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <sys/wait.h>
#include "mdp_common.h"
#include "mdp_client.h"
#include "sm_mdp.h"
#include "sm_proc.h"

static char *s_dir;                 //  temp dir: sockets and logs
static char s_endpoint [512];       //  ipc://<dir>/broker.ipc
static char s_log [512];            //  <dir>/children.log

static void
s_init (void)
{
    s_dir = sm_tmpdir_new ("sm-broker-it");
    cr_assert_not_null (s_dir);
    snprintf (s_endpoint, sizeof s_endpoint, "ipc://%s/broker.ipc", s_dir);
    snprintf (s_log, sizeof s_log, "%s/children.log", s_dir);
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

static pid_t
s_broker_spawn (void)
{
    pid_t pid = sm_spawn (s_log, "splitmesh-broker", "-e", s_endpoint,
                          "--heartbeat-ms", "100", "--liveness", "3",
                          "--expiry-ms", "500", NULL);
    cr_assert_gt (pid, 0, "cannot start splitmesh-broker");
    return pid;
}

static pid_t
s_worker_spawn (const char *name, const char *delay_ms)
{
    pid_t pid = sm_spawn (s_log, "splitmesh-test-echo-worker", "-e", s_endpoint,
                          "-s", "echo", "-n", name, "--delay-ms", delay_ms,
                          "--heartbeat-ms", "100", "--liveness", "3",
                          "--reconnect-ms", "50", "--reconnect-max-ms", "400", NULL);
    cr_assert_gt (pid, 0, "cannot start splitmesh-test-echo-worker");
    return pid;
}

static void
s_wait_workers (int workers)
{
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", workers, 5000),
               "broker did not see %d workers within 5 s (log: %s)", workers, s_log);
}

//  One request; returns the name of the worker that answered (caller frees).
static char *
s_ask (mdp_client_t *client, const char *session)
{
    zmsg_t *body = sm_body_new (session, -1, -1);
    zmsg_t *reply = mdp_client_request (client, "echo", &body);
    cr_assert_not_null (reply, "no reply");
    int64_t status = 0;
    cr_assert_eq (sm_body_int (reply, "status", &status), 0);
    cr_assert_eq (status, 200);
    char *worker = sm_body_str (reply, "worker");
    cr_assert_not_null (worker);
    zmsg_destroy (&reply);
    return worker;
}

TestSuite (broker_integration, .init = s_init, .fini = s_fini, .timeout = 40);

Test (broker_integration, load_spreads_over_both_worker_processes)
{
    s_broker_spawn ();
    s_worker_spawn ("A", "0");
    s_worker_spawn ("B", "0");
    s_wait_workers (2);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    int a = 0, b = 0;
    for (int i = 0; i < 100; i++) {
        char *worker = s_ask (client, NULL);
        a += streq (worker, "A");
        b += streq (worker, "B");
        zstr_free (&worker);
    }
    mdp_client_destroy (&client);
    cr_assert_eq (a + b, 100);
    cr_assert (a >= 35 && b >= 35, "load not spread: A=%d B=%d", a, b);
}

Test (broker_integration, kill_9_worker_mid_request_answer_comes_from_the_other)
{
    s_broker_spawn ();
    pid_t slow = s_worker_spawn ("slow", "10000");
    s_wait_workers (1);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    mdp_client_set_keep_for_resend (client, true);
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    cr_assert_eq (mdp_client_send (client, "echo", &body), 0);
    zclock_sleep (200);                 //  the slow worker now holds it
    s_worker_spawn ("fast", "0");
    s_wait_workers (2);
    int64_t killed_at = zclock_mono ();
    cr_assert_eq (kill (slow, SIGKILL), 0);
    int command = 0;
    zmsg_t *reply = mdp_client_recv (client, 5000, &command, NULL);
    int64_t waited = zclock_mono () - killed_at;
    cr_assert_not_null (reply, "request lost with the killed worker");
    cr_assert_eq (command, MDPC_FINAL);
    char *worker = sm_body_str (reply, "worker");
    cr_assert_str_eq (worker, "fast");
    //  Liveness window is 3 x 100 ms; allow scheduling slack on a busy box.
    cr_assert (waited < 1500, "answer took %lld ms after kill -9", (long long) waited);
    cr_log_info ("kill -9 failover: answer %lld ms after the kill", (long long) waited);
    zstr_free (&worker);
    zmsg_destroy (&reply);
    mdp_client_destroy (&client);
    int status = sm_kill (slow, SIGKILL, 1000);
    cr_assert (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
}

Test (broker_integration, broker_restart_traffic_resumes_within_5_s)
{
    pid_t broker = s_broker_spawn ();
    s_worker_spawn ("A", "0");
    s_worker_spawn ("B", "0");
    s_wait_workers (2);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    mdp_client_set_timeout (client, 400);
    mdp_client_set_retries (client, 20);
    mdp_client_set_backoff (client, 50, 400);
    char *worker = s_ask (client, NULL);
    zstr_free (&worker);

    sm_kill (broker, SIGKILL, 1000);
    zclock_sleep (300);                 //  down long enough for liveness to notice
    s_broker_spawn ();
    int64_t restarted = zclock_mono ();
    //  No manual step: the same client and workers carry on.
    worker = s_ask (client, NULL);
    int64_t resumed = zclock_mono () - restarted;
    zstr_free (&worker);
    cr_assert (resumed < 5000, "traffic resumed only after %lld ms", (long long) resumed);
    cr_log_info ("broker restart: traffic resumed %lld ms after respawn", (long long) resumed);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 2, 5000 - (int) resumed),
               "both workers should re-register within 5 s");
    cr_assert_geq (mdp_client_connects (client), 1);
    mdp_client_destroy (&client);
}

//  A request in flight when its broker dies cannot be answered (the
//  broker's ROUTER drops replies to the old connection): the client must
//  say so at once, not after its timeout, and resending must work once the
//  broker is back.
Test (broker_integration, request_lost_with_its_broker_is_reported_at_once_and_resent)
{
    pid_t broker = s_broker_spawn ();
    s_worker_spawn ("A", "3000");       //  slow: the request is in flight for 3 s
    s_wait_workers (1);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    mdp_client_set_keep_for_resend (client, true);
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    cr_assert_eq (mdp_client_send (client, "echo", &body), 0);
    zclock_sleep (200);
    cr_assert_not (mdp_client_lost (client));
    sm_kill (broker, SIGKILL, 1000);
    int64_t killed = zclock_mono ();
    int command = 0;
    zmsg_t *reply = mdp_client_recv (client, 20000, &command, NULL);
    int64_t noticed = zclock_mono () - killed;
    cr_assert_null (reply, "no reply can come from a dead broker");
    cr_assert (mdp_client_lost (client), "recv returned without saying the broker was lost");
    cr_assert (noticed < 2000, "the loss was noticed only after %lld ms", (long long) noticed);
    cr_log_info ("broker killed: the client knew after %lld ms", (long long) noticed);

    s_broker_spawn ();
    s_wait_workers (1);
    cr_assert_eq (mdp_client_resend (client), 0);
    reply = mdp_client_recv (client, 10000, &command, NULL);
    cr_assert_not_null (reply, "the resent request got no answer");
    cr_assert_eq (command, MDPC_FINAL);
    cr_assert_not (mdp_client_lost (client));
    int64_t status = 0;
    cr_assert_eq (sm_body_int (reply, "status", &status), 0);
    char *error = sm_body_str (reply, "error");
    cr_assert_eq (status, 200, "resent request answered %lld: %s", (long long) status, error? error: "");
    zstr_free (&error);
    zmsg_destroy (&reply);
    //  Nothing sent yet on a new client: nothing to resend.
    mdp_client_t *fresh = mdp_client_new (s_endpoint);
    mdp_client_set_keep_for_resend (fresh, true);
    cr_assert_eq (mdp_client_resend (fresh), -1);
    mdp_client_destroy (&fresh);
    mdp_client_destroy (&client);
}

//  Keeping a copy of every request for mdp_client_resend is opt-in: a
//  client without it cannot resend (a clear -1, no crash, nothing sent),
//  and its request is still answered normally.
Test (broker_integration, resend_without_keep_for_resend_fails_cleanly)
{
    s_broker_spawn ();
    s_worker_spawn ("A", "300");
    s_wait_workers (1);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    cr_assert_eq (mdp_client_send (client, "echo", &body), 0);
    int connects = mdp_client_connects (client);
    cr_assert_eq (mdp_client_resend (client), -1, "resend worked without keep_for_resend");
    cr_assert_eq (mdp_client_connects (client), connects, "a failed resend must not reconnect");
    int command = 0;
    zmsg_t *reply = mdp_client_recv (client, 10000, &command, NULL);
    cr_assert_not_null (reply, "the request was not answered after the failed resend");
    cr_assert_eq (command, MDPC_FINAL);
    int64_t status = 0;
    cr_assert_eq (sm_body_int (reply, "status", &status), 0);
    cr_assert_eq (status, 200);
    zmsg_destroy (&reply);
    //  No second answer: the failed resend sent nothing.
    cr_assert_null (mdp_client_recv (client, 800, &command, NULL));
    //  Turned on, the next request can be resent; turned off again, the
    //  copy is dropped and resend fails again.
    mdp_client_set_keep_for_resend (client, true);
    body = sm_body_new (NULL, -1, -1);
    cr_assert_eq (mdp_client_send (client, "echo", &body), 0);
    cr_assert_eq (mdp_client_resend (client), 0);
    reply = mdp_client_recv (client, 10000, &command, NULL);
    cr_assert_not_null (reply, "the resent request got no answer");
    zmsg_destroy (&reply);
    mdp_client_set_keep_for_resend (client, false);
    cr_assert_eq (mdp_client_resend (client), -1);
    mdp_client_destroy (&client);
}

Test (broker_integration, session_affinity_holds_for_1000_requests_and_moves_on_death)
{
    s_broker_spawn ();
    pid_t a = s_worker_spawn ("A", "0");
    pid_t b = s_worker_spawn ("B", "0");
    s_wait_workers (2);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    mdp_client_set_timeout (client, 3000);
    char *bound = s_ask (client, "sess-1000");
    for (int i = 1; i < 1000; i++) {
        char *worker = s_ask (client, "sess-1000");
        cr_assert_str_eq (worker, bound, "request %d went to %s, not %s", i, worker, bound);
        zstr_free (&worker);
    }
    //  Sessionless requests still spread while the session stays pinned.
    int other = 0;
    for (int i = 0; i < 20; i++) {
        char *worker = s_ask (client, NULL);
        other += !streq (worker, bound);
        zstr_free (&worker);
    }
    cr_assert_gt (other, 0, "sessionless requests should use the other worker too");

    sm_kill (streq (bound, "A")? a: b, SIGKILL, 1000);
    char *moved = s_ask (client, "sess-1000");
    cr_assert_str_neq (moved, bound, "session must move when its worker dies");
    for (int i = 0; i < 50; i++) {
        char *worker = s_ask (client, "sess-1000");
        cr_assert_str_eq (worker, moved, "re-bound session must stick too");
        zstr_free (&worker);
    }
    zstr_free (&moved);
    zstr_free (&bound);
    mdp_client_destroy (&client);
}

Test (broker_integration, unknown_service_waits_then_expires_with_error_reply)
{
    s_broker_spawn ();
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 0, 5000));
    mdp_client_t *client = mdp_client_new (s_endpoint);
    mdp_client_set_timeout (client, 3000);
    mdp_client_set_retries (client, 0);
    int64_t start = zclock_mono ();
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    zmsg_t *reply = mdp_client_request (client, "no-such-service", &body);
    int64_t waited = zclock_mono () - start;
    cr_assert_not_null (reply, "expired request got no error reply");
    int64_t status = 0;
    cr_assert_eq (sm_body_int (reply, "status", &status), 0);
    cr_assert_eq (status, 504);
    char *error = sm_body_str (reply, "error");
    cr_assert (error && strstr (error, "no-such-service") && strstr (error, "500 ms"),
               "error text: %s", error);
    cr_assert (waited >= 450 && waited < 2000, "expired after %lld ms", (long long) waited);
    zstr_free (&error);
    zmsg_destroy (&reply);
    mdp_client_destroy (&client);
}

Test (broker_integration, malformed_frames_never_stop_the_broker_process)
{
    pid_t broker = s_broker_spawn ();
    s_worker_spawn ("A", "0");
    s_wait_workers (1);
    zsock_t *raw = zsock_new_dealer (s_endpoint);
    zsock_set_rcvtimeo (raw, 2000);
    struct { const char *what; const char *body; size_t size; } cases [] = {
        { "truncated map", "\x83\xa1v\x01\xa7session", 12 },
        { "wrong type", "\x82\xa1v\x01\xa7session\x92\x01\x02", 14 },
        { "oversized length", "\x81\xa1x\xdd\x7f\xff\xff\xff\x00", 9 },
        { "deep nesting", "\x81\xa1x\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91"
                          "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91"
                          "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\xc0", 44 },
        { "unknown schema version", "\x81\xa1v\xcc\xc8", 5 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        zsock_send (raw, "sbsb", MDPC_CLIENT, "\x01", (size_t) 1, "echo",
                    cases [i].body, cases [i].size);
        zmsg_t *msg = zmsg_recv (raw);
        cr_assert_not_null (msg, "%s: no reply", cases [i].what);
        cr_assert_eq (zmsg_size (msg), 4, "%s: reply frames", cases [i].what);
        for (int f = 0; f < 3; f++) {           //  header, FINAL, service
            zframe_t *frame = zmsg_pop (msg);
            zframe_destroy (&frame);
        }
        int64_t status = 0;
        cr_assert_eq (sm_body_int (msg, "status", &status), 0, "%s", cases [i].what);
        cr_assert_eq (status, 400, "%s: status %lld", cases [i].what, (long long) status);
        zmsg_destroy (&msg);
    }
    //  Garbage MDP headers, truncated commands, a fake worker FINAL.
    zsock_send (raw, "s", "not-mdp");
    zsock_send (raw, "sb", MDPW_WORKER, "\x42", (size_t) 1);
    zsock_send (raw, "sbbss", MDPW_WORKER, "\x04", (size_t) 1, "zz", (size_t) 2, "", "x");
    zsock_send (raw, "b", "", (size_t) 0);
    zclock_sleep (200);
    cr_assert (sm_alive (broker), "broker process died on malformed input");
    mdp_client_t *client = mdp_client_new (s_endpoint);
    char *worker = s_ask (client, NULL);
    cr_assert_str_eq (worker, "A");
    zstr_free (&worker);
    mdp_client_destroy (&client);
    zsock_destroy (&raw);
}

Test (broker_integration, sigterm_stops_the_broker_cleanly)
{
    pid_t broker = s_broker_spawn ();
    s_worker_spawn ("A", "0");
    s_wait_workers (1);
    int status = sm_kill (broker, SIGTERM, 3000);
    cr_assert (WIFEXITED (status), "broker did not exit on SIGTERM (status %d)", status);
    cr_assert_eq (WEXITSTATUS (status), 0);
}

Test (broker_integration, telemetry_proxy_of_the_broker_process)
{
    char xsub [600], xpub [600];
    snprintf (xsub, sizeof xsub, "ipc://%s/tel-in.ipc", s_dir);
    snprintf (xpub, sizeof xpub, "ipc://%s/tel-out.ipc", s_dir);
    cr_assert_gt (sm_spawn (s_log, "splitmesh-broker", "-e", s_endpoint,
                            "--telemetry-xsub", xsub, "--telemetry-xpub", xpub, NULL), 0);
    zsock_t *pub = zsock_new_pub (NULL);
    zsock_connect (pub, "%s", xsub);
    zsock_t *sub = zsock_new_sub (xpub, "metric.");
    char *got = NULL;
    //  Publish until the subscription has travelled up through the proxy.
    for (int i = 0; i < 200 && !got; i++) {
        zsock_send (pub, "ss", "metric.tokens", "42");
        zmq_pollitem_t item = { zsock_resolve (sub), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 25) > 0) {
            char *topic = NULL;
            zsock_recv (sub, "ss", &topic, &got);
            cr_assert_str_eq (topic, "metric.tokens");
            zstr_free (&topic);
        }
    }
    cr_assert_str_eq (got, "42", "nothing came through the telemetry proxy");
    zstr_free (&got);
    zsock_destroy (&pub);
    zsock_destroy (&sub);
}

Test (broker_integration, bad_options_are_refused_with_usage)
{
    pid_t pid = sm_spawn (s_log, "splitmesh-broker", "--heartbeat-ms", "abc", NULL);
    int status = 0;
    cr_assert_eq (sm_wait (pid, 3000, &status), 0);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 2);
    pid = sm_spawn (s_log, "splitmesh-broker", "-e", "tcp://256.0.0.1:1", NULL);
    cr_assert_eq (sm_wait (pid, 3000, &status), 0);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 1, "bind failure must exit 1");
}
