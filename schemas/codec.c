//  codec: the one generic MessagePack encoder/decoder, driven by the tables
//  that gen.py generates from messages.toml.
//
//  Decoding runs in three steps so that nothing from the wire is trusted
//  before it is bounded:
//  1. s_prescan walks the raw bytes without allocating: it rejects frames
//     over WIRE_MAX_FRAME_BYTES, reserved bytes, truncation, trailing bytes,
//     nesting deeper than WIRE_MAX_DEPTH, and more than WIRE_MAX_OBJECTS
//     objects, and checks that every declared length fits in what is left.
//     After it, msgpack-c's zone allocation is bounded by the frame size.
//  2. msgpack_unpack_next builds the object tree (str/bin point into data).
//  3. s_decode_map walks the tree with the descriptor: types, required keys,
//     lengths against the schema's limits (before each malloc), enums; then
//     wire_validate checks bounds, one_of groups and the cross-field checks,
//     the same function the encoder runs, so both ends agree on "valid".
//
//  Encoding validates, sizes the message with a counting pass and packs it
//  into a buffer of exactly that size (no regrowth, no extra copy).

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <msgpack.h>
#include "codec.h"

#define PATH_MAX_LEN 128

//  Field paths and error texts are cut to their buffers on purpose.
#pragma GCC diagnostic ignored "-Wformat-truncation"

//  --------------------------------------------------------------------------
//  Errors

static int
s_fail (wire_err_t *err, int status, const char *fmt, ...)
{
    if (err) {
        err->status = status;
        va_list args;
        va_start (args, fmt);
        vsnprintf (err->text, sizeof (err->text), fmt, args);
        va_end (args);
    }
    return status == 500? -1: -2;
}

//  Field paths for error messages ("drafts[1].probs[0]"). They are built
//  for every field and element on the hot path, so by hand: snprintf here
//  cost more than the rest of the codec together.
static void
s_path_key (char *out, const char *parent, const char *key)
{
    size_t plen = strlen (parent), klen = strlen (key);
    size_t used = 0;
    if (plen) {
        used = plen < PATH_MAX_LEN - 2? plen: PATH_MAX_LEN - 2;
        memcpy (out, parent, used);
        out [used++] = '.';
    }
    if (used + klen > PATH_MAX_LEN - 1)
        klen = PATH_MAX_LEN - 1 - used;
    memcpy (out + used, key, klen);
    out [used + klen] = 0;
}

static void
s_path_index (char *out, const char *parent, size_t index)
{
    char digits [24];
    int n = 0;
    do {
        digits [n++] = (char) ('0' + index % 10);
        index /= 10;
    } while (index);
    size_t plen = strlen (parent);
    if (plen + n + 3 > PATH_MAX_LEN)
        plen = PATH_MAX_LEN - n - 3;
    memmove (out, parent, plen);
    out [plen++] = '[';
    while (n)
        out [plen++] = digits [--n];
    out [plen++] = ']';
    out [plen] = 0;
}

//  --------------------------------------------------------------------------
//  UTF-8: strict (no overlongs, no surrogates, <= U+10FFFF), as Python's
//  msgpack (raw=False) decodes it.

static bool
s_utf8_valid (const uint8_t *s, size_t size)
{
    size_t i = 0;
    while (i < size) {
        uint8_t c = s [i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
        else
        if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
        else
        if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
        else
            return false;
        if (size - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s [i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s [i + k] & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)
        ||  cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

//  --------------------------------------------------------------------------
//  Step 1: prescan. A cursor over raw MessagePack that reads one object
//  header at a time and never allocates.

typedef struct {
    const uint8_t *p;           //  next byte
    const uint8_t *end;         //  one past the last byte
} cursor_t;

typedef enum { H_SCALAR, H_STR, H_BIN, H_ARRAY, H_MAP, H_EXT } hkind_t;

typedef struct {
    hkind_t kind;
    uint64_t n;                 //  bytes of str/bin/ext payload; elements of array/map
    const uint8_t *body;        //  payload (str/bin/scalars: the value bytes)
    uint8_t byte;               //  the type byte
} header_t;

static uint64_t
s_be (const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | p [i];
    return v;
}

//  Reads one header, consuming scalars and str/bin/ext payloads whole
//  (after checking they fit), but not the elements of arrays and maps.
static int
s_read_header (cursor_t *cur, header_t *h, wire_err_t *err)
{
    size_t left = (size_t) (cur->end - cur->p);
    if (left == 0)
        return s_fail (err, 400, "truncated message: expected another value");
    uint8_t b = *cur->p;
    h->byte = b;
    int lenbytes = 0;           //  bytes of the length field
    uint64_t fixed = 0;         //  bytes of a fixed-size payload
    h->kind = H_SCALAR;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        fixed = 0;
    else
    if (b >= 0x80 && b <= 0x8f) { h->kind = H_MAP; h->n = b & 0x0f; }
    else
    if (b >= 0x90 && b <= 0x9f) { h->kind = H_ARRAY; h->n = b & 0x0f; }
    else
    if (b >= 0xa0 && b <= 0xbf) { h->kind = H_STR; h->n = b & 0x1f; }
    else
    if (b == 0xc1)
        return s_fail (err, 400, "not MessagePack: reserved byte 0xc1");
    else
    if (b >= 0xc4 && b <= 0xc6) { h->kind = H_BIN; lenbytes = 1 << (b - 0xc4); }
    else
    if (b >= 0xc7 && b <= 0xc9) { h->kind = H_EXT; lenbytes = 1 << (b - 0xc7); }
    else
    if (b == 0xca) fixed = 4;
    else
    if (b == 0xcb) fixed = 8;
    else
    if (b >= 0xcc && b <= 0xcf) fixed = 1 << (b - 0xcc);
    else
    if (b >= 0xd0 && b <= 0xd3) fixed = 1 << (b - 0xd0);
    else
    if (b >= 0xd4 && b <= 0xd8) { h->kind = H_EXT; h->n = 1u << (b - 0xd4); }
    else
    if (b >= 0xd9 && b <= 0xdb) { h->kind = H_STR; lenbytes = 1 << (b - 0xd9); }
    else
    if (b == 0xdc || b == 0xdd) { h->kind = H_ARRAY; lenbytes = b == 0xdc? 2: 4; }
    else
    if (b == 0xde || b == 0xdf) { h->kind = H_MAP; lenbytes = b == 0xde? 2: 4; }

    const uint8_t *p = cur->p + 1;
    left--;
    if ((uint64_t) lenbytes > left)
        return s_fail (err, 400, "truncated message: length of a value cut off");
    if (lenbytes) {
        h->n = s_be (p, lenbytes);
        p += lenbytes;
        left -= lenbytes;
    }
    if (h->kind == H_EXT) {
        //  ext: one type byte, then n payload bytes
        if (left < 1 || h->n > left - 1)
            return s_fail (err, 400, "truncated message: ext value cut off");
        h->body = p + 1;
        cur->p = p + 1 + h->n;
    }
    else
    if (h->kind == H_STR || h->kind == H_BIN) {
        if (h->n > left)
            return s_fail (err, 400,
                "truncated message: a %s declares %" PRIu64 " bytes but %zu remain",
                h->kind == H_STR? "str": "bin", h->n, left);
        h->body = p;
        cur->p = p + h->n;
    }
    else
    if (h->kind == H_SCALAR) {
        if (fixed > left)
            return s_fail (err, 400, "truncated message: a number is cut off");
        h->body = p;
        cur->p = p + fixed;
    }
    else {
        //  Every element takes at least one byte: a count larger than what
        //  is left is a lie, caught before anyone allocates for it.
        uint64_t elements = h->kind == H_MAP? h->n * 2: h->n;
        if (elements > left)
            return s_fail (err, 400,
                "truncated message: %s declares %" PRIu64 " entries but %zu bytes remain",
                h->kind == H_MAP? "a map": "an array", h->n, left);
        cur->p = p;
    }
    return 0;
}

//  Walks `count` whole objects from cur, bounding depth (containers already
//  open: depth) and the running object count.
static int
s_skip (cursor_t *cur, uint64_t count, int depth, uint64_t *objects, wire_err_t *err)
{
    uint64_t stack [WIRE_MAX_DEPTH + 1];
    int sp = 0;
    stack [0] = count;
    while (sp >= 0) {
        if (stack [sp] == 0) {
            sp--;
            continue;
        }
        stack [sp]--;
        header_t h;
        int rc = s_read_header (cur, &h, err);
        if (rc)
            return rc;
        if (++*objects > WIRE_MAX_OBJECTS)
            return s_fail (err, 413, "message has more than %d objects (max_objects)",
                           WIRE_MAX_OBJECTS);
        if (h.kind == H_ARRAY || h.kind == H_MAP) {
            if (depth + sp + 1 > WIRE_MAX_DEPTH)
                return s_fail (err, 400, "message nested deeper than %d levels (max_depth)",
                               WIRE_MAX_DEPTH);
            stack [++sp] = h.kind == H_MAP? h.n * 2: h.n;
        }
    }
    return 0;
}

static int
s_prescan (const void *data, size_t size, wire_err_t *err)
{
    if (size == 0)
        return s_fail (err, 400, "empty message");
    if (size > WIRE_MAX_FRAME_BYTES)
        return s_fail (err, 413, "message of %zu bytes exceeds max_frame_bytes %d",
                       size, WIRE_MAX_FRAME_BYTES);
    cursor_t cur = { data, (const uint8_t *) data + size };
    uint64_t objects = 0;
    int rc = s_skip (&cur, 1, 0, &objects, err);
    if (rc)
        return rc;
    if (cur.p != cur.end)
        return s_fail (err, 400, "%zu trailing bytes after the message",
                       (size_t) (cur.end - cur.p));
    return 0;
}

//  --------------------------------------------------------------------------
//  Struct access helpers

static size_t
s_elem_size (const wire_field_t *f)
{
    switch (f->type) {
        case WIRE_T_BOOL:    return sizeof (bool);
        case WIRE_T_INT32:   return sizeof (int32_t);
        case WIRE_T_INT64:   return sizeof (int64_t);
        case WIRE_T_UINT32:  return sizeof (uint32_t);
        case WIRE_T_UINT64:  return sizeof (uint64_t);
        case WIRE_T_FLOAT32: return sizeof (float);
        case WIRE_T_FLOAT64: return sizeof (double);
        case WIRE_T_STR:     return sizeof (char *);
        case WIRE_T_ENUM:    return sizeof (int);
        case WIRE_T_BIN:     return sizeof (wire_bin_t);
        case WIRE_T_MSG:     return f->sub->size;
        case WIRE_T_MAP:     return sizeof (wire_kv_t);
    }
    return 0;
}

#define MEMBER(msg,f)   ((uint8_t *) (msg) + (f)->offset)
#define CMEMBER(msg,f)  ((const uint8_t *) (msg) + (f)->offset)
#define COUNT(msg,f)    (*(size_t *) ((uint8_t *) (msg) + (f)->count_offset))
#define CCOUNT(msg,f)   (*(const size_t *) ((const uint8_t *) (msg) + (f)->count_offset))

//  Whether field f has a value in msg (see codec.h for the conventions).
static bool
s_present (const wire_field_t *f, const void *msg)
{
    const uint8_t *m = CMEMBER (msg, f);
    if (f->has_offset != SIZE_MAX)
        return *((const bool *) ((const uint8_t *) msg + f->has_offset));
    if (f->is_array || f->type == WIRE_T_MAP)
        return *(void *const *) m != NULL || f->required;
    if (f->type == WIRE_T_STR || f->type == WIRE_T_MSG)
        return *(void *const *) m != NULL;
    if (f->type == WIRE_T_BIN)
        return ((const wire_bin_t *) m)->data != NULL;
    return true;                //  scalars with a default, required scalars
}

void
wire_msg_init (const wire_desc_t *desc, void *msg)
{
    assert (desc && msg);
    memset (msg, 0, desc->size);
    for (size_t i = 0; i < desc->field_count; i++) {
        const wire_field_t *f = &desc->fields [i];
        if (!f->has_default || f->is_array)
            continue;
        uint8_t *m = MEMBER (msg, f);
        switch (f->type) {
            case WIRE_T_BOOL:    *(bool *) m = f->udef != 0; break;
            case WIRE_T_INT32:   *(int32_t *) m = (int32_t) f->idef; break;
            case WIRE_T_INT64:   *(int64_t *) m = f->idef; break;
            case WIRE_T_UINT32:  *(uint32_t *) m = (uint32_t) f->udef; break;
            case WIRE_T_UINT64:  *(uint64_t *) m = f->udef; break;
            case WIRE_T_FLOAT32: *(float *) m = (float) f->fdef; break;
            case WIRE_T_FLOAT64: *(double *) m = f->fdef; break;
            case WIRE_T_ENUM:    *(int *) m = (int) f->udef; break;
            default: break;
        }
    }
}

static void s_free_value (const wire_field_t *f, void *value);

void
wire_msg_free (const wire_desc_t *desc, void *msg)
{
    assert (desc);
    if (!msg)
        return;
    for (size_t i = 0; i < desc->field_count; i++) {
        const wire_field_t *f = &desc->fields [i];
        uint8_t *m = MEMBER (msg, f);
        if (f->is_array || f->type == WIRE_T_MAP) {
            uint8_t *elems = *(uint8_t **) m;
            if (elems) {
                size_t count = COUNT (msg, f);
                size_t esize = s_elem_size (f);
                for (size_t k = 0; k < count; k++)
                    s_free_value (f, elems + k * esize);
                free (elems);
            }
        }
        else
        if (f->type == WIRE_T_MSG) {
            void *sub = *(void **) m;
            if (sub) {
                wire_msg_free (f->sub, sub);
                free (sub);
            }
        }
        else
            s_free_value (f, m);
    }
    memset (msg, 0, desc->size);
}

//  Frees what one value (a member, or one array element) owns.
static void
s_free_value (const wire_field_t *f, void *value)
{
    switch (f->type) {
        case WIRE_T_STR:
            free (*(char **) value);
            break;
        case WIRE_T_BIN:
            free (((wire_bin_t *) value)->data);
            break;
        case WIRE_T_MSG:
            wire_msg_free (f->sub, value);      //  array element: inline struct
            break;
        case WIRE_T_MAP:
            free (((wire_kv_t *) value)->key);
            free (((wire_kv_t *) value)->value);
            break;
        default:
            break;
    }
}

//  --------------------------------------------------------------------------
//  Bounds, shared by the decoder and wire_validate

static int
s_check_int (const wire_field_t *f, int64_t v, const char *path, wire_err_t *err)
{
    if (v < f->imin)
        return s_fail (err, 422, "field '%s': %" PRId64 " is below the minimum %" PRId64,
                       path, v, f->imin);
    if (v > f->imax)
        return s_fail (err, 422, "field '%s': %" PRId64 " is above the maximum %" PRId64,
                       path, v, f->imax);
    return 0;
}

static int
s_check_uint (const wire_field_t *f, uint64_t v, const char *path, wire_err_t *err)
{
    if (v < f->umin)
        return s_fail (err, 422, "field '%s': %" PRIu64 " is below the minimum %" PRIu64,
                       path, v, f->umin);
    if (v > f->umax)
        return s_fail (err, 422, "field '%s': %" PRIu64 " is above the maximum %" PRIu64,
                       path, v, f->umax);
    return 0;
}

static int
s_check_float (const wire_field_t *f, double v, const char *path, wire_err_t *err)
{
    if (isnan (v))
        return s_fail (err, 422, "field '%s': NaN is not a valid value", path);
    if (v < f->fmin)
        return s_fail (err, 422, "field '%s': %g is below the minimum %g", path, v, f->fmin);
    if (v > f->fmax)
        return s_fail (err, 422, "field '%s': %g is above the maximum %g", path, v, f->fmax);
    return 0;
}

//  Length of a str or bin: over the limit is 413, under the minimum 422.
static int
s_check_len (const wire_field_t *f, uint64_t len, const char *what,
             const char *path, wire_err_t *err)
{
    if (len > f->max_len)
        return s_fail (err, 413, "field '%s': %s of %" PRIu64 " bytes exceeds the limit %" PRIu64,
                       path, what, len, f->max_len);
    if (len < f->min_len)
        return s_fail (err, 422, "field '%s': %s of %" PRIu64 " bytes is shorter than the minimum %" PRIu64,
                       path, what, len, f->min_len);
    return 0;
}

static int
s_check_count (const wire_field_t *f, uint64_t count, const char *path, wire_err_t *err)
{
    if (count > f->max_count)
        return s_fail (err, 413, "field '%s': %" PRIu64 " entries exceed the limit %" PRIu64,
                       path, count, f->max_count);
    if (count < f->min_count)
        return s_fail (err, 422, "field '%s': %" PRIu64 " entries, fewer than the minimum %" PRIu64,
                       path, count, f->min_count);
    return 0;
}

static int
s_check_str (const wire_field_t *f, const char *s, const char *path, wire_err_t *err)
{
    size_t len = strlen (s);
    int rc = s_check_len (f, len, "string", path, err);
    if (rc)
        return rc;
    if (!s_utf8_valid ((const uint8_t *) s, len))
        return s_fail (err, 422, "field '%s': string is not valid UTF-8", path);
    return 0;
}

static int s_validate (const wire_desc_t *desc, const void *msg, const char *path,
                       wire_err_t *err);

//  Validates one value (member or array element) at v.
static int
s_validate_value (const wire_field_t *f, const uint8_t *v, const char *path, wire_err_t *err)
{
    switch (f->type) {
        case WIRE_T_BOOL:    return 0;
        case WIRE_T_INT32:   return s_check_int (f, *(const int32_t *) v, path, err);
        case WIRE_T_INT64:   return s_check_int (f, *(const int64_t *) v, path, err);
        case WIRE_T_UINT32:  return s_check_uint (f, *(const uint32_t *) v, path, err);
        case WIRE_T_UINT64:  return s_check_uint (f, *(const uint64_t *) v, path, err);
        case WIRE_T_FLOAT32: return s_check_float (f, *(const float *) v, path, err);
        case WIRE_T_FLOAT64: return s_check_float (f, *(const double *) v, path, err);
        case WIRE_T_STR: {
            const char *s = *(char *const *) v;
            if (!s)
                return s_fail (err, 422, "field '%s': NULL string", path);
            return s_check_str (f, s, path, err);
        }
        case WIRE_T_ENUM: {
            int e = *(const int *) v;
            if (e < 0 || (size_t) e >= f->enum_count)
                return s_fail (err, 422, "field '%s': enum value %d out of range", path, e);
            return 0;
        }
        case WIRE_T_BIN:
            return s_check_len (f, ((const wire_bin_t *) v)->size, "bin", path, err);
        case WIRE_T_MSG:
            return s_validate (f->sub, v, path, err);
        case WIRE_T_MAP: {
            const wire_kv_t *kv = (const wire_kv_t *) v;
            if (!kv->key || !kv->value)
                return s_fail (err, 422, "field '%s': NULL key or value", path);
            int rc = s_check_str (f, kv->key, path, err);
            return rc? rc: s_check_str (f, kv->value, path, err);
        }
    }
    return 0;
}

static int
s_validate (const wire_desc_t *desc, const void *msg, const char *path, wire_err_t *err)
{
    char sub [PATH_MAX_LEN];
    char elem [PATH_MAX_LEN];
    int rc;
    for (size_t i = 0; i < desc->field_count; i++) {
        const wire_field_t *f = &desc->fields [i];
        s_path_key (sub, path, f->key);
        if (!s_present (f, msg)) {
            if (f->required)
                return s_fail (err, 400, "missing required field '%s'", sub);
            continue;
        }
        const uint8_t *m = CMEMBER (msg, f);
        if (f->is_array || f->type == WIRE_T_MAP) {
            const uint8_t *elems = *(const uint8_t *const *) m;
            size_t count = CCOUNT (msg, f);
            if (count && !elems)
                return s_fail (err, 422, "field '%s': %zu entries but a NULL array", sub, count);
            if ((rc = s_check_count (f, count, sub, err)))
                return rc;
            size_t esize = s_elem_size (f);
            for (size_t k = 0; k < count; k++) {
                s_path_index (elem, sub, k);
                if ((rc = s_validate_value (f, elems + k * esize, elem, err)))
                    return rc;
            }
            //  a map with a key twice means different things to different
            //  readers; counts are at most max_labels, so quadratic is fine
            const wire_kv_t *kvs = (const wire_kv_t *) elems;
            for (size_t k = 0; f->type == WIRE_T_MAP && k < count; k++)
                for (size_t j = 0; j < k; j++)
                    if (strcmp (kvs [j].key, kvs [k].key) == 0)
                        return s_fail (err, 400, "field '%s': duplicate key '%s'", sub, kvs [k].key);
        }
        else
        if (f->type == WIRE_T_MSG) {
            if ((rc = s_validate (f->sub, *(const void *const *) m, sub, err)))
                return rc;
        }
        else
        if ((rc = s_validate_value (f, m, sub, err)))
            return rc;
    }
    //  one_of groups: exactly one field of each must be present
    for (int g = 1; g <= desc->group_count; g++) {
        int present = 0;
        char names [160] = "";
        for (size_t i = 0; i < desc->field_count; i++) {
            const wire_field_t *f = &desc->fields [i];
            if (f->group != g)
                continue;
            present += s_present (f, msg);
            size_t used = strlen (names);
            snprintf (names + used, sizeof (names) - used, "%s'%s'", used? ", ": "", f->key);
        }
        if (present != 1 && *path)
            return s_fail (err, 422, "field '%s': exactly one of %s must be given (got %d)",
                           path, names, present);
        if (present != 1)
            return s_fail (err, 422, "exactly one of %s must be given (got %d)", names, present);
    }
    if (desc->check && (rc = desc->check (msg, err))) {
        if (err) {
            //  say where: the nested field, or the message
            char text [sizeof (err->text)];
            if (*path)
                snprintf (text, sizeof (text), "field '%s': %s", path, err->text);
            else
                snprintf (text, sizeof (text), "%s: %s", desc->name, err->text);
            memcpy (err->text, text, sizeof (text));
        }
        return rc;
    }
    return 0;
}

int
wire_validate (const wire_desc_t *desc, const void *msg, wire_err_t *err)
{
    assert (desc && msg);
    if (err)
        err->status = 0;
    return s_validate (desc, msg, "", err);
}

//  --------------------------------------------------------------------------
//  Step 3: decoding the object tree into a struct

static const char *
s_obj_type_name (const msgpack_object *o)
{
    switch (o->type) {
        case MSGPACK_OBJECT_NIL:              return "nil";
        case MSGPACK_OBJECT_BOOLEAN:          return "bool";
        case MSGPACK_OBJECT_POSITIVE_INTEGER: return "int";
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
        case MSGPACK_OBJECT_FLOAT32:          return "float";
        case MSGPACK_OBJECT_FLOAT64:          return "float";
        case MSGPACK_OBJECT_STR:              return "str";
        case MSGPACK_OBJECT_ARRAY:            return "array";
        case MSGPACK_OBJECT_MAP:              return "map";
        case MSGPACK_OBJECT_BIN:              return "bin";
        case MSGPACK_OBJECT_EXT:              return "ext";
    }
    return "unknown";
}

static const char *
s_type_name (const wire_field_t *f)
{
    switch (f->type) {
        case WIRE_T_BOOL:    return "bool";
        case WIRE_T_INT32:
        case WIRE_T_INT64:   return "int";
        case WIRE_T_UINT32:
        case WIRE_T_UINT64:  return "uint";
        case WIRE_T_FLOAT32:
        case WIRE_T_FLOAT64: return "float";
        case WIRE_T_STR:
        case WIRE_T_ENUM:    return "str";
        case WIRE_T_BIN:     return "bin";
        case WIRE_T_MSG:
        case WIRE_T_MAP:     return "map";
    }
    return "?";
}

static int
s_wrong_type (const wire_field_t *f, const msgpack_object *o, const char *path, wire_err_t *err)
{
    return s_fail (err, 400, "field '%s': expected %s, got %s",
                   path, s_type_name (f), s_obj_type_name (o));
}

//  Copies a str object into a new C string after checking it.
static int
s_copy_str (const wire_field_t *f, const msgpack_object *o, char **out,
            const char *path, wire_err_t *err)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return s_fail (err, 400, "field '%s': expected str, got %s", path, s_obj_type_name (o));
    uint32_t len = o->via.str.size;
    int rc = s_check_len (f, len, "string", path, err);
    if (rc)
        return rc;
    if (memchr (o->via.str.ptr, 0, len))
        return s_fail (err, 422, "field '%s': string contains a NUL byte", path);
    if (!s_utf8_valid ((const uint8_t *) o->via.str.ptr, len))
        return s_fail (err, 422, "field '%s': string is not valid UTF-8", path);
    char *s = malloc ((size_t) len + 1);
    if (!s)
        return s_fail (err, 500, "out of memory");
    memcpy (s, o->via.str.ptr, len);
    s [len] = 0;
    *out = s;
    return 0;
}

static int s_decode_map (const wire_desc_t *desc, const msgpack_object *o, void *msg,
                         const char *path, wire_err_t *err);

//  Decodes one value (a member, or one array element) into v.
static int
s_decode_value (const wire_field_t *f, const msgpack_object *o, uint8_t *v,
                const char *path, wire_err_t *err)
{
    int rc;
    switch (f->type) {
        case WIRE_T_BOOL:
            if (o->type != MSGPACK_OBJECT_BOOLEAN)
                return s_wrong_type (f, o, path, err);
            *(bool *) v = o->via.boolean;
            return 0;
        case WIRE_T_INT32:
        case WIRE_T_INT64: {
            int64_t x;
            if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                x = o->via.i64;
            else
            if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                if (o->via.u64 > (uint64_t) f->imax)
                    return s_fail (err, 422, "field '%s': %" PRIu64 " is above the maximum %" PRId64,
                                   path, o->via.u64, f->imax);
                x = (int64_t) o->via.u64;
            }
            else
                return s_wrong_type (f, o, path, err);
            if ((rc = s_check_int (f, x, path, err)))
                return rc;
            if (f->type == WIRE_T_INT32)
                *(int32_t *) v = (int32_t) x;
            else
                *(int64_t *) v = x;
            return 0;
        }
        case WIRE_T_UINT32:
        case WIRE_T_UINT64:
            if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                return s_fail (err, 422, "field '%s': %" PRId64 " is below the minimum %" PRIu64,
                               path, o->via.i64, f->umin);
            if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return s_wrong_type (f, o, path, err);
            if ((rc = s_check_uint (f, o->via.u64, path, err)))
                return rc;
            if (f->type == WIRE_T_UINT32)
                *(uint32_t *) v = (uint32_t) o->via.u64;
            else
                *(uint64_t *) v = o->via.u64;
            return 0;
        case WIRE_T_FLOAT32:
        case WIRE_T_FLOAT64: {
            double x;
            if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
                x = o->via.f64;
            else
            if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                x = (double) o->via.u64;
            else
            if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                x = (double) o->via.i64;
            else
                return s_wrong_type (f, o, path, err);
            if ((rc = s_check_float (f, x, path, err)))
                return rc;
            if (f->type == WIRE_T_FLOAT32)
                *(float *) v = (float) x;
            else
                *(double *) v = x;
            return 0;
        }
        case WIRE_T_STR:
            return s_copy_str (f, o, (char **) v, path, err);
        case WIRE_T_ENUM:
            if (o->type != MSGPACK_OBJECT_STR)
                return s_wrong_type (f, o, path, err);
            for (size_t k = 0; k < f->enum_count; k++) {
                const char *name = f->enum_names [k];
                if (strlen (name) == o->via.str.size
                &&  memcmp (name, o->via.str.ptr, o->via.str.size) == 0) {
                    *(int *) v = (int) k;
                    return 0;
                }
            }
            {
                char names [160] = "";
                for (size_t k = 0; k < f->enum_count; k++) {
                    size_t used = strlen (names);
                    snprintf (names + used, sizeof (names) - used, "%s%s",
                              k? ", ": "", f->enum_names [k]);
                }
                int shown = o->via.str.size > 40? 40: (int) o->via.str.size;
                return s_fail (err, 422, "field '%s': '%.*s' is not one of %s",
                               path, shown, o->via.str.ptr, names);
            }
        case WIRE_T_BIN: {
            if (o->type != MSGPACK_OBJECT_BIN)
                return s_wrong_type (f, o, path, err);
            uint32_t size = o->via.bin.size;
            if ((rc = s_check_len (f, size, "bin", path, err)))
                return rc;
            wire_bin_t *bin = (wire_bin_t *) v;
            bin->data = malloc (size? size: 1);
            if (!bin->data)
                return s_fail (err, 500, "out of memory");
            memcpy (bin->data, o->via.bin.ptr, size);
            bin->size = size;
            return 0;
        }
        case WIRE_T_MSG:
            //  v is an inline struct (array element) here
            return s_decode_map (f->sub, o, v, path, err);
        case WIRE_T_MAP:
            break;              //  maps are decoded by s_decode_field
    }
    return s_fail (err, 500, "codec: unexpected field type");
}

//  Decodes field f of msg from object o (not nil).
static int
s_decode_field (const wire_field_t *f, const msgpack_object *o, void *msg,
                const char *path, wire_err_t *err)
{
    uint8_t *m = MEMBER (msg, f);
    int rc;
    char elem [PATH_MAX_LEN];
    if (f->is_array) {
        if (o->type != MSGPACK_OBJECT_ARRAY)
            return s_fail (err, 400, "field '%s': expected array, got %s", path, s_obj_type_name (o));
        uint32_t count = o->via.array.size;
        if ((rc = s_check_count (f, count, path, err)))
            return rc;
        size_t esize = s_elem_size (f);
        uint8_t *elems = calloc (count? count: 1, esize);
        if (!elems)
            return s_fail (err, 500, "out of memory");
        *(uint8_t **) m = elems;
        COUNT (msg, f) = count;
        for (uint32_t k = 0; k < count; k++) {
            s_path_index (elem, path, k);
            if ((rc = s_decode_value (f, &o->via.array.ptr [k], elems + k * esize, elem, err)))
                return rc;
        }
        return 0;
    }
    if (f->type == WIRE_T_MAP) {
        if (o->type != MSGPACK_OBJECT_MAP)
            return s_wrong_type (f, o, path, err);
        uint32_t count = o->via.map.size;
        if ((rc = s_check_count (f, count, path, err)))
            return rc;
        wire_kv_t *kvs = calloc (count? count: 1, sizeof (wire_kv_t));
        if (!kvs)
            return s_fail (err, 500, "out of memory");
        *(wire_kv_t **) m = kvs;
        COUNT (msg, f) = count;
        for (uint32_t k = 0; k < count; k++) {
            const msgpack_object_kv *kv = &o->via.map.ptr [k];
            s_path_index (elem, path, k);
            if ((rc = s_copy_str (f, &kv->key, &kvs [k].key, elem, err))
            ||  (rc = s_copy_str (f, &kv->val, &kvs [k].value, elem, err)))
                return rc;
        }                       //  duplicate keys: wire_validate
        return 0;
    }
    if (f->type == WIRE_T_MSG) {
        void *sub = calloc (1, f->sub->size);
        if (!sub)
            return s_fail (err, 500, "out of memory");
        *(void **) m = sub;
        return s_decode_map (f->sub, o, sub, path, err);
    }
    if ((rc = s_decode_value (f, o, m, path, err)))
        return rc;
    if (f->has_offset != SIZE_MAX)
        *((bool *) ((uint8_t *) msg + f->has_offset)) = true;
    return 0;
}

static bool
s_key_is (const msgpack_object *key, const char *name)
{
    size_t len = strlen (name);
    return key->via.str.size == len && memcmp (key->via.str.ptr, name, len) == 0;
}

//  Decodes map object o into msg (already zeroed by the caller's calloc or
//  memset), applying defaults for absent fields.
static int
s_decode_map (const wire_desc_t *desc, const msgpack_object *o, void *msg,
              const char *path, wire_err_t *err)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        if (*path)
            return s_fail (err, 400, "field '%s': expected map, got %s", path, s_obj_type_name (o));
        return s_fail (err, 400, "message is not a map (got %s)", s_obj_type_name (o));
    }
    wire_msg_init (desc, msg);
    assert (desc->field_count <= 64);
    uint64_t keyed = 0;         //  fields whose key appeared
    uint64_t seen = 0;          //  fields with a non-nil value
    char sub [PATH_MAX_LEN];
    int rc;
    const msgpack_object_map *map = &o->via.map;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *key = &map->ptr [i].key;
        const msgpack_object *val = &map->ptr [i].val;
        if (key->type != MSGPACK_OBJECT_STR)
            return s_fail (err, 400, "%s%smap key %u is %s, not a string",
                           path, *path? ": ": "", i, s_obj_type_name (key));
        size_t fi;
        for (fi = 0; fi < desc->field_count; fi++)
            if (s_key_is (key, desc->fields [fi].key))
                break;
        if (fi == desc->field_count)
            continue;           //  unknown key (or v/t): ignored, see codec.h
        //  a known key twice would mean different things to different
        //  decoders (first wins, last wins): rejected. Unknown keys are not
        //  compared, which keeps this linear in the map's size.
        if (keyed & (1ull << fi))
            return s_fail (err, 400, "%s%sduplicate key '%s'",
                           path, *path? ": ": "", desc->fields [fi].key);
        keyed |= 1ull << fi;
        const wire_field_t *f = &desc->fields [fi];
        if (val->type == MSGPACK_OBJECT_NIL)
            continue;           //  nil means absent
        seen |= 1ull << fi;
        s_path_key (sub, path, f->key);
        if ((rc = s_decode_field (f, val, msg, sub, err)))
            return rc;
    }
    //  required means present on the wire (wire_validate cannot tell an
    //  absent required array from an empty one in the struct)
    for (size_t fi = 0; fi < desc->field_count; fi++)
        if (desc->fields [fi].required && !(seen & (1ull << fi))) {
            s_path_key (sub, path, desc->fields [fi].key);
            return s_fail (err, 400, "missing required field '%s'", sub);
        }
    return 0;
}

//  Checks the top-level `v` and `t` keys of map o against desc.
static int
s_check_envelope (const wire_desc_t *desc, const msgpack_object *o, wire_err_t *err)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return s_fail (err, 400, "message is not a map (got %s)", s_obj_type_name (o));
    const msgpack_object *v = NULL, *t = NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *key = &o->via.map.ptr [i].key;
        if (key->type != MSGPACK_OBJECT_STR)
            continue;           //  reported by s_decode_map
        const msgpack_object **slot = s_key_is (key, "v")? &v: s_key_is (key, "t")? &t: NULL;
        if (slot && *slot)
            return s_fail (err, 400, "duplicate key '%s'", slot == &v? "v": "t");
        if (slot)
            *slot = &o->via.map.ptr [i].val;
    }
    if (!v)
        return s_fail (err, 400, "missing schema version 'v'");
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return s_fail (err, 400, "unsupported schema version %" PRId64 " (this build speaks %d)",
                       v->via.i64, WIRE_SCHEMA_VERSION);
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return s_fail (err, 400, "schema version 'v' must be an int, got %s", s_obj_type_name (v));
    if (v->via.u64 != WIRE_SCHEMA_VERSION)
        return s_fail (err, 400, "unsupported schema version %" PRIu64 " (this build speaks %d)",
                       v->via.u64, WIRE_SCHEMA_VERSION);
    if (t && t->type != MSGPACK_OBJECT_NIL) {
        if (t->type != MSGPACK_OBJECT_STR)
            return s_fail (err, 400, "message type 't' must be a str, got %s", s_obj_type_name (t));
        if (!s_key_is (t, desc->name)) {
            int shown = t->via.str.size > 40? 40: (int) t->via.str.size;
            return s_fail (err, 400, "expected message '%s', got '%.*s'",
                           desc->name, shown, t->via.str.ptr);
        }
    }
    return 0;
}

int
wire_decode (const wire_desc_t *desc, const void *data, size_t size,
             void *msg, wire_err_t *err)
{
    assert (desc && msg);
    memset (msg, 0, desc->size);
    if (err)
        err->status = 0;
    if (!data && size)
        return s_fail (err, 400, "no data");
    int rc = s_prescan (data, size, err);
    if (rc)
        return rc;

    msgpack_unpacked up;
    msgpack_unpacked_init (&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next (&up, data, size, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        rc = s_fail (err, 500, "out of memory");
    else
    if (ur != MSGPACK_UNPACK_SUCCESS || off != size)
        rc = s_fail (err, 400, "not a MessagePack message");   //  prescan should have caught it
    else
    if (!desc->nested && (rc = s_check_envelope (desc, &up.data, err)))
        ;
    else
    if ((rc = s_decode_map (desc, &up.data, msg, "", err)))
        ;
    else
        rc = s_validate (desc, msg, "", err);
    msgpack_unpacked_destroy (&up);
    if (rc) {
        wire_msg_free (desc, msg);
        return rc;
    }
    return 0;
}

int
wire_decode_frame (const wire_desc_t *desc, zframe_t *frame, void *msg, wire_err_t *err)
{
    assert (frame);
    return wire_decode (desc, zframe_data (frame), zframe_size (frame), msg, err);
}

//  --------------------------------------------------------------------------
//  Encoding

//  A packer target: counts bytes when data is NULL, else writes them.
typedef struct {
    uint8_t *data;              //  size bytes, or NULL to count only
    size_t size;
    size_t used;
} sink_t;

static int
s_sink_write (void *self, const char *buf, size_t len)
{
    sink_t *sink = (sink_t *) self;
    if (sink->data) {
        assert (sink->used + len <= sink->size);
        memcpy (sink->data + sink->used, buf, len);
    }
    sink->used += len;
    return 0;
}

static void s_pack_map (msgpack_packer *pk, const wire_desc_t *desc, const void *msg);

static void
s_pack_str (msgpack_packer *pk, const char *s)
{
    size_t len = strlen (s);
    msgpack_pack_str (pk, len);
    msgpack_pack_str_body (pk, s, len);
}

static void
s_pack_value (msgpack_packer *pk, const wire_field_t *f, const uint8_t *v)
{
    switch (f->type) {
        case WIRE_T_BOOL:
            if (*(const bool *) v) msgpack_pack_true (pk);
            else                   msgpack_pack_false (pk);
            break;
        case WIRE_T_INT32:   msgpack_pack_int64 (pk, *(const int32_t *) v); break;
        case WIRE_T_INT64:   msgpack_pack_int64 (pk, *(const int64_t *) v); break;
        case WIRE_T_UINT32:  msgpack_pack_uint64 (pk, *(const uint32_t *) v); break;
        case WIRE_T_UINT64:  msgpack_pack_uint64 (pk, *(const uint64_t *) v); break;
        case WIRE_T_FLOAT32: msgpack_pack_float (pk, *(const float *) v); break;
        case WIRE_T_FLOAT64: msgpack_pack_double (pk, *(const double *) v); break;
        case WIRE_T_STR:     s_pack_str (pk, *(char *const *) v); break;
        case WIRE_T_ENUM:    s_pack_str (pk, f->enum_names [*(const int *) v]); break;
        case WIRE_T_BIN: {
            const wire_bin_t *bin = (const wire_bin_t *) v;
            msgpack_pack_bin (pk, bin->size);
            msgpack_pack_bin_body (pk, bin->data, bin->size);
            break;
        }
        case WIRE_T_MSG:
            s_pack_map (pk, f->sub, v);
            break;
        case WIRE_T_MAP: {
            const wire_kv_t *kv = (const wire_kv_t *) v;
            s_pack_str (pk, kv->key);
            s_pack_str (pk, kv->value);
            break;
        }
    }
}

//  Packs a validated message: `v` and `t` first for top-level messages,
//  then every present field in schema order.
static void
s_pack_map (msgpack_packer *pk, const wire_desc_t *desc, const void *msg)
{
    size_t n = desc->nested? 0: 2;
    for (size_t i = 0; i < desc->field_count; i++)
        n += s_present (&desc->fields [i], msg);
    msgpack_pack_map (pk, n);
    if (!desc->nested) {
        s_pack_str (pk, "v");
        msgpack_pack_uint64 (pk, WIRE_SCHEMA_VERSION);
        s_pack_str (pk, "t");
        s_pack_str (pk, desc->name);
    }
    for (size_t i = 0; i < desc->field_count; i++) {
        const wire_field_t *f = &desc->fields [i];
        if (!s_present (f, msg))
            continue;
        s_pack_str (pk, f->key);
        const uint8_t *m = CMEMBER (msg, f);
        if (f->is_array || f->type == WIRE_T_MAP) {
            const uint8_t *elems = *(const uint8_t *const *) m;
            size_t count = CCOUNT (msg, f);
            size_t esize = s_elem_size (f);
            if (f->type == WIRE_T_MAP)
                msgpack_pack_map (pk, count);
            else
                msgpack_pack_array (pk, count);
            for (size_t k = 0; k < count; k++)
                s_pack_value (pk, f, elems + k * esize);
        }
        else
        if (f->type == WIRE_T_MSG)
            s_pack_map (pk, f->sub, *(const void *const *) m);
        else
            s_pack_value (pk, f, m);
    }
}

//  Validates msg and returns its encoded size (0 with err filled on error).
static size_t
s_encoded_size (const wire_desc_t *desc, const void *msg, wire_err_t *err)
{
    if (s_validate (desc, msg, "", err))
        return 0;
    sink_t counter = { NULL, 0, 0 };
    msgpack_packer pk;
    msgpack_packer_init (&pk, &counter, s_sink_write);
    s_pack_map (&pk, desc, msg);
    if (counter.used > WIRE_MAX_FRAME_BYTES) {
        s_fail (err, 413, "message of %zu bytes exceeds max_frame_bytes %d",
                counter.used, WIRE_MAX_FRAME_BYTES);
        return 0;
    }
    return counter.used;
}

static void
s_pack_into (const wire_desc_t *desc, const void *msg, uint8_t *data, size_t size)
{
    sink_t sink = { data, size, 0 };
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sink, s_sink_write);
    s_pack_map (&pk, desc, msg);
    assert (sink.used == size);
}

int
wire_encode (const wire_desc_t *desc, const void *msg,
             uint8_t **data_p, size_t *size_p, wire_err_t *err)
{
    assert (desc && msg && data_p && size_p);
    *data_p = NULL;
    *size_p = 0;
    if (err)
        err->status = 0;
    size_t size = s_encoded_size (desc, msg, err);
    if (size == 0)
        return -2;
    uint8_t *data = malloc (size);
    if (!data)
        return s_fail (err, 500, "out of memory");
    s_pack_into (desc, msg, data, size);
    *data_p = data;
    *size_p = size;
    return 0;
}

zframe_t *
wire_encode_frame (const wire_desc_t *desc, const void *msg, wire_err_t *err)
{
    assert (desc && msg);
    if (err)
        err->status = 0;
    size_t size = s_encoded_size (desc, msg, err);
    if (size == 0)
        return NULL;
    zframe_t *frame = zframe_new (NULL, size);
    if (!frame) {
        s_fail (err, 500, "out of memory");
        return NULL;
    }
    s_pack_into (desc, msg, zframe_data (frame), size);
    return frame;
}

//  --------------------------------------------------------------------------
//  Error replies

//  Copies text into out (out_size >= 4), replacing invalid UTF-8 with '?'
//  and cutting at a character boundary so the result fits.
static void
s_sanitize_text (const char *text, char *out, size_t out_size)
{
    size_t len = strlen (text), o = 0, i = 0;
    while (i < len) {
        size_t n = 1;
        uint8_t c = (uint8_t) text [i];
        if (c >= 0x80) {
            n = (c & 0xE0) == 0xC0? 2: (c & 0xF0) == 0xE0? 3: (c & 0xF8) == 0xF0? 4: 0;
            if (n == 0 || i + n > len || !s_utf8_valid ((const uint8_t *) text + i, n)) {
                if (o + 1 >= out_size)
                    break;
                out [o++] = '?';
                i++;
                continue;
            }
        }
        if (o + n >= out_size)
            break;
        memcpy (out + o, text + i, n);
        o += n;
        i += n;
    }
    out [o] = 0;
}

static void
s_error_msg (int status, const char *text, int retry_after_ms, wire_error_t *msg, char *buf,
             size_t buf_size)
{
    wire_msg_init (&wire_error_desc, msg);
    msg->status = status >= 100 && status <= 599? (uint32_t) status: 500;
    s_sanitize_text (text? text: "", buf, buf_size);
    msg->error = buf;
    if (retry_after_ms >= 0) {
        msg->has_retry_after_ms = true;
        msg->retry_after_ms = retry_after_ms > WIRE_MAX_RETRY_AFTER_MS?
                              WIRE_MAX_RETRY_AFTER_MS: (uint32_t) retry_after_ms;
    }
}

int
wire_error_encode (int status, const char *text, int retry_after_ms,
                   uint8_t **data_p, size_t *size_p)
{
    char *buf = malloc (WIRE_MAX_ERROR_BYTES + 1);
    if (!buf)
        return -1;
    wire_error_t msg;
    s_error_msg (status, text, retry_after_ms, &msg, buf, WIRE_MAX_ERROR_BYTES + 1);
    int rc = wire_encode (&wire_error_desc, &msg, data_p, size_p, NULL);
    free (buf);
    return rc? -1: 0;
}

zframe_t *
wire_error_frame (int status, const char *text, int retry_after_ms)
{
    char *buf = malloc (WIRE_MAX_ERROR_BYTES + 1);
    if (!buf)
        return NULL;
    wire_error_t msg;
    s_error_msg (status, text, retry_after_ms, &msg, buf, WIRE_MAX_ERROR_BYTES + 1);
    zframe_t *frame = wire_encode_frame (&wire_error_desc, &msg, NULL);
    free (buf);
    return frame;
}

zframe_t *
wire_error_frame_from (const wire_err_t *err)
{
    assert (err);
    return wire_error_frame (err->status? err->status: 500, err->text, -1);
}

//  --------------------------------------------------------------------------
//  Peeking and lookups

int
wire_peek (const void *data, size_t size, wire_peek_t *peek, wire_err_t *err)
{
    assert (peek);
    memset (peek, 0, sizeof (*peek));
    peek->version = -1;
    if (err)
        err->status = 0;
    int rc = s_prescan (data, size, err);
    if (rc)
        return rc;
    cursor_t cur = { data, (const uint8_t *) data + size };
    header_t h;
    if ((rc = s_read_header (&cur, &h, err)))
        return rc;
    if (h.kind != H_MAP)
        return s_fail (err, 400, "message is not a map");
    uint64_t objects = 0;
    for (uint64_t i = 0; i < h.n; i++) {
        header_t key, val;
        if ((rc = s_read_header (&cur, &key, err)))
            return rc;
        const uint8_t *val_start = cur.p;
        if ((rc = s_read_header (&cur, &val, err)))
            return rc;
        if (val.kind == H_ARRAY || val.kind == H_MAP) {
            uint64_t n = val.kind == H_MAP? val.n * 2: val.n;
            if ((rc = s_skip (&cur, n, 2, &objects, err)))
                return rc;
        }
        (void) val_start;
        if (key.kind != H_STR || key.n != 1) {
            if (key.kind == H_STR && key.n == 7 && memcmp (key.body, "session", 7) == 0) {
                if (val.kind != H_STR)
                    return s_fail (err, 400, "field 'session': expected str");
                if (val.n > WIRE_MAX_SESSION_BYTES)
                    return s_fail (err, 413, "field 'session': string of %" PRIu64
                                   " bytes exceeds the limit %d", val.n, WIRE_MAX_SESSION_BYTES);
                if (memchr (val.body, 0, val.n))
                    return s_fail (err, 422, "field 'session': string contains a NUL byte");
                memcpy (peek->session, val.body, val.n);
                peek->session [val.n] = 0;
            }
            else
            if (key.kind == H_STR && key.n == 6 && memcmp (key.body, "status", 6) == 0) {
                if (val.byte <= 0x7f || val.byte == 0xcc || val.byte == 0xcd)
                    peek->status = val.byte <= 0x7f? val.byte: (int) s_be (val.body, val.byte == 0xcc? 1: 2);
                else
                    return s_fail (err, 400, "field 'status': expected a small uint");
            }
            continue;
        }
        if (key.body [0] == 'v') {
            if (val.byte <= 0x7f)
                peek->version = val.byte;
            else
            if (val.byte >= 0xcc && val.byte <= 0xcf) {
                uint64_t x = s_be (val.body, 1 << (val.byte - 0xcc));
                peek->version = x > INT32_MAX? INT32_MAX: (int) x;
            }
            else
                return s_fail (err, 400, "schema version 'v' must be an int");
        }
        else
        if (key.body [0] == 't') {
            if (val.kind != H_STR)
                return s_fail (err, 400, "message type 't' must be a str");
            size_t n = val.n < sizeof (peek->tag) - 1? val.n: sizeof (peek->tag) - 1;
            memcpy (peek->tag, val.body, n);
            peek->tag [n] = 0;
            peek->desc = n == val.n? wire_desc_by_name (peek->tag): NULL;
            if (peek->desc && peek->desc->nested)
                peek->desc = NULL;
        }
    }
    return 0;
}

const wire_desc_t *
wire_desc_by_name (const char *name)
{
    if (!name)
        return NULL;
    for (int id = 1; id < WIRE_MSG_COUNT_; id++)
        if (strcmp (wire_descs [id]->name, name) == 0)
            return wire_descs [id];
    return NULL;
}

const wire_desc_t *
wire_desc_by_id (int id)
{
    return id > 0 && id < WIRE_MSG_COUNT_? wire_descs [id]: NULL;
}

//  --------------------------------------------------------------------------
//  Equality (tests, and services that cache requests)

static bool s_equal (const wire_desc_t *desc, const void *a, const void *b,
                     const char *path, char *diff, size_t diff_size);

static bool
s_value_equal (const wire_field_t *f, const uint8_t *a, const uint8_t *b,
               const char *path, char *diff, size_t diff_size)
{
    switch (f->type) {
        case WIRE_T_STR: {
            const char *x = *(char *const *) a, *y = *(char *const *) b;
            return x && y && strcmp (x, y) == 0;
        }
        case WIRE_T_BIN: {
            const wire_bin_t *x = (const wire_bin_t *) a, *y = (const wire_bin_t *) b;
            return x->size == y->size && (x->size == 0 || memcmp (x->data, y->data, x->size) == 0);
        }
        case WIRE_T_MSG:
            return s_equal (f->sub, a, b, path, diff, diff_size);
        case WIRE_T_MAP: {
            const wire_kv_t *x = (const wire_kv_t *) a, *y = (const wire_kv_t *) b;
            return strcmp (x->key, y->key) == 0 && strcmp (x->value, y->value) == 0;
        }
        case WIRE_T_FLOAT32: return *(const float *) a == *(const float *) b;
        case WIRE_T_FLOAT64: return *(const double *) a == *(const double *) b;
        case WIRE_T_BOOL:    return *(const bool *) a == *(const bool *) b;
        default:
            return memcmp (a, b, s_elem_size (f)) == 0;
    }
}

static bool
s_equal (const wire_desc_t *desc, const void *a, const void *b,
         const char *path, char *diff, size_t diff_size)
{
    char sub [PATH_MAX_LEN];
    char elem [PATH_MAX_LEN];
    for (size_t i = 0; i < desc->field_count; i++) {
        const wire_field_t *f = &desc->fields [i];
        s_path_key (sub, path, f->key);
        bool pa = s_present (f, a), pb = s_present (f, b);
        bool same = pa == pb;
        if (same && pa) {
            const uint8_t *ma = CMEMBER (a, f), *mb = CMEMBER (b, f);
            if (f->is_array || f->type == WIRE_T_MAP) {
                size_t count = CCOUNT (a, f);
                same = count == CCOUNT (b, f);
                size_t esize = s_elem_size (f);
                const uint8_t *ea = *(const uint8_t *const *) ma;
                const uint8_t *eb = *(const uint8_t *const *) mb;
                for (size_t k = 0; same && k < count; k++) {
                    s_path_index (elem, sub, k);
                    same = s_value_equal (f, ea + k * esize, eb + k * esize, elem, diff, diff_size);
                    if (!same && f->type == WIRE_T_MSG)
                        return false;   //  nested diff already written
                }
            }
            else
            if (f->type == WIRE_T_MSG) {
                if (!s_equal (f->sub, *(const void *const *) ma, *(const void *const *) mb,
                              sub, diff, diff_size))
                    return false;
            }
            else
                same = s_value_equal (f, ma, mb, sub, diff, diff_size);
        }
        if (!same) {
            if (diff && diff_size)
                snprintf (diff, diff_size, "%s", sub);
            return false;
        }
    }
    return true;
}

bool
wire_msg_equal (const wire_desc_t *desc, const void *a, const void *b,
                char *diff, size_t diff_size)
{
    assert (desc && a && b);
    if (diff && diff_size)
        *diff = 0;
    return s_equal (desc, a, b, "", diff, diff_size);
}
