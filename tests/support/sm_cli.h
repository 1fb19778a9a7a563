/*  sm_cli.h: running the `splitmesh` command and a whole mesh from tests.

    The end-to-end tests drive the mesh the way a user does: `splitmesh up`
    (daemons in a run dir), `splitmesh generate --json`, `splitmesh down`.
    This module runs one command with a deadline and captures its output
    (through temp files, so a chatty child never blocks on a pipe), reads
    the token ids out of generate's JSON, and tears a mesh down for sure:
    `splitmesh down`, then SIGKILL of every pid still listed in the run
    dir's mesh.env (the daemons are not our children, so sm_proc's
    registry cannot reap them).
*/
#ifndef SM_CLI_H_INCLUDED
#define SM_CLI_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int status;                 //  exit status; -1 killed by the deadline or a signal
    int signal;                 //  the signal that ended it (SIGKILL after the deadline), else 0
    char *out;                  //  all of stdout, NUL-terminated
    char *err;                  //  all of stderr, NUL-terminated
    double seconds;             //  wall time
} sm_cli_result_t;

//  Runs `program` (a path, or a bare name looked up in sm_bin_dir) with the
//  NULL-terminated argv (argv[0] ignored), environment = ours plus `env`
//  (NULL-terminated "KEY=VALUE" list, may be NULL). Kills it after
//  timeout_s. Caller owns the result: sm_cli_result_destroy.
sm_cli_result_t *
    sm_cli_run (const char *program, int timeout_s, const char *const *env,
                const char *const *argv);

//  Frees the result, nullifies *self_p.
void
    sm_cli_result_destroy (sm_cli_result_t **self_p);

//  Convenience: `splitmesh ARGS...` with no extra environment.
#define SM_SPLITMESH(timeout_s, ...) \
    sm_cli_run ("splitmesh", (timeout_s), NULL, (const char *const []) { "", __VA_ARGS__, NULL })

//  Reads the integer array under "key":[...] in a JSON text into a new
//  array (caller frees); sets *count. NULL when the key is absent or bad.
int32_t *
    sm_json_ints (const char *json, const char *key, size_t *count);

//  The number under "key": in a JSON text (first occurrence). Returns 0
//  and sets *value, or -1.
int
    sm_json_number (const char *json, const char *key, double *value);

//  Stops the mesh in run_dir: `splitmesh down --run-dir DIR`, then SIGKILLs
//  any pid of its mesh.env still alive. Safe when no mesh runs there.
void
    sm_mesh_teardown (const char *run_dir);

//  The model for tests: $SPLITMESH_MODEL, else <source>/models/ (where
//  scripts/fetch-model.sh caches it). Returns a static path, or NULL when absent.
const char *
    sm_model_path (void);

//  What one `generate` request returned (sm_generate).
typedef struct {
    int status;                 //  0 FINAL received; 4xx/5xx error reply; -1 timeout/bad reply
    char error [512];           //  error text (error replies, local failures)
    int32_t *tokens;            //  every token id, partials and final
    size_t n_tokens;
    char *text;                 //  all text, NUL-terminated
    int finish_reason;          //  wire_finish_reason_t
    bool has_stats;
    uint64_t drafts_proposed, drafts_accepted, link_bytes_up, link_bytes_down;
    uint64_t prompt_tokens;     //  stats.prompt_tokens
    uint64_t accept_by_pos [16];        //  stats.accept_by_pos (first 16 positions)
    size_t n_accept_by_pos;
    double ttft_ms, per_token_ms, elapsed_ms;
    int partials;               //  PARTIAL frames received
} sm_gen_result_t;

//  Sends `size` bytes (a `generate` body) to the `generate` service of the
//  broker at endpoint and collects PARTIALs and the FINAL, waiting at most
//  timeout_ms between replies. Caller owns the result: sm_gen_result_destroy.
sm_gen_result_t *
    sm_generate (const char *endpoint, const void *body, size_t size, int timeout_ms);

void
    sm_gen_result_destroy (sm_gen_result_t **self_p);

//  Encodes a generate request (prompt, max_tokens, temperature, top_k,
//  seed, draft_k, drafter and mode by name, stream on) and calls
//  sm_generate.
sm_gen_result_t *
    sm_generate_simple (const char *endpoint, const char *prompt, int max_tokens,
                        double temperature, int top_k, uint64_t seed, int draft_k,
                        const char *drafter, const char *mode, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif
