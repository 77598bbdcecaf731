"""ingress-nginx migration (README "Cookie formats and migration"): cookies that ingress-nginx
wrote in its `persistent` and `balanced` affinity modes, computed here from its definition
(persist_codec: salted MD5, backend key, its consistent-hash ring), keep their servers behind
Envoy; the filter writes ingress-nginx's `persistent` form."""

import random
import time

import pytest

import persist_codec as codec

pytestmark = pytest.mark.both_builds

BACKEND = "default-web-80"
NAME = "INGRESSCOOKIE"


def plugin(endpoints=None):
    section = {"backend": BACKEND}
    if endpoints is not None:
        section["endpoints"] = endpoints
    return {"name": "e2e", "type": "http_cookie",
            "cookie": {"name": NAME, "format": "ingress_nginx", "ingress_nginx": section}}


def cookie_of(r):
    c = r.persist_cookie(NAME)
    return c.value if c else None


def balanced_key(i):
    # What ingress-nginx's balanced mode writes: "<ngx.now()>.<worker pid>.<random>".
    return f"{time.time() + i:.3f}.{random.randint(100, 99999)}.{random.randint(1, 999999)}"


def test_both_modes_keep_their_servers_with_the_endpoints_configured(envoy_factory, backends):
    endpoints = [b.addr for b in backends]
    envoy = envoy_factory("http-cookie.yaml", plugin(endpoints))
    bk = codec.ingress_backend_key(BACKEND)
    find = codec.ingress_ring(endpoints)
    random.seed(16)
    landed = set()
    for i in range(30):
        key = balanced_key(i)
        want = backends.by_addr(find(key)).name
        r = envoy.get(cookie=f"{NAME}={key}|{bk}")
        assert r.status == 200 and r.server == want, (key, r, want)
        # Rewritten once in persistent form for the same server.
        assert cookie_of(r) == codec.ingress_persistent(BACKEND, backends.by_name(want).addr), r
        landed.add(want)
    assert len(landed) >= 2, f"30 balanced keys all on {landed}"
    for b in backends:
        for _ in range(3):
            r = envoy.get(cookie=f"other=1; {NAME}={codec.ingress_persistent(BACKEND, b.addr)}")
            assert r.server == b.name and cookie_of(r) is None, r
        # Before ingress-nginx added the backend key: honoured, then rewritten.
        r = envoy.get(cookie=f"{NAME}={codec.ingress_persistent(BACKEND, b.addr, with_backend_key=False)}")
        assert r.server == b.name and cookie_of(r) == codec.ingress_persistent(BACKEND, b.addr), r
    # Another backend's cookie (another Service behind the same cookie name): not honoured.
    r = envoy.get(cookie=f"{NAME}={codec.ingress_persistent('default-api-80', backends[0].addr)}")
    assert cookie_of(r) == codec.ingress_persistent(BACKEND, backends.by_name(r.server).addr)
    # A new client gets what ingress-nginx would have written for its server.
    r = envoy.get()
    assert cookie_of(r) == codec.ingress_persistent(BACKEND, backends.by_name(r.server).addr)
    envoy.wait_counters({"hit": 30 + 9 + 3, "invalid": 1, "miss": 1, "new": 2, "rebind": 0}, settle=0)


def test_persistent_keys_are_learned_and_balanced_ones_are_not_honoured_without_endpoints(envoy_factory, backends):
    envoy = envoy_factory("http-cookie.yaml", plugin())
    cookies = {b.name: f"{NAME}={codec.ingress_persistent(BACKEND, b.addr)}" for b in backends}
    # No server has answered through this Envoy yet: its hash is unknown (a miss).
    r = envoy.get(cookie=cookies["c"])
    assert r.status == 200 and cookie_of(r) is not None
    envoy.wait_counters({"miss": 1, "hit": 0}, settle=0)
    # Traffic reaches every server (round robin): from then on every persistent cookie sticks,
    # on every worker.
    seen = {envoy.get().server for _ in range(6)}
    assert seen == {"a", "b", "c"}, seen
    before = envoy.worker_connections()
    for _ in range(4):
        for name, cookie in cookies.items():
            r = envoy.get(cookie=cookie)
            assert r.server == name and cookie_of(r) is None, r
    after = envoy.worker_connections()
    assert all(after[w] > before.get(w, 0) for w in after), (before, after)
    # A balanced key needs the endpoints to be mapped: load balanced, a persistent cookie.
    r = envoy.get(cookie=f"{NAME}={balanced_key(0)}|{codec.ingress_backend_key(BACKEND)}")
    assert cookie_of(r) == codec.ingress_persistent(BACKEND, backends.by_name(r.server).addr)
    envoy.wait_counters({"hit": 12, "miss": 1 + 6 + 1, "invalid": 0}, settle=0)
