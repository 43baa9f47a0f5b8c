/* test_static.c — the web files' pure helpers (services/gateway/static.c): file names that may
 * be served, content types, and the web root's resolution. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../harness.h"
#include "static.h"

TEST(static_name_ok_accepts_flat_names)
{
    CHECK(gw_static_name_ok("app.js"));
    CHECK(gw_static_name_ok("style.css"));
    CHECK(gw_static_name_ok("favicon-2_x.svg"));
    CHECK(gw_static_name_ok("a"));
}

TEST(static_name_ok_refuses_escapes)
{
    CHECK(!gw_static_name_ok(NULL));
    CHECK(!gw_static_name_ok(""));
    CHECK(!gw_static_name_ok(".."));
    CHECK(!gw_static_name_ok("../Makefile"));
    CHECK(!gw_static_name_ok("a/../../b"));
    CHECK(!gw_static_name_ok("sub/app.js"));
    CHECK(!gw_static_name_ok("/etc/passwd"));
    CHECK(!gw_static_name_ok(".hidden"));
    CHECK(!gw_static_name_ok("a..b"));
    CHECK(!gw_static_name_ok("app.js\\x"));
    CHECK(!gw_static_name_ok("app%2f.js"));
    CHECK(!gw_static_name_ok("a b.js"));
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK(!gw_static_name_ok(longname));
}

TEST(static_content_types_by_extension)
{
    CHECK_STR(gw_static_content_type("index.html"), "text/html; charset=utf-8");
    CHECK_STR(gw_static_content_type("x/app.JS"), "text/javascript; charset=utf-8");
    CHECK_STR(gw_static_content_type("style.css"), "text/css; charset=utf-8");
    CHECK_STR(gw_static_content_type("f.svg"), "image/svg+xml");
    CHECK_STR(gw_static_content_type("data.json"), "application/json");
    CHECK_STR(gw_static_content_type("README"), "application/octet-stream");
    CHECK_STR(gw_static_content_type("archive.tar.gz"), "application/octet-stream");
    CHECK_STR(gw_static_content_type(NULL), "application/octet-stream");
}

TEST(static_resolve_root_uses_the_configured_folder)
{
    char dir[] = "/tmp/parley-static-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char out[PATH_MAX];
    CHECK(!gw_static_resolve_root(dir, out, sizeof out)); /* no index.html yet */
    CHECK_STR(out, dir);
    char index[PATH_MAX + 16];
    snprintf(index, sizeof index, "%s/index.html", dir);
    FILE *f = fopen(index, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("<!doctype html>", f);
        fclose(f);
    }
    CHECK(gw_static_resolve_root(dir, out, sizeof out));
    CHECK_STR(out, dir);
    unlink(index);
    rmdir(dir);
}
