/*
 * compile_check.h -- NVRTC compiles of template variants on a compiler pool,
 * with the checks the nvrtc tests share: the ptxas report of each kernel shows
 * no spills and no stack frame (no local memory), and the largest block of a
 * tuning space's (VEC, THREADS_PER_ROW) pairs, where registers are tightest.
 * Failures cr_assert / cr_expect.
 */
#ifndef FMQA_COMPILE_CHECK_H
#define FMQA_COMPILE_CHECK_H

#include <stddef.h>

#include "gen.h"

/* One compilation on the pool and what to say about it. */
typedef struct fmqa_compile_job {
    char what[GEN_PROBLEM_TEXT_CAP + GEN_CONFIG_TEXT_CAP + 16];
    gen_job *job;
} fmqa_compile_job;

/* Renders config c of t for p on d and queues its compilation; what names it
 * in messages (with the architecture and the config). */
void fmqa_compile_submit(gen_compiler *comp, const gen_template *t, const gen_config *c,
                         const fmqa_problem *p, const fmqa_device_info *d, const char *what,
                         fmqa_compile_job *j);

/* Waits for a compilation; asserts one kernel, named entry, with no spills and
 * no stack.  Releases the job. */
void fmqa_compile_expect_clean(fmqa_compile_job *j, const char *entry);

/* 1 if no config of cs[0..n) has c's VEC and THREADS_PER_ROW and more
 * ROWS_PER_CTA. */
int fmqa_config_largest_block(const gen_config *cs, size_t n, const gen_config *c);

#endif
