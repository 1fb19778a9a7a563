/*  cmd_privacy_audit.c: `splitmesh privacy-audit`, how many tokens an
    attacker holding the public weights recovers from the activations that
    cross the link, per split depth L and noise level, next to the quality
    cost of that noise.

    The setting, exactly:
      - text: the first --eval-tokens tokens of --eval (wikitext-2 test),
        cut into windows of --window tokens, each evaluated from an empty
        KV cache; the linear probe is fitted on the first --fit-tokens
        tokens of --calib (wikitext-2 valid), same windows. Tokenized with
        the model's tokenizer, no BOS.
      - what crosses the link at depth L: the residual stream after layers
        [0, L) at every position (the model at --format, as split-prefix
        runs it), plus Gaussian noise of sd sigma x the row's RMS added on
        the device, then encoded as --dtype (int8: what the mesh sends).
      - attack "nn": token = argmax_v cos (a, E[v]) over the whole
        vocabulary, E = the model's input embedding table (as loaded).
      - attack "nn_centred": the same after subtracting from a the mean
        link activation of the calibration text (same L and sigma): the
        residual stream carries a large shared offset (outlier dimensions)
        that hides the token in plain cosine.
      - attack "nn_layer": token = argmax_v cos (a, T_L[v]), T_L[v] = the
        activation of token v run alone through layers [0, L) (the
        attacker runs the public weights over the whole vocabulary). For a
        lone token attention attends only to itself and RoPE rotates its
        query and key alike, so the attacker's guess of the position does
        not matter: computed once at position 0. "nn_layer_centred": the
        same with a minus the mean calibration link activation and T_L
        minus its mean over the vocabulary. Costs one single-token pass per
        vocabulary entry through L layers (--no-layer-nn skips it).
      - attack "probe": ridge regression (with intercept, ridge --ridge x
        mean eigenvalue) from the same kind of link activations (same L,
        same sigma, fresh noise) of the calibration text to the embedding
        of the token at each position; then nn of the prediction.
      - recovery = share of eval positions where the attack returns the
        token at that position (chance: 1 / vocabulary).
      - quality: cloud layers [L, N) + head run on the noisy link
        activations of the eval windows; top-1 agreement of the next-token
        argmax with the noiseless full-precision-link model (same weights,
        no split), and perplexity of the eval windows (each window's first
        W - 1 predictions).
    Output: one JSON object (--out, else stdout) with every setting.
*/
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "activations.h"
#include "cli.h"
#include "cli_args.h"
#include "kvcache.h"
#include "model.h"
#include "privacy_audit.h"
#include "tokenizer.h"

#define S_MAX_FILE (64u << 20)
#define S_MAX_LIST 16
#define S_HEAD_ROWS 64

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh privacy-audit --calib TEXT --eval TEXT [options]\n"
        "      --calib PATH       text the linear probe is fitted on (wikitext-2-valid)\n"
        "      --eval PATH        text the attacks and quality are measured on (wikitext-2-test)\n"
        "      --model FILE       GGUF model (default $SPLITMESH_MODEL, else " CLI_DEFAULT_MODEL ")\n"
        "      --format F         weight format: f32, w8, w4 (default w8, the mesh's)\n"
        "      --depths LIST      split depths L, comma-separated (default 1,2,4,8,15)\n"
        "      --sigmas LIST      noise sd as a fraction of the row RMS (default 0,0.01,0.03,0.1,0.3)\n"
        "      --dtype D          link encoding: int8, fp16, fp32 (default int8)\n"
        "      --fit-tokens N     calibration tokens (default 2048)\n"
        "      --eval-tokens N    evaluation tokens (default 256)\n"
        "      --window W         positions per window (default 128)\n"
        "      --ridge R          ridge strength, fraction of the mean eigenvalue (default 0.001)\n"
        "      --seed S           noise seed (default 1)\n"
        "      --threads T        threads (default 2)\n"
        "      --no-layer-nn      skip the nn_layer attacks (vocabulary x L single-token passes)\n"
        "      --out PATH         write the JSON there (default stdout)\n");
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

//  Parses "a,b,c" into at most S_MAX_LIST doubles. Returns the count, or -1.
static int
s_parse_list (const char *text, double *out)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        double v = strtod (p, &end);
        if (end == p || n >= S_MAX_LIST || !isfinite (v))
            return -1;
        out [n++] = v;
        p = end;
        if (*p == ',')
            p++;
        else
        if (*p)
            return -1;
    }
    return n;
}

//  The first *n tokens of a text file (fewer if it is shorter). Caller frees.
static int32_t *
s_tokens (tokenizer_t *tok, const char *path, long *n, char *err, size_t err_size)
{
    FILE *f = fopen (path, "rb");
    if (!f) {
        snprintf (err, err_size, "cannot read %s", path);
        return NULL;
    }
    char *buf = malloc (S_MAX_FILE);
    size_t len = buf? fread (buf, 1, S_MAX_FILE, f): 0;
    fclose (f);
    if (!buf) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    //  Tokenize no more text than needed: ~8 bytes a token is plenty.
    size_t want = (size_t) *n * 8 + 4096;
    if (len > want)
        len = want;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = tokenizer_encode (tok, buf, len, false, false, &ids, &n_ids, err, err_size);
    free (buf);
    if (rc)
        return NULL;
    if ((long) n_ids < *n)
        *n = (long) n_ids;
    return ids;
}

typedef struct {
    model_t *model;
    const model_config_t *c;
    kvcache_t *kv;
    int window;
    int n_depths;
    int depths [S_MAX_LIST];
} s_ctx_t;

//  Runs the n tokens (whole windows) and stores, per depth index, the
//  residual stream after layers [0, L) (acts[d], n x dim). With final (n x
//  dim, may be NULL), also the final hidden states. Returns 0 or -1.
static int
s_collect (s_ctx_t *self, const int32_t *ids, long n, float **acts, float *final)
{
    int dim = self->c->dim;
    float *x = malloc ((size_t) self->window * dim * sizeof *x);
    if (!x)
        return -1;
    int rc = 0;
    int last = final? self->c->n_layers: self->depths [self->n_depths - 1];
    for (long w0 = 0; w0 + self->window <= n && rc == 0; w0 += self->window) {
        kvcache_truncate (self->kv, 0);
        if (model_embed (self->model, ids + w0, self->window, x)) {
            rc = -1;
            break;
        }
        int at = 0;
        for (int d = 0; d <= self->n_depths && rc == 0; d++) {
            int upto = d < self->n_depths? self->depths [d]: last;
            if (upto > at && model_forward (self->model, self->kv, at, upto, 0, self->window, x))
                rc = -1;
            at = upto > at? upto: at;
            if (rc == 0 && d < self->n_depths)
                memcpy (acts [d] + (size_t) w0 * dim, x, (size_t) self->window * dim * sizeof *x);
        }
        if (rc == 0 && final)
            memcpy (final + (size_t) w0 * dim, x, (size_t) self->window * dim * sizeof *x);
    }
    free (x);
    return rc;
}

//  Argmax of each logits row and NLL of targets (NULL: skipped).
static void
s_score (const float *logits, int rows, int vocab, const int32_t *targets,
         int32_t *argmax, double *nll)
{
    for (int r = 0; r < rows; r++) {
        const float *l = logits + (size_t) r * vocab;
        int best = 0;
        for (int i = 1; i < vocab; i++)
            if (l [i] > l [best])
                best = i;
        argmax [r] = best;
        if (targets && nll) {
            double z = 0;
            for (int i = 0; i < vocab; i++)
                z += exp ((double) l [i] - l [best]);
            *nll += log (z) + l [best] - l [targets [r]];
        }
    }
}

//  Runs layers [L, N) + head over the link activations of the eval
//  windows. argmax gets the next-token argmax at every position; *nll the
//  sum over each window's first W - 1 predictions. Returns 0 or -1.
static int
s_cloud (s_ctx_t *self, int L, const float *link, const int32_t *ids, long n,
         int32_t *argmax, double *nll, float *logits)
{
    int dim = self->c->dim, W = self->window;
    float *x = malloc ((size_t) W * dim * sizeof *x);
    if (!x)
        return -1;
    *nll = 0;
    for (long w0 = 0; w0 + W <= n; w0 += W) {
        memcpy (x, link + (size_t) w0 * dim, (size_t) W * dim * sizeof *x);
        kvcache_truncate (self->kv, 0);
        if (model_forward (self->model, self->kv, L, self->c->n_layers, 0, W, x)) {
            free (x);
            return -1;
        }
        for (int r0 = 0; r0 < W; r0 += S_HEAD_ROWS) {
            int rows = W - r0 < S_HEAD_ROWS? W - r0: S_HEAD_ROWS;
            if (model_head (self->model, x + (size_t) r0 * dim, rows, logits)) {
                free (x);
                return -1;
            }
            //  Position t predicts ids[t + 1] inside the window.
            int scored = r0 + rows <= W - 1? rows: W - 1 - r0;
            s_score (logits, scored, self->c->vocab_size, ids + w0 + r0 + 1,
                     argmax + w0 + r0, nll);
            if (scored < rows)
                s_score (logits + (size_t) scored * self->c->vocab_size, rows - scored,
                         self->c->vocab_size, NULL, argmax + w0 + r0 + scored, NULL);
        }
    }
    free (x);
    return 0;
}

//  Advances every vocabulary row of cur (vocab x dim, the tokens' residual
//  streams after layers [0, *at)) through layers [*at, L), each token alone
//  at position 0 (kv: a cache of one position). Returns 0 or -1.
static int
s_layer_table (s_ctx_t *self, kvcache_t *kv, float *cur, int *at, int L)
{
    int dim = self->c->dim;
    for (int v = 0; v < self->c->vocab_size && L > *at; v++) {
        kvcache_truncate (kv, 0);
        if (model_forward (self->model, kv, *at, L, 0, 1, cur + (size_t) v * dim))
            return -1;
    }
    *at = L > *at? L: *at;
    return 0;
}

//  Unit rows of src (minus mean, when mean is not NULL) into dst.
static void
s_unit_table (const float *src, const float *mean, int vocab, int dim, float *dst)
{
    for (size_t i = 0; i < (size_t) vocab * dim; i++)
        dst [i] = src [i] - (mean? mean [i % dim]: 0);
    privacy_normalize_rows (dst, vocab, dim);
}

static const char *
s_base (const char *path)
{
    const char *slash = strrchr (path, '/');
    return slash? slash + 1: path;
}

int
cmd_privacy_audit (int argc, char **argv)
{
    const char *calib = NULL, *eval = NULL, *model_path = NULL, *format = "w8", *dtype_name = "int8";
    const char *depths_arg = "1,2,4,8,15", *sigmas_arg = "0,0.01,0.03,0.1,0.3", *out_path = NULL;
    long fit_tokens = 2048, eval_tokens = 256, window = 128, threads = 2, seed = 1;
    double ridge = 1e-3;
    bool layer_nn = true;
    static const struct option longopts [] = {
        { "calib", required_argument, NULL, 'c' },
        { "eval", required_argument, NULL, 'e' },
        { "model", required_argument, NULL, 'm' },
        { "format", required_argument, NULL, 'f' },
        { "depths", required_argument, NULL, 'L' },
        { "sigmas", required_argument, NULL, 's' },
        { "dtype", required_argument, NULL, 'd' },
        { "fit-tokens", required_argument, NULL, 'F' },
        { "eval-tokens", required_argument, NULL, 'E' },
        { "window", required_argument, NULL, 'w' },
        { "ridge", required_argument, NULL, 'r' },
        { "seed", required_argument, NULL, 'S' },
        { "threads", required_argument, NULL, 't' },
        { "out", required_argument, NULL, 'o' },
        { "no-layer-nn", no_argument, NULL, 'N' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, ":h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            case 'c': calib = optarg; break;
            case 'e': eval = optarg; break;
            case 'm': model_path = optarg; break;
            case 'f': format = optarg; break;
            case 'L': depths_arg = optarg; break;
            case 's': sigmas_arg = optarg; break;
            case 'd': dtype_name = optarg; break;
            case 'F': bad = cli_parse_long (optarg, 2, 1 << 20, &fit_tokens); break;
            case 'E': bad = cli_parse_long (optarg, 1, 1 << 20, &eval_tokens); break;
            case 'w': bad = cli_parse_long (optarg, 2, 4096, &window); break;
            case 'r': bad = cli_parse_double (optarg, 0.0, 1e300, &ridge) || !(ridge > 0); break;
            case 'S': bad = cli_parse_long (optarg, 0, 1L << 30, &seed); break;
            case 't': bad = cli_parse_long (optarg, 1, 256, &threads); break;
            case 'o': out_path = optarg; break;
            case 'N': layer_nn = false; break;
            case 'h': s_usage (stdout); return 0;
            default: return cli_getopt_error ("privacy-audit", opt, argv, s_usage);
        }
        if (bad)
            return cli_bad_value ("privacy-audit", longopts, opt, optarg);
    }
    if (!calib || !eval || optind < argc) {
        fprintf (stderr, "splitmesh privacy-audit: --calib and --eval are required (and no other arguments)\n");
        s_usage (stderr);
        return 2;
    }
    double depths_d [S_MAX_LIST], sigmas [S_MAX_LIST];
    int n_depths = s_parse_list (depths_arg, depths_d);
    int n_sigmas = s_parse_list (sigmas_arg, sigmas);
    if (n_depths < 1 || n_sigmas < 1) {
        fprintf (stderr, "splitmesh privacy-audit: --depths and --sigmas take 1..%d comma-separated "
                 "numbers\n", S_MAX_LIST);
        return 2;
    }
    for (int i = 0; i < n_sigmas; i++)
        if (sigmas [i] < 0) {
            fprintf (stderr, "splitmesh privacy-audit: noise levels must be >= 0\n");
            return 2;
        }
    wire_dtype_t dtype;
    if (activations_dtype_parse (dtype_name, &dtype)) {
        fprintf (stderr, "splitmesh privacy-audit: unknown dtype '%s' (int8, fp16, fp32)\n", dtype_name);
        return 2;
    }
    model_options_t mo;
    if (cli_model_options ("privacy-audit", format, threads, &mo))
        return 2;
    model_path = cli_model_path (model_path);
    //  Whole windows only.
    fit_tokens -= fit_tokens % window;
    eval_tokens -= eval_tokens % window;
    if (fit_tokens < window || eval_tokens < window) {
        fprintf (stderr, "splitmesh privacy-audit: --fit-tokens and --eval-tokens need at least one "
                 "window (%ld)\n", window);
        return 2;
    }

    int rc = 1;
    char err [512] = "";
    s_ctx_t self = { 0 };
    tokenizer_t *tok = NULL;
    int32_t *fit_ids = NULL, *eval_ids = NULL, *all = NULL, *pred = NULL, *clean_arg = NULL,
            *noisy_arg = NULL;
    float *table = NULL, *emb_raw = NULL, *fit_acts [S_MAX_LIST] = { 0 }, *eval_acts [S_MAX_LIST] = { 0 };
    float *final = NULL, *logits = NULL, *link = NULL, *fit_link = NULL, *y = NULL, *w = NULL,
          *b = NULL, *probe_out = NULL, *lt_cur = NULL, *lt_table = NULL, *lt_centred = NULL,
          *lt_mean = NULL;
    kvcache_t *kv1 = NULL;
    int lt_at = 0;
    double lt_seconds = 0;
    FILE *out = stdout;
    double t_start = s_now ();

    self.model = model_load (model_path, &mo, err, sizeof err);
    if (!self.model) {
        fprintf (stderr, "splitmesh privacy-audit: %s: %s\n", model_path, err);
        goto done;
    }
    self.c = model_config (self.model);
    int dim = self.c->dim, vocab = self.c->vocab_size, N = self.c->n_layers;
    self.window = (int) window;
    self.n_depths = n_depths;
    for (int i = 0; i < n_depths; i++) {
        self.depths [i] = (int) depths_d [i];
        if (depths_d [i] != self.depths [i] || self.depths [i] < 1 || self.depths [i] >= N
        ||  (i && self.depths [i] <= self.depths [i - 1])) {
            fprintf (stderr, "splitmesh privacy-audit: depths must be increasing integers in [1, %d)\n", N);
            rc = 2;
            goto done;
        }
    }
    if (window > self.c->context_length) {
        fprintf (stderr, "splitmesh privacy-audit: --window %ld exceeds the context %d\n",
                 window, self.c->context_length);
        rc = 2;
        goto done;
    }
    tok = tokenizer_new_from_gguf (model_gguf (self.model), err, sizeof err);
    if (!tok) {
        fprintf (stderr, "splitmesh privacy-audit: tokenizer: %s\n", err);
        goto done;
    }
    long fit_n = fit_tokens, eval_n = eval_tokens;
    fit_ids = s_tokens (tok, calib, &fit_n, err, sizeof err);
    eval_ids = fit_ids? s_tokens (tok, eval, &eval_n, err, sizeof err): NULL;
    if (!fit_ids || !eval_ids) {
        fprintf (stderr, "splitmesh privacy-audit: %s\n", err);
        goto done;
    }
    fit_n -= fit_n % window;
    eval_n -= eval_n % window;
    if (fit_n < window || eval_n < window) {
        fprintf (stderr, "splitmesh privacy-audit: the texts are shorter than one window\n");
        goto done;
    }
    //  The attacker's reference: the input embedding of every token.
    table = malloc ((size_t) vocab * dim * sizeof *table);
    emb_raw = malloc ((size_t) vocab * dim * sizeof *emb_raw);
    all = malloc ((size_t) vocab * sizeof *all);
    self.kv = kvcache_new (self.model, (int) window);
    final = malloc ((size_t) eval_n * dim * sizeof *final);
    logits = malloc ((size_t) S_HEAD_ROWS * vocab * sizeof *logits);
    link = malloc ((size_t) eval_n * dim * sizeof *link);
    fit_link = malloc ((size_t) fit_n * dim * sizeof *fit_link);
    y = malloc ((size_t) fit_n * dim * sizeof *y);
    w = malloc ((size_t) dim * dim * sizeof *w);
    b = malloc ((size_t) dim * sizeof *b);
    probe_out = malloc ((size_t) eval_n * dim * sizeof *probe_out);
    pred = malloc ((size_t) eval_n * sizeof *pred);
    clean_arg = malloc ((size_t) eval_n * sizeof *clean_arg);
    noisy_arg = malloc ((size_t) eval_n * sizeof *noisy_arg);
    bool ok = table && emb_raw && all && self.kv && final && logits && link && fit_link && y && w
           && b && probe_out && pred && clean_arg && noisy_arg;
    if (layer_nn && ok) {
        lt_cur = malloc ((size_t) vocab * dim * sizeof *lt_cur);
        lt_table = malloc ((size_t) vocab * dim * sizeof *lt_table);
        lt_centred = malloc ((size_t) vocab * dim * sizeof *lt_centred);
        lt_mean = calloc ((size_t) dim, sizeof *lt_mean);
        kv1 = kvcache_new (self.model, 1);
        ok = lt_cur && lt_table && lt_centred && lt_mean && kv1;
    }
    for (int d = 0; d < n_depths && ok; d++) {
        fit_acts [d] = malloc ((size_t) fit_n * dim * sizeof (float));
        eval_acts [d] = malloc ((size_t) eval_n * dim * sizeof (float));
        ok = fit_acts [d] && eval_acts [d];
    }
    if (!ok) {
        fprintf (stderr, "splitmesh privacy-audit: out of memory\n");
        goto done;
    }
    for (int v = 0; v < vocab; v++)
        all [v] = v;
    if (model_embed (self.model, all, vocab, emb_raw)) {
        fprintf (stderr, "splitmesh privacy-audit: %s\n", model_error (self.model));
        goto done;
    }
    memcpy (table, emb_raw, (size_t) vocab * dim * sizeof *table);
    privacy_normalize_rows (table, vocab, dim);
    if (layer_nn)
        memcpy (lt_cur, emb_raw, (size_t) vocab * dim * sizeof *lt_cur);
    for (long i = 0; i < fit_n; i++)
        memcpy (y + (size_t) i * dim, emb_raw + (size_t) fit_ids [i] * dim, (size_t) dim * sizeof *y);

    //  Activations at every depth, and the clean model's answers.
    if (s_collect (&self, fit_ids, fit_n, fit_acts, NULL)
    ||  s_collect (&self, eval_ids, eval_n, eval_acts, final)) {
        fprintf (stderr, "splitmesh privacy-audit: %s\n", model_error (self.model));
        goto done;
    }
    double clean_nll = 0;
    {
        //  The reference: no split, no link, no noise.
        for (long w0 = 0; w0 < eval_n; w0 += window)
            for (int r0 = 0; r0 < window; r0 += S_HEAD_ROWS) {
                int rows = (int) (window - r0 < S_HEAD_ROWS? window - r0: S_HEAD_ROWS);
                if (model_head (self.model, final + (size_t) (w0 + r0) * dim, rows, logits)) {
                    fprintf (stderr, "splitmesh privacy-audit: %s\n", model_error (self.model));
                    goto done;
                }
                int scored = r0 + rows <= window - 1? rows: (int) window - 1 - r0;
                s_score (logits, scored, vocab, eval_ids + w0 + r0 + 1, clean_arg + w0 + r0, &clean_nll);
                if (scored < rows)
                    s_score (logits + (size_t) scored * vocab, rows - scored, vocab, NULL,
                             clean_arg + w0 + r0 + scored, NULL);
            }
    }
    long scored_n = eval_n - eval_n / window;
    double clean_ppl = exp (clean_nll / scored_n);

    if (out_path && !(out = fopen (out_path, "w"))) {
        fprintf (stderr, "splitmesh privacy-audit: cannot write %s\n", out_path);
        out = stdout;
        goto done;
    }
    fprintf (out, "{\n  \"model\": \"%s\",\n  \"format\": \"%s\",\n  \"link_dtype\": \"%s\",\n"
                  "  \"n_layers\": %d,\n  \"dim\": %d,\n  \"vocab\": %d,\n  \"chance\": %.3g,\n"
                  "  \"calib\": {\"file\": \"%s\", \"tokens\": %ld},\n"
                  "  \"eval\": {\"file\": \"%s\", \"tokens\": %ld, \"window\": %ld, \"predictions\": %ld},\n"
                  "  \"ridge\": %g,\n  \"seed\": %ld,\n"
                  "  \"noise\": \"N(0, (sigma * row RMS)^2) per element, added before the link encoding\",\n"
                  "  \"attacks\": {\"nn\": \"argmax_v cos(a, E[v]) over the input embedding table\", "
                  "\"nn_centred\": \"nn of a minus the mean calib link activation (same L, sigma)\", "
                  "\"probe\": \"ridge regression a -> E[token] fitted on calib (same L, sigma), then nn\"%s},\n"
                  "  \"clean_perplexity\": %.4f,\n  \"results\": [\n",
             s_base (model_path), qfmt_name (mo.format), activations_dtype_name (dtype), N, dim, vocab,
             1.0 / vocab, s_base (calib), fit_n, s_base (eval), eval_n, window, scored_n, ridge, seed,
             layer_nn? ", \"nn_layer\": \"argmax_v cos(a, T_L[v]), T_L[v] = token v alone through "
                        "layers [0, L) (any guessed position: a lone token's rotations cancel)\", "
                        "\"nn_layer_centred\": \"nn_layer with a minus the mean calib link activation "
                        "and T_L minus its vocabulary mean\"": "",
             clean_ppl);
    threadpool_t *pool = model_pool (self.model);
    bool first = true;
    for (int d = 0; d < n_depths; d++) {
        int L = self.depths [d];
        double rms = 0;
        for (size_t i = 0; i < (size_t) eval_n * dim; i++)
            rms += (double) eval_acts [d][i] * eval_acts [d][i];
        rms = sqrt (rms / ((double) eval_n * dim));
        if (layer_nn) {
            //  The attacker's table at this depth (from the previous one).
            double t0 = s_now ();
            if (s_layer_table (&self, kv1, lt_cur, &lt_at, L)) {
                fprintf (stderr, "splitmesh privacy-audit: %s\n", model_error (self.model));
                goto done;
            }
            for (int k = 0; k < dim; k++)
                lt_mean [k] = 0;
            for (size_t i = 0; i < (size_t) vocab * dim; i++)
                lt_mean [i % dim] += lt_cur [i] / (float) vocab;
            s_unit_table (lt_cur, NULL, vocab, dim, lt_table);
            s_unit_table (lt_cur, lt_mean, vocab, dim, lt_centred);
            lt_seconds += s_now () - t0;
            fprintf (stderr, "L %2d: layer table of %d tokens [%.1f s]\n", L, vocab, s_now () - t0);
        }
        for (int s = 0; s < n_sigmas; s++) {
            double t0 = s_now ();
            uint64_t rng = (uint64_t) seed * 0x100000001b3ull + (uint64_t) (d * 64 + s) * 2 + 1;
            memcpy (link, eval_acts [d], (size_t) eval_n * dim * sizeof *link);
            privacy_add_noise (link, (int) eval_n, dim, sigmas [s], &rng);
            memcpy (fit_link, fit_acts [d], (size_t) fit_n * dim * sizeof *fit_link);
            privacy_add_noise (fit_link, (int) fit_n, dim, sigmas [s], &rng);
            if (privacy_transport (link, (int) eval_n, dim, dtype, err, sizeof err)
            ||  privacy_transport (fit_link, (int) fit_n, dim, dtype, err, sizeof err)) {
                fprintf (stderr, "splitmesh privacy-audit: link: %s\n", err);
                goto done;
            }
            //  (a) nearest neighbour
            if (privacy_nn (table, vocab, dim, link, (int) eval_n, pred, pool)) {
                fprintf (stderr, "splitmesh privacy-audit: out of memory\n");
                goto done;
            }
            long nn_hits = 0;
            for (long i = 0; i < eval_n; i++)
                nn_hits += pred [i] == eval_ids [i];
            //  (a') nearest neighbour after removing the calibration mean
            for (int k = 0; k < dim; k++)
                b [k] = 0;
            for (long i = 0; i < fit_n; i++)
                for (int k = 0; k < dim; k++)
                    b [k] += fit_link [(size_t) i * dim + k] / (float) fit_n;
            for (long i = 0; i < eval_n; i++)
                for (int k = 0; k < dim; k++)
                    probe_out [(size_t) i * dim + k] = link [(size_t) i * dim + k] - b [k];
            if (privacy_nn (table, vocab, dim, probe_out, (int) eval_n, pred, pool)) {
                fprintf (stderr, "splitmesh privacy-audit: out of memory\n");
                goto done;
            }
            long nnc_hits = 0;
            for (long i = 0; i < eval_n; i++)
                nnc_hits += pred [i] == eval_ids [i];
            //  (a'') nearest neighbour over the layer-L table, plain and
            //  centred (probe_out holds link minus the calib mean)
            long nnl_hits = -1, nnlc_hits = -1;
            if (layer_nn) {
                if (privacy_nn (lt_table, vocab, dim, link, (int) eval_n, pred, pool)) {
                    fprintf (stderr, "splitmesh privacy-audit: out of memory\n");
                    goto done;
                }
                nnl_hits = 0;
                for (long i = 0; i < eval_n; i++)
                    nnl_hits += pred [i] == eval_ids [i];
                if (privacy_nn (lt_centred, vocab, dim, probe_out, (int) eval_n, pred, pool)) {
                    fprintf (stderr, "splitmesh privacy-audit: out of memory\n");
                    goto done;
                }
                nnlc_hits = 0;
                for (long i = 0; i < eval_n; i++)
                    nnlc_hits += pred [i] == eval_ids [i];
            }
            //  (b) linear probe
            if (privacy_ridge_fit (fit_link, y, (int) fit_n, dim, dim, ridge, w, b, err, sizeof err)) {
                fprintf (stderr, "splitmesh privacy-audit: probe: %s\n", err);
                goto done;
            }
            privacy_ridge_apply (link, (int) eval_n, dim, dim, w, b, probe_out);
            if (privacy_nn (table, vocab, dim, probe_out, (int) eval_n, pred, pool)) {
                fprintf (stderr, "splitmesh privacy-audit: out of memory\n");
                goto done;
            }
            long probe_hits = 0;
            for (long i = 0; i < eval_n; i++)
                probe_hits += pred [i] == eval_ids [i];
            //  Quality of the cloud's answers from the same noisy link.
            double nll = 0;
            if (s_cloud (&self, L, link, eval_ids, eval_n, noisy_arg, &nll, logits)) {
                fprintf (stderr, "splitmesh privacy-audit: %s\n", model_error (self.model));
                goto done;
            }
            long agree = 0;
            for (long i = 0; i < eval_n; i++)
                agree += noisy_arg [i] == clean_arg [i];
            double nn_rate = (double) nn_hits / eval_n, probe_rate = (double) probe_hits / eval_n;
            double ppl = exp (nll / scored_n), top1 = (double) agree / eval_n;
            fprintf (out, "%s    {\"L\": %d, \"sigma\": %g, \"act_rms\": %.4f, \"nn_recovery\": %.4f, "
                          "\"nn_centred_recovery\": %.4f, \"probe_recovery\": %.4f, \"top1_agreement\": %.4f, "
                          "\"perplexity\": %.4f",
                     first? "": ",\n", L, sigmas [s], rms, nn_rate, (double) nnc_hits / eval_n,
                     probe_rate, top1, ppl);
            if (layer_nn)
                fprintf (out, ", \"nn_layer_recovery\": %.4f, \"nn_layer_centred_recovery\": %.4f",
                         (double) nnl_hits / eval_n, (double) nnlc_hits / eval_n);
            fprintf (out, "}");
            first = false;
            fprintf (stderr, "L %2d sigma %-5g: nn %.3f nn-centred %.3f nn-layer %.3f/%.3f probe %.3f | top-1 %.3f "
                     "ppl %.2f (clean %.2f) [%.1f s]\n", L, sigmas [s], nn_rate, (double) nnc_hits / eval_n,
                     (double) nnl_hits / eval_n, (double) nnlc_hits / eval_n, probe_rate, top1, ppl, clean_ppl,
                     s_now () - t0);
        }
    }
    fprintf (out, "\n  ],\n  \"layer_table_seconds\": %.1f,\n  \"seconds\": %.1f\n}\n",
             lt_seconds, s_now () - t_start);
    rc = 0;

done:
    if (out != stdout && out && fclose (out) && rc == 0) {
        fprintf (stderr, "splitmesh privacy-audit: cannot write %s\n", out_path);
        rc = 1;
    }
    for (int d = 0; d < S_MAX_LIST; d++) {
        free (fit_acts [d]);
        free (eval_acts [d]);
    }
    free (table);
    free (emb_raw);
    free (lt_cur);
    free (lt_table);
    free (lt_centred);
    free (lt_mean);
    kvcache_destroy (&kv1);
    free (all);
    free (final);
    free (logits);
    free (link);
    free (fit_link);
    free (y);
    free (w);
    free (b);
    free (probe_out);
    free (pred);
    free (clean_arg);
    free (noisy_arg);
    free (fit_ids);
    free (eval_ids);
    kvcache_destroy (&self.kv);
    tokenizer_destroy (&tok);
    model_destroy (&self.model);
    return rc;
}
