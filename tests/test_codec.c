//  test_codec: every wire message round-trips C -> C through the generic
//  codec, and the codec's encoder/validator rejects structs that break the
//  schema.
//
//  The samples are the schema's own examples (wire_example, generated from
//  messages.toml), so adding a message to the TOML adds it here too.

#include <criterion/criterion.h>
#include <string.h>
#include "codec.h"

//  Encode the example, decode, compare field by field, re-encode and compare
//  bytes; for every message.
Test (codec, every_message_roundtrips_c_to_c)
{
    for (int id = 1; id < WIRE_MSG_COUNT_; id++) {
        const wire_desc_t *desc = wire_desc_by_id (id);
        cr_assert_not_null (desc);
        const void *sample = wire_example (id);
        cr_assert_not_null (sample, "no example for %s", desc->name);
        wire_err_t err;
        uint8_t *data = NULL;
        size_t size = 0;
        int rc = wire_encode (desc, sample, &data, &size, &err);
        cr_assert_eq (rc, 0, "%s: encode failed: %d %s", desc->name, err.status, err.text);
        cr_assert_gt (size, 0);

        void *decoded = calloc (1, desc->size);
        rc = wire_decode (desc, data, size, decoded, &err);
        cr_assert_eq (rc, 0, "%s: decode failed: %d %s", desc->name, err.status, err.text);
        char diff [128];
        cr_assert (wire_msg_equal (desc, sample, decoded, diff, sizeof (diff)),
                   "%s: field '%s' differs after the round trip", desc->name, diff);

        uint8_t *again = NULL;
        size_t again_size = 0;
        rc = wire_encode (desc, decoded, &again, &again_size, &err);
        cr_assert_eq (rc, 0, "%s: re-encode failed: %s", desc->name, err.text);
        cr_assert_eq (again_size, size, "%s: re-encoded size differs", desc->name);
        cr_assert_arr_eq (again, data, size, "%s: re-encoded bytes differ", desc->name);

        wire_msg_free (desc, decoded);
        free (decoded);
        free (data);
        free (again);
    }
}

//  Encodes msg, decodes it, checks equality and byte-identical re-encoding;
//  returns the decoded copy (caller frees with wire_msg_free + free).
static void *
s_roundtrip (const wire_desc_t *desc, const void *msg)
{
    wire_err_t err;
    uint8_t *data, *again;
    size_t size, again_size;
    cr_assert_eq (wire_encode (desc, msg, &data, &size, &err), 0, "%s", err.text);
    void *back = calloc (1, desc->size);
    cr_assert_eq (wire_decode (desc, data, size, back, &err), 0, "%s", err.text);
    char diff [128];
    cr_assert (wire_msg_equal (desc, msg, back, diff, sizeof (diff)), "'%s' differs", diff);
    cr_assert_eq (wire_encode (desc, back, &again, &again_size, &err), 0, "%s", err.text);
    cr_assert (again_size == size && memcmp (again, data, size) == 0, "re-encoding differs");
    free (data);
    free (again);
    return back;
}

//  Values at the edges of their types survive exactly.
Test (codec, extreme_values_roundtrip)
{
    uint64_t accept [WIRE_MAX_DRAFT_K];
    for (int i = 0; i < WIRE_MAX_DRAFT_K; i++)
        accept [i] = UINT64_MAX - (uint64_t) i;
    wire_gen_stats_t stats = { .prompt_tokens = UINT32_MAX, .tokens = 0,
                               .drafts_proposed = UINT64_MAX, .drafts_accepted = 1,
                               .accept_by_pos = accept, .accept_by_pos_count = WIRE_MAX_DRAFT_K,
                               .ttft_ms = 1e300, .per_token_ms = 5e-324, .degraded = true };
    int32_t tokens [] = { 0, INT32_MAX, 127, 128, 255, 256, 65535, 65536 };
    wire_generate_final_t fin = { .text = "", .tokens = tokens, .tokens_count = 8,
                                  .finish_reason = WIRE_FINISH_REASON_LENGTH, .stats = &stats };
    wire_generate_final_t *back = s_roundtrip (&wire_generate_final_desc, &fin);
    cr_assert_eq (back->stats->drafts_proposed, UINT64_MAX);
    cr_assert_eq (back->stats->accept_by_pos [WIRE_MAX_DRAFT_K - 1], UINT64_MAX - WIRE_MAX_DRAFT_K + 1);
    cr_assert_eq (back->tokens [1], INT32_MAX);
    cr_assert_str_eq (back->text, "");
    wire_msg_free (&wire_generate_final_desc, back);
    free (back);

    //  float32 probabilities keep every bit; metric values of any float
    int32_t cand [] = { 1, 2, 3 };
    float probs [] = { 1.0f / 3.0f, 1e-38f, 0.0f };
    wire_draft_t draft = { .tokens = cand, .tokens_count = 3, .probs = probs, .probs_count = 3 };
    wire_draft_t *d = s_roundtrip (&wire_draft_desc, &draft);
    cr_assert_eq (memcmp (d->probs, probs, sizeof (probs)), 0);
    wire_msg_free (&wire_draft_desc, d);
    free (d);

    wire_metric_event_t ev = { .service = "s", .instance = "i", .name = "n",
                               .kind = WIRE_METRIC_KIND_GAUGE, .value = -1.5e-10,
                               .ts_ms = UINT64_MAX };
    wire_metric_event_t *e = s_roundtrip (&wire_metric_event_desc, &ev);
    cr_assert_eq (e->value, -1.5e-10);
    cr_assert_null (e->labels, "absent map stays absent");
    wire_msg_free (&wire_metric_event_desc, e);
    free (e);
}

//  Absent, empty and present arrays stay distinct; required empty arrays
//  are sent as [].
Test (codec, presence_is_preserved)
{
    wire_tokenize_reply_t empty = { .tokens = NULL, .tokens_count = 0 };
    uint8_t *data;
    size_t size;
    cr_assert_eq (wire_encode (&wire_tokenize_reply_desc, &empty, &data, &size, NULL), 0);
    //  {v:1, t:"tokenize_reply", tokens:[]}
    const uint8_t want [] = "\x83\xa1v\x01\xa1t\xaetokenize_reply\xa6tokens\x90";
    cr_assert_eq (size, sizeof (want) - 1);
    cr_assert_arr_eq (data, want, size);
    wire_tokenize_reply_t back;
    cr_assert_eq (wire_decode (&wire_tokenize_reply_desc, data, size, &back, NULL), 0);
    cr_assert_eq (back.tokens_count, 0);
    wire_msg_free (&wire_tokenize_reply_desc, &back);
    free (data);

    //  optional: absent vs empty
    wire_generate_t gen;
    wire_msg_init (&wire_generate_desc, &gen);
    gen.prompt = "p";
    wire_generate_t *a = s_roundtrip (&wire_generate_desc, &gen);
    cr_assert_null (a->stop);
    cr_assert_not (a->has_seed);
    wire_msg_free (&wire_generate_desc, a);
    free (a);
    char *no_stops [1];
    gen.stop = no_stops;
    gen.stop_count = 0;
    gen.seed = 0;
    gen.has_seed = true;
    wire_generate_t *b = s_roundtrip (&wire_generate_desc, &gen);
    cr_assert_not_null (b->stop);
    cr_assert_eq (b->stop_count, 0);
    cr_assert (b->has_seed);
    cr_assert_eq (b->seed, 0);
    wire_msg_free (&wire_generate_desc, b);
    free (b);
}

//  Every descriptor is consistent with its struct: offsets inside it,
//  counts and has_ flags where the type needs them.
Test (codec, descriptors_are_consistent)
{
    for (int id = 1; id < WIRE_MSG_COUNT_; id++) {
        const wire_desc_t *desc = wire_desc_by_id (id);
        cr_assert_eq (desc->id, id);
        cr_assert_eq (wire_desc_by_name (desc->name), desc);
        for (size_t i = 0; i < desc->field_count; i++) {
            const wire_field_t *f = &desc->fields [i];
            cr_assert_lt (f->offset, desc->size, "%s.%s", desc->name, f->key);
            if (f->is_array || f->type == WIRE_T_MAP) {
                cr_assert_lt (f->count_offset, desc->size);
                cr_assert_gt (f->max_count, 0, "%s.%s unbounded", desc->name, f->key);
            }
            if (f->type == WIRE_T_STR || f->type == WIRE_T_BIN || f->type == WIRE_T_MAP)
                cr_assert_gt (f->max_len, 0, "%s.%s unbounded", desc->name, f->key);
            if (f->type == WIRE_T_MSG)
                cr_assert_not_null (f->sub);
            if (f->type == WIRE_T_ENUM)
                cr_assert (f->enum_count > 0 && f->enum_names [f->enum_count] == NULL);
            if (f->has_offset != SIZE_MAX)
                cr_assert (!f->required && !f->has_default && f->has_offset < desc->size);
        }
    }
}
