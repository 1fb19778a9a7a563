/*  quantize.h: tailored (mixed-precision) quantization of a llama GGUF file.

    `splitmesh quantize` gives each weight matrix the format that costs the
    model least quality for the bytes it takes, under a total byte budget:

      1. Sensitivity. The source model is loaded at F32 (its weights
         dequantized: for a Q4_1 file, "F32" means those dequantized weights).
         The baseline output distribution on a few calibration sequences is
         computed once, with every layer's input cached. Then, for each
         matrix and each candidate format, only that matrix is replaced by
         its quantized-then-dequantized values and the model re-run from that
         layer on; the sensitivity is the mean KL (baseline || perturbed) of
         the next-token distributions over all calibration positions.
      2. Assignment. Total KL is taken as the sum of the per-matrix KLs; a
         greedy multiple-choice knapsack starts from the cheapest format
         everywhere and repeatedly applies the upgrade with the largest KL
         decrease per added byte that still fits the budget.
      3. Writing. Metadata is copied; each matrix is quantized from the F32
         values with ggml's reference quantizers (standard GGUF types, so
         llama.cpp loads the file); other tensors (norms) are copied as is.

    Units. The engine fuses attn_q|attn_k|attn_v and ffn_gate|ffn_up into
    one matrix each, so those tensors share one format (the fused matrix
    then converts losslessly to the runtime); the units of a layer are
    attn_qkv, attn_output, ffn_gate_up and ffn_down, plus token_embd (and
    output when not tied).

    Candidate formats (per unit, those whose block divides the row):
    splitmesh W4G128 (W4, group 128, 4.25 bits/weight; only with
    allow_splitmesh_types, llama.cpp cannot load it), Q4_0 (W4, group 32,
    4.5), Q4_K (4.5, rows of 256), Q4_1 (W4, group 32, with min, 5.0),
    Q5_0 (5.5), Q5_1 (6.0), Q6_K (6.56, rows of 256), Q8_0 (8.5), F16.
    A candidate dearer than one that reproduces the unit's source values
    exactly (KL 0) cannot lower the KL and is not measured; F16 is taken as
    lossless.

    Calibration: calib_seqs x calib_len tokens (default 8 x 64 = 512) of the
    calibration text. With cache_path, every measured KL is appended to
    that file as it is measured and reused by later runs with the same
    model and calibration (one measurement for every budget, resumable).

    Budget: bytes of tensor data in the output file (metadata excluded),
    given as bytes ("90000000", "90MB", "86MiB") or as a compression ratio
    against the F32 size of the same tensors ("6x").
*/
#ifndef SPLITMESH_QUANTIZE_H
#define SPLITMESH_QUANTIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QUANTIZE_N_CANDIDATES 9
//  The candidate types, cheapest first: W4G128 (splitmesh's), Q4_0, Q4_K,
//  Q4_1, Q5_0, Q5_1, Q6_K, Q8_0, F16.
extern const int quantize_candidates[QUANTIZE_N_CANDIDATES];

typedef void (quantize_progress_fn) (void *arg, int done, int total, const char *what);

typedef struct {
    const char *calib_path;     //  calibration text; NULL: no measurement (KL = 0)
    int calib_seqs;             //  sequences (default 8)
    int calib_len;              //  tokens per sequence (default 64)
    int n_threads;              //  default 2
    bool allow_splitmesh_types; //  offer W4G128 (files llama.cpp cannot load)
    const char *cache_path;     //  optional sensitivity cache (read and appended)
    quantize_progress_fn *progress;     //  optional, called after each measurement
    void *progress_arg;
} quantize_options_t;

quantize_options_t quantize_options_default (void);

typedef struct _quantize_plan_t quantize_plan_t;

//  Opens the source model, and, with a calibration path, measures every
//  unit's sensitivity to every candidate format (the long part). Returns
//  NULL with a message in err on a bad model file, a bad calibration file
//  or too little calibration text. Caller owns the result and must destroy it.
quantize_plan_t *quantize_plan_new (const char *model_path, const quantize_options_t *opts,
                                    char *err, size_t err_size);

//  Frees the plan; sets *self_p to NULL. Safe on NULL.
void quantize_plan_destroy (quantize_plan_t **self_p);

//  Parses a budget ("6x", "5.5x", "90000000", "90MB", "86MiB") against the
//  plan's F32 size. Returns 0 and sets *bytes, or -1 with a message.
int quantize_parse_budget (const quantize_plan_t *self, const char *text, uint64_t *bytes,
                           char *err, size_t err_size);

//  Chooses a format per unit minimising total KL with tensor data of at most
//  budget bytes. Returns 0, or -1 with a message when even the cheapest
//  assignment does not fit.
int quantize_plan_assign (quantize_plan_t *self, uint64_t budget, char *err, size_t err_size);

//  Sets every unit to one ggml type (a candidate), e.g. uniform baselines.
//  Returns 0, or -1 for a type that is not a candidate or does not apply
//  to every unit (W4G128, Q4_K, Q6_K need rows of 128 / 256).
int quantize_plan_set_uniform (quantize_plan_t *self, int ggml_type);

//  Writes the GGUF for the current assignment. Returns 0, or -1 with a message.
int quantize_plan_write (quantize_plan_t *self, const char *out_path, char *err, size_t err_size);

//  Facts about the plan and its current assignment.
uint64_t quantize_plan_f32_bytes (const quantize_plan_t *self);     //  all tensors at F32
uint64_t quantize_plan_bytes (const quantize_plan_t *self);         //  tensor data as assigned
uint64_t quantize_plan_min_bytes (const quantize_plan_t *self);     //  cheapest assignment
double quantize_plan_kl (const quantize_plan_t *self);              //  sum of assigned KLs
int quantize_plan_calib_tokens (const quantize_plan_t *self);       //  tokens measured
int quantize_plan_unit_count (const quantize_plan_t *self);
const char *quantize_plan_unit_name (const quantize_plan_t *self, int unit);
//  KL of unit at candidate index c (order of quantize_candidates); NAN when
//  the candidate does not apply to the unit or was not measured (dominated).
double quantize_plan_unit_kl (const quantize_plan_t *self, int unit, int c);
//  Bytes of unit at candidate c; 0 when the candidate does not apply.
uint64_t quantize_plan_unit_bytes (const quantize_plan_t *self, int unit, int c);
//  Candidates measured in this run (not taken from the cache).
int quantize_plan_measured (const quantize_plan_t *self);
//  ggml type assigned to unit.
int quantize_plan_unit_type (const quantize_plan_t *self, int unit);

#ifdef __cplusplus
}
#endif

#endif
