//  test_codec_python: every wire message round-trips C -> Python -> C.
//
//  C encodes the schema's example of every message; tests/python/
//  codec_roundtrip.py (run with SPLITMESH_PYTHON, which has python3-msgpack)
//  decodes each with msgpack, checks the values against the same examples
//  read from messages.toml, re-encodes them and also encodes them its own way
//  (other key order, defaults left out). C then decodes both and compares
//  them field by field with the example, and re-encodes Python's copy to the
//  original bytes.

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "codec.h"

static char s_dir [] = "/tmp/splitmesh-codec-XXXXXX";

static void
s_rmtree (void)
{
    char cmd [256];
    snprintf (cmd, sizeof (cmd), "rm -rf '%s'", s_dir);
    if (system (cmd) != 0)
        fprintf (stderr, "could not remove %s\n", s_dir);
}

static void
s_write (const char *name, const char *suffix, const uint8_t *data, size_t size)
{
    char path [512];
    snprintf (path, sizeof (path), "%s/%s.%s", s_dir, name, suffix);
    FILE *f = fopen (path, "wb");
    cr_assert_not_null (f, "cannot write %s", path);
    cr_assert_eq (fwrite (data, 1, size, f), size);
    fclose (f);
}

//  Reads a whole file; caller frees.
static uint8_t *
s_read (const char *name, const char *suffix, size_t *size_p)
{
    char path [512];
    snprintf (path, sizeof (path), "%s/%s.%s", s_dir, name, suffix);
    FILE *f = fopen (path, "rb");
    cr_assert_not_null (f, "python did not write %s", path);
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    fseek (f, 0, SEEK_SET);
    uint8_t *data = malloc (size? size: 1);
    cr_assert_eq (fread (data, 1, size, f), (size_t) size);
    fclose (f);
    *size_p = size;
    return data;
}

//  Runs the Python half with a time limit; returns its exit status and
//  fills out with its output.
static int
s_run_python (char *out, size_t out_size)
{
    const char *python = getenv ("SPLITMESH_PYTHON");
    if (!python || !*python)
        python = SPLITMESH_PYTHON;
    char cmd [1024];
    snprintf (cmd, sizeof (cmd),
              "timeout 60 '%s' '%s/tests/python/codec_roundtrip.py' '%s/schemas/messages.toml' '%s' 2>&1",
              python, SPLITMESH_SOURCE_DIR, SPLITMESH_SOURCE_DIR, s_dir);
    FILE *p = popen (cmd, "r");
    cr_assert_not_null (p);
    size_t used = fread (out, 1, out_size - 1, p);
    out [used] = 0;
    int status = pclose (p);
    return WIFEXITED (status)? WEXITSTATUS (status): -1;
}

static void
s_setup (void)
{
    cr_assert_not_null (mkdtemp (s_dir));
}

TestSuite (codec_python, .init = s_setup, .fini = s_rmtree);

Test (codec_python, every_message_roundtrips_c_python_c, .timeout = 90)
{
    //  C -> files
    uint8_t *c_bytes [WIRE_MSG_COUNT_] = { NULL };
    size_t c_sizes [WIRE_MSG_COUNT_] = { 0 };
    for (int id = 1; id < WIRE_MSG_COUNT_; id++) {
        const wire_desc_t *desc = wire_desc_by_id (id);
        wire_err_t err;
        int rc = wire_encode (desc, wire_example (id), &c_bytes [id], &c_sizes [id], &err);
        cr_assert_eq (rc, 0, "%s: %s", desc->name, err.text);
        s_write (desc->name, "c.mp", c_bytes [id], c_sizes [id]);
    }

    //  Python checks the values, re-encodes and encodes its own
    char out [8192];
    int status = s_run_python (out, sizeof (out));
    cr_assert_eq (status, 0, "codec_roundtrip.py failed (%d):\n%s", status, out);
    char expect [64];
    snprintf (expect, sizeof (expect), "%d messages checked, 0 mismatches", WIRE_MSG_COUNT_ - 1);
    cr_assert (strstr (out, expect), "unexpected python output (want '%s'):\n%s", expect, out);

    //  Python -> C
    const char *suffixes [] = { "py.mp", "own.mp" };
    for (int id = 1; id < WIRE_MSG_COUNT_; id++) {
        const wire_desc_t *desc = wire_desc_by_id (id);
        for (int s = 0; s < 2; s++) {
            size_t size;
            uint8_t *data = s_read (desc->name, suffixes [s], &size);
            void *msg = calloc (1, desc->size);
            wire_err_t err;
            int rc = wire_decode (desc, data, size, msg, &err);
            cr_assert_eq (rc, 0, "%s.%s: C cannot decode python's bytes: %d %s",
                          desc->name, suffixes [s], err.status, err.text);
            char diff [128];
            cr_assert (wire_msg_equal (desc, wire_example (id), msg, diff, sizeof (diff)),
                       "%s.%s: field '%s' differs from the example", desc->name, suffixes [s], diff);
            //  canonical again: C's encoding of what python sent is C's original
            uint8_t *again;
            size_t again_size;
            cr_assert_eq (wire_encode (desc, msg, &again, &again_size, &err), 0);
            cr_assert (again_size == c_sizes [id] && memcmp (again, c_bytes [id], again_size) == 0,
                       "%s.%s: C re-encoding differs from the original", desc->name, suffixes [s]);
            free (again);
            wire_msg_free (desc, msg);
            free (msg);
            free (data);
        }
        free (c_bytes [id]);
    }
}
