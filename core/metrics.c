/*  metrics.c: local aggregation and publishing of metric events.

    Callers (any thread) update a table of series under a mutex; a small
    actor owns the XPUB socket, watches subscriptions coming back through
    the broker's proxy and, every METRICS_FLUSH_MS while someone listens,
    takes what is pending out of the table and publishes it as
    [METRICS_TOPIC][metric_event] messages. See metrics.h for the rules.
*/
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include "codec.h"
#include "metrics.h"

#define s_GAUGE_REPEAT_MS 1000      //  every gauge again this often
#define s_UP_NAME "splitmesh_up"
#define s_DROPPED_NAME "splitmesh_metrics_dropped_total"

typedef struct {
    char *name;                 //  full name, prefix included
    wire_metric_kind_t kind;    //  counter, gauge or histogram
    wire_kv_t *labels;          //  label_count pairs pointing into label_buf
    size_t label_count;
    char *label_buf;            //  storage of the parsed labels
    double value;               //  counter: increment pending; gauge: value
    bool dirty;                 //  counter/gauge: something to send
    double *samples;            //  histogram: sample_count pending, sample_cap room
    size_t sample_count;
    size_t sample_cap;
} s_series_t;

struct _metrics_t {
    char *service;              //  publishing service
    char *instance;             //  this process
    char *endpoint;             //  connected endpoint, NULL if disabled
    pthread_mutex_t lock;       //  guards series, warned, dropped
    zhashx_t *series;           //  "kind\x1fname\x1flabels" -> s_series_t *
    zhashx_t *warned;           //  problems already logged once
    double dropped;             //  observations dropped, not yet published
    zactor_t *actor;            //  the publisher, NULL if disabled
    atomic_int subscribers;     //  subscriptions seen by the actor
    bool connect_failed;        //  set by the actor before it signals
};

//  ---------------------------------------------------------------------
//  Validation

int
metrics_name_valid (const char *name)
{
    if (!name || !*name)
        return -1;
    size_t len = strlen (name);
    size_t prefix = strncmp (name, METRICS_PREFIX, strlen (METRICS_PREFIX)) == 0?
                    0: strlen (METRICS_PREFIX);
    if (len + prefix > WIRE_MAX_NAME_BYTES)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = name [i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':'
               || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return -1;
    }
    return 0;
}

int
metrics_label_name_valid (const char *key)
{
    if (!key || !*key || strncmp (key, "__", 2) == 0)
        return -1;
    for (const char *p = key; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
               || (p > key && c >= '0' && c <= '9');
        if (!ok)
            return -1;
    }
    return 0;
}

int
metrics_labels_parse (const char *labels, char *buf, size_t buf_size,
                      char **keys, char **values, int max,
                      char *error, size_t error_size)
{
    assert (buf && keys && values);
    if (!labels || !*labels)
        return 0;
    size_t len = strlen (labels);
    if (len + 1 > buf_size) {
        snprintf (error, error_size, "labels '%.40s...' are longer than %zu bytes", labels, buf_size - 1);
        return -1;
    }
    memcpy (buf, labels, len + 1);
    int count = 0;
    char *cursor = buf;
    while (cursor) {
        char *comma = strchr (cursor, ',');
        if (comma)
            *comma = '\0';
        char *eq = strchr (cursor, '=');
        if (!eq) {
            snprintf (error, error_size, "label '%s' has no '='", cursor);
            return -1;
        }
        *eq = '\0';
        char *key = cursor;
        char *value = eq + 1;
        if (metrics_label_name_valid (key)) {
            snprintf (error, error_size, "label name '%s' is not [a-zA-Z_][a-zA-Z0-9_]* "
                      "(or starts with __)", key);
            return -1;
        }
        if (streq (key, "service") || streq (key, "instance")) {
            snprintf (error, error_size, "label name '%s' is reserved (the event carries it)", key);
            return -1;
        }
        if (strlen (value) > WIRE_MAX_NAME_BYTES) {
            snprintf (error, error_size, "label '%s' value is longer than %d bytes",
                      key, WIRE_MAX_NAME_BYTES);
            return -1;
        }
        for (int i = 0; i < count; i++)
            if (streq (keys [i], key)) {
                snprintf (error, error_size, "label '%s' given twice", key);
                return -1;
            }
        if (count == max) {
            snprintf (error, error_size, "more than %d labels", max);
            return -1;
        }
        keys [count] = key;
        values [count] = value;
        count++;
        cursor = comma? comma + 1: NULL;
    }
    return count;
}

//  ---------------------------------------------------------------------
//  Series table (callers hold self->lock)

static void
s_series_destroy (s_series_t **self_p)
{
    s_series_t *self = *self_p;
    if (self) {
        free (self->name);
        free (self->labels);
        free (self->label_buf);
        free (self->samples);
        free (self);
        *self_p = NULL;
    }
}

static void
s_series_free (void **item)
{
    s_series_destroy ((s_series_t **) item);
}

//  Logs a problem once per distinct text (a hot loop must not flood logs).
static void
s_warn_once (metrics_t *self, const char *text)
{
    if (zhashx_lookup (self->warned, text))
        return;
    if (zhashx_size (self->warned) < 1000)
        zhashx_insert (self->warned, text, (void *) 1);
    zsys_warning ("metrics (%s): %s; ignored", self->service, text);
}

//  Finds or creates the series; NULL (logged once) when name or labels
//  are bad.
static s_series_t *
s_series_require (metrics_t *self, wire_metric_kind_t kind, const char *name, const char *labels)
{
    //  Key "<kind>\x1f<name>\x1f<labels>", built by hand: this runs on
    //  every call (snprintf was most of a call's cost).
    char key [WIRE_MAX_NAME_BYTES * 2 + 64];
    size_t name_len = name? strlen (name): 0;
    size_t labels_len = labels? strlen (labels): 0;
    bool key_ok = name && name_len + labels_len + 4 <= sizeof key;
    if (key_ok) {
        key [0] = (char) ('0' + (int) kind);
        key [1] = '\x1f';
        memcpy (key + 2, name, name_len);
        key [2 + name_len] = '\x1f';
        memcpy (key + 3 + name_len, labels? labels: "", labels_len);
        key [3 + name_len + labels_len] = '\0';
    }
    s_series_t *series = key_ok? (s_series_t *) zhashx_lookup (self->series, key): NULL;
    if (series)
        return series;

    char problem [512];
    if (metrics_name_valid (name)) {
        snprintf (problem, sizeof problem, "bad metric name '%.200s'", name? name: "(null)");
        s_warn_once (self, problem);
        return NULL;
    }
    char *keys [WIRE_MAX_LABELS], *values [WIRE_MAX_LABELS];
    size_t buf_size = labels? strlen (labels) + 1: 1;
    char *buf = (char *) malloc (buf_size);
    char error [300] = "";
    int count = buf? metrics_labels_parse (labels, buf, buf_size, keys, values,
                                           WIRE_MAX_LABELS, error, sizeof error): -1;
    if (count < 0 || !key_ok) {
        snprintf (problem, sizeof problem, "metric '%.200s': %s", name,
                  key_ok? error: "labels too long");
        s_warn_once (self, problem);
        free (buf);
        return NULL;
    }
    series = (s_series_t *) zmalloc (sizeof (s_series_t));
    bool has_prefix = strncmp (name, METRICS_PREFIX, strlen (METRICS_PREFIX)) == 0;
    series->name = has_prefix? strdup (name): zsys_sprintf ("%s%s", METRICS_PREFIX, name);
    series->kind = kind;
    series->label_buf = buf;
    series->label_count = (size_t) count;
    series->labels = (wire_kv_t *) calloc (count? (size_t) count: 1, sizeof (wire_kv_t));
    for (int i = 0; i < count; i++) {
        series->labels [i].key = keys [i];
        series->labels [i].value = values [i];
    }
    zhashx_insert (self->series, key, series);
    return series;
}

//  ---------------------------------------------------------------------
//  Publishing (the actor)

//  Encodes and sends one event; returns 1 if sent, 0 if not.
static int
s_send_event (metrics_t *self, zsock_t *pub, const char *name, wire_metric_kind_t kind,
              double value, wire_kv_t *labels, size_t label_count, uint64_t now_ms)
{
    wire_metric_event_t event;
    wire_msg_init (&wire_metric_event_desc, &event);
    event.service = self->service;
    event.instance = self->instance;
    event.name = (char *) name;
    event.kind = kind;
    event.value = value;
    event.labels = label_count? labels: NULL;
    event.labels_count = label_count;
    event.ts_ms = now_ms;
    wire_err_t err;
    zframe_t *frame = wire_encode_frame (&wire_metric_event_desc, &event, &err);
    if (!frame) {
        zsys_warning ("metrics (%s): cannot encode '%s': %s", self->service, name, err.text);
        return 0;
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, METRICS_TOPIC);
    zmsg_append (msg, &frame);
    return zmsg_send (&msg, pub) == 0? 1: 0;
}

//  One pending event, copied out of the table so the lock is not held
//  while sending.
typedef struct {
    s_series_t *series;         //  a private copy (name, labels, samples)
    double value;
} s_pending_t;

//  Takes everything pending out of the table and publishes it. `all_gauges`
//  resends every gauge. Returns the number of events sent.
static int
s_flush (metrics_t *self, zsock_t *pub, bool all_gauges, bool heartbeat)
{
    uint64_t now_ms = (uint64_t) zclock_time ();
    if (heartbeat)
        metrics_gauge (self, s_UP_NAME, NULL, 1);

    zlist_t *pending = zlist_new ();
    pthread_mutex_lock (&self->lock);
    if (self->dropped > 0) {
        s_series_t *dropped = s_series_require (self, WIRE_METRIC_KIND_COUNTER, s_DROPPED_NAME, NULL);
        if (dropped) {
            dropped->value += self->dropped;
            dropped->dirty = true;
        }
        self->dropped = 0;
    }
    s_series_t *series = (s_series_t *) zhashx_first (self->series);
    while (series) {
        bool send = series->kind == WIRE_METRIC_KIND_HISTOGRAM? series->sample_count > 0
                  : series->kind == WIRE_METRIC_KIND_GAUGE? (series->dirty || all_gauges)
                  : (series->dirty && series->value > 0);
        if (send) {
            //  Shallow copy that takes the samples; name and labels stay
            //  valid because series are never removed while the actor runs.
            s_pending_t *item = (s_pending_t *) zmalloc (sizeof (s_pending_t));
            item->series = (s_series_t *) zmalloc (sizeof (s_series_t));
            *item->series = *series;
            item->value = series->value;
            if (series->kind == WIRE_METRIC_KIND_HISTOGRAM) {
                series->samples = NULL;
                series->sample_count = series->sample_cap = 0;
            }
            else
            if (series->kind == WIRE_METRIC_KIND_COUNTER)
                series->value = 0;
            series->dirty = false;
            zlist_append (pending, item);
        }
        series = (s_series_t *) zhashx_next (self->series);
    }
    pthread_mutex_unlock (&self->lock);

    int sent = 0;
    s_pending_t *item = (s_pending_t *) zlist_first (pending);
    while (item) {
        s_series_t *copy = item->series;
        if (copy->kind == WIRE_METRIC_KIND_HISTOGRAM) {
            for (size_t i = 0; i < copy->sample_count; i++)
                sent += s_send_event (self, pub, copy->name, copy->kind, copy->samples [i],
                                      copy->labels, copy->label_count, now_ms);
            free (copy->samples);
        }
        else
            sent += s_send_event (self, pub, copy->name, copy->kind, item->value,
                                  copy->labels, copy->label_count, now_ms);
        free (copy);
        free (item);
        item = (s_pending_t *) zlist_next (pending);
    }
    zlist_destroy (&pending);
    return sent;
}

//  Reads subscription messages from the XPUB: "\x01topic" subscribes,
//  "\x00topic" unsubscribes.
static void
s_read_subscriptions (metrics_t *self, zsock_t *pub)
{
    while (zsock_events (pub) & ZMQ_POLLIN) {
        zframe_t *frame = zframe_recv (pub);
        if (!frame)
            break;
        if (zframe_size (frame) >= 1) {
            const uint8_t *data = zframe_data (frame);
            size_t topic_len = zframe_size (frame) - 1;
            //  A subscription matters if it is a prefix of our topic.
            bool ours = topic_len <= strlen (METRICS_TOPIC)
                     && memcmp (data + 1, METRICS_TOPIC, topic_len) == 0;
            if (ours && data [0] == 1)
                atomic_fetch_add (&self->subscribers, 1);
            else
            if (ours && data [0] == 0 && atomic_load (&self->subscribers) > 0)
                atomic_fetch_sub (&self->subscribers, 1);
        }
        zframe_destroy (&frame);
    }
}

//  True if a flush would send something other than gauges.
static bool
s_has_pending (metrics_t *self)
{
    bool pending = false;
    pthread_mutex_lock (&self->lock);
    pending = self->dropped > 0;
    for (s_series_t *series = (s_series_t *) zhashx_first (self->series);
         series && !pending; series = (s_series_t *) zhashx_next (self->series))
        pending = (series->kind == WIRE_METRIC_KIND_COUNTER && series->value > 0)
               || series->sample_count > 0;
    pthread_mutex_unlock (&self->lock);
    return pending;
}

static void
s_actor (zsock_t *pipe, void *args)
{
    metrics_t *self = (metrics_t *) args;
    zsock_t *pub = zsock_new (ZMQ_XPUB);
    bool ok = pub && zsock_connect (pub, "%s", self->endpoint) == 0;
    if (pub) {
        zsock_set_linger (pub, 500);
        zsock_set_sndhwm (pub, 100000);
    }
    self->connect_failed = !ok;     //  read by metrics_new after the signal
    zsock_signal (pipe, ok? 0: 1);
    if (!ok) {
        zsock_destroy (&pub);
        char *command = zstr_recv (pipe);   //  wait for $TERM
        zstr_free (&command);
        return;
    }
    int64_t flush_at = zclock_mono () + METRICS_FLUSH_MS;
    int64_t gauges_at = zclock_mono ();
    bool terminated = false;
    while (!terminated) {
        zmq_pollitem_t items [2] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (pub), 0, ZMQ_POLLIN, 0 }
        };
        int64_t wait = flush_at - zclock_mono ();
        if (zmq_poll (items, 2, wait < 0? 0: (long) wait) == -1) {
            if (errno == EINTR && !zsys_interrupted)
                continue;
            break;
        }
        if (items [1].revents & ZMQ_POLLIN)
            s_read_subscriptions (self, pub);
        if (items [0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (pipe);
            if (!command || streq (command, "$TERM"))
                terminated = true;
            else
            if (streq (command, "FLUSH")) {
                int sent = atomic_load (&self->subscribers) > 0?
                           s_flush (self, pub, false, false): -1;
                zsock_send (pipe, "i", sent);
            }
            else
            if (streq (command, "WAIT")) {
                //  A subscriber appears within `ms`? Answer 1 or 0.
                char *ms_text = zstr_recv (pipe);
                int64_t until = zclock_mono () + (ms_text? atoi (ms_text): 0);
                zstr_free (&ms_text);
                while (atomic_load (&self->subscribers) == 0 && zclock_mono () < until) {
                    zmq_pollitem_t item = { zsock_resolve (pub), 0, ZMQ_POLLIN, 0 };
                    if (zmq_poll (&item, 1, (long) (until - zclock_mono ())) == -1)
                        break;
                    if (item.revents & ZMQ_POLLIN)
                        s_read_subscriptions (self, pub);
                }
                zsock_send (pipe, "i", atomic_load (&self->subscribers) > 0? 1: 0);
            }
            zstr_free (&command);
        }
        int64_t now = zclock_mono ();
        if (now >= flush_at) {
            if (atomic_load (&self->subscribers) > 0) {
                bool repeat = now >= gauges_at;
                s_flush (self, pub, repeat, repeat);
                if (repeat)
                    gauges_at = now + s_GAUGE_REPEAT_MS;
            }
            flush_at = now + METRICS_FLUSH_MS;
        }
    }
    //  Last flush: if something is pending, give a subscriber a moment to
    //  appear if none has.
    int64_t until = zclock_mono () + (s_has_pending (self)? 500: 0);
    while (atomic_load (&self->subscribers) == 0 && zclock_mono () < until) {
        zmq_pollitem_t item = { zsock_resolve (pub), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, (long) (until - zclock_mono ())) == -1)
            break;
        if (item.revents & ZMQ_POLLIN)
            s_read_subscriptions (self, pub);
    }
    if (atomic_load (&self->subscribers) > 0)
        s_flush (self, pub, false, false);
    zsock_destroy (&pub);
}

//  ---------------------------------------------------------------------
//  Public API

metrics_t *
metrics_new (const char *service, const char *instance, const char *endpoint)
{
    assert (service);
    metrics_t *self = (metrics_t *) zmalloc (sizeof (metrics_t));
    self->service = strdup (service);
    if (instance && *instance)
        self->instance = strdup (instance);
    else {
        char host [128] = "localhost";
        gethostname (host, sizeof host - 1);
        self->instance = zsys_sprintf ("%s:%d", host, (int) getpid ());
    }
    pthread_mutex_init (&self->lock, NULL);
    self->series = zhashx_new ();
    zhashx_set_destructor (self->series, s_series_free);
    self->warned = zhashx_new ();
    atomic_init (&self->subscribers, 0);
    if (!endpoint || !*endpoint)
        return self;                //  disabled: calls are no-ops

    //  A bind address "tcp://*:PORT" is reached at the loopback.
    if (strncmp (endpoint, "tcp://*:", 8) == 0)
        self->endpoint = zsys_sprintf ("tcp://127.0.0.1:%s", endpoint + 8);
    else
    if (strncmp (endpoint, "tcp://0.0.0.0:", 14) == 0)
        self->endpoint = zsys_sprintf ("tcp://127.0.0.1:%s", endpoint + 14);
    else
        self->endpoint = strdup (endpoint);
    //  zactor_new waits for the actor's signal, so connect_failed is set.
    self->actor = zactor_new (s_actor, self);
    if (!self->actor || self->connect_failed) {
        zsys_error ("metrics (%s): cannot connect to telemetry endpoint '%s'", service, endpoint);
        metrics_destroy (&self);
        return NULL;
    }
    return self;
}

void
metrics_destroy (metrics_t **self_p)
{
    assert (self_p);
    metrics_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy (&self->actor);      //  flushes what is pending
    zhashx_destroy (&self->series);
    zhashx_destroy (&self->warned);
    pthread_mutex_destroy (&self->lock);
    free (self->service);
    free (self->instance);
    free (self->endpoint);
    free (self);
    *self_p = NULL;
}

bool
metrics_enabled (metrics_t *self)
{
    return self && self->actor;
}

//  The series a call updates, with the lock held; NULL (logged once) when
//  the value or the name or labels are bad.
static s_series_t *
s_series_for_call (metrics_t *self, wire_metric_kind_t kind, const char *name,
                   const char *labels, double value)
{
    bool ok = kind == WIRE_METRIC_KIND_COUNTER? value >= 0 && isfinite (value): isfinite (value);
    if (!ok) {
        char problem [300];
        snprintf (problem, sizeof problem, "%s '%.200s' given %s value %g",
                  wire_metric_kind_names [kind], name? name: "(null)",
                  kind == WIRE_METRIC_KIND_COUNTER? "a negative or non-finite": "a non-finite",
                  value);
        s_warn_once (self, problem);
        return NULL;
    }
    return s_series_require (self, kind, name, labels);
}

void
metrics_count (metrics_t *self, const char *name, const char *labels, double delta)
{
    if (!metrics_enabled (self))
        return;
    pthread_mutex_lock (&self->lock);
    s_series_t *series = s_series_for_call (self, WIRE_METRIC_KIND_COUNTER, name, labels, delta);
    if (series) {
        series->value += delta;
        series->dirty = true;
    }
    pthread_mutex_unlock (&self->lock);
}

void
metrics_gauge (metrics_t *self, const char *name, const char *labels, double value)
{
    if (!metrics_enabled (self))
        return;
    pthread_mutex_lock (&self->lock);
    s_series_t *series = s_series_for_call (self, WIRE_METRIC_KIND_GAUGE, name, labels, value);
    if (series) {
        series->value = value;
        series->dirty = true;
    }
    pthread_mutex_unlock (&self->lock);
}

void
metrics_observe (metrics_t *self, const char *name, const char *labels, double value)
{
    if (!metrics_enabled (self))
        return;
    pthread_mutex_lock (&self->lock);
    s_series_t *series = s_series_for_call (self, WIRE_METRIC_KIND_HISTOGRAM, name, labels, value);
    if (series && series->sample_count == series->sample_cap) {
        size_t cap = series->sample_cap? series->sample_cap * 2: 16;
        double *samples = cap <= METRICS_MAX_PENDING?
                          (double *) realloc (series->samples, cap * sizeof (double)): NULL;
        if (samples) {
            series->samples = samples;
            series->sample_cap = cap;
        }
    }
    if (series && series->sample_count < series->sample_cap)
        series->samples [series->sample_count++] = value;
    else
    if (series)
        self->dropped += 1;
    pthread_mutex_unlock (&self->lock);
}

int
metrics_flush (metrics_t *self)
{
    if (!metrics_enabled (self))
        return -1;
    if (zstr_send (self->actor, "FLUSH"))
        return -1;
    int sent = -1;
    if (zsock_recv (self->actor, "i", &sent))
        return -1;
    return sent;
}

bool
metrics_wait_subscriber (metrics_t *self, int timeout_ms)
{
    if (!metrics_enabled (self))
        return false;
    char ms [32];
    snprintf (ms, sizeof ms, "%d", timeout_ms < 0? 0: timeout_ms);
    if (zstr_sendm (self->actor, "WAIT") || zstr_send (self->actor, ms))
        return false;
    int yes = 0;
    if (zsock_recv (self->actor, "i", &yes))
        return false;
    return yes == 1;
}
