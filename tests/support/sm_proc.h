/*  sm_proc.h: spawning and reaping real processes in integration tests.

    Integration tests start built binaries (broker, services, test tools),
    wait until they are ready by polling, kill them on purpose (kill -9 in
    the middle of a request) and must never leave a child behind, even when
    an assertion fails half way. This module keeps a registry of every child
    it spawned: call sm_proc_kill_all in the suite's .fini and all of them
    are SIGKILLed and reaped. Children also get PR_SET_PDEATHSIG, so they die
    with the test process if it crashes before any cleanup runs.

    Also here: a free loopback TCP port picker and temporary directories for
    ipc:// endpoints, and a polling helper with a deadline.
*/
#ifndef SM_PROC_H_INCLUDED
#define SM_PROC_H_INCLUDED

#include <stdbool.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

//  The folder holding built binaries: $SPLITMESH_BIN_DIR (ctest sets it),
//  else the folder of the running executable. The string is static.
const char *
    sm_bin_dir (void);

//  Spawns `program` (a path, or a bare name looked up in sm_bin_dir) with
//  the NULL-terminated argument list after it; argv[0] is set for you.
//  stdout and stderr go to `log_path` (appended) or are inherited if NULL.
//  Returns the child's pid, or -1 (with a message on stderr) on failure.
//      pid_t pid = sm_spawn ("/tmp/x.log", "splitmesh-broker", "-e", ep, NULL);
pid_t
    sm_spawn (const char *log_path, const char *program, ...);

//  Same with an argument vector (argv[0] is ignored and replaced).
pid_t
    sm_spawnv (const char *log_path, const char *program, char *const argv []);

//  Waits up to timeout_ms for the child to exit and reaps it. Returns 0 and
//  sets *status (may be NULL) as waitpid does, or -1 on timeout.
int
    sm_wait (pid_t pid, int timeout_ms, int *status);

//  Sends `sig` and waits up to timeout_ms for the exit; escalates to
//  SIGKILL if the child is still there. Always reaps. Returns the waitpid
//  status, or -1 if the pid is not our child.
int
    sm_kill (pid_t pid, int sig, int timeout_ms);

//  True while the child runs (not reaped, not a zombie).
bool
    sm_alive (pid_t pid);

//  SIGKILLs and reaps every child spawned and not yet reaped. Safe to call
//  more than once; call it from every integration suite's .fini.
void
    sm_proc_kill_all (void);

//  Calls cond(arg) every interval_ms until it returns true or timeout_ms
//  has passed. Returns the last result.
bool
    sm_poll_until (bool (*cond) (void *arg), void *arg, int timeout_ms, int interval_ms);

//  A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and
//  read it back). Returns -1 on failure.
int
    sm_free_tcp_port (void);

//  Creates a fresh directory under $TMPDIR or /tmp, named with `prefix`.
//  Caller owns the path and must pass it to sm_tmpdir_remove. NULL on error.
char *
    sm_tmpdir_new (const char *prefix);

//  Removes the directory and everything in it, frees the path, nullifies
//  *dir_p.
void
    sm_tmpdir_remove (char **dir_p);

#ifdef __cplusplus
}
#endif

#endif
