-- Read-only view for inspect and denials: the first revoked prefix and each budget's balance.
-- ARGV: now n_rev prefix... n_budgets prefix...  Returns {revoked_index or '', spent1, held1, ...}.
local now = tonumber(ARGV[1])
purge(now)
local n = tonumber(ARGV[2])
local prefixes = {}
for j = 1, n do prefixes[j] = ARGV[2 + j] end
local revoked = first_revoked(prefixes, now)
local out = {revoked and tostring(revoked) or ''}
local m = tonumber(ARGV[3 + n])
for j = 1, m do
  local spent, held = balance(ARGV[3 + n + j])
  out[#out + 1] = spent; out[#out + 1] = held
end
return out
