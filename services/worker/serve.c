/* serve.c — continuous batching for one model (see serve.h).
 *
 * Ownership: a job is created by the fetch thread (on_job) and owned by the inbox until the
 * batching thread takes it; from then on only the batching thread touches its engine state.
 * The fields the other threads may read or set (request id, the cancelled flag) are guarded by
 * the model's mutex. A finished job is acked on JetStream and freed by the batching thread.
 *
 * Scheduling per step (iteration-level): every generating sequence contributes its one pending
 * token first (decode never waits behind a prompt); what is left of the step's token budget
 * goes to prompt prefill, oldest job first, in chunks, so a long prompt is spread over several
 * steps while the others keep decoding. A job is admitted only when the KV cache can hold its
 * prompt plus a reserve of generated tokens; a sequence that later runs out of KV room ends with
 * finish reason "length". A job starts on the longest prefix of its prompt whose KV blocks the
 * engine still holds from earlier requests (prefix caching: a shared system prompt, the earlier
 * turns of a conversation), so only the rest is prefilled. */
#include "serve.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "engine.h"
#include "jsetup.h"
#include "log.h"
#include "parley.pb-c.h"
#include "sample.h"
#include "subjects.h"
#include "tmpl.h"
#include "tok.h"
#include "wire.h"
#include "sync.h"

#define SRV_RECENT      1024 /* remembered finished / cancelled request ids */
#define SRV_PROGRESS_MS 4000 /* in-progress signal to JetStream while a job runs */
#define SRV_GEN_RESERVE 64   /* KV tokens reserved beyond the prompt at admission */
#define SRV_PIECE       256

typedef struct job {
    char rid[64];
    Parley__V1__InferRequest *req; /* owned (unpacked) */
    bus_msg *msg;                  /* the JetStream message: ack when done */
    bool cancelled;                /* guarded by the model mutex until taken by the loop */
    struct job *next;

    /* batching-thread state */
    bool admitted;
    eng_seq_id seq;
    int32_t *prompt;
    int32_t n_prompt, n_prefilled;
    int32_t n_cached; /* prompt tokens whose KV came from the prefix cache */
    int32_t pending;  /* the sampled token to feed in the next step, or -1 */
    int32_t n_gen, max_tokens;
    sampler *smp;
    stop_matcher *stop;
    tok_stream ts;
    uint32_t seq_no;
    char *text; /* everything emitted, for the completion record */
    size_t text_len, text_cap;
    int64_t t_fetch, t_admit, t_first, t_last_token, t_progress;
    Parley__V1__FinishReason finish;
    pl_status fail; /* PL_OK unless the job failed */
    char fail_msg[256];
} job;

struct srv_model {
    srv_opts o;
    char name[128];
    char subject[192];
    char durable[192];
    eng_model *em;
    eng_ctx *ec;
    const tok *tk;
    tmpl_kind tmpl;
    const char *default_system;
    int32_t n_ctx, n_vocab;
    eng_model_info info;
    char quant[32];

    jsetup js;
    bus_stream_cfg stream;
    bus_consumer_cfg consumer;
    jsetup_spec jspec;
    const char *stream_subjects[2];
    bus_pull *pull;
    bus_pull_loop *loop;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stop, draining;
    job *inbox; /* fetched, not yet taken by the batching thread */
    int n_inbox, n_active;
    job *active[1024];
    char recent[SRV_RECENT][64]; /* finished or cancelled ids (ring) */
    int recent_next;
    uint64_t kv_free;
    uint64_t pc_queries, pc_hits, pc_evictions; /* engine totals already added to the metrics */

    /* metrics */
    met_child *m_running, *m_waiting, *m_kv, *m_prompt, *m_gen, *m_ttft, *m_itl, *m_e2e, *m_queue,
        *m_batch, *m_prefill, *m_decode, *m_pc_queries, *m_pc_hits, *m_pc_blocks, *m_pc_evictions;
    met_family *f_success;
    /* per-step scratch */
    eng_item *items;
    job **item_job;
};

static const char *const model_label[] = {"model", NULL};
static const char *const success_labels[] = {"model", "finished_reason", NULL};
static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

/* --- helpers --------------------------------------------------------------------------------- */

static bool recent_has(srv_model *m, const char *rid)
{
    for (int i = 0; i < SRV_RECENT; i++)
        if (m->recent[i][0] && strcmp(m->recent[i], rid) == 0)
            return true;
    return false;
}

static void recent_add(srv_model *m, const char *rid)
{
    snprintf(m->recent[m->recent_next], sizeof m->recent[0], "%s", rid);
    m->recent_next = (m->recent_next + 1) % SRV_RECENT;
}

static void job_free(job *j)
{
    if (!j)
        return;
    if (j->req)
        protobuf_c_message_free_unpacked(&j->req->base, NULL);
    bus_msg_destroy(j->msg);
    sampler_destroy(j->smp);
    stop_destroy(j->stop);
    free(j->prompt);
    free(j->text);
    free(j);
}

static void emit_event(srv_model *m, const job *j, Parley__V1__JobEventKind kind)
{
    Parley__V1__JobEvent ev = PARLEY__V1__JOB_EVENT__INIT;
    ev.request_id = (char *)j->rid;
    ev.worker_id = (char *)m->o.worker_id;
    ev.kind = kind;
    ev.model = m->name;
    ev.at_ms = dmn_wall_ms();
    ev.finish_reason = j->finish;
    bus_publish_pb(m->o.b, SUBJ_INFER_EVENTS, &ev.base);
}

static const char *delta_subject(const job *j, char *buf, size_t cap)
{
    if (j->req->delta_subject && j->req->delta_subject[0])
        return j->req->delta_subject;
    snprintf(buf, cap, "%s%s", SUBJ_DELTA_PREFIX, j->rid);
    return buf;
}

/* Publishes a delta with `text` (may be empty); the final one carries finish/usage/error. */
static void publish_delta(srv_model *m, job *j, const char *text, size_t len, const int32_t *ids,
                          size_t n_ids, bool final)
{
    char subj[192];
    Parley__V1__TokenDelta d = PARLEY__V1__TOKEN_DELTA__INIT;
    char buf[SRV_PIECE * 4 + 1];
    if (len >= sizeof buf)
        len = sizeof buf - 1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    d.request_id = j->rid;
    d.seq = ++j->seq_no;
    d.text = buf;
    d.token_ids = (uint32_t *)ids;
    d.n_token_ids = n_ids;
    d.worker_id = (char *)m->o.worker_id;
    d.model = m->name;
    d.sent_us = dmn_wall_us(); /* the gateway times the path from here to the client */
    Parley__V1__Usage usage = PARLEY__V1__USAGE__INIT;
    Parley__V1__Error err;
    if (final) {
        d.finish_reason = j->finish;
        usage.prompt_tokens = (uint32_t)j->n_prompt;
        usage.completion_tokens = (uint32_t)j->n_gen;
        d.usage = &usage;
        if (j->fail != PL_OK) {
            wire_error_init(&err, j->fail, j->fail_msg);
            d.error = &err;
        }
    }
    if (bus_publish_pb(m->o.b, delta_subject(j, subj, sizeof subj), &d.base) != PL_OK)
        LOGW(j->rid, "cannot publish a delta: %s", pl_err_last());
}

static void text_append(job *j, const char *s, size_t n)
{
    if (j->text_len + n + 1 > j->text_cap) {
        size_t cap = j->text_cap ? j->text_cap * 2 : 1024;
        while (cap < j->text_len + n + 1)
            cap *= 2;
        char *t = realloc(j->text, cap);
        if (!t)
            return; /* the record keeps what fit; deltas already carried the text */
        j->text = t;
        j->text_cap = cap;
    }
    memcpy(j->text + j->text_len, s, n);
    j->text_len += n;
    j->text[j->text_len] = '\0';
}

/* Ends a job: final delta, completion record, ack, event, KV freed. Batching thread only. */
static void finish_job(srv_model *m, job *j, Parley__V1__FinishReason why)
{
    j->finish = why;
    /* Whatever the stop matcher and the UTF-8 decoder still hold is emitted on a clean end. */
    char tail[64 + SRV_PIECE];
    size_t tail_len = 0;
    if (why != PARLEY__V1__FINISH_REASON__FINISH_REASON_STOP || j->fail == PL_OK) {
        char flushed[16];
        int nf = tok_stream_flush(&j->ts, flushed, sizeof flushed);
        const char *emit = NULL;
        size_t emit_len = 0;
        if (nf > 0 && j->stop && !stop_feed(j->stop, flushed, (size_t)nf, &emit, &emit_len)) {
            memcpy(tail, emit, emit_len);
            tail_len = emit_len;
        }
        if (j->stop && why != PARLEY__V1__FINISH_REASON__FINISH_REASON_STOP) {
            stop_flush(j->stop, &emit, &emit_len);
            if (tail_len + emit_len < sizeof tail) {
                memcpy(tail + tail_len, emit, emit_len);
                tail_len += emit_len;
            }
        }
        text_append(j, tail, tail_len);
    }
    publish_delta(m, j, tail, tail_len, NULL, 0, true);

    int64_t now = dmn_now_ms();
    Parley__V1__CompletionRecord r = PARLEY__V1__COMPLETION_RECORD__INIT;
    Parley__V1__Usage usage = PARLEY__V1__USAGE__INIT;
    Parley__V1__Timings tm = PARLEY__V1__TIMINGS__INIT;
    Parley__V1__Error err;
    r.request_id = j->rid;
    r.user_id = j->req->user_id;
    r.model = m->name;
    r.text = j->text ? j->text : (char *)"";
    r.finish_reason = why;
    usage.prompt_tokens = (uint32_t)j->n_prompt;
    usage.completion_tokens = (uint32_t)j->n_gen;
    r.usage = &usage;
    tm.queued_ms = j->t_admit ? j->t_admit - j->t_fetch : 0;
    tm.first_token_ms = j->t_first ? j->t_first - j->t_fetch : 0;
    tm.decode_ms = j->t_first ? now - j->t_first : 0;
    tm.prefill_ms = j->t_first && j->t_admit ? j->t_first - j->t_admit : 0;
    r.timings = &tm;
    if (j->fail != PL_OK) {
        wire_error_init(&err, j->fail, j->fail_msg);
        r.error = &err;
    }
    r.worker_id = (char *)m->o.worker_id;
    r.conversation_id = j->req->conversation_id;
    r.message_id = j->req->message_id;
    r.finished_ms = dmn_wall_ms();
    if (bus_js_publish_pb(m->o.b, SUBJ_COMPLETIONS, &r.base, j->rid, 2000) != PL_OK)
        LOGW(j->rid, "cannot write the completion record: %s", pl_err_last());
    if (bus_ack(j->msg) != PL_OK)
        LOGW(j->rid, "cannot ack the job: %s", pl_err_last());
    emit_event(m, j, PARLEY__V1__JOB_EVENT_KIND__JOB_EVENT_KIND_DONE);

    met_inc(met_with(m->f_success, m->name, wire_finish_name(why), NULL), 1);
    met_inc(m->m_gen, j->n_gen);
    if (j->t_admit)
        met_observe(m->m_e2e, (double)(now - j->t_fetch) / 1000.0);
    if (j->t_first && j->n_gen > 1)
        met_observe(m->m_decode, (double)(now - j->t_first) / 1000.0);
    if (j->admitted)
        eng_seq_remove(m->ec, j->seq);
    LOGI(j->rid, "finished (%s): %d prompt (%d cached) + %d generated tokens in %lld ms",
         wire_finish_name(why), j->n_prompt, j->n_cached, j->n_gen, (long long)(now - j->t_fetch));
}

static void fail_job(srv_model *m, job *j, pl_status st, const char *msg)
{
    j->fail = st;
    snprintf(j->fail_msg, sizeof j->fail_msg, "%s", msg);
    finish_job(m, j, PARLEY__V1__FINISH_REASON__FINISH_REASON_ERROR);
}

/* --- admission: prompt, sampler, stop strings, KV ----------------------------------------------
 */

static pl_status build_prompt(srv_model *m, job *j)
{
    const Parley__V1__InferRequest *rq = j->req;
    if (rq->n_prompt_tokens > 0) {
        j->prompt = malloc(rq->n_prompt_tokens * sizeof *j->prompt);
        if (!j->prompt)
            return PL_ERRF(PL_NOMEM, "out of memory");
        for (size_t i = 0; i < rq->n_prompt_tokens; i++) {
            if (rq->prompt_tokens[i] >= (uint32_t)m->n_vocab)
                return PL_ERRF(PL_INVALID, "prompt token %u is outside the vocabulary",
                               rq->prompt_tokens[i]);
            j->prompt[i] = (int32_t)rq->prompt_tokens[i];
        }
        j->n_prompt = (int32_t)rq->n_prompt_tokens;
        return PL_OK;
    }
    if (rq->n_messages == 0)
        return PL_ERRF(PL_INVALID, "the request has no messages");
    char *text = NULL;
    bool add_bos = tok_add_bos(m->tk);
    if (rq->raw_prompt) {
        text = strdup(rq->messages[0]->content ? rq->messages[0]->content : "");
    } else {
        tmpl_msg *msgs = calloc(rq->n_messages, sizeof *msgs);
        if (!msgs)
            return PL_ERRF(PL_NOMEM, "out of memory");
        for (size_t i = 0; i < rq->n_messages; i++) {
            const Parley__V1__ChatMessage *cm = rq->messages[i];
            msgs[i].role = cm->role == PARLEY__V1__ROLE__ROLE_SYSTEM      ? TMPL_SYSTEM
                           : cm->role == PARLEY__V1__ROLE__ROLE_ASSISTANT ? TMPL_ASSISTANT
                                                                          : TMPL_USER;
            msgs[i].content = cm->content ? cm->content : "";
        }
        text = tmpl_render(m->tmpl, msgs, rq->n_messages, m->default_system, true);
        free(msgs);
        /* Llama 3 and Gemma renderings carry the BOS text themselves. */
        if (m->tmpl != TMPL_CHATML)
            add_bos = false;
    }
    if (!text)
        return PL_ERRF(PL_NOMEM, "out of memory");
    size_t len = strlen(text);
    int64_t need = tok_encode(m->tk, text, len, add_bos, !rq->raw_prompt, NULL, 0);
    if (need < 0) {
        free(text);
        return PL_ERRF(PL_INVALID, "the prompt cannot be tokenised");
    }
    j->prompt = malloc((size_t)(need ? need : 1) * sizeof *j->prompt);
    if (!j->prompt) {
        free(text);
        return PL_ERRF(PL_NOMEM, "out of memory");
    }
    j->n_prompt = (int32_t)tok_encode(m->tk, text, len, add_bos, !rq->raw_prompt, j->prompt, need);
    free(text);
    if (j->n_prompt == 0)
        return PL_ERRF(PL_INVALID, "the prompt is empty");
    return PL_OK;
}

/* Prepares a job for the engine; PL_AGAIN when the KV cache cannot take it yet. */
static pl_status admit_job(srv_model *m, job *j)
{
    const Parley__V1__InferRequest *rq = j->req;
    pl_status s;
    if (!j->prompt && (s = build_prompt(m, j)) != PL_OK)
        return s;
    if (j->n_prompt >= m->n_ctx)
        return PL_ERRF(PL_TOO_LARGE,
                       "the prompt is %d tokens; the model's context is %d tokens, including "
                       "the answer",
                       j->n_prompt, m->n_ctx);
    int32_t room = m->n_ctx - j->n_prompt;
    j->max_tokens =
        rq->max_tokens && (int32_t)rq->max_tokens < room ? (int32_t)rq->max_tokens : room;
    eng_kv_stats st;
    eng_kv_get_stats(m->ec, &st);
    int32_t reserve = j->max_tokens < SRV_GEN_RESERVE ? j->max_tokens : SRV_GEN_RESERVE;
    int64_t need_blocks = (j->n_prompt + reserve + st.block_tokens - 1) / st.block_tokens;
    if (need_blocks > st.total_blocks)
        return PL_ERRF(PL_TOO_LARGE, "the prompt of %d tokens does not fit this worker's KV cache",
                       j->n_prompt);
    if (need_blocks > st.free_blocks)
        return PL_AGAIN;

    sample_params sp;
    sample_params_default(&sp);
    if (rq->sampling) {
        const Parley__V1__SamplingParams *p = rq->sampling;
        sp.temperature = p->temperature;
        sp.top_p = p->top_p > 0 ? p->top_p : 1.0f;
        sp.top_k = p->top_k;
        sp.min_p = p->min_p;
        sp.repetition_penalty = p->repetition_penalty > 0 ? p->repetition_penalty : 1.0f;
        sp.presence_penalty = p->presence_penalty;
        sp.frequency_penalty = p->frequency_penalty;
        sp.has_seed = p->has_seed;
        sp.seed = p->seed;
    }
    if ((s = sample_params_check(&sp)) != PL_OK)
        return s;
    if ((s = sampler_create(&sp, m->n_vocab, &j->smp)) != PL_OK)
        return s;
    for (int32_t i = 0; i < j->n_prompt; i++)
        sampler_accept(j->smp, j->prompt[i]);
    if ((s = stop_create((const char *const *)rq->stop, rq->n_stop, &j->stop)) != PL_OK)
        return s;
    if ((s = eng_seq_add_prompt(m->ec, j->prompt, j->n_prompt, &j->seq, &j->n_cached)) != PL_OK)
        return s == PL_OVERLOADED ? PL_AGAIN : s;
    j->n_prefilled = j->n_cached;
    tok_stream_init(&j->ts);
    j->admitted = true;
    j->pending = -1;
    j->t_admit = dmn_now_ms();
    met_observe(m->m_queue, (double)(j->t_admit - j->t_fetch) / 1000.0);
    met_inc(m->m_prompt, j->n_prompt);
    return PL_OK;
}

/* --- the fetch side ----------------------------------------------------------------------------
 */

static int want_jobs(void *arg)
{
    srv_model *m = arg;
    pthread_mutex_lock(&m->mu);
    int free_slots = m->draining ? 0 : m->o.max_seqs - m->n_active - m->n_inbox;
    pthread_mutex_unlock(&m->mu);
    return free_slots > 0 ? free_slots : 0;
}

static void on_job(bus_msg *msg, void *arg)
{
    srv_model *m = arg;
    Parley__V1__InferRequest *rq =
        (Parley__V1__InferRequest *)bus_msg_unpack(msg, &parley__v1__infer_request__descriptor);
    if (!rq || !rq->request_id || !rq->request_id[0] || strlen(rq->request_id) >= 64) {
        LOGW(NULL, "dropping a job that does not parse or has no request id");
        bus_term(msg);
        bus_msg_destroy(msg);
        if (rq)
            protobuf_c_message_free_unpacked(&rq->base, NULL);
        return;
    }
    pthread_mutex_lock(&m->mu);
    bool dup = recent_has(m, rq->request_id);
    for (int i = 0; i < m->n_active && !dup; i++)
        dup = strcmp(m->active[i]->rid, rq->request_id) == 0;
    for (job *q = m->inbox; q && !dup; q = q->next)
        dup = strcmp(q->rid, rq->request_id) == 0;
    pthread_mutex_unlock(&m->mu);
    bool expired = rq->deadline_ms > 0 && rq->deadline_ms < dmn_wall_ms();
    if (dup || expired) {
        /* Already answered (or being answered) here, cancelled, or too late: never twice. */
        LOGI(rq->request_id, "dropping a %s job (delivery %llu)",
             dup ? "duplicate or cancelled" : "expired",
             (unsigned long long)bus_msg_delivery_count(msg));
        bus_term(msg);
        bus_msg_destroy(msg);
        protobuf_c_message_free_unpacked(&rq->base, NULL);
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        bus_nak(msg, 1000);
        bus_msg_destroy(msg);
        protobuf_c_message_free_unpacked(&rq->base, NULL);
        return;
    }
    snprintf(j->rid, sizeof j->rid, "%s", rq->request_id);
    j->req = rq;
    j->msg = msg;
    j->t_fetch = j->t_progress = dmn_now_ms();
    pthread_mutex_lock(&m->mu);
    job **tail = &m->inbox;
    while (*tail)
        tail = &(*tail)->next;
    *tail = j;
    m->n_inbox++;
    met_set(m->m_waiting, m->n_inbox);
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    emit_event(m, j, PARLEY__V1__JOB_EVENT_KIND__JOB_EVENT_KIND_STARTED);
    if (m->o.on_slots_changed)
        m->o.on_slots_changed(m->o.arg);
}

void srv_model_cancel(srv_model *m, const char *rid)
{
    pthread_mutex_lock(&m->mu);
    bool found = false;
    for (int i = 0; i < m->n_active; i++)
        if (strcmp(m->active[i]->rid, rid) == 0)
            m->active[i]->cancelled = found = true;
    for (job *q = m->inbox; q; q = q->next)
        if (strcmp(q->rid, rid) == 0)
            q->cancelled = found = true;
    if (!found)
        recent_add(m, rid); /* a copy fetched later is dropped */
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* --- the batching loop -------------------------------------------------------------------------
 */

/* Moves inbox jobs into the active set while slots and KV allow; jobs that cannot be admitted
 * (or were cancelled) are finished here, outside the mutex; those that must wait stay first. */
static void take_inbox(srv_model *m)
{
    pthread_mutex_lock(&m->mu);
    job *keep = NULL, **keep_tail = &keep;
    while (m->inbox) {
        job *j = m->inbox;
        m->inbox = j->next;
        j->next = NULL;
        m->n_inbox--;
        if (j->cancelled || m->n_active >= m->o.max_seqs) {
            if (j->cancelled) {
                pthread_mutex_unlock(&m->mu);
                finish_job(m, j, PARLEY__V1__FINISH_REASON__FINISH_REASON_CANCELLED);
                job_free(j);
                pthread_mutex_lock(&m->mu);
                continue;
            }
            *keep_tail = j;
            keep_tail = &j->next;
            continue;
        }
        pthread_mutex_unlock(&m->mu);
        pl_status s = admit_job(m, j);
        pthread_mutex_lock(&m->mu);
        if (s == PL_AGAIN) {
            *keep_tail = j;
            keep_tail = &j->next;
            continue;
        }
        if (s != PL_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", pl_err_last());
            pthread_mutex_unlock(&m->mu);
            LOGW(j->rid, "cannot start: %s", why);
            fail_job(m, j, s, why);
            job_free(j);
            pthread_mutex_lock(&m->mu);
            continue;
        }
        m->active[m->n_active++] = j;
    }
    /* Jobs that must wait go back to the front, in order. */
    *keep_tail = m->inbox;
    m->inbox = keep;
    for (job *q = keep; q; q = q->next)
        m->n_inbox++;
    met_set(m->m_running, m->n_active);
    met_set(m->m_waiting, m->n_inbox);
    pthread_mutex_unlock(&m->mu);
}

/* Removes active[i] (order kept: older jobs prefill first). Mutex held. */
static void drop_active(srv_model *m, int i)
{
    memmove(&m->active[i], &m->active[i + 1], (size_t)(m->n_active - i - 1) * sizeof m->active[0]);
    m->n_active--;
}

static void end_active(srv_model *m, job *j, Parley__V1__FinishReason why)
{
    finish_job(m, j, why);
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n_active; i++)
        if (m->active[i] == j) {
            drop_active(m, i);
            break;
        }
    recent_add(m, j->rid);
    met_set(m->m_running, m->n_active);
    pthread_mutex_unlock(&m->mu);
    job_free(j);
    if (m->o.on_slots_changed)
        m->o.on_slots_changed(m->o.arg);
}

/* Handles the logits of a job's last token: sample, detokenise, stop, publish. */
static void after_logits(srv_model *m, job *j, const float *logits_in, int64_t now)
{
    float *logits = (float *)logits_in; /* the sampler may edit in place; the engine allows it */
    int32_t t = sampler_sample(j->smp, logits);
    sampler_accept(j->smp, t);
    j->n_gen++;
    if (!j->t_first) {
        j->t_first = now;
        met_observe(m->m_ttft, (double)(now - j->t_fetch) / 1000.0);
        emit_event(m, j, PARLEY__V1__JOB_EVENT_KIND__JOB_EVENT_KIND_FIRST_TOKEN);
    } else {
        met_observe(m->m_itl, (double)(now - j->t_last_token) / 1000.0);
    }
    j->t_last_token = now;
    if (tok_is_eog(m->tk, t)) {
        end_active(m, j, PARLEY__V1__FINISH_REASON__FINISH_REASON_STOP);
        return;
    }
    char piece[SRV_PIECE];
    int n = tok_stream_push(m->tk, &j->ts, t, piece, sizeof piece);
    if (n < 0 || n > (int)sizeof piece)
        n = 0; /* a piece longer than any real token: drop rather than overrun */
    const char *emit = NULL;
    size_t emit_len = 0;
    bool stopped = stop_feed(j->stop, piece, (size_t)n, &emit, &emit_len);
    text_append(j, emit, emit_len);
    uint32_t id = (uint32_t)t;
    if (stopped) {
        if (emit_len)
            publish_delta(m, j, emit, emit_len, (const int32_t *)&id, 1, false);
        end_active(m, j, PARLEY__V1__FINISH_REASON__FINISH_REASON_STOP);
        return;
    }
    publish_delta(m, j, emit, emit_len, (const int32_t *)&id, 1, false);
    if (j->n_gen >= j->max_tokens || eng_seq_len(m->ec, j->seq) + 1 >= m->n_ctx) {
        end_active(m, j, PARLEY__V1__FINISH_REASON__FINISH_REASON_LENGTH);
        return;
    }
    j->pending = t;
}

/* Adds what the engine's prefix-cache counters gained since the last call. Batching thread. */
static void update_prefix_metrics(srv_model *m, const eng_kv_stats *st)
{
    met_inc(m->m_pc_queries, (double)(st->prefix_queries - m->pc_queries));
    met_inc(m->m_pc_hits, (double)(st->prefix_hits - m->pc_hits));
    met_inc(m->m_pc_evictions, (double)(st->prefix_evictions - m->pc_evictions));
    met_set(m->m_pc_blocks, st->cached_blocks);
    m->pc_queries = st->prefix_queries;
    m->pc_hits = st->prefix_hits;
    m->pc_evictions = st->prefix_evictions;
}

static void step_once(srv_model *m)
{
    /* Cancelled jobs end first, freeing their slot and KV before this step. */
    for (;;) {
        job *victim = NULL;
        pthread_mutex_lock(&m->mu);
        for (int i = 0; i < m->n_active && !victim; i++)
            if (m->active[i]->cancelled)
                victim = m->active[i];
        pthread_mutex_unlock(&m->mu);
        if (!victim)
            break;
        end_active(m, victim, PARLEY__V1__FINISH_REASON__FINISH_REASON_CANCELLED);
    }

    int n_items = 0, budget = m->o.max_batch_tokens;
    pthread_mutex_lock(&m->mu);
    int n_active = m->n_active;
    job *snapshot[1024];
    memcpy(snapshot, m->active, (size_t)n_active * sizeof snapshot[0]);
    pthread_mutex_unlock(&m->mu);

    for (int i = 0; i < n_active; i++) { /* decode first */
        job *j = snapshot[i];
        if (j->pending < 0)
            continue;
        if (!eng_seq_fits(m->ec, j->seq, 1)) {
            end_active(m, j, PARLEY__V1__FINISH_REASON__FINISH_REASON_LENGTH);
            continue;
        }
        m->items[n_items] = (eng_item){j->seq, &j->pending, 1, true};
        m->item_job[n_items++] = j;
        budget--;
    }
    for (int i = 0; i < n_active && budget > 0; i++) { /* then prompt chunks, oldest first */
        job *j = snapshot[i];
        if (j->pending >= 0 || j->n_prefilled >= j->n_prompt)
            continue;
        int32_t chunk = j->n_prompt - j->n_prefilled;
        if (chunk > budget)
            chunk = budget;
        if (!eng_seq_fits(m->ec, j->seq, chunk))
            continue; /* wait for KV room; decoding sequences will finish */
        bool last = j->n_prefilled + chunk == j->n_prompt;
        m->items[n_items] = (eng_item){j->seq, j->prompt + j->n_prefilled, chunk, last};
        m->item_job[n_items++] = j;
        budget -= chunk;
    }
    if (n_items == 0)
        return;
    pl_status s = eng_step(m->ec, m->items, n_items);
    if (s != PL_OK) {
        /* Should not happen after the fits checks; fail the step's jobs rather than loop. */
        char why[256];
        snprintf(why, sizeof why, "%s", pl_err_last());
        LOGE(NULL, "engine step failed: %s", why);
        for (int i = 0; i < n_items; i++) {
            job *j = m->item_job[i];
            j->fail = s;
            snprintf(j->fail_msg, sizeof j->fail_msg, "%s", why);
            end_active(m, j, PARLEY__V1__FINISH_REASON__FINISH_REASON_ERROR);
        }
        return;
    }
    met_observe(m->m_batch, n_items);
    int64_t t_done = dmn_now_ms();
    for (int i = 0; i < n_items; i++) {
        job *j = m->item_job[i];
        if (j->pending < 0)
            j->n_prefilled += m->items[i].n_tokens;
        if (!m->items[i].want_logits)
            continue;
        after_logits(m, j, eng_logits(m->ec, i), t_done);
    }
    /* Keep long jobs from being redelivered while they run. */
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n_active; i++) {
        job *j = m->active[i];
        if (t_done - j->t_progress >= SRV_PROGRESS_MS) {
            bus_in_progress(j->msg);
            j->t_progress = t_done;
        }
    }
    eng_kv_stats st;
    eng_kv_get_stats(m->ec, &st);
    m->kv_free = st.free_bytes;
    met_set(m->m_kv, st.total_bytes ? 1.0 - (double)st.free_bytes / (double)st.total_bytes : 0);
    pthread_mutex_unlock(&m->mu);
    update_prefix_metrics(m, &st);
}

static void *batch_main(void *arg)
{
    srv_model *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->mu);
        while (!m->stop && m->n_active == 0 && !m->inbox) {
            struct timespec ts = sync_deadline(1000);
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        bool stop = m->stop;
        pthread_mutex_unlock(&m->mu);
        if (stop)
            break;
        take_inbox(m);
        step_once(m);
    }
    return NULL;
}

/* --- lifecycle -----------------------------------------------------------------------------------
 */

pl_status srv_model_load(const srv_opts *o, srv_model **out)
{
    srv_model *m = calloc(1, sizeof *m);
    if (!m)
        return PL_ERRF(PL_NOMEM, "out of memory");
    m->o = *o;
    snprintf(m->name, sizeof m->name, "%s", o->name);
    if (m->o.max_seqs > 1024)
        m->o.max_seqs = 1024;
    if (m->o.max_batch_tokens <= 0)
        m->o.max_batch_tokens = 256;
    pthread_mutex_init(&m->mu, NULL);
    sync_cond_init(&m->cv);
    *out = m;

    eng_model_opts mo = {.chat_template = o->chat_template};
    pl_status s = eng_model_load(o->path, &mo, &m->em);
    if (s != PL_OK)
        return PL_ERRF(s, "model '%s' (%s): %s", o->name, o->path, pl_err_last());
    eng_model_get_info(m->em, &m->info);
    if ((s = eng_model_tmpl(m->em, &m->tmpl, &m->default_system)) != PL_OK)
        return PL_ERRF(s, "model '%s': %s", o->name, pl_err_last());
    m->tk = eng_model_tok(m->em);
    m->n_vocab = m->info.n_vocab;
    eng_ctx_params p = {.kv_budget_bytes = o->kv_budget,
                        .max_seqs = m->o.max_seqs,
                        .n_threads = o->threads,
                        .max_batch_tokens = m->o.max_batch_tokens + m->o.max_seqs,
                        .no_prefix_cache = o->no_prefix_cache,
                        .device = o->device};
    if ((s = eng_ctx_create(m->em, &p, &m->ec)) != PL_OK)
        return PL_ERRF(s, "model '%s': %s", o->name, pl_err_last());
    eng_ctx_get_params(m->ec, &p);
    m->n_ctx = p.max_seq_len;
    /* The step budget may not exceed what the context was sized for. */
    if (m->o.max_batch_tokens + m->o.max_seqs > p.max_batch_tokens)
        m->o.max_batch_tokens = p.max_batch_tokens - m->o.max_seqs;
    eng_kv_stats st;
    eng_kv_get_stats(m->ec, &st);
    m->kv_free = st.free_bytes;
    m->items = calloc((size_t)m->o.max_seqs * 2 + 1, sizeof *m->items);
    m->item_job = calloc((size_t)m->o.max_seqs * 2 + 1, sizeof *m->item_job);
    if (!m->items || !m->item_job)
        return PL_ERRF(PL_NOMEM, "out of memory");
    snprintf(m->quant, sizeof m->quant, "%s", "gguf");

    met_registry *r = o->metrics;
    m->m_running =
        met_with(met_gauge(r, "parley_num_requests_running", "sequences in the batch", model_label),
                 m->name, NULL);
    m->m_waiting =
        met_with(met_gauge(r, "parley_num_requests_waiting",
                           "jobs fetched and waiting for a slot or KV room", model_label),
                 m->name, NULL);
    m->m_kv = met_with(met_gauge(r, "parley_kv_cache_usage_perc",
                                 "fraction of the KV cache in use (0..1)", model_label),
                       m->name, NULL);
    m->m_prompt = met_with(
        met_counter(r, "parley_prompt_tokens_total", "prompt tokens processed", model_label),
        m->name, NULL);
    m->m_gen =
        met_with(met_counter(r, "parley_generation_tokens_total", "tokens generated", model_label),
                 m->name, NULL);
    m->m_ttft = met_with(met_histogram(r, "parley_time_to_first_token_seconds",
                                       "job fetched to first token", model_label,
                                       met_latency_buckets, met_latency_buckets_n),
                         m->name, NULL);
    m->m_itl = met_with(met_histogram(r, "parley_inter_token_latency_seconds",
                                      "time between tokens of one sequence", model_label,
                                      met_latency_buckets, met_latency_buckets_n),
                        m->name, NULL);
    m->m_e2e =
        met_with(met_histogram(r, "parley_e2e_request_latency_seconds", "job fetched to finished",
                               model_label, met_latency_buckets, met_latency_buckets_n),
                 m->name, NULL);
    m->m_queue = met_with(met_histogram(r, "parley_request_queue_time_seconds",
                                        "job fetched to admitted into the batch", model_label,
                                        met_latency_buckets, met_latency_buckets_n),
                          m->name, NULL);
    m->m_decode =
        met_with(met_histogram(r, "parley_request_decode_time_seconds", "first token to finished",
                               model_label, met_latency_buckets, met_latency_buckets_n),
                 m->name, NULL);
    m->m_batch =
        met_with(met_histogram(r, "parley_batch_size", "sequences per engine step", model_label,
                               batch_buckets, sizeof batch_buckets / sizeof batch_buckets[0]),
                 m->name, NULL);
    m->f_success = met_counter(r, "parley_request_success_total",
                               "finished requests by finish reason", success_labels);
    /* Prefix caching, as vLLM reports it: hit rate = hits / queries (in tokens). */
    m->m_pc_queries =
        met_with(met_counter(r, "parley_prefix_cache_queries_total",
                             "prompt tokens looked up in the prefix cache", model_label),
                 m->name, NULL);
    m->m_pc_hits =
        met_with(met_counter(r, "parley_prefix_cache_hits_total",
                             "prompt tokens whose KV came from the prefix cache", model_label),
                 m->name, NULL);
    m->m_pc_blocks =
        met_with(met_gauge(r, "parley_prefix_cache_blocks",
                           "KV blocks held by the prefix cache (in use or idle)", model_label),
                 m->name, NULL);
    m->m_pc_evictions =
        met_with(met_counter(r, "parley_prefix_cache_evictions_total",
                             "idle cached KV blocks evicted to make room", model_label),
                 m->name, NULL);
    LOGI(NULL, "model '%s' loaded: %s, %d layers, context %d, KV %llu bytes, prefix cache %s",
         m->name, m->info.arch, m->info.n_layer, m->n_ctx, (unsigned long long)st.total_bytes,
         o->no_prefix_cache ? "off" : "on");
    return PL_OK;
}

pl_status srv_model_start(srv_model *m)
{
    subj_token(m->subject, sizeof m->subject, SUBJ_JOBS_PREFIX, m->name);
    subj_token(m->durable, sizeof m->durable, CONSUMER_JOBS_PREFIX, m->name);
    m->stream_subjects[0] = SUBJ_JOBS_ALL;
    m->stream = (bus_stream_cfg){.name = STREAM_JOBS,
                                 .subjects = m->stream_subjects,
                                 .work_queue = true,
                                 .max_age_ms = 3600 * 1000};
    /* Short ack wait with in-progress signals: a dead worker's jobs come back quickly. */
    m->consumer = (bus_consumer_cfg){.stream = STREAM_JOBS,
                                     .durable = m->durable,
                                     .filter_subject = m->subject,
                                     .ack_wait_ms = 10000,
                                     .max_deliver = 3,
                                     .max_ack_pending = 4096};
    m->jspec = (jsetup_spec){&m->stream, 1, &m->consumer, 1};
    /* Set up synchronously here: the worker is not ready until it can fetch. */
    pl_status s = bus_stream_ensure(m->o.b, &m->stream);
    if (s == PL_OK)
        s = bus_consumer_ensure(m->o.b, &m->consumer);
    if (s == PL_OK)
        s = bus_pull_create(m->o.b, STREAM_JOBS, m->durable, m->subject, &m->pull);
    if (s != PL_OK)
        return s;
    if (pthread_create(&m->thread, NULL, batch_main, m) != 0)
        return PL_ERRF(PL_ERR, "cannot start the batching thread");
    m->running = true;
    return bus_pull_loop_start(m->pull, m->o.max_seqs, want_jobs, on_job, m, &m->loop);
}

void srv_model_drain(srv_model *m, int64_t deadline_ms)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->draining = true;
    pthread_mutex_unlock(&m->mu);
    bus_pull_loop_stop(m->loop);
    m->loop = NULL;
    while (dmn_now_ms() < deadline_ms) {
        pthread_mutex_lock(&m->mu);
        bool idle = m->n_active == 0 && !m->inbox;
        pthread_mutex_unlock(&m->mu);
        if (idle)
            return;
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    }
    /* Out of time: end what runs as cancelled so clients get a final event. */
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n_active; i++)
        m->active[i]->cancelled = true;
    for (job *q = m->inbox; q; q = q->next)
        q->cancelled = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < 100; i++) {
        pthread_mutex_lock(&m->mu);
        bool idle = m->n_active == 0 && !m->inbox;
        pthread_mutex_unlock(&m->mu);
        if (idle)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    }
}

void srv_model_free(srv_model *m)
{
    if (!m)
        return;
    bus_pull_loop_stop(m->loop);
    if (m->running) {
        pthread_mutex_lock(&m->mu);
        m->stop = true;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    bus_pull_destroy(m->pull);
    /* Unfinished jobs stay unacked: JetStream redelivers them to another worker. */
    for (int i = 0; i < m->n_active; i++)
        job_free(m->active[i]);
    while (m->inbox) {
        job *j = m->inbox;
        m->inbox = j->next;
        job_free(j);
    }
    free(m->items);
    free(m->item_job);
    eng_ctx_free(m->ec);
    eng_model_free(m->em);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void srv_model_status(srv_model *m, srv_status *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&m->mu);
    st->max_slots = (uint32_t)m->o.max_seqs;
    int free_slots = m->draining ? 0 : m->o.max_seqs - m->n_active - m->n_inbox;
    st->free_slots = free_slots > 0 ? (uint32_t)free_slots : 0;
    st->running = (uint32_t)m->n_active;
    st->waiting = (uint32_t)m->n_inbox;
    st->kv_budget = m->o.kv_budget;
    st->kv_free = m->kv_free;
    pthread_mutex_unlock(&m->mu);
    st->context_length = (uint32_t)m->n_ctx;
    st->arch = m->info.arch;
    st->quant = m->quant;
    snprintf(st->queue_subject, sizeof st->queue_subject, "%s", m->subject);
}
