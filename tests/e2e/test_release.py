"""Release artifacts (README "Release artifacts"): dist/ as `make dist` wrote it.

- the OCI layout goes through a real registry (Debian's docker-registry on 127.0.0.1, pushed
  and pulled with skopeo), comes back byte for byte, and the module unpacked from the pulled
  image the way Istio's and Envoy Gateway's image fetchers unpack a "compat" wasm image has
  dist's sha256 and gives persistence in a real Envoy;
- Envoy's own `code.remote` (the README's snippet) from a loopback HTTP server: the right
  sha256 loads and persists, a wrong one is fetched, refused, and the plugin fails closed.
"""

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import (LOCAL, ROOT, _wasm_filters, deadline_loop, first_cookie, free_port, http_get_text, http_request,
                      plugin_config, wasm_path)

DIST = Path(os.environ.get("PERSIST_DIST") or ROOT / "dist")
MODULE = DIST / "envoy_persist.wasm"
SHA_FILE = DIST / "envoy_persist.wasm.sha256"
LAYOUT = DIST / "oci"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REPO = "envoy-persist"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dist_sha() -> str:
    line = SHA_FILE.read_text().split()
    assert line[1:] == ["envoy_persist.wasm"], f"{SHA_FILE}: {line}"
    return line[0]


@pytest.fixture(scope="module")
def dist():
    for p in (MODULE, SHA_FILE, LAYOUT / "index.json"):
        assert p.is_file(), f"{p} missing: run `make dist`"
    return MODULE.read_bytes()


def tool(name):
    path = shutil.which(name)
    assert path, f"{name} not installed: `make e2e` installs it (scripts/apt-need.sh)"
    return path


# --- an OCI layout, read like the fetchers read an image ------------------------------------------

def blob(layout: Path, digest: str) -> bytes:
    algo, _, hexd = digest.partition(":")
    data = (layout / "blobs" / algo / hexd).read_bytes()
    assert algo == "sha256" and sha256(data) == hexd, f"blob {digest} does not match its digest"
    return data


def tagged_manifest(layout: Path, tag: str):
    """(descriptor, manifest) of the manifest tagged `tag` in the layout's index.json."""
    index = json.loads((layout / "index.json").read_text())
    found = [m for m in index["manifests"]
             if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    assert len(found) == 1, f"tag {tag} in {index}"
    return found[0], json.loads(blob(layout, found[0]["digest"]))


def unpack_compat(manifest: dict, get_blob) -> bytes:
    """The module out of an image, as Istio's / Envoy Gateway's image fetcher does it for a
    non-Docker manifest, "compat" variant: the (last, here the only) layer must be an OCI
    tar+gzip, and the module is the first tar entry whose base name is plugin.wasm."""
    assert manifest.get("mediaType", "") != DOCKER_MANIFEST
    layers = manifest["layers"]
    assert len(layers) == 1, layers  # older fetchers want exactly one
    assert layers[-1]["mediaType"] == OCI_TAR_GZIP, layers
    raw = gzip.decompress(get_blob(layers[-1]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for member in tar:
            if os.path.basename(member.name) == "plugin.wasm":
                return tar.extractfile(member).read()
    raise AssertionError("plugin.wasm not in the layer")


# --- a registry on loopback ---------------------------------------------------------------------

class Registry:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.host = f"{LOCAL}:{self.port}"
        self.workdir = workdir
        cfg = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
            "http": {"addr": self.host, "secret": "e2e-not-secret"},
        }
        self.config = workdir / "registry.yml"
        self.config.write_text(yaml.safe_dump(cfg))
        # skopeo's trust policy: this test's own, whatever the machine's /etc/containers says.
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.log_path = workdir / "registry.log"
        self.proc = None

    def start(self, timeout=15.0):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([tool("docker-registry"), "serve", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        for _ in deadline_loop(timeout, 0.1):
            assert self.proc.poll() is None, f"docker-registry exited:\n{self.log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1.0) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
        raise AssertionError(f"docker-registry not up within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def skopeo_copy(self, src, dst, *flags):
        out = subprocess.run([tool("skopeo"), "--policy", str(self.policy), "copy", *flags, src, dst],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"skopeo copy {src} {dst}: {out.stdout}{out.stderr}"

    def get(self, path, accept=None):
        req = urllib.request.Request(f"http://{self.host}{path}", headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(req, timeout=5.0) as r:
            return r.headers, r.read()


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path)
    reg.start()
    yield reg
    reg.stop()


def use_module_file(path: Path):
    """Envoy patch: the wasm filter loads `path`."""
    def patch(cfg):
        for f in _wasm_filters(cfg):
            f["typed_config"]["config"]["vm_config"]["code"] = {"local": {"filename": str(path)}}
    return patch


def assert_persists(envoy, n=5):
    """A first request gets a cookie naming the server that answered; `n` more with it stay."""
    r, c = first_cookie(envoy)
    assert envoy.cookie_server(c.value).name == r.server
    for i in range(n):
        again = envoy.get(cookie=f"{envoy.cookie_name}={c.value}")
        assert again.status == 200 and again.server == r.server, f"request {i} with the cookie: {again}"
    envoy.wait_counters({"miss": 1, "new": 1, "hit": n, "invalid": 0, "error": 0}, settle=0)
    return r.server


# --- dist/ and its OCI layout ---------------------------------------------------------------------

def test_dist_module_and_layout(dist, tmp_path):
    """dist's module is a wasm module, smaller than the one built (wasm-opt ran), with the sha256
    of its .sha256 file; the layout's tagged image holds exactly that module as plugin.wasm; the
    layout script is deterministic."""
    assert dist[:4] == b"\0asm"
    assert sha256(dist) == dist_sha()
    built = wasm_path().read_bytes()
    assert len(dist) < len(built), f"dist module {len(dist)} bytes, built {len(built)}: not optimized?"
    tags = [m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((LAYOUT / "index.json").read_text())["manifests"]]
    assert len(tags) == 1, tags
    desc, manifest = tagged_manifest(LAYOUT, tags[0])
    assert desc["mediaType"] == manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    config = json.loads(blob(LAYOUT, manifest["config"]["digest"]))
    layer = gzip.decompress(blob(LAYOUT, manifest["layers"][0]["digest"]))
    assert config["rootfs"]["diff_ids"] == [f"sha256:{sha256(layer)}"]
    assert sha256(unpack_compat(manifest, lambda d: blob(LAYOUT, d))) == dist_sha()
    version = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert tags == [version]
    runs = []
    for i in range(2):
        out = tmp_path / f"layout{i}"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "oci_layout.py"), "--wasm", str(MODULE),
                        "--tag", version, "--out", str(out)], check=True, capture_output=True, timeout=60,
                       env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
        runs.append(tagged_manifest(out, version)[0]["digest"])
    assert runs[0] == runs[1], runs


def test_image_through_a_registry_into_envoy(dist, registry, envoy_factory, tmp_path):
    """dist/oci pushed to docker-registry and pulled back with skopeo: the registry serves the
    layout's manifest unchanged (same digest, OCI media type), the module unpacked from the
    pulled image like a compat fetcher does has dist's sha256, and Envoy loading that pulled
    file gives persistence."""
    tag = json.loads((LAYOUT / "index.json").read_text())["manifests"][0]["annotations"][
        "org.opencontainers.image.ref.name"]
    desc, _ = tagged_manifest(LAYOUT, tag)
    ref = f"docker://{registry.host}/{REPO}:{tag}"
    registry.skopeo_copy(f"oci:{LAYOUT}:{tag}", ref, "--dest-tls-verify=false")

    # What an image fetcher GETs: the manifest by tag, then the layer blob by digest.
    headers, served = registry.get(f"/v2/{REPO}/manifests/{tag}", accept=OCI_MANIFEST)
    assert headers["Docker-Content-Digest"] == desc["digest"], "the registry changed the manifest"
    assert headers["Content-Type"] == OCI_MANIFEST
    served_module = unpack_compat(json.loads(served), lambda d: registry.get(f"/v2/{REPO}/blobs/{d}")[1])
    assert sha256(served_module) == dist_sha()

    pulled = tmp_path / "pulled"
    registry.skopeo_copy(ref, f"oci:{pulled}:{tag}", "--src-tls-verify=false")
    pdesc, pmanifest = tagged_manifest(pulled, tag)
    assert pdesc["digest"] == desc["digest"]
    module = unpack_compat(pmanifest, lambda d: blob(pulled, d))
    assert sha256(module) == dist_sha(), "the module pulled back differs from dist's"
    target = tmp_path / "from-registry" / "plugin.wasm"
    target.parent.mkdir()
    target.write_bytes(module)

    envoy = envoy_factory("http-cookie.yaml", plugin=plugin_config(), patch=use_module_file(target))
    assert str(target) in envoy.cfg_path.read_text()
    assert_persists(envoy)


# --- Envoy's code.remote ----------------------------------------------------------------------------

class ModuleServer:
    """A loopback HTTP server with one path, /envoy_persist.wasm (dist's module); counts GETs.
    With `delay`, each answer waits that long after `requested` is set."""

    def __init__(self, body: bytes, delay=0.0):
        self.gets = 0
        self.requested = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/envoy_persist.wasm":
                    self.send_error(404)
                    return
                outer.gets += 1
                outer.requested.set()
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/wasm")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((LOCAL, free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def module_servers(dist):
    servers = []

    def make(delay=0.0):
        servers.append(ModuleServer(dist, delay))
        return servers[-1]
    yield make
    for srv in servers:
        srv.close()


def readme_remote_code():
    """The `code.remote` YAML snippet of the README's "Release artifacts" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Release artifacts\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "remote:" in b]
    assert len(blocks) == 1, "one code.remote snippet in README \"Release artifacts\""
    return yaml.safe_load(blocks[0])["vm_config"]["code"]["remote"]


def remote_code(server, sha, num_retries=None):
    """Envoy patch: the README's code.remote, fetched from `server` through a cluster
    `artifacts` added for it, with sha256 `sha`."""
    remote = readme_remote_code()

    def patch(cfg):
        remote["http_uri"]["uri"] = f"http://{LOCAL}:{server.port}/envoy_persist.wasm"
        remote["sha256"] = sha
        if num_retries is not None:
            remote["retry_policy"]["num_retries"] = num_retries
        for f in _wasm_filters(cfg):
            f["typed_config"]["config"]["vm_config"]["code"] = {"remote": remote}
        cfg["static_resources"]["clusters"].append({
            "name": remote["http_uri"]["cluster"], "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": remote["http_uri"]["cluster"], "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": LOCAL, "port_value": server.port}}}}]}]},
        })
    return patch


def test_code_remote_right_sha256_loads(dist, module_servers, envoy_factory):
    """The README's code.remote with the right sha256: Envoy fetches the module once, and
    its listener starts only once the answer is there (the server answers after 1.5 s)."""
    server = module_servers(delay=1.5)
    envoy = envoy_factory("http-cookie.yaml", plugin=plugin_config(), patch=remote_code(server, dist_sha()),
                          start=False)
    seen = {}

    def during_fetch():
        if server.requested.wait(timeout=20):
            seen["ready"] = http_get_text(envoy.admin_port, "/ready", timeout=1.0)
            try:
                with socket.create_connection((LOCAL, envoy.port), timeout=0.5):
                    seen["listener"] = "accepts"
            except OSError:
                seen["listener"] = "refuses"
    probe = threading.Thread(target=during_fetch)
    probe.start()
    try:
        envoy.start()
    finally:
        probe.join(timeout=25)
    assert seen.get("ready", (None, ""))[1].strip() != "LIVE" and seen.get("listener") == "refuses", \
        f"while the module was being fetched: {seen}"
    print(f"while the module was being fetched: /ready {seen['ready']}, listener {seen['listener']}")
    code = next(_wasm_filters(envoy.cfg))["typed_config"]["config"]["vm_config"]["code"]
    assert list(code) == ["remote"] and code["remote"]["sha256"] == dist_sha()
    assert server.gets == 1
    assert "Wasm remote code fetch is unstable and may cause a crash" in envoy.log_text()
    assert envoy.stat("wasm.remote_load_fetch_successes") == 1
    assert envoy.stat("wasm.remote_load_fetch_failures") == 0
    assert_persists(envoy)


def test_code_remote_wrong_sha256_refused(dist, module_servers, envoy_factory):
    """Envoy 1.40 with a wrong sha256: `--mode validate` says OK (it does not fetch); started, it
    fetches the module 1 + num_retries times, refuses it, logs that the plugin failed to load,
    still goes LIVE, and its listener answers 503 (FAIL_CLOSED) without reaching a backend."""
    server = module_servers()
    wrong = sha256(dist + b"\0")
    envoy = envoy_factory("http-cookie.yaml", plugin=plugin_config(),
                          patch=remote_code(server, wrong, num_retries=1), start=False)
    rc, out = envoy.validate()
    assert rc == 0 and "OK" in out, out[-2000:]
    assert server.gets == 0
    envoy.start()  # LIVE, backends healthy: the listener start waited for the fetches
    try:
        log = envoy.log_text()
        assert "Retry limit exceeded for fetching data from remote data source" in log, envoy.log_tail()
        assert "Plugin persist failed to load" in log, envoy.log_tail()
        assert server.gets == 2, server.gets
        assert envoy.stat("wasm.remote_load_fetch_failures") == 1
        assert not envoy.stat("wasm.remote_load_fetch_successes")
        assert not envoy.stat("wasm.envoy.wasm.runtime.v8.active"), "a wasm VM runs"
        for _ in range(3):
            r = http_request(envoy.port, "/")
            assert r.status == 503 and r.server is None and r.body == b"", r
        assert "Plugin configured to fail closed failed to load" in envoy.log_text()
        # The right module is one request away: the server was reachable all along.
        assert sha256(urllib.request.urlopen(f"http://{LOCAL}:{server.port}/envoy_persist.wasm",
                                             timeout=5).read()) == dist_sha()
    finally:
        envoy.stop(check=False)
