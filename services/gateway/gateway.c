/*  gateway.c: OpenAI-compatible HTTP API over the mesh's `generate` service.

    One libmicrohttpd daemon, a thread per connection. A completion request
    is read whole (at most S_MAX_BODY bytes), parsed with jansson, checked
    against what the mesh can do (n > 1, logprobs, tools... are answered
    400 "not supported" rather than silently ignored), encoded as a
    `generate` message (the codec checks the schema's limits) and sent
    through a fresh MDP client. The gateway waits for the first reply
    before answering, so an error of the mesh (unknown model, no worker,
    bad value) still gets its own HTTP status; after that, a stream is a
    content-reader callback that blocks on the MDP socket in the
    connection's thread and turns each PARTIAL into one SSE event.

    Why jansson and not hand-written JSON: requests are untrusted input
    with nesting, escapes, surrogate pairs and numbers of every shape;
    jansson is small, packaged everywhere, parses strictly (rejects bad
    UTF-8) and escapes output correctly, which is exactly what a
    hand-rolled writer gets wrong first.

    Metrics (docs/metrics.md), counted once per HTTP request when MHD says
    it is over: splitmesh_gateway_requests_total{endpoint,status} for every
    request, splitmesh_requests_total{status} / splitmesh_errors_total{status}
    for completions, and splitmesh_generations_cancelled_total when a
    client closed a stream before its end. Closing the request's MDP client
    then is what tells the mesh: the broker can no longer deliver the next
    PARTIAL and asks edge-draft to stop (docs/gateway.md, "Cancellation").
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE                 //  POLLRDHUP
#endif
#include <arpa/inet.h>
#include <poll.h>
#include <microhttpd.h>
#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include "codec.h"
#include "mdp_client.h"
#include "mdp_common.h"
#include "metrics.h"
#include "gateway.h"

#define S_MAX_BODY      (4 * 1024 * 1024)   //  request bodies above this: 413
#define S_HEALTH_MS     1000                //  wait for the broker's mmi.service answer
#define S_RESENDS       3                   //  resends of a request lost with its broker

struct _gateway_t {
    struct MHD_Daemon *httpd;   //  HTTP server
    int port;                   //  bound HTTP port
    char *broker;               //  device broker endpoint
    char *http_address;         //  listen address
    char *model_name;           //  id in /v1/models
    int timeout_ms;             //  longest wait for one reply of the mesh
    bool verbose;               //  log each request
    int64_t created;            //  start time, seconds (the model's `created`)
    atomic_bool draining;       //  SIGTERM seen: refuse new work
    atomic_int in_flight;       //  completions accepted, not yet finished
    atomic_uint_fast64_t next_id;   //  completion id counter
    metrics_t *metrics;         //  telemetry publisher (no-op without --telemetry)
};

//  The HTTP status of the last response queued on this thread. MHD runs
//  each connection's handler on that connection's own thread (thread per
//  connection), so s_http_handler reads back what the code it called
//  queued without passing the request down to every responder.
static __thread unsigned int s_queued_status;

//  One HTTP request, from its first byte to MHD's "completed" notice.
typedef struct {
    gateway_t *gateway;         //  owner
    char *body;                 //  request body so far (NUL-terminated)
    size_t size;                //  bytes in body
    bool too_large;             //  body went past S_MAX_BODY (the rest is dropped)
    bool counted;               //  counted in gateway->in_flight
    const char *endpoint;       //  metrics label: chat, completions, models, health, other
    unsigned int status;        //  HTTP status queued, 0: none yet
    bool streaming;             //  an SSE response was queued
    //  Completion state
    bool chat;                  //  chat.completion vs text_completion
    char id [64];               //  "chatcmpl-..." / "cmpl-..."
    char *model;                //  model id reported back
    int64_t created;            //  seconds
    mdp_client_t *client;       //  MDP client of this request, or NULL
    zmsg_t *first;              //  first reply, taken before answering (stream)
    int first_command;          //  its MDP command
    bool include_usage;         //  stream_options.include_usage
    size_t n_tokens;            //  completion tokens seen (when stats are absent)
    int resends;                //  times the request was sent again (s_recv_resending)
    //  Stream output
    char *pending;              //  SSE text waiting to go out
    size_t pending_size;        //  bytes in pending
    size_t pending_pos;         //  bytes of pending already sent
    bool finished;              //  [DONE] queued: end after pending
} s_request_t;

static void
s_request_destroy (s_request_t **self_p)
{
    s_request_t *self = *self_p;
    if (!self)
        return;
    if (self->counted)
        atomic_fetch_sub (&self->gateway->in_flight, 1);
    free (self->body);
    free (self->model);
    free (self->pending);
    zmsg_destroy (&self->first);
    mdp_client_destroy (&self->client);
    free (self);
    *self_p = NULL;
}

//  ---------------------------------------------------------------------
//  Responses

//  Serializes json (taken: decref'd here) and queues it with status.
static enum MHD_Result
s_respond_json (struct MHD_Connection *connection, unsigned int status, json_t *json)
{
    char *text = json? json_dumps (json, JSON_COMPACT): NULL;
    json_decref (json);
    if (!text) {
        static const char oom [] =
            "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
            "\"param\":null,\"code\":null}}";
        text = strdup (oom);
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        if (!text)
            return MHD_NO;
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer_with_free_callback (strlen (text), text, free);
    if (!response) {
        free (text);
        return MHD_NO;
    }
    MHD_add_response_header (response, "Content-Type", "application/json");
    MHD_add_response_header (response, "Cache-Control", "no-store");
    s_queued_status = status;
    enum MHD_Result rc = MHD_queue_response (connection, status, response);
    MHD_destroy_response (response);
    return rc;
}

//  The type OpenAI uses for an HTTP status.
static const char *
s_error_type (unsigned int status)
{
    switch (status) {
        case 401: return "authentication_error";
        case 404: return "invalid_request_error";
        case 429: return "rate_limit_error";
        default:  return status < 500? "invalid_request_error": "server_error";
    }
}

//  The OpenAI error object: {"error":{"message","type","param","code"}}.
//  param and code may be NULL (JSON null).
static json_t *
s_error_json (unsigned int status, const char *param, const char *code, const char *message)
{
    return json_pack ("{s:{s:s, s:s, s:s?, s:s?}}", "error",
                      "message", message, "type", s_error_type (status),
                      "param", param, "code", code);
}

static enum MHD_Result
s_respond_error (struct MHD_Connection *connection, unsigned int status,
                 const char *param, const char *code, const char *fmt, ...)
{
    char message [1024];
    va_list args;
    va_start (args, fmt);
    vsnprintf (message, sizeof message, fmt, args);
    va_end (args);
    return s_respond_json (connection, status, s_error_json (status, param, code, message));
}

//  True once draining has begun, or a SIGTERM/SIGINT is pending for the
//  process: main.c keeps them blocked and takes them itself, so between
//  kill() and main's wake-up the signal is pending, and readiness must
//  already fail then (an orchestrator probes right after it signals).
static bool
s_draining (gateway_t *self)
{
    if (atomic_load (&self->draining))
        return true;
    sigset_t pending;
    return sigpending (&pending) == 0
        && (sigismember (&pending, SIGTERM) == 1 || sigismember (&pending, SIGINT) == 1);
}

//  ---------------------------------------------------------------------
//  Mesh

//  True when the broker answers mmi.service "generate" with 200.
static bool
s_mesh_ready (gateway_t *self)
{
    mdp_client_t *client = mdp_client_new (self->broker);
    if (!client)
        return false;
    mdp_client_set_timeout (client, S_HEALTH_MS);
    mdp_client_set_retries (client, 0);
    zmsg_t *body = zmsg_new ();
    zmsg_addstr (body, "generate");
    zmsg_t *reply = mdp_client_request (client, "mmi.service", &body);
    char *answer = reply? zmsg_popstr (reply): NULL;
    bool ready = answer && streq (answer, "200");
    zstr_free (&answer);
    zmsg_destroy (&reply);
    mdp_client_destroy (&client);
    return ready;
}

//  If frame is an error reply of the mesh, fills *status and text and
//  returns true. Statuses are mapped onto what OpenAI clients expect.
static bool
s_mesh_error (zframe_t *frame, unsigned int *status, const char **code,
              char *text, size_t size)
{
    wire_peek_t peek;
    wire_err_t err;
    if (!frame) {
        *status = 502;
        *code = "bad_gateway";
        snprintf (text, size, "empty reply from the mesh");
        return true;
    }
    if (wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err)) {
        *status = 502;
        *code = "bad_gateway";
        snprintf (text, size, "undecodable reply from the mesh: %s", err.text);
        return true;
    }
    if (peek.desc != &wire_error_desc && peek.status == 0)
        return false;
    wire_error_t error;
    if (wire_decode_frame (&wire_error_desc, frame, &error, &err) == 0) {
        snprintf (text, size, "%s", error.error? error.error: "error");
        wire_msg_free (&wire_error_desc, &error);
    }
    else
        snprintf (text, size, "error %d from the mesh", peek.status);
    int mesh = peek.status;
    *code = NULL;
    if (mesh == 404) {
        *status = 404;
        *code = "model_not_found";
    }
    else
    if (mesh == 408) {
        *status = 504;
        *code = "timeout";
    }
    else
    if (mesh == 413 || mesh == 422 || mesh == 400)
        *status = 400;
    else
    if (mesh == 429 || mesh == 503)
        *status = (unsigned) mesh;
    else
        *status = mesh >= 400 && mesh < 600? (unsigned) mesh: 502;
    return true;
}

//  ---------------------------------------------------------------------
//  Request parsing

//  What a parsed request needs kept alive until it is encoded.
typedef struct {
    wire_generate_t req;        //  points into json and the arrays below
    wire_chat_message_t *messages;
    char **contents;            //  joined content parts (owned), one per message
    size_t n_messages;
    char *stop [WIRE_MAX_STOP_STRINGS];     //  borrowed from json
} s_parsed_t;

static void
s_parsed_free (s_parsed_t *p)
{
    for (size_t i = 0; i < p->n_messages; i++)
        free (p->contents [i]);
    free (p->contents);
    free (p->messages);
    memset (p, 0, sizeof *p);
}

//  A message's content: a string, or an array of {"type":"text","text":...}
//  parts (joined). Returns a fresh string, or NULL with error filled.
static char *
s_content (json_t *content, char *error, size_t size)
{
    if (json_is_string (content))
        return strdup (json_string_value (content));
    if (!json_is_array (content)) {
        snprintf (error, size, "content must be a string or an array of text parts");
        return NULL;
    }
    size_t total = 0, index;
    json_t *part;
    json_array_foreach (content, index, part) {
        json_t *type = json_object_get (part, "type");
        json_t *text = json_object_get (part, "text");
        if (!json_is_string (type) || !streq (json_string_value (type), "text")
        ||  !json_is_string (text)) {
            snprintf (error, size, "only text content parts are supported");
            return NULL;
        }
        total += json_string_length (text);
    }
    char *joined = malloc (total + 1);
    if (!joined) {
        snprintf (error, size, "out of memory");
        return NULL;
    }
    size_t at = 0;
    json_array_foreach (content, index, part) {
        json_t *text = json_object_get (part, "text");
        memcpy (joined + at, json_string_value (text), json_string_length (text));
        at += json_string_length (text);
    }
    joined [at] = 0;
    return joined;
}

//  A number field in [lo, hi], or absent/null. Returns 0, or -1 with error.
static int
s_number (json_t *root, const char *key, double lo, double hi, double *value, bool *present,
          char *error, size_t size)
{
    json_t *v = json_object_get (root, key);
    *present = false;
    if (!v || json_is_null (v))
        return 0;
    if (!json_is_number (v)) {
        snprintf (error, size, "'%s' must be a number", key);
        return -1;
    }
    double d = json_number_value (v);
    if (!(d >= lo && d <= hi)) {
        snprintf (error, size, "'%s' is %g; it must be between %g and %g", key, d, lo, hi);
        return -1;
    }
    *value = d;
    *present = true;
    return 0;
}

//  True when key is present with a value other than null/false/the
//  neutral one, i.e. the client asks for a feature we do not have.
static bool
s_asks (json_t *root, const char *key, long neutral)
{
    json_t *v = json_object_get (root, key);
    if (!v || json_is_null (v) || json_is_false (v))
        return false;
    if (json_is_integer (v))
        return json_integer_value (v) != neutral;
    if (json_is_array (v))
        return json_array_size (v) > 0;
    if (json_is_string (v) && streq (key, "tool_choice"))
        return !streq (json_string_value (v), "none");
    return true;
}

//  Fills p->req from the OpenAI request. Returns 0, or the HTTP status to
//  answer with *param and error filled.
static unsigned int
s_parse (s_request_t *request, json_t *root, s_parsed_t *p, const char **param,
         char *error, size_t size)
{
    gateway_t *gw = request->gateway;
    wire_msg_init (&wire_generate_desc, &p->req);
    *param = NULL;
    if (!json_is_object (root)) {
        snprintf (error, size, "the request body must be a JSON object");
        return 400;
    }
    //  Features the mesh does not have: say so, do not ignore them.
    static const struct { const char *key; long neutral; } unsupported [] = {
        { "n", 1 }, { "best_of", 1 }, { "logprobs", 0 }, { "top_logprobs", 0 },
        { "tools", 0 }, { "functions", 0 }, { "tool_choice", 0 }, { "function_call", 0 },
        { "echo", 0 }, { "suffix", 0 }, { "logit_bias", 0 }, { "audio", 0 },
    };
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported [0]; i++) {
        const char *key = unsupported [i].key;
        json_t *v = json_object_get (root, key);
        if (streq (key, "logit_bias") && json_is_object (v) && json_object_size (v) == 0)
            continue;
        if (streq (key, "suffix") && json_is_string (v) && json_string_length (v) == 0)
            continue;
        if (s_asks (root, key, unsupported [i].neutral)) {
            *param = key;
            snprintf (error, size, "'%s' is not supported by splitmesh", key);
            return 400;
        }
    }
    json_t *format = json_object_get (root, "response_format");
    if (json_is_object (format)) {
        json_t *type = json_object_get (format, "type");
        if (!json_is_string (type) || !streq (json_string_value (type), "text")) {
            *param = "response_format";
            snprintf (error, size, "only response_format {\"type\": \"text\"} is supported");
            return 400;
        }
    }
    //  The model: ours (or absent) means whatever edge-draft serves; any
    //  other name goes to edge-draft, which answers 404 unless it serves it.
    json_t *model = json_object_get (root, "model");
    if (model && !json_is_null (model) && !json_is_string (model)) {
        *param = "model";
        snprintf (error, size, "'model' must be a string");
        return 400;
    }
    const char *model_name = json_is_string (model)? json_string_value (model): gw->model_name;
    if (!streq (model_name, gw->model_name))
        p->req.model = (char *) model_name;
    request->model = strdup (model_name);
    if (!request->model) {
        snprintf (error, size, "out of memory");
        return 500;
    }
    //  Input
    if (request->chat) {
        json_t *messages = json_object_get (root, "messages");
        if (!json_is_array (messages) || json_array_size (messages) == 0) {
            *param = "messages";
            snprintf (error, size, "'messages' must be a non-empty array");
            return 400;
        }
        size_t n = json_array_size (messages);
        if (n > WIRE_MAX_CHAT_MESSAGES) {
            *param = "messages";
            snprintf (error, size, "%zu messages; at most %d are supported", n, WIRE_MAX_CHAT_MESSAGES);
            return 400;
        }
        p->messages = calloc (n, sizeof *p->messages);
        p->contents = calloc (n, sizeof *p->contents);
        if (!p->messages || !p->contents) {
            snprintf (error, size, "out of memory");
            return 500;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *message = json_array_get (messages, i);
            json_t *role = json_object_get (message, "role");
            const char *name = json_is_string (role)? json_string_value (role): "";
            if (streq (name, "developer"))
                name = "system";        //  OpenAI's newer name for the system role
            int r = -1;
            for (int k = 0; k < WIRE_ROLE_COUNT_; k++)
                if (streq (name, wire_role_names [k]))
                    r = k;
            if (r < 0) {
                *param = "messages";
                snprintf (error, size, "messages[%zu]: role '%.40s' is not supported "
                          "(system, user, assistant)", i, name);
                return 400;
            }
            char reason [200];
            p->contents [i] = s_content (json_object_get (message, "content"), reason, sizeof reason);
            if (!p->contents [i]) {
                *param = "messages";
                snprintf (error, size, "messages[%zu]: %s", i, reason);
                return 400;
            }
            p->n_messages = i + 1;
            p->messages [i].role = (wire_role_t) r;
            p->messages [i].content = p->contents [i];
        }
        p->req.messages = p->messages;
        p->req.messages_count = n;
    }
    else {
        json_t *prompt = json_object_get (root, "prompt");
        if (json_is_array (prompt) && json_array_size (prompt) == 1)
            prompt = json_array_get (prompt, 0);
        if (!json_is_string (prompt)) {
            *param = "prompt";
            snprintf (error, size, "'prompt' must be a string (or an array of one string)");
            return 400;
        }
        p->req.prompt = (char *) json_string_value (prompt);
    }
    //  Sampling. OpenAI's defaults: temperature 1, top_p 1.
    double value;
    bool present;
    p->req.temperature = 1.0f;
    if (s_number (root, "temperature", 0, 2, &value, &present, error, size)) {
        *param = "temperature";
        return 400;
    }
    if (present)
        p->req.temperature = (float) value;
    if (s_number (root, "top_p", 0, 1, &value, &present, error, size)) {
        *param = "top_p";
        return 400;
    }
    if (present)
        p->req.top_p = (float) value;
    const char *max_key = json_object_get (root, "max_completion_tokens")? "max_completion_tokens": "max_tokens";
    json_t *max = json_object_get (root, max_key);
    if (max && !json_is_null (max)) {
        if (!json_is_integer (max) || json_integer_value (max) < 1
        ||  json_integer_value (max) > WIRE_MAX_NEW_TOKENS) {
            *param = max_key;
            snprintf (error, size, "'%s' must be an integer from 1 to %d", max_key, WIRE_MAX_NEW_TOKENS);
            return 400;
        }
        p->req.max_tokens = (uint32_t) json_integer_value (max);
    }
    else
    if (!request->chat)
        p->req.max_tokens = 16;         //  OpenAI's default for /v1/completions
    json_t *seed = json_object_get (root, "seed");
    if (seed && !json_is_null (seed)) {
        if (!json_is_integer (seed) || json_integer_value (seed) < 0) {
            *param = "seed";
            snprintf (error, size, "'seed' must be a non-negative integer");
            return 400;
        }
        p->req.seed = (uint64_t) json_integer_value (seed);
        p->req.has_seed = true;
    }
    json_t *stream = json_object_get (root, "stream");
    if (stream && !json_is_null (stream) && !json_is_boolean (stream)) {
        *param = "stream";
        snprintf (error, size, "'stream' must be a boolean");
        return 400;
    }
    p->req.stream = json_is_true (stream);
    json_t *options = json_object_get (root, "stream_options");
    request->include_usage = json_is_object (options)
                          && json_is_true (json_object_get (options, "include_usage"));
    //  Stop strings: a string or an array of them.
    json_t *stop = json_object_get (root, "stop");
    if (stop && !json_is_null (stop)) {
        size_t n = 0;
        if (json_is_string (stop))
            p->stop [n++] = (char *) json_string_value (stop);
        else
        if (json_is_array (stop) && json_array_size (stop) <= WIRE_MAX_STOP_STRINGS) {
            size_t index;
            json_t *s;
            json_array_foreach (stop, index, s) {
                if (!json_is_string (s))
                    break;
                p->stop [n++] = (char *) json_string_value (s);
            }
            if (n != json_array_size (stop))
                n = SIZE_MAX;
        }
        else
            n = SIZE_MAX;
        if (n == SIZE_MAX) {
            *param = "stop";
            snprintf (error, size, "'stop' must be a string or an array of at most %d strings",
                      WIRE_MAX_STOP_STRINGS);
            return 400;
        }
        p->req.stop = p->stop;
        p->req.stop_count = n;
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Completion replies

static const char *
s_finish_reason (wire_finish_reason_t reason)
{
    return reason == WIRE_FINISH_REASON_LENGTH? "length": "stop";
}

static json_t *
s_usage (const wire_generate_final_t *final, size_t n_tokens)
{
    uint64_t prompt = final->stats? final->stats->prompt_tokens: 0;
    uint64_t completion = final->stats? final->stats->tokens: n_tokens;
    return json_pack ("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t) prompt,
                      "completion_tokens", (json_int_t) completion,
                      "total_tokens", (json_int_t) (prompt + completion));
}

//  The common head of every completion object.
static json_t *
s_completion_head (s_request_t *request, const char *object)
{
    return json_pack ("{s:s, s:s, s:I, s:s, s:n}", "id", request->id, "object", object,
                      "created", (json_int_t) request->created, "model", request->model,
                      "system_fingerprint");
}

//  Appends "data: JSON\n\n" (json taken) to the pending stream output.
static int
s_emit (s_request_t *request, json_t *json)
{
    char *text = json? json_dumps (json, JSON_COMPACT): NULL;
    json_decref (json);
    if (!text)
        return -1;
    size_t n = strlen (text);
    char *grown = realloc (request->pending, request->pending_size + n + 9);
    if (!grown) {
        free (text);
        return -1;
    }
    request->pending = grown;
    memcpy (grown + request->pending_size, "data: ", 6);
    memcpy (grown + request->pending_size + 6, text, n);
    memcpy (grown + request->pending_size + 6 + n, "\n\n", 3);
    request->pending_size += n + 8;
    free (text);
    return 0;
}

static int
s_emit_done (s_request_t *request)
{
    static const char done [] = "data: [DONE]\n\n";
    char *grown = realloc (request->pending, request->pending_size + sizeof done);
    if (!grown)
        return -1;
    request->pending = grown;
    memcpy (grown + request->pending_size, done, sizeof done);
    request->pending_size += sizeof done - 1;
    request->finished = true;
    return 0;
}

//  One streamed chunk: text (may be NULL) and finish_reason (NULL: more).
static json_t *
s_chunk (s_request_t *request, const char *text, const char *finish, bool role)
{
    json_t *chunk = s_completion_head (request, request->chat? "chat.completion.chunk": "text_completion");
    json_t *choice = json_pack ("{s:i, s:n}", "index", 0, "logprobs");
    if (!choice || json_object_set_new (choice, "finish_reason",
                                        finish? json_string (finish): json_null ())) {
        json_decref (chunk);
        json_decref (choice);
        return NULL;
    }
    if (request->chat) {
        json_t *delta = json_object ();
        if (role)
            json_object_set_new (delta, "role", json_string ("assistant"));
        if (text)
            json_object_set_new (delta, "content", json_string (text));
        json_object_set_new (choice, "delta", delta);
    }
    else
        json_object_set_new (choice, "text", json_string (text? text: ""));
    json_object_set_new (chunk, "choices", json_pack ("[o]", choice));
    return chunk;
}

//  Turns one reply of the mesh into SSE events. Takes the reply.
static void
s_stream_reply (s_request_t *request, zmsg_t **reply_p, int command)
{
    zmsg_t *reply = *reply_p;
    *reply_p = NULL;
    zframe_t *frame = reply? zmsg_first (reply): NULL;
    unsigned int status;
    const char *code;
    char error [1024];
    wire_err_t err;
    if (!reply && mdp_client_lost (request->client)) {
        s_emit (request, s_error_json (502, NULL, "bad_gateway",
                                       "lost the connection to the mesh mid-generation; "
                                       "the text streamed so far is incomplete"));
        s_emit_done (request);
        return;
    }
    if (!reply) {
        snprintf (error, sizeof error, "no reply from the mesh within %d ms",
                  request->gateway->timeout_ms);
        s_emit (request, s_error_json (504, NULL, "timeout", error));
        s_emit_done (request);
        return;
    }
    if (s_mesh_error (frame, &status, &code, error, sizeof error)) {
        s_emit (request, s_error_json (status, NULL, code, error));
        s_emit_done (request);
    }
    else
    if (command == MDPC_PARTIAL) {
        wire_generate_partial_t part;
        if (wire_decode_frame (&wire_generate_partial_desc, frame, &part, &err)) {
            s_emit (request, s_error_json (502, NULL, "bad_gateway", err.text));
            s_emit_done (request);
        }
        else {
            request->n_tokens += part.tokens_count;
            if (part.text && *part.text)
                s_emit (request, s_chunk (request, part.text, NULL, false));
            wire_msg_free (&wire_generate_partial_desc, &part);
        }
    }
    else {
        wire_generate_final_t final;
        if (wire_decode_frame (&wire_generate_final_desc, frame, &final, &err))
            s_emit (request, s_error_json (502, NULL, "bad_gateway", err.text));
        else {
            request->n_tokens += final.tokens_count;
            if (final.text && *final.text)
                s_emit (request, s_chunk (request, final.text, NULL, false));
            if (final.finish_reason == WIRE_FINISH_REASON_ERROR)
                s_emit (request, s_error_json (500, NULL, "generation_error",
                        "generation ended with an error in the mesh (see the edge-draft log)"));
            else
                s_emit (request, s_chunk (request, NULL, s_finish_reason (final.finish_reason), false));
            if (request->include_usage) {
                json_t *chunk = s_completion_head (request, request->chat?
                                                   "chat.completion.chunk": "text_completion");
                json_object_set_new (chunk, "choices", json_array ());
                json_object_set_new (chunk, "usage", s_usage (&final, request->n_tokens));
                s_emit (request, chunk);
            }
            wire_msg_free (&wire_generate_final_desc, &final);
        }
        s_emit_done (request);
    }
    zmsg_destroy (&reply);
}

//  The next reply of request's generation, waiting up to the gateway's
//  timeout. Call it only while nothing of the answer went to the HTTP
//  client: a broker restart loses the request with the connection, and
//  then this sends it again (S_RESENDS times per HTTP request, backing
//  off) and waits for the new attempt, setting *restarted (if not NULL)
//  so that the caller drops what the lost attempt gave. Returns the reply
//  (caller owns it) and its MDP command in *command_p, or NULL: timeout,
//  or the broker is still gone (s_respond_no_reply tells which).
static zmsg_t *
s_recv_resending (s_request_t *request, int *command_p, bool *restarted)
{
    int timeout = request->gateway->timeout_ms;
    zmsg_t *reply = mdp_client_recv (request->client, timeout, command_p, NULL);
    while (!reply && mdp_client_lost (request->client) && request->resends < S_RESENDS) {
        request->resends++;
        zsys_info ("gateway: %s lost the broker, sending the request again (%d/%d)",
                   request->id, request->resends, S_RESENDS);
        zclock_sleep (250 * request->resends);
        if (mdp_client_resend (request->client))
            break;
        if (restarted)
            *restarted = true;
        reply = mdp_client_recv (request->client, timeout, command_p, NULL);
    }
    return reply;
}

//  Answers a request whose reply did not come (s_recv_resending gave NULL).
static enum MHD_Result
s_respond_no_reply (struct MHD_Connection *connection, s_request_t *request)
{
    if (mdp_client_lost (request->client))
        return s_respond_error (connection, 502, NULL, "bad_gateway",
                                "lost the connection to the broker at %s", request->gateway->broker);
    return s_respond_error (connection, 504, NULL, "timeout",
                            "no reply from the mesh within %d ms", request->gateway->timeout_ms);
}

//  libmicrohttpd's content reader: SSE bytes of one stream. Blocks on the
//  MDP socket (this connection's own thread) until the next reply.
static ssize_t
s_stream_reader (void *cls, uint64_t pos, char *buf, size_t max)
{
    s_request_t *request = (s_request_t *) cls;
    while (request->pending_pos == request->pending_size) {
        request->pending_pos = request->pending_size = 0;
        if (request->finished)
            return MHD_CONTENT_READER_END_OF_STREAM;
        int command = MDPC_FINAL;
        zmsg_t *reply = request->first;
        request->first = NULL;
        if (reply)
            command = request->first_command;
        else
            reply = mdp_client_recv (request->client, request->gateway->timeout_ms, &command, NULL);
        s_stream_reply (request, &reply, command);
    }
    size_t n = request->pending_size - request->pending_pos;
    if (n > max)
        n = max;
    memcpy (buf, request->pending + request->pending_pos, n);
    request->pending_pos += n;
    return (ssize_t) n;
}

//  True when the HTTP client has closed its end (it sends nothing after
//  the request, so a readable hang-up means it left).
static bool
s_client_gone (struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info (connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!info)
        return false;
    struct pollfd p = { info->connect_fd, POLLRDHUP, 0 };
    return poll (&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

//  Collects the whole answer (non-streaming) and responds.
static enum MHD_Result
s_respond_whole (struct MHD_Connection *connection, s_request_t *request)
{
    char *text = NULL;
    size_t size = 0;
    enum MHD_Result rc;
    zmsg_t *reply = request->first;
    int command = request->first_command;
    request->first = NULL;
    while (true) {
        if (!reply) {
            rc = s_respond_no_reply (connection, request);
            goto done;
        }
        unsigned int status;
        const char *code;
        char error [1024];
        wire_err_t err;
        zframe_t *frame = zmsg_first (reply);
        if (s_mesh_error (frame, &status, &code, error, sizeof error)) {
            rc = s_respond_error (connection, status, NULL, code, "%s", error);
            goto done;
        }
        bool partial = command == MDPC_PARTIAL;
        wire_generate_partial_t part;
        wire_generate_final_t final;
        const wire_desc_t *desc = partial? &wire_generate_partial_desc: &wire_generate_final_desc;
        if (wire_decode_frame (desc, frame, partial? (void *) &part: (void *) &final, &err)) {
            rc = s_respond_error (connection, 502, NULL, "bad_gateway",
                                  "undecodable reply from the mesh: %s", err.text);
            goto done;
        }
        const char *piece = partial? part.text: final.text;
        size_t n = piece? strlen (piece): 0;
        char *grown = realloc (text, size + n + 1);
        if (grown) {
            text = grown;
            memcpy (text + size, piece? piece: "", n);
            size += n;
            text [size] = 0;
        }
        request->n_tokens += partial? part.tokens_count: final.tokens_count;
        if (partial) {
            wire_msg_free (&wire_generate_partial_desc, &part);
            zmsg_destroy (&reply);
            if (s_client_gone (connection)) {
                //  Nobody to answer: drop the connection; freeing the
                //  request closes its MDP client, which cancels the work.
                metrics_count (request->gateway->metrics, "generations_cancelled_total",
                               "reason=client_gone", 1);
                s_queued_status = 499;    //  for the metrics: "client closed request"
                rc = MHD_NO;
                goto done;
            }
            //  Nothing was sent to the HTTP client yet: a lost request
            //  starts over, and what the lost attempt gave is dropped.
            bool restarted = false;
            reply = s_recv_resending (request, &command, &restarted);
            if (restarted) {
                size = 0;
                request->n_tokens = 0;
            }
            if (grown)
                continue;
            rc = s_respond_error (connection, 500, NULL, NULL, "out of memory");
            goto done;
        }
        if (!grown || final.finish_reason == WIRE_FINISH_REASON_ERROR) {
            wire_msg_free (&wire_generate_final_desc, &final);
            rc = s_respond_error (connection, 500, NULL, "generation_error", grown?
                                  "generation ended with an error in the mesh (see the edge-draft log)":
                                  "out of memory");
            goto done;
        }
        json_t *body = s_completion_head (request, request->chat? "chat.completion": "text_completion");
        json_t *choice = request->chat?
            json_pack ("{s:i, s:{s:s, s:s, s:n}, s:n, s:s}", "index", 0,
                       "message", "role", "assistant", "content", text, "refusal",
                       "logprobs", "finish_reason", s_finish_reason (final.finish_reason)):
            json_pack ("{s:i, s:s, s:n, s:s}", "index", 0, "text", text,
                       "logprobs", "finish_reason", s_finish_reason (final.finish_reason));
        if (body) {
            json_object_set_new (body, "choices", json_pack ("[o]", choice));
            json_object_set_new (body, "usage", s_usage (&final, request->n_tokens));
        }
        else
            json_decref (choice);
        wire_msg_free (&wire_generate_final_desc, &final);
        rc = s_respond_json (connection, MHD_HTTP_OK, body);
        goto done;
    }
done:
    zmsg_destroy (&reply);
    free (text);
    return rc;
}

//  POST /v1/chat/completions and /v1/completions.
static enum MHD_Result
s_completion (struct MHD_Connection *connection, s_request_t *request, bool chat)
{
    gateway_t *self = request->gateway;
    request->chat = chat;
    if (s_draining (self))
        return s_respond_error (connection, 503, NULL, "shutting_down",
                                "the gateway is shutting down; retry on another instance");
    if (request->too_large)
        return s_respond_error (connection, 413, NULL, "request_too_large",
                                "the request body is larger than %d bytes", S_MAX_BODY);
    json_error_t jerr;
    json_t *root = json_loadb (request->body? request->body: "", request->size, 0, &jerr);
    if (!root)
        return s_respond_error (connection, 400, NULL, "invalid_json",
                                "the request body is not valid JSON: %s (line %d, column %d)",
                                jerr.text, jerr.line, jerr.column);
    s_parsed_t parsed = { 0 };
    const char *param = NULL;
    char error [512] = "";
    enum MHD_Result rc;
    uint8_t *data = NULL;
    size_t size = 0;
    unsigned int status = s_parse (request, root, &parsed, &param, error, sizeof error);
    if (status) {
        rc = s_respond_error (connection, status, param, status == 400 && strstr (error, "not supported")?
                              "unsupported_parameter": NULL, "%s", error);
        goto done;
    }
    wire_err_t err;
    //  The mesh always streams to us, also when the HTTP client waits for
    //  the whole answer: PARTIALs let the broker notice (and cancel) when
    //  we drop a request whose client went away (s_respond_whole).
    bool stream = parsed.req.stream;
    parsed.req.stream = true;
    if (wire_encode (&wire_generate_desc, &parsed.req, &data, &size, &err)) {
        rc = s_respond_error (connection, 400, NULL, NULL, "invalid request: %s", err.text);
        goto done;
    }
    snprintf (request->id, sizeof request->id, "%s-%" PRIx64 "%08" PRIx64, chat? "chatcmpl": "cmpl",
              (uint64_t) zclock_time (), (uint64_t) atomic_fetch_add (&self->next_id, 1));
    request->created = (int64_t) time (NULL);
    request->client = mdp_client_new (self->broker);
    if (request->client)
        mdp_client_set_keep_for_resend (request->client, true);     //  s_recv_resending
    if (!request->client || mdp_client_send_mem (request->client, "generate", data, size)) {
        rc = s_respond_error (connection, 502, NULL, "bad_gateway",
                              "cannot send to the broker at %s", self->broker);
        goto done;
    }
    request->counted = true;
    atomic_fetch_add (&self->in_flight, 1);
    if (self->verbose)
        zsys_info ("gateway: %s %s%s", request->id, chat? "chat": "completion", stream? " (stream)": "");
    //  The first reply decides the HTTP status. Nothing was streamed yet,
    //  so a request lost with a restarting broker is sent again.
    request->first = s_recv_resending (request, &request->first_command, NULL);
    if (!request->first) {
        rc = s_respond_no_reply (connection, request);
        goto done;
    }
    unsigned int mesh_status;
    const char *code;
    if (s_mesh_error (zmsg_first (request->first), &mesh_status, &code, error, sizeof error)) {
        rc = s_respond_error (connection, mesh_status, NULL, code, "%s", error);
        goto done;
    }
    if (!stream) {
        rc = s_respond_whole (connection, request);
        goto done;
    }
    //  The role chunk goes first, as OpenAI's does.
    if (chat)
        s_emit (request, s_chunk (request, "", NULL, true));
    struct MHD_Response *response = MHD_create_response_from_callback (
        MHD_SIZE_UNKNOWN, 4096, s_stream_reader, request, NULL);
    if (!response) {
        rc = MHD_NO;
        goto done;
    }
    MHD_add_response_header (response, "Content-Type", "text/event-stream");
    MHD_add_response_header (response, "Cache-Control", "no-cache");
    s_queued_status = MHD_HTTP_OK;
    request->streaming = true;
    rc = MHD_queue_response (connection, MHD_HTTP_OK, response);
    MHD_destroy_response (response);
done:
    free (data);
    s_parsed_free (&parsed);
    json_decref (root);
    return rc;
}

//  ---------------------------------------------------------------------
//  HTTP

static enum MHD_Result
s_models (struct MHD_Connection *connection, gateway_t *self, const char *id)
{
    json_t *model = json_pack ("{s:s, s:s, s:I, s:s}", "id", self->model_name, "object", "model",
                               "created", (json_int_t) self->created, "owned_by", "splitmesh");
    if (id) {
        if (streq (id, self->model_name))
            return s_respond_json (connection, MHD_HTTP_OK, model);
        json_decref (model);
        return s_respond_error (connection, 404, "model", "model_not_found",
                                "the model '%.200s' does not exist (this gateway serves '%s')",
                                id, self->model_name);
    }
    return s_respond_json (connection, MHD_HTTP_OK,
                           json_pack ("{s:s, s:[o]}", "object", "list", "data", model));
}

static enum MHD_Result
s_http_route (void *cls, struct MHD_Connection *connection, const char *url,
              const char *method, const char *version, const char *upload_data,
              size_t *upload_data_size, void **con_cls)
{
    gateway_t *self = (gateway_t *) cls;
    s_request_t *request = (s_request_t *) *con_cls;
    if (!request) {
        request = calloc (1, sizeof *request);
        if (!request)
            return MHD_NO;
        request->gateway = self;
        *con_cls = request;
        return MHD_YES;
    }
    if (*upload_data_size) {
        //  Keep reading after the limit so the 413 answer is not cut off.
        if (!request->too_large && request->size + *upload_data_size <= S_MAX_BODY) {
            char *grown = realloc (request->body, request->size + *upload_data_size + 1);
            if (grown) {
                request->body = grown;
                memcpy (grown + request->size, upload_data, *upload_data_size);
                request->size += *upload_data_size;
                grown [request->size] = 0;
            }
            else
                request->too_large = true;
        }
        else
            request->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (self->verbose)
        zsys_info ("gateway: %s %s", method, url);
    bool get = streq (method, MHD_HTTP_METHOD_GET) || streq (method, MHD_HTTP_METHOD_HEAD);
    bool post = streq (method, MHD_HTTP_METHOD_POST);
    if (streq (url, "/health")) {
        if (!get)
            return s_respond_error (connection, 405, NULL, NULL, "use GET for /health");
        if (s_draining (self))
            return s_respond_json (connection, 503, json_pack ("{s:s, s:s}", "status", "draining",
                                   "reason", "the gateway is shutting down"));
        if (!s_mesh_ready (self))
            return s_respond_json (connection, 503, json_pack ("{s:s, s:s}", "status", "unavailable",
                                   "reason", "the mesh has no `generate` worker yet"));
        return s_respond_json (connection, MHD_HTTP_OK, json_pack ("{s:s}", "status", "ok"));
    }
    if (streq (url, "/v1/models") || strncmp (url, "/v1/models/", 11) == 0) {
        if (!get)
            return s_respond_error (connection, 405, NULL, NULL, "use GET for %s", url);
        return s_models (connection, self, url [10] == '/'? url + 11: NULL);
    }
    bool chat = streq (url, "/v1/chat/completions");
    if (chat || streq (url, "/v1/completions")) {
        if (!post)
            return s_respond_error (connection, 405, NULL, NULL, "use POST for %s", url);
        return s_completion (connection, request, chat);
    }
    return s_respond_error (connection, 404, NULL, "unknown_url",
                            "unknown URL %.200s (try /v1/chat/completions, /v1/completions, "
                            "/v1/models or /health)", url);
}

//  MHD's request handler: routes (s_http_route), then remembers the
//  endpoint and the status queued, for the metrics.
static enum MHD_Result
s_http_handler (void *cls, struct MHD_Connection *connection, const char *url,
                const char *method, const char *version, const char *upload_data,
                size_t *upload_data_size, void **con_cls)
{
    s_queued_status = 0;
    enum MHD_Result rc = s_http_route (cls, connection, url, method, version, upload_data,
                                       upload_data_size, con_cls);
    s_request_t *request = (s_request_t *) *con_cls;
    if (request && s_queued_status) {
        request->status = s_queued_status;
        request->endpoint = streq (url, "/v1/chat/completions")? "chat"
                          : streq (url, "/v1/completions")? "completions"
                          : strncmp (url, "/v1/models", 10) == 0? "models"
                          : streq (url, "/health")? "health": "other";
    }
    return rc;
}

//  Counts the request (docs/metrics.md) and frees it. A stream that did
//  not reach [DONE] was cut by the client: destroying the request closes
//  its MDP client, and the broker then cancels the generation.
static void
s_request_completed (void *cls, struct MHD_Connection *connection, void **con_cls,
                     enum MHD_RequestTerminationCode toe)
{
    gateway_t *self = (gateway_t *) cls;
    s_request_t *request = (s_request_t *) *con_cls;
    if (request && request->status) {
        char labels [64];
        snprintf (labels, sizeof labels, "endpoint=%s,status=%u", request->endpoint, request->status);
        metrics_count (self->metrics, "gateway_requests_total", labels, 1);
        if (streq (request->endpoint, "chat") || streq (request->endpoint, "completions")) {
            snprintf (labels, sizeof labels, "status=%u", request->status);
            metrics_count (self->metrics, "requests_total", labels, 1);
            if (request->status >= 400)
                metrics_count (self->metrics, "errors_total", labels, 1);
        }
        bool cut = request->streaming && !request->finished
                && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
        if (cut) {
            metrics_count (self->metrics, "generations_cancelled_total", "reason=client_gone", 1);
            if (self->verbose)
                zsys_info ("gateway: %s: the client closed the stream; cancelling", request->id);
        }
    }
    s_request_destroy (&request);
    *con_cls = NULL;
}

//  ---------------------------------------------------------------------
//  Public API

gateway_t *
gateway_new (const gateway_config_t *config)
{
    assert (config);
    if (!config->broker || !*config->broker) {
        zsys_error ("gateway: no broker endpoint");
        return NULL;
    }
    gateway_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->broker = strdup (config->broker);
    self->http_address = strdup (config->http_address? config->http_address: "127.0.0.1");
    self->model_name = strdup (config->model_name && *config->model_name?
                               config->model_name: "splitmesh");
    self->timeout_ms = config->timeout_ms > 0? config->timeout_ms: 60000;
    self->verbose = config->verbose;
    self->created = (int64_t) time (NULL);
    atomic_init (&self->draining, false);
    atomic_init (&self->in_flight, 0);
    atomic_init (&self->next_id, 1);
    if (!self->broker || !self->http_address || !self->model_name)
        goto fail;
    self->metrics = metrics_new ("gateway", config->instance,
                                 config->telemetry && *config->telemetry? config->telemetry: NULL);
    struct sockaddr_in address;
    memset (&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons ((uint16_t) config->http_port);
    if (config->http_port < 0 || config->http_port > 65535
    ||  inet_pton (AF_INET, self->http_address, &address.sin_addr) != 1) {
        zsys_error ("gateway: bad HTTP address %s:%d", self->http_address, config->http_port);
        goto fail;
    }
    self->httpd = MHD_start_daemon (
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        (uint16_t) config->http_port, NULL, NULL, s_http_handler, self,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &address,
        MHD_OPTION_NOTIFY_COMPLETED, s_request_completed, self,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 120,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 256,
        MHD_OPTION_END);
    if (!self->httpd) {
        zsys_error ("gateway: cannot serve HTTP on %s:%d", self->http_address, config->http_port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info (self->httpd, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info? info->port: config->http_port;
    return self;
fail:
    gateway_destroy (&self);
    return NULL;
}

void
gateway_destroy (gateway_t **self_p)
{
    assert (self_p);
    gateway_t *self = *self_p;
    if (!self)
        return;
    if (self->httpd)
        MHD_stop_daemon (self->httpd);      //  joins every connection thread
    metrics_destroy (&self->metrics);
    free (self->broker);
    free (self->http_address);
    free (self->model_name);
    free (self);
    *self_p = NULL;
}

int
gateway_port (gateway_t *self)
{
    assert (self);
    return self->port;
}

void
gateway_drain (gateway_t *self)
{
    assert (self);
    atomic_store (&self->draining, true);
}

int
gateway_in_flight (gateway_t *self)
{
    assert (self);
    return atomic_load (&self->in_flight);
}
