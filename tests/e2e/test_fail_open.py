"""Fail-open without a bypass. When the module cannot be loaded and the configuration says
fail open (Envoy `failure_policy: FAIL_OPEN`, Envoy Gateway `failOpen: true`, Istio
`failStrategy: FAIL_OPEN`), Envoy runs the chain without envoy-persist, and nothing would
remove a client's own hand-off header any more: the stateful_session filter (base64
ip:port) or the override_host policy (plain ip:port) would send the request to whatever
server the client named. The native header removal placed before the wasm filter in every
example and manifest prevents that: the client's header chooses nothing.

Each case also runs without that header removal (`bypass`): there the client does choose the
server, which shows that the module really was not running and that the removal is what
protects."""

from collections import Counter
from pathlib import Path

import pytest

from conftest import LOCAL, _hcm_configs, _wasm_filters, free_port

GENERATED = Path(__file__).resolve().parent / "generated"
N = 12


def _remote_code_that_fails(cfg, fail_open_field):
    """The module is fetched from a loopback port where nothing listens (the fetch fails at
    start; Envoy comes up without the plugin), under the fail-open setting."""
    port = free_port()
    (wasm,) = _wasm_filters(cfg)
    conf = wasm["typed_config"]["config"]
    conf["vm_config"]["code"] = {"remote": {
        "http_uri": {"uri": f"http://{LOCAL}:{port}/envoy_persist.wasm", "cluster": "wasm_fetch", "timeout": "1s"},
        "sha256": "0" * 64, "retry_policy": {"num_retries": 0}}}
    if fail_open_field == "fail_open":
        conf.pop("failure_policy", None)
        conf["fail_open"] = True
    else:
        conf["failure_policy"] = "FAIL_OPEN"
    cfg["static_resources"]["clusters"].append({
        "name": "wasm_fetch", "type": "STATIC", "connect_timeout": "0.5s",
        "load_assignment": {"cluster_name": "wasm_fetch", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": LOCAL, "port_value": port}}}}]}]}})


def _istio_fail_open(cfg):
    """What istio-agent does when the image cannot be fetched under failStrategy FAIL_OPEN:
    it hands Envoy an allow-all RBAC filter under the plugin's name instead of the wasm
    filter."""
    (hcm,) = _hcm_configs(cfg)
    for i, f in enumerate(hcm["http_filters"]):
        if f.get("typed_config", {}).get("@type", "").endswith(".filters.http.wasm.v3.Wasm"):
            hcm["http_filters"][i] = {"name": f["name"], "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules_stat_prefix": "wasm-default-allow"}}


def _drop_header_removal(cfg):
    (hcm,) = _hcm_configs(cfg)
    hcm.pop("early_header_mutation_extensions", None)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.header_mutation"]


CASES = {
    # name: (configuration, how the module fails, the client's header value for backend c)
    "http-cookie": ("http-cookie.yaml", lambda cfg: _remote_code_that_fails(cfg, "failure_policy"), "b64"),
    "override-host": ("http-cookie-override-host.yaml", lambda cfg: _remote_code_that_fails(cfg, "failure_policy"), "addr"),
    "istio": (str(GENERATED / "istio-gateway.yaml"), _istio_fail_open, "b64"),
    "envoy-gateway": (str(GENERATED / "envoy-gateway.yaml"), lambda cfg: _remote_code_that_fails(cfg, "fail_open"), "b64"),
}


@pytest.mark.parametrize("bypass", [False, True], ids=["protected", "bypass"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_client_handoff_header_chooses_nothing_when_the_module_fails_open(envoy_factory, backends, case, bypass):
    example, fail, form = CASES[case]

    def patch(cfg):
        fail(cfg)
        if bypass:
            _drop_header_removal(cfg)

    envoy = envoy_factory(example, patch=patch)
    try:
        target = backends[2]
        value = target.b64 if form == "b64" else target.addr
        seen = Counter()
        for _ in range(N):
            r = envoy.get(headers={"x-persist-upstream": value}, check_leak=False)
            assert r.status == 200, f"{r}: the module's failure was not open\n{envoy.log_tail(20)}"
            assert r.persist_cookie() is None, f"envoy-persist ran: {r}"
            seen[r.server] += 1
        if bypass:
            assert seen == {target.name: N}, f"without the header removal the client chose: {seen}"
        else:
            assert len(seen) >= 2 and seen[target.name] < N, f"the client's header chose the server: {seen}"
        assert not envoy.stats(r"^wasm\.envoy\.wasm\.runtime\.v8\.active").get("wasm.envoy.wasm.runtime.v8.active")
    finally:
        envoy.stop(check=False)


@pytest.mark.parametrize("bypass", [False, True], ids=["protected", "bypass"])
def test_client_cluster_header_chooses_nothing_when_the_module_fails_open(envoy_factory, backends, bypass):
    """envoy/blue-green.yaml (README "Weighted clusters"): the weights send every request to
    blue (a, b); a client naming green in x-persist-cluster still lands on blue. The route is
    chosen before the HTTP filters run, so the removal that protects is the HCM's early header
    mutation; without it (`bypass`) the client reaches green."""
    def patch(cfg):
        _remote_code_that_fails(cfg, "failure_policy")
        if bypass:
            _drop_header_removal(cfg)

    envoy = envoy_factory("blue-green.yaml", patch=patch, servers=[*backends, backends[2]])
    try:
        seen = Counter()
        for _ in range(N):
            r = envoy.get(headers={"x-persist-cluster": "green"}, check_leak=False)
            assert r.status == 200, f"{r}: the module's failure was not open\n{envoy.log_tail(20)}"
            seen[r.server] += 1
        green = {backends[2].name}
        if bypass:
            assert set(seen) <= green, f"without the removal the client chose green: {seen}"
        else:
            assert not set(seen) & green, f"the client's header chose the cluster: {seen}"
    finally:
        envoy.stop(check=False)
