/*  test_services_metrics.c: cloud-target and split-prefix publish their
    metrics on the telemetry bus (docs/metrics.md): requests_total and
    errors_total by status, verify_seconds, batch_size, kv_cache_positions.

    A real broker with its telemetry proxy, a split-prefix and a
    cloud-target on a tiny model, a SUB socket on the proxy's XPUB side.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "codec.h"
#include "sm_mdp.h"
#include "sm_proc.h"

static char *s_dir;

static void
s_fini (void)
{
    sm_proc_kill_all ();
    if (s_dir)
        sm_tmpdir_remove (&s_dir);
}

static zframe_t *
s_call (const char *ep, const char *service, const wire_desc_t *desc, const void *msg)
{
    zframe_t *body = wire_encode_frame (desc, msg, NULL);
    cr_assert_not_null (body);
    zmsg_t *req = zmsg_new ();
    zmsg_append (req, &body);
    zmsg_t *reply = sm_mdp_call (ep, service, &req, 10000);
    cr_assert_not_null (reply);
    zframe_t *frame = zmsg_pop (reply);
    zmsg_destroy (&reply);
    return frame;
}

Test (services_metrics, published_on_the_bus, .fini = s_fini, .timeout = 60)
{
    s_dir = sm_tmpdir_new ("svcmet");
    char model [600], log [600], ep [64], xsub [64], xpub [64];
    snprintf (model, sizeof model, "%s/tiny.gguf", s_dir);
    pid_t pid = sm_spawn (NULL, "splitmesh", "tiny-model", "--out", model, "--layers", "2", NULL);
    int status;
    cr_assert_eq (sm_wait (pid, 30000, &status), 0);
    snprintf (ep, sizeof ep, "tcp://127.0.0.1:%d", sm_free_tcp_port ());
    snprintf (xsub, sizeof xsub, "tcp://127.0.0.1:%d", sm_free_tcp_port ());
    snprintf (xpub, sizeof xpub, "tcp://127.0.0.1:%d", sm_free_tcp_port ());
    snprintf (log, sizeof log, "%s/broker.log", s_dir);
    sm_spawn (log, "splitmesh-broker", "-e", ep, "--telemetry-xsub", xsub, "--telemetry-xpub", xpub, NULL);
    zsock_t *sub = zsock_new_sub (xpub, "metric");
    cr_assert_not_null (sub);
    snprintf (log, sizeof log, "%s/prefix.log", s_dir);
    sm_spawn (log, "splitmesh-split-prefix", "--broker", ep, "--telemetry", xsub, "--model", model,
              "--split", "1", "--threads", "1", NULL);
    snprintf (log, sizeof log, "%s/target.log", s_dir);
    sm_spawn (log, "splitmesh-cloud-target", "--broker", ep, "--telemetry", xsub, "--model", model,
              "--split", "1", "--threads", "1", NULL);
    cr_assert (sm_mdp_wait_workers (ep, "prefix", 1, 10000));
    cr_assert (sm_mdp_wait_workers (ep, "target", 1, 10000));

    int32_t tokens [3] = { 5, 6, 7 };
    wire_prefill_t pre;
    wire_msg_init (&wire_prefill_desc, &pre);
    pre.session = "m";
    pre.tokens = tokens;
    pre.tokens_count = 3;
    zframe_t *f = s_call (ep, "prefix", &wire_prefill_desc, &pre);
    wire_activations_reply_t a;
    cr_assert_eq (wire_decode_frame (&wire_activations_reply_desc, f, &a, NULL), 0);
    zframe_destroy (&f);
    pre.tokens = NULL;
    pre.tokens_count = 0;
    pre.activations = a.activations;
    f = s_call (ep, "target", &wire_prefill_desc, &pre);
    zframe_destroy (&f);
    wire_verify_t v;
    wire_msg_init (&wire_verify_desc, &v);
    v.session = "m";
    v.pos = 2;
    a.activations->n_pos = 1;
    a.activations->data.size /= 3;
    a.activations->scales.size /= 3;
    v.activations = a.activations;
    f = s_call (ep, "target", &wire_verify_desc, &v);
    zframe_destroy (&f);
    v.session = "gone";
    f = s_call (ep, "target", &wire_verify_desc, &v);
    zframe_destroy (&f);
    wire_msg_free (&wire_activations_reply_desc, &a);

    //  Events arrive within a few flush intervals.
    bool verify = false, batch = false, kv = false, ok = false, e404 = false, prefix_kv = false;
    int64_t end = zclock_mono () + 8000;
    zpoller_t *poller = zpoller_new (sub, NULL);
    while (zclock_mono () < end && !(verify && batch && kv && ok && e404 && prefix_kv)) {
        if (!zpoller_wait (poller, 200))
            continue;
        zmsg_t *msg = zmsg_recv (sub);
        zframe_t *body = zmsg_last (msg);
        wire_metric_event_t ev;
        if (body && wire_decode_frame (&wire_metric_event_desc, body, &ev, NULL) == 0) {
            bool target = streq (ev.service, "cloud-target");
            verify |= target && streq (ev.name, "splitmesh_verify_seconds") && ev.value > 0;
            batch |= target && streq (ev.name, "splitmesh_batch_size") && ev.value == 1;
            kv |= target && streq (ev.name, "splitmesh_kv_cache_positions") && ev.value == 3;
            prefix_kv |= streq (ev.service, "split-prefix")
                      && streq (ev.name, "splitmesh_kv_cache_positions") && ev.value == 3;
            if (target && ev.labels_count == 1 && streq (ev.labels [0].key, "status")) {
                ok |= streq (ev.name, "splitmesh_requests_total") && streq (ev.labels [0].value, "200");
                e404 |= streq (ev.name, "splitmesh_errors_total") && streq (ev.labels [0].value, "404");
            }
            wire_msg_free (&wire_metric_event_desc, &ev);
        }
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&sub);
    cr_assert (verify, "no splitmesh_verify_seconds from cloud-target");
    cr_assert (batch, "no splitmesh_batch_size 1");
    cr_assert (kv, "no splitmesh_kv_cache_positions 3 from cloud-target");
    cr_assert (prefix_kv, "no splitmesh_kv_cache_positions 3 from split-prefix");
    cr_assert (ok, "no requests_total{status=200}");
    cr_assert (e404, "no errors_total{status=404}");
}
