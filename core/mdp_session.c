/*  mdp_session.c: bounded MessagePack walk that finds a body's session id.

    A hand-written walker rather than msgpack_unpack: msgpack-c allocates an
    object array as soon as it reads an array or map header, so a 5-byte
    frame claiming 2^32 elements would make it ask for 64 GiB. Here every
    count is checked against the bytes left (each element needs at least one
    byte), every string/bin/ext length against the end of the frame, and
    nesting against MDP_BODY_DEPTH_MAX, before anything is read. Big payloads
    (activations as bin) are skipped in O(1).
*/
#include <stdio.h>
#include <string.h>
#include <stdarg.h>
#include "mdp_common.h"
#include "mdp_session.h"

typedef struct {
    const uint8_t *p;           //  next byte to read
    const uint8_t *end;         //  one past the frame's last byte
    char *err;                  //  where a reason goes, may be NULL
    size_t err_size;            //  bytes in err
} s_cursor_t;

static int
s_fail (s_cursor_t *c, const char *fmt, ...)
{
    if (c->err && c->err_size) {
        va_list args;
        va_start (args, fmt);
        vsnprintf (c->err, c->err_size, fmt, args);
        va_end (args);
    }
    return MDP_BODY_MALFORMED;
}

static size_t
s_left (s_cursor_t *c)
{
    return (size_t) (c->end - c->p);
}

//  Reads an n-byte big-endian unsigned number; caller checked the bounds.
static uint64_t
s_be (const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p [i];
    return v;
}

//  Reads a header of `n` bytes following the type byte, bounds-checked.
static int
s_take_number (s_cursor_t *c, int n, uint64_t *value)
{
    if (s_left (c) < (size_t) n)
        return s_fail (c, "truncated body: %d-byte length or number cut off", n);
    *value = s_be (c->p, n);
    c->p += n;
    return 0;
}

static int
s_skip_bytes (s_cursor_t *c, uint64_t n, const char *what)
{
    if (n > s_left (c))
        return s_fail (c, "oversized length: %s of %llu bytes but only %zu left",
                       what, (unsigned long long) n, s_left (c));
    c->p += n;
    return 0;
}

//  Classifies a string header at the cursor; on success leaves the cursor
//  on the string's first byte and sets its length. Returns 1 if the next
//  object is not a string (cursor unchanged).
static int
s_string_header (s_cursor_t *c, uint64_t *len)
{
    if (s_left (c) < 1)
        return s_fail (c, "truncated body: object missing");
    uint8_t b = *c->p;
    int width = (b >= 0xa0 && b <= 0xbf)? 0
              : b == 0xd9? 1: b == 0xda? 2: b == 0xdb? 4: -1;
    if (width < 0)
        return 1;
    c->p++;
    if (width == 0)
        *len = b & 0x1f;
    else
    if (s_take_number (c, width, len))
        return MDP_BODY_MALFORMED;
    if (*len > s_left (c))
        return s_fail (c, "oversized length: string of %llu bytes but only %zu left",
                       (unsigned long long) *len, s_left (c));
    return 0;
}

static int s_skip_object (s_cursor_t *c, int depth);

static int
s_skip_container (s_cursor_t *c, uint64_t count, int per_entry, int depth)
{
    if (depth >= MDP_BODY_DEPTH_MAX)
        return s_fail (c, "nesting deeper than %d levels", MDP_BODY_DEPTH_MAX);
    //  Every element takes at least one byte: a count beyond what is left
    //  is a lie, whatever the rest of the frame holds.
    if (count > s_left (c) / per_entry)
        return s_fail (c, "oversized length: %llu elements but only %zu bytes left",
                       (unsigned long long) count, s_left (c));
    for (uint64_t i = 0; i < count * per_entry; i++)
        if (s_skip_object (c, depth + 1))
            return MDP_BODY_MALFORMED;
    return 0;
}

//  Skips one complete MessagePack object, checking everything.
static int
s_skip_object (s_cursor_t *c, int depth)
{
    if (s_left (c) < 1)
        return s_fail (c, "truncated body: object missing");
    uint8_t b = *c->p++;
    uint64_t n = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;                               //  fixint, nil, bool
    if (b >= 0x80 && b <= 0x8f)
        return s_skip_container (c, b & 0x0f, 2, depth);
    if (b >= 0x90 && b <= 0x9f)
        return s_skip_container (c, b & 0x0f, 1, depth);
    if (b >= 0xa0 && b <= 0xbf)
        return s_skip_bytes (c, b & 0x1f, "string");
    switch (b) {
        case 0xc4: case 0xc5: case 0xc6:        //  bin 8/16/32
            if (s_take_number (c, 1 << (b - 0xc4), &n))
                return MDP_BODY_MALFORMED;
            return s_skip_bytes (c, n, "bin");
        case 0xc7: case 0xc8: case 0xc9:        //  ext 8/16/32
            if (s_take_number (c, 1 << (b - 0xc7), &n))
                return MDP_BODY_MALFORMED;
            return s_skip_bytes (c, n + 1, "ext");
        case 0xca: return s_skip_bytes (c, 4, "float32");
        case 0xcb: return s_skip_bytes (c, 8, "float64");
        case 0xcc: case 0xcd: case 0xce: case 0xcf:
            return s_skip_bytes (c, 1 << (b - 0xcc), "uint");
        case 0xd0: case 0xd1: case 0xd2: case 0xd3:
            return s_skip_bytes (c, 1 << (b - 0xd0), "int");
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
            return s_skip_bytes (c, 1 + (1 << (b - 0xd4)), "fixext");
        case 0xd9: case 0xda: case 0xdb:        //  str 8/16/32
            if (s_take_number (c, b == 0xd9? 1: b == 0xda? 2: 4, &n))
                return MDP_BODY_MALFORMED;
            return s_skip_bytes (c, n, "string");
        case 0xdc: case 0xdd:                   //  array 16/32
            if (s_take_number (c, b == 0xdc? 2: 4, &n))
                return MDP_BODY_MALFORMED;
            return s_skip_container (c, n, 1, depth);
        case 0xde: case 0xdf:                   //  map 16/32
            if (s_take_number (c, b == 0xde? 2: 4, &n))
                return MDP_BODY_MALFORMED;
            return s_skip_container (c, n, 2, depth);
        default:
            return s_fail (c, "invalid MessagePack type byte 0x%02x", b);
    }
}

//  Reads the value of key "v": must be a positive integer we know.
static int
s_read_version (s_cursor_t *c)
{
    if (s_left (c) < 1)
        return s_fail (c, "truncated body: value of \"v\" missing");
    uint8_t b = *c->p;
    uint64_t v = 0;
    if (b <= 0x7f) {
        v = b;
        c->p++;
    }
    else
    if (b >= 0xcc && b <= 0xcf) {
        c->p++;
        if (s_take_number (c, 1 << (b - 0xcc), &v))
            return MDP_BODY_MALFORMED;
    }
    else
        return s_fail (c, "wrong type: \"v\" must be a positive integer");
    if (v < 1 || v > MDP_SCHEMA_VERSION)
        return s_fail (c, "unsupported schema version %llu (this broker knows 1..%d)",
                       (unsigned long long) v, MDP_SCHEMA_VERSION);
    return 0;
}

int
mdp_body_peek (const uint8_t *data, size_t size,
               char *session, char *err, size_t err_size)
{
    s_cursor_t cursor = { data, data + size, err, err_size };
    s_cursor_t *c = &cursor;
    session [0] = '\0';
    if (err && err_size)
        err [0] = '\0';
    if (!data || size == 0)
        return MDP_BODY_OPAQUE;

    uint8_t b = *c->p;
    uint64_t count = 0;
    if (b >= 0x80 && b <= 0x8f) {
        count = b & 0x0f;
        c->p++;
    }
    else
    if (b == 0xde || b == 0xdf) {
        c->p++;
        if (s_take_number (c, b == 0xde? 2: 4, &count))
            return MDP_BODY_MALFORMED;
    }
    else
        return MDP_BODY_OPAQUE;

    if (count > s_left (c) / 2)
        return s_fail (c, "oversized length: map of %llu entries but only %zu bytes left",
                       (unsigned long long) count, s_left (c));

    for (uint64_t i = 0; i < count; i++) {
        uint64_t klen = 0;
        int rc = s_string_header (c, &klen);
        if (rc < 0)
            return rc;
        if (rc == 1) {                  //  non-string key: skip key and value
            if (s_skip_object (c, 1) || s_skip_object (c, 1))
                return MDP_BODY_MALFORMED;
            continue;
        }
        const char *key = (const char *) c->p;
        c->p += klen;
        if (klen == 1 && key [0] == 'v') {
            if (s_read_version (c))
                return MDP_BODY_MALFORMED;
        }
        else
        if (klen == 7 && memcmp (key, "session", 7) == 0) {
            uint64_t slen = 0;
            rc = s_string_header (c, &slen);
            if (rc < 0)
                return rc;
            if (rc == 1)
                return s_fail (c, "wrong type: \"session\" must be a string");
            //  An empty session means "no session": LRU routing.
            if (slen > MDP_SESSION_MAX)
                return s_fail (c, "\"session\" must be at most %d bytes, got %llu",
                               MDP_SESSION_MAX, (unsigned long long) slen);
            if (memchr (c->p, '\0', slen))
                return s_fail (c, "\"session\" must not contain NUL bytes");
            memcpy (session, c->p, slen);
            session [slen] = '\0';
            c->p += slen;
        }
        else
        if (s_skip_object (c, 1))
            return MDP_BODY_MALFORMED;
    }
    if (s_left (c) != 0) {
        session [0] = '\0';
        return s_fail (c, "trailing bytes: %zu bytes after the body's map", s_left (c));
    }
    return MDP_BODY_MAP;
}

//  Reads a non-negative integer value (positive fixint or uint 8..64).
static int
s_read_uint (s_cursor_t *c, uint64_t *value, const char *key)
{
    if (s_left (c) < 1)
        return s_fail (c, "truncated body: value of \"%s\" missing", key);
    uint8_t b = *c->p;
    if (b <= 0x7f) {
        *value = b;
        c->p++;
        return 0;
    }
    if (b >= 0xcc && b <= 0xcf) {
        c->p++;
        return s_take_number (c, 1 << (b - 0xcc), value);
    }
    return s_fail (c, "wrong type: \"%s\" must be a non-negative integer", key);
}

int
mdp_capacity_parse (const uint8_t *data, size_t size, int *capacity,
                    char *err, size_t err_size)
{
    bool cancel;
    return mdp_ready_parse (data, size, capacity, &cancel, err, err_size);
}

int
mdp_ready_parse (const uint8_t *data, size_t size, int *capacity, bool *cancel,
                 char *err, size_t err_size)
{
    *cancel = false;
    s_cursor_t cursor = { data, data + size, err, err_size };
    s_cursor_t *c = &cursor;
    if (!data || size == 0 || *data < 0x80 || *data > 0x8f)
        return s_fail (c, "capacity frame must be a small MessagePack map");
    uint64_t count = *c->p++ & 0x0f;
    uint64_t version = 0, value = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t klen = 0;
        int rc = s_string_header (c, &klen);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return s_fail (c, "capacity frame keys must be strings");
        const char *key = (const char *) c->p;
        c->p += klen;
        if (klen == 1 && key [0] == 'v') {
            if (s_read_uint (c, &version, "v"))
                return MDP_BODY_MALFORMED;
        }
        else
        if (klen == 8 && memcmp (key, "capacity", 8) == 0) {
            if (s_read_uint (c, &value, "capacity"))
                return MDP_BODY_MALFORMED;
        }
        else
        if (klen == 6 && memcmp (key, "cancel", 6) == 0) {
            if (s_left (c) < 1 || (*c->p != 0xc2 && *c->p != 0xc3))
                return s_fail (c, "wrong type: \"cancel\" must be a boolean");
            *cancel = *c->p++ == 0xc3;
        }
        else
        if (s_skip_object (c, 1))
            return MDP_BODY_MALFORMED;
    }
    if (s_left (c) != 0)
        return s_fail (c, "trailing bytes after the capacity map");
    if (version != 1)
        return s_fail (c, "capacity frame: unsupported version %llu",
                       (unsigned long long) version);
    if (value < 1 || value > MDP_CAPACITY_MAX)
        return s_fail (c, "capacity %llu out of range 1..%d",
                       (unsigned long long) value, MDP_CAPACITY_MAX);
    *capacity = (int) value;
    return 0;
}
