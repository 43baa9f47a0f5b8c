/* wire.h — glue between pl_status and the protocol's Error message, and HTTP statuses.
 *
 * Every daemon answers failures with a parley.v1.Error; these helpers convert in one place so a
 * status means the same thing on the wire, in logs and at the HTTP edge. */
#ifndef PARLEY_WIRE_H
#define PARLEY_WIRE_H

#include <stdbool.h>

#include "parley.pb-c.h"
#include "status.h"

Parley__V1__ErrorCode wire_code_from_status(pl_status s);
pl_status wire_status_from_code(Parley__V1__ErrorCode c);
/* The HTTP status an error code maps to (400, 401, 403, 404, 409, 413, 415, 429, 500, 503, 504). */
int wire_http_status(Parley__V1__ErrorCode c);
/* OpenAI-style error "type" for an HTTP status ("invalid_request_error", "authentication_error",
 * "permission_error", "not_found_error", "rate_limit_error", "server_error"). Static string. */
const char *wire_error_type(int http_status);

/* Fills a caller-owned Error with borrowed `message` (must outlive the message's use). */
/* The name of a finish reason as parley's own APIs and metrics spell it: stop, length,
 * cancelled, content_filter, error (anything else). The OpenAI-compatible API maps to its own
 * smaller set (openai.c). */
const char *wire_finish_name(Parley__V1__FinishReason f);
void wire_error_init(Parley__V1__Error *e, pl_status s, const char *message);

#endif
