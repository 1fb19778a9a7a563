/*  sm_mdp.c: echo worker actor, MessagePack bodies and readiness for tests.

    See sm_mdp.h. Bodies are read with msgpack-c only after mdp_body_peek
    has checked their bounds, so a broken reply fails the test instead of
    crashing it.
*/
#include <msgpack.h>
#include "mdp_common.h"
#include "mdp_session.h"
#include "mdp_client.h"
#include "mdp_worker.h"
#include "sm_mdp.h"

typedef struct {
    zframe_t *client;           //  who asked
    zmsg_t *reply;              //  FINAL body, ready
    int partials;               //  PARTIALs to send first
    int64_t due;                //  when to answer
} s_pending_t;

//  Finds `key` in a validated map frame; returns the unpacked object in
//  *result (which the caller destroys) or false.
static bool
s_lookup (zframe_t *frame, const char *key, msgpack_unpacked *result, msgpack_object **value)
{
    char session [MDP_SESSION_MAX + 1];
    if (!frame || mdp_body_peek (zframe_data (frame), zframe_size (frame),
                                 session, NULL, 0) != MDP_BODY_MAP)
        return false;
    msgpack_unpacked_init (result);
    if (msgpack_unpack_next (result, (const char *) zframe_data (frame),
                             zframe_size (frame), NULL) != MSGPACK_UNPACK_SUCCESS
    ||  result->data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy (result);
        return false;
    }
    msgpack_object_map *map = &result->data.via.map;
    size_t klen = strlen (key);
    for (uint32_t i = 0; i < map->size; i++) {
        msgpack_object *k = &map->ptr [i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen
        &&  memcmp (k->via.str.ptr, key, klen) == 0) {
            *value = &map->ptr [i].val;
            return true;
        }
    }
    msgpack_unpacked_destroy (result);
    return false;
}

char *
sm_body_str (zmsg_t *body, const char *key)
{
    msgpack_unpacked result;
    msgpack_object *value = NULL;
    if (!body || !s_lookup (zmsg_first (body), key, &result, &value))
        return NULL;
    char *copy = NULL;
    if (value->type == MSGPACK_OBJECT_STR) {
        copy = (char *) malloc (value->via.str.size + 1);
        memcpy (copy, value->via.str.ptr, value->via.str.size);
        copy [value->via.str.size] = '\0';
    }
    msgpack_unpacked_destroy (&result);
    return copy;
}

int
sm_body_int (zmsg_t *body, const char *key, int64_t *value_p)
{
    msgpack_unpacked result;
    msgpack_object *value = NULL;
    if (!body || !s_lookup (zmsg_first (body), key, &result, &value))
        return -1;
    int rc = 0;
    if (value->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *value_p = (int64_t) value->via.u64;
    else
    if (value->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *value_p = value->via.i64;
    else
        rc = -1;
    msgpack_unpacked_destroy (&result);
    return rc;
}

zmsg_t *
sm_body_new (const char *session, int delay_ms, int partials)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 1 + (session? 1: 0) + (delay_ms >= 0? 1: 0) + (partials >= 0? 1: 0));
    msgpack_pack_str_with_body (&pk, "v", 1);
    msgpack_pack_int (&pk, 1);
    if (session) {
        msgpack_pack_str_with_body (&pk, "session", 7);
        msgpack_pack_str_with_body (&pk, session, strlen (session));
    }
    if (delay_ms >= 0) {
        msgpack_pack_str_with_body (&pk, "delay_ms", 8);
        msgpack_pack_int (&pk, delay_ms);
    }
    if (partials >= 0) {
        msgpack_pack_str_with_body (&pk, "partials", 8);
        msgpack_pack_int (&pk, partials);
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy (&sbuf);
    return msg;
}

static zmsg_t *
s_echo_body (const char *name, int status, const char *key, int64_t number,
             zframe_t *echo)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, echo? 5: 4);
    msgpack_pack_str_with_body (&pk, "v", 1);
    msgpack_pack_int (&pk, 1);
    msgpack_pack_str_with_body (&pk, "status", 6);
    msgpack_pack_int (&pk, status);
    msgpack_pack_str_with_body (&pk, "worker", 6);
    msgpack_pack_str_with_body (&pk, name, strlen (name));
    msgpack_pack_str_with_body (&pk, key, strlen (key));
    msgpack_pack_int64 (&pk, number);
    if (echo) {
        msgpack_pack_str_with_body (&pk, "echo", 4);
        msgpack_pack_bin_with_body (&pk, zframe_data (echo), zframe_size (echo));
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy (&sbuf);
    return msg;
}

static void
s_pending_send (mdp_worker_t *worker, const char *name, s_pending_t *pending)
{
    for (int i = 0; i < pending->partials; i++) {
        zmsg_t *part = s_echo_body (name, 206, "part", i, NULL);
        mdp_worker_send_partial (worker, pending->client, &part);
    }
    mdp_worker_send_final (worker, pending->client, &pending->reply);
    zframe_destroy (&pending->client);
    free (pending);
}

void
sm_echo_worker_actor (zsock_t *pipe, void *args)
{
    sm_echo_config_t config = *(sm_echo_config_t *) args;
    char *name = strdup (config.name? config.name: "echo");
    mdp_worker_options_t options = {
        .heartbeat_ms = config.heartbeat_ms, .liveness = config.liveness,
        .reconnect_ms = config.reconnect_ms, .reconnect_max_ms = config.reconnect_max_ms,
        .capacity = config.capacity, .verbose = config.verbose
    };
    mdp_worker_t *worker = mdp_worker_new (config.endpoint, config.service, &options);
    zsock_signal (pipe, worker? 0: 1);
    zlistx_t *pending = zlistx_new ();
    int64_t seq = 0;
    bool terminated = !worker;
    if (!worker) {                  //  wait for $TERM as actors must
        char *command = zstr_recv (pipe);
        zstr_free (&command);
    }
    while (!terminated) {
        //  Next due answer bounds the wait.
        int64_t now = zclock_mono ();
        long timeout = -1;
        s_pending_t *p = (s_pending_t *) zlistx_first (pending);
        while (p) {
            long left = p->due > now? (long) (p->due - now): 0;
            if (timeout < 0 || left < timeout)
                timeout = left;
            p = (s_pending_t *) zlistx_next (pending);
        }
        zmq_pollitem_t items [2] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (mdp_worker_sock (worker)), 0, ZMQ_POLLIN, 0 }
        };
        if (zmq_poll (items, 2, timeout) == -1) {
            if (errno == EINTR && !zsys_interrupted)
                continue;
            break;
        }
        if (items [0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (pipe);
            terminated = !command || streq (command, "$TERM");
            zstr_free (&command);
        }
        if (items [1].revents & ZMQ_POLLIN) {
            zframe_t *client = NULL;
            zmsg_t *body = mdp_worker_recv (worker, 0, &client);
            if (body) {
                int64_t delay = config.delay_ms, partials = config.partials;
                sm_body_int (body, "delay_ms", &delay);
                sm_body_int (body, "partials", &partials);
                s_pending_t *item = (s_pending_t *) zmalloc (sizeof (s_pending_t));
                item->client = client;
                item->partials = partials > 0 && partials < 1000? (int) partials: 0;
                item->due = zclock_mono () + (delay > 0? delay: 0);
                item->reply = s_echo_body (name, 200, "seq", ++seq, zmsg_first (body));
                zlistx_add_end (pending, item);
                zmsg_destroy (&body);
            }
        }
        //  Answer everything that is due.
        now = zclock_mono ();
        p = (s_pending_t *) zlistx_first (pending);
        while (p) {
            void *handle = zlistx_cursor (pending);
            s_pending_t *next = (s_pending_t *) zlistx_next (pending);
            if (p->due <= now) {
                zlistx_delete (pending, handle);
                s_pending_send (worker, name, p);
            }
            p = next;
        }
    }
    s_pending_t *p = (s_pending_t *) zlistx_first (pending);
    while (p) {
        zframe_destroy (&p->client);
        zmsg_destroy (&p->reply);
        free (p);
        p = (s_pending_t *) zlistx_next (pending);
    }
    zlistx_destroy (&pending);
    mdp_worker_destroy (&worker);
    free (name);
}

zmsg_t *
sm_mdp_call (const char *endpoint, const char *service, zmsg_t **body_p, int timeout_ms)
{
    mdp_client_t *client = mdp_client_new (endpoint);
    if (!client) {
        zmsg_destroy (body_p);
        return NULL;
    }
    mdp_client_set_timeout (client, timeout_ms);
    mdp_client_set_retries (client, 0);
    zmsg_t *reply = mdp_client_request (client, service, body_p);
    mdp_client_destroy (&client);
    return reply;
}

bool
sm_mdp_wait_workers (const char *endpoint, const char *service, int workers, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (zclock_mono () < deadline) {
        zmsg_t *body = zmsg_new ();
        zmsg_addstr (body, service);
        zmsg_t *reply = sm_mdp_call (endpoint, "mmi.workers", &body, 500);
        char *count = reply? zmsg_popstr (reply): NULL;
        bool ok = count && atoi (count) >= workers;
        zstr_free (&count);
        zmsg_destroy (&reply);
        if (ok)
            return true;
        zclock_sleep (20);
    }
    return false;
}
