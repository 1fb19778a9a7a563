/*  gpu_kernels.cuh: the backend's own CUDA kernels (everything but the
    GEMMs, which are cuBLASLt's). Private to gpu_model.cu.

    Every kernel that consumes a GEMM product dequantizes it on load, so no
    separate dequantization pass touches memory: in W8A8 mode a product
    element is int32 acc * token scale * channel scale, in fp16 mode it is
    the fp16 value. Every kernel that feeds a GEMM emits its activations in
    the GEMM's input format: fp16, or int8 with one scale per token
    (max |x| / 127, round to nearest even), which needs the whole row's
    maximum: those kernels keep the fp32 row in a scratch row, reduce, then
    quantize their own elements (one block per token, so no other block
    touches the row).

    Layout: activations are (token, channel) row-major; products are
    (token, out channel) row-major (cuBLASLt's column-major N x T). The KV
    cache of a layer is (page, page_size, kv_dim) fp16; token t of a batch
    is at position tok_pos[t] of session slot tok_slot[t], whose pages are
    listed in block_table[slot * max_blocks ...].
*/
#ifndef SPLITMESH_GPU_KERNELS_CUH
#define SPLITMESH_GPU_KERNELS_CUH

#include <cuda_fp16.h>
#include <stdint.h>

//  Threads of the one-block-per-token kernels: 1024, so a row of 4096
//  (14336) values takes 4 (14) strided steps per thread instead of 16 (56):
//  at verify sizes (5 tokens = 5 blocks) these kernels are latency-bound
//  and their time is the number of dependent steps. Measured again in
//  session 4 (8B w8a8 verify, H100, same run): 1024 3.34 ms, 512 3.39,
//  256 3.53.
#ifndef K_THREADS
#define K_THREADS 1024
#endif

//  y = s_w d (a1 + a2 / 256): the W8A8 product from its two activation
//  levels' int32 sums (a2 = 0 with one level, gpu_mma.cuh says why). The
//  sum is exact in double; one rounding.
static __device__ __forceinline__ float
k_deq_w8a8 (int a1, int a2, float xs, float ws)
{
    float v = (float) ((double) a1 + (double) a2 * (1.0 / 256.0));
    return __fmul_rn (__fmul_rn (v, xs), ws);
}

//  The kernels' W8 template argument: 0 fp16, 1 w8a8, 2 w8 (groups of 32:
//  fp32 products; activations carry one scale per group).
//  Product element (t, n) of a GEMM with N outputs, dequantized. w8a8:
//  with w_scale, raw holds cuBLASLt's int32 sums (the second level's, with
//  two, in rows from the batch rounded up to 4, P) and they are
//  dequantized here; without, the tensor-core GEMM dequantized them (fp32).
//  P: the batch rounded up to 4 (k_load_p); k_load takes it from a grid
//  of a block per token.
template <int W8>
static __device__ __forceinline__ float
k_load_p (const void *raw, const float *w_scale, float x_scale, int t, int n, int N, bool two, int P)
{
    size_t i = (size_t) t * N + n;
    if (W8 == 1 && w_scale) {
        const int32_t *r = (const int32_t *) raw;
        return k_deq_w8a8 (r[i], two ? r[(size_t) (P + t) * N + n] : 0, x_scale, w_scale[n]);
    }
    if (W8)
        return ((const float *) raw)[i];
    return __half2float (((const __half *) raw)[i]);
}

template <int W8>
static __device__ __forceinline__ float
k_load (const void *raw, const float *w_scale, float x_scale, int t, int n, int N, bool two)
{
    return k_load_p<W8> (raw, w_scale, x_scale, t, n, N, two, (gridDim.x + 3) / 4 * 4);
}

//  silu (g) * u, the one expression for both places that apply SwiGLU.
static __device__ __forceinline__ float
k_swiglu_val (float g, float u)
{
    return g / (1.0f + __expf (-g)) * u;
}

static __device__ __forceinline__ float
k_warp_sum (float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync (0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float
k_warp_max (float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf (v, __shfl_xor_sync (0xffffffffu, v, o));
    return v;
}

//  Sum / max over the block (blockDim.x a multiple of 32, <= 1024); every
//  thread gets the result. sh holds 32 floats.
static __device__ float
k_block_sum (float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = k_warp_sum (v);
    __syncthreads ();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads ();
    v = lane < nw ? sh[lane] : 0.0f;
    return k_warp_sum (v);
}

static __device__ float
k_block_max (float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = k_warp_max (v);
    __syncthreads ();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads ();
    v = lane < nw ? sh[lane] : 0.0f;
    return k_warp_max (v);
}

//  Programmatic dependent launch (sm_90): a kernel launched with the
//  programmatic-serialization attribute may start while its predecessor in
//  the stream still runs; K_PDL () at its top waits until the predecessor
//  completed (its writes visible), then lets the next kernel launch. Every
//  read or write of activations, caches or outputs comes after it; only
//  the GEMMs' weight prefetch (constant data) runs before. Without the
//  attribute both instructions are no-ops.
static __device__ __forceinline__ void
k_pdl (void)
{
    asm volatile ("griddepcontrol.wait;" ::: "memory");
    asm volatile ("griddepcontrol.launch_dependents;" ::: "memory");
}
#define K_PDL() k_pdl ()

//  The kernels between GEMMs (norms, attention, SwiGLU, emit, ...) let
//  the next kernel launch before they wait for their own predecessor
//  (K_PDL_EARLY, default 1), so the next GEMM's blocks become resident and
//  load their first weights (constant data, before their own wait) while
//  this kernel and the one before it still run. Safe: every kernel still
//  waits for its predecessor (which waited for its own) before touching
//  activations. On an H100 (session 3) this was w8a8 3.97 -> 3.91 ms but
//  fp16 5.92 -> 6.07 ms; after session 3's GEMM changes both gained
//  (session 4, same run: w8a8 3.77 -> 3.73, fp16 5.69 -> 5.64 ms).
//  -DK_PDL_EARLY=0 (CUDA flags) turns it off.
#ifndef K_PDL_EARLY
#define K_PDL_EARLY 1
#endif
static __device__ __forceinline__ void
k_pdl_small (void)
{
    if (K_PDL_EARLY) {
        asm volatile ("griddepcontrol.launch_dependents;" ::: "memory");
        asm volatile ("griddepcontrol.wait;" ::: "memory");
    }
    else
        k_pdl ();
}
#define K_PDL_SMALL() k_pdl_small ()

//  Prefetches the first pf bytes of each of a warp's rows into L2 (one
//  128-byte line a lane a step), before K_PDL: with PDL the weights start
//  streaming while the previous small kernel still runs.
static __device__ __forceinline__ void
k_prefetch_row (const void *row, int pf, int lane)
{
    for (int off = lane * 128; off < pf; off += 32 * 128)
        asm volatile ("prefetch.global.L2 [%0];" :: "l" ((const char *) row + off));
}

//  A per-token int8 scale d = amax / 127 (1 for an all-zero row) and its
//  reciprocal; a value x / d (as x * (1 / d), xq) on the first int8 level
//  q1 = rint (xq) and the second q2 = rint (256 (xq - q1)), both clamped
//  to +-127 (gpu_mma.cuh says why two). IEEE operations spelled out: the
//  file builds with --use_fast_math, and the CPU references in
//  test_gpu_model.c do the same.
static __device__ __forceinline__ float
k_act_scale (float amax, float *inv)
{
    float scale = amax > 0.0f ? __fdiv_rn (amax, 127.0f) : 1.0f;
    *inv = __frcp_rn (scale);
    return scale;
}

static __device__ __forceinline__ int
k_q1 (float xq)
{
    return max (-127, min (127, (int) rintf (xq)));
}

static __device__ __forceinline__ int
k_q2 (float xq, int q1)
{
    return max (-127, min (127, (int) rintf (__fmul_rn (__fsub_rn (xq, (float) q1), 256.0f))));
}

//  Emits row t (K values in xf's row) as int8 with a per-token scale d =
//  max |x| / 127, q = rint (x / d) (as x * (1 / d)); with act2 (the row of
//  the second level) also q2 = rint (256 (x / d - q)), so x ~ d (q + q2 /
//  256) (gpu_mma.cuh says why). IEEE operations spelled out (the file
//  builds with --use_fast_math): the CPU reference in test_gpu_model.c
//  does the same. amax is the thread's share of max |x|. Called by the
//  whole block.
static __device__ void
k_emit_int8 (const float *xf, int8_t *act, int8_t *act2, float *xs, int t, int K, float amax, float *sh)
{
    amax = k_block_max (amax, sh);
    float inv, scale = k_act_scale (amax, &inv);
    const float *row = xf + (size_t) t * K;
    int8_t *out = act + (size_t) t * K;
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        float v = __fmul_rn (row[i], inv);
        int q = k_q1 (v);
        out[i] = (int8_t) q;
        if (act2)
            act2[i] = (int8_t) k_q2 (v, q);
    }
    if (threadIdx.x == 0)
        xs[t] = scale;
}

//  Emits row t (K values in xf's row) as int8 in groups of 32 with one
//  scale each, bit for bit as kernels.c's kernels_quantize_act_ref: d =
//  amax / 127 (0 below KERNELS_ACT_TINY), q = rint (x / d ... as x * (1/d)),
//  clamped to +-127. Each warp's 32 consecutive elements are one group
//  (blockDim and K multiples of 32). IEEE operations spelled out: the file
//  builds with --use_fast_math. Called by the whole block.
//  With act2 (the engine's two activation levels, kernels.h qact_t), the
//  rounding residual is quantized again: q2 = rint (256 (x / d1 - q)),
//  d = d1 / 256, and xsum gets d (256 sum q + sum q2) per group (one
//  level: d1 sum q), the term the group's min multiplies.
static __device__ void
k_emit_int8_g32 (const float *xf, int8_t *act, int8_t *act2, float *xs, float *xsum, int t, int K)
{
    const float *row = xf + (size_t) t * K;
    int8_t *out = act + (size_t) t * K;
    float *d = xs + (size_t) t * (K / 32), *sm = xsum + (size_t) t * (K / 32);
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        float x = row[i];
        float amax = k_warp_max (fabsf (x));
        float dg = amax >= 1e-30f ? __fdiv_rn (amax, 127.0f) : 0.0f;
        float id = dg != 0.0f ? __frcp_rn (dg) : 0.0f;
        float v = __fmul_rn (x, id);
        float fv = rintf (v);
        int q = !(fv >= -127.0f) ? -127 : fv > 127.0f ? 127 : (int) fv;
        out[i] = (int8_t) q;
        int q2 = 0;
        if (act2) {
            float fr = rintf (__fmul_rn (__fsub_rn (v, (float) q), 256.0f));
            q2 = !(fr >= -127.0f) ? -127 : fr > 127.0f ? 127 : (int) fr;
            act2[(size_t) t * K + i] = (int8_t) q2;
        }
        int sum = q, sum2 = q2;
        for (int o = 16; o > 0; o >>= 1) {
            sum += __shfl_xor_sync (0xffffffffu, sum, o);
            sum2 += __shfl_xor_sync (0xffffffffu, sum2, o);
        }
        if ((threadIdx.x & 31) == 0) {
            if (act2) {
                float dd = __fdiv_rn (dg, 256.0f);
                d[i / 32] = dd;
                sm[i / 32] = __fmul_rn (dd, (float) (sum * 256 + sum2));
            }
            else {
                d[i / 32] = dg;
                sm[i / 32] = __fmul_rn (dg, (float) sum);
            }
        }
    }
}

//  Emits row t in the GEMM's int8 input format (W8 1 or 2).
template <int W8>
static __device__ __forceinline__ void
k_emit_q (const float *xf, int8_t *act, float *xs, int t, int K, float amax, float *sh, int8_t *act2,
          float *xsum)
{
    if (W8 == 2) {
        __syncthreads ();       //  xf's row is complete
        k_emit_int8_g32 (xf, act, act2, xs, xsum, t, K);
    }
    else {
        //  w8a8: the second level's rows follow the first's batch rounded
        //  up to 4 (the cuBLASLt path multiplies both as one 2P-column
        //  input); act2 only says whether there are two levels.
        int P = (gridDim.x + 3) / 4 * 4;
        k_emit_int8 (xf, act, act2 ? act + (size_t) (P + t) * K : NULL, xs, t, K, amax, sh);
    }
}

//  The per-token kernels (add_rmsnorm, emit, swiglu) with NPT > 0 hold
//  their row in registers, NPT values a thread (K <= NPT x blockDim.x),
//  instead of writing it to xf and reading it back for the quantization:
//  two passes over the row fewer, the same operations in the same order
//  (so the same bits). fp16 and w8a8 only; NPT = 0 is the general form.
//  Row t from registers in the GEMM input format: fp16, or (W8 1) int8 as
//  k_emit_int8 does it. amax is the thread's share of max |v|.
template <int W8, int NPT>
static __device__ __forceinline__ void
k_emit_regs (const float (&v)[NPT], int K, void *act, int8_t *act2, float *xs, int t, float amax, float *sh)
{
    if (W8 == 0) {
#pragma unroll
        for (int k = 0; k < NPT; k++) {
            int i = threadIdx.x + k * blockDim.x;
            if (i < K)
                ((__half *) act)[(size_t) t * K + i] = __float2half (v[k]);
        }
        return;
    }
    amax = k_block_max (amax, sh);
    float inv, scale = k_act_scale (amax, &inv);
    int P = (gridDim.x + 3) / 4 * 4;
    int8_t *out = (int8_t *) act + (size_t) t * K, *out2 = (int8_t *) act + (size_t) (P + t) * K;
#pragma unroll
    for (int k = 0; k < NPT; k++) {
        int i = threadIdx.x + k * blockDim.x;
        if (i >= K)
            break;
        float x = __fmul_rn (v[k], inv);
        int q = k_q1 (x);
        out[i] = (int8_t) q;
        if (act2)
            out2[i] = (int8_t) k_q2 (x, q);
    }
    if (threadIdx.x == 0)
        xs[t] = scale;
}

//  The NPT for a row of K values (a power of two, at most 16; 0: the
//  general form, for w8 or wider rows).
#define K_NPT_PICK(KERN, W8, K) \
    ((W8) == 2 || (K) > 16 * K_THREADS ? KERN<W8, 0> : (K) <= K_THREADS ? KERN<W8, 1> \
     : (K) <= 2 * K_THREADS ? KERN<W8, 2> : (K) <= 4 * K_THREADS ? KERN<W8, 4> \
     : (K) <= 8 * K_THREADS ? KERN<W8, 8> : KERN<W8, 16>)

//  *p = max (*p, v) for v >= 0 (|x| maxima, zeroed before the pass): the
//  bits of non-negative floats order as unsigned integers, so an integer
//  atomicMax gives the exact maximum in any order (deterministic).
static __device__ __forceinline__ void
k_atomic_max (float *p, float v)
{
    atomicMax ((unsigned int *) p, __float_as_uint (v));
}

//  Four values f as int8 (f x inv on the first level, k_q1) to out1 and,
//  unless out2 is NULL, the second level (k_q2) to out2: 4-byte stores.
static __device__ __forceinline__ void
k_q4_store (const float (&f)[4], float inv, int8_t *out1, int8_t *out2)
{
    char4 q1, q2;
    signed char *a1 = (signed char *) &q1, *a2 = (signed char *) &q2;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float xq = __fmul_rn (f[k], inv);
        int q = k_q1 (xq);
        a1[k] = (signed char) q;
        a2[k] = (signed char) k_q2 (xq, q);
    }
    *(char4 *) out1 = q1;
    if (out2)
        *(char4 *) out2 = q2;
}

//  act[t] = x[t] (fp32 rows of K, K % 4 == 0) as int8 on one or two
//  levels, with the row's max |x| already reduced by the kernel that wrote
//  x (amax[t], k_atomic_max): k_emit_regs's arithmetic element by element,
//  so a row is spread over many blocks (grid (blocks, tokens)) and nothing
//  waits for a block-wide reduction. Why: k_emit, one 1024-thread block a
//  token reducing the maximum first, cost 3-5 us a call inside the 8B
//  verify's graph (gpu/NOTES.md session 4).
static __global__ void __launch_bounds__ (256)
k_emit_max (const float *x, int K, const float *amax, int8_t *act, float *xs, int two)
{
    K_PDL_SMALL ();
    int t = blockIdx.y;
    float inv, scale = k_act_scale (amax[t], &inv);
    int P = (gridDim.y + 3) / 4 * 4;
    const float *row = x + (size_t) t * K;
    int8_t *out = act + (size_t) t * K, *out2 = act + (size_t) (P + t) * K;
    for (int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4; i < K; i += gridDim.x * blockDim.x * 4) {
        float4 v = *(const float4 *) (row + i);
        float f[4] = { v.x, v.y, v.z, v.w };
        k_q4_store (f, inv, out + i, two ? out2 + i : NULL);
    }
    if (blockIdx.x == 0 && threadIdx.x == 0)
        xs[t] = scale;
}

//  Elements i .. i + 3 of token t's normalized row (v the residual, w the
//  norm's weights) in the next GEMM's input format: fp16, or int8 on one
//  or two levels (dinv: 1 / the token's scale; P: the batch rounded up to
//  4, where the second level's rows start). The one arithmetic of
//  k_norm_emit and k_add_norm_rows.
template <int W8>
static __device__ __forceinline__ void
k_norm_put4 (float4 v, float4 w, float inv, float dinv, void *act, int t, int i, int dim, int P, int two)
{
    float f[4] = { v.x * inv * w.x, v.y * inv * w.y, v.z * inv * w.z, v.w * inv * w.w };
    if (W8 == 0) {
        __half2 *o = (__half2 *) ((__half *) act + (size_t) t * dim + i);
        o[0] = __floats2half2_rn (f[0], f[1]);
        o[1] = __floats2half2_rn (f[2], f[3]);
        return;
    }
    k_q4_store (f, dinv, (int8_t *) act + (size_t) t * dim + i,
                two ? (int8_t *) act + (size_t) (P + t) * dim + i : NULL);
}

//  The RMSNorm after a GEMM's residual epilogue (k_mma_gemm, ep.res_*):
//  row t of x times rsqrt (mean x^2 + eps) and norm_w, emitted in the next
//  GEMM's input format element by element (grid (blocks, tokens), 4
//  values a thread a step), like k_emit_max: nothing waits for a
//  block-wide reduction. The sum of x^2 is the GEMM blocks' n_parts
//  partial sums, which every warp adds in the same order (lanes, then a
//  butterfly: the same bits everywhere). w8a8: the int8 scale is max |x
//  norm_w| (ep.res_amax) times the rsqrt, within an ulp of k_add_rmsnorm's
//  max |x rsqrt norm_w| (a value past 127 by that clamps in k_q1).
//  Why: k_add_rmsnorm, one block a token with two block-wide reductions,
//  cost ~3.4 us a call inside the 8B verify's graph (65 calls; gpu/NOTES.md
//  session 5).
template <int W8>
static __global__ void __launch_bounds__ (256)
k_norm_emit (const float *x, int dim, const float *norm_w, float eps, const float *ss_part, int n_parts,
             const float *amax, void *act, float *xs, int two)
{
    int t = blockIdx.y, i0 = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    int step = gridDim.x * blockDim.x * 4;
    float4 w0 = i0 < dim ? *(const float4 *) (norm_w + i0) : make_float4 (0, 0, 0, 0);    //  constant
    K_PDL_SMALL ();
    int lane = threadIdx.x & 31;
    float ss = 0.0f;
    for (int j = lane; j < n_parts; j += 32)
        ss += ss_part[(size_t) t * n_parts + j];
    ss = k_warp_sum (ss);
    float inv = rsqrtf (ss / dim + eps);
    float dinv = 0.0f, scale = W8 ? k_act_scale (__fmul_rn (amax[t], inv), &dinv) : 0.0f;
    int P = (gridDim.y + 3) / 4 * 4;
    const float *row = x + (size_t) t * dim;
    for (int i = i0; i < dim; i += step)
        k_norm_put4<W8> (*(const float4 *) (row + i), i == i0 ? w0 : *(const float4 *) (norm_w + i), inv, dinv,
                         act, t, i, dim, P, two);
    if (W8 && blockIdx.x == 0 && threadIdx.x == 0)
        xs[t] = scale;
}

//  The residual epilogue and k_norm_emit in one block a token, for a
//  product that cuBLASLt made (batches past the tensor-core GEMM's), or
//  none (raw NULL: the pass's first norm, the head alone): x[t] +=
//  product, then with norm_w act = RMSNorm (x) norm_w, to the same bits
//  as the epilogue path, so a token's result does not depend on the batch
//  it came in. The sum of x^2 is taken in the same order: per part of
//  rows_per_part rows (16, 32, 64 or 128) as one GEMM block has them, lane
//  j of a warp adding rows j, j + 32, ..., then a butterfly over the 32
//  lanes; with 16 rows the GEMM's lanes 16-31 hold zeros and adding +0 is
//  exact, so 16 lanes with a 16-lane butterfly give the same bits and a
//  warp takes two parts. The parts' sums then as k_norm_emit adds them.
//  raw: fp16, or w8a8's int32 sums of both levels (the second level's
//  rows from the batch rounded up to 4). At most K_PARTS_MAX parts.
#define K_PARTS_MAX 1024
template <int W8>
static __global__ void __launch_bounds__ (1024)
k_add_norm_rows (float *x, const void *__restrict__ raw, const float *__restrict__ w_scale, float *xs,
                 const float *__restrict__ norm_w, float eps, int dim, int rows_per_part, int n_parts, void *act,
                 int two)
{
    K_PDL_SMALL ();
    __shared__ float s_part[K_PARTS_MAX];
    __shared__ unsigned int s_max;
    int t = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int G = rows_per_part < 32 ? rows_per_part : 32, gl = lane % G;
    int P = (gridDim.x + 3) / 4 * 4;
    float x_scale = W8 && raw ? xs[t] : 1.0f;     //  read before any barrier: written below
    float *xr = x + (size_t) t * dim;
    if (threadIdx.x == 0)
        s_max = 0;
    __syncthreads ();
    float m = 0.0f;
    //  Warp-uniform: every lane shuffles, parts past the end add nothing.
    for (int base = warp * (32 / G); base < n_parts; base += (blockDim.x >> 5) * (32 / G)) {
        int part = base + lane / G;
        bool live = part < n_parts;
        float ss = 0.0f;
        for (int j = gl; live && j < rows_per_part; j += G) {
            int row = part * rows_per_part + j;
            if (row >= dim)
                break;
            float xn = xr[row];
            if (raw) {
                xn += k_load_p<W8> (raw, w_scale, x_scale, t, row, dim, two, P);
                xr[row] = xn;
            }
            if (norm_w) {
                ss += __fmul_rn (xn, xn);
                m = fmaxf (m, fabsf (xn * norm_w[row]));
            }
        }
        for (int o = G / 2; o > 0; o >>= 1)
            ss += __shfl_xor_sync (0xffffffffu, ss, o);
        if (live && gl == 0)
            s_part[part] = ss;
    }
    if (!norm_w)
        return;
    m = k_warp_max (m);
    if (lane == 0)
        atomicMax (&s_max, __float_as_uint (m));
    __syncthreads ();           //  the parts, s_max and this block's writes to x
    float ss = 0.0f;
    for (int j = lane; j < n_parts; j += 32)
        ss += s_part[j];
    ss = k_warp_sum (ss);
    float inv = rsqrtf (ss / dim + eps);
    float dinv = 0.0f, scale = W8 ? k_act_scale (__fmul_rn (__uint_as_float (s_max), inv), &dinv) : 0.0f;
    for (int i = threadIdx.x * 4; i < dim; i += blockDim.x * 4)
        k_norm_put4<W8> (*(const float4 *) (xr + i), *(const float4 *) (norm_w + i), inv, dinv, act, t, i, dim,
                         P, two);
    if (W8 && threadIdx.x == 0)
        xs[t] = scale;
}

//  x[t] = embedding row of tokens[t] (fp16 table).
static __global__ void __launch_bounds__ (K_THREADS)
k_embed (const int32_t *tokens, const __half *emb, float *x, int dim)
{
    K_PDL_SMALL ();
    int t = blockIdx.x;
    const __half *row = emb + (size_t) tokens[t] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t) t * dim + i] = __half2float (row[i]);
}

//  RoPE's table: cos / sin of pos * inv_freq[i] for every position (a
//  block each) up to the model's context, in double like the CPU engine
//  (angles reach thousands of radians). Computed once when the model is
//  made, so a pass reads it like a weight: before its PDL waits. Why: as
//  the pass's first kernel (per token) it cost 28 us of the 8B verify's
//  graph (gpu/NOTES.md session 5), double sincos on the critical path.
static __global__ void
k_rope_table (const float *inv_freq, float *cos_t, float *sin_t, int half_hd)
{
    int pos = blockIdx.x;
    for (int i = threadIdx.x; i < half_hd; i += blockDim.x) {
        double s, c;
        sincos ((double) pos * (double) inv_freq[i], &s, &c);
        cos_t[(size_t) pos * half_hd + i] = (float) c;
        sin_t[(size_t) pos * half_hd + i] = (float) s;
    }
}

//  Optionally x[t] += product (the residual add of the previous GEMM),
//  then, when norm_w is set, act[t] = rmsnorm (x[t]) * norm_w in the GEMM
//  input format. One block per token.
template <int W8, int NPT>
static __global__ void __launch_bounds__ (K_THREADS)
k_add_rmsnorm (float *x, const void *raw, const float *w_scale, float *xs,
               const float *norm_w, float eps, int dim, void *act, float *xf, int8_t *act2, float *xsum)
{
    //  The norm's weights are constant: loaded before the wait, so the
    //  normalization after the sum of squares does not wait on a load.
    const int N = NPT > 0 ? NPT : 1;
    float nw[N];
#pragma unroll
    for (int k = 0; k < N; k++) {
        int i = threadIdx.x + k * blockDim.x;
        nw[k] = NPT > 0 && norm_w && i < dim ? norm_w[i] : 0.0f;
    }
    K_PDL_SMALL ();
    __shared__ float sh[32];
    int t = blockIdx.x;
    float x_scale = W8 && raw ? xs[t] : 1.0f;     //  read before any barrier
    float *xr = x + (size_t) t * dim;
    if (NPT > 0 && W8 != 2) {
        float v[N], ss = 0.0f;
#pragma unroll
        for (int k = 0; k < N; k++) {
            int i = threadIdx.x + k * blockDim.x;
            v[k] = 0.0f;
            if (i < dim) {
                float a = xr[i];
                if (raw) {
                    a += k_load<W8> (raw, w_scale, x_scale, t, i, dim, act2 != NULL);
                    xr[i] = a;
                }
                v[k] = a;
                ss += a * a;
            }
        }
        if (!norm_w)
            return;
        ss = k_block_sum (ss, sh);
        float inv = rsqrtf (ss / dim + eps);
        float amax = 0.0f;
#pragma unroll
        for (int k = 0; k < N; k++) {
            int i = threadIdx.x + k * blockDim.x;
            if (i < dim) {
                v[k] = v[k] * inv * nw[k];
                amax = fmaxf (amax, fabsf (v[k]));
            }
        }
        k_emit_regs<W8, N> (v, dim, act, act2, xs, t, amax, sh);
        return;
    }
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        if (raw) {
            v += k_load<W8> (raw, w_scale, x_scale, t, i, dim, act2 != NULL);
            xr[i] = v;
        }
        ss += v * v;
    }
    if (!norm_w)
        return;
    ss = k_block_sum (ss, sh);
    float inv = rsqrtf (ss / dim + eps);
    float amax = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i] * inv * norm_w[i];
        if (W8) {
            xf[(size_t) t * dim + i] = v;
            amax = fmaxf (amax, fabsf (v));
        }
        else
            ((__half *) act)[(size_t) t * dim + i] = __float2half (v);
    }
    if (W8)
        k_emit_q<W8> (xf, (int8_t *) act, xs, t, dim, amax, sh, act2, xsum);
}

//  The KV cache's element: fp16, but fp32 for w8 (W8 == 2), whose point is
//  the CPU engine's numerics (its cache is fp32: an fp16 cache alone
//  perturbs the attention by ~5e-4, which the int8 rounding amplifies).
template <int W8> struct k_kv { typedef __half T; };
template <> struct k_kv<2> { typedef float T; };

static __device__ __forceinline__ void k_kv_store (__half *p, float v) { *p = __float2half (v); }
static __device__ __forceinline__ void k_kv_store (float *p, float v) { *p = v; }
static __device__ __forceinline__ float k_kv_load (const __half *p) { return __half2float (*p); }
static __device__ __forceinline__ float k_kv_load (const float *p) { return *p; }

//  RoPE's rotation of the pair (x0, x1) by the angle with cosine co and
//  sine si. Every operation rounded on its own (no FMA contraction): the
//  GEMM epilogue and k_qkv_rope must give the same bits, and the compiler
//  contracts `x0 * co - x1 * si` differently in different contexts.
static __device__ __forceinline__ void
k_rotate (float x0, float x1, float co, float si, float *y0, float *y1)
{
    *y0 = __fsub_rn (__fmul_rn (x0, co), __fmul_rn (x1, si));
    *y1 = __fadd_rn (__fmul_rn (x0, si), __fmul_rn (x1, co));
}

//  Splits the QKV product: RoPE on q (to q, fp32) and k, and k, v into the
//  paged cache at the token's position. One block per token.
template <int W8>
static __global__ void __launch_bounds__ (K_THREADS)
k_qkv_rope (const void *raw, const float *w_scale, const float *xs, float *q,
            typename k_kv<W8>::T *kc, typename k_kv<W8>::T *vc, const int32_t *block_table, const int32_t *tok_pos,
            const int32_t *tok_slot, const float *cos_t, const float *sin_t,
            int q_dim, int kv_dim, int head_dim, int page_size, int max_blocks, bool two)
{
    K_PDL_SMALL ();
    int t = blockIdx.x;
    int N = q_dim + 2 * kv_dim, half_hd = head_dim / 2;
    float x_scale = W8 ? xs[t] : 1.0f;
    int pos = tok_pos[t];
    int page = block_table[(size_t) tok_slot[t] * max_blocks + pos / page_size];
    size_t cbase = ((size_t) page * page_size + pos % page_size) * kv_dim;
    int n_pairs = (q_dim + kv_dim) / 2;
    for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) {
        int c = 2 * p;
        float x0 = k_load<W8> (raw, w_scale, x_scale, t, c, N, two);
        float x1 = k_load<W8> (raw, w_scale, x_scale, t, c + 1, N, two);
        int i = (c % head_dim) / 2;
        float co = cos_t[(size_t) pos * half_hd + i], si = sin_t[(size_t) pos * half_hd + i];
        float y0, y1;
        k_rotate (x0, x1, co, si, &y0, &y1);
        if (c < q_dim) {
            q[(size_t) t * q_dim + c] = y0;
            q[(size_t) t * q_dim + c + 1] = y1;
        }
        else {
            k_kv_store (&kc[cbase + c - q_dim], y0);
            k_kv_store (&kc[cbase + c - q_dim + 1], y1);
        }
    }
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x)
        k_kv_store (&vc[cbase + i], k_load<W8> (raw, w_scale, x_scale, t, q_dim + kv_dim + i, N, two));
}

//  Causal attention of token t's query head h over its session's
//  positions 0 .. tok_pos[t] (the new keys are already in the cache).
//  Grid (tokens, heads), K_ATT_WARPS warps: each warp runs an online
//  softmax over every K_ATT_WARPS-th position, lanes holding EPL =
//  head_dim / 32 elements, then the warps' partial results are merged.
//  16 warps (was 4): a warp's positions are a dependent chain of loads,
//  so at ctx 256 a warp walks 16 positions instead of 64.
#ifndef K_ATT_WARPS
#define K_ATT_WARPS 16
#endif
#define K_ATT_UNROLL 4

//  Before its PDL wait an attention block may read what no kernel of the
//  pass writes: tok_pos, tok_slot and the page table (uploaded before the
//  pass). Its session's page ids go to shared memory, so a position's
//  keys cost one dependent load instead of two (page id, then keys), and
//  with `prefetch` the block that leads its (session, KV head) asks L2
//  for the keys and values of the positions before this step's: they
//  stream in while the qkv GEMM still runs, and the loads after the wait
//  hit L2. (This step's positions are the qkv GEMM's own writes: not
//  prefetched.) Called by the whole block, before K_PDL_SMALL.
#define K_ATT_PAGES 512
template <typename KV>
static __device__ __forceinline__ const int32_t *
k_att_prologue (const KV *kc, const KV *vc, const int32_t *bt, int32_t *s_pages, int pos, bool lead,
                int page_size, int kv_dim, int kv_off, int hd)
{
    int n_pages = pos / page_size + 1;
    if (n_pages > K_ATT_PAGES)
        return bt;
    for (int i = threadIdx.x; i < n_pages; i += blockDim.x)
        s_pages[i] = bt[i];
    __syncthreads ();
    if (lead) {
        const int lines = (int) ((hd * sizeof (KV) + 127) / 128);
        for (int i = threadIdx.x; i < pos * 2 * lines; i += blockDim.x) {
            int j = i / (2 * lines), r = i % (2 * lines);
            size_t base = ((size_t) s_pages[j / page_size] * page_size + j % page_size) * kv_dim + kv_off;
            const char *p = (const char *) ((r < lines ? kc : vc) + base) + (r % lines) * 128;
            asm volatile ("prefetch.global.L2 [%0];" :: "l" (p));
        }
    }
    return s_pages;
}

template <int EPL, typename KV>
static __global__ void __launch_bounds__ (K_ATT_WARPS * 32)
k_attention (const float *q, const KV *kc, const KV *vc, const int32_t *block_table,
             const int32_t *tok_pos, const int32_t *tok_slot, float *att, int n_heads, int group,
             int kv_dim, int page_size, int max_blocks, float scale, int emit, void *act, int prefetch)
{
    const int hd = EPL * 32;
    __shared__ float s_m[K_ATT_WARPS], s_l[K_ATT_WARPS], s_acc[K_ATT_WARPS][EPL * 32];
    __shared__ int32_t s_pages[K_ATT_PAGES];
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int pos = tok_pos[t], slot = tok_slot[t];
    int kv_off = (h / group) * hd;
    bool lead = prefetch && h % group == 0 && (t == 0 || tok_slot[t - 1] != slot);
    const int32_t *bt = k_att_prologue (kc, vc, block_table + (size_t) slot * max_blocks, s_pages, pos, lead,
                                        page_size, kv_dim, kv_off, hd);
    K_PDL_SMALL ();
    const float *qr = q + ((size_t) t * n_heads + h) * hd;
    float qv[EPL], acc[EPL];
#pragma unroll
    for (int e = 0; e < EPL; e++) {
        qv[e] = qr[lane + 32 * e] * scale;
        acc[e] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    //  K_ATT_UNROLL positions a step, all their keys and values loaded
    //  before the first is used: that many loads in flight per warp
    //  instead of one dependent chain (ok is warp-uniform).
    for (int j0 = warp; j0 <= pos; j0 += K_ATT_UNROLL * K_ATT_WARPS) {
        float kx[K_ATT_UNROLL][EPL], vx[K_ATT_UNROLL][EPL];
#pragma unroll
        for (int u = 0; u < K_ATT_UNROLL; u++) {
            int j = j0 + u * K_ATT_WARPS;
            if (j <= pos) {
                size_t base = ((size_t) bt[j / page_size] * page_size + j % page_size) * kv_dim + kv_off;
#pragma unroll
                for (int e = 0; e < EPL; e++) {
                    kx[u][e] = k_kv_load (&kc[base + lane + 32 * e]);
                    vx[u][e] = k_kv_load (&vc[base + lane + 32 * e]);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < K_ATT_UNROLL; u++) {
            if (j0 + u * K_ATT_WARPS > pos)
                break;
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < EPL; e++)
                s += qv[e] * kx[u][e];
            s = k_warp_sum (s);
            float mn = fmaxf (m, s);
            float c = __expf (m - mn), p = __expf (s - mn);
            l = l * c + p;
#pragma unroll
            for (int e = 0; e < EPL; e++)
                acc[e] = acc[e] * c + p * vx[u][e];
            m = mn;
        }
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < EPL; e++)
        s_acc[warp][lane + 32 * e] = acc[e];
    __syncthreads ();
    if (warp == 0) {
        //  Warp 0 always saw position 0, so M is finite; warps that saw
        //  nothing have m = -inf and weigh 0.
        float M = s_m[0];
        for (int w = 1; w < K_ATT_WARPS; w++)
            M = fmaxf (M, s_m[w]);
        float L = 0.0f, f[K_ATT_WARPS];
        for (int w = 0; w < K_ATT_WARPS; w++) {
            f[w] = s_l[w] > 0.0f ? __expf (s_m[w] - M) : 0.0f;
            L += s_l[w] * f[w];
        }
        float invL = 1.0f / L;
        float *out = att + ((size_t) t * n_heads + h) * hd;
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            float o = 0.0f;
            for (int w = 0; w < K_ATT_WARPS; w++)
                o += s_acc[w][lane + 32 * e] * f[w];
            if (emit == 1)
                ((__half *) act)[((size_t) t * n_heads + h) * hd + lane + 32 * e] = __float2half (o * invL);
            else
                out[lane + 32 * e] = o * invL;
        }
    }
    //  The emit kernel fused (round 3), fp16 only (emit 1): the row went
    //  to act as fp16 above. (w8a8's quantization needs the whole row's
    //  maximum; a last-block-quantizes variant measured no faster than the
    //  emit kernel, gpu/NOTES.md round 3, and was removed.)
}

//  Sixteen cached elements (keys or values) of one position as loaded:
//  fp16 in two 16-byte pieces, fp32 (w8's cache) in four.
template <typename KV> struct k_kv16 {
    uint4 r[sizeof (KV)];
    __device__ __forceinline__ void load (const KV *p)
    {
#pragma unroll
        for (int i = 0; i < (int) sizeof (KV); i++)
            r[i] = __ldcg ((const uint4 *) p + i);
    }
    __device__ __forceinline__ void zero (void)
    {
#pragma unroll
        for (int i = 0; i < (int) sizeof (KV); i++)
            r[i] = make_uint4 (0, 0, 0, 0);
    }
    __device__ __forceinline__ float get (int e) const { return k_kv_load ((const KV *) r + e); }
};

//  The same causal attention (grid (tokens, heads)) for head_dim = 16 LP,
//  LP = 2, 4, 8 or 16: a group of LP lanes takes one cached position at a
//  time, each lane 16 of the head's elements (one or two 16-byte loads of
//  keys and of values), so a warp works on 32 / LP positions at once and
//  a score costs log2 LP shuffles. Why: k_attention, a whole warp a
//  position, was bound by its instruction chain (an H100 under ncu: 19 us
//  at ctx 256, 12 cycles a warp instruction, 1.8 % of DRAM bandwidth: per
//  position 8 scalar loads, 8 conversions, a 5-shuffle reduction and the
//  page arithmetic, for 4 FMAs a lane), 12.6 us a layer of the 8B verify
//  inside the graph (gpu/NOTES.md session 4). Each group runs the online
//  softmax over every NG-th position (NG groups a block, K_ATT_U of its
//  positions loaded before the first is used); the groups of a warp are
//  merged with shuffles, the warps through shared memory. The element
//  order of the sums differs from k_attention's (a few ulps). Warps and
//  positions in flight, 8B w8a8 verify on an H100 (session 4, same run):
//  16 x 1 3.37 ms, 8 x 2 3.44, 4 x 4 3.51: the more groups share a
//  head's positions, the shorter each one's chain; 16 warps at <= 64
//  registers keep 2 blocks an SM, so the 160 blocks of a 5-token verify
//  still fit in one wave.
#ifndef K_ATT_LANES_WARPS
#define K_ATT_LANES_WARPS 16
#endif
#ifndef K_ATT_U
#define K_ATT_U 1
#endif
template <int LP, typename KV>
static __global__ void __launch_bounds__ (K_ATT_LANES_WARPS * 32)
k_attention_lanes (const float *q, const KV *kc, const KV *vc, const int32_t *block_table,
                   const int32_t *tok_pos, const int32_t *tok_slot, float *att, int n_heads, int group,
                   int kv_dim, int page_size, int max_blocks, float scale, int emit, void *act, int prefetch,
                   float *amax)
{
    const int hd = 16 * LP, QP = 32 / LP, NG = K_ATT_LANES_WARPS * QP, U = K_ATT_U;
    __shared__ float s_m[K_ATT_LANES_WARPS], s_l[K_ATT_LANES_WARPS], s_acc[K_ATT_LANES_WARPS][hd];
    __shared__ int32_t s_pages[K_ATT_PAGES];
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int sub = lane % LP;
    int pos = tok_pos[t], slot = tok_slot[t];
    int kv_off = (h / group) * hd + sub * 16;
    bool lead = prefetch && h % group == 0 && (t == 0 || tok_slot[t - 1] != slot);
    const int32_t *bt = k_att_prologue (kc, vc, block_table + (size_t) slot * max_blocks, s_pages, pos, lead,
                                        page_size, kv_dim, (h / group) * hd, hd);
    //  Page arithmetic by shifts where the page size is a power of 2.
    int shift = (page_size & (page_size - 1)) == 0 ? __ffs (page_size) - 1 : -1;
    K_PDL_SMALL ();
    const float4 *qr = (const float4 *) (q + ((size_t) t * n_heads + h) * hd + sub * 16);
    float qv[16], acc[16];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float4 v = qr[i];
        qv[4 * i] = v.x * scale;
        qv[4 * i + 1] = v.y * scale;
        qv[4 * i + 2] = v.z * scale;
        qv[4 * i + 3] = v.w * scale;
    }
#pragma unroll
    for (int e = 0; e < 16; e++)
        acc[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    //  Warp-uniform trip count (the shuffles need every lane); a group's
    //  position j is valid while j <= pos.
    for (int j0 = warp * QP; j0 <= pos; j0 += NG * U) {
        k_kv16<KV> kx[U], vx[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int j = j0 + lane / LP + u * NG;
            if (j <= pos) {
                int pg = shift >= 0 ? j >> shift : j / page_size;
                int off = shift >= 0 ? j & (page_size - 1) : j % page_size;
                size_t base = ((size_t) bt[pg] * page_size + off) * kv_dim + kv_off;
                kx[u].load (kc + base);
                vx[u].load (vc + base);
            }
            else {
                kx[u].zero ();
                vx[u].zero ();
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < 16; e++)
                s += qv[e] * kx[u].get (e);
#pragma unroll
            for (int o = LP / 2; o >= 1; o /= 2)
                s += __shfl_xor_sync (0xffffffffu, s, o);
            if (j0 + lane / LP + u * NG <= pos) {
                float mn = fmaxf (m, s);
                float c = __expf (m - mn), p = __expf (s - mn);
                l = l * c + p;
#pragma unroll
                for (int e = 0; e < 16; e++)
                    acc[e] = acc[e] * c + p * vx[u].get (e);
                m = mn;
            }
        }
    }
    //  The warp's QP groups merged: lanes sub, sub + LP, ... hold the same
    //  elements of different groups. A group that saw nothing has m = -inf
    //  and weighs 0.
#pragma unroll
    for (int o = LP; o < 32; o *= 2) {
        float mo = __shfl_xor_sync (0xffffffffu, m, o), lo = __shfl_xor_sync (0xffffffffu, l, o);
        float mn = fmaxf (m, mo);
        float f = m == -INFINITY ? 0.0f : __expf (m - mn), fo = mo == -INFINITY ? 0.0f : __expf (mo - mn);
        l = l * f + lo * fo;
#pragma unroll
        for (int e = 0; e < 16; e++)
            acc[e] = acc[e] * f + __shfl_xor_sync (0xffffffffu, acc[e], o) * fo;
        m = mn;
    }
    if (lane < LP) {
        if (lane == 0) {
            s_m[warp] = m;
            s_l[warp] = l;
        }
#pragma unroll
        for (int e = 0; e < 16; e++)
            s_acc[warp][sub * 16 + e] = acc[e];
    }
    __syncthreads ();
    //  Thread i < hd: element i over the warps. Warp 0 saw position 0, so
    //  M is finite.
    int i = threadIdx.x;
    if (i < hd) {
        float M = s_m[0];
#pragma unroll
        for (int w = 1; w < K_ATT_LANES_WARPS; w++)
            M = fmaxf (M, s_m[w]);
        float L = 0.0f, o = 0.0f;
#pragma unroll
        for (int w = 0; w < K_ATT_LANES_WARPS; w++) {
            float f = s_l[w] > 0.0f ? __expf (s_m[w] - M) : 0.0f;
            L += s_l[w] * f;
            o += s_acc[w][i] * f;
        }
        size_t at = ((size_t) t * n_heads + h) * hd + i;
        if (emit == 1)
            ((__half *) act)[at] = __float2half (o / L);
        else
            att[at] = o / L;
        //  w8a8 (amax): the head's max |o / L| into the token's maximum,
        //  for k_emit_max.
        if (amax) {
            float v = fabsf (o / L);
#pragma unroll
            for (int d = 16; d >= 1; d /= 2)
                v = fmaxf (v, __shfl_xor_sync (0xffffffffu, v, d));
            if ((i & 31) == 0)
                k_atomic_max (amax + t, v);
        }
    }
}

//  The same attention with one block per (token, KV head): the G query
//  heads that share the KV head are computed together, so each key and
//  value is loaded once for all of them (k_attention loads it G times,
//  which at 64 sessions x 5 positions made attention 60 % of the step:
//  10,240 blocks each reading its session's whole cache through L2).
//  Same online softmax per head; same warp partition and merge order, so
//  a head's result equals k_attention's up to the summation order of the
//  merge (identical: per head the same operations in the same order).
template <int EPL, typename KV, int G>
static __global__ void __launch_bounds__ (K_ATT_WARPS * 32, 2)
k_attention_gqa (const float *q, const KV *kc, const KV *vc, const int32_t *block_table,
                 const int32_t *tok_pos, const int32_t *tok_slot, float *att, int n_heads,
                 int kv_dim, int page_size, int max_blocks, float scale)
{
    K_PDL_SMALL ();
    //  Positions in flight a warp: fewer when G heads' state fills the
    //  registers (2 blocks an SM need <= 64 registers a thread).
    constexpr int U = G * EPL >= 16 ? 2 : K_ATT_UNROLL;
    const int hd = EPL * 32;
    __shared__ float s_m[K_ATT_WARPS][G], s_l[K_ATT_WARPS][G], s_acc[K_ATT_WARPS][G][EPL * 32];
    int t = blockIdx.x, kvh = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int pos = tok_pos[t];
    const int32_t *bt = block_table + (size_t) tok_slot[t] * max_blocks;
    int kv_off = kvh * hd;
    float qv[G][EPL], acc[G][EPL], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        const float *qr = q + ((size_t) t * n_heads + kvh * G + g) * hd;
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            qv[g][e] = qr[lane + 32 * e] * scale;
            acc[g][e] = 0.0f;
        }
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    for (int j0 = warp; j0 <= pos; j0 += U * K_ATT_WARPS) {
        float kx[U][EPL], vx[U][EPL];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int j = j0 + u * K_ATT_WARPS;
            if (j <= pos) {
                size_t base = ((size_t) bt[j / page_size] * page_size + j % page_size) * kv_dim + kv_off;
#pragma unroll
                for (int e = 0; e < EPL; e++) {
                    kx[u][e] = k_kv_load (&kc[base + lane + 32 * e]);
                    vx[u][e] = k_kv_load (&vc[base + lane + 32 * e]);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (j0 + u * K_ATT_WARPS > pos)
                break;
#pragma unroll
            for (int g = 0; g < G; g++) {
                float sc = 0.0f;
#pragma unroll
                for (int e = 0; e < EPL; e++)
                    sc += qv[g][e] * kx[u][e];
                sc = k_warp_sum (sc);
                float mn = fmaxf (m[g], sc);
                float c = __expf (m[g] - mn), p = __expf (sc - mn);
                l[g] = l[g] * c + p;
#pragma unroll
                for (int e = 0; e < EPL; e++)
                    acc[g][e] = acc[g][e] * c + p * vx[u][e];
                m[g] = mn;
            }
        }
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        if (lane == 0) {
            s_m[warp][g] = m[g];
            s_l[warp][g] = l[g];
        }
#pragma unroll
        for (int e = 0; e < EPL; e++)
            s_acc[warp][g][lane + 32 * e] = acc[g][e];
    }
    __syncthreads ();
    //  Warp g merges head g (warps beyond G idle here).
    for (int g = warp; g < G; g += K_ATT_WARPS) {
        float M = s_m[0][g];
        for (int w = 1; w < K_ATT_WARPS; w++)
            M = fmaxf (M, s_m[w][g]);
        float L = 0.0f, f[K_ATT_WARPS];
        for (int w = 0; w < K_ATT_WARPS; w++) {
            f[w] = s_l[w][g] > 0.0f ? __expf (s_m[w][g] - M) : 0.0f;
            L += s_l[w][g] * f[w];
        }
        float invL = 1.0f / L;
        float *out = att + ((size_t) t * n_heads + kvh * G + g) * hd;
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            float o = 0.0f;
            for (int w = 0; w < K_ATT_WARPS; w++)
                o += s_acc[w][g][lane + 32 * e] * f[w];
            out[lane + 32 * e] = o * invL;
        }
    }
}

//  act[t] = x[t] (fp32 rows of K) in the GEMM input format.
template <int W8, int NPT>
static __global__ void __launch_bounds__ (K_THREADS)
k_emit (const float *x, int K, void *act, float *xs, int8_t *act2, float *xsum)
{
    K_PDL_SMALL ();
    __shared__ float sh[32];
    int t = blockIdx.x;
    const float *row = x + (size_t) t * K;
    if (NPT > 0 && W8 != 2) {
        const int N = NPT > 0 ? NPT : 1;
        float v[N], amax = 0.0f;
#pragma unroll
        for (int k = 0; k < N; k++) {
            int i = threadIdx.x + k * blockDim.x;
            v[k] = i < K ? row[i] : 0.0f;
            amax = fmaxf (amax, fabsf (v[k]));
        }
        k_emit_regs<W8, N> (v, K, act, act2, xs, t, amax, sh);
        return;
    }
    float amax = 0.0f;
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        if (W8)
            amax = fmaxf (amax, fabsf (row[i]));
        else
            ((__half *) act)[(size_t) t * K + i] = __float2half (row[i]);
    }
    if (W8)
        k_emit_q<W8> (x, (int8_t *) act, xs, t, K, amax, sh, act2, xsum);
}

//  act[t] = silu (gate) * up from the gate|up product (2 * hidden), whose
//  rows are interleaved (gate i, up i at 2i, 2i + 1: s_mat_upload). Only
//  for batches the tensor-core GEMM does not take (its epilogue applies
//  SwiGLU itself, gpu_mma.cuh).
template <int W8, int NPT>
static __global__ void __launch_bounds__ (K_THREADS)
k_swiglu (const void *raw, const float *w_scale, float *xs, int hidden, void *act, float *xf, int8_t *act2,
          float *xsum)
{
    K_PDL_SMALL ();
    __shared__ float sh[32];
    int t = blockIdx.x;
    float x_scale = W8 ? xs[t] : 1.0f;
    if (NPT > 0 && W8 != 2) {
        const int N = NPT > 0 ? NPT : 1;
        float v[N], amax = 0.0f;
#pragma unroll
        for (int k = 0; k < N; k++) {
            int i = threadIdx.x + k * blockDim.x;
            v[k] = 0.0f;
            if (i < hidden) {
                float g = k_load<W8> (raw, w_scale, x_scale, t, 2 * i, 2 * hidden, act2 != NULL);
                float u = k_load<W8> (raw, w_scale, x_scale, t, 2 * i + 1, 2 * hidden, act2 != NULL);
                v[k] = k_swiglu_val (g, u);
                amax = fmaxf (amax, fabsf (v[k]));
            }
        }
        k_emit_regs<W8, N> (v, hidden, act, act2, xs, t, amax, sh);
        return;
    }
    float amax = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float g = k_load<W8> (raw, w_scale, x_scale, t, 2 * i, 2 * hidden, act2 != NULL);
        float u = k_load<W8> (raw, w_scale, x_scale, t, 2 * i + 1, 2 * hidden, act2 != NULL);
        float v = k_swiglu_val (g, u);
        if (W8) {
            xf[(size_t) t * hidden + i] = v;
            amax = fmaxf (amax, fabsf (v));
        }
        else
            ((__half *) act)[(size_t) t * hidden + i] = __float2half (v);
    }
    if (W8)
        k_emit_q<W8> (xf, (int8_t *) act, xs, t, hidden, amax, sh, act2, xsum);
}

//  The warp's largest (value, index) pair, lowest index on ties, in every lane.
static __device__ __forceinline__ void
k_warp_argmax (float *best, int *best_i)
{
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync (0xffffffffu, *best, o);
        int oi = __shfl_xor_sync (0xffffffffu, *best_i, o);
        if (ov > *best || (ov == *best && oi < *best_i)) {
            *best = ov;
            *best_i = oi;
        }
    }
}

//  logits[t] = head product (rows of ld, vocab used), dequantized; argmax[t] = its largest entry
//  (lowest index on ties; NaN never wins). Grid (blocks, tokens), 1024
//  threads: each block takes a slice of the vocabulary, and its best (value,
//  index) goes into key[t] by a 64-bit atomicMax on a key that orders as
//  the pair does (value bits made unsigned-ordered, then the complement of
//  the index), which is exact in any order. The last block of a token to
//  arrive (arrived[t]) writes argmax[t] and zeroes key[t] and arrived[t]
//  for the next pass. Why: one block a token read the 128K-wide rows
//  alone and cost 42 us of the 8B verify's graph (gpu/NOTES.md session 5).
template <int W8>
static __global__ void
k_head (const void *raw, const float *w_scale, const float *xs, int vocab, int ld, float *logits,
        int32_t *argmax, bool two, unsigned long long *key, unsigned int *arrived)
{
    K_PDL_SMALL ();
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    int t = blockIdx.y;
    float x_scale = W8 ? xs[t] : 1.0f;
    float best = -INFINITY;
    int best_i = 0x7fffffff;
    int P = (gridDim.y + 3) / 4 * 4;
    int slice = (vocab + gridDim.x - 1) / gridDim.x, lo = blockIdx.x * slice;
    int hi = min (vocab, lo + slice);
    //  Eight values a thread loaded before any is used: one load at a time
    //  made the kernel a chain of L2 round trips (gpu/NOTES.md session 4).
    const int C = 8;
    for (int i0 = lo + threadIdx.x; i0 < hi; i0 += C * blockDim.x) {
        float v[C];
#pragma unroll
        for (int c = 0; c < C; c++) {
            int i = i0 + c * blockDim.x;
            v[c] = i < hi ? k_load_p<W8> (raw, w_scale, x_scale, t, i, ld, two, P) : -INFINITY;
        }
#pragma unroll
        for (int c = 0; c < C; c++) {
            int i = i0 + c * blockDim.x;
            if (i >= hi)
                break;
            logits[(size_t) t * vocab + i] = v[c];
            if (v[c] > best) {  //  i increases per thread: first max kept
                best = v[c];
                best_i = i;
            }
        }
    }
    k_warp_argmax (&best, &best_i);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) {
        s_v[warp] = best;
        s_i[warp] = best_i;
    }
    __syncthreads ();
    if (warp != 0)
        return;
    best = lane < nw ? s_v[lane] : -INFINITY;
    best_i = lane < nw ? s_i[lane] : 0x7fffffff;
    k_warp_argmax (&best, &best_i);
    if (lane != 0)
        return;
    if (best_i != 0x7fffffff) {
        unsigned int u = __float_as_uint (best);
        u = u & 0x80000000u ? ~u : u | 0x80000000u;
        atomicMax (key + t, (unsigned long long) u << 32 | (0xffffffffu - (unsigned int) best_i));
    }
    __threadfence ();
    if (atomicAdd (arrived + t, 1u) == gridDim.x - 1) {
        unsigned long long k = atomicExch (key + t, 0ull);
        arrived[t] = 0;
        argmax[t] = k ? (int32_t) (0xffffffffu - (unsigned int) (k & 0xffffffffu)) : 0;
    }
}

//  probs[t] = softmax (logits[t] * inv_temp). One block per token.
static __global__ void
k_softmax (const float *logits, float *probs, int vocab, float inv_temp)
{
    K_PDL_SMALL ();
    __shared__ float sh[32];
    int t = blockIdx.x;
    const float *row = logits + (size_t) t * vocab;
    float *out = probs + (size_t) t * vocab;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x)
        mx = fmaxf (mx, row[i] * inv_temp);
    mx = k_block_max (mx, sh);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float e = expf (row[i] * inv_temp - mx);
        out[i] = e;
        sum += e;
    }
    sum = k_block_sum (sum, sh);
    float inv = 1.0f / sum;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x)
        out[i] *= inv;
}

static __device__ __forceinline__ void k_put (int32_t *p, int v) { *p = v; }
static __device__ __forceinline__ void k_put (float *p, float v) { *p = v; }
static __device__ __forceinline__ void k_put (__half *p, float v) { *p = __float2half (v); }

//  --- skinny GEMMs for verify-sized batches --------------------------------
//
//  raw (t x n) = act (t x K) W^T for t <= 8 tokens, where the product is a
//  pass over the weights: cuBLASLt's tiles leave most of the chip idle at
//  such widths (measured: 2 to 3x the bandwidth floor on Llama-3-8B
//  shapes). Each warp owns K_SK_ROWS rows and walks them in 16-byte
//  chunks (lane-strided, so a warp reads 512 contiguous bytes per row per
//  step); each activation chunk, read once per step for all T tokens, is
//  reused for the warp's rows. Partial sums are reduced across the warp at
//  the end. The products are the same as cuBLASLt's: int32 sums (exact, so
//  identical) or fp16 results of fp32 accumulation. Needs K % 16 == 0.
#define K_SK_WARPS 8
#ifndef K_SK_ROWS
#define K_SK_ROWS 4             //  8 measured slower in every GEMM (round 3: registers)
#endif
#ifndef K_SK_UNROLL
#define K_SK_UNROLL 8           //  chunks a lane's loop unrolls (loads in flight)
#endif
static constexpr int k_sk_unroll = K_SK_UNROLL;     //  (pragmas do not expand macros)

//  Split form (template S = 2, 4 or 8 warps a row group; S = 1 is the
//  plain form), for matrices of few rows (o, down, qkv: N / 32 blocks
//  would leave most SMs with one block and too few bytes in flight): S
//  warps share each 4-row group, each walking every S-th 512-byte stretch
//  of it, so a matrix makes S x the blocks (but each block then reads the
//  activations for fewer rows: more L2 traffic). The S warps' sums (each
//  already reduced over its lanes) are added here in warp order, so a
//  row's result does not depend on the batch.
template <int T, int S, typename A, typename O>
static __device__ __forceinline__ void
k_skinny_split_out (A (&acc)[K_SK_ROWS][T], O *Y, int N, int warp, int lane)
{
    __shared__ A sh[K_SK_WARPS][K_SK_ROWS * T];
    if (lane == 0)
#pragma unroll
        for (int r = 0; r < K_SK_ROWS; r++)
#pragma unroll
            for (int t = 0; t < T; t++)
                sh[warp][r * T + t] = acc[r][t];
    __syncthreads ();
    //  Thread i: row group i / (ROWS T) (warps S g .. S g + S - 1), entry j.
    int i = threadIdx.x;
    if (i < (K_SK_WARPS / S) * K_SK_ROWS * T) {
        int g = i / (K_SK_ROWS * T), j = i % (K_SK_ROWS * T);
        int r = j / T, t = j % T;
        int row = (blockIdx.x * (K_SK_WARPS / S) + g) * K_SK_ROWS + r;
        A v = sh[g * S][j];
#pragma unroll
        for (int w = 1; w < S; w++)
            v += sh[g * S + w][j];
        if (row < N)
            k_put (&Y[(size_t) t * N + row], v);
    }
}

//  The qkv GEMM's epilogue (skinny kernels, fp16 and w8a8, round 3):
//  RoPE on the q and k rows, q to its fp32 buffer, k and v into the KV
//  cache, with k_qkv_rope's arithmetic on the product as it would have been
//  stored (w8a8: int32 x token scale x row scale; fp16: rounded to fp16),
//  so the qkv_rope kernel and the product's round trip go away. A RoPE
//  pair is two adjacent rows of one warp's 4 (q_dim, kv_dim, head_dim
//  even). t0: the launch's first token in the batch.
struct k_rope_ep {
    //  SwiGLU epilogue (gate|up): the product's row pairs (gate i, up i)
    //  become element i of a hidden-wide row: fp32 into swiglu_f32 (w8a8,
    //  quantized by k_emit after the GEMM) or fp16 into swiglu_f16 (the
    //  down GEMM's input; not act, which other blocks may still read).
    float *swiglu_f32;
    __half *swiglu_f16;
    int hidden;
    float *amax;                //  w8a8: per token max |SwiGLU| (k_atomic_max), or NULL
    //  Residual epilogue (o, down; the plain store's place): x[t] +=
    //  product instead of a store to Y. With res_nw (the next RMSNorm's
    //  weights) each block also writes its rows' sum of x^2 per token to
    //  res_ss[t][block] and, with res_amax (w8a8), reduces max |x norm_w|
    //  per token (k_atomic_max): the norm is then element-wise
    //  (k_norm_emit) instead of one block a token reducing twice.
    float *res_x;
    const float *res_nw;
    float *res_ss, *res_amax;
    float *q;                   //  NULL: no RoPE epilogue
    __half *kc, *vc;
    const int32_t *block_table, *tok_pos, *tok_slot;
    const float *cos_t, *sin_t;   //  RoPE's table by position (k_rope_table)
    int t0, q_dim, kv_dim, head_dim, page_size, max_blocks;
};

//  Columns c, c + 1 (c even) of token t's qkv product (x0, x1, as the
//  product would have been stored): rotated (co, si: the pair's angle at
//  the token's position) and stored; cbase is the token's row in the
//  layer's KV cache.
static __device__ __forceinline__ void
k_rope_store (const k_rope_ep &e, int t, size_t cbase, float co, float si, int c, float x0, float x1)
{
    if (c >= e.q_dim + e.kv_dim) {
        k_kv_store (&e.vc[cbase + c - e.q_dim - e.kv_dim], x0);
        k_kv_store (&e.vc[cbase + c - e.q_dim - e.kv_dim + 1], x1);
        return;
    }
    float y0, y1;
    k_rotate (x0, x1, co, si, &y0, &y1);
    if (c < e.q_dim) {
        e.q[(size_t) t * e.q_dim + c] = y0;
        e.q[(size_t) t * e.q_dim + c + 1] = y1;
    }
    else {
        k_kv_store (&e.kc[cbase + c - e.q_dim], y0);
        k_kv_store (&e.kc[cbase + c - e.q_dim + 1], y1);
    }
}

//  The CPU engine's w8 (gpu.h, GPU_FMT_W8): W in groups of 32 columns with
//  one fp16 scale (Wd, (N, K/32)), X in groups of 32 with one fp32 scale
//  (Xd, (T, K/32)); Y (T x N) fp32 = per group the exact int32 dot product
//  times d_w * d_x, summed over groups (kernels.c's s_matmul_w8; only the
//  order of the float sum differs). A 16-byte chunk is half a group: lanes
//  2j and 2j+1 hold one group's halves, so every lane runs every step
//  (full-warp shuffles) and the even lane adds the group.
template <int T, int S>
static __global__ void __launch_bounds__ (K_SK_WARPS * 32)
k_skinny_i8g (const int8_t *__restrict__ W, const __half *__restrict__ Wd,
              const __half *__restrict__ Wm, const int8_t *__restrict__ X, const int8_t *__restrict__ X2,
              const float *__restrict__ Xd, const float *__restrict__ Xs, float *__restrict__ Y,
              int N, int K, int pf)
{
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row0 = (blockIdx.x * (K_SK_WARPS / S) + warp / S) * K_SK_ROWS, kpart = warp % S;
    if (pf && row0 < N)
#pragma unroll
        for (int r = 0; r < K_SK_ROWS; r++)
            k_prefetch_row (W + (size_t) min (row0 + r, N - 1) * K, pf, lane);
    K_PDL ();
    if (S == 1 && row0 >= N)
        return;
    int G = K / 32;
    const int4 *w[K_SK_ROWS];
    const __half *wd[K_SK_ROWS], *wm[K_SK_ROWS];
#pragma unroll
    for (int r = 0; r < K_SK_ROWS; r++) {
        int row = min (row0 + r, N - 1);
        w[r] = (const int4 *) (W + (size_t) row * K);
        wd[r] = Wd + (size_t) row * G;
        wm[r] = Wm + (size_t) row * G;
    }
    float acc[K_SK_ROWS][T];
#pragma unroll
    for (int r = 0; r < K_SK_ROWS; r++)
#pragma unroll
        for (int t = 0; t < T; t++)
            acc[r][t] = 0.0f;
    int nk = K / 16;
    for (int base = kpart * 32; base < nk; base += S * 32) {
        int c = base + lane;
        bool ok = c < nk;
        int g = c >> 1;
        int4 wv[K_SK_ROWS];
        float dw[K_SK_ROWS], mw[K_SK_ROWS];
#pragma unroll
        for (int r = 0; r < K_SK_ROWS; r++) {
            wv[r] = ok ? __ldcs (w[r] + c) : make_int4 (0, 0, 0, 0);
            dw[r] = ok ? __half2float (wd[r][g]) : 0.0f;
            mw[r] = ok ? __half2float (wm[r][g]) : 0.0f;
        }
#pragma unroll
        for (int t = 0; t < T; t++) {
            int4 xv = ok ? __ldg ((const int4 *) (X + (size_t) t * K) + c) : make_int4 (0, 0, 0, 0);
            int4 xv2 = ok && X2 ? __ldg ((const int4 *) (X2 + (size_t) t * K) + c) : make_int4 (0, 0, 0, 0);
            float dx = ok ? Xd[(size_t) t * G + g] : 0.0f;
            float sx = ok ? Xs[(size_t) t * G + g] : 0.0f;
#pragma unroll
            for (int r = 0; r < K_SK_ROWS; r++) {
                //  kernels.c s_matmul_w8: per group d_w d_x isum + m_w s_x,
                //  isum = 256 isum (q) + isum (q2) with two levels (exact
                //  in int32: |isum (q)| <= 32 x 127 x 127).
                int v = __dp4a (wv[r].x, xv.x, 0);
                v = __dp4a (wv[r].y, xv.y, v);
                v = __dp4a (wv[r].z, xv.z, v);
                v = __dp4a (wv[r].w, xv.w, v);
                int v2 = __dp4a (wv[r].x, xv2.x, 0);
                v2 = __dp4a (wv[r].y, xv2.y, v2);
                v2 = __dp4a (wv[r].z, xv2.z, v2);
                v2 = __dp4a (wv[r].w, xv2.w, v2);
                v += __shfl_xor_sync (0xffffffffu, v, 1);
                v2 += __shfl_xor_sync (0xffffffffu, v2, 1);
                int isum = X2 ? v * 256 + v2 : v;
                if (!(lane & 1))
                    acc[r][t] = __fadd_rn (acc[r][t], __fadd_rn (__fmul_rn (__fmul_rn (dw[r], dx), (float) isum),
                                                                 __fmul_rn (mw[r], sx)));
            }
        }
    }
#pragma unroll
    for (int r = 0; r < K_SK_ROWS; r++)
#pragma unroll
        for (int t = 0; t < T; t++) {
            float v = k_warp_sum (acc[r][t]);
            acc[r][t] = v;
            if (S == 1 && lane == ((r * T + t) & 31) && row0 + r < N)
                Y[(size_t) t * N + row0 + r] = v;
        }
    if (S > 1)
        k_skinny_split_out<T, S, float, float> (acc, Y, N, warp, lane);
}

#define K_SKINNY_MAX_T 8

//  --- synthetic weights -------------------------------------------------

static __device__ __forceinline__ uint64_t
k_mix (uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

//  Uniform in [-1, 1) from (seed, index).
static __device__ __forceinline__ float
k_uniform (uint64_t seed, uint64_t i)
{
    return (float) ((k_mix (seed ^ k_mix (i)) >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static __global__ void
k_fill_half (__half *w, size_t n, uint64_t seed, float amp)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x)
        w[i] = __float2half (k_uniform (seed, i) * amp);
}

static __global__ void
k_fill_int8 (int8_t *w, size_t n, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x)
        w[i] = (int8_t) __float2int_rn (k_uniform (seed, i) * 127.0f);
}

static __global__ void
k_fill_const_half (__half *w, size_t n, float v)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x)
        w[i] = __float2half (v);
}

static __global__ void
k_fill_const (float *w, size_t n, float v)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x)
        w[i] = v;
}

#endif
