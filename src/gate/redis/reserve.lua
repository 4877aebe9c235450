-- One purchase, atomically: a known idempotency key first (it names its order whatever else
-- changed since), then the window, the per-buyer limit and the stock; then take the stock, record
-- the holding and the key, and queue the order. Either all of it happens or none. The queue entry
-- is the order's only copy in Redis until PostgreSQL has it: the holding names the entry, so a
-- node finds a queued order by id without a second copy (which was a third of this script's
-- writes and half of its bytes in the AOF).
-- The window and the order's times come from Redis's clock, one clock for every node, so a node
-- whose clock is off cannot sell early or late, nor shorten a payment window.
-- KEYS: 1 sale, 2 buyers, 3 holds, 4 keys, 5 queue (one hash tag: the sale id),
--       6 the set of sales with queued orders (the persisters' work list)
-- ARGV: 1 order id, 2 user, 3 quantity, 4 idempotency key ('' for none), 5 now in ms ('' for
--       Redis's clock; tests pass a manual clock), 6 per-user limit, 7 the order as JSON without
--       its times and closing brace, 8 payment window (ms), 9 sale id, 10 the holding as JSON
--       without its closing brace (`{"u":..,"q":..,"k":..`)
local user = ARGV[2]
local key_field = nil
if ARGV[4] ~= '' then
    key_field = string.len(user) .. ':' .. user .. ARGV[4]
    local earlier = redis.call('HGET', KEYS[4], key_field)
    if earlier then
        return {'same_key', earlier}
    end
end
local sale = redis.call('HMGET', KEYS[1], 'remaining', 'starts_ms', 'ends_ms')
if not sale[1] then
    return {'unknown'}
end
local now
if ARGV[5] ~= '' then
    now = tonumber(ARGV[5])
else
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
if now < tonumber(sale[2]) then
    return {'not_started'}
end
local ends = tonumber(sale[3])
if ends >= 0 and now >= ends then
    return {'ended'}
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
if key_field then
    redis.call('HSET', KEYS[4], key_field, ARGV[1])
end
local created = string.format('%d', now)
local record = ARGV[7] .. ',"created_at_ms":' .. created
    .. ',"expires_at_ms":' .. string.format('%d', now + tonumber(ARGV[8])) .. '}'
-- A sale is on the persisters' work list whenever its queue has an entry (this script adds it
-- with the first entry, `acknowledge.lua` takes it off with the last), so only the first entry
-- needs the write.
if redis.call('XLEN', KEYS[5]) == 0 then
    redis.call('SADD', KEYS[6], ARGV[9])
end
local queued = redis.call('XADD', KEYS[5], '*', 'order', record)
-- ARGV[10] is the holding's JSON without its closing brace: the entry id completes it.
redis.call('HSET', KEYS[3], ARGV[1], ARGV[10] .. ',"e":"' .. queued .. '"}')
return {'reserved', created}
