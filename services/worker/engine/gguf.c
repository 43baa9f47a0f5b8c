/* gguf.c — opens a GGUF file (v2/v3), validates all of it once, then serves borrowed views.
 *
 * Role: the only code that parses GGUF bytes. gguf_open() maps the file read-only; the parser
 * walks the header, the metadata and the tensor table with a bounds-checked cursor, so no read
 * ever leaves [base, base + size). Counts are checked against the bytes left before anything is
 * allocated for them, so a hostile header cannot make us allocate more than a small multiple of
 * the file size. Keys and tensor names are indexed in open-addressing hash tables (duplicates
 * are refused); string arrays get an index of their elements so gguf_array_str() is O(1).
 *
 * Threading: a gguf_file is immutable after open; concurrent readers need no locking.
 * Ownership: the gguf_file owns its index arrays and the mapping (when it mapped the file);
 * every pointer handed out borrows from the mapping or the index until gguf_close().
 * Not here: dequantisation (quant.c), interpreting model hyper-parameters (the model loader),
 * writing GGUF files (tools/mktiny.c has its own small writer). */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC         0x46554747u /* "GGUF" little-endian */
#define GGUF_MAX_KEY_LEN   65535u
#define GGUF_MAX_NAME      64u /* tensor names are shorter than this (ggml's limit) */
#define GGUF_DEFAULT_ALIGN 32u

typedef struct gguf_kv {
    gguf_str key;
    gguf_vtype type;
    const uint8_t *val; /* scalar value bytes, or the string's length field */
    /* arrays */
    gguf_vtype atype;
    uint64_t an;
    const uint8_t *adata;
    gguf_str *astrs; /* owned: element index of a string array */
} gguf_kv;

struct gguf_file {
    const uint8_t *base;
    size_t size;
    bool mapped;
    uint32_t version;
    uint64_t alignment;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t data_off;
    /* hash indexes: slot holds index + 1, 0 = empty; size is a power of two */
    uint64_t *key_slots;
    uint64_t key_mask;
    uint64_t *tensor_slots;
    uint64_t tensor_mask;
};

/* --- bounds-checked cursor ------------------------------------------------------------------ */

typedef struct cursor {
    const uint8_t *base;
    uint64_t size, off;
} cursor;

static uint64_t cur_left(const cursor *c)
{
    return c->size - c->off;
}

static bool cur_take(cursor *c, uint64_t n, const uint8_t **p)
{
    if (n > cur_left(c))
        return false;
    *p = c->base + c->off;
    c->off += n;
    return true;
}

static uint64_t rd_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* GGUF is little-endian, like every host we build for */
    return v;
}

static uint32_t rd_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static bool cur_u32(cursor *c, uint32_t *v)
{
    const uint8_t *p;
    if (!cur_take(c, 4, &p))
        return false;
    *v = rd_u32(p);
    return true;
}

static bool cur_u64(cursor *c, uint64_t *v)
{
    const uint8_t *p;
    if (!cur_take(c, 8, &p))
        return false;
    *v = rd_u64(p);
    return true;
}

/* Reads a GGUF string; *status tells "truncated" (1) from "length past the end" (2). */
static int cur_str(cursor *c, gguf_str *s)
{
    uint64_t n;
    const uint8_t *p;
    if (!cur_u64(c, &n))
        return 1;
    if (!cur_take(c, n, &p))
        return 2;
    s->ptr = (const char *)p;
    s->len = n;
    return 0;
}

/* --- type tables ------------------------------------------------------------------------------ */

/* Size of a fixed-size metadata value type, 0 for string/array/unknown. */
static size_t vtype_size(uint32_t t)
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

static bool vtype_known(uint32_t t)
{
    return t <= GGUF_F64;
}

/* Values per block and bytes per block of a tensor type; false when the type is not accepted. */
static bool ttype_block(uint32_t t, uint64_t *blk, uint64_t *bytes)
{
    switch (t) {
    case GGML_F32:
        *blk = 1;
        *bytes = 4;
        return true;
    case GGML_F16:
        *blk = 1;
        *bytes = 2;
        return true;
    case GGML_BF16:
        *blk = 1;
        *bytes = 2;
        return true;
    case GGML_Q4_0:
        *blk = 32;
        *bytes = 18;
        return true;
    case GGML_Q4_1:
        *blk = 32;
        *bytes = 20;
        return true;
    case GGML_Q5_0:
        *blk = 32;
        *bytes = 22;
        return true;
    case GGML_Q5_1:
        *blk = 32;
        *bytes = 24;
        return true;
    case GGML_Q8_0:
        *blk = 32;
        *bytes = 34;
        return true;
    case GGML_Q8_1:
        *blk = 32;
        *bytes = 36;
        return true;
    case GGML_Q2_K:
        *blk = 256;
        *bytes = 84;
        return true;
    case GGML_Q3_K:
        *blk = 256;
        *bytes = 110;
        return true;
    case GGML_Q4_K:
        *blk = 256;
        *bytes = 144;
        return true;
    case GGML_Q5_K:
        *blk = 256;
        *bytes = 176;
        return true;
    case GGML_Q6_K:
        *blk = 256;
        *bytes = 210;
        return true;
    case GGML_Q8_K:
        *blk = 256;
        *bytes = 292;
        return true;
    default:
        return false;
    }
}

const char *gguf_ttype_name(gguf_ttype t)
{
    switch (t) {
    case GGML_F32:
        return "f32";
    case GGML_F16:
        return "f16";
    case GGML_BF16:
        return "bf16";
    case GGML_Q4_0:
        return "q4_0";
    case GGML_Q4_1:
        return "q4_1";
    case GGML_Q5_0:
        return "q5_0";
    case GGML_Q5_1:
        return "q5_1";
    case GGML_Q8_0:
        return "q8_0";
    case GGML_Q8_1:
        return "q8_1";
    case GGML_Q2_K:
        return "q2_k";
    case GGML_Q3_K:
        return "q3_k";
    case GGML_Q4_K:
        return "q4_k";
    case GGML_Q5_K:
        return "q5_k";
    case GGML_Q6_K:
        return "q6_k";
    case GGML_Q8_K:
        return "q8_k";
    }
    return "unknown";
}

/* --- hashing ---------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *p, uint64_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool str_eq(gguf_str a, gguf_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static uint64_t *slots_new(uint64_t n, uint64_t *mask)
{
    uint64_t cap = 16;
    while (cap < n * 2)
        cap <<= 1;
    *mask = cap - 1;
    return calloc(cap, sizeof(uint64_t));
}

/* --- safe formatting of names from the file (may hold any bytes) ------------------------------ */

static const char *printable(gguf_str s, char *buf, size_t cap)
{
    size_t o = 0;
    uint64_t i = 0;
    for (; i < s.len && o + 8 < cap; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\'')
            buf[o++] = (char)ch;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
    }
    if (i < s.len) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* --- open ------------------------------------------------------------------------------------- */

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    if (f->kv) {
        for (uint64_t i = 0; i < f->n_kv; i++)
            free(f->kv[i].astrs);
    }
    free(f->kv);
    free(f->tensors);
    free(f->key_slots);
    free(f->tensor_slots);
    if (f->mapped && f->base)
        munmap((void *)f->base, f->size);
    free(f);
}

/* Parses one value of type `t` at the cursor into kv (top level) or just validates it (inside an
 * array). `depth` 0 = top-level value, 1 = array element. */
static pl_status parse_value(cursor *c, uint32_t t, gguf_kv *kv, int depth, const char *kname)
{
    if (!vtype_known(t))
        return PL_ERRF(PL_CORRUPT, "gguf: key '%s': unknown value type %u", kname, t);
    size_t sz = vtype_size(t);
    const uint8_t *p;
    if (sz) {
        if (!cur_take(c, sz, &p))
            return PL_ERRF(PL_CORRUPT, "gguf: key '%s': value truncated at offset %llu", kname,
                           (unsigned long long)c->off);
        if (t == GGUF_BOOL && *p > 1)
            return PL_ERRF(PL_CORRUPT, "gguf: key '%s': bool value %u is not 0 or 1", kname, *p);
        if (kv)
            kv->val = p;
        return PL_OK;
    }
    if (t == GGUF_STRING) {
        gguf_str s;
        uint64_t at = c->off;
        int e = cur_str(c, &s);
        if (e == 1)
            return PL_ERRF(PL_CORRUPT, "gguf: key '%s': string length truncated at offset %llu",
                           kname, (unsigned long long)at);
        if (e == 2)
            return PL_ERRF(PL_CORRUPT,
                           "gguf: key '%s': string of %llu bytes at offset %llu runs past the "
                           "end of the file (%llu)",
                           kname, (unsigned long long)rd_u64(c->base + at), (unsigned long long)at,
                           (unsigned long long)c->size);
        if (kv)
            kv->val = c->base + at;
        return PL_OK;
    }
    /* array */
    if (depth >= 2)
        return PL_ERRF(PL_CORRUPT, "gguf: key '%s': arrays nested more than one level deep", kname);
    uint32_t et;
    uint64_t n;
    if (!cur_u32(c, &et) || !cur_u64(c, &n))
        return PL_ERRF(PL_CORRUPT, "gguf: key '%s': array header truncated", kname);
    if (!vtype_known(et))
        return PL_ERRF(PL_CORRUPT, "gguf: key '%s': unknown array element type %u", kname, et);
    if (et == GGUF_ARRAY && depth >= 1)
        return PL_ERRF(PL_CORRUPT, "gguf: key '%s': arrays nested more than one level deep", kname);
    uint64_t esz = vtype_size(et);
    uint64_t min = esz ? esz : (et == GGUF_STRING ? 8 : 12);
    if (n > cur_left(c) / min)
        return PL_ERRF(PL_CORRUPT,
                       "gguf: key '%s': array of %llu elements cannot fit in the %llu bytes left",
                       kname, (unsigned long long)n, (unsigned long long)cur_left(c));
    if (kv) {
        kv->atype = (gguf_vtype)et;
        kv->an = n;
        kv->adata = c->base + c->off;
    }
    if (esz) {
        if (et == GGUF_BOOL) {
            for (uint64_t i = 0; i < n; i++)
                if (c->base[c->off + i] > 1)
                    return PL_ERRF(PL_CORRUPT, "gguf: key '%s': bool element %llu is not 0 or 1",
                                   kname, (unsigned long long)i);
        }
        c->off += n * esz;
        return PL_OK;
    }
    if (et == GGUF_STRING) {
        gguf_str *idx = NULL;
        if (kv && n > 0) {
            idx = malloc(n * sizeof(*idx));
            if (!idx)
                return PL_ERRF(PL_NOMEM, "gguf: key '%s': out of memory indexing %llu strings",
                               kname, (unsigned long long)n);
            kv->astrs = idx;
        }
        for (uint64_t i = 0; i < n; i++) {
            gguf_str s;
            uint64_t at = c->off;
            int e = cur_str(c, &s);
            if (e)
                return PL_ERRF(PL_CORRUPT,
                               "gguf: key '%s': string %llu of the array at offset %llu runs past "
                               "the end of the file",
                               kname, (unsigned long long)i, (unsigned long long)at);
            if (idx)
                idx[i] = s;
        }
        return PL_OK;
    }
    for (uint64_t i = 0; i < n; i++) { /* array of arrays: validate each inner array */
        pl_status st = parse_value(c, GGUF_ARRAY, NULL, depth + 1, kname);
        if (st != PL_OK)
            return st;
    }
    return PL_OK;
}

static pl_status parse(gguf_file *f)
{
    cursor c = {f->base, f->size, 0};
    uint32_t magic, version;
    char nb[160];
    if (!cur_u32(&c, &magic))
        return PL_ERRF(PL_CORRUPT, "gguf: file of %zu bytes is too short for a header", f->size);
    if (magic != GGUF_MAGIC)
        return PL_ERRF(PL_CORRUPT, "gguf: bad magic 0x%08x (not a GGUF file)", magic);
    if (!cur_u32(&c, &version))
        return PL_ERRF(PL_CORRUPT, "gguf: header truncated (version)");
    if (version != 2 && version != 3)
        return PL_ERRF(PL_UNSUPPORTED, "gguf: version %u is not supported (only 2 and 3)", version);
    f->version = version;
    if (!cur_u64(&c, &f->n_tensors) || !cur_u64(&c, &f->n_kv))
        return PL_ERRF(PL_CORRUPT, "gguf: header truncated (counts)");
    /* each key needs >= 13 bytes (length, type, one value byte); each tensor >= 32 */
    if (f->n_kv > cur_left(&c) / 13)
        return PL_ERRF(PL_CORRUPT, "gguf: %llu metadata keys cannot fit in a %zu-byte file",
                       (unsigned long long)f->n_kv, f->size);
    if (f->n_tensors > cur_left(&c) / 32)
        return PL_ERRF(PL_CORRUPT, "gguf: %llu tensors cannot fit in a %zu-byte file",
                       (unsigned long long)f->n_tensors, f->size);

    /* metadata */
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof(*f->kv));
    f->key_slots = slots_new(f->n_kv, &f->key_mask);
    if (!f->kv || !f->key_slots)
        return PL_ERRF(PL_NOMEM, "gguf: out of memory for %llu keys", (unsigned long long)f->n_kv);
    f->alignment = GGUF_DEFAULT_ALIGN;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        uint64_t at = c.off;
        int e = cur_str(&c, &kv->key);
        if (e)
            return PL_ERRF(PL_CORRUPT, "gguf: metadata key %llu at offset %llu: name %s",
                           (unsigned long long)i, (unsigned long long)at,
                           e == 1 ? "truncated" : "runs past the end of the file");
        if (kv->key.len == 0 || kv->key.len > GGUF_MAX_KEY_LEN ||
            memchr(kv->key.ptr, '\0', kv->key.len))
            return PL_ERRF(PL_CORRUPT, "gguf: metadata key %llu: invalid name '%s'",
                           (unsigned long long)i, printable(kv->key, nb, sizeof nb));
        const char *kname = printable(kv->key, nb, sizeof nb);
        uint32_t t;
        if (!cur_u32(&c, &t))
            return PL_ERRF(PL_CORRUPT, "gguf: key '%s': value type truncated", kname);
        if (!vtype_known(t))
            return PL_ERRF(PL_CORRUPT, "gguf: key '%s': unknown value type %u", kname, t);
        kv->type = (gguf_vtype)t;
        pl_status st = parse_value(&c, t, kv, 0, kname);
        if (st != PL_OK)
            return st;
        /* index, refusing duplicates */
        uint64_t h = hash_bytes(kv->key.ptr, kv->key.len) & f->key_mask;
        while (f->key_slots[h]) {
            if (str_eq(f->kv[f->key_slots[h] - 1].key, kv->key))
                return PL_ERRF(PL_CORRUPT, "gguf: duplicate metadata key '%s'", kname);
            h = (h + 1) & f->key_mask;
        }
        f->key_slots[h] = i + 1;
    }
    int64_t ai = gguf_find_key(f, "general.alignment");
    if (ai >= 0) {
        const gguf_kv *kv = &f->kv[ai];
        if (kv->type != GGUF_U32)
            return PL_ERRF(PL_CORRUPT, "gguf: key 'general.alignment' has type %d, not u32",
                           (int)kv->type);
        uint32_t a = rd_u32(kv->val);
        if (a == 0 || (a & (a - 1)) != 0)
            return PL_ERRF(PL_CORRUPT, "gguf: general.alignment %u is not a power of two", a);
        f->alignment = a;
    }

    /* tensor table */
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(*f->tensors));
    f->tensor_slots = slots_new(f->n_tensors, &f->tensor_mask);
    if (!f->tensors || !f->tensor_slots)
        return PL_ERRF(PL_NOMEM, "gguf: out of memory for %llu tensors",
                       (unsigned long long)f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t at = c.off;
        int e = cur_str(&c, &t->name);
        if (e)
            return PL_ERRF(PL_CORRUPT, "gguf: tensor %llu at offset %llu: name %s",
                           (unsigned long long)i, (unsigned long long)at,
                           e == 1 ? "truncated" : "runs past the end of the file");
        const char *tname = printable(t->name, nb, sizeof nb);
        if (t->name.len == 0 || t->name.len >= GGUF_MAX_NAME ||
            memchr(t->name.ptr, '\0', t->name.len))
            return PL_ERRF(PL_CORRUPT,
                           "gguf: tensor %llu: invalid name '%s' (1 to %u bytes, no NUL)",
                           (unsigned long long)i, tname, GGUF_MAX_NAME - 1);
        if (!cur_u32(&c, &t->n_dims))
            return PL_ERRF(PL_CORRUPT, "gguf: tensor '%s': truncated (n_dims)", tname);
        if (t->n_dims < 1 || t->n_dims > 4)
            return PL_ERRF(PL_CORRUPT, "gguf: tensor '%s': %u dimensions (1 to 4 allowed)", tname,
                           t->n_dims);
        uint64_t nel = 1;
        for (uint32_t d = 0; d < 4; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if (!cur_u64(&c, &t->ne[d]))
                return PL_ERRF(PL_CORRUPT, "gguf: tensor '%s': truncated (dims)", tname);
            if (t->ne[d] == 0)
                return PL_ERRF(PL_CORRUPT, "gguf: tensor '%s': dimension %u is zero", tname, d);
            if (t->ne[d] > (uint64_t)INT64_MAX / nel)
                return PL_ERRF(PL_CORRUPT, "gguf: tensor '%s': element count overflows", tname);
            nel *= t->ne[d];
        }
        uint32_t ty;
        if (!cur_u32(&c, &ty))
            return PL_ERRF(PL_CORRUPT, "gguf: tensor '%s': truncated (type)", tname);
        uint64_t blk, bb;
        if (!ttype_block(ty, &blk, &bb))
            return PL_ERRF(PL_UNSUPPORTED, "gguf: tensor '%s': unknown or unsupported type %u",
                           tname, ty);
        t->type = (gguf_ttype)ty;
        if (t->ne[0] % blk != 0)
            return PL_ERRF(PL_CORRUPT,
                           "gguf: tensor '%s': row length %llu is not a multiple of the %s block "
                           "size %llu",
                           tname, (unsigned long long)t->ne[0], gguf_ttype_name(t->type),
                           (unsigned long long)blk);
        uint64_t nblocks = nel / blk;
        if (nblocks > UINT64_MAX / bb)
            return PL_ERRF(PL_CORRUPT, "gguf: tensor '%s': byte size overflows", tname);
        t->nbytes = nblocks * bb;
        if (!cur_u64(&c, &t->offset))
            return PL_ERRF(PL_CORRUPT, "gguf: tensor '%s': truncated (offset)", tname);
        if (t->offset % f->alignment != 0)
            return PL_ERRF(PL_CORRUPT,
                           "gguf: tensor '%s': offset %llu is not aligned to %llu bytes", tname,
                           (unsigned long long)t->offset, (unsigned long long)f->alignment);
        uint64_t h = hash_bytes(t->name.ptr, t->name.len) & f->tensor_mask;
        while (f->tensor_slots[h]) {
            if (str_eq(f->tensors[f->tensor_slots[h] - 1].name, t->name))
                return PL_ERRF(PL_CORRUPT, "gguf: duplicate tensor name '%s'", tname);
            h = (h + 1) & f->tensor_mask;
        }
        f->tensor_slots[h] = i + 1;
    }

    /* data section: starts at the next multiple of the alignment */
    uint64_t end = c.off;
    uint64_t pad = (f->alignment - end % f->alignment) % f->alignment;
    f->data_off = end + pad; /* end <= size < 2^63 and pad < 2^32: no overflow */
    if (f->n_tensors > 0 && f->data_off > f->size)
        return PL_ERRF(PL_CORRUPT, "gguf: data section would start at %llu, past the end (%zu)",
                       (unsigned long long)f->data_off, f->size);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t room = f->size - f->data_off;
        if (t->offset > room || t->nbytes > room - t->offset)
            return PL_ERRF(PL_CORRUPT,
                           "gguf: tensor '%s': data ends at %llu, past the end of the file (%zu)",
                           printable(t->name, nb, sizeof nb),
                           (unsigned long long)(f->data_off + t->offset) + t->nbytes, f->size);
        t->data = f->base + f->data_off + t->offset;
    }
    return PL_OK;
}

static pl_status open_common(const void *buf, size_t len, bool mapped, gguf_file **out)
{
    gguf_file *f = calloc(1, sizeof(*f));
    if (!f) {
        if (mapped)
            munmap((void *)buf, len);
        return PL_ERRF(PL_NOMEM, "gguf: out of memory");
    }
    f->base = buf;
    f->size = len;
    f->mapped = mapped;
    pl_status st = parse(f);
    if (st != PL_OK) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return PL_OK;
}

pl_status gguf_open_buffer(const void *buf, size_t len, gguf_file **out)
{
    if (!out || (!buf && len))
        return PL_ERRF(PL_INVALID, "gguf_open_buffer: bad arguments");
    *out = NULL;
    if (len > (size_t)INT64_MAX)
        return PL_ERRF(PL_CORRUPT, "gguf: buffer too large");
    return open_common(buf ? buf : "", len, false, out);
}

pl_status gguf_open(const char *path, gguf_file **out)
{
    if (!path || !out)
        return PL_ERRF(PL_INVALID, "gguf_open: bad arguments");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return PL_ERRF(PL_IO, "gguf: cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return PL_ERRF(PL_IO, "gguf: cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return PL_ERRF(PL_IO, "gguf: %s is not a regular file", path);
    }
    if (sb.st_size < 24) {
        close(fd);
        return PL_ERRF(PL_CORRUPT, "gguf: %s: file of %lld bytes is too short for a header", path,
                       (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return PL_ERRF(PL_IO, "gguf: cannot map %s: %s", path, strerror(e));
    pl_status st = open_common(m, size, true, out);
    if (st != PL_OK) {
        /* prefix the path to the message the parser recorded */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", pl_err_last());
        const char *m2 = strstr(msg, "gguf: ");
        PL_ERRF(st, "%s: %s", path, m2 ? m2 : msg);
    }
    return st;
}

/* --- accessors -------------------------------------------------------------------------------- */

uint32_t gguf_version(const gguf_file *f)
{
    return f->version;
}

uint64_t gguf_alignment(const gguf_file *f)
{
    return f->alignment;
}

uint64_t gguf_file_size(const gguf_file *f)
{
    return f->size;
}

int64_t gguf_find_key(const gguf_file *f, const char *key)
{
    if (!f || !key)
        return -1;
    gguf_str k = {key, strlen(key)};
    uint64_t h = hash_bytes(k.ptr, k.len) & f->key_mask;
    while (f->key_slots[h]) {
        uint64_t i = f->key_slots[h] - 1;
        if (str_eq(f->kv[i].key, k))
            return (int64_t)i;
        h = (h + 1) & f->key_mask;
    }
    return -1;
}

uint64_t gguf_n_keys(const gguf_file *f)
{
    return f->n_kv;
}

gguf_str gguf_key_name(const gguf_file *f, uint64_t i)
{
    gguf_str none = {NULL, 0};
    return i < f->n_kv ? f->kv[i].key : none;
}

gguf_vtype gguf_key_type(const gguf_file *f, uint64_t i)
{
    return i < f->n_kv ? f->kv[i].type : (gguf_vtype)-1;
}

static const gguf_kv *lookup(const gguf_file *f, const char *key, pl_status *st)
{
    int64_t i = gguf_find_key(f, key);
    if (i < 0) {
        *st = PL_ERRF(PL_NOT_FOUND, "gguf: key '%s' not found", key ? key : "(null)");
        return NULL;
    }
    return &f->kv[i];
}

/* Integer value of a scalar kv: sign in *neg, magnitude in *mag; false when not an integer type. */
static bool kv_int(const gguf_kv *kv, bool *neg, uint64_t *mag)
{
    const uint8_t *p = kv->val;
    int64_t s;
    *neg = false;
    switch (kv->type) {
    case GGUF_U8:
        *mag = p[0];
        return true;
    case GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *mag = v;
        return true;
    }
    case GGUF_U32:
        *mag = rd_u32(p);
        return true;
    case GGUF_U64:
        *mag = rd_u64(p);
        return true;
    case GGUF_I8:
        s = (int8_t)p[0];
        break;
    case GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        s = v;
        break;
    }
    case GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        s = v;
        break;
    }
    case GGUF_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        s = v;
        break;
    }
    default:
        return false;
    }
    if (s < 0) {
        *neg = true;
        *mag = (uint64_t)(-(s + 1)) + 1;
    } else {
        *mag = (uint64_t)s;
    }
    return true;
}

pl_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *v)
{
    pl_status st = PL_NOT_FOUND;
    const gguf_kv *kv = lookup(f, key, &st);
    if (!kv)
        return st;
    bool neg;
    uint64_t mag;
    if (!kv_int(kv, &neg, &mag) || neg)
        return PL_ERRF(PL_INVALID, "gguf: key '%s' is not a non-negative integer", key);
    *v = mag;
    return PL_OK;
}

pl_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *v)
{
    pl_status st = PL_NOT_FOUND;
    const gguf_kv *kv = lookup(f, key, &st);
    if (!kv)
        return st;
    bool neg;
    uint64_t mag;
    if (!kv_int(kv, &neg, &mag))
        return PL_ERRF(PL_INVALID, "gguf: key '%s' is not an integer", key);
    if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
        return PL_ERRF(PL_INVALID, "gguf: key '%s': value does not fit in i64", key);
    *v = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return PL_OK;
}

pl_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *v)
{
    uint64_t x = 0;
    pl_status st = gguf_get_u64(f, key, &x);
    if (st != PL_OK)
        return st;
    if (x > UINT32_MAX)
        return PL_ERRF(PL_INVALID, "gguf: key '%s': value %llu does not fit in u32", key,
                       (unsigned long long)x);
    *v = (uint32_t)x;
    return PL_OK;
}

pl_status gguf_get_f64(const gguf_file *f, const char *key, double *v)
{
    pl_status st = PL_NOT_FOUND;
    const gguf_kv *kv = lookup(f, key, &st);
    if (!kv)
        return st;
    if (kv->type == GGUF_F32) {
        float x;
        memcpy(&x, kv->val, 4);
        *v = x;
        return PL_OK;
    }
    if (kv->type == GGUF_F64) {
        memcpy(v, kv->val, 8);
        return PL_OK;
    }
    bool neg;
    uint64_t mag;
    if (kv_int(kv, &neg, &mag)) {
        *v = neg ? -(double)mag : (double)mag;
        return PL_OK;
    }
    return PL_ERRF(PL_INVALID, "gguf: key '%s' is not a number", key);
}

pl_status gguf_get_bool(const gguf_file *f, const char *key, bool *v)
{
    pl_status st = PL_NOT_FOUND;
    const gguf_kv *kv = lookup(f, key, &st);
    if (!kv)
        return st;
    if (kv->type != GGUF_BOOL)
        return PL_ERRF(PL_INVALID, "gguf: key '%s' is not a bool", key);
    *v = kv->val[0] != 0;
    return PL_OK;
}

pl_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *v)
{
    pl_status st = PL_NOT_FOUND;
    const gguf_kv *kv = lookup(f, key, &st);
    if (!kv)
        return st;
    if (kv->type != GGUF_STRING)
        return PL_ERRF(PL_INVALID, "gguf: key '%s' is not a string", key);
    v->len = rd_u64(kv->val);
    v->ptr = (const char *)kv->val + 8;
    return PL_OK;
}

pl_status gguf_get_u32_or(const gguf_file *f, const char *key, uint32_t def, uint32_t *v)
{
    if (gguf_find_key(f, key) < 0) {
        *v = def;
        return PL_OK;
    }
    return gguf_get_u32(f, key, v);
}

pl_status gguf_get_f64_or(const gguf_file *f, const char *key, double def, double *v)
{
    if (gguf_find_key(f, key) < 0) {
        *v = def;
        return PL_OK;
    }
    return gguf_get_f64(f, key, v);
}

pl_status gguf_get_array(const gguf_file *f, const char *key, gguf_array *a)
{
    pl_status st = PL_NOT_FOUND;
    const gguf_kv *kv = lookup(f, key, &st);
    if (!kv)
        return st;
    if (kv->type != GGUF_ARRAY)
        return PL_ERRF(PL_INVALID, "gguf: key '%s' is not an array", key);
    a->type = kv->atype;
    a->n = kv->an;
    a->data = kv->adata;
    a->priv = kv->astrs;
    return PL_OK;
}

gguf_str gguf_array_str(const gguf_array *a, uint64_t i)
{
    gguf_str none = {NULL, 0};
    if (!a || a->type != GGUF_STRING || i >= a->n || !a->priv)
        return none;
    return ((const gguf_str *)a->priv)[i];
}

double gguf_array_f64(const gguf_array *a, uint64_t i)
{
    if (!a || i >= a->n)
        return 0;
    const uint8_t *p = a->data + i * vtype_size(a->type);
    switch (a->type) {
    case GGUF_F32: {
        float x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_F64: {
        double x;
        memcpy(&x, p, 8);
        return x;
    }
    case GGUF_U64:
        return (double)rd_u64(p);
    default:
        return (double)gguf_array_i64(a, i);
    }
}

/* Saturating, NaN-safe conversion (a plain cast of an out-of-range double is undefined). */
static int64_t f64_to_i64(double x)
{
    if (!(x == x))
        return 0;
    if (x >= 9.2e18)
        return INT64_MAX;
    if (x <= -9.2e18)
        return INT64_MIN;
    return (int64_t)x;
}

int64_t gguf_array_i64(const gguf_array *a, uint64_t i)
{
    if (!a || i >= a->n)
        return 0;
    const uint8_t *p = a->data + i * vtype_size(a->type);
    switch (a->type) {
    case GGUF_U8:
    case GGUF_BOOL:
        return p[0];
    case GGUF_I8:
        return (int8_t)p[0];
    case GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case GGUF_U32:
        return rd_u32(p);
    case GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case GGUF_U64:
        return (int64_t)rd_u64(p);
    case GGUF_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    case GGUF_F32: {
        float x;
        memcpy(&x, p, 4);
        return f64_to_i64(x);
    }
    case GGUF_F64: {
        double x;
        memcpy(&x, p, 8);
        return f64_to_i64(x);
    }
    default:
        return 0;
    }
}

uint64_t gguf_n_tensors(const gguf_file *f)
{
    return f->n_tensors;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    gguf_str k = {name, strlen(name)};
    uint64_t h = hash_bytes(k.ptr, k.len) & f->tensor_mask;
    while (f->tensor_slots[h]) {
        uint64_t i = f->tensor_slots[h] - 1;
        if (str_eq(f->tensors[i].name, k))
            return &f->tensors[i];
        h = (h + 1) & f->tensor_mask;
    }
    return NULL;
}

bool gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = c ? strlen(c) : 0;
    return s.len == n && (n == 0 || (s.ptr && memcmp(s.ptr, c, n) == 0));
}
