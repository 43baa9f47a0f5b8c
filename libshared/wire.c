/* wire.c — status ↔ protocol error ↔ HTTP status mapping (see wire.h). Pure functions. */
#include "wire.h"

Parley__V1__ErrorCode wire_code_from_status(pl_status s)
{
    switch (s) {
    case PL_OK:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_OK;
    case PL_INVALID:
    case PL_CORRUPT:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_INVALID;
    case PL_NOT_FOUND:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND;
    case PL_UNAUTHENTICATED:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_UNAUTHENTICATED;
    case PL_PERMISSION:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_PERMISSION;
    case PL_OVERLOADED:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_OVERLOADED;
    case PL_RATE_LIMITED:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED;
    case PL_UNAVAILABLE:
    case PL_BUS:
    case PL_DB:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_UNAVAILABLE;
    case PL_TIMEOUT:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_TIMEOUT;
    case PL_CANCELLED:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_CANCELLED;
    case PL_TOO_LARGE:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_TOO_LARGE;
    case PL_EXISTS:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_CONFLICT;
    case PL_UNSUPPORTED:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_UNSUPPORTED;
    default:
        return PARLEY__V1__ERROR_CODE__ERROR_CODE_INTERNAL;
    }
}

pl_status wire_status_from_code(Parley__V1__ErrorCode c)
{
    switch (c) {
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_OK:
        return PL_OK;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_INVALID:
        return PL_INVALID;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND:
        return PL_NOT_FOUND;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_UNAUTHENTICATED:
        return PL_UNAUTHENTICATED;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_PERMISSION:
        return PL_PERMISSION;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_OVERLOADED:
        return PL_OVERLOADED;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED:
        return PL_RATE_LIMITED;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_UNAVAILABLE:
        return PL_UNAVAILABLE;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_TIMEOUT:
        return PL_TIMEOUT;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_CANCELLED:
        return PL_CANCELLED;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_TOO_LARGE:
        return PL_TOO_LARGE;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_CONFLICT:
        return PL_EXISTS;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_UNSUPPORTED:
        return PL_UNSUPPORTED;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_WORKER_LOST:
        return PL_UNAVAILABLE;
    default:
        return PL_ERR;
    }
}

int wire_http_status(Parley__V1__ErrorCode c)
{
    switch (c) {
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_OK:
        return 200;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_INVALID:
        return 400;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_NOT_FOUND:
        return 404;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_UNAUTHENTICATED:
        return 401;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_PERMISSION:
        return 403;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_OVERLOADED:
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED:
        return 429;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_UNAVAILABLE:
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_WORKER_LOST:
        return 503;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_TIMEOUT:
        return 504;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_CANCELLED:
        return 499;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_TOO_LARGE:
        return 413;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_CONFLICT:
        return 409;
    case PARLEY__V1__ERROR_CODE__ERROR_CODE_UNSUPPORTED:
        return 415;
    default:
        return 500;
    }
}

const char *wire_error_type(int http_status)
{
    switch (http_status) {
    case 400:
    case 404:
    case 409:
    case 413:
    case 415:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    default:
        return http_status >= 500 ? "server_error" : "invalid_request_error";
    }
}

void wire_error_init(Parley__V1__Error *e, pl_status s, const char *message)
{
    parley__v1__error__init(e);
    e->code = wire_code_from_status(s);
    e->message = (char *)pl_err_text(message); /* no source locations on the wire */
    e->retryable = s == PL_OVERLOADED || s == PL_UNAVAILABLE || s == PL_TIMEOUT || s == PL_BUS ||
                   s == PL_RATE_LIMITED;
}

const char *wire_finish_name(Parley__V1__FinishReason f)
{
    switch (f) {
    case PARLEY__V1__FINISH_REASON__FINISH_REASON_STOP:
        return "stop";
    case PARLEY__V1__FINISH_REASON__FINISH_REASON_LENGTH:
        return "length";
    case PARLEY__V1__FINISH_REASON__FINISH_REASON_CANCELLED:
        return "cancelled";
    case PARLEY__V1__FINISH_REASON__FINISH_REASON_CONTENT_FILTER:
        return "content_filter";
    default:
        return "error";
    }
}
