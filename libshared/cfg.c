/* cfg.c — typed options from defaults, the environment and argv, validated, with --help text.
 *
 * Role: turns the cfg_opt tables a daemon declares into filled config structs, in three passes
 * over every option: its default, then PARLEY_<NAME> from the environment, then the flags, so
 * a flag beats the environment and the environment beats the default. Every value goes through
 * the same parser and bounds check, whichever source it came from, and an error names the
 * option ("option --admin-port: '70000' is out of range 0..65535") and, for the environment,
 * the variable.
 *
 * Several tables are parsed in one pass (the common options plus the daemon's own). An option
 * name that appears in more than one table belongs to the first table that has it: flags and
 * environment write only there, and the later duplicate keeps its default (and is left out of
 * --help).
 *
 * Flag syntax: "--name value", "--name=value"; booleans take "--name", "--no-name" and
 * "--name=true|false" (also 1/0, yes/no, on/off) but never a separate value word, so
 * "--verbose file" is an error, not verbose=file. "--name" followed by a word that starts
 * with "--" is "needs a value" (use "--name=--x" for such a value). "--help"/"-h" and
 * "--version" win wherever they appear, even after an error. An empty environment variable
 * counts as unset except for string options, where it sets the empty string; a malformed one
 * is an error even when a flag also sets the option (a broken deployment should not hide).
 *
 * Threading: cfg_parse reads the environment (getenv) and writes the output structs; call it
 * before threads start. Nothing is allocated: strings are borrowed from argv, environ or the
 * default literal. It never prints or exits; the caller decides what to do with the result. */
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define CFG_ENV_MAX 128

/* --- parsing helpers ------------------------------------------------------------------------ */

/* Parses "<digits>[.<digits>]" at the start of s. On success stores the integer part (when it
 * fits in uint64), whether there was a fraction, the value as a double, and the end. */
typedef struct cfg_num {
    uint64_t whole;
    bool whole_ok; /* false when the integer part overflowed uint64 */
    bool has_frac;
    double value;
    const char *end;
} cfg_num;

static bool scan_number(const char *s, cfg_num *n)
{
    const char *p = s;
    n->whole = 0;
    n->whole_ok = true;
    n->has_frac = false;
    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (n->whole > (UINT64_MAX - d) / 10)
            n->whole_ok = false;
        else
            n->whole = n->whole * 10 + d;
        p++;
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
        n->has_frac = true;
    }
    n->value = strtod(s, NULL); /* s..p is plain decimal, so strtod reads exactly that */
    n->end = p;
    return true;
}

/* Multiplies n by mult into *out; false when the result would not fit in `limit`. Fractions
 * are rounded to the nearest unit. */
static bool scale_number(const cfg_num *n, uint64_t mult, uint64_t limit, uint64_t *out)
{
    if (!n->has_frac) {
        if (!n->whole_ok || (mult && n->whole > limit / mult))
            return false;
        *out = n->whole * mult;
        return true;
    }
    double v = n->value * (double)mult;
    if (!(v < (double)limit))
        return false;
    *out = (uint64_t)llround(v);
    return true;
}

pl_status cfg_parse_duration(const char *s, int64_t *ms)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    cfg_num n;
    if (!s || !ms || !scan_number(s, &n))
        return PL_INVALID;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        uint64_t v;
        if (strcmp(n.end, units[i].suffix) != 0)
            continue;
        if (!scale_number(&n, units[i].mult, (uint64_t)INT64_MAX, &v))
            return PL_INVALID;
        *ms = (int64_t)v;
        return PL_OK;
    }
    return PL_INVALID;
}

pl_status cfg_parse_bytes(const char *s, uint64_t *bytes)
{
    /* Powers of 1024 whichever spelling: "64K", "64KB", "64KiB" are all 65536. */
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0},     {"B", 0},   {"K", 10},   {"KB", 10}, {"KiB", 10},
                 {"M", 20},   {"MB", 20}, {"MiB", 20}, {"G", 30},  {"GB", 30},
                 {"GiB", 30}, {"T", 40},  {"TB", 40},  {"TiB", 40}};
    cfg_num n;
    if (!s || !bytes || !scan_number(s, &n))
        return PL_INVALID;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(n.end, units[i].suffix) != 0)
            continue;
        return scale_number(&n, (uint64_t)1 << units[i].shift, UINT64_MAX, bytes) ? PL_OK
                                                                                  : PL_INVALID;
    }
    return PL_INVALID;
}

/* Formats a bound for error and help text in the option's own units. */
static void fmt_duration(char *out, size_t cap, int64_t ms)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(out, cap, "%" PRId64 "h", ms / 3600000);
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(out, cap, "%" PRId64 "m", ms / 60000);
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(out, cap, "%" PRId64 "s", ms / 1000);
    else
        snprintf(out, cap, "%" PRId64 "ms", ms);
}

static void fmt_bytes(char *out, size_t cap, uint64_t b)
{
    static const char *const sfx[] = {"", "K", "M", "G", "T"};
    unsigned i = 0;
    while (i < 4 && b != 0 && b % 1024 == 0) {
        b /= 1024;
        i++;
    }
    snprintf(out, cap, "%" PRIu64 "%s", b, sfx[i]);
}

static void fmt_bound(char *out, size_t cap, cfg_type t, double v)
{
    switch (t) {
    case CFG_DURATION:
        fmt_duration(out, cap, (int64_t)v);
        break;
    case CFG_BYTES:
        fmt_bytes(out, cap, (uint64_t)v);
        break;
    case CFG_DOUBLE:
        snprintf(out, cap, "%g", v);
        break;
    default:
        snprintf(out, cap, "%.0f", v);
        break;
    }
}

static bool has_bounds(const cfg_opt *o)
{
    return o->min != 0 || o->max != 0;
}

/* The effective range of an option, for checks and for --help. */
static void opt_range(const cfg_opt *o, double *lo, double *hi)
{
    *lo = o->min;
    *hi = o->max;
    if (o->type == CFG_PORT) {
        if (!has_bounds(o) || *lo < 0)
            *lo = 0;
        if (!has_bounds(o) || *hi > 65535)
            *hi = 65535;
    }
}

static bool parse_bool(const char *s, bool *v)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = false;
            return true;
        }
    }
    return false;
}

/* --- errors ------------------------------------------------------------------------------- */

typedef struct cfg_err {
    char *buf;
    size_t cap;
} cfg_err;

static cfg_result bad(const cfg_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cfg_result bad(const cfg_err *e, const char *fmt, ...)
{
    if (e->buf && e->cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->buf, e->cap, fmt, ap);
        va_end(ap);
    }
    return CFG_BAD;
}

/* --- one value ---------------------------------------------------------------------------- */

/* Parses `val` for option `o` and stores it at out+offset. `where` names the source for the
 * error ("" for a flag, " (from PARLEY_X)", " (default)"). */
static cfg_result set_value(const cfg_opt *o, void *out, const char *val, const char *where,
                            const cfg_err *e)
{
    char *field = (char *)out + o->offset;
    char lo_s[32], hi_s[32];
    double lo, hi;
    opt_range(o, &lo, &hi);
    fmt_bound(lo_s, sizeof lo_s, o->type, lo);
    fmt_bound(hi_s, sizeof hi_s, o->type, hi);
    bool bounded = has_bounds(o) || o->type == CFG_PORT;

    switch (o->type) {
    case CFG_STR:
        *(const char **)field = val;
        return CFG_RUN;
    case CFG_BOOL: {
        bool b;
        if (!parse_bool(val, &b))
            return bad(e, "option --%s%s: '%s' is not a boolean (true or false)", o->name, where,
                       val);
        *(bool *)field = b;
        return CFG_RUN;
    }
    case CFG_INT:
    case CFG_PORT: {
        char *end;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (end == val || *end != '\0' || isspace((unsigned char)*val))
            return bad(e, "option --%s%s: '%s' is not an integer", o->name, where, val);
        if (errno == ERANGE && !bounded)
            return bad(e, "option --%s%s: '%s' does not fit in 64 bits", o->name, where, val);
        if (errno == ERANGE || (bounded && ((double)v < lo || (double)v > hi)))
            return bad(e, "option --%s%s: '%s' is out of range %s..%s", o->name, where, val, lo_s,
                       hi_s);
        if (o->type == CFG_PORT)
            *(int *)field = (int)v;
        else
            *(int64_t *)field = (int64_t)v;
        return CFG_RUN;
    }
    case CFG_DOUBLE: {
        char *end;
        errno = 0;
        double v = strtod(val, &end);
        if (end == val || *end != '\0' || isspace((unsigned char)*val) || !isfinite(v))
            return bad(e, "option --%s%s: '%s' is not a number", o->name, where, val);
        if (bounded && (v < lo || v > hi))
            return bad(e, "option --%s%s: '%s' is out of range %s..%s", o->name, where, val, lo_s,
                       hi_s);
        *(double *)field = v;
        return CFG_RUN;
    }
    case CFG_DURATION: {
        int64_t v;
        if (cfg_parse_duration(val, &v) != PL_OK)
            return bad(e, "option --%s%s: '%s' is not a duration (like 250ms, 15s, 2m, 1h)",
                       o->name, where, val);
        if (bounded && ((double)v < lo || (double)v > hi))
            return bad(e, "option --%s%s: '%s' is out of range %s..%s", o->name, where, val, lo_s,
                       hi_s);
        *(int64_t *)field = v;
        return CFG_RUN;
    }
    case CFG_BYTES: {
        uint64_t v;
        if (cfg_parse_bytes(val, &v) != PL_OK)
            return bad(e, "option --%s%s: '%s' is not a size (like 512, 64K, 256M, 2G)", o->name,
                       where, val);
        if (bounded && ((double)v < lo || (double)v > hi))
            return bad(e, "option --%s%s: '%s' is out of range %s..%s", o->name, where, val, lo_s,
                       hi_s);
        *(uint64_t *)field = v;
        return CFG_RUN;
    }
    }
    return bad(e, "option --%s: unknown option type %d", o->name, (int)o->type);
}

/* --- tables ------------------------------------------------------------------------------- */

typedef struct cfg_set {
    const cfg_opt *const *tables;
    const size_t *n_opts;
    void *const *outs;
    size_t n_tables;
} cfg_set;

/* The first option called `name` (of length `len`) in any table; its table index in *t. */
static const cfg_opt *find_opt(const cfg_set *cs, const char *name, size_t len, size_t *t)
{
    for (size_t i = 0; i < cs->n_tables; i++) {
        for (size_t j = 0; j < cs->n_opts[i]; j++) {
            const cfg_opt *o = &cs->tables[i][j];
            if (o->name && strlen(o->name) == len && strncmp(o->name, name, len) == 0) {
                *t = i;
                return o;
            }
        }
    }
    return NULL;
}

/* True when `o` (in table t) is the one that owns its name, i.e. not a later duplicate. */
static bool is_owner(const cfg_set *cs, const cfg_opt *o, size_t t)
{
    size_t ti;
    return find_opt(cs, o->name, strlen(o->name), &ti) == o && ti == t;
}

static void env_name(char *out, size_t cap, const char *name)
{
    size_t n = (size_t)snprintf(out, cap, "PARLEY_");
    for (const char *p = name; *p && n + 1 < cap; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

static bool is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

/* --help / -h and --version anywhere in argv (help wins), else CFG_RUN. No option consumes a
 * following word that starts with "--", so a "--help" token is always the flag itself. */
static cfg_result help_or_version(int argc, char **argv)
{
    cfg_result r = CFG_RUN;
    for (int i = 1; i < argc; i++) {
        if (!argv[i])
            continue;
        if (is_help(argv[i]))
            return CFG_HELP;
        if (strcmp(argv[i], "--version") == 0)
            r = CFG_VERSION;
    }
    return r;
}

cfg_result cfg_parse(const cfg_opt *const *tables, const size_t *n_opts, void *const *outs,
                     size_t n_tables, int argc, char **argv, char *err, size_t errlen)
{
    cfg_set cs = {tables, n_opts, outs, n_tables};
    cfg_err e = {err, errlen};
    cfg_result r, want = help_or_version(argc, argv);
    if (err && errlen)
        err[0] = '\0';

    /* 1. defaults, for every option, duplicates included so no field is left unset. */
    for (size_t t = 0; t < n_tables; t++) {
        for (size_t j = 0; j < n_opts[t]; j++) {
            const cfg_opt *o = &tables[t][j];
            if (!o->name)
                return want != CFG_RUN ? want
                                       : bad(&e, "option table %zu entry %zu has no name", t, j);
            /* No default: zero, false or "", stored without a bounds check, so a bounded
             * option may leave its default out when zero means "not set". */
            if (!o->def) {
                char *field = (char *)outs[t] + o->offset;
                switch (o->type) {
                case CFG_STR:
                    *(const char **)field = "";
                    break;
                case CFG_BOOL:
                    *(bool *)field = false;
                    break;
                case CFG_PORT:
                    *(int *)field = 0;
                    break;
                case CFG_DOUBLE:
                    *(double *)field = 0;
                    break;
                case CFG_BYTES:
                    *(uint64_t *)field = 0;
                    break;
                case CFG_INT:
                case CFG_DURATION:
                    *(int64_t *)field = 0;
                    break;
                }
                continue;
            }
            if ((r = set_value(o, outs[t], o->def, " (default)", &e)) != CFG_RUN)
                return want != CFG_RUN ? want : r;
        }
    }

    /* 2. the environment, for the owner of each name. */
    for (size_t t = 0; t < n_tables; t++) {
        for (size_t j = 0; j < n_opts[t]; j++) {
            const cfg_opt *o = &tables[t][j];
            char env[CFG_ENV_MAX], where[CFG_ENV_MAX + 16];
            if (!is_owner(&cs, o, t))
                continue;
            env_name(env, sizeof env, o->name);
            const char *v = getenv(env);
            if (!v || (!*v && o->type != CFG_STR))
                continue;
            snprintf(where, sizeof where, " (from %s)", env);
            if ((r = set_value(o, outs[t], v, where, &e)) != CFG_RUN)
                return want != CFG_RUN ? want : r;
        }
    }

    /* 3. flags; --help and --version were found above and win over any error. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!a || is_help(a) || strcmp(a, "--version") == 0)
            continue;
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            r = a[0] == '-' && a[1] != '\0' && a[1] != '-' ? bad(&e, "unknown option %s", a)
                                                           : bad(&e, "unexpected argument '%s'", a);
            return want != CFG_RUN ? want : r;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        size_t t;
        const cfg_opt *o = find_opt(&cs, name, len, &t);

        if (!o && len > 3 && strncmp(name, "no-", 3) == 0) {
            const cfg_opt *b = find_opt(&cs, name + 3, len - 3, &t);
            if (b && b->type == CFG_BOOL) {
                if (eq) {
                    r = bad(&e, "option --%.*s takes no value", (int)len, name);
                    return want != CFG_RUN ? want : r;
                }
                *(bool *)((char *)outs[t] + b->offset) = false;
                continue;
            }
        }
        if (!o) {
            r = bad(&e, "unknown option --%.*s", (int)len, name);
            return want != CFG_RUN ? want : r;
        }

        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (o->type == CFG_BOOL) {
            val = "true";
        } else if (i + 1 < argc && argv[i + 1] &&
                   !(strncmp(argv[i + 1], "--", 2) == 0 && argv[i + 1][2] != '\0')) {
            val = argv[++i];
        } else {
            r = bad(&e, "option --%s needs a value", o->name);
            return want != CFG_RUN ? want : r;
        }
        if ((r = set_value(o, outs[t], val, "", &e)) != CFG_RUN)
            return want != CFG_RUN ? want : r;
    }
    return want;
}

/* --- usage -------------------------------------------------------------------------------- */

static const char *type_word(cfg_type t)
{
    switch (t) {
    case CFG_STR:
        return "<string>";
    case CFG_INT:
        return "<int>";
    case CFG_BOOL:
        return "";
    case CFG_DOUBLE:
        return "<number>";
    case CFG_PORT:
        return "<port>";
    case CFG_DURATION:
        return "<duration>";
    case CFG_BYTES:
        return "<size>";
    }
    return "<value>";
}

/* "--name <type>" or "--[no-]name" for booleans. */
static void flag_column(char *out, size_t cap, const cfg_opt *o)
{
    if (o->type == CFG_BOOL)
        snprintf(out, cap, "--[no-]%s", o->name);
    else
        snprintf(out, cap, "--%s %s", o->name, type_word(o->type));
}

void cfg_usage(FILE *f, const char *prog, const char *summary, const cfg_opt *const *tables,
               const size_t *n_opts, size_t n_tables)
{
    cfg_set cs = {tables, n_opts, NULL, n_tables};
    char col[160];
    int width = (int)strlen("--version");

    fprintf(f, "usage: %s [options]\n", prog ? prog : "prog");
    if (summary && *summary)
        fprintf(f, "\n%s\n", summary);
    fprintf(f, "\noptions (flag > environment > default):\n");

    for (size_t t = 0; t < n_tables; t++) {
        for (size_t j = 0; j < n_opts[t]; j++) {
            const cfg_opt *o = &tables[t][j];
            if (!o->name || !is_owner(&cs, o, t))
                continue;
            flag_column(col, sizeof col, o);
            int w = (int)strlen(col);
            if (w > width)
                width = w;
        }
    }

    for (size_t t = 0; t < n_tables; t++) {
        for (size_t j = 0; j < n_opts[t]; j++) {
            const cfg_opt *o = &tables[t][j];
            char env[CFG_ENV_MAX], range[80] = "";
            if (!o->name || !is_owner(&cs, o, t))
                continue;
            flag_column(col, sizeof col, o);
            env_name(env, sizeof env, o->name);
            if (has_bounds(o) || o->type == CFG_PORT) {
                char lo_s[32], hi_s[32];
                double lo, hi;
                opt_range(o, &lo, &hi);
                fmt_bound(lo_s, sizeof lo_s, o->type, lo);
                fmt_bound(hi_s, sizeof hi_s, o->type, hi);
                snprintf(range, sizeof range, ", range %s..%s", lo_s, hi_s);
            }
            const char *def = o->def;
            if (!def)
                def = o->type == CFG_STR ? "" : o->type == CFG_BOOL ? "false" : "0";
            fprintf(f, "  %-*s  %s (default: %s%s%s%s, env: %s)\n", width, col,
                    o->help ? o->help : "", o->type == CFG_STR ? "\"" : "", def,
                    o->type == CFG_STR ? "\"" : "", range, env);
        }
    }
    fprintf(f, "  %-*s  %s\n", width, "--help", "print this help and exit");
    fprintf(f, "  %-*s  %s\n", width, "--version", "print the version and exit");
}
