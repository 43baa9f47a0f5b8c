/* test_tmpl.c — chat templates: exact renderings for ChatML (with SmolLM2's default system
 * message), Llama 3 and Gemma; detection from tokenizer.chat_template markers, overrides and
 * refusals; the real SmolLM2 file (skipped when absent) is detected as ChatML with its default;
 * the Gemma rendering equals, character for character, the prompts of
 * tests/golden/gemma3/greedy.jsonl (rendered by jinja2 in tools/golden/make_golden.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "gguf.h"
#include "gguf_build.h"
#include "tmpl.h"

#define SMOL_DEFAULT "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

static void check_render(tmpl_kind k, const tmpl_msg *m, size_t n, const char *def, bool gen,
                         const char *want)
{
    char *got = tmpl_render(k, m, n, def, gen);
    CHECK_STR(got, want);
    free(got);
}

TEST(tmpl_chatml_exact)
{
    tmpl_msg one[] = {{TMPL_USER, "Hi"}};
    check_render(TMPL_CHATML, one, 1, SMOL_DEFAULT, true,
                 "<|im_start|>system\n" SMOL_DEFAULT "<|im_end|>\n"
                 "<|im_start|>user\nHi<|im_end|>\n"
                 "<|im_start|>assistant\n");
    check_render(TMPL_CHATML, one, 1, NULL, false, "<|im_start|>user\nHi<|im_end|>\n");
    tmpl_msg conv[] = {{TMPL_SYSTEM, "Be brief."},
                       {TMPL_USER, " What is 2+2? \n"},
                       {TMPL_ASSISTANT, "4"},
                       {TMPL_USER, "And 3+3?"}};
    check_render(TMPL_CHATML, conv, 4, SMOL_DEFAULT, true,
                 "<|im_start|>system\nBe brief.<|im_end|>\n"
                 "<|im_start|>user\n What is 2+2? \n<|im_end|>\n" /* ChatML keeps content as is */
                 "<|im_start|>assistant\n4<|im_end|>\n"
                 "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
                 "<|im_start|>assistant\n");
    check_render(TMPL_CHATML, NULL, 0, SMOL_DEFAULT, true,
                 "<|im_start|>system\n" SMOL_DEFAULT "<|im_end|>\n<|im_start|>assistant\n");
    check_render(TMPL_CHATML, NULL, 0, NULL, false, "");
}

TEST(tmpl_llama3_exact)
{
    tmpl_msg conv[] = {{TMPL_SYSTEM, "Be brief."},
                       {TMPL_USER, "  Hi there \n"},
                       {TMPL_ASSISTANT, "Hello!"},
                       {TMPL_USER, "\xE3\x80\x80More\t"}};
    check_render(
        TMPL_LLAMA3, conv, 4, NULL, true,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nMore<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
    tmpl_msg one[] = {{TMPL_USER, "Hi"}};
    check_render(TMPL_LLAMA3, one, 1, NULL, false,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
    tmpl_msg blank[] = {{TMPL_USER, " \n\t "}};
    check_render(TMPL_LLAMA3, blank, 1, NULL, false,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>");
}

TEST(tmpl_gemma_exact)
{
    tmpl_msg conv[] = {{TMPL_SYSTEM, "Be brief."},
                       {TMPL_USER, " Hi "},
                       {TMPL_ASSISTANT, "Hello!"},
                       {TMPL_USER, "More"}};
    check_render(TMPL_GEMMA, conv, 4, NULL, true,
                 "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                 "<start_of_turn>model\nHello!<end_of_turn>\n"
                 "<start_of_turn>user\nMore<end_of_turn>\n"
                 "<start_of_turn>model\n");
    tmpl_msg one[] = {{TMPL_USER, "Hi"}};
    check_render(TMPL_GEMMA, one, 1, NULL, true,
                 "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
}

static gguf_file *file_with_template(gb *b, const char *tmpl)
{
    gguf_file *f = NULL;
    memset(b, 0, sizeof(*b));
    gb_header(b, 3, 0, tmpl ? 2 : 1);
    gb_kv_str(b, "general.architecture", "llama");
    if (tmpl)
        gb_kv_str(b, "tokenizer.chat_template", tmpl);
    return gguf_open_buffer(b->p, b->n, &f) == PL_OK ? f : NULL;
}

TEST(tmpl_detect_families)
{
    static const struct {
        const char *tmpl;
        tmpl_kind kind;
    } cases[] = {
        {"{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n'}}{% endfor %}", TMPL_CHATML},
        {"{{ bos_token }}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>' }}",
         TMPL_LLAMA3},
        {"{{ bos_token }}{{ '<start_of_turn>' + role + '\\n' }}", TMPL_GEMMA},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gb b;
        gguf_file *f = file_with_template(&b, cases[i].tmpl);
        CHECK(f != NULL);
        tmpl_kind k = 0;
        const char *def = "x";
        CHECK_EQ_INT(tmpl_detect(f, NULL, &k, &def), PL_OK);
        CHECK_EQ_INT(k, cases[i].kind);
        CHECK(def == NULL);
        CHECK_EQ_INT(tmpl_detect(f, "gemma", &k, &def), PL_OK); /* the override wins */
        CHECK_EQ_INT(k, TMPL_GEMMA);
        CHECK_EQ_INT(tmpl_detect(f, "bogus", &k, &def), PL_INVALID);
        CHECK(strstr(pl_err_last(), "bogus") != NULL);
        gguf_close(f);
        free(b.p);
    }
    gb b;
    gguf_file *f = file_with_template(&b, "{{ messages[0]['content'] }}");
    tmpl_kind k;
    const char *def;
    CHECK_EQ_INT(tmpl_detect(f, NULL, &k, &def), PL_UNSUPPORTED);
    CHECK(strstr(pl_err_last(), "--chat-template") != NULL);
    CHECK_EQ_INT(tmpl_detect(f, "", &k, &def), PL_UNSUPPORTED);
    CHECK_EQ_INT(tmpl_detect(f, "llama3", &k, &def), PL_OK);
    CHECK_EQ_INT(k, TMPL_LLAMA3);
    gguf_close(f);
    free(b.p);
    f = file_with_template(&b, NULL);
    CHECK_EQ_INT(tmpl_detect(f, NULL, &k, &def), PL_UNSUPPORTED);
    CHECK(strstr(pl_err_last(), "--chat-template") != NULL);
    CHECK_EQ_INT(tmpl_detect(f, "chatml", &k, &def), PL_OK);
    CHECK_EQ_INT(k, TMPL_CHATML);
    CHECK(def == NULL);
    gguf_close(f);
    free(b.p);
    CHECK_EQ_INT(tmpl_parse_kind("llama3", &k), PL_OK);
    CHECK_EQ_INT(k, TMPL_LLAMA3);
    CHECK_EQ_INT(tmpl_parse_kind("ChatML", &k), PL_INVALID);
}

TEST(tmpl_smollm2_real_template)
{
    const char *path = gb_smollm2_path();
    if (!path)
        SKIP("SmolLM2-135M-Instruct.Q4_1.gguf not found (set PARLEY_SMOLLM2)");
    gguf_file *f = NULL;
    CHECK_EQ_INT(gguf_open(path, &f), PL_OK);
    if (!f)
        return;
    tmpl_kind k = 0;
    const char *def = NULL;
    CHECK_EQ_INT(tmpl_detect(f, NULL, &k, &def), PL_OK);
    CHECK_EQ_INT(k, TMPL_CHATML);
    CHECK_STR(def, SMOL_DEFAULT);
    /* the default system message appears in the template exactly as we render it */
    gguf_str t;
    CHECK_EQ_INT(gguf_get_str(f, "tokenizer.chat_template", &t), PL_OK);
    const char *lit = "'<|im_start|>system\n" SMOL_DEFAULT "<|im_end|>\n'";
    CHECK(t.len > strlen(lit) && memmem(t.ptr, t.len, lit, strlen(lit)) != NULL);
    CHECK(memmem(t.ptr, t.len, "'<|im_start|>assistant\n'", 24) != NULL);
    gguf_close(f);
}

/* --- Gemma against the golden prompts -------------------------------------------------------- */

/* Decodes the JSON string starting at p (just after its opening quote) into a malloc'd buffer;
 * *endp is set after the closing quote. Handles the escapes json.dumps writes. NULL on error. */
static char *json_str(const char *p, const char **endp)
{
    char *o = malloc(strlen(p) + 1);
    size_t n = 0;
    while (o && *p && *p != '"') {
        if (*p != '\\') {
            o[n++] = *p++;
            continue;
        }
        p++;
        char e = *p++;
        const char *simple = "n\nt\tr\rb\bf\f//\\\\\"\""; /* pairs: escape, char */
        const char *hit = e ? strchr(simple, e) : NULL;
        if (hit && (hit - simple) % 2 == 0) {
            o[n++] = hit[1];
            continue;
        }
        if (e != 'u') {
            free(o);
            return NULL;
        }
        unsigned cp = 0, lo = 0;
        if (sscanf(p, "%4x", &cp) != 1)
            break;
        p += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u' &&
            sscanf(p + 2, "%4x", &lo) == 1) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        if (cp < 0x80) {
            o[n++] = (char)cp;
        } else if (cp < 0x800) {
            o[n++] = (char)(0xC0 | (cp >> 6));
            o[n++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            o[n++] = (char)(0xE0 | (cp >> 12));
            o[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            o[n++] = (char)(0x80 | (cp & 0x3F));
        } else {
            o[n++] = (char)(0xF0 | (cp >> 18));
            o[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            o[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            o[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    if (!o || *p != '"') {
        free(o);
        return NULL;
    }
    o[n] = '\0';
    *endp = p + 1;
    return o;
}

TEST(tmpl_gemma_matches_golden_prompts)
{
    FILE *f = fopen("tests/golden/gemma3/greedy.jsonl", "rb");
    if (!f)
        SKIP("tests/golden/gemma3/greedy.jsonl not found (run from the repository root)");
    static char line[1 << 20];
    int n_lines = 0, n_same = 0;
    while (fgets(line, sizeof line, f)) {
        tmpl_msg msgs[8];
        char *texts[8];
        size_t n = 0;
        const char *p = strstr(line, "\"messages\": [");
        const char *pt = strstr(line, "\"prompt_text\": \"");
        const char *stop = pt;
        while (p && n < 8) {
            const char *r = strstr(p, "\"role\": \"");
            if (!r || (stop && r > stop))
                break;
            r += 9;
            tmpl_role role = strncmp(r, "system", 6) == 0 ? TMPL_SYSTEM
                             : strncmp(r, "user", 4) == 0 ? TMPL_USER
                                                          : TMPL_ASSISTANT;
            const char *c = strstr(r, "\"content\": \"");
            texts[n] = c ? json_str(c + 12, &p) : NULL;
            if (!texts[n])
                break;
            msgs[n] = (tmpl_msg){role, texts[n]};
            n++;
        }
        const char *end;
        char *want = pt ? json_str(pt + 16, &end) : NULL;
        CHECK(want != NULL && n > 0);
        char *got = want ? tmpl_render(TMPL_GEMMA, msgs, n, NULL, true) : NULL;
        n_lines++;
        if (got && strcmp(got, want) == 0)
            n_same++;
        else if (want)
            fprintf(stderr, "  golden prompt %d differs:\n  ours: %.200s\n  want: %.200s\n",
                    n_lines, got ? got : "(null)", want);
        free(got);
        free(want);
        for (size_t i = 0; i < n; i++)
            free(texts[i]);
    }
    fclose(f);
    fprintf(stderr, "  %d/%d golden Gemma prompts rendered identically\n", n_same, n_lines);
    CHECK(n_lines >= 20);
    CHECK_EQ_INT(n_same, n_lines);
}
