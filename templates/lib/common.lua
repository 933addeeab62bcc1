-- lib/common.lua -- what several templates compute alike: integer helpers,
-- the bytes of a KV element, the positions a sequence reads, the problem
-- checks several problem_check()s share, and the device limits every valid()
-- ends with.
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

-- Problem checks.  A check is a function of the problem returning nil when it
-- passes, else the reason; M.first_failure runs a template's list of them in
-- order, so each template lists the shared ones beside its own.

-- true when every check passes, else false and the first reason.
function M.first_failure(p, checks)
  for _, check in ipairs(checks) do
    local why = check(p)
    if why then return false, why end
  end
  return true
end

function M.op_is(op)
  return function(p)
    if p.op ~= op then return "op must be " .. op .. ", got " .. tostring(p.op) end
  end
end

-- head_dim_qk one of dims (a set; text lists them), head_dim_v equal to it,
-- whole groups of query heads per KV head, at most max_group of them (nil: any).
function M.head_dims(dims, text, max_group)
  return function(p)
    if not dims[p.head_dim_qk] then return "head_dim_qk must be " .. text .. ", got " .. p.head_dim_qk end
    if p.head_dim_v ~= p.head_dim_qk then
      return "head_dim_v must equal head_dim_qk, got " .. p.head_dim_v .. " and " .. p.head_dim_qk
    end
    if p.num_kv_heads < 1 or p.num_q_heads % p.num_kv_heads ~= 0 then
      return "num_q_heads " .. p.num_q_heads .. " is not a multiple of num_kv_heads " .. p.num_kv_heads
    end
    local g = p.num_q_heads // p.num_kv_heads
    if max_group and g > max_group then
      return "group size num_q_heads / num_kv_heads must be <= " .. max_group .. ", got " .. g
    end
  end
end

-- MLA's shapes: a latent of `latent` plus `rope` rotated elements per token
-- (head_dim_qk = latent + rope, head_dim_v = latent), one KV head.
function M.mla_latent(latent, rope)
  return function(p)
    if p.head_dim_qk ~= latent + rope or p.head_dim_v ~= latent then
      return "MLA serves latent " .. latent .. " + rope " .. rope .. " only (head_dim_qk " ..
        latent + rope .. ", head_dim_v " .. latent .. "), got " .. p.head_dim_qk .. " / " .. p.head_dim_v
    end
    if p.num_kv_heads ~= 1 then
      return "MLA has one latent row per token: num_kv_heads must be 1, got " .. p.num_kv_heads
    end
  end
end

function M.q_tokens_at_most(n)
  return function(p)
    if p.q_tokens < 1 or p.q_tokens > n then
      return "q_tokens must be in [1, " .. n .. "], got " .. p.q_tokens
    end
  end
end

-- q_dtype and out_dtype each f16 or bf16.
function M.q_out_16bit(p)
  for _, k in ipairs({ "q_dtype", "out_dtype" }) do
    if p[k] ~= "f16" and p[k] ~= "bf16" then return k .. " must be f16 or bf16, got " .. p[k] end
  end
end

-- kv_dtype a key of formats (text lists them).
function M.kv_dtype_in(formats, text)
  return function(p)
    if formats[p.kv_dtype] == nil then return "kv_dtype must be " .. text .. ", got " .. p.kv_dtype end
  end
end

function M.page_size_pow2(p)
  if p.paged and (p.page_size < 16 or p.page_size & (p.page_size - 1) ~= 0) then
    return "page_size must be a power of two >= 16 when paged, got " .. p.page_size
  end
end

function M.ring_has_window(p)
  if p.ring and p.window <= 0 then return "a ring cache needs window > 0" end
end

function M.window_nonneg(p)
  if p.window < 0 or p.sink_tokens < 0 then return "window and sink_tokens must be >= 0" end
end

function M.softcap_nonneg(p)
  if p.logit_softcap < 0 then return "logit_softcap must be >= 0" end
end

function M.kv_covers_q(p)
  if p.kv_len < p.q_tokens then
    return "kv_len " .. p.kv_len .. " is smaller than q_tokens " .. p.q_tokens
  end
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
