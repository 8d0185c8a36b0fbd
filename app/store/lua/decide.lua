-- One decision: idempotency, revocation of every prefix, rate windows, budgets; then all writes or none.
-- ARGV[1], one MessagePack array of strings (and three arrays): now call_id request_id fingerprint mode hold_ttl
--   cost currency, revocation {p1, p2, ...}, rates {{prefix, count, window}, ...}, budgets {{prefix, limit,
--   charge, expires}, ...}, verifier, made_up ("1": the service made request_id up for this call),
--   approval: binding approvers ttl_ms (binding '' : no approval caveat gates this call),
--   the AuditPolicy "retention_ms:max_events"; the Trail (head '' : the call writes no verify event): head,
--   charged (cost JSON), the gating caveat's members, chain id
-- ARGV[2]: the approval's details ('' : none); ARGV[3]: the ChainSeen as JSON (absent or '' : not sent), then its
--   denials as field, members pairs
-- (one argument, not twenty-one: packing an argument costs the client more than Redis saves; cmsgpack unpacks it in
-- C, where splitting text in Lua cost Redis ~4 µs a call)
-- Returns one string "status,index,retry_after_ms,hold_id,replayed,spent1,held1,...": few bytes to parse; for
-- approval_required and approval_denied "status,new,0,approval_id,0,state,created,expires,by,reason".
local a = cmsgpack.unpack(ARGV[1])
local now, call_id, request_id, fingerprint = tonumber(a[1]), a[2], a[3], a[4]
local mode, hold_ttl, cost, currency = a[5], tonumber(a[6]), a[7], a[8]
local verifier = a[12] or ''  -- the verifier key's name that asked, '' without verifier keys
-- A made-up id's answer is kept minutes, and without the GC slack: every call stores one. Redis deleting it a
-- little early can only make a late resend charge again, never allow more than the budget.
local made_up = a[13] == '1'
local answer_ttl = made_up and MADE_UP_ID_TTL_MS or IDEMPOTENCY_TTL_MS
local answer_px = made_up and MADE_UP_ID_TTL_MS or IDEMPOTENCY_TTL_MS + GC_SLACK_MS
local revs = a[9]
local rates = {}
for _, r in ipairs(a[10]) do rates[#rates + 1] = {r[1], tonumber(r[2]), tonumber(r[3])} end
local budgets = {}
for _, b in ipairs(a[11]) do budgets[#budgets + 1] = {b[1], b[2], b[3] == '1', tonumber(b[4])} end

audit_policy(a[17])
if not purge(now) then return 'purging,0,0,,0' end

-- The verify event of every outcome but conflict and purging, as base.py outcome_members composes it.
local head, charged_json, gate_at, chain = a[18] or '', a[19] or '', a[20] or '', a[21] or ''
local function verify_event(status, index, hold_id, approval_id, replay)
  if head == '' then return end
  if ARGV[3] and ARGV[3] ~= '' then see(chain, ARGV[3], {unpack(ARGV, 4)}) end  -- kept first: its denials say it
  local out = {}
  if status == 'allowed' then
    out[1] = '"allowed":true'
    if mode == 'charge' and charged_json ~= '' and not replay then out[#out + 1] = '"charged":' .. charged_json end
    if hold_id ~= '' then out[#out + 1] = '"hold_id":"' .. hold_id .. '"' end
  elseif status == 'approval_required' or status == 'approval_denied' then
    out[1] = '"allowed":false,"code":"' .. status .. '"'
    if gate_at ~= '' then out[#out + 1] = gate_at end
  else
    local said = redis.call('HMGET', key('denials', chain), status .. ':' .. index, status)
    out[1] = (said[1] ~= '' and said[1]) or (said[2] ~= '' and said[2]) or '"allowed":false,"code":"' .. status .. '"'
  end
  if approval_id and approval_id ~= '' then out[#out + 1] = '"approval_id":"' .. approval_id .. '"' end
  if replay then out[#out + 1] = '"replayed":true' end
  append(now, event_json('verify', head, table.concat(out, ',')))
end

local idem
if request_id ~= '' then
  idem = key('i', request_id)
  -- A made-up id is new (128 random bits, made for this call): nothing is stored under it to read.
  local stored, used_before = stored_answer(not made_up and redis.call('GET', idem), fingerprint, now)
  if stored then
    local status, index, hold = string.match(stored, '^([^,]*),([^,]*),[^,]*,([^,]*),')
    if status ~= 'conflict' then verify_event(status, index, hold, used_before, true) end
    return stored
  end
end

local used  -- the approval this call uses up, if one gates it
local function answer(status, index, retry, hold_id, balances)
  local out = {status, tostring(index), tostring(retry), hold_id, '0'}
  for _, b in ipairs(balances) do out[#out + 1] = b[1]; out[#out + 1] = b[2] end
  out = table.concat(out, ',')
  if idem then
    local ends = string.format('%d', now + answer_ttl)
    local kept = fingerprint .. '\n' .. out .. '\n' .. ends
    if used then kept = kept .. '\n' .. used end
    redis.call('SET', idem, kept, 'PX', answer_px)
  end
  verify_event(status, index, hold_id, used, false)
  return out
end

local revoked = first_revoked(revs, now)
if revoked then return answer('revoked', revoked, 0, '', {}) end

for j, r in ipairs(rates) do
  local k = key('r', r[1])
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - r[3])
  local n = redis.call('ZCARD', k)
  if n >= r[2] then
    local retry = r[3]
    if r[2] > 0 then
      local oldest = redis.call('ZRANGE', k, n - r[2], n - r[2], 'WITHSCORES')
      retry = tonumber(oldest[2]) + r[3] - now
    end
    return answer('rate_limited', j - 1, retry, '', {})
  end
end

-- The root's open holds are bounded (all are live here: purge is done): index -1, the root itself; Retry-After
-- is when the first of them ends by itself (settling or releasing one frees a place sooner).
if mode == 'hold' and redis.call('ZCARD', HOLDS) >= MAX_OPEN_HOLDS then
  local first = redis.call('ZRANGE', HOLDS, 0, 0, 'WITHSCORES')
  return answer('rate_limited', -1, string.format('%d', tonumber(first[2]) - now), '', {})
end

local balances = {}
for j, b in ipairs(budgets) do balances[j] = {balance(b[1])} end
local c = big(cost)
for j, b in ipairs(budgets) do
  if b[3] and not le(add(add(big(balances[j][1]), big(balances[j][2])), c), big(b[2])) then
    return answer('budget_exceeded', j - 1, 0, '', balances)
  end
end

-- An approval caveat gates this call: an approved approval lets it through (used up below, with the writes);
-- pending or denied is the answer, never kept under the request id (the same request must see the decision);
-- none alive: a new pending one, as long as the root keeps fewer than MAX_APPROVALS.
local binding = a[14] or ''
local function approval_answer(status, new, id, v)
  verify_event(status, 0, '', id, false)
  return table.concat({status, new, '0', id, '0', v[1], v[4], v[5], v[6], v[7]}, ',')
end
if binding ~= '' then
  local bound = key('apb', binding)
  local id = redis.call('GET', bound)
  local v = id and approval_at(id, now)
  if v and v[1] == 'approved' then
    used = id
  elseif v and v[1] == 'pending' then
    return approval_answer('approval_required', '0', id, v)
  elseif v and v[1] == 'denied' and live(v[5], now) then
    return approval_answer('approval_denied', '0', id, v)
  else
    local gone = redis.call('ZRANGEBYSCORE', APPROVALS, '-inf', now)
    for _, old in ipairs(gone) do redis.call('DEL', key('ap', old)) end
    redis.call('ZREMRANGEBYSCORE', APPROVALS, '-inf', now)
    if redis.call('ZCARD', APPROVALS) >= MAX_APPROVALS then
      local first = redis.call('ZRANGE', APPROVALS, 0, 0, 'WITHSCORES')
      return answer('rate_limited', -2, string.format('%d', tonumber(first[2]) - now), '', {})
    end
    id = string.sub(base, 5, -2) .. '.' .. call_id
    local ttl = tonumber(a[16])
    local fields = {'pending', a[15], ARGV[2], tostring(now), string.format('%d', now + ttl), '', '', binding, head}
    local record = {}
    for j, f in ipairs(APPROVAL_FIELDS) do record[#record + 1] = f; record[#record + 1] = fields[j] end
    redis.call('HSET', key('ap', id), unpack(record))
    redis.call('SET', bound, id)
    keep_approval(id, now + ttl + APPROVAL_KEPT_MS, binding)
    return approval_answer('approval_required', '1', id, fields)
  end
end

-- Everything holds: write it all.
for _, r in ipairs(rates) do
  local k = key('r', r[1])
  redis.call('ZADD', k, now, call_id)
  redis.call('PEXPIRE', k, r[3] + GC_SLACK_MS)  -- entries older than the window are trimmed by now, above
end
local hold_id = ''
local field = 's'
local charged = {}
if mode == 'hold' then
  hold_id = string.sub(base, 5, -2) .. '.' .. call_id
  field = 'h'
end
for j, b in ipairs(budgets) do
  local k = key('b', b[1])
  if b[3] then
    charged[#charged + 1] = b[1]
    redis.call('HINCRBY', k, field, cost)
    local slot = field == 's' and 1 or 2
    balances[j][slot] = decimal(add(big(balances[j][slot]), c))  -- exact: a Lua number prints 1e+14
    if b[4] > 0 then keep_counter(b[1], b[4] + GC_SLACK_MS, true) end  -- deleted early: whole again, overspent
  end
end
if mode == 'hold' then
  redis.call('HSET', key('h', hold_id), 'amt', cost, 'b', table.concat(charged, ','), 'cur', currency,
    'exp', now + hold_ttl, 'state', 'held', 'v', verifier, 'e', head)
  redis.call('ZADD', HOLDS, now + hold_ttl, hold_id)
end
if used then  -- one approval, one call: it ends with the call it allowed
  redis.call('HSET', key('ap', used), 'state', 'used')
  redis.call('DEL', key('apb', binding))
  keep_approval(used, now + APPROVAL_KEPT_MS)
end
return answer('allowed', 0, 0, hold_id, balances)
