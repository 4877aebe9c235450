-- Appends a signed checkpoint to a sale's admission log, unless the last one is less than the
-- spacing older or says more (a node that read the line a moment earlier): every node offers
-- checkpoints, one is kept.
-- KEYS: 1 checkpoints (list), 2 meta (hash: the last one's cp_time, cp_n, cp_through)
-- ARGV: 1 time ms, 2 places, 3 admitted through, 4 spacing ms, 5 the checkpoint's bytes
-- Returns 'added', 'soon' or 'behind'.
local last = redis.call('HMGET', KEYS[2], 'cp_time', 'cp_n', 'cp_through')
if last[1] then
    if tonumber(ARGV[2]) < tonumber(last[2]) or tonumber(ARGV[3]) < tonumber(last[3]) then
        return 'behind'
    end
    if tonumber(ARGV[1]) < tonumber(last[1]) + tonumber(ARGV[4]) then
        return 'soon'
    end
end
redis.call('RPUSH', KEYS[1], ARGV[5])
redis.call('HSET', KEYS[2], 'cp_time', ARGV[1], 'cp_n', ARGV[2], 'cp_through', ARGV[3])
return 'added'
