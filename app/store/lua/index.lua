-- The operator's index of approvals across roots, under the pseudo-root `approvals` (one slot on a cluster): each
-- new approval's id by its creation time, the newest INDEX_SIZE kept. Written after the script that made the
-- approval, so it may miss one that a crash in between made (that one still works, and its root lists it).
-- ARGV: 'add' created_ms id | 'read' count. 'read' returns the newest ids first.
local index = key('index', 'newest')
if ARGV[1] == 'add' then
  redis.call('ZADD', index, ARGV[2], ARGV[3])
  redis.call('ZREMRANGEBYRANK', index, 0, -(APPROVAL_INDEX_SIZE + 1))
  return 1
end
return redis.call('ZREVRANGE', index, 0, tonumber(ARGV[2]) - 1)
