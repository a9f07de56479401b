-- Which replica writes usage: the holder keeps the lock while it lives (so its memory of what it
-- copied to status stays useful); another replica takes over when it expires.
-- KEYS[1]  the lock;  ARGV[1]  this replica's token;  ARGV[2]  lifetime (ms)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
