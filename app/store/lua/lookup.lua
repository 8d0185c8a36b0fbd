-- A stored idempotent answer, read only. ARGV: request_id fingerprint now ('': not judged by time).
-- Returns nil, a conflict, or the answer.
local answer = stored_answer(redis.call('GET', key('i', ARGV[1])), ARGV[2], tonumber(ARGV[3]))
return answer
