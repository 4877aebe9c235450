-- A change of a sale, in two steps (see `StockGate::begin_change`), each atomic on the sale's slot.
-- 'begin', only from the base version: the new window, pause and line rate, and units taken off
-- sale (or nothing, when fewer remain); added units wait. The target is kept as the pending
-- change (and the sale put on the set of unfinished changes) until 'finish', after the store
-- recorded it: added units go on sale (announced like returned stock), the pending change is done.
-- A pause, a new rate, the last unit taken off or the first one added change the waiting line's
-- admission at this moment.
-- KEYS: 1 sale, 2 the waiting line's admission (one hash tag: the sale id), 3 the set of sales
--       with unfinished changes
-- ARGV: 1 'begin' or 'finish', 2 base version, 3 target version, 4 target stock, 5 ends (ms, -1
--       for none), 6 paused '1'/'0', 7 the line's rate (0: no waiting room), 8 now in ms ('' for
--       Redis's clock), 9 the target as the gate keeps it (text), 10 the stock-back channel,
--       11 sale id
-- Returns {'applied'}, {'conflict', pending or ''}, {'insufficient', remaining}, {'finished'},
-- {'stale'} (finish of a change another one overtook) or {'unknown'}.
local sale = redis.call('HMGET', KEYS[1], 'version', 'stock', 'remaining', 'paused', 'room_rate',
    'starts_ms', 'pending')
if not sale[2] then
    return {'unknown'}
end
local version = tonumber(sale[1] or '1')
local stock, remaining = tonumber(sale[2]), tonumber(sale[3])
local target_version, target_stock = tonumber(ARGV[3]), tonumber(ARGV[4])
local old_rate = tonumber(sale[5] or '0')
local now
if ARGV[8] ~= '' then
    now = tonumber(ARGV[8])
else
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
if ARGV[1] == 'begin' then
    if version == target_version and sale[7] == ARGV[9] then
        return {'applied'}
    end
    if version ~= tonumber(ARGV[2]) then
        return {'conflict', sale[7] or ''}
    end
    local removed = math.max(stock - target_stock, 0)
    if removed > remaining then
        return {'insufficient', string.format('%d', remaining)}
    end
    local sold, held, rate = nil, nil, nil
    if removed > 0 then
        remaining = remaining - removed
        stock = stock - removed
        if remaining == 0 then
            sold = true
        end
    end
    if (sale[4] == '1') ~= (ARGV[6] == '1') then
        held = ARGV[6] == '1'
    end
    local new_rate = tonumber(ARGV[7])
    if new_rate ~= old_rate then
        rate = new_rate
    end
    if (old_rate > 0 or new_rate > 0) and (sold ~= nil or held ~= nil or rate ~= nil) then
        change_admission(KEYS[2], now, sale[6], old_rate, sold, held, rate)
    end
    redis.call('HSET', KEYS[1], 'version', ARGV[3], 'stock', string.format('%d', stock),
        'remaining', string.format('%d', remaining), 'ends_ms', ARGV[5], 'paused', ARGV[6],
        'room_rate', ARGV[7], 'pending', ARGV[9])
    redis.call('SADD', KEYS[3], ARGV[11])
    return {'applied'}
end
if version ~= target_version then
    return {'stale'}
end
local added = target_stock - stock
if added > 0 then
    local now_remaining = redis.call('HINCRBY', KEYS[1], 'remaining', added)
    redis.call('HSET', KEYS[1], 'stock', ARGV[4])
    if now_remaining == added then
        redis.call('PUBLISH', ARGV[10], ARGV[11])
        if old_rate > 0 then
            change_admission(KEYS[2], now, sale[6], old_rate, false, nil, nil)
        end
    end
end
redis.call('HDEL', KEYS[1], 'pending')
redis.call('SREM', KEYS[3], ARGV[11])
return {'finished'}
