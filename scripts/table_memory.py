#!/usr/bin/env python3
"""Memory per entry of the persistence table: Envoy's RSS growth per table entry.

Run by `make table-memory` (not part of `make test`):
    ENVOY_BIN=... PERSIST_WASM=target/wasm32-wasip1/release/envoy_persist.wasm \\
        python scripts/table_memory.py [--type client_ip|http_header] [--steps 100000,1000000]

Starts a backend Envoy (a direct_response listener: fast, no Python in the data path) and
the Envoy under test (--concurrency 2 by default) with the built module: one profile of a
locally stored type, max_entries above the largest step, timeout 1h (nothing lapses), the
stateful_session hand-off. It then pushes distinct keys until the table holds each step's
number of entries (default 100k, then 1M): one new key per request over a pool of keep-alive
connections (wrk with a generated Lua script when wrk is installed, else Python threads).

  client_ip   (default) the key is the client address from X-Forwarded-For (the listener
              trusts one hop), distinct IPv4 addresses 10.x.y.z
  http_header the key is the value of x-user, distinct values of --key-len characters
  http_cookie a control without table (one new cookie per request): the RSS growth that is
              not the table's

After each step it reads the Envoy's VmRSS (/proc/<pid>/status) and the profile's `entries`
gauge and prints the bytes per entry, (RSS - RSS at start) / entries. The goal is at most 256
bytes per entry. Only 127.0.0.1 is used; every wait is bounded.
"""

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_configs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "envoy_persist.wasm"
LOCAL = "127.0.0.1"
PROFILE = "mem"
GOAL = 256
WARM_BASE = 15_000_000  # warm-up keys: far from the measured ones


def stop_popen(p, sig=signal.SIGINT, timeout=15):
    """Stops a process with `sig`, killing it when it has not exited within `timeout` s."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


_HANDED_OUT = set()


def free_port():
    """A port free on 127.0.0.1 now, never one this run handed out before."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((LOCAL, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port")


def rss_bytes(pid):
    """VmRSS of a process, bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) * 1024


def log_tail(path, n):
    """The last `n` lines of a log file ("" while it does not exist)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return ""


def envoy_bin():
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    out = subprocess.run([str(ROOT / "scripts" / "envoy-bin.sh")], capture_output=True, text=True,
                         timeout=300, check=True)
    return out.stdout.strip()


def wasm_path():
    p = Path(os.environ.get("PERSIST_WASM") or DEFAULT_WASM)
    return p if p.is_absolute() else ROOT / p


# --- configurations -------------------------------------------------------------------------------

def backend_yaml(port, admin):
    return envoy_configs.backend_yaml([port], admin)


def plugin_json(kind, max_entries):
    common = f'"name": "{PROFILE}", "timeout": "1h", "max_entries": {max_entries}'
    if kind == "client_ip":
        return '{' + common + ', "type": "client_ip"}'
    if kind == "http_cookie":  # control: nothing stored, one new cookie per request
        return '{"name": "%s", "type": "http_cookie"}' % PROFILE
    return '{' + common + ', "type": "http_header", "header": {"name": "x-user"}}'


def proxy_yaml(port, admin, backend_port, kind, max_entries):
    return envoy_configs.proxy_yaml(port, admin, [backend_port], plugin_json(kind, max_entries),
                                    wasm_path(), xff_hops=1)


# --- processes --------------------------------------------------------------------------------

class Proc:
    def __init__(self, name, cfg_text, workdir, concurrency):
        self.name = name
        self.admin = free_port()
        self.cfg = workdir / f"{name}.yaml"
        self.log = workdir / f"{name}.log"
        self.cfg_text = cfg_text
        self.concurrency = concurrency
        self.proc = None

    def start(self, timeout=60.0):
        self.cfg.write_text(self.cfg_text(self.admin))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [envoy_bin(), "-c", str(self.cfg), "--concurrency", str(self.concurrency),
                 "--disable-hot-restart", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} Envoy exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if "LIVE" in self.get("/ready"):
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} Envoy not ready within {timeout}s:\n{self.tail()}")

    def get(self, path):
        c = http.client.HTTPConnection(LOCAL, self.admin, timeout=5)
        try:
            c.request("GET", path)
            return c.getresponse().read().decode(errors="replace")
        finally:
            c.close()

    def tail(self, n=30):
        return log_tail(self.log, n)

    def rss(self):
        return rss_bytes(self.proc.pid)

    def stats(self):
        out = {}
        for line in self.get(f"/stats?filter=^wasmcustom\\.persist\\.{PROFILE}\\.").splitlines():
            name, _, value = line.rpartition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name.rsplit(".", 1)[-1]] = int(value)
        return out

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc, signal.SIGTERM)


# --- load -------------------------------------------------------------------------------------

def key_of(kind, i, key_len):
    if kind == "client_ip":
        return "x-forwarded-for", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return "x-user", f"u{i:0{key_len - 1}d}"


WRK_LUA = r"""
-- Distinct keys: thread t sends keys base + t*quota .. base + (t+1)*quota - 1, one per
-- request, then repeats its last key (a hit, not a new entry) and stops itself.
local n = 0
function setup(thread)
  thread:set("tid", n)
  n = n + 1
end
function init(args)
  base = tonumber(args[1]); quota = tonumber(args[2]); kind = args[3]; keylen = tonumber(args[4])
  warm = tonumber(args[5])
  sent = 0; got = 0
  -- wrk calls request() of thread 0 once to check the script, and never sends that one:
  -- it gets a warm-up key (already bound), so no key of the range is lost.
  if tid == 0 then sent = -1 end
end
local function key(i)
  if kind == "client_ip" then
    return "x-forwarded-for", string.format("10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255)
  end
  return "x-user", string.format("u%0" .. (keylen - 1) .. "d", i)
end
function request()
  local i = sent
  if sent < quota - 1 then sent = sent + 1 end
  local h, v
  if i < 0 then h, v = key(warm) else h, v = key(base + tid * quota + i) end
  return wrk.format("GET", "/", {[h] = v, ["Host"] = "mem.test"})
end
function response(status, headers, body)
  got = got + 1
  if got >= quota + 64 then wrk.thread:stop() end
end
"""


def push_wrk(port, kind, base, count, key_len, threads, conns, workdir, progress):
    """Sends `count` distinct keys starting at `base` with wrk; returns when the Envoy counted
    them (`new`) or stopped counting."""
    quota = count // threads
    rest = count - quota * threads
    lua = workdir / "keys.lua"
    # Lua 5.1 (LuaJIT) has no bit operators: use the bit library.
    lua.write_text(WRK_LUA.replace("(i >> 16) & 255", "bit.band(bit.rshift(i, 16), 255)")
                   .replace("(i >> 8) & 255", "bit.band(bit.rshift(i, 8), 255)")
                   .replace("i & 255", "bit.band(i, 255)"))
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", "3600s", "--timeout", "5s", "-s", str(lua),
           f"http://{LOCAL}:{port}/", "--", str(base), str(quota), kind, str(key_len), str(WARM_BASE)]
    with open(workdir / "wrk.log", "ab") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        progress(quota * threads)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
    if rest:
        push_python(port, kind, base + quota * threads, rest, key_len, 1, progress)


def push_python(port, kind, base, count, key_len, threads, progress):
    errors = []

    def work(lo, hi):
        conn = None
        try:
            for i in range(lo, hi):
                if conn is None:
                    conn = http.client.HTTPConnection(LOCAL, port, timeout=10)
                h, v = key_of(kind, i, key_len)
                conn.request("GET", "/", headers={h: v, "Host": "mem.test"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
                if r.will_close:
                    conn.close()
                    conn = None
        except Exception as exc:  # reported after the join
            errors.append(repr(exc))
        finally:
            if conn is not None:
                conn.close()

    step = -(-count // threads)
    ts = [threading.Thread(target=work, args=(base + k * step, base + min(count, (k + 1) * step)), daemon=True)
          for k in range(threads)]
    for t in ts:
        t.start()
    progress(count)
    for t in ts:
        t.join(timeout=60)
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[:3]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--type", choices=["client_ip", "http_header", "http_cookie"], default="client_ip",
                    help="http_cookie is a control: no table, so any RSS growth is the floor")
    ap.add_argument("--steps", default="100000,1000000", help="table sizes to measure at (ascending)")
    ap.add_argument("--concurrency", type=int, default=2, help="workers of the Envoy under test")
    ap.add_argument("--key-len", type=int, default=24, help="http_header: characters per key")
    ap.add_argument("--threads", type=int, default=2, help="load generator threads")
    ap.add_argument("--connections", type=int, default=32, help="keep-alive connections (wrk)")
    ap.add_argument("--no-wrk", action="store_true", help="use Python threads even when wrk is installed")
    ap.add_argument("--max-entries", type=int, default=0,
                    help="table capacity (default: twice the largest step: the table is set-associative, "
                         "slots of 16 entries, so a table filled beyond ~60%% starts evicting in busy slots)")
    ap.add_argument("--max-seconds", type=float, default=1200, help="give up on a step after this long")
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    assert steps == sorted(steps) and steps[0] > 0
    if not wasm_path().is_file():
        sys.exit(f"module not built: {wasm_path()} (run `make build`)")
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    workdir = Path(tempfile.mkdtemp(prefix="table-memory-"))
    max_entries = args.max_entries or 2 * steps[-1] + 10000
    backend_port, port = free_port(), free_port()
    backend = Proc("backend", lambda a: backend_yaml(backend_port, a), workdir, 1)
    proxy = Proc("proxy", lambda a: proxy_yaml(port, a, backend_port, args.type, max_entries), workdir,
                 args.concurrency)
    print(f"envoy: {envoy_bin()}\nmodule: {wasm_path()} ({wasm_path().stat().st_size} bytes)\n"
          f"profile: {plugin_json(args.type, max_entries)}\nEnvoy --concurrency {args.concurrency}; "
          f"load: {'wrk' if use_wrk else 'python threads'}; work dir {workdir}", flush=True)
    try:
        backend.start()
        proxy.start()

        def wait_new(target, deadline):
            """Until the `new` counter reaches `target` (flushed once a second per worker)."""
            last, last_change = -1, time.monotonic()
            while time.monotonic() < deadline:
                s = proxy.stats()
                new = s.get("new", 0)
                if new >= target:
                    return s
                if new != last:
                    last, last_change = new, time.monotonic()
                elif time.monotonic() - last_change > 20:
                    raise RuntimeError(f"`new` stuck at {new} (target {target}); stats {s}\n{proxy.tail()}")
                if proxy.proc.poll() is not None:
                    raise RuntimeError(f"Envoy under test exited:\n{proxy.tail()}")
                time.sleep(0.5)
            raise RuntimeError(f"`new` did not reach {target} within --max-seconds")

        # Warm up: VMs, connection pools, allocator arenas (keys far away from the measured ones).
        warm = 2000
        push_python(port, args.type, WARM_BASE, warm, args.key_len, 4,
                    lambda n: wait_new(n, time.monotonic() + 120))
        time.sleep(2.5)
        s0 = proxy.stats()
        rss0, entries0 = proxy.rss(), s0.get("entries", 0)
        print(f"start: VmRSS {rss0 / 2**20:.1f} MiB, entries {entries0} (warm-up keys), stats {s0}", flush=True)
        results = []
        pushed = 0
        base = 0
        for step in steps:
            count = step - pushed
            t0 = time.monotonic()
            target = s0.get("new", 0) + step

            def progress(_n, target=target, t0=t0):
                wait_new(target, t0 + args.max_seconds)

            if use_wrk:
                push_wrk(port, args.type, base, count, args.key_len, args.threads, args.connections, workdir, progress)
            else:
                push_python(port, args.type, base, count, args.key_len, args.threads * 4, progress)
            secs = time.monotonic() - t0
            base += count
            pushed = step
            time.sleep(2.5)  # gauges flushed, allocator settled
            s = proxy.stats()
            rss = proxy.rss()
            if args.type == "http_cookie":  # control: per request (no table)
                entries = s.get("new", 0) - s0.get("new", 0)
            else:
                entries = s.get("entries", 0) - entries0
            per = (rss - rss0) / entries if entries > 0 else float("nan")
            results.append((step, entries, rss, per, s.get("evicted", 0)))
            print(f"{step:>9,} keys pushed in {secs:6.1f}s ({count / secs:,.0f}/s): entries +{entries:,}, "
                  f"VmRSS {rss / 2**20:.1f} MiB (+{(rss - rss0) / 2**20:.1f} MiB): "
                  f"{per:.0f} bytes/entry; stats {s}", flush=True)
        print("\nsummary (type %s, Envoy --concurrency %d):" % (args.type, args.concurrency))
        for step, entries, rss, per, evicted in results:
            verdict = "ok" if per <= GOAL else "ABOVE GOAL"
            print(f"  {step:>9,} keys: {entries:>9,} entries ({evicted:,} evicted), {per:6.0f} bytes/entry  "
                  f"(goal <= {GOAL}: {verdict})")
        return 0 if all(r[3] <= GOAL for r in results) else 1
    finally:
        proxy.stop()
        backend.stop()


if __name__ == "__main__":
    sys.exit(main())
