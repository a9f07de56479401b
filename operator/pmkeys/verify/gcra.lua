-- GCRA in Redis: the arithmetic of pmkeys/verify/gcra.py `step`, atomic, on Redis's clock.
-- KEYS[1]  the key's limiter state (its TAT, microseconds since the epoch)
-- ARGV[1]  emission interval T in microseconds (60 s / limit, rounded up)
-- ARGV[2]  limit (requests per minute)
-- Returns {allowed (0|1), remaining, reset_us, retry_us}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local t = tonumber(ARGV[1])
local period = t * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + t
if new_tat - now > period then
  return {0, 0, tat - now, new_tat - period - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((period - (new_tat - now)) / t), new_tat - now, 0}
