/* safetycheck.h — the client side of the blocking safety pre-check (SUBJ_SAFETY_CHECK), shared by
 * chat (product turns) and the gateway (/v1): one request to parley-safety with a deadline, its
 * latency observed, and the answer reduced to what a caller acts on. What to do without an
 * answer (allow or refuse) is the caller's policy, not decided here. Thread-safe. */
#ifndef PARLEY_SAFETYCHECK_H
#define PARLEY_SAFETYCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "metrics.h"

typedef enum sfc_answer {
    SFC_ALLOW,     /* safety answered: the text may go on */
    SFC_BLOCK,     /* safety answered: blocked; the category is filled in */
    SFC_NO_ANSWER, /* no answer within the deadline, or an error answer (logged here) */
} sfc_answer;

/* Asks safety about `text` within `timeout_ms`. `latency` (a histogram family without labels;
 * may be NULL) observes the seconds the question took. On SFC_BLOCK `category` (cap bytes)
 * receives the first blocking verdict's category ("blocked content" when none is named);
 * otherwise it is "". */
sfc_answer sfc_check(bus *b, const char *rid, const char *user_id, const char *text,
                     int64_t timeout_ms, met_family *latency, char *category, size_t cap);

#endif
