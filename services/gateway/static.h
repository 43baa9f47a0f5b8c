/* static.h — the web app's files: the gateway serves web/ (the single-page app) and the
 * JavaScript libraries Debian packages for it (marked, highlight.js, DOMPurify).
 *
 * Routes (gw_routes_static, appended by main.c):
 *   GET /            the app (index.html) to a browser (Accept names text/html); the service's
 *                    JSON description {service, version, api} to anything else
 *   GET /static/{name}  a file of the web root (flat names only: [A-Za-z0-9._-], no leading dot)
 *   GET /vendor/{name}  one of a fixed set of names mapped to Debian's packaged files
 * plus gw_static_share_page, which the public share route (convs_share.c) calls to answer a
 * browser with the read-only share page.
 *
 * Files are read from disk on each request (so editing web/ needs no restart), with an ETag
 * (size and modification time) answered by 304 when it matches If-None-Match. App files are
 * "no-cache" (revalidated each load), vendor files cached for a day. The HTML carries a strict
 * Content-Security-Policy (scripts and styles from this origin only). */
#ifndef PARLEY_GW_STATIC_H
#define PARLEY_GW_STATIC_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway.h"

/* Decides the web root: `configured` when it is not empty, otherwise the first folder holding
 * index.html among <folder of the executable>/../../web (a build tree inside the repository),
 * /usr/share/parley/web and ./web. Writes it to `out` (cap bytes) and returns true; false (out
 * set to the best guess) when no candidate has index.html. */
bool gw_static_resolve_root(const char *configured, char *out, size_t cap);

/* The content type of a file name, by extension ("application/octet-stream" when unknown). */
const char *gw_static_content_type(const char *name);

/* Whether `name` is an acceptable file name under the web root: 1–128 characters of
 * [A-Za-z0-9._-], not starting with '.'. Rejects every path separator and "..". */
bool gw_static_name_ok(const char *name);

/* Whether the request asks for HTML (its Accept header names text/html). */
bool gw_static_wants_html(http_req *r);

/* Answers the share page (web/share.html) with `status` (200, or 404 for an unknown or revoked
 * link: the page then says so) and the public share's privacy headers. */
enum MHD_Result gw_static_share_page(gw *g, http_req *r, unsigned status);

extern const http_route gw_routes_static[];
extern const size_t gw_n_routes_static;

#endif
