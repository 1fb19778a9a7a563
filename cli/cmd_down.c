/*  cmd_down.c: `splitmesh down`, stops the mesh `splitmesh up` started.

    Reads <run-dir>/mesh.env, sends SIGTERM to every process still alive
    (checked by pid and start time, so a reused pid is never signalled),
    SIGKILLs what is left after the grace period, and removes the state
    file and the ipc sockets. The logs stay in <run-dir>/logs for a
    post-mortem. Idempotent: with no state, it says so and exits 0.
*/
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include "cli.h"
#include "cli_args.h"
#include "mesh_state.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh down [options]\n"
        "  --run-dir DIR     the mesh's run dir (as given to `splitmesh up`)\n"
        "  --grace-ms N      wait this long after SIGTERM before SIGKILL (default 5000)\n"
        "  -q, --quiet       print nothing when all is well\n");
}

int
cmd_down (int argc, char **argv)
{
    const char *run_dir_opt = NULL;
    long grace_ms = 5000;
    bool quiet = false;
    static const struct option longopts [] = {
        { "run-dir", required_argument, NULL, 'r' },
        { "grace-ms", required_argument, NULL, 'g' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, ":qh", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            case 'r': run_dir_opt = optarg; break;
            case 'g': bad = cli_parse_long (optarg, 0, 600000, &grace_ms); break;
            case 'q': quiet = true; break;
            case 'h': s_usage (stdout); return 0;
            default: return cli_getopt_error ("down", opt, argv, s_usage);
        }
        if (bad)
            return cli_bad_value ("down", longopts, opt, optarg);
    }
    if (cli_no_operands ("down", argc, argv))
        return 2;
    char run_dir [PATH_MAX], path [PATH_MAX + 32], err [512] = "";
    if (mesh_state_resolve_dir (run_dir_opt, run_dir, sizeof run_dir)) {
        fprintf (stderr, "splitmesh down: run dir path too long\n");
        return 2;
    }
    mesh_state_t *state = calloc (1, sizeof *state);
    if (!state)
        return 1;
    int rc = 1, lock_fd = -1;
    //  Waits for a concurrent `up` to finish (it holds the lock while
    //  starting), so `down` never races a half-written state.
    snprintf (path, sizeof path, "%s/lock", run_dir);
    lock_fd = open (path, O_RDWR | O_CLOEXEC);
    if (lock_fd >= 0)
        flock (lock_fd, LOCK_EX);
    int loaded = mesh_state_load (run_dir, state, err, sizeof err);
    if (loaded == 1) {
        if (!quiet)
            printf ("splitmesh down: no mesh in %s\n", run_dir);
        rc = 0;
        goto done;
    }
    if (loaded < 0) {
        fprintf (stderr, "splitmesh down: %s\n", err);
        goto done;
    }
    int alive = 0;
    for (int i = 0; i < state->n_procs; i++)
        if (mesh_proc_alive (&state->procs [i]))
            alive++;
    int killed = mesh_state_stop (state, (int) grace_ms, !quiet);
    int left = 0;
    for (int i = 0; i < state->n_procs; i++)
        if (mesh_proc_alive (&state->procs [i])) {
            fprintf (stderr, "splitmesh down: %s (pid %d) is still running\n",
                     state->procs [i].name, (int) state->procs [i].pid);
            left++;
        }
    if (left)
        goto done;
    if (mesh_state_remove (run_dir)) {
        fprintf (stderr, "splitmesh down: cannot remove the state in %s: %s\n", run_dir, strerror (errno));
        goto done;
    }
    if (!quiet)
        printf ("splitmesh down: stopped %d process%s%s (logs kept in %s/logs)\n", alive,
                alive == 1 ? "" : "es", killed ? ", some with SIGKILL" : "", run_dir);
    rc = 0;
done:
    if (lock_fd >= 0)
        close (lock_fd);
    free (state);
    return rc;
}
