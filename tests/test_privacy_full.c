/*  test_privacy_full.c: privacy mode `full` (U-shaped split), on a real mesh.

    Issue 6's privacy Show: "In full mode, everything the cloud-side
    processes receive is recorded and contains no token id of the prompt or
    the answer." The mesh (`splitmesh up`, a tiny generated model) runs with
    SPLITMESH_TARGET_RECORD set, so cloud-target appends every request body
    it handles and every reply body it sends to a file (core/privacy_record.h).
    Then:

    - full mode: every recorded body decodes with the codec; no request
      carries `tokens`, `draft_tokens` or `drafts` (and none of the recorded
      bytes is a prefill/verify with a token field), no reply carries
      `next_token`; verify replies carry hidden states instead, and some
      verifies had drafts (more than one row), so the drafts' ids really
      stayed home.
    - control, prefix mode on the same mesh: the recorder does see
      `draft_tokens` and `next_token`, and the next_token values are tokens
      of the answer, which shows the recorder would catch a leak.
    - the output of full mode equals prefix mode token for token, at
      temperature 0 and with sampling (same seed): the edge's head and
      verifier compute what cloud-target's would.

    The second test does the same on the real model (SmolLM2-135M-Instruct,
    skipped without it): full mode, greedy, W8 weights and fp32 activations
    on the link (the setting where docs/pipeline.md and DESIGN.md promise
    target-only greedy output: the int8 link changes some argmaxes), split
    2. Everything cloud-target received and sent is recorded; no body has
    a token field, and no run of three consecutive prompt or answer token
    ids (the prompt's ids as the tokenizer makes them, MessagePack-encoded
    as the codec writes ints) appears anywhere in the recorded bytes. The
    answer equals target-only greedy decoding (tests/support/sm_ref.h, the
    same engine in one process) token for token.
*/
#define _GNU_SOURCE                 //  memmem
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <msgpack.h>
#include "codec.h"
#include "privacy_record.h"
#include "sm_cli.h"
#include "sm_proc.h"
#include "sm_ref.h"

static char *s_dir;
static char s_run_dir [1024], s_model [1024], s_record [1024];

static void
s_fini (void)
{
    if (s_dir) {
        sm_mesh_teardown (s_run_dir);
        sm_tmpdir_remove (&s_dir);
    }
    sm_proc_kill_all ();
}

TestSuite (privacy_full, .fini = s_fini, .timeout = 150);

static void
s_up_model (const char *model, const char *const *extra)
{
    const char *names [] = { "splitmesh-broker", "splitmesh-tokenizer", "splitmesh-split-prefix",
                             "splitmesh-cloud-target", "splitmesh-edge-draft" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [PATH_MAX];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
    s_dir = sm_tmpdir_new ("privacy_full");
    cr_assert (s_dir);
    snprintf (s_run_dir, sizeof s_run_dir, "%s/run", s_dir);
    snprintf (s_record, sizeof s_record, "%s/target.rec", s_dir);
    snprintf (s_model, sizeof s_model, "%s", model);
    char env_rec [1100];
    snprintf (env_rec, sizeof env_rec, "%s=%s", PRIVACY_RECORD_ENV, s_record);
    const char *env [] = { env_rec, NULL };
    const char *argv [32] = { "", "up", "--run-dir", s_run_dir, "--model", s_model,
                              "--no-telemetry", "--no-gateway", "--timeout", "120" };
    int argc = 10;
    for (int i = 0; extra [i] && argc < 31; i++)
        argv [argc++] = extra [i];
    argv [argc] = NULL;
    sm_cli_result_t *r = sm_cli_run ("splitmesh", 180, env, argv);
    cr_assert_eq (r->status, 0, "up failed:\n%s\n%s", r->out, r->err);
    sm_cli_result_destroy (&r);
}

static void
s_up (void)
{
    const char *names [] = { "splitmesh-broker", "splitmesh-tokenizer", "splitmesh-split-prefix",
                             "splitmesh-cloud-target", "splitmesh-edge-draft" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [PATH_MAX];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
    s_dir = sm_tmpdir_new ("privacy_full");
    cr_assert (s_dir);
    snprintf (s_run_dir, sizeof s_run_dir, "%s/run", s_dir);
    snprintf (s_model, sizeof s_model, "%s/tiny.gguf", s_dir);
    snprintf (s_record, sizeof s_record, "%s/target.rec", s_dir);
    sm_cli_result_t *r = SM_SPLITMESH (60, "tiny-model", "--out", s_model, "--layers", "4",
                                       "--seed", "11", "--ctx", "256");
    cr_assert_eq (r->status, 0, "%s", r->err);
    sm_cli_result_destroy (&r);
    char env_rec [1100];
    snprintf (env_rec, sizeof env_rec, "%s=%s", PRIVACY_RECORD_ENV, s_record);
    const char *env [] = { env_rec, NULL };
    //  w8 target: cloud-target's head and the edge's (W8 by default) agree.
    const char *argv [] = { "", "up", "--run-dir", s_run_dir, "--model", s_model, "--split", "2",
                            "--format", "w8", "--no-telemetry", "--timeout", "60", NULL };
    r = sm_cli_run ("splitmesh", 120, env, argv);
    cr_assert_eq (r->status, 0, "up failed:\n%s\n%s", r->out, r->err);
    sm_cli_result_destroy (&r);
}

static const char *s_fox = "The quick brown fox jumps over the lazy dog";

//  Generates with `splitmesh generate --json`; returns the token ids
//  (caller frees) and their count. The recorder's file is emptied first.
static int32_t *
s_generate_prompt (const char *privacy, const char *temperature, const char *prompt,
                   const char *max_tokens, size_t *n)
{
    cr_assert_eq (truncate (s_record, 0), 0, "cannot empty %s", s_record);
    sm_cli_result_t *r = SM_SPLITMESH (120, "generate", "--run-dir", s_run_dir, "--json",
                                       "--privacy", privacy, "--temperature", temperature,
                                       "--seed", "7", "-n", max_tokens, "--draft-k", "4", "--timeout", "90",
                                       prompt);
    cr_assert_eq (r->status, 0, "generate --privacy %s failed:\n%s\n%s", privacy, r->out, r->err);
    int32_t *tokens = sm_json_ints (r->out, "tokens", n);
    cr_assert (tokens && *n > 0, "no tokens in %s", r->out);
    cr_assert (!strstr (r->out, "\"degraded\":true"), "the generation did not reach the cloud");
    sm_cli_result_destroy (&r);
    return tokens;
}

static int32_t *
s_generate (const char *privacy, const char *temperature, size_t *n)
{
    return s_generate_prompt (privacy, temperature, s_fox, "40", n);
}

typedef struct {
    int requests, replies;
    int prefills, verifies, multi_row_verifies;
    int token_fields;           //  requests with tokens / draft_tokens / drafts
    int next_tokens;            //  replies with next_token
    int hidden_replies;         //  replies with hidden states
    int32_t next [512];         //  next_token values seen
    int n_next;
} s_seen_t;

//  Decodes every record with the codec and counts what the cloud saw.
static s_seen_t
s_read_record (void)
{
    s_seen_t seen;
    memset (&seen, 0, sizeof seen);
    FILE *f = fopen (s_record, "rb");
    cr_assert (f, "no record file %s", s_record);
    char dir;
    uint8_t *data;
    size_t size;
    int rc;
    while ((rc = privacy_record_read (f, &dir, &data, &size)) == 1) {
        wire_peek_t peek;
        wire_err_t err;
        cr_assert_eq (wire_peek (data, size, &peek, &err), 0, "undecodable record: %s", err.text);
        cr_assert (peek.desc, "record of unknown type '%s'", peek.tag);
        if (dir == 'Q') {
            seen.requests++;
            if (peek.desc == &wire_prefill_desc) {
                wire_prefill_t m;
                cr_assert_eq (wire_decode (&wire_prefill_desc, data, size, &m, &err), 0, "%s", err.text);
                seen.prefills++;
                if (m.tokens_count)
                    seen.token_fields++;
                wire_msg_free (&wire_prefill_desc, &m);
            }
            else
            if (peek.desc == &wire_verify_desc) {
                wire_verify_t m;
                cr_assert_eq (wire_decode (&wire_verify_desc, data, size, &m, &err), 0, "%s", err.text);
                seen.verifies++;
                if (m.activations && m.activations->n_pos > 1)
                    seen.multi_row_verifies++;
                if (m.tokens_count || m.draft_tokens_count || m.drafts_count)
                    seen.token_fields++;
                wire_msg_free (&wire_verify_desc, &m);
            }
            else
                cr_assert (peek.desc == &wire_session_close_desc,
                           "unexpected request '%s' at the target", peek.desc->name);
        }
        else {
            cr_assert_eq (dir, 'R', "bad record direction %d", dir);
            seen.replies++;
            if (peek.desc == &wire_prefill_reply_desc) {
                wire_prefill_reply_t m;
                cr_assert_eq (wire_decode (&wire_prefill_reply_desc, data, size, &m, &err), 0, "%s", err.text);
                if (m.has_next_token && seen.n_next < 512)
                    seen.next [seen.n_next++] = m.next_token;
                seen.next_tokens += m.has_next_token;
                seen.hidden_replies += m.hidden != NULL;
                wire_msg_free (&wire_prefill_reply_desc, &m);
            }
            else
            if (peek.desc == &wire_verify_reply_desc) {
                wire_verify_reply_t m;
                cr_assert_eq (wire_decode (&wire_verify_reply_desc, data, size, &m, &err), 0, "%s", err.text);
                if (m.has_next_token && seen.n_next < 512)
                    seen.next [seen.n_next++] = m.next_token;
                seen.next_tokens += m.has_next_token;
                seen.hidden_replies += m.hidden != NULL;
                wire_msg_free (&wire_verify_reply_desc, &m);
            }
            else
            if (peek.desc == &wire_error_desc) {
                //  The one error the protocol expects: edge-draft pipelines
                //  verifies (prefix mode), and one sent ahead of a verify
                //  that then rejected a draft starts past the target's
                //  cache: 409 "stale pipelined verify", skipped by the
                //  edge (docs/pipeline.md). Anything else is a failure.
                wire_error_t e;
                cr_assert_eq (wire_decode (&wire_error_desc, data, size, &e, &err), 0, "%s", err.text);
                bool gap = e.status == 409 && e.error && strstr (e.error, "stale pipelined verify");
                cr_assert (gap, "the target answered an error: %u %s", e.status, e.error ? e.error : "");
                wire_msg_free (&wire_error_desc, &e);
            }
        }
        free (data);
    }
    cr_assert_eq (rc, 0, "truncated record file");
    fclose (f);
    return seen;
}

Test (privacy_full, cloud_sees_no_token_ids_and_output_equals_prefix_mode)
{
    s_up ();
    //  Full mode, greedy.
    size_t n_full = 0;
    int32_t *full = s_generate ("full", "0", &n_full);
    s_seen_t seen = s_read_record ();
    cr_assert_gt (seen.prefills, 0, "the recorder saw no prefill");
    cr_assert_gt (seen.verifies, 0, "the recorder saw no verify");
    cr_assert_gt (seen.multi_row_verifies, 0, "no verify carried drafts (rows > 1)");
    cr_assert_eq (seen.replies, seen.requests, "%d replies for %d requests", seen.replies, seen.requests);
    cr_assert_eq (seen.token_fields, 0, "%d requests to the target carried token ids in full mode",
                  seen.token_fields);
    cr_assert_eq (seen.next_tokens, 0, "%d target replies carried next_token in full mode",
                  seen.next_tokens);
    cr_assert_eq (seen.hidden_replies, seen.prefills + seen.verifies);
    cr_log_info ("full mode: %zu tokens; the target got %d prefills, %d verifies (%d with drafts), "
                 "%d requests with token ids, %d replies with next_token",
                 n_full, seen.prefills, seen.verifies, seen.multi_row_verifies, seen.token_fields,
                 seen.next_tokens);

    //  Control: prefix mode, same prompt: the recorder does see ids, and
    //  they are the answer's tokens.
    size_t n_prefix = 0;
    int32_t *prefix = s_generate ("prefix", "0", &n_prefix);
    s_seen_t ctl = s_read_record ();
    cr_assert_gt (ctl.next_tokens, 0, "control: the recorder saw no next_token in prefix mode");
    cr_assert_gt (ctl.token_fields, 0, "control: no draft_tokens seen in prefix mode");
    cr_assert_eq (ctl.hidden_replies, 0);
    cr_log_info ("prefix mode (control): %zu tokens; %d requests with token ids, %d replies with "
                 "next_token", n_prefix, ctl.token_fields, ctl.next_tokens);
    int found = 0;
    for (int i = 0; i < ctl.n_next; i++)
        for (size_t j = 0; j < n_prefix; j++)
            if (ctl.next [i] == prefix [j]) {
                found++;
                break;
            }
    cr_assert_gt (found, 0, "control: no recorded next_token is a token of the answer");

    //  Greedy: full mode's answer equals prefix mode's.
    cr_assert_eq (n_full, n_prefix, "full mode gave %zu tokens, prefix mode %zu", n_full, n_prefix);
    for (size_t i = 0; i < n_full; i++)
        cr_assert_eq (full [i], prefix [i], "token %zu: full %d, prefix %d", i, full [i], prefix [i]);
    free (full);
    free (prefix);

    //  Sampling, same seed: equal too (same logits, same seeded verifier).
    full = s_generate ("full", "0.8", &n_full);
    seen = s_read_record ();
    cr_assert_eq (seen.token_fields + seen.next_tokens, 0, "sampling: token ids reached the target");
    prefix = s_generate ("prefix", "0.8", &n_prefix);
    cr_assert_eq (n_full, n_prefix, "sampling: full %zu tokens, prefix %zu", n_full, n_prefix);
    for (size_t i = 0; i < n_full; i++)
        cr_assert_eq (full [i], prefix [i], "sampling, token %zu: full %d, prefix %d", i, full [i], prefix [i]);
    free (full);
    free (prefix);
}

//  True when the MessagePack encoding of ids[0..count) (the codec's ints,
//  one after another) occurs anywhere in the recorded bytes.
static bool
s_record_holds_run (const int32_t *ids, size_t count)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    for (size_t i = 0; i < count; i++)
        msgpack_pack_int64 (&pk, ids [i]);
    FILE *f = fopen (s_record, "rb");
    cr_assert (f);
    char dir;
    uint8_t *data;
    size_t size;
    bool found = false;
    while (!found && privacy_record_read (f, &dir, &data, &size) == 1) {
        found = memmem (data, size, sbuf.data, sbuf.size) != NULL;
        free (data);
    }
    fclose (f);
    msgpack_sbuffer_destroy (&sbuf);
    return found;
}

Test (privacy_full, real_model_cloud_sees_no_token_ids_and_output_equals_target_greedy,
      .timeout = 600)
{
    const char *model = sm_model_path ();
    if (!model)
        cr_skip_test ("the real model is absent (set SPLITMESH_MODEL or run scripts/fetch-model.sh)");
    const char *prompt = "Once upon a time, in a small village by the sea, there lived";
    //  The reference first (one process), while nothing else runs.
    char err [512] = "";
    sm_ref_t *ref = sm_ref_new (model, "w8", err, sizeof err);
    cr_assert (ref, "cannot load %s: %s", model, err);
    int32_t *prompt_ids = NULL, *expect = NULL;
    size_t n_prompt = 0, n_expect = 0;
    cr_assert_eq (sm_ref_tokenize (ref, prompt, &prompt_ids, &n_prompt), 0);
    cr_assert_eq (sm_ref_greedy (ref, prompt, 32, &expect, &n_expect), 0);
    sm_ref_destroy (&ref);
    cr_assert_geq (n_prompt, 8);

    const char *extra [] = { "--split", "2", "--format", "w8", "--act-dtype", "fp32", NULL };
    s_up_model (model, extra);
    size_t n = 0;
    int32_t *answer = s_generate_prompt ("full", "0", prompt, "32", &n);
    s_seen_t seen = s_read_record ();
    cr_assert_gt (seen.prefills, 0, "the recorder saw no prefill");
    cr_assert_gt (seen.multi_row_verifies, 0, "no verify carried drafts (rows > 1)");
    cr_assert_eq (seen.replies, seen.requests, "%d replies for %d requests", seen.replies, seen.requests);
    cr_assert_eq (seen.token_fields, 0, "%d requests to the target carried token ids", seen.token_fields);
    cr_assert_eq (seen.next_tokens, 0, "%d target replies carried next_token", seen.next_tokens);
    cr_assert_eq (seen.hidden_replies, seen.prefills + seen.verifies);
    //  No run of three prompt ids or three answer ids in any recorded byte.
    int runs = 0;
    for (size_t i = 0; i + 3 <= n_prompt; i++, runs++)
        cr_assert (!s_record_holds_run (prompt_ids + i, 3),
                   "prompt ids %d %d %d reached the cloud", prompt_ids [i], prompt_ids [i + 1],
                   prompt_ids [i + 2]);
    for (size_t i = 0; i + 3 <= n; i++, runs++)
        cr_assert (!s_record_holds_run (answer + i, 3),
                   "answer ids %d %d %d reached the cloud", answer [i], answer [i + 1], answer [i + 2]);
    cr_log_info ("real model, full mode: %zu tokens; the target got %d prefills, %d verifies "
                 "(%d with drafts); %d id runs searched, none found", n, seen.prefills,
                 seen.verifies, seen.multi_row_verifies, runs);
    //  Control: prefix mode on the same mesh sends the drafts' ids, so the
    //  same byte search finds runs of answer ids in the record.
    size_t n_prefix = 0;
    int32_t *prefix = s_generate_prompt ("prefix", "0", prompt, "32", &n_prefix);
    int found = 0;
    for (size_t i = 0; i + 3 <= n_prefix; i++)
        found += s_record_holds_run (prefix + i, 3);
    cr_assert_gt (found, 0, "control: no run of answer ids found in prefix mode's record");
    cr_log_info ("control, prefix mode: %d runs of 3 answer ids found in the record", found);
    free (prefix);
    //  Target-only greedy, token for token.
    cr_assert_eq (n, n_expect, "full mode gave %zu tokens, target-only greedy %zu", n, n_expect);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq (answer [i], expect [i], "token %zu: full mode %d, target-only %d",
                      i, answer [i], expect [i]);
    free (answer);
    free (expect);
    free (prompt_ids);
}
