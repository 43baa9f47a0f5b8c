/* test_utf8.c — the shared UTF-8 check (libshared/utf8.c). */
#include <string.h>

#include "../harness.h"
#include "utf8.h"

static bool ok(const char *s)
{
    return utf8_valid(s, strlen(s));
}

TEST(utf8_accepts_well_formed_text_of_every_length)
{
    CHECK(ok(""));
    CHECK(ok("plain ASCII"));
    CHECK(ok("\xc3\xa9t\xc3\xa9")); /* été */
    CHECK(ok("\xe2\x82\xac 5"));    /* € */
    CHECK(ok("\xf0\x9f\x99\x82"));  /* U+1F642 */
    CHECK(ok("\xf4\x8f\xbf\xbf"));  /* U+10FFFF, the last code point */
    CHECK(ok("\xed\x9f\xbf"));      /* U+D7FF, just below the surrogates */
}

TEST(utf8_refuses_what_postgresql_would_refuse)
{
    CHECK(!ok("\xc0\xaf"));         /* overlong '/' */
    CHECK(!ok("\xe0\x80\xaf"));     /* overlong, 3 bytes */
    CHECK(!ok("\xf0\x80\x80\xaf")); /* overlong, 4 bytes */
    CHECK(!ok("\xed\xa0\x80"));     /* a surrogate (U+D800) */
    CHECK(!ok("\xf4\x90\x80\x80")); /* past U+10FFFF */
    CHECK(!ok("\xf5\x80\x80\x80"));
    CHECK(!ok("\x80"));            /* a lone continuation byte */
    CHECK(!ok("\xe2\x82"));        /* truncated */
    CHECK(!ok("ab\xe2\x28\xa1"));  /* bad continuation */
    CHECK(!utf8_valid("a\0b", 3)); /* NUL */
    CHECK(utf8_valid("a\0b", 1));  /* only the first len bytes count */
}
