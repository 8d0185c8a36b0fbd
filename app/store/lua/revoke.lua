-- Mark a prefix (or '*', the whole root) revoked until expires_ms (0: forever); never shortens a mark.
-- ARGV: prefix expires_ms
local k = key('rv', ARGV[1])
local expires = tonumber(ARGV[2])
local current = redis.call('PEXPIRETIME', k)  -- -2: no mark, -1: a mark forever
if current == -1 then return 1 end
if expires == 0 then
  redis.call('SET', k, '1')
elseif current == -2 or expires > current then
  redis.call('SET', k, '1', 'PXAT', expires)
end
return 1
