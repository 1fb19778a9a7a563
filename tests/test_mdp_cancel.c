/*  test_mdp_cancel.c: the broker's cancel extension (broker.h, mdp_common.h).

    A broker actor on inproc://, the test as client and worker. When a
    client that gets PARTIALs goes away, the broker must tell a worker that
    declared "cancel":true in its READY (mdp_worker does) with CANCEL, so
    mdp_worker_cancelled says true; it must not send CANCEL to a plain
    RFC 18 worker; either way the FINAL still frees the worker's slot and
    the next request is served. gateway_cancel shows the same through a
    whole mesh.
*/
#include <criterion/criterion.h>
#include "broker.h"
#include "mdp_common.h"
#include "mdp_worker.h"

static zactor_t *s_broker;
static char s_endpoint [128];

static void
s_fini (void)
{
    zactor_destroy (&s_broker);
}

TestSuite (mdp_cancel, .fini = s_fini, .timeout = 30);

static void
s_broker_start (void)
{
    snprintf (s_endpoint, sizeof s_endpoint, "inproc://cancel-%d", getpid ());
    broker_config_t config = { .endpoints = s_endpoint, .heartbeat_ms = 100, .liveness = 3,
                               .request_expiry_ms = 2000 };
    s_broker = zactor_new (broker_actor, &config);
    cr_assert_not_null (s_broker);
}

//  A client DEALER that has sent one REQUEST for service "gen".
static zsock_t *
s_client_request (const char *text)
{
    zsock_t *client = zsock_new_dealer (s_endpoint);
    cr_assert_not_null (client);
    zsock_set_rcvtimeo (client, 3000);
    uint8_t cmd = MDPC_REQUEST;
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, MDPC_CLIENT);
    zmsg_addmem (msg, &cmd, 1);
    zmsg_addstr (msg, "gen");
    zmsg_addstr (msg, text);
    cr_assert_eq (zmsg_send (&msg, client), 0);
    return client;
}

//  The client's next reply's command byte (PARTIAL/FINAL), or -1.
static int
s_client_recv (zsock_t *client)
{
    zmsg_t *reply = zmsg_recv (client);
    if (!reply)
        return -1;
    zmsg_first (reply);
    zframe_t *command = zmsg_next (reply);
    int cmd = command && zframe_size (command) == 1? zframe_data (command) [0]: -1;
    zmsg_destroy (&reply);
    return cmd;
}

static zmsg_t *
s_text (const char *text)
{
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, text);
    return body;
}

Test (mdp_cancel, a_departed_client_cancels_on_a_cancel_aware_worker)
{
    s_broker_start ();
    mdp_worker_options_t options = { .heartbeat_ms = 100 };
    mdp_worker_t *worker = mdp_worker_new (s_endpoint, "gen", &options);
    cr_assert_not_null (worker);
    zsock_t *client = s_client_request ("long job");
    zframe_t *address = NULL;
    zmsg_t *request = mdp_worker_recv (worker, 3000, &address);
    cr_assert_not_null (request);
    zmsg_destroy (&request);
    zmsg_t *body = s_text ("piece");
    mdp_worker_send_partial (worker, address, &body);
    cr_assert_eq (s_client_recv (client), MDPC_PARTIAL);
    cr_assert_not (mdp_worker_cancelled (worker, address));
    zsock_destroy (&client);

    //  The worker streams on; the next PARTIALs find no client.
    bool cancelled = false;
    for (int i = 0; i < 150 && !cancelled; i++) {
        body = s_text ("piece");
        mdp_worker_send_partial (worker, address, &body);
        zclock_sleep (20);
        cancelled = mdp_worker_cancelled (worker, address);
    }
    cr_assert (cancelled, "no CANCEL reached the worker within 3 s");
    broker_stats_t stats;
    cr_assert_eq (broker_stats (s_broker, &stats), 0);
    cr_assert_eq (stats.cancelled, 1);

    //  The FINAL ends it: the flag clears and the slot is free again.
    body = s_text ("end");
    mdp_worker_send_final (worker, address, &body);
    for (int i = 0; i < 100 && mdp_worker_cancelled (worker, address); i++)
        zclock_sleep (10);
    cr_assert_not (mdp_worker_cancelled (worker, address));
    zframe_destroy (&address);
    client = s_client_request ("next");
    request = mdp_worker_recv (worker, 3000, &address);
    cr_assert_not_null (request, "the worker's slot was not freed by the FINAL");
    zmsg_destroy (&request);
    body = s_text ("done");
    mdp_worker_send_final (worker, address, &body);
    cr_assert_eq (s_client_recv (client), MDPC_FINAL);
    cr_assert_not (mdp_worker_cancelled (worker, address));
    zframe_destroy (&address);
    zsock_destroy (&client);
    mdp_worker_destroy (&worker);
}

//  A raw MDP/0.2 worker: READY without the extension frame.
Test (mdp_cancel, a_plain_rfc18_worker_gets_no_cancel)
{
    s_broker_start ();
    zsock_t *worker = zsock_new_dealer (s_endpoint);
    cr_assert_not_null (worker);
    zsock_set_rcvtimeo (worker, 3000);
    uint8_t ready = MDPW_READY;
    zsock_send (worker, "sbs", MDPW_WORKER, &ready, (size_t) 1, "gen");
    zsock_t *client = s_client_request ("job");
    //  [MDPW02][REQUEST][client][""][body]
    zmsg_t *msg = zmsg_recv (worker);
    cr_assert_not_null (msg);
    zmsg_first (msg);
    zframe_t *command = zmsg_next (msg);
    cr_assert (command && zframe_data (command) [0] == MDPW_REQUEST);
    zframe_t *address = zframe_dup (zmsg_next (msg));
    zmsg_destroy (&msg);
    zsock_destroy (&client);
    //  PARTIALs into the void, then watch what the broker sends for 500 ms.
    for (int i = 0; i < 5; i++) {
        msg = s_text ("piece");
        zmsg_pushmem (msg, "", 0);
        zmsg_pushmem (msg, zframe_data (address), zframe_size (address));
        uint8_t partial = MDPW_PARTIAL;
        zmsg_pushmem (msg, &partial, 1);
        zmsg_pushstr (msg, MDPW_WORKER);
        zmsg_send (&msg, worker);
        zclock_sleep (20);
    }
    zsock_set_rcvtimeo (worker, 100);
    int64_t end = zclock_mono () + 500;
    uint8_t heartbeat = MDPW_HEARTBEAT;
    while (zclock_mono () < end) {
        zsock_send (worker, "sb", MDPW_WORKER, &heartbeat, (size_t) 1);    //  stay alive
        msg = zmsg_recv (worker);
        if (!msg)
            continue;
        zmsg_first (msg);
        command = zmsg_next (msg);
        cr_assert (command && zframe_data (command) [0] == MDPW_HEARTBEAT,
                   "a plain worker got command %d", command? zframe_data (command) [0]: -1);
        zmsg_destroy (&msg);
    }
    broker_stats_t stats;
    cr_assert_eq (broker_stats (s_broker, &stats), 0);
    cr_assert_eq (stats.cancelled, 1, "the departed client was not noticed");
    //  FINAL frees the slot: the next request arrives.
    msg = s_text ("end");
    zmsg_pushmem (msg, "", 0);
    zmsg_pushmem (msg, zframe_data (address), zframe_size (address));
    uint8_t final = MDPW_FINAL;
    zmsg_pushmem (msg, &final, 1);
    zmsg_pushstr (msg, MDPW_WORKER);
    zmsg_send (&msg, worker);
    zframe_destroy (&address);
    client = s_client_request ("next");
    zsock_set_rcvtimeo (worker, 3000);
    bool got_request = false;
    while (!got_request && (msg = zmsg_recv (worker))) {
        zmsg_first (msg);
        command = zmsg_next (msg);
        got_request = command && zframe_data (command) [0] == MDPW_REQUEST;
        zmsg_destroy (&msg);
    }
    cr_assert (got_request, "the plain worker's slot was not freed by its FINAL");
    zsock_destroy (&client);
    zsock_destroy (&worker);
}
