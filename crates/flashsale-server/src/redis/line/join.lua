-- One buyer's place in a sale's waiting line: join it (ARGV[5] = '1') or only look (ARGV[5] = '0').
-- A join whose request arrived before the start is added to the draws (score: the draw's first 52
-- bits; member: ARGV[6], which for a seeded sale begins with the whole draw in hex, so equal
-- scores order by the whole draw and places are ranks), even when the script runs after the
-- start; later, and when a pass ran out, the buyer gets the next number at the end.
-- KEYS: 1 draws (sorted set), 2 numbers (hash buyer → n), 3 meta (hash), 4 passes (hash buyer →
--       expiry ms), 5 arrivals of the drawn (hash buyer → ms), 6 the places at the end (list of
--       "arrival ms:buyer", for the admission log); one hash tag: the sale id
-- ARGV: 1 buyer, 2 score, 3 starts_ms, 4 now ms ('' for Redis's clock; tests pass a manual
--       clock), 5 '1' to join, 6 member in the draws, 7 arrival ms (when the request reached the
--       node), 8 how far before now an arrival may be (ms): it is bounded to [now - that, now]
-- Returns {now, place ('' before the draw), base, since, paused (sold out), held (paused by the
-- operator), rate ('' while unset), pass expiry ('' when none), placed '1'/'0', pass expired
-- '1'/'0'}, {now} for a buyer not in line, or {now, 'held'} when a join finds the line paused
-- (nobody joins a paused sale's line).
local now
if ARGV[4] ~= '' then
    now = tonumber(ARGV[4])
else
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local buyer = ARGV[1]
local member = ARGV[6]
local starts = tonumber(ARGV[3])
local arrived = math.max(math.min(tonumber(ARGV[7]), now), now - tonumber(ARGV[8]))
local number = redis.call('HGET', KEYS[2], buyer)
local drawn = redis.call('ZSCORE', KEYS[1], member)
local pass = redis.call('HGET', KEYS[4], buyer)
local placed, expired = '0', '0'
if ARGV[5] == '1' and redis.call('HGET', KEYS[3], 'held') == '1' then
    return {string.format('%d', now), 'held'}
end
if ARGV[5] == '1' then
    local known = number or drawn
    if known and pass and tonumber(pass) <= now then
        expired = '1'
    end
    if expired == '1' or not known then
        placed = '1'
        if expired == '0' and arrived < starts then
            redis.call('ZADD', KEYS[1], ARGV[2], member)
            redis.call('HSET', KEYS[5], buyer, string.format('%d', arrived))
            drawn = ARGV[2]
        else
            number = redis.call('HINCRBY', KEYS[3], 'last_number', 1)
            redis.call('HSET', KEYS[2], buyer, number)
            redis.call('RPUSH', KEYS[6], string.format('%d', arrived) .. ':' .. buyer)
            redis.call('HDEL', KEYS[4], buyer)
            pass = false
        end
    end
elseif not number and not drawn then
    return {tostring(now)}
end
local place = ''
if number then
    place = string.format('%d', redis.call('ZCARD', KEYS[1]) + tonumber(number))
elseif now >= starts then
    place = string.format('%d', redis.call('ZRANK', KEYS[1], member) + 1)
end
local meta = redis.call('HMGET', KEYS[3], 'base', 'since', 'paused', 'held', 'rate')
return {string.format('%d', now), place, meta[1] or '', meta[2] or '', meta[3] or '',
    meta[4] or '', meta[5] or '', pass or '', placed, expired}
