/* test_cfg.c — option tables: sources and precedence, every type, errors that name the flag,
 * --help / --version, several tables, and the usage text. */
#include "../harness.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "cfg.h"

typedef struct tcfg {
    const char *url;
    int64_t workers;
    bool verbose;
    double ratio;
    int port;
    int64_t timeout_ms;
    uint64_t buffer;
    const char *nodef;
    int64_t zero;
} tcfg;

static const cfg_opt topts[] = {
    {"nats-url", CFG_STR, offsetof(tcfg, url), "nats://127.0.0.1:4222", 0, 0, "NATS server URL"},
    {"workers", CFG_INT, offsetof(tcfg, workers), "4", 1, 64, "worker threads"},
    {"verbose", CFG_BOOL, offsetof(tcfg, verbose), "false", 0, 0, "say more"},
    {"ratio", CFG_DOUBLE, offsetof(tcfg, ratio), "0.5", 0, 1, "a fraction"},
    {"admin-port", CFG_PORT, offsetof(tcfg, port), "9100", 0, 0, "admin HTTP port"},
    {"timeout", CFG_DURATION, offsetof(tcfg, timeout_ms), "15s", 100, 3600000, "how long"},
    {"buffer", CFG_BYTES, offsetof(tcfg, buffer), "64K", 0, 0, "buffer size"},
    {"nodef", CFG_STR, offsetof(tcfg, nodef), NULL, 0, 0, "no default"},
    {"zero", CFG_INT, offsetof(tcfg, zero), NULL, 5, 10, "bounded, no default"},
};
#define N_TOPTS (sizeof topts / sizeof topts[0])

static const char *const env_names[] = {
    "PARLEY_NATS_URL", "PARLEY_WORKERS", "PARLEY_VERBOSE", "PARLEY_RATIO", "PARLEY_ADMIN_PORT",
    "PARLEY_TIMEOUT",  "PARLEY_BUFFER",  "PARLEY_NODEF",   "PARLEY_ZERO",  "PARLEY_MODEL",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
        unsetenv(env_names[i]);
}

/* Parses a NULL-terminated argument list (program name first) against topts. */
static cfg_result run(tcfg *c, char *err, size_t errlen, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    while (args[argc] && argc < 31) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    const cfg_opt *tables[] = {topts};
    size_t n[] = {N_TOPTS};
    void *outs[] = {c};
    memset(c, 0xAB, sizeof *c);
    return cfg_parse(tables, n, outs, 1, argc, argv, err, errlen);
}

#define ARGS(...) ((const char *const[]){"prog", __VA_ARGS__, NULL})

TEST(cfg_defaults_apply_when_nothing_is_given)
{
    tcfg c;
    char err[256];
    clear_env();
    CHECK_EQ_INT(run(&c, err, sizeof err, (const char *const[]){"prog", NULL}), CFG_RUN);
    CHECK_STR(c.url, "nats://127.0.0.1:4222");
    CHECK_EQ_INT(c.workers, 4);
    CHECK(!c.verbose);
    CHECK_NEAR(c.ratio, 0.5, 0);
    CHECK_EQ_INT(c.port, 9100);
    CHECK_EQ_INT(c.timeout_ms, 15000);
    CHECK_EQ_INT(c.buffer, 65536);
    CHECK_STR(c.nodef, "");
    CHECK_EQ_INT(c.zero, 0);
    CHECK_STR(err, "");
}

TEST(cfg_flags_in_both_forms_and_every_type)
{
    tcfg c;
    char err[256];
    clear_env();
    CHECK_EQ_INT(
        run(&c, err, sizeof err,
            ARGS("--nats-url", "nats://a:1", "--workers=16", "--verbose", "--ratio", "0.25",
                 "--admin-port=0", "--timeout", "2m", "--buffer=256M", "--zero", "-7")),
        CFG_BAD);
    CHECK_STR(err, "option --zero: '-7' is out of range 5..10");
    CHECK_EQ_INT(
        run(&c, err, sizeof err,
            ARGS("--nats-url", "nats://a:1", "--workers=16", "--verbose", "--ratio", "0.25",
                 "--admin-port=0", "--timeout", "2m", "--buffer=256M", "--zero", "7", "--nodef=")),
        CFG_RUN);
    CHECK_STR(c.url, "nats://a:1");
    CHECK_EQ_INT(c.workers, 16);
    CHECK(c.verbose);
    CHECK_NEAR(c.ratio, 0.25, 0);
    CHECK_EQ_INT(c.port, 0);
    CHECK_EQ_INT(c.timeout_ms, 120000);
    CHECK_EQ_INT(c.buffer, 256ull << 20);
    CHECK_EQ_INT(c.zero, 7);
    CHECK_STR(c.nodef, "");
    /* The last occurrence wins. */
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--workers", "2", "--workers", "3")), CFG_RUN);
    CHECK_EQ_INT(c.workers, 3);
}

TEST(cfg_boolean_spellings)
{
    tcfg c;
    char err[256];
    clear_env();
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--verbose", "--no-verbose")), CFG_RUN);
    CHECK(!c.verbose);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--verbose=true")), CFG_RUN);
    CHECK(c.verbose);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--verbose=yes")), CFG_RUN);
    CHECK(c.verbose);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--verbose", "--verbose=false")), CFG_RUN);
    CHECK(!c.verbose);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--verbose=0")), CFG_RUN);
    CHECK(!c.verbose);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--verbose=maybe")), CFG_BAD);
    CHECK_STR(err, "option --verbose: 'maybe' is not a boolean (true or false)");
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--no-verbose=1")), CFG_BAD);
    CHECK_STR(err, "option --no-verbose takes no value");
    /* A boolean never takes the next word. */
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--verbose", "true")), CFG_BAD);
    CHECK_STR(err, "unexpected argument 'true'");
    /* --no- only applies to booleans. */
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--no-workers")), CFG_BAD);
    CHECK_STR(err, "unknown option --no-workers");
}

TEST(cfg_precedence_flag_over_env_over_default)
{
    tcfg c;
    char err[256];
    clear_env();
    setenv("PARLEY_WORKERS", "8", 1);
    setenv("PARLEY_NATS_URL", "nats://env:4222", 1);
    setenv("PARLEY_VERBOSE", "true", 1);
    CHECK_EQ_INT(run(&c, err, sizeof err, (const char *const[]){"prog", NULL}), CFG_RUN);
    CHECK_EQ_INT(c.workers, 8);
    CHECK_STR(c.url, "nats://env:4222");
    CHECK(c.verbose);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--workers", "16", "--no-verbose")), CFG_RUN);
    CHECK_EQ_INT(c.workers, 16);
    CHECK(!c.verbose);
    CHECK_STR(c.url, "nats://env:4222");
    /* An empty variable is unset for numbers but sets the empty string for strings. */
    setenv("PARLEY_WORKERS", "", 1);
    setenv("PARLEY_NATS_URL", "", 1);
    CHECK_EQ_INT(run(&c, err, sizeof err, (const char *const[]){"prog", NULL}), CFG_RUN);
    CHECK_EQ_INT(c.workers, 4);
    CHECK_STR(c.url, "");
    clear_env();
}

TEST(cfg_bad_environment_value_names_flag_and_variable)
{
    tcfg c;
    char err[256];
    clear_env();
    setenv("PARLEY_ADMIN_PORT", "70000", 1);
    CHECK_EQ_INT(run(&c, err, sizeof err, (const char *const[]){"prog", NULL}), CFG_BAD);
    CHECK_STR(err,
              "option --admin-port (from PARLEY_ADMIN_PORT): '70000' is out of range 0..65535");
    /* A flag does not rescue a bad environment value: the environment is checked too. */
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--admin-port", "1")), CFG_BAD);
    setenv("PARLEY_ADMIN_PORT", "http", 1);
    CHECK_EQ_INT(run(&c, err, sizeof err, (const char *const[]){"prog", NULL}), CFG_BAD);
    CHECK_STR(err, "option --admin-port (from PARLEY_ADMIN_PORT): 'http' is not an integer");
    clear_env();
}

TEST(cfg_errors_name_the_flag)
{
    static const struct {
        const char *a, *b, *err;
    } cases[] = {
        {"--admin-port", "70000", "option --admin-port: '70000' is out of range 0..65535"},
        {"--admin-port", "-1", "option --admin-port: '-1' is out of range 0..65535"},
        {"--admin-port", "80x", "option --admin-port: '80x' is not an integer"},
        {"--foo", NULL, "unknown option --foo"},
        {"--foo=1", NULL, "unknown option --foo"},
        {"x", NULL, "unexpected argument 'x'"},
        {"-x", NULL, "unknown option -x"},
        {"--", NULL, "unexpected argument '--'"},
        {"--workers", NULL, "option --workers needs a value"},
        {"--workers", "--verbose", "option --workers needs a value"},
        {"--workers=0", NULL, "option --workers: '0' is out of range 1..64"},
        {"--workers", "65", "option --workers: '65' is out of range 1..64"},
        {"--workers", "", "option --workers: '' is not an integer"},
        {"--workers", " 5", "option --workers: ' 5' is not an integer"},
        {"--workers", "99999999999999999999",
         "option --workers: '99999999999999999999' is out "
         "of range 1..64"},
        {"--ratio", "2", "option --ratio: '2' is out of range 0..1"},
        {"--ratio", "nan", "option --ratio: 'nan' is not a number"},
        {"--ratio", "0.5x", "option --ratio: '0.5x' is not a number"},
        {"--timeout", "50ms", "option --timeout: '50ms' is out of range 100ms..1h"},
        {"--timeout", "2h", "option --timeout: '2h' is out of range 100ms..1h"},
        {"--timeout", "soon",
         "option --timeout: 'soon' is not a duration (like 250ms, 15s, 2m, "
         "1h)"},
        {"--buffer", "lots", "option --buffer: 'lots' is not a size (like 512, 64K, 256M, 2G)"},
    };
    tcfg c;
    char err[256];
    clear_env();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {"prog", cases[i].a, cases[i].b, NULL};
        CHECK_EQ_INT(run(&c, err, sizeof err, args), CFG_BAD);
        CHECK_STR(err, cases[i].err);
    }
    /* A short buffer still gets a NUL-terminated prefix; a NULL buffer is allowed. */
    char small[10];
    CHECK_EQ_INT(run(&c, small, sizeof small, ARGS("--foo")), CFG_BAD);
    CHECK_STR(small, "unknown o");
    CHECK_EQ_INT(run(&c, NULL, 0, ARGS("--foo")), CFG_BAD);
}

TEST(cfg_help_and_version_win_anywhere)
{
    tcfg c;
    char err[256];
    clear_env();
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--help")), CFG_HELP);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("-h")), CFG_HELP);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--version")), CFG_VERSION);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--workers", "3", "--help")), CFG_HELP);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--bogus", "--help")), CFG_HELP);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--admin-port", "70000", "--version")), CFG_VERSION);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--version", "x", "--help")), CFG_HELP);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--help", "--version")), CFG_HELP);
    setenv("PARLEY_WORKERS", "nope", 1);
    CHECK_EQ_INT(run(&c, err, sizeof err, ARGS("--help")), CFG_HELP);
    clear_env();
}

typedef struct daemon_cfg {
    const char *model;
    int64_t workers;
} daemon_cfg;

static const cfg_opt dopts[] = {
    {"model", CFG_STR, offsetof(daemon_cfg, model), "tiny", 0, 0, "model name"},
    {"workers", CFG_INT, offsetof(daemon_cfg, workers), "2", 0, 0, "duplicate of the common one"},
};

TEST(cfg_several_tables_parse_in_one_pass_first_table_wins)
{
    tcfg c;
    daemon_cfg d;
    char err[256];
    clear_env();
    const cfg_opt *tables[] = {topts, dopts};
    size_t n[] = {N_TOPTS, 2};
    void *outs[] = {&c, &d};
    char *argv[] = {"prog", "--model", "llama", "--workers", "9", "--verbose", NULL};
    setenv("PARLEY_MODEL", "from-env", 1);
    CHECK_EQ_INT(cfg_parse(tables, n, outs, 2, 6, argv, err, sizeof err), CFG_RUN);
    CHECK_STR(d.model, "llama");
    CHECK_EQ_INT(c.workers, 9);
    CHECK_EQ_INT(d.workers, 2); /* the later duplicate keeps its default */
    CHECK(c.verbose);
    char *argv2[] = {"prog", NULL};
    CHECK_EQ_INT(cfg_parse(tables, n, outs, 2, 1, argv2, err, sizeof err), CFG_RUN);
    CHECK_STR(d.model, "from-env");
    clear_env();
}

static const cfg_opt badopts[] = {
    {"level", CFG_INT, 0, "11", 0, 10, "bad default"},
};

TEST(cfg_bad_default_is_reported)
{
    int64_t v;
    char err[256];
    const cfg_opt *tables[] = {badopts};
    size_t n[] = {1};
    void *outs[] = {&v};
    char *argv[] = {"prog", NULL};
    CHECK_EQ_INT(cfg_parse(tables, n, outs, 1, 1, argv, err, sizeof err), CFG_BAD);
    CHECK_STR(err, "option --level (default): '11' is out of range 0..10");
}

TEST(cfg_parse_duration_units_and_limits)
{
    static const struct {
        const char *s;
        int64_t ms;
    } ok[] = {{"0", 0},       {"250", 250},      {"250ms", 250},
              {"15s", 15000}, {"2m", 120000},    {"1h", 3600000},
              {"1.5s", 1500}, {"0.25h", 900000}, {"9223372036854775807", INT64_MAX}};
    static const char *const bad[] = {"",
                                      "s",
                                      "5x",
                                      "-5s",
                                      "1.5.2s",
                                      "5 s",
                                      " 5s",
                                      "5S",
                                      ".5s",
                                      "5.s",
                                      "1d",
                                      "9223372036854775808",
                                      "9999999999999999h",
                                      "99999999999999999999"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        CHECK_EQ_INT(cfg_parse_duration(ok[i].s, &v), PL_OK);
        CHECK_EQ_INT(v, ok[i].ms);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = -1;
        CHECK_EQ_INT(cfg_parse_duration(bad[i], &v), PL_INVALID);
        CHECK_EQ_INT(v, -1);
    }
    int64_t v;
    CHECK_EQ_INT(cfg_parse_duration(NULL, &v), PL_INVALID);
}

TEST(cfg_parse_bytes_units_and_limits)
{
    static const struct {
        const char *s;
        uint64_t b;
    } ok[] = {{"0", 0},
              {"512", 512},
              {"512B", 512},
              {"64K", 65536},
              {"64KiB", 65536},
              {"64kb", 65536},
              {"256M", 256ull << 20},
              {"2G", 2ull << 30},
              {"2GiB", 2ull << 30},
              {"1T", 1ull << 40},
              {"1.5K", 1536},
              {"18446744073709551615", UINT64_MAX}};
    static const char *const bad[] = {
        "", "K", "x", "-1", "64 K", "64Q", "1.K", "18446744073709551616", "16777216T", "64KiBs"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 7;
        CHECK_EQ_INT(cfg_parse_bytes(ok[i].s, &v), PL_OK);
        CHECK(v == ok[i].b);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 7;
        CHECK_EQ_INT(cfg_parse_bytes(bad[i], &v), PL_INVALID);
        CHECK_EQ_INT(v, 7);
    }
}

/* The column (byte offset in its line) where `needle` starts, or -1. */
static long column_of(const char *text, const char *needle)
{
    const char *p = strstr(text, needle);
    if (!p)
        return -1;
    const char *line = p;
    while (line > text && line[-1] != '\n')
        line--;
    return (long)(p - line);
}

TEST(cfg_usage_lists_options_aligned)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        SKIP("open_memstream failed");
    const cfg_opt *tables[] = {topts, dopts};
    size_t n[] = {N_TOPTS, 2};
    cfg_usage(f, "parley-test", "Does test things.", tables, n, 2);
    fclose(f);

    CHECK(strncmp(buf, "usage: parley-test [options]\n", 29) == 0);
    CHECK(strstr(buf, "Does test things.") != NULL);
    CHECK(strstr(buf, "--admin-port <port>") != NULL);
    CHECK(strstr(buf, "--[no-]verbose") != NULL);
    CHECK(strstr(buf, "--timeout <duration>") != NULL);
    CHECK(strstr(buf, "--buffer <size>") != NULL);
    CHECK(strstr(buf, "--model <string>") != NULL);
    CHECK(strstr(buf, "--help") != NULL);
    CHECK(strstr(buf, "--version") != NULL);
    CHECK(strstr(buf, "admin HTTP port (default: 9100, range 0..65535, env: PARLEY_ADMIN_PORT)") !=
          NULL);
    CHECK(
        strstr(buf, "NATS server URL (default: \"nats://127.0.0.1:4222\", env: PARLEY_NATS_URL)") !=
        NULL);
    CHECK(strstr(buf, "how long (default: 15s, range 100ms..1h, env: PARLEY_TIMEOUT)") != NULL);
    /* The duplicate "workers" of the second table is not listed. */
    CHECK(strstr(buf, "duplicate of the common one") == NULL);
    /* Help texts start in one column. */
    long col = column_of(buf, "NATS server URL");
    CHECK(col > 0);
    CHECK_EQ_INT(column_of(buf, "worker threads"), col);
    CHECK_EQ_INT(column_of(buf, "say more"), col);
    CHECK_EQ_INT(column_of(buf, "how long"), col);
    CHECK_EQ_INT(column_of(buf, "model name"), col);
    CHECK_EQ_INT(column_of(buf, "print this help"), col);
    free(buf);
}
