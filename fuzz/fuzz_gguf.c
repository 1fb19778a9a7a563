/*  fuzz_gguf.c: libFuzzer target for the GGUF reader (and writer).

    Opens the input with gguf_open_buffer and, when it is accepted, walks
    everything a loader would touch: every metadata value through every
    getter, every array element, every tensor's data (first and last byte,
    and a dequantized prefix). ASan and UBSan turn any out-of-bounds read
    or undefined arithmetic into a crash.

    It also checks two properties, aborting when they fail: a rejected file
    always has a message, and an accepted file copied key by key and
    tensor by tensor through the writer reads back with the same contents
    (so the writer never emits what the reader rejects).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "gguf_write.h"

static volatile uint32_t s_sink;      //  keeps reads from being optimised out

static void
s_touch (const void *data, size_t n)
{
    const uint8_t *p = data;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc = acc * 31 + p [i];
    s_sink += acc;
}

static void
s_fail (const char *what)
{
    fprintf (stderr, "fuzz_gguf property failed: %s\n", what);
    abort ();
}

static void
s_walk_metadata (const gguf_t *g)
{
    for (int i = 0; i < gguf_key_count (g); i++) {
        const char *key = gguf_key_at (g, i);
        if (!key || !gguf_has_key (g, key))
            s_fail ("key listed but not found");
        gguf_value_type_t type = gguf_key_type (g, key);
        uint32_t u32;
        int64_t i64;
        float f32;
        bool b;
        const char *s;
        size_t len;
        char buf [16];
        s_sink += gguf_get_u32 (g, key, &u32) + gguf_get_i64 (g, key, &i64)
                + gguf_get_f32 (g, key, &f32) + gguf_get_bool (g, key, &b)
                + gguf_get_str_copy (g, key, buf, sizeof buf);
        if (gguf_get_str (g, key, &s, &len))
            s_touch (s, len);
        const void *raw = gguf_value_data (g, key);
        if (raw)
            s_touch (raw, 1);
        gguf_value_type_t et;
        uint64_t count;
        if (gguf_get_array (g, key, &et, &count)) {
            if (type != GGUF_TYPE_ARRAY)
                s_fail ("array getter on a non-array");
            if (et == GGUF_TYPE_STRING) {
                for (uint64_t k = 0; k < count; k++) {
                    if (!gguf_array_str (g, key, k, &s, &len))
                        s_fail ("string array element missing");
                    s_touch (s, len);
                }
                if (gguf_array_str (g, key, count, &s, &len))
                    s_fail ("string array element past the end");
            }
            else {
                const uint8_t *p = gguf_array_data (g, key);
                static const size_t sizes [GGUF_TYPE_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
                if (!p)
                    s_fail ("numeric array without data");
                s_touch (p, (size_t) count * sizes [et]);
            }
        }
    }
}

static void
s_walk_tensors (const gguf_t *g)
{
    static float out [4096];
    for (int i = 0; i < gguf_tensor_count (g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at (g, i);
        if (gguf_find_tensor (g, t->name) != t)
            s_fail ("tensor not found by its name");
        const uint8_t *p = t->data;
        s_sink += p [0] + p [t->nbytes - 1];
        const ggml_type_traits_t *tr = ggml_type_traits (t->type);
        if (!tr || ggml_row_size (t->type, (int64_t) t->ne [0]) * (t->n_elements / t->ne [0]) != t->nbytes)
            s_fail ("tensor size disagrees with type and shape");
        int64_t n = (int64_t) t->ne [0];
        if (n > 4096)
            n = 4096 - 4096 % tr->block_size;
        tr->to_float (t->data, out, n);
        s_touch (out, sizeof (float) * (size_t) n);
    }
}

//  Copies everything through the writer and checks it reads back the same.
static void
s_rewrite (const gguf_t *g)
{
    gguf_writer_t *w = gguf_writer_new ();
    for (int i = 0; i < gguf_key_count (g); i++)
        if (gguf_writer_copy_key (w, g, gguf_key_at (g, i)))
            s_fail (gguf_writer_error (w));
    for (int i = 0; i < gguf_tensor_count (g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at (g, i);
        if (gguf_writer_add_tensor (w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes))
            s_fail (gguf_writer_error (w));
    }
    size_t size;
    void *buf = gguf_writer_write_mem (w, &size);
    if (!buf)
        s_fail (gguf_writer_error (w));
    char err [256];
    gguf_t *back = gguf_open_buffer (buf, size, err, sizeof err);
    if (!back) {
        fprintf (stderr, "re-read: %s\n", err);
        s_fail ("the writer's output was rejected");
    }
    if (gguf_key_count (back) != gguf_key_count (g) || gguf_tensor_count (back) != gguf_tensor_count (g))
        s_fail ("counts changed in the round trip");
    for (int i = 0; i < gguf_tensor_count (g); i++) {
        const gguf_tensor_t *a = gguf_tensor_at (g, i), *b = gguf_tensor_at (back, i);
        if (strcmp (a->name, b->name) || a->nbytes != b->nbytes || memcmp (a->data, b->data, a->nbytes))
            s_fail ("tensor changed in the round trip");
    }
    gguf_destroy (&back);
    free (buf);
    gguf_writer_destroy (&w);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char err [512];
    err [0] = '\0';
    gguf_t *g = gguf_open_buffer (data, size, err, sizeof err);
    if (!g) {
        if (!err [0])
            s_fail ("rejected without a message");
        return 0;
    }
    s_walk_metadata (g);
    s_walk_tensors (g);
    //  The rewrite pads every tensor to general.alignment (up to 2^31):
    //  skip it when the copy would be large, to keep runs fast and small.
    if ((uint64_t) size + ((uint64_t) gguf_tensor_count (g) + 1) * gguf_alignment (g) <= (16u << 20))
        s_rewrite (g);
    gguf_destroy (&g);
    return 0;
}
