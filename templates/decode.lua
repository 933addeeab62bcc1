-- decode.lua -- the decode attention template: one or a few query tokens per
-- sequence against a KV cache (f16, bf16, int8, fp8 e4m3; contiguous, paged or
-- ring; window and sinks; causal or tree mask among the drafts), tensor cores
-- (mma.sync m16n8k16) with split-KV and a log-sum-exp combine.  decode.cuh
-- holds the kernels and the fragment layouts; docs/kernels.md the design.
--
-- Invariants this file keeps with decode.cuh:
--  * shared_bytes() below is the kernel's SMEM_BYTES (the kernel traps on a
--    launch with less);
--  * grid = (splits, num_kv_heads * row_blocks, batch), block = 32 * WARPS_M *
--    WARPS_N threads, row_blocks = ceil(GROUP * q_tokens / (16 * WARPS_M));
--  * split rule: the kernel reads at most eff_len() positions per sequence;
--    split_tokens = ceil(eff_len / splits) rounded up to BLOCK_N, then splits =
--    ceil(eff_len / split_tokens) so no split is empty for the longest
--    sequence.  launch() returns both (split_tokens as a scalar); the kernel's
--    last split also takes whatever lies beyond, so a runtime that gets these
--    slightly wrong stays correct.
--  * with splits > 1 the workspace is splits * B * Tq * H * (dv + 1) * 4 bytes:
--    fp32 partial O [split, b, t, h, dv], then partial LSE [split, b, t, h].
--  * with scores (decode_scores.cuh) the LSE part is there even unsplit, and
--    after it come f16 probabilities [b, hk, r, NV] and floats [b, hk, r,
--    NV / 16], NV = score_nv() (a plan scalar, score_nv); the third kernel,
--    fmqa_decode_scores, has grid (NV / 128, num_kv_heads, batch) and M floats
--    of shared memory.

local KV_FMT = { f16 = 0, bf16 = 1, int8 = 2, fp8_e4m3 = 3 }
local HEAD_DIMS = { [64] = true, [96] = true, [128] = true, [256] = true }
local MAX_AUTO_SPLITS = 256
local MIN_SPLIT_TILES = 4      -- auto splits keep >= 4 tiles each (prologue cost)

local function ceil_div(a, b) return (a + b - 1) // b end

-- Problem-level legality, shared by specialize and valid.
local function problem_check(p)
  if p.op ~= "decode" then return false, "op must be decode, got " .. tostring(p.op) end
  if not HEAD_DIMS[p.head_dim_qk] then
    return false, "head_dim_qk must be 64, 96, 128 or 256, got " .. p.head_dim_qk
  end
  if p.head_dim_v ~= p.head_dim_qk then
    return false, "head_dim_v must equal head_dim_qk, got " .. p.head_dim_v .. " and " .. p.head_dim_qk
  end
  if p.num_kv_heads < 1 or p.num_q_heads % p.num_kv_heads ~= 0 then
    return false, "num_q_heads " .. p.num_q_heads .. " is not a multiple of num_kv_heads " .. p.num_kv_heads
  end
  local g = p.num_q_heads // p.num_kv_heads
  if g > 128 then return false, "group size num_q_heads / num_kv_heads must be <= 128, got " .. g end
  if p.q_tokens < 1 or p.q_tokens > 16 then
    return false, "q_tokens must be in [1, 16], got " .. p.q_tokens
  end
  for _, k in ipairs({ "q_dtype", "out_dtype" }) do
    if p[k] ~= "f16" and p[k] ~= "bf16" then return false, k .. " must be f16 or bf16, got " .. p[k] end
  end
  if KV_FMT[p.kv_dtype] == nil then
    return false, "kv_dtype must be f16, bf16, int8 or fp8_e4m3, got " .. p.kv_dtype
  end
  if p.paged and (p.page_size < 16 or p.page_size & (p.page_size - 1) ~= 0) then
    return false, "page_size must be a power of two >= 16 when paged, got " .. p.page_size
  end
  if p.ring and p.window <= 0 then return false, "a ring cache needs window > 0" end
  if p.window < 0 or p.sink_tokens < 0 then return false, "window and sink_tokens must be >= 0" end
  if p.kv_len < p.q_tokens then
    return false, "kv_len " .. p.kv_len .. " is smaller than q_tokens " .. p.q_tokens
  end
  return true
end

local function rows(p) return (p.num_q_heads // p.num_kv_heads) * p.q_tokens end

-- Most positions one sequence's kernel reads (see "KV order" in decode.cuh).
local function eff_len(p)
  if p.window <= 0 then return p.kv_len end
  if p.ring then return math.min(p.kv_len, p.sink_tokens + p.window) end
  return math.min(p.kv_len, p.sink_tokens + p.window + p.q_tokens - 1)
end

-- Positions per row the scores workspace holds: eff_len rounded up to 16.
local function score_nv(p) return ceil_div(eff_len(p), 16) * 16 end

local function kv_bytes(p) return (p.kv_dtype == "int8" or p.kv_dtype == "fp8_e4m3") and 1 or 2 end

-- decode.cuh's SMEM_BYTES: Q rows, then max(pipeline stages, merge buffer).
local function shared_bytes(c, p)
  local d, eb = p.head_dim_qk, kv_bytes(p)
  local q = 16 * c.WARPS_M * (2 * d + 16)
  local stage = 2 * c.BLOCK_N * (d * eb + 16) + (eb == 1 and 8 * c.BLOCK_N or 0)
  local merge = c.WARPS_M * (c.WARPS_N - 1) * (d // 2 + 4) * 32 * 4
  return q + math.max(c.STAGES * stage, merge)
end

-- Registers per thread, conservatively: O and S accumulators (d/2 + WN/2
-- floats) plus 100 for fragments, addresses and row state.  ptxas (sm_80 and
-- sm_90, CUDA 13) fits d=256 with 32 tokens a warp (144 + 100) in 255 without
-- spills but spills at 64 tokens a warp (160 + 100); d=128 with 128 (128 + 100)
-- fits.  __launch_bounds__ caps a thread at regs_per_sm / threads, hence the
-- second check in valid().
local function regs_estimate(c, p)
  return p.head_dim_qk // 2 + c.BLOCK_N // c.WARPS_N // 2 + 100
end

-- CTAs of this config one SM holds at once, by shared memory (1 KB reserved
-- per CTA) and threads (2048 an SM); registers are left out because the
-- estimate above is deliberately pessimistic.
local function ctas_per_sm(c, p, d)
  local by_smem = d.smem_per_sm // (shared_bytes(c, p) + 1024)
  local by_threads = 2048 // (32 * c.WARPS_M * c.WARPS_N)
  return math.max(1, math.min(by_smem, by_threads))
end

-- decode.cuh's C_SMEM_BYTES: one float per warp of 128 threads, a float4 per
-- thread, and per thread the landing slots of a batch of 8 splits (a float4
-- and a float each).
local function combine_shared_bytes()
  return 4 * 4 + 16 * 128 * 9 + 4 * 128 * 8
end

-- Column slices of the combine (grid y): halved until the grid covers the SMs
-- and each thread's splits fit in one batch of C_BATCH = 8 loads (one round
-- trip; decode.cuh), as long as the D / 4 float4 columns divide evenly.
local function combine_slices(p, d, splits)
  local cols, rows_out = p.head_dim_v // 4, p.batch * p.q_tokens * p.num_q_heads
  local n = 1
  while (cols // n) % 2 == 0 and
        (rows_out * n < d.sm_count or ceil_div(splits, (128 // (cols // n)) * 8) > 1) do
    n = n * 2
  end
  return n
end

-- (splits, split_tokens) for a config.  SPLITS = 0: as many splits as keep the
-- whole grid within one wave of resident CTAs (a second, partial wave would
-- leave SMs idle at the tail), at most 256 and at least MIN_SPLIT_TILES tiles
-- each.
local function split_plan(c, p, d)
  local len = math.max(eff_len(p), 1)
  local n = c.SPLITS
  if n == 0 then
    local ctas = p.batch * p.num_kv_heads * ceil_div(rows(p), 16 * c.WARPS_M)
    local slots = d.sm_count * ctas_per_sm(c, p, d)
    n = math.max(1, math.min(slots // ctas, MAX_AUTO_SPLITS, len // (MIN_SPLIT_TILES * c.BLOCK_N)))
  end
  local tokens = ceil_div(ceil_div(len, n), c.BLOCK_N) * c.BLOCK_N
  return ceil_div(len, tokens), tokens
end

local function valid(c, p, d)
  local ok, why = problem_check(p)
  if not ok then return false, why end
  local wn = c.BLOCK_N // c.WARPS_N
  if c.BLOCK_N % c.WARPS_N ~= 0 or wn % 16 ~= 0 then
    return false, "BLOCK_N / WARPS_N = " .. c.BLOCK_N .. "/" .. c.WARPS_N .. " is not a multiple of 16"
  end
  if c.WARPS_M > 1 and 16 * (c.WARPS_M - 1) >= rows(p) then
    return false, "WARPS_M " .. c.WARPS_M .. " leaves a warp with padding rows only (" .. rows(p) .. " rows)"
  end
  local threads = 32 * c.WARPS_M * c.WARPS_N
  if threads > d.max_threads_per_block then
    return false, threads .. " threads exceed the device's " .. d.max_threads_per_block
  end
  local regs = regs_estimate(c, p)
  if regs > 255 or regs * threads > d.regs_per_sm then
    return false, "about " .. regs .. " registers x " .. threads .. " threads exceed the SM"
  end
  local smem = shared_bytes(c, p)
  if smem > d.smem_per_block_optin then
    return false, smem .. " bytes of shared memory exceed the device's " .. d.smem_per_block_optin
  end
  if c.SPLITS > 1 and c.SPLITS > ceil_div(eff_len(p), c.BLOCK_N) then
    return false, "SPLITS " .. c.SPLITS .. " exceeds the " .. ceil_div(eff_len(p), c.BLOCK_N) .. " tiles of the cache"
  end
  return true
end

local function flag(b) return b and 1 or 0 end

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
      CAUSAL = flag(p.causal),
      TREE = flag(p.tree),
      WINDOW = flag(p.window > 0),
      RING = flag(p.ring),
      LSE = flag(p.lse),
      SCORES = flag(p.scores),
    }
  end,

  space = {
    BLOCK_N = { 32, 64, 128 },
    WARPS_M = { 1, 2, 4, 8 },
    WARPS_N = { 1, 2, 4, 8 },
    STAGES = { 2, 3, 4 },
    SPLITS = { 0, 1, 2, 4, 8, 16, 32, 64, 128 },
  },

  valid = valid,

  launch = function(c, p, d)
    local splits, tokens = split_plan(c, p, d)
    local row_blocks = ceil_div(rows(p), 16 * c.WARPS_M)
    local kernels = { {
      entry = "fmqa_decode_kernel",
      grid = { splits, p.num_kv_heads * row_blocks, p.batch },
      block = { 32 * c.WARPS_M * c.WARPS_N, 1, 1 },
      shared = shared_bytes(c, p),
    } }
    local out_rows = p.batch * p.q_tokens * p.num_q_heads
    local workspace = 0
    if splits > 1 then
      -- one CTA of 128 threads per output row and column slice (decode.cuh, C_THREADS)
      kernels[2] = { entry = "fmqa_decode_combine", grid = { out_rows, combine_slices(p, d, splits), 1 },
                     block = { 128, 1, 1 }, shared = combine_shared_bytes() }
      workspace = splits * out_rows * (p.head_dim_v + 1) * 4
    end
    local plan = { kernels = kernels, workspace = workspace, splits = splits, split_tokens = tokens }
    if p.scores then
      local nv, r = score_nv(p), p.batch * p.num_kv_heads * rows(p)
      if splits == 1 then plan.workspace = out_rows * 4 end
      plan.workspace = plan.workspace + r * nv * 2 + r * (nv // 16) * 4
      plan.score_nv = nv
      kernels[#kernels + 1] = { entry = "fmqa_decode_scores", grid = { ceil_div(nv, 128), p.num_kv_heads, p.batch },
                                block = { 128, 1, 1 }, shared = rows(p) * 4 }
    end
    return plan
  end,

  -- H100-class choice: 4 warps (fewer 16-row groups when the group is small),
  -- 64-token tiles (32 for d = 256), 3 stages (4 for the half-size 8-bit
  -- tiles), automatic splits; falls back through smaller tiles and stages.
  default = function(p, d)
    -- WARPS_M stays in the space (powers of two): the smallest that covers
    -- the rows, halved while valid() refuses it (e.g. a padding-only warp).
    local wm = 1
    while wm < (p.head_dim_qk >= 256 and 2 or 4) and 16 * wm < rows(p) do wm = wm * 2 end
    local stages = kv_bytes(p) == 1 and 4 or 3
    for _, bn in ipairs(p.head_dim_qk >= 256 and { 32, 64 } or { 64, 32 }) do
      for s = stages, 2, -1 do
        local w = wm
        while w >= 1 do
          local wn = math.max(1, 4 // w)
          while bn // wn < 16 do wn = wn // 2 end
          local c = { BLOCK_N = bn, WARPS_M = w, WARPS_N = wn, STAGES = s, SPLITS = 0 }
          if valid(c, p, d) then return c end
          w = w // 2
        end
      end
    end
    return { BLOCK_N = 32, WARPS_M = 1, WARPS_N = 1, STAGES = 2, SPLITS = 0 }
  end,
}
