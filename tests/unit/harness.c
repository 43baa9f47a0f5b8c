/* harness.c — registry and runner for the unit tests (see harness.h). Single-threaded: tests
 * run one after another in registration order, sorted by file then name. */
#include "harness.h"

#include <stdarg.h>
#include <stdlib.h>

typedef struct th_test {
    const char *name, *file;
    th_fn fn;
} th_test;

static th_test *tests;
static size_t n_tests, cap_tests;
static int cur_failed, cur_skipped;
static unsigned long long n_checks;

void th_register(const char *name, const char *file, th_fn fn)
{
    if (n_tests == cap_tests) {
        cap_tests = cap_tests ? cap_tests * 2 : 64;
        tests = realloc(tests, cap_tests * sizeof *tests);
        if (!tests) {
            fputs("harness: out of memory\n", stderr);
            abort();
        }
    }
    tests[n_tests++] = (th_test){name, file, fn};
}

void th_checked(void)
{
    n_checks++;
}

void th_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    cur_failed++;
    fprintf(stderr, "  %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void th_skip(const char *why)
{
    cur_skipped = 1;
    printf("  skipped: %s\n", why);
}

static int by_file_then_name(const void *a, const void *b)
{
    const th_test *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0, skipped = 0;

    qsort(tests, n_tests, sizeof *tests, by_file_then_name);
    for (size_t i = 0; i < n_tests; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        cur_failed = cur_skipped = 0;
        printf("%s ...\n", tests[i].name);
        fflush(stdout);
        tests[i].fn();
        if (cur_failed) {
            printf("FAIL %s (%d checks failed)\n", tests[i].name, cur_failed);
            failed++;
        } else if (cur_skipped) {
            skipped++;
        } else {
            passed++;
        }
        fflush(stdout);
    }
    printf("%llu checks\n", n_checks);
    if (skipped)
        printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    else
        printf("%d passed, %d failed\n", passed, failed);
    free(tests);
    return failed ? 1 : 0;
}
