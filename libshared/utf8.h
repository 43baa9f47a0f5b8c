/* utf8.h — the one UTF-8 check every daemon applies before text reaches PostgreSQL. */
#ifndef PARLEY_UTF8_H
#define PARLEY_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s[0..len) is well-formed UTF-8 with no NUL byte: no overlong forms, surrogates or
 * code points past U+10FFFF, exactly what PostgreSQL's text type accepts. Text that is not is
 * refused where it enters (a clear 400, a failed verdict) rather than failing deep in storage
 * as an error indistinguishable from a database that is down. */
bool utf8_valid(const char *s, size_t len);

#endif
