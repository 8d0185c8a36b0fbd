-- Mark a prefix (or '*', the whole root) revoked until expires_ms by the caller's clock (0: forever); never
-- shortens a mark. The mark holds its end (lib.lua first_revoked); Redis drops it GC_SLACK_MS after that.
-- ARGV: prefix expires_ms [now event policy]: the revocation's audit event, written with it whether or not the
-- mark changed (as MemoryStore).
local k = key('rv', ARGV[1])
local expires = tonumber(ARGV[2])
if ARGV[4] and ARGV[4] ~= '' then
  audit_policy(ARGV[5])
  append(tonumber(ARGV[3]), ARGV[4])
end
local current = redis.call('GET', k)  -- false: no mark
if current == '1' then  -- written before marks carried their end: it ends when Redis expires it
  current = redis.call('PEXPIRETIME', k)
  if current == -1 then current = 0 end  -- no Redis expiry: forever
end
current = tonumber(current)
if current == 0 then return 1 end
if expires == 0 then
  redis.call('SET', k, '0')
elseif not current or expires > current then
  redis.call('SET', k, string.format('%d', expires), 'PXAT', expires + GC_SLACK_MS)
end
return 1
