"""deploy/envoy-gateway/ without Kubernetes: the Envoy configuration Envoy Gateway generates
for it, with the EnvoyProxy filterOrder (tests/e2e/generated/envoy-gateway.yaml) and with
Envoy Gateway's default order (envoy-gateway-default-order.yaml), in a real Envoy."""

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import assert_new_clients_spread_and_stick, ROOT, _hcm_configs, _wasm_filters, deadline_loop, first_cookie

GENERATED = Path(__file__).resolve().parent / "generated"
ORDERED = str(GENERATED / "envoy-gateway.yaml")
DEFAULT_ORDER = str(GENERATED / "envoy-gateway-default-order.yaml")
DEPLOY = ROOT / "deploy" / "envoy-gateway"
WASM_FILTER = "envoy.filters.http.wasm/envoyextensionpolicy/default/envoy-persist/wasm/0"


def _manifest(name):
    with open(DEPLOY / name) as f:
        return yaml.safe_load(f)


def _filter_names(path):
    with open(path) as f:
        cfg = yaml.safe_load(f)
    (hcm,) = _hcm_configs(cfg)
    return cfg, hcm, [f["name"] for f in hcm["http_filters"]]


def test_generated_configs_follow_the_manifests():
    policy = _manifest("envoyextensionpolicy.yaml")
    entry = policy["spec"]["wasm"][0]
    route = _manifest("httproute.yaml")["spec"]["rules"][0]["sessionPersistence"]
    assert route == {"type": "Header", "sessionName": entry["config"]["upstream_header"]}
    order = _manifest("envoyproxy.yaml")["spec"]["filterOrder"]
    assert {"name": "envoy.filters.http.wasm", "before": "envoy.filters.http.stateful_session"} in order
    ctp = _manifest("clienttrafficpolicy.yaml")["spec"]["headers"]
    for path in (ORDERED, DEFAULT_ORDER):
        cfg, hcm, names = _filter_names(path)
        (wasm,) = _wasm_filters(cfg)
        assert wasm["name"] == WASM_FILTER
        conf = wasm["typed_config"]["config"]
        # The config as Kubernetes stores it (compact JSON, manifest key order).
        assert conf["configuration"]["value"] == json.dumps(entry["config"], separators=(",", ":"))
        assert conf["name"] == entry["name"] and conf["root_id"] == entry["rootID"]
        assert conf["vm_config"]["vm_id"] == "envoyextensionpolicy/default/envoy-persist/wasm/0"
        assert conf["fail_open"] is entry["failOpen"]
        assert wasm["disabled"] is True
        early = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
        assert [m["remove"] for m in early] == ctp["earlyRequestHeaders"]["remove"]
        assert hcm["http_filters"][0]["typed_config"]["mutations"]["response_mutations"] == \
            [{"remove": h} for h in ctp["lateResponseHeaders"]["remove"]]
        r = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
        ss = r["typed_per_filter_config"]["envoy.filters.http.stateful_session"]["stateful_session"]
        assert ss["session_state"]["typed_config"]["name"] == route["sessionName"]
        assert WASM_FILTER in r["typed_per_filter_config"]
    _, _, ordered = _filter_names(ORDERED)
    _, _, default = _filter_names(DEFAULT_ORDER)
    assert ordered == ["envoy.filters.http.header_mutation", WASM_FILTER,
                       "envoy.filters.http.stateful_session", "envoy.filters.http.router"]
    assert default == ["envoy.filters.http.header_mutation", "envoy.filters.http.stateful_session",
                       WASM_FILTER, "envoy.filters.http.router"]


def test_with_filter_order_persistence_sticks(envoy_factory, backends):
    envoy = envoy_factory(ORDERED)
    assert_new_clients_spread_and_stick(envoy)


def _spread_with_one_cookie(envoy, n=18):
    """One client's cookie on `n` requests: {backend: count}, and the profile's counters."""
    r, c = first_cookie(envoy)
    seen = Counter()
    for _ in range(n):
        again = envoy.get(cookie=f"persist={c.value}")
        assert again.status == 200, again
        seen[again.server] += 1
    return seen


def test_default_order_ignores_the_handoff(envoy_factory, backends):
    """Without filterOrder, stateful_session reads x-persist-upstream before envoy-persist
    wrote it: one client's requests spread over the backends although its cookie is valid.
    On the response side envoy-persist runs before stateful_session and never sees its
    "another server answered" header: every request counts as a hit (the sampled check of
    the next test may also rebind a few, each with a new cookie)."""
    envoy = envoy_factory(DEFAULT_ORDER)
    seen = _spread_with_one_cookie(envoy, n=24)
    assert len(seen) == 3, f"the hand-off was not ignored: {seen}"
    got = {}
    for _ in deadline_loop(6.0, 0.2):  # every worker flushes within a second
        got = envoy.counters()
        if got.get("hit") == 24 and got.get("new") == 1 + got.get("rebind", 0):
            break
    else:
        raise AssertionError(f"counters: {got}")
    assert got["miss"] == 1 and got["invalid"] == 0, got


def test_default_order_is_counted_as_handoff_ignored(envoy_factory, backends):
    """Not silent: every 8th named request per worker checks who really answered, and a
    server other than the named one without Envoy's header is counted handoff_ignored,
    with a warning in the log. 64 requests on 2 workers: about 4 checks per worker, each
    finding another server 2 times in 3."""
    envoy = envoy_factory(DEFAULT_ORDER)
    _spread_with_one_cookie(envoy, n=64)
    envoy.wait_counter_at_least("handoff_ignored", 1)
    assert "that Envoy ignored" in envoy.log_text()
    # and the correctly ordered configuration never counts it
    ordered = envoy_factory(ORDERED)
    _spread_with_one_cookie(ordered, n=64)
    assert ordered.wait_counters({"handoff_ignored": 0}).get("handoff_ignored") == 0
