/*  mesh_state.c: <run-dir>/mesh.env, the state of a local mesh.

    See mesh_state.h. The format is shell-sourceable KEY='value' lines; a
    value may not contain a single quote (save refuses it), so reading is a
    plain split at the first '=' and stripping the quotes.
*/
#include "mesh_state.h"
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
mesh_state_default_dir (char *buf, size_t size)
{
    const char *xdg = getenv ("XDG_RUNTIME_DIR");
    int n;
    if (xdg && *xdg)
        n = snprintf (buf, size, "%s/splitmesh", xdg);
    else
        n = snprintf (buf, size, "/tmp/splitmesh-%u", (unsigned) getuid ());
    return n < 0 || (size_t) n >= size ? -1 : 0;
}

int
mesh_state_resolve_dir (const char *option, char *buf, size_t size)
{
    char dir [PATH_MAX];
    const char *env = getenv ("SPLITMESH_RUN_DIR");
    int n;
    if (option && *option)
        n = snprintf (dir, sizeof dir, "%s", option);
    else
    if (env && *env)
        n = snprintf (dir, sizeof dir, "%s", env);
    else {
        if (mesh_state_default_dir (dir, sizeof dir))
            return -1;
        n = (int) strlen (dir);
    }
    if (n < 0 || (size_t) n >= sizeof dir)
        return -1;
    //  Relative run dirs are made absolute: ipc:// endpoints and the
    //  state are used from other working directories later.
    if (dir [0] != '/') {
        char cwd [PATH_MAX];
        if (!getcwd (cwd, sizeof cwd))
            return -1;
        n = snprintf (buf, size, "%s/%s", cwd, dir);
    }
    else
        n = snprintf (buf, size, "%s", dir);
    return n < 0 || (size_t) n >= size ? -1 : 0;
}

int
mesh_state_path (const char *run_dir, char *buf, size_t size)
{
    int n = snprintf (buf, size, "%s/mesh.env", run_dir);
    return n < 0 || (size_t) n >= size ? -1 : 0;
}

unsigned long long
mesh_proc_start_time (pid_t pid)
{
    if (pid <= 0)
        return 0;
    char path [64], line [1024];
    snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return 0;
    size_t n = fread (line, 1, sizeof line - 1, f);
    fclose (f);
    line [n] = '\0';
    //  The command name (field 2) is in parentheses and may hold spaces:
    //  fields are counted from the last ')'.
    char *p = strrchr (line, ')');
    if (!p)
        return 0;
    p++;
    char state = 0;
    unsigned long long start = 0;
    //  Fields 3 (state) .. 22 (starttime): skip 4..21.
    if (sscanf (p, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                &state, &start) != 2)
        return 0;
    if (state == 'Z' || state == 'X')
        return 0;
    return start;
}

bool
mesh_proc_alive (const mesh_proc_t *proc)
{
    unsigned long long start = mesh_proc_start_time (proc->pid);
    return start != 0 && start == proc->start;
}

//  Writes one KEY='value' line; -1 when value holds a quote or newline.
static int
s_put (FILE *f, const char *key, const char *value)
{
    if (strchr (value, '\'') || strchr (value, '\n'))
        return -1;
    fprintf (f, "%s='%s'\n", key, value);
    return 0;
}

int
mesh_state_save (const mesh_state_t *state)
{
    char path [PATH_MAX], tmp [PATH_MAX + 8], num [32];
    if (mesh_state_path (state->run_dir, path, sizeof path))
        return -1;
    snprintf (tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen (tmp, "w");
    if (!f)
        return -1;
    int rc = 0;
    fprintf (f, "# splitmesh mesh state, written by `splitmesh up`; `splitmesh down` reads it.\n");
    rc |= s_put (f, "SPLITMESH_RUN_DIR", state->run_dir);
    rc |= s_put (f, "SPLITMESH_BROKER", state->device_broker);
    rc |= s_put (f, "SPLITMESH_CLOUD", state->cloud_broker);
    rc |= s_put (f, "SPLITMESH_TELEMETRY", state->telemetry_xsub);
    rc |= s_put (f, "SPLITMESH_TELEMETRY_XPUB", state->telemetry_xpub);
    snprintf (num, sizeof num, "%d", state->telemetry_port);
    rc |= s_put (f, "SPLITMESH_TELEMETRY_PORT", num);
    rc |= s_put (f, "SPLITMESH_MODEL", state->model);
    rc |= s_put (f, "SPLITMESH_DRAFT_MODEL", state->draft_model);
    snprintf (num, sizeof num, "%d", state->split);
    rc |= s_put (f, "SPLITMESH_SPLIT", num);
    snprintf (num, sizeof num, "%d", state->targets);
    rc |= s_put (f, "SPLITMESH_TARGETS", num);
    rc |= s_put (f, "SPLITMESH_LINK", state->link);
    rc |= s_put (f, "SPLITMESH_CRYPT_LINK", state->crypt_link);
    for (int i = 0; i < state->n_procs; i++) {
        char value [128];
        snprintf (value, sizeof value, "%s %d %llu", state->procs [i].name,
                  (int) state->procs [i].pid, state->procs [i].start);
        rc |= s_put (f, "SPLITMESH_PROC", value);
    }
    if (fflush (f) || fsync (fileno (f)))
        rc = -1;
    if (fclose (f))
        rc = -1;
    if (rc == 0 && rename (tmp, path))
        rc = -1;
    if (rc)
        unlink (tmp);
    return rc;
}

//  Copies src to a fixed-size field; -1 when it does not fit.
static int
s_copy (char *dst, size_t size, const char *src)
{
    size_t n = strlen (src);
    if (n >= size)
        return -1;
    memcpy (dst, src, n + 1);
    return 0;
}

int
mesh_state_load (const char *run_dir, mesh_state_t *state, char *err, size_t err_size)
{
    char path [PATH_MAX], line [4096];
    memset (state, 0, sizeof *state);
    if (mesh_state_path (run_dir, path, sizeof path)) {
        snprintf (err, err_size, "run dir path too long");
        return -1;
    }
    FILE *f = fopen (path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 1;
        snprintf (err, err_size, "cannot read %s: %s", path, strerror (errno));
        return -1;
    }
    int rc = 0, lineno = 0;
    while (fgets (line, sizeof line, f)) {
        lineno++;
        size_t n = strlen (line);
        while (n && (line [n - 1] == '\n' || line [n - 1] == '\r'))
            line [--n] = '\0';
        if (n == 0 || line [0] == '#')
            continue;
        char *eq = strchr (line, '=');
        if (!eq || eq [1] != '\'' || n < (size_t) (eq - line) + 3 || line [n - 1] != '\'') {
            snprintf (err, err_size, "%s:%d: not a KEY='value' line", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        line [n - 1] = '\0';
        const char *key = line, *value = eq + 2;
        int bad = 0;
        if (!strcmp (key, "SPLITMESH_RUN_DIR"))
            bad = s_copy (state->run_dir, sizeof state->run_dir, value);
        else if (!strcmp (key, "SPLITMESH_BROKER"))
            bad = s_copy (state->device_broker, sizeof state->device_broker, value);
        else if (!strcmp (key, "SPLITMESH_CLOUD"))
            bad = s_copy (state->cloud_broker, sizeof state->cloud_broker, value);
        else if (!strcmp (key, "SPLITMESH_TELEMETRY"))
            bad = s_copy (state->telemetry_xsub, sizeof state->telemetry_xsub, value);
        else if (!strcmp (key, "SPLITMESH_TELEMETRY_XPUB"))
            bad = s_copy (state->telemetry_xpub, sizeof state->telemetry_xpub, value);
        else if (!strcmp (key, "SPLITMESH_TELEMETRY_PORT"))
            state->telemetry_port = atoi (value);
        else if (!strcmp (key, "SPLITMESH_MODEL"))
            bad = s_copy (state->model, sizeof state->model, value);
        else if (!strcmp (key, "SPLITMESH_DRAFT_MODEL"))
            bad = s_copy (state->draft_model, sizeof state->draft_model, value);
        else if (!strcmp (key, "SPLITMESH_SPLIT"))
            state->split = atoi (value);
        else if (!strcmp (key, "SPLITMESH_TARGETS"))
            state->targets = atoi (value);
        else if (!strcmp (key, "SPLITMESH_LINK"))
            bad = s_copy (state->link, sizeof state->link, value);
        else if (!strcmp (key, "SPLITMESH_CRYPT_LINK"))
            bad = s_copy (state->crypt_link, sizeof state->crypt_link, value);
        else if (!strcmp (key, "SPLITMESH_PROC")) {
            if (state->n_procs >= MESH_MAX_PROCS)
                bad = 1;
            else {
                mesh_proc_t *p = &state->procs [state->n_procs];
                int pid = 0;
                if (sscanf (value, "%63s %d %llu", p->name, &pid, &p->start) != 3 || pid <= 0)
                    bad = 1;
                else {
                    p->pid = (pid_t) pid;
                    state->n_procs++;
                }
            }
        }
        //  Unknown keys are ignored: a newer `up` may write more.
        if (bad) {
            snprintf (err, err_size, "%s:%d: bad value for %s", path, lineno, key);
            rc = -1;
            break;
        }
    }
    fclose (f);
    if (rc == 0 && !*state->run_dir)
        rc = s_copy (state->run_dir, sizeof state->run_dir, run_dir);
    return rc;
}

int
mesh_state_remove (const char *run_dir)
{
    char path [PATH_MAX];
    //  The ipc sockets the brokers bound (a SIGKILLed broker leaves them).
    const char *sockets [] = { "device.ipc", "tel-in.ipc", "tel-out.ipc" };
    for (size_t i = 0; i < sizeof sockets / sizeof sockets [0]; i++) {
        int n = snprintf (path, sizeof path, "%s/%s", run_dir, sockets [i]);
        if (n > 0 && (size_t) n < sizeof path)
            unlink (path);
    }
    if (mesh_state_path (run_dir, path, sizeof path))
        return -1;
    if (unlink (path) && errno != ENOENT)
        return -1;
    return 0;
}

//  Reaps any of our own children that exited (those `up` started itself).
static void
s_reap_children (void)
{
    while (waitpid (-1, NULL, WNOHANG) > 0)
        ;
}

int
mesh_state_stop (const mesh_state_t *state, int grace_ms, bool verbose)
{
    bool live [MESH_MAX_PROCS] = { false };
    int n_live = 0;
    for (int i = state->n_procs - 1; i >= 0; i--) {
        const mesh_proc_t *p = &state->procs [i];
        if (!mesh_proc_alive (p))
            continue;
        if (verbose)
            fprintf (stderr, "splitmesh: stopping %s (pid %d)\n", p->name, (int) p->pid);
        if (kill (p->pid, SIGTERM) == 0) {
            live [i] = true;
            n_live++;
        }
    }
    struct timespec t0, now;
    clock_gettime (CLOCK_MONOTONIC, &t0);
    while (n_live > 0) {
        s_reap_children ();
        n_live = 0;
        for (int i = 0; i < state->n_procs; i++)
            if (live [i] && (live [i] = mesh_proc_alive (&state->procs [i])))
                n_live++;
        clock_gettime (CLOCK_MONOTONIC, &now);
        long waited = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (n_live == 0 || waited >= grace_ms)
            break;
        struct timespec step = { 0, 20 * 1000000 };
        nanosleep (&step, NULL);
    }
    int killed = 0;
    for (int i = 0; i < state->n_procs; i++)
        if (live [i] && mesh_proc_alive (&state->procs [i])) {
            fprintf (stderr, "splitmesh: %s (pid %d) ignored SIGTERM for %d ms: SIGKILL\n",
                     state->procs [i].name, (int) state->procs [i].pid, grace_ms);
            kill (state->procs [i].pid, SIGKILL);
            killed++;
        }
    //  A SIGKILLed process is gone once the kernel reaps it; wait briefly
    //  so that `down` returning means the pids are really gone.
    for (int round = 0; killed && round < 100; round++) {
        s_reap_children ();
        int still = 0;
        for (int i = 0; i < state->n_procs; i++)
            if (live [i] && mesh_proc_alive (&state->procs [i]))
                still++;
        if (!still)
            break;
        struct timespec step = { 0, 10 * 1000000 };
        nanosleep (&step, NULL);
    }
    s_reap_children ();
    return killed;
}
