-- Take (read and delete, atomically) the pending usage of up to ARGV[2] objects.
-- KEYS[1]  set of objects with pending usage;  ARGV[1]  prefix of the pending hashes
-- Returns {uid, {field, value, ...}, uid, {...}, ...}.
local uids = redis.call('SPOP', KEYS[1], tonumber(ARGV[2]))
local out = {}
for _, uid in ipairs(uids) do
  local key = ARGV[1] .. uid
  out[#out + 1] = uid
  out[#out + 1] = redis.call('HGETALL', key)
  redis.call('DEL', key)
end
return out
