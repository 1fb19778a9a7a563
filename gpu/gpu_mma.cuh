/*  gpu_mma.cuh: tensor-core GEMMs for verify-sized batches (<= 8 tokens),
    fp16 and W8A8. Private to gpu_model.cu (after gpu_kernels.cuh).

    Why tensor cores for a product that is bound by reading the weights:
    the dp4a / fp32-FMA loops (round 3) issued one instruction per 4 weight
    bytes and token, so the wide w8a8 matrices ran at 71 % of copy
    bandwidth, instruction-bound, and a second activation level (below)
    would have doubled that. One mma.sync consumes 512 weight bytes for all
    8 tokens at once, so the loop is loads and little else.

    Weights stay row-major (the same buffers cuBLASLt reads for large
    batches). A warp owns 16 rows: lane (g = lane / 4, q = lane % 4) loads
    16 contiguous bytes of row g and of row g + 8 at byte q * 16 of each
    64-byte span. The mma's k order inside a span is free as long as A and
    B agree, so those 16 bytes are used as the A fragments of two k-tiles
    (int8 m16n8k32: bytes 0-7 and 8-15; fp16 m16n8k16: halves 0-3 and 4-7)
    and the B fragment is the same 16 bytes of token g's activations: a
    span costs two 16-byte weight loads, one activation load (L1) and two
    mma per level. S warps share a row tile (warp kpart takes spans kpart,
    kpart + S, ...), so a matrix of few rows still has enough warps and
    bytes in flight; their sums are added in shared memory in warp order
    (int32 sums are exact in any order; fp16's fp32 sums use a fixed
    order, so a row's result never depends on the batch).

    W8A8 activations on two levels (as the CPU engine's w8): q1 = rint (x /
    d), q2 = rint (256 (x / d - q1)), d = max |x| / 127 per token, so x ~
    d (q1 + q2 / 256): one more mma a k-tile, and an int8 rounding that
    flips moves a value by 1/256 of a step instead of a whole step. With
    one level the W8A8 pass is rounding-chaotic on SmolLM2 (gpu/NOTES.md:
    two implementations agree on 85 % of greedy tokens); with two the
    product is y = s_w d (a1 + a2 / 256), a1, a2 exact int32 sums,
    combined in double and rounded once (k_deq_w8a8; the cuBLASLt path
    and the CPU reference do the same).

    PDL: each thread's first U spans of weights are loaded before the
    kernel waits for its predecessor (weights are constant), so a GEMM's
    stream starts while the small kernel before it still runs.
*/
#ifndef SPLITMESH_GPU_MMA_CUH
#define SPLITMESH_GPU_MMA_CUH

#define K_MMA_WARPS 8
//  0: the first weights are loaded after the PDL wait (measurement).
#ifndef K_MMA_PRELOAD
#define K_MMA_PRELOAD 1
#endif
#ifndef K_MMA_UNROLL
#define K_MMA_UNROLL 4          //  spans of weights in flight a lane (2 x 16 bytes each)
#endif

static __device__ __forceinline__ void
k_mma_s8 (int (&c)[4], int a0, int a1, int a2, int a3, int b0, int b1)
{
    asm ("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
         "{%0,%1,%2,%3};"
         : "+r" (c[0]), "+r" (c[1]), "+r" (c[2]), "+r" (c[3])
         : "r" (a0), "r" (a1), "r" (a2), "r" (a3), "r" (b0), "r" (b1));
}

static __device__ __forceinline__ void
k_mma_f16 (float (&c)[4], int a0, int a1, int a2, int a3, int b0, int b1)
{
    asm ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
         "{%0,%1,%2,%3};"
         : "+f" (c[0]), "+f" (c[1]), "+f" (c[2]), "+f" (c[3])
         : "r" (a0), "r" (a1), "r" (a2), "r" (a3), "r" (b0), "r" (b1));
}

//  A lane's 16 bytes of weights. LD 0: row-major, streamed (evict first);
//  1: row-major with the L2 asked to fetch 256 bytes around each request
//  (a warp's load touches 16 rows x 64 bytes; the hint lets the next
//  spans' requests hit L2); 2: the tiled copy (k_mma_tile), where a warp's
//  load is 512 contiguous bytes.
template <int LD>
static __device__ __forceinline__ int4
k_mma_ld (const int4 *p)
{
    if (LD == 1) {
        int4 v;
        asm volatile ("ld.global.cs.L2::256B.v4.s32 {%0,%1,%2,%3}, [%4];"
                      : "=r" (v.x), "=r" (v.y), "=r" (v.z), "=r" (v.w) : "l" (p));
        return v;
    }
    return __ldcs (p);
}

//  The tiled copy of a row-major matrix (N rows of row_bytes, a multiple
//  of 64): per 16-row tile and 64-byte span, 1024 bytes in the order the
//  mma fragments want them: 32 lanes x 16 bytes of rows 0-7 (lane g, q:
//  row g, bytes q * 16 of the span), then the same for rows 8-15. Rows
//  past N are zero. One thread a 16-byte piece.
static __global__ void
k_mma_tile (const char *W, char *Wt, int N, size_t row_bytes, size_t n_pieces)
{
    size_t nspan = row_bytes / 64;
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n_pieces;
         i += (size_t) gridDim.x * blockDim.x) {
        int lane = (int) (i % 32), part = (int) (i / 32 % 2);
        size_t span = i / 64 % nspan, tile = i / 64 / nspan;
        size_t row = tile * 16 + (lane >> 2) + 8 * part;
        int4 v = make_int4 (0, 0, 0, 0);
        if (row < (size_t) N)
            v = *(const int4 *) (W + row * row_bytes + span * 64 + (lane & 3) * 16);
        ((int4 *) Wt)[i] = v;
    }
}

//  One span (two k-tiles) of a 16-row tile: wa / wb rows g / g + 8, x
//  token g's activations, all at the lane's 16 bytes of the span.
template <int F, typename C>
static __device__ __forceinline__ void
k_mma_span (C (&c)[4], const int4 &wa, const int4 &wb, const int4 &x)
{
    if (F == 1) {
        k_mma_s8 ((int (&)[4]) c, wa.x, wb.x, wa.y, wb.y, x.x, x.y);
        k_mma_s8 ((int (&)[4]) c, wa.z, wb.z, wa.w, wb.w, x.z, x.w);
    }
    else {
        k_mma_f16 ((float (&)[4]) c, wa.x, wb.x, wa.y, wb.y, x.x, x.y);
        k_mma_f16 ((float (&)[4]) c, wa.z, wb.z, wa.w, wb.w, x.z, x.w);
    }
}

//  Y (T x N) = X (T x K) W^T for T <= 8 tokens. F = 0: fp16 W, X and Y
//  (fp32 sums); F = 1: int8 W with per-row scales ws, int8 X with per-token
//  scales xs and optional second level X2, fp32 Y (k_deq_w8a8). With ep.q
//  the qkv epilogue (RoPE, q and the KV cache) replaces the store to Y,
//  with ep.swiglu_* the SwiGLU one, with ep.res_x the residual add.
//  K bytes a row: a multiple of 64. Grid: ceil (N / 16 / (8 / S)) blocks.
//  Blocks an SM the register budget must allow (1: no cap). 3 capped
//  w8a8 at 80 registers (from 106, 2 blocks an SM) with spills, and its
//  8B verify got slower (4.32 vs 3.98 ms on an H100, gpu/NOTES.md).
#ifndef K_MMA_MIN_BLOCKS
#define K_MMA_MIN_BLOCKS 1
#endif
template <int F, int T, int S, int LD>
static __global__ void __launch_bounds__ (K_MMA_WARPS * 32, K_MMA_MIN_BLOCKS)
k_mma_gemm (const void *__restrict__ Wv, const float *__restrict__ ws, const void *__restrict__ Xv,
            const void *__restrict__ X2v, const float *__restrict__ xs, void *__restrict__ Yv, int N, int K,
            k_rope_ep ep)
{
    typedef typename std::conditional<F == 1, int, float>::type acc_t;
    const int RT = K_MMA_WARPS / S, U = K_MMA_UNROLL;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, q = lane & 3;
    int tile = blockIdx.x * RT + warp / S, kpart = warp % S;
    size_t row_bytes = (size_t) K * (F == 1 ? 1 : 2);
    int nspan = (int) (row_bytes / 64);
    //  Span sp of the lane's two rows: wa[sp * SP], wb[sp * SP].
    const int SP = LD == 2 ? 64 : 4;
    const int4 *wa, *wb;
    if (LD == 2) {
        int n_tiles = (N + 15) / 16;
        wa = (const int4 *) ((const char *) Wv + (size_t) min (tile, n_tiles - 1) * nspan * 1024) + lane;
        wb = wa + 32;
    }
    else {
        wa = (const int4 *) ((const char *) Wv + (size_t) min (tile * 16 + g, N - 1) * row_bytes) + q;
        wb = (const int4 *) ((const char *) Wv + (size_t) min (tile * 16 + g + 8, N - 1) * row_bytes) + q;
    }
    const int4 zero = make_int4 (0, 0, 0, 0);
    int4 ra[U], rb[U];
    if (!K_MMA_PRELOAD)
        K_PDL ();
#pragma unroll
    for (int u = 0; u < U; u++) {
        int sp = kpart + u * S;
        ra[u] = sp < nspan ? k_mma_ld<LD> (wa + sp * SP) : zero;
        rb[u] = sp < nspan ? k_mma_ld<LD> (wb + sp * SP) : zero;
    }
    //  The epilogue's operands that no kernel of the pass writes are loaded
    //  before the wait too, so a GEMM's tail does not wait for a DRAM
    //  round trip after its last mma (session 5): weight scales, the next
    //  norm's weights, RoPE's angles (k_rope_table, made with the model)
    //  and cache rows (from the positions and page table, uploaded before
    //  the pass: through L2, ld.global.cg, as an SM's L1 may still hold
    //  the last pass's).
    const int ROWS = RT * 16, NT = K_MMA_WARPS * 32;
    const int NE = (ROWS * T + NT - 1) / NT, NR = (ROWS / 2 * T + NT - 1) / NT;
    int row0 = blockIdx.x * ROWS;
    __shared__ float s_ws[ROWS], s_nw[ROWS], s_xs[T];
    __shared__ size_t s_cbase[T];
    if (threadIdx.x < ROWS) {
        int row = min (row0 + (int) threadIdx.x, N - 1);
        if (F == 1)
            s_ws[threadIdx.x] = ws[row];
        if (ep.res_nw)
            s_nw[threadIdx.x] = ep.res_nw[row];
    }
    float rcos[NR], rsin[NR];
    if (ep.q) {
        if (threadIdx.x < T) {
            int t = ep.t0 + threadIdx.x, pos = __ldcg (ep.tok_pos + t);
            int page = __ldcg (ep.block_table + (size_t) __ldcg (ep.tok_slot + t) * ep.max_blocks
                               + pos / ep.page_size);
            s_cbase[threadIdx.x] = ((size_t) page * ep.page_size + pos % ep.page_size) * ep.kv_dim;
        }
#pragma unroll
        for (int k = 0; k < NR; k++) {
            int i = threadIdx.x + k * NT;
            int t = i % T, c = row0 + 2 * (i / T);
            int half_hd = ep.head_dim / 2, j = (c % ep.head_dim) / 2;
            bool rot = i < ROWS / 2 * T && c < ep.q_dim + ep.kv_dim;
            size_t a = rot ? (size_t) __ldcg (ep.tok_pos + ep.t0 + t) * half_hd + j : 0;
            rcos[k] = rot ? ep.cos_t[a] : 0.0f;
            rsin[k] = rot ? ep.sin_t[a] : 0.0f;
        }
    }
    if (K_MMA_PRELOAD)
        K_PDL ();
    //  After the wait: the token scales, and the residual rows the
    //  epilogue adds to, on their way while the loop runs.
    if (F == 1 && threadIdx.x < T)
        s_xs[threadIdx.x] = xs[threadIdx.x];
    float rx[NE];
#pragma unroll
    for (int k = 0; k < NE; k++) {
        int i = threadIdx.x + k * NT, t = i % T, row = row0 + i / T;
        rx[k] = ep.res_x && i < ROWS * T && row < N ? ep.res_x[(size_t) (ep.t0 + t) * N + row] : 0.0f;
    }
    //  Token g's activations (both levels) for the same spans, loaded a
    //  round ahead like the weights: a round's mma wait on nothing but
    //  what the previous round issued.
    bool tok = g < T;
    const int4 *xa = (const int4 *) ((const char *) Xv + (size_t) min (g, T - 1) * row_bytes) + q;
    const int4 *xb = X2v ? (const int4 *) ((const char *) X2v + (size_t) min (g, T - 1) * row_bytes) + q : NULL;
    const bool two = F == 1 && xb;
    int4 xv[U], xv2[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
        int sp = kpart + u * S;
        xv[u] = tok && sp < nspan ? __ldg (xa + sp * 4) : zero;
        xv2[u] = two && tok && sp < nspan ? __ldg (xb + sp * 4) : zero;
    }
    acc_t c1[4] = { 0, 0, 0, 0 }, c2[4] = { 0, 0, 0, 0 };
    for (int base = kpart; base < nspan; base += S * U) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int sp = base + u * S;
            if (sp < nspan) {       //  warp-uniform
                k_mma_span<F> (c1, ra[u], rb[u], xv[u]);
                if (two)
                    k_mma_span<F> (c2, ra[u], rb[u], xv2[u]);
            }
            int sn = sp + S * U;
            bool ok = sn < nspan;
            ra[u] = ok ? k_mma_ld<LD> (wa + sn * SP) : zero;
            rb[u] = ok ? k_mma_ld<LD> (wb + sn * SP) : zero;
            xv[u] = tok && ok ? __ldg (xa + sn * 4) : zero;
            xv2[u] = two && tok && ok ? __ldg (xb + sn * 4) : zero;
        }
    }
    //  Fragments (rows g, g + 8; tokens 2q, 2q + 1) to shared memory, then
    //  per (row, token) the S warps' sums in warp order.
    __shared__ acc_t red[K_MMA_WARPS][2][16][8];
    red[warp][0][g][2 * q] = c1[0];
    red[warp][0][g][2 * q + 1] = c1[1];
    red[warp][0][g + 8][2 * q] = c1[2];
    red[warp][0][g + 8][2 * q + 1] = c1[3];
    if (F == 1) {
        red[warp][1][g][2 * q] = c2[0];
        red[warp][1][g][2 * q + 1] = c2[1];
        red[warp][1][g + 8][2 * q] = c2[2];
        red[warp][1][g + 8][2 * q + 1] = c2[3];
    }
    __syncthreads ();
    //  Row r of tile rt for token t, as the value the consumers see (fp16:
    //  rounded to fp16, as it would have been stored).
    auto value = [&] (int rt, int r, int t) -> float {
        acc_t a = red[rt * S][0][r][t], b = F == 1 ? red[rt * S][1][r][t] : 0;
#pragma unroll
        for (int w = 1; w < S; w++) {
            a += red[rt * S + w][0][r][t];
            if (F == 1)
                b += red[rt * S + w][1][r][t];
        }
        if (F == 1)
            return k_deq_w8a8 ((int) a, (int) b, s_xs[t], s_ws[rt * 16 + r]);
        return __half2float (__float2half ((float) a));
    };
    if (ep.swiglu_f32 || ep.swiglu_f16) {
        //  With amax (w8a8): each token's max |v| over the block, then one
        //  atomicMax a token into amax (k_emit_max quantizes with it).
        __shared__ unsigned int bmax[T];
        if (ep.amax && threadIdx.x < T)
            bmax[threadIdx.x] = 0;
        if (ep.amax)
            __syncthreads ();
        for (int i = threadIdx.x; i < RT * 8 * T; i += blockDim.x) {
            int rt = i / (8 * T), p = (i / T) % 8, t = i % T;
            int row = (blockIdx.x * RT + rt) * 16 + 2 * p;
            if (row >= N || row / 2 >= ep.hidden)
                continue;
            float v = k_swiglu_val (value (rt, 2 * p, t), value (rt, 2 * p + 1, t));
            size_t o = (size_t) (ep.t0 + t) * ep.hidden + row / 2;
            if (ep.swiglu_f32)
                ep.swiglu_f32[o] = v;
            else
                ep.swiglu_f16[o] = __float2half (v);
            if (ep.amax)
                atomicMax (&bmax[t], __float_as_uint (fabsf (v)));
        }
        if (ep.amax) {
            __syncthreads ();
            if (threadIdx.x < T)
                k_atomic_max (ep.amax + ep.t0 + threadIdx.x, __uint_as_float (bmax[threadIdx.x]));
        }
        return;
    }
    if (ep.q) {
#pragma unroll
        for (int k = 0; k < NR; k++) {
            int i = threadIdx.x + k * NT;
            int rt = i / (8 * T), p = (i / T) % 8, t = i % T;
            int row = row0 + 2 * (i / T);
            if (i < ROWS / 2 * T && row < N)
                k_rope_store (ep, ep.t0 + t, s_cbase[t], rcos[k], rsin[k], row, value (rt, 2 * p, t),
                              value (rt, 2 * p + 1, t));
        }
        return;
    }
    if (ep.res_x) {
        //  The residual add (each element of x is one block's), then per
        //  token the block's sum of x^2 in a fixed order (the rows'
        //  squares to shared memory, a warp a token: lanes in row order,
        //  then a butterfly) and max |x norm_w|.
        __shared__ float sq[RT * 16][T];
        __shared__ unsigned int rmax[T];
        if (threadIdx.x < T)
            rmax[threadIdx.x] = 0;
        __syncthreads ();
#pragma unroll
        for (int k = 0; k < NE; k++) {
            int i = threadIdx.x + k * NT;
            if (i >= ROWS * T)
                break;
            int rt = i / (16 * T), r = (i / T) % 16, t = i % T;
            int row = row0 + rt * 16 + r;
            float s2 = 0.0f;
            if (row < N) {
                float xn = rx[k] + value (rt, r, t);
                ep.res_x[(size_t) (ep.t0 + t) * N + row] = xn;
                s2 = __fmul_rn (xn, xn);
                if (ep.res_amax)
                    atomicMax (&rmax[t], __float_as_uint (fabsf (xn * s_nw[rt * 16 + r])));
            }
            sq[rt * 16 + r][t] = s2;
        }
        if (!ep.res_nw)
            return;
        __syncthreads ();
        if (warp < T) {
            float s2 = 0.0f;
            for (int j = lane; j < RT * 16; j += 32)
                s2 += sq[j][warp];
            s2 = k_warp_sum (s2);
            if (lane == 0) {
                ep.res_ss[(size_t) (ep.t0 + warp) * gridDim.x + blockIdx.x] = s2;
                if (ep.res_amax)
                    k_atomic_max (ep.res_amax + ep.t0 + warp, __uint_as_float (rmax[warp]));
            }
        }
        return;
    }
    for (int i = threadIdx.x; i < RT * 16 * T; i += blockDim.x) {
        int rt = i / (16 * T), r = (i / T) % 16, t = i % T;
        int row = (blockIdx.x * RT + rt) * 16 + r;
        if (row >= N)
            continue;
        float v = value (rt, r, t);
        if (F == 1)
            ((float *) Yv)[(size_t) t * N + row] = v;
        else
            ((__half *) Yv)[(size_t) t * N + row] = __float2half (v);
    }
}

#endif
