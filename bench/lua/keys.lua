-- wrk script for keyed requests (bench/run.py sets the environment):
--   BENCH_KIND    header: "x-user: u<k>" | cookie: "Cookie: JSESSIONID=s<k>"
--                 login: "GET /login?id=<k>" (the backend sets JSESSIONID=s<k>)
--                 xff: "X-Forwarded-For: 10.a.b.c" (k spread over the address)
--   BENCH_KEYS    number of distinct keys k = 0 .. BENCH_KEYS-1
--   BENCH_MODE    random: every request a key at random (the measurement)
--                 preload: each thread sends its share of the keys in order (thread t the
--                 keys = t mod threads), then prints "PRELOADED" once (run.py then stops wrk)
--   BENCH_THREADS wrk's -t
-- All requests are built in init(): request() only picks one, so wrk's own cost per
-- request stays small (the "plain, Lua requests" control case measures what is left).
local kind = os.getenv("BENCH_KIND") or "header"
local nkeys = tonumber(os.getenv("BENCH_KEYS") or "1000")
local mode = os.getenv("BENCH_MODE") or "random"
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")

local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local function ipv4(k)
  local a = math.floor(k / 65536) % 256
  local b = math.floor(k / 256) % 256
  local c = k % 256
  return string.format("10.%d.%d.%d", a, b, c)
end

local function build(k)
  if kind == "header" then
    return wrk.format("GET", "/", {["x-user"] = "u" .. k})
  elseif kind == "cookie" then
    return wrk.format("GET", "/", {["Cookie"] = "JSESSIONID=s" .. k})
  elseif kind == "login" then
    return wrk.format("GET", "/login?id=" .. k, {})
  elseif kind == "xff" then
    return wrk.format("GET", "/", {["X-Forwarded-For"] = ipv4(k)})
  end
  error("BENCH_KIND: " .. kind)
end

local reqs = {}
local n = 0
local next_i = 1
local responses = 0
local share = 0
local announced = false

function init(args)
  math.randomseed(os.time() * 1000 + tid * 7919)
  if mode == "preload" then
    for k = tid, nkeys - 1, nthreads do
      n = n + 1
      reqs[n] = build(k)
    end
    share = n
  else
    for k = 0, nkeys - 1 do
      reqs[k + 1] = build(k)
    end
    n = nkeys
  end
end

if mode == "preload" then
  request = function()
    local r = reqs[next_i]
    next_i = next_i + 1
    if next_i > n then next_i = 1 end
    return r
  end
  -- Once this thread has more answers than keys (plus one round of connections), every one
  -- of its keys has been answered: each connection answers in order.
  response = function(status, headers, body)
    responses = responses + 1
    if not announced and responses >= share + 256 then
      announced = true
      io.write("PRELOADED\n")
      io.flush()
    end
  end
else
  request = function()
    return reqs[math.random(n)]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read,
    e.write, e.timeout, latency:percentile(50.0), latency:percentile(99.0)))
end
