-- Puts a sale on the gate, in one step with its order queue and the persisters' group, so a sale
-- is never half open. Idempotency keys are kept (a key names its order for good) and the given
-- ones added.
-- Modes: 'open' only creates a sale that does not exist yet (returns 0 when it did);
-- 'restore' takes exactly the given holdings; 'repair' takes the given holdings (the system of
-- record's active orders), every order still queued for PostgreSQL, and every holding Redis has
-- now, except the listed orphans: an order persisted while the repair read PostgreSQL keeps its
-- holding, so a repair racing live purchases never drops one.
-- The sale's version, pause and line rate are the system of record's; a change the gate began
-- and did not finish is dropped with them (the record does not have it: it never happened).
-- KEYS: 1 sale, 2 buyers, 3 holds, 4 keys, 5 (unused; an earlier version's copies of queued
--       orders), 6 queue, 7 access codes, 8 the set of sales with unfinished changes
-- ARGV: 1 stock, 2 starts (ms), 3 ends (ms, -1 for none), 4 mode, 5 consumer group,
--       6 number of holdings H, 7 number of keys K, 8 version, 9 paused '1'/'0', 10 the line's
--       rate (0: no waiting room), 11 number of code bindings C, 12 sale id,
--       then H x (order id, user, quantity, key, code), then K x (user, key, order id),
--       then C x (code, user, order id), then the orphan order ids to drop (repair)
local function ensure_group()
    local created = redis.pcall('XGROUP', 'CREATE', KEYS[6], ARGV[5], '0', 'MKSTREAM')
    if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP') then
        return redis.error_reply(created.err)
    end
end
local mode = ARGV[4]
if mode == 'open' and redis.call('EXISTS', KEYS[1]) == 1 then
    ensure_group()
    return 0
end
local holding_count, key_count = tonumber(ARGV[6]), tonumber(ARGV[7])
local code_count = tonumber(ARGV[11])
local holdings = {}
local first = 13
local keys_at = first + holding_count * 5
local codes_at = keys_at + key_count * 3
for i = first, keys_at - 1, 5 do
    holdings[ARGV[i]] = {user = ARGV[i + 1], quantity = tonumber(ARGV[i + 2]), key = ARGV[i + 3],
        code = ARGV[i + 4]}
end
if mode == 'repair' then
    local drop = {}
    for i = codes_at + code_count * 3, #ARGV do
        drop[ARGV[i]] = true
    end
    local queued = redis.call('XRANGE', KEYS[6], '-', '+')
    for _, entry in ipairs(queued) do
        local fields = entry[2]
        for i = 1, #fields, 2 do
            if fields[i] == 'order' then
                local order = cjson.decode(fields[i + 1])
                if not holdings[order.id] then
                    holdings[order.id] = {
                        user = order.user_id, quantity = order.quantity,
                        key = order.idempotency_key or '', code = order.access_code or '',
                        entry = entry[1]
                    }
                end
            end
        end
    end
    local present = redis.call('HGETALL', KEYS[3])
    for i = 1, #present, 2 do
        if not holdings[present[i]] and not drop[present[i]] then
            local hold = cjson.decode(present[i + 1])
            holdings[present[i]] = {user = hold.u, quantity = hold.q, key = hold.k,
                code = hold.c or '', entry = hold.e}
        end
    end
end
-- Checked before anything is written: Redis keeps the writes a script made before an error.
local remaining = tonumber(ARGV[1])
for _, holding in pairs(holdings) do
    remaining = remaining - holding.quantity
end
if remaining < 0 then
    return redis.error_reply('flashsale: the holdings exceed the stock of ' .. ARGV[1])
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local buyers = {}
for id, holding in pairs(holdings) do
    local entry = id .. ':' .. holding.quantity
    local user = holding.user
    buyers[user] = buyers[user] and (buyers[user] .. ' ' .. entry) or entry
    redis.call('HSET', KEYS[3], id, cjson.encode({u = user, q = holding.quantity, k = holding.key,
        c = holding.code, e = holding.entry}))
    if holding.key ~= '' then
        redis.call('HSET', KEYS[4], string.len(user) .. ':' .. user .. holding.key, id)
    end
    if holding.code ~= '' and redis.call('HEXISTS', KEYS[7], holding.code) == 0 then
        redis.call('HSET', KEYS[7], holding.code, id .. ' ' .. user)
    end
end
for i = keys_at, codes_at - 1, 3 do
    redis.call('HSET', KEYS[4], string.len(ARGV[i]) .. ':' .. ARGV[i] .. ARGV[i + 1], ARGV[i + 2])
end
for i = codes_at, codes_at + code_count * 3 - 1, 3 do
    redis.call('HSET', KEYS[7], ARGV[i], ARGV[i + 2] .. ' ' .. ARGV[i + 1])
end
for user, entries in pairs(buyers) do
    redis.call('HSET', KEYS[2], user, entries)
end
redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'remaining', remaining,
    'starts_ms', ARGV[2], 'ends_ms', ARGV[3], 'version', ARGV[8], 'paused', ARGV[9],
    'room_rate', ARGV[10])
redis.call('HDEL', KEYS[1], 'pending')
redis.call('SREM', KEYS[8], ARGV[12])
ensure_group()
return 1
