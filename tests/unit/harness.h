/* harness.h — the unit-test harness: tests register themselves, one binary runs them all.
 *
 *   TEST(cfg_parses_port) { CHECK(x == 1); CHECK_EQ_INT(a, b); CHECK_STR(s, "ok"); }
 *
 * A failed CHECK records file:line and the test goes on; a test passes when none failed.
 * `unit-tests [substring]` runs the tests whose name contains the substring. The last line is
 * "N passed, N failed" (", N skipped" when a test called SKIP()). */
#ifndef PARLEY_TEST_HARNESS_H
#define PARLEY_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef void (*th_fn)(void);
void th_register(const char *name, const char *file, th_fn fn);
void th_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void th_skip(const char *why);
/* Counts one executed check (for the summary); used by the CHECK macros. */
void th_checked(void);

#define TEST(name)                                                                                 \
    static void name(void);                                                                        \
    __attribute__((constructor)) static void th_reg_##name(void)                                   \
    {                                                                                              \
        th_register(#name, __FILE__, name);                                                        \
    }                                                                                              \
    static void name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        th_checked();                                                                              \
        if (!(cond))                                                                               \
            th_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                       \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long th_a = (long long)(a), th_b = (long long)(b);                                    \
        th_checked();                                                                              \
        if (th_a != th_b)                                                                          \
            th_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, th_a, th_b);             \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *th_a = (a), *th_b = (b);                                                       \
        th_checked();                                                                              \
        if (!th_a || !th_b || strcmp(th_a, th_b) != 0)                                             \
            th_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,                      \
                    th_a ? th_a : "(null)", th_b ? th_b : "(null)");                               \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double th_a = (double)(a), th_b = (double)(b);                                             \
        th_checked();                                                                              \
        if (!(fabs(th_a - th_b) <= (tol)))                                                         \
            th_fail(__FILE__, __LINE__, "%s ~ %s: %g vs %g (tol %g)", #a, #b, th_a, th_b,          \
                    (double)(tol));                                                                \
    } while (0)

/* Marks the running test skipped (with a reason printed as "skipped: <why>") and returns. */
#define SKIP(why)                                                                                  \
    do {                                                                                           \
        th_skip(why);                                                                              \
        return;                                                                                    \
    } while (0)

#endif
