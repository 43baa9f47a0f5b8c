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
 * where "/ d" is a multiplication by 1/d (0 when d = 0), as in the reference implementations
 * the model files were made with. Non-finite inputs give unspecified (but memory-safe) blocks.
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
