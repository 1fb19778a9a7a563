//  bench_tokenizer: tokenizer throughput per vocabulary on the golden corpus.
//
//  The tokenizer service sits in front of every request (prompts and chat
//  histories are re-tokenized as they grow) and streams text back token by
//  token, so encode and decode speed bound its share of latency. This
//  loads each vocabulary, times encode of the whole corpus (one call per
//  corpus chunk, as a service would see requests) and decode of the ids,
//  and prints one JSON object.
//
//  Usage: bench_tokenizer CORPUS CHUNK_BYTES... -- NAME=MODEL.gguf ...
//  (chunk sizes as in tests/golden/tokenizer/corpus.txt)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "gguf.h"
#include "tokenizer.h"

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int
main (int argc, char *argv [])
{
    if (argc < 4) {
        fprintf (stderr, "usage: bench_tokenizer CORPUS CHUNK_BYTES... -- NAME=MODEL.gguf ...\n");
        return 2;
    }
    FILE *f = fopen (argv [1], "rb");
    if (!f) {
        fprintf (stderr, "cannot open %s\n", argv [1]);
        return 1;
    }
    fseek (f, 0, SEEK_END);
    size_t size = (size_t) ftell (f);
    fseek (f, 0, SEEK_SET);
    char *corpus = malloc (size);
    if (!corpus || fread (corpus, 1, size, f) != size) {
        fprintf (stderr, "cannot read %s\n", argv [1]);
        return 1;
    }
    fclose (f);
    size_t lens [4096], n_chunks = 0, total = 0;
    int i = 2;
    for (; i < argc && strcmp (argv [i], "--") != 0 && n_chunks < 4096; i++) {
        lens [n_chunks++] = strtoul (argv [i], NULL, 10);
        total += lens [n_chunks - 1];
    }
    if (total != size || i >= argc) {
        fprintf (stderr, "chunk sizes add up to %zu, corpus has %zu bytes\n", total, size);
        return 1;
    }
    printf ("{\"corpus_bytes\": %zu, \"chunks\": %zu, \"vocabularies\": {\n", size, n_chunks);
    for (i++; i < argc; i++) {
        char *eq = strchr (argv [i], '=');
        if (!eq)
            return 2;
        *eq = 0;
        char err [256];
        double t0 = s_now ();
        gguf_t *gguf = gguf_open (eq + 1, err, sizeof err);
        tokenizer_t *tok = gguf? tokenizer_new_from_gguf (gguf, err, sizeof err): NULL;
        if (!tok) {
            fprintf (stderr, "%s: %s\n", eq + 1, err);
            return 1;
        }
        double load_s = s_now () - t0;
        //  Best of three passes over the corpus: a shared machine's noise
        //  only ever adds time.
        double enc_best = 1e9, dec_best = 1e9;
        size_t n_ids = 0;
        for (int pass = 0; pass < 3; pass++) {
            int32_t **ids = calloc (n_chunks, sizeof (int32_t *));
            size_t *counts = calloc (n_chunks, sizeof (size_t));
            size_t offset = 0;
            n_ids = 0;
            double start = s_now ();
            for (size_t c = 0; c < n_chunks; c++) {
                if (tokenizer_encode (tok, corpus + offset, lens [c], false, false,
                                      &ids [c], &counts [c], err, sizeof err)) {
                    fprintf (stderr, "%s\n", err);
                    return 1;
                }
                offset += lens [c];
                n_ids += counts [c];
            }
            double enc = s_now () - start;
            start = s_now ();
            for (size_t c = 0; c < n_chunks; c++) {
                char *text;
                size_t len;
                tokenizer_decode (tok, ids [c], counts [c], false, false, &text, &len, NULL, 0);
                free (text);
            }
            double dec = s_now () - start;
            for (size_t c = 0; c < n_chunks; c++)
                free (ids [c]);
            free (ids);
            free (counts);
            if (enc < enc_best) enc_best = enc;
            if (dec < dec_best) dec_best = dec;
        }
        printf ("  \"%s\": {\"n_vocab\": %d, \"load_ms\": %.1f, \"ids\": %zu, \"bytes_per_token\": %.3f, "
                "\"encode_s\": %.3f, \"encode_MBps\": %.2f, \"encode_tokens_per_s\": %.0f, "
                "\"decode_s\": %.4f, \"decode_MBps\": %.1f}%s\n",
                argv [i], tokenizer_n_tokens (tok), load_s * 1e3, n_ids, (double) size / n_ids,
                enc_best, size / enc_best / 1e6, n_ids / enc_best, dec_best, size / dec_best / 1e6,
                i + 1 < argc? ",": "");
        tokenizer_destroy (&tok);
        gguf_destroy (&gguf);
    }
    printf ("}}\n");
    free (corpus);
    return 0;
}
