/* k_matmul.cu — the weight-reading kernels: quantised matrix products straight from GGUF blocks
 * (decode and small prefill batches), activation quantisation, dequantisation to F16 for the
 * cuBLAS path of large prefill batches, and the embedding lookup.
 *
 * Product kernel (k_mm_q): one warp per output row and per tile of up to MM_TT activation rows;
 * lane l takes blocks l, l + 32, ... of the weight row and dots each with the same block of every
 * activation row of the tile (blocks.cuh, the functions the host tests check against the CPU
 * reference), then the warp sums its lanes. A weight block is read once per tile of tokens, so a
 * batched decode step of T sequences reads each weight ceil(T / MM_TT) times (from L2 after the
 * first). Activations are quantised first exactly as the CPU does (Q8_0 / Q8_1 / Q8_K), so the
 * GPU and CPU products differ only in the order of float additions.
 *
 * Correctness over speed: these kernels are written to be obviously right (no tensor cores, no
 * shared-memory staging of weights); docs/cuda.md lists what to tune once measured on a GPU.
 * Threading: launchers only enqueue on the given stream. */
#include <cuda_runtime.h>

#include "blocks.cuh"
#include "kernels.h"

#define MM_WARPS 4 /* output rows per thread block */
#define MM_TT    8 /* activation rows per warp */

/* --- per-type traits ------------------------------------------------------------------------- */

template <int WT> struct wt;
#define WT_Q(ID, T, A, QKV)                                                                        \
    template <> struct wt<ID> {                                                                    \
        typedef kb_##T B;                                                                          \
        typedef kb_##A Act;                                                                        \
        static const int QK = QKV;                                                                 \
        static __device__ __forceinline__ float dot(const B *b, const Act *a)                      \
        {                                                                                          \
            return kb_dot_##T##_##A(b, a);                                                         \
        }                                                                                          \
        static __device__ __forceinline__ void quant(const float *x, Act *a)                       \
        {                                                                                          \
            kb_quantize_##A(x, a);                                                                 \
        }                                                                                          \
        static __device__ __forceinline__ void deq(const B *b, float *o)                           \
        {                                                                                          \
            kb_dequant_##T(b, o);                                                                  \
        }                                                                                          \
    };
WT_Q(KC_Q4_0, q4_0, q8_0, 32)
WT_Q(KC_Q4_1, q4_1, q8_1, 32)
WT_Q(KC_Q5_0, q5_0, q8_0, 32)
WT_Q(KC_Q5_1, q5_1, q8_1, 32)
WT_Q(KC_Q8_0, q8_0, q8_0, 32)
WT_Q(KC_Q4_K, q4_k, q8_k, 256)
WT_Q(KC_Q5_K, q5_k, q8_k, 256)
WT_Q(KC_Q6_K, q6_k, q8_k, 256)

/* Float element types: value i of a row. */
template <int WT> __device__ __forceinline__ float ld_f(const void *w, int64_t i);
template <> __device__ __forceinline__ float ld_f<KC_F32>(const void *w, int64_t i)
{
    return ((const float *)w)[i];
}
template <> __device__ __forceinline__ float ld_f<KC_F16>(const void *w, int64_t i)
{
    return kb_f16_to_f32(((const uint16_t *)w)[i]);
}
template <> __device__ __forceinline__ float ld_f<KC_BF16>(const void *w, int64_t i)
{
    return kb_bf16_to_f32(((const uint16_t *)w)[i]);
}

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* --- products --------------------------------------------------------------------------------- */

/* Sums each of the warp's nt per-lane accumulators and stores them as column r of rows
 * t0 .. t0 + nt - 1 of Y. */
static __device__ __forceinline__ void store_rows(const float acc[MM_TT], int nt, float *Y,
                                                  int64_t ldy, int t0, int64_t r)
{
#pragma unroll
    for (int t = 0; t < MM_TT; t++) {
        float v = warp_sum(acc[t]);
        if (threadIdx.x % 32 == 0 && t < nt)
            Y[(int64_t)(t0 + t) * ldy + r] = v;
    }
}

/* The warp's output row r for activation rows t0 .. t0 + nt - 1 (nt <= MM_TT): lane l takes
 * weight blocks l, l + 32, ... and dots each with the same block of every activation row (row t
 * at x0 + t * x_stride bytes), then the warp sums and lane 0 stores. */
template <int WT>
static __device__ __forceinline__ void mm_q_row(const typename wt<WT>::B *wr, int64_t nb,
                                                const uint8_t *x0, size_t x_stride, int nt,
                                                float *Y, int64_t ldy, int t0, int64_t r)
{
    typedef typename wt<WT>::Act A;
    const int lane = threadIdx.x % 32;
    float acc[MM_TT];
#pragma unroll
    for (int t = 0; t < MM_TT; t++)
        acc[t] = 0;
    for (int64_t ib = lane; ib < nb; ib += 32) {
#pragma unroll
        for (int t = 0; t < MM_TT; t++)
            if (t < nt)
                acc[t] += wt<WT>::dot(wr + ib, (const A *)(x0 + (size_t)t * x_stride) + ib);
    }
    store_rows(acc, nt, Y, ldy, t0, r);
}

/* grid (ceil(rows / MM_WARPS), ceil(T / MM_TT)), block MM_WARPS * 32. */
template <int WT>
__global__ void k_mm_q(const uint8_t *W, int64_t rows, int64_t nb, const uint8_t *xq,
                       size_t xq_stride, int T, float *Y, int64_t ldy)
{
    typedef typename wt<WT>::B B;
    int64_t r = (int64_t)blockIdx.x * MM_WARPS + threadIdx.x / 32;
    int t0 = blockIdx.y * MM_TT;
    if (r >= rows)
        return;
    int nt = T - t0 < MM_TT ? T - t0 : MM_TT;
    mm_q_row<WT>((const B *)W + r * nb, nb, xq + (size_t)t0 * xq_stride, xq_stride, nt, Y, ldy,
                 t0, r);
}

/* The fused product of small steps: up to KC_MM_MAX weights of one quantised type that share
 * the input X (Q, K and V; gate and up), in one launch. Each thread block first quantises its
 * tile of up to MM_TT activation rows into shared memory with the block quantiser k_quant uses
 * (so the numbers are the same as the separate quantise + k_mm_q pair), then does what k_mm_q
 * does for the output row of its warp, reading the activations from shared memory. Saves the
 * quantise launch and, for n weights, n - 1 product launches: at one sequence a decode step is a
 * few hundred tiny launches, and their count is what bounds it.
 * grid (sum of ceil(rows_i / MM_WARPS), ceil(T / MM_TT)), block MM_WARPS * 32, dynamic shared
 * memory MM_TT * nb * sizeof(Act). */
template <int WT>
__global__ void k_mm_qf(kc_mm_set set, const float *X, int64_t ldx, int T, int64_t nb)
{
    typedef typename wt<WT>::B B;
    typedef typename wt<WT>::Act A;
    extern __shared__ float4 mmf_smem[];
    A *xs = (A *)mmf_smem;
    const int t0 = blockIdx.y * MM_TT;
    const int nt = T - t0 < MM_TT ? T - t0 : MM_TT;
    for (int64_t i = threadIdx.x; i < (int64_t)nt * nb; i += blockDim.x) {
        int64_t t = i / nb, ib = i % nb;
        wt<WT>::quant(X + (t0 + t) * ldx + ib * wt<WT>::QK, xs + t * nb + ib);
    }
    __syncthreads();
    int bx = blockIdx.x, wi = 0;
    while (wi < set.n - 1 && bx >= set.blocks[wi])
        bx -= set.blocks[wi++];
    const int64_t r = (int64_t)bx * MM_WARPS + threadIdx.x / 32;
    if (r >= set.rows[wi])
        return;
    mm_q_row<WT>((const B *)set.W[wi] + r * nb, nb, (const uint8_t *)xs, (size_t)nb * sizeof(A),
                 nt, set.Y[wi], set.ldy[wi], t0, r);
}

/* Float weights against F32 activations: lanes stride over values (coalesced). */
template <int WT>
__global__ void k_mm_f(const void *W, int64_t rows, int64_t cols, const float *X, int64_t ldx,
                       int T, float *Y, int64_t ldy)
{
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t r = (int64_t)blockIdx.x * MM_WARPS + warp;
    int t0 = blockIdx.y * MM_TT;
    if (r >= rows)
        return;
    int nt = T - t0 < MM_TT ? T - t0 : MM_TT;
    float acc[MM_TT];
#pragma unroll
    for (int t = 0; t < MM_TT; t++)
        acc[t] = 0;
    for (int64_t c = lane; c < cols; c += 32) {
        float w = ld_f<WT>(W, r * cols + c);
#pragma unroll
        for (int t = 0; t < MM_TT; t++)
            if (t < nt)
                acc[t] += w * X[(int64_t)(t0 + t) * ldx + c];
    }
    store_rows(acc, nt, Y, ldy, t0, r);
}

/* --- activation quantisation: one thread per block ------------------------------------------- */

template <int ACT>
__global__ void k_quant(const float *x, int64_t ldx, int T, int64_t nb, uint8_t *xq,
                        size_t xq_stride)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)T * nb)
        return;
    int64_t t = i / nb, ib = i % nb;
    uint8_t *row = xq + (size_t)t * xq_stride;
    if (ACT == KC_Q8_0)
        kb_quantize_q8_0(x + t * ldx + ib * 32, (kb_q8_0 *)row + ib);
    else if (ACT == KC_Q8_1)
        kb_quantize_q8_1(x + t * ldx + ib * 32, (kb_q8_1 *)row + ib);
    else
        kb_quantize_q8_k(x + t * ldx + ib * 256, (kb_q8_k *)row + ib);
}

/* --- dequantisation: F16 copies for cuBLAS, F32 rows for the embedding ------------------------ */

/* One thread per block of rows [r0, r0 + rows): out (rows x cols halves). */
template <int WT>
__global__ void k_deq_f16(const uint8_t *W, int64_t r0, int64_t rows, int64_t nb, uint16_t *out)
{
    typedef typename wt<WT>::B B;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * nb)
        return;
    int64_t r = i / nb, ib = i % nb;
    const B *b = (const B *)W + (r0 + r) * nb + ib;
    float tmp[wt<WT>::QK];
    wt<WT>::deq(b, tmp);
    uint16_t *o = out + r * nb * wt<WT>::QK + ib * wt<WT>::QK;
    for (int j = 0; j < wt<WT>::QK; j++)
        o[j] = kb_f32_to_f16(tmp[j]);
}

template <int WT>
__global__ void k_deq_f16_f(const void *W, int64_t r0, int64_t rows, int64_t cols, uint16_t *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols)
        return;
    out[i] = kb_f32_to_f16(ld_f<WT>(W, r0 * cols + i));
}

/* X for the cuBLAS path, rounded through the activation format the CPU uses for this weight
 * type: each block is quantised exactly as for the block kernels and its values d * q are
 * written as F16. The product then sees the CPU's activations (up to F16 rounding, about 2^-11
 * relative, far below the 8-bit quantisation step), so large batches and decode steps give the
 * same numbers whichever path runs them. One thread per activation block. */
template <int ACT>
__global__ void k_act_to_f16(const float *x, int64_t ldx, int T, int64_t nb, uint16_t *out)
{
    const int QK = ACT == KC_Q8_K ? 256 : 32;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)T * nb)
        return;
    int64_t t = i / nb, ib = i % nb;
    const float *src = x + t * ldx + ib * QK;
    uint16_t *o = out + t * nb * QK + ib * QK;
    if (ACT == KC_Q8_0) {
        kb_q8_0 b;
        kb_quantize_q8_0(src, &b);
        float d = kb_f16_to_f32(b.d);
        for (int j = 0; j < 32; j++)
            o[j] = kb_f32_to_f16(d * (float)b.qs[j]);
    } else if (ACT == KC_Q8_1) {
        kb_q8_1 b;
        kb_quantize_q8_1(src, &b);
        for (int j = 0; j < 32; j++)
            o[j] = kb_f32_to_f16(b.d * (float)b.qs[j]);
    } else {
        kb_q8_k b;
        kb_quantize_q8_k(src, &b);
        for (int j = 0; j < 256; j++)
            o[j] = kb_f32_to_f16(b.d * (float)b.qs[j]);
    }
}

__global__ void k_f32_to_f16(const float *x, int64_t ldx, int T, int64_t cols, uint16_t *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)T * cols)
        return;
    int64_t t = i / cols, c = i % cols;
    out[i] = kb_f32_to_f16(x[t * ldx + c]);
}

/* grid T, block 128: row tokens[t] of E into x row t. */
template <int WT>
__global__ void k_embed_q(const uint8_t *E, int64_t nb, const int32_t *tokens, float *x)
{
    typedef typename wt<WT>::B B;
    int t = blockIdx.x;
    const B *row = (const B *)E + (int64_t)tokens[t] * nb;
    float *o = x + (int64_t)t * nb * wt<WT>::QK;
    for (int64_t ib = threadIdx.x; ib < nb; ib += blockDim.x)
        wt<WT>::deq(row + ib, o + ib * wt<WT>::QK);
}

template <int WT>
__global__ void k_embed_f(const void *E, int64_t cols, const int32_t *tokens, float *x)
{
    int t = blockIdx.x;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        x[(int64_t)t * cols + c] = ld_f<WT>(E, (int64_t)tokens[t] * cols + c);
}

/* --- launchers -------------------------------------------------------------------------------- */

static int launched(void)
{
    return (int)cudaGetLastError();
}

static unsigned blocks_for(int64_t n, int threads)
{
    return (unsigned)((n + threads - 1) / threads);
}

#define FOR_QUANT_TYPES(X)                                                                         \
    X(KC_Q4_0) X(KC_Q4_1) X(KC_Q5_0) X(KC_Q5_1) X(KC_Q8_0) X(KC_Q4_K) X(KC_Q5_K) X(KC_Q6_K)
#define FOR_FLOAT_TYPES(X) X(KC_F32) X(KC_F16) X(KC_BF16)

extern "C" int kc_weight_supported(int wtype)
{
    switch (wtype) {
#define CASE(ID) case ID:
        FOR_QUANT_TYPES(CASE)
        FOR_FLOAT_TYPES(CASE)
#undef CASE
        return 1;
    default:
        return 0;
    }
}

extern "C" int kc_act_type(int wtype)
{
    switch (wtype) {
    case KC_Q4_0:
    case KC_Q5_0:
    case KC_Q8_0:
        return KC_Q8_0;
    case KC_Q4_1:
    case KC_Q5_1:
        return KC_Q8_1;
    case KC_Q4_K:
    case KC_Q5_K:
    case KC_Q6_K:
        return KC_Q8_K;
    default:
        return KC_F32;
    }
}

extern "C" size_t kc_row_bytes(int t, int64_t cols)
{
    size_t bs, qk;
    switch (t) {
    case KC_F32:
        return (size_t)cols * 4;
    case KC_F16:
    case KC_BF16:
        return (size_t)cols * 2;
    case KC_Q4_0:
        bs = sizeof(kb_q4_0), qk = 32;
        break;
    case KC_Q4_1:
        bs = sizeof(kb_q4_1), qk = 32;
        break;
    case KC_Q5_0:
        bs = sizeof(kb_q5_0), qk = 32;
        break;
    case KC_Q5_1:
        bs = sizeof(kb_q5_1), qk = 32;
        break;
    case KC_Q8_0:
        bs = sizeof(kb_q8_0), qk = 32;
        break;
    case KC_Q8_1:
        bs = sizeof(kb_q8_1), qk = 32;
        break;
    case KC_Q4_K:
        bs = sizeof(kb_q4_k), qk = 256;
        break;
    case KC_Q5_K:
        bs = sizeof(kb_q5_k), qk = 256;
        break;
    case KC_Q6_K:
        bs = sizeof(kb_q6_k), qk = 256;
        break;
    case KC_Q8_K:
        bs = sizeof(kb_q8_k), qk = 256;
        break;
    default:
        return 0;
    }
    if (cols % (int64_t)qk)
        return 0;
    return (size_t)(cols / (int64_t)qk) * bs;
}

extern "C" int kc_quantize_rows(void *stream, int act, const float *x, int64_t ldx, int T,
                                int64_t cols, void *xq, size_t xq_stride)
{
    cudaStream_t s = (cudaStream_t)stream;
    int64_t nb = cols / (act == KC_Q8_K ? 256 : 32);
    unsigned g = blocks_for((int64_t)T * nb, 128);
    if (act == KC_Q8_0)
        k_quant<KC_Q8_0><<<g, 128, 0, s>>>(x, ldx, T, nb, (uint8_t *)xq, xq_stride);
    else if (act == KC_Q8_1)
        k_quant<KC_Q8_1><<<g, 128, 0, s>>>(x, ldx, T, nb, (uint8_t *)xq, xq_stride);
    else if (act == KC_Q8_K)
        k_quant<KC_Q8_K><<<g, 128, 0, s>>>(x, ldx, T, nb, (uint8_t *)xq, xq_stride);
    else
        return (int)cudaErrorInvalidValue;
    return launched();
}

extern "C" int kc_matmul(void *stream, int wtype, const void *W, int64_t rows, int64_t cols,
                         const void *xq, size_t xq_stride, int T, float *Y, int64_t ldy)
{
    cudaStream_t s = (cudaStream_t)stream;
    dim3 grid(blocks_for(rows, MM_WARPS), blocks_for(T, MM_TT));
    switch (wtype) {
#define QCASE(ID)                                                                                  \
    case ID:                                                                                       \
        k_mm_q<ID><<<grid, MM_WARPS * 32, 0, s>>>((const uint8_t *)W, rows, cols / wt<ID>::QK,     \
                                                  (const uint8_t *)xq, xq_stride, T, Y, ldy);      \
        break;
        FOR_QUANT_TYPES(QCASE)
#undef QCASE
#define FCASE(ID)                                                                                  \
    case ID:                                                                                       \
        k_mm_f<ID><<<grid, MM_WARPS * 32, 0, s>>>(W, rows, cols, (const float *)xq,                \
                                                  (int64_t)(xq_stride / 4), T, Y, ldy);            \
        break;
        FOR_FLOAT_TYPES(FCASE)
#undef FCASE
    default:
        return (int)cudaErrorInvalidValue;
    }
    return launched();
}

extern "C" size_t kc_matmul_fused_smem(int wtype, int64_t cols)
{
    switch (wtype) {
#define QCASE(ID)                                                                                  \
    case ID:                                                                                       \
        return cols % wt<ID>::QK ? 0                                                               \
                                 : (size_t)MM_TT * (size_t)(cols / wt<ID>::QK) *                   \
                                       sizeof(wt<ID>::Act);
        FOR_QUANT_TYPES(QCASE)
#undef QCASE
    default:
        return 0;
    }
}

extern "C" int kc_matmul_fused(void *stream, int wtype, const kc_mm_set *set, int64_t cols,
                               const float *X, int64_t ldx, int T)
{
    size_t smem = kc_matmul_fused_smem(wtype, cols);
    if (set->n < 1 || set->n > KC_MM_MAX || smem == 0 || smem > KC_MM_FUSED_SMEM || T <= 0)
        return (int)cudaErrorInvalidValue;
    kc_mm_set g = *set;
    unsigned gx = 0;
    for (int i = 0; i < g.n; i++) {
        g.blocks[i] = (int)blocks_for(g.rows[i], MM_WARPS);
        gx += (unsigned)g.blocks[i];
    }
    dim3 grid(gx, blocks_for(T, MM_TT));
    cudaStream_t s = (cudaStream_t)stream;
    switch (wtype) {
#define QCASE(ID)                                                                                  \
    case ID:                                                                                       \
        k_mm_qf<ID><<<grid, MM_WARPS * 32, smem, s>>>(g, X, ldx, T, cols / wt<ID>::QK);            \
        break;
        FOR_QUANT_TYPES(QCASE)
#undef QCASE
    default:
        return (int)cudaErrorInvalidValue;
    }
    return launched();
}

extern "C" int kc_dequant_f16(void *stream, int wtype, const void *W, int64_t r0, int64_t rows,
                              int64_t cols, uint16_t *out)
{
    cudaStream_t s = (cudaStream_t)stream;
    switch (wtype) {
#define QCASE(ID)                                                                                  \
    case ID: {                                                                                     \
        int64_t nb = cols / wt<ID>::QK;                                                            \
        k_deq_f16<ID>                                                                              \
            <<<blocks_for(rows *nb, 128), 128, 0, s>>>((const uint8_t *)W, r0, rows, nb, out);     \
        break;                                                                                     \
    }
        FOR_QUANT_TYPES(QCASE)
#undef QCASE
#define FCASE(ID)                                                                                  \
    case ID:                                                                                       \
        k_deq_f16_f<ID><<<blocks_for(rows *cols, 256), 256, 0, s>>>(W, r0, rows, cols, out);       \
        break;
        FOR_FLOAT_TYPES(FCASE)
#undef FCASE
    default:
        return (int)cudaErrorInvalidValue;
    }
    return launched();
}

extern "C" int kc_f32_to_f16(void *stream, int act, const float *x, int64_t ldx, int T,
                             int64_t cols, uint16_t *out)
{
    cudaStream_t s = (cudaStream_t)stream;
    int64_t nb = cols / (act == KC_Q8_K ? 256 : 32);
    unsigned g = blocks_for((int64_t)T * nb, 128);
    if (act == KC_F32)
        k_f32_to_f16<<<blocks_for((int64_t)T * cols, 256), 256, 0, s>>>(x, ldx, T, cols, out);
    else if (act == KC_Q8_0)
        k_act_to_f16<KC_Q8_0><<<g, 128, 0, s>>>(x, ldx, T, nb, out);
    else if (act == KC_Q8_1)
        k_act_to_f16<KC_Q8_1><<<g, 128, 0, s>>>(x, ldx, T, nb, out);
    else if (act == KC_Q8_K)
        k_act_to_f16<KC_Q8_K><<<g, 128, 0, s>>>(x, ldx, T, nb, out);
    else
        return (int)cudaErrorInvalidValue;
    return launched();
}

extern "C" int kc_embed(void *stream, int wtype, const void *E, int64_t cols, const int32_t *tokens,
                        int T, float *x)
{
    cudaStream_t s = (cudaStream_t)stream;
    switch (wtype) {
#define QCASE(ID)                                                                                  \
    case ID:                                                                                       \
        k_embed_q<ID><<<T, 128, 0, s>>>((const uint8_t *)E, cols / wt<ID>::QK, tokens, x);         \
        break;
        FOR_QUANT_TYPES(QCASE)
#undef QCASE
#define FCASE(ID)                                                                                  \
    case ID:                                                                                       \
        k_embed_f<ID><<<T, 128, 0, s>>>(E, cols, tokens, x);                                       \
        break;
        FOR_FLOAT_TYPES(FCASE)
#undef FCASE
    default:
        return (int)cudaErrorInvalidValue;
    }
    return launched();
}
