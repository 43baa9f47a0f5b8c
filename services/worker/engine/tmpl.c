/* tmpl.c — renders a conversation in the prompt format a model family was trained on.
 *
 * No Jinja here: each family's format is written out by hand, following the templates the
 * models ship (checked against their tokenizer.chat_template strings):
 *   ChatML (SmolLM2, Qwen2): "<|im_start|>{role}\n{content}<|im_end|>\n" per message, content
 *     as is; when the first message is not a system message, a model's built-in default system
 *     message (if its template has one) goes first; generation prompt "<|im_start|>assistant\n".
 *   Llama 3: "<|begin_of_text|>" once, then "<|start_header_id|>{role}<|end_header_id|>\n\n"
 *     + trim(content) + "<|eot_id|>"; prompt "<|start_header_id|>assistant<|end_header_id|>\n\n".
 *   Gemma (2/3): "<bos>", a leading system message becomes a prefix "{system}\n\n" of the first
 *     turn, "<start_of_turn>{user|model}\n" + trim(content) + "<end_of_turn>\n"; prompt
 *     "<start_of_turn>model\n".
 * The BOS text is part of the Llama 3 and Gemma templates, so it is rendered; encode such a
 * prompt with parse_special and without adding another BOS.
 *
 * Thread-safety: stateless; tmpl_render allocates its result. Not here: tool calls, multimodal
 * content, the date header of Llama 3.1+ templates. */
#include "tmpl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Built-in default system messages of known ChatML templates (found verbatim in the template). */
static const char *const k_default_systems[] = {
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
};

pl_status tmpl_parse_kind(const char *name, tmpl_kind *kind)
{
    if (!name || !kind)
        return PL_ERRF(PL_INVALID, "tmpl: no template name");
    if (strcmp(name, "chatml") == 0)
        *kind = TMPL_CHATML;
    else if (strcmp(name, "llama3") == 0)
        *kind = TMPL_LLAMA3;
    else if (strcmp(name, "gemma") == 0)
        *kind = TMPL_GEMMA;
    else
        return PL_ERRF(PL_INVALID,
                       "tmpl: unknown chat template '%s' (expected chatml, llama3 or gemma)", name);
    return PL_OK;
}

static bool str_has(gguf_str s, const char *needle)
{
    size_t n = strlen(needle);
    return s.ptr && s.len >= n && memmem(s.ptr, s.len, needle, n) != NULL;
}

pl_status tmpl_detect(const gguf_file *f, const char *override, tmpl_kind *kind,
                      const char **default_system)
{
    if (!kind || !default_system)
        return PL_ERRF(PL_INVALID, "tmpl_detect: bad arguments");
    *default_system = NULL;
    gguf_str t = {NULL, 0};
    bool have = false;
    if (f && gguf_find_key(f, "tokenizer.chat_template") >= 0) {
        pl_status st = gguf_get_str(f, "tokenizer.chat_template", &t);
        if (st != PL_OK)
            return st;
        have = true;
    }
    if (override && *override) {
        pl_status st = tmpl_parse_kind(override, kind);
        if (st != PL_OK)
            return st;
    } else if (!have) {
        return PL_ERRF(PL_UNSUPPORTED, "tmpl: the model has no tokenizer.chat_template; choose "
                                       "one with --chat-template chatml|llama3|gemma");
    } else if (str_has(t, "<|im_start|>")) {
        *kind = TMPL_CHATML;
    } else if (str_has(t, "<|start_header_id|>")) {
        *kind = TMPL_LLAMA3;
    } else if (str_has(t, "<start_of_turn>")) {
        *kind = TMPL_GEMMA;
    } else {
        return PL_ERRF(PL_UNSUPPORTED, "tmpl: the model's chat template is not a known family; "
                                       "choose one with --chat-template chatml|llama3|gemma");
    }
    if (*kind == TMPL_CHATML && have) {
        for (size_t i = 0; i < sizeof k_default_systems / sizeof k_default_systems[0]; i++) {
            if (str_has(t, k_default_systems[i])) {
                *default_system = k_default_systems[i];
                break;
            }
        }
    }
    return PL_OK;
}

/* --- rendering ------------------------------------------------------------------------------ */

typedef struct buf {
    char *p;
    size_t n, cap;
    bool oom;
} buf;

static void put_n(buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1)
            c *= 2;
        char *np = realloc(b->p, c);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void put(buf *b, const char *s)
{
    put_n(b, s, strlen(s));
}

/* Length of the whitespace code point at s (as Python's str.isspace, which Jinja's trim uses),
 * 0 when s does not start with one. */
static size_t space_len(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (s[0] == ' ' || (s[0] >= 0x09 && s[0] <= 0x0D) || (s[0] >= 0x1C && s[0] <= 0x1F))
        return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0))
        return 2;
    if (n >= 3) {
        uint32_t cp =
            ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if ((s[0] & 0xF0) != 0xE0 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
            cp == 0x202F || cp == 0x205F || cp == 0x3000)
            return 3;
    }
    return 0;
}

/* Appends `s` without leading and trailing whitespace (Jinja's `trim`). */
static void put_trimmed(buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), a = 0, k;
    while ((k = space_len(p + a, n - a)) > 0)
        a += k;
    size_t end = a, i = a;
    while (i < n) { /* remember the end of the last non-space code point */
        k = space_len(p + i, n - i);
        if (k) {
            i += k;
            continue;
        }
        i++;
        while (i < n && (p[i] & 0xC0) == 0x80)
            i++;
        end = i;
    }
    put_n(b, s + a, end - a);
}

static const char *role_name(tmpl_role r, bool gemma)
{
    switch (r) {
    case TMPL_SYSTEM:
        return "system";
    case TMPL_USER:
        return "user";
    case TMPL_ASSISTANT:
        return gemma ? "model" : "assistant";
    }
    return "user";
}

static void render_chatml(buf *b, const tmpl_msg *m, size_t n, const char *def_sys, bool gen)
{
    if (def_sys && (n == 0 || m[0].role != TMPL_SYSTEM)) {
        put(b, "<|im_start|>system\n");
        put(b, def_sys);
        put(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        put(b, "<|im_start|>");
        put(b, role_name(m[i].role, false));
        put(b, "\n");
        put(b, m[i].content ? m[i].content : "");
        put(b, "<|im_end|>\n");
    }
    if (gen)
        put(b, "<|im_start|>assistant\n");
}

static void render_llama3(buf *b, const tmpl_msg *m, size_t n, const char *def_sys, bool gen)
{
    bool first = true;
    if (def_sys && (n == 0 || m[0].role != TMPL_SYSTEM)) {
        put(b, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n");
        put_trimmed(b, def_sys);
        put(b, "<|eot_id|>");
        first = false;
    }
    for (size_t i = 0; i < n; i++) {
        if (first)
            put(b, "<|begin_of_text|>");
        first = false;
        put(b, "<|start_header_id|>");
        put(b, role_name(m[i].role, false));
        put(b, "<|end_header_id|>\n\n");
        put_trimmed(b, m[i].content ? m[i].content : "");
        put(b, "<|eot_id|>");
    }
    if (gen)
        put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void render_gemma(buf *b, const tmpl_msg *m, size_t n, const char *def_sys, bool gen)
{
    put(b, "<bos>");
    const char *prefix = def_sys;
    size_t i = 0;
    if (n > 0 && m[0].role == TMPL_SYSTEM) {
        prefix = m[0].content ? m[0].content : "";
        i = 1;
    }
    for (bool first = true; i < n; i++, first = false) {
        put(b, "<start_of_turn>");
        put(b, role_name(m[i].role, true));
        put(b, "\n");
        if (first && prefix) {
            put(b, prefix);
            put(b, "\n\n");
        }
        put_trimmed(b, m[i].content ? m[i].content : "");
        put(b, "<end_of_turn>\n");
    }
    if (gen)
        put(b, "<start_of_turn>model\n");
}

char *tmpl_render(tmpl_kind kind, const tmpl_msg *msgs, size_t n, const char *default_system,
                  bool add_generation_prompt)
{
    buf b = {0};
    put(&b, ""); /* an empty conversation still renders to "" */
    if (!msgs)
        n = 0;
    switch (kind) {
    case TMPL_CHATML:
        render_chatml(&b, msgs, n, default_system, add_generation_prompt);
        break;
    case TMPL_LLAMA3:
        render_llama3(&b, msgs, n, default_system, add_generation_prompt);
        break;
    case TMPL_GEMMA:
        render_gemma(&b, msgs, n, default_system, add_generation_prompt);
        break;
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
