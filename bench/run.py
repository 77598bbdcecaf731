#!/usr/bin/env python3
"""`make bench`: envoy-persist against plain Envoy, Envoy's native cookie persistence and
the no-op wasm floor, in one run, side by side.

One Envoy per configuration (all started at once, each `--concurrency 1`, each on its own
ports) in front of one nginx with three server blocks; wrk with keep-alive connections.
Rounds are interleaved (A B C ... A B C ...): every case is measured once per round, and
the figures are medians over the rounds; a case's ratio is the median of its per-round
ratios to plain Envoy of the same round, so a load change on the host between rounds
affects the case and its baseline alike.

Environment (all optional):
  BENCH_SECONDS      seconds per measurement (default 5; quick: 2)
  BENCH_ROUNDS       interleaved rounds (default 8; quick: 1); the whole run takes about
                     90 s + ROUNDS x (13 x SECONDS + 15 s): 11 minutes by default
  BENCH_QUICK=1      quick mode for iterations: 2 s x 1 round, 10k keys, writes
                     bench/out/BENCHMARKS-quick.md instead of BENCHMARKS.md
  BENCH_ENTRIES      learned keys preloaded per table case (default 100000; quick: 10000)
  BENCH_MAX_ENTRIES  max_entries of the table cases (default 2 x BENCH_ENTRIES)
  BENCH_THREADS, BENCH_CONNECTIONS   wrk -t / -c (default 2 / 32)
  BENCH_CASES        comma-separated case ids to run (default all but the optional ones;
                     plain always runs, and so do the floors of the cases selected)
  BENCH_CAPS=0       leave out the capability restriction (bench/envoy/capabilities.yaml)
                     of the wasm filters; the optional cases *-open measure without it
                     beside the restricted ones in the same run
  BENCH_PORT_BASE    first port used (default 17000; uses base+81..83, +100.., +200..)
  BENCH_WRITE=0|1    write the Markdown report (default: 1, quick: 0)
  BENCH_OUT          Markdown report path (default BENCHMARKS.md at the repository root)
  BENCH_B_WASM       a second build of envoy_persist.wasm: every persist case also runs
                     with it ("<case>-b", same round, right after its A twin), for A/B
                     figures of a change (bench/OPTIMIZATIONS.md)
  BENCH_B_NATIVE     a second build of libenvoy_persist_native.so: every dm-* case also runs
                     with it ("<case>-b"), as BENCH_B_WASM does for the wasm module
  BENCH_PERF=DIR     record every measurement of the Envoy under test with
                     `perf record -e cpu-clock -g` into DIR/<case>-r<round>.data (read them
                     with `perf report -i ...`; the software clock works without hardware
                     counters). The sampling costs Envoy CPU: compare figures of one mode only.
                     BENCH_PERF_ARGS replaces "-e cpu-clock -g" (e.g. "-e cpu-clock -F 999
                     --call-graph dwarf,16384" to unwind through the stripped Envoy binary)
  BENCH_PLUGIN=JSON  keys merged into the plugin JSON of every persist case, wasm and
                     native (e.g. '{"access_log_state": false}' for an A/B of one option)
  BENCH_PIN=E:L       pin every Envoy to CPU list E and wrk and nginx to CPU list L
                     (taskset), e.g. 1:0: the Envoy under test then has a CPU of its own
                     instead of sharing both with the load generator; off by default
  ENVOY_BIN, PERSIST_WASM, PERSIST_NATIVE, NOOP_WASM   binaries (defaults: scripts/envoy-bin.sh and
                     target/wasm32-wasip1/release/{envoy_persist,noop_filter}.wasm)

Nothing here asserts timing: the figures are reported, never checked.
"""

import base64
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)


def env_num(name, default, cast=int):
    v = os.environ.get(name, "").strip()
    return cast(v) if v else default


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = env_num("BENCH_SECONDS", 2 if QUICK else 5, float)
ROUNDS = env_num("BENCH_ROUNDS", 1 if QUICK else 8)
ENTRIES = env_num("BENCH_ENTRIES", 10000 if QUICK else 100000)
MAX_ENTRIES = env_num("BENCH_MAX_ENTRIES", 2 * ENTRIES)
THREADS = env_num("BENCH_THREADS", 2)
PIN_ENVOY, _, PIN_LOAD = os.environ.get("BENCH_PIN", "").partition(":")
CONNS = env_num("BENCH_CONNECTIONS", 32)
PORT_BASE = env_num("BENCH_PORT_BASE", 17000)
WRITE = os.environ.get("BENCH_WRITE", "0" if QUICK else "1") not in ("", "0")
OUT_MD = os.environ.get("BENCH_OUT") or (
    os.path.join(BENCH, "out", "BENCHMARKS-quick.md") if QUICK else os.path.join(ROOT, "BENCHMARKS.md"))
WARMUP_SECONDS = 1.0 if QUICK else 2.0
CAPS = os.environ.get("BENCH_CAPS", "1") not in ("", "0")
PERSIST_WASM = os.path.abspath(os.environ.get("PERSIST_WASM") or os.path.join(
    ROOT, "target/wasm32-wasip1/release/envoy_persist.wasm"))
NOOP_WASM = os.path.abspath(os.environ.get("NOOP_WASM") or os.path.join(
    ROOT, "target/wasm32-wasip1/release/noop_filter.wasm"))
B_WASM = os.path.abspath(os.environ["BENCH_B_WASM"]) if os.environ.get("BENCH_B_WASM") else None
B_NATIVE = os.path.abspath(os.environ["BENCH_B_NATIVE"]) if os.environ.get("BENCH_B_NATIVE") else None
PERF_DIR = os.path.abspath(os.environ["BENCH_PERF"]) if os.environ.get("BENCH_PERF") else None
PERF_ARGS = (os.environ.get("BENCH_PERF_ARGS") or "-e cpu-clock -g").split()
# The demo key of envoy/http-cookie.yaml: fixed, so a steady cookie can be obtained once.
COOKIE_KEY = "ZW52b3ktcGVyc2lzdCBkZW1vIGtleTogQ0hBTkdFISE="
BACKENDS = [PORT_BASE + 81, PORT_BASE + 82, PORT_BASE + 83]
# The hand-off header of the pinned cases: the first backend, as the header session state
# reads it (base64 of ip:port).
PINNED = base64.b64encode(f"127.0.0.1:{BACKENDS[0]}".encode()).decode()
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- what runs -------------------------------------------------------------------------

# One Envoy per configuration. table: preload (wrk keys.lua kind) and expected entries.
ENVOYS = {
    "plain": {"filters": "filters-plain.yaml"},
    "native": {"filters": "filters-native-cookie.yaml"},
    "noop": {"filters": "filters-noop-wasm.yaml", "module": NOOP_WASM},
    "floor": {"filters": "filters-floor.yaml", "module": NOOP_WASM},
    "handoff": {"filters": "filters-handoff.yaml"},
    "cookie": {"filters": "filters-persist.yaml", "module": PERSIST_WASM, "profile": "web",
               "plugin": {"name": "web", "type": "http_cookie",
                          "cookie": {"name": "persist", "format": "sealed", "keys": [COOKIE_KEY]}}},
    "header": {"filters": "filters-persist.yaml", "module": PERSIST_WASM, "profile": "users",
               "plugin": {"name": "users", "type": "http_header", "timeout": "1h",
                          "max_entries": MAX_ENTRIES, "header": {"name": "x-user"}},
               "preload": "header"},
    "app": {"filters": "filters-persist.yaml", "module": PERSIST_WASM, "profile": "app",
            "plugin": {"name": "app", "type": "app_cookie", "timeout": "1h",
                       "max_entries": MAX_ENTRIES, "app_cookie": {"name": "JSESSIONID"}},
            "preload": "login"},
    "ip": {"filters": "filters-persist.yaml", "module": PERSIST_WASM, "profile": "clients",
           "plugin": {"name": "clients", "type": "client_ip", "timeout": "1h",
                      "max_entries": MAX_ENTRIES, "client_ip": {"ipv4_prefix": 32}},
           "preload": "xff"},
    # Optional (BENCH_CASES names them): the same without the capability restriction.
    "noop-open": {"filters": "filters-noop-wasm.yaml", "module": NOOP_WASM, "caps": False},
    "floor-open": {"filters": "filters-floor.yaml", "module": NOOP_WASM, "caps": False},
    "cookie-open": {"filters": "filters-persist.yaml", "module": PERSIST_WASM, "profile": "web", "caps": False,
                    "plugin": {"name": "web", "type": "http_cookie",
                               "cookie": {"name": "persist", "format": "sealed", "keys": [COOKIE_KEY]}}},
}

K = f"{ENTRIES // 1000}k" if ENTRIES % 1000 == 0 else str(ENTRIES)
# id, envoy, title, load: ("static", cookie-to-fetch or None) | ("pinned", None): a fixed
# x-persist-upstream naming the first backend | ("keys", kind), target (req/s ratio to plain)
CASES = [
    ("plain", "plain", "plain Envoy (round robin, no filter)", ("static", None), "1.000"),
    ("plain-lua", "plain", "plain Envoy, wrk Lua random requests (control)", ("keys", "header"), ""),
    ("native-steady", "native", "native stateful_session cookie, steady", ("static", "global-session-cookie"), ""),
    ("native-new", "native", "native stateful_session cookie, new clients", ("static", None), ""),
    ("handoff-pinned", "handoff", "stateful_session header hand-off alone, pinned", ("pinned", None), ""),
    ("noop", "noop", "no-op proxy-wasm filter", ("static", None), ""),
    ("floor-new", "floor", "**floor**: no-op wasm + hand-off, new clients", ("static", None), ""),
    ("floor-pinned", "floor", "**floor**: no-op wasm + hand-off, pinned", ("pinned", None), ""),
    ("sealed-steady", "cookie", "persist http_cookie sealed, steady", ("static", "persist"), ""),
    ("sealed-new", "cookie", "persist http_cookie sealed, new clients", ("static", None), ""),
    ("header", "header", f"persist http_header, {K} learned, random hits", ("keys", "header"), ""),
    ("app-cookie", "app", f"persist app_cookie, {K} learned, random hits", ("keys", "cookie"), ""),
    ("client-ip", "ip", f"persist client_ip, {K} learned, random XFF", ("keys", "xff"), ""),
    # Optional: without the capability restriction (A/B of bench/envoy/capabilities.yaml).
    ("noop-open", "noop-open", "no-op proxy-wasm filter, unrestricted", ("static", None), ""),
    ("floor-pinned-open", "floor-open", "floor pinned, unrestricted", ("pinned", None), ""),
    ("floor-new-open", "floor-open", "floor new clients, unrestricted", ("static", None), ""),
    ("sealed-steady-open", "cookie-open", "persist sealed, steady, unrestricted", ("static", "persist"), ""),
    ("sealed-new-open", "cookie-open", "persist sealed, new clients, unrestricted", ("static", None), ""),
]
OPTIONAL = {"noop-open", "floor-pinned-open", "floor-new-open", "sealed-steady-open", "sealed-new-open"}
# Each case of ours against its floor (issue 12): steady and table cases against the pinned
# floor, new clients against the new one; the target is the req/s ratio to that floor.
FLOORS = {
    "sealed-steady": ("floor-pinned", ">=0.97"),
    "sealed-new": ("floor-new", ">=0.95"),
    "header": ("floor-pinned", ">=0.95"),
    "app-cookie": ("floor-pinned", ">=0.95"),
    "client-ip": ("floor-pinned", ">=0.95"),
    "sealed-steady-open": ("floor-pinned-open", ""),
    "sealed-new-open": ("floor-new-open", ""),
}

if B_WASM:
    for _name in ("cookie", "header", "app", "ip"):
        ENVOYS[_name + "-b"] = dict(ENVOYS[_name], module=B_WASM)
    _with_b = []
    for _c in CASES:
        _with_b.append(_c)
        if _c[1] in ("cookie", "header", "app", "ip"):
            _with_b.append((_c[0] + "-b", _c[1] + "-b", _c[2] + " [B]", _c[3], _c[4]))
            if _c[0] in FLOORS:
                FLOORS[_c[0] + "-b"] = FLOORS[_c[0]]
    CASES = _with_b

# --- the native module (Envoy dynamic module) beside the wasm cases ----------------------
# Same plugins as the wasm cases, in bench/envoy/filters-persist-native.yaml; each Envoy
# finds the module by name through ENVOY_DYNAMIC_MODULES_SEARCH_PATH, set to a copy of it in
# the run directory (run_dir/native, run_dir/native-b). Skipped when not built.
PERSIST_NATIVE = os.path.abspath(os.environ.get("PERSIST_NATIVE") or os.path.join(
    ROOT, "target/native/libenvoy_persist_native.so"))
if os.path.isfile(PERSIST_NATIVE):
    for _wasm in ("cookie", "header", "app", "ip"):
        ENVOYS["dm-" + _wasm] = dict(ENVOYS[_wasm], filters="filters-persist-native.yaml")
        ENVOYS["dm-" + _wasm].pop("module", None)
    CASES += [
        ("dm-sealed-steady", "dm-cookie", "native module http_cookie sealed, steady", ("static", "persist"), ">=0.974"),
        ("dm-sealed-new", "dm-cookie", "native module http_cookie sealed, new clients", ("static", None), ">=0.95"),
        ("dm-header", "dm-header", f"native module http_header, {K} learned, random hits", ("keys", "header"), ">=0.95"),
        ("dm-app-cookie", "dm-app", f"native module app_cookie, {K} learned, random hits", ("keys", "cookie"), ">=0.95"),
        ("dm-client-ip", "dm-ip", f"native module client_ip, {K} learned, random XFF", ("keys", "xff"), ">=0.95"),
    ]
    if B_NATIVE:
        # The B build is found under the same name, in its own directory (run_dir/native-b).
        for _wasm in ("cookie", "header", "app", "ip"):
            ENVOYS["dm-" + _wasm + "-b"] = dict(ENVOYS["dm-" + _wasm], native_b=True)
        _with_b = []
        for _c in CASES:
            _with_b.append(_c)
            if _c[0].startswith("dm-"):
                _with_b.append((_c[0] + "-b", _c[1] + "-b", _c[2] + " [B]", _c[3], _c[4]))
        CASES = _with_b

# --- small helpers ---------------------------------------------------------------------


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fill(template_path, **values):
    with open(template_path) as f:
        text = string.Template(f.read()).safe_substitute(**values)
    left = re.findall(r"\$\{[A-Z0-9_]+\}", text)
    if left:
        raise RuntimeError(f"{template_path}: unfilled {left}")
    return text


def yaml_lines(text):
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def snippet(name, caps=True, **values):
    """A filters-*.yaml snippet without its comment lines; an `@@CAPABILITIES@@` line becomes
    bench/envoy/capabilities.yaml (at its indentation), or nothing when `caps` is off."""
    out = []
    for line in yaml_lines(fill(os.path.join(BENCH, "envoy", name), **values)):
        if line.strip() != "@@CAPABILITIES@@":
            out.append(line)
        elif caps:
            indent = line[: len(line) - len(line.lstrip())]
            with open(os.path.join(BENCH, "envoy", "capabilities.yaml")) as f:
                out.extend(indent + c for c in yaml_lines(f.read()))
    return out


def envoy_config(name, spec, port, admin_port):
    plugin = spec.get("plugin", {})
    if plugin and os.environ.get("BENCH_PLUGIN"):
        plugin = {**plugin, **json.loads(os.environ["BENCH_PLUGIN"])}
    plugin = json.dumps(plugin, separators=(",", ":"))
    lines = snippet(spec["filters"], caps=CAPS and spec.get("caps", True), NOOP_WASM=NOOP_WASM,
                    PERSIST_WASM=spec.get("module", PERSIST_WASM), PLUGIN_JSON=plugin)
    return envoy_config_with(lines, port, admin_port)


def envoy_config_with(filter_lines, port, admin_port):
    """bench/envoy/base.yaml (listener, admin, the backends cluster) with `filter_lines` as
    its HTTP filters."""
    base = fill(os.path.join(BENCH, "envoy", "base.yaml"), ADMIN_PORT=admin_port, PORT=port,
                BACKEND1=BACKENDS[0], BACKEND2=BACKENDS[1], BACKEND3=BACKENDS[2], HTTP_FILTERS="@@FILTERS@@")
    out = []
    for line in base.splitlines():
        if line.strip() == "@@FILTERS@@":
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + s for s in filter_lines)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def pinned(argv, cpus):
    """`argv` run on the CPU list `cpus` (BENCH_PIN), or as it is."""
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def start_backends(procs, run_dir, nginx_bin):
    """The nginx of bench/nginx.conf (the three backends) under `procs`, once it listens."""
    conf = os.path.join(run_dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(fill(os.path.join(BENCH, "nginx.conf"), RUN=run_dir, BACKEND1=BACKENDS[0],
                     BACKEND2=BACKENDS[1], BACKEND3=BACKENDS[2]))
    ng = procs.start("nginx", pinned([nginx_bin, "-p", run_dir, "-c", conf, "-e", os.path.join(run_dir, "nginx-error.log")],
                                     PIN_LOAD))
    for p in BACKENDS:
        wait_port(p, ng, "nginx")
    return ng


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def http_get(port, path="/", headers=None, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, r.getheaders(), body
    finally:
        c.close()


def admin(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def stats(port, regex):
    text = admin(port, "/stats?filter=" + urllib.request.quote(regex))
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(": ")
        try:
            out[k.strip()] = int(v)
        except ValueError:
            pass
    return out


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def module_sizes(path):
    size = os.path.getsize(path)
    opt = None
    if shutil.which("wasm-opt"):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "m.wasm")
            r = subprocess.run(["wasm-opt", "--all-features", "-O3", "--strip-debug", "--strip-producers",
                                path, "-o", out], capture_output=True)
            if r.returncode == 0:
                opt = os.path.getsize(out)
    return size, opt


def tool_version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - only informative
        return f"? ({e})"


# --- processes -------------------------------------------------------------------------


class Procs:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.procs = []

    def start(self, name, argv, **kw):
        logf = open(os.path.join(self.run_dir, f"{name}.log"), "wb")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, **kw)
        self.procs.append((name, p))
        return p

    def stop(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 5
        for _, p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: port {port} not open after {timeout}s")


def wait_ready(envoy):
    deadline = time.time() + 60
    while time.time() < deadline:
        if envoy["proc"].poll() is not None:
            raise RuntimeError(f"envoy {envoy['name']} exited ({envoy['proc'].returncode}), "
                               f"see {envoy['log']}")
        try:
            if admin(envoy["admin"], "/ready").strip() == "LIVE":
                st, _, _ = http_get(envoy["port"])
                if st == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"envoy {envoy['name']} not ready, see {envoy['log']}")


# --- wrk -------------------------------------------------------------------------------


def wrk_cmd(port, seconds, script, headers=(), path="/"):
    argv = ["wrk", "-t", str(THREADS), "-c", str(CONNS), "-d", f"{seconds:g}s", "--timeout", "2s",
            "-s", os.path.join(BENCH, "lua", script)]
    for h in headers:
        argv += ["-H", h]
    return pinned(argv + [f"http://127.0.0.1:{port}{path}"], PIN_LOAD)


def wrk_env(kind, mode, keys):
    e = dict(os.environ)
    e.update(BENCH_KIND=kind, BENCH_MODE=mode, BENCH_KEYS=str(keys), BENCH_THREADS=str(THREADS))
    return e


def parse_wrk(out):
    for line in out.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError("wrk printed no result:\n" + out)


def run_wrk(argv, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr}\n{r.stdout}")
    return parse_wrk(r.stdout)


def preload(envoy, kind, keys):
    """Sends every key once (wrk keys.lua preload mode), stops wrk when all threads are done."""
    p = subprocess.Popen(wrk_cmd(envoy["port"], 600, "keys.lua"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=wrk_env(kind, "preload", keys))
    done = 0
    t0 = time.time()
    try:
        for line in p.stdout:
            if line.startswith("PRELOADED"):
                done += 1
                if done == THREADS:
                    break
    finally:
        p.kill()
        p.wait()
    return time.time() - t0


def persist_counters(envoy):
    prefix = f"wasmcustom.persist.{envoy['profile']}."
    s = stats(envoy["admin"], "^" + re.escape(prefix))
    return {k[len(prefix):]: v for k, v in s.items()}


def wait_entries(envoy, expected, timeout=15):
    """Polls the entries gauge until it stops moving; returns (entries, counters)."""
    last, stable_since = None, time.time()
    deadline = time.time() + timeout
    while True:
        c = persist_counters(envoy)
        n = c.get("entries", 0)
        if n != last:
            last, stable_since = n, time.time()
        if (n >= expected and time.time() - stable_since >= 1.5) or time.time() - stable_since >= 3 \
                or time.time() > deadline:
            return n, c
        time.sleep(0.5)


def steady_cookie(envoy, name):
    _, headers, _ = http_get(envoy["port"])
    for k, v in headers:
        if k.lower() == "set-cookie" and v.startswith(name + "="):
            return v.split(";", 1)[0]
    raise RuntimeError(f"envoy {envoy['name']}: no Set-Cookie {name} in {headers}")


# --- main ------------------------------------------------------------------------------


def main():
    selected = os.environ.get("BENCH_CASES", "").strip()
    cases = [c for c in CASES if c[0] not in OPTIONAL]
    if selected:
        want = {c.strip() for c in selected.split(",")} | {"plain"}
        unknown = want - {c[0] for c in CASES}
        if unknown:
            sys.exit(f"BENCH_CASES: unknown {sorted(unknown)}; known: {[c[0] for c in CASES]}")
        want |= {c + "-b" for c in want if (B_WASM or B_NATIVE) and any(x[0] == c + "-b" for x in CASES)}
        want |= {FLOORS[c][0] for c in want if c in FLOORS}
        cases = [c for c in CASES if c[0] in want]
    used_envoys = [n for n in ENVOYS if any(c[1] == n for c in cases)]

    envoy_bin = os.environ.get("ENVOY_BIN") or subprocess.run(
        [os.path.join(ROOT, "scripts", "envoy-bin.sh")], capture_output=True, text=True, check=True).stdout.strip()
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    for what, path in (("wrk", shutil.which("wrk")), ("nginx", nginx_bin if os.path.exists(nginx_bin) else None),
                       ("envoy", envoy_bin), ("envoy_persist.wasm", PERSIST_WASM), ("noop_filter.wasm", NOOP_WASM)):
        if not path or not os.path.exists(path):
            sys.exit(f"bench: {what} not found ({path}); run `make bench` (it builds and installs them)")

    ports = BACKENDS + [PORT_BASE + 100 + i for i in range(len(ENVOYS))] + \
        [PORT_BASE + 200 + i for i in range(len(ENVOYS))]
    busy = [p for p in ports if not port_free(p)]
    if busy:
        sys.exit(f"bench: ports in use: {busy} (set BENCH_PORT_BASE)")

    run_dir = os.path.join(BENCH, "out", "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    # The Envoys load copies: a rebuild during the run changes neither them nor the sizes reported.
    for var in ("PERSIST_WASM", "NOOP_WASM"):
        copy = os.path.join(run_dir, os.path.basename(globals()[var]))
        shutil.copyfile(globals()[var], copy)
        globals()[var] = copy
    if B_WASM:
        copy = os.path.join(run_dir, "B-" + os.path.basename(B_WASM))
        shutil.copyfile(B_WASM, copy)
    # The native builds under the name Envoy looks for, whatever their file is called.
    for sub, path in (("native", PERSIST_NATIVE), ("native-b", B_NATIVE)):
        if path and os.path.isfile(path):
            os.makedirs(os.path.join(run_dir, sub))
            shutil.copyfile(path, os.path.join(run_dir, sub, "libenvoy_persist_native.so"))
    if PERF_DIR:
        os.makedirs(PERF_DIR, exist_ok=True)
    for spec in ENVOYS.values():
        if "module" in spec:
            b = B_WASM and spec["module"] == B_WASM
            spec["module"] = os.path.join(run_dir, ("B-" if b else "") + os.path.basename(spec["module"]))
    revision = git_revision()
    procs = Procs(run_dir)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    try:
        start_backends(procs, run_dir, nginx_bin)

        # Envoys, all at once; each idles while the others are measured.
        envoys = {}
        for i, name in enumerate(ENVOYS):
            if name not in used_envoys:
                continue
            spec = ENVOYS[name]
            port, admin_port = PORT_BASE + 100 + i, PORT_BASE + 200 + i
            cfg = os.path.join(run_dir, f"envoy-{name}.yaml")
            with open(cfg, "w") as f:
                f.write(envoy_config(name, spec, port, admin_port))
            env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=os.path.join(
                run_dir, "native-b" if spec.get("native_b") else "native"))
            proc = procs.start(f"envoy-{name}", pinned([envoy_bin, "-c", cfg, "--concurrency", "1", "--disable-hot-restart",
                                                        "--log-level", "warn"], PIN_ENVOY), env=env)
            envoys[name] = dict(spec, name=name, port=port, admin=admin_port, proc=proc, pid=proc.pid,
                                log=os.path.join(run_dir, f"envoy-{name}.log"))
        for e in envoys.values():
            wait_ready(e)
        log(f"nginx + {len(envoys)} Envoys up ({envoy_bin}); run dir {run_dir}")

        # Warm every Envoy (V8 compiles lazily, pools fill), then preload the tables.
        for e in envoys.values():
            run_wrk(wrk_cmd(e["port"], WARMUP_SECONDS, "report.lua"))
        tables = {}
        for e in envoys.values():
            if "preload" not in e:
                continue
            before = proc_rss_kb(e["pid"])
            secs = 0.0
            n, c = 0, {}
            for attempt in range(3):
                secs += preload(e, e["preload"], ENTRIES)
                n, c = wait_entries(e, ENTRIES)
                if n + c.get("evicted", 0) >= ENTRIES:
                    break
                log(f"{e['name']}: entries {n} after preload pass {attempt + 1}, sending the keys again")
            after = proc_rss_kb(e["pid"])
            ok = n + c.get("evicted", 0) >= ENTRIES
            tables[e["name"]] = dict(entries=n, evicted=c.get("evicted", 0), expected=ENTRIES, ok=ok,
                                     rss_before_kb=before, rss_after_kb=after, preload_s=secs,
                                     bytes_per_entry=(after - before) * 1024 / n if n else None)
            log(f"{e['name']}: preloaded {n} entries (expected {ENTRIES}, evicted {c.get('evicted', 0)}) in "
                f"{secs:.1f}s; RSS {before // 1024} -> {after // 1024} MiB"
                + ("" if ok else "  ** entries below the expected count **"))

        # Interleaved rounds.
        results = {c[0]: [] for c in cases}
        loads = []
        for rnd in range(ROUNDS):
            for cid, ename, title, load, _ in cases:
                e = envoys[ename]
                kind, arg = load
                if kind == "static":
                    headers = [f"Cookie: {steady_cookie(e, arg)}"] if arg else []
                    argv, env = wrk_cmd(e["port"], SECONDS, "report.lua", headers), None
                elif kind == "pinned":
                    argv, env = wrk_cmd(e["port"], SECONDS, "report.lua", [f"x-persist-upstream: {PINNED}"]), None
                else:
                    argv, env = wrk_cmd(e["port"], SECONDS, "keys.lua"), wrk_env(arg, "random", ENTRIES)
                has_counters = "profile" in e
                c0 = persist_counters(e) if has_counters else {}
                s0 = stats(e["admin"], r"^http\.ingress_http\.downstream_rq_(2xx|completed)$")
                cpu0 = proc_cpu_s(e["pid"])
                loads.append(loadavg())
                perf = None
                if PERF_DIR:
                    perf = subprocess.Popen(
                        ["perf", "record", "-q", *PERF_ARGS, "-p", str(e["pid"]),
                         "-o", os.path.join(PERF_DIR, f"{cid}-r{rnd + 1}.data")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.3)
                w = run_wrk(argv, env)
                if perf:
                    perf.send_signal(signal.SIGINT)
                    try:
                        perf.wait(30)
                    except subprocess.TimeoutExpired:
                        perf.kill()
                        perf.wait()
                cpu1 = proc_cpu_s(e["pid"])
                s1 = stats(e["admin"], r"^http\.ingress_http\.downstream_rq_(2xx|completed)$")
                if has_counters:
                    time.sleep(1.2)  # the filter flushes its counters once a second
                c1 = persist_counters(e) if has_counters else {}
                d = {k: s1.get(k, 0) - s0.get(k, 0) for k in s1}
                completed = d.get("http.ingress_http.downstream_rq_completed", 0)
                ok2xx = d.get("http.ingress_http.downstream_rq_2xx", 0)
                rps = w["requests"] / (w["duration_us"] / 1e6)
                results[cid].append(dict(
                    rps=rps, p50_ms=w["p50_us"] / 1000, p99_ms=w["p99_us"] / 1000,
                    non2xx=completed - ok2xx, wrk_status_errors=w["status_errors"],
                    socket_errors=w["connect"] + w["read"] + w["write"] + w["timeout"],
                    requests=w["requests"], cpu_us_per_req=(cpu1 - cpu0) * 1e6 / max(1, w["requests"]),
                    counters={k: c1.get(k, 0) - c0.get(k, 0) for k in c1 if k != "entries"},
                    rss_kb=proc_rss_kb(e["pid"])))
                log(f"round {rnd + 1}/{ROUNDS} {cid:14s} {rps:9.0f} req/s  p50 {w['p50_us'] / 1000:.2f} ms  "
                    f"p99 {w['p99_us'] / 1000:.2f} ms  non-2xx {completed - ok2xx}")
        load_end = loadavg()
        for e in envoys.values():
            if e["proc"].poll() is not None:
                raise RuntimeError(f"envoy {e['name']} died during the run, see {e['log']}")
    finally:
        procs.stop()

    # --- report ------------------------------------------------------------------------
    sizes = {"envoy_persist.wasm": module_sizes(PERSIST_WASM), "noop_filter.wasm": module_sizes(NOOP_WASM)}
    rows = []
    for cid, ename, title, load, target in cases:
        runs = results[cid]
        ratios = [r["rps"] / results["plain"][i]["rps"] for i, r in enumerate(runs)]
        cpu_ratios = [results["plain"][i]["cpu_us_per_req"] / r["cpu_us_per_req"] for i, r in enumerate(runs)
                      if r["cpu_us_per_req"] > 0]
        counters = {}
        for r in runs:
            for k, v in r["counters"].items():
                counters[k] = counters.get(k, 0) + v
        hits = counters.get("hit", 0)
        looked = hits + counters.get("miss", 0)
        module = ENVOYS[ename].get("module")
        t = tables.get(ename)
        floor_id, floor_target = FLOORS.get(cid, (None, ""))
        floor_runs = results.get(floor_id)
        vs_floor = above_floor = None
        if floor_runs:
            vs_floor = statistics.median(r["rps"] / f["rps"] for r, f in zip(runs, floor_runs))
            above_floor = statistics.median(r["cpu_us_per_req"] - f["cpu_us_per_req"]
                                            for r, f in zip(runs, floor_runs))
        rows.append(dict(
            id=cid, title=title, target=target, floor=floor_id, floor_target=floor_target,
            vs_floor=vs_floor, above_floor_us=above_floor,
            rps=statistics.median(r["rps"] for r in runs),
            ratio=statistics.median(ratios),
            cpu_ratio=statistics.median(cpu_ratios) if cpu_ratios else None,
            p50_ms=statistics.median(r["p50_ms"] for r in runs),
            p99_ms=statistics.median(r["p99_ms"] for r in runs),
            non2xx=sum(r["non2xx"] for r in runs),
            socket_errors=sum(r["socket_errors"] for r in runs),
            cpu_us=statistics.median(r["cpu_us_per_req"] for r in runs),
            rss_mib=runs[-1]["rss_kb"] / 1024,
            hit_pct=(100.0 * hits / looked) if looked else None,
            counters=counters,
            module=os.path.basename(module) if module else None,
            module_bytes=os.path.getsize(module) if module else None,
            table=t,
            per_round_rps=[r["rps"] for r in runs],
            per_round_cpu=[r["cpu_us_per_req"] for r in runs],
        ))

    machine = describe_machine(envoy_bin, nginx_bin)
    meta = dict(started=started.strftime("%Y-%m-%d %H:%M UTC"), seconds=SECONDS, rounds=ROUNDS, entries=ENTRIES,
                max_entries=MAX_ENTRIES, threads=THREADS, connections=CONNS, quick=QUICK, pin_envoy=PIN_ENVOY, pin_load=PIN_LOAD,
                load_start=load_start, load_end=load_end, load_max=max(loads) if loads else None,
                duration_s=(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
                command=command_line(), sizes=sizes, tables=tables, revision=revision, caps=CAPS)
    table_md = render_table(rows)
    print()
    print(table_md)
    print()
    print(render_modules(sizes))
    print()
    print(render_tables(rows))
    print()
    print(f"{ROUNDS} round(s) x {SECONDS:g} s, wrk -t{THREADS} -c{CONNS}, load average {load_start:.2f} at start, "
          f"{meta['load_max']:.2f} max, {load_end:.2f} at end; {meta['duration_s']:.0f} s in all")
    os.makedirs(os.path.join(BENCH, "out"), exist_ok=True)
    with open(os.path.join(BENCH, "out", "results.json"), "w") as f:
        json.dump(dict(meta=meta, machine=machine, rows=rows), f, indent=2, default=str)
    if WRITE:
        with open(OUT_MD, "w") as f:
            f.write(render_markdown(rows, meta, machine, table_md, sizes))
            # The hand-kept log of optimizations and their measured effect rides along.
            opt_log = os.path.join(BENCH, "OPTIMIZATIONS.md")
            if os.path.exists(opt_log):
                with open(opt_log) as lf:
                    f.write("\n" + lf.read())
        print(f"\nwrote {os.path.relpath(OUT_MD, ROOT)}")


def git_revision():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", "src",
                                "crates", "Cargo.toml", "Cargo.lock"], capture_output=True, text=True).stdout.strip()
        return rev + (" + uncommitted changes in the filter's sources" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line():
    parts = []
    for k in ("BENCH_QUICK", "BENCH_SECONDS", "BENCH_ROUNDS", "BENCH_ENTRIES", "BENCH_MAX_ENTRIES", "BENCH_THREADS",
              "BENCH_CONNECTIONS", "BENCH_CASES", "BENCH_CAPS", "BENCH_PERF"):
        if os.environ.get(k):
            parts.append(f"{k}={os.environ[k]}")
    return " ".join(parts + ["make bench"])


def describe_machine(envoy_bin, nginx_bin):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    os_name = platform.platform()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    envoy_v = tool_version([envoy_bin, "--version"])
    m = re.search(r"/(\d+\.\d+\.\d+)/", envoy_v)
    return dict(cpu=cpu, nproc=os.cpu_count(), mem=mem, os=os_name, kernel=platform.release(),
                envoy=m.group(1) if m else envoy_v, nginx=tool_version([nginx_bin, "-v"]),
                wrk=tool_version(["wrk", "-v"]).split(" Copyright")[0])


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def render_table(rows):
    head = ["case", "req/s", "ratio", "vs floor", "floor target", "p50 ms", "p99 ms", "non-2xx", "Envoy CPU µs/req",
            "µs above floor", "CPU ratio", "hit %", "RSS MiB", "RSS B/entry", "module bytes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    for r in rows:
        t = r["table"]
        non2xx = str(r["non2xx"]) + (f" (+{r['socket_errors']} sock)" if r["socket_errors"] else "")
        lines.append("| " + " | ".join([
            r["title"], f"{r['rps']:.0f}", f"{r['ratio']:.3f}",
            fmt(r["vs_floor"], ".3f") + (f" ({r['floor']})" if r["floor"] else ""), r["floor_target"] or "-",
            f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", non2xx, f"{r['cpu_us']:.1f}", fmt(r["above_floor_us"], "+.1f"),
            fmt(r["cpu_ratio"], ".3f"), fmt(r["hit_pct"], ".1f"), f"{r['rss_mib']:.0f}",
            fmt(t and t["bytes_per_entry"], ".0f"), fmt(r["module_bytes"], "d")]) + " |")
    return "\n".join(lines)


def render_modules(sizes):
    lines = ["| module | bytes (as built) | bytes after `wasm-opt -O3 --strip-debug` |", "|---|--:|--:|"]
    for name, (size, opt) in sizes.items():
        lines.append(f"| {name} | {size} | {fmt(opt, 'd', 'n/a')} |")
    return "\n".join(lines)


def render_tables(rows):
    lines = ["| table case | entries (expected) | evicted | preload s | Envoy RSS before → after | per entry |",
             "|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        t = r["table"]
        if not t or r["id"] == "plain-lua":
            continue
        lines.append(f"| {r['title']} | {t['entries']} ({t['expected']}){'' if t['ok'] else ' **short**'} | "
                     f"{t['evicted']} | {t['preload_s']:.1f} | {t['rss_before_kb'] / 1024:.1f} → "
                     f"{t['rss_after_kb'] / 1024:.1f} MiB | {fmt(t['bytes_per_entry'], '.0f')} B |")
    return "\n".join(lines)


def render_markdown(rows, meta, machine, table_md, sizes):
    busy_note = ""
    pin_note = ""
    if meta.get("pin_envoy") or meta.get("pin_load"):
        pin_note = (f"; every Envoy pinned to CPU {meta['pin_envoy'] or 'any'}, wrk and nginx to CPU "
                    f"{meta['pin_load'] or 'any'} (`BENCH_PIN={meta['pin_envoy']}:{meta['pin_load']}`)")
    # The run itself keeps about nproc tasks runnable (wrk's threads, nginx, the Envoy under
    # test): only a load beyond that says other jobs shared the host.
    if meta["load_max"] and meta["load_max"] > machine["nproc"] + 1:
        busy_note = (f"\n\n> **This run shared the host with other jobs** (load average up to {meta['load_max']:.1f} on "
                     f"{machine['nproc']} CPUs): the req/s ratios are dominated by that noise; the CPU ratio "
                     f"(Envoy CPU time per request) is the steadier figure. Run `make bench` on an idle host for "
                     f"the req/s ratios.")
    rounds = ["| case | " + " | ".join(f"round {i + 1}" for i in range(meta["rounds"])) + " |",
              "|---|" + "--:|" * meta["rounds"]]
    cpu_rounds = list(rounds)
    for r in rows:
        rounds.append(f"| {r['id']} | " + " | ".join(f"{v:.0f}" for v in r["per_round_rps"]) + " |")
        cpu_rounds.append(f"| {r['id']} | " + " | ".join(f"{v:.1f}" for v in r["per_round_cpu"]) + " |")
    counters = ["| case | counters over the measured rounds |", "|---|---|"]
    for r in rows:
        if r["counters"]:
            counters.append(f"| {r['id']} | " + ", ".join(f"{k} {v}" for k, v in sorted(r["counters"].items()) if v)
                            + " |")
    return f"""# Benchmarks

Written by `make bench` ([bench/run.py](bench/run.py)); the figures below are the latest run's.
Nothing in the tests asserts timing: the figures live here.

- **When**: {meta['started']}, {meta['duration_s']:.0f} s in all
- **Command**: `{meta['command']}` at revision {meta['revision']}
- **Machine**: {machine['cpu']}, {machine['nproc']} CPUs (nproc), {machine['mem']} RAM, {machine['os']}, Linux {machine['kernel']}
- **Software**: Envoy {machine['envoy']} (`--concurrency 1`, V8), {machine['nginx']} (nginx-light, 1 worker,
  three server blocks), {machine['wrk']}
- **Load**: wrk `-t{meta['threads']} -c{meta['connections']}` keep-alive connections, {meta['seconds']:g} s per
  measurement, {meta['rounds']} interleaved rounds (every case once per round, in the order below);
  figures are medians over the rounds, a ratio is the median of the per-round ratios to plain Envoy{pin_note}
- **Host load**: load average {meta['load_start']:.2f} at start, {meta['load_max']:.2f} at most, {meta['load_end']:.2f}
  at the end (wrk, nginx and the Envoys share the {machine['nproc']} CPUs; other jobs on the host make the
  figures noisy, which the interleaving and the per-round ratios only partly absorb){busy_note}

## Results

{table_md}

- **ratio**: req/s relative to plain Envoy in the same round.
- **The floor**: what any proxy-wasm filter handing a server to Envoy costs: the no-op wasm
  filter (`crates/noop-filter`: a context per request, no host call) followed by the same
  `stateful_session` header hand-off the persist cases use, with the same capability
  restriction (`bench/envoy/capabilities.yaml`{'' if meta['caps'] else ', left out in this run: BENCH_CAPS=0'}).
  *Pinned*: wrk sends a fixed `x-persist-upstream` (the first backend), so Envoy applies a
  hand-off on every request, as for a steady client or a table hit; *new clients*: no header,
  Envoy picks a server and writes the response header, as for a new client. The hand-off
  alone (no wasm), pinned, shows what `stateful_session` itself costs.
- **vs floor**: req/s relative to the case's floor in the same round (median of the per-round
  ratios): steady cookies and table hits against the pinned floor, new clients against the
  new one; **floor target**: the goal of issue 12. **µs above floor**: the case's Envoy CPU
  per request minus its floor's, same round (median): what the module itself costs.
- **non-2xx**: answers other than 2xx counted by Envoy (`downstream_rq_completed - downstream_rq_2xx`) over
  all rounds; socket errors reported by wrk are added as "sock".
- **Envoy CPU µs/req**: Envoy's user+system CPU time (all its threads) over the measurement divided by the
  requests: the cost per request, less sensitive than req/s to the other processes on the host.
  **CPU ratio**: plain Envoy's CPU per request over the case's (median of the per-round ratios), the
  req/s ratio to expect where Envoy's one worker is the bottleneck.
- **hit %**: the filter's `hit / (hit + miss)` over the measured rounds (steady clients should hit, new
  clients miss).
- **RSS MiB**: Envoy's VmRSS after the last round; **RSS B/entry**: VmRSS growth while preloading the
  table, divided by its entries.
- **module bytes**: the `.wasm` file the case loads.
- The control case sends the http_header case's random requests (built by wrk's Lua) to plain Envoy: what
  separates it from plain Envoy is wrk's own cost, which the keyed cases pay too.

## Modules

{render_modules(sizes)}

## Persist tables

Each table case is preloaded before the rounds by sending every key once (`bench/lua/keys.lua`,
preload mode); the `entries` gauge (`/stats?filter=wasmcustom`) is then checked. The tables have
`max_entries` {meta['max_entries']} for {meta['entries']} keys: with 16 entries a slot, a table filled to
exactly its capacity evicts a share of the keys before it is full.

{render_tables(rows)}

## Per round (req/s)

{chr(10).join(rounds)}

## Per round (Envoy CPU µs/req)

{chr(10).join(cpu_rounds)}

## Filter counters

{chr(10).join(counters)}

## Setup

- `bench/nginx.conf`: the backends; `/login?id=N` adds `Set-Cookie: JSESSIONID=sN` (what app_cookie learns).
- `bench/envoy/base.yaml` + `filters-*.yaml`: one Envoy per configuration, identical but for the filters
  before the router; the persist cases and the floors use the `stateful_session` hand-off (header session
  state `x-persist-upstream`, `override_host_status: [UNKNOWN, HEALTHY]`); the native case uses
  `envoy.http.stateful_session.cookie`. Every wasm filter (no-op and persist) carries the capability
  restriction of `bench/envoy/capabilities.yaml` in its `vm_config` (README "Performance").
- Steady cookies are fetched from the Envoy under test before every measurement; new clients send none.
- http_header keys `x-user: u<k>`, app_cookie `Cookie: JSESSIONID=s<k>`, client_ip
  `X-Forwarded-For: 10.a.b.c` (`xff_num_trusted_hops: 1`, `ipv4_prefix: 32`), k at random among
  {meta['entries']}.
- Settings: `BENCH_SECONDS`, `BENCH_ROUNDS`, `BENCH_ENTRIES`, `BENCH_CASES`, `BENCH_QUICK=1`
  (see `bench/run.py`).
"""


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as e:
        sys.exit(f"bench: interrupted ({e})")
    except RuntimeError as e:
        sys.exit(f"bench: {e}")
