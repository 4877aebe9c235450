-- Forgets one sale's queue entries once PostgreSQL committed their orders: acknowledges and
-- deletes the entries (the orders' only copy in Redis), and takes the sale off the persisters'
-- work list when its queue is empty. Atomic with the purchase script, so a sale never leaves the
-- list while it has an entry.
-- KEYS: 1 queue, 2 the set of sales with queued orders,
--       3 the copies of queued orders an earlier version kept (a hash; emptied as they persist)
-- ARGV: 1 consumer group, 2 sale id, 3 number of entries N, then N entry ids, then order ids
local count = tonumber(ARGV[3])
if count > 0 then
    local entries = {}
    for i = 4, 3 + count do
        entries[#entries + 1] = ARGV[i]
    end
    redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
    redis.call('XDEL', KEYS[1], unpack(entries))
end
if #ARGV > 3 + count and redis.call('EXISTS', KEYS[3]) == 1 then
    local orders = {}
    for i = 4 + count, #ARGV do
        orders[#orders + 1] = ARGV[i]
    end
    redis.call('HDEL', KEYS[3], unpack(orders))
end
if redis.call('XLEN', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
