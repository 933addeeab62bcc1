-- a pattern with nested backtracking: (n+1)^6 steps inside C (line 3)
local s = string.rep("a", 4000)
local found = s:find(".-.-.-.-.-b")
return {}
