/* loadgen.c — parley-loadgen: drives workers directly over NATS, bypassing the gateway and the
 * infer-gateway, to measure what the worker alone delivers (`make bench-serve` compares it with
 * the full HTTP path).
 *
 *   parley-loadgen --nats-url URL --model NAME [--concurrency 4] [--requests 16]
 *                  [--max-tokens 64] [--prompt TEXT]
 *
 * Each of `concurrency` client threads sends requests one after another: it subscribes to the
 * request's delta subject, publishes the InferRequest to the model's JetStream jobs subject
 * (what the infer-gateway would do), and records the arrival time of every delta. Prints one JSON
 * object per request on stdout: {"ok", "ttft", "e2el", "itl": [...], "prompt_tokens",
 * "output_tokens"} (seconds). Statistics are computed by the caller. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "daemon.h"
#include "parley.pb-c.h"
#include "subjects.h"

typedef struct lg_opts {
    const char *url, *model, *prompt;
    int concurrency, requests, max_tokens;
} lg_opts;

typedef struct lg_req {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    double start, first, last;
    double *itl;
    int n_itl, cap_itl;
    bool done, error;
    uint32_t prompt_tokens, output_tokens;
} lg_req;

typedef struct lg_shared {
    lg_opts o;
    bus *b;
    pthread_mutex_t mu; /* next request number, stdout */
    int next;
} lg_shared;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_delta(bus_msg *m, void *arg)
{
    lg_req *r = arg;
    double t = now_s();
    Parley__V1__TokenDelta *d =
        (Parley__V1__TokenDelta *)bus_msg_unpack(m, &parley__v1__token_delta__descriptor);
    bus_msg_destroy(m);
    if (!d)
        return;
    pthread_mutex_lock(&r->mu);
    if (d->n_token_ids > 0) {
        if (r->first == 0) {
            r->first = t;
        } else if (r->n_itl < r->cap_itl) {
            r->itl[r->n_itl++] = t - r->last;
        }
        r->last = t;
    }
    if (d->error)
        r->error = true;
    if (d->finish_reason != PARLEY__V1__FINISH_REASON__FINISH_REASON_NONE || d->error) {
        if (d->usage) {
            r->prompt_tokens = d->usage->prompt_tokens;
            r->output_tokens = d->usage->completion_tokens;
        }
        r->done = true;
        r->last = r->last ? r->last : t;
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    protobuf_c_message_free_unpacked(&d->base, NULL);
}

static void run_one(lg_shared *sh, int n)
{
    lg_req r = {0};
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    r.cap_itl = sh->o.max_tokens + 8;
    r.itl = calloc((size_t)r.cap_itl, sizeof *r.itl);
    char rid[33], subj[128], jobs[192], msgid[64];
    dmn_random_id(rid);
    snprintf(subj, sizeof subj, "%s%s", SUBJ_DELTA_PREFIX, rid);
    subj_token(jobs, sizeof jobs, SUBJ_JOBS_PREFIX, sh->o.model);
    snprintf(msgid, sizeof msgid, "%s", rid);

    bus_sub *sub = NULL;
    bool ok = bus_subscribe(sh->b, subj, NULL, on_delta, &r, &sub) == PL_OK;
    Parley__V1__InferRequest ir = PARLEY__V1__INFER_REQUEST__INIT;
    Parley__V1__ChatMessage cm = PARLEY__V1__CHAT_MESSAGE__INIT, *cms = &cm;
    Parley__V1__SamplingParams sp = PARLEY__V1__SAMPLING_PARAMS__INIT;
    char content[4096];
    snprintf(content, sizeof content, "%s (request %d)", sh->o.prompt, n);
    cm.role = PARLEY__V1__ROLE__ROLE_USER;
    cm.content = content;
    sp.top_p = 1.0f;
    sp.repetition_penalty = 1.0f;
    ir.request_id = rid;
    ir.model = (char *)sh->o.model;
    ir.messages = &cms;
    ir.n_messages = 1;
    ir.sampling = &sp;
    ir.max_tokens = (uint32_t)sh->o.max_tokens;
    ir.delta_subject = subj;
    ir.created_ms = dmn_wall_ms();
    r.start = now_s();
    if (ok)
        ok = bus_js_publish_pb(sh->b, jobs, &ir.base, msgid, 5000) == PL_OK;
    if (ok) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 300;
        pthread_mutex_lock(&r.mu);
        while (!r.done)
            if (pthread_cond_timedwait(&r.cv, &r.mu, &ts) != 0)
                break;
        ok = r.done && !r.error && r.first > 0;
        pthread_mutex_unlock(&r.mu);
    }
    bus_unsubscribe(sub);

    pthread_mutex_lock(&sh->mu);
    printf("{\"ok\":%s,\"ttft\":%.6f,\"e2el\":%.6f,\"prompt_tokens\":%u,\"output_tokens\":%u,"
           "\"itl\":[",
           ok ? "true" : "false", ok ? r.first - r.start : 0.0, ok ? r.last - r.start : 0.0,
           r.prompt_tokens, r.output_tokens);
    for (int i = 0; i < r.n_itl; i++)
        printf("%s%.6f", i ? "," : "", r.itl[i]);
    printf("]}\n");
    fflush(stdout);
    pthread_mutex_unlock(&sh->mu);
    free(r.itl);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
}

static void *client_main(void *arg)
{
    lg_shared *sh = arg;
    for (;;) {
        pthread_mutex_lock(&sh->mu);
        int n = sh->next < sh->o.requests ? sh->next++ : -1;
        pthread_mutex_unlock(&sh->mu);
        if (n < 0)
            return NULL;
        run_one(sh, n);
    }
}

static int usage(void)
{
    fputs("usage: parley-loadgen --nats-url URL --model NAME [--concurrency N] [--requests N]\n"
          "                      [--max-tokens N] [--prompt TEXT]\n",
          stderr);
    return 2;
}

int main(int argc, char **argv)
{
    lg_shared sh = {.o = {.url = "nats://127.0.0.1:4222",
                          .prompt = "Tell me about the history of the bicycle.",
                          .concurrency = 1,
                          .requests = 8,
                          .max_tokens = 64}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        if (!strcmp(a, "--nats-url"))
            sh.o.url = v;
        else if (!strcmp(a, "--model"))
            sh.o.model = v;
        else if (!strcmp(a, "--prompt"))
            sh.o.prompt = v;
        else if (!strcmp(a, "--concurrency"))
            sh.o.concurrency = atoi(v);
        else if (!strcmp(a, "--requests"))
            sh.o.requests = atoi(v);
        else if (!strcmp(a, "--max-tokens"))
            sh.o.max_tokens = atoi(v);
        else
            return usage();
        i++;
    }
    if (!sh.o.model || sh.o.concurrency < 1 || sh.o.concurrency > 1024 || sh.o.requests < 1 ||
        sh.o.max_tokens < 1) {
        fputs("parley-loadgen: --model is required; counts must be positive\n", stderr);
        return 2;
    }
    bus_opts bo = {.url = sh.o.url, .name = "parley-loadgen"};
    if (bus_connect(&sh.b, &bo) != PL_OK) {
        fprintf(stderr, "parley-loadgen: %s\n", pl_err_last());
        return 1;
    }
    for (int i = 0; i < 100 && !bus_connected(sh.b); i++)
        nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
    if (!bus_connected(sh.b)) {
        fprintf(stderr, "parley-loadgen: cannot reach NATS at %s\n", sh.o.url);
        bus_close(sh.b);
        return 1;
    }
    pthread_mutex_init(&sh.mu, NULL);
    pthread_t *th = calloc((size_t)sh.o.concurrency, sizeof *th);
    for (int i = 0; i < sh.o.concurrency; i++)
        pthread_create(&th[i], NULL, client_main, &sh);
    for (int i = 0; i < sh.o.concurrency; i++)
        pthread_join(th[i], NULL);
    free(th);
    bus_close(sh.b);
    return 0;
}
