"""End-to-end harness: the built envoy_persist.wasm in a real Envoy, real backends.

Every Envoy a test starts is one of the example configurations under envoy/, loaded with
PyYAML and patched only where a test machine needs it: listener and admin ports, the module
path, the plugin JSON and the backend ports (plus any explicit `patch` a test passes).

Environment: ENVOY_BIN (default: scripts/envoy-bin.sh), PERSIST_WASM (default:
target/wasm32-wasip1/release/envoy_persist.wasm), PERSIST_NATIVE (the dynamic module, default:
target/native/libenvoy_persist_native.so; used by the envoy/native-*.yaml examples). Only
127.0.0.1 is ever contacted; every wait is bounded.
"""

import base64
import collections
import copy
import functools
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import persist_codec as codec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "envoy"
# The wasm examples; envoy/native-*.yaml load the native module (tests/e2e/test_native.py).
WASM_EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("native-"))
BACKEND_PY = ROOT / "tests" / "backend.py"
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "envoy_persist.wasm"
DEFAULT_NATIVE = ROOT / "target" / "native" / "libenvoy_persist_native.so"
NATIVE_FILTER = "envoy.filters.http.dynamic_modules"
COUNTERS = ("hit", "miss", "new", "rebind", "invalid", "expired", "evicted", "error")
HANDOFF_HEADER = "x-persist-upstream"
LOCAL = "127.0.0.1"
# Envoy's default common_lb_config.update_merge_window (1s), plus a margin: see wait_health.
UPDATE_MERGE_WINDOW = 1.25

# A fixed test key (and a second one for rotation tests): base64 of 32 bytes.
KEY1 = bytes.fromhex("8f" * 8 + "11" * 8 + "c3" * 8 + "5a" * 8)
KEY2 = bytes.fromhex("01" * 8 + "f0" * 8 + "77" * 8 + "e2" * 8)


@functools.lru_cache(maxsize=None)
def envoy_bin() -> str:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    out = subprocess.run([str(ROOT / "scripts" / "envoy-bin.sh")], capture_output=True, text=True, timeout=300)
    return out.stdout.strip()


def wasm_path() -> Path:
    p = Path(os.environ.get("PERSIST_WASM") or DEFAULT_WASM)
    return p if p.is_absolute() else (ROOT / p)


def native_path() -> Path:
    p = Path(os.environ.get("PERSIST_NATIVE") or DEFAULT_NATIVE)
    return p if p.is_absolute() else (ROOT / p)


def native_env() -> dict:
    """The environment Envoy finds the native module in: `dynamic_module_config.name`
    `envoy_persist_native` is lib<name>.so in ENVOY_DYNAMIC_MODULES_SEARCH_PATH."""
    return {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(native_path().parent)}


_HANDED_OUT = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, never one this session handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOCAL, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port")


def deadline_loop(timeout: float, interval: float = 0.1):
    """Yields until `timeout` seconds have passed (bounded polling)."""
    end = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= end:
            return
        time.sleep(interval)


# --- HTTP client: one fresh TCP connection per request ----------------------------------

class SetCookie:
    def __init__(self, raw: str):
        self.raw = raw
        first, *attrs = raw.split("; ")
        self.name, _, self.value = first.partition("=")
        self.attrs = attrs

    @property
    def unquoted(self) -> str:
        v = self.value
        return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v

    def __repr__(self):
        return f"SetCookie({self.raw!r})"


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value) as received
        self.body = body

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name):
        vals = self.all(name)
        return vals[0] if vals else None

    @property
    def server(self):
        """Name of the backend that answered (its x-backend header), None for a local reply."""
        return self.header("x-backend")

    def json(self):
        return json.loads(self.body)

    @property
    def echoed(self):
        """Request headers as the backend received them."""
        return self.json()["headers"]

    def set_cookies(self, name=None):
        out = [SetCookie(v) for v in self.all("set-cookie")]
        return [c for c in out if name is None or c.name == name]

    def persist_cookie(self, name="persist"):
        found = self.set_cookies(name)
        assert len(found) <= 1, f"more than one Set-Cookie for {name}: {found}"
        return found[0] if found else None

    def __repr__(self):
        return f"Response({self.status}, server={self.server}, set-cookie={self.all('set-cookie')})"


def http_request(port, path="/", cookie=None, headers=None, method="GET", timeout=5.0):
    hdrs = {"Connection": "close", "Host": "persist.test"}
    if cookie is not None:
        hdrs["Cookie"] = cookie
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(LOCAL, port, timeout=timeout)
    try:
        conn.request(method, path, headers=hdrs)
        r = conn.getresponse()
        body = r.read()
        return Response(r.status, r.getheaders(), body)
    finally:
        conn.close()


def http_get_text(port, path, timeout=3.0):
    conn = http.client.HTTPConnection(LOCAL, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


# --- backends ------------------------------------------------------------------------------

class Backend:
    def __init__(self, name, port, logdir):
        self.name = name
        self.port = port
        self.addr = f"{LOCAL}:{port}"
        self.logdir = logdir
        self.proc = None

    @property
    def b64(self):
        return base64.b64encode(self.addr.encode()).decode()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10.0):
        assert not self.alive()
        log = open(self.logdir / f"backend-{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(BACKEND_PY), "--port", str(self.port), "--name", self.name],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        for _ in deadline_loop(timeout, 0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend {self.name} exited with {self.proc.returncode}")
            try:
                status, _ = http_get_text(self.port, "/healthz", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
        raise RuntimeError(f"backend {self.name} on {self.port} not up within {timeout}s")

    def kill(self):
        """SIGKILL: the server vanishes without a goodbye, like a crashed host."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def ensure_up(self):
        if not self.alive():
            self.start()


class Backends(list):
    def by_name(self, name):
        for b in self:
            if b.name == name:
                return b
        raise KeyError(name)

    def by_addr(self, addr):
        for b in self:
            if b.addr == addr:
                return b
        raise KeyError(addr)


@pytest.fixture(scope="session")
def _backend_pool(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("backends")
    pool = Backends(Backend(n, free_port(), logdir) for n in ("a", "b", "c"))
    try:
        for b in pool:
            b.start()
        yield pool
    finally:
        for b in pool:
            b.kill()


@pytest.fixture
def backends(_backend_pool):
    """The three backends, all running at the start of the test (restarted if a previous
    test left one down)."""
    for b in _backend_pool:
        b.ensure_up()
    return _backend_pool


# --- Envoy -------------------------------------------------------------------------------------

_LIVE_ENVOYS = []


def load_example(name):
    with open(EXAMPLES / name) as f:
        return yaml.safe_load(f)


def example_plugin_json(name):
    """The plugin JSON of an example file, parsed."""
    cfg = load_example(name)
    for f in _wasm_filters(cfg):
        return json.loads(f["typed_config"]["config"]["configuration"]["value"])
    for f in _native_filters(cfg):
        return json.loads(f["typed_config"]["filter_config"]["value"])
    raise AssertionError(f"no wasm filter in {name}")


def _hcm_configs(cfg):
    for listener in cfg["static_resources"]["listeners"]:
        chains = list(listener.get("filter_chains", []))
        if "default_filter_chain" in listener:
            chains.append(listener["default_filter_chain"])
        for chain in chains:
            for f in chain["filters"]:
                if f["name"] == "envoy.filters.network.http_connection_manager":
                    yield f["typed_config"]


def _wasm_filters(cfg):
    """The HTTP wasm filters, by type: control planes give them names of their own (Istio
    `<namespace>.<plugin>`, Envoy Gateway `envoy.filters.http.wasm/<policy>/...`)."""
    for hcm in _hcm_configs(cfg):
        for f in hcm["http_filters"]:
            if f.get("typed_config", {}).get("@type", "").endswith(".filters.http.wasm.v3.Wasm"):
                yield f


def _native_filters(cfg):
    for hcm in _hcm_configs(cfg):
        for f in hcm["http_filters"]:
            if f["name"] == NATIVE_FILTER:
                yield f


def _cluster(cfg, name="backends"):
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no cluster {name}")


def _backend_endpoints(cfg):
    """The endpoints the test backends stand in for: those of the `backends` cluster, or in
    an example without one (envoy/blue-green.yaml) those of every cluster on the examples'
    backend ports 8081-8089, in order."""
    clusters = cfg["static_resources"]["clusters"]
    if any(c["name"] == "backends" for c in clusters):
        return _cluster(cfg)["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return [ep for c in clusters if "load_assignment" in c
            for group in c["load_assignment"]["endpoints"] for ep in group["lb_endpoints"]
            if 8081 <= ep["endpoint"]["address"]["socket_address"]["port_value"] <= 8089]


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --- the two builds ----------------------------------------------------------------------------
#
# A test module marked `both_builds` runs every test twice: `build` is "wasm" (the example as
# shipped) and "native" (the same example, its wasm filter turned into the dynamic-module filter
# with the same plugin JSON: to_native). Anything the native module cannot express is skipped
# there, the reason in the skip message.

BUILDS = ("wasm", "native")
STATEFUL_SESSION = "envoy.filters.http.stateful_session"
HEADER_MUTATION = "envoy.filters.http.header_mutation"


def to_native(cfg):
    """Turns a wasm example (already patched) into its native form, in place, as the
    envoy/native-*.yaml examples are written: the wasm filter becomes
    envoy.filters.http.dynamic_modules with the same plugin JSON; the stateful_session filter
    after it goes (the module names the host through the ABI), its `strict` moving into the
    plugin JSON; the header_mutation entries that only removed a client's copy of the
    hand-off header go too (the module removes it itself, and the tests check that); the
    stats tag regex follows the stats to Envoy's dynamic-module namespace. Returns whether the
    configuration was strict. Skips (pytest.skip) what has no native form."""
    strict = False
    for hcm in _hcm_configs(cfg):
        filters = hcm["http_filters"]
        handoff_headers = set()
        for f in filters:
            if f["name"] == STATEFUL_SESSION:
                tc = f["typed_config"]
                handoff_headers.add(tc["session_state"]["typed_config"]["name"].lower())
                strict = strict or bool(tc.get("strict"))
        out = []
        for f in filters:
            tc = f.get("typed_config", {})
            if tc.get("@type", "").endswith(".filters.http.wasm.v3.Wasm"):
                text = tc["config"]["configuration"]["value"]
                try:
                    plugin = json.loads(text)
                except ValueError:
                    plugin = None
                if isinstance(plugin, dict):
                    handoff_headers.add(plugin.get("upstream_header", HANDOFF_HEADER).lower())
                out.append({"name": NATIVE_FILTER, "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                    "dynamic_module_config": {"name": native_path().stem.removeprefix("lib")},
                    "filter_name": "persist",
                    "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": text},
                }})
            elif f["name"] == STATEFUL_SESSION:
                continue
            elif f["name"] == HEADER_MUTATION:
                m = tc.get("mutations", {})
                for side in ("request_mutations", "response_mutations"):
                    if side in m:
                        m[side] = [x for x in m[side] if str(x.get("remove", "")).lower() not in handoff_headers]
                        if not m[side]:
                            del m[side]
                if m:
                    out.append(f)
            else:
                out.append(f)
        hcm["http_filters"] = out
    for c in cfg["static_resources"]["clusters"]:
        for p in c.get("load_balancing_policy", {}).get("policies", []):
            if "override_host" in p["typed_extension_config"]["name"]:
                pytest.skip("hand-off override_host (this load balancing policy) is the wasm module's: the "
                            "native module names the host through the ABI's upstream override "
                            "(README \"Native module\")")
    if strict:
        for f in _native_filters(cfg):
            fc = f["typed_config"]["filter_config"]
            plugin = json.loads(fc["value"])
            plugin["strict"] = True
            fc["value"] = json.dumps(plugin)
    for tag in cfg.get("stats_config", {}).get("stats_tags", []):
        if "regex" in tag:
            tag["regex"] = tag["regex"].replace("wasmcustom", "dynamicmodulescustom")
    assert not list(_wasm_filters(cfg))
    return strict


def pytest_configure(config):
    config.addinivalue_line("markers", "both_builds: run each test against the wasm module and the native "
                                       "module (the `build` fixture)")
    config.addinivalue_line("markers", "wasm_only(reason): under both_builds, the native run is skipped with "
                                       "this reason")


def pytest_generate_tests(metafunc):
    if "build" not in metafunc.fixturenames or not metafunc.definition.get_closest_marker("both_builds"):
        return
    only = metafunc.definition.get_closest_marker("wasm_only")
    native = pytest.param("native", marks=pytest.mark.skip(reason=only.args[0])) if only else "native"
    metafunc.parametrize("build", ["wasm", native], indirect=True)


@pytest.fixture
def build(request):
    """The build under test: "wasm" unless the module is marked both_builds."""
    return getattr(request, "param", "wasm")


def plugin_config(handoff="stateful_session", **over):
    """A test plugin config: named `e2e`, a fixed key, overridable (deep merge)."""
    base = {"name": "e2e", "type": "http_cookie", "handoff": handoff,
            "cookie": {"name": "persist", "keys": [codec.key_b64(KEY1)]}}
    return deep_merge(base, over)


class Envoy:
    def __init__(self, example, plugin, backends, workdir, concurrency=2, patch=None, build="wasm"):
        assert build in BUILDS, build
        self.build = build
        self.strict = False
        self.example = example
        self.backends = backends
        self.workdir = workdir
        self.concurrency = concurrency
        self.port = free_port()
        self.admin_port = free_port()
        self.proc = None
        self.cfg = load_example(example)
        if plugin is None:
            self.plugin = example_plugin_json(example)
            plugin_text = None
        elif isinstance(plugin, str):
            self.plugin = None
            plugin_text = plugin
        else:
            self.plugin = plugin
            plugin_text = json.dumps(plugin)
        self._patch(plugin_text)
        if patch:
            patch(self.cfg)
        if build == "native" and not self.native:
            self.strict = to_native(self.cfg)
            self.native = True
        idx = len(list(workdir.glob("envoy-*.yaml")))
        self.cfg_path = workdir / f"envoy-{idx}.yaml"
        self.log_path = workdir / f"envoy-{idx}.log"
        with open(self.cfg_path, "w") as f:
            yaml.safe_dump(self.cfg, f, sort_keys=False)

    # configuration --------------------------------------------------------------------------
    def _patch(self, plugin_text):
        """Ports, module path, plugin JSON and backend addresses. Generic over the examples:
        the first listener gets `self.port`, any further listener a free port of its own
        (`self.listener_ports[name]`); every wasm filter loads PERSIST_WASM; the plugin JSON
        (`plugin_text`) replaces the configuration of the one wasm filter; the endpoints of the
        backend clusters (`backends`, or every cluster of a weighted route, see
        `_backend_endpoints`) become the test backends in order, and when the example's own plugin
        JSON is kept, the example's endpoint addresses in it (e.g. http_header `servers`)
        become the matching backend's address too."""
        cfg = self.cfg
        cfg["admin"]["address"]["socket_address"] = {"address": LOCAL, "port_value": self.admin_port}
        listeners = cfg["static_resources"]["listeners"]
        assert len(listeners) >= 1, "the examples have a listener"
        self.listener_ports = {}
        for i, listener in enumerate(listeners):
            port = self.port if i == 0 else free_port()
            self.listener_ports[listener.get("name", str(i))] = port
            listener["address"]["socket_address"] = {"address": LOCAL, "port_value": port}
        wasm = list(_wasm_filters(cfg))
        native = list(_native_filters(cfg))
        assert len(wasm) + len(native) == 1, "the examples have one wasm filter (or one native module)"
        self.native = bool(native)
        if native:
            # The module is found by name in ENVOY_DYNAMIC_MODULES_SEARCH_PATH (native_env()).
            conf = native[0]["typed_config"]
            conf["dynamic_module_config"]["name"] = native_path().stem.removeprefix("lib")
            setting = "filter_config"
        else:
            conf = wasm[0]["typed_config"]["config"]
            conf["vm_config"]["code"]["local"]["filename"] = str(wasm_path())
            setting = "configuration"
        eps = _backend_endpoints(cfg)
        assert len(eps) == len(self.backends), (len(eps), len(self.backends))
        renames = {}
        for ep, b in zip(eps, self.backends):
            sa = ep["endpoint"]["address"]["socket_address"]
            renames[f"{sa['address']}:{sa['port_value']}"] = b.addr
            ep["endpoint"]["address"]["socket_address"] = {"address": LOCAL, "port_value": b.port}
        if plugin_text is not None:
            conf[setting]["value"] = plugin_text
        else:
            text = conf[setting]["value"]
            for old, new in renames.items():
                text = re.sub(rf'"{re.escape(old)}"', f'"{new}"', text)
            conf[setting]["value"] = text
            self.plugin = json.loads(text)

    @property
    def profile(self):
        return (self.plugin or {}).get("name", "default")

    @property
    def cookie_name(self):
        return (self.plugin or {}).get("cookie", {}).get("name", "persist")

    @property
    def upstream_header(self):
        return (self.plugin or {}).get("upstream_header", HANDOFF_HEADER)

    @property
    def handoff(self):
        return (self.plugin or {}).get("handoff", "stateful_session")

    @property
    def keys(self):
        return [base64.b64decode(k) for k in (self.plugin or {}).get("cookie", {}).get("keys", [])]

    # process -----------------------------------------------------------------------------------
    def command(self):
        # Access-log files are flushed every 100 ms (Envoy's default: 10 s).
        return [envoy_bin(), "-c", str(self.cfg_path), "--concurrency", str(self.concurrency),
                "--disable-hot-restart", "--log-level", "info", "--drain-time-s", "1",
                "--file-flush-interval-msec", "100"]

    @property
    def module_path(self):
        return native_path() if self.native else wasm_path()

    @property
    def env(self):
        return native_env() if self.native else None

    @property
    def stats_prefix(self):
        """Where Envoy puts the filter's own stats: wasmcustom. for the wasm module, the
        dynamic-module extension's default metrics namespace for the native one."""
        return "dynamicmodulescustom." if self.native else "wasmcustom."

    def _spawn(self):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(ROOT), env=self.env)
        log.close()

    def start(self, timeout=30.0):
        assert self.module_path.is_file(), f"module not built: {self.module_path} (run `make build`)"
        self._spawn()
        _LIVE_ENVOYS.append(self)
        ready = False
        for _ in deadline_loop(timeout, 0.1):
            if self.proc.poll() is not None:
                raise AssertionError(f"Envoy exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                status, text = http_get_text(self.admin_port, "/ready", timeout=1.0)
                if status == 200 and "LIVE" in text:
                    ready = True
                    break
            except OSError:
                pass
        assert ready, f"Envoy not ready within {timeout}s:\n{self.log_tail()}"
        for _ in deadline_loop(5.0, 0.05):
            try:
                with socket.create_connection((LOCAL, self.port), timeout=1.0):
                    break
            except OSError:
                pass
        # At start the cluster is initialized (first health checks done) before the listener
        # takes traffic: no merge window to wait out.
        self.wait_health({b.addr: True for b in self.backends}, timeout=15.0, workers=False)
        return self

    def run_to_exit(self, timeout=30.0):
        """For configurations Envoy must refuse: returns (exit code, log text)."""
        assert self.module_path.is_file(), f"module not built: {self.module_path} (run `make build`)"
        self._spawn()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._terminate()
            raise AssertionError(f"Envoy still running {timeout}s after start with a bad config:\n{self.log_tail()}")
        return rc, self.log_text()

    def validate(self, timeout=60.0):
        """`envoy --mode validate` on the patched configuration: (exit code, output)."""
        assert self.module_path.is_file(), f"module not built: {self.module_path} (run `make build`)"
        out = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(self.cfg_path)], cwd=str(ROOT),
                             capture_output=True, text=True, timeout=timeout, env=self.env)
        return out.returncode, out.stdout + out.stderr

    def stop(self, check=True):
        """Stops Envoy; first, if it is running and `check`, asserts no wasm VM failure."""
        problem = None
        if check and self.proc is not None and self.proc.poll() is None:
            try:
                self.check_native_healthy() if self.native else self.check_wasm_healthy()
            except AssertionError as exc:
                problem = str(exc) + "\n--- Envoy log tail ---\n" + self.log_tail(40)
        self._terminate()
        if problem:
            raise AssertionError(problem)

    def _terminate(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self in _LIVE_ENVOYS:
            _LIVE_ENVOYS.remove(self)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    # admin ------------------------------------------------------------------------------------
    def admin(self, path):
        status, text = http_get_text(self.admin_port, path, timeout=3.0)
        assert status == 200, f"admin {path}: {status} {text[:200]}"
        return text

    def stats(self, flt=None):
        path = "/stats" + (f"?filter={flt}" if flt else "")
        out = {}
        for line in self.admin(path).splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and re.fullmatch(r"-?\d+", value.strip()):
                out[name] = int(value)
        return out

    def stat(self, name):
        return self.stats().get(name)

    def counters(self, profile=None):
        """The filter's counters as Envoy shows them at /stats: wasmcustom.persist.<name>.<c>."""
        prefix = f"{self.stats_prefix}persist.{profile or self.profile}."
        s = self.stats("^" + re.escape(self.stats_prefix + "persist."))
        return {k[len(prefix):]: v for k, v in s.items() if k.startswith(prefix)}

    # Counters a request makes while Envoy runs its hooks (the rest, `expired` and `entries`
    # from the sweep, `error`, the mirror's, may also come from the worker's tick).
    TRAFFIC_COUNTERS = frozenset({"hit", "miss", "new", "rebind", "invalid", "evicted", "handoff_ignored"})
    # Natively the counts leave in the response-headers hook, before the response does.
    NATIVE_SETTLE = 0.2

    def _counters_and_traffic(self):
        """(the filter's counters, requests the HTTP connection managers completed): one
        admin call."""
        prefix = f"{self.stats_prefix}persist.{self.profile}."
        s = self.stats("^(" + re.escape(self.stats_prefix + "persist.") + r"|http\.)")
        counters = {k[len(prefix):]: v for k, v in s.items() if k.startswith(prefix)}
        traffic = sum(v for k, v in s.items() if re.fullmatch(r"http\.(?!admin\.)[^.]+\.downstream_rq_completed", k))
        return counters, traffic

    def wait_counters(self, expected, timeout=6.0, settle=1.3):
        """Polls until every counter in `expected` has exactly its value, then checks again,
        `settle` seconds later, that nothing more arrived.

        A wasm worker flushes its counts once a second: `settle` (one flush and a margin) is
        counted from the observed change, or, when `expected` holds only counters requests
        make, from the last moment a request could have completed (Envoy's
        downstream_rq_completed did not move since), which the counts of every request
        before it follow within a flush. The native module flushes before each response
        leaves Envoy: once the client has its responses nothing more comes, a short settle
        checks it."""
        last = None
        traffic_only = set(expected) <= self.TRAFFIC_COUNTERS
        quiet_since, traffic = None, None
        for _ in deadline_loop(timeout, 0.2):
            last, now_traffic = self._counters_and_traffic()
            if now_traffic != traffic:  # every request it counts completed before now
                quiet_since, traffic = time.monotonic(), now_traffic
            if all(last.get(k) == v for k, v in expected.items()):
                break
        assert last is not None and all(last.get(k) == v for k, v in expected.items()), \
            f"counters: expected {expected}, got {last}"
        if settle:
            if self.native:
                until = quiet_since + self.NATIVE_SETTLE
            elif traffic_only:
                until = quiet_since + settle
            else:
                until = time.monotonic() + settle
            time.sleep(max(0.0, until - time.monotonic()))
            again, now_traffic = self._counters_and_traffic()
            if now_traffic != traffic:  # a request completed meanwhile: a full settle after it
                time.sleep(settle)
                again, _ = self._counters_and_traffic()
            assert all(again.get(k) == v for k, v in expected.items()), \
                f"counters went on changing: expected {expected}, got {again}"
            last = again
        return last

    def wait_counter_at_least(self, name, n, timeout=4.0):
        """Polls until counter `name` is at least `n` (workers flush once a second)."""
        got = None
        for _ in deadline_loop(timeout, 0.2):
            got = self.counters().get(name, 0)
            if got >= n:
                return got
        raise AssertionError(f"counter {name}: expected at least {n}, got {got} ({self.counters()})")

    def entries(self):
        """The table gauge wasmcustom.persist.<name>.entries (None before a worker flushed it)."""
        return self.counters().get("entries")

    def wait_entries(self, want, timeout=4.0):
        """Polls the `entries` gauge (flushed once a second) until it is `want`."""
        got = None
        for _ in deadline_loop(timeout, 0.2):
            got = self.entries()
            if got == want:
                return got
        raise AssertionError(f"entries gauge: expected {want}, got {got}")

    def worker_connections(self):
        """Per-worker accepted downstream connections of the listener."""
        s = self.stats(r"^listener\..*worker_\d+\.downstream_cx_total$")
        return {int(re.search(r"worker_(\d+)", k).group(1)): v for k, v in s.items()}

    def clusters(self):
        """addr -> health flags string of the backends cluster (of the allowed clusters of a
        weighted route, README "Weighted clusters")."""
        names = set((self.plugin or {}).get("clusters", {}).get("allow", [])) or {"backends"}
        out = {}
        for line in self.admin("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] in names and parts[2] == "health_flags":
                out[parts[1]] = parts[3]
        return out

    def wait_health(self, want, timeout=15.0, workers=True):
        """want: addr -> True (healthy) / False (failed active health check).

        /clusters is the main thread's view. Envoy hands a health-only change to the workers
        up to common_lb_config.update_merge_window (default 1s) later when the cluster
        changed within that window; meanwhile the workers' load balancer still picks a dead
        host (503 UF) or avoids a revived one. With `workers` (the default), this also waits
        out that window, so that the workers route by the health asked for."""
        flags = None
        for _ in deadline_loop(timeout, 0.1):
            flags = self.clusters()
            ok = all((flags.get(a) == "healthy") == healthy for a, healthy in want.items())
            if ok and all(a in flags for a in want):
                if workers:
                    time.sleep(UPDATE_MERGE_WINDOW)
                return flags
        raise AssertionError(f"health not reached within {timeout}s: want {want}, have {flags}")

    # traffic ------------------------------------------------------------------------------------
    def get(self, path="/", cookie=None, headers=None, check_leak=True, **kw):
        r = http_request(self.port, path, cookie=cookie, headers=headers, **kw)
        if check_leak:
            # The stateful_session response header must never reach the client.
            for name in {HANDOFF_HEADER, self.upstream_header}:
                assert r.header(name) is None, f"{name} leaked to the client: {r.headers}"
        return r

    def open(self, value, keys=None):
        return codec.open_sealed(keys or self.keys, self.cookie_name, value)

    def cookie_server(self, value, keys=None):
        """Backend named by a sealed cookie value."""
        return self.backends.by_addr(self.open(value, keys).addr)

    # teardown check ----------------------------------------------------------------------------
    WASM_FAILURE_LOG = re.compile(r"Function: \S+ failed|panicked at|Wasm VM failed|Plugin \S+ failed to load"
                                  r"|wasm_fail_stream|Uncaught RuntimeError")

    def check_wasm_healthy(self):
        """No VM failure: V8 instances still alive for every worker, no reload (FAIL_RELOAD
        counters), no runtime failure or panic in the log, and no `error` counted."""
        problems = []
        stats = self.stats(r"^wasm")
        active = stats.get("wasm.envoy.wasm.runtime.v8.active", 0)
        if active < self.concurrency + 1:
            problems.append(f"wasm.envoy.wasm.runtime.v8.active = {active} (< {self.concurrency + 1})")
        for k, v in stats.items():
            if re.fullmatch(r"wasm\.[^.]+\.vm_reload(_success|_failure|_backoff)?", k) and v:
                problems.append(f"{k} = {v}")
        bad = [l for l in self.log_text().splitlines() if self.WASM_FAILURE_LOG.search(l)]
        if bad:
            problems.append("log: " + "\n".join(bad[:5]))
        if self.plugin is not None:
            err = self.counters().get("error")
            if err:
                problems.append(f"wasmcustom.persist.{self.profile}.error = {err}")
        assert not problems, "wasm VM failure in Envoy:\n" + "\n".join(problems)

    def check_native_healthy(self):
        """The native module: no panic caught at its boundary (logged as `internal error`),
        no `error` counted."""
        problems = [l for l in self.log_text().splitlines() if "envoy-persist: internal error" in l][:5]
        if self.plugin is not None:
            err = self.counters().get("error")
            if err:
                problems.append(f"{self.stats_prefix}persist.{self.profile}.error = {err}")
        assert not problems, "native module failure in Envoy:\n" + "\n".join(problems)


@pytest.fixture
def envoy_factory(backends, tmp_path, build):
    """envoy_factory(example, plugin=None|dict|str, concurrency=2, patch=None, start=True,
    servers=None), in the test's build (a wasm example is turned into its native form for
    "native"); `servers`: the backends the example's endpoints become (default: the three of
    the `backends` fixture)."""
    started = []

    def make(example="http-cookie.yaml", plugin=None, concurrency=2, patch=None, start=True,
             servers=None):
        e = Envoy(example, plugin, servers if servers is not None else backends, tmp_path,
                  concurrency=concurrency, patch=patch, build=build)
        started.append(e)
        if start:
            e.start()
        return e

    yield make
    errors = []
    for e in started:
        try:
            e.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for e in list(_LIVE_ENVOYS):
            rep.sections.append((f"Envoy log tail ({e.example}, {e.log_path})", e.log_tail(60)))


# --- small shared helpers ----------------------------------------------------------------------

def first_cookie(envoy, path="/", **kw):
    """One request without cookie: returns (response, persist Set-Cookie)."""
    r = envoy.get(path, **kw)
    assert r.status == 200, r
    c = r.persist_cookie(envoy.cookie_name)
    assert c is not None, f"no {envoy.cookie_name} cookie on a first response: {r}"
    return r, c


def assert_new_clients_spread_and_stick(envoy, clients=8, again=3):
    """`clients` new clients are load balanced over more than one backend (LEAST_REQUEST
    picks at random among idle hosts: 8 spread with p > 0.999), and each one's cookie keeps
    it on its backend for `again` requests; the counters say exactly that."""
    firsts = collections.Counter()
    for _ in range(clients):
        r, c = first_cookie(envoy)
        firsts[r.server] += 1
        for _ in range(again):
            r2 = envoy.get(cookie=f"{envoy.cookie_name}={c.value}")
            assert r2.status == 200 and r2.server == r.server, r2
    assert len(firsts) >= 2, f"new clients were not load balanced: {firsts}"
    envoy.wait_counters({"miss": clients, "new": clients, "hit": clients * again,
                         "rebind": 0, "invalid": 0})


def handoff_value(envoy, backend):
    """The hand-off header the backend sees when `backend` was named: none natively (the
    module names the host through the ABI, and removes any client copy)."""
    if envoy.native:
        return None
    return backend.b64 if envoy.handoff == "stateful_session" else backend.addr


# --- locally stored types (app_cookie, http_header, client_ip, tls, custom) -------------------

def assert_sticks(envoy, send, server, n=20, every_worker=True):
    """`n` requests, each on a fresh connection, made by `send(i)`: all answered 200 by the
    backend named `server`; with `every_worker`, the connections reached every worker (the
    table is shared by the workers)."""
    before = envoy.worker_connections()
    for i in range(n):
        r = send(i)
        assert r.status == 200 and r.server == server, f"request {i}: {r}, expected backend {server}"
    if every_worker:
        after = envoy.worker_connections()
        assert len(after) == envoy.concurrency and all(after[w] > before.get(w, 0) for w in after), \
            f"the {n} connections did not reach every worker: {before} -> {after}"


def spread(envoy, send_key, keys):
    """The first request of each key (load balanced, then learned): {key: backend name}.
    Asserts that the keys went to all three backends."""
    got = {}
    for k in keys:
        r = send_key(k)
        assert r.status == 200 and r.server is not None, f"key {k!r}: {r}"
        got[k] = r.server
    counts = {name: sum(1 for v in got.values() if v == name) for name in ("a", "b", "c")}
    assert all(counts.values()), f"{len(keys)} keys did not spread over the backends: {counts}"
    return got


def kill_and_rebind(envoy, backends, send, pinned, n_after=10):
    """The backend `pinned` (named) answers `send()`; kill it. Once health checking took it
    out, `send()` gets 200 from another backend, and the entry is rebound: the next
    `n_after` requests (fresh connections) stick to that one, also after the victim is back.
    Returns the new backend's name."""
    victim = backends.by_name(pinned)
    victim.kill()
    try:
        envoy.wait_health({victim.addr: False}, timeout=10)  # as the workers see it
        r = send()
        assert r.status == 200 and r.server not in (None, victim.name), f"after the kill: {r}"
        new = r.server
        assert_sticks(envoy, lambda i: send(), new, n=n_after, every_worker=False)
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)
    assert_sticks(envoy, lambda i: send(), new, n=5, every_worker=False)
    return new
