/* convs_stream.h — the SSE stream of a chat turn's answer, resumable (product API).
 *
 * A turn's deltas go to their own subject (SUBJ_TURN_DELTA_PREFIX + request id), which the
 * PARLEY_DELTAS stream keeps for a while. Every reader — the POST that started the turn, a
 * reconnect, a second tab — reads that subject from its first message with an ordered
 * JetStream consumer, so what it sees has no gap, no duplicate and the same order for all.
 *
 * Event ids are byte offsets into the answer: a delta's id is the number of answer bytes sent
 * up to and including it ("0" for the start event). A client that reconnects with
 * Last-Event-ID: N gets the answer from byte N on, whether it is replayed from the stream (the
 * answer is still being written) or cut from the stored text (it has ended, or its deltas
 * expired). The terminal events have ids "N.error" and "N.done"; a reconnect after "done" is
 * answered 204 (EventSource stops reconnecting).
 *
 * Events (each `id:` + `data:` with a JSON object whose "type" names it):
 *   start {type, conversation_id, user_message_id, assistant_message_id, request_id, model}
 *   delta {type, text}
 *   error {type, message, code}                (before done, when the answer failed)
 *   done  {type, status: complete|stopped|failed, finish_reason, usage}
 *
 * The connection machinery (suspend/resume, keep-alives, shutdown) is stream.c's: each stream
 * is a gws fed from here instead of from a core subscription. Closing the connection does not
 * stop the answer (the client may come back); only the stop route does.
 *
 * Threading: handlers on MHD threads; deltas on the JetStream subscription's thread, under the
 * gws lock. */
#ifndef PARLEY_GW_CONVS_STREAM_H
#define PARLEY_GW_CONVS_STREAM_H

#include <stdint.h>

#include "gateway.h"
#include "parley.pb-c.h"
#include "product.h"

/* Where a client resumes: from_bytes of the answer already received; finished = it has seen
 * the done event. */
typedef struct cvs_resume {
    uint64_t from_bytes;
    bool resumed;  /* a Last-Event-ID was given: no start event */
    bool finished; /* it ended with "….done": nothing is left */
} cvs_resume;

/* Parses a Last-Event-ID header (NULL: from the start). */
cvs_resume cvs_parse_last_event_id(const char *h);

/* Answers with the SSE stream of request `request_id`'s answer read from PARLEY_DELTAS;
 * `start` (taken; NULL for none) is sent first with id 0 unless resuming. Adds quota headers
 * from `u`. On failure (bus down) answers 503. */
enum MHD_Result cvs_stream_live(gw *g, http_req *r, const gw_user *u, const char *request_id,
                                const char *delta_subject, cJSON *start, cvs_resume from);

/* Answers with an already finished answer `m` as SSE (start, one delta with the rest of the
 * text, done). `start` as above. */
enum MHD_Result cvs_stream_stored(http_req *r, const gw_user *u, const Parley__V1__Message *m,
                                  cJSON *start, cvs_resume from);

/* "complete", "pending", "stopped", "failed". */
const char *cvs_status_name(Parley__V1__MessageStatus s);

#endif
