/* chat.h — parley-chat's context, shared by its modules, and the calls they all make.
 *
 * Modules: turn.c (a ChatTurnRequest: quota, context, stored messages, inference submitted),
 * prompt.c (the prompt from a conversation's chain within the tier's window), persist.c (the
 * completion records: answers saved, usage counted, titles generated), sweep.c (pending
 * answers that nothing will finish), moderate.c (safety events and the blocking pre-check). main.c
 * is the configuration table and the wiring.
 *
 * One chat per process, created in main.c; read-only after start except the metrics (atomic)
 * and the handles owned by each module. */
#ifndef PARLEY_CHAT_H
#define PARLEY_CHAT_H

#include <stdint.h>

#include "bgtask.h"
#include "bus.h"
#include "daemon.h"
#include "jsetup.h"
#include "parley.pb-c.h"
#include "status.h"

#define CHAT_TURN_THREADS 4

typedef struct chat_cfg {
    const char *default_model;  /* "" = the first model the infer-gateway lists */
    int64_t history_timeout_ms; /* one history RPC */
    int64_t turn_deadline_ms;   /* an answer's whole life; the sweeper waits longer */
    int64_t sweep_interval_ms;
    int64_t sweep_age_ms; /* pending answers older than this are failed */
    int64_t title_max_tokens;
    double temperature;
    int64_t safety_queue;                   /* moderate.c: safety events waiting to be published */
    bool safety_precheck;                   /* moderate.c: ask safety before queuing a prompt */
    int64_t safety_precheck_timeout_ms;     /* its deadline */
    const char *safety_precheck_on_timeout; /* "allow" or "refuse" */
} chat_cfg;

typedef struct mod_pub mod_pub;

typedef struct chat_sweeper chat_sweeper;

typedef struct chat {
    chat_cfg cfg;
    dmn *d;
    jsetup js;
    /* SUBJ_CHAT_TURN, queue group QUEUE_CHAT (turn.c): several members so that turns are
     * handled in parallel (libnats delivers each subscription's messages one at a time). */
    bus_sub *turn_subs[CHAT_TURN_THREADS];
    bgtask *consumer_setup; /* binds the completions consumer once it exists (persist.c) */
    bus_pull *pull;
    bus_pull_loop *loop;
    chat_sweeper *sweeper;          /* sweep.c */
    met_family *m_turns;            /* parley_chat_turns_total{result} */
    met_family *m_records;          /* parley_chat_completions_total{result} */
    mod_pub *mod;                   /* moderate.c */
    met_family *m_safety_events;    /* parley_chat_safety_events_total{result} */
    met_family *m_precheck;         /* parley_chat_safety_precheck_total{result} */
    met_family *m_precheck_latency; /* parley_chat_safety_precheck_duration_seconds */
} chat;

/* One history RPC. PL_OK: *rp is the reply (caller frees with
 * protobuf_c_message_free_unpacked). A reply carrying an Error returns that error's status with
 * its message recorded, and *rp is still set (quota.take fills the quota when refusing); NULL
 * only when no reply came (PL_UNAVAILABLE: history unreachable or silent). */
pl_status chat_history(chat *c, const char *request_id, Parley__V1__HistoryRequest *rq,
                       Parley__V1__HistoryReply **rp);

/* Submits an inference request to the infer-gateway. PL_OK when admitted; otherwise the
 * refusal's status and message (PL_OVERLOADED for a full queue, with *retry_after_ms when
 * given), or PL_UNAVAILABLE when the infer-gateway did not answer. */
pl_status chat_submit(chat *c, const Parley__V1__InferRequest *ir, uint32_t *retry_after_ms);

/* The model to use when neither the request nor the conversation names one: the configured
 * default, else the first model the infer-gateway lists (copied into buf). PL_UNAVAILABLE
 * when no model is served. */
pl_status chat_default_model(chat *c, char *buf, size_t cap);

/* `msg` without the "file.c:42: " prefixes that recorded errors carry (several when an error
 * was wrapped on its way here): the part meant for a person. Points into `msg`. */
const char *chat_plain_message(const char *msg);

/* Turn handling (turn.c): subscribes to SUBJ_CHAT_TURN. */
pl_status turn_start(chat *c);
void turn_stop(chat *c);

/* Completion records (persist.c): binds the durable consumer (retrying until jsetup created
 * it) and runs the pull loop. */
pl_status persist_start(chat *c);
void persist_stop(chat *c);

/* Safety (moderate.c): the event publisher's thread and queue. */
pl_status mod_start(chat *c);
void mod_stop(chat *c); /* flushes for a moment, then drops what is left (counted) */
/* Queues a SafetyEvent for a stored message (strings copied). Never blocks on the bus and never
 * fails the caller: a full queue drops the event (counted, logged). */
void mod_event(chat *c, const char *user_id, const char *conversation_id, const char *message_id,
               Parley__V1__Role role, const char *model, const char *text);

typedef enum mod_verdict {
    MOD_ALLOW,  /* go on */
    MOD_BLOCK,  /* safety blocks the prompt: answer with the refusal */
    MOD_REFUSE, /* no answer in time and the policy is "refuse" */
} mod_verdict;
/* The blocking pre-check of a prompt (MOD_ALLOW at once when it is off). On MOD_BLOCK the
 * blocking category is written into category[cap]. Waits at most the configured deadline. */
mod_verdict mod_precheck(chat *c, const char *rid, const char *user_id, const char *text,
                         char *category, size_t cap);

/* The sweeper (sweep.c): every sweep interval, asks history to fail pending answers older
 * than the sweep age. */
pl_status sweep_start(chat *c);
void sweep_stop(chat *c);

#endif
