-- a finalizer that never returns: Lua runs finalizers with hooks off (line 3)
local t = setmetatable({}, { __gc = function() while true do end end })
return {}
