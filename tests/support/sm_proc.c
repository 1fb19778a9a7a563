/*  sm_proc.c: child processes, ports and temp dirs for integration tests.

    See sm_proc.h. Uses fork/execv rather than posix_spawn so the child can
    set PR_SET_PDEATHSIG between the two.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "sm_proc.h"

#define SM_CHILDREN_MAX 64
#define SM_ARGS_MAX     64

static pid_t s_children [SM_CHILDREN_MAX];     //  spawned, not yet reaped

static void
s_register (pid_t pid)
{
    for (int i = 0; i < SM_CHILDREN_MAX; i++)
        if (s_children [i] == 0) {
            s_children [i] = pid;
            return;
        }
    fprintf (stderr, "sm_proc: more than %d children; pid %d not tracked\n",
             SM_CHILDREN_MAX, (int) pid);
}

static void
s_forget (pid_t pid)
{
    for (int i = 0; i < SM_CHILDREN_MAX; i++)
        if (s_children [i] == pid)
            s_children [i] = 0;
}

static long long
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_sleep_ms (int ms)
{
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

const char *
sm_bin_dir (void)
{
    const char *dir = getenv ("SPLITMESH_BIN_DIR");
    if (dir && *dir)
        return dir;
    //  Run by hand, outside ctest: tests live next to the other binaries.
    static char self_dir [PATH_MAX];
    ssize_t len = readlink ("/proc/self/exe", self_dir, sizeof self_dir - 1);
    if (len <= 0)
        return ".";
    self_dir [len] = '\0';
    char *slash = strrchr (self_dir, '/');
    if (slash)
        *slash = '\0';
    return self_dir;
}

pid_t
sm_spawnv (const char *log_path, const char *program, char *const argv [])
{
    char path [PATH_MAX];
    if (strchr (program, '/'))
        snprintf (path, sizeof path, "%s", program);
    else
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), program);
    if (access (path, X_OK) != 0) {
        fprintf (stderr, "sm_spawn: %s is not executable: %s\n", path, strerror (errno));
        return -1;
    }
    char *args [SM_ARGS_MAX + 2];
    int argc = 0;
    args [argc++] = path;
    for (int i = 1; argv && argv [0] && argv [i] && argc < SM_ARGS_MAX; i++)
        args [argc++] = argv [i];
    args [argc] = NULL;

    fflush (stdout);
    fflush (stderr);
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid < 0) {
        fprintf (stderr, "sm_spawn: fork: %s\n", strerror (errno));
        return -1;
    }
    if (pid == 0) {
        //  Die with the test process, whatever kills it.
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent)
            _exit (127);
        //  Give the child sane fds 0-2 whatever the test runner left open
        //  (Criterion's workers may have them closed): stdin from
        //  /dev/null, stdout and stderr to the log.
        int null_fd = open ("/dev/null", O_RDONLY);
        if (null_fd >= 0 && null_fd != STDIN_FILENO) {
            dup2 (null_fd, STDIN_FILENO);
            close (null_fd);
        }
        if (log_path) {
            int fd = open (log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2 (fd, STDOUT_FILENO);
                dup2 (fd, STDERR_FILENO);
                if (fd > STDERR_FILENO)
                    close (fd);
            }
        }
        //  Criterion's runner talks to its workers through BXFI_* variables;
        //  a child that links libcriterion must not think it is one.
        for (char **env = environ; env && *env; ) {
            if (strncmp (*env, "BXFI_", 5) == 0) {
                char name [128];
                size_t len = strcspn (*env, "=");
                snprintf (name, sizeof name, "%.*s", (int) (len < 127? len: 127), *env);
                unsetenv (name);        //  shifts the array: recheck slot
            }
            else
                env++;
        }
        execv (path, args);
        fprintf (stderr, "sm_spawn: exec %s: %s\n", path, strerror (errno));
        _exit (127);
    }
    s_register (pid);
    return pid;
}

pid_t
sm_spawn (const char *log_path, const char *program, ...)
{
    char *argv [SM_ARGS_MAX + 1];
    int argc = 0;
    argv [argc++] = (char *) program;
    va_list args;
    va_start (args, program);
    char *arg;
    while ((arg = va_arg (args, char *)) && argc < SM_ARGS_MAX)
        argv [argc++] = arg;
    va_end (args);
    argv [argc] = NULL;
    return sm_spawnv (log_path, program, argv);
}

int
sm_wait (pid_t pid, int timeout_ms, int *status)
{
    long long deadline = s_now_ms () + timeout_ms;
    while (true) {
        int st = 0;
        pid_t rc = waitpid (pid, &st, WNOHANG);
        if (rc == pid) {
            s_forget (pid);
            if (status)
                *status = st;
            return 0;
        }
        if (rc < 0) {
            s_forget (pid);
            return -1;              //  not our child
        }
        if (s_now_ms () >= deadline)
            return -1;
        s_sleep_ms (5);
    }
}

int
sm_kill (pid_t pid, int sig, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    int status = 0;
    kill (pid, sig);
    if (sm_wait (pid, timeout_ms, &status) == 0)
        return status;
    kill (pid, SIGKILL);
    if (sm_wait (pid, 5000, &status) == 0)
        return status;
    return -1;
}

bool
sm_alive (pid_t pid)
{
    if (pid <= 0)
        return false;
    siginfo_t info;
    memset (&info, 0, sizeof info);
    if (waitid (P_PID, (id_t) pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0)
        return false;
    return info.si_pid == 0;        //  0: still running
}

void
sm_proc_kill_all (void)
{
    for (int i = 0; i < SM_CHILDREN_MAX; i++)
        if (s_children [i] > 0)
            sm_kill (s_children [i], SIGKILL, 2000);
}

bool
sm_poll_until (bool (*cond) (void *arg), void *arg, int timeout_ms, int interval_ms)
{
    long long deadline = s_now_ms () + timeout_ms;
    while (true) {
        if (cond (arg))
            return true;
        if (s_now_ms () >= deadline)
            return cond (arg);
        s_sleep_ms (interval_ms > 0? interval_ms: 10);
    }
}

int
sm_free_tcp_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0
    &&  getsockname (fd, (struct sockaddr *) &addr, &len) == 0)
        port = ntohs (addr.sin_port);
    close (fd);
    return port;
}

char *
sm_tmpdir_new (const char *prefix)
{
    const char *base = getenv ("TMPDIR");
    char templ [PATH_MAX];
    snprintf (templ, sizeof templ, "%s/%s-XXXXXX", base && *base? base: "/tmp",
              prefix? prefix: "splitmesh");
    if (!mkdtemp (templ))
        return NULL;
    return strdup (templ);
}

static int
s_remove_entry (const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb; (void) flag; (void) ftw;
    remove (path);
    return 0;
}

void
sm_tmpdir_remove (char **dir_p)
{
    if (dir_p && *dir_p) {
        nftw (*dir_p, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        free (*dir_p);
        *dir_p = NULL;
    }
}
