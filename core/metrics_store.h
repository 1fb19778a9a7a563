/*  metrics_store.h: the telemetry service's aggregate of metric events.

    splitmesh-telemetry feeds every `metric_event` it receives from the bus
    into a store, and renders the store three ways:

    1. Prometheus text exposition format 0.0.4 (`/metrics`): one family per
       metric name, sorted, with `# HELP` and `# TYPE`; every series carries
       `service` and `instance` labels from the event plus the event's own
       labels; counters are cumulative sums of the increments and always end
       in `_total` (appended when a publisher forgot it); histograms have
       fixed buckets chosen by the name's unit (`_seconds`, `_bytes`, or
       counts) exposed as cumulative `_bucket{le=...}`, `_sum`, `_count`.
    2. Health JSON (`/health`): per service, its instances with the time
       since each was last heard from, up when within `down_after_ms`; plus
       the broker's worker counts per MDP service when the broker publishes.
    3. Dashboard series JSON (`/api/series`): metrics_store_tick, called
       about once a second, appends one point (tokens/s, draft acceptance,
       requests/s, latency percentiles over the last 10 s, link bytes/s per
       direction, processes up); the JSON holds the last METRICS_STORE_POINTS.

    Bad events (invalid names or label names, a kind that conflicts with
    the family's earlier kind, negative counter increments, non-finite
    values, too many series) are rejected with a reason and counted in
    `splitmesh_telemetry_events_rejected_total`; the store is unchanged.

    Not thread-safe: the telemetry service guards it with a mutex.
*/
#ifndef SPLITMESH_METRICS_STORE_H
#define SPLITMESH_METRICS_STORE_H

#include <stdint.h>
#include "codec.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Dashboard points kept (one per tick: 5 minutes at 1 s).
#define METRICS_STORE_POINTS 300
//  Series kept at most; more are rejected.
#define METRICS_STORE_MAX_SERIES 20000
//  Window of the dashboard's latency percentiles.
#define METRICS_STORE_WINDOW_MS 10000

typedef struct _metrics_store_t metrics_store_t;

//  Creates an empty store. Caller owns it and must destroy it.
metrics_store_t *
    metrics_store_new (void);

//  Frees the store and nullifies *self_p.
void
    metrics_store_destroy (metrics_store_t **self_p);

//  Adds one event received at now_ms (Unix ms; the event's ts_ms is not
//  trusted for recency). Returns 0, or -1 with the reason in error (which
//  may be NULL) when the event is rejected. The event is not kept.
int
    metrics_store_add (metrics_store_t *self, const wire_metric_event_t *event,
                       int64_t now_ms, char *error, size_t error_size);

//  Prometheus text exposition (format 0.0.4). Caller owns the string and
//  must free() it; NULL when out of memory.
char *
    metrics_store_exposition (metrics_store_t *self);

//  Health JSON at now_ms. Caller owns the string and must free() it.
char *
    metrics_store_health_json (metrics_store_t *self, int64_t now_ms, int64_t down_after_ms);

//  Appends one dashboard point at now_ms (rates since the previous tick).
void
    metrics_store_tick (metrics_store_t *self, int64_t now_ms, int64_t down_after_ms);

//  Dashboard series JSON: {"now_ms", "points": [...], "acceptance_by_pos",
//  "services"}. Caller owns the string and must free() it.
char *
    metrics_store_series_json (metrics_store_t *self, int64_t now_ms, int64_t down_after_ms);

//  Sum over all series of a counter or gauge family (histograms: the sum
//  of observations), optionally only those whose label `key` equals
//  `value` (key NULL: all; "service" and "instance" match the publisher).
//  Unknown family: 0.
double
    metrics_store_total (metrics_store_t *self, const char *name,
                         const char *key, const char *value);

//  Counts one event rejected before it reached the store (undecodable).
void
    metrics_store_reject (metrics_store_t *self);

//  Events accepted and rejected so far.
uint64_t
    metrics_store_events (metrics_store_t *self);
uint64_t
    metrics_store_rejected (metrics_store_t *self);

//  The histogram bucket upper bounds for a metric name (by its unit
//  suffix), +Inf not included. Sets *count. The table is static.
const double *
    metrics_store_buckets (const char *name, size_t *count);

#ifdef __cplusplus
}
#endif

#endif
