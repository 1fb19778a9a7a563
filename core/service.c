/*  service.c: options and the MDP request loop shared by the model-serving
    services (tokenizer, split-prefix, cloud-target); see service.h.
*/
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "activations.h"
#include "mdp_worker.h"
#include "service.h"
#include "session_store.h"

static const char *
s_env (const char *name)
{
    const char *value = getenv (name);
    return value && *value? value: NULL;
}

//  Parses an integer in [lo, hi]; returns 0 or -1.
static int
s_int (const char *text, long lo, long hi, int *out)
{
    char *end = NULL;
    long v = strtol (text, &end, 10);
    if (!end || end == text || *end || v < lo || v > hi)
        return -1;
    *out = (int) v;
    return 0;
}

static void
s_usage (FILE *out, const char *prog, int extra)
{
    fprintf (out,
        "usage: %s [options]\n"
        "  --broker EP         MDP broker endpoint             [SPLITMESH_BROKER]\n"
        "  --telemetry EP      telemetry XSUB endpoint          [SPLITMESH_TELEMETRY]\n"
        "  --model PATH        GGUF model (default " SERVICE_DEFAULT_MODEL ") [SPLITMESH_MODEL]\n"
        "  --threads N         compute threads (default 2)      [SPLITMESH_THREADS]\n"
        "  --format F          weights: f32, w8, w4             [SPLITMESH_FORMAT]\n"
        "  --instance NAME     instance name for logs/metrics   [SPLITMESH_INSTANCE]\n"
        "  --heartbeat-ms N    MDP heartbeat interval\n"
        "  -v, --verbose       log every request\n", prog);
    if (extra & SERVICE_OPT_SPLIT)
        fprintf (out,
        "  --split L           split depth: layers [0, L) on the device [SPLITMESH_SPLIT]\n"
        "  --ctx N             positions per session (default min(model's, 2048))\n"
        "  --max-sessions N    sessions kept; the least recently used is evicted (default 16)\n");
    if (extra & SERVICE_OPT_ACT_DTYPE)
        fprintf (out,
        "  --act-dtype D       activations on the wire: int8 (default), fp16, fp32\n");
    if (extra & SERVICE_OPT_STAGE)
        fprintf (out,
        "  --stage-only        load only layers [L, N) and the head (no privacy `none`)\n");
    fprintf (out, "  -h, --help\n");
}

int
service_config_parse (service_config_t *config, int argc, char **argv,
                      const char *prog, int extra, qfmt_t default_format)
{
    memset (config, 0, sizeof *config);
    config->threads = 2;
    config->format = default_format;
    config->max_sessions = 16;
    config->act_dtype = WIRE_DTYPE_INT8;
    config->split = -1;
    config->broker = s_env ("SPLITMESH_BROKER");
    config->telemetry = s_env ("SPLITMESH_TELEMETRY");
    config->model = s_env ("SPLITMESH_MODEL");
    config->instance = s_env ("SPLITMESH_INSTANCE");
    const char *threads = s_env ("SPLITMESH_THREADS");
    const char *format = s_env ("SPLITMESH_FORMAT");
    const char *split = (extra & SERVICE_OPT_SPLIT)? s_env ("SPLITMESH_SPLIT"): NULL;
    const char *heartbeat = NULL, *ctx = NULL, *sessions = NULL, *dtype = NULL;

    static const struct option longopts [] = {
        { "broker", required_argument, NULL, 'b' },
        { "telemetry", required_argument, NULL, 'T' },
        { "model", required_argument, NULL, 'm' },
        { "threads", required_argument, NULL, 't' },
        { "format", required_argument, NULL, 'f' },
        { "instance", required_argument, NULL, 'i' },
        { "heartbeat-ms", required_argument, NULL, 'H' },
        { "split", required_argument, NULL, 'L' },
        { "ctx", required_argument, NULL, 'c' },
        { "max-sessions", required_argument, NULL, 'S' },
        { "act-dtype", required_argument, NULL, 'd' },
        { "stage-only", no_argument, NULL, 'O' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, ":vh", longopts, NULL)) != -1) {
        if (((opt == 'L' || opt == 'c' || opt == 'S') && !(extra & SERVICE_OPT_SPLIT))
        ||  (opt == 'd' && !(extra & SERVICE_OPT_ACT_DTYPE))
        ||  (opt == 'O' && !(extra & SERVICE_OPT_STAGE)))
            opt = '?';
        switch (opt) {
            case 'b': config->broker = optarg; break;
            case 'T': config->telemetry = optarg; break;
            case 'm': config->model = optarg; break;
            case 't': threads = optarg; break;
            case 'f': format = optarg; break;
            case 'i': config->instance = optarg; break;
            case 'H': heartbeat = optarg; break;
            case 'L': split = optarg; break;
            case 'c': ctx = optarg; break;
            case 'S': sessions = optarg; break;
            case 'd': dtype = optarg; break;
            case 'O': config->stage_only = true; break;
            case 'v': config->verbose = true; break;
            case 'h': s_usage (stdout, prog, extra); return 1;
            case ':':
                fprintf (stderr, "%s: %s needs a value\n", prog, argv [optind - 1]);
                return 2;
            default:
                fprintf (stderr, "%s: unknown option '%s'\n", prog, argv [optind - 1]);
                s_usage (stderr, prog, extra);
                return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "%s: unexpected argument '%s'\n", prog, argv [optind]);
        return 2;
    }
    if (threads && s_int (threads, 1, 256, &config->threads)) {
        fprintf (stderr, "%s: --threads needs 1..256, got '%s'\n", prog, threads);
        return 2;
    }
    if (format && qfmt_parse (format, &config->format)) {
        fprintf (stderr, "%s: unknown --format '%s' (f32, w8, w4)\n", prog, format);
        return 2;
    }
    if (heartbeat && s_int (heartbeat, 10, 600000, &config->heartbeat_ms)) {
        fprintf (stderr, "%s: --heartbeat-ms needs 10..600000, got '%s'\n", prog, heartbeat);
        return 2;
    }
    if (split && s_int (split, 0, 65535, &config->split)) {
        fprintf (stderr, "%s: --split needs a layer count >= 0, got '%s'\n", prog, split);
        return 2;
    }
    if (ctx && s_int (ctx, 1, WIRE_MAX_POSITIONS, &config->ctx)) {
        fprintf (stderr, "%s: --ctx needs 1..%d, got '%s'\n", prog, WIRE_MAX_POSITIONS, ctx);
        return 2;
    }
    if (sessions && s_int (sessions, 1, 100000, &config->max_sessions)) {
        fprintf (stderr, "%s: --max-sessions needs 1..100000, got '%s'\n", prog, sessions);
        return 2;
    }
    if (dtype && activations_dtype_parse (dtype, &config->act_dtype)) {
        fprintf (stderr, "%s: unknown --act-dtype '%s' (int8, fp16, fp32)\n", prog, dtype);
        return 2;
    }
    if (!config->broker) {
        fprintf (stderr, "%s: --broker (or SPLITMESH_BROKER) is required\n", prog);
        return 2;
    }
    if ((extra & SERVICE_OPT_SPLIT) && config->split < 0) {
        fprintf (stderr, "%s: --split (or SPLITMESH_SPLIT) is required\n", prog);
        return 2;
    }
    if (!config->model)
        config->model = SERVICE_DEFAULT_MODEL;
    return 0;
}

zframe_t *
service_error (int status, const char *format, ...)
{
    char text [1024];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    return wire_error_frame (status, text, -1);
}

zframe_t *
service_encode (const wire_desc_t *desc, const void *msg)
{
    wire_err_t err = { 0 };
    zframe_t *frame = wire_encode_frame (desc, msg, &err);
    if (!frame)
        frame = service_error (500, "encoding %s: %s", desc->name,
                               err.status? err.text: "out of memory");
    return frame;
}

int
service_stage_ctx (const service_config_t *config, int n_layers, int context_length,
                   int *ctx, char *err, size_t err_size)
{
    *ctx = config->ctx? config->ctx: context_length < 2048? context_length: 2048;
    if (config->split > n_layers) {
        snprintf (err, err_size, "--split %d exceeds the model's %d layers", config->split, n_layers);
        return -1;
    }
    if (*ctx > context_length) {
        snprintf (err, err_size, "--ctx %d exceeds the model's context %d", *ctx, context_length);
        return -1;
    }
    return 0;
}

zframe_t *
service_session_close (session_store_t *sessions, zframe_t *body)
{
    wire_session_close_t req;
    wire_err_t err = { 0 };
    if (wire_decode_frame (&wire_session_close_desc, body, &req, &err))
        return wire_error_frame_from (&err);
    session_store_remove (sessions, req.session);
    wire_ack_t out;
    wire_msg_init (&wire_ack_desc, &out);
    out.session = req.session;
    zframe_t *reply = service_encode (&wire_ack_desc, &out);
    wire_msg_free (&wire_session_close_desc, &req);
    return reply;
}

int
service_session_insert (session_store_t *sessions, const char *service, const char *id, void *item)
{
    char evicted [WIRE_MAX_SESSION_BYTES + 1];
    if (session_store_insert (sessions, id, item, evicted, sizeof evicted))
        return -1;
    if (*evicted)
        zsys_info ("%s: evicted session '%s' (least recently used; max %zu sessions)",
                   service, evicted, session_store_max (sessions));
    return 0;
}

zframe_t *
service_check (zmsg_t *request, const char *service, wire_peek_t *peek)
{
    if (zmsg_size (request) != 1)
        return service_error (400, "%s: a request body is one MessagePack frame, got %zu frames",
                              service, zmsg_size (request));
    zframe_t *body = zmsg_first (request);
    wire_err_t err = { 0 };
    if (zframe_size (body) > WIRE_MAX_FRAME_BYTES)
        return service_error (413, "%s: body of %zu bytes exceeds max_frame_bytes %d",
                              service, zframe_size (body), WIRE_MAX_FRAME_BYTES);
    if (wire_peek (zframe_data (body), zframe_size (body), peek, &err))
        return wire_error_frame_from (&err);
    if (peek->version != -1 && peek->version != 1)
        return service_error (400, "%s: unknown schema version %d", service, peek->version);
    return NULL;
}

void
service_count_reply (metrics_t *metrics, zframe_t *reply)
{
    if (!metrics_enabled (metrics) || !reply)
        return;
    wire_peek_t peek;
    wire_err_t err = { 0 };
    int status = 200;
    if (wire_peek (zframe_data (reply), zframe_size (reply), &peek, &err) == 0 && peek.status)
        status = peek.status;
    char labels [32];
    snprintf (labels, sizeof labels, "status=%d", status);
    metrics_count (metrics, "requests_total", labels, 1);
    //  The schema says which statuses are failures (409 stale is not).
    if (wire_status_is_error (status))
        metrics_count (metrics, "errors_total", labels, 1);
}

//  Answers one request: exactly one reply frame, whatever the body.
static zframe_t *
s_handle (zmsg_t *request, service_handler_fn *handler, void *state, const char *service)
{
    wire_peek_t peek;
    zframe_t *reply = service_check (request, service, &peek);
    if (reply)
        return reply;
    reply = handler (state, zmsg_first (request), &peek);
    return reply? reply: service_error (500, "%s: out of memory", service);
}

void
service_actor_run (zsock_t *pipe, const service_config_t *config, const char *service,
                   const char *setup_err, service_handler_fn *handler, void *state,
                   metrics_t *metrics)
{
    mdp_worker_t *worker = NULL;
    char err [512];
    snprintf (err, sizeof err, "%s", setup_err? setup_err: "");
    if (!*err) {
        mdp_worker_options_t options = { 0 };
        options.heartbeat_ms = config->heartbeat_ms;
        options.verbose = config->verbose;
        worker = mdp_worker_new (config->broker, service, &options);
        if (!worker)
            snprintf (err, sizeof err, "cannot register service '%s' with broker '%s'",
                      service, config->broker);
    }
    zsock_signal (pipe, 0);
    zpoller_t *poller = worker? zpoller_new (pipe, mdp_worker_sock (worker), NULL)
                              : zpoller_new (pipe, NULL);
    while (poller) {
        zsock_t *which = (zsock_t *) zpoller_wait (poller, -1);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            if (command && streq (command, "ERROR"))
                zstr_send (pipe, err);
            zstr_free (&command);
            if (term)
                break;
        }
        else
        if (which && worker) {
            zframe_t *client = NULL;
            zmsg_t *request = mdp_worker_recv (worker, 0, &client);
            if (!request)
                continue;
            int64_t start = zclock_usecs ();
            zframe_t *reply = s_handle (request, handler, state, service);
            if (config->verbose)
                zsys_info ("%s: %zu-byte request -> %zu-byte reply in %.2f ms", service,
                           zframe_size (zmsg_first (request)), reply? zframe_size (reply): 0,
                           (zclock_usecs () - start) / 1000.0);
            zmsg_destroy (&request);
            service_count_reply (metrics, reply);
            zmsg_t *msg = zmsg_new ();
            if (reply)
                zmsg_append (msg, &reply);
            mdp_worker_send_final (worker, client, &msg);
            zmsg_destroy (&msg);
            zframe_destroy (&client);
        }
        else
        if (zpoller_terminated (poller))
            break;
    }
    zpoller_destroy (&poller);
    mdp_worker_destroy (&worker);
}

zactor_t *
service_actor_new (zactor_fn *actor, void *args, const char *name)
{
    zactor_t *self = zactor_new (actor, args);
    if (!self)
        return NULL;
    zstr_send (self, "ERROR");
    char *err = zstr_recv (self);
    if (!err || *err) {
        zsys_error ("%s: %s", name, err? err: "interrupted");
        zactor_destroy (&self);
    }
    zstr_free (&err);
    return self;
}

int
service_main_run (zactor_fn *actor, void *args, const char *name)
{
    zactor_t *self = service_actor_new (actor, args, name);
    if (!self)
        return 1;
    printf ("%s: ready\n", name);
    fflush (stdout);
    //  CZMQ's signal handler sets zsys_interrupted on SIGINT/SIGTERM.
    while (!zsys_interrupted) {
        zmq_pollitem_t item = { zsock_resolve (zactor_sock (self)), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 200) == -1)
            break;
    }
    zactor_destroy (&self);
    return 0;
}
