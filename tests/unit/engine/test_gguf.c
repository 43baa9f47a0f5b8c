/* test_gguf.c — the GGUF reader: a valid file built here reads back exactly; every way of
 * breaking it (truncation at every byte, bad magic and version, unknown types, misaligned or
 * out-of-file tensors, huge lengths and counts, nesting, duplicates, overflowing dims) is refused
 * with the right status and a message naming the culprit; random corruption never crashes; the
 * real SmolLM2 file (skipped when absent) has the expected shape. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "gguf.h"
#include "gguf_build.h"

/* A small valid v3 file: 5 keys, 3 tensors (F32 [8], Q8_0 [32,2], F16 [4,2]), data at the end
 * with no trailing bytes, so any truncation cuts something. Offsets of interesting fields are
 * returned so tests can corrupt them. */
typedef struct sample {
    gb b;
    size_t off_t1_type, off_t1_offset, off_t2_dims, off_t2_name, off_key0_len, off_arr_n;
    size_t data_off;
} sample;

static void make_sample(sample *s, uint32_t version)
{
    memset(s, 0, sizeof(*s));
    gb *b = &s->b;
    gb_header(b, version, 3, 5);
    s->off_key0_len = b->n;
    gb_kv_str(b, "general.architecture", "llama");
    gb_kv_u32(b, "llama.block_count", 2);
    gb_kv_f32(b, "llama.rope.freq_base", 10000.0f);
    static const char *const toks[] = {"a", "bc", ""};
    gb_str(b, "tokenizer.ggml.tokens");
    gb_u32(b, GGUF_ARRAY);
    gb_u32(b, GGUF_STRING);
    s->off_arr_n = b->n;
    gb_u64(b, 3);
    for (int i = 0; i < 3; i++)
        gb_str(b, toks[i]);
    static const int32_t types[] = {1, -2, 3, 4};
    gb_kv_i32s(b, "tokenizer.ggml.token_type", types, 4);
    uint64_t ne0[1] = {8}, ne1[2] = {32, 2}, ne2[2] = {4, 2};
    gb_tensor(b, "norm.weight", 1, ne0, GGML_F32, 0);
    s->off_t2_name = b->n;
    gb_str(b, "w.weight");
    gb_u32(b, 2);
    s->off_t2_dims = b->n;
    gb_u64(b, ne1[0]);
    gb_u64(b, ne1[1]);
    s->off_t1_type = b->n;
    gb_u32(b, GGML_Q8_0);
    s->off_t1_offset = b->n;
    gb_u64(b, 32);
    gb_tensor(b, "h.weight", 2, ne2, GGML_F16, 128);
    gb_pad(b, 32);
    s->data_off = b->n;
    for (int i = 0; i < 8; i++) { /* norm: 8 floats = 32 bytes */
        float v = (float)i;
        gb_bytes(b, &v, 4);
    }
    gb_fill(b, 68, 0x11); /* w: 2 rows × 34 bytes at 32 */
    gb_fill(b, 128 - 100, 0);
    gb_fill(b, 16, 0x22); /* h: 8 halves at 128 */
}

static pl_status open_buf(const gb *b, gguf_file **f)
{
    return gguf_open_buffer(b->p, b->n, f);
}

static void put_u64(gb *b, size_t off, uint64_t v)
{
    memcpy(b->p + off, &v, 8);
}

static void put_u32(gb *b, size_t off, uint32_t v)
{
    memcpy(b->p + off, &v, 4);
}

TEST(gguf_valid_buffer_reads_back)
{
    sample s;
    make_sample(&s, 3);
    gguf_file *f = NULL;
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_OK);
    if (!f) {
        free(s.b.p);
        return;
    }
    CHECK_EQ_INT(gguf_version(f), 3);
    CHECK_EQ_INT(gguf_alignment(f), 32);
    CHECK_EQ_INT(gguf_file_size(f), s.b.n);
    CHECK_EQ_INT(gguf_n_keys(f), 5);
    CHECK_EQ_INT(gguf_find_key(f, "llama.block_count"), 1);
    CHECK_EQ_INT(gguf_find_key(f, "nope"), -1);
    CHECK(gguf_str_eq(gguf_key_name(f, 0), "general.architecture"));
    CHECK_EQ_INT(gguf_key_type(f, 3), GGUF_ARRAY);
    gguf_str arch;
    CHECK_EQ_INT(gguf_get_str(f, "general.architecture", &arch), PL_OK);
    CHECK(gguf_str_eq(arch, "llama"));
    uint32_t u = 0;
    uint64_t u64 = 0;
    int64_t i64 = 0;
    double d = 0;
    CHECK_EQ_INT(gguf_get_u32(f, "llama.block_count", &u), PL_OK);
    CHECK_EQ_INT(u, 2);
    CHECK_EQ_INT(gguf_get_u64(f, "llama.block_count", &u64), PL_OK);
    CHECK_EQ_INT(gguf_get_i64(f, "llama.block_count", &i64), PL_OK);
    CHECK_EQ_INT(i64, 2);
    CHECK_EQ_INT(gguf_get_f64(f, "llama.rope.freq_base", &d), PL_OK);
    CHECK_NEAR(d, 10000.0, 0);
    CHECK_EQ_INT(gguf_get_u32(f, "llama.rope.freq_base", &u), PL_INVALID);
    CHECK(strstr(pl_err_last(), "llama.rope.freq_base") != NULL);
    CHECK_EQ_INT(gguf_get_u32(f, "missing.key", &u), PL_NOT_FOUND);
    CHECK(strstr(pl_err_last(), "missing.key") != NULL);
    CHECK_EQ_INT(gguf_get_u32_or(f, "missing.key", 7, &u), PL_OK);
    CHECK_EQ_INT(u, 7);
    CHECK_EQ_INT(gguf_get_f64_or(f, "missing.key", 1.5, &d), PL_OK);
    CHECK_NEAR(d, 1.5, 0);
    bool bv;
    CHECK_EQ_INT(gguf_get_bool(f, "llama.block_count", &bv), PL_INVALID);
    gguf_array a;
    CHECK_EQ_INT(gguf_get_array(f, "tokenizer.ggml.tokens", &a), PL_OK);
    CHECK_EQ_INT(a.type, GGUF_STRING);
    CHECK_EQ_INT(a.n, 3);
    CHECK(gguf_str_eq(gguf_array_str(&a, 1), "bc"));
    CHECK(gguf_str_eq(gguf_array_str(&a, 2), ""));
    CHECK(gguf_array_str(&a, 3).ptr == NULL);
    CHECK_EQ_INT(gguf_get_array(f, "tokenizer.ggml.token_type", &a), PL_OK);
    CHECK_EQ_INT(a.n, 4);
    CHECK_EQ_INT(gguf_array_i64(&a, 1), -2);
    CHECK_NEAR(gguf_array_f64(&a, 3), 4.0, 0);
    CHECK_EQ_INT(gguf_get_u32(f, "tokenizer.ggml.tokens", &u), PL_INVALID);

    CHECK_EQ_INT(gguf_n_tensors(f), 3);
    const gguf_tensor *t = gguf_find_tensor(f, "w.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(t->type, GGML_Q8_0);
        CHECK_EQ_INT(t->n_dims, 2);
        CHECK_EQ_INT(t->ne[0], 32);
        CHECK_EQ_INT(t->ne[1], 2);
        CHECK_EQ_INT(t->ne[2], 1);
        CHECK_EQ_INT(t->nbytes, 68);
        CHECK(t->data == s.b.p + s.data_off + 32);
    }
    t = gguf_tensor_at(f, 0);
    CHECK(t && gguf_str_eq(t->name, "norm.weight") && t->nbytes == 32);
    if (t) {
        float v;
        memcpy(&v, (const char *)t->data + 12, 4);
        CHECK_NEAR(v, 3.0, 0);
    }
    CHECK(gguf_find_tensor(f, "h.weight") && gguf_find_tensor(f, "h.weight")->nbytes == 16);
    CHECK(gguf_find_tensor(f, "x") == NULL);
    CHECK(gguf_tensor_at(f, 3) == NULL);
    CHECK_STR(gguf_ttype_name(GGML_Q4_1), "q4_1");
    CHECK_STR(gguf_ttype_name((gguf_ttype)77), "unknown");
    gguf_close(f);
    gguf_close(NULL);
    free(s.b.p);
}

TEST(gguf_v2_file_opens)
{
    sample s;
    make_sample(&s, 2);
    gguf_file *f = NULL;
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_OK);
    CHECK(f && gguf_version(f) == 2);
    gguf_close(f);
    free(s.b.p);
}

TEST(gguf_truncated_at_every_byte_is_corrupt)
{
    sample s;
    make_sample(&s, 3);
    int bad = 0;
    for (size_t n = 0; n < s.b.n; n++) {
        gguf_file *f = NULL;
        pl_status st = gguf_open_buffer(s.b.p, n, &f);
        if (st != PL_CORRUPT || f != NULL)
            bad++;
        gguf_close(f);
    }
    CHECK_EQ_INT(bad, 0);
    free(s.b.p);
}

TEST(gguf_bad_magic_and_version)
{
    sample s;
    make_sample(&s, 3);
    gguf_file *f = NULL;
    s.b.p[0] = 'X';
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "magic") != NULL);
    s.b.p[0] = 'G';
    put_u32(&s.b, 4, 1);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_UNSUPPORTED);
    CHECK(strstr(pl_err_last(), "version 1") != NULL);
    put_u32(&s.b, 4, 4);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_UNSUPPORTED);
    CHECK(f == NULL);
    free(s.b.p);
}

TEST(gguf_unknown_tensor_type_is_unsupported)
{
    sample s;
    make_sample(&s, 3);
    gguf_file *f = NULL;
    put_u32(&s.b, s.off_t1_type, 4); /* a removed ggml type (Q4_2) */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_UNSUPPORTED);
    CHECK(strstr(pl_err_last(), "w.weight") != NULL);
    put_u32(&s.b, s.off_t1_type, 99);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_UNSUPPORTED);
    CHECK(f == NULL);
    free(s.b.p);
}

TEST(gguf_misaligned_offset_and_past_eof)
{
    sample s;
    make_sample(&s, 3);
    gguf_file *f = NULL;
    put_u64(&s.b, s.off_t1_offset, 33);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "aligned") != NULL);
    CHECK(strstr(pl_err_last(), "w.weight") != NULL);
    put_u64(&s.b, s.off_t1_offset, 160); /* 160 + 68 > 144 bytes of data */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "past the end") != NULL);
    CHECK(strstr(pl_err_last(), "w.weight") != NULL);
    put_u64(&s.b, s.off_t1_offset, UINT64_MAX - 31); /* aligned, wraps if added carelessly */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(f == NULL);
    free(s.b.p);
}

TEST(gguf_huge_lengths_and_counts)
{
    sample s;
    make_sample(&s, 3);
    gguf_file *f = NULL;
    put_u64(&s.b, s.off_key0_len, 1ull << 62);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    put_u64(&s.b, s.off_key0_len, UINT64_MAX);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    free(s.b.p);

    make_sample(&s, 3);
    put_u64(&s.b, s.off_arr_n, 1ull << 61); /* a string array that cannot fit */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "tokenizer.ggml.tokens") != NULL);
    put_u64(&s.b, 8, 1ull << 40); /* tensor count */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    put_u64(&s.b, 8, 3);
    put_u64(&s.b, 16, UINT64_MAX); /* key count */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(f == NULL);
    free(s.b.p);
}

TEST(gguf_bad_dims)
{
    sample s;
    gguf_file *f = NULL;
    make_sample(&s, 3);
    put_u64(&s.b, s.off_t2_dims, 0);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "zero") != NULL);
    put_u64(&s.b, s.off_t2_dims, 33); /* not a multiple of the Q8_0 block */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    put_u64(&s.b, s.off_t2_dims, 1ull << 40);
    put_u64(&s.b, s.off_t2_dims + 8, 1ull << 40); /* product overflows int64 */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "overflow") != NULL);
    put_u64(&s.b, s.off_t2_dims, 32);
    put_u64(&s.b, s.off_t2_dims + 8, 2);
    put_u32(&s.b, s.off_t2_dims - 4, 5); /* n_dims */
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    put_u32(&s.b, s.off_t2_dims - 4, 0);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(f == NULL);
    free(s.b.p);
}

TEST(gguf_duplicates_refused)
{
    sample s;
    gguf_file *f = NULL;
    make_sample(&s, 3);
    /* rename tensor 2 "w.weight" to "norm.wei"? keep the length: use "h.weight"'s twin */
    memcpy(s.b.p + s.off_t2_name + 8, "h.weight", 8);
    CHECK_EQ_INT(open_buf(&s.b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "duplicate tensor") != NULL);
    free(s.b.p);

    gb b = {0};
    gb_header(&b, 3, 0, 2);
    gb_kv_u32(&b, "a.b", 1);
    gb_kv_u32(&b, "a.b", 2);
    CHECK_EQ_INT(open_buf(&b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "duplicate metadata key 'a.b'") != NULL);
    free(b.p);
}

TEST(gguf_value_types_and_nesting)
{
    gguf_file *f = NULL;
    gb b = {0};
    gb_header(&b, 3, 0, 1);
    gb_str(&b, "k");
    gb_u32(&b, 13); /* unknown value type */
    gb_u32(&b, 0);
    CHECK_EQ_INT(open_buf(&b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "'k'") != NULL);
    free(b.p);

    /* an array of arrays (one level) is fine; an array in an array in an array is not */
    memset(&b, 0, sizeof b);
    gb_header(&b, 3, 0, 1);
    gb_str(&b, "nested");
    gb_u32(&b, GGUF_ARRAY);
    gb_u32(&b, GGUF_ARRAY);
    gb_u64(&b, 2);
    for (int i = 0; i < 2; i++) {
        gb_u32(&b, GGUF_U16);
        gb_u64(&b, 2);
        gb_u32(&b, 0x00050004);
    }
    CHECK_EQ_INT(open_buf(&b, &f), PL_OK);
    gguf_close(f);
    f = NULL;
    free(b.p);

    memset(&b, 0, sizeof b);
    gb_header(&b, 3, 0, 1);
    gb_str(&b, "deep");
    gb_u32(&b, GGUF_ARRAY);
    gb_u32(&b, GGUF_ARRAY);
    gb_u64(&b, 1);
    gb_u32(&b, GGUF_ARRAY);
    gb_u64(&b, 1);
    gb_u32(&b, GGUF_U8);
    gb_u64(&b, 1);
    gb_u32(&b, 0);
    CHECK_EQ_INT(open_buf(&b, &f), PL_CORRUPT);
    CHECK(strstr(pl_err_last(), "nested") != NULL);
    free(b.p);

    memset(&b, 0, sizeof b); /* bool must be 0 or 1 */
    gb_header(&b, 3, 0, 1);
    gb_kv_bool(&b, "flag", 2);
    CHECK_EQ_INT(open_buf(&b, &f), PL_CORRUPT);
    free(b.p);

    memset(&b, 0, sizeof b); /* no keys, no tensors: a valid, empty file */
    gb_header(&b, 3, 0, 0);
    CHECK_EQ_INT(open_buf(&b, &f), PL_OK);
    CHECK(f && gguf_n_tensors(f) == 0 && gguf_n_keys(f) == 0);
    gguf_close(f);
    free(b.p);
}

TEST(gguf_alignment_key)
{
    gguf_file *f = NULL;
    for (int variant = 0; variant < 4; variant++) {
        gb b = {0};
        uint64_t ne[1] = {16};
        gb_header(&b, 3, 1, 1);
        if (variant == 0)
            gb_kv_u32(&b, "general.alignment", 64);
        else if (variant == 1)
            gb_kv_u32(&b, "general.alignment", 48);
        else if (variant == 2)
            gb_kv_u32(&b, "general.alignment", 0);
        else
            gb_kv_f32(&b, "general.alignment", 64.0f);
        gb_tensor(&b, "t", 1, ne, GGML_F32, 0);
        gb_pad(&b, 64);
        gb_fill(&b, 64, 1);
        pl_status st = open_buf(&b, &f);
        if (variant == 0) {
            CHECK_EQ_INT(st, PL_OK);
            CHECK(f && gguf_alignment(f) == 64);
            CHECK(f && gguf_tensor_at(f, 0)->data == b.p + 64 * ((b.n - 64) / 64));
            gguf_close(f);
            f = NULL;
        } else {
            CHECK_EQ_INT(st, PL_CORRUPT);
            CHECK(strstr(pl_err_last(), "alignment") != NULL);
        }
        free(b.p);
    }
}

TEST(gguf_random_corruption_never_crashes)
{
    sample s;
    make_sample(&s, 3);
    uint8_t *copy = malloc(s.b.n);
    uint64_t r = 12345;
    int opened = 0, odd = 0;
    for (int iter = 0; iter < 20000 && copy; iter++) {
        memcpy(copy, s.b.p, s.b.n);
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            size_t pos = (size_t)(r % s.b.n);
            copy[pos] = (uint8_t)(r >> 32);
        }
        gguf_file *f = NULL;
        pl_status st = gguf_open_buffer(copy, s.b.n, &f);
        if (st == PL_OK) {
            opened++;
            /* walk everything the accessors expose */
            for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
                const gguf_tensor *t = gguf_tensor_at(f, i);
                if ((const uint8_t *)t->data < copy ||
                    (const uint8_t *)t->data + t->nbytes > copy + s.b.n)
                    odd++;
            }
            gguf_close(f);
        } else if (st != PL_CORRUPT && st != PL_UNSUPPORTED) {
            odd++;
        }
    }
    CHECK_EQ_INT(odd, 0);
    CHECK(opened > 0);
    free(copy);
    free(s.b.p);
}

TEST(gguf_open_missing_file_is_io)
{
    gguf_file *f = NULL;
    CHECK_EQ_INT(gguf_open("/nonexistent/dir/model.gguf", &f), PL_IO);
    CHECK(strstr(pl_err_last(), "/nonexistent/dir/model.gguf") != NULL);
    CHECK(f == NULL);
}

TEST(gguf_real_smollm2)
{
    const char *path = gb_smollm2_path();
    if (!path)
        SKIP("SmolLM2-135M-Instruct.Q4_1.gguf not found (set PARLEY_SMOLLM2)");
    gguf_file *f = NULL;
    CHECK_EQ_INT(gguf_open(path, &f), PL_OK);
    if (!f)
        return;
    CHECK_EQ_INT(gguf_version(f), 3);
    CHECK_EQ_INT(gguf_n_tensors(f), 272);
    gguf_str s;
    CHECK_EQ_INT(gguf_get_str(f, "general.architecture", &s), PL_OK);
    CHECK(gguf_str_eq(s, "llama"));
    uint32_t v = 0;
    CHECK_EQ_INT(gguf_get_u32(f, "llama.block_count", &v), PL_OK);
    CHECK_EQ_INT(v, 30);
    CHECK_EQ_INT(gguf_get_u32(f, "llama.embedding_length", &v), PL_OK);
    CHECK_EQ_INT(v, 576);
    double eps = 0;
    CHECK_EQ_INT(gguf_get_f64(f, "llama.attention.layer_norm_rms_epsilon", &eps), PL_OK);
    CHECK_NEAR(eps, 1e-5, 1e-9);
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    CHECK(t && t->type == GGML_Q8_0 && t->ne[0] == 576 && t->ne[1] == 49152);
    t = gguf_find_tensor(f, "blk.0.ffn_down.weight");
    CHECK(t && t->type == GGML_Q4_1 && t->ne[0] == 1536 && t->ne[1] == 576);
    CHECK(gguf_find_tensor(f, "output.weight") == NULL); /* tied embeddings */
    gguf_array a;
    CHECK_EQ_INT(gguf_get_array(f, "tokenizer.ggml.merges", &a), PL_OK);
    CHECK_EQ_INT(a.n, 48900);
    CHECK(gguf_str_eq(gguf_array_str(&a, 0), "\xC4\xA0 t"));
    gguf_close(f);
}
