/*  test_zap_allowlist.c: the cloud proxy's ZAP allowlist, real processes.

    A device whose public certificate is not in the allow directory is
    refused at the CURVE handshake: its requests end in a 503 that says so,
    and the cloud proxy logs the refusal. Copying the certificate into the
    directory admits it within about a second, without restarting anything.
    Removing it refuses new connections (ZAP runs at the handshake; a
    restarted device proxy is a new connection), and the connection that
    was admitted before gets 403 for every request from then on. A device that pins the wrong server key
    never gets a link either.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <unistd.h>
#include "sm_mdp.h"
#include "sm_proc.h"
#include "sm_crypt.h"

static sm_crypt_t s_mesh;

static void
s_init (void)
{
    cr_assert_eq (sm_crypt_init (&s_mesh, "sm-zap", false), 0);
}

static void
s_fini (void)
{
    sm_crypt_fini (&s_mesh);
}

TestSuite (zap_allowlist, .init = s_init, .fini = s_fini, .timeout = 40);

//  One request; returns its status and copies its error text.
static int
s_call_status (char *error, size_t size)
{
    zmsg_t *body = sm_body_new ("zap", -1, -1);
    zmsg_t *reply = sm_crypt_call (&s_mesh, &body, 6000, NULL);
    int status = sm_crypt_status (reply);
    char *text = reply? sm_body_str (reply, "error"): NULL;
    snprintf (error, size, "%s", text? text: "");
    free (text);
    zmsg_destroy (&reply);
    return status;
}

static void
s_allow_device (void)
{
    char path [600];
    snprintf (path, sizeof path, "%s/device", s_mesh.allow);
    zcert_t *cert = zcert_load (s_mesh.device_pub);
    cr_assert_not_null (cert);
    cr_assert_eq (zcert_save_public (cert, path), 0);
    zcert_destroy (&cert);
}

static void
s_disallow_device (void)
{
    char path [600];
    snprintf (path, sizeof path, "%s/device", s_mesh.allow);
    cr_assert_eq (unlink (path), 0);
}

Test (zap_allowlist, refused_then_admitted_then_refused)
{
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);

    //  1. Not in the directory: refused, with an error that says why.
    char error [512];
    int status = s_call_status (error, sizeof error);
    cr_assert_eq (status, 503, "an unknown device got status %d (%s)", status, error);
    cr_assert (strstr (error, "refused"), "error does not say refused: '%s'", error);
    cr_assert (sm_crypt_log_contains (&s_mesh, "refused a device"),
               "the cloud proxy did not log the refusal");

    //  2. Certificate copied in: admitted without a restart.
    pid_t cloud = s_mesh.cloud_proxy;
    int64_t start = zclock_mono ();
    s_allow_device ();
    int took = sm_crypt_wait_ok (&s_mesh, 5000, 1000);
    cr_assert_geq (took, 0, "not admitted after the certificate was added");
    cr_assert_lt (zclock_mono () - start, 3500, "admission took %d ms",
                  (int) (zclock_mono () - start));
    cr_assert (sm_alive (cloud) && s_mesh.cloud_proxy == cloud, "the cloud proxy was restarted");
    cr_assert (sm_crypt_log_contains (&s_mesh, "allowlist "), "no reload logged");

    //  3. Removed: the connection admitted before gets 403 at once (per
    //  request check), and a new connection (restarted device proxy) is
    //  refused at the handshake.
    s_disallow_device ();
    zclock_sleep (1500);        //  one reload period and a margin
    status = s_call_status (error, sizeof error);
    cr_assert_eq (status, 403, "a removed key on its old connection got %d (%s)", status, error);
    cr_assert (strstr (error, "no longer in the allowlist"), "error: '%s'", error);
    sm_kill (s_mesh.device_proxy, SIGKILL, 1000);
    cr_assert_gt (sm_crypt_start_device_proxy (&s_mesh, NULL, NULL, 5000), 0);
    cr_assert (sm_mdp_wait_workers (s_mesh.device_ep, "echo", 1, 5000));
    status = s_call_status (error, sizeof error);
    cr_assert_eq (status, 503, "a removed device got status %d (%s)", status, error);
    cr_assert (strstr (error, "refused"), "error: '%s'", error);
}

Test (zap_allowlist, wrong_server_key_gets_no_link)
{
    //  The device pins a key that is not the server's: no handshake can
    //  succeed (a man in the middle would look like this).
    char path [600];
    snprintf (path, sizeof path, "%s/device", s_mesh.allow);
    zcert_t *device = zcert_load (s_mesh.device_pub);
    cr_assert_eq (zcert_save_public (device, path), 0);     //  the device is allowed
    zcert_destroy (&device);
    //  A path with no _secret twin: zcert_load prefers NAME_secret.
    snprintf (s_mesh.server_pub, sizeof s_mesh.server_pub, "%s/impostor", s_mesh.dir);
    zcert_t *other = zcert_new ();
    cr_assert_eq (zcert_save_public (other, s_mesh.server_pub), 0);
    zcert_destroy (&other);
    cr_assert_eq (sm_crypt_start_all (&s_mesh, 1, NULL), 0);
    char error [512];
    int status = s_call_status (error, sizeof error);
    cr_assert_eq (status, 503, "status %d (%s)", status, error);
    cr_assert (strstr (error, "link to the cloud is down"), "error: '%s'", error);
    cr_assert (!sm_crypt_log_contains (&s_mesh, "up (CURVE"), "a link came up with a wrong server key");
}
