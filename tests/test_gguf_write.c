/*  test_gguf_write.c: GGUF writer round trips, and cross-checks with gguf-py.

    Write -> read must give back every metadata type and every tensor type
    exactly. Then, where an interpreter with llama.cpp's `gguf` package is
    found (SPLITMESH_PYTHON or python3 on PATH), gguf-py must read our file
    to the same values and dequantize our tensors to the same bits, and our
    reader must read a file gguf-py wrote. Without gguf-py those two tests
    skip with the reason.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "gguf.h"
#include "gguf_write.h"

#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail (__VA_ARGS__); } while (0)

static const int s_types [] = {
    GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
    GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K,
};
#define N_TYPES ((int) (sizeof s_types / sizeof s_types [0]))

//  Exactly representable inputs (gguf_crosscheck.py computes the same).
static float
s_input (int i)
{
    return (float) ((i * 37) % 101 - 50) / 64.0f;
}

//  A writer holding one of each metadata type and one tensor per type.
static gguf_writer_t *
s_full_writer (void)
{
    gguf_writer_t *w = gguf_writer_new ();
    cr_assert_not_null (w);
    cr_assert_eq (gguf_writer_set_str (w, "general.architecture", "llama"), 0);
    cr_assert_eq (gguf_writer_set_u8 (w, "t.u8", 250), 0);
    cr_assert_eq (gguf_writer_set_i8 (w, "t.i8", -100), 0);
    cr_assert_eq (gguf_writer_set_u16 (w, "t.u16", 65000), 0);
    cr_assert_eq (gguf_writer_set_i16 (w, "t.i16", -32000), 0);
    cr_assert_eq (gguf_writer_set_u32 (w, "t.u32", 4000000000u), 0);
    cr_assert_eq (gguf_writer_set_i32 (w, "t.i32", -2000000000), 0);
    cr_assert_eq (gguf_writer_set_u64 (w, "t.u64", 0xFEDCBA9876543210ull), 0);
    cr_assert_eq (gguf_writer_set_i64 (w, "t.i64", -0x123456789ALL), 0);
    cr_assert_eq (gguf_writer_set_f32 (w, "t.f32", 1e-5f), 0);
    cr_assert_eq (gguf_writer_set_f64 (w, "t.f64", 1e100), 0);
    cr_assert_eq (gguf_writer_set_bool (w, "t.bool", true), 0);
    cr_assert_eq (gguf_writer_set_bool (w, "t.false", false), 0);
    cr_assert_eq (gguf_writer_set_strn (w, "t.bin", "a\0b\xff", 4), 0);
    cr_assert_eq (gguf_writer_set_str (w, "t.empty", ""), 0);
    const char *strs [] = { "<|endoftext|>", "", "\xc4\xa0the", "x" };
    cr_assert_eq (gguf_writer_set_str_array (w, "t.strs", strs, NULL, 4), 0);
    int32_t i32s [] = { 3, -1, 0x7fffffff };
    cr_assert_eq (gguf_writer_set_array (w, "t.i32s", GGUF_TYPE_INT32, i32s, 3), 0);
    float f32s [] = { 0.5f, -0.25f };
    cr_assert_eq (gguf_writer_set_array (w, "t.f32s", GGUF_TYPE_FLOAT32, f32s, 2), 0);
    uint8_t u8s [] = { 1, 2, 3, 4, 5 };
    cr_assert_eq (gguf_writer_set_array (w, "t.u8s", GGUF_TYPE_UINT8, u8s, 5), 0);
    double f64s [] = { 1.5, -1e-300 };
    cr_assert_eq (gguf_writer_set_array (w, "t.f64s", GGUF_TYPE_FLOAT64, f64s, 2), 0);
    uint8_t bools [] = { 1, 0, 1 };
    cr_assert_eq (gguf_writer_set_array (w, "t.bools", GGUF_TYPE_BOOL, bools, 3), 0);
    uint64_t u64s [] = { 0, UINT64_MAX };
    cr_assert_eq (gguf_writer_set_array (w, "t.u64s", GGUF_TYPE_UINT64, u64s, 2), 0);
    cr_assert_eq (gguf_writer_set_array (w, "t.noints", GGUF_TYPE_INT16, NULL, 0), 0);
    cr_assert_eq (gguf_writer_set_str_array (w, "t.nostrs", NULL, NULL, 0), 0);

    float x [512];
    for (int i = 0; i < 512; i++)
        x [i] = s_input (i);
    for (int k = 0; k < N_TYPES; k++) {
        char name [32];
        snprintf (name, sizeof name, "tensor.%s", ggml_type_traits (s_types [k])->name);
        uint64_t ne [2] = { 256, 2 };
        cr_assert_eq (gguf_writer_add_tensor_f32 (w, name, s_types [k], 2, ne, x), 0,
                      "%s: %s", name, gguf_writer_error (w));
    }
    //  An odd-sized raw tensor, so the next one needs padding.
    uint8_t raw [34 * 3];
    for (int i = 0; i < (int) sizeof raw; i++)
        raw [i] = (uint8_t) (i * 7);
    cr_assert_eq (gguf_writer_add_tensor (w, "raw.q8_0", GGML_TYPE_Q8_0, 1, (uint64_t []) { 96 }, raw, sizeof raw), 0);
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "norm", GGML_TYPE_F32, 1, (uint64_t []) { 3 }, x), 0);
    return w;
}

static void
s_check_full (const gguf_t *g)
{
    uint32_t u32;
    int64_t i64;
    float f32;
    bool bv;
    const char *s;
    size_t len;
    char str [32];
    cr_assert (gguf_get_str_copy (g, "general.architecture", str, sizeof str));
    cr_assert_str_eq (str, "llama");
    cr_assert_eq (gguf_key_type (g, "t.u8"), GGUF_TYPE_UINT8);
    cr_assert (gguf_get_u32 (g, "t.u8", &u32) && u32 == 250);
    cr_assert_eq (gguf_key_type (g, "t.i8"), GGUF_TYPE_INT8);
    cr_assert (gguf_get_i64 (g, "t.i8", &i64) && i64 == -100);
    cr_assert_eq (gguf_key_type (g, "t.u16"), GGUF_TYPE_UINT16);
    cr_assert (gguf_get_u32 (g, "t.u16", &u32) && u32 == 65000);
    cr_assert_eq (gguf_key_type (g, "t.i16"), GGUF_TYPE_INT16);
    cr_assert (gguf_get_i64 (g, "t.i16", &i64) && i64 == -32000);
    cr_assert_eq (gguf_key_type (g, "t.u32"), GGUF_TYPE_UINT32);
    cr_assert (gguf_get_u32 (g, "t.u32", &u32) && u32 == 4000000000u);
    cr_assert_eq (gguf_key_type (g, "t.i32"), GGUF_TYPE_INT32);
    cr_assert (gguf_get_i64 (g, "t.i32", &i64) && i64 == -2000000000);
    cr_assert_eq (gguf_key_type (g, "t.u64"), GGUF_TYPE_UINT64);
    uint64_t u64;
    memcpy (&u64, gguf_value_data (g, "t.u64"), 8);
    cr_assert_eq (u64, 0xFEDCBA9876543210ull);
    cr_assert_eq (gguf_key_type (g, "t.i64"), GGUF_TYPE_INT64);
    cr_assert (gguf_get_i64 (g, "t.i64", &i64) && i64 == -0x123456789ALL);
    cr_assert_eq (gguf_key_type (g, "t.f32"), GGUF_TYPE_FLOAT32);
    cr_assert (gguf_get_f32 (g, "t.f32", &f32) && f32 == 1e-5f);
    cr_assert_eq (gguf_key_type (g, "t.f64"), GGUF_TYPE_FLOAT64);
    double f64;
    memcpy (&f64, gguf_value_data (g, "t.f64"), 8);
    cr_assert_eq (f64, 1e100);
    cr_assert (gguf_get_bool (g, "t.bool", &bv) && bv);
    cr_assert (gguf_get_bool (g, "t.false", &bv) && !bv);
    cr_assert (gguf_get_str (g, "t.bin", &s, &len) && len == 4 && !memcmp (s, "a\0b\xff", 4));
    cr_assert (gguf_get_str (g, "t.empty", &s, &len) && len == 0);

    gguf_value_type_t et;
    uint64_t count;
    cr_assert (gguf_get_array (g, "t.strs", &et, &count) && et == GGUF_TYPE_STRING && count == 4);
    const char *want [] = { "<|endoftext|>", "", "\xc4\xa0the", "x" };
    for (int i = 0; i < 4; i++) {
        cr_assert (gguf_array_str (g, "t.strs", (uint64_t) i, &s, &len));
        cr_assert (len == strlen (want [i]) && !memcmp (s, want [i], len), "string %d", i);
    }
    cr_assert (gguf_get_array (g, "t.i32s", &et, &count) && et == GGUF_TYPE_INT32 && count == 3);
    int32_t i32s [3];
    memcpy (i32s, gguf_array_data (g, "t.i32s"), sizeof i32s);
    cr_assert (i32s [0] == 3 && i32s [1] == -1 && i32s [2] == 0x7fffffff);
    float f32s [2];
    cr_assert (gguf_get_array (g, "t.f32s", &et, &count) && et == GGUF_TYPE_FLOAT32 && count == 2);
    memcpy (f32s, gguf_array_data (g, "t.f32s"), sizeof f32s);
    cr_assert (f32s [0] == 0.5f && f32s [1] == -0.25f);
    cr_assert (gguf_get_array (g, "t.u8s", &et, &count) && et == GGUF_TYPE_UINT8 && count == 5);
    cr_assert_eq (memcmp (gguf_array_data (g, "t.u8s"), (uint8_t []) { 1, 2, 3, 4, 5 }, 5), 0);
    double f64s [2];
    cr_assert (gguf_get_array (g, "t.f64s", &et, &count) && et == GGUF_TYPE_FLOAT64 && count == 2);
    memcpy (f64s, gguf_array_data (g, "t.f64s"), sizeof f64s);
    cr_assert (f64s [0] == 1.5 && f64s [1] == -1e-300);
    cr_assert (gguf_get_array (g, "t.bools", &et, &count) && et == GGUF_TYPE_BOOL && count == 3);
    cr_assert (gguf_get_array (g, "t.u64s", &et, &count) && et == GGUF_TYPE_UINT64 && count == 2);
    memcpy (&u64, (const uint8_t *) gguf_array_data (g, "t.u64s") + 8, 8);
    cr_assert_eq (u64, UINT64_MAX);
    cr_assert (gguf_get_array (g, "t.noints", &et, &count) && et == GGUF_TYPE_INT16 && count == 0);
    cr_assert (gguf_get_array (g, "t.nostrs", &et, &count) && et == GGUF_TYPE_STRING && count == 0);

    //  Tensors: exactly the bytes the quantizers produce, aligned.
    float x [512];
    for (int i = 0; i < 512; i++)
        x [i] = s_input (i);
    cr_assert_eq (gguf_tensor_count (g), N_TYPES + 2);
    for (int k = 0; k < N_TYPES; k++) {
        char name [32];
        snprintf (name, sizeof name, "tensor.%s", ggml_type_traits (s_types [k])->name);
        const gguf_tensor_t *t = gguf_find_tensor (g, name);
        cr_assert_not_null (t, "%s missing", name);
        cr_assert_eq (t, gguf_tensor_at (g, k), "%s not in insertion order", name);
        cr_assert_eq ((int) t->type, s_types [k]);
        cr_assert (t->n_dims == 2 && t->ne [0] == 256 && t->ne [1] == 2 && t->n_elements == 512);
        size_t nbytes = ggml_row_size (s_types [k], 512);
        cr_assert_eq (t->nbytes, nbytes);
        cr_assert_eq ((gguf_data_offset (g) + (size_t) ((const uint8_t *) t->data
                       - (const uint8_t *) gguf_tensor_at (g, 0)->data)) % gguf_alignment (g), 0,
                      "%s misaligned", name);
        uint8_t *q = malloc (nbytes);
        ggml_quantize (s_types [k], x, q, 512);
        cr_assert_eq (memcmp (q, t->data, nbytes), 0, "%s data differs", name);
        free (q);
    }
    const gguf_tensor_t *raw = gguf_find_tensor (g, "raw.q8_0");
    cr_assert (raw && raw->nbytes == 102 && ((const uint8_t *) raw->data) [101] == (uint8_t) (101 * 7));
    const gguf_tensor_t *norm = gguf_find_tensor (g, "norm");
    float nv [3];
    memcpy (nv, norm->data, sizeof nv);
    cr_assert (nv [0] == x [0] && nv [2] == x [2]);
}

Test (gguf_write, round_trip_every_type)
{
    gguf_writer_t *w = s_full_writer ();
    size_t size;
    uint8_t *buf = gguf_writer_write_mem (w, &size);
    cr_assert_not_null (buf, "%s", gguf_writer_error (w));
    char err [256];
    gguf_t *g = gguf_open_buffer (buf, size, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (gguf_version (g), 3);
    cr_assert_eq (gguf_alignment (g), 32);
    cr_assert_str_eq (gguf_key_at (g, 0), "general.architecture", "insertion order");
    s_check_full (g);
    //  The file ends right after the last tensor's padded data.
    const gguf_tensor_t *last = gguf_tensor_at (g, gguf_tensor_count (g) - 1);
    size_t end = (size_t) ((const uint8_t *) last->data - buf) + last->nbytes;
    cr_assert_eq (size, end + (32 - end % 32) % 32);
    gguf_destroy (&g);
    free (buf);
    gguf_writer_destroy (&w);
    cr_assert_null (w);
    gguf_writer_destroy (&w);
}

Test (gguf_write, file_and_copy_keys)
{
    gguf_writer_t *w = s_full_writer ();
    char dir [] = "/tmp/test_gguf_write_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path [256], path2 [256];
    snprintf (path, sizeof path, "%s/a.gguf", dir);
    snprintf (path2, sizeof path2, "%s/b.gguf", dir);
    cr_assert_eq (gguf_writer_write_file (w, path), 0, "%s", gguf_writer_error (w));
    size_t mem_size;
    uint8_t *mem = gguf_writer_write_mem (w, &mem_size);
    char err [256];
    gguf_t *g = gguf_open (path, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    s_check_full (g);

    //  Copying every key and tensor from the file rebuilds it byte for byte.
    gguf_writer_t *w2 = gguf_writer_new ();
    for (int i = 0; i < gguf_key_count (g); i++)
        cr_assert_eq (gguf_writer_copy_key (w2, g, gguf_key_at (g, i)), 0, "%s", gguf_writer_error (w2));
    for (int i = 0; i < gguf_tensor_count (g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at (g, i);
        cr_assert_eq (gguf_writer_add_tensor (w2, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes), 0);
    }
    cr_assert_eq (gguf_writer_write_file (w2, path2), 0);
    FILE *f = fopen (path2, "rb");
    uint8_t *back = malloc (mem_size + 1);
    size_t got = fread (back, 1, mem_size + 1, f);
    fclose (f);
    cr_assert_eq (got, mem_size, "file size %zu, memory image %zu", got, mem_size);
    cr_assert_eq (memcmp (back, mem, mem_size), 0, "copied file differs from the original");
    free (back);
    free (mem);
    cr_assert_neq (gguf_writer_copy_key (w2, g, "no.such.key"), 0);
    cr_assert (strstr (gguf_writer_error (w2), "no.such.key"));
    gguf_destroy (&g);

    //  No temporary files left behind; an unwritable path fails cleanly.
    struct stat st;
    char tmp [300];
    snprintf (tmp, sizeof tmp, "%s.tmp.%ld", path, (long) getpid ());
    cr_assert_neq (stat (tmp, &st), 0);
    cr_assert_eq (gguf_writer_write_file (w, "/nonexistent/dir/x.gguf"), -1);
    cr_assert (strstr (gguf_writer_error (w), "cannot create"), "%s", gguf_writer_error (w));
    unlink (path);
    unlink (path2);
    rmdir (dir);
    gguf_writer_destroy (&w);
    gguf_writer_destroy (&w2);
}

Test (gguf_write, replace_remove_alignment)
{
    gguf_writer_t *w = gguf_writer_new ();
    gguf_writer_set_u32 (w, "a", 1);
    gguf_writer_set_str (w, "b", "two");
    gguf_writer_set_u32 (w, "c", 3);
    cr_assert_eq (gguf_writer_set_f32 (w, "a", 1.5f), 0, "replace, new type");
    cr_assert_eq (gguf_writer_remove_key (w, "b"), 0);
    cr_assert_eq (gguf_writer_remove_key (w, "b"), -1);
    cr_assert_eq (gguf_writer_set_u32 (w, "general.alignment", 64), 0);
    float x [64] = { 1 };
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "t1", GGML_TYPE_F32, 1, (uint64_t []) { 3 }, x), 0);
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "t2", GGML_TYPE_Q8_0, 1, (uint64_t []) { 64 }, x), 0);
    size_t size;
    uint8_t *buf = gguf_writer_write_mem (w, &size);
    char err [256];
    gguf_t *g = gguf_open_buffer (buf, size, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (gguf_key_count (g), 3);
    cr_assert_str_eq (gguf_key_at (g, 0), "a");
    cr_assert_str_eq (gguf_key_at (g, 1), "c");
    float f;
    cr_assert (gguf_get_f32 (g, "a", &f) && f == 1.5f);
    cr_assert_eq (gguf_alignment (g), 64);
    cr_assert_eq (gguf_data_offset (g) % 64, 0);
    cr_assert_eq ((const uint8_t *) gguf_find_tensor (g, "t2")->data - buf, (ptrdiff_t) gguf_data_offset (g) + 64);
    gguf_destroy (&g);
    free (buf);

    cr_assert_eq (gguf_writer_set_u32 (w, "general.alignment", 48), 0);
    cr_assert_null (gguf_writer_write_mem (w, &size));
    cr_assert (strstr (gguf_writer_error (w), "power of two"));
    gguf_writer_destroy (&w);
}

Test (gguf_write, rejects_what_the_reader_would)
{
    gguf_writer_t *w = gguf_writer_new ();
    float x [256] = { 0 };
    uint8_t raw [256] = { 0 };
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "a", GGML_TYPE_F32, 1, (uint64_t []) { 4 }, x), 0);
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "a", GGML_TYPE_F32, 1, (uint64_t []) { 4 }, x), -1);
    cr_assert (strstr (gguf_writer_error (w), "duplicate tensor name 'a'"));
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "b", GGML_TYPE_Q4_0, 1, (uint64_t []) { 33 }, x), -1);
    cr_assert (strstr (gguf_writer_error (w), "not a multiple of the q4_0 block size 32"), "%s", gguf_writer_error (w));
    cr_assert_eq (gguf_writer_add_tensor (w, "c", GGML_TYPE_Q8_0, 1, (uint64_t []) { 32 }, raw, 33), -1);
    cr_assert (strstr (gguf_writer_error (w), "33 bytes given, its type and shape need 34"), "%s", gguf_writer_error (w));
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "d", GGML_TYPE_F32, 5, (uint64_t []) { 1, 1, 1, 1, 1 }, x), -1);
    cr_assert (strstr (gguf_writer_error (w), "n_dims 5"));
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "e", GGML_TYPE_F32, 2, (uint64_t []) { 4, 0 }, x), -1);
    cr_assert (strstr (gguf_writer_error (w), "dimension 1 = 0"));
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "f", (ggml_type_t) 10, 1, (uint64_t []) { 256 }, x), -1);
    cr_assert (strstr (gguf_writer_error (w), "unsupported ggml type 10"));
    cr_assert_eq (gguf_writer_add_tensor_f32 (w, "a_name_that_is_far_too_long_for_ggml_which_allows_sixty_three_bytes",
                                              GGML_TYPE_F32, 1, (uint64_t []) { 4 }, x), -1);
    cr_assert (strstr (gguf_writer_error (w), "not within 1..63 bytes"));
    cr_assert_eq (gguf_writer_set_u32 (w, "", 1), -1);
    cr_assert_eq (gguf_writer_set_array (w, "arr", GGUF_TYPE_STRING, x, 1), -1);
    cr_assert_eq (gguf_writer_set_array (w, "arr", GGUF_TYPE_ARRAY, x, 1), -1);
    cr_assert_eq (gguf_writer_set_array (w, "arr", GGUF_TYPE_UINT8, x, (uint64_t) GGUF_MAX_ARRAY + 1), -1);
    cr_assert (strstr (gguf_writer_error (w), "array count"));
    cr_assert_eq (gguf_writer_set_str (w, "s", NULL), -1);
    gguf_writer_destroy (&w);
}

//  --------------------------------------------------------------------------
//  Cross-checks with gguf-py

//  Finds an interpreter that can `import gguf`; NULL when none.
static const char *
s_python_with_gguf (void)
{
    static const char *candidates [3];
    candidates [0] = getenv ("SPLITMESH_PYTHON") ? getenv ("SPLITMESH_PYTHON") : SPLITMESH_PYTHON;
    candidates [1] = "python3";
    candidates [2] = NULL;
    for (int i = 0; candidates [i]; i++) {
        char cmd [512];
        snprintf (cmd, sizeof cmd, "%s -c 'import gguf, numpy' >/dev/null 2>&1", candidates [i]);
        if (system (cmd) == 0)
            return candidates [i];
    }
    return NULL;
}

static int
s_run (const char *cmd)
{
    int status = system (cmd);
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

static char *
s_slurp (const char *path, size_t *size)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return NULL;
    fseek (f, 0, SEEK_END);
    long n = ftell (f);
    fseek (f, 0, SEEK_SET);
    char *buf = malloc ((size_t) n + 1);
    size_t got = fread (buf, 1, (size_t) n, f);
    buf [got] = '\0';
    fclose (f);
    if (size)
        *size = got;
    return buf;
}

Test (gguf_write, gguf_py_reads_our_file)
{
    const char *py = s_python_with_gguf ();
    if (!py)
        cr_skip_test ("no Python with the gguf package (pip install gguf numpy): cross-check skipped");
    char dir [] = "/tmp/test_gguf_py_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path [256], cmd [1024];
    snprintf (path, sizeof path, "%s/ours.gguf", dir);
    gguf_writer_t *w = s_full_writer ();
    cr_assert_eq (gguf_writer_write_file (w, path), 0);
    gguf_writer_destroy (&w);
    snprintf (cmd, sizeof cmd, "%s %s/tests/gguf_crosscheck.py read %s %s", py, SPLITMESH_SOURCE_DIR, path, dir);
    cr_assert_eq (s_run (cmd), 0, "gguf-py could not read our file: %s", cmd);

    snprintf (path, sizeof path, "%s/meta.txt", dir);
    char *meta = s_slurp (path, NULL);
    cr_assert_not_null (meta);
    const char *lines [] = {
        "general.architecture\tSTRING\t6c6c616d61\n",
        "t.u8\tUINT8\tfa\n", "t.i8\tINT8\t9c\n", "t.u16\tUINT16\tfde8\n", "t.i16\tINT16\t8300\n",
        "t.u32\tUINT32\tee6b2800\n", "t.i32\tINT32\t88ca6c00\n", "t.u64\tUINT64\tfedcba9876543210\n",
        "t.i64\tINT64\tffffffedcba98766\n", "t.f32\tFLOAT32\t3727c5ac\n", "t.f64\tFLOAT64\t54b249ad2594c37d\n",
        "t.bool\tBOOL\t1\n", "t.false\tBOOL\t0\n", "t.bin\tSTRING\t610062ff\n", "t.empty\tSTRING\t\n",
        "t.strs\tARRAY:STRING\t3c7c656e646f66746578747c3e,,c4a0746865,78\n",
        "t.i32s\tARRAY:INT32\t3,ffffffff,7fffffff\n", "t.f32s\tARRAY:FLOAT32\t3f000000,be800000\n",
        "t.u8s\tARRAY:UINT8\t1,2,3,4,5\n", "t.bools\tARRAY:BOOL\t1,0,1\n",
        "t.u64s\tARRAY:UINT64\t0,ffffffffffffffff\n",
        "tensor\tnorm\t0\t3\t12\t",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines [0]; i++)
        cr_assert (strstr (meta, lines [i]), "gguf-py's view lacks '%s'; it saw:\n%s", lines [i], meta);
    //  Each tensor: same type, shape and size, and gguf-py's dequantization
    //  equals ours bit for bit.
    snprintf (path, sizeof path, "%s/tensors.f32", dir);
    size_t deq_size;
    float *deq = (float *) s_slurp (path, &deq_size);
    cr_assert_not_null (deq);
    float x [512], y [512];
    for (int i = 0; i < 512; i++)
        x [i] = s_input (i);
    for (int k = 0; k < N_TYPES; k++) {
        char want [128];
        snprintf (want, sizeof want, "tensor\ttensor.%s\t%d\t256,2\t%zu\t", ggml_type_traits (s_types [k])->name,
                  s_types [k], ggml_row_size (s_types [k], 512));
        cr_assert (strstr (meta, want), "gguf-py's view lacks '%s'", want);
        size_t nbytes = ggml_row_size (s_types [k], 512);
        uint8_t *q = malloc (nbytes);
        ggml_quantize (s_types [k], x, q, 512);
        ggml_dequantize (s_types [k], q, y, 512);
        free (q);
        cr_assert_geq (deq_size, (size_t) (k + 1) * 512 * 4);
        cr_assert_eq (memcmp (deq + 512 * k, y, sizeof y), 0, "%s: gguf-py dequantizes our data differently",
                      ggml_type_traits (s_types [k])->name);
    }
    free (deq);
    free (meta);
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    s_run (cmd);
}

Test (gguf_write, we_read_gguf_py_file)
{
    const char *py = s_python_with_gguf ();
    if (!py)
        cr_skip_test ("no Python with the gguf package (pip install gguf numpy): cross-check skipped");
    char dir [] = "/tmp/test_gguf_py_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path [256], cmd [1024];
    snprintf (path, sizeof path, "%s/theirs.gguf", dir);
    snprintf (cmd, sizeof cmd, "%s %s/tests/gguf_crosscheck.py write %s", py, SPLITMESH_SOURCE_DIR, path);
    cr_assert_eq (s_run (cmd), 0, "gguf-py could not write: %s", cmd);
    char err [256];
    gguf_t *g = gguf_open (path, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    char s [32];
    uint32_t u32;
    int64_t i64;
    float f;
    bool b;
    cr_assert (gguf_get_str_copy (g, "general.architecture", s, sizeof s) && !strcmp (s, "llama"));
    cr_assert (gguf_get_u32 (g, "llama.block_count", &u32) && u32 == 3);
    cr_assert (gguf_get_i64 (g, "test.i32", &i64) && i64 == -42);
    cr_assert (gguf_get_f32 (g, "test.f32", &f) && f == 0.125f);
    cr_assert (gguf_get_f32 (g, "test.f64", &f) && f == -2.5f);
    cr_assert (gguf_get_bool (g, "test.bool", &b) && b);
    cr_assert (gguf_get_i64 (g, "test.u64", &i64) && i64 == (1ll << 40));
    cr_assert (gguf_get_str_copy (g, "test.str", s, sizeof s) && !strcmp (s, "h\xc3\xa9llo"));
    const char *str;
    size_t len;
    cr_assert (gguf_array_str (g, "test.strs", 2, &str, &len) && len == 5 && !memcmp (str, "\xc4\xa0the", 5));
    gguf_value_type_t et;
    uint64_t count;
    cr_assert (gguf_get_array (g, "test.ints", &et, &count) && count == 3);
    cr_assert_eq (gguf_tensor_count (g), 6);
    float x [128];
    for (int i = 0; i < 128; i++)
        x [i] = s_input (i);
    const gguf_tensor_t *t = gguf_find_tensor (g, "t.f32");
    cr_assert (t && t->type == GGML_TYPE_F32 && t->ne [0] == 32 && t->ne [1] == 2);
    cr_assert_eq (memcmp (t->data, x, 64 * 4), 0);
    t = gguf_find_tensor (g, "t.f16");
    cr_assert (t && t->type == GGML_TYPE_F16 && t->ne [0] == 32);
    float y [128];
    ggml_dequantize (GGML_TYPE_F16, t->data, y, 32);
    cr_assert_eq (memcmp (x, y, 32 * 4), 0, "these inputs are exact in f16");
    //  gguf-py's quantizers and ours agree byte for byte.
    const struct { const char *name; int type; } q [] = {
        { "t.q8_0", GGML_TYPE_Q8_0 }, { "t.q4_0", GGML_TYPE_Q4_0 },
        { "t.q4_1", GGML_TYPE_Q4_1 }, { "t.bf16", GGML_TYPE_BF16 },
    };
    for (int k = 0; k < 4; k++) {
        t = gguf_find_tensor (g, q [k].name);
        cr_assert (t && (int) t->type == q [k].type && t->ne [0] == 64 && t->ne [1] == 2, "%s", q [k].name);
        uint8_t mine [512];
        ggml_quantize (q [k].type, x, mine, 128);
        cr_assert_eq (memcmp (mine, t->data, t->nbytes), 0, "%s differs from gguf-py", q [k].name);
    }
    gguf_destroy (&g);
    snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
    s_run (cmd);
}
