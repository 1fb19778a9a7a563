/*  sm_cli.c: the `splitmesh` command and whole meshes in tests. See sm_cli.h.  */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <czmq.h>
#include "codec.h"
#include "mdp_client.h"
#include "mdp_common.h"
#include "sm_cli.h"
#include "sm_proc.h"

extern char **environ;

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

//  Reads a whole file descriptor (from offset 0) into a new string.
static char *
s_slurp (int fd)
{
    off_t size = lseek (fd, 0, SEEK_END);
    if (size < 0)
        size = 0;
    lseek (fd, 0, SEEK_SET);
    char *buf = malloc ((size_t) size + 1);
    if (!buf)
        return NULL;
    size_t n = 0;
    ssize_t r;
    while (n < (size_t) size && (r = read (fd, buf + n, (size_t) size - n)) > 0)
        n += (size_t) r;
    buf [n] = '\0';
    return buf;
}

sm_cli_result_t *
sm_cli_run (const char *program, int timeout_s, const char *const *env, const char *const *argv)
{
    char path [PATH_MAX];
    if (strchr (program, '/'))
        snprintf (path, sizeof path, "%s", program);
    else
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), program);
    sm_cli_result_t *r = calloc (1, sizeof *r);
    if (!r)
        return NULL;
    r->status = -1;
    char out_path [] = "/tmp/sm_cli_out_XXXXXX", err_path [] = "/tmp/sm_cli_err_XXXXXX";
    int out_fd = mkstemp (out_path), err_fd = mkstemp (err_path);
    if (out_fd < 0 || err_fd < 0) {
        fprintf (stderr, "sm_cli_run: mkstemp: %s\n", strerror (errno));
        goto done;
    }
    unlink (out_path);
    unlink (err_path);

    const char *args [128];
    int n = 0;
    args [n++] = path;
    for (int i = 1; argv [i] && n < 127; i++)
        args [n++] = argv [i];
    args [n] = NULL;

    //  Environment: ours, with `env` entries replacing same-named ones.
    size_t n_env = 0, n_extra = 0;
    while (environ [n_env])
        n_env++;
    while (env && env [n_extra])
        n_extra++;
    const char **envp = calloc (n_env + n_extra + 1, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        bool replaced = false;
        for (size_t j = 0; j < n_extra; j++) {
            const char *eq = strchr (env [j], '=');
            size_t len = eq ? (size_t) (eq - env [j]) + 1 : strlen (env [j]);
            if (!strncmp (environ [i], env [j], len))
                replaced = true;
        }
        if (!replaced)
            envp [k++] = environ [i];
    }
    for (size_t j = 0; j < n_extra; j++)
        envp [k++] = env [j];
    envp [k] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init (&fa);
    posix_spawn_file_actions_addopen (&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2 (&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2 (&fa, err_fd, 2);
    pid_t pid;
    double t0 = s_now ();
    int rc = posix_spawn (&pid, path, &fa, NULL, (char *const *) args, (char *const *) envp);
    posix_spawn_file_actions_destroy (&fa);
    free (envp);
    if (rc) {
        fprintf (stderr, "sm_cli_run: cannot start %s: %s\n", path, strerror (rc));
        goto done;
    }
    int status = 0;
    pid_t w;
    while ((w = waitpid (pid, &status, WNOHANG)) == 0 && s_now () - t0 < timeout_s) {
        struct timespec step = { 0, 20 * 1000000 };
        nanosleep (&step, NULL);
    }
    if (w == 0) {
        fprintf (stderr, "sm_cli_run: %s ran past %d s: killed\n", path, timeout_s);
        kill (pid, SIGKILL);
        waitpid (pid, &status, 0);
        r->signal = SIGKILL;
    }
    else
    if (WIFEXITED (status))
        r->status = WEXITSTATUS (status);
    else
    if (WIFSIGNALED (status)) {
        r->signal = WTERMSIG (status);
        fprintf (stderr, "sm_cli_run: %s died of signal %d\n", path, r->signal);
    }
    r->seconds = s_now () - t0;
done:
    r->out = out_fd >= 0 ? s_slurp (out_fd) : strdup ("");
    r->err = err_fd >= 0 ? s_slurp (err_fd) : strdup ("");
    if (out_fd >= 0)
        close (out_fd);
    if (err_fd >= 0)
        close (err_fd);
    return r;
}

void
sm_cli_result_destroy (sm_cli_result_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->out);
        free ((*self_p)->err);
        free (*self_p);
        *self_p = NULL;
    }
}

//  Points after `"key":` in json, or NULL.
static const char *
s_json_find (const char *json, const char *key)
{
    char pattern [128];
    snprintf (pattern, sizeof pattern, "\"%s\":", key);
    const char *p = json ? strstr (json, pattern) : NULL;
    return p ? p + strlen (pattern) : NULL;
}

int32_t *
sm_json_ints (const char *json, const char *key, size_t *count)
{
    const char *p = s_json_find (json, key);
    *count = 0;
    if (!p || *p != '[')
        return NULL;
    p++;
    size_t cap = 64, n = 0;
    int32_t *ids = malloc (cap * sizeof *ids);
    while (ids && *p && *p != ']') {
        char *end;
        long v = strtol (p, &end, 10);
        if (end == p) {
            free (ids);
            return NULL;
        }
        if (n == cap) {
            cap *= 2;
            int32_t *grown = realloc (ids, cap * sizeof *ids);
            if (!grown) {
                free (ids);
                return NULL;
            }
            ids = grown;
        }
        ids [n++] = (int32_t) v;
        p = end;
        if (*p == ',')
            p++;
    }
    if (!ids || *p != ']') {
        free (ids);
        return NULL;
    }
    *count = n;
    return ids;
}

int
sm_json_number (const char *json, const char *key, double *value)
{
    const char *p = s_json_find (json, key);
    if (!p)
        return -1;
    char *end;
    double v = strtod (p, &end);
    if (end == p)
        return -1;
    *value = v;
    return 0;
}

//  True when pid runs a splitmesh binary (not a reused pid).
static bool
s_is_splitmesh (int pid)
{
    char path [64], cmd [512] = "";
    snprintf (path, sizeof path, "/proc/%d/cmdline", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return false;
    size_t n = fread (cmd, 1, sizeof cmd - 1, f);
    fclose (f);
    cmd [n] = '\0';
    return strstr (cmd, "splitmesh") != NULL;
}

void
sm_mesh_teardown (const char *run_dir)
{
    if (!run_dir)
        return;
    sm_cli_result_t *r = SM_SPLITMESH (60, "down", "--run-dir", run_dir, "--grace-ms", "3000", "-q");
    if (r && r->status != 0)
        fprintf (stderr, "sm_mesh_teardown: splitmesh down: %d %s\n", r->status, r->err);
    sm_cli_result_destroy (&r);
    //  Whatever `down` could not stop (or a state it could not read).
    char path [PATH_MAX], line [512];
    snprintf (path, sizeof path, "%s/mesh.env", run_dir);
    FILE *f = fopen (path, "r");
    if (!f)
        return;
    while (fgets (line, sizeof line, f)) {
        char name [64];
        int pid;
        if (sscanf (line, "SPLITMESH_PROC='%63s %d", name, &pid) == 2 && pid > 1
        &&  s_is_splitmesh (pid)) {
            fprintf (stderr, "sm_mesh_teardown: SIGKILL %s (pid %d)\n", name, pid);
            kill (pid, SIGKILL);
        }
    }
    fclose (f);
}

const char *
sm_model_path (void)
{
    static char path [PATH_MAX];
    const char *env = getenv ("SPLITMESH_MODEL");
    const char *source = getenv ("SPLITMESH_SOURCE_DIR");
    if (env && *env) {
        snprintf (path, sizeof path, "%s", env);
        return access (path, R_OK) == 0 ? path : NULL;
    }
    snprintf (path, sizeof path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf",
              source && *source ? source : ".");
    return access (path, R_OK) == 0 ? path : NULL;
}

//  Appends text and ids to the result.
static int
s_gen_add (sm_gen_result_t *r, const char *text, const int32_t *ids, size_t n)
{
    size_t old = r->text ? strlen (r->text) : 0, add = text ? strlen (text) : 0;
    char *t = realloc (r->text, old + add + 1);
    if (!t)
        return -1;
    memcpy (t + old, text ? text : "", add);
    t [old + add] = '\0';
    r->text = t;
    if (n) {
        int32_t *p = realloc (r->tokens, (r->n_tokens + n) * sizeof *p);
        if (!p)
            return -1;
        memcpy (p + r->n_tokens, ids, n * sizeof *ids);
        r->tokens = p;
        r->n_tokens += n;
    }
    return 0;
}

sm_gen_result_t *
sm_generate (const char *endpoint, const void *body, size_t size, int timeout_ms)
{
    sm_gen_result_t *r = calloc (1, sizeof *r);
    if (!r)
        return NULL;
    r->status = -1;
    r->text = strdup ("");
    mdp_client_t *client = mdp_client_new (endpoint);
    if (!client) {
        snprintf (r->error, sizeof r->error, "bad endpoint %s", endpoint);
        return r;
    }
    double t0 = s_now ();
    mdp_client_send_mem (client, "generate", body, size);
    while (true) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (client, timeout_ms, &command, NULL);
        if (!reply) {
            snprintf (r->error, sizeof r->error, "no reply within %d ms", timeout_ms);
            break;
        }
        zframe_t *frame = zmsg_first (reply);
        wire_peek_t peek;
        wire_err_t err;
        if (!frame || wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err)) {
            snprintf (r->error, sizeof r->error, "malformed reply");
            zmsg_destroy (&reply);
            break;
        }
        if (peek.desc == &wire_error_desc || peek.status >= 400) {
            wire_error_t e;
            r->status = peek.status > 0 ? peek.status : 500;
            if (wire_decode_frame (&wire_error_desc, frame, &e, &err) == 0) {
                snprintf (r->error, sizeof r->error, "%s", e.error ? e.error : "");
                wire_msg_free (&wire_error_desc, &e);
            }
            zmsg_destroy (&reply);
            break;
        }
        if (command == MDPC_PARTIAL) {
            wire_generate_partial_t part;
            if (wire_decode_frame (&wire_generate_partial_desc, frame, &part, &err)) {
                snprintf (r->error, sizeof r->error, "bad partial: %s", err.text);
                zmsg_destroy (&reply);
                break;
            }
            s_gen_add (r, part.text, part.tokens, part.tokens_count);
            r->partials++;
            wire_msg_free (&wire_generate_partial_desc, &part);
            zmsg_destroy (&reply);
            continue;
        }
        wire_generate_final_t final;
        if (wire_decode_frame (&wire_generate_final_desc, frame, &final, &err)) {
            snprintf (r->error, sizeof r->error, "bad final: %s", err.text);
            zmsg_destroy (&reply);
            break;
        }
        s_gen_add (r, final.text, final.tokens, final.tokens_count);
        r->finish_reason = (int) final.finish_reason;
        if (final.stats) {
            r->has_stats = true;
            r->drafts_proposed = final.stats->drafts_proposed;
            r->drafts_accepted = final.stats->drafts_accepted;
            r->prompt_tokens = final.stats->prompt_tokens;
            for (size_t i = 0; i < final.stats->accept_by_pos_count && i < 16; i++)
                r->accept_by_pos [i] = final.stats->accept_by_pos [i];
            r->n_accept_by_pos = final.stats->accept_by_pos_count < 16?
                                 final.stats->accept_by_pos_count: 16;
            r->link_bytes_up = final.stats->link_bytes_up;
            r->link_bytes_down = final.stats->link_bytes_down;
            r->ttft_ms = final.stats->ttft_ms;
            r->per_token_ms = final.stats->per_token_ms;
        }
        wire_msg_free (&wire_generate_final_desc, &final);
        zmsg_destroy (&reply);
        r->status = 0;
        break;
    }
    r->elapsed_ms = (s_now () - t0) * 1000.0;
    mdp_client_destroy (&client);
    return r;
}

void
sm_gen_result_destroy (sm_gen_result_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->tokens);
        free ((*self_p)->text);
        free (*self_p);
        *self_p = NULL;
    }
}

static int
s_enum_index (const char *const *names, int count, const char *name)
{
    for (int i = 0; i < count; i++)
        if (!strcmp (names [i], name))
            return i;
    return 0;
}

sm_gen_result_t *
sm_generate_simple (const char *endpoint, const char *prompt, int max_tokens,
                    double temperature, int top_k, uint64_t seed, int draft_k,
                    const char *drafter, const char *mode, int timeout_ms)
{
    wire_generate_t req;
    wire_msg_init (&wire_generate_desc, &req);
    req.prompt = (char *) prompt;
    req.max_tokens = (uint32_t) max_tokens;
    req.temperature = temperature;
    req.top_k = (uint32_t) top_k;
    req.seed = seed;
    req.has_seed = true;
    req.stream = true;
    req.draft_k = (uint32_t) draft_k;
    req.drafter = (wire_drafter_t) s_enum_index (wire_drafter_names, WIRE_DRAFTER_COUNT_,
                                                 drafter ? drafter : "model");
    req.mode = (wire_mode_t) s_enum_index (wire_mode_names, WIRE_MODE_COUNT_,
                                           mode ? mode : "speculative");
    uint8_t *data = NULL;
    size_t size = 0;
    wire_err_t err;
    if (wire_encode (&wire_generate_desc, &req, &data, &size, &err)) {
        sm_gen_result_t *r = calloc (1, sizeof *r);
        r->status = -1;
        r->text = strdup ("");
        snprintf (r->error, sizeof r->error, "encode: %s", err.text);
        return r;
    }
    sm_gen_result_t *r = sm_generate (endpoint, data, size, timeout_ms);
    free (data);
    return r;
}
