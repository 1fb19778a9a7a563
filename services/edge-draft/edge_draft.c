/*  edge_draft.c: the `generate` service actor: start-up (draft model,
    vocabulary, link emulator), the worker threads, and request validation.
    One generation's loop lives in edge_gen.c.

    Start-up loads the draft model once (shared by every worker, behind a
    mutex) and the vocabulary (for end-of-generation ids and the streaming
    detokenizer), and, with --link, starts a link_proxy whose near end is an
    ipc endpoint in a private temp dir and whose far end is the cloud
    broker: every worker's cloud client connects to the near end, so only
    the edge-cloud path is slowed, never the device broker.
*/
#include "edge_draft.h"
#include "edge_gen.h"
#include "gguf.h"
#include "link_proxy.h"
#include "mdp_client.h"
#include "mdp_worker.h"
#include "metrics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

//  One worker thread's arguments.
typedef struct {
    edge_shared_t *shared;      //  not owned
    int index;                  //  0..workers-1
} s_worker_args_t;

typedef struct {
    edge_shared_t shared;       //  what every worker reads
    zactor_t *proxy;            //  link emulator, or NULL
    char proxy_dir [256];       //  temp dir of the proxy's ipc endpoint
    zactor_t **workers;         //  worker threads
    s_worker_args_t *wargs;     //  their arguments
    int n_workers;
    char start_error [512];     //  "" when started
} s_self_t;

static void
s_worker (zsock_t *pipe, void *args)
{
    s_worker_args_t *wa = (s_worker_args_t *) args;
    edge_shared_t *sh = wa->shared;
    mdp_worker_options_t wo = { 0 };
    wo.heartbeat_ms = sh->heartbeat_ms;
    mdp_worker_t *worker = mdp_worker_new (sh->broker, "generate", &wo);
    mdp_client_t *dev = mdp_client_new (sh->broker);
    mdp_client_t *cloud = mdp_client_new (sh->cloud_near);
    if (!worker || !dev || !cloud) {
        zsys_error ("edge-draft: worker %d cannot connect (%s, %s)", wa->index, sh->broker, sh->cloud_near);
        zsock_signal (pipe, 0);
        goto done;
    }
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, mdp_worker_sock (worker), NULL);
    while (!zsys_interrupted && !atomic_load (&sh->stopping)) {
        void *which = zpoller_wait (poller, 500);
        if (which == pipe) {
            char *cmd = zstr_recv (pipe);
            bool term = !cmd || streq (cmd, "$TERM");
            zstr_free (&cmd);
            if (term)
                break;
            continue;
        }
        if (which != mdp_worker_sock (worker))
            continue;
        zframe_t *client = NULL;
        zmsg_t *body = mdp_worker_recv (worker, 0, &client);
        if (!body)
            continue;
        edge_gen_handle (sh, worker, client, body, dev, cloud);
        zmsg_destroy (&body);
        zframe_destroy (&client);
    }
    zpoller_destroy (&poller);
done:
    mdp_client_destroy (&cloud);
    mdp_client_destroy (&dev);
    mdp_worker_destroy (&worker);
}

//  Loads the draft model and the vocabulary. Returns 0 or -1 (start_error).
static int
s_load (s_self_t *self, const edge_draft_args_t *a)
{
    edge_shared_t *sh = &self->shared;
    char err [384];
    const char *model_path = a->model && *a->model ? a->model : getenv ("SPLITMESH_MODEL");
    const char *draft_path = a->draft_model && *a->draft_model ? a->draft_model : model_path;
    bool ngram_only = a->drafter && streq (a->drafter, "ngram");
    if (a->drafter && !ngram_only && !streq (a->drafter, "model")) {
        snprintf (self->start_error, sizeof self->start_error, "--drafter must be model or ngram, got '%s'", a->drafter);
        return -1;
    }
    if (!model_path || !*model_path) {
        snprintf (self->start_error, sizeof self->start_error, "no model: give --model or SPLITMESH_MODEL");
        return -1;
    }
    snprintf (sh->model_path, sizeof sh->model_path, "%s", model_path);
    gguf_t *vocab_file = NULL;
    if (!ngram_only) {
        model_options_t mo = model_options_default ();
        const char *fmt = a->draft_format && *a->draft_format ? a->draft_format : "w4";
        if (qfmt_parse (fmt, &mo.format)) {
            snprintf (self->start_error, sizeof self->start_error, "--draft-format must be f32, w8 or w4, got '%s'", fmt);
            return -1;
        }
        mo.n_threads = a->threads > 0 ? a->threads : 1;
        sh->draft = model_load (draft_path, &mo, err, sizeof err);
        if (!sh->draft) {
            snprintf (self->start_error, sizeof self->start_error, "draft model %s: %s", draft_path, err);
            return -1;
        }
    }
    //  The vocabulary: the target's file names the ids the cloud returns.
    vocab_file = gguf_open (model_path, err, sizeof err);
    if (!vocab_file) {
        snprintf (self->start_error, sizeof self->start_error, "model %s: %s", model_path, err);
        return -1;
    }
    sh->tok = tokenizer_new_from_gguf (vocab_file, err, sizeof err);
    int ctx_len = 0;
    {
        //  Context length from the target's metadata (llama.context_length).
        uint32_t v = 0;
        if (gguf_get_u32 (vocab_file, "llama.context_length", &v))
            ctx_len = (int) v;
    }
    char name [256] = "";
    gguf_get_str_copy (vocab_file, "general.name", name, sizeof name);
    gguf_destroy (&vocab_file);
    if (!sh->tok) {
        snprintf (self->start_error, sizeof self->start_error, "tokenizer of %s: %s", model_path, err);
        return -1;
    }
    if (sh->draft && model_config (sh->draft)->vocab_size != tokenizer_n_tokens (sh->tok)) {
        snprintf (self->start_error, sizeof self->start_error,
                  "draft model has %d tokens, the target's vocabulary %d: they must share one",
                  model_config (sh->draft)->vocab_size, (int) tokenizer_n_tokens (sh->tok));
        return -1;
    }
    if (ctx_len <= 0)
        ctx_len = sh->draft ? model_config (sh->draft)->context_length : EDGE_DRAFT_CTX_DEFAULT;
    sh->ctx = a->ctx > 0 ? a->ctx : (ctx_len < EDGE_DRAFT_CTX_DEFAULT ? ctx_len : EDGE_DRAFT_CTX_DEFAULT);
    if (sh->ctx > ctx_len) {
        snprintf (self->start_error, sizeof self->start_error, "--ctx %d exceeds the model's context %d", sh->ctx, ctx_len);
        return -1;
    }
    //  A generation's draft cache holds up to ctx + 1 positions.
    if (sh->draft && sh->ctx >= model_config (sh->draft)->context_length)
        sh->ctx = model_config (sh->draft)->context_length - 1;
    //  Names a request's `model` may use: file name with and without
    //  .gguf, and general.name.
    const char *base = strrchr (model_path, '/');
    base = base ? base + 1 : model_path;
    snprintf (sh->model_names [0], sizeof sh->model_names [0], "%s", base);
    snprintf (sh->model_names [1], sizeof sh->model_names [1], "%s", base);
    char *dot = strstr (sh->model_names [1], ".gguf");
    if (dot)
        *dot = 0;
    snprintf (sh->model_names [2], sizeof sh->model_names [2], "%s", name [0] ? name : base);
    return 0;
}

static int
s_start (s_self_t *self, const edge_draft_args_t *a)
{
    edge_shared_t *sh = &self->shared;
    pthread_mutex_init (&sh->draft_lock, NULL);
    pthread_mutex_init (&sh->head_lock, NULL);
    atomic_init (&sh->stopping, false);
    if (!a->broker || !*a->broker) {
        snprintf (self->start_error, sizeof self->start_error, "no broker endpoint (--broker)");
        return -1;
    }
    snprintf (sh->broker, sizeof sh->broker, "%s", a->broker);
    snprintf (sh->cloud, sizeof sh->cloud, "%s", a->cloud && *a->cloud ? a->cloud : a->broker);
    snprintf (sh->cloud_near, sizeof sh->cloud_near, "%s", sh->cloud);
    snprintf (sh->instance, sizeof sh->instance, "%s", a->instance ? a->instance : "");
    if (!sh->instance [0]) {
        char host [128] = "host";
        gethostname (host, sizeof host - 1);
        snprintf (sh->instance, sizeof sh->instance, "%s:%d", host, (int) getpid ());
    }
    sh->k_max = a->draft_k_max > 0 ? a->draft_k_max : EDGE_DRAFT_KMAX_DEFAULT;
    if (sh->k_max > DRAFTER_MAX_K)
        sh->k_max = DRAFTER_MAX_K;
    sh->fixed_k = a->fixed_k;
    sh->lookahead = !a->no_lookahead;
    sh->pipeline = sh->lookahead && !a->no_pipeline;
    if (a->draft_min_p < 0 || a->draft_min_p > 1) {
        snprintf (self->start_error, sizeof self->start_error, "--draft-min-p must be in [0, 1], got %g", a->draft_min_p);
        return -1;
    }
    sh->draft_min_p = (float) a->draft_min_p;
    sh->timeout_ms = a->timeout_ms > 0 ? a->timeout_ms : EDGE_DRAFT_TIMEOUT_DEFAULT;
    sh->heartbeat_ms = a->heartbeat_ms;
    sh->verbose = a->verbose;
    if (s_load (self, a))
        return -1;

    if (a->link && *a->link) {
        link_params_t lp = { 0 };
        char err [256];
        if (link_params_parse (&lp, a->link, err, sizeof err)) {
            snprintf (self->start_error, sizeof self->start_error, "--link: %s", err);
            return -1;
        }
        snprintf (self->proxy_dir, sizeof self->proxy_dir, "/tmp/splitmesh-edge-link-XXXXXX");
        if (!mkdtemp (self->proxy_dir)) {
            self->proxy_dir [0] = 0;
            snprintf (self->start_error, sizeof self->start_error, "--link: no temp dir for the proxy");
            return -1;
        }
        snprintf (sh->cloud_near, sizeof sh->cloud_near, "ipc://%s/cloud", self->proxy_dir);
        link_proxy_args_t pa = { sh->cloud_near, sh->cloud, lp, 0 };
        self->proxy = link_proxy_new (&pa, err, sizeof err);
        if (!self->proxy) {
            snprintf (self->start_error, sizeof self->start_error, "--link: %s", err);
            return -1;
        }
    }

    sh->metrics = metrics_new ("edge-draft", sh->instance, a->telemetry);
    if (a->telemetry && *a->telemetry && !sh->metrics) {
        snprintf (self->start_error, sizeof self->start_error, "--telemetry %s: cannot publish there", a->telemetry);
        return -1;
    }
    self->n_workers = a->workers > 0 ? a->workers : EDGE_DRAFT_WORKERS_DEFAULT;
    self->workers = calloc ((size_t) self->n_workers, sizeof *self->workers);
    self->wargs = calloc ((size_t) self->n_workers, sizeof *self->wargs);
    if (!self->workers || !self->wargs) {
        snprintf (self->start_error, sizeof self->start_error, "out of memory");
        return -1;
    }
    for (int i = 0; i < self->n_workers; i++) {
        self->wargs [i].shared = sh;
        self->wargs [i].index = i;
        self->workers [i] = zactor_new (s_worker, &self->wargs [i]);
        if (!self->workers [i]) {
            snprintf (self->start_error, sizeof self->start_error, "cannot start worker thread %d", i);
            return -1;
        }
    }
    zsys_info ("edge-draft: %d workers of 'generate' on %s, cloud %s%s%s, draft %s, ctx %d, k max %d%s%s",
               self->n_workers, sh->broker, sh->cloud, self->proxy ? " via link " : "",
               self->proxy ? a->link : "", sh->draft ? "model" : "ngram only", sh->ctx, sh->k_max,
               sh->fixed_k ? " (fixed)" : " (adaptive)",
               sh->pipeline ? ", lookahead, pipelined verifies" : sh->lookahead ? ", lookahead" : "");
    return 0;
}

static void
s_stop (s_self_t *self)
{
    edge_shared_t *sh = &self->shared;
    atomic_store (&sh->stopping, true);
    for (int i = 0; i < self->n_workers; i++)
        zactor_destroy (&self->workers [i]);
    free (self->workers);
    free (self->wargs);
    zactor_destroy (&self->proxy);
    if (self->proxy_dir [0]) {
        char path [300];
        snprintf (path, sizeof path, "%s/cloud", self->proxy_dir);
        unlink (path);
        rmdir (self->proxy_dir);
    }
    metrics_destroy (&sh->metrics);
    tokenizer_destroy (&sh->tok);
    model_destroy (&sh->draft);
    model_destroy (&sh->head);
    pthread_mutex_destroy (&sh->draft_lock);
    pthread_mutex_destroy (&sh->head_lock);
}

void
edge_draft_actor (zsock_t *pipe, void *args)
{
    s_self_t *self = calloc (1, sizeof *self);
    if (!self) {
        zsock_signal (pipe, 0);
        return;
    }
    if (s_start (self, (const edge_draft_args_t *) args))
        zsys_error ("edge-draft: %s", self->start_error);
    zsock_signal (pipe, 0);
    while (!zsys_interrupted) {
        char *cmd = zstr_recv (pipe);
        if (!cmd)
            break;
        bool term = streq (cmd, "$TERM");
        if (streq (cmd, "STATUS")) {
            if (self->start_error [0])
                zsock_send (pipe, "ss", "ERROR", self->start_error);
            else
                zsock_send (pipe, "ss", "OK", "");
        }
        zstr_free (&cmd);
        if (term)
            break;
    }
    s_stop (self);
    free (self);
}

zactor_t *
edge_draft_new (const edge_draft_args_t *args, char *err, size_t err_size)
{
    zactor_t *actor = zactor_new (edge_draft_actor, (void *) args);
    if (!actor) {
        snprintf (err, err_size, "cannot start the edge-draft thread");
        return NULL;
    }
    zstr_send (actor, "STATUS");
    char *status = NULL, *reason = NULL;
    zsock_recv (actor, "ss", &status, &reason);
    bool ok = status && streq (status, "OK");
    if (!ok) {
        snprintf (err, err_size, "%s", reason ? reason : "edge-draft did not answer");
        zactor_destroy (&actor);
    }
    free (status);
    free (reason);
    return actor;
}
