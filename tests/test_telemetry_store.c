/*  test_telemetry_store.c: aggregation and Prometheus exposition.

    Feeds metric events into a metrics_store (what splitmesh-telemetry does
    with the bus) and parses the exposition text back with an independent
    little parser (label escapes included), checking names, _total,
    HELP/TYPE once per family, cumulative and monotone buckets, +Inf ==
    _count, and that bad events are rejected without changing the store.
    When Prometheus' own `promtool` is installed, it lints the text too.
    Also the health and dashboard JSON: rates, acceptance, percentiles,
    up/down by recency.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <sys/wait.h>
#include "codec.h"
#include "metrics.h"
#include "metrics_store.h"

//  ---------------------------------------------------------------------
//  Helpers

static wire_metric_event_t
s_event (const char *service, const char *instance, const char *name,
         wire_metric_kind_t kind, double value)
{
    wire_metric_event_t event;
    wire_msg_init (&wire_metric_event_desc, &event);
    event.service = (char *) service;
    event.instance = (char *) instance;
    event.name = (char *) name;
    event.kind = kind;
    event.value = value;
    event.ts_ms = 1;
    return event;
}

static void
s_add (metrics_store_t *store, wire_metric_event_t *event, int64_t now)
{
    char error [400] = "";
    int rc = metrics_store_add (store, event, now, error, sizeof error);
    cr_assert_eq (rc, 0, "event '%s' rejected: %s", event->name, error);
}

//  One parsed sample line.
typedef struct {
    char name [300];
    int label_count;
    char keys [40][300];
    char values [40][600];
    double value;
} sample_t;

//  Parses `name{k="v",...} value` with the exposition format's escapes.
//  Returns 0 or -1.
static int
s_parse_sample (const char *line, sample_t *sample)
{
    memset (sample, 0, sizeof *sample);
    const char *p = line;
    size_t n = 0;
    while (*p && *p != '{' && *p != ' ' && n < sizeof sample->name - 1)
        sample->name [n++] = *p++;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (sample->label_count == 40)
                return -1;
            char *key = sample->keys [sample->label_count];
            char *value = sample->values [sample->label_count];
            n = 0;
            while (*p && *p != '=' && n < 299)
                key [n++] = *p++;
            if (*p++ != '=' || *p++ != '"')
                return -1;
            n = 0;
            while (*p && *p != '"' && n < 599) {
                if (*p == '\\') {
                    p++;
                    if (*p == 'n')
                        value [n++] = '\n';
                    else
                    if (*p == '\\' || *p == '"')
                        value [n++] = *p;
                    else
                        return -1;      //  no other escape exists
                    p++;
                }
                else
                    value [n++] = *p++;
            }
            if (*p++ != '"')
                return -1;
            sample->label_count++;
            if (*p == ',')
                p++;
            else
            if (*p != '}')
                return -1;
        }
        p++;
    }
    if (*p++ != ' ')
        return -1;
    char *end = NULL;
    if (streq (p, "+Inf"))
        sample->value = INFINITY;
    else {
        sample->value = strtod (p, &end);
        if (!end || *end)
            return -1;
    }
    return 0;
}

static const char *
s_label (const sample_t *sample, const char *key)
{
    for (int i = 0; i < sample->label_count; i++)
        if (streq (sample->keys [i], key))
            return sample->values [i];
    return NULL;
}

//  Collects the sample lines of the exposition into an array; checks the
//  comment lines on the way: every family has one HELP then one TYPE
//  before its samples, and no family appears twice.
static sample_t *
s_parse (const char *text, size_t *count)
{
    sample_t *samples = (sample_t *) calloc (2000, sizeof (sample_t));
    *count = 0;
    char *copy = strdup (text);
    char family [300] = "";
    zhashx_t *families = zhashx_new ();
    char *save = NULL;
    bool expect_type = false;
    for (char *line = strtok_r (copy, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
        if (strncmp (line, "# HELP ", 7) == 0) {
            cr_assert_not (expect_type, "HELP without TYPE before: %s", line);
            sscanf (line + 7, "%299s", family);
            cr_assert_null (zhashx_lookup (families, family), "family %s appears twice", family);
            zhashx_insert (families, family, (void *) 1);
            expect_type = true;
            continue;
        }
        if (strncmp (line, "# TYPE ", 7) == 0) {
            char name [300], kind [40];
            cr_assert_eq (sscanf (line + 7, "%299s %39s", name, kind), 2);
            cr_assert_str_eq (name, family, "TYPE line for %s under HELP of %s", name, family);
            cr_assert (streq (kind, "counter") || streq (kind, "gauge") || streq (kind, "histogram"));
            expect_type = false;
            continue;
        }
        cr_assert_neq (line [0], '#', "unexpected comment: %s", line);
        cr_assert_lt (*count, 2000);
        cr_assert_eq (s_parse_sample (line, &samples [*count]), 0, "unparsable line: %s", line);
        const char *name = samples [*count].name;
        cr_assert (strncmp (name, family, strlen (family)) == 0,
                   "sample %s outside its family %s", name, family);
        (*count)++;
    }
    zhashx_destroy (&families);
    free (copy);
    return samples;
}

static const sample_t *
s_find (const sample_t *samples, size_t count, const char *name,
        const char *key, const char *value)
{
    for (size_t i = 0; i < count; i++)
        if (streq (samples [i].name, name)
        &&  (!key || (s_label (&samples [i], key) && streq (s_label (&samples [i], key), value))))
            return &samples [i];
    return NULL;
}

//  ---------------------------------------------------------------------
//  Counters, gauges, names

Test (telemetry_store, counters_sum_increments_per_series_and_get_total_suffix)
{
    metrics_store_t *store = metrics_store_new ();
    wire_kv_t ok [] = { { "status", "200" } };
    wire_kv_t bad [] = { { "status", "500" } };
    for (int i = 0; i < 7; i++) {
        wire_metric_event_t e = s_event ("edge-draft", "h:1", "splitmesh_requests_total",
                                         WIRE_METRIC_KIND_COUNTER, 1);
        e.labels = ok;
        e.labels_count = 1;
        s_add (store, &e, 1000);
    }
    wire_metric_event_t e = s_event ("edge-draft", "h:1", "splitmesh_requests_total",
                                     WIRE_METRIC_KIND_COUNTER, 2.5);
    e.labels = bad;
    e.labels_count = 1;
    s_add (store, &e, 1000);
    //  Another instance: a separate series.
    e = s_event ("edge-draft", "h:2", "splitmesh_requests_total", WIRE_METRIC_KIND_COUNTER, 3);
    e.labels = ok;
    e.labels_count = 1;
    s_add (store, &e, 1000);
    //  A counter named without _total gets it.
    e = s_event ("cloud-target", "gpu:1", "splitmesh_link_bytes", WIRE_METRIC_KIND_COUNTER, 100);
    s_add (store, &e, 1000);

    char *text = metrics_store_exposition (store);
    size_t count = 0;
    sample_t *samples = s_parse (text, &count);
    const sample_t *s = NULL;
    for (size_t i = 0; i < count; i++)
        if (streq (samples [i].name, "splitmesh_requests_total")
        &&  streq (s_label (&samples [i], "instance"), "h:1")
        &&  streq (s_label (&samples [i], "status"), "200"))
            s = &samples [i];
    cr_assert_not_null (s);
    cr_assert_eq (s->value, 7);
    cr_assert_str_eq (s_label (s, "service"), "edge-draft");
    s = s_find (samples, count, "splitmesh_requests_total", "status", "500");
    cr_assert_not_null (s);
    cr_assert_eq (s->value, 2.5);
    s = s_find (samples, count, "splitmesh_requests_total", "instance", "h:2");
    cr_assert_eq (s->value, 3);
    cr_assert_not_null (s_find (samples, count, "splitmesh_link_bytes_total", NULL, NULL));
    cr_assert_null (s_find (samples, count, "splitmesh_link_bytes", NULL, NULL));
    cr_assert (strstr (text, "# TYPE splitmesh_requests_total counter\n"));
    cr_assert (strstr (text, "# TYPE splitmesh_link_bytes_total counter\n"));
    cr_assert_eq (metrics_store_total (store, "splitmesh_requests_total", NULL, NULL), 12.5);
    cr_assert_eq (metrics_store_total (store, "splitmesh_requests_total", "status", "200"), 10);
    cr_assert_eq (metrics_store_events (store), 10);
    free (samples);
    free (text);
    metrics_store_destroy (&store);
    cr_assert_null (store);
}

Test (telemetry_store, gauges_keep_the_last_value_and_families_are_sorted)
{
    metrics_store_t *store = metrics_store_new ();
    const double values [] = { 3, 9, 4 };
    for (int i = 0; i < 3; i++) {
        wire_metric_event_t e = s_event ("cloud-target", "g:1", "splitmesh_batch_size",
                                         WIRE_METRIC_KIND_GAUGE, values [i]);
        s_add (store, &e, 1000);
    }
    wire_metric_event_t e = s_event ("cloud-target", "g:1", "splitmesh_kv_cache_positions",
                                     WIRE_METRIC_KIND_GAUGE, -1);   //  gauges may go negative
    s_add (store, &e, 1000);
    e = s_event ("a", "b", "splitmesh_aaa", WIRE_METRIC_KIND_GAUGE, 1e-9);
    s_add (store, &e, 1000);
    char *text = metrics_store_exposition (store);
    size_t count = 0;
    sample_t *samples = s_parse (text, &count);
    cr_assert_eq (s_find (samples, count, "splitmesh_batch_size", NULL, NULL)->value, 4);
    cr_assert_eq (s_find (samples, count, "splitmesh_kv_cache_positions", NULL, NULL)->value, -1);
    cr_assert_eq (s_find (samples, count, "splitmesh_aaa", NULL, NULL)->value, 1e-9);
    //  Sorted families: aaa < batch_size < kv_cache_positions < telemetry_*.
    const char *a = strstr (text, "# TYPE splitmesh_aaa");
    const char *b = strstr (text, "# TYPE splitmesh_batch_size");
    const char *k = strstr (text, "# TYPE splitmesh_kv_cache_positions");
    const char *t = strstr (text, "# TYPE splitmesh_telemetry_events_total");
    cr_assert (a && b && k && t && a < b && b < k && k < t);
    //  Known metrics carry their documented HELP text.
    cr_assert (strstr (text, "# HELP splitmesh_batch_size Sessions in one batched forward pass.\n"));
    free (samples);
    free (text);
    metrics_store_destroy (&store);
}

//  ---------------------------------------------------------------------
//  Histograms

Test (telemetry_store, histogram_buckets_are_cumulative_monotone_and_match_count)
{
    metrics_store_t *store = metrics_store_new ();
    //  Values on bucket bounds go into that bucket (le is inclusive).
    const double observations [] = { 0.0004, 0.0005, 0.003, 0.003, 0.2, 1, 7, 100 };
    const size_t n = sizeof observations / sizeof observations [0];
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        wire_metric_event_t e = s_event ("cloud-target", "g:1", "splitmesh_verify_seconds",
                                         WIRE_METRIC_KIND_HISTOGRAM, observations [i]);
        s_add (store, &e, 1000);
        sum += observations [i];
    }
    char *text = metrics_store_exposition (store);
    cr_assert (strstr (text, "# TYPE splitmesh_verify_seconds histogram\n"));
    size_t count = 0;
    sample_t *samples = s_parse (text, &count);
    size_t bounds_count = 0;
    const double *bounds = metrics_store_buckets ("splitmesh_verify_seconds", &bounds_count);
    cr_assert_gt (bounds_count, 5);
    double previous_le = -INFINITY, previous = 0;
    size_t buckets = 0;
    for (size_t i = 0; i < count; i++) {
        if (!streq (samples [i].name, "splitmesh_verify_seconds_bucket"))
            continue;
        const char *le = s_label (&samples [i], "le");
        cr_assert_not_null (le);
        double bound = streq (le, "+Inf")? INFINITY: strtod (le, NULL);
        cr_assert_gt (bound, previous_le, "le not increasing at %s", le);
        cr_assert_geq (samples [i].value, previous, "bucket counts not monotone at le=%s", le);
        //  The count must equal the observations <= bound.
        double expected = 0;
        for (size_t j = 0; j < n; j++)
            expected += observations [j] <= bound;
        cr_assert_eq (samples [i].value, expected, "bucket le=%s: %g, expected %g",
                      le, samples [i].value, expected);
        if (buckets < bounds_count)
            cr_assert_eq (bound, bounds [buckets]);
        previous_le = bound;
        previous = samples [i].value;
        buckets++;
    }
    cr_assert_eq (buckets, bounds_count + 1);
    cr_assert (isinf (previous_le), "last bucket must be +Inf");
    cr_assert_eq (previous, (double) n);
    cr_assert_eq (s_find (samples, count, "splitmesh_verify_seconds_count", NULL, NULL)->value, (double) n);
    cr_assert_float_eq (s_find (samples, count, "splitmesh_verify_seconds_sum", NULL, NULL)->value, sum, 1e-12);
    free (samples);
    free (text);
    metrics_store_destroy (&store);
}

Test (telemetry_store, buckets_follow_the_unit_suffix)
{
    size_t n = 0;
    const double *seconds = metrics_store_buckets ("splitmesh_ttft_seconds", &n);
    cr_assert_lt (seconds [0], 0.01);
    const double *bytes = metrics_store_buckets ("splitmesh_frame_bytes", &n);
    cr_assert_geq (bytes [n - 1], 1 << 20);
    const double *counts = metrics_store_buckets ("splitmesh_batch_size", &n);
    cr_assert_eq (counts [0], 1);
    cr_assert_neq (seconds, bytes);
    cr_assert_neq (bytes, counts);
}

//  ---------------------------------------------------------------------
//  Escaping and rejection

Test (telemetry_store, label_values_are_escaped_and_parse_back)
{
    metrics_store_t *store = metrics_store_new ();
    const char *nasty = "a\"quoted\" back\\slash\nnew line, {braces}=";
    wire_kv_t labels [] = { { "zeta", "last" }, { "path", (char *) nasty }, { "alpha", "" } };
    wire_metric_event_t e = s_event ("svc \"x\"", "in\\st", "splitmesh_errors_total",
                                     WIRE_METRIC_KIND_COUNTER, 1);
    e.labels = labels;
    e.labels_count = 3;
    s_add (store, &e, 1000);
    char *text = metrics_store_exposition (store);
    //  Escaped on the wire: no raw newline inside the sample line.
    cr_assert (strstr (text, "path=\"a\\\"quoted\\\" back\\\\slash\\nnew line, {braces}=\""), "%s", text);
    size_t count = 0;
    sample_t *samples = s_parse (text, &count);
    const sample_t *s = s_find (samples, count, "splitmesh_errors_total", NULL, NULL);
    cr_assert_not_null (s);
    cr_assert_str_eq (s_label (s, "path"), nasty);
    cr_assert_str_eq (s_label (s, "service"), "svc \"x\"");
    cr_assert_str_eq (s_label (s, "instance"), "in\\st");
    cr_assert_str_eq (s_label (s, "alpha"), "");
    //  Labels: service, instance, then the event's sorted by name.
    cr_assert_str_eq (s->keys [0], "service");
    cr_assert_str_eq (s->keys [1], "instance");
    cr_assert_str_eq (s->keys [2], "alpha");
    cr_assert_str_eq (s->keys [3], "path");
    cr_assert_str_eq (s->keys [4], "zeta");
    free (samples);
    free (text);
    metrics_store_destroy (&store);
}

Test (telemetry_store, bad_events_are_rejected_and_change_nothing)
{
    metrics_store_t *store = metrics_store_new ();
    wire_metric_event_t good = s_event ("s", "i", "splitmesh_x_total", WIRE_METRIC_KIND_COUNTER, 1);
    s_add (store, &good, 1000);
    char *before = metrics_store_exposition (store);

    wire_kv_t reserved [] = { { "service", "x" } };
    wire_kv_t le [] = { { "le", "1" } };
    wire_kv_t bad_key [] = { { "9lives", "x" } };
    wire_kv_t dunder [] = { { "__name__", "x" } };
    wire_kv_t twice [] = { { "a", "1" }, { "a", "2" } };
    struct {
        wire_metric_event_t event;
        wire_kv_t *labels;
        size_t label_count;
        const char *why;
    } cases [] = {
        { s_event ("s", "i", "no_prefix_total", WIRE_METRIC_KIND_COUNTER, 1), NULL, 0, "prefix" },
        { s_event ("s", "i", "splitmesh_bad-name", WIRE_METRIC_KIND_GAUGE, 1), NULL, 0, "valid" },
        { s_event ("s", "i", "splitmesh_x_total", WIRE_METRIC_KIND_GAUGE, 1), NULL, 0, "is a counter" },
        { s_event ("s", "i", "splitmesh_x_total", WIRE_METRIC_KIND_COUNTER, -1), NULL, 0, "negative" },
        { s_event ("s", "i", "splitmesh_g", WIRE_METRIC_KIND_GAUGE, NAN), NULL, 0, "non-finite" },
        { s_event ("s", "i", "splitmesh_g", WIRE_METRIC_KIND_GAUGE, INFINITY), NULL, 0, "non-finite" },
        { s_event ("s", "i", "splitmesh_g", WIRE_METRIC_KIND_GAUGE, 1), reserved, 1, "reserved" },
        { s_event ("s", "i", "splitmesh_h_seconds", WIRE_METRIC_KIND_HISTOGRAM, 1), le, 1, "reserved" },
        { s_event ("s", "i", "splitmesh_g", WIRE_METRIC_KIND_GAUGE, 1), bad_key, 1, "label name" },
        { s_event ("s", "i", "splitmesh_g", WIRE_METRIC_KIND_GAUGE, 1), dunder, 1, "label name" },
        { s_event ("s", "i", "splitmesh_g", WIRE_METRIC_KIND_GAUGE, 1), twice, 2, "twice" },
        { s_event ("", "i", "splitmesh_g", WIRE_METRIC_KIND_GAUGE, 1), NULL, 0, "without service" },
        { s_event ("s", "i", "splitmesh_telemetry_events_total", WIRE_METRIC_KIND_COUNTER, 1), NULL, 0, "reserved" },
    };
    size_t n = sizeof cases / sizeof cases [0];
    for (size_t i = 0; i < n; i++) {
        cases [i].event.labels = cases [i].labels;
        cases [i].event.labels_count = cases [i].label_count;
        char error [400] = "";
        cr_assert_eq (metrics_store_add (store, &cases [i].event, 1000, error, sizeof error), -1,
                      "case %zu (%s) accepted", i, cases [i].why);
        cr_assert (strstr (error, cases [i].why), "case %zu: error '%s' lacks '%s'",
                   i, error, cases [i].why);
    }
    cr_assert_eq (metrics_store_rejected (store), n);
    cr_assert_eq (metrics_store_events (store), 1);
    char *after = metrics_store_exposition (store);
    //  Identical except the rejected counter.
    char expected [128];
    snprintf (expected, sizeof expected,
              "splitmesh_telemetry_events_rejected_total{service=\"telemetry\"} %zu\n", n);
    cr_assert (strstr (after, expected), "%s", after);
    cr_assert_eq (strncmp (before, after, strstr (before, "# HELP splitmesh_telemetry") - before), 0);
    free (before);
    free (after);
    metrics_store_destroy (&store);
}

//  ---------------------------------------------------------------------
//  promtool (Prometheus' own linter), when installed

Test (telemetry_store, promtool_accepts_the_exposition)
{
    const char *promtool = "/usr/bin/promtool";
    if (access (promtool, X_OK))
        cr_skip_test ("promtool not installed (Debian package prometheus)");
    metrics_store_t *store = metrics_store_new ();
    wire_kv_t pos [] = { { "pos", "0" } };
    wire_kv_t dir [] = { { "direction", "up" } };
    wire_metric_event_t events [] = {
        s_event ("edge-draft", "h:1", "splitmesh_tokens_generated_total", WIRE_METRIC_KIND_COUNTER, 5),
        s_event ("edge-draft", "h:1", "splitmesh_drafts_proposed_total", WIRE_METRIC_KIND_COUNTER, 4),
        s_event ("edge-draft", "h:1", "splitmesh_link_bytes_total", WIRE_METRIC_KIND_COUNTER, 4096),
        s_event ("edge-draft", "h:1", "splitmesh_ttft_seconds", WIRE_METRIC_KIND_HISTOGRAM, 0.12),
        s_event ("cloud-target", "g:1", "splitmesh_batch_size", WIRE_METRIC_KIND_GAUGE, 3),
    };
    events [1].labels = pos;
    events [1].labels_count = 1;
    events [2].labels = dir;
    events [2].labels_count = 1;
    for (size_t i = 0; i < sizeof events / sizeof events [0]; i++)
        s_add (store, &events [i], 1000);
    char *text = metrics_store_exposition (store);
    char path [] = "/tmp/sm-promtool-XXXXXX";
    int fd = mkstemp (path);
    cr_assert_geq (fd, 0);
    cr_assert_eq (write (fd, text, strlen (text)), (ssize_t) strlen (text));
    close (fd);
    char command [256];
    snprintf (command, sizeof command, "%s check metrics < %s 2>&1", promtool, path);
    FILE *pipe = popen (command, "r");
    char output [4096] = "";
    size_t got = fread (output, 1, sizeof output - 1, pipe);
    output [got] = '\0';
    int status = pclose (pipe);
    unlink (path);
    cr_assert_eq (WEXITSTATUS (status), 0, "promtool check metrics failed:\n%s\n---\n%s", output, text);
    free (text);
    metrics_store_destroy (&store);
}

//  ---------------------------------------------------------------------
//  Health and dashboard series

Test (telemetry_store, health_marks_silent_processes_down)
{
    metrics_store_t *store = metrics_store_new ();
    wire_metric_event_t e = s_event ("broker", "b:1", "splitmesh_up", WIRE_METRIC_KIND_GAUGE, 1);
    s_add (store, &e, 10000);
    e = s_event ("cloud-target", "g:1", "splitmesh_up", WIRE_METRIC_KIND_GAUGE, 1);
    s_add (store, &e, 14000);
    wire_kv_t svc [] = { { "mdp_service", "target" } };
    e = s_event ("broker", "b:1", "splitmesh_broker_workers", WIRE_METRIC_KIND_GAUGE, 2);
    e.labels = svc;
    e.labels_count = 1;
    s_add (store, &e, 10000);
    char *json = metrics_store_health_json (store, 15000, 3000);
    cr_assert (strstr (json, "\"broker\":{\"instances\":[{\"instance\":\"b:1\",\"last_seen_ms\":10000,"
                             "\"age_ms\":5000,\"up\":false}],\"up\":false}"), "%s", json);
    cr_assert (strstr (json, "\"cloud-target\":{\"instances\":[{\"instance\":\"g:1\",\"last_seen_ms\":14000,"
                             "\"age_ms\":1000,\"up\":true}],\"up\":true}"), "%s", json);
    cr_assert (strstr (json, "\"workers\":{\"target\":2}"), "%s", json);
    free (json);
    metrics_store_destroy (&store);
}

Test (telemetry_store, series_have_rates_acceptance_and_percentiles)
{
    metrics_store_t *store = metrics_store_new ();
    metrics_store_tick (store, 100000, 3000);       //  baseline point
    wire_kv_t pos0 [] = { { "pos", "0" } };
    wire_kv_t pos1 [] = { { "pos", "1" } };
    wire_kv_t up [] = { { "direction", "up" } };
    wire_kv_t down [] = { { "direction", "down" } };
    struct { const char *name; wire_metric_kind_t kind; double value; wire_kv_t *labels; } feed [] = {
        { "splitmesh_tokens_generated_total", WIRE_METRIC_KIND_COUNTER, 40, NULL },
        { "splitmesh_drafts_proposed_total", WIRE_METRIC_KIND_COUNTER, 10, pos0 },
        { "splitmesh_drafts_accepted_total", WIRE_METRIC_KIND_COUNTER, 8, pos0 },
        { "splitmesh_drafts_proposed_total", WIRE_METRIC_KIND_COUNTER, 10, pos1 },
        { "splitmesh_drafts_accepted_total", WIRE_METRIC_KIND_COUNTER, 4, pos1 },
        { "splitmesh_link_bytes_total", WIRE_METRIC_KIND_COUNTER, 2000, up },
        { "splitmesh_link_bytes_total", WIRE_METRIC_KIND_COUNTER, 500, down },
    };
    for (size_t i = 0; i < sizeof feed / sizeof feed [0]; i++) {
        wire_metric_event_t e = s_event ("edge-draft", "h:1", feed [i].name, feed [i].kind, feed [i].value);
        e.labels = feed [i].labels;
        e.labels_count = feed [i].labels? 1: 0;
        s_add (store, &e, 101000);
    }
    for (int v = 1; v <= 100; v++) {
        wire_metric_event_t e = s_event ("edge-draft", "h:1", "splitmesh_inter_token_seconds",
                                         WIRE_METRIC_KIND_HISTOGRAM, v / 1000.0);
        s_add (store, &e, 101500);
    }
    metrics_store_tick (store, 102000, 3000);       //  2 s after the baseline
    char *json = metrics_store_series_json (store, 102000, 3000);
    //  The second point: 40 tokens / 2 s, 12 of 20 drafts, 1000 and 250 B/s,
    //  nearest-rank percentiles of 1..100 ms.
    const char *second = strstr (json, "{\"t\":102000,");
    cr_assert_not_null (second, "%s", json);
    cr_assert (strstr (second, "\"tokens_per_s\":20,\"acceptance\":0.6,"), "%s", second);
    cr_assert (strstr (second, "\"inter_token\":{\"p50\":0.05,\"p90\":0.09,\"p99\":0.099}"), "%s", second);
    cr_assert (strstr (second, "\"ttft\":{\"p50\":null,\"p90\":null,\"p99\":null}"), "%s", second);
    cr_assert (strstr (second, "\"link_bytes_per_s\":{\"up\":1000,\"down\":250}"), "%s", second);
    cr_assert (strstr (second, "\"processes_up\":1,\"processes_total\":1"), "%s", second);
    //  The first point has no interval before it: rates unknown.
    cr_assert (strstr (json, "{\"t\":100000,\"tokens_per_s\":null,\"acceptance\":null,"), "%s", json);
    cr_assert (strstr (json, "\"acceptance_by_pos\":{\"0\":0.8,\"1\":0.4}"), "%s", json);
    free (json);

    //  The window: 10 s later the observations no longer count.
    metrics_store_tick (store, 112000, 3000);
    json = metrics_store_series_json (store, 112000, 3000);
    const char *third = strstr (json, "{\"t\":112000,");
    cr_assert_not_null (third);
    cr_assert (strstr (third, "\"inter_token\":{\"p50\":null,"), "%s", third);
    cr_assert (strstr (third, "\"tokens_per_s\":0,"), "%s", third);
    free (json);
    metrics_store_destroy (&store);
}

Test (telemetry_store, series_keep_the_last_points_only)
{
    metrics_store_t *store = metrics_store_new ();
    for (int i = 1; i <= METRICS_STORE_POINTS + 20; i++)
        metrics_store_tick (store, 200000 + i * 1000, 3000);
    char *json = metrics_store_series_json (store, 0, 3000);
    size_t points = 0;
    for (const char *p = json; (p = strstr (p, "{\"t\":")); p++)
        points++;
    cr_assert_eq (points, METRICS_STORE_POINTS);
    cr_assert (strstr (json, "{\"t\":221000,"), "oldest kept point missing");
    cr_assert_null (strstr (json, "{\"t\":220000,"));
    free (json);
    metrics_store_destroy (&store);
}
