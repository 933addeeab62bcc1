-- lib/common.lua -- what several templates compute alike: integer helpers,
-- the bytes of a KV element, the positions a sequence reads, and the device
-- limits every valid() ends with.
-- Templates take it with require("common") (docs/templates.md, "Libraries").

local M = {}

function M.ceil_div(a, b) return (a + b - 1) // b end

-- A boolean as a 0/1 define.
function M.flag(b) return b and 1 or 0 end

-- Bytes of one K/V element: 8-bit caches (int8, fp8 e4m3) 1, else 2.
function M.kv_bytes(p) return (p.kv_dtype == "int8" or p.kv_dtype == "fp8_e4m3") and 1 or 2 end

-- Most positions one sequence's kernel reads with a window (and sinks, and a
-- ring of window + draft_slots positions), else kv_len (decode.cuh's "KV
-- order").
function M.eff_len(p)
  if p.window <= 0 then return p.kv_len end
  local reach = p.window + p.q_tokens - 1          -- the first query token's window onwards
  if p.ring then reach = math.min(reach, p.window + p.draft_slots) end
  return math.min(p.kv_len, p.sink_tokens + reach)
end

-- The device limits of a config: threads a block, registers a thread (the
-- template's estimate: at most 255, and the block within the SM's file) and
-- shared bytes a block.  true, or false and the reason.
function M.fits_device(threads, regs, smem, d)
  if threads > d.max_threads_per_block then
    return false, threads .. " threads exceed the device's " .. d.max_threads_per_block
  end
  if regs > 255 or regs * threads > d.regs_per_sm then
    return false, "about " .. regs .. " registers x " .. threads .. " threads exceed the SM"
  end
  if smem > d.smem_per_block_optin then
    return false, smem .. " bytes of shared memory exceed the device's " .. d.smem_per_block_optin
  end
  return true
end

return M
