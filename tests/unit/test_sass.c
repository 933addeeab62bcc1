/*
 * test_sass.c -- the SASS walker of `fastmqa-bench static` (tuner/tun_sass.c)
 * on small hand-written functions in cuobjdump's format: the main loop (the
 * backward branch around the MMAs), the steady path chosen by the copy budget
 * (a whole number of unrolled passes skips the remainder; an odd budget takes
 * it), the unmasked side of a mask branch, instruction classes, integer
 * instructions per copy, the side of a guard that computes the tile (not the
 * cheaper one that skips it), dependent round trips before the first copy and
 * through a loop of guarded loads that all write the same registers, a
 * producer warp's loop of bulk copies, a budget in words that takes 4-byte
 * copies behind a guard, and the Hopper shape of prefill_sm90
 * (an out-of-line mbarrier retry is no loop; a path budgeted by wgmma keeps a
 * pass's "next tile" flag one way).
 */
#include <string.h>

#include <criterion/criterion.h>

#include "tun.h"

#define I(addr, text) "        /*" addr "*/                   " text " ;  /* 0x0 */\n"

/* kv_lens, a Q loop of 2-byte loads, the first copy, then a main loop: skip
 * the next load (last tiles), a one-copy remainder, an unrolled two-copy load
 * loop, a mask branch around three FSELs, two HMMAs, the back edge. */
static const char decode_like[] =
    "\tcode for sm_90\n\t\tFunction : kern\n"
    I("0000", "LDG.E R6, desc[UR8][R8.64]")
    I("0010", "ISETP.GE.AND P0, PT, R6, 0x1, PT")
    I("0020", "@!P0 EXIT")
    I("0030", "MOV R0, RZ")
    I("0040", "LDG.E.U16 R10, desc[UR8][R2.64]")
    I("0050", "LDG.E.U16 R11, desc[UR8][R2.64+0x2]")
    I("0060", "STS.U16 [R4], R10")
    I("0070", "STS.U16 [R4+0x2], R11")
    I("0080", "IADD3 R0, R0, 0x1, RZ")
    I("0090", "ISETP.GE.AND P1, PT, R0, 0x4, PT")
    I("00a0", "@!P1 BRA 0x40")
    I("00b0", "LDGSTS.E.BYPASS.128 [R5], desc[UR8][R12.64]")
    I("00c0", "ISETP.GE.AND P2, PT, R9, R6, PT")
    I("00d0", "@P2 BRA 0x1a0")
    I("00e0", "@P3 BRA 0x120")
    I("00f0", "IMAD R12, R9, 0x100, R5")
    I("0100", "LDGSTS.E.BYPASS.128 [R5], desc[UR8][R12.64]")
    I("0110", "IADD3 R7, R7, 0x1, RZ")
    I("0120", "IMAD.WIDE R12, R7, 0x10, R14")
    I("0130", "LDGSTS.E.BYPASS.128 [R5], desc[UR8][R12.64]")
    I("0140", "LEA R12, P4, R7, R14, 0x4")
    I("0150", "LDGSTS.E.BYPASS.128 [R5+0x10], desc[UR8][R12.64]")
    I("0160", "IADD3 R7, R7, 0x2, RZ")
    I("0170", "ISETP.GE.AND P4, PT, R7, R15, PT")
    I("0180", "@!P4 BRA 0x120")
    I("0190", "BAR.SYNC.DEFER_BLOCKING 0x0")
    I("01a0", "@!P5 BRA 0x1e0")
    I("01b0", "FSEL R20, R20, -INF , P6")
    I("01c0", "FSEL R21, R21, -INF , P6")
    I("01d0", "FSEL R22, R22, -INF , P6")
    I("01e0", "HMMA.16816.F32 R20, R24, R28, R20")
    I("01f0", "HMMA.16816.F32 R20, R24, R30, R20")
    I("0200", "IADD3 R9, R9, 0x1, RZ")
    I("0210", "ISETP.GE.AND P6, PT, R9, R6, PT")
    I("0220", "@!P6 BRA 0xc0")
    I("0230", "EXIT")
    I("0240", "BRA 0x240");

/* A combine-like loop: two guarded 16-byte loads into R12..R15 per pass, each
 * consumed before the next is issued; then a variant whose loads go to
 * different registers and are consumed after both are issued. */
static const char combine_like[] =
    "\t\tFunction : serial\n"
    I("0000", "MOV R0, RZ")
    I("0010", "@P0 LDG.E.128 R12, desc[UR4][R2.64]")
    I("0020", "FFMA R4, R12, R1, R4")
    I("0030", "@P0 LDG.E.128 R12, desc[UR4][R2.64+0x10]")
    I("0040", "FFMA R4, R13, R1, R4")
    I("0050", "IADD3 R0, R0, 0x2, RZ")
    I("0060", "ISETP.GE.AND P1, PT, R0, R5, PT")
    I("0070", "@!P1 BRA 0x10")
    I("0080", "STG.E [R6.64], R4")
    I("0090", "EXIT")
    "\t\tFunction : overlapped\n"
    I("0000", "MOV R0, RZ")
    I("0010", "LDG.E.128 R12, desc[UR4][R2.64]")
    I("0020", "LDG.E.128 R16, desc[UR4][R2.64+0x10]")
    I("0030", "FFMA R4, R12, R1, R4")
    I("0040", "FFMA R4, R16, R1, R4")
    I("0050", "IADD3 R0, R0, 0x2, RZ")
    I("0060", "ISETP.GE.AND P1, PT, R0, R5, PT")
    I("0070", "@!P1 BRA 0x10")
    I("0080", "STG.E [R6.64], R4")
    I("0090", "EXIT");

/* prefill_sm90's shape: an mbarrier wait whose retry loop ptxas moved out of
 * line (0x20 enters the stub at 0x120, which returns to 0x30 by an
 * unconditional backward branch: no loop, though its range holds the most
 * MMAs), a peeled first GEMM, then the main loop 0x40-0x100 whose "next tile"
 * flag P5, written once at its top, guards both the next tile's GEMM and its
 * softmax. */
static const char hopper_like[] =
    "\t\tFunction : fa3\n"
    I("0000", "MOV R0, RZ")
    I("0010", "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R3")
    I("0020", "@!P0 BRA 0x120")
    I("0030", "HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], RZ")
    I("0040", "MOV R1, R2")
    I("0050", "PLOP3.LUT P5, PT, PT, PT, UP0, 0x80, 0x0")
    I("0060", "@P5 BRA 0x90")
    I("0070", "HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], RZ")
    I("0080", "HGMMA.64x64x16.F32.BF16 R24, gdesc[UR12], R24")
    I("0090", "HGMMA.64x64x16.F32.BF16 R56, R88, gdesc[UR16], R56")
    I("00a0", "HGMMA.64x64x16.F32.BF16 R56, R92, gdesc[UR20], R56")
    I("00b0", "@P5 BRA 0xe0")
    I("00c0", "MUFU.EX2 R5, R5")
    I("00d0", "FFMA R6, R5, R7, R8")
    I("00e0", "IADD3 R9, R9, 0x1, RZ")
    I("00f0", "ISETP.GE.AND P1, PT, R9, R10, PT")
    I("0100", "@!P1 BRA 0x40")
    I("0110", "EXIT")
    I("0120", "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R3")
    I("0130", "@!P0 BRA 0x120")
    I("0140", "BRA 0x30");

static tun_sass *parse(const char *text)
{
    tun_sass *s = NULL;
    fmqa_err err;
    cr_assert_eq(tun_sass_parse(text, &s, &err), FMQA_OK, "%s", err.msg);
    return s;
}

Test(sass, whole_unrolled_passes_skip_the_remainder)
{
    tun_sass *s = parse(decode_like);
    tun_sass_loop l;
    fmqa_err err;
    cr_assert_eq(tun_sass_main_loop(s, "kern", 4, &l, &err), FMQA_OK, "%s", err.msg);
    cr_expect(l.found && l.exact);
    cr_expect_eq(l.head, 0xc0);
    cr_expect_eq(l.tail, 0x220);
    /* 0xc0-0xe0, two passes of 0x120-0x180, 0x190, 0x1a0, then 0x1e0-0x220 */
    cr_expect_float_eq(l.insts, 3 + 2 * 7 + 1 + 1 + 5, 1e-9, "insts %g", l.insts);
    cr_expect_float_eq(l.copies, 4, 1e-9);
    cr_expect_float_eq(l.copy_bytes, 64, 1e-9);
    cr_expect_float_eq(l.mma, 2, 1e-9);
    cr_expect_float_eq(l.fp, 0, 1e-9, "the masked FSELs are off the steady path");
    cr_expect_float_eq(l.sync, 1, 1e-9);
    cr_expect_float_eq(l.branch, 6, 1e-9, "0xd0, 0xe0, 2 x 0x180, 0x1a0, 0x220: %g", l.branch);
    /* the load block 0x120-0x180 holds IMAD.WIDE, LEA, IADD3, ISETP per 2 copies */
    cr_expect_float_eq(l.addr_per_copy, 2.0, 1e-9, "%g", l.addr_per_copy);
    tun_sass_free(s);
}

Test(sass, an_odd_budget_takes_the_remainder)
{
    tun_sass *s = parse(decode_like);
    tun_sass_loop l;
    cr_assert_eq(tun_sass_main_loop(s, "kern", 3, &l, NULL), FMQA_OK);
    cr_expect(l.exact);
    cr_expect_float_eq(l.insts, 3 + 3 + 7 + 1 + 1 + 5, 1e-9, "insts %g", l.insts);
    cr_expect_float_eq(l.copies, 3, 1e-9);
    /* A budget no path meets (the loop runs at least once after the
     * remainder): the closest, skipping the load, flagged as not exact. */
    cr_assert_eq(tun_sass_main_loop(s, "kern", 1, &l, NULL), FMQA_OK);
    cr_expect(!l.exact);
    cr_expect_float_eq(l.copies, 0, 1e-9, "%g", l.copies);
    tun_sass_free(s);
}

/* A tile loop whose compute part sits behind a guard, as decode's `if
 * (active)` (warps whose rows are all padding only load): copy, barrier, the
 * guard, four HMMAs and their FMULs, the back edge; inside a loop over pieces
 * whose own HMMA (decode's int8 S start values) puts more MMAs in its range. */
static const char guarded_tile[] =
    "\t\tFunction : guarded\n"
    I("0000", "HMMA.16816.F32 R40, R24, R28, RZ")
    I("0010", "LDGSTS.E.BYPASS.128 [R5], desc[UR8][R12.64]")
    I("0020", "BAR.SYNC.DEFER_BLOCKING 0x0")
    I("0030", "@!P0 BRA 0xa0")
    I("0040", "HMMA.16816.F32 R20, R24, R28, R20")
    I("0050", "HMMA.16816.F32 R20, R24, R30, R20")
    I("0060", "HMMA.16816.F32 R20, R26, R28, R20")
    I("0070", "HMMA.16816.F32 R20, R26, R30, R20")
    I("0080", "FMUL R20, R20, R2")
    I("0090", "FMUL R21, R21, R2")
    I("00a0", "IADD3 R9, R9, 0x1, RZ")
    I("00b0", "ISETP.GE.AND P6, PT, R9, R6, PT")
    I("00c0", "@!P6 BRA 0x10")
    I("00d0", "ISETP.GE.AND P1, PT, R7, R6, PT")
    I("00e0", "@!P1 BRA 0x0")
    I("00f0", "EXIT");

Test(sass, the_path_that_computes_the_tile)
{
    tun_sass *s = parse(guarded_tile);
    tun_sass_loop l;
    fmqa_err err;
    cr_assert_eq(tun_sass_main_loop(s, "guarded", 1, &l, &err), FMQA_OK, "%s", err.msg);
    cr_expect(l.exact);
    cr_expect_eq(l.head, 0x10, "the tile loop, not the loop over pieces: head 0x%x", l.head);
    cr_expect_eq(l.tail, 0xc0);
    cr_expect_float_eq(l.mma, 4, 1e-9, "the guard's skip side was taken: %g MMAs", l.mma);
    cr_expect_float_eq(l.fp, 2, 1e-9);
    cr_expect_float_eq(l.insts, 12, 1e-9, "insts %g", l.insts);
    tun_sass_free(s);
}

/* A tile loop whose 4-byte copies (decode's 8-bit scales) sit behind a guard
 * that only some threads pass: a budget of 16-byte copies cannot tell the
 * two sides apart and takes the cheaper one, a budget of the tile's words
 * (two 16-byte copies and one 4-byte copy a thread: 9) takes the copies. */
static const char scale_copies[] =
    "\t\tFunction : scales\n"
    I("0000", "LDGSTS.E.BYPASS.128 [R5], desc[UR8][R12.64]")
    I("0010", "LDGSTS.E.BYPASS.128 [R5+0x10], desc[UR8][R14.64]")
    I("0020", "@P1 BRA 0x60")
    I("0030", "IMAD.WIDE R16, R3, 0x4, R16")
    I("0040", "IADD3 R7, R7, 0x4, RZ")
    I("0050", "LDGSTS.E [R7], desc[UR8][R16.64]")
    I("0060", "BAR.SYNC.DEFER_BLOCKING 0x0")
    I("0070", "HMMA.16816.F32 R20, R24, R28, R20")
    I("0080", "IADD3 R9, R9, 0x1, RZ")
    I("0090", "ISETP.GE.AND P6, PT, R9, R6, PT")
    I("00a0", "@!P6 BRA 0x0")
    I("00b0", "EXIT");

Test(sass, a_words_budget_takes_the_small_copies)
{
    tun_sass *s = parse(scale_copies);
    tun_sass_loop l;
    fmqa_err err;
    cr_assert_eq(tun_sass_main_loop(s, "scales", 2, &l, &err), FMQA_OK, "%s", err.msg);
    cr_expect_float_eq(l.insts, 8, 1e-9, "16-byte budget: the guard's skip side (%g)", l.insts);
    cr_assert_eq(tun_sass_main_loop_words(s, "scales", 9, &l, &err), FMQA_OK, "%s", err.msg);
    cr_expect(l.exact);
    cr_expect_float_eq(l.copies, 3, 1e-9, "copies %g", l.copies);
    cr_expect_float_eq(l.copy_bytes, 36, 1e-9, "copy bytes %g", l.copy_bytes);
    cr_expect_float_eq(l.insts, 11, 1e-9, "insts %g", l.insts);
    tun_sass_free(s);
}

Test(sass, round_trips_before_the_first_copy)
{
    tun_sass *s = parse(decode_like);
    int trips = -1;
    fmqa_err err;
    /* kv_lens (4 bytes) + 4 passes of two 2-byte loads: 1 + 4 waits */
    cr_assert_eq(tun_sass_round_trips(s, "kern", TUN_SASS_TO_FIRST_COPY, 20, &trips, &err),
                 FMQA_OK, "%s", err.msg);
    cr_expect_eq(trips, 5);
    /* A smaller budget runs the Q loop fewer times. */
    cr_assert_eq(tun_sass_round_trips(s, "kern", TUN_SASS_TO_FIRST_COPY, 8, &trips, NULL), FMQA_OK);
    cr_expect_eq(trips, 2);
    tun_sass_free(s);
}

Test(sass, loads_into_the_same_registers_serialize)
{
    tun_sass *s = parse(combine_like);
    int trips = -1;
    cr_assert_eq(tun_sass_round_trips(s, "serial", TUN_SASS_TO_EXIT, 6, &trips, NULL), FMQA_OK);
    cr_expect_eq(trips, 6, "3 passes of 2 dependent loads, got %d", trips);
    cr_assert_eq(tun_sass_round_trips(s, "overlapped", TUN_SASS_TO_EXIT, 6, &trips, NULL),
                 FMQA_OK);
    cr_expect_eq(trips, 3, "3 passes of 2 loads in flight together, got %d", trips);
    tun_sass_free(s);
}

/* A producer loop (decode BULK = 1): wait for a free stage, one address, an
 * arrive, then the loop ptxas wraps around a bulk copy whose operands differ
 * between lanes (ELECT one lane, its operands into uniform registers, the
 * copy, again while lanes are left), the back edge.  With 32 copies a tile the
 * inner loop runs 32 times: 4 + 32 x 6 + 3 = 199 instructions, of them
 * integer IMAD and PLOP3, 32 x (2 R2UR + PLOP3), IADD3 and ISETP = 100, per 16
 * of the 32 x 256 bytes copied 100 / 512. */
static const char producer[] =
    "\t\tFunction : producer\n"
    I("0000", "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [R8+URZ], R9")
    I("0010", "IMAD.WIDE R6, R4, 0x100, R2")
    I("0020", "SYNCS.ARRIVE.TRANS64 RZ, [R8+URZ], R10")
    I("0030", "PLOP3.LUT P0, PT, PT, PT, PT, 0x80, 0x0")
    I("0040", "@P0 ELECT P1, URZ, PT")
    I("0050", "@P1 R2UR UR6, R6")
    I("0060", "@P1 R2UR UR7, R7")
    I("0070", "@P1 PLOP3.LUT P0, PT, P1, PT, PT, 0x8, 0x0")
    I("0080", "UBLKCP.S.G [UR12], [UR6], UR4")
    I("0090", "@P0 BRA.U.ANY 0x40")
    I("00a0", "IADD3 R4, R4, 0x1, RZ")
    I("00b0", "ISETP.GE.AND P2, PT, R4, R5, PT")
    I("00c0", "@!P2 BRA 0x0")
    I("00d0", "EXIT")
    I("00e0", "BRA 0xe0");

Test(sass, a_producer_loop_takes_a_trip_per_lane)
{
    tun_sass *s = NULL;
    fmqa_err err;
    cr_assert_eq(tun_sass_parse(producer, &s, &err), FMQA_OK, "%s", err.msg);
    tun_sass_loop l;
    cr_assert_eq(tun_sass_bulk_loop(s, "producer", 32, 32 * 256, &l, &err), FMQA_OK, "%s", err.msg);
    cr_expect(l.exact);
    cr_expect_eq(l.head, 0x0u);
    cr_expect_eq(l.tail, 0xc0u);
    cr_expect_eq(l.insts, 199);
    cr_expect_eq(l.copies, 32);
    cr_expect_eq(l.integer, 100);
    cr_expect_float_eq(l.addr_per_copy, 100.0 / 512, 1e-9);
    tun_sass_loop m;
    cr_expect_eq(tun_sass_main_loop(s, "producer", 0, &m, &err), FMQA_ERR_NOT_FOUND, "no MMA loop");
    tun_sass_free(s);
    tun_sass *none = NULL;
    cr_assert_eq(tun_sass_parse(decode_like, &none, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(tun_sass_bulk_loop(none, "kern", 2, 32, &l, &err), FMQA_ERR_NOT_FOUND);
    cr_expect(strstr(err.msg, "no loop holds a bulk copy") != NULL, "%s", err.msg);
    tun_sass_free(none);
}

Test(sass, bad_input_is_refused)
{
    tun_sass *s = NULL;
    fmqa_err err;
    cr_expect_eq(tun_sass_parse("no functions here\n", &s, &err), FMQA_ERR_INVALID_ARGUMENT);
    cr_expect_null(s);
    cr_expect_eq(tun_sass_parse("\t\tFunction : f\n" I("0000", "BRA R4"), &s, &err),
                 FMQA_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(err.msg, "without a target") != NULL, "%s", err.msg);
    s = parse(combine_like);
    tun_sass_loop l;
    cr_expect_eq(tun_sass_main_loop(s, "serial", 1, &l, &err), FMQA_ERR_NOT_FOUND,
                 "no MMA: no main loop");
    cr_expect_eq(tun_sass_main_loop(s, "missing", 1, &l, &err), FMQA_ERR_NOT_FOUND);
    cr_expect(tun_sass_has_function(s, "overlapped"));
    tun_sass_free(s);
}

/* The out-of-line wait is no loop, and the path budgeted by MMAs keeps P5 one
 * way through the pass: the next tile's GEMM and its softmax together. */
Test(sass, hopper_loop_past_an_out_of_line_wait)
{
    tun_sass *s = parse(hopper_like);
    tun_sass_loop l;
    fmqa_err err;
    cr_assert_eq(tun_sass_main_loop_mma(s, "fa3", 4, &l, &err), FMQA_OK, "%s", err.msg);
    cr_expect_eq(l.head, 0x40);
    cr_expect_eq(l.tail, 0x100);
    cr_expect(l.exact);
    cr_expect_float_eq(l.mma, 4, 1e-9);
    cr_expect_float_eq(l.mufu, 1, 1e-9, "the softmax of the tile whose GEMM ran: %g", l.mufu);
    cr_expect_float_eq(l.insts, 13, 1e-9, "0x40-0x100 all but nothing: %g", l.insts);
    /* Two MMAs: only the pass without a next tile (P5 set) issues that few. */
    cr_assert_eq(tun_sass_main_loop_mma(s, "fa3", 2, &l, &err), FMQA_OK, "%s", err.msg);
    cr_expect(l.exact);
    cr_expect_float_eq(l.mufu, 0, 1e-9);
    tun_sass_free(s);
}
