//  bench_codec: how long the wire codec takes per message on the hot path.
//
//  The speculative loop sends one verify and receives one verify_reply per
//  round, and the split-prefix returns an activation block per prefill or
//  extend; the codec's share of a round must stay far below a network round
//  trip. This measures encode and decode (validation included) of realistic
//  messages for SmolLM2-135M (hidden size 576) and prints one JSON object.
//
//  Usage: bench_codec [seconds-per-case]

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "codec.h"

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

//  Times encode and decode of msg; prints a JSON entry.
static void
s_case (const char *name, const wire_desc_t *desc, const void *msg, double seconds, bool last)
{
    uint8_t *data;
    size_t size;
    wire_err_t err;
    if (wire_encode (desc, msg, &data, &size, &err)) {
        fprintf (stderr, "%s: %s\n", name, err.text);
        exit (1);
    }
    free (data);
    long n = 0;
    double start = s_now (), elapsed;
    do {
        wire_encode (desc, msg, &data, &size, NULL);
        free (data);
        n++;
    } while ((elapsed = s_now () - start) < seconds);
    double enc_us = elapsed / n * 1e6;

    wire_encode (desc, msg, &data, &size, NULL);
    void *out = calloc (1, desc->size);
    n = 0;
    start = s_now ();
    do {
        if (wire_decode (desc, data, size, out, &err)) {
            fprintf (stderr, "%s: %s\n", name, err.text);
            exit (1);
        }
        wire_msg_free (desc, out);
        n++;
    } while ((elapsed = s_now () - start) < seconds);
    double dec_us = elapsed / n * 1e6;
    printf ("  \"%s\": {\"bytes\": %zu, \"encode_us\": %.3f, \"decode_us\": %.3f, "
            "\"encode_MBps\": %.0f, \"decode_MBps\": %.0f}%s\n",
            name, size, enc_us, dec_us, size / enc_us, size / dec_us, last? "": ",");
    free (out);
    free (data);
}

int
main (int argc, char *argv [])
{
    double seconds = argc > 1? atof (argv [1]): 0.5;
    const uint32_t dim = 576;           //  SmolLM2-135M hidden size
    const uint32_t k = 4;

    //  verify: k+1 int8 rows with scales, k drafts of 8 candidates each
    uint8_t *act8 = calloc ((k + 1) * dim, 1);
    float scales [5] = { 0.01f, 0.02f, 0.03f, 0.04f, 0.05f };
    wire_activations_t act = { .dtype = WIRE_DTYPE_INT8, .n_pos = k + 1, .dim = dim,
                               .data = { act8, (k + 1) * dim },
                               .scales = { (uint8_t *) scales, sizeof (scales) } };
    int32_t draft_tokens [4] = { 100, 200, 300, 400 };
    int32_t cand [4][8];
    float probs [4][8];
    wire_draft_t drafts [4];
    for (uint32_t i = 0; i < k; i++) {
        for (int j = 0; j < 8; j++) {
            cand [i][j] = (int32_t) (i * 1000 + j);
            probs [i][j] = 0.1f;
        }
        drafts [i] = (wire_draft_t) { .tokens = cand [i], .tokens_count = 8,
                                      .probs = probs [i], .probs_count = 8 };
    }
    wire_verify_t verify;
    wire_msg_init (&wire_verify_desc, &verify);
    verify.session = "edge-0001:17";
    verify.pos = 300;
    verify.activations = &act;
    verify.draft_tokens = draft_tokens;
    verify.draft_tokens_count = k;
    verify.drafts = drafts;
    verify.drafts_count = k;
    verify.temperature = 0.7;

    wire_verify_reply_t reply = { .session = "edge-0001:17", .accepted = 3,
                                  .next_token = 42, .has_next_token = true, .n_pos = 304 };

    //  prefill answer: 512 positions of fp16
    uint32_t n_pos = 512;
    uint8_t *act16 = calloc ((size_t) n_pos * dim, 2);
    wire_activations_t big = { .dtype = WIRE_DTYPE_FP16, .n_pos = n_pos, .dim = dim,
                               .data = { act16, (size_t) n_pos * dim * 2 } };
    wire_activations_reply_t prefill = { .session = "edge-0001:17", .pos = 0, .activations = &big };

    wire_generate_t gen;
    wire_msg_init (&wire_generate_desc, &gen);
    gen.prompt = "Explain speculative decoding in two sentences.";
    gen.max_tokens = 128;
    gen.stream = true;

    printf ("{\n");
    s_case ("verify_k4_int8_dim576", &wire_verify_desc, &verify, seconds, false);
    s_case ("verify_reply", &wire_verify_reply_desc, &reply, seconds, false);
    s_case ("activations_reply_512x576_fp16", &wire_activations_reply_desc, &prefill, seconds, false);
    s_case ("generate_prompt", &wire_generate_desc, &gen, seconds, true);
    printf ("}\n");
    free (act8);
    free (act16);
    return 0;
}
