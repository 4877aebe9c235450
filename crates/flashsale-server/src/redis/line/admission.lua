-- Records a change of a sale's admission at a moment (the stock gate's scripts make the same
-- changes themselves, in the step that causes them).
-- KEYS: 1 meta (hash: base, since, paused (sold out), held (paused by the operator), rate)
-- ARGV: 1 at (ms), 2-3 the admission before any change (since ms, rate), 4 sold out, 5 held
--       ('1', '0', or '' for unchanged), 6 rate ('' for unchanged)
-- Returns the admission in force afterwards {base, since, paused, held, rate} ('' while unset).
local function flag(text)
    if text == '' then return nil end
    return text == '1'
end
change_admission(KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3], flag(ARGV[4]), flag(ARGV[5]),
    tonumber(ARGV[6]))
local meta = redis.call('HMGET', KEYS[1], 'base', 'since', 'paused', 'held', 'rate')
return {meta[1] or '', meta[2] or '', meta[3] or '', meta[4] or '', meta[5] or ''}
