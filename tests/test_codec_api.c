//  test_codec_api: the codec's helpers: error replies, peeking, encoder-side
//  validation, defaults, lookups, frames and big activation blocks.

#include <criterion/criterion.h>
#include <msgpack.h>
#include <string.h>
#include "codec.h"

//  Decodes an error reply and checks its fields.
static void
s_check_error (const uint8_t *data, size_t size, uint32_t status, const char *text,
               bool has_retry, uint32_t retry)
{
    wire_error_t msg;
    wire_err_t err;
    cr_assert_eq (wire_decode (&wire_error_desc, data, size, &msg, &err), 0, "%s", err.text);
    cr_assert_eq (msg.status, status);
    cr_assert_str_eq (msg.error, text);
    cr_assert_eq (msg.has_retry_after_ms, has_retry);
    if (has_retry)
        cr_assert_eq (msg.retry_after_ms, retry);
    wire_msg_free (&wire_error_desc, &msg);
}

Test (codec_api, error_replies)
{
    uint8_t *data;
    size_t size;
    cr_assert_eq (wire_error_encode (429, "busy", 250, &data, &size), 0);
    s_check_error (data, size, 429, "busy", true, 250);
    //  v first, then t: the documented envelope, byte for byte
    cr_assert_eq (data [0], 0x85, "map of 5");
    cr_assert_arr_eq (data + 1, "\xa1v\x01\xa1t\xa5" "error", 10);
    free (data);

    cr_assert_eq (wire_error_encode (404, "unknown session 'x'", -1, &data, &size), 0);
    s_check_error (data, size, 404, "unknown session 'x'", false, 0);
    free (data);

    //  a status outside 100..599 is a bug on our side: 500
    cr_assert_eq (wire_error_encode (7, NULL, -1, &data, &size), 0);
    s_check_error (data, size, 500, "", false, 0);
    free (data);

    //  a long text is cut at max_error_bytes on a UTF-8 boundary, invalid
    //  bytes become '?'
    size_t len = WIRE_MAX_ERROR_BYTES + 100;
    char *text = malloc (len + 1);
    for (size_t i = 0; i + 1 < len; i += 2)
        memcpy (text + i, "\xc3\xa9", 2);
    text [len - 1] = 0;
    text [0] = (char) 0xff;
    cr_assert_eq (wire_error_encode (500, text, -1, &data, &size), 0);
    wire_error_t msg;
    cr_assert_eq (wire_decode (&wire_error_desc, data, size, &msg, NULL), 0);
    cr_assert_leq (strlen (msg.error), WIRE_MAX_ERROR_BYTES);
    cr_assert_gt (strlen (msg.error), WIRE_MAX_ERROR_BYTES - 4);
    cr_assert_eq (msg.error [0], '?');
    wire_msg_free (&wire_error_desc, &msg);
    free (data);
    free (text);

    //  frame variants, retry clamped to the limit
    zframe_t *frame = wire_error_frame (503, "no worker", 99999999);
    cr_assert_not_null (frame);
    s_check_error (zframe_data (frame), zframe_size (frame), 503, "no worker", true,
                   WIRE_MAX_RETRY_AFTER_MS);
    zframe_destroy (&frame);

    //  a rejected message becomes its error reply
    wire_err_t err;
    wire_generate_t gen;
    cr_assert_eq (wire_decode (&wire_generate_desc, "\x80", 1, &gen, &err), -2);
    frame = wire_error_frame_from (&err);
    s_check_error (zframe_data (frame), zframe_size (frame), 400,
                   "missing schema version 'v'", false, 0);
    zframe_destroy (&frame);
    cr_assert_str_eq (wire_status_name (413), "too_large");
    cr_assert_str_eq (wire_status_name (299), "unknown");
    //  The schema's is_error flags; unlisted statuses fall back to >= 400.
    cr_assert_not (wire_status_is_error (200));
    cr_assert_not (wire_status_is_error (206));
    cr_assert_not (wire_status_is_error (409), "409 stale is an expected answer");
    cr_assert (wire_status_is_error (400));
    cr_assert (wire_status_is_error (404));
    cr_assert (wire_status_is_error (500));
    cr_assert (wire_status_is_error (418));
    cr_assert_not (wire_status_is_error (299));
}

Test (codec_api, peek_reads_routing_keys_without_decoding)
{
    zframe_t *frame = wire_encode_frame (&wire_verify_desc, wire_example (WIRE_MSG_VERIFY), NULL);
    cr_assert_not_null (frame);
    wire_peek_t peek;
    wire_err_t err;
    cr_assert_eq (wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err), 0, "%s", err.text);
    cr_assert_eq (peek.version, 1);
    cr_assert_str_eq (peek.tag, "verify");
    cr_assert_eq (peek.desc, &wire_verify_desc);
    cr_assert_str_eq (peek.session, "edge-7f3a:42");
    cr_assert_eq (peek.status, 0);
    zframe_destroy (&frame);

    frame = wire_error_frame (504, "expired", -1);
    cr_assert_eq (wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err), 0);
    cr_assert_eq (peek.status, 504);
    cr_assert_eq (peek.desc, &wire_error_desc);
    cr_assert_str_empty (peek.session);
    zframe_destroy (&frame);

    //  a session over the limit, a non-map, garbage
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init (&sb);
    msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 2);
    msgpack_pack_str_with_body (&pk, "v", 1);
    msgpack_pack_int (&pk, 3);
    msgpack_pack_str_with_body (&pk, "session", 7);
    char long_session [80];
    memset (long_session, 's', sizeof (long_session));
    msgpack_pack_str_with_body (&pk, long_session, sizeof (long_session));
    cr_assert_eq (wire_peek (sb.data, sb.size, &peek, &err), -2);
    cr_assert_eq (err.status, 413);
    cr_assert (strstr (err.text, "field 'session': string of 80 bytes exceeds the limit 64"), "%s", err.text);
    msgpack_sbuffer_destroy (&sb);

    cr_assert_eq (wire_peek ("\x91\x01", 2, &peek, &err), -2);
    cr_assert_str_eq (err.text, "message is not a map");
    cr_assert_eq (wire_peek ("\x82\xa1v", 3, &peek, &err), -2);
    cr_assert_eq (err.status, 400);

    //  unknown t, other version: peek reports, does not judge
    msgpack_sbuffer_init (&sb);
    msgpack_pack_map (&pk, 2);
    msgpack_pack_str_with_body (&pk, "v", 1);
    msgpack_pack_int (&pk, 2);
    msgpack_pack_str_with_body (&pk, "t", 1);
    msgpack_pack_str_with_body (&pk, "future", 6);
    cr_assert_eq (wire_peek (sb.data, sb.size, &peek, &err), 0);
    cr_assert_eq (peek.version, 2);
    cr_assert_str_eq (peek.tag, "future");
    cr_assert_null (peek.desc);
    msgpack_sbuffer_destroy (&sb);
}

Test (codec_api, encoder_refuses_structs_that_break_the_schema)
{
    wire_err_t err;
    uint8_t *data = NULL;
    size_t size = 0;

    wire_extend_t ext;
    wire_msg_init (&wire_extend_desc, &ext);
    int32_t tokens [] = { 5, 6 };
    ext.tokens = tokens;
    ext.tokens_count = 2;
    cr_assert_eq (wire_encode (&wire_extend_desc, &ext, &data, &size, &err), -2);
    cr_assert_eq (err.status, 400);
    cr_assert_str_eq (err.text, "missing required field 'session'");
    cr_assert_null (data);

    ext.session = "s1";
    ext.pos = WIRE_MAX_POSITIONS + 1;
    cr_assert_eq (wire_encode (&wire_extend_desc, &ext, &data, &size, &err), -2);
    cr_assert_eq (err.status, 422);
    cr_assert_str_eq (err.text, "field 'pos': 32769 is above the maximum 32768");

    ext.pos = 10;
    tokens [1] = -4;
    cr_assert_eq (wire_encode (&wire_extend_desc, &ext, &data, &size, &err), -2);
    cr_assert_str_eq (err.text, "field 'tokens[1]': -4 is below the minimum 0");

    tokens [1] = 6;
    cr_assert_eq (wire_encode (&wire_extend_desc, &ext, &data, &size, &err), 0, "%s", err.text);
    wire_extend_t back;
    cr_assert_eq (wire_decode (&wire_extend_desc, data, size, &back, &err), 0);
    cr_assert_str_eq (back.session, "s1");
    cr_assert_eq (back.pos, 10);
    cr_assert_eq (back.tokens_count, 2);
    cr_assert_eq (back.tokens [1], 6);
    wire_msg_free (&wire_extend_desc, &back);
    cr_assert_null (back.tokens, "free zeroes the struct");
    wire_msg_free (&wire_extend_desc, &back);      //  harmless twice
    free (data);

    //  an enum value outside its range, a one_of with both set
    wire_generate_t gen;
    wire_msg_init (&wire_generate_desc, &gen);
    gen.prompt = "hi";
    gen.privacy = (wire_privacy_t) 9;
    cr_assert_eq (wire_encode (&wire_generate_desc, &gen, &data, &size, &err), -2);
    cr_assert_str_eq (err.text, "field 'privacy': enum value 9 out of range");
    gen.privacy = WIRE_PRIVACY_FULL;
    wire_chat_message_t chat = { .role = WIRE_ROLE_USER, .content = "x" };
    gen.messages = &chat;
    gen.messages_count = 1;
    cr_assert_eq (wire_encode (&wire_generate_desc, &gen, &data, &size, &err), -2);
    cr_assert_eq (err.status, 422);
    cr_assert_str_eq (err.text, "exactly one of 'prompt', 'messages' must be given (got 2)");
}

Test (codec_api, init_sets_schema_defaults)
{
    wire_generate_t gen;
    memset (&gen, 0xab, sizeof (gen));
    wire_msg_init (&wire_generate_desc, &gen);
    cr_assert_eq (gen.max_tokens, 256);
    cr_assert_float_eq (gen.temperature, 0.0, 0);
    cr_assert_float_eq (gen.top_p, 1.0, 0);
    cr_assert_eq (gen.draft_k, 4);
    cr_assert_eq (gen.drafter, WIRE_DRAFTER_MODEL);
    cr_assert_eq (gen.mode, WIRE_MODE_SPECULATIVE);
    cr_assert_not (gen.has_seed);
    cr_assert_null (gen.prompt);
    wire_tokenize_t tok;
    wire_msg_init (&wire_tokenize_desc, &tok);
    cr_assert (tok.add_special);
    cr_assert_not (tok.parse_special);

    //  a minimal message decodes to the same defaults
    wire_generate_t dec;
    const char frame [] = "\x83\xa1v\x01\xa1t\xa8generate\xa6prompt\xa2hi";
    cr_assert_eq (wire_decode (&wire_generate_desc, frame, sizeof (frame) - 1, &dec, NULL), 0);
    gen.prompt = "hi";
    char diff [64];
    cr_assert (wire_msg_equal (&wire_generate_desc, &gen, &dec, diff, sizeof (diff)), "%s", diff);
    wire_msg_free (&wire_generate_desc, &dec);
}

Test (codec_api, lookups)
{
    cr_assert_eq (wire_desc_by_name ("verify"), &wire_verify_desc);
    cr_assert_eq (wire_desc_by_name ("metric_event"), &wire_metric_event_desc);
    cr_assert_null (wire_desc_by_name ("nope"));
    cr_assert_eq (wire_desc_by_id (WIRE_MSG_PREFILL), &wire_prefill_desc);
    cr_assert_null (wire_desc_by_id (0));
    cr_assert_null (wire_desc_by_id (WIRE_MSG_COUNT_));
    cr_assert_str_eq (wire_privacy_names [WIRE_PRIVACY_NONE], "none");
    cr_assert_eq (WIRE_STATUS_BUSY, 429);
    cr_assert_eq (WIRE_MAX_ACTIVATION_BYTES, 64 * 1024 * 1024);
}

//  A 16 MiB fp16 activation block survives a frame round trip intact.
Test (codec_api, big_activation_block_roundtrips)
{
    uint32_t n_pos = 2048, dim = 4096;
    size_t bytes = (size_t) n_pos * dim * 2;
    uint8_t *data = malloc (bytes);
    for (size_t i = 0; i < bytes; i++)
        data [i] = (uint8_t) (i * 2654435761u >> 24);
    wire_activations_t act = { .dtype = WIRE_DTYPE_FP16, .n_pos = n_pos, .dim = dim,
                               .data = { data, bytes } };
    wire_activations_reply_t reply = { .session = "big", .pos = 7, .activations = &act };
    wire_err_t err;
    zframe_t *frame = wire_encode_frame (&wire_activations_reply_desc, &reply, &err);
    cr_assert_not_null (frame, "%s", err.text);
    cr_assert_lt (zframe_size (frame), bytes + 100, "no more than a small header on top");
    wire_activations_reply_t back;
    cr_assert_eq (wire_decode_frame (&wire_activations_reply_desc, frame, &back, &err), 0,
                  "%s", err.text);
    cr_assert_eq (back.activations->data.size, bytes);
    cr_assert_eq (memcmp (back.activations->data.data, data, bytes), 0);
    wire_msg_free (&wire_activations_reply_desc, &back);
    zframe_destroy (&frame);

    //  a block over max_activation_bytes is refused at the sender
    uint8_t *huge = malloc ((size_t) WIRE_MAX_ACTIVATION_BYTES + 4);
    act.n_pos = 1;
    act.dim = 1;
    act.dtype = WIRE_DTYPE_FP32;
    act.data.data = huge;
    act.data.size = (size_t) WIRE_MAX_ACTIVATION_BYTES + 4;
    cr_assert_null (wire_encode_frame (&wire_activations_reply_desc, &reply, &err));
    cr_assert_eq (err.status, 413);
    cr_assert (strstr (err.text, "field 'activations.data': bin of 67108868 bytes exceeds the limit 67108864"),
               "%s", err.text);
    free (huge);
    free (data);
}

//  Metric events: maps of labels round-trip; a duplicate label is refused.
Test (codec_api, metric_labels)
{
    wire_kv_t labels [] = { { "device", "cuda:0" }, { "dtype", "int8" } };
    wire_metric_event_t ev = { .service = "cloud-target", .instance = "i", .name = "m",
                               .kind = WIRE_METRIC_KIND_COUNTER, .value = 1,
                               .labels = labels, .labels_count = 2, .ts_ms = 1 };
    uint8_t *data;
    size_t size;
    wire_err_t err;
    cr_assert_eq (wire_encode (&wire_metric_event_desc, &ev, &data, &size, &err), 0, "%s", err.text);
    wire_metric_event_t back;
    cr_assert_eq (wire_decode (&wire_metric_event_desc, data, size, &back, &err), 0, "%s", err.text);
    cr_assert_eq (back.labels_count, 2);
    cr_assert_str_eq (back.labels [1].key, "dtype");
    cr_assert_str_eq (back.labels [1].value, "int8");
    wire_msg_free (&wire_metric_event_desc, &back);
    free (data);

    //  duplicate label: refused by the encoder and, from raw bytes, the decoder
    labels [1].key = "device";
    cr_assert_eq (wire_encode (&wire_metric_event_desc, &ev, &data, &size, &err), -2);
    cr_assert_str_eq (err.text, "field 'labels': duplicate key 'device'");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init (&sb);
    msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 8);
    const char *pairs [] = { "v", NULL, "service", "s", "instance", "i", "name", "n",
                             "kind", "gauge", "value", NULL, "ts_ms", NULL };
    for (int i = 0; i < 14; i += 2) {
        msgpack_pack_str_with_body (&pk, pairs [i], strlen (pairs [i]));
        if (pairs [i + 1])
            msgpack_pack_str_with_body (&pk, pairs [i + 1], strlen (pairs [i + 1]));
        else
            msgpack_pack_int (&pk, 1);
    }
    msgpack_pack_str_with_body (&pk, "labels", 6);
    msgpack_pack_map (&pk, 2);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_str_with_body (&pk, "k", 1);
        msgpack_pack_str_with_body (&pk, "x", 1);
    }
    cr_assert_eq (wire_decode (&wire_metric_event_desc, sb.data, sb.size, &back, &err), -2);
    cr_assert_str_eq (err.text, "field 'labels': duplicate key 'k'");
    msgpack_sbuffer_destroy (&sb);
}
