//  test_codec_malformed: the decoder turns every kind of bad frame into a
//  clear error with the right status, and never crashes or leaks.
//
//  Frames are built byte by byte with msgpack-c (or by hand where msgpack-c
//  would refuse to write them), so each test controls exactly what is wrong.

#include <criterion/criterion.h>
#include <msgpack.h>
#include <string.h>
#include "codec.h"

//  A raw frame under construction.
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} raw_t;

static void
raw_init (raw_t *r)
{
    msgpack_sbuffer_init (&r->sb);
    msgpack_packer_init (&r->pk, &r->sb, msgpack_sbuffer_write);
}

static void
raw_str (raw_t *r, const char *s)
{
    msgpack_pack_str_with_body (&r->pk, s, strlen (s));
}

//  Starts a top-level map of n fields plus v and t.
static void
raw_begin (raw_t *r, size_t n, int version, const char *tag)
{
    raw_init (r);
    msgpack_pack_map (&r->pk, n + 2);
    raw_str (r, "v");
    msgpack_pack_int (&r->pk, version);
    raw_str (r, "t");
    raw_str (r, tag);
}

static void
raw_bytes (raw_t *r, const void *data, size_t size)
{
    msgpack_sbuffer_write (&r->sb, data, size);
}

//  Decodes data as desc and asserts it fails with status and a text
//  containing expect.
static void
s_expect (const wire_desc_t *desc, const void *data, size_t size, int status, const char *expect)
{
    void *msg = calloc (1, desc->size);
    wire_err_t err = { 0 };
    int rc = wire_decode (desc, data, size, msg, &err);
    cr_assert_eq (rc, -2, "%s: decode should fail with '%s' (rc %d)", desc->name, expect, rc);
    cr_assert_eq (err.status, status, "want status %d, got %d: %s", status, err.status, err.text);
    cr_assert (strstr (err.text, expect), "want '%s' in error '%s'", expect, err.text);
    //  a failed decode leaves nothing behind
    uint8_t zero [512] = { 0 };
    cr_assert (desc->size <= sizeof (zero) && memcmp (msg, zero, desc->size) == 0,
               "struct not zeroed after a failed decode");
    free (msg);
}

static void
s_expect_raw (const wire_desc_t *desc, raw_t *r, int status, const char *expect)
{
    s_expect (desc, r->sb.data, r->sb.size, status, expect);
    msgpack_sbuffer_destroy (&r->sb);
}

//  A valid generate request with one extra field written by fn.
static void
s_generate_with (raw_t *r, const char *key, void (*fn) (raw_t *))
{
    raw_begin (r, 2, 1, "generate");
    raw_str (r, "prompt");
    raw_str (r, "hi");
    raw_str (r, key);
    fn (r);
}

Test (codec_malformed, every_truncation_is_rejected)
{
    const wire_desc_t *desc = &wire_verify_desc;
    uint8_t *data;
    size_t size;
    wire_err_t err;
    cr_assert_eq (wire_encode (desc, wire_example (WIRE_MSG_VERIFY), &data, &size, &err), 0);
    for (size_t cut = 0; cut < size; cut++) {
        wire_verify_t msg;
        int rc = wire_decode (desc, data, cut, &msg, &err);
        cr_assert_eq (rc, -2, "prefix of %zu/%zu bytes accepted", cut, size);
        cr_assert_eq (err.status, 400, "prefix %zu: status %d (%s)", cut, err.status, err.text);
        cr_assert (cut == 0? strstr (err.text, "empty") != NULL
                           : strstr (err.text, "truncated") != NULL,
                   "prefix %zu: '%s'", cut, err.text);
    }
    free (data);
}

Test (codec_malformed, trailing_bytes_are_rejected)
{
    uint8_t *data;
    size_t size;
    cr_assert_eq (wire_encode (&wire_extend_desc, wire_example (WIRE_MSG_EXTEND), &data, &size, NULL), 0);
    data = realloc (data, size + 3);
    memcpy (data + size, "\x01\x02\x03", 3);
    s_expect (&wire_extend_desc, data, size + 3, 400, "3 trailing bytes after the message");
    free (data);
}

Test (codec_malformed, not_a_map_and_not_msgpack)
{
    raw_t r;
    raw_init (&r);
    msgpack_pack_array (&r.pk, 1);
    msgpack_pack_int (&r.pk, 1);
    s_expect_raw (&wire_generate_desc, &r, 400, "message is not a map (got array)");

    s_expect (&wire_generate_desc, "\xc1", 1, 400, "reserved byte 0xc1");
    s_expect (&wire_generate_desc, "", 0, 400, "empty message");
    //  JSON text is not MessagePack: '{' reads as the int 123, then junk
    s_expect (&wire_generate_desc, "{\"v\":1}", 7, 400, "6 trailing bytes");
}

static void s_put_str_hello (raw_t *r) { raw_str (r, "hello"); }
static void s_put_true (raw_t *r) { msgpack_pack_true (&r->pk); }
static void s_put_float (raw_t *r) { msgpack_pack_double (&r->pk, 1.5); }
static void s_put_map (raw_t *r) { msgpack_pack_map (&r->pk, 0); }
static void s_put_int (raw_t *r) { msgpack_pack_int (&r->pk, 3); }

Test (codec_malformed, wrong_types_name_the_field)
{
    raw_t r;
    s_generate_with (&r, "max_tokens", s_put_str_hello);
    s_expect_raw (&wire_generate_desc, &r, 400, "field 'max_tokens': expected uint, got str");
    s_generate_with (&r, "temperature", s_put_true);
    s_expect_raw (&wire_generate_desc, &r, 400, "field 'temperature': expected float, got bool");
    s_generate_with (&r, "top_k", s_put_float);
    s_expect_raw (&wire_generate_desc, &r, 400, "field 'top_k': expected uint, got float");
    s_generate_with (&r, "stop", s_put_map);
    s_expect_raw (&wire_generate_desc, &r, 400, "field 'stop': expected array, got map");
    s_generate_with (&r, "stream", s_put_int);
    s_expect_raw (&wire_generate_desc, &r, 400, "field 'stream': expected bool, got int");
    s_generate_with (&r, "privacy", s_put_int);
    s_expect_raw (&wire_generate_desc, &r, 400, "field 'privacy': expected str, got int");

    //  an element of a nested array of the wrong type: the path says where
    raw_begin (&r, 2, 1, "generate");
    raw_str (&r, "prompt");
    raw_str (&r, "hi");
    raw_str (&r, "stop");
    msgpack_pack_array (&r.pk, 2);
    raw_str (&r, "a");
    msgpack_pack_int (&r.pk, 7);
    s_expect_raw (&wire_generate_desc, &r, 400, "field 'stop[1]': expected str, got int");

    //  a map key that is not a string
    raw_begin (&r, 1, 1, "generate");
    msgpack_pack_int (&r.pk, 5);
    raw_str (&r, "hi");
    s_expect_raw (&wire_generate_desc, &r, 400, "map key 2 is int, not a string");
}

Test (codec_malformed, lying_lengths_fail_before_allocating)
{
    //  str8 declaring 200 bytes with 3 left
    raw_t r;
    raw_begin (&r, 1, 1, "generate");
    raw_str (&r, "prompt");
    raw_bytes (&r, "\xd9\xc8" "abc", 5);
    s_expect_raw (&wire_generate_desc, &r, 400, "a str declares 200 bytes but 3 remain");

    //  array32 declaring 4 billion elements in a tiny frame
    raw_begin (&r, 1, 1, "extend");
    raw_str (&r, "tokens");
    raw_bytes (&r, "\xdd\xff\xff\xff\xff\x01", 6);
    s_expect_raw (&wire_extend_desc, &r, 400, "an array declares 4294967295 entries but 1 bytes remain");

    //  map32 the same, at the top
    s_expect (&wire_extend_desc, "\xdf\xff\xff\xff\xff\x00\x00", 7, 400,
              "a map declares 4294967295 entries");

    //  bin32 declaring 3 GiB
    raw_begin (&r, 1, 1, "generate");
    raw_str (&r, "prompt");
    raw_bytes (&r, "\xc6\xc0\x00\x00\x00\x00", 6);
    s_expect_raw (&wire_generate_desc, &r, 400, "a bin declares 3221225472 bytes but 1 remain");
}

Test (codec_malformed, oversized_values_get_413)
{
    //  a 1 MiB + 1 prompt
    size_t len = WIRE_MAX_STRING_BYTES + 1;
    char *big = malloc (len + 1);
    memset (big, 'a', len);
    big [len] = 0;
    raw_t r;
    raw_begin (&r, 1, 1, "generate");
    raw_str (&r, "prompt");
    raw_str (&r, big);
    s_expect_raw (&wire_generate_desc, &r, 413,
                  "field 'prompt': string of 1048577 bytes exceeds the limit 1048576");
    free (big);

    //  one token too many
    raw_begin (&r, 3, 1, "extend");
    raw_str (&r, "session");
    raw_str (&r, "s");
    raw_str (&r, "pos");
    msgpack_pack_int (&r.pk, 0);
    raw_str (&r, "tokens");
    msgpack_pack_array (&r.pk, WIRE_MAX_TOKENS_PER_REQUEST + 1);
    for (int i = 0; i <= WIRE_MAX_TOKENS_PER_REQUEST; i++)
        msgpack_pack_int (&r.pk, 1);
    s_expect_raw (&wire_extend_desc, &r, 413, "field 'tokens': 32769 entries exceed the limit 32768");

    //  a session id over 64 bytes
    raw_begin (&r, 1, 1, "session_close");
    raw_str (&r, "session");
    raw_str (&r, "0123456789012345678901234567890123456789012345678901234567890123456789");
    s_expect_raw (&wire_session_close_desc, &r, 413, "field 'session': string of 70 bytes exceeds the limit 64");

    //  a frame over max_frame_bytes is refused before it is read
    size_t huge = (size_t) WIRE_MAX_FRAME_BYTES + 1;
    uint8_t *frame = calloc (1, huge);
    s_expect (&wire_generate_desc, frame, huge, 413, "exceeds max_frame_bytes");
    free (frame);
}

//  n nested arrays inside an unknown key
static void
s_nested (raw_t *r, int n)
{
    raw_begin (r, 2, 1, "session_close");
    raw_str (r, "session");
    raw_str (r, "s");
    raw_str (r, "future_field");
    for (int i = 0; i < n; i++)
        msgpack_pack_array (&r->pk, 1);
    msgpack_pack_nil (&r->pk);
}

Test (codec_malformed, deep_nesting_is_rejected_even_in_unknown_keys)
{
    raw_t r;
    //  the top map is level 1: 7 more arrays reach the limit of 8
    s_nested (&r, WIRE_MAX_DEPTH - 1);
    wire_session_close_t msg;
    wire_err_t err;
    cr_assert_eq (wire_decode (&wire_session_close_desc, r.sb.data, r.sb.size, &msg, &err), 0,
                  "depth at the limit refused: %s", err.text);
    wire_msg_free (&wire_session_close_desc, &msg);
    msgpack_sbuffer_destroy (&r.sb);

    s_nested (&r, WIRE_MAX_DEPTH);
    s_expect_raw (&wire_session_close_desc, &r, 400, "nested deeper than 8 levels");
    //  far deeper than msgpack-c's own stack (32): still a clean error
    s_nested (&r, 10000);
    s_expect_raw (&wire_session_close_desc, &r, 400, "nested deeper than 8 levels");
}

Test (codec_malformed, too_many_objects_is_413)
{
    raw_t r;
    raw_begin (&r, 2, 1, "session_close");
    raw_str (&r, "session");
    raw_str (&r, "s");
    raw_str (&r, "junk");
    msgpack_pack_array (&r.pk, WIRE_MAX_OBJECTS);
    for (int i = 0; i < WIRE_MAX_OBJECTS; i++)
        msgpack_pack_nil (&r.pk);
    s_expect_raw (&wire_session_close_desc, &r, 413, "more than 262144 objects");
}

Test (codec_malformed, schema_version_and_type)
{
    raw_t r;
    raw_begin (&r, 1, 2, "session_close");
    raw_str (&r, "session");
    raw_str (&r, "s");
    s_expect_raw (&wire_session_close_desc, &r, 400, "unsupported schema version 2 (this build speaks 1)");

    raw_init (&r);
    msgpack_pack_map (&r.pk, 1);
    raw_str (&r, "session");
    raw_str (&r, "s");
    s_expect_raw (&wire_session_close_desc, &r, 400, "missing schema version 'v'");

    raw_init (&r);
    msgpack_pack_map (&r.pk, 2);
    raw_str (&r, "v");
    raw_str (&r, "1");
    raw_str (&r, "session");
    raw_str (&r, "s");
    s_expect_raw (&wire_session_close_desc, &r, 400, "schema version 'v' must be an int, got str");

    raw_begin (&r, 1, 1, "verify");
    raw_str (&r, "session");
    raw_str (&r, "s");
    s_expect_raw (&wire_session_close_desc, &r, 400, "expected message 'session_close', got 'verify'");
}

Test (codec_malformed, missing_required_and_duplicates)
{
    raw_t r;
    raw_begin (&r, 1, 1, "extend");
    raw_str (&r, "session");
    raw_str (&r, "s");
    s_expect_raw (&wire_extend_desc, &r, 400, "missing required field 'pos'");

    //  required fields sent as nil are missing too
    raw_begin (&r, 1, 1, "session_close");
    raw_str (&r, "session");
    msgpack_pack_nil (&r.pk);
    s_expect_raw (&wire_session_close_desc, &r, 400, "missing required field 'session'");

    raw_begin (&r, 2, 1, "session_close");
    raw_str (&r, "session");
    raw_str (&r, "a");
    raw_str (&r, "session");
    raw_str (&r, "b");
    s_expect_raw (&wire_session_close_desc, &r, 400, "duplicate key 'session'");
}

static void s_put_zero (raw_t *r) { msgpack_pack_int (&r->pk, 0); }
static void s_put_big (raw_t *r) { msgpack_pack_uint64 (&r->pk, 5000000000ull); }
static void s_put_neg (raw_t *r) { msgpack_pack_int (&r->pk, -1); }
static void s_put_nan (raw_t *r) { msgpack_pack_double (&r->pk, NAN); }
static void s_put_two (raw_t *r) { msgpack_pack_double (&r->pk, 2.0); }
static void s_put_bad_enum (raw_t *r) { raw_str (r, "everything"); }

Test (codec_malformed, out_of_range_values_get_422)
{
    raw_t r;
    s_generate_with (&r, "max_tokens", s_put_zero);
    s_expect_raw (&wire_generate_desc, &r, 422, "field 'max_tokens': 0 is below the minimum 1");
    s_generate_with (&r, "max_tokens", s_put_big);
    s_expect_raw (&wire_generate_desc, &r, 422, "field 'max_tokens': 5000000000 is above the maximum 8192");
    s_generate_with (&r, "draft_k", s_put_neg);
    s_expect_raw (&wire_generate_desc, &r, 422, "field 'draft_k': -1 is below the minimum 0");
    s_generate_with (&r, "top_p", s_put_two);
    s_expect_raw (&wire_generate_desc, &r, 422, "field 'top_p': 2 is above the maximum 1");
    s_generate_with (&r, "temperature", s_put_nan);
    s_expect_raw (&wire_generate_desc, &r, 422, "field 'temperature': NaN is not a valid value");
    s_generate_with (&r, "privacy", s_put_bad_enum);
    s_expect_raw (&wire_generate_desc, &r, 422,
                  "field 'privacy': 'everything' is not one of prefix, full, none");

    //  a token id above int32 in an array element
    raw_begin (&r, 3, 1, "extend");
    raw_str (&r, "session");
    raw_str (&r, "s");
    raw_str (&r, "pos");
    msgpack_pack_int (&r.pk, 0);
    raw_str (&r, "tokens");
    msgpack_pack_array (&r.pk, 2);
    msgpack_pack_int (&r.pk, 5);
    msgpack_pack_int64 (&r.pk, 3000000000ll);
    s_expect_raw (&wire_extend_desc, &r, 422, "field 'tokens[1]': 3000000000 is above the maximum 2147483647");
}

Test (codec_malformed, one_of_groups)
{
    raw_t r;
    raw_begin (&r, 0, 1, "generate");
    s_expect_raw (&wire_generate_desc, &r, 422, "exactly one of 'prompt', 'messages' must be given (got 0)");

    raw_begin (&r, 2, 1, "generate");
    raw_str (&r, "prompt");
    raw_str (&r, "hi");
    raw_str (&r, "messages");
    msgpack_pack_array (&r.pk, 1);
    msgpack_pack_map (&r.pk, 2);
    raw_str (&r, "role");
    raw_str (&r, "user");
    raw_str (&r, "content");
    raw_str (&r, "hi");
    s_expect_raw (&wire_generate_desc, &r, 422, "exactly one of 'prompt', 'messages' must be given (got 2)");

    //  a nested message's error carries its path
    raw_begin (&r, 1, 1, "generate");
    raw_str (&r, "messages");
    msgpack_pack_array (&r.pk, 1);
    msgpack_pack_map (&r.pk, 1);
    raw_str (&r, "role");
    raw_str (&r, "user");
    s_expect_raw (&wire_generate_desc, &r, 400, "missing required field 'messages[0].content'");
}

Test (codec_malformed, bad_strings)
{
    raw_t r;
    raw_begin (&r, 1, 1, "generate");
    raw_str (&r, "prompt");
    msgpack_pack_str_with_body (&r.pk, "a\0b", 3);
    s_expect_raw (&wire_generate_desc, &r, 422, "field 'prompt': string contains a NUL byte");

    const char *bad_utf8 [] = { "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82", "\xf4\x90\x80\x80" };
    for (size_t i = 0; i < sizeof (bad_utf8) / sizeof (bad_utf8 [0]); i++) {
        raw_begin (&r, 1, 1, "generate");
        raw_str (&r, "prompt");
        raw_str (&r, bad_utf8 [i]);
        s_expect_raw (&wire_generate_desc, &r, 422, "field 'prompt': string is not valid UTF-8");
    }
    //  valid multi-byte text passes
    raw_begin (&r, 1, 1, "generate");
    raw_str (&r, "prompt");
    raw_str (&r, "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80");
    wire_generate_t msg;
    wire_err_t err;
    cr_assert_eq (wire_decode (&wire_generate_desc, r.sb.data, r.sb.size, &msg, &err), 0, "%s", err.text);
    cr_assert_str_eq (msg.prompt, "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80");
    wire_msg_free (&wire_generate_desc, &msg);
    msgpack_sbuffer_destroy (&r.sb);
}

//  Packs an activations map (nested) with the given shape and sizes.
static void
s_activations (raw_t *r, const char *dtype, int n_pos, int dim, size_t data_size, int scales_size)
{
    msgpack_pack_map (&r->pk, scales_size >= 0? 5: 4);
    raw_str (r, "dtype");
    raw_str (r, dtype);
    raw_str (r, "n_pos");
    msgpack_pack_int (&r->pk, n_pos);
    raw_str (r, "dim");
    msgpack_pack_int (&r->pk, dim);
    raw_str (r, "data");
    uint8_t zeros [64] = { 0 };
    msgpack_pack_bin_with_body (&r->pk, zeros, data_size);
    if (scales_size >= 0) {
        raw_str (r, "scales");
        msgpack_pack_bin_with_body (&r->pk, zeros, scales_size);
    }
}

static void
s_prefill_with_activations (raw_t *r, const char *dtype, int n_pos, int dim,
                            size_t data_size, int scales_size)
{
    raw_begin (r, 2, 1, "prefill");
    raw_str (r, "session");
    raw_str (r, "s");
    raw_str (r, "activations");
    s_activations (r, dtype, n_pos, dim, data_size, scales_size);
}

Test (codec_malformed, activation_shapes_are_checked)
{
    raw_t r;
    s_prefill_with_activations (&r, "fp16", 2, 4, 16, -1);
    wire_prefill_t msg;
    wire_err_t err;
    cr_assert_eq (wire_decode (&wire_prefill_desc, r.sb.data, r.sb.size, &msg, &err), 0, "%s", err.text);
    cr_assert_eq (msg.activations->dtype, WIRE_DTYPE_FP16);
    cr_assert_eq (msg.activations->data.size, 16);
    cr_assert_eq (msg.pos, 0, "default pos");
    wire_msg_free (&wire_prefill_desc, &msg);
    msgpack_sbuffer_destroy (&r.sb);

    s_prefill_with_activations (&r, "fp16", 2, 4, 15, -1);
    s_expect_raw (&wire_prefill_desc, &r, 422,
                  "field 'activations': 'data' has 15 bytes, n_pos 2 x dim 4 of fp16 need 16");
    s_prefill_with_activations (&r, "int8", 2, 4, 8, -1);
    s_expect_raw (&wire_prefill_desc, &r, 422, "int8 needs 'scales'");
    s_prefill_with_activations (&r, "int8", 2, 4, 8, 4);
    s_expect_raw (&wire_prefill_desc, &r, 422, "'scales' has 4 bytes, n_pos 2 needs 8");
    s_prefill_with_activations (&r, "fp32", 2, 4, 32, 8);
    s_expect_raw (&wire_prefill_desc, &r, 422, "'scales' is only for int8");
    //  a shape whose product is over the limit, with a tiny data: 413
    s_prefill_with_activations (&r, "fp32", 32768, 65536, 4, -1);
    s_expect_raw (&wire_prefill_desc, &r, 413, "over max_activation_bytes");
    s_prefill_with_activations (&r, "bf16", 1, 1, 2, -1);
    s_expect_raw (&wire_prefill_desc, &r, 422, "'bf16' is not one of int8, fp16, fp32");
}

Test (codec_malformed, draft_distributions_are_checked)
{
    //  verify with 1 draft token, 2 tokens of input, a draft whose counts differ
    raw_t r;
    raw_begin (&r, 5, 1, "verify");
    raw_str (&r, "session");
    raw_str (&r, "s");
    raw_str (&r, "pos");
    msgpack_pack_int (&r.pk, 4);
    raw_str (&r, "tokens");
    msgpack_pack_array (&r.pk, 2);
    msgpack_pack_int (&r.pk, 1);
    msgpack_pack_int (&r.pk, 2);
    raw_str (&r, "draft_tokens");
    msgpack_pack_array (&r.pk, 1);
    msgpack_pack_int (&r.pk, 2);
    raw_str (&r, "drafts");
    msgpack_pack_array (&r.pk, 1);
    msgpack_pack_map (&r.pk, 2);
    raw_str (&r, "tokens");
    msgpack_pack_array (&r.pk, 2);
    msgpack_pack_int (&r.pk, 2);
    msgpack_pack_int (&r.pk, 3);
    raw_str (&r, "probs");
    msgpack_pack_array (&r.pk, 1);
    msgpack_pack_float (&r.pk, 0.5f);
    s_expect_raw (&wire_verify_desc, &r, 422, "field 'drafts[0]': 2 tokens but 1 probs");

    //  k+1 rows rule
    raw_begin (&r, 4, 1, "verify");
    raw_str (&r, "session");
    raw_str (&r, "s");
    raw_str (&r, "pos");
    msgpack_pack_int (&r.pk, 4);
    raw_str (&r, "tokens");
    msgpack_pack_array (&r.pk, 1);
    msgpack_pack_int (&r.pk, 1);
    raw_str (&r, "draft_tokens");
    msgpack_pack_array (&r.pk, 1);
    msgpack_pack_int (&r.pk, 2);
    s_expect_raw (&wire_verify_desc, &r, 422, "verify: 1 input rows for 1 draft_tokens (need k+1 = 2)");
}

Test (codec_malformed, unknown_keys_and_nil_are_tolerated)
{
    raw_t r;
    raw_begin (&r, 4, 1, "generate");
    raw_str (&r, "prompt");
    raw_str (&r, "hi");
    raw_str (&r, "future_option");
    msgpack_pack_map (&r.pk, 1);
    raw_str (&r, "x");
    msgpack_pack_array (&r.pk, 2);
    msgpack_pack_int (&r.pk, 1);
    msgpack_pack_bin_with_body (&r.pk, "ab", 2);
    raw_str (&r, "max_tokens");
    msgpack_pack_nil (&r.pk);
    raw_str (&r, "seed");
    msgpack_pack_nil (&r.pk);
    wire_generate_t msg;
    wire_err_t err;
    cr_assert_eq (wire_decode (&wire_generate_desc, r.sb.data, r.sb.size, &msg, &err), 0, "%s", err.text);
    cr_assert_str_eq (msg.prompt, "hi");
    cr_assert_eq (msg.max_tokens, 256, "nil takes the default");
    cr_assert_not (msg.has_seed, "nil optional is absent");
    cr_assert_eq (msg.privacy, WIRE_PRIVACY_PREFIX);
    cr_assert_eq (msg.mode, WIRE_MODE_SPECULATIVE);
    cr_assert_float_eq (msg.top_p, 1.0, 0);
    wire_msg_free (&wire_generate_desc, &msg);
    msgpack_sbuffer_destroy (&r.sb);

    //  no `t` at all: accepted as what the service expects; ints in floats
    raw_init (&r);
    msgpack_pack_map (&r.pk, 3);
    raw_str (&r, "v");
    msgpack_pack_int (&r.pk, 1);
    raw_str (&r, "prompt");
    raw_str (&r, "x");
    raw_str (&r, "temperature");
    msgpack_pack_int (&r.pk, 1);
    cr_assert_eq (wire_decode (&wire_generate_desc, r.sb.data, r.sb.size, &msg, &err), 0, "%s", err.text);
    cr_assert_float_eq (msg.temperature, 1.0, 0);
    wire_msg_free (&wire_generate_desc, &msg);
    msgpack_sbuffer_destroy (&r.sb);
}

//  Random corruption of valid frames: every outcome is ok or a clean -2.
Test (codec_malformed, random_corruption_never_crashes)
{
    uint32_t seed = 12345;
    int rejected = 0, total = 0;
    for (int id = 1; id < WIRE_MSG_COUNT_; id++) {
        const wire_desc_t *desc = wire_desc_by_id (id);
        uint8_t *data;
        size_t size;
        cr_assert_eq (wire_encode (desc, wire_example (id), &data, &size, NULL), 0);
        void *msg = calloc (1, desc->size);
        for (int iter = 0; iter < 600; iter++) {
            uint8_t *copy = malloc (size);
            memcpy (copy, data, size);
            int flips = 1 + iter % 3;
            for (int k = 0; k < flips; k++) {
                seed = seed * 1103515245u + 12345u;
                size_t at = (seed >> 8) % size;
                seed = seed * 1103515245u + 12345u;
                copy [at] = (uint8_t) (seed >> 16);
            }
            wire_err_t err;
            int rc = wire_decode (desc, copy, size, msg, &err);
            cr_assert (rc == 0 || rc == -2, "rc %d", rc);
            if (rc == 0)
                wire_msg_free (desc, msg);
            else {
                cr_assert (err.status == 400 || err.status == 413 || err.status == 422,
                           "status %d", err.status);
                cr_assert_gt (strlen (err.text), 0);
                rejected++;
            }
            total++;
            free (copy);
        }
        free (msg);
        free (data);
    }
    cr_assert_gt (rejected, total / 4, "corruption should mostly be caught (%d/%d)", rejected, total);
}

Test (codec_malformed, duplicate_envelope_keys)
{
    raw_t r;
    raw_init (&r);
    msgpack_pack_map (&r.pk, 3);
    raw_str (&r, "v");
    msgpack_pack_int (&r.pk, 1);
    raw_str (&r, "session");
    raw_str (&r, "s");
    raw_str (&r, "v");
    msgpack_pack_int (&r.pk, 2);
    s_expect_raw (&wire_session_close_desc, &r, 400, "duplicate key 'v'");

    raw_init (&r);
    msgpack_pack_map (&r.pk, 2);
    raw_str (&r, "v");
    msgpack_pack_int (&r.pk, -1);
    raw_str (&r, "session");
    raw_str (&r, "s");
    s_expect_raw (&wire_session_close_desc, &r, 400, "unsupported schema version -1");
}

//  A map of 100000 distinct unknown keys (within max_objects) decodes in
//  linear time: no key-by-key comparison of unknown keys.
Test (codec_malformed, many_unknown_keys_stay_linear, .timeout = 30)
{
    raw_t r;
    int n = 100000;
    raw_begin (&r, n + 1, 1, "session_close");
    raw_str (&r, "session");
    raw_str (&r, "s");
    char key [32];
    for (int i = 0; i < n; i++) {
        snprintf (key, sizeof (key), "k%d", i);
        raw_str (&r, key);
        msgpack_pack_nil (&r.pk);
    }
    int64_t start = zclock_usecs ();
    wire_session_close_t msg;
    wire_err_t err;
    cr_assert_eq (wire_decode (&wire_session_close_desc, r.sb.data, r.sb.size, &msg, &err), 0, "%s", err.text);
    int64_t usecs = zclock_usecs () - start;
    cr_assert_lt (usecs, 2000000, "decode took %lld us", (long long) usecs);
    cr_assert_str_eq (msg.session, "s");
    wire_msg_free (&wire_session_close_desc, &msg);
    msgpack_sbuffer_destroy (&r.sb);
}
