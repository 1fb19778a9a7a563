/*  sm_crypt.h: a crypt-proxy test mesh of real processes.

    The curve/zap/capture tests all need the same picture:

      client -> device broker -> device proxy ==CURVE==> cloud proxy -> cloud broker -> echo workers

    each piece a real process on loopback TCP with fast timers, certificates
    made fresh in a temp dir, and every child killed and reaped in fini even
    after a failed assertion. Tests add or remove the device's certificate
    in the allow dir, restart either proxy, or point the device proxy at a
    relay (connect_ep) to tamper with the link.
*/
#ifndef SM_CRYPT_H_INCLUDED
#define SM_CRYPT_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SM_CRYPT_WORKERS_MAX 4

typedef struct {
    char *dir;                      //  temp dir: certs, allow dir, logs
    char log [512];                 //  children's stdout+stderr
    char device_ep [64];            //  tcp://127.0.0.1:P, the device broker
    char cloud_ep [64];             //  the cloud broker
    char link_ep [64];              //  the cloud proxy's CURVE endpoint
    int link_port;                  //  its port
    char allow [512];               //  allow directory
    char server_pub [512];          //  cloud proxy certificate (public)
    char server_secret [512];       //  ... and its secret file
    char device_pub [512];          //  device certificate (public)
    char device_secret [512];       //  ... and its secret file
    pid_t device_broker, cloud_broker, device_proxy, cloud_proxy;
    pid_t worker [SM_CRYPT_WORKERS_MAX];
    int nworkers;
    int cloud_max_inflight;         //  > 0: the cloud proxy's --max-inflight
} sm_crypt_t;

//  Makes the temp dir, picks ports, writes server and device certificates;
//  the device certificate goes into the allow dir when `allowed`.
//  Returns 0 or -1.
int
    sm_crypt_init (sm_crypt_t *self, const char *prefix, bool allowed);

//  Kills and reaps every child, removes the temp dir (kept, with a note on
//  stderr, when SPLITMESH_KEEP_TMP is set).
void
    sm_crypt_fini (sm_crypt_t *self);

//  Starts both brokers. Returns 0 or -1.
int
    sm_crypt_start_brokers (sm_crypt_t *self);

//  Starts an echo worker for "echo" on the cloud broker (capacity 16).
pid_t
    sm_crypt_start_worker (sm_crypt_t *self, const char *name);

//  Starts the cloud proxy (on link_port) / the device proxy (bridging
//  "echo"; connect_ep NULL means link_ep; link_spec NULL means no
//  emulation). timeout_ms is the proxies' reply timeout.
pid_t
    sm_crypt_start_cloud_proxy (sm_crypt_t *self, int timeout_ms);
pid_t
    sm_crypt_start_device_proxy (sm_crypt_t *self, const char *connect_ep,
                                 const char *link_spec, int timeout_ms);

//  Everything above in one go: brokers, `workers` echo workers, both
//  proxies, then waits until the device broker lists the bridged service.
//  Returns 0 or -1.
int
    sm_crypt_start_all (sm_crypt_t *self, int workers, const char *link_spec);

//  One request to "echo" on the device broker with `body` (taken), waiting
//  up to timeout_ms for the FINAL. Counts PARTIALs into *partials_p (may be
//  NULL). Returns the FINAL's body (caller owns it) or NULL on timeout.
zmsg_t *
    sm_crypt_call (sm_crypt_t *self, zmsg_t **body_p, int timeout_ms, int *partials_p);

//  Status of a reply body ("status" key), -1 if absent.
int
    sm_crypt_status (zmsg_t *reply);

//  True if the children's log contains `text`.
bool
    sm_crypt_log_contains (sm_crypt_t *self, const char *text);

//  Calls until a request succeeds (status 200) or timeout_ms passes; each
//  attempt waits up to attempt_ms. Returns the milliseconds it took, or -1.
int
    sm_crypt_wait_ok (sm_crypt_t *self, int timeout_ms, int attempt_ms);

//  `splitmesh up --crypt` meshes (test_curve_up, test_curve_capture): the
//  value of KEY in <run_dir>/mesh.env copied to buf. Returns 0, or -1 when
//  the file or the key is missing.
int
    sm_mesh_env (const char *run_dir, const char *key, char *buf, size_t size);

//  The port of a tcp://host:port endpoint, -1 when there is none.
int
    sm_endpoint_port (const char *endpoint);

#ifdef __cplusplus
}
#endif

#endif
