-- Raises a budget's spend to what the usage store counts (never lowers it: Redis may be
-- ahead of records still queued), and marks the prefix's state as present.
--
-- KEYS[1] alive marker, KEYS[2] spend key
-- ARGV: spent, current hour for a rolling budget (-1: calendar), spend key ttl ms
redis.call('SET', KEYS[1], '1')
local spent = tonumber(ARGV[1])
local hour = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local cur = 0
if hour == -1 then
  cur = tonumber(redis.call('GET', KEYS[2]) or '0')
  if spent > cur then redis.call('SET', KEYS[2], spent) end
else
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do cur = cur + tonumber(v) end
  if spent > cur then redis.call('HINCRBY', KEYS[2], hour, spent - cur) end
end
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 0
