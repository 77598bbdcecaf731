"""Shared helpers for the load scripts (scripts/flood.py, scripts/soak.py, scripts/mirror_load.py).

Builds on scripts/table_memory.py (tool resolution, the Envoy process wrapper) and adds:
a backend Envoy with several direct_response listeners (one per "server", each answering
with its own `x-backend` header; `/login` sets `JSESSIONID=<x-session request header>`), the
Envoy-under-test configuration for any plugin JSON (optionally with the `etcd` cluster of
envoy/mirror.yaml), one etcd member on loopback and its /metrics, wrk runs and their summary,
readings of VmRSS, CPU time, the wasm linear memories (/proc/<pid>/smaps) and of /stats,
output teed to a file, and the clean-up of every process started (also on Ctrl-C and SIGTERM).
Only 127.0.0.1 is used; every wait is bounded.
"""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_configs  # noqa: E402
import table_memory as tm  # noqa: E402  (free_port, envoy_bin, wasm_path, Proc)

ROOT = tm.ROOT
LOCAL = tm.LOCAL
envoy_bin = tm.envoy_bin
wasm_path = tm.wasm_path
MiB = 2 ** 20
MIRROR_YAML = ROOT / "envoy" / "mirror.yaml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
free_port = tm.free_port
rss_bytes = tm.rss_bytes


def wait_until(pred, timeout, interval=0.1):
    """Polls `pred` until it is true or `timeout` seconds have passed; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def yaml_module():
    """PyYAML (tests/requirements.txt), imported only by the scripts that need it."""
    try:
        import yaml
    except ImportError:  # told at once, not as a traceback
        sys.exit("PyYAML missing: run with .venv/bin/python (make venv) or pip install PyYAML")
    return yaml


# --- configurations (scripts/envoy_configs.py) ----------------------------------------------------

backend_yaml = envoy_configs.backend_yaml


def proxy_yaml(port, admin, backend_ports, plugin, xff_hops=None, etcd_port=None):
    """The Envoy under test with the built module; see envoy_configs.proxy_yaml. With
    `etcd_port`, the `etcd` cluster of envoy/mirror.yaml is added, its one endpoint the etcd
    member on that port (the plugin JSON names it in "mirror": {"cluster": "etcd"})."""
    text = envoy_configs.proxy_yaml(port, admin, backend_ports, plugin, wasm_path(), xff_hops)
    if etcd_port is None:
        return text
    yaml = yaml_module()
    doc = yaml.safe_load(text)
    doc["static_resources"]["clusters"].append(etcd_cluster(etcd_port))
    return yaml.safe_dump(doc, sort_keys=False)


def etcd_cluster(etcd_port, name="etcd"):
    """The cluster `name` of envoy/mirror.yaml (HTTP/2, TCP health check), its endpoints
    replaced by the one etcd member on 127.0.0.1:`etcd_port`."""
    doc = yaml_module().safe_load(MIRROR_YAML.read_text())
    (cluster,) = [c for c in doc["static_resources"]["clusters"] if c["name"] == name]
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": LOCAL, "port_value": etcd_port}}}}]}]
    return cluster


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


# --- /proc ------------------------------------------------------------------------------------

def cpu_s(pid):
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --- etcd -------------------------------------------------------------------------------------

def etcd_bin():
    return os.environ.get("ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"


def etcdctl_bin():
    return os.environ.get("ETCDCTL_BIN") or shutil.which("etcdctl") or "/usr/bin/etcdctl"


def check_etcd_tools():
    for tool in (etcd_bin(), etcdctl_bin()):
        if not Path(tool).is_file():
            sys.exit(f"{tool} not found (ETCD_BIN / ETCDCTL_BIN)")


class Etcd:
    """One etcd member on loopback, its data dir under `workdir`; `extra_args` are added to
    its command line (e.g. auto-compaction flags)."""

    def __init__(self, workdir, extra_args=()):
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://{LOCAL}:{self.client_port}"
        self.peer = f"http://{LOCAL}:{self.peer_port}"
        self.data_dir = workdir / "etcd.data"
        self.log = workdir / "etcd.log"
        self.extra_args = list(extra_args)
        self.proc = None

    def start(self, timeout=20.0):
        cmd = [etcd_bin(), "--name", "m0", "--data-dir", str(self.data_dir),
               "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
               "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
               "--initial-cluster", f"m0={self.peer}", "--initial-cluster-state", "new",
               "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn", *self.extra_args]
        with open(self.log, "wb") as log:
            # Own session: a Ctrl-C in the terminal reaches the script, which stops etcd.
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return self
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd not healthy within {timeout}s:\n{self.tail()}")

    def tail(self, n=20):
        return tm.log_tail(self.log, n)

    def metrics(self):
        """etcd's /metrics (Prometheus text): 'name{labels}' -> float."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode(errors="replace")
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
        return out

    def ctl(self, *args, timeout=30):
        r = subprocess.run([etcdctl_bin(), "--endpoints", self.url, "--command-timeout", "20s", *args],
                           capture_output=True, text=True, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"})
        if r.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def lease_count(self):
        m = re.search(r"found (\d+) leases", self.ctl("lease", "list"))
        return int(m.group(1)) if m else None

    def range(self, prefix, **opts):
        """A range over `prefix` through etcd's JSON gateway (POST /v3/kv/range)."""
        end = bytearray(prefix.encode())
        end[-1] += 1  # the prefix ends in "/": no 0xff carry
        body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                           "range_end": base64.b64encode(bytes(end)).decode(), **opts}).encode()
        req = urllib.request.Request(f"{self.url}/v3/kv/range", data=body, method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def key_count(self, prefix):
        """Keys under `prefix` (etcdctl 3.4 has no --count-only)."""
        return int(self.range(prefix, count_only=True).get("count", 0))

    def sample(self, prefix):
        """One key under `prefix` and its value, bytes (None when there is none)."""
        kvs = self.range(prefix, limit=1).get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0]["key"]), base64.b64decode(kvs[0].get("value", ""))

    def stop(self):
        if self.proc is not None:
            stop_popen(self.proc, signal.SIGTERM)


def metric(m, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (None: no such sample)."""
    total, found = 0.0, False
    for key, value in m.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
            found = True
    return total if found else None


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
