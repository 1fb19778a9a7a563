/*  mdp_client.h: the MDP/0.2 client API (RFC 18, MDPC02, DEALER socket).

    A client sends a REQUEST to a service through the broker and receives
    zero or more PARTIALs and one FINAL. Two ways to use it:

    - mdp_client_request: synchronous, with a per-attempt timeout and
      retries. When an attempt times out (broker gone, worker stuck) the
      client closes its socket, waits a growing back-off, opens a fresh
      socket and sends the request again (Lazy/Paranoid Pirate). Late
      replies to the old socket are thereby discarded, never mistaken for
      the answer to a later request.
    - mdp_client_send + mdp_client_recv: asynchronous, for streaming
      (PARTIALs) and for zpoller loops over mdp_client_sock.

    Broker errors (no worker before the expiry, malformed request, queue
    full) arrive as a FINAL whose body is {"v":1,"status":4xx|5xx,"error":...}.

    A lost broker connection (the broker restarted or the link dropped)
    loses every reply in flight: the broker's ROUTER drops messages to the
    old connection. The client watches its socket (a ZMQ monitor) and says
    so at once instead of letting the caller wait out its timeout:
    mdp_client_recv returns NULL and mdp_client_lost is true; a caller that
    turned mdp_client_set_keep_for_resend on may then mdp_client_resend the
    last request (off by default: keeping it costs a copy of every body).
*/
#ifndef MDP_CLIENT_H_INCLUDED
#define MDP_CLIENT_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _mdp_client_t mdp_client_t;

//  Creates a client connected to the broker at `endpoint`. Returns NULL if
//  the endpoint is invalid. Caller owns the result and must destroy it.
mdp_client_t *
    mdp_client_new (const char *endpoint);

//  Closes the socket and frees the client. Nullifies *self_p.
void
    mdp_client_destroy (mdp_client_t **self_p);

//  Per-attempt timeout of mdp_client_request, msecs (default 2500).
void
    mdp_client_set_timeout (mdp_client_t *self, int timeout_ms);

//  Attempts after the first in mdp_client_request (default 2).
void
    mdp_client_set_retries (mdp_client_t *self, int retries);

//  Back-off before each retry: starts at initial_ms, doubles up to max_ms
//  (defaults 250 and 8000).
void
    mdp_client_set_backoff (mdp_client_t *self, int initial_ms, int max_ms);

//  Logs every command sent and received.
void
    mdp_client_set_verbose (mdp_client_t *self, bool verbose);

//  Keeps a copy of each request body mdp_client_send sends, so that
//  mdp_client_resend can send it again (default off: most callers never
//  resend, and the copy doubles the memory of large bodies). Turning it
//  off drops the copy kept so far.
void
    mdp_client_set_keep_for_resend (mdp_client_t *self, bool keep);

//  Sends a REQUEST for `service`. Takes ownership of *body_p and nullifies
//  it (NULL or an empty message sends one empty body frame, as RFC 18
//  requires at least one). Returns 0, or -1 if the arguments are invalid.
int
    mdp_client_send (mdp_client_t *self, const char *service, zmsg_t **body_p);

//  Sends a REQUEST whose body is one frame holding a copy of `size` bytes
//  at `data` (a MessagePack map, typically). Returns 0 or -1.
int
    mdp_client_send_mem (mdp_client_t *self, const char *service,
                         const void *data, size_t size);

//  Waits up to timeout_ms (-1: forever) for a PARTIAL or FINAL. Returns the
//  reply body and sets *command_p to MDPC_PARTIAL or MDPC_FINAL and, if
//  service_p is not NULL, *service_p to a fresh copy of the service name.
//  Caller owns the body and the name. Returns NULL on timeout, interrupt,
//  or a malformed message (which is logged and dropped).
zmsg_t *
    mdp_client_recv (mdp_client_t *self, int timeout_ms, int *command_p, char **service_p);

//  True when the broker connection dropped after the last send: replies to
//  requests in flight are lost (the socket reconnects by itself).
bool
    mdp_client_lost (mdp_client_t *self);

//  Sends the last request (service and body of the last mdp_client_send)
//  again, on a fresh socket so no late reply of the first attempt can
//  arrive. Needs mdp_client_set_keep_for_resend on before that send.
//  Returns 0, or -1 (and logs why) when keeping is off, nothing was sent
//  since it was turned on, or sending fails.
int
    mdp_client_resend (mdp_client_t *self);

//  Sends a REQUEST and waits for its FINAL, retrying as described above.
//  PARTIALs are skipped but each one restarts the attempt's timer, since
//  they show that the service is working. Takes ownership of *body_p.
//  An attempt also ends early when the broker connection drops.
//  Returns the FINAL's body (caller owns it), or NULL after the last
//  attempt timed out.
zmsg_t *
    mdp_client_request (mdp_client_t *self, const char *service, zmsg_t **body_p);

//  Closes the socket and opens a new one to the same endpoint. Replies
//  still on their way to the old socket are lost. Returns 0 or -1.
int
    mdp_client_reconnect (mdp_client_t *self);

//  The DEALER socket, for zpoller/zloop. The client owns it. It changes on
//  mdp_client_reconnect and when mdp_client_request retries: fetch it
//  again after either.
zsock_t *
    mdp_client_sock (mdp_client_t *self);

//  How many times the client opened a socket (1 + reconnects).
int
    mdp_client_connects (mdp_client_t *self);

#ifdef __cplusplus
}
#endif

#endif
