/*  link_proxy.c: ZeroMQ proxy over an emulated link (see link_proxy.h).  */
#include "link_proxy.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  A near-end peer and its private connection to the far end.
typedef struct {
    zframe_t *identity;         //  ROUTER identity of the near-end peer
    zsock_t *dealer;            //  connected to the far endpoint for this peer
    int64_t last_used_us;       //  for evicting the idlest peer
} s_peer_t;

//  A message on the wire, waiting for its arrival time.
typedef struct {
    int64_t arrival_us;         //  when it may be delivered
    s_peer_t *peer;             //  whose message it is (NULL if the peer was evicted)
    zmsg_t *msg;                //  frames without the ROUTER identity
} s_pending_t;

typedef struct {
    zsock_t *pipe;              //  actor pipe
    zsock_t *router;            //  near end
    char *far_endpoint;         //  where dealers connect
    link_emu_t *link;           //  the emulated link
    zlist_t *peers;             //  s_peer_t items
    int max_peers;              //  bound on peers
    zlist_t *queue[2];          //  s_pending_t FIFO per direction (arrivals non-decreasing)
    char start_error[256];      //  why the proxy could not start; empty when running
    bool terminated;
} s_proxy_t;

static int64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static size_t
s_msg_bytes (zmsg_t *msg)
{
    return zmsg_content_size (msg);
}

static void
s_peer_destroy (s_peer_t **peer_p)
{
    s_peer_t *peer = *peer_p;
    if (peer) {
        zframe_destroy (&peer->identity);
        zsock_destroy (&peer->dealer);
        free (peer);
        *peer_p = NULL;
    }
}

//  Forgets a peer: queued messages for it are dropped, as a network drops
//  packets of a closed connection.
static void
s_proxy_evict (s_proxy_t *self, s_peer_t *peer)
{
    for (int dir = 0; dir < 2; dir++) {
        s_pending_t *p = (s_pending_t *) zlist_first (self->queue[dir]);
        while (p) {
            if (p->peer == peer)
                p->peer = NULL;
            p = (s_pending_t *) zlist_next (self->queue[dir]);
        }
    }
    zlist_remove (self->peers, peer);
    s_peer_destroy (&peer);
}

static s_peer_t *
s_proxy_peer (s_proxy_t *self, zframe_t *identity)
{
    s_peer_t *peer = (s_peer_t *) zlist_first (self->peers);
    while (peer) {
        if (zframe_eq (peer->identity, identity))
            return peer;
        peer = (s_peer_t *) zlist_next (self->peers);
    }
    if ((int) zlist_size (self->peers) >= self->max_peers) {
        s_peer_t *idlest = NULL;
        for (s_peer_t *p = (s_peer_t *) zlist_first (self->peers); p;
             p = (s_peer_t *) zlist_next (self->peers))
            if (!idlest || p->last_used_us < idlest->last_used_us)
                idlest = p;
        zsys_warning ("link-proxy: %d peers, dropping the idlest", self->max_peers);
        s_proxy_evict (self, idlest);
    }
    peer = calloc (1, sizeof *peer);
    if (!peer)
        return NULL;
    peer->identity = zframe_dup (identity);
    peer->dealer = zsock_new_dealer (self->far_endpoint);
    if (!peer->dealer) {
        zsys_error ("link-proxy: cannot connect to %s", self->far_endpoint);
        s_peer_destroy (&peer);
        return NULL;
    }
    zsock_set_linger (peer->dealer, 0);
    zlist_append (self->peers, peer);
    return peer;
}

static void
s_proxy_enqueue (s_proxy_t *self, link_dir_t dir, s_peer_t *peer, zmsg_t **msg_p)
{
    int64_t now = s_now_us ();
    peer->last_used_us = now;
    int64_t arrival = link_emu_schedule (self->link, dir, s_msg_bytes (*msg_p), now);
    if (arrival < 0) {
        zmsg_destroy (msg_p);       //  lost on the link
        return;
    }
    s_pending_t *pending = calloc (1, sizeof *pending);
    if (!pending) {
        zmsg_destroy (msg_p);
        return;
    }
    pending->arrival_us = arrival;
    pending->peer = peer;
    pending->msg = *msg_p;
    *msg_p = NULL;
    zlist_append (self->queue[dir], pending);
}

//  Delivers every queued message whose arrival time has come; returns the
//  milliseconds until the next one is due, or -1 when nothing is queued.
static int
s_proxy_deliver (s_proxy_t *self)
{
    int64_t now = s_now_us ();
    int64_t next = -1;
    for (int dir = 0; dir < 2; dir++) {
        s_pending_t *p;
        while ((p = (s_pending_t *) zlist_first (self->queue[dir])) && p->arrival_us <= now) {
            zlist_pop (self->queue[dir]);
            if (p->peer) {
                if (dir == LINK_UP)
                    zmsg_send (&p->msg, p->peer->dealer);
                else {
                    zmsg_pushmem (p->msg, zframe_data (p->peer->identity),
                                  zframe_size (p->peer->identity));
                    zmsg_send (&p->msg, self->router);
                }
            }
            zmsg_destroy (&p->msg);
            free (p);
        }
        if (p && (next < 0 || p->arrival_us < next))
            next = p->arrival_us;
    }
    if (next < 0)
        return -1;
    return (int) ((next - now + 999) / 1000);
}

static void
s_proxy_handle_pipe (s_proxy_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        self->terminated = true;
        return;
    }
    char *command = zmsg_popstr (msg);
    if (command && streq (command, "$TERM"))
        self->terminated = true;
    else if (command && streq (command, "STATUS")) {
        if (self->start_error[0])
            zsock_send (self->pipe, "ss", "ERROR", self->start_error);
        else
            zsock_send (self->pipe, "s", "OK");
    }
    else if (command && streq (command, "STATS") && self->link) {
        link_stats_t stats;
        link_emu_stats (self->link, &stats);
        zsock_send (self->pipe, "s888888", "STATS", stats.messages[0], stats.messages[1],
                    stats.bytes[0], stats.bytes[1], stats.lost[0], stats.lost[1]);
    }
    else
        zsys_warning ("link-proxy: unknown pipe command '%s'", command ? command : "(null)");
    free (command);
    zmsg_destroy (&msg);
}

static void
s_proxy_destroy (s_proxy_t *self)
{
    for (int dir = 0; dir < 2; dir++) {
        s_pending_t *p;
        while (self->queue[dir] && (p = (s_pending_t *) zlist_pop (self->queue[dir]))) {
            zmsg_destroy (&p->msg);
            free (p);
        }
        zlist_destroy (&self->queue[dir]);
    }
    s_peer_t *peer;
    while (self->peers && (peer = (s_peer_t *) zlist_pop (self->peers)))
        s_peer_destroy (&peer);
    zlist_destroy (&self->peers);
    zsock_destroy (&self->router);
    link_emu_destroy (&self->link);
    free (self->far_endpoint);
}

void
link_proxy_actor (zsock_t *pipe, void *args_)
{
    link_proxy_args_t *args = (link_proxy_args_t *) args_;
    s_proxy_t self = { .pipe = pipe, .max_peers = args->max_peers > 0 ? args->max_peers : 1024 };
    char err[200];
    self.link = link_emu_new (&args->params, err, sizeof err);
    if (self.link) {
        self.router = zsock_new (ZMQ_ROUTER);
        zsock_set_linger (self.router, 0);
        if (zsock_bind (self.router, "%s", args->near_endpoint) < 0)
            snprintf (self.start_error, sizeof self.start_error, "cannot bind %s: %s",
                      args->near_endpoint, zmq_strerror (zmq_errno ()));
    }
    else
        snprintf (self.start_error, sizeof self.start_error, "%s", err);
    if (self.start_error[0]) {
        //  Stay alive to report why, until the owner destroys us.
        zsock_signal (pipe, 0);
        while (!self.terminated)
            s_proxy_handle_pipe (&self);
        s_proxy_destroy (&self);
        return;
    }
    self.far_endpoint = strdup (args->far_endpoint);
    self.peers = zlist_new ();
    self.queue[0] = zlist_new ();
    self.queue[1] = zlist_new ();
    zsock_signal (pipe, 0);

    while (!self.terminated) {
        //  The poll set changes as peers come and go, so build it each turn;
        //  a link proxy has tens of peers, not thousands.
        int n_peers = (int) zlist_size (self.peers);
        zmq_pollitem_t *items = calloc ((size_t) n_peers + 2, sizeof *items);
        s_peer_t **owners = calloc ((size_t) n_peers + 2, sizeof *owners);
        items[0] = (zmq_pollitem_t) { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 };
        items[1] = (zmq_pollitem_t) { zsock_resolve (self.router), 0, ZMQ_POLLIN, 0 };
        int n = 2;
        for (s_peer_t *p = (s_peer_t *) zlist_first (self.peers); p;
             p = (s_peer_t *) zlist_next (self.peers)) {
            owners[n] = p;
            items[n++] = (zmq_pollitem_t) { zsock_resolve (p->dealer), 0, ZMQ_POLLIN, 0 };
        }
        int timeout = s_proxy_deliver (&self);
        if (zmq_poll (items, n, timeout) < 0) {
            free (items); free (owners);
            break;          //  interrupted
        }
        if (items[0].revents & ZMQ_POLLIN)
            s_proxy_handle_pipe (&self);
        if (items[1].revents & ZMQ_POLLIN) {
            zmsg_t *msg = zmsg_recv (self.router);
            zframe_t *identity = msg ? zmsg_pop (msg) : NULL;
            s_peer_t *peer = identity ? s_proxy_peer (&self, identity) : NULL;
            if (peer)
                s_proxy_enqueue (&self, LINK_UP, peer, &msg);
            zframe_destroy (&identity);
            zmsg_destroy (&msg);
        }
        for (int i = 2; i < n; i++)
            if (items[i].revents & ZMQ_POLLIN) {
                zmsg_t *msg = zmsg_recv (owners[i]->dealer);
                if (msg)
                    s_proxy_enqueue (&self, LINK_DOWN, owners[i], &msg);
            }
        free (items);
        free (owners);
        s_proxy_deliver (&self);
    }
    s_proxy_destroy (&self);
}

int
link_proxy_stats (zactor_t *proxy, link_stats_t *stats)
{
    zstr_send (proxy, "STATS");
    zsock_set_rcvtimeo (proxy, 2000);
    char *tag = NULL;
    uint64_t v[6];
    int rc = zsock_recv (proxy, "s888888", &tag, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
    zsock_set_rcvtimeo (proxy, -1);
    if (rc < 0 || !tag || strcmp (tag, "STATS")) {
        free (tag);
        return -1;
    }
    free (tag);
    stats->messages[0] = v[0]; stats->messages[1] = v[1];
    stats->bytes[0] = v[2];    stats->bytes[1] = v[3];
    stats->lost[0] = v[4];     stats->lost[1] = v[5];
    return 0;
}

zactor_t *
link_proxy_new (const link_proxy_args_t *args, char *err, size_t err_size)
{
    zactor_t *proxy = zactor_new (link_proxy_actor, (void *) args);
    if (!proxy) {
        snprintf (err, err_size, "cannot start the link proxy thread");
        return NULL;
    }
    zstr_send (proxy, "STATUS");
    char *status = NULL, *reason = NULL;
    zsock_recv (proxy, "ss", &status, &reason);
    int ok = status && streq (status, "OK");
    if (!ok) {
        snprintf (err, err_size, "%s", reason ? reason : "link proxy did not answer");
        zactor_destroy (&proxy);
    }
    free (status);
    free (reason);
    return proxy;
}
