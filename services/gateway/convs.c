/* convs.c — product API routes (see product.h). */
#include "product.h"

const http_route gw_routes_convs[] = {{"", "", NULL, NULL}};
const size_t gw_n_routes_convs = 0;
