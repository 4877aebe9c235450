-- A stretch of a sale's line in place order, for its admission log: the drawn places by rank
-- (a member is the whole draw in hex, ":", the buyer), then the places at the end by number.
-- KEYS: 1 draws (sorted set), 2 meta (hash), 3 arrivals of the drawn (hash buyer → ms), 4 the
--       places at the end (list of "arrival ms:buyer", the n-th number at index n - 1)
-- ARGV: 1 places to skip, 2 most places to return
-- Returns {drawn places, numbers given out, then per place: 'd' or 'e', member or entry,
-- arrival ms ('' when unknown)}
local drawn = redis.call('ZCARD', KEYS[1])
-- An archived sale's line keeps its log but not its meta: then the list counts the numbers.
local numbers = tonumber(redis.call('HGET', KEYS[2], 'last_number') or redis.call('LLEN', KEYS[4]))
local after, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {tostring(drawn), string.format('%d', numbers)}
local taken = 0
if after < drawn and limit > 0 then
    local members = redis.call('ZRANGE', KEYS[1], after, math.min(after + limit, drawn) - 1)
    for _, member in ipairs(members) do
        -- A seeded sale's member is the draw in hex (64 digits), ':', the buyer; an older one's
        -- is the buyer (ids are at most 64 characters).
        local buyer = member
        if string.len(member) > 65 and string.sub(member, 65, 65) == ':' then
            buyer = string.sub(member, 66)
        end
        out[#out + 1] = 'd'
        out[#out + 1] = member
        out[#out + 1] = redis.call('HGET', KEYS[3], buyer) or ''
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
