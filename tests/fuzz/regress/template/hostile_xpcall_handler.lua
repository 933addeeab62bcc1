-- loops inside xpcall and in its message handler, which Lua runs with hooks off
-- when the error comes from a hook (line 5)
while true do
  xpcall(function() while true do end end,
         function(e) while true do end end)
end
return {}
