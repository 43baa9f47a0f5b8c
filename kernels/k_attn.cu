/* k_attn.cu — causal attention over the paged F16 KV cache, one kernel for decode and prefill.
 *
 * Work is cut into items (kernels.h: kc_attn_item): one sequence, one KV head, and up to
 * KC_ATTN_MAX_ROWS query rows that read that KV head (row r = query r / g, head kvh * g + r % g,
 * g = n_head / n_head_kv). One thread block per item, one warp per row. The block walks the keys
 * its rows can see in tiles of 32 positions: the tile's K and V rows (F16, found through the
 * block table: position p lives in cache block bt[p / 16], slot p % 16) are loaded once into
 * shared memory for all of the block's rows, then each warp scores the 32 keys (lane j takes key
 * j: dot over head_dim, scale, optional soft-cap, mask outside (p - window, p]) and folds them
 * into its running softmax (max m, sum l, and head_dim accumulators spread over the lanes) — the
 * usual online-softmax recurrence, so any context length runs in fixed shared memory.
 *
 * Decode items carry the g rows of one KV head (each K/V byte is read once per sequence and KV
 * head); prefill items carry 8 rows, so a tile is reused by 8 query rows (the "tiled" prefill
 * attention). Queries are rounded to F16 before the dot, as the CPU reference does (it mirrors
 * llama.cpp's F16 K·Q). Threading: the launcher only enqueues. */
#include <cuda_runtime.h>
#include <math.h>

#include "blocks.cuh"
#include "kernels.h"

#define AT_TILE 32

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* grid n_items, block rows_per_item * 32, dynamic shared memory: see kc_attention. */
__global__ void k_attn(float *out, int64_t ldo, const float *q, int64_t ldq, const uint8_t *base,
                       size_t block_stride, size_t k_off, size_t v_off, int kv_dim,
                       const kc_seq *seqs, const int32_t *bt, const kc_attn_item *items,
                       int rows_per_item, int g, int head_dim, float scale, int window,
                       float softcap)
{
    extern __shared__ unsigned char smem[];
    const int kstr = head_dim + 2; /* padded row: lanes reading different keys hit other banks */
    uint16_t *Ks = (uint16_t *)smem;
    uint16_t *Vs = Ks + AT_TILE * kstr;
    float *Qs = (float *)(Vs + AT_TILE * kstr);

    const kc_attn_item it = items[blockIdx.x];
    const kc_seq sq = seqs[it.seq];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int nrows = sq.n_q * g;
    const int r = it.r0 + warp;
    const bool active = r < nrows && warp < rows_per_item;
    const int t = r / g, h = it.kvh * g + r % g;
    const int pos = sq.pos0 + t;
    const int lo = window > 0 ? max(0, pos - window + 1) : 0, hi = pos + 1;

    int r_last = min(nrows, it.r0 + rows_per_item) - 1;
    int t_first = it.r0 / g, t_last = r_last / g;
    int kstart = window > 0 ? max(0, sq.pos0 + t_first - window + 1) : 0;
    int kend = sq.pos0 + t_last + 1;

    float *qw = Qs + warp * head_dim;
    if (active)
        for (int d = lane; d < head_dim; d += 32)
            qw[d] = kb_f16_to_f32(
                kb_f32_to_f16(q[(int64_t)(sq.q_row0 + t) * ldq + (int64_t)h * head_dim + d]));
    __syncwarp();

    float m = -INFINITY, l = 0;
    float acc[KC_ATTN_MAX_HD / 32];
#pragma unroll
    for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++)
        acc[i] = 0;

    for (int k0 = kstart; k0 < kend; k0 += AT_TILE) {
        __syncthreads(); /* the previous tile is consumed */
        for (int e = threadIdx.x; e < AT_TILE * head_dim; e += blockDim.x) {
            int j = e / head_dim, d = e % head_dim, p = k0 + j;
            uint16_t kv = 0, vv = 0;
            if (p < kend) {
                const uint8_t *row = base + (size_t)bt[sq.bt_off + p / 16] * block_stride +
                                     (size_t)(p % 16) * (size_t)kv_dim * 2 +
                                     (size_t)it.kvh * (size_t)head_dim * 2;
                kv = ((const uint16_t *)(row + k_off))[d];
                vv = ((const uint16_t *)(row + v_off))[d];
            }
            Ks[j * kstr + d] = kv;
            Vs[j * kstr + d] = vv;
        }
        __syncthreads();
        if (!active)
            continue;
        int p = k0 + lane;
        float s = -INFINITY;
        if (p >= lo && p < hi) {
            float a = 0;
            for (int d = 0; d < head_dim; d++)
                a += qw[d] * kb_f16_to_f32(Ks[lane * kstr + d]);
            a *= scale;
            if (softcap > 0)
                a = softcap * tanhf(a / softcap);
            s = a;
        }
        float mt = warp_max(s);
        if (mt == -INFINITY)
            continue; /* no visible key in this tile for this row */
        float mn = fmaxf(m, mt);
        float corr = expf(m - mn); /* 0 on the first visible tile (m = -inf) */
        float pj = expf(s - mn);   /* 0 for masked keys */
        l = l * corr + warp_sum(pj);
#pragma unroll
        for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++)
            acc[i] *= corr;
        for (int j = 0; j < AT_TILE; j++) {
            float pb = __shfl_sync(0xffffffffu, pj, j);
#pragma unroll
            for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++) {
                int d = lane + 32 * i;
                if (d < head_dim)
                    acc[i] += pb * kb_f16_to_f32(Vs[j * kstr + d]);
            }
        }
        m = mn;
    }
    if (!active)
        return;
    float inv = 1.0f / l; /* l ≥ exp(0) from the row's own position */
#pragma unroll
    for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++) {
        int d = lane + 32 * i;
        if (d < head_dim)
            out[(int64_t)(sq.q_row0 + t) * ldo + (int64_t)h * head_dim + d] = acc[i] * inv;
    }
}

extern "C" int kc_attention(void *stream, float *out, int64_t ldo, const float *q, int64_t ldq,
                            const uint8_t *base, size_t block_stride, size_t k_off, size_t v_off,
                            int kv_dim, const kc_seq *seqs, const int32_t *bt,
                            const kc_attn_item *items, int n_items, int rows_per_item, int n_head,
                            int n_head_kv, int head_dim, float scale, int window, float softcap)
{
    if (n_items <= 0)
        return 0;
    if (head_dim > KC_ATTN_MAX_HD || rows_per_item < 1 || rows_per_item > KC_ATTN_MAX_ROWS ||
        n_head_kv < 1 || n_head % n_head_kv)
        return (int)cudaErrorInvalidValue;
    size_t smem = (size_t)2 * AT_TILE * (size_t)(head_dim + 2) * 2 +
                  (size_t)rows_per_item * (size_t)head_dim * 4;
    k_attn<<<n_items, rows_per_item * 32, smem, (cudaStream_t)stream>>>(
        out, ldo, q, ldq, base, block_stride, k_off, v_off, kv_dim, seqs, bt, items, rows_per_item,
        n_head / n_head_kv, head_dim, scale, window, softcap);
    return (int)cudaGetLastError();
}
