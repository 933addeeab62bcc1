/*
 * test_peers_layout.c -- the ctypes mirrors of the public structs in
 * bench/peers/peers.py (the PyTorch comparison, which calls fmqa_decode through
 * ctypes) against the C compiler's layout of fastmqa.h.
 *
 * `peers.py --print-layout` (no torch needed) prints one JSON record per line:
 * {"struct": S, "sizeof": N} and {"struct": S, "field": F, "offset": O,
 * "size": Z}.  Every record must name a struct and field of the table below with
 * the same offset and size, every field of the table must appear exactly once,
 * and every struct's size must match: a field added on one side only changes a
 * size or leaves a record unknown.  Without python3 the test is skipped.
 */
#define _POSIX_C_SOURCE 200809L /* popen, pclose */

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

#include "fastmqa.h"

typedef struct member {
    const char *strct, *name;
    size_t offset, size;
    int seen;
} member;

#define M(s, f) {#s, #f, offsetof(s, f), sizeof(((s *)0)->f), 0}
#define STRIDES(s, t) M(s, t##_stride_batch), M(s, t##_stride_token), M(s, t##_stride_head)

static member members[] = {
    M(fmqa_problem, op), M(fmqa_problem, batch), M(fmqa_problem, num_q_heads),
    M(fmqa_problem, num_kv_heads), M(fmqa_problem, head_dim_qk), M(fmqa_problem, head_dim_v),
    M(fmqa_problem, q_tokens), M(fmqa_problem, kv_len), M(fmqa_problem, q_dtype),
    M(fmqa_problem, kv_dtype), M(fmqa_problem, out_dtype), M(fmqa_problem, page_size),
    M(fmqa_problem, window), M(fmqa_problem, sink_tokens), M(fmqa_problem, rope),
    M(fmqa_problem, flags),

    M(fmqa_options, struct_size), M(fmqa_options, version), M(fmqa_options, device),
    M(fmqa_options, db_path), M(fmqa_options, template_dir), M(fmqa_options, log_level),

    M(fmqa_decode_args, q), STRIDES(fmqa_decode_args, q), M(fmqa_decode_args, k),
    M(fmqa_decode_args, v), STRIDES(fmqa_decode_args, k), STRIDES(fmqa_decode_args, v),
    M(fmqa_decode_args, k_scale), M(fmqa_decode_args, v_scale),
    STRIDES(fmqa_decode_args, k_scale), STRIDES(fmqa_decode_args, v_scale),
    M(fmqa_decode_args, kv_lens), M(fmqa_decode_args, page_table),
    M(fmqa_decode_args, page_table_stride), M(fmqa_decode_args, tree_mask),
    M(fmqa_decode_args, o), STRIDES(fmqa_decode_args, o), M(fmqa_decode_args, lse),
    M(fmqa_decode_args, sm_scale), M(fmqa_decode_args, workspace),
    M(fmqa_decode_args, workspace_size),

    M(fmqa_choice, source), M(fmqa_choice, template_name), M(fmqa_choice, config),
    M(fmqa_choice, tuned_time_us), M(fmqa_choice, reason),
};

static member structs[] = {
    {"fmqa_problem", "", 0, sizeof(fmqa_problem), 0},
    {"fmqa_options", "", 0, sizeof(fmqa_options), 0},
    {"fmqa_decode_args", "", 0, sizeof(fmqa_decode_args), 0},
    {"fmqa_choice", "", 0, sizeof(fmqa_choice), 0},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static member *find(member *table, size_t n, const char *strct, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(table[i].strct, strct) && !strcmp(table[i].name, name))
            return &table[i];
    return NULL;
}

/* Checks one record line against the tables; "[" and "]" are the list's brackets. */
static void check_line(const char *line)
{
    char strct[64], name[64];
    size_t offset, size;
    if (sscanf(line, "{\"struct\": \"%63[^\"]\", \"field\": \"%63[^\"]\", \"offset\": %zu, "
                     "\"size\": %zu}", strct, name, &offset, &size) == 4) {
        member *m = find(members, COUNT(members), strct, name);
        cr_expect(m != NULL, "peers.py mirrors %s.%s, which the C table does not know", strct,
                  name);
        if (!m)
            return;
        cr_expect_eq(offset, m->offset, "%s.%s: ctypes offset %zu, C offset %zu", strct, name,
                     offset, m->offset);
        cr_expect_eq(size, m->size, "%s.%s: ctypes size %zu, C size %zu", strct, name, size,
                     m->size);
        m->seen++;
    } else if (sscanf(line, "{\"struct\": \"%63[^\"]\", \"sizeof\": %zu}", strct, &size) == 2) {
        member *s = find(structs, COUNT(structs), strct, "");
        cr_expect(s != NULL, "peers.py mirrors struct %s, which the C table does not know",
                  strct);
        if (!s)
            return;
        cr_expect_eq(size, s->size, "sizeof %s: ctypes %zu, C %zu", strct, size, s->size);
        s->seen++;
    } else {
        cr_expect(line[0] == '[' || line[0] == ']', "unexpected line from peers.py: %s", line);
    }
}

Test(peers_layout, ctypes_structs_match_c)
{
    if (system("command -v python3 >/dev/null 2>&1") != 0)
        cr_skip_test("python3 not found: bench/peers/peers.py's ctypes layout not checked");
    FILE *p = popen("python3 '" FMQA_SOURCE_DIR "/bench/peers/peers.py' --print-layout", "r");
    cr_assert(p != NULL, "popen failed");
    char line[512];
    while (fgets(line, sizeof line, p))
        check_line(line);
    int rc = pclose(p);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "peers.py --print-layout failed (%d)", rc);
    for (size_t i = 0; i < COUNT(members); i++)
        cr_expect_eq(members[i].seen, 1, "%s.%s: %d ctypes records, expected 1",
                     members[i].strct, members[i].name, members[i].seen);
    for (size_t i = 0; i < COUNT(structs); i++)
        cr_expect_eq(structs[i].seen, 1, "sizeof %s: %d ctypes records, expected 1",
                     structs[i].strct, structs[i].seen);
}
