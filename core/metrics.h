/*  metrics.h: the one metrics API every splitmesh process uses.

    Each process counts what it does (requests, tokens, drafts, bytes over
    the link, errors), sets gauges (batch size, KV cache positions) and
    records latencies, and publishes them as `metric_event` messages
    (schemas/messages.toml) on the telemetry bus: an XPUB-side publisher
    connected to the broker's XSUB endpoint. splitmesh-telemetry subscribes
    on the broker's XPUB, aggregates and exports to Prometheus.

    Calls are cheap and never block on the network: they update a local
    table under a mutex. A background actor flushes every 250 ms (and on
    destroy): one event per counter with a non-zero increment since the last
    flush (value = the increment), one per gauge that changed (and every
    gauge again each second, so a late subscriber sees them), one per
    histogram observation (the schema's rule: a histogram event carries one
    observation). Every second it also sets the gauge `splitmesh_up` to 1,
    which the telemetry service uses for per-process health.

    Nothing is lost to ZeroMQ's "slow joiner" problem: the publisher is an
    XPUB socket, so it sees the subscriptions that reach it through the
    broker's proxy, and it only flushes while someone is subscribed.
    Until then counter increments keep adding up locally and histogram
    observations wait (at most METRICS_MAX_PENDING per series; beyond that
    they are dropped and counted in `splitmesh_metrics_dropped_total`).

    Names follow Prometheus conventions at the source: base units (seconds,
    bytes), counters end in `_total`; the `splitmesh_` prefix is added when
    missing. docs/metrics.md lists every metric the services publish.
    A name or label that breaks the rules is logged once and ignored; a
    service never stops for a bad metric call.

    Labels are a short string "key=value,key=value" (NULL or "" for none).
    Keys match [a-zA-Z_][a-zA-Z0-9_]*, must not start with "__", and must not
    be `service` or `instance` (the telemetry service adds those from the
    event). Values may not contain ',' and are at most 256 bytes.

        metrics_t *m = metrics_new ("cloud-target", NULL, "tcp://127.0.0.1:5556");
        metrics_count (m, "drafts_accepted_total", "pos=0", 1);
        metrics_observe (m, "verify_seconds", NULL, 0.0042);
        metrics_gauge (m, "batch_size", NULL, 8);
        metrics_destroy (&m);

    Every call accepts a NULL metrics_t (and a disabled one, made with a NULL
    endpoint) and does nothing, so code can call it unconditionally.
    Calls are thread-safe.
*/
#ifndef SPLITMESH_METRICS_H
#define SPLITMESH_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//  The PUB/SUB topic frame every metric event travels under.
#define METRICS_TOPIC "metric"
//  The name prefix every metric gets.
#define METRICS_PREFIX "splitmesh_"
//  Histogram observations kept per series while nobody is subscribed.
#define METRICS_MAX_PENDING 65536
//  Flush interval of the background publisher.
#define METRICS_FLUSH_MS 250

typedef struct _metrics_t metrics_t;

//  Creates a publisher for `service` (e.g. "cloud-target"). `instance`
//  names this process (NULL: "hostname:pid"). `endpoint` is the broker's
//  telemetry XSUB endpoint to connect to; NULL or "" makes a disabled
//  publisher whose calls do nothing. A bind address "tcp://*:PORT" or
//  "tcp://0.0.0.0:PORT" is connected as tcp://127.0.0.1:PORT. Returns
//  NULL when the endpoint is invalid or out of memory (with a log line).
//  Caller owns the result and must destroy it with metrics_destroy.
metrics_t *
    metrics_new (const char *service, const char *instance, const char *endpoint);

//  Flushes what is pending (waiting up to 500 ms for a subscriber if none
//  has appeared yet), stops the publisher, frees it and nullifies *self_p.
void
    metrics_destroy (metrics_t **self_p);

//  True if events are published (a non-NULL endpoint).
bool
    metrics_enabled (metrics_t *self);

//  Adds delta (>= 0; negative deltas are ignored with a log line) to a
//  counter. The name should end in "_total".
void
    metrics_count (metrics_t *self, const char *name, const char *labels, double delta);

//  Sets a gauge.
void
    metrics_gauge (metrics_t *self, const char *name, const char *labels, double value);

//  Records one histogram observation (base units: seconds, bytes).
void
    metrics_observe (metrics_t *self, const char *name, const char *labels, double value);

//  Publishes everything pending now, if a subscriber is there, and returns
//  when the events are handed to ZeroMQ. Returns the number of events sent,
//  or -1 when there is no subscriber yet (nothing is lost: it stays
//  pending) or the publisher is disabled.
int
    metrics_flush (metrics_t *self);

//  Waits up to timeout_ms until a subscriber is connected. True if one is.
bool
    metrics_wait_subscriber (metrics_t *self, int timeout_ms);

//  Checks a metric name: 0 if it matches [a-zA-Z_:][a-zA-Z0-9_:]* and is
//  at most 256 bytes (with the prefix), else -1.
int
    metrics_name_valid (const char *name);

//  Checks a label name: 0 if it matches [a-zA-Z_][a-zA-Z0-9_]* and does
//  not start with "__" (reserved by Prometheus), else -1.
int
    metrics_label_name_valid (const char *name);

//  Parses "k=v,k=v" into at most max pairs stored in keys/values (pointers
//  into buf, a caller buffer the string is copied into; buf_size bytes).
//  Returns the number of pairs, or -1 with a reason in error when the
//  string breaks the label rules above.
int
    metrics_labels_parse (const char *labels, char *buf, size_t buf_size,
                          char **keys, char **values, int max,
                          char *error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif
