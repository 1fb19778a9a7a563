/*  example.c: the smallest C client of a splitmesh mesh.

    Sends one `generate` request (a chat of one user message, greedy,
    streamed) to the device broker with core/mdp_client.h and the
    generated codec (schemas/codec.h), and prints the text as PARTIALs
    arrive. What an application embedding the mesh in C starts from:

        splitmesh-client-example ipc:///tmp/splitmesh-$UID/device.ipc "Hello" 32

    Exit status: 0 after the FINAL, 1 on an error reply or a timeout,
    2 on bad arguments.
*/
#include <stdio.h>
#include <stdlib.h>
#include "codec.h"
#include "mdp_client.h"
#include "mdp_common.h"

int
main (int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf (stderr, "usage: %s BROKER PROMPT [MAX_TOKENS]\n", argv [0]);
        return 2;
    }
    int max_tokens = argc == 4? atoi (argv [3]): 32;
    if (max_tokens < 1 || max_tokens > WIRE_MAX_NEW_TOKENS) {
        fprintf (stderr, "example: MAX_TOKENS must be 1..%d\n", WIRE_MAX_NEW_TOKENS);
        return 2;
    }
    //  The request: one user message, greedy, streamed.
    wire_generate_t req;
    wire_msg_init (&wire_generate_desc, &req);
    wire_chat_message_t message = { .role = WIRE_ROLE_USER, .content = argv [2] };
    req.messages = &message;
    req.messages_count = 1;
    req.max_tokens = (uint32_t) max_tokens;
    req.temperature = 0;
    req.stream = true;
    uint8_t *data = NULL;
    size_t size = 0;
    wire_err_t err;
    if (wire_encode (&wire_generate_desc, &req, &data, &size, &err)) {
        fprintf (stderr, "example: invalid request: %s\n", err.text);
        return 2;
    }
    int rc = 1;
    mdp_client_t *client = mdp_client_new (argv [1]);
    if (!client || mdp_client_send_mem (client, "generate", data, size)) {
        fprintf (stderr, "example: cannot send to %s\n", argv [1]);
        goto done;
    }
    //  Replies: PARTIALs with new text, then one FINAL.
    while (true) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (client, 60000, &command, NULL);
        if (!reply) {
            fprintf (stderr, "example: no reply from %s within 60 s\n", argv [1]);
            goto done;
        }
        zframe_t *frame = zmsg_first (reply);
        wire_peek_t peek;
        if (!frame || wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err)
        ||  peek.status != 0) {
            fprintf (stderr, "example: error reply (status %d)\n", frame? peek.status: 0);
            zmsg_destroy (&reply);
            goto done;
        }
        if (command == MDPC_PARTIAL) {
            wire_generate_partial_t part;
            if (wire_decode_frame (&wire_generate_partial_desc, frame, &part, &err) == 0) {
                fputs (part.text, stdout);
                fflush (stdout);
                wire_msg_free (&wire_generate_partial_desc, &part);
            }
            zmsg_destroy (&reply);
            continue;
        }
        wire_generate_final_t final;
        if (wire_decode_frame (&wire_generate_final_desc, frame, &final, &err)) {
            fprintf (stderr, "example: bad final reply: %s\n", err.text);
            zmsg_destroy (&reply);
            goto done;
        }
        fputs (final.text, stdout);
        printf ("\n");
        fprintf (stderr, "example: finish_reason %s, %zu tokens in the final\n",
                 wire_finish_reason_names [final.finish_reason], final.tokens_count);
        rc = final.finish_reason == WIRE_FINISH_REASON_ERROR;
        wire_msg_free (&wire_generate_final_desc, &final);
        zmsg_destroy (&reply);
        break;
    }
done:
    mdp_client_destroy (&client);
    free (data);
    return rc;
}
