-- Gives back the stock one order holds, once: the holding is deleted, so a second call finds
-- nothing and returns 0. Announces on the channel when the sale had been sold out. With ARGV[4]
-- = '1' the order was never recorded (abandoned): its idempotency key is forgotten too.
-- KEYS: 1 sale, 2 buyers, 3 holds, 4 keys.  ARGV: 1 order id, 2 channel, 3 sale id, 4 forget key
local hold = redis.call('HGET', KEYS[3], ARGV[1])
if not hold then
    return 0
end
redis.call('HDEL', KEYS[3], ARGV[1])
hold = cjson.decode(hold)
if ARGV[4] == '1' and hold.k ~= '' then
    local field = string.len(hold.u) .. ':' .. hold.u .. hold.k
    if redis.call('HGET', KEYS[4], field) == ARGV[1] then
        redis.call('HDEL', KEYS[4], field)
    end
end
local held = redis.call('HGET', KEYS[2], hold.u)
local rest = {}
for entry in string.gmatch(held or '', '%S+') do
    if string.match(entry, '^([^:]+):') ~= ARGV[1] then
        rest[#rest + 1] = entry
    end
end
if #rest == 0 then
    redis.call('HDEL', KEYS[2], hold.u)
else
    redis.call('HSET', KEYS[2], hold.u, table.concat(rest, ' '))
end
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', hold.q)
if remaining == hold.q then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
