-- Records when a buyer's pass runs out, unless it was recorded first; returns the recorded one.
-- KEYS: 1 passes (hash buyer → expiry ms). ARGV: 1 buyer, 2 expiry ms
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
