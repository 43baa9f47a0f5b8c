/* quant_avx2.c — AVX2+FMA+F16C fast paths for the element types in quant.h.
 *
 * Role: the same functions as quant_ref.c, faster. Dequantisation and quantisation are
 * bit-identical to the references (same operations in the same order, no FMA contraction, and
 * round-half-away-from-zero emulated exactly); dot products differ from them only by float
 * rounding (8-lane partial sums, FMA) and tests bound that difference.
 *
 * Integer dot products use the usual AVX2 idiom: _mm256_maddubs_epi16 (unsigned × signed bytes,
 * pairs summed to int16) then _mm256_madd_epi16 by ones (int32), converted to float and scaled by
 * d_w·d_x per 32-value block. 4-bit quants are 0..15, so Q4_1 feeds them to maddubs unsigned as
 * they are; Q4_0 (q − 8) and Q8_0 quants are signed, so |w| goes in as the unsigned operand and
 * x takes w's sign. The sign trick needs x ≠ −128, which holds for activations quantised here
 * (|q| ≤ 127 by construction); no int16 pair sum can saturate (≤ 2·128·127).
 *
 * Batching: every kernel is a "tile" that walks a few weight rows once against a few
 * activation rows, and for each (row, activation) pair performs the same operations whatever
 * tile it is in, so batched results are bit-identical to dot(). The 32-value block types
 * (Q4_0, Q5_0, Q8_0, Q4_1, Q5_1) reduce four pairs at a time (quant_bk.h, which quant_vnni.c
 * compiles again for AVX-512 VNNI); the float and K-quant tiles take one or two weight rows
 * against up to four activations (the K-quant per-row state does not fit twice in the 16
 * registers: their two-row tiles spilled and ran ~25% slower). The activations are cut into chunks
 * that stay in L2 while the weights stream past.
 *
 * Threading: pure functions, no state. Compiled with -mavx2 -mfma -mf16c; quant.c calls in
 * here only after qt_avx2_usable(). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant_x86.h"

bool qt_avx2_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

/* --- F32 / F16 / BF16 weights against F32 activations ----------------------------------------- */

ALWAYS_INLINE __m256 load_w_f32(const void *w, int64_t i)
{
    return _mm256_loadu_ps((const float *)w + i);
}

ALWAYS_INLINE __m256 load_w_f16(const void *w, int64_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const qt_f16 *)w + i)));
}

ALWAYS_INLINE __m256 load_w_bf16(const void *w, int64_t i)
{
    __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const qt_bf16 *)w + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}

/* Weight element i as float (scalar tails). kind: 0 = f32, 1 = f16, 2 = bf16. */
ALWAYS_INLINE float w_elem(const void *w, int64_t i, const int kind)
{
    if (kind == 0)
        return ((const float *)w)[i];
    if (kind == 1)
        return f16_f32(((const qt_f16 *)w)[i]);
    float f;
    uint32_t u = (uint32_t)((const qt_bf16 *)w)[i] << 16;
    memcpy(&f, &u, sizeof f);
    return f;
}

ALWAYS_INLINE __m256 load_w(const void *w, int64_t i, const int kind)
{
    return kind == 0 ? load_w_f32(w, i) : kind == 1 ? load_w_f16(w, i) : load_w_bf16(w, i);
}

/* Tiles: RW ≤ 2 weight rows (w + r*ws bytes) against RB ≤ 4 activation rows (x + b*xs bytes),
 * n values each; out[r*RB + b] = dot(weight row r, activation row b). For every (r, b) pair a
 * tile performs the same operations in the same order whatever RW and RB are (only which loads
 * are shared changes), which is what makes batched results bit-identical to dot(). */

/* Float weights: per pair, two 8-lane accumulators over 16-value steps, a last 8-value step into
 * the first, a scalar tail; out = hsum(acc0 + acc1) + tail. */
ALWAYS_INLINE void tile_float(const char *w, size_t ws, const char *x, size_t xs, int64_t n,
                              const int RW, const int RB, const int kind, float *out)
{
    __m256 a0[2][4], a1[2][4];
    float tail[2][4];
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++) {
            a0[r][b] = a1[r][b] = _mm256_setzero_ps();
            tail[r][b] = 0;
        }
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0[2], w1[2];
        for (int r = 0; r < RW; r++) {
            prefetch_ahead(w + r * ws + i * (kind == 0 ? 4 : 2));
            w0[r] = load_w(w + r * ws, i, kind);
            w1[r] = load_w(w + r * ws, i + 8, kind);
        }
        for (int b = 0; b < RB; b++) {
            const float *xb = (const float *)(x + (size_t)b * xs);
            __m256 x0 = _mm256_loadu_ps(xb + i), x1 = _mm256_loadu_ps(xb + i + 8);
            for (int r = 0; r < RW; r++) {
                a0[r][b] = _mm256_fmadd_ps(w0[r], x0, a0[r][b]);
                a1[r][b] = _mm256_fmadd_ps(w1[r], x1, a1[r][b]);
            }
        }
    }
    if (i + 8 <= n) {
        for (int r = 0; r < RW; r++) {
            __m256 w0 = load_w(w + r * ws, i, kind);
            for (int b = 0; b < RB; b++) {
                const float *xb = (const float *)(x + (size_t)b * xs);
                a0[r][b] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb + i), a0[r][b]);
            }
        }
        i += 8;
    }
    for (; i < n; i++) {
        for (int r = 0; r < RW; r++) {
            float wi = w_elem(w + r * ws, i, kind);
            for (int b = 0; b < RB; b++)
                tail[r][b] = fmaf(wi, ((const float *)(x + (size_t)b * xs))[i], tail[r][b]);
        }
    }
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++)
            out[r * RB + b] = hsum_ps(_mm256_add_ps(a0[r][b], a1[r][b])) + tail[r][b];
}

/* --- 32-value block types: quant_bk.h (shared with quant_vnni.c) ------------------------------ */

#include "quant_bk.h"

BK_FNS(q4_0, BK_Q4_0, QK4_0)
BK_FNS(q5_0, BK_Q5_0, QK5_0)
BK_FNS(q8_0, BK_Q8_0, QK8_0)
BK_FNS(q4_1, BK_Q4_1, QK4_1)
BK_FNS(q5_1, BK_Q5_1, QK5_1)

/* --- K-quants against Q8_K activations ---------------------------------------------------------
 * A super-block's integer sum is exact in int32 lanes (|Σ| < 2^26 for every format here), so a
 * K tile differs from the reference only in the float steps: per block and (row, activation),
 * acc += (d_w·d_x)·isum over 8 lanes, and for Q4_K/Q5_K accm += (dmin_w·d_x)·msum over 4. */

/* Prefetches every cache line of a K-quant block (144–210 bytes) FAR_PREFETCH_BYTES ahead. */
ALWAYS_INLINE void prefetch_block(const char *p, const int bytes)
{
    for (int o = 0; o < bytes; o += 64)
        prefetch_far(p + o);
}

/* The 8 scales and 8 mins of a Q4_K/Q5_K super-block as 8 bytes each (see qt_k_scale_min):
 * bytes 0–3 low 6 bits of scales[0..3] / scales[4..7]; bytes 4–7 built from scales[8..11]
 * (low nibble: scale, high: min) and the top two bits of scales[0..3] / scales[4..7]. */
ALWAYS_INLINE void k_unpack_scales(const uint8_t *scales, uint64_t *sc, uint64_t *mn)
{
    uint32_t a[3];
    memcpy(a, scales, sizeof a);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    uint32_t sc_hi = (a[2] & m4) | ((a[0] >> 6) & m2) << 4;
    uint32_t mn_hi = ((a[2] >> 4) & m4) | ((a[1] >> 6) & m2) << 4;
    *sc = (uint64_t)(a[0] & m6) | (uint64_t)sc_hi << 32;
    *mn = (uint64_t)(a[1] & m6) | (uint64_t)mn_hi << 32;
}

/* Broadcasts int16 element j of each 128-bit lane of v (holding 8 int16 scales) to all lanes. */
ALWAYS_INLINE __m256i bcast16(__m256i v, const int j)
{
    return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short)((2 * j + 1) << 8 | 2 * j)));
}

/* Q4_K (is_q5 = 0) and Q5_K. Per block, per 64-value chunk c: the low nibbles of 32 bytes are
 * sub-block 2c, the high ones 2c + 1 (plus, for Q5_K, bits 2c and 2c + 1 of qh as the 5th bit);
 * maddubs with the activation bytes, madd with the sub-block's scale, summed in int32. The mins
 * term uses the activation's 16-value sums, paired into sub-block sums with hadd. */
ALWAYS_INLINE void tile_q4_k(const char *w, size_t ws, const char *x, size_t xs, int64_t nb,
                             const int RW, const int RB, const int is_q5, float *out)
{
    const int bb = is_q5 ? (int)sizeof(blk_q5_k) : (int)sizeof(blk_q4_k);
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256 acc[2][4];
    __m128 accm[2][4];
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++) {
            acc[r][b] = _mm256_setzero_ps();
            accm[r][b] = _mm_setzero_ps();
        }
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *qs[2], *qh[2];
        __m256i sc16[2];
        __m128i mn16[2];
        float dw[2], dminw[2];
        for (int r = 0; r < RW; r++) {
            const char *blk = w + r * ws + i * bb;
            prefetch_block(blk, bb);
            const blk_q4_k *b4 = (const blk_q4_k *)blk; /* d, dmin, scales: same in Q5_K */
            dw[r] = f16_f32(b4->d);
            dminw[r] = f16_f32(b4->dmin);
            uint64_t sc, mn;
            k_unpack_scales(b4->scales, &sc, &mn);
            sc16[r] =
                _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
            mn16[r] = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn));
            qs[r] = is_q5 ? ((const blk_q5_k *)blk)->qs : b4->qs;
            qh[r] = is_q5 ? ((const blk_q5_k *)blk)->qh : NULL;
        }
        __m256i sumi[2][4];
        for (int r = 0; r < RW; r++)
            for (int b = 0; b < RB; b++)
                sumi[r][b] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i lo[2], hi[2], slo[2], shi[2];
            for (int r = 0; r < RW; r++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(qs[r] + 32 * c));
                lo[r] = _mm256_and_si256(q, low4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
                if (is_q5) {
                    __m256i h = _mm256_loadu_si256((const __m256i *)qh[r]);
                    __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(h, 2 * c), one);
                    __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(h, 2 * c + 1), one);
                    lo[r] = _mm256_or_si256(lo[r], _mm256_slli_epi16(h0, 4));
                    hi[r] = _mm256_or_si256(hi[r], _mm256_slli_epi16(h1, 4));
                }
                slo[r] = bcast16(sc16[r], 2 * c);
                shi[r] = bcast16(sc16[r], 2 * c + 1);
            }
            for (int b = 0; b < RB; b++) {
                const blk_q8_k *xb = (const blk_q8_k *)(x + (size_t)b * xs) + i;
                __m256i xl = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * c));
                __m256i xh = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * c + 32));
                for (int r = 0; r < RW; r++) {
                    __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], xl), slo[r]);
                    __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], xh), shi[r]);
                    sumi[r][b] = _mm256_add_epi32(sumi[r][b], _mm256_add_epi32(pl, ph));
                }
            }
        }
        for (int b = 0; b < RB; b++) {
            const blk_q8_k *xb = (const blk_q8_k *)(x + (size_t)b * xs) + i;
            __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xb->bsums),
                                        _mm_loadu_si128((const __m128i *)(xb->bsums + 8)));
            for (int r = 0; r < RW; r++) {
                __m256 p = _mm256_cvtepi32_ps(sumi[r][b]);
                acc[r][b] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw[r] * xb->d), acc[r][b]);
                __m128 m = _mm_cvtepi32_ps(_mm_madd_epi16(mn16[r], bs));
                accm[r][b] = _mm_fmadd_ps(m, _mm_set1_ps(dminw[r] * xb->d), accm[r][b]);
            }
        }
    }
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++) {
            __m128 m = accm[r][b];
            m = _mm_add_ps(m, _mm_movehl_ps(m, m));
            m = _mm_add_ss(m, _mm_movehdup_ps(m));
            out[r * RB + b] = hsum_ps(acc[r][b]) - _mm_cvtss_f32(m);
        }
}

/* Q6_K. Quants are used as stored, 0..63 (unsigned for maddubs), and the −32 offset comes back
 * as 32·Σ_k sc_k·bsum_k from the activation's 16-value sums. Per half h and part p (see
 * quant_ref.c), 32 quants pair with activation bytes 128h + 32p and with the scales of
 * sub-blocks 8h + 2p (first 16) and 8h + 2p + 1 (last 16). */
ALWAYS_INLINE void tile_q6_k(const char *w, size_t ws, const char *x, size_t xs, int64_t nb,
                             const int RW, const int RB, float *out)
{
    const int bb = (int)sizeof(blk_q6_k);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc[2][4];
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++)
            acc[r][b] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const blk_q6_k *wb[2];
        __m128i sc8[2];
        float dw[2];
        __m256i sumi[2][4];
        for (int r = 0; r < RW; r++) {
            wb[r] = (const blk_q6_k *)(w + r * ws + i * bb);
            prefetch_block((const char *)wb[r], bb);
            dw[r] = f16_f32(wb[r]->d);
            sc8[r] = _mm_loadu_si128((const __m128i *)wb[r]->scales);
            for (int b = 0; b < RB; b++) {
                /* start from −32·Σ sc_k·bsum_k */
                const blk_q8_k *xb = (const blk_q8_k *)(x + (size_t)b * xs) + i;
                __m256i off = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8[r]),
                                                _mm256_loadu_si256((const __m256i *)xb->bsums));
                sumi[r][b] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
            }
        }
        for (int h = 0; h < 2; h++) {
            for (int p = 0; p < 4; p++) {
                __m256i q[2], s[2];
                for (int r = 0; r < RW; r++) {
                    const uint8_t *ql = wb[r]->ql + 64 * h + 32 * (p % 2);
                    __m256i l = _mm256_loadu_si256((const __m256i *)ql);
                    __m256i hb = _mm256_loadu_si256((const __m256i *)(wb[r]->qh + 32 * h));
                    l = p < 2 ? _mm256_and_si256(l, low4)
                              : _mm256_and_si256(_mm256_srli_epi16(l, 4), low4);
                    /* bits 2p, 2p + 1 of qh → bits 4, 5 (masked first, so no bits cross bytes) */
                    hb = _mm256_and_si256(hb, _mm256_set1_epi8((char)(3 << (2 * p))));
                    hb = p == 0   ? _mm256_slli_epi16(hb, 4)
                         : p == 1 ? _mm256_slli_epi16(hb, 2)
                         : p == 2 ? hb
                                  : _mm256_srli_epi16(hb, 2);
                    q[r] = _mm256_or_si256(l, hb);
                    int k = 8 * h + 2 * p;
                    __m128i sel = _mm_setr_epi8(
                        (char)k, (char)k, (char)k, (char)k, (char)k, (char)k, (char)k, (char)k,
                        (char)(k + 1), (char)(k + 1), (char)(k + 1), (char)(k + 1), (char)(k + 1),
                        (char)(k + 1), (char)(k + 1), (char)(k + 1));
                    s[r] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8[r], sel));
                }
                for (int b = 0; b < RB; b++) {
                    const blk_q8_k *xb = (const blk_q8_k *)(x + (size_t)b * xs) + i;
                    __m256i xv = _mm256_loadu_si256((const __m256i *)(xb->qs + 128 * h + 32 * p));
                    for (int r = 0; r < RW; r++) {
                        __m256i pr = _mm256_madd_epi16(_mm256_maddubs_epi16(q[r], xv), s[r]);
                        sumi[r][b] = _mm256_add_epi32(sumi[r][b], pr);
                    }
                }
            }
        }
        for (int b = 0; b < RB; b++) {
            const blk_q8_k *xb = (const blk_q8_k *)(x + (size_t)b * xs) + i;
            for (int r = 0; r < RW; r++)
                acc[r][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r][b]),
                                            _mm256_set1_ps(dw[r] * xb->d), acc[r][b]);
        }
    }
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++)
            out[r * RB + b] = hsum_ps(acc[r][b]);
}

/* --- tile instances, dots and the matmul driver ----------------------------------------------- */

/* A tile with RW and RB fixed (n = values per row, not blocks). */
typedef void (*tile_fn)(const char *w, size_t ws, const char *x, size_t xs, int64_t n, float *out);

#define TILE_FN(name, rw, rb, call)                                                                \
    static void name##_##rw##_##rb(const char *w, size_t ws, const char *x, size_t xs, int64_t n,  \
                                   float *out)                                                     \
    {                                                                                              \
        enum { RW = rw, RB = rb };                                                                 \
        call;                                                                                      \
    }

/* Instances: one weight row against 1–4 activations, two rows against 1–2 (small batches,
 * where sharing each activation load between two rows is what saves work). */
#define TILE_SET(name, call)                                                                       \
    TILE_FN(name, 1, 1, call)                                                                      \
    TILE_FN(name, 1, 2, call)                                                                      \
    TILE_FN(name, 1, 3, call)                                                                      \
    TILE_FN(name, 1, 4, call)                                                                      \
    TILE_FN(name, 2, 1, call)                                                                      \
    TILE_FN(name, 2, 2, call)                                                                      \
    static const tile_fn name[3][5] = {                                                            \
        {NULL},                                                                                    \
        {NULL, name##_1_1, name##_1_2, name##_1_3, name##_1_4},                                    \
        {NULL, name##_2_1, name##_2_2, NULL, NULL},                                                \
    };                                                                                             \
    static float name##_dot(const void *w, const void *x, int64_t n)                               \
    {                                                                                              \
        float r;                                                                                   \
        name##_1_1(w, 0, x, 0, n, &r);                                                             \
        return r;                                                                                  \
    }

/* One weight row at a time only (the driver falls back to 1-row tiles where [2][n] is NULL):
 * the K-quant tiles hold too much per row for two rows to stay in registers. */
#define TILE_SET_1ROW(name, call)                                                                  \
    TILE_FN(name, 1, 1, call)                                                                      \
    TILE_FN(name, 1, 2, call)                                                                      \
    TILE_FN(name, 1, 3, call)                                                                      \
    TILE_FN(name, 1, 4, call)                                                                      \
    static const tile_fn name[3][5] = {                                                            \
        {NULL},                                                                                    \
        {NULL, name##_1_1, name##_1_2, name##_1_3, name##_1_4},                                    \
        {NULL},                                                                                    \
    };                                                                                             \
    static float name##_dot(const void *w, const void *x, int64_t n)                               \
    {                                                                                              \
        float r;                                                                                   \
        name##_1_1(w, 0, x, 0, n, &r);                                                             \
        return r;                                                                                  \
    }

TILE_SET(tiles_f32, tile_float(w, ws, x, xs, n, RW, RB, 0, out))
TILE_SET(tiles_f16, tile_float(w, ws, x, xs, n, RW, RB, 1, out))
TILE_SET(tiles_bf16, tile_float(w, ws, x, xs, n, RW, RB, 2, out))

TILE_SET_1ROW(tiles_q4_k, tile_q4_k(w, ws, x, xs, n / QK_K, RW, RB, 0, out))
TILE_SET_1ROW(tiles_q5_k, tile_q4_k(w, ws, x, xs, n / QK_K, RW, RB, 1, out))
TILE_SET_1ROW(tiles_q6_k, tile_q6_k(w, ws, x, xs, n / QK_K, RW, RB, out))

/* The driver for the float and K-quant tiles: two weight rows at a time where there are at most
 * two activation rows and the type has two-row tiles, else one, each against up to four. */
static void mm_drive(const tile_fn tiles[3][5], size_t row_bytes, const void *W, int64_t cols,
                     const void *xq, size_t xs, int B, float *Y, int64_t ldy, int64_t r0,
                     int64_t r1)
{
    int chunk = B;
    if (xs > 0 && (size_t)B * xs > ACT_CHUNK_BYTES) {
        chunk = (int)(ACT_CHUNK_BYTES / xs) & ~3;
        chunk = chunk < 4 ? 4 : chunk;
    }
    for (int b0 = 0; b0 < B; b0 += chunk) {
        int bn = B - b0 < chunk ? B - b0 : chunk;
        const char *x0 = (const char *)xq + (size_t)b0 * xs;
        for (int64_t r = r0; r < r1;) {
            const char *w = (const char *)W + (size_t)r * row_bytes;
            int rw = bn <= 2 && r + 1 < r1 && tiles[2][bn] ? 2 : 1;
            float o[8];
            for (int b = 0; b < bn; b += 4) {
                int nb = bn - b < 4 ? bn - b : 4;
                tiles[rw][nb](w, row_bytes, x0 + (size_t)b * xs, xs, cols, o);
                for (int k = 0; k < rw; k++)
                    for (int j = 0; j < nb; j++)
                        Y[(int64_t)(b0 + b + j) * ldy + r + k] = o[k * nb + j];
            }
            r += rw;
        }
    }
}

#define MM_FN(name, tiles, row_bytes_expr)                                                         \
    static void name(const void *W, int64_t cols, const void *xq, size_t xs, int B, float *Y,      \
                     int64_t ldy, int64_t r0, int64_t r1)                                          \
    {                                                                                              \
        mm_drive(tiles, (row_bytes_expr), W, cols, xq, xs, B, Y, ldy, r0, r1);                     \
    }

MM_FN(mm_f32, tiles_f32, (size_t)cols * sizeof(float))
MM_FN(mm_f16, tiles_f16, (size_t)cols * sizeof(qt_f16))
MM_FN(mm_bf16, tiles_bf16, (size_t)cols * sizeof(qt_bf16))
MM_FN(mm_q4_k, tiles_q4_k, (size_t)(cols / QK_K) * sizeof(blk_q4_k))
MM_FN(mm_q5_k, tiles_q5_k, (size_t)(cols / QK_K) * sizeof(blk_q5_k))
MM_FN(mm_q6_k, tiles_q6_k, (size_t)(cols / QK_K) * sizeof(blk_q6_k))

/* --- dequantisation (bit-identical to quant_ref.c) -------------------------------------------- */

static void dequant_f16(const void *row, float *out, int64_t n)
{
    const qt_f16 *h = row;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, load_w_f16(h, i));
    for (; i < n; i++)
        out[i] = f16_f32(h[i]);
}

static void dequant_bf16(const void *row, float *out, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, load_w_bf16(row, i));
    for (; i < n; i++)
        out[i] = w_elem(row, i, 2);
}

/* 32 bytes → 4 × 8 floats in order, each multiplied by d then (when add) m added. */
ALWAYS_INLINE void store_bytes_scaled(__m256i q, const int is_signed, __m256 d, __m256 m,
                                      const int add, float *out)
{
    __m128i h[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
    for (int k = 0; k < 4; k++) {
        __m128i part = (k & 1) ? _mm_srli_si128(h[k >> 1], 8) : h[k >> 1];
        __m256i i32 = is_signed ? _mm256_cvtepi8_epi32(part) : _mm256_cvtepu8_epi32(part);
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(i32), d);
        _mm256_storeu_ps(out + 8 * k, add ? _mm256_add_ps(v, m) : v);
    }
}

static void dequant_q4_0(const void *row, float *out, int64_t n)
{
    const blk_q4_0 *b = row;
    for (int64_t i = 0; i < n / QK4_0; i++, out += QK4_0) {
        __m256i q = _mm256_sub_epi8(unpack_nibbles(b[i].qs), _mm256_set1_epi8(8));
        store_bytes_scaled(q, 1, _mm256_set1_ps(f16_f32(b[i].d)), _mm256_setzero_ps(), 0, out);
    }
}

static void dequant_q4_1(const void *row, float *out, int64_t n)
{
    const blk_q4_1 *b = row;
    for (int64_t i = 0; i < n / QK4_1; i++, out += QK4_1)
        store_bytes_scaled(unpack_nibbles(b[i].qs), 0, _mm256_set1_ps(f16_f32(b[i].d)),
                           _mm256_set1_ps(f16_f32(b[i].m)), 1, out);
}

static void dequant_q8_0(const void *row, float *out, int64_t n)
{
    const blk_q8_0 *b = row;
    for (int64_t i = 0; i < n / QK8_0; i++, out += QK8_0)
        store_bytes_scaled(_mm256_loadu_si256((const __m256i *)b[i].qs), 1,
                           _mm256_set1_ps(f16_f32(b[i].d)), _mm256_setzero_ps(), 0, out);
}

static void dequant_q8_1(const void *row, float *out, int64_t n)
{
    const blk_q8_1f *b = row;
    for (int64_t i = 0; i < n / QK8_0; i++, out += QK8_0)
        store_bytes_scaled(_mm256_loadu_si256((const __m256i *)b[i].qs), 1, _mm256_set1_ps(b[i].d),
                           _mm256_setzero_ps(), 0, out);
}

/* --- quantisation (bit-identical to quant_ref.c) ---------------------------------------------- */

static void quantize_f16(const float *x, void *out, int64_t n)
{
    qt_f16 *h = out;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        h[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

/* roundf() on 8 lanes: truncate, then step away from zero when the dropped fraction is ≥ 1/2
 * (the fraction x − trunc(x) is exact in float, so this matches roundf bit for bit). */
ALWAYS_INLINE __m256 round_half_away(__m256 v)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    __m256 step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
    __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm256_add_ps(t, _mm256_and_ps(up, step));
}

/* One 32-value block: d = max|x| / 127, 32 rounded quants stored to qs; returns sum(q). */
ALWAYS_INLINE int quantize_block_8bit(const float *x, float *d_out, int8_t *qs)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    for (int k = 0; k < 4; k++)
        v[k] = _mm256_loadu_ps(x + 8 * k);
    __m256 mx =
        _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                      _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);

    float d = amax / 127;
    float id = d != 0 ? 1.0f / d : 0.0f;
    __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_cvtps_epi32(round_half_away(_mm256_mul_ps(v[k], vid)));
    /* packs interleave 128-bit lanes: 0 1 4 5 | 2 3 6 7 (dword groups) → fix the order */
    __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)qs, p8);

    __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
    *d_out = d;
    return _mm_cvtsi128_si32(s4);
}

static void quantize_q8_0(const float *x, void *out, int64_t n)
{
    blk_q8_0 *b = out;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float d;
        quantize_block_8bit(x, &d, b[i].qs);
        b[i].d = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    }
}

static void quantize_q8_1(const float *x, void *out, int64_t n)
{
    blk_q8_1f *b = out;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        int sum = quantize_block_8bit(x, &b[i].d, b[i].qs);
        b[i].s = b[i].d * (float)sum;
    }
}

/* --- Q5 and K-quant dequantisation, Q8_K quantisation (bit-identical to quant_ref.c) --------- */

static void dequant_q5_0(const void *row, float *out, int64_t n)
{
    const blk_q5_0 *b = row;
    for (int64_t i = 0; i < n / QK5_0; i++, out += QK5_0) {
        __m256i q = _mm256_or_si256(unpack_nibbles(b[i].qs), q5_high_bits(b[i].qh));
        store_bytes_scaled(_mm256_sub_epi8(q, _mm256_set1_epi8(16)), 1,
                           _mm256_set1_ps(f16_f32(b[i].d)), _mm256_setzero_ps(), 0, out);
    }
}

static void dequant_q5_1(const void *row, float *out, int64_t n)
{
    const blk_q5_1 *b = row;
    for (int64_t i = 0; i < n / QK5_1; i++, out += QK5_1)
        store_bytes_scaled(_mm256_or_si256(unpack_nibbles(b[i].qs), q5_high_bits(b[i].qh)), 0,
                           _mm256_set1_ps(f16_f32(b[i].d)), _mm256_set1_ps(f16_f32(b[i].m)), 1,
                           out);
}

/* Q4_K / Q5_K: value = (d·sc)·q − dmin·m, as q·(d·sc) + (−(dmin·m)), the same roundings. */
static void dequant_k_affine(const void *row, float *out, int64_t n, const int is_q5)
{
    const int bb = is_q5 ? (int)sizeof(blk_q5_k) : (int)sizeof(blk_q4_k);
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < n / QK_K; i++, out += QK_K) {
        const char *blk = (const char *)row + i * bb;
        const blk_q4_k *b4 = (const blk_q4_k *)blk;
        const uint8_t *qs = is_q5 ? ((const blk_q5_k *)blk)->qs : b4->qs;
        float d = f16_f32(b4->d), dmin = f16_f32(b4->dmin);
        uint64_t sc, mn;
        k_unpack_scales(b4->scales, &sc, &mn);
        for (int j = 0; j < 8; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * (j / 2)));
            q = j % 2 ? _mm256_and_si256(_mm256_srli_epi16(q, 4), low4) : _mm256_and_si256(q, low4);
            if (is_q5) {
                __m256i h = _mm256_loadu_si256((const __m256i *)((const blk_q5_k *)blk)->qh);
                q = _mm256_or_si256(
                    q, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, j), one), 4));
            }
            float dj = d * (float)(uint8_t)(sc >> (8 * j)),
                  mj = dmin * (float)(uint8_t)(mn >> (8 * j));
            store_bytes_scaled(q, 0, _mm256_set1_ps(dj), _mm256_set1_ps(-mj), 1, out + 32 * j);
        }
    }
}

static void dequant_q4_k(const void *row, float *out, int64_t n)
{
    dequant_k_affine(row, out, n, 0);
}

static void dequant_q5_k(const void *row, float *out, int64_t n)
{
    dequant_k_affine(row, out, n, 1);
}

/* 16 signed bytes → 16 floats, each multiplied by d. */
ALWAYS_INLINE void store16_scaled(__m128i q, float d, float *out)
{
    __m256 vd = _mm256_set1_ps(d);
    _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), vd));
    _mm256_storeu_ps(
        out + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), vd));
}

static void dequant_q6_k(const void *row, float *out, int64_t n)
{
    const blk_q6_k *b = row;
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int64_t i = 0; i < n / QK_K; i++, out += QK_K) {
        float d = f16_f32(b[i].d);
        for (int h = 0; h < 2; h++) {
            __m256i hb0 = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            for (int p = 0; p < 4; p++) {
                __m256i l = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h + 32 * (p % 2)));
                l = p < 2 ? _mm256_and_si256(l, low4)
                          : _mm256_and_si256(_mm256_srli_epi16(l, 4), low4);
                __m256i hb = _mm256_and_si256(hb0, _mm256_set1_epi8((char)(3 << (2 * p))));
                hb = p == 0   ? _mm256_slli_epi16(hb, 4)
                     : p == 1 ? _mm256_slli_epi16(hb, 2)
                     : p == 2 ? hb
                              : _mm256_srli_epi16(hb, 2);
                __m256i q = _mm256_sub_epi8(_mm256_or_si256(l, hb), _mm256_set1_epi8(32));
                int k = 8 * h + 2 * p, e = 128 * h + 32 * p;
                store16_scaled(_mm256_castsi256_si128(q), d * (float)b[i].scales[k], out + e);
                store16_scaled(_mm256_extracti128_si256(q, 1), d * (float)b[i].scales[k + 1],
                               out + e + 16);
            }
        }
    }
}

static void dequant_q8_k(const void *row, float *out, int64_t n)
{
    const blk_q8_k *b = row;
    for (int64_t i = 0; i < n / QK_K; i++, out += QK_K)
        for (int k = 0; k < QK_K / 32; k++)
            store_bytes_scaled(_mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * k)), 1,
                               _mm256_set1_ps(b[i].d), _mm256_setzero_ps(), 0, out + 32 * k);
}

/* As qt_ref_quantize_q8_k: m = the first value of largest magnitude (NaNs skipped), s = −127/m,
 * q = nearest-even(clamp(x·s, −127, 127)) (cvtps rounds to nearest even, as nearbyintf does;
 * max_ps/min_ps return the bound for a NaN lane as fmaxf/fminf do), d = 1/s; bsums from the
 * stored bytes with maddubs/madd and a transposing hadd. */
static void quantize_q8_k(const float *x, void *out, int64_t n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    blk_q8_k *b = out;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        __m256 mx = _mm256_setzero_ps();
        for (int k = 0; k < QK_K / 8; k++)
            mx = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)), mx);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        memset(&b[i], 0, sizeof b[i]);
        if (amax == 0)
            continue;
        float vmax = 0;
        __m256 va = _mm256_set1_ps(amax);
        for (int k = 0; k < QK_K / 8; k++) {
            __m256 v = _mm256_loadu_ps(x + 8 * k);
            int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), va, _CMP_EQ_OQ));
            if (mask) {
                vmax = x[8 * k + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        float iscale = -127.0f / vmax;
        __m256 vs = _mm256_set1_ps(iscale), lo = _mm256_set1_ps(-127.0f),
               hi = _mm256_set1_ps(127.0f);
        __m256i sums[QK_K / 32];
        for (int k = 0; k < QK_K / 32; k++) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) {
                __m256 v = _mm256_mul_ps(vs, _mm256_loadu_ps(x + 32 * k + 8 * j));
                q[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
            }
            __m256i p8 =
                _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(b[i].qs + 32 * k), p8);
            /* 8 int32 lanes: sums of 4 consecutive quants; lanes 0–3 are group 2k, 4–7 2k + 1 */
            sums[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), p8),
                                        _mm256_set1_epi16(1));
        }
        for (int k = 0; k < QK_K / 32; k += 4) {
            __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(sums[k], sums[k + 1]),
                                          _mm256_hadd_epi32(sums[k + 2], sums[k + 3]));
            /* h: groups 2k, 2k+2, 2k+4, 2k+6 | 2k+1, 2k+3, 2k+5, 2k+7 → in order */
            h = _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            __m128i s16 =
                _mm_packs_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            _mm_storeu_si128((__m128i *)(b[i].bsums + 2 * k), s16);
        }
        b[i].d = 1.0f / iscale;
    }
}

/* --- installation ----------------------------------------------------------------------------- */

void qt_avx2_install(qt_traits tab[QT_NTYPES], qt_mm_fn mm[QT_NTYPES])
{
    tab[GGML_F32].dot = tiles_f32_dot;
    mm[GGML_F32] = mm_f32;

    tab[GGML_F16].dequant = dequant_f16;
    tab[GGML_F16].dot = tiles_f16_dot;
    tab[GGML_F16].quantize = quantize_f16;
    mm[GGML_F16] = mm_f16;

    tab[GGML_BF16].dequant = dequant_bf16;
    tab[GGML_BF16].dot = tiles_bf16_dot;
    mm[GGML_BF16] = mm_bf16;

    tab[GGML_Q4_0].dequant = dequant_q4_0;
    tab[GGML_Q4_0].dot = dot_q4_0;
    mm[GGML_Q4_0] = mm_q4_0;

    tab[GGML_Q4_1].dequant = dequant_q4_1;
    tab[GGML_Q4_1].dot = dot_q4_1;
    mm[GGML_Q4_1] = mm_q4_1;

    tab[GGML_Q8_0].dequant = dequant_q8_0;
    tab[GGML_Q8_0].dot = dot_q8_0;
    tab[GGML_Q8_0].quantize = quantize_q8_0;
    mm[GGML_Q8_0] = mm_q8_0;

    tab[GGML_Q8_1].dequant = dequant_q8_1;
    tab[GGML_Q8_1].quantize = quantize_q8_1;

    tab[GGML_Q5_0].dequant = dequant_q5_0;
    tab[GGML_Q5_0].dot = dot_q5_0;
    mm[GGML_Q5_0] = mm_q5_0;

    tab[GGML_Q5_1].dequant = dequant_q5_1;
    tab[GGML_Q5_1].dot = dot_q5_1;
    mm[GGML_Q5_1] = mm_q5_1;

    tab[GGML_Q4_K].dequant = dequant_q4_k;
    tab[GGML_Q4_K].dot = tiles_q4_k_dot;
    mm[GGML_Q4_K] = mm_q4_k;

    tab[GGML_Q5_K].dequant = dequant_q5_k;
    tab[GGML_Q5_K].dot = tiles_q5_k_dot;
    mm[GGML_Q5_K] = mm_q5_k;

    tab[GGML_Q6_K].dequant = dequant_q6_k;
    tab[GGML_Q6_K].dot = tiles_q6_k_dot;
    mm[GGML_Q6_K] = mm_q6_k;

    tab[GGML_Q8_K].dequant = dequant_q8_k;
    tab[GGML_Q8_K].quantize = quantize_q8_k;
}
