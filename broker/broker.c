/*  broker.c: MDP/0.2 broker actor with session-affine routing and capacity.

    Every process in a splitmesh site talks through this broker, so it must
    never stop serving: every frame from the wire is checked before use,
    and a bad peer costs one log line (and, for a client, an error reply).

    The broker's life is driven by events. Each message from the ROUTER is
    classified into an event (s_event_t, names in s_event_names for logs)
    and handled by one small action; timers add the EXPIRE and HEARTBEAT
    events. A worker is in one of the states of s_worker_state_t.

    Data: services by name; per service a queue of requests and an LRU list
    of workers with a free slot; workers by hex identity, each with the list
    of requests it holds (kept so they can be re-queued if it dies);
    session bindings "service<US>session" -> worker id, with a FIFO for
    eviction.
*/
#include <msgpack.h>
#include "mdp_common.h"
#include "mdp_session.h"
#include "metrics.h"
#include "broker.h"
#include "codec.h"

//  Events, one per kind of message or timer, for the log.
typedef enum {
    EV_CLIENT_REQUEST,          //  valid client REQUEST
    EV_CLIENT_MMI,              //  request for mmi.*
    EV_CLIENT_MALFORMED,        //  MDPC02 header but broken frames
    EV_WORKER_READY,
    EV_WORKER_PARTIAL,
    EV_WORKER_FINAL,
    EV_WORKER_HEARTBEAT,
    EV_WORKER_DISCONNECT,
    EV_WORKER_MALFORMED,        //  MDPW02 header but broken or unexpected
    EV_GARBAGE,                 //  no MDP header at all
    EV_WORKER_EXPIRED,          //  timer: worker silent too long
    EV_REQUEST_EXPIRED          //  timer: request queued too long
} s_event_t;

static const char *s_event_names [] = {
    "CLIENT_REQUEST", "CLIENT_MMI", "CLIENT_MALFORMED",
    "WORKER_READY", "WORKER_PARTIAL", "WORKER_FINAL", "WORKER_HEARTBEAT",
    "WORKER_DISCONNECT", "WORKER_MALFORMED", "GARBAGE",
    "WORKER_EXPIRED", "REQUEST_EXPIRED"
};

//  Worker states: a worker record exists from its READY on.
typedef enum {
    WS_AVAILABLE,               //  has a free slot, sits in service->waiting
    WS_FULL                     //  all slots in use
} s_worker_state_t;

static const char *s_worker_state_names [] = { "AVAILABLE", "FULL" };

typedef struct _service_t service_t;

typedef struct {
    zframe_t *client;           //  client identity
    service_t *service;         //  where it is queued / served
    zmsg_t *body;               //  body frames, kept for re-queueing
    char session [MDP_SESSION_MAX + 1];  //  "" if none
    int64_t expiry;             //  when a queued request expires
    bool streamed;              //  a PARTIAL went to the client
    bool cancelled;             //  the client is gone; PARTIALs are dropped
} request_t;

typedef struct {
    char *id;                   //  hex identity; key in broker->workers
    zframe_t *identity;         //  ROUTER identity frame
    service_t *service;         //  its service
    int capacity;               //  slots (READY capacity frame, default 1)
    bool cancel;                //  understands CANCEL (READY frame says so)
    zlistx_t *inflight;         //  request_t * it holds, oldest first
    void *waiting_handle;       //  handle in service->waiting or NULL
    s_worker_state_t state;
    int64_t expiry;             //  dead if silent until then
} worker_t;

struct _service_t {
    char *name;                 //  service name
    zlistx_t *requests;         //  request_t * queued, oldest first
    zlistx_t *waiting;          //  worker_t * with a free slot, LRU first
    size_t workers;             //  workers registered for it
};

typedef struct {
    char *worker_id;            //  bound worker
    void *fifo_handle;          //  handle in broker->session_fifo
} session_t;

typedef struct {
    zsock_t *pipe;              //  actor pipe
    zsock_t *router;            //  the MDP socket
    zactor_t *telemetry;        //  XSUB/XPUB proxy or NULL
    broker_config_t config;     //  copied config, defaults filled in
    char *endpoints;            //  copy of config.endpoints
    char *bound;                //  last bound endpoint, "" on failure
    zhashx_t *services;         //  name -> service_t *
    zhashx_t *workers;          //  hex id -> worker_t *
    zhashx_t *sessions;         //  "service\x1fsession" -> session_t *
    zlistx_t *session_fifo;     //  session keys, oldest first
    size_t queued;              //  requests queued over all services
    int64_t heartbeat_at;       //  next heartbeat round
    broker_stats_t stats;       //  counters
    metrics_t *metrics;         //  telemetry publisher, NULL without telemetry
    int64_t metrics_at;         //  next gauge round
    bool terminated;
} broker_t;

//  ---------------------------------------------------------------------
//  Metrics published on the telemetry bus (core/metrics.h; the list is in
//  docs/metrics.md). Kept to two call sites: s_send_client (every FINAL to
//  a client) and s_broker_tick (gauges once a second).

//  Counts a FINAL to a client: splitmesh_broker_requests_total{mdp_service,
//  status}; the status is the body's `status` key (wire_peek), 200 when the
//  body is a map without one, "unknown" when it is not a MessagePack map.
static void
s_metrics_final (broker_t *self, const char *service, zmsg_t *body)
{
    //  mmi.* queries are the broker answering about itself, not requests.
    if (!metrics_enabled (self->metrics) || strncmp (service, "mmi.", 4) == 0)
        return;
    zframe_t *frame = zmsg_first (body);
    wire_peek_t peek;
    wire_err_t err;
    char status [16] = "unknown";
    if (frame && wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err) == 0)
        snprintf (status, sizeof status, "%d", peek.status? peek.status: 200);
    char labels [320];
    snprintf (labels, sizeof labels, "mdp_service=%s,status=%s", service, status);
    metrics_count (self->metrics, "broker_requests_total", labels, 1);
}

//  Gauges per service: splitmesh_broker_workers, splitmesh_broker_queue_depth.
static void
s_metrics_gauges (broker_t *self)
{
    char labels [300];
    for (service_t *service = (service_t *) zhashx_first (self->services);
         service; service = (service_t *) zhashx_next (self->services)) {
        snprintf (labels, sizeof labels, "mdp_service=%s", service->name);
        metrics_gauge (self->metrics, "broker_workers", labels, (double) service->workers);
        metrics_gauge (self->metrics, "broker_queue_depth", labels,
                       (double) zlistx_size (service->requests));
    }
}

//  ---------------------------------------------------------------------
//  Sending

//  Sends [identity][msg...] on the ROUTER; takes msg. The identity goes
//  first and alone: with ZMQ_ROUTER_MANDATORY that is where a gone peer
//  (EHOSTUNREACH) or a full one (EAGAIN) is refused, so a refused message
//  is dropped whole here (zmsg_send would leak the frame it popped).
//  Returns 0, or -1 with errno.
static int
s_router_send (broker_t *self, zframe_t *identity, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    *msg_p = NULL;
    if (zmq_send (zsock_resolve (self->router), zframe_data (identity), zframe_size (identity),
                  ZMQ_SNDMORE) == -1) {
        int error = errno;
        zmsg_destroy (&msg);
        errno = error;
        return -1;
    }
    return zmsg_send (&msg, self->router);
}

//  Sends [client][MDPC02][command][service][body...]; takes the body.
//  Returns 0, or -1 when ZeroMQ refused it (errno EHOSTUNREACH: the client
//  is gone; the message is dropped either way).
static int
s_send_client (broker_t *self, zframe_t *client, int command,
               const char *service, zmsg_t **body_p)
{
    zmsg_t *msg = body_p && *body_p? *body_p: zmsg_new ();
    if (body_p)
        *body_p = NULL;
    if (zmsg_size (msg) == 0)
        zmsg_pushmem (msg, "", 0);
    if (command == MDPC_FINAL)
        s_metrics_final (self, service, msg);
    uint8_t cmd = (uint8_t) command;
    zmsg_pushstr (msg, service);
    zmsg_pushmem (msg, &cmd, 1);
    zmsg_pushstr (msg, MDPC_CLIENT);
    return s_router_send (self, client, &msg);
}

//  Answers a client with an error FINAL and logs it.
static void
s_send_error_v (broker_t *self, zframe_t *client, const char *service,
                int status, int retry_after_ms, const char *fmt, va_list args)
{
    char error [512];
    vsnprintf (error, sizeof error, fmt, args);
    //  Under a flood every refused request would log a line: log the first
    //  of each 1000 busy answers only (stats.errors counts all of them).
    if (status != 429 || self->stats.errors % 1000 == 0)
        zsys_info ("broker: error %d to client: %s", status, error);
    zmsg_t *body = zmsg_new ();
    zframe_t *frame = wire_error_frame (status, error, retry_after_ms);
    zmsg_append (body, &frame);
    s_send_client (self, client, MDPC_FINAL, service, &body);
    self->stats.errors++;
}

static void
s_send_error (broker_t *self, zframe_t *client, const char *service,
              int status, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    s_send_error_v (self, client, service, status, -1, fmt, args);
    va_end (args);
}

//  The overload answer: 429 "busy" with a retry_after_ms hint (the schema's
//  `busy` status), the same one every service gives when it is full.
static void
s_send_busy (broker_t *self, zframe_t *client, const char *service,
             const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    s_send_error_v (self, client, service, 429, BROKER_RETRY_AFTER_MS, fmt, args);
    va_end (args);
}

//  Sends [worker][MDPW02][command]([client][""][body...]); takes the body.
static void
s_send_worker (broker_t *self, worker_t *worker, int command,
               zframe_t *client, zmsg_t **body_p)
{
    zmsg_t *msg = body_p && *body_p? *body_p: zmsg_new ();
    if (body_p)
        *body_p = NULL;
    mdpw_push_header (msg, command, client);
    if (self->config.verbose)
        zsys_debug ("broker: send %s to worker %s", mdpw_command_name (command), worker->id);
    s_router_send (self, worker->identity, &msg);
}

//  DISCONNECT to a peer we have no record of (or are about to forget).
static void
s_send_disconnect (broker_t *self, zframe_t *identity)
{
    zmsg_t *msg = zmsg_new ();
    uint8_t cmd = MDPW_DISCONNECT;
    zmsg_pushmem (msg, &cmd, 1);
    zmsg_pushstr (msg, MDPW_WORKER);
    s_router_send (self, identity, &msg);
}

//  ---------------------------------------------------------------------
//  Requests, services, sessions

static void
s_request_destroy (request_t **self_p)
{
    if (*self_p) {
        request_t *self = *self_p;
        zframe_destroy (&self->client);
        zmsg_destroy (&self->body);
        free (self);
        *self_p = NULL;
    }
}

static void
s_service_destroy (void **item)
{
    service_t *self = (service_t *) *item;
    if (self) {
        request_t *request = (request_t *) zlistx_first (self->requests);
        while (request) {
            s_request_destroy (&request);
            request = (request_t *) zlistx_next (self->requests);
        }
        zlistx_destroy (&self->requests);
        zlistx_destroy (&self->waiting);
        zstr_free (&self->name);
        free (self);
        *item = NULL;
    }
}

static service_t *
s_service_require (broker_t *self, const char *name)
{
    service_t *service = (service_t *) zhashx_lookup (self->services, name);
    if (!service) {
        service = (service_t *) zmalloc (sizeof (service_t));
        service->name = strdup (name);
        service->requests = zlistx_new ();
        service->waiting = zlistx_new ();
        zhashx_insert (self->services, name, service);
        if (self->config.verbose)
            zsys_debug ("broker: new service '%s'", name);
    }
    return service;
}

static void
s_session_key (char *key, size_t size, const char *service, const char *session)
{
    snprintf (key, size, "%s\x1f%s", service, session);
}

static void
s_session_delete (broker_t *self, const char *key)
{
    session_t *session = (session_t *) zhashx_lookup (self->sessions, key);
    if (session) {
        zlistx_delete (self->session_fifo, session->fifo_handle);
        zstr_free (&session->worker_id);
        free (session);
        zhashx_delete (self->sessions, key);
    }
}

static void
s_session_bind (broker_t *self, const char *key, worker_t *worker)
{
    s_session_delete (self, key);
    while (zhashx_size (self->sessions) >= (size_t) self->config.max_sessions) {
        char *oldest = (char *) zlistx_first (self->session_fifo);
        char copy [MDP_SERVICE_MAX + MDP_SESSION_MAX + 2];
        snprintf (copy, sizeof copy, "%s", oldest);
        s_session_delete (self, copy);
    }
    session_t *session = (session_t *) zmalloc (sizeof (session_t));
    session->worker_id = strdup (worker->id);
    session->fifo_handle = zlistx_add_end (self->session_fifo, (void *) key);
    zhashx_insert (self->sessions, key, session);
}

//  Forgets every session bound to a worker that is going away.
static void
s_session_unbind_worker (broker_t *self, worker_t *worker)
{
    zlist_t *doomed = zlist_new ();
    zlist_autofree (doomed);
    session_t *session = (session_t *) zhashx_first (self->sessions);
    while (session) {
        if (streq (session->worker_id, worker->id))
            zlist_append (doomed, (void *) zhashx_cursor (self->sessions));
        session = (session_t *) zhashx_next (self->sessions);
    }
    char *key = (char *) zlist_first (doomed);
    while (key) {
        s_session_delete (self, key);
        key = (char *) zlist_next (doomed);
    }
    zlist_destroy (&doomed);
}

//  ---------------------------------------------------------------------
//  Workers

static void
s_worker_set_state (broker_t *self, worker_t *worker, s_worker_state_t state)
{
    if (worker->state != state && self->config.verbose)
        zsys_debug ("broker: worker %s %s -> %s", worker->id,
                    s_worker_state_names [worker->state], s_worker_state_names [state]);
    worker->state = state;
}

//  Gives a request to a worker: moves the worker in the LRU list.
static void
s_worker_assign (broker_t *self, worker_t *worker, request_t *request)
{
    zlistx_add_end (worker->inflight, request);
    zmsg_t *body = zmsg_dup (request->body);
    s_send_worker (self, worker, MDPW_REQUEST, request->client, &body);
    if ((int) zlistx_size (worker->inflight) >= worker->capacity) {
        zlistx_delete (worker->service->waiting, worker->waiting_handle);
        worker->waiting_handle = NULL;
        s_worker_set_state (self, worker, WS_FULL);
    }
    else
        zlistx_move_end (worker->service->waiting, worker->waiting_handle);
}

//  Sends queued requests to workers with free slots, in queue order; a
//  request bound to a busy worker waits without blocking the others.
static void
s_service_dispatch (broker_t *self, service_t *service)
{
    void *handle = zlistx_first (service->requests)? zlistx_cursor (service->requests): NULL;
    while (handle && zlistx_size (service->waiting) > 0) {
        request_t *request = (request_t *) zlistx_handle_item (handle);
        void *next = zlistx_next (service->requests)? zlistx_cursor (service->requests): NULL;
        worker_t *target = NULL;
        char key [MDP_SERVICE_MAX + MDP_SESSION_MAX + 2];
        if (*request->session) {
            s_session_key (key, sizeof key, service->name, request->session);
            session_t *session = (session_t *) zhashx_lookup (self->sessions, key);
            if (session) {
                worker_t *bound = (worker_t *) zhashx_lookup (self->workers, session->worker_id);
                if (bound && bound->waiting_handle)
                    target = bound;
                else
                if (bound) {
                    handle = next;          //  bound worker busy: wait for it
                    continue;
                }
            }
        }
        if (!target) {
            target = (worker_t *) zlistx_first (service->waiting);
            if (*request->session)
                s_session_bind (self, key, target);
        }
        zlistx_delete (service->requests, handle);
        self->queued--;
        s_worker_assign (self, target, request);
        handle = next;
    }
}

//  Forgets a worker. Requests it held go back to the head of the queue,
//  except streamed ones, whose clients get a 503.
static void
s_worker_delete (broker_t *self, worker_t *worker, bool disconnect)
{
    if (disconnect)
        s_send_disconnect (self, worker->identity);
    service_t *service = worker->service;
    s_session_unbind_worker (self, worker);
    if (worker->waiting_handle)
        zlistx_delete (service->waiting, worker->waiting_handle);
    request_t *request = (request_t *) zlistx_last (worker->inflight);
    while (request) {
        if (request->streamed) {
            s_send_error (self, request->client, service->name, 503,
                          "worker for '%s' died while streaming; request not replayed",
                          service->name);
            s_request_destroy (&request);
        }
        else {
            request->expiry = zclock_mono () + self->config.request_expiry_ms;
            zlistx_add_start (service->requests, request);
            self->queued++;
            self->stats.requeued++;
        }
        request = (request_t *) zlistx_prev (worker->inflight);
    }
    zlistx_destroy (&worker->inflight);
    service->workers--;
    zhashx_delete (self->workers, worker->id);
    zframe_destroy (&worker->identity);
    zstr_free (&worker->id);
    free (worker);
    s_service_dispatch (self, service);
}

//  ---------------------------------------------------------------------
//  Client events

//  MMI: answers from the broker itself.
static void
s_client_mmi (broker_t *self, zframe_t *client, const char *service, zmsg_t *body)
{
    char *name = zmsg_popstr (body);
    char answer [32] = "501";
    if (streq (service, "mmi.service") || streq (service, "mmi.workers")) {
        service_t *target = name? (service_t *) zhashx_lookup (self->services, name): NULL;
        size_t workers = target? target->workers: 0;
        if (streq (service, "mmi.service"))
            snprintf (answer, sizeof answer, "%s", workers? "200": "404");
        else
            snprintf (answer, sizeof answer, "%zu", workers);
    }
    zstr_free (&name);
    zmsg_t *reply = zmsg_new ();
    zmsg_addstr (reply, answer);
    s_send_client (self, client, MDPC_FINAL, service, &reply);
}

//  msg holds [MDPC02][command][service][body...] after the identity. A
//  queued request takes the message (no copy of a large body).
static void
s_client_message (broker_t *self, zframe_t *client, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    zframe_t *command = zmsg_pop (msg);
    zframe_t *service_frame = zmsg_pop (msg);
    char service [MDP_SERVICE_MAX + 1] = "";
    s_event_t event = EV_CLIENT_REQUEST;
    const char *problem = NULL;

    if (service_frame && zframe_size (service_frame) <= MDP_SERVICE_MAX) {
        memcpy (service, zframe_data (service_frame), zframe_size (service_frame));
        service [zframe_size (service_frame)] = '\0';
    }
    if (!command || zframe_size (command) != 1)
        problem = "REQUEST command frame missing or not one byte";
    else
    if (zframe_data (command) [0] != MDPC_REQUEST)
        problem = "clients may only send REQUEST (0x01)";
    else
    if (!service_frame || zframe_size (service_frame) == 0)
        problem = "service name frame missing or empty";
    else
    if (zframe_size (service_frame) > MDP_SERVICE_MAX)
        problem = "service name longer than 255 bytes";
    else
    if (strlen (service) != zframe_size (service_frame))
        problem = "service name contains a NUL byte";
    else
    if (zmsg_size (msg) == 0)
        problem = "REQUEST has no body frame";
    if (problem)
        event = EV_CLIENT_MALFORMED;
    else
    if (strncmp (service, "mmi.", 4) == 0)
        event = EV_CLIENT_MMI;
    if (self->config.verbose)
        zsys_debug ("broker: %s for '%s'", s_event_names [event], service);

    if (event == EV_CLIENT_MALFORMED) {
        s_send_error (self, client, service, 400, "malformed MDP request: %s", problem);
        goto cleanup;
    }
    if (event == EV_CLIENT_MMI) {
        s_client_mmi (self, client, service, msg);
        goto cleanup;
    }

    //  Peek the body for a session; a broken body map gets its 400 here.
    request_t *request = (request_t *) zmalloc (sizeof (request_t));
    zframe_t *first = zmsg_first (msg);
    char reason [160];
    if (mdp_body_peek (zframe_data (first), zframe_size (first),
                       request->session, reason, sizeof reason) == MDP_BODY_MALFORMED) {
        free (request);
        s_send_error (self, client, service, 400, "malformed request body: %s", reason);
        goto cleanup;
    }
    service_t *target = s_service_require (self, service);
    if (zlistx_size (target->requests) >= (size_t) self->config.max_queue_service
    ||  self->queued >= (size_t) self->config.max_queue_total) {
        free (request);
        s_send_busy (self, client, service,
                     "busy: queue for service '%s' is full (%zu waiting); retry later",
                      service, zlistx_size (target->requests));
        goto cleanup;
    }
    request->client = zframe_dup (client);
    request->service = target;
    request->body = msg;
    *msg_p = NULL;
    request->expiry = zclock_mono () + self->config.request_expiry_ms;
    zlistx_add_end (target->requests, request);
    self->queued++;
    self->stats.requests++;
    s_service_dispatch (self, target);
cleanup:
    zframe_destroy (&command);
    zframe_destroy (&service_frame);
}

//  ---------------------------------------------------------------------
//  Worker events

static void
s_worker_ready (broker_t *self, zframe_t *identity, const char *id, zmsg_t *msg)
{
    char *service = zmsg_popstr (msg);
    zframe_t *capacity_frame = zmsg_pop (msg);
    int capacity = 1;
    bool cancel = false;
    char reason [160] = "";
    if (!service || !*service || strlen (service) > MDP_SERVICE_MAX
    ||  strncmp (service, "mmi.", 4) == 0)
        snprintf (reason, sizeof reason, "READY with a missing, too long or reserved service name");
    else
    if (zmsg_size (msg) > 0)
        snprintf (reason, sizeof reason, "READY with more than one extra frame");
    else
    if (capacity_frame)             //  fills in reason when it fails
        mdp_ready_parse (zframe_data (capacity_frame), zframe_size (capacity_frame),
                         &capacity, &cancel, reason, sizeof reason);
    if (*reason) {
        zsys_warning ("broker: worker %s: %s; sending DISCONNECT", id, reason);
        s_send_disconnect (self, identity);
        self->stats.dropped++;
        goto cleanup;
    }
    worker_t *worker = (worker_t *) zmalloc (sizeof (worker_t));
    worker->id = strdup (id);
    worker->identity = zframe_dup (identity);
    worker->service = s_service_require (self, service);
    worker->capacity = capacity;
    worker->cancel = cancel;
    worker->inflight = zlistx_new ();
    worker->expiry = zclock_mono ()
                   + (int64_t) self->config.heartbeat_ms * self->config.liveness;
    worker->state = WS_AVAILABLE;
    worker->waiting_handle = zlistx_add_end (worker->service->waiting, worker);
    worker->service->workers++;
    zhashx_insert (self->workers, worker->id, worker);
    zsys_info ("broker: worker %s ready for '%s' (capacity %d)", id, service, capacity);
    s_service_dispatch (self, worker->service);
cleanup:
    zstr_free (&service);
    zframe_destroy (&capacity_frame);
}

//  The client of request (held by worker) has gone away: stop relaying
//  its PARTIALs and, if the worker understands it, send it CANCEL.
static void
s_request_cancel (broker_t *self, worker_t *worker, request_t *request)
{
    request->cancelled = true;
    self->stats.cancelled++;
    char labels [300];
    snprintf (labels, sizeof labels, "mdp_service=%s", worker->service->name);
    metrics_count (self->metrics, "broker_cancels_total", labels, 1);
    if (self->config.verbose || self->stats.cancelled % 100 == 1)
        zsys_info ("broker: a client of '%s' went away; %s worker %s",
                   worker->service->name, worker->cancel? "cancelling on": "cannot cancel on", worker->id);
    if (worker->cancel) {
        zframe_t *client = zframe_dup (request->client);
        s_send_worker (self, worker, MDPW_CANCEL, client, NULL);
        zframe_destroy (&client);
    }
}

//  PARTIAL or FINAL: msg holds [client][""][body...]; the body is passed
//  on to the client without a copy.
static void
s_worker_reply (broker_t *self, worker_t *worker, int command, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    zframe_t *client = zmsg_pop (msg);
    zframe_t *empty = zmsg_pop (msg);
    if (!client || !empty || zframe_size (empty) != 0) {
        zsys_warning ("broker: worker %s: %s without client envelope; dropped",
                      worker->id, mdpw_command_name (command));
        self->stats.dropped++;
        goto cleanup;
    }
    //  The oldest request this worker holds for that client.
    request_t *request = (request_t *) zlistx_first (worker->inflight);
    while (request && !zframe_eq (request->client, client))
        request = (request_t *) zlistx_next (worker->inflight);
    if (!request) {
        zsys_warning ("broker: worker %s: %s for a request it does not hold; dropped",
                      worker->id, mdpw_command_name (command));
        self->stats.dropped++;
        goto cleanup;
    }
    zmsg_t *body = msg;
    *msg_p = NULL;
    if (command == MDPW_PARTIAL) {
        if (request->cancelled) {
            zmsg_destroy (&body);
            goto cleanup;
        }
        request->streamed = true;
        if (s_send_client (self, client, MDPC_PARTIAL, worker->service->name, &body)
        &&  errno == EHOSTUNREACH)
            s_request_cancel (self, worker, request);
        goto cleanup;
    }
    s_send_client (self, client, MDPC_FINAL, worker->service->name, &body);
    self->stats.replies++;
    zlistx_delete (worker->inflight, zlistx_cursor (worker->inflight));
    s_request_destroy (&request);
    if (!worker->waiting_handle) {
        worker->waiting_handle = zlistx_add_end (worker->service->waiting, worker);
        s_worker_set_state (self, worker, WS_AVAILABLE);
    }
    s_service_dispatch (self, worker->service);
cleanup:
    zframe_destroy (&client);
    zframe_destroy (&empty);
}

//  msg holds [MDPW02][command][...] after the identity.
static void
s_worker_message (broker_t *self, zframe_t *identity, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    char *id = zframe_strhex (identity);
    worker_t *worker = (worker_t *) zhashx_lookup (self->workers, id);
    zframe_t *command = zmsg_pop (msg);
    int cmd = command && zframe_size (command) == 1? zframe_data (command) [0]: 0;
    s_event_t event = cmd == MDPW_READY? EV_WORKER_READY
                    : cmd == MDPW_PARTIAL? EV_WORKER_PARTIAL
                    : cmd == MDPW_FINAL? EV_WORKER_FINAL
                    : cmd == MDPW_HEARTBEAT? EV_WORKER_HEARTBEAT
                    : cmd == MDPW_DISCONNECT? EV_WORKER_DISCONNECT
                    : EV_WORKER_MALFORMED;
    if (self->config.verbose)
        zsys_debug ("broker: %s from worker %s (%s)", s_event_names [event], id,
                    worker? s_worker_state_names [worker->state]: "UNKNOWN");
    if (worker)
        worker->expiry = zclock_mono ()
                       + (int64_t) self->config.heartbeat_ms * self->config.liveness;

    switch (event) {
        case EV_WORKER_READY:
            if (worker) {               //  RFC 18: no second READY
                zsys_warning ("broker: worker %s sent a second READY; disconnecting", id);
                self->stats.dropped++;
                s_worker_delete (self, worker, true);
            }
            else
                s_worker_ready (self, identity, id, msg);
            break;
        case EV_WORKER_PARTIAL:
        case EV_WORKER_FINAL:
        case EV_WORKER_HEARTBEAT:
            if (!worker) {
                //  Valid but unexpected (e.g. we restarted): tell it to
                //  reconnect and register again.
                if (self->config.verbose || event != EV_WORKER_HEARTBEAT)
                    zsys_info ("broker: %s from unknown worker %s; sending DISCONNECT",
                               s_event_names [event], id);
                s_send_disconnect (self, identity);
                if (event != EV_WORKER_HEARTBEAT)
                    self->stats.dropped++;
            }
            else
            if (event != EV_WORKER_HEARTBEAT)
                s_worker_reply (self, worker, cmd, msg_p);
            break;
        case EV_WORKER_DISCONNECT:
            if (worker) {
                zsys_info ("broker: worker %s for '%s' disconnected", id, worker->service->name);
                s_worker_delete (self, worker, false);
            }
            break;
        default:
            zsys_warning ("broker: invalid worker command from %s (%s); dropped",
                          id, command? "unknown command byte": "no command frame");
            self->stats.dropped++;
            if (worker)                 //  RFC 18: treat the peer as invalid
                s_worker_delete (self, worker, true);
            break;
    }
    zframe_destroy (&command);
    zstr_free (&id);
}

//  One message from the ROUTER: classify by header.
static void
s_router_message (broker_t *self)
{
    zmsg_t *msg = zmsg_recv (self->router);
    if (!msg)
        return;
    zframe_t *identity = zmsg_pop (msg);
    zframe_t *header = zmsg_pop (msg);
    if (identity && header && zframe_streq (header, MDPC_CLIENT))
        s_client_message (self, identity, &msg);
    else
    if (identity && header && zframe_streq (header, MDPW_WORKER))
        s_worker_message (self, identity, &msg);
    else {
        //  Say why, for the two mistakes real clients make.
        const char *hint = "";
        if (header && zframe_size (header) == 0)
            hint = " (empty delimiter: a REQ socket? MDP/0.2 clients use DEALER without it)";
        else
        if (header && (zframe_streq (header, "MDPC01") || zframe_streq (header, "MDPW01")))
            hint = " (MDP/0.1 is not supported; speak MDPC02/MDPW02)";
        char *id = identity? zframe_strhex (identity): NULL;
        zsys_warning ("broker: %s from %s: no MDPC02/MDPW02 header (%zu frames)%s; dropped",
                      s_event_names [EV_GARBAGE], id? id: "?", zmsg_size (msg) + (header? 1: 0),
                      hint);
        zstr_free (&id);
        self->stats.dropped++;
    }
    zframe_destroy (&identity);
    zframe_destroy (&header);
    zmsg_destroy (&msg);
}

//  ---------------------------------------------------------------------
//  Timers

static void
s_broker_tick (broker_t *self)
{
    int64_t now = zclock_mono ();
    //  Expired workers (collect first: deleting edits the hash).
    zlist_t *dead = zlist_new ();
    worker_t *worker = (worker_t *) zhashx_first (self->workers);
    while (worker) {
        if (worker->expiry < now)
            zlist_append (dead, worker);
        worker = (worker_t *) zhashx_next (self->workers);
    }
    worker = (worker_t *) zlist_first (dead);
    while (worker) {
        zsys_info ("broker: %s: worker %s for '%s' silent for %d ms; forgetting it",
                   s_event_names [EV_WORKER_EXPIRED], worker->id, worker->service->name,
                   self->config.heartbeat_ms * self->config.liveness);
        self->stats.workers_lost++;
        s_worker_delete (self, worker, false);
        worker = (worker_t *) zlist_next (dead);
    }
    zlist_destroy (&dead);

    //  Expired requests.
    service_t *service = (service_t *) zhashx_first (self->services);
    while (service) {
        void *handle = zlistx_first (service->requests)? zlistx_cursor (service->requests): NULL;
        while (handle) {
            request_t *request = (request_t *) zlistx_handle_item (handle);
            void *next = zlistx_next (service->requests)? zlistx_cursor (service->requests): NULL;
            if (request->expiry <= now) {
                s_send_error (self, request->client, service->name, 504,
                              "service '%s' has no %sworker; request expired after %d ms",
                              service->name, service->workers? "free ": "",
                              self->config.request_expiry_ms);
                self->stats.expired++;
                zlistx_delete (service->requests, handle);
                self->queued--;
                s_request_destroy (&request);
            }
            handle = next;
        }
        service = (service_t *) zhashx_next (self->services);
    }

    //  Services with no worker and nothing queued: forget them, so that
    //  clients asking for random names cannot grow the table forever.
    zlist_t *idle = zlist_new ();
    zlist_autofree (idle);
    service = (service_t *) zhashx_first (self->services);
    while (service) {
        if (service->workers == 0 && zlistx_size (service->requests) == 0)
            zlist_append (idle, service->name);
        service = (service_t *) zhashx_next (self->services);
    }
    for (char *name = (char *) zlist_first (idle); name; name = (char *) zlist_next (idle))
        zhashx_delete (self->services, name);
    zlist_destroy (&idle);

    //  Heartbeats.
    if (now >= self->heartbeat_at) {
        worker = (worker_t *) zhashx_first (self->workers);
        while (worker) {
            s_send_worker (self, worker, MDPW_HEARTBEAT, NULL, NULL);
            worker = (worker_t *) zhashx_next (self->workers);
        }
        self->heartbeat_at = now + self->config.heartbeat_ms;
    }
    if (self->metrics && now >= self->metrics_at) {
        s_metrics_gauges (self);
        self->metrics_at = now + 1000;
    }
}

//  ---------------------------------------------------------------------
//  Telemetry proxy: XSUB (publishers connect) <-> XPUB (subscribers).

static void
s_telemetry_actor (zsock_t *pipe, void *args)
{
    char **endpoints = (char **) args;
    zsock_t *xsub = zsock_new (ZMQ_XSUB);
    zsock_t *xpub = zsock_new (ZMQ_XPUB);
    //  Metric events come in bursts (every publisher flushes every 250 ms;
    //  one event per histogram observation): the default HWM of 1000
    //  dropped events in bench/metrics, so queue up to 100000 per peer.
    if (xsub && xpub) {
        zsock_set_rcvhwm (xsub, 100000);
        zsock_set_sndhwm (xpub, 100000);
    }
    bool ok = xsub && xpub
           && zsock_bind (xsub, "%s", endpoints [0]) >= 0
           && zsock_bind (xpub, "%s", endpoints [1]) >= 0;
    if (!ok)
        zsys_error ("broker: telemetry proxy cannot bind %s / %s", endpoints [0], endpoints [1]);
    zsock_signal (pipe, ok? 0: 1);
    while (ok) {
        zmq_pollitem_t items [3] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (xsub), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (xpub), 0, ZMQ_POLLIN, 0 }
        };
        if (zmq_poll (items, 3, -1) == -1)
            break;
        if (items [0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term)
                break;
        }
        if (items [1].revents & ZMQ_POLLIN) {
            zmsg_t *msg = zmsg_recv (xsub);
            if (msg)
                zmsg_send (&msg, xpub);
        }
        if (items [2].revents & ZMQ_POLLIN) {
            zmsg_t *msg = zmsg_recv (xpub);     //  subscriptions upstream
            if (msg)
                zmsg_send (&msg, xsub);
        }
    }
    if (!ok) {                      //  wait for $TERM
        char *command = zstr_recv (pipe);
        zstr_free (&command);
    }
    zsock_destroy (&xsub);
    zsock_destroy (&xpub);
}

//  ---------------------------------------------------------------------
//  Actor

static void
s_worker_free (void **item)
{
    //  Workers are freed by s_worker_delete; on shutdown by s_broker_destroy.
    (void) item;
}

static broker_t *
s_broker_new (zsock_t *pipe, const broker_config_t *config)
{
    broker_t *self = (broker_t *) zmalloc (sizeof (broker_t));
    self->pipe = pipe;
    self->config = *config;
    broker_config_t *c = &self->config;
    if (c->heartbeat_ms <= 0)       c->heartbeat_ms = MDP_HEARTBEAT_DEFAULT;
    if (c->liveness <= 0)           c->liveness = MDP_LIVENESS_DEFAULT;
    if (c->request_expiry_ms <= 0)  c->request_expiry_ms = 5000;
    if (c->max_queue_service <= 0)  c->max_queue_service = 1000;
    if (c->max_queue_total <= 0)    c->max_queue_total = 10000;
    if (c->max_sessions <= 0)       c->max_sessions = 65536;
    if (c->max_msg_bytes <= 0)      c->max_msg_bytes = 512LL << 20;
    self->endpoints = strdup (config->endpoints? config->endpoints: "");
    c->endpoints = self->endpoints;
    c->telemetry_xsub = c->telemetry_xpub = NULL;   //  not kept past start
    self->services = zhashx_new ();
    zhashx_set_destructor (self->services, s_service_destroy);
    self->workers = zhashx_new ();
    zhashx_set_destructor (self->workers, s_worker_free);
    self->sessions = zhashx_new ();
    self->session_fifo = zlistx_new ();
    zlistx_set_duplicator (self->session_fifo, (zlistx_duplicator_fn *) strdup);
    zlistx_set_destructor (self->session_fifo, (zlistx_destructor_fn *) zstr_free);

    self->router = zsock_new (ZMQ_ROUTER);
    assert (self->router);
    zsock_set_maxmsgsize (self->router, c->max_msg_bytes);
    zsock_set_sndhwm (self->router, 100000);
    //  Sends to a peer that is gone fail (EHOSTUNREACH) instead of
    //  vanishing, which is how a departed streaming client is noticed
    //  (cancel extension, broker.h). Never block on a full peer: drop,
    //  as a ROUTER without this option does.
    zsock_set_router_mandatory (self->router, 1);
    zsock_set_sndtimeo (self->router, 0);
    zsock_set_rcvhwm (self->router, 100000);
    self->bound = strdup ("");
    char *list = strdup (self->endpoints);
    char *save = NULL;
    bool ok = *list != '\0';
    for (char *ep = strtok_r (list, ",", &save); ep && ok; ep = strtok_r (NULL, ",", &save)) {
        if (zsock_bind (self->router, "%s", ep) < 0) {
            zsys_error ("broker: cannot bind %s: %s", ep, zmq_strerror (zmq_errno ()));
            ok = false;
        }
        else {
            zstr_free (&self->bound);
            self->bound = zsock_last_endpoint (self->router);
            zsys_info ("broker: MDP/0.2 on %s", self->bound);
        }
    }
    free (list);
    if (!ok) {
        zstr_free (&self->bound);
        self->bound = strdup ("");
        zsock_destroy (&self->router);
    }
    if (ok && config->telemetry_xsub && config->telemetry_xpub) {
        char *endpoints [2] = { (char *) config->telemetry_xsub, (char *) config->telemetry_xpub };
        self->telemetry = zactor_new (s_telemetry_actor, endpoints);
        zsys_info ("broker: telemetry proxy %s -> %s", endpoints [0], endpoints [1]);
        self->metrics = metrics_new ("broker", NULL, config->telemetry_xsub);
    }
    self->heartbeat_at = zclock_mono () + c->heartbeat_ms;
    return self;
}

static void
s_broker_destroy (broker_t **self_p)
{
    broker_t *self = *self_p;
    if (!self)
        return;
    //  Tell workers we are going so they reconnect at once.
    worker_t *worker = (worker_t *) zhashx_first (self->workers);
    while (worker) {
        if (self->router)
            s_send_disconnect (self, worker->identity);
        request_t *request = (request_t *) zlistx_first (worker->inflight);
        while (request) {
            s_request_destroy (&request);
            request = (request_t *) zlistx_next (worker->inflight);
        }
        zlistx_destroy (&worker->inflight);
        zframe_destroy (&worker->identity);
        zstr_free (&worker->id);
        free (worker);
        worker = (worker_t *) zhashx_next (self->workers);
    }
    zhashx_destroy (&self->workers);
    zhashx_destroy (&self->services);
    session_t *session = (session_t *) zhashx_first (self->sessions);
    while (session) {
        zstr_free (&session->worker_id);
        free (session);
        session = (session_t *) zhashx_next (self->sessions);
    }
    zhashx_destroy (&self->sessions);
    zlistx_destroy (&self->session_fifo);
    metrics_destroy (&self->metrics);     //  last flush, while the proxy runs
    zactor_destroy (&self->telemetry);
    zsock_destroy (&self->router);
    zstr_free (&self->bound);
    zstr_free (&self->endpoints);
    free (self);
    *self_p = NULL;
}

static void
s_broker_stats (broker_t *self, broker_stats_t *stats)
{
    *stats = self->stats;
    stats->workers = zhashx_size (self->workers);
    stats->services = zhashx_size (self->services);
    stats->queued = self->queued;
    stats->sessions = zhashx_size (self->sessions);
}

static void
s_pipe_command (broker_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    char *command = msg? zmsg_popstr (msg): NULL;
    if (!command || streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "ENDPOINT"))
        zstr_send (self->pipe, self->bound);
    else
    if (streq (command, "STATS")) {
        broker_stats_t stats;
        s_broker_stats (self, &stats);
        zframe_t *frame = zframe_new (&stats, sizeof stats);
        zframe_send (&frame, self->pipe, 0);
    }
    else
        zsys_warning ("broker: unknown pipe command '%s'", command);
    zstr_free (&command);
    zmsg_destroy (&msg);
}

void
broker_actor (zsock_t *pipe, void *args)
{
    broker_t *self = s_broker_new (pipe, (const broker_config_t *) args);
    zsock_signal (pipe, 0);
    //  Timers run at least every 50 ms, so expiry is that precise.
    int tick = self->config.heartbeat_ms < 50? self->config.heartbeat_ms: 50;
    int64_t tick_at = zclock_mono () + tick;
    while (!self->terminated) {
        zmq_pollitem_t items [2] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
            { self->router? zsock_resolve (self->router): NULL, 0, ZMQ_POLLIN, 0 }
        };
        int64_t wait = tick_at - zclock_mono ();
        if (!self->router)
            wait = -1;          //  bind failed: only wait for $TERM
        else
        if (wait < 0)
            wait = 0;
        if (zmq_poll (items, self->router? 2: 1, (long) wait) == -1) {
            if (errno == EINTR && !zsys_interrupted)
                continue;       //  a signal meant for someone else
            break;              //  interrupted: shut down
        }
        if (items [0].revents & ZMQ_POLLIN)
            s_pipe_command (self);
        if (self->router && (items [1].revents & ZMQ_POLLIN)) {
            //  Drain a bounded batch so timers still run under load.
            for (int i = 0; i < 1000; i++) {
                if (!(zsock_events (self->router) & ZMQ_POLLIN))
                    break;
                s_router_message (self);
            }
        }
        if (self->router && zclock_mono () >= tick_at) {
            s_broker_tick (self);
            tick_at = zclock_mono () + tick;
        }
    }
    s_broker_destroy (&self);
}

int
broker_stats (zactor_t *broker, broker_stats_t *stats)
{
    assert (broker);
    assert (stats);
    if (zstr_send (broker, "STATS"))
        return -1;
    zframe_t *frame = zframe_recv (broker);
    int rc = -1;
    if (frame && zframe_size (frame) == sizeof *stats) {
        memcpy (stats, zframe_data (frame), sizeof *stats);
        rc = 0;
    }
    zframe_destroy (&frame);
    return rc;
}

char *
broker_endpoint (zactor_t *broker)
{
    assert (broker);
    if (zstr_send (broker, "ENDPOINT"))
        return NULL;
    return zstr_recv (broker);
}
