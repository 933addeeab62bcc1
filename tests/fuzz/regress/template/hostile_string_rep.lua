-- string.rep of the empty string once looped in C without allocating; a huge
-- result is refused before it is built (line 4)
local nothing = string.rep("", 1 << 60)
local huge = string.rep("x", 1 << 40)
return {}
