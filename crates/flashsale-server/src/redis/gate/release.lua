-- Gives back the stock one order holds, once: the holding is deleted, so a second call finds
-- nothing and returns 0. When the sale had been sold out, announces it on the channel and lets
-- its waiting line go on from this moment. With ARGV[4] = '1' the order was never recorded
-- (abandoned): its idempotency key and its access code are forgotten too.
-- KEYS: 1 sale, 2 buyers, 3 holds, 4 keys, 5 the waiting line's admission, 6 access codes
-- ARGV: 1 order id, 2 channel, 3 sale id, 4 forget key, 5 now in ms ('' for Redis's clock)
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
if ARGV[4] == '1' and hold.c and hold.c ~= '' then
    if redis.call('HGET', KEYS[6], hold.c) == ARGV[1] .. ' ' .. hold.u then
        redis.call('HDEL', KEYS[6], hold.c)
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
    local sale = redis.call('HMGET', KEYS[1], 'starts_ms', 'room_rate')
    local room_rate = tonumber(sale[2] or '0')
    if room_rate > 0 then
        local now
        if ARGV[5] ~= '' then
            now = tonumber(ARGV[5])
        else
            local time = redis.call('TIME')
            now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        end
        change_admission(KEYS[5], now, sale[1], room_rate, false, nil, nil)
    end
end
return 1
