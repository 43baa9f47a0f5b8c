/* test_tok.c — the tokenizers. Byte-level BPE: a synthetic vocabulary built here (merges, special
 * and user-defined tokens, streaming of split code points, error cases), and the real SmolLM2
 * vocabulary (skipped when the model is absent): known ids, round trips over varied text,
 * UTF-8-safe streaming, and 100% agreement with llama.cpp on tests/golden/smollm2/tokenize.jsonl
 * (skipped when that file is absent). SentencePiece ("llama" model): a synthetic scored
 * vocabulary (merge order by score, byte fallback, the space marker and add_space_prefix,
 * specials) and the real Gemma 3 vocabulary with tests/golden/gemma3/tokenize.jsonl. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../harness.h"
#include "gguf.h"
#include "gguf_build.h"
#include "tok.h"
#include "uni.h"

/* --- helpers ------------------------------------------------------------------------------- */

static int enc_put(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* GPT-2's byte character for byte b, UTF-8 encoded into o (NUL-terminated). */
static void byte_char(int b, char *o)
{
    int n = 0, cp;
    bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    if (keep) {
        cp = b;
    } else {
        cp = 256;
        for (int x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE))
                cp++;
    }
    n = enc_put((uint32_t)cp, o);
    o[n] = '\0';
}

/* Strict UTF-8 validity (what a stream consumer must be able to rely on). */
static bool valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        int k;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF)
            k = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            k = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else
            return false;
        if (i + (size_t)k > n)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (int j = 2; j < k; j++)
            if ((p[i + j] & 0xC0) != 0x80)
                return false;
        i += (size_t)k;
    }
    return true;
}

/* Decodes ids with tok_piece (special=false) into a malloc'd string; *n its length. */
static char *decode_all(const tok *t, const int32_t *ids, int64_t n_ids, size_t *n)
{
    size_t cap = 64, len = 0;
    char *s = malloc(cap);
    for (int64_t i = 0; i < n_ids && s; i++) {
        int k = tok_piece(t, ids[i], false, NULL, 0);
        if (len + (size_t)k + 1 > cap) {
            while (len + (size_t)k + 1 > cap)
                cap *= 2;
            s = realloc(s, cap);
            if (!s)
                break;
        }
        tok_piece(t, ids[i], false, s + len, k);
        len += (size_t)k;
    }
    if (s)
        s[len] = '\0';
    *n = len;
    return s;
}

static int64_t encode_alloc(const tok *t, const char *text, size_t len, bool special, int32_t **ids)
{
    int64_t n = tok_encode(t, text, len, false, special, NULL, 0);
    *ids = malloc(((size_t)(n > 0 ? n : 0) + 1) * sizeof(int32_t));
    if (n < 0 || !*ids)
        return -1;
    int64_t n2 = tok_encode(t, text, len, false, special, *ids, n);
    return n2 == n ? n : -1;
}

/* --- a synthetic vocabulary ------------------------------------------------------------------ */

enum {
    SYN_HE = 256,
    SYN_LL,
    SYN_LLO,
    SYN_HELLO,
    SYN_GW,
    SYN_OR,
    SYN_GWOR,
    SYN_LD,
    SYN_GWORLD,
    SYN_XYZ, /* a token no merge produces: only Llama 3's ignore_merges emits it whole */
    SYN_IMS,
    SYN_IME,
    SYN_EOT,
    SYN_USER,
    SYN_N
};

typedef struct syn_opts {
    const char *model, *pre;
    const char *bad_merge;
    int64_t eos;
} syn_opts;

static gb build_synthetic(syn_opts o)
{
    static char bytes[256][4];
    const char *toks[SYN_N];
    int32_t types[SYN_N];
    for (int b = 0; b < 256; b++) {
        byte_char(b, bytes[b]);
        toks[b] = bytes[b];
        types[b] = 1;
    }
    static const char *const extra[] = {"he",
                                        "ll",
                                        "llo",
                                        "hello",
                                        "\xC4\xA0w",
                                        "or",
                                        "\xC4\xA0wor",
                                        "ld",
                                        "\xC4\xA0world",
                                        "xyz",
                                        "<|im_start|>",
                                        "<|im_end|>",
                                        "<|endoftext|>",
                                        "<u>"};
    for (int i = 0; i < SYN_N - 256; i++) {
        toks[256 + i] = extra[i];
        types[256 + i] = 256 + i >= SYN_IMS ? 3 : 1;
    }
    types[SYN_USER] = 4;
    const char *merges[] = {"h e", "l l",          "ll o", "he llo",         "\xC4\xA0 w",
                            "o r", "\xC4\xA0w or", "l d",  "\xC4\xA0wor ld", o.bad_merge};
    uint64_t n_merges = o.bad_merge ? 10 : 9;
    gb b = {0};
    uint64_t n_kv = 5 + (o.eos >= -1 ? 1 : 0) + (o.model ? 1 : 0);
    gb_header(&b, 3, 0, n_kv);
    if (o.model)
        gb_kv_str(&b, "tokenizer.ggml.model", o.model);
    gb_kv_str(&b, "tokenizer.ggml.pre", o.pre ? o.pre : "gpt2");
    gb_kv_strs(&b, "tokenizer.ggml.tokens", toks, SYN_N);
    gb_kv_i32s(&b, "tokenizer.ggml.token_type", types, SYN_N);
    gb_kv_strs(&b, "tokenizer.ggml.merges", merges, n_merges);
    gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", SYN_IMS);
    if (o.eos >= -1)
        gb_kv_u32(&b, "tokenizer.ggml.eos_token_id", (uint32_t)o.eos);
    return b;
}

static tok *open_synthetic(gb *b, gguf_file **f)
{
    tok *t = NULL;
    *b = build_synthetic((syn_opts){.model = "gpt2", .eos = SYN_EOT});
    if (gguf_open_buffer(b->p, b->n, f) != PL_OK)
        return NULL;
    if (tok_create(*f, &t) != PL_OK)
        return NULL;
    return t;
}

TEST(tok_synthetic_merges_and_specials)
{
    gb b;
    gguf_file *f = NULL;
    tok *t = open_synthetic(&b, &f);
    CHECK(t != NULL);
    if (!t) {
        gguf_close(f);
        free(b.p);
        return;
    }
    gguf_close(f); /* the tokenizer copies what it needs */
    CHECK_EQ_INT(tok_n_vocab(t), SYN_N);
    CHECK_EQ_INT(tok_bos(t), SYN_IMS);
    CHECK_EQ_INT(tok_eos(t), SYN_EOT);
    CHECK(!tok_add_bos(t));
    CHECK(tok_is_eog(t, SYN_EOT));
    CHECK(tok_is_eog(t, SYN_IME));
    CHECK(!tok_is_eog(t, SYN_IMS));
    CHECK(!tok_is_eog(t, -1));
    CHECK(!tok_is_eog(t, SYN_N));
    CHECK_EQ_INT(tok_find(t, "hello"), SYN_HELLO);
    CHECK_EQ_INT(tok_find(t, "nope"), -1);
    CHECK_STR(tok_text(t, SYN_GWORLD), "\xC4\xA0world");

    int32_t ids[64];
    int64_t n = tok_encode(t, "hello world", 11, false, false, ids, 64);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(ids[0], SYN_HELLO);
    CHECK_EQ_INT(ids[1], SYN_GWORLD);
    /* with BOS, and a buffer too small: the count is still right */
    n = tok_encode(t, "hello world", 11, true, false, ids, 1);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(ids[0], SYN_IMS);
    /* "hell": h e l l → he ll (no "he ll" merge) */
    n = tok_encode(t, "hell", 4, false, false, ids, 64);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(ids[0], SYN_HE);
    CHECK_EQ_INT(ids[1], SYN_LL);
    /* "lll": the leftmost pair of equal rank merges first */
    n = tok_encode(t, "lll", 3, false, false, ids, 64);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(ids[0], SYN_LL);
    CHECK_EQ_INT(ids[1], 'l');

    const char *chat = "<|im_start|>hello<|im_end|><u>";
    n = tok_encode(t, chat, strlen(chat), false, true, ids, 64);
    CHECK_EQ_INT(n, 4);
    CHECK_EQ_INT(ids[0], SYN_IMS);
    CHECK_EQ_INT(ids[1], SYN_HELLO);
    CHECK_EQ_INT(ids[2], SYN_IME);
    CHECK_EQ_INT(ids[3], SYN_USER);
    n = tok_encode(t, chat, strlen(chat), false, false, ids, 64);
    CHECK(n > 4);
    CHECK(ids[0] != SYN_IMS);
    CHECK_EQ_INT(ids[n - 1], SYN_USER); /* user-defined tokens match even without parse_special */

    char piece[32];
    CHECK_EQ_INT(tok_piece(t, SYN_GWORLD, false, piece, sizeof piece), 6);
    CHECK(memcmp(piece, " world", 6) == 0);
    CHECK_EQ_INT(tok_piece(t, SYN_IME, false, piece, sizeof piece), 0);
    CHECK_EQ_INT(tok_piece(t, SYN_IME, true, piece, sizeof piece), 10);
    CHECK(memcmp(piece, "<|im_end|>", 10) == 0);
    CHECK_EQ_INT(tok_piece(t, SYN_USER, false, piece, sizeof piece), 3);
    CHECK_EQ_INT(tok_piece(t, SYN_GWORLD, false, piece, 2), 6); /* needed size */
    CHECK_EQ_INT(tok_piece(t, 9999, false, piece, sizeof piece), 0);
    CHECK_EQ_INT(tok_encode(t, NULL, 3, false, false, ids, 64), -1);
    CHECK_EQ_INT(tok_encode(t, "", 0, false, false, ids, 64), 0);
    tok_destroy(t);
    tok_destroy(NULL);
    free(b.p);
}

TEST(tok_synthetic_round_trip_and_invalid_utf8)
{
    gb b;
    gguf_file *f = NULL;
    tok *t = open_synthetic(&b, &f);
    CHECK(t != NULL);
    if (t) {
        static const char *const texts[] = {
            "hello world",
            "  hello   world  ",
            "\t\n\r\n x",
            "caf\xC3\xA9 \xE6\x97\xA5",
            "\xF0\x9F\x99\x82\xF0\x9F\x99\x83",
            "it's 12345 o'clock",
            "",
        };
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            int32_t *ids = NULL;
            int64_t n = encode_alloc(t, texts[i], strlen(texts[i]), false, &ids);
            size_t len = 0;
            char *back = n >= 0 ? decode_all(t, ids, n, &len) : NULL;
            CHECK(back && len == strlen(texts[i]) && memcmp(back, texts[i], len) == 0);
            free(back);
            free(ids);
        }
        /* an invalid byte becomes U+FFFD, as in llama.cpp */
        int32_t *ids = NULL;
        int64_t n = encode_alloc(t,
                                 "a\xFF"
                                 "b",
                                 3, false, &ids);
        size_t len = 0;
        char *back = decode_all(t, ids, n, &len);
        CHECK(back && strcmp(back, "a\xEF\xBF\xBD"
                                   "b") == 0);
        free(back);
        free(ids);
    }
    tok_destroy(t);
    gguf_close(f);
    free(b.p);
}

TEST(tok_stream_never_splits_a_code_point)
{
    gb b;
    gguf_file *f = NULL;
    tok *t = open_synthetic(&b, &f);
    CHECK(t != NULL);
    if (t) {
        /* no merges touch these bytes, so every byte is its own token */
        const char *text = "a\xF0\x9F\x99\x82"
                           "b\xE6\x97\xA5\xC3\xA9";
        int32_t ids[32];
        int64_t n = tok_encode(t, text, strlen(text), false, false, ids, 32);
        CHECK_EQ_INT(n, (int64_t)strlen(text));
        tok_stream s;
        tok_stream_init(&s);
        char out[256];
        size_t len = 0;
        bool all_valid = true;
        for (int64_t i = 0; i < n; i++) {
            int k = tok_stream_push(t, &s, ids[i], out + len, (int)(sizeof out - len));
            CHECK(k >= 0 && (size_t)k <= sizeof out - len);
            if (!valid_utf8(out + len, (size_t)k))
                all_valid = false;
            len += (size_t)k;
            if (i == 1 || i == 2 || i == 3) /* inside the emoji: nothing comes out */
                CHECK_EQ_INT(k, 0);
        }
        len += (size_t)tok_stream_flush(&s, out + len, (int)(sizeof out - len));
        CHECK(all_valid);
        CHECK_EQ_INT(len, strlen(text));
        CHECK(memcmp(out, text, len) == 0);

        /* an unfinished sequence at the end is flushed as one U+FFFD */
        tok_stream_init(&s);
        int k = tok_stream_push(t, &s, 0xE6, out, sizeof out);
        CHECK_EQ_INT(k, 0);
        k = tok_stream_push(t, &s, 0x97, out, sizeof out);
        CHECK_EQ_INT(k, 0);
        k = tok_stream_flush(&s, out, sizeof out);
        CHECK_EQ_INT(k, 3);
        CHECK(memcmp(out, "\xEF\xBF\xBD", 3) == 0);
        CHECK_EQ_INT(tok_stream_flush(&s, out, sizeof out), 0);
        /* a byte that can never start or continue a sequence is replaced at once */
        tok_stream_init(&s);
        k = tok_stream_push(t, &s, 0xFF, out, sizeof out);
        CHECK_EQ_INT(k, 3);
        /* a lead byte followed by a non-continuation: replacement, then the ASCII byte */
        tok_stream_init(&s);
        tok_stream_push(t, &s, 0xE6, out, sizeof out);
        k = tok_stream_push(t, &s, 'x', out, sizeof out);
        CHECK_EQ_INT(k, 4);
        CHECK(memcmp(out, "\xEF\xBF\xBDx", 4) == 0);
        /* too small a buffer: the needed size comes back and nothing is consumed */
        tok_stream_init(&s);
        k = tok_stream_push(t, &s, SYN_GWORLD, out, 3);
        CHECK_EQ_INT(k, 6);
        k = tok_stream_push(t, &s, SYN_GWORLD, out, sizeof out);
        CHECK_EQ_INT(k, 6);
        /* control tokens stream as nothing */
        CHECK_EQ_INT(tok_stream_push(t, &s, SYN_IME, out, sizeof out), 0);
    }
    tok_destroy(t);
    gguf_close(f);
    free(b.p);
}

TEST(tok_create_errors)
{
    struct {
        syn_opts o;
        pl_status want;
        const char *msg;
    } cases[] = {
        {{.model = NULL, .eos = 1}, PL_CORRUPT, "tokenizer.ggml.model"},
        {{.model = "bert", .eos = 1}, PL_UNSUPPORTED, "bert"},
        {{.model = "gpt2", .pre = "mystery-pre", .eos = 1}, PL_UNSUPPORTED, "mystery-pre"},
        {{.model = "gpt2", .bad_merge = "zz q", .eos = 1}, PL_CORRUPT, "zz q"},
        {{.model = "gpt2", .eos = 100000}, PL_CORRUPT, "eos_token_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gb b = build_synthetic(cases[i].o);
        gguf_file *f = NULL;
        tok *t = NULL;
        CHECK_EQ_INT(gguf_open_buffer(b.p, b.n, &f), PL_OK);
        if (f) {
            CHECK_EQ_INT(tok_create(f, &t), cases[i].want);
            CHECK(strstr(pl_err_last(), cases[i].msg) != NULL);
            CHECK(t == NULL);
        }
        gguf_close(f);
        free(b.p);
    }
    /* Llama 3 takes a word that is a token as it is; the others merge byte by byte */
    for (int llama = 0; llama < 2; llama++) {
        gb b = build_synthetic(
            (syn_opts){.model = "gpt2", .pre = llama ? "llama-bpe" : "gpt2", .eos = 1});
        gguf_file *f = NULL;
        tok *t = NULL;
        int32_t ids[16];
        CHECK_EQ_INT(gguf_open_buffer(b.p, b.n, &f), PL_OK);
        CHECK_EQ_INT(tok_create(f, &t), PL_OK);
        if (t) {
            int64_t n = tok_encode(t, "xyz", 3, false, false, ids, 16);
            CHECK_EQ_INT(n, llama ? 1 : 3);
            CHECK_EQ_INT(ids[0], llama ? SYN_XYZ : 'x');
        }
        tok_destroy(t);
        gguf_close(f);
        free(b.p);
    }
    /* every pre-tokenizer name we claim loads */
    static const char *const pres[] = {"default", "gpt2", "smollm", "llama-bpe", "qwen2"};
    for (size_t i = 0; i < sizeof pres / sizeof pres[0]; i++) {
        gb b = build_synthetic((syn_opts){.model = "gpt2", .pre = pres[i], .eos = 1});
        gguf_file *f = NULL;
        tok *t = NULL;
        CHECK_EQ_INT(gguf_open_buffer(b.p, b.n, &f), PL_OK);
        CHECK_EQ_INT(tok_create(f, &t), PL_OK);
        int32_t ids[16];
        if (t) /* the same text splits differently but always round-trips */
            CHECK(tok_encode(t, "hello 123", 9, false, false, ids, 16) > 0);
        tok_destroy(t);
        gguf_close(f);
        free(b.p);
    }
}

TEST(tok_unicode_classes)
{
    /* llama.cpp's tables are Unicode 15.1 with White_Space as \s: regenerate uni_tables.c with
     * unicodedata2 15.1 (scripts/gen_unicode.py) or tokenisation drifts on new characters */
    CHECK_STR(uni_unicode_version, "15.1.0");
    CHECK_EQ_INT(uni_flags('a'), UNI_LETTER);
    CHECK_EQ_INT(uni_flags('7'), UNI_NUMBER);
    CHECK_EQ_INT(uni_flags('_'), 0);
    CHECK_EQ_INT(uni_flags(0x2EBF0), UNI_LETTER); /* CJK Extension I (15.1) */
    CHECK_EQ_INT(uni_flags(0x00B2), UNI_NUMBER);  /* superscript two */
    CHECK_EQ_INT(uni_flags(0x2167), UNI_NUMBER);  /* roman numeral eight */
    CHECK_EQ_INT(uni_flags(0x00A0), UNI_SPACE);
    CHECK_EQ_INT(uni_flags(0x0085), UNI_SPACE);
    CHECK_EQ_INT(uni_flags(0x3000), UNI_SPACE);
    CHECK_EQ_INT(uni_flags(0x001C), 0); /* isspace() in Python, but not White_Space */
    CHECK_EQ_INT(uni_flags(0x200B), 0); /* zero-width space is not White_Space */
    CHECK_EQ_INT(uni_flags(0x0301), 0); /* combining mark */
    CHECK_EQ_INT(uni_flags(0x1F642), 0);
    CHECK_EQ_INT(uni_flags(0x10FFFF), 0);
    CHECK_EQ_INT(uni_flags(0x110000), 0);
}

/* --- the real SmolLM2 vocabulary -------------------------------------------------------------- */

static tok *open_smollm2(gguf_file **f)
{
    const char *path = gb_smollm2_path();
    tok *t = NULL;
    *f = NULL;
    if (!path || gguf_open(path, f) != PL_OK)
        return NULL;
    if (tok_create(*f, &t) != PL_OK) {
        gguf_close(*f);
        *f = NULL;
        return NULL;
    }
    return t;
}

static bool ids_eq(const tok *t, const char *text, bool special, const int32_t *want, int n)
{
    int32_t ids[256];
    int64_t k = tok_encode(t, text, strlen(text), false, special, ids, 256);
    if (k != n) {
        fprintf(stderr, "  '%s': %lld ids, want %d\n", text, (long long)k, n);
        return false;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] != want[i]) {
            fprintf(stderr, "  '%s': id %d is %d, want %d\n", text, i, ids[i], want[i]);
            return false;
        }
    return true;
}

TEST(tok_smollm2_known_ids)
{
    gguf_file *f;
    tok *t = open_smollm2(&f);
    if (!t)
        SKIP("SmolLM2-135M-Instruct.Q4_1.gguf not found (set PARLEY_SMOLLM2)");
    CHECK_EQ_INT(tok_n_vocab(t), 49152);
    CHECK_EQ_INT(tok_eos(t), 2);
    CHECK_EQ_INT(tok_bos(t), 1);
    CHECK(!tok_add_bos(t));
    CHECK(tok_is_eog(t, 2));
    CHECK(tok_is_eog(t, 0));
    CHECK(!tok_is_eog(t, 1));
    CHECK_EQ_INT(tok_find(t, "<|im_start|>"), 1);
    CHECK_EQ_INT(tok_find(t, "<|im_end|>"), 2);
    static const int32_t ims[] = {1};
    CHECK(ids_eq(t, "<|im_start|>", true, ims, 1));
    int32_t ids[64];
    int64_t n = tok_encode(t, "<|im_start|>", 12, false, false, ids, 64);
    CHECK(n > 1);
    CHECK(ids[0] != 1);
    /* reference ids from a byte-level BPE built independently from the same vocabulary */
    static const int32_t hello[] = {19556, 905};
    CHECK(ids_eq(t, "Hello world", false, hello, 2));
    static const int32_t chat[] = {1, 4093, 198, 26843, 665, 216, 33, 34, 35, 36, 37, 2};
    CHECK(ids_eq(t, "<|im_start|>user\nHi there 12345<|im_end|>", true, chat, 12));
    static const int32_t ws[] = {57, 5248, 256, 2045, 216, 288, 256, 1028, 256, 357, 506, 2294, 30};
    CHECK(ids_eq(t, "I'm   going  to   test   it's done.", false, ws, 13));
    static const int32_t cjk[] = {23274, 115,   40993, 179, 120,   248, 26453,
                                  11100, 224,   10391, 251, 10391, 134, 11100,
                                  226,   47526, 10813, 243, 221,   649, 33777};
    CHECK(ids_eq(t, "日本語のテキスト 🙂🙃 emoji", false, cjk, 21));
    tok_destroy(t);
    gguf_close(f);
}

TEST(tok_smollm2_round_trip_and_stream)
{
    gguf_file *f;
    tok *t = open_smollm2(&f);
    if (!t)
        SKIP("SmolLM2-135M-Instruct.Q4_1.gguf not found (set PARLEY_SMOLLM2)");
    static const char *const texts[] = {
        "The quick brown fox jumps over the lazy dog.",
        "   leading spaces, trailing spaces   ",
        "tabs\tand\nnewlines\r\n\r\n\n\nand  double  spaces",
        "I'm sure you'll see they've done it; we'd've REALLY'S liked 'em.",
        "numbers: 3.14159, 1,000,000 and 2024-11-25T13:45:00Z",
        "中文文本，日本語のテキスト、한국어 텍스트。",
        "emoji 🙂👍🏽👨‍👩‍👧🇫🇷❤️ and symbols ½ ² ① €£¥",
        "code: int main(void) { return x->y[0] >> 2; } // ok?!",
        "Ωμέγα, привет мир, مرحبا بالعالم, नमस्ते दुनिया",
        "\xc2\xa0nbsp\xe3\x80\x80ideographic space\xe2\x80\x89thin",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids = NULL;
        size_t len = strlen(texts[i]), back_len = 0;
        int64_t n = encode_alloc(t, texts[i], len, false, &ids);
        char *back = n >= 0 ? decode_all(t, ids, n, &back_len) : NULL;
        CHECK(back && back_len == len && memcmp(back, texts[i], len) == 0);
        /* streaming gives the same bytes and never a broken code point */
        tok_stream s;
        tok_stream_init(&s);
        char out[1024];
        size_t o = 0;
        bool valid = true;
        for (int64_t j = 0; j < n; j++) {
            int k = tok_stream_push(t, &s, ids[j], out + o, (int)(sizeof out - o));
            valid = valid && valid_utf8(out + o, (size_t)k);
            o += (size_t)k;
        }
        o += (size_t)tok_stream_flush(&s, out + o, (int)(sizeof out - o));
        CHECK(valid);
        CHECK(o == len && memcmp(out, texts[i], len) == 0);
        free(back);
        free(ids);
    }
    /* an emoji's 4 bytes spread over tokens: no prefix of the stream ends mid-character */
    int32_t ids[64];
    int64_t n = tok_encode(t, "\xF0\x9F\xA6\x9C!", 5, false, false, ids, 64);
    CHECK(n >= 2);
    tok_stream s;
    tok_stream_init(&s);
    char out[64];
    int k = tok_stream_push(t, &s, ids[0], out, sizeof out);
    CHECK(valid_utf8(out, (size_t)k));
    tok_destroy(t);
    gguf_close(f);
}

TEST(tok_smollm2_speed_100k)
{
    gguf_file *f;
    tok *t = open_smollm2(&f);
    if (!t)
        SKIP("SmolLM2-135M-Instruct.Q4_1.gguf not found (set PARLEY_SMOLLM2)");
    /* 100 KB of mixed text, including one very long "word" (no spaces) for the merge queue */
    size_t cap = 120000, len = 0;
    char *text = malloc(cap);
    static const char *const parts[] = {"The engine reads ", "tokens快速 ", "12345 ",
                                        "don't   stop\n", "🙂 "};
    for (int i = 0; len + 64 < cap - 20000; i++) {
        const char *p = parts[i % 5];
        memcpy(text + len, p, strlen(p));
        len += strlen(p);
    }
    for (int i = 0; i < 15000; i++)
        text[len++] = "abcdefghij"[i % 10];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int32_t *ids = NULL;
    int64_t n = encode_alloc(t, text, len, false, &ids);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(n > 10000);
    CHECK(ms < 2000); /* ~50 ms here; quadratic merging would take far longer */
    size_t back_len = 0;
    char *back = decode_all(t, ids, n, &back_len);
    CHECK(back && back_len == len && memcmp(back, text, len) == 0);
    free(back);
    free(ids);
    free(text);
    tok_destroy(t);
    gguf_close(f);
}

/* --- golden agreement with llama.cpp -----------------------------------------------------------
 */

/* Minimal JSON reader for one line {"text": "...", "ids": [...], "special": bool, ...}. */
typedef struct jline {
    char *text;
    size_t text_len;
    int32_t *ids;
    int64_t n_ids;
    bool special;
    bool has_text, has_ids;
} jline;

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static const char *parse_hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return NULL;
        *v = (*v << 4) | (uint32_t)h;
    }
    return p + 4;
}

static int put_cp(uint32_t cp, char *o)
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
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a JSON string at p (at the opening quote) into a malloc'd buffer. */
static const char *parse_jstr(const char *p, char **out, size_t *len)
{
    if (*p != '"')
        return NULL;
    p++;
    size_t cap = strlen(p) + 1, n = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    while (*p && *p != '"') {
        if (*p != '\\') {
            s[n++] = *p++;
            continue;
        }
        p++;
        char e = *p++;
        switch (e) {
        case 'n':
            s[n++] = '\n';
            break;
        case 't':
            s[n++] = '\t';
            break;
        case 'r':
            s[n++] = '\r';
            break;
        case 'b':
            s[n++] = '\b';
            break;
        case 'f':
            s[n++] = '\f';
            break;
        case '/':
            s[n++] = '/';
            break;
        case '\\':
            s[n++] = '\\';
            break;
        case '"':
            s[n++] = '"';
            break;
        case 'u': {
            uint32_t cp, lo;
            p = parse_hex4(p, &cp);
            if (!p)
                goto bad;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                const char *q = parse_hex4(p + 2, &lo);
                if (q && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p = q;
                }
            }
            n += (size_t)put_cp(cp, s + n);
            break;
        }
        default:
            goto bad;
        }
    }
    if (*p != '"')
        goto bad;
    s[n] = '\0';
    *out = s;
    *len = n;
    return p + 1;
bad:
    free(s);
    return NULL;
}

static bool parse_jline(const char *line, jline *j)
{
    memset(j, 0, sizeof(*j));
    const char *p = skip_ws(line);
    if (*p++ != '{')
        return false;
    for (;;) {
        p = skip_ws(p);
        if (*p == '}')
            return j->has_text && j->has_ids;
        char *key;
        size_t kl;
        p = parse_jstr(p, &key, &kl);
        if (!p)
            return false;
        p = skip_ws(p);
        if (*p++ != ':') {
            free(key);
            return false;
        }
        p = skip_ws(p);
        if (strcmp(key, "text") == 0 && *p == '"') {
            free(j->text);
            p = parse_jstr(p, &j->text, &j->text_len);
            j->has_text = p != NULL;
        } else if (strcmp(key, "ids") == 0 && *p == '[') {
            size_t cap = 16;
            free(j->ids);
            j->ids = malloc(cap * sizeof(int32_t));
            j->n_ids = 0;
            p = skip_ws(p + 1);
            while (p && *p != ']') {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p) {
                    p = NULL;
                    break;
                }
                if ((size_t)j->n_ids == cap) {
                    cap *= 2;
                    j->ids = realloc(j->ids, cap * sizeof(int32_t));
                }
                j->ids[j->n_ids++] = (int32_t)v;
                p = skip_ws(end);
                if (*p == ',')
                    p = skip_ws(p + 1);
            }
            if (p)
                p++;
            j->has_ids = p != NULL;
        } else if (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0) {
            bool v = *p == 't';
            if (strcmp(key, "special") == 0)
                j->special = v;
            p += v ? 4 : 5;
        } else if (*p == '"') { /* another string field: skip it */
            char *tmp;
            size_t tl;
            p = parse_jstr(p, &tmp, &tl);
            if (p)
                free(tmp);
        } else { /* number or null */
            while (*p && *p != ',' && *p != '}')
                p++;
        }
        free(key);
        if (!p)
            return false;
        p = skip_ws(p);
        if (*p == ',')
            p++;
    }
}

/* Every line of a tokenize.jsonl from make_golden.py must tokenise to exactly its ids. */
static void golden_tokenize(const tok *t, FILE *g)
{
    size_t cap = 1 << 16;
    char *line = malloc(cap);
    int lines = 0, agree = 0, bad_lines = 0, shown = 0;
    size_t bytes = 0;
    for (;;) {
        size_t n = 0; /* read one whole line, however long */
        int c;
        while ((c = fgetc(g)) != EOF && c != '\n') {
            if (n + 2 > cap) {
                cap *= 2;
                line = realloc(line, cap);
            }
            line[n++] = (char)c;
        }
        if (n == 0 && c == EOF)
            break;
        line[n] = '\0';
        if (n == 0)
            continue;
        jline j;
        if (!parse_jline(line, &j)) {
            bad_lines++;
            free(j.text);
            free(j.ids);
            continue;
        }
        lines++;
        bytes += j.text_len;
        int32_t *ids = NULL;
        int64_t k = encode_alloc(t, j.text, j.text_len, j.special, &ids);
        bool same = k == j.n_ids && (k == 0 || memcmp(ids, j.ids, (size_t)k * 4) == 0);
        if (same) {
            agree++;
        } else if (shown++ < 3) {
            int64_t at = 0;
            while (at < k && at < j.n_ids && ids[at] == j.ids[at])
                at++;
            fprintf(stderr,
                    "  golden line %d (%zu bytes, special=%d): first difference at id %lld"
                    " (ours %d, llama.cpp %d)\n",
                    lines, j.text_len, j.special, (long long)at, at < k ? ids[at] : -1,
                    at < j.n_ids ? j.ids[at] : -1);
        }
        free(ids);
        free(j.text);
        free(j.ids);
    }
    fprintf(stderr, "  golden: %d/%d lines agree over %zu bytes\n", agree, lines, bytes);
    CHECK_EQ_INT(bad_lines, 0);
    CHECK(lines > 0);
    CHECK_EQ_INT(agree, lines);
    free(line);
}

TEST(tok_smollm2_golden_llama_cpp)
{
    FILE *g = fopen("tests/golden/smollm2/tokenize.jsonl", "r");
    if (!g)
        SKIP("tests/golden/smollm2/tokenize.jsonl not found");
    gguf_file *f;
    tok *t = open_smollm2(&f);
    if (!t) {
        fclose(g);
        SKIP("SmolLM2-135M-Instruct.Q4_1.gguf not found (set PARLEY_SMOLLM2)");
    }
    golden_tokenize(t, g);
    fclose(g);
    tok_destroy(t);
    gguf_close(f);
}

/* --- SentencePiece ("llama" tokenizer model) ------------------------------------------------- */

enum { SPM_UNK, SPM_BOS, SPM_EOS, SPM_BYTE0, SPM_N0 = SPM_BYTE0 + 256 };

static const char *const spm_words[] = {"\xE2\x96\x81",
                                        "h",
                                        "e",
                                        "l",
                                        "o",
                                        "w",
                                        "r",
                                        "d",
                                        "he",
                                        "ll",
                                        "llo",
                                        "hello",
                                        "\xE2\x96\x81hello",
                                        "\xE2\x96\x81w",
                                        "or",
                                        "ld",
                                        "x",
                                        "y",
                                        "xy",
                                        "\xE2\x96\x81wor",
                                        "\xE2\x96\x81world",
                                        "\n\n",
                                        "<start_of_turn>"};
static const float spm_scores[] = {-20, -30, -30, -30, -30, -30, -30, -30, -5,    -4, -3, -2,
                                   -1,  -6,  -7,  -8,  -30, -30, -9,  -1,  -0.5f, 0,  0};
#define SPM_N (SPM_N0 + (int)(sizeof spm_words / sizeof spm_words[0]))

static int32_t spm_id(const char *w)
{
    for (size_t i = 0; i < sizeof spm_words / sizeof spm_words[0]; i++)
        if (strcmp(spm_words[i], w) == 0)
            return SPM_N0 + (int32_t)i;
    return -1;
}

/* A scored vocabulary: <unk> <s> </s>, the 256 byte tokens, then spm_words ("\n\n" user-defined,
 * <start_of_turn> control). space_prefix < 0 leaves tokenizer.ggml.add_space_prefix out. */
static gb build_spm(int space_prefix)
{
    static char bytes[256][8];
    const char *toks[SPM_N];
    int32_t types[SPM_N];
    float scores[SPM_N];
    toks[SPM_UNK] = "<unk>";
    toks[SPM_BOS] = "<s>";
    toks[SPM_EOS] = "</s>";
    types[SPM_UNK] = 2;
    types[SPM_BOS] = types[SPM_EOS] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[SPM_BYTE0 + b] = bytes[b];
        types[SPM_BYTE0 + b] = 6;
    }
    for (int i = 0; i < SPM_N; i++)
        scores[i] = 0;
    for (int i = 0; i < SPM_N - SPM_N0; i++) {
        toks[SPM_N0 + i] = spm_words[i];
        types[SPM_N0 + i] = 1;
        scores[SPM_N0 + i] = spm_scores[i];
    }
    types[spm_id("\n\n")] = 4;
    types[spm_id("<start_of_turn>")] = 3;
    gb b = {0};
    gb_header(&b, 3, 0, 6 + (space_prefix >= 0));
    gb_kv_str(&b, "tokenizer.ggml.model", "llama");
    gb_kv_strs(&b, "tokenizer.ggml.tokens", toks, SPM_N);
    gb_kv_i32s(&b, "tokenizer.ggml.token_type", types, SPM_N);
    gb_str(&b, "tokenizer.ggml.scores");
    gb_u32(&b, GGUF_ARRAY);
    gb_u32(&b, GGUF_F32);
    gb_u64(&b, SPM_N);
    gb_bytes(&b, scores, sizeof scores);
    gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", SPM_BOS);
    gb_kv_u32(&b, "tokenizer.ggml.eos_token_id", SPM_EOS);
    if (space_prefix >= 0)
        gb_kv_bool(&b, "tokenizer.ggml.add_space_prefix", space_prefix);
    return b;
}

static bool spm_ids_eq(const tok *t, const char *text, bool special, const int32_t *want, int n)
{
    return ids_eq(t, text, special, want, n);
}

TEST(tok_spm_synthetic_scores_bytes_and_spaces)
{
    gb b = build_spm(0);
    gguf_file *f = NULL;
    tok *t = NULL;
    CHECK(gguf_open_buffer(b.p, b.n, &f) == PL_OK);
    CHECK(f && tok_create(f, &t) == PL_OK);
    if (!t) {
        gguf_close(f);
        free(b.p);
        return;
    }
    /* Merges go best score first: ll, llo, he, hello; ▁w, or, ▁wor, ld, ▁world. */
    const int32_t hw[] = {spm_id("hello"), spm_id("\xE2\x96\x81world")};
    CHECK(spm_ids_eq(t, "hello world", false, hw, 2));
    /* "é" is not a token: its two bytes come out as byte tokens; "y" "x" never merge as "yx". */
    const int32_t he[] = {spm_id("h"), SPM_BYTE0 + 0xC3, SPM_BYTE0 + 0xA9, spm_id("y"),
                          spm_id("xy")};
    CHECK(spm_ids_eq(t, "h\xC3\xA9yxy", false, he, 5));
    /* A space becomes the marker and merges with what follows; "\n\n" is user-defined (split
     * even without parse_special); a space no token starts stays a marker of its own; the
     * control token only with parse_special. */
    const int32_t sp[] = {spm_id("\xE2\x96\x81hello"), spm_id("\n\n"), spm_id("\xE2\x96\x81world"),
                          spm_id("\xE2\x96\x81"), spm_id("x")};
    CHECK(spm_ids_eq(t, " hello\n\n world x", false, sp, 5));
    const int32_t sot[] = {spm_id("<start_of_turn>"), spm_id("hello")};
    CHECK(spm_ids_eq(t, "<start_of_turn>hello", true, sot, 2));
    int32_t ids[64];
    int64_t n = tok_encode(t, "<start_of_turn>hello", 20, false, false, ids, 64);
    CHECK(n > 2 && ids[0] != spm_id("<start_of_turn>"));
    /* BOS from add_bos; decoding: ▁ → space, byte tokens → their bytes, control hidden. */
    n = tok_encode(t, "hello world", 11, true, false, ids, 64);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(ids[0], SPM_BOS);
    char out[64];
    int k = tok_piece(t, spm_id("\xE2\x96\x81world"), false, out, sizeof out);
    CHECK(k == 6 && memcmp(out, " world", 6) == 0);
    CHECK_EQ_INT(tok_piece(t, SPM_BYTE0 + 0xC3, false, out, sizeof out), 1);
    CHECK_EQ_INT((unsigned char)out[0], 0xC3);
    CHECK_EQ_INT(tok_piece(t, SPM_BOS, false, out, sizeof out), 0);
    /* streaming holds the first byte of "é" until the second arrives */
    tok_stream st;
    tok_stream_init(&st);
    CHECK_EQ_INT(tok_stream_push(t, &st, spm_id("h"), out, sizeof out), 1);
    CHECK_EQ_INT(tok_stream_push(t, &st, SPM_BYTE0 + 0xC3, out, sizeof out), 0);
    k = tok_stream_push(t, &st, SPM_BYTE0 + 0xA9, out, sizeof out);
    CHECK(k == 2 && memcmp(out, "\xC3\xA9", 2) == 0);
    tok_destroy(t);
    gguf_close(f);
    free(b.p);
}

TEST(tok_spm_add_space_prefix)
{
    for (int sp = -1; sp <= 1; sp++) { /* absent → llama.cpp's default: on */
        gb b = build_spm(sp);
        gguf_file *f = NULL;
        tok *t = NULL;
        CHECK(gguf_open_buffer(b.p, b.n, &f) == PL_OK);
        CHECK(f && tok_create(f, &t) == PL_OK);
        if (t) {
            const int32_t with[] = {spm_id("\xE2\x96\x81hello"), spm_id("\xE2\x96\x81world")};
            const int32_t without[] = {spm_id("hello"), spm_id("\xE2\x96\x81world")};
            CHECK(spm_ids_eq(t, "hello world", false, sp != 0 ? with : without, 2));
            /* after a special token the prefix applies again */
            const int32_t after[] = {spm_id("<start_of_turn>"),
                                     spm_id(sp != 0 ? "\xE2\x96\x81hello" : "hello")};
            CHECK(spm_ids_eq(t, "<start_of_turn>hello", true, after, 2));
        }
        tok_destroy(t);
        gguf_close(f);
        free(b.p);
    }
}

/* Path of the real Gemma 3 270M model: $PARLEY_GEMMA3 or models/gemma-3-270m-q4_k_m.gguf. */
static const char *gemma3_path(void)
{
    const char *e = getenv("PARLEY_GEMMA3");
    const char *p = e && *e ? e : "models/gemma-3-270m-q4_k_m.gguf";
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    fclose(f);
    return p;
}

static tok *open_gemma3(gguf_file **f)
{
    const char *path = gemma3_path();
    tok *t = NULL;
    *f = NULL;
    if (!path || gguf_open(path, f) != PL_OK)
        return NULL;
    if (tok_create(*f, &t) != PL_OK) {
        gguf_close(*f);
        *f = NULL;
        return NULL;
    }
    return t;
}

TEST(tok_gemma3_known_ids_and_round_trip)
{
    gguf_file *f;
    tok *t = open_gemma3(&f);
    if (!t)
        SKIP("gemma-3-270m-q4_k_m.gguf not found (scripts/parleyctl model, or set PARLEY_GEMMA3)");
    CHECK_EQ_INT(tok_n_vocab(t), 262144);
    CHECK_EQ_INT(tok_bos(t), 2);
    CHECK_EQ_INT(tok_eos(t), 1);
    CHECK(tok_add_bos(t));
    CHECK_EQ_INT(tok_find(t, "<start_of_turn>"), 105);
    CHECK_EQ_INT(tok_find(t, "<end_of_turn>"), 106);
    CHECK(tok_is_eog(t, 106));
    CHECK(tok_is_eog(t, 1));
    CHECK(!tok_is_eog(t, 2));
    const int32_t turn[] = {2, 105};
    CHECK(ids_eq(t, "<bos><start_of_turn>", true, turn, 2));
    const int32_t nl[] = {108};
    CHECK(ids_eq(t, "\n\n", false, nl, 1)); /* user-defined: whole */
    static const char *const texts[] = {
        "Hello, world! How are you?",
        "  leading and trailing spaces  ",
        "tabs\tand\nnew\n\nlines\r\n",
        "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C and caf\xC3\xA9 na\xC3\xAFve",
        "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 "
        "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 \xF0\x9F\x9A\x80",
        "int main(void) { return 0; } // 12345678901234567890",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids = NULL;
        int64_t n = encode_alloc(t, texts[i], strlen(texts[i]), false, &ids);
        CHECK(n > 0);
        size_t len = 0;
        char *back = n > 0 ? decode_all(t, ids, n, &len) : NULL;
        CHECK(back && len == strlen(texts[i]) && memcmp(back, texts[i], len) == 0);
        free(back);
        free(ids);
    }
    tok_destroy(t);
    gguf_close(f);
}

TEST(tok_gemma3_golden_llama_cpp)
{
    FILE *g = fopen("tests/golden/gemma3/tokenize.jsonl", "r");
    if (!g)
        SKIP("tests/golden/gemma3/tokenize.jsonl not found");
    gguf_file *f;
    tok *t = open_gemma3(&f);
    if (!t) {
        fclose(g);
        SKIP("gemma-3-270m-q4_k_m.gguf not found (scripts/parleyctl model, or set PARLEY_GEMMA3)");
    }
    golden_tokenize(t, g);
    fclose(g);
    tok_destroy(t);
    gguf_close(f);
}
