-- wrk script: POST the files listed in $BODIES (one path per line) in turn, with
-- Content-Type $CONTENT_TYPE, and print one JSON line of results at the end.
local bodies = {}
for path in io.lines(os.getenv("BODIES")) do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
local content_type = os.getenv("CONTENT_TYPE")
local i = 0

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, { ["Content-Type"] = content_type }, bodies[i])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
