/*  gpu.h: the GPU backend's C API, with no CUDA types.

    Everything outside gpu/ includes only this header, so the whole mesh
    builds and runs without CUDA: gpu_none.c implements it by reporting no
    device, and callers fall back to the CPU engine.

    The backend mirrors the engine's layer-range API (model.h) for the
    cloud-target, with two differences that matter on a GPU:
      1. Weights live on the device as fp16 (fp32 accumulation) or as int8
         with one fp32 scale per output channel (W8A8: activations are
         quantized per token to int8 on two levels, int32 accumulation,
         dequantization in the GEMM's epilogue). Verify-sized batches (<= 8
         positions a launch) run the backend's tensor-core GEMM
         (gpu_mma.cuh), larger ones cuBLASLt.
      2. One call evaluates many sessions at once: gpu_forward_batch takes a
         list of (session, pos, n positions) and runs them as one forward
         pass over all their positions; every session's keys and values live
         in one paged cache, fp16 (fp32 in format w8), in pages of page_size
         positions handed out as positions are appended and returned on
         truncate/close.
    Decode-sized batches (<= graph_max_tokens positions) replay a captured
    CUDA graph per batch size, so small models are not launch-bound.

    Threading: one gpu_model_t may be used by one thread at a time.
*/
#ifndef SPLITMESH_GPU_H
#define SPLITMESH_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Number of usable CUDA devices; 0 when built without CUDA, when no driver
//  is loaded, or when no device is present. Never fails otherwise.
int gpu_device_count (void);

//  Writes a one-line description of device 0 (name, memory, compute
//  capability) into buf. Returns 0, or -1 when there is no device.
int gpu_describe (char *buf, size_t size);

//  Runs a small end-to-end check on device 0: uploads data, runs a kernel
//  and a cuBLASLt GEMM, and compares with a CPU result. Returns 0 when the
//  device computes correctly, -1 with a message in err otherwise.
int gpu_selftest (char *err, size_t err_size);

//  --- the model backend ---------------------------------------------------

//  fp16: fp16 weights and GEMM inputs (fp32 accumulation).
//  w8a8: int8 weights, one fp32 scale per output channel; int8 activations,
//        one scale per token, on two levels (x ~ d (q1 + q2 / 256); one with
//        SPLITMESH_W8A8_ACT_LEVELS=1); int32 accumulation (tensor-core
//        mma for <= 8 positions, cuBLASLt above).
//  w8:   the CPU engine's w8 numerics (quant.h): int8 weights in groups of
//        32 columns with one fp16 scale each (a CPU w8 matrix's quants and
//        scales, bit for bit), int8 activations in groups of 32 with one
//        fp32 scale each (kernels.c's quantizer), per group an exact int32
//        dot product times d_w d_x. Own kernels only (no cuBLASLt): batches
//        above 8 positions take one pass over the weights per 8.
typedef enum { GPU_FMT_FP16 = 0, GPU_FMT_W8A8 = 1, GPU_FMT_W8 = 2, GPU_FMT_COUNT } gpu_fmt_t;

//  "fp16", "w8a8", "w8"; "?" otherwise. Static string.
const char *gpu_fmt_name (gpu_fmt_t fmt);
//  Parses "fp16" / "w8a8" / "w8". Returns 0 and sets *out, or -1 (out untouched).
int gpu_fmt_parse (const char *name, gpu_fmt_t *out);

typedef struct {
    gpu_fmt_t format;           //  weight format of the matrices
    int max_sessions;           //  session slots (>= 1)
    int max_ctx;                //  positions per session (>= 1, <= context_length)
    int max_tokens;             //  positions per gpu_forward_batch, all sessions together
    int page_size;              //  positions per KV page (>= 1)
    int n_pages;                //  pages in the pool; 0: enough for every slot at max_ctx
    bool use_graphs;            //  replay CUDA graphs for small batches
    int graph_max_tokens;       //  batches up to this many positions use graphs
    bool skinny_gemm;           //  own GEMM kernels for batches of <= 8 positions
} gpu_options_t;

//  fp16, 8 sessions, 1024 positions, 256 tokens a batch, pages of 16,
//  graphs on for batches up to 64 positions, skinny GEMMs on (off when
//  the environment has SPLITMESH_GPU_SKINNY=0).
gpu_options_t gpu_options_default (void);

typedef struct _gpu_model_t gpu_model_t;

//  Uploads a CPU model's loaded layers [first, last), and its embeddings
//  and head when loaded, converting its weights (as the CPU model holds
//  them, dequantized) to opts->format. The CPU model is only read and may
//  be destroyed afterwards. Returns NULL with a message in err (no device,
//  bad options, out of device memory). Caller owns the result and must
//  destroy it.
gpu_model_t *gpu_model_new_from_cpu (const model_t *cpu, const gpu_options_t *opts,
                                     char *err, size_t err_size);

//  A model of config's shape with every layer, embeddings and an untied
//  head, whose weights are generated on the device from seed (uniform
//  values scaled so activations keep unit size; norms 1). For benchmarks
//  of large shapes (Llama-3-8B) without a download. rope_freq_base is used
//  without llama3 frequency factors. Same ownership as above.
gpu_model_t *gpu_model_new_synthetic (const model_config_t *config, const gpu_options_t *opts,
                                      uint64_t seed, char *err, size_t err_size);

//  Frees the model and its device memory; sets *self_p to NULL. Safe on NULL.
void gpu_model_destroy (gpu_model_t **self_p);

const model_config_t *gpu_model_config (const gpu_model_t *self);
const gpu_options_t *gpu_model_options (const gpu_model_t *self);
//  Loaded layers [*first, *last); whether embeddings / head are loaded.
void gpu_model_range (const gpu_model_t *self, int *first, int *last, bool *embeddings, bool *head);
//  Bytes one forward pass must read at least: the layer matrices, their
//  scales and norms, and the head (not the embedding table, of which only
//  the batch's rows are read). The numerator of the bandwidth floor.
size_t gpu_model_stream_bytes (const gpu_model_t *self);
//  The message of the last failed call ("" when none). Valid until the next call.
const char *gpu_model_error (const gpu_model_t *self);
//  Turns graph replay on or off (cached graphs are kept). Returns 0.
int gpu_model_set_graphs (gpu_model_t *self, bool on);
//  Turns the skinny GEMM kernels (batches of <= 8 positions) on or off;
//  off, cuBLASLt does every product. Cached graphs are captured again.
//  Returns 0.
int gpu_model_set_skinny (gpu_model_t *self, bool on);
//  Tuning and measurement, for bench_gpu: "pdl" (0/1: programmatic
//  dependent launch between the forward's kernels), "mma_split" (warps a
//  16-row tile of the fp16 / w8a8 tensor-core GEMMs: 1, 2, 4, 8; 0 picks
//  by the matrix's size), "act_levels" (w8a8 only: 1 or 2 int8
//  activation levels), "split" and "split_ks" (w8's split skinny GEMM:
//  matrices of fewer rows than split, -1 the default, use split_ks warps
//  a 4-row group, 0 the default), "gqa" (0/1: attention a block per KV
//  head), "emit_max" (0/1, default 1: w8a8's attention and SwiGLU
//  reduce their row maxima as they write, and an element-wise kernel
//  quantizes), "res_ep" (0/1, default 1: fp16 and w8a8 add the o and down
//  products to the residual in the tensor-core GEMM's epilogue, and the
//  RMSNorm after them is element-wise), "att_lanes" (0/1, default 1: per-head attention a group of
//  lanes a cached position where head_dim is 32, 64, 128 or 256, else a
//  warp a position), "att_prefetch" (0/1, default 1: per-head attention asks L2
//  for the cached keys and values before its PDL wait), "prefetch" (bytes of each w8 skinny GEMM's weights prefetched
//  into L2 before it waits for its input, with pdl), "fuse" (0/1, default
//  1: RoPE and the KV cache writes in the tensor-core qkv GEMM's epilogue, SwiGLU in gate|up's,
//  fp16 attention writing the o GEMM's input; SPLITMESH_GPU_FUSE sets it
//  at load), "ablate" (measurement only: a mask of kernels left out of
//  every pass, bit i the i-th of attention, emit, emit_ffn, add_rmsnorm,
//  gemm_qkv, gemm_o, gemm_gate_up, gemm_down, gemm_head, head; a graphed
//  step without them shows what they cost; the results are then
//  meaningless), "profile" (0/1: forwards run ungraphed with an event after
//  every kernel; times summed per kernel; resets the table). Cached
//  graphs are captured again. Returns 0, or -1 on an unknown name or value.
int gpu_model_tune (gpu_model_t *self, const char *name, long value);
//  Prints the profile table (per kernel: calls, time, weight GB/s and its
//  share of copy_bw bytes/s) to f. Returns 0, or -1 when nothing was profiled.
int gpu_model_profile_print (const gpu_model_t *self, FILE *f, const char *title, double copy_bw);
//  Free pages in the KV pool, and the pool's size.
int gpu_model_free_pages (const gpu_model_t *self);
int gpu_model_total_pages (const gpu_model_t *self);

//  Opens a session (an empty KV cache). Returns its id (>= 0), or -1 when
//  every slot is in use.
int gpu_session_open (gpu_model_t *self);
//  Closes a session and returns its pages. Returns 0, or -1 on an unknown id.
int gpu_session_close (gpu_model_t *self, int session);
//  Forgets positions n_pos and later (rollback after rejected drafts);
//  n_pos beyond what the session holds changes nothing, < 0 counts as 0.
//  Returns 0, or -1 on an unknown id.
int gpu_session_truncate (gpu_model_t *self, int session, int n_pos);
//  Positions the session holds, or -1 on an unknown id.
int gpu_session_pos (const gpu_model_t *self, int session);

//  One session's part of a batch: positions pos .. pos + n - 1, where pos
//  must equal what the session holds (truncate first to roll back).
typedef struct {
    int session;
    int pos;
    int n;
    const int32_t *tokens;      //  n tokens (the model's embeddings), or NULL
    const float *x;             //  n x dim activations, when tokens is NULL
} gpu_seq_t;

//  Outputs of a batch, row t for the t-th position in sequence order
//  (all of seqs[0]'s positions, then seqs[1]'s, ...). Any may be NULL.
typedef struct {
    float *logits;              //  (total, vocab) head output
    int32_t *argmax;            //  (total) greedy token (lowest id on ties)
    float *probs;               //  (total, vocab) softmax (logits / temperature)
    float temperature;          //  > 0 when probs is asked for
    float *x;                   //  (total, dim) activations after the last layer
} gpu_out_t;

//  Evaluates every sequence's positions through the loaded layers and,
//  when loaded and asked for, the head, as one batched forward pass; each
//  position attends causally to its own session's cache. On success every
//  session holds pos + n positions. Returns 0, or -1 (gpu_model_error) on
//  an unknown or repeated session, a position mismatch, positions beyond
//  max_ctx, more than max_tokens positions, a token outside the
//  vocabulary, missing inputs, an output the model cannot give, the KV
//  pool running out, or a device error; on -1 no session changes.
int gpu_forward_batch (gpu_model_t *self, const gpu_seq_t *seqs, int n_seqs, const gpu_out_t *out);

//  Device memory bandwidth in bytes/s (bytes read plus bytes written),
//  measured with a device-to-device copy of `bytes` on random data, the
//  median of reps timed copies (CUDA events) after one warm-up. The
//  denominator of the bandwidth floor. Returns 0 on any failure.
double gpu_copy_bandwidth (size_t bytes, int reps);

//  Same, starting at layer first_layer of the loaded range [first, last)
//  (the cloud-target runs [L, N) for sessions that send activations and
//  [0, N) for those that send tokens, on one model). A session's cache is
//  only meaningful for the layers its calls run, so a session should keep
//  one first_layer. Tokens are accepted only from the first loaded layer
//  of a model with embeddings; activations always. One kind per batch.
int gpu_forward_batch_from (gpu_model_t *self, int first_layer, const gpu_seq_t *seqs, int n_seqs,
                            const gpu_out_t *out);

//  The head alone on n rows of final activations x (n x dim, as
//  gpu_forward_batch's out.x gives them): final RMSNorm, output projection
//  and, as asked in out, logits, argmax and probabilities (out.x must be
//  NULL). No session changes. For callers that run the layers and the head
//  as separate steps (the service's backend table); gpu_forward_batch with
//  head outputs does both in one pass. Returns 0, or -1 (gpu_model_error)
//  when the head is not loaded, n is outside [1, max_tokens] or on a
//  device error.
int gpu_model_head (gpu_model_t *self, const float *x, int n, const gpu_out_t *out);

//  Device memory in use (total minus free, whole device), in bytes; 0
//  without a device.
size_t gpu_memory_used (void);

#ifdef __cplusplus
}
#endif

#endif
