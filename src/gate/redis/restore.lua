-- Replaces a sale's stock and holdings with what the system of record says. Idempotency keys are
-- kept (a key names its order for good) and the holdings' keys added.
-- Modes: 'open' only creates a sale that does not exist yet (returns 0 when it did);
-- 'restore' takes exactly the given holdings; 'repair' also keeps a holding for every order
-- still queued for PostgreSQL (KEYS[5]), so a purchase made during a repair is not dropped.
-- KEYS: 1 sale, 2 buyers, 3 holds, 4 keys, 5 unpersisted
-- ARGV: 1 stock, 2 starts (ms), 3 ends (ms, -1 for none), 4 mode,
--       then per holding: order id, user, quantity, idempotency key ('' for none)
if ARGV[4] == 'open' and redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local holdings = {}
for i = 5, #ARGV, 4 do
    holdings[ARGV[i]] = {user = ARGV[i + 1], quantity = tonumber(ARGV[i + 2]), key = ARGV[i + 3]}
end
if ARGV[4] == 'repair' then
    local queued = redis.call('HGETALL', KEYS[5])
    for i = 1, #queued, 2 do
        if not holdings[queued[i]] then
            local order = cjson.decode(queued[i + 1])
            holdings[queued[i]] = {
                user = order.user_id, quantity = order.quantity, key = order.idempotency_key or ''
            }
        end
    end
end
local remaining = tonumber(ARGV[1])
local buyers = {}
for id, holding in pairs(holdings) do
    remaining = remaining - holding.quantity
    local entry = id .. ':' .. holding.quantity
    local user = holding.user
    buyers[user] = buyers[user] and (buyers[user] .. ' ' .. entry) or entry
    redis.call('HSET', KEYS[3], id, cjson.encode({u = user, q = holding.quantity, k = holding.key}))
    if holding.key ~= '' then
        redis.call('HSET', KEYS[4], string.len(user) .. ':' .. user .. holding.key, id)
    end
end
for user, entries in pairs(buyers) do
    redis.call('HSET', KEYS[2], user, entries)
end
if remaining < 0 then
    remaining = 0
end
redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'remaining', remaining,
    'starts_ms', ARGV[2], 'ends_ms', ARGV[3])
return 1
