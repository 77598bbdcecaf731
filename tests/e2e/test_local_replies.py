"""Nothing is issued, re-issued, learned or rebound from a response no upstream produced
(README "How it works"): Envoy's own 503 when every server is down, and its 504 when a
server accepts the connection and never answers. `always_send` is on, so any cookie on
such a reply would be a bug, not a refresh."""

import signal

from conftest import _hcm_configs, plugin_config


def short_route_timeout(cfg):
    """Envoy answers 504 after 0.3 s (the health checks' own timeout is 2 s: the stopped
    servers are not taken out meanwhile)."""
    for hcm in _hcm_configs(cfg):
        for vh in hcm["route_config"]["virtual_hosts"]:
            for r in vh["routes"]:
                r["route"]["timeout"] = "0.3s"


def cookie_envoy(envoy_factory):
    plugin = plugin_config(cookie={"always_send": True})
    return envoy_factory("http-cookie.yaml", plugin=plugin, patch=short_route_timeout)


def test_all_servers_down_503_issues_nothing(envoy_factory, backends):
    e = cookie_envoy(envoy_factory)
    first = e.get()
    cookie = first.persist_cookie(e.cookie_name)
    assert first.status == 200 and cookie is not None
    try:
        for b in backends:
            b.kill()
        e.wait_health({b.addr: False for b in backends}, timeout=15)
        for sent in (f"{e.cookie_name}={cookie.value}", None):
            r = e.get(cookie=sent)
            assert r.status == 503 and r.server is None, r
            assert r.persist_cookie(e.cookie_name) is None, f"a cookie on Envoy's 503: {r}"
        c = e.wait_counters({"new": 1, "rebind": 0, "hit": 1, "miss": 2})
        assert c["new"] == 1
    finally:
        for b in backends:
            b.ensure_up()
    e.wait_health({b.addr: True for b in backends}, timeout=15)
    r = e.get(cookie=f"{e.cookie_name}={cookie.value}")
    assert r.status == 200 and r.server == first.server and r.persist_cookie(e.cookie_name), r


def test_a_server_that_never_answers_504_issues_and_binds_nothing(envoy_factory, backends):
    e = cookie_envoy(envoy_factory)
    first = e.get()
    cookie = first.persist_cookie(e.cookie_name)
    table = envoy_factory("http-header.yaml", patch=short_route_timeout)
    header = table.plugin["header"]["name"]
    stopped = []
    try:
        for b in backends:  # they accept (the kernel does) and never answer
            b.proc.send_signal(signal.SIGSTOP)
            stopped.append(b)
        for sent in (f"{e.cookie_name}={cookie.value}", None):
            r = e.get(cookie=sent, timeout=10)
            assert r.status == 504, r
            assert r.persist_cookie(e.cookie_name) is None, f"a cookie on Envoy's 504: {r}"
        r = table.get(headers={header: "never-answered"}, timeout=10)
        assert r.status == 504, r
    finally:
        for b in stopped:
            b.proc.send_signal(signal.SIGCONT)
    e.wait_counters({"new": 1, "rebind": 0})
    table.wait_counters({"new": 0, "rebind": 0, "miss": 1})
    e.wait_health({b.addr: True for b in backends}, timeout=15)
    # The key was never bound: its first answered request binds it.
    r = table.get(headers={header: "never-answered"})
    assert r.status == 200
    table.wait_counters({"new": 1, "miss": 2})
