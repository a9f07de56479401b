-- Add one replica's usage deltas for one TenantApiKey to the shared pending counters.
-- KEYS[1]  pending hash of the object;  KEYS[2]  set of objects with pending usage
-- ARGV     uid, namespace, name, requests, errors, last_used (epoch seconds)
redis.call('HINCRBY', KEYS[1], 'requests', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'errors', ARGV[5])
redis.call('HSET', KEYS[1], 'namespace', ARGV[2], 'name', ARGV[3])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_used') or '0')
if tonumber(ARGV[6]) > last then
  redis.call('HSET', KEYS[1], 'last_used', ARGV[6])
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
