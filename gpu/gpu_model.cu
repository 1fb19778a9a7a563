/*  gpu_model.cu: the CUDA cloud-target backend (gpu.h's model API).

    Why it is built this way:
      1. The rest of the mesh is C and must build without CUDA, so this file
         hides every CUDA type behind gpu_model_t.
      2. A verify step is a handful of positions per session, so the forward
         pass is bound by reading the weights once: all sessions' positions
         go through each GEMM together (one weight read for the batch).
         Up to 8 positions a launch the GEMM is the backend's own
         tensor-core kernel (gpu_mma.cuh) over a tiled copy of the weights,
         with RoPE / SwiGLU / dequantization in its epilogue; larger batches
         go through cuBLASLt. Everything between GEMMs is one small fused
         kernel per step (gpu_kernels.cuh).
      3. Small models are launch-bound (30 layers x 9 launches), so batches of
         up to graph_max_tokens positions are captured once per size as a
         CUDA graph and replayed; all per-batch inputs (tokens, positions,
         session slots, page tables) live in fixed device buffers that the
         graph reads.
      4. Sessions come and go and roll back rejected drafts, so the KV cache
         is paged: a pool of fixed-size pages per layer, handed out on
         append and returned on truncate or close; the page table is
         uploaded when it changes.

    Matrices are (out, in) row-major as in the engine, so for activations
    X (T x K) the product Y = X W^T is, in cuBLASLt's column-major terms,
    Y^T (N x T) = op_T(W as K x N) * X^T (K x T): the "TN" layout that the
    int8 tensor-core path requires.
*/
#include "gpu.h"
#include <type_traits>
#include "gpu_kernels.cuh"
#include "gpu_mma.cuh"
#include <cuda_runtime.h>
#include <cublasLt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

extern "C" {
#include "model_impl.h"
#include "kernels.h"
#include "quant.h"
}

//  One weight matrix on the device.
typedef struct {
    int rows, cols;             //  (out, in)
    int n;                      //  rows allocated and multiplied: rows rounded up to 8
    void *data;                 //  (n, cols) fp16 or int8; rows past `rows` are zero
    float *scale;               //  (n) per output channel (W8A8), else NULL
    __half *gscale;             //  (n, cols / 32) per group of 32 columns (W8), else NULL
    __half *gmin;               //  (n, cols / 32) per-group min (W8: w = d q + m), else NULL
    void *tiled;                //  fp16 / w8a8: the tensor-core GEMM's tiled copy (k_mma_tile), or NULL
} s_mat_t;

typedef struct {
    float *attn_norm, *ffn_norm;    //  (dim)
    s_mat_t wqkv, wo, wgu, wdown;
} s_layer_t;

//  A cached cuBLASLt plan for one GEMM shape.
typedef struct {
    int n, k, t;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} s_plan_t;

//  One label's share of the profiled forward passes.
typedef struct {
    const char *label;
    double ms;                  //  summed over every call
    long calls;
    size_t bytes;               //  weight bytes read, summed
} s_prof_t;

#define S_PROF_MAX 1024         //  launches recorded per forward
#define S_PDL_DEFAULT true
#define S_SPLIT_FP16 2
#define S_SPLIT_W8A8 2
#define S_SPLIT_W8 2
#define S_PREFETCH_MB_DEFAULT 0
#define S_TILED_DEFAULT true

typedef struct {
    bool open;
    int pos;                    //  positions held
    std::vector<int> *pages;    //  page ids, in position order
} s_session_t;

struct _gpu_model_t {
    model_config_t config;
    gpu_options_t opts;
    int first, last;            //  loaded layers
    bool has_embed, has_head;
    int run_first;              //  this call's first layer, relative to `first`
    bool run_tokens;            //  this call's inputs are tokens (else activations)
    size_t stream_bytes;
    char error[512];

    //  Weights.
    std::vector<s_layer_t> *layers;     //  (last - first)
    __half *embed;              //  (vocab, dim) or NULL
    float *output_norm;         //  (dim) or NULL
    s_mat_t output;             //  (vocab, dim)
    float *inv_freq;            //  (head_dim / 2)

    //  KV pool: per layer (n_pages, page_size, kv_dim) fp16.
    void *kcache, *vcache;      //  fp16, or fp32 for w8 (k_kv)
    size_t layer_stride;        //  elements per layer
    int max_blocks;             //  pages per session at max_ctx
    std::vector<int> *free_pages;
    s_session_t *sessions;      //  (max_sessions)
    int32_t *h_block_table;     //  (max_sessions, max_blocks), host mirror
    bool table_dirty;

    //  Batch buffers, for up to cap positions (cap = max_tokens rounded up to 4).
    int cap;
    int max_k;                  //  widest GEMM input
    float *x;                   //  (cap, dim) residual stream
    void *act;                  //  (cap, max_k) GEMM input, int8 or fp16
    float *xs;                  //  (cap) per-token activation scale
    float *xsum;                //  w8: (cap, groups) d * (256 sum q + sum q2) per group
    int8_t *act2;               //  two activation levels, else NULL. w8: the residual quants
                                //  (cap x max_k after act's); w8a8: a flag, its rows follow the
                                //  batch's first-level rows in act (k_emit_q)
    int act_levels;             //  w8: the CPU engine's (qmatrix_act_levels); w8a8: 2, or
                                //  SPLITMESH_W8A8_ACT_LEVELS=1
    bool planes;                //  w8a8: the last GEMM was cuBLASLt's: raw holds int32 sums (k_load)
    __half *act_h;              //  fp16: (cap, hidden) SwiGLU output of the fused gate|up GEMM
    float *xf;                  //  (cap, max_k) fp32 rows before int8 quantization
    void *raw;                  //  (cap, widest GEMM output) product: fp16, or fp32 dequantized,
                                //  or (w8a8 from cuBLASLt, 2 cap rows) int32 sums of both levels
    float *q, *att;             //  (cap, q_dim)
    float *amax;                //  w8a8: (layers, 4, cap) per token max |x| of the attention and
                                //  SwiGLU outputs, reduced by their producers (k_emit_max), and
                                //  max |x norm_w| of the residual after o and down (k_norm_emit)
    float *ss_part;             //  (cap, dim / 16) the residual epilogue's partial sums of x^2
    size_t amax_bytes;
    float *cos_t, *sin_t;       //  (max_ctx, head_dim / 2) RoPE's table by position
    float *logits;              //  (cap, vocab) when the head is loaded
    float *probs;               //  (cap, vocab)
    int32_t *argmax;            //  (cap)
    unsigned long long *head_key;       //  (cap) k_head's running best (value, index), zero between passes
    unsigned int *head_arrived;         //  (cap) k_head's blocks done, zero between passes
    int32_t *d_meta;            //  tokens | tok_pos | tok_slot, 3 x cap
    int32_t *d_block_table;     //  (max_sessions, max_blocks)
    int32_t *h_meta;            //  pinned staging for d_meta
    float *h_x;                 //  pinned staging for input activations (cap, dim)

    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_size;
    std::vector<s_plan_t> *plans;
    cudaGraphExec_t *graphs;    //  (graph_max_tokens + 1) by batch size, NULL until captured

    //  Tuning (gpu_model_tune): programmatic dependent launch between the
    //  forward's kernels, and how many bytes of each skinny GEMM's weights
    //  (in all) are prefetched into L2 before the GEMM waits for its input.
    bool pdl;
    int split_rows;             //  matrices of fewer rows run the split skinny kernel (0: never)
    int split_ks[GPU_FMT_COUNT];    //  its warps per row group, by format (2, 4, 8; 1: plain)
    bool attn_gqa;              //  attention one block per KV head (its query heads together)
    int fuse_rope;              //  RoPE + KV cache writes in the skinny qkv GEMM's epilogue,
                                //  the emit kernel in the per-head attention (fp16, w8a8)
    int mma_split;              //  warps a row tile of the tensor-core GEMMs (0: by size, s_mma_split)
    int mma_slots;              //  blocks of the tensor-core GEMM resident at once on the device
    bool tile_weights;          //  keep a tiled copy of each fp16 / w8a8 matrix (s_mat_tile)
    int mma_ld;                 //  how the tensor-core GEMM reads weights (k_mma_ld's LD)
    int gqa_min_blocks;         //  ... when t x n_kv_heads blocks reach this (2 an SM)
    bool pdl_next;              //  the next launch may chain on the previous kernel
    bool emit_max;              //  w8a8: producers reduce the row maxima, k_emit_max quantizes
    bool res_ep;                //  fp16, w8a8: residual add in the o / down GEMM's epilogue,
                                //  then an element-wise RMSNorm (k_norm_emit)
    bool att_lanes;             //  attention a group of lanes a position (k_attention_lanes)
    int att_prefetch;           //  attention asks L2 for the cached keys and values before its
                                //  PDL wait (k_att_prologue)
    size_t prefetch_budget;
    //  Measurement only (gpu_model_tune "ablate"): kernels left out of the
    //  pass, so a graphed step's time without them shows what they cost
    //  inside the graph; the results are then meaningless.
    long ablate;
    long hollow;                //  ... launched as empty kernels of the same grid (same mask)
    //  Profile (gpu_model_tune "profile"): one event after each launch of
    //  an ungraphed forward, times summed per label.
    bool prof;
    int n_ev;
    cudaEvent_t ev[S_PROF_MAX + 1];
    const char *ev_label[S_PROF_MAX + 1];
    size_t ev_bytes[S_PROF_MAX + 1];
    std::vector<s_prof_t> *prof_tab;
    int prof_steps;
};

static int
s_fail (gpu_model_t *self, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (self->error, sizeof self->error, fmt, args);
    va_end (args);
    return -1;
}

#define S_CUDA(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) \
    return s_fail (self, "%s: %s", #call, cudaGetErrorString (e_)); } while (0)
#define S_LT(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) \
    return s_fail (self, "%s: cublasLt status %d", #call, (int) s_); } while (0)
#define S_LAUNCH() do { cudaError_t e_ = cudaGetLastError (); if (e_ != cudaSuccess) \
    return s_fail (self, "kernel launch (line %d): %s", __LINE__, cudaGetErrorString (e_)); } while (0)

//  Profile: an event after the launch just made, with its label.
static void
s_mark (gpu_model_t *self, const char *label, size_t bytes)
{
    if (!self->prof || self->n_ev >= S_PROF_MAX)
        return;
    int i = ++self->n_ev;
    if (!self->ev[i] && cudaEventCreate (&self->ev[i]) != cudaSuccess)
        return;
    cudaEventRecord (self->ev[i], self->stream);
    self->ev_label[i] = label;
    self->ev_bytes[i] = bytes;
}

//  Matrices with fewer rows than this run the split skinny kernel: below
//  4 blocks of 32 rows an SM (o, down and qkv of the 8B shape on 132 SMs).
static int
s_split_rows_default (void)
{
    int dev = 0, n_sm = 132;
    if (cudaGetDevice (&dev) == cudaSuccess)
        cudaDeviceGetAttribute (&n_sm, cudaDevAttrMultiProcessorCount, dev);
    return 4 * n_sm * K_SK_WARPS * K_SK_ROWS;
}

//  Warps per row group of the split skinny GEMM, by format: measured on
//  an H200 (bench_gpu --profile, gpu/NOTES.md).
static int
s_split_ks_default (gpu_fmt_t f)
{
    return f == GPU_FMT_FP16 ? S_SPLIT_FP16 : f == GPU_FMT_W8A8 ? S_SPLIT_W8A8 : S_SPLIT_W8;
}

//  The empty kernel "hollow" launches in a kernel's place.
static __global__ void
k_hollow (void)
{
    K_PDL_SMALL ();
}

//  The kernels "ablate" leaves out, by label (bit i: s_ablate_labels[i]).
static const char *s_ablate_labels[] = { "attention", "emit", "emit_ffn", "add_rmsnorm", "gemm_qkv", "gemm_o",
                                         "gemm_gate_up", "gemm_down", "gemm_head", "head" };

static bool
s_ablated (const gpu_model_t *self, const char *label, long mask)
{
    for (size_t i = 0; mask && i < sizeof s_ablate_labels / sizeof s_ablate_labels[0]; i++)
        if ((mask >> i & 1) && !strcmp (label, s_ablate_labels[i]))
            return true;
    return false;
}

//  Launches kern: with PDL (programmatic stream serialization) when tuned
//  on and the previous operation was one of our kernels.
template <typename... P, typename... A>
static int
s_launch (gpu_model_t *self, const char *label, size_t bytes, void (*kern) (P...), dim3 grid, dim3 block,
          A... args)
{
    cudaLaunchConfig_t cfg;
    memset (&cfg, 0, sizeof cfg);
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = self->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = self->pdl && self->pdl_next && !self->prof ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx (&cfg, kern, ((P) args)...);
    if (e != cudaSuccess)
        return s_fail (self, "kernel launch (%s): %s", label, cudaGetErrorString (e));
    self->pdl_next = true;
    s_mark (self, label, bytes);
    return 0;
}

//  Launches a forward kernel, unless "ablate" leaves it out or "hollow"
//  puts an empty kernel of the same shape in its place (measurement).
template <typename... P, typename... A>
static int
s_go (gpu_model_t *self, const char *label, size_t bytes, void (*kern) (P...), dim3 grid, dim3 block,
      A... args)
{
    if (s_ablated (self, label, self->ablate))
        return 0;
    if (s_ablated (self, label, self->hollow))
        return s_launch (self, label, 0, k_hollow, grid, block);
    return s_launch (self, label, bytes, kern, grid, block, args...);
}

//  int8 weights (W8A8 or W8).
static bool
s_w8 (const gpu_model_t *self)
{
    return self->opts.format == GPU_FMT_W8A8 || self->opts.format == GPU_FMT_W8;
}

//  The CPU engine's w8: groups of 32 (gpu.h).
static bool
s_g32 (const gpu_model_t *self)
{
    return self->opts.format == GPU_FMT_W8;
}

extern "C" size_t
gpu_memory_used (void)
{
    size_t free_b = 0, total_b = 0;
    if (gpu_device_count () == 0 || cudaMemGetInfo (&free_b, &total_b) != cudaSuccess)
        return 0;
    return total_b - free_b;
}

//  --- weights ------------------------------------------------------------

static size_t
s_mat_bytes (const gpu_model_t *self, const s_mat_t *m)
{
    size_t n = (size_t) m->rows * m->cols;
    if (s_g32 (self))
        return n + (size_t) m->rows * (m->cols / 32) * 2 * sizeof (__half);
    return s_w8 (self) ? n + (size_t) m->rows * sizeof (float) : n * 2;
}

static int
s_mat_alloc (gpu_model_t *self, s_mat_t *m, int rows, int cols)
{
    m->rows = rows;
    m->cols = cols;
    m->n = (rows + 7) / 8 * 8;
    size_t n = (size_t) m->n * cols;
    S_CUDA (cudaMalloc (&m->data, s_w8 (self) ? n : n * 2));
    S_CUDA (cudaMemset (m->data, 0, s_w8 (self) ? n : n * 2));
    if (s_g32 (self)) {
        if (cols % 32)
            return s_fail (self, "w8 needs widths in groups of 32, got %d", cols);
        size_t g = (size_t) m->n * (cols / 32) * sizeof (__half);
        S_CUDA (cudaMalloc (&m->gscale, g));
        S_CUDA (cudaMemset (m->gscale, 0, g));
        S_CUDA (cudaMalloc (&m->gmin, g));
        S_CUDA (cudaMemset (m->gmin, 0, g));
    }
    else
    if (s_w8 (self)) {
        S_CUDA (cudaMalloc (&m->scale, (size_t) m->n * sizeof (float)));
        S_CUDA (cudaMemset (m->scale, 0, (size_t) m->n * sizeof (float)));
    }
    self->stream_bytes += s_mat_bytes (self, m);
    return 0;
}

//  The tiled copy of m's data for the tensor-core GEMM (gpu_mma.cuh),
//  when its rows are a multiple of 64 bytes.
static int
s_mat_tile (gpu_model_t *self, s_mat_t *m)
{
    size_t row_bytes = (size_t) m->cols * (s_w8 (self) ? 1 : 2);
    if (s_g32 (self) || !self->tile_weights || row_bytes % 64)
        return 0;
    size_t tiles = (size_t) (m->n + 15) / 16, bytes = tiles * 16 * row_bytes;
    S_CUDA (cudaMalloc (&m->tiled, bytes));
    k_mma_tile<<<1024, 256, 0, self->stream>>> ((const char *) m->data, (char *) m->tiled, m->n, row_bytes,
                                                 bytes / 16);
    S_LAUNCH ();
    return 0;
}

static void
s_mat_free (s_mat_t *m)
{
    cudaFree (m->tiled);
    m->tiled = NULL;
    cudaFree (m->data);
    cudaFree (m->scale);
    cudaFree (m->gscale);
    cudaFree (m->gmin);
    m->gmin = NULL;
    m->data = NULL;
    m->scale = NULL;
    m->gscale = NULL;
}

//  Uploads a CPU matrix: each row dequantized, then to fp16, or to int8
//  with scale max |w| / 127 (round to nearest even).
//  interleave: the stacked gate|up matrix (gate rows, then up rows) goes
//  up with gate i and up i as rows 2i and 2i + 1, so a tile's adjacent
//  rows are SwiGLU's pairs (the tensor-core GEMM's epilogue applies it).
static int
s_mat_upload (gpu_model_t *self, s_mat_t *m, const qmatrix_t *src, bool interleave = false)
{
    int rows = qmatrix_rows (src), cols = qmatrix_cols (src);
    auto src_row = [&] (int d) { return interleave ? (d % 2 ? rows / 2 + d / 2 : d / 2) : d; };
    if (s_mat_alloc (self, m, rows, cols))
        return -1;
    //  Converted in slabs of rows to bound host memory.
    int slab = 1024;
    std::vector<float> row (cols);
    std::vector<__half> hbuf (s_w8 (self) ? 0 : (size_t) slab * cols);
    std::vector<int8_t> qbuf (s_w8 (self) ? (size_t) slab * cols : 0);
    std::vector<float> sbuf (slab);
    int G = cols / 32;
    std::vector<__half> gbuf (s_g32 (self) ? (size_t) slab * G : 0);
    std::vector<__half> mbuf (s_g32 (self) ? (size_t) slab * G : 0);
    //  A CPU w8 matrix (quant.h: w = d q + m per group, lossless from
    //  Q4_1 / Q4_0 / Q8_0) is taken as it is: its quants, scales and mins.
    bool cpu_w8 = s_g32 (self) && src->fmt == QFMT_W8;
    for (int r0 = 0; r0 < rows; r0 += slab) {
        int nr = rows - r0 < slab ? rows - r0 : slab;
        for (int r = 0; r < nr; r++) {
            if (cpu_w8) {
                int sr = src_row (r0 + r);
                const int8_t *qs = (const int8_t *) (src->qs + (size_t) sr * src->qs_stride);
                const uint16_t *d = src->d + (size_t) sr * G, *mn = src->m + (size_t) sr * G;
                for (int g = 0; g < G; g++) {
                    for (int j = 0; j < 32; j++)
                        qbuf[(size_t) r * cols + g * 32 + j] = qs[kernels_w8_offset (G, g, j)];
                    __half_raw hd, hm;
                    hd.x = d[g];
                    hm.x = mn[g];
                    gbuf[(size_t) r * G + g] = __half (hd);
                    mbuf[(size_t) r * G + g] = __half (hm);
                }
                continue;
            }
            qmatrix_get_row (src, src_row (r0 + r), row.data ());
            if (s_g32 (self)) {
                //  quant.c's s_quant_group_w8: d = fp16 (amax / 127),
                //  q = rint (w / d). A CPU w8 row (w = d q exactly, some
                //  |q| = 127 per group) gives back its quants and scales.
                for (int g = 0; g < G; g++) {
                    const float *x = row.data () + (size_t) g * 32;
                    float amax = 0.0f;
                    for (int j = 0; j < 32; j++)
                        amax = fmaxf (amax, fabsf (x[j]));
                    __half d16 = __float2half (amax / 127.0f);
                    float d = __half2float (d16);
                    float id = d != 0.0f ? 1.0f / d : 0.0f;
                    for (int j = 0; j < 32; j++) {
                        long v = lrintf (x[j] * id);
                        qbuf[(size_t) r * cols + g * 32 + j] = (int8_t) (v < -127 ? -127 : v > 127 ? 127 : v);
                    }
                    gbuf[(size_t) r * G + g] = d16;
                    mbuf[(size_t) r * G + g] = __float2half (0.0f);
                }
            }
            else
            if (s_w8 (self)) {
                float amax = 0.0f;
                for (int c = 0; c < cols; c++)
                    amax = fmaxf (amax, fabsf (row[c]));
                float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
                for (int c = 0; c < cols; c++) {
                    float v = nearbyintf (row[c] / scale);
                    qbuf[(size_t) r * cols + c] = (int8_t) (v > 127 ? 127 : v < -127 ? -127 : v);
                }
                sbuf[r] = scale;
            }
            else
                for (int c = 0; c < cols; c++)
                    hbuf[(size_t) r * cols + c] = __float2half (row[c]);
        }
        if (s_w8 (self)) {
            S_CUDA (cudaMemcpy ((int8_t *) m->data + (size_t) r0 * cols, qbuf.data (),
                                (size_t) nr * cols, cudaMemcpyHostToDevice));
            if (s_g32 (self)) {
                S_CUDA (cudaMemcpy (m->gscale + (size_t) r0 * G, gbuf.data (), (size_t) nr * G * sizeof (__half),
                                    cudaMemcpyHostToDevice));
                S_CUDA (cudaMemcpy (m->gmin + (size_t) r0 * G, mbuf.data (), (size_t) nr * G * sizeof (__half),
                                    cudaMemcpyHostToDevice));
            }
            else
                S_CUDA (cudaMemcpy (m->scale + r0, sbuf.data (), nr * sizeof (float), cudaMemcpyHostToDevice));
        }
        else
            S_CUDA (cudaMemcpy ((__half *) m->data + (size_t) r0 * cols, hbuf.data (),
                                (size_t) nr * cols * 2, cudaMemcpyHostToDevice));
    }
    return s_mat_tile (self, m);
}

static int
s_upload_floats (gpu_model_t *self, float **dst, const float *src, size_t n)
{
    S_CUDA (cudaMalloc (dst, n * sizeof (float)));
    S_CUDA (cudaMemcpy (*dst, src, n * sizeof (float), cudaMemcpyHostToDevice));
    return 0;
}

//  Synthetic matrix: uniform values of amplitude sqrt (3 / cols), so a
//  unit-variance input gives unit-variance outputs.
static int
s_mat_synth (gpu_model_t *self, s_mat_t *m, int rows, int cols, uint64_t seed)
{
    if (s_mat_alloc (self, m, rows, cols))
        return -1;
    size_t n = (size_t) rows * cols;
    float amp = sqrtf (3.0f / cols);
    if (s_w8 (self)) {
        k_fill_int8<<<1024, 256, 0, self->stream>>> ((int8_t *) m->data, n, seed);
        S_LAUNCH ();
        if (s_g32 (self))
            k_fill_const_half<<<64, 256, 0, self->stream>>> (m->gscale, (size_t) rows * (cols / 32),
                                                             amp / 127.0f);
        else
            k_fill_const<<<64, 256, 0, self->stream>>> (m->scale, rows, amp / 127.0f);
    }
    else
        k_fill_half<<<1024, 256, 0, self->stream>>> ((__half *) m->data, n, seed, amp);
    S_LAUNCH ();
    return s_mat_tile (self, m);
}

static int
s_const_floats (gpu_model_t *self, float **dst, size_t n, float v)
{
    S_CUDA (cudaMalloc (dst, n * sizeof (float)));
    k_fill_const<<<64, 256, 0, self->stream>>> (*dst, n, v);
    S_LAUNCH ();
    self->stream_bytes += n * sizeof (float);
    return 0;
}

//  --- creation -----------------------------------------------------------

static gpu_model_t *
s_new (const model_config_t *config, const gpu_options_t *opts, int first, int last,
       bool embed, bool head, char *err, size_t err_size)
{
    if (gpu_device_count () == 0) {
        snprintf (err, err_size, "no CUDA device");
        return NULL;
    }
    const gpu_options_t *o = opts;
    const model_config_t *c = config;
    if (!o || o->format < 0 || o->format >= GPU_FMT_COUNT || o->max_sessions < 1
        || o->max_ctx < 1 || o->max_ctx > c->context_length || o->max_tokens < 1
        || o->page_size < 1 || o->n_pages < 0 || o->graph_max_tokens < 0) {
        snprintf (err, err_size, "bad GPU options (sessions %d, ctx %d of %d, tokens %d, page %d)",
                  o ? o->max_sessions : 0, o ? o->max_ctx : 0, c->context_length,
                  o ? o->max_tokens : 0, o ? o->page_size : 0);
        return NULL;
    }
    //  Matrices other than the head are not padded: their widths must
    //  suit the int8 tensor-core GEMM (multiples of 8).
    if (c->head_dim % 32 || c->head_dim > 256 || c->dim % 8 || c->hidden_dim % 8 || c->kv_dim % 8
        || c->n_heads % c->n_kv_heads) {
        snprintf (err, err_size, "unsupported shape for the GPU backend: head_dim %d (needs a "
                  "multiple of 32 up to 256), dim %d, hidden %d, kv_dim %d (need multiples of 8)",
                  c->head_dim, c->dim, c->hidden_dim, c->kv_dim);
        return NULL;
    }
    gpu_model_t *self = (gpu_model_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->config = *c;
    self->opts = *o;
    self->act_levels = qmatrix_act_levels (QFMT_W8) == 1 ? 1 : 2;
    if (o->format == GPU_FMT_W8A8) {
        const char *lv = getenv ("SPLITMESH_W8A8_ACT_LEVELS");
        self->act_levels = lv && atoi (lv) == 1 ? 1 : 2;
    }
    //  Tuning defaults; SPLITMESH_GPU_PDL=0 and SPLITMESH_GPU_PREFETCH_MB
    //  override them (gpu_model_tune at run time).
    {
        const char *pdl = getenv ("SPLITMESH_GPU_PDL");
        const char *pf = getenv ("SPLITMESH_GPU_PREFETCH_MB");
        self->pdl = pdl ? atoi (pdl) != 0 : S_PDL_DEFAULT;
        const char *fuse = getenv ("SPLITMESH_GPU_FUSE");
        self->fuse_rope = fuse ? atoi (fuse) : 1;
        self->prefetch_budget = (size_t) (pf ? atoi (pf) : S_PREFETCH_MB_DEFAULT) << 20;
        self->split_rows = s_split_rows_default ();
        for (int f = 0; f < GPU_FMT_COUNT; f++)
            self->split_ks[f] = s_split_ks_default ((gpu_fmt_t) f);
        self->attn_gqa = true;
        self->att_prefetch = 1;
        self->att_lanes = true;
        self->emit_max = true;
        const char *re = getenv ("SPLITMESH_GPU_RES_EP");
        self->res_ep = re ? atoi (re) != 0 : true;
        const char *tl = getenv ("SPLITMESH_GPU_TILED");
        self->tile_weights = tl ? atoi (tl) != 0 : S_TILED_DEFAULT;
        self->mma_ld = self->tile_weights ? 2 : 0;
        self->gqa_min_blocks = s_split_rows_default () / (2 * K_SK_WARPS * K_SK_ROWS);
    }
    self->prof_tab = new std::vector<s_prof_t> ();
    if (self->opts.graph_max_tokens > self->opts.max_tokens)
        self->opts.graph_max_tokens = self->opts.max_tokens;
    self->first = first;
    self->last = last;
    self->has_embed = embed;
    self->has_head = head;
    self->layers = new std::vector<s_layer_t> (last - first);
    memset (self->layers->data (), 0, sizeof (s_layer_t) * (last - first));
    self->plans = new std::vector<s_plan_t> ();
    self->free_pages = new std::vector<int> ();
    self->max_blocks = (self->opts.max_ctx + self->opts.page_size - 1) / self->opts.page_size;
    if (self->opts.n_pages == 0)
        self->opts.n_pages = self->opts.max_sessions * self->max_blocks;
    self->sessions = (s_session_t *) calloc (self->opts.max_sessions, sizeof (s_session_t));
    self->h_block_table = (int32_t *) calloc ((size_t) self->opts.max_sessions * self->max_blocks,
                                              sizeof (int32_t));
    self->graphs = (cudaGraphExec_t *) calloc (self->opts.graph_max_tokens + 1, sizeof (cudaGraphExec_t));
    if (!self->sessions || !self->h_block_table || !self->graphs) {
        snprintf (err, err_size, "out of memory");
        gpu_model_destroy (&self);
        return NULL;
    }
    for (int s = 0; s < self->opts.max_sessions; s++)
        self->sessions[s].pages = new std::vector<int> ();
    //  Lowest page ids handed out first.
    for (int p = self->opts.n_pages - 1; p >= 0; p--)
        self->free_pages->push_back (p);
    return self;
}

//  Device buffers, stream, cuBLASLt; after the weights' shapes are known.
static int
s_alloc_run (gpu_model_t *self)
{
    const model_config_t *c = &self->config;
    int q_dim = c->n_heads * c->head_dim;
    int n_layers = self->last - self->first;
    self->cap = (self->opts.max_tokens + 3) / 4 * 4;
    size_t cap = self->cap;
    self->max_k = c->dim > q_dim ? c->dim : q_dim;
    if (c->hidden_dim > self->max_k)
        self->max_k = c->hidden_dim;
    size_t max_n = (size_t) q_dim + 2 * c->kv_dim;
    if ((size_t) 2 * c->hidden_dim > max_n)
        max_n = 2 * c->hidden_dim;
    if (self->has_head && (size_t) self->output.n > max_n)
        max_n = self->output.n;
    if ((size_t) c->dim > max_n)
        max_n = c->dim;
    size_t ebytes = s_w8 (self) ? 4 : 2;

    self->layer_stride = (size_t) self->opts.n_pages * self->opts.page_size * c->kv_dim;
    size_t kv_bytes = self->layer_stride * (n_layers > 0 ? n_layers : 1)
                    * (s_g32 (self) ? sizeof (float) : sizeof (__half));
    S_CUDA (cudaMalloc (&self->kcache, kv_bytes));
    S_CUDA (cudaMalloc (&self->vcache, kv_bytes));
    S_CUDA (cudaMemset (self->kcache, 0, kv_bytes));
    S_CUDA (cudaMemset (self->vcache, 0, kv_bytes));

    S_CUDA (cudaMalloc (&self->x, cap * c->dim * sizeof (float)));
    S_CUDA (cudaMalloc (&self->act, cap * self->max_k * 2));
    size_t xs_n = s_g32 (self) ? cap * (self->max_k / 32 + 1) : cap;    //  per group (w8) or token
    //  w8: per group its scale, then (xs + xs_n) its sum d (256 sum q + sum q2).
    S_CUDA (cudaMalloc (&self->xs, (s_g32 (self) ? 2 : 1) * xs_n * sizeof (float)));
    if (s_g32 (self)) {
        self->xsum = self->xs + xs_n;
        //  act holds cap x max_k x 2 bytes: the second half is the residual level.
        self->act2 = self->act_levels == 2 ? (int8_t *) self->act + cap * self->max_k : NULL;
    }
    else
    if (s_w8 (self)) {
        //  act's 2 x cap x max_k bytes hold both levels' rows (k_emit_q).
        self->act2 = self->act_levels == 2 ? (int8_t *) self->act : NULL;
    }
    S_CUDA (cudaMalloc (&self->xf, cap * self->max_k * sizeof (float)));
    if (!s_w8 (self))
        S_CUDA (cudaMalloc (&self->act_h, cap * c->hidden_dim * sizeof (__half)));
    //  w8a8: cuBLASLt's int32 sums of both activation levels (2 cap rows).
    S_CUDA (cudaMalloc (&self->raw, (self->opts.format == GPU_FMT_W8A8 ? 2 : 1) * cap * max_n * ebytes));
    S_CUDA (cudaMalloc (&self->q, cap * q_dim * sizeof (float)));
    S_CUDA (cudaMalloc (&self->att, cap * q_dim * sizeof (float)));
    if (self->opts.format == GPU_FMT_W8A8) {
        self->amax_bytes = (size_t) (self->last - self->first) * 4 * cap * sizeof (float);
        S_CUDA (cudaMalloc (&self->amax, self->amax_bytes));
    }
    S_CUDA (cudaMalloc (&self->ss_part, cap * ((c->dim + 15) / 16) * sizeof (float)));
    S_CUDA (cudaMalloc (&self->cos_t, (size_t) self->opts.max_ctx * (c->head_dim / 2) * sizeof (float)));
    S_CUDA (cudaMalloc (&self->sin_t, (size_t) self->opts.max_ctx * (c->head_dim / 2) * sizeof (float)));
    S_CUDA (cudaMalloc (&self->argmax, cap * sizeof (int32_t)));
    S_CUDA (cudaMalloc (&self->head_key, cap * sizeof (unsigned long long)));
    S_CUDA (cudaMalloc (&self->head_arrived, cap * sizeof (unsigned int)));
    S_CUDA (cudaMemset (self->head_key, 0, cap * sizeof (unsigned long long)));
    S_CUDA (cudaMemset (self->head_arrived, 0, cap * sizeof (unsigned int)));
    S_CUDA (cudaMalloc (&self->d_meta, 3 * cap * sizeof (int32_t)));
    S_CUDA (cudaMalloc (&self->d_block_table,
                        (size_t) self->opts.max_sessions * self->max_blocks * sizeof (int32_t)));
    if (self->has_head) {
        S_CUDA (cudaMalloc (&self->logits, cap * c->vocab_size * sizeof (float)));
        S_CUDA (cudaMalloc (&self->probs, cap * c->vocab_size * sizeof (float)));
    }
    //  Padding rows of the GEMM inputs are read (batch sizes are rounded up
    //  to 4) but their products ignored: zero them once.
    S_CUDA (cudaMemset (self->act, 0, cap * self->max_k * 2));
    S_CUDA (cudaMemset (self->xs, 0, xs_n * sizeof (float)));
    S_CUDA (cudaMemset (self->d_meta, 0, 3 * cap * sizeof (int32_t)));
    S_CUDA (cudaMemset (self->d_block_table, 0,
                        (size_t) self->opts.max_sessions * self->max_blocks * sizeof (int32_t)));
    S_CUDA (cudaMallocHost (&self->h_meta, 3 * cap * sizeof (int32_t)));
    S_CUDA (cudaMallocHost (&self->h_x, cap * c->dim * sizeof (float)));

    if (!self->stream)
        S_CUDA (cudaStreamCreateWithFlags (&self->stream, cudaStreamNonBlocking));
    k_rope_table<<<self->opts.max_ctx, 64, 0, self->stream>>> (self->inv_freq, self->cos_t, self->sin_t,
                                                               c->head_dim / 2);
    S_LAUNCH ();
    S_CUDA (cudaStreamSynchronize (self->stream));
    {
        int dev = 0, n_sm = 0, per_sm = 0;
        S_CUDA (cudaGetDevice (&dev));
        S_CUDA (cudaDeviceGetAttribute (&n_sm, cudaDevAttrMultiProcessorCount, dev));
        S_CUDA (s_w8 (self)
                ? cudaOccupancyMaxActiveBlocksPerMultiprocessor (&per_sm, k_mma_gemm<1, 5, K_MMA_WARPS, 2>,
                                                                 K_MMA_WARPS * 32, 0)
                : cudaOccupancyMaxActiveBlocksPerMultiprocessor (&per_sm, k_mma_gemm<0, 5, K_MMA_WARPS, 2>,
                                                                 K_MMA_WARPS * 32, 0));
        self->mma_slots = n_sm * per_sm;
    }
    S_LT (cublasLtCreate (&self->lt));
    self->workspace_size = 32u << 20;
    S_CUDA (cudaMalloc (&self->workspace, self->workspace_size));
    return 0;
}

//  The GEMM plan for an (n outputs, k inputs, t tokens) product.
static s_plan_t *
s_plan (gpu_model_t *self, int n, int k, int t)
{
    for (size_t i = 0; i < self->plans->size (); i++) {
        s_plan_t *p = &(*self->plans)[i];
        if (p->n == n && p->k == k && p->t == t)
            return p;
    }
    s_plan_t p;
    memset (&p, 0, sizeof p);
    p.n = n;
    p.k = k;
    p.t = t;
    bool w8 = s_w8 (self);
    cudaDataType_t in_t = w8 ? CUDA_R_8I : CUDA_R_16F, out_t = w8 ? CUDA_R_32I : CUDA_R_16F;
    cublasComputeType_t ct = w8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F;
    cudaDataType_t st = w8 ? CUDA_R_32I : CUDA_R_32F;
    cublasOperation_t trans_a = CUBLAS_OP_T;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t s = cublasLtMatmulDescCreate (&p.op, ct, st);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute (p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate (&p.la, in_t, k, n, k);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate (&p.lb, in_t, k, t, k);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate (&p.lc, out_t, n, t, n);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceCreate (&pref);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute (pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &self->workspace_size, sizeof self->workspace_size);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic (self->lt, p.op, p.la, p.lb, p.lc, p.lc, pref, 1, &res, &found);
    if (pref)
        cublasLtMatmulPreferenceDestroy (pref);
    if (s != CUBLAS_STATUS_SUCCESS || found == 0) {
        s_fail (self, "no cuBLASLt %s GEMM for n %d, k %d, t %d (status %d)",
                w8 ? "int8" : "fp16", n, k, t, (int) s);
        if (p.la) cublasLtMatrixLayoutDestroy (p.la);
        if (p.lb) cublasLtMatrixLayoutDestroy (p.lb);
        if (p.lc) cublasLtMatrixLayoutDestroy (p.lc);
        if (p.op) cublasLtMatmulDescDestroy (p.op);
        return NULL;
    }
    p.algo = res.algo;
    self->plans->push_back (p);
    return &self->plans->back ();
}

//  Launches the skinny GEMM for t <= K_SKINNY_MAX_T tokens.
//  Bytes of each row of W prefetched before the skinny GEMM's wait: the
//  prefetch budget spread evenly over the rows, whole 128-byte lines.
static int
s_prefetch_row_bytes (const gpu_model_t *self, const s_mat_t *W, size_t row_bytes)
{
    if (!self->pdl || !self->prefetch_budget)
        return 0;
    size_t per = self->prefetch_budget / (size_t) W->n / 128 * 128;
    return (int) (per < row_bytes ? per : row_bytes);
}

//  Warps per row group of the skinny GEMM over W (1: plain form), and its
//  blocks.
static int
s_skinny_blocks (const gpu_model_t *self, const s_mat_t *W, int *split)
{
    *split = W->n < self->split_rows ? self->split_ks[self->opts.format] : 1;
    int rows_per_block = K_SK_WARPS / *split * K_SK_ROWS;
    return (W->n + rows_per_block - 1) / rows_per_block;
}

#define S_SPLIT_PICK(K, T) (split == 8 ? K<T, 8> : split == 4 ? K<T, 4> : split == 2 ? K<T, 2> : K<T, 1>)

//  Warps a row tile of 16 for the tensor-core GEMM over W: 8, the most,
//  unless the matrix's blocks would then need a second, partial wave that
//  4 (two tiles a block, half the blocks) avoid: w8a8 qkv of the 8B shape,
//  384 tiles at 2 blocks an SM (264). Measured on an H100 (bench_gpu
//  --profile, gpu/NOTES.md session 3): with fewer warps each walks a
//  longer stretch of its rows, and the 8B verify got slower at every step
//  down (fp16 6.26 / 7.18 / 9.88 / 15.6 ms at 8 / 4 / 2 / 1 for all).
static int
s_mma_split (const gpu_model_t *self, const s_mat_t *W)
{
    if (self->mma_split)
        return self->mma_split;
    int tiles = (W->n + 15) / 16;
    if (self->mma_slots > 0 && tiles > self->mma_slots && (tiles + 1) / 2 <= self->mma_slots)
        return K_MMA_WARPS / 2;
    return K_MMA_WARPS;
}

//  Rows a block of the tensor-core GEMM over W, and its blocks.
static int
s_mma_rows (const gpu_model_t *self, const s_mat_t *W)
{
    return 16 * (K_MMA_WARPS / s_mma_split (self, W));
}

static int
s_mma_blocks (const gpu_model_t *self, const s_mat_t *W)
{
    return (W->n + s_mma_rows (self, W) - 1) / s_mma_rows (self, W);
}

#define S_MMA_PICK_LD(F, T, LD) (split == 8 ? k_mma_gemm<F, T, 8, LD> : split == 4 ? k_mma_gemm<F, T, 4, LD> \
                                 : split == 2 ? k_mma_gemm<F, T, 2, LD> : k_mma_gemm<F, T, 1, LD>)
#define S_MMA_PICK(F, T) (ld == 2 ? S_MMA_PICK_LD (F, T, 2) : ld == 1 ? S_MMA_PICK_LD (F, T, 1) \
                          : S_MMA_PICK_LD (F, T, 0))

//  The tensor-core GEMM (gpu_mma.cuh) for tokens t0 .. t0 + T - 1 of a
//  batch of t: fp16, or w8a8 with its products dequantized to fp32 (the
//  second activation level's rows start at the batch rounded up to 4).
template <int T>
static int
s_skinny (gpu_model_t *self, const s_mat_t *W, int t, int t0, const char *label, const k_rope_ep *rope,
          const void *in)
{
    k_rope_ep ep;
    memset (&ep, 0, sizeof ep);
    if (rope) {
        ep = *rope;
        ep.t0 = t0;
    }
    int split = s_mma_split (self, W);
    int ld = W->tiled ? self->mma_ld : self->mma_ld == 2 ? 0 : self->mma_ld;
    const void *wdata = ld == 2 ? W->tiled : W->data;
    int blocks = s_mma_blocks (self, W);
    if (s_w8 (self)) {
        int P = (t + 3) / 4 * 4;
        const int8_t *X = (const int8_t *) in + (size_t) t0 * W->cols;
        const int8_t *X2 = self->act2 ? (const int8_t *) in + (size_t) (P + t0) * W->cols : NULL;
        return s_go (self, label, s_mat_bytes (self, W), S_MMA_PICK (1, T), dim3 (blocks), dim3 (K_MMA_WARPS * 32),
                     wdata, (const float *) W->scale, (const void *) X, (const void *) X2,
                     (const float *) self->xs + t0, (void *) ((float *) self->raw + (size_t) t0 * W->n),
                     W->n, W->cols, ep);
    }
    return s_go (self, label, s_mat_bytes (self, W), S_MMA_PICK (0, T), dim3 (blocks), dim3 (K_MMA_WARPS * 32),
                 wdata, (const float *) NULL,
                 (const void *) ((const __half *) in + (size_t) t0 * W->cols), (const void *) NULL,
                 (const float *) NULL, (void *) ((__half *) self->raw + (size_t) t0 * W->n), W->n, W->cols, ep);
}

//  raw (t x W.n) = act (t x W.cols) W^T, in the model's format: the
//  skinny kernel for verify-sized batches, cuBLASLt otherwise (its batch
//  rounded up to 4 tokens; the padding rows of act are finite).
//  The w8 product: the group-wise skinny kernel, 8 positions a launch.
template <int T>
static int
s_skinny_g32 (gpu_model_t *self, const s_mat_t *W, int t0, const char *label)
{
    int split;
    int blocks = s_skinny_blocks (self, W, &split);
    int pf = s_prefetch_row_bytes (self, W, (size_t) W->cols);
    return s_go (self, label, s_mat_bytes (self, W), S_SPLIT_PICK (k_skinny_i8g, T),
                 dim3 (blocks), dim3 (K_SK_WARPS * 32),
                 (const int8_t *) W->data, (const __half *) W->gscale, (const __half *) W->gmin,
                 (const int8_t *) self->act + (size_t) t0 * W->cols,
                 (const int8_t *) (self->act2 ? self->act2 + (size_t) t0 * W->cols : NULL),
                 (const float *) self->xs + (size_t) t0 * (W->cols / 32),
                 (const float *) self->xsum + (size_t) t0 * (W->cols / 32),
                 (float *) self->raw + (size_t) t0 * W->n, W->n, W->cols, pf);
}

static int
s_gemm_g32 (gpu_model_t *self, const s_mat_t *W, int t, const char *label)
{
    int rc = 0;
    for (int t0 = 0; t0 < t; t0 += K_SKINNY_MAX_T) {
        switch (t - t0 < K_SKINNY_MAX_T ? t - t0 : K_SKINNY_MAX_T) {
            case 1: rc = s_skinny_g32<1> (self, W, t0, label); break;
            case 2: rc = s_skinny_g32<2> (self, W, t0, label); break;
            case 3: rc = s_skinny_g32<3> (self, W, t0, label); break;
            case 4: rc = s_skinny_g32<4> (self, W, t0, label); break;
            case 5: rc = s_skinny_g32<5> (self, W, t0, label); break;
            case 6: rc = s_skinny_g32<6> (self, W, t0, label); break;
            case 7: rc = s_skinny_g32<7> (self, W, t0, label); break;
            default: rc = s_skinny_g32<8> (self, W, t0, label); break;
        }
        if (rc)
            return -1;
    }
    return 0;
}

//  rope (qkv only, may be NULL): the skinny kernels' RoPE + KV cache
//  epilogue; *fused says whether it ran (else the caller runs qkv_rope).
//  in: the input activations (default act).
static int
s_gemm (gpu_model_t *self, const s_mat_t *W, int t, const char *label, const k_rope_ep *rope = NULL,
        bool *fused = NULL, const void *in = NULL)
{
    if (!in)
        in = self->act;
    int rc = 0;
    if (fused)
        *fused = false;
    self->planes = false;
    if (s_g32 (self))
        return s_gemm_g32 (self, W, t, label);
    //  fp16 up to 16 positions also runs the skinny kernel, 8 positions a
    //  launch: each row's product is then the one it gets alone (cuBLASLt
    //  sums in another order), so a verify of up to 15 drafts gives the
    //  one-position steps' results bit for bit (int8 products are exact
    //  either way).
    int max_t = s_w8 (self) ? K_SKINNY_MAX_T : 2 * K_SKINNY_MAX_T;
    size_t row_bytes = (size_t) W->cols * (s_w8 (self) ? 1 : 2);
    if (self->opts.skinny_gemm && t <= max_t && row_bytes % 64 == 0) {
        for (int t0 = 0; t0 < t; t0 += K_SKINNY_MAX_T) {
            switch (t - t0 < K_SKINNY_MAX_T ? t - t0 : K_SKINNY_MAX_T) {
                case 1: rc = s_skinny<1> (self, W, t, t0, label, rope, in); break;
                case 2: rc = s_skinny<2> (self, W, t, t0, label, rope, in); break;
                case 3: rc = s_skinny<3> (self, W, t, t0, label, rope, in); break;
                case 4: rc = s_skinny<4> (self, W, t, t0, label, rope, in); break;
                case 5: rc = s_skinny<5> (self, W, t, t0, label, rope, in); break;
                case 6: rc = s_skinny<6> (self, W, t, t0, label, rope, in); break;
                case 7: rc = s_skinny<7> (self, W, t, t0, label, rope, in); break;
                default: rc = s_skinny<8> (self, W, t, t0, label, rope, in); break;
            }
            if (rc)
                return -1;
        }
        if (fused)
            *fused = rope != NULL;
        return 0;
    }
    int P = (t + 3) / 4 * 4;
    //  w8a8: both activation levels in one product of 2P columns (their
    //  rows are contiguous in act), int32 sums that the consumer
    //  dequantizes as the tensor-core GEMM does it (k_load).
    int cols = s_w8 (self) && self->act2 ? 2 * P : P;
    s_plan_t *p = s_plan (self, W->n, W->cols, cols);
    if (!p)
        return -1;
    if (s_w8 (self)) {
        int32_t alpha = 1, beta = 0;
        S_LT (cublasLtMatmul (self->lt, p->op, &alpha, W->data, p->la, in, p->lb, &beta,
                              self->raw, p->lc, self->raw, p->lc, &p->algo,
                              self->workspace, self->workspace_size, self->stream));
        self->planes = true;
    }
    else {
        float alpha = 1.0f, beta = 0.0f;
        S_LT (cublasLtMatmul (self->lt, p->op, &alpha, W->data, p->la, in, p->lb, &beta,
                              self->raw, p->lc, self->raw, p->lc, &p->algo,
                              self->workspace, self->workspace_size, self->stream));
    }
    self->pdl_next = false;     //  cuBLASLt's launches are not ours to chain on
    s_mark (self, label, s_mat_bytes (self, W));
    return 0;
}

static void
s_free_all (gpu_model_t *self)
{
    if (self->layers) {
        for (size_t i = 0; i < self->layers->size (); i++) {
            s_layer_t *L = &(*self->layers)[i];
            cudaFree (L->attn_norm);
            cudaFree (L->ffn_norm);
            s_mat_free (&L->wqkv);
            s_mat_free (&L->wo);
            s_mat_free (&L->wgu);
            s_mat_free (&L->wdown);
        }
        delete self->layers;
    }
    cudaFree (self->embed);
    cudaFree (self->output_norm);
    s_mat_free (&self->output);
    cudaFree (self->inv_freq);
    cudaFree (self->kcache);
    cudaFree (self->vcache);
    cudaFree (self->x);
    cudaFree (self->act);
    cudaFree (self->xs);
    cudaFree (self->xf);
    cudaFree (self->raw);
    cudaFree (self->q);
    cudaFree (self->att);
    cudaFree (self->amax);
    cudaFree (self->ss_part);
    cudaFree (self->act_h);
    cudaFree (self->cos_t);
    cudaFree (self->sin_t);
    cudaFree (self->logits);
    cudaFree (self->probs);
    cudaFree (self->argmax);
    cudaFree (self->head_key);
    cudaFree (self->head_arrived);
    cudaFree (self->d_meta);
    cudaFree (self->d_block_table);
    cudaFree (self->workspace);
    if (self->h_meta)
        cudaFreeHost (self->h_meta);
    if (self->h_x)
        cudaFreeHost (self->h_x);
    if (self->plans) {
        for (size_t i = 0; i < self->plans->size (); i++) {
            s_plan_t *p = &(*self->plans)[i];
            cublasLtMatrixLayoutDestroy (p->la);
            cublasLtMatrixLayoutDestroy (p->lb);
            cublasLtMatrixLayoutDestroy (p->lc);
            cublasLtMatmulDescDestroy (p->op);
        }
        delete self->plans;
    }
    if (self->graphs) {
        for (int i = 0; i <= self->opts.graph_max_tokens; i++)
            if (self->graphs[i])
                cudaGraphExecDestroy (self->graphs[i]);
        free (self->graphs);
    }
    for (int i = 0; i <= S_PROF_MAX; i++)
        if (self->ev[i])
            cudaEventDestroy (self->ev[i]);
    delete self->prof_tab;
    if (self->lt)
        cublasLtDestroy (self->lt);
    if (self->stream)
        cudaStreamDestroy (self->stream);
    if (self->sessions) {
        for (int s = 0; s < self->opts.max_sessions; s++)
            delete self->sessions[s].pages;
        free (self->sessions);
    }
    delete self->free_pages;
    free (self->h_block_table);
}

extern "C" void
gpu_model_destroy (gpu_model_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gpu_model_t *self = *self_p;
    if (self->stream)
        cudaStreamSynchronize (self->stream);
    s_free_all (self);
    free (self);
    *self_p = NULL;
}

//  Fails creation: copies the message, destroys the half-built model.
static gpu_model_t *
s_abort (gpu_model_t **self_p, char *err, size_t err_size)
{
    snprintf (err, err_size, "%s", (*self_p)->error);
    gpu_model_destroy (self_p);
    return NULL;
}

extern "C" gpu_model_t *
gpu_model_new_from_cpu (const model_t *cpu, const gpu_options_t *opts, char *err, size_t err_size)
{
    if (!cpu) {
        snprintf (err, err_size, "no CPU model given");
        return NULL;
    }
    const model_options_t *mo = model_options (cpu);
    const model_weights_t *w = &cpu->w;
    bool embed = w->token_embd != NULL, head = w->output != NULL;
    gpu_model_t *self = s_new (model_config (cpu), opts, mo->first_layer, mo->last_layer,
                               embed, head, err, err_size);
    if (!self)
        return NULL;
    const model_config_t *c = &self->config;
    if (cudaStreamCreateWithFlags (&self->stream, cudaStreamNonBlocking) != cudaSuccess) {
        s_fail (self, "cannot create a CUDA stream");
        return s_abort (&self, err, err_size);
    }
    for (int l = self->first; l < self->last; l++) {
        const model_layer_t *src = &w->layers[l];
        s_layer_t *L = &(*self->layers)[l - self->first];
        if (s_upload_floats (self, &L->attn_norm, src->attn_norm, c->dim)
            || s_upload_floats (self, &L->ffn_norm, src->ffn_norm, c->dim)
            || s_mat_upload (self, &L->wqkv, src->wqkv)
            || s_mat_upload (self, &L->wo, src->wo)
            || s_mat_upload (self, &L->wgu, src->w_gate_up, true)
            || s_mat_upload (self, &L->wdown, src->w_down))
            return s_abort (&self, err, err_size);
        self->stream_bytes += 2 * (size_t) c->dim * sizeof (float);
    }
    if (embed) {
        std::vector<__half> table ((size_t) c->vocab_size * c->dim);
        std::vector<float> row (c->dim);
        for (int r = 0; r < c->vocab_size; r++) {
            qmatrix_get_row (w->token_embd, r, row.data ());
            for (int i = 0; i < c->dim; i++)
                table[(size_t) r * c->dim + i] = __float2half (row[i]);
        }
        if (cudaMalloc (&self->embed, table.size () * 2) != cudaSuccess
            || cudaMemcpy (self->embed, table.data (), table.size () * 2, cudaMemcpyHostToDevice) != cudaSuccess) {
            s_fail (self, "cannot upload the embeddings (%zu bytes)", table.size () * 2);
            return s_abort (&self, err, err_size);
        }
    }
    if (head) {
        if (s_upload_floats (self, &self->output_norm, w->output_norm, c->dim)
            || s_mat_upload (self, &self->output, w->output))
            return s_abort (&self, err, err_size);
        self->stream_bytes += (size_t) c->dim * sizeof (float);
    }
    if (s_upload_floats (self, &self->inv_freq, w->rope_inv_freq, c->head_dim / 2)
        || s_alloc_run (self))
        return s_abort (&self, err, err_size);
    return self;
}

extern "C" gpu_model_t *
gpu_model_new_synthetic (const model_config_t *config, const gpu_options_t *opts, uint64_t seed,
                         char *err, size_t err_size)
{
    if (!config || config->dim < 1 || config->n_layers < 0 || config->n_heads < 1
        || config->n_kv_heads < 1 || config->vocab_size < 1 || config->hidden_dim < 1
        || config->head_dim * config->n_heads != config->dim
        || config->kv_dim != config->n_kv_heads * config->head_dim) {
        snprintf (err, err_size, "bad synthetic model config");
        return NULL;
    }
    gpu_model_t *self = s_new (config, opts, 0, config->n_layers, true, true, err, err_size);
    if (!self)
        return NULL;
    const model_config_t *c = &self->config;
    self->config.tied_head = false;
    self->config.has_rope_factors = false;
    if (cudaStreamCreateWithFlags (&self->stream, cudaStreamNonBlocking) != cudaSuccess) {
        s_fail (self, "cannot create a CUDA stream");
        return s_abort (&self, err, err_size);
    }
    int q_dim = c->n_heads * c->head_dim;
    uint64_t id = seed * 1000003ull;
    for (int l = 0; l < c->n_layers; l++) {
        s_layer_t *L = &(*self->layers)[l];
        if (s_const_floats (self, &L->attn_norm, c->dim, 1.0f)
            || s_const_floats (self, &L->ffn_norm, c->dim, 1.0f)
            || s_mat_synth (self, &L->wqkv, q_dim + 2 * c->kv_dim, c->dim, ++id)
            || s_mat_synth (self, &L->wo, c->dim, q_dim, ++id)
            || s_mat_synth (self, &L->wgu, 2 * c->hidden_dim, c->dim, ++id)
            || s_mat_synth (self, &L->wdown, c->dim, c->hidden_dim, ++id))
            return s_abort (&self, err, err_size);
    }
    size_t n_embed = (size_t) c->vocab_size * c->dim;
    if (cudaMalloc (&self->embed, n_embed * 2) != cudaSuccess) {
        s_fail (self, "out of device memory for the embeddings");
        return s_abort (&self, err, err_size);
    }
    k_fill_half<<<1024, 256, 0, self->stream>>> (self->embed, n_embed, ++id, 1.0f);
    std::vector<float> inv (c->head_dim / 2);
    for (int i = 0; i < c->head_dim / 2; i++)
        inv[i] = (float) (1.0 / pow ((double) c->rope_freq_base, 2.0 * i / c->head_dim));
    if (s_const_floats (self, &self->output_norm, c->dim, 1.0f)
        || s_mat_synth (self, &self->output, c->vocab_size, c->dim, ++id)
        || s_upload_floats (self, &self->inv_freq, inv.data (), inv.size ())
        || s_alloc_run (self))
        return s_abort (&self, err, err_size);
    if (cudaStreamSynchronize (self->stream) != cudaSuccess) {
        s_fail (self, "generating weights failed: %s", cudaGetErrorString (cudaGetLastError ()));
        return s_abort (&self, err, err_size);
    }
    return self;
}

extern "C" const model_config_t *
gpu_model_config (const gpu_model_t *self)
{
    return &self->config;
}

extern "C" const gpu_options_t *
gpu_model_options (const gpu_model_t *self)
{
    return &self->opts;
}

extern "C" void
gpu_model_range (const gpu_model_t *self, int *first, int *last, bool *embeddings, bool *head)
{
    if (first) *first = self->first;
    if (last) *last = self->last;
    if (embeddings) *embeddings = self->has_embed;
    if (head) *head = self->has_head;
}

extern "C" size_t
gpu_model_stream_bytes (const gpu_model_t *self)
{
    return self->stream_bytes;
}

extern "C" const char *
gpu_model_error (const gpu_model_t *self)
{
    return self->error;
}

extern "C" int
gpu_model_set_graphs (gpu_model_t *self, bool on)
{
    self->opts.use_graphs = on;
    return 0;
}

static void
s_drop_graphs (gpu_model_t *self)
{
    cudaStreamSynchronize (self->stream);
    for (int i = 0; i <= self->opts.graph_max_tokens; i++)
        if (self->graphs[i]) {
            cudaGraphExecDestroy (self->graphs[i]);
            self->graphs[i] = NULL;
        }
}

extern "C" int
gpu_model_tune (gpu_model_t *self, const char *name, long value)
{
    if (!name)
        return s_fail (self, "gpu_model_tune: no name");
    if (!strcmp (name, "pdl"))
        self->pdl = value != 0;
    else if (!strcmp (name, "split"))
        self->split_rows = value < 0 ? s_split_rows_default () : (int) value;
    else if (!strcmp (name, "split_ks")) {
        if (value != 0 && value != 1 && value != 2 && value != 4 && value != 8)
            return s_fail (self, "gpu_model_tune: split_ks is 1, 2, 4 or 8, or 0 for the default (got %ld)",
                           value);
        self->split_ks[self->opts.format] = value ? (int) value : s_split_ks_default (self->opts.format);
    }
    else if (!strcmp (name, "emit_max"))
        self->emit_max = value != 0;
    else if (!strcmp (name, "res_ep"))
        self->res_ep = value != 0;
    else if (!strcmp (name, "att_lanes"))
        self->att_lanes = value != 0;
    else if (!strcmp (name, "att_prefetch"))
        self->att_prefetch = value != 0;
    else if (!strcmp (name, "gqa"))
        self->attn_gqa = value != 0;
    else if (!strcmp (name, "fuse"))
        self->fuse_rope = (int) value;
    else if (!strcmp (name, "mma_split")) {
        if (value != 0 && value != 1 && value != 2 && value != 4 && value != 8)
            return s_fail (self, "gpu_model_tune: mma_split is 1, 2, 4 or 8, or 0 for the default (got %ld)",
                           value);
        self->mma_split = (int) value;
    }
    else if (!strcmp (name, "mma_ld")) {
        if (value < 0 || value > 2)
            return s_fail (self, "gpu_model_tune: mma_ld is 0, 1 or 2 (got %ld)", value);
        self->mma_ld = (int) value;
    }
    else if (!strcmp (name, "act_levels")) {
        if (self->opts.format != GPU_FMT_W8A8 || (value != 1 && value != 2))
            return s_fail (self, "gpu_model_tune: act_levels is 1 or 2, for w8a8 (got %ld)", value);
        self->act_levels = (int) value;
        self->act2 = value == 2 ? (int8_t *) self->act : NULL;
    }
    else if (!strcmp (name, "prefetch"))
        self->prefetch_budget = value > 0 ? (size_t) value : 0;
    else if (!strcmp (name, "ablate")) {
        if (value < 0 || value >= 1L << (sizeof s_ablate_labels / sizeof s_ablate_labels[0]))
            return s_fail (self, "gpu_model_tune: ablate is a mask of %zu bits (got %ld)",
                           sizeof s_ablate_labels / sizeof s_ablate_labels[0], value);
        self->ablate = value;
    }
    else if (!strcmp (name, "hollow")) {
        if (value < 0 || value >= 1L << (sizeof s_ablate_labels / sizeof s_ablate_labels[0]))
            return s_fail (self, "gpu_model_tune: hollow is a mask of %zu bits (got %ld)",
                           sizeof s_ablate_labels / sizeof s_ablate_labels[0], value);
        self->hollow = value;
    }
    else if (!strcmp (name, "profile")) {
        self->prof = value != 0;
        self->prof_tab->clear ();
        self->prof_steps = 0;
        return 0;
    }
    else
        return s_fail (self, "gpu_model_tune: unknown setting '%s'", name);
    s_drop_graphs (self);
    return 0;
}

//  Sums the last profiled forward's event intervals into the table.
static int
s_prof_collect (gpu_model_t *self)
{
    S_CUDA (cudaEventSynchronize (self->ev[self->n_ev]));
    for (int i = 1; i <= self->n_ev; i++) {
        float ms = 0.0f;
        S_CUDA (cudaEventElapsedTime (&ms, self->ev[i - 1], self->ev[i]));
        s_prof_t *row = NULL;
        for (size_t j = 0; j < self->prof_tab->size (); j++)
            if (!strcmp ((*self->prof_tab)[j].label, self->ev_label[i]))
                row = &(*self->prof_tab)[j];
        if (!row) {
            s_prof_t r = { self->ev_label[i], 0.0, 0, 0 };
            self->prof_tab->push_back (r);
            row = &self->prof_tab->back ();
        }
        row->ms += ms;
        row->calls++;
        row->bytes += self->ev_bytes[i];
    }
    self->prof_steps++;
    return 0;
}

extern "C" int
gpu_model_profile_print (const gpu_model_t *self, FILE *f, const char *title, double copy_bw)
{
    if (!self->prof_steps)
        return -1;
    double total = 0.0;
    for (size_t j = 0; j < self->prof_tab->size (); j++)
        total += (*self->prof_tab)[j].ms;
    double steps = self->prof_steps;
    fprintf (f, "profile %s: %d forwards, %.3f ms a forward (kernels timed one by one, no graph)\n",
             title, self->prof_steps, total / steps);
    fprintf (f, "  %-14s %8s %10s %10s %7s %9s %9s\n", "kernel", "calls", "us/call", "us/step", "share",
             "GB/s", "of copy");
    for (size_t j = 0; j < self->prof_tab->size (); j++) {
        const s_prof_t *r = &(*self->prof_tab)[j];
        double gbs = r->bytes && r->ms > 0 ? r->bytes / (r->ms * 1e-3) / 1e9 : 0.0;
        fprintf (f, "  %-14s %8.1f %10.2f %10.1f %6.1f%% %9.0f %8.0f%%\n", r->label, r->calls / steps,
                 r->ms * 1e3 / r->calls, r->ms * 1e3 / steps, 100.0 * r->ms / total, gbs,
                 copy_bw > 0 && gbs > 0 ? 100.0 * gbs * 1e9 / copy_bw : 0.0);
    }
    return 0;
}

extern "C" int
gpu_model_set_skinny (gpu_model_t *self, bool on)
{
    if (self->opts.skinny_gemm != on) {
        //  Captured graphs hold the other GEMMs: capture again.
        cudaStreamSynchronize (self->stream);
        for (int i = 0; i <= self->opts.graph_max_tokens; i++)
            if (self->graphs[i]) {
                cudaGraphExecDestroy (self->graphs[i]);
                self->graphs[i] = NULL;
            }
    }
    self->opts.skinny_gemm = on;
    return 0;
}

extern "C" int
gpu_model_free_pages (const gpu_model_t *self)
{
    return (int) self->free_pages->size ();
}

extern "C" int
gpu_model_total_pages (const gpu_model_t *self)
{
    return self->opts.n_pages;
}

//  --- sessions -------------------------------------------------------------

static s_session_t *
s_session (const gpu_model_t *self, int id)
{
    if (id < 0 || id >= self->opts.max_sessions || !self->sessions[id].open)
        return NULL;
    return &self->sessions[id];
}

extern "C" int
gpu_session_open (gpu_model_t *self)
{
    for (int s = 0; s < self->opts.max_sessions; s++)
        if (!self->sessions[s].open) {
            self->sessions[s].open = true;
            self->sessions[s].pos = 0;
            self->sessions[s].pages->clear ();
            return s;
        }
    return s_fail (self, "all %d session slots are in use", self->opts.max_sessions);
}

//  Returns the session's pages beyond those n_pos positions need.
static void
s_release_pages (gpu_model_t *self, s_session_t *s, int n_pos)
{
    size_t keep = (size_t) (n_pos + self->opts.page_size - 1) / self->opts.page_size;
    while (s->pages->size () > keep) {
        self->free_pages->push_back (s->pages->back ());
        s->pages->pop_back ();
    }
}

extern "C" int
gpu_session_close (gpu_model_t *self, int session)
{
    s_session_t *s = s_session (self, session);
    if (!s)
        return s_fail (self, "unknown session %d", session);
    s_release_pages (self, s, 0);
    s->open = false;
    s->pos = 0;
    return 0;
}

extern "C" int
gpu_session_truncate (gpu_model_t *self, int session, int n_pos)
{
    s_session_t *s = s_session (self, session);
    if (!s)
        return s_fail (self, "unknown session %d", session);
    if (n_pos < 0)
        n_pos = 0;
    if (n_pos < s->pos) {
        s->pos = n_pos;
        s_release_pages (self, s, n_pos);
    }
    return 0;
}

extern "C" int
gpu_session_pos (const gpu_model_t *self, int session)
{
    const s_session_t *s = s_session (self, session);
    return s ? s->pos : -1;
}

//  --- the forward pass -----------------------------------------------------

//  The per-row scales a consumer of the last product dequantizes with:
//  only when that product is cuBLASLt's int32 sums (k_load).
#define S_SCALE(W) (self->planes ? (const float *) (W).scale : (const float *) NULL)

//  Whether the residual add and the norm's partial sums go through the
//  GEMM epilogue (k_add_norm_rows after cuBLASLt) and the norm through
//  k_norm_emit.
template <int W8>
static bool
s_res_path (const gpu_model_t *self)
{
    return W8 != 2 && self->res_ep && self->config.dim % 4 == 0 && (self->config.dim + 15) / 16 <= K_PARTS_MAX
           && (W8 == 0 || (self->emit_max && self->amax));
}

//  act = RMSNorm (x) norm_w with no product to add first (the pass's
//  first norm, the head alone), with the arithmetic of every other norm
//  of the pass (k_add_norm_rows, parts as a tensor-core GEMM over dim
//  rows has them), or k_add_rmsnorm.
template <int W8>
static int
s_norm (gpu_model_t *self, int t, const float *norm_w)
{
    const model_config_t *c = &self->config;
    if (!s_res_path<W8> (self))
        return s_go (self, "add_rmsnorm", 0, K_NPT_PICK (k_add_rmsnorm, W8, c->dim), dim3 (t), dim3 (K_THREADS),
                     self->x, (const void *) NULL, (const float *) NULL, self->xs, norm_w, c->norm_eps, c->dim,
                     self->act, self->xf, self->act2, self->xsum);
    s_mat_t m;
    memset (&m, 0, sizeof m);
    m.n = c->dim;
    int rows = s_mma_rows (self, &m), n_parts = s_mma_blocks (self, &m);
    return s_go (self, "add_rmsnorm", 0, k_add_norm_rows<W8>, dim3 (t), dim3 (1024), self->x,
                 (const void *) NULL, (const float *) NULL, self->xs, norm_w, c->norm_eps, c->dim, rows, n_parts,
                 self->act, (int) (self->act2 != NULL));
}

//  k_head's grid: blocks of 1024 threads with 8 logits each a token.
static dim3
s_head_grid (const gpu_model_t *self, int t)
{
    int blocks = (self->config.vocab_size + 8 * 1024 - 1) / (8 * 1024);
    return dim3 (blocks < 64 ? blocks : 64, t);
}

//  x += W in (the residual add), then, with norm_w, act = RMSNorm (x)
//  norm_w in the next GEMM's input format. fp16 and w8a8 with the
//  producers' row maxima (the amax slot amax_slot x cap): the add and the
//  norm's partial sums in the tensor-core GEMM's epilogue (or, after
//  cuBLASLt, k_add_norm_rows, to the same bits), then an element-wise
//  norm (k_norm_emit); otherwise (w8, or tuned off) k_add_rmsnorm.
template <int W8>
static int
s_gemm_add_norm (gpu_model_t *self, const s_mat_t *W, int t, const char *label, const float *norm_w,
                 size_t amax_slot, const void *in = NULL)
{
    const model_config_t *c = &self->config;
    if (s_res_path<W8> (self)) {
        k_rope_ep ep;
        memset (&ep, 0, sizeof ep);
        ep.res_x = self->x;
        ep.res_nw = norm_w;
        ep.res_ss = self->ss_part;
        ep.res_amax = W8 == 1 && norm_w ? self->amax + amax_slot * self->cap : NULL;
        bool fused = false;
        if (s_gemm (self, W, t, label, &ep, &fused, in))
            return -1;
        int n_parts = s_mma_blocks (self, W), two = self->act2 != NULL;
        //  cuBLASLt ran (a batch past the tensor-core GEMM's): the same
        //  add and norm from its product, a block a token.
        if (!fused)
            return s_go (self, "add_rmsnorm", 0, k_add_norm_rows<W8>,
                         dim3 (t), dim3 (1024), self->x, (const void *) self->raw, S_SCALE (*W), self->xs, norm_w,
                         c->norm_eps, c->dim, s_mma_rows (self, W), n_parts, self->act, two);
        if (!norm_w)
            return 0;
        return s_go (self, "add_rmsnorm", 0, k_norm_emit<W8>, dim3 ((c->dim + 1023) / 1024, t), dim3 (256),
                     (const float *) self->x, c->dim, norm_w, c->norm_eps, (const float *) self->ss_part, n_parts,
                     (const float *) ep.res_amax, self->act, self->xs, two);
    }
    if (s_gemm (self, W, t, label, NULL, NULL, in))
        return -1;
    return s_go (self, "add_rmsnorm", 0, K_NPT_PICK (k_add_rmsnorm, W8, c->dim), dim3 (t), dim3 (K_THREADS), self->x,
                 (const void *) self->raw, S_SCALE (*W), self->xs, norm_w, c->norm_eps, c->dim, self->act,
                 self->xf, self->act2, self->xsum);
}

//  Enqueues the whole forward pass for t positions whose inputs are in the
//  device buffers (x or tokens, tok_pos, tok_slot, block table).
template <int W8>
static int
s_enqueue (gpu_model_t *self, int t, bool want_head)
{
    const model_config_t *c = &self->config;
    int q_dim = c->n_heads * c->head_dim;
    const int32_t *tokens = self->d_meta, *tok_pos = self->d_meta + self->cap;
    const int32_t *tok_slot = self->d_meta + 2 * self->cap;
    int l0 = self->run_first, n_layers = self->last - self->first;

    self->pdl_next = false;     //  the first kernel follows the uploads
    //  w8a8: the row maxima the producers reduce (k_atomic_max) start at 0.
    bool emit_max = W8 == 1 && self->emit_max && self->amax;
    if (emit_max)
        S_CUDA (cudaMemsetAsync (self->amax, 0, self->amax_bytes, self->stream));
    if (self->run_tokens
        && s_go (self, "embed", 0, k_embed, dim3 (t), dim3 (K_THREADS), tokens, (const __half *) self->embed,
                 self->x, c->dim))
        return -1;
    const float *first_norm = l0 < n_layers ? (*self->layers)[l0].attn_norm
                              : want_head ? self->output_norm : NULL;
    if (first_norm && s_norm<W8> (self, t, first_norm))
        return -1;
    for (int l = l0; l < n_layers; l++) {
        const s_layer_t *L = &(*self->layers)[l];
        typedef typename k_kv<W8>::T kv_t;
        kv_t *kc = (kv_t *) self->kcache + (size_t) l * self->layer_stride;
        kv_t *vc = (kv_t *) self->vcache + (size_t) l * self->layer_stride;

        //  fp16 / w8a8: RoPE and the cache writes in the qkv GEMM's
        //  epilogue when it is the skinny kernel (round 3).
        k_rope_ep rope;
        memset (&rope, 0, sizeof rope);
        bool fused = false;
        if (W8 != 2 && self->fuse_rope && c->head_dim % 2 == 0) {
            rope.q = self->q;
            rope.kc = (__half *) kc;
            rope.vc = (__half *) vc;
            rope.block_table = (const int32_t *) self->d_block_table;
            rope.tok_pos = tok_pos;
            rope.tok_slot = tok_slot;
            rope.cos_t = self->cos_t;
            rope.sin_t = self->sin_t;
            rope.q_dim = q_dim;
            rope.kv_dim = c->kv_dim;
            rope.head_dim = c->head_dim;
            rope.page_size = self->opts.page_size;
            rope.max_blocks = self->max_blocks;
        }
        if (s_gemm (self, &L->wqkv, t, "gemm_qkv", rope.q ? &rope : NULL, &fused))
            return -1;
        if (!fused && s_go (self, "qkv_rope", 0, k_qkv_rope<W8>, dim3 (t), dim3 (K_THREADS), (const void *) self->raw,
                  S_SCALE (L->wqkv), (const float *) self->xs, self->q, kc, vc,
                  (const int32_t *) self->d_block_table, tok_pos, tok_slot, (const float *) self->cos_t,
                  (const float *) self->sin_t, q_dim, c->kv_dim, c->head_dim, self->opts.page_size,
                  self->max_blocks, self->act2 != NULL))
            return -1;
        dim3 grid (t, c->n_heads);
        float scale = 1.0f / sqrtf ((float) c->head_dim);
        int group = c->n_heads / c->n_kv_heads;
#define S_ATT(E) s_go (self, "attention", 0, k_attention<E, kv_t>, grid, dim3 (K_ATT_WARPS * 32), \
            (const float *) self->q, (const kv_t *) kc, (const kv_t *) vc, (const int32_t *) self->d_block_table, \
            tok_pos, tok_slot, self->att, c->n_heads, group, c->kv_dim, self->opts.page_size, \
            self->max_blocks, scale, emit, self->act, self->att_prefetch)
        int rc = -2;
        //  The per-head kernel emits the o GEMM's input itself in fp16
        //  (round 3).
        int emit = self->fuse_rope && W8 == 0 ? 1 : 0;
        //  A block per KV head pays off in large batches (64 x 5 positions:
        //  attention 484 -> 242 us a layer on an H200); at verify sizes
        //  (5 x 8 = 40 blocks) it leaves SMs idle: 18 -> 25 us a layer.
        if (self->attn_gqa && t * c->n_kv_heads >= self->gqa_min_blocks) {
            dim3 grid_kv (t, c->n_kv_heads);
#define S_GQA(E, G) s_go (self, "attention", 0, k_attention_gqa<E, kv_t, G>, grid_kv, \
            dim3 (K_ATT_WARPS * 32), (const float *) self->q, (const kv_t *) kc, (const kv_t *) vc, \
            (const int32_t *) self->d_block_table, tok_pos, tok_slot, self->att, c->n_heads, c->kv_dim, \
            self->opts.page_size, self->max_blocks, scale)
            int e = c->head_dim / 32;
            if (e == 4 && group == 4) rc = S_GQA (4, 4);
            else if (e == 4 && group == 2) rc = S_GQA (4, 2);
            else if (e == 4 && group == 1) rc = S_GQA (4, 1);
            else if (e == 2 && group == 3) rc = S_GQA (2, 3);
            else if (e == 2 && group == 4) rc = S_GQA (2, 4);
            else if (e == 2 && group == 1) rc = S_GQA (2, 1);
#undef S_GQA
        }
        bool emitted = false;
        //  Head dims of 16 x 2, 4, 8, 16: a group of lanes a position
        //  (k_attention_lanes); others a warp a position.
#define S_ATT_LANES(LP) s_go (self, "attention", 0, k_attention_lanes<LP, kv_t>, grid, \
            dim3 (K_ATT_LANES_WARPS * 32), (const float *) self->q, (const kv_t *) kc, (const kv_t *) vc, \
            (const int32_t *) self->d_block_table, tok_pos, tok_slot, self->att, c->n_heads, group, c->kv_dim, \
            self->opts.page_size, self->max_blocks, scale, emit, self->act, self->att_prefetch, att_max)
        float *att_max = emit_max ? self->amax + (size_t) (l - l0) * 4 * self->cap : NULL;
        if (rc == -2 && self->att_lanes) {
            switch (c->head_dim) {
                case 32: rc = S_ATT_LANES (2); break;
                case 64: rc = S_ATT_LANES (4); break;
                case 128: rc = S_ATT_LANES (8); break;
                case 256: rc = S_ATT_LANES (16); break;
                default: break;
            }
            emitted = rc != -2 && emit != 0;
            if (rc == 0 && att_max) {
                if (s_go (self, "emit", 0, k_emit_max, dim3 ((q_dim + 1023) / 1024, t), dim3 (256),
                          (const float *) self->att, q_dim, (const float *) att_max, (int8_t *) self->act,
                          self->xs, (int) (self->act2 != NULL)))
                    return -1;
                emitted = true;
            }
        }
#undef S_ATT_LANES
        if (rc == -2) {
        emitted = emit != 0;
        switch (c->head_dim / 32) {
            case 1: rc = S_ATT (1); break;
            case 2: rc = S_ATT (2); break;
            case 3: rc = S_ATT (3); break;
            case 4: rc = S_ATT (4); break;
            case 5: rc = S_ATT (5); break;
            case 6: rc = S_ATT (6); break;
            case 7: rc = S_ATT (7); break;
            default: rc = S_ATT (8); break;
        }
        }
#undef S_ATT
        if (rc)
            return -1;
        if (!emitted && s_go (self, "emit", 0, K_NPT_PICK (k_emit, W8, q_dim), dim3 (t), dim3 (K_THREADS), (const float *) self->att, q_dim,
                  self->act, self->xs, self->act2, self->xsum))
            return -1;
        if (s_gemm_add_norm<W8> (self, &L->wo, t, "gemm_o", L->ffn_norm, (size_t) (l - l0) * 4 + 2))
            return -1;
        //  fp16 / w8a8: SwiGLU in the tensor-core gate|up GEMM's epilogue
        //  (session 3); w8a8 then quantizes its fp32 output (emit), fp16's
        //  goes to the down GEMM as it is.
        k_rope_ep swiglu;
        memset (&swiglu, 0, sizeof swiglu);
        bool ffn_fused = false;
        if (W8 != 2 && self->fuse_rope) {
            swiglu.hidden = c->hidden_dim;
            if (W8 == 1) {
                swiglu.swiglu_f32 = self->xf;
                swiglu.amax = emit_max ? self->amax + ((size_t) (l - l0) * 4 + 1) * self->cap : NULL;
            }
            else
                swiglu.swiglu_f16 = self->act_h;
        }
        if (s_gemm (self, &L->wgu, t, "gemm_gate_up", swiglu.hidden ? &swiglu : NULL, &ffn_fused))
            return -1;
        if (!ffn_fused
            && s_go (self, "swiglu", 0, K_NPT_PICK (k_swiglu, W8, c->hidden_dim), dim3 (t), dim3 (K_THREADS),
                     (const void *) self->raw, S_SCALE (L->wgu), self->xs, c->hidden_dim, self->act,
                     self->xf, self->act2, self->xsum))
            return -1;
        if (ffn_fused && W8 == 1 && swiglu.amax
            && s_go (self, "emit_ffn", 0, k_emit_max, dim3 ((c->hidden_dim + 1023) / 1024, t), dim3 (256),
                     (const float *) self->xf, c->hidden_dim, (const float *) swiglu.amax, (int8_t *) self->act,
                     self->xs, (int) (self->act2 != NULL)))
            return -1;
        if (ffn_fused && W8 == 1 && !swiglu.amax
            && s_go (self, "emit_ffn", 0, K_NPT_PICK (k_emit, W8, c->hidden_dim), dim3 (t), dim3 (K_THREADS),
                     (const float *) self->xf, c->hidden_dim, self->act, self->xs, self->act2, self->xsum))
            return -1;
        const float *next_norm = l + 1 < n_layers ? (*self->layers)[l + 1].attn_norm
                                 : want_head ? self->output_norm : NULL;
        if (s_gemm_add_norm<W8> (self, &L->wdown, t, "gemm_down", next_norm, (size_t) (l - l0) * 4 + 3,
                                 ffn_fused && W8 == 0 ? (const void *) self->act_h : NULL))
            return -1;
    }
    if (want_head) {
        if (s_gemm (self, &self->output, t, "gemm_head"))
            return -1;
        if (s_go (self, "head", 0, k_head<W8>, s_head_grid (self, t), dim3 (1024), (const void *) self->raw,
                  S_SCALE (self->output), (const float *) self->xs, c->vocab_size, self->output.n,
                  self->logits, self->argmax, self->act2 != NULL, self->head_key, self->head_arrived))
            return -1;
    }
    return 0;
}

static int
s_enqueue_any (gpu_model_t *self, int t, bool want_head)
{
    return s_g32 (self) ? s_enqueue<2> (self, t, want_head)
         : s_w8 (self) ? s_enqueue<1> (self, t, want_head) : s_enqueue<0> (self, t, want_head);
}

//  Runs the pass for t positions: a replayed graph for small batches with
//  the head (the usual verify step), direct launches otherwise.
static int
s_run (gpu_model_t *self, int t, bool want_head)
{
    //  Graphs are captured for the usual call only: every loaded layer,
    //  tokens when the embeddings are loaded, the head when loaded.
    if (self->prof) {
        self->n_ev = 0;
        if (!self->ev[0])
            S_CUDA (cudaEventCreate (&self->ev[0]));
        S_CUDA (cudaEventRecord (self->ev[0], self->stream));
        if (s_enqueue_any (self, t, want_head))
            return -1;
        return s_prof_collect (self);
    }
    bool graph = self->opts.use_graphs && t <= self->opts.graph_max_tokens
                 && want_head == self->has_head && self->run_first == 0
                 && self->run_tokens == self->has_embed;
    if (!graph)
        return s_enqueue_any (self, t, want_head);
    if (!self->graphs[t]) {
        //  Plans are made before capture, so that the capture holds only
        //  device work and a missing GEMM algorithm fails outside it.
        const model_config_t *c = &self->config;
        int tg = (t + 3) / 4 * 4;
        if (self->opts.format == GPU_FMT_W8A8 && self->act2)
            tg *= 2;            //  w8a8's two activation levels (s_gemm)
        bool skinny = self->opts.skinny_gemm && t <= K_SKINNY_MAX_T;
        for (size_t l = 0; !skinny && l < self->layers->size (); l++) {
            const s_layer_t *L = &(*self->layers)[l];
            if (!s_plan (self, L->wqkv.n, L->wqkv.cols, tg) || !s_plan (self, L->wo.n, L->wo.cols, tg)
                || !s_plan (self, L->wgu.n, L->wgu.cols, tg)
                || !s_plan (self, L->wdown.n, L->wdown.cols, tg))
                return -1;
        }
        if (!skinny && want_head && !s_plan (self, self->output.n, c->dim, tg))
            return -1;
        cudaGraph_t g = NULL;
        S_CUDA (cudaStreamBeginCapture (self->stream, cudaStreamCaptureModeThreadLocal));
        int rc = s_enqueue_any (self, t, want_head);
        cudaError_t e = cudaStreamEndCapture (self->stream, &g);
        if (rc) {
            if (g)
                cudaGraphDestroy (g);
            return -1;
        }
        if (e != cudaSuccess)
            return s_fail (self, "graph capture: %s", cudaGetErrorString (e));
        e = cudaGraphInstantiate (&self->graphs[t], g, 0);
        cudaGraphDestroy (g);
        if (e != cudaSuccess) {
            self->graphs[t] = NULL;
            return s_fail (self, "graph instantiate: %s", cudaGetErrorString (e));
        }
    }
    S_CUDA (cudaGraphLaunch (self->graphs[t], self->stream));
    return 0;
}

extern "C" int
gpu_forward_batch (gpu_model_t *self, const gpu_seq_t *seqs, int n_seqs, const gpu_out_t *out)
{
    return gpu_forward_batch_from (self, self->first, seqs, n_seqs, out);
}

extern "C" int
gpu_forward_batch_from (gpu_model_t *self, int first_layer, const gpu_seq_t *seqs, int n_seqs,
                        const gpu_out_t *out)
{
    const model_config_t *c = &self->config;
    self->error[0] = '\0';
    if (!seqs || n_seqs < 1 || !out)
        return s_fail (self, "bad arguments to gpu_forward_batch (%d sequences)", n_seqs);
    if (first_layer < self->first || first_layer > self->last)
        return s_fail (self, "layer %d is outside the loaded range [%d, %d)", first_layer,
                       self->first, self->last);
    //  Tokens (embedded on the GPU) only from the first loaded layer with
    //  the embeddings; activations otherwise. One kind per batch.
    bool tokens_in = seqs[0].tokens != NULL;
    if (tokens_in && (!self->has_embed || first_layer != self->first))
        return s_fail (self, "tokens given but the embeddings are not loaded%s",
                       self->has_embed ? " for this first layer" : "");
    bool want_head = out->logits || out->argmax || out->probs;
    if (want_head && !self->has_head)
        return s_fail (self, "logits asked for but the head is not loaded on the GPU");
    if (out->probs && !(out->temperature > 0.0f))
        return s_fail (self, "probabilities need a temperature > 0 (got %g)", out->temperature);
    if (!want_head && !out->x)
        return s_fail (self, "no output asked for");
    if (out->x && want_head)
        return s_fail (self, "ask for activations or head outputs, not both");

    //  Validate everything before touching any state.
    int total = 0;
    size_t pages_needed = 0;
    for (int i = 0; i < n_seqs; i++) {
        const gpu_seq_t *q = &seqs[i];
        const s_session_t *s = s_session (self, q->session);
        if (!s)
            return s_fail (self, "unknown session %d (sequence %d)", q->session, i);
        for (int j = 0; j < i; j++)
            if (seqs[j].session == q->session)
                return s_fail (self, "session %d appears twice in one batch", q->session);
        if (q->n < 1)
            return s_fail (self, "sequence %d has %d positions", i, q->n);
        if (q->pos != s->pos)
            return s_fail (self, "session %d holds %d positions, not %d (truncate first)",
                           q->session, s->pos, q->pos);
        if (q->pos + q->n > self->opts.max_ctx)
            return s_fail (self, "session %d: positions %d..%d are beyond the context (%d)",
                           q->session, q->pos, q->pos + q->n - 1, self->opts.max_ctx);
        if (q->n > self->opts.max_tokens - total)
            return s_fail (self, "batch holds more than %d positions", self->opts.max_tokens);
        if ((q->tokens != NULL) != tokens_in)
            return s_fail (self, "sequence %d mixes tokens and activations in one batch", i);
        if (!q->tokens && !q->x)
            return s_fail (self, "sequence %d has no tokens and no input activations", i);
        if (tokens_in) {
            for (int j = 0; j < q->n; j++)
                if (q->tokens[j] < 0 || q->tokens[j] >= c->vocab_size)
                    return s_fail (self, "token %d at index %d of sequence %d is outside the vocabulary [0, %d)",
                                   (int) q->tokens[j], j, i, c->vocab_size);
        }
        size_t need = (size_t) (q->pos + q->n + self->opts.page_size - 1) / self->opts.page_size;
        pages_needed += need - s->pages->size ();
        total += q->n;
    }
    if (pages_needed > self->free_pages->size ())
        return s_fail (self, "KV pool exhausted: %zu pages needed, %zu free",
                       pages_needed, self->free_pages->size ());

    //  Allocate pages and fill the per-token inputs.
    int32_t *h_tok = self->h_meta, *h_pos = self->h_meta + self->cap, *h_slot = self->h_meta + 2 * self->cap;
    int t = 0;
    for (int i = 0; i < n_seqs; i++) {
        const gpu_seq_t *q = &seqs[i];
        s_session_t *s = &self->sessions[q->session];
        size_t need = (size_t) (q->pos + q->n + self->opts.page_size - 1) / self->opts.page_size;
        while (s->pages->size () < need) {
            int p = self->free_pages->back ();
            self->free_pages->pop_back ();
            self->h_block_table[(size_t) q->session * self->max_blocks + s->pages->size ()] = p;
            s->pages->push_back (p);
            self->table_dirty = true;
        }
        for (int j = 0; j < q->n; j++, t++) {
            h_tok[t] = tokens_in ? q->tokens[j] : 0;
            h_pos[t] = q->pos + j;
            h_slot[t] = q->session;
        }
        if (!tokens_in)
            memcpy (self->h_x + (size_t) (t - q->n) * c->dim, q->x, (size_t) q->n * c->dim * sizeof (float));
    }
    cudaStream_t st = self->stream;
    int rc = -1;
    cudaError_t e;
    //  Each third of the meta buffer is cap entries: copy all three.
    e = cudaMemcpyAsync (self->d_meta, self->h_meta, 3 * self->cap * sizeof (int32_t),
                         cudaMemcpyHostToDevice, st);
    if (e == cudaSuccess && self->table_dirty) {
        e = cudaMemcpyAsync (self->d_block_table, self->h_block_table,
                             (size_t) self->opts.max_sessions * self->max_blocks * sizeof (int32_t),
                             cudaMemcpyHostToDevice, st);
    }
    if (e == cudaSuccess && !tokens_in)
        e = cudaMemcpyAsync (self->x, self->h_x, (size_t) total * c->dim * sizeof (float),
                             cudaMemcpyHostToDevice, st);
    if (e != cudaSuccess) {
        s_fail (self, "upload: %s", cudaGetErrorString (e));
        goto rollback;
    }
    //  The staging buffers must not change before the copies ran.
    e = cudaStreamSynchronize (st);
    if (e != cudaSuccess) {
        s_fail (self, "upload: %s", cudaGetErrorString (e));
        goto rollback;
    }
    self->table_dirty = false;
    self->run_first = first_layer - self->first;
    self->run_tokens = tokens_in;
    if (s_run (self, total, want_head))
        goto rollback;
    if (out->probs) {
        k_softmax<<<total, 1024, 0, st>>> (self->logits, self->probs, c->vocab_size, 1.0f / out->temperature);
        if ((e = cudaGetLastError ()) != cudaSuccess) {
            s_fail (self, "softmax: %s", cudaGetErrorString (e));
            goto rollback;
        }
    }
    e = cudaSuccess;
    if (out->logits)
        e = cudaMemcpyAsync (out->logits, self->logits, (size_t) total * c->vocab_size * sizeof (float),
                             cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess && out->argmax)
        e = cudaMemcpyAsync (out->argmax, self->argmax, (size_t) total * sizeof (int32_t),
                             cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess && out->probs)
        e = cudaMemcpyAsync (out->probs, self->probs, (size_t) total * c->vocab_size * sizeof (float),
                             cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess && out->x)
        e = cudaMemcpyAsync (out->x, self->x, (size_t) total * c->dim * sizeof (float),
                             cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize (st);
    if (e != cudaSuccess) {
        s_fail (self, "forward pass: %s", cudaGetErrorString (e));
        goto rollback;
    }
    for (int i = 0; i < n_seqs; i++)
        self->sessions[seqs[i].session].pos = seqs[i].pos + seqs[i].n;
    rc = 0;
    return rc;
rollback:
    //  Sessions keep their positions; pages taken for this batch go back.
    for (int i = 0; i < n_seqs; i++) {
        s_session_t *s = &self->sessions[seqs[i].session];
        s_release_pages (self, s, s->pos);
    }
    return rc;
}

//  The head alone: final RMSNorm, output projection, argmax / softmax.
template <int W8>
static int
s_enqueue_head (gpu_model_t *self, int n)
{
    const model_config_t *c = &self->config;
    self->pdl_next = false;
    //  The norm as the forward's last one computes it (s_norm).
    if (s_norm<W8> (self, n, self->output_norm))
        return -1;
    if (s_gemm (self, &self->output, n, "gemm_head"))
        return -1;
    k_head<W8><<<s_head_grid (self, n), 1024, 0, self->stream>>> (self->raw, S_SCALE (self->output), self->xs,
                                                                  c->vocab_size, self->output.n, self->logits,
                                                                  self->argmax, self->act2 != NULL, self->head_key,
                                                                  self->head_arrived);
    S_LAUNCH ();
    return 0;
}

extern "C" int
gpu_model_head (gpu_model_t *self, const float *x, int n, const gpu_out_t *out)
{
    const model_config_t *c = &self->config;
    self->error[0] = '\0';
    if (!self->has_head)
        return s_fail (self, "the output head is not loaded on the GPU");
    if (!x || !out || n < 1 || n > self->opts.max_tokens)
        return s_fail (self, "bad arguments to gpu_model_head (n %d, at most %d)", n, self->opts.max_tokens);
    if (out->x || !(out->logits || out->argmax || out->probs))
        return s_fail (self, "gpu_model_head gives logits, argmax or probabilities");
    if (out->probs && !(out->temperature > 0.0f))
        return s_fail (self, "probabilities need a temperature > 0 (got %g)", out->temperature);
    cudaStream_t st = self->stream;
    memcpy (self->h_x, x, (size_t) n * c->dim * sizeof (float));
    S_CUDA (cudaMemcpyAsync (self->x, self->h_x, (size_t) n * c->dim * sizeof (float),
                             cudaMemcpyHostToDevice, st));
    if (s_g32 (self) ? s_enqueue_head<2> (self, n)
        : s_w8 (self) ? s_enqueue_head<1> (self, n) : s_enqueue_head<0> (self, n))
        return -1;
    if (out->probs) {
        k_softmax<<<n, 1024, 0, st>>> (self->logits, self->probs, c->vocab_size, 1.0f / out->temperature);
        S_LAUNCH ();
        S_CUDA (cudaMemcpyAsync (out->probs, self->probs, (size_t) n * c->vocab_size * sizeof (float),
                                 cudaMemcpyDeviceToHost, st));
    }
    if (out->logits)
        S_CUDA (cudaMemcpyAsync (out->logits, self->logits, (size_t) n * c->vocab_size * sizeof (float),
                                 cudaMemcpyDeviceToHost, st));
    if (out->argmax)
        S_CUDA (cudaMemcpyAsync (out->argmax, self->argmax, (size_t) n * sizeof (int32_t),
                                 cudaMemcpyDeviceToHost, st));
    S_CUDA (cudaStreamSynchronize (st));
    return 0;
}
