/* generate.c — parley-generate: run one prompt through the engine and stream the continuation.
 *
 *   parley-generate --model PATH [--prompt TEXT | [--system S] --user U] [--max-tokens N]
 *                   [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]
 *                   [--seed N] [--threads N] [--chat-template NAME] [--json]
 *
 * With --prompt the text is tokenised as is (special tokens such as <|im_start|> are parsed);
 * with --user (and optionally --system) it is rendered through the model's chat template first.
 * Text goes to stdout as it is generated (UTF-8 safe: bytes of an unfinished character are held
 * back); --json prints one JSON object instead: prompt and generated token ids and the text.
 * Timings go to stderr. Single-threaded driver; the engine uses --threads workers. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "sample.h"
#include "tmpl.h"
#include "tok.h"

typedef struct gen_opts {
    const char *model, *prompt, *system, *user, *chat_template;
    int max_tokens, threads;
    bool json;
    sample_params sp;
} gen_opts;

static void usage(FILE *f)
{
    fputs("usage: parley-generate --model PATH [--prompt TEXT | [--system S] --user U]\n"
          "         [--max-tokens N (128)] [--temperature T (0 = greedy)] [--top-k K] [--top-p P]\n"
          "         [--min-p P] [--repeat-penalty R] [--seed N] [--threads N]\n"
          "         [--chat-template chatml|llama3|gemma] [--json]\n",
          f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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

static bool parse_float(const char *s, float *v)
{
    char *end;
    errno = 0;
    float x = strtof(s, &end);
    if (errno || end == s || *end)
        return false;
    *v = x;
    return true;
}

/* Returns 0 on success, 2 on a usage error (message printed). */
static int parse_args(int argc, char **argv, gen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_tokens = 128;
    sample_params_default(&o->sp);
    o->sp.temperature = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "parley-generate: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        long n;
        float f;
        if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--system")) {
            o->system = v;
        } else if (!strcmp(a, "--user")) {
            o->user = v;
        } else if (!strcmp(a, "--chat-template")) {
            o->chat_template = v;
        } else if (!strcmp(a, "--max-tokens") && parse_long(v, 1, 1 << 20, &n)) {
            o->max_tokens = (int)n;
        } else if (!strcmp(a, "--threads") && parse_long(v, 1, 1024, &n)) {
            o->threads = (int)n;
        } else if (!strcmp(a, "--seed") && parse_long(v, 0, LONG_MAX, &n)) {
            o->sp.seed = (uint64_t)n;
            o->sp.has_seed = true;
        } else if (!strcmp(a, "--top-k") && parse_long(v, 0, 1 << 20, &n)) {
            o->sp.top_k = (int32_t)n;
        } else if (!strcmp(a, "--temperature") && parse_float(v, &f)) {
            o->sp.temperature = f;
        } else if (!strcmp(a, "--top-p") && parse_float(v, &f)) {
            o->sp.top_p = f;
        } else if (!strcmp(a, "--min-p") && parse_float(v, &f)) {
            o->sp.min_p = f;
        } else if (!strcmp(a, "--repeat-penalty") && parse_float(v, &f)) {
            o->sp.repetition_penalty = f;
        } else {
            fprintf(stderr, "parley-generate: bad option or value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (!o->model) {
        fputs("parley-generate: --model is required\n", stderr);
        usage(stderr);
        return 2;
    }
    if (!!o->prompt == !!o->user) {
        fputs("parley-generate: give either --prompt or --user\n", stderr);
        return 2;
    }
    if (o->prompt && o->system) {
        fputs("parley-generate: --system goes with --user, not --prompt\n", stderr);
        return 2;
    }
    if (sample_params_check(&o->sp) != PL_OK) {
        fprintf(stderr, "parley-generate: %s\n", pl_err_last());
        return 2;
    }
    return 0;
}

/* Builds the prompt text: as given, or rendered through the chat template (malloc'd). */
static char *prompt_text(const eng_model *m, const gen_opts *o)
{
    if (o->prompt)
        return strdup(o->prompt);
    tmpl_kind kind;
    const char *def_sys;
    if (eng_model_tmpl(m, &kind, &def_sys) != PL_OK) {
        fprintf(stderr, "parley-generate: %s\n", pl_err_last());
        return NULL;
    }
    tmpl_msg msgs[2];
    size_t n = 0;
    if (o->system)
        msgs[n++] = (tmpl_msg){TMPL_SYSTEM, o->system};
    msgs[n++] = (tmpl_msg){TMPL_USER, o->user};
    char *s = tmpl_render(kind, msgs, n, def_sys, true);
    if (!s)
        fputs("parley-generate: out of memory rendering the chat template\n", stderr);
    return s;
}

static void json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch == '\r')
            fputs("\\r", f);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_ids(FILE *f, const int32_t *ids, int64_t n)
{
    fputc('[', f);
    for (int64_t i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", ids[i]);
    fputc(']', f);
}

int main(int argc, char **argv)
{
    gen_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;

    eng_model *m = NULL;
    eng_ctx *c = NULL;
    sampler *smp = NULL;
    char *text = NULL, *out_text = NULL;
    int32_t *ids = NULL, *gen = NULL;
    float *logits = NULL;
    rc = 1;

    eng_model_opts mo = {.chat_template = o.chat_template};
    if (eng_model_load(o.model, &mo, &m) != PL_OK) {
        fprintf(stderr, "parley-generate: %s\n", pl_err_last());
        goto done;
    }
    eng_model_info info;
    eng_model_get_info(m, &info);
    const tok *tk = eng_model_tok(m);
    if (!(text = prompt_text(m, &o)))
        goto done;

    /* Tokenise; BOS only when the model wants one and the text does not already start with it. */
    bool add_bos = tok_add_bos(tk);
    if (add_bos && tok_bos(tk) >= 0) {
        const char *bt = tok_text(tk, tok_bos(tk));
        if (bt && *bt && !strncmp(text, bt, strlen(bt)))
            add_bos = false;
    }
    size_t tlen = strlen(text);
    int64_t n_prompt = tok_encode(tk, text, tlen, add_bos, true, NULL, 0);
    if (n_prompt < 0 || !(ids = malloc((size_t)(n_prompt > 0 ? n_prompt : 1) * sizeof *ids)) ||
        tok_encode(tk, text, tlen, add_bos, true, ids, n_prompt) != n_prompt) {
        fputs("parley-generate: cannot tokenise the prompt\n", stderr);
        goto done;
    }
    if (n_prompt == 0) {
        fputs("parley-generate: the prompt is empty\n", stderr);
        goto done;
    }
    int64_t total = n_prompt + o.max_tokens;
    if (total > info.n_ctx_train) {
        fprintf(stderr,
                "parley-generate: %lld prompt tokens + %d new exceed the model's context of %d\n",
                (long long)n_prompt, o.max_tokens, info.n_ctx_train);
        goto done;
    }

    eng_ctx_params cp = {
        .kv_budget_bytes = ((size_t)total + 16) * info.kv_bytes_per_token,
        .max_seqs = 1,
        .n_threads = o.threads,
        .max_batch_tokens = 512,
        .max_seq_len = (int32_t)total,
    };
    eng_seq_id seq;
    if (eng_ctx_create(m, &cp, &c) != PL_OK || eng_seq_add(c, &seq) != PL_OK) {
        fprintf(stderr, "parley-generate: %s\n", pl_err_last());
        goto done;
    }
    if (sampler_create(&o.sp, info.n_vocab, &smp) != PL_OK) {
        fprintf(stderr, "parley-generate: %s\n", pl_err_last());
        goto done;
    }
    logits = malloc((size_t)info.n_vocab * sizeof *logits);
    gen = malloc((size_t)o.max_tokens * sizeof *gen);
    size_t out_cap = (size_t)o.max_tokens * 64 + 64, out_len = 0;
    out_text = malloc(out_cap);
    if (!logits || !gen || !out_text) {
        fputs("parley-generate: out of memory\n", stderr);
        goto done;
    }
    for (int64_t i = 0; i < n_prompt; i++)
        sampler_accept(smp, ids[i]);

    /* Prefill in chunks of max_batch_tokens. */
    double t0 = now_s();
    for (int64_t off = 0; off < n_prompt; off += cp.max_batch_tokens) {
        int32_t n =
            (int32_t)(n_prompt - off < cp.max_batch_tokens ? n_prompt - off : cp.max_batch_tokens);
        eng_item it = {
            .seq = seq, .tokens = ids + off, .n_tokens = n, .want_logits = off + n == n_prompt};
        if (eng_step(c, &it, 1) != PL_OK) {
            fprintf(stderr, "parley-generate: %s\n", pl_err_last());
            goto done;
        }
    }
    double t1 = now_s();

    tok_stream ts;
    tok_stream_init(&ts);
    int n_gen = 0;
    char piece[256];
    while (n_gen < o.max_tokens) {
        memcpy(logits, eng_logits(c, 0), (size_t)info.n_vocab * sizeof *logits);
        int32_t id = sampler_sample(smp, logits);
        if (tok_is_eog(tk, id))
            break;
        sampler_accept(smp, id);
        gen[n_gen++] = id;
        int k = tok_stream_push(tk, &ts, id, piece, (int)sizeof piece);
        if (k > (int)sizeof piece)
            k = (int)sizeof piece;
        if (k > 0) {
            if (out_len + (size_t)k < out_cap) {
                memcpy(out_text + out_len, piece, (size_t)k);
                out_len += (size_t)k;
            }
            if (!o.json) {
                fwrite(piece, 1, (size_t)k, stdout);
                fflush(stdout);
            }
        }
        if (n_gen == o.max_tokens)
            break;
        eng_item it = {.seq = seq, .tokens = &id, .n_tokens = 1, .want_logits = true};
        if (eng_step(c, &it, 1) != PL_OK) {
            fprintf(stderr, "\nparley-generate: %s\n", pl_err_last());
            goto done;
        }
    }
    int k = tok_stream_flush(&ts, piece, (int)sizeof piece);
    if (k > 0 && k <= (int)sizeof piece) {
        if (out_len + (size_t)k < out_cap) {
            memcpy(out_text + out_len, piece, (size_t)k);
            out_len += (size_t)k;
        }
        if (!o.json)
            fwrite(piece, 1, (size_t)k, stdout);
    }
    double t2 = now_s();

    if (o.json) {
        fputs("{\"prompt_ids\":", stdout);
        json_ids(stdout, ids, n_prompt);
        fputs(",\"gen_ids\":", stdout);
        json_ids(stdout, gen, n_gen);
        fputs(",\"text\":", stdout);
        json_str(stdout, out_text, out_len);
        fputs("}\n", stdout);
    } else {
        fputc('\n', stdout);
    }
    fflush(stdout);
    fprintf(stderr,
            "prompt: %lld tokens in %.3f s (%.1f tok/s); generated: %d tokens in %.3f s "
            "(%.1f tok/s)\n",
            (long long)n_prompt, t1 - t0, (double)n_prompt / (t1 - t0), n_gen, t2 - t1,
            n_gen > 0 ? (double)n_gen / (t2 - t1) : 0.0);
    rc = 0;
done:
    sampler_destroy(smp);
    eng_ctx_free(c);
    eng_model_free(m);
    free(text);
    free(out_text);
    free(ids);
    free(gen);
    free(logits);
    return rc;
}
