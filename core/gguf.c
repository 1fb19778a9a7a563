/*  gguf.c: the GGUF reader: validate everything once, then hand out pointers.

    Every process that loads a model (tokenizer, split-prefix, cloud-target,
    the tools) opens its file through here, and model files come from
    outside, so the parser treats the file as hostile: each read is checked
    against the bytes left, each count against a limit and against the bytes
    it would need before anything is allocated, each product with overflow
    checks. After gguf_open returns, every pointer it hands out lies inside
    the file and every tensor's size agrees with its type and shape, so
    callers need no checks of their own.

    Keys and tensor names are copied out (NUL-terminated) and indexed in
    hash tables; values stay in the mapping. String arrays (a vocabulary of
    50k tokens) get an offset table so element i is one lookup.
*/
#include "gguf.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *key;                  //  NUL-terminated copy
    gguf_value_type_t type;     //  value type
    const uint8_t *data;        //  scalar bytes, string bytes or first array element
    uint64_t len;               //  string: bytes; array: element count
    gguf_value_type_t elem_type;//  arrays only
    uint64_t *str_pos;          //  string arrays: offset of element i's length prefix from data
} s_kv_t;

//  Open-addressing hash index from a name to a position in an array.
typedef struct {
    int32_t *slots;             //  capacity entries, -1 when empty
    uint32_t mask;              //  capacity - 1 (capacity a power of two)
} s_index_t;

struct _gguf_t {
    const uint8_t *base;        //  file bytes (mapping or caller's buffer)
    size_t size;                //  bytes in base
    void *map;                  //  mmap'd region to unmap, or NULL
    uint32_t version;           //  2 or 3
    uint32_t alignment;         //  general.alignment or 32
    size_t data_offset;         //  where tensor data starts in the file
    int n_kv;                   //  metadata entries
    s_kv_t *kv;                 //  n_kv, in file order
    s_index_t kv_index;         //  key -> kv position
    int n_tensors;              //  tensor descriptors
    gguf_tensor_t *tensors;     //  n_tensors, in file order
    s_index_t tensor_index;     //  name -> tensor position
};

//  Parsing state: a position in the file and the error buffer.
typedef struct {
    const uint8_t *base;        //  file bytes
    size_t size;                //  file size
    size_t pos;                 //  next byte to read
    char *err;                  //  caller's buffer (may be NULL)
    size_t err_size;            //  its size
    bool failed;                //  first error wins
} s_cursor_t;

static void
s_fail (s_cursor_t *cur, const char *fmt, ...)
{
    if (cur->failed)
        return;
    cur->failed = true;
    if (!cur->err || !cur->err_size)
        return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (cur->err, cur->err_size, fmt, args);
    va_end (args);
}

//  Reads n bytes' worth; "what" names the item for the error message.
static const uint8_t *
s_take (s_cursor_t *cur, size_t n, const char *what)
{
    if (cur->failed)
        return NULL;
    if (n > cur->size - cur->pos) {
        s_fail (cur, "truncated file: %s at offset %zu needs %zu bytes, only %zu left (file size %zu)",
                what, cur->pos, n, cur->size - cur->pos, cur->size);
        return NULL;
    }
    const uint8_t *p = cur->base + cur->pos;
    cur->pos += n;
    return p;
}

static bool
s_read_u32 (s_cursor_t *cur, uint32_t *out, const char *what)
{
    const uint8_t *p = s_take (cur, 4, what);
    if (!p)
        return false;
    *out = (uint32_t) p [0] | (uint32_t) p [1] << 8 | (uint32_t) p [2] << 16 | (uint32_t) p [3] << 24;
    return true;
}

static bool
s_read_u64 (s_cursor_t *cur, uint64_t *out, const char *what)
{
    const uint8_t *p = s_take (cur, 8, what);
    if (!p)
        return false;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p [i];
    *out = v;
    return true;
}

//  A GGUF string: uint64 length, then the bytes (no NUL).
static bool
s_read_string (s_cursor_t *cur, const uint8_t **data, uint64_t *len, uint64_t limit, const char *what)
{
    uint64_t n;
    if (!s_read_u64 (cur, &n, what))
        return false;
    if (n > limit) {
        s_fail (cur, "%s: string length %llu exceeds limit %llu", what,
                (unsigned long long) n, (unsigned long long) limit);
        return false;
    }
    if (n > cur->size - cur->pos) {
        s_fail (cur, "truncated file: %s: string of %llu bytes at offset %zu runs past end of file (size %zu)",
                what, (unsigned long long) n, cur->pos, cur->size);
        return false;
    }
    *data = cur->base + cur->pos;
    *len = n;
    cur->pos += (size_t) n;
    return true;
}

//  Copies name bytes into a NUL-terminated string; rejects embedded NULs
//  (the name could not be looked up) and prints safely into messages.
static char *
s_strndup_checked (s_cursor_t *cur, const uint8_t *data, uint64_t len, const char *what)
{
    if (memchr (data, 0, (size_t) len)) {
        s_fail (cur, "%s contains a NUL byte", what);
        return NULL;
    }
    char *s = malloc ((size_t) len + 1);
    if (!s) {
        s_fail (cur, "out of memory copying %s", what);
        return NULL;
    }
    memcpy (s, data, (size_t) len);
    s [len] = '\0';
    return s;
}

//  --------------------------------------------------------------------------
//  Hash index

static uint32_t
s_hash (const char *s)
{
    uint32_t h = 2166136261u;          //  FNV-1a
    for (; *s; s++)
        h = (h ^ (uint8_t) *s) * 16777619u;
    return h;
}

static bool
s_index_init (s_index_t *index, int count)
{
    uint32_t cap = 16;
    while (cap < (uint32_t) count * 2)
        cap <<= 1;
    index->slots = malloc (cap * sizeof (int32_t));
    if (!index->slots)
        return false;
    memset (index->slots, 0xff, cap * sizeof (int32_t));
    index->mask = cap - 1;
    return true;
}

//  Returns the slot holding name, or the empty slot where it would go.
//  name_at (ctx, i) gives the name stored at position i.
static uint32_t
s_index_probe (const s_index_t *index, const char *name,
               const char *(*name_at) (const void *ctx, int i), const void *ctx)
{
    uint32_t slot = s_hash (name) & index->mask;
    while (index->slots [slot] >= 0 && strcmp (name_at (ctx, index->slots [slot]), name))
        slot = (slot + 1) & index->mask;
    return slot;
}

static const char *
s_kv_name_at (const void *ctx, int i)
{
    return ((const gguf_t *) ctx)->kv [i].key;
}

static const char *
s_tensor_name_at (const void *ctx, int i)
{
    return ((const gguf_t *) ctx)->tensors [i].name;
}

static const s_kv_t *
s_find_kv (const gguf_t *self, const char *key)
{
    if (!self || !key || !self->kv_index.slots)
        return NULL;
    uint32_t slot = s_index_probe (&self->kv_index, key, s_kv_name_at, self);
    int32_t i = self->kv_index.slots [slot];
    return i >= 0 ? &self->kv [i] : NULL;
}

//  --------------------------------------------------------------------------
//  Metadata

static const char *const s_value_type_names [GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool", "string", "array", "uint64", "int64", "float64"
};

size_t
gguf_scalar_size (uint32_t type)
{
    switch (type) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
        case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
        case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
        default: return 0;
    }
}

static bool
s_parse_value (s_cursor_t *cur, s_kv_t *kv)
{
    const char *key = kv->key;
    char what [128];
    if (kv->type >= GGUF_TYPE_COUNT) {
        s_fail (cur, "metadata '%s': unknown value type %u", key, (unsigned) kv->type);
        return false;
    }
    if (kv->type == GGUF_TYPE_STRING) {
        snprintf (what, sizeof what, "metadata '%.60s' value", key);
        return s_read_string (cur, &kv->data, &kv->len, GGUF_MAX_STRING, what);
    }
    if (kv->type != GGUF_TYPE_ARRAY) {
        snprintf (what, sizeof what, "metadata '%.60s' %s value", key, s_value_type_names [kv->type]);
        kv->data = s_take (cur, gguf_scalar_size (kv->type), what);
        kv->len = 1;
        return kv->data != NULL;
    }
    //  Array: element type, count, elements.
    uint32_t elem_type;
    uint64_t count;
    snprintf (what, sizeof what, "metadata '%.60s' array header", key);
    if (!s_read_u32 (cur, &elem_type, what) || !s_read_u64 (cur, &count, what))
        return false;
    if (elem_type >= GGUF_TYPE_COUNT) {
        s_fail (cur, "metadata '%s': array of unknown element type %u", key, elem_type);
        return false;
    }
    if (elem_type == GGUF_TYPE_ARRAY) {
        s_fail (cur, "metadata '%s': arrays of arrays are not supported", key);
        return false;
    }
    if (count > GGUF_MAX_ARRAY) {
        s_fail (cur, "metadata '%s': array count %llu exceeds limit %u", key,
                (unsigned long long) count, (unsigned) GGUF_MAX_ARRAY);
        return false;
    }
    kv->elem_type = (gguf_value_type_t) elem_type;
    kv->len = count;
    kv->data = cur->base + cur->pos;
    size_t left = cur->size - cur->pos;
    if (elem_type != GGUF_TYPE_STRING) {
        //  count <= 2^26 and size <= 8: the product cannot overflow.
        size_t bytes = (size_t) count * gguf_scalar_size (elem_type);
        if (bytes > left) {
            s_fail (cur, "truncated file: metadata '%s': array of %llu %s needs %zu bytes at offset %zu, only %zu left",
                    key, (unsigned long long) count, s_value_type_names [elem_type], bytes, cur->pos, left);
            return false;
        }
        cur->pos += bytes;
        return true;
    }
    //  Strings: each needs at least its 8-byte length, so check the count
    //  against the bytes left before allocating the offset table.
    if (count > left / 8) {
        s_fail (cur, "truncated file: metadata '%s': %llu strings cannot fit in the %zu bytes left",
                key, (unsigned long long) count, left);
        return false;
    }
    kv->str_pos = malloc ((size_t) (count ? count : 1) * sizeof (uint64_t));
    if (!kv->str_pos) {
        s_fail (cur, "out of memory indexing metadata '%s'", key);
        return false;
    }
    for (uint64_t i = 0; i < count; i++) {
        kv->str_pos [i] = (uint64_t) (cur->base + cur->pos - kv->data);
        //  Fast path for the common case (a 50k-token vocabulary); on any
        //  problem s_read_string below re-reads and names it.
        size_t room = cur->size - cur->pos;
        if (room >= 8) {
            uint64_t len;
            memcpy (&len, cur->base + cur->pos, 8);
            if (len <= GGUF_MAX_STRING && len <= room - 8) {
                cur->pos += 8 + (size_t) len;
                continue;
            }
        }
        const uint8_t *data;
        uint64_t len;
        snprintf (what, sizeof what, "metadata '%.60s' element %llu", key, (unsigned long long) i);
        s_read_string (cur, &data, &len, GGUF_MAX_STRING, what);
        return false;
    }
    return true;
}

static bool
s_parse_metadata (gguf_t *self, s_cursor_t *cur, uint64_t n_kv)
{
    //  Each entry takes at least 8 (key length) + 4 (type) + 1 bytes.
    if (n_kv > (cur->size - cur->pos) / 13) {
        s_fail (cur, "truncated file: metadata count %llu cannot fit in the %zu bytes left",
                (unsigned long long) n_kv, cur->size - cur->pos);
        return false;
    }
    self->kv = calloc ((size_t) (n_kv ? n_kv : 1), sizeof (s_kv_t));
    if (!self->kv || !s_index_init (&self->kv_index, (int) n_kv)) {
        s_fail (cur, "out of memory for %llu metadata entries", (unsigned long long) n_kv);
        return false;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        s_kv_t *kv = &self->kv [i];
        const uint8_t *data;
        uint64_t len;
        char what [64];
        snprintf (what, sizeof what, "metadata key %llu", (unsigned long long) i);
        if (!s_read_string (cur, &data, &len, GGUF_MAX_STRING, what))
            return false;
        if (len == 0) {
            s_fail (cur, "metadata key %llu is empty", (unsigned long long) i);
            return false;
        }
        kv->key = s_strndup_checked (cur, data, len, what);
        if (!kv->key)
            return false;
        self->n_kv = (int) i + 1;       //  owns kv->key from here on
        uint32_t slot = s_index_probe (&self->kv_index, kv->key, s_kv_name_at, self);
        if (self->kv_index.slots [slot] >= 0) {
            s_fail (cur, "duplicate metadata key '%s'", kv->key);
            return false;
        }
        self->kv_index.slots [slot] = (int32_t) i;
        uint32_t type;
        snprintf (what, sizeof what, "metadata '%.40s' value type", kv->key);
        if (!s_read_u32 (cur, &type, what))
            return false;
        kv->type = type < GGUF_TYPE_COUNT ? (gguf_value_type_t) type : GGUF_TYPE_COUNT;
        if (type >= GGUF_TYPE_COUNT) {
            s_fail (cur, "metadata '%s': unknown value type %u", kv->key, type);
            return false;
        }
        if (!s_parse_value (cur, kv))
            return false;
    }
    return true;
}

//  --------------------------------------------------------------------------
//  Tensors

//  ggml's type names, so a file with a type splitmesh does not read says
//  which one (ggml.h numbering).
static const char *const s_ggml_type_names [] = {
    "f32", "f16", "q4_0", "q4_1", "q4_2 (removed)", "q4_3 (removed)", "q5_0", "q5_1",
    "q8_0", "q8_1", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq2_xxs", "iq2_xs",
    "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64",
    "f64", "iq1_m", "bf16", "q4_0_4_4 (removed)", "q4_0_4_8 (removed)", "q4_0_8_8 (removed)",
    "tq1_0", "tq2_0", "iq4_nl_4_4 (removed)", "iq4_nl_4_8 (removed)", "iq4_nl_8_8 (removed)",
    "mxfp4",
};

static bool
s_parse_tensor_info (gguf_t *self, s_cursor_t *cur, int i)
{
    gguf_tensor_t *t = &self->tensors [i];
    const uint8_t *data;
    uint64_t len;
    char what [64];
    snprintf (what, sizeof what, "tensor %d name", i);
    if (!s_read_string (cur, &data, &len, GGUF_MAX_STRING, what))
        return false;
    if (len == 0 || len > GGUF_MAX_NAME) {
        s_fail (cur, "tensor %d: name length %llu is not within 1..%d bytes", i,
                (unsigned long long) len, GGUF_MAX_NAME);
        return false;
    }
    char *name = s_strndup_checked (cur, data, len, what);
    if (!name)
        return false;
    t->name = name;
    self->n_tensors = i + 1;            //  owns t->name from here on
    uint32_t slot = s_index_probe (&self->tensor_index, name, s_tensor_name_at, self);
    if (self->tensor_index.slots [slot] >= 0) {
        s_fail (cur, "duplicate tensor name '%s'", name);
        return false;
    }
    self->tensor_index.slots [slot] = i;

    uint32_t n_dims;
    snprintf (what, sizeof what, "tensor '%s' n_dims", name);
    if (!s_read_u32 (cur, &n_dims, what))
        return false;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
        s_fail (cur, "tensor '%s': n_dims %u is not within 1..%d", name, n_dims, GGUF_MAX_DIMS);
        return false;
    }
    t->n_dims = (int) n_dims;
    uint64_t n_elements = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne [d] = 1;
        if (d >= (int) n_dims)
            continue;
        snprintf (what, sizeof what, "tensor '%s' dimension %d", name, d);
        if (!s_read_u64 (cur, &t->ne [d], what))
            return false;
        if (t->ne [d] == 0) {
            s_fail (cur, "tensor '%s': dimension %d is 0", name, d);
            return false;
        }
        if (t->ne [d] > GGUF_MAX_DIM) {
            s_fail (cur, "tensor '%s': dimension %d = %llu exceeds limit %llu", name, d,
                    (unsigned long long) t->ne [d], (unsigned long long) GGUF_MAX_DIM);
            return false;
        }
        if (__builtin_mul_overflow (n_elements, t->ne [d], &n_elements) || n_elements > INT64_MAX) {
            s_fail (cur, "tensor '%s': element count overflows (dimensions %d..0 multiply past 2^63)", name, d);
            return false;
        }
    }
    t->n_elements = n_elements;

    uint32_t type;
    snprintf (what, sizeof what, "tensor '%s' type", name);
    if (!s_read_u32 (cur, &type, what))
        return false;
    const ggml_type_traits_t *traits = ggml_type_traits ((int) type);
    if (!traits) {
        if (type < sizeof s_ggml_type_names / sizeof s_ggml_type_names [0])
            s_fail (cur, "tensor '%s': ggml type %s (%u) is not supported (splitmesh reads "
                    "f32, f16, bf16, q8_0, q5_0, q5_1, q4_0, q4_1, q4_K, q6_K, splitmesh w4g128)", name, s_ggml_type_names [type], type);
        else
            s_fail (cur, "tensor '%s': unknown ggml type %u", name, type);
        return false;
    }
    t->type = (ggml_type_t) type;
    if (t->ne [0] % (uint64_t) traits->block_size) {
        s_fail (cur, "tensor '%s': ne[0] = %llu is not a multiple of the %s block size %d", name,
                (unsigned long long) t->ne [0], traits->name, traits->block_size);
        return false;
    }
    size_t row = ggml_row_size ((int) type, (int64_t) t->ne [0]);
    uint64_t rows = t->n_elements / t->ne [0];
    uint64_t nbytes;
    if (__builtin_mul_overflow ((uint64_t) row, rows, &nbytes) || nbytes > SIZE_MAX) {
        s_fail (cur, "tensor '%s': data size overflows", name);
        return false;
    }
    t->nbytes = (size_t) nbytes;

    uint64_t offset;
    snprintf (what, sizeof what, "tensor '%s' offset", name);
    if (!s_read_u64 (cur, &offset, what))
        return false;
    if (offset % self->alignment) {
        s_fail (cur, "tensor '%s': offset %llu is not a multiple of the alignment %u", name,
                (unsigned long long) offset, self->alignment);
        return false;
    }
    //  Stash the relative offset; data is resolved once the data section
    //  start is known.
    t->data = (const void *) (uintptr_t) offset;
    return true;
}

static int
s_compare_offsets (const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) (*(const gguf_tensor_t *const *) a)->data;
    uintptr_t y = (uintptr_t) (*(const gguf_tensor_t *const *) b)->data;
    return x < y ? -1 : x > y;
}

//  Places every tensor's data: inside the file, and no two overlapping.
static bool
s_place_tensors (gguf_t *self, s_cursor_t *cur)
{
    uint64_t start = cur->pos;
    uint64_t pad = (self->alignment - start % self->alignment) % self->alignment;
    start += pad;
    if (self->n_tensors > 0 && start > self->size) {
        s_fail (cur, "truncated file: tensor data section starts at %llu, past end of file (size %zu)",
                (unsigned long long) start, self->size);
        return false;
    }
    self->data_offset = (size_t) start;
    if (self->n_tensors <= 0)
        return true;
    uint64_t avail = self->size - start;
    gguf_tensor_t **order = calloc ((size_t) self->n_tensors, sizeof *order);
    if (!order) {
        s_fail (cur, "out of memory placing tensors");
        return false;
    }
    for (int i = 0; i < self->n_tensors; i++) {
        gguf_tensor_t *t = &self->tensors [i];
        uint64_t offset = (uintptr_t) t->data;
        if (offset > avail || t->nbytes > avail - offset) {
            s_fail (cur, "tensor '%s' data [%llu, +%zu) ends past end of file (data section has %llu bytes)",
                    t->name, (unsigned long long) offset, t->nbytes, (unsigned long long) avail);
            free (order);
            return false;
        }
        order [i] = t;
    }
    qsort (order, (size_t) self->n_tensors, sizeof *order, s_compare_offsets);
    for (int i = 1; i < self->n_tensors; i++) {
        uint64_t prev_end = (uintptr_t) order [i - 1]->data + order [i - 1]->nbytes;
        if ((uintptr_t) order [i]->data < prev_end) {
            s_fail (cur, "tensor '%s' data overlaps tensor '%s'", order [i]->name, order [i - 1]->name);
            free (order);
            return false;
        }
    }
    free (order);
    for (int i = 0; i < self->n_tensors; i++)
        self->tensors [i].data = self->base + start + (uintptr_t) self->tensors [i].data;
    return true;
}

//  --------------------------------------------------------------------------
//  Open

static bool
s_parse (gguf_t *self, s_cursor_t *cur)
{
    const uint8_t *magic = s_take (cur, 4, "magic");
    if (!magic)
        return false;
    if (memcmp (magic, "GGUF", 4)) {
        s_fail (cur, "bad magic %02x %02x %02x %02x (expected 'GGUF'): not a GGUF file",
                magic [0], magic [1], magic [2], magic [3]);
        return false;
    }
    uint32_t version;
    if (!s_read_u32 (cur, &version, "version"))
        return false;
    if (version == 0x02000000 || version == 0x03000000) {
        s_fail (cur, "big-endian GGUF (version %u byte-swapped) is not supported", version >> 24);
        return false;
    }
    if (version == 1) {
        s_fail (cur, "GGUF version 1 is not supported (only versions 2 and 3)");
        return false;
    }
    if (version != 2 && version != 3) {
        s_fail (cur, "unknown GGUF version %u (supported: 2, 3)", version);
        return false;
    }
    self->version = version;
    uint64_t n_tensors, n_kv;
    if (!s_read_u64 (cur, &n_tensors, "tensor count") || !s_read_u64 (cur, &n_kv, "metadata count"))
        return false;
    if (n_tensors > GGUF_MAX_TENSORS) {
        s_fail (cur, "tensor count %llu exceeds limit %d", (unsigned long long) n_tensors, GGUF_MAX_TENSORS);
        return false;
    }
    if (n_kv > GGUF_MAX_METADATA) {
        s_fail (cur, "metadata count %llu exceeds limit %d", (unsigned long long) n_kv, GGUF_MAX_METADATA);
        return false;
    }
    if (!s_parse_metadata (self, cur, n_kv))
        return false;

    //  general.alignment governs tensor offsets and the data section.
    self->alignment = GGUF_DEFAULT_ALIGNMENT;
    const s_kv_t *align = s_find_kv (self, "general.alignment");
    if (align) {
        //  uint32 only, as llama.cpp requires (and the writer writes).
        uint32_t a = 0;
        if (align->type == GGUF_TYPE_UINT32)
            memcpy (&a, align->data, 4);
        if (a == 0 || (a & (a - 1))) {
            s_fail (cur, "general.alignment must be a power of two (uint32)");
            return false;
        }
        self->alignment = a;
    }

    //  Each tensor info takes at least 8 + 1 (name) + 4 + 8 + 4 + 8 bytes.
    if (n_tensors > (cur->size - cur->pos) / 33) {
        s_fail (cur, "truncated file: tensor count %llu cannot fit in the %zu bytes left",
                (unsigned long long) n_tensors, cur->size - cur->pos);
        return false;
    }
    self->tensors = calloc ((size_t) (n_tensors ? n_tensors : 1), sizeof (gguf_tensor_t));
    if (!self->tensors || !s_index_init (&self->tensor_index, (int) n_tensors)) {
        s_fail (cur, "out of memory for %llu tensors", (unsigned long long) n_tensors);
        return false;
    }
    for (int i = 0; i < (int) n_tensors; i++)
        if (!s_parse_tensor_info (self, cur, i))
            return false;
    return s_place_tensors (self, cur);
}

gguf_t *
gguf_open_buffer (const void *data, size_t size, char *err, size_t err_size)
{
    if (err && err_size)
        err [0] = '\0';
    s_cursor_t cur = { (const uint8_t *) data, size, 0, err, err_size, false };
    if (!data && size) {
        s_fail (&cur, "no buffer");
        return NULL;
    }
    gguf_t *self = calloc (1, sizeof *self);
    if (!self) {
        s_fail (&cur, "out of memory");
        return NULL;
    }
    self->base = (const uint8_t *) data;
    self->size = size;
    if (!s_parse (self, &cur))
        gguf_destroy (&self);
    return self;
}

gguf_t *
gguf_open (const char *path, char *err, size_t err_size)
{
    if (err && err_size)
        err [0] = '\0';
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (err && err_size)
            snprintf (err, err_size, "cannot open '%s': %s", path, strerror (errno));
        return NULL;
    }
    struct stat st;
    if (fstat (fd, &st) || !S_ISREG (st.st_mode)) {
        if (err && err_size)
            snprintf (err, err_size, "'%s' is not a regular file", path);
        close (fd);
        return NULL;
    }
    size_t size = (size_t) st.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap (NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            if (err && err_size)
                snprintf (err, err_size, "cannot map '%s': %s", path, strerror (errno));
            close (fd);
            return NULL;
        }
    }
    close (fd);
    //  An empty file still goes through the parser, which names what is
    //  missing ("magic ... needs 4 bytes").
    static const uint8_t empty [1];
    gguf_t *self = gguf_open_buffer (map ? map : empty, size, err, err_size);
    if (!self) {
        if (map)
            munmap (map, size);
        if (err && err_size && err [0]) {
            //  Prefix the path so a log line says which file.
            char msg [512];
            snprintf (msg, sizeof msg, "%s: %s", path, err);
            snprintf (err, err_size, "%s", msg);
        }
        return NULL;
    }
    self->map = map;
    return self;
}

void
gguf_destroy (gguf_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gguf_t *self = *self_p;
    for (int i = 0; i < self->n_kv; i++) {
        free (self->kv [i].key);
        free (self->kv [i].str_pos);
    }
    free (self->kv);
    free (self->kv_index.slots);
    for (int i = 0; i < self->n_tensors; i++)
        free ((char *) self->tensors [i].name);
    free (self->tensors);
    free (self->tensor_index.slots);
    if (self->map)
        munmap (self->map, self->size);
    free (self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  Accessors

uint32_t
gguf_version (const gguf_t *self)
{
    return self ? self->version : 0;
}

uint32_t
gguf_alignment (const gguf_t *self)
{
    return self ? self->alignment : 0;
}

size_t
gguf_data_offset (const gguf_t *self)
{
    return self ? self->data_offset : 0;
}

int
gguf_key_count (const gguf_t *self)
{
    return self ? self->n_kv : 0;
}

const char *
gguf_key_at (const gguf_t *self, int index)
{
    if (!self || index < 0 || index >= self->n_kv)
        return NULL;
    return self->kv [index].key;
}

bool
gguf_has_key (const gguf_t *self, const char *key)
{
    return s_find_kv (self, key) != NULL;
}

gguf_value_type_t
gguf_key_type (const gguf_t *self, const char *key)
{
    const s_kv_t *kv = s_find_kv (self, key);
    return kv ? kv->type : GGUF_TYPE_COUNT;
}

const void *
gguf_value_data (const gguf_t *self, const char *key)
{
    const s_kv_t *kv = s_find_kv (self, key);
    if (!kv || kv->type == GGUF_TYPE_STRING || kv->type == GGUF_TYPE_ARRAY)
        return NULL;
    return kv->data;
}

//  Reads an integer-typed value as a wide integer; false for other types.
//  Exactly one of *u (unsigned types) or *s (signed types) is meaningful:
//  *is_signed says which.
static bool
s_integer (const s_kv_t *kv, uint64_t *u, int64_t *s, bool *is_signed)
{
    if (!kv)
        return false;
    const uint8_t *p = kv->data;
    switch (kv->type) {
        case GGUF_TYPE_UINT8:  { uint8_t v;  memcpy (&v, p, 1); *u = v; *is_signed = false; return true; }
        case GGUF_TYPE_UINT16: { uint16_t v; memcpy (&v, p, 2); *u = v; *is_signed = false; return true; }
        case GGUF_TYPE_UINT32: { uint32_t v; memcpy (&v, p, 4); *u = v; *is_signed = false; return true; }
        case GGUF_TYPE_UINT64: { uint64_t v; memcpy (&v, p, 8); *u = v; *is_signed = false; return true; }
        case GGUF_TYPE_INT8:   { int8_t v;   memcpy (&v, p, 1); *s = v; *is_signed = true; return true; }
        case GGUF_TYPE_INT16:  { int16_t v;  memcpy (&v, p, 2); *s = v; *is_signed = true; return true; }
        case GGUF_TYPE_INT32:  { int32_t v;  memcpy (&v, p, 4); *s = v; *is_signed = true; return true; }
        case GGUF_TYPE_INT64:  { int64_t v;  memcpy (&v, p, 8); *s = v; *is_signed = true; return true; }
        default: return false;
    }
}

bool
gguf_get_u32 (const gguf_t *self, const char *key, uint32_t *out)
{
    uint64_t u = 0;
    int64_t s = 0;
    bool is_signed;
    if (!s_integer (s_find_kv (self, key), &u, &s, &is_signed))
        return false;
    if (is_signed ? (s < 0 || s > UINT32_MAX) : u > UINT32_MAX)
        return false;
    if (out)
        *out = is_signed ? (uint32_t) s : (uint32_t) u;
    return true;
}

bool
gguf_get_i64 (const gguf_t *self, const char *key, int64_t *out)
{
    uint64_t u = 0;
    int64_t s = 0;
    bool is_signed;
    if (!s_integer (s_find_kv (self, key), &u, &s, &is_signed))
        return false;
    if (!is_signed && u > INT64_MAX)
        return false;
    if (out)
        *out = is_signed ? s : (int64_t) u;
    return true;
}

bool
gguf_get_f32 (const gguf_t *self, const char *key, float *out)
{
    const s_kv_t *kv = s_find_kv (self, key);
    if (!kv)
        return false;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        float v;
        memcpy (&v, kv->data, 4);
        if (out)
            *out = v;
        return true;
    }
    if (kv->type == GGUF_TYPE_FLOAT64) {
        double v;
        memcpy (&v, kv->data, 8);
        if (out)
            *out = (float) v;
        return true;
    }
    return false;
}

bool
gguf_get_bool (const gguf_t *self, const char *key, bool *out)
{
    const s_kv_t *kv = s_find_kv (self, key);
    if (!kv || kv->type != GGUF_TYPE_BOOL)
        return false;
    if (out)
        *out = kv->data [0] != 0;
    return true;
}

bool
gguf_get_str (const gguf_t *self, const char *key, const char **data, size_t *len)
{
    const s_kv_t *kv = s_find_kv (self, key);
    if (!kv || kv->type != GGUF_TYPE_STRING)
        return false;
    if (data)
        *data = (const char *) kv->data;
    if (len)
        *len = (size_t) kv->len;
    return true;
}

bool
gguf_get_str_copy (const gguf_t *self, const char *key, char *buf, size_t size)
{
    const char *data;
    size_t len;
    if (!gguf_get_str (self, key, &data, &len))
        return false;
    if (buf && size) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy (buf, data, n);
        buf [n] = '\0';
    }
    return true;
}

bool
gguf_get_array (const gguf_t *self, const char *key, gguf_value_type_t *elem_type, uint64_t *count)
{
    const s_kv_t *kv = s_find_kv (self, key);
    if (!kv || kv->type != GGUF_TYPE_ARRAY)
        return false;
    if (elem_type)
        *elem_type = kv->elem_type;
    if (count)
        *count = kv->len;
    return true;
}

const void *
gguf_array_data (const gguf_t *self, const char *key)
{
    const s_kv_t *kv = s_find_kv (self, key);
    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->elem_type == GGUF_TYPE_STRING)
        return NULL;
    return kv->data;
}

bool
gguf_array_str (const gguf_t *self, const char *key, uint64_t index, const char **data, size_t *len)
{
    const s_kv_t *kv = s_find_kv (self, key);
    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->elem_type != GGUF_TYPE_STRING || index >= kv->len)
        return false;
    const uint8_t *p = kv->data + kv->str_pos [index];
    uint64_t n;
    memcpy (&n, p, 8);                  //  validated at open time
    if (data)
        *data = (const char *) p + 8;
    if (len)
        *len = (size_t) n;
    return true;
}

int
gguf_tensor_count (const gguf_t *self)
{
    return self ? self->n_tensors : 0;
}

const gguf_tensor_t *
gguf_tensor_at (const gguf_t *self, int index)
{
    if (!self || index < 0 || index >= self->n_tensors)
        return NULL;
    return &self->tensors [index];
}

const gguf_tensor_t *
gguf_find_tensor (const gguf_t *self, const char *name)
{
    if (!self || !name || !self->tensor_index.slots)
        return NULL;
    uint32_t slot = s_index_probe (&self->tensor_index, name, s_tensor_name_at, self);
    int32_t i = self->tensor_index.slots [slot];
    return i >= 0 ? &self->tensors [i] : NULL;
}
