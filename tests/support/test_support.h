/*
 * test_support.h -- helpers shared by the Criterion tests: GPU presence, device
 * buffers through the driver table, and seeds.  Device helpers abort the test
 * (cr_assert) on failure: a test has no better recovery.
 */
#ifndef FMQA_TEST_SUPPORT_H
#define FMQA_TEST_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "fastmqa.h"
#include "db.h"
#include "gen.h"
#include "ref.h"
#include "rt_cuda.h"

/* 1 when a CUDA driver and at least one GPU are usable; else 0 and why. */
int fmqa_test_gpu_available(char *why, size_t cap);

/* A seed for fresh random inputs: $FASTMQA_TEST_SEED if set, else time-based.
 * Printed to stderr with the test's name so a failure can be replayed. */
uint64_t fmqa_test_seed(const char *test_name);

/* A context with default options and no database (tests must not touch
 * ~/.cache), asserting it was created; the caller destroys it. */
fmqa_ctx_t *fmqa_test_ctx(void);

/* Device memory for gpu tests; the test's context must be current. */
typedef struct fmqa_test_gpu {
    const rt_cuda *cu;
    CUcontext ctx;
    CUdevice dev;
} fmqa_test_gpu;

void fmqa_test_gpu_open(fmqa_test_gpu *g);   /* primary context, made current */
void fmqa_test_gpu_close(fmqa_test_gpu *g);
CUdeviceptr fmqa_test_upload(fmqa_test_gpu *g, const void *host, size_t bytes);
CUdeviceptr fmqa_test_alloc_poisoned(fmqa_test_gpu *g, size_t bytes, uint8_t poison);
void fmqa_test_download(fmqa_test_gpu *g, void *host, CUdeviceptr src, size_t bytes);
void fmqa_test_free(fmqa_test_gpu *g, CUdeviceptr p);

/* The shipped templates (fmqa_test_template_dir()), one of them by name
 * (asserting it loaded and has that op), a parsed problem spec, a parsed
 * config ("BLOCK_N=64,STAGES=2"), and a device preset ("sm_80", "sm_90",
 * ...; "sm_90@7": the preset with 7 SMs). */
gen_lib *fmqa_test_open_templates(void);
const gen_template *fmqa_test_template(gen_lib *lib, const char *name, fmqa_op op);
fmqa_problem fmqa_test_problem(const char *spec);
gen_config fmqa_test_config(const char *text);
fmqa_device_info fmqa_test_device(const char *arch);

/* t's default config for the problem p on d with the parameters the config
 * text `over` names set ("BLOCK_N=64,SPLITS=2"; "" for none), asserting the
 * default exists and the result is legal (gen_check). */
gen_config fmqa_test_default_with(const gen_template *t, const fmqa_problem *p,
                                  const fmqa_device_info *d, const char *over);

/* What fmqa_test_compile_checked asks of a compiled config. */
typedef struct fmqa_test_compile_want {
    const char *arch;  /* the architecture it must render for ("sm_90a"); NULL: any */
    int n_entries;     /* kernels ptxas must report */
    int max_registers; /* per thread; 0: 255 */
    int hgmma;         /* 1: the SASS must hold HGMMA (skipped with a message without cuobjdump) */
} fmqa_test_compile_want;

/* Renders one config and compiles it with NVRTC, asserting ptxas reports
 * want->n_entries kernels, each without spills or a stack frame (no local
 * memory: register arrays indexed by constants only) in at most
 * want->max_registers registers, and what else want asks; prints each entry's
 * registers to stderr; what names the case in messages. */
void fmqa_test_compile_checked(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                               const fmqa_device_info *d, const char *what,
                               const fmqa_test_compile_want *want);

/* fmqa_test_compile_checked asking only for n_entries clean kernels. */
void fmqa_test_compile_clean(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                             const fmqa_device_info *d, const char *what, int n_entries);

/* Expects t to refuse the config (text) for the problem (spec) on sm_90 with
 * FMQA_ERR_UNSUPPORTED and a message containing reason. */
void fmqa_test_expect_reason(const gen_template *t, const char *spec, const char *config_text,
                             const char *reason);

/* Expects t to have no default config for the problem (spec) on arch (as
 * fmqa_test_device), with a message containing why. */
void fmqa_test_expect_no_default(const gen_template *t, const char *spec, const char *arch,
                                 const char *why);

/* Opens path read-write (creating it), asserting success. */
struct db *fmqa_test_db_open_rw(const char *path);

/* Creates and opens read-write a fresh database under /tmp, its busy timeout
 * busy_ms (0 = the default), writing its path into path (at least 64 bytes;
 * prefix names the test); the caller closes and unlinks it. */
struct db *fmqa_test_db_temp(char *path /* OUT */, const char *prefix, int busy_ms);

/* Stores one trial of `config` with this status and timing (0 = not timed)
 * for the problem on device d, upserting device, template and problem;
 * returns its id. */
int64_t fmqa_test_db_trial(struct db *db, const fmqa_device_info *d, const char *template_name,
                           const char *template_hash, const fmqa_problem *p, const char *config,
                           db_trial_status status, double median_us, double p20_us,
                           double p80_us);

/* Stores one ok trial of `config` (median us) for the problem on device d and
 * offers it as the best of (d, template, problem); default_us is the
 * template default's time (0 if unknown). */
void fmqa_test_db_best(struct db *db, const fmqa_device_info *d, const char *template_name,
                       const char *template_hash, const fmqa_problem *p, const char *config,
                       double us, double default_us);

/* The template directory the emulator tests use: $FASTMQA_TEMPLATE_DIR if set
 * (to try a changed kernel, or that a deliberately broken one fails: see
 * scripts/mutate.py), else the source tree's templates/. */
const char *fmqa_test_template_dir(void);

/* Renders a template config, builds it with the CPU emulator's driver
 * tests/emu/<driver> for d's architecture (d->arch, as
 * fmqa_test_emu_build_plain) into a shared object under dir (a mkdtemp template, filled in) and
 * returns its emu_launch symbol (cast it to the driver's signature).  Skips
 * the test when there is no C++ compiler. */
void *fmqa_test_emu_build(const gen_template *t, const gen_config *c, const fmqa_problem *p,
                          const fmqa_device_info *d, const char *driver, char *dir);

/* Runs a shell command line (stderr joined to stdout), returns its exit status
 * (-1 if it did not exit) and the start of its output, NUL-terminated, in out. */
int fmqa_test_run(const char *cmd, char *out, size_t cap);

/* Builds the driver tests/emu/<driver>, which includes template headers
 * directly (from fmqa_test_template_dir()), for arch ("sm_80", "sm_90",
 * "sm_90a": __CUDA_ARCH__ and, for sm_90a, __CUDA_ARCH_FEAT_SM90_ALL) under
 * dir and returns its dlopen handle, whose symbols fmqa_test_emu_symbol
 * finds (asserting they exist). */
void *fmqa_test_emu_build_plain(const char *driver, const char *arch, char *dir);
void *fmqa_test_emu_symbol(void *handle, const char *sym);

/* A host buffer of `bytes` filled with `fill` whose end (rounded up to align,
 * a power of two it is aligned to) touches an inaccessible page, so a read
 * past it faults.  Never freed (the test process ends). */
void *fmqa_test_guarded(size_t bytes, size_t align, uint8_t fill);

/* Fills dst[0, n) with values drawn from r (N(0, 1), rounded to t as
 * ref_rng_fill does) stored as t: the random 16-bit query rows of the
 * emulator checks. */
void fmqa_test_fill_random(ref_rng *r, fmqa_dtype t, void *dst, int64_t n);

/* Fills table[0, n) with a permutation of 0 .. n - 1 drawn from r: a
 * shuffled page order (a kernel must not assume pages in sequence order). */
void fmqa_test_shuffle_pages(int32_t *table, int64_t n, ref_rng *r);

/* Sets to -1 the entries of the page table [s->batch, per_seq] (pages of ps
 * cache slots, view's slot mapping) whose page holds no position a decode of
 * shape s reads (ref_readable: behind every window, overwritten in a ring, or
 * past the length), as an engine that frees such pages leaves them. */
void fmqa_test_unmap_unread(int32_t *table, int64_t per_seq, int64_t ps, const ref_attn_shape *s,
                            const ref_cache_view *view);

/* The 2-D page table [batch, per_seq] of sequences of lengths lens (pages of
 * ps tokens) as a CSR page table (FMQA_FLAG_PAGE_CSR) in guarded buffers:
 * each sequence's pages up to its length, indptr starting at 2 (not 0: a
 * kernel must not assume it) and last_page_len. */
typedef struct fmqa_test_csr {
    const int32_t *indptr, *indices, *last_page_len;
} fmqa_test_csr;
fmqa_test_csr fmqa_test_csr_of(int64_t batch, int64_t ps, const int32_t *lens,
                               const int32_t *table, int64_t per_seq);

/* Points compress arguments ca (fmqa_compress_args) at the cache that the
 * decode or prefill arguments a (fmqa_decode_args or fmqa_prefill_args: the
 * same field names) read: K, V, their 8-bit scales, strides, page table and
 * lengths.  A macro because the two argument structs are different types. */
#define FMQA_TEST_COMPRESS_CACHE_OF(ca, a)                                                      \
    do {                                                                                        \
        (ca).k = (void *)(a)->k, (ca).v = (void *)(a)->v;                                       \
        (ca).k_stride_batch = (a)->k_stride_batch, (ca).k_stride_token = (a)->k_stride_token;   \
        (ca).k_stride_head = (a)->k_stride_head;                                                \
        (ca).v_stride_batch = (a)->v_stride_batch, (ca).v_stride_token = (a)->v_stride_token;   \
        (ca).v_stride_head = (a)->v_stride_head;                                                \
        (ca).k_scale = (float *)(a)->k_scale, (ca).v_scale = (float *)(a)->v_scale;             \
        (ca).k_scale_stride_batch = (a)->k_scale_stride_batch;                                  \
        (ca).k_scale_stride_token = (a)->k_scale_stride_token;                                  \
        (ca).k_scale_stride_head = (a)->k_scale_stride_head;                                    \
        (ca).v_scale_stride_batch = (a)->v_scale_stride_batch;                                  \
        (ca).v_scale_stride_token = (a)->v_scale_stride_token;                                  \
        (ca).v_scale_stride_head = (a)->v_scale_stride_head;                                    \
        (ca).page_table = (a)->page_table, (ca).page_table_stride = (a)->page_table_stride;     \
        (ca).kv_lens = (a)->kv_lens;                                                            \
    } while (0)

#endif
