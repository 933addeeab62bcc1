-- lib/sched.lua -- the Lua side of fmqa_sched.cuh's persistent split-KV
-- schedule, for the decode family (decode, mla_decode): how many CTAs, how
-- many pieces a segment is merged from, the workspace and its plan scalars
-- (read by the runtime, rt_args.c), and the combine kernel's launch.
--
-- A template describes its schedule by a table `s`:
--   rows_cta     query rows a CTA owns (ROWS)
--   block_n      positions a tile (BLOCK_N)
--   unit         positions a unit outside batch-invariant mode (UNIT)
--   ctas_per_sm  CTAs of the config one SM holds
--   splits       the config's SPLITS (0: the device's SMs x ctas_per_sm)
--   min_tiles    automatic grids give each CTA at least this many tiles of
--                the longest sequences (a piece has a fixed cost)
--
-- With slots > 0 (some segment may split) the workspace is, in bytes: fp32
-- partial O [slot, rows_cta, dv], partial LSE [slot, rows_cta] (from scalar
-- ws_lse_offset), then int (first slot, pieces) per segment [b, kv head, row
-- block] (from ws_meta_offset); slots = P + segments - 1 (piece of CTA c in
-- segment j: slot c + j), or segments x the most chunks a sequence has in
-- batch-invariant mode.

local common, combine = require("common"), require("combine")
local ceil_div = common.ceil_div

local INV_MIN_TILES, INV_MAX_CHUNKS = 8, 256  -- fmqa_sched.cuh's batch-invariant chunks

local M = {}

-- Tiles per batch-invariant chunk of a sequence of `tiles` tiles
-- (fmqa_sched.cuh's chunk_tiles): a function of the sequence alone.
local function chunk_tiles(tiles)
  return math.max(INV_MIN_TILES, ceil_div(tiles, INV_MAX_CHUNKS))
end

-- The schedule for the longest sequences: CTAs, segments, the most units and
-- pieces of one segment, workspace slots (0: no segment splits), and
-- piece_len, the most positions one piece can hold at any lengths up to
-- these (a CTA's range of units [c U / P, (c + 1) U / P) within one
-- sequence, or in batch-invariant mode one chunk; shorter sequences have
-- fewer units and chunks no longer).
function M.work_plan(p, d, s)
  local len = math.max(common.eff_len(p), 1)
  local tiles = ceil_div(len, s.block_n)
  local rows = (p.num_q_heads // p.num_kv_heads) * p.q_tokens
  local segs = p.batch * p.num_kv_heads * ceil_div(rows, s.rows_cta)
  local units = p.batch_invariant and ceil_div(tiles, chunk_tiles(tiles)) or ceil_div(len, s.unit)
  local ctas = s.splits > 0 and s.splits or
               math.min(d.sm_count * s.ctas_per_sm, ceil_div(segs * tiles, s.min_tiles))
  ctas = math.min(ctas, segs * units)
  local w = { ctas = ctas, segs = segs, units = units }
  w.piece_len = math.min(len, p.batch_invariant and chunk_tiles(tiles) * s.block_n
                              or ceil_div(segs * units, ctas) * s.unit)
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

-- The launch plan of a schedule: `kernel` (entry, block, shared) gets the
-- persistent grid; with slots, the combine `combine_entry` follows (one CTA
-- of 128 threads per output row and column slice, fmqa_combine.cuh; on sm_90
-- launched with programmatic dependent launch) with the workspace scalars.
function M.plan(p, d, s, kernel, combine_entry)
  local w = M.work_plan(p, d, s)
  kernel.grid = { w.ctas, 1, 1 }
  local kernels = { kernel }
  -- units: the schedule's work units at full length (for fastmqa-bench static)
  local plan = { kernels = kernels, workspace = 0, splits = 1, units = w.segs * w.units }
  if w.slots > 0 then
    local out_rows = p.batch * p.q_tokens * p.num_q_heads
    kernels[2] = { entry = combine_entry,
                   grid = { out_rows, combine.slices(p, d, w.pieces, p.batch_invariant), 1 },
                   block = { 128, 1, 1 }, shared = combine.shared_bytes(), pdl = d.cc >= 90 and 1 or 0 }
    plan.splits = w.slots
    plan.pieces = w.pieces  -- the most pieces one segment is merged from (at full length)
    plan.ws_lse_offset = w.slots * s.rows_cta * p.head_dim_v * 4
    plan.ws_meta_offset = plan.ws_lse_offset + w.slots * s.rows_cta * 4
    plan.workspace = plan.ws_meta_offset + w.segs * 2 * 4
  end
  return plan
end

return M
