/*  test_gateway_resend.c: the gateway sends a request lost with a
    restarting broker again, and answers from the new attempt alone.

    A real splitmesh-broker (killed with SIGKILL and started again on the
    same endpoint) and a real splitmesh-gateway process; the `generate`
    service is a worker in this test (mdp_worker, fast heartbeats so it
    finds the new broker quickly) that numbers the attempts it receives:
    each answer says which attempt made it. Two places can lose a
    request, and both go through the gateway's one resend path:

    1. before the first reply (the reply that decides the HTTP status):
       attempt 1 gets no answer at all;
    2. mid-answer of a non-streaming request: attempt 1 sends a PARTIAL,
       then the broker dies before the FINAL. The gateway collects the
       whole answer before responding, so it may start over, and must
       drop attempt 1's text and token count.

    Either way the HTTP answer is 200 with attempt 2's text only.
*/
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "codec.h"
#include "mdp_worker.h"
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

TestSuite (gateway_resend, .fini = s_fini, .timeout = 90);

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

typedef struct {
    int port;
    int status;
    char *reply;
} s_post_t;

static void *
s_post_thread (void *arg)
{
    s_post_t *post = (s_post_t *) arg;
    post->status = sm_http_post (post->port, "/v1/completions",
                                 "{\"prompt\":\"hi\",\"max_tokens\":8}", 30000, &post->reply);
    return NULL;
}

static void
s_run (bool partial_then_silence)
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

    s_post_t post = { .port = port };
    pthread_t thread;
    cr_assert_eq (pthread_create (&thread, NULL, s_post_thread, &post), 0);
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

    cr_assert_eq (post.status, 200, "HTTP %d:\n%s", post.status, post.reply? post.reply: "");
    cr_assert_geq (atomic_load (&s_attempts), 2, "the gateway did not send the request again");
    cr_assert (strstr (post.reply, "\"text\":\"attempt-2 done\""),
               "not attempt 2's answer alone:\n%s", post.reply);
    cr_assert_null (strstr (post.reply, "attempt-1"),
                    "the lost attempt's text leaked into the answer:\n%s", post.reply);
    //  Tokens: attempt 2's PARTIAL (1) and FINAL (1), not attempt 1's 2.
    cr_assert (strstr (post.reply, "\"completion_tokens\":2"), "usage:\n%s", post.reply);
    free (post.reply);
}

Test (gateway_resend, request_lost_before_the_first_reply_is_sent_again)
{
    s_run (false);
}

Test (gateway_resend, request_lost_mid_answer_starts_over)
{
    s_run (true);
}
