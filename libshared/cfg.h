/* cfg.h — typed configuration from flags and environment, validated, with generated --help.
 *
 * A daemon describes its options in a table of cfg_opt; each option writes into a field of the
 * daemon's config struct (offsetof). Precedence: flag > environment > default. The environment
 * name is PARLEY_ followed by the option name upper-cased with '-' as '_' ("nats-url" →
 * PARLEY_NATS_URL). Flags are "--name value" or "--name=value"; booleans also take "--name"
 * alone and "--no-name". Strings are stored as pointers into argv / environ / the default
 * literal (borrowed, valid for the life of the process). Nothing here exits: cfg_parse reports
 * --help / --version through its return value and the caller decides. */
#ifndef PARLEY_CFG_H
#define PARLEY_CFG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "status.h"

typedef enum cfg_type {
    CFG_STR,      /* const char *           */
    CFG_INT,      /* int64_t, within [min, max] */
    CFG_BOOL,     /* bool                   */
    CFG_DOUBLE,   /* double, within [min, max] */
    CFG_PORT,     /* int, 0..65535          */
    CFG_DURATION, /* int64_t milliseconds; accepts "250ms", "15s", "2m", "1h" or a bare number of ms
                   */
    CFG_BYTES,    /* uint64_t; accepts "512", "64K", "64KiB", "256M", "2G" (powers of 1024) */
} cfg_type;

typedef struct cfg_opt {
    const char *name; /* long flag name without "--" */
    cfg_type type;
    size_t offset;   /* offsetof(config struct, field) */
    const char *def; /* default, as text; NULL = empty string / zero */
    double min, max; /* bounds for INT / DOUBLE / DURATION / BYTES; both 0 = unbounded */
    const char *help;
} cfg_opt;

typedef enum cfg_result {
    CFG_RUN = 0, /* parsed, go on */
    CFG_HELP,    /* --help given: caller prints cfg_usage() and exits 0 */
    CFG_VERSION, /* --version given: caller prints the version and exits 0 */
    CFG_BAD,     /* invalid: err holds "option --port: 70000 is out of range 0..65535" */
} cfg_result;

/* Parses argv (and the environment) against `n_tables` option tables, each writing into its own
 * struct (tables[i] → outs[i]); defaults are applied first. Unknown flags and positional
 * arguments are errors. On CFG_BAD, `err` (of `errlen` bytes) names the flag and the problem. */
cfg_result cfg_parse(const cfg_opt *const *tables, const size_t *n_opts, void *const *outs,
                     size_t n_tables, int argc, char **argv, char *err, size_t errlen);

/* Writes "usage: prog [options]" and one line per option (flag, type, default, env, help). */
void cfg_usage(FILE *f, const char *prog, const char *summary, const cfg_opt *const *tables,
               const size_t *n_opts, size_t n_tables);

/* Parse helpers shared with other modules; each returns PL_INVALID on malformed text. */
pl_status cfg_parse_duration(const char *s, int64_t *ms);
pl_status cfg_parse_bytes(const char *s, uint64_t *bytes);

#endif
