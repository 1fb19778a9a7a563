/*  test_telemetry_mesh.c: every service of a real mesh publishes the
    metrics of docs/metrics.md, and their values match what was sent.

    `splitmesh up` on a tiny model (sm_gateway.h) WITH splitmesh-telemetry:
    broker, tokenizer, split-prefix, cloud-target, edge-draft and gateway,
    all publishing to the device broker's telemetry bus. The test sends
    real requests (MDP `generate` calls, one malformed one, OpenAI chat
    completions through the gateway, one bad JSON body), then scrapes
    /metrics and checks each family the issue lists against what the
    requests' own replies report: requests by status, prompt and generated
    tokens, drafts proposed/accepted per position, TTFT and inter-token
    latency counts, verify latency, batch size, KV cache use (back to 0
    once the sessions closed), link bytes and errors by status.

    Exact equalities hold because nothing else talks to this mesh; counters
    only move when a request is answered, and the test waits until the
    last request shows before reading the rest (plus two flush intervals).
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <stdio.h>
#include <string.h>
#include "sm_cli.h"
#include "sm_gateway.h"
#include "sm_http.h"
#include "sm_mdp.h"
#include "sm_proc.h"

#define S_MAX_TOKENS 16

static sm_mesh_t s_mesh;

static void
s_fini (void)
{
    sm_mesh_down (&s_mesh);
}

TestSuite (telemetry_mesh, .fini = s_fini, .timeout = 170);

//  Sum of a family's samples whose labels contain a, b and c (each may be NULL).
static double
s_value (const char *text, const char *name, const char *a, const char *b, const char *c)
{
    int found = 0;
    return sm_prom_sum (text, name, &found, a, b, c, NULL);
}

static int
s_samples (const char *text, const char *name, const char *a, const char *b)
{
    int found = 0;
    sm_prom_sum (text, name, &found, a, b, NULL);
    return found;
}

//  Scrapes until family name{a,b} sums to want (10 s at most), then waits
//  two flush intervals more and returns that scrape (caller frees).
static char *
s_scrape_when (const char *name, const char *a, const char *b, double want)
{
    char *text = NULL;
    double got = -1;
    int64_t end = zclock_mono () + 10000;
    while (zclock_mono () < end) {
        free (text);
        text = sm_prom_scrape (s_mesh.telemetry_port);
        got = text? s_value (text, name, a, b, NULL): -1;
        if (got == want)
            break;
        zclock_sleep (100);
    }
    cr_assert_eq (got, want, "%s{%s,%s} is %g, want %g; /metrics:\n%.4000s", name, a, b? b: "",
                  got, want, text? text: "(none)");
    free (text);
    zclock_sleep (600);
    text = sm_prom_scrape (s_mesh.telemetry_port);
    cr_assert_not_null (text);
    return text;
}

#define ED "service=\"edge-draft\""
#define TOK "service=\"tokenizer\""
#define PRE "service=\"split-prefix\""
#define TGT "service=\"cloud-target\""
#define GW "service=\"gateway\""
#define BRK "service=\"broker\""

Test (telemetry_mesh, every_service_publishes_what_it_did)
{
    char err [4096];
    //  One extend and one verify per round, so the counts below are exact:
    //  pipelined verifies (on by default) send chunks ahead, some of them
    //  void (docs/pipeline.md); edge's own test covers that path.
    setenv ("SPLITMESH_NO_PIPELINE", "1", 1);
    cr_assert_eq (sm_mesh_prepare (&s_mesh, "sm-telmesh", err, sizeof err), 0, "%s", err);
    s_mesh.telemetry = true;
    cr_assert_eq (sm_mesh_up (&s_mesh, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_gt (s_mesh.telemetry_port, 0, "up printed no telemetry port");
    cr_assert_gt (s_mesh.gateway_port, 0, "up printed no gateway port");

    //  Phase 1: MDP generate requests, greedy and sampled, and one
    //  malformed body (400 from edge-draft).
    const char *prompts [] = { "The capital of France is", "Once upon a time",
                               "Write a haiku about the sea" };
    const int n_gen = 3;
    uint64_t tokens = 0, prompt = 0, proposed = 0, accepted = 0, up = 0, down = 0;
    uint64_t by_pos [16] = { 0 }, inter = 0, first = 0;
    size_t n_pos = 0;
    for (int i = 0; i < n_gen; i++) {
        sm_gen_result_t *r = sm_generate_simple (s_mesh.broker, prompts [i], S_MAX_TOKENS,
                                                 i == 2? 0.8: 0.0, 0, 5 + i, 4, "model",
                                                 "speculative", 30000);
        cr_assert_eq (r->status, 0, "generate %d: %d %s", i, r->status, r->error);
        cr_assert (r->has_stats);
        tokens += r->n_tokens;
        prompt += r->prompt_tokens;
        proposed += r->drafts_proposed;
        accepted += r->drafts_accepted;
        up += r->link_bytes_up;
        down += r->link_bytes_down;
        first += r->n_tokens > 0;
        inter += r->n_tokens > 0? r->n_tokens - 1: 0;
        for (size_t p = 0; p < r->n_accept_by_pos; p++)
            by_pos [p] += r->accept_by_pos [p];
        if (r->n_accept_by_pos > n_pos)
            n_pos = r->n_accept_by_pos;
        sm_gen_result_destroy (&r);
    }
    cr_assert_gt (tokens, 0);
    cr_assert_gt (proposed, 0, "no drafts proposed: the speculative path did not run");
    sm_gen_result_t *bad = sm_generate (s_mesh.broker, "\x93\x01\x02", 3, 10000);
    int bad_status = bad->status;
    sm_gen_result_destroy (&bad);
    cr_assert (bad_status >= 400 && bad_status < 500, "a malformed body got %d", bad_status);
    char bad_label [32];
    snprintf (bad_label, sizeof bad_label, "status=\"%d\"", bad_status);
    //  One malformed body straight to the tokenizer and to split-prefix: 400.
    const char *direct [] = { "tokenizer", "prefix" };
    for (size_t i = 0; i < 2; i++) {
        zmsg_t *body = zmsg_new ();
        zmsg_addmem (body, "\x93\x01\x02", 3);
        zmsg_t *reply = sm_mdp_call (s_mesh.broker, direct [i], &body, 10000);
        cr_assert_not_null (reply, "%s did not answer a malformed body", direct [i]);
        zmsg_destroy (&reply);
    }

    char *m = s_scrape_when ("splitmesh_requests_total", ED, "status=\"200\"", n_gen);
    //  edge-draft: requests and errors by status, tokens, drafts, latencies, link.
    cr_assert_eq (s_value (m, "splitmesh_requests_total", ED, bad_label, NULL), 1);
    cr_assert_eq (s_value (m, "splitmesh_errors_total", ED, bad_label, NULL), 1);
    cr_assert_eq (s_value (m, "splitmesh_errors_total", ED, "status=\"200\"", NULL), 0);
    cr_assert_eq (s_value (m, "splitmesh_prompt_tokens_total", ED, NULL, NULL), (double) prompt);
    cr_assert_eq (s_value (m, "splitmesh_tokens_generated_total", ED, NULL, NULL), (double) tokens);
    cr_assert_eq (s_value (m, "splitmesh_drafts_proposed_total", ED, NULL, NULL), (double) proposed);
    cr_assert_eq (s_value (m, "splitmesh_drafts_accepted_total", ED, NULL, NULL), (double) accepted);
    for (size_t p = 0; p < n_pos; p++) {
        char pos [32];
        snprintf (pos, sizeof pos, "pos=\"%zu\"", p);
        cr_assert_eq (s_value (m, "splitmesh_drafts_accepted_total", ED, pos, NULL), (double) by_pos [p],
                      "drafts accepted at %s", pos);
        cr_assert_geq (s_value (m, "splitmesh_drafts_proposed_total", ED, pos, NULL), (double) by_pos [p]);
    }
    cr_assert_eq (s_value (m, "splitmesh_ttft_seconds_count", ED, NULL, NULL), (double) first);
    cr_assert_gt (s_value (m, "splitmesh_ttft_seconds_sum", ED, NULL, NULL), 0);
    cr_assert_eq (s_value (m, "splitmesh_inter_token_seconds_count", ED, NULL, NULL), (double) inter);
    cr_assert_eq (s_value (m, "splitmesh_link_bytes_total", ED, "direction=\"up\"", NULL), (double) up);
    cr_assert_eq (s_value (m, "splitmesh_link_bytes_total", ED, "direction=\"down\"", NULL), (double) down);
    double rounds = s_value (m, "splitmesh_verify_seconds_count", ED, NULL, NULL);
    cr_assert_gt (rounds, 0);
    cr_assert_gt (s_value (m, "splitmesh_verify_seconds_sum", ED, NULL, NULL), 0);
    //  tokenizer: one tokenize per generation that got past validation.
    cr_assert_eq (s_value (m, "splitmesh_requests_total", TOK, "status=\"200\"", NULL), n_gen);
    cr_assert_eq (s_value (m, "splitmesh_requests_total", TOK, "status=\"400\"", NULL), 1);
    cr_assert_eq (s_value (m, "splitmesh_errors_total", TOK, "status=\"400\"", NULL), 1);
    cr_assert_eq (s_samples (m, "splitmesh_errors_total", TOK, NULL), 1);
    cr_assert_eq (s_value (m, "splitmesh_errors_total", PRE, "status=\"400\"", NULL), 1);
    cr_assert_eq (s_samples (m, "splitmesh_errors_total", PRE, NULL), 1);
    cr_assert_eq (s_samples (m, "splitmesh_errors_total", TGT, NULL), 0);
    //  split-prefix and cloud-target: prefill + one extend / verify per
    //  round + session_close, per generation; caches freed at the end.
    cr_assert_eq (s_value (m, "splitmesh_requests_total", PRE, "status=\"200\"", NULL), 2 * n_gen + rounds);
    cr_assert_eq (s_value (m, "splitmesh_requests_total", TGT, "status=\"200\"", NULL), 2 * n_gen + rounds);
    cr_assert_eq (s_value (m, "splitmesh_verify_seconds_count", TGT, NULL, NULL), rounds);
    cr_assert_eq (s_value (m, "splitmesh_batch_size", TGT, NULL, NULL), 1);
    cr_assert_eq (s_samples (m, "splitmesh_kv_cache_positions", PRE, NULL), 1);
    cr_assert_eq (s_samples (m, "splitmesh_kv_cache_positions", TGT, NULL), 1);
    cr_assert_eq (s_value (m, "splitmesh_kv_cache_positions", PRE, NULL, NULL), 0);
    cr_assert_eq (s_value (m, "splitmesh_kv_cache_positions", TGT, NULL, NULL), 0);
    //  broker: FINALs by service and status.
    cr_assert_eq (s_value (m, "splitmesh_broker_requests_total", BRK, "mdp_service=\"generate\"",
                           "status=\"200\""), n_gen);
    cr_assert_eq (s_value (m, "splitmesh_broker_requests_total", BRK, "mdp_service=\"generate\"",
                           bad_label), 1);
    cr_assert_eq (s_value (m, "splitmesh_broker_requests_total", BRK, "mdp_service=\"tokenizer\"",
                           "status=\"200\""), n_gen);
    cr_assert_eq (s_value (m, "splitmesh_broker_requests_total", BRK, "mdp_service=\"tokenizer\"",
                           "status=\"400\""), 1);
    //  Every process says it is up.
    const char *services [] = { ED, TOK, PRE, TGT, GW, BRK };
    for (size_t i = 0; i < sizeof services / sizeof services [0]; i++)
        cr_assert_geq (s_value (m, "splitmesh_up", services [i], NULL, NULL), 1, "%s not up", services [i]);
    free (m);

    //  Phase 2: the gateway. Two chat completions and one bad JSON body.
    const int n_chat = 2;
    double chat_prompt = 0, chat_tokens = 0;
    for (int i = 0; i < n_chat; i++) {
        char body [256], *reply = NULL;
        snprintf (body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
                  "\"max_tokens\":%d,\"temperature\":0}", prompts [i], S_MAX_TOKENS);
        int status = sm_http_post (s_mesh.gateway_port, "/v1/chat/completions", body, 30000, &reply);
        cr_assert_eq (status, 200, "chat %d: %s", i, reply? reply: "(no answer)");
        double p = 0, c = 0;
        cr_assert_eq (sm_json_number (reply, "prompt_tokens", &p), 0, "%s", reply);
        cr_assert_eq (sm_json_number (reply, "completion_tokens", &c), 0, "%s", reply);
        chat_prompt += p;
        chat_tokens += c;
        free (reply);
    }
    cr_assert_eq (sm_http_post (s_mesh.gateway_port, "/v1/chat/completions", "{not json", 5000, NULL), 400);
    m = s_scrape_when ("splitmesh_gateway_requests_total", "endpoint=\"chat\"", "status=\"400\"", 1);
    cr_assert_eq (s_value (m, "splitmesh_gateway_requests_total", GW, "endpoint=\"chat\"", "status=\"200\""), n_chat);
    cr_assert_eq (s_value (m, "splitmesh_requests_total", GW, "status=\"200\"", NULL), n_chat);
    cr_assert_eq (s_value (m, "splitmesh_errors_total", GW, "status=\"400\"", NULL), 1);
    cr_assert_eq (s_value (m, "splitmesh_requests_total", ED, "status=\"200\"", NULL), n_gen + n_chat);
    cr_assert_eq (s_value (m, "splitmesh_prompt_tokens_total", ED, NULL, NULL), prompt + chat_prompt);
    cr_assert_eq (s_value (m, "splitmesh_tokens_generated_total", ED, NULL, NULL), tokens + chat_tokens);
    cr_assert_eq (s_value (m, "splitmesh_broker_requests_total", BRK, "mdp_service=\"generate\"",
                           "status=\"200\""), n_gen + n_chat);
    fprintf (stderr, "telemetry_mesh: %d generations (%llu tokens, %llu/%llu drafts accepted, %g rounds), "
             "%d chats (%g tokens); every family matched\n", n_gen, (unsigned long long) tokens,
             (unsigned long long) accepted, (unsigned long long) proposed, rounds, n_chat, chat_tokens);
    free (m);
}
