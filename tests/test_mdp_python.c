/*  test_mdp_python.c: a Python MDP client (pyzmq) against the real broker.

    Runs tests/python/mdp_client.py --selftest with SPLITMESH_PYTHON (Debian
    python3 with python3-zmq and python3-msgpack) against a real
    `splitmesh-broker` and two `splitmesh-test-echo-worker` processes. The
    script shares no code with the C side, so a pass shows that the wire
    format is plain RFC 18 MDP with MessagePack bodies: echo, PARTIAL
    streaming, session affinity, MMI, 400s for malformed bodies, dropped
    garbage headers and a 504 for an unknown service.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include "sm_mdp.h"
#include "sm_proc.h"

static char *s_dir;
static char s_endpoint [512];
static char s_log [512];

static void
s_init (void)
{
    s_dir = sm_tmpdir_new ("sm-mdp-py");
    cr_assert_not_null (s_dir);
    snprintf (s_endpoint, sizeof s_endpoint, "ipc://%s/broker.ipc", s_dir);
    snprintf (s_log, sizeof s_log, "%s/children.log", s_dir);
}

static void
s_fini (void)
{
    sm_proc_kill_all ();
    sm_tmpdir_remove (&s_dir);
}

static const char *
s_python (void)
{
    const char *python = getenv ("SPLITMESH_PYTHON");
    return python && *python? python: SPLITMESH_PYTHON;
}

TestSuite (mdp_python, .init = s_init, .fini = s_fini, .timeout = 60);

Test (mdp_python, pyzmq_client_speaks_mdp_to_the_broker)
{
    //  Skip cleanly where the interpreter lacks the modules.
    char check [1024];
    snprintf (check, sizeof check, "%s -c 'import zmq, msgpack' 2>/dev/null", s_python ());
    if (system (check) != 0)
        cr_skip_test ("%s lacks pyzmq or msgpack (install python3-zmq python3-msgpack)",
                      s_python ());

    cr_assert_gt (sm_spawn (s_log, "splitmesh-broker", "-e", s_endpoint,
                            "--heartbeat-ms", "100", "--expiry-ms", "400", NULL), 0);
    const char *names [] = { "A", "B" };
    for (int i = 0; i < 2; i++)
        cr_assert_gt (sm_spawn (s_log, "splitmesh-test-echo-worker", "-e", s_endpoint,
                                "-s", "echo", "-n", names [i], "--heartbeat-ms", "100", NULL), 0);
    cr_assert (sm_mdp_wait_workers (s_endpoint, "echo", 2, 5000));

    char script [1024];
    snprintf (script, sizeof script, "%s/tests/python/mdp_client.py", SPLITMESH_SOURCE_DIR);
    char out_path [600];
    snprintf (out_path, sizeof out_path, "%s/python.log", s_dir);
    pid_t python = sm_spawn (out_path, s_python (), script, "--selftest", s_endpoint, "echo", NULL);
    cr_assert_gt (python, 0);
    int status = 0;
    int rc = sm_wait (python, 45000, &status);
    if (rc != 0)
        sm_kill (python, SIGKILL, 1000);
    //  Show what the script said, pass or fail.
    char output [4096] = "";
    FILE *file = fopen (out_path, "r");
    if (file) {
        size_t n = fread (output, 1, sizeof output - 1, file);
        output [n] = '\0';
        fclose (file);
    }
    cr_assert_eq (rc, 0, "python client timed out:\n%s", output);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0,
               "python client failed (status %d):\n%s", status, output);
    cr_assert (strstr (output, "selftest: ok"), "unexpected output:\n%s", output);
}
