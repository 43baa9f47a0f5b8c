/* quant_bk.h — the 32-value block types' products (Q4_0, Q5_0, Q8_0, Q4_1, Q5_1), included by
 * quant_avx2.c and, with BK_VNNI 1, by quant_vnni.c: the same tiles, drivers and canonical
 * per-pair arithmetic, with each pair's four-product sums from AVX-512 VNNI's vpdpbusd in
 * the latter. Both give the same exact integers, so their results are bit-identical. */
#ifndef PARLEY_QUANT_BK_H
#define PARLEY_QUANT_BK_H

#include <math.h>

#include "quant_x86.h"

#ifndef BK_VNNI
#define BK_VNNI 0
#endif

/* --- 32-value block types: Q4_0, Q5_0, Q8_0 against Q8_0; Q4_1, Q5_1 against Q8_1 -------------
 * Every (weight row, activation row) pair is computed the same way, whichever tile or batch it
 * is in. Per block i, the integer sums of values 0..15 (lo) and 16..31 (hi) are exact, then
 *   acc_lo = fma(float(lo), d_w·d_x, acc_lo), and acc_hi likewise;
 *   accm = fma(m_w, s_x, accm) for the types with a min (Q4_1, Q5_1);
 * and the result is acc_lo + acc_hi, plus accm for those types.
 *
 * The tiles get the exact sums four pairs at a time. maddubs gives each pair's products summed
 * two by two in int16. Where the weight quants are small (|q| ≤ 31: all but Q8_0), two rounds of
 * hadd in int16 (8 products, at most 8·31·127 = 31,496) and a madd by ones leave, in lanes k and
 * k + 4, the lo and hi sums of pair k; for Q8_0, madd first, then two rounds of hadd in int32. One
 * cvt, one mul and one fma then serve four pairs, where scaling each pair's eight int32 lanes on
 * its own took four of each: batched Q4_1 products ran about 1.8× faster.
 *
 * The signed quants (Q4_0: q − 8, Q5_0: q − 16, Q8_0) go through maddubs as |w| times x carrying
 * w's sign, which needs x ≠ −128; activations quantised here have |q| ≤ 127 by construction.
 *
 * With BK_VNNI (quant_vnni.c, AVX-512 VNNI with VL), vpdpbusd takes the place of maddubs and
 * the first madd: it sums four u8 × s8 products straight into int32, the same integers, and the
 * quads go through the int32 hadds. Everything after the integer sums is shared. */

enum {
    BK_Q4_0,
    BK_Q5_0,
    BK_Q8_0,
    BK_Q8S, /* Q4_0 / Q5_0 repacked as Q8_0 (blk_q8_0, |q| ≤ 16) */
    BK_Q4_1,
    BK_Q5_1,
    BK_U8_1, /* Q4_1 / Q5_1 repacked (blk_u8_1) */
};

/* A Q4_1 / Q5_1 block unpacked for prefill: d and m as floats, quants (0..31) one per byte. */
typedef struct {
    float d, m;
    uint8_t qs[32];
} blk_u8_1; /* 40 bytes */

ALWAYS_INLINE bool bk_has_min(const int k)
{
    return k >= BK_Q4_1;
}

ALWAYS_INLINE size_t bk_bytes(const int k)
{
    switch (k) {
    case BK_Q4_0:
        return sizeof(blk_q4_0);
    case BK_Q5_0:
        return sizeof(blk_q5_0);
    case BK_Q8_0:
    case BK_Q8S:
        return sizeof(blk_q8_0);
    case BK_Q4_1:
        return sizeof(blk_q4_1);
    case BK_Q5_1:
        return sizeof(blk_q5_1);
    default:
        return sizeof(blk_u8_1);
    }
}

/* Quants of block i of a weight row (signed, or 0..31 for the types with a min), with d and m in
 * lanes 0 and 1 of *dm. Prefetches the forms read from memory. */
ALWAYS_INLINE __m256i bk_load(const char *row, int64_t i, const int k, __m128 *dm)
{
    const char *b = row + (size_t)i * bk_bytes(k);
    if (k == BK_U8_1) {
        *dm = _mm_castpd_ps(_mm_load_sd((const double *)b));
        return _mm256_loadu_si256((const __m256i *)((const blk_u8_1 *)b)->qs);
    }
    uint32_t h = 0;
    memcpy(&h, b, k >= BK_Q4_1 ? 4 : 2); /* the halves d (and m) start every raw block */
    *dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)h));
    if (k != BK_Q8S)
        prefetch_far(b);
    switch (k) {
    case BK_Q4_0:
        return _mm256_sub_epi8(unpack_nibbles(((const blk_q4_0 *)b)->qs), _mm256_set1_epi8(8));
    case BK_Q5_0: {
        const blk_q5_0 *b5 = (const blk_q5_0 *)b;
        return _mm256_sub_epi8(_mm256_or_si256(unpack_nibbles(b5->qs), q5_high_bits(b5->qh)),
                               _mm256_set1_epi8(16));
    }
    case BK_Q4_1:
        return unpack_nibbles(((const blk_q4_1 *)b)->qs);
    case BK_Q5_1: {
        const blk_q5_1 *b5 = (const blk_q5_1 *)b;
        return _mm256_or_si256(unpack_nibbles(b5->qs), q5_high_bits(b5->qh));
    }
    default: /* BK_Q8_0, BK_Q8S */
        return _mm256_loadu_si256((const __m256i *)((const blk_q8_0 *)b)->qs);
    }
}

/* The activation block i of row x: its quants, and d (and s) as floats. */
ALWAYS_INLINE __m256i bk_act(const char *x, int64_t i, const int k, float *d, float *s)
{
    if (bk_has_min(k)) {
        const blk_q8_1f *xb = (const blk_q8_1f *)x + i;
        *d = xb->d, *s = xb->s;
        return _mm256_loadu_si256((const __m256i *)xb->qs);
    }
    const blk_q8_0 *xb = (const blk_q8_0 *)x + i;
    *d = f16_f32(xb->d), *s = 0;
    return _mm256_loadu_si256((const __m256i *)xb->qs);
}

ALWAYS_INLINE const int8_t *bk_act_qs(const char *x, int64_t i, const int k)
{
    return bk_has_min(k) ? ((const blk_q8_1f *)x + i)->qs : ((const blk_q8_0 *)x + i)->qs;
}

/* One pair's products summed two by two (int16); with VNNI, four by four (int32: lane l holds
 * the products of bytes 4l..4l+3, exactly what madd by ones makes of the int16 pairs). aw = |wq|
 * for the signed types. */
ALWAYS_INLINE __m256i bk_pair(__m256i wq, __m256i aw, __m256i xq, const int k)
{
#if BK_VNNI
    if (bk_has_min(k))
        return _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq, xq);
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(xq, wq));
#else
    if (bk_has_min(k))
        return _mm256_maddubs_epi16(wq, xq);
    return _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xq, wq));
#endif
}

/* The int32 four-product sums of four pairs → lanes j, j + 4: the lo and hi sums of pair j. */
ALWAYS_INLINE __m256 bk_quad32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    return _mm256_cvtepi32_ps(_mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d)));
}

/* Four pairs → lanes j, j + 4: the lo and hi sums of pair j, as floats. */
ALWAYS_INLINE __m256 bk_quad(__m256i p0, __m256i p1, __m256i p2, __m256i p3, const int k)
{
    if (BK_VNNI)
        return bk_quad32(p0, p1, p2, p3);
    const __m256i one = _mm256_set1_epi16(1);
    if (k != BK_Q8_0) {
        __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(p0, p1), _mm256_hadd_epi16(p2, p3));
        return _mm256_cvtepi32_ps(_mm256_madd_epi16(h, one));
    }
    return bk_quad32(_mm256_madd_epi16(p0, one), _mm256_madd_epi16(p1, one),
                     _mm256_madd_epi16(p2, one), _mm256_madd_epi16(p3, one));
}

/* lo + hi (+ m) of the four pairs of a quad accumulator. */
ALWAYS_INLINE __m128 bk_result(__m256 acc, __m128 accm, const int k)
{
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    return bk_has_min(k) ? _mm_add_ps(r, accm) : r;
}

/* The d and s of four activation rows for one block, gathered once per matmul so that
 * bk_tile_acts loads them as vectors. */
typedef struct {
    float d[4], s[4];
} act4_ds;

/* One weight row against NQ ≤ 2 groups of four activation rows: x + (4q + j)·xs (j < 4) with
 * their d and s in ds + q·nb; out[4q + j]. Two groups share each weight block's unpacking (12%
 * faster than one at a time for Q4_1). */
ALWAYS_INLINE void bk_tile_acts(const char *w, const char *x, size_t xs, const act4_ds *ds,
                                int64_t nb, const int NQ, const int k, float *out)
{
    __m256 acc[2];
    __m128 accm[2];
    for (int q = 0; q < NQ; q++) {
        acc[q] = _mm256_setzero_ps();
        accm[q] = _mm_setzero_ps();
    }
    for (int64_t i = 0; i < nb; i++) {
        __m128 dm;
        __m256i wq = bk_load(w, i, k, &dm);
        __m256i aw = bk_has_min(k) ? wq : _mm256_sign_epi8(wq, wq);
        __m256 dw = _mm256_broadcastss_ps(dm);
#pragma GCC unroll 2
        for (int q = 0; q < NQ; q++) {
            const char *xq = x + (size_t)4 * q * xs;
            const act4_ds *dq = ds + q * nb + i;
            __m256i p[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++)
                p[j] = bk_pair(
                    wq, aw,
                    _mm256_loadu_si256((const __m256i *)bk_act_qs(xq + (size_t)j * xs, i, k)), k);
            __m256 sc = _mm256_mul_ps(dw, _mm256_broadcast_ps((const __m128 *)dq->d));
            acc[q] = _mm256_fmadd_ps(bk_quad(p[0], p[1], p[2], p[3], k), sc, acc[q]);
            if (bk_has_min(k))
                accm[q] = _mm_fmadd_ps(_mm_permute_ps(dm, 0x55), _mm_loadu_ps(dq->s), accm[q]);
        }
    }
    for (int q = 0; q < NQ; q++)
        _mm_storeu_ps(out + 4 * q, bk_result(acc[q], accm[q], k));
}

/* Four weight rows w[r] against RB ≤ 2 activation rows x + b·xs: out[b*4 + r]. The rows' d and
 * m are gathered per block into d8 (lanes r and r + 4) and m4. */
ALWAYS_INLINE void bk_tile_rows(const char *const w[4], const char *x, size_t xs, int64_t nb,
                                const int RB, const int k, float *out)
{
    __m256 acc[2];
    __m128 accm[2];
    for (int b = 0; b < RB; b++) {
        acc[b] = _mm256_setzero_ps();
        accm[b] = _mm_setzero_ps();
    }
    for (int64_t i = 0; i < nb; i++) {
        __m256i wq[4];
        __m128 dm[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            wq[r] = bk_load(w[r], i, k, &dm[r]);
        __m128 d01m01 = _mm_unpacklo_ps(dm[0], dm[1]), d23m23 = _mm_unpacklo_ps(dm[2], dm[3]);
        __m128 d4 = _mm_movelh_ps(d01m01, d23m23), m4 = _mm_movehl_ps(d23m23, d01m01);
        __m256 d8 = _mm256_set_m128(d4, d4);
        for (int b = 0; b < RB; b++) {
            float dx, sx;
            __m256i xq = bk_act(x + (size_t)b * xs, i, k, &dx, &sx);
            __m256i p[4];
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
                p[r] = bk_pair(wq[r], _mm256_sign_epi8(wq[r], wq[r]), xq, k);
            acc[b] = _mm256_fmadd_ps(bk_quad(p[0], p[1], p[2], p[3], k),
                                     _mm256_mul_ps(d8, _mm256_set1_ps(dx)), acc[b]);
            if (bk_has_min(k))
                accm[b] = _mm_fmadd_ps(m4, _mm_set1_ps(sx), accm[b]);
        }
    }
    for (int b = 0; b < RB; b++)
        _mm_storeu_ps(out + 4 * b, bk_result(acc[b], accm[b], k));
}

/* One pair (the table's dot): the lo and hi sums come from madd and two hadds. */
ALWAYS_INLINE float bk_dot(const char *w, const char *x, int64_t nb, const int k)
{
    __m256 acc = _mm256_setzero_ps();
    float accm = 0;
    for (int64_t i = 0; i < nb; i++) {
        __m128 dm;
        float dx, sx;
        __m256i wq = bk_load(w, i, k, &dm);
        __m256i xq = bk_act(x, i, k, &dx, &sx);
        __m256i p = bk_pair(wq, _mm256_sign_epi8(wq, wq), xq, k);
        if (!BK_VNNI)
            p = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
        p = _mm256_hadd_epi32(p, p);
        p = _mm256_hadd_epi32(p, p);
        __m256 sc = _mm256_mul_ps(_mm256_broadcastss_ps(dm), _mm256_set1_ps(dx));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc);
        if (bk_has_min(k))
            accm = fmaf(_mm_cvtss_f32(_mm_movehdup_ps(dm)), sx, accm);
    }
    return _mm_cvtss_f32(bk_result(acc, _mm_set_ss(accm), k));
}

/* Rows repacked for prefill: Q4_0 / Q5_0 as Q8_0 (the same d and the same signed quants), and
 * Q4_1 / Q5_1 as blk_u8_1. The tiles then skip the nibble and high-bit work (and, for blk_u8_1,
 * the half conversions) with bit-identical results. */
ALWAYS_INLINE void bk_repack(const char *w, char *out, int64_t nb, const int k)
{
    for (int64_t i = 0; i < nb; i++) {
        __m128 dm;
        __m256i q = bk_load(w, i, k, &dm);
        if (bk_has_min(k)) {
            blk_u8_1 *o = (blk_u8_1 *)out + i;
            o->d = _mm_cvtss_f32(dm), o->m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
            _mm256_storeu_si256((__m256i *)o->qs, q);
        } else {
            blk_q8_0 *o = (blk_q8_0 *)out + i;
            memcpy(&o->d, w + (size_t)i * bk_bytes(k), sizeof o->d);
            _mm256_storeu_si256((__m256i *)o->qs, q);
        }
    }
}

/* Activation bytes per chunk: a chunk of activation rows stays in L2 (512 KiB per core on the
 * CPUs we measure) while every weight row of the range streams through it once. */
#define ACT_CHUNK_BYTES   (192 * 1024)
#define REPACK_MAX_BLOCKS 1024 /* one repacked row on the stack (40 KiB): up to 32,768 columns */
#define ACT4_DS_CAP       2048 /* act4_ds entries on the stack (64 KiB) */

/* Activation rows from which a weight row is repacked (measured: the 5-bit unpacking is dear
 * enough to pay from 8 rows, Q5_0 at 16 rows ran 1.25× faster repacked; 4-bit from 32). */
ALWAYS_INLINE int bk_repack_min(const int k)
{
    return k == BK_Q5_0 || k == BK_Q5_1 ? 8 : 32;
}

#define bk_acts_call(w, x, xs, ds, nb, nq, k, out)                                                 \
    ((nq) == 2 ? bk_tile_acts(w, x, xs, ds, nb, 2, k, out)                                         \
               : bk_tile_acts(w, x, xs, ds, nb, 1, k, out))

/* The driver: activation rows go four at a time through bk_tile_acts (one weight row each, their
 * d and s gathered first into act4_ds); the zero to three left over, and batches under four, go
 * through bk_tile_rows, four weight rows at a time (the last rows of the range repeat to fill a
 * tile, and the repeats are not stored). */
ALWAYS_INLINE void bk_drive(const int k, const void *W, int64_t cols, const void *xq, size_t xs,
                            int B, float *Y, int64_t ldy, int64_t r0, int64_t r1)
{
    blk_u8_1 packed[REPACK_MAX_BLOCKS];
    act4_ds ds[ACT4_DS_CAP];
    const int64_t nb = cols / 32;
    const size_t row_bytes = (size_t)nb * bk_bytes(k);
    int chunk = B;
    if ((size_t)B * xs > ACT_CHUNK_BYTES) {
        chunk = (int)(ACT_CHUNK_BYTES / xs) & ~3;
        chunk = chunk < 4 ? 4 : chunk;
    }
    int64_t max_groups = ACT4_DS_CAP / nb; /* 0 beyond 65,536 columns: row tiles only */
    if (max_groups > 0 && chunk / 4 > max_groups)
        chunk = (int)max_groups * 4;
    for (int b0 = 0; b0 < B; b0 += chunk) {
        int bn = B - b0 < chunk ? B - b0 : chunk;
        const char *x0 = (const char *)xq + (size_t)b0 * xs;
        int ng = max_groups > 0 ? bn / 4 : 0;
        for (int g = 0; g < ng; g++)
            for (int j = 0; j < 4; j++)
                for (int64_t i = 0; i < nb; i++)
                    bk_act(x0 + (size_t)(4 * g + j) * xs, i, k, &ds[g * nb + i].d[j],
                           &ds[g * nb + i].s[j]);
        bool repack = k != BK_Q8_0 && bn >= bk_repack_min(k) && nb <= REPACK_MAX_BLOCKS;
        for (int64_t r = r0; ng > 0 && r < r1; r++) {
            const char *w = (const char *)W + (size_t)r * row_bytes;
            if (repack) {
                bk_repack(w, (char *)packed, nb, k);
                w = (const char *)packed;
            }
            for (int g = 0; g < ng; g += 2) {
                float o[8];
                const int nq = ng - g < 2 ? 1 : 2;
                const char *xg = x0 + (size_t)4 * g * xs;
                const act4_ds *dg = ds + g * nb;
                /* the kind stays a constant in each call, so every instance is specialised */
                if (repack && bk_has_min(k))
                    bk_acts_call(w, xg, xs, dg, nb, nq, BK_U8_1, o);
                else if (repack)
                    bk_acts_call(w, xg, xs, dg, nb, nq, BK_Q8S, o);
                else
                    bk_acts_call(w, xg, xs, dg, nb, nq, k, o);
                for (int j = 0; j < 4 * nq; j++)
                    Y[(int64_t)(b0 + 4 * g + j) * ldy + r] = o[j];
            }
        }
        for (int b = 4 * ng; b < bn; b += 2) {
            int rb = bn - b < 2 ? bn - b : 2;
            for (int64_t r = r0; r < r1; r += 4) {
                const char *w[4];
                for (int q = 0; q < 4; q++)
                    w[q] = (const char *)W + (size_t)(r + q < r1 ? r + q : r1 - 1) * row_bytes;
                float o[8];
                if (rb == 2)
                    bk_tile_rows(w, x0 + (size_t)b * xs, xs, nb, 2, k, o);
                else
                    bk_tile_rows(w, x0 + (size_t)b * xs, xs, nb, 1, k, o);
                for (int j = 0; j < rb; j++)
                    for (int q = 0; q < 4 && r + q < r1; q++)
                        Y[(int64_t)(b0 + b + j) * ldy + r + q] = o[4 * j + q];
            }
        }
    }
}

#define BK_FNS(name, k, qk)                                                                        \
    static void mm_##name(const void *W, int64_t cols, const void *xq, size_t xs, int B, float *Y, \
                          int64_t ldy, int64_t r0, int64_t r1)                                     \
    {                                                                                              \
        bk_drive(k, W, cols, xq, xs, B, Y, ldy, r0, r1);                                           \
    }                                                                                              \
    static float dot_##name(const void *w, const void *x, int64_t n)                               \
    {                                                                                              \
        return bk_dot(w, x, n / (qk), k);                                                          \
    }
#endif
