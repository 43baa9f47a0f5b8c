/* migrations.h — the schema's versioned migrations, in order. Append only: a released
 * migration is never edited; a change is a new migration. */
#ifndef PARLEY_HISTORY_MIGRATIONS_H
#define PARLEY_HISTORY_MIGRATIONS_H

#include <stddef.h>

typedef struct mig_step {
    int version;
    const char *name;
    const char *sql; /* one or more statements, run in the migration's transaction */
} mig_step;

extern const mig_step mig_steps[];
extern const size_t mig_n_steps;

#endif
