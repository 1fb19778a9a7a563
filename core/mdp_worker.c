/*  mdp_worker.c: MDP/0.2 worker with heartbeats and Paranoid Pirate reconnect.

    The public object is a thin wrapper around an actor. The actor owns the
    DEALER socket to the broker and does everything that must happen on
    time whatever the caller is doing: heartbeats, liveness, back-off and
    reconnect. Between the two runs the actor pipe:

    actor -> caller   [client][body...]               a request to serve
    caller -> actor   ["PARTIAL"|"FINAL"][client][body...]
                      ["$TERM"]

    Cancellation (the CANCEL extension of mdp_common.h): the actor puts
    the client frame of a cancelled request into a list the caller reads
    under a mutex (mdp_worker_cancelled), so a long computation can look
    between steps without a round trip; the FINAL takes it out again.

    After a reconnect the requests the caller still works on are orphans:
    the broker that sent them is gone or has handed them elsewhere, and
    their replies are dropped. While the caller holds as many orphans as
    the worker's capacity it cannot take a new request, so the worker waits
    (up to S_ORPHAN_WAIT_MS) for their FINALs before it registers again;
    otherwise the broker would queue a fresh request behind a dead one
    (chaos: a broker restart mid-generation stalled the next generation by
    edge-draft's whole call timeout).
*/
#include <pthread.h>
#include <stdatomic.h>
#include <msgpack.h>
#include "mdp_common.h"
#include "mdp_worker.h"

#define S_ORPHAN_WAIT_MS 30000  //  longest wait for orphans before registering anyway

struct _mdp_worker_t {
    zactor_t *actor;            //  background connection keeper
    atomic_int connects;        //  written by the actor, read by the caller
    pthread_mutex_t lock;       //  guards cancelled
    zlistx_t *cancelled;        //  client frames the broker cancelled
};

//  Actor state: the connection to the broker.
typedef struct {
    zsock_t *pipe;              //  to the caller
    char *endpoint;             //  broker endpoint
    char *service;              //  service we register
    mdp_worker_options_t opt;   //  tuning, defaults filled in
    zsock_t *dealer;            //  to the broker, NULL while backing off
    int64_t broker_expiry;      //  broker dead if silent until then
    int64_t heartbeat_at;       //  next heartbeat to send
    int64_t reconnect_at;       //  when dealer == NULL: next connect attempt
    int backoff;                //  current back-off, msecs
    zlistx_t *outstanding;      //  client frames of requests in progress
    int orphans;                //  requests from before a reconnect, not yet FINAL
    int64_t orphans_since;      //  when the first of them was orphaned
    atomic_int *connects;       //  (re)connections, in the public object
    pthread_mutex_t *lock;      //  the public object's lock ...
    zlistx_t *cancelled;        //  ... and cancelled list
    bool terminated;            //  $TERM received
} s_agent_t;

static void
s_agent_send_to_broker (s_agent_t *self, int command, zframe_t *client, zmsg_t **body_p)
{
    assert (self->dealer);
    zmsg_t *msg = body_p && *body_p? *body_p: zmsg_new ();
    if (body_p)
        *body_p = NULL;
    mdpw_push_header (msg, command, client);
    if (self->opt.verbose)
        zsys_debug ("mdp_worker %s: send %s", self->service, mdpw_command_name (command));
    zmsg_send (&msg, self->dealer);
    self->heartbeat_at = zclock_mono () + self->opt.heartbeat_ms;
}

//  Builds the READY frame {"v":1,"capacity":N,"cancel":true}.
static zframe_t *
s_capacity_frame (int capacity)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 3);
    msgpack_pack_str_with_body (&pk, "v", 1);
    msgpack_pack_int (&pk, 1);
    msgpack_pack_str_with_body (&pk, "capacity", 8);
    msgpack_pack_int (&pk, capacity);
    msgpack_pack_str_with_body (&pk, "cancel", 6);
    msgpack_pack_true (&pk);
    zframe_t *frame = zframe_new (sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy (&sbuf);
    return frame;
}

static void
s_agent_disconnect (s_agent_t *self)
{
    zsock_destroy (&self->dealer);
    if (zlistx_size (self->outstanding) && !self->orphans)
        self->orphans_since = zclock_mono ();
    self->orphans += (int) zlistx_size (self->outstanding);
    //  Nobody can receive an orphan's reply, so tell the caller to stop
    //  working on it (mdp_worker_cancelled): the orphans end sooner and the
    //  worker registers again sooner.
    pthread_mutex_lock (self->lock);
    zframe_t *client = (zframe_t *) zlistx_first (self->outstanding);
    while (client) {
        if (!zlistx_find (self->cancelled, client))
            zlistx_add_end (self->cancelled, client);
        client = (zframe_t *) zlistx_next (self->outstanding);
    }
    pthread_mutex_unlock (self->lock);
    zlistx_purge (self->outstanding);
}

//  True when the caller can take a request, or has waited long enough.
static bool
s_agent_can_register (s_agent_t *self)
{
    if (self->orphans < self->opt.capacity)
        return true;
    if (zclock_mono () - self->orphans_since < S_ORPHAN_WAIT_MS)
        return false;
    zsys_warning ("mdp_worker %s: %d requests from before a reconnect still unanswered after %d ms; "
                  "registering anyway", self->service, self->orphans, S_ORPHAN_WAIT_MS);
    self->orphans = 0;
    return true;
}

static void
s_agent_connect (s_agent_t *self)
{
    s_agent_disconnect (self);
    self->dealer = zsock_new (ZMQ_DEALER);
    assert (self->dealer);
    zsock_set_linger (self->dealer, 0);
    if (zsock_connect (self->dealer, "%s", self->endpoint)) {
        zsys_error ("mdp_worker %s: cannot connect to %s", self->service, self->endpoint);
        zsock_destroy (&self->dealer);
        self->reconnect_at = zclock_mono () + self->backoff;
        return;
    }
    zmsg_t *ready = zmsg_new ();
    zmsg_addstr (ready, self->service);
    //  Always sent: it also says this worker understands CANCEL.
    zframe_t *capacity = s_capacity_frame (self->opt.capacity);
    zmsg_append (ready, &capacity);
    //  READY carries the service name; s_agent_send_to_broker adds headers.
    uint8_t cmd = MDPW_READY;
    zmsg_pushmem (ready, &cmd, 1);
    zmsg_pushstr (ready, MDPW_WORKER);
    zmsg_send (&ready, self->dealer);
    int connects = atomic_fetch_add (self->connects, 1) + 1;
    self->broker_expiry = zclock_mono () + (int64_t) self->opt.heartbeat_ms * self->opt.liveness;
    self->heartbeat_at = zclock_mono () + self->opt.heartbeat_ms;
    if (self->opt.verbose)
        zsys_debug ("mdp_worker %s: READY sent to %s (connect #%d)",
                    self->service, self->endpoint, connects);
}

//  Broker is gone or told us to go: close, back off, reconnect later.
static void
s_agent_schedule_reconnect (s_agent_t *self, const char *why)
{
    zsys_info ("mdp_worker %s: %s; reconnecting in %d ms", self->service, why, self->backoff);
    s_agent_disconnect (self);
    self->reconnect_at = zclock_mono () + self->backoff;
    self->backoff *= 2;
    if (self->backoff > self->opt.reconnect_max_ms)
        self->backoff = self->opt.reconnect_max_ms;
}

static void *
s_frame_dup (const void *item)
{
    return zframe_dup ((zframe_t *) item);
}

static void
s_frame_destroy (void **item)
{
    zframe_destroy ((zframe_t **) item);
}

static int
s_frame_compare (const void *a, const void *b)
{
    return zframe_eq ((zframe_t *) a, (zframe_t *) b)? 0: 1;
}

//  One message from the broker; malformed ones are logged and dropped.
static void
s_agent_recv_broker (s_agent_t *self)
{
    zmsg_t *msg = zmsg_recv (self->dealer);
    if (!msg)
        return;
    zframe_t *header = zmsg_pop (msg);
    zframe_t *command = zmsg_pop (msg);
    if (!header || !zframe_streq (header, MDPW_WORKER)
    ||  !command || zframe_size (command) != 1) {
        zsys_warning ("mdp_worker %s: dropped a malformed message from the broker",
                      self->service);
        goto cleanup;
    }
    int cmd = zframe_data (command) [0];
    if (self->opt.verbose)
        zsys_debug ("mdp_worker %s: recv %s", self->service, mdpw_command_name (cmd));
    if (cmd == MDPW_DISCONNECT) {
        s_agent_schedule_reconnect (self, "broker sent DISCONNECT");
        goto cleanup;
    }
    //  Any other valid command shows the broker is alive.
    self->broker_expiry = zclock_mono () + (int64_t) self->opt.heartbeat_ms * self->opt.liveness;
    self->backoff = self->opt.reconnect_ms;
    if (cmd == MDPW_REQUEST) {
        zframe_t *client = zmsg_pop (msg);
        zframe_t *empty = zmsg_pop (msg);
        if (!client || !empty || zframe_size (empty) != 0) {
            zsys_warning ("mdp_worker %s: dropped a REQUEST without client envelope",
                          self->service);
            zframe_destroy (&client);
            zframe_destroy (&empty);
            goto cleanup;
        }
        zframe_destroy (&empty);
        if (zmsg_size (msg) == 0)
            zmsg_addmem (msg, "", 0);   //  RFC 18: a body has at least one frame
        zlistx_add_end (self->outstanding, client);     //  list keeps a copy
        zmsg_prepend (msg, &client);
        zmsg_send (&msg, self->pipe);
    }
    else
    if (cmd == MDPW_CANCEL) {
        zframe_t *client = zmsg_pop (msg);
        if (client && zlistx_find (self->outstanding, client)) {
            pthread_mutex_lock (self->lock);
            if (!zlistx_find (self->cancelled, client))
                zlistx_add_end (self->cancelled, client);
            pthread_mutex_unlock (self->lock);
            if (self->opt.verbose)
                zsys_debug ("mdp_worker %s: a request was cancelled (its client is gone)",
                            self->service);
        }
        zframe_destroy (&client);
    }
    else
    if (cmd != MDPW_HEARTBEAT)
        zsys_warning ("mdp_worker %s: dropped unexpected %s from the broker",
                      self->service, mdpw_command_name (cmd));
cleanup:
    zframe_destroy (&header);
    zframe_destroy (&command);
    zmsg_destroy (&msg);
}

//  One command from the caller.
static void
s_agent_recv_api (s_agent_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        self->terminated = true;
        return;
    }
    char *command = zmsg_popstr (msg);
    if (!command)
        goto cleanup;
    if (streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "PARTIAL") || streq (command, "FINAL")) {
        bool final = streq (command, "FINAL");
        zframe_t *client = zmsg_pop (msg);
        assert (client);
        //  Only answer requests this connection received: after a reconnect
        //  the broker has handed them elsewhere or is a different broker.
        void *handle = self->dealer? zlistx_find (self->outstanding, client): NULL;
        if (final) {
            pthread_mutex_lock (self->lock);
            void *cancelled = zlistx_find (self->cancelled, client);
            if (cancelled)
                zlistx_delete (self->cancelled, cancelled);
            pthread_mutex_unlock (self->lock);
        }
        if (handle) {
            if (final)
                zlistx_delete (self->outstanding, handle);
            s_agent_send_to_broker (self, final? MDPW_FINAL: MDPW_PARTIAL, client, &msg);
        }
        else {
            zsys_info ("mdp_worker %s: dropped a %s for a request from before a reconnect",
                       self->service, command);
            if (final && self->orphans > 0)
                self->orphans--;
        }
        zframe_destroy (&client);
    }
cleanup:
    zstr_free (&command);
    zmsg_destroy (&msg);
}

static void
s_agent_actor (zsock_t *pipe, void *args)
{
    s_agent_t *self = (s_agent_t *) args;
    self->pipe = pipe;
    self->outstanding = zlistx_new ();
    zlistx_set_duplicator (self->outstanding, s_frame_dup);
    zlistx_set_destructor (self->outstanding, s_frame_destroy);
    zlistx_set_comparator (self->outstanding, s_frame_compare);
    self->backoff = self->opt.reconnect_ms;
    s_agent_connect (self);
    zsock_signal (pipe, 0);

    while (!self->terminated) {
        zmq_pollitem_t items [2] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
            { self->dealer? zsock_resolve (self->dealer): NULL, 0, ZMQ_POLLIN, 0 }
        };
        int64_t now = zclock_mono ();
        int64_t next = self->dealer? self->heartbeat_at: self->reconnect_at;
        if (self->dealer && self->broker_expiry < next)
            next = self->broker_expiry;
        long timeout = next > now? (long) (next - now): 0;
        int rc = zmq_poll (items, self->dealer? 2: 1, timeout);
        if (rc == -1) {
            if (errno == EINTR && !zsys_interrupted)
                continue;       //  a signal meant for someone else
            break;              //  interrupted: shut down
        }
        if (items [0].revents & ZMQ_POLLIN)
            s_agent_recv_api (self);
        if (self->dealer && (items [1].revents & ZMQ_POLLIN))
            s_agent_recv_broker (self);
        if (self->terminated)
            break;

        now = zclock_mono ();
        if (!self->dealer) {
            if (now >= self->reconnect_at && s_agent_can_register (self))
                s_agent_connect (self);
            else
            if (now >= self->reconnect_at)
                self->reconnect_at = now + 20;      //  look again when orphans may be done
        }
        else
        if (now >= self->broker_expiry)
            s_agent_schedule_reconnect (self, "broker silent for the liveness window");
        else
        if (now >= self->heartbeat_at)
            s_agent_send_to_broker (self, MDPW_HEARTBEAT, NULL, NULL);
    }
    if (self->dealer) {
        //  Best effort goodbye: give DISCONNECT a moment to leave.
        zsock_set_linger (self->dealer, 100);
        s_agent_send_to_broker (self, MDPW_DISCONNECT, NULL, NULL);
        zsock_destroy (&self->dealer);
    }
    zlistx_destroy (&self->outstanding);
    zstr_free (&self->endpoint);
    zstr_free (&self->service);
    free (self);
}

mdp_worker_t *
mdp_worker_new (const char *endpoint, const char *service,
                const mdp_worker_options_t *options)
{
    if (!endpoint || !*endpoint || !service || !*service
    ||  strlen (service) > MDP_SERVICE_MAX)
        return NULL;
    mdp_worker_options_t opt = { 0 };
    if (options)
        opt = *options;
    if (opt.capacity < 0 || opt.capacity > MDP_CAPACITY_MAX)
        return NULL;
    if (opt.heartbeat_ms <= 0)
        opt.heartbeat_ms = MDP_HEARTBEAT_DEFAULT;
    if (opt.liveness <= 0)
        opt.liveness = MDP_LIVENESS_DEFAULT;
    if (opt.reconnect_ms <= 0)
        opt.reconnect_ms = MDP_RECONNECT_DEFAULT;
    if (opt.reconnect_max_ms < opt.reconnect_ms)
        opt.reconnect_max_ms = opt.reconnect_ms > MDP_RECONNECT_MAX_DEFAULT?
                               opt.reconnect_ms: MDP_RECONNECT_MAX_DEFAULT;
    if (opt.capacity == 0)
        opt.capacity = 1;

    //  Validate the endpoint here, where the caller can see the error.
    zsock_t *probe = zsock_new (ZMQ_DEALER);
    if (!probe)
        return NULL;
    int rc = zsock_connect (probe, "%s", endpoint);
    zsock_destroy (&probe);
    if (rc)
        return NULL;

    mdp_worker_t *self = (mdp_worker_t *) zmalloc (sizeof (mdp_worker_t));
    s_agent_t *agent = (s_agent_t *) zmalloc (sizeof (s_agent_t));
    agent->endpoint = strdup (endpoint);
    agent->service = strdup (service);
    agent->opt = opt;
    agent->connects = &self->connects;
    pthread_mutex_init (&self->lock, NULL);
    self->cancelled = zlistx_new ();
    zlistx_set_duplicator (self->cancelled, s_frame_dup);
    zlistx_set_destructor (self->cancelled, s_frame_destroy);
    zlistx_set_comparator (self->cancelled, s_frame_compare);
    agent->lock = &self->lock;
    agent->cancelled = self->cancelled;
    //  The actor owns and frees agent.
    self->actor = zactor_new (s_agent_actor, agent);
    if (!self->actor) {
        zstr_free (&agent->endpoint);
        zstr_free (&agent->service);
        free (agent);
        zlistx_destroy (&self->cancelled);
        pthread_mutex_destroy (&self->lock);
        free (self);
        return NULL;
    }
    return self;
}

void
mdp_worker_destroy (mdp_worker_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        mdp_worker_t *self = *self_p;
        zactor_destroy (&self->actor);
        zlistx_destroy (&self->cancelled);
        pthread_mutex_destroy (&self->lock);
        free (self);
        *self_p = NULL;
    }
}

zmsg_t *
mdp_worker_recv (mdp_worker_t *self, int timeout_ms, zframe_t **client_p)
{
    assert (self);
    assert (client_p);
    zsock_t *sock = zactor_sock (self->actor);
    if (timeout_ms >= 0) {
        zmq_pollitem_t item = { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, timeout_ms) <= 0)
            return NULL;
    }
    zmsg_t *msg = zmsg_recv (sock);
    //  A request is [client][body...]; anything shorter is the actor's
    //  exit signal (it stopped on SIGINT/SIGTERM), not a request.
    if (!msg || zmsg_size (msg) < 2) {
        zmsg_destroy (&msg);
        return NULL;
    }
    *client_p = zmsg_pop (msg);
    return msg;
}

static int
s_send (mdp_worker_t *self, const char *command, zframe_t *client, zmsg_t **body_p)
{
    assert (self);
    assert (client);
    zmsg_t *msg = body_p && *body_p? *body_p: zmsg_new ();
    if (body_p)
        *body_p = NULL;
    zmsg_pushmem (msg, zframe_data (client), zframe_size (client));
    zmsg_pushstr (msg, command);
    return zmsg_send (&msg, zactor_sock (self->actor));
}

int
mdp_worker_send_partial (mdp_worker_t *self, zframe_t *client, zmsg_t **body_p)
{
    return s_send (self, "PARTIAL", client, body_p);
}

int
mdp_worker_send_final (mdp_worker_t *self, zframe_t *client, zmsg_t **body_p)
{
    return s_send (self, "FINAL", client, body_p);
}

zsock_t *
mdp_worker_sock (mdp_worker_t *self)
{
    assert (self);
    return zactor_sock (self->actor);
}

int
mdp_worker_connects (mdp_worker_t *self)
{
    assert (self);
    return atomic_load (&self->connects);
}

bool
mdp_worker_cancelled (mdp_worker_t *self, zframe_t *client)
{
    assert (self);
    assert (client);
    pthread_mutex_lock (&self->lock);
    bool cancelled = zlistx_find (self->cancelled, client) != NULL;
    pthread_mutex_unlock (&self->lock);
    return cancelled;
}
