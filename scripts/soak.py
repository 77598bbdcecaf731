#!/usr/bin/env python3
"""Soak: mixed, rate-bounded load for a long while; memory must stay flat, nothing may fail.

Run by `make soak` (SOAK_SECONDS, default 600; not part of `make test`; ARGS passes options,
e.g. `make soak ARGS=--mirror`), or without make:
    ENVOY_BIN=... PERSIST_WASM=target/wasm32-wasip1/release/envoy_persist.wasm \\
        .venv/bin/python scripts/soak.py [--seconds 600] [--interval 10] [--out FILE] [--mirror]
(ENVOY_BIN: `scripts/envoy-bin.sh` prints it; --mirror also needs etcd and etcdctl on PATH, or
ETCD_BIN / ETCDCTL_BIN, and PyYAML, which .venv has.)

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

With --mirror, the tables are also mirrored through one etcd member (started like
scripts/mirror_load.py does, with its data in the work dir and periodic auto-compaction,
--etcd-compaction, default a retention of 1m: without compaction etcd keeps every revision of
every key, so its db and RSS grow with the writes whatever expires):

  ip, app      as above, plus "mirror": {"cluster": "etcd"} and the `etcd` cluster of
               envoy/mirror.yaml (its one endpoint that member)
  ip-follower  a fourth Envoy with the `ip` profile and the same mirror, without wrk: its table
               is filled by its watcher from the `ip` Envoy's writes. Its only traffic is a
               probe per sample: the address sent to the `ip` Envoy at the previous sample
               (192.168.x.y, outside wrk's window) must reach the server the `ip` Envoy chose.

Each sample then also reads, per mirrored Envoy, `mirror_put`, `mirror_event`, `mirror_error`,
`mirror_connected`, and from etcd: its VmRSS, db size (total and in use, /metrics
`etcd_mvcc_db_total_size_in_bytes`, `etcd_mvcc_db_total_size_in_use_in_bytes`), the keys under
/persist/ip/ and /persist/app/, the leases alive, the revisions kept, its Go heap in use and raft
entries applied; the verdict also shows each mirrored Envoy's `cluster.etcd.*` request, timeout and
reset stats (Envoy keeps none per gRPC method). After wrk has ended, one more sample 3 s later
(counters settled). Further checks:

  - every mirrored Envoy: `mirror_connected` 1 in every sample, `mirror_error` 0 at the end;
  - no write missed by a watcher: at the end, each watcher's `mirror_event` equals the puts of
    its prefix (`ip`: the `ip` and `ip-follower` Envoys' `mirror_put`; `app`: its own);
  - ip-follower: `mirror_event` rose in every interval while the `ip` Envoy was loaded; its
    `entries` at least --track-ratio of the `ip` Envoy's in every sample of the window; every
    probe reached the server the `ip` Envoy chose;
  - etcd still running, no panic in its log; its VmRSS and db size in use level off: over the
    window, the maximum of its second half at most --etcd-slack-mib above that of its first
    half (etcd grows while keys accumulate within the leases' lifetime, then must not).
    etcd also keeps its raft log in memory until a snapshot, every --snapshot-count entries
    (etcd's default 100,000: about 40 minutes of this load, ~42 entries/s). With that default its
    VmRSS (and Go heap) kept rising through 600 s runs (25 -> 79 MiB) while keys, leases and the
    db in use were flat; with --etcd-snapshot-count 2000 it levelled off at ~58 MiB from ~210 s.
    So --mirror runs etcd with --snapshot-count 2000 by default (0: etcd's own default).

Exit 1 when a check fails. Only 127.0.0.1 is used; every wait is bounded; every process
started is stopped, also on Ctrl-C.
"""

import argparse
import base64
import http.client
import json
import os
import re
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
GAUGE = {"cookie": False, "ip": True, "app": True, "ip-follower": True}

# --mirror: these profiles' tables go through etcd; the follower has the `ip` profile, no wrk.
MIRRORED = ("ip", "app")
FOLLOWER = "ip-follower"
PROFILE_OF = {"cookie": "cookie", "ip": "ip", "app": "app", FOLLOWER: "ip"}
ETCD_PREFIXES = ("ip", "app")  # keys under /persist/<profile>/ (the default mirror.prefix)


# mirror.secret: one per run, the same for every mirrored Envoy (they share their keys' names).
MIRROR_SECRET = base64.b64encode(os.urandom(32)).decode()


def mirrored_plugin(plugin):
    """The plugin JSON with "mirror": {"cluster": "etcd", "secret": ...} (prefix and timeout:
    defaults)."""
    doc = json.loads(plugin)
    doc["mirror"] = {"cluster": "etcd", "secret": MIRROR_SECRET}
    return json.dumps(doc)


ETCD_CALL_STATS = re.compile(
    r"^(upstream_rq_(total|[2-5]xx|timeout|per_try_timeout|rx_reset|tx_reset|cancelled|pending_overflow"
    r"|pending_failure_eject)|upstream_cx_(total|connect_fail|connect_timeout|destroy_(local|remote)_with_active_rq"
    r"|overflow|protocol_error)|health_check\.failure|http2\.(rx_reset|tx_reset|stream_refused_errors))$")


def etcd_call_stats(envoy):
    """The Envoy's stats of its `etcd` cluster that tell its calls to etcd and their failures
    (requests by class, timeouts, resets, connections; Envoy keeps no per-gRPC-method stats for
    these calls): short names, only the non-zero ones."""
    pre = "cluster.etcd."
    return {k[len(pre):]: v for k, v in envoy.all_stats("^cluster\\.etcd\\.").items()
            if v and ETCD_CALL_STATS.match(k[len(pre):])}


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
    ap.add_argument("--mirror", action="store_true",
                    help="mirror the ip and app tables through one etcd member; add the ip-follower Envoy")
    ap.add_argument("--etcd-compaction", default="1m",
                    help="with --mirror: etcd --auto-compaction-retention (periodic mode); 0: none (default 1m)")
    ap.add_argument("--etcd-snapshot-count", type=int, default=2000,
                    help="with --mirror: etcd --snapshot-count (default 2000; 0: etcd's default, 100000); etcd keeps "
                         "its raft log in memory until a snapshot")
    ap.add_argument("--etcd-slack-mib", type=float, default=4.0,
                    help="with --mirror: growth of etcd's VmRSS and db size in use between the window's halves "
                         "that still counts as levelled off")
    ap.add_argument("--track-ratio", type=float, default=0.9,
                    help="with --mirror: the follower's entries at least this share of the ip Envoy's")
    args = ap.parse_args(argv)
    if args.mirror:
        L.check_etcd_tools()
        L.yaml_module()
    return L.run_with_output(args, run)


def run(args, out):
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    backend_ports = [L.free_port() for _ in range(3)]
    names = list(PROFILES)  # the Envoys driven by wrk
    all_names = names + ([FOLLOWER] if args.mirror else [])
    mirrored = [n for n in all_names if n in MIRRORED or n == FOLLOWER] if args.mirror else []
    ports = {n: L.free_port() for n in all_names}
    plugins = {n: mirrored_plugin(PROFILES[n][0]) if n in mirrored else PROFILES[n][0] for n in names}
    out(f"soak: {args.seconds:.0f} s of mixed load, sampled every {args.interval:.0f} s\n"
        f"started {L.now_utc()}\nenvoy: {L.envoy_bin()}\n"
        f"module: {L.wasm_path()} ({L.wasm_path().stat().st_size} bytes)\n"
        f"{'four' if args.mirror else 'three'} Envoys under test (--concurrency {args.concurrency}), "
        f"{'three of them ' if args.mirror else ''}each: wrk -t 1 -c {args.connections}, "
        f"delay() {args.delay_ms} ms per request; one backend Envoy, listeners b0 b1 b2; work dir {workdir}")
    for n in names:
        out(f"  {n:<6} {plugins[n]}")
    etcd_args = []
    if args.mirror:
        if args.etcd_compaction not in ("", "0"):
            etcd_args = ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", args.etcd_compaction]
        if args.etcd_snapshot_count:
            etcd_args += ["--snapshot-count", str(args.etcd_snapshot_count)]
        out(f"  {FOLLOWER} the ip profile with the same mirror, no wrk: one probe per sample\n"
            f"mirror: one etcd member ({L.etcd_bin()}, data in the work dir, "
            f"{' '.join(etcd_args) or 'no extra flags: no auto-compaction'}); the ip, app and {FOLLOWER} Envoys "
            f"with \"mirror\": {{\"cluster\": \"etcd\"}} and the etcd cluster of envoy/mirror.yaml")
    with L.Cleanup() as clean:
        backend = clean.add(L.Envoy("backend", lambda a: L.backend_yaml(backend_ports, a), workdir, 1))
        backend.start()
        etcd = None
        if args.mirror:
            etcd = clean.add(L.Etcd(workdir, etcd_args))
            etcd.start()
        envoys = {}
        for n in all_names:
            plugin, hops = PROFILES[PROFILE_OF[n]]
            if n in mirrored:
                plugin = mirrored_plugin(plugin)
            etcd_port = etcd.client_port if n in mirrored else None
            envoys[n] = clean.add(L.Envoy(n, lambda a, n=n, plugin=plugin, hops=hops, etcd_port=etcd_port:
                                          L.proxy_yaml(ports[n], a, backend_ports, plugin, xff_hops=hops,
                                                       etcd_port=etcd_port),
                                          workdir, args.concurrency))
            envoys[n].start()

        def mstats(n):
            return envoys[n].persist(PROFILE_OF[n])

        if mirrored and not L.wait_until(lambda: all(mstats(n).get("mirror_connected", 0) == 1 for n in mirrored),
                                         30, 0.2):
            raise RuntimeError("mirror_connected not 1 on every mirrored Envoy within 30 s: "
                               + ", ".join(f"{n}={mstats(n).get('mirror_connected')}" for n in mirrored)
                               + f"\netcd log:\n{etcd.tail()}")

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
        fprobes = []  # (address, the ip Envoy's server, the follower's status, the follower's server)
        pending = []  # the address sent to the ip Envoy at the last sample, and its server
        wrks = {}
        t0 = time.monotonic()

        def follower_probe():
            if pending:
                addr, want = pending.pop()
                st, got, _ = http_get(ports[FOLLOWER], "/probe", {"X-Forwarded-For": addr})
                fprobes.append((addr, want, st, got))
            k = len(samples)
            addr = f"192.168.{k // 256 % 256}.{k % 256}"
            st, be, _ = http_get(ports["ip"], "/probe", {"X-Forwarded-For": addr})
            if st == 200:
                pending.append((addr, be))
            else:
                fprobes.append((addr, f"(ip Envoy answered {st})", None, None))

        def sample():
            t = time.monotonic() - t0
            row = {"t": t, "ip_loaded": "ip" in wrks and wrks["ip"].poll() is None}
            for n, e in envoys.items():
                if e.proc.poll() is not None:
                    raise RuntimeError(f"Envoy {n} exited:\n{e.tail()}")
                wm = e.wasm_memory()
                active, bad = L.wasm_health(e)
                rq = e.all_stats("^http\\.ingress_http\\.downstream_rq_total$").get(
                    "http.ingress_http.downstream_rq_total", 0)
                row[n] = {"rss": e.rss(), "wasm": wm[1], "wasm_rss": wm[2], "vms": wm[0], "active": active,
                          "bad": bad, "rq": rq, "stats": e.persist(PROFILE_OF[n])}
                if n in mirrored:  # Envoy's side of the etcd calls: which ones failed, when
                    row[n]["etcd_cluster"] = etcd_call_stats(e)
            if etcd is not None:
                if etcd.proc.poll() is not None:
                    raise RuntimeError(f"etcd exited ({etcd.proc.returncode}):\n{etcd.tail()}")
                m = etcd.metrics()
                row["etcd"] = {"rss": L.rss_bytes(etcd.proc.pid), "cpu": L.cpu_s(etcd.proc.pid),
                               "db": L.metric(m, "etcd_mvcc_db_total_size_in_bytes"),
                               "use": L.metric(m, "etcd_mvcc_db_total_size_in_use_in_bytes"),
                               "keys": {p: etcd.key_count(f"/persist/{p}/") for p in ETCD_PREFIXES},
                               "leases": etcd.lease_count(),
                               "rev": L.metric(m, "etcd_debugging_mvcc_current_revision"),
                               "compacted": L.metric(m, "etcd_debugging_mvcc_compact_revision"),
                               "compactions": L.metric(m, "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds_count"),
                               "slow_watchers": L.metric(m, "etcd_debugging_mvcc_slow_watcher_total"),
                               "heap": L.metric(m, "go_memstats_heap_inuse_bytes"),
                               "goroutines": L.metric(m, "go_goroutines"),
                               "watchers": L.metric(m, "etcd_debugging_mvcc_watcher_total"),
                               "applied": L.metric(m, "etcd_server_proposals_applied_total"),
                               "snapshots": L.metric(m, "etcd_debugging_snap_save_total_duration_seconds_count")}
            status, be, _ = http_get(ports["cookie"], "/probe", {"Cookie": f"persist={steady}"})
            probes.append((status, be))
            if args.mirror:
                follower_probe()
            samples.append(row)
            prev = samples[-2] if len(samples) > 1 else None
            cells = [f"{t:6.0f}"]
            for n in all_names:
                r = row[n]
                rate = (r["rq"] - prev[n]["rq"]) / (t - prev["t"]) if prev else 0.0
                entries = f"{r['stats'].get('entries', 0):>6}" if GAUGE[n] else f"{'-':>6}"
                cells.append(f"{rate:6.0f} {L.mib(r['rss']):>7} {L.mib(r['wasm']):>5} {entries}")
            out(" | ".join(cells))
            if args.mirror:
                cells = [f"{'':6}"]
                for n in mirrored:
                    st = row[n]["stats"]
                    cells.append(f"{st.get('mirror_put', 0):>8} {st.get('mirror_event', 0):>8} "
                                 f"{st.get('mirror_error', 0):>4} {st.get('mirror_connected', 0):>4}")
                ed = row["etcd"]
                cells.append(f"{L.mib(ed['rss']):>7} {L.mib(ed['use']):>7} {L.mib(ed['db']):>7} "
                             + " ".join(f"{ed['keys'][p]:>6}" for p in ETCD_PREFIXES) + f" {ed['leases']:>6} "
                             f"{ed['rev'] - max(ed['compacted'], 0):>7.0f} {L.mib(ed['heap']):>6} {ed['applied']:>7.0f}")
                out(" | ".join(cells))

        hdr = f"{'':6} | " + " | ".join(f"{n:<27}" for n in all_names)
        out(hdr)
        out(f"{'t(s)':>6} | " + " | ".join(f"{'req/s':>6} {'RSS MiB':>7} {'wasm':>5} {'entries':>6}"
                                            for _ in all_names))
        if args.mirror:
            out(f"{'':6} | " + " | ".join(f"{n + ' mirror':<27}" for n in mirrored) + " | etcd (MiB; keys under "
                + ", ".join(f"/persist/{p}/" for p in ETCD_PREFIXES) + ")")
            out(f"{'':6} | " + " | ".join(f"{'put':>8} {'event':>8} {'err':>4} {'conn':>4}" for _ in mirrored)
                + f" | {'VmRSS':>7} {'db use':>7} {'db':>7} " + " ".join(f"{p + '-k':>6}" for p in ETCD_PREFIXES)
                + f" {'leases':>6} {'revs':>7} {'heap':>6} {'raft':>7}")
            out(f"{'':6}   (revs: the revisions etcd keeps, current minus compacted; heap: Go heap in use, MiB; "
                f"raft: entries applied)")
        sample()
        for n in names:
            (workdir / f"{n}.lua").write_text(LUA_COMMON + LUA[n])
            wrks[n] = clean.add(L.start_wrk(ports[n], workdir / f"{n}.lua", workdir, f"wrk-{n}", 1,
                                            args.connections, args.seconds, args=lua_args[n]))
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
        if args.mirror:
            time.sleep(3.0)  # counters are flushed once a second, writes every 100 ms
            sample()
        wrk_sum = {n: L.wrk_summary((workdir / f"wrk-{n}.out").read_text(errors="replace")) for n in names}
        log_bad = {n: L.log_problems(e) for n, e in envoys.items()}
        etcd_log_bad = []
        if etcd is not None:
            etcd_log_bad = [ln for ln in etcd.log.read_text(errors="replace").splitlines()
                            if "panic" in ln.lower() or '"level":"fatal"' in ln]
            etcd_alive = etcd.proc.poll() is None

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
    for n in all_names:
        first, last = samples[0][n], samples[-1][n]
        base = win[0][n]
        if n in wrk_sum:
            w = wrk_sum[n]
            out(f"\n{n}: wrk {w['requests']} requests in {w['seconds'] or 0:.1f}s "
                f"({(w['requests'] or 0) / (w['seconds'] or 1):,.0f}/s), non-2xx {w['non2xx']}, "
                f"socket errors: {w['socket_detail']}")
        else:
            out(f"\n{n}: no wrk; {last['rq']} requests (probes)")
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
        if n in wrk_sum:
            check(w["requests"] is not None and w["non2xx"] == 0 and w["socket_errors"] == 0,
                  f"{n}: non-2xx {w['non2xx']}, socket errors {w['socket_errors']}")
        check(last["stats"].get("error", 0) == 0, f"{n}: `error` counter {last['stats'].get('error', 0)}")
        actives = sorted({s[n]["active"] for s in samples})
        bad = last["bad"]
        check(len(actives) == 1 and not bad and not log_bad[n],
              f"{n}: wasm VMs: v8.active {actives}, reload/failure stats {bad or 'all 0'}, "
              f"log problems {len(log_bad[n])}" + (f" e.g. {log_bad[n][0][:200]}" if log_bad[n] else ""))
        if n in mirrored:
            st = last["stats"]
            conns = [s[n]["stats"].get("mirror_connected", 0) for s in samples]
            out(f"  mirror at the end: put {st.get('mirror_put', 0)}, event {st.get('mirror_event', 0)}, "
                f"error {st.get('mirror_error', 0)}, connected {st.get('mirror_connected', 0)}")
            check(all(c == 1 for c in conns),
                  f"{n}: mirror_connected 1 in every sample: {sum(c == 1 for c in conns)}/{len(conns)}"
                  + ("" if all(c == 1 for c in conns) else f" (values {sorted(set(conns))})"))
            calls = last["etcd_cluster"]
            out(f"  Envoy's etcd cluster at the end: " + ", ".join(f"{k} {v}" for k, v in sorted(calls.items())))
            errs = [(s["t"], s[n]["stats"].get("mirror_error", 0)) for s in samples]
            rises = [f"t={t:.0f}s +{b - a}" for (_, a), (t, b) in zip(errs, errs[1:]) if b > a]
            check(st.get("mirror_error", 0) == 0, f"{n}: mirror_error {st.get('mirror_error', 0)}"
                  + (f" (rose by: {', '.join(rises[:10])})" if rises else ""))
            # The puts of this Envoy's prefix: every Envoy writing under it.
            writers = [m for m in mirrored if PROFILE_OF[m] == PROFILE_OF[n]]
            puts = sum(last_m.get("mirror_put", 0) for last_m in (samples[-1][m]["stats"] for m in writers))
            ev = st.get("mirror_event", 0)
            check(ev == puts and puts > 0,
                  f"{n}: mirror_event {ev} = puts under /persist/{PROFILE_OF[n]}/ {puts} "
                  f"({' + '.join(writers)}; difference {ev - puts:+d})")

    if args.mirror:
        out(f"\n{FOLLOWER} vs ip:")
        loaded = [(a, b) for a, b in zip(samples, samples[1:]) if b["ip_loaded"]]
        flat = [f"t={b['t']:.0f}s" for a, b in loaded
                if b[FOLLOWER]["stats"].get("mirror_event", 0) <= a[FOLLOWER]["stats"].get("mirror_event", 0)]
        deltas = [b[FOLLOWER]["stats"].get("mirror_event", 0) - a[FOLLOWER]["stats"].get("mirror_event", 0)
                  for a, b in loaded]
        check(bool(loaded) and not flat,
              f"{FOLLOWER}: mirror_event rose in {len(loaded) - len(flat)}/{len(loaded)} intervals under load "
              f"(per interval min {min(deltas, default=0)}, max {max(deltas, default=0)})"
              + (f"; not at {', '.join(flat[:10])}" if flat else ""))
        ratios = [(s["t"], s[FOLLOWER]["stats"].get("entries", 0), s["ip"]["stats"].get("entries", 0)) for s in win]
        low = [(t, f, i) for t, f, i in ratios if f < args.track_ratio * i]
        whole = [s[FOLLOWER]["stats"].get("entries", 0) / max(1, s["ip"]["stats"].get("entries", 0))
                 for s in samples if s["ip_loaded"]]
        out(f"  entries (follower/ip) over the whole load: min {min(whole, default=0):.3f}, "
            f"max {max(whole, default=0):.3f}")
        check(not low, f"{FOLLOWER}: entries at least {args.track_ratio:.0%} of the ip Envoy's in "
                       f"{len(ratios) - len(low)}/{len(ratios)} samples of the window "
                       f"(follower/ip: {', '.join(f'{f}/{i}' for _, f, i in ratios[:3])} ... "
                       f"{', '.join(f'{f}/{i}' for _, f, i in ratios[-2:])})"
              + (f"; below at {', '.join(f't={t:.0f}s {f}/{i}' for t, f, i in low[:5])}" if low else ""))
        good = sum(1 for _, want, st, got in fprobes if st == 200 and got == want)
        check(bool(fprobes) and good == len(fprobes),
              f"{FOLLOWER}: an address bound by the ip Envoy reached the same server through the follower "
              f"{good}/{len(fprobes)} times"
              + "".join(f"; {a}: ip {want}, follower {st} {got}" for a, want, st, got in fprobes
                        if not (st == 200 and got == want))[:600])

        out("\netcd:")
        E = [s["etcd"] for s in samples]
        Ew = [s["etcd"] for s in win]
        half = len(Ew) // 2
        out(f"  VmRSS: start {L.mib(E[0]['rss'])}, window start {L.mib(Ew[0]['rss'])}, end {L.mib(E[-1]['rss'])}, "
            f"max {L.mib(max(e['rss'] for e in E))} MiB; CPU {E[-1]['cpu'] - E[0]['cpu']:.1f} s")
        out(f"  db size in use: start {L.mib(E[0]['use'])}, window start {L.mib(Ew[0]['use'])}, "
            f"end {L.mib(E[-1]['use'])}, max {L.mib(max(e['use'] for e in E))} MiB; "
            f"db total: start {L.mib(E[0]['db'])}, end {L.mib(E[-1]['db'])} MiB")
        for p in ETCD_PREFIXES:
            out(f"  keys under /persist/{p}/: window start {Ew[0]['keys'][p]}, end {E[-1]['keys'][p]}, "
                f"max {max(e['keys'][p] for e in E)}")
        out(f"  leases alive: max {max(e['leases'] or 0 for e in E)}, end {E[-1]['leases']}")
        out(f"  revisions: current {E[-1]['rev']:.0f}, compacted up to {E[-1]['compacted']:.0f} "
            f"({E[-1]['compactions']:.0f} compactions); slow watchers {E[-1]['slow_watchers']:.0f}")
        out(f"  Go heap in use: start {L.mib(E[0]['heap'])}, window start {L.mib(Ew[0]['heap'])}, "
            f"end {L.mib(E[-1]['heap'])}, max {L.mib(max(e['heap'] for e in E))} MiB; goroutines "
            f"{E[0]['goroutines']:.0f} -> {Ew[0]['goroutines']:.0f} -> {E[-1]['goroutines']:.0f}; watchers "
            f"{E[-1]['watchers']:.0f}; raft entries applied {E[-1]['applied']:.0f}, snapshots "
            f"{E[-1]['snapshots']:.0f} (etcd keeps its raft log in memory up to a snapshot, every "
            f"--snapshot-count entries: {args.etcd_snapshot_count or 'its default, 100000'})")
        eslack = args.etcd_slack_mib * L.MiB
        for key, what in (("rss", "VmRSS"), ("use", "db size in use")):
            a, b = max(e[key] for e in Ew[:half]), max(e[key] for e in Ew[half:])
            check(half > 0 and b - a <= eslack,
                  f"etcd: {what} levelled off: max of the window's second half {L.mib(b)} MiB, of its first half "
                  f"{L.mib(a)} MiB ({(b - a) / L.MiB:+.1f} MiB; slack {args.etcd_slack_mib} MiB)")
        check(etcd_alive and not etcd_log_bad,
              f"etcd: running at the end {etcd_alive}, panics in its log {len(etcd_log_bad)}"
              + (f" e.g. {etcd_log_bad[0][:200]}" if etcd_log_bad else ""))
    kept = sum(1 for st, be in probes if st == 200 and be == probe_backend)
    out("")
    check(kept == len(probes), f"cookie: the steady cookie's probe reached {probe_backend} {kept}/{len(probes)} times")
    ok = all(checks)
    out(f"\nresult: {'PASS' if ok else 'FAIL'} ({L.now_utc()})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
