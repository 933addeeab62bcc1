-- compress.lua -- the KV-cache compression template (fmqa_compress): choose
-- the slots each sequence keeps (sinks, recent slots, heavy hitters by pooled
-- score) and compact them in place.  compress.cuh holds the kernels; fastmqa.h
-- and reference/ref_compress.c the semantics.
--
-- Invariants this file keeps with compress.cuh:
--  * two kernels: fmqa_compress_keys, grid (ceil(kv_len / NT), kv_heads,
--    batch), then fmqa_compress_move, grid (1, kv_heads, batch); NT threads
--    each, no dynamic shared memory;
--  * workspace: keys [b, hk, kv_len] and kept slots [b, hk, kv_len], 4 bytes
--    each.

local KV_FMT = { f16 = 0, bf16 = 1, int8 = 2, fp8_e4m3 = 3 }

local function ceil_div(a, b) return (a + b - 1) // b end

local function problem_check(p)
  if p.op ~= "compress" then return false, "op must be compress, got " .. tostring(p.op) end
  if KV_FMT[p.kv_dtype] == nil then
    return false, "kv_dtype must be f16, bf16, int8 or fp8_e4m3, got " .. p.kv_dtype
  end
  if p.head_dim_v ~= p.head_dim_qk then
    return false, "head_dim_v must equal head_dim_qk, got " .. p.head_dim_v .. " and " .. p.head_dim_qk
  end
  local eb = KV_FMT[p.kv_dtype] >= 2 and 1 or 2
  if (p.head_dim_qk * eb) % 16 ~= 0 or p.head_dim_qk > 512 then
    return false, "head_dim_qk must be at most 512 with rows of whole 16-byte chunks, got " .. p.head_dim_qk
  end
  if p.paged and (p.page_size < 16 or p.page_size & (p.page_size - 1) ~= 0) then
    return false, "page_size must be a power of two >= 16 when paged, got " .. p.page_size
  end
  if p.ring then return false, "a ring cache is not compressed (its slots are positions modulo the window)" end
  return true
end

return {
  name = "compress",
  op = "compress",
  sources = { "compress.cuh" },
  entries = { "fmqa_compress_keys", "fmqa_compress_move" },
  arch_min = 80,

  specialize = function(p)
    local ok, why = problem_check(p)
    if not ok then error(why, 0) end
    return {
      HEAD_DIM = p.head_dim_qk,
      KV_FMT = KV_FMT[p.kv_dtype],
      PAGED = p.paged and 1 or 0,
      PAGE_SIZE = p.paged and p.page_size or 0,
    }
  end,

  space = { NT = { 128, 256, 512 } },

  valid = function(c, p, d)
    local ok, why = problem_check(p)
    if not ok then return false, why end
    local eb = KV_FMT[p.kv_dtype] >= 2 and 1 or 2
    if c.NT * 4 < 2 * (p.head_dim_qk * eb // 16) then
      return false, "NT=" .. c.NT .. " threads cannot move one row per round"
    end
    return true
  end,

  launch = function(c, p, d)
    return {
      kernels = {
        { entry = "fmqa_compress_keys", grid = { ceil_div(p.kv_len, c.NT), p.num_kv_heads, p.batch },
          block = { c.NT, 1, 1 }, shared = 0 },
        { entry = "fmqa_compress_move", grid = { 1, p.num_kv_heads, p.batch },
          block = { c.NT, 1, 1 }, shared = 0 },
      },
      workspace = 8 * p.batch * p.num_kv_heads * p.kv_len,
      splits = 1,
    }
  end,

  default = function(p, d) return { NT = 256 } end,
}
