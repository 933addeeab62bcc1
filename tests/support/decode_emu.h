/*
 * decode_emu.h -- the decode template run on the CPU emulator: random inputs
 * in deliberately different K and V layouts with poisoned padding, and one
 * call of the rendered kernels, exactly as fmqa_decode would launch them.
 * Shared by the emulator tests of decode (test_decode_emu.c), its scores
 * (test_scores_emu.c) and compaction (test_compress_emu.c).
 */
#ifndef FMQA_TEST_DECODE_EMU_H
#define FMQA_TEST_DECODE_EMU_H

#include <stdint.h>

#include "fastmqa.h"
#include "ref.h"

/* Host buffers of one case (never freed: the process ends).  Every buffer the
 * kernels see ends at an inaccessible page, and every byte no position holds
 * is 0xff (NaN in f16 / bf16 / f32). */
typedef struct fmqa_emu_inputs {
    fmqa_decode_args a;
    int32_t lens[256];   /* batch <= 256                                  */
    int64_t n_pages;     /* pages the cache has when paged (the table's bound) */
    int64_t per_seq;     /* page-table entries per sequence when paged        */
    size_t k_bytes, v_bytes, scale_bytes; /* of k, v and each scale buffer   */
} fmqa_emu_inputs;

/* Fresh random inputs for p.  lens [8]: per-sequence lengths of the first 8
 * sequences (0 = drawn; lens[0] = -n: sequence b has length kv_len - (batch -
 * 1 - b) % n).  Only the rows a decode may read hold data; paged, the table
 * is a shuffled page order with -1 for the pages that hold none of them.
 * sinks: learned sink logits, one per query head, drawn from [-4, 8). */
void fmqa_emu_inputs_make(const fmqa_problem *p, const int32_t *lens, int sinks, ref_rng *r,
                          fmqa_emu_inputs *in /* OUT */);

/* A guarded host buffer filled with 0xff (see fmqa_test_guarded). */
void *fmqa_emu_poisoned(size_t bytes, size_t align);

/* Fills a template's kernel parameters from its public arguments (as
 * rt_decode_params does), given the plan. */
struct rt_plan;
typedef fmqa_status (*fmqa_emu_fill_fn)(const struct rt_plan *plan, const void *args,
                                        void *params /* OUT */, fmqa_err *err);

/* One call of template tpl through the emulator (driver tests/emu/<driver>):
 * default config with config's overrides, arch (NULL = sm_90; "sm_90@3": that
 * preset with 3 SMs); *workspace
 * gets a poisoned buffer of the plan's size (and *workspace_size its size)
 * before fill runs on args.  Returns the plan's splits; cfg as below. */
int fmqa_emu_run(const char *tpl, const fmqa_problem *p, const char *config, const char *arch,
                 const char *driver, fmqa_emu_fill_fn fill, const void *args, void **workspace,
                 size_t *workspace_size, unsigned combine_slices, char *cfg);

/* One decode through the emulator: config overrides the template default
 * ("" = none), arch a device preset (NULL = sm_90), combine_slices the
 * combine's grid y (0 = the plan's).  Allocates the workspace in in->a (kept
 * poisoned) and returns the plan's number of splits; the config text goes to
 * cfg (GEN_CONFIG_TEXT_CAP bytes) when not NULL. */
int fmqa_emu_decode(const fmqa_problem *p, const char *config, const char *arch,
                    unsigned combine_slices, fmqa_emu_inputs *in, char *cfg);

#endif
