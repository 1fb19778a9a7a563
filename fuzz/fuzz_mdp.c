/*  fuzz_mdp.c: libFuzzer target for MDP/0.2 frame handling.

    Two layers see raw frames from the network: the pure parsers the broker
    calls (mdp_body_peek for session routing, mdp_capacity_parse for the
    READY capacity frame), and the broker's message dispatch itself
    (client REQUESTs, worker READY/REPLY/HEARTBEAT/DISCONNECT, garbage).
    This target feeds both:

    1. the whole input to mdp_body_peek and mdp_capacity_parse, checking
       their contracts (a malformed result has a reason; a session is a
       NUL-terminated string of at most MDP_SESSION_MAX bytes; a capacity
       is in 1..MDP_CAPACITY_MAX);
    2. the input cut into frames (each frame: a 2-byte little-endian length,
       then that many bytes; the first byte picks the header: as is, as a
       client ["MDPC02"][0x01]..., or as a worker ["MDPW02"]...) and sent
       from a fresh DEALER socket to an in-process broker actor. Then a
       trusted client asks "mmi.service" and must get an answer within
       2 s: a broker that crashed, hung or stopped answering fails the run.

    The same file is compiled into the gcc replay test (tests/
    test_fuzz_mdp.c) with LLVMFuzzerTestOneInput renamed.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <czmq.h>
#include "mdp_common.h"
#include "mdp_session.h"
#include "broker.h"

#define S_MAX_FRAMES    16
#define S_PEERS         8       //  sockets the inputs come from, in turn

static zsock_t *s_peers [S_PEERS];
static unsigned s_next_peer;

static zactor_t *s_broker;
static zsock_t *s_probe;        //  trusted client: MMI after every input
static char s_endpoint [64];
static unsigned s_probe_seq;

static void
s_fail (const char *what, const char *detail)
{
    fprintf (stderr, "fuzz_mdp property failed: %s (%s)\n", what, detail? detail: "");
    abort ();
}

static void
s_stop (void)
{
    for (int i = 0; i < S_PEERS; i++)
        zsock_destroy (&s_peers [i]);
    zsock_destroy (&s_probe);
    zactor_destroy (&s_broker);
}

static void
s_start (void)
{
    if (s_broker)
        return;
    zsys_init ();
    zsys_set_logstream (NULL);          //  the broker logs every bad message
    zsys_set_logsystem (false);
    snprintf (s_endpoint, sizeof s_endpoint, "inproc://fuzz-mdp-%d", getpid ());
    broker_config_t config = {
        .endpoints = s_endpoint, .heartbeat_ms = 100, .liveness = 3,
        .request_expiry_ms = 200, .max_queue_service = 8, .max_queue_total = 64,
        .max_sessions = 256, .max_msg_bytes = 1 << 20
    };
    s_broker = zactor_new (broker_actor, &config);
    if (!s_broker)
        s_fail ("broker did not start", NULL);
    char *bound = broker_endpoint (s_broker);
    if (!bound || strcmp (bound, s_endpoint))
        s_fail ("broker did not bind", bound);
    zstr_free (&bound);
    s_probe = zsock_new_dealer (s_endpoint);
    zsock_set_rcvtimeo (s_probe, 2000);
    //  A few long-lived peers, not one per input: ZeroMQ closes sockets
    //  asynchronously and a socket per input runs out of handles.
    for (int i = 0; i < S_PEERS; i++) {
        s_peers [i] = zsock_new_dealer (s_endpoint);
        if (!s_peers [i])
            s_fail ("cannot connect", s_endpoint);
        zsock_set_linger (s_peers [i], 0);
    }
    atexit (s_stop);
}

static void
s_check_parsers (const uint8_t *data, size_t size)
{
    char session [MDP_SESSION_MAX + 1];
    char err [128];
    memset (session, 0x55, sizeof session);
    err [0] = '\0';
    int rc = mdp_body_peek (data, size, session, err, sizeof err);
    if (rc == MDP_BODY_MAP) {
        if (memchr (session, '\0', sizeof session) == NULL)
            s_fail ("session not NUL-terminated", NULL);
    }
    else
    if (rc == MDP_BODY_MALFORMED) {
        if (!err [0])
            s_fail ("malformed body without a reason", NULL);
    }
    else
    if (rc != MDP_BODY_OPAQUE)
        s_fail ("mdp_body_peek returned an unknown code", NULL);

    int capacity = -1;
    err [0] = '\0';
    rc = mdp_capacity_parse (data, size, &capacity, err, sizeof err);
    if (rc == 0) {
        if (capacity < 1 || capacity > MDP_CAPACITY_MAX)
            s_fail ("capacity out of range accepted", NULL);
    }
    else
    if (!err [0])
        s_fail ("rejected capacity without a reason", NULL);
}

//  Asks mmi.service for "echo" with a unique tag and waits for its answer,
//  skipping answers to earlier probes.
static void
s_probe_broker (void)
{
    char tag [32];
    snprintf (tag, sizeof tag, "probe-%u", ++s_probe_seq);
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, MDPC_CLIENT);
    zmsg_addmem (msg, (uint8_t []) { MDPC_REQUEST }, 1);
    zmsg_addstr (msg, "mmi.service");
    zmsg_addstr (msg, tag);
    zmsg_send (&msg, s_probe);
    while (true) {
        zmsg_t *reply = zmsg_recv (s_probe);
        if (!reply)
            s_fail ("broker stopped answering", tag);
        //  [MDPC02][FINAL]["mmi.service"]["404"|"200"]: mmi.service asks
        //  about the service named in the body, so the tag never exists.
        bool ok = zmsg_size (reply) == 4;
        zmsg_destroy (&reply);
        if (ok)
            break;
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_start ();
    s_check_parsers (data, size);
    if (size < 1)
        return 0;

    uint8_t mode = data [0] % 3;
    data++;
    size--;
    zmsg_t *msg = zmsg_new ();
    if (mode == 1) {
        zmsg_addstr (msg, MDPC_CLIENT);
        zmsg_addmem (msg, (uint8_t []) { MDPC_REQUEST }, 1);
    }
    else
    if (mode == 2)
        zmsg_addstr (msg, MDPW_WORKER);
    size_t at = 0;
    while (at + 2 <= size && zmsg_size (msg) < S_MAX_FRAMES) {
        size_t len = data [at] | (size_t) data [at + 1] << 8;
        at += 2;
        if (len > size - at)
            len = size - at;
        zmsg_addmem (msg, data + at, len);
        at += len;
    }
    if (zmsg_size (msg) == 0)
        zmsg_addmem (msg, data, size);

    zsock_t *peer = s_peers [s_next_peer++ % S_PEERS];
    zmsg_send (&msg, peer);
    s_probe_broker ();
    //  Whatever the broker answered this peer (errors, DISCONNECT) is
    //  dropped, so its queue never fills.
    while (zsock_events (peer) & ZMQ_POLLIN) {
        zmsg_t *answer = zmsg_recv (peer);
        zmsg_destroy (&answer);
    }
    return 0;
}
