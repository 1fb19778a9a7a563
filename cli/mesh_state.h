/*  mesh_state.h: the state file of a local mesh started by `splitmesh up`.

    `up` starts the mesh's processes as daemons and exits; `generate` and
    `down` run later, as other processes, and need to know where the
    brokers listen and which processes belong to the mesh. This module
    keeps that in <run-dir>/mesh.env: one KEY='value' line per item, so
    shell scripts can `source` it too. Every process is written with its
    pid and its start time (field 22 of /proc/PID/stat), so that `down`
    never signals an unrelated process that reused a pid.

    The file is rewritten (write to a temporary, rename) after each child
    `up` starts, so a crashed `up` still leaves a state `down` can clean.
*/
#ifndef SPLITMESH_MESH_STATE_H
#define SPLITMESH_MESH_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define MESH_MAX_PROCS 40

typedef struct {
    char name [64];             //  "broker-device", "cloud-target-1", ...
    pid_t pid;
    unsigned long long start;   //  start time in clock ticks since boot
} mesh_proc_t;

typedef struct {
    char run_dir [512];         //  absolute path
    char device_broker [600];   //  ipc:// endpoint clients and device workers use
    char cloud_broker [128];    //  tcp:// endpoint of the cloud broker
    char telemetry_xsub [600];  //  where services publish metrics ("" when none)
    char telemetry_xpub [600];  //  where splitmesh-telemetry subscribes
    int telemetry_port;         //  HTTP port of splitmesh-telemetry, 0 when none
    char model [4096];          //  target model path
    char draft_model [4096];    //  draft model path
    int split;                  //  split depth L
    int targets;                //  cloud-target replicas
    char link [256];            //  link emulator spec ("" when none)
    char crypt_link [128];      //  `up --crypt`: the CURVE endpoint of the
                                //  crypt-proxy pair ("" when not encrypted)
    mesh_proc_t procs [MESH_MAX_PROCS];
    int n_procs;
} mesh_state_t;

//  The default run dir: $XDG_RUNTIME_DIR/splitmesh, else /tmp/splitmesh-UID.
//  Writes it to buf. Returns 0, or -1 when it does not fit.
int
    mesh_state_default_dir (char *buf, size_t size);

//  Path of the state file in run_dir, written to buf. Returns 0 or -1.
int
    mesh_state_path (const char *run_dir, char *buf, size_t size);

//  Reads <run_dir>/mesh.env into *state. Returns 0, 1 when there is no
//  state file (no mesh), or -1 with err filled when it cannot be read.
int
    mesh_state_load (const char *run_dir, mesh_state_t *state, char *err, size_t err_size);

//  Writes *state to <state->run_dir>/mesh.env atomically. Returns 0 or -1.
int
    mesh_state_save (const mesh_state_t *state);

//  Removes <run_dir>/mesh.env and the mesh's ipc sockets. Returns 0 (also
//  when they were absent) or -1.
int
    mesh_state_remove (const char *run_dir);

//  Start time of a live process (clock ticks since boot), 0 when there is
//  no such process or it is a zombie.
unsigned long long
    mesh_proc_start_time (pid_t pid);

//  True while the process recorded in *proc still runs (same pid and the
//  same start time, not a zombie).
bool
    mesh_proc_alive (const mesh_proc_t *proc);

//  Sends SIGTERM to every live process of the state (the last started
//  first), waits up to grace_ms for all to exit, then SIGKILLs the rest.
//  Reaps those that are children of the caller. Logs each step to stderr
//  when verbose. Returns how many processes needed SIGKILL.
int
    mesh_state_stop (const mesh_state_t *state, int grace_ms, bool verbose);

//  Resolves the run dir from an option (may be NULL), then $SPLITMESH_RUN_DIR,
//  then the default. Writes an absolute path to buf. Returns 0 or -1.
int
    mesh_state_resolve_dir (const char *option, char *buf, size_t size);

#endif
