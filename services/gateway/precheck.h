/* precheck.h — the blocking safety pre-check of /v1 requests (precheck.c). */
#ifndef PARLEY_GW_PRECHECK_H
#define PARLEY_GW_PRECHECK_H

#include "gateway.h"
#include "parley.pb-c.h"

typedef enum gw_precheck_result {
    GW_PRECHECK_ALLOW,   /* submit as usual */
    GW_PRECHECK_BLOCKED, /* do not submit: the refusal delta is on `delta_subject` already */
    GW_PRECHECK_REFUSED, /* no answer in time under the "refuse" policy: answer 503 */
} gw_precheck_result;

/* Checks the last user message of `ir` with parley-safety when --safety-precheck is on
 * (GW_PRECHECK_ALLOW at once otherwise). The caller must already be subscribed to
 * `delta_subject` (the refusal of a blocked prompt is published there). Blocks for at most
 * --safety-precheck-timeout. */
gw_precheck_result gw_precheck(gw *g, const char *rid, const char *user_id,
                               const Parley__V1__InferRequest *ir, const char *delta_subject);

#endif
