-- wrk script for static requests (headers from -H): defines only done(), so wrk keeps its
-- fast path (the request is built once). Prints one machine-readable line for bench/run.py.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read,
    e.write, e.timeout, latency:percentile(50.0), latency:percentile(99.0)))
end
