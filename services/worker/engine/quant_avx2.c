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
 * Batching: every kernel is a "tile" that walks RW ≤ 2 weight rows once and dots each unpacked
 * weight block with RB ≤ 4 activation rows held in registers. dot() is the 1×1 tile, and a
 * larger tile performs, for each (row, activation) pair, exactly the operations of the 1×1 tile,
 * so batched results are bit-identical to single ones. The matmul driver runs tiles over the row
 * range (two rows at a time when there are ≤ 2 activations, so decode shares each activation
 * load), with the activations cut into chunks that stay in L2 while the weights stream past.
 *
 * Threading: pure functions, no state. Compiled with -mavx2 -mfma -mf16c; quant.c calls in
 * here only after qt_avx2_usable(). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant_impl.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

bool qt_avx2_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

/* --- helpers ---------------------------------------------------------------------------------- */

ALWAYS_INLINE float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ALWAYS_INLINE float f16_f32(qt_f16 h)
{
    return _cvtsh_ss(h);
}

/* Weight rows are streamed once per token from DRAM; in the VMs we measure, the hardware
 * prefetcher alone left a 30 MB Q8_0 matvec at about half the memory bandwidth. A software
 * prefetch this far ahead of the read position roughly doubled it. */
#define PREFETCH_BYTES 512

ALWAYS_INLINE void prefetch_ahead(const void *p)
{
    _mm_prefetch((const char *)p + PREFETCH_BYTES, _MM_HINT_T0);
}

/* 16 bytes of packed nibbles → 32 bytes 0..15: low nibbles are elements 0–15, high 16–31. */
ALWAYS_INLINE __m256i unpack_nibbles(const uint8_t *qs)
{
    __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    raw = _mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)); /* high lane: high nibbles */
    return _mm256_and_si256(raw, _mm256_set1_epi8(0x0f));
}

/* Sum of 32 products of unsigned bytes u (≤ 128) and signed bytes s, as 8 int32 lanes → float. */
ALWAYS_INLINE __m256 dot_u8s8(__m256i u, __m256i s)
{
    __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
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

/* --- Q4_0 / Q8_0 weights against Q8_0 activations --------------------------------------------- */

/* Signed weight quants of block i (Q4_0: q − 8; Q8_0: as stored) and its scale. */
ALWAYS_INLINE __m256i signed_quants(const char *w, int64_t i, const int is_q4, float *d)
{
    if (is_q4) {
        const blk_q4_0 *blk = (const blk_q4_0 *)w + i;
        *d = f16_f32(blk->d);
        return _mm256_sub_epi8(unpack_nibbles(blk->qs), _mm256_set1_epi8(8));
    }
    const blk_q8_0 *blk = (const blk_q8_0 *)w + i;
    *d = f16_f32(blk->d);
    return _mm256_loadu_si256((const __m256i *)blk->qs);
}

/* Per block: acc += (d_w·d_x)·Σ q_w q_x, with |q_w| × (q_x carrying q_w's sign). */
ALWAYS_INLINE void tile_sq8(const char *w, size_t ws, const char *x, size_t xs, int64_t nb,
                            const int RW, const int RB, const int is_q4, float *out)
{
    __m256 acc[2][4];
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++)
            acc[r][b] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m256i wq[2], aw[2];
        float dw[2];
        for (int r = 0; r < RW; r++) {
            prefetch_ahead(w + r * ws + i * (int64_t)(is_q4 ? sizeof(blk_q4_0) : sizeof(blk_q8_0)));
            wq[r] = signed_quants(w + r * ws, i, is_q4, &dw[r]);
            aw[r] = _mm256_sign_epi8(wq[r], wq[r]);
        }
        for (int b = 0; b < RB; b++) {
            const blk_q8_0 *xb = (const blk_q8_0 *)(x + (size_t)b * xs) + i;
            __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
            float dx = f16_f32(xb->d);
            for (int r = 0; r < RW; r++) {
                __m256 p = dot_u8s8(aw[r], _mm256_sign_epi8(xq, wq[r]));
                acc[r][b] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw[r] * dx), acc[r][b]);
            }
        }
    }
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++)
            out[r * RB + b] = hsum_ps(acc[r][b]);
}

/* --- Q4_1 weights against Q8_1 (blk_q8_1f) activations ---------------------------------------- */

/* Per block: acc += (d_w·d_x)·Σ q_w q_x (8 lanes), ms += m_w·s_x (scalar, fused). */
ALWAYS_INLINE void tile_q4_1(const char *w, size_t ws, const char *x, size_t xs, int64_t nb,
                             const int RW, const int RB, float *out)
{
    __m256 acc[2][4];
    float ms[2][4];
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++) {
            acc[r][b] = _mm256_setzero_ps();
            ms[r][b] = 0;
        }
    for (int64_t i = 0; i < nb; i++) {
        __m256i wq[2];
        __m256 dw[2];
        float mw[2];
        for (int r = 0; r < RW; r++) {
            const blk_q4_1 *wb = (const blk_q4_1 *)(w + r * ws) + i;
            prefetch_ahead(wb);
            wq[r] = unpack_nibbles(wb->qs);
            uint32_t dm;
            memcpy(&dm, &wb->d, sizeof dm); /* d and m are adjacent halves */
            __m128 dmf = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm));
            dw[r] = _mm256_broadcastss_ps(dmf);
            mw[r] = _mm_cvtss_f32(_mm_movehdup_ps(dmf));
        }
        for (int b = 0; b < RB; b++) {
            const blk_q8_1f *xb = (const blk_q8_1f *)(x + (size_t)b * xs) + i;
            __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
            __m256 dx = _mm256_set1_ps(xb->d);
            for (int r = 0; r < RW; r++) {
                __m256 p = dot_u8s8(wq[r], xq);
                acc[r][b] = _mm256_fmadd_ps(p, _mm256_mul_ps(dw[r], dx), acc[r][b]);
                ms[r][b] = fmaf(mw[r], xb->s, ms[r][b]);
            }
        }
    }
    for (int r = 0; r < RW; r++)
        for (int b = 0; b < RB; b++)
            out[r * RB + b] = hsum_ps(acc[r][b]) + ms[r][b];
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

TILE_SET(tiles_f32, tile_float(w, ws, x, xs, n, RW, RB, 0, out))
TILE_SET(tiles_f16, tile_float(w, ws, x, xs, n, RW, RB, 1, out))
TILE_SET(tiles_bf16, tile_float(w, ws, x, xs, n, RW, RB, 2, out))
TILE_SET(tiles_q4_0, tile_sq8(w, ws, x, xs, n / QK4_0, RW, RB, 1, out))
TILE_SET(tiles_q8_0, tile_sq8(w, ws, x, xs, n / QK8_0, RW, RB, 0, out))
TILE_SET(tiles_q4_1, tile_q4_1(w, ws, x, xs, n / QK4_1, RW, RB, out))

/* Activation bytes per chunk: a chunk of activation rows stays in L2 (512 KiB per core on the
 * CPUs we measure) while every weight row of the range streams through it once. */
#define ACT_CHUNK_BYTES (192 * 1024)

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
            int rw = bn <= 2 && r + 1 < r1 ? 2 : 1;
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
MM_FN(mm_q4_0, tiles_q4_0, (size_t)(cols / QK4_0) * sizeof(blk_q4_0))
MM_FN(mm_q8_0, tiles_q8_0, (size_t)(cols / QK8_0) * sizeof(blk_q8_0))
MM_FN(mm_q4_1, tiles_q4_1, (size_t)(cols / QK4_1) * sizeof(blk_q4_1))

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
    tab[GGML_Q4_0].dot = tiles_q4_0_dot;
    mm[GGML_Q4_0] = mm_q4_0;

    tab[GGML_Q4_1].dequant = dequant_q4_1;
    tab[GGML_Q4_1].dot = tiles_q4_1_dot;
    mm[GGML_Q4_1] = mm_q4_1;

    tab[GGML_Q8_0].dequant = dequant_q8_0;
    tab[GGML_Q8_0].dot = tiles_q8_0_dot;
    tab[GGML_Q8_0].quantize = quantize_q8_0;
    mm[GGML_Q8_0] = mm_q8_0;

    tab[GGML_Q8_1].dequant = dequant_q8_1;
    tab[GGML_Q8_1].quantize = quantize_q8_1;
}
