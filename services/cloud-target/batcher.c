/*  batcher.c: continuous batching for an MDP service (see batcher.h).

    The request loop of service_actor_run, with a queue in front of the
    handler: requests are kept with their client envelopes until a batch
    is formed (capacity reached, the oldest waited wait_us, or no other
    active session is due: the adaptive wait below), then the service
    admits them one by one in arrival order and computes the admitted
    ones together.

    The adaptive wait: a session is active from its first reply until it
    closes or stays silent for active_us. A queued request waits for
    batch mates only while some active session has no request queued (its
    next one is due: it got its reply and is drafting). When every active
    session is queued, or the only one is the requester, the batch goes at
    once: a lone session pays no wait, and N sessions in lock step batch as
    soon as the N-th arrives instead of after the full wait_us. Replies go out as each is known: errors at
    admission, the batch's after its run, so replies leave out of order
    across sessions and in order within one.
*/
#include <stdlib.h>
#include <string.h>
#include "batcher.h"
#include "mdp_worker.h"

typedef struct {
    zmsg_t *request;            //  the body (one frame, checked)
    zframe_t *client;           //  the client envelope for the reply
    wire_peek_t peek;           //  what service_check found
    int64_t arrived;            //  zclock_usecs () at arrival
} s_entry_t;

//  A session seen recently: the adaptive wait expects its next request.
typedef struct {
    char id [WIRE_MAX_SESSION_BYTES + 1];
    int64_t seen;               //  zclock_usecs () of its last reply
} s_active_t;

typedef struct {
    const batcher_ops_t *ops;
    void *state;
    mdp_worker_t *worker;
    metrics_t *metrics;
    const char *service;
    bool verbose;
    s_entry_t *queue;           //  (cap) waiting requests, arrival order
    int n_queue, cap;
    void **jobs;                //  (cap) the batch being formed
    zframe_t **replies;         //  (cap) its replies
    s_entry_t *job_entries;     //  (cap) the requests of jobs[]
    s_active_t *active;         //  (cap) sessions active lately, n_active of them
    int n_active;
    bool adaptive;              //  wait only while an active session is due
    int64_t active_us;          //  silence after which a session is no longer waited for
} s_batcher_t;

batcher_options_t
batcher_options_default (const service_config_t *config)
{
    batcher_options_t o = { .capacity = config->max_sessions, .wait_us = 1000, .adaptive = true,
                            .active_us = 50000 };
    const char *cap = getenv ("SPLITMESH_BATCH_CAPACITY");
    const char *wait = getenv ("SPLITMESH_BATCH_WAIT_US");
    const char *adaptive = getenv ("SPLITMESH_BATCH_ADAPTIVE");
    const char *active = getenv ("SPLITMESH_BATCH_ACTIVE_US");
    if (adaptive)
        o.adaptive = atoi (adaptive) != 0;
    if (active && atoi (active) > 0)
        o.active_us = atoi (active);
    if (cap && atoi (cap) > 0)
        o.capacity = atoi (cap);
    if (wait && atoi (wait) >= 0)
        o.wait_us = atoi (wait);
    if (o.capacity < 1)
        o.capacity = 1;
    if (o.capacity > 1024)
        o.capacity = 1024;
    return o;
}

//  Notes that session id got a batch's reply (it becomes or stays
//  active), or forgets it (closed).
static void
s_active_note (s_batcher_t *self, const char *id, bool closed)
{
    if (!*id)
        return;
    int64_t now = zclock_usecs ();
    int i;
    for (i = 0; i < self->n_active; i++)
        if (streq (self->active [i].id, id))
            break;
    if (closed) {
        if (i < self->n_active)
            self->active [i] = self->active [--self->n_active];
        return;
    }
    if (i == self->n_active) {
        //  Full: the longest silent one makes room.
        if (self->n_active == self->cap) {
            int old = 0;
            for (int j = 1; j < self->n_active; j++)
                if (self->active [j].seen < self->active [old].seen)
                    old = j;
            i = old;
        }
        else
            self->n_active++;
        snprintf (self->active [i].id, sizeof self->active [i].id, "%s", id);
    }
    self->active [i].seen = now;
}

//  Whether some active session (replied within active_us) has no request
//  queued: its next request is due, worth waiting for. Sessions silent
//  longer are forgotten.
static bool
s_active_due (s_batcher_t *self)
{
    int64_t now = zclock_usecs ();
    bool due = false;
    for (int i = 0; i < self->n_active; ) {
        if (now - self->active [i].seen > self->active_us) {
            self->active [i] = self->active [--self->n_active];
            continue;
        }
        bool queued = false;
        for (int q = 0; q < self->n_queue && !queued; q++)
            queued = streq (self->queue [q].peek.session, self->active [i].id);
        if (!queued)
            due = true;
        i++;
    }
    return due;
}

//  Sends reply (NULL: 500) to the client of e as the FINAL of its request;
//  with -v, logs it as service_actor_run does (tests count these lines).
static void
s_send (s_batcher_t *self, const s_entry_t *e, zframe_t *reply)
{
    zframe_t *client = e->client;
    if (streq (e->peek.tag, "session_close"))
        s_active_note (self, e->peek.session, true);
    if (!reply)
        reply = service_error (500, "%s: out of memory", self->service);
    if (self->verbose)
        zsys_info ("%s: %zu-byte request -> %zu-byte reply in %.2f ms", self->service,
                   e->request? zframe_size (zmsg_first (e->request)): 0, reply? zframe_size (reply): 0,
                   (zclock_usecs () - e->arrived) / 1000.0);
    service_count_reply (self->metrics, reply);
    zmsg_t *msg = zmsg_new ();
    if (reply)
        zmsg_append (msg, &reply);
    mdp_worker_send_final (self->worker, client, &msg);
    zmsg_destroy (&msg);
}

static void
s_entry_free (s_entry_t *e)
{
    zmsg_destroy (&e->request);
    zframe_destroy (&e->client);
}

//  Queues what arrived, answering malformed requests at once.
static void
s_drain (s_batcher_t *self)
{
    zframe_t *client = NULL;
    zmsg_t *request;
    while ((request = mdp_worker_recv (self->worker, 0, &client))) {
        s_entry_t e = { request, client, { 0 }, zclock_usecs () };
        zframe_t *reply = service_check (request, self->service, &e.peek);
        if (!reply && self->n_queue == self->cap) {
            //  More than the capacity we registered: the broker should not
            //  send these, but nothing a caller sent is silently dropped.
            reply = service_error (503, "%s: %d requests already queued", self->service, self->cap);
        }
        if (reply) {
            s_send (self, &e, reply);
            s_entry_free (&e);
        }
        else
            self->queue [self->n_queue++] = e;
        client = NULL;
    }
}

static bool
s_listed (const char **sessions, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (streq (sessions [i], id))
            return true;
    return false;
}

//  Forms one batch from the queue and runs it.
static void
s_batch (s_batcher_t *self)
{
    const char *busy [self->cap];   //  sessions with a job in the batch or a deferred request
    int n_busy = 0, n_jobs = 0, kept = 0;
    for (int i = 0; i < self->n_queue; i++) {
        s_entry_t *e = &self->queue [i];
        const char *id = e->peek.session;
        if (*id && s_listed (busy, n_busy, id)) {
            self->queue [kept++] = *e;
            continue;
        }
        zframe_t *reply = NULL;
        void *job = NULL;
        batcher_admit_t a = self->ops->admit (self->state, zmsg_first (e->request), &e->peek,
                                              n_jobs, &reply, &job);
        if (a == BATCHER_DEFER && n_jobs == 0) {
            //  Nothing in the batch to wait for: deferring would spin.
            a = BATCHER_REPLY;
            reply = service_error (500, "%s: request deferred with an empty batch", self->service);
        }
        if (a == BATCHER_REPLY) {
            s_send (self, e, reply);
            s_entry_free (e);
            continue;
        }
        if (*id)
            busy [n_busy++] = id;
        if (a == BATCHER_DEFER)
            self->queue [kept++] = *e;
        else {
            self->jobs [n_jobs] = job;
            self->job_entries [n_jobs++] = *e;
        }
    }
    self->n_queue = kept;
    if (n_jobs == 0)
        return;
    int64_t start = zclock_usecs ();
    memset (self->replies, 0, (size_t) n_jobs * sizeof *self->replies);
    self->ops->run (self->state, self->jobs, n_jobs, self->replies);
    if (self->verbose)
        zsys_info ("%s: batch of %d requests in %.2f ms", self->service, n_jobs,
                   (zclock_usecs () - start) / 1000.0);
    for (int j = 0; j < n_jobs; j++) {
        s_active_note (self, self->job_entries [j].peek.session, false);
        s_send (self, &self->job_entries [j], self->replies [j]);
        s_entry_free (&self->job_entries [j]);
    }
}

void
batcher_run (zsock_t *pipe, const service_config_t *config, const char *service,
             const char *setup_err, const batcher_ops_t *ops, void *state,
             metrics_t *metrics, const batcher_options_t *options)
{
    s_batcher_t self = { .ops = ops, .state = state, .metrics = metrics, .service = service,
                         .verbose = config->verbose, .cap = options->capacity,
                         .adaptive = options->adaptive, .active_us = options->active_us };
    char err [512];
    snprintf (err, sizeof err, "%s", setup_err? setup_err: "");
    if (!*err) {
        self.queue = calloc ((size_t) self.cap, sizeof *self.queue);
        self.jobs = calloc ((size_t) self.cap, sizeof *self.jobs);
        self.replies = calloc ((size_t) self.cap, sizeof *self.replies);
        self.job_entries = calloc ((size_t) self.cap, sizeof *self.job_entries);
        self.active = calloc ((size_t) self.cap, sizeof *self.active);
        if (!self.queue || !self.jobs || !self.replies || !self.job_entries || !self.active)
            snprintf (err, sizeof err, "out of memory for a batch of %d", self.cap);
    }
    if (!*err) {
        mdp_worker_options_t wo = { 0 };
        wo.heartbeat_ms = config->heartbeat_ms;
        wo.verbose = config->verbose;
        wo.capacity = self.cap;
        self.worker = mdp_worker_new (config->broker, service, &wo);
        if (!self.worker)
            snprintf (err, sizeof err, "cannot register service '%s' with broker '%s'",
                      service, config->broker);
    }
    zsock_signal (pipe, 0);
    zpoller_t *poller = self.worker? zpoller_new (pipe, mdp_worker_sock (self.worker), NULL)
                                   : zpoller_new (pipe, NULL);
    while (poller) {
        int timeout = -1;
        //  Adaptive: nothing due from another active session, go now.
        bool now = self.n_queue && self.adaptive && !s_active_due (&self);
        if (now)
            timeout = 0;
        else
        if (self.n_queue) {
            int64_t left = self.queue [0].arrived + options->wait_us - zclock_usecs ();
            timeout = left <= 0? 0: (int) ((left + 999) / 1000);
        }
        zsock_t *which = (zsock_t *) zpoller_wait (poller, timeout);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            if (command && streq (command, "ERROR"))
                zstr_send (pipe, err);
            zstr_free (&command);
            if (term)
                break;
        }
        else
        if (which && self.worker)
            s_drain (&self);
        else
        if (zpoller_terminated (poller))
            break;
        if (self.n_queue
        &&  (self.n_queue >= self.cap
        ||   zclock_usecs () >= self.queue [0].arrived + options->wait_us
        ||   (self.adaptive && !s_active_due (&self))))
            s_batch (&self);
    }
    //  Whatever is still queued at $TERM gets an answer.
    for (int i = 0; i < self.n_queue; i++) {
        s_send (&self, &self.queue [i], service_error (503, "%s: stopping", service));
        s_entry_free (&self.queue [i]);
    }
    zpoller_destroy (&poller);
    mdp_worker_destroy (&self.worker);
    free (self.queue);
    free (self.jobs);
    free (self.replies);
    free (self.job_entries);
    free (self.active);
}
