/*  fuzz_codec.c: libFuzzer target for the MessagePack wire codec.

    Every byte a peer sends reaches schemas/codec.c first, so the codec
    must turn any input into either a decoded message or a clear 4xx,
    never a crash, a leak or a read past the buffer. The first input byte
    picks the message type (the schema's id, modulo the number of
    messages); the rest is the frame. Each input goes through wire_peek,
    then wire_decode as the picked type and as the type its `t` names.

    Properties checked (abort when they fail):
    - a rejected frame has a 4xx/500 status and a non-empty reason;
    - an accepted message validates, re-encodes, and decodes back equal
      (wire_msg_equal), and its encoding is a fixed point (encode ->
      decode -> encode gives the same bytes);
    - wire_peek never disagrees with itself on a re-encoded message.

    The same file is compiled into the gcc replay test (tests/
    test_fuzz_codec.c) with LLVMFuzzerTestOneInput renamed.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "codec.h"
#include "schema_gen.h"

#define S_MAX_MSGS  256

static const wire_desc_t *s_descs [S_MAX_MSGS];
static int s_ndescs;

static void
s_fail (const char *what, const char *detail)
{
    fprintf (stderr, "fuzz_codec property failed: %s (%s)\n", what, detail? detail: "");
    abort ();
}

static void
s_init (void)
{
    if (s_ndescs)
        return;
    for (int id = 0; id < S_MAX_MSGS; id++) {
        const wire_desc_t *desc = wire_desc_by_id (id);
        if (desc)
            s_descs [s_ndescs++] = desc;
    }
    if (!s_ndescs)
        s_fail ("no message descriptors", NULL);
}

//  Decodes data as desc and checks the round-trip properties.
static void
s_decode_as (const wire_desc_t *desc, const uint8_t *data, size_t size)
{
    //  wire_<name>_t structs are small; a generous aligned buffer fits all
    _Alignas (max_align_t) uint8_t msg [4096], again [4096];
    wire_err_t err;
    int rc = wire_decode (desc, data, size, msg, &err);
    if (rc != 0) {
        if (rc != -2 && rc != -1)
            s_fail ("decode returned an unknown code", desc->name);
        if (err.status < 400 || err.status > 599 || !err.text [0])
            s_fail ("rejection without a status or reason", desc->name);
        return;
    }
    if (wire_validate (desc, msg, &err) != 0)
        s_fail ("decoded message does not validate", err.text);
    uint8_t *enc = NULL;
    size_t enc_size = 0;
    if (wire_encode (desc, msg, &enc, &enc_size, &err) != 0)
        s_fail ("decoded message does not re-encode", err.text);
    if (wire_decode (desc, enc, enc_size, again, &err) != 0)
        s_fail ("re-encoded message does not decode", err.text);
    char diff [128] = "";
    if (!wire_msg_equal (desc, msg, again, diff, sizeof diff))
        s_fail ("round trip changed the message", diff);
    uint8_t *enc2 = NULL;
    size_t enc2_size = 0;
    if (wire_encode (desc, again, &enc2, &enc2_size, &err) != 0)
        s_fail ("second encode failed", err.text);
    if (enc2_size != enc_size || memcmp (enc, enc2, enc_size) != 0)
        s_fail ("encoding is not a fixed point", desc->name);
    wire_peek_t peek;
    if (wire_peek (enc, enc_size, &peek, &err) != 0)
        s_fail ("peek rejects an encoded message", err.text);
    if (peek.desc && peek.desc != desc)
        s_fail ("peek names another message", peek.tag);
    free (enc);
    free (enc2);
    wire_msg_free (desc, again);
    wire_msg_free (desc, msg);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_init ();
    if (size < 1)
        return 0;
    const wire_desc_t *desc = s_descs [data [0] % s_ndescs];
    data++;
    size--;
    wire_peek_t peek;
    wire_err_t err;
    if (wire_peek (data, size, &peek, &err) != 0) {
        if (err.status < 400 || !err.text [0])
            s_fail ("peek rejection without a status or reason", NULL);
    }
    else
    if (peek.desc && peek.desc != desc)
        s_decode_as (peek.desc, data, size);
    s_decode_as (desc, data, size);
    return 0;
}
