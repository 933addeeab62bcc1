-- lib/combine.lua -- the launch of fmqa_combine.cuh's split-KV combine, for
-- every template whose kernel splits keys (decode, mla_decode): one CTA of
-- 128 threads per output row and column slice.

local ceil_div = require("common").ceil_div

local M = {}

-- fmqa_combine.cuh's FMQA_C_SMEM_BYTES: one float per warp of 128 threads, a
-- float4 per thread, and per thread the landing slots of a batch of 8 pieces
-- (a float4 and a float each).
function M.shared_bytes()
  return 4 * 4 + 16 * 128 * 9 + 4 * 128 * 8
end

-- Column slices of the combine (grid y) for rows merged from at most
-- `pieces` pieces: halved until the grid covers the SMs and each thread's
-- pieces fit in one batch of FMQA_C_BATCH = 8 loads (one round trip;
-- fmqa_combine.cuh), as long as the head_dim_v / 4 float4 columns divide
-- evenly.  With `invariant` (batch-invariant mode): 8 columns a slice
-- whatever the batch and device, so the combine's order of sums depends on
-- the sequence alone.
function M.slices(p, d, pieces, invariant)
  local cols, rows_out = p.head_dim_v // 4, p.batch * p.q_tokens * p.num_q_heads
  if invariant then return cols // 8 end
  local n = 1
  while (cols // n) % 2 == 0 and
        (rows_out * n < d.sm_count or ceil_div(pieces, (128 // (cols // n)) * 8) > 1) do
    n = n * 2
  end
  return n
end

return M
