/*  gguf_write.c: the GGUF v3 writer.

    Values are serialised into their file form as they are set (a small
    byte buffer per key), so writing out is concatenation and copy_key from
    another file is a byte copy of the value. Tensors own their (quantized)
    data until the writer is destroyed; the tiny test models and the quantize
    tool's per-tensor output both fit that. Limits are the reader's, so what
    this writes, gguf_open accepts.
*/
#include "gguf_write.h"
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *key;                  //  NUL-terminated copy
    uint32_t type;              //  gguf_value_type_t
    uint8_t *value;             //  the value as it appears in the file
    size_t value_size;          //  its bytes
} s_entry_t;

typedef struct {
    char *name;                 //  NUL-terminated copy
    ggml_type_t type;           //  ggml type
    int n_dims;                 //  1..GGUF_MAX_DIMS
    uint64_t ne [GGUF_MAX_DIMS];//  elements per dimension
    void *data;                 //  nbytes, owned
    size_t nbytes;              //  ggml_row_size (type, ne[0]) * rows
} s_tensor_t;

struct _gguf_writer_t {
    s_entry_t *entries;         //  metadata in insertion order
    int n_entries;              //  used
    int cap_entries;            //  allocated
    s_tensor_t *tensors;        //  tensors in insertion order
    int n_tensors;              //  used
    int cap_tensors;            //  allocated
    char error [256];           //  last error message
};

static int
s_error (gguf_writer_t *self, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (self->error, sizeof self->error, fmt, args);
    va_end (args);
    return -1;
}

gguf_writer_t *
gguf_writer_new (void)
{
    return calloc (1, sizeof (gguf_writer_t));
}

void
gguf_writer_destroy (gguf_writer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gguf_writer_t *self = *self_p;
    for (int i = 0; i < self->n_entries; i++) {
        free (self->entries [i].key);
        free (self->entries [i].value);
    }
    free (self->entries);
    for (int i = 0; i < self->n_tensors; i++) {
        free (self->tensors [i].name);
        free (self->tensors [i].data);
    }
    free (self->tensors);
    free (self);
    *self_p = NULL;
}

const char *
gguf_writer_error (const gguf_writer_t *self)
{
    return self ? self->error : "no writer";
}

//  --------------------------------------------------------------------------
//  Metadata


static void
s_put_u64 (uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p [i] = (uint8_t) (v >> (8 * i));
}

static void
s_put_u32 (uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p [i] = (uint8_t) (v >> (8 * i));
}

static int
s_find_entry (const gguf_writer_t *self, const char *key)
{
    for (int i = 0; i < self->n_entries; i++)
        if (!strcmp (self->entries [i].key, key))
            return i;
    return -1;
}

//  Stores key -> (type, value bytes); takes ownership of value.
static int
s_set (gguf_writer_t *self, const char *key, uint32_t type, uint8_t *value, size_t value_size)
{
    if (!key || !*key) {
        free (value);
        return s_error (self, "metadata key is empty");
    }
    if (strlen (key) > GGUF_MAX_STRING) {
        free (value);
        return s_error (self, "metadata key is longer than %u bytes", (unsigned) GGUF_MAX_STRING);
    }
    int i = s_find_entry (self, key);
    if (i >= 0) {
        free (self->entries [i].value);
        self->entries [i].type = type;
        self->entries [i].value = value;
        self->entries [i].value_size = value_size;
        return 0;
    }
    if (self->n_entries >= GGUF_MAX_METADATA) {
        free (value);
        return s_error (self, "more than %d metadata entries", GGUF_MAX_METADATA);
    }
    if (self->n_entries == self->cap_entries) {
        int cap = self->cap_entries ? self->cap_entries * 2 : 32;
        s_entry_t *grown = realloc (self->entries, (size_t) cap * sizeof *grown);
        if (!grown) {
            free (value);
            return s_error (self, "out of memory");
        }
        self->entries = grown;
        self->cap_entries = cap;
    }
    char *copy = strdup (key);
    if (!copy) {
        free (value);
        return s_error (self, "out of memory");
    }
    self->entries [self->n_entries++] = (s_entry_t) { copy, type, value, value_size };
    return 0;
}

static int
s_set_scalar (gguf_writer_t *self, const char *key, uint32_t type, const void *value)
{
    size_t size = gguf_scalar_size (type);
    uint8_t *bytes = malloc (size);
    if (!bytes)
        return s_error (self, "out of memory");
    memcpy (bytes, value, size);        //  host is little-endian (x86-64, arm64)
    return s_set (self, key, type, bytes, size);
}

int gguf_writer_set_u8 (gguf_writer_t *self, const char *key, uint8_t v)   { return s_set_scalar (self, key, GGUF_TYPE_UINT8, &v); }
int gguf_writer_set_i8 (gguf_writer_t *self, const char *key, int8_t v)    { return s_set_scalar (self, key, GGUF_TYPE_INT8, &v); }
int gguf_writer_set_u16 (gguf_writer_t *self, const char *key, uint16_t v) { return s_set_scalar (self, key, GGUF_TYPE_UINT16, &v); }
int gguf_writer_set_i16 (gguf_writer_t *self, const char *key, int16_t v)  { return s_set_scalar (self, key, GGUF_TYPE_INT16, &v); }
int gguf_writer_set_u32 (gguf_writer_t *self, const char *key, uint32_t v) { return s_set_scalar (self, key, GGUF_TYPE_UINT32, &v); }
int gguf_writer_set_i32 (gguf_writer_t *self, const char *key, int32_t v)  { return s_set_scalar (self, key, GGUF_TYPE_INT32, &v); }
int gguf_writer_set_u64 (gguf_writer_t *self, const char *key, uint64_t v) { return s_set_scalar (self, key, GGUF_TYPE_UINT64, &v); }
int gguf_writer_set_i64 (gguf_writer_t *self, const char *key, int64_t v)  { return s_set_scalar (self, key, GGUF_TYPE_INT64, &v); }
int gguf_writer_set_f32 (gguf_writer_t *self, const char *key, float v)    { return s_set_scalar (self, key, GGUF_TYPE_FLOAT32, &v); }
int gguf_writer_set_f64 (gguf_writer_t *self, const char *key, double v)   { return s_set_scalar (self, key, GGUF_TYPE_FLOAT64, &v); }

int
gguf_writer_set_bool (gguf_writer_t *self, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return s_set_scalar (self, key, GGUF_TYPE_BOOL, &b);
}

int
gguf_writer_set_strn (gguf_writer_t *self, const char *key, const char *value, size_t len)
{
    if (len > GGUF_MAX_STRING)
        return s_error (self, "metadata '%s': string of %zu bytes exceeds limit %u", key ? key : "",
                        len, (unsigned) GGUF_MAX_STRING);
    if (!value && len)
        return s_error (self, "metadata '%s': no string", key ? key : "");
    uint8_t *bytes = malloc (8 + len);
    if (!bytes)
        return s_error (self, "out of memory");
    s_put_u64 (bytes, len);
    if (len)
        memcpy (bytes + 8, value, len);
    return s_set (self, key, GGUF_TYPE_STRING, bytes, 8 + len);
}

int
gguf_writer_set_str (gguf_writer_t *self, const char *key, const char *value)
{
    if (!value)
        return s_error (self, "metadata '%s': no string", key ? key : "");
    return gguf_writer_set_strn (self, key, value, strlen (value));
}

int
gguf_writer_set_array (gguf_writer_t *self, const char *key, gguf_value_type_t elem_type,
                       const void *data, uint64_t count)
{
    size_t size = gguf_scalar_size (elem_type);
    if (!size)
        return s_error (self, "metadata '%s': arrays of type %d need gguf_writer_set_str_array or are not allowed",
                        key ? key : "", (int) elem_type);
    if (count > GGUF_MAX_ARRAY)
        return s_error (self, "metadata '%s': array count %llu exceeds limit %u", key ? key : "",
                        (unsigned long long) count, (unsigned) GGUF_MAX_ARRAY);
    if (!data && count)
        return s_error (self, "metadata '%s': no array data", key ? key : "");
    size_t bytes = (size_t) count * size;
    uint8_t *value = malloc (12 + bytes);
    if (!value)
        return s_error (self, "out of memory");
    s_put_u32 (value, elem_type);
    s_put_u64 (value + 4, count);
    if (bytes)
        memcpy (value + 12, data, bytes);
    return s_set (self, key, GGUF_TYPE_ARRAY, value, 12 + bytes);
}

int
gguf_writer_set_str_array (gguf_writer_t *self, const char *key,
                           const char *const *strs, const size_t *lens, uint64_t count)
{
    if (count > GGUF_MAX_ARRAY)
        return s_error (self, "metadata '%s': array count %llu exceeds limit %u", key ? key : "",
                        (unsigned long long) count, (unsigned) GGUF_MAX_ARRAY);
    if (!strs && count)
        return s_error (self, "metadata '%s': no strings", key ? key : "");
    size_t bytes = 12;
    for (uint64_t i = 0; i < count; i++) {
        if (!strs [i])
            return s_error (self, "metadata '%s': string %llu is NULL", key ? key : "", (unsigned long long) i);
        size_t len = lens ? lens [i] : strlen (strs [i]);
        if (len > GGUF_MAX_STRING)
            return s_error (self, "metadata '%s': string %llu of %zu bytes exceeds limit %u", key ? key : "",
                            (unsigned long long) i, len, (unsigned) GGUF_MAX_STRING);
        bytes += 8 + len;
    }
    uint8_t *value = malloc (bytes);
    if (!value)
        return s_error (self, "out of memory");
    s_put_u32 (value, GGUF_TYPE_STRING);
    s_put_u64 (value + 4, count);
    uint8_t *p = value + 12;
    for (uint64_t i = 0; i < count; i++) {
        size_t len = lens ? lens [i] : strlen (strs [i]);
        s_put_u64 (p, len);
        memcpy (p + 8, strs [i], len);
        p += 8 + len;
    }
    return s_set (self, key, GGUF_TYPE_ARRAY, value, bytes);
}

int
gguf_writer_copy_key (gguf_writer_t *self, const gguf_t *src, const char *key)
{
    gguf_value_type_t type = gguf_key_type (src, key);
    if (type == GGUF_TYPE_COUNT)
        return s_error (self, "metadata '%s' is not in the source file", key ? key : "");
    if (type == GGUF_TYPE_STRING) {
        const char *data;
        size_t len;
        gguf_get_str (src, key, &data, &len);
        return gguf_writer_set_strn (self, key, data, len);
    }
    if (type != GGUF_TYPE_ARRAY)
        return s_set_scalar (self, key, type, gguf_value_data (src, key));
    gguf_value_type_t elem_type;
    uint64_t count;
    gguf_get_array (src, key, &elem_type, &count);
    if (elem_type != GGUF_TYPE_STRING)
        return gguf_writer_set_array (self, key, elem_type, gguf_array_data (src, key), count);
    //  String arrays: gather pointers into the source's mapping.
    const char **strs = malloc ((size_t) (count ? count : 1) * sizeof *strs);
    size_t *lens = malloc ((size_t) (count ? count : 1) * sizeof *lens);
    int rc = -1;
    if (!strs || !lens) {
        s_error (self, "out of memory");
        goto cleanup;
    }
    for (uint64_t i = 0; i < count; i++)
        gguf_array_str (src, key, i, &strs [i], &lens [i]);
    rc = gguf_writer_set_str_array (self, key, strs, lens, count);
cleanup:
    free (strs);
    free (lens);
    return rc;
}

int
gguf_writer_remove_key (gguf_writer_t *self, const char *key)
{
    int i = key ? s_find_entry (self, key) : -1;
    if (i < 0)
        return s_error (self, "metadata '%s' is not set", key ? key : "");
    free (self->entries [i].key);
    free (self->entries [i].value);
    memmove (&self->entries [i], &self->entries [i + 1],
             (size_t) (self->n_entries - i - 1) * sizeof (s_entry_t));
    self->n_entries--;
    return 0;
}

//  --------------------------------------------------------------------------
//  Tensors

//  Validates a tensor's name, type and shape as the reader will; on
//  success stores its byte size in *nbytes.
static int
s_check_tensor (gguf_writer_t *self, const char *name, ggml_type_t type, int n_dims,
                const uint64_t *ne, size_t *nbytes)
{
    if (!name || !*name || strlen (name) > GGUF_MAX_NAME)
        return s_error (self, "tensor name '%s' is not within 1..%d bytes", name ? name : "", GGUF_MAX_NAME);
    for (int i = 0; i < self->n_tensors; i++)
        if (!strcmp (self->tensors [i].name, name))
            return s_error (self, "duplicate tensor name '%s'", name);
    if (self->n_tensors >= GGUF_MAX_TENSORS)
        return s_error (self, "more than %d tensors", GGUF_MAX_TENSORS);
    const ggml_type_traits_t *traits = ggml_type_traits (type);
    if (!traits)
        return s_error (self, "tensor '%s': unsupported ggml type %d", name, (int) type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return s_error (self, "tensor '%s': n_dims %d is not within 1..%d", name, n_dims, GGUF_MAX_DIMS);
    uint64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne [d] == 0 || ne [d] > GGUF_MAX_DIM)
            return s_error (self, "tensor '%s': dimension %d = %llu is not within 1..2^32", name, d,
                            (unsigned long long) ne [d]);
        if (__builtin_mul_overflow (n, ne [d], &n) || n > INT64_MAX)
            return s_error (self, "tensor '%s': element count overflows", name);
    }
    if (ne [0] % (uint64_t) traits->block_size)
        return s_error (self, "tensor '%s': ne[0] = %llu is not a multiple of the %s block size %d", name,
                        (unsigned long long) ne [0], traits->name, traits->block_size);
    uint64_t bytes;
    if (__builtin_mul_overflow ((uint64_t) ggml_row_size (type, (int64_t) ne [0]), n / ne [0], &bytes)
        || bytes > SIZE_MAX)
        return s_error (self, "tensor '%s': data size overflows", name);
    *nbytes = (size_t) bytes;
    return 0;
}

//  Appends a tensor; takes ownership of data (freed on failure).
static int
s_add_tensor (gguf_writer_t *self, const char *name, ggml_type_t type, int n_dims,
              const uint64_t *ne, void *data, size_t nbytes)
{
    if (self->n_tensors == self->cap_tensors) {
        int cap = self->cap_tensors ? self->cap_tensors * 2 : 32;
        s_tensor_t *grown = realloc (self->tensors, (size_t) cap * sizeof *grown);
        if (!grown) {
            free (data);
            return s_error (self, "out of memory");
        }
        self->tensors = grown;
        self->cap_tensors = cap;
    }
    char *copy = strdup (name);
    if (!copy) {
        free (data);
        return s_error (self, "out of memory");
    }
    s_tensor_t *t = &self->tensors [self->n_tensors++];
    memset (t, 0, sizeof *t);
    t->name = copy;
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne [d] = d < n_dims ? ne [d] : 1;
    t->data = data;
    t->nbytes = nbytes;
    return 0;
}

int
gguf_writer_add_tensor (gguf_writer_t *self, const char *name, ggml_type_t type,
                        int n_dims, const uint64_t *ne, const void *data, size_t nbytes)
{
    size_t want;
    if (s_check_tensor (self, name, type, n_dims, ne, &want))
        return -1;
    if (nbytes != want)
        return s_error (self, "tensor '%s': %zu bytes given, its type and shape need %zu", name, nbytes, want);
    if (!data)
        return s_error (self, "tensor '%s': no data", name);
    void *copy = malloc (nbytes);
    if (!copy)
        return s_error (self, "out of memory for tensor '%s' (%zu bytes)", name, nbytes);
    memcpy (copy, data, nbytes);
    return s_add_tensor (self, name, type, n_dims, ne, copy, nbytes);
}

int
gguf_writer_add_tensor_f32 (gguf_writer_t *self, const char *name, ggml_type_t type,
                            int n_dims, const uint64_t *ne, const float *src)
{
    size_t nbytes;
    if (s_check_tensor (self, name, type, n_dims, ne, &nbytes))
        return -1;
    if (!src)
        return s_error (self, "tensor '%s': no data", name);
    void *data = malloc (nbytes);
    if (!data)
        return s_error (self, "out of memory for tensor '%s' (%zu bytes)", name, nbytes);
    //  Row by row: ggml_quantize takes an int64 count per call.
    const ggml_type_traits_t *traits = ggml_type_traits (type);
    uint64_t rows = 1;
    for (int d = 1; d < n_dims; d++)
        rows *= ne [d];
    size_t row_bytes = ggml_row_size (type, (int64_t) ne [0]);
    for (uint64_t r = 0; r < rows; r++)
        traits->from_float (src + r * ne [0], (uint8_t *) data + r * row_bytes, (int64_t) ne [0]);
    return s_add_tensor (self, name, type, n_dims, ne, data, nbytes);
}

//  --------------------------------------------------------------------------
//  Output

static uint32_t
s_alignment (const gguf_writer_t *self)
{
    int i = s_find_entry (self, "general.alignment");
    if (i < 0)
        return GGUF_DEFAULT_ALIGNMENT;
    const s_entry_t *e = &self->entries [i];
    if (e->type != GGUF_TYPE_UINT32)
        return 0;
    uint32_t a;
    memcpy (&a, e->value, 4);
    return a && !(a & (a - 1)) ? a : 0;
}

static size_t
s_pad (size_t n, uint32_t alignment)
{
    return (alignment - n % alignment) % alignment;
}

//  Where serialised bytes go: a memory buffer or a file.
typedef struct {
    uint8_t *buf;               //  memory target, or NULL
    size_t pos;                 //  bytes emitted so far
    FILE *file;                 //  file target, or NULL
    bool failed;                //  a write failed
} s_sink_t;

static void
s_emit (s_sink_t *sink, const void *data, size_t n)
{
    if (sink->failed || !n)
        return;
    if (sink->buf)
        memcpy (sink->buf + sink->pos, data, n);
    else
    if (fwrite (data, 1, n, sink->file) != n)
        sink->failed = true;
    sink->pos += n;
}

static void
s_emit_u32 (s_sink_t *sink, uint32_t v)
{
    uint8_t b [4];
    s_put_u32 (b, v);
    s_emit (sink, b, 4);
}

static void
s_emit_u64 (s_sink_t *sink, uint64_t v)
{
    uint8_t b [8];
    s_put_u64 (b, v);
    s_emit (sink, b, 8);
}

static void
s_emit_zeros (s_sink_t *sink, size_t n)
{
    static const uint8_t zeros [64];
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        s_emit (sink, zeros, k);
        n -= k;
    }
}

//  Total file size for the current contents (0 when the alignment is bad).
static size_t
s_file_size (const gguf_writer_t *self, uint32_t alignment)
{
    size_t total = 4 + 4 + 8 + 8;
    for (int i = 0; i < self->n_entries; i++)
        total += 8 + strlen (self->entries [i].key) + 4 + self->entries [i].value_size;
    for (int i = 0; i < self->n_tensors; i++)
        total += 8 + strlen (self->tensors [i].name) + 4 + 8 * (size_t) self->tensors [i].n_dims + 4 + 8;
    total += s_pad (total, alignment);
    for (int i = 0; i < self->n_tensors; i++)
        total += self->tensors [i].nbytes + s_pad (self->tensors [i].nbytes, alignment);
    return total;
}

static void
s_serialise (const gguf_writer_t *self, uint32_t alignment, s_sink_t *sink)
{
    s_emit (sink, "GGUF", 4);
    s_emit_u32 (sink, 3);
    s_emit_u64 (sink, (uint64_t) self->n_tensors);
    s_emit_u64 (sink, (uint64_t) self->n_entries);
    for (int i = 0; i < self->n_entries; i++) {
        const s_entry_t *e = &self->entries [i];
        size_t len = strlen (e->key);
        s_emit_u64 (sink, len);
        s_emit (sink, e->key, len);
        s_emit_u32 (sink, e->type);
        s_emit (sink, e->value, e->value_size);
    }
    size_t offset = 0;
    for (int i = 0; i < self->n_tensors; i++) {
        const s_tensor_t *t = &self->tensors [i];
        size_t len = strlen (t->name);
        s_emit_u64 (sink, len);
        s_emit (sink, t->name, len);
        s_emit_u32 (sink, (uint32_t) t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            s_emit_u64 (sink, t->ne [d]);
        s_emit_u32 (sink, (uint32_t) t->type);
        s_emit_u64 (sink, offset);
        offset += t->nbytes + s_pad (t->nbytes, alignment);
    }
    s_emit_zeros (sink, s_pad (sink->pos, alignment));
    for (int i = 0; i < self->n_tensors; i++) {
        const s_tensor_t *t = &self->tensors [i];
        s_emit (sink, t->data, t->nbytes);
        s_emit_zeros (sink, s_pad (t->nbytes, alignment));
    }
}

void *
gguf_writer_write_mem (gguf_writer_t *self, size_t *size)
{
    uint32_t alignment = s_alignment (self);
    if (!alignment) {
        s_error (self, "general.alignment must be a uint32 power of two");
        return NULL;
    }
    size_t total = s_file_size (self, alignment);
    s_sink_t sink = { calloc (1, total), 0, NULL, false };
    if (!sink.buf) {
        s_error (self, "out of memory for a %zu-byte file", total);
        return NULL;
    }
    s_serialise (self, alignment, &sink);
    assert (sink.pos == total);
    if (size)
        *size = total;
    return sink.buf;
}

//  Streams to the file (a model can be larger than we want in memory
//  twice), through a temporary name renamed into place.
int
gguf_writer_write_file (gguf_writer_t *self, const char *path)
{
    uint32_t alignment = s_alignment (self);
    if (!alignment)
        return s_error (self, "general.alignment must be a uint32 power of two");
    int rc = -1;
    size_t tmp_len = strlen (path) + 32;
    char *tmp = malloc (tmp_len);
    if (!tmp)
        return s_error (self, "out of memory");
    snprintf (tmp, tmp_len, "%s.tmp.%ld", path, (long) getpid ());
    s_sink_t sink = { NULL, 0, fopen (tmp, "wb"), false };
    if (!sink.file) {
        s_error (self, "cannot create '%s': %s", tmp, strerror (errno));
        goto cleanup;
    }
    s_serialise (self, alignment, &sink);
    bool ok = !sink.failed && !fflush (sink.file) && !fsync (fileno (sink.file));
    int saved = errno;
    if (fclose (sink.file))
        ok = false;
    if (!ok) {
        s_error (self, "cannot write '%s': %s", tmp, strerror (saved ? saved : errno));
        unlink (tmp);
        goto cleanup;
    }
    if (rename (tmp, path)) {
        s_error (self, "cannot rename '%s' to '%s': %s", tmp, path, strerror (errno));
        unlink (tmp);
        goto cleanup;
    }
    rc = 0;
cleanup:
    free (tmp);
    return rc;
}
