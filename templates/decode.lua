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
--    reads gridDim.x, so any P is correct (decode.cuh, "Work distribution");
--  * a sequence has at most ceil(eff_len() / BLOCK_N) tiles; a segment (b, kv
--    head, row block) is split into at most P pieces (one per CTA), in
--    batch-invariant mode into chunks of chunk_tiles() tiles (INV_* equal
--    decode.cuh's);
--  * with slots > 0 (some segment may split) the workspace is, in bytes:
--    fp32 partial O [slot, ROWS, dv], partial LSE [slot, ROWS] (from scalar
--    ws_lse_offset), then int (first slot, pieces) per segment [b, kv head,
--    row block] (from ws_meta_offset); slots = P + segments - 1 (piece of CTA
--    c in segment j: slot c + j), or segments x the most chunks a sequence
--    has in batch-invariant mode.

local KV_FMT = { f16 = 0, bf16 = 1, int8 = 2, fp8_e4m3 = 3 }
local HEAD_DIMS = { [64] = true, [96] = true, [128] = true, [256] = true }
local INV_MIN_TILES, INV_MAX_CHUNKS = 8, 256  -- decode.cuh's batch-invariant chunks
local MIN_CTA_TILES = 2        -- automatic grids give each CTA >= 2 tiles

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
  if p.logit_softcap < 0 then return false, "logit_softcap must be >= 0" end
  if p.window < 0 or p.sink_tokens < 0 then return false, "window and sink_tokens must be >= 0" end
  if p.kv_len < p.q_tokens then
    return false, "kv_len " .. p.kv_len .. " is smaller than q_tokens " .. p.q_tokens
  end
  return true
end

local function rows(p) return (p.num_q_heads // p.num_kv_heads) * p.q_tokens end
local function cta_rows(c) return 16 * c.M_TILES * c.WARPS_M end
-- decode.cuh's CTA_THREADS: the compute warps, and with BULK the producer warp
local function cta_threads(c) return 32 * (c.WARPS_M * c.WARPS_N + c.BULK) end

-- Most positions one sequence's kernel reads (see "KV order" in decode.cuh).
local function eff_len(p)
  if p.window <= 0 then return p.kv_len end
  local reach = p.window + p.q_tokens - 1          -- the first query token's window onwards
  if p.ring then reach = math.min(reach, p.window + p.draft_slots) end
  return math.min(p.kv_len, p.sink_tokens + reach)
end

local function kv_bytes(p) return (p.kv_dtype == "int8" or p.kv_dtype == "fp8_e4m3") and 1 or 2 end

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
-- (2 x 72 + 100), but not with an int8 cache: its K bias (the rows' start
-- values) and scale columns cost about 8 more a m-tile, and ptxas spilled 8
-- bytes at 255 registers (d=128, sm_90, with learned sinks and soft-capping in
-- the kernel).  __launch_bounds__ caps a thread at regs_per_sm / threads,
-- hence the second check in valid().
local function regs_estimate(c, p)
  local int8 = p.kv_dtype == "int8" and 8 or 0
  return c.M_TILES * (p.head_dim_qk // 2 + c.BLOCK_N // c.WARPS_N // 2 + int8) + 100
end

-- CTAs of this config one SM holds at once, by shared memory (1 KB reserved
-- per CTA) and threads (2048 an SM); registers are left out because the
-- estimate above is deliberately pessimistic -- except with BULK, whose
-- producer warp holds as many registers as a compute warp: ptxas gives the
-- MQA d = 128 two-m-tile config 255 a thread, 160 threads, so one CTA an SM
-- (fastmqa-bench static), where the estimate says 244.
local function ctas_per_sm(c, p, d)
  local by_smem = d.smem_per_sm // (shared_bytes(c, p) + 1024)
  local by_threads = 2048 // cta_threads(c)
  local n = math.min(by_smem, by_threads)
  if c.BULK == 1 then n = math.min(n, d.regs_per_sm // (regs_estimate(c, p) * cta_threads(c))) end
  return math.max(1, n)
end

-- fmqa_combine.cuh's FMQA_C_SMEM_BYTES: one float per warp of 128 threads, a
-- float4 per thread, and per thread the landing slots of a batch of 8 pieces
-- (a float4 and a float each).
local function combine_shared_bytes()
  return 4 * 4 + 16 * 128 * 9 + 4 * 128 * 8
end

-- Column slices of the combine (grid y): halved until the grid covers the SMs
-- and each thread's pieces fit in one batch of FMQA_C_BATCH = 8 loads (one
-- round trip; fmqa_combine.cuh), as long as the D / 4 float4 columns divide
-- evenly.  Batch-invariant: 8 columns a slice whatever the batch and device,
-- so the combine's order of sums depends on the sequence alone.
local function combine_slices(p, d, pieces)
  local cols, rows_out = p.head_dim_v // 4, p.batch * p.q_tokens * p.num_q_heads
  if p.batch_invariant then return cols // 8 end
  local n = 1
  while (cols // n) % 2 == 0 and
        (rows_out * n < d.sm_count or ceil_div(pieces, (128 // (cols // n)) * 8) > 1) do
    n = n * 2
  end
  return n
end

-- Tiles per batch-invariant chunk of a sequence of `tiles` tiles (decode.cuh's
-- chunk_tiles): a function of the sequence alone.
local function chunk_tiles(tiles)
  return math.max(INV_MIN_TILES, ceil_div(tiles, INV_MAX_CHUNKS))
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

-- The persistent schedule for the longest sequences: CTAs, segments, the most
-- units and pieces of one segment, workspace slots (0: no segment splits).
-- CTAs: SPLITS, or the device's slots, but no more than give each CTA
-- MIN_CTA_TILES tiles of the longest sequences (a piece has a fixed cost:
-- pipeline fill, Q, merge, partial store).
local function work_plan(c, p, d)
  local len = math.max(eff_len(p), 1)
  local tiles = ceil_div(len, c.BLOCK_N)
  local segs = p.batch * p.num_kv_heads * ceil_div(rows(p), cta_rows(c))
  local units = p.batch_invariant and ceil_div(tiles, chunk_tiles(tiles)) or ceil_div(len, unit_tokens(c, p))
  local ctas = c.SPLITS > 0 and c.SPLITS or
               math.min(d.sm_count * ctas_per_sm(c, p, d), ceil_div(segs * tiles, MIN_CTA_TILES))
  ctas = math.min(ctas, segs * units)
  local w = { ctas = ctas, segs = segs, units = units }
  if p.batch_invariant then
    -- a shorter sequence may have more chunks (smaller ones), never more than this
    w.pieces = math.min(INV_MAX_CHUNKS, ceil_div(tiles, INV_MIN_TILES))
    w.slots = w.pieces > 1 and segs * w.pieces or 0
  else
    w.pieces = math.min(ctas, ceil_div(ctas, segs) + 1)
    w.slots = (ctas > 1 and units > 1) and ctas + segs - 1 or 0
  end
  return w
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
  local threads = cta_threads(c)
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
  return true
end

local function flag(b) return b and 1 or 0 end

return {
  name = "decode",
  op = "decode",
  sources = { "decode.cuh" },
  entries = { "fmqa_decode_kernel", "fmqa_decode_combine" },
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
      INVARIANT = flag(p.batch_invariant),
      SOFTCAP = flag(p.logit_softcap > 0),
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
  },

  valid = valid,

  launch = function(c, p, d)
    local w = work_plan(c, p, d)
    local rows_blk = cta_rows(c)
    local kernels = { {
      entry = "fmqa_decode_kernel",
      grid = { w.ctas, 1, 1 },
      block = { cta_threads(c), 1, 1 },
      shared = shared_bytes(c, p),
    } }
    -- units: the schedule's work units at full length (for fastmqa-bench static)
    local plan = { kernels = kernels, workspace = 0, splits = 1, units = w.segs * w.units }
    if w.slots > 0 then
      -- one CTA of 128 threads per output row and column slice (fmqa_combine.cuh);
      -- on sm_90 launched with programmatic dependent launch (pdl)
      local out_rows = p.batch * p.q_tokens * p.num_q_heads
      kernels[2] = { entry = "fmqa_decode_combine", grid = { out_rows, combine_slices(p, d, w.pieces), 1 },
                     block = { 128, 1, 1 }, shared = combine_shared_bytes(), pdl = d.cc >= 90 and 1 or 0 }
      plan.splits = w.slots
      plan.pieces = w.pieces  -- the most pieces one segment is merged from (at full length)
      plan.ws_lse_offset = w.slots * rows_blk * p.head_dim_v * 4
      plan.ws_meta_offset = plan.ws_lse_offset + w.slots * rows_blk * 4
      plan.workspace = plan.ws_meta_offset + w.segs * 2 * 4
    end
    return plan
  end,

  -- H100-class choice: 4 warps (fewer 16-row m-tiles when the group is
  -- small), two m-tiles a warp where the registers allow (each K/V fragment
  -- then read and converted once for 32 rows), 64-token tiles (32 for d =
  -- 256), 3 stages (4 for the half-size 8-bit tiles), automatic splits,
  -- cp.async loads also on sm_90 (BULK = 0: the bulk pipeline's producer warp
  -- costs more instructions than it saves, docs/PERFORMANCE.md step 7; the
  -- tuner measures both); falls back through fewer m-tiles, smaller tiles and
  -- stages.
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
              local c = { BLOCK_N = bn, WARPS_M = w, M_TILES = mt, WARPS_N = wn, STAGES = s, SPLITS = 0,
                          BULK = 0 }
              if valid(c, p, d) then return c end
            end
          end
          t = t // 2
        end
      end
    end
    return { BLOCK_N = 32, WARPS_M = 1, M_TILES = 1, WARPS_N = 1, STAGES = 2, SPLITS = 0, BULK = 0 }
  end,
}
