/*
 * tun_report.c -- the device report that fastmqa-tune and fastmqa-bench print
 * before they measure anything, so every figure is read next to the card,
 * clocks, driver and compiler that produced it.
 */
#include <stdio.h>

#include "tun.h"

void tun_device_report(FILE *out, const fmqa_device_info *d)
{
    fprintf(out,
            "device %d: %s (compute %d.%d, %s)\n"
            "  SMs %d, memory %.1f GiB (bus %d bits, clock %d MHz), L2 %.1f MiB\n"
            "  shared memory %d KiB per block (opt-in), %d KiB per SM; %d registers per SM\n"
            "  SM clock %d MHz (rated), driver %d.%d, NVRTC %d.%d\n",
            d->ordinal, d->name, d->cc_major, d->cc_minor, d->arch, d->sm_count,
            d->total_memory / 1073741824.0, d->mem_bus_width, d->mem_clock_khz / 1000,
            d->l2_bytes / 1048576.0, d->smem_per_block_optin / 1024, d->smem_per_sm / 1024,
            d->regs_per_sm, d->clock_khz / 1000, d->driver_version / 1000,
            d->driver_version % 1000 / 10, d->nvrtc_major, d->nvrtc_minor);
}
