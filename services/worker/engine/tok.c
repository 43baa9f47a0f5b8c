/* tok.c — tokenizer built from a GGUF file's tokenizer metadata: byte-level BPE ("gpt2" model)
 * and SentencePiece-style ("llama" model: scores, byte fallback, "▁" for spaces; the segmentation
 * itself is tok_spm.c).
 *
 * Encoding: the input is cut at special tokens (longest first, as llama.cpp does), each plain
 * piece is decoded to code points (an invalid byte becomes U+FFFD), split into words by the
 * pre-tokenizer (tok_pre.c), and each word's UTF-8 bytes go through BPE: one symbol per byte
 * (its GPT-2 byte-to-unicode character), then the adjacent pair with the lowest merge rank is
 * merged until none is left. Pairs wait in a binary heap ordered by (rank, position); an entry
 * is checked against the symbols when popped, so merging a word of n bytes is O(n log n).
 * Merges are a hash map from the pair of token ids to (rank, merged id).
 *
 * Decoding: every token's bytes are computed once at create time (byte-level decoded for
 * normal tokens, raw text for user-defined ones, raw text of control tokens only on request).
 * tok_stream holds back an incomplete UTF-8 sequence until it completes.
 *
 * Thread-safety: a tok is immutable after tok_create; tok_encode allocates its scratch per call.
 * SentencePiece ("llama"): plain fragments get a leading space when add_space_prefix is set and
 * they start the text or follow a special token (as llama.cpp does), their spaces become U+2581,
 * and tok_spm.c segments them by score. A normal token decodes with U+2581 turned back into a
 * space, a byte token <0xNN> to its byte (so a character split over byte tokens is reassembled
 * by tok_stream), a user-defined token to its text.
 *
 * Ownership: the tok copies all it needs from the gguf_file. Not here: Unicode normalisation
 * (neither model family used here has any). */
#include "tok.h"

#include <stdlib.h>
#include <string.h>

#include "tok_pre.h"
#include "tok_spm.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

typedef struct merge_slot {
    uint64_t key; /* (left << 32) | right, + 1 so that 0 marks an empty slot */
    int32_t rank;
    int32_t result;
} merge_slot;

struct tok {
    int32_t n_vocab;
    char *text;          /* raw token texts, each NUL-terminated */
    uint32_t *text_off;  /* n_vocab + 1 */
    char *piece;         /* decoded bytes of each token (see tok_piece) */
    uint32_t *piece_off; /* n_vocab + 1 */
    uint8_t *type;       /* token_type per token */
    uint8_t *eog;        /* bitmap */
    uint32_t *id_slots;  /* text -> id + 1; power-of-two size */
    uint32_t id_mask;
    merge_slot *merges;
    uint64_t merge_mask;
    int32_t byte_id[256]; /* token of each byte's GPT-2 character, -1 when absent */
    uint16_t byte_cp[256];
    int16_t cp_byte[512]; /* inverse of byte_cp for code points < 512, -1 elsewhere */
    int32_t *specials;    /* control/user-defined/unknown tokens, longest text first */
    int32_t n_specials;
    int32_t bos, eos;
    bool add_bos;
    bool ignore_merges; /* a word that is itself a token is not merged (Llama 3) */
    tok_pre_kind pre;
    /* SentencePiece-style ("llama" model, tok_spm.c) */
    bool spm;
    bool add_space_prefix; /* a space before the first plain fragment and after specials */
    float *scores;         /* [n_vocab] */
    int32_t spm_byte[256]; /* <0xNN> tokens, -1 when absent */
    int32_t unk;
};

/* --- small helpers -------------------------------------------------------------------------- */

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static int utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | ((cp >> 18) & 0x07));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Lenient decoder, as llama.cpp's: a lead byte and the right number of continuation bytes make
 * a code point (overlong forms and surrogates are not refused); anything else is one byte that
 * becomes U+FFFD. Returns the bytes consumed (>= 1). */
static size_t utf8_get(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t k = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (k == 0 || (c & 0x40) == 0 || k > n) {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
    }
    uint32_t v = c & (0x7F >> k);
    for (size_t i = 1; i < k; i++)
        v = (v << 6) | (s[i] & 0x3F);
    *cp = v;
    return k;
}

static int32_t lookup_id(const tok *t, const char *s, size_t n)
{
    uint32_t h = (uint32_t)fnv(s, n) & t->id_mask;
    while (t->id_slots[h]) {
        int32_t id = (int32_t)t->id_slots[h] - 1;
        uint32_t len = t->text_off[id + 1] - t->text_off[id] - 1;
        if (len == n && memcmp(t->text + t->text_off[id], s, n) == 0)
            return id;
        h = (h + 1) & t->id_mask;
    }
    return -1;
}

static const merge_slot *lookup_merge(const tok *t, int32_t l, int32_t r)
{
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    uint64_t h = mix64(key) & t->merge_mask;
    while (t->merges[h].key) {
        if (t->merges[h].key == key)
            return &t->merges[h];
        h = (h + 1) & t->merge_mask;
    }
    return NULL;
}

static uint32_t tlen(const tok *t, int32_t id)
{
    return t->text_off[id + 1] - t->text_off[id] - 1;
}

/* --- create ------------------------------------------------------------------------------------
 */

void tok_destroy(tok *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->text_off);
    free(t->piece);
    free(t->piece_off);
    free(t->type);
    free(t->eog);
    free(t->id_slots);
    free(t->merges);
    free(t->specials);
    free(t->scores);
    free(t);
}

static void init_byte_map(tok *t)
{
    /* GPT-2: printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards */
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        t->byte_cp[b] = (uint16_t)(keep ? b : 256 + n++);
    }
    for (int i = 0; i < 512; i++)
        t->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++)
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
}

static bool is_eog_name(const char *s)
{
    static const char *const names[] = {"<|im_end|>",    "<|eot_id|>",    "<|end_of_text|>",
                                        "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
                                        "<|end|>"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0)
            return true;
    return false;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const tok *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = tlen(t, x), ly = tlen(t, y);
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Reads an optional token id key; -1 when absent. */
static pl_status opt_id(const gguf_file *f, const char *key, int32_t n_vocab, int32_t *id)
{
    *id = -1;
    if (gguf_find_key(f, key) < 0)
        return PL_OK;
    int64_t v;
    pl_status st = gguf_get_i64(f, key, &v);
    if (st != PL_OK)
        return st;
    if (v == -1 || v == UINT32_MAX) /* some writers store "none" this way */
        return PL_OK;
    if (v < 0 || v >= n_vocab)
        return PL_ERRF(PL_CORRUPT, "tok: %s = %lld is outside the vocabulary (%d tokens)", key,
                       (long long)v, n_vocab);
    *id = (int32_t)v;
    return PL_OK;
}

static pl_status load_pre(tok *t, const gguf_file *f)
{
    gguf_str pre = {"default", 7};
    if (gguf_find_key(f, "tokenizer.ggml.pre") >= 0) {
        pl_status st = gguf_get_str(f, "tokenizer.ggml.pre", &pre);
        if (st != PL_OK)
            return st;
    }
    static const struct {
        const char *name;
        tok_pre_kind kind;
        bool ignore_merges;
    } known[] = {
        {"default", TOK_PRE_GPT2, false},     {"gpt2", TOK_PRE_GPT2, false},
        {"mpt", TOK_PRE_GPT2, false},         {"olmo", TOK_PRE_GPT2, false},
        {"jais", TOK_PRE_GPT2, false},        {"smollm", TOK_PRE_SMOLLM, false},
        {"starcoder", TOK_PRE_SMOLLM, false}, {"refact", TOK_PRE_SMOLLM, false},
        {"command-r", TOK_PRE_SMOLLM, false}, {"codeshell", TOK_PRE_SMOLLM, false},
        {"exaone", TOK_PRE_SMOLLM, false},    {"llama-bpe", TOK_PRE_LLAMA3, true},
        {"llama3", TOK_PRE_LLAMA3, true},     {"llama-v3", TOK_PRE_LLAMA3, true},
        {"qwen2", TOK_PRE_QWEN2, false},      {"stablelm2", TOK_PRE_QWEN2, false},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (gguf_str_eq(pre, known[i].name)) {
            t->pre = known[i].kind;
            t->ignore_merges = known[i].ignore_merges;
            return PL_OK;
        }
    }
    return PL_ERRF(PL_UNSUPPORTED, "tok: pre-tokenizer '%.*s' is not supported",
                   (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
}

static pl_status load_vocab(tok *t, const gguf_file *f)
{
    gguf_array toks;
    pl_status st = gguf_get_array(f, "tokenizer.ggml.tokens", &toks);
    if (st != PL_OK)
        return st == PL_NOT_FOUND ? PL_ERRF(PL_CORRUPT, "tok: no tokenizer.ggml.tokens") : st;
    if (toks.type != GGUF_STRING || toks.n == 0 || toks.n > INT32_MAX / 2)
        return PL_ERRF(PL_CORRUPT, "tok: tokenizer.ggml.tokens is not a non-empty string array");
    t->n_vocab = (int32_t)toks.n;
    size_t total = 0;
    for (uint64_t i = 0; i < toks.n; i++)
        total += gguf_array_str(&toks, i).len + 1;
    if (total > UINT32_MAX / 2)
        return PL_ERRF(PL_CORRUPT, "tok: vocabulary text too large");
    t->text = malloc(total);
    t->text_off = malloc((toks.n + 1) * sizeof(uint32_t));
    t->type = malloc(toks.n);
    t->eog = calloc(toks.n / 8 + 1, 1);
    uint32_t cap = 16;
    while (cap < toks.n * 2)
        cap <<= 1;
    t->id_slots = calloc(cap, sizeof(uint32_t));
    t->id_mask = cap - 1;
    if (!t->text || !t->text_off || !t->type || !t->eog || !t->id_slots)
        return PL_ERRF(PL_NOMEM, "tok: out of memory for %d tokens", t->n_vocab);
    uint32_t o = 0;
    for (uint64_t i = 0; i < toks.n; i++) {
        gguf_str s = gguf_array_str(&toks, i);
        t->text_off[i] = o;
        if (s.len)
            memcpy(t->text + o, s.ptr, s.len);
        t->text[o + s.len] = '\0';
        o += (uint32_t)s.len + 1;
    }
    t->text_off[toks.n] = o;
    for (int32_t id = 0; id < t->n_vocab; id++) { /* a later duplicate wins, as in llama.cpp */
        const char *s = t->text + t->text_off[id];
        uint32_t n = tlen(t, id);
        uint32_t h = (uint32_t)fnv(s, n) & t->id_mask;
        while (t->id_slots[h]) {
            int32_t other = (int32_t)t->id_slots[h] - 1;
            if (tlen(t, other) == n && memcmp(t->text + t->text_off[other], s, n) == 0)
                break;
            h = (h + 1) & t->id_mask;
        }
        t->id_slots[h] = (uint32_t)id + 1;
    }

    memset(t->type, TT_NORMAL, toks.n);
    gguf_array tt;
    st = gguf_get_array(f, "tokenizer.ggml.token_type", &tt);
    if (st == PL_OK) {
        if (tt.n != toks.n || tt.type == GGUF_STRING || tt.type == GGUF_ARRAY)
            return PL_ERRF(PL_CORRUPT,
                           "tok: tokenizer.ggml.token_type has %llu entries for %d tokens",
                           (unsigned long long)tt.n, t->n_vocab);
        for (uint64_t i = 0; i < tt.n; i++) {
            int64_t v = gguf_array_i64(&tt, i);
            if (v < 0 || v > TT_BYTE)
                return PL_ERRF(PL_CORRUPT, "tok: token %llu has unknown token type %lld",
                               (unsigned long long)i, (long long)v);
            t->type[i] = (uint8_t)v;
        }
    } else if (st != PL_NOT_FOUND) {
        return st;
    }
    return PL_OK;
}

static pl_status load_merges(tok *t, const gguf_file *f)
{
    gguf_array m;
    pl_status st = gguf_get_array(f, "tokenizer.ggml.merges", &m);
    if (st != PL_OK)
        return st == PL_NOT_FOUND ? PL_ERRF(PL_CORRUPT, "tok: gpt2 model without merges") : st;
    if (m.type != GGUF_STRING || m.n > INT32_MAX / 4)
        return PL_ERRF(PL_CORRUPT, "tok: tokenizer.ggml.merges is not a string array");
    uint64_t cap = 16;
    while (cap < m.n * 2)
        cap <<= 1;
    t->merges = calloc(cap, sizeof(merge_slot));
    t->merge_mask = cap - 1;
    char *buf = malloc(1024);
    size_t bufcap = 1024;
    if (!t->merges || !buf) {
        free(buf);
        return PL_ERRF(PL_NOMEM, "tok: out of memory for %llu merges", (unsigned long long)m.n);
    }
    for (uint64_t i = 0; i < m.n; i++) {
        gguf_str s = gguf_array_str(&m, i);
        /* "left right": split at the first space after the first byte */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp) {
            free(buf);
            return PL_ERRF(PL_CORRUPT, "tok: merge %llu has no space", (unsigned long long)i);
        }
        size_t ln = (size_t)(sp - s.ptr), rn = s.len - ln - 1;
        int32_t l = lookup_id(t, s.ptr, ln), r = lookup_id(t, sp + 1, rn);
        if (ln + rn > bufcap) {
            char *nb = realloc(buf, ln + rn);
            if (!nb) {
                free(buf);
                return PL_ERRF(PL_NOMEM, "tok: out of memory");
            }
            buf = nb;
            bufcap = ln + rn;
        }
        memcpy(buf, s.ptr, ln);
        memcpy(buf + ln, sp + 1, rn);
        int32_t res = lookup_id(t, buf, ln + rn);
        if (l < 0 || r < 0 || res < 0) {
            free(buf);
            return PL_ERRF(PL_CORRUPT, "tok: merge %llu '%.*s' names a token not in the vocabulary",
                           (unsigned long long)i, (int)(s.len > 80 ? 80 : s.len), s.ptr);
        }
        uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
        uint64_t h = mix64(key) & t->merge_mask;
        while (t->merges[h].key && t->merges[h].key != key)
            h = (h + 1) & t->merge_mask;
        if (!t->merges[h].key) { /* the first (lowest rank) of duplicate merges counts */
            t->merges[h].key = key;
            t->merges[h].rank = (int32_t)i;
            t->merges[h].result = res;
        }
    }
    free(buf);
    return PL_OK;
}

/* The byte of a "<0xNN>" token text, or -1. */
static int byte_token_value(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* SentencePiece scores (all 0 when the file has none), byte tokens, add_space_prefix. */
static pl_status load_spm(tok *t, const gguf_file *f)
{
    t->scores = calloc((size_t)t->n_vocab, sizeof *t->scores);
    if (!t->scores)
        return PL_ERRF(PL_NOMEM, "tok: out of memory");
    gguf_array sc;
    pl_status st = gguf_get_array(f, "tokenizer.ggml.scores", &sc);
    if (st == PL_OK) {
        if (sc.n != (uint64_t)t->n_vocab || (sc.type != GGUF_F32 && sc.type != GGUF_F64))
            return PL_ERRF(PL_CORRUPT,
                           "tok: tokenizer.ggml.scores has %llu entries for %d tokens "
                           "(or is not float32)",
                           (unsigned long long)sc.n, t->n_vocab);
        for (int32_t i = 0; i < t->n_vocab; i++) {
            double d = gguf_array_f64(&sc, (uint64_t)i);
            t->scores[i] = d == d ? (float)d : -1e30f; /* NaN would break the ordering */
        }
    } else if (st != PL_NOT_FOUND) {
        return st;
    }
    for (int b = 0; b < 256; b++)
        t->spm_byte[b] = -1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->type[id] != TT_BYTE)
            continue;
        int b = byte_token_value(t->text + t->text_off[id], tlen(t, id));
        if (b < 0)
            return PL_ERRF(PL_CORRUPT, "tok: byte token %d has text '%.16s' (want <0xNN>)", id,
                           t->text + t->text_off[id]);
        t->spm_byte[b] = id;
    }
    for (int b = 0; b < 256; b++) { /* no <0xNN>: the byte's own one-character token */
        char c = (char)b;
        if (t->spm_byte[b] < 0 && b < 0x80)
            t->spm_byte[b] = lookup_id(t, &c, 1);
    }
    t->add_space_prefix = true; /* llama.cpp's default for this model */
    if (gguf_find_key(f, "tokenizer.ggml.add_space_prefix") >= 0 &&
        (st = gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix)) != PL_OK)
        return st;
    return opt_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk);
}

/* Decoded bytes of every token, once. */
static pl_status build_pieces(tok *t)
{
    size_t total = t->text_off[t->n_vocab]; /* decoding never lengthens a token */
    t->piece = malloc(total ? total : 1);
    t->piece_off = malloc(((size_t)t->n_vocab + 1) * sizeof(uint32_t));
    if (!t->piece || !t->piece_off)
        return PL_ERRF(PL_NOMEM, "tok: out of memory");
    uint32_t o = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        t->piece_off[id] = o;
        const char *s = t->text + t->text_off[id];
        size_t n = tlen(t, id);
        if (t->spm && t->type[id] == TT_NORMAL) { /* "▁" → space */
            for (size_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                    t->piece[o++] = ' ';
                    i += 3;
                } else {
                    t->piece[o++] = s[i++];
                }
            }
        } else if (t->spm && t->type[id] == TT_BYTE) { /* "<0xNN>" → that byte */
            int b = byte_token_value(s, n);
            if (b >= 0)
                t->piece[o++] = (char)b;
        } else if (t->type[id] == TT_NORMAL) {
            size_t i = 0;
            while (i < n) {
                uint32_t cp;
                size_t k = utf8_get((const unsigned char *)s + i, n - i, &cp);
                if (cp < 512 && t->cp_byte[cp] >= 0) {
                    t->piece[o++] = (char)t->cp_byte[cp];
                } else { /* not a byte character: pass it through */
                    memcpy(t->piece + o, s + i, k);
                    o += (uint32_t)k;
                }
                i += k;
            }
        } else if (t->type[id] == TT_USER || t->type[id] == TT_CONTROL ||
                   t->type[id] == TT_UNKNOWN) {
            memcpy(t->piece + o, s, n); /* control/unknown: shown only when asked */
            o += (uint32_t)n;
        }
    }
    t->piece_off[t->n_vocab] = o;
    return PL_OK;
}

pl_status tok_create(const gguf_file *f, tok **out)
{
    if (!f || !out)
        return PL_ERRF(PL_INVALID, "tok_create: bad arguments");
    *out = NULL;
    gguf_str model;
    pl_status st = gguf_get_str(f, "tokenizer.ggml.model", &model);
    if (st != PL_OK)
        return st == PL_NOT_FOUND ? PL_ERRF(PL_CORRUPT, "tok: no tokenizer.ggml.model") : st;
    bool spm = gguf_str_eq(model, "llama");
    if (!spm && !gguf_str_eq(model, "gpt2"))
        return PL_ERRF(PL_UNSUPPORTED,
                       "tok: tokenizer model '%.*s' is not supported (only gpt2 and llama)",
                       (int)(model.len > 64 ? 64 : model.len), model.ptr);
    tok *t = calloc(1, sizeof(*t));
    if (!t)
        return PL_ERRF(PL_NOMEM, "tok: out of memory");
    t->spm = spm;
    init_byte_map(t);
    if (spm) {
        if ((st = load_vocab(t, f)) != PL_OK || (st = load_spm(t, f)) != PL_OK ||
            (st = build_pieces(t)) != PL_OK)
            goto fail;
    } else if ((st = load_pre(t, f)) != PL_OK || (st = load_vocab(t, f)) != PL_OK ||
               (st = load_merges(t, f)) != PL_OK || (st = build_pieces(t)) != PL_OK) {
        goto fail;
    }
    for (int b = 0; b < 256; b++) {
        char c[4];
        int k = utf8_put(t->byte_cp[b], c);
        t->byte_id[b] = lookup_id(t, c, (size_t)k);
    }
    if ((st = opt_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos)) != PL_OK ||
        (st = opt_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos)) != PL_OK)
        goto fail;
    t->add_bos = false;
    if (gguf_find_key(f, "tokenizer.ggml.add_bos_token") >= 0 &&
        (st = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos)) != PL_OK)
        goto fail;
    if (t->eos >= 0)
        t->eog[t->eos / 8] |= (uint8_t)(1u << (t->eos % 8));
    static const char *const eog_keys[] = {"tokenizer.ggml.eot_token_id",
                                           "tokenizer.ggml.eom_token_id"};
    for (size_t i = 0; i < 2; i++) {
        int32_t id;
        if ((st = opt_id(f, eog_keys[i], t->n_vocab, &id)) != PL_OK)
            goto fail;
        if (id >= 0)
            t->eog[id / 8] |= (uint8_t)(1u << (id % 8));
    }
    int32_t ns = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if ((ty == TT_CONTROL || ty == TT_USER) && is_eog_name(t->text + t->text_off[id]))
            t->eog[id / 8] |= (uint8_t)(1u << (id % 8));
        if ((ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN) && tlen(t, id) > 0)
            ns++;
    }
    t->specials = malloc(((size_t)ns + 1) * sizeof(int32_t));
    if (!t->specials) {
        st = PL_ERRF(PL_NOMEM, "tok: out of memory");
        goto fail;
    }
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        if ((ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN) && tlen(t, id) > 0)
            t->specials[t->n_specials++] = id;
    }
    qsort_r(t->specials, (size_t)t->n_specials, sizeof(int32_t), cmp_special, t);
    *out = t;
    return PL_OK;
fail:
    tok_destroy(t);
    return st;
}

/* --- queries -----------------------------------------------------------------------------------
 */

int32_t tok_n_vocab(const tok *t)
{
    return t->n_vocab;
}

int32_t tok_bos(const tok *t)
{
    return t->bos;
}

int32_t tok_eos(const tok *t)
{
    return t->eos;
}

bool tok_is_eog(const tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && (t->eog[id / 8] >> (id % 8)) & 1;
}

bool tok_add_bos(const tok *t)
{
    return t->add_bos && t->bos >= 0;
}

int32_t tok_find(const tok *t, const char *text)
{
    return text ? lookup_id(t, text, strlen(text)) : -1;
}

const char *tok_text(const tok *t, int32_t id)
{
    return (id >= 0 && id < t->n_vocab) ? t->text + t->text_off[id] : NULL;
}

/* Decoded bytes of `id` (borrowed) and their count; NULL/0 when it decodes to nothing. */
static const char *piece_of(const tok *t, int32_t id, bool special, size_t *n)
{
    *n = 0;
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    uint8_t ty = t->type[id];
    if ((ty == TT_CONTROL || ty == TT_UNKNOWN) && !special)
        return NULL;
    *n = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece + t->piece_off[id];
}

int tok_piece(const tok *t, int32_t id, bool special, char *out, int cap)
{
    size_t n;
    const char *p = piece_of(t, id, special, &n);
    if (n > (size_t)(cap < 0 ? 0 : cap))
        return (int)n;
    if (n)
        memcpy(out, p, n);
    return (int)n;
}

/* --- encoding ----------------------------------------------------------------------------------
 */

typedef struct sym {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
} sym;

typedef struct pair {
    int32_t rank;
    int32_t left, right; /* symbol positions */
    int32_t lid, rid;    /* their ids when queued: a mismatch later means stale */
    int32_t result;
} pair;

typedef struct enc {
    const tok *t;
    int32_t *out;
    int64_t cap, n;
    const uint32_t *cps; /* the current plain fragment */
    char *bytes;         /* scratch: a word's UTF-8 bytes */
    sym *syms;
    pair *heap;
    size_t scap; /* capacity of bytes/syms (in bytes of the word) */
    bool failed; /* out of memory */
} enc;

static void put(enc *e, int32_t id)
{
    if (e->n < e->cap)
        e->out[e->n] = id;
    e->n++;
}

static bool pair_less(const pair *a, const pair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(pair *h, size_t *n, pair p)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_less(&p, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = p;
}

static pair heap_pop(pair *h, size_t *n)
{
    pair top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && pair_less(&h[c + 1], &h[c]))
            c++;
        if (!pair_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static void queue_pair(const tok *t, const sym *s, pair *h, size_t *nh, int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || s[l].id < 0 || s[r].id < 0)
        return;
    const merge_slot *m = lookup_merge(t, s[l].id, s[r].id);
    if (!m)
        return;
    pair p = {m->rank, l, r, s[l].id, s[r].id, m->result};
    heap_push(h, nh, p);
}

static bool grow(enc *e, size_t n)
{
    if (n <= e->scap)
        return true;
    size_t c = e->scap ? e->scap : 64;
    while (c < n)
        c *= 2;
    char *b = realloc(e->bytes, c * 3); /* the word, then its byte-level text (2 bytes each) */
    if (!b)
        return false;
    e->bytes = b;
    sym *s = realloc(e->syms, c * sizeof(sym));
    if (!s)
        return false;
    e->syms = s;
    pair *h = realloc(e->heap, c * 2 * sizeof(pair)); /* at most n-1 + 2 per merge */
    if (!h)
        return false;
    e->heap = h;
    e->scap = c;
    return true;
}

/* BPE over one word of n bytes held in e->bytes. */
static void bpe_word(enc *e, size_t n)
{
    const tok *t = e->t;
    const unsigned char *b = (const unsigned char *)e->bytes;
    if (t->ignore_merges) { /* the byte-level text goes after the word: room for 2n bytes */
        char *bl = e->bytes + n;
        size_t o = 0;
        for (size_t i = 0; i < n; i++)
            o += (size_t)utf8_put(t->byte_cp[b[i]], bl + o);
        int32_t id = lookup_id(t, bl, o);
        if (id >= 0) {
            put(e, id);
            return;
        }
    }
    sym *s = e->syms;
    for (size_t i = 0; i < n; i++) {
        s[i].id = t->byte_id[b[i]];
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++)
        queue_pair(t, s, e->heap, &nh, (int32_t)i, (int32_t)i + 1);
    while (nh) {
        pair p = heap_pop(e->heap, &nh);
        sym *l = &s[p.left], *r = &s[p.right];
        if (l->id != p.lid || r->id != p.rid || l->next != p.right)
            continue; /* stale: one side was merged since */
        l->id = p.result;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = p.left;
        r->id = -2; /* dead */
        r->next = r->prev = -1;
        queue_pair(t, s, e->heap, &nh, l->prev, p.left);
        queue_pair(t, s, e->heap, &nh, p.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        if (s[i].id >= 0)
            put(e, s[i].id);
        /* a byte with no token of its own is dropped, as llama.cpp does */
    }
}

static void on_word(void *ctx, size_t start, size_t end)
{
    enc *e = ctx;
    if (e->failed)
        return;
    if (!grow(e, (end - start) * 4 + 1)) {
        e->failed = true;
        return;
    }
    size_t n = 0;
    for (size_t i = start; i < end; i++)
        n += (size_t)utf8_put(e->cps[i], e->bytes + n);
    bpe_word(e, n);
}

static bool encode_plain(enc *e, const char *text, size_t len)
{
    if (len == 0)
        return true;
    uint32_t *cps = malloc(len * sizeof(uint32_t));
    if (!cps)
        return false;
    size_t n = 0, i = 0;
    while (i < len) {
        i += utf8_get((const unsigned char *)text + i, len - i, &cps[n]);
        n++;
    }
    e->cps = cps;
    tok_pre_split(e->t->pre, cps, n, on_word, e);
    free(cps);
    return !e->failed;
}

static void spm_put(void *ctx, int32_t id)
{
    put(ctx, id);
}

static int32_t spm_lookup(const void *ctx, const char *s, size_t n)
{
    return lookup_id(ctx, s, n);
}

/* One plain fragment through SentencePiece: a leading space when `prefix`, spaces escaped as
 * U+2581, then tok_spm_encode. */
static bool encode_spm(enc *e, const char *text, size_t len, bool prefix)
{
    size_t spaces = prefix;
    for (size_t i = 0; i < len; i++)
        spaces += text[i] == ' ';
    char *esc = malloc(len + 2 * spaces + 3);
    if (!esc)
        return false;
    size_t o = 0;
    for (size_t i = 0; i < len + prefix; i++) {
        char c = i < prefix ? ' ' : text[i - prefix];
        if (c == ' ') {
            memcpy(esc + o, "\xE2\x96\x81", 3);
            o += 3;
        } else {
            esc[o++] = c;
        }
    }
    const tok *t = e->t;
    tok_spm_vocab v = {.ctx = t,
                       .lookup = spm_lookup,
                       .scores = t->scores,
                       .byte_tok = t->spm_byte,
                       .unk = t->unk};
    bool ok = tok_spm_encode(&v, esc, o, spm_put, e);
    free(esc);
    return ok;
}

typedef struct frag {
    size_t start, len; /* raw text when id < 0 */
    int32_t id;
} frag;

int64_t tok_encode(const tok *t, const char *text, size_t len, bool add_bos, bool parse_special,
                   int32_t *out, int64_t cap)
{
    if (!t || (!text && len) || cap < 0 || (!out && cap > 0))
        return -1;
    enc e = {.t = t, .out = out, .cap = cap};
    if (add_bos && t->bos >= 0)
        put(&e, t->bos);
    /* cut at special tokens, longest first; every occurrence, left to right */
    size_t fcap = 16, nf = 1;
    frag *fr = malloc(fcap * sizeof(frag));
    if (!fr)
        return -1;
    fr[0] = (frag){0, len, -1};
    for (int32_t si = 0; si < t->n_specials && len > 0; si++) {
        int32_t id = t->specials[si];
        if (!parse_special && t->type[id] != TT_USER)
            continue;
        const char *sp = t->text + t->text_off[id];
        size_t sl = tlen(t, id);
        for (size_t fi = 0; fi < nf; fi++) {
            if (fr[fi].id >= 0 || fr[fi].len < sl)
                continue;
            const char *base = text + fr[fi].start;
            const char *hit = memmem(base, fr[fi].len, sp, sl);
            if (!hit)
                continue;
            /* split fragment fi into [before][token][after] and look at "after" next */
            if (nf + 2 > fcap) {
                fcap *= 2;
                frag *nfr = realloc(fr, fcap * sizeof(frag));
                if (!nfr) {
                    free(fr);
                    return -1;
                }
                fr = nfr;
            }
            size_t before = (size_t)(hit - base);
            frag after = {fr[fi].start + before + sl, fr[fi].len - before - sl, -1};
            frag tokf = {fr[fi].start + before, sl, id};
            memmove(&fr[fi + 3], &fr[fi + 1], (nf - fi - 1) * sizeof(frag));
            nf += 2;
            fr[fi].len = before;
            fr[fi + 1] = tokf;
            fr[fi + 2] = after;
            fi++; /* the loop's fi++ moves on to "after" */
        }
    }
    bool ok = true;
    bool prev_special = true; /* SentencePiece: the first fragment counts as after a special */
    for (size_t fi = 0; fi < nf && ok; fi++) {
        if (fr[fi].id >= 0) {
            put(&e, fr[fi].id);
            prev_special = true;
        } else if (t->spm) {
            if (fr[fi].len == 0)
                continue;
            ok = encode_spm(&e, text + fr[fi].start, fr[fi].len,
                            t->add_space_prefix && prev_special);
            prev_special = false;
        } else {
            ok = encode_plain(&e, text + fr[fi].start, fr[fi].len);
        }
    }
    free(fr);
    free(e.bytes);
    free(e.syms);
    free(e.heap);
    return ok ? e.n : -1;
}

/* --- streaming detokenisation ------------------------------------------------------------------
 */

void tok_stream_init(tok_stream *s)
{
    memset(s, 0, sizeof(*s));
}

/* Length of the valid UTF-8 sequence at p (n bytes available): > 0 when whole, 0 when it is a
 * valid but incomplete prefix that more bytes could finish, -1 when invalid. */
static int utf8_check(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    int k;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return -1;
    for (int i = 1; i < k; i++) {
        if ((size_t)i >= n)
            return 0;
        unsigned x = p[i];
        if (i == 1 ? (x < lo || x > hi) : (x & 0xC0) != 0x80)
            return -1;
    }
    return k;
}

int tok_stream_push(const tok *t, tok_stream *s, int32_t id, char *out, int cap)
{
    char stackbuf[256];
    size_t pn;
    const char *piece = piece_of(t, id, false, &pn);
    char *buf = stackbuf;
    size_t need = pn + (size_t)s->n_pending;
    if (need > sizeof stackbuf) {
        buf = malloc(need);
        if (!buf)
            return 0;
    }
    memcpy(buf, s->pending, (size_t)s->n_pending);
    if (pn)
        memcpy(buf + s->n_pending, piece, pn);
    size_t o = 0, i = 0;
    int held = 0;
    /* first pass: measure */
    size_t total = 0;
    while (i < need) {
        int k = utf8_check((const unsigned char *)buf + i, need - i);
        if (k == 0) {
            held = (int)(need - i);
            break;
        }
        total += k > 0 ? (size_t)k : 3;
        i += k > 0 ? (size_t)k : 1;
    }
    if (total > (size_t)cap) {
        if (buf != stackbuf)
            free(buf);
        return (int)total; /* nothing consumed: call again with a larger buffer */
    }
    i = 0;
    while (i + (size_t)held < need) {
        int k = utf8_check((const unsigned char *)buf + i, need - i);
        if (k > 0) {
            memcpy(out + o, buf + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    memcpy(s->pending, buf + i, (size_t)held);
    s->n_pending = held;
    if (buf != stackbuf)
        free(buf);
    return (int)o;
}

int tok_stream_flush(tok_stream *s, char *out, int cap)
{
    if (s->n_pending == 0)
        return 0;
    if (cap < 3)
        return 3;
    memcpy(out, "\xEF\xBF\xBD", 3); /* an unfinished sequence is one replacement character */
    s->n_pending = 0;
    return 3;
}
