/*  test_overload_mesh.c: flood every pipeline service of a real mesh.

    Starts `splitmesh up` on a tiny random-weight model (`splitmesh
    tiny-model`, so no download is needed) and floods, one service after
    the other, tokenizer, split-prefix ("prefix"), cloud-target ("target",
    on the cloud broker) and edge-draft ("generate") with N requests each,
    far more than the brokers queue (1000 per service) or the services
    answer in the time. Each request must get an answer within a bound: the
    service's reply or an error reply (429 busy from a full queue, 504
    expired, or the service's own 4xx/5xx); none may go unanswered. VmRSS
    of every mesh process (from /proc/<pid>/status) must stay under a
    bound, and every process must still be running and serving afterwards.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>
#include "codec.h"
#include "schema_gen.h"
#include "mdp_common.h"
#include "sm_cli.h"
#include "sm_proc.h"

#define S_REQUESTS      2000        //  per service
#define S_ANSWER_MS     60000       //  all answers of one flood within this
#define S_RSS_LIMIT_KB  (256 * 1024)

static char *s_dir;
static char s_run [PATH_MAX];
static char s_model [PATH_MAX];
static char s_broker [700], s_cloud [200];
static int s_pids [40];
static char s_names [40][64];
static int s_nprocs;

static void
s_init (void)
{
    s_dir = sm_tmpdir_new ("overload_mesh");
    cr_assert_not_null (s_dir);
    snprintf (s_run, sizeof s_run, "%s/run", s_dir);
    snprintf (s_model, sizeof s_model, "%s/tiny.gguf", s_dir);
}

static void
s_fini (void)
{
    sm_mesh_teardown (s_run);
    sm_proc_kill_all ();
    if (getenv ("SPLITMESH_KEEP_TMP"))
        fprintf (stderr, "run dir kept in %s\n", s_run);
    else
        sm_tmpdir_remove (&s_dir);
}

static void
s_read_env (void)
{
    char path [PATH_MAX + 16], line [1024];
    snprintf (path, sizeof path, "%s/mesh.env", s_run);
    FILE *f = fopen (path, "r");
    cr_assert_not_null (f, "no %s", path);
    while (fgets (line, sizeof line, f)) {
        if (s_nprocs < 40 && sscanf (line, "SPLITMESH_PROC='%63s %d", s_names [s_nprocs], &s_pids [s_nprocs]) == 2)
            s_nprocs++;
        sscanf (line, "SPLITMESH_BROKER='%699[^']'", s_broker);
        sscanf (line, "SPLITMESH_CLOUD='%199[^']'", s_cloud);
    }
    fclose (f);
    cr_assert (s_broker [0] && s_cloud [0] && s_nprocs >= 5, "incomplete mesh.env");
}

static long
s_rss_kb (pid_t pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "VmRSS:", 6) == 0)
            kb = atol (line + 6);
    fclose (f);
    return kb;
}

//  The body of request i for service (MessagePack, caller frees the frame).
static zframe_t *
s_body (const char *service, int i)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    char session [32];
    snprintf (session, sizeof session, "flood%d", i);
#define S_STR(s) msgpack_pack_str_with_body (&pk, s, strlen (s))
    if (streq (service, "tokenizer")) {
        msgpack_pack_map (&pk, 3);
        S_STR ("v"); msgpack_pack_int (&pk, 1);
        S_STR ("t"); S_STR ("tokenize");
        S_STR ("text"); S_STR ("The quick brown fox jumps over the lazy dog");
    }
    else
    if (streq (service, "generate")) {
        msgpack_pack_map (&pk, 4);
        S_STR ("v"); msgpack_pack_int (&pk, 1);
        S_STR ("t"); S_STR ("generate");
        S_STR ("prompt"); S_STR ("Hello there");
        S_STR ("max_tokens"); msgpack_pack_int (&pk, 4);
    }
    else {                      //  prefix, target: a prefill of 8 token ids
        msgpack_pack_map (&pk, 5);
        S_STR ("v"); msgpack_pack_int (&pk, 1);
        S_STR ("t"); S_STR ("prefill");
        S_STR ("session"); S_STR (session);
        S_STR ("pos"); msgpack_pack_int (&pk, 0);
        S_STR ("tokens");
        msgpack_pack_array (&pk, 8);
        for (int t = 0; t < 8; t++)
            msgpack_pack_int (&pk, 1 + (i + t) % 50);
    }
#undef S_STR
    zframe_t *frame = zframe_new (sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy (&sbuf);
    return frame;
}

typedef struct {
    int answered, ok, busy, expired, other_error, bad;
    long rss_max [40];
} s_flood_t;

static void
s_flood (const char *endpoint, const char *service, s_flood_t *r)
{
    memset (r, 0, sizeof *r);
    zsock_t *socks [2];
    zpoller_t *poller = zpoller_new (NULL);
    for (int c = 0; c < 2; c++) {
        socks [c] = zsock_new_dealer (endpoint);
        cr_assert_not_null (socks [c]);
        zsock_set_sndhwm (socks [c], 0);
        zsock_set_rcvhwm (socks [c], 0);
        zpoller_add (poller, socks [c]);
    }
    int sent = 0;
    int64_t start = zclock_mono ();
    while (r->answered < S_REQUESTS && zclock_mono () - start < S_ANSWER_MS) {
        for (int burst = 0; burst < 50 && sent < S_REQUESTS; burst++, sent++) {
            zmsg_t *msg = zmsg_new ();
            zmsg_addstr (msg, MDPC_CLIENT);
            zmsg_addmem (msg, (uint8_t []) { MDPC_REQUEST }, 1);
            zmsg_addstr (msg, service);
            zframe_t *body = s_body (service, sent);
            zmsg_append (msg, &body);
            zmsg_send (&msg, socks [sent % 2]);
        }
        zsock_t *which = (zsock_t *) zpoller_wait (poller, sent < S_REQUESTS? 0: 100);
        while (which) {
            zmsg_t *msg = zmsg_recv (which);
            char *proto = msg? zmsg_popstr (msg): NULL;
            zframe_t *cmd = msg? zmsg_pop (msg): NULL;
            char *name = msg? zmsg_popstr (msg): NULL;
            zframe_t *body = msg? zmsg_first (msg): NULL;
            bool partial = cmd && zframe_size (cmd) == 1 && zframe_data (cmd) [0] == MDPC_PARTIAL;
            if (partial)
                ;                   //  edge-draft streams only when asked; ignore
            else
            if (!proto || !streq (proto, MDPC_CLIENT) || !cmd || zframe_size (cmd) != 1
            ||  zframe_data (cmd) [0] != MDPC_FINAL || !name || !streq (name, service) || !body)
                r->bad++, r->answered++;
            else {
                wire_peek_t peek;
                wire_err_t err;
                r->answered++;
                if (wire_peek (zframe_data (body), zframe_size (body), &peek, &err) != 0)
                    r->bad++;
                else
                if (peek.status == 0 || peek.status == 200)
                    r->ok++;
                else
                if (peek.status == 429)
                    r->busy++;
                else
                if (peek.status == 504)
                    r->expired++;
                else
                    r->other_error++;
            }
            zstr_free (&proto);
            zstr_free (&name);
            zframe_destroy (&cmd);
            zmsg_destroy (&msg);
            which = (zsock_t *) zpoller_wait (poller, 0);
        }
        for (int p = 0; p < s_nprocs; p++) {
            long rss = s_rss_kb (s_pids [p]);
            if (rss > r->rss_max [p])
                r->rss_max [p] = rss;
        }
    }
    for (int c = 0; c < 2; c++)
        zsock_destroy (&socks [c]);
    zpoller_destroy (&poller);
    printf ("overload_mesh %-9s: %d sent, %d answered in %lld ms: %d ok, %d busy(429), %d expired(504), "
            "%d other errors, %d bad\n", service, sent, r->answered,
            (long long) (zclock_mono () - start), r->ok, r->busy, r->expired, r->other_error, r->bad);
}

TestSuite (overload_mesh, .init = s_init, .fini = s_fini, .timeout = 400);

Test (overload_mesh, flood_every_service)
{
    sm_cli_result_t *r = SM_SPLITMESH (60, "tiny-model", "--out", s_model);
    cr_assert_eq (r->status, 0, "tiny-model failed: %s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (120, "up", "--run-dir", s_run, "--model", s_model, "--no-telemetry",
                      "--max-sessions", "64", "--timeout", "60");
    cr_assert_eq (r->status, 0, "splitmesh up failed: %s", r->err);
    sm_cli_result_destroy (&r);
    s_read_env ();
    struct { const char *service; const char *endpoint; } floods [] = {
        { "tokenizer", s_broker }, { "prefix", s_broker }, { "target", s_cloud }, { "generate", s_broker }
    };
    for (size_t f = 0; f < sizeof floods / sizeof floods [0]; f++) {
        s_flood_t res;
        s_flood (floods [f].endpoint, floods [f].service, &res);
        cr_expect_eq (res.answered, S_REQUESTS, "%s: only %d of %d answered within %d ms",
                      floods [f].service, res.answered, S_REQUESTS, S_ANSWER_MS);
        cr_expect_eq (res.bad, 0, "%s: %d malformed answers", floods [f].service, res.bad);
        cr_expect_gt (res.ok, 0, "%s: no request was served", floods [f].service);
        for (int p = 0; p < s_nprocs; p++) {
            printf ("  %-16s VmRSS max %ld KiB\n", s_names [p], res.rss_max [p]);
            cr_expect_lt (res.rss_max [p], S_RSS_LIMIT_KB, "%s reached %ld KiB during the %s flood",
                          s_names [p], res.rss_max [p], floods [f].service);
        }
    }
    for (int p = 0; p < s_nprocs; p++)
        cr_expect (s_rss_kb (s_pids [p]) > 0, "%s (pid %d) died under the flood", s_names [p], s_pids [p]);
    //  Still serving: one ordinary generation end to end.
    r = SM_SPLITMESH (120, "generate", "--run-dir", s_run, "-n", "4", "Hello");
    cr_expect_eq (r->status, 0, "generate after the floods failed: %s", r->err);
    sm_cli_result_destroy (&r);
}
