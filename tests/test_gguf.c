/*  test_gguf.c: the GGUF reader on valid, hand-built and malformed files.

    Files are built byte by byte here (not with the writer) so the reader is
    checked against the format itself. Every malformed case must fail with
    a message naming the problem; every valid case must read back exactly.
    The real model (SPLITMESH_MODEL, or /work/models/...) is checked when
    present and skipped with the reason otherwise.
*/
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "gguf.h"

#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail (__VA_ARGS__); } while (0)

//  --------------------------------------------------------------------------
//  A little-endian byte builder

typedef struct {
    uint8_t *data;
    size_t size, cap;
} buf_t;

static void
b_bytes (buf_t *b, const void *p, size_t n)
{
    if (b->size + n > b->cap) {
        b->cap = (b->size + n) * 2 + 64;
        b->data = realloc (b->data, b->cap);
    }
    memcpy (b->data + b->size, p, n);
    b->size += n;
}

static void b_u8 (buf_t *b, uint8_t v) { b_bytes (b, &v, 1); }
static void b_u32 (buf_t *b, uint32_t v) { b_bytes (b, &v, 4); }
static void b_u64 (buf_t *b, uint64_t v) { b_bytes (b, &v, 8); }

static void
b_str (buf_t *b, const char *s)
{
    b_u64 (b, strlen (s));
    b_bytes (b, s, strlen (s));
}

static void
b_pad (buf_t *b, size_t alignment)
{
    while (b->size % alignment)
        b_u8 (b, 0);
}

static void
b_header (buf_t *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    b_bytes (b, "GGUF", 4);
    b_u32 (b, version);
    b_u64 (b, n_tensors);
    b_u64 (b, n_kv);
}

static void
b_kv_u32 (buf_t *b, const char *key, uint32_t v)
{
    b_str (b, key);
    b_u32 (b, GGUF_TYPE_UINT32);
    b_u32 (b, v);
}

static void
b_kv_str (buf_t *b, const char *key, const char *v)
{
    b_str (b, key);
    b_u32 (b, GGUF_TYPE_STRING);
    b_str (b, v);
}

static void
b_tensor (buf_t *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    b_str (b, name);
    b_u32 (b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        b_u64 (b, ne [i]);
    b_u32 (b, type);
    b_u64 (b, offset);
}

//  Opens b's bytes; expects failure with a message containing want.
static void
s_expect_error (buf_t *b, const char *want)
{
    char err [512] = "";
    gguf_t *g = gguf_open_buffer (b->data, b->size, err, sizeof err);
    if (g)
        gguf_destroy (&g);
    cr_assert_null (g, "expected failure '%s', file was accepted", want);
    cr_assert (strstr (err, want), "expected error containing '%s', got '%s'", want, err);
    free (b->data);
    memset (b, 0, sizeof *b);
}

//  A valid v3 file with every metadata type and three tensors.
static buf_t
s_valid_file (uint32_t version)
{
    buf_t b = { 0 };
    b_header (&b, version, 3, 16);
    b_kv_str (&b, "general.architecture", "llama");
    b_kv_u32 (&b, "llama.block_count", 2);
    b_str (&b, "k.u8");   b_u32 (&b, GGUF_TYPE_UINT8);   b_u8 (&b, 200);
    b_str (&b, "k.i8");   b_u32 (&b, GGUF_TYPE_INT8);    b_u8 (&b, (uint8_t) -5);
    b_str (&b, "k.u16");  b_u32 (&b, GGUF_TYPE_UINT16);  b_bytes (&b, &(uint16_t) { 60000 }, 2);
    b_str (&b, "k.i16");  b_u32 (&b, GGUF_TYPE_INT16);   b_bytes (&b, &(int16_t) { -300 }, 2);
    b_str (&b, "k.i32");  b_u32 (&b, GGUF_TYPE_INT32);   b_bytes (&b, &(int32_t) { -7 }, 4);
    b_str (&b, "k.f32");  b_u32 (&b, GGUF_TYPE_FLOAT32); b_bytes (&b, &(float) { 1e-5f }, 4);
    b_str (&b, "k.bool"); b_u32 (&b, GGUF_TYPE_BOOL);    b_u8 (&b, 1);
    b_str (&b, "k.u64");  b_u32 (&b, GGUF_TYPE_UINT64);  b_u64 (&b, 0xFFFFFFFFFFFFFFF0ull);
    b_str (&b, "k.i64");  b_u32 (&b, GGUF_TYPE_INT64);   b_bytes (&b, &(int64_t) { -1234567890123ll }, 8);
    b_str (&b, "k.f64");  b_u32 (&b, GGUF_TYPE_FLOAT64); b_bytes (&b, &(double) { 10000.5 }, 8);
    b_str (&b, "k.strs"); b_u32 (&b, GGUF_TYPE_ARRAY);   b_u32 (&b, GGUF_TYPE_STRING); b_u64 (&b, 3);
    b_str (&b, "<|endoftext|>"); b_str (&b, ""); b_str (&b, "\xc4\xa0the");
    b_str (&b, "k.i32s"); b_u32 (&b, GGUF_TYPE_ARRAY);   b_u32 (&b, GGUF_TYPE_INT32); b_u64 (&b, 4);
    for (int32_t i = 0; i < 4; i++)
        b_bytes (&b, &(int32_t) { i * 10 - 1 }, 4);
    b_str (&b, "k.empty"); b_u32 (&b, GGUF_TYPE_ARRAY);  b_u32 (&b, GGUF_TYPE_FLOAT32); b_u64 (&b, 0);
    b_kv_str (&b, "k.str", "hello");
    b_tensor (&b, "token_embd.weight", 2, (uint64_t []) { 32, 3 }, GGML_TYPE_Q8_0, 0);       //  3 * 34 = 102
    b_tensor (&b, "output_norm.weight", 1, (uint64_t []) { 8 }, GGML_TYPE_F32, 128);         //  32
    b_tensor (&b, "blk.0.attn_q.weight", 3, (uint64_t []) { 2, 2, 2 }, GGML_TYPE_F16, 160); //  16
    b_pad (&b, 32);
    uint8_t data [176];
    for (int i = 0; i < 176; i++)
        data [i] = (uint8_t) i;
    //  A valid q8_0 scale (1.0 as fp16) in each block.
    for (int r = 0; r < 3; r++) {
        data [r * 34] = 0x00;
        data [r * 34 + 1] = 0x3c;
    }
    float norm [8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    memcpy (data + 128, norm, sizeof norm);
    b_bytes (&b, data, sizeof data);
    return b;
}

//  --------------------------------------------------------------------------
//  Valid files

static void
s_check_valid (uint32_t version)
{
    buf_t b = s_valid_file (version);
    char err [256] = "";
    gguf_t *g = gguf_open_buffer (b.data, b.size, err, sizeof err);
    cr_assert_not_null (g, "valid v%u file rejected: %s", version, err);
    cr_assert_eq (gguf_version (g), version);
    cr_assert_eq (gguf_alignment (g), 32);
    cr_assert_eq (gguf_data_offset (g) % 32, 0);
    cr_assert_eq (gguf_key_count (g), 16);
    cr_assert_str_eq (gguf_key_at (g, 0), "general.architecture");
    cr_assert_str_eq (gguf_key_at (g, 15), "k.str");
    cr_assert_null (gguf_key_at (g, 16));
    cr_assert_null (gguf_key_at (g, -1));

    char arch [16];
    cr_assert (gguf_get_str_copy (g, "general.architecture", arch, sizeof arch));
    cr_assert_str_eq (arch, "llama");
    char tiny [3];
    cr_assert (gguf_get_str_copy (g, "general.architecture", tiny, sizeof tiny));
    cr_assert_str_eq (tiny, "ll", "copy truncates to size - 1");
    const char *s;
    size_t len;
    cr_assert (gguf_get_str (g, "k.str", &s, &len));
    cr_assert_eq (len, 5);
    cr_assert_eq (memcmp (s, "hello", 5), 0);

    uint32_t u32;
    int64_t i64;
    float f32;
    bool bv;
    cr_assert (gguf_get_u32 (g, "llama.block_count", &u32) && u32 == 2);
    cr_assert (gguf_get_u32 (g, "k.u8", &u32) && u32 == 200, "u8 widens");
    cr_assert (gguf_get_u32 (g, "k.u16", &u32) && u32 == 60000);
    cr_assert (!gguf_get_u32 (g, "k.i8", &u32), "negative does not fit u32");
    cr_assert (!gguf_get_u32 (g, "k.u64", &u32), "large u64 does not fit u32");
    cr_assert (gguf_get_i64 (g, "k.i8", &i64) && i64 == -5);
    cr_assert (gguf_get_i64 (g, "k.i16", &i64) && i64 == -300);
    cr_assert (gguf_get_i64 (g, "k.i32", &i64) && i64 == -7);
    cr_assert (gguf_get_i64 (g, "k.i64", &i64) && i64 == -1234567890123ll);
    cr_assert (!gguf_get_i64 (g, "k.u64", &i64), "u64 above INT64_MAX does not fit");
    cr_assert (gguf_get_f32 (g, "k.f32", &f32) && f32 == 1e-5f);
    cr_assert (gguf_get_f32 (g, "k.f64", &f32) && f32 == 10000.5f);
    cr_assert (!gguf_get_f32 (g, "k.i32", &f32), "int is not float");
    cr_assert (gguf_get_bool (g, "k.bool", &bv) && bv);
    cr_assert (!gguf_get_bool (g, "k.u8", &bv));
    cr_assert (!gguf_get_str (g, "k.u8", &s, &len));
    cr_assert (!gguf_get_u32 (g, "general.architecture", &u32), "string is not an int");
    cr_assert (!gguf_get_u32 (g, "missing", &u32));
    cr_assert (!gguf_has_key (g, "missing"));
    cr_assert (gguf_has_key (g, "k.f64"));
    cr_assert_eq (gguf_key_type (g, "k.f64"), GGUF_TYPE_FLOAT64);
    cr_assert_eq (gguf_key_type (g, "nope"), GGUF_TYPE_COUNT);
    uint64_t raw;
    memcpy (&raw, gguf_value_data (g, "k.u64"), 8);
    cr_assert_eq (raw, 0xFFFFFFFFFFFFFFF0ull);
    cr_assert_null (gguf_value_data (g, "k.str"));

    gguf_value_type_t et;
    uint64_t count;
    cr_assert (gguf_get_array (g, "k.strs", &et, &count));
    cr_assert_eq (et, GGUF_TYPE_STRING);
    cr_assert_eq (count, 3);
    cr_assert_null (gguf_array_data (g, "k.strs"), "string arrays are not contiguous data");
    cr_assert (gguf_array_str (g, "k.strs", 0, &s, &len));
    cr_assert (len == 13 && !memcmp (s, "<|endoftext|>", 13));
    cr_assert (gguf_array_str (g, "k.strs", 1, &s, &len) && len == 0);
    cr_assert (gguf_array_str (g, "k.strs", 2, &s, &len));
    cr_assert (len == 5 && !memcmp (s, "\xc4\xa0the", 5));
    cr_assert (!gguf_array_str (g, "k.strs", 3, &s, &len), "index past the end");
    cr_assert (!gguf_array_str (g, "k.i32s", 0, &s, &len), "not a string array");
    cr_assert (gguf_get_array (g, "k.i32s", &et, &count) && et == GGUF_TYPE_INT32 && count == 4);
    const uint8_t *ints = gguf_array_data (g, "k.i32s");
    cr_assert_not_null (ints);
    for (int i = 0; i < 4; i++) {
        int32_t v;
        memcpy (&v, ints + 4 * i, 4);
        cr_assert_eq (v, i * 10 - 1);
    }
    cr_assert (gguf_get_array (g, "k.empty", &et, &count) && et == GGUF_TYPE_FLOAT32 && count == 0);
    cr_assert (!gguf_get_array (g, "k.str", &et, &count));

    cr_assert_eq (gguf_tensor_count (g), 3);
    const gguf_tensor_t *t = gguf_find_tensor (g, "token_embd.weight");
    cr_assert_not_null (t);
    cr_assert_eq (t, gguf_tensor_at (g, 0));
    cr_assert_eq (t->type, GGML_TYPE_Q8_0);
    cr_assert_eq (t->n_dims, 2);
    cr_assert (t->ne [0] == 32 && t->ne [1] == 3 && t->ne [2] == 1 && t->ne [3] == 1);
    cr_assert_eq (t->n_elements, 96);
    cr_assert_eq (t->nbytes, 102);
    cr_assert_eq ((const uint8_t *) t->data, b.data + gguf_data_offset (g));
    float row [32];
    ggml_dequantize (t->type, t->data, row, 32);
    cr_assert_eq (row [5], (float) (int8_t) 7, "q8_0 element 5 = qs[5] * 1.0");
    t = gguf_find_tensor (g, "output_norm.weight");
    cr_assert_not_null (t);
    cr_assert_eq (t->nbytes, 32);
    float norm [8];
    memcpy (norm, t->data, sizeof norm);
    cr_assert_eq (norm [7], 8.0f);
    t = gguf_find_tensor (g, "blk.0.attn_q.weight");
    cr_assert (t && t->n_dims == 3 && t->n_elements == 8 && t->nbytes == 16);
    cr_assert_eq ((const uint8_t *) t->data, b.data + gguf_data_offset (g) + 160);
    cr_assert_null (gguf_find_tensor (g, "output.weight"));
    cr_assert_null (gguf_tensor_at (g, 3));
    cr_assert_null (gguf_tensor_at (g, -1));
    gguf_destroy (&g);
    cr_assert_null (g);
    gguf_destroy (&g);          //  harmless twice
    free (b.data);
}

Test (gguf, reads_v3) { s_check_valid (3); }
Test (gguf, reads_v2) { s_check_valid (2); }

Test (gguf, open_file_and_errors)
{
    buf_t b = s_valid_file (3);
    char path [] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp (path);
    cr_assert_geq (fd, 0);
    cr_assert_eq (write (fd, b.data, b.size), (ssize_t) b.size);
    close (fd);
    char err [512] = "";
    gguf_t *g = gguf_open (path, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (gguf_tensor_count (g), 3);
    const gguf_tensor_t *t = gguf_find_tensor (g, "output_norm.weight");
    float norm [8];
    memcpy (norm, t->data, sizeof norm);
    cr_assert_eq (norm [0], 1.0f);
    gguf_destroy (&g);

    //  Empty file: the message says what is missing and which file.
    cr_assert_eq (truncate (path, 0), 0);
    g = gguf_open (path, err, sizeof err);
    cr_assert_null (g);
    cr_assert (strstr (err, "truncated") && strstr (err, "magic") && strstr (err, path), "%s", err);
    unlink (path);

    g = gguf_open ("/nonexistent/model.gguf", err, sizeof err);
    cr_assert_null (g);
    cr_assert (strstr (err, "cannot open") && strstr (err, "No such file"), "%s", err);
    g = gguf_open ("/tmp", err, sizeof err);
    cr_assert_null (g);
    cr_assert (strstr (err, "not a regular file"), "%s", err);
    //  A NULL error buffer is allowed.
    cr_assert_null (gguf_open ("/nonexistent", NULL, 0));
    free (b.data);
}

Test (gguf, custom_alignment)
{
    buf_t b = { 0 };
    b_header (&b, 3, 2, 1);
    b_kv_u32 (&b, "general.alignment", 64);
    b_tensor (&b, "a", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 0);
    b_tensor (&b, "b", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 64);
    b_pad (&b, 64);
    size_t data_start = b.size;
    float v [32] = { 0 };
    v [16] = 42;
    b_bytes (&b, v, sizeof v);
    char err [256];
    gguf_t *g = gguf_open_buffer (b.data, b.size, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (gguf_alignment (g), 64);
    cr_assert_eq (gguf_data_offset (g), data_start);
    float x;
    memcpy (&x, gguf_find_tensor (g, "b")->data, 4);
    cr_assert_eq (x, 42.0f);
    gguf_destroy (&g);
    free (b.data);

    //  The same offsets with the default alignment of 32: 64 is still
    //  aligned, but 48 is not a multiple of 64.
    b = (buf_t) { 0 };
    b_header (&b, 3, 1, 1);
    b_kv_u32 (&b, "general.alignment", 64);
    b_tensor (&b, "a", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 32);
    b_pad (&b, 64);
    b_bytes (&b, v, sizeof v);
    s_expect_error (&b, "offset 32 is not a multiple of the alignment 64");
}

Test (gguf, no_tensors_no_metadata)
{
    buf_t b = { 0 };
    b_header (&b, 3, 0, 0);
    char err [256];
    gguf_t *g = gguf_open_buffer (b.data, b.size, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (gguf_tensor_count (g), 0);
    cr_assert_eq (gguf_key_count (g), 0);
    cr_assert (!gguf_has_key (g, "general.architecture"));
    cr_assert_null (gguf_find_tensor (g, "x"));
    gguf_destroy (&g);
    free (b.data);
}

//  --------------------------------------------------------------------------
//  Malformed files

//  Every proper prefix of a valid file is rejected, and says why.
Test (gguf, truncated_at_every_offset)
{
    buf_t b = s_valid_file (3);
    for (size_t n = 0; n < b.size; n++) {
        char err [512] = "";
        //  A fresh copy of exactly n bytes, so ASan catches any overread.
        uint8_t *copy = malloc (n ? n : 1);
        memcpy (copy, b.data, n);
        gguf_t *g = gguf_open_buffer (copy, n, err, sizeof err);
        if (g)
            gguf_destroy (&g);
        free (copy);
        CHECK (g == NULL, "prefix of %zu bytes (of %zu) was accepted", n, b.size);
        CHECK (strstr (err, "truncated") || strstr (err, "past end of file"),
               "prefix of %zu bytes: unexpected message '%s'", n, err);
    }
    free (b.data);
}

Test (gguf, wrong_magic)
{
    buf_t b = s_valid_file (3);
    memcpy (b.data, "GGML", 4);
    s_expect_error (&b, "bad magic");
    b = (buf_t) { 0 };
    b_bytes (&b, "\x7f" "ELF", 4);
    s_expect_error (&b, "not a GGUF file");
}

Test (gguf, bad_versions)
{
    buf_t b = s_valid_file (1);
    s_expect_error (&b, "GGUF version 1 is not supported");
    b = s_valid_file (99);
    s_expect_error (&b, "unknown GGUF version 99");
    b = s_valid_file (0);
    s_expect_error (&b, "unknown GGUF version 0");
    b = s_valid_file (0x03000000);
    s_expect_error (&b, "big-endian");
}

Test (gguf, absurd_counts)
{
    buf_t b = { 0 };
    b_header (&b, 3, 1ull << 60, 0);
    s_expect_error (&b, "tensor count 1152921504606846976 exceeds limit 65536");
    b_header (&b, 3, 0, 1ull << 62);
    s_expect_error (&b, "metadata count 4611686018427387904 exceeds limit 65536");
    //  Within the limit but cannot fit in the file: rejected before allocating.
    b_header (&b, 3, 0, 60000);
    b_kv_u32 (&b, "a", 1);
    s_expect_error (&b, "metadata count 60000 cannot fit");
    b_header (&b, 3, 60000, 0);
    s_expect_error (&b, "tensor count 60000 cannot fit");
}

Test (gguf, bad_strings)
{
    buf_t b = { 0 };
    b_header (&b, 3, 0, 1);
    b_u64 (&b, 1000);           //  key length past the end
    b_bytes (&b, "abcdefghijklmnopqrstuvwxyz", 26);
    s_expect_error (&b, "metadata key 0: string of 1000 bytes at offset 32 runs past end of file");

    b_header (&b, 3, 0, 1);
    b_u64 (&b, 1ull << 40);     //  absurd length
    b_bytes (&b, "abcdefghijklmnopqrstuvwxyz", 26);
    s_expect_error (&b, "string length 1099511627776 exceeds limit");

    b_header (&b, 3, 0, 1);
    b_str (&b, "general.name");
    b_u32 (&b, GGUF_TYPE_STRING);
    b_u64 (&b, 50);             //  value past the end
    b_bytes (&b, "short", 5);
    s_expect_error (&b, "metadata 'general.name' value: string of 50 bytes");

    b_header (&b, 3, 0, 1);
    b_u64 (&b, 3);
    b_bytes (&b, "a\0b", 3);
    b_u32 (&b, GGUF_TYPE_UINT8);
    b_u8 (&b, 1);
    s_expect_error (&b, "contains a NUL byte");

    b_header (&b, 3, 0, 1);
    b_str (&b, "");
    b_u32 (&b, GGUF_TYPE_UINT8);
    b_u8 (&b, 1);
    s_expect_error (&b, "metadata key 0 is empty");
}

Test (gguf, bad_metadata_values)
{
    buf_t b = { 0 };
    b_header (&b, 3, 0, 1);
    b_str (&b, "weird");
    b_u32 (&b, 13);
    b_u32 (&b, 0);
    s_expect_error (&b, "metadata 'weird': unknown value type 13");

    b_header (&b, 3, 0, 2);
    b_kv_u32 (&b, "dup", 1);
    b_kv_u32 (&b, "dup", 2);
    s_expect_error (&b, "duplicate metadata key 'dup'");

    b_header (&b, 3, 0, 1);
    b_str (&b, "k");
    b_u32 (&b, GGUF_TYPE_UINT64);
    b_u32 (&b, 7);              //  4 of the 8 bytes
    s_expect_error (&b, "metadata 'k' uint64 value");

    //  Array counts: absurd, overflowing, past the end, nested, bad type.
    b_header (&b, 3, 0, 1);
    b_str (&b, "arr");
    b_u32 (&b, GGUF_TYPE_ARRAY);
    b_u32 (&b, GGUF_TYPE_UINT64);
    b_u64 (&b, 1ull << 62);     //  * 8 bytes would overflow 64 bits
    s_expect_error (&b, "metadata 'arr': array count 4611686018427387904 exceeds limit");

    b_header (&b, 3, 0, 1);
    b_str (&b, "arr");
    b_u32 (&b, GGUF_TYPE_ARRAY);
    b_u32 (&b, GGUF_TYPE_INT32);
    b_u64 (&b, 1000);
    b_u32 (&b, 1);
    s_expect_error (&b, "metadata 'arr': array of 1000 int32 needs 4000 bytes");

    b_header (&b, 3, 0, 1);
    b_str (&b, "arr");
    b_u32 (&b, GGUF_TYPE_ARRAY);
    b_u32 (&b, GGUF_TYPE_STRING);
    b_u64 (&b, 1u << 20);
    b_str (&b, "x");
    s_expect_error (&b, "metadata 'arr': 1048576 strings cannot fit");

    b_header (&b, 3, 0, 1);
    b_str (&b, "arr");
    b_u32 (&b, GGUF_TYPE_ARRAY);
    b_u32 (&b, GGUF_TYPE_STRING);
    b_u64 (&b, 2);
    b_str (&b, "ok");
    b_u64 (&b, 99);
    b_bytes (&b, "0123456789", 10);
    s_expect_error (&b, "metadata 'arr' element 1: string of 99 bytes");

    b_header (&b, 3, 0, 1);
    b_str (&b, "arr");
    b_u32 (&b, GGUF_TYPE_ARRAY);
    b_u32 (&b, GGUF_TYPE_ARRAY);
    b_u64 (&b, 1);
    s_expect_error (&b, "arrays of arrays are not supported");

    b_header (&b, 3, 0, 1);
    b_str (&b, "arr");
    b_u32 (&b, GGUF_TYPE_ARRAY);
    b_u32 (&b, 77);
    b_u64 (&b, 1);
    s_expect_error (&b, "array of unknown element type 77");

    b_header (&b, 3, 0, 1);
    b_kv_u32 (&b, "general.alignment", 48);
    s_expect_error (&b, "general.alignment must be a power of two");
    b_header (&b, 3, 0, 1);
    b_kv_u32 (&b, "general.alignment", 0);
    s_expect_error (&b, "general.alignment must be a power of two");
    b_header (&b, 3, 0, 1);
    b_kv_str (&b, "general.alignment", "32");
    s_expect_error (&b, "general.alignment must be a power of two");
    b_header (&b, 3, 0, 1);
    b_str (&b, "general.alignment");
    b_u32 (&b, GGUF_TYPE_UINT8);
    b_u8 (&b, 32);
    s_expect_error (&b, "general.alignment must be a power of two (uint32)");
}

//  One tensor info with the given fields, data section big enough.
static buf_t
s_one_tensor (const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    buf_t b = { 0 };
    b_header (&b, 3, 1, 0);
    b_tensor (&b, name, n_dims, ne, type, offset);
    b_pad (&b, 32);
    uint8_t zeros [256] = { 0 };
    b_bytes (&b, zeros, sizeof zeros);
    return b;
}

Test (gguf, bad_tensor_infos)
{
    buf_t b = s_one_tensor ("t5", 5, (uint64_t []) { 1, 1, 1, 1, 1 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 't5': n_dims 5 is not within 1..4");
    b = s_one_tensor ("t0", 0, NULL, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 't0': n_dims 0");
    b = s_one_tensor ("z", 2, (uint64_t []) { 4, 0 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 'z': dimension 1 is 0");
    b = s_one_tensor ("big", 1, (uint64_t []) { (1ull << 32) + 1 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 'big': dimension 0 = 4294967297 exceeds limit 4294967296");
    b = s_one_tensor ("ovf", 3, (uint64_t []) { 1ull << 32, 1ull << 32, 1ull << 32 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 'ovf': element count overflows");
    //  Elements fit but bytes do not: 2^62 f32 elements is 2^64 bytes.
    b = s_one_tensor ("bytes", 2, (uint64_t []) { 1ull << 31, 1ull << 31 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 'bytes': data size overflows");
    b = s_one_tensor ("huge", 2, (uint64_t []) { 1ull << 20, 1ull << 20 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 'huge' data [0, +4398046511104) ends past end of file");
    b = s_one_tensor ("u", 1, (uint64_t []) { 32 }, 99, 0);
    s_expect_error (&b, "tensor 'u': unknown ggml type 99");
    b = s_one_tensor ("q2", 1, (uint64_t []) { 256 }, 10, 0);
    s_expect_error (&b, "tensor 'q2': ggml type q2_K (10) is not supported");
    b = s_one_tensor ("blk", 1, (uint64_t []) { 33 }, GGML_TYPE_Q4_0, 0);
    s_expect_error (&b, "tensor 'blk': ne[0] = 33 is not a multiple of the q4_0 block size 32");
    b = s_one_tensor ("k", 2, (uint64_t []) { 128, 2 }, GGML_TYPE_Q4_K, 0);
    s_expect_error (&b, "not a multiple of the q4_K block size 256");
    b = s_one_tensor ("far", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 1ull << 40);
    s_expect_error (&b, "tensor 'far' data [1099511627776, +16) ends past end of file");
    b = s_one_tensor ("edge", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 256);
    s_expect_error (&b, "tensor 'edge' data [256, +16) ends past end of file");
    b = s_one_tensor ("wrap", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, UINT64_MAX - 31);
    s_expect_error (&b, "tensor 'wrap' data");
    b = s_one_tensor ("mis", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 8);
    s_expect_error (&b, "tensor 'mis': offset 8 is not a multiple of the alignment 32");
    b = s_one_tensor ("", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 0: name length 0");
    b = s_one_tensor ("a_name_that_is_far_too_long_for_ggml_which_allows_sixty_three_bytes",
                      1, (uint64_t []) { 4 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "tensor 0: name length 67 is not within 1..63");

    b = (buf_t) { 0 };
    b_header (&b, 3, 2, 0);
    b_tensor (&b, "same", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 0);
    b_tensor (&b, "same", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 32);
    b_pad (&b, 32);
    b_bytes (&b, (uint8_t [64]) { 0 }, 64);
    s_expect_error (&b, "duplicate tensor name 'same'");

    b = (buf_t) { 0 };
    b_header (&b, 3, 2, 0);
    b_tensor (&b, "first", 1, (uint64_t []) { 16 }, GGML_TYPE_F32, 0);    //  [0, 64)
    b_tensor (&b, "second", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 32);   //  [32, 48)
    b_pad (&b, 32);
    b_bytes (&b, (uint8_t [96]) { 0 }, 96);
    s_expect_error (&b, "tensor 'second' data overlaps tensor 'first'");

    //  The tensor's data section starts past the end of the file.
    b = (buf_t) { 0 };
    b_header (&b, 3, 1, 0);
    b_tensor (&b, "t", 1, (uint64_t []) { 4 }, GGML_TYPE_F32, 0);
    s_expect_error (&b, "past end of file");
}

//  Random single-byte corruptions of a valid file never crash (ASan in
//  the sanitizer build and the fuzzer cover this more widely).
Test (gguf, corrupted_bytes_never_crash)
{
    buf_t b = s_valid_file (3);
    uint32_t s = 7;
    int accepted = 0;
    for (int iter = 0; iter < 4000; iter++) {
        uint8_t *copy = malloc (b.size);
        memcpy (copy, b.data, b.size);
        for (int k = 0; k < 1 + iter % 3; k++) {
            s = s * 1103515245u + 12345u;
            size_t pos = (s >> 8) % b.size;
            s = s * 1103515245u + 12345u;
            copy [pos] = (uint8_t) (s >> 16);
        }
        char err [256] = "";
        gguf_t *g = gguf_open_buffer (copy, b.size, err, sizeof err);
        if (g) {
            accepted++;
            //  Whatever was accepted is internally consistent.
            for (int i = 0; i < gguf_tensor_count (g); i++) {
                const gguf_tensor_t *t = gguf_tensor_at (g, i);
                CHECK ((const uint8_t *) t->data >= copy
                       && (const uint8_t *) t->data + t->nbytes <= copy + b.size, "tensor %d outside", i);
            }
            gguf_destroy (&g);
        }
        else
            CHECK (err [0] != '\0', "rejected without a message");
        free (copy);
    }
    cr_assert_gt (accepted, 0, "some corruptions (in data bytes) must still load");
}

//  The fuzzer's committed corpus: valid_* seeds load, bad_* seeds are
//  rejected with a message, and whatever the fuzzer found loads or not
//  without crashing (a regression suite for past findings).
Test (gguf, fuzz_corpus)
{
    char dir_path [512];
    snprintf (dir_path, sizeof dir_path, "%s/fuzz/corpus/gguf", SPLITMESH_SOURCE_DIR);
    DIR *dir = opendir (dir_path);
    cr_assert_not_null (dir, "no corpus at %s", dir_path);
    int n_valid = 0, n_bad = 0, n_other = 0;
    struct dirent *e;
    while ((e = readdir (dir))) {
        if (e->d_name [0] == '.')
            continue;
        char path [1024], err [512] = "";
        snprintf (path, sizeof path, "%s/%s", dir_path, e->d_name);
        gguf_t *g = gguf_open (path, err, sizeof err);
        bool ok = g != NULL;
        gguf_destroy (&g);
        if (!strncmp (e->d_name, "valid_", 6)) {
            CHECK (ok, "%s rejected: %s", e->d_name, err);
            n_valid++;
        }
        else
        if (!strncmp (e->d_name, "bad_", 4)) {
            CHECK (!ok && err [0], "%s accepted or rejected without a message", e->d_name);
            n_bad++;
        }
        else
            n_other++;
    }
    closedir (dir);
    cr_assert_geq (n_valid, 5);
    cr_assert_geq (n_bad, 20);
    cr_log_info ("corpus: %d valid, %d bad, %d found by the fuzzer", n_valid, n_bad, n_other);
}

//  --------------------------------------------------------------------------
//  The real model, when present

Test (gguf, real_model_if_present)
{
    const char *path = getenv ("SPLITMESH_MODEL");
    if (!path || !*path)
        path = "/work/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (access (path, R_OK))
        cr_skip_test ("model file %s not present (set SPLITMESH_MODEL)", path);
    char err [512];
    gguf_t *g = gguf_open (path, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    char arch [32];
    cr_assert (gguf_get_str_copy (g, "general.architecture", arch, sizeof arch));
    cr_assert_str_eq (arch, "llama");
    uint32_t n_layer, n_embd;
    cr_assert (gguf_get_u32 (g, "llama.block_count", &n_layer));
    cr_assert (gguf_get_u32 (g, "llama.embedding_length", &n_embd));
    gguf_value_type_t et;
    uint64_t n_vocab;
    cr_assert (gguf_get_array (g, "tokenizer.ggml.tokens", &et, &n_vocab));
    cr_assert_eq (et, GGUF_TYPE_STRING);
    const gguf_tensor_t *emb = gguf_find_tensor (g, "token_embd.weight");
    cr_assert_not_null (emb);
    cr_assert_eq (emb->ne [0], n_embd);
    cr_assert_eq (emb->ne [1], n_vocab);
    cr_assert_not_null (gguf_find_tensor (g, "output_norm.weight"));
    char name [64];
    snprintf (name, sizeof name, "blk.%u.ffn_down.weight", n_layer - 1);
    cr_assert_not_null (gguf_find_tensor (g, name), "%s", name);
    //  The first row of every tensor dequantizes to finite values.
    float *row = malloc (sizeof (float) * 65536);
    for (int i = 0; i < gguf_tensor_count (g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at (g, i);
        cr_assert_leq (t->ne [0], 65536);
        cr_assert_eq (ggml_dequantize (t->type, t->data, row, (int64_t) t->ne [0]), 0);
        for (uint64_t k = 0; k < t->ne [0]; k++)
            CHECK (isfinite (row [k]), "%s [%llu] = %g", t->name, (unsigned long long) k, row [k]);
    }
    free (row);
    gguf_destroy (&g);
}
