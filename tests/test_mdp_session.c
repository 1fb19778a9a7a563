/*  test_mdp_session.c: the broker's bounded peek into request bodies.

    mdp_body_peek reads bytes straight off the wire, so these tests feed it
    every kind of broken MessagePack (truncated, wrong types, lengths that
    lie, deep nesting, trailing bytes, unknown schema versions) and check
    that it answers MALFORMED with a reason, never reads past the end (run
    under ASan with SPLITMESH_SANITIZE=ON) and still finds the session in
    good bodies.
*/
#include <criterion/criterion.h>
#include <msgpack.h>
#include <string.h>
#include "mdp_common.h"
#include "mdp_session.h"

//  Packs {"v":1,"session":S,"x":[1,2,3],"blob":bin(n)} into sbuf.
static void
s_pack_body (msgpack_sbuffer *sbuf, const char *session, size_t blob)
{
    msgpack_sbuffer_init (sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, session? 4: 3);
    msgpack_pack_str_with_body (&pk, "v", 1);
    msgpack_pack_int (&pk, 1);
    msgpack_pack_str_with_body (&pk, "x", 1);
    msgpack_pack_array (&pk, 3);
    for (int i = 1; i <= 3; i++)
        msgpack_pack_int (&pk, i);
    msgpack_pack_str_with_body (&pk, "blob", 4);
    char *data = calloc (1, blob + 1);
    msgpack_pack_bin_with_body (&pk, data, blob);
    free (data);
    if (session) {
        msgpack_pack_str_with_body (&pk, "session", 7);
        msgpack_pack_str_with_body (&pk, session, strlen (session));
    }
}

static int
s_peek (const void *data, size_t size, char *session, char *err)
{
    return mdp_body_peek ((const uint8_t *) data, size, session, err, 200);
}

Test (mdp_session, finds_session_after_other_keys)
{
    msgpack_sbuffer sbuf;
    s_pack_body (&sbuf, "sess-42", 70000);      //  bin32 skipped in O(1)
    char session [MDP_SESSION_MAX + 1], err [200];
    cr_assert_eq (s_peek (sbuf.data, sbuf.size, session, err), MDP_BODY_MAP, "%s", err);
    cr_assert_str_eq (session, "sess-42");
    msgpack_sbuffer_destroy (&sbuf);
}

Test (mdp_session, map_without_session_is_ok)
{
    msgpack_sbuffer sbuf;
    s_pack_body (&sbuf, NULL, 10);
    char session [MDP_SESSION_MAX + 1] = "junk", err [200];
    cr_assert_eq (s_peek (sbuf.data, sbuf.size, session, err), MDP_BODY_MAP, "%s", err);
    cr_assert_str_eq (session, "");
    msgpack_sbuffer_destroy (&sbuf);
}

Test (mdp_session, non_map_bodies_are_opaque)
{
    char session [MDP_SESSION_MAX + 1], err [200];
    cr_assert_eq (s_peek ("", 0, session, err), MDP_BODY_OPAQUE);
    cr_assert_eq (s_peek ("hello", 5, session, err), MDP_BODY_OPAQUE);
    const uint8_t array [] = { 0x93, 1, 2, 3 };
    cr_assert_eq (s_peek (array, sizeof array, session, err), MDP_BODY_OPAQUE);
    cr_assert_str_eq (session, "");
}

Test (mdp_session, every_truncation_is_malformed)
{
    msgpack_sbuffer sbuf;
    s_pack_body (&sbuf, "abc", 300);
    char session [MDP_SESSION_MAX + 1], err [200];
    //  Every proper prefix of a valid map must be rejected, not over-read.
    for (size_t n = 1; n < sbuf.size; n++) {
        int rc = s_peek (sbuf.data, n, session, err);
        cr_assert_eq (rc, MDP_BODY_MALFORMED, "prefix of %zu/%zu bytes accepted", n, sbuf.size);
        cr_assert_neq (err [0], '\0', "no reason for prefix %zu", n);
    }
    msgpack_sbuffer_destroy (&sbuf);
}

Test (mdp_session, oversized_lengths_are_rejected)
{
    char session [MDP_SESSION_MAX + 1], err [200];
    const uint8_t map32 [] = { 0xdf, 0xff, 0xff, 0xff, 0xff };
    cr_assert_eq (s_peek (map32, sizeof map32, session, err), MDP_BODY_MALFORMED);
    cr_assert (strstr (err, "oversized"), "reason: %s", err);
    //  {"x": array32 of 2^32-1} and {"x": bin32 of 4 GiB}
    const uint8_t array32 [] = { 0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00 };
    cr_assert_eq (s_peek (array32, sizeof array32, session, err), MDP_BODY_MALFORMED);
    const uint8_t bin32 [] = { 0x81, 0xa1, 'x', 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00 };
    cr_assert_eq (s_peek (bin32, sizeof bin32, session, err), MDP_BODY_MALFORMED);
    cr_assert (strstr (err, "bin"), "reason: %s", err);
    const uint8_t str32 [] = { 0x81, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'k', 0x00 };
    cr_assert_eq (s_peek (str32, sizeof str32, session, err), MDP_BODY_MALFORMED);
}

Test (mdp_session, deep_nesting_is_rejected)
{
    uint8_t body [300];
    size_t n = 0;
    body [n++] = 0x81;
    body [n++] = 0xa1;
    body [n++] = 'x';
    for (int i = 0; i < 200; i++)
        body [n++] = 0x91;              //  [[[[...]]]]
    body [n++] = 0x00;
    char session [MDP_SESSION_MAX + 1], err [200];
    cr_assert_eq (s_peek (body, n, session, err), MDP_BODY_MALFORMED);
    cr_assert (strstr (err, "nesting"), "reason: %s", err);
    //  Nesting within the limit is fine.
    n = 3;
    for (int i = 0; i < 20; i++)
        body [n++] = 0x91;
    body [n++] = 0x00;
    cr_assert_eq (s_peek (body, n, session, err), MDP_BODY_MAP, "%s", err);
}

Test (mdp_session, wrong_types_and_versions_are_rejected)
{
    char session [MDP_SESSION_MAX + 1], err [200];
    const uint8_t session_int [] = { 0x81, 0xa7, 's','e','s','s','i','o','n', 0x07 };
    cr_assert_eq (s_peek (session_int, sizeof session_int, session, err), MDP_BODY_MALFORMED);
    cr_assert (strstr (err, "session"), "reason: %s", err);
    const uint8_t v99 [] = { 0x81, 0xa1, 'v', 99 };
    cr_assert_eq (s_peek (v99, sizeof v99, session, err), MDP_BODY_MALFORMED);
    cr_assert (strstr (err, "version"), "reason: %s", err);
    const uint8_t v0 [] = { 0x81, 0xa1, 'v', 0x00 };
    cr_assert_eq (s_peek (v0, sizeof v0, session, err), MDP_BODY_MALFORMED);
    const uint8_t vstr [] = { 0x81, 0xa1, 'v', 0xa1, '1' };
    cr_assert_eq (s_peek (vstr, sizeof vstr, session, err), MDP_BODY_MALFORMED);
    const uint8_t reserved [] = { 0x81, 0xa1, 'x', 0xc1 };
    cr_assert_eq (s_peek (reserved, sizeof reserved, session, err), MDP_BODY_MALFORMED);
    const uint8_t trailing [] = { 0x80, 0x00 };
    cr_assert_eq (s_peek (trailing, sizeof trailing, session, err), MDP_BODY_MALFORMED);
}

Test (mdp_session, session_length_is_bounded)
{
    char session [MDP_SESSION_MAX + 1], err [200];
    char id [MDP_SESSION_MAX + 2];
    memset (id, 'a', sizeof id - 1);
    id [MDP_SESSION_MAX] = '\0';             //  exactly 64 bytes: fine
    msgpack_sbuffer sbuf;
    s_pack_body (&sbuf, id, 0);
    cr_assert_eq (s_peek (sbuf.data, sbuf.size, session, err), MDP_BODY_MAP, "%s", err);
    cr_assert_eq (strlen (session), MDP_SESSION_MAX);
    msgpack_sbuffer_destroy (&sbuf);
    id [MDP_SESSION_MAX] = 'a';              //  65 bytes: too long
    id [MDP_SESSION_MAX + 1] = '\0';
    s_pack_body (&sbuf, id, 0);
    cr_assert_eq (s_peek (sbuf.data, sbuf.size, session, err), MDP_BODY_MALFORMED);
    cr_assert_str_eq (session, "");
    msgpack_sbuffer_destroy (&sbuf);
}

Test (mdp_session, capacity_frame_parses_and_bounds)
{
    int capacity = 0;
    char err [200];
    const uint8_t ok [] = { 0x82, 0xa1, 'v', 1, 0xa8, 'c','a','p','a','c','i','t','y', 0xcd, 0x04, 0x00 };
    cr_assert_eq (mdp_capacity_parse (ok, sizeof ok, &capacity, err, sizeof err), 0, "%s", err);
    cr_assert_eq (capacity, 1024);
    uint8_t big [sizeof ok];
    memcpy (big, ok, sizeof ok);
    big [15] = 0x01;                         //  1025
    cr_assert_eq (mdp_capacity_parse (big, sizeof big, &capacity, err, sizeof err),
                  MDP_BODY_MALFORMED);
    const uint8_t zero [] = { 0x82, 0xa1, 'v', 1, 0xa8, 'c','a','p','a','c','i','t','y', 0x00 };
    cr_assert_eq (mdp_capacity_parse (zero, sizeof zero, &capacity, err, sizeof err),
                  MDP_BODY_MALFORMED);
    const uint8_t noversion [] = { 0x81, 0xa8, 'c','a','p','a','c','i','t','y', 0x04 };
    cr_assert_eq (mdp_capacity_parse (noversion, sizeof noversion, &capacity, err, sizeof err),
                  MDP_BODY_MALFORMED);
    cr_assert_eq (mdp_capacity_parse (ok, 5, &capacity, err, sizeof err), MDP_BODY_MALFORMED);
}
