/*  mdp_client.c: MDP/0.2 client over one DEALER socket.

    RFC 18 clients use DEALER and send no empty delimiter: the broker's
    ROUTER prepends our identity, and replies come back as
    ["MDPC02"][PARTIAL|FINAL][service][body...]. The client is synchronous
    per RFC 18 (one request at a time) in mdp_client_request; the send/recv
    pair lets a caller pipeline if it knows its broker allows it (ours does).
*/
#include <stdatomic.h>
#include <unistd.h>
#include "mdp_common.h"
#include "mdp_client.h"

struct _mdp_client_t {
    char *endpoint;             //  broker endpoint
    zsock_t *dealer;            //  current socket to the broker
    int timeout;                //  per attempt in mdp_client_request, msecs
    int retries;                //  attempts after the first
    int backoff_initial;        //  first back-off, msecs
    int backoff_max;            //  back-off ceiling, msecs
    int connects;               //  sockets opened so far
    bool verbose;               //  log commands
    zsock_t *monitor;           //  PAIR receiving the dealer's DISCONNECTED events
    bool lost;                  //  the connection dropped after the last send
    bool keep_for_resend;       //  keep the last request for mdp_client_resend
    char *last_service;         //  the last request's service and body (kept
    zmsg_t *last_body;          //  only with keep_for_resend)
};

//  Stops and closes the dealer's monitor, then the dealer.
static void
s_client_close (mdp_client_t *self)
{
    if (self->dealer && self->monitor)
        zmq_socket_monitor (zsock_resolve (self->dealer), NULL, 0);
    zsock_destroy (&self->monitor);
    zsock_destroy (&self->dealer);
}

//  Watches the dealer for lost connections. Without a monitor the client
//  still works, it just learns of a lost broker by timeout.
static void
s_client_monitor (mdp_client_t *self)
{
    static atomic_int s_next_monitor;
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "inproc://mdp-client-monitor-%d-%d",
              (int) getpid (), atomic_fetch_add (&s_next_monitor, 1));
    if (zmq_socket_monitor (zsock_resolve (self->dealer), endpoint, ZMQ_EVENT_DISCONNECTED))
        return;
    self->monitor = zsock_new (ZMQ_PAIR);
    if (self->monitor && zsock_connect (self->monitor, "%s", endpoint) == 0)
        return;
    zmq_socket_monitor (zsock_resolve (self->dealer), NULL, 0);
    zsock_destroy (&self->monitor);
}

//  Reads the monitor's pending events; true if the connection dropped.
static bool
s_client_drain_monitor (mdp_client_t *self)
{
    bool dropped = false;
    while (self->monitor && zsock_events (self->monitor) & ZMQ_POLLIN) {
        zmsg_t *event = zmsg_recv (self->monitor);
        zframe_t *head = event? zmsg_first (event): NULL;
        if (head && zframe_size (head) >= 2) {
            uint16_t id;
            memcpy (&id, zframe_data (head), 2);
            if (id == ZMQ_EVENT_DISCONNECTED)
                dropped = true;
        }
        zmsg_destroy (&event);
    }
    if (dropped) {
        self->lost = true;
        zsys_info ("mdp_client: lost the connection to the broker at %s: replies in flight are lost",
                   self->endpoint);
    }
    return dropped;
}

static int
s_client_connect (mdp_client_t *self)
{
    s_client_close (self);
    self->lost = false;
    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->dealer)
        return -1;
    zsock_set_linger (self->dealer, 0);
    s_client_monitor (self);
    if (zsock_connect (self->dealer, "%s", self->endpoint)) {
        s_client_close (self);
        return -1;
    }
    self->connects++;
    return 0;
}

mdp_client_t *
mdp_client_new (const char *endpoint)
{
    if (!endpoint || !*endpoint)
        return NULL;
    mdp_client_t *self = (mdp_client_t *) zmalloc (sizeof (mdp_client_t));
    self->endpoint = strdup (endpoint);
    self->timeout = 2500;
    self->retries = 2;
    self->backoff_initial = MDP_RECONNECT_DEFAULT;
    self->backoff_max = MDP_RECONNECT_MAX_DEFAULT;
    if (!self->endpoint || s_client_connect (self))
        mdp_client_destroy (&self);
    return self;
}

void
mdp_client_destroy (mdp_client_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        mdp_client_t *self = *self_p;
        s_client_close (self);
        zstr_free (&self->endpoint);
        zstr_free (&self->last_service);
        zmsg_destroy (&self->last_body);
        free (self);
        *self_p = NULL;
    }
}

void
mdp_client_set_timeout (mdp_client_t *self, int timeout_ms)
{
    assert (self);
    self->timeout = timeout_ms > 0? timeout_ms: 1;
}

void
mdp_client_set_retries (mdp_client_t *self, int retries)
{
    assert (self);
    self->retries = retries >= 0? retries: 0;
}

void
mdp_client_set_backoff (mdp_client_t *self, int initial_ms, int max_ms)
{
    assert (self);
    self->backoff_initial = initial_ms > 0? initial_ms: 1;
    self->backoff_max = max_ms >= self->backoff_initial? max_ms: self->backoff_initial;
}

void
mdp_client_set_verbose (mdp_client_t *self, bool verbose)
{
    assert (self);
    self->verbose = verbose;
}

void
mdp_client_set_keep_for_resend (mdp_client_t *self, bool keep)
{
    assert (self);
    self->keep_for_resend = keep;
    if (!keep) {
        zstr_free (&self->last_service);
        zmsg_destroy (&self->last_body);
    }
}

int
mdp_client_send (mdp_client_t *self, const char *service, zmsg_t **body_p)
{
    assert (self);
    zmsg_t *msg = body_p && *body_p? *body_p: NULL;
    if (body_p)
        *body_p = NULL;
    if (!service || !*service || strlen (service) > MDP_SERVICE_MAX || !self->dealer) {
        zmsg_destroy (&msg);
        return -1;
    }
    if (!msg)
        msg = zmsg_new ();
    if (zmsg_size (msg) == 0)
        zmsg_pushmem (msg, "", 0);
    //  Events from before this request concern earlier ones.
    s_client_drain_monitor (self);
    self->lost = false;
    if (self->keep_for_resend) {
        //  Kept for mdp_client_resend; `service` may be the old copy itself.
        char *last_service = strdup (service);
        zmsg_t *last_body = zmsg_dup (msg);
        zstr_free (&self->last_service);
        zmsg_destroy (&self->last_body);
        self->last_service = last_service;
        self->last_body = last_body;
        service = self->last_service;
        if (!last_service || !last_body) {
            zstr_free (&self->last_service);
            zmsg_destroy (&self->last_body);
            zmsg_destroy (&msg);
            return -1;
        }
    }
    uint8_t cmd = MDPC_REQUEST;
    zmsg_pushstr (msg, service);
    zmsg_pushmem (msg, &cmd, 1);
    zmsg_pushstr (msg, MDPC_CLIENT);
    if (self->verbose)
        zsys_debug ("mdp_client: send REQUEST to '%s'", service);
    return zmsg_send (&msg, self->dealer);
}

int
mdp_client_send_mem (mdp_client_t *self, const char *service, const void *data, size_t size)
{
    assert (self);
    zmsg_t *body = zmsg_new ();
    zmsg_addmem (body, data, size);
    return mdp_client_send (self, service, &body);
}

zmsg_t *
mdp_client_recv (mdp_client_t *self, int timeout_ms, int *command_p, char **service_p)
{
    assert (self);
    assert (command_p);
    if (!self->dealer)
        return NULL;
    //  A reply already queued wins over a drop reported after it.
    if (!(zsock_events (self->dealer) & ZMQ_POLLIN)) {
        if (s_client_drain_monitor (self))
            return NULL;
        zmq_pollitem_t items [] = {
            { zsock_resolve (self->dealer), 0, ZMQ_POLLIN, 0 },
            { self->monitor? zsock_resolve (self->monitor): NULL, 0, ZMQ_POLLIN, 0 }
        };
        int64_t deadline = timeout_ms >= 0? zclock_mono () + timeout_ms: -1;
        while (true) {
            long wait = deadline < 0? -1: (long) (deadline - zclock_mono ());
            if (deadline >= 0 && wait < 0)
                wait = 0;
            if (zmq_poll (items, self->monitor? 2: 1, wait) < 0)
                return NULL;                    //  interrupted
            if (items [0].revents & ZMQ_POLLIN)
                break;
            if ((items [1].revents & ZMQ_POLLIN) && s_client_drain_monitor (self))
                return NULL;
            if (deadline >= 0 && zclock_mono () >= deadline)
                return NULL;
        }
    }
    zmsg_t *msg = zmsg_recv (self->dealer);
    if (!msg)
        return NULL;
    zframe_t *header = zmsg_pop (msg);
    zframe_t *command = zmsg_pop (msg);
    char *service = zmsg_popstr (msg);
    int cmd = command && zframe_size (command) == 1? zframe_data (command) [0]: 0;
    if (!header || !zframe_streq (header, MDPC_CLIENT)
    ||  (cmd != MDPC_PARTIAL && cmd != MDPC_FINAL) || !service) {
        zsys_warning ("mdp_client: dropped a malformed reply from the broker");
        zmsg_destroy (&msg);
        zstr_free (&service);
    }
    else {
        if (self->verbose)
            zsys_debug ("mdp_client: recv %s from '%s'", mdpc_command_name (cmd), service);
        *command_p = cmd;
        if (service_p)
            *service_p = service;
        else
            zstr_free (&service);
    }
    zframe_destroy (&header);
    zframe_destroy (&command);
    return msg;
}

zmsg_t *
mdp_client_request (mdp_client_t *self, const char *service, zmsg_t **body_p)
{
    assert (self);
    zmsg_t *request = body_p && *body_p? *body_p: zmsg_new ();
    if (body_p)
        *body_p = NULL;
    zmsg_t *reply = NULL;
    int backoff = self->backoff_initial;
    for (int attempt = 0; attempt <= self->retries && !reply; attempt++) {
        if (attempt > 0) {
            //  The old socket may hold a late reply: a fresh one cannot.
            zsys_info ("mdp_client: %s '%s', retrying in %d ms (%d/%d)",
                       self->lost? "lost the broker while waiting for": "no reply in time from",
                       service, backoff, attempt, self->retries);
            zclock_sleep (backoff);
            backoff = backoff * 2 > self->backoff_max? self->backoff_max: backoff * 2;
            if (s_client_connect (self))
                break;
        }
        zmsg_t *copy = zmsg_dup (request);
        if (mdp_client_send (self, service, &copy))
            break;
        int64_t deadline = zclock_mono () + self->timeout;
        while (!reply) {
            int64_t left = deadline - zclock_mono ();
            if (left <= 0)
                break;
            int cmd = 0;
            char *from = NULL;
            zmsg_t *msg = mdp_client_recv (self, (int) left, &cmd, &from);
            if (!msg) {
                if (zsys_interrupted || self->lost)
                    break;              //  lost: the reply cannot come, retry now
                continue;
            }
            if (!streq (from, service))
                zmsg_destroy (&msg);            //  stale: another service
            else
            if (cmd == MDPC_PARTIAL) {
                zmsg_destroy (&msg);
                deadline = zclock_mono () + self->timeout;
            }
            else
                reply = msg;
            zstr_free (&from);
        }
        if (zsys_interrupted)
            break;
    }
    zmsg_destroy (&request);
    return reply;
}

bool
mdp_client_lost (mdp_client_t *self)
{
    assert (self);
    if (!self->lost)
        s_client_drain_monitor (self);
    return self->lost;
}

int
mdp_client_resend (mdp_client_t *self)
{
    assert (self);
    if (!self->keep_for_resend) {
        zsys_error ("mdp_client: cannot resend: the client keeps no copy of its requests "
                    "(call mdp_client_set_keep_for_resend before sending)");
        return -1;
    }
    if (!self->last_service || !self->last_body) {
        zsys_error ("mdp_client: cannot resend: no request was sent since "
                    "mdp_client_set_keep_for_resend");
        return -1;
    }
    if (s_client_connect (self))
        return -1;
    zmsg_t *copy = zmsg_dup (self->last_body);
    return copy? mdp_client_send (self, self->last_service, &copy): -1;
}

int
mdp_client_reconnect (mdp_client_t *self)
{
    assert (self);
    return s_client_connect (self);
}

zsock_t *
mdp_client_sock (mdp_client_t *self)
{
    assert (self);
    return self->dealer;
}

int
mdp_client_connects (mdp_client_t *self)
{
    assert (self);
    return self->connects;
}
