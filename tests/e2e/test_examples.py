"""The example configurations under envoy/ are valid Envoy configurations, and the default
one works as shipped (its own plugin JSON, its own key)."""

import base64
import re
import subprocess

import pytest

from conftest import (DEFAULT_WASM, EXAMPLES, ROOT, WASM_EXAMPLE_FILES, envoy_bin, example_plugin_json,
                      first_cookie, load_example, wasm_path)


def test_the_examples_exist():
    for name in ("http-cookie.yaml", "http-cookie-override-host.yaml", "http-cookie-strict.yaml",
                 "app-cookie.yaml", "http-header.yaml", "client-ip.yaml", "custom-lua.yaml", "mirror.yaml"):
        assert name in WASM_EXAMPLE_FILES


# One example per persistence type at least (tls and consistent_hash included once they ship).
TYPES = ("http_cookie", "session_header", "app_cookie", "http_header", "client_ip", "tls", "custom", "consistent_hash")
# Filters an example may place before envoy-persist: they compute or provide its key.
BEFORE_WASM = {"envoy.filters.http.lua", "envoy.filters.http.header_mutation"}


@pytest.mark.parametrize("name", WASM_EXAMPLE_FILES)
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


def _hcm(cfg):
    for f in cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]:
        if f["name"] == "envoy.filters.network.http_connection_manager":
            return f["typed_config"]
    raise AssertionError("no http_connection_manager in the first filter chain")


@pytest.mark.parametrize("name", WASM_EXAMPLE_FILES)
def test_example_shape(name):
    """What the README promises about each example (filter order, hand-off, cluster)."""
    cfg = load_example(name)
    plugin = example_plugin_json(name)
    assert plugin["type"] in TYPES
    assert len(cfg["static_resources"]["listeners"]) == 1
    hcm = _hcm(cfg)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.count("envoy.filters.http.wasm") == 1, names
    at = names.index("envoy.filters.http.wasm")
    assert set(names[:at]) <= BEFORE_WASM, f"unexpected filters before envoy-persist: {names}"
    # Fail-open without a bypass: a native header_mutation first removes the client's copy of
    # the header the hand-off (or the hash policy) reads, and the same header on responses.
    assert names[0] == "envoy.filters.http.header_mutation", names
    handoff_header = (plugin["hash"]["header"] if plugin["type"] == "consistent_hash"
                      else plugin.get("upstream_header", "x-persist-upstream"))
    mutations = hcm["http_filters"][0]["typed_config"]["mutations"]
    assert {"remove": handoff_header} in mutations["request_mutations"], mutations
    assert {"remove": handoff_header} in mutations["response_mutations"], mutations
    # The profile as a Prometheus label (README "Access logs and dashboards").
    assert cfg["stats_config"]["stats_tags"] == [
        {"tag_name": "profile", "regex": r"^wasmcustom\.persist\.(([^.]+)\.)"}], cfg.get("stats_config")
    wasm = hcm["http_filters"][at]["typed_config"]["config"]
    assert wasm["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert wasm["vm_config"]["code"]["local"]["filename"] == "target/wasm32-wasip1/release/envoy_persist.wasm"
    # The backends: one cluster, or the clusters of a weighted route (README "Weighted clusters").
    allowed = plugin.get("clusters", {}).get("allow", ["backends"])
    by_name = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert set(allowed) <= set(by_name), f"clusters.allow names a cluster {name} lacks: {allowed}"
    backend_clusters = [by_name[n] for n in allowed]
    cluster = backend_clusters[0]
    ports = [ep["endpoint"]["address"]["socket_address"]["port_value"]
             for c in backend_clusters for ep in c["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    if "clusters" in plugin:
        assert ports == [8081, 8082, 8083, 8084]
        header = plugin["clusters"].get("header", "x-persist-cluster")
        assert {"remove": header} in hcm["http_filters"][0]["typed_config"]["mutations"]["request_mutations"]
        routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        assert routes[0]["match"]["headers"] == [{"name": header, "present_match": True}]
        assert routes[0]["route"] == {"cluster_header": header}
        weighted = routes[1]["route"]["weighted_clusters"]
        assert [c["name"] for c in weighted["clusters"]] == allowed
    else:
        assert cfg["static_resources"]["clusters"][0]["name"] == "backends"
        assert ports == [8081, 8082, 8083]
    assert cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 10000
    assert cfg["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    for c in backend_clusters:
        hc = c["health_checks"][0]
        assert hc["http_health_check"]["path"] == "/healthz"
    for key in plugin.get("cookie", plugin.get("session_header", {})).get("keys", []):
        assert len(base64.b64decode(key, validate=True)) == 32
    # A section of the plugin JSON belongs to its type (the filter refuses others).
    sections = {"http_cookie": "cookie", "session_header": "session_header", "app_cookie": "app_cookie", "http_header": "header",
                "client_ip": "client_ip", "tls": "tls", "custom": "custom", "consistent_hash": "hash"}
    for other_type, section in sections.items():
        if other_type != plugin["type"]:
            assert section not in plugin, f"section {section} in a {plugin['type']} example"
    assert names[-1] == "envoy.filters.http.router"
    if plugin["type"] == "consistent_hash":
        pass  # the hash goes to the cluster's hash_policy; checked by its own tests
    elif plugin.get("handoff", "stateful_session") == "stateful_session":
        assert names[at:] == ["envoy.filters.http.wasm", "envoy.filters.http.stateful_session",
                              "envoy.filters.http.router"], names
        ss = hcm["http_filters"][at + 1]["typed_config"]
        assert ss["session_state"]["name"] == "envoy.http.stateful_session.header"
        assert ss["session_state"]["typed_config"]["name"] == plugin.get("upstream_header", "x-persist-upstream")
        assert ss["strict"] is ("strict" in name)
        for c in backend_clusters:
            assert set(c["common_lb_config"]["override_host_status"]["statuses"]) == {"UNKNOWN", "HEALTHY", "DRAINING"}
    else:
        assert names[at:] == ["envoy.filters.http.wasm", "envoy.filters.http.router"], names
        lb = cluster["load_balancing_policy"]["policies"][0]["typed_extension_config"]
        assert lb["name"] == "envoy.load_balancing_policies.override_host"
        assert lb["typed_config"]["override_host_sources"] == [{"header": "x-persist-upstream"}]
        retry = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"]
        assert set(retry["retry_on"].split(",")) >= {"connect-failure", "refused-stream", "reset"}
        assert retry["num_retries"] >= 1
    # Type-specific Envoy pieces the README names.
    if plugin["type"] == "client_ip":
        assert hcm.get("use_remote_address") is True and hcm.get("xff_num_trusted_hops", 0) >= 1
    if plugin["type"] == "custom" and "property" in plugin["custom"]["source"]:
        path = plugin["custom"]["source"]["property"]
        if path[:2] == ["metadata", "filter_metadata"]:
            assert names[:at] == ["envoy.filters.http.header_mutation", "envoy.filters.http.lua"], names
            assert path[2] == "envoy.filters.http.lua"
            lua = hcm["http_filters"][1]["typed_config"]["default_source_code"]["inline_string"]
            assert f'"{path[2]}", "{path[3]}"' in lua
    if "mirror" in plugin:
        # SPEC 2.4: only the locally stored types; the section names a cluster of the file
        # that speaks HTTP/2 (gRPC) and has health checks (a dead etcd member is taken out).
        assert plugin["type"] in ("app_cookie", "http_header", "client_ip", "tls", "custom"), plugin["type"]
        named = [c for c in cfg["static_resources"]["clusters"] if c["name"] == plugin["mirror"]["cluster"]]
        assert len(named) == 1, f"mirror.cluster {plugin['mirror']['cluster']!r} is not a cluster of {name}"
        opts = named[0]["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in opts["explicit_http_config"]
        assert named[0].get("health_checks"), "the etcd cluster has no health checks"
    if plugin["type"] == "http_header":
        assert plugin["header"]["name"]
        eps = {f"127.0.0.1:{p}" for p in ports}
        assert set(plugin["header"].get("servers", {}).values()) <= eps


def test_one_example_per_new_type():
    types = {example_plugin_json(n)["type"] for n in WASM_EXAMPLE_FILES}
    assert {"http_cookie", "app_cookie", "http_header", "client_ip", "custom"} <= types, types


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
    # The example's stats_tags: one metric per counter, the profile as its label.
    prom = envoy.admin("/stats/prometheus")
    assert re.search(r'^persist_hit\{profile="web"\} 3$', prom, re.M), \
        [l for l in prom.splitlines() if "persist" in l]
    assert re.search(r'^persist_miss\{profile="web"\} 1$', prom, re.M)
    assert re.search(r"^# TYPE persist_new counter$", prom, re.M)
    assert not re.search(r"^persist_web_", prom, re.M), "the profile is still in the metric names"
