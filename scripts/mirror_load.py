#!/usr/bin/env python3
"""Sizing of the etcd mirror (SPEC 2.4): what one etcd member carries when every request
creates a new binding.

    .venv/bin/python scripts/mirror_load.py [--envoys 2] [--duration 20] [--connections 16]
                                            [--out FILE.md] [--no-baseline]

Starts, all on 127.0.0.1 with free ports and a temporary directory (removed at the end):
  - one etcd v3 member (ETCD_BIN, default `etcd` on PATH; its data dir in the temp dir,
    `--quota-backend-bytes` left at its default);
  - three backends: tests/backend.py (or, with `--backends envoy`, one Envoy of
    direct_response listeners, which costs less CPU);
  - N Envoys (`--envoys`, default 2, each `--concurrency 2`) with the built module
    (PERSIST_WASM, default target/wasm32-wasip1/release/envoy_persist.wasm; `make build`),
    their configuration envoy/mirror.yaml with only ports, the module path, the etcd
    endpoint and the plugin's `timeout` ("20m") and `max_entries` (2,000,000) changed.
Envoy A (the first) is driven by wrk (`-t2 -c<connections>`, `--duration` seconds) with a
Lua script that sends a new x-user value on every request, so every request is a new
binding, i.e. one key put into etcd. The other Envoys get no traffic: their watchers
follow etcd. When wrk ends, the script polls until A's writer has drained and every other
Envoy's watcher has seen all of A's puts (at most --settle seconds).

Reported (measured): client req/s, non-2xx and latency; A's `mirror_put` (keys etcd
acknowledged) and `mirror_error`; from etcd's /metrics: Txn RPCs, puts, raft proposals,
WAL fsyncs, backend commits, db size (total and in use) before and after, hence bytes per
key; etcd's VmRSS and CPU; `etcdctl lease list` and the key count under the prefix; each
other Envoy's `mirror_event` lag at the end of the load and its time to converge; CPU
seconds per 1000 requests of A. Unless --no-baseline, a second round runs A alone with
the same plugin JSON without "mirror" (etcd and the other Envoys stopped) for the CPU and
req/s comparison.

Every figure is printed as measured; nothing is asserted. Every wait is bounded; every
process started is stopped on exit, on exceptions, Ctrl-C and SIGTERM.
"""

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadlib as ll  # noqa: E402  (Envoy wrapper, Cleanup, wrk summary, tool checks)

try:
    import yaml  # tests/requirements.txt (PyYAML)
except ImportError:  # pragma: no cover - told at once, not as a traceback
    sys.exit("PyYAML missing: run with .venv/bin/python (make venv) or pip install PyYAML")

ROOT = ll.ROOT
LOCAL = ll.LOCAL
MIRROR_YAML = ll.MIRROR_YAML
BACKEND_PY = ROOT / "tests" / "backend.py"
PROFILE = "users"  # the profile name in envoy/mirror.yaml

# Shared with scripts/soak.py --mirror (scripts/loadlib.py): ports, /proc readings, etcd.
free_port = ll.free_port
wait_until = ll.wait_until
cpu_s = ll.cpu_s
rss_bytes = ll.rss_bytes
etcd_bin = ll.etcd_bin
etcdctl_bin = ll.etcdctl_bin
Etcd = ll.Etcd
metric = ll.metric


def wait_port(port, proc, what, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((LOCAL, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: port {port} not open after {timeout}s")


# --- Envoy configuration, derived from envoy/mirror.yaml ----------------------------------------

def envoy_yaml(port, admin, backend_ports, etcd_port, mirror, timeout, max_entries):
    """envoy/mirror.yaml with ports, module path, etcd endpoint and plugin timeout/max_entries
    patched; without `mirror`, the plugin JSON loses "mirror" and the etcd cluster goes."""
    doc = yaml.safe_load(MIRROR_YAML.read_text())
    doc["admin"]["address"]["socket_address"].update(address=LOCAL, port_value=admin)
    sr = doc["static_resources"]
    (listener,) = sr["listeners"]
    listener["address"]["socket_address"].update(address=LOCAL, port_value=port)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    cfg = wasm["typed_config"]["config"]
    cfg["vm_config"]["code"]["local"]["filename"] = str(ll.wasm_path())
    plugin = json.loads(cfg["configuration"]["value"])
    assert plugin["name"] == PROFILE and "mirror" in plugin, plugin
    plugin["timeout"] = timeout
    plugin["max_entries"] = max_entries
    if not mirror:
        del plugin["mirror"]
    cfg["configuration"]["value"] = json.dumps(plugin)
    clusters = {c["name"]: c for c in sr["clusters"]}
    clusters["backends"]["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": LOCAL, "port_value": p}}}} for p in backend_ports]}]
    etcd_cluster = plugin.get("mirror", {}).get("cluster", "etcd")
    if mirror:
        sr["clusters"] = [ll.etcd_cluster(etcd_port, etcd_cluster) if c["name"] == etcd_cluster else c
                          for c in sr["clusters"]]
    else:
        sr["clusters"] = [c for c in sr["clusters"] if c["name"] != etcd_cluster]
    return yaml.safe_dump(doc, sort_keys=False), plugin


# --- load -------------------------------------------------------------------------------------

WRK_LUA = r"""
-- Every request a new x-user value: a random token per thread (drawn in init) followed by
-- the thread id and a per-thread counter, so no two requests of a run share a key.
local count = 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
end
function init(args)
  math.randomseed(os.time() + tid * 7919 + math.floor(os.clock() * 1000000))
  token = string.format("%06x%06x", math.random(0, 16777215), math.random(0, 16777215))
  n = 0
end
function request()
  n = n + 1
  return wrk.format("GET", "/", {["x-user"] = string.format("u%s.%d.%d", token, tid, n)})
end
"""


def wrk_latency(text):
    """wrk --latency: average and 99th percentile, as printed (e.g. '3.21ms')."""
    avg = re.search(r"^\s+Latency\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    return (avg.group(1) if avg else "?"), (p99.group(1) if p99 else "?")


def start_wrk(port, lua, workdir, name, threads, conns, seconds):
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{int(seconds)}s", "--timeout", "5s", "--latency",
           "-s", str(lua), f"http://{LOCAL}:{port}/"]
    out = open(workdir / f"{name}.out", "wb")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        out.close()


def warm_up(port, n, tag):
    """`n` sequential requests with new keys (connections, VMs, first leases)."""
    c = http.client.HTTPConnection(LOCAL, port, timeout=5)
    try:
        for i in range(n):
            c.request("GET", "/", headers={"x-user": f"warm.{tag}.{i}"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"warm-up request answered {r.status}")
    finally:
        c.close()


def persist(envoy):
    return envoy.persist(PROFILE)


# --- the rounds -------------------------------------------------------------------------------

class Setup:
    def __init__(self, args, workdir, cleanup):
        self.args = args
        self.workdir = workdir
        self.cleanup = cleanup
        self.backend_ports = [free_port() for _ in range(3)]
        self.lua = workdir / "new_keys.lua"
        self.lua.write_text(WRK_LUA)

    def start_backends(self):
        if self.args.backends == "envoy":
            b = ll.Envoy("backends", lambda a: ll.backend_yaml(self.backend_ports, a), self.workdir, 1)
            self.cleanup.add(b)
            b.start()
            return [b.proc.pid]
        procs = []
        for n, port in enumerate(self.backend_ports):
            log = open(self.workdir / f"backend{n}.log", "wb")
            p = subprocess.Popen([sys.executable, str(BACKEND_PY), "--port", str(port), "--name", f"b{n}",
                                  "--host", LOCAL], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            procs.append(self.cleanup.add(p))
        for n, (port, p) in enumerate(zip(self.backend_ports, procs)):
            wait_port(port, p, f"backend b{n}")
        return [p.pid for p in procs]

    def start_envoy(self, name, etcd_port, mirror):
        port = free_port()
        holder = {}

        def cfg(admin):
            text, holder["plugin"] = envoy_yaml(port, admin, self.backend_ports, etcd_port, mirror,
                                                self.args.timeout, self.args.max_entries)
            return text

        e = ll.Envoy(name, cfg, self.workdir, 2)
        e.port = port
        self.cleanup.add(e)
        e.start()
        e.plugin = holder["plugin"]
        return e


def run_load(setup, a, others, etcd, label):
    """wrk against A; samples A's mirror_put and the others' mirror_event every second.
    Returns the wrk summary, CPU readings and the samples."""
    args = setup.args
    pids = {"A": a.proc.pid, **{o.name: o.proc.pid for o in others}}
    if etcd is not None:
        pids["etcd"] = etcd.proc.pid
    cpu0 = {k: cpu_s(p) for k, p in pids.items()}
    t0 = time.monotonic()
    w = start_wrk(a.port, setup.lua, setup.workdir, f"wrk-{label}", args.threads, args.connections, args.duration)
    setup.cleanup.add(w)
    samples = []  # (t, A put, {other: event})
    try:
        end = t0 + args.duration + 30
        while w.poll() is None and time.monotonic() < end:
            time.sleep(1.0)
            if etcd is not None:  # the others first: a lag read this way is never understated
                evs = {o.name: persist(o).get("mirror_event", 0) for o in others}
                samples.append((time.monotonic() - t0, persist(a).get("mirror_put", 0), evs))
        if w.poll() is None:
            raise RuntimeError("wrk did not end in time")
    finally:
        ll.stop_popen(w)
    wall = time.monotonic() - t0
    cpu1 = {k: cpu_s(p) for k, p in pids.items()}
    text = (setup.workdir / f"wrk-{label}.out").read_text(errors="replace")
    s = ll.wrk_summary(text)
    if s["requests"] is None:
        raise RuntimeError(f"wrk printed no result:\n{text}")
    s["latency_avg"], s["latency_p99"] = wrk_latency(text)
    s["wall"] = wall
    return s, {k: cpu1[k] - cpu0[k] for k in pids}, samples


def mirror_round(setup):
    args = setup.args
    etcd = setup.cleanup.add(Etcd(setup.workdir))
    etcd.start()
    envoys = [setup.start_envoy("A" if i == 0 else chr(ord("A") + i), etcd.client_port, True)
              for i in range(args.envoys)]
    a, others = envoys[0], envoys[1:]
    prefix = a.plugin["mirror"]["prefix"]
    # Every Envoy's watcher up (mirror_connected), then a warm-up through A that the others see.
    connected = wait_until(lambda: all(persist(e).get("mirror_connected", 0) == 1 for e in envoys), 20, 0.2)
    if not connected:
        print("warning: not every Envoy reports mirror_connected 1 after 20 s: "
              + ", ".join(f"{e.name}={persist(e).get('mirror_connected')}" for e in envoys), flush=True)
    warm_up(a.port, 300, "mirror")
    wait_until(lambda: persist(a).get("mirror_put", 0) >= 300
               and all(persist(o).get("mirror_event", 0) >= persist(a).get("mirror_put", 0) for o in others), 15)
    time.sleep(1.2)  # `new` is flushed on the workers' 1 s tick

    m0 = etcd.metrics()
    keys0, rss0 = etcd.key_count(prefix), rss_bytes(etcd.proc.pid)
    a0 = persist(a)
    o0 = {o.name: persist(o) for o in others}

    load, cpu, samples = run_load(setup, a, others, etcd, "mirror")
    t_end = time.monotonic()
    # The others first, then A: a lag read this way can only be overstated, never negative.
    o_end = {o.name: persist(o).get("mirror_event", 0) for o in others}
    a_end = persist(a)

    # After the load: poll every 0.1 s (at most --settle seconds) until A's writer has
    # drained (put + dropped >= new; `new` is flushed on the workers' 1 s tick, so not
    # before 1.2 s) and every other watcher has seen every put. Then, from the trace: the
    # first moment A had put its final count, and each watcher had seen it.
    trace = []  # (seconds after wrk, A put, A new, A mirror_error, {other: events}), deltas
    end = t_end + args.settle
    while True:
        now = time.monotonic() - t_end
        evs = {o.name: persist(o).get("mirror_event", 0) - o0[o.name].get("mirror_event", 0) for o in others}
        sa = persist(a)
        put, new, err = (sa.get(k, 0) - a0.get(k, 0) for k in ("mirror_put", "new", "mirror_error"))
        trace.append((now, put, new, err, evs))
        if now > 1.2 and put + err >= new and all(v >= put for v in evs.values()):
            break
        if time.monotonic() >= end:
            break
        time.sleep(0.1)
    _, put_f, new_f, err_f, evs_f = trace[-1]
    drained = next((t for t, put, _, err, _ in trace if put + err >= new_f), None)
    converge = {o.name: next((t for t, _, _, _, evs in trace if evs[o.name] >= put_f), None) for o in others}
    time.sleep(1.0)  # etcd's backend commits every 100 ms; let the db size settle

    m1 = etcd.metrics()
    keys1, rss1 = etcd.key_count(prefix), rss_bytes(etcd.proc.pid)
    leases = etcd.lease_count()
    sample = etcd.sample(prefix)
    a1 = persist(a)
    o1 = {o.name: persist(o) for o in others}
    join = join_envoy(setup, etcd, keys1)
    res = dict(join=join, load=load, cpu=cpu, samples=samples, a0=a0, a1=a1, a_end=a_end, o0=o0, o1=o1, o_end=o_end,
               converge=converge, drained=drained, m0=m0, m1=m1, keys0=keys0, keys1=keys1, rss0=rss0, rss1=rss1,
               leases=leases, sample=sample, plugin=a.plugin, others=[o.name for o in others])
    # The Envoys and etcd are stopped before the baseline round (they would compete for CPU).
    for e in [*others, a]:
        e.stop()
    etcd.stop()
    return res


def join_envoy(setup, etcd, keys):
    """A fresh Envoy joins after the load: seconds from its start (process spawned) until its
    watcher loaded the whole prefix and watches (mirror_connected 1), and its entries then."""
    t0 = time.monotonic()
    j = setup.start_envoy("J", etcd.client_port, True)
    ready = time.monotonic() - t0
    ok = wait_until(lambda: persist(j).get("mirror_connected", 0) == 1, 120, 0.05)
    loaded = time.monotonic() - t0 if ok else None
    time.sleep(1.2)  # the entries gauge is flushed on the workers' 1 s tick
    entries = persist(j).get("entries", 0)
    j.stop()
    return dict(keys=keys, ready=ready, loaded=loaded, entries=entries)


def baseline_round(setup):
    a = setup.start_envoy("A0", 0, False)
    warm_up(a.port, 300, "base")
    time.sleep(1.2)
    p0 = persist(a)
    load, cpu, _ = run_load(setup, a, [], None, "baseline")
    time.sleep(1.2)
    p1 = persist(a)
    res = dict(load=load, cpu=cpu, new=p1.get("new", 0) - p0.get("new", 0), plugin=a.plugin)
    a.stop()
    return res


# --- report -----------------------------------------------------------------------------------

def fnum(v, spec=",.0f", none="-"):
    return none if v is None else format(v, spec)


def report(args, r, base, machine):
    L = r["load"]
    secs = L["seconds"]
    m0, m1 = r["m0"], r["m1"]
    a0, a1, a_end = r["a0"], r["a1"], r["a_end"]

    def d(name, **labels):
        x0, x1 = metric(m0, name, **labels), metric(m1, name, **labels)
        return None if x0 is None or x1 is None else x1 - x0

    def da(key, end=a1):
        return end.get(key, 0) - a0.get(key, 0)

    put_total = da("mirror_put")
    put_during = da("mirror_put", a_end)
    new_total = da("new")
    txn = d("grpc_server_handled_total", grpc_method="Txn", grpc_code="OK")
    mvcc_put = d("etcd_mvcc_put_total")
    proposals = d("etcd_server_proposals_committed_total")
    fsyncs = d("etcd_disk_wal_fsync_duration_seconds_count")
    fsync_sum = d("etcd_disk_wal_fsync_duration_seconds_sum")
    commits = d("etcd_disk_backend_commit_duration_seconds_count")
    commit_sum = d("etcd_disk_backend_commit_duration_seconds_sum")
    db0, db1 = metric(m0, "etcd_mvcc_db_total_size_in_bytes"), metric(m1, "etcd_mvcc_db_total_size_in_bytes")
    use0 = metric(m0, "etcd_mvcc_db_total_size_in_use_in_bytes")
    use1 = metric(m1, "etcd_mvcc_db_total_size_in_use_in_bytes")
    dkeys = r["keys1"] - r["keys0"]
    settle = r["drained"], r["converge"]

    def per(x, n, scale=1.0, spec=",.0f"):
        return "-" if x is None or not n else format(x * scale / n, spec)

    rows = []
    add = rows.append
    add(("client (wrk)", f"{L['requests']:,} requests in {secs:.1f} s = **{L['requests'] / secs:,.0f} req/s**; "
         f"non-2xx {L['non2xx']}, socket errors {L['socket_errors']}; latency avg {L['latency_avg']}, "
         f"p99 {L['latency_p99']}"))
    add(("A: new bindings", f"{new_total:,} (`new`); entries {a1.get('entries', 0):,}"))
    add(("A: mirror_put during load", f"{put_during:,} keys = **{put_during / secs:,.0f} keys/s** "
         f"(acknowledged by etcd while wrk ran)"))
    add(("A: mirror_put in total", f"{put_total:,} keys; writer drained {fnum(settle[0], '.1f')} s after wrk "
         f"ended; `mirror_error` +{da('mirror_error')}"))
    add(("etcd: Txn RPCs", f"{fnum(txn)} = {per(txn, secs)} /s; **{per(put_total, txn, spec=',.1f')} keys per Txn** "
         f"(coalescing: A's keys / Txn calls)"))
    rng = d("grpc_server_handled_total", grpc_method="Range")
    add(("etcd: Range RPCs", f"{fnum(rng)} = {per(rng, secs)} /s = {per(rng, L['requests'], spec='.2f')} per request "
         f"(A's lookups of keys missing from its table)"))
    add(("etcd: puts (etcd_mvcc_put_total)", f"{fnum(mvcc_put)} = {per(mvcc_put, secs)} /s"))
    add(("etcd: multi-op txns (etcd_mvcc_txn_total)", fnum(d("etcd_mvcc_txn_total"))))
    add(("etcd: LeaseGrant RPCs / leases alive", f"{fnum(d('grpc_server_handled_total', grpc_method='LeaseGrant'))}"
         f" / {fnum(r['leases'])} (`etcdctl lease list`)"))
    add(("etcd: raft proposals committed", f"{fnum(proposals)} = {per(proposals, secs)} /s"))
    add(("etcd: WAL fsyncs", f"{fnum(fsyncs)} = {per(fsyncs, secs)} /s, mean {per(fsync_sum, fsyncs, 1000, '.2f')} ms"))
    add(("etcd: backend commits", f"{fnum(commits)}, mean {per(commit_sum, commits, 1000, '.2f')} ms"))
    add(("etcd: keys under prefix", f"{r['keys0']:,} -> {r['keys1']:,} (+{dkeys:,})"))
    if r["sample"]:
        k, v = r["sample"]
        add(("etcd: a key as stored", f"`{k.decode(errors='replace')}` ({len(k)} B) = `{v.decode(errors='replace')}` "
             f"({len(v)} B), plus a lease id"))
    add(("etcd: db size (total)",
         f"{ll.mib(db0)} -> {ll.mib(db1)} MiB: {per(None if db0 is None else db1 - db0, dkeys)} bytes/key"))
    add(("etcd: db size (in use)", f"{ll.mib(use0)} -> {ll.mib(use1)} MiB: "
         f"**{per(None if use0 is None else use1 - use0, dkeys)} bytes/key**"))
    add(("etcd: VmRSS", f"{ll.mib(r['rss0'])} -> {ll.mib(r['rss1'])} MiB: {per(r['rss1'] - r['rss0'], dkeys)} "
         f"bytes/key"))
    add(("etcd: CPU", f"{r['cpu']['etcd']:.1f} s = {per(r['cpu']['etcd'], put_during, 1000, '.3f')} s per 1000 keys"))
    for name in r["others"]:
        ev_end = r["o_end"][name] - r["o0"][name].get("mirror_event", 0)
        ev = r["o1"][name].get("mirror_event", 0) - r["o0"][name].get("mirror_event", 0)
        lag_max = max((s[1] - a0.get("mirror_put", 0)) - (s[2][name] - r["o0"][name].get("mirror_event", 0))
                      for s in r["samples"]) if r["samples"] else None
        conv = r["converge"][name]
        add((f"{name}: watcher (mirror_event)",
             f"{ev:,} events; behind A's puts by {put_during - ev_end:,} when wrk ended "
             f"(max {fnum(lag_max)} in the 1 s samples); caught up "
             f"{'**%.1f s** after wrk ended' % conv if conv is not None else 'NOT within %g s' % args.settle}; "
             f"entries {r['o1'][name].get('entries', 0):,}; own puts +"
             f"{r['o1'][name].get('mirror_put', 0) - r['o0'][name].get('mirror_put', 0)}"))
        add((f"{name}: CPU", f"{r['cpu'][name]:.1f} s = {per(r['cpu'][name], ev_end, 1000, '.3f')} s per 1000 events"))
    J = r["join"]
    add(("a fresh Envoy joining after the load",
         f"ready {J['ready']:.1f} s after its start; prefix of {J['keys']:,} keys loaded and watching "
         f"(`mirror_connected` 1) **{fnum(J['loaded'], '.1f', 'NOT within 120')} s** after its start; "
         f"entries then {J['entries']:,}"))
    add(("A: CPU, with mirror", f"{r['cpu']['A']:.1f} s = **{per(r['cpu']['A'], L['requests'], 1000, '.3f')} s per "
         f"1000 requests**"))
    if base:
        B = base["load"]
        add(("A: CPU, without mirror (baseline round)",
             f"{base['cpu']['A']:.1f} s = **{per(base['cpu']['A'], B['requests'], 1000, '.3f')} s per 1000 requests**; "
             f"{B['requests'] / B['seconds']:,.0f} req/s, non-2xx {B['non2xx']}, latency avg {B['latency_avg']}, "
             f"p99 {B['latency_p99']}; new {base['new']:,} (A alone: etcd and the other Envoys stopped)"))

    head = [f"# etcd mirror load ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
            f"Command: `{' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`  ",
            f"Machine: {machine}  ",
            f"Setup: 1 etcd member ({machine_etcd()}, data dir in {tempfile.gettempdir()}, default quota), "
            f"{args.envoys} Envoy(s) `--concurrency 2` from envoy/mirror.yaml, backends: {args.backends}; "
            f"wrk `-t{args.threads} -c{args.connections} -d{args.duration}s`, a new x-user per request, to A only.  ",
            f"Plugin: `{json.dumps(r['plugin'])}`", "",
            "| figure | measured |", "|---|---|"]
    lines = head + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def machine_etcd():
    try:
        out = subprocess.run([etcd_bin(), "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].replace("etcd Version: ", "etcd ")
    except Exception:  # noqa: BLE001 - only informative
        return "etcd ?"


def machine():
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f} at the end")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoys", type=int, default=2, help="Envoys sharing the etcd (A is driven; default 2)")
    ap.add_argument("--duration", type=int, default=20, help="seconds of wrk per round (default 20)")
    ap.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    ap.add_argument("--backends", choices=["python", "envoy"], default="python",
                    help="python: three tests/backend.py (default); envoy: one Envoy of direct_response listeners")
    ap.add_argument("--timeout", default="20m", help='plugin "timeout" (default 20m)')
    ap.add_argument("--max-entries", type=int, default=2_000_000, help="plugin max_entries (default 2,000,000)")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds to wait for convergence after wrk")
    ap.add_argument("--no-baseline", action="store_true", help="skip the round without mirror")
    ap.add_argument("--out", help="also write the table as Markdown to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, etcd data)")
    args = ap.parse_args(argv)
    if args.envoys < 1 or args.duration < 1 or args.connections < args.threads:
        ap.error("need --envoys >= 1, --duration >= 1, --connections >= --threads")
    ll.check_tools()
    ll.check_etcd_tools()
    workdir = Path(tempfile.mkdtemp(prefix="mirror-load-"))
    print(f"envoy {ll.envoy_bin()}, module {ll.wasm_path()}, work dir {workdir}", flush=True)
    ok = False
    with ll.Cleanup() as cleanup:
        try:
            setup = Setup(args, workdir, cleanup)
            setup.start_backends()
            print(f"mirror round: etcd + {args.envoys} Envoy(s), wrk {args.duration} s ...", flush=True)
            r = mirror_round(setup)
            base = None
            if not args.no_baseline:
                print(f"baseline round: A without mirror, wrk {args.duration} s ...", flush=True)
                base = baseline_round(setup)
            md = report(args, r, base, machine())
            print("\n" + md, flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(md)
                print(f"written: {args.out}", flush=True)
            ok = True
        finally:
            if not ok:
                print(f"failed; logs kept in {workdir}", file=sys.stderr, flush=True)
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
