"""Shared helpers for the load scripts (scripts/flood.py, scripts/soak.py).

Builds on scripts/table_memory.py (tool resolution, the Envoy process wrapper) and adds:
a backend Envoy with several direct_response listeners (one per "server", each answering
with its own `x-backend` header; `/login` sets `JSESSIONID=<x-session request header>`), the
Envoy-under-test configuration for any plugin JSON, wrk runs and their summary, readings of
VmRSS, of the wasm linear memories (/proc/<pid>/smaps) and of /stats, output teed to a file,
and the clean-up of every process started (also on Ctrl-C and SIGTERM).
Only 127.0.0.1 is used; every wait is bounded.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_configs  # noqa: E402
import table_memory as tm  # noqa: E402  (free_port, envoy_bin, wasm_path, Proc)

ROOT = tm.ROOT
LOCAL = tm.LOCAL
free_port = tm.free_port
envoy_bin = tm.envoy_bin
wasm_path = tm.wasm_path
MiB = 2 ** 20


# --- configurations (scripts/envoy_configs.py) ----------------------------------------------------

backend_yaml = envoy_configs.backend_yaml


def proxy_yaml(port, admin, backend_ports, plugin, xff_hops=None):
    """The Envoy under test with the built module; see envoy_configs.proxy_yaml."""
    return envoy_configs.proxy_yaml(port, admin, backend_ports, plugin, wasm_path(), xff_hops)


# --- processes --------------------------------------------------------------------------------

class Envoy(tm.Proc):
    """table_memory's Envoy wrapper, with readings for any profile name."""

    def all_stats(self, regex):
        """Every stat whose name matches `regex` (Envoy's /stats?filter=), name -> int."""
        out = {}
        for line in self.get(f"/stats?filter={regex}").splitlines():
            name, _, value = line.rpartition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name.strip()] = int(value)
        return out

    def persist(self, profile):
        """The profile's counters and `entries` gauge, short name -> int."""
        pre = f"wasmcustom.persist.{profile}."
        return {k[len(pre):]: v for k, v in self.all_stats(f"^wasmcustom\\.persist\\.{profile}\\.").items()}

    def wasm_memory(self):
        """The wasm linear memories, read from /proc/<pid>/smaps: V8 maps each one as an
        accessible anonymous mapping (rw-p, its current size in wasm pages) followed at once by
        an inaccessible guard reservation of several GiB (---p). Returns (vms, size, rss): the
        number of such memories, the sum of their sizes (grows only by memory.grow) and the
        sum of their resident bytes; None when /proc cannot be read."""
        try:
            text = Path(f"/proc/{self.proc.pid}/smaps").read_text()
        except OSError:
            return None
        maps = []  # [start, end, perms, anonymous, rss]
        for line in text.splitlines():
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$", line)
            if m:
                maps.append([int(m.group(1), 16), int(m.group(2), 16), m.group(3), not m.group(4).strip(), 0])
            elif line.startswith("Rss:") and maps:
                maps[-1][4] = int(line.split()[1]) * 1024
        vms = size = rss = 0
        for prev, m in zip(maps, maps[1:]):
            if (m[3] and m[2].startswith("---") and m[1] - m[0] >= 4 * 2 ** 30
                    and prev[3] and prev[2].startswith("rw") and prev[1] == m[0]):
                vms += 1
                size += prev[1] - prev[0]
                rss += prev[4]
        return vms, size, rss


class Cleanup:
    """Stops everything registered (Envoys, wrk) in reverse order; turns SIGTERM/SIGHUP into
    KeyboardInterrupt so `finally` blocks run."""

    def __init__(self):
        self.items = []
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._raise)

    @staticmethod
    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def add(self, item):
        self.items.append(item)
        return item

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for item in reversed(self.items):
            try:
                if isinstance(item, subprocess.Popen):
                    stop_popen(item)
                else:
                    item.stop()
            except Exception as e:  # keep stopping the others
                print(f"clean-up: {e!r}", file=sys.stderr)
        return False


stop_popen = tm.stop_popen


# --- wrk --------------------------------------------------------------------------------------

def start_wrk(port, lua, workdir, name, threads, conns, seconds, args=(), timeout="5s"):
    """wrk against the Envoy on `port`, output to <workdir>/<name>.out."""
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{int(seconds)}s", "--timeout", timeout,
           "-s", str(lua), f"http://{LOCAL}:{port}/", "--", *[str(a) for a in args]]
    out = open(workdir / f"{name}.out", "wb")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        out.close()


def wrk_summary(text):
    """requests, seconds, non2xx, socket errors (sum and detail) from wrk's output."""
    s = {"requests": None, "seconds": None, "non2xx": 0, "socket_errors": 0, "socket_detail": "none"}
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s|m|h)", text)
    if m:
        s["requests"] = int(m.group(1))
        unit = {"s": 1, "ms": 1e-3, "m": 60, "h": 3600}[m.group(3)]
        s["seconds"] = float(m.group(2)) * unit
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        s["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        vals = [int(x) for x in m.groups()]
        s["socket_errors"] = sum(vals)
        s["socket_detail"] = m.group(0)
    return s


# --- output -----------------------------------------------------------------------------------

class Tee:
    """print() to stdout and to a file."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "w")

    def __call__(self, *args, **kw):
        print(*args, **kw, flush=True)
        print(*args, **kw, file=self.f, flush=True)

    def close(self):
        self.f.close()


def run_with_output(args, run):
    """Checks the tools, then `run(args, out)` with `out` printing to stdout and, with
    `--out FILE`, also to that file; returns what `run` returns."""
    check_tools()
    out = Tee(args.out) if args.out else (lambda *a, **k: print(*a, **k, flush=True))
    try:
        return run(args, out)
    finally:
        if args.out:
            out.close()


def mib(b):
    return "-" if b is None else f"{b / MiB:.1f}"


def now_utc():
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def check_tools():
    if not wasm_path().is_file():
        sys.exit(f"module not built: {wasm_path()} (run `make build`)")
    if not any((Path(d) / "wrk").is_file() for d in os.environ.get("PATH", "").split(os.pathsep)):
        sys.exit("wrk not found on PATH")


def keys_lua(workdir):
    """table_memory's wrk script of distinct keys (one new key per request), in LuaJIT's
    dialect (bit library instead of bit operators)."""
    lua = workdir / "keys.lua"
    lua.write_text(tm.WRK_LUA.replace("(i >> 16) & 255", "bit.band(bit.rshift(i, 16), 255)")
                   .replace("(i >> 8) & 255", "bit.band(bit.rshift(i, 8), 255)")
                   .replace("i & 255", "bit.band(i, 255)"))
    return lua


def wasm_health(envoy):
    """wasm.* stats: the V8 runtime's active VM count and every reload/failure stat."""
    s = envoy.all_stats("^wasm\\.")
    bad = {k: v for k, v in s.items() if ("fail" in k or "vm_reload" in k) and v}
    return s.get("wasm.envoy.wasm.runtime.v8.active"), bad


def log_problems(envoy):
    """Lines of the Envoy's log that say a wasm VM panicked or failed."""
    try:
        lines = envoy.log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [ln for ln in lines if "panicked" in ln or "wasm" in ln.lower() and ("fail" in ln.lower() or "crash" in ln.lower())]
