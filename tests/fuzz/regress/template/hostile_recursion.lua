-- unbounded recursion, retried forever under pcall (stopped on line 2 or 4)
local function deeper(n) return deeper(n + 1) + 1 end
while true do
  pcall(deeper, 1)
end
return {}
