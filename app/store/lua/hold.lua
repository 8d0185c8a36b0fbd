-- Settle, release or extend a hold. ARGV: hold_id action(settle|release|extend) amount('' = all held) now verifier
-- ttl_ms (extend only) policy (AuditPolicy "retention_ms:max_events"). A change writes its audit event with the
-- verify's head the hold keeps (`e`); a repeat that changes nothing writes none. A hold made for a named verifier is not_found to any other: one verifier cannot close
-- another's. Returns {state, amount, currency[, expires]} or {'error', kind, reason}: not_found, conflict, too_much.
local hold_id, action, amount, now, verifier = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] or ''
audit_policy(ARGV[7])
purge(now)  -- one bounded step of the root's housekeeping; this hold's own end is checked below
local rec = key('h', hold_id)
local v = redis.call('HMGET', rec, 'amt', 'b', 'cur', 'state', 'settled', 'until', 'v', 'exp', 'e')
if not v[1] then return {'error', 'not_found'} end
local held, prefixes, currency, state, settled, ends, owner = v[1], v[2], v[3], v[4], v[5], v[6], v[7]
local head = v[9] or ''
-- Ended but not yet reached by purge's steps: released now, as purge would have, and gone.
if state == 'held' and v[8] and not live(v[8], now) then
  drop_holds({hold_id}, 1, now)
  return {'error', 'not_found'}
end
if owner and owner ~= '' and owner ~= verifier then return {'error', 'not_found'} end
-- A closed hold is kept until `until`; one closed before holds carried it counts until Redis expires it.
if state ~= 'held' and ends and not live(ends, now) then return {'error', 'not_found'} end
if action == 'extend' then
  if state ~= 'held' then return {'error', 'conflict', 'the hold was already ' .. state .. ': it has nothing left to extend'} end
  local expires = string.format('%d', now + tonumber(ARGV[6]))
  redis.call('HSET', rec, 'exp', expires)
  redis.call('ZADD', HOLDS, expires, hold_id)
  for prefix in string.gmatch(prefixes or '', '[^,]+') do
    keep_counter(prefix, tonumber(expires) + GC_SLACK_MS, false)
  end
  if head ~= '' then append(now, event_json('extend', head, hold_members(hold_id))) end
  return {'held', held, currency, expires}
end
if amount == '' then amount = held end
local target = action == 'settle' and 'settled' or 'released'
if state ~= 'held' then
  if state ~= target then return {'error', 'conflict', 'the hold was already ' .. state} end
  if target == 'settled' and settled ~= amount then
    return {'error', 'conflict', 'the hold was settled with another amount'}
  end
  return {state, settled, currency}
end
if target == 'released' then amount = '0' end
if not le(big(amount), big(held)) then return {'error', 'too_much'} end
for prefix in string.gmatch(prefixes, '[^,]+') do
  local k = key('b', prefix)
  redis.call('HINCRBY', k, 'h', neg(held))
  redis.call('HINCRBY', k, 's', amount)
end
-- Kept 24 h to answer repeats, written afresh without the budget list: small (a listpack), whatever the chain's
-- budgets; a hash that once held the long list stays a hashtable after HDEL.
redis.call('DEL', rec)
redis.call('HSET', rec, 'amt', held, 'cur', currency, 'state', target, 'settled', amount,
  'until', now + SETTLED_HOLD_TTL_MS, 'v', owner or '')
redis.call('PEXPIRE', rec, SETTLED_HOLD_TTL_MS + GC_SLACK_MS)
redis.call('ZREM', HOLDS, hold_id)
if head ~= '' then
  local kind, charged = 'release', ''
  if target == 'settled' then kind, charged = 'settle', money_json(amount, currency) end
  append(now, event_json(kind, head, hold_members(hold_id, charged)))
end
return {target, amount, currency}
