/*  metrics_store.c: aggregation of metric events and their renderings.

    Families (one per metric name) hold series (one per label set); the
    label set is kept rendered in canonical order (service, instance, then
    the event's labels sorted by name, values escaped), which is both the
    series key and the text that goes between the braces in the
    exposition. Histograms keep non-cumulative bucket counts and make them
    cumulative when rendered, plus a ring of recent observations (all
    series of the family together) for the dashboard's percentiles.
    Renderings are written to a memory stream (open_memstream).
*/
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include "metrics.h"
#include "metrics_store.h"

#define s_RING 8192                 //  recent observations per histogram family

typedef struct {
    char *labels_text;          //  service="..",instance="..",k="v" (canonical)
    char *service;              //  publishing service
    char *instance;             //  publishing process
    wire_kv_t *labels;          //  event labels, sorted by key (owned strings)
    size_t label_count;
    double value;               //  counter total / gauge value
    uint64_t *buckets;          //  histogram: bucket_count + 1 counts (last: +Inf)
    double sum;                 //  histogram: sum of observations
    uint64_t count;             //  histogram: observations
} s_series_t;

typedef struct {
    char *name;                 //  family name (counters end in _total)
    wire_metric_kind_t kind;
    const double *bounds;       //  histogram bucket bounds (static table)
    size_t bucket_count;
    zhashx_t *series;           //  labels_text -> s_series_t *
    int64_t *ring_ts;           //  histogram: s_RING observation times (ms)
    double *ring_value;         //  histogram: s_RING observations
    size_t ring_head;           //  next slot to write
    size_t ring_count;          //  slots filled
} s_family_t;

typedef struct {
    char *service;
    char *instance;
    int64_t last_seen_ms;       //  when its last event arrived
} s_process_t;

//  One dashboard point. NAN means "no data in this interval".
typedef struct {
    int64_t t_ms;
    double tokens_per_s;
    double acceptance;          //  drafts accepted / proposed in the interval
    double requests_per_s;      //  broker requests answered per second
    double latency [3][3];      //  (ttft, inter_token, verify) x (p50, p90, p99)
    double link_up_bps;         //  link bytes/s, device -> cloud
    double link_down_bps;       //  link bytes/s, cloud -> device
    int processes_up;
    int processes_total;
} s_point_t;

static const char *s_latency_names [3] = {
    "splitmesh_ttft_seconds", "splitmesh_inter_token_seconds", "splitmesh_verify_seconds"
};
static const char *s_latency_keys [3] = { "ttft", "inter_token", "verify" };

struct _metrics_store_t {
    zhashx_t *families;         //  name -> s_family_t *
    zhashx_t *processes;        //  "service\x1finstance" -> s_process_t *
    size_t series_count;        //  over all families
    uint64_t events;            //  accepted
    uint64_t rejected;          //  rejected
    s_point_t points [METRICS_STORE_POINTS];  //  ring of dashboard points
    size_t point_head;          //  next slot
    size_t point_count;         //  slots filled
    int64_t prev_ms;            //  time of the previous tick, 0 before the first
    double prev_tokens;         //  totals at the previous tick
    double prev_proposed;
    double prev_accepted;
    double prev_requests;
    double prev_link_up;
    double prev_link_down;
};

//  ---------------------------------------------------------------------
//  Static tables

static const double s_seconds_bounds [] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30
};
static const double s_bytes_bounds [] = {
    64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864
};
static const double s_count_bounds [] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536
};

static bool
s_ends_with (const char *text, const char *suffix)
{
    size_t n = strlen (text), m = strlen (suffix);
    return n >= m && streq (text + n - m, suffix);
}

const double *
metrics_store_buckets (const char *name, size_t *count)
{
    assert (count);
    if (s_ends_with (name, "_seconds")) {
        *count = sizeof s_seconds_bounds / sizeof (double);
        return s_seconds_bounds;
    }
    if (s_ends_with (name, "_bytes")) {
        *count = sizeof s_bytes_bounds / sizeof (double);
        return s_bytes_bounds;
    }
    *count = sizeof s_count_bounds / sizeof (double);
    return s_count_bounds;
}

//  HELP texts of the metrics docs/metrics.md lists.
static const struct {
    const char *name;
    const char *help;
} s_help [] = {
    { "splitmesh_up", "1 while the process publishes metrics (refreshed every second)." },
    { "splitmesh_requests_total", "Requests a service answered, by status." },
    { "splitmesh_errors_total", "Error replies a service sent, by status." },
    { "splitmesh_prompt_tokens_total", "Prompt tokens processed." },
    { "splitmesh_tokens_generated_total", "Tokens generated and streamed to clients." },
    { "splitmesh_drafts_proposed_total", "Draft tokens proposed, by draft position." },
    { "splitmesh_drafts_accepted_total", "Draft tokens accepted by verification, by draft position." },
    { "splitmesh_ttft_seconds", "Time from request to first generated token." },
    { "splitmesh_inter_token_seconds", "Time between consecutive generated tokens." },
    { "splitmesh_verify_seconds", "Latency of one verify call (round trip seen by the caller, or the batched pass in the target)." },
    { "splitmesh_batch_size", "Sessions in one batched forward pass." },
    { "splitmesh_kv_cache_positions", "KV cache positions in use, over all sessions." },
    { "splitmesh_link_bytes_total", "Bytes over the device-cloud link, by direction (up: device to cloud)." },
    { "splitmesh_broker_requests_total", "Requests the broker answered (FINAL to the client), by MDP service and status." },
    { "splitmesh_broker_workers", "Workers registered with the broker, by MDP service." },
    { "splitmesh_broker_queue_depth", "Requests queued in the broker, by MDP service." },
    { "splitmesh_metrics_dropped_total", "Histogram observations a publisher dropped while nobody subscribed." },
    { "splitmesh_telemetry_events_total", "Metric events the telemetry service accepted." },
    { "splitmesh_telemetry_events_rejected_total", "Metric events the telemetry service rejected." },
};

static const char *
s_help_for (const char *name)
{
    for (size_t i = 0; i < sizeof s_help / sizeof s_help [0]; i++)
        if (streq (s_help [i].name, name))
            return s_help [i].help;
    return NULL;
}

//  ---------------------------------------------------------------------
//  Formatting helpers

//  Shortest decimal that reads back as the same double (Prometheus and
//  Go's ParseFloat accept it); +Inf/-Inf/NaN spelled as Prometheus wants.
static void
s_fmt_double (char *buf, size_t size, double value)
{
    if (isnan (value)) {
        snprintf (buf, size, "NaN");
        return;
    }
    if (isinf (value)) {
        snprintf (buf, size, value > 0? "+Inf": "-Inf");
        return;
    }
    for (int precision = 6; precision <= 17; precision++) {
        snprintf (buf, size, "%.*g", precision, value);
        if (strtod (buf, NULL) == value)
            return;
    }
}

//  Writes a label value escaped per the exposition format: \\, \", \n.
static void
s_write_label_value (FILE *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            fputs ("\\\\", out);
        else
        if (*p == '"')
            fputs ("\\\"", out);
        else
        if (*p == '\n')
            fputs ("\\n", out);
        else
            fputc (*p, out);
    }
}

//  Writes a JSON string literal.
static void
s_write_json_str (FILE *out, const char *text)
{
    fputc ('"', out);
    for (const unsigned char *p = (const unsigned char *) text; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf (out, "\\%c", *p);
        else
        if (*p < 0x20)
            fprintf (out, "\\u%04x", *p);
        else
            fputc (*p, out);
    }
    fputc ('"', out);
}

//  Writes a JSON number, or null for NaN/Inf.
static void
s_write_json_num (FILE *out, double value)
{
    if (!isfinite (value))
        fputs ("null", out);
    else {
        char buf [64];
        s_fmt_double (buf, sizeof buf, value);
        fputs (buf, out);
    }
}

static int
s_kv_compare (const void *a, const void *b)
{
    return strcmp (((const wire_kv_t *) a)->key, ((const wire_kv_t *) b)->key);
}

static int
s_str_compare (const void *a, const void *b)
{
    return strcmp (*(char *const *) a, *(char *const *) b);
}

static int
s_double_compare (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y? -1: x > y? 1: 0;
}

//  Keys of a hash, sorted. Caller frees the array (not the strings).
static const char **
s_sorted_keys (zhashx_t *hash, size_t *count)
{
    *count = zhashx_size (hash);
    const char **keys = (const char **) calloc (*count? *count: 1, sizeof (char *));
    size_t i = 0;
    for (void *item = zhashx_first (hash); item && keys; item = zhashx_next (hash))
        keys [i++] = (const char *) zhashx_cursor (hash);
    if (keys)
        qsort (keys, *count, sizeof (char *), s_str_compare);
    return keys;
}

//  ---------------------------------------------------------------------
//  Store

static void
s_series_free (void **item)
{
    s_series_t *self = (s_series_t *) *item;
    if (self) {
        for (size_t i = 0; i < self->label_count; i++) {
            free (self->labels [i].key);
            free (self->labels [i].value);
        }
        free (self->labels);
        free (self->labels_text);
        free (self->service);
        free (self->instance);
        free (self->buckets);
        free (self);
        *item = NULL;
    }
}

static void
s_family_free (void **item)
{
    s_family_t *self = (s_family_t *) *item;
    if (self) {
        zhashx_destroy (&self->series);
        free (self->ring_ts);
        free (self->ring_value);
        free (self->name);
        free (self);
        *item = NULL;
    }
}

static void
s_process_free (void **item)
{
    s_process_t *self = (s_process_t *) *item;
    if (self) {
        free (self->service);
        free (self->instance);
        free (self);
        *item = NULL;
    }
}

metrics_store_t *
metrics_store_new (void)
{
    metrics_store_t *self = (metrics_store_t *) zmalloc (sizeof (metrics_store_t));
    self->families = zhashx_new ();
    zhashx_set_destructor (self->families, s_family_free);
    self->processes = zhashx_new ();
    zhashx_set_destructor (self->processes, s_process_free);
    return self;
}

void
metrics_store_destroy (metrics_store_t **self_p)
{
    assert (self_p);
    metrics_store_t *self = *self_p;
    if (self) {
        zhashx_destroy (&self->families);
        zhashx_destroy (&self->processes);
        free (self);
        *self_p = NULL;
    }
}

//  Renders service, instance and sorted labels into the canonical text.
static char *
s_render_labels (const char *service, const char *instance,
                 const wire_kv_t *sorted, size_t count)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    if (!out)
        return NULL;
    fputs ("service=\"", out);
    s_write_label_value (out, service);
    fputs ("\",instance=\"", out);
    s_write_label_value (out, instance);
    fputc ('"', out);
    for (size_t i = 0; i < count; i++) {
        fprintf (out, ",%s=\"", sorted [i].key);
        s_write_label_value (out, sorted [i].value);
        fputc ('"', out);
    }
    fclose (out);
    return text;
}

int
metrics_store_add (metrics_store_t *self, const wire_metric_event_t *event,
                   int64_t now_ms, char *error, size_t error_size)
{
    assert (self);
    assert (event);
    char reason [320] = "";
    char *name = NULL;
    char *labels_text = NULL;
    wire_kv_t *sorted = NULL;
    int rc = -1;

    if (!event->service || !*event->service || !event->instance || !*event->instance
    ||  !event->name) {
        snprintf (reason, sizeof reason, "event without service, instance or name");
        goto cleanup;
    }
    if (metrics_name_valid (event->name) || strncmp (event->name, METRICS_PREFIX, strlen (METRICS_PREFIX))) {
        snprintf (reason, sizeof reason, "metric name '%.200s' is not a valid %s* name",
                  event->name, METRICS_PREFIX);
        goto cleanup;
    }
    if (streq (event->name, "splitmesh_telemetry_events_total")
    ||  streq (event->name, "splitmesh_telemetry_events_rejected_total")) {
        snprintf (reason, sizeof reason, "metric name '%s' is reserved for the telemetry service",
                  event->name);
        goto cleanup;
    }
    if ((int) event->kind < 0 || event->kind >= WIRE_METRIC_KIND_COUNT_) {
        snprintf (reason, sizeof reason, "metric '%.200s': unknown kind", event->name);
        goto cleanup;
    }
    if (!isfinite (event->value)
    ||  (event->kind == WIRE_METRIC_KIND_COUNTER && event->value < 0)) {
        snprintf (reason, sizeof reason, "metric '%.200s': %s value", event->name,
                  isfinite (event->value)? "negative counter": "non-finite");
        goto cleanup;
    }
    if (event->labels_count > WIRE_MAX_LABELS) {
        snprintf (reason, sizeof reason, "metric '%.200s': more than %d labels",
                  event->name, WIRE_MAX_LABELS);
        goto cleanup;
    }
    //  Counters are exposed with _total whatever the publisher wrote.
    if (event->kind == WIRE_METRIC_KIND_COUNTER && !s_ends_with (event->name, "_total"))
        name = zsys_sprintf ("%s_total", event->name);
    else
        name = strdup (event->name);

    size_t count = event->labels_count;
    sorted = (wire_kv_t *) calloc (count? count: 1, sizeof (wire_kv_t));
    if (!name || !sorted) {
        snprintf (reason, sizeof reason, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < count; i++) {
        const wire_kv_t *kv = &event->labels [i];
        if (metrics_label_name_valid (kv->key) || streq (kv->key, "service") || streq (kv->key, "instance")
        ||  streq (kv->key, "le") || !kv->value) {
            snprintf (reason, sizeof reason, "metric '%.200s': bad or reserved label name '%.40s'",
                      name, kv->key? kv->key: "(null)");
            goto cleanup;
        }
        sorted [i] = *kv;
    }
    qsort (sorted, count, sizeof (wire_kv_t), s_kv_compare);
    for (size_t i = 1; i < count; i++)
        if (streq (sorted [i].key, sorted [i - 1].key)) {
            snprintf (reason, sizeof reason, "metric '%.200s': label '%.40s' given twice",
                      name, sorted [i].key);
            goto cleanup;
        }

    s_family_t *family = (s_family_t *) zhashx_lookup (self->families, name);
    if (family && family->kind != event->kind) {
        snprintf (reason, sizeof reason, "metric '%.200s' is a %s, not a %s", name,
                  wire_metric_kind_names [family->kind], wire_metric_kind_names [event->kind]);
        goto cleanup;
    }
    labels_text = s_render_labels (event->service, event->instance, sorted, count);
    if (!labels_text) {
        snprintf (reason, sizeof reason, "out of memory");
        goto cleanup;
    }
    s_series_t *series = family? (s_series_t *) zhashx_lookup (family->series, labels_text): NULL;
    if (!series && self->series_count >= METRICS_STORE_MAX_SERIES) {
        snprintf (reason, sizeof reason, "metric '%.200s': more than %d series; new ones refused",
                  name, METRICS_STORE_MAX_SERIES);
        goto cleanup;
    }
    if (!family) {
        family = (s_family_t *) zmalloc (sizeof (s_family_t));
        family->name = strdup (name);
        family->kind = event->kind;
        family->bounds = metrics_store_buckets (name, &family->bucket_count);
        family->series = zhashx_new ();
        zhashx_set_destructor (family->series, s_series_free);
        if (family->kind == WIRE_METRIC_KIND_HISTOGRAM) {
            family->ring_ts = (int64_t *) calloc (s_RING, sizeof (int64_t));
            family->ring_value = (double *) calloc (s_RING, sizeof (double));
        }
        zhashx_insert (self->families, name, family);
    }
    if (!series) {
        series = (s_series_t *) zmalloc (sizeof (s_series_t));
        series->labels_text = labels_text;
        labels_text = NULL;
        series->service = strdup (event->service);
        series->instance = strdup (event->instance);
        series->labels = (wire_kv_t *) calloc (count? count: 1, sizeof (wire_kv_t));
        series->label_count = count;
        for (size_t i = 0; i < count; i++) {
            series->labels [i].key = strdup (sorted [i].key);
            series->labels [i].value = strdup (sorted [i].value);
        }
        if (family->kind == WIRE_METRIC_KIND_HISTOGRAM)
            series->buckets = (uint64_t *) calloc (family->bucket_count + 1, sizeof (uint64_t));
        zhashx_insert (family->series, series->labels_text, series);
        self->series_count++;
    }
    switch (family->kind) {
        case WIRE_METRIC_KIND_COUNTER:
            series->value += event->value;
            break;
        case WIRE_METRIC_KIND_GAUGE:
            series->value = event->value;
            break;
        default: {
            size_t b = 0;
            while (b < family->bucket_count && event->value > family->bounds [b])
                b++;
            series->buckets [b]++;      //  b == bucket_count: only +Inf
            series->sum += event->value;
            series->count++;
            if (family->ring_ts && family->ring_value) {
                family->ring_ts [family->ring_head] = now_ms;
                family->ring_value [family->ring_head] = event->value;
                family->ring_head = (family->ring_head + 1) % s_RING;
                if (family->ring_count < s_RING)
                    family->ring_count++;
            }
        }
    }

    //  The publishing process was heard from.
    char key [2 * WIRE_MAX_NAME_BYTES + 2];
    snprintf (key, sizeof key, "%s\x1f%s", event->service, event->instance);
    s_process_t *process = (s_process_t *) zhashx_lookup (self->processes, key);
    if (!process) {
        process = (s_process_t *) zmalloc (sizeof (s_process_t));
        process->service = strdup (event->service);
        process->instance = strdup (event->instance);
        zhashx_insert (self->processes, key, process);
    }
    process->last_seen_ms = now_ms;
    self->events++;
    rc = 0;

cleanup:
    if (rc) {
        self->rejected++;
        if (error && error_size)
            snprintf (error, error_size, "%s", reason);
    }
    free (sorted);
    free (name);
    free (labels_text);
    return rc;
}

//  ---------------------------------------------------------------------
//  Exposition

static void
s_write_family (FILE *out, s_family_t *family)
{
    const char *help = s_help_for (family->name);
    fprintf (out, "# HELP %s %s\n", family->name, help? help: "splitmesh metric.");
    fprintf (out, "# TYPE %s %s\n", family->name, wire_metric_kind_names [family->kind]);
    size_t count = 0;
    const char **keys = s_sorted_keys (family->series, &count);
    char num [64];
    for (size_t i = 0; keys && i < count; i++) {
        s_series_t *series = (s_series_t *) zhashx_lookup (family->series, keys [i]);
        if (family->kind != WIRE_METRIC_KIND_HISTOGRAM) {
            s_fmt_double (num, sizeof num, series->value);
            fprintf (out, "%s{%s} %s\n", family->name, series->labels_text, num);
            continue;
        }
        uint64_t cumulative = 0;
        for (size_t b = 0; b < family->bucket_count; b++) {
            cumulative += series->buckets [b];
            s_fmt_double (num, sizeof num, family->bounds [b]);
            fprintf (out, "%s_bucket{%s,le=\"%s\"} %" PRIu64 "\n",
                     family->name, series->labels_text, num, cumulative);
        }
        fprintf (out, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n",
                 family->name, series->labels_text, series->count);
        s_fmt_double (num, sizeof num, series->sum);
        fprintf (out, "%s_sum{%s} %s\n", family->name, series->labels_text, num);
        fprintf (out, "%s_count{%s} %" PRIu64 "\n", family->name, series->labels_text, series->count);
    }
    free (keys);
}

char *
metrics_store_exposition (metrics_store_t *self)
{
    assert (self);
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    if (!out)
        return NULL;
    size_t count = 0;
    const char **keys = s_sorted_keys (self->families, &count);
    for (size_t i = 0; keys && i < count; i++)
        s_write_family (out, (s_family_t *) zhashx_lookup (self->families, keys [i]));
    free (keys);
    //  The service's own counters.
    fprintf (out, "# HELP splitmesh_telemetry_events_total %s\n",
             s_help_for ("splitmesh_telemetry_events_total"));
    fprintf (out, "# TYPE splitmesh_telemetry_events_total counter\n");
    fprintf (out, "splitmesh_telemetry_events_total{service=\"telemetry\"} %" PRIu64 "\n", self->events);
    fprintf (out, "# HELP splitmesh_telemetry_events_rejected_total %s\n",
             s_help_for ("splitmesh_telemetry_events_rejected_total"));
    fprintf (out, "# TYPE splitmesh_telemetry_events_rejected_total counter\n");
    fprintf (out, "splitmesh_telemetry_events_rejected_total{service=\"telemetry\"} %" PRIu64 "\n",
             self->rejected);
    fclose (out);
    return text;
}

//  ---------------------------------------------------------------------
//  Queries

double
metrics_store_total (metrics_store_t *self, const char *name, const char *key, const char *value)
{
    assert (self);
    s_family_t *family = (s_family_t *) zhashx_lookup (self->families, name);
    if (!family)
        return 0;
    double total = 0;
    for (s_series_t *series = (s_series_t *) zhashx_first (family->series); series;
         series = (s_series_t *) zhashx_next (family->series)) {
        if (key && (streq (key, "service") || streq (key, "instance"))) {
            const char *own = streq (key, "service")? series->service: series->instance;
            if (value && !streq (own, value))
                continue;
        }
        else
        if (key) {
            bool match = false;
            for (size_t i = 0; i < series->label_count; i++)
                if (streq (series->labels [i].key, key)
                &&  (!value || streq (series->labels [i].value, value)))
                    match = true;
            if (!match)
                continue;
        }
        total += family->kind == WIRE_METRIC_KIND_HISTOGRAM? series->sum: series->value;
    }
    return total;
}

uint64_t
metrics_store_events (metrics_store_t *self)
{
    return self->events;
}

void
metrics_store_reject (metrics_store_t *self)
{
    self->rejected++;
}

uint64_t
metrics_store_rejected (metrics_store_t *self)
{
    return self->rejected;
}

//  Percentiles (p50, p90, p99) of a histogram family's observations since
//  `since_ms`; NAN when there are none.
static void
s_percentiles (metrics_store_t *self, const char *name, int64_t since_ms, double result [3])
{
    result [0] = result [1] = result [2] = NAN;
    s_family_t *family = (s_family_t *) zhashx_lookup (self->families, name);
    if (!family || family->kind != WIRE_METRIC_KIND_HISTOGRAM || !family->ring_ts)
        return;
    double *values = (double *) malloc ((family->ring_count? family->ring_count: 1) * sizeof (double));
    if (!values)
        return;
    size_t n = 0;
    for (size_t i = 0; i < family->ring_count; i++)
        if (family->ring_ts [i] >= since_ms)
            values [n++] = family->ring_value [i];
    if (n > 0) {
        qsort (values, n, sizeof (double), s_double_compare);
        const double q [3] = { 0.50, 0.90, 0.99 };
        for (int k = 0; k < 3; k++) {
            //  Nearest rank: the smallest value with at least q*n at or below it.
            size_t rank = (size_t) ceil (q [k] * (double) n);
            result [k] = values [rank > 0? rank - 1: 0];
        }
    }
    free (values);
}

static void
s_count_processes (metrics_store_t *self, int64_t now_ms, int64_t down_after_ms, int *up, int *total)
{
    *up = *total = 0;
    for (s_process_t *process = (s_process_t *) zhashx_first (self->processes); process;
         process = (s_process_t *) zhashx_next (self->processes)) {
        (*total)++;
        if (now_ms - process->last_seen_ms <= down_after_ms)
            (*up)++;
    }
}

void
metrics_store_tick (metrics_store_t *self, int64_t now_ms, int64_t down_after_ms)
{
    assert (self);
    //  The first tick has no interval before it: its rates are unknown (NAN).
    double dt = self->prev_ms? (double) (now_ms - self->prev_ms) / 1000.0: NAN;
    if (dt <= 0)
        return;
    double tokens = metrics_store_total (self, "splitmesh_tokens_generated_total", NULL, NULL);
    double proposed = metrics_store_total (self, "splitmesh_drafts_proposed_total", NULL, NULL);
    double accepted = metrics_store_total (self, "splitmesh_drafts_accepted_total", NULL, NULL);
    double requests = metrics_store_total (self, "splitmesh_broker_requests_total", NULL, NULL);
    double up = metrics_store_total (self, "splitmesh_link_bytes_total", "direction", "up");
    double down = metrics_store_total (self, "splitmesh_link_bytes_total", "direction", "down");

    s_point_t *point = &self->points [self->point_head];
    memset (point, 0, sizeof *point);
    point->t_ms = now_ms;
    point->tokens_per_s = (tokens - self->prev_tokens) / dt;
    point->acceptance = proposed > self->prev_proposed?
                        (accepted - self->prev_accepted) / (proposed - self->prev_proposed): NAN;
    point->requests_per_s = (requests - self->prev_requests) / dt;
    point->link_up_bps = (up - self->prev_link_up) / dt;
    point->link_down_bps = (down - self->prev_link_down) / dt;
    for (int k = 0; k < 3; k++)
        s_percentiles (self, s_latency_names [k], now_ms - METRICS_STORE_WINDOW_MS, point->latency [k]);
    s_count_processes (self, now_ms, down_after_ms, &point->processes_up, &point->processes_total);

    self->point_head = (self->point_head + 1) % METRICS_STORE_POINTS;
    if (self->point_count < METRICS_STORE_POINTS)
        self->point_count++;
    self->prev_ms = now_ms;
    self->prev_tokens = tokens;
    self->prev_proposed = proposed;
    self->prev_accepted = accepted;
    self->prev_requests = requests;
    self->prev_link_up = up;
    self->prev_link_down = down;
}

//  Writes "services": {...} (health per service) into a JSON object.
static void
s_write_services (metrics_store_t *self, FILE *out, int64_t now_ms, int64_t down_after_ms)
{
    //  Group processes by service, services and instances sorted.
    size_t count = 0;
    const char **keys = s_sorted_keys (self->processes, &count);
    fputs ("\"services\":{", out);
    const char *current = NULL;
    int service_up = 0;
    for (size_t i = 0; keys && i <= count; i++) {
        s_process_t *process = i < count? (s_process_t *) zhashx_lookup (self->processes, keys [i]): NULL;
        if (current && (!process || !streq (process->service, current))) {
            fprintf (out, "],\"up\":%s}", service_up? "true": "false");
            current = NULL;
        }
        if (!process)
            break;
        if (!current) {
            if (i > 0)
                fputc (',', out);
            s_write_json_str (out, process->service);
            fputs (":{\"instances\":[", out);
            current = process->service;
            service_up = 0;
        }
        else
            fputc (',', out);
        int64_t age = now_ms - process->last_seen_ms;
        bool up = age <= down_after_ms;
        service_up += up;
        fputs ("{\"instance\":", out);
        s_write_json_str (out, process->instance);
        fprintf (out, ",\"last_seen_ms\":%" PRId64 ",\"age_ms\":%" PRId64 ",\"up\":%s}",
                 process->last_seen_ms, age, up? "true": "false");
    }
    fputc ('}', out);
    free (keys);

    //  The broker's view: workers per MDP service.
    fputs (",\"workers\":{", out);
    s_family_t *family = (s_family_t *) zhashx_lookup (self->families, "splitmesh_broker_workers");
    if (family) {
        size_t n = 0;
        const char **series_keys = s_sorted_keys (family->series, &n);
        bool first = true;
        for (size_t i = 0; series_keys && i < n; i++) {
            s_series_t *series = (s_series_t *) zhashx_lookup (family->series, series_keys [i]);
            for (size_t l = 0; l < series->label_count; l++)
                if (streq (series->labels [l].key, "mdp_service")) {
                    if (!first)
                        fputc (',', out);
                    first = false;
                    s_write_json_str (out, series->labels [l].value);
                    fputc (':', out);
                    s_write_json_num (out, series->value);
                }
        }
        free (series_keys);
    }
    fputc ('}', out);
}

char *
metrics_store_health_json (metrics_store_t *self, int64_t now_ms, int64_t down_after_ms)
{
    assert (self);
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    if (!out)
        return NULL;
    fprintf (out, "{\"status\":\"ok\",\"now_ms\":%" PRId64 ",\"down_after_ms\":%" PRId64
             ",\"events\":%" PRIu64 ",\"rejected\":%" PRIu64 ",",
             now_ms, down_after_ms, self->events, self->rejected);
    s_write_services (self, out, now_ms, down_after_ms);
    fputs ("}\n", out);
    fclose (out);
    return text;
}

char *
metrics_store_series_json (metrics_store_t *self, int64_t now_ms, int64_t down_after_ms)
{
    assert (self);
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    if (!out)
        return NULL;
    fprintf (out, "{\"now_ms\":%" PRId64 ",\"window_ms\":%d,\"points\":[",
             now_ms, METRICS_STORE_WINDOW_MS);
    size_t first = (self->point_head + METRICS_STORE_POINTS - self->point_count) % METRICS_STORE_POINTS;
    for (size_t i = 0; i < self->point_count; i++) {
        s_point_t *p = &self->points [(first + i) % METRICS_STORE_POINTS];
        fprintf (out, "%s{\"t\":%" PRId64 ",\"tokens_per_s\":", i? ",": "", p->t_ms);
        s_write_json_num (out, p->tokens_per_s);
        fputs (",\"acceptance\":", out);
        s_write_json_num (out, p->acceptance);
        fputs (",\"requests_per_s\":", out);
        s_write_json_num (out, p->requests_per_s);
        fputs (",\"latency\":{", out);
        for (int k = 0; k < 3; k++) {
            fprintf (out, "%s\"%s\":{\"p50\":", k? ",": "", s_latency_keys [k]);
            s_write_json_num (out, p->latency [k][0]);
            fputs (",\"p90\":", out);
            s_write_json_num (out, p->latency [k][1]);
            fputs (",\"p99\":", out);
            s_write_json_num (out, p->latency [k][2]);
            fputc ('}', out);
        }
        fputs ("},\"link_bytes_per_s\":{\"up\":", out);
        s_write_json_num (out, p->link_up_bps);
        fputs (",\"down\":", out);
        s_write_json_num (out, p->link_down_bps);
        fprintf (out, "},\"processes_up\":%d,\"processes_total\":%d}",
                 p->processes_up, p->processes_total);
    }
    fputs ("],\"acceptance_by_pos\":{", out);
    //  Cumulative acceptance per draft position.
    s_family_t *proposed = (s_family_t *) zhashx_lookup (self->families, "splitmesh_drafts_proposed_total");
    if (proposed) {
        zhashx_t *seen = zhashx_new ();
        size_t n = 0;
        const char **keys = s_sorted_keys (proposed->series, &n);
        bool first_pos = true;
        for (size_t i = 0; keys && i < n; i++) {
            s_series_t *series = (s_series_t *) zhashx_lookup (proposed->series, keys [i]);
            for (size_t l = 0; l < series->label_count; l++) {
                const char *pos = series->labels [l].value;
                if (!streq (series->labels [l].key, "pos") || zhashx_lookup (seen, pos))
                    continue;
                zhashx_insert (seen, pos, (void *) 1);
                double p = metrics_store_total (self, "splitmesh_drafts_proposed_total", "pos", pos);
                double a = metrics_store_total (self, "splitmesh_drafts_accepted_total", "pos", pos);
                if (!first_pos)
                    fputc (',', out);
                first_pos = false;
                s_write_json_str (out, pos);
                fputc (':', out);
                s_write_json_num (out, p > 0? a / p: NAN);
            }
        }
        free (keys);
        zhashx_destroy (&seen);
    }
    fputs ("},\"totals\":{", out);
    //  Since splitmesh-telemetry started: what the generations did, for the
    //  dashboard's totals line (and tests that compare it with the FINALs).
    double proposed_total = metrics_store_total (self, "splitmesh_drafts_proposed_total", NULL, NULL);
    double accepted_total = metrics_store_total (self, "splitmesh_drafts_accepted_total", NULL, NULL);
    const struct { const char *key; double value; } totals [] = {
        { "tokens", metrics_store_total (self, "splitmesh_tokens_generated_total", NULL, NULL) },
        { "prompt_tokens", metrics_store_total (self, "splitmesh_prompt_tokens_total", NULL, NULL) },
        { "drafts_proposed", proposed_total },
        { "drafts_accepted", accepted_total },
        { "acceptance", proposed_total > 0? accepted_total / proposed_total: NAN },
        { "link_bytes_up", metrics_store_total (self, "splitmesh_link_bytes_total", "direction", "up") },
        { "link_bytes_down", metrics_store_total (self, "splitmesh_link_bytes_total", "direction", "down") },
        { "generations_cancelled", metrics_store_total (self, "splitmesh_generations_cancelled_total",
                                                        "service", "edge-draft") },
    };
    for (size_t i = 0; i < sizeof totals / sizeof totals [0]; i++) {
        fprintf (out, "%s\"%s\":", i? ",": "", totals [i].key);
        s_write_json_num (out, totals [i].value);
    }
    fputs ("},", out);
    s_write_services (self, out, now_ms, down_after_ms);
    fputs ("}\n", out);
    fclose (out);
    return text;
}
