/*  bench_gpu_service.c: verified tokens/s THROUGH the cloud-target
    service (broker + splitmesh-cloud-target, continuous batching), by
    number of concurrent sessions: the service-level counterpart of
    bench_gpu's backend-level sessions sweep. device.sh starts the broker
    and the target (CUDA, SmolLM2) and runs this client against them.

    Each of S sessions is prefilled with 16 prompt tokens (privacy none:
    token ids), then R rounds: every session sends one verify of k + 1
    rows (its last token and k drafts) at once, through one asynchronous
    MDP client, and the round ends when all S replies are in; the next
    round starts at each session's reply (n_pos, next token). Verified
    tokens/s = S x (k + 1) x R / the rounds' wall time (the positions the
    target evaluated, as bench_gpu counts them); emitted tokens/s counts
    accepted drafts + 1 a verify. Sessions are closed after each sweep
    point.

    usage: bench_gpu_service --broker EP [--sessions 1,8,32,64] [--rounds R]
                             [--k K] [--label NAME]
    prints one JSON object: {"label":..,"sessions":{"S":{...}}}.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <czmq.h>
#include "codec.h"
#include "mdp_client.h"
#include "mdp_common.h"

#define S_MAX 256

static zframe_t *
s_recv (mdp_client_t *client, wire_peek_t *peek)
{
    int command = 0;
    zmsg_t *msg = mdp_client_recv (client, 60000, &command, NULL);
    if (!msg)
        return NULL;
    zframe_t *frame = zmsg_pop (msg);
    zmsg_destroy (&msg);
    wire_err_t err;
    if (!frame || wire_peek (zframe_data (frame), zframe_size (frame), peek, &err)) {
        zframe_destroy (&frame);
        return NULL;
    }
    return frame;
}

static int
s_send (mdp_client_t *client, const wire_desc_t *desc, const void *msg)
{
    wire_err_t err = { 0 };
    zframe_t *body = wire_encode_frame (desc, msg, &err);
    if (!body)
        return -1;
    zmsg_t *m = zmsg_new ();
    zmsg_append (m, &body);
    return mdp_client_send (client, "target", &m);
}

int
main (int argc, char **argv)
{
    const char *broker = NULL, *sweep = "1,8,32,64", *label = "service";
    int rounds = 50, k = 4;
    for (int i = 1; i < argc; i++) {
        if (streq (argv [i], "--broker") && i + 1 < argc)
            broker = argv [++i];
        else if (streq (argv [i], "--sessions") && i + 1 < argc)
            sweep = argv [++i];
        else if (streq (argv [i], "--rounds") && i + 1 < argc)
            rounds = atoi (argv [++i]);
        else if (streq (argv [i], "--k") && i + 1 < argc)
            k = atoi (argv [++i]);
        else if (streq (argv [i], "--label") && i + 1 < argc)
            label = argv [++i];
        else {
            fprintf (stderr, "usage: bench_gpu_service --broker EP [--sessions 1,8,32,64] "
                     "[--rounds R] [--k K] [--label NAME]\n");
            return 2;
        }
    }
    if (!broker || rounds < 1 || k < 0 || k > 8) {
        fprintf (stderr, "bench_gpu_service: --broker is required; rounds >= 1, k in 0..8\n");
        return 2;
    }
    mdp_client_t *client = mdp_client_new (broker);
    if (!client)
        return 1;
    printf ("{\"label\": \"%s\", \"k\": %d, \"rounds\": %d, \"sessions\": {", label, k, rounds);
    char list [256];
    snprintf (list, sizeof list, "%s", sweep);
    int status = 0, first = 1, sweep_no = 0;
    for (char *tok = strtok (list, ","); tok && !status; tok = strtok (NULL, ","), sweep_no++) {
        int S = atoi (tok);
        if (S < 1 || S > S_MAX)
            continue;
        static char ids [S_MAX][32];
        static uint32_t pos [S_MAX];
        static int32_t last [S_MAX];
        int32_t prompt [16], rows [9], drafts [8];
        for (int s = 0; s < S; s++) {
            snprintf (ids [s], sizeof ids [s], "b%d-%d", sweep_no, s);
            for (int i = 0; i < 16; i++)
                prompt [i] = 100 + (s * 31 + i * 7) % 5000;
            wire_prefill_t pf;
            wire_msg_init (&wire_prefill_desc, &pf);
            pf.session = ids [s];
            pf.tokens = prompt;
            pf.tokens_count = 16;
            if (s_send (client, &wire_prefill_desc, &pf))
                status = 1;
        }
        for (int s = 0; s < S && !status; s++) {
            wire_peek_t peek;
            zframe_t *f = s_recv (client, &peek);
            wire_prefill_reply_t r;
            wire_err_t err = { 0 };
            if (!f || peek.status || wire_decode_frame (&wire_prefill_reply_desc, f, &r, &err)) {
                fprintf (stderr, "bench_gpu_service: prefill failed (status %d)\n", f? peek.status: -1);
                status = 1;
            }
            else {
                int i = atoi (strchr (r.session, '-') + 1);
                pos [i] = r.n_pos;
                last [i] = r.next_token;
                wire_msg_free (&wire_prefill_reply_desc, &r);
            }
            zframe_destroy (&f);
        }
        long positions = 0, emitted = 0;
        int64_t start = zclock_usecs ();
        for (int round = 0; round < rounds && !status; round++) {
            for (int s = 0; s < S && !status; s++) {
                rows [0] = last [s];
                for (int d = 0; d < k; d++)
                    rows [d + 1] = drafts [d] = 100 + (s * 13 + round * 7 + d * 3) % 5000;
                wire_verify_t v;
                wire_msg_init (&wire_verify_desc, &v);
                v.session = ids [s];
                v.pos = pos [s];
                v.tokens = rows;
                v.tokens_count = (size_t) k + 1;
                v.draft_tokens = drafts;
                v.draft_tokens_count = (size_t) k;
                if (s_send (client, &wire_verify_desc, &v))
                    status = 1;
            }
            for (int s = 0; s < S && !status; s++) {
                wire_peek_t peek;
                zframe_t *f = s_recv (client, &peek);
                wire_verify_reply_t r;
                wire_err_t err = { 0 };
                if (!f || peek.status || wire_decode_frame (&wire_verify_reply_desc, f, &r, &err)) {
                    fprintf (stderr, "bench_gpu_service: verify failed (status %d)\n", f? peek.status: -1);
                    status = 1;
                }
                else {
                    int i = atoi (strchr (r.session, '-') + 1);
                    pos [i] = r.n_pos;
                    last [i] = r.next_token;
                    positions += k + 1;
                    emitted += (long) r.accepted + 1;
                    wire_msg_free (&wire_verify_reply_desc, &r);
                }
                zframe_destroy (&f);
            }
        }
        double secs = (zclock_usecs () - start) / 1e6;
        for (int s = 0; s < S; s++) {
            wire_session_close_t c = { ids [s] };
            s_send (client, &wire_session_close_desc, &c);
        }
        for (int s = 0; s < S; s++) {
            wire_peek_t peek;
            zframe_t *f = s_recv (client, &peek);
            zframe_destroy (&f);
        }
        if (status)
            break;
        printf ("%s\"%d\": {\"seconds\": %.4f, \"verified_tps\": %.1f, \"emitted_tps\": %.1f, "
                "\"round_ms\": %.3f}", first? "": ", ", S, secs, positions / secs, emitted / secs,
                secs * 1000.0 / rounds);
        fflush (stdout);
        fprintf (stderr, "bench_gpu_service %s: %d sessions: %.0f verified tokens/s, %.2f ms a round\n",
                 label, S, positions / secs, secs * 1000.0 / rounds);
        first = 0;
    }
    printf ("}}\n");
    mdp_client_destroy (&client);
    return status;
}
