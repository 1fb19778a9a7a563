/*  split_prefix.c: the `prefix` MDP service (see split_prefix.h).

    One actor thread owns the model and every session's KV cache; requests
    are served one at a time (a model_t is single-threaded, and its own
    thread pool parallelises each forward pass).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "activations.h"
#include "kvcache.h"
#include "model.h"
#include "session_store.h"
#include "split_prefix.h"

#define S_CHUNK 512                 //  positions per forward call (bounds scratch)

typedef struct {
    kvcache_t *kv;              //  layers [0, L)
    int n_pos;                  //  positions held
    long *total;                //  the service's positions over all sessions
} s_session_t;

typedef struct {
    const service_config_t *config;
    model_t *model;             //  embeddings + layers [0, L)
    session_store_t *sessions;  //  id -> s_session_t
    int ctx;                    //  positions per session
    int split;                  //  L
    int dim;                    //  hidden size
    int vocab;                  //  vocabulary size
    long positions;             //  KV positions held over all sessions
    metrics_t *metrics;         //  telemetry (disabled without --telemetry)
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
        kvcache_destroy (&session->kv);
        free (session);
        *item_p = NULL;
    }
}

//  Runs tokens at pos through layers [0, L) of session and answers with
//  their activations. The caller checked that pos <= session->n_pos.
static zframe_t *
s_run (s_state_t *self, const char *id, s_session_t *session, uint32_t pos,
       const int32_t *tokens, size_t n)
{
    if ((size_t) pos + n > (size_t) self->ctx)
        return service_error (422, "prompt longer than the context: positions %u..%zu exceed "
                              "ctx %d", pos, (size_t) pos + n - 1, self->ctx);
    for (size_t i = 0; i < n; i++)
        if (tokens [i] < 0 || tokens [i] >= self->vocab)
            return service_error (422, "tokens[%zu] = %d is outside the vocabulary (%d tokens)",
                                  i, tokens [i], self->vocab);
    if (activations_wire_bytes (self->config->act_dtype, n, self->dim) > WIRE_MAX_ACTIVATION_BYTES)
        return service_error (413, "%zu positions of %s activations exceed max_activation_bytes %d",
                              n, activations_dtype_name (self->config->act_dtype),
                              WIRE_MAX_ACTIVATION_BYTES);
    float *x = malloc (n * (size_t) self->dim * sizeof *x);
    if (!x)
        return service_error (500, "out of memory for %zu positions", n);
    zframe_t *reply = NULL;
    kvcache_truncate (session->kv, (int) pos);
    s_set_pos (session, (int) pos);
    for (size_t p = 0; p < n; p += S_CHUNK) {
        int k = (int) (n - p < S_CHUNK? n - p: S_CHUNK);
        float *xp = x + p * (size_t) self->dim;
        if (model_embed (self->model, tokens + p, k, xp)
        ||  model_forward (self->model, session->kv, 0, self->split, (int) (pos + p), k, xp)) {
            reply = service_error (500, "forward pass: %s", model_error (self->model));
            goto done;
        }
        s_set_pos (session, (int) (pos + p) + k);
    }
    metrics_gauge (self->metrics, "kv_cache_positions", NULL, (double) self->positions);
    wire_activations_reply_t out;
    wire_activations_t acts;
    char err [256];
    if (activations_pack (x, (uint32_t) n, (uint32_t) self->dim, self->config->act_dtype,
                          (uint32_t) self->split, &acts, err, sizeof err)) {
        reply = service_error (500, "%s", err);
        goto done;
    }
    wire_msg_init (&wire_activations_reply_desc, &out);
    out.session = (char *) id;
    out.pos = pos;
    out.activations = &acts;
    reply = service_encode (&wire_activations_reply_desc, &out);
    wire_msg_free (&wire_activations_desc, &acts);
done:
    free (x);
    return reply;
}

static zframe_t *
s_prefill (s_state_t *self, zframe_t *body)
{
    wire_prefill_t req;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_prefill_desc, body, &req, &werr))
        return wire_error_frame_from (&werr);
    zframe_t *reply = NULL;
    if (!req.tokens) {
        reply = service_error (422, "prefix.prefill takes `tokens`; activations go to the target");
        goto done;
    }
    s_session_t *session = (s_session_t *) session_store_lookup (self->sessions, req.session);
    if (req.pos == 0 && !session) {
        //  Validate before allocating: a bad request creates nothing.
        if (req.tokens_count > (size_t) self->ctx) {
            reply = service_error (422, "prompt longer than the context: %zu tokens, ctx %d",
                                   req.tokens_count, self->ctx);
            goto done;
        }
        session = calloc (1, sizeof *session);
        if (session) {
            session->kv = kvcache_new (self->model, self->ctx);
            session->total = &self->positions;
        }
        if (!session || !session->kv) {
            s_session_free ((void **) &session);
            reply = service_error (500, "out of memory for a session of %d positions", self->ctx);
            goto done;
        }
        if (service_session_insert (self->sessions, "split-prefix", req.session, session)) {
            reply = service_error (500, "out of memory");
            goto done;
        }
    }
    else
    if (!session) {
        reply = service_error (404, "unknown session '%s'", req.session);
        goto done;
    }
    else
    if ((int) req.pos > session->n_pos) {
        reply = service_error (422, "position gap: pos %u but session '%s' holds %d positions",
                               req.pos, req.session, session->n_pos);
        goto done;
    }
    reply = s_run (self, req.session, session, req.pos, req.tokens, req.tokens_count);
done:
    wire_msg_free (&wire_prefill_desc, &req);
    return reply;
}

static zframe_t *
s_extend (s_state_t *self, zframe_t *body)
{
    wire_extend_t req;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_extend_desc, body, &req, &werr))
        return wire_error_frame_from (&werr);
    zframe_t *reply = NULL;
    s_session_t *session = (s_session_t *) session_store_lookup (self->sessions, req.session);
    if (!session)
        reply = service_error (404, "unknown session '%s'", req.session);
    else
    if ((int) req.pos > session->n_pos)
        reply = service_error (422, "position gap: pos %u but session '%s' holds %d positions",
                               req.pos, req.session, session->n_pos);
    else
        reply = s_run (self, req.session, session, req.pos, req.tokens, req.tokens_count);
    wire_msg_free (&wire_extend_desc, &req);
    return reply;
}

static zframe_t *
s_handler (void *state, zframe_t *body, const wire_peek_t *peek)
{
    s_state_t *self = (s_state_t *) state;
    if (streq (peek->tag, "prefill"))
        return s_prefill (self, body);
    if (streq (peek->tag, "extend"))
        return s_extend (self, body);
    if (streq (peek->tag, "session_close")) {
        //  The gauge follows the close, so /metrics shows the cache freed.
        zframe_t *reply = service_session_close (self->sessions, body);
        metrics_gauge (self->metrics, "kv_cache_positions", NULL, (double) self->positions);
        return reply;
    }
    return service_error (400, "prefix: expected 'prefill', 'extend' or 'session_close', got '%s'",
                          peek->tag);
}

void
split_prefix_actor (zsock_t *pipe, void *args)
{
    const service_config_t *config = (const service_config_t *) args;
    s_state_t state = { .config = config, .split = config->split };
    char err [512] = "", setup [768] = "";
    model_options_t mo = model_options_default ();
    mo.format = config->format;
    mo.n_threads = config->threads;
    mo.first_layer = 0;
    mo.last_layer = config->split;
    mo.load_embeddings = true;
    mo.load_head = false;
    if (config->split < 1)
        snprintf (setup, sizeof setup, "--split must be at least 1 (got %d)", config->split);
    else {
        state.model = model_load (config->model, &mo, err, sizeof err);
        if (!state.model)
            snprintf (setup, sizeof setup, "%s: %s", config->model, err);
    }
    if (state.model) {
        const model_config_t *c = model_config (state.model);
        state.dim = c->dim;
        state.vocab = c->vocab_size;
        service_stage_ctx (config, c->n_layers, c->context_length, &state.ctx,
                           setup, sizeof setup);
        state.sessions = session_store_new ((size_t) config->max_sessions, s_session_free);
        if (!state.sessions && !*setup)
            snprintf (setup, sizeof setup, "out of memory");
        if (!*setup)
            zsys_info ("split-prefix: layers [0, %d) of %s (%s, %.1f MB), ctx %d, %d sessions, "
                       "activations %s", config->split, config->model, qfmt_name (config->format),
                       model_weight_bytes (state.model) / 1e6, state.ctx, config->max_sessions,
                       activations_dtype_name (config->act_dtype));
    }
    state.metrics = *setup? NULL: metrics_new ("split-prefix", config->instance, config->telemetry);
    service_actor_run (pipe, config, "prefix", setup, s_handler, &state, state.metrics);
    session_store_destroy (&state.sessions);
    metrics_destroy (&state.metrics);
    model_destroy (&state.model);
}
