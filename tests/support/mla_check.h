/*
 * mla_check.h -- one MLA decode case run on the CPU emulator (tests/emu)
 * against the float64 reference, for any template of op mla_decode: the
 * shared body of the emulator tests of mla_decode and mla_decode_sm90.
 *
 * mla_check_run takes the path of fmqa_mla_decode: the template's default
 * config for the device preset, with the parameters `config` names
 * overridden, gives the launch plan; gen_render the source, built with the
 * emulator driver tests/emu/<driver>; rt_mla_decode_args + rt_decode_params
 * the kernel parameters from public fmqa_mla_decode_args; each kernel of the
 * plan runs over its grid.  The latent cache, its scales and the queries have
 * padded strides (a wrong stride reads another row), pages are shuffled with
 * two pages no sequence uses, every row no readable position holds is NaN
 * (0xFF: behind every window, overwritten in a ring, or beyond the length),
 * pages holding none are unmapped (-1), and the outputs and the workspace are
 * NaN too, so a stray read or a missing write fails.  A CSR problem gets its
 * lengths from the table (fmqa_test_csr_of).  o and lse are compared with
 * ref_decode of the same arguments (V = the latent's first 512), one line
 * printed per case.
 */
#ifndef FMQA_MLA_CHECK_H
#define FMQA_MLA_CHECK_H

#include <stdint.h>

#include "fastmqa.h"

#define MLA_MAX_LENS 8

typedef struct mla_case {
    const char *spec;            /* problem spec (gen_problem_parse)                 */
    const char *config;          /* overrides of the default config, "" for none     */
    int32_t lens[MLA_MAX_LENS];  /* the first sequences' lengths; 0 (and every later
                                  * one): drawn in [q_tokens, kv_len]                 */
    const char *arch;            /* device preset (fmqa_test_device: "sm_90@2" has 2
                                  * SMs); NULL: sm_90                                 */
    int sinks;                   /* 1: learned sinks, one logit per head drawn from
                                  * [-4, 8), those near 8 outweighing every score     */
} mla_case;

/* Runs c with template `name` and emulator driver `driver`; asserts (a failed
 * comparison is a failed expectation, the rest aborts the test). */
void mla_check_run(const char *name, const char *driver, const mla_case *c);

/* mla_check_run on inputs drawn from `seed` (0: a fresh one,
 * fmqa_test_seed); *out (if not NULL) gets the case's arguments, outputs
 * included (guarded buffers, never freed). */
void mla_check_run_into(const char *name, const char *driver, const mla_case *c, uint64_t seed,
                        fmqa_mla_decode_args *out);

#endif /* FMQA_MLA_CHECK_H */
