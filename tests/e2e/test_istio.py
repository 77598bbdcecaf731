"""deploy/istio/ without Kubernetes: the Envoy configuration istiod generates for it
(tests/e2e/generated/istio-gateway.yaml) in a real Envoy, with real backends.

What Istio changes against envoy/http-cookie.yaml, and what these tests show:
- no active health checking, override_host_status HEALTHY, DRAINING, UNKNOWN, DEGRADED:
  a dead pod still listed in EDS stays the persisted host. Istio's default route retries
  (previous_hosts) move its sessions at once; without retries a session gets 503 until
  outlier detection (deploy/istio/destinationrule.yaml) ejects the pod.
- a DRAINING endpoint (a terminating pod) keeps its sessions and gets no new ones.
- the stateful_session filter Istio generates is never `strict`.
"""

import json
import time
from collections import Counter
from pathlib import Path

import yaml

import persist_codec as codec
from conftest import assert_new_clients_spread_and_stick, ROOT, deadline_loop, first_cookie, _cluster, _hcm_configs, _wasm_filters

GENERATED = Path(__file__).resolve().parent / "generated"
ISTIO = str(GENERATED / "istio-gateway.yaml")
DEPLOY = ROOT / "deploy" / "istio"


def _manifest(name):
    with open(DEPLOY / name) as f:
        return yaml.safe_load(f)


def _route(cfg):
    (hcm,) = _hcm_configs(cfg)
    return hcm["route_config"]["virtual_hosts"][0]["routes"][0]


def test_generated_config_follows_the_manifests():
    """The reproduction carries exactly what istiod derives from deploy/istio/: the plugin
    JSON as protojson renders pluginConfig (compact, sorted keys), root_id = pluginName, no
    vm_id, FAIL_CLOSE -> FAIL_CLOSED, the header the Service label names, the filter
    positions and the cluster's override_host_status."""
    with open(ISTIO) as f:
        cfg = yaml.safe_load(f)
    plugin = _manifest("wasmplugin.yaml")
    spec = plugin["spec"]
    (wasm,) = _wasm_filters(cfg)
    conf = wasm["typed_config"]["config"]
    assert wasm["name"] == conf["name"] == f"{plugin['metadata']['namespace']}.{plugin['metadata']['name']}"
    assert conf["configuration"]["value"] == json.dumps(spec["pluginConfig"], sort_keys=True, separators=(",", ":"))
    assert conf["root_id"] == spec["pluginName"]
    assert "vm_id" not in conf["vm_config"]
    assert conf["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert spec["failStrategy"] == "FAIL_CLOSE" and conf["failure_policy"] == "FAIL_CLOSED"
    header = _manifest("service.yaml")["metadata"]["labels"]["istio.io/persistent-session-header"]
    assert header == spec["pluginConfig"]["upstream_header"]
    (hcm,) = _hcm_configs(cfg)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names[0] == "envoy.filters.http.header_mutation"  # the EnvoyFilter's INSERT_FIRST
    strip = _manifest("envoyfilter-strip-handoff.yaml")["spec"]["configPatches"][0]["patch"]["value"]
    assert hcm["http_filters"][0] == strip
    assert names.index(wasm["name"]) < names.index("envoy.filters.http.stateful_session") == len(names) - 2
    assert hcm["http_filters"][names.index("envoy.filters.http.stateful_session")]["typed_config"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession"}
    per_route = _route(cfg)["typed_per_filter_config"]["envoy.filters.http.stateful_session"]
    assert per_route["stateful_session"]["session_state"]["typed_config"]["name"] == header
    assert "strict" not in per_route["stateful_session"]
    cluster = _cluster(cfg)
    assert cluster["common_lb_config"]["override_host_status"]["statuses"] == ["HEALTHY", "DRAINING", "UNKNOWN", "DEGRADED"]
    assert "health_checks" not in cluster


def test_persistence(envoy_factory, backends):
    envoy = envoy_factory(ISTIO)
    assert envoy.profile == "web"
    assert_new_clients_spread_and_stick(envoy)


def _pin_and_kill(envoy, backends):
    r, c = first_cookie(envoy)
    victim = backends.by_name(r.server)
    victim.kill()
    return victim, c


def test_failover_through_istios_default_retries(envoy_factory, backends):
    """The persisted pod dies (still HEALTHY in EDS): the first attempt is refused, the retry
    (which does not use the persisted host) reaches another pod, and the session is rebound
    to it: the client never sees an error."""
    envoy = envoy_factory(ISTIO)
    victim, c = _pin_and_kill(envoy, backends)
    try:
        r = envoy.get(cookie=f"persist={c.value}")
        assert r.status == 200 and r.server not in (None, victim.name), r
        new = r.persist_cookie()
        assert new is not None and envoy.cookie_server(new.value).name == r.server
        for _ in range(5):
            again = envoy.get(cookie=f"persist={new.value}")
            assert again.status == 200 and again.server == r.server, again
        envoy.wait_counter_at_least("rebind", 1)
    finally:
        victim.start()


def _without_retries(cfg):
    del _route(cfg)["route"]["retry_policy"]


def _outlier_detection(cfg):
    """deploy/istio/destinationrule.yaml as istiod renders it."""
    od = _manifest("destinationrule.yaml")["spec"]["trafficPolicy"]["outlierDetection"]
    cluster = _cluster(cfg)
    cluster["outlier_detection"] = {
        "enforcing_success_rate": 0,
        "consecutive_gateway_failure": od["consecutiveGatewayErrors"],
        "enforcing_consecutive_gateway_failure": 100,
        "interval": od["interval"],
        "base_ejection_time": od["baseEjectionTime"],
        "max_ejection_percent": od["maxEjectionPercent"],
    }
    cluster["common_lb_config"]["healthy_panic_threshold"] = {"value": 0}


def test_without_retries_a_dead_pod_keeps_its_sessions(envoy_factory, backends):
    """The difference from envoy/http-cookie.yaml: no health checking and no retries, so
    nothing takes the dead pod out, and its sessions get 503 (no failover)."""
    envoy = envoy_factory(ISTIO, patch=_without_retries)
    victim, c = _pin_and_kill(envoy, backends)
    try:
        statuses = [envoy.get(cookie=f"persist={c.value}").status for _ in range(4)]
        assert statuses == [503] * 4, statuses
    finally:
        victim.start()


def test_outlier_detection_restores_failover_without_retries(envoy_factory, backends):
    """With the DestinationRule's outlier detection, the dead pod is ejected after
    consecutiveGatewayErrors failures; an ejected host is not in override_host_status, so the
    session is load balanced to a live pod and rebound there."""
    envoy = envoy_factory(ISTIO, patch=lambda cfg: (_without_retries(cfg), _outlier_detection(cfg)))
    limit = _manifest("destinationrule.yaml")["spec"]["trafficPolicy"]["outlierDetection"]["consecutiveGatewayErrors"]
    victim, c = _pin_and_kill(envoy, backends)
    try:
        statuses = [envoy.get(cookie=f"persist={c.value}").status for _ in range(limit)]
        assert statuses == [503] * limit, statuses
        # The worker that saw the last failure hands the ejection to the main thread, which
        # marks the host: a request in between may still be sent to the dead pod. Wait for
        # the ejection, as an operator's next request after it would see it.
        ejections = f"cluster.{_cluster(envoy.cfg)['name']}.outlier_detection.ejections_active"
        for _ in deadline_loop(5, 0.05):
            if envoy.stat(ejections):
                break
        assert envoy.stat(ejections) == 1, envoy.stats("outlier_detection")
        r = envoy.get(cookie=f"persist={c.value}")
        assert r.status == 200, r
        assert r.server != victim.name
        new = r.persist_cookie()
        assert new is not None and envoy.cookie_server(new.value).name == r.server
        for _ in range(5):
            again = envoy.get(cookie=f"persist={new.value}")
            assert again.status == 200 and again.server == r.server, again
    finally:
        victim.start()


def _draining(name_index):
    def patch(cfg):
        eps = _cluster(cfg)["load_assignment"]["endpoints"][0]["lb_endpoints"]
        eps[name_index]["health_status"] = "DRAINING"
    return patch


def test_a_draining_pod_keeps_its_sessions_and_gets_no_new_ones(envoy_factory, backends):
    """Istio sends a terminating pod of a persistent-session Service as DRAINING: with
    DRAINING in override_host_status, a session bound to it stays there until the pod is
    gone, while new clients are load balanced over the other pods."""
    envoy = envoy_factory(ISTIO, patch=_draining(2), start=False)
    envoy.wait_health = lambda *a, **kw: None  # the draining host is never `healthy` in /clusters
    envoy.start()
    draining = backends[2]
    assert "eds_status_draining" in envoy.clusters()[draining.addr] or \
        envoy.clusters()[draining.addr] != "healthy", envoy.clusters()
    new_clients = Counter(first_cookie(envoy)[0].server for _ in range(12))
    assert draining.name not in new_clients and len(new_clients) == 2, new_clients
    bound = codec.seal(envoy.keys[0], "persist", draining.addr, int(time.time()))
    for _ in range(5):
        r = envoy.get(cookie=f"persist={bound}")
        assert r.status == 200 and r.server == draining.name, r
