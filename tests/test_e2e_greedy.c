/*  test_e2e_greedy.c: at temperature 0 the mesh's output is target-only greedy decoding.

    Issue 4's first Show: for 20 prompts x 128 tokens, draft lengths k in
    {1, 4, 8} and split depths L in {1, 2, 15}, the tokens the mesh streams
    (`splitmesh up` + `splitmesh generate --json`) equal, token for token,
    what the target model generates greedily in one process. The references
    are computed once, in this test, with the same engine calls as
    `splitmesh run` (tests/support/sm_ref.h) and the mesh's target format
    (w8); one mesh is started per L and serves every k and prompt.

    Activations cross the split as fp32 here (`up --act-dtype fp32`): the
    claim is that speculation and the split add no change at all, and the
    default int8 transport (one scale per position) is lossy by design: it
    changes logits slightly, so greedy text drifts from the reference after
    a few tokens on some prompts. bench/e2e measures how much (tokens
    agreeing before the first difference), next to what int8 saves on the
    link.

    The model is the real SmolLM2-135M-Instruct (skipped when absent: set
    SPLITMESH_MODEL or run scripts/fetch-model.sh). It is the longest test
    of the suite (its own timeout in tests/timeouts.cmake); E2E_GREEDY_PROMPTS
    and E2E_GREEDY_TOKENS shrink it for a quick local run, never in CI.
    Every mismatch is collected (L, k, prompt, first differing position)
    before the test fails, so one run shows the whole picture.
*/
#include <criterion/criterion.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sm_cli.h"
#include "sm_proc.h"
#include "sm_ref.h"

static const char *s_prompts [] = {
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "The quick brown fox",
    "In 1969, the first humans landed on",
    "A healthy breakfast usually includes",
    "The most important rule of programming is",
    "Photosynthesis is the process by which",
    "To make a cup of tea, first",
    "The largest planet in our solar system is",
    "My favourite book is",
    "The internet was invented to",
    "List three animals that live in the ocean:",
    "The theory of relativity states that",
    "Here is a short poem about the moon:",
    "The best way to learn a new language is",
    "Machine learning is a field of",
    "Yesterday I went to the market and bought",
};
#define S_PROMPTS ((int) (sizeof s_prompts / sizeof s_prompts [0]))

static char *s_run_dir;

static void
s_fini (void)
{
    if (s_run_dir) {
        sm_mesh_teardown (s_run_dir);
        sm_tmpdir_remove (&s_run_dir);
    }
    sm_proc_kill_all ();
}

TestSuite (e2e_greedy, .fini = s_fini);

static int
s_env_int (const char *name, int def, int lo, int hi)
{
    const char *v = getenv (name);
    int n = v && *v ? atoi (v) : def;
    return n < lo ? lo : n > hi ? hi : n;
}

//  Skips the test unless every service binary is built.
static void
s_need_services (void)
{
    const char *names [] = { "splitmesh-broker", "splitmesh-tokenizer", "splitmesh-split-prefix",
                             "splitmesh-cloud-target", "splitmesh-edge-draft" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [PATH_MAX];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
}

//  The references, computed in a thread while the meshes run.
typedef struct {
    sm_ref_t *ref;
    int n_prompts, n_tokens;
    int32_t *ids [S_PROMPTS];
    size_t n [S_PROMPTS];
    int failed;                 //  prompts whose reference failed
} s_refs_t;

static void *
s_refs_thread (void *arg)
{
    s_refs_t *refs = (s_refs_t *) arg;
    for (int p = 0; p < refs->n_prompts; p++)
        if (sm_ref_greedy (refs->ref, s_prompts [p], refs->n_tokens, &refs->ids [p], &refs->n [p]))
            refs->failed++;
    return NULL;
}

//  One client of the mesh: every `step`-th prompt from `first`, through
//  `splitmesh generate --json`. Results are checked in the main thread
//  (Criterion asserts belong there).
typedef struct {
    const char *splitmesh;      //  full path: sm_bin_dir is not thread-safe
    const char *run_dir, *k, *n_tokens;
    int first, step, n_prompts;
    sm_cli_result_t *results [S_PROMPTS];
} s_client_t;

static void *
s_client_thread (void *arg)
{
    s_client_t *c = (s_client_t *) arg;
    for (int p = c->first; p < c->n_prompts; p += c->step)
        c->results [p] = sm_cli_run (c->splitmesh, 600, NULL, (const char *const []) {
            "", "generate", "--run-dir", c->run_dir, "--json", "-n", c->n_tokens,
            "--temperature", "0", "--draft-k", c->k, s_prompts [p], NULL });
    return NULL;
}

#define S_CLIENTS 2             //  concurrent generations: draft and target overlap

Test (e2e_greedy, mesh_equals_target_only_greedy, .timeout = 3000)
{
    s_need_services ();
    const char *model = sm_model_path ();
    if (!model)
        cr_skip_test ("model file absent (set SPLITMESH_MODEL or run scripts/fetch-model.sh)");
    int n_prompts = s_env_int ("E2E_GREEDY_PROMPTS", S_PROMPTS, 1, S_PROMPTS);
    int n_tokens = s_env_int ("E2E_GREEDY_TOKENS", 128, 1, 1024);

    //  References: target-only greedy, one process, the mesh's target format.
    char err [512] = "";
    s_refs_t refs = { .n_prompts = n_prompts, .n_tokens = n_tokens };
    refs.ref = sm_ref_new (model, "w8", err, sizeof err);
    cr_assert (refs.ref, "cannot load %s: %s", model, err);
    pthread_t ref_thread;
    cr_assert_eq (pthread_create (&ref_thread, NULL, s_refs_thread, &refs), 0);

    char splitmesh [PATH_MAX];
    snprintf (splitmesh, sizeof splitmesh, "%s/splitmesh", sm_bin_dir ());
    const int splits [] = { 1, 2, 15 };
    const char *ks [] = { "1", "4", "8" };
    char n_buf [16];
    snprintf (n_buf, sizeof n_buf, "%d", n_tokens);
    //  outputs[si][ki][p]: the mesh's --json output.
    static char *outputs [3][3][S_PROMPTS];
    for (int si = 0; si < 3; si++) {
        char split [16];
        snprintf (split, sizeof split, "%d", splits [si]);
        s_run_dir = sm_tmpdir_new ("e2e_greedy");
        cr_assert (s_run_dir);
        sm_cli_result_t *up = SM_SPLITMESH (300, "up", "--run-dir", s_run_dir, "--model", model,
                                            "--split", split, "--format", "w8", "--act-dtype", "fp32",
                                            "--threads", "1", "--no-telemetry", "--timeout", "240");
        cr_assert_eq (up->status, 0, "splitmesh up --split %s failed:\n%s\n%s", split, up->out, up->err);
        sm_cli_result_destroy (&up);
        for (int ki = 0; ki < 3; ki++) {
            s_client_t clients [S_CLIENTS];
            pthread_t threads [S_CLIENTS];
            for (int c = 0; c < S_CLIENTS; c++) {
                clients [c] = (s_client_t) { .splitmesh = splitmesh, .run_dir = s_run_dir,
                                             .k = ks [ki], .n_tokens = n_buf,
                                             .first = c, .step = S_CLIENTS, .n_prompts = n_prompts };
                cr_assert_eq (pthread_create (&threads [c], NULL, s_client_thread, &clients [c]), 0);
            }
            for (int c = 0; c < S_CLIENTS; c++)
                pthread_join (threads [c], NULL);
            for (int p = 0; p < n_prompts; p++) {
                sm_cli_result_t *r = clients [p % S_CLIENTS].results [p];
                cr_assert (r, "no result for prompt %d", p);
                cr_assert_eq (r->status, 0, "generate (L=%s k=%s prompt %d) failed (status %d, "
                              "signal %d, %.1f s): %s %s", split, ks [ki], p, r->status, r->signal,
                              r->seconds, r->err, r->out);
                outputs [si][ki][p] = strdup (r->out);
                sm_cli_result_destroy (&r);
            }
            fprintf (stderr, "e2e_greedy: L=%s k=%s done (%d prompts x %d tokens)\n",
                     split, ks [ki], n_prompts, n_tokens);
        }
        sm_mesh_teardown (s_run_dir);
        sm_tmpdir_remove (&s_run_dir);
    }
    pthread_join (ref_thread, NULL);
    cr_assert_eq (refs.failed, 0, "%d references failed", refs.failed);

    int compared = 0, mismatches = 0;
    long total_tokens = 0, drafted = 0, accepted = 0;
    for (int si = 0; si < 3; si++)
        for (int ki = 0; ki < 3; ki++)
            for (int p = 0; p < n_prompts; p++) {
                const char *out = outputs [si][ki][p];
                size_t n = 0;
                int32_t *ids = sm_json_ints (out, "tokens", &n);
                cr_assert (ids || n == 0, "no tokens in %s", out);
                //  The mesh may report the end-of-generation token itself.
                while (n > 0 && sm_ref_is_eog (refs.ref, ids [n - 1]))
                    n--;
                size_t first = 0;
                while (first < n && first < refs.n [p] && ids [first] == refs.ids [p][first])
                    first++;
                compared++;
                total_tokens += (long) n;
                double v;
                if (sm_json_number (out, "drafts_proposed", &v) == 0)
                    drafted += (long) v;
                if (sm_json_number (out, "drafts_accepted", &v) == 0)
                    accepted += (long) v;
                if (first != n || n != refs.n [p]) {
                    mismatches++;
                    fprintf (stderr, "e2e_greedy: MISMATCH L=%d k=%s prompt %d: mesh %zu tokens, "
                                     "reference %zu, first difference at %zu (mesh %d, reference %d)\n",
                             splits [si], ks [ki], p, n, refs.n [p], first,
                             first < n ? ids [first] : -1,
                             first < refs.n [p] ? refs.ids [p][first] : -1);
                }
                free (ids);
                free (outputs [si][ki][p]);
            }
    fprintf (stderr, "e2e_greedy: %d generations compared, %d mismatches; %ld tokens, "
                     "drafts accepted %ld of %ld\n", compared, mismatches, total_tokens, accepted, drafted);
    for (int p = 0; p < n_prompts; p++)
        free (refs.ids [p]);
    sm_ref_destroy (&refs.ref);
    cr_assert_eq (mismatches, 0, "%d of %d generations differ from target-only greedy", mismatches, compared);
    cr_assert_eq (compared, n_prompts * 9);
}
