-- Inspect's view, writing nothing a call would see (it purges expired holds, as every script does): the first
-- revoked prefix, the rates whose window is full, each budget's balance.
-- ARGV: now n_rev prefix... n_budgets prefix... n_rates (prefix count window_ms)... policy (AuditPolicy, for the
-- expire events of the holds it releases)
-- Returns {revoked_index or '', "c1,c2,..." (the calls in each rate's window now), spent1, held1, ...}, or
-- {'purging'}: call again.
local now = tonumber(ARGV[1])
audit_policy(ARGV[#ARGV])  -- "retention:max" matches no other argument
if not purge(now) then return {'purging'} end
local n = tonumber(ARGV[2])
local prefixes = {}
for j = 1, n do prefixes[j] = ARGV[2 + j] end
local revoked = first_revoked(prefixes, now)
local m = tonumber(ARGV[3 + n])
local at = 4 + n + m  -- n_rates
local use = {}
for j = 1, tonumber(ARGV[at]) do
  local p, window = ARGV[at + 3 * j - 2], tonumber(ARGV[at + 3 * j])
  -- The calls still in the window are those after now - window (whole ms): what decide counts once it trims.
  use[j] = redis.call('ZCOUNT', key('r', p), now - window + 1, '+inf')
end
local out = {revoked and tostring(revoked) or '', table.concat(use, ',')}
for j = 1, m do
  local spent, held = balance(ARGV[3 + n + j])
  out[#out + 1] = spent; out[#out + 1] = held
end
return out
