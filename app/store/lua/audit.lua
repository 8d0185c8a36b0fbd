-- Read this root's audit log. ARGV: 'newer' start end count (XRANGE: oldest first) | 'older' end start count
-- (XREVRANGE: newest first) | 'chains' (every ChainSeen kept, as JSON). Events come flat: id, event, at, ...
if ARGV[1] == 'chains' then return redis.call('HVALS', CHAINS) end
local entries
if ARGV[1] == 'newer' then
  entries = redis.call('XRANGE', AUDIT, ARGV[2], ARGV[3], 'COUNT', ARGV[4])
else
  entries = redis.call('XREVRANGE', AUDIT, ARGV[2], ARGV[3], 'COUNT', ARGV[4])
end
local out = {}
for _, entry in ipairs(entries) do
  local fields = {}
  for j = 1, #entry[2], 2 do fields[entry[2][j]] = entry[2][j + 1] end
  out[#out + 1] = entry[1]; out[#out + 1] = fields.e or ''; out[#out + 1] = fields.at or '0'
end
return out
