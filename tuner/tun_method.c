/*
 * tun_method.c -- the host-side rules of the timing method (tun.h, "timing"):
 * flush names, how many input copies make a rotation that covers the L2, and
 * what one sample is (its flush and its number of launches).  Nothing here
 * touches a device, so the rules are unit-tested on the CPU; tun_time.c applies
 * them on the GPU and bench/peers/peers.py mirrors them in Python
 * (unit_timing_method checks both).
 */
#include "tun.h"

#include <math.h>
#include <string.h>

static const char *const flush_names[] = {"auto", "none", "read", "memset"};
#define N_FLUSH ((int)(sizeof flush_names / sizeof flush_names[0]))

const char *tun_flush_name(tun_flush f)
{
    return (int)f >= 0 && (int)f < N_FLUSH ? flush_names[f] : "?";
}

fmqa_status tun_flush_parse(const char *name, tun_flush *out, fmqa_err *err)
{
    for (int i = 0; name && i < N_FLUSH; i++)
        if (!strcmp(name, flush_names[i])) {
            *out = (tun_flush)i;
            return FMQA_OK;
        }
    return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                        "unknown flush '%s' (auto, none, read, memset)", name ? name : "");
}

int tun_rotation_covers(double bytes_per_copy, int copies, int64_t l2_bytes)
{
    return bytes_per_copy > 0 && l2_bytes > 0 && copies * bytes_per_copy > 2.0 * (double)l2_bytes;
}

int tun_rotation_copies(double bytes_per_copy, int64_t l2_bytes)
{
    if (bytes_per_copy <= 0 || l2_bytes <= 0)
        return 1;
    double n = floor(2.0 * (double)l2_bytes / bytes_per_copy) + 1;
    return n > TUN_MAX_COPIES ? TUN_MAX_COPIES : (int)n;
}

/* Launches per graph: about TUN_GRAPH_TARGET_US of work, a whole number of
 * rotations, within TUN_GRAPH_MIN/MAX_LAUNCHES (the minimum rounded up and the
 * maximum down to whole rotations, never below one rotation). */
static int graph_size(double probe_us, int copies)
{
    double want = probe_us > 0 ? ceil(TUN_GRAPH_TARGET_US / probe_us) : TUN_GRAPH_MAX_LAUNCHES;
    int n = want > TUN_GRAPH_MAX_LAUNCHES ? TUN_GRAPH_MAX_LAUNCHES : (int)want;
    if (n < TUN_GRAPH_MIN_LAUNCHES)
        n = TUN_GRAPH_MIN_LAUNCHES;
    n = (n + copies - 1) / copies * copies;
    if (n > TUN_GRAPH_MAX_LAUNCHES)
        n = TUN_GRAPH_MAX_LAUNCHES / copies * copies;
    return n < copies ? copies : n;
}

fmqa_status tun_time_plan_make(const tun_time_opts *o, int64_t l2_bytes, double probe_us,
                               tun_time_plan *out, fmqa_err *err)
{
    if (!o || !out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "tun_time_plan_make: NULL argument");
    if (o->copies < 1 || o->copies > TUN_MAX_COPIES || o->graph_launches < 0 ||
        (int)o->flush < 0 || (int)o->flush >= N_FLUSH)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                            "timing options: copies %d (1..%d), graph launches %d (>= 0), "
                            "flush %d", o->copies, TUN_MAX_COPIES, o->graph_launches,
                            (int)o->flush);
    tun_time_plan p;
    p.covers = tun_rotation_covers(o->bytes, o->copies, l2_bytes);
    p.flush = o->flush != TUN_FLUSH_AUTO ? o->flush : p.covers ? TUN_FLUSH_NONE : TUN_FLUSH_READ;
    if (o->graph_launches > 0)
        p.launches = o->graph_launches;
    else  /* a flush makes every launch cold only when it precedes every launch */
        p.launches = p.flush != TUN_FLUSH_NONE ? 1 : graph_size(probe_us, o->copies);
    *out = p;
    return FMQA_OK;
}
