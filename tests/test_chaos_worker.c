/*  test_chaos_worker.c: a worker busy with an orphan does not register.

    Found by the chaos suite: after a broker restart, an edge-draft worker
    whose thread was still inside a generation from before the restart (an
    orphan: its client is gone, its replies are dropped) registered again
    at once, so the new broker gave it the retried generation, which then
    waited behind the orphan for edge-draft's whole call timeout.
    core/mdp_worker.c now holds back READY while the caller holds as many
    orphans as the worker's capacity, and registers as soon as their FINALs
    come back. This test restarts a real broker under an in-process worker
    of capacity 1 that is holding a request: the new broker must list no
    worker for the service until the worker answers the orphan, then the
    worker must register and serve a new request.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <limits.h>
#include <signal.h>
#include "mdp_common.h"
#include "mdp_client.h"
#include "mdp_worker.h"
#include "sm_mdp.h"
#include "sm_proc.h"

static char *s_dir;
static char s_log [PATH_MAX];
static char s_ep [64];
static mdp_worker_t *s_worker;

static void
s_init (void)
{
    s_dir = sm_tmpdir_new ("chaos-worker");
    cr_assert_not_null (s_dir);
    snprintf (s_log, sizeof s_log, "%s/broker.log", s_dir);
    int port = sm_free_tcp_port ();
    cr_assert_gt (port, 0);
    snprintf (s_ep, sizeof s_ep, "tcp://127.0.0.1:%d", port);
}

static void
s_fini (void)
{
    mdp_worker_destroy (&s_worker);
    sm_proc_kill_all ();
    sm_tmpdir_remove (&s_dir);
}

static pid_t
s_broker (void)
{
    pid_t pid = sm_spawn (s_log, "splitmesh-broker", "-e", s_ep, "--heartbeat-ms", "100", NULL);
    cr_assert_gt (pid, 0);
    return pid;
}

//  mmi.workers of `service` on the broker: its worker count, -1 on no answer.
static int
s_workers (const char *service)
{
    mdp_client_t *client = mdp_client_new (s_ep);
    cr_assert_not_null (client);
    mdp_client_set_timeout (client, 1000);
    mdp_client_set_retries (client, 0);
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, service);
    zmsg_t *reply = mdp_client_request (client, "mmi.workers", &body);
    int n = -1;
    if (reply) {
        char *text = zmsg_popstr (reply);
        n = text? atoi (text): -1;
        zstr_free (&text);
        zmsg_destroy (&reply);
    }
    mdp_client_destroy (&client);
    return n;
}

Test (chaos_worker, orphan_holds_back_ready_after_broker_restart, .init = s_init, .fini = s_fini, .timeout = 60)
{
    pid_t broker = s_broker ();
    mdp_worker_options_t opt = { .heartbeat_ms = 100, .liveness = 3, .reconnect_ms = 50,
                                 .reconnect_max_ms = 100, .capacity = 1 };
    s_worker = mdp_worker_new (s_ep, "orphan", &opt);
    cr_assert_not_null (s_worker);
    cr_assert (sm_mdp_wait_workers (s_ep, "orphan", 1, 10000), "the worker never registered");

    //  Request A reaches the worker, which keeps it (a long generation).
    mdp_client_t *a = mdp_client_new (s_ep);
    cr_assert_not_null (a);
    cr_assert_eq (mdp_client_send_mem (a, "orphan", "a", 1), 0);
    zframe_t *client_a = NULL;
    zmsg_t *req_a = mdp_worker_recv (s_worker, 5000, &client_a);
    cr_assert_not_null (req_a, "request A never reached the worker");
    zmsg_destroy (&req_a);

    //  The broker dies and comes back on the same endpoint: A is an orphan.
    sm_kill (broker, SIGKILL, 2000);
    broker = s_broker ();
    //  Three liveness windows and more: without the fix the worker has
    //  long registered with the new broker by now.
    zclock_sleep (1500);
    int n = s_workers ("orphan");
    cr_assert_eq (n, 0, "the worker registered (%d) while its only slot held an orphan", n);

    //  The caller finishes A: its reply is dropped, and the worker registers.
    zmsg_t *reply_a = zmsg_new ();
    zmsg_addstr (reply_a, "late");
    cr_assert_eq (mdp_worker_send_final (s_worker, client_a, &reply_a), 0);
    zframe_destroy (&client_a);
    cr_assert (sm_mdp_wait_workers (s_ep, "orphan", 1, 5000), "the worker did not register after the orphan ended");

    //  And it serves a new request B.
    mdp_client_t *b = mdp_client_new (s_ep);
    cr_assert_not_null (b);
    cr_assert_eq (mdp_client_send_mem (b, "orphan", "b", 1), 0);
    zframe_t *client_b = NULL;
    zmsg_t *req_b = mdp_worker_recv (s_worker, 5000, &client_b);
    cr_assert_not_null (req_b, "request B never reached the worker");
    char *text = zmsg_popstr (req_b);
    cr_expect_str_eq (text, "b");
    zstr_free (&text);
    zmsg_destroy (&req_b);
    zmsg_t *reply_b = zmsg_new ();
    zmsg_addstr (reply_b, "done");
    cr_assert_eq (mdp_worker_send_final (s_worker, client_b, &reply_b), 0);
    zframe_destroy (&client_b);
    int command = 0;
    zmsg_t *got = mdp_client_recv (b, 5000, &command, NULL);
    cr_assert_not_null (got, "client B got no answer");
    cr_expect_eq (command, MDPC_FINAL);
    zmsg_destroy (&got);
    mdp_client_destroy (&a);
    mdp_client_destroy (&b);
}
