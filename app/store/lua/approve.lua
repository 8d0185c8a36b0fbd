-- Approve or deny a pending approval. ARGV: id, action (approve|deny), approver (the deciding chain id; '*' for the
-- operator, which no chain id is), decided_by, reason, now, ttl_ms, the decision's event members (base.py
-- decision_members: Python encodes the reason as JSON), the AuditPolicy. The same decision again answers as the
-- first did, and writes no event.
-- Returns the approval's id and APPROVAL_FIELDS (as approvals.lua), or {'error', 'not_found'|'conflict', why}.
-- A decision is PUBLISHed on agentcaps:approvals (to every node of a cluster), waking the calls that wait for it.
local id, action, approver, by, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local v = approval_at(id, now)
if not v or v[1] == 'expired' then return {'error', 'not_found'} end
local may = approver == '*'
for p in string.gmatch(v[2], '[^,]+') do may = may or p == approver end
if not may then return {'error', 'not_found'} end
local wanted = action == 'approve' and 'approved' or 'denied'
if v[1] == 'pending' then
  local ends = now + ttl  -- approved: to be used within; denied: answers its call's retries that long
  redis.call('HSET', key('ap', id), 'state', wanted, 'expires', ends, 'by', by, 'reason', reason)
  local listed = ends + APPROVAL_KEPT_MS
  keep_approval(id, listed, v[8])
  v[1], v[5], v[6], v[7] = wanted, tostring(ends), by, reason
  if v[9] and v[9] ~= '' and ARGV[8] then
    audit_policy(ARGV[9])
    append(now, event_json('approval', v[9], ARGV[8]))
  end
  redis.call('PUBLISH', 'agentcaps:approvals', id)
elseif v[1] ~= wanted and not (wanted == 'approved' and v[1] == 'used') then
  return {'error', 'conflict', 'the approval was already ' .. v[1]}
end
return {id, v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
