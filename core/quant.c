/*  quant.c: weight format conversion and the threaded matmul driver.

    The loader hands each GGUF tensor to qmatrix_new_from_ggml, which copies
    it into one of the engine's formats (quant.h): losslessly where a ggml
    block maps onto ours (q4_1/q4_0 -> w4 or w8, q8_0 -> w8), otherwise by
    dequantizing a row to f32 and quantizing that. qmatrix_matmul quantizes
    the activations once per call on the caller's thread (one or two int8
    levels, qmatrix_act_levels), then splits the
    output rows among the pool's threads and runs the kernel family chosen by
    kernels_get (kernels.c).
*/
#include "quant.h"
#include "kernels.h"
#include "ggml_types.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  The ggml blocks copied without loss (layouts from ggml, see ggml_types.h);
//  every other conversion goes through ggml_type_traits' dequantizer.
typedef struct { uint16_t d; uint8_t qs[16]; } s_block_q4_0_t;
typedef struct { uint16_t d, m; uint8_t qs[16]; } s_block_q4_1_t;
typedef struct { uint16_t d; int8_t qs[32]; } s_block_q8_0_t;
_Static_assert (sizeof (s_block_q4_0_t) == 18, "q4_0 block is 18 bytes");
_Static_assert (sizeof (s_block_q4_1_t) == 20, "q4_1 block is 20 bytes");
_Static_assert (sizeof (s_block_q8_0_t) == 34, "q8_0 block is 34 bytes");

//  Limits that keep every size computation far from overflow.
#define QUANT_MAX_DIM (1 << 24)
#define QUANT_MAX_ELEMS ((size_t) 1 << 34)

static const char *s_fmt_names[QFMT_COUNT] = { "f32", "w8", "w4" };

const char *
qfmt_name (qfmt_t fmt)
{
    return (fmt >= 0 && fmt < QFMT_COUNT) ? s_fmt_names[fmt] : "?";
}

int
qfmt_parse (const char *name, qfmt_t *out)
{
    if (!name || !out)
        return -1;
    for (int i = 0; i < QFMT_COUNT; i++)
        if (strcmp (name, s_fmt_names[i]) == 0) {
            *out = (qfmt_t) i;
            return 0;
        }
    return -1;
}

static void
s_err (char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || err_size == 0)
        return;
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (err, err_size, fmt, ap);
    va_end (ap);
}

static size_t
s_align64 (size_t n)
{
    return (n + 63) & ~(size_t) 63;
}

//  Allocates an empty (zeroed) matrix of the given shape; NULL on bad shape
//  or out of memory, with a message.
static qmatrix_t *
s_alloc (qfmt_t fmt, int rows, int cols, char *err, size_t err_size)
{
    if (fmt < 0 || fmt >= QFMT_COUNT) {
        s_err (err, err_size, "unknown weight format %d", (int) fmt);
        return NULL;
    }
    if (rows <= 0 || cols <= 0 || rows > QUANT_MAX_DIM || cols > QUANT_MAX_DIM
    ||  (size_t) rows * (size_t) cols > QUANT_MAX_ELEMS) {
        s_err (err, err_size, "bad matrix shape %d x %d", rows, cols);
        return NULL;
    }
    if (cols % QUANT_GROUP != 0) {
        s_err (err, err_size, "cols %d is not a multiple of %d", cols, QUANT_GROUP);
        return NULL;
    }
    qmatrix_t *self = (qmatrix_t *) calloc (1, sizeof (qmatrix_t));
    if (!self) {
        s_err (err, err_size, "out of memory");
        return NULL;
    }
    self->fmt = fmt;
    self->rows = rows;
    self->cols = cols;
    self->nb = cols / QUANT_GROUP;
    self->nbp = (self->nb + KERNELS_BLOCK - 1) & ~(KERNELS_BLOCK - 1);
    size_t r = (size_t) rows;
    size_t off_qs = 0, off_d = 0, off_m = 0, total = 0;
    if (fmt == QFMT_F32)
        total = s_align64 (r * (size_t) cols * sizeof (float));
    else {
        self->qs_stride = (size_t) self->nb * (fmt == QFMT_W8 ? 32 : 16);
        off_d = s_align64 (r * self->qs_stride + KERNELS_QS_SLACK);
        off_m = off_d + s_align64 (r * (size_t) self->nb * sizeof (uint16_t));
        total = off_m + s_align64 (r * (size_t) self->nb * sizeof (uint16_t));
    }
    self->mem = aligned_alloc (64, total);
    if (!self->mem) {
        free (self);
        s_err (err, err_size, "out of memory for %zu bytes of weights", total);
        return NULL;
    }
    memset (self->mem, 0, total);
    self->mem_size = total;
    char *base = (char *) self->mem;
    if (fmt == QFMT_F32)
        self->f = (float *) base;
    else {
        self->qs = (uint8_t *) (base + off_qs);
        self->d = (uint16_t *) (base + off_d);
        self->m = (uint16_t *) (base + off_m);
    }
    return self;
}

void
qmatrix_destroy (qmatrix_t **self_p)
{
    assert (self_p);
    qmatrix_t *self = *self_p;
    if (!self)
        return;
    free (self->mem);
    free (self);
    *self_p = NULL;
}

qfmt_t
qmatrix_format (const qmatrix_t *self)
{
    assert (self);
    return self->fmt;
}

int
qmatrix_rows (const qmatrix_t *self)
{
    assert (self);
    return self->rows;
}

int
qmatrix_cols (const qmatrix_t *self)
{
    assert (self);
    return self->cols;
}

size_t
qmatrix_bytes (const qmatrix_t *self)
{
    assert (self);
    size_t r = (size_t) self->rows;
    if (self->fmt == QFMT_F32)
        return r * (size_t) self->cols * sizeof (float);
    return r * self->qs_stride + 2 * r * (size_t) self->nb * sizeof (uint16_t);
}

//  ---------------------------------------------------------------------
//  Group quantizers: one group of 32 floats into the matrix at (row, g).
//  Scales are rounded to fp16 first and the quants computed against the
//  rounded values, so the error per element stays within half a step.
//  Return -1 when a value is not finite or a scale overflows fp16.

//  Stores a group of 4-bit quants (0..15) with w = d q + m; in w8 they are
//  int8 values 0..15 (lossless: w8 keeps the min too).
static void
s_put_w4 (qmatrix_t *self, int row, int g, const uint8_t q[32], uint16_t d, uint16_t m)
{
    uint8_t *dst = self->qs + (size_t) row * self->qs_stride;
    if (self->fmt == QFMT_W8)
        for (int j = 0; j < 32; j++)
            dst[kernels_w8_offset (self->nb, g, j)] = q[j];
    else
        for (int j = 0; j < 16; j++)
            dst[kernels_w4_offset (self->nb, g, j)] = (uint8_t) (q[j] | (q[j + 16] << 4));
    self->d[(size_t) row * self->nb + g] = d;
    self->m[(size_t) row * self->nb + g] = m;
}

static int
s_quant_group_w4 (qmatrix_t *self, int row, int g, const float *x)
{
    float lo = x[0], hi = x[0];
    for (int j = 0; j < 32; j++) {
        if (!isfinite (x[j]))
            return -1;
        lo = x[j] < lo ? x[j] : lo;
        hi = x[j] > hi ? x[j] : hi;
    }
    uint16_t d16 = ggml_fp32_to_fp16 ((hi - lo) / 15.0f);
    uint16_t m16 = ggml_fp32_to_fp16 (lo);
    float d = ggml_fp16_to_fp32 (d16);
    float m = ggml_fp16_to_fp32 (m16);
    if (!isfinite (d) || !isfinite (m))
        return -1;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[32];
    for (int j = 0; j < 32; j++) {
        long v = lrintf ((x[j] - m) * id);
        q[j] = (uint8_t) (v < 0 ? 0 : v > 15 ? 15 : v);
    }
    s_put_w4 (self, row, g, q, d16, m16);
    return 0;
}

static int
s_quant_group_w8 (qmatrix_t *self, int row, int g, const float *x)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        if (!isfinite (x[j]))
            return -1;
        float a = fabsf (x[j]);
        amax = a > amax ? a : amax;
    }
    uint16_t d16 = ggml_fp32_to_fp16 (amax / 127.0f);
    float d = ggml_fp16_to_fp32 (d16);
    if (!isfinite (d))
        return -1;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int8_t *dst = (int8_t *) (self->qs + (size_t) row * self->qs_stride);
    for (int j = 0; j < 32; j++) {
        long v = lrintf (x[j] * id);
        dst[kernels_w8_offset (self->nb, g, j)] = (int8_t) (v < -127 ? -127 : v > 127 ? 127 : v);
    }
    self->d[(size_t) row * self->nb + g] = d16;
    self->m[(size_t) row * self->nb + g] = 0;
    return 0;
}

//  Quantizes (or copies) one row of floats into the matrix.
static int
s_put_row_f32 (qmatrix_t *self, int row, const float *x)
{
    if (self->fmt == QFMT_F32) {
        for (int c = 0; c < self->cols; c++)
            if (!isfinite (x[c]))
                return -1;
        memcpy (self->f + (size_t) row * self->cols, x, (size_t) self->cols * sizeof (float));
        return 0;
    }
    for (int g = 0; g < self->nb; g++) {
        int rc = self->fmt == QFMT_W4 ? s_quant_group_w4 (self, row, g, x + g * 32)
                                      : s_quant_group_w8 (self, row, g, x + g * 32);
        if (rc)
            return -1;
    }
    return 0;
}

qmatrix_t *
qmatrix_new_from_f32 (qfmt_t fmt, const float *w, int rows, int cols)
{
    if (!w)
        return NULL;
    qmatrix_t *self = s_alloc (fmt, rows, cols, NULL, 0);
    if (!self)
        return NULL;
    for (int r = 0; r < rows; r++)
        if (s_put_row_f32 (self, r, w + (size_t) r * cols)) {
            qmatrix_destroy (&self);
            return NULL;
        }
    return self;
}

int
qmatrix_get_row (const qmatrix_t *self, int row, float *out)
{
    assert (self && out);
    if (row < 0 || row >= self->rows)
        return -1;
    if (self->fmt == QFMT_F32) {
        memcpy (out, self->f + (size_t) row * self->cols, (size_t) self->cols * sizeof (float));
        return 0;
    }
    const uint8_t *qs = self->qs + (size_t) row * self->qs_stride;
    const uint16_t *dr = self->d + (size_t) row * self->nb;
    for (int g = 0; g < self->nb; g++) {
        float d = ggml_fp16_to_fp32 (dr[g]);
        float m = ggml_fp16_to_fp32 (self->m[(size_t) row * self->nb + g]);
        if (self->fmt == QFMT_W8) {
            const int8_t *q = (const int8_t *) qs;
            for (int j = 0; j < 32; j++)
                out[g * 32 + j] = d * (float) q[kernels_w8_offset (self->nb, g, j)] + m;
        }
        else {
            for (int j = 0; j < 32; j++)
                out[g * 32 + j] = d * (float) ((qs[kernels_w4_offset (self->nb, g, j)] >> (j & 16 ? 4 : 0)) & 0xf) + m;
        }
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  ggml sources

//  Copies a row of q4_1 / q4_0 blocks into w4 or w8 without loss. q4_0's
//  x = d (q - 8) becomes d q + m with m = -8 d, exact in fp16 unless it
//  overflows; such a group is requantized from its floats instead.
static int
s_row_q4_to_w4 (qmatrix_t *self, int row, int type, const void *src)
{
    for (int g = 0; g < self->nb; g++) {
        uint8_t q[32];
        uint16_t d16, m16;
        if (type == GGML_TYPE_Q4_1) {
            s_block_q4_1_t blk;
            memcpy (&blk, (const char *) src + (size_t) g * sizeof blk, sizeof blk);
            for (int j = 0; j < 16; j++) {
                q[j] = blk.qs[j] & 0xf;
                q[j + 16] = blk.qs[j] >> 4;
            }
            d16 = blk.d;
            m16 = blk.m;
            if (!isfinite (ggml_fp16_to_fp32 (d16)) || !isfinite (ggml_fp16_to_fp32 (m16)))
                return -1;
        }
        else {
            s_block_q4_0_t blk;
            memcpy (&blk, (const char *) src + (size_t) g * sizeof blk, sizeof blk);
            for (int j = 0; j < 16; j++) {
                q[j] = blk.qs[j] & 0xf;
                q[j + 16] = blk.qs[j] >> 4;
            }
            d16 = blk.d;
            float d = ggml_fp16_to_fp32 (d16);
            if (!isfinite (d))
                return -1;
            m16 = ggml_fp32_to_fp16 (-8.0f * d);
            if (ggml_fp16_to_fp32 (m16) != -8.0f * d) {
                float x[32];
                for (int j = 0; j < 32; j++)
                    x[j] = d * (float) (q[j] - 8);
                if ((self->fmt == QFMT_W4 ? s_quant_group_w4 : s_quant_group_w8) (self, row, g, x))
                    return -1;
                continue;
            }
        }
        s_put_w4 (self, row, g, q, d16, m16);
    }
    return 0;
}

static int
s_row_q8_to_w8 (qmatrix_t *self, int row, const void *src)
{
    int8_t *dst = (int8_t *) (self->qs + (size_t) row * self->qs_stride);
    for (int g = 0; g < self->nb; g++) {
        s_block_q8_0_t blk;
        memcpy (&blk, (const char *) src + (size_t) g * sizeof blk, sizeof blk);
        if (!isfinite (ggml_fp16_to_fp32 (blk.d)))
            return -1;
        for (int j = 0; j < 32; j += 4)
            memcpy (dst + kernels_w8_offset (self->nb, g, j), blk.qs + j, 4);
        self->d[(size_t) row * self->nb + g] = blk.d;
        self->m[(size_t) row * self->nb + g] = 0;
    }
    return 0;
}

qmatrix_t *
qmatrix_new_from_ggml (qfmt_t fmt, int ggml_type, const void *data, int rows, int cols,
                       char *err, size_t err_size)
{
    float *tmp = NULL;
    qmatrix_t *self = NULL;
    if (!data) {
        s_err (err, err_size, "no tensor data");
        goto fail;
    }
    self = s_alloc (fmt, rows, cols, err, err_size);
    if (!self)
        goto fail;
    const ggml_type_traits_t *tt = ggml_type_traits (ggml_type);
    size_t row_bytes = ggml_row_size (ggml_type, cols);
    if (!tt || !tt->to_float || row_bytes == 0) {
        s_err (err, err_size, "ggml type %d (%s) is not supported for %d columns", ggml_type,
               tt ? tt->name : "unknown", cols);
        goto fail;
    }
    int lossless = (fmt != QFMT_F32 && (ggml_type == GGML_TYPE_Q4_1 || ggml_type == GGML_TYPE_Q4_0))
                || (fmt == QFMT_W8 && ggml_type == GGML_TYPE_Q8_0);
    if (!lossless) {
        tmp = (float *) malloc ((size_t) cols * sizeof (float));
        if (!tmp) {
            s_err (err, err_size, "out of memory");
            goto fail;
        }
    }
    for (int r = 0; r < rows; r++) {
        const void *src = (const char *) data + (size_t) r * row_bytes;
        int rc;
        if (lossless && ggml_type != GGML_TYPE_Q8_0)
            rc = s_row_q4_to_w4 (self, r, ggml_type, src);
        else
        if (lossless)
            rc = s_row_q8_to_w8 (self, r, src);
        else {
            tt->to_float (src, tmp, cols);
            rc = s_put_row_f32 (self, r, tmp);
        }
        if (rc) {
            s_err (err, err_size, "row %d: value not finite or scale out of fp16 range", r);
            goto fail;
        }
    }
    free (tmp);
    return self;

fail:
    free (tmp);
    qmatrix_destroy (&self);
    return NULL;
}

//  ---------------------------------------------------------------------
//  Matmul driver

//  Activation levels per format: 0 = not read yet, else 1 or 2.
static atomic_int s_levels[QFMT_COUNT];

static int
s_levels_from_env (qfmt_t fmt)
{
    const char *name = fmt == QFMT_W8 ? "SPLITMESH_W8_ACT_LEVELS" : "SPLITMESH_W4_ACT_LEVELS";
    const char *env = getenv (name);
    if (env && strcmp (env, "1") == 0)
        return 1;
    if (env && strcmp (env, "2") == 0)
        return 2;
    return fmt == QFMT_W8 ? 2 : 1;
}

int
qmatrix_act_levels (qfmt_t fmt)
{
    if (fmt != QFMT_W8 && fmt != QFMT_W4)
        return 0;
    int n = atomic_load_explicit (&s_levels[fmt], memory_order_relaxed);
    if (!n) {
        n = s_levels_from_env (fmt);
        atomic_store_explicit (&s_levels[fmt], n, memory_order_relaxed);
    }
    return n;
}

void
qmatrix_act_levels_refresh (void)
{
    atomic_store (&s_levels[QFMT_W8], s_levels_from_env (QFMT_W8));
    atomic_store (&s_levels[QFMT_W4], s_levels_from_env (QFMT_W4));
}

//  Per-thread scratch for quantized activations, grown on demand and freed
//  when the thread exits.
typedef struct {
    void *mem;
    size_t cap;
} s_scratch_t;

static pthread_key_t s_scratch_key;
static pthread_once_t s_scratch_once = PTHREAD_ONCE_INIT;

static void
s_scratch_free (void *p)
{
    s_scratch_t *scratch = (s_scratch_t *) p;
    if (scratch) {
        free (scratch->mem);
        free (scratch);
    }
}

static void
s_scratch_init (void)
{
    pthread_key_create (&s_scratch_key, s_scratch_free);
}

static void *
s_scratch_get (size_t size)
{
    pthread_once (&s_scratch_once, s_scratch_init);
    s_scratch_t *scratch = (s_scratch_t *) pthread_getspecific (s_scratch_key);
    if (!scratch) {
        scratch = (s_scratch_t *) calloc (1, sizeof *scratch);
        if (!scratch)
            return NULL;
        if (pthread_setspecific (s_scratch_key, scratch)) {
            free (scratch);
            return NULL;
        }
    }
    if (scratch->cap < size) {
        size_t cap = s_align64 (size + size / 2);
        void *mem = aligned_alloc (64, cap);
        if (!mem)
            return NULL;
        free (scratch->mem);
        scratch->mem = mem;
        scratch->cap = cap;
    }
    return scratch->mem;
}

typedef struct {
    const kernels_t *k;         //  kernel family
    const qmatrix_t *W;         //  weights
    const float *x;             //  (n_tokens, cols) input
    qact_t act;                 //  quantized input (w8, w4)
    int n_tokens;               //  tokens
    float *y;                   //  (n_tokens, rows) output
    int chunk_rows;             //  rows per work chunk (multiple of 16)
    int n_chunks;               //  chunks in all
    atomic_int next_chunk;      //  next row chunk to claim
    atomic_int next_token;      //  next token to quantize
} s_job_t;

static void
s_task_quantize (void *arg, int ith, int nth)
{
    s_job_t *job = (s_job_t *) arg;
    qact_t *a = &job->act;
    for (int t = atomic_fetch_add (&job->next_token, 1); t < job->n_tokens;
         t = atomic_fetch_add (&job->next_token, 1))
        job->k->quantize_act (job->x + (size_t) t * job->W->cols, a->nb, a->nbp,
                              a->q + (size_t) t * a->nbp * 32,
                              a->q2 ? a->q2 + (size_t) t * a->nbp * 32 : NULL,
                              a->d + (size_t) t * a->nbp, a->s + (size_t) t * a->nbp);
}

static void
s_run_rows (s_job_t *job, int r0, int r1)
{
    const qmatrix_t *W = job->W;
    switch (W->fmt) {
        case QFMT_F32:
            job->k->matmul_f32 (W, job->x, job->n_tokens, r0, r1, job->y, W->rows);
            break;
        case QFMT_W8:
            job->k->matmul_w8 (W, &job->act, r0, r1, job->y, W->rows);
            break;
        case QFMT_W4:
            job->k->matmul_w4 (W, &job->act, r0, r1, job->y, W->rows);
            break;
        default:
            break;
    }
}

//  Rows come in chunks of a multiple of 16 (for one token each thread then
//  writes whole 64-byte lines of y), claimed from a shared counter by
//  whichever threads run (threadpool_run_shared): a thread that the OS
//  delays (a busy machine, a slower core) leaves its share to the others.
static void
s_task_matmul (void *arg, int ith, int nth)
{
    s_job_t *job = (s_job_t *) arg;
    int rows = job->W->rows;
    for (int c = atomic_fetch_add (&job->next_chunk, 1); c < job->n_chunks;
         c = atomic_fetch_add (&job->next_chunk, 1)) {
        int r0 = c * job->chunk_rows;
        int r1 = r0 + job->chunk_rows < rows ? r0 + job->chunk_rows : rows;
        s_run_rows (job, r0, r1);
    }
}

void
qmatrix_matmul (const qmatrix_t *W, const float *x, int n_tokens, float *y, threadpool_t *pool)
{
    assert (W && x && y);
    if (n_tokens <= 0)
        return;
    s_job_t job = { .k = kernels_get (), .W = W, .x = x, .n_tokens = n_tokens, .y = y };
    if (W->fmt != QFMT_F32) {
        qact_t *a = &job.act;
        a->n_tokens = n_tokens;
        a->nb = W->nb;
        a->nbp = W->nbp;
        size_t nq = (size_t) n_tokens * a->nbp * 32;
        size_t nf = (size_t) n_tokens * a->nbp;
        int two = qmatrix_act_levels (W->fmt) == 2;
        char *mem = (char *) s_scratch_get ((two ? 2 : 1) * s_align64 (nq)
                                            + 2 * s_align64 (nf * sizeof (float)));
        if (!mem) {
            //  Out of memory for a few KB of scratch: nothing sane is left
            //  to do, and silently wrong logits would be worse than stopping.
            fprintf (stderr, "qmatrix_matmul: out of memory for activation scratch\n");
            abort ();
        }
        a->q = (int8_t *) mem;
        a->d = (float *) (mem + s_align64 (nq));
        a->s = (float *) (mem + s_align64 (nq) + s_align64 (nf * sizeof (float)));
        a->q2 = two ? (int8_t *) (mem + s_align64 (nq) + 2 * s_align64 (nf * sizeof (float))) : NULL;
        //  Quantizing is ~1% of the matmul; only spread it for big batches.
        atomic_init (&job.next_token, 0);
        threadpool_run_shared (n_tokens >= 8 ? pool : NULL, s_task_quantize, &job);
    }
    //  About four chunks per thread: enough to rebalance, few enough that
    //  claiming one costs nothing next to the rows it covers.
    int nth = threadpool_size (pool);
    int rows = W->rows;
    int chunk = nth == 1 ? rows : (rows + 4 * nth - 1) / (4 * nth);
    job.chunk_rows = (chunk + 15) & ~15;
    job.n_chunks = (rows + job.chunk_rows - 1) / job.chunk_rows;
    atomic_init (&job.next_chunk, 0);
    threadpool_run_shared (pool, s_task_matmul, &job);
}
