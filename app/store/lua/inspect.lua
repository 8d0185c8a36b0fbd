-- Read-only view for inspect and denials: the first revoked prefix and each budget's balance.
-- ARGV: now n_rev prefix... n_budgets prefix...  Returns {revoked_index or '', spent1, held1, ...}.
purge(tonumber(ARGV[1]))
local out = {''}
if redis.call('EXISTS', key('rv', '*')) == 1 then out[1] = '-1' end
local n = tonumber(ARGV[2])
for j = 1, n do
  if out[1] == '' and redis.call('EXISTS', key('rv', ARGV[2 + j])) == 1 then out[1] = tostring(j - 1) end
end
local m = tonumber(ARGV[3 + n])
for j = 1, m do
  local spent, held = balance(ARGV[3 + n + j])
  out[#out + 1] = spent; out[#out + 1] = held
end
return out
