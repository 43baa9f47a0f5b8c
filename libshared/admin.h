/* admin.h — the small HTTP server each daemon exposes for operators (libmicrohttpd).
 *
 * Serves GET /healthz, /readyz and /metrics by calling back into the owner; one internal
 * thread (select/poll), a handful of connections, no request bodies. It deliberately knows
 * nothing about daemons: dmn_main wires it. */
#ifndef PARLEY_ADMIN_H
#define PARLEY_ADMIN_H

#include <stdbool.h>

#include "status.h"

typedef struct adm_server adm_server;

/* Renders a response for `path`: returns the HTTP status and sets *body (malloc'd, caller of
 * the callback frees) and *content_type (static). Called on the admin thread. */
typedef int (*adm_handler)(const char *path, char **body, const char **content_type, void *arg);

/* Listens on addr:port (port 0 picks a free one; adm_port() tells which). PL_IO with a message
 * naming the address when the port is in use. *out owned by the caller. */
pl_status adm_start(const char *addr, int port, adm_handler h, void *arg, adm_server **out);
int adm_port(const adm_server *s);
void adm_stop(adm_server *s); /* accepts NULL */

#endif
