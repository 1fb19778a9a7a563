/*  bench_metrics.c: what telemetry costs.

    1. count_ns / observe_ns: one metrics_count / metrics_observe call on
       the caller's thread (the hot path every service pays), with a
       subscriber connected so the background flush really publishes.
    2. pipeline: `events` histogram observations from one publisher through
       the broker's XSUB/XPUB proxy (in-process, over ipc://) to a
       subscriber that decodes each and adds it to a metrics_store, as
       splitmesh-telemetry does: events per second end to end and how many
       arrived (a PUB/SUB path drops when a queue overflows; this says
       whether it did).
    3. exposition_us: rendering /metrics for a store of 1000 series (100
       counters, gauges and histograms with 10 label values each).

    Prints one JSON object; bench/metrics/run.sh records it.
    Usage: bench_metrics [events]
*/
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "broker.h"
#include "codec.h"
#include "metrics.h"
#include "metrics_store.h"

static double
s_now (void)
{
    return (double) zclock_usecs () / 1e6;
}

int
main (int argc, char **argv)
{
    //  Default below METRICS_MAX_PENDING: a bigger burst within one flush
    //  interval is cut at the source (counted as dropped) by design.
    int events = argc > 1? atoi (argv [1]): 60000;
    zsys_init ();
    zsys_set_logstream (NULL);
    char dir [] = "/tmp/bench-metrics-XXXXXX";
    if (!mkdtemp (dir))
        return 1;
    char mdp [128], xsub [128], xpub [128];
    snprintf (mdp, sizeof mdp, "ipc://%s/mdp", dir);
    snprintf (xsub, sizeof xsub, "ipc://%s/in", dir);
    snprintf (xpub, sizeof xpub, "ipc://%s/out", dir);
    broker_config_t config = { .endpoints = mdp, .telemetry_xsub = xsub, .telemetry_xpub = xpub };
    zactor_t *broker = zactor_new (broker_actor, &config);
    zsock_t *sub = zsock_new (ZMQ_SUB);
    zsock_set_rcvhwm (sub, 100000);         //  as splitmesh-telemetry sets it
    zsock_connect (sub, "%s", xpub);
    zsock_set_subscribe (sub, METRICS_TOPIC);
    metrics_t *m = metrics_new ("bench", "b:1", xsub);
    if (!m || !metrics_wait_subscriber (m, 5000)) {
        fprintf (stderr, "bench_metrics: no subscriber\n");
        return 1;
    }

    //  1. Call cost.
    const int calls = 2000000;
    double t0 = s_now ();
    for (int i = 0; i < calls; i++)
        metrics_count (m, "bench_total", "status=200", 1);
    double count_ns = (s_now () - t0) * 1e9 / calls;
    const int observes = 50000;
    t0 = s_now ();
    for (int i = 0; i < observes; i++)
        metrics_observe (m, "bench_call_seconds", NULL, 0.001);
    double observe_ns = (s_now () - t0) * 1e9 / observes;
    metrics_flush (m);
    //  Drain what those calls published.
    zsock_set_rcvtimeo (sub, 500);
    while (true) {
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg)
            break;
        zmsg_destroy (&msg);
    }

    //  2. Pipeline.
    metrics_store_t *store = metrics_store_new ();
    t0 = s_now ();
    for (int i = 0; i < events; i++)
        metrics_observe (m, "bench_pipeline_seconds", NULL, (i % 1000) / 1e5);
    metrics_flush (m);
    int received = 0;
    zsock_set_rcvtimeo (sub, 1000);
    double last = t0;
    while (received < events) {
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg)
            break;
        zframe_t *body = zmsg_last (msg);
        wire_metric_event_t event;
        wire_err_t err;
        if (wire_decode_frame (&wire_metric_event_desc, body, &event, &err) == 0) {
            if (streq (event.name, "splitmesh_bench_pipeline_seconds")) {
                metrics_store_add (store, &event, zclock_time (), NULL, 0);
                received++;
                last = s_now ();
            }
            wire_msg_free (&wire_metric_event_desc, &event);
        }
        zmsg_destroy (&msg);
    }
    double pipeline_s = last - t0;

    //  3. Exposition of 1000 series.
    metrics_store_t *big = metrics_store_new ();
    char name [64], value [16];
    wire_kv_t label = { "status", value };
    for (int family = 0; family < 100; family++)
        for (int v = 0; v < 10; v++) {
            wire_metric_kind_t kind = (wire_metric_kind_t) (family % 3);
            snprintf (name, sizeof name, "splitmesh_family%d%s", family,
                      kind == WIRE_METRIC_KIND_COUNTER? "_total":
                      kind == WIRE_METRIC_KIND_HISTOGRAM? "_seconds": "");
            snprintf (value, sizeof value, "%d", 200 + v);
            wire_metric_event_t event;
            wire_msg_init (&wire_metric_event_desc, &event);
            event.service = "bench";
            event.instance = "b:1";
            event.name = name;
            event.kind = kind;
            event.value = 0.01 * v;
            event.labels = &label;
            event.labels_count = 1;
            event.ts_ms = 1;
            metrics_store_add (big, &event, 1, NULL, 0);
        }
    const int renders = 200;
    size_t bytes = 0;
    t0 = s_now ();
    for (int i = 0; i < renders; i++) {
        char *text = metrics_store_exposition (big);
        bytes = strlen (text);
        free (text);
    }
    double exposition_us = (s_now () - t0) * 1e6 / renders;

    printf ("{\"count_ns\": %.1f, \"observe_ns\": %.1f, "
            "\"pipeline\": {\"events\": %d, \"received\": %d, \"seconds\": %.3f, \"events_per_s\": %.0f}, "
            "\"exposition\": {\"series\": 1000, \"bytes\": %zu, \"us\": %.0f}}\n",
            count_ns, observe_ns, events, received, pipeline_s,
            pipeline_s > 0? received / pipeline_s: 0, bytes, exposition_us);
    metrics_store_destroy (&big);
    metrics_store_destroy (&store);
    metrics_destroy (&m);
    zsock_destroy (&sub);
    zactor_destroy (&broker);
    char command [256];
    snprintf (command, sizeof command, "rm -rf %s", dir);
    if (system (command)) {}
    return 0;
}
