-- Drops an ended, settled sale's keys (PostgreSQL answers for it from then on), unless an order
-- is still queued for PostgreSQL: then nothing changes and the next round tries again.
-- KEYS: 1 sale, 2 buyers, 3 holds, 4 keys, 5 queue, 6 the copies of queued orders an earlier
--       version kept (one hash tag: the sale id),
--       7 the set of sales with queued orders, 8-11 the waiting line (draws, numbers, meta, passes),
--       12 access codes, 13-15 the admission log (checkpoints, arrivals of the drawn, places at
--       the end): a line with a log keeps it and its draws (the log is public for good), the rest
--       of the line goes
-- ARGV: 1 sale id
-- Returns 1 when the sale's keys are gone (also when they were gone already), 0 when not yet.
if redis.call('XLEN', KEYS[5]) > 0 or redis.call('HLEN', KEYS[6]) > 0 then
    return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[9], KEYS[10],
    KEYS[11], KEYS[12])
if redis.call('EXISTS', KEYS[13]) == 0 then
    redis.call('DEL', KEYS[8], KEYS[14], KEYS[15])
end
redis.call('SREM', KEYS[7], ARGV[1])
return 1
