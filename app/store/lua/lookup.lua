-- A stored idempotent answer, read only. ARGV: request_id fingerprint. Returns nil, a conflict, or the answer.
local stored = redis.call('GET', key('i', ARGV[1]))
if not stored then return nil end
local sep = string.find(stored, '\n', 1, true)
if string.sub(stored, 1, sep - 1) ~= ARGV[2] then return 'conflict,0,0,,0' end
return replayed(string.sub(stored, sep + 1))
