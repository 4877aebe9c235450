-- The waiting line's admission as every script that changes it computes it (`domain::Admission`):
-- `base` buyers admitted by `since` (ms), then `rate` more per second while the line runs. It
-- stops while the sale is sold out (field `paused`, its name from when that was the only stop) or
-- paused by the operator (`held`). A change records, at its moment, how many were admitted by then.
-- Whole seconds and the rest are counted apart so that the doubles of Lua stay exact.
local function change_admission(meta, at, initial_since, initial_rate, sold, held, rate)
    local m = redis.call('HMGET', meta, 'base', 'since', 'paused', 'held', 'rate')
    local base, since = 0, tonumber(initial_since)
    if m[1] then
        base, since = tonumber(m[1]), tonumber(m[2])
    end
    local was_sold, was_held = m[3] == '1', m[4] == '1'
    local was_rate = tonumber(m[5] or initial_rate)
    if sold == nil then sold = was_sold end
    if held == nil then held = was_held end
    if rate == nil then rate = was_rate end
    if sold == was_sold and held == was_held and rate == was_rate then
        return
    end
    local admitted = base
    if not was_sold and not was_held and at > since then
        local elapsed = at - since
        admitted = base + was_rate * math.floor(elapsed / 1000)
            + math.floor(was_rate * (elapsed % 1000) / 1000)
    end
    redis.call('HSET', meta, 'base', string.format('%d', admitted),
        'since', string.format('%d', math.max(since, at)), 'paused', sold and '1' or '0',
        'held', held and '1' or '0', 'rate', string.format('%d', rate))
end
