/*  test_gateway_cancel.c: a client that goes away cancels its generation.

    A real mesh (`splitmesh up` on a tiny model, with telemetry). Three
    clients ask for a long generation (S_LONG tokens) and leave early:

    1. an HTTP client of the gateway closes its SSE stream after 3 events;
    2. an MDP client closes its DEALER socket after 3 PARTIALs;
    3. a non-streaming HTTP client hangs up while its answer is made (the
       gateway polls its socket between the mesh's PARTIALs: it always
       asks the mesh to stream).

    Either way the broker can no longer deliver the next PARTIAL, sends
    edge-draft CANCEL (the cancel extension, broker.h), and edge-draft stops
    at the next round and closes the session's KV caches downstream. The
    test reads it all from /metrics: generations_cancelled_total (edge-draft,
    and the gateway for case 1), broker_cancels_total, requests_total with
    status 499, far fewer tokens generated than asked for, and the
    kv_cache_positions of split-prefix and cloud-target back at 0. Then the
    mesh must still serve a normal request through both doors.
*/
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "codec.h"
#include "mdp_common.h"
#include "sm_cli.h"
#include "sm_gateway.h"
#include "sm_http.h"
#include "sm_proc.h"

#define S_LONG 1500             //  tokens asked for; a cancelled one makes far fewer

static sm_mesh_t s_mesh;

static void
s_fini (void)
{
    sm_mesh_down (&s_mesh);
}

TestSuite (gateway_cancel, .fini = s_fini, .timeout = 170);

static double
s_value (const char *text, const char *name, const char *a, const char *b)
{
    int found = 0;
    return sm_prom_sum (text, name, &found, a, b, NULL);
}

//  Scrapes until name{a,b} sums to want (15 s at most), then waits for two
//  more flushes and returns that scrape (caller frees).
static char *
s_scrape_when (const char *name, const char *a, const char *b, double want)
{
    char *text = NULL;
    double got = -1;
    int64_t end = zclock_mono () + 15000;
    while (zclock_mono () < end) {
        free (text);
        text = sm_prom_scrape (s_mesh.telemetry_port);
        got = text? s_value (text, name, a, b): -1;
        if (got == want)
            break;
        zclock_sleep (100);
    }
    cr_assert_eq (got, want, "%s{%s,%s} is %g, want %g; /metrics:\n%.6000s", name, a, b? b: "",
                  got, want, text? text: "(none)");
    free (text);
    zclock_sleep (700);
    text = sm_prom_scrape (s_mesh.telemetry_port);
    cr_assert_not_null (text);
    return text;
}

#define ED "service=\"edge-draft\""

//  What every cancellation must leave behind: `n` cancels counted, the
//  tokens of this one (since `tokens_before`) well short of S_LONG, and
//  the downstream caches empty. Returns the tokens generated so far.
static double
s_check_cancelled (int n, double tokens_before, const char *what)
{
    char *m = s_scrape_when ("splitmesh_generations_cancelled_total", ED, "reason=\"client_gone\"", n);
    cr_assert_eq (s_value (m, "splitmesh_broker_cancels_total", "mdp_service=\"generate\"", NULL), n,
                  "%s: broker cancels", what);
    cr_assert_eq (s_value (m, "splitmesh_requests_total", ED, "status=\"499\""), n, "%s: 499s", what);
    double tokens = s_value (m, "splitmesh_tokens_generated_total", ED, NULL);
    double made = tokens - tokens_before;
    cr_assert_gt (made, 0, "%s: no tokens before the cancel", what);
    cr_assert_lt (made, S_LONG / 4, "%s: %g of %d tokens generated: the cancel did not stop it early",
                  what, made, S_LONG);
    cr_assert_eq (s_value (m, "splitmesh_kv_cache_positions", "service=\"split-prefix\"", NULL), 0,
                  "%s: split-prefix still holds KV positions", what);
    cr_assert_eq (s_value (m, "splitmesh_kv_cache_positions", "service=\"cloud-target\"", NULL), 0,
                  "%s: cloud-target still holds KV positions", what);
    fprintf (stderr, "gateway_cancel: %s: %g of %d tokens generated before the cancel\n",
             what, made, S_LONG);
    free (m);
    return tokens;
}

//  Opens an SSE completion stream on the gateway and reads until `events`
//  "data: " events arrived. Returns the socket (still open) or -1.
static int
s_open_stream (int events)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    cr_assert_geq (fd, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) s_mesh.gateway_port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    cr_assert_eq (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    char body [256], head [512];
    snprintf (body, sizeof body, "{\"prompt\":\"Once upon a time\",\"max_tokens\":%d,"
              "\"temperature\":0,\"stream\":true}", S_LONG);
    int n = snprintf (head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen (body), body);
    cr_assert_eq (write (fd, head, (size_t) n), n);
    char buf [65536];
    size_t size = 0;
    int seen = 0;
    int64_t end = zclock_mono () + 30000;
    while (seen < events && zclock_mono () < end && size + 1 < sizeof buf) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll (&p, 1, 1000) <= 0)
            continue;
        ssize_t got = read (fd, buf + size, sizeof buf - size - 1);
        if (got <= 0)
            break;
        size += (size_t) got;
        buf [size] = 0;
        seen = 0;
        for (const char *at = buf; (at = strstr (at, "data: ")); at++)
            seen++;
    }
    cr_assert_geq (seen, events, "the stream gave %d events:\n%s", seen, buf);
    cr_assert_null (strstr (buf, "[DONE]"), "the stream ended before the client left:\n%s", buf);
    return fd;
}

Test (gateway_cancel, a_client_that_leaves_stops_its_generation)
{
    char err [4096];
    cr_assert_eq (sm_mesh_prepare (&s_mesh, "sm-cancel", err, sizeof err), 0, "%s", err);
    s_mesh.telemetry = true;
    cr_assert_eq (sm_mesh_up (&s_mesh, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_gt (s_mesh.telemetry_port, 0);
    cr_assert_gt (s_mesh.gateway_port, 0);

    //  1. The HTTP client closes its stream after 3 events.
    int fd = s_open_stream (3);
    close (fd);
    double tokens = s_check_cancelled (1, 0, "SSE client");
    char *m = sm_prom_scrape (s_mesh.telemetry_port);
    cr_assert_eq (s_value (m, "splitmesh_generations_cancelled_total", "service=\"gateway\"", NULL), 1);
    free (m);

    //  2. An MDP client closes its socket after 3 PARTIALs.
    wire_generate_t req;
    wire_msg_init (&wire_generate_desc, &req);
    req.prompt = "Once upon a time";
    req.max_tokens = S_LONG;
    req.stream = true;
    req.draft_k = 4;
    req.seed = 1;
    req.has_seed = true;
    zframe_t *body = wire_encode_frame (&wire_generate_desc, &req, NULL);
    cr_assert_not_null (body);
    zsock_t *client = zsock_new_dealer (s_mesh.broker);
    cr_assert_not_null (client);
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, MDPC_CLIENT);
    uint8_t cmd = MDPC_REQUEST;
    zmsg_addmem (msg, &cmd, 1);
    zmsg_addstr (msg, "generate");
    zmsg_append (msg, &body);
    cr_assert_eq (zmsg_send (&msg, client), 0);
    zsock_set_rcvtimeo (client, 30000);
    for (int partials = 0; partials < 3; partials++) {
        zmsg_t *reply = zmsg_recv (client);
        cr_assert_not_null (reply, "no PARTIAL %d within 30 s", partials);
        zframe_t *header = zmsg_first (reply);
        zframe_t *command = zmsg_next (reply);
        cr_assert (header && zframe_streq (header, MDPC_CLIENT));
        cr_assert (command && zframe_size (command) == 1 && zframe_data (command) [0] == MDPC_PARTIAL,
                   "reply %d is not a PARTIAL", partials);
        zmsg_destroy (&reply);
    }
    zsock_destroy (&client);
    tokens = s_check_cancelled (2, tokens, "MDP client");

    //  3. A non-streaming HTTP client leaves while its answer is being made
    //  (seen as a session holding KV positions in cloud-target).
    fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) s_mesh.gateway_port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    cr_assert_eq (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    char whole [512], head [700];
    snprintf (whole, sizeof whole, "{\"prompt\":\"Once upon a time\",\"max_tokens\":%d,\"temperature\":0}", S_LONG);
    int n = snprintf (head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen (whole), whole);
    cr_assert_eq (write (fd, head, (size_t) n), n);
    bool busy = false;
    int64_t end = zclock_mono () + 10000;
    while (!busy && zclock_mono () < end) {
        m = sm_prom_scrape (s_mesh.telemetry_port);
        busy = m && s_value (m, "splitmesh_kv_cache_positions", "service=\"cloud-target\"", NULL) > 0;
        free (m);
        if (!busy)
            zclock_sleep (50);
    }
    cr_assert (busy, "the non-streaming generation never showed in cloud-target's KV cache");
    close (fd);
    s_check_cancelled (3, tokens, "non-streaming HTTP client");
    m = sm_prom_scrape (s_mesh.telemetry_port);
    cr_assert_eq (s_value (m, "splitmesh_generations_cancelled_total", "service=\"gateway\"", NULL), 2);
    cr_assert_eq (s_value (m, "splitmesh_gateway_requests_total", "endpoint=\"completions\"",
                           "status=\"499\""), 1);
    free (m);
    //  The dashboard's totals count edge-draft's cancels (not the gateway's too).
    sm_http_reply_t series;
    cr_assert_eq (sm_http_get (s_mesh.telemetry_port, "/api/series", 3000, &series), 0);
    double cancelled = -1;
    cr_assert_eq (sm_json_number (series.body, "generations_cancelled", &cancelled), 0);
    cr_assert_eq (cancelled, 3, "dashboard totals: %g cancelled", cancelled);
    sm_http_reply_free (&series);

    //  3. The mesh keeps serving, through both doors.
    sm_gen_result_t *r = sm_generate_simple (s_mesh.broker, "Hello", 8, 0, 0, 1, 4, "model",
                                             "speculative", 30000);
    cr_assert_eq (r->status, 0, "after the cancels: %d %s", r->status, r->error);
    cr_assert_gt (r->n_tokens, 0);
    sm_gen_result_destroy (&r);
    char *reply = NULL;
    int status = sm_http_post (s_mesh.gateway_port, "/v1/chat/completions",
                               "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":8}",
                               30000, &reply);
    cr_assert_eq (status, 200, "%s", reply? reply: "(no answer)");
    free (reply);
}
