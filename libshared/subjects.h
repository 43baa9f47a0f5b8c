/* subjects.h — every NATS subject, stream and consumer name, defined once.
 *
 * Core NATS (at-most-once) carries live traffic that has a truth elsewhere: token deltas
 * (the completion record is the truth), cancels, heartbeats, request-reply RPCs. JetStream
 * carries work that must survive a crash: inference jobs, completion records, safety events.
 * docs/protocol.md lists each subject with its message type and direction. */
#ifndef PARLEY_SUBJECTS_H
#define PARLEY_SUBJECTS_H

/* --- core NATS --------------------------------------------------------------------------- */
/* Worker → infer-gateway, WorkerHeartbeat, every heartbeat interval. */
#define SUBJ_HEARTBEAT "parley.v1.worker.heartbeat"
/* Request-reply to the infer-gateway (queue group QUEUE_INFER): ModelListRequest → ModelList. */
#define SUBJ_INFER_MODELS "parley.v1.infer.models"
/* Request-reply to the infer-gateway: InferRequest → InferAdmit. */
#define SUBJ_INFER_SUBMIT "parley.v1.infer.submit"
/* JobEvent from workers to every infer-gateway: started, first token, done. */
#define SUBJ_INFER_EVENTS "parley.v1.infer.events"
/* Broadcast Cancel to the infer-gateways and every worker. */
#define SUBJ_CANCEL "parley.v1.infer.cancel"
/* TokenDelta for one request: SUBJ_DELTA_PREFIX + request_id. */
#define SUBJ_DELTA_PREFIX "parley.v1.delta."
/* Request-reply to history (queue group QUEUE_HISTORY): HistoryRequest → HistoryReply. */
#define SUBJ_HISTORY_RPC "parley.v1.history.rpc"
/* Request-reply to chat (queue group QUEUE_CHAT): ChatTurnRequest → ChatTurnReply. */
#define SUBJ_CHAT_TURN "parley.v1.chat.turn"
/* Request-reply to safety (queue group QUEUE_SAFETY): SafetyCheckRequest → SafetyCheckReply. */
#define SUBJ_SAFETY_CHECK "parley.v1.safety.check"
/* Broadcast to every gateway (no queue group): AuthInvalidate, drop cached session lookups after
 * a log-out, a password change or an administrator's change to a user or tier. */
#define SUBJ_AUTH_INVALIDATE "parley.v1.auth.invalidate"

#define QUEUE_INFER   "infer-gateway"
#define QUEUE_HISTORY "history"
#define QUEUE_CHAT    "chat"
#define QUEUE_SAFETY  "safety"

/* --- JetStream --------------------------------------------------------------------------- */
/* Work queue of InferRequest per model: SUBJ_JOBS_PREFIX + model (model names are sanitised to
 * NATS tokens by subj_token()). Workers of a model share one durable pull consumer,
 * CONSUMER_JOBS_PREFIX + token. */
#define STREAM_JOBS          "PARLEY_JOBS"
#define SUBJ_JOBS_PREFIX     "parley.v1.jobs."
#define SUBJ_JOBS_ALL        "parley.v1.jobs.>"
#define CONSUMER_JOBS_PREFIX "workers-"

/* CompletionRecord from workers, consumed by chat (durable CONSUMER_COMPLETIONS). */
#define STREAM_COMPLETIONS   "PARLEY_COMPLETIONS"
#define SUBJ_COMPLETIONS     "parley.v1.completions"
#define CONSUMER_COMPLETIONS "chat"

/* Token deltas of chat turns, kept for a short while in memory so that a client that
 * reconnects (or a second tab) replays an answer from its start: chat gives each turn's
 * InferRequest the delta subject SUBJ_TURN_DELTA_PREFIX + request_id, which this stream
 * captures; the gateway reads it with an ordered consumer (bus_js_subscribe_ordered). Deltas
 * of the OpenAI-compatible API (SUBJ_DELTA_PREFIX + request_id) are not captured. */
#define STREAM_DELTAS          "PARLEY_DELTAS"
#define SUBJ_TURN_DELTA_PREFIX "parley.v1.delta.turn."
#define SUBJ_TURN_DELTAS_ALL   "parley.v1.delta.turn.>"

/* SafetyEvent from chat, consumed by safety (durable CONSUMER_SAFETY). */
#define STREAM_SAFETY      "PARLEY_SAFETY"
#define SUBJ_SAFETY_EVENTS "parley.v1.safety.events"
#define CONSUMER_SAFETY    "safety"

#include <stddef.h>

/* Writes `prefix` + a NATS-token-safe form of `name` into `out` (`cap` bytes): characters other
 * than [A-Za-z0-9_-] become '_'. Returns the length written, or 0 when it would not fit or
 * `name` is empty. */
size_t subj_token(char *out, size_t cap, const char *prefix, const char *name);

#endif
