-- Sliding-window limits in Redis: the arithmetic of pmkeys/verify/windows.py, atomic, one round trip.
-- KEYS[1]  the key's log: a list of admission times (µs), newest first
-- KEYS[2]  the tenant's log (same hash slot: both names carry the {tenant} hash tag)
-- ARGV[1]  window (µs)
-- ARGV[2]  the key's limit
-- ARGV[3]  the tenant's limit (0: no tenant-wide limit; KEYS[2] is not touched)
-- ARGV[4]  now in µs, or '' for Redis's own clock (what the verifier sends: replicas' clocks
--          never enter into it; tests pass explicit times to replay arrival patterns)
-- Returns {allowed (0|1), key used, key next_us, key free_us, tenant used, tenant next_us, tenant free_us}.
local window = tonumber(ARGV[1])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local cutoff = now - window

-- Drop admissions at or before the cutoff (each entry is popped once: O(1) amortised).
local function expire(log)
  while true do
    local oldest = redis.call('LINDEX', log, -1)
    if not oldest or tonumber(oldest) > cutoff then
      return redis.call('LLEN', log)
    end
    redis.call('RPOP', log)
  end
end

-- {used, next_us, free_us} as windows.py's Log.state computes them.
local function state(log, limit, used)
  local next_us, free_us = 0, 0
  if used > 0 then
    next_us = tonumber(redis.call('LINDEX', log, -1)) + window - now
  end
  if used >= limit then
    free_us = tonumber(redis.call('LINDEX', log, -(used - limit + 1))) + window - now
  end
  return {used, next_us, free_us}
end

local key_limit = tonumber(ARGV[2])
local tenant_limit = tonumber(ARGV[3])
local key_used = expire(KEYS[1])
local tenant_used = 0
if tenant_limit > 0 then
  tenant_used = expire(KEYS[2])
end
local allowed = key_used < key_limit and (tenant_limit == 0 or tenant_used < tenant_limit)
if allowed then
  local stamp = string.format('%d', now)
  local ttl = math.ceil(window / 1000) + 1000
  redis.call('LPUSH', KEYS[1], stamp)
  redis.call('PEXPIRE', KEYS[1], ttl)
  key_used = key_used + 1
  if tenant_limit > 0 then
    redis.call('LPUSH', KEYS[2], stamp)
    redis.call('PEXPIRE', KEYS[2], ttl)
    tenant_used = tenant_used + 1
  end
end
local k = state(KEYS[1], key_limit, key_used)
local t = {0, 0, 0}
if tenant_limit > 0 then
  t = state(KEYS[2], tenant_limit, tenant_used)
end
return {allowed and 1 or 0, k[1], k[2], k[3], t[1], t[2], t[3]}
