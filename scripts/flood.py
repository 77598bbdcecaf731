#!/usr/bin/env python3
"""Flood of distinct keys against a small persist table: memory must stay bounded.

Run by `make flood` (not part of `make test`):
    ENVOY_BIN=... PERSIST_WASM=target/wasm32-wasip1/release/envoy_persist.wasm \\
        python scripts/flood.py [--keys 1000000] [--max-entries 10000] [--out FILE]

Starts a backend Envoy (direct_response listeners: fast, no Python in the data path) and the
Envoy under test (--concurrency 2) with the built module: one client_ip profile with
max_entries 10000 (the client address from X-Forwarded-For, the listener trusting one hop,
as envoy/client-ip.yaml does). wrk then sends --keys distinct client addresses (10.x.y.z), one
new key per request over keep-alive connections (table_memory.py's wrk script). Every
--interval seconds it samples: requests received (sent(req), about the keys sent so far),
the profile's `new`, `entries` gauge,
`evicted`, `expired`, `error`, the Envoy's VmRSS and the wasm VMs' linear memory
(/proc/<pid>/smaps). It prints the curve and a verdict:

  - the `entries` gauge never above max_entries;
  - RSS flat once the table is full (gauge >= 99% of max_entries): the end and the maximum
    are at most --rss-slack-mib above the RSS at that moment;
  - every key sent (wrk's request count >= --keys), no non-2xx answer, no socket error;
  - `error` counter 0, the wasm VMs alive (no reload/failure stat, no "panicked" in the log).

Exit 1 when a check fails. Only 127.0.0.1 is used; every wait is bounded; every process
started is stopped, also on Ctrl-C.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadlib as L  # noqa: E402

PROFILE = "flood"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000, help="distinct client addresses to send")
    ap.add_argument("--max-entries", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=2, help="workers of the Envoy under test")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--rss-slack-mib", type=float, default=4.0,
                    help="RSS growth after the table filled that still counts as flat")
    ap.add_argument("--max-seconds", type=float, default=900, help="give up after this long")
    ap.add_argument("--out", help="also write the output to this file")
    return L.run_with_output(ap.parse_args(argv), run)


def run(args, out):
    workdir = Path(tempfile.mkdtemp(prefix="flood-"))
    backend_ports = [L.free_port() for _ in range(3)]
    port = L.free_port()
    plugin = ('{"name": "%s", "type": "client_ip", "timeout": "20m", "max_entries": %d}'
              % (PROFILE, args.max_entries))
    out(f"flood: {args.keys:,} distinct client addresses (X-Forwarded-For, xff_num_trusted_hops: 1)\n"
        f"started {L.now_utc()}\nenvoy: {L.envoy_bin()}\n"
        f"module: {L.wasm_path()} ({L.wasm_path().stat().st_size} bytes)\nprofile: {plugin}\n"
        f"Envoy under test --concurrency {args.concurrency}; wrk -t {args.threads} -c {args.connections}; "
        f"backend: one Envoy, {len(backend_ports)} direct_response listeners; work dir {workdir}")
    with L.Cleanup() as clean:
        backend = clean.add(L.Envoy("backend", lambda a: L.backend_yaml(backend_ports, a), workdir, 1))
        backend.start()
        proxy = clean.add(L.Envoy("proxy", lambda a: L.proxy_yaml(port, a, backend_ports, plugin, xff_hops=1),
                                  workdir, args.concurrency))
        proxy.start()
        time.sleep(1.5)
        rss0 = proxy.rss()
        active0, _ = L.wasm_health(proxy)
        wm0 = proxy.wasm_memory()
        out(f"start: VmRSS {L.mib(rss0)} MiB; wasm VMs {wm0[0]}, linear memory {L.mib(wm0[1])} MiB "
            f"({L.mib(wm0[2])} MiB resident); wasm.envoy.wasm.runtime.v8.active {active0}\n")

        threads = args.threads
        quota = args.keys // threads
        if quota * threads != args.keys:
            out(f"note: {args.keys} keys rounded down to {quota * threads} ({threads} wrk threads)")
        lua = L.keys_lua(workdir)
        # Key indices 0 .. keys-1 (10.0.0.0 upwards); thread 0's first request (never sent by
        # wrk, which only checks it) gets a key far away, table_memory.WARM_BASE.
        wrk = clean.add(L.start_wrk(port, lua, workdir, "wrk", threads, args.connections, args.max_seconds,
                                    args=(0, quota, "client_ip", 24, L.tm.WARM_BASE)))

        header = (f"{'t(s)':>6} {'sent(req)':>10} {'new':>10} {'entries':>8} {'evicted':>10} {'expired':>8} "
                  f"{'error':>6} {'RSS MiB':>8} {'wasm MiB':>9}")
        out(header)
        rows = []
        t0 = time.monotonic()
        deadline = t0 + args.max_seconds
        tail = 0  # samples taken after wrk ended (the gauges flush once a second)

        def sample():
            s = proxy.persist(PROFILE)
            rq = proxy.all_stats("^http\\.ingress_http\\.downstream_rq_total$").get(
                "http.ingress_http.downstream_rq_total", 0)
            wm = proxy.wasm_memory()
            row = {"t": time.monotonic() - t0, "requests": rq, "rss": proxy.rss(), "wasm": wm[1], "wasm_rss": wm[2],
                   **{k: s.get(k, 0) for k in ("new", "entries", "evicted", "expired", "error", "hit", "miss")}}
            rows.append(row)
            out(f"{row['t']:6.1f} {rq:>10,} {row['new']:>10,} {row['entries']:>8,} {row['evicted']:>10,} "
                f"{row['expired']:>8,} {row['error']:>6} {L.mib(row['rss']):>8} {L.mib(row['wasm']):>9}")

        next_t = time.monotonic() + args.interval
        while True:
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += args.interval
            if proxy.proc.poll() is not None:
                raise RuntimeError(f"Envoy under test exited:\n{proxy.tail()}")
            sample()
            # wrk's threads stop themselves once their keys are answered, but wrk itself waits
            # out its -d: interrupt it (it then prints its summary) once the requests stop.
            if (wrk.poll() is None and len(rows) >= 2 and rows[-1]["requests"] >= args.keys
                    and rows[-1]["requests"] == rows[-2]["requests"]):
                L.stop_popen(wrk)
            if wrk.poll() is not None:
                tail += 1
                if tail >= 2:
                    break
            elif time.monotonic() > deadline:
                out(f"wrk still running after {args.max_seconds}s: stopped")
                L.stop_popen(wrk)
        w = L.wrk_summary((workdir / "wrk.out").read_text(errors="replace"))
        active1, bad_wasm = L.wasm_health(proxy)
        log_bad = L.log_problems(proxy)

    # --- verdict --------------------------------------------------------------------------------
    last = rows[-1]
    max_entries_seen = max(r["entries"] for r in rows)
    fill = next((r for r in rows if r["entries"] >= 0.99 * args.max_entries), None)
    checks = []

    def check(ok, text):
        checks.append(ok)
        out(f"  [{'ok' if ok else 'FAIL'}] {text}")

    out(f"\nwrk: {w['requests']} requests in {w['seconds'] or 0:.1f}s "
        f"({(w['requests'] or 0) / (w['seconds'] or 1):,.0f}/s); non-2xx {w['non2xx']}; socket errors: "
        f"{w['socket_detail']}")
    out(f"final stats: { {k: last[k] for k in ('new', 'hit', 'miss', 'entries', 'evicted', 'expired', 'error')} }")
    out(f"wasm: v8.active {active0} -> {active1}; linear memory {L.mib(wm0[1])} -> {L.mib(last['wasm'])} MiB "
        f"(resident {L.mib(wm0[2])} -> {L.mib(last['wasm_rss'])} MiB)")
    out("\nverdict:")
    check(max_entries_seen <= args.max_entries,
          f"entries gauge max {max_entries_seen:,} <= max_entries {args.max_entries:,}")
    if fill is None:
        check(False, "the table never filled (gauge never reached 99% of max_entries)")
    else:
        after = [r for r in rows if r["t"] >= fill["t"]]
        peak = max(after, key=lambda r: r["rss"])
        grow_end = last["rss"] - fill["rss"]
        grow_max = peak["rss"] - fill["rss"]
        slack = args.rss_slack_mib * L.MiB
        check(grow_end <= slack and grow_max <= slack,
              f"RSS flat after the table filled: at fill (t={fill['t']:.0f}s, {fill['requests']:,} requests) "
              f"{L.mib(fill['rss'])} MiB, at the end {L.mib(last['rss'])} MiB ({grow_end / L.MiB:+.1f}), "
              f"max {L.mib(peak['rss'])} MiB at t={peak['t']:.0f}s ({grow_max / L.MiB:+.1f}); "
              f"slack {args.rss_slack_mib} MiB; start {L.mib(rss0)} MiB")
        check(last["wasm"] - fill["wasm"] <= slack,
              f"wasm linear memory flat after the fill: {L.mib(fill['wasm'])} -> {L.mib(last['wasm'])} MiB")
    sent = (w["requests"] or 0)
    check(sent >= quota * threads, f"every key sent: wrk {sent:,} requests >= {quota * threads:,} keys "
                                   f"(`new` {last['new']:,}, evicted {last['evicted']:,})")
    check(w["non2xx"] == 0, f"non-2xx answers: {w['non2xx']}")
    check(w["socket_errors"] == 0, f"socket errors: {w['socket_detail']}")
    check(last["error"] == 0, f"`error` counter: {last['error']}")
    check(active1 == active0 and not bad_wasm and not log_bad,
          f"wasm VMs alive: v8.active {active0} -> {active1}, reload/failure stats {bad_wasm or 'all 0'}, "
          f"log problems {len(log_bad)}" + (f" e.g. {log_bad[0][:200]}" if log_bad else ""))
    ok = all(checks)
    out(f"\nresult: {'PASS' if ok else 'FAIL'} ({L.now_utc()})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
