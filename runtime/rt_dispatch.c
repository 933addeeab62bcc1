/* rt_dispatch.c -- placeholder until the dispatcher lands (lead, same session). */
#include "rt.h"

void rt_dispatch_destroy(struct rt_dispatch *d) { (void)d; }
