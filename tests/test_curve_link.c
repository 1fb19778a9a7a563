/*  test_curve_link.c: the crypt-proxy pair end to end, real processes.

    client -> device broker -> device proxy ==CURVE==> cloud proxy -> cloud
    broker -> echo workers. Checks that replies come back intact, PARTIALs
    stream through, session affinity survives the bridge, many requests are
    in flight at once, the link emulator adds its delay, a restart of either
    proxy is survived without help, and malformed link messages from an
    admitted peer get a 400 while the proxy keeps serving.
*/
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <msgpack.h>
#include <signal.h>
#include "mdp_common.h"
#include "mdp_client.h"
#include "../services/crypt-proxy/crypt_proxy.h"  //  link constants only
#include "sm_mdp.h"
#include "sm_proc.h"
#include "sm_crypt.h"

static sm_crypt_t s_mesh;

static void
s_init (void)
{
    cr_assert_eq (sm_crypt_init (&s_mesh, "sm-curve-link", true), 0);
}

static void
s_fini (void)
{
    sm_crypt_fini (&s_mesh);
}

TestSuite (curve_link, .init = s_init, .fini = s_fini, .timeout = 40);

Test (curve_link, echo_through_both_proxies)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0, "mesh did not start");
    zmsg_t *body = sm_body_new ("s-echo", -1, -1);
    zframe_t *sent = zframe_dup (zmsg_first (body));
    zmsg_t *reply = sm_crypt_call (&s_mesh, &body, 5000, NULL);
    cr_assert_not_null (reply, "no reply through the proxies");
    cr_assert_eq (sm_crypt_status (reply), 200);
    char *worker = sm_body_str (reply, "worker");
    cr_assert_str_eq (worker, "w1");
    free (worker);
    //  The echo worker returns our body as bin: it arrived byte for byte.
    zframe_t *frame = zmsg_first (reply);
    cr_assert (memmem (zframe_data (frame), zframe_size (frame),
                       zframe_data (sent), zframe_size (sent)) != NULL,
               "the body was changed on the way");
    zframe_destroy (&sent);
    zmsg_destroy (&reply);
}

Test (curve_link, partials_stream_through)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    zmsg_t *body = sm_body_new ("s-part", -1, 3);
    int partials = 0;
    zmsg_t *reply = sm_crypt_call (&s_mesh, &body, 5000, &partials);
    cr_assert_not_null (reply);
    cr_assert_eq (sm_crypt_status (reply), 200);
    cr_assert_eq (partials, 3, "expected 3 PARTIALs, got %d", partials);
    zmsg_destroy (&reply);
}

Test (curve_link, session_affinity_preserved)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 2, NULL), 0);
    const char *sessions [] = { "sess-a", "sess-b", "sess-c", "sess-d" };
    char *owner [4] = { NULL };
    bool used [3] = { false };
    for (int round = 0; round < 5; round++)
        for (int s = 0; s < 4; s++) {
            zmsg_t *body = sm_body_new (sessions [s], -1, -1);
            zmsg_t *reply = sm_crypt_call (&s_mesh, &body, 5000, NULL);
            cr_assert_eq (sm_crypt_status (reply), 200);
            char *worker = sm_body_str (reply, "worker");
            cr_assert_not_null (worker);
            if (!owner [s])
                owner [s] = strdup (worker);
            cr_assert_str_eq (worker, owner [s], "session %s moved from %s to %s",
                              sessions [s], owner [s], worker);
            used [worker [1] - '0'] = true;
            free (worker);
            zmsg_destroy (&reply);
        }
    for (int s = 0; s < 4; s++)
        free (owner [s]);
    cr_assert (used [1] && used [2], "both workers should hold some session");
}

Test (curve_link, many_requests_in_flight)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    //  8 requests of 400 ms each, sent at once: served concurrently they
    //  take ~400 ms, one at a time 3.2 s.
    enum { N = 8 };
    mdp_client_t *client [N];
    int64_t start = zclock_mono ();
    for (int i = 0; i < N; i++) {
        client [i] = mdp_client_new (s_mesh.device_ep);
        char session [16];
        snprintf (session, sizeof session, "par-%d", i);
        zmsg_t *body = sm_body_new (session, 400, -1);
        cr_assert_eq (mdp_client_send (client [i], "echo", &body), 0);
    }
    for (int i = 0; i < N; i++) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (client [i], 5000, &command, NULL);
        cr_assert_not_null (reply, "request %d got no reply", i);
        cr_assert_eq (sm_crypt_status (reply), 200);
        zmsg_destroy (&reply);
        mdp_client_destroy (&client [i]);
    }
    int64_t elapsed = zclock_mono () - start;
    cr_assert_lt (elapsed, 1600, "8 x 400 ms took %d ms: not concurrent", (int) elapsed);
}

Test (curve_link, link_emulation_adds_delay)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, "rtt=300,jitter=0"), 0);
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 5000, 2000), 0);
    for (int i = 0; i < 3; i++) {
        zmsg_t *body = sm_body_new ("s-emu", -1, -1);
        int64_t start = zclock_mono ();
        zmsg_t *reply = sm_crypt_call (&s_mesh, &body, 5000, NULL);
        int64_t rtt = zclock_mono () - start;
        cr_assert_eq (sm_crypt_status (reply), 200);
        zmsg_destroy (&reply);
        cr_assert_geq (rtt, 295, "round trip %d ms is below the emulated 300 ms", (int) rtt);
        cr_assert_lt (rtt, 1500, "round trip %d ms", (int) rtt);
    }
}

Test (curve_link, link_loss_ends_in_clear_error)
{
    //  Every message lost: the request must end in a 504, never silence.
    cr_assert_eq (sm_crypt_start_brokers (&s_mesh), 0);
    cr_assert_gt (sm_crypt_start_worker (&s_mesh, "w1"), 0);
    cr_assert_gt (sm_crypt_start_cloud_proxy (&s_mesh, 5000), 0);
    cr_assert_gt (sm_crypt_start_device_proxy (&s_mesh, NULL, "loss=1", 800), 0);
    cr_assert (sm_mdp_wait_workers (s_mesh.device_ep, "echo", 1, 5000));
    zmsg_t *body = sm_body_new ("s-loss", -1, -1);
    zmsg_t *reply = sm_crypt_call (&s_mesh, &body, 3000, NULL);
    cr_assert_not_null (reply, "lost request got no error reply");
    cr_assert_eq (sm_crypt_status (reply), 504);
    char *error = sm_body_str (reply, "error");
    cr_assert (error && strstr (error, "no reply from the cloud"), "error: %s", error);
    free (error);
    zmsg_destroy (&reply);
}

Test (curve_link, cloud_proxy_restart_is_survived)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 3000, 2000), 0);
    sm_kill (s_mesh.cloud_proxy, SIGKILL, 1000);
    //  While it is down: a clear error, not silence.
    zmsg_t *body = sm_body_new ("s-down", -1, -1);
    zmsg_t *reply = sm_crypt_call (&s_mesh, &body, 8000, NULL);
    cr_assert_not_null (reply, "no reply while the cloud proxy is down");
    int status = sm_crypt_status (reply);
    cr_assert (status == 503 || status == 504, "status %d", status);
    zmsg_destroy (&reply);
    cr_assert_gt (sm_crypt_start_cloud_proxy (&s_mesh, 5000), 0);
    int took = sm_crypt_wait_ok (&s_mesh, 8000, 1000);
    cr_assert_geq (took, 0, "traffic did not resume after the cloud proxy restarted");
}

Test (curve_link, device_proxy_restart_is_survived)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 3000, 2000), 0);
    sm_kill (s_mesh.device_proxy, SIGKILL, 1000);
    cr_assert_gt (sm_crypt_start_device_proxy (&s_mesh, NULL, NULL, 5000), 0);
    int took = sm_crypt_wait_ok (&s_mesh, 8000, 1000);
    cr_assert_geq (took, 0, "traffic did not resume after the device proxy restarted");
}

//  An admitted peer that speaks garbage: the cloud proxy answers what it
//  can answer (400 with the request id) and keeps serving everyone else.
Test (curve_link, malformed_link_messages_are_rejected)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    zcert_t *device = zcert_load (s_mesh.device_secret);
    zcert_t *server = zcert_load (s_mesh.server_pub);
    cr_assert (device && server);
    zsock_t *raw = zsock_new (ZMQ_DEALER);
    zcert_apply (device, raw);
    zsock_set_curve_serverkey (raw, zcert_public_txt (server));
    zsock_set_rcvtimeo (raw, 3000);
    cr_assert_eq (zsock_connect (raw, "%s", s_mesh.link_ep), 0);
    //  No magic: dropped. Bad command and missing service: 400 with the id.
    zstr_sendx (raw, "garbage", NULL);
    zsock_send (raw, "ssb", CRYPT_LINK_MAGIC, "X", "\0\0\0\0\0\0\0\1", 8);
    zsock_send (raw, "ssb", CRYPT_LINK_MAGIC, "R", "\0\0\0\0\0\0\0\2", 8);
    for (int i = 0; i < 2; i++) {
        zmsg_t *msg = zmsg_recv (raw);
        cr_assert_not_null (msg, "no 400 for a malformed request");
        cr_assert_eq (zmsg_size (msg), 4);
        char *magic = zmsg_popstr (msg);
        char *cmd = zmsg_popstr (msg);
        cr_assert_str_eq (magic, CRYPT_LINK_MAGIC);
        cr_assert_str_eq (cmd, "F");
        zframe_t *id = zmsg_pop (msg);
        cr_assert_eq (zframe_data (id) [7], i + 1);
        cr_assert_eq (sm_crypt_status (msg), 400);
        zframe_destroy (&id);
        free (magic);
        free (cmd);
        zmsg_destroy (&msg);
    }
    //  A well-formed request from this peer works too.
    zmsg_t *body = sm_body_new ("s-raw", -1, -1);
    zmsg_pushstr (body, "echo");
    zmsg_pushmem (body, "\0\0\0\0\0\0\0\3", 8);
    zmsg_pushstr (body, "R");
    zmsg_pushstr (body, CRYPT_LINK_MAGIC);
    zmsg_send (&body, raw);
    zmsg_t *msg = zmsg_recv (raw);
    cr_assert_not_null (msg);
    for (int i = 0; i < 3; i++) {           //  magic, command, id
        zframe_t *frame = zmsg_pop (msg);
        zframe_destroy (&frame);
    }
    cr_assert_eq (sm_crypt_status (msg), 200);
    zmsg_destroy (&msg);
    zsock_destroy (&raw);
    zcert_destroy (&device);
    zcert_destroy (&server);
    //  And the real device proxy is still served.
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 3000, 2000), 0);
}

//  The cloud proxy's pool is bounded: beyond it, requests get 429 "busy,
//  retry after" with retry_after_ms at once (as the broker answers), and
//  the ones within it are served.
Test (curve_link, cloud_inflight_bound_answers_429)
{
    s_mesh.cloud_max_inflight = 2;
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    enum { N = 5 };
    mdp_client_t *client [N];
    for (int i = 0; i < N; i++) {
        client [i] = mdp_client_new (s_mesh.device_ep);
        char session [16];
        snprintf (session, sizeof session, "bound-%d", i);
        zmsg_t *body = sm_body_new (session, 600, -1);
        cr_assert_eq (mdp_client_send (client [i], "echo", &body), 0);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (client [i], 5000, &command, NULL);
        cr_assert_not_null (reply, "request %d got no reply", i);
        int status = sm_crypt_status (reply);
        if (status == 200)
            ok++;
        else {
            char *error = sm_body_str (reply, "error");
            cr_assert_eq (status, 429, "status %d (%s)", status, error);
            cr_assert (error && strstr (error, "in-flight bound"), "error: %s", error);
            int64_t retry = -1;
            sm_body_int (reply, "retry_after_ms", &retry);
            cr_assert_eq (retry, 250, "no retry_after_ms hint");
            free (error);
            busy++;
        }
        zmsg_destroy (&reply);
        mdp_client_destroy (&client [i]);
    }
    cr_assert_eq (ok, 2, "%d served, %d refused", ok, busy);
    cr_assert_eq (busy, N - 2);
}

//  Resident memory of a process in KiB (VmRSS), -1 when unreadable.
static long
s_rss_kib (pid_t pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen (path, "r");
    long kib = -1;
    while (file && fgets (line, sizeof line, file))
        if (strncmp (line, "VmRSS:", 6) == 0)
            kib = atol (line + 6);
    if (file)
        fclose (file);
    return kib;
}

//  A flood far beyond the bound, in waves: every request is answered, with
//  a result or 429 (never lost, never another error), the proxy keeps
//  serving afterwards, and its memory does not grow with the flood.
Test (curve_link, flood_answers_result_or_429_with_bounded_memory, .timeout = 90)
{
    s_mesh.cloud_max_inflight = 4;
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    enum { WAVES = 6, N = 200 };
    mdp_client_t *client [N];
    for (int i = 0; i < N; i++)
        client [i] = mdp_client_new (s_mesh.device_ep);
    long rss_first = -1, rss_last = -1;
    int ok = 0, busy = 0;
    for (int wave = 0; wave < WAVES; wave++) {
        for (int i = 0; i < N; i++) {
            char session [32];
            snprintf (session, sizeof session, "flood-%d-%d", wave, i);
            zmsg_t *body = sm_body_new (session, 20, -1);
            cr_assert_eq (mdp_client_send (client [i], "echo", &body), 0);
        }
        for (int i = 0; i < N; i++) {
            int command = 0;
            zmsg_t *reply = mdp_client_recv (client [i], 10000, &command, NULL);
            cr_assert_not_null (reply, "wave %d: request %d got no answer", wave, i);
            int status = sm_crypt_status (reply);
            if (status == 200)
                ok++;
            else {
                char *error = sm_body_str (reply, "error");
                cr_assert_eq (status, 429, "wave %d: status %d (%s)", wave, status, error);
                int64_t retry = -1;
                sm_body_int (reply, "retry_after_ms", &retry);
                cr_assert_eq (retry, 250, "wave %d: no retry_after_ms (%s)", wave, error);
                free (error);
                busy++;
            }
            zmsg_destroy (&reply);
        }
        long rss = s_rss_kib (s_mesh.cloud_proxy);
        cr_assert_gt (rss, 0);
        if (wave == 1)
            rss_first = rss;        //  after warm-up (pool and buffers made)
        rss_last = rss;
    }
    for (int i = 0; i < N; i++)
        mdp_client_destroy (&client [i]);
    cr_log_info ("flood: %d served, %d answered 429; cloud proxy RSS %ld KiB after wave 2, "
                 "%ld KiB after wave %d", ok, busy, rss_first, rss_last, WAVES);
    cr_assert_eq (ok + busy, WAVES * N);
    cr_assert_gt (ok, 0);
    cr_assert_gt (busy, 0, "the flood never reached the bound");
    //  Four more waves of 200 must not add more than 8 MiB.
    cr_assert_lt (rss_last - rss_first, 8 * 1024, "RSS grew from %ld to %ld KiB", rss_first, rss_last);
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 3000, 2000), 0, "the proxy stopped serving");
}

//  A fake cloud proxy (CURVE server with the real server key) answers with
//  garbage before the real answer: the device proxy drops what it cannot
//  route, streams the PARTIAL, delivers the FINAL and keeps serving.
Test (curve_link, device_drops_malformed_cloud_replies)
{
    cr_assert_eq (sm_crypt_start_brokers (&s_mesh), 0);
    zcert_t *server = zcert_load (s_mesh.server_secret);
    cr_assert_not_null (server);
    zsock_t *fake = zsock_new (ZMQ_ROUTER);
    zcert_apply (server, fake);
    zsock_set_curve_server (fake, 1);
    zsock_set_rcvtimeo (fake, 5000);
    cr_assert_geq (zsock_bind (fake, "%s", s_mesh.link_ep), 0);
    cr_assert_gt (sm_crypt_start_device_proxy (&s_mesh, NULL, NULL, 5000), 0);
    cr_assert (sm_mdp_wait_workers (s_mesh.device_ep, "echo", 1, 5000));

    mdp_client_t *client = mdp_client_new (s_mesh.device_ep);
    zmsg_t *body = sm_body_new ("fake", -1, -1);
    cr_assert_eq (mdp_client_send (client, "echo", &body), 0);
    zmsg_t *request = zmsg_recv (fake);
    cr_assert_not_null (request, "the device proxy sent nothing");
    cr_assert_geq (zmsg_size (request), 6);
    zframe_t *peer = zmsg_pop (request);
    char *magic = zmsg_popstr (request);
    char *cmd = zmsg_popstr (request);
    zframe_t *id = zmsg_pop (request);
    char *service = zmsg_popstr (request);
    cr_assert_str_eq (magic, CRYPT_LINK_MAGIC);
    cr_assert_str_eq (cmd, "R");
    cr_assert_eq (zframe_size (id), 8);
    cr_assert_str_eq (service, "echo");
    //  Garbage: wrong magic, unknown command, unknown id, short id.
    zsock_send (fake, "fss", peer, "XXXX", "F");
    zsock_send (fake, "fssf", peer, CRYPT_LINK_MAGIC, "Q", id);
    zsock_send (fake, "fssbs", peer, CRYPT_LINK_MAGIC, "F", "\1\2\3\4\5\6\7\10", 8, "stray");
    zsock_send (fake, "fssbs", peer, CRYPT_LINK_MAGIC, "F", "\1\2", 2, "short");
    //  Then a PARTIAL and the FINAL for the real id.
    zsock_send (fake, "fssfs", peer, CRYPT_LINK_MAGIC, "P", id, "partial-1");
    zsock_send (fake, "fssfs", peer, CRYPT_LINK_MAGIC, "F", id, "final-ok");
    int command = 0;
    zmsg_t *reply = mdp_client_recv (client, 5000, &command, NULL);
    cr_assert_not_null (reply);
    cr_assert_eq (command, MDPC_PARTIAL);
    cr_assert (zframe_streq (zmsg_first (reply), "partial-1"));
    zmsg_destroy (&reply);
    reply = mdp_client_recv (client, 5000, &command, NULL);
    cr_assert_not_null (reply);
    cr_assert_eq (command, MDPC_FINAL);
    cr_assert (zframe_streq (zmsg_first (reply), "final-ok"));
    zmsg_destroy (&reply);
    cr_assert (sm_alive (s_mesh.device_proxy));
    cr_assert (sm_crypt_log_contains (&s_mesh, "malformed link message from the cloud"));
    free (magic);
    free (cmd);
    free (service);
    zframe_destroy (&id);
    zframe_destroy (&peer);
    zmsg_destroy (&request);
    mdp_client_destroy (&client);
    zsock_destroy (&fake);
    zcert_destroy (&server);
}

//  The brokers on either side can restart too: the device proxy's workers
//  and the cloud proxy's clients reconnect by themselves.
Test (curve_link, broker_restarts_are_survived)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 3000, 2000), 0);
    sm_kill (s_mesh.cloud_broker, SIGKILL, 1000);
    s_mesh.cloud_broker = sm_spawn (s_mesh.log, "splitmesh-broker", "-e", s_mesh.cloud_ep,
                                    "--heartbeat-ms", "200", "--expiry-ms", "3000", NULL);
    cr_assert_gt (s_mesh.cloud_broker, 0);
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 10000, 1500), 0,
                   "traffic did not resume after the cloud broker restarted");
    sm_kill (s_mesh.device_broker, SIGKILL, 1000);
    s_mesh.device_broker = sm_spawn (s_mesh.log, "splitmesh-broker", "-e", s_mesh.device_ep,
                                     "--heartbeat-ms", "200", "--expiry-ms", "3000", NULL);
    cr_assert_gt (s_mesh.device_broker, 0);
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 10000, 1500), 0,
                   "traffic did not resume after the device broker restarted");
    cr_assert (sm_alive (s_mesh.device_proxy) && sm_alive (s_mesh.cloud_proxy));
}
