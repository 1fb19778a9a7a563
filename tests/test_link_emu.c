/*  test_link_emu.c: the emulated link's arithmetic and the proxy that uses it.

    The scheduler is checked exactly (delay, serialisation, FIFO, loss rate,
    determinism); the proxy is checked over real ZeroMQ sockets on ipc.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <math.h>
#include "link_emu.h"
#include "link_proxy.h"

static link_emu_t *
s_link (const char *spec)
{
    link_params_t p = { 0 };
    char err[256] = "";
    cr_assert_eq (link_params_parse (&p, spec, err, sizeof err), 0, "%s", err);
    link_emu_t *link = link_emu_new (&p, err, sizeof err);
    cr_assert_not_null (link, "%s", err);
    return link;
}

Test (link_emu, parse_reads_every_item)
{
    link_params_t p = { 0 };
    char err[256];
    cr_assert_eq (link_params_parse (&p, "rtt=50,jitter=2.5,bw=100,loss=0.01,seed=7", err, sizeof err), 0);
    cr_assert_float_eq (p.delay_ms, 25.0, 1e-9);
    cr_assert_float_eq (p.jitter_ms, 2.5, 1e-9);
    cr_assert_float_eq (p.bandwidth_mbps, 100.0, 1e-9);
    cr_assert_float_eq (p.loss, 0.01, 1e-12);
    cr_assert_eq (p.seed, 7);
}

Test (link_emu, parse_names_the_bad_item)
{
    link_params_t p = { 0 };
    char err[256] = "";
    cr_assert_eq (link_params_parse (&p, "delay=10,color=blue", err, sizeof err), -1);
    cr_assert (strstr (err, "color"), "error does not name the item: %s", err);
    cr_assert_eq (link_params_parse (&p, "delay=ten", err, sizeof err), -1);
    cr_assert (strstr (err, "delay=ten"), "%s", err);
}

Test (link_emu, new_rejects_out_of_range)
{
    char err[256] = "";
    link_params_t p = { .loss = 1.5 };
    cr_assert_null (link_emu_new (&p, err, sizeof err));
    cr_assert (strstr (err, "loss"), "%s", err);
    p = (link_params_t) { .delay_ms = -1 };
    cr_assert_null (link_emu_new (&p, err, sizeof err));
    cr_assert (strstr (err, "delay"), "%s", err);
}

Test (link_emu, delay_only_adds_the_one_way_delay)
{
    link_emu_t *link = s_link ("delay=25");
    cr_assert_eq (link_emu_schedule (link, LINK_UP, 1000, 1000000), 1025000);
    cr_assert_eq (link_emu_schedule (link, LINK_DOWN, 10, 2000000), 2025000);
    link_emu_destroy (&link);
    cr_assert_null (link);
}

Test (link_emu, bandwidth_serialises_back_to_back_messages)
{
    //  1 Mbit/s: 125000 bytes take exactly one second on the wire.
    link_emu_t *link = s_link ("bw=1,delay=0");
    cr_assert_eq (link_emu_schedule (link, LINK_UP, 125000, 0), 1000000);
    cr_assert_eq (link_emu_schedule (link, LINK_UP, 125000, 0), 2000000, "second message must queue");
    //  The other direction has its own wire.
    cr_assert_eq (link_emu_schedule (link, LINK_DOWN, 125000, 0), 1000000);
    link_emu_destroy (&link);
}

Test (link_emu, jitter_never_reorders_and_stays_in_bounds)
{
    link_emu_t *link = s_link ("delay=10,jitter=5,seed=3");
    int64_t last = 0;
    for (int i = 0; i < 2000; i++) {
        int64_t now = i * 100;      //  a message every 0.1 ms, far denser than the jitter
        int64_t at = link_emu_schedule (link, LINK_UP, 100, now);
        cr_assert_geq (at, last, "message %d overtook the previous one", i);
        cr_assert_geq (at, now + 10000);
        cr_assert_lt (at, now + 10000 + 5000 + 100 * 2000);
        last = at;
    }
    link_emu_destroy (&link);
}

Test (link_emu, loss_rate_matches_and_is_reproducible)
{
    link_emu_t *a = s_link ("loss=0.1,seed=42");
    link_emu_t *b = s_link ("loss=0.1,seed=42");
    int lost = 0;
    for (int i = 0; i < 20000; i++) {
        int64_t x = link_emu_schedule (a, LINK_UP, 10, i);
        int64_t y = link_emu_schedule (b, LINK_UP, 10, i);
        cr_assert_eq (x, y, "same seed must give the same schedule (message %d)", i);
        lost += x < 0;
    }
    //  Binomial(20000, 0.1): sd ~ 42, so +-300 is a 7-sigma bound.
    cr_assert (abs (lost - 2000) < 300, "lost %d of 20000 at loss 0.1", lost);
    link_stats_t st;
    link_emu_stats (a, &st);
    cr_assert_eq (st.lost[LINK_UP], (uint64_t) lost);
    cr_assert_eq (st.bytes[LINK_UP], 200000);
    link_emu_destroy (&a);
    link_emu_destroy (&b);
}

//  --- the proxy, over real sockets -------------------------------------

static char s_dir[128];

static void
s_endpoints (char *near, char *far, size_t size)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/splitmesh-link-XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    snprintf (near, size, "ipc://%s/near", s_dir);
    snprintf (far, size, "ipc://%s/far", s_dir);
}

static void
s_cleanup (void)
{
    char cmd[200];
    snprintf (cmd, sizeof cmd, "rm -rf %s", s_dir);
    if (s_dir[0] && system (cmd) != 0)
        fprintf (stderr, "could not remove %s\n", s_dir);
}

//  Echoes every request from the far side; returns how many distinct
//  identities it saw.
static void
s_echo_once (zsock_t *router, zlist_t *seen)
{
    zmsg_t *msg = zmsg_recv (router);
    cr_assert_not_null (msg);
    zframe_t *id = zmsg_first (msg);
    char *hex = zframe_strhex (id);
    if (!zlist_exists (seen, hex))
        zlist_append (seen, hex);
    else
        free (hex);
    zmsg_send (&msg, router);
}

Test (link_proxy, round_trip_takes_the_emulated_rtt, .fini = s_cleanup)
{
    char near[160], far[160], err[256] = "";
    s_endpoints (near, far, sizeof near);
    zsock_t *server = zsock_new_router (far);
    cr_assert_not_null (server);
    link_proxy_args_t args = { near, far, { .delay_ms = 20 }, 0 };
    zactor_t *proxy = link_proxy_new (&args, err, sizeof err);
    cr_assert_not_null (proxy, "%s", err);
    zsock_t *client = zsock_new_dealer (near);
    zsock_set_rcvtimeo (client, 3000);
    zsock_set_rcvtimeo (server, 3000);
    zlist_t *seen = zlist_new ();
    zlist_autofree (seen);

    //  First exchange warms the connections; time the next few.
    for (int i = 0; i < 4; i++) {
        int64_t t0 = zclock_usecs ();
        zstr_send (client, "ping");
        s_echo_once (server, seen);
        char *reply = zstr_recv (client);
        int64_t rtt = zclock_usecs () - t0;
        cr_assert_str_eq (reply, "ping");
        free (reply);
        if (i > 0) {
            cr_assert_geq (rtt, 40000, "round trip %lld us is shorter than 2 x 20 ms", (long long) rtt);
            cr_assert_lt (rtt, 1000000, "round trip %lld us is far beyond 40 ms", (long long) rtt);
        }
    }
    link_stats_t st;
    cr_assert_eq (link_proxy_stats (proxy, &st), 0);
    cr_assert_eq (st.messages[LINK_UP], 4);
    cr_assert_eq (st.messages[LINK_DOWN], 4);
    cr_assert_eq (st.bytes[LINK_UP], 16);
    zlist_destroy (&seen);
    zsock_destroy (&client);
    zactor_destroy (&proxy);
    zsock_destroy (&server);
}

Test (link_proxy, each_near_peer_gets_its_own_far_connection, .fini = s_cleanup)
{
    char near[160], far[160], err[256] = "";
    s_endpoints (near, far, sizeof near);
    zsock_t *server = zsock_new_router (far);
    zsock_set_rcvtimeo (server, 3000);
    link_proxy_args_t args = { near, far, { 0 }, 0 };
    zactor_t *proxy = link_proxy_new (&args, err, sizeof err);
    cr_assert_not_null (proxy, "%s", err);
    zsock_t *a = zsock_new_dealer (near), *b = zsock_new_dealer (near);
    zsock_set_rcvtimeo (a, 3000);
    zsock_set_rcvtimeo (b, 3000);
    zlist_t *seen = zlist_new ();
    zlist_autofree (seen);
    zstr_send (a, "from-a");
    s_echo_once (server, seen);
    zstr_send (b, "from-b");
    s_echo_once (server, seen);
    char *ra = zstr_recv (a), *rb = zstr_recv (b);
    cr_assert_str_eq (ra, "from-a", "reply went to the wrong peer");
    cr_assert_str_eq (rb, "from-b", "reply went to the wrong peer");
    cr_assert_eq (zlist_size (seen), 2, "far side must see two distinct peers");
    free (ra); free (rb);
    zlist_destroy (&seen);
    zsock_destroy (&a); zsock_destroy (&b);
    zactor_destroy (&proxy);
    zsock_destroy (&server);
}

Test (link_proxy, bad_endpoint_is_an_error_not_a_dead_actor)
{
    char err[256] = "";
    link_proxy_args_t args = { "bogus://nowhere", "ipc:///tmp/x", { 0 }, 0 };
    zactor_t *proxy = link_proxy_new (&args, err, sizeof err);
    cr_assert_null (proxy);
    cr_assert (strstr (err, "bogus://nowhere"), "error does not name the endpoint: %s", err);
    link_proxy_args_t bad = { "inproc://ok", "inproc://far", { .loss = 2 }, 0 };
    cr_assert_null (link_proxy_new (&bad, err, sizeof err));
    cr_assert (strstr (err, "loss"), "%s", err);
}
