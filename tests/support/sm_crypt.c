/*  sm_crypt.c: the crypt-proxy test mesh. See sm_crypt.h. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "mdp_common.h"
#include "mdp_client.h"
#include "sm_mdp.h"
#include "sm_proc.h"
#include "sm_crypt.h"

#define SM_HEARTBEAT "200"          //  MDP heartbeats, msecs
#define SM_LINK_TIMEOUT "1500"      //  CURVE link silence before it is dead

static int
s_write_cert (const char *pub, const char *secret)
{
    zcert_t *cert = zcert_new ();
    if (!cert)
        return -1;
    int rc = zcert_save_public (cert, pub) || zcert_save_secret (cert, secret)? -1: 0;
    zcert_destroy (&cert);
    return rc;
}

int
sm_crypt_init (sm_crypt_t *self, const char *prefix, bool allowed)
{
    memset (self, 0, sizeof *self);
    self->dir = sm_tmpdir_new (prefix);
    if (!self->dir)
        return -1;
    snprintf (self->log, sizeof self->log, "%s/children.log", self->dir);
    snprintf (self->allow, sizeof self->allow, "%s/allow", self->dir);
    snprintf (self->server_pub, sizeof self->server_pub, "%s/server", self->dir);
    snprintf (self->server_secret, sizeof self->server_secret, "%s/server_secret", self->dir);
    snprintf (self->device_pub, sizeof self->device_pub, "%s/device", self->dir);
    snprintf (self->device_secret, sizeof self->device_secret, "%s/device_secret", self->dir);
    if (mkdir (self->allow, 0700))
        return -1;
    if (s_write_cert (self->server_pub, self->server_secret)
    ||  s_write_cert (self->device_pub, self->device_secret))
        return -1;
    if (allowed) {
        char path [600];
        snprintf (path, sizeof path, "%s/device", self->allow);
        zcert_t *cert = zcert_load (self->device_pub);
        int rc = cert? zcert_save_public (cert, path): -1;
        zcert_destroy (&cert);
        if (rc)
            return -1;
    }
    int ports [3];
    for (int i = 0; i < 3; i++) {
        ports [i] = sm_free_tcp_port ();
        if (ports [i] <= 0)
            return -1;
    }
    snprintf (self->device_ep, sizeof self->device_ep, "tcp://127.0.0.1:%d", ports [0]);
    snprintf (self->cloud_ep, sizeof self->cloud_ep, "tcp://127.0.0.1:%d", ports [1]);
    self->link_port = ports [2];
    snprintf (self->link_ep, sizeof self->link_ep, "tcp://127.0.0.1:%d", ports [2]);
    return 0;
}

void
sm_crypt_fini (sm_crypt_t *self)
{
    //  Proxies get a graceful stop first, so a sanitizer build reports
    //  their leaks into the log; everything left is SIGKILLed.
    if (self->device_proxy > 0 && sm_alive (self->device_proxy))
        sm_kill (self->device_proxy, SIGTERM, 2000);
    if (self->cloud_proxy > 0 && sm_alive (self->cloud_proxy))
        sm_kill (self->cloud_proxy, SIGTERM, 2000);
    if (getenv ("SPLITMESH_CRYPT_LOG_DUMP")) {
        char command [700];
        snprintf (command, sizeof command, "cat '%s' >&2", self->log);
        if (system (command) != 0)
            fprintf (stderr, "cannot show %s\n", self->log);
    }
    sm_proc_kill_all ();
    if (!self->dir)
        return;
    if (getenv ("SPLITMESH_KEEP_TMP")) {
        fprintf (stderr, "crypt test files kept in %s\n", self->dir);
        free (self->dir);
        self->dir = NULL;
    }
    else
        sm_tmpdir_remove (&self->dir);
}

int
sm_crypt_start_brokers (sm_crypt_t *self)
{
    self->device_broker = sm_spawn (self->log, "splitmesh-broker", "-e", self->device_ep,
                                    "--heartbeat-ms", SM_HEARTBEAT, "--expiry-ms", "3000", NULL);
    self->cloud_broker = sm_spawn (self->log, "splitmesh-broker", "-e", self->cloud_ep,
                                   "--heartbeat-ms", SM_HEARTBEAT, "--expiry-ms", "3000", NULL);
    return self->device_broker > 0 && self->cloud_broker > 0? 0: -1;
}

pid_t
sm_crypt_start_worker (sm_crypt_t *self, const char *name)
{
    pid_t pid = sm_spawn (self->log, "splitmesh-test-echo-worker", "-e", self->cloud_ep,
                          "-s", "echo", "-n", name, "--capacity", "16",
                          "--heartbeat-ms", SM_HEARTBEAT, "--reconnect-ms", "50",
                          "--reconnect-max-ms", "400", NULL);
    if (pid > 0 && self->nworkers < SM_CRYPT_WORKERS_MAX)
        self->worker [self->nworkers++] = pid;
    return pid;
}

pid_t
sm_crypt_start_cloud_proxy (sm_crypt_t *self, int timeout_ms)
{
    char timeout [32], inflight [32];
    snprintf (timeout, sizeof timeout, "%d", timeout_ms);
    snprintf (inflight, sizeof inflight, "%d", self->cloud_max_inflight);
    self->cloud_proxy = sm_spawn (self->log, "splitmesh-crypt-proxy", "--role", "cloud",
                                  "--bind", self->link_ep, "--cert", self->server_secret,
                                  "--allow", self->allow, "--broker", self->cloud_ep,
                                  "--timeout-ms", timeout, "--heartbeat-ms", SM_HEARTBEAT,
                                  "--link-timeout-ms", SM_LINK_TIMEOUT,
                                  "--max-inflight", inflight, NULL);
    return self->cloud_proxy;
}

pid_t
sm_crypt_start_device_proxy (sm_crypt_t *self, const char *connect_ep, const char *link_spec,
                             int timeout_ms)
{
    char timeout [32];
    snprintf (timeout, sizeof timeout, "%d", timeout_ms);
    char *argv [32];
    int argc = 0;
    argv [argc++] = "splitmesh-crypt-proxy";
    argv [argc++] = "--role";       argv [argc++] = "device";
    argv [argc++] = "--broker";     argv [argc++] = self->device_ep;
    argv [argc++] = "--services";   argv [argc++] = "echo";
    argv [argc++] = "--connect";    argv [argc++] = (char *) (connect_ep? connect_ep: self->link_ep);
    argv [argc++] = "--server-key"; argv [argc++] = self->server_pub;
    argv [argc++] = "--cert";       argv [argc++] = self->device_secret;
    argv [argc++] = "--timeout-ms"; argv [argc++] = timeout;
    argv [argc++] = "--heartbeat-ms"; argv [argc++] = SM_HEARTBEAT;
    argv [argc++] = "--link-timeout-ms"; argv [argc++] = SM_LINK_TIMEOUT;
    if (link_spec) {
        argv [argc++] = "--link";   argv [argc++] = (char *) link_spec;
    }
    argv [argc] = NULL;
    self->device_proxy = sm_spawnv (self->log, "splitmesh-crypt-proxy", argv);
    return self->device_proxy;
}

int
sm_crypt_start_all (sm_crypt_t *self, int workers, const char *link_spec)
{
    if (sm_crypt_start_brokers (self))
        return -1;
    for (int i = 0; i < workers; i++) {
        char name [16];
        snprintf (name, sizeof name, "w%d", i + 1);
        if (sm_crypt_start_worker (self, name) <= 0)
            return -1;
    }
    if (sm_crypt_start_cloud_proxy (self, 5000) <= 0
    ||  sm_crypt_start_device_proxy (self, NULL, link_spec, 5000) <= 0)
        return -1;
    if (workers > 0 && !sm_mdp_wait_workers (self->cloud_ep, "echo", workers, 5000))
        return -1;
    return sm_mdp_wait_workers (self->device_ep, "echo", 1, 5000)? 0: -1;
}

zmsg_t *
sm_crypt_call (sm_crypt_t *self, zmsg_t **body_p, int timeout_ms, int *partials_p)
{
    mdp_client_t *client = mdp_client_new (self->device_ep);
    if (!client) {
        zmsg_destroy (body_p);
        return NULL;
    }
    if (partials_p)
        *partials_p = 0;
    zmsg_t *final = NULL;
    if (mdp_client_send (client, "echo", body_p) == 0) {
        int64_t deadline = zclock_mono () + timeout_ms;
        while (!final) {
            int64_t left = deadline - zclock_mono ();
            if (left <= 0)
                break;
            int command = 0;
            zmsg_t *reply = mdp_client_recv (client, (int) left, &command, NULL);
            if (!reply)
                break;
            if (command == MDPC_FINAL)
                final = reply;
            else {
                if (partials_p)
                    (*partials_p)++;
                zmsg_destroy (&reply);
            }
        }
    }
    zmsg_destroy (body_p);
    mdp_client_destroy (&client);
    return final;
}

int
sm_crypt_status (zmsg_t *reply)
{
    int64_t status = -1;
    if (!reply || sm_body_int (reply, "status", &status))
        return -1;
    return (int) status;
}

bool
sm_crypt_log_contains (sm_crypt_t *self, const char *text)
{
    FILE *file = fopen (self->log, "r");
    if (!file)
        return false;
    bool found = false;
    char line [4096];
    while (!found && fgets (line, sizeof line, file))
        found = strstr (line, text) != NULL;
    fclose (file);
    return found;
}

int
sm_crypt_wait_ok (sm_crypt_t *self, int timeout_ms, int attempt_ms)
{
    int64_t start = zclock_mono ();
    while (zclock_mono () - start < timeout_ms) {
        zmsg_t *body = sm_body_new ("wait-ok", -1, -1);
        zmsg_t *reply = sm_crypt_call (self, &body, attempt_ms, NULL);
        int status = sm_crypt_status (reply);
        zmsg_destroy (&reply);
        if (status == 200)
            return (int) (zclock_mono () - start);
        zclock_sleep (50);
    }
    return -1;
}

int
sm_mesh_env (const char *run_dir, const char *key, char *buf, size_t size)
{
    char path [1024], line [4096];
    snprintf (path, sizeof path, "%s/mesh.env", run_dir);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    int rc = -1;
    size_t keylen = strlen (key);
    while (rc && fgets (line, sizeof line, file)) {
        if (strncmp (line, key, keylen) || line [keylen] != '=' || line [keylen + 1] != '\'')
            continue;
        char *value = line + keylen + 2;
        char *end = strrchr (value, '\'');
        if (!end)
            continue;
        *end = '\0';
        snprintf (buf, size, "%s", value);
        rc = 0;
    }
    fclose (file);
    return rc;
}

int
sm_endpoint_port (const char *endpoint)
{
    const char *colon = endpoint && strncmp (endpoint, "tcp://", 6) == 0? strrchr (endpoint, ':'): NULL;
    int port = colon? atoi (colon + 1): -1;
    return port > 0 && port < 65536? port: -1;
}
