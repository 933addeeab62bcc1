-- prefill_sm90.lua -- prefill attention for Hopper (sm_90a): FlashAttention-3's
-- design (TMA into an mbarrier-guarded ring, wgmma, a producer warpgroup and
-- two consumer warpgroups with setmaxnreg).  prefill_sm90.cuh holds the
-- kernel and what it does not do yet.  New-token K/V only (no cache), f16 or
-- bf16, head dims 64, 128, 256, causal or not, GQA / MQA (any group), varlen
-- by cu_seqlens_q, LSE.  No window, no 8-bit KV.
--
-- Invariants this file keeps with prefill_sm90.cuh:
--  * shared_bytes() below is the kernel's SMEM_BYTES (it traps with less);
--  * grid = (ceil(q_tokens / 128), num_q_heads, batch), block = 384;
--  * the params are fmqa_prefill_sm90_params, whose tensor maps have boxes
--    of (64, 1, 128) for q and (64, 1, BLOCK_N) for k and v (rt_prefill_sm90_maps);
--    launch() says so with its scalar tma_box_n = BLOCK_N;
--  * no workspace.

local HEAD_DIMS = { [64] = true, [128] = true, [256] = true }
local BLOCK_M = 128

local common = require("common")
local ceil_div, flag = common.ceil_div, common.flag

local PROBLEM_CHECKS = {
  common.op_is("prefill"),
  common.head_dims(HEAD_DIMS, "64, 128 or 256"),
  function(p)
    if p.q_dtype ~= "f16" and p.q_dtype ~= "bf16" then
      return "q_dtype must be f16 or bf16, got " .. p.q_dtype
    end
    if p.kv_dtype ~= p.q_dtype or p.out_dtype ~= p.q_dtype then
      return "kv_dtype and out_dtype must be q_dtype (" .. p.q_dtype .. "), got " .. p.kv_dtype ..
        " and " .. p.out_dtype
    end
    if p.kv_cache or p.paged or p.ring or p.tree then
      return "prefill_sm90 takes the new tokens' K/V only: no cache, pages, ring or tree mask"
    end
    if p.window ~= 0 or p.sink_tokens ~= 0 then return "prefill_sm90 has no sliding window" end
    if p.logit_softcap ~= 0 then return "prefill_sm90 does not soft-cap scores (prefill does)" end
    if p.scores then
      return "prefill_sm90 emits no observation-window scores (FMQA_FLAG_SCORES; prefill does)"
    end
    if p.kv_len ~= p.q_tokens then
      return "without a cache kv_len must equal q_tokens, got " .. p.kv_len .. " and " .. p.q_tokens
    end
  end,
}
local function problem_check(p) return common.first_failure(p, PROBLEM_CHECKS) end

-- prefill_sm90.cuh's SMEM_BYTES: alignment slack, Q, the K and V stages, barriers.
local function shared_bytes(c, p)
  local d = p.head_dim_qk
  return 1024 + BLOCK_M * d * 2 + 2 * c.STAGES * c.BLOCK_N * d * 2 + 8 * (1 + 3 * c.STAGES)
end

local function valid(c, p, d)
  local ok, why = problem_check(p)
  if not ok then return false, why end
  if d.cc ~= 90 then return false, "wgmma and setmaxnreg need sm_90a (compute capability 9.0), got " .. d.cc end
  -- consumer registers: O (d/2) + S (BLOCK_N/2) + P (BLOCK_N/4) floats, within setmaxnreg's 240
  local regs = p.head_dim_qk // 2 + c.BLOCK_N // 2 + c.BLOCK_N // 4 + 40
  if regs > 240 then
    return false, "about " .. regs .. " registers a consumer thread exceed 240 (head_dim " ..
        p.head_dim_qk .. ", BLOCK_N " .. c.BLOCK_N .. ")"
  end
  local smem = shared_bytes(c, p)
  if smem > d.smem_per_block_optin then
    return false, smem .. " bytes of shared memory exceed the device's " .. d.smem_per_block_optin
  end
  return true
end

return {
  name = "prefill_sm90",
  op = "prefill",
  sources = { "prefill_sm90.cuh" },
  entries = { "fmqa_prefill_sm90_kernel" },
  arch_min = 90,
  arch_specific = true,

  specialize = function(p)
    local ok, why = problem_check(p)
    if not ok then error(why) end
    return {
      HEAD_DIM = p.head_dim_qk,
      GROUP = p.num_q_heads // p.num_kv_heads,
      Q_BF16 = flag(p.q_dtype == "bf16"),
      OUT_BF16 = flag(p.out_dtype == "bf16"),
      CAUSAL = flag(p.causal),
      LSE = flag(p.lse),
    }
  end,

  space = {
    BLOCK_N = { 64, 128 },
    STAGES = { 2, 3, 4 },
  },

  valid = valid,

  launch = function(c, p, d)
    return {
      kernels = { {
        entry = "fmqa_prefill_sm90_kernel",
        grid = { ceil_div(p.q_tokens, BLOCK_M), p.num_q_heads, p.batch },
        block = { 384, 1, 1 },
        shared = shared_bytes(c, p),
      } },
      workspace = 0,
      -- the kernel takes fmqa_prefill_sm90_params, k and v maps of boxes
      -- this many rows deep (rt_prefill_kernel_params builds them)
      tma_box_n = c.BLOCK_N,
    }
  end,

  -- FlashAttention-3's tiles: 128 kv positions a tile up to d = 128 (64 at
  -- d = 256), two stages; three where shared memory allows at d = 64.
  default = function(p, d)
    local bn = p.head_dim_qk >= 256 and 64 or 128
    for _, n in ipairs({ bn, 64 }) do
      for s = (p.head_dim_qk <= 64 and 3 or 2), 2, -1 do
        local c = { BLOCK_N = n, STAGES = s }
        if valid(c, p, d) then return c end
      end
    end
    return { BLOCK_N = 64, STAGES = 2 }
  end,
}
