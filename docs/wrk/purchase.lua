-- POST /api/v1/sales/<SALE>/purchase, one of many buyer tokens per request (round robin per thread).
local tokens = {}
for line in io.lines("tokens.txt") do tokens[#tokens + 1] = line end
local counter = 0
wrk.method = "POST"
wrk.path = "/api/v1/sales/" .. os.getenv("SALE") .. "/purchase"
request = function()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token }, nil)
end
-- Outcomes are read from the server's /metrics (flashsale_purchases_total), not counted here:
-- a Lua response hook would cost the client CPU that the server shares.
