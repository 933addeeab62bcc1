-- mla_decode.lua -- Multi-head Latent Attention decode (DeepSeek style,
-- absorbed weights): H query heads against one latent row of 512 + 64 values
-- per token (f16, bf16, or fp8 e4m3 with a float scale per token; contiguous,
-- paged or ring), 1 to 16 query tokens with an optional causal mask among
-- them, sliding window with sink tokens and learned sinks as decode's
-- (fmqa_seq.cuh), mma.sync tensor cores (sm_80+), split-KV with the shared
-- combine (fmqa_combine.cuh).  mla_decode.cuh holds the kernel and its design.
--
-- Invariants this file keeps with mla_decode.cuh:
--  * shared_bytes() is the kernel's SMEM_BYTES (it traps on less);
--  * grid = (P, 1, 1), persistent, and block = 32 * WARPS_M * WARPS_D: decode's
--    schedule (lib/sched.lua, fmqa_sched.cuh) over segments (b, row block),
--    row_blocks = ceil(H * q_tokens / (16 * WARPS_M)), units of unit_tokens()
--    virtual positions (eff_len, the most one sequence's kernel reads: sinks
--    + window), or batch-invariant chunks; its workspace and plan scalars
--    (pieces, ws_lse_offset, ws_meta_offset) are lib/sched.lua's, merged by
--    fmqa_mla_decode_combine (fmqa_combine.cuh's combine_row).
-- A wgmma (sm_90a) variant would be a second template of op mla_decode with
-- the same launch rules and its own source; the dispatcher and the tuner pick
-- between templates of an op.

local KV_FMT = { f16 = 0, bf16 = 1, fp8_e4m3 = 3 }
local LATENT, ROPE = 512, 64
local MIN_CTA_TILES = 4  -- automatic grids give each CTA >= 4 tiles

local common, sched = require("common"), require("sched")
local flag, kv_bytes = common.flag, common.kv_bytes

local PROBLEM_CHECKS = {
  common.op_is("mla_decode"),
  common.mla_latent(LATENT, ROPE),
  common.q_tokens_at_most(16),
  common.q_out_16bit,
  common.kv_dtype_in(KV_FMT, "f16, bf16 or fp8_e4m3 for MLA"),
  common.page_size_pow2,
  function(p)
    if p.csr and not p.paged then return "a CSR page table needs a paged cache" end
    if p.tree then
      return "MLA decode serves a causal mask among the query tokens or none, not a tree mask"
    end
  end,
  common.ring_has_window,
  common.window_nonneg,
  common.kv_covers_q,
}
local function problem_check(p) return common.first_failure(p, PROBLEM_CHECKS) end

local function rows(p) return p.num_q_heads * p.q_tokens end


-- mla_decode.cuh's SMEM_BYTES: Q rows, P rows, the row exchange, the stages
-- (one latent row per token serves as K and V; fp8 adds a scale per token).
local function shared_bytes(c, p)
  local rows_cta, eb = 16 * c.WARPS_M, kv_bytes(p)
  local q = rows_cta * ((LATENT + ROPE) * 2 + 16)
  local pbuf = rows_cta * (c.BLOCK_N * 2 + 16)
  local red = rows_cta * c.WARPS_D * 4
  local stage = c.BLOCK_N * ((LATENT + ROPE) * eb + 16) + (eb == 1 and 4 * c.BLOCK_N or 0)
  return q + pbuf + red + c.STAGES * stage
end

-- Registers per thread, conservatively: the warp's O columns (256 / WARPS_D
-- floats), its scores (BLOCK_N / WARPS_D / 2) and 80 for fragments,
-- addresses and row state (calibrated with ptxas: docs/kernels.md).
local function regs_estimate(c)
  return 256 // c.WARPS_D + c.BLOCK_N // c.WARPS_D // 2 + 80
end

local function ctas_per_sm(c, p, d)
  local by_smem = d.smem_per_sm // (shared_bytes(c, p) + 1024)
  local by_threads = 2048 // (32 * c.WARPS_M * c.WARPS_D)
  return math.max(1, math.min(by_smem, by_threads))
end

-- Positions per work unit outside batch-invariant mode (mla_decode.cuh's
-- UNIT): 1, or when paged the run of rows a thread copies within one page
-- (RUN: the page, or BLOCK_N / LG, LG the largest power of two <= the
-- threads per 16-byte chunk of a row, at most BLOCK_N).
local function unit_tokens(c, p)
  if not p.paged then return 1 end
  local cpr = (LATENT + ROPE) * kv_bytes(p) // 16
  local lg = 1
  while lg * 2 <= math.min(32 * c.WARPS_M * c.WARPS_D // cpr, c.BLOCK_N) do lg = lg * 2 end
  return math.min(p.page_size, c.BLOCK_N // lg)
end

local function valid(c, p, d)
  local ok, why = problem_check(p)
  if not ok then return false, why end
  local wn = c.BLOCK_N // c.WARPS_D
  if c.BLOCK_N % c.WARPS_D ~= 0 or wn % 16 ~= 0 then
    return false, "BLOCK_N / WARPS_D = " .. c.BLOCK_N .. "/" .. c.WARPS_D .. " is not a multiple of 16"
  end
  if c.WARPS_M > 1 and 16 * (c.WARPS_M - 1) >= rows(p) then
    return false, "WARPS_M " .. c.WARPS_M .. " leaves a warp with padding rows only (" .. rows(p) .. " rows)"
  end
  return common.fits_device(32 * c.WARPS_M * c.WARPS_D, regs_estimate(c), shared_bytes(c, p), d)
end

return {
  name = "mla_decode",
  op = "mla_decode",
  sources = { "mla_decode.cuh" },
  entries = { "fmqa_mla_decode_kernel", "fmqa_mla_decode_combine" },
  arch_min = 80,

  specialize = function(p)
    local ok, why = problem_check(p)
    if not ok then error(why) end
    return {
      HEADS = p.num_q_heads,
      Q_TOKENS = p.q_tokens,
      Q_BF16 = flag(p.q_dtype == "bf16"),
      OUT_BF16 = flag(p.out_dtype == "bf16"),
      KV_FMT = KV_FMT[p.kv_dtype],
      PAGED = flag(p.paged),
      PAGE_SIZE = p.paged and p.page_size or 0,
      CSR = flag(p.csr),
      CAUSAL = flag(p.causal),
      TREE = 0,
      WINDOW = flag(p.window > 0),
      RING = flag(p.ring),
      LSE = flag(p.lse),
      INVARIANT = flag(p.batch_invariant),
    }
  end,

  space = {
    BLOCK_N = { 32, 64 },
    WARPS_M = { 1, 2, 4 },
    WARPS_D = { 2, 4 },
    STAGES = { 2, 3, 4 },
    -- CTAs of the persistent grid (0: the device's SMs x CTAs per SM)
    SPLITS = { 0, 1, 2, 4, 8, 16, 32, 64, 128 },
  },

  valid = valid,

  launch = function(c, p, d)
    local s = { rows_cta = 16 * c.WARPS_M, block_n = c.BLOCK_N, unit = unit_tokens(c, p),
                ctas_per_sm = ctas_per_sm(c, p, d), splits = c.SPLITS, min_tiles = MIN_CTA_TILES }
    local kernel = { entry = "fmqa_mla_decode_kernel", block = { 32 * c.WARPS_M * c.WARPS_D, 1, 1 },
                     shared = shared_bytes(c, p) }
    return sched.plan(p, d, s, kernel, "fmqa_mla_decode_combine")
  end,

  -- The rows of up to 4 warps (64 heads x tokens) share each tile, 4 warps
  -- split the 512 output columns; the largest tile and deepest pipeline the
  -- shared memory holds, automatic splits.
  default = function(p, d)
    local wm = 1
    while wm < 4 and 16 * wm < rows(p) do wm = wm * 2 end
    for _, wd in ipairs({ 4, 2 }) do
      for _, bn in ipairs({ 64, 32 }) do
        for s = 4, 2, -1 do
          local w = wm
          while w >= 1 do
            local c = { BLOCK_N = bn, WARPS_M = w, WARPS_D = wd, STAGES = s, SPLITS = 0 }
            if valid(c, p, d) then return c end
            w = w // 2
          end
        end
      end
    end
    return { BLOCK_N = 32, WARPS_M = 1, WARPS_D = 2, STAGES = 2, SPLITS = 0 }
  end,
}
