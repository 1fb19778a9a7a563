/*  telemetry.c: the telemetry service actor: bus subscriber + HTTP server.

    Two threads share one metrics_store under `lock`: the actor thread
    receives [topic][metric_event] messages from the bus and ticks the
    dashboard series once a second; libmicrohttpd's internal thread answers
    HTTP requests by rendering the store. Static dashboard files are
    compiled in (web_assets.c, generated at build time from web/ by
    embed.cmake: a byte copy, no JS build step).
*/
#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include "codec.h"
#include "metrics.h"
#include "metrics_store.h"
#include "telemetry.h"
#include "web_assets.h"

typedef struct {
    zsock_t *pipe;              //  actor pipe
    zsock_t *sub;               //  bus subscriber
    struct MHD_Daemon *httpd;   //  HTTP server or NULL
    int port;                   //  bound HTTP port
    telemetry_config_t config;  //  copy, defaults filled in
    char *subscribe;            //  copy of config.subscribe
    char *http_address;         //  copy of config.http_address
    pthread_mutex_t lock;       //  guards store
    metrics_store_t *store;     //  the aggregate
    int64_t last_warning;       //  rate limit of the rejected-event log
    uint64_t bad_frames;        //  messages that were not metric events
} s_telemetry_t;

//  ---------------------------------------------------------------------
//  HTTP

//  Adds the common headers, queues the response and drops our reference.
static enum MHD_Result
s_queue (struct MHD_Connection *connection, unsigned int status,
         const char *content_type, struct MHD_Response *response)
{
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, "Content-Type", content_type);
    MHD_add_response_header (response, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response (connection, status, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_respond (struct MHD_Connection *connection, unsigned int status,
           const char *content_type, const void *body, size_t size, bool copy)
{
    return s_queue (connection, status, content_type, MHD_create_response_from_buffer (
        size, (void *) body, copy? MHD_RESPMEM_MUST_COPY: MHD_RESPMEM_PERSISTENT));
}

//  Answers {"status":N,"error":"..."} with the text JSON-escaped.
static enum MHD_Result
s_respond_error (struct MHD_Connection *connection, unsigned int status, const char *fmt, ...)
{
    char text [512];
    va_list args;
    va_start (args, fmt);
    vsnprintf (text, sizeof text, fmt, args);
    va_end (args);
    char body [1200];
    size_t n = (size_t) snprintf (body, sizeof body, "{\"status\":%u,\"error\":\"", status);
    for (const unsigned char *p = (const unsigned char *) text; *p && n + 8 < sizeof body; p++) {
        if (*p == '"' || *p == '\\')
            n += (size_t) snprintf (body + n, sizeof body - n, "\\%c", *p);
        else
        if (*p < 0x20)
            n += (size_t) snprintf (body + n, sizeof body - n, "\\u%04x", *p);
        else
            body [n++] = (char) *p;
    }
    n += (size_t) snprintf (body + n, sizeof body - n, "\"}\n");
    return s_respond (connection, status, "application/json", body, n, true);
}

//  Sends a rendered string (malloc'd; taken: libmicrohttpd frees it).
static enum MHD_Result
s_respond_owned (struct MHD_Connection *connection, const char *content_type, char *text)
{
    if (!text)
        return s_respond_error (connection, 500, "out of memory");
    struct MHD_Response *response =
        MHD_create_response_from_buffer_with_free_callback (strlen (text), text, free);
    if (!response)
        free (text);
    return s_queue (connection, MHD_HTTP_OK, content_type, response);
}

static enum MHD_Result
s_http_handler (void *cls, struct MHD_Connection *connection, const char *url,
                const char *method, const char *version, const char *upload_data,
                size_t *upload_data_size, void **con_cls)
{
    s_telemetry_t *self = (s_telemetry_t *) cls;
    if (!streq (method, MHD_HTTP_METHOD_GET) && !streq (method, MHD_HTTP_METHOD_HEAD))
        return s_respond_error (connection, MHD_HTTP_METHOD_NOT_ALLOWED,
                                "method %.32s not allowed; use GET", method);
    int64_t now = zclock_time ();
    if (streq (url, "/metrics")) {
        pthread_mutex_lock (&self->lock);
        char *text = metrics_store_exposition (self->store);
        pthread_mutex_unlock (&self->lock);
        return s_respond_owned (connection, "text/plain; version=0.0.4; charset=utf-8", text);
    }
    if (streq (url, "/health")) {
        pthread_mutex_lock (&self->lock);
        char *text = metrics_store_health_json (self->store, now, self->config.down_after_ms);
        pthread_mutex_unlock (&self->lock);
        return s_respond_owned (connection, "application/json", text);
    }
    if (streq (url, "/api/series")) {
        pthread_mutex_lock (&self->lock);
        char *text = metrics_store_series_json (self->store, now, self->config.down_after_ms);
        pthread_mutex_unlock (&self->lock);
        return s_respond_owned (connection, "application/json", text);
    }
    for (size_t i = 0; i < telemetry_web_asset_count; i++) {
        const telemetry_web_asset_t *asset = &telemetry_web_assets [i];
        if (streq (url, asset->path) || (streq (url, "/") && streq (asset->path, "/index.html")))
            return s_respond (connection, MHD_HTTP_OK, asset->content_type,
                              asset->data, asset->size, false);
    }
    return s_respond_error (connection, MHD_HTTP_NOT_FOUND, "no such path: %.200s "
                            "(try /metrics, /health, /api/series or /)", url);
}

//  ---------------------------------------------------------------------
//  Bus

static void
s_receive (s_telemetry_t *self)
{
    zmsg_t *msg = zmsg_recv (self->sub);
    if (!msg)
        return;
    char error [400] = "";
    int rc = -1;
    zframe_t *topic = zmsg_first (msg);
    zframe_t *body = zmsg_next (msg);
    if (zmsg_size (msg) != 2 || !zframe_streq (topic, METRICS_TOPIC))
        snprintf (error, sizeof error, "message of %zu frames, not [%s][metric_event]",
                  zmsg_size (msg), METRICS_TOPIC);
    else {
        wire_metric_event_t event;
        wire_err_t err;
        if (wire_decode_frame (&wire_metric_event_desc, body, &event, &err) == 0) {
            pthread_mutex_lock (&self->lock);
            rc = metrics_store_add (self->store, &event, zclock_time (), error, sizeof error);
            pthread_mutex_unlock (&self->lock);
            wire_msg_free (&wire_metric_event_desc, &event);
        }
        else
            snprintf (error, sizeof error, "undecodable metric_event: %s", err.text);
    }
    if (rc) {
        self->bad_frames++;
        int64_t now = zclock_mono ();
        if (self->config.verbose || now - self->last_warning >= 1000) {
            zsys_warning ("telemetry: rejected event (%" PRIu64 " so far): %s",
                          self->bad_frames, error);
            self->last_warning = now;
        }
        if (strstr (error, "undecodable") || strstr (error, "frames")) {
            //  metrics_store_add counts its own rejections; count these too.
            pthread_mutex_lock (&self->lock);
            metrics_store_reject (self->store);
            pthread_mutex_unlock (&self->lock);
        }
    }
    zmsg_destroy (&msg);
}

//  ---------------------------------------------------------------------
//  Actor

static void
s_destroy (s_telemetry_t **self_p)
{
    s_telemetry_t *self = *self_p;
    if (!self)
        return;
    if (self->httpd)
        MHD_stop_daemon (self->httpd);      //  joins the HTTP thread first
    zsock_destroy (&self->sub);
    metrics_store_destroy (&self->store);
    pthread_mutex_destroy (&self->lock);
    free (self->subscribe);
    free (self->http_address);
    free (self);
    *self_p = NULL;
}

static s_telemetry_t *
s_new (zsock_t *pipe, const telemetry_config_t *config)
{
    s_telemetry_t *self = (s_telemetry_t *) zmalloc (sizeof (s_telemetry_t));
    self->pipe = pipe;
    self->config = *config;
    if (self->config.tick_ms <= 0)
        self->config.tick_ms = 1000;
    if (self->config.down_after_ms <= 0)
        self->config.down_after_ms = 3000;
    self->subscribe = config->subscribe? strdup (config->subscribe): NULL;
    self->http_address = strdup (config->http_address? config->http_address: "127.0.0.1");
    self->config.subscribe = self->subscribe;
    self->config.http_address = self->http_address;
    pthread_mutex_init (&self->lock, NULL);
    self->store = metrics_store_new ();
    self->last_warning = -1000000;

    if (!self->subscribe || !*self->subscribe) {
        zsys_error ("telemetry: no telemetry bus endpoint to subscribe to");
        goto failed;
    }
    self->sub = zsock_new (ZMQ_SUB);
    zsock_set_rcvhwm (self->sub, 100000);
    if (zsock_connect (self->sub, "%s", self->subscribe)) {
        zsys_error ("telemetry: cannot connect to '%s'", self->subscribe);
        goto failed;
    }
    zsock_set_subscribe (self->sub, METRICS_TOPIC);

    struct sockaddr_in address;
    memset (&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons ((uint16_t) config->http_port);
    if (config->http_port < 0 || config->http_port > 65535
    ||  inet_pton (AF_INET, self->http_address, &address.sin_addr) != 1) {
        zsys_error ("telemetry: bad HTTP address %s:%d", self->http_address, config->http_port);
        goto failed;
    }
    self->httpd = MHD_start_daemon (
        MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        (uint16_t) config->http_port, NULL, NULL, s_http_handler, self,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &address,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 10,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 256,
        MHD_OPTION_END);
    if (!self->httpd) {
        zsys_error ("telemetry: cannot serve HTTP on %s:%d", self->http_address, config->http_port);
        goto failed;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info (self->httpd, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info? info->port: config->http_port;
    zsys_info ("telemetry: subscribed to %s; HTTP on http://%s:%d/",
               self->subscribe, self->http_address, self->port);
    return self;

failed:
    s_destroy (&self);
    return NULL;
}

void
telemetry_actor (zsock_t *pipe, void *args)
{
    s_telemetry_t *self = s_new (pipe, (const telemetry_config_t *) args);
    zsock_signal (pipe, self? 0: 1);
    if (!self) {
        //  Answer commands until $TERM so the owner can ask and stop us.
        while (true) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            if (command && streq (command, "PORT"))
                zstr_send (pipe, "0");
            zstr_free (&command);
            if (term)
                return;
        }
    }
    int64_t tick_at = zclock_mono () + self->config.tick_ms;
    bool terminated = false;
    while (!terminated) {
        zmq_pollitem_t items [2] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->sub), 0, ZMQ_POLLIN, 0 }
        };
        int64_t wait = tick_at - zclock_mono ();
        if (zmq_poll (items, 2, wait < 0? 0: (long) wait) == -1) {
            if (errno == EINTR && !zsys_interrupted)
                continue;
            break;
        }
        if (items [0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (pipe);
            if (!command || streq (command, "$TERM"))
                terminated = true;
            else
            if (streq (command, "PORT"))
                zstr_sendf (pipe, "%d", self->port);
            else
                zsys_warning ("telemetry: unknown pipe command '%s'", command);
            zstr_free (&command);
        }
        if (items [1].revents & ZMQ_POLLIN) {
            //  A bounded batch, so the tick still runs under load.
            for (int i = 0; i < 10000 && (zsock_events (self->sub) & ZMQ_POLLIN); i++)
                s_receive (self);
        }
        if (zclock_mono () >= tick_at) {
            pthread_mutex_lock (&self->lock);
            metrics_store_tick (self->store, zclock_time (), self->config.down_after_ms);
            pthread_mutex_unlock (&self->lock);
            tick_at += self->config.tick_ms;
            if (tick_at < zclock_mono ())
                tick_at = zclock_mono () + self->config.tick_ms;
        }
    }
    s_destroy (&self);
}

zactor_t *
telemetry_new (const telemetry_config_t *config)
{
    assert (config);
    zactor_t *actor = zactor_new (telemetry_actor, (void *) config);
    //  zactor_new already waited for the signal; a failed start answers "0".
    if (actor && telemetry_port (actor) <= 0)
        zactor_destroy (&actor);
    return actor;
}

int
telemetry_port (zactor_t *telemetry)
{
    assert (telemetry);
    if (zstr_send (telemetry, "PORT"))
        return -1;
    char *text = zstr_recv (telemetry);
    int port = text? atoi (text): -1;
    zstr_free (&text);
    return port;
}
