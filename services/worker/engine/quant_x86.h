/* quant_x86.h — small AVX2 helpers shared by quant_avx2.c and quant_vnni.c (included by them
 * only; every function is static inline). */
#ifndef PARLEY_QUANT_X86_H
#define PARLEY_QUANT_X86_H

#include <immintrin.h>
#include <string.h>

#include "quant_impl.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

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

/* The quantised types prefetch 2 KiB ahead instead: measured single-threaded on a 64 MiB matrix
 * (bench/quant_bench.c), 512 bytes left the Gemma types' streaming matvecs at 0.5–0.8×
 * llama.cpp's and 2 KiB brought them to 0.95–1.1×. For Q4_1 and Q8_0 through the four-row tiles
 * (single-sequence decode), 2 KiB streamed a 49,152 × 576 matrix 1.4–1.7× faster than 512 bytes
 * did, and SmolLM2's tg128 rose from about 170 to 185–199 tokens/s on 2 threads. */
#define FAR_PREFETCH_BYTES 2048

ALWAYS_INLINE void prefetch_far(const void *p)
{
    _mm_prefetch((const char *)p + FAR_PREFETCH_BYTES, _MM_HINT_T0);
}

/* 16 bytes of packed nibbles → 32 bytes 0..15: low nibbles are elements 0–15, high 16–31. */
ALWAYS_INLINE __m256i unpack_nibbles(const uint8_t *qs)
{
    __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    raw = _mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 0, 4, 4)); /* high lane: high nibbles */
    return _mm256_and_si256(raw, _mm256_set1_epi8(0x0f));
}

/* Q5 high bits: 32 bytes, byte j = 16 when bit j of qh (a little-endian uint32) is set, else 0.
 * Each byte picks its qh byte (j / 8) with a shuffle, then tests its own bit (j % 8). */
ALWAYS_INLINE __m256i q5_high_bits(const uint8_t qh[4])
{
    uint32_t u;
    memcpy(&u, qh, sizeof u);
    __m256i v =
        _mm256_shuffle_epi8(_mm256_set1_epi32((int)u),
                            _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                             2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

#endif
