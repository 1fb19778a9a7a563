/*  edge_metrics.h: the metrics API edge-draft publishes through.

    core/metrics.h (branch `telemetry`) is the one metrics API of every
    process. Until that branch is merged into this one, the same calls
    compile to nothing here (the real API accepts a NULL metrics_t and does
    nothing with it, so the behaviour is the same as a publisher started
    without --telemetry). Once core/metrics.h exists, it is used as is.
    The metric names are docs/metrics.md's edge-draft rows.
*/
#ifndef SPLITMESH_EDGE_METRICS_H
#define SPLITMESH_EDGE_METRICS_H

#if __has_include("metrics.h")
#include "metrics.h"
#define EDGE_METRICS_AVAILABLE 1
#else
#define EDGE_METRICS_AVAILABLE 0
typedef struct _metrics_t metrics_t;
static inline metrics_t *
metrics_new (const char *service, const char *instance, const char *endpoint)
{
    (void) service; (void) instance; (void) endpoint;
    return NULL;
}
static inline void
metrics_destroy (metrics_t **self_p)
{
    if (self_p)
        *self_p = NULL;
}
static inline void
metrics_count (metrics_t *self, const char *name, const char *labels, double delta)
{
    (void) self; (void) name; (void) labels; (void) delta;
}
static inline void
metrics_observe (metrics_t *self, const char *name, const char *labels, double value)
{
    (void) self; (void) name; (void) labels; (void) value;
}
#endif

#endif
