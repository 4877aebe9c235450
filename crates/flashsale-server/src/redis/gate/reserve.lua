-- A group of purchases of one sale, in arrival order, atomically. Each purchase, as if alone: a
-- known idempotency key first (it names its order whatever else changed since), then the window,
-- the operator's pause, the per-buyer limit, the access code (bound to another buyer?) and the
-- stock; then take the stock, record the holding, the key and the code's buyer, and queue the
-- order. The purchase that takes the last unit stops the sale's waiting line at its moment. A purchase sees the ones before it in the group (a buyer's second click finds
-- the first order's holding). The writes are gathered and made once per group where they can be
-- (the remaining stock, the buyers', holdings' and keys' fields): Redis pays most of a script call
-- per call, not per write.
-- The queue entry is an order's only copy in Redis until PostgreSQL has it: the holding names the
-- entry, so a node finds a queued order by id without a second copy.
-- The window and the order's times come from Redis's clock, one clock for every node, so a node
-- whose clock is off cannot sell early or late, nor shorten a payment window.
-- KEYS: 1 sale, 2 buyers, 3 holds, 4 keys, 5 queue, 7 the waiting line's admission, 8 access
--       codes (one hash tag: the sale id), 6 the set of sales with queued orders (the persisters'
--       work list)
-- ARGV: 1 sale id, then 10 per purchase: order id, user, quantity, idempotency key ('' for none),
--       now in ms ('' for Redis's clock; tests pass a manual clock), per-user limit, the order as
--       JSON without its times and closing brace, payment window (ms), the holding as JSON
--       without its closing brace (`{"u":..,"q":..,"k":..,"c":..`), access code ('' for none)
-- Returns two values per purchase: what happened, and its detail (the order's creation time,
-- the order a key or a limit names, the remaining stock, or '').
local FIELDS = 10
local sale = redis.call('HMGET', KEYS[1], 'remaining', 'starts_ms', 'ends_ms', 'paused', 'room_rate')
local verdicts = {}
local function verdict(outcome, detail)
    verdicts[#verdicts + 1] = outcome
    verdicts[#verdicts + 1] = detail or ''
end
if not sale[1] then
    for _ = 2, #ARGV, FIELDS do
        verdict('unknown')
    end
    return verdicts
end
local remaining = tonumber(sale[1])
local starts, ends = tonumber(sale[2]), tonumber(sale[3])
local paused = sale[4] == '1'
local room_rate = tonumber(sale[5] or '0')
local redis_now = nil
local sold_out_at = nil
-- What this group wrote so far, read before Redis's copy.
local held_now, keys_now, codes_now = {}, {}, {}
local buyers, holds, keys, codes = {}, {}, {}, {}
local taken = 0
local queue_empty = redis.call('XLEN', KEYS[5]) == 0

local function purchase(order_id, user, quantity, key, now_arg, limit, record, window, holding,
        code)
    local key_field = nil
    if key ~= '' then
        key_field = string.len(user) .. ':' .. user .. key
        local earlier = keys_now[key_field] or redis.call('HGET', KEYS[4], key_field)
        if earlier then
            return verdict('same_key', earlier)
        end
    end
    local now
    if now_arg ~= '' then
        now = tonumber(now_arg)
    else
        if not redis_now then
            local time = redis.call('TIME')
            redis_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        end
        now = redis_now
    end
    if now < starts then
        return verdict('not_started')
    end
    if ends >= 0 and now >= ends then
        return verdict('ended')
    end
    if paused then
        return verdict('paused')
    end
    local held = held_now[user]
    if held == nil then
        held = redis.call('HGET', KEYS[2], user)
    end
    if held then
        local total, first = 0, nil
        for id, units in string.gmatch(held, '([^%s:]+):(%d+)') do
            total = total + tonumber(units)
            first = first or id
        end
        if total + quantity > limit then
            return verdict('already_purchased', first)
        end
    end
    local code_owner = nil
    if code ~= '' then
        code_owner = codes_now[code]
        if code_owner == nil then
            local bound = redis.call('HGET', KEYS[8], code)
            code_owner = bound and string.match(bound, '^%S+ (.*)$') or false
            codes_now[code] = code_owner
        end
        if code_owner and code_owner ~= user then
            return verdict('code_taken')
        end
    end
    if remaining < quantity then
        return verdict('sold_out', tostring(remaining))
    end
    remaining = remaining - quantity
    taken = taken + quantity
    if remaining == 0 then
        sold_out_at = now
    end
    if code ~= '' and not code_owner then
        codes_now[code] = user
        codes[#codes + 1] = code
        codes[#codes + 1] = order_id .. ' ' .. user
    end
    local entry = order_id .. ':' .. quantity
    if held then
        entry = held .. ' ' .. entry
    end
    if held_now[user] == nil then
        buyers[#buyers + 1] = user
    end
    held_now[user] = entry
    if key_field then
        keys_now[key_field] = order_id
        keys[#keys + 1] = key_field
        keys[#keys + 1] = order_id
    end
    local created = string.format('%d', now)
    local timed = record .. ',"created_at_ms":' .. created
        .. ',"expires_at_ms":' .. string.format('%d', now + window) .. '}'
    -- A sale is on the persisters' work list whenever its queue has an entry (this script adds
    -- it with the first entry, `acknowledge.lua` takes it off with the last), so only the first
    -- entry needs the write.
    if queue_empty then
        redis.call('SADD', KEYS[6], ARGV[1])
        queue_empty = false
    end
    local queued = redis.call('XADD', KEYS[5], '*', 'order', timed)
    holds[#holds + 1] = order_id
    holds[#holds + 1] = holding .. ',"e":"' .. queued .. '"}'
    return verdict('reserved', created)
end

for at = 2, #ARGV, FIELDS do
    purchase(ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2]), ARGV[at + 3], ARGV[at + 4],
        tonumber(ARGV[at + 5]), ARGV[at + 6], tonumber(ARGV[at + 7]), ARGV[at + 8], ARGV[at + 9])
end

if taken > 0 then
    redis.call('HINCRBY', KEYS[1], 'remaining', -taken)
    local fields = {}
    for _, user in ipairs(buyers) do
        fields[#fields + 1] = user
        fields[#fields + 1] = held_now[user]
    end
    redis.call('HSET', KEYS[2], unpack(fields))
    redis.call('HSET', KEYS[3], unpack(holds))
    if #keys > 0 then
        redis.call('HSET', KEYS[4], unpack(keys))
    end
    if #codes > 0 then
        redis.call('HSET', KEYS[8], unpack(codes))
    end
    -- A later purchase of the group may not take the last unit back: remaining only falls here.
    if remaining == 0 and room_rate > 0 and sold_out_at then
        change_admission(KEYS[7], sold_out_at, sale[2], room_rate, true, nil, nil)
    end
end
return verdicts
