/*  test_telemetry_metrics.c: the metrics publisher over a real telemetry bus.

    Runs the broker actor in-process with its XSUB/XPUB telemetry proxy on
    inproc:// endpoints, publishes with core/metrics and subscribes on the
    proxy's XPUB side like splitmesh-telemetry does, decoding every event
    with the schema codec. Checks: counter increments are aggregated
    locally and arrive exactly once; histograms send one event per
    observation; gauges send their last value; names get the splitmesh_
    prefix; bad names and labels are dropped without harm; events made
    before anyone subscribed are held and delivered (no slow-joiner loss);
    destroy flushes; calls from many threads add up; a disabled or NULL
    publisher does nothing; service_count_reply counts in errors_total only
    the statuses the schema flags is_error (409 stale is not one).
*/
#include <criterion/criterion.h>
#include <pthread.h>
#include "broker.h"
#include "codec.h"
#include "metrics.h"
#include "service.h"

static zactor_t *s_broker;
static char s_xsub [64];
static char s_xpub [64];

static void
s_setup (void)
{
    static int run = 0;
    run++;
    char mdp [64];
    snprintf (mdp, sizeof mdp, "inproc://tm-mdp-%d", run);
    snprintf (s_xsub, sizeof s_xsub, "inproc://tm-xsub-%d", run);
    snprintf (s_xpub, sizeof s_xpub, "inproc://tm-xpub-%d", run);
    broker_config_t config = { .endpoints = mdp, .telemetry_xsub = s_xsub, .telemetry_xpub = s_xpub };
    s_broker = zactor_new (broker_actor, &config);
    cr_assert_not_null (s_broker);
    char *bound = broker_endpoint (s_broker);
    cr_assert (bound && *bound);
    zstr_free (&bound);
}

static void
s_teardown (void)
{
    zactor_destroy (&s_broker);
}

TestSuite (telemetry_metrics, .init = s_setup, .fini = s_teardown, .timeout = 30);

static zsock_t *
s_subscriber (void)
{
    zsock_t *sub = zsock_new_sub (s_xpub, METRICS_TOPIC);
    cr_assert_not_null (sub);
    return sub;
}

//  What a subscriber saw from one service.
typedef struct {
    int events;                 //  events of `service`
    double sum;                 //  sum of their values
    double last;                //  last value
    int kind;                   //  kind of the last event
    char name [300];            //  name of the last event
    char labels [300];          //  "k=v,..." of the last event
    int up_events;              //  splitmesh_up events seen
    int other_events;           //  events of other names (not splitmesh_up)
} s_seen_t;

//  Receives events for up to timeout_ms (or until `want` events of name
//  `name` from `service` arrived) and summarises them.
static s_seen_t
s_collect (zsock_t *sub, const char *service, const char *name, int want, int timeout_ms)
{
    s_seen_t seen;
    memset (&seen, 0, sizeof seen);
    int64_t until = zclock_mono () + timeout_ms;
    while (zclock_mono () < until && (want <= 0 || seen.events < want)) {
        zsock_set_rcvtimeo (sub, (int) (until - zclock_mono () > 0? until - zclock_mono (): 1));
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg)
            break;
        cr_assert_eq (zmsg_size (msg), 2, "an event is [topic][metric_event]");
        char *topic = zmsg_popstr (msg);
        cr_assert_str_eq (topic, METRICS_TOPIC);
        zstr_free (&topic);
        zframe_t *body = zmsg_first (msg);
        wire_metric_event_t event;
        wire_err_t err;
        cr_assert_eq (wire_decode_frame (&wire_metric_event_desc, body, &event, &err), 0,
                      "undecodable event: %s", err.text);
        cr_assert_gt (event.ts_ms, 1700000000000ULL, "ts_ms is Unix time in ms");
        if (streq (event.service, service)) {
            if (streq (event.name, "splitmesh_up"))
                seen.up_events++;
            else
            if (name && !streq (event.name, name))
                seen.other_events++;
            if (!name || streq (event.name, name)) {
                seen.events++;
                seen.sum += event.value;
                seen.last = event.value;
                seen.kind = (int) event.kind;
                snprintf (seen.name, sizeof seen.name, "%s", event.name);
                seen.labels [0] = '\0';
                for (size_t i = 0; i < event.labels_count; i++)
                    snprintf (seen.labels + strlen (seen.labels), sizeof seen.labels - strlen (seen.labels),
                              "%s%s=%s", i? ",": "", event.labels [i].key, event.labels [i].value);
            }
        }
        wire_msg_free (&wire_metric_event_desc, &event);
        zmsg_destroy (&msg);
    }
    return seen;
}

Test (telemetry_metrics, counter_increments_are_aggregated_and_arrive_once)
{
    zsock_t *sub = s_subscriber ();
    metrics_t *m = metrics_new ("tester", "t:1", s_xsub);
    cr_assert_not_null (m);
    cr_assert (metrics_enabled (m));
    cr_assert (metrics_wait_subscriber (m, 5000), "subscription never reached the publisher");
    for (int i = 0; i < 1000; i++)
        metrics_count (m, "requests_total", "status=200", 1);
    cr_assert_geq (metrics_flush (m), 1);
    s_seen_t seen = s_collect (sub, "tester", "splitmesh_requests_total", 0, 1500);
    cr_assert_eq (seen.sum, 1000, "counter sum %g, expected 1000", seen.sum);
    cr_assert_leq (seen.events, 5, "1000 increments must be aggregated, got %d events", seen.events);
    cr_assert_eq (seen.kind, WIRE_METRIC_KIND_COUNTER);
    cr_assert_str_eq (seen.labels, "status=200");
    //  Nothing more: a flush with no new increment sends no counter.
    metrics_flush (m);
    seen = s_collect (sub, "tester", "splitmesh_requests_total", 0, 600);
    cr_assert_eq (seen.events, 0);
    metrics_destroy (&m);
    cr_assert_null (m);
    zsock_destroy (&sub);
}

Test (telemetry_metrics, histograms_send_every_observation_and_gauges_the_last_value)
{
    zsock_t *sub = s_subscriber ();
    metrics_t *m = metrics_new ("tester", "t:1", s_xsub);
    cr_assert (metrics_wait_subscriber (m, 5000));
    const double observations [] = { 0.001, 0.25, 3 };
    for (int i = 0; i < 3; i++)
        metrics_observe (m, "verify_seconds", NULL, observations [i]);
    metrics_gauge (m, "batch_size", "device=gpu0", 2);
    metrics_gauge (m, "batch_size", "device=gpu0", 7);
    metrics_flush (m);
    s_seen_t seen = s_collect (sub, "tester", "splitmesh_verify_seconds", 3, 2000);
    cr_assert_eq (seen.events, 3, "one event per observation");
    cr_assert_float_eq (seen.sum, 3.251, 1e-12);
    cr_assert_eq (seen.kind, WIRE_METRIC_KIND_HISTOGRAM);
    metrics_flush (m);
    seen = s_collect (sub, "tester", "splitmesh_batch_size", 1, 2000);
    cr_assert_eq (seen.last, 7);
    cr_assert_eq (seen.kind, WIRE_METRIC_KIND_GAUGE);
    cr_assert_str_eq (seen.labels, "device=gpu0");
    //  Gauges come again every second, and so does splitmesh_up.
    seen = s_collect (sub, "tester", "splitmesh_batch_size", 1, 2500);
    cr_assert_eq (seen.events, 1);
    cr_assert_eq (seen.last, 7);
    cr_assert_geq (seen.up_events, 1);
    metrics_destroy (&m);
    zsock_destroy (&sub);
}

Test (telemetry_metrics, events_before_a_subscriber_are_held_not_lost)
{
    metrics_t *m = metrics_new ("tester", "t:1", s_xsub);
    cr_assert_not_null (m);
    for (int i = 0; i < 5; i++)
        metrics_count (m, "tokens_generated_total", NULL, 1);
    metrics_observe (m, "ttft_seconds", NULL, 0.5);
    cr_assert_eq (metrics_flush (m), -1, "no subscriber yet: nothing may be sent");
    zclock_sleep (300);         //  past a background flush: still held
    zsock_t *sub = s_subscriber ();
    s_seen_t seen = s_collect (sub, "tester", "splitmesh_tokens_generated_total", 0, 2000);
    cr_assert_eq (seen.sum, 5, "held increments lost: got %g", seen.sum);
    metrics_destroy (&m);
    zsock_destroy (&sub);
}

Test (telemetry_metrics, destroy_flushes_what_is_pending)
{
    zsock_t *sub = s_subscriber ();
    metrics_t *m = metrics_new ("tester", "t:1", s_xsub);
    cr_assert (metrics_wait_subscriber (m, 5000));
    metrics_count (m, "errors_total", "status=503", 3);
    metrics_destroy (&m);
    s_seen_t seen = s_collect (sub, "tester", "splitmesh_errors_total", 1, 2000);
    cr_assert_eq (seen.sum, 3);
    cr_assert_str_eq (seen.labels, "status=503");
    zsock_destroy (&sub);
}

Test (telemetry_metrics, bad_names_and_labels_are_ignored)
{
    zsock_t *sub = s_subscriber ();
    metrics_t *m = metrics_new ("tester", "t:1", s_xsub);
    cr_assert (metrics_wait_subscriber (m, 5000));
    metrics_count (m, "bad name", NULL, 1);
    metrics_count (m, "9starts_with_digit", NULL, 1);
    metrics_count (m, NULL, NULL, 1);
    metrics_count (m, "x_total", "service=edge", 1);        //  reserved
    metrics_count (m, "x_total", "noequals", 1);
    metrics_count (m, "x_total", "a=1,a=2", 1);             //  twice
    metrics_count (m, "x_total", "__hidden=1", 1);
    metrics_count (m, "x_total", NULL, -1);                 //  negative delta
    metrics_observe (m, "y_seconds", NULL, NAN);
    metrics_gauge (m, "z", NULL, INFINITY);
    metrics_count (m, "x_total", "ok=yes", 2);              //  the only good one
    metrics_flush (m);
    s_seen_t seen = s_collect (sub, "tester", "splitmesh_x_total", 0, 800);
    cr_assert_eq (seen.events, 1);
    cr_assert_eq (seen.sum, 2);
    cr_assert_str_eq (seen.labels, "ok=yes");
    cr_assert_eq (seen.other_events, 0, "a bad metric call was published");
    metrics_destroy (&m);
    zsock_destroy (&sub);
}

typedef struct {
    metrics_t *m;
    int count;
} s_worker_arg_t;

static void *
s_counting_thread (void *arg)
{
    s_worker_arg_t *w = (s_worker_arg_t *) arg;
    for (int i = 0; i < w->count; i++) {
        metrics_count (w->m, "link_bytes_total", "direction=up", 10);
        if (i % 100 == 0)
            metrics_observe (w->m, "inter_token_seconds", NULL, 0.01);
    }
    return NULL;
}

Test (telemetry_metrics, calls_from_many_threads_add_up)
{
    zsock_t *sub = s_subscriber ();
    metrics_t *m = metrics_new ("tester", "t:1", s_xsub);
    cr_assert (metrics_wait_subscriber (m, 5000));
    pthread_t threads [4];
    s_worker_arg_t arg = { m, 20000 };
    for (int i = 0; i < 4; i++)
        pthread_create (&threads [i], NULL, s_counting_thread, &arg);
    for (int i = 0; i < 4; i++)
        pthread_join (threads [i], NULL);
    metrics_flush (m);
    s_seen_t seen = s_collect (sub, "tester", "splitmesh_link_bytes_total", 0, 1200);
    cr_assert_eq (seen.sum, 4 * 20000 * 10.0);
    metrics_destroy (&m);
    zsock_destroy (&sub);
}

Test (telemetry_metrics, disabled_and_null_publishers_do_nothing)
{
    metrics_t *m = metrics_new ("tester", NULL, NULL);
    cr_assert_not_null (m);
    cr_assert_not (metrics_enabled (m));
    metrics_count (m, "x_total", NULL, 1);
    metrics_gauge (m, "x", NULL, 1);
    metrics_observe (m, "x_seconds", NULL, 1);
    cr_assert_eq (metrics_flush (m), -1);
    cr_assert_not (metrics_wait_subscriber (m, 10));
    metrics_destroy (&m);
    metrics_destroy (&m);                   //  harmless twice
    metrics_count (NULL, "x_total", NULL, 1);
    cr_assert_eq (metrics_flush (NULL), -1);
    cr_assert_null (metrics_new ("tester", NULL, "bogus://endpoint"));
}

Test (telemetry_metrics, labels_parse)
{
    char buf [256], error [200];
    char *keys [4], *values [4];
    cr_assert_eq (metrics_labels_parse ("status=200,pos=3", buf, sizeof buf, keys, values, 4,
                                        error, sizeof error), 2);
    cr_assert_str_eq (keys [0], "status");
    cr_assert_str_eq (values [0], "200");
    cr_assert_str_eq (keys [1], "pos");
    cr_assert_str_eq (values [1], "3");
    cr_assert_eq (metrics_labels_parse ("", buf, sizeof buf, keys, values, 4, error, sizeof error), 0);
    cr_assert_eq (metrics_labels_parse (NULL, buf, sizeof buf, keys, values, 4, error, sizeof error), 0);
    cr_assert_eq (metrics_labels_parse ("path=a=b", buf, sizeof buf, keys, values, 4, error, sizeof error), 1);
    cr_assert_str_eq (values [0], "a=b");
    cr_assert_eq (metrics_labels_parse ("k=", buf, sizeof buf, keys, values, 4, error, sizeof error), 1);
    cr_assert_str_eq (values [0], "");
    cr_assert_eq (metrics_labels_parse ("a=1,b=2,c=3,d=4,e=5", buf, sizeof buf, keys, values, 4,
                                        error, sizeof error), -1);
    cr_assert (strstr (error, "more than 4"));
    cr_assert_eq (metrics_labels_parse ("instance=x", buf, sizeof buf, keys, values, 4, error, sizeof error), -1);
    cr_assert (strstr (error, "reserved"));
    cr_assert_eq (metrics_name_valid ("splitmesh_ok:sub_total"), 0);
    cr_assert_eq (metrics_name_valid ("has space"), -1);
    cr_assert_eq (metrics_name_valid (""), -1);
}

//  Sums, per "name{labels}", the events of `service` that arrive within
//  timeout_ms into out ("name{labels}=sum;" entries).
static void
s_collect_all (zsock_t *sub, const char *service, int timeout_ms, char *out, size_t size)
{
    char keys [16][128];
    double sums [16];
    int n = 0;
    int64_t until = zclock_mono () + timeout_ms;
    while (zclock_mono () < until) {
        zsock_set_rcvtimeo (sub, (int) (until - zclock_mono () > 0? until - zclock_mono (): 1));
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg)
            break;
        wire_metric_event_t event;
        if (zmsg_size (msg) == 2
        &&  wire_decode_frame (&wire_metric_event_desc, zmsg_last (msg), &event, NULL) == 0) {
            if (streq (event.service, service) && !streq (event.name, "splitmesh_up")) {
                char key [128];
                snprintf (key, sizeof key, "%s{", event.name);
                for (size_t i = 0; i < event.labels_count; i++)
                    snprintf (key + strlen (key), sizeof key - strlen (key), "%s%s=%s",
                              i? ",": "", event.labels [i].key, event.labels [i].value);
                snprintf (key + strlen (key), sizeof key - strlen (key), "}");
                int k = 0;
                while (k < n && !streq (keys [k], key))
                    k++;
                cr_assert_lt (k, 16, "too many series");
                if (k == n) {
                    snprintf (keys [n], sizeof keys [n], "%s", key);
                    sums [n++] = 0;
                }
                sums [k] += event.value;
            }
            wire_msg_free (&wire_metric_event_desc, &event);
        }
        zmsg_destroy (&msg);
    }
    *out = '\0';
    for (int k = 0; k < n; k++)
        snprintf (out + strlen (out), size - strlen (out), "%s=%g;", keys [k], sums [k]);
}

//  errors_total follows the schema's is_error flag, not "status >= 400":
//  two 409 stale replies are requests but no errors; 422 and 503 are both.
Test (telemetry_metrics, service_count_reply_follows_the_schema_is_error_flag)
{
    cr_assert_not (wire_status_is_error (409));
    cr_assert (wire_status_is_error (422));
    zsock_t *sub = s_subscriber ();
    metrics_t *m = metrics_new ("tester", "t:1", s_xsub);
    cr_assert (metrics_wait_subscriber (m, 5000));
    int statuses [] = { 409, 422, 409, 503 };
    for (size_t i = 0; i < sizeof statuses / sizeof statuses [0]; i++) {
        zframe_t *reply = service_error (statuses [i], "status %d", statuses [i]);
        cr_assert_not_null (reply);
        service_count_reply (m, reply);
        zframe_destroy (&reply);
    }
    metrics_destroy (&m);
    char seen [2048];
    s_collect_all (sub, "tester", 1500, seen, sizeof seen);
    cr_assert (strstr (seen, "splitmesh_requests_total{status=409}=2;"), "%s", seen);
    cr_assert (strstr (seen, "splitmesh_requests_total{status=422}=1;"), "%s", seen);
    cr_assert (strstr (seen, "splitmesh_requests_total{status=503}=1;"), "%s", seen);
    cr_assert (strstr (seen, "splitmesh_errors_total{status=422}=1;"), "%s", seen);
    cr_assert (strstr (seen, "splitmesh_errors_total{status=503}=1;"), "%s", seen);
    cr_assert_null (strstr (seen, "splitmesh_errors_total{status=409}"),
                    "a 409 stale reply was counted as an error: %s", seen);
    zsock_destroy (&sub);
}
