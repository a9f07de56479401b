-- Add one replica's usage deltas to one shard's pending counters (one hash: one cluster slot).
-- KEYS[1]  the shard's pending hash ({<prefix>:usage:NN} hash tag)
-- ARGV     groups of six: uid, namespace, name, requests, errors, last_used (epoch seconds)
-- Fields per uid: <uid>:r, <uid>:e (summed), <uid>:t (the latest), <uid>:o (namespace/name).
for i = 1, #ARGV, 6 do
  local uid = ARGV[i]
  redis.call('HINCRBY', KEYS[1], uid .. ':r', ARGV[i + 3])
  redis.call('HINCRBY', KEYS[1], uid .. ':e', ARGV[i + 4])
  redis.call('HSET', KEYS[1], uid .. ':o', ARGV[i + 1] .. '/' .. ARGV[i + 2])
  local last = tonumber(redis.call('HGET', KEYS[1], uid .. ':t') or '0')
  if tonumber(ARGV[i + 5]) > last then
    redis.call('HSET', KEYS[1], uid .. ':t', ARGV[i + 5])
  end
end
return 1
