-- One purchase, atomically: window, idempotency key, per-buyer limit, stock; then take the stock,
-- record the holding and the key, and queue the order. Either all of it happens or none.
-- KEYS: 1 sale, 2 buyers, 3 holds, 4 keys, 5 queue, 6 unpersisted (one hash tag: the sale id)
-- ARGV: 1 order id, 2 user, 3 quantity, 4 idempotency key ('' for none), 5 now (ms),
--       6 per-user limit, 7 the order as JSON
local sale = redis.call('HMGET', KEYS[1], 'remaining', 'starts_ms', 'ends_ms')
if not sale[1] then
    return {'unknown'}
end
local now = tonumber(ARGV[5])
local ends = tonumber(sale[3])
if now < tonumber(sale[2]) or (ends >= 0 and now >= ends) then
    return {'closed'}
end
local user = ARGV[2]
local key_field = nil
if ARGV[4] ~= '' then
    key_field = string.len(user) .. ':' .. user .. ARGV[4]
    local earlier = redis.call('HGET', KEYS[4], key_field)
    if earlier then
        return {'same_key', earlier}
    end
end
local quantity = tonumber(ARGV[3])
local held = redis.call('HGET', KEYS[2], user)
if held then
    local total, first = 0, nil
    for id, units in string.gmatch(held, '([^%s:]+):(%d+)') do
        total = total + tonumber(units)
        first = first or id
    end
    if total + quantity > tonumber(ARGV[6]) then
        return {'already_purchased', first}
    end
end
local remaining = tonumber(sale[1])
if remaining < quantity then
    return {'sold_out', tostring(remaining)}
end
redis.call('HINCRBY', KEYS[1], 'remaining', -quantity)
local entry = ARGV[1] .. ':' .. ARGV[3]
if held then
    entry = held .. ' ' .. entry
end
redis.call('HSET', KEYS[2], user, entry)
redis.call('HSET', KEYS[3], ARGV[1], cjson.encode({u = user, q = quantity, k = ARGV[4]}))
if key_field then
    redis.call('HSET', KEYS[4], key_field, ARGV[1])
end
redis.call('XADD', KEYS[5], '*', 'order', ARGV[7])
redis.call('HSET', KEYS[6], ARGV[1], ARGV[7])
return {'reserved'}
