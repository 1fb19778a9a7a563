/*  cmd_up.c: `splitmesh up`, starts the local mesh as separate processes.

    The mesh of docs/pipeline.md on one machine: a device broker (ipc in the
    run dir, with the telemetry XSUB/XPUB proxy), a cloud broker (tcp on a
    free loopback port), splitmesh-tokenizer, splitmesh-split-prefix and
    splitmesh-edge-draft on the device broker, R replicas of
    splitmesh-cloud-target on the cloud broker, and splitmesh-telemetry when
    it is built. With --crypt the cloud side sits behind a CurveZMQ bridge
    (services/crypt-proxy): a device crypt-proxy serves `target` on the
    device broker, edge-draft asks the device broker for it, and the only
    path to the cloud broker is the CURVE link to the cloud crypt-proxy
    (tcp on a free loopback port). The certificates are made in
    <run-dir>/keys on the first `up --crypt` (server, device, and the
    allow directory holding the device's public certificate) and reused
    afterwards. Each child is a daemon (own session, stdin /dev/null,
    stdout and stderr to <run-dir>/logs/<name>.log) so that `up` can exit and
    the mesh keeps running; `splitmesh down` stops it from the pids in
    <run-dir>/mesh.env (mesh_state.h).

    `up` returns only when every service has a worker on its broker (MMI
    `mmi.workers`), or fails: when a child exits or the timeout passes, it
    prints that child's log tail, stops everything it started, and exits 1.
*/
#define _GNU_SOURCE                 //  vasprintf
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <czmq.h>
#include "cli.h"
#include "cli_args.h"
#include "link_emu.h"
#include "mdp_client.h"
#include "mesh_state.h"

#define S_MAX_ARGS 48

//  Options of one `up`.
typedef struct {
    const char *model;
    const char *draft_model;
    const char *format;         //  target weights (split-prefix, cloud-target)
    const char *draft_format;   //  draft model weights (edge-draft)
    const char *link;
    const char *act_dtype;
    const char *drafter;
    long split, threads, targets, timeout_s, heartbeat_ms, draft_k, ctx, max_sessions;
    long telemetry_port, gateway_port;
    bool telemetry, gateway, verbose, fixed_k, crypt;
} s_options_t;

//  One child's argument vector, built up with s_arg.
typedef struct {
    char *argv [S_MAX_ARGS + 1];
    int argc;
} s_args_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh up [options]\n"
        "  --model PATH        target GGUF (default $SPLITMESH_MODEL, else " CLI_DEFAULT_MODEL ")\n"
        "  --draft-model PATH  draft GGUF (default: the target's file)\n"
        "  --split L           split depth: device layers [0, L) (default 2)\n"
        "  --format F          target weights: f32, w8, w4 (default w8)\n"
        "  --draft-format F    draft weights (default w4)\n"
        "  --threads N         threads per service (default 1)\n"
        "  --link SPEC         emulated edge-cloud link, e.g. rtt=20,jitter=2,bw=100mbit\n"
        "  --crypt             edge-cloud traffic through a CurveZMQ crypt-proxy pair\n"
        "                      (keys made in RUN_DIR/keys; --link applies to that link)\n"
        "  --targets R         cloud-target replicas (default 1)\n"
        "  --drafter D         default drafter of edge-draft: model or ngram\n"
        "  --draft-k K         most drafts per round of edge-draft (k adapts in [1, K])\n"
        "  --fixed-k           edge-draft keeps each request's draft_k (no adaptation)\n"
        "  --act-dtype T       activations on the wire: int8, fp16 or fp32\n"
        "  --ctx N             context length of split-prefix and cloud-target\n"
        "  --max-sessions N    sessions kept per service\n"
        "  --heartbeat-ms N    MDP heartbeat of brokers and workers\n"
        "  --run-dir DIR       state, sockets and logs (default $SPLITMESH_RUN_DIR,\n"
        "                      else $XDG_RUNTIME_DIR/splitmesh, else /tmp/splitmesh-$UID)\n"
        "  --no-telemetry      do not start splitmesh-telemetry\n"
        "  --telemetry-port N  HTTP port of splitmesh-telemetry (default: a free one)\n"
        "  --no-gateway        do not start splitmesh-gateway (the OpenAI API)\n"
        "  --gateway-port N    HTTP port of splitmesh-gateway (default: a free one)\n"
        "  --timeout S         seconds to wait for every service (default 120)\n"
        "  -v, --verbose       services log verbosely\n"
        "Stop the mesh with `splitmesh down`.\n");
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

//  Appends a copy of a formatted argument; -1 when full or out of memory.
static int
s_arg (s_args_t *a, const char *format, ...)
{
    if (a->argc >= S_MAX_ARGS)
        return -1;
    va_list ap;
    va_start (ap, format);
    int rc = vasprintf (&a->argv [a->argc], format, ap);
    va_end (ap);
    if (rc < 0)
        return -1;
    a->argv [++a->argc] = NULL;
    return 0;
}

static void
s_args_free (s_args_t *a)
{
    for (int i = 0; i < a->argc; i++)
        free (a->argv [i]);
    a->argc = 0;
    a->argv [0] = NULL;
}

//  The folder of the splitmesh-* binaries: $SPLITMESH_BIN_DIR, else the
//  folder of this executable.
static int
s_bin_dir (char *buf, size_t size)
{
    const char *env = getenv ("SPLITMESH_BIN_DIR");
    if (env && *env) {
        int n = snprintf (buf, size, "%s", env);
        return n < 0 || (size_t) n >= size ? -1 : 0;
    }
    ssize_t n = readlink ("/proc/self/exe", buf, size - 1);
    if (n <= 0)
        return -1;
    buf [n] = '\0';
    char *slash = strrchr (buf, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    return 0;
}

//  A TCP port on 127.0.0.1 that was free a moment ago, or -1.
static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0
    &&  getsockname (fd, (struct sockaddr *) &addr, &len) == 0)
        port = ntohs (addr.sin_port);
    close (fd);
    return port;
}

//  True when something accepts TCP connections on 127.0.0.1:port.
static bool
s_port_open (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                                .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    bool open = connect (fd, (struct sockaddr *) &addr, sizeof addr) == 0;
    close (fd);
    return open;
}

//  Prints the last `lines` lines of a log file to stderr.
static void
s_print_log_tail (const char *path, int lines)
{
    FILE *f = fopen (path, "r");
    if (!f) {
        fprintf (stderr, "  (no log at %s)\n", path);
        return;
    }
    char buf [8192];
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    long from = size > (long) sizeof buf - 1 ? size - (long) sizeof buf + 1 : 0;
    fseek (f, from, SEEK_SET);
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf [n] = '\0';
    char *start = buf + n;
    int seen = 0;
    while (start > buf) {
        if (start [-1] == '\n' && start != buf + n && ++seen > lines)
            break;
        start--;
    }
    fprintf (stderr, "---- last lines of %s ----\n%s%s---- end of log ----\n", path, start,
             n && buf [n - 1] != '\n' ? "\n" : "");
}

//  Starts argv[0] (a path) as a daemon with its output appended to log.
//  Returns its pid, or -1 with a message.
static pid_t
s_spawn_daemon (const char *log, char *const argv [])
{
    int fd = open (log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf (stderr, "splitmesh up: cannot open %s: %s\n", log, strerror (errno));
        return -1;
    }
    int null_fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    fflush (NULL);
    pid_t pid = fork ();
    if (pid == 0) {
        //  Child: own session (no terminal signals, outlives `up`), then exec.
        setsid ();
        signal (SIGPIPE, SIG_DFL);
        if (null_fd >= 0)
            dup2 (null_fd, 0);
        dup2 (fd, 1);
        dup2 (fd, 2);
        execv (argv [0], argv);
        dprintf (2, "splitmesh up: cannot run %s: %s\n", argv [0], strerror (errno));
        _exit (127);
    }
    close (fd);
    if (null_fd >= 0)
        close (null_fd);
    if (pid < 0)
        fprintf (stderr, "splitmesh up: fork failed: %s\n", strerror (errno));
    return pid;
}

//  Asks a broker how many workers `service` has; -1 when it does not answer.
static int
s_mmi_workers (mdp_client_t *client, const char *service)
{
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, service);
    zmsg_t *reply = mdp_client_request (client, "mmi.workers", &body);
    if (!reply)
        return -1;
    char *answer = zmsg_popstr (reply);
    int n = answer ? atoi (answer) : -1;
    zstr_free (&answer);
    zmsg_destroy (&reply);
    return n;
}

//  Starts one child and records it in the state (saved at once).
static int
s_start (mesh_state_t *state, const char *name, s_args_t *args)
{
    if (state->n_procs >= MESH_MAX_PROCS) {
        fprintf (stderr, "splitmesh up: too many processes\n");
        return -1;
    }
    char log [PATH_MAX];
    snprintf (log, sizeof log, "%s/logs/%s.log", state->run_dir, name);
    pid_t pid = s_spawn_daemon (log, args->argv);
    if (pid < 0)
        return -1;
    mesh_proc_t *p = &state->procs [state->n_procs];
    snprintf (p->name, sizeof p->name, "%s", name);
    p->pid = pid;
    //  The child exists from fork on, so its start time is readable now.
    p->start = mesh_proc_start_time (pid);
    state->n_procs++;
    if (mesh_state_save (state)) {
        fprintf (stderr, "splitmesh up: cannot write the state in %s\n", state->run_dir);
        return -1;
    }
    return 0;
}

//  Path of a splitmesh-* binary in bin_dir, checked to be executable.
static int
s_binary (const char *bin_dir, const char *name, char *buf, size_t size)
{
    int n = snprintf (buf, size, "%s/%s", bin_dir, name);
    if (n < 0 || (size_t) n >= size || access (buf, X_OK)) {
        fprintf (stderr, "splitmesh up: %s not found in %s (is it built? set SPLITMESH_BIN_DIR)\n",
                 name, bin_dir);
        return -1;
    }
    return 0;
}

//  Adds the model options split-prefix and cloud-target share: the two
//  halves of one target model must load it the same way.
static void
s_model_args (s_args_t *a, const s_options_t *o, const char *model)
{
    s_arg (a, "--model");
    s_arg (a, "%s", model);
    s_arg (a, "--format");
    s_arg (a, "%s", o->format);
    s_arg (a, "--threads");
    s_arg (a, "%ld", o->threads);
    s_arg (a, "--split");
    s_arg (a, "%ld", o->split);
    if (o->ctx > 0) {
        s_arg (a, "--ctx");
        s_arg (a, "%ld", o->ctx);
    }
    if (o->max_sessions > 0) {
        s_arg (a, "--max-sessions");
        s_arg (a, "%ld", o->max_sessions);
    }
}

//  Adds the options every service process takes.
static void
s_common_args (s_args_t *a, const s_options_t *o, const mesh_state_t *state,
               const char *broker, const char *instance)
{
    s_arg (a, "--broker");
    s_arg (a, "%s", broker);
    if (*state->telemetry_xsub) {
        s_arg (a, "--telemetry");
        s_arg (a, "%s", state->telemetry_xsub);
    }
    s_arg (a, "--instance");
    s_arg (a, "%s", instance);
    if (o->heartbeat_ms > 0) {
        s_arg (a, "--heartbeat-ms");
        s_arg (a, "%ld", o->heartbeat_ms);
    }
    if (o->verbose)
        s_arg (a, "-v");
}

//  The crypt-proxy certificates in <run-dir>/keys: server and device key
//  pairs (zcert files `name` and `name_secret`, as `splitmesh keygen`
//  writes them) and allow/device, the device's public certificate that
//  admits it. Made when missing, kept otherwise (a user may put their own
//  there). Returns 0, or -1 with a message.
static int
s_crypt_keys (const char *run_dir)
{
    char dir [PATH_MAX], path [PATH_MAX], secret [PATH_MAX + 8];
    snprintf (dir, sizeof dir, "%s/keys/allow", run_dir);
    if (zsys_dir_create ("%s", dir)) {
        fprintf (stderr, "splitmesh up: cannot create %s: %s\n", dir, strerror (errno));
        return -1;
    }
    const char *names [] = { "server", "device" };
    for (int i = 0; i < 2; i++) {
        snprintf (path, sizeof path, "%s/keys/%s", run_dir, names [i]);
        snprintf (secret, sizeof secret, "%s_secret", path);
        if (access (path, R_OK) == 0 && access (secret, R_OK) == 0)
            continue;
        zcert_t *cert = zcert_new ();
        if (!cert)
            return -1;
        zcert_set_meta (cert, "name", "splitmesh-%s", names [i]);
        zcert_set_meta (cert, "created-by", "splitmesh up --crypt");
        int rc = zcert_save (cert, path);
        zcert_destroy (&cert);
        if (rc) {
            fprintf (stderr, "splitmesh up: cannot write %s\n", path);
            return -1;
        }
        chmod (secret, 0600);
    }
    //  The allowlist: the device's public certificate (rewritten each time,
    //  so it matches the device key in use).
    snprintf (path, sizeof path, "%s/keys/device", run_dir);
    zcert_t *device = zcert_load (path);
    if (!device) {
        fprintf (stderr, "splitmesh up: cannot load %s\n", path);
        return -1;
    }
    snprintf (path, sizeof path, "%s/keys/allow/device", run_dir);
    int rc = zcert_save_public (device, path);
    zcert_destroy (&device);
    if (rc) {
        fprintf (stderr, "splitmesh up: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

//  Waits until every service has its workers, or a child dies, or the
//  deadline passes. Returns 0, or -1 after printing what went wrong.
static int
s_wait_ready (mesh_state_t *state, const s_options_t *o)
{
    typedef struct { const char *broker; const char *service; int want; } want_t;
    want_t wants [] = {
        { state->device_broker, "tokenizer", 1 },
        { state->device_broker, "prefix", 1 },
        { state->device_broker, "generate", 1 },
        { state->cloud_broker, "target", (int) o->targets },
        //  --crypt: the device proxy serves `target` on the device broker.
        { state->device_broker, "target", *state->crypt_link ? 1 : 0 },
    };
    int n_wants = (int) (sizeof wants / sizeof wants [0]);
    mdp_client_t *device = mdp_client_new (state->device_broker);
    mdp_client_t *cloud = mdp_client_new (state->cloud_broker);
    if (!device || !cloud) {
        fprintf (stderr, "splitmesh up: cannot open MDP clients\n");
        mdp_client_destroy (&device);
        mdp_client_destroy (&cloud);
        return -1;
    }
    mdp_client_set_timeout (device, 500);
    mdp_client_set_retries (device, 0);
    mdp_client_set_timeout (cloud, 500);
    mdp_client_set_retries (cloud, 0);
    double deadline = s_now () + (double) o->timeout_s;
    int rc = -1;
    const char *missing = NULL;
    while (true) {
        //  A child that exited during start: show why.
        for (int i = 0; i < state->n_procs; i++) {
            int status = 0;
            pid_t r = waitpid (state->procs [i].pid, &status, WNOHANG);
            if (r == state->procs [i].pid) {
                char log [PATH_MAX];
                snprintf (log, sizeof log, "%s/logs/%s.log", state->run_dir, state->procs [i].name);
                if (WIFEXITED (status))
                    fprintf (stderr, "splitmesh up: %s exited with status %d while starting\n",
                             state->procs [i].name, WEXITSTATUS (status));
                else
                    fprintf (stderr, "splitmesh up: %s was killed by signal %d while starting\n",
                             state->procs [i].name, WTERMSIG (status));
                s_print_log_tail (log, 20);
                goto done;
            }
        }
        missing = NULL;
        for (int i = 0; i < n_wants && !missing; i++) {
            mdp_client_t *client = wants [i].broker == state->device_broker ? device : cloud;
            if (s_mmi_workers (client, wants [i].service) < wants [i].want)
                missing = wants [i].service;
        }
        if (!missing && state->telemetry_port > 0 && !s_port_open (state->telemetry_port))
            missing = "telemetry (HTTP)";
        if (!missing && o->gateway_port > 0 && !s_port_open ((int) o->gateway_port))
            missing = "gateway (HTTP)";
        if (!missing) {
            rc = 0;
            break;
        }
        if (zsys_interrupted) {
            //  Ctrl-C while waiting: the daemons did not get it (own
            //  sessions), so stop them here rather than leave half a mesh.
            fprintf (stderr, "splitmesh up: interrupted\n");
            goto done;
        }
        if (s_now () > deadline) {
            fprintf (stderr, "splitmesh up: service '%s' has no worker after %ld s\n",
                     missing, o->timeout_s);
            //  The log of the process that should have provided it.
            const char *proc = !strcmp (missing, "tokenizer") ? "tokenizer"
                             : !strcmp (missing, "prefix") ? "split-prefix"
                             : !strcmp (missing, "generate") ? "edge-draft"
                             : !strcmp (missing, "target") && *state->crypt_link ? "crypt-proxy-device"
                             : !strcmp (missing, "target") ? "cloud-target-1"
                             : !strcmp (missing, "gateway (HTTP)") ? "gateway" : "telemetry";
            char log [PATH_MAX];
            snprintf (log, sizeof log, "%s/logs/%s.log", state->run_dir, proc);
            s_print_log_tail (log, 20);
            goto done;
        }
        zclock_sleep (200);
    }
done:
    mdp_client_destroy (&device);
    mdp_client_destroy (&cloud);
    return rc;
}

int
cmd_up (int argc, char **argv)
{
    s_options_t o = {
        .format = "w8", .draft_format = "w4", .split = 2, .threads = 1, .targets = 1,
        .timeout_s = 120, .telemetry = true, .telemetry_port = 0, .gateway = true
    };
    const char *run_dir_opt = NULL;
    static const struct option longopts [] = {
        { "model", required_argument, NULL, 'm' },
        { "draft-model", required_argument, NULL, 'D' },
        { "split", required_argument, NULL, 'L' },
        { "format", required_argument, NULL, 'f' },
        { "draft-format", required_argument, NULL, 'F' },
        { "threads", required_argument, NULL, 't' },
        { "link", required_argument, NULL, 'l' },
        { "crypt", no_argument, NULL, 'C' },
        { "targets", required_argument, NULL, 'R' },
        { "drafter", required_argument, NULL, 'd' },
        { "draft-k", required_argument, NULL, 'k' },
        { "act-dtype", required_argument, NULL, 'a' },
        { "fixed-k", no_argument, NULL, 'x' },
        { "ctx", required_argument, NULL, 'c' },
        { "max-sessions", required_argument, NULL, 'S' },
        { "heartbeat-ms", required_argument, NULL, 'H' },
        { "run-dir", required_argument, NULL, 'r' },
        { "no-telemetry", no_argument, NULL, 'N' },
        { "telemetry-port", required_argument, NULL, 'P' },
        { "no-gateway", no_argument, NULL, 'G' },
        { "gateway-port", required_argument, NULL, 'g' },
        { "timeout", required_argument, NULL, 'T' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, ":vh", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            case 'm': o.model = optarg; break;
            case 'D': o.draft_model = optarg; break;
            case 'L': bad = cli_parse_long (optarg, 0, 4096, &o.split); break;
            case 'f': o.format = optarg; break;
            case 'F': o.draft_format = optarg; break;
            case 't': bad = cli_parse_long (optarg, 1, 256, &o.threads); break;
            case 'l': o.link = optarg; break;
            case 'C': o.crypt = true; break;
            case 'R': bad = cli_parse_long (optarg, 1, 16, &o.targets); break;
            case 'd': o.drafter = optarg;
                      bad = strcmp (optarg, "model") && strcmp (optarg, "ngram"); break;
            case 'k': bad = cli_parse_long (optarg, 0, 32, &o.draft_k); break;
            case 'a': o.act_dtype = optarg;
                      bad = strcmp (optarg, "int8") && strcmp (optarg, "fp16") && strcmp (optarg, "fp32"); break;
            case 'c': bad = cli_parse_long (optarg, 1, 32768, &o.ctx); break;
            case 'S': bad = cli_parse_long (optarg, 1, 1 << 20, &o.max_sessions); break;
            case 'H': bad = cli_parse_long (optarg, 10, 60000, &o.heartbeat_ms); break;
            case 'r': run_dir_opt = optarg; break;
            case 'x': o.fixed_k = true; break;
            case 'N': o.telemetry = false; break;
            case 'P': bad = cli_parse_long (optarg, 1, 65535, &o.telemetry_port); break;
            case 'G': o.gateway = false; break;
            case 'g': bad = cli_parse_long (optarg, 1, 65535, &o.gateway_port); break;
            case 'T': bad = cli_parse_long (optarg, 1, 3600, &o.timeout_s); break;
            case 'v': o.verbose = true; break;
            case 'h': s_usage (stdout); return 0;
            default: return cli_getopt_error ("up", opt, argv, s_usage);
        }
        if (bad)
            return cli_bad_value ("up", longopts, opt, optarg);
    }
    if (cli_no_operands ("up", argc, argv))
        return 2;
    const char *formats [] = { o.format, o.draft_format };
    for (int i = 0; i < 2; i++)
        if (strcmp (formats [i], "f32") && strcmp (formats [i], "w8") && strcmp (formats [i], "w4")) {
            fprintf (stderr, "splitmesh up: unknown format '%s' (f32, w8, w4)\n", formats [i]);
            return 2;
        }
    if (o.link) {
        link_params_t params;
        char err [256] = "";
        if (link_params_parse (&params, o.link, err, sizeof err)) {
            fprintf (stderr, "splitmesh up: bad --link '%s': %s\n", o.link, err);
            return 2;
        }
    }

    //  The model files, as absolute paths (children may run elsewhere).
    o.model = cli_model_path (o.model);
    if (!o.draft_model)
        o.draft_model = o.model;
    char model [PATH_MAX], draft_model [PATH_MAX];
    if (!realpath (o.model, model)) {
        fprintf (stderr, "splitmesh up: model file %s: %s (run scripts/fetch-model.sh or set --model)\n",
                 o.model, strerror (errno));
        return 1;
    }
    if (!realpath (o.draft_model, draft_model)) {
        fprintf (stderr, "splitmesh up: draft model file %s: %s\n", o.draft_model, strerror (errno));
        return 1;
    }

    char bin_dir [PATH_MAX];
    if (s_bin_dir (bin_dir, sizeof bin_dir)) {
        fprintf (stderr, "splitmesh up: cannot find the binaries' folder\n");
        return 1;
    }
    char bin_broker [PATH_MAX], bin_tokenizer [PATH_MAX], bin_prefix [PATH_MAX],
         bin_target [PATH_MAX], bin_edge [PATH_MAX], bin_telemetry [PATH_MAX],
         bin_gateway [PATH_MAX], bin_crypt [PATH_MAX];
    if (s_binary (bin_dir, "splitmesh-broker", bin_broker, sizeof bin_broker)
    ||  s_binary (bin_dir, "splitmesh-tokenizer", bin_tokenizer, sizeof bin_tokenizer)
    ||  s_binary (bin_dir, "splitmesh-split-prefix", bin_prefix, sizeof bin_prefix)
    ||  s_binary (bin_dir, "splitmesh-cloud-target", bin_target, sizeof bin_target)
    ||  s_binary (bin_dir, "splitmesh-edge-draft", bin_edge, sizeof bin_edge)
    ||  (o.crypt && s_binary (bin_dir, "splitmesh-crypt-proxy", bin_crypt, sizeof bin_crypt)))
        return 1;
    int n_path = snprintf (bin_telemetry, sizeof bin_telemetry, "%s/splitmesh-telemetry", bin_dir);
    bool telemetry = o.telemetry && n_path > 0 && (size_t) n_path < sizeof bin_telemetry
                  && access (bin_telemetry, X_OK) == 0;
    n_path = snprintf (bin_gateway, sizeof bin_gateway, "%s/splitmesh-gateway", bin_dir);
    bool gateway = o.gateway && n_path > 0 && (size_t) n_path < sizeof bin_gateway
                && access (bin_gateway, X_OK) == 0;

    //  The run dir, its lock, and no live mesh in it.
    mesh_state_t *state = calloc (1, sizeof *state);
    if (!state)
        return 1;
    int rc = 1, lock_fd = -1;
    char path [PATH_MAX], err [512] = "";
    if (mesh_state_resolve_dir (run_dir_opt, state->run_dir, sizeof state->run_dir)) {
        fprintf (stderr, "splitmesh up: run dir path too long\n");
        goto done;
    }
    snprintf (path, sizeof path, "%s/logs", state->run_dir);
    if (zsys_dir_create ("%s", path)) {
        fprintf (stderr, "splitmesh up: cannot create %s: %s\n", path, strerror (errno));
        goto done;
    }
    snprintf (path, sizeof path, "%s/lock", state->run_dir);
    lock_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0 || flock (lock_fd, LOCK_EX | LOCK_NB)) {
        fprintf (stderr, "splitmesh up: another `splitmesh up` or `down` is working in %s\n",
                 state->run_dir);
        goto done;
    }
    {
        mesh_state_t *old = calloc (1, sizeof *old);
        int loaded = old ? mesh_state_load (state->run_dir, old, err, sizeof err) : -1;
        int alive = 0;
        for (int i = 0; loaded == 0 && i < old->n_procs; i++)
            if (mesh_proc_alive (&old->procs [i]))
                alive++;
        if (loaded == 0 && alive) {
            fprintf (stderr, "splitmesh up: a mesh is already running in %s (%d live processes); "
                             "run `splitmesh down` first\n", state->run_dir, alive);
            free (old);
            goto done;
        }
        if (loaded < 0)
            fprintf (stderr, "splitmesh up: ignoring an unreadable old state: %s\n", err);
        free (old);
    }

    //  Endpoints.
    int cloud_port = s_free_port ();
    if (cloud_port < 0) {
        fprintf (stderr, "splitmesh up: no free TCP port\n");
        goto done;
    }
    snprintf (state->device_broker, sizeof state->device_broker, "ipc://%s/device.ipc", state->run_dir);
    snprintf (state->cloud_broker, sizeof state->cloud_broker, "tcp://127.0.0.1:%d", cloud_port);
    if (strlen (state->device_broker) > 100) {
        //  sun_path holds 108 bytes.
        fprintf (stderr, "splitmesh up: run dir %s is too long for an ipc:// endpoint\n", state->run_dir);
        goto done;
    }
    snprintf (state->telemetry_xsub, sizeof state->telemetry_xsub, "ipc://%s/tel-in.ipc", state->run_dir);
    snprintf (state->telemetry_xpub, sizeof state->telemetry_xpub, "ipc://%s/tel-out.ipc", state->run_dir);
    if (telemetry)
        state->telemetry_port = o.telemetry_port > 0 ? (int) o.telemetry_port : s_free_port ();
    snprintf (state->model, sizeof state->model, "%s", model);
    snprintf (state->draft_model, sizeof state->draft_model, "%s", draft_model);
    state->split = (int) o.split;
    state->targets = (int) o.targets;
    snprintf (state->link, sizeof state->link, "%s", o.link ? o.link : "");
    if (o.crypt) {
        int link_port = s_free_port ();
        if (link_port < 0 || link_port == cloud_port) {
            fprintf (stderr, "splitmesh up: no free TCP port for the crypt link\n");
            goto done;
        }
        snprintf (state->crypt_link, sizeof state->crypt_link, "tcp://127.0.0.1:%d", link_port);
        if (s_crypt_keys (state->run_dir))
            goto done;
    }

    //  Brokers first: workers connect to them (and would retry anyway).
    s_args_t a = { .argc = 0 };
    s_arg (&a, "%s", bin_broker);
    s_arg (&a, "-e");
    s_arg (&a, "%s", state->device_broker);
    s_arg (&a, "--telemetry-xsub");
    s_arg (&a, "%s", state->telemetry_xsub);
    s_arg (&a, "--telemetry-xpub");
    s_arg (&a, "%s", state->telemetry_xpub);
    if (o.heartbeat_ms > 0) {
        s_arg (&a, "--heartbeat-ms");
        s_arg (&a, "%ld", o.heartbeat_ms);
    }
    if (s_start (state, "broker-device", &a))
        goto fail;
    s_args_free (&a);

    s_arg (&a, "%s", bin_broker);
    s_arg (&a, "-e");
    s_arg (&a, "%s", state->cloud_broker);
    if (o.heartbeat_ms > 0) {
        s_arg (&a, "--heartbeat-ms");
        s_arg (&a, "%ld", o.heartbeat_ms);
    }
    if (s_start (state, "broker-cloud", &a))
        goto fail;
    s_args_free (&a);

    if (telemetry) {
        s_arg (&a, "%s", bin_telemetry);
        s_arg (&a, "-s");
        s_arg (&a, "%s", state->telemetry_xpub);
        s_arg (&a, "-p");
        s_arg (&a, "%d", state->telemetry_port);
        if (s_start (state, "telemetry", &a))
            goto fail;
        s_args_free (&a);
    }

    if (o.crypt) {
        //  Cloud proxy: CURVE server, admits the keys in keys/allow, an MDP
        //  client of the cloud broker. Device proxy: serves `target` on the
        //  device broker, pins the server key. The emulated link (--link)
        //  sits in the device proxy, on this link.
        s_arg (&a, "%s", bin_crypt);
        s_arg (&a, "--role");
        s_arg (&a, "cloud");
        s_arg (&a, "--bind");
        s_arg (&a, "%s", state->crypt_link);
        s_arg (&a, "--cert");
        s_arg (&a, "%s/keys/server_secret", state->run_dir);
        s_arg (&a, "--allow");
        s_arg (&a, "%s/keys/allow", state->run_dir);
        s_common_args (&a, &o, state, state->cloud_broker, "crypt-proxy-cloud");
        if (s_start (state, "crypt-proxy-cloud", &a))
            goto fail;
        s_args_free (&a);

        s_arg (&a, "%s", bin_crypt);
        s_arg (&a, "--role");
        s_arg (&a, "device");
        s_arg (&a, "--services");
        s_arg (&a, "target");
        s_arg (&a, "--connect");
        s_arg (&a, "%s", state->crypt_link);
        s_arg (&a, "--server-key");
        s_arg (&a, "%s/keys/server", state->run_dir);
        s_arg (&a, "--cert");
        s_arg (&a, "%s/keys/device_secret", state->run_dir);
        if (o.link) {
            s_arg (&a, "--link");
            s_arg (&a, "%s", o.link);
        }
        s_common_args (&a, &o, state, state->device_broker, "crypt-proxy-device");
        if (s_start (state, "crypt-proxy-device", &a))
            goto fail;
        s_args_free (&a);
    }

    s_arg (&a, "%s", bin_tokenizer);
    s_common_args (&a, &o, state, state->device_broker, "tokenizer");
    s_arg (&a, "--model");
    s_arg (&a, "%s", model);
    if (s_start (state, "tokenizer", &a))
        goto fail;
    s_args_free (&a);

    s_arg (&a, "%s", bin_prefix);
    s_common_args (&a, &o, state, state->device_broker, "split-prefix");
    s_model_args (&a, &o, model);
    if (o.act_dtype) {
        s_arg (&a, "--act-dtype");
        s_arg (&a, "%s", o.act_dtype);
    }
    if (s_start (state, "split-prefix", &a))
        goto fail;
    s_args_free (&a);

    for (long r = 1; r <= o.targets; r++) {
        char name [64];
        snprintf (name, sizeof name, "cloud-target-%ld", r);
        s_arg (&a, "%s", bin_target);
        s_common_args (&a, &o, state, state->cloud_broker, name);
        s_model_args (&a, &o, model);
        if (s_start (state, name, &a))
            goto fail;
        s_args_free (&a);
    }

    s_arg (&a, "%s", bin_edge);
    s_common_args (&a, &o, state, state->device_broker, "edge-draft");
    //  With --crypt, `target` is on the device broker (the device proxy).
    s_arg (&a, "--cloud");
    s_arg (&a, "%s", o.crypt ? state->device_broker : state->cloud_broker);
    s_arg (&a, "--model");
    s_arg (&a, "%s", model);
    s_arg (&a, "--draft-model");
    s_arg (&a, "%s", draft_model);
    s_arg (&a, "--draft-format");
    s_arg (&a, "%s", o.draft_format);
    s_arg (&a, "--threads");
    s_arg (&a, "%ld", o.threads);
    if (o.link && !o.crypt) {
        s_arg (&a, "--link");
        s_arg (&a, "%s", o.link);
    }
    if (o.drafter) {
        s_arg (&a, "--drafter");
        s_arg (&a, "%s", o.drafter);
    }
    if (o.draft_k > 0) {
        s_arg (&a, "--draft-k");
        s_arg (&a, "%ld", o.draft_k);
    }
    if (o.fixed_k)
        s_arg (&a, "--fixed-k");
    if (o.ctx > 0) {
        s_arg (&a, "--ctx");
        s_arg (&a, "%ld", o.ctx);
    }
    if (s_start (state, "edge-draft", &a))
        goto fail;
    s_args_free (&a);

    //  The OpenAI-compatible API, a client of the device broker.
    if (gateway) {
        if (o.gateway_port == 0)
            o.gateway_port = s_free_port ();
        s_arg (&a, "%s", bin_gateway);
        s_arg (&a, "--broker");
        s_arg (&a, "%s", state->device_broker);
        s_arg (&a, "--http-port");
        s_arg (&a, "%ld", o.gateway_port);
        s_arg (&a, "--telemetry");
        s_arg (&a, "%s", state->telemetry_xsub);
        s_arg (&a, "--instance");
        s_arg (&a, "gateway");
        if (o.verbose)
            s_arg (&a, "--verbose");
        if (s_start (state, "gateway", &a))
            goto fail;
        s_args_free (&a);
    }
    else
        o.gateway_port = 0;

    if (s_wait_ready (state, &o))
        goto fail;

    printf ("splitmesh up: mesh running in %s\n", state->run_dir);
    printf ("  device broker  %s\n", state->device_broker);
    printf ("  cloud broker   %s\n", state->cloud_broker);
    if (*state->crypt_link)
        printf ("  crypt link     %s (CurveZMQ, crypt-proxy pair; keys in %s/keys)\n",
                state->crypt_link, state->run_dir);
    if (*state->link)
        printf ("  link           %s (emulated between %s and the cloud broker)\n", state->link,
                *state->crypt_link ? "the crypt-proxy pair" : "edge-draft");
    if (telemetry)
        printf ("  telemetry      http://127.0.0.1:%d/ (metrics: /metrics)\n", state->telemetry_port);
    else
        printf ("  telemetry      off%s\n", o.telemetry ? " (splitmesh-telemetry not built)" : "");
    if (gateway)
        printf ("  gateway        http://127.0.0.1:%ld/v1 (OpenAI API; /health)\n", o.gateway_port);
    printf ("  model          %s (target %s, split L=%ld, %ld replica%s)\n", model, o.format,
            o.split, o.targets, o.targets > 1 ? "s" : "");
    printf ("  draft model    %s (%s)\n", draft_model, o.draft_format);
    for (int i = 0; i < state->n_procs; i++)
        printf ("  %-15s pid %d, log %s/logs/%s.log\n", state->procs [i].name,
                (int) state->procs [i].pid, state->run_dir, state->procs [i].name);
    printf ("Try: splitmesh generate \"Hello\"    Stop: splitmesh down\n");
    fflush (stdout);
    rc = 0;
    goto done;

fail:
    s_args_free (&a);
    fprintf (stderr, "splitmesh up: stopping what was started\n");
    mesh_state_stop (state, 3000, false);
    mesh_state_remove (state->run_dir);
    rc = 1;
done:
    if (lock_fd >= 0)
        close (lock_fd);
    free (state);
    return rc;
}
