-- append.lua -- the KV-append template: writes new K/V tokens into a
-- contiguous, paged or ring cache with fused RoPE (K, and Q in place when the
-- call passes q; full or partial rotary, theta or the caller's cos/sin table)
-- and f16/bf16/int8/fp8 storage, or MLA latent rows (latent + rope part, no
-- V).  append.cuh holds the kernel and the exact numerics; this file fixes
-- the problem-dependent defines, the tunable row split and the launch.
--
-- Invariants: every problem this template accepts (problem_check) compiles
-- for every config valid() accepts; the grid covers all K rows, the V rows
-- (none for a latent cache) and, with RoPE, the Q rows after them (batch *
-- q_tokens * heads), which exit at run time when the call passes no q; a
-- row's registers stay bounded (MAX_ROW_FLOATS).

local DTYPE = { f16 = 1, bf16 = 2, int8 = 4, fp8_e4m3 = 5 }   -- fmqa_dtype codes
local ROPE = { none = 0, neox = 1, gptj = 2 }                  -- fmqa_rope codes
local MAX_ROW_FLOATS = 64   -- fp32 values one thread holds: no spills at 64
local INT32_MAX = 2147483647

-- Problem-level legality, shared by specialize (which must not render an
-- illegal problem) and valid (which reports it for every config).
-- Rotated elements of a K row (0 without RoPE): fmqa_rope_extent of
-- common/fmqa_common.h.  A latent row rotates its rope part, the last
-- head_dim_qk - head_dim_v elements; any other row its first rope_dim.
local function rot_dim(p)
  if p.rope == "none" then return 0 end
  if p.latent then return p.head_dim_qk - p.head_dim_v end
  return p.rope_dim > 0 and p.rope_dim or p.head_dim_qk
end

-- The rows a lane group processes, as (elements, rotated elements): K, V
-- (not for a latent cache) and, with RoPE, Q (a latent cache's q is its rope
-- part only).  A latent K row's rope part is its second part even without
-- RoPE (append.cuh: it may come from k_pe_new), so it counts as rotated.
local function row_kinds(p)
  local r = rot_dim(p)
  local kinds = { { p.head_dim_qk, p.latent and p.head_dim_qk - p.head_dim_v or r } }
  if not p.latent then kinds[#kinds + 1] = { p.head_dim_v, 0 } end
  if r > 0 then kinds[#kinds + 1] = { p.latent and r or p.head_dim_qk, r } end
  return kinds
end

local function problem_check(p)
  if p.q_dtype ~= "f16" and p.q_dtype ~= "bf16" then
    return false, "q_dtype (of k_new, v_new, q) must be f16 or bf16, got " .. p.q_dtype
  end
  if not DTYPE[p.kv_dtype] then
    return false, "kv_dtype must be f16, bf16, int8 or fp8_e4m3, got " .. p.kv_dtype
  end
  if ROPE[p.rope] == nil then
    return false, "rope must be none, neox or gptj, got " .. tostring(p.rope)
  end
  for _, k in ipairs({ "head_dim_qk", "head_dim_v" }) do
    local d = p[k]
    if d < 32 or d > 1024 or d % 16 ~= 0 then
      return false, k .. " must be a multiple of 16 in [32, 1024], got " .. d
    end
  end
  if p.latent and (p.num_kv_heads ~= 1 or p.head_dim_v >= p.head_dim_qk) then
    return false, "a latent cache needs 1 KV head and head_dim_v (latent) < head_dim_qk, got "
      .. p.num_kv_heads .. ", " .. p.head_dim_v .. ", " .. p.head_dim_qk
  end
  local r = rot_dim(p)
  if r < 0 or r > p.head_dim_qk or r % 4 ~= 0 then
    return false, "rotated elements must be a multiple of 4 up to head_dim_qk, got " .. r
  end
  if p.paged and (p.page_size < 16 or p.page_size & (p.page_size - 1) ~= 0) then
    return false, "page_size must be a power of two >= 16 when paged, got " .. p.page_size
  end
  if p.ring and p.window <= 0 then
    return false, "a ring cache needs window > 0, got " .. p.window
  end
  if (p.csr or p.slot_mapping) and (not p.paged or p.ring or (p.csr and p.slot_mapping)) then
    return false, "a CSR page table or a slot mapping needs a paged cache without a ring, one of them"
  end
  local rows = p.batch * p.q_tokens * (2 * p.num_kv_heads + p.num_q_heads)
  if rows > INT32_MAX then
    return false, "batch * q_tokens * (2 * kv_heads + heads) = " .. rows .. " exceeds the 32-bit row index"
  end
  return true
end

-- Chunks of VEC elements in half a row of d elements, and the passes a lane
-- of a THREADS_PER_ROW group makes over them.
local function chunks(d, vec) return d // 2 // vec end
local function iters(d, vec, tpr) return (chunks(d, vec) + tpr - 1) // tpr end

-- fp32 values a lane holds of a row of d elements with r rotated: the plain
-- part in chunks of vec, the rotated part in chunk pairs (one per half).
local function lane_floats(d, r, vec, tpr)
  return ((d - r) // vec + tpr - 1) // tpr * vec + iters(r, vec, tpr) * 2 * vec
end

local function next_pow2(n)
  local p = 1
  while p < n do p = p * 2 end
  return p
end

return {
  name = "append",
  op = "append",
  sources = { "append.cuh" },
  entries = { "fmqa_append_kernel" },
  arch_min = 80,
  accuracy = "16-bit caches: one RNE rounding of the fp32 result; 8-bit: scale and codes those of ref_quantize_row for the fp32 row; RoPE angle within ~3e-6 rad at any position (a cos/sin table: its floats as given)",

  specialize = function(p)
    local ok, why = problem_check(p)
    if not ok then error(why, 0) end
    return {
      HEAD_DIM = p.head_dim_qk,
      HEAD_DIM_V = p.head_dim_v,
      IN_BF16 = p.q_dtype == "bf16" and 1 or 0,
      KV_FMT = DTYPE[p.kv_dtype],
      ROPE = ROPE[p.rope],
      PAGED = p.paged and 1 or 0,
      PAGE_SIZE = p.paged and p.page_size or 0,
      CSR = p.csr and 1 or 0,
      SLOT_MAP = p.slot_mapping and 1 or 0,
      RING = p.ring and 1 or 0,
      -- per-head or per-tensor scales: the caller's, read and never written
      FIXED_SCALE = (p.kv_scale ~= "token_head") and 1 or 0,
      ROPE_DIM = rot_dim(p),
      LATENT = p.latent and 1 or 0,
    }
  end,

  space = {
    THREADS_PER_ROW = { 2, 4, 8, 16, 32 },
    ROWS_PER_CTA = { 1, 2, 4, 8, 16, 32, 64 },
    VEC = { 2, 4, 8 },
  },

  valid = function(c, p, d)
    local ok, why = problem_check(p)
    if not ok then return false, why end
    local tpr, vec = c.THREADS_PER_ROW, c.VEC
    local dmax = math.max(p.head_dim_qk, p.head_dim_v)
    local floats = 0
    for _, k in ipairs(row_kinds(p)) do
      local d, r = k[1], k[2]
      if (d - r) % vec ~= 0 or (r // 2) % vec ~= 0 then
        return false, "VEC=" .. vec .. " does not divide the " .. d - r ..
          " plain and half the " .. r .. " rotated elements of a row"
      end
      floats = math.max(floats, lane_floats(d, r, vec, tpr))
    end
    -- More than half the lanes of a group idle on the widest row is waste.
    if tpr > next_pow2(chunks(dmax, vec)) then
      return false, "THREADS_PER_ROW=" .. tpr .. " exceeds the " .. chunks(dmax, vec) .. " chunks per half row"
    end
    if floats > MAX_ROW_FLOATS then
      return false, "a lane would hold " .. floats .. " values (> " .. MAX_ROW_FLOATS .. ")"
    end
    local threads = tpr * c.ROWS_PER_CTA
    local limit = math.min(1024, d.max_threads_per_block or 1024)
    if threads < 32 or threads > limit then
      return false, "block of " .. threads .. " threads outside [32, " .. limit .. "]"
    end
    -- A lane's values may take half the registers ptxas gives a thread of the
    -- block; the rest hold addresses and indices.  ptxas keeps room for two
    -- blocks per SM: 32768 / threads registers, at least 64, at most 255 (a
    -- latent row's 48 values spilled at 512 threads in 64 registers and fit at
    -- 64 threads in 72).
    local regs = math.min(255, math.max(64, 32768 // threads))
    if 2 * floats > regs then
      return false, "a lane's " .. floats .. " values exceed half the " .. regs ..
        " registers of a " .. threads .. "-thread block"
    end
    return true
  end,

  launch = function(c, p, d)
    -- Without RoPE nothing happens to q: no CTAs for its rows (with MQA they
    -- would be nearly all of the grid).
    local q_heads = p.rope == "none" and 0 or p.num_q_heads
    local kv_rows = (p.latent and 1 or 2) * p.num_kv_heads
    local rows = p.batch * p.q_tokens * (kv_rows + q_heads)
    return {
      kernels = { {
        entry = "fmqa_append_kernel",
        grid = { (rows + c.ROWS_PER_CTA - 1) // c.ROWS_PER_CTA, 1, 1 },
        block = { c.THREADS_PER_ROW * c.ROWS_PER_CTA, 1, 1 },
        shared = 0,
      } },
      workspace = 0,
      splits = 1,
    }
  end,

  -- 16-byte loads, one pass per lane over the widest row, 128 threads.
  default = function(p, d)
    local dmax = math.max(p.head_dim_qk, p.head_dim_v)
    local function divides(v)
      for _, k in ipairs(row_kinds(p)) do
        if (k[1] - k[2]) % v ~= 0 or (k[2] // 2) % v ~= 0 then return false end
      end
      return true
    end
    local vec = 8
    while vec > 2 and not divides(vec) do
      vec = vec // 2
    end
    local tpr = math.min(32, next_pow2(chunks(dmax, vec)))
    return { THREADS_PER_ROW = tpr, ROWS_PER_CTA = math.max(1, 128 // tpr), VEC = vec }
  end,
}
