"""The example configurations under envoy/ are valid Envoy configurations, and the default
one works as shipped (its own plugin JSON, its own key)."""

import base64
import re
import subprocess

import pytest

from conftest import (DEFAULT_WASM, EXAMPLES, ROOT, envoy_bin, example_plugin_json, first_cookie,
                      load_example, wasm_path)

EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def test_the_three_examples_exist():
    for name in ("http-cookie.yaml", "http-cookie-override-host.yaml", "http-cookie-strict.yaml"):
        assert name in EXAMPLE_FILES


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_passes_envoy_validate(name, tmp_path):
    """`envoy --mode validate` loads the module and runs its on_configure, so this also
    checks the example's plugin JSON."""
    assert wasm_path().is_file(), f"module not built: {wasm_path()}"
    path = EXAMPLES / name
    if wasm_path().resolve() != DEFAULT_WASM.resolve():
        # The examples name the module relative to the repository root; point at PERSIST_WASM.
        text = path.read_text().replace("target/wasm32-wasip1/release/envoy_persist.wasm", str(wasm_path()))
        path = tmp_path / name
        path.write_text(text)
    out = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(path)], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "OK" in (out.stdout + out.stderr)


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_shape(name):
    """What the README promises about each example (filter order, hand-off, cluster)."""
    cfg = load_example(name)
    plugin = example_plugin_json(name)
    assert plugin["type"] == "http_cookie"
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    wasm = hcm["http_filters"][0]["typed_config"]["config"]
    assert wasm["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert wasm["vm_config"]["code"]["local"]["filename"] == "target/wasm32-wasip1/release/envoy_persist.wasm"
    cluster = cfg["static_resources"]["clusters"][0]
    ports = [ep["endpoint"]["address"]["socket_address"]["port_value"]
             for ep in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert ports == [8081, 8082, 8083]
    assert cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 10000
    assert cfg["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    hc = cluster["health_checks"][0]
    assert hc["http_health_check"]["path"] == "/healthz"
    for key in plugin["cookie"].get("keys", []):
        assert len(base64.b64decode(key, validate=True)) == 32
    if plugin.get("handoff", "stateful_session") == "stateful_session":
        assert names == ["envoy.filters.http.wasm", "envoy.filters.http.stateful_session",
                         "envoy.filters.http.router"]
        ss = hcm["http_filters"][1]["typed_config"]
        assert ss["session_state"]["name"] == "envoy.http.stateful_session.header"
        assert ss["session_state"]["typed_config"]["name"] == plugin.get("upstream_header", "x-persist-upstream")
        assert ss["strict"] is ("strict" in name)
        assert set(cluster["common_lb_config"]["override_host_status"]["statuses"]) == {"UNKNOWN", "HEALTHY"}
    else:
        assert names == ["envoy.filters.http.wasm", "envoy.filters.http.router"]
        lb = cluster["load_balancing_policy"]["policies"][0]["typed_extension_config"]
        assert lb["name"] == "envoy.load_balancing_policies.override_host"
        assert lb["typed_config"]["override_host_sources"] == [{"header": "x-persist-upstream"}]
        retry = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"]
        assert set(retry["retry_on"].split(",")) >= {"connect-failure", "refused-stream", "reset"}
        assert retry["num_retries"] >= 1


def test_default_example_as_shipped(envoy_factory):
    """envoy/http-cookie.yaml with its own plugin JSON: the cookie is sealed with the
    example's key, and the stats appear under both admin endpoints with the profile name."""
    envoy = envoy_factory("http-cookie.yaml")  # plugin=None: the example's JSON unchanged
    assert envoy.profile == "web"
    r, c = first_cookie(envoy)
    assert envoy.cookie_server(c.value).name == r.server
    for _ in range(3):
        again = envoy.get(cookie=f"persist={c.value}")
        assert again.server == r.server
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 3, "invalid": 0}, settle=0)
    text = envoy.admin("/stats")
    for counter in ("hit", "miss", "new", "rebind", "invalid", "error"):
        assert re.search(rf"^wasmcustom\.persist\.web\.{counter}: \d+$", text, re.M), counter
    prom = envoy.admin("/stats/prometheus")
    assert re.search(r"^persist_web_hit\{\} 3$", prom, re.M), \
        [l for l in prom.splitlines() if "persist" in l]
    assert re.search(r"^persist_web_miss\{\} 1$", prom, re.M)
    assert re.search(r"^# TYPE persist_web_new counter$", prom, re.M)
