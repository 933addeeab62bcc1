-- Test fixture: reports which globals the sandbox leaves (specialize) and
-- misbehaves on request, keyed by the problem's batch:
--   batch 7: valid() never returns        batch 9: default() eats memory
--   batch 5: launch() returns a bad grid  batch 3: valid() raises an error
return {
  name = "probe",
  op = "decode",
  sources = { "probe.cuh" },
  entries = { "probe_main", "probe_tail" },
  specialize = function(p)
    return {
      HAS_LOAD = load ~= nil, HAS_LOADFILE = loadfile ~= nil, HAS_DOFILE = dofile ~= nil,
      HAS_REQUIRE = require ~= nil, HAS_COLLECTGARBAGE = collectgarbage ~= nil,
      HAS_DUMP = string.dump ~= nil, HAS_IO = io ~= nil, HAS_OS = os ~= nil,
      HAS_MATH = math ~= nil, HAS_STRING_REP = string.rep ~= nil,
      HEAD_DIM = p.head_dim_qk, CAUSAL = p.causal,
    }
  end,
  space = { TILE = { 16, 32, 64 }, WARPS = { 1, 2, 4 } },
  valid = function(c, p, d)
    if p.batch == 7 then
      while true do end
    end
    if p.batch == 3 then error("deliberate failure") end
    if c.TILE < 16 * c.WARPS then return false, "TILE must be at least 16*WARPS" end
    if c.TILE * 1024 > d.smem_per_block_optin then return false, "tile too big for shared memory" end
    return true
  end,
  launch = function(c, p, d)
    local gy = p.batch == 5 and "two" or p.num_kv_heads
    return {
      kernels = {
        { entry = "probe_main", grid = { p.batch, gy }, block = { 32 * c.WARPS }, shared = c.TILE * 8 },
        { entry = "probe_tail", grid = { p.batch }, block = { 64 } },
      },
      workspace = p.batch * 256, splits = 2, split_tokens = c.TILE * 4,
    }
  end,
  default = function(p, d)
    if p.batch == 9 then
      local t = {}
      for i = 1, 1e9 do t[i] = string.rep("0123456789abcdef", 4096) .. i end
    end
    return { TILE = 32, WARPS = 2 }
  end,
}
