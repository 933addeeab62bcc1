-- prefill.lua -- the prefill attention template for sm_80 and later: many
-- query tokens per sequence over a ragged batch (cu_seqlens_q), causal or
-- not, K/V either the new tokens' own or a cache that holds them (chunked
-- prefill: f16, bf16, int8, fp8 e4m3; contiguous or paged), sliding window
-- with sinks, LSE; mma.sync m16n8k16 with a cp.async pipeline.  prefill.cuh
-- holds the kernel; docs/kernels.md the design.
--
-- Invariants this file keeps with prefill.cuh:
--  * shared_bytes() below is the kernel's SMEM_BYTES (the kernel traps on a
--    launch with less);
--  * grid = (row_blocks, num_kv_heads, batch), block = 32 * WARPS threads,
--    row_blocks = ceil(GROUP * q_tokens / BLOCK_M), BLOCK_M = 16 * WARPS * MT
--    with MT (m-tiles a warp) 1 or 2;
--  * without scores no workspace; with scores (prefill_scores.cuh) the
--    workspace holds the rows' final base-2 LSE [batch * q_tokens, h]
--    floats (only the observation window's are written), and a second
--    kernel, fmqa_prefill_scores, has grid (ceil(kv_len / BLOCK_N),
--    num_kv_heads, batch), the same block and scores_shared_bytes().

local KV_FMT = { f16 = 0, bf16 = 1, int8 = 2, fp8_e4m3 = 3 }
local HEAD_DIMS = { [64] = true, [96] = true, [128] = true, [256] = true }

local common = require("common")
local ceil_div, flag, kv_bytes = common.ceil_div, common.flag, common.kv_bytes

-- Problem-level legality, shared by specialize and valid.
local PROBLEM_CHECKS = {
  common.op_is("prefill"),
  common.head_dims(HEAD_DIMS, "64, 96, 128 or 256", 128),
  common.q_out_16bit,
  common.kv_dtype_in(KV_FMT, "f16, bf16, int8 or fp8_e4m3"),
  function(p)
    if p.ring or p.tree then return "prefill serves neither a ring cache nor a tree mask" end
    if p.csr then return "prefill reads a 2-D page table, not a CSR one" end
    if p.kv_cache then return nil end
    if p.kv_dtype ~= p.q_dtype then
      return "without kv_cache K/V are the new tokens: kv_dtype must be q_dtype, got " .. p.kv_dtype
    end
    if p.paged then return "a paged layout needs kv_cache" end
    if p.kv_len ~= p.q_tokens then
      return "without kv_cache kv_len must equal q_tokens, got " .. p.kv_len .. " and " .. p.q_tokens
    end
  end,
  common.page_size_pow2,
  common.window_nonneg,
  common.softcap_nonneg,
  common.kv_covers_q,
}
local function problem_check(p) return common.first_failure(p, PROBLEM_CHECKS) end

local function rows(p) return (p.num_q_heads // p.num_kv_heads) * p.q_tokens end

-- prefill.cuh's Q_BYTES and STAGE_BYTES: Q rows; one pipeline stage (K and
-- V tiles, and the 8-bit scales).
local function q_bytes(c, p) return c.BLOCK_M * (2 * p.head_dim_qk + 16) end
local function stage_bytes(c, p)
  local eb = kv_bytes(p)
  return 2 * c.BLOCK_N * (p.head_dim_qk * eb + 16) + (eb == 1 and 8 * c.BLOCK_N or 0)
end

-- prefill.cuh's SMEM_BYTES: Q rows, then the pipeline stages.
local function shared_bytes(c, p) return q_bytes(c, p) + c.STAGES * stage_bytes(c, p) end

-- prefill_scores.cuh's SC_SMEM_BYTES: Q rows, one stage, the rows' LSEs and
-- the column sums of each warp and of the CTA.
local function scores_shared_bytes(c, p)
  return q_bytes(c, p) + stage_bytes(c, p) + (c.BLOCK_M + (c.WARPS + 1) * c.BLOCK_N) * 4
end

local function m_tiles(c) return c.BLOCK_M // (16 * c.WARPS) end

-- Registers per thread, conservatively (decode.lua's rule per m-tile): O and
-- S accumulators (d/2 + BLOCK_N/2 floats per m-tile) plus 100 for fragments,
-- addresses and row state.
local function regs_estimate(c, p)
  return m_tiles(c) * (p.head_dim_qk // 2 + c.BLOCK_N // 2) + 100
end

local function valid(c, p, d)
  local ok, why = problem_check(p)
  if not ok then return false, why end
  if c.BLOCK_M % (16 * c.WARPS) ~= 0 or m_tiles(c) > 2 then
    return false, "BLOCK_M " .. c.BLOCK_M .. " must be 16 x WARPS (" .. c.WARPS .. ") x 1 or 2"
  end
  return common.fits_device(32 * c.WARPS, regs_estimate(c, p), shared_bytes(c, p), d)
end

return {
  name = "prefill",
  op = "prefill",
  sources = { "prefill.cuh" },
  entries = { "fmqa_prefill_kernel", "fmqa_prefill_scores" },
  arch_min = 80,

  specialize = function(p)
    local ok, why = problem_check(p)
    if not ok then error(why) end
    return {
      HEAD_DIM = p.head_dim_qk,
      GROUP = p.num_q_heads // p.num_kv_heads,
      Q_BF16 = flag(p.q_dtype == "bf16"),
      OUT_BF16 = flag(p.out_dtype == "bf16"),
      KV_FMT = KV_FMT[p.kv_dtype],
      KV_CACHE = flag(p.kv_cache),
      PAGED = flag(p.paged),
      PAGE_SIZE = p.paged and p.page_size or 0,
      CAUSAL = flag(p.causal),
      WINDOW = flag(p.window > 0),
      LSE = flag(p.lse),
      SOFTCAP = flag(p.logit_softcap > 0),
      SCORES = flag(p.scores),
    }
  end,

  space = {
    BLOCK_M = { 64, 128 },
    BLOCK_N = { 32, 64, 128 },
    WARPS = { 2, 4, 8 },
    STAGES = { 2, 3 },
  },

  valid = valid,

  launch = function(c, p, d)
    local block = { 32 * c.WARPS, 1, 1 }
    local plan = {
      kernels = { {
        entry = "fmqa_prefill_kernel",
        grid = { ceil_div(rows(p), c.BLOCK_M), p.num_kv_heads, p.batch },
        block = block,
        shared = shared_bytes(c, p),
      } },
      workspace = 0,
    }
    if p.scores then
      plan.workspace = p.batch * p.q_tokens * p.num_q_heads * 4
      plan.kernels[2] = { entry = "fmqa_prefill_scores", grid = { ceil_div(p.kv_len, c.BLOCK_N), p.num_kv_heads, p.batch },
                          block = block, shared = scores_shared_bytes(c, p) }
    end
    return plan
  end,

  -- FlashAttention-2's shapes: 128 rows a CTA (64 when the rows of a
  -- sequence are few, or d = 256), one m-tile a warp for d >= 96 (8 warps)
  -- and two for d = 64 (4 warps), 64-position tiles (32 for d = 256), 2
  -- stages (3 for d = 64); falls back through smaller choices.
  default = function(p, d)
    local dh = p.head_dim_qk
    local bm = (dh >= 256 or rows(p) <= 64) and 64 or 128
    local bn = dh >= 256 and 32 or 64
    local mt = dh <= 64 and 2 or 1
    local stages = dh <= 64 and 3 or 2
    for _, m in ipairs({ bm, 64 }) do
      for _, n in ipairs({ bn, 32 }) do
        for t = mt, 1, -1 do
          for s = stages, 2, -1 do
            local c = { BLOCK_M = m, BLOCK_N = n, WARPS = m // (16 * t), STAGES = s }
            if c.WARPS <= 8 and valid(c, p, d) then return c end
          end
        end
      end
    end
    return { BLOCK_M = 64, BLOCK_N = 32, WARPS = 4, STAGES = 2 }
  end,
}
