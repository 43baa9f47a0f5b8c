/* ops_convs.c — history operations (see ops.h). */
#include "ops.h"

const hs_op hs_ops_convs[] = {{"", NULL}};
const size_t hs_n_ops_convs = 0;
