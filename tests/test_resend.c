/*  test_resend.c: the two clients that resend (the gateway and
    `splitmesh generate`, the only ones that turn on
    mdp_client_set_keep_for_resend) send a request lost with a restarting
    broker again, and answer from the new attempt alone.

    A real splitmesh-broker (killed with SIGKILL and started again on the
    same endpoint) and the real client process; the `generate` service is
    a worker in this test (mdp_worker, fast heartbeats so it finds the new
    broker quickly) that numbers the attempts it receives: each answer
    says which attempt made it. Two places can lose a request:

    1. before the first reply: attempt 1 gets no answer at all. Both
       clients send it again and print attempt 2's answer.
    2. mid-answer: attempt 1 sends a PARTIAL, then the broker dies before
       the FINAL. The gateway collects a non-streaming answer whole before
       responding, so it starts over and must drop attempt 1's text and
       token count: the HTTP answer is attempt 2's alone. `generate` has
       already printed attempt 1's text, so it must not start over: it
       says the generation was interrupted and exits 1.
*/
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "codec.h"
#include "mdp_worker.h"
#include "sm_cli.h"
#include "sm_gateway.h"
#include "sm_http.h"
#include "sm_mdp.h"
#include "sm_proc.h"

static char s_ep [64];
static pid_t s_broker;
static zactor_t *s_worker;
static atomic_int s_attempts;           //  requests the worker received
static atomic_bool s_partial_then_silence;  //  attempt 1: a PARTIAL first
static atomic_bool s_broker_killed;         //  the test killed the broker

static void
s_fini (void)
{
    zactor_destroy (&s_worker);
    sm_proc_kill_all ();
}

TestSuite (resend, .fini = s_fini, .timeout = 90);

static pid_t
s_broker_spawn (void)
{
    return sm_spawn (NULL, "splitmesh-broker", "-e", s_ep, NULL);
}

static zmsg_t *
s_body (const wire_desc_t *desc, const void *msg)
{
    zframe_t *frame = wire_encode_frame (desc, msg, NULL);
    zmsg_t *body = zmsg_new ();
    zmsg_append (body, &frame);
    return body;
}

//  The `generate` service. Attempt 1 is lost: no answer (or, in case 2, a
//  PARTIAL) until the broker is killed, then a FINAL into the void (the
//  worker registers with the new broker only once it answered every
//  request of the old one). Later attempts answer "attempt-N " (PARTIAL)
//  and "done" (FINAL).
static void
s_worker_actor (zsock_t *pipe, void *args)
{
    mdp_worker_options_t options = { .heartbeat_ms = 200, .liveness = 3,
                                     .reconnect_ms = 100, .reconnect_max_ms = 200 };
    mdp_worker_t *worker = mdp_worker_new (s_ep, "generate", &options);
    zsock_signal (pipe, worker? 0: 1);
    zpoller_t *poller = zpoller_new (pipe, worker? mdp_worker_sock (worker): NULL, NULL);
    while (worker) {
        zsock_t *which = (zsock_t *) zpoller_wait (poller, -1);
        if (which == pipe || !which)
            break;
        zframe_t *client = NULL;
        zmsg_t *request = mdp_worker_recv (worker, 0, &client);
        if (!request)
            continue;
        zmsg_destroy (&request);
        int attempt = atomic_fetch_add (&s_attempts, 1) + 1;
        char text [32];
        snprintf (text, sizeof text, "attempt-%d ", attempt);
        int32_t tokens [2] = { 7, 8 };
        wire_generate_partial_t part;
        wire_msg_init (&wire_generate_partial_desc, &part);
        part.text = text;
        part.tokens = tokens;
        part.tokens_count = attempt == 1? 2: 1;
        if (attempt > 1 || atomic_load (&s_partial_then_silence)) {
            zmsg_t *body = s_body (&wire_generate_partial_desc, &part);
            mdp_worker_send_partial (worker, client, &body);
        }
        for (int i = 0; attempt == 1 && i < 400 && !atomic_load (&s_broker_killed); i++)
            zclock_sleep (25);
        {
            wire_generate_final_t final;
            wire_msg_init (&wire_generate_final_desc, &final);
            final.text = attempt == 1? "attempt-1 lost": "done";
            final.tokens = tokens;
            final.tokens_count = 1;
            final.finish_reason = WIRE_FINISH_REASON_STOP;
            zmsg_t *body = s_body (&wire_generate_final_desc, &final);
            mdp_worker_send_final (worker, client, &body);
        }
        zframe_destroy (&client);
    }
    zpoller_destroy (&poller);
    mdp_worker_destroy (&worker);
}

//  Starts splitmesh-gateway on the broker; returns its HTTP port once up.
static int
s_gateway_start (void)
{
    int port = sm_free_tcp_port ();
    char port_text [16];
    snprintf (port_text, sizeof port_text, "%d", port);
    sm_spawn (NULL, "splitmesh-gateway", "--broker", s_ep, "--http-port", port_text,
              "--timeout-ms", "20000", "-v", NULL);
    sm_http_reply_t health = { 0 };
    bool up = false;
    for (int i = 0; i < 100 && !up; i++) {
        up = sm_http_get (port, "/v1/models", 1000, &health) == 0 && health.status == 200;
        sm_http_reply_free (&health);
        if (!up)
            zclock_sleep (100);
    }
    cr_assert (up, "the gateway did not come up");
    return port;
}

//  The client, run in a thread while the test kills the broker: an HTTP
//  POST to the gateway at `port`, or `splitmesh generate` when port is 0.
typedef struct {
    int port;
    int status;                 //  HTTP status, or generate's exit status
    char *reply;                //  HTTP answer (owned)
    sm_cli_result_t *cli;       //  generate's output (owned)
} s_client_t;

static void *
s_client_thread (void *arg)
{
    s_client_t *client = (s_client_t *) arg;
    if (client->port)
        client->status = sm_http_post (client->port, "/v1/completions",
                                       "{\"prompt\":\"hi\",\"max_tokens\":8}", 30000,
                                       &client->reply);
    else {
        client->cli = SM_SPLITMESH (40, "generate", "--broker", s_ep, "--timeout", "20", "hi");
        client->status = client->cli->status;
    }
    return NULL;
}

//  Starts the broker and the worker (and the gateway when gateway is
//  true), runs the client while the broker dies with attempt 1 and comes
//  back, and returns what the client got (caller frees with s_client_free).
static s_client_t
s_run (bool gateway, bool partial_then_silence)
{
    atomic_store (&s_attempts, 0);
    atomic_store (&s_broker_killed, false);
    atomic_store (&s_partial_then_silence, partial_then_silence);
    snprintf (s_ep, sizeof s_ep, "tcp://127.0.0.1:%d", sm_free_tcp_port ());
    s_broker = s_broker_spawn ();
    cr_assert_gt (s_broker, 0);
    s_worker = zactor_new (s_worker_actor, NULL);
    cr_assert_not_null (s_worker);
    cr_assert (sm_mdp_wait_workers (s_ep, "generate", 1, 10000));
    s_client_t client = { 0 };
    if (gateway)
        client.port = s_gateway_start ();
    pthread_t thread;
    cr_assert_eq (pthread_create (&thread, NULL, s_client_thread, &client), 0);
    //  Attempt 1 reached the worker (and, in case 2, its PARTIAL the
    //  gateway): the broker dies with the request and comes back.
    for (int i = 0; i < 200 && atomic_load (&s_attempts) < 1; i++)
        zclock_sleep (50);
    cr_assert_eq (atomic_load (&s_attempts), 1, "the request never reached the worker");
    zclock_sleep (300);
    sm_kill (s_broker, SIGKILL, 2000);
    atomic_store (&s_broker_killed, true);
    s_broker = s_broker_spawn ();
    pthread_join (thread, NULL);
    return client;
}

static void
s_client_free (s_client_t *client)
{
    free (client->reply);
    sm_cli_result_destroy (&client->cli);
}

//  The gateway's answer is attempt 2's alone: text and token count.
static void
s_assert_gateway_answer (s_client_t *client)
{
    const char *reply = client->reply? client->reply: "";
    cr_assert_eq (client->status, 200, "HTTP %d:\n%s", client->status, reply);
    cr_assert_eq (atomic_load (&s_attempts), 2, "the gateway did not send the request again once");
    cr_assert (strstr (reply, "\"text\":\"attempt-2 done\""), "not attempt 2's answer alone:\n%s", reply);
    cr_assert_null (strstr (reply, "attempt-1"), "the lost attempt's text leaked into the answer:\n%s",
                    reply);
    //  Tokens: attempt 2's PARTIAL (1) and FINAL (1), not attempt 1's 2.
    cr_assert (strstr (reply, "\"completion_tokens\":2"), "usage:\n%s", reply);
}

Test (resend, gateway_request_lost_before_the_first_reply_is_sent_again)
{
    s_client_t client = s_run (true, false);
    s_assert_gateway_answer (&client);
    s_client_free (&client);
}

Test (resend, gateway_request_lost_mid_answer_starts_over)
{
    s_client_t client = s_run (true, true);
    s_assert_gateway_answer (&client);
    s_client_free (&client);
}

Test (resend, generate_request_lost_before_the_first_reply_is_sent_again)
{
    s_client_t client = s_run (false, false);
    sm_cli_result_t *r = client.cli;
    cr_assert_eq (r->status, 0, "generate exit %d:\n%s", r->status, r->err);
    cr_assert_eq (atomic_load (&s_attempts), 2, "generate did not send the request again once");
    cr_assert (strstr (r->err, "sending the request again (1/"), "%s", r->err);
    cr_assert (strstr (r->out, "attempt-2 done"), "stdout:\n%s", r->out);
    cr_assert_null (strstr (r->out, "attempt-1"), "stdout:\n%s", r->out);
    s_client_free (&client);
}

//  Text already printed cannot be taken back: no resend, a clear error.
Test (resend, generate_request_lost_mid_answer_is_reported_not_resent)
{
    s_client_t client = s_run (false, true);
    sm_cli_result_t *r = client.cli;
    cr_assert_eq (r->status, 1, "generate exit %d:\n%s", r->status, r->err);
    cr_assert_eq (atomic_load (&s_attempts), 1, "generate resent after printing tokens");
    cr_assert (strstr (r->out, "attempt-1 "), "stdout:\n%s", r->out);
    cr_assert (strstr (r->err, "after 2 tokens; the generation was interrupted"), "%s", r->err);
    s_client_free (&client);
}
