-- A stretch of a sale's line in place order, for its admission log: the drawn places by rank
-- (a member is the whole draw in hex, ":", the buyer), then the places at the end by number.
-- KEYS: 1 draws (sorted set), 2 meta (hash), 3 arrivals of the drawn (hash member → ms), 4 the
--       places at the end (list of "arrival ms:buyer", the n-th number at index n - 1)
-- ARGV: 1 places to skip, 2 most places to return
-- Returns {drawn places, numbers given out, then per place: 'd' or 'e', member or entry,
-- arrival ms ('' when unknown)}
local drawn = redis.call('ZCARD', KEYS[1])
local numbers = tonumber(redis.call('HGET', KEYS[2], 'last_number') or '0')
local after, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {tostring(drawn), string.format('%d', numbers)}
local taken = 0
if after < drawn and limit > 0 then
    local members = redis.call('ZRANGE', KEYS[1], after, math.min(after + limit, drawn) - 1)
    for _, member in ipairs(members) do
        out[#out + 1] = 'd'
        out[#out + 1] = member
        out[#out + 1] = redis.call('HGET', KEYS[3], member) or ''
        taken = taken + 1
    end
end
if taken < limit and after + taken >= drawn then
    local from = after + taken - drawn
    for _, entry in ipairs(redis.call('LRANGE', KEYS[4], from, from + limit - taken - 1)) do
        out[#out + 1] = 'e'
        out[#out + 1] = entry
        out[#out + 1] = ''
    end
end
return out
