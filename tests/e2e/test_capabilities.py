"""The capability restriction (README "Leave out the callbacks the filter does not use"):
every wasm example under envoy/ carries the list of bench/envoy/capabilities.yaml in its
vm_config; every kind works with it as shipped (no call to a left-out capability, no VM
failure), and Envoy really leaves out what the list leaves out (a list without
proxy_on_response_headers issues no cookie). The rest of the e2e suite runs on the same
examples, so it runs restricted too."""

import copy
from pathlib import Path

import pytest
import yaml

from conftest import (WASM_EXAMPLE_FILES, _hcm_configs, _wasm_filters, deadline_loop, example_plugin_json,
                      first_cookie, load_example)
from etcd_util import etcd, mirror_patch  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
CAPS = yaml.safe_load((ROOT / "bench" / "envoy" / "capabilities.yaml").read_text())
RESTRICTED = "Attempted call to restricted"


def restrict(caps):
    def patch(cfg):
        for f in _wasm_filters(cfg):
            f["typed_config"]["config"]["vm_config"].update(copy.deepcopy(caps))
    return patch


def without(name):
    caps = copy.deepcopy(CAPS)
    del caps["capability_restriction_config"]["allowed_capabilities"][name]
    return caps


def test_the_list_names_what_the_module_exports_and_imports():
    allowed = CAPS["capability_restriction_config"]["allowed_capabilities"]
    for needed in ("proxy_on_context_create", "proxy_on_request_headers", "proxy_on_response_headers",
                   "proxy_on_delete", "proxy_on_tick", "proxy_get_header_map_value", "proxy_get_shared_data",
                   "proxy_get_current_time_nanoseconds", "random_get"):
        assert needed in allowed, needed
    for per_request_not_needed in ("proxy_on_log", "proxy_on_done", "proxy_on_request_body",
                                   "proxy_on_response_body"):
        assert per_request_not_needed not in allowed


@pytest.mark.parametrize("example", WASM_EXAMPLE_FILES)
def test_every_wasm_example_ships_the_list(example):
    filters = list(_wasm_filters(load_example(example)))
    assert filters, f"{example}: no wasm filter"
    for f in filters:
        vm = f["typed_config"]["config"]["vm_config"]
        assert vm.get("capability_restriction_config") == CAPS["capability_restriction_config"], example


def test_the_readme_shows_the_same_list():
    """The README's copy (the block under "Leave out the callbacks the filter does not use"),
    inside `vm_config` as the text says."""
    section = (ROOT / "README.md").read_text().split("### Leave out the callbacks the filter does not use", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    shown = yaml.safe_load(block)["vm_config"]["capability_restriction_config"]["allowed_capabilities"]
    assert shown == CAPS["capability_restriction_config"]["allowed_capabilities"]


def activity(envoy):
    c = envoy.counters()
    return sum(v for k, v in c.items() if k in ("hit", "miss", "new", "rebind", "invalid"))


@pytest.mark.parametrize("example", ["http-cookie.yaml", "http-cookie-override-host.yaml", "app-cookie.yaml",
                                     "http-header.yaml", "client-ip.yaml", "consistent-hash.yaml",
                                     "custom-lua.yaml"])
def test_every_kind_works_restricted(envoy_factory, example):
    envoy = envoy_factory(example)
    for i in range(12):
        r = envoy.get(f"/item/{i}", headers={"x-user": f"u{i % 3}"},
                      cookie=f"JSESSIONID=s{i % 3}")
        assert r.status == 200, r
        if example == "consistent-hash.yaml":
            # Nothing is counted: the filter's work is the hash header the backend receives.
            assert r.echoed.get("x-persist-hash"), r
    if example == "consistent-hash.yaml":
        return
    # The filter ran on every request (its counters are flushed once a second).
    got = 0
    for _ in deadline_loop(6.0, 0.2):
        got = activity(envoy)
        if got >= 12:
            break
    assert got >= 12, envoy.counters()
    log = envoy.log_text()
    assert RESTRICTED not in log, [line for line in log.splitlines() if RESTRICTED in line][:3]


def test_sealed_cookie_lifecycle_restricted(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml")
    r, c = first_cookie(envoy)
    server = r.server
    for i in range(10):
        r2 = envoy.get(f"/x/{i}", cookie=f"{envoy.cookie_name}={c.value}")
        assert r2.server == server and r2.persist_cookie(envoy.cookie_name) is None, r2
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 10, "error": 0})


def test_a_left_out_callback_is_not_called(envoy_factory):
    """The names are live: without proxy_on_response_headers Envoy never calls the response
    half, so no cookie is issued (with the full list it is, above), and the stateful_session
    response header, which the response half removes, reaches the client."""
    def patch(cfg):
        restrict(without("proxy_on_response_headers"))(cfg)
        # The example's native header_mutation would remove that header from responses too.
        for hcm in _hcm_configs(cfg):
            hcm["http_filters"] = [f for f in hcm["http_filters"]
                                   if f["name"] != "envoy.filters.http.header_mutation"]

    envoy = envoy_factory("http-cookie.yaml", patch=patch)
    for _ in range(5):
        r = envoy.get("/", check_leak=False)
        assert r.status == 200
        assert r.header(envoy.upstream_header), r
        assert r.persist_cookie(envoy.cookie_name) is None, r
    envoy.wait_counters({"miss": 5, "new": 0})


def test_a_left_out_host_call_is_refused_and_logged(envoy_factory):
    """A host call the module makes must be in the list: Envoy refuses it and logs the
    refusal. The filter reads a refused header as absent (no VM failure): here no header can
    be read, so no cookie is ever found (every request is a miss) and the stateful_session
    response header is not seen, so not removed."""
    envoy = envoy_factory("http-cookie.yaml", patch=restrict(without("proxy_get_header_map_value")))
    r, c = first_cookie(envoy, check_leak=False)
    r2 = envoy.get("/", cookie=f"{envoy.cookie_name}={c.value}", check_leak=False)
    assert r2.status == 200
    assert r2.persist_cookie(envoy.cookie_name) is not None, "the cookie was not read: a new one"
    for _ in deadline_loop(6.0, 0.2):
        if RESTRICTED in envoy.log_text():
            break
    assert "restricted proxy-wasm capability: proxy_get_header_map_value" in envoy.log_text()
    envoy.wait_counters({"miss": 2, "new": 2, "hit": 0})


def test_mirror_works_restricted(etcd, envoy_factory, backends):  # noqa: F811 (fixture)
    """The gRPC capabilities of the mirror (calls, the watch stream, their callbacks): as
    test_mirror's local-miss test, both Envoys restricted as the example ships. B's
    one-entry table sends almost every key to etcd on the request, and each is still answered
    from A's backend."""
    from test_mirror import EXAMPLE, assert_answers, etcd_ranges, propagated, wait_connected

    patch = mirror_patch(etcd.ports)
    plugin = example_plugin_json(EXAMPLE)
    plugin["max_entries"] = 1
    a = envoy_factory(EXAMPLE, patch=patch)
    b = envoy_factory(EXAMPLE, plugin, patch=patch)
    wait_connected([a, b])
    bound = propagated(a, b, backends, etcd, "caps", 8)
    before = etcd_ranges(b)
    assert_answers(b, backends, bound)
    assert etcd_ranges(b) - before >= len(bound) - 1
    for e in (a, b):
        assert RESTRICTED not in e.log_text()
        c = e.counters()
        assert c.get("mirror_error", 0) == 0 and c.get("error", 0) == 0, c
