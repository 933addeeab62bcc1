-- few instructions, each a slow C call: only the wall clock stops it (line 4)
local s = string.rep("x", 10000000)
while true do
  pcall(string.upper, s)
end
return {}
