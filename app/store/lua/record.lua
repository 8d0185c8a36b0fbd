-- One audit event that no other step writes (a mint, a denial decided without the store), and the chain it came
-- through, kept if new. ARGV: now event policy [chain_id chain_json (denial field, members)...].
audit_policy(ARGV[3])
if ARGV[4] and ARGV[4] ~= '' then see(ARGV[4], ARGV[5], {unpack(ARGV, 6)}) end
append(tonumber(ARGV[1]), ARGV[2])
return 1
