/*  cmd_generate.c: `splitmesh generate`, one request to a running mesh.

    An MDP client of the mesh's `generate` service (edge-draft, on the
    device broker named in <run-dir>/mesh.env, or --broker). It sends one
    `generate` request with `stream` on, writes each PARTIAL's text to
    stdout as it arrives, and prints the FINAL's statistics on stderr.
    With --json, stdout gets one JSON object instead (the whole text, every
    token id, the finish reason, the service's statistics and the client's
    own timing): tests and bench/e2e read that.

    Errors from the mesh (4xx/5xx replies) are printed with their status
    and text; the exit status is then 1. Usage errors exit 2.
*/
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <czmq.h>
#include "cli.h"
#include "cli_args.h"
#include "codec.h"
#include "mdp_client.h"
#include "mdp_common.h"
#include "mesh_state.h"

#define S_MAX_STOPS 8

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh generate [options] PROMPT\n"
        "  -n, --tokens N        most tokens to generate (default 128)\n"
        "      --temperature T   0 = greedy (default 0)\n"
        "      --top-k K         keep the K most likely tokens (0 = all)\n"
        "      --top-p P         nucleus mass (1 = all)\n"
        "      --seed S          sampling seed (default: the service picks one)\n"
        "      --draft-k K       tokens drafted per round (default 4; 0 = no drafts)\n"
        "      --drafter D       model or ngram (default model)\n"
        "      --mode M          speculative, cloud_only or edge_only (default speculative)\n"
        "      --privacy P       prefix, full or none (default prefix)\n"
        "      --stop S          stop string (repeatable, at most 8)\n"
        "      --chat            send the prompt as a user chat message (chat template)\n"
        "      --json            print the result as one JSON object on stdout\n"
        "      --run-dir DIR     the mesh's run dir (as given to `splitmesh up`)\n"
        "      --broker EP       device broker endpoint (default: from the run dir)\n"
        "      --timeout S       give up after S seconds without a reply (default 300)\n"
        "Text streams to stdout, statistics go to stderr.\n");
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

//  Index of name in a NULL-terminated-by-count enum table, or -1.
static int
s_enum (const char *const *names, int count, const char *name)
{
    for (int i = 0; i < count; i++)
        if (!strcmp (names [i], name))
            return i;
    return -1;
}

//  Writes s as a JSON string.
static void
s_json_str (FILE *f, const char *s, size_t n)
{
    fputc ('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s [i];
        if (c == '"' || c == '\\')
            fprintf (f, "\\%c", c);
        else if (c == '\n')
            fputs ("\\n", f);
        else if (c == '\r')
            fputs ("\\r", f);
        else if (c == '\t')
            fputs ("\\t", f);
        else if (c < 0x20)
            fprintf (f, "\\u%04x", c);
        else
            fputc (c, f);
    }
    fputc ('"', f);
}

//  Times a request lost with its broker is sent again before any token.
#define S_RESENDS 3

//  A growable buffer of the generated text and token ids.
typedef struct {
    char *text;                 //  len bytes, NUL-terminated
    size_t len, cap;
    int32_t *tokens;            //  n_tokens ids
    size_t n_tokens, cap_tokens;
} s_output_t;

static int
s_output_add (s_output_t *o, const char *text, const int32_t *tokens, size_t n_tokens)
{
    size_t n = text ? strlen (text) : 0;
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *p = realloc (o->text, cap);
        if (!p)
            return -1;
        o->text = p;
        o->cap = cap;
    }
    memcpy (o->text + o->len, text ? text : "", n);
    o->len += n;
    o->text [o->len] = '\0';
    if (o->n_tokens + n_tokens > o->cap_tokens) {
        size_t cap = (o->n_tokens + n_tokens) * 2 + 16;
        int32_t *p = realloc (o->tokens, cap * sizeof *p);
        if (!p)
            return -1;
        o->tokens = p;
        o->cap_tokens = cap;
    }
    if (n_tokens)
        memcpy (o->tokens + o->n_tokens, tokens, n_tokens * sizeof *tokens);
    o->n_tokens += n_tokens;
    return 0;
}

static void
s_print_json (const s_output_t *out, const wire_generate_final_t *final,
              double elapsed_ms, double client_ttft_ms)
{
    const wire_gen_stats_t *st = final->stats;
    FILE *f = stdout;
    fprintf (f, "{\"text\":");
    s_json_str (f, out->text ? out->text : "", out->len);
    fprintf (f, ",\"tokens\":[");
    for (size_t i = 0; i < out->n_tokens; i++)
        fprintf (f, "%s%d", i ? "," : "", out->tokens [i]);
    fprintf (f, "],\"finish_reason\":\"%s\"", wire_finish_reason_names [final->finish_reason]);
    if (st) {
        fprintf (f, ",\"stats\":{\"prompt_tokens\":%u,\"tokens\":%u,\"drafts_proposed\":%llu,"
                    "\"drafts_accepted\":%llu,\"accept_by_pos\":[",
                 st->prompt_tokens, st->tokens, (unsigned long long) st->drafts_proposed,
                 (unsigned long long) st->drafts_accepted);
        for (size_t i = 0; i < st->accept_by_pos_count; i++)
            fprintf (f, "%s%llu", i ? "," : "", (unsigned long long) st->accept_by_pos [i]);
        fprintf (f, "],\"ttft_ms\":%.3f,\"per_token_ms\":%.3f,\"link_bytes_up\":%llu,"
                    "\"link_bytes_down\":%llu,\"degraded\":%s}",
                 st->ttft_ms, st->per_token_ms, (unsigned long long) st->link_bytes_up,
                 (unsigned long long) st->link_bytes_down, st->degraded ? "true" : "false");
    }
    double tok_s = elapsed_ms > 0 ? out->n_tokens / (elapsed_ms / 1000.0) : 0.0;
    fprintf (f, ",\"client\":{\"elapsed_ms\":%.3f,\"ttft_ms\":%.3f,\"tokens_per_s\":%.3f}}\n",
             elapsed_ms, client_ttft_ms, tok_s);
    fflush (f);
}

static void
s_print_stats (const s_output_t *out, const wire_generate_final_t *final,
               double elapsed_ms, double client_ttft_ms)
{
    const wire_gen_stats_t *st = final->stats;
    size_t n = st ? st->tokens : out->n_tokens;
    fprintf (stderr, "\n-- %zu tokens in %.1f ms (%.2f tok/s), finish: %s\n", n, elapsed_ms,
             elapsed_ms > 0 ? n / (elapsed_ms / 1000.0) : 0.0,
             wire_finish_reason_names [final->finish_reason]);
    if (!st) {
        fprintf (stderr, "-- client time to first text %.1f ms (the service sent no statistics)\n",
                 client_ttft_ms);
        return;
    }
    fprintf (stderr, "-- prompt %u tokens; time to first token %.1f ms (client: %.1f ms); "
                     "per token %.2f ms\n",
             st->prompt_tokens, st->ttft_ms, client_ttft_ms, st->per_token_ms);
    if (st->drafts_proposed) {
        fprintf (stderr, "-- drafts: %llu proposed, %llu accepted (%.1f%%); accepted by position:",
                 (unsigned long long) st->drafts_proposed, (unsigned long long) st->drafts_accepted,
                 100.0 * (double) st->drafts_accepted / (double) st->drafts_proposed);
        for (size_t i = 0; i < st->accept_by_pos_count; i++)
            fprintf (stderr, " %llu", (unsigned long long) st->accept_by_pos [i]);
        fprintf (stderr, "\n");
    }
    fprintf (stderr, "-- link: %llu bytes up, %llu bytes down (%.0f bytes per token)%s\n",
             (unsigned long long) st->link_bytes_up, (unsigned long long) st->link_bytes_down,
             n ? (double) (st->link_bytes_up + st->link_bytes_down) / (double) n : 0.0,
             st->degraded ? "; DEGRADED (cloud unreachable: edge-only)" : "");
}

//  Prints an error reply; returns true when the frame was one.
static bool
s_error_reply (zframe_t *frame)
{
    wire_peek_t peek;
    wire_err_t err;
    if (wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err)) {
        fprintf (stderr, "splitmesh generate: malformed reply from the mesh: %s\n", err.text);
        return true;
    }
    if (peek.desc != &wire_error_desc && peek.status < 400)
        return false;
    wire_error_t e;
    if (wire_decode_frame (&wire_error_desc, frame, &e, &err) == 0) {
        fprintf (stderr, "splitmesh generate: error %u (%s): %s\n", e.status,
                 wire_status_name ((int) e.status), e.error ? e.error : "");
        wire_msg_free (&wire_error_desc, &e);
    }
    else
        fprintf (stderr, "splitmesh generate: error %d (%s)\n", peek.status,
                 wire_status_name (peek.status));
    return true;
}

int
cmd_generate (int argc, char **argv)
{
    long n_tokens = 128, top_k = 0, draft_k = 4, timeout_s = 300;
    double temperature = 0.0, top_p = 1.0;
    unsigned long long seed = 0;
    bool has_seed = false, chat = false, json = false;
    const char *drafter = "model", *mode = "speculative", *privacy = "prefix";
    const char *run_dir_opt = NULL, *broker = NULL, *prompt = NULL;
    char *stops [S_MAX_STOPS];
    int n_stops = 0;
    static const struct option longopts [] = {
        { "tokens", required_argument, NULL, 'n' },
        { "temperature", required_argument, NULL, 'T' },
        { "top-k", required_argument, NULL, 'k' },
        { "top-p", required_argument, NULL, 'P' },
        { "seed", required_argument, NULL, 's' },
        { "draft-k", required_argument, NULL, 'K' },
        { "drafter", required_argument, NULL, 'd' },
        { "mode", required_argument, NULL, 'M' },
        { "privacy", required_argument, NULL, 'p' },
        { "stop", required_argument, NULL, 'S' },
        { "chat", no_argument, NULL, 'C' },
        { "json", no_argument, NULL, 'j' },
        { "run-dir", required_argument, NULL, 'r' },
        { "broker", required_argument, NULL, 'b' },
        { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, ":n:h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            //  Ranges here are wide on purpose: the service (and its
            //  codec) says what is allowed, with the schema's own words.
            case 'n': bad = cli_parse_long (optarg, 0, 1L << 30, &n_tokens); break;
            case 'T': bad = cli_parse_double (optarg, 0.0, 1e6, &temperature); break;
            case 'k': bad = cli_parse_long (optarg, 0, INT32_MAX, &top_k); break;
            case 'P': bad = cli_parse_double (optarg, 0.0, 1e6, &top_p); break;
            case 's': bad = cli_parse_u64 (optarg, &seed); has_seed = true; break;
            case 'K': bad = cli_parse_long (optarg, 0, 1 << 20, &draft_k); break;
            case 'd': drafter = optarg;
                      bad = s_enum (wire_drafter_names, WIRE_DRAFTER_COUNT_, optarg) < 0; break;
            case 'M': mode = optarg;
                      bad = s_enum (wire_mode_names, WIRE_MODE_COUNT_, optarg) < 0; break;
            case 'p': privacy = optarg;
                      bad = s_enum (wire_privacy_names, WIRE_PRIVACY_COUNT_, optarg) < 0; break;
            case 'S':
                if (n_stops == S_MAX_STOPS) {
                    fprintf (stderr, "splitmesh generate: at most %d --stop strings\n", S_MAX_STOPS);
                    return 2;
                }
                stops [n_stops++] = optarg;
                break;
            case 'C': chat = true; break;
            case 'j': json = true; break;
            case 'r': run_dir_opt = optarg; break;
            case 'b': broker = optarg; break;
            case 't': bad = cli_parse_long (optarg, 1, 86400, &timeout_s); break;
            case 'h': s_usage (stdout); return 0;
            default: return cli_getopt_error ("generate", opt, argv, s_usage);
        }
        if (bad)
            return cli_bad_value ("generate", longopts, opt, optarg);
    }
    if (optind + 1 != argc) {
        fprintf (stderr, "splitmesh generate: %s\n",
                 optind == argc ? "the PROMPT argument is required" : "exactly one PROMPT argument");
        s_usage (stderr);
        return 2;
    }
    prompt = argv [optind];

    //  The mesh's broker.
    char endpoint [1024];
    if (broker)
        snprintf (endpoint, sizeof endpoint, "%s", broker);
    else {
        char run_dir [PATH_MAX], err [512] = "";
        if (mesh_state_resolve_dir (run_dir_opt, run_dir, sizeof run_dir)) {
            fprintf (stderr, "splitmesh generate: run dir path too long\n");
            return 2;
        }
        mesh_state_t *state = calloc (1, sizeof *state);
        if (!state)
            return 1;
        int loaded = mesh_state_load (run_dir, state, err, sizeof err);
        if (loaded == 0) {
            snprintf (endpoint, sizeof endpoint, "%s", state->device_broker);
            //  A dead mesh would only show as a timeout much later.
            for (int i = 0; i < state->n_procs; i++)
                if (!strcmp (state->procs [i].name, "broker-device")
                &&  !mesh_proc_alive (&state->procs [i])) {
                    fprintf (stderr, "splitmesh generate: the mesh in %s is not running (its device "
                                     "broker exited); `splitmesh down`, then `splitmesh up`\n", run_dir);
                    free (state);
                    return 1;
                }
        }
        free (state);
        if (loaded == 1) {
            fprintf (stderr, "splitmesh generate: no mesh in %s (start one with `splitmesh up`)\n", run_dir);
            return 1;
        }
        if (loaded < 0) {
            fprintf (stderr, "splitmesh generate: %s\n", err);
            return 1;
        }
    }

    //  The request.
    wire_generate_t req;
    wire_msg_init (&wire_generate_desc, &req);
    wire_chat_message_t message = { .role = WIRE_ROLE_USER, .content = (char *) prompt };
    if (chat) {
        req.messages = &message;
        req.messages_count = 1;
    }
    else
        req.prompt = (char *) prompt;
    req.max_tokens = (uint32_t) (n_tokens > UINT32_MAX ? UINT32_MAX : n_tokens);
    req.temperature = temperature;
    req.top_k = (uint32_t) top_k;
    req.top_p = top_p;
    req.seed = seed;
    req.has_seed = has_seed;
    req.stream = true;
    req.draft_k = (uint32_t) draft_k;
    req.drafter = (wire_drafter_t) s_enum (wire_drafter_names, WIRE_DRAFTER_COUNT_, drafter);
    req.mode = (wire_mode_t) s_enum (wire_mode_names, WIRE_MODE_COUNT_, mode);
    req.privacy = (wire_privacy_t) s_enum (wire_privacy_names, WIRE_PRIVACY_COUNT_, privacy);
    req.stop = n_stops ? stops : NULL;
    req.stop_count = (size_t) n_stops;
    uint8_t *data = NULL;
    size_t size = 0;
    wire_err_t err;
    if (wire_encode (&wire_generate_desc, &req, &data, &size, &err)) {
        //  The same check the service does: say so before sending.
        fprintf (stderr, "splitmesh generate: invalid request (%d): %s\n", err.status, err.text);
        return 1;
    }

    int rc = 1;
    s_output_t out = { 0 };
    wire_generate_final_t final;
    bool have_final = false;
    mdp_client_t *client = mdp_client_new (endpoint);
    if (!client) {
        fprintf (stderr, "splitmesh generate: bad broker endpoint '%s'\n", endpoint);
        free (data);
        return 1;
    }
    //  A request lost with a restarting broker is sent again (below).
    mdp_client_set_keep_for_resend (client, true);
    double t0 = s_now (), t_first = 0;
    if (mdp_client_send_mem (client, "generate", data, size)) {
        fprintf (stderr, "splitmesh generate: cannot send the request\n");
        goto done;
    }
    int resends = 0;
    while (true) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (client, (int) timeout_s * 1000, &command, NULL);
        if (!reply && mdp_client_lost (client)) {
            //  The broker dropped our connection (restart, link cut) and the
            //  request with it. Nothing streamed yet: send it again. After
            //  tokens were shown a new run could differ, so say so instead.
            if (out.n_tokens == 0 && resends < S_RESENDS) {
                resends++;
                fprintf (stderr, "splitmesh generate: lost the broker at %s, sending the request "
                                 "again (%d/%d)\n", endpoint, resends, S_RESENDS);
                zclock_sleep (250 * resends);
                if (mdp_client_resend (client) == 0)
                    continue;
            }
            fprintf (stderr, "%ssplitmesh generate: lost the broker at %s after %zu tokens; "
                             "the generation was interrupted, its output above is incomplete\n",
                     out.n_tokens? "\n": "", endpoint, out.n_tokens);
            goto done;
        }
        if (!reply) {
            fprintf (stderr, "splitmesh generate: no reply from the mesh at %s within %ld s "
                             "(is it up? `splitmesh up`)\n", endpoint, timeout_s);
            goto done;
        }
        zframe_t *frame = zmsg_first (reply);
        if (!frame || s_error_reply (frame)) {
            if (!frame)
                fprintf (stderr, "splitmesh generate: empty reply from the mesh\n");
            zmsg_destroy (&reply);
            goto done;
        }
        if (command == MDPC_PARTIAL) {
            wire_generate_partial_t part;
            if (wire_decode_frame (&wire_generate_partial_desc, frame, &part, &err)) {
                fprintf (stderr, "splitmesh generate: bad partial reply: %s\n", err.text);
                zmsg_destroy (&reply);
                goto done;
            }
            if (!t_first && (part.tokens_count || (part.text && *part.text)))
                t_first = s_now ();
            if (s_output_add (&out, part.text, part.tokens, part.tokens_count)) {
                wire_msg_free (&wire_generate_partial_desc, &part);
                zmsg_destroy (&reply);
                goto done;
            }
            if (!json && part.text) {
                fputs (part.text, stdout);
                fflush (stdout);
            }
            wire_msg_free (&wire_generate_partial_desc, &part);
            zmsg_destroy (&reply);
            continue;
        }
        if (wire_decode_frame (&wire_generate_final_desc, frame, &final, &err)) {
            fprintf (stderr, "splitmesh generate: bad final reply: %s\n", err.text);
            zmsg_destroy (&reply);
            goto done;
        }
        zmsg_destroy (&reply);
        have_final = true;
        break;
    }
    double t_end = s_now ();
    if (!t_first)
        t_first = t_end;
    if (s_output_add (&out, final.text, final.tokens, final.tokens_count))
        goto done;
    double elapsed_ms = (t_end - t0) * 1000.0, ttft_ms = (t_first - t0) * 1000.0;
    if (json)
        s_print_json (&out, &final, elapsed_ms, ttft_ms);
    else {
        if (final.text) {
            fputs (final.text, stdout);
            fflush (stdout);
        }
        s_print_stats (&out, &final, elapsed_ms, ttft_ms);
    }
    if (final.finish_reason == WIRE_FINISH_REASON_ERROR)
        fprintf (stderr, "splitmesh generate: generation ended with an error after %zu tokens "
                         "(see the edge-draft log)\n", out.n_tokens);
    else
        rc = 0;
done:
    if (have_final)
        wire_msg_free (&wire_generate_final_desc, &final);
    mdp_client_destroy (&client);
    free (data);
    free (out.text);
    free (out.tokens);
    return rc;
}
