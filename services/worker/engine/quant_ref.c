/* quant_ref.c — the scalar definitions of every tensor element type: half/bfloat conversion,
 * dequantisation, quantisation and dot products (see quant.h for the block layouts).
 *
 * These are the references the fast paths are tested against, so they are written to be read:
 * one block at a time, no tricks. Dot products take each block's integer sum exactly and add the
 * scaled block sums (or, for float types, the products) in double, so a reference dot is within
 * one float rounding of the exact value implied by the dequantised operands.
 *
 * Quantisation follows the usual round-to-nearest definitions of these formats:
 *   Q8_0  d = max|x| / 127, q = round(x / d) (half away from zero), d stored as f16;
 *   Q8_1  as Q8_0 but d kept as float, plus s = d * sum(q) (our activation block blk_q8_1f);
 *   Q4_0  d = (the value of largest magnitude) / -8, q = min(15, trunc(x / d + 8.5));
 *   Q4_1  d = (max - min) / 15, m = min, q = min(15, trunc((x - m) / d + 0.5));
 *   Q5_0  as Q4_0 with 5 bits: d = (the value of largest magnitude) / -16,
 *         q = min(31, trunc(x / d + 16.5));
 *   Q5_1  as Q4_1 with 5 bits: d = (max - min) / 31, q = min(31, trunc((x - m) / d + 0.5));
 *   Q8_K  (activations) m = the value of largest magnitude, s = -127 / m, d = 1 / s,
 *         q = min(127, nearest_even(x·s)), plus the sums of each 16 quants;
 * where "/ d" is a multiplication by 1/d (0 when d = 0), as in the reference implementations
 * the model files were made with. The K-quant weight quantisers (Q4_K, Q5_K, Q6_K) are simple
 * round-to-nearest ones written for tests and tiny models, not llama.cpp's searched scales:
 * dequantising a real model file never depends on them. Non-finite inputs give unspecified (but
 * memory-safe) blocks.
 *
 * Thread-safety: pure functions. Nothing here allocates. */
#include <math.h>
#include <string.h>

#include "quant_impl.h"

/* --- half and bfloat -------------------------------------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float qt_f16_to_f32(qt_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;

    if (exp == 0x1f) /* inf, or NaN with its payload kept and the quiet bit set (as F16C does) */
        return bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0));
    if (exp != 0)
        return bits_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
    if (mant == 0)
        return bits_f32(sign);
    /* subnormal: mant * 2^-24; normalise so the leading 1 reaches bit 10 */
    int e = 127 - 14;
    while (!(mant & 0x400u)) {
        mant <<= 1;
        e--;
    }
    return bits_f32(sign | ((uint32_t)e << 23) | ((mant & 0x3ffu) << 13));
}

/* Rounds to nearest, ties to even; overflow gives infinity; NaN stays NaN (quiet bit set, top
 * payload bits kept), matching the F16C instruction so fast and reference paths agree. */
qt_f16 qt_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;

    if (a > 0x7f800000u)
        return (qt_f16)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* ≥ 65520: rounds past the largest half, 65504 */
        return (qt_f16)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: a half subnormal (or zero) */
        uint32_t e = a >> 23;
        if (e < 102) /* below 2^-25, which is the tie between 0 and the smallest subnormal */
            return sign;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value * 2^24 = m * 2^(e - 126) */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (qt_f16)(sign | q);
    }
    uint32_t q = ((a >> 23) - 112) << 10 | ((a >> 13) & 0x3ffu);
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1)))
        q++; /* a carry into the exponent is the right answer */
    return (qt_f16)(sign | q);
}

float qt_bf16_to_f32(qt_bf16 h)
{
    return bits_f32((uint32_t)h << 16);
}

/* Rounds to nearest, ties to even; subnormals are kept (not flushed); NaN stays NaN. */
qt_bf16 qt_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (qt_bf16)((u >> 16) | 0x40u);
    return (qt_bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* --- F32, F16, BF16 --------------------------------------------------------------------------- */

void qt_ref_dequant_f32(const void *row, float *out, int64_t n)
{
    memcpy(out, row, (size_t)n * sizeof(float));
}

void qt_ref_quantize_f32(const float *x, void *out, int64_t n)
{
    memcpy(out, x, (size_t)n * sizeof(float));
}

float qt_ref_dot_f32(const void *w, const void *x, int64_t n)
{
    const float *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return (float)s;
}

void qt_ref_dequant_f16(const void *row, float *out, int64_t n)
{
    const qt_f16 *h = row;
    for (int64_t i = 0; i < n; i++)
        out[i] = qt_f16_to_f32(h[i]);
}

void qt_ref_quantize_f16(const float *x, void *out, int64_t n)
{
    qt_f16 *h = out;
    for (int64_t i = 0; i < n; i++)
        h[i] = qt_f32_to_f16(x[i]);
}

float qt_ref_dot_f16(const void *w, const void *x, int64_t n)
{
    const qt_f16 *a = w;
    const float *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)qt_f16_to_f32(a[i]) * b[i];
    return (float)s;
}

void qt_ref_dequant_bf16(const void *row, float *out, int64_t n)
{
    const qt_bf16 *h = row;
    for (int64_t i = 0; i < n; i++)
        out[i] = qt_bf16_to_f32(h[i]);
}

void qt_ref_quantize_bf16(const float *x, void *out, int64_t n)
{
    qt_bf16 *h = out;
    for (int64_t i = 0; i < n; i++)
        h[i] = qt_f32_to_bf16(x[i]);
}

float qt_ref_dot_bf16(const void *w, const void *x, int64_t n)
{
    const qt_bf16 *a = w;
    const float *b = x;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)qt_bf16_to_f32(a[i]) * b[i];
    return (float)s;
}

/* --- Q4_0 ------------------------------------------------------------------------------------- */

void qt_ref_dequant_q4_0(const void *row, float *out, int64_t n)
{
    const blk_q4_0 *b = row;
    for (int64_t i = 0; i < n / QK4_0; i++, out += QK4_0) {
        float d = qt_f16_to_f32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            out[j] = (float)((b[i].qs[j] & 0x0f) - 8) * d;
            out[j + QK4_0 / 2] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void qt_ref_quantize_q4_0(const float *x, void *out, int64_t n)
{
    blk_q4_0 *b = out;
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        float amax = 0, vmax = 0;
        for (int j = 0; j < QK4_0; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                vmax = x[j];
            }
        }
        float d = vmax / -8;
        float id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = qt_f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int lo = (int)(x[j] * id + 8.5f), hi = (int)(x[j + QK4_0 / 2] * id + 8.5f);
            lo = lo > 15 ? 15 : lo;
            hi = hi > 15 ? 15 : hi;
            b[i].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

/* Weights Q4_0 against Q8_0 activations. */
float qt_ref_dot_q4_0(const void *w, const void *x, int64_t n)
{
    const blk_q4_0 *a = w;
    const blk_q8_0 *b = x;
    double s = 0;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += ((a[i].qs[j] & 0x0f) - 8) * b[i].qs[j];
            isum += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + QK4_0 / 2];
        }
        s += (double)qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d) * isum;
    }
    return (float)s;
}

/* --- Q4_1 ------------------------------------------------------------------------------------- */

void qt_ref_dequant_q4_1(const void *row, float *out, int64_t n)
{
    const blk_q4_1 *b = row;
    for (int64_t i = 0; i < n / QK4_1; i++, out += QK4_1) {
        float d = qt_f16_to_f32(b[i].d), m = qt_f16_to_f32(b[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            out[j] = (float)(b[i].qs[j] & 0x0f) * d + m;
            out[j + QK4_1 / 2] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

void qt_ref_quantize_q4_1(const float *x, void *out, int64_t n)
{
    blk_q4_1 *b = out;
    for (int64_t i = 0; i < n / QK4_1; i++, x += QK4_1) {
        float lo = x[0], hi = x[0];
        for (int j = 1; j < QK4_1; j++) {
            lo = x[j] < lo ? x[j] : lo;
            hi = x[j] > hi ? x[j] : hi;
        }
        float d = (hi - lo) / 15;
        float id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = qt_f32_to_f16(d);
        b[i].m = qt_f32_to_f16(lo);
        for (int j = 0; j < QK4_1 / 2; j++) {
            int q0 = (int)((x[j] - lo) * id + 0.5f),
                q1 = (int)((x[j + QK4_1 / 2] - lo) * id + 0.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

/* Weights Q4_1 against Q8_1 activations: per block d_w*d_x*sum(q_w*q_x) + m_w*s_x. */
float qt_ref_dot_q4_1(const void *w, const void *x, int64_t n)
{
    const blk_q4_1 *a = w;
    const blk_q8_1f *b = x;
    double s = 0;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            isum += (a[i].qs[j] & 0x0f) * b[i].qs[j];
            isum += (a[i].qs[j] >> 4) * b[i].qs[j + QK4_1 / 2];
        }
        s += (double)qt_f16_to_f32(a[i].d) * b[i].d * isum;
        s += (double)qt_f16_to_f32(a[i].m) * b[i].s;
    }
    return (float)s;
}

/* --- Q8_0 and the Q8_1 activation block ------------------------------------------------------- */

void qt_ref_dequant_q8_0(const void *row, float *out, int64_t n)
{
    const blk_q8_0 *b = row;
    for (int64_t i = 0; i < n / QK8_0; i++, out += QK8_0) {
        float d = qt_f16_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j++)
            out[j] = (float)b[i].qs[j] * d;
    }
}

/* Shared by Q8_0 and Q8_1: the scale d = max|x| / 127 and the rounded quants; returns sum(q). */
static int quantize_block_8bit(const float *x, float *d_out, int8_t *qs)
{
    float amax = 0;
    for (int j = 0; j < QK8_0; j++)
        amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    float d = amax / 127;
    float id = d != 0 ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < QK8_0; j++) {
        qs[j] = (int8_t)roundf(x[j] * id);
        sum += qs[j];
    }
    *d_out = d;
    return sum;
}

void qt_ref_quantize_q8_0(const float *x, void *out, int64_t n)
{
    blk_q8_0 *b = out;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float d;
        quantize_block_8bit(x, &d, b[i].qs);
        b[i].d = qt_f32_to_f16(d);
    }
}

float qt_ref_dot_q8_0(const void *w, const void *x, int64_t n)
{
    const blk_q8_0 *a = w, *b = x;
    double s = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++)
            isum += a[i].qs[j] * b[i].qs[j];
        s += (double)qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d) * isum;
    }
    return (float)s;
}

void qt_ref_dequant_q8_1(const void *row, float *out, int64_t n)
{
    const blk_q8_1f *b = row;
    for (int64_t i = 0; i < n / QK8_0; i++, out += QK8_0)
        for (int j = 0; j < QK8_0; j++)
            out[j] = (float)b[i].qs[j] * b[i].d;
}

void qt_ref_quantize_q8_1(const float *x, void *out, int64_t n)
{
    blk_q8_1f *b = out;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        int sum = quantize_block_8bit(x, &b[i].d, b[i].qs);
        b[i].s = b[i].d * (float)sum;
    }
}

/* --- Q5_0 and Q5_1 ---------------------------------------------------------------------------- */

/* The 5th bit of element j of a Q5 block (qh read as a little-endian uint32), as 0 or 16. */
static int q5_high(const uint8_t qh[4], int j)
{
    return ((qh[j / 8] >> (j % 8)) & 1) << 4;
}

void qt_ref_dequant_q5_0(const void *row, float *out, int64_t n)
{
    const blk_q5_0 *b = row;
    for (int64_t i = 0; i < n / QK5_0; i++, out += QK5_0) {
        float d = qt_f16_to_f32(b[i].d);
        for (int j = 0; j < QK5_0 / 2; j++) {
            out[j] = (float)(((b[i].qs[j] & 0x0f) | q5_high(b[i].qh, j)) - 16) * d;
            out[j + QK5_0 / 2] =
                (float)(((b[i].qs[j] >> 4) | q5_high(b[i].qh, j + QK5_0 / 2)) - 16) * d;
        }
    }
}

/* Stores 32 quants 0..31 as Q5 nibbles (elements j and j + 16 share byte j) and high bits. */
static void q5_pack(const int q[32], uint8_t qh[4], uint8_t qs[16])
{
    memset(qh, 0, 4);
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4);
    for (int j = 0; j < 32; j++)
        qh[j / 8] |= (uint8_t)(((q[j] >> 4) & 1) << (j % 8));
}

void qt_ref_quantize_q5_0(const float *x, void *out, int64_t n)
{
    blk_q5_0 *b = out;
    for (int64_t i = 0; i < n / QK5_0; i++, x += QK5_0) {
        float amax = 0, vmax = 0;
        for (int j = 0; j < QK5_0; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                vmax = x[j];
            }
        }
        float d = vmax / -16;
        float id = d != 0 ? 1.0f / d : 0.0f;
        int q[QK5_0];
        for (int j = 0; j < QK5_0; j++) {
            int v = (int)(x[j] * id + 16.5f);
            q[j] = v > 31 ? 31 : v < 0 ? 0 : v;
        }
        b[i].d = qt_f32_to_f16(d);
        q5_pack(q, b[i].qh, b[i].qs);
    }
}

/* Weights Q5_0 against Q8_0 activations. */
float qt_ref_dot_q5_0(const void *w, const void *x, int64_t n)
{
    const blk_q5_0 *a = w;
    const blk_q8_0 *b = x;
    double s = 0;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            isum += (((a[i].qs[j] & 0x0f) | q5_high(a[i].qh, j)) - 16) * b[i].qs[j];
            isum += (((a[i].qs[j] >> 4) | q5_high(a[i].qh, j + 16)) - 16) * b[i].qs[j + 16];
        }
        s += (double)qt_f16_to_f32(a[i].d) * qt_f16_to_f32(b[i].d) * isum;
    }
    return (float)s;
}

void qt_ref_dequant_q5_1(const void *row, float *out, int64_t n)
{
    const blk_q5_1 *b = row;
    for (int64_t i = 0; i < n / QK5_1; i++, out += QK5_1) {
        float d = qt_f16_to_f32(b[i].d), m = qt_f16_to_f32(b[i].m);
        for (int j = 0; j < QK5_1 / 2; j++) {
            out[j] = (float)((b[i].qs[j] & 0x0f) | q5_high(b[i].qh, j)) * d + m;
            out[j + QK5_1 / 2] =
                (float)((b[i].qs[j] >> 4) | q5_high(b[i].qh, j + QK5_1 / 2)) * d + m;
        }
    }
}

void qt_ref_quantize_q5_1(const float *x, void *out, int64_t n)
{
    blk_q5_1 *b = out;
    for (int64_t i = 0; i < n / QK5_1; i++, x += QK5_1) {
        float lo = x[0], hi = x[0];
        for (int j = 1; j < QK5_1; j++) {
            lo = x[j] < lo ? x[j] : lo;
            hi = x[j] > hi ? x[j] : hi;
        }
        float d = (hi - lo) / 31;
        float id = d != 0 ? 1.0f / d : 0.0f;
        int q[QK5_1];
        for (int j = 0; j < QK5_1; j++) {
            int v = (int)((x[j] - lo) * id + 0.5f);
            q[j] = v > 31 ? 31 : v < 0 ? 0 : v;
        }
        b[i].d = qt_f32_to_f16(d);
        b[i].m = qt_f32_to_f16(lo);
        q5_pack(q, b[i].qh, b[i].qs);
    }
}

/* Weights Q5_1 against Q8_1 activations: per block d_w*d_x*sum(q_w*q_x) + m_w*s_x. */
float qt_ref_dot_q5_1(const void *w, const void *x, int64_t n)
{
    const blk_q5_1 *a = w;
    const blk_q8_1f *b = x;
    double s = 0;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        int isum = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            isum += ((a[i].qs[j] & 0x0f) | q5_high(a[i].qh, j)) * b[i].qs[j];
            isum += ((a[i].qs[j] >> 4) | q5_high(a[i].qh, j + 16)) * b[i].qs[j + 16];
        }
        s += (double)qt_f16_to_f32(a[i].d) * b[i].d * isum;
        s += (double)qt_f16_to_f32(a[i].m) * b[i].s;
    }
    return (float)s;
}

/* --- K-quants: shared pieces ------------------------------------------------------------------ */

/* Round to nearest, ties to even (the current rounding mode, which is never changed here), for
 * |v| below 2^22; callers clamp first. */
static int nearest_int(float v)
{
    return (int)nearbyintf(v);
}

/* Sub-block j's 6-bit scale and min. Bytes 0–3 hold the scales of sub-blocks 0–3 in their low 6
 * bits, bytes 4–7 the mins; sub-blocks 4–7 take their low 4 bits from bytes 8–11 (scale in the
 * low nibble, min in the high one) and their top 2 bits from the top bits of bytes 0–3 (scale)
 * and 4–7 (min). */
void qt_k_scale_min(const uint8_t scales[K_SCALE_SIZE], int j, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (uint8_t)((scales[j + 4] & 0x0f) | (scales[j - 4] >> 6) << 4);
        *m = (uint8_t)((scales[j + 4] >> 4) | (scales[j] >> 6) << 4);
    }
}

/* The inverse of qt_k_scale_min for all 8 sub-blocks (values 0..63). */
static void k_pack_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t scales[K_SCALE_SIZE])
{
    for (int j = 0; j < 4; j++) {
        scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        scales[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        scales[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | (m[j + 4] & 0x0f) << 4);
    }
}

/* Quantises one 256-value super-block as Q4_K (nmax 15) or Q5_K (nmax 31): each sub-block of 32
 * gets scale (max − min′)/nmax and min −min′ with min′ = min(0, smallest value); both are then
 * quantised to 6 bits against d = (largest scale)/63 and dmin = (largest min)/63, and each value
 * to q = nearest((x + dmin·m) / (d·sc)) in 0..nmax. Fills q[256], sc[8], m[8], *d, *dmin. */
static void k_quantize_affine(const float *x, int nmax, int q[QK_K], uint8_t sc[8], uint8_t m[8],
                              qt_f16 *d16, qt_f16 *dmin16)
{
    float scale[8], mn[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float lo = 0, hi = x[32 * j];
        for (int l = 0; l < 32; l++) {
            lo = x[32 * j + l] < lo ? x[32 * j + l] : lo;
            hi = x[32 * j + l] > hi ? x[32 * j + l] : hi;
        }
        scale[j] = (hi - lo) / (float)nmax;
        mn[j] = -lo;
        max_scale = scale[j] > max_scale ? scale[j] : max_scale;
        max_min = mn[j] > max_min ? mn[j] : max_min;
    }
    *d16 = qt_f32_to_f16(max_scale / 63);
    *dmin16 = qt_f32_to_f16(max_min / 63);
    float d = qt_f16_to_f32(*d16), dmin = qt_f16_to_f32(*dmin16);
    float id = d > 0 ? 1.0f / d : 0.0f, idmin = dmin > 0 ? 1.0f / dmin : 0.0f;
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)nearest_int(fminf(fmaxf(scale[j] * id, 0.0f), 63.0f));
        m[j] = (uint8_t)nearest_int(fminf(fmaxf(mn[j] * idmin, 0.0f), 63.0f));
        float dj = d * sc[j], mj = dmin * m[j];
        float idj = dj > 0 ? 1.0f / dj : 0.0f;
        for (int l = 0; l < 32; l++) {
            float v = (x[32 * j + l] + mj) * idj;
            q[32 * j + l] = nearest_int(fminf(fmaxf(v, 0.0f), (float)nmax));
        }
    }
}

/* --- Q4_K --------------------------------------------------------------------------------------
 * Element 64c + l (c = 0..3, l < 32) is the low nibble of qs[32c + l] and element 64c + 32 + l
 * its high nibble; sub-block j covers elements 32j..32j+31; value = d·sc_j·q − dmin·m_j. */

void qt_ref_dequant_q4_k(const void *row, float *out, int64_t n)
{
    const blk_q4_k *b = row;
    for (int64_t i = 0; i < n / QK_K; i++, out += QK_K) {
        float d = qt_f16_to_f32(b[i].d), dmin = qt_f16_to_f32(b[i].dmin);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            qt_k_scale_min(b[i].scales, j, &sc, &m);
            float dj = d * sc, mj = dmin * m;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++)
                out[32 * j + l] = dj * (float)(j % 2 ? q[l] >> 4 : q[l] & 0x0f) - mj;
        }
    }
}

void qt_ref_quantize_q4_k(const float *x, void *out, int64_t n)
{
    blk_q4_k *b = out;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        int q[QK_K];
        uint8_t sc[8], m[8];
        k_quantize_affine(x, 15, q, sc, m, &b[i].d, &b[i].dmin);
        k_pack_scales(sc, m, b[i].scales);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + 32 + l] << 4);
    }
}

/* Σ over the super-block: d_x·(d·Σ_j sc_j·Σ q_w q_x − dmin·Σ_j m_j·Σ q_x), integer sums exact. */
float qt_ref_dot_q4_k(const void *w, const void *x, int64_t n)
{
    const blk_q4_k *a = w;
    const blk_q8_k *b = x;
    double s = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            qt_k_scale_min(a[i].scales, j, &sc, &m);
            const uint8_t *q = a[i].qs + 32 * (j / 2);
            int dot = 0, xs = 0;
            for (int l = 0; l < 32; l++) {
                dot += (j % 2 ? q[l] >> 4 : q[l] & 0x0f) * b[i].qs[32 * j + l];
                xs += b[i].qs[32 * j + l];
            }
            isum += sc * dot;
            msum += m * xs;
        }
        s += (double)b[i].d *
             ((double)qt_f16_to_f32(a[i].d) * isum - (double)qt_f16_to_f32(a[i].dmin) * msum);
    }
    return (float)s;
}

/* --- Q5_K --------------------------------------------------------------------------------------
 * As Q4_K, plus a 5th bit: bit j of qh[l] belongs to element 32j + l (sub-block j). */

void qt_ref_dequant_q5_k(const void *row, float *out, int64_t n)
{
    const blk_q5_k *b = row;
    for (int64_t i = 0; i < n / QK_K; i++, out += QK_K) {
        float d = qt_f16_to_f32(b[i].d), dmin = qt_f16_to_f32(b[i].dmin);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            qt_k_scale_min(b[i].scales, j, &sc, &m);
            float dj = d * sc, mj = dmin * m;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++) {
                int v = (j % 2 ? q[l] >> 4 : q[l] & 0x0f) | ((b[i].qh[l] >> j) & 1) << 4;
                out[32 * j + l] = dj * (float)v - mj;
            }
        }
    }
}

void qt_ref_quantize_q5_k(const float *x, void *out, int64_t n)
{
    blk_q5_k *b = out;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        int q[QK_K];
        uint8_t sc[8], m[8];
        k_quantize_affine(x, 31, q, sc, m, &b[i].d, &b[i].dmin);
        k_pack_scales(sc, m, b[i].scales);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] =
                    (uint8_t)((q[64 * c + l] & 0x0f) | (q[64 * c + 32 + l] & 0x0f) << 4);
        for (int j = 0; j < 8; j++)
            for (int l = 0; l < 32; l++)
                b[i].qh[l] |= (uint8_t)((q[32 * j + l] >> 4) << j);
    }
}

float qt_ref_dot_q5_k(const void *w, const void *x, int64_t n)
{
    const blk_q5_k *a = w;
    const blk_q8_k *b = x;
    double s = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            qt_k_scale_min(a[i].scales, j, &sc, &m);
            const uint8_t *q = a[i].qs + 32 * (j / 2);
            int dot = 0, xs = 0;
            for (int l = 0; l < 32; l++) {
                int v = (j % 2 ? q[l] >> 4 : q[l] & 0x0f) | ((a[i].qh[l] >> j) & 1) << 4;
                dot += v * b[i].qs[32 * j + l];
                xs += b[i].qs[32 * j + l];
            }
            isum += sc * dot;
            msum += m * xs;
        }
        s += (double)b[i].d *
             ((double)qt_f16_to_f32(a[i].d) * isum - (double)qt_f16_to_f32(a[i].dmin) * msum);
    }
    return (float)s;
}

/* --- Q6_K --------------------------------------------------------------------------------------
 * Two halves of 128 values; in half h (ql += 64h, qh += 32h), for l < 32:
 *   element 128h + l      = low nibble of ql[l]       | bits 0–1 of qh[l] << 4
 *   element 128h + 32 + l = low nibble of ql[32 + l]  | bits 2–3 of qh[l] << 4
 *   element 128h + 64 + l = high nibble of ql[l]      | bits 4–5 of qh[l] << 4
 *   element 128h + 96 + l = high nibble of ql[32 + l] | bits 6–7 of qh[l] << 4
 * and value = d·scales[e / 16]·(q − 32). */

static int q6_quant(const blk_q6_k *b, int e)
{
    int h = e / 128, r = e % 128, part = r / 32, l = r % 32;
    uint8_t lo = b->ql[64 * h + 32 * (part % 2) + l];
    int low4 = part < 2 ? lo & 0x0f : lo >> 4;
    int high2 = (b->qh[32 * h + l] >> (2 * part)) & 3;
    return (low4 | high2 << 4) - 32;
}

void qt_ref_dequant_q6_k(const void *row, float *out, int64_t n)
{
    const blk_q6_k *b = row;
    for (int64_t i = 0; i < n / QK_K; i++, out += QK_K) {
        float d = qt_f16_to_f32(b[i].d);
        for (int e = 0; e < QK_K; e++)
            out[e] = d * (float)b[i].scales[e / 16] * (float)q6_quant(&b[i], e);
    }
}

/* Each sub-block of 16 gets scale v/−32 for its value v of largest magnitude; the 16 scales are
 * quantised to int8 against d = −m/127 for the scale m of largest magnitude (so scales of either
 * sign fit in −127..127); values to
 * q = nearest(x / (d·sc)) in −32..31. */
void qt_ref_quantize_q6_k(const float *x, void *out, int64_t n)
{
    blk_q6_k *b = out;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float scale[16], smax = 0, samax = 0;
        for (int j = 0; j < 16; j++) {
            float amax = 0, vmax = 0;
            for (int l = 0; l < 16; l++) {
                if (fabsf(x[16 * j + l]) > amax) {
                    amax = fabsf(x[16 * j + l]);
                    vmax = x[16 * j + l];
                }
            }
            scale[j] = vmax / -32;
            if (fabsf(scale[j]) > samax) {
                samax = fabsf(scale[j]);
                smax = scale[j];
            }
        }
        float iscale = smax != 0 ? -127.0f / smax : 0.0f;
        b[i].d = qt_f32_to_f16(iscale != 0 ? 1.0f / iscale : 0.0f);
        float d = qt_f16_to_f32(b[i].d);
        int q[QK_K];
        for (int j = 0; j < 16; j++) {
            int sc = nearest_int(fminf(fmaxf(iscale * scale[j], -128.0f), 127.0f));
            b[i].scales[j] = (int8_t)sc;
            float dj = d * (float)sc;
            float idj = dj != 0 ? 1.0f / dj : 0.0f;
            for (int l = 0; l < 16; l++)
                q[16 * j + l] = nearest_int(fminf(fmaxf(x[16 * j + l] * idj, -32.0f), 31.0f)) + 32;
        }
        for (int h = 0; h < 2; h++) {
            const int *qq = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                b[i].ql[64 * h + l] = (uint8_t)((qq[l] & 0x0f) | (qq[64 + l] & 0x0f) << 4);
                b[i].ql[64 * h + 32 + l] =
                    (uint8_t)((qq[32 + l] & 0x0f) | (qq[96 + l] & 0x0f) << 4);
                b[i].qh[32 * h + l] = (uint8_t)((qq[l] >> 4) | (qq[32 + l] >> 4) << 2 |
                                                (qq[64 + l] >> 4) << 4 | (qq[96 + l] >> 4) << 6);
            }
        }
    }
}

/* Σ over the super-block: d_x·d·Σ_j sc_j·Σ (q_w − 32)·q_x over each sub-block of 16. */
float qt_ref_dot_q6_k(const void *w, const void *x, int64_t n)
{
    const blk_q6_k *a = w;
    const blk_q8_k *b = x;
    double s = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int dot = 0;
            for (int l = 0; l < 16; l++)
                dot += q6_quant(&a[i], 16 * j + l) * b[i].qs[16 * j + l];
            isum += a[i].scales[j] * dot;
        }
        s += (double)b[i].d * qt_f16_to_f32(a[i].d) * isum;
    }
    return (float)s;
}

/* --- Q8_K (activations of K-quant dots) ------------------------------------------------------- */

void qt_ref_dequant_q8_k(const void *row, float *out, int64_t n)
{
    const blk_q8_k *b = row;
    for (int64_t i = 0; i < n / QK_K; i++, out += QK_K)
        for (int j = 0; j < QK_K; j++)
            out[j] = b[i].d * (float)b[i].qs[j];
}

void qt_ref_quantize_q8_k(const float *x, void *out, int64_t n)
{
    blk_q8_k *b = out;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float amax = 0, vmax = 0;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                vmax = x[j];
            }
        }
        memset(&b[i], 0, sizeof b[i]);
        if (amax == 0)
            continue;
        float iscale = -127.0f / vmax;
        for (int j = 0; j < QK_K; j++) {
            int v = nearest_int(fminf(fmaxf(iscale * x[j], -127.0f), 127.0f));
            b[i].qs[j] = (int8_t)v;
            b[i].bsums[j / 16] = (int16_t)(b[i].bsums[j / 16] + v);
        }
        b[i].d = 1.0f / iscale;
    }
}
