/*  cloud_target.c: the `target` MDP service (see cloud_target.h).

    One actor thread owns the backend and every session. Requests are
    served in batches (batcher.h: several in flight at the worker, gathered
    with a bounded wait): a batch's prefill and verify rows run as one
    forward pass where the backend has forward_batch (CUDA; the CPU runs
    them one after another) and one head pass, then each request's
    acceptance and reply. A request that fails (bad input, a failed pass)
    fails alone; its batch mates are answered.
*/
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "activations.h"
#include "batcher.h"
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
    float *logits;              //  (rows, vocab) a batch's head output
    size_t logits_size;         //  floats allocated
    float *head_x;              //  (rows, dim) a batch's rows for the head
    size_t head_x_size;
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
             s_mode_t mode, bool pipelined)
{
    //  A pipelined verify past the end: its predecessor rejected drafts
    //  (docs/pipeline.md), an expected outcome rather than a caller's error.
    if ((int) pos > session->n_pos && pipelined)
        return service_error (409, "stale pipelined verify: pos %u but session '%s' holds %d "
                              "positions (the previous verify rejected drafts)", pos, id, session->n_pos);
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

//  One admitted prefill or verify: its decoded request, the rows it runs
//  and what the reply needs, from admission to reply.
typedef struct {
    bool is_verify;
    wire_prefill_t prefill;     //  the request, when !is_verify
    wire_verify_t verify;       //  the request, when is_verify
    s_session_t *session;
    float *x;                   //  (n, dim) input rows, then the last layer's output
    size_t n;
    uint32_t pos;               //  first position
    int first;                  //  first layer the rows run (0 or L)
    bool hidden;                //  return_hidden: no head, rows go back
    int k;                      //  draft tokens (verify)
    speculative_q_t q [WIRE_MAX_DRAFT_K];
    const float *logits;        //  its rows of the batch's head output
    int64_t start;              //  zclock_usecs () at admission
    zframe_t *reply;            //  set once the job failed or finished
} s_job_t;

static void
s_job_destroy (s_job_t **job_p)
{
    s_job_t *job = *job_p;
    if (job) {
        free (job->x);
        if (job->is_verify)
            wire_msg_free (&wire_verify_desc, &job->verify);
        else
            wire_msg_free (&wire_prefill_desc, &job->prefill);
        zframe_destroy (&job->reply);
        free (job);
        *job_p = NULL;
    }
}

//  Admits a prefill: decodes and checks it, creates or resets its session
//  and computes its input rows. Returns BATCHER_REPLY with an error,
//  BATCHER_DEFER when a new session would evict one of the n_jobs already
//  in the batch, or BATCHER_JOB.
static batcher_admit_t
s_prefill_admit (s_state_t *self, zframe_t *body, int n_jobs, s_job_t *job, zframe_t **reply_p)
{
    wire_prefill_t *req = &job->prefill;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_prefill_desc, body, req, &werr)) {
        *reply_p = wire_error_frame_from (&werr);
        return BATCHER_REPLY;
    }
    target_backend_t *b = self->backend;
    s_session_t *session = (s_session_t *) session_store_lookup (self->sessions, req->session);
    if (!session && req->pos == 0 && n_jobs > 0
    &&  session_store_size (self->sessions) >= session_store_max (self->sessions))
        return BATCHER_DEFER;   //  inserting would evict a session; the batch may hold it
    s_mode_t mode;
    zframe_t *reply = s_input (self, req->activations, req->tokens, req->tokens_count,
                               &job->x, &job->n, &mode);
    if (reply)
        goto fail;
    if (req->pos > 0 && !session) {
        reply = service_error (404, "unknown session '%s'", req->session);
        goto fail;
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
            goto fail;
        }
        session->mode = mode;
        session->seed = req->has_seed? req->seed: s_random_seed ();
        if (service_session_insert (self->sessions, "cloud-target", req->session, session)) {
            reply = service_error (500, "out of memory");
            goto fail;
        }
    }
    else {
        if ((reply = s_check_pos (self, req->session, session, req->pos, job->n, mode, false)))
            goto fail;
        if (req->pos == 0) {
            session->mode = mode;
            session->seed = req->has_seed? req->seed: s_random_seed ();
        }
        else
        if (req->has_seed)
            session->seed = req->seed;
    }
    job->session = session;
    job->pos = req->pos;
    job->first = session->mode == S_MODE_TOKENS? 0: self->split;
    job->hidden = req->return_hidden;
    return BATCHER_JOB;
fail:
    *reply_p = reply;
    return BATCHER_REPLY;
}

//  The prefill's reply once its rows ran (and the head, unless hidden).
static zframe_t *
s_prefill_finish (s_state_t *self, s_job_t *job)
{
    target_backend_t *b = self->backend;
    wire_prefill_t *req = &job->prefill;
    s_session_t *session = job->session;
    wire_prefill_reply_t out;
    wire_msg_init (&wire_prefill_reply_desc, &out);
    out.session = req->session;
    out.n_pos = (uint32_t) session->n_pos;
    char err [256];
    if (job->hidden) {
        wire_activations_t hidden;
        const float *last = job->x + (job->n - 1) * (size_t) b->dim;
        if (activations_pack (last, 1, (uint32_t) b->dim, WIRE_DTYPE_FP32, (uint32_t) b->n_layers,
                              &hidden, err, sizeof err))
            return service_error (500, "%s", err);
        out.hidden = &hidden;
        zframe_t *reply = service_encode (&wire_prefill_reply_desc, &out);
        wire_msg_free (&wire_activations_desc, &hidden);
        return reply;
    }
    sampler_params_t sp = s_params (req->temperature, req->top_k, req->top_p, session->seed);
    int accepted;
    int32_t next;
    if (speculative_verify (self->verifier, job->logits, 0, NULL, NULL, &sp,
                            (uint32_t) session->n_pos - 1, &accepted, &next, err, sizeof err))
        return service_error (422, "%s", err);
    out.next_token = next;
    out.has_next_token = true;
    return service_encode (&wire_prefill_reply_desc, &out);
}

//  Admits a verify: decodes and checks the request, its session, rows and
//  drafts (nothing changes before the forward pass). BATCHER_REPLY with
//  an error, or BATCHER_JOB.
static batcher_admit_t
s_verify_admit (s_state_t *self, zframe_t *body, s_job_t *job, zframe_t **reply_p)
{
    wire_verify_t *req = &job->verify;
    wire_err_t werr = { 0 };
    if (wire_decode_frame (&wire_verify_desc, body, req, &werr)) {
        *reply_p = wire_error_frame_from (&werr);
        return BATCHER_REPLY;
    }
    job->is_verify = true;
    target_backend_t *b = self->backend;
    s_mode_t mode;
    zframe_t *reply = NULL;
    s_session_t *session = (s_session_t *) session_store_lookup (self->sessions, req->session);
    if (!session) {
        reply = service_error (404, "unknown session '%s'", req->session);
        goto fail;
    }
    if ((reply = s_input (self, req->activations, req->tokens, req->tokens_count, &job->x, &job->n,
                          &mode)))
        goto fail;
    //  Privacy full (return_hidden): no draft ids travel; the rows are t0
    //  and the drafts as activations, and the edge verifies.
    int k = req->return_hidden? (int) job->n - 1: (int) req->draft_tokens_count;
    if (req->return_hidden && (mode != S_MODE_ACTIVATIONS || req->draft_tokens_count || req->drafts_count)) {
        reply = service_error (422, "return_hidden takes activations and no draft_tokens or drafts");
        goto fail;
    }
    if (job->n != (size_t) k + 1) {
        //  The codec's check enforces this too; a hand-built request may not.
        reply = service_error (422, "verify needs %d rows (t0 and %d drafts), got %zu", k + 1, k,
                               job->n);
        goto fail;
    }
    if ((reply = s_check_pos (self, req->session, session, req->pos, job->n, mode, req->pipelined)))
        goto fail;
    //  Validate the drafts before touching the cache.
    for (int i = 0; i < (int) req->draft_tokens_count; i++)
        if (req->draft_tokens [i] < 0 || req->draft_tokens [i] >= b->vocab) {
            reply = service_error (422, "draft_tokens[%d] = %d is outside the vocabulary (%d)",
                                   i, req->draft_tokens [i], b->vocab);
            goto fail;
        }
    for (size_t i = 0; i < req->drafts_count && i < WIRE_MAX_DRAFT_K; i++) {
        job->q [i].tokens = req->drafts [i].tokens;
        job->q [i].probs = req->drafts [i].probs;
        job->q [i].n = (int) (req->drafts [i].tokens_count < req->drafts [i].probs_count
                              ? req->drafts [i].tokens_count: req->drafts [i].probs_count);
    }
    if (req->drafts_count && req->drafts_count != (size_t) k) {
        reply = service_error (422, "drafts has %zu entries for %d draft tokens", req->drafts_count, k);
        goto fail;
    }
    if (req->has_seed)
        session->seed = req->seed;
    job->session = session;
    job->pos = req->pos;
    job->first = session->mode == S_MODE_TOKENS? 0: self->split;
    job->hidden = req->return_hidden;
    job->k = k;
    return BATCHER_JOB;
fail:
    *reply_p = reply;
    return BATCHER_REPLY;
}

//  The verify's reply once its rows ran (and the head, unless hidden):
//  acceptance, rollback of the rejected positions.
static zframe_t *
s_verify_finish (s_state_t *self, s_job_t *job)
{
    target_backend_t *b = self->backend;
    wire_verify_t *req = &job->verify;
    s_session_t *session = job->session;
    wire_verify_reply_t out;
    wire_msg_init (&wire_verify_reply_desc, &out);
    out.session = req->session;
    char err [256];
    if (job->hidden) {
        //  Privacy full: the edge verifies locally and rolls back with the
        //  next request's pos; the cache keeps all k+1 rows until then.
        wire_activations_t hidden;
        if (activations_pack (job->x, (uint32_t) job->n, (uint32_t) b->dim, WIRE_DTYPE_FP32,
                              (uint32_t) b->n_layers, &hidden, err, sizeof err))
            return service_error (500, "%s", err);
        out.accepted = 0;
        out.n_pos = (uint32_t) session->n_pos;
        out.hidden = &hidden;
        zframe_t *reply = service_encode (&wire_verify_reply_desc, &out);
        wire_msg_free (&wire_activations_desc, &hidden);
        return reply;
    }
    sampler_params_t sp = s_params (req->temperature, req->top_k, req->top_p, session->seed);
    int accepted;
    int32_t next;
    if (speculative_verify (self->verifier, job->logits, job->k, req->draft_tokens,
                            req->drafts_count? job->q: NULL, &sp, req->pos, &accepted, &next,
                            err, sizeof err)) {
        //  Bad drafts: nothing was accepted; leave the cache at pos so a
        //  retry at the same pos starts from the same state.
        b->ops->kv_truncate (session->kv, (int) req->pos);
        s_set_pos (session, (int) req->pos);
        return service_error (422, "%s", err);
    }
    s_set_pos (session, (int) req->pos + 1 + accepted);
    b->ops->kv_truncate (session->kv, session->n_pos);
    metrics_observe (self->metrics, "verify_seconds", NULL, (zclock_usecs () - job->start) / 1e6);
    out.accepted = (uint32_t) accepted;
    out.next_token = next;
    out.has_next_token = true;
    out.n_pos = (uint32_t) session->n_pos;
    return service_encode (&wire_verify_reply_desc, &out);
}

//  Records a body for the privacy audit, when recording.
static void
s_record (s_state_t *self, char dir, zframe_t *frame)
{
    if (self->record && frame
    &&  privacy_record_append (self->record, dir, zframe_data (frame), zframe_size (frame)))
        zsys_warning ("cloud-target: recording a %s failed", dir == 'Q'? "request": "reply");
}

//  batcher admit: prefill and verify join the batch, session_close and
//  errors are answered at once.
static batcher_admit_t
s_admit (void *state, zframe_t *body, const wire_peek_t *peek, int n_jobs, zframe_t **reply_p,
         void **job_p)
{
    s_state_t *self = (s_state_t *) state;
    batcher_admit_t a = BATCHER_REPLY;
    s_job_t *job = NULL;
    *reply_p = NULL;
    if (streq (peek->tag, "prefill") || streq (peek->tag, "verify")) {
        job = calloc (1, sizeof *job);
        if (!job)
            *reply_p = service_error (500, "out of memory");
        else {
            job->start = zclock_usecs ();
            a = streq (peek->tag, "prefill")? s_prefill_admit (self, body, n_jobs, job, reply_p)
                                            : s_verify_admit (self, body, job, reply_p);
        }
    }
    else
    if (streq (peek->tag, "session_close")) {
        *reply_p = service_session_close (self->sessions, body);
        //  The gauge follows the close, so /metrics shows the cache freed.
        metrics_gauge (self->metrics, "kv_cache_positions", NULL, (double) self->positions);
    }
    else
        *reply_p = service_error (400, "target: expected 'prefill', 'verify' or 'session_close', "
                                  "got '%s'", peek->tag);
    if (a != BATCHER_DEFER)
        s_record (self, 'Q', body);
    if (a == BATCHER_REPLY) {
        s_record (self, 'R', *reply_p);
        s_job_destroy (&job);
    }
    if (a == BATCHER_DEFER)
        s_job_destroy (&job);
    *job_p = job;
    return a;
}

//  Runs the rows of the jobs that start at layer `first` (and are no
//  longer than a chunk) as one batched pass where the backend has one;
//  a job the batch could not run runs alone, so it fails alone.
static void
s_forward_group (s_state_t *self, s_job_t **jobs, int n, int first)
{
    target_backend_t *b = self->backend;
    target_batch_item_t items [n];
    s_job_t *members [n];
    int m = 0;
    for (int i = 0; i < n; i++) {
        s_job_t *job = jobs [i];
        if (job->reply || job->first != first || job->n > S_CHUNK)
            continue;
        b->ops->kv_truncate (job->session->kv, (int) job->pos);
        s_set_pos (job->session, (int) job->pos);
        items [m] = (target_batch_item_t) { job->session->kv, (int) job->pos, (int) job->n, job->x };
        members [m++] = job;
    }
    if (m == 0)
        return;
    if (b->ops->forward_batch && m > 1) {
        //  The inputs are kept: a failed batch may have replaced some rows.
        size_t rows = 0;
        for (int i = 0; i < m; i++)
            rows += members [i]->n;
        float *saved = malloc (rows * (size_t) b->dim * sizeof *saved);
        if (saved) {
            size_t at = 0;
            for (int i = 0; i < m; i++, at += members [i - 1]->n)
                memcpy (saved + at * b->dim, members [i]->x, members [i]->n * b->dim * sizeof *saved);
            bool ok = b->ops->forward_batch (b, items, m, first) == 0;
            at = 0;
            for (int i = 0; i < m; i++, at += members [i - 1]->n) {
                if (ok)
                    s_set_pos (members [i]->session, (int) (members [i]->pos + members [i]->n));
                else
                    memcpy (members [i]->x, saved + at * b->dim, members [i]->n * b->dim * sizeof *saved);
            }
            free (saved);
            if (ok)
                return;
            zsys_warning ("cloud-target: a batch of %d failed (%s); running its requests one by one",
                          m, b->ops->error (b));
        }
    }
    //  One at a time: no batched pass, or it failed: a bad request fails
    //  alone and its batch mates are served.
    for (int i = 0; i < m; i++)
        members [i]->reply = s_forward (self, members [i]->session, members [i]->pos,
                                        members [i]->x, members [i]->n);
}

//  Grows a float buffer to n values. Returns 0, or -1 (buffer unchanged).
static int
s_reserve (float **buf, size_t *size, size_t n)
{
    if (n <= *size)
        return 0;
    float *grown = realloc (*buf, n * sizeof *grown);
    if (!grown)
        return -1;
    *buf = grown;
    *size = n;
    return 0;
}

//  batcher run: every job's rows as few forward passes as the backend
//  allows, one head pass over every row that needs logits, then each
//  job's acceptance and reply.
static void
s_run (void *state, void **jobs_, int n, zframe_t **replies)
{
    s_state_t *self = (s_state_t *) state;
    s_job_t **jobs = (s_job_t **) jobs_;
    target_backend_t *b = self->backend;
    for (int i = 0; i < n; i++)
        if (jobs [i]->n > S_CHUNK)     //  long prompts run alone, in chunks
            jobs [i]->reply = s_forward (self, jobs [i]->session, jobs [i]->pos, jobs [i]->x,
                                         jobs [i]->n);
    s_forward_group (self, jobs, n, 0);
    if (self->split != 0)
        s_forward_group (self, jobs, n, self->split);

    //  The head: all of a verify's rows, a prefill's last row.
    size_t rows = 0;
    for (int i = 0; i < n; i++)
        if (!jobs [i]->reply && !jobs [i]->hidden)
            rows += jobs [i]->is_verify? jobs [i]->n: 1;
    if (rows) {
        zframe_t *failed = NULL;
        if (s_reserve (&self->head_x, &self->head_x_size, rows * b->dim)
        ||  s_reserve (&self->logits, &self->logits_size, rows * b->vocab))
            failed = service_error (500, "out of memory for %zu rows of logits", rows);
        else {
            size_t at = 0;
            for (int i = 0; i < n; i++) {
                s_job_t *job = jobs [i];
                if (job->reply || job->hidden)
                    continue;
                size_t m = job->is_verify? job->n: 1;
                memcpy (self->head_x + at * b->dim, job->x + (job->n - m) * b->dim,
                        m * b->dim * sizeof (float));
                job->logits = self->logits + at * b->vocab;
                at += m;
            }
            if (b->ops->head (b, self->head_x, (int) rows, self->logits))
                failed = service_error (500, "head: %s", b->ops->error (b));
        }
        for (int i = 0; failed && i < n; i++)
            if (!jobs [i]->reply && !jobs [i]->hidden)
                jobs [i]->reply = zframe_dup (failed);
        zframe_destroy (&failed);
    }
    for (int i = 0; i < n; i++) {
        s_job_t *job = jobs [i];
        if (!job->reply)
            job->reply = job->is_verify? s_verify_finish (self, job): s_prefill_finish (self, job);
        replies [i] = job->reply;
        job->reply = NULL;
        s_record (self, 'R', replies [i]);
        s_job_destroy (&job);
    }
    metrics_gauge (self->metrics, "batch_size", NULL, n);
    metrics_gauge (self->metrics, "kv_cache_positions", NULL, (double) self->positions);
}

static const batcher_ops_t s_batcher_ops = { s_admit, s_run };

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
        if ((!state.sessions || !state.verifier) && !*setup)
            snprintf (setup, sizeof setup, "out of memory");
        if (!*setup)
            zsys_info ("cloud-target: %s backend, layers [%d, %d) + head of %s (%s, %.1f MB), "
                       "split %d, ctx %d, %d sessions", b->ops->name, b->first_layer, b->n_layers,
                       config->model, qfmt_name (config->format), b->weight_bytes / 1e6,
                       config->split, state.ctx, config->max_sessions);
    }
    state.metrics = *setup? NULL: metrics_new ("cloud-target", config->instance, config->telemetry);
    state.record = privacy_record_open_env (PRIVACY_RECORD_ENV);
    batcher_options_t bo = batcher_options_default (config);
    if (!*setup)
        zsys_info ("cloud-target: batches of up to %d requests, wait %d us", bo.capacity, bo.wait_us);
    batcher_run (pipe, config, "target", setup, &s_batcher_ops, &state, state.metrics, &bo);
    session_store_destroy (&state.sessions);
    metrics_destroy (&state.metrics);
    privacy_record_destroy (&state.record);
    speculative_destroy (&state.verifier);
    free (state.logits);
    free (state.head_x);
    if (state.backend)
        state.backend->ops->destroy (&state.backend);
}
