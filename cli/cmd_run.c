/*  cmd_run.c: `splitmesh run`, single-process generation: the reference path.

    Loads the whole model (embeddings, every layer, head) in one process,
    prefills the prompt in one forward call, then samples token by token,
    printing text as it is generated (whole UTF-8 characters only) on stdout
    and the statistics on stderr. Later benchmarks of the split and
    speculative paths compare their output and speed against this command.
*/
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"
#include "chat_template.h"
#include "cli_args.h"
#include "kvcache.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

#define S_PREFILL_CHUNK 512         //  positions per prefill call (bounds scratch)

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh run -p PROMPT [options]\n"
        "  -p, --prompt TEXT      prompt (raw; special tokens like <|im_start|> are parsed)\n"
        "  -n, --tokens N         tokens to generate (default 64)\n"
        "      --chat             wrap the prompt in the model's chat template (as a user message)\n"
        "      --model FILE       GGUF model (default $SPLITMESH_MODEL, else " CLI_DEFAULT_MODEL ")\n"
        "      --format F         weight format: f32, w8, w4 (default w4)\n"
        "      --threads T        threads (default 2)\n"
        "      --temperature T    0 = greedy (default 0)\n"
        "      --top-k K          keep the K most likely tokens (0 = all)\n"
        "      --top-p P          keep the smallest set with mass >= P (1 = all)\n"
        "      --seed S           sampling seed (default 0)\n"
        "      --ctx C            context size in tokens (default min(model's, 4096))\n"
        "      --ignore-eos       keep generating past end-of-generation tokens\n"
        "Text goes to stdout, statistics to stderr.\n");
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int
cmd_run (int argc, char **argv)
{
    const char *prompt = NULL, *model_path = NULL, *format = "w4";
    long n_gen = 64, threads = 2, top_k = 0, ctx = 0;
    double temperature = 0.0, top_p = 1.0;
    unsigned long long seed = 0;
    bool chat = false, ignore_eos = false;
    static const struct option longopts[] = {
        { "prompt", required_argument, NULL, 'p' },
        { "tokens", required_argument, NULL, 'n' },
        { "model", required_argument, NULL, 'm' },
        { "format", required_argument, NULL, 'f' },
        { "threads", required_argument, NULL, 't' },
        { "temperature", required_argument, NULL, 'T' },
        { "top-k", required_argument, NULL, 'k' },
        { "top-p", required_argument, NULL, 'P' },
        { "seed", required_argument, NULL, 's' },
        { "ctx", required_argument, NULL, 'c' },
        { "chat", no_argument, NULL, 'C' },
        { "ignore-eos", no_argument, NULL, 'E' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, ":p:n:h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            case 'p': prompt = optarg; break;
            case 'n': bad = cli_parse_long (optarg, 1, 1 << 20, &n_gen); break;
            case 'm': model_path = optarg; break;
            case 'f': format = optarg; break;
            case 't': bad = cli_parse_long (optarg, 1, 256, &threads); break;
            case 'T': bad = cli_parse_double (optarg, 0.0, 100.0, &temperature); break;
            case 'k': bad = cli_parse_long (optarg, 0, 1 << 24, &top_k); break;
            case 'P': bad = cli_parse_double (optarg, 0.0, 1.0, &top_p); break;
            case 's': bad = cli_parse_u64 (optarg, &seed); break;
            case 'c': bad = cli_parse_long (optarg, 1, 1 << 22, &ctx); break;
            case 'C': chat = true; break;
            case 'E': ignore_eos = true; break;
            case 'h': s_usage (stdout); return 0;
            default: return cli_getopt_error ("run", opt, argv, s_usage);
        }
        if (bad)
            return cli_bad_value ("run", longopts, opt, optarg);
    }
    if (cli_no_operands ("run", argc, argv))
        return 2;
    if (!prompt) {
        fprintf (stderr, "splitmesh run: -p PROMPT is required\n");
        s_usage (stderr);
        return 2;
    }
    model_options_t mo;
    if (cli_model_options ("run", format, threads, &mo))
        return 2;
    model_path = cli_model_path (model_path);

    int rc = 1;
    char err[512] = "";
    model_t *model = NULL;
    tokenizer_t *tok = NULL;
    tokenizer_stream_t *stream = NULL;
    kvcache_t *kv = NULL;
    sampler_t *sampler = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    float *x = NULL, *logits = NULL;

    double t_load = s_now ();
    model = model_load (model_path, &mo, err, sizeof err);
    if (!model) {
        fprintf (stderr, "splitmesh run: %s: %s\n", model_path, err);
        goto done;
    }
    t_load = s_now () - t_load;
    const model_config_t *c = model_config (model);
    tok = tokenizer_new_from_gguf (model_gguf (model), err, sizeof err);
    if (!tok) {
        fprintf (stderr, "splitmesh run: tokenizer: %s\n", err);
        goto done;
    }
    if (tokenizer_n_tokens (tok) != c->vocab_size) {
        fprintf (stderr, "splitmesh run: tokenizer has %d tokens, model %d\n",
                 (int) tokenizer_n_tokens (tok), c->vocab_size);
        goto done;
    }
    size_t n_ids = 0;
    if (chat) {
        //  The model's own template (tokenizer.chat_template), one user
        //  message; the user's text stays text even if it spells a marker.
        chat_template_t *tpl = chat_template_new_from_gguf (model_gguf (model), err, sizeof err);
        chat_message_t msg = { "user", prompt };
        size_t text_len = 0, *ranges = NULL, n_ranges = 0;
        int bad = !tpl
            || chat_template_render (tpl, &msg, 1, true, &text, &text_len, &ranges, &n_ranges,
                                     err, sizeof err)
            || tokenizer_encode_protected (tok, text, text_len, true, ranges, n_ranges,
                                           &ids, &n_ids, err, sizeof err);
        free (ranges);
        chat_template_destroy (&tpl);
        if (bad) {
            fprintf (stderr, "splitmesh run: chat template: %s\n", err);
            goto done;
        }
    }
    else
    if (tokenizer_encode (tok, prompt, strlen (prompt), true, true, &ids, &n_ids, err, sizeof err)) {
        fprintf (stderr, "splitmesh run: %s\n", err);
        goto done;
    }
    if (n_ids == 0) {
        fprintf (stderr, "splitmesh run: the prompt encodes to no tokens\n");
        goto done;
    }
    if (!ctx)
        ctx = c->context_length < 4096 ? c->context_length : 4096;
    if (ctx > c->context_length) {
        fprintf (stderr, "splitmesh run: --ctx %ld exceeds the model's context %d\n", ctx, c->context_length);
        rc = 2;
        goto done;
    }
    if ((long) n_ids >= ctx) {
        fprintf (stderr, "splitmesh run: prompt has %zu tokens, context is %ld\n", n_ids, ctx);
        goto done;
    }
    kv = kvcache_new (model, (int) ctx);
    sampler_params_t sp = {
        .temperature = (float) temperature, .top_k = (int) top_k,
        .top_p = (float) top_p, .seed = seed
    };
    sampler = sampler_new (&sp, c->vocab_size);
    stream = tokenizer_stream_new (tok, false);
    int chunk = (int) n_ids < S_PREFILL_CHUNK ? (int) n_ids : S_PREFILL_CHUNK;
    x = malloc ((size_t) chunk * c->dim * sizeof *x);
    logits = malloc ((size_t) c->vocab_size * sizeof *logits);
    if (!kv || !sampler || !stream || !x || !logits) {
        fprintf (stderr, "splitmesh run: out of memory\n");
        goto done;
    }

    //  Prefill: the prompt in chunks, the head on its last position only.
    double t0 = s_now ();
    for (int p = 0; p < (int) n_ids; p += chunk) {
        int k = (int) n_ids - p < chunk ? (int) n_ids - p : chunk;
        if (model_embed (model, ids + p, k, x)
        ||  model_forward (model, kv, 0, c->n_layers, p, k, x)
        ||  (p + k == (int) n_ids && model_head (model, x + (size_t) (k - 1) * c->dim, 1, logits))) {
            fprintf (stderr, "splitmesh run: %s\n", model_error (model));
            goto done;
        }
    }
    double t_prompt = s_now () - t0;

    //  Decode: sample, print, feed the token back.
    int generated = 0, steps = 0, pos = (int) n_ids;
    double t1 = s_now ();
    while (generated < n_gen) {
        int32_t next = sampler_sample (sampler, logits);
        if (next < 0) {
            fprintf (stderr, "splitmesh run: logits hold no finite value\n");
            goto done;
        }
        generated++;
        if (!ignore_eos && tokenizer_is_eog (tok, next))
            break;
        const char *piece;
        size_t plen;
        if (tokenizer_stream_push (stream, next, &piece, &plen, err, sizeof err) == 0 && plen) {
            fwrite (piece, 1, plen, stdout);
            fflush (stdout);
        }
        if (generated == n_gen || pos >= ctx)
            break;
        if (model_embed (model, &next, 1, x)
        ||  model_forward (model, kv, 0, c->n_layers, pos, 1, x)
        ||  model_head (model, x, 1, logits)) {
            fprintf (stderr, "splitmesh run: %s\n", model_error (model));
            goto done;
        }
        pos++;
        steps++;
    }
    double t_decode = s_now () - t1;
    const char *tail;
    size_t tail_len;
    tokenizer_stream_flush (stream, &tail, &tail_len);
    fwrite (tail, 1, tail_len, stdout);
    printf ("\n");
    fprintf (stderr,
             "model: %s (%s, %d threads, %s kernels, %.1f MB weights, load %.2f s)\n"
             "prompt tokens: %zu, %.1f tok/s\n"
             "generated tokens: %d, decode %.1f tok/s (%d steps in %.3f s)%s\n",
             model_path, qfmt_name (mo.format), mo.n_threads, kernels_simd_name (),
             model_weight_bytes (model) / 1e6, t_load,
             n_ids, n_ids / t_prompt, generated, steps > 0 ? steps / t_decode : 0.0, steps, t_decode,
             pos >= ctx ? " (context full)" : "");
    rc = 0;

done:
    free (x);
    free (logits);
    free (ids);
    free (text);
    tokenizer_stream_destroy (&stream);
    sampler_destroy (&sampler);
    kvcache_destroy (&kv);
    tokenizer_destroy (&tok);
    model_destroy (&model);
    return rc;
}
