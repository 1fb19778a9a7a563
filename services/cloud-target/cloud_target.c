/*  cloud_target.c: the `target` MDP service (see cloud_target.h).

    One actor thread owns the backend and every session; requests are
    served one at a time (batch size 1 for now: the CUDA backend of issue 5
    batches verifications of many sessions).
*/
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "activations.h"
#include "cloud_target.h"
#include "gpu.h"
#include "privacy_record.h"
#include "session_store.h"
#include "speculative.h"
#include "target_backend.h"

#define S_CHUNK 512                 //  positions per forward call (bounds scratch)

typedef enum { S_MODE_ACTIVATIONS, S_MODE_TOKENS } s_mode_t;

typedef struct {
    target_kv_t *kv;            //  the backend's cache
    void (*kv_destroy) (target_kv_t **);
    int n_pos;                  //  positions held
    s_mode_t mode;              //  what the session was prefilled with
    uint64_t seed;              //  sampling seed of the session
    long *total;                //  the service's positions over all sessions
} s_session_t;

typedef struct {
    const service_config_t *config;
    target_backend_t *backend;
    session_store_t *sessions;  //  id -> s_session_t
    speculative_t *verifier;
    float *logits;              //  (max_draft_k + 1, vocab)
    int ctx;                    //  positions per session
    int split;                  //  L
    long positions;             //  KV positions held over all sessions
    metrics_t *metrics;         //  telemetry (disabled without --telemetry)
    privacy_record_t *record;   //  SPLITMESH_TARGET_RECORD: every body in and out
} s_state_t;

//  Sets a session's position count, keeping the service's total.
static void
s_set_pos (s_session_t *session, int n_pos)
{
    *session->total += n_pos - session->n_pos;
    session->n_pos = n_pos;
}

static void
s_session_free (void **item_p)
{
    s_session_t *session = (s_session_t *) *item_p;
    if (session) {
        if (session->total)
            *session->total -= session->n_pos;
        session->kv_destroy (&session->kv);
        free (session);
        *item_p = NULL;
    }
}

static uint64_t
s_random_seed (void)
{
    uint64_t seed = 0;
    int fd = open ("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read (fd, &seed, sizeof seed) != (ssize_t) sizeof seed)
            seed = 0;
        close (fd);
    }
    return seed ^ (uint64_t) zclock_usecs ();
}

//  The rows of a request: activations (checked against L and dim) or
//  tokens (checked against the vocabulary and the loaded range). Fills x
//  (n x dim, caller frees) and *mode. Returns NULL, or the error reply.
static zframe_t *
s_input (s_state_t *self, const wire_activations_t *acts, const int32_t *tokens, size_t n_tokens,
         float **x_p, size_t *n_p, s_mode_t *mode)
{
    target_backend_t *b = self->backend;
    *x_p = NULL;
    if (acts) {
        if (!acts->has_layer || (int) acts->layer != self->split)
            return acts->has_layer
                ? service_error (422, "activations.layer is %u but this target starts at layer %d "
                                 "(--split)", acts->layer, self->split)
                : service_error (422, "activations.layer is missing; this target starts at layer %d",
                                 self->split);
        if ((int) acts->dim != b->dim)
            return service_error (422, "activations.dim is %u but the model's hidden size is %d",
                                  acts->dim, b->dim);
        *n_p = acts->n_pos;
        *mode = S_MODE_ACTIVATIONS;
    }
    else {
        if (!b->has_embeddings)
            return service_error (422, "this target runs --stage-only: send activations, "
                                  "not tokens (privacy none is not served)");
        for (size_t i = 0; i < n_tokens; i++)
            if (tokens [i] < 0 || tokens [i] >= b->vocab)
                return service_error (422, "tokens[%zu] = %d is outside the vocabulary (%d tokens)",
                                      i, tokens [i], b->vocab);
        *n_p = n_tokens;
        *mode = S_MODE_TOKENS;
    }
    //  Bound the buffer by the context before allocating it.
    if (*n_p > (size_t) self->ctx)
        return service_error (422, "prompt longer than the context: %zu positions, ctx %d",
                              *n_p, self->ctx);
    float *x = malloc (*n_p * (size_t) b->dim * sizeof *x);
    if (!x)
        return service_error (500, "out of memory for %zu rows", *n_p);
    char err [256];
    if (acts && activations_unpack (acts, x, *n_p * (size_t) b->dim, err, sizeof err)) {
        free (x);
        return service_error (422, "%s", err);
    }
    if (!acts && b->ops->embed (b, tokens, (int) n_tokens, x)) {
        zframe_t *reply = service_error (500, "embedding: %s", b->ops->error (b));
        free (x);
        return reply;
    }
    *x_p = x;
    return NULL;
}

//  Runs n rows at pos through the session's layers; x is replaced by the
//  final hidden states (before the final norm). Returns NULL or an error.
static zframe_t *
s_forward (s_state_t *self, s_session_t *session, uint32_t pos, float *x, size_t n)
{
    target_backend_t *b = self->backend;
    int first = session->mode == S_MODE_TOKENS? 0: self->split;
    b->ops->kv_truncate (session->kv, (int) pos);
    s_set_pos (session, (int) pos);
    for (size_t p = 0; p < n; p += S_CHUNK) {
        int k = (int) (n - p < S_CHUNK? n - p: S_CHUNK);
        if (b->ops->forward (b, session->kv, first, b->n_layers, (int) (pos + p), k,
                             x + p * (size_t) b->dim))
            return service_error (500, "forward pass: %s", b->ops->error (b));
        s_set_pos (session, (int) (pos + p) + k);
    }
    return NULL;
}

static sampler_params_t
s_params (double temperature, uint32_t top_k, double top_p, uint64_t seed)
{
    sampler_params_t sp = sampler_params_default ();
    sp.temperature = (float) temperature;
    sp.top_k = top_k > (uint32_t) INT32_MAX? INT32_MAX: (int) top_k;
    sp.top_p = (float) top_p;
    sp.seed = seed;
    return sp;
}

//  Checks the positions a request writes. Returns NULL or an error reply.
static zframe_t *
s_check_pos (s_state_t *self, const char *id, s_session_t *session, uint32_t pos, size_t n,
             s_mode_t mode)
{
    if ((int) pos > session->n_pos)
        return service_error (422, "position gap: pos %u but session '%s' holds %d positions",
                              pos, id, session->n_pos);
    if ((size_t) pos + n > (size_t) self->ctx)
        return service_error (422, "prompt longer than the context: positions %u..%zu exceed "
                              "ctx %d", pos, (size_t) pos + n - 1, self->ctx);
    if (pos > 0 && mode != session->mode)
        return service_error (422, "session '%s' was prefilled with %s; this request sends %s",
                              id, session->mode == S_MODE_TOKENS? "tokens": "activations",
                              mode == S_MODE_TOKENS? "tokens": "activations");
    return NULL;
}

static zframe_t *
s_prefill (s_state_t *self, zframe_t *body)
{
    wire_prefill_t req;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_prefill_desc, body, &req, &werr))
        return wire_error_frame_from (&werr);
    target_backend_t *b = self->backend;
    float *x = NULL;
    size_t n = 0;
    s_mode_t mode;
    zframe_t *reply = s_input (self, req.activations, req.tokens, req.tokens_count, &x, &n, &mode);
    if (reply)
        goto done;
    s_session_t *session = (s_session_t *) session_store_lookup (self->sessions, req.session);
    if (req.pos > 0 && !session) {
        reply = service_error (404, "unknown session '%s'", req.session);
        goto done;
    }
    if (!session) {
        session = calloc (1, sizeof *session);
        if (session) {
            session->kv_destroy = b->ops->kv_destroy;
            session->kv = b->ops->kv_new (b, self->ctx);
            session->total = &self->positions;
        }
        if (!session || !session->kv) {
            free (session);
            reply = service_error (500, "out of memory for a session of %d positions", self->ctx);
            goto done;
        }
        session->mode = mode;
        session->seed = req.has_seed? req.seed: s_random_seed ();
        if (service_session_insert (self->sessions, "cloud-target", req.session, session)) {
            reply = service_error (500, "out of memory");
            goto done;
        }
    }
    else {
        if ((reply = s_check_pos (self, req.session, session, req.pos, n, mode)))
            goto done;
        if (req.pos == 0) {
            session->mode = mode;
            session->seed = req.has_seed? req.seed: s_random_seed ();
        }
        else
        if (req.has_seed)
            session->seed = req.seed;
    }
    if ((reply = s_forward (self, session, req.pos, x, n)))
        goto done;

    wire_prefill_reply_t out;
    wire_msg_init (&wire_prefill_reply_desc, &out);
    out.session = req.session;
    out.n_pos = (uint32_t) session->n_pos;
    const float *last = x + (n - 1) * (size_t) b->dim;
    wire_activations_t hidden;
    char err [256];
    if (req.return_hidden) {
        if (activations_pack (last, 1, (uint32_t) b->dim, WIRE_DTYPE_FP32, (uint32_t) b->n_layers,
                              &hidden, err, sizeof err)) {
            reply = service_error (500, "%s", err);
            goto done;
        }
        out.hidden = &hidden;
        reply = service_encode (&wire_prefill_reply_desc, &out);
        wire_msg_free (&wire_activations_desc, &hidden);
        goto done;
    }
    if (b->ops->head (b, last, 1, self->logits)) {
        reply = service_error (500, "head: %s", b->ops->error (b));
        goto done;
    }
    sampler_params_t sp = s_params (req.temperature, req.top_k, req.top_p, session->seed);
    int accepted;
    int32_t next;
    if (speculative_verify (self->verifier, self->logits, 0, NULL, NULL, &sp,
                            (uint32_t) session->n_pos - 1, &accepted, &next, err, sizeof err)) {
        reply = service_error (422, "%s", err);
        goto done;
    }
    out.next_token = next;
    out.has_next_token = true;
    reply = service_encode (&wire_prefill_reply_desc, &out);
    metrics_gauge (self->metrics, "kv_cache_positions", NULL, (double) self->positions);
done:
    free (x);
    wire_msg_free (&wire_prefill_desc, &req);
    return reply;
}

static zframe_t *
s_verify (s_state_t *self, zframe_t *body)
{
    wire_verify_t req;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_verify_desc, body, &req, &werr))
        return wire_error_frame_from (&werr);
    target_backend_t *b = self->backend;
    float *x = NULL;
    size_t n = 0;
    s_mode_t mode;
    speculative_q_t q [WIRE_MAX_DRAFT_K];
    zframe_t *reply = NULL;
    int64_t start = zclock_usecs ();
    s_session_t *session = (s_session_t *) session_store_lookup (self->sessions, req.session);
    if (!session) {
        reply = service_error (404, "unknown session '%s'", req.session);
        goto done;
    }
    if ((reply = s_input (self, req.activations, req.tokens, req.tokens_count, &x, &n, &mode)))
        goto done;
    //  Privacy full (return_hidden): no draft ids travel; the rows are t0
    //  and the drafts as activations, and the edge verifies.
    int k = req.return_hidden? (int) n - 1: (int) req.draft_tokens_count;
    if (req.return_hidden && (mode != S_MODE_ACTIVATIONS || req.draft_tokens_count || req.drafts_count)) {
        reply = service_error (422, "return_hidden takes activations and no draft_tokens or drafts");
        goto done;
    }
    if (n != (size_t) k + 1) {
        //  The codec's check enforces this too; a hand-built request may not.
        reply = service_error (422, "verify needs %d rows (t0 and %d drafts), got %zu", k + 1, k, n);
        goto done;
    }
    if ((reply = s_check_pos (self, req.session, session, req.pos, n, mode)))
        goto done;
    if (req.has_seed)
        session->seed = req.seed;
    //  Validate the drafts before touching the cache.
    for (int i = 0; i < (int) req.draft_tokens_count; i++)
        if (req.draft_tokens [i] < 0 || req.draft_tokens [i] >= b->vocab) {
            reply = service_error (422, "draft_tokens[%d] = %d is outside the vocabulary (%d)",
                                   i, req.draft_tokens [i], b->vocab);
            goto done;
        }
    for (size_t i = 0; i < req.drafts_count && i < WIRE_MAX_DRAFT_K; i++) {
        q [i].tokens = req.drafts [i].tokens;
        q [i].probs = req.drafts [i].probs;
        q [i].n = (int) (req.drafts [i].tokens_count < req.drafts [i].probs_count
                         ? req.drafts [i].tokens_count: req.drafts [i].probs_count);
    }
    if (req.drafts_count && req.drafts_count != (size_t) k) {
        reply = service_error (422, "drafts has %zu entries for %d draft tokens", req.drafts_count, k);
        goto done;
    }
    if ((reply = s_forward (self, session, req.pos, x, n)))
        goto done;

    wire_verify_reply_t out;
    wire_msg_init (&wire_verify_reply_desc, &out);
    out.session = req.session;
    char err [256];
    if (req.return_hidden) {
        //  Privacy full: the edge verifies locally and rolls back with the
        //  next request's pos; the cache keeps all k+1 rows until then.
        wire_activations_t hidden;
        if (activations_pack (x, (uint32_t) n, (uint32_t) b->dim, WIRE_DTYPE_FP32,
                              (uint32_t) b->n_layers, &hidden, err, sizeof err)) {
            reply = service_error (500, "%s", err);
            goto done;
        }
        out.accepted = 0;
        out.n_pos = (uint32_t) session->n_pos;
        out.hidden = &hidden;
        reply = service_encode (&wire_verify_reply_desc, &out);
        wire_msg_free (&wire_activations_desc, &hidden);
        goto done;
    }
    if (b->ops->head (b, x, (int) n, self->logits)) {
        reply = service_error (500, "head: %s", b->ops->error (b));
        goto done;
    }
    sampler_params_t sp = s_params (req.temperature, req.top_k, req.top_p, session->seed);
    int accepted;
    int32_t next;
    if (speculative_verify (self->verifier, self->logits, k, req.draft_tokens,
                            req.drafts_count? q: NULL, &sp, req.pos, &accepted, &next,
                            err, sizeof err)) {
        //  Bad drafts: nothing was accepted; leave the cache at pos + 1 so a
        //  retry at the same pos starts from the same state.
        b->ops->kv_truncate (session->kv, (int) req.pos);
        s_set_pos (session, (int) req.pos);
        reply = service_error (422, "%s", err);
        goto done;
    }
    s_set_pos (session, (int) req.pos + 1 + accepted);
    b->ops->kv_truncate (session->kv, session->n_pos);
    metrics_observe (self->metrics, "verify_seconds", NULL,
                             (zclock_usecs () - start) / 1e6);
    metrics_gauge (self->metrics, "batch_size", NULL, 1);
    metrics_gauge (self->metrics, "kv_cache_positions", NULL, (double) self->positions);
    out.accepted = (uint32_t) accepted;
    out.next_token = next;
    out.has_next_token = true;
    out.n_pos = (uint32_t) session->n_pos;
    reply = service_encode (&wire_verify_reply_desc, &out);
done:
    free (x);
    wire_msg_free (&wire_verify_desc, &req);
    return reply;
}

static zframe_t *
s_dispatch (s_state_t *self, zframe_t *body, const wire_peek_t *peek)
{
    if (streq (peek->tag, "prefill"))
        return s_prefill (self, body);
    if (streq (peek->tag, "verify"))
        return s_verify (self, body);
    if (streq (peek->tag, "session_close")) {
        //  The gauge follows the close, so /metrics shows the cache freed.
        zframe_t *reply = service_session_close (self->sessions, body);
        metrics_gauge (self->metrics, "kv_cache_positions", NULL, (double) self->positions);
        return reply;
    }
    return service_error (400, "target: expected 'prefill', 'verify' or 'session_close', got '%s'",
                          peek->tag);
}

//  Serves one request; with a recorder (privacy audit), the request and
//  reply bodies go to it first.
static zframe_t *
s_handler (void *state, zframe_t *body, const wire_peek_t *peek)
{
    s_state_t *self = (s_state_t *) state;
    if (self->record && privacy_record_append (self->record, 'Q', zframe_data (body), zframe_size (body)))
        zsys_warning ("cloud-target: recording a request failed");
    zframe_t *reply = s_dispatch (self, body, peek);
    if (self->record && reply
    &&  privacy_record_append (self->record, 'R', zframe_data (reply), zframe_size (reply)))
        zsys_warning ("cloud-target: recording a reply failed");
    return reply;
}

void
cloud_target_actor (zsock_t *pipe, void *args)
{
    const service_config_t *config = (const service_config_t *) args;
    s_state_t state = { .config = config, .split = config->split };
    char err [512] = "", setup [768] = "";
    if (config->split < 0)
        snprintf (setup, sizeof setup, "--split is required");
    else {
        //  The CUDA backend where there is a device (SPLITMESH_TARGET_BACKEND
        //  = cpu | cuda overrides; SPLITMESH_GPU_FORMAT = fp16 | w8a8),
        //  the CPU backend otherwise.
        const char *want = getenv ("SPLITMESH_TARGET_BACKEND");
        bool cuda = want? streq (want, "cuda"): gpu_device_count () > 0;
        gpu_fmt_t gfmt = GPU_FMT_FP16;
        if (cuda && gpu_fmt_parse (getenv ("SPLITMESH_GPU_FORMAT"), &gfmt))
            gfmt = GPU_FMT_FP16;
        state.backend = cuda
            ? target_backend_cuda_new (config->model, config->format, (int) gfmt,
                                       config->stage_only? config->split: 0,
                                       (int) config->max_sessions, config->ctx? config->ctx: 2048,
                                       err, sizeof err)
            : target_backend_cpu_new (config->model, config->format, config->threads,
                                      config->stage_only? config->split: 0,
                                      err, sizeof err);
        if (!state.backend)
            snprintf (setup, sizeof setup, "%s: %s", config->model, err);
    }
    if (state.backend) {
        target_backend_t *b = state.backend;
        service_stage_ctx (config, b->n_layers, b->context_length, &state.ctx,
                           setup, sizeof setup);
        state.sessions = session_store_new ((size_t) config->max_sessions, s_session_free);
        state.verifier = speculative_new (b->vocab);
        state.logits = malloc ((size_t) (WIRE_MAX_DRAFT_K + 1) * b->vocab * sizeof (float));
        if ((!state.sessions || !state.verifier || !state.logits) && !*setup)
            snprintf (setup, sizeof setup, "out of memory");
        if (!*setup)
            zsys_info ("cloud-target: %s backend, layers [%d, %d) + head of %s (%s, %.1f MB), "
                       "split %d, ctx %d, %d sessions", b->ops->name, b->first_layer, b->n_layers,
                       config->model, qfmt_name (config->format), b->weight_bytes / 1e6,
                       config->split, state.ctx, config->max_sessions);
    }
    state.metrics = *setup? NULL: metrics_new ("cloud-target", config->instance, config->telemetry);
    state.record = privacy_record_open_env (PRIVACY_RECORD_ENV);
    service_actor_run (pipe, config, "target", setup, s_handler, &state, state.metrics);
    session_store_destroy (&state.sessions);
    metrics_destroy (&state.metrics);
    privacy_record_destroy (&state.record);
    speculative_destroy (&state.verifier);
    free (state.logits);
    if (state.backend)
        state.backend->ops->destroy (&state.backend);
}
