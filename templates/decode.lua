-- decode.lua -- the decode attention template: one or a few query tokens per
-- sequence against a KV cache (f16, bf16, int8, fp8 e4m3; contiguous, paged or
-- ring; window and sinks; causal or tree mask among the drafts), tensor cores
-- (mma.sync m16n8k16) with split-KV and a log-sum-exp combine.  decode.cuh
-- holds the kernels and the fragment layouts; docs/kernels.md the design.
--
-- Invariants this file keeps with decode.cuh:
--  * shared_bytes() below is the kernel's SMEM_BYTES (the kernel traps on a
--    launch with less);
--  * grid = (P, 1, 1), persistent: P = SPLITS, or with SPLITS = 0 the
--    device's SMs x the CTAs one SM holds, at most one CTA per unit of work;
--    block = 32 * (WARPS_M * WARPS_N + BULK) threads; row_blocks = ceil(GROUP *
--    q_tokens / cta_rows) with cta_rows = 16 * M_TILES * WARPS_M; the kernel
--    reads gridDim.x, so any P is correct (fmqa_sched.cuh);
--  * a sequence has at most ceil(eff_len() / BLOCK_N) tiles; the schedule,
--    its pieces and workspace are lib/sched.lua's (fmqa_sched.cuh);
--  * with scores (decode_scores.cuh) the workspace goes on (16-byte aligned,
--    at plan scalars ws_sl_offset and ws_x_offset) with the rows' final
--    base-2 LSE [b, t, h] floats and their base-2 logits [b, kv head, row,
--    score_nv] floats, score_nv = eff_len() rounded up to 4 (a plan scalar);
--    the last kernel, fmqa_decode_scores, has grid (ceil(score_nv / 128),
--    num_kv_heads, batch) and GROUP * q_tokens floats of shared memory.

local KV_FMT = { f16 = 0, bf16 = 1, int8 = 2, fp8_e4m3 = 3 }
local HEAD_DIMS = { [64] = true, [96] = true, [128] = true, [256] = true }
local MIN_CTA_TILES = 2        -- automatic grids give each CTA >= 2 tiles
local VBIAS_MAX_TOKENS = 256   -- VBIAS = 1: the most tokens a warp accumulates in a piece

local common, sched = require("common"), require("sched")
local ceil_div, flag, kv_bytes = common.ceil_div, common.flag, common.kv_bytes

-- Problem-level legality, shared by specialize and valid.
local PROBLEM_CHECKS = {
  common.op_is("decode"),
  common.head_dims(HEAD_DIMS, "64, 96, 128 or 256", 128),
  common.q_tokens_at_most(16),
  common.q_out_16bit,
  common.kv_dtype_in(KV_FMT, "f16, bf16, int8 or fp8_e4m3"),
  common.page_size_pow2,
  common.ring_has_window,
  function(p)
    if p.csr and (not p.paged or p.ring) then return "a CSR page table needs a paged cache without a ring" end
    if p.slot_mapping then return "a slot mapping is for append" end
  end,
  common.softcap_nonneg,
  common.window_nonneg,
  common.kv_covers_q,
}
local function problem_check(p) return common.first_failure(p, PROBLEM_CHECKS) end

local function rows(p) return (p.num_q_heads // p.num_kv_heads) * p.q_tokens end
local function cta_rows(c) return 16 * c.M_TILES * c.WARPS_M end
-- decode.cuh's CTA_THREADS: the compute warps, and with BULK the producer warp
local function cta_threads(c) return 32 * (c.WARPS_M * c.WARPS_N + c.BULK) end

-- Positions per row the scores workspace holds: eff_len rounded up to 4 (so
-- that every row starts 16-byte aligned).
local function score_nv(p) return ceil_div(common.eff_len(p), 4) * 4 end

-- decode.cuh's SMEM_BYTES: Q rows, then max(pipeline stages, merge buffer),
-- then with BULK two mbarriers a stage.
local function shared_bytes(c, p)
  local d, eb = p.head_dim_qk, kv_bytes(p)
  local q = cta_rows(c) * (2 * d + 16)
  local stage = 2 * c.BLOCK_N * (d * eb + 16) + (eb == 1 and 8 * c.BLOCK_N or 0)
  local merge = c.WARPS_M * c.M_TILES * (c.WARPS_N - 1) * (d // 2 + 4) * 32 * 4
  return q + math.max(c.STAGES * stage, merge) + 16 * c.STAGES * c.BULK
end

-- Registers per thread, conservatively: O and S accumulators (d/2 + WN/2
-- floats per m-tile) plus 100 for fragments, addresses and row state.  ptxas
-- (sm_80 and sm_90, CUDA 13) fits d=256 with 32 tokens a warp (144 + 100) in
-- 255 without spills but spills at 64 tokens a warp (160 + 100); d=128 with
-- 128 (128 + 100) fits, and so do two m-tiles of d=128 with 16 tokens a warp
-- (2 x 72 + 100), and with an int8 cache (its K bias, the rows' start
-- values, and scale columns: about 4 more a m-tile) in 255 without spills
-- since smem_addr is the compiler's builtin (fmqa_ptx.cuh; with the inline
-- asm ptxas spilled 8 bytes there).  __launch_bounds__ caps a thread at
-- regs_per_sm / threads, hence fits_device's second check (lib/common.lua).
local function regs_estimate(c, p)
  local int8 = p.kv_dtype == "int8" and 4 or 0
  return c.M_TILES * (p.head_dim_qk // 2 + c.BLOCK_N // c.WARPS_N // 2 + int8) + 100
end

-- CTAs of this config one SM holds at once, by shared memory (1 KB reserved
-- per CTA), threads (2048 an SM) and registers (the estimate above, allocated
-- per warp in units of 256).  The persistent grid is this many CTAs an SM: one
-- more than fit would run as a second partial wave (d = 64 MQA on sm_90: 3 by
-- shared memory, but ptxas's 172 registers let 2 fit, and 396 CTAs ran as
-- 1.5 waves).  The estimate is within about 10 of ptxas's count either way
-- (two f16 m-tiles at d = 128: 244 against 254), so a config near a boundary
-- may still get one CTA an SM more or fewer than fit; fastmqa-bench static
-- shows both (CTA/SM from ptxas's count, CTAs from this plan).  With BULK the
-- producer warp holds as many registers as a compute warp (cta_threads).
local function ctas_per_sm(c, p, d)
  local threads = cta_threads(c)
  local by_smem = d.smem_per_sm // (shared_bytes(c, p) + 1024)
  local by_threads = 2048 // threads
  local by_regs = d.regs_per_sm // (ceil_div(regs_estimate(c, p) * 32, 256) * 256 * (threads // 32))
  return math.max(1, math.min(by_smem, by_threads, by_regs))
end

-- Positions per work unit outside batch-invariant mode (decode.cuh's UNIT): 1,
-- or when paged the run of rows a thread copies within one page (RUN).
local function unit_tokens(c, p)
  if not p.paged then return 1 end
  local cpr = p.head_dim_qk * kv_bytes(p) // 16
  local lg = 1
  while lg * 2 <= math.min(32 * c.WARPS_M * c.WARPS_N // cpr, c.BLOCK_N) do lg = lg * 2 end
  return math.min(p.page_size, c.BLOCK_N // lg)
end

-- The persistent schedule (lib/sched.lua).  Automatic grids give each CTA
-- MIN_CTA_TILES tiles of the longest sequences.
local function sched_of(c, p, d)
  return { rows_cta = cta_rows(c), block_n = c.BLOCK_N, unit = unit_tokens(c, p),
           ctas_per_sm = ctas_per_sm(c, p, d), splits = c.SPLITS, min_tiles = MIN_CTA_TILES }
end

-- decode.cuh's K_BIAS: int8 K read as 1152 + k (int8 cache, f16 mma operands)
local function k_bias(p) return p.kv_dtype == "int8" and p.q_dtype == "f16" end

-- The most tokens one warp accumulates into O within one piece: a piece of n
-- consecutive positions lies within ceil(n / BLOCK_N) windows of BLOCK_N,
-- each holding BLOCK_N / WARPS_N of a warp's (decode.cuh's WN a tile).
local function warp_piece_tokens(c, p, d)
  local n = sched.work_plan(p, d, sched_of(c, p, d)).piece_len
  return ceil_div(n, c.BLOCK_N) * (c.BLOCK_N // c.WARPS_N)
end

-- VBIAS = 1 (V read as 1152 + v, the offset removed at the end of a piece;
-- decode.cuh's V_BIAS): O then holds 1152 x sum_j a_j besides the value, and
-- tensor cores whose fp32 accumulation truncates (aligned to the largest term,
-- rounded toward zero: measured on V100, T4, A100) lose part of it at every
-- add, so O's error grows with the tokens of one piece: a model (flat
-- attention, int8 units) gives 5.8e-4 at 256 tokens a warp (under the f16
-- rounding of P), 2e-3 at 1024, 2.8e-2 (6% of |O|) at 16384.
local function vbias_check(c, p, d)
  if c.VBIAS == 0 then return true end
  if not k_bias(p) then
    return false, "VBIAS = 1 needs an int8 cache with f16 queries (V read as 1152 + v in f16), got " ..
                  p.kv_dtype .. " with " .. p.q_dtype .. " queries"
  end
  local n = warp_piece_tokens(c, p, d)
  if n > VBIAS_MAX_TOKENS then
    return false, "VBIAS = 1: a warp may accumulate up to " .. n .. " tokens in one piece, over " ..
                  VBIAS_MAX_TOKENS .. ": truncating fp32 mma accumulation (V100, T4, A100) loses V's" ..
                  " 1152 offset's low bits at every add, an O error of 2e-3 at 1024 tokens and 6% of |O| at 16384"
  end
  return true
end

local function valid(c, p, d)
  local ok, why = problem_check(p)
  if not ok then return false, why end
  local wn = c.BLOCK_N // c.WARPS_N
  if c.BLOCK_N % c.WARPS_N ~= 0 or wn % 16 ~= 0 then
    return false, "BLOCK_N / WARPS_N = " .. c.BLOCK_N .. "/" .. c.WARPS_N .. " is not a multiple of 16"
  end
  if cta_rows(c) > 16 and cta_rows(c) - 16 >= rows(p) then
    return false, "WARPS_M x M_TILES = " .. c.WARPS_M .. " x " .. c.M_TILES ..
                  " leaves an m-tile with padding rows only (" .. rows(p) .. " rows)"
  end
  if c.BULK == 1 and d.cc < 90 then
    return false, "BULK = 1 (cp.async.bulk with mbarrier transaction counts) needs sm_90, got compute capability " .. d.cc
  end
  ok, why = vbias_check(c, p, d)
  if not ok then return false, why end
  return common.fits_device(cta_threads(c), regs_estimate(c, p), shared_bytes(c, p), d)
end

return {
  name = "decode",
  op = "decode",
  sources = { "decode.cuh" },
  entries = { "fmqa_decode_kernel", "fmqa_decode_combine", "fmqa_decode_scores" },
  arch_min = 80,

  specialize = function(p)
    local ok, why = problem_check(p)
    if not ok then error(why) end
    return {
      HEAD_DIM = p.head_dim_qk,
      GROUP = p.num_q_heads // p.num_kv_heads,
      Q_TOKENS = p.q_tokens,
      Q_BF16 = flag(p.q_dtype == "bf16"),
      OUT_BF16 = flag(p.out_dtype == "bf16"),
      KV_FMT = KV_FMT[p.kv_dtype],
      PAGED = flag(p.paged),
      PAGE_SIZE = p.paged and p.page_size or 0,
      CSR = flag(p.csr),
      CAUSAL = flag(p.causal),
      TREE = flag(p.tree),
      WINDOW = flag(p.window > 0),
      RING = flag(p.ring),
      LSE = flag(p.lse),
      INVARIANT = flag(p.batch_invariant),
      SOFTCAP = flag(p.logit_softcap > 0),
      SCORES = flag(p.scores),
    }
  end,

  space = {
    BLOCK_N = { 32, 64, 128 },
    WARPS_M = { 1, 2, 4, 8 },
    M_TILES = { 1, 2 },
    WARPS_N = { 1, 2, 4, 8 },
    STAGES = { 2, 3, 4 },
    -- CTAs of the persistent grid (0: the device's SMs x CTAs per SM)
    SPLITS = { 0, 1, 2, 4, 8, 16, 32, 64, 128 },
    -- K/V loads: 0 cp.async from every warp; 1 (sm_90+) a producer warp's
    -- cp.async.bulk row copies into an mbarrier ring (decode.cuh, "Load pipeline")
    BULK = { 0, 1 },
    -- int8 V read as 1152 + v (decode.cuh's V_BIAS): valid() allows it only
    -- with the K bias and at most 256 tokens a warp in one piece
    VBIAS = { 0, 1 },
  },

  valid = valid,

  launch = function(c, p, d)
    local plan = sched.plan(p, d, sched_of(c, p, d),
                            { entry = "fmqa_decode_kernel", block = { cta_threads(c), 1, 1 }, shared = shared_bytes(c, p) },
                            "fmqa_decode_combine")
    if p.scores then
      local nv, out_rows = score_nv(p), p.batch * p.q_tokens * p.num_q_heads
      plan.score_nv = nv
      plan.ws_sl_offset = ceil_div(plan.workspace, 16) * 16
      plan.ws_x_offset = plan.ws_sl_offset + ceil_div(out_rows * 4, 16) * 16
      plan.workspace = plan.ws_x_offset + p.batch * p.num_kv_heads * rows(p) * nv * 4
      plan.kernels[#plan.kernels + 1] = { entry = "fmqa_decode_scores", grid = { ceil_div(nv, 128), p.num_kv_heads, p.batch },
                                block = { 128, 1, 1 }, shared = rows(p) * 4 }
    end
    return plan
  end,

  -- H100-class choice: 4 warps (fewer 16-row m-tiles when the group is
  -- small), two m-tiles a warp where the registers allow (each K/V fragment
  -- then read and converted once for 32 rows), 64-token tiles (32 for d =
  -- 256), 3 stages (4 for the half-size 8-bit tiles), automatic splits,
  -- cp.async loads also on sm_90 (BULK = 0: the bulk pipeline's producer warp
  -- costs more instructions than it saves, docs/PERFORMANCE.md step 7; the
  -- tuner measures both), V read biased where valid() allows it (VBIAS = 1,
  -- fewer instructions; short pieces only); falls back through fewer
  -- m-tiles, smaller tiles and stages.
  default = function(p, d)
    -- The m-tiles of a CTA: the smallest power of two that covers the rows,
    -- halved while valid() refuses every layout of them (e.g. padding only).
    local tiles = 1
    while tiles < (p.head_dim_qk >= 256 and 2 or 4) and 16 * tiles < rows(p) do tiles = tiles * 2 end
    local stages = kv_bytes(p) == 1 and 4 or 3
    for _, bn in ipairs(p.head_dim_qk >= 256 and { 32, 64 } or { 64, 32 }) do
      for s = stages, 2, -1 do
        local t = tiles
        while t >= 1 do
          for _, mt in ipairs({ 2, 1 }) do
            local w = t // mt
            if w >= 1 then
              local wn = math.max(1, 4 // w)
              while bn // wn < 16 do wn = wn // 2 end
              for _, vb in ipairs({ 1, 0 }) do
                local c = { BLOCK_N = bn, WARPS_M = w, M_TILES = mt, WARPS_N = wn, STAGES = s, SPLITS = 0,
                            BULK = 0, VBIAS = vb }
                if valid(c, p, d) then return c end
              end
            end
          end
          t = t // 2
        end
      end
    end
    return { BLOCK_N = 32, WARPS_M = 1, M_TILES = 1, WARPS_N = 1, STAGES = 2, SPLITS = 0, BULK = 0, VBIAS = 0 }
  end,
}
