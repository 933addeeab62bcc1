-- loops inside pcall: the instruction cap must not be swallowed by pcall (line 3)
while true do
  pcall(function() while true do end end)
end
return {}
