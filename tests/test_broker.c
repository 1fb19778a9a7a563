/*  test_broker.c: the MDP broker actor, in-process over inproc://.

    The broker, echo workers (tests/support/sm_mdp.c) and clients all run in
    the test process as actors, so these tests are fast and can look inside
    the broker (STATS). Each test owns a fresh broker on its own inproc
    endpoint; .fini destroys whatever the test started, even after a failed
    assertion. Real processes are tested in test_broker_integration.c.
*/
#include <criterion/criterion.h>
#include <unistd.h>
#include "mdp_common.h"
#include "mdp_client.h"
#include "mdp_worker.h"
#include "broker.h"
#include "sm_mdp.h"

#define ACTORS_MAX 8

static zactor_t *s_broker;
static zactor_t *s_actors [ACTORS_MAX];
static mdp_worker_t *s_worker;          //  a worker a test drives by hand
static char s_endpoint [64];
static int s_counter;

static void
s_fini (void)
{
    for (int i = 0; i < ACTORS_MAX; i++)
        zactor_destroy (&s_actors [i]);
    mdp_worker_destroy (&s_worker);
    zactor_destroy (&s_broker);
}

//  Starts a broker with fast timers; fields of `base` override defaults.
static void
s_broker_start (broker_config_t *base)
{
    broker_config_t config = { 0 };
    if (base)
        config = *base;
    snprintf (s_endpoint, sizeof s_endpoint, "inproc://broker-%d-%d", getpid (), ++s_counter);
    config.endpoints = s_endpoint;
    if (!config.heartbeat_ms)       config.heartbeat_ms = 100;
    if (!config.liveness)           config.liveness = 3;
    if (!config.request_expiry_ms)  config.request_expiry_ms = 500;
    s_broker = zactor_new (broker_actor, &config);
    cr_assert_not_null (s_broker);
    char *bound = broker_endpoint (s_broker);
    cr_assert_str_eq (bound, s_endpoint);
    zstr_free (&bound);
}

//  Starts an echo worker actor in slot `slot`.
static void
s_echo_start (int slot, const char *service, const char *name, int delay_ms, int capacity)
{
    sm_echo_config_t config = {
        .endpoint = s_endpoint, .service = service, .name = name,
        .delay_ms = delay_ms, .capacity = capacity,
        .heartbeat_ms = 100, .liveness = 3, .reconnect_ms = 50, .reconnect_max_ms = 400
    };
    s_actors [slot] = zactor_new (sm_echo_worker_actor, &config);
    cr_assert_not_null (s_actors [slot]);
}

static broker_stats_t
s_stats (void)
{
    broker_stats_t stats;
    cr_assert_eq (broker_stats (s_broker, &stats), 0);
    return stats;
}

static int64_t
s_status (zmsg_t *reply)
{
    int64_t status = -1;
    cr_assert_not_null (reply, "no reply");
    cr_assert_eq (sm_body_int (reply, "status", &status), 0, "reply has no status");
    return status;
}

//  One request through the client API; returns the reply or fails.
static zmsg_t *
s_call (const char *service, zmsg_t *body, int timeout_ms)
{
    zmsg_t *reply = sm_mdp_call (s_endpoint, service, &body, timeout_ms);
    cr_assert_not_null (reply, "no reply from '%s' within %d ms", service, timeout_ms);
    return reply;
}

//  A raw DEALER for speaking broken MDP at the broker.
static zsock_t *
s_raw (void)
{
    zsock_t *sock = zsock_new_dealer (s_endpoint);
    cr_assert_not_null (sock);
    zsock_set_rcvtimeo (sock, 1000);
    return sock;
}

//  Receives a client FINAL on a raw socket and returns its status.
static int64_t
s_raw_final_status (zsock_t *sock)
{
    zmsg_t *msg = zmsg_recv (sock);
    cr_assert_not_null (msg, "no reply on raw socket");
    cr_assert (zframe_streq (zmsg_first (msg), MDPC_CLIENT), "reply header");
    cr_assert_eq (zframe_data (zmsg_next (msg)) [0], MDPC_FINAL, "not a FINAL");
    zframe_t *header = zmsg_pop (msg);
    zframe_t *command = zmsg_pop (msg);
    zframe_t *service = zmsg_pop (msg);
    zframe_destroy (&header);
    zframe_destroy (&command);
    zframe_destroy (&service);
    int64_t status = s_status (msg);
    char *error = sm_body_str (msg, "error");
    cr_assert (error && *error, "error reply without text");
    zstr_free (&error);
    zmsg_destroy (&msg);
    return status;
}

static bool
s_readable (zsock_t *sock, int timeout_ms)
{
    zmq_pollitem_t item = { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
    return zmq_poll (&item, 1, timeout_ms) > 0;
}

TestSuite (broker, .fini = s_fini, .timeout = 30);

Test (broker, echo_roundtrip_through_client_and_worker_api)
{
    s_broker_start (NULL);
    s_echo_start (0, "echo", "A", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    zframe_t *sent = zframe_dup (zmsg_first (body));
    zmsg_t *reply = s_call ("echo", body, 2000);
    cr_assert_eq (s_status (reply), 200);
    char *worker = sm_body_str (reply, "worker");
    cr_assert_str_eq (worker, "A");
    zstr_free (&worker);
    //  The echo carries our exact body frame back.
    int64_t seq = 0;
    cr_assert_eq (sm_body_int (reply, "seq", &seq), 0);
    cr_assert_eq (seq, 1);
    zframe_destroy (&sent);
    zmsg_destroy (&reply);
    cr_assert_eq (s_stats ().replies, 1);
}

Test (broker, lru_spreads_sequential_load_over_both_workers)
{
    s_broker_start (NULL);
    s_echo_start (0, "echo", "A", 0, 0);
    s_echo_start (1, "echo", "B", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 2, 3000));
    mdp_client_t *client = mdp_client_new (s_endpoint);
    int a = 0, b = 0;
    for (int i = 0; i < 40; i++) {
        zmsg_t *body = sm_body_new (NULL, -1, -1);
        zmsg_t *reply = mdp_client_request (client, "echo", &body);
        cr_assert_not_null (reply);
        char *worker = sm_body_str (reply, "worker");
        a += streq (worker, "A");
        b += streq (worker, "B");
        zstr_free (&worker);
        zmsg_destroy (&reply);
    }
    mdp_client_destroy (&client);
    //  LRU alternates between two idle workers.
    cr_assert (a >= 15 && b >= 15, "unbalanced: A=%d B=%d", a, b);
    cr_assert_eq (a + b, 40);
}

Test (broker, partials_stream_in_order_before_final)
{
    s_broker_start (NULL);
    s_echo_start (0, "echo", "A", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    mdp_client_t *client = mdp_client_new (s_endpoint);
    zmsg_t *body = sm_body_new (NULL, -1, 4);
    cr_assert_eq (mdp_client_send (client, "echo", &body), 0);
    for (int i = 0; i <= 4; i++) {
        int command = 0;
        char *service = NULL;
        zmsg_t *reply = mdp_client_recv (client, 2000, &command, &service);
        cr_assert_not_null (reply, "reply %d missing", i);
        cr_assert_str_eq (service, "echo");
        int64_t part = -1;
        if (i < 4) {
            cr_assert_eq (command, MDPC_PARTIAL, "reply %d not PARTIAL", i);
            cr_assert_eq (sm_body_int (reply, "part", &part), 0);
            cr_assert_eq (part, i);
        }
        else
            cr_assert_eq (command, MDPC_FINAL);
        zstr_free (&service);
        zmsg_destroy (&reply);
    }
    mdp_client_destroy (&client);
}

Test (broker, capacity_keeps_n_requests_in_flight)
{
    s_broker_start (NULL);
    s_echo_start (0, "batch", "A", 300, 4);     //  4 slots, 300 ms each
    cr_assert (sm_mdp_wait_workers (s_endpoint, "batch", 1, 3000));
    mdp_client_t *clients [4];
    int64_t start = zclock_mono ();
    for (int i = 0; i < 4; i++) {
        clients [i] = mdp_client_new (s_endpoint);
        zmsg_t *body = sm_body_new (NULL, -1, -1);
        cr_assert_eq (mdp_client_send (clients [i], "batch", &body), 0);
    }
    for (int i = 0; i < 4; i++) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (clients [i], 3000, &command, NULL);
        cr_assert_not_null (reply);
        cr_assert_eq (command, MDPC_FINAL);
        zmsg_destroy (&reply);
        mdp_client_destroy (&clients [i]);
    }
    int64_t elapsed = zclock_mono () - start;
    //  Served together: ~300 ms, where one slot would take 1200 ms.
    cr_assert (elapsed < 900, "4 requests on capacity 4 took %lld ms", (long long) elapsed);
}

Test (broker, capacity_one_serialises_requests)
{
    s_broker_start (NULL);
    s_echo_start (0, "serial", "A", 150, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "serial", 1, 3000));
    mdp_client_t *clients [3];
    int64_t start = zclock_mono ();
    for (int i = 0; i < 3; i++) {
        clients [i] = mdp_client_new (s_endpoint);
        zmsg_t *body = sm_body_new (NULL, -1, -1);
        cr_assert_eq (mdp_client_send (clients [i], "serial", &body), 0);
    }
    for (int i = 0; i < 3; i++) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (clients [i], 3000, &command, NULL);
        cr_assert_not_null (reply);
        zmsg_destroy (&reply);
        mdp_client_destroy (&clients [i]);
    }
    int64_t elapsed = zclock_mono () - start;
    cr_assert (elapsed >= 430, "3 x 150 ms on one slot took only %lld ms", (long long) elapsed);
}

Test (broker, session_sticks_to_worker_and_moves_when_it_leaves)
{
    s_broker_start (NULL);
    s_echo_start (0, "echo", "A", 0, 0);
    s_echo_start (1, "echo", "B", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 2, 3000));
    mdp_client_t *client = mdp_client_new (s_endpoint);
    char first [8] = "";
    for (int i = 0; i < 100; i++) {
        zmsg_t *body = sm_body_new ("s-1", -1, -1);
        zmsg_t *reply = mdp_client_request (client, "echo", &body);
        cr_assert_not_null (reply);
        char *worker = sm_body_str (reply, "worker");
        if (i == 0)
            snprintf (first, sizeof first, "%s", worker);
        cr_assert_str_eq (worker, first, "request %d left its session's worker", i);
        zstr_free (&worker);
        zmsg_destroy (&reply);
    }
    cr_assert_eq (s_stats ().sessions, 1);
    //  The bound worker leaves (DISCONNECT): the session moves.
    zactor_destroy (&s_actors [streq (first, "A")? 0: 1]);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    zmsg_t *body = sm_body_new ("s-1", -1, -1);
    zmsg_t *reply = mdp_client_request (client, "echo", &body);
    cr_assert_not_null (reply);
    char *worker = sm_body_str (reply, "worker");
    cr_assert_str_neq (worker, first);
    zstr_free (&worker);
    zmsg_destroy (&reply);
    mdp_client_destroy (&client);
}

Test (broker, sessions_are_per_service_and_bounded)
{
    broker_config_t config = { .max_sessions = 4 };
    s_broker_start (&config);
    s_echo_start (0, "echo", "A", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    for (int i = 0; i < 10; i++) {
        char session [16];
        snprintf (session, sizeof session, "s-%d", i);
        zmsg_t *reply = s_call ("echo", sm_body_new (session, -1, -1), 2000);
        zmsg_destroy (&reply);
    }
    cr_assert_eq (s_stats ().sessions, 4, "oldest bindings must be evicted");
}

Test (broker, requests_of_a_dead_worker_go_to_another)
{
    s_broker_start (NULL);
    //  A fake worker that registers, takes a request and then goes silent:
    //  no heartbeat, no reply, like a process frozen or killed.
    zsock_t *fake = s_raw ();
    zsock_send (fake, "sbs", MDPW_WORKER, "\x01", (size_t) 1, "echo");
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    mdp_client_t *client = mdp_client_new (s_endpoint);
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    cr_assert_eq (mdp_client_send (client, "echo", &body), 0);
    //  The fake gets it (skip heartbeats).
    bool got_request = false;
    for (int i = 0; i < 20 && !got_request; i++) {
        zmsg_t *msg = zmsg_recv (fake);
        cr_assert_not_null (msg);
        zmsg_first (msg);
        zframe_t *command = zmsg_next (msg);
        got_request = zframe_data (command) [0] == MDPW_REQUEST;
        zmsg_destroy (&msg);
    }
    cr_assert (got_request);
    s_echo_start (0, "echo", "B", 0, 0);
    int64_t start = zclock_mono ();
    int command = 0;
    zmsg_t *reply = mdp_client_recv (client, 3000, &command, NULL);
    cr_assert_not_null (reply, "request was lost with its worker");
    cr_assert_eq (command, MDPC_FINAL);
    char *worker = sm_body_str (reply, "worker");
    cr_assert_str_eq (worker, "B");
    zstr_free (&worker);
    //  Liveness window: 3 x 100 ms, plus scheduling slack.
    cr_assert (zclock_mono () - start < 1500);
    broker_stats_t stats = s_stats ();
    cr_assert_eq (stats.requeued, 1);
    cr_assert_eq (stats.workers_lost, 1);
    zmsg_destroy (&reply);
    mdp_client_destroy (&client);
    zsock_destroy (&fake);
}

Test (broker, unknown_service_waits_then_expires_with_504)
{
    s_broker_start (NULL);      //  expiry 500 ms
    mdp_client_t *client = mdp_client_new (s_endpoint);
    mdp_client_set_timeout (client, 3000);
    mdp_client_set_retries (client, 0);
    int64_t start = zclock_mono ();
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    zmsg_t *reply = mdp_client_request (client, "nobody", &body);
    int64_t waited = zclock_mono () - start;
    cr_assert_eq (s_status (reply), 504);
    char *error = sm_body_str (reply, "error");
    cr_assert (error && strstr (error, "'nobody'"), "error: %s", error);
    zstr_free (&error);
    cr_assert (waited >= 450 && waited < 1500, "expired after %lld ms", (long long) waited);
    cr_assert_eq (s_stats ().expired, 1);
    zmsg_destroy (&reply);
    mdp_client_destroy (&client);
}

Test (broker, queued_request_is_served_when_a_worker_arrives)
{
    broker_config_t config = { .request_expiry_ms = 3000 };
    s_broker_start (&config);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    cr_assert_eq (mdp_client_send (client, "late", &body), 0);
    for (int i = 0; i < 100 && s_stats ().queued < 1; i++)
        zclock_sleep (5);
    cr_assert_eq (s_stats ().queued, 1);
    s_echo_start (0, "late", "L", 0, 0);
    int command = 0;
    zmsg_t *reply = mdp_client_recv (client, 3000, &command, NULL);
    cr_assert_eq (s_status (reply), 200);
    zmsg_destroy (&reply);
    mdp_client_destroy (&client);
}

Test (broker, malformed_client_requests_get_400_and_broker_keeps_serving)
{
    s_broker_start (NULL);
    s_echo_start (0, "echo", "A", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    zsock_t *raw = s_raw ();
    char long_name [300];
    memset (long_name, 's', sizeof long_name - 1);
    long_name [sizeof long_name - 1] = '\0';
    //  Truncated: header only; header + command; no body.
    zsock_send (raw, "s", MDPC_CLIENT);
    cr_assert_eq (s_raw_final_status (raw), 400);
    zsock_send (raw, "sb", MDPC_CLIENT, "\x01", (size_t) 1);
    cr_assert_eq (s_raw_final_status (raw), 400);
    zsock_send (raw, "sbs", MDPC_CLIENT, "\x01", (size_t) 1, "echo");
    cr_assert_eq (s_raw_final_status (raw), 400);
    //  Wrong command bytes: a client sending FINAL, a two-byte command.
    zsock_send (raw, "sbss", MDPC_CLIENT, "\x03", (size_t) 1, "echo", "x");
    cr_assert_eq (s_raw_final_status (raw), 400);
    zsock_send (raw, "sbss", MDPC_CLIENT, "\x01\x01", (size_t) 2, "echo", "x");
    cr_assert_eq (s_raw_final_status (raw), 400);
    //  Oversized service name.
    zsock_send (raw, "sbss", MDPC_CLIENT, "\x01", (size_t) 1, long_name, "x");
    cr_assert_eq (s_raw_final_status (raw), 400);
    //  Body maps: truncated, oversized length, deep nesting, bad version,
    //  session of the wrong type.
    const char *bodies [] = {
        "\x82\xa1v\x01", "\xdf\xff\xff\xff\xff",
        "\x81\xa1x\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91"
            "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x00",
        "\x81\xa1v\x63", "\x81\xa7session\xc3"
    };
    size_t sizes [] = { 4, 5, 3 + 34 + 1, 4, 10 };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies [0]; i++) {
        zsock_send (raw, "sbsb", MDPC_CLIENT, "\x01", (size_t) 1, "echo", bodies [i], sizes [i]);
        cr_assert_eq (s_raw_final_status (raw), 400, "body %zu", i);
    }
    broker_stats_t stats = s_stats ();
    cr_assert_eq (stats.errors, 11);
    cr_assert_eq (stats.requests, 0, "no malformed request may reach a worker");
    //  Still serving.
    zmsg_t *reply = s_call ("echo", sm_body_new (NULL, -1, -1), 2000);
    cr_assert_eq (s_status (reply), 200);
    zmsg_destroy (&reply);
    zsock_destroy (&raw);
}

Test (broker, garbage_headers_are_dropped_and_broker_keeps_serving)
{
    s_broker_start (NULL);
    s_echo_start (0, "echo", "A", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    zsock_t *raw = s_raw ();
    zsock_send (raw, "s", "HELLO");
    zsock_send (raw, "ss", "", "MDPC02");           //  REQ-style delimiter
    zsock_send (raw, "sbss", "MDPC01", "\x01", (size_t) 1, "echo", "x");  //  MDP/0.1
    zsock_send (raw, "b", "\x00\xff", (size_t) 2);
    cr_assert (!s_readable (raw, 300), "garbage got a reply");
    for (int i = 0; i < 100 && s_stats ().dropped < 4; i++)
        zclock_sleep (5);
    cr_assert_eq (s_stats ().dropped, 4);
    zmsg_t *reply = s_call ("echo", sm_body_new (NULL, -1, -1), 2000);
    cr_assert_eq (s_status (reply), 200);
    zmsg_destroy (&reply);
    zsock_destroy (&raw);
}

//  Expects a DISCONNECT on a raw worker socket, skipping heartbeats.
static void
s_expect_disconnect (zsock_t *raw)
{
    for (int i = 0; i < 20; i++) {
        zmsg_t *msg = zmsg_recv (raw);
        cr_assert_not_null (msg, "no DISCONNECT");
        cr_assert (zframe_streq (zmsg_first (msg), MDPW_WORKER));
        int cmd = zframe_data (zmsg_next (msg)) [0];
        zmsg_destroy (&msg);
        if (cmd == MDPW_DISCONNECT)
            return;
        cr_assert_eq (cmd, MDPW_HEARTBEAT, "unexpected command %d", cmd);
    }
    cr_assert_fail ("no DISCONNECT after 20 messages");
}

Test (broker, protocol_breaking_workers_are_disconnected)
{
    s_broker_start (NULL);
    //  Unknown command byte from a registered worker.
    zsock_t *raw = s_raw ();
    zsock_send (raw, "sbs", MDPW_WORKER, "\x01", (size_t) 1, "svc");
    cr_assert (sm_mdp_wait_workers (s_endpoint, "svc", 1, 3000));
    zsock_send (raw, "sb", MDPW_WORKER, "\x09", (size_t) 1);
    s_expect_disconnect (raw);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "svc", 0, 1000));
    zsock_destroy (&raw);
    //  Heartbeat and FINAL from a worker the broker never saw.
    raw = s_raw ();
    zsock_send (raw, "sb", MDPW_WORKER, "\x05", (size_t) 1);
    s_expect_disconnect (raw);
    zsock_send (raw, "sbbss", MDPW_WORKER, "\x04", (size_t) 1, "abc", (size_t) 3, "", "x");
    s_expect_disconnect (raw);
    zsock_destroy (&raw);
    //  READY for a reserved name, with a bad capacity frame, or twice.
    raw = s_raw ();
    zsock_send (raw, "sbs", MDPW_WORKER, "\x01", (size_t) 1, "mmi.evil");
    s_expect_disconnect (raw);
    zsock_send (raw, "sbsb", MDPW_WORKER, "\x01", (size_t) 1, "svc", "\x81\xa1v\x01", (size_t) 4);
    s_expect_disconnect (raw);
    zsock_send (raw, "sbs", MDPW_WORKER, "\x01", (size_t) 1, "svc");
    zsock_send (raw, "sbs", MDPW_WORKER, "\x01", (size_t) 1, "svc");
    s_expect_disconnect (raw);
    zsock_destroy (&raw);
    //  FINAL without the envelope delimiter from a live worker: dropped.
    raw = s_raw ();
    zsock_send (raw, "sbs", MDPW_WORKER, "\x01", (size_t) 1, "svc2");
    cr_assert (sm_mdp_wait_workers (s_endpoint, "svc2", 1, 3000));
    uint64_t dropped = s_stats ().dropped;
    zsock_send (raw, "sb", MDPW_WORKER, "\x04", (size_t) 1);
    for (int i = 0; i < 100 && s_stats ().dropped < dropped + 1; i++)
        zclock_sleep (5);
    cr_assert_eq (s_stats ().dropped, dropped + 1);
    zsock_destroy (&raw);
    //  Broker still serves MMI.
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, "svc2");
    zmsg_t *reply = sm_mdp_call (s_endpoint, "mmi.service", &body, 2000);
    cr_assert_not_null (reply);
    zmsg_destroy (&reply);
}

Test (broker, mmi_service_answers_200_404_501)
{
    s_broker_start (NULL);
    s_echo_start (0, "echo", "A", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    const char *asks [][3] = {
        { "mmi.service", "echo", "200" },
        { "mmi.service", "nope", "404" },
        { "mmi.workers", "echo", "1" },
        { "mmi.bogus", "echo", "501" }
    };
    for (int i = 0; i < 4; i++) {
        zmsg_t *body = zmsg_new ();
        zmsg_addstr (body, asks [i][1]);
        zmsg_t *reply = s_call (asks [i][0], body, 2000);
        char *answer = zmsg_popstr (reply);
        cr_assert_str_eq (answer, asks [i][2], "%s %s", asks [i][0], asks [i][1]);
        zstr_free (&answer);
        zmsg_destroy (&reply);
    }
}

Test (broker, full_queue_answers_429_busy)
{
    broker_config_t config = { .max_queue_service = 2, .request_expiry_ms = 5000 };
    s_broker_start (&config);
    mdp_client_t *clients [3];
    for (int i = 0; i < 3; i++) {
        clients [i] = mdp_client_new (s_endpoint);
        zmsg_t *body = sm_body_new (NULL, -1, -1);
        cr_assert_eq (mdp_client_send (clients [i], "nobody", &body), 0);
        zclock_sleep (20);
    }
    int command = 0;
    zmsg_t *reply = mdp_client_recv (clients [2], 2000, &command, NULL);
    cr_assert_eq (s_status (reply), 429);
    zmsg_destroy (&reply);
    cr_assert_eq (s_stats ().queued, 2);
    for (int i = 0; i < 3; i++)
        mdp_client_destroy (&clients [i]);
}

Test (broker, telemetry_proxy_forwards_publications)
{
    char xsub [64], xpub [64];
    snprintf (xsub, sizeof xsub, "inproc://tel-in-%d", getpid ());
    snprintf (xpub, sizeof xpub, "inproc://tel-out-%d", getpid ());
    broker_config_t config = { .telemetry_xsub = xsub, .telemetry_xpub = xpub };
    s_broker_start (&config);
    zsock_t *pub = zsock_new_pub (NULL);
    zsock_connect (pub, "%s", xsub);
    zsock_t *sub = zsock_new_sub (xpub, "metrics");
    cr_assert_not_null (sub);
    //  Subscriptions travel upstream asynchronously: publish until seen.
    char *got = NULL;
    for (int i = 0; i < 100 && !got; i++) {
        zsock_send (pub, "ss", "metrics", "broker_up 1");
        zsock_send (pub, "ss", "other", "ignored");
        if (s_readable (sub, 20)) {
            char *topic = NULL;
            zsock_recv (sub, "ss", &topic, &got);
            cr_assert_str_eq (topic, "metrics");
            zstr_free (&topic);
        }
    }
    cr_assert_str_eq (got, "broker_up 1");
    zstr_free (&got);
    zsock_destroy (&pub);
    zsock_destroy (&sub);
}

Test (broker, worker_reregisters_after_broker_restart)
{
    s_broker_start (NULL);
    mdp_worker_options_t options = {
        .heartbeat_ms = 100, .liveness = 3, .reconnect_ms = 50, .reconnect_max_ms = 200
    };
    s_worker = mdp_worker_new (s_endpoint, "echo", &options);
    mdp_worker_t *worker = s_worker;
    cr_assert_not_null (worker);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    cr_assert_eq (mdp_worker_connects (worker), 1);
    //  Replace the broker on the same endpoint.
    zactor_destroy (&s_broker);
    broker_config_t config = { .heartbeat_ms = 100, .liveness = 3, .request_expiry_ms = 3000,
                               .endpoints = s_endpoint };
    //  The old ROUTER closes asynchronously: its inproc name may be taken
    //  for a moment, so retry the bind as a restarted process would.
    for (int i = 0; i < 100; i++) {
        s_broker = zactor_new (broker_actor, &config);
        char *bound = broker_endpoint (s_broker);
        bool ok = bound && *bound;
        zstr_free (&bound);
        if (ok)
            break;
        zactor_destroy (&s_broker);
        zclock_sleep (20);
    }
    cr_assert_not_null (s_broker, "could not rebind %s", s_endpoint);
    int64_t start = zclock_mono ();
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 5000), "worker did not come back");
    cr_assert (zclock_mono () - start < 5000);
    cr_assert_geq (mdp_worker_connects (worker), 2);
    //  And serves: answer one request by hand through the worker API.
    mdp_client_t *client = mdp_client_new (s_endpoint);
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    mdp_client_send (client, "echo", &body);
    zframe_t *address = NULL;
    zmsg_t *request = mdp_worker_recv (worker, 2000, &address);
    cr_assert_not_null (request);
    zmsg_t *answer = zmsg_new ();
    zmsg_addstr (answer, "done");
    cr_assert_eq (mdp_worker_send_final (worker, address, &answer), 0);
    int command = 0;
    zmsg_t *reply = mdp_client_recv (client, 2000, &command, NULL);
    cr_assert_not_null (reply);
    char *text = zmsg_popstr (reply);
    cr_assert_str_eq (text, "done");
    zstr_free (&text);
    zmsg_destroy (&reply);
    zmsg_destroy (&request);
    zframe_destroy (&address);
    mdp_client_destroy (&client);
    mdp_worker_destroy (&s_worker);
    mdp_worker_destroy (&s_worker);     //  second destroy is harmless
    cr_assert_null (s_worker);
}

Test (broker, client_request_retries_on_fresh_sockets_then_gives_up)
{
    broker_config_t config = { .request_expiry_ms = 10000 };
    s_broker_start (&config);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    mdp_client_set_timeout (client, 150);
    mdp_client_set_retries (client, 2);
    mdp_client_set_backoff (client, 20, 40);
    int64_t start = zclock_mono ();
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    zmsg_t *reply = mdp_client_request (client, "nobody", &body);
    int64_t elapsed = zclock_mono () - start;
    cr_assert_null (reply);
    cr_assert_eq (mdp_client_connects (client), 3, "each retry uses a fresh socket");
    cr_assert (elapsed >= 450 + 60 && elapsed < 2000, "took %lld ms", (long long) elapsed);
    cr_assert_eq (s_stats ().requests, 3);
    mdp_client_destroy (&client);
}

Test (broker, apis_reject_invalid_arguments)
{
    s_broker_start (NULL);
    cr_assert_null (mdp_worker_new ("bogus://x", "svc", NULL));
    cr_assert_null (mdp_worker_new (s_endpoint, "", NULL));
    mdp_worker_options_t options = { .capacity = MDP_CAPACITY_MAX + 1 };
    cr_assert_null (mdp_worker_new (s_endpoint, "svc", &options));
    cr_assert_null (mdp_client_new ("bogus://x"));
    mdp_client_t *client = mdp_client_new (s_endpoint);
    char long_name [MDP_SERVICE_MAX + 2];
    memset (long_name, 'n', sizeof long_name - 1);
    long_name [sizeof long_name - 1] = '\0';
    zmsg_t *body = zmsg_new ();
    cr_assert_eq (mdp_client_send (client, long_name, &body), -1);
    cr_assert_null (body, "body ownership taken even on error");
    mdp_client_destroy (&client);
    mdp_client_destroy (&client);
    cr_assert_null (client);
}

Test (broker, bind_failure_is_reported)
{
    broker_config_t config = { .endpoints = "tcp://256.1.1.1:1" };
    s_broker = zactor_new (broker_actor, &config);
    char *bound = broker_endpoint (s_broker);
    cr_assert_str_eq (bound, "");
    zstr_free (&bound);
}

Test (broker, idle_services_are_forgotten_and_send_mem_works)
{
    s_broker_start (NULL);      //  expiry 500 ms
    mdp_client_t *client = mdp_client_new (s_endpoint);
    //  Requests to 5 made-up services: each expires, then its service goes.
    for (int i = 0; i < 5; i++) {
        char name [32];
        snprintf (name, sizeof name, "made-up-%d", i);
        cr_assert_eq (mdp_client_send_mem (client, name, "\x81\xa1v\x01", 4), 0);
    }
    //  The requests travel the socket while STATS travels the pipe: poll.
    for (int i = 0; i < 100 && s_stats ().services < 5; i++)
        zclock_sleep (5);
    cr_assert_eq (s_stats ().services, 5);
    for (int i = 0; i < 5; i++) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (client, 2000, &command, NULL);
        cr_assert_eq (s_status (reply), 504);
        zmsg_destroy (&reply);
    }
    zclock_sleep (150);         //  a few timer ticks
    cr_assert_eq (s_stats ().services, 0, "expired services must be forgotten");
    mdp_client_destroy (&client);
}

Test (broker, worker_heartbeats_and_backs_off_when_broker_is_silent)
{
    //  A "broker" that accepts but never answers: the worker must heartbeat,
    //  declare it dead after liveness x heartbeat, and reconnect on a new
    //  socket (new identity) with a growing back-off.
    snprintf (s_endpoint, sizeof s_endpoint, "inproc://silent-%d", getpid ());
    zsock_t *router = zsock_new_router (s_endpoint);
    cr_assert_not_null (router);
    mdp_worker_options_t options = {
        .heartbeat_ms = 50, .liveness = 3, .reconnect_ms = 40, .reconnect_max_ms = 320
    };
    s_worker = mdp_worker_new (s_endpoint, "svc", &options);
    cr_assert_not_null (s_worker);
    int64_t readies [8];
    int ready_count = 0, heartbeats = 0;
    zframe_t *last_identity = NULL;
    int64_t deadline = zclock_mono () + 3000;
    while (ready_count < 5 && zclock_mono () < deadline) {
        if (!s_readable (router, 100))
            continue;
        zmsg_t *msg = zmsg_recv (router);
        zframe_t *identity = zmsg_pop (msg);
        zframe_t *header = zmsg_pop (msg);
        zframe_t *command = zmsg_pop (msg);
        cr_assert (zframe_streq (header, MDPW_WORKER));
        if (zframe_data (command) [0] == MDPW_READY) {
            cr_assert (!last_identity || !zframe_eq (identity, last_identity),
                       "reconnect must use a fresh socket");
            zframe_destroy (&last_identity);
            last_identity = zframe_dup (identity);
            readies [ready_count++] = zclock_mono ();
        }
        else
        if (zframe_data (command) [0] == MDPW_HEARTBEAT)
            heartbeats++;
        zframe_destroy (&identity);
        zframe_destroy (&header);
        zframe_destroy (&command);
        zmsg_destroy (&msg);
    }
    zframe_destroy (&last_identity);
    cr_assert_eq (ready_count, 5, "worker reconnected only %d times", ready_count - 1);
    cr_assert_geq (heartbeats, 4, "worker sent %d heartbeats", heartbeats);
    //  Gaps: liveness (150 ms) + back-off 40, 80, 160, 320 ms.
    int64_t first = readies [1] - readies [0], last = readies [4] - readies [3];
    cr_assert (first >= 150 && last >= first + 150,
               "back-off did not grow: first gap %lld ms, last %lld ms",
               (long long) first, (long long) last);
    cr_assert_eq (mdp_worker_connects (s_worker), 5);
    mdp_worker_destroy (&s_worker);
    zsock_destroy (&router);
}

Test (broker, busy_bound_worker_holds_its_session_without_blocking_others)
{
    s_broker_start (NULL);
    s_echo_start (0, "echo", "A", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 1, 3000));
    //  Bind session "s" to A while A is the only worker.
    zmsg_t *reply = s_call ("echo", sm_body_new ("s", -1, -1), 2000);
    zmsg_destroy (&reply);
    s_echo_start (1, "echo", "B", 0, 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 2, 3000));
    //  A busy for 400 ms with a session request; a second one for the same
    //  session must wait for A; a sessionless one must not wait behind it.
    mdp_client_t *busy = mdp_client_new (s_endpoint);
    mdp_client_t *pinned = mdp_client_new (s_endpoint);
    mdp_client_t *free_client = mdp_client_new (s_endpoint);
    zmsg_t *body = sm_body_new ("s", 400, -1);
    mdp_client_send (busy, "echo", &body);
    zclock_sleep (50);
    body = sm_body_new ("s", 0, -1);
    mdp_client_send (pinned, "echo", &body);
    zclock_sleep (50);
    int64_t start = zclock_mono ();
    body = sm_body_new (NULL, 0, -1);
    mdp_client_send (free_client, "echo", &body);
    int command = 0;
    reply = mdp_client_recv (free_client, 2000, &command, NULL);
    cr_assert_not_null (reply);
    char *worker = sm_body_str (reply, "worker");
    cr_assert_str_eq (worker, "B");
    cr_assert (zclock_mono () - start < 250, "sessionless request waited behind a session");
    zstr_free (&worker);
    zmsg_destroy (&reply);
    reply = mdp_client_recv (pinned, 2000, &command, NULL);
    cr_assert_not_null (reply);
    worker = sm_body_str (reply, "worker");
    cr_assert_str_eq (worker, "A", "session request left its busy worker");
    zstr_free (&worker);
    zmsg_destroy (&reply);
    reply = mdp_client_recv (busy, 2000, &command, NULL);
    cr_assert_not_null (reply);
    zmsg_destroy (&reply);
    mdp_client_destroy (&busy);
    mdp_client_destroy (&pinned);
    mdp_client_destroy (&free_client);
}

Test (broker, large_multi_frame_bodies_pass_intact)
{
    s_broker_start (NULL);
    mdp_worker_options_t options = { .heartbeat_ms = 100 };
    s_worker = mdp_worker_new (s_endpoint, "big", &options);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "big", 1, 3000));
    //  A 4 MiB activation-sized frame plus a second frame.
    size_t size = 4 << 20;
    uint8_t *data = (uint8_t *) malloc (size);
    for (size_t i = 0; i < size; i++)
        data [i] = (uint8_t) (i * 2654435761u >> 24);
    mdp_client_t *client = mdp_client_new (s_endpoint);
    zmsg_t *body = zmsg_new ();
    zmsg_addmem (body, data, size);
    zmsg_addstr (body, "tail");
    cr_assert_eq (mdp_client_send (client, "big", &body), 0);
    zframe_t *address = NULL;
    zmsg_t *request = mdp_worker_recv (s_worker, 3000, &address);
    cr_assert_not_null (request);
    cr_assert_eq (zmsg_size (request), 2);
    cr_assert_eq (zframe_size (zmsg_first (request)), size);
    cr_assert (memcmp (zframe_data (zmsg_first (request)), data, size) == 0, "body changed");
    cr_assert (zframe_streq (zmsg_last (request), "tail"));
    cr_assert_eq (mdp_worker_send_final (s_worker, address, &request), 0);
    int command = 0;
    zmsg_t *reply = mdp_client_recv (client, 3000, &command, NULL);
    cr_assert_not_null (reply);
    cr_assert_eq (zmsg_size (reply), 2);
    cr_assert (memcmp (zframe_data (zmsg_first (reply)), data, size) == 0, "reply changed");
    zmsg_destroy (&reply);
    zframe_destroy (&address);
    free (data);
    mdp_client_destroy (&client);
}
