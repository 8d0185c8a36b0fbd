-- Read approvals of this root. ARGV: now, then approval ids ('' or none: every one still listed).
-- Returns, per approval still listed, its id then APPROVAL_FIELDS (state as of now), flat.
local now = tonumber(ARGV[1])
local ids = {}
local still_listed = '(' .. now  -- scores after now: listed until later
if #ARGV < 2 then ids = redis.call('ZRANGEBYSCORE', APPROVALS, still_listed, '+inf') end
for j = 2, #ARGV do ids[#ids + 1] = ARGV[j] end
local out = {}
for _, id in ipairs(ids) do
  local v = approval_at(id, now)
  if v then
    out[#out + 1] = id
    for j = 1, 7 do out[#out + 1] = v[j] or '' end
  end
end
return out
