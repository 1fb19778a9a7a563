/*  test_curve_keygen.c: `splitmesh keygen` and the proxy's key checks.

    keygen must write a zcert pair the proxy can use (public file without
    the secret, secret file private to its owner), refuse to overwrite a
    key, and the proxy must refuse, with a clear message and exit status,
    a certificate without its secret key or a missing allow directory.
*/
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <czmq.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "sm_proc.h"

static char *s_dir;
static char s_log [512];

static void
s_init (void)
{
    s_dir = sm_tmpdir_new ("sm-curve-keygen");
    cr_assert_not_null (s_dir);
    snprintf (s_log, sizeof s_log, "%s/out.log", s_dir);
}

static void
s_fini (void)
{
    sm_proc_kill_all ();
    sm_tmpdir_remove (&s_dir);
}

TestSuite (curve_keygen, .init = s_init, .fini = s_fini, .timeout = 30);

static int
s_run (const char *program, char *const argv [])
{
    pid_t pid = sm_spawnv (s_log, program, argv);
    cr_assert_gt (pid, 0);
    int status = 0;
    cr_assert_eq (sm_wait (pid, 10000, &status), 0, "%s did not exit", program);
    return WIFEXITED (status)? WEXITSTATUS (status): -1;
}

static bool
s_log_contains (const char *text)
{
    zfile_t *file = zfile_new (NULL, s_log);
    zchunk_t *chunk = file && zfile_input (file) == 0? zfile_read (file, zfile_cursize (file), 0): NULL;
    bool found = chunk && memmem (zchunk_data (chunk), zchunk_size (chunk), text, strlen (text));
    zchunk_destroy (&chunk);
    zfile_destroy (&file);
    return found;
}

Test (curve_keygen, writes_a_usable_pair)
{
    char out [600], secret [600];
    snprintf (out, sizeof out, "%s/dev1", s_dir);
    snprintf (secret, sizeof secret, "%s/dev1_secret", s_dir);
    char *argv [] = { "splitmesh", "keygen", "--out", out, NULL };
    cr_assert_eq (s_run ("splitmesh", argv), 0);

    struct stat st;
    cr_assert_eq (stat (secret, &st), 0);
    cr_assert_eq (st.st_mode & 0777, 0600, "secret file mode %o", st.st_mode & 0777);
    //  The public file alone (copied away from its twin) has no secret key.
    char lone [600];
    snprintf (lone, sizeof lone, "%s/copy", s_dir);
    zcert_t *pub = zcert_load (out);
    cr_assert_not_null (pub);
    cr_assert_eq (zcert_save_public (pub, lone), 0);
    zcert_t *lone_cert = zcert_load (lone);
    static const byte zero [32] = { 0 };
    cr_assert_eq (memcmp (zcert_secret_key (lone_cert), zero, 32), 0, "public file holds a secret");
    zcert_t *full = zcert_load (secret);
    cr_assert_not_null (full);
    cr_assert_neq (memcmp (zcert_secret_key (full), zero, 32), 0, "secret file holds no secret");
    cr_assert_str_eq (zcert_public_txt (full), zcert_public_txt (pub));
    cr_assert_str_eq (zcert_meta (full, "created-by"), "splitmesh keygen");
    cr_assert (s_log_contains (zcert_public_txt (pub)), "public key not printed");
    zcert_destroy (&pub);
    zcert_destroy (&lone_cert);
    zcert_destroy (&full);

    //  A second run must not overwrite the key.
    cr_assert_eq (s_run ("splitmesh", argv), 1);
    cr_assert (s_log_contains ("exists"));
    char *usage [] = { "splitmesh", "keygen", NULL };
    cr_assert_eq (s_run ("splitmesh", usage), 2);
}

Test (curve_keygen, proxy_refuses_bad_keys_and_options)
{
    char cert [600], lone [600], allow [600];
    snprintf (cert, sizeof cert, "%s/server", s_dir);
    snprintf (lone, sizeof lone, "%s/lone", s_dir);
    snprintf (allow, sizeof allow, "%s/allow", s_dir);
    cr_assert_eq (mkdir (allow, 0700), 0);
    char *keygen [] = { "splitmesh", "keygen", "--out", cert, NULL };
    cr_assert_eq (s_run ("splitmesh", keygen), 0);
    zcert_t *pub = zcert_load (cert);
    cr_assert_eq (zcert_save_public (pub, lone), 0);
    zcert_destroy (&pub);

    //  A certificate without its secret key: exit 1, says so.
    char *no_secret [] = { "splitmesh-crypt-proxy", "--role", "cloud", "--bind",
                           "tcp://127.0.0.1:0", "--cert", lone, "--allow", allow,
                           "--broker", "tcp://127.0.0.1:1", NULL };
    cr_assert_eq (s_run ("splitmesh-crypt-proxy", no_secret), 1);
    cr_assert (s_log_contains ("has no secret key"));
    //  Missing allow directory and unknown role: usage errors (2).
    char *no_allow [] = { "splitmesh-crypt-proxy", "--role", "cloud", "--bind",
                          "tcp://127.0.0.1:0", "--cert", cert, "--allow", "/nonexistent",
                          "--broker", "tcp://127.0.0.1:1", NULL };
    cr_assert_eq (s_run ("splitmesh-crypt-proxy", no_allow), 2);
    cr_assert (s_log_contains ("--allow must name a directory"));
    char *bad_role [] = { "splitmesh-crypt-proxy", "--role", "fog", NULL };
    cr_assert_eq (s_run ("splitmesh-crypt-proxy", bad_role), 2);
    char *bad_link [] = { "splitmesh-crypt-proxy", "--role", "device", "--broker", "tcp://127.0.0.1:1",
                          "--services", "target", "--connect", "tcp://127.0.0.1:2",
                          "--server-key", cert, "--cert", cert, "--link", "delay=-5", NULL };
    cr_assert_eq (s_run ("splitmesh-crypt-proxy", bad_link), 2,
                  "a bad --link spec must be a usage error");
}
