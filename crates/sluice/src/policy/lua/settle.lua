-- Settles one admitted request: frees its concurrency lease and budget hold, trues its
-- tokens up in the bucket it was admitted in (if still in the window), charges its cost.
--
-- KEYS           as admit.lua, without the alive marker: 6 per scope
-- ARGV[1..5]     ticket, admitted second, tokens reserved, tokens used, cost
-- ARGV[6+3i ..]  per scope: has tpm (0/1), current hour for a rolling budget (-1: calendar,
--                -2: no budget), spend key ttl ms
-- Returns each budget scope's spend after the charge, in scope order.
local ticket = ARGV[1]
local at = ARGV[2]
local reserved = tonumber(ARGV[3])
local used = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local n = #KEYS / 6
local after = {}
for i = 0, n - 1 do
  local k = i * 6
  local a = 5 + i * 3
  redis.call('ZREM', KEYS[k + 3], ticket)
  if ARGV[a + 1] == '1' then
    local cur = redis.call('HGET', KEYS[k + 2], at)
    if cur then
      local v = math.max(tonumber(cur) - math.min(reserved, tonumber(cur)), 0) + used
      redis.call('HSET', KEYS[k + 2], at, v)
    end
  end
  local hour = tonumber(ARGV[a + 2])
  if hour > -2 then
    redis.call('ZREM', KEYS[k + 4], ticket)
    redis.call('HDEL', KEYS[k + 5], ticket)
    local ttl = tonumber(ARGV[a + 3])
    if hour == -1 then
      table.insert(after, redis.call('INCRBY', KEYS[k + 6], cost))
    else
      redis.call('HINCRBY', KEYS[k + 6], hour, cost)
      local s = 0
      for _, v in ipairs(redis.call('HVALS', KEYS[k + 6])) do s = s + tonumber(v) end
      table.insert(after, s)
    end
    if ttl > 0 then redis.call('PEXPIRE', KEYS[k + 6], ttl) end
  end
end
return after
