/*  edge_gen.c: one generation: validate, tokenize, prefill, then rounds of
    draft -> prefix.extend -> target.verify until a stop, then FINAL.

    The loop keeps the whole context (prompt + every emitted token) so it
    can rebuild any remote KV cache: a 404 "unknown session" from
    split-prefix or cloud-target (its replica died or evicted the session)
    re-prefills both with the context minus its last token (t0, which no
    cache holds yet) and repeats the round. Positions carry the rollback
    (docs/pipeline.md): every request says where it writes, so a rejected
    draft is forgotten by the next extend/verify, and the local draft cache
    rolls itself back by comparing tokens (drafter.c).

    Emission rules: a token is appended to the output unless it ends
    generation (tokenizer_is_eog: not emitted, finish "stop"); a stop string
    cuts the text before it (finish "stop"); max_tokens emitted tokens give
    finish "length", as does a full context. Text goes through a streaming
    detokenizer, so PARTIALs never split a UTF-8 character; with stop
    strings, the last (longest stop - 1) bytes are held back until the next
    round shows they do not begin a stop string.

    Failures: 4xx from a service ends the generation with that error; 5xx
    are retried with back-off, timeouts by mdp_client on a fresh socket.
    Then 503 (no worker) and 504 (no answer: the cloud is unreachable) let
    the generation carry on with the draft model alone, gen_stats.degraded
    set, when a draft model is loaded; any other failure ends it with the
    error. A request whose client went away (the broker sends CANCEL when
    it cannot deliver a PARTIAL; mdp_worker_cancelled) stops at the next
    round with status 499, and its sessions are closed as after any end,
    which frees the KV caches of split-prefix and cloud-target.
    While degraded it asks the cloud broker every S_RESUME_MS
    whether a target is back (without waiting for the answer); when one
    is, it re-prefills both caches and resumes speculative rounds
    (gen_stats.resumes counts these). An error before any output is sent as an error reply;
    after output, as a FINAL with finish_reason "error" (logged).
*/
#include "edge_gen.h"
#include "codec.h"
#include "mdp_common.h"
#include "sampler.h"
#include "activations.h"
#include "speculative.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S_ATTEMPTS      3       //  tries of a call answered 5xx / timed out
#define S_BACKOFF_MS    100     //  first back-off, doubled per retry
#define S_REPREFILLS    8       //  404 recoveries per round
#define S_REPREFILL_MS  10      //  back-off before the 2nd.. recovery, doubled, plus jitter
static uint64_t s_random64 (void);
typedef struct _gen_t gen_t;
static void s_forget_inflight (gen_t *g);

#define S_MS_PER_POSITION 20     //  added to a call's timeout per position it evaluates
#define S_DRAFT_PREFILL_CHUNK 32 //  prompt positions the draft reads between looks at the reply
#define S_MDP_RETRIES   1       //  mdp_client_request retries after a timeout
#define S_MDP_OVERHEAD  8       //  bytes of MDP header frames ("MDPC02", command, empty)
#define S_RESUME_MS     500     //  degraded: ask whether the cloud is back this often
#define S_PROBE_MS      1000    //  degraded: a probe without answer by then failed
#define S_AHEAD_MAX     (2 * (DRAFTER_MAX_K + 1))  //  drafts beyond a round's chunk: two chunks
#define S_MIN_CHUNK     3       //  fewest drafts a chunk sent early carries (unless k is less):
                                //  a verify's fixed cost is about one target forward, so
                                //  smaller chunks cost the target more per token than drafting

struct _gen_t {
    edge_shared_t *sh;
    mdp_worker_t *worker;
    zframe_t *client;
    mdp_client_t *dev, *cloud;
    wire_generate_t req;        //  the decoded request
    bool have_req;              //  req must be freed
    char session [40];          //  hex id
    bool use_prefix;            //  privacy prefix: split-prefix holds [0, L)
    bool full;                  //  privacy full: the cloud returns hidden states,
                                //  the edge applies the head and verifies
    speculative_t *verifier;    //  full: local verification
    float *logits;              //  full: (DRAFTER_MAX_K + 1) x vocab
    bool use_target;            //  a cloud session exists
    bool edge_only;             //  mode edge_only, or degraded
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    int32_t *ctx;               //  (cap) prompt + emitted tokens
    int n_ctx, cap, n_prompt;
    int32_t *out;               //  (max_tokens) emitted tokens
    int n_out, n_out_sent;
    char *text;                 //  emitted text (after stop-string cuts)
    size_t text_len, text_cap, text_sent;
    size_t stop_max;            //  longest stop string, bytes
    bool stop_cut;              //  the text was cut at a stop string
    tokenizer_stream_t *stream;
    drafter_t *drafter;         //  model or ngram
    sampler_t *dsampler;        //  draft sampler (NULL: greedy)
    sampler_t *esampler;        //  edge-only sampler (request's exact params)
    drafter_proposal_t *prop;
    int32_t *q_tokens;          //  (DRAFTER_MAX_K, DRAFTER_MAX_CANDIDATES)
    float *q_probs;             //  same shape
    int k;                      //  current draft length
    bool done;
    wire_finish_reason_t finish;
    int err_status;             //  0, or the failure
    char err [512];
    uint64_t proposed, accepted, by_pos [DRAFTER_MAX_K];
    int last_accepted;          //  full: accepted count of the last local verify
    int max_pos_used;           //  longest round, for accept_by_pos
    uint64_t up, down;          //  link bytes
    bool degraded;
    uint32_t resumes;           //  returns to speculative mode after degrading
    int64_t resume_at;          //  degraded: next cloud probe (mono ms)
    int64_t probe_sent;         //  degraded: probe in flight since (0: none)
    int64_t t_start, t_first, t_last;  //  usecs
    int64_t us_draft, us_extend, us_verify;    //  this round's parts (verbose log)
    bool lookahead;             //  draft the next round while verify travels
    bool pipeline;              //  ... and send its verify before this one's answer
    drafter_proposal_t *prop2;  //  scratch proposal for lookahead drafting
    int32_t ahead [S_AHEAD_MAX];    //  e_1..e_m drafted beyond this round's chunk
    int n_ahead;
    int32_t pre [S_AHEAD_MAX];      //  e_2..e_m: next round's drafts, if it starts ...
    int n_pre;
    int pre_at;                 //  ... with this many context tokens
    int32_t pre_last;           //  ... the last of them being e_1
    int n_ahead_used;           //  lookahead drafts proposed (verbose stats)
    //  Pipelining: the chunk [e_1, e_2..e_{m+1}] sent as a verify at
    //  n_ctx + k while this round's verify travels (next_*), and, once the
    //  round's answer made it valid, as this round's chunk (sent_*).
    bool next_sent;
    int next_k, next_connects;  //  its drafts; the cloud client's socket then
    int64_t next_at;            //  sent at (mono ms)
    bool sent;
    int sent_k, sent_pos, sent_connects;
    int64_t sent_at;
    int stale;                  //  target FINALs still due for chunks a rejection made void
    bool next_answered;         //  the answer to the chunk sent ahead (next_*) overtook this
                                //  round's own answer and was dropped (s_call_finish)
    int n_early, n_void;        //  chunks sent early and used / made void (stats)
    bool early_round;           //  this round's verify was sent in the last one (log)
    double wait_ms;             //  moving average: a verify's send -> answer (0: none yet)
    double draft_ms;            //  moving average: one lookahead draft (0: none yet)
};

//  ---------------------------------------------------------------------
//  Calls to the other services

//  Decodes a reply body (taken over and destroyed) to a call of desc as
//  reply_desc into reply. Returns 0, or a status with g->err set: the
//  error reply's, or 500 for a frame that is neither.
static int
s_parse (gen_t *g, bool to_cloud, const char *service, const wire_desc_t *desc,
         zmsg_t **rep_p, const wire_desc_t *reply_desc, void *reply)
{
    zmsg_t *rep = *rep_p;
    *rep_p = NULL;
    wire_err_t werr;
    zframe_t *rf = zmsg_first (rep);
    if (to_cloud)
        g->down += zmsg_content_size (rep) + strlen (service) + S_MDP_OVERHEAD;
    wire_peek_t peek;
    int status = 0;
    if (!rf || wire_peek (zframe_data (rf), zframe_size (rf), &peek, &werr)) {
        snprintf (g->err, sizeof g->err, "'%s' answered %s with a malformed frame", service, desc->name);
        status = 500;
    }
    else
    if (peek.status || peek.desc == &wire_error_desc) {
        wire_error_t e;
        status = peek.status ? peek.status : 500;
        if (wire_decode_frame (&wire_error_desc, rf, &e, &werr) == 0) {
            status = (int) e.status;
            snprintf (g->err, sizeof g->err, "%s '%s': %d %s", service, desc->name, status, e.error);
            wire_msg_free (&wire_error_desc, &e);
        }
        else
            snprintf (g->err, sizeof g->err, "%s '%s': status %d", service, desc->name, status);
    }
    else
    if (wire_decode_frame (reply_desc, rf, reply, &werr)) {
        snprintf (g->err, sizeof g->err, "'%s' answered %s with a bad %s: %s",
                  service, desc->name, reply_desc->name, werr.text);
        status = 500;
    }
    zmsg_destroy (&rep);
    return status;
}

//  Encodes msg into a one-frame body, counting link bytes. NULL with
//  g->err when msg breaks the schema.
static zmsg_t *
s_body (gen_t *g, bool to_cloud, const char *service, const wire_desc_t *desc, const void *msg)
{
    wire_err_t werr;
    zframe_t *frame = wire_encode_frame (desc, msg, &werr);
    if (!frame) {
        snprintf (g->err, sizeof g->err, "cannot encode %s: %s", desc->name, werr.text);
        return NULL;
    }
    if (to_cloud)
        g->up += zframe_size (frame) + strlen (service) + S_MDP_OVERHEAD;
    zmsg_t *body = zmsg_new ();
    zmsg_append (body, &frame);
    return body;
}

//  A long prompt takes a while on a CPU: an attempt's deadline grows with
//  the positions the call evaluates.
static int
s_timeout (gen_t *g, int n_pos)
{
    return g->sh->timeout_ms + S_MS_PER_POSITION * n_pos;
}

//  Sends msg (type desc) to service, waits for the reply and decodes it as
//  reply_desc into reply. Returns 0, or a status (error reply, 504 no
//  answer, 500 undecodable reply) with g->err set. Counts link bytes when
//  to_cloud. 5xx and 429 (busy) replies are retried S_ATTEMPTS times with
//  back-off; an
//  attempt without answer is retried by mdp_client_request on a fresh
//  socket.
static int
s_call (gen_t *g, bool to_cloud, const char *service, const wire_desc_t *desc,
        const void *msg, const wire_desc_t *reply_desc, void *reply, int n_pos)
{
    if (to_cloud)
        s_forget_inflight (g);
    mdp_client_t *client = to_cloud ? g->cloud : g->dev;
    int timeout_ms = s_timeout (g, n_pos);
    mdp_client_set_timeout (client, timeout_ms);
    int status = 0;
    int backoff = S_BACKOFF_MS;
    for (int attempt = 0; attempt < S_ATTEMPTS; attempt++) {
        if (attempt) {
            zclock_sleep (backoff);
            backoff *= 2;
        }
        if (atomic_load (&g->sh->stopping)) {
            snprintf (g->err, sizeof g->err, "edge-draft is stopping");
            return 503;
        }
        zmsg_t *body = s_body (g, to_cloud, service, desc, msg);
        if (!body)
            return 500;
        zmsg_t *rep = mdp_client_request (client, service, &body);
        if (!rep) {
            snprintf (g->err, sizeof g->err, "%s: no reply from '%s' (%d ms per attempt, %d attempts)",
                      desc->name, service, timeout_ms, S_MDP_RETRIES + 1);
            return 504;
        }
        status = s_parse (g, to_cloud, service, desc, &rep, reply_desc, reply);
        if (status < 500 && status != 429)     //  429 busy: retry like 5xx
            return status;
    }
    return status;
}

//  The same call in two halves, so the caller can work while the request
//  travels: s_call_start sends, s_call_ready says whether the answer is
//  there, s_call_finish waits for it. A call whose first attempt fails
//  (5xx, or no answer in time) goes on as s_call does.
static int
s_call_start (gen_t *g, bool to_cloud, const char *service, const wire_desc_t *desc, const void *msg)
{
    zmsg_t *body = s_body (g, to_cloud, service, desc, msg);
    if (!body)
        return 500;
    mdp_client_t *client = to_cloud ? g->cloud : g->dev;
    return mdp_client_send (client, service, &body) ? 500 : 0;
}

static bool
s_call_ready (gen_t *g, bool to_cloud)
{
    zsock_t *sock = mdp_client_sock (to_cloud ? g->cloud : g->dev);
    return (zsock_events (sock) & ZMQ_POLLIN) != 0;
}

//  Pipelining state after the cloud socket was replaced: no target answer
//  is due any more.
static void
s_clear_inflight (gen_t *g)
{
    g->stale = 0;
    g->next_sent = false;
    g->next_answered = false;
    g->sent = false;
}

//  verify_pos: for a target verify at that position (else -1), an answer
//  that is not this call's: a chunk sent ahead (s_dispatch) travels behind
//  this round's verify, but through the crypt-proxy pair its answer can
//  overtake this one's. It is recognized (409 stale, or a reply for other
//  positions), dropped and noted in next_answered, and the wait goes on.
static int
s_call_finish (gen_t *g, bool to_cloud, const char *service, const wire_desc_t *desc,
               const void *msg, const wire_desc_t *reply_desc, void *reply, int n_pos,
               int64_t started_ms, int verify_pos)
{
    mdp_client_t *client = to_cloud ? g->cloud : g->dev;
    int64_t deadline = started_ms + s_timeout (g, n_pos);
    while (true) {
        int64_t left = deadline - zclock_mono ();
        int command = 0;
        char *name = NULL;
        zmsg_t *rep = left > 0 ? mdp_client_recv (client, (int) left, &command, &name) : NULL;
        bool ours = rep && name && streq (name, service);
        zstr_free (&name);
        if (!rep)
            break;
        if (!ours || command != MDPC_FINAL) {
            zmsg_destroy (&rep);        //  a PARTIAL, or a stray late reply
            continue;
        }
        if (to_cloud && g->stale > 0) {
            //  The answer to a chunk a rejection made void: it came first.
            g->down += zmsg_content_size (rep) + strlen (service) + S_MDP_OVERHEAD;
            g->stale--;
            zmsg_destroy (&rep);
            continue;
        }
        int status = s_parse (g, to_cloud, service, desc, &rep, reply_desc, reply);
        if (verify_pos >= 0 && g->next_sent) {
            wire_verify_reply_t *vr = (wire_verify_reply_t *) reply;
            bool other = status == WIRE_STATUS_STALE
                      || (status == 0 && vr->n_pos != (uint32_t) verify_pos + 1 + vr->accepted);
            if (other) {
                if (status == 0)
                    wire_msg_free (&wire_verify_reply_desc, vr);
                g->err [0] = 0;
                g->next_answered = true;
                continue;
            }
        }
        if (status < 500 && status != 429)
            return status;
        break;
    }
    //  No answer in time, or 5xx: drop whatever may still come on this
    //  socket (chunks sent ahead too) and do it the synchronous way.
    mdp_client_reconnect (client);
    if (to_cloud)
        s_clear_inflight (g);
    return s_call (g, to_cloud, service, desc, msg, reply_desc, reply, n_pos);
}

//  Pipelining: drops every target answer still due (chunks sent ahead,
//  void ones) by opening a fresh socket, so none can be taken for the
//  answer to a later call.
static void
s_forget_inflight (gen_t *g)
{
    if (g->cloud && (g->stale || g->next_sent || g->sent))
        mdp_client_reconnect (g->cloud);
    s_clear_inflight (g);
}

//  A chunk sent on the cloud socket numbered `connects` turned out void:
//  its answer, if that socket still exists, is to be skipped.
static void
s_void (gen_t *g, int connects)
{
    if (mdp_client_connects (g->cloud) == connects)
        g->stale++;
    g->n_void++;
}

//  True when a target answer is waiting; answers to void chunks are
//  consumed on the way (never mistaken for the one awaited).
static bool
s_target_ready (gen_t *g)
{
    while (s_call_ready (g, true)) {
        if (!g->stale)
            return true;
        int command = 0;
        char *name = NULL;
        zmsg_t *rep = mdp_client_recv (g->cloud, 0, &command, &name);
        bool ours = rep && name && streq (name, "target") && command == MDPC_FINAL;
        zstr_free (&name);
        if (!rep)
            return true;            //  let the caller's wait sort it out
        if (ours) {
            g->down += zmsg_content_size (rep) + strlen ("target") + S_MDP_OVERHEAD;
            g->stale--;
        }
        zmsg_destroy (&rep);
    }
    return false;
}

//  Best-effort session_close to one service (short timeout, no retries).
static void
s_close (gen_t *g, bool to_cloud, const char *service)
{
    mdp_client_t *client = to_cloud ? g->cloud : g->dev;
    wire_session_close_t m;
    wire_msg_init (&wire_session_close_desc, &m);
    m.session = g->session;
    zframe_t *frame = wire_encode_frame (&wire_session_close_desc, &m, NULL);
    if (!frame)
        return;
    if (to_cloud)
        g->up += zframe_size (frame) + strlen (service) + S_MDP_OVERHEAD;
    zmsg_t *body = zmsg_new ();
    zmsg_append (body, &frame);
    mdp_client_set_timeout (client, 1000);
    mdp_client_set_retries (client, 0);
    zmsg_t *rep = mdp_client_request (client, service, &body);
    if (rep && to_cloud)
        g->down += zmsg_content_size (rep) + strlen (service) + S_MDP_OVERHEAD;
    zmsg_destroy (&rep);
    mdp_client_set_retries (client, S_MDP_RETRIES);
}

//  ---------------------------------------------------------------------
//  Output

static int
s_text_append (gen_t *g, const char *s, size_t n)
{
    if (g->text_len + n + 1 > g->text_cap) {
        size_t cap = (g->text_cap ? g->text_cap * 2 : 1024);
        while (cap < g->text_len + n + 1)
            cap *= 2;
        char *t = realloc (g->text, cap);
        if (!t)
            return -1;
        g->text = t;
        g->text_cap = cap;
    }
    memcpy (g->text + g->text_len, s, n);
    g->text_len += n;
    g->text [g->text_len] = 0;
    return 0;
}

//  Length of the valid UTF-8 character at s[0..n) (no NUL, no surrogates,
//  no overlongs), or 0 when the bytes there are not one.
static size_t
s_utf8_char (const unsigned char *s, size_t n)
{
    unsigned char c = s [0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0x01 && c <= 0x7F)
        return 1;
    else
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else
    if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    }
    else
    if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    }
    else
        return 0;
    if (n < len || s [1] < lo || s [1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s [i] & 0xC0) != 0x80)
            return 0;
    return len;
}

//  Appends piece to the text with every byte that is not part of a valid
//  UTF-8 character (a random or confused model can emit lone byte tokens)
//  replaced by U+FFFD, so the text always fits the wire's str type.
static int
s_text_append_utf8 (gen_t *g, const char *piece, size_t n)
{
    const unsigned char *p = (const unsigned char *) piece;
    size_t i = 0;
    while (i < n) {
        size_t run = 0, len;
        while (i + run < n && (len = s_utf8_char (p + i + run, n - i - run)) > 0)
            run += len;
        if (run && s_text_append (g, piece + i, run))
            return -1;
        i += run;
        if (i < n) {
            if (s_text_append (g, "\xEF\xBF\xBD", 3))
                return -1;
            i++;
        }
    }
    return 0;
}

//  Cuts the text at the first stop string that now appears. True if cut.
static bool
s_stop_check (gen_t *g, size_t from)
{
    if (!g->req.stop_count)
        return false;
    size_t start = from > g->stop_max ? from - g->stop_max : 0;
    if (start < g->text_sent)
        start = g->text_sent;       //  sent text had no stop string
    char *first = NULL;
    for (size_t i = 0; i < g->req.stop_count; i++) {
        char *hit = strstr (g->text + start, g->req.stop [i]);
        if (hit && (!first || hit < first))
            first = hit;
    }
    if (!first)
        return false;
    g->text_len = (size_t) (first - g->text);
    g->text [g->text_len] = 0;
    g->stop_cut = true;
    return true;
}

static void
s_finish (gen_t *g, wire_finish_reason_t why)
{
    if (!g->done) {
        g->done = true;
        g->finish = why;
    }
}

//  Appends one generated token (or stops on an end-of-generation token).
static void
s_emit (gen_t *g, int32_t tok)
{
    if (g->done)
        return;
    if (tokenizer_is_eog (g->sh->tok, tok)) {
        s_finish (g, WIRE_FINISH_REASON_STOP);
        return;
    }
    int64_t now = zclock_usecs ();
    if (!g->n_out) {
        g->t_first = now;
        metrics_observe (g->sh->metrics, "ttft_seconds", NULL, (now - g->t_start) / 1e6);
    }
    else
        metrics_observe (g->sh->metrics, "inter_token_seconds", NULL, (now - g->t_last) / 1e6);
    g->t_last = now;
    g->out [g->n_out++] = tok;
    g->ctx [g->n_ctx++] = tok;
    const char *piece;
    size_t len;
    char err [128];
    if (tokenizer_stream_push (g->stream, tok, &piece, &len, err, sizeof err) == 0 && len) {
        size_t before = g->text_len;
        if (s_text_append_utf8 (g, piece, len)) {
            g->err_status = 500;
            snprintf (g->err, sizeof g->err, "out of memory for the output text");
            s_finish (g, WIRE_FINISH_REASON_ERROR);
            return;
        }
        if (s_stop_check (g, before)) {
            s_finish (g, WIRE_FINISH_REASON_STOP);
            return;
        }
    }
    if (g->n_out >= (int) g->req.max_tokens)
        s_finish (g, WIRE_FINISH_REASON_LENGTH);
}

//  Sends what is safe to send as a PARTIAL (streaming only).
static void
s_partial (gen_t *g)
{
    if (!g->req.stream)
        return;
    size_t safe = g->text_len;
    if (!g->done && g->req.stop_count) {
        //  Hold back bytes that may begin a stop string, at a character
        //  boundary.
        safe = g->text_len > g->stop_max - 1 ? g->text_len - (g->stop_max - 1) : 0;
        while (safe > g->text_sent && ((unsigned char) g->text [safe] & 0xC0) == 0x80)
            safe--;
    }
    if (safe <= g->text_sent && g->n_out_sent == g->n_out)
        return;
    if (safe < g->text_sent)
        safe = g->text_sent;
    wire_generate_partial_t p;
    wire_msg_init (&wire_generate_partial_desc, &p);
    char saved = g->text ? g->text [safe] : 0;
    if (g->text)
        g->text [safe] = 0;
    p.text = g->text ? g->text + g->text_sent : "";
    p.tokens = g->out + g->n_out_sent;
    p.tokens_count = (size_t) (g->n_out - g->n_out_sent);
    zframe_t *frame = wire_encode_frame (&wire_generate_partial_desc, &p, NULL);
    if (g->text)
        g->text [safe] = saved;
    if (!frame)
        return;
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &frame);
    mdp_worker_send_partial (g->worker, g->client, &msg);
    g->text_sent = safe;
    g->n_out_sent = g->n_out;
}

static void
s_count_request (gen_t *g, int status)
{
    char label [32];
    snprintf (label, sizeof label, "status=%d", status);
    metrics_count (g->sh->metrics, "requests_total", label, 1);
    if (wire_status_is_error (status))
        metrics_count (g->sh->metrics, "errors_total", label, 1);
}

static void
s_reply_error (gen_t *g, int status, const char *text)
{
    s_count_request (g, status);
    zframe_t *frame = wire_error_frame (status, text, -1);
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &frame);
    mdp_worker_send_final (g->worker, g->client, &msg);
}

static void
s_reply_final (gen_t *g)
{
    //  Whatever the streaming detokenizer still holds (an incomplete
    //  character at the very end).
    const char *tail;
    size_t tail_len;
    tokenizer_stream_flush (g->stream, &tail, &tail_len);
    if (tail_len && !g->stop_cut) {
        size_t before = g->text_len;
        if (s_text_append_utf8 (g, tail, tail_len) == 0)
            s_stop_check (g, before);
    }
    if (g->err_status && g->n_out == 0) {
        s_reply_error (g, g->err_status, g->err);
        return;
    }
    if (g->err_status)
        zsys_warning ("edge-draft: session %s ended after %d tokens: %s", g->session, g->n_out, g->err);

    wire_gen_stats_t st;
    wire_msg_init (&wire_gen_stats_desc, &st);
    st.prompt_tokens = (uint32_t) g->n_prompt;
    st.tokens = (uint32_t) g->n_out;
    st.drafts_proposed = g->proposed;
    st.drafts_accepted = g->accepted;
    st.accept_by_pos = g->by_pos;
    st.accept_by_pos_count = (size_t) g->max_pos_used;
    st.ttft_ms = g->n_out ? (g->t_first - g->t_start) / 1e3 : 0;
    st.per_token_ms = g->n_out > 1 ? (g->t_last - g->t_first) / 1e3 / (g->n_out - 1) : 0;
    st.link_bytes_up = g->up;
    st.link_bytes_down = g->down;
    st.degraded = g->degraded;
    st.resumes = g->resumes;

    wire_generate_final_t f;
    wire_msg_init (&wire_generate_final_desc, &f);
    size_t from = g->req.stream ? g->text_sent : 0;
    f.text = g->text ? g->text + from : "";
    int tfrom = g->req.stream ? g->n_out_sent : 0;
    f.tokens = g->out + tfrom;
    f.tokens_count = (size_t) (g->n_out - tfrom);
    f.finish_reason = g->err_status ? WIRE_FINISH_REASON_ERROR : g->finish;
    f.stats = &st;
    wire_err_t werr;
    zframe_t *frame = wire_encode_frame (&wire_generate_final_desc, &f, &werr);
    if (!frame) {
        s_reply_error (g, 500, werr.text);
        return;
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &frame);
    mdp_worker_send_final (g->worker, g->client, &msg);
    s_count_request (g, g->err_status ? g->err_status : 200);
    metrics_count (g->sh->metrics, "prompt_tokens_total", NULL, g->n_prompt);
    metrics_count (g->sh->metrics, "tokens_generated_total", NULL, g->n_out);
    metrics_count (g->sh->metrics, "link_bytes_total", "direction=up", (double) g->up);
    metrics_count (g->sh->metrics, "link_bytes_total", "direction=down", (double) g->down);
}

//  ---------------------------------------------------------------------
//  Privacy full: the target's head and verification, here on the edge

//  Loads the head (final norm + output, no layers) once for the process.
//  Returns 0, or 500 with g->err set.
static int
s_full_head (gen_t *g)
{
    edge_shared_t *sh = g->sh;
    pthread_mutex_lock (&sh->head_lock);
    if (!sh->head && !sh->head_error [0]) {
        model_options_t mo = model_options_default ();
        //  The head as cloud-target holds it: W8 for --format w8 and w4
        //  (W4 keeps the head at W8); SPLITMESH_HEAD_FORMAT=f32 for f32.
        mo.format = QFMT_W8;
        const char *hf = getenv ("SPLITMESH_HEAD_FORMAT");
        if (hf && *hf && qfmt_parse (hf, &mo.format))
            mo.format = QFMT_W8;
        mo.first_layer = 0;
        mo.last_layer = 0;              //  no layers: the head alone
        mo.load_embeddings = false;
        mo.load_head = true;
        mo.n_threads = 1;
        char err [256];
        sh->head = model_load (sh->model_path, &mo, err, sizeof err);
        if (!sh->head)
            snprintf (sh->head_error, sizeof sh->head_error, "%.255s", err);
        else
        if (model_config (sh->head)->vocab_size != tokenizer_n_tokens (sh->tok)) {
            snprintf (sh->head_error, sizeof sh->head_error, "head has %d rows, vocabulary %d",
                      model_config (sh->head)->vocab_size, (int) tokenizer_n_tokens (sh->tok));
            model_destroy (&sh->head);
        }
    }
    int status = 0;
    if (!sh->head) {
        snprintf (g->err, sizeof g->err, "privacy full: cannot load the head of %.200s: %.250s",
                  sh->model_path, sh->head_error);
        status = 500;
    }
    pthread_mutex_unlock (&sh->head_lock);
    return status;
}

//  Applies the head to the k+1 hidden rows and verifies the k drafts of
//  g->prop exactly as cloud-target would (speculative_verify, keyed by
//  pos and the session seed). q: the drafts' distributions or NULL. Sets
//  *next and g->last_accepted. Returns 0, or a status with g->err set.
static int
s_full_verify (gen_t *g, const wire_activations_t *hidden, int k, int pos,
               const wire_draft_t *q, int32_t *next)
{
    edge_shared_t *sh = g->sh;
    int status = s_full_head (g);
    if (status)
        return status;
    int dim = model_config (sh->head)->dim;
    if ((int) hidden->dim != dim) {
        snprintf (g->err, sizeof g->err, "privacy full: hidden rows of %u values, the head takes %d",
                  hidden->dim, dim);
        return 500;
    }
    float *x = malloc ((size_t) (k + 1) * dim * sizeof *x);
    char err [256];
    if (!x) {
        snprintf (g->err, sizeof g->err, "privacy full: out of memory");
        return 500;
    }
    if (activations_unpack (hidden, x, (size_t) (k + 1) * dim, err, sizeof err)) {
        snprintf (g->err, sizeof g->err, "privacy full: %s", err);
        free (x);
        return 500;
    }
    pthread_mutex_lock (&sh->head_lock);
    int rc = model_head (sh->head, x, k + 1, g->logits);
    pthread_mutex_unlock (&sh->head_lock);
    free (x);
    if (rc) {
        snprintf (g->err, sizeof g->err, "privacy full: head: %s", model_error (sh->head));
        return 500;
    }
    speculative_q_t sq [DRAFTER_MAX_K];
    for (int i = 0; q && i < k; i++) {
        sq [i].tokens = q [i].tokens;
        sq [i].probs = q [i].probs;
        sq [i].n = (int) q [i].tokens_count;
    }
    sampler_params_t sp = sampler_params_default ();
    sp.temperature = g->temperature;
    sp.top_k = g->top_k;
    sp.top_p = g->top_p;
    sp.seed = g->seed;
    int accepted = 0;
    if (speculative_verify (g->verifier, g->logits, k, g->prop->d, q? sq: NULL, &sp,
                            (uint32_t) pos, &accepted, next, err, sizeof err)) {
        snprintf (g->err, sizeof g->err, "privacy full: verify: %s", err);
        return 500;
    }
    g->last_accepted = accepted;
    return 0;
}

//  ---------------------------------------------------------------------
//  The protocol steps

//  Prefills split-prefix and cloud-target with ctx[0..n). *next gets the
//  target's token after it. Returns 0 or a status.
static int
s_prefill (gen_t *g, int n, int32_t *next)
{
    //  (A re-prefill: whatever was sent ahead is void, and its answers must
    //  not be taken for the prefill's.)
    s_forget_inflight (g);
    wire_prefill_t pf;
    wire_msg_init (&wire_prefill_desc, &pf);
    pf.session = g->session;
    pf.pos = 0;
    pf.temperature = g->temperature;
    pf.top_k = (uint32_t) g->top_k;
    pf.top_p = g->top_p;
    pf.seed = g->seed;
    pf.has_seed = true;
    pf.return_hidden = g->full;
    wire_activations_reply_t ar;
    memset (&ar, 0, sizeof ar);
    int status;
    if (g->use_prefix) {
        wire_prefill_t pp;
        wire_msg_init (&wire_prefill_desc, &pp);
        pp.session = g->session;
        pp.tokens = g->ctx;
        pp.tokens_count = (size_t) n;
        status = s_call (g, false, "prefix", &wire_prefill_desc, &pp, &wire_activations_reply_desc, &ar, n);
        if (status)
            return status;
        pf.activations = ar.activations;
    }
    else {
        pf.tokens = g->ctx;
        pf.tokens_count = (size_t) n;
    }
    wire_prefill_reply_t pr;
    if (g->drafter && drafter_kind (g->drafter) == DRAFTER_MODEL) {
        //  The draft model reads the prompt while the prefill travels, so
        //  the first round only feeds t0; in chunks, stopping when the
        //  reply is there so the first token is not held up (the first
        //  propose feeds whatever is left).
        int64_t started = zclock_mono ();
        status = s_call_start (g, true, "target", &wire_prefill_desc, &pf);
        if (status == 0) {
            char err [256];
            for (int upto = 0; upto < n && !s_call_ready (g, true); ) {
                upto = upto + S_DRAFT_PREFILL_CHUNK < n ? upto + S_DRAFT_PREFILL_CHUNK : n;
                if (drafter_prefill (g->drafter, g->ctx, upto, err, sizeof err)) {
                    zsys_warning ("edge-draft: session %s: draft prefill: %s", g->session, err);
                    break;
                }
            }
            status = s_call_finish (g, true, "target", &wire_prefill_desc, &pf,
                                    &wire_prefill_reply_desc, &pr, n, started, -1);
        }
    }
    else
        status = s_call (g, true, "target", &wire_prefill_desc, &pf, &wire_prefill_reply_desc, &pr, n);
    if (g->use_prefix)
        wire_msg_free (&wire_activations_reply_desc, &ar);
    if (status)
        return status;
    g->use_target = true;
    if (g->full && status == 0) {
        //  Privacy full: the reply carries the last hidden state only.
        int32_t t = -1;
        if (pr.has_next_token || !pr.hidden || pr.hidden->n_pos != 1) {
            snprintf (g->err, sizeof g->err, "target prefill: privacy full expects one hidden row "
                      "and no next_token in the reply");
            status = 500;
        }
        else
            status = s_full_verify (g, pr.hidden, 0, n - 1, NULL, &t);
        if (status == 0 && (int) pr.n_pos != n) {
            snprintf (g->err, sizeof g->err, "target prefill: cache holds %u positions, expected %d", pr.n_pos, n);
            status = 500;
        }
        if (status == 0)
            *next = t;
        wire_msg_free (&wire_prefill_reply_desc, &pr);
        return status;
    }
    if (!pr.has_next_token || pr.next_token >= tokenizer_n_tokens (g->sh->tok)) {
        snprintf (g->err, sizeof g->err, "target prefill: no valid next_token in the reply");
        status = 500;
    }
    else
    if ((int) pr.n_pos != n) {
        snprintf (g->err, sizeof g->err, "target prefill: cache holds %u positions, expected %d", pr.n_pos, n);
        status = 500;
    }
    else
        *next = pr.next_token;
    wire_msg_free (&wire_prefill_reply_desc, &pr);
    return status;
}

//  The next round's draft length when this round's k drafts are all
//  accepted (as s_round will pick it then), or 0 when no round with
//  drafts would follow.
static int
s_next_k (gen_t *g, int k)
{
    int nk = g->sh->fixed_k || g->k <= 0 ? g->k : drafter_adapt_k (g->k, k, k, g->sh->k_max);
    int n_ctx = g->n_ctx + k + 1;
    int remaining = (int) g->req.max_tokens - g->n_out - k - 1;
    if (n_ctx > g->sh->ctx)
        return 0;
    if (nk > remaining - 1)
        nk = remaining - 1;
    if (nk > g->sh->ctx - n_ctx)
        nk = g->sh->ctx - n_ctx;
    if (nk > g->cap - n_ctx)
        nk = g->cap - n_ctx;
    return nk > 0 ? nk : 0;
}

//  Pipelining: sends the chunk [e_1, e_2..e_{nk+1}] drafted ahead as the
//  next round's verify now, at position n_ctx + k, while this round's
//  verify of [t0, d_1..d_k] travels. It assumes this round accepts all k
//  drafts and the target's next token is e_1; when that happens the next
//  round only waits for its answer, otherwise the answer is void and
//  skipped (the next verify's pos rolls the target's cache back, as after
//  any rejection, and split-prefix's likewise). The prefix extend runs
//  now (device-local). Returns false when nothing was sent (then the
//  round goes on as without pipelining).
static bool
s_dispatch (gen_t *g, int k, int nk)
{
    int pos = g->n_ctx + k;
    wire_verify_t v;
    wire_msg_init (&wire_verify_desc, &v);
    v.session = g->session;
    v.pos = (uint32_t) pos;
    v.draft_tokens = g->ahead + 1;
    v.draft_tokens_count = (size_t) nk;
    v.temperature = g->temperature;
    v.top_k = (uint32_t) g->top_k;
    v.top_p = g->top_p;
    v.seed = g->seed;
    v.has_seed = true;
    v.pipelined = true;
    wire_activations_reply_t ar;
    memset (&ar, 0, sizeof ar);
    int status = 0;
    if (g->use_prefix) {
        wire_extend_t e;
        wire_msg_init (&wire_extend_desc, &e);
        e.session = g->session;
        e.pos = (uint32_t) pos;
        e.tokens = g->ahead;
        e.tokens_count = (size_t) nk + 1;
        status = s_call (g, false, "prefix", &wire_extend_desc, &e, &wire_activations_reply_desc, &ar, nk + 1);
        if (status == 0
        && (!ar.activations || ar.activations->n_pos != (uint32_t) nk + 1 || ar.pos != (uint32_t) pos))
            status = 500;
        v.activations = ar.activations;
    }
    else {
        v.tokens = g->ahead;
        v.tokens_count = (size_t) nk + 1;
    }
    int64_t now = zclock_mono ();
    if (status == 0)
        status = s_call_start (g, true, "target", &wire_verify_desc, &v);
    if (g->use_prefix)
        wire_msg_free (&wire_activations_reply_desc, &ar);
    if (status) {
        //  Only an optimisation: the next round sends it the usual way.
        g->err [0] = 0;
        return false;
    }
    g->next_sent = true;
    g->next_k = nk;
    g->next_at = now;
    g->next_connects = mdp_client_connects (g->cloud);
    return true;
}

//  While this round's verify travels: drafts e_1, e_2, ... after
//  ctx + d_1..d_k (greedy, as if every draft and the draft's own guess of
//  the bonus token were accepted), until the answer is there or enough
//  are ready. With pipelining, as soon as the next round's chunk is
//  drafted it is sent (s_dispatch) and drafting goes on for the round
//  after it. The tokens go into g->ctx beyond n_ctx (scratch: emission
//  overwrites them) and g->ahead, which may already hold some (drafted
//  during the last round's verify, beyond this round's chunk).
static void
s_lookahead (gen_t *g, int k, int64_t sent_ms)
{
    int nk = g->pipeline && !g->next_sent ? s_next_k (g, k) : 0;
    int after = g->sh->fixed_k ? g->k : drafter_adapt_k (g->k, k, k, g->sh->k_max);
    int limit = after + 1;
    if (g->pipeline && (nk > 0 || g->next_sent)) {
        int sent_k = nk > 0 ? nk : g->next_k;
        limit = sent_k + 1 + (g->sh->fixed_k ? sent_k : drafter_adapt_k (sent_k, sent_k, sent_k, g->sh->k_max)) + 1;
    }
    if (limit > S_AHEAD_MAX)
        limit = S_AHEAD_MAX;
    if (limit > g->cap - g->n_ctx - k)
        limit = g->cap - g->n_ctx - k;
    if (g->n_ahead > limit)
        g->n_ahead = limit > 0 ? limit : 0;
    for (int i = 0; i < k; i++)
        g->ctx [g->n_ctx + i] = g->prop->d [i];
    for (int i = 0; i < g->n_ahead; i++)
        g->ctx [g->n_ctx + k + i] = g->ahead [i];
    char err [256];
    bool tried = false;
    while (!s_target_ready (g)) {
        //  The next chunk goes out when it is complete, or with what is
        //  drafted when the answer is due before one more draft is done:
        //  so its size follows what the round trip leaves time to draft.
        if (nk > 0 && !tried && g->n_ahead >= 2) {
            int ready = g->n_ahead - 1 < nk ? g->n_ahead - 1 : nk;
            bool due = g->wait_ms > 0 && g->draft_ms > 0
                    && (double) (zclock_mono () - sent_ms) + g->draft_ms >= g->wait_ms
                    && ready >= S_MIN_CHUNK;
            if (ready == nk || due) {
                tried = true;
                s_dispatch (g, k, ready);
                continue;
            }
        }
        if (g->n_ahead >= limit)
            break;
        int n = g->n_ctx + k + g->n_ahead;
        int64_t t0 = zclock_usecs ();
        if (drafter_propose (g->drafter, g->ctx, n, 1, NULL, g->prop2, err, sizeof err) || g->prop2->k != 1)
            break;      //  only an optimisation: the round goes on without it
        double ms = (zclock_usecs () - t0) / 1e3;
        g->draft_ms = g->draft_ms > 0 ? 0.8 * g->draft_ms + 0.2 * ms : ms;
        g->ctx [n] = g->prop2->d [0];
        g->ahead [g->n_ahead++] = g->prop2->d [0];
    }
}

//  Waits for the answer to this round's chunk (k drafts at pos), sent
//  during the last round's verify (s_dispatch). Returns 0 with *vr, or -1 when no clean
//  answer came in time (the caller then forgets it and does the round
//  the usual way, which handles errors, 404 re-prefills and retries).
static int
s_sent_finish (gen_t *g, int k, int pos, wire_verify_reply_t *vr)
{
    int64_t deadline = g->sent_at + s_timeout (g, k + 1);
    while (true) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0)
            return -1;
        int command = 0;
        char *name = NULL;
        zmsg_t *rep = mdp_client_recv (g->cloud, (int) left, &command, &name);
        bool ours = rep && name && streq (name, "target") && command == MDPC_FINAL;
        zstr_free (&name);
        if (!rep)
            return -1;
        if (!ours) {
            zmsg_destroy (&rep);
            continue;
        }
        if (g->stale > 0) {
            g->down += zmsg_content_size (rep) + strlen ("target") + S_MDP_OVERHEAD;
            g->stale--;
            zmsg_destroy (&rep);
            continue;
        }
        int status = s_parse (g, true, "target", &wire_verify_desc, &rep, &wire_verify_reply_desc, vr);
        if (status) {
            g->err [0] = 0;
            return -1;
        }
        if (vr->accepted > (uint32_t) k || vr->n_pos != (uint32_t) pos + 1 + vr->accepted) {
            wire_msg_free (&wire_verify_reply_desc, vr);
            return -1;          //  not the answer to this chunk
        }
        return 0;
    }
}

//  One verification of prop (k drafts) after ctx. Returns 0 with
//  *accepted and *next, or a status.
static int
s_verify (gen_t *g, int k, int *accepted, int32_t *next)
{
    int pos = g->n_ctx - 1;
    int32_t rows [DRAFTER_MAX_K + 1];
    rows [0] = g->ctx [g->n_ctx - 1];
    for (int i = 0; i < k; i++)
        rows [i + 1] = g->prop->d [i];

    wire_verify_t v;
    wire_msg_init (&wire_verify_desc, &v);
    v.session = g->session;
    v.pos = (uint32_t) pos;
    v.draft_tokens = g->full? NULL: g->prop->d;
    v.draft_tokens_count = g->full? 0: (size_t) k;
    v.return_hidden = g->full;
    v.temperature = g->temperature;
    v.top_k = (uint32_t) g->top_k;
    v.top_p = g->top_p;
    v.seed = g->seed;
    v.has_seed = true;
    wire_draft_t drafts [DRAFTER_MAX_K];
    if (g->temperature > 0 && k > 0) {
        //  (privacy full: the q lists stay here, for the local verifier)
        for (int i = 0; i < k; i++) {
            int32_t *tk = g->q_tokens + (size_t) i * DRAFTER_MAX_CANDIDATES;
            float *pr = g->q_probs + (size_t) i * DRAFTER_MAX_CANDIDATES;
            int n = g->prop->q_n [i];
            for (int j = 0; j < n; j++) {
                tk [j] = g->prop->q [i][j].token;
                pr [j] = g->prop->q [i][j].prob;
            }
            drafts [i].tokens = tk;
            drafts [i].tokens_count = (size_t) n;
            drafts [i].probs = pr;
            drafts [i].probs_count = (size_t) n;
        }
        if (!g->full) {
            v.drafts = drafts;
            v.drafts_count = (size_t) k;
        }
    }
    wire_activations_reply_t ar;
    memset (&ar, 0, sizeof ar);
    wire_verify_reply_t vr;
    int status = 0;
    bool early = false;         //  the answer came for a chunk sent last round
    g->early_round = false;
    if (g->sent) {
        //  Sent during the last round's verify (s_dispatch): only its
        //  answer is due; draft on (and maybe send the next chunk) meanwhile.
        g->sent = false;
        if (g->sent_pos == pos && g->sent_k == k
        &&  mdp_client_connects (g->cloud) == g->sent_connects) {
            g->us_extend = 0;
            int64_t t0 = zclock_usecs ();
            s_lookahead (g, k, g->sent_at);
            early = s_sent_finish (g, k, pos, &vr) == 0;
            g->early_round = early;
            g->us_verify = zclock_usecs () - t0;
            if (early)
                g->n_early++;
            else {
                //  No clean answer: drop the socket (and anything sent on
                //  it) and do the round the usual way.
                mdp_client_reconnect (g->cloud);
                s_clear_inflight (g);
            }
        }
    }
    if (!early && g->use_prefix) {
        wire_extend_t e;
        wire_msg_init (&wire_extend_desc, &e);
        e.session = g->session;
        e.pos = (uint32_t) pos;
        e.tokens = rows;
        e.tokens_count = (size_t) k + 1;
        int64_t t_ext = zclock_usecs ();
        status = s_call (g, false, "prefix", &wire_extend_desc, &e, &wire_activations_reply_desc, &ar, k + 1);
        g->us_extend = zclock_usecs () - t_ext;
        if (status)
            return status;
        if (!ar.activations || ar.activations->n_pos != (uint32_t) k + 1 || ar.pos != (uint32_t) pos) {
            snprintf (g->err, sizeof g->err, "prefix extend: expected %d rows at %d", k + 1, pos);
            wire_msg_free (&wire_activations_reply_desc, &ar);
            return 500;
        }
        v.activations = ar.activations;
    }
    else
    if (!early) {
        v.tokens = rows;
        v.tokens_count = (size_t) k + 1;
    }
    int64_t t0 = zclock_usecs ();
    if (!early && g->lookahead && k > 0) {
        //  While the verify travels, draft on as if all k drafts and the
        //  draft's own guess of the bonus token were accepted (greedy only:
        //  the guesses use no randomness, so timing cannot change output).
        int64_t started = zclock_mono ();
        status = s_call_start (g, true, "target", &wire_verify_desc, &v);
        if (status == 0) {
            s_lookahead (g, k, started);
            status = s_call_finish (g, true, "target", &wire_verify_desc, &v,
                                    &wire_verify_reply_desc, &vr, k + 1, started, pos);
            double ms = (double) (zclock_mono () - started);
            if (status == 0)
                g->wait_ms = g->wait_ms > 0 ? 0.7 * g->wait_ms + 0.3 * ms : ms;
        }
    }
    else
    if (!early)
        status = s_call (g, true, "target", &wire_verify_desc, &v, &wire_verify_reply_desc, &vr, k + 1);
    if (!early)
        g->us_verify = zclock_usecs () - t0;
    if (status == 0)
        metrics_observe (g->sh->metrics, "verify_seconds", NULL, g->us_verify / 1e6);
    if (g->use_prefix)
        wire_msg_free (&wire_activations_reply_desc, &ar);
    if (status)
        return status;
    if (g->full) {
        if (vr.has_next_token || !vr.hidden || vr.hidden->n_pos != (uint32_t) k + 1) {
            snprintf (g->err, sizeof g->err, "target verify: privacy full expects %d hidden rows "
                      "and no next_token in the reply", k + 1);
            status = 500;
        }
        else
            status = s_full_verify (g, vr.hidden, k, pos,
                                    g->temperature > 0 && k > 0? drafts: NULL, next);
        if (status == 0)
            *accepted = g->last_accepted;
        wire_msg_free (&wire_verify_reply_desc, &vr);
        return status;
    }
    if (vr.accepted > (uint32_t) k || !vr.has_next_token
    ||  vr.next_token >= tokenizer_n_tokens (g->sh->tok)) {
        snprintf (g->err, sizeof g->err, "target verify: bad reply (accepted %u of %d, next %s)",
                  vr.accepted, k, vr.has_next_token ? "present" : "absent");
        status = 500;
    }
    else {
        *accepted = (int) vr.accepted;
        *next = vr.next_token;
    }
    wire_msg_free (&wire_verify_reply_desc, &vr);
    return status;
}

//  Switches to the draft model alone after the cloud failed with `status`.
//  Returns true when the generation can go on that way.
static bool
s_degrade (gen_t *g, int status)
{
    if ((status != 503 && status != 504) || !g->sh->draft || g->edge_only)
        return false;
    s_forget_inflight (g);
    zsys_warning ("edge-draft: session %s: %s; continuing with the draft model alone (degraded)",
                  g->session, g->err);
    g->edge_only = true;
    g->degraded = true;
    g->err_status = 0;
    g->err [0] = 0;
    g->resume_at = zclock_mono () + S_RESUME_MS;
    g->probe_sent = 0;
    return true;
}

//  Degraded (not a requested edge_only): every S_RESUME_MS, asks the cloud
//  broker whether a "target" worker is there (mmi.service, sent without
//  waiting; the answer is picked up by a later step, so the draft model
//  never waits on a dead link). When it says 200, re-prefills split-prefix
//  and cloud-target with the context minus its last token (which the next
//  verify feeds, as after a 404) and goes back to speculative rounds; if
//  that fails the generation stays degraded and probes again later.
static void
s_try_resume (gen_t *g)
{
    int64_t now = zclock_mono ();
    if (!g->cloud)
        return;
    if (g->probe_sent) {
        bool answered = s_call_ready (g, true);
        if (!answered && now - g->probe_sent < S_PROBE_MS)
            return;
        bool back = false;
        if (answered) {
            int command = 0;
            char *name = NULL;
            zmsg_t *rep = mdp_client_recv (g->cloud, 0, &command, &name);
            char *answer = rep && name && streq (name, "mmi.service") ? zmsg_popstr (rep) : NULL;
            back = answer && streq (answer, "200");
            zstr_free (&answer);
            zstr_free (&name);
            zmsg_destroy (&rep);        //  a stray late reply: probe again later
        }
        g->probe_sent = 0;
        g->resume_at = now + S_RESUME_MS;
        if (!back) {
            if (!answered)
                mdp_client_reconnect (g->cloud);    //  drop a late answer
            return;
        }
        int32_t ignored;
        g->edge_only = false;
        int status = s_prefill (g, g->n_ctx - 1, &ignored);
        if (status) {
            zsys_info ("edge-draft: session %s: cloud answers but re-prefill failed (%d: %s); "
                       "staying degraded", g->session, status, g->err);
            g->edge_only = true;
            g->err_status = 0;
            g->err [0] = 0;
            g->resume_at = zclock_mono () + S_RESUME_MS;
            return;
        }
        g->resumes++;
        zsys_warning ("edge-draft: session %s: cloud is back; re-prefilled %d positions, "
                      "speculative again (resume %u)", g->session, g->n_ctx - 1, g->resumes);
        return;
    }
    if (now < g->resume_at)
        return;
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, "target");
    if (mdp_client_send (g->cloud, "mmi.service", &body) == 0)
        g->probe_sent = now;
    else
        g->resume_at = now + S_RESUME_MS;
}

static int
s_fail (gen_t *g, int status)
{
    g->err_status = status;
    s_finish (g, WIRE_FINISH_REASON_ERROR);
    return -1;
}

//  Draft model alone: one token per step with the request's sampling.
static void
s_edge_step (gen_t *g)
{
    if (g->n_ctx >= g->cap) {
        s_finish (g, WIRE_FINISH_REASON_LENGTH);
        return;
    }
    if (drafter_kind (g->drafter) != DRAFTER_MODEL) {
        drafter_destroy (&g->drafter);
        char err [256];
        g->drafter = drafter_new_model (g->sh->draft, &g->sh->draft_lock, g->cap, err, sizeof err);
        if (!g->drafter) {
            snprintf (g->err, sizeof g->err, "draft model: %s", err);
            s_fail (g, 500);
            return;
        }
    }
    if (drafter_propose (g->drafter, g->ctx, g->n_ctx, 1, g->esampler, g->prop, g->err, sizeof g->err)
    ||  g->prop->k != 1) {
        s_fail (g, 500);
        return;
    }
    s_emit (g, g->prop->d [0]);
}

//  One speculative (or cloud-only) round.
static void
s_round (gen_t *g)
{
    if (g->n_ctx > g->sh->ctx) {
        s_finish (g, WIRE_FINISH_REASON_LENGTH);
        return;
    }
    int remaining = (int) g->req.max_tokens - g->n_out;
    int k = g->k;
    if (k > remaining - 1)
        k = remaining - 1;
    if (k > g->sh->ctx - g->n_ctx)
        k = g->sh->ctx - g->n_ctx;
    if (k > g->cap - g->n_ctx)
        k = g->cap - g->n_ctx;
    g->prop->k = 0;
    g->us_extend = 0;
    int64_t t_draft = zclock_usecs ();
    //  Drafts made during the last verify, when that verify accepted
    //  everything and its next token was the draft's guess; with
    //  pipelining the first sent_k of them may already be on their way
    //  as this round's verify.
    int p = 0;
    bool have_pre = g->n_pre > 0 && g->pre_at == g->n_ctx && g->ctx [g->n_ctx - 1] == g->pre_last;
    if (g->sent && !(have_pre && g->sent_k <= k && g->sent_k <= g->n_pre)) {
        g->sent = false;
        s_void (g, g->sent_connects);
    }
    if (g->sent)
        k = g->sent_k;
    else
    if (g->pipeline && have_pre && g->n_pre < k && g->n_pre >= S_MIN_CHUNK)
        k = g->n_pre;           //  send at once what is drafted; drafting goes on meanwhile
    g->n_ahead = 0;
    if (have_pre && k > 0) {
        p = g->n_pre < k ? g->n_pre : k;
        //  Drafts beyond this round's: the start of its lookahead.
        g->n_ahead = g->n_pre - p;
        memcpy (g->ahead, g->pre + p, (size_t) g->n_ahead * sizeof *g->ahead);
        for (int i = 0; i < p; i++) {
            g->prop->d [i] = g->pre [i];
            g->ctx [g->n_ctx + i] = g->pre [i];
            g->prop->q [i][0].token = g->pre [i];
            g->prop->q [i][0].prob = 1.0f;
            g->prop->q_n [i] = 1;
        }
        g->prop->k = p;
        g->n_ahead_used += p;
    }
    g->n_pre = 0;
    if (k > p) {
        if (drafter_propose (g->drafter, g->ctx, g->n_ctx + p, k - p, g->dsampler, g->prop2,
                             g->err, sizeof g->err)) {
            s_fail (g, 500);
            return;
        }
        for (int i = 0; i < g->prop2->k; i++) {
            g->prop->d [p + i] = g->prop2->d [i];
            g->prop->q_n [p + i] = g->prop2->q_n [i];
            memcpy (g->prop->q [p + i], g->prop2->q [i], (size_t) g->prop2->q_n [i] * sizeof (sampler_prob_t));
        }
        g->prop->k = p + g->prop2->k;
    }
    k = g->prop->k;
    g->us_draft = zclock_usecs () - t_draft;
    int accepted = 0;
    int32_t next = -1;
    int status = 0;
    for (int attempt = 0; ; attempt++) {
        status = s_verify (g, k, &accepted, &next);
        if (status)
            s_forget_inflight (g);      //  a chunk sent ahead of a failed verify is void
        if (status != 404 || attempt >= S_REPREFILLS)
            break;
        //  The session is gone on some replica: rebuild both caches. When
        //  that keeps happening (sessions evicting each other on a full
        //  replica), back off a random while so one of them gets through.
        if (attempt > 0)
            zclock_sleep (S_REPREFILL_MS * (1 << (attempt - 1)) + (int) (s_random64 () % S_REPREFILL_MS));
        if (g->sh->verbose)
            zsys_info ("edge-draft: session %s: %s; re-prefilling %d positions",
                       g->session, g->err, g->n_ctx - 1);
        int32_t ignored;
        status = s_prefill (g, g->n_ctx - 1, &ignored);
        if (status)
            break;
    }
    if (status) {
        if (!s_degrade (g, status))
            s_fail (g, status);
        return;
    }
    if (g->sh->verbose)
        zsys_info ("edge-draft: session %s pos %d: %d/%d accepted, next %d "
                   "(draft %.1f ms, extend %.1f ms, verify %.1f ms, %d drafted ahead%s%s)",
                   g->session, g->n_ctx - 1, accepted, k, next,
                   g->us_draft / 1e3, g->us_extend / 1e3, g->us_verify / 1e3, g->n_ahead,
                   g->early_round ? ", sent early" : "",
                   g->next_sent ? ", next sent" : "");
    bool guessed = accepted == k && g->n_ahead >= 1 && next == g->ahead [0];
    if (g->next_sent && g->next_answered) {
        //  Its answer came (and went) before this round's: void, nothing due.
        g->next_sent = false;
        g->next_answered = false;
        g->n_void++;
    }
    if (g->next_sent && !guessed)
        s_void (g, g->next_connects);
    if (g->next_sent && guessed) {
        //  The chunk sent ahead is the next round's verify, already asked.
        g->sent = true;
        g->sent_k = g->next_k;
        g->sent_pos = g->n_ctx + k;
        g->sent_at = g->next_at;
        g->sent_connects = g->next_connects;
    }
    g->next_sent = false;
    if (guessed && g->n_ahead >= 2) {
        g->n_pre = g->n_ahead - 1;
        memcpy (g->pre, g->ahead + 1, (size_t) g->n_pre * sizeof *g->pre);
        g->pre_at = g->n_ctx + k + 1;
        g->pre_last = next;
    }
    g->proposed += (uint64_t) k;
    g->accepted += (uint64_t) accepted;
    for (int i = 0; i < accepted; i++)
        g->by_pos [i]++;
    for (int i = 0; i < k; i++) {
        char label [32];
        snprintf (label, sizeof label, "pos=%d", i);
        metrics_count (g->sh->metrics, "drafts_proposed_total", label, 1);
        if (i < accepted)
            metrics_count (g->sh->metrics, "drafts_accepted_total", label, 1);
    }
    if (k > g->max_pos_used)
        g->max_pos_used = k;
    for (int i = 0; i < accepted && !g->done; i++)
        s_emit (g, g->prop->d [i]);
    s_emit (g, next);
    if (!g->sh->fixed_k && g->k > 0)
        g->k = drafter_adapt_k (g->k, k, accepted, g->sh->k_max);
}

//  ---------------------------------------------------------------------
//  Request handling

static int
s_tokenize (gen_t *g)
{
    wire_tokenize_t t;
    wire_msg_init (&wire_tokenize_desc, &t);
    if (g->req.prompt) {
        //  Raw prompts: special-token text is parsed, as `splitmesh run`.
        t.text = g->req.prompt;
        t.parse_special = true;
    }
    else {
        t.chat = g->req.messages;
        t.chat_count = g->req.messages_count;
        t.add_generation_prompt = true;
    }
    t.add_special = true;
    wire_tokenize_reply_t r;
    int status = s_call (g, false, "tokenizer", &wire_tokenize_desc, &t, &wire_tokenize_reply_desc, &r, 0);
    if (status)
        return status;
    if (r.tokens_count == 0) {
        wire_msg_free (&wire_tokenize_reply_desc, &r);
        snprintf (g->err, sizeof g->err, "the prompt encodes to no tokens");
        return 422;
    }
    int n = (int) r.tokens_count;
    if (n >= g->sh->ctx) {
        wire_msg_free (&wire_tokenize_reply_desc, &r);
        snprintf (g->err, sizeof g->err, "prompt has %d tokens, the context is %d", n, g->sh->ctx);
        return 413;
    }
    g->n_prompt = n;
    g->cap = n + (int) g->req.max_tokens + DRAFTER_MAX_K + 2;
    if (g->cap > g->sh->ctx + 1)
        g->cap = g->sh->ctx + 1;
    g->ctx = malloc ((size_t) g->cap * sizeof *g->ctx);
    if (!g->ctx) {
        wire_msg_free (&wire_tokenize_reply_desc, &r);
        snprintf (g->err, sizeof g->err, "out of memory");
        return 500;
    }
    memcpy (g->ctx, r.tokens, (size_t) n * sizeof *g->ctx);
    g->n_ctx = n;
    wire_msg_free (&wire_tokenize_reply_desc, &r);
    return 0;
}

//  Checks what the schema cannot. Returns 0 or a status with g->err.
static int
s_validate (gen_t *g)
{
    wire_generate_t *r = &g->req;
    if (r->prompt && !*r->prompt) {
        snprintf (g->err, sizeof g->err, "field 'prompt': empty");
        return 422;
    }
    if (r->model) {
        bool known = false;
        for (int i = 0; i < 3; i++)
            if (streq (r->model, g->sh->model_names [i]))
                known = true;
        if (!known) {
            snprintf (g->err, sizeof g->err, "unknown model '%.200s': this edge-draft serves '%.200s'",
                      r->model, g->sh->model_names [1]);
            return 404;
        }
    }
    if (r->mode == WIRE_MODE_EDGE_ONLY && !g->sh->draft) {
        snprintf (g->err, sizeof g->err, "field 'mode': edge_only needs a draft model (edge-draft runs with --drafter ngram)");
        return 422;
    }
    if (r->draft_k > (uint32_t) DRAFTER_MAX_K) {
        snprintf (g->err, sizeof g->err, "field 'draft_k': %u above %d", r->draft_k, DRAFTER_MAX_K);
        return 422;
    }
    return 0;
}

static void
s_gen_free (gen_t *g)
{
    if (g->have_req)
        wire_msg_free (&wire_generate_desc, &g->req);
    free (g->ctx);
    free (g->out);
    free (g->text);
    free (g->prop);
    free (g->prop2);
    free (g->q_tokens);
    free (g->q_probs);
    free (g->logits);
    speculative_destroy (&g->verifier);
    tokenizer_stream_destroy (&g->stream);
    drafter_destroy (&g->drafter);
    sampler_destroy (&g->dsampler);
    sampler_destroy (&g->esampler);
}

static uint64_t
s_random64 (void)
{
    zuuid_t *u = zuuid_new ();
    uint64_t v = 0;
    if (u) {
        memcpy (&v, zuuid_data (u), sizeof v);
        zuuid_destroy (&u);
    }
    return v ^ (uint64_t) zclock_usecs ();
}

void
edge_gen_handle (edge_shared_t *sh, mdp_worker_t *worker, zframe_t *client,
                 zmsg_t *body, mdp_client_t *dev, mdp_client_t *cloud)
{
    gen_t *g = calloc (1, sizeof *g);
    if (!g) {
        zframe_t *frame = wire_error_frame (500, "edge-draft: out of memory", -1);
        zmsg_t *msg = zmsg_new ();
        zmsg_append (msg, &frame);
        mdp_worker_send_final (worker, client, &msg);
        return;
    }
    g->sh = sh;
    g->worker = worker;
    g->client = client;
    g->dev = dev;
    g->cloud = cloud;
    g->t_start = zclock_usecs ();
    mdp_client_set_timeout (dev, sh->timeout_ms);
    mdp_client_set_timeout (cloud, sh->timeout_ms);
    mdp_client_set_retries (dev, S_MDP_RETRIES);
    mdp_client_set_retries (cloud, S_MDP_RETRIES);

    //  1. Decode and validate.
    wire_err_t werr;
    zframe_t *frame = zmsg_first (body);
    if (!frame || zmsg_size (body) != 1) {
        s_reply_error (g, 400, "a generate request is one MessagePack frame");
        goto done;
    }
    if (wire_decode_frame (&wire_generate_desc, frame, &g->req, &werr)) {
        s_reply_error (g, werr.status, werr.text);
        goto done;
    }
    g->have_req = true;
    int status = s_validate (g);
    if (status) {
        s_reply_error (g, status, g->err);
        goto done;
    }
    wire_generate_t *r = &g->req;
    for (size_t i = 0; i < r->stop_count; i++)
        if (strlen (r->stop [i]) > g->stop_max)
            g->stop_max = strlen (r->stop [i]);
    g->temperature = (float) r->temperature;
    g->top_k = (int) r->top_k;
    g->top_p = (float) r->top_p;
    g->seed = r->has_seed ? r->seed : s_random64 ();
    snprintf (g->session, sizeof g->session, "ed-%016llx%08x",
              (unsigned long long) s_random64 (), (unsigned) (s_random64 () & 0xffffffffu));
    g->edge_only = r->mode == WIRE_MODE_EDGE_ONLY;
    bool privacy_none = r->privacy == WIRE_PRIVACY_NONE || r->mode == WIRE_MODE_CLOUD_ONLY;
    g->use_prefix = !g->edge_only && !privacy_none;
    g->full = g->use_prefix && r->privacy == WIRE_PRIVACY_FULL;
    g->k = r->mode == WIRE_MODE_CLOUD_ONLY ? 0 : (int) r->draft_k;
    if (g->k > sh->k_max)
        g->k = sh->k_max;

    //  2. Tokenize (through the tokenizer service).
    status = s_tokenize (g);
    if (status) {
        s_reply_error (g, status, g->err);
        goto done;
    }
    g->out = malloc ((size_t) r->max_tokens * sizeof *g->out);
    g->prop = malloc (sizeof *g->prop);
    g->prop2 = malloc (sizeof *g->prop2);
    g->q_tokens = malloc ((size_t) DRAFTER_MAX_K * DRAFTER_MAX_CANDIDATES * sizeof *g->q_tokens);
    g->q_probs = malloc ((size_t) DRAFTER_MAX_K * DRAFTER_MAX_CANDIDATES * sizeof *g->q_probs);
    g->stream = tokenizer_stream_new (sh->tok, false);
    int vocab = tokenizer_n_tokens (sh->tok);
    sampler_params_t esp = sampler_params_default ();
    esp.temperature = g->temperature;
    esp.top_k = g->top_k;
    esp.top_p = g->top_p;
    esp.seed = g->seed;
    g->esampler = sampler_new (&esp, vocab);
    if (g->temperature > 0) {
        sampler_params_t dsp = drafter_sampler_params (g->temperature, g->top_k, g->top_p,
                                                       g->seed ^ 0x9E3779B97F4A7C15ull);
        g->dsampler = sampler_new (&dsp, vocab);
    }
    char err [256] = "out of memory";
    if (sh->draft && (r->drafter == WIRE_DRAFTER_MODEL || g->edge_only)) {
        g->drafter = drafter_new_model (sh->draft, &sh->draft_lock, g->cap, err, sizeof err);
        if (g->drafter)
            drafter_set_min_p (g->drafter, sh->draft_min_p);
    }
    else
        g->drafter = drafter_new_ngram ();
    if (g->full) {
        g->verifier = speculative_new (vocab);
        g->logits = malloc ((size_t) (DRAFTER_MAX_K + 1) * vocab * sizeof *g->logits);
    }
    if ((g->full && (!g->verifier || !g->logits))
    ||  !g->out || !g->prop || !g->prop2 || !g->q_tokens || !g->q_probs || !g->stream || !g->esampler
    ||  (g->temperature > 0 && !g->dsampler) || !g->drafter) {
        snprintf (g->err, sizeof g->err, "edge-draft: %s", err);
        s_reply_error (g, 500, g->err);
        goto done;
    }

    g->lookahead = sh->lookahead && g->temperature <= 0 && drafter_kind (g->drafter) == DRAFTER_MODEL;
    g->pipeline = g->lookahead && sh->pipeline && !g->full;

    //  3. Prefill, and the first token from the target.
    if (!g->edge_only) {
        int32_t t0 = -1;
        status = s_prefill (g, g->n_ctx, &t0);
        if (status == 0)
            s_emit (g, t0);
        else
        if (!s_degrade (g, status))
            s_fail (g, status);
        s_partial (g);
    }
    //  4. Rounds until a stop.
    while (!g->done) {
        if (atomic_load (&sh->stopping)) {
            snprintf (g->err, sizeof g->err, "edge-draft is stopping");
            s_fail (g, 503);
            break;
        }
        if (mdp_worker_cancelled (worker, client)) {
            snprintf (g->err, sizeof g->err, "cancelled: the client went away");
            metrics_count (sh->metrics, "generations_cancelled_total", "reason=client_gone", 1);
            s_fail (g, WIRE_STATUS_CANCELLED);
            break;
        }
        if (g->edge_only) {
            s_edge_step (g);
            if (g->degraded && !g->done)
                s_try_resume (g);
        }
        else
            s_round (g);
        s_partial (g);
    }
    //  5. Close the sessions (best effort) and answer. Answers still due
    //  to chunks sent ahead must not be read as the close's, nor reach
    //  this thread's next generation.
    s_forget_inflight (g);
    if (g->use_prefix)
        s_close (g, false, "prefix");
    if (g->use_target)
        s_close (g, true, "target");
    s_reply_final (g);
    if (sh->verbose)
        zsys_info ("edge-draft: session %s: %d prompt + %d tokens, %llu/%llu drafts accepted "
                   "(%d drafted during a verify; %d verifies sent a round early, %d of them void), finish %s",
                   g->session, g->n_prompt, g->n_out, (unsigned long long) g->accepted,
                   (unsigned long long) g->proposed, g->n_ahead_used, g->n_early + g->n_void, g->n_void,
                   wire_finish_reason_names [g->finish]);
done:
    s_gen_free (g);
    free (g);
}
