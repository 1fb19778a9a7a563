/*  crypt_proxy.h: the crypt-proxy, bridging MDP services across an
    untrusted link with CurveZMQ and a ZAP allowlist of device keys.

    A pair of proxies carries requests for named services from the device
    broker to the cloud broker:

      device broker --MDP--> [device proxy] ==CURVE tcp==> [cloud proxy] --MDP--> cloud broker

    - Device role: an MDP worker (with the capacity extension, so many
      requests are in flight at once) for each bridged service on the device
      broker, and a CURVE client (DEALER) of the cloud proxy. It pins the
      server's public key. Every request crosses the link tagged with a
      64-bit request id; PARTIALs and the FINAL come back with that id and go
      to the MDP client that asked. A request whose answer does not come
      back gets an error FINAL, never silence: 503 at once when the link is
      down or drops while the request is out, 504 after timeout_ms.
      A corrupted message on the link is rejected by CurveZMQ; libzmq 4.3
      does not always close the TCP connection then, so ZMTP heartbeats
      (link_timeout_ms) find the dead link, and the device proxy rebuilds
      its socket (libzmq never reconnects after a protocol error).
      The optional link emulator (link_emu.h) delays, throttles and drops
      link messages in both directions, on the plaintext side.
    - Cloud role: a CURVE server (ROUTER) with a ZAP handler (CZMQ zauth)
      that admits only client keys whose certificates are in the allow
      directory; the directory is re-read when it changes (checked every
      second), so adding or removing a certificate needs no restart. ZAP
      runs at the handshake only, so each request is also checked against
      the directory's keys (the ZAP User-Id is the client's public key): a
      removed key gets 403 on a connection that was admitted before.
      Each request is sent to the cloud broker from a pooled mdp_client (MDP
      replies carry no id, so one request per client socket at a time); the
      pool is bounded by max_inflight, beyond which requests get 429
      "busy, retry after" with retry_after_ms (as the broker answers).
    - Both roles publish metrics (core/metrics.h) when given the telemetry
      endpoint, all named splitmesh_crypt_proxy_* with a `role` label:
        requests_total{role,status}     FINALs sent back, by status
        errors_total{role,status}       those with status >= 400
        link_bytes_total{role,direction=sent|received}
                                        link message payload bytes (the
                                        plaintext before CURVE, which adds
                                        about 33 bytes per frame)
        inflight{role}                  requests out (gauge)
        reconnects_total{role}          device: link socket rebuilt; cloud:
                                        pooled broker client reconnected

    Link message frames (after the ROUTER's peer id on the cloud side):

      device -> cloud   ["SMX1"]["R"][id: 8 bytes, big-endian][service][body...]
      cloud -> device   ["SMX1"]["P" | "F"][id][body...]

    Bodies are MDP bodies, passed through untouched, so the cloud broker's
    session-affine routing sees the same "session" key the device sent.
*/
#ifndef CRYPT_PROXY_H_INCLUDED
#define CRYPT_PROXY_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRYPT_LINK_MAGIC        "SMX1"
#define CRYPT_ZAP_DOMAIN        "splitmesh"
#define CRYPT_TIMEOUT_DEFAULT   30000   //  msecs without an answer before 504
#define CRYPT_CAPACITY_DEFAULT  64      //  requests in flight per bridged service
#define CRYPT_INFLIGHT_DEFAULT  256     //  cloud: requests in flight, all devices
#define CRYPT_SERVICES_MAX      16
#define CRYPT_LINK_TIMEOUT_DEFAULT 3000 //  msecs of link silence before it is dead
#define CRYPT_RETRY_AFTER_MS    250     //  the 429 busy answer's retry_after_ms

typedef enum { CRYPT_ROLE_DEVICE = 1, CRYPT_ROLE_CLOUD = 2 } crypt_role_t;

//  Everything both roles need; strings are copied by the actor before it
//  signals, so the caller may free them afterwards.
typedef struct {
    crypt_role_t role;
    const char *broker;         //  MDP broker endpoint (device or cloud)
    const char *cert;           //  own certificate, with its secret key
                                //  (zcert file; "name" or "name_secret")
    //  device role
    const char *services;       //  comma-separated services to bridge
    const char *connect;        //  cloud proxy endpoint, tcp://host:port
    const char *server_key;     //  the cloud proxy's public certificate file
    const char *link;           //  link emulation spec (link_emu.h), or NULL
    int capacity;               //  0: CRYPT_CAPACITY_DEFAULT
    //  cloud role
    const char *bind;           //  CURVE endpoint to bind, tcp://*:7100
    const char *allow;          //  directory of allowed client certificates
    int max_inflight;           //  0: CRYPT_INFLIGHT_DEFAULT
    //  both
    int timeout_ms;             //  0: CRYPT_TIMEOUT_DEFAULT
    int heartbeat_ms;           //  MDP heartbeats with the broker; 0: default
    int link_timeout_ms;        //  CURVE link declared dead after this much
                                //  silence (ZMTP heartbeats every third of
                                //  it); 0: CRYPT_LINK_TIMEOUT_DEFAULT
    const char *telemetry;      //  telemetry XSUB endpoint, or NULL: no metrics
    const char *instance;       //  metrics instance name, or NULL
    bool verbose;
} crypt_proxy_config_t;

//  The proxy actor; args is a crypt_proxy_config_t *. Signals 0 once its
//  sockets are up, or -1 (after logging why) when the configuration is bad:
//  missing or unreadable certificate, bad endpoint, bad link spec. "$TERM"
//  stops it. Further commands on the pipe:
//      "STATS" -> replies with one string frame of "key=value" pairs:
//                 device: inflight, link_up, sent, replies, errors, lost
//                 cloud: inflight, pool, requests, replies, errors, reloads
zactor_t *
    crypt_proxy_new (const crypt_proxy_config_t *config);

void
    crypt_proxy_actor (zsock_t *pipe, void *args);

//  Checks a configuration without starting anything. Returns 0, or -1
//  with a one-line reason in err.
int
    crypt_proxy_config_check (const crypt_proxy_config_t *config,
                              char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
