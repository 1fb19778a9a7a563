/*  test_ggml_types.c: ggml block types against the Python gguf package.

    The golden files in tests/golden/ggml/ were written by make_golden.py
    with llama.cpp's gguf-py: random blocks with their dequantized values,
    and float inputs with their quantized bytes. Both directions must match
    bit for bit; the fp16 conversion is also checked exhaustively.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml_types.h"

//  ctest runs Criterion with --full-stats, which records every passing
//  assertion: loops over many elements check with a plain `if` and fail
//  through this instead.
#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail (__VA_ARGS__); } while (0)

typedef struct {
    uint32_t type, n, nbytes, flags;
    uint8_t *raw;               //  nbytes random blocks
    float *deq;                 //  n: gguf-py's dequantization of raw
    float *input;               //  n: quantizer input (flags & 1)
    uint8_t *quant;             //  nbytes: gguf-py's quantization of input
    uint8_t *file;              //  whole file, owns the above
} golden_t;

static void
s_golden_load (const char *name, golden_t *g)
{
    char path [512];
    snprintf (path, sizeof path, "%s/tests/golden/ggml/%s.bin", SPLITMESH_SOURCE_DIR, name);
    FILE *f = fopen (path, "rb");
    cr_assert_not_null (f, "cannot open golden file %s", path);
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    fseek (f, 0, SEEK_SET);
    cr_assert_gt (size, 24);
    g->file = malloc ((size_t) size);
    cr_assert_eq (fread (g->file, 1, (size_t) size, f), (size_t) size);
    fclose (f);
    cr_assert_eq (memcmp (g->file, "SMGG", 4), 0, "%s: bad magic", path);
    uint32_t hdr [5];
    memcpy (hdr, g->file + 4, sizeof hdr);
    cr_assert_eq (hdr [0], 1u);
    g->type = hdr [1];
    g->n = hdr [2];
    g->nbytes = hdr [3];
    g->flags = hdr [4];
    size_t need = 24 + g->nbytes + 4 * (size_t) g->n;
    if (g->flags & 1)
        need += 4 * (size_t) g->n + g->nbytes;
    cr_assert_eq ((size_t) size, need, "%s: size %ld, expected %zu", path, size, need);
    uint8_t *p = g->file + 24;
    g->raw = p;
    p += g->nbytes;
    g->deq = malloc (4 * (size_t) g->n);
    memcpy (g->deq, p, 4 * (size_t) g->n);
    p += 4 * (size_t) g->n;
    g->input = NULL;
    g->quant = NULL;
    if (g->flags & 1) {
        g->input = malloc (4 * (size_t) g->n);
        memcpy (g->input, p, 4 * (size_t) g->n);
        p += 4 * (size_t) g->n;
        g->quant = p;
    }
}

static void
s_golden_free (golden_t *g)
{
    free (g->deq);
    free (g->input);
    free (g->file);
}

static void
s_check_golden (const char *name, int type, int has_quant)
{
    golden_t g;
    s_golden_load (name, &g);
    cr_assert_eq (g.type, (uint32_t) type, "%s: type %u", name, g.type);
    cr_assert_eq (ggml_row_size (type, g.n), g.nbytes, "%s: row size", name);
    cr_assert_eq (!!(g.flags & 1), has_quant, "%s: quantize section", name);

    //  Dequantize: bit-exact against gguf-py.
    float *out = malloc (4 * (size_t) g.n);
    cr_assert_eq (ggml_dequantize (type, g.raw, out, g.n), 0);
    for (uint32_t i = 0; i < g.n; i++) {
        uint32_t a, b;
        memcpy (&a, &out [i], 4);
        memcpy (&b, &g.deq [i], 4);
        CHECK (a == b, "%s dequantize element %u: got %.9g (0x%08x), gguf-py %.9g (0x%08x)",
                      name, i, out [i], a, g.deq [i], b);
    }
    //  Through the unaligned path too: the same bytes at an odd address.
    uint8_t *odd = malloc (g.nbytes + 1);
    memcpy (odd + 1, g.raw, g.nbytes);
    float *out2 = malloc (4 * (size_t) g.n);
    ggml_type_traits (type)->to_float (odd + 1, out2, g.n);
    cr_assert_eq (memcmp (out, out2, 4 * (size_t) g.n), 0, "%s: unaligned dequantize differs", name);

    //  Quantize: byte-exact against gguf-py where it quantizes this type.
    if (g.flags & 1) {
        uint8_t *q = malloc (g.nbytes);
        memset (q, 0xAA, g.nbytes);
        cr_assert_eq (ggml_quantize (type, g.input, q, g.n), 0);
        for (uint32_t i = 0; i < g.nbytes; i++)
            CHECK (q [i] == g.quant [i], "%s quantize byte %u (block %u): got 0x%02x, gguf-py 0x%02x",
                          name, i, i / (uint32_t) ggml_type_traits (type)->type_size, q [i], g.quant [i]);
        free (q);
    }
    free (odd);
    free (out2);
    free (out);
    s_golden_free (&g);
}

Test (ggml_types, golden_f32)  { s_check_golden ("f32",  GGML_TYPE_F32,  0); }
Test (ggml_types, golden_f16)  { s_check_golden ("f16",  GGML_TYPE_F16,  1); }
Test (ggml_types, golden_bf16) { s_check_golden ("bf16", GGML_TYPE_BF16, 1); }
Test (ggml_types, golden_q4_0) { s_check_golden ("q4_0", GGML_TYPE_Q4_0, 1); }
Test (ggml_types, golden_q4_1) { s_check_golden ("q4_1", GGML_TYPE_Q4_1, 1); }
Test (ggml_types, golden_q8_0) { s_check_golden ("q8_0", GGML_TYPE_Q8_0, 1); }
Test (ggml_types, golden_q4_k) { s_check_golden ("q4_k", GGML_TYPE_Q4_K, 0); }
Test (ggml_types, golden_q6_k) { s_check_golden ("q6_k", GGML_TYPE_Q6_K, 0); }
Test (ggml_types, golden_q5_0) { s_check_golden ("q5_0", GGML_TYPE_Q5_0, 1); }
Test (ggml_types, golden_q5_1) { s_check_golden ("q5_1", GGML_TYPE_Q5_1, 1); }

Test (ggml_types, table_matches_ggml)
{
    struct { int type; const char *name; int bs; size_t ts; } want [] = {
        { GGML_TYPE_F32, "f32", 1, 4 },      { GGML_TYPE_F16, "f16", 1, 2 },
        { GGML_TYPE_Q4_0, "q4_0", 32, 18 },  { GGML_TYPE_Q4_1, "q4_1", 32, 20 },
        { GGML_TYPE_Q8_0, "q8_0", 32, 34 },  { GGML_TYPE_Q4_K, "q4_K", 256, 144 },
        { GGML_TYPE_Q6_K, "q6_K", 256, 210 }, { GGML_TYPE_BF16, "bf16", 1, 2 },
        { GGML_TYPE_Q5_0, "q5_0", 32, 22 },  { GGML_TYPE_Q5_1, "q5_1", 32, 24 },
        { SPLITMESH_TYPE_W4G128, "w4g128", 128, 68 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want [0]; i++) {
        const ggml_type_traits_t *t = ggml_type_traits (want [i].type);
        cr_assert_not_null (t, "type %d", want [i].type);
        cr_assert_str_eq (t->name, want [i].name);
        cr_assert_eq (t->block_size, want [i].bs, "%s block size", t->name);
        cr_assert_eq (t->type_size, want [i].ts, "%s type size", t->name);
        cr_assert_not_null (t->to_float);
        cr_assert_not_null (t->from_float);
        cr_assert_eq (ggml_type_from_name (want [i].name), want [i].type);
    }
    //  Types ggml has but splitmesh does not read, and nonsense.
    int unsupported [] = { -1, 4, 5, 9, 10, 11, 13, 15, 29, 39, 40, 1000, 4127, 4129 };
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported [0]; i++) {
        cr_assert_null (ggml_type_traits (unsupported [i]), "type %d", unsupported [i]);
        cr_assert_eq (ggml_row_size (unsupported [i], 256), 0);
    }
    cr_assert_eq (ggml_type_from_name ("Q4_K"), GGML_TYPE_Q4_K);
    cr_assert_eq (ggml_type_from_name ("BF16"), GGML_TYPE_BF16);
    cr_assert_eq (ggml_type_from_name ("q5_k"), -1);
    cr_assert (ggml_type_is_splitmesh (SPLITMESH_TYPE_W4G128));
    cr_assert (!ggml_type_is_splitmesh (GGML_TYPE_Q4_1));
    cr_assert_gt (SPLITMESH_TYPE_W4G128, GGML_TYPE_COUNT, "outside ggml's range");
    cr_assert_eq (ggml_type_from_name ("q4"), -1);
    cr_assert_eq (ggml_type_from_name (""), -1);
    cr_assert_eq (ggml_type_from_name (NULL), -1);
}

Test (ggml_types, row_size)
{
    cr_assert_eq (ggml_row_size (GGML_TYPE_Q4_1, 576), 18 * 20);
    cr_assert_eq (ggml_row_size (GGML_TYPE_Q6_K, 512), 2 * 210);
    cr_assert_eq (ggml_row_size (GGML_TYPE_F32, 7), 28);
    cr_assert_eq (ggml_row_size (GGML_TYPE_Q4_0, 33), 0, "not a whole block");
    cr_assert_eq (ggml_row_size (GGML_TYPE_Q4_K, 128), 0, "not a whole super-block");
    cr_assert_eq (ggml_row_size (GGML_TYPE_F16, -2), 0);
    float x [32] = { 0 };
    uint8_t q [64];
    cr_assert_eq (ggml_quantize (GGML_TYPE_Q8_0, x, q, 31), -1);
    cr_assert_eq (ggml_quantize (5, x, q, 32), -1);
    cr_assert_eq (ggml_row_size (SPLITMESH_TYPE_W4G128, 576), 0, "576 is not whole groups of 128");
    cr_assert_eq (ggml_row_size (SPLITMESH_TYPE_W4G128, 1536), 12 * 68);
    cr_assert_eq (ggml_dequantize (GGML_TYPE_Q4_0, q, x, 16), -1);
}

//  Every half value converts to fp32 and back unchanged (NaNs stay NaN).
Test (ggml_types, fp16_exhaustive_round_trip)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ggml_fp16_to_fp32 ((uint16_t) h);
        uint16_t back = ggml_fp32_to_fp16 (f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            CHECK (isnan (f), "0x%04x should be NaN", h);
            CHECK ((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "0x%04x: NaN lost (0x%04x)", h, back);
        }
        else
            CHECK (back == h, "0x%04x -> %.9g -> 0x%04x", h, f, back);
    }
    cr_assert_eq (ggml_fp16_to_fp32 (0x3c00), 1.0f);
    cr_assert_eq (ggml_fp16_to_fp32 (0x0001), 0x1p-24f);
    cr_assert_eq (ggml_fp16_to_fp32 (0x7bff), 65504.0f);
    cr_assert (isinf (ggml_fp16_to_fp32 (0xfc00)) && ggml_fp16_to_fp32 (0xfc00) < 0);
}

//  fp32 -> fp16 rounding against the compiler's own _Float16 conversion
//  over a stride through all fp32 bit patterns plus the boundaries.
Test (ggml_types, fp32_to_fp16_rounding)
{
    static const struct { float f; uint16_t h; } cases [] = {
        { 65504.0f, 0x7bff }, { 65519.996f, 0x7bff }, { 65520.0f, 0x7c00 },
        { 1e9f, 0x7c00 }, { -1e9f, 0xfc00 }, { 0x1p-25f, 0x0000 }, { 0x1.000002p-25f, 0x0001 },
        { 0x1.8p-24f, 0x0002 }, { 0x1p-24f, 0x0001 }, { 1.00048828125f, 0x3c00 },
        { 1.00146484375f, 0x3c02 }, { -0.0f, 0x8000 }, { 0x1p-14f, 0x0400 },
        { 0x1.ff8p-15f, 0x03ff }, { 0x1.ffcp-15f, 0x0400 }, { INFINITY, 0x7c00 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++)
        cr_assert_eq (ggml_fp32_to_fp16 (cases [i].f), cases [i].h, "%a -> 0x%04x, want 0x%04x",
                      cases [i].f, ggml_fp32_to_fp16 (cases [i].f), cases [i].h);
    uint16_t nan = ggml_fp32_to_fp16 (NAN);
    cr_assert ((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff), "NaN -> 0x%04x", nan);
#if defined(__FLT16_MAX__)
    for (uint64_t u = 0; u < (1ull << 32); u += 4099) {
        uint32_t bits = (uint32_t) u;
        float f;
        memcpy (&f, &bits, 4);
        if (isnan (f))
            continue;
        _Float16 ref = (_Float16) f;
        uint16_t want;
        memcpy (&want, &ref, 2);
        CHECK (ggml_fp32_to_fp16 (f) == want, "%a (0x%08x): got 0x%04x, want 0x%04x",
                      f, bits, ggml_fp32_to_fp16 (f), want);
    }
#endif
}

Test (ggml_types, bf16)
{
    cr_assert_eq (ggml_fp32_to_bf16 (1.0f), 0x3f80);
    cr_assert_eq (ggml_bf16_to_fp32 (0x3f80), 1.0f);
    cr_assert_eq (ggml_fp32_to_bf16 (1.00390625f), 0x3f80, "tie rounds to even (down)");
    cr_assert_eq (ggml_fp32_to_bf16 (1.01171875f), 0x3f82, "tie rounds to even (up)");
    cr_assert_eq (ggml_fp32_to_bf16 (3.4028235e38f), 0x7f80, "max float rounds to inf");
    uint16_t nan = ggml_fp32_to_bf16 (NAN);
    cr_assert (isnan (ggml_bf16_to_fp32 (nan)), "NaN stays NaN");
    uint32_t snan_bits = 0x7f800001;   //  payload only in the low bits
    float snan;
    memcpy (&snan, &snan_bits, 4);
    cr_assert (isnan (ggml_bf16_to_fp32 (ggml_fp32_to_bf16 (snan))), "low-payload NaN stays NaN");
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ggml_bf16_to_fp32 ((uint16_t) h);
        if (!isnan (f))
            CHECK (ggml_fp32_to_bf16 (f) == h, "0x%04x round trip", h);
    }
}

//  Quantize then dequantize: the error stays within each format's step.
//  For Q4_K and Q6_K (no gguf-py quantizer to compare with) this is what
//  shows the packing is right, since their dequantizers match gguf-py.
static double
s_rel_rms_error (int type, const float *x, int64_t n)
{
    size_t nbytes = ggml_row_size (type, n);
    uint8_t *q = malloc (nbytes);
    float *y = malloc (sizeof (float) * (size_t) n);
    cr_assert_eq (ggml_quantize (type, x, q, n), 0);
    cr_assert_eq (ggml_dequantize (type, q, y, n), 0);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        err += ((double) x [i] - y [i]) * ((double) x [i] - y [i]);
        ref += (double) x [i] * x [i];
    }
    free (q);
    free (y);
    return sqrt (err / (ref > 0 ? ref : 1));
}

Test (ggml_types, quantize_round_trip_error)
{
    enum { N = 4096 };
    float *x = malloc (sizeof (float) * N);
    uint32_t s = 12345;
    for (int i = 0; i < N; i++) {
        //  Roughly normal (sum of uniforms), varied scale per 256 elements.
        float u = 0;
        for (int k = 0; k < 4; k++) {
            s = s * 1664525u + 1013904223u;
            u += (float) (s >> 8) / (float) (1 << 24) - 0.5f;
        }
        x [i] = u * (0.01f + 0.2f * (float) ((i / 256) % 5));
    }
    struct { int type; double max_rel; } want [] = {
        { GGML_TYPE_F32, 0.0 }, { GGML_TYPE_F16, 1e-3 }, { GGML_TYPE_BF16, 5e-3 },
        { GGML_TYPE_Q8_0, 0.01 }, { GGML_TYPE_Q6_K, 0.03 }, { GGML_TYPE_Q4_K, 0.12 },
        { GGML_TYPE_Q4_1, 0.12 }, { GGML_TYPE_Q4_0, 0.15 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want [0]; i++) {
        double e = s_rel_rms_error (want [i].type, x, N);
        cr_assert_leq (e, want [i].max_rel, "%s: relative RMS error %.5f > %.5f",
                       ggml_type_traits (want [i].type)->name, e, want [i].max_rel);
    }
    //  Q6_K keeps ~6 bits: clearly better than the 4-bit types.
    cr_assert_lt (s_rel_rms_error (GGML_TYPE_Q6_K, x, N), s_rel_rms_error (GGML_TYPE_Q4_K, x, N) / 2);
    //  Zeros stay exactly zero in every format.
    memset (x, 0, sizeof (float) * N);
    for (size_t i = 0; i < sizeof want / sizeof want [0]; i++) {
        size_t nbytes = ggml_row_size (want [i].type, 512);
        uint8_t *q = malloc (nbytes);
        float y [512];
        ggml_quantize (want [i].type, x, q, 512);
        ggml_dequantize (want [i].type, q, y, 512);
        for (int k = 0; k < 512; k++)
            CHECK (y [k] == 0.0f, "%s: zero became %g", ggml_type_traits (want [i].type)->name, y [k]);
        free (q);
    }
    free (x);
}

//  Q4_K and Q6_K on inputs with an offset (all positive, all negative)
//  and with one outlier: the scale/min packing of the upper sub-blocks
//  (6-bit values split across bytes) is exercised by the larger values.
Test (ggml_types, k_quants_shapes)
{
    float x [512], y [512];
    uint8_t q [512];
    for (int variant = 0; variant < 3; variant++) {
        for (int i = 0; i < 512; i++) {
            float v = (float) ((i * 37) % 101) / 101.0f;
            x [i] = variant == 0 ? 5.0f + v * (1 + i / 32)          //  positive, growing per sub-block
                  : variant == 1 ? -3.0f - v * (float) (i % 7)     //  negative
                  : (i == 300 ? 40.0f : v - 0.5f);                 //  one outlier
        }
        int types [] = { GGML_TYPE_Q4_K, GGML_TYPE_Q6_K };
        for (int t = 0; t < 2; t++) {
            ggml_quantize (types [t], x, q, 512);
            ggml_dequantize (types [t], q, y, 512);
            for (int s = 0; s < 512; s += 32) {
                float lo = x [s], hi = x [s];
                for (int k = 0; k < 32; k++) {
                    lo = fminf (lo, x [s + k]);
                    hi = fmaxf (hi, x [s + k]);
                }
                //  Bound: a sub-block's own range (plus zero, since the
                //  mins are stored as offsets below zero) over the levels,
                //  widened for the 6-bit scales.
                float span = fmaxf (hi, 0) - fminf (lo, 0);
                float step = types [t] == GGML_TYPE_Q4_K ? span / 15 : fmaxf (fabsf (lo), fabsf (hi)) / 31;
                for (int k = 0; k < 32; k++)
                    CHECK (fabsf (y [s + k] - x [s + k]) <= 1.5f * step + 0.04f * fabsf (x [s + k]) + 1e-6f,
                                   "%s variant %d element %d: %g -> %g",
                                   ggml_type_traits (types [t])->name, variant, s + k, x [s + k], y [s + k]);
            }
        }
    }
}

//  W4G128 (splitmesh's W4, group 128): the dequantized values are the codes
//  on the group's grid, the quantizer's error is within half a step of the
//  min..max grid (the least-squares refit only lowers it), and the Q4_1
//  rewrite the engine loads gives the same floats bit for bit.
Test (ggml_types, w4g128)
{
    enum { N = 1536 };
    static float x [N], y [N], z [N];
    static uint8_t q [N / 128 * 68], q41 [N / 32 * 20];
    uint32_t seed = 12345;
    for (int i = 0; i < N; i++) {
        seed = seed * 1664525u + 1013904223u;
        x [i] = ((float) (seed >> 8) / 16777216.0f - 0.5f) * (i < 128 ? 1e-3f : 0.1f);
    }
    x [200] = 0.9f;                     //  an outlier in group 1
    for (int i = 256; i < 384; i++)
        x [i] = 0.25f;                  //  a constant group
    cr_assert_eq (ggml_quantize (SPLITMESH_TYPE_W4G128, x, q, N), 0);
    cr_assert_eq (ggml_dequantize (SPLITMESH_TYPE_W4G128, q, y, N), 0);
    for (int g = 0; g < N / 128; g++) {
        float mn = x [g * 128], mx = mn;
        double err = 0, err_minmax = 0;
        for (int j = 0; j < 128; j++) {
            float v = x [g * 128 + j];
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
        float step = (mx - mn) / 15;
        for (int j = 0; j < 128; j++) {
            float v = x [g * 128 + j];
            err += (double) (y [g * 128 + j] - v) * (y [g * 128 + j] - v);
            float c = step > 0 ? roundf ((v - mn) / step) * step + mn : mn;
            err_minmax += (double) (c - v) * (c - v);
        }
        //  fp16 storage of d and m adds a little on top of the fit.
        CHECK (err <= err_minmax * 1.01 + 1e-10 * 128, "group %d: error %g > min..max grid's %g",
               g, err, err_minmax);
    }
    cr_assert_float_eq (y [300], 0.25f, 1e-4f, "constant group");
    cr_assert_eq (ggml_w4g128_to_q4_1 (q, q41, N), 0);
    cr_assert_eq (ggml_dequantize (GGML_TYPE_Q4_1, q41, z, N), 0);
    cr_assert_eq (memcmp (y, z, sizeof y), 0, "Q4_1 rewrite must be exact");
    cr_assert_eq (ggml_w4g128_to_q4_1 (q, q41, 100), -1);
}

//  A Q4_K super-block whose scales and mins are fp16 values rewrites as
//  eight Q4_1 blocks with the same floats; one whose products are not
//  exact is refused.
Test (ggml_types, q4_K_to_q4_1_exact)
{
    uint8_t blk [144], q41 [8 * 20];
    float a [256], b [256];
    uint32_t seed = 777;
    for (int i = 0; i < 144; i++) {
        seed = seed * 1664525u + 1013904223u;
        blk [i] = (uint8_t) (seed >> 24);
    }
    uint16_t d = ggml_fp32_to_fp16 (1.0f / 64), dmin = ggml_fp32_to_fp16 (1.0f / 128);
    memcpy (blk, &d, 2);
    memcpy (blk + 2, &dmin, 2);
    cr_assert_eq (ggml_dequantize (GGML_TYPE_Q4_K, blk, a, 256), 0);
    cr_assert_eq (ggml_q4_K_to_q4_1_exact (blk, q41, 256), 0);
    cr_assert_eq (ggml_dequantize (GGML_TYPE_Q4_1, q41, b, 256), 0);
    cr_assert_eq (memcmp (a, b, sizeof a), 0, "same values bit for bit");
    //  A scale with all 11 mantissa bits set times a 6-bit code such as 63
    //  needs more than fp16's precision.
    d = ggml_fp32_to_fp16 (1.9990234375f / 64);
    memcpy (blk, &d, 2);
    for (int i = 4; i < 16; i++)
        blk [i] = 0xff;
    cr_assert_eq (ggml_q4_K_to_q4_1_exact (blk, q41, 256), -1);
    cr_assert_eq (ggml_q4_K_to_q4_1_exact (blk, q41, 100), -1);
}
