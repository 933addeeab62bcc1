-- mla_decode_sm90.lua -- Multi-head Latent Attention decode for Hopper
-- (sm_90a) on wgmma, FlashMLA's design: two warpgroups share the 64 query
-- rows, each scores one block of a pair and owns half of the 512 output
-- columns, P crossing through shared memory.  mla_decode_sm90.cuh holds the
-- kernel and its design.  f16, bf16 and fp8 e4m3 latents (per-token scales;
-- contiguous or paged), 16 to
-- 128 heads, 1 to 4 query tokens with an optional causal mask, split-KV with
-- the shared combine, LSE.  What it refuses (windows, sinks, ring, tree
-- masks, soft-capping) mla_decode serves.
--
-- Invariants this file keeps with mla_decode_sm90.cuh:
--  * shared_bytes() is the kernel's SMEM_BYTES (it traps on less);
--  * grid = (splits, ceil(H * Tq / 64), batch), block = 256;
--  * uniform splits, in whole pairs of blocks (not yet mla_decode's
--    persistent schedule, lib/sched.lua): split_tokens
--    = ceil(kv_len / splits) rounded up to 2 BLOCK_N, splits = ceil(kv_len /
--    split_tokens); the last split takes whatever lies beyond;
--  * with splits > 1 the workspace is partial O [split, b, t,
--    h, 512] then partial LSE [split, b, t, h] from the plan scalar
--    ws_lse_offset, merged by fmqa_mla_decode_sm90_combine.

local KV_FMT = { f16 = 0, bf16 = 1, fp8_e4m3 = 3 }
local LATENT, ROPE, ROWS = 512, 64, 64
local MAX_AUTO_SPLITS = 256
local MIN_SPLIT_PAIRS = 2
local MAX_GRID_Z = 65535  -- CUDA's gridDim.z limit: the grid's z axis is the batch

local combine = require("combine")
local common = require("common")
local ceil_div, flag = common.ceil_div, common.flag

local PROBLEM_CHECKS = {
  common.op_is("mla_decode"),
  common.mla_latent(LATENT, ROPE),
  function(p)
    if p.num_q_heads < 16 or p.num_q_heads > 128 then
      return "mla_decode_sm90 serves 16 to 128 heads (64-row wgmma tiles), got " .. p.num_q_heads
    end
    if p.q_tokens < 1 or p.q_tokens > 4 then
      return "mla_decode_sm90 serves 1 to 4 query tokens, got " .. p.q_tokens
    end
  end,
  common.q_out_16bit,
  common.kv_dtype_in(KV_FMT, "f16, bf16 or fp8_e4m3 for MLA"),
  common.page_size_pow2,
  function(p)
    if p.window ~= 0 or p.sink_tokens ~= 0 or p.ring or p.tree or (p.logit_softcap or 0) ~= 0 then
      return "mla_decode_sm90 serves full-context caches with a causal mask or none " ..
        "(no window, sinks, ring, tree mask or soft-capping: mla_decode serves those)"
    end
    -- Its uniform splits are not decode's schedule (fmqa_sched.cuh): no
    -- batch-invariant order, and its kernel reads kv_lens and a 2-D page table.
    if p.batch_invariant or p.csr then
      return "mla_decode_sm90 serves neither batch-invariant mode nor a CSR page table " ..
        "(mla_decode serves both)"
    end
  end,
  common.kv_covers_q,
  function(p)
    if p.batch > MAX_GRID_Z then
      return "mla_decode_sm90 launches one grid z index per sequence and CUDA allows at most " ..
        MAX_GRID_Z .. ", got batch " .. p.batch .. " (mla_decode's persistent grid serves it)"
    end
  end,
}
local function problem_check(p) return common.first_failure(p, PROBLEM_CHECKS) end

local function rows(p) return p.num_q_heads * p.q_tokens end

-- mla_decode_sm90.cuh's SMEM_BYTES: alignment slack, Q (64 x 576), PIPE
-- stages of two BLOCK_N-token blocks of 576 16-bit values (fp8: one such
-- stage, fed by PIPE stages of the raw bytes and scales), the row maxima and
-- sums.
local function shared_bytes(c, p)
  local q8, dk = p.kv_dtype == "fp8_e4m3", LATENT + ROPE
  local tiles = 2 * (q8 and 1 or c.PIPE) * c.BLOCK_N * dk * 2
  local raw = q8 and c.PIPE * 2 * c.BLOCK_N * (dk + 4) or 0
  return 1024 + ROWS * dk * 2 + tiles + raw + 2 * 2 * ROWS * 4
end

-- (splits, split_tokens): SPLITS = 0 fills one wave (one CTA an SM: the
-- shared memory holds one), at most 256 splits of at least MIN_SPLIT_PAIRS
-- pairs each.
local function split_plan(c, p, d)
  local len, pair = math.max(p.kv_len, 1), 2 * c.BLOCK_N
  local n = c.SPLITS
  if n == 0 then
    local ctas = p.batch * ceil_div(rows(p), ROWS)
    n = math.max(1, math.min(d.sm_count // ctas, MAX_AUTO_SPLITS, len // (MIN_SPLIT_PAIRS * pair)))
  end
  local tokens = ceil_div(ceil_div(len, n), pair) * pair
  return ceil_div(len, tokens), tokens
end

local function valid(c, p, d)
  local ok, why = problem_check(p)
  if not ok then return false, why end
  if d.cc ~= 90 then return false, "wgmma needs sm_90a (compute capability 9.0), got " .. d.cc end
  if p.kv_dtype == "fp8_e4m3" and c.BLOCK_N ~= 32 then
    return false, "fp8 latents take 32-token blocks (a 16-bit pair and the raw stages share the shared memory)"
  end
  local smem = shared_bytes(c, p)
  if smem > d.smem_per_block_optin then
    return false, smem .. " bytes of shared memory (BLOCK_N " .. c.BLOCK_N .. ", PIPE " .. c.PIPE ..
      ") exceed the device's " .. d.smem_per_block_optin
  end
  if c.SPLITS > 1 and c.SPLITS > ceil_div(p.kv_len, 2 * c.BLOCK_N) then
    return false, "SPLITS " .. c.SPLITS .. " exceeds the " .. ceil_div(p.kv_len, 2 * c.BLOCK_N) ..
      " block pairs of the cache"
  end
  return true
end

return {
  name = "mla_decode_sm90",
  op = "mla_decode",
  sources = { "mla_decode_sm90.cuh" },
  entries = { "fmqa_mla_decode_sm90_kernel", "fmqa_mla_decode_sm90_combine" },
  arch_min = 90,
  arch_specific = true,

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
      CAUSAL = flag(p.causal),
      LSE = flag(p.lse),
    }
  end,

  space = {
    BLOCK_N = { 32, 64 },
    PIPE = { 1, 2 },
    SPLITS = { 0, 1, 2, 4, 8, 16, 32, 64, 128 },
  },

  valid = valid,

  launch = function(c, p, d)
    local splits, tokens = split_plan(c, p, d)
    local kernels = { {
      entry = "fmqa_mla_decode_sm90_kernel",
      grid = { splits, ceil_div(rows(p), ROWS), p.batch },
      block = { 256, 1, 1 },
      shared = shared_bytes(c, p),
    } }
    local out_rows = p.batch * p.q_tokens * p.num_q_heads
    local plan = { kernels = kernels, workspace = 0, splits = splits, split_tokens = tokens }
    if splits > 1 then
      kernels[2] = { entry = "fmqa_mla_decode_sm90_combine", grid = { out_rows, combine.slices(p, d, splits, false), 1 },
                     block = { 128, 1, 1 }, shared = combine.shared_bytes() }
      -- the runtime places the partial LSEs at this scalar (rt_decode_params)
      plan.ws_lse_offset = splits * out_rows * p.head_dim_v * 4
      plan.workspace = plan.ws_lse_offset + splits * out_rows * 4
    end
    return plan
  end,

  -- Two stages of 32-token pairs (the next pair loads while one computes)
  -- where the shared memory holds them, else one stage of 64-token pairs;
  -- automatic splits.
  default = function(p, d)
    for _, c in ipairs({ { BLOCK_N = 32, PIPE = 2, SPLITS = 0 }, { BLOCK_N = 64, PIPE = 1, SPLITS = 0 },
                         { BLOCK_N = 32, PIPE = 1, SPLITS = 0 } }) do
      if valid(c, p, d) then return c end
    end
    return { BLOCK_N = 32, PIPE = 1, SPLITS = 0 }
  end,
}
