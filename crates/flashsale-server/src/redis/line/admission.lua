-- Moves a sale's admission from one state to the next, unless another node moved it first.
-- KEYS: 1 meta (hash: base, since, paused)
-- ARGV: 1-3 the state the caller saw (base, since ms, paused 0/1), 4-6 the next state, 7-9 the
--       state before any change (admission from the start)
-- Returns the state in force afterwards {base, since, paused}.
local meta = redis.call('HMGET', KEYS[1], 'base', 'since', 'paused')
local current = {meta[1] or ARGV[7], meta[2] or ARGV[8], meta[3] or ARGV[9]}
if current[1] == ARGV[1] and current[2] == ARGV[2] and current[3] == ARGV[3] then
    redis.call('HSET', KEYS[1], 'base', ARGV[4], 'since', ARGV[5], 'paused', ARGV[6])
    return {ARGV[4], ARGV[5], ARGV[6]}
end
return current
