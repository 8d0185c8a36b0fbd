-- One decision: idempotency, revocation of every prefix, rate windows, budgets; then all writes or none.
-- ARGV[1], lines: now call_id request_id fingerprint mode hold_ttl cost currency
--   revocation "p1,p2,..."  rates "prefix:count:window,..."  budgets "prefix:limit:charge:expires,..."  verifier
-- (one argument, not eleven: packing arguments is most of a client's per-call cost)
-- Returns one string "status,index,retry_after_ms,hold_id,replayed,spent1,held1,...": few bytes to parse.
local a = {}
for line in string.gmatch(ARGV[1] .. '\n', '([^\n]*)\n') do a[#a + 1] = line end
local now, call_id, request_id, fingerprint = tonumber(a[1]), a[2], a[3], a[4]
local mode, hold_ttl, cost, currency = a[5], tonumber(a[6]), a[7], a[8]
local verifier = a[12] or ''  -- the verifier key's name that asked, '' without verifier keys
local revs = {}
for p in string.gmatch(a[9], '[^,]+') do revs[#revs + 1] = p end
local rates = {}
for p, n, w in string.gmatch(a[10], '([^,:]+):(%d+):(%d+)') do rates[#rates + 1] = {p, tonumber(n), tonumber(w)} end
local budgets = {}
for p, l, c, e in string.gmatch(a[11], '([^,:]+):(%d+):(%d):(%d+)') do
  budgets[#budgets + 1] = {p, l, c == '1', tonumber(e)}
end

if not purge(now) then return 'purging,0,0,,0' end

local idem
if request_id ~= '' then
  idem = key('i', request_id)
  local stored = stored_answer(redis.call('GET', idem), fingerprint, now)
  if stored then return stored end
end

local function answer(status, index, retry, hold_id, balances)
  local out = {status, tostring(index), tostring(retry), hold_id, '0'}
  for _, b in ipairs(balances) do out[#out + 1] = b[1]; out[#out + 1] = b[2] end
  out = table.concat(out, ',')
  if idem then
    local ends = string.format('%d', now + IDEMPOTENCY_TTL_MS)
    redis.call('SET', idem, fingerprint .. '\n' .. out .. '\n' .. ends, 'PX', IDEMPOTENCY_TTL_MS + GC_SLACK_MS)
  end
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
    'exp', now + hold_ttl, 'state', 'held', 'v', verifier)
  redis.call('ZADD', HOLDS, now + hold_ttl, hold_id)
end
return answer('allowed', 0, 0, hold_id, balances)
