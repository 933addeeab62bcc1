-- runs out of memory inside pcall, forever: stopped at the pcall that caught it (line 3)
while true do
  pcall(function()
    local t = {}
    while true do t[#t + 1] = ("0123456789abcdef"):rep(4096) .. #t end
  end)
end
return {}
