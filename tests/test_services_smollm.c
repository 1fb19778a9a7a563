/*  test_services_smollm.c: split-prefix + cloud-target on the real
    SmolLM2-135M model (skipped when the file is absent: set SPLITMESH_MODEL
    or run scripts/fetch-model.sh).

    Both services run at w8 with the split at L = 15 (of 30). With fp32
    activations on the wire the split decoding must equal the single-process
    model at the same format token for token, and its text what `splitmesh
    run --format w8` prints; the tokenizer service renders the chat exactly
    as `splitmesh run --chat` does; with the default int8 activations the test reports how
    many of the tokens agree (the quantisation of the residual stream may
    flip a near-tie) and requires the first ones to.
*/
#include <criterion/criterion.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "codec.h"
#include "kvcache.h"
#include "model.h"
#include "sm_mdp.h"
#include "sm_proc.h"
#include "tokenizer.h"

#define S_COUNT 24
#define S_TIMEOUT 20000

static char s_path [1024];
static char *s_dir;
static char s_broker [64];
static pid_t s_prefix_pid;

static void
s_model_or_skip (void)
{
    const char *env = getenv ("SPLITMESH_MODEL");
    if (env && *env)
        snprintf (s_path, sizeof s_path, "%s", env);
    else
        snprintf (s_path, sizeof s_path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                  SPLITMESH_SOURCE_DIR);
    if (access (s_path, R_OK))
        cr_skip_test ("model file %s absent (set SPLITMESH_MODEL or run scripts/fetch-model.sh)",
                      s_path);
}

static void
s_fini (void)
{
    sm_proc_kill_all ();
    if (s_dir)
        sm_tmpdir_remove (&s_dir);
}

static zframe_t *
s_call (const char *service, const wire_desc_t *desc, const void *msg)
{
    zframe_t *body = wire_encode_frame (desc, msg, NULL);
    cr_assert_not_null (body);
    zmsg_t *req = zmsg_new ();
    zmsg_append (req, &body);
    zmsg_t *reply = sm_mdp_call (s_broker, service, &req, S_TIMEOUT);
    cr_assert_not_null (reply, "no reply from %s", service);
    zframe_t *frame = zmsg_pop (reply);
    zmsg_destroy (&reply);
    wire_peek_t peek;
    wire_err_t err;
    cr_assert_eq (wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err), 0);
    cr_assert_eq (peek.status, 0, "%s answered an error %d", service, peek.status);
    return frame;
}

static void
s_start_prefix (const char *dtype)
{
    char log [600];
    snprintf (log, sizeof log, "%s/prefix-%s.log", s_dir, dtype);
    s_prefix_pid = sm_spawn (log, "splitmesh-split-prefix", "--broker", s_broker, "--model", s_path,
                             "--split", "15", "--format", "w8", "--act-dtype", dtype,
                             "--threads", "1", NULL);
    cr_assert_gt (s_prefix_pid, 0);
    cr_assert (sm_mdp_wait_workers (s_broker, "prefix", 1, S_TIMEOUT));
}

//  Greedy decoding through the services; returns the tokens in out.
static void
s_generate (const char *session, const int32_t *prompt, size_t n, int32_t *out)
{
    wire_prefill_t pre;
    wire_msg_init (&wire_prefill_desc, &pre);
    pre.session = (char *) session;
    pre.tokens = (int32_t *) prompt;
    pre.tokens_count = n;
    zframe_t *f = s_call ("prefix", &wire_prefill_desc, &pre);
    wire_activations_reply_t a;
    cr_assert_eq (wire_decode_frame (&wire_activations_reply_desc, f, &a, NULL), 0);
    zframe_destroy (&f);
    wire_msg_init (&wire_prefill_desc, &pre);
    pre.session = (char *) session;
    pre.activations = a.activations;
    f = s_call ("target", &wire_prefill_desc, &pre);
    wire_prefill_reply_t pr;
    cr_assert_eq (wire_decode_frame (&wire_prefill_reply_desc, f, &pr, NULL), 0);
    zframe_destroy (&f);
    wire_msg_free (&wire_activations_reply_desc, &a);
    out [0] = pr.next_token;
    uint32_t pos = (uint32_t) n;
    for (int i = 1; i < S_COUNT; i++, pos++) {
        wire_extend_t ext;
        wire_msg_init (&wire_extend_desc, &ext);
        ext.session = (char *) session;
        ext.pos = pos;
        ext.tokens = &out [i - 1];
        ext.tokens_count = 1;
        f = s_call ("prefix", &wire_extend_desc, &ext);
        cr_assert_eq (wire_decode_frame (&wire_activations_reply_desc, f, &a, NULL), 0);
        zframe_destroy (&f);
        wire_verify_t v;
        wire_msg_init (&wire_verify_desc, &v);
        v.session = (char *) session;
        v.pos = pos;
        v.activations = a.activations;
        f = s_call ("target", &wire_verify_desc, &v);
        wire_verify_reply_t vr;
        cr_assert_eq (wire_decode_frame (&wire_verify_reply_desc, f, &vr, NULL), 0);
        zframe_destroy (&f);
        out [i] = vr.next_token;
        wire_msg_free (&wire_verify_reply_desc, &vr);
        wire_msg_free (&wire_activations_reply_desc, &a);
    }
}

Test (services_smollm, split_l15_equals_single_process, .fini = s_fini, .timeout = 110)
{
    s_model_or_skip ();
    s_dir = sm_tmpdir_new ("svcsmol");
    cr_assert_not_null (s_dir);
    snprintf (s_broker, sizeof s_broker, "tcp://127.0.0.1:%d", sm_free_tcp_port ());
    char log [600];
    snprintf (log, sizeof log, "%s/broker.log", s_dir);
    cr_assert_gt (sm_spawn (log, "splitmesh-broker", "-e", s_broker, NULL), 0);
    snprintf (log, sizeof log, "%s/target.log", s_dir);
    cr_assert_gt (sm_spawn (log, "splitmesh-cloud-target", "--broker", s_broker, "--model", s_path,
                            "--split", "15", "--format", "w8", "--stage-only", "--threads", "1",
                            NULL), 0);
    snprintf (log, sizeof log, "%s/tokenizer.log", s_dir);
    cr_assert_gt (sm_spawn (log, "splitmesh-tokenizer", "--broker", s_broker, "--model", s_path,
                            NULL), 0);
    s_start_prefix ("fp32");
    cr_assert (sm_mdp_wait_workers (s_broker, "target", 1, S_TIMEOUT));
    cr_assert (sm_mdp_wait_workers (s_broker, "tokenizer", 1, S_TIMEOUT));

    //  The reference: the whole model at w8 in this process, greedy.
    char err [256];
    model_options_t mo = model_options_default ();
    mo.format = QFMT_W8;
    mo.n_threads = 1;
    model_t *model = model_load (s_path, &mo, err, sizeof err);
    cr_assert_not_null (model, "%s", err);
    tokenizer_t *tok = tokenizer_new_from_gguf (model_gguf (model), err, sizeof err);
    const char *text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    int32_t *prompt;
    size_t n;
    cr_assert_eq (tokenizer_encode (tok, text, strlen (text), true, true, &prompt, &n, err, sizeof err), 0);
    //  The tokenizer service renders a one-message chat as `splitmesh run
    //  --chat` does: SmolLM2's default system prompt, then the turn.
    wire_chat_message_t chat [1] = { { .role = WIRE_ROLE_USER, .content = "What is the capital of France?" } };
    wire_tokenize_t treq;
    wire_msg_init (&wire_tokenize_desc, &treq);
    treq.chat = chat;
    treq.chat_count = 1;
    zframe_t *tf = s_call ("tokenizer", &wire_tokenize_desc, &treq);
    wire_tokenize_reply_t tr;
    cr_assert_eq (wire_decode_frame (&wire_tokenize_reply_desc, tf, &tr, NULL), 0);
    zframe_destroy (&tf);
    const char *chatml = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                         "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
                         "<|im_end|>\n<|im_start|>assistant\n";
    int32_t *chat_ids;
    size_t n_chat;
    cr_assert_eq (tokenizer_encode (tok, chatml, strlen (chatml), true, true, &chat_ids, &n_chat,
                                    err, sizeof err), 0);
    cr_assert_eq (tr.tokens_count, n_chat);
    cr_assert_arr_eq (tr.tokens, chat_ids, n_chat * sizeof *chat_ids);
    free (chat_ids);
    wire_msg_free (&wire_tokenize_reply_desc, &tr);

    const model_config_t *c = model_config (model);
    kvcache_t *kv = kvcache_new (model, 256);
    float *x = malloc (n * c->dim * sizeof *x);
    float *logits = malloc (c->vocab_size * sizeof *logits);
    int32_t ref [S_COUNT];
    cr_assert_eq (model_embed (model, prompt, (int) n, x), 0);
    cr_assert_eq (model_forward (model, kv, 0, c->n_layers, 0, (int) n, x), 0);
    cr_assert_eq (model_head (model, x + (n - 1) * c->dim, 1, logits), 0);
    for (int i = 0; i < S_COUNT; i++) {
        int best = 0;
        for (int t = 1; t < c->vocab_size; t++)
            if (logits [t] > logits [best])
                best = t;
        ref [i] = best;
        cr_assert_eq (model_embed (model, &ref [i], 1, x), 0);
        cr_assert_eq (model_forward (model, kv, 0, c->n_layers, (int) n + i, 1, x), 0);
        cr_assert_eq (model_head (model, x, 1, logits), 0);
    }
    free (x);
    free (logits);
    kvcache_destroy (&kv);

    int32_t got [S_COUNT];
    s_generate ("fp32", prompt, n, got);
    cr_assert_arr_eq (got, ref, sizeof ref, "fp32 split at L=15 differs from the whole model");

    //  And the text is what `splitmesh run --format w8` prints.
    char run_log [600], count [16];
    snprintf (run_log, sizeof run_log, "%s/run.log", s_dir);
    snprintf (count, sizeof count, "%d", S_COUNT);
    pid_t run = sm_spawn (run_log, "splitmesh", "run", "-p", text, "-n", count, "--format", "w8",
                          "--threads", "1", "--ignore-eos", "--model", s_path, NULL);
    int status = -1;
    cr_assert_eq (sm_wait (run, 60000, &status), 0);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "splitmesh run failed: %s", run_log);
    char *split_text;
    size_t split_len;
    cr_assert_eq (tokenizer_decode (tok, got, S_COUNT, false, false, &split_text, &split_len,
                                    err, sizeof err), 0);
    FILE *f = fopen (run_log, "r");
    cr_assert_not_null (f);
    char printed [4096];
    size_t len = fread (printed, 1, sizeof printed - 1, f);
    printed [len] = 0;
    fclose (f);
    //  The text comes first, then the statistics (stderr, unbuffered, may
    //  overtake stdout's final newline, which is still in its buffer).
    cr_assert (len > split_len && memcmp (printed, split_text, split_len) == 0
               && (printed [split_len] == '\n' || strncmp (printed + split_len, "model:", 6) == 0),
               "splitmesh run printed '%.*s', the split services gave '%s'",
               (int) (split_len + 1), printed, split_text);
    free (split_text);

    //  int8 activations (the default).
    sm_kill (s_prefix_pid, SIGTERM, 5000);
    s_start_prefix ("int8");
    s_generate ("int8", prompt, n, got);
    int agree = 0;
    while (agree < S_COUNT && got [agree] == ref [agree])
        agree++;
    char *a, *b;
    size_t la, lb;
    tokenizer_decode (tok, ref, S_COUNT, false, false, &a, &la, err, sizeof err);
    tokenizer_decode (tok, got, S_COUNT, false, false, &b, &lb, err, sizeof err);
    cr_log_info ("int8 activations: first %d of %d greedy tokens equal the w8 reference\n"
                 "  reference: %s\n  int8:      %s", agree, S_COUNT, a, b);
    fprintf (stderr, "int8 activations at L=15: %d/%d leading greedy tokens equal\n", agree, S_COUNT);
    free (a);
    free (b);
    cr_assert_geq (agree, 4, "int8 activations diverge from the reference at token %d", agree);
    free (prompt);
    tokenizer_destroy (&tok);
    model_destroy (&model);
}
