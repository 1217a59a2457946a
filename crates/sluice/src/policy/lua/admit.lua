-- Admits one request against every scope it touches, atomically: all pass and all are
-- charged, or nothing changes. The same arithmetic as MemoryLimits (policy/limits.rs).
--
-- KEYS[1]        the prefix's alive marker (missing = Redis lost its state)
-- KEYS[2+6i ..]  per scope: requests hash, tokens hash, concurrency zset, holds zset,
--                hold costs hash, spend (string for calendar periods, hash of hours for rolling)
-- ARGV[1..5]     now ms, tokens, worst cost, lease expiry ms, ticket
-- ARGV[6+6i ..]  per scope: rpm, tpm, max concurrency, budget limit, first counted hour for a
--                rolling budget (-1: calendar), spend key ttl ms; -1 = no limit
-- Returns {1, alive, rq_limit, rq_remaining, rq_reset, tk_limit, tk_remaining, tk_reset}
--      or {0, alive, scope index, kind, limit, retry ms, spent, reserved, oldest hour,
--          rq_limit, rq_remaining, rq_reset, tk_limit, tk_remaining, tk_reset}
-- kind: 1 requests, 2 tokens, 3 concurrency, 4 budget. -1 = none.
local now = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local worst = tonumber(ARGV[3])
local expiry = tonumber(ARGV[4])
local ticket = ARGV[5]
local alive = redis.call('EXISTS', KEYS[1])
local n = (#KEYS - 1) / 6
local sec = math.floor(now / 1000)
local oldest_kept = sec - 59

-- Sum of a window's live buckets, dropping the stale ones; buckets sorted oldest first.
local function window(key)
  local all = redis.call('HGETALL', key)
  local sum, stale, live = 0, {}, {}
  for i = 1, #all, 2 do
    local s = tonumber(all[i])
    if s < oldest_kept then
      table.insert(stale, all[i])
    else
      local v = tonumber(all[i + 1])
      if v > 0 then
        sum = sum + v
        table.insert(live, {s, v})
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  return sum, live
end

local function reset_ms(live)
  if #live == 0 then return 0 end
  return (live[1][1] + 60) * 1000 - now
end

local rq = {-1, -1, -1}
local tk = {-1, -1, -1}
local function denied(i, kind, limit, retry, spent, reserved, oldest)
  return {0, alive, i, kind, limit, retry, spent, reserved, oldest,
          rq[1], rq[2], rq[3], tk[1], tk[2], tk[3]}
end

for i = 0, n - 1 do
  local k = 1 + i * 6
  local a = 5 + i * 6
  local rpm = tonumber(ARGV[a + 1])
  local tpm = tonumber(ARGV[a + 2])
  local conc = tonumber(ARGV[a + 3])
  local blimit = tonumber(ARGV[a + 4])
  local from_hour = tonumber(ARGV[a + 5])
  if rpm >= 0 then
    local sum, live = window(KEYS[k + 1])
    local remaining = math.max(rpm - sum, 0)
    local reset = reset_ms(live)
    if remaining == 0 then
      rq = {rpm, 0, reset}
      return denied(i, 1, rpm, math.max(reset, 1), 0, 0, -1)
    end
    if rq[1] < 0 or remaining < rq[2] then rq = {rpm, remaining, reset} end
  end
  if tpm >= 0 then
    local sum, live = window(KEYS[k + 2])
    local remaining = math.max(tpm - sum, 0)
    local reset = reset_ms(live)
    if sum + tokens > tpm then
      tk = {tpm, remaining, reset}
      local retry = -1
      if tokens <= tpm then
        retry = 60000
        local left = sum
        for _, b in ipairs(live) do
          left = left - b[2]
          if left + tokens <= tpm then
            retry = (b[1] + 60) * 1000 - now
            break
          end
        end
        retry = math.max(retry, 1)
      end
      return denied(i, 2, tpm, retry, 0, 0, -1)
    end
    if tk[1] < 0 or remaining < tk[2] then tk = {tpm, remaining, reset} end
  end
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 3]) >= conc then
      return denied(i, 3, conc, 1000, 0, 0, -1)
    end
  end
  if blimit >= 0 then
    local expired = redis.call('ZRANGEBYSCORE', KEYS[k + 4], '-inf', now)
    if #expired > 0 then
      redis.call('ZREM', KEYS[k + 4], unpack(expired))
      redis.call('HDEL', KEYS[k + 5], unpack(expired))
    end
    local reserved = 0
    for _, v in ipairs(redis.call('HVALS', KEYS[k + 5])) do reserved = reserved + tonumber(v) end
    local spent, oldest = 0, -1
    if from_hour < 0 then
      spent = tonumber(redis.call('GET', KEYS[k + 6]) or '0')
    else
      local all = redis.call('HGETALL', KEYS[k + 6])
      local stale = {}
      for j = 1, #all, 2 do
        local h = tonumber(all[j])
        if h < from_hour then
          table.insert(stale, all[j])
        else
          spent = spent + tonumber(all[j + 1])
          if oldest < 0 or h < oldest then oldest = h end
        end
      end
      if #stale > 0 then redis.call('HDEL', KEYS[k + 6], unpack(stale)) end
    end
    local committed = spent + reserved
    if committed >= blimit or committed + worst > blimit then
      return denied(i, 4, blimit, -1, spent, reserved, oldest)
    end
  end
end

for i = 0, n - 1 do
  local k = 1 + i * 6
  local a = 5 + i * 6
  local lease_ttl = math.max(expiry - now, 1) * 2
  if tonumber(ARGV[a + 1]) >= 0 then
    redis.call('HINCRBY', KEYS[k + 1], sec, 1)
    redis.call('PEXPIRE', KEYS[k + 1], 61000)
  end
  if tonumber(ARGV[a + 2]) >= 0 then
    redis.call('HINCRBY', KEYS[k + 2], sec, tokens)
    redis.call('PEXPIRE', KEYS[k + 2], 61000)
  end
  if tonumber(ARGV[a + 3]) >= 0 then
    redis.call('ZADD', KEYS[k + 3], expiry, ticket)
    redis.call('PEXPIRE', KEYS[k + 3], lease_ttl)
  end
  if tonumber(ARGV[a + 4]) >= 0 then
    redis.call('ZADD', KEYS[k + 4], expiry, ticket)
    redis.call('HSET', KEYS[k + 5], ticket, worst)
    redis.call('PEXPIRE', KEYS[k + 4], lease_ttl)
    redis.call('PEXPIRE', KEYS[k + 5], lease_ttl)
  end
end
if rq[1] >= 0 then rq[2] = math.max(rq[2] - 1, 0) end
if tk[1] >= 0 then tk[2] = math.max(tk[2] - tokens, 0) end
return {1, alive, rq[1], rq[2], rq[3], tk[1], tk[2], tk[3]}
