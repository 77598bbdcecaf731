"""A persisted server dies: rebind (stateful_session after health checking noticed;
override_host at once through the retry), strict mode answers 503 and resumes, and a
suspect server is not named again for suspect_for."""

import time

import pytest

import persist_codec as codec
from conftest import KEY1, first_cookie, free_port, plugin_config

pytestmark = pytest.mark.both_builds


def pin_and_kill(envoy, backends):
    r, c = first_cookie(envoy)
    victim = backends.by_name(r.server)
    cookie = f"{envoy.cookie_name}={c.value}"
    for _ in range(3):
        assert envoy.get(cookie=cookie).server == victim.name
    victim.kill()
    return victim, cookie


def test_stateful_session_rebinds_once_health_check_noticed(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", plugin_config("stateful_session"))
    victim, cookie = pin_and_kill(envoy, backends)
    try:
        envoy.wait_health({victim.addr: False}, timeout=10)
        r = envoy.get(cookie=cookie)
        assert r.status == 200 and r.server not in (None, victim.name), r
        c = r.persist_cookie()
        assert c is not None, f"no new cookie after the rebind: {r}"
        assert envoy.cookie_server(c.value).name == r.server
        new_server = r.server
        for _ in range(10):
            r2 = envoy.get(cookie=f"persist={c.value}")
            assert r2.server == new_server
            assert r2.persist_cookie() is None
        envoy.wait_counters({"miss": 1, "new": 2, "hit": 3 + 1 + 10, "rebind": 1, "invalid": 0})
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)


def test_override_host_fails_over_at_once_through_the_retry(envoy_factory, backends):
    envoy = envoy_factory("http-cookie-override-host.yaml", plugin_config("override_host"))
    victim, cookie = pin_and_kill(envoy, backends)
    try:
        retries = envoy.stat("cluster.backends.upstream_rq_retry") or 0
        r = envoy.get(cookie=cookie)  # immediately: no health check has run yet
        assert r.status == 200 and r.server not in (None, victim.name), r
        assert (envoy.stat("cluster.backends.upstream_rq_retry") or 0) > retries, "no retry happened"
        c = r.persist_cookie()
        assert c is not None, f"no new cookie after the failover: {r}"
        assert envoy.cookie_server(c.value).name == r.server
        for _ in range(10):
            r2 = envoy.get(cookie=f"persist={c.value}")
            assert r2.server == r.server
            assert r2.persist_cookie() is None
        envoy.wait_counters({"miss": 1, "new": 2, "hit": 3 + 1 + 10, "rebind": 1, "invalid": 0})
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)


def test_suspect_server_is_not_named_for_suspect_for(envoy_factory, backends):
    """override_host ignores health, so naming a dead server costs a retry: while it is
    suspect no client pays that, after suspect_for the next one does again."""
    suspect_s = 6
    envoy = envoy_factory("http-cookie-override-host.yaml",
                          plugin_config("override_host", suspect_for=f"{suspect_s}s"))
    victim, cookie = pin_and_kill(envoy, backends)
    try:
        r = envoy.get(cookie=cookie)
        marked = time.monotonic()
        assert r.status == 200 and r.server != victim.name
        # The fallback round robin must avoid the dead server too, or retries come from it.
        envoy.wait_health({victim.addr: False}, timeout=5)
        retries = envoy.stat("cluster.backends.upstream_rq_retry")
        for _ in range(10):  # other clients bound to the victim, on other connections/workers
            r2 = envoy.get(cookie=cookie)
            assert r2.status == 200 and r2.server != victim.name
            c2 = r2.persist_cookie()
            assert c2 is not None and envoy.cookie_server(c2.value).name == r2.server
        assert time.monotonic() - marked < suspect_s - 0.5, "test too slow to observe suspect_for"
        assert envoy.stat("cluster.backends.upstream_rq_retry") == retries, \
            "a suspect server was named again (the request paid a retry)"
        time.sleep(max(0.0, suspect_s + 1.2 - (time.monotonic() - marked)))
        r3 = envoy.get(cookie=cookie)
        assert r3.status == 200 and r3.server != victim.name
        assert envoy.stat("cluster.backends.upstream_rq_retry") > retries, \
            "after suspect_for the persisted server should be named (and retried) again"
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)


def test_strict_answers_503_then_resumes_on_the_same_server(envoy_factory, backends):
    envoy = envoy_factory("http-cookie-strict.yaml", plugin_config("stateful_session"))
    victim, cookie = pin_and_kill(envoy, backends)
    try:
        envoy.wait_health({victim.addr: False}, timeout=10)
        for _ in range(3):
            r = envoy.get(cookie=cookie)
            assert r.status == 503, r
            for c in r.set_cookies("persist"):  # never rebound to another server
                assert envoy.cookie_server(c.value).name == victim.name, c
        # Clients without a cookie are still served by the others.
        r0 = envoy.get()
        assert r0.status == 200 and r0.server != victim.name
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)
    for _ in range(5):
        r = envoy.get(cookie=cookie)
        assert r.status == 200 and r.server == victim.name, r
    envoy.wait_counters({"rebind": 0, "invalid": 0, "miss": 2, "new": 2})


@pytest.mark.parametrize("example,handoff", [("http-cookie.yaml", "stateful_session"),
                                             ("http-cookie-override-host.yaml", "override_host")])
def test_cookie_for_a_server_gone_from_the_cluster_is_rebound(envoy_factory, backends, example, handoff):
    """A server removed from the cluster (an authentic cookie names it): load balanced, and
    the client gets a cookie for the server that answered."""
    envoy = envoy_factory(example, plugin_config(handoff))
    gone = f"127.0.0.1:{free_port()}"
    old = codec.seal(KEY1, "persist", gone, int(time.time()) - 30)
    r = envoy.get(cookie=f"persist={old}")
    assert r.status == 200 and r.server is not None, r
    c = r.persist_cookie()
    assert c is not None, f"no new cookie: {r}"
    assert envoy.cookie_server(c.value).name == r.server
    for _ in range(5):
        assert envoy.get(cookie=f"persist={c.value}").server == r.server
    envoy.wait_counters({"new": 1, "rebind": 1, "invalid": 0, "miss": 0})
