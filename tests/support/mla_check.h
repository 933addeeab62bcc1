/*
 * mla_check.h -- one MLA decode case run on the CPU emulator (tests/emu)
 * against the float64 reference, for any template of op mla_decode: the
 * shared body of the emulator tests of mla_decode_sm90 (and, once folded,
 * mla_decode's).
 *
 * mla_check_run takes the path of fmqa_mla_decode: the template's default
 * config for the device preset, with the parameters `config` names
 * overridden, gives the launch plan; gen_render the source, built with the
 * emulator driver tests/emu/<driver>; rt_mla_decode_args + rt_decode_params
 * the kernel parameters from public fmqa_mla_decode_args; each kernel of the
 * plan runs over its grid.  The latent cache, its scales and the queries have
 * padded strides (a wrong stride reads another row), pages are shuffled with
 * two pages no sequence uses, every byte no position holds is NaN (0xFF), and
 * so are the outputs and the workspace, so a stray read or a missing write
 * fails.  o and lse are compared with ref_decode of the same arguments (V =
 * the latent's first 512), one line printed per case.
 */
#ifndef FMQA_MLA_CHECK_H
#define FMQA_MLA_CHECK_H

#include <stdint.h>

typedef struct mla_case {
    const char *spec;   /* problem spec (gen_problem_parse)                   */
    const char *config; /* overrides of the default config, "" for none       */
    int32_t lens[4];    /* per-sequence lengths; 0 = drawn in [q_tokens, kv_len] */
    const char *arch;   /* device preset; NULL: sm_90                           */
} mla_case;

/* Runs c with template `name` and emulator driver `driver`; asserts (a failed
 * comparison is a failed expectation, the rest aborts the test). */
void mla_check_run(const char *name, const char *driver, const mla_case *c);

#endif /* FMQA_MLA_CHECK_H */
