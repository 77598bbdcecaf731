"""Draining a server (README "Draining a server"): the backends cluster comes from EDS in a
watched file; one endpoint's health_status becomes DRAINING (the file replaced atomically),
then the endpoint is removed. While it drains its existing sessions stay on it and no new
session goes to it; once removed, its sessions are rebound without an error answer. Under
both hand-offs, on the examples as shipped (override_host_status includes DRAINING)."""

import os
import time

import pytest
import yaml

from conftest import UPDATE_MERGE_WINDOW, deadline_loop, plugin_config

# The native module names the host through the upstream override, under the same
# override_host_status (the override_host case is wasm-only, skipped natively).
pytestmark = pytest.mark.both_builds

CLIENTS = 15


class Eds:
    """The cluster's endpoints in a file Envoy watches (path_config_source)."""

    def __init__(self, directory, backends):
        self.dir = directory
        self.path = directory / "eds.yaml"
        self.backends = backends
        self.version = 0

    def write(self, statuses):
        """statuses: backend name -> EDS health_status (absent from the dict: removed)."""
        self.version += 1
        eps = []
        for b in self.backends:
            if b.name in statuses:
                eps.append({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                        "port_value": b.port}}},
                            "health_status": statuses[b.name]})
        doc = {"version_info": str(self.version), "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": "backends", "endpoints": [{"lb_endpoints": eps}]}]}
        tmp = self.dir / f".eds-{self.version}.tmp"
        tmp.write_text(yaml.safe_dump(doc))
        os.rename(tmp, self.path)  # atomic: Envoy never reads a half-written file

    def patch(self, cfg):
        cfg["node"] = {"id": "e2e", "cluster": "e2e"}  # required by a file-based EDS
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == "backends":
                c.pop("load_assignment")
                c["type"] = "EDS"
                c["eds_cluster_config"] = {"eds_config": {
                    "resource_api_version": "V3",
                    "path_config_source": {"path": str(self.path),
                                           "watched_directory": {"path": str(self.dir)}}}}


@pytest.mark.parametrize("example,handoff,immediate", [
    ("http-cookie.yaml", "stateful_session", True),
    ("http-cookie-override-host.yaml", "override_host", False),
])
def test_draining_keeps_sessions_then_removal_rebinds(envoy_factory, backends, tmp_path, example, handoff,
                                                      immediate):
    """`immediate`: the cluster has ignore_health_on_host_removal, so the endpoint leaves at
    once when EDS drops it; otherwise Envoy keeps a removed endpoint that still passes its
    health check (pending_dynamic_removal, sessions still served) until the server stops."""
    eds_dir = tmp_path / "eds"
    eds_dir.mkdir()
    eds = Eds(eds_dir, backends)
    eds.write({b.name: "HEALTHY" for b in backends})

    def patch(cfg):
        eds.patch(cfg)
        if immediate:
            for c in cfg["static_resources"]["clusters"]:
                if c["name"] == "backends":
                    c["ignore_health_on_host_removal"] = True
    # The example as shipped, with its cluster from EDS (patch runs after the port rewrite;
    # the EDS file names the test backends).
    envoy = envoy_factory(example, plugin_config(handoff), patch=patch)

    sessions = []
    for _ in range(CLIENTS):
        r = envoy.get()
        c = r.persist_cookie()
        assert r.status == 200 and c is not None, r
        sessions.append((f"persist={c.value}", r.server))
    victim = backends.by_name(sessions[0][1])
    on_victim = [s for s in sessions if s[1] == victim.name]
    assert on_victim, sessions

    eds.write({b.name: ("DRAINING" if b is victim else "HEALTHY") for b in backends})
    flags = None
    for _ in deadline_loop(10, 0.1):
        flags = envoy.clusters().get(victim.addr, "")
        if "draining" in flags:
            break
    assert "draining" in flags, f"EDS DRAINING not applied: {envoy.clusters()}"
    time.sleep(UPDATE_MERGE_WINDOW)  # the workers get the health change within the merge window
    for cookie, server in sessions * 2:
        r = envoy.get(cookie=cookie)
        assert r.status == 200 and r.server == server, f"a session moved while its server drains: {r}"
        assert r.persist_cookie() is None
    fresh = [envoy.get() for _ in range(20)]
    assert all(r.status == 200 for r in fresh), fresh
    assert victim.name not in {r.server for r in fresh}, "a new session went to the draining server"
    envoy.wait_counters({"hit": 2 * CLIENTS, "new": CLIENTS + 20, "rebind": 0}, settle=0)

    # Removed from EDS (the server itself still runs: in-flight work may finish).
    eds.write({b.name: "HEALTHY" for b in backends if b is not victim})
    if not immediate:
        flags = None
        for _ in deadline_loop(10, 0.1):
            flags = envoy.clusters().get(victim.addr, "")
            if "pending_dynamic_removal" in flags:
                break
        assert "pending_dynamic_removal" in flags, envoy.clusters()
        time.sleep(UPDATE_MERGE_WINDOW)
        for cookie, server in on_victim:
            r = envoy.get(cookie=cookie)
            assert r.status == 200 and r.server == victim.name and r.persist_cookie() is None, r
        victim.kill()  # the operator stops the server: its health check fails, Envoy drops it
    for _ in deadline_loop(10, 0.1):
        if victim.addr not in envoy.clusters():
            break
    assert victim.addr not in envoy.clusters(), f"not removed: {envoy.clusters()}"
    time.sleep(UPDATE_MERGE_WINDOW)
    moved = {}
    for cookie, server in on_victim:
        r = envoy.get(cookie=cookie)
        assert r.status == 200 and r.server not in (None, victim.name), f"after removal: {r}"
        c = r.persist_cookie()
        assert c is not None and envoy.cookie_server(c.value).name == r.server
        moved[cookie] = f"persist={c.value}"
    for cookie, server in sessions:
        r = envoy.get(cookie=moved.get(cookie, cookie))
        assert r.status == 200 and r.server != victim.name
        if cookie not in moved:
            assert r.server == server, "sessions on other servers never move"
    envoy.wait_counter_at_least("rebind", len(on_victim))
    assert envoy.counters()["rebind"] == len(on_victim)
