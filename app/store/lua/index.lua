-- The operator's indexes across roots, each under a pseudo-root (one slot on a cluster).
-- `approvals`: each new approval's id by its creation time, the newest INDEX_SIZE kept. Written after the script
-- that made the approval, so it may miss one that a crash in between made (that one still works, and its root
-- lists it). ARGV: 'add' created_ms id | 'read' count. 'read' returns the newest ids first.
-- `audit`: the roots that wrote audit events, by when (this Redis's clock) the index last heard of them: at most
-- once a second per root per process (app/store/redis.py), so a root's newest event may be a little newer.
-- ARGV: 'root' token_id retention_ms (roots quiet longer than that are let out) | 'roots' order(asc|desc) min_ms
-- offset count: {now_ms, root, ms, root, ms, ...}.
if ARGV[1] == 'add' or ARGV[1] == 'read' then
  local index = key('index', 'newest')
  if ARGV[1] == 'add' then
    redis.call('ZADD', index, ARGV[2], ARGV[3])
    redis.call('ZREMRANGEBYRANK', index, 0, -(APPROVAL_INDEX_SIZE + 1))
    return 1
  end
  return redis.call('ZREVRANGE', index, 0, tonumber(ARGV[2]) - 1)
end
local roots = key('audit', 'roots')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'root' then
  redis.call('ZADD', roots, now, ARGV[2])
  redis.call('ZREMRANGEBYSCORE', roots, '-inf', now - tonumber(ARGV[3]) - GC_SLACK_MS)
  return 1
end
local found
if ARGV[2] == 'asc' then
  found = redis.call('ZRANGEBYSCORE', roots, ARGV[3], '+inf', 'WITHSCORES', 'LIMIT', ARGV[4], ARGV[5])
else
  found = redis.call('ZREVRANGEBYSCORE', roots, '+inf', ARGV[3], 'WITHSCORES', 'LIMIT', ARGV[4], ARGV[5])
end
table.insert(found, 1, string.format('%d', now))
return found
