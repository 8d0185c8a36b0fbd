-- Prepended to every agentcaps script. KEYS[1] is the root's base key `ac:{<token id>}`: every other key
-- is built from it, so all keys of one root share its hash tag and slot (Redis Cluster safe).
local base = KEYS[1]
local function key(kind, name) return base .. ':' .. kind .. ':' .. name end
local HOLDS = base .. ':holds'

-- Micro-unit amounts reach 10^18, past a Lua double's exact range: compare them as two base-10^9 limbs.
local LIMB = 1000000000
local function big(s)
  s = s or '0'
  local n = #s
  if n <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))}
end
local function add(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= LIMB then return {hi + 1, lo - LIMB} end
  return {hi, lo}
end
local function le(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] <= b[2]) end
local function decimal(a)
  if a[1] == 0 then return string.format('%d', a[2]) end
  return string.format('%d%09d', a[1], a[2])
end

-- The negative of an amount string; Redis's integer parser refuses '-0'.
local function neg(s) if s == '0' then return '0' end return '-' .. s end

-- Redis collects the budget counter of `prefix` GC_SLACK_MS after `at`: after the later of its budget's end and the
-- end of any hold on it, as extend may keep a hold past the budget's end (collected under the hold, the hold's
-- release would write a new counter holding minus the hold, that never ends). An end only ever moves later.
-- `budget_ends` false: the caller cannot tell, and a counter without an end (PEXPIRETIME -1) is one of a budget
-- that never ends; true (a charge of a budget that ends): such a counter was just created, and gets its end.
local function keep_counter(prefix, at, budget_ends)
  local k = key('b', prefix)
  local current = redis.call('PEXPIRETIME', k)
  if current == -2 or (current == -1 and not budget_ends) then return end
  if current < at then redis.call('PEXPIREAT', k, at) end
end

local function balance(prefix)
  local v = redis.call('HMGET', key('b', prefix), 's', 'h')
  return v[1] or '0', v[2] or '0'
end

-- A stored answer "status,index,retry,hold_id,replayed,..." marked as replayed.
local function replayed(answer)
  local a, b, c, d = string.match(answer, '^([^,]*),([^,]*),([^,]*),([^,]*),')
  return table.concat({a, b, c, d, '1'}, ',') .. string.sub(answer, #a + #b + #c + #d + 6)
end

-- Every "is it over?" is decided here, against the caller's `now` (ms), as MemoryStore does: each record holds
-- its end. Redis's own TTLs only collect the garbage, GC_SLACK_MS after that end (see scripts.py for why).
local function live(ends, now)
  ends = tonumber(ends)
  return ends == 0 or now < ends  -- 0: never ends
end

-- The audit log's care interval last run (see append), and what this script read of it: nil, not read yet; false,
-- none.
local AGED = key('audit', 'aged')
local audit_bucket

-- The first revoked of `prefixes` (0-based; -1: the whole root), or nil. A mark's value is its end; a mark
-- holding '1' was written before marks carried their end, and counts until Redis expires it, as it did then.
local function first_revoked(prefixes, now)
  local marks_at = key('rv', '')  -- every mark's key is this and its prefix: one concatenation each
  local rv = {marks_at .. '*'}
  for j = 1, #prefixes do rv[j + 1] = marks_at .. prefixes[j] end
  rv[#rv + 1] = key('audit', 'aged')  -- AGED, the audit log's care interval, read here for free (append)
  local marks = redis.call('MGET', unpack(rv))
  audit_bucket = marks[#rv]
  for j = 1, #rv - 1 do
    if marks[j] and (marks[j] == '1' or live(marks[j], now)) then return j - 2 end
  end
  return nil
end

-- A stored answer is "fingerprint\nanswer\nends[\napproval]" (the approval the call used, for its replay's event).
-- Returns nil if there is none or it is over by `now` (nil: not judged), a conflict if the fingerprint differs,
-- else the answer marked as replayed, and the approval. One without "\nends" was
-- stored before answers carried their end, and counts until Redis expires it, as it did then.
local function stored_answer(stored, fingerprint, now)
  if not stored then return nil end
  local fp, answer, ends, used = string.match(stored, '^([^\n]*)\n([^\n]*)\n?(%d*)\n?([%w.]*)$')
  if ends ~= '' and now and not live(ends, now) then return nil end
  if fp ~= fingerprint then return 'conflict,0,0,,0' end
  return replayed(answer), used
end

-- The audit log of this root: a stream, each entry its event's JSON (`e`) and the caller's instant (`at`); its ids
-- are Redis's clock. Trimmed on each append, approximately (whole stream nodes, as Redis trims with `~`): older
-- than AuditPolicy.retention_ms by the new entry's id, and past max_events entries of this root. A root that
-- writes nothing more is collected whole once its newest event is past retention.
local AUDIT = key('audit', 'log')
local audit_keep, audit_max = AUDIT_RETENTION_MS, AUDIT_MAX_EVENTS
-- The store's AuditPolicy, "retention_ms:max_events", as each script that may write an event receives it.
local function audit_policy(text)
  local keep, most = string.match(text or '', '^(%d+):(%d+)$')
  if keep then audit_keep, audit_max = tonumber(keep), tonumber(most) end
end

-- app/store/base.py event_json: kind, the head its call shares, then the members this step adds ('' skipped).
local function event_json(kind, head, ...)
  local out = {'"kind":"' .. kind .. '"', head}
  for j = 1, select('#', ...) do
    local m = select(j, ...)
    if m and m ~= '' then out[#out + 1] = m end
  end
  return '{' .. table.concat(out, ',') .. '}'
end

-- caveats/money.py format_micros of a non-negative amount string: at least two decimals, no trailing zeros beyond.
local function format_micros(s)
  s = string.rep('0', 7 - #s) .. s
  local frac = string.gsub(string.sub(s, -6), '0+$', '')
  return string.sub(s, 1, -7) .. '.' .. frac .. string.rep('0', 2 - #frac)
end

local function money_json(micros, currency)
  return '{"amount":"' .. format_micros(micros) .. '","currency":"' .. currency .. '"}'
end

local function hold_members(hold_id, charged)
  if charged and charged ~= '' then return '"hold_id":"' .. hold_id .. '","charged":' .. charged end
  return '"hold_id":"' .. hold_id .. '"'
end

-- Trimming by age and refreshing the stream's TTL cost a call each: done once per "care" interval per root (a
-- tenth of the retention, at most a minute), which `aged` remembers; XADD's own MAXLEN bounds the count each time.
-- decide.lua reads `aged` in the MGET it makes anyway (first_revoked); other scripts read it when they append.
-- Redis's clock stands still while a script runs: every entry one script appends has the same id ms.
local audit_aged = false
local function append(now, event)
  local id = redis.call('XADD', AUDIT, 'MAXLEN', '~', audit_max, '*', 'e', event, 'at', string.format('%d', now))
  if audit_aged then return end
  audit_aged = true
  local ms = tonumber(string.match(id, '^%d+'))
  local bucket = string.format('%d', math.floor(ms / math.max(1, math.min(60000, math.floor(audit_keep / 10)))))
  if audit_bucket == nil then audit_bucket = redis.call('GET', AGED) end
  if audit_bucket == bucket then return end
  redis.call('XTRIM', AUDIT, 'MINID', '~', string.format('%d', ms - audit_keep))
  redis.call('PEXPIRE', AUDIT, audit_keep + GC_SLACK_MS)
  redis.call('SET', AGED, bucket, 'PX', audit_keep + GC_SLACK_MS)
end

-- The chains this root's calls came through (ChainSeen as JSON, by chain id), at most MAX_CHAINS_SEEN: the first
-- kept stays. Its denial members (`status` or `status:index` -> JSON members) go to a hash of their own, which a
-- verify's event reads by field.
local CHAINS = key('chains', 'seen')
local function see(chain, encoded, denials)
  if redis.call('HEXISTS', CHAINS, chain) == 1 or redis.call('HLEN', CHAINS) >= MAX_CHAINS_SEEN then return end
  redis.call('HSET', CHAINS, chain, encoded)
  if #denials > 0 then redis.call('HSET', key('denials', chain), unpack(denials)) end
end

-- Release the first n open holds of `ids` (expired ones): their held amounts stop counting against budgets.
-- Each budget is decremented once by the sum of its holds (in limbs: exact), not once per hold.
local function drop_holds(ids, n, now)
  local freed, order = {}, {}
  for i = 1, n do
    local rec = key('h', ids[i])
    local v = redis.call('HMGET', rec, 'amt', 'b', 'e')
    if v[3] and v[3] ~= '' then append(now, event_json('expire', v[3], hold_members(ids[i]))) end
    if v[1] and v[1] ~= '0' and v[2] then
      for prefix in string.gmatch(v[2], '[^,]+') do
        if not freed[prefix] then order[#order + 1] = prefix; freed[prefix] = {0, 0} end
        freed[prefix] = add(freed[prefix], big(v[1]))
      end
    end
    redis.call('DEL', rec)
  end
  redis.call('ZREM', HOLDS, unpack(ids, 1, n))
  for _, prefix in ipairs(order) do redis.call('HINCRBY', key('b', prefix), 'h', neg(decimal(freed[prefix]))) end
end

-- Release this root's expired holds, at most PURGE_STEP of them: a root may have MAX_OPEN_HOLDS ending at once,
-- and one script releasing them all would stall Redis for every root. True when none is left. False: an expired
-- hold still counts, so the caller must not decide on these balances; it answers 'purging' and is called again
-- (app/store/base.py stepwise), each call one bounded step, other calls running in between.
local function purge(now)
  local expired = redis.call('ZRANGEBYSCORE', HOLDS, '-inf', now, 'LIMIT', 0, PURGE_STEP + 1)
  local n = math.min(#expired, PURGE_STEP)
  if n > 0 then drop_holds(expired, n, now) end
  return #expired <= PURGE_STEP
end

-- Approvals of this root: a hash per approval `ap:<id>`, the call's binding `apb:<digest>` -> id, and APPROVALS,
-- every approval still listed, scored by when it stops being listed (APPROVAL_KEPT_MS after it ended).
local APPROVALS = base .. ':approvals'
-- `e`: the asking call's event head, which the decision's event repeats.
local APPROVAL_FIELDS = {'state', 'approvers', 'details', 'created', 'expires', 'by', 'reason', 'binding', 'e'}

-- The approval's fields as the record holds them, with `state` as of now (pending or approved past its end:
-- expired), or nil when it is not listed any more.
local function approval_at(id, now)
  local v = redis.call('HMGET', key('ap', id), unpack(APPROVAL_FIELDS))
  if not v[1] then return nil end
  local listed = redis.call('ZSCORE', APPROVALS, id)
  if not listed or not live(listed, now) then return nil end
  if (v[1] == 'pending' or v[1] == 'approved') and not live(v[5], now) then v[1] = 'expired' end
  return v
end

-- An approval's record changed: it stays listed until `listed`, and Redis collects it GC_SLACK_MS after.
local function keep_approval(id, listed, binding)
  redis.call('ZADD', APPROVALS, listed, id)
  redis.call('PEXPIREAT', key('ap', id), listed + GC_SLACK_MS)
  if binding then redis.call('PEXPIREAT', key('apb', binding), listed + GC_SLACK_MS) end
end
