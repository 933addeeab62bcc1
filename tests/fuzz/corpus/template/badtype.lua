-- a string among the candidates of BLOCK_N (line 6)
return {
  name = "badtype",
  op = "decode",
  sources = { "ok.cuh" },
  entries = { "ok_kernel" }, space = { BLOCK_N = { 64, "128" } },
  launch = function(c, p, d) return { kernels = { { entry = "ok_kernel", grid = {1}, block = {32} } } } end,
}
