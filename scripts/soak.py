#!/usr/bin/env python3
"""Soak: mixed, rate-bounded load for a long while; memory must stay flat, nothing may fail.

Run by `make soak` (SOAK_SECONDS, default 600; not part of `make test`):
    ENVOY_BIN=... PERSIST_WASM=target/wasm32-wasip1/release/envoy_persist.wasm \\
        python scripts/soak.py [--seconds 600] [--interval 10] [--out FILE]

One backend Envoy (three direct_response listeners b0, b1, b2, each answering with its
`x-backend`; `/login` answers `Set-Cookie: JSESSIONID=<the request's x-session>`) and three
Envoys under test side by side, each --concurrency 2 with the built module and the
stateful_session hand-off, each loaded by its own wrk (a Lua script mixing requests; the rate is
bounded by a few connections and wrk's per-request delay(), about 250-300 req/s each):

  cookie  http_cookie, sealed with a fixed key: 15% new clients (no cookie), 5% forged cookies,
          30% one steady cookie, 50% cookies issued earlier in the run (a pool of 500)
  ip      client_ip (X-Forwarded-For, one trusted hop), max_entries 2000, timeout 30s: keys from
          a window of 3000 addresses drifting by one address every 4 requests (evictions and
          expiries all along), 2% without X-Forwarded-For
  app     app_cookie JSESSIONID, max_entries 4000, timeout 60s: 10% logins (the backend sets a
          new session), 75% the cookie of a recent session, 10% ?jsessionid=, 5% unknown sessions

Every --interval seconds, per Envoy: VmRSS (/proc/<pid>/status), the wasm VMs' linear memory
(/proc/<pid>/smaps: V8 maps each linear memory as an rw mapping right before its guard
reservation of several GiB; Envoy has no stat for it), the requests, the profile's counters and
`entries` gauge, `wasm.envoy.wasm.runtime.v8.active`. A probe request with the steady cookie
must always reach the same backend. Verdict, per Envoy:

  - RSS and wasm linear memory stable: over the last 5 minutes (the last half of shorter runs)
    neither the end nor the maximum is more than --rss-slack-mib above the window's start;
  - no non-2xx answer, no socket error (wrk); `error` counter 0;
  - no wasm VM failure: v8.active constant, every wasm.* reload/failure stat 0, no "panicked"
    in the Envoy's log; the Envoy still running.

Exit 1 when a check fails. Only 127.0.0.1 is used; every wait is bounded; every process
started is stopped, also on Ctrl-C.
"""

import argparse
import http.client
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadlib as L  # noqa: E402

KEY = "c29hayB0ZXN0IGZpeGVkIGtleTogbm90IHNlY3JldCE="  # 32 bytes, a test key only

LUA_COMMON = r"""
local n = 0
function setup(thread)
  thread:set("tid", n)
  n = n + 1
end
function delay()
  return delay_ms
end
"""

LUA = {
    "cookie": r"""
function init(args)
  delay_ms = tonumber(args[1]); steady = args[2]
  math.randomseed(1000 + tid)
  pool = {}; pool_n = 0; pool_max = 500; pool_next = 1
end
function request()
  local r = math.random()
  local h = {["Host"] = "soak.test"}
  if r < 0.15 then
    -- a new client: no cookie
  elseif r < 0.20 then
    h["Cookie"] = "persist=forged" .. math.random(1, 1000000)
  elseif r < 0.50 or pool_n == 0 then
    h["Cookie"] = "persist=" .. steady .. "; theme=dark"
  else
    h["Cookie"] = "persist=" .. pool[math.random(1, pool_n)]
  end
  return wrk.format("GET", "/page/" .. math.random(1, 50), h)
end
function response(status, headers, body)
  local sc = headers["set-cookie"] or headers["Set-Cookie"]
  if sc then
    local v = string.match(sc, "^persist=([^;]*)")
    if v then
      pool[pool_next] = v
      if pool_n < pool_max then pool_n = pool_n + 1 end
      pool_next = pool_next % pool_max + 1
    end
  end
end
""",
    "ip": r"""
function init(args)
  delay_ms = tonumber(args[1]); window = tonumber(args[2]); drift_every = tonumber(args[3])
  math.randomseed(2000 + tid); count = 0
end
function request()
  count = count + 1
  local h = {["Host"] = "soak.test"}
  if math.random() >= 0.02 then
    local i = math.floor(count / drift_every) + math.random(0, window - 1)
    h["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256,
                                         math.floor(i / 256) % 256, i % 256)
  end
  return wrk.format("GET", "/", h)
end
""",
    "app": r"""
function init(args)
  delay_ms = tonumber(args[1]); run = args[2]
  math.randomseed(3000 + tid); seq = 0
  ring = {}; ring_n = 0; ring_max = 300; ring_next = 1
end
function request()
  local r = math.random()
  local h = {["Host"] = "soak.test"}
  if ring_n == 0 or r < 0.10 then
    seq = seq + 1
    local s = string.format("%s-%d-%d", run, tid, seq)
    ring[ring_next] = s
    if ring_n < ring_max then ring_n = ring_n + 1 end
    ring_next = ring_next % ring_max + 1
    h["X-Session"] = s
    return wrk.format("GET", "/login", h)
  end
  local s = ring[math.random(1, ring_n)]
  if r < 0.85 then
    h["Cookie"] = "JSESSIONID=" .. s
    return wrk.format("GET", "/page", h)
  elseif r < 0.95 then
    return wrk.format("GET", "/page?jsessionid=" .. s, h)
  end
  h["Cookie"] = "JSESSIONID=unknown" .. math.random(1, 1000000)
  return wrk.format("GET", "/page", h)
end
""",
}

PROFILES = {
    "cookie": ('{"name": "cookie", "type": "http_cookie", "timeout": "1h", '
               '"cookie": {"name": "persist", "format": "sealed", "keys": ["%s"]}}' % KEY, None),
    "ip": ('{"name": "ip", "type": "client_ip", "timeout": "30s", "max_entries": 2000}', 1),
    "app": ('{"name": "app", "type": "app_cookie", "timeout": "60s", "max_entries": 4000, '
            '"app_cookie": {"name": "JSESSIONID", "query_parameter": "jsessionid"}}', None),
}
GAUGE = {"cookie": False, "ip": True, "app": True}


def http_get(port, path, headers):
    c = http.client.HTTPConnection(L.LOCAL, port, timeout=5)
    try:
        c.request("GET", path, headers={"Host": "soak.test", **headers})
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("x-backend"), r.getheader("set-cookie")
    finally:
        c.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--concurrency", type=int, default=2, help="workers of each Envoy under test")
    ap.add_argument("--connections", type=int, default=3, help="wrk connections per Envoy (one thread)")
    ap.add_argument("--delay-ms", type=int, default=10, help="wrk delay() before each request of a connection")
    ap.add_argument("--window", type=float, default=300.0,
                    help="stability window at the end (seconds; at most half the run)")
    ap.add_argument("--rss-slack-mib", type=float, default=4.0,
                    help="growth over the window that still counts as stable")
    ap.add_argument("--out", help="also write the output to this file")
    return L.run_with_output(ap.parse_args(argv), run)


def run(args, out):
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    backend_ports = [L.free_port() for _ in range(3)]
    names = list(PROFILES)
    ports = {n: L.free_port() for n in names}
    out(f"soak: {args.seconds:.0f} s of mixed load, sampled every {args.interval:.0f} s\n"
        f"started {L.now_utc()}\nenvoy: {L.envoy_bin()}\n"
        f"module: {L.wasm_path()} ({L.wasm_path().stat().st_size} bytes)\n"
        f"three Envoys under test (--concurrency {args.concurrency}), each: wrk -t 1 -c {args.connections}, "
        f"delay() {args.delay_ms} ms per request; one backend Envoy, listeners b0 b1 b2; work dir {workdir}")
    for n in names:
        out(f"  {n:<6} {PROFILES[n][0]}")
    with L.Cleanup() as clean:
        backend = clean.add(L.Envoy("backend", lambda a: L.backend_yaml(backend_ports, a), workdir, 1))
        backend.start()
        envoys = {}
        for n in names:
            plugin, hops = PROFILES[n]
            envoys[n] = clean.add(L.Envoy(n, lambda a, n=n, plugin=plugin, hops=hops:
                                          L.proxy_yaml(ports[n], a, backend_ports, plugin, xff_hops=hops),
                                          workdir, args.concurrency))
            envoys[n].start()

        # The steady cookie and the server it names: the probe must always reach it.
        status, probe_backend, sc = http_get(ports["cookie"], "/", {})
        if status != 200 or not sc or not sc.startswith("persist="):
            raise RuntimeError(f"no cookie from the cookie Envoy: {status} {sc!r}")
        steady = sc.split(";", 1)[0].split("=", 1)[1]
        out(f"steady cookie names {probe_backend}\n")

        run_id = f"r{int(time.time()) % 100000}"
        lua_args = {"cookie": (args.delay_ms, steady), "ip": (args.delay_ms, 3000, 4), "app": (args.delay_ms, run_id)}
        samples = []
        probes = []
        t0 = time.monotonic()

        def sample():
            t = time.monotonic() - t0
            row = {"t": t}
            for n, e in envoys.items():
                if e.proc.poll() is not None:
                    raise RuntimeError(f"Envoy {n} exited:\n{e.tail()}")
                wm = e.wasm_memory()
                active, bad = L.wasm_health(e)
                rq = e.all_stats("^http\\.ingress_http\\.downstream_rq_total$").get(
                    "http.ingress_http.downstream_rq_total", 0)
                row[n] = {"rss": e.rss(), "wasm": wm[1], "wasm_rss": wm[2], "vms": wm[0], "active": active,
                          "bad": bad, "rq": rq, "stats": e.persist(n)}
            status, be, _ = http_get(ports["cookie"], "/probe", {"Cookie": f"persist={steady}"})
            probes.append((status, be))
            samples.append(row)
            prev = samples[-2] if len(samples) > 1 else None
            cells = [f"{t:6.0f}"]
            for n in names:
                r = row[n]
                rate = (r["rq"] - prev[n]["rq"]) / (t - prev["t"]) if prev else 0.0
                entries = f"{r['stats'].get('entries', 0):>6}" if GAUGE[n] else f"{'-':>6}"
                cells.append(f"{rate:6.0f} {L.mib(r['rss']):>7} {L.mib(r['wasm']):>5} {entries}")
            out(" | ".join(cells))

        hdr = f"{'':6} | " + " | ".join(f"{n:<27}" for n in names)
        out(hdr)
        out(f"{'t(s)':>6} | " + " | ".join(f"{'req/s':>6} {'RSS MiB':>7} {'wasm':>5} {'entries':>6}"
                                            for _ in names))
        sample()
        wrks = {n: clean.add(L.start_wrk(ports[n], workdir / f"{n}.lua", workdir, f"wrk-{n}", 1,
                                         args.connections, args.seconds, args=lua_args[n]))
                for n in names if (workdir / f"{n}.lua").write_text(LUA_COMMON + LUA[n]) or True}
        next_t = t0 + args.interval
        deadline = t0 + args.seconds + 60
        while True:
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += args.interval
            sample()
            if all(w.poll() is not None for w in wrks.values()):
                break
            if time.monotonic() > deadline:
                out("wrk still running 60 s after its duration: stopped")
                for w in wrks.values():
                    L.stop_popen(w)
                break
        wrk_sum = {n: L.wrk_summary((workdir / f"wrk-{n}.out").read_text(errors="replace")) for n in names}
        log_bad = {n: L.log_problems(e) for n, e in envoys.items()}

    # --- verdict --------------------------------------------------------------------------------
    checks = []

    def check(ok, text):
        checks.append(ok)
        out(f"  [{'ok' if ok else 'FAIL'}] {text}")

    end_t = samples[-1]["t"]
    window = min(args.window, end_t / 2)
    base_i = next(i for i, s in enumerate(samples) if s["t"] >= end_t - window)
    win = samples[base_i:]
    slack = args.rss_slack_mib * L.MiB
    out(f"\nstability window: the last {window:.0f} s (t={win[0]['t']:.0f}s .. {end_t:.0f}s), "
        f"slack {args.rss_slack_mib} MiB")
    for n in names:
        w = wrk_sum[n]
        first, last = samples[0][n], samples[-1][n]
        base = win[0][n]
        out(f"\n{n}: wrk {w['requests']} requests in {w['seconds'] or 0:.1f}s "
            f"({(w['requests'] or 0) / (w['seconds'] or 1):,.0f}/s), non-2xx {w['non2xx']}, "
            f"socket errors: {w['socket_detail']}")
        out(f"  stats at the end: {last['stats']}")
        peak_all = max(s[n]["rss"] for s in samples)
        out(f"  VmRSS: start {L.mib(first['rss'])}, window start {L.mib(base['rss'])}, end {L.mib(last['rss'])}, "
            f"max {L.mib(peak_all)} MiB; wasm linear memory ({last['vms']} VMs): start {L.mib(first['wasm'])}, "
            f"end {L.mib(last['wasm'])} MiB, resident {L.mib(first['wasm_rss'])} -> {L.mib(last['wasm_rss'])} MiB")
        if GAUGE[n]:
            out(f"  entries gauge: max {max(s[n]['stats'].get('entries', 0) for s in samples)}")
        g_end = last["rss"] - base["rss"]
        g_max = max(s[n]["rss"] for s in win) - base["rss"]
        check(g_end <= slack and g_max <= slack,
              f"{n}: RSS stable over the window: end {g_end / L.MiB:+.1f} MiB, max {g_max / L.MiB:+.1f} MiB")
        w_end = last["wasm"] - base["wasm"]
        w_max = max(s[n]["wasm"] for s in win) - base["wasm"]
        check(w_end <= slack and w_max <= slack,
              f"{n}: wasm linear memory stable over the window: end {w_end / L.MiB:+.1f} MiB, "
              f"max {w_max / L.MiB:+.1f} MiB (whole run {(last['wasm'] - first['wasm']) / L.MiB:+.1f} MiB)")
        check(w["requests"] is not None and w["non2xx"] == 0 and w["socket_errors"] == 0,
              f"{n}: non-2xx {w['non2xx']}, socket errors {w['socket_errors']}")
        check(last["stats"].get("error", 0) == 0, f"{n}: `error` counter {last['stats'].get('error', 0)}")
        actives = sorted({s[n]["active"] for s in samples})
        bad = last["bad"]
        check(len(actives) == 1 and not bad and not log_bad[n],
              f"{n}: wasm VMs: v8.active {actives}, reload/failure stats {bad or 'all 0'}, "
              f"log problems {len(log_bad[n])}" + (f" e.g. {log_bad[n][0][:200]}" if log_bad[n] else ""))
    kept = sum(1 for st, be in probes if st == 200 and be == probe_backend)
    out("")
    check(kept == len(probes), f"cookie: the steady cookie's probe reached {probe_backend} {kept}/{len(probes)} times")
    ok = all(checks)
    out(f"\nresult: {'PASS' if ok else 'FAIL'} ({L.now_utc()})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
