-- The tenant-wide limit's current use: admissions in the tenant's log inside the window, on
-- Redis's clock (the arithmetic of windows.py's Log.expire; expired entries are dropped as the
-- limiter itself would drop them at the tenant's next request).
-- KEYS[1]  the tenant's log (windows.lua's KEYS[2])
-- ARGV[1]  window (µs)
local clock = redis.call('TIME')
local cutoff = tonumber(clock[1]) * 1000000 + tonumber(clock[2]) - tonumber(ARGV[1])
while true do
  local oldest = redis.call('LINDEX', KEYS[1], -1)
  if not oldest or tonumber(oldest) > cutoff then
    return redis.call('LLEN', KEYS[1])
  end
  redis.call('RPOP', KEYS[1])
end
