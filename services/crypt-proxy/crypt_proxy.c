/*  crypt_proxy.c: the crypt-proxy actor (device and cloud roles).

    See crypt_proxy.h for the topology and the link frames. This file holds
    both roles because they share the link format, the key loading and the
    socket monitor; each role has its own state struct and loop.

    Why the shapes below:
    - The device DEALER uses ZMQ_IMMEDIATE, so a send fails at once while no
      authenticated connection exists (refused key, cloud down) and the
      request gets a 503 naming the reason, instead of waiting in a queue
      for a connection that may never come.
    - A socket monitor (zmq_socket_monitor over inproc) tells the device when
      the handshake succeeded, failed (and why: ZAP refusal, bad key, a
      corrupted stream) or the connection dropped; requests that were on a
      dropped connection are lost in TCP buffers, so they are failed with
      503 right away and the caller retries.
    - Link emulation sits between the MDP side and the DEALER: requests and
      replies wait in a FIFO per direction until link_emu_schedule says they
      arrive; messages it loses are destroyed (the request then ends in 504).
*/
#include <inttypes.h>
#include <sys/stat.h>
#include <dirent.h>
#include "mdp_common.h"
#include "mdp_client.h"
#include "mdp_worker.h"
#include "link_emu.h"
#include "codec.h"
#include "metrics.h"
#include "crypt_proxy.h"

#define LINK_CMD_REQUEST    'R'
#define LINK_CMD_PARTIAL    'P'
#define LINK_CMD_FINAL      'F'
#define LINK_ID_SIZE        8
#define ALLOW_POLL_MS       1000    //  allow directory re-read interval

//  ---------------------------------------------------------------------
//  Shared helpers

static void
s_put_id (byte *out, uint64_t id)
{
    for (int i = 0; i < LINK_ID_SIZE; i++)
        out [i] = (byte) (id >> (8 * (LINK_ID_SIZE - 1 - i)));
}

static uint64_t
s_get_id (const byte *in)
{
    uint64_t id = 0;
    for (int i = 0; i < LINK_ID_SIZE; i++)
        id = (id << 8) | in [i];
    return id;
}

//  Loads a certificate and checks it holds a secret key. Returns NULL with
//  a reason in err. Caller owns the result.
static zcert_t *
s_load_secret_cert (const char *path, char *err, size_t err_size)
{
    zcert_t *cert = path? zcert_load (path): NULL;
    if (!cert) {
        snprintf (err, err_size, "cannot load certificate '%s'", path? path: "(none)");
        return NULL;
    }
    static const byte zero [32] = { 0 };
    if (memcmp (zcert_secret_key (cert), zero, 32) == 0) {
        snprintf (err, err_size, "certificate '%s' has no secret key "
                  "(pass the file written by `splitmesh keygen`, name or name_secret)", path);
        zcert_destroy (&cert);
    }
    return cert;
}

//  ZMTP heartbeats: PING every third of the timeout, dead after timeout.
static void
s_set_heartbeats (zsock_t *sock, int timeout_ms)
{
    int timeout = timeout_ms > 0? timeout_ms: CRYPT_LINK_TIMEOUT_DEFAULT;
    zsock_set_heartbeat_ivl (sock, timeout / 3 > 50? timeout / 3: 50);
    zsock_set_heartbeat_timeout (sock, timeout);
}

//  Error FINAL body {"v":1,"status":S,"error":TEXT}, with retry_after_ms
//  for 429. Caller owns it.
static zmsg_t *
s_error_body (int status, const char *text)
{
    zmsg_t *body = zmsg_new ();
    zframe_t *frame = wire_error_frame (status, text, status == 429? CRYPT_RETRY_AFTER_MS: -1);
    if (frame)
        zmsg_append (body, &frame);
    else
        zmsg_addstr (body, text);
    return body;
}

//  Status of a FINAL body: its `status` when it is an error reply, 200
//  for any other reply (MessagePack or not: the proxy does not judge it).
static int
s_body_status (zmsg_t *body)
{
    zframe_t *frame = body? zmsg_first (body): NULL;
    wire_peek_t peek;
    wire_err_t err;
    if (frame && wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err) == 0
    &&  peek.status > 0)
        return peek.status;
    return 200;
}

//  Counts one FINAL sent back to its requester (requests_total, and
//  errors_total when it failed).
static void
s_count_final (metrics_t *metrics, const char *role, int status)
{
    char labels [48];
    snprintf (labels, sizeof labels, "role=%s,status=%d", role, status);
    metrics_count (metrics, "crypt_proxy_requests_total", labels, 1);
    if (wire_status_is_error (status))
        metrics_count (metrics, "crypt_proxy_errors_total", labels, 1);
}

static void
s_count_bytes (metrics_t *metrics, const char *role, const char *direction, size_t bytes)
{
    char labels [48];
    snprintf (labels, sizeof labels, "role=%s,direction=%s", role, direction);
    metrics_count (metrics, "crypt_proxy_link_bytes_total", labels, (double) bytes);
}

//  Monitor events we act on (zmq.h, libzmq 4.3)
static const char *
s_event_name (int event)
{
    switch (event) {
        case ZMQ_EVENT_CONNECTED:                 return "connected";
        case ZMQ_EVENT_DISCONNECTED:              return "disconnected";
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:       return "handshake succeeded";
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:     return "handshake refused (ZAP: key not allowed)";
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: return "handshake failed or message rejected "
                                                         "(protocol error: corrupted or forged data, wrong server key)";
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:return "handshake failed (connection lost during the handshake, "
                                                         "wrong key or corrupted stream)";
        case ZMQ_EVENT_CONNECT_RETRIED:           return "connect retried";
        case ZMQ_EVENT_CLOSED:                    return "closed";
        default:                                  return "other";
    }
}

#define MONITOR_EVENTS (ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED \
    | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH \
    | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)

//  Starts a monitor on sock; returns the PAIR that receives the events.
static zsock_t *
s_monitor_new (zsock_t *sock)
{
    //  A counter, not the address: a new socket may reuse a freed address
    //  while the old monitor endpoint is still being torn down.
    static int s_monitors = 0;
    char endpoint [96];
    snprintf (endpoint, sizeof endpoint, "inproc://crypt-monitor-%p-%d", (void *) sock,
              __atomic_add_fetch (&s_monitors, 1, __ATOMIC_RELAXED));
    if (zmq_socket_monitor (zsock_resolve (sock), endpoint, MONITOR_EVENTS) != 0)
        return NULL;
    zsock_t *pair = zsock_new (ZMQ_PAIR);
    if (pair && zsock_connect (pair, "%s", endpoint) != 0)
        zsock_destroy (&pair);
    return pair;
}

//  Reads one monitor event; returns the event number or -1.
static int
s_monitor_recv (zsock_t *monitor, int *value_p)
{
    zmsg_t *msg = zmsg_recv (monitor);
    if (!msg)
        return -1;
    zframe_t *frame = zmsg_first (msg);
    int event = -1;
    if (frame && zframe_size (frame) >= 6) {
        const byte *data = zframe_data (frame);
        uint16_t number;
        uint32_t value;
        memcpy (&number, data, 2);
        memcpy (&value, data + 2, 4);
        event = number;
        if (value_p)
            *value_p = (int) value;
    }
    zmsg_destroy (&msg);
    return event;
}

//  ---------------------------------------------------------------------
//  Configuration

int
crypt_proxy_config_check (const crypt_proxy_config_t *c, char *err, size_t err_size)
{
    assert (c);
    if (c->role != CRYPT_ROLE_DEVICE && c->role != CRYPT_ROLE_CLOUD) {
        snprintf (err, err_size, "role must be 'device' or 'cloud'");
        return -1;
    }
    if (!c->broker || !*c->broker) {
        snprintf (err, err_size, "--broker is required");
        return -1;
    }
    if (!c->cert || !*c->cert) {
        snprintf (err, err_size, "--cert is required (this proxy's secret certificate)");
        return -1;
    }
    if (c->timeout_ms < 0 || c->capacity < 0 || c->capacity > MDP_CAPACITY_MAX
    ||  c->max_inflight < 0 || c->heartbeat_ms < 0 || c->link_timeout_ms < 0) {
        snprintf (err, err_size, "a numeric option is out of range (capacity 1..%d)",
                  MDP_CAPACITY_MAX);
        return -1;
    }
    if (c->role == CRYPT_ROLE_DEVICE) {
        if (!c->services || !*c->services) {
            snprintf (err, err_size, "--services is required for the device role");
            return -1;
        }
        if (!c->connect || !*c->connect) {
            snprintf (err, err_size, "--connect is required for the device role");
            return -1;
        }
        if (!c->server_key || !*c->server_key) {
            snprintf (err, err_size, "--server-key is required for the device role "
                      "(the cloud proxy's public certificate)");
            return -1;
        }
        if (c->link && *c->link) {
            link_params_t params = { 0 };
            if (link_params_parse (&params, c->link, err, err_size))
                return -1;
            link_emu_t *emu = link_emu_new (&params, err, err_size);    //  checks ranges
            if (!emu)
                return -1;
            link_emu_destroy (&emu);
        }
    }
    else {
        if (!c->bind || !*c->bind) {
            snprintf (err, err_size, "--bind is required for the cloud role");
            return -1;
        }
        struct stat st;
        if (!c->allow || stat (c->allow, &st) || !S_ISDIR (st.st_mode)) {
            snprintf (err, err_size, "--allow must name a directory of client certificates");
            return -1;
        }
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Device role

//  One request in flight to the cloud
typedef struct {
    uint64_t id;                //  link request id
    int service;                //  index into workers
    zframe_t *client;           //  MDP client address on the device broker
    int64_t deadline;           //  zclock_mono msecs; 504 after this
    int64_t link_deadline;      //  waiting for the link: 503 after this (0: not waiting)
    bool sent;                  //  handed to the DEALER (else queued or waiting)
} device_request_t;

//  A link message waiting for its emulated arrival time
typedef struct {
    int64_t due_us;             //  arrival, zclock_usecs
    zmsg_t *msg;
} timed_msg_t;

typedef struct {
    zsock_t *pipe;              //  actor pipe
    crypt_proxy_config_t config;    //  copy; strings below are owned
    char *services_text;        //  owned copy of config.services
    char *service [CRYPT_SERVICES_MAX];     //  names (point into services_text)
    mdp_worker_t *worker [CRYPT_SERVICES_MAX];  //  one per service
    int nservices;
    zsock_t *link;              //  CURVE DEALER to the cloud proxy
    zcert_t *cert;              //  this device's certificate (secret)
    char server_key [41];       //  pinned server public key, Z85
    int64_t relink_at;          //  rebuild the link socket then (0: no)
    int relink_backoff;         //  msecs before the next rebuild
    zsock_t *monitor;           //  events of link
    zhashx_t *requests;         //  "id hex" -> device_request_t *
    uint64_t next_id;           //  next request id
    link_emu_t *emu;            //  NULL: no emulation
    zlistx_t *up;               //  timed_msg_t * waiting to be sent
    zlistx_t *down;             //  timed_msg_t * waiting to be delivered
    zlistx_t *pending;          //  zmsg_t * waiting for the link to come up
    int link_wait_ms;           //  how long a request waits for the link
    bool link_up;               //  an authenticated connection exists
    char link_state [160];      //  last event, for error texts
    int timeout_ms;             //  device-side deadline
    metrics_t *metrics;         //  NULL without --telemetry
    //  statistics
    uint64_t sent, replies, errors, lost, late, relinks;
    bool terminated;
} device_t;

static void
s_request_destroy (void **item_p)
{
    device_request_t *req = (device_request_t *) *item_p;
    if (req) {
        zframe_destroy (&req->client);
        free (req);
        *item_p = NULL;
    }
}

static void
s_timed_free (void **item_p)
{
    timed_msg_t *timed = (timed_msg_t *) *item_p;
    if (timed) {
        zmsg_destroy (&timed->msg);
        free (timed);
        *item_p = NULL;
    }
}

static void
s_key_of (uint64_t id, char *key)
{
    snprintf (key, 17, "%016" PRIx64, id);
}

//  Ends a request with an error FINAL to its MDP client and forgets it.
static void
s_device_fail (device_t *self, device_request_t *req, int status, const char *text)
{
    zmsg_t *body = s_error_body (status, text);
    mdp_worker_send_final (self->worker [req->service], req->client, &body);
    self->errors++;
    s_count_final (self->metrics, "device", status);
    char key [17];
    s_key_of (req->id, key);
    if (self->config.verbose)
        zsys_info ("crypt-proxy device: request %s failed: %d %s", key, status, text);
    zhashx_delete (self->requests, key);
}

//  The request a link message belongs to (NULL when it already ended).
static device_request_t *
s_device_request_of (device_t *self, zmsg_t *msg)
{
    zframe_t *idf = zmsg_first (msg);
    idf = zmsg_next (msg);
    idf = zmsg_next (msg);
    char key [17];
    s_key_of (s_get_id (zframe_data (idf)), key);
    return (device_request_t *) zhashx_lookup (self->requests, key);
}

//  Sends one link message on the DEALER now. Without an authenticated
//  connection the message waits (up to link_wait_ms) for the link in
//  `pending`; s_device_expire fails it with 503 naming the link's state.
static void
s_device_link_send (device_t *self, zmsg_t **msg_p)
{
    device_request_t *req = s_device_request_of (self, *msg_p);
    if (!req) {             //  ended while it waited in the up queue
        zmsg_destroy (msg_p);
        return;
    }
    if (!(zsock_events (self->link) & ZMQ_POLLOUT)) {
        //  No authenticated connection (ZMQ_IMMEDIATE): wait for one.
        if (!req->link_deadline)
            req->link_deadline = zclock_mono () + self->link_wait_ms;
        zlistx_add_end (self->pending, *msg_p);
        *msg_p = NULL;
        return;
    }
    size_t bytes = zmsg_content_size (*msg_p);
    if (zmsg_send (msg_p, self->link) == 0) {
        s_count_bytes (self->metrics, "device", "sent", bytes);
        req->sent = true;
        req->link_deadline = 0;
        self->sent++;
    }
    else {
        //  Lost the race with a disconnect: nothing was sent.
        zmsg_destroy (msg_p);
        char text [256];
        snprintf (text, sizeof text, "crypt-proxy: link to the cloud is down (%s)",
                  self->link_state);
        s_device_fail (self, req, 503, text);
    }
}

//  Retries the messages that wait for the link, oldest first.
static void
s_device_flush_pending (device_t *self)
{
    size_t count = zlistx_size (self->pending);
    for (size_t i = 0; i < count; i++) {
        zmsg_t *msg = (zmsg_t *) zlistx_detach (self->pending, NULL);
        if (!msg)
            break;
        s_device_link_send (self, &msg);
    }
}

//  A request arrived from the device broker for service index i.
static void
s_device_request (device_t *self, int i)
{
    zframe_t *client = NULL;
    zmsg_t *body = mdp_worker_recv (self->worker [i], 0, &client);
    if (!body)
        return;
    device_request_t *req = (device_request_t *) zmalloc (sizeof *req);
    req->id = self->next_id++;
    req->service = i;
    req->client = client;
    req->deadline = zclock_mono () + self->timeout_ms;
    char key [17];
    s_key_of (req->id, key);
    zhashx_insert (self->requests, key, req);

    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, CRYPT_LINK_MAGIC);
    zmsg_addmem (msg, "R", 1);
    byte id [LINK_ID_SIZE];
    s_put_id (id, req->id);
    zmsg_addmem (msg, id, LINK_ID_SIZE);
    zmsg_addstr (msg, self->service [i]);
    zframe_t *frame = zmsg_pop (body);
    while (frame) {
        zmsg_append (msg, &frame);
        frame = zmsg_pop (body);
    }
    zmsg_destroy (&body);

    if (self->emu) {
        int64_t now = zclock_usecs ();
        int64_t due = link_emu_schedule (self->emu, LINK_UP, zmsg_content_size (msg), now);
        if (due < 0) {
            self->lost++;
            zmsg_destroy (&msg);    //  lost on the link: ends in 504
            return;
        }
        timed_msg_t *timed = (timed_msg_t *) zmalloc (sizeof *timed);
        timed->due_us = due;
        timed->msg = msg;
        zlistx_add_end (self->up, timed);
    }
    else
        s_device_link_send (self, &msg);
}

//  A reply from the cloud (after emulation): route it to its MDP client.
static void
s_device_deliver (device_t *self, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    zframe_t *magic = zmsg_pop (msg);
    zframe_t *cmd = zmsg_pop (msg);
    zframe_t *idf = zmsg_pop (msg);
    if (!magic || !zframe_streq (magic, CRYPT_LINK_MAGIC)
    ||  !cmd || zframe_size (cmd) != 1 || !idf || zframe_size (idf) != LINK_ID_SIZE
    ||  (zframe_data (cmd) [0] != LINK_CMD_PARTIAL && zframe_data (cmd) [0] != LINK_CMD_FINAL)) {
        zsys_warning ("crypt-proxy device: malformed link message from the cloud, dropped");
        goto cleanup;
    }
    char key [17];
    s_key_of (s_get_id (zframe_data (idf)), key);
    device_request_t *req = (device_request_t *) zhashx_lookup (self->requests, key);
    if (!req) {
        self->late++;
        if (self->config.verbose)
            zsys_info ("crypt-proxy device: reply for finished request %s dropped", key);
        goto cleanup;
    }
    if (zmsg_size (msg) == 0)
        zmsg_addmem (msg, "", 0);
    if (zframe_data (cmd) [0] == LINK_CMD_PARTIAL) {
        req->deadline = zclock_mono () + self->timeout_ms;
        mdp_worker_send_partial (self->worker [req->service], req->client, msg_p);
    }
    else {
        s_count_final (self->metrics, "device", s_body_status (msg));
        mdp_worker_send_final (self->worker [req->service], req->client, msg_p);
        self->replies++;
        zhashx_delete (self->requests, key);
    }
cleanup:
    zframe_destroy (&magic);
    zframe_destroy (&cmd);
    zframe_destroy (&idf);
    zmsg_destroy (msg_p);
}

static void
s_device_link_recv (device_t *self)
{
    zmsg_t *msg = zmsg_recv (self->link);
    if (!msg)
        return;
    s_count_bytes (self->metrics, "device", "received", zmsg_content_size (msg));
    if (self->emu) {
        int64_t now = zclock_usecs ();
        int64_t due = link_emu_schedule (self->emu, LINK_DOWN, zmsg_content_size (msg), now);
        if (due < 0) {
            self->lost++;
            zmsg_destroy (&msg);
            return;
        }
        timed_msg_t *timed = (timed_msg_t *) zmalloc (sizeof *timed);
        timed->due_us = due;
        timed->msg = msg;
        zlistx_add_end (self->down, timed);
    }
    else
        s_device_deliver (self, &msg);
}

//  Creates the CURVE DEALER and its monitor and connects it.
static int
s_device_link_open (device_t *self, char *err, size_t err_size)
{
    self->link = zsock_new (ZMQ_DEALER);
    if (!self->link) {
        snprintf (err, err_size, "cannot create the link socket");
        return -1;
    }
    zcert_apply (self->cert, self->link);
    zsock_set_curve_serverkey (self->link, self->server_key);
    zsock_set_immediate (self->link, 1);
    zsock_set_sndtimeo (self->link, 0);
    zsock_set_linger (self->link, 0);
    zsock_set_reconnect_ivl (self->link, 100);
    zsock_set_reconnect_ivl_max (self->link, 2000);
    s_set_heartbeats (self->link, self->config.link_timeout_ms);
    zsock_set_sndhwm (self->link, 100000);
    zsock_set_rcvhwm (self->link, 100000);
    self->monitor = s_monitor_new (self->link);
    if (!self->monitor) {
        snprintf (err, err_size, "cannot monitor the link socket");
        return -1;
    }
    if (zsock_connect (self->link, "%s", self->config.connect) != 0) {
        snprintf (err, err_size, "cannot connect to '%s'", self->config.connect);
        return -1;
    }
    return 0;
}

static void
s_device_link_close (device_t *self)
{
    if (self->link)
        zmq_socket_monitor (zsock_resolve (self->link), NULL, 0);
    zsock_destroy (&self->monitor);
    zsock_destroy (&self->link);
}

//  libzmq gives up on a connection that failed its handshake (ZAP refusal,
//  a corrupted stream: a "protocol error"), and never reconnects it. So
//  after any failure the device builds a fresh socket, with back-off.
//  Requests that were on the old socket are failed: their answers are lost.
static void
s_device_relink (device_t *self)
{
    zlistx_t *failed = zlistx_new ();
    device_request_t *req = (device_request_t *) zhashx_first (self->requests);
    while (req) {
        if (req->sent)
            zlistx_add_end (failed, req);
        req = (device_request_t *) zhashx_next (self->requests);
    }
    for (req = (device_request_t *) zlistx_first (failed); req;
         req = (device_request_t *) zlistx_next (failed))
        s_device_fail (self, req, 503,
            "crypt-proxy: the link to the cloud dropped while the request was out; retry");
    zlistx_destroy (&failed);
    s_device_link_close (self);
    char err [256];
    if (s_device_link_open (self, err, sizeof err))
        zsys_error ("crypt-proxy device: %s", err);     //  retried on the next failure
    self->link_up = false;
    self->relink_at = 0;
    self->relinks++;
    metrics_count (self->metrics, "crypt_proxy_reconnects_total", "role=device", 1);
    if (self->config.verbose)
        zsys_info ("crypt-proxy device: link socket rebuilt");
}

//  True when the state names a failed handshake (the most useful reason).
static bool
s_handshake_failed (const char *state)
{
    return strncmp (state, "handshake refused", 17) == 0
        || strncmp (state, "handshake failed", 16) == 0;
}

static void
s_device_schedule_relink (device_t *self)
{
    if (self->relink_at)
        return;
    self->relink_at = zclock_mono () + self->relink_backoff;
    self->relink_backoff = self->relink_backoff * 2 > 1000? 1000: self->relink_backoff * 2;
}

static void
s_device_monitor (device_t *self)
{
    int value = 0;
    int event = s_monitor_recv (self->monitor, &value);
    if (event < 0)
        return;
    const char *name = s_event_name (event);
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        if (!self->link_up)
            zsys_info ("crypt-proxy device: link to %s up (CURVE, server key pinned)",
                       self->config.connect);
        self->link_up = true;
        self->relink_backoff = 100;
        snprintf (self->link_state, sizeof self->link_state, "%s", name);
        s_device_flush_pending (self);
    }
    else
    if (event == ZMQ_EVENT_DISCONNECTED) {
        //  After a failed handshake keep its reason: it says more.
        //  Whatever was on a connection that was up is lost: fail it now
        //  (the caller retries) and start over on a fresh socket.
        if (self->link_up) {
            zsys_warning ("crypt-proxy device: link to %s dropped", self->config.connect);
            snprintf (self->link_state, sizeof self->link_state, "connection dropped");
            s_device_relink (self);
        }
        else {
            if (!s_handshake_failed (self->link_state))
                snprintf (self->link_state, sizeof self->link_state, "connection dropped");
            s_device_schedule_relink (self);
        }
    }
    else
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
    ||  event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
    ||  event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        //  Log a failure once per change of state, not on every retry.
        if (strcmp (self->link_state, name))
            zsys_warning ("crypt-proxy device: %s: %s (code %d)",
                          self->config.connect, name, value);
        self->link_up = false;
        snprintf (self->link_state, sizeof self->link_state, "%s", name);
        s_device_schedule_relink (self);
    }
    else
    if (event == ZMQ_EVENT_CONNECTED && !self->link_up
    &&  !s_handshake_failed (self->link_state))     //  keep the last failure's reason
        snprintf (self->link_state, sizeof self->link_state, "TCP connected, CURVE handshake pending");
}

static void
s_device_destroy (device_t **self_p)
{
    device_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < self->nservices; i++)
        mdp_worker_destroy (&self->worker [i]);
    s_device_link_close (self);
    zcert_destroy (&self->cert);
    zhashx_destroy (&self->requests);
    zlistx_destroy (&self->up);
    zlistx_destroy (&self->down);
    zlistx_destroy (&self->pending);
    link_emu_destroy (&self->emu);
    metrics_destroy (&self->metrics);
    free (self->services_text);
    free (self);
    *self_p = NULL;
}

//  Sets everything up; on failure returns NULL with a reason in err.
static device_t *
s_device_new (zsock_t *pipe, const crypt_proxy_config_t *config, char *err, size_t err_size)
{
    device_t *self = (device_t *) zmalloc (sizeof *self);
    zcert_t *cert = NULL, *server = NULL;
    self->pipe = pipe;
    self->config = *config;
    self->timeout_ms = config->timeout_ms? config->timeout_ms: CRYPT_TIMEOUT_DEFAULT;
    self->requests = zhashx_new ();
    zhashx_set_destructor (self->requests, s_request_destroy);
    self->up = zlistx_new ();
    self->down = zlistx_new ();
    zlistx_set_destructor (self->up, s_timed_free);
    zlistx_set_destructor (self->down, s_timed_free);
    self->pending = zlistx_new ();
    zlistx_set_destructor (self->pending, (czmq_destructor *) zmsg_destroy);
    self->link_wait_ms = self->timeout_ms < 2000? self->timeout_ms: 2000;
    self->next_id = ((uint64_t) randof (0x7fffffff) << 32) | (uint64_t) zclock_usecs ();
    snprintf (self->link_state, sizeof self->link_state, "not connected yet");

    if (config->link && *config->link) {
        link_params_t params = { .seed = (uint64_t) zclock_usecs () };
        if (link_params_parse (&params, config->link, err, err_size))
            goto failed;
        self->emu = link_emu_new (&params, err, err_size);
        if (!self->emu)
            goto failed;
    }
    if (config->telemetry && *config->telemetry) {
        self->metrics = metrics_new ("crypt-proxy", config->instance, config->telemetry);
        if (!self->metrics) {
            snprintf (err, err_size, "bad telemetry endpoint '%s'", config->telemetry);
            goto failed;
        }
    }
    cert = s_load_secret_cert (config->cert, err, err_size);
    if (!cert)
        goto failed;
    server = zcert_load (config->server_key);
    if (!server) {
        snprintf (err, err_size, "cannot load the server's public certificate '%s'",
                  config->server_key);
        goto failed;
    }
    self->cert = cert;
    cert = NULL;
    snprintf (self->server_key, sizeof self->server_key, "%s", zcert_public_txt (server));
    self->relink_backoff = 100;
    if (s_device_link_open (self, err, err_size))
        goto failed;
    //  Workers last: once registered, requests may arrive.
    self->services_text = strdup (config->services);
    char *save = NULL;
    for (char *name = strtok_r (self->services_text, ",", &save); name;
         name = strtok_r (NULL, ",", &save)) {
        if (self->nservices == CRYPT_SERVICES_MAX) {
            snprintf (err, err_size, "more than %d services", CRYPT_SERVICES_MAX);
            goto failed;
        }
        mdp_worker_options_t options = {
            .capacity = config->capacity? config->capacity: CRYPT_CAPACITY_DEFAULT,
            .heartbeat_ms = config->heartbeat_ms,
            .reconnect_ms = config->heartbeat_ms? config->heartbeat_ms / 2: 0,
            .reconnect_max_ms = config->heartbeat_ms? config->heartbeat_ms * 4: 0,
            .verbose = config->verbose
        };
        self->worker [self->nservices] = mdp_worker_new (config->broker, name, &options);
        if (!self->worker [self->nservices]) {
            snprintf (err, err_size, "cannot register service '%s' at broker '%s'",
                      name, config->broker);
            goto failed;
        }
        self->service [self->nservices++] = name;
    }
    if (self->nservices == 0) {
        snprintf (err, err_size, "no service names in '%s'", config->services);
        goto failed;
    }
    zcert_destroy (&cert);
    zcert_destroy (&server);
    zsys_info ("crypt-proxy device: bridging %s from %s to %s%s%s", config->services,
               config->broker, config->connect, self->emu? " link ": "",
               self->emu? config->link: "");
    return self;

failed:
    zcert_destroy (&cert);
    zcert_destroy (&server);
    s_device_destroy (&self);
    return NULL;
}

static void
s_device_stats (device_t *self)
{
    zstr_sendf (self->pipe,
        "role=device inflight=%zu link_up=%d sent=%" PRIu64 " replies=%" PRIu64
        " errors=%" PRIu64 " lost=%" PRIu64 " late=%" PRIu64 " relinks=%" PRIu64,
        zhashx_size (self->requests), self->link_up? 1: 0, self->sent,
        self->replies, self->errors, self->lost, self->late, self->relinks);
}

static void
s_device_pipe (device_t *self)
{
    char *command = zstr_recv (self->pipe);
    if (!command || streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "STATS"))
        s_device_stats (self);
    else
    if (streq (command, "ERROR"))
        zstr_send (self->pipe, "");
    else
        zsys_warning ("crypt-proxy: unknown pipe command '%s'", command);
    zstr_free (&command);
}

//  Requests that waited too long for the link get 503, those whose
//  deadline passed get 504; waiting messages of ended requests are dropped.
static void
s_device_expire (device_t *self)
{
    int64_t now = zclock_mono ();
    zlistx_t *down = zlistx_new ();
    zlistx_t *late = zlistx_new ();
    device_request_t *req = (device_request_t *) zhashx_first (self->requests);
    while (req) {
        if (req->link_deadline && now >= req->link_deadline)
            zlistx_add_end (down, req);
        else
        if (now >= req->deadline)
            zlistx_add_end (late, req);
        req = (device_request_t *) zhashx_next (self->requests);
    }
    char text [256];
    snprintf (text, sizeof text, "crypt-proxy: link to the cloud is down (%s)", self->link_state);
    for (req = (device_request_t *) zlistx_first (down); req;
         req = (device_request_t *) zlistx_next (down))
        s_device_fail (self, req, 503, text);
    snprintf (text, sizeof text, "crypt-proxy: no reply from the cloud within %d ms (link: %s)",
              self->timeout_ms, self->link_state);
    for (req = (device_request_t *) zlistx_first (late); req;
         req = (device_request_t *) zlistx_next (late))
        s_device_fail (self, req, 504, text);
    zlistx_destroy (&down);
    zlistx_destroy (&late);
    zmsg_t *msg = (zmsg_t *) zlistx_first (self->pending);
    while (msg) {
        if (!s_device_request_of (self, msg))
            zlistx_delete (self->pending, zlistx_cursor (self->pending));
        msg = (zmsg_t *) zlistx_next (self->pending);
    }
}

static void
s_device_run (device_t *self)
{
    int64_t expire_at = zclock_mono () + 100;
    while (!self->terminated) {
        zmq_pollitem_t items [3 + CRYPT_SERVICES_MAX];
        items [0] = (zmq_pollitem_t) { zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0 };
        items [1] = (zmq_pollitem_t) { zsock_resolve (self->monitor), 0, ZMQ_POLLIN, 0 };
        items [2] = (zmq_pollitem_t) { zsock_resolve (self->link), 0, ZMQ_POLLIN, 0 };
        for (int i = 0; i < self->nservices; i++)
            items [3 + i] = (zmq_pollitem_t) {
                zsock_resolve (mdp_worker_sock (self->worker [i])), 0, ZMQ_POLLIN, 0 };
        //  Wake for the next emulated arrival or the next expiry check.
        int64_t wait_us = (expire_at - zclock_mono ()) * 1000;
        timed_msg_t *head = (timed_msg_t *) zlistx_first (self->up);
        if (head && head->due_us - zclock_usecs () < wait_us)
            wait_us = head->due_us - zclock_usecs ();
        head = (timed_msg_t *) zlistx_first (self->down);
        if (head && head->due_us - zclock_usecs () < wait_us)
            wait_us = head->due_us - zclock_usecs ();
        if (self->relink_at && (self->relink_at - zclock_mono ()) * 1000 < wait_us)
            wait_us = (self->relink_at - zclock_mono ()) * 1000;
        if (self->link_up && zlistx_size (self->pending) && wait_us > 10000)
            wait_us = 10000;    //  the pipe may attach just after the event
        long wait_ms = wait_us <= 0? 0: (long) ((wait_us + 999) / 1000);
        if (zmq_poll (items, 3 + self->nservices, wait_ms) == -1) {
            if (errno == EINTR && !zsys_interrupted)
                continue;
            break;
        }
        if (items [0].revents & ZMQ_POLLIN)
            s_device_pipe (self);
        //  Monitor first, so a drop is known before its consequences.
        while (zsock_events (self->monitor) & ZMQ_POLLIN)
            s_device_monitor (self);
        for (int n = 0; n < 1000 && (zsock_events (self->link) & ZMQ_POLLIN); n++)
            s_device_link_recv (self);
        for (int i = 0; i < self->nservices; i++)
            for (int n = 0; n < 1000
                 && (zsock_events (mdp_worker_sock (self->worker [i])) & ZMQ_POLLIN); n++)
                s_device_request (self, i);
        //  Emulated link: move what has arrived.
        int64_t now = zclock_usecs ();
        timed_msg_t *timed;
        while ((timed = (timed_msg_t *) zlistx_first (self->up)) && timed->due_us <= now) {
            zmsg_t *msg = timed->msg;
            timed->msg = NULL;
            zlistx_delete (self->up, zlistx_cursor (self->up));
            s_device_link_send (self, &msg);
        }
        while ((timed = (timed_msg_t *) zlistx_first (self->down)) && timed->due_us <= now) {
            zmsg_t *msg = timed->msg;
            timed->msg = NULL;
            zlistx_delete (self->down, zlistx_cursor (self->down));
            s_device_deliver (self, &msg);
        }
        if (self->relink_at && zclock_mono () >= self->relink_at)
            s_device_relink (self);
        if (self->link_up && zlistx_size (self->pending))
            s_device_flush_pending (self);
        if (zclock_mono () >= expire_at) {
            s_device_expire (self);
            metrics_gauge (self->metrics, "crypt_proxy_inflight", "role=device",
                           (double) zhashx_size (self->requests));
            expire_at = zclock_mono () + 100;
        }
    }
}

//  ---------------------------------------------------------------------
//  Cloud role

//  One pooled MDP client and the request it carries
typedef struct {
    mdp_client_t *client;       //  to the cloud broker
    bool busy;                  //  a request is out on it
    zframe_t *peer;             //  device proxy's routing id (busy only)
    byte id [LINK_ID_SIZE];     //  the device's request id (busy only)
    int64_t deadline;           //  zclock_mono msecs
} cloud_call_t;

typedef struct {
    zsock_t *pipe;              //  actor pipe
    crypt_proxy_config_t config;    //  copy; strings belong to the caller
    char *broker;               //  owned copy of config.broker
    char *allow;                //  owned copy of config.allow
    zactor_t *auth;             //  zauth actor (ZAP handler)
    zsock_t *router;            //  CURVE server
    zsock_t *monitor;           //  events of router
    cloud_call_t *calls;        //  pool, max_inflight entries
    int ncalls;                 //  entries created
    int max_calls;              //  pool bound
    int timeout_ms;             //  per request
    zhashx_t *allowed;          //  Z85 public keys in the allow dir
    uint64_t allow_signature;   //  listing of the allow dir when last loaded
    int allow_count;            //  certificates in it
    int64_t allow_missed_at;    //  zclock_mono of the last re-read on a miss
    metrics_t *metrics;         //  NULL without --telemetry
    //  statistics
    uint64_t requests, replies, errors, reloads, refused, busy, reconnects;
    int64_t refused_logged_at;  //  zclock_mono of the last refusal log line
    bool terminated;
} cloud_t;

//  A cheap fingerprint of the allow directory: names, sizes, mtimes.
static uint64_t
s_dir_signature (const char *path, int *count_p)
{
    uint64_t hash = 1469598103934665603ULL;     //  FNV-1a
    int count = 0;
    DIR *dir = opendir (path);
    if (!dir)
        return 0;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        if (entry->d_name [0] == '.')
            continue;
        char file [4096];
        snprintf (file, sizeof file, "%s/%s", path, entry->d_name);
        struct stat st;
        if (stat (file, &st) || !S_ISREG (st.st_mode))
            continue;
        count++;
        uint64_t item = 1469598103934665603ULL;
        for (const char *p = entry->d_name; *p; p++)
            item = (item ^ (byte) *p) * 1099511628211ULL;
        item ^= (uint64_t) st.st_size * 0x9E3779B97F4A7C15ULL;
        item ^= ((uint64_t) st.st_mtim.tv_sec * 1000000000ULL + st.st_mtim.tv_nsec)
                * 0xC2B2AE3D27D4EB4FULL;
        hash += item;           //  order-independent: readdir order varies
    }
    closedir (dir);
    if (count_p)
        *count_p = count;
    return hash;
}

//  (Re)loads the allow directory into zauth.
static void
s_cloud_load_allow (cloud_t *self, bool initial)
{
    int count = 0;
    uint64_t signature = s_dir_signature (self->allow, &count);
    if (!initial && signature == self->allow_signature)
        return;
    zstr_sendx (self->auth, "CURVE", self->allow, NULL);
    zsock_wait (self->auth);
    //  The same keys, for checking each request of connections admitted
    //  earlier (ZAP only runs at the handshake).
    zhashx_purge (self->allowed);
    DIR *dir = opendir (self->allow);
    struct dirent *entry;
    while (dir && (entry = readdir (dir))) {
        if (entry->d_name [0] == '.')
            continue;
        char path [4096];
        snprintf (path, sizeof path, "%s/%s", self->allow, entry->d_name);
        zcert_t *cert = zcert_load (path);
        if (cert)
            zhashx_update (self->allowed, zcert_public_txt (cert), self);
        zcert_destroy (&cert);
    }
    if (dir)
        closedir (dir);
    self->allow_signature = signature;
    self->allow_count = count;
    if (!initial)
        self->reloads++;
    zsys_info ("crypt-proxy cloud: allowlist %s %s (%d files, %zu keys)",
               self->allow, initial? "loaded": "reloaded", count, zhashx_size (self->allowed));
}

static void
s_cloud_destroy (cloud_t **self_p)
{
    cloud_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < self->ncalls; i++) {
        mdp_client_destroy (&self->calls [i].client);
        zframe_destroy (&self->calls [i].peer);
    }
    free (self->calls);
    if (self->router)
        zmq_socket_monitor (zsock_resolve (self->router), NULL, 0);
    zsock_destroy (&self->monitor);
    zsock_destroy (&self->router);
    zactor_destroy (&self->auth);
    zhashx_destroy (&self->allowed);
    metrics_destroy (&self->metrics);
    free (self->broker);
    free (self->allow);
    free (self);
    *self_p = NULL;
}

static cloud_t *
s_cloud_new (zsock_t *pipe, const crypt_proxy_config_t *config, char *err, size_t err_size)
{
    cloud_t *self = (cloud_t *) zmalloc (sizeof *self);
    zcert_t *cert = NULL;
    self->pipe = pipe;
    self->config = *config;
    self->broker = strdup (config->broker);
    self->allow = strdup (config->allow);
    self->timeout_ms = config->timeout_ms? config->timeout_ms: CRYPT_TIMEOUT_DEFAULT;
    self->max_calls = config->max_inflight? config->max_inflight: CRYPT_INFLIGHT_DEFAULT;
    self->calls = (cloud_call_t *) zmalloc (sizeof (cloud_call_t) * self->max_calls);
    self->allowed = zhashx_new ();
    if (config->telemetry && *config->telemetry) {
        self->metrics = metrics_new ("crypt-proxy", config->instance, config->telemetry);
        if (!self->metrics) {
            snprintf (err, err_size, "bad telemetry endpoint '%s'", config->telemetry);
            goto failed;
        }
    }

    cert = s_load_secret_cert (config->cert, err, err_size);
    if (!cert)
        goto failed;
    self->auth = zactor_new (zauth, NULL);
    if (!self->auth) {
        snprintf (err, err_size, "cannot start the ZAP handler");
        goto failed;
    }
    if (config->verbose) {
        zstr_send (self->auth, "VERBOSE");
        zsock_wait (self->auth);
    }
    s_cloud_load_allow (self, true);

    self->router = zsock_new (ZMQ_ROUTER);
    zcert_apply (cert, self->router);
    zsock_set_curve_server (self->router, 1);
    zsock_set_zap_domain (self->router, CRYPT_ZAP_DOMAIN);
    zsock_set_router_mandatory (self->router, 1);
    zsock_set_sndtimeo (self->router, 0);
    zsock_set_linger (self->router, 0);
    s_set_heartbeats (self->router, config->link_timeout_ms);
    zsock_set_sndhwm (self->router, 100000);
    zsock_set_rcvhwm (self->router, 100000);
    self->monitor = s_monitor_new (self->router);
    if (!self->monitor) {
        snprintf (err, err_size, "cannot monitor the link socket");
        goto failed;
    }
    if (zsock_bind (self->router, "%s", config->bind) < 0) {
        snprintf (err, err_size, "cannot bind '%s': %s", config->bind, zmq_strerror (errno));
        goto failed;
    }
    zcert_destroy (&cert);
    zsys_info ("crypt-proxy cloud: CURVE server on %s, ZAP domain '%s', forwarding to %s",
               config->bind, CRYPT_ZAP_DOMAIN, config->broker);
    return self;

failed:
    zcert_destroy (&cert);
    s_cloud_destroy (&self);
    return NULL;
}

//  Sends [peer]["SMX1"][cmd][id][body...] to a device proxy. Takes *body_p.
static void
s_cloud_reply (cloud_t *self, zframe_t *peer, const byte *id, char cmd, zmsg_t **body_p)
{
    zmsg_t *msg = *body_p? *body_p: zmsg_new ();
    *body_p = NULL;
    zmsg_pushmem (msg, id, LINK_ID_SIZE);
    zmsg_pushmem (msg, &cmd, 1);
    zmsg_pushstr (msg, CRYPT_LINK_MAGIC);
    size_t bytes = zmsg_content_size (msg);
    zframe_t *copy = zframe_dup (peer);
    zmsg_prepend (msg, &copy);
    if (zmsg_send (&msg, self->router) == 0)
        s_count_bytes (self->metrics, "cloud", "sent", bytes);
    else {
        //  The device proxy is gone (restarted, link dropped); it has
        //  already failed the request on its side.
        if (self->config.verbose)
            zsys_info ("crypt-proxy cloud: device gone, reply dropped");
        zmsg_destroy (&msg);
    }
}

static void
s_cloud_error (cloud_t *self, zframe_t *peer, const byte *id, int status, const char *text)
{
    zmsg_t *body = s_error_body (status, text);
    s_cloud_reply (self, peer, id, LINK_CMD_FINAL, &body);
    self->errors++;
    s_count_final (self->metrics, "cloud", status);
}

//  A request from a device proxy.
static void
s_cloud_request (cloud_t *self)
{
    zmsg_t *msg = zmsg_recv (self->router);
    if (!msg)
        return;
    zframe_t *peer = zmsg_pop (msg);
    s_count_bytes (self->metrics, "cloud", "received", zmsg_content_size (msg));
    zframe_t *magic = zmsg_pop (msg);
    zframe_t *cmd = zmsg_pop (msg);
    zframe_t *idf = zmsg_pop (msg);
    char *service = NULL;
    if (!peer || !magic || !zframe_streq (magic, CRYPT_LINK_MAGIC)
    ||  !cmd || zframe_size (cmd) != 1 || !idf || zframe_size (idf) != LINK_ID_SIZE) {
        //  Without an id there is nobody to answer.
        zsys_warning ("crypt-proxy cloud: malformed link message (no magic/id), dropped");
        goto cleanup;
    }
    const byte *id = zframe_data (idf);
    //  A key removed from the allowlist loses service at once, even on a
    //  connection admitted before (re-read the directory on a miss, so a
    //  key added a moment ago is not refused).
    const char *user = zframe_meta (magic, "User-Id");
    if (!user || !zhashx_lookup (self->allowed, user)) {
        //  At most ten directory scans a second, whatever a revoked
        //  device sends.
        if (zclock_mono () - self->allow_missed_at >= 100) {
            self->allow_missed_at = zclock_mono ();
            s_cloud_load_allow (self, false);
        }
        if (!user || !zhashx_lookup (self->allowed, user)) {
            s_cloud_error (self, peer, id, 403,
                           "crypt-proxy: this device's key is no longer in the allowlist");
            goto cleanup;
        }
    }
    if (zframe_data (cmd) [0] != LINK_CMD_REQUEST) {
        s_cloud_error (self, peer, id, 400, "crypt-proxy: unknown link command");
        goto cleanup;
    }
    zframe_t *svc = zmsg_pop (msg);
    if (!svc || zframe_size (svc) == 0 || zframe_size (svc) > MDP_SERVICE_MAX) {
        zframe_destroy (&svc);
        s_cloud_error (self, peer, id, 400, "crypt-proxy: missing or too long service name");
        goto cleanup;
    }
    service = zframe_strdup (svc);
    zframe_destroy (&svc);
    self->requests++;

    //  An idle pooled client, or a new one while under the bound.
    cloud_call_t *call = NULL;
    for (int i = 0; i < self->ncalls && !call; i++)
        if (!self->calls [i].busy)
            call = &self->calls [i];
    if (!call && self->ncalls < self->max_calls) {
        mdp_client_t *client = mdp_client_new (self->broker);
        if (client) {
            call = &self->calls [self->ncalls++];
            call->client = client;
        }
    }
    if (!call) {
        //  The broker's overload answer: busy, retry after a moment.
        self->busy++;
        s_cloud_error (self, peer, id, 429, "crypt-proxy: busy, cloud proxy at its in-flight bound; retry after");
        goto cleanup;
    }
    call->busy = true;
    call->peer = peer;
    peer = NULL;
    memcpy (call->id, id, LINK_ID_SIZE);
    call->deadline = zclock_mono () + self->timeout_ms;
    mdp_client_send (call->client, service, &msg);

cleanup:
    free (service);
    zframe_destroy (&peer);
    zframe_destroy (&magic);
    zframe_destroy (&cmd);
    zframe_destroy (&idf);
    zmsg_destroy (&msg);
}

static void
s_cloud_call_done (cloud_call_t *call)
{
    call->busy = false;
    zframe_destroy (&call->peer);
}

//  A reply from the cloud broker on pooled client i.
static void
s_cloud_reply_in (cloud_t *self, cloud_call_t *call)
{
    int command = 0;
    zmsg_t *body = mdp_client_recv (call->client, 0, &command, NULL);
    if (!body)
        return;
    if (!call->busy) {          //  late reply after a timeout: not ours
        zmsg_destroy (&body);
        return;
    }
    if (command == MDPC_PARTIAL) {
        call->deadline = zclock_mono () + self->timeout_ms;
        s_cloud_reply (self, call->peer, call->id, LINK_CMD_PARTIAL, &body);
    }
    else {
        s_count_final (self->metrics, "cloud", s_body_status (body));
        s_cloud_reply (self, call->peer, call->id, LINK_CMD_FINAL, &body);
        self->replies++;
        s_cloud_call_done (call);
    }
}

static void
s_cloud_expire (cloud_t *self)
{
    int64_t now = zclock_mono ();
    for (int i = 0; i < self->ncalls; i++) {
        cloud_call_t *call = &self->calls [i];
        if (call->busy && now >= call->deadline) {
            char text [128];
            snprintf (text, sizeof text,
                      "crypt-proxy: no reply from the cloud broker within %d ms", self->timeout_ms);
            s_cloud_error (self, call->peer, call->id, 504, text);
            s_cloud_call_done (call);
            //  A fresh socket, so the late reply is never taken for the
            //  answer to the next request on this client.
            mdp_client_reconnect (call->client);
            self->reconnects++;
            metrics_count (self->metrics, "crypt_proxy_reconnects_total", "role=cloud", 1);
        }
    }
}

static void
s_cloud_monitor (cloud_t *self)
{
    int value = 0;
    int event = s_monitor_recv (self->monitor, &value);
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        //  A refused device retries about once a second: log the first
        //  refusal at once, then a count every 10 s at most.
        self->refused++;
        int64_t now = zclock_mono ();
        if (!self->refused_logged_at || now - self->refused_logged_at >= 10000) {
            zsys_warning ("crypt-proxy cloud: refused a device: key not in %s (ZAP status %d)"
                          "; %" PRIu64 " refusals so far", self->allow, value, self->refused);
            self->refused_logged_at = now;
        }
    }
    else
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        zsys_warning ("crypt-proxy cloud: %s", s_event_name (event));
    else
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && self->config.verbose)
        zsys_info ("crypt-proxy cloud: device admitted");
    else
    if (event == ZMQ_EVENT_DISCONNECTED && self->config.verbose)
        zsys_info ("crypt-proxy cloud: a device disconnected");
}

static void
s_cloud_pipe (cloud_t *self)
{
    char *command = zstr_recv (self->pipe);
    if (!command || streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "STATS")) {
        int busy = 0;
        for (int i = 0; i < self->ncalls; i++)
            busy += self->calls [i].busy? 1: 0;
        zstr_sendf (self->pipe,
            "role=cloud inflight=%d pool=%d requests=%" PRIu64 " replies=%" PRIu64
            " errors=%" PRIu64 " reloads=%" PRIu64 " refused=%" PRIu64 " allowed_files=%d"
            " busy=%" PRIu64 " reconnects=%" PRIu64,
            busy, self->ncalls, self->requests, self->replies, self->errors,
            self->reloads, self->refused, self->allow_count, self->busy, self->reconnects);
    }
    else
    if (streq (command, "ERROR"))
        zstr_send (self->pipe, "");
    else
        zsys_warning ("crypt-proxy: unknown pipe command '%s'", command);
    zstr_free (&command);
}

static void
s_cloud_run (cloud_t *self)
{
    int64_t tick_at = zclock_mono () + 100;
    int64_t allow_at = zclock_mono () + ALLOW_POLL_MS;
    zmq_pollitem_t *items = (zmq_pollitem_t *) zmalloc (sizeof (zmq_pollitem_t) * (3 + self->max_calls));
    cloud_call_t **polled = (cloud_call_t **) zmalloc (sizeof (cloud_call_t *) * self->max_calls);
    while (!self->terminated) {
        items [0] = (zmq_pollitem_t) { zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0 };
        items [1] = (zmq_pollitem_t) { zsock_resolve (self->monitor), 0, ZMQ_POLLIN, 0 };
        items [2] = (zmq_pollitem_t) { zsock_resolve (self->router), 0, ZMQ_POLLIN, 0 };
        int nitems = 3;
        for (int i = 0; i < self->ncalls; i++)
            if (self->calls [i].busy) {
                polled [nitems - 3] = &self->calls [i];
                items [nitems++] = (zmq_pollitem_t) {
                    zsock_resolve (mdp_client_sock (self->calls [i].client)), 0, ZMQ_POLLIN, 0 };
            }
        long wait = (long) (tick_at - zclock_mono ());
        if (zmq_poll (items, nitems, wait < 0? 0: wait) == -1) {
            if (errno == EINTR && !zsys_interrupted)
                continue;
            break;
        }
        if (items [0].revents & ZMQ_POLLIN)
            s_cloud_pipe (self);
        while (zsock_events (self->monitor) & ZMQ_POLLIN)
            s_cloud_monitor (self);
        for (int i = 3; i < nitems; i++)
            if (items [i].revents & ZMQ_POLLIN)
                s_cloud_reply_in (self, polled [i - 3]);
        //  New requests after replies, so a slot freed above is reused.
        for (int n = 0; n < 1000 && (zsock_events (self->router) & ZMQ_POLLIN); n++)
            s_cloud_request (self);
        if (zclock_mono () >= tick_at) {
            s_cloud_expire (self);
            int busy = 0;
            for (int i = 0; i < self->ncalls; i++)
                busy += self->calls [i].busy? 1: 0;
            metrics_gauge (self->metrics, "crypt_proxy_inflight", "role=cloud", (double) busy);
            tick_at = zclock_mono () + 100;
        }
        if (zclock_mono () >= allow_at) {
            s_cloud_load_allow (self, false);
            allow_at = zclock_mono () + ALLOW_POLL_MS;
        }
    }
    free (items);
    free (polled);
}

//  ---------------------------------------------------------------------
//  The actor

void
crypt_proxy_actor (zsock_t *pipe, void *args)
{
    //  The caller's strings may go away after the signal: work on copies.
    crypt_proxy_config_t copy = *(const crypt_proxy_config_t *) args;
    const char **strings [] = { &copy.broker, &copy.cert, &copy.services, &copy.connect,
                                &copy.server_key, &copy.link, &copy.bind, &copy.allow,
                                &copy.telemetry, &copy.instance };
    const size_t nstrings = sizeof strings / sizeof strings [0];
    for (size_t i = 0; i < nstrings; i++)
        if (*strings [i])
            *strings [i] = strdup (*strings [i]);
    const crypt_proxy_config_t *config = &copy;
    char err [512] = "";
    device_t *device = NULL;
    cloud_t *cloud = NULL;
    if (crypt_proxy_config_check (config, err, sizeof err) == 0) {
        if (config->role == CRYPT_ROLE_DEVICE)
            device = s_device_new (pipe, config, err, sizeof err);
        else
            cloud = s_cloud_new (pipe, config, err, sizeof err);
    }
    zsock_signal (pipe, 0);
    if (device) {
        s_device_run (device);
        s_device_destroy (&device);
    }
    else
    if (cloud) {
        s_cloud_run (cloud);
        s_cloud_destroy (&cloud);
    }
    else {
        //  Configuration failed: answer ERROR with the reason, wait for $TERM.
        while (true) {
            char *command = zstr_recv (pipe);
            if (!command || streq (command, "$TERM")) {
                zstr_free (&command);
                break;
            }
            zstr_send (pipe, streq (command, "ERROR")? err: "");
            zstr_free (&command);
        }
    }
    for (size_t i = 0; i < nstrings; i++)
        free ((char *) *strings [i]);
}

zactor_t *
crypt_proxy_new (const crypt_proxy_config_t *config)
{
    zactor_t *actor = zactor_new (crypt_proxy_actor, (void *) config);
    if (!actor)
        return NULL;
    zstr_send (actor, "ERROR");
    char *err = zstr_recv (actor);
    if (!err || *err) {
        zsys_error ("crypt-proxy: %s", err? err: "interrupted");
        zactor_destroy (&actor);
    }
    zstr_free (&err);
    return actor;
}
