/* ops_accounts.c — history operations (see ops.h). */
#include "ops.h"

const hs_op hs_ops_accounts[] = {{"", NULL}};
const size_t hs_n_ops_accounts = 0;
