"""The persistence flow in the native build (Envoy dynamic module), mirrored from the wasm
tests with their helpers: sealed cookies stick across fresh connections and workers, the
migration formats are read and written, a dead persisted server is failed over once the
cluster's health checking took it out (the override respects `override_host_status`),
`strict` answers 503 and the session resumes, the table types stick on every worker (one
process-wide table), a client's `x-persist-upstream` chooses nothing, and hostile traffic is
answered by a backend without Envoy ever aborting.

Natively the module names the server through the ABI's upstream override: no hand-off
header reaches the backend (the wasm tests check that it names the persisted server).

    make build && ENVOY_BIN=$(scripts/envoy-bin.sh) .venv/bin/pytest -q tests/e2e/test_native_flow.py
"""

import random
import time
from collections import Counter

import persist_codec as codec
from conftest import assert_sticks, first_cookie, plugin_config
from test_client_ip import from_ip
from test_failover import pin_and_kill
from test_formats import assert_pins, fmt_config, new_cookies_without_cookie
from test_hostile import forged_cookie_values, generate, run_hostile

COOKIE = "native-http-cookie.yaml"
STRICT = "native-http-cookie-strict.yaml"
HEADER = "native-http-header.yaml"
UPSTREAM = "x-persist-upstream"


def no_handoff_header(r):
    """The backend saw no hand-off header at all (the client's copy is removed, and the
    module names the server through the ABI)."""
    assert UPSTREAM not in r.echoed, r.echoed


def test_sealed_cookie_sticks_across_fresh_connections_on_every_worker(envoy_factory, backends):
    envoy = envoy_factory(COOKIE, plugin_config())
    r, c = first_cookie(envoy)
    no_handoff_header(r)
    assert c.attrs == ["Path=/", "HttpOnly"], c.raw
    sealed = envoy.open(c.value)
    server = backends.by_name(r.server)
    assert sealed.addr == server.addr and sealed.issued == sealed.refreshed
    cookie = f"persist={c.value}"

    def send(i):
        r2 = envoy.get(f"/item/{i}", cookie=cookie)
        no_handoff_header(r2)
        assert r2.persist_cookie() is None, r2  # valid, not due, same server: nothing written
        return r2

    assert_sticks(envoy, send, server.name, n=25)
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 25, "rebind": 0, "invalid": 0, "error": 0})


def test_client_upstream_header_chooses_nothing(envoy_factory, backends):
    envoy = envoy_factory(COOKIE, plugin_config())
    a = backends[0]
    n = 12
    for form in (a.addr, a.b64):
        seen = Counter()
        for _ in range(n):
            r = envoy.get(headers={UPSTREAM: form})
            assert r.status == 200
            no_handoff_header(r)
            seen[r.server] += 1
        assert set(seen) == {"a", "b", "c"} and seen["a"] <= 8, f"{form}: {seen}"
    r, c = first_cookie(envoy)
    pinned = backends.by_name(r.server)
    other = next(x for x in backends if x is not pinned)
    for form in (other.addr, other.b64):
        for _ in range(3):
            r2 = envoy.get(cookie=f"persist={c.value}", headers={UPSTREAM: form})
            assert r2.server == pinned.name, f"client header {form} overrode the cookie"
            no_handoff_header(r2)
    envoy.wait_counters({"miss": 2 * n + 1, "new": 2 * n + 1, "hit": 6, "invalid": 0})


def test_envoy_format_is_read_and_written(envoy_factory, backends):
    envoy = envoy_factory(COOKIE, fmt_config("envoy", timeout="20m"))
    now = int(time.time())
    for b, c in new_cookies_without_cookie(envoy, 6):
        assert c.value.startswith('"') and c.value.endswith('"'), c.raw
        addr, expires = codec.envoy_decode(c.unquoted)
        assert addr == b.addr and now + 1200 - 5 <= expires <= int(time.time()) + 1200 + 5
    target = backends[1]
    assert_pins(envoy, codec.envoy_encode(target.addr, now + 600), target, n=10)
    assert_pins(envoy, codec.envoy_legacy_encode(backends[2].addr), backends[2], n=5)
    expired = codec.envoy_encode(target.addr, now - 30)
    r = envoy.get(cookie=f"persist={expired}")
    c = r.persist_cookie()
    assert r.status == 200 and c is not None
    assert codec.envoy_decode(c.unquoted)[0] == backends.by_name(r.server).addr
    envoy.wait_counters({"miss": 6, "new": 7, "hit": 15, "invalid": 1, "rebind": 0})


def test_bigip_format_is_read_and_written(envoy_factory, backends):
    envoy = envoy_factory(COOKIE, fmt_config("bigip"))
    for b, c in new_cookies_without_cookie(envoy, 6):
        assert c.value == codec.bigip_encode(b.addr), c.raw
    target = backends[2]
    assert_pins(envoy, codec.bigip_encode(target.addr), target, n=10)
    envoy.wait_counters({"miss": 6, "new": 6, "hit": 10, "invalid": 0})


def test_failover_once_health_checking_took_the_server_out(envoy_factory, backends):
    """The override names a host the cluster's health checking marked unhealthy: not in
    override_host_status, so Envoy load balances; the client gets a cookie for the server
    that answered and sticks to it."""
    envoy = envoy_factory(COOKIE, plugin_config())
    victim, cookie = pin_and_kill(envoy, backends)
    try:
        envoy.wait_health({victim.addr: False}, timeout=10)
        r = envoy.get(cookie=cookie)
        assert r.status == 200 and r.server not in (None, victim.name), r
        c = r.persist_cookie()
        assert c is not None, f"no new cookie after the failover: {r}"
        assert envoy.cookie_server(c.value).name == r.server
        for _ in range(8):
            r2 = envoy.get(cookie=f"persist={c.value}")
            assert r2.server == r.server and r2.persist_cookie() is None
        envoy.wait_counters({"miss": 1, "new": 2, "hit": 3 + 1 + 8, "rebind": 1, "invalid": 0})
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)


def test_strict_answers_503_then_resumes_on_the_same_server(envoy_factory, backends):
    envoy = envoy_factory(STRICT, plugin_config(strict=True))
    victim, cookie = pin_and_kill(envoy, backends)
    try:
        envoy.wait_health({victim.addr: False}, timeout=10)
        for _ in range(3):
            r = envoy.get(cookie=cookie)
            assert r.status == 503, r
            for c in r.set_cookies("persist"):  # never rebound to another server
                assert envoy.cookie_server(c.value).name == victim.name, c
        r0 = envoy.get()  # clients without a cookie are served by the others
        assert r0.status == 200 and r0.server != victim.name
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)
    for _ in range(5):
        r = envoy.get(cookie=cookie)
        assert r.status == 200 and r.server == victim.name, r
    envoy.wait_counters({"rebind": 0, "invalid": 0, "miss": 2, "new": 2})


def test_control_without_strict_the_dead_server_is_failed_over(envoy_factory, backends):
    """Control for the strict test: the same example with `strict: false` answers 200."""
    envoy = envoy_factory(STRICT, plugin_config(strict=False))
    victim, cookie = pin_and_kill(envoy, backends)
    try:
        envoy.wait_health({victim.addr: False}, timeout=10)
        r = envoy.get(cookie=cookie)
        assert r.status == 200 and r.server != victim.name, r
    finally:
        victim.start()
    envoy.wait_health({victim.addr: True}, timeout=10)


def test_http_header_table_is_shared_by_the_workers(envoy_factory, backends):
    envoy = envoy_factory(HEADER)
    assert envoy.concurrency == 2
    first = envoy.get(headers={"x-user": "alice"})
    assert first.status == 200 and first.server
    no_handoff_header(first)
    assert_sticks(envoy, lambda i: envoy.get(f"/p/{i}", headers={"x-user": "alice",
                                                                 UPSTREAM: backends[0].b64}),
                  first.server, n=20)
    users = [f"user-{i}" for i in range(12)]
    bound = {u: envoy.get(headers={"x-user": u}).server for u in users}
    assert len(set(bound.values())) == 3, bound
    for u in users:
        assert envoy.get(headers={"x-user": u}).server == bound[u], u
    envoy.wait_counters({"miss": 13, "new": 13, "hit": 20 + 12, "rebind": 0}, settle=0)
    envoy.wait_entries(13)


def client_ip_listener(cfg):
    """use_remote_address and one trusted hop, as envoy/client-ip.yaml: the client is the
    last X-Forwarded-For entry."""
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                f["typed_config"]["use_remote_address"] = True
                f["typed_config"]["xff_num_trusted_hops"] = 1


def test_client_ip_table_is_shared_by_the_workers(envoy_factory, backends):
    envoy = envoy_factory(HEADER, {"name": "clients", "type": "client_ip",
                                   "client_ip": {"ipv4_prefix": 24}}, patch=client_ip_listener)
    first = from_ip(envoy, "198.51.100.7")
    assert first.status == 200 and first.server
    assert_sticks(envoy, lambda i: from_ip(envoy, f"198.51.100.{i + 1}", f"/p/{i}"), first.server, n=20)
    envoy.wait_counters({"miss": 1, "new": 1, "hit": 20, "rebind": 0, "invalid": 0})
    envoy.wait_entries(1)


def test_hostile_requests_natively(envoy_factory, backends):
    """test_hostile's generators against the native module: malformed, huge, duplicated and
    non-UTF-8 cookies and headers, forged cookies in every format, client hand-off headers.
    Every request is answered 200 by a backend, none honoured, Envoy still up, no panic
    caught at the module boundary and no `error` (checked at teardown)."""
    rng = random.Random(20261130)
    forged = forged_cookie_values(rng, [b.addr for b in backends])
    e = envoy_factory(COOKIE, plugin_config())
    names = [e.cookie_name, e.cookie_name.upper(), "JSESSIONID", "x"]
    seen = run_hostile(e, generate(rng, 600, names, forged))
    assert len(seen) == 3 and min(seen.values()) > 90, seen
    stats = e.wait_counters({"hit": 0}, settle=0)
    assert stats["invalid"] > 100, stats
    assert e.proc.poll() is None, "Envoy exited"
    e.stop()
    t = envoy_factory(HEADER, {"name": "ip", "type": "client_ip", "max_entries": 100},
                      patch=client_ip_listener)
    run_hostile(t, generate(rng, 300, ["JSESSIONID", "persist"], forged))
    assert t.proc.poll() is None, "Envoy exited"
