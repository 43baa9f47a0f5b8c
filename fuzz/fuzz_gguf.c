/* fuzz_gguf.c — libFuzzer harness for the GGUF reader and what reads GGUF metadata next.
 *
 * Each input is opened with gguf_open_buffer(); when it parses, every accessor is exercised
 * (keys through the typed getters, every array element, every tensor's bytes), then the
 * tokenizer is built from it and made to encode and decode text, and the chat template is
 * detected. Any crash, sanitizer report, leak or read outside the buffer is a bug. See
 * fuzz/README.md for how to build and run it (make fuzz-gguf). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tmpl.h"
#include "tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void walk_keys(const gguf_file *f)
{
    for (uint64_t i = 0; i < gguf_n_keys(f); i++) {
        gguf_str k = gguf_key_name(f, i);
        char key[256];
        if (k.len >= sizeof key)
            continue;
        memcpy(key, k.ptr, k.len);
        key[k.len] = '\0';
        uint64_t u;
        int64_t s;
        uint32_t u32;
        double d;
        bool b;
        gguf_str str;
        gguf_array a;
        sink += gguf_get_u64(f, key, &u) + gguf_get_i64(f, key, &s) + gguf_get_u32(f, key, &u32);
        sink += gguf_get_f64(f, key, &d) + gguf_get_bool(f, key, &b);
        if (gguf_get_str(f, key, &str) == PL_OK && str.len)
            sink += (uint8_t)str.ptr[str.len - 1];
        if (gguf_get_array(f, key, &a) == PL_OK) {
            for (uint64_t j = 0; j < a.n && j < 100000; j++) {
                gguf_str e = gguf_array_str(&a, j);
                if (e.len)
                    sink += (uint8_t)e.ptr[e.len - 1];
                sink += (uint64_t)gguf_array_i64(&a, j);
                sink += (uint64_t)(gguf_array_f64(&a, j) != 0);
            }
        }
    }
}

static void walk_tensors(const gguf_file *f)
{
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (t->nbytes) /* first and last byte must be readable */
            sink += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
        char name[80];
        if (t->name.len < sizeof name) {
            memcpy(name, t->name.ptr, t->name.len);
            name[t->name.len] = '\0';
            sink += gguf_find_tensor(f, name) == t;
        }
    }
}

static void use_tokenizer(const gguf_file *f, const uint8_t *data, size_t size)
{
    tok *t = NULL;
    if (tok_create(f, &t) != PL_OK)
        return;
    static const char text[] = "<|im_start|>user\nHello,  world! It's 2024 🙂 日本<|im_end|>\n";
    int32_t ids[512];
    for (int special = 0; special < 2; special++) {
        int64_t n = tok_encode(t, text, sizeof text - 1, true, special, ids, 512);
        if (n > 512)
            n = 512;
        tok_stream s;
        tok_stream_init(&s);
        char out[4096];
        for (int64_t i = 0; i < n; i++) {
            sink += (uint64_t)tok_piece(t, ids[i], special, out, sizeof out);
            sink += (uint64_t)tok_stream_push(t, &s, ids[i], out, sizeof out);
            sink += tok_is_eog(t, ids[i]);
        }
        sink += (uint64_t)tok_stream_flush(&s, out, sizeof out);
    }
    /* the input itself as text: arbitrary bytes, invalid UTF-8 included */
    size_t len = size < 2048 ? size : 2048;
    sink += (uint64_t)tok_encode(t, (const char *)data, len, false, true, ids, 512);
    for (int32_t id = 0; id < tok_n_vocab(t) && id < 4096; id++) {
        char out[64];
        sink += (uint64_t)tok_piece(t, id, true, out, sizeof out);
    }
    tok_destroy(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    if (gguf_open_buffer(data, size, &f) != PL_OK)
        return 0;
    sink += gguf_version(f) + gguf_alignment(f) + gguf_file_size(f);
    walk_keys(f);
    walk_tensors(f);
    use_tokenizer(f, data, size);
    tmpl_kind k;
    const char *def;
    if (tmpl_detect(f, NULL, &k, &def) == PL_OK) {
        tmpl_msg m[2] = {{TMPL_SYSTEM, "s"}, {TMPL_USER, " u "}};
        free(tmpl_render(k, m, 2, def, true));
    }
    gguf_close(f);
    return 0;
}
