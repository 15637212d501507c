-- wrk script for the benchmark (bench/loadgen.py): POST one body, stop after a request cap,
-- and print one machine-readable JSON line at the end.
-- Environment: BENCH_BODY_FILE, BENCH_CONTENT_TYPE, BENCH_MAX_REQUESTS (per wrk thread),
-- BENCH_HEADERS (more headers, one "Name: value" a line).
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+): ([^\n]*)") do
  wrk.headers[name] = value
end

local cap = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0")
local answered = 0

function response(status, headers, body)
  answered = answered + 1
  if cap > 0 and answered >= cap then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
