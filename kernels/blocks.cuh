/* blocks.cuh — per-block arithmetic of the GGUF tensor types, written once for the host and the
 * device: dequantise one block, dot one weight block with a quantised activation block,
 * quantise activations (Q8_0, our Q8_1 with a
 * float scale, Q8_K), and the half / bfloat conversions.
 *
 * This header is plain C11 when compiled by a C compiler (the unit tests compile it on every
 * build and compare each function with the CPU references in services/worker/engine/quant_ref.c)
 * and CUDA C++ when compiled by nvcc (the kernels/ .cu files call the same functions from device
 * code). Everything is `static inline` (plus `__host__ __device__` under nvcc); nothing allocates,
 * no state, no library calls beyond fabsf/roundf/sqrtf.
 *
 * Bit-exactness. The conversions, dequantisers and quantisers are bit-identical to the CPU
 * references (same operations in the same order; CUDA's float division and roundf are IEEE
 * correct unless --use_fast_math, which the Makefile never passes). Dot products return the
 * block's result as float: integer sums are exact, the scales are applied in float.
 *
 * Layouts (bytes): Q4_0 18, Q4_1 20, Q5_0 22, Q5_1 24, Q8_0 34 (32 values); Q4_K 144, Q5_K 176,
 * Q6_K 210, Q8_K 292 (256 values); activation Q8_1 (float d, float s = d*sum q, 32 int8) 40.
 * Multi-byte fields are read byte-wise where a block may be only 2-byte aligned. */
#ifndef PARLEY_KERNELS_BLOCKS_CUH
#define PARLEY_KERNELS_BLOCKS_CUH

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define KB_FN static __host__ __device__ __forceinline__
#else
#define KB_FN static inline
#endif

#define KB_QK    32  /* values per block of the 32-value types */
#define KB_QK_K  256 /* values per K-quant super-block */
#define KB_QK_KS 12  /* packed 6-bit scale bytes of Q4_K / Q5_K */

typedef struct {
    uint16_t d;
    uint8_t qs[16];
} kb_q4_0;
typedef struct {
    uint16_t d, m;
    uint8_t qs[16];
} kb_q4_1;
typedef struct {
    uint16_t d;
    uint8_t qh[4]; /* bit j = high bit of value j */
    uint8_t qs[16];
} kb_q5_0;
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} kb_q5_1;
typedef struct {
    uint16_t d;
    int8_t qs[32];
} kb_q8_0;
typedef struct { /* activation block for Q4_1 / Q5_1 dots (quant.h's blk_q8_1f) */
    float d, s;
    int8_t qs[32];
} kb_q8_1;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[KB_QK_KS]; /* 8 pairs (scale, min) of 6 bits */
    uint8_t qs[128];
} kb_q4_k;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[KB_QK_KS];
    uint8_t qh[32];
    uint8_t qs[128];
} kb_q5_k;
typedef struct {
    uint8_t ql[128]; /* low 4 bits */
    uint8_t qh[64];  /* high 2 bits */
    int8_t scales[16];
    uint16_t d;
} kb_q6_k;
typedef struct { /* activation block for K-quant dots */
    float d;     /* x ≈ d * q */
    int8_t qs[256];
    int16_t bsums[16]; /* sums of groups of 16 quants */
} kb_q8_k;

/* --- half and bfloat ------------------------------------------------------------------------- */

KB_FN uint32_t kb_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

KB_FN float kb_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

KB_FN float kb_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f)
        return kb_bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0));
    if (exp != 0)
        return kb_bits_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
    if (mant == 0)
        return kb_bits_f32(sign);
    int e = 127 - 14; /* subnormal: normalise so the leading 1 reaches bit 10 */
    while (!(mant & 0x400u)) {
        mant <<= 1;
        e--;
    }
    return kb_bits_f32(sign | ((uint32_t)e << 23) | ((mant & 0x3ffu) << 13));
}

/* Round to nearest even; overflow → inf; NaN stays NaN (quiet). */
KB_FN uint16_t kb_f32_to_f16(float f)
{
    uint32_t u = kb_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        uint32_t e = a >> 23;
        if (e < 102)
            return sign;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t q = ((a >> 23) - 112) << 10 | ((a >> 13) & 0x3ffu);
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1)))
        q++;
    return (uint16_t)(sign | q);
}

KB_FN float kb_bf16_to_f32(uint16_t h)
{
    return kb_bits_f32((uint32_t)h << 16);
}

/* Reads the little-endian 32 high bits of a Q5 block byte-wise (the block is 2-byte aligned). */
KB_FN uint32_t kb_qh32(const uint8_t *qh)
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

/* Scale and min j (0..7) of a Q4_K / Q5_K super-block: 6 bits each, packed into 12 bytes. */
KB_FN void kb_scale_min_k4(int j, const uint8_t *q, int *sc, int *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* --- the integer quants of one block (value i of the block, as the file stores it) ------------ */

KB_FN int kb_q4_0_q(const kb_q4_0 *b, int i) /* -8..7 */
{
    return i < 16 ? (b->qs[i] & 0xf) - 8 : (b->qs[i - 16] >> 4) - 8;
}
KB_FN int kb_q4_1_q(const kb_q4_1 *b, int i) /* 0..15 */
{
    return i < 16 ? b->qs[i] & 0xf : b->qs[i - 16] >> 4;
}
KB_FN int kb_q5_0_q(const kb_q5_0 *b, int i) /* -16..15 */
{
    int hi = (kb_qh32(b->qh) >> i) & 1;
    int lo = i < 16 ? b->qs[i] & 0xf : b->qs[i - 16] >> 4;
    return (lo | hi << 4) - 16;
}
KB_FN int kb_q5_1_q(const kb_q5_1 *b, int i) /* 0..31 */
{
    int hi = (kb_qh32(b->qh) >> i) & 1;
    int lo = i < 16 ? b->qs[i] & 0xf : b->qs[i - 16] >> 4;
    return lo | hi << 4;
}
/* Q4_K value i: 4-bit quant; sub-block i / 32 picks the scale and min. */
KB_FN int kb_q4_k_q(const kb_q4_k *b, int i)
{
    int g = i / 64, l = i % 64;
    uint8_t byte = b->qs[g * 32 + (l % 32)];
    return l < 32 ? byte & 0xf : byte >> 4;
}
KB_FN int kb_q5_k_q(const kb_q5_k *b, int i)
{
    int g = i / 64, l = i % 64;
    uint8_t byte = b->qs[g * 32 + (l % 32)];
    int lo = l < 32 ? byte & 0xf : byte >> 4;
    int bit = 2 * g + (l >= 32);
    return lo | ((b->qh[l % 32] >> bit) & 1) << 4;
}
/* Q6_K value i: -32..31; its scale is scales[i / 16]. */
KB_FN int kb_q6_k_q(const kb_q6_k *b, int i)
{
    int n = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
    const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
    int lo = quarter & 1 ? ql[l + 32] : ql[l];
    lo = quarter < 2 ? lo & 0xf : lo >> 4;
    int hi = (qh[l] >> (2 * quarter)) & 3;
    return (lo | hi << 4) - 32;
}

/* --- dequantise one block into out[block size] ------------------------------------------------ */

KB_FN void kb_dequant_q4_0(const kb_q4_0 *b, float *out)
{
    float d = kb_f16_to_f32(b->d);
    for (int i = 0; i < KB_QK; i++)
        out[i] = (float)kb_q4_0_q(b, i) * d;
}
KB_FN void kb_dequant_q4_1(const kb_q4_1 *b, float *out)
{
    float d = kb_f16_to_f32(b->d), m = kb_f16_to_f32(b->m);
    for (int i = 0; i < KB_QK; i++)
        out[i] = (float)kb_q4_1_q(b, i) * d + m;
}
KB_FN void kb_dequant_q5_0(const kb_q5_0 *b, float *out)
{
    float d = kb_f16_to_f32(b->d);
    for (int i = 0; i < KB_QK; i++)
        out[i] = (float)kb_q5_0_q(b, i) * d;
}
KB_FN void kb_dequant_q5_1(const kb_q5_1 *b, float *out)
{
    float d = kb_f16_to_f32(b->d), m = kb_f16_to_f32(b->m);
    for (int i = 0; i < KB_QK; i++)
        out[i] = (float)kb_q5_1_q(b, i) * d + m;
}
KB_FN void kb_dequant_q8_0(const kb_q8_0 *b, float *out)
{
    float d = kb_f16_to_f32(b->d);
    for (int i = 0; i < KB_QK; i++)
        out[i] = (float)b->qs[i] * d;
}
KB_FN void kb_dequant_q4_k(const kb_q4_k *b, float *out)
{
    float d = kb_f16_to_f32(b->d), dmin = kb_f16_to_f32(b->dmin);
    for (int s = 0; s < 8; s++) {
        int sc, mn;
        kb_scale_min_k4(s, b->scales, &sc, &mn);
        float ds = d * (float)sc, ms = dmin * (float)mn;
        for (int l = 0; l < 32; l++)
            out[s * 32 + l] = ds * (float)kb_q4_k_q(b, s * 32 + l) - ms;
    }
}
KB_FN void kb_dequant_q5_k(const kb_q5_k *b, float *out)
{
    float d = kb_f16_to_f32(b->d), dmin = kb_f16_to_f32(b->dmin);
    for (int s = 0; s < 8; s++) {
        int sc, mn;
        kb_scale_min_k4(s, b->scales, &sc, &mn);
        float ds = d * (float)sc, ms = dmin * (float)mn;
        for (int l = 0; l < 32; l++)
            out[s * 32 + l] = ds * (float)kb_q5_k_q(b, s * 32 + l) - ms;
    }
}
KB_FN void kb_dequant_q6_k(const kb_q6_k *b, float *out)
{
    float d = kb_f16_to_f32(b->d);
    for (int i = 0; i < KB_QK_K; i++)
        out[i] = d * (float)b->scales[i / 16] * (float)kb_q6_k_q(b, i);
}

/* --- weight block · quantised activation block (the CPU's vec_dot pairs) ---------------------- */
/* Integer sums are exact; scales are applied in float as d_w * d_x * isum (+ m_w * s_x). */

KB_FN float kb_dot_q4_0_q8_0(const kb_q4_0 *b, const kb_q8_0 *x)
{
    int isum = 0;
    for (int i = 0; i < KB_QK; i++)
        isum += kb_q4_0_q(b, i) * x->qs[i];
    return kb_f16_to_f32(b->d) * kb_f16_to_f32(x->d) * (float)isum;
}
KB_FN float kb_dot_q5_0_q8_0(const kb_q5_0 *b, const kb_q8_0 *x)
{
    int isum = 0;
    for (int i = 0; i < KB_QK; i++)
        isum += kb_q5_0_q(b, i) * x->qs[i];
    return kb_f16_to_f32(b->d) * kb_f16_to_f32(x->d) * (float)isum;
}
KB_FN float kb_dot_q8_0_q8_0(const kb_q8_0 *b, const kb_q8_0 *x)
{
    int isum = 0;
    for (int i = 0; i < KB_QK; i++)
        isum += b->qs[i] * x->qs[i];
    return kb_f16_to_f32(b->d) * kb_f16_to_f32(x->d) * (float)isum;
}
KB_FN float kb_dot_q4_1_q8_1(const kb_q4_1 *b, const kb_q8_1 *x)
{
    int isum = 0;
    for (int i = 0; i < KB_QK; i++)
        isum += kb_q4_1_q(b, i) * x->qs[i];
    return kb_f16_to_f32(b->d) * x->d * (float)isum + kb_f16_to_f32(b->m) * x->s;
}
KB_FN float kb_dot_q5_1_q8_1(const kb_q5_1 *b, const kb_q8_1 *x)
{
    int isum = 0;
    for (int i = 0; i < KB_QK; i++)
        isum += kb_q5_1_q(b, i) * x->qs[i];
    return kb_f16_to_f32(b->d) * x->d * (float)isum + kb_f16_to_f32(b->m) * x->s;
}
KB_FN float kb_dot_q4_k_q8_k(const kb_q4_k *b, const kb_q8_k *x)
{
    int sum_q = 0, sum_m = 0;
    for (int g = 0; g < 8; g++) {
        int sc, mn, isum = 0;
        kb_scale_min_k4(g, b->scales, &sc, &mn);
        for (int l = 0; l < 32; l++)
            isum += kb_q4_k_q(b, g * 32 + l) * x->qs[g * 32 + l];
        sum_q += sc * isum;
        sum_m += mn * (x->bsums[2 * g] + x->bsums[2 * g + 1]);
    }
    return kb_f16_to_f32(b->d) * x->d * (float)sum_q - kb_f16_to_f32(b->dmin) * x->d * (float)sum_m;
}
KB_FN float kb_dot_q5_k_q8_k(const kb_q5_k *b, const kb_q8_k *x)
{
    int sum_q = 0, sum_m = 0;
    for (int g = 0; g < 8; g++) {
        int sc, mn, isum = 0;
        kb_scale_min_k4(g, b->scales, &sc, &mn);
        for (int l = 0; l < 32; l++)
            isum += kb_q5_k_q(b, g * 32 + l) * x->qs[g * 32 + l];
        sum_q += sc * isum;
        sum_m += mn * (x->bsums[2 * g] + x->bsums[2 * g + 1]);
    }
    return kb_f16_to_f32(b->d) * x->d * (float)sum_q - kb_f16_to_f32(b->dmin) * x->d * (float)sum_m;
}
KB_FN float kb_dot_q6_k_q8_k(const kb_q6_k *b, const kb_q8_k *x)
{
    int sum = 0;
    for (int g = 0; g < 16; g++) {
        int isum = 0;
        for (int l = 0; l < 16; l++)
            isum += kb_q6_k_q(b, g * 16 + l) * x->qs[g * 16 + l];
        sum += b->scales[g] * isum;
    }
    return kb_f16_to_f32(b->d) * x->d * (float)sum;
}

/* --- activation quantisation (one block of x) --------------------------------------------------
 */

/* Q8_0 / Q8_1: d = max|x| / 127, q = round(x * (1/d)); returns sum(q). */
KB_FN int kb_quant_8bit(const float *x, float *d_out, int8_t *qs)
{
    float amax = 0;
    for (int j = 0; j < KB_QK; j++)
        amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    float d = amax / 127;
    float id = d != 0 ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < KB_QK; j++) {
        qs[j] = (int8_t)roundf(x[j] * id);
        sum += qs[j];
    }
    *d_out = d;
    return sum;
}
KB_FN void kb_quantize_q8_0(const float *x, kb_q8_0 *b)
{
    float d;
    kb_quant_8bit(x, &d, b->qs);
    b->d = kb_f32_to_f16(d);
}
KB_FN void kb_quantize_q8_1(const float *x, kb_q8_1 *b)
{
    int sum = kb_quant_8bit(x, &b->d, b->qs);
    b->s = b->d * (float)sum;
}
/* Q8_K: the value of largest magnitude maps to -127 (iscale = -127 / max), q = iscale * x
 * clamped to [-127, 127] and rounded to nearest even, d = 1 / iscale (0 for an all-zero block),
 * plus the sums of each group of 16 quants. */
KB_FN void kb_quantize_q8_k(const float *x, kb_q8_k *b)
{
    float amax = 0, vmax = 0;
    for (int j = 0; j < KB_QK_K; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            vmax = x[j];
        }
    b->d = 0;
    for (int g = 0; g < 16; g++)
        b->bsums[g] = 0;
    if (amax == 0) {
        for (int j = 0; j < KB_QK_K; j++)
            b->qs[j] = 0;
        return;
    }
    float iscale = -127.0f / vmax;
    for (int j = 0; j < KB_QK_K; j++) {
        int v = (int)rintf(fminf(fmaxf(iscale * x[j], -127.0f), 127.0f));
        b->qs[j] = (int8_t)v;
        b->bsums[j / 16] = (int16_t)(b->bsums[j / 16] + v);
    }
    b->d = 1.0f / iscale;
}

/* --- small element-wise helpers shared by the kernels ----------------------------------------- */

KB_FN float kb_silu(float x)
{
    return x / (1.0f + expf(-x));
}
/* tanh approximation of GELU (what GGUF gemma models were trained with). */
KB_FN float kb_gelu(float x)
{
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

#endif
