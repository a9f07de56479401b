-- Take (read and delete, atomically) one shard's pending usage.
-- KEYS[1]  the shard's pending hash
-- Returns {field, value, ...} as HGETALL does (empty when nothing is pending).
local fields = redis.call('HGETALL', KEYS[1])
if #fields > 0 then
  redis.call('DEL', KEYS[1])
end
return fields
