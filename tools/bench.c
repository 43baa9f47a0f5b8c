/* bench.c — parley-bench: engine throughput in llama-bench's convention, plus batched decode.
 *
 *   parley-bench --model PATH [--threads N] [--reps 5] [-p 512] [-n 128]
 *                [--batch 1,4,16,64] [--batch-prompt 32] [--batch-steps 32]
 *                [--device cpu | cuda:N]   (cuda: a `make CUDA=1` build; weights and KV on the GPU)
 *
 * pp<P>: one P-token prefill of a fresh sequence (random token ids), tokens/s.
 * tg<N>: N single-token decode steps from an empty sequence, tokens/s.
 * Both report mean ± sd over --reps runs after one warm-up run, excluding tokenisation and
 * sampling (token ids are random; logits are computed as llama-bench does: last token only for
 * pp, every step for tg). Batched decode at B sequences: each sequence is first given a
 * --batch-prompt-token prefix (not timed), then --batch-steps steps each decode one token for
 * all B sequences; aggregate tokens/s = B * steps / time, over max(3, --reps) rounds that take
 * every batch size in turn; a size's gain over x1 is the median of the rounds' ratios. Peak RSS
 * is reported at the end. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "engine.h"
#include "quant.h"

#define MAX_BATCHES 16

typedef struct bench_opts {
    const char *model;
    const char *device; /* --device: "cpu" (default) or "cuda:N" in a `make CUDA=1` build */
    int threads, reps, pp, tg, batch_prompt, batch_steps;
    int batches[MAX_BATCHES];
    int n_batches;
} bench_opts;

static void usage(FILE *f)
{
    fputs("usage: parley-bench --model PATH [--threads N] [--reps 5] [-p 512] [-n 128]\n"
          "         [--batch 1,4,16,64] [--batch-prompt 32] [--batch-steps 32] [--device cpu]\n",
          f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool parse_int(const char *s, int lo, int hi, int *v)
{
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi)
        return false;
    *v = (int)x;
    return true;
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 5;
    o->pp = 512;
    o->tg = 128;
    o->batch_prompt = 32;
    o->batch_steps = 32;
    int def[] = {1, 4, 16, 64};
    memcpy(o->batches, def, sizeof def);
    o->n_batches = 4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "parley-bench: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "--model") || !strcmp(a, "-m")) {
            o->model = v;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            ok = parse_int(v, 1, 1024, &o->threads);
        } else if (!strcmp(a, "--reps") || !strcmp(a, "-r")) {
            ok = parse_int(v, 1, 1000, &o->reps);
        } else if (!strcmp(a, "-p")) {
            ok = parse_int(v, 0, 65536, &o->pp);
        } else if (!strcmp(a, "-n")) {
            ok = parse_int(v, 0, 65536, &o->tg);
        } else if (!strcmp(a, "--batch-prompt")) {
            ok = parse_int(v, 1, 65536, &o->batch_prompt);
        } else if (!strcmp(a, "--device")) {
            o->device = v;
        } else if (!strcmp(a, "--batch-steps")) {
            ok = parse_int(v, 1, 65536, &o->batch_steps);
        } else if (!strcmp(a, "--batch")) {
            o->n_batches = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && ok;
                 t = strtok_r(NULL, ",", &save)) {
                ok = o->n_batches < MAX_BATCHES && parse_int(t, 1, 4096, &o->batches[o->n_batches]);
                o->n_batches++;
            }
            if (!strcmp(v, "0"))
                o->n_batches = 0, ok = true;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "parley-bench: bad option or value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (!o->model) {
        fputs("parley-bench: --model is required\n", stderr);
        usage(stderr);
        return 2;
    }
    return 0;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static int32_t rand_token(int32_t n_vocab)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (int32_t)(rng_state % (uint64_t)n_vocab);
}

static void mean_sd(const double *x, int n, double *mean, double *sd)
{
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++)
        s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        ss += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

static int fail(const char *what)
{
    fprintf(stderr, "parley-bench: %s: %s\n", what, pl_err_last());
    return 1;
}

/* One pp run: prefill `n` random tokens into a fresh sequence; returns tokens/s or < 0. */
static double run_pp(eng_ctx *c, int32_t *toks, int n, int32_t n_vocab, int chunk)
{
    eng_seq_id s;
    if (eng_seq_add(c, &s) != PL_OK)
        return -1;
    for (int i = 0; i < n; i++)
        toks[i] = rand_token(n_vocab);
    double t0 = now_s();
    for (int off = 0; off < n; off += chunk) {
        int k = n - off < chunk ? n - off : chunk;
        eng_item it = {.seq = s, .tokens = toks + off, .n_tokens = k, .want_logits = off + k == n};
        if (eng_step(c, &it, 1) != PL_OK) {
            eng_seq_remove(c, s);
            return -1;
        }
    }
    double dt = now_s() - t0;
    eng_seq_remove(c, s);
    return n / dt;
}

/* One tg run: n single-token steps from an empty sequence. */
static double run_tg(eng_ctx *c, int n, int32_t n_vocab)
{
    eng_seq_id s;
    if (eng_seq_add(c, &s) != PL_OK)
        return -1;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        int32_t t = rand_token(n_vocab);
        eng_item it = {.seq = s, .tokens = &t, .n_tokens = 1, .want_logits = true};
        if (eng_step(c, &it, 1) != PL_OK) {
            eng_seq_remove(c, s);
            return -1;
        }
    }
    double dt = now_s() - t0;
    eng_seq_remove(c, s);
    return n / dt;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One batched run: B sequences with a prefix, then `steps` steps of one token each. */
static double run_batched(eng_ctx *c, int B, int prompt, int steps, int32_t n_vocab, int32_t *toks,
                          eng_item *items, int chunk)
{
    eng_seq_id seqs[4096];
    int added = 0;
    double rate = -1;
    for (; added < B; added++)
        if (eng_seq_add(c, &seqs[added]) != PL_OK)
            goto out;
    /* Prefixes, several sequences per step as the worker would. */
    for (int b = 0; b < B;) {
        int n_items = 0, used = 0;
        while (b < B && used + prompt <= chunk) {
            for (int i = 0; i < prompt; i++)
                toks[used + i] = rand_token(n_vocab);
            items[n_items++] = (eng_item){
                .seq = seqs[b], .tokens = toks + used, .n_tokens = prompt, .want_logits = true};
            used += prompt;
            b++;
        }
        if (n_items == 0 || eng_step(c, items, n_items) != PL_OK)
            goto out;
    }
    double t0 = now_s();
    for (int s = 0; s < steps; s++) {
        for (int b = 0; b < B; b++) {
            toks[b] = rand_token(n_vocab);
            items[b] =
                (eng_item){.seq = seqs[b], .tokens = toks + b, .n_tokens = 1, .want_logits = true};
        }
        if (eng_step(c, items, B) != PL_OK)
            goto out;
    }
    rate = (double)B * steps / (now_s() - t0);
out:
    for (int i = 0; i < added; i++)
        eng_seq_remove(c, seqs[i]);
    return rate;
}

int main(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;

    eng_model *m = NULL;
    eng_ctx *c = NULL;
    int32_t *toks = NULL;
    eng_item *items = NULL;
    double *rates = NULL;
    rc = 1;

    if (eng_model_load(o.model, NULL, &m) != PL_OK) {
        rc = fail("loading the model");
        goto done;
    }
    eng_model_info info;
    eng_model_get_info(m, &info);

    int max_b = 1;
    for (int i = 0; i < o.n_batches; i++)
        if (o.batches[i] > max_b)
            max_b = o.batches[i];
    if (o.batch_prompt > 512) {
        fputs("parley-bench: --batch-prompt must be at most 512\n", stderr);
        rc = 2;
        goto done;
    }
    int chunk = 512;
    int seq_len = o.pp > o.tg ? o.pp : o.tg;
    if (o.batch_prompt + o.batch_steps > seq_len)
        seq_len = o.batch_prompt + o.batch_steps;
    if (seq_len > info.n_ctx_train) {
        fprintf(stderr, "parley-bench: %d tokens exceed the model's context of %d\n", seq_len,
                info.n_ctx_train);
        rc = 2;
        goto done;
    }
    /* KV: the larger of one long sequence and max_b short ones, block-rounded. */
    size_t blk = 16 * info.kv_bytes_per_token;
    size_t kv_single = ((size_t)seq_len + 15) / 16 * blk;
    size_t kv_batch = (size_t)max_b * (((size_t)o.batch_prompt + o.batch_steps + 15) / 16) * blk;
    eng_ctx_params cp = {
        .kv_budget_bytes = kv_single > kv_batch ? kv_single : kv_batch,
        .max_seqs = max_b,
        .n_threads = o.threads,
        .max_batch_tokens = chunk > max_b ? chunk : max_b,
        .max_seq_len = seq_len,
        .device = o.device,
    };
    if (eng_ctx_create(m, &cp, &c) != PL_OK) {
        rc = fail("creating the context");
        goto done;
    }
    eng_ctx_get_params(c, &cp);
    toks = malloc((size_t)(cp.max_batch_tokens > seq_len ? cp.max_batch_tokens : seq_len) *
                  sizeof *toks);
    items = malloc((size_t)cp.max_batch_tokens * sizeof *items);
    rates = malloc((size_t)o.reps * sizeof *rates);
    if (!toks || !items || !rates) {
        fputs("parley-bench: out of memory\n", stderr);
        goto done;
    }

    printf("model: %s (%s, %.1fM params, %.1f MiB file), cpu path %s, threads %d\n", info.name,
           info.arch, (double)info.n_params / 1e6, (double)info.file_bytes / 1048576.0,
           qt_cpu_path(), cp.n_threads);
    if (o.device && strcmp(o.device, "cpu") != 0)
        printf("device: %s\n", o.device);
    printf("| test | t/s |\n|---|---|\n");
    fflush(stdout);

    if (o.pp > 0) {
        if (run_pp(c, toks, o.pp, info.n_vocab, chunk) < 0) { /* warm-up */
            rc = fail("pp");
            goto done;
        }
        for (int r = 0; r < o.reps; r++)
            if ((rates[r] = run_pp(c, toks, o.pp, info.n_vocab, chunk)) < 0) {
                rc = fail("pp");
                goto done;
            }
        double mean, sd;
        mean_sd(rates, o.reps, &mean, &sd);
        printf("| pp%d | %.2f ± %.2f |\n", o.pp, mean, sd);
        fflush(stdout);
    }
    if (o.tg > 0) {
        if (run_tg(c, o.tg, info.n_vocab) < 0) {
            rc = fail("tg");
            goto done;
        }
        for (int r = 0; r < o.reps; r++)
            if ((rates[r] = run_tg(c, o.tg, info.n_vocab)) < 0) {
                rc = fail("tg");
                goto done;
            }
        double mean, sd;
        mean_sd(rates, o.reps, &mean, &sd);
        printf("| tg%d | %.2f ± %.2f |\n", o.tg, mean, sd);
        fflush(stdout);
    }
    /* Batched decode in rounds (x1, x4, x16, ... then again), so that a machine whose speed
     * drifts over minutes (shared hosts do) favours no batch size over another: each size's
     * rate is the mean over the rounds, and its gain over x1 the median of the rounds' ratios. */
    int nb = o.n_batches, reps = o.reps < 3 ? 3 : o.reps;
    double *brate = malloc(((size_t)nb + 1) * (size_t)reps * sizeof *brate);
    double *ratio = malloc((size_t)reps * sizeof *ratio);
    if (!brate || !ratio) {
        free(brate), free(ratio);
        fputs("parley-bench: out of memory\n", stderr);
        goto done;
    }
    bool ok = true;
    for (int i = 0; i < nb && ok; i++) /* warm-up */
        ok = run_batched(c, o.batches[i], o.batch_prompt, 4, info.n_vocab, toks, items, chunk) >= 0;
    for (int r = 0; r < reps && ok; r++)
        for (int i = 0; i < nb && ok; i++)
            ok = (brate[i * reps + r] = run_batched(c, o.batches[i], o.batch_prompt, o.batch_steps,
                                                    info.n_vocab, toks, items, chunk)) >= 0;
    int i1 = -1;
    for (int i = 0; i < nb; i++)
        if (o.batches[i] == 1)
            i1 = i;
    for (int i = 0; i < nb && ok; i++) {
        double mean, sd;
        mean_sd(brate + i * reps, reps, &mean, &sd);
        printf("| decode x%d (aggregate) | %.2f ± %.2f", o.batches[i], mean, sd);
        if (i1 >= 0 && o.batches[i] > 1) {
            for (int r = 0; r < reps; r++)
                ratio[r] = brate[i * reps + r] / brate[i1 * reps + r];
            qsort(ratio, (size_t)reps, sizeof *ratio, cmp_double);
            double med = reps % 2 ? ratio[reps / 2] : (ratio[reps / 2 - 1] + ratio[reps / 2]) / 2;
            printf(" (%.2fx single; rounds %.2f..%.2f)", med, ratio[0], ratio[reps - 1]);
        }
        printf(" |\n");
    }
    fflush(stdout);
    free(brate), free(ratio);
    if (!ok) {
        rc = fail("batched decode");
        goto done;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    eng_kv_stats ks;
    eng_kv_get_stats(c, &ks);
    printf("peak RSS: %.1f MiB (model file %.1f MiB, KV budget %.1f MiB, scratch %.1f MiB)\n",
           (double)ru.ru_maxrss / 1024.0, (double)info.file_bytes / 1048576.0,
           (double)ks.total_bytes / 1048576.0, (double)eng_ctx_scratch_bytes(c) / 1048576.0);
    rc = 0;
done:
    eng_ctx_free(c);
    eng_model_free(m);
    free(toks);
    free(items);
    free(rates);
    return rc;
}
