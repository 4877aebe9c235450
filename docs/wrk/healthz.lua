-- GET /healthz through the same Lua request hook and headers as purchase.lua, for a fair ratio.
local tokens = {}
for line in io.lines("tokens.txt") do tokens[#tokens + 1] = line end
local counter = 0
wrk.method = "GET"
wrk.path = "/healthz"
request = function()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token }, nil)
end
